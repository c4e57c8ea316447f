#!/usr/bin/env bash
# Every benchmark, each figure next to its peer or its floor measured in the same run, and
# BENCHMARKS.md written from them (issue 10, point 7):
#   - Milenage AV generation, mcim vs libosmocore (bench_milenage), and `mcim bench milenage`;
#   - the crypto floor (bench_floor): each costly operation of a procedure timed alone, priced
#     by the operation counts loadgen measured (crypto_ops_per_procedure);
#   - mcim loadgen, change-old-sho and mix, on SQLite, on PostgreSQL with one instance per role
#     and with two (behind HAProxy): procedures/s, p50/p99, CPU per procedure, each as a
#     multiple of that run's floor and as a fraction of the floor's rate;
#   - the agent's footprint (bench/agent_footprint.sh): binary size, peak memory, idle CPU.
#   - the TRE's backends side by side (bench/tre_backends.sh): attach and change with the
#     software TRE and with the TPM TRE (swtpm), wall time, agent and TPM CPU, peak memory.
#
# Usage: bench/run.sh [BIN_DIR] [-o FILE]
#   BIN_DIR  holds mcim, m2me and the bench_* programs (default build/bin)
#   -o FILE  where BENCHMARKS.md goes (default: BENCHMARKS.md at the repository's root)
# Environment:
#   BENCH_DEVICES      devices per loadgen run (default 300; mix: the same)
#   BENCH_CONCURRENCY  loadgen's concurrency (default 16)
#   BENCH_ARGS         extra arguments of bench_milenage (e.g. "--rounds 15 --round-ms 400")
#   BENCH_SECONDS      seconds of `mcim bench milenage` (default 3)
#   FLOOR_ARGS         extra arguments of bench_floor (default "--rounds 7 --round-ms 200")
#   IDLE_S             idle seconds of the agent footprint (default 10)
#   BENCH_STORES       which loadgen labs: any of sqlite pg1 pg2 (default all three)
#   BENCH_TRE=0        leave out the TRE backends (a build without the TPM TRE)
#   SMALL=1            tiny sizes everywhere (CI's smoke test: that it works, not its figures)
# A benchmark, not a test: nothing here judges a figure. A part that cannot run (a program not
# built, PostgreSQL or HAProxy missing) is reported as skipped, with its reason, in its section.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=build/bin
out=$root/BENCHMARKS.md
while [ $# -gt 0 ]; do
  case "$1" in
    -o | --out) out=${2:?-o FILE}; shift 2 ;;
    -o=* | --out=*) out=${1#*=}; shift ;;
    -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
    *) bin=$1; shift ;;
  esac
done
bin=$(cd "$bin" && pwd)
[ -x "$bin/mcim" ] || { echo "bench/run.sh: $bin/mcim not built" >&2; exit 1; }

if [ "${SMALL:-0}" = 1 ]; then
  devices=${BENCH_DEVICES:-4}; conc=${BENCH_CONCURRENCY:-2}
  milenage_args=${BENCH_ARGS:---rounds 1 --round-ms 20}; bench_s=${BENCH_SECONDS:-1}
  floor_args=${FLOOR_ARGS:---rounds 1 --round-ms 10}; export IDLE_S=${IDLE_S:-2}
else
  devices=${BENCH_DEVICES:-300}; conc=${BENCH_CONCURRENCY:-16}
  milenage_args=${BENCH_ARGS:-}; bench_s=${BENCH_SECONDS:-3}
  floor_args=${FLOOR_ARGS:---rounds 7 --round-ms 200}; export IDLE_S=${IDLE_S:-10}
fi
stores=${BENCH_STORES:-sqlite pg1 pg2}

work=$(mktemp -d /tmp/mcim-bench-XXXXXX)
labs=()
cleanup() {
  for l in "${labs[@]}"; do "$bin/mcim" lab down --dir "$l" >/dev/null 2>&1 || true; done
  [ ! -d "$work/pgfloor" ] || bash "$root/scripts/pg.sh" stop "$work/pgfloor" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/r"
r=$work/r # one file per figure, read by the writer of BENCHMARKS.md
skip() { echo "$2" >"$r/$1.skipped"; echo "== skipped: $2" >&2; }
cmd() { echo "$*" | sed "s|$bin|BIN|g" >>"$r/commands"; } # the commands, in their order

# ---- machine ----
{
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -sr)"
  echo "debian=$(cat /etc/debian_version 2>/dev/null || echo unknown)"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- src include bench 2>/dev/null || echo ' (with uncommitted changes in src, include or bench)')"
  echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "bin=$bin"
  echo "small=${SMALL:-0}"
  echo "devices=$devices"
  echo "concurrency=$conc"
} >"$r/machine"
t_start=$(date +%s)

# ---- Milenage: mcim vs libosmocore ----
read -ra extra <<<"$milenage_args"
if [ -x "$bin/bench_milenage" ]; then
  echo "== mcim vs libosmocore: Milenage AV generation (one process, interleaved rounds)"
  cmd "$bin/bench_milenage${extra[*]:+ ${extra[*]}}"
  "$bin/bench_milenage" "${extra[@]}" | tee "$r/milenage"
else
  skip milenage "bench_milenage is not built: libosmocore-dev was missing when $bin was configured (scripts/deps.sh installs it)"
fi
echo "== mcim bench milenage"
cmd "$bin/mcim bench milenage --seconds $bench_s"
"$bin/mcim" bench milenage --seconds "$bench_s" | tee "$r/mcim_milenage"

# ---- loadgen on each store ----
lab_up() { # lab_up KEY ARGS...: a lab in $work/KEY, or a skip with the reason
  local key=$1
  shift
  labs+=("$work/$key")
  cmd "mcim lab up${*:+ $*} --dir LAB   # $key"
  if ! "$bin/mcim" lab up "$@" --dir "$work/$key" >"$work/$key.up.log" 2>&1; then
    skip "$key" "mcim lab up $* failed: $(tail -n 3 "$work/$key.up.log" | tr '\n' ' ')"
    return 1
  fi
}
run_loadgen() { # run_loadgen KEY PROCEDURE
  local key=$1 proc=$2 st=0
  echo "== loadgen $key $proc: $devices devices, concurrency $conc"
  cmd "mcim loadgen --devices $devices --concurrency $conc --procedure $proc --json --dir LAB   # $key"
  "$bin/mcim" loadgen --devices "$devices" --concurrency "$conc" --procedure "$proc" --json \
    --dir "$work/$key" >"$work/lg-$key-$proc.out" 2>"$work/lg-$key-$proc.err" || st=$?
  grep -v '^{' "$work/lg-$key-$proc.out" | tail -n 40 || true
  tail -n 1 "$work/lg-$key-$proc.out" >"$r/lg-$key-$proc.json"
  echo "$st" >"$r/lg-$key-$proc.status"
}
for key in $stores; do
  case "$key" in
    sqlite) args=() ;;
    pg1) args=(--store postgres) ;;
    pg2) args=(--store postgres --instances 2) ;;
    *) echo "bench/run.sh: BENCH_STORES: unknown $key" >&2; exit 2 ;;
  esac
  if [ "$key" != sqlite ] && ! command -v pg_ctlcluster >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    skip "$key" "PostgreSQL is not installed (scripts/deps.sh installs it)"
    continue
  fi
  if [ "$key" = pg2 ] && ! command -v haproxy >/dev/null 2>&1; then
    skip "$key" "HAProxy is not installed (scripts/deps.sh installs it)"
    continue
  fi
  echo "== lab: $key (mcim lab up ${args[*]})"
  lab_up "$key" "${args[@]}" || continue
  run_loadgen "$key" change-old-sho
  run_loadgen "$key" mix
  cmd "mcim lab down --dir LAB   # $key"
  "$bin/mcim" lab down --dir "$work/$key" >/dev/null 2>&1 || true
done

# ---- the floor: each operation timed alone, priced by the first loadgen run's counts ----
read -ra fextra <<<"$floor_args"
counts=""
for key in $stores; do # the first lab's change-old-sho (SQLite by default)
  f=$r/lg-$key-change-old-sho.json
  [ -s "$f" ] && grep -q crypto_ops_per_procedure "$f" && { counts=$f; break; }
done
if [ -x "$bin/bench_floor" ]; then
  echo "== the crypto floor of a procedure (bench_floor)"
  if [ -n "$counts" ]; then
    basename "$counts" .json | sed 's/^lg-//' >"$r/floor.counts"
    cmd "$bin/bench_floor ${fextra[*]} --counts LOADGEN_JSON   # the $(cat "$r/floor.counts") run's report"
    "$bin/bench_floor" "${fextra[@]}" --counts "$counts" | tee "$r/floor"
  else
    cmd "$bin/bench_floor ${fextra[*]}"
    "$bin/bench_floor" "${fextra[@]}" | tee "$r/floor"
  fi
else
  skip floor "bench_floor is not built (configure with -DMCIM_BENCH=ON)"
fi
# the design floor's store units on PostgreSQL too, for the PostgreSQL rows: a server of its
# own (scripts/pg.sh), the client's CPU only, as loadgen counts the daemons and not the server
if [ -x "$bin/bench_floor" ] && [[ " $stores " == *" pg"* ]]; then
  echo "== the design floor's units on PostgreSQL (bench_floor --work-only)"
  if pg_loc=$(bash "$root/scripts/pg.sh" start "$work/pgfloor" 2>"$work/pgfloor.log"); then
    cmd "$bin/bench_floor ${fextra[*]} --work-only --store POSTGRES_LOCATOR   # scripts/pg.sh start DIR"
    "$bin/bench_floor" "${fextra[@]}" --work-only --store "$pg_loc" | tee "$r/floor-pg" || true
    bash "$root/scripts/pg.sh" stop "$work/pgfloor" >/dev/null 2>&1 || true
    grep -q work_us_per_op "$r/floor-pg" || skip floor-pg "bench_floor --work-only on PostgreSQL printed no result"
  else
    skip floor-pg "scripts/pg.sh start failed: $(tail -n 3 "$work/pgfloor.log" | tr '\n' ' ')"
  fi
fi

# ---- the agent's footprint ----
echo "== m2me agent footprint (resident memory, idle CPU and wake-ups; IDLE_S=$IDLE_S)"
cmd "IDLE_S=$IDLE_S bash bench/agent_footprint.sh $bin"
if bash "$here/agent_footprint.sh" "$bin" | tee "$r/footprint"; then :; else
  skip footprint "bench/agent_footprint.sh failed"
fi

# ---- the TRE's two backends (issue 11 point 8) ----
if [ "${SMALL:-0}" = 1 ]; then tre_rounds=${TRE_ROUNDS:-1}; tre_attaches=${TRE_ATTACHES:-2}
else tre_rounds=${TRE_ROUNDS:-5}; tre_attaches=${TRE_ATTACHES:-10}; fi
echo "== the TRE's backends side by side (software, TPM on swtpm)"
if [ "${BENCH_TRE:-1}" = 0 ]; then
  skip tre "BENCH_TRE=0 (a build without the TPM TRE, MCIM_TPM=OFF)"
elif ! command -v swtpm >/dev/null; then
  skip tre "swtpm is not installed (scripts/deps.sh installs it)"
elif [ ! -x "$bin/m2me" ]; then
  skip tre "m2me is not built"
else
  cmd "ROUNDS=$tre_rounds ATTACHES=$tre_attaches bash bench/tre_backends.sh $bin"
  if ROUNDS=$tre_rounds ATTACHES=$tre_attaches bash "$here/tre_backends.sh" "$bin" | tee "$r/tre"; then :; else
    skip tre "bench/tre_backends.sh failed"
  fi
fi

echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$r/machine"
echo "seconds=$(($(date +%s) - t_start))" >>"$r/machine"
python3 "$here/benchmarks_md.py" "$r" >"$out.tmp"
mv "$out.tmp" "$out"
echo "== wrote $out"
