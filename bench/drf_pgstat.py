#!/usr/bin/env python3
"""What PostgreSQL does for one first discovery, statement by statement (issue 10, point 6;
docs/performance.md, "The DRF at operator scale").

Usage: bench/drf_pgstat.py LAB BIN_DIR [ORDERS]
  LAB      a lab on PostgreSQL kept by `KEEP=LAB bash bench/drf_scale.sh` (its devices rdev1-4
           manufactured), whose server loads pg_stat_statements: add to
           LAB/postgres/data/postgresql.conf
             shared_preload_libraries = 'pg_stat_statements'
             pg_stat_statements.track = 'all'
             pg_stat_statements.track_planning = on
           and restart it (`pg_ctl -D LAB/postgres/data -m fast -w restart`, as the user that
           owns the folder), then `mcim lab restart` each role.
  BIN_DIR  holds drf_discover (the roles run whatever binaries the lab last started).
  ORDERS   per device (default 250: 1,000 first discoveries).

Runs `RATE=50 drf_discover LAB ORDERS 0 rdev1:sho-a rdev2:sho-b rdev3:sho-a rdev4:sho-b`
with itself as drf_discover's PHASE_HOOK. Before the first phase: a CHECKPOINT (each run then
writes as many full-page images), 11 s for the orders' work
and the backends' statistics to settle (an idle backend reports its transactions within
10 s), pg_stat_database read, pg_stat_statements reset, each server process's CPU read
(/proc/PID/stat utime + stime). After it: 1 s for the step-8 cascade to end, the CPU and
pg_stat_statements read; 11 s later pg_stat_database again. Prints per first discovery:
every statement of every database (calls, plans, exec ms, shared blocks hit / read /
dirtied / written, WAL records / bytes), commits and rollbacks per database, and the CPU of
the server's processes by database (client backends) or kind (WAL writer, checkpointer...).
The snapshots are kept in LAB/pgstat/. A benchmark: it asserts nothing."""
import json
import os
import subprocess
import sys
import time

PG_BIN = sorted(
    (d for d in os.listdir("/usr/lib/postgresql")), key=lambda v: [int(x) for x in v.split(".")]
)[-1]
PSQL = f"/usr/lib/postgresql/{PG_BIN}/bin/psql"
TICK = os.sysconf("SC_CLK_TCK")


def locator(lab, db="postgres"):
    with open(os.path.join(lab, "ro", "ro.json")) as f:
        ro = json.load(f)["database"]
    return ro.split("?")[0].rsplit("/", 1)[0] + "/" + db


def sql(lab, query, db="postgres"):
    env = dict(os.environ, PGPASSFILE=os.path.join(lab, "pgpass"))
    out = subprocess.run(
        [PSQL, locator(lab, db), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", query],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return out


def sql_json(lab, query):
    out = sql(lab, f"SELECT coalesce(json_agg(t), '[]') FROM ({query}) t").strip()
    return json.loads(out)


def postmaster_pid(lab):
    with open(os.path.join(lab, "postgres", "data", "postmaster.pid")) as f:
        return int(f.readline())


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) * 1000.0 / TICK, (
        int(fields[13]) + int(fields[14])) * 1000.0 / TICK


def cpu_snapshot(lab):
    """ms of CPU of every server process, keyed by pid, with what it is."""
    pm = postmaster_pid(lab)
    who = {
        str(r["pid"]): r["who"]
        for r in sql_json(
            lab,
            "SELECT pid, coalesce(datname, backend_type) AS who FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid()",
        )
    }
    procs = {}
    own, reaped = cpu_of(pm)
    procs[str(pm)] = {"who": "postmaster (+ reaped children)", "ms": own + reaped}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pm:
                continue
            procs[pid] = {"who": who.get(pid, "other"), "ms": cpu_of(int(pid))[0]}
        except (OSError, ValueError, IndexError):
            continue
    return procs


def wal_snapshot(lab):
    return sql_json(lab, "SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync FROM pg_stat_wal")[0]


def db_snapshot(lab):
    return sql_json(
        lab,
        "SELECT datname, xact_commit, xact_rollback, blks_read, blks_hit, tup_inserted,"
        " tup_updated, tup_deleted, tup_returned, tup_fetched FROM pg_stat_database"
        " WHERE datname LIKE 'mcim_%'",
    )


def hook(lab, when, phase):
    d = os.path.join(lab, "pgstat")
    os.makedirs(d, exist_ok=True)
    if phase != "first":
        return
    if when == "before":
        # an earlier run's validations expire nonce_lifetime (2 min) after it, a wave of
        # verdicts of their own: wait for the last of them (this run's orders open none)
        for _ in range(300):
            if sql(lab, "SELECT count(*) FROM validations WHERE state = 'pending'",
                   "mcim_pva").strip() == "0":
                break
            time.sleep(1)
        else:
            sys.exit("drf_pgstat: the PVA's pending validations never expired")
        # every run starts right after a checkpoint: as many full-page images in each
        sql(lab, "CHECKPOINT")
        time.sleep(11)
        snap = {"db": db_snapshot(lab), "wal": wal_snapshot(lab), "time": time.time()}
        sql(lab, "SELECT pg_stat_statements_reset()")
        snap["cpu"] = cpu_snapshot(lab)
        with open(os.path.join(d, "before.json"), "w") as f:
            json.dump(snap, f)
    else:
        time.sleep(1)
        snap = {"cpu": cpu_snapshot(lab), "time": time.time()}
        snap["statements"] = sql_json(
            lab,
            "SELECT d.datname, s.toplevel, s.query, s.calls, s.plans, s.total_exec_time,"
            " s.total_plan_time, s.rows, s.shared_blks_hit, s.shared_blks_read,"
            " s.shared_blks_dirtied, s.shared_blks_written, s.wal_records, s.wal_fpi,"
            " s.wal_bytes FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname LIKE 'mcim_%'",
        )
        time.sleep(10)
        snap["db"] = db_snapshot(lab)
        snap["wal"] = wal_snapshot(lab)
        with open(os.path.join(d, "after.json"), "w") as f:
            json.dump(snap, f)


def report(lab, n):
    d = os.path.join(lab, "pgstat")
    with open(os.path.join(d, "before.json")) as f:
        b = json.load(f)
    with open(os.path.join(d, "after.json")) as f:
        a = json.load(f)
    print(f"per first discovery ({n} of them, {a['time'] - b['time']:.1f} s"
          " from the reset to the last reading)")
    rows = sorted(a["statements"], key=lambda s: (s["datname"], -s["total_exec_time"]))
    tot = {}
    print("db | calls | plans | exec ms | hit | read | dirtied | written | WAL rec | WAL bytes"
          " | statement")
    for s in rows:
        db = s["datname"].replace("mcim_", "")
        t = tot.setdefault(db, [0.0] * 8)
        vals = [s["calls"], s["plans"], s["total_exec_time"], s["shared_blks_hit"],
                s["shared_blks_read"], s["shared_blks_dirtied"], s["shared_blks_written"],
                s["wal_records"]]
        for i, v in enumerate(vals):
            t[i] += v
        t.append(int(s["wal_bytes"]))
        q = " ".join(s["query"].split())
        print(f"{db} | {s['calls'] / n:.3f} | {s['plans'] / n:.3f} | "
              f"{s['total_exec_time'] / n:.4f} | {s['shared_blks_hit'] / n:.2f} | "
              f"{s['shared_blks_read'] / n:.2f} | {s['shared_blks_dirtied'] / n:.2f} | "
              f"{s['shared_blks_written'] / n:.2f} | {s['wal_records'] / n:.2f} | "
              f"{int(s['wal_bytes']) / n:.0f} | {q[:150]}")
    print("\ntotals per database: calls | plans | exec ms | hit | read | dirtied | written |"
          " WAL records | WAL bytes")
    for db, t in sorted(tot.items()):
        print(f"  {db}: {t[0] / n:.2f} | {t[1] / n:.2f} | {t[2] / n:.3f} | {t[3] / n:.1f} | "
              f"{t[4] / n:.2f} | {t[5] / n:.2f} | {t[6] / n:.2f} | {t[7] / n:.2f} | "
              f"{sum(t[8:]) / n:.0f}")
    print("\ntransactions per database (pg_stat_database; the readings' own included):"
          " commits | rollbacks")
    bd = {r["datname"]: r for r in b["db"]}
    for r in sorted(a["db"], key=lambda r: r["datname"]):
        o = bd.get(r["datname"])
        if o:
            print(f"  {r['datname']}: {(r['xact_commit'] - o['xact_commit']) / n:.2f} |"
                  f" {(r['xact_rollback'] - o['xact_rollback']) / n:.2f}")
    wa, wb = a["wal"], b["wal"]
    print("\nWAL (pg_stat_wal, every database, commit records included): "
          + ", ".join(f"{k} {(float(wa[k]) - float(wb[k])) / n:.2f}" for k in wa))
    print("\nCPU ms of the server's processes (/proc utime + stime):")
    groups = {}
    for pid, p in a["cpu"].items():
        before = b["cpu"].get(pid)
        ms = p["ms"] - (before["ms"] if before else 0)
        who = p["who"] if before or not p["who"].startswith("mcim_") else p["who"] + " (new)"
        groups[who] = groups.get(who, 0) + ms
    total = 0
    for who, ms in sorted(groups.items(), key=lambda x: -x[1]):
        total += ms
        print(f"  {who}: {ms / n:.3f} ms a discovery ({ms:.0f} ms)")
    print(f"  all: {total / n:.3f} ms a discovery")


def main():
    if len(sys.argv) == 4 and sys.argv[2] in ("before", "after"):  # the hook
        hook(os.environ["DRF_PGSTAT_LAB"], sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    lab = os.path.abspath(sys.argv[1])
    bindir = sys.argv[2]
    orders = int(sys.argv[3]) if len(sys.argv) == 4 else 250
    env = dict(os.environ, RATE=os.environ.get("RATE", "50"), DRF_PGSTAT_LAB=lab,
               PHASE_HOOK=f"{sys.executable} {os.path.abspath(__file__)} hook")
    devs = ["rdev1:sho-a", "rdev2:sho-b", "rdev3:sho-a", "rdev4:sho-b"]
    out = subprocess.run([os.path.join(bindir, "drf_discover"), lab, str(orders), "0"] + devs,
                         env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if not line.startswith("{"):
            print(line)
    if out.returncode != 0:
        sys.exit(f"drf_discover failed ({out.returncode}): {out.stderr[-800:]}")
    report(lab, orders * len(devs))


if __name__ == "__main__":
    main()
