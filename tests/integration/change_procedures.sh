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

check "lab down" "$mcim" lab down --dir "$lab"
finish
