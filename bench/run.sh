#!/usr/bin/env bash
# Benchmarks with their peers side by side, then the agent's footprint. Usage: bench/run.sh [BIN_DIR]
# BIN_DIR holds `mcim` and the bench_* programs (default build/bin).
set -euo pipefail
bin=${1:-build/bin}
if [ ! -x "$bin/bench_milenage" ]; then
  echo "bench/run.sh: $bin/bench_milenage not built (needs libosmocore-dev)" >&2
  exit 1
fi
echo "== mcim vs libosmocore: Milenage AV generation (one process, interleaved rounds)"
read -ra extra <<<"${BENCH_ARGS:-}" # e.g. BENCH_ARGS="--rounds 15 --round-ms 500"
"$bin/bench_milenage" "${extra[@]}"
echo "== mcim bench milenage"
"$bin/mcim" bench milenage --seconds "${BENCH_SECONDS:-3}"
echo "== m2me agent footprint (resident memory, idle CPU and wake-ups; IDLE_S=${IDLE_S:-10})"
bash "$(dirname "$0")/agent_footprint.sh" "$bin"
