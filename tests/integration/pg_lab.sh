#!/usr/bin/env bash
# The lab on PostgreSQL (`mcim lab up --store postgres`): the lab starts a server of its own,
# one database per role; initial provisioning, a change of SHO by each route and an initial
# provisioning of a second device at the same time as a change all succeed on it; the
# roles' state is in the server (K sealed), a restarted role carries on, no password is in a
# role's configuration, and `mcim lab down` stops the server.
. "$(dirname "$0")/lib/common.bash"
need psql pgrep

check "lab up --store postgres" "$mcim" lab up --store postgres --dir "$lab"
# lab.json names the server: its folder and port
pgdir=$(tr -d '\n ' <"$lab/lab.json" | grep -o '"postgres":{[^}]*}' | grep -o '"dir":"[^"]*"' | cut -d'"' -f4)
port=$(tr -d '\n ' <"$lab/lab.json" | grep -o '"postgres":{[^}]*}' | grep -o '"port":[0-9]*' | cut -d: -f2)
[ -n "$pgdir" ] && [ -f "$pgdir/data/PG_VERSION" ] && [ "${port:-0}" -gt 0 ] &&
  ok "the lab's server: $pgdir, port $port" || bad "lab.json: no postgres server ($pgdir, $port)"

for r in vno ro pva m2mes sho-a sho-b; do
  db=$(jfield "$lab/$r/$r.json" database)
  case "$db" in
  "postgres://mcim@127.0.0.1:$port/mcim_${r//-/_}?passfile=$lab/pgpass") ok "$r: its store is database mcim_${r//-/_}" ;;
  *) bad "$r: database '$db'" ;;
  esac
  [ -e "$lab/$r/$r.db" ] && bad "$r: a SQLite file next to it"
done
pw=$(cut -d: -f5 "$lab/pgpass")
[ ${#pw} -ge 32 ] && ok "the server's password is in pgpass only" || bad "pgpass: '$(cat "$lab/pgpass")'"
if grep -rqF -- "$pw" "$lab"/*/*.json "$lab"/*/*.log "$lab/lab.json"; then bad "the password in a role's configuration or log"
else ok "no password in the roles' configurations, logs or lab.json"; fi
[ "$(stat -c %a "$lab/pgpass")" = 600 ] && ok "pgpass is 0600" || bad "pgpass mode $(stat -c %a "$lab/pgpass")"
[ "$(q ro "SELECT version FROM schema_version WHERE component = 'ro'")" -ge 1 ] 2>/dev/null &&
  ok "the RO's schema is in its database" || bad "ro schema: $(q ro "SELECT * FROM schema_version")"

check "manufacture dev1" "$mcim" lab device add dev1 --dir "$lab"
check "manufacture dev2" "$mcim" lab device add dev2 --dir "$lab"

check "run initial dev1 --sho sho-a" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "initial: success" || bad "initial: $(head -c 400 "$tmp/out")"
check "attach dev1 to sho-a" "$mcim" device attach dev1 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "sho-a gives full access" || bad "attach: $(cat "$tmp/out")"
[ "$(q sho-a "SELECT state || ' ' || octet_length(k) || ' ' || octet_length(opc) FROM auc WHERE device = 'dev1'")" = "active 45 45" ] &&
  ok "sho-a's AuC holds dev1's MCIM active, K and OPc sealed (45 bytes)" ||
  bad "sho-a auc: $(q sho-a "SELECT device, state, octet_length(k) FROM auc")"

# A change (via the old SHO) and a second device's initial provisioning at the same time.
"$mcim" run initial dev2 --sho sho-b --json --dir "$lab" >"$tmp/dev2.json" 2>"$tmp/dev2.err" &
bg=$!
check "run change dev1 --to sho-b --via old-sho (dev2 provisioned meanwhile)" \
  "$mcim" run change dev1 --to sho-b --via old-sho --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "change via old-sho: success" || bad "change: $(head -c 400 "$tmp/out")"
st=0
wait "$bg" || st=$?
[ "$st" -eq 0 ] && [ "$(jfield "$tmp/dev2.json" result)" = success ] && ok "dev2's initial provisioning alongside: success" ||
  bad "dev2 initial: exit $st $(head -c 300 "$tmp/dev2.json") $(head -c 300 "$tmp/dev2.err")"
check "attach dev1 to sho-b" "$mcim" device attach dev1 --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "sho-b gives dev1 full access" || bad "attach: $(cat "$tmp/out")"
check_refused NOT_FOUND "dev1 no longer attaches to sho-a" "$mcim" device attach dev1 --to sho-a --json --dir "$lab"
check "attach dev2 to sho-b" "$mcim" device attach dev2 --to sho-b --json --dir "$lab"
[ "$(q sho-a "SELECT state FROM auc WHERE device = 'dev1'")" = terminated ] &&
  ok "sho-a terminated dev1's old MCIM" || bad "sho-a auc: $(q sho-a "SELECT device, state FROM auc")"
[ "$(q sho-b "SELECT COUNT(*) FROM auc WHERE state = 'active'")" = 2 ] &&
  ok "sho-b holds dev1 and dev2 active" || bad "sho-b auc: $(q sho-b "SELECT device, state FROM auc")"

# A role restarted: its state is in the server; the next change goes through it.
check "restart sho-a" "$mcim" lab restart sho-a --dir "$lab"
check "run change dev1 --to sho-a --via pristine" "$mcim" run change dev1 --to sho-a --via pristine --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "change via pristine: success" || bad "change: $(head -c 400 "$tmp/out")"
check "attach dev1 to sho-a again" "$mcim" device attach dev1 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "sho-a gives dev1 full access again" || bad "attach: $(cat "$tmp/out")"
n=$(q ro "SELECT COUNT(DISTINCT txn) FROM trace")
[ "${n:-0}" -ge 3 ] 2>/dev/null && ok "the RO traced $n procedures in its database" || bad "ro traces: $n"

# Nothing went wrong in the store
if grep -hqi "store postgres\|STORE_ERROR\|STORE_BUSY" "$lab"/*/*.log; then
  bad "store errors in the roles' logs: $(grep -hi "store postgres\|STORE_ERROR\|STORE_BUSY" "$lab"/*/*.log | head -5)"
else ok "no store error in the roles' logs"; fi

check "lab down" "$mcim" lab down --dir "$lab"
server_gone() { ! pgrep -f -- "-D $pgdir/data" >/dev/null; }
wait_until 20 server_gone && ok "lab down stopped the server" || bad "the server still runs: $(pgrep -af -- "$pgdir")"
[ ! -e "$pgdir/data/postmaster.pid" ] && ok "the server shut down cleanly" || bad "postmaster.pid left"
case "$pgdir" in
"$lab"/*) [ -f "$pgdir/data/PG_VERSION" ] && ok "the server's files stay in the lab folder" || bad "$pgdir gone" ;;
*) [ ! -e "$pgdir" ] && ok "the server's files outside the lab folder are deleted" || bad "$pgdir left behind" ;;
esac
[ "$(tr -d '\n ' <"$lab/lab.json" | grep -o '"pid":[1-9][0-9]*' | head -n1)" = "" ] &&
  ok "no role left running" || bad "lab.json: pids left"
finish
