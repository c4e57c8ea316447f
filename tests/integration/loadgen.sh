#!/usr/bin/env bash
# `mcim loadgen` (issue 10, point 1) against a real lab: 45 devices manufactured in bulk by
# the M2MES and run in one process (each a real agent: the m2me code with its own software
# TRE and agent.db), 12 at a time, through `mix` (per device, in turn: initial then a change
# via the old SHO; initial then a change via the pristine state; initial, preload, switch).
# The --json report's last line: every device's procedures completed (45 initial + 15 + 15 +
# 30 = 105), no error, the invariants of DESIGN.md section 4 hold for every device, and the
# latency and CPU figures are there. A change-old-sho run (8 devices) reports the work it
# counted: HTTP requests, durable store commits, statements and TRE synced writes, each more
# than one per procedure, commits no more than statements, and the daemons' CPU by route and
# by thread (each role's handlers within its HTTP threads), and the device's CPU per step and
# per procedure. Then its refusals: a usage error,
# and a loadgen whose SHO is stopped reports each failure by its cause and exits 1.
. "$(dirname "$0")/lib/common.bash"

need python3
check "lab up" "$mcim" lab up --dir "$lab"

rc=0
# 256 open files: loadgen keeps 256 / 2 / 8 = 16 devices open from their first start through
# their procedures, and opens the other 29 around their sequence (both paths)
(ulimit -n 256 && exec "$mcim" loadgen --devices 45 --concurrency 12 --procedure mix --json --dir "$lab") >"$tmp/mix.json" 2>"$tmp/mix.err" || rc=$?
[ "$rc" = 0 ] && ok "loadgen mix: exit status 0" || bad "loadgen mix: exit status $rc: $(tail -c 600 "$tmp/mix.json") $(tail -5 "$tmp/mix.err")"
python3 - "$tmp/mix.json" <<'PY' && ok "loadgen mix: 105 procedures, no error, invariants ok, latency and CPU reported, 16 devices kept open" || bad "loadgen mix report: $(tail -c 800 "$tmp/mix.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert r["devices"] == 45, r["devices"]
assert r["procedures"] == 105, r["procedures"]
assert r["errors"] == {}, r["errors"]
assert r["invariants"] == "ok", r["invariants"]
assert r["per_s"] > 0
lat = r["latency_ms"]
assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], lat
counts = {k: v["count"] for k, v in r["per_procedure"].items()}
assert counts == {"initial": 45, "change-old-sho": 15, "change-pristine": 15, "preload": 15, "switch": 15}, counts
assert any(k.startswith("change-old-sho ") and k.endswith(" receipt") for k in r["per_step"]), list(r["per_step"])
assert r["cpu"]["per_procedure_ms"] > 0 and r["cpu"]["daemons_s"] > 0, r["cpu"]
assert r["manufacture"]["devices"] == 45
assert r["manufacture"]["kept_open"] == 16, r["manufacture"]
PY

# change-old-sho: the work counts per procedure (what bench/bench_floor.c prices), real counts
rc=0
"$mcim" loadgen --devices 8 --concurrency 4 --procedure change-old-sho --json --dir "$lab" >"$tmp/work.json" 2>"$tmp/work.err" || rc=$?
[ "$rc" = 0 ] && ok "loadgen change-old-sho: exit status 0" || bad "loadgen change-old-sho: exit status $rc: $(tail -c 600 "$tmp/work.json") $(tail -5 "$tmp/work.err")"
python3 - "$tmp/work.json" <<'PY' && ok "loadgen change-old-sho: work_per_procedure and work reported, HTTP requests, durable commits, statements and TRE synced writes > 1 per procedure, commits <= statements" || bad "loadgen change-old-sho work: $(tail -c 800 "$tmp/work.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
keys = {"http_requests", "store_commits_durable", "store_commits_relaxed", "store_statements",
        "tre_synced_writes"}
w = r["work_per_procedure"]
assert set(w) == keys, w
assert set(r["work"]["loadgen"]) == keys and set(r["work"]["daemons"]) == keys, r["work"]
assert r["procedures"] == 16 and r["crypto_ops"]["instances_missing"] == [], r
for k in ("http_requests", "store_commits_durable", "store_statements", "tre_synced_writes"):
    assert w[k] > 1, (k, w)
assert w["store_commits_relaxed"] + w["store_commits_durable"] <= w["store_statements"], w
assert r["work"]["daemons"]["tre_synced_writes"] == 0, r["work"]  # the TRE is the device's
PY
python3 - "$tmp/work.json" <<'PY' && ok "loadgen change-old-sho: daemons_cpu by route (the DRF's orders, an SHO's orders, the PVA's quotes) and by thread, each role's routes within its HTTP threads, largest first" || bad "loadgen change-old-sho daemons_cpu: $(tail -c 800 "$tmp/work.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
routes, threads = r["daemons_cpu"]["by_route_ms"], r["daemons_cpu"]["by_thread_ms"]
assert routes["ro POST /v1/drf/orders"] > 0, routes
assert routes["pva POST /v1/validations/{id}/quote"] > 0, routes
assert routes.get("sho-a POST /v1/orders", 0) + routes.get("sho-b POST /v1/orders", 0) > 0, routes
assert list(routes.values()) == sorted(routes.values(), reverse=True), routes
for role in ("ro", "pva", "sho-a", "sho-b", "vno"):
    mine = sum(v for k, v in routes.items() if k.startswith(role + " "))
    # each figure rounded to 0.01 ms
    assert 0 < mine <= threads[role + " thread MHD-worker"] + 0.01 * (len(routes) + 1), (role, mine, threads)
assert threads["ro thread mcim-worker"] > 0, threads
PY
python3 - "$tmp/work.json" <<'PY' && ok "loadgen change-old-sho: the device's CPU per step and per procedure, the owner's per procedure; the steps' within the procedures', both within loadgen's CPU" || bad "loadgen change-old-sho device CPU: $(tail -c 800 "$tmp/work.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
procs, steps = r["per_procedure"], r["per_step"]
assert set(procs) == {"initial", "change-old-sho"}, procs
for k, v in list(procs.items()) + list(steps.items()):
    assert v["device_cpu_ms"] > 0, (k, v)
for v in procs.values():
    assert v["owner_cpu_ms"] > 0, v
# each mean rounded to 0.01 ms
in_steps = sum(v["device_cpu_ms"] * v["count"] for v in steps.values())
in_procs = sum(v["device_cpu_ms"] * v["count"] for v in procs.values())
assert in_steps <= in_procs + 0.01 * sum(v["count"] for v in steps.values()), (in_steps, in_procs)
owners = sum(v["owner_cpu_ms"] * v["count"] for v in procs.values())
assert in_procs + owners <= r["cpu"]["loadgen_s"] * 1000 + 1, (in_procs, owners, r["cpu"])
PY

usage() { # usage NAME TEXT ARGS...: a usage error (exit 2) that says TEXT
  local name=$1 text=$2 st=0
  shift 2
  "$mcim" loadgen "$@" --dir "$lab" >/dev/null 2>"$tmp/err" || st=$?
  [ "$st" = 2 ] && grep -qF -- "$text" "$tmp/err" && ok "$name: usage error, '$text'" ||
    bad "$name: exit $st, $(head -c 300 "$tmp/err")"
}
usage "loadgen: an unknown procedure" "--procedure is initial, change-old-sho" --devices 2 --procedure teleport
usage "loadgen: --devices is required" "--devices N is required"
usage "loadgen: --concurrency 0" "--concurrency wants 1..1024" --devices 2 --concurrency 0

# sho-b stopped: every procedure that needs it fails, each counted by its cause, exit status 1
sho_b_pid=$(python3 -c 'import json,sys; print(next(r["pid"] for r in json.load(open(sys.argv[1]))["roles"] if r["name"] == "sho-b"))' "$lab/lab.json")
kill -TERM "$sho_b_pid"
gone() { ! kill -0 "$sho_b_pid" 2>/dev/null; }
wait_until 20 gone && ok "sho-b stopped" || bad "sho-b still runs"
rc=0
"$mcim" loadgen --devices 4 --concurrency 4 --procedure change-old-sho --timeout 20 --json --dir "$lab" >"$tmp/down.json" 2>/dev/null || rc=$?
[ "$rc" = 1 ] && ok "loadgen with sho-b down: exit status 1" || bad "loadgen with sho-b down: exit status $rc"
python3 - "$tmp/down.json" <<'PY' && ok "loadgen with sho-b down: the failures counted by cause (PEER_UNREACHABLE, or PEER_NOT_AUTHENTICATED), the others completed" || bad "loadgen with sho-b down: $(tail -c 800 "$tmp/down.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
# devices 0 and 2 start at sho-a and change to sho-b (down); 1 and 3 start at sho-b (down).
# Its port is free once it stopped: the kernel may hand it to a lab of a test running beside
# this one (ctest -j), whose server then answers TLS as someone else (PEER_NOT_AUTHENTICATED;
# seen in a make check). Either cause says sho-b is not there.
assert sum(r["errors"].values()) == 4, r["errors"]
assert set(r["errors"]) <= {"PEER_UNREACHABLE", "PEER_NOT_AUTHENTICATED"}, r["errors"]
assert r["procedures"] == 2, r["procedures"]
PY
check "lab down" "$mcim" lab down --dir "$lab"
finish
