#!/usr/bin/env bash
# Change of subscription end to end on real daemons (issue 4): via the old SHO's
# connectivity (steps 1-14) and via the pristine state (steps 1-15), with the invariants of
# DESIGN.md section 4 checked after each procedure, and the privacy filtering of step 11.
# Issue 8: after every procedure and variant, nothing an SHO keeps (its database, with every
# JWS in it decoded, its stored answers and traces, its log) names the other SHO or any IMSI
# the other SHO issued; the device drops the old SHO's session after a change; back to the
# pristine state removes every MCIM (a pre-provisioned one too), and the deferred notices of
# every removed slot reach their SHOs through the RO's relay.
# MCIM_TRE=tpm (ctest: integration/change_procedures_tpm) runs all of it with devices whose
# TRE keys are in a TPM of their own (`mcim lab device add --tre tpm`, a swtpm each; issue 11,
# docs/tre-tpm.md), and restarts a device with its TPM in the middle: same keys, new ports.
# MCIM_AUC=osmo-hlr (ctest: integration/change_procedures_hlr) runs all of it on a lab whose
# SHOs and ICF are each on an osmo-hlr of their own (`mcim lab up --auc osmo-hlr`; issue 13),
# and after every procedure reads each HLR's own subscriber list (its database): it holds
# exactly the subscriptions the devices' TREs hold active there (the SHOs) and the devices'
# PCIDs (the ICF's), nothing pending, suspended or ended.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl
tre=${MCIM_TRE:-soft}
auc=${MCIM_AUC:-builtin}
case "$auc" in
builtin) ;;
osmo-hlr) need osmo-hlr ;;
*) bad "MCIM_AUC=$auc: builtin or osmo-hlr"; finish ;;
esac
devices=""
pcids_kept=""
case "$tre" in
soft) ;;
tpm) need swtpm ;;
*) bad "MCIM_TRE=$tre: soft or tpm"; finish ;;
esac
# add_device NAME: manufacture NAME with the backend under test
add_device() { "$mcim" lab device add "$1" --tre "$tre" --dir "$lab" && devices="$devices $1"; }
# tre_is DEV: the lab reports the device with the backend under test (and its swtpm running)
tre_is() {
  "$mcim" lab status --json --dir "$lab" | tr -d ' \n' >"$tmp/lab.json"
  local e
  e=$(grep -o "\"name\":\"$1\",\"pid\":[0-9]*,\"running\":true,\"tre\":\"$tre\"[^]]*" "$tmp/lab.json" | head -n1)
  [ -n "$e" ] || return 1
  [ "$tre" = soft ] || [[ $e == *'"swtpm":{"pid":'*',"running":true}'* ]]
}

# hlr_view LABEL (with --auc osmo-hlr): each HLR's subscribers, as its own database lists them,
# are exactly what the network side should have (DESIGN.md section 4, invariant 1, read from
# the real HLRs): at an SHO's HLR the IMSIs the devices' TREs hold active for that SHO, at the
# ICF's the devices' PCIDs and those a renewal keeps live until their expiry or the next
# renewal (src/roles/ro/pcid.c: the one renewed from, $pcids_kept). The HLR is told after the role's commit (the role's tick within
# ~50 ms in the lab): waited for, bounded.
hlr_list() { sqlite3 "$lab/hlr/$1/hlr.db" "SELECT imsi FROM subscriber ORDER BY imsi" | tr '\n' ' '; }
hlr_expected() {
  local d
  { [ "$1" = ro ] && for d in $pcids_kept; do echo "$d"; done
  for d in $devices; do
    if [ "$1" = ro ]; then pcid_of "$d"
    else
      "$mcim" device status "$d" --json --dir "$lab" | tr -d ' \n' |
        grep -o "\"sho\":\"$1\",\"imsi\":\"[0-9]*\",\"state\":\"active\"" | grep -o '[0-9]\{15\}'
    fi
  done; } | sort -u | tr '\n' ' '
}
hlr_agrees() { [ "$(hlr_list "$1")" = "$(hlr_expected "$1")" ]; }
hlr_view() {
  [ "$auc" = osmo-hlr ] || return 0
  local h
  for h in ro sho-a sho-b; do
    # 30 s: a create or delete the HLR did not take at once is retried by the role's tick
    # with a backoff of 1 s doubling (src/roles/auc_sync.c); 10 s was once too short at a
    # load of 20
    if wait_until 30 hlr_agrees "$h"; then ok "$1: $h's HLR holds exactly [ $(hlr_list "$h")]"
    else
      bad "$1: $h's HLR holds [ $(hlr_list "$h")], expected [ $(hlr_expected "$h")]"
      grep -i "hlr" "$lab/$h/$h.log" | tail -n 15 # what the role's sync did
    fi
  done
}
# hlr_answers NAME IMSI WANT: NAME's HLR itself, asked for vectors as a VLR would (GSUP
# SendAuthInfo, lib/gsup_sai.py, no mcim code in between), answers WANT ("vectors" or "error 2":
# IMSI unknown)
hlr_answers() {
  [ "$auc" = osmo-hlr ] || return 0
  local addr got
  addr=$(grep -o "\"name\":\"$1\",\"program\":\"osmo-hlr\",\"addr\":\"[0-9.]*\"" "$tmp/hlrs.json" | grep -o '[0-9.]*"$' | tr -d '"')
  got=$(python3 "$(dirname "$0")/lib/gsup_sai.py" "$addr" "$2")
  case "$got" in "$3"*) ok "$1's HLR itself answers $2 with $got" ;;
    *) bad "$1's HLR answers $2 with '$got', expected $3" ;; esac
}
pcid_of() { "$mcim" device status "$1" --json --dir "$lab" | tr -d ' \n' | grep -o '"pcid":{"id":"[0-9]*"' | grep -o '[0-9]\{6,\}'; }

# invariants DEVICE: network side one active subscription (AuC) and one DRF entry; device
# side at most one active slot, the PCID credential kept; with osmo-hlr, the HLRs' view.
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
  hlr_view "$label"
}

# steps_in_order FILE FIRST LAST [SWAP]: each of FIRST..LAST appears, first occurrences
# increasing; SWAP ("b a") names one more pair that may come as b before a (see the callers).
steps_in_order() {
  local steps first sorted missing=""
  steps=$(tr -d ' \n' <"$1" | grep -o '"n":[0-9]*' | cut -d: -f2 | tr '\n' ' ')
  for n in $(seq "$2" "$3"); do case " $steps " in *" $n "*) ;; *) missing="$missing $n" ;; esac; done
  [ -z "$missing" ] && ok "steps $2-$3 all traced" || bad "missing steps:$missing (have: $steps)"
  first=$(echo "$steps" | tr ' ' '\n' | awk -v lo="$2" '$1>=lo && !seen[$1]++' | tr '\n' ' ')
  # Steps 2 and 3 of a change are concurrent by design (docs/protocol.md): the new SHO asks
  # the PVA (3) as soon as it has the order (1), while the subscriber instructs the device (2).
  first=$(echo " $first" | sed 's/ 3 2 / 2 3 /; s/^ //')
  if [ -n "${4:-}" ]; then
    local a=${4#* } b=${4% *}
    first=$(echo " $first " | sed "s/ $b $a / $a $b /; s/^ //; s/ \$//")
  fi
  sorted=$(echo "$first" | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')
  [ "$first" = "$sorted" ] && ok "in the seed's order: $first" || bad "order: $first"
}

# sessions DEV: the networks the agent holds an access session with
sessions() {
  curl -s --max-time 5 --unix-socket "$lab/devices/$1/control.sock" http://localhost/v1/status |
    tr -d ' \n' | grep -o '"access":\[[^]]*\]' | grep -o '"network":"[^"]*"' | cut -d'"' -f4 | tr '\n' ' '
}

check "lab up (AuC: $auc)" "$mcim" lab up --auc "$auc" --dir "$lab"
if [ "$auc" = osmo-hlr ]; then
  need python3
  "$mcim" lab status --json --dir "$lab" | tr -d ' \n' >"$tmp/lab.json"
  cp "$tmp/lab.json" "$tmp/hlrs.json"
  for h in ro sho-a sho-b; do
    grep -q "\"name\":\"$h\",\"program\":\"osmo-hlr\",\"addr\":\"127\.[0-9.]*\",\"pid\":[0-9]*,\"running\":true" "$tmp/lab.json" &&
      grep -q '"auc": "osmo-hlr"' "$lab/$h/$h.json" && ok "$h runs on an osmo-hlr of its own" ||
      bad "$h's HLR: $(cat "$tmp/lab.json") $(grep hlr "$lab/$h/$h.json")"
  done
fi
check "manufacture dev1 (TRE: $tre)" add_device dev1
tre_is dev1 && ok "dev1 runs with the $tre TRE" || bad "dev1 not with the $tre TRE: $(cat "$tmp/lab.json")"
if [ "$tre" = tpm ]; then
  grep -q '"tre_backend": "tpm"' "$lab/devices/dev1/agent.json" && grep -q '"tpm_tcti": "swtpm:' "$lab/devices/dev1/agent.json" &&
    ok "dev1's agent.json names its TPM" || bad "agent.json: $(cat "$lab/devices/dev1/agent.json")"
  [ -f "$lab/devices/dev1/tpm/tpm2-00.permall" ] && ok "dev1's TPM state is in its folder" || bad "no TPM state in $lab/devices/dev1/tpm"
fi
check "initial provisioning with sho-a" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
imsi_a=$(sqlite3 "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='dev1'")
invariants dev1 "after initial"
hlr_answers sho-a "$imsi_a" vectors
privacy "after initial"
if [ "$tre" = tpm ]; then
  # the device and its TPM restarted: the TPM comes back with its state (the TRE's keys) on
  # new ports, agent.json follows, and the device works on
  tcti0=$(grep -o '"tpm_tcti": "[^"]*"' "$lab/devices/dev1/agent.json")
  check "restart dev1 and its TPM" "$mcim" lab restart dev1 --dir "$lab"
  tre_is dev1 && ok "dev1 and its swtpm run again" || bad "after the restart: $(cat "$tmp/lab.json")"
  tcti1=$(grep -o '"tpm_tcti": "[^"]*"' "$lab/devices/dev1/agent.json")
  [ -n "$tcti1" ] && ok "agent.json names the restarted TPM ($tcti0 -> $tcti1)" || bad "no tpm_tcti after the restart"
  check "dev1 attaches to sho-a after the restart (the same TPM keys)" "$mcim" device attach dev1 --to sho-a --json --dir "$lab"
fi

# --- change via the old SHO ---
check "change dev1 to sho-b via old-sho" "$mcim" run change dev1 --to sho-b --via old-sho --json --dir "$lab"
cp "$tmp/out" "$tmp/c1.json"
[ "$(jfield "$tmp/c1.json" result)" = success ] && ok "result success" || bad "result: $(head -c 600 "$tmp/c1.json")"
# The device's package request (7) is a poll, traced as sent: it can leave before the new SHO
# delivers the package to the DPF (6) and be answered once it is there (seen with a TPM device,
# whose polls take longer), so 7 may be stamped before 6.
steps_in_order "$tmp/c1.json" 1 14 "7 6"
grep -q '"msg": "discard' "$tmp/c1.json" || grep -qi 'discard the old' "$tmp/c1.json" && ok "step 8 traced (TRE discard)" || bad "no discard event"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":9,"from":"dev1","to":"sho-a"' && ok "9) dev1 -> sho-a (receipt)" || bad "no receipt to sho-a"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":10,"from":"sho-a","to":"dev1"' && ok "10) sho-a -> dev1 (ack)" || bad "no ack from sho-a"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":11,"from":"ro","to":"sho-b"' && ok "11) ro -> sho-b (release relay)" || bad "no release relay"
tr -d '\n ' <"$tmp/c1.json" | grep -q '"n":14,"from":"sho-b","to":"ro"' && ok "14) sho-b -> ro (DRF registration)" || bad "no DRF registration"
invariants dev1 "after change via old SHO"
check "dev1 attaches to sho-b (new IMSI)" "$mcim" device attach dev1 --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "full access at sho-b" || bad "sho-b scope"
check_refused NOT_FOUND "dev1 no longer attaches to sho-a (the TRE holds no MCIM of it)" "$mcim" device attach dev1 --to sho-a --json --dir "$lab"
[ "$(sqlite3 "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")" = terminated ] &&
  ok "sho-a issues no more AVs for the old IMSI" || bad "old IMSI state at sho-a"
hlr_answers sho-a "$imsi_a" "error 2" # a later attach with the old IMSI: refused by the HLR
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT sho FROM drf WHERE device='dev1' AND state='subscribed'")" = sho-b ] &&
  ok "DRF discovery now answers sho-b" || bad "DRF: $(sqlite3 "$lab/ro/ro.db" "SELECT * FROM drf")"
# Privacy (step 11): nothing sho-b holds names sho-a or the old IMSI.
if sqlite3 "$lab/sho-b/sho-b.db" .dump | grep -q -e "$imsi_a" -e '"sho-a"'; then
  bad "sho-b learnt the old SHO or IMSI"
else ok "sho-b never learnt the old SHO's name or the old IMSI"; fi
if grep -q -e "$imsi_a" "$lab/sho-b/sho-b.log"; then bad "old IMSI in sho-b's log"; else ok "old IMSI not in sho-b's log"; fi
privacy "after change via old SHO"
# step 10 terminated the subscription and revoked its tokens: the device left that session
case " $(sessions dev1) " in *" sho-a "*) bad "dev1 still lists a session of sho-a: $(sessions dev1)" ;;
  *) ok "dev1 dropped sho-a's session (sessions: $(sessions dev1))" ;; esac

# --- change via the pristine state ---
imsi_b=$(sqlite3 "$lab/sho-b/sho-b.db" "SELECT imsi FROM auc WHERE device='dev1' AND state='active'")
# A network-initiated renewal of the PCID credential first (seed: "an appropriate network
# entity could initiate the replacement"): the pristine path below then runs on the new one.
pcid_old=$(pcid_of dev1)
check "mcim pcid push dev1" "$mcim" pcid push dev1 --dir "$lab"
check "attach to the VNO (the renewal is picked up)" "$mcim" device attach dev1 --to vno --json --dir "$lab"
# the agent renews right after that contact, in the background
renewed() { pcid_new=$(pcid_of dev1) && [ -n "$pcid_new" ] && [ "$pcid_new" != "$pcid_old" ]; }
pcid_new=""
wait_until 10 renewed && ok "PCID renewed ($pcid_old -> $pcid_new)" || bad "PCID not renewed ($pcid_old -> $pcid_new)"
if [ "$tre" = tpm ]; then
  # the renewed PCID credential's K too in the TPM: the request offered a slot key certified
  # by the AK, the RO wrapped K to it, the TRE imported it there (docs/tre-tpm.md)
  grep -q 'made for the renewed PCID credential, certified by the attestation key' "$lab/devices/dev1/agent.log" &&
    grep -q "K under the PCID's certified slot key 0x" "$lab/devices/dev1/agent.log" &&
    ok "dev1: the renewed PCID credential's K wrapped to the slot key its request offered" ||
    bad "dev1: the renewed PCID credential's K not imported under an offered slot key"
fi
pcids_kept="$pcid_old" # live at the ICF until its expiry or dev1's next renewal
mkdir -p "$tmp/tre-before" && cp -p "$lab/devices/dev1/tre/"tre.key "$lab/devices/dev1/tre/"tre.sealed* "$tmp/tre-before/"
check "change dev1 back to sho-a via pristine" "$mcim" run change dev1 --to sho-a --via pristine --json --dir "$lab"
cp "$tmp/out" "$tmp/c2.json"
# crypto-shredding (issue 11 point 6, docs/tre.md section 8): the pristine step discarded
# sho-b's MCIM under a new storage key; no rotation is left half done (tre.key.new holds no
# key between rotations: absent or 32 zero bytes)
no_spare_key() { local n="$lab/devices/dev1/tre/tre.key.new"; [ ! -e "$n" ] || cmp -s "$n" <(head -c 32 /dev/zero); }
! cmp -s "$tmp/tre-before/tre.key" "$lab/devices/dev1/tre/tre.key" && no_spare_key &&
  ok "dev1's TRE storage key replaced by the discard (the files copied before are under the old one)" ||
  bad "dev1's tre.key unchanged by the discard, or tre.key.new left: $(ls "$lab/devices/dev1/tre")"
[ "$(jfield "$tmp/c2.json" result)" = success ] && ok "result success" || bad "result: $(head -c 600 "$tmp/c2.json")"
# The same for the pristine steps: the package request (13) is a poll traced as sent, so it may
# be stamped before the new SHO's authorisation (12) that its answer waited for.
steps_in_order "$tmp/c2.json" 3 15 "13 12"
tr -d '\n ' <"$tmp/c2.json" | grep -q '"n":3,"from":"dev1","to":"tre"' && ok "3) dev1 -> tre (back to pristine)" || bad "no step 3"
invariants dev1 "after change via pristine"
check "dev1 attaches to sho-a" "$mcim" device attach dev1 --to sho-a --dir "$lab"
check_refused NOT_FOUND "dev1 no longer attaches to sho-b (the TRE holds no MCIM of it)" "$mcim" device attach dev1 --to sho-b --json --dir "$lab"
# The deferred notification reached the old SHO: no more AVs for the sho-b IMSI.
auc_terminated() { [ "$(sqlite3 "$lab/$1/$1.db" "SELECT state FROM auc WHERE imsi='$2'")" = terminated ]; }
wait_until 5 auc_terminated sho-b "$imsi_b" &&
  ok "sho-b told later: subscription terminated" || bad "sho-b still has $imsi_b"
"$mcim" device status dev1 --json --dir "$lab" >"$tmp/st.json"
grep -q '"pending": \[\]' "$tmp/st.json" && ok "no notification left in the TRE" || bad "pending: $(grep -A3 pending "$tmp/st.json")"
[ "$(sqlite3 "$lab/sho-b/sho-b.db" "SELECT to_name FROM trace WHERE msg LIKE 'acknowledgement of the deferred notice%'" | sort -u)" = ro ] &&
  ok "the deferred notice reached sho-b through the RO's relay (sho-b answered the RO)" ||
  bad "deferred notice at sho-b: $(sqlite3 "$lab/sho-b/sho-b.db" "SELECT from_name, to_name, msg FROM trace WHERE msg LIKE '%deferred%'")"
privacy "after change via pristine"

# --- pre-provisioned MCIMs (the seed's variant): preload a second one, switch, switch back ---
auc_state() { sqlite3 "$lab/$1/$1.db" "SELECT state FROM auc WHERE imsi='$2'"; }
auc_is() { [ "$(auc_state "$1" "$2")" = "$3" ]; }
wait_auc() { # wait_auc SHO IMSI STATE: the SHO's AuC reaches STATE (its report handling is
  # asynchronous to the device), bounded
  wait_until 5 auc_is "$1" "$2" "$3"
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
check "manufacture dev2 (TRE: $tre)" add_device dev2
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
check_refused WRONG_STATE "preload: dev2 cannot attach to sho-b yet (its MCIM inactive)" "$mcim" device attach dev2 --to sho-b --json --dir "$lab"
c=$(network_attach sho-b "$imsi2_b")
[ "$c" = SUBSCRIPTION_NOT_ACTIVE ] && ok "preload: sho-b gives no AV for the standby IMSI ($c)" || bad "preload: sho-b attach answer '$c', expected SUBSCRIPTION_NOT_ACTIVE"
check "preload: dev2 still attaches to sho-a" "$mcim" device attach dev2 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "preload: full access at sho-a" || bad "preload: $(cat "$tmp/out")"
invariants dev2 "after preload"
privacy "after preload"

check "switch dev2 to sho-b" "$mcim" run switch dev2 --to sho-b --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "switch: success" || bad "switch: $(head -c 600 "$tmp/out")"
wait_auc sho-a "$imsi2_a" standby && ok "switch: sho-a's subscription in standby" || bad "switch: sho-a AuC $(auc_state sho-a "$imsi2_a")"
auc_is sho-b "$imsi2_b" active && ok "switch: sho-b's subscription active" || bad "switch: sho-b AuC $(auc_state sho-b "$imsi2_b")"
[ "$(slot_state dev2 sho-b)" = active ] && [ "$(slot_state dev2 sho-a)" = inactive ] &&
  ok "switch: the TRE's active MCIM is sho-b's, sho-a's kept inactive" ||
  bad "switch: slots sho-a=$(slot_state dev2 sho-a) sho-b=$(slot_state dev2 sho-b)"
check "switch: dev2 attaches to sho-b" "$mcim" device attach dev2 --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "switch: full access at sho-b" || bad "switch: $(cat "$tmp/out")"
check_refused WRONG_STATE "switch: dev2 no longer attaches to sho-a (its MCIM inactive)" "$mcim" device attach dev2 --to sho-a --json --dir "$lab"
c=$(network_attach sho-a "$imsi2_a")
[ "$c" = SUBSCRIPTION_NOT_ACTIVE ] && ok "switch: sho-a gives no AV for the standby IMSI ($c)" || bad "switch: sho-a attach answer '$c', expected SUBSCRIPTION_NOT_ACTIVE"
hlr_answers sho-a "$imsi2_a" "error 2" # switched away from: out of sho-a's HLR too
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT sho FROM drf WHERE device='dev2' AND state='subscribed'")" = sho-b ] &&
  ok "switch: the DRF says sho-b" || bad "switch: DRF $(sqlite3 "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='dev2'")"
invariants dev2 "after switch"
privacy "after switch"

check "switch dev2 back to sho-a" "$mcim" run switch dev2 --to sho-a --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "switch back: success" || bad "switch back: $(head -c 600 "$tmp/out")"
wait_auc sho-b "$imsi2_b" standby && ok "switch back: sho-b's subscription in standby" || bad "switch back: sho-b AuC $(auc_state sho-b "$imsi2_b")"
auc_is sho-a "$imsi2_a" active && ok "switch back: sho-a's subscription active again" || bad "switch back: sho-a AuC $(auc_state sho-a "$imsi2_a")"
check "switch back: dev2 attaches to sho-a" "$mcim" device attach dev2 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "switch back: full access at sho-a" || bad "switch back: $(cat "$tmp/out")"
check_refused WRONG_STATE "switch back: dev2 no longer attaches to sho-b (its MCIM inactive)" "$mcim" device attach dev2 --to sho-b --json --dir "$lab"
c=$(network_attach sho-b "$imsi2_b")
[ "$c" = SUBSCRIPTION_NOT_ACTIVE ] && ok "switch back: sho-b gives no AV for the standby IMSI ($c)" || bad "switch back: sho-b attach answer '$c', expected SUBSCRIPTION_NOT_ACTIVE"
[ "$(network_attach sho-a "$imsi2_a")" = challenge ] && ok "switch back: sho-a challenges the active IMSI" || bad "switch back: sho-a gives no AV"
invariants dev2 "after switching back"
privacy "after switching back"

# --- back to the pristine state removes EVERY MCIM (pristine step 3), the pre-provisioned
# one too: dev2 holds sho-a's (active) and sho-b's (inactive); it changes to sho-b via
# pristine: both go, sho-b provisions a new MCIM, and both SHOs are told (RO relay) ---
check "change dev2 to sho-b via pristine (two MCIMs in the TRE)" "$mcim" run change dev2 --to sho-b --via pristine --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "pristine with two MCIMs: success" || bad "pristine with two MCIMs: $(head -c 600 "$tmp/out")"
"$mcim" device status dev2 --json --dir "$lab" | tr -d ' \n' >"$tmp/st2.json"
n=$(grep -o '"slot":"[^"]*"' "$tmp/st2.json" | wc -l)
imsi2_new=$(sqlite3 "$lab/sho-b/sho-b.db" "SELECT imsi FROM auc WHERE device='dev2' AND state='active'")
[ "$n" = 1 ] && grep -q "\"slot\":\"sho-b\",\"sho\":\"sho-b\",\"imsi\":\"$imsi2_new\",\"state\":\"active\"" "$tmp/st2.json" &&
  [ "$imsi2_new" != "$imsi2_b" ] && ok "the TRE lists only the new MCIM (sho-b, $imsi2_new)" ||
  bad "slots after the pristine change: $(grep -o '"slots":\[[^]]*\]' "$tmp/st2.json")"
wait_auc sho-a "$imsi2_a" terminated && ok "sho-a told (relayed notice): $imsi2_a terminated" || bad "sho-a AuC $(auc_state sho-a "$imsi2_a")"
wait_auc sho-b "$imsi2_b" terminated && ok "sho-b told of its removed pre-provisioned MCIM: $imsi2_b terminated" || bad "sho-b AuC $(auc_state sho-b "$imsi2_b")"
auc_is sho-b "$imsi2_new" active && ok "sho-b's new subscription stays active" || bad "sho-b new AuC $(auc_state sho-b "$imsi2_new")"
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='dev2' AND sho='sho-b'")" = subscribed ] &&
  ok "the DRF still says sho-b (the notice about the old IMSI did not release the new entry)" ||
  bad "DRF: $(sqlite3 "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='dev2'")"
grep -q '"pending":\[\]' "$tmp/st2.json" && ok "no notification left in the TRE" || bad "pending: $(grep -o '"pending":\[[^]]*\]' "$tmp/st2.json")"
check "dev2 attaches to sho-b" "$mcim" device attach dev2 --to sho-b --dir "$lab"
invariants dev2 "after pristine with two MCIMs"
privacy "after pristine with two MCIMs"

if [ "$tre" = tpm ]; then
  # each MCIM's K under a TPM slot key of its own, destroyed when the MCIM goes (discard at
  # change step 8, install over, pristine: docs/tre-tpm.md, "Slots in the TPM"): the keys a
  # device's TRE made minus those it evicted are exactly its MCIMs now. The lab's devices are
  # enrolled: each slot key is made at a procedure's quote, certified by the AK, and K is
  # wrapped by the SHO straight to it (no TPM2_Rewrap from the storage key, none moved)
  for d in dev1 dev2; do
    made=$(grep -c 'made for this procedure, certified by the attestation key' "$lab/devices/$d/agent.log" || true)
    into=$(grep -c "K under the procedure's certified slot key 0x" "$lab/devices/$d/agent.log" || true)
    moved=$(grep -c 'K under its own slot key 0x' "$lab/devices/$d/agent.log" || true)
    gone=$(grep -c 'slot key 0x[0-9a-f]* destroyed (TPM2_EvictControl)' "$lab/devices/$d/agent.log" || true)
    # the PCID credential's slot key (made at enrolment) evicted once a renewed credential
    # passed an AKA: not an MCIM's
    pgone=$(grep -c "previous PCID credential's slot key evicted" "$lab/devices/$d/agent.log" || true)
    gone=$((gone - pgone))
    n=$("$mcim" device status "$d" --json --dir "$lab" | tr -d ' \n' | grep -o '"slot":"' | wc -l)
    [ "$into" -gt 1 ] && [ "$moved" = 0 ] && [ $((made - gone)) = "$n" ] &&
      ok "$d: $made slot keys made in its TPM and certified, $into with K, $gone destroyed, $n MCIM(s) left ($pgone PCID slot key evicted)" ||
      bad "$d: $made slot keys made, $into with K, $moved K moved by Rewrap, $gone destroyed, $n MCIM(s) in the TRE"
  done
  # every K wrapped by an SHO to a certified slot key, none to the storage key
  to_slot=$(cat "$lab"/sho-*/sho-*.log | grep -c "K wrapped to the procedure's certified slot key" || true)
  [ "$to_slot" -gt 0 ] && ok "$to_slot MCIMs' K wrapped by their SHO to the procedure's certified slot key" ||
    bad "no K wrapped to a certified slot key"
fi

# every package of every procedure sealed to its procedure's own key-agreement key, none to
# the static one (the TRE would have refused it: docs/tre.md section 8)
own=$(cat "$lab"/sho-*/sho-*.log | grep -c "sealed to the procedure's own key-agreement key" || true)
static=$(cat "$lab"/sho-*/sho-*.log | grep -c "sealed to the key-agreement key of its certificate" || true)
[ "$own" -gt 0 ] && [ "$static" = 0 ] && ok "$own MCIM packages sealed to their procedure's own key, none to the static one" ||
  bad "packages: $own to the procedure's key, $static to the static key"

check "lab down" "$mcim" lab down --dir "$lab"
if [ "$auc" = osmo-hlr ]; then
  "$mcim" lab status --json --dir "$lab" | tr -d ' \n' >"$tmp/lab.json"
  n=$(grep -o '"program":"osmo-hlr","addr":"[0-9.]*","pid":0,"running":false' "$tmp/lab.json" | wc -l)
  [ "$n" = 3 ] && ok "lab down stopped the three HLRs" || bad "HLRs after lab down: $(cat "$tmp/lab.json")"
fi
if [ "$tre" = tpm ]; then
  # lab down stopped the devices' TPMs with their agents (exactly the recorded pids)
  for d in dev1 dev2; do
    "$mcim" lab status --json --dir "$lab" | tr -d ' \n' | grep -q "\"name\":\"$d\",\"pid\":0,\"running\":false,\"tre\":\"tpm\",\"swtpm\":{\"pid\":0,\"running\":false}" &&
      ok "lab down stopped $d's swtpm" || bad "$d's swtpm after lab down: $("$mcim" lab status --json --dir "$lab")"
  done
fi
finish
