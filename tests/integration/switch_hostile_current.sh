#!/usr/bin/env bash
# A current SHO that does not take its device's suspend cannot veto a switch between
# pre-provisioned MCIMs (docs/state-machines.md, section 5; DESIGN.md section 10: no party
# blocks another's business). Past the agent's `ack_deadline` the device hands the RO the
# TRE-signed suspend in its place; the RO relays it outside the device's chain of switch
# notices, so the target's resume goes on, and the switch completes: the target active, its
# MCIM the TRE's active one, the current SHO's inactive there (no challenge of that SHO is
# answered with it). Before 2026-12-08 the RO refused that suspend (NOTICE_NOT_RELAYED): the
# switch failed at its deadline and was undone.
#  1. hostile: sho-a answers the device's attach but refuses every suspend of its
#     subscription (a trigger in its database aborts the write: 409, for good), and has
#     released its own DRF entry (an SHO registers its own entry as it likes). The switch to
#     sho-b completes; sho-a refuses the relayed suspend too, which is its own record's
#     business (active), not the device's: that MCIM is inactive in the TRE.
#  2. dead: switching back, sho-b fails the first suspend (500: the device asks again), then
#     stops answering (SIGSTOP).
#     The switch to sho-a completes; the RO retries the suspend, and once sho-b is back its
#     record follows (standby).
#  3. no access: sho-a refuses the device's attach as well (every write of that subscription
#     aborts). The switch to sho-b goes on over the PCID's access at the VNO.
#  4. the current SHO's token unchecked: back to sho-a, sho-b takes the suspend, then stops
#     (SIGSTOP) while the RO restarts (killed at a crash point as it took the resume): the
#     new RO instance cannot check sho-b's token (sho-b's key, fetched from sho-b). The
#     device asks again over the VNO, and the switch completes.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl python3

preloaded_lab su
imsi_a=$(sql "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='su' AND state='active'")
imsi_b=$(sql "$lab/sho-b/sho-b.db" "SELECT imsi FROM auc WHERE device='su'")
state_of() { # state_of SHO IMSI: the SHO's own record of that subscription
  sql "$lab/$1/$1.db" "SELECT state FROM auc WHERE imsi='$2'"
}
refuse_suspends() { # refuse_suspends SHO IMSI: the SHO's database aborts its suspend (409)
  sql "$lab/$1/$1.db" "CREATE TRIGGER hostile BEFORE UPDATE OF state ON auc
    WHEN NEW.imsi = '$2' AND NEW.state = 'standby' BEGIN SELECT RAISE(ABORT, 'no'); END;"
}
fail_suspends() { # fail_suspends SHO: the SHO's database fails every change of a state (500)
  sql "$lab/$1/$1.db" "CREATE TRIGGER broken BEFORE UPDATE OF state ON auc
    BEGIN SELECT mcim_no_such_function(); END;"
}
switch_to() { # switch_to SHO OUT WHAT: `mcim run switch su --to SHO` succeeds (WHAT), OUT its output
  if "$mcim" run switch su --to "$1" --json --dir "$lab" >"$2" 2>&1 &&
    grep -q '"result": "success"' "$2"; then ok "$3"; else bad "switch: $(head -c 600 "$2")"; fi
}
agent_cfg() { # agent_cfg ACK_DEADLINE: su's deadlines, its agent restarted
  python3 - "$lab/devices/su/agent.json" "$(scaled 40)" "$1" "$(scaled 1000)" <<'PY'
import json, sys
path, deadline, ack, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = json.load(open(path))
cfg.update(procedure_timeout=deadline, ack_deadline=ack, request_timeout_ms=timeout)
json.dump(cfg, open(path, "w"), indent=2)
PY
  check "su: ack deadline $1 s, agent restarted" "$mcim" lab restart su --dir "$lab"
}

# ---- 1. hostile ----
refuse_suspends sho-a "$imsi_a"
sql "$lab/ro/ro.db" "UPDATE drf SET state = 'released' WHERE device = 'su' AND sho = 'sho-a'"
agent_cfg 2
switch_to sho-b "$tmp/sw.json" "the switch completed although sho-a refused its suspend"
txn=$(sql "$lab/devices/su/agent.db" "SELECT txn FROM procedures WHERE kind = 'switch'")
grep -q "sho-a did not take the suspend after" "$lab/devices/su/agent.log" &&
  ok "the agent logged the deadline and the relay in its place" || bad "agent.log: no deadline logged"
db_is "$lab/devices/su/agent.db" "SELECT COUNT(*) FROM trace WHERE txn='$txn' AND to_name='ro'
  AND msg LIKE '%(relayed) notification: suspend the subscription of slot sho-a%' AND cause IS NULL" 1 &&
  ok "the RO took the TRE-signed suspend of sho-a" ||
  bad "trace: $(sql "$lab/devices/su/agent.db" "SELECT to_name, msg, cause FROM trace WHERE txn='$txn'" | tr '\n' ';')"

# the network: sho-b active; sho-a's own record still active, as it chose: it refused the
# relayed suspend too (its 409, which the RO's outbox takes as final, after one attempt made
# outside the device's chain); sho-b's resume did not wait for it
wait_until 20 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE imsi='$imsi_b'" active &&
  ok "sho-b's subscription active" ||
  bad "sho-b: '$(state_of sho-b "$imsi_b")'"
[ "$(state_of sho-a "$imsi_a")" = active ] && ok "sho-a's own record still active, as it refuses" ||
  bad "sho-a: '$(state_of sho-a "$imsi_a")'"
wait_until 20 db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE txn='$txn' AND peer='sho-a'
  AND state<>'pending' AND chain IS NULL AND after_id IS NULL AND attempts >= 1" 1 &&
  ok "the RO relayed the suspend to sho-a, in no chain" ||
  bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, state, attempts, chain, after_id, last_cause FROM outbox WHERE txn='$txn'" | tr '\n' ';')"
db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE txn='$txn' AND peer='sho-b' AND state='delivered'" 1 &&
  ok "sho-b's resume delivered" ||
  bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, state, attempts, after_id FROM outbox WHERE txn='$txn'" | tr '\n' ';')"
# the device: sho-b's MCIM active, sho-a's inactive, which answers no challenge
"$mcim" device status su --json --dir "$lab" | tr -d ' \n' >"$tmp/st.json"
grep -q '"slot":"sho-b","sho":"sho-b","imsi":"[0-9]*","state":"active"' "$tmp/st.json" &&
  grep -q '"slot":"sho-a","sho":"sho-a","imsi":"[0-9]*","state":"inactive"' "$tmp/st.json" &&
  ok "the TRE: sho-b's MCIM active, sho-a's inactive" || bad "TRE: $(head -c 500 "$tmp/st.json")"
check "su attaches to sho-b" "$mcim" device attach su --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "full access at sho-b" || bad "attach: $(cat "$tmp/out")"
if "$mcim" device attach su --to sho-a --json --dir "$lab" >"$tmp/att_a.json" 2>&1; then
  bad "su attached to sho-a with an inactive MCIM: $(head -c 300 "$tmp/att_a.json")"
else
  grep -q "WRONG_STATE" "$tmp/att_a.json" && ok "no attach to sho-a: the TRE answers no challenge with an inactive MCIM (WRONG_STATE)" ||
    bad "attach to sho-a: $(head -c 300 "$tmp/att_a.json")"
fi

wait_until 20 db_is "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='su' AND sho='sho-b'" subscribed &&
  ok "the DRF holds sho-b subscribed" ||
  bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='su'" | tr '\n' ';')"

# ---- 2. dead: back to sho-a, sho-b fails once, then does not answer ----
sql "$lab/sho-a/sho-a.db" "DROP TRIGGER hostile"
# sho-a registers its entry again (a switch notice is relayed to a live entry only)
sql "$lab/ro/ro.db" "UPDATE drf SET state = 'subscribed' WHERE device = 'su' AND sho = 'sho-a'"
fail_suspends sho-b
agent_cfg 8
"$mcim" run switch su --to sho-a --json --dir "$lab" >"$tmp/sw2.json" 2>&1 &
runpid=$!
wait_until 30 grep -q "cause=STORE_ERROR su -> sho-b: notification: suspend" "$lab/devices/su/agent.log" &&
  ok "sho-b failed the first suspend" || bad "no failure of sho-b in agent.log"
pause sho-b
# what sho-b will find when it is back: no trigger (sqlite3 waits for a lock it might hold)
sqlite3 -cmd ".timeout 5000" "$lab/sho-b/sho-b.db" "DROP TRIGGER broken" &&
  ok "sho-b stopped (SIGSTOP), its trigger gone" || bad "sho-b: trigger not dropped"
if wait "$runpid" && grep -q '"result": "success"' "$tmp/sw2.json"; then
  ok "the switch back to sho-a completed while sho-b did not answer"
else bad "switch back: $(head -c 600 "$tmp/sw2.json")"; fi
txn2=$(sql "$lab/devices/su/agent.db" "SELECT txn FROM procedures WHERE kind = 'switch' AND txn <> '$txn'")
[ "$(state_of sho-a "$imsi_a")" = active ] && ok "sho-a active" || bad "sho-a: '$(state_of sho-a "$imsi_a")'"
[ "$(state_of sho-b "$imsi_b")" = active ] && ok "sho-b's own record still active while it is away" ||
  bad "sho-b: '$(state_of sho-b "$imsi_b")'"
wait_until 30 db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE txn='$txn2' AND peer='sho-b'
  AND state='pending' AND chain IS NULL AND attempts >= 1" 1 &&
  ok "the RO retries the suspend to sho-b, in no chain" ||
  bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, state, attempts, chain, last_cause FROM outbox WHERE txn='$txn2'" | tr '\n' ';')"
resume sho-b
sql "$lab/ro/ro.db" "UPDATE outbox SET next_at = 0 WHERE txn='$txn2' AND peer='sho-b' AND state='pending'"
wait_until 60 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE imsi='$imsi_b'" standby &&
  ok "sho-b back: its subscription in standby once the relayed suspend reached it" ||
  bad "sho-b: '$(state_of sho-b "$imsi_b")'"
wait_until 30 db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE txn='$txn2' AND state<>'delivered'" 0 &&
  ok "the RO's messages of that switch all delivered" ||
  bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, path, state, attempts, last_cause FROM outbox WHERE txn='$txn2'" | tr '\n' ';')"
check "su attaches to sho-a" "$mcim" device attach su --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "full access at sho-a" || bad "attach: $(cat "$tmp/out")"

# ---- 3. no access: to sho-b again, sho-a refusing the attach too ----
sql "$lab/sho-a/sho-a.db" "CREATE TRIGGER hostile BEFORE UPDATE ON auc
  WHEN OLD.imsi = '$imsi_a' BEGIN SELECT RAISE(ABORT, 'no'); END;"
agent_cfg 2
switch_to sho-b "$tmp/sw3.json" "the switch completed although sho-a refused the device's attach"
txn3=$(sql "$lab/devices/su/agent.db" "SELECT txn FROM procedures WHERE kind = 'switch' AND txn NOT IN ('$txn', '$txn2')")
grep -q "no attach to sho-a .*: the switch goes on over the VNO" "$lab/devices/su/agent.log" &&
  ok "the agent logged the refused attach and went on" || bad "agent.log: no refused attach logged"
db_is "$lab/devices/su/agent.db" "SELECT COUNT(*) > 0 FROM trace WHERE txn='$txn3' AND to_name='vno'" 1 &&
  db_is "$lab/devices/su/agent.db" "SELECT COUNT(*) FROM trace WHERE txn='$txn3' AND to_name='ro'
    AND msg LIKE '%(relayed) notification: suspend the subscription of slot sho-a%' AND cause IS NULL" 1 &&
  ok "over the VNO's access, the RO took the suspend of sho-a" ||
  bad "trace: $(sql "$lab/devices/su/agent.db" "SELECT to_name, msg, cause FROM trace WHERE txn='$txn3'" | tr '\n' ';')"
wait_until 20 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE imsi='$imsi_b'" active &&
  ok "sho-b's subscription active again" || bad "sho-b: '$(state_of sho-b "$imsi_b")'"
"$mcim" device status su --json --dir "$lab" | tr -d ' \n' >"$tmp/st3.json"
grep -q '"slot":"sho-b","sho":"sho-b","imsi":"[0-9]*","state":"active"' "$tmp/st3.json" &&
  ok "the TRE: sho-b's MCIM active" || bad "TRE: $(head -c 500 "$tmp/st3.json")"
sql "$lab/sho-a/sho-a.db" "DROP TRIGGER hostile"

# ---- 4. the current SHO's token unchecked: back to sho-a, sho-b away, the RO restarted ----
agent_cfg 8
MCIM_CRASHPOINT="ro:POST /v1/dpf/notices:before-answer" "$mcim" lab restart ro --dir "$lab" >/dev/null &&
  ok "the RO armed: killed as it takes a notice" || bad "ro: restart"
ro_pid=$(pid_of ro)
"$mcim" run switch su --to sho-a --json --dir "$lab" >"$tmp/sw4.json" 2>&1 &
runpid=$!
wait_until 30 process_gone "$ro_pid" && ok "the RO killed as it took the resume" || bad "the RO not killed"
pause sho-b
check "sho-b stopped, the RO restarted (not armed)" "$mcim" lab restart ro --dir "$lab"
if wait "$runpid" && grep -q '"result": "success"' "$tmp/sw4.json"; then
  ok "the switch to sho-a completed"
else bad "switch: $(head -c 600 "$tmp/sw4.json")"; fi
txn4=$(sql "$lab/devices/su/agent.db" "SELECT txn FROM procedures WHERE kind = 'switch' AND txn NOT IN ('$txn', '$txn2', '$txn3')")
grep -q "not taken with the current SHO's token, asked again over the VNO" "$lab/devices/su/agent.log" &&
  db_is "$lab/devices/su/agent.db" "SELECT COUNT(*) > 0 FROM trace WHERE txn='$txn4' AND to_name='vno'" 1 &&
  ok "the device asked the RO again over the VNO" ||
  bad "no fallback to the VNO: $(sql "$lab/devices/su/agent.db" "SELECT to_name, msg, cause FROM trace WHERE txn='$txn4'" | tr '\n' ';')"
"$mcim" device status su --json --dir "$lab" | tr -d ' \n' >"$tmp/st4.json"
grep -q '"slot":"sho-a","sho":"sho-a","imsi":"[0-9]*","state":"active"' "$tmp/st4.json" &&
  ok "the TRE: sho-a's MCIM active" || bad "TRE: $(head -c 500 "$tmp/st4.json")"
resume sho-b
finish
