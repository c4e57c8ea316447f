#!/usr/bin/env bash
# The old SHO's acknowledgement lost after it took the discard receipt (change via the old
# SHO, steps 9-11; model finding F2, docs/model.md). sho-a takes the receipt at step 9: it
# terminates the subscription and releases its DRF entry (its outbox tells the RO); its
# answer never reaches the device (the agent is killed as the answer arrives, a crash point),
# and once the agent is back sho-a is unreachable. Past `ack_deadline` the device hands the
# DPF the TRE-signed receipt in place of the ack (step 11). The DPF must take it: sho-a's own
# `released` entry for this txn is the proof it took the receipt. Before the fix the DPF
# counted only entries not released and refused it (REGISTRATION_PENDING until the
# procedure's deadline): the change failed after step 8, the device left with its PCID only.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl

bg=""
on_exit() {
  for p in $bg; do kill "$p" 2>/dev/null || true; done
  cleanup
}
trap on_exit EXIT

ctl() { curl -s --max-time 5 --unix-socket "$lab/devices/$1/control.sock" "http://localhost$2"; }
proc_field() { # proc_field DEV TXN FIELD
  ctl "$1" "/v1/procedures/$2" | tr -d '\n' | grep -o "\"$3\": *[^,}]*" | head -n1 |
    sed 's/^[^:]*: *//; s/^"//; s/"$//'
}
proc_ended() { local s; s=$(proc_field "$1" "$2" state); [ -n "$s" ] && [ "$s" != running ]; }
gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
kills() { sql "$lab/devices/la/agent.db" "SELECT COUNT(*) FROM trace WHERE to_name='crashpoint' AND msg='receipt after-send: SIGKILL'"; }

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture la" "$mcim" lab device add la --dir "$lab"
check "initial provisioning of la with sho-a" "$mcim" run initial la --sho sho-a --json --dir "$lab"
imsi_a=$(sql "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='la' AND state='active'")
sed -i 's/"procedure_timeout": *[0-9]*/"procedure_timeout": 40/' "$lab/devices/la/agent.json"
grep -q '"ack_deadline"' "$lab/devices/la/agent.json" ||
  sed -i 's/"procedure_timeout"/"ack_deadline": 2, "procedure_timeout"/' "$lab/devices/la/agent.json"
# armed: the agent dies as the 2xx answer of its receipt stage (sho-a's ack) arrives
MCIM_CRASHPOINT="la:receipt:after-send" "$mcim" lab restart la --dir "$lab" >/dev/null &&
  ok "la: ack deadline 2 s, agent armed at receipt after-send" || bad "la: restart"
pid=$(pid_of la)
run_bg "$tmp/run.json" change la --to sho-b --via old-sho
if wait_until 60 gone "$pid" && [ "$(kills)" = 1 ]; then
  ok "la killed as sho-a's acknowledgement arrived (step 10, recorded by the crash point)"
else bad "la not killed at receipt after-send (kills $(kills))"; fi
# (the subscriber's `mcim run` lost its agent: left running, killed on exit; the procedure is
# followed on the agent itself)
txn=$(sql "$lab/devices/la/agent.db" "SELECT txn FROM trace WHERE to_name='crashpoint' LIMIT 1")
[ -n "$txn" ] && ok "txn $txn" || bad "no txn"
# sho-a took the receipt: subscription terminated, its `released` registration at the DRF
wait_until 20 db_is "$lab/ro/ro.db" "SELECT state || ' ' || txn FROM drf WHERE device='la' AND sho='sho-a'" "released $txn" &&
  ok "sho-a released its DRF entry for this txn" ||
  bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state, txn FROM drf WHERE device='la'")"
db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" terminated &&
  ok "sho-a terminated $imsi_a" || bad "sho-a: $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
# the ack never reaches the device: sho-a is gone when the agent comes back
kill -KILL "$(pid_of sho-a)"
check "la restarted (not armed)" "$mcim" lab restart la --dir "$lab"
if wait_until 60 proc_ended la "$txn"; then ok "the procedure ended"; else bad "the procedure still runs"; fi
res=$(proc_field la "$txn" result)
[ "$res" = success ] && ok "the change completed without sho-a's ack" ||
  bad "the change ended '$res' at step $(proc_field la "$txn" step): $(proc_field la "$txn" cause) $(proc_field la "$txn" detail)"
sql "$lab/devices/la/agent.db" "SELECT msg FROM trace WHERE txn='$txn' AND step=11" | grep -q 'TRE-signed discard receipt' &&
  ok "step 11 with the TRE-signed receipt" || bad "no receipt at step 11: $(sql "$lab/devices/la/agent.db" "SELECT step, msg FROM trace WHERE txn='$txn'" | tail -n 5 | tr '\n' ';')"
wait_until 20 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'" active &&
  ok "sho-b's order active" || bad "sho-b order $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'")"
wait_until 20 db_is "$lab/ro/ro.db" "SELECT sho FROM drf WHERE device='la' AND state='subscribed'" sho-b &&
  ok "the DRF points to sho-b" || bad "DRF $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='la'")"
"$mcim" device attach la --to sho-b --json --dir "$lab" >"$tmp/att.json" 2>&1 &&
  grep -q '"scope": "full"' "$tmp/att.json" && ok "la attaches to sho-b (full)" || bad "attach: $(head -c 300 "$tmp/att.json")"
"$mcim" device status la --json --dir "$lab" | tr -d ' \n' | grep -q '"pending":\[\]' &&
  ok "nothing left queued in the TRE" || bad "the TRE still queues a notice"
# sho-a back: the RO's relay of the receipt gets sho-a's stored answer, nothing is left
check "sho-a restarted" "$mcim" lab restart sho-a --dir "$lab"
wait_until 60 db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE state='pending'" 0 &&
  ok "the RO's outbox drained (the receipt relayed to sho-a)" ||
  bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, path, state, attempts FROM outbox WHERE state='pending'")"
finish
