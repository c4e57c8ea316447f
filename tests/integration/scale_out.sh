#!/usr/bin/env bash
# Scale-out (issue 10, point 5): `mcim lab up --store postgres --instances 2` runs two mcimd
# of every network role on one database behind HAProxy (TCP mode). A loadgen run is spread
# across the instances (each instance's own /metrics shows it served procedure requests);
# in its middle, while procedures are in flight (counted in the SHOs' stores, not guessed
# from timing), one instance of the RO and one of sho-a are killed with SIGKILL. Then: every
# procedure completed (none lost), no error, the invariants of DESIGN.md section 4 hold for
# every device, each procedure that orders has exactly one order and the DPF exactly one
# package per txn (none duplicated), no order is left in flight and the outboxes are drained
# (none stuck). An instance with another storage key than its siblings' refuses to start.
# The usage errors: --instances without postgres, out of range.
. "$(dirname "$0")/lib/common.bash"
need psql python3 curl haproxy

# usage errors, before any lab exists
usage() { # usage NAME TEXT ARGS...: a usage error (exit 2) that says TEXT
  local name=$1 text=$2 st=0
  shift 2
  "$mcim" lab up "$@" --dir "$lab" >/dev/null 2>"$tmp/err" || st=$?
  [ "$st" = 2 ] && grep -qF -- "$text" "$tmp/err" && ok "$name: usage error, '$text'" ||
    bad "$name: exit $st, $(head -c 300 "$tmp/err")"
}
usage "--instances 2 on SQLite" "needs --store postgres" --instances 2
usage "--instances 9" "--instances is a number from 1 to 4" --store postgres --instances 9
usage "--instances x" "--instances is a number from 1 to 4" --store postgres --instances x

check "lab up --store postgres --instances 2" "$mcim" lab up --store postgres --instances 2 --dir "$lab"
check "lab status" "$mcim" lab status --json --dir "$lab"
python3 - "$tmp/out" <<'PY' && ok "status: 2 instances of each of the 6 roles answering, haproxy running" || bad "status: $(head -c 800 "$tmp/out")"
import json, sys
st = json.load(open(sys.argv[1]))
per = {}
for r in st["roles"]:
    assert r["healthy"], r
    per.setdefault(r["name"], []).append(r["instance"])
assert per == {n: [1, 2] for n in ["vno", "ro", "pva", "m2mes", "sho-a", "sho-b"]}, per
assert st["balancer"]["running"], st["balancer"]
assert set(st["balancer"]["urls"]) == set(per), st["balancer"]
PY
# The roles find each other, and the devices the roles, at the balancer's one address per role.
python3 - "$lab" <<'PY' && ok "peers.json and lab.json: one address per role, the balancer's; instances on their own ports" || bad "addresses: $(cat "$lab/peers.json")"
import json, sys
lab = sys.argv[1]
peers = json.load(open(lab + "/peers.json"))
lj = json.load(open(lab + "/lab.json"))
assert peers == lj["balancer"]["urls"], (peers, lj["balancer"])
inst = {r["url"] for r in lj["roles"]}
assert len(inst) == 12 and not inst & set(peers.values()), inst
PY

wakes() { # wakes ROLE K SOURCE: held requests the instance dispatched again, woken by SOURCE
  curl -sS --max-time 5 --cacert "$lab/pki/ca/operators-ca.crt" "$(instance "$1" "$2" url)/metrics" |
    awk -v s="source=\"$3\"" '/^mcim_http_long_poll_wakes_total/ && index($0, s) { n += $2 } END { print n + 0 }'
}
in_flight() { # orders of this run's devices not yet at an end, at both SHOs
  echo $(($(q sho-a "SELECT COUNT(*) FROM orders WHERE device LIKE 'lg%' AND state IN ('ordered', 'validating', 'provisioning')") + \
    $(q sho-b "SELECT COUNT(*) FROM orders WHERE device LIKE 'lg%' AND state IN ('ordered', 'validating', 'provisioning')")))
}
orders() { # orders of this run's devices at both SHOs
  echo $(($(q sho-a "SELECT COUNT(*) FROM orders WHERE device LIKE 'lg%'") + $(q sho-b "SELECT COUNT(*) FROM orders WHERE device LIKE 'lg%'")))
}

# 60 devices through mix: 60 initial, 20 changes via the old SHO, 20 via the pristine
# state, 20 preloads and 20 switches (140 procedures; all but the switches order an MCIM).
ro1=$(instance ro 1 pid)
sa1=$(instance sho-a 1 pid)
"$mcim" loadgen --devices 60 --concurrency 8 --procedure mix --timeout 90 --json --dir "$lab" >"$tmp/lg.json" 2>"$tmp/lg.err" &
lg=$!
# the kill as soon as procedures are in flight past the first orders (a whole run takes a few
# seconds: the check is the trigger, and the count it saw is what the kill interrupts)
flying=0
midway() { [ "$(orders)" -ge 20 ] 2>/dev/null && flying=$(in_flight) && [ "${flying:-0}" -gt 0 ]; }
wait_until 300 midway && placed=$(orders) || placed=""
kill -KILL "$ro1" "$sa1"
[ -n "$placed" ] && ok "loadgen midway: $placed of 120 orders placed" || bad "loadgen never got midway: $(orders) orders; $(tail -3 "$tmp/lg.err")"
[ "${flying:-0}" -gt 0 ] && ok "SIGKILL to ro#1 ($ro1) and sho-a#1 ($sa1) with $flying procedures in flight (the SHOs' stores)" ||
  bad "the kill did not land mid-procedure: $flying orders in flight"
dead() { ! kill -0 "$ro1" 2>/dev/null && ! kill -0 "$sa1" 2>/dev/null; }
wait_until 10 dead && ok "ro#1 and sho-a#1 are gone" || bad "ro#1 or sho-a#1 still runs"
rc=0
wait "$lg" || rc=$?
[ "$rc" = 0 ] && ok "loadgen: exit status 0" || bad "loadgen: exit status $rc: $(tail -c 800 "$tmp/lg.json") $(tail -5 "$tmp/lg.err")"
python3 - "$tmp/lg.json" <<'PY' && ok "loadgen: 140 procedures completed, no error, invariants ok for every device" || bad "loadgen report: $(tail -c 1200 "$tmp/lg.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert r["devices"] == 60, r["devices"]
assert r["errors"] == {}, r["errors"]
assert r["procedures"] == 140, r["procedures"]
assert r["invariants"] == "ok", r["invariants"]
PY

# Spread: both instances of each role served procedure requests (the killed ones before they died).
for role in vno ro pva m2mes sho-a sho-b; do
  for k in 1 2; do
    if [ "$role/$k" = ro/1 ] || [ "$role/$k" = sho-a/1 ]; then continue; fi
    n=$(served "$role" "$k")
    [ "${n:-0}" -gt 0 ] && ok "$role#$k served $n requests" || bad "$role#$k served none ($n)"
  done
done
# Long polls across instances: a device's held request (its nonce, its package, its attach)
# answered at the commit of the other instance of the role, through PostgreSQL's NOTIFY on
# mcim_wake (src/roles/wake_relay.c), not found by a recheck
cross=0
for role in ro pva sho-a sho-b; do
  for k in 1 2; do
    if [ "$role/$k" = ro/1 ] || [ "$role/$k" = sho-a/1 ]; then continue; fi
    cross=$((cross + $(wakes "$role" "$k" instance)))
  done
done
[ "$cross" -gt 0 ] && ok "$cross held requests woken by the other instance's commit (NOTIFY mcim_wake)" ||
  bad "no held request woken by another instance (mcim_http_long_poll_wakes_total{source=\"instance\"} 0 everywhere)"
# None lost or duplicated: one order per ordering procedure, one package per txn at the DPF;
# none stuck: no order in flight, nothing pending in any outbox.
[ "$(orders)" = 120 ] && ok "120 orders for 120 ordering procedures" || bad "orders: $(orders)"
[ "$(in_flight)" = 0 ] && ok "no order left in flight" || bad "orders in flight: $(in_flight)"
dup=$(q ro "SELECT COUNT(*) FROM (SELECT txn FROM dpf_packages WHERE device LIKE 'lg%' GROUP BY txn HAVING COUNT(*) > 1) d")
[ "$dup" = 0 ] && ok "the DPF holds at most one package per txn" || bad "txns with several packages: $dup"
pending=0
for role in vno ro pva m2mes sho-a sho-b; do
  pending=$((pending + $(q "$role" "SELECT COUNT(*) FROM outbox WHERE state <> 'delivered'")))
done
if [ "$pending" = 0 ]; then
  ok "every outbox delivered (none pending, none given up)"
else
  undelivered=""
  for role in vno ro pva m2mes sho-a sho-b; do
    undelivered="$undelivered $(q "$role" "SELECT '$role -> ' || peer || ' ' || path || ' ' || state || ' after ' || attempts || ': ' || COALESCE(last_cause, '') FROM outbox WHERE state <> 'delivered'")"
  done
  bad "outbox messages not delivered: $pending:$undelivered"
fi

# The survivors carry the lab: a procedure after the kill, through the balancer.
check "manufacture dev1" "$mcim" lab device add dev1 --dir "$lab"
check "run initial dev1 --sho sho-a (one sho-a and one ro left)" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "initial after the kill: success" || bad "initial: $(head -c 400 "$tmp/out")"
check "lab restart ro (each instance in turn: the killed one starts again)" "$mcim" lab restart ro --dir "$lab"
check "lab restart sho-a" "$mcim" lab restart sho-a --dir "$lab"
check "lab status after the restarts: every instance answers" "$mcim" lab status --dir "$lab"
# An instance whose storage key is not its siblings' (a host where the key file was not
# copied: mcimd makes a new one) refuses to start, before it serves anything.
python3 - "$lab/sho-b/sho-b-2.json" "$lab/sho-b/sho-b-x.json" "$tmp/other.key" <<'PY'
import json, socket, sys
c = json.load(open(sys.argv[1]))
s = socket.socket(); s.bind(("127.0.0.1", 0)); c["listen_port"] = s.getsockname()[1]; s.close()
c["storage_key"] = sys.argv[3]
json.dump(c, open(sys.argv[2], "w"))
PY
st=0
timeout 60 "$MCIM_BIN/mcimd" --role sho --config "$lab/sho-b/sho-b-x.json" >"$tmp/x.out" 2>&1 || st=$?
[ "$st" = 1 ] && grep -q "UNSEAL_FAILED.*does not open this database's secrets" "$tmp/x.out" &&
  ok "an sho-b instance with another storage key refuses to start (exit 1, UNSEAL_FAILED, why)" ||
  bad "sho-b with another storage key: exit $st, $(tail -3 "$tmp/x.out")"
[ -s "$tmp/other.key" ] || bad "test setup: mcimd did not make its own storage key"

check "lab down" "$mcim" lab down --dir "$lab"
pgrep -f "haproxy.*$lab/haproxy.cfg" >/dev/null && bad "haproxy still runs after lab down" || ok "lab down stopped haproxy"
finish
