#!/usr/bin/env python3
"""BENCHMARKS.md from the figures bench/run.sh collected (one file per figure in DIR).

Usage: benchmarks_md.py DIR > BENCHMARKS.md
Every section is always written; a part that did not run says why ("skipped: ...")."""
import json
import os
import sys

d = sys.argv[1]
OPS = ["es256_sign", "es256_verify", "ecdh_es_encrypt", "ecdh_es_decrypt", "cert_verify",
       "aka_av_generate", "aka_resync", "aka_usim_check", "tls_server_full",
       "tls_server_resumed", "tls_client_full", "tls_client_resumed"]
RUNS = [("sqlite", "SQLite, 1 instance per role"), ("pg1", "PostgreSQL, 1 instance per role"),
        ("pg2", "PostgreSQL, 2 instances per role (HAProxy)")]
PROCS = ["change-old-sho", "mix"]


def read(name, default=None):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return default
    with open(p, errors="replace") as f:
        return f.read()


def last_json(text):
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def kv(text):
    out = {}
    for line in (text or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def num(x, fmt="{:.1f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def skipped(key):
    s = read(key + ".skipped")
    return ("Skipped: " + s.strip()) if s else None


m = kv(read("machine", ""))
out = []
w = out.append
w("# Benchmarks")
w("")
w("Written by `bench/run.sh` (`make bench`): every figure below comes from one run of it, each")
w("next to its peer or its floor measured in the same run. Benchmarks are not tests: the")
w("figures move with the machine's load (see the load average below); compare the ratios")
w("within this page, not absolute times across runs. What each part measures: `bench/README.md`;")
w("the cost of a procedure and its fixes: `docs/performance.md`.")
if m.get("small") == "1":
    w("")
    w("**SMALL=1: tiny sizes (a check that everything runs); these figures mean nothing.**")
w("")
w("## Machine")
w("")
w("| | |")
w("|---|---|")
for k, label in [("date", "date (UTC)"), ("commit", "git commit"), ("nproc", "cores (nproc)"),
                 ("cpu", "CPU model"), ("kernel", "kernel"), ("debian", "Debian version"),
                 ("load_start", "load average at the start (1, 5, 15 min)"),
                 ("load_end", "load average at the end"), ("seconds", "duration of the run (s)"),
                 ("devices", "loadgen devices per run"), ("concurrency", "loadgen concurrency")]:
    w(f"| {label} | {m.get(k, '?')} |")
w("")

w("## Commands")
w("")
w("In their order; `LAB` is a fresh lab folder of the run, `BIN` " + f"`{m.get('bin', '?')}`" + ".")
w("")
w("```sh")
w(f"bash bench/run.sh BIN   # SMALL={m.get('small', '0')}, "
  f"BENCH_DEVICES={m.get('devices', '?')}, BENCH_CONCURRENCY={m.get('concurrency', '?')}")
w((read("commands", "") or "").strip())
w("```")
w("")

# ---- Milenage ----
w("## Milenage: mcim vs libosmocore")
w("")
s = skipped("milenage")
if s:
    w(s)
else:
    mk = kv(read("milenage", ""))
    rows = []
    for line in (read("milenage", "") or "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].startswith("av_per_s="):
            rows.append((parts[0], float(parts[1].split("=")[1]), float(parts[2].split("=")[1])))
    w("One thread, 1024 subscribers cycled, a fresh RAND and the subscriber's key schedule per")
    w("vector; interleaved rounds in one process, median (`bench/bench_milenage.c`).")
    w("")
    w("| contender | AVs/s | ns per AV |")
    w("|---|---|---|")
    for name, rate, ns in rows:
        w(f"| {name} | {rate:,.0f} | {ns:.1f} |")
    w("")
    w(f"mcim / libosmocore (same RAND source): **{mk.get('ratio_mcim_vs_osmo_pool', '?')}x**; "
      f"against libosmocore with osmo_get_rand_id per vector (as osmo-hlr): "
      f"{mk.get('ratio_mcim_vs_osmo_getrandom', '?')}x; mcim through EVP: "
      f"{mk.get('ratio_mcim_evp_vs_osmo_pool', '?')}x.")
mm = kv(read("mcim_milenage", ""))
if mm:
    w("")
    w(f"`mcim bench milenage`: {float(mm.get('av_per_s', 0)):,.0f} AVs/s "
      f"({mm.get('ns_per_av', '?')} ns per AV, AES access {mm.get('aes_access', '?')}).")
w("")

# ---- floor ----
floor = last_json(read("floor"))
prices = (floor or {}).get("us_per_op", {})
cores = (floor or {}).get("cores") or int(m.get("nproc", "1") or 1)


def floor_of(counts):
    if not prices or not counts:
        return None
    return sum(counts.get(op, 0) * prices.get(op, 0) for op in OPS) / 1000.0


WORK = ["http_requests", "store_statements", "store_commits_durable", "store_commits_relaxed",
        "tre_synced_writes"]
work_prices = (floor or {}).get("work_us_per_op", {})
# the store's units on PostgreSQL (bench_floor --work-only --store), for the PostgreSQL rows
pg_work_prices = (last_json(read("floor-pg")) or {}).get("work_us_per_op", {})
STORE_UNITS = ["store_statements", "store_commits_durable", "store_commits_relaxed"]


def design_floor_of(counts, work, report=None, pg=False):
    """The crypto floor plus the run's other work, each unit priced alone (bench_floor). On a
    PostgreSQL lab only the daemons' store is PostgreSQL: the devices' (loadgen's) statements
    and commits are SQLite's, priced as such."""
    fl = floor_of(counts)
    if fl is None or not work_prices or not work:
        return None
    if not pg:
        return fl + sum(work.get(k, 0) * work_prices.get(k, 0) for k in WORK) / 1000.0
    sides = (report or {}).get("work") or {}
    done = (report or {}).get("procedures") or 0
    if not pg_work_prices or not done or "daemons" not in sides or "loadgen" not in sides:
        return None
    pg_price = dict(work_prices)
    pg_price.update({k: pg_work_prices.get(k, 0) for k in STORE_UNITS})
    us = sum(sides["loadgen"].get(k, 0) * work_prices.get(k, 0) +
             sides["daemons"].get(k, 0) * pg_price.get(k, 0) for k in WORK) / done
    return fl + us / 1000.0


w("## The crypto floor of a procedure")
w("")
s = skipped("floor")
if s or not floor:
    w(s or "Skipped: bench_floor printed no result.")
else:
    w("Each costly operation a procedure does, timed alone with mcim's own code in one thread")
    w("(CPU time, median of interleaved rounds: `bench/bench_floor.c`), priced by the operations")
    w("a loadgen run counted per completed procedure (`crypto_ops_per_procedure`: this process's")
    w("counters and every daemon's `/metrics`, `include/mcim/opcount.h`). The floor is the CPU a")
    w("procedure would cost if it did nothing but these operations; its rate is that on all "
      f"{cores} cores.")
    w("")
    counts = floor.get("counts") or {}
    src = (read("floor.counts", "") or "no counts").strip()
    w(f"| operation | µs per operation | per procedure ({src}) | µs per procedure |")
    w("|---|---|---|---|")
    for op in OPS:
        c = counts.get(op)
        w(f"| {op} | {num(prices.get(op))} | {num(c, '{:.2f}')} | "
          f"{num(c * prices.get(op, 0) if c is not None else None)} |")
    w("")
    mhd = floor.get("mhd_loopback_us") or {}
    w("TLS: a full mutual-TLS handshake alone, GnuTLS as the roles' server (their policy and")
    w("credentials, the client's chain verified) and OpenSSL as the agent's client, both ends")
    w("stepped in one thread over a socket pair, each side's CPU apart. Resumed handshakes are")
    w("priced as full ones (the counts below show how many there were). Through the real server")
    w("on loopback (libmicrohttpd, a GET on a new connection minus one on a kept connection) the")
    w(f"same handshake cost the client {num(mhd.get('client'))} µs and the server process "
      f"{num(mhd.get('server'))} µs: the server's figure includes libmicrohttpd polling the")
    w("connection while the client waits for a core, so it grows with the load; the floor")
    w("uses the handshake alone.")
    if "floor_ms_per_procedure" in floor:
        w("")
        w(f"**Floor: {floor['floor_ms_per_procedure']:.2f} ms of CPU per procedure** (devices and "
          f"owners {floor.get('floor_devices_ms', 0):.2f} ms, daemons "
          f"{floor.get('floor_daemons_ms', 0):.2f} ms), **{floor['floor_per_s']:.0f} procedures/s** "
          f"on {cores} cores.")
    if work_prices:
        w("")
        w("### The design floor")
        w("")
        w("A procedure also exchanges messages, runs statements and commits them durably. Each of")
        w("those units, priced alone with mcim's own calls (`bench/floor_work.c`), times how often")
        w("the loadgen run did it (`work_per_procedure`: this process's counters and every")
        w("daemon's `/metrics`), added to the crypto floor, is what this design costs with no code")
        w("of its own around its messages, commits and statements (no role's JSON, no trace row,")
        w("no log line, no thread hand-off): the least any implementation of these messages and")
        w("commits pays here.")
        w("")
        wc = floor.get("work_counts") or {}
        w(f"| unit | µs per unit | per procedure ({src}) | µs per procedure | µs per unit on PostgreSQL |")
        w("|---|---|---|---|---|")
        unit_text = {
            "http_requests": "an exchange on a kept TLS connection, both ends",
            "store_statements": "a statement (SQLite, prepared)",
            "store_commits_durable": "a durable commit (its fdatasync), besides its statement",
            "store_commits_relaxed": "a relaxed commit, besides its statement",
            "tre_synced_writes": "a TRE file written in place and synced"}
        for k in WORK:
            c = wc.get(k)
            pgp = num(pg_work_prices.get(k)) if k in STORE_UNITS else "as SQLite's"
            w(f"| {k}: {unit_text[k]} | {num(work_prices.get(k))} | {num(c, '{:.2f}')} | "
              f"{num(c * work_prices.get(k, 0) if c is not None else None)} | {pgp} |")
        s_pg = skipped("floor-pg")
        w("")
        w("On PostgreSQL the store's units are timed against a server of their own "
          "(`scripts/pg.sh`), the client's CPU only, as loadgen's figures count the daemons "
          "and not the server; the PostgreSQL rows below price the daemons' statements and "
          "commits with them (the devices' stores are SQLite's on every lab)."
          + (f" {s_pg}" if s_pg else ""))
        if "design_floor_ms_per_procedure" in floor:
            w("")
            w(f"**Design floor: {floor['design_floor_ms_per_procedure']:.2f} ms of CPU per "
              f"procedure**, {floor.get('design_floor_per_s', 0):.0f} procedures/s on {cores} "
              "cores.")
w("")

# ---- loadgen ----
w("## Procedures under load (mcim loadgen)")
w("")
w("Each lab fresh; `change-old-sho`: per device an initial provisioning, then a change of SHO")
w("via the old SHO (2 procedures); `mix`: change-old-sho, change-pristine and switch in turn.")
w("CPU: loadgen's own (the simulated devices and owners) and every daemon's, per completed")
w("procedure. Floor: that run's operation counts priced as above. `x floor`: CPU per procedure")
w("over the floor; `of floor rate`: procedures/s over the floor's rate. Design floor: the")
w("crypto floor and that run's exchanges, statements, commits and synced writes, priced as")
w("above (on the PostgreSQL rows, the daemons' statements and commits with the units timed on")
w("PostgreSQL, the devices' with SQLite's); `x design`: CPU per procedure over it. The")
w("PostgreSQL server's own CPU is in no figure of this table.")
w("")
w("| lab | procedure | procedures | errors | invariants | per s | p50 ms | p99 ms | CPU ms per procedure | floor ms | x floor | of floor rate | design floor ms | x design |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
notes = []
count_cols = []
cpu_cols = []
for key, label in RUNS:
    s = skipped(key)
    if s:
        w(f"| {label} | | | | | | | | | | | | | |")
        notes.append(f"{label}: {s}")
        continue
    for proc in PROCS:
        r = last_json(read(f"lg-{key}-{proc}.json"))
        if not r:
            w(f"| {label} | {proc} | no report | | | | | | | | | | | |")
            notes.append(f"{label}, {proc}: loadgen printed no report "
                         f"(exit status {(read(f'lg-{key}-{proc}.status') or '?').strip()})")
            continue
        errs = sum(r.get("errors", {}).values())
        inv = r.get("invariants")
        inv = inv if isinstance(inv, str) else f"{len(inv)} failed"
        lat = r.get("latency_ms", {})
        cpu = r.get("cpu", {}).get("per_procedure_ms")
        cnt = r.get("crypto_ops_per_procedure") or {}
        fl = floor_of(cnt)
        rate = cores * 1000.0 / fl if fl else None
        work = r.get("work_per_procedure") or {}
        dfl = design_floor_of(cnt, work, r, pg=key.startswith("pg"))
        w(f"| {label} | {proc} | {r.get('procedures', 0)} | {errs} | {inv} | "
          f"{num(r.get('per_s'))} | {num(lat.get('p50'), '{:.0f}')} | {num(lat.get('p99'), '{:.0f}')} | "
          f"{num(cpu)} | {num(fl, '{:.2f}')} | "
          f"{num(cpu / fl if cpu and fl else None, '{:.1f}')} | "
          f"{num(r.get('per_s') / rate if rate and r.get('per_s') is not None else None, '{:.3f}')} | "
          f"{num(dfl, '{:.2f}')} | {num(cpu / dfl if cpu and dfl else None, '{:.1f}')} |")
        missing = (r.get("crypto_ops") or {}).get("instances_missing") or []
        if missing:
            notes.append(f"{label}, {proc}: not counted (no /metrics): {', '.join(missing)}")
        ex = (r.get("crypto_ops") or {}).get("excluded") or {}
        if ex.get("health_checks"):
            notes.append(f"{label}, {proc}: {ex['health_checks']} server handshakes of HAProxy's "
                         "health checks taken out of the counts")
        count_cols.append((f"{key} {proc}", cnt, work))
        cpu_cols.append((f"{key} {proc}", r))
for n in notes:
    w("")
    w("- " + n)
w("")
w("### Operations per completed procedure")
w("")
if count_cols:
    w("| operation | " + " | ".join(c[0] for c in count_cols) + " |")
    w("|---|" + "---|" * len(count_cols))
    for op in OPS:
        w(f"| {op} | " + " | ".join(num(c[1].get(op), "{:.2f}") for c in count_cols) + " |")
    for k in WORK:
        w(f"| {k} | " + " | ".join(num(c[2].get(k), "{:.2f}") for c in count_cols) + " |")
else:
    w("Skipped: no loadgen run reported counts.")
w("")


def device_split(r):
    """the device's rounds and the owner's part, ms per completed procedure (per_procedure)"""
    pp = r.get("per_procedure") or {}
    n = sum(v.get("count", 0) for v in pp.values())
    if not n:
        return None, None
    dev = sum(v.get("device_cpu_ms", 0) * v.get("count", 0) for v in pp.values()) / n
    own = sum(v.get("owner_cpu_ms", 0) * v.get("count", 0) for v in pp.values()) / n
    return dev, own


w("### Where the CPU goes, per completed procedure")
w("")
w("From the same runs: the device's agent in its rounds and loadgen as the owner")
w("(`device_cpu_ms`, `owner_cpu_ms`), the daemons' threads by name and their handlers by route")
w("(`daemons_cpu`: `mcim_thread_cpu_seconds_total`, `mcim_http_request_cpu_seconds_total`),")
w("ms of CPU per completed procedure. The HTTP threads less the handlers are TLS and HTTP")
w("around them. The daemons' background work in the run counts too, per procedure more in a")
w("short run.")
w("")
if cpu_cols:
    rows = []
    for name, r in cpu_cols:
        dc = r.get("daemons_cpu") or {}
        th, ro = dc.get("by_thread_ms") or {}, dc.get("by_route_ms") or {}
        dev, own = device_split(r)
        http = sum(v for k, v in th.items() if k.endswith(" thread MHD-worker"))
        workers = sum(v for k, v in th.items() if k.endswith(" thread mcim-worker"))
        rows.append({
            "the device (agent's rounds)": dev, "the owner": own,
            "daemons' HTTP threads": http if th else None,
            "of which handlers": sum(ro.values()) if ro else None,
            "daemons' workers (outbox, sweeps)": workers if th else None,
            "daemons' other threads": sum(th.values()) - http - workers if th else None})
    w("| | " + " | ".join(c[0] for c in cpu_cols) + " |")
    w("|---|" + "---|" * len(cpu_cols))
    for k in rows[0]:
        w(f"| {k} | " + " | ".join(num(rw[k], "{:.2f}") for rw in rows) + " |")
    first = cpu_cols[0]
    routes = (first[1].get("daemons_cpu") or {}).get("by_route_ms") or {}
    if routes:
        w("")
        w(f"The ten largest handlers of {first[0]}, ms per procedure:")
        w("")
        w("| role and route | ms |")
        w("|---|---|")
        for k, v in list(routes.items())[:10]:
            w(f"| {k} | {num(v, '{:.2f}')} |")
else:
    w("Skipped: no loadgen run reported its CPU.")
w("")

# ---- footprint ----
w("## The device agent's footprint")
w("")
fp = last_json(read("footprint"))
s = skipped("footprint")
if s or not fp:
    w(s or "Skipped: bench/agent_footprint.sh printed no result.")
else:
    w("A real `m2me` in a lab of its own (`bench/agent_footprint.sh`, docs/device.md \"Footprint\").")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| binary size | {fp.get('binary_bytes', 0):,} bytes |")
    w(f"| shared libraries mapped | {fp.get('libraries', '?')} |")
    w(f"| VmRSS / VmHWM after the start | {fp.get('start_vmrss_kb')} / {fp.get('start_vmhwm_kb')} KiB |")
    w(f"| peak VmHWM over run initial + run change --via old-sho | {fp.get('peak_vmhwm_kb')} KiB |")
    w(f"| idle CPU over {fp.get('idle_seconds')} s | {fp.get('idle_cpu_ms_per_s')} ms/s |")
    w(f"| idle wake-ups (context switches of all threads) | {fp.get('idle_wakeups_per_s')} /s |")
w("")
# ---- the TRE's backends ----
w("## The TRE's backends side by side")
w("")
tre = last_json(read("tre"))
s = skipped("tre")
if s or not tre:
    w(s or "Skipped: bench/tre_backends.sh printed no result.")
else:
    w(f"One lab, a device with the software TRE and one whose keys are in its own TPM (swtpm), "
      f"driven alternately (`bench/tre_backends.sh`, docs/tre-tpm.md \"Measured\"); medians of "
      f"{tre.get('rounds')} rounds of {tre.get('attaches')} attaches and one change of SHO via "
      f"the old SHO each.")
    w("")
    w("| | software TRE | TPM TRE | TPM / software |")
    w("|---|---|---|---|")
    for f, label in [("attach_ms", "attach, wall time (ms)"),
                     ("attach_agent_cpu_ms", "attach, agent CPU (ms)"),
                     ("attach_tpm_cpu_ms", "attach, swtpm CPU (ms)"),
                     ("change_ms", "change via the old SHO, wall time (ms)"),
                     ("change_agent_cpu_ms", "change, agent CPU (ms)"),
                     ("change_tpm_cpu_ms", "change, swtpm CPU (ms)"),
                     ("vmhwm_kb", "agent peak resident memory (KiB)"),
                     ("libraries", "agent shared libraries mapped")]:
        a, b = tre.get("soft_" + f), tre.get("tpm_" + f)
        ratio = b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None
        fmt = "{:,.0f}" if f in ("vmhwm_kb", "libraries") else "{:.1f}"
        w(f"| {label} | {num(a, fmt)} | {num(b, fmt)} | {num(ratio, '{:.1f}')} |")
w("")
sys.stdout.write("\n".join(out))
