#!/usr/bin/env bash
# A switch between pre-provisioned MCIMs that stops half way is undone, and the DRF follows
# (docs/device.md, "switch"; DESIGN.md section 4: one SHO subscribed). The device suspends
# sho-a (its current SHO), then cannot get its resume to sho-b through the RO's relay (the
# RO holds sho-b's entry released, set in its database: the relay answers "not yet" until the
# procedure's deadline). The agent then undoes the switch. Before 2026-12-07 it could not:
#  - it sent sho-b's suspend only after the RO had taken sho-b's resume, and the TRE, which
#    had signed resumes of sho-b, refused to sign sho-a's resume without it (WRONG_STATE):
#    sho-a's subscription stayed suspended, the device attached nowhere with an MCIM;
#  - sho-a's resume went straight to sho-a only, and the DRF, which takes sho-a's
#    `subscribed` only on the RO's record of that resume (registry.c), kept it `preloaded`:
#    no SHO subscribed. The agent now sends it through the relay too.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture su" "$mcim" lab device add su --dir "$lab"
check "initial provisioning of su with sho-a" "$mcim" run initial su --sho sho-a --json --dir "$lab"
check "preload su with sho-b" "$mcim" run preload su --sho sho-b --json --dir "$lab"
entry() { sql "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='su' AND sho='$1'"; }
wait_until 20 db_is "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='su' AND sho='sho-b'" preloaded &&
  ok "the DRF holds sho-b preloaded" || bad "DRF sho-b: '$(entry sho-b)'"
imsi_a=$(sql "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='su' AND state='active'")

# the switch cannot reach sho-b: the relay refuses while sho-b's entry is not live
sql "$lab/ro/ro.db" "UPDATE drf SET state = 'released' WHERE device = 'su' AND sho = 'sho-b'"
sed -i "s/\"procedure_timeout\": *[0-9]*/\"procedure_timeout\": $(scaled 6)/" "$lab/devices/su/agent.json"
check "su: procedure deadline $(scaled 6) s, agent restarted" "$mcim" lab restart su --dir "$lab"
if "$mcim" run switch su --to sho-b --json --dir "$lab" >"$tmp/sw.json" 2>&1; then
  bad "the switch succeeded: $(head -c 400 "$tmp/sw.json")"
else
  grep -q '"TIMEOUT"' "$tmp/sw.json" && ok "the switch failed at its deadline (TIMEOUT)" ||
    bad "switch: $(head -c 400 "$tmp/sw.json")"
fi
txn=$(sql "$lab/devices/su/agent.db" "SELECT txn FROM procedures WHERE kind = 'switch'")

# undone: sho-a active again on the network, in the TRE and at the DRF
wait_until 20 db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" active &&
  ok "sho-a's subscription active again" ||
  bad "sho-a AuC: $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
wait_until 20 db_is "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='su' AND sho='sho-a'" subscribed &&
  ok "the DRF holds sho-a subscribed again" || bad "DRF sho-a: '$(entry sho-a)'"
db_is "$lab/ro/ro.db" "SELECT txn FROM drf_switches WHERE device='su' AND sho='sho-a'" "$txn" &&
  ok "the RO recorded the device's resume of sho-a (txn $txn)" ||
  bad "drf_switches: $(sql "$lab/ro/ro.db" "SELECT sho, txn FROM drf_switches WHERE device='su'")"
db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM drf WHERE device='su' AND state='subscribed'" 1 &&
  ok "one SHO subscribed at the DRF" ||
  bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='su'" | tr '\n' ';')"
"$mcim" device status su --json --dir "$lab" | tr -d ' \n' >"$tmp/st.json"
grep -q '"slot":"sho-a","sho":"sho-a","imsi":"[0-9]*","state":"active"' "$tmp/st.json" &&
  ok "the TRE's active MCIM is sho-a's" || bad "TRE: $(head -c 400 "$tmp/st.json")"
check "su attaches to sho-a" "$mcim" device attach su --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "full access at sho-a" || bad "attach: $(cat "$tmp/out")"
finish
