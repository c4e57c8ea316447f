#!/usr/bin/env bash
# The DRF at operator scale (issue 10, point 6): discovery latency with N registered devices in
# the RO's database, on PostgreSQL; docs/performance.md, "The DRF at operator scale".
#
# Usage: bench/drf_scale.sh [BIN_DIR]     (BIN_DIR holds mcim and drf_discover; default build/bin)
# Environment: N=1000000     registered devices put in the RO's database
#              REAL=4        real devices manufactured by the lab (among the N; not counted in N)
#              ORDERS=250    orders per real device, each discovered once ("first")
#              REPEATS=4     further rounds of discovery over the same orders ("repeat")
#              AGE_DAYS=365  the registered devices were ordered evenly over that many days
#              CHANGED_PCT=20  share of them that changed SHO once since (a second order)
#              RATE=R        discoveries per second on a fixed schedule (open loop, latency
#                            from each request's slot); unset or 0: back to back
#              KEEP=DIR      use DIR as the lab folder and leave the lab running (default: a
#                            temporary folder, stopped and removed at the end)
#
# What it does:
#  1. `mcim lab up --store postgres` (a PostgreSQL server of the lab's own, scripts/pg.sh's
#     settings: fsync on, shared_buffers 32MB).
#  2. Fills the RO's database (mcim_ro) with N registered devices by bulk SQL (generate_series),
#     every row in the shape the roles write it (a real `mcim run initial` leaves these at the
#     RO; src/roles/ro/ro.c and src/roles/common.c for the schema):
#       owners        one per device (the M2MES's registration: an EC P-256 JWK)
#       auc           one PCID subscription per device (the ICF; sealed K and OPc, 45 bytes)
#       drf           subscribed at sho-a or sho-b; a device that changed SHO: released at the
#                     old one and subscribed at the new one
#       drf_orders    its initial order, installed (and its change order); installed orders stay
#       dpf_packages  installed, for orders of the last 30 days (record_retention)
#       trace         5 rows per order of the last 30 days (record_retention), bodies of the
#                     sizes a real run writes
#       answers, outbox  steps 8 and 14 / 2 delivered messages, for orders of the last day
#                     (answer_retention)
#     then VACUUM (ANALYZE), as autovacuum leaves a table of that age.
#  3. Manufactures REAL devices through the lab (`mcim lab device add`), and runs drf_discover:
#     ORDERS owner-signed orders per device through its SHO to the DRF, a real attach at the VNO
#     (the agent's code, its TRE, UMTS AKA) and POST ro /v1/drf/discover with that token over
#     the agent's kept-alive TLS client; client-side and server-side (/metrics) latency per
#     phase (first, repeat, pending), every answer checked.
#  4. EXPLAIN (ANALYZE, BUFFERS) of every query the discovery handler runs, with the sample
#     order's parameters, prepared as the store prepares them (after 5 executions, so the plan
#     shown is the one the server keeps), and of the RO worker's queries that run while
#     devices discover (outbox, expiry, housekeeping, purge). Prints the plans.
# Prints the phases' lines, the plans, then one JSON line (the last line) with every figure,
# the tables' sizes, the plans' scan nodes and the machine's load average.
# A benchmark, not a test: the figures vary with the machine's load (tests/integration/
# drf_scale.sh runs it small and asserts only correctness).
set -euo pipefail
bin=${1:-build/bin}
n=${N:-1000000}
real=${REAL:-4}
orders=${ORDERS:-250}
repeats=${REPEATS:-4}
age_days=${AGE_DAYS:-365}
changed_pct=${CHANGED_PCT:-20}
for p in mcim drf_discover; do
  [ -x "$bin/$p" ] || { echo "drf_scale.sh: $bin/$p not built" >&2; exit 1; }
done
psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$psql" ] || { echo "drf_scale.sh: no psql (scripts/deps.sh installs postgresql)" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then
  lab=$KEEP
else
  lab=$(mktemp -d /tmp/mcim-drf-scale-XXXXXX)/lab
  trap '"$bin/mcim" lab down --dir "$lab" >/dev/null 2>&1 || true; rm -rf "${lab%/lab}"' EXIT
fi
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

"$bin/mcim" lab up --store postgres --dir "$lab" >/dev/null
lab=$(cd "$lab" && pwd)
# ORDERS live orders of one device at once, each its own procedure: above the per-device
# bounds an operator keeps (orders_open_max at an SHO, drf_orders_open_max at the DRF;
# docs/operations.md), which this measurement is not about
set_key() { # set_key ROLE KEY VALUE: in the role's configuration, then the role restarted
  python3 - "$lab/$1/$1.json" "$2" "$3" <<'PY'
import json, sys
p, k, v = sys.argv[1:]
c = json.load(open(p))
c[k] = int(v)
json.dump(c, open(p, "w"), indent=2)
PY
}
for s in sho-a sho-b; do set_key "$s" orders_open_max "$((orders > 1000 ? 1000 : orders + 1))"; done
set_key ro drf_orders_open_max "$((orders > 10000 ? 10000 : orders + 1))"
for r in sho-a sho-b ro; do "$bin/mcim" lab restart "$r" --dir "$lab" >/dev/null; done
# the RO's locator: postgres://mcim@127.0.0.1:PORT/mcim_ro?passfile=... (its password file)
ro_db=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["database"])' "$lab/ro/ro.json")
sql() { PGPASSFILE="$lab/pgpass" "$psql" "${ro_db%%\?*}" -X -q -v ON_ERROR_STOP=1 "$@"; }
url() { python3 -c 'import json,sys; print([r["url"] for r in json.load(open(sys.argv[1]))["roles"] if r["name"] == sys.argv[2]][0])' "$lab/lab.json" "$1"; }
sho_a=$(url sho-a)
sho_b=$(url sho-b)
now=$(date +%s)

# ---- 2. the registered devices ----
t0=$(date +%s.%N)
sql -v n="$n" -v now="$now" -v age="$((age_days * 86400))" -v changed="$changed_pct" \
  -v url_a="$sho_a" -v url_b="$sho_b" <<'EOF'
BEGIN;
-- one row per device: its name, its orders' txns, times and SHOs (deterministic pseudo-random)
CREATE TEMP TABLE fill AS
SELECT i, 'bulk' || lpad(i::text, 7, '0') AS device,
       md5('initial/' || i) AS txn1, md5('change/' || i) AS txn2,
       (i % 100) < :changed AS changed,
       CASE WHEN i % 2 = 0 THEN 'sho-a' ELSE 'sho-b' END AS sho1,
       CASE WHEN i % 2 = 0 THEN 'sho-b' ELSE 'sho-a' END AS sho2,
       CASE WHEN i % 2 = 0 THEN :'url_a' ELSE :'url_b' END AS url1,
       CASE WHEN i % 2 = 0 THEN :'url_b' ELSE :'url_a' END AS url2,
       CASE WHEN i % 3 = 0 THEN 'pristine' ELSE 'old-sho' END AS via2,
       :now::bigint - (hashtext('age/' || i)::bigint & 2147483647) % :age AS t1
FROM generate_series(1, :n) AS i;
ALTER TABLE fill ADD COLUMN t2 bigint;
UPDATE fill SET t2 = t1 + (hashtext('change-age/' || i)::bigint & 2147483647) % (:now - t1 + 1);
-- an RO-signed JWS is base64url text in three parts; these are of the real lengths
CREATE FUNCTION pg_temp.b64(seed text, len int) RETURNS text LANGUAGE sql IMMUTABLE AS
  $$ SELECT translate(rpad(encode(decode(md5(seed) || md5(seed || '.'), 'hex'), 'base64'), len,
                           md5(seed || '..')), '+/=', '-_A') $$;
CREATE FUNCTION pg_temp.jws(seed text, len int) RETURNS text LANGUAGE sql IMMUTABLE AS
  $$ SELECT 'eyJhbGciOiJFUzI1NiIsImtpZCI6InJvIiwidHlwIjoibWNpbS1vcmRlci1yZWNvcmQrand0In0.'
            || pg_temp.b64(seed, len - 164) || '.' || pg_temp.b64(seed || 's', 86) $$;
CREATE FUNCTION pg_temp.bytes(seed text, len int) RETURNS bytea LANGUAGE sql IMMUTABLE AS
  $$ SELECT substring(decode(md5(seed) || md5(seed || '1') || md5(seed || '2'), 'hex') from 1 for len) $$;

INSERT INTO owners (device, owner_jwk, registered_by, created, updated)
SELECT device, '{"kty":"EC","crv":"P-256","x":"' || pg_temp.b64('x' || i, 43) || '","y":"'
               || pg_temp.b64('y' || i, 43) || '"}', 'm2mes', t1 - 86400, t1 - 86400
FROM fill;
INSERT INTO auc (imsi, device, k, opc, amf, sqn_he, state, expires, created)
SELECT '0010180' || lpad(i::text, 8, '0'), device, pg_temp.bytes('k' || i, 45),
       pg_temp.bytes('o' || i, 45), '\x8000'::bytea,
       decode('4d5153480105' || lpad(to_hex(i), 16, '0'), 'hex'), 'active',
       :now::bigint + (hashtext('pcid/' || i)::bigint & 2147483647) % (30 * 86400), t1 - 86400
FROM fill;
INSERT INTO drf (device, sho, state, endpoint, txn, updated)
SELECT device, sho1, CASE WHEN changed THEN 'released' ELSE 'subscribed' END, url1,
       CASE WHEN changed THEN txn2 ELSE txn1 END, CASE WHEN changed THEN t2 ELSE t1 END
FROM fill;
INSERT INTO drf (device, sho, state, endpoint, txn, updated)
SELECT device, sho2, 'subscribed', url2, txn2, t2 FROM fill WHERE changed;
-- the orders, one per procedure: all installed (a DRF order stays once installed)
CREATE TEMP TABLE ord AS
SELECT txn1 AS txn, device, sho1 AS sho, url1 AS endpoint, 'initial' AS procedure, '' AS via,
       t1 AS t, i FROM fill
UNION ALL
SELECT txn2, device, sho2, url2, 'change', via2, t2, i FROM fill WHERE changed;
INSERT INTO drf_orders (txn, device, sho, endpoint, procedure, via, state, record, created,
                        updated, expires)
SELECT txn, device, sho, endpoint, procedure, via, 'installed', pg_temp.jws(txn, 459), t, t + 1,
       t + 3600
FROM ord ORDER BY t;
INSERT INTO dpf_packages (txn, device, sho, procedure, package, state, result, created, updated)
SELECT txn, device, sho, CASE WHEN via = 'old-sho' THEN 'change' ELSE 'initial' END, '',
       'installed', 'success', t, t + 1
FROM ord WHERE t >= :now - 30 * 86400;
-- the trace of the last 30 days' procedures: 5 rows each, bodies of a real run's sizes
INSERT INTO trace (id, txn, step, from_name, to_name, msg, time_us, cause, body)
SELECT md5(txn || '/' || s.k), txn, s.step, 'ro',
       CASE s.to_name WHEN 'dev' THEN device WHEN 'sho' THEN sho ELSE s.to_name END, s.msg, t * 1000000 + s.k * 1000,
       NULL, rpad('{"txn":"' || txn || '"', s.len, md5(txn || s.k))
FROM ord, (VALUES (1, 5, 'vno', 'ICF: AVs for PCID', 131),
                  (2, 8, 'dev', 'DRF: new SHO (name, endpoint, certificate)', 1565),
                  (3, 8, 'sho', 'DRF: M2ME ready for provisioning', 58),
                  (4, 13, 'dev', 'DPF: MCIM object download', 1894),
                  (5, 15, 'sho', 'DPF: provisioning succeeded', 77)) AS s(k, step, to_name, msg, len)
WHERE t >= :now - 30 * 86400;
INSERT INTO answers (txn, step, what, status, answer, created)
SELECT txn, s.step, device, 200, rpad('{"sho":"' || sho || '"', s.len, md5(txn)), t
FROM ord, (VALUES (8, 1565), (14, 61)) AS s(step, len)
WHERE t >= :now - 86400;
INSERT INTO outbox (id, peer, path, body, txn, step, msg, state, attempts, next_at, created,
                    last_cause, max_attempts)
SELECT md5('outbox/' || txn || s.step), sho, s.path, rpad('{"txn":"' || txn || '"', s.len, 'x'),
       txn, s.step, s.msg, 'delivered', 1, t * 1000, t * 1000, NULL, NULL
FROM ord, (VALUES (8, '/v1/devices/ready', 'DRF: M2ME ready for provisioning', 58),
                  (15, '/v1/reports', 'DPF: provisioning succeeded', 77)) AS s(step, path, msg, len)
WHERE t >= :now - 86400;
COMMIT;
VACUUM (ANALYZE) owners, auc, drf, drf_orders, dpf_packages, trace, answers, outbox;
EOF
fill_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
sizes=$(sql -At -c "SELECT json_object_agg(relname, json_build_object('rows', n_live_tup,
    'bytes', pg_total_relation_size(relid))) FROM pg_stat_user_tables
  WHERE relname IN ('owners', 'auc', 'drf', 'drf_orders', 'dpf_packages', 'trace', 'answers',
                    'outbox', 'replay')")
echo "filled the RO's database with $n registered devices in $fill_s s: $sizes"

# ---- 3. real devices, discovering ----
devs=()
for i in $(seq 1 "$real"); do
  "$bin/mcim" lab device add "rdev$i" --dir "$lab" >/dev/null
  if [ $((i % 2)) -eq 1 ]; then devs+=("rdev$i:sho-a"); else devs+=("rdev$i:sho-b"); fi
done
set +e
"$bin/drf_discover" "$lab" "$orders" "$repeats" "${devs[@]}" >"${lab}/discover.out" 2>"${lab}/discover.err"
discover_rc=$?
set -e
grep -v '^{' "$lab/discover.out" || true
disc_json=$(tail -n 1 "$lab/discover.out")
[ "$discover_rc" -eq 0 ] || { echo "drf_scale.sh: drf_discover failed ($discover_rc):" >&2; tail -n 5 "$lab/discover.err" >&2; }
case "$disc_json" in '{'*) ;; *) echo "drf_scale.sh: no figures from drf_discover" >&2; exit 1 ;; esac
txn=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["sample_txn"])' "$disc_json")
device=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["sample_device"])' "$disc_json")

# ---- 4. the plans ----
# name|SQL with $n as the PostgreSQL store sends it|parameter types|values (SQL literals)
# Writes run inside a transaction that is rolled back.
queries=(
  "token_live_at_ro (SHO-issued tokens only)|SELECT COUNT(*) FROM drf WHERE device = \$1 AND sho = \$2 AND state = 'released' AND updated >= \$3|text,text,int8|'$device','sho-a',$now"
  "discovery's read: stored answer and order by txn|SELECT a.status, a.answer, o.txn, o.device, o.sho, o.endpoint, o.procedure, o.via, o.state, o.record, o.expires FROM (SELECT 1 AS one) k LEFT JOIN answers a ON a.txn = \$1 AND a.step = 8 AND a.what = \$2 LEFT JOIN drf_orders o ON o.txn = \$3|text,text,text|'$txn','$device','$txn'"
  "answer stored|INSERT INTO answers (txn, step, what, status, answer, created) VALUES (\$1, \$2, \$3, \$4, \$5, \$6)|text,int8,text,int8,text,int8|'$txn',8,md5(random()::text),200,'{}',$now"
  "outbox message|INSERT INTO outbox (id, peer, path, body, txn, step, msg, state, attempts, next_at, created, max_attempts) VALUES (\$1, \$2, \$3, \$4, \$5, \$6, \$7, 'pending', 0, \$8, \$9, \$10)|text,text,text,text,text,int8,text,int8,int8,int8|md5(random()::text),'sho-a','/v1/devices/ready','{}','$txn',8,'m',${now}000,${now}000,NULL"
  "trace row|INSERT INTO trace (id, txn, step, from_name, to_name, msg, time_us, cause, body) VALUES (\$1, \$2, \$3, \$4, \$5, \$6, \$7, \$8, \$9)|text,text,int8,text,text,text,int8,text,text|md5(random()::text),'$txn',8,'ro','$device','m',${now}000000,NULL,'{}'"
  "worker: outbox due|SELECT id, peer, path, body, txn, step, msg, attempts, next_at, max_attempts FROM outbox WHERE state = 'pending' AND next_at <= \$1 ORDER BY created LIMIT 16|int8|${now}000"
  "worker: outbox claim|UPDATE outbox SET next_at = \$1 WHERE id = \$2 AND next_at = \$3 AND state = 'pending'|int8,text,int8|1,'none',0"
  "worker: outbox outcome|UPDATE outbox SET state = \$1, attempts = \$2, next_at = \$3, last_cause = \$4 WHERE id = \$5|text,int8,int8,text,text|'delivered',1,0,NULL,'none'"
  "worker: orders due (each tick)|SELECT COUNT(*) FROM drf_orders WHERE state IN ('ordered', 'authorised') AND expires <= \$1|int8|$now"
  "housekeeping: replay (each second)|DELETE FROM replay WHERE expires < \$1|int8|$((now - 300))"
  "housekeeping: answers (each second)|DELETE FROM answers WHERE created < \$1|int8|$((now - 86400))"
  "housekeeping: outbox (each second)|DELETE FROM outbox WHERE state IN ('delivered', 'failed') AND created < \$1|int8|$(((now - 86400) * 1000))"
  "purge: trace (each minute)|DELETE FROM trace WHERE time_us < \$1|int8|$(((now - 30 * 86400) * 1000000))"
  "purge: drf_orders (each minute)|DELETE FROM drf_orders WHERE state IN ('expired', 'authorised') AND expires < \$1|int8|$((now - 30 * 86400))"
  "purge: dpf_packages (each minute)|DELETE FROM dpf_packages WHERE state IN ('installed', 'abandoned') AND updated < \$1|int8|$((now - 30 * 86400))"
)
plans=""
scans="[]"
echo "query plans (EXPLAIN (ANALYZE, BUFFERS), prepared, after 5 executions):"
for q in "${queries[@]}"; do
  IFS='|' read -r name text types values <<<"$q"
  script="BEGIN;
PREPARE q ($types) AS $text;
\\o /dev/null
$(for _ in 1 2 3 4 5; do echo "EXECUTE q ($values);"; done)
\\o
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE q ($values);
ROLLBACK;"
  plan=$(printf '%s\n' "$script" | sql -At 2>&1)
  printf '  -- %s\n%s\n' "$name" "$(printf '%s\n' "$plan" | sed 's/^/     /')"
  nodes=$(printf '%s\n' "$plan" | { grep -o '\(Seq Scan\|Index Scan\|Index Only Scan\|Bitmap Heap Scan\|Bitmap Index Scan\) \(using [a-z_]* \)\?on [a-z_]*' || true; } | sort -u | python3 -c 'import json,sys; print(json.dumps([l.strip() for l in sys.stdin if l.strip()]))')
  ms=$(printf '%s\n' "$plan" | sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p' | tail -n 1)
  scans=$(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); a.append({"query": sys.argv[2], "nodes": json.loads(sys.argv[3]), "execution_ms": float(sys.argv[4] or 0)}); print(json.dumps(a))' "$scans" "$name" "$nodes" "${ms:-0}")
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$disc_json" "$scans" "$sizes" "$n" "$fill_s" "$load_start" "$load_end" "$real" "$orders" "$repeats" <<'EOF'
import json, sys
d = json.loads(sys.argv[1])
out = {"n": int(sys.argv[4]), "fill_seconds": float(sys.argv[5]), "real_devices": int(sys.argv[8]),
       "orders_per_device": int(sys.argv[9]), "repeats": int(sys.argv[10]),
       "load_start": sys.argv[6], "load_end": sys.argv[7], "tables": json.loads(sys.argv[3])}
for k in ("first", "repeat", "pending", "orders", "order_seconds"):
    out[k] = d.get(k)
plans = json.loads(sys.argv[2])
out["plans"] = plans
out["seq_scans"] = sorted({n.split(" on ")[1] for p in plans for n in p["nodes"] if n.startswith("Seq Scan")})
print(json.dumps(out, separators=(",", ":")))
EOF
exit "$discover_rc"
