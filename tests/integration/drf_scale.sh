#!/usr/bin/env bash
# The DRF at operator scale, small (issue 10, point 6; docs/performance.md, "The DRF at
# operator scale"): bench/drf_scale.sh with 20,000 registered devices in the RO's PostgreSQL
# database and 2 real devices of the lab discovering 20 orders each, then checked for
# correctness only, never for time:
#   - the bulk rows are there (owners, PCIDs, registry, installed orders) next to the lab's own;
#   - every first discovery answered 200 with the ordered SHO in an RO-signed statement,
#     every retry the stored statement again, every unknown txn 503 ORDER_PENDING (drf_discover
#     checks each answer; its exit status and counts);
#   - the plans of discovery's queries and of the RO worker's (EXPLAIN ANALYZE, prepared as
#     the store prepares them) use indexes: no Seq Scan on any table, drf and drf_orders above
#     all (the housekeeping's and the purge's deletes by age included: migrations common 3 and
#     ro 5).
# Needs the PostgreSQL server binaries (psql; the lab starts its own server), curl, and
# drf_discover (built from bench/ with -DMCIM_BENCH=ON, the default): missing, it fails.
. "$(dirname "$0")/lib/common.bash"
need psql curl python3
[ -x "$MCIM_BIN/drf_discover" ] || { bad "no $MCIM_BIN/drf_discover (build with -DMCIM_BENCH=ON)"; finish || true; exit 1; }
src=${MCIM_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}

st=0
N=20000 REAL=2 ORDERS=20 REPEATS=2 KEEP="$lab" bash "$src/bench/drf_scale.sh" "$MCIM_BIN" \
  >"$tmp/bench.out" 2>"$tmp/bench.err" || st=$?
[ "$st" -eq 0 ] && ok "bench/drf_scale.sh N=20000: exit 0" ||
  bad "bench/drf_scale.sh: exit $st: $(tail -n 5 "$tmp/bench.err")"
tail -n 1 "$tmp/bench.out" >"$tmp/figures.json"
python3 - "$tmp/figures.json" >"$tmp/checks" 2>&1 <<'EOF' || true
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("bad no JSON figures: %s" % e)
    sys.exit(0)
t = d["tables"]
def row(ok, what):
    print(("ok " if ok else "bad ") + what)
row(t["owners"]["rows"] >= 20000 and t["auc"]["rows"] >= 20000,
    "20,000 registered devices: owners %d, PCIDs %d" % (t["owners"]["rows"], t["auc"]["rows"]))
row(t["drf"]["rows"] >= 20000 and t["drf_orders"]["rows"] >= 20000,
    "registry %d rows, installed orders %d" % (t["drf"]["rows"], t["drf_orders"]["rows"]))
orders = d["orders"]
row(orders == 40, "40 orders through the SHOs to the DRF (%s)" % orders)
for phase, n in (("first", orders), ("repeat", 2 * orders), ("pending", orders)):
    p = d[phase]
    row(p["n"] == n and p["errors"] == 0 and p["wrong"] == 0,
        "%s: %d discoveries, %d errors, %d wrong answers %s" % (phase, p["n"], p["errors"],
                                                                   p["wrong"], p["causes"] or ""))
    row(p["server"]["n"] == n, "%s: the RO counted %d discoveries (/metrics)" % (phase, p["server"]["n"]))
names = [p["query"] for p in d["plans"]]
row(len(names) == 15, "15 plans: %s" % ", ".join(names))
for p in d["plans"]:
    if p["query"].startswith(("answer stored", "outbox message", "trace row")):
        continue  # inserts: no scan
    # drf and drf_orders hold every registered device: never scanned. A small table (the
    # outbox, answers, replay at this N) may be scanned where the planner finds it cheaper;
    # its index is checked below.
    row(p["nodes"] and not any(n in ("Seq Scan on drf", "Seq Scan on drf_orders") for n in p["nodes"]),
        "%s: %s" % (p["query"], "; ".join(p["nodes"]) or "no plan"))
for table in ("drf", "drf_orders"):
    row(table not in d["seq_scans"], "no Seq Scan on %s" % table)
EOF
# the indexes the deletes by age need (migrations common 3, ro 5) are in the RO's database
db=$(jfield "$lab/ro/ro.json" database)
have=$(PGPASSFILE="$lab/pgpass" psql "${db%%\?*}" -X -qAt -c "SELECT string_agg(indexname, ' ' ORDER BY indexname) FROM pg_indexes WHERE indexname IN ('answers_created', 'replay_expires', 'outbox_done', 'trace_time', 'dpf_packages_updated', 'auc_device')" 2>&1)
[ "$have" = "answers_created auc_device dpf_packages_updated outbox_done replay_expires trace_time" ] &&
  ok "the RO's indexes for the deletes by age and PCIDs by device: $have" || bad "indexes: '$have'"
while read -r verdict what; do
  if [ "$verdict" = ok ]; then ok "$what"; else bad "$what"; fi
done <"$tmp/checks"
[ -s "$tmp/checks" ] || bad "no checks: $(tail -c 600 "$tmp/bench.out")"
grep -q "^  -- discovery's read: stored answer and order by txn" "$tmp/bench.out" && ok "the plans are printed" || bad "no plans in the output"
finish
