#!/usr/bin/env bash
# Structured logs of the daemons and the device agent (issue 5, operations):
#   - the agent a lab starts names its lines with the device id, not "m2me";
#   - `m2me --log-format json --log-file F` and `mcimd --log-format json --log-file F`: every
#     line of F is one JSON object {time, level, role, [txn], [step], [cause], msg}; the
#     agent's role is its device id; a procedure's lines carry its txn and seed step;
#   - no access token (a JWS) in any log.
# The lab's vno and dev1's agent are replaced by ones this test starts (stopped by pid at exit).
. "$(dirname "$0")/lib/common.bash"
need python3 curl

mine=""
trap 'for p in $mine; do kill "$p" 2>/dev/null || true; done; cleanup' EXIT

json_lines() { # every line of FILE is a JSON object with time, level, role, msg
  [ -s "$1" ] || return 1
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    assert isinstance(o, dict) and all(k in o for k in ("time", "level", "role", "msg"))' "$1" 2>/dev/null
}
lab_pid() { # lab_pid roles|devices NAME
  tr -d '\n ' <"$lab/lab.json" | grep -o "\"name\":\"$2\",[^}]*\"pid\":[0-9]*" | grep -o '"pid":[0-9]*' | cut -d: -f2
}
gone() { # gone PID: not running (a zombie waiting for a parent that never reaps counts)
  ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}
stop_pid() {
  kill "$1" 2>/dev/null || true
  wait_until 10 gone "$1"
}

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture dev1" "$mcim" lab device add dev1 --dir "$lab"
dev="$lab/devices/dev1"

# The agent the lab started (text format): every line names dev1.
alog="$dev/agent.log"
logged() { grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "$alog" 2>/dev/null; }
wait_until 10 logged || bad "the lab's agent wrote no line to $alog: $(ls "$dev")"
roles_seen=$(grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "$alog" | awk '{print $3}' | sort -u | tr '\n' ' ')
[ "$roles_seen" = "dev1 " ] && ok "the lab's agent logs as dev1" || bad "agent log roles: '$roles_seen' ($alog)"

# Replace the lab's vno and dev1's agent by JSON-logging ones.
vpid=$(lab_pid roles vno)
apid=$(lab_pid devices dev1)
[ -n "$vpid" ] && [ -n "$apid" ] && ok "lab.json records vno ($vpid) and dev1 ($apid)" || bad "pids: '$vpid' '$apid'"
stop_pid "$vpid" && stop_pid "$apid" && ok "the lab's vno and agent stopped" || bad "cannot stop vno/agent"
"$MCIM_BIN/mcimd" --role vno --config "$lab/vno/vno.json" --log-format json --log-file "$tmp/vno.log" \
  2>"$tmp/vno.stderr" &
mine="$mine $!"
"$MCIM_BIN/m2me" --dir "$dev" --log-format json --log-file "$tmp/dev1.log" 2>"$tmp/dev1.stderr" &
mine="$mine $!"
both_up() {
  curl -sf --cacert "$lab/pki/ca/operators-ca.crt" "$(role_url vno)/v1/health" >/dev/null 2>&1 &&
    curl -sf --unix-socket "$dev/control.sock" http://localhost/v1/health >/dev/null 2>&1
}
wait_until 10 both_up && ok "mcimd and m2me run with --log-format json --log-file" || bad "they do not start: $(cat "$tmp/vno.stderr" "$tmp/dev1.stderr")"

check "run initial dev1 --sho sho-a" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
txid=$(jfield "$tmp/out" txid)
[ "$(jfield "$tmp/out" result)" = success ] && ok "the procedure succeeds" || bad "result: $(head -c 300 "$tmp/out")"

# m2me: JSON lines, role dev1 (the device id from the start), the procedure's txn and steps
json_lines "$tmp/dev1.log" && ok "m2me --log-format json: every line a JSON object" ||
  bad "dev1.log: $(head -n 3 "$tmp/dev1.log")"
if grep -q '"role":"dev1"' "$tmp/dev1.log" && ! grep -qv '"role":"dev1"' "$tmp/dev1.log"; then
  ok "every agent line has role \"dev1\""
else
  bad "agent roles: $(grep -o '"role":"[^"]*"' "$tmp/dev1.log" | sort | uniq -c | tr '\n' ' ')"
fi
grep -q "\"txn\":\"$txid\",\"step\":[0-9]" "$tmp/dev1.log" && ok "agent lines carry the procedure's txn and step" ||
  bad "no line with txn $txid and a step in dev1.log"
grep -q '"msg":"initial with sho-a succeeded"' "$tmp/dev1.log" && ok "the agent logs the outcome" ||
  bad "no outcome line in dev1.log"
[ ! -s "$tmp/dev1.stderr" ] && ok "m2me --log-file: nothing on stderr" || bad "m2me stderr: $(head -c 300 "$tmp/dev1.stderr")"

# mcimd: JSON lines, role vno, the attach of this procedure with txn and step
json_lines "$tmp/vno.log" && ok "mcimd --log-format json: every line a JSON object" ||
  bad "vno.log: $(head -n 3 "$tmp/vno.log")"
if grep -q '"role":"vno"' "$tmp/vno.log" && ! grep -qv '"role":"vno"' "$tmp/vno.log"; then
  ok "every vno line has role \"vno\""
else
  bad "vno roles: $(grep -o '"role":"[^"]*"' "$tmp/vno.log" | sort | uniq -c | tr '\n' ' ')"
fi
grep -q "\"txn\":\"$txid\",\"step\":5" "$tmp/vno.log" && ok "vno logs step 5 (authentication) of the procedure" ||
  bad "no step-5 line of $txid in vno.log"

# A refused attach: the cause is a field of its own.
got=$(curl -s -o "$tmp/body" -w '%{http_code}' --cacert "$lab/pki/ca/operators-ca.crt" \
  -H 'Content-Type: application/json' -d '{"pcid":"001019999999999"}' "$(role_url vno)/v1/attach" || true)
[ "$got" = 404 ] && grep -q '"cause":"UNKNOWN_IDENTITY"' "$tmp/body" &&
  ok "attach with an unknown identity: refused, 404 UNKNOWN_IDENTITY" || bad "attach with an unknown identity: $got $(head -c 300 "$tmp/body")"
cause_logged() { grep -q '"cause":"UNKNOWN_IDENTITY"' "$tmp/vno.log"; }
wait_until 5 cause_logged && ok "a refusal's cause is a JSON field" || bad "no cause field in vno.log"

# No access token (a JWS, "eyJ...") in any log of the lab or of this test.
if grep -l 'eyJ[A-Za-z0-9_-]\{20,\}\.' "$tmp"/*.log "$lab"/*/*.log "$dev"/*.log 2>/dev/null; then
  bad "a token is logged (files above)"
else
  ok "no token in any log"
fi

finish
