#!/usr/bin/env bash
# The nonce of a change expires before the device fetches it (change via the old SHO, step 4).
# The PVA's validation of the change is held (a trigger in its store keeps it out of reach, as
# if the device were away), then let go with its nonce already expired. The PVA sends sho-b a
# failure verdict and no second validation of that txn comes: the device must end the change
# at once with NONCE_EXPIRED, where it polled until its procedure_timeout and failed with
# TIMEOUT and the detail "waiting for the SHO's validation request" before (found as
# change_faults' "d/pva at step 4" under valgrind). Nothing is lost: the device keeps sho-a's
# MCIM and a second change succeeds.
. "$(dirname "$0")/lib/common.bash"
need sqlite3
bg="" # the background `mcim run` (run_bg)
trap cleanup_bg EXIT

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture ne" "$mcim" lab device add ne --dir "$lab"
check "initial ne with sho-a" "$mcim" run initial ne --sho sho-a --json --dir "$lab"

hold_validations ne
run_bg "$tmp/change.json" change ne --to sho-b --via old-sho
wait_until 60 validation_held ne && ok "sho-b's validation request held at the PVA" || bad "no validation held"
# let go, its nonce expired a second ago (the PVA's clock is this machine's)
started=$(date +%s)
sql "$lab/pva/pva.db" "UPDATE validations SET expires = strftime('%s', 'now') - 1
  WHERE device = 'ne' AND state = 'held';"
release_validations ne
rc=0
run_wait || rc=$?
took=$(($(date +%s) - started))
[ "$rc" != 0 ] && [ "$(jfield "$tmp/change.json" result)" = NONCE_EXPIRED ] &&
  ok "the change failed with NONCE_EXPIRED" ||
  bad "change: rc $rc, $(jfield "$tmp/change.json" result): $(jfield "$tmp/change.json" detail)"
txn=$(jfield "$tmp/change.json" txid)
db_is "$lab/devices/ne/agent.db" "SELECT state || ' ' || stage || ' ' || step || ' ' || cause FROM procedures WHERE txn='$txn'" "failed nonce 4 NONCE_EXPIRED" &&
  ok "the agent ended it at step 4 (nonce)" ||
  bad "agent: $(sql "$lab/devices/ne/agent.db" "SELECT state, stage, step, cause FROM procedures WHERE txn='$txn'")"
# well before the agent's procedure_timeout (60 s, scaled): the device did not poll it out
[ "$took" -lt "$(scaled 30)" ] && ok "ended $took s after the nonce was let go" ||
  bad "ended only after $took s"
wait_until 30 db_is "$lab/pva/pva.db" "SELECT state FROM validations WHERE txn='$txn'" expired &&
  ok "the PVA marked the validation expired" ||
  bad "validation: $(sql "$lab/pva/pva.db" "SELECT state FROM validations WHERE txn='$txn'")"
wait_until 30 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'" failed &&
  ok "sho-b got the failure verdict: its order failed" ||
  bad "sho-b's order: $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'")"
"$mcim" device status ne --json --dir "$lab" | tr -d ' \n' | grep -q '"slot":"sho-a","sho":"sho-a","imsi":"[0-9]*","state":"active"' &&
  ok "ne keeps sho-a's MCIM, active" || bad "slots: $("$mcim" device status ne --json --dir "$lab")"
check "ne attaches to sho-a" "$mcim" device attach ne --to sho-a --json --dir "$lab"
check "a second change to sho-b succeeds" "$mcim" run change ne --to sho-b --via old-sho --json --dir "$lab"
check "lab down" "$mcim" lab down --dir "$lab"
finish
