#!/usr/bin/env bash
# The integration tests with every daemon (mcimd) and every device agent (m2me) under valgrind
# memcheck (issue 12, point 4; docs/valgrind.md). `make valgrind` runs it; `make
# check` too.
#
#   bash scripts/valgrind.sh BUILD_DIR [TEST ...]
#
# TEST: names of tests/integration/*.sh without the .sh (default: VALGRIND_TESTS below).
# How: a folder of wrappers, BUILD_DIR/valgrind/bin, where `mcimd` and `m2me` exec valgrind on
# the real programs and every other program is a link to the real one; each test runs with
# MCIM_BIN pointing there, so `mcim lab` starts the roles and the agents under memcheck. The
# command-line programs (`mcim`) are not wrapped: each runs for a moment, and ASan and UBSan
# already run them in `make test-asan`.
# Fails when a test fails, or when any process's report has an error (an invalid read or
# write, a use of uninitialised memory, a bad free) or a definite or indirect leak. A process
# killed on purpose (SIGKILL in the fault tests) leaves a report without a leak summary: its
# errors still count, its leaks cannot be known.
set -euo pipefail

build=${1:?usage: scripts/valgrind.sh BUILD_DIR [TEST ...]}
shift
build=$(cd "$build" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
# The tests that drive whole procedures through the daemons and agents, peer input refused
# included, the fault tests too (change_faults: SIGSTOP, SIGKILL and restarts of every role and
# the agent mid-change; expiry; handover), longest first (VALGRIND_JOBS run side by side).
# Left out: the ones that measure (agent_footprint: resident memory; bench_smoke, loadgen,
# charts), those that start hundreds of processes or connections (hostile_load, scale_out,
# drf_scale, pg_lab), the command line alone (cli_*, ops_*, package, openapi_routes,
# config_refusals), the crash harness (crash_every_step: SIGKILL at every step, no report to
# read); concurrent_procedures runs 6 devices at once here instead of 40 (docs/valgrind.md).
VALGRIND_TESTS=${VALGRIND_TESTS:-"change_faults initial_provisioning concurrent_procedures lab_bad_input change_procedures discovery_recovery impostor_sho expiry handover"}
# Memcheck slows every daemon and agent down as a whole: every deadline the tests and the lab
# give them (tests/integration/lib/common.bash, src/lab: an agent's request_timeout_ms and
# procedure_timeout, a daemon's start) is MCIM_TIME_SCALE times longer.
export MCIM_TIME_SCALE=${MCIM_TIME_SCALE:-3}
tests=("$@")
[ ${#tests[@]} -gt 0 ] || read -r -a tests <<<"$VALGRIND_TESTS"

command -v valgrind >/dev/null || { echo "valgrind: not installed (scripts/deps.sh installs it)" >&2; exit 1; }
for t in "${tests[@]}"; do
  [ -f "$src/tests/integration/$t.sh" ] || { echo "valgrind: no test tests/integration/$t.sh" >&2; exit 1; }
done

root="$build/valgrind"
rm -rf "$root"
mkdir -p "$root/bin" "$root/logs"
for p in "$build"/bin/*; do
  ln -s "$p" "$root/bin/$(basename "$p")"
done
# --errors-for-leak-kinds: definite and indirect leaks count as errors; "possibly lost" and
# "still reachable" are what libraries keep until the exit (libosmocore's talloc context made
# at load time, OpenSSL's and GnuTLS's tables), not counted. The same options for the canaries
# below.
vg_opts="--tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect"
vg_opts+=" --errors-for-leak-kinds=definite,indirect --num-callers=30 --error-limit=no"
for p in mcimd m2me; do
  [ -e "$build/bin/$p" ] || continue
  rm -f "$root/bin/$p"
  printf '#!/bin/sh\nexec valgrind %s --log-file="%s" "%s" "$@"\n' "$vg_opts" \
    "$root/logs/$p.%p.log" "$build/bin/$p" >"$root/bin/$p"
  chmod +x "$root/bin/$p"
done

# dirty LOG: does a memcheck report show an error (an invalid access, a use of uninitialised
# memory, a bad free) or a definite or indirect leak? Errors are printed as they happen (a
# process killed on purpose has them too); leaks count in the ERROR SUMMARY at the exit
# (--errors-for-leak-kinds).
dirty() {
  grep -qE '^==[0-9]+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|.*(definitely|indirectly) lost in loss record)' "$1" ||
    grep -qE '^==[0-9]+== ERROR SUMMARY: [1-9]' "$1"
}

# The scan has teeth: a program that leaks and one that reads out of bounds, under the same
# options, must both be found dirty, and one that does neither clean.
canary() { # canary NAME C-SOURCE
  printf '%s\n' "$2" | cc -g -O0 -x c - -o "$root/canary-$1"
  # shellcheck disable=SC2086 # the options are words
  valgrind $vg_opts --log-file="$root/canary-$1.log" "$root/canary-$1" >/dev/null 2>&1 || true
}
canary leak '#include <stdlib.h>
int main(void) { char *volatile p = malloc(64); p[0] = 1; p = 0; return 0; }'
canary oob '#include <stdlib.h>
int main(void) { char *p = malloc(8); volatile char c = p[8]; (void)c; free(p); return 0; }'
canary clean '#include <stdlib.h>
int main(void) { char *p = malloc(8); p[0] = 1; free(p); return 0; }'
dirty "$root/canary-leak.log" || { echo "valgrind: the scan misses a definite leak" >&2; exit 1; }
dirty "$root/canary-oob.log" || { echo "valgrind: the scan misses an invalid read" >&2; exit 1; }
! dirty "$root/canary-clean.log" || { echo "valgrind: the scan flags a clean program" >&2; exit 1; }

# run_one TEST: one test with the wrappers; its output in logs/test-TEST.out, its verdict in
# logs/test-TEST.result. VALGRIND_JOBS tests at a time (default 2: with the deadlines scaled,
# two at once fit on 2 cores; docs/valgrind.md has the times).
run_one() {
  local t=$1 t0
  t0=$(date +%s)
  # concurrent_procedures: 6 devices at once, not 40 (memcheck's slowdown; still concurrent)
  if MCIM_BIN="$root/bin" MCIM_SRC="$src" MCIM_VALGRIND=1 \
    MCIM_CONCURRENT_DEVICES="${MCIM_CONCURRENT_DEVICES:-6}" bash "$src/tests/integration/$t.sh" \
    >"$root/logs/test-$t.out" 2>&1; then
    echo "passed in $(($(date +%s) - t0)) s" >"$root/logs/test-$t.result"
  else
    echo "FAILED in $(($(date +%s) - t0)) s" >"$root/logs/test-$t.result"
  fi
  echo "== valgrind: $t: $(cat "$root/logs/test-$t.result")"
}
export -f run_one
export root src
start=$(date +%s)
printf '%s\n' "${tests[@]}" | xargs -P "${VALGRIND_JOBS:-2}" -I{} bash -c 'run_one "$1"' _ {}
failed=()
for t in "${tests[@]}"; do
  if ! grep -q '^passed' "$root/logs/test-$t.result" 2>/dev/null; then
    failed+=("$t")
    echo "valgrind: $t failed; its last lines:"
    tail -n 30 "$root/logs/test-$t.out" | sed 's/^/   | /'
  fi
done

# Every process's report.
reports=0 checked=0 dirty_n=0
for log in "$root"/logs/mcimd.*.log "$root"/logs/m2me.*.log; do
  [ -e "$log" ] || continue
  reports=$((reports + 1))
  grep -q 'HEAP SUMMARY' "$log" && checked=$((checked + 1))
  if dirty "$log"; then
    dirty_n=$((dirty_n + 1))
    echo "valgrind: $(basename "$log"): errors or leaks:"
    grep -E '^==[0-9]+== ' "$log" | grep -vE '== (Memcheck|Copyright|Using Valgrind|Command|Parent PID)' |
      head -n 60 | sed 's/^/   | /'
  fi
done
echo "valgrind: ${#tests[@]} tests in $(($(date +%s) - start)) s, ${#failed[@]} failed;" \
  "$reports processes under memcheck, $checked of them leak-checked at their exit (the others" \
  "were killed by the tests), $dirty_n with errors or leaks (reports in $root/logs)"
[ "$reports" -gt 0 ] && [ "$checked" -gt 0 ] ||
  { echo "valgrind: no process ran or exited under valgrind: the wrappers were not used" >&2; exit 1; }
[ ${#failed[@]} -eq 0 ] && [ "$dirty_n" -eq 0 ]
