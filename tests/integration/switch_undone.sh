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
#
# Then the undo while the RO does not answer (SIGSTOP): the agent sends no resume of sho-a at
# all (it could land before sho-b heard its suspend; before the RO's chains it went straight
# to sho-a, and both could be active), keeps the undo due in agent.db and asks again, with
# undo_retry's backoff, until the RO takes it; then sho-a is active again and the DRF follows.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl python3

preloaded_lab su
entry() { sql "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='su' AND sho='$1'"; }
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

# --- the undo while the RO does not answer ---
adb="$lab/devices/su/agent.db"
python3 - "$lab/devices/su/agent.json" "$(scaled 8)" "$(scaled 1000)" <<'PY'
import json, sys
path, deadline, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = json.load(open(path))
cfg.update(procedure_timeout=deadline, undo_retry=1, request_timeout_ms=timeout)
json.dump(cfg, open(path, "w"), indent=2)
PY
check "su: undo_retry 1 s, request timeout $(scaled 1000) ms, agent restarted" "$mcim" lab restart su --dir "$lab"
"$mcim" run switch su --to sho-b --json --dir "$lab" >"$tmp/sw2.json" 2>&1 &
runpid=$!
wait_until 30 db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" standby &&
  ok "second switch: sho-a suspended" || bad "sho-a: not suspended"
pause ro
if wait "$runpid"; then bad "the second switch succeeded: $(head -c 400 "$tmp/sw2.json")"; else
  grep -q '"TIMEOUT"' "$tmp/sw2.json" && ok "the second switch failed at its deadline (TIMEOUT)" ||
    bad "switch: $(head -c 400 "$tmp/sw2.json")"
fi
txn2=$(sql "$adb" "SELECT txn FROM procedures WHERE kind = 'switch' ORDER BY created DESC LIMIT 1")
wait_until 30 db_is "$adb" "SELECT attempts >= 2 FROM undo_due WHERE txn = '$txn2'" 1 &&
  ok "the undo is due in agent.db and was asked again ($(sql "$adb" "SELECT attempts FROM undo_due"))" ||
  bad "undo_due: '$(sql "$adb" "SELECT txn, attempts, next_at FROM undo_due")'"
db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" standby &&
  ok "sho-a still suspended while the RO does not answer (no resume sent around the RO)" ||
  bad "sho-a: $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
grep -q "asked again later" "$lab/devices/su/agent.log" &&
  ok "the agent logged the undo as asked again" || bad "agent.log: no retry logged"
# the undo outlives a restart of the agent: the new one finds it due in agent.db and goes on
n0=$(sql "$adb" "SELECT attempts FROM undo_due WHERE txn = '$txn2'")
check "su's agent restarted with the undo due" "$mcim" lab restart su --dir "$lab"
wait_until 60 db_is "$adb" "SELECT attempts > ${n0:-0} FROM undo_due WHERE txn = '$txn2'" 1 &&
  ok "the restarted agent asked again ($n0 -> $(sql "$adb" "SELECT attempts FROM undo_due"))" ||
  bad "undo_due after the restart: '$(sql "$adb" "SELECT txn, attempts, next_at FROM undo_due")'"
resume ro
wait_until 60 db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" active &&
  ok "the RO back: sho-a's subscription active again" ||
  bad "sho-a AuC: $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
wait_until 20 db_is "$adb" "SELECT COUNT(*) FROM undo_due" 0 &&
  ok "the undo is no longer due" || bad "undo_due: '$(sql "$adb" "SELECT * FROM undo_due")'"
wait_until 20 db_is "$lab/ro/ro.db" "SELECT txn FROM drf_switches WHERE device='su' AND sho='sho-a'" "$txn2" &&
  ok "the RO recorded the device's resume of sho-a (txn $txn2)" ||
  bad "drf_switches: $(sql "$lab/ro/ro.db" "SELECT sho, txn FROM drf_switches WHERE device='su'")"
wait_until 20 db_is "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='su' AND sho='sho-a'" subscribed &&
  ok "the DRF holds sho-a subscribed again" || bad "DRF sho-a: '$(entry sho-a)'"
db_is "$lab/sho-b/sho-b.db" "SELECT COUNT(*) FROM auc WHERE device='su' AND state='active'" 0 &&
  ok "sho-b never active" || bad "sho-b: $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE device='su'")"
check "su attaches to sho-a again" "$mcim" device attach su --to sho-a --json --dir "$lab"
finish
