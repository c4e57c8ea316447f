#!/usr/bin/env bash
# Change of subscription end to end on real daemons (issue 4): via the old SHO's
# connectivity (steps 1-14) and via the pristine state (steps 1-15), with the invariants of
# DESIGN.md section 4 checked after each procedure, and the privacy filtering of step 11.
. "$(dirname "$0")/lib/common.bash"

# invariants DEVICE: network side one active subscription (AuC) and one DRF entry; device
# side at most one active slot, the PCID credential kept.
invariants() {
  local dev=$1 label=$2 active=0 drf tre
  for s in sho-a sho-b; do
    n=$(sqlite3 "$lab/$s/$s.db" "SELECT COUNT(*) FROM auc WHERE device='$dev' AND state='active'")
    active=$((active + n))
  done
  [ "$active" -le 1 ] && ok "$label: at most one active subscription at the SHOs ($active)" || bad "$label: $active active subscriptions"
  drf=$(sqlite3 "$lab/ro/ro.db" "SELECT COUNT(*) FROM drf WHERE device='$dev' AND state='subscribed'")
  [ "$drf" -le 1 ] && ok "$label: at most one DRF subscription ($drf)" || bad "$label: $drf DRF subscriptions"
  "$mcim" device status "$dev" --json --dir "$lab" >"$tmp/st.json"
  tre=$(grep -c '"state": "active"' "$tmp/st.json" || true)
  [ "$tre" -le 1 ] && ok "$label: at most one active MCIM in the TRE" || bad "$label: $tre active slots"
  grep -q '"pcid": {' "$tmp/st.json" && ok "$label: PCID credential kept" || bad "$label: no PCID"
}

# steps_in_order FILE FIRST LAST: each of FIRST..LAST appears, first occurrences increasing.
steps_in_order() {
  local steps first sorted missing=""
  steps=$(tr -d ' \n' <"$1" | grep -o '"n":[0-9]*' | cut -d: -f2 | tr '\n' ' ')
  for n in $(seq "$2" "$3"); do case " $steps " in *" $n "*) ;; *) missing="$missing $n" ;; esac; done
  [ -z "$missing" ] && ok "steps $2-$3 all traced" || bad "missing steps:$missing (have: $steps)"
  first=$(echo "$steps" | tr ' ' '\n' | awk -v lo="$2" '$1>=lo && !seen[$1]++' | tr '\n' ' ')
  # Steps 2 and 3 of a change are concurrent by design (docs/protocol.md): the new SHO asks
  # the PVA (3) as soon as it has the order (1), while the subscriber instructs the device (2).
  first=$(echo " $first" | sed 's/ 3 2 / 2 3 /; s/^ //')
  sorted=$(echo "$first" | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')
  [ "$first" = "$sorted" ] && ok "in the seed's order: $first" || bad "order: $first"
}

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture dev1" "$mcim" lab device add dev1 --dir "$lab"
check "initial provisioning with sho-a" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
imsi_a=$(sqlite3 "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='dev1'")
invariants dev1 "after initial"

# --- change via the old SHO ---
check "change dev1 to sho-b via old-sho" "$mcim" run change dev1 --to sho-b --via old-sho --json --dir "$lab"
cp "$tmp/out" "$tmp/c1.json"
[ "$(jfield "$tmp/c1.json" result)" = success ] && ok "result success" || bad "result: $(head -c 600 "$tmp/c1.json")"
steps_in_order "$tmp/c1.json" 1 14
grep -q '"msg": "discard' "$tmp/c1.json" || grep -qi 'discard the old' "$tmp/c1.json" && ok "step 8 traced (TRE discard)" || bad "no discard event"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":9,"from":"dev1","to":"sho-a"' && ok "9) dev1 -> sho-a (receipt)" || bad "no receipt to sho-a"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":10,"from":"sho-a","to":"dev1"' && ok "10) sho-a -> dev1 (ack)" || bad "no ack from sho-a"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":11,"from":"ro","to":"sho-b"' && ok "11) ro -> sho-b (release relay)" || bad "no release relay"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":14,"from":"sho-b","to":"ro"' && ok "14) sho-b -> ro (DRF registration)" || bad "no DRF registration"
invariants dev1 "after change via old SHO"
check "dev1 attaches to sho-b (new IMSI)" "$mcim" device attach dev1 --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "full access at sho-b" || bad "sho-b scope"
check_fails "dev1 no longer attaches to sho-a" "$mcim" device attach dev1 --to sho-a --dir "$lab"
[ "$(sqlite3 "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")" = terminated ] &&
  ok "sho-a issues no more AVs for the old IMSI" || bad "old IMSI state at sho-a"
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT sho FROM drf WHERE device='dev1' AND state='subscribed'")" = sho-b ] &&
  ok "DRF discovery now answers sho-b" || bad "DRF: $(sqlite3 "$lab/ro/ro.db" "SELECT * FROM drf")"
# Privacy (step 11): nothing sho-b holds names sho-a or the old IMSI.
if sqlite3 "$lab/sho-b/sho-b.db" .dump | grep -q -e "$imsi_a" -e '"sho-a"'; then
  bad "sho-b learnt the old SHO or IMSI"
else ok "sho-b never learnt the old SHO's name or the old IMSI"; fi
if grep -q -e "$imsi_a" "$lab/sho-b/sho-b.log"; then bad "old IMSI in sho-b's log"; else ok "old IMSI not in sho-b's log"; fi

# --- change via the pristine state ---
imsi_b=$(sqlite3 "$lab/sho-b/sho-b.db" "SELECT imsi FROM auc WHERE device='dev1' AND state='active'")
# A network-initiated renewal of the PCID credential first (seed: "an appropriate network
# entity could initiate the replacement"): the pristine path below then runs on the new one.
pcid_old=$("$mcim" device status dev1 --json --dir "$lab" | tr -d ' \n' | grep -o '"pcid":{"id":"[0-9]*"' | grep -o '[0-9]\{6,\}')
check "mcim pcid push dev1" "$mcim" pcid push dev1 --dir "$lab"
check "attach to the VNO (the renewal is picked up)" "$mcim" device attach dev1 --to vno --json --dir "$lab"
for _ in $(seq 1 100); do # the agent renews right after that contact, in the background
  pcid_new=$("$mcim" device status dev1 --json --dir "$lab" | tr -d ' \n' | grep -o '"pcid":{"id":"[0-9]*"' | grep -o '[0-9]\{6,\}')
  [ "$pcid_new" != "$pcid_old" ] && break
  sleep 0.1
done
[ -n "$pcid_new" ] && [ "$pcid_new" != "$pcid_old" ] && ok "PCID renewed ($pcid_old -> $pcid_new)" || bad "PCID not renewed ($pcid_old -> $pcid_new)"
check "change dev1 back to sho-a via pristine" "$mcim" run change dev1 --to sho-a --via pristine --json --dir "$lab"
cp "$tmp/out" "$tmp/c2.json"
[ "$(jfield "$tmp/c2.json" result)" = success ] && ok "result success" || bad "result: $(head -c 600 "$tmp/c2.json")"
steps_in_order "$tmp/c2.json" 3 15
tr -d '\n ' <"$tmp/c2.json" | grep -q '"n":3,"from":"dev1","to":"tre"' && ok "3) dev1 -> tre (back to pristine)" || bad "no step 3"
invariants dev1 "after change via pristine"
check "dev1 attaches to sho-a" "$mcim" device attach dev1 --to sho-a --dir "$lab"
check_fails "dev1 no longer attaches to sho-b" "$mcim" device attach dev1 --to sho-b --dir "$lab"
# The deferred notification reached the old SHO: no more AVs for the sho-b IMSI.
for _ in $(seq 1 50); do
  [ "$(sqlite3 "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE imsi='$imsi_b'")" = terminated ] && break
  sleep 0.1
done
[ "$(sqlite3 "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE imsi='$imsi_b'")" = terminated ] &&
  ok "sho-b told later: subscription terminated" || bad "sho-b still has $imsi_b"
"$mcim" device status dev1 --json --dir "$lab" >"$tmp/st.json"
grep -q '"pending": \[\]' "$tmp/st.json" && ok "no notification left in the TRE" || bad "pending: $(grep -A3 pending "$tmp/st.json")"

# --- pre-provisioned MCIMs (the seed's variant): preload a second one, switch, switch back ---
auc_state() { sqlite3 "$lab/$1/$1.db" "SELECT state FROM auc WHERE imsi='$2'"; }
auc_is() { [ "$(auc_state "$1" "$2")" = "$3" ]; }
wait_auc() { # wait_auc SHO IMSI STATE: the SHO's AuC reaches STATE (its report handling is
  # asynchronous to the device), bounded
  local i
  for i in $(seq 1 100); do auc_is "$1" "$2" "$3" && return 0; sleep 0.05; done
  return 1
}
slot_state() { # slot_state DEV SLOT: the TRE's state of that slot
  "$mcim" device status "$1" --json --dir "$lab" | tr -d ' \n' |
    grep -o "\"slot\":\"$2\",\"sho\":\"$2\",\"imsi\":\"[0-9]*\",\"state\":\"[a-z]*\"" |
    grep -o '"state":"[a-z]*"' | cut -d'"' -f4
}
network_attach() { # network_attach SHO IMSI: the SHO's answer to an attach request (no AV: cause)
  curl -s --cacert "$lab/pki/ca/operators-ca.crt" -H 'Content-Type: application/json' \
    -d "{\"imsi\": \"$2\"}" "$(role_url "$1")/v1/attach" | tr -d ' \n' |
    sed -n 's/.*"cause":"\([A-Z_]*\)".*/\1/p; s/.*"rand":.*/challenge/p'
}
check "manufacture dev2" "$mcim" lab device add dev2 --dir "$lab"
check "initial provisioning of dev2 with sho-a" "$mcim" run initial dev2 --sho sho-a --json --dir "$lab"
imsi2_a=$(sqlite3 "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='dev2' AND state='active'")
check "preload dev2 with sho-b" "$mcim" run preload dev2 --sho sho-b --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "preload: success" || bad "preload: $(head -c 600 "$tmp/out")"
imsi2_b=$(sqlite3 "$lab/sho-b/sho-b.db" "SELECT imsi FROM auc WHERE device='dev2'")
[ -n "$imsi2_b" ] && ok "preload: sho-b made an MCIM ($imsi2_b)" || bad "preload: no sho-b AuC entry"
[ "$(slot_state dev2 sho-b)" = inactive ] && [ "$(slot_state dev2 sho-a)" = active ] &&
  ok "preload: sho-b's MCIM inactive in the TRE, sho-a's still active" ||
  bad "preload: slots sho-a=$(slot_state dev2 sho-a) sho-b=$(slot_state dev2 sho-b)"
wait_auc sho-b "$imsi2_b" standby && ok "preload: sho-b's subscription in standby" || bad "preload: sho-b AuC $(auc_state sho-b "$imsi2_b")"
auc_is sho-a "$imsi2_a" active && ok "preload: sho-a's subscription still active" || bad "preload: sho-a AuC $(auc_state sho-a "$imsi2_a")"
check_fails "preload: dev2 cannot attach to sho-b yet" "$mcim" device attach dev2 --to sho-b --dir "$lab"
c=$(network_attach sho-b "$imsi2_b")
[ -n "$c" ] && [ "$c" != challenge ] && ok "preload: sho-b gives no AV for the standby IMSI ($c)" || bad "preload: sho-b attach answer '$c'"
check "preload: dev2 still attaches to sho-a" "$mcim" device attach dev2 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "preload: full access at sho-a" || bad "preload: $(cat "$tmp/out")"
invariants dev2 "after preload"

check "switch dev2 to sho-b" "$mcim" run switch dev2 --to sho-b --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "switch: success" || bad "switch: $(head -c 600 "$tmp/out")"
wait_auc sho-a "$imsi2_a" standby && ok "switch: sho-a's subscription in standby" || bad "switch: sho-a AuC $(auc_state sho-a "$imsi2_a")"
auc_is sho-b "$imsi2_b" active && ok "switch: sho-b's subscription active" || bad "switch: sho-b AuC $(auc_state sho-b "$imsi2_b")"
[ "$(slot_state dev2 sho-b)" = active ] && [ "$(slot_state dev2 sho-a)" = inactive ] &&
  ok "switch: the TRE's active MCIM is sho-b's, sho-a's kept inactive" ||
  bad "switch: slots sho-a=$(slot_state dev2 sho-a) sho-b=$(slot_state dev2 sho-b)"
check "switch: dev2 attaches to sho-b" "$mcim" device attach dev2 --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "switch: full access at sho-b" || bad "switch: $(cat "$tmp/out")"
check_fails "switch: dev2 no longer attaches to sho-a" "$mcim" device attach dev2 --to sho-a --dir "$lab"
c=$(network_attach sho-a "$imsi2_a")
[ -n "$c" ] && [ "$c" != challenge ] && ok "switch: sho-a gives no AV for the standby IMSI ($c)" || bad "switch: sho-a attach answer '$c'"
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT sho FROM drf WHERE device='dev2' AND state='subscribed'")" = sho-b ] &&
  ok "switch: the DRF says sho-b" || bad "switch: DRF $(sqlite3 "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='dev2'")"
invariants dev2 "after switch"

check "switch dev2 back to sho-a" "$mcim" run switch dev2 --to sho-a --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "switch back: success" || bad "switch back: $(head -c 600 "$tmp/out")"
wait_auc sho-b "$imsi2_b" standby && ok "switch back: sho-b's subscription in standby" || bad "switch back: sho-b AuC $(auc_state sho-b "$imsi2_b")"
auc_is sho-a "$imsi2_a" active && ok "switch back: sho-a's subscription active again" || bad "switch back: sho-a AuC $(auc_state sho-a "$imsi2_a")"
check "switch back: dev2 attaches to sho-a" "$mcim" device attach dev2 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "switch back: full access at sho-a" || bad "switch back: $(cat "$tmp/out")"
check_fails "switch back: dev2 no longer attaches to sho-b" "$mcim" device attach dev2 --to sho-b --dir "$lab"
c=$(network_attach sho-b "$imsi2_b")
[ -n "$c" ] && [ "$c" != challenge ] && ok "switch back: sho-b gives no AV for the standby IMSI ($c)" || bad "switch back: sho-b attach answer '$c'"
[ "$(network_attach sho-a "$imsi2_a")" = challenge ] && ok "switch back: sho-a challenges the active IMSI" || bad "switch back: sho-a gives no AV"
invariants dev2 "after switching back"

check "lab down" "$mcim" lab down --dir "$lab"
finish
