#!/usr/bin/env bash
# An SHO's HLR away when a subscription ends (issue 13 point 1): the old SHO terminates the
# subscription (a change via the pristine state: the device's deferred notice, relayed by the
# RO) while its osmo-hlr is stopped. (A change via the old SHO needs that SHO's connectivity,
# so its HLR: with the HLR away the device cannot attach there, as it should.) The procedure
# completes, the SHO keeps its intent (the subscriber must leave the HLR) with the cause, and
# once the HLR is back (same database) the SHO's tick deletes the subscriber there: the HLR's
# list no longer has it and the HLR itself refuses the old IMSI (GSUP SendAuthInfo).
. "$(dirname "$0")/lib/common.bash"
need osmo-hlr sqlite3 python3
hlr_pid=""
trap 'if [ -n "$hlr_pid" ]; then kill "$hlr_pid" 2>/dev/null || true; fi; cleanup' EXIT

check "lab up --auc osmo-hlr" "$mcim" lab up --auc osmo-hlr --dir "$lab"
check "manufacture dev1" "$mcim" lab device add dev1 --dir "$lab"
check "initial provisioning with sho-a" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
imsi_a=$(sql "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='dev1'")
"$mcim" lab status --json --dir "$lab" | tr -d ' \n' >"$tmp/st.json"
entry=$(grep -o '"name":"sho-a","program":"osmo-hlr","addr":"[0-9.]*","pid":[0-9]*' "$tmp/st.json")
addr=$(echo "$entry" | grep -o '"addr":"[0-9.]*"' | cut -d'"' -f4)
pid=$(echo "$entry" | grep -o '"pid":[0-9]*' | cut -d: -f2)
hlr_has() { [ "$(sqlite3 "$lab/hlr/sho-a/hlr.db" "SELECT COUNT(*) FROM subscriber WHERE imsi='$1'")" = 1 ]; }
hlr_has "$imsi_a" && ok "sho-a's HLR holds $imsi_a" || bad "sho-a's HLR lacks $imsi_a"

# sho-a's HLR stopped (the lab's own process, by its recorded pid)
[ -n "$pid" ] && kill "$pid"
gone() { ! kill -0 "$pid" 2>/dev/null; }
wait_until 10 gone && ok "sho-a's HLR stopped" || bad "sho-a's HLR (pid $pid) still runs"
check "change dev1 to sho-b via pristine, sho-a's HLR away" "$mcim" run change dev1 --to sho-b --via pristine --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "the change succeeds" || bad "result: $(head -c 600 "$tmp/out")"
terminated() { [ "$(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")" = terminated ]; }
# the deferred notice reaches sho-a through the RO's outbox: waited for
wait_until 10 terminated && ok "sho-a's record: $imsi_a terminated" || bad "sho-a's record of $imsi_a"
intent() { sql "$lab/sho-a/sho-a.db" "SELECT want, done, cause FROM auc_hlr WHERE imsi='$imsi_a'"; }
intent_failed() { [ "$(intent)" = "absent|0|PEER_UNREACHABLE" ]; }
# (its first try follows the notice's commit: waited for)
wait_until 5 intent_failed && ok "sho-a keeps the intent: $(intent)" ||
  bad "sho-a's intent for $imsi_a: '$(intent)', expected absent|0|PEER_UNREACHABLE"
grep -q "subscriber $imsi_a not deleted yet" "$lab/sho-a/sho-a.log" &&
  ok "sho-a logs the HLR it could not reach" || bad "no such line in sho-a's log"
hlr_has "$imsi_a" && ok "the stopped HLR's database still holds $imsi_a" || bad "the HLR lost $imsi_a while stopped"

# back, same configuration and database
setsid "$(command -v osmo-hlr)" -c "$lab/hlr/sho-a/osmo-hlr.cfg" -l "$lab/hlr/sho-a/hlr.db" \
  >>"$lab/hlr/sho-a/osmo-hlr.log" 2>&1 </dev/null &
hlr_pid=$!
done_intent() { [ "$(sql "$lab/sho-a/sho-a.db" "SELECT done FROM auc_hlr WHERE imsi='$imsi_a'")" = 1 ]; }
# the intent's backoff (1 s, doubling) while the HLR was away bounds the wait
wait_until 40 done_intent && ok "sho-a's tick applied the intent once the HLR was back" ||
  bad "intent still pending: $(sql "$lab/sho-a/sho-a.db" "SELECT * FROM auc_hlr")"
hlr_has "$imsi_a" && bad "sho-a's HLR still holds $imsi_a" || ok "sho-a's HLR no longer holds $imsi_a"
got=$(python3 "$(dirname "$0")/lib/gsup_sai.py" "$addr" "$imsi_a")
[ "$got" = "error 2" ] && ok "sho-a's HLR itself refuses $imsi_a (IMSI unknown)" || bad "sho-a's HLR answers '$got'"
check "dev1 attaches to sho-b" "$mcim" device attach dev1 --to sho-b --json --dir "$lab"
check "lab down" "$mcim" lab down --dir "$lab"
kill "$hlr_pid" 2>/dev/null || true
hlr_pid=""
finish
