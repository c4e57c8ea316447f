#!/usr/bin/env bash
# An old SHO that releases its DRF entry on its own, with another txn, before it takes the
# discard receipt, and then does not answer (change via the old SHO, steps 8-11; model
# finding F4, docs/model.md). An SHO registers its own entry `released` whenever it likes,
# with any txn (POST /v1/drf/registrations: registration_proven asks only that it hold an
# entry). The agent is killed just after the TRE destroyed the old MCIM (step 8, a crash
# point); meanwhile sho-a, as a hostile SHO would, registers its entry `released` for a txn
# that is not this change's, and stops. The agent comes back, cannot reach sho-a at step 9,
# and past `ack_deadline` hands the DPF the TRE-signed receipt (step 11). The DPF must take
# it: sho-a's `released` entry links it to the device whatever txn it names. Before the fix
# the DPF took a released entry only for this very txn and refused the receipt
# (REGISTRATION_PENDING until the procedure's deadline): the change failed after step 8, a
# veto by the old SHO, the device left with its PCID only.
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
kills() { sql "$lab/devices/la/agent.db" "SELECT COUNT(*) FROM trace WHERE to_name='crashpoint' AND msg='discard after-tre: SIGKILL'"; }

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture la" "$mcim" lab device add la --dir "$lab"
check "initial provisioning of la with sho-a" "$mcim" run initial la --sho sho-a --json --dir "$lab"
imsi_a=$(sql "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='la' AND state='active'")
sed -i 's/"procedure_timeout": *[0-9]*/"procedure_timeout": 40/' "$lab/devices/la/agent.json"
grep -q '"ack_deadline"' "$lab/devices/la/agent.json" ||
  sed -i 's/"procedure_timeout"/"ack_deadline": 2, "procedure_timeout"/' "$lab/devices/la/agent.json"
# armed: the agent dies once the TRE destroyed the old MCIM, before it saved that
MCIM_CRASHPOINT="la:discard:after-tre" "$mcim" lab restart la --dir "$lab" >/dev/null &&
  ok "la: ack deadline 2 s, agent armed at discard after-tre" || bad "la: restart"
pid=$(pid_of la)
run_bg "$tmp/run.json" change la --to sho-b --via old-sho
if wait_until 60 gone "$pid" && [ "$(kills)" = 1 ]; then
  ok "la killed after the TRE's discard (step 8, recorded by the crash point)"
else bad "la not killed at discard after-tre (kills $(kills))"; fi
txn=$(sql "$lab/devices/la/agent.db" "SELECT txn FROM trace WHERE to_name='crashpoint' LIMIT 1")
[ -n "$txn" ] && ok "txn $txn" || bad "no txn"
# sho-a, hostile: its entry `released` with another txn (a newer seq than its own), then gone
other=0000000000000000000000000000f4f4
[ "$other" != "$txn" ] || bad "the other txn is this one"
body="{\"txn\":\"$other\",\"device\":\"la\",\"sho\":\"sho-a\",\"state\":\"released\",\"endpoint\":\"$(role_url sho-a)\",\"seq\":9000000000000000000}"
code=$(curl -s -o "$tmp/reg.json" -w '%{http_code}' --cacert "$lab/pki/ca/operators-ca.crt" \
  --cert "$lab/pki/sho-a/cert.pem" --key "$lab/pki/sho-a/key.pem" -H 'Content-Type: application/json' \
  -d "$body" "$(role_url ro)/v1/drf/registrations")
[ "$code" = 200 ] && ok "sho-a registered its entry released for another txn" ||
  bad "registration: $code $(head -c 300 "$tmp/reg.json")"
db_is "$lab/ro/ro.db" "SELECT state || ' ' || txn FROM drf WHERE device='la' AND sho='sho-a'" "released $other" &&
  ok "the DRF: sho-a released, txn $other" ||
  bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state, txn FROM drf WHERE device='la'")"
kill -KILL "$(pid_of sho-a)"
check "la restarted (not armed)" "$mcim" lab restart la --dir "$lab"
if wait_until 60 proc_ended la "$txn"; then ok "the procedure ended"; else bad "the procedure still runs"; fi
res=$(proc_field la "$txn" result)
[ "$res" = success ] && ok "the change completed: no veto by sho-a" ||
  bad "the change ended '$res' at step $(proc_field la "$txn" step): $(proc_field la "$txn" cause) $(proc_field la "$txn" detail)"
sql "$lab/devices/la/agent.db" "SELECT msg FROM trace WHERE txn='$txn' AND step=11" | grep -q 'TRE-signed discard receipt' &&
  ok "step 11 with the TRE-signed receipt" || bad "no receipt at step 11: $(sql "$lab/devices/la/agent.db" "SELECT step, msg FROM trace WHERE txn='$txn'" | tail -n 5 | tr '\n' ';')"
wait_until 20 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'" active &&
  ok "sho-b's order active" || bad "sho-b order $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'")"
"$mcim" device attach la --to sho-b --json --dir "$lab" >"$tmp/att.json" 2>&1 &&
  grep -q '"scope": "full"' "$tmp/att.json" && ok "la attaches to sho-b (full)" || bad "attach: $(head -c 300 "$tmp/att.json")"
# sho-a back: the RO relays the receipt, sho-a terminates the old subscription
check "sho-a restarted" "$mcim" lab restart sho-a --dir "$lab"
wait_until 60 db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" terminated &&
  ok "sho-a terminated $imsi_a on the relayed receipt" ||
  bad "sho-a: $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
wait_until 60 db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE state='pending'" 0 &&
  ok "the RO's outbox drained" ||
  bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, path, state, attempts FROM outbox WHERE state='pending'")"
finish
