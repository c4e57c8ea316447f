#!/usr/bin/env bash
# Run the libFuzzer targets of BUILD/fuzz (built with MCIM_FUZZ=ON; `make fuzz` builds and
# calls this; docs/fuzzing.md). For each target: every file of tests/fuzz/regressions/<target>/
# is run once (inputs that crashed once), then the target fuzzes for SECONDS on a copy of
# tests/fuzz/corpus/<target>/, with a 10 s limit per input (a hang), 2048 MB of memory and leak
# detection. Prints per target the executions, the coverage (cov: and ft: of libFuzzer's last
# line) and the result; exits 1 if any target crashed, leaked, hung, ran out of memory or did
# not run. What a failing run left (the input, libFuzzer's log) is under BUILD/fuzz-run/<target>/.
#
#   scripts/fuzz.sh [BUILD [SECONDS [TARGET...]]]     (defaults: build-fuzz, 60, all)
set -uo pipefail
build=${1:-build-fuzz}
seconds=${2:-60}
shift 2 2>/dev/null || shift $#
cd "$(dirname "$0")/.."

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for bin in "$build"/fuzz/fuzz_*; do
    [ -x "$bin" ] && targets+=("$(basename "$bin")")
  done
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no targets in $build/fuzz (configure with -DMCIM_FUZZ=ON, build mcim_fuzz)" >&2
  exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
flags=(-timeout=10 -rss_limit_mb=2048 -detect_leaks=1 -print_final_stats=1)

# What a log says went wrong, in a word.
verdict() {
  local log=$1
  if grep -q "ERROR: libFuzzer: timeout" "$log"; then echo "HANG"
  elif grep -q "ERROR: libFuzzer: out-of-memory\|ERROR: libFuzzer: malloc(" "$log"; then echo "OOM"
  elif grep -q "ERROR: LeakSanitizer" "$log"; then echo "LEAK"
  elif grep -q "runtime error:" "$log"; then echo "UB"
  elif grep -q "ERROR: AddressSanitizer" "$log"; then echo "CRASH(asan)"
  else echo "CRASH"
  fi
}

work=$build/fuzz-run
rm -rf "$work"
mkdir -p "$work"
failed=0
rows=()
for t in "${targets[@]}"; do
  bin=$build/fuzz/$t
  dir=$work/$t
  mkdir -p "$dir/corpus"
  if [ ! -x "$bin" ]; then
    rows+=("$(printf '%-18s %12s %7s %8s  %s' "$t" - - - "MISSING ($bin)")")
    failed=1
    continue
  fi
  # the regressions, each once
  regs=()
  if [ -d "tests/fuzz/regressions/$t" ]; then
    for f in "tests/fuzz/regressions/$t"/*; do
      [ -f "$f" ] && regs+=("$f")
    done
  fi
  if [ "${#regs[@]}" -gt 0 ]; then
    if ! "$bin" "${flags[@]}" -artifact_prefix="$dir/" "${regs[@]}" \
      >"$dir/regressions.log" 2>&1; then
      rows+=("$(printf '%-18s %12s %7s %8s  %s' "$t" - - - \
        "REGRESSION $(verdict "$dir/regressions.log") ($dir/regressions.log)")")
      failed=1
      continue
    fi
  fi
  # fuzz on a copy of the corpus (libFuzzer adds what it finds to the first folder)
  [ -d "tests/fuzz/corpus/$t" ] && cp tests/fuzz/corpus/"$t"/* "$dir/corpus/" 2>/dev/null
  "$bin" "${flags[@]}" -max_total_time="$seconds" -artifact_prefix="$dir/" "$dir/corpus" \
    >"$dir/fuzz.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log" | tail -1)
  last=$(grep -E '^#[0-9]+.* cov: ' "$dir/fuzz.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  if [ "$rc" -eq 0 ]; then
    result="ok (${#regs[@]} regressions replayed)"
  else
    input=$(ls "$dir" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | head -1)
    result="$(verdict "$dir/fuzz.log") rc=$rc, input: $dir/${input:-?} ($dir/fuzz.log)"
    failed=1
  fi
  rows+=("$(printf '%-18s %12s %7s %8s  %s' "$t" "${execs:--}" "${cov:--}" "${ft:--}" "$result")")
done

printf '%-18s %12s %7s %8s  %s\n' target executions cov ft result
printf '%s\n' "${rows[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED (inputs and logs under $work/)" >&2
  exit 1
fi
echo "fuzz: ok (${#targets[@]} targets, ${seconds} s each)"
