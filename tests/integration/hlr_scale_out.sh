#!/usr/bin/env bash
# Two instances of every role on PostgreSQL with osmo-hlr as the AuC (issue 10 point 5 with the
# HLR backend of issue 13; docs/operations.md "Several instances", "The AuC backend"):
# `mcim lab up --store postgres --instances 2 --auc osmo-hlr`, then a loadgen run of every
# procedure (mix) through the balancer. Both instances of each SHO serve its devices, and both
# write the AuC intents their commits make (the subscriber to add to the HLR or to delete from
# it); an intent is applied by one instance at a time, claimed in the database
# (src/roles/auc_sync.c, the lease). Then: no error, the invariants hold for every device, no
# intent is left undone at the RO or either SHO, and each HLR holds exactly the subscribers
# whose last intent says present: none lost (an active subscription the HLR lacks) and none
# left behind (an ended one it still holds). The HLRs' own databases are read (sqlite3), not
# the roles' view of them.
. "$(dirname "$0")/lib/common.bash"
need psql python3 curl haproxy osmo-hlr sqlite3

check "lab up --store postgres --instances 2 --auc osmo-hlr" "$mcim" lab up --store postgres --instances 2 --auc osmo-hlr --dir "$lab"
[ -f "$lab/hlr/sho-a/hlr.db" ] && [ -f "$lab/hlr/sho-b/hlr.db" ] && [ -f "$lab/hlr/ro/hlr.db" ] &&
  ok "one osmo-hlr each for the RO and both SHOs, shared by their two instances" || bad "HLR databases: $(ls "$lab/hlr" 2>&1)"

rc=0
"$mcim" loadgen --devices 30 --concurrency 8 --procedure mix --json --dir "$lab" >"$tmp/lg.json" 2>"$tmp/lg.err" || rc=$?
[ "$rc" = 0 ] && ok "loadgen: exit status 0" || bad "loadgen: exit status $rc: $(tail -c 800 "$tmp/lg.json") $(tail -5 "$tmp/lg.err")"
python3 - "$tmp/lg.json" <<'PY' && ok "loadgen: every procedure completed, no error, invariants ok for every device" || bad "loadgen report: $(tail -c 1200 "$tmp/lg.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert r["devices"] == 30, r["devices"]
assert r["errors"] == {}, r["errors"]
assert r["procedures"] >= 60, r["procedures"]
assert r["invariants"] == "ok", r["invariants"]
PY
for role in sho-a sho-b; do
  for k in 1 2; do
    n=$(served "$role" "$k")
    [ "${n:-0}" -gt 0 ] && ok "$role#$k served $n requests" || bad "$role#$k served none ($n)"
  done
done

# Every intent applied (an end's intent follows its commit: waited for, bounded), and each HLR
# holds exactly the subscribers whose intent is present.
for role in ro sho-a sho-b; do
  undone() { [ "$(q "$role" "SELECT COUNT(*) FROM auc_hlr WHERE done = 0")" = 0 ]; }
  wait_until 30 undone && ok "$role: every AuC intent applied" ||
    bad "$role: intents not applied: $(q "$role" "SELECT imsi, want, cause, attempts FROM auc_hlr WHERE done = 0" | head -5)"
  q "$role" "SELECT imsi FROM auc_hlr WHERE want = 'present' ORDER BY imsi" >"$tmp/want.$role"
  sqlite3 "$lab/hlr/$role/hlr.db" "SELECT imsi FROM subscriber ORDER BY imsi" >"$tmp/hlr.$role"
  n=$(wc -l <"$tmp/want.$role")
  absent=$(q "$role" "SELECT COUNT(*) FROM auc_hlr WHERE want = 'absent'")
  if [ "$n" -gt 0 ] && cmp -s "$tmp/want.$role" "$tmp/hlr.$role"; then
    ok "$role's HLR holds exactly the $n subscribers meant to be present ($absent deleted or never added)"
  else
    bad "$role's HLR: $(diff "$tmp/want.$role" "$tmp/hlr.$role" | head -5) ($n meant present)"
  fi
done
[ "$(q sho-a "SELECT COUNT(*) FROM auc_hlr WHERE want = 'absent'")" -gt 0 ] ||
  [ "$(q sho-b "SELECT COUNT(*) FROM auc_hlr WHERE want = 'absent'")" -gt 0 ] &&
  ok "subscriptions ended at an SHO (changes away): their subscribers deleted from its HLR" ||
  bad "no subscriber was to leave an SHO's HLR: the run did not test deletions"

check "lab down" "$mcim" lab down --dir "$lab"
finish
