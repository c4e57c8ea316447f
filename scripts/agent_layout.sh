#!/usr/bin/env bash
# Regenerates cmake/m2me-layout.ld: the code the static device agent runs, placed together at
# the head of its text so that a running agent maps little of the rest (docs/device.md,
# "Footprint"; scripts/agent_layout.py says how and why).
#
# Usage: scripts/agent_layout.sh BUILD   (a build with MCIM_STATIC_AGENT and MCIM_TPM on and
#                                          MCIM_AGENT_LAYOUT off: valgrind names the code of a
#                                          laid-out m2me "???"; its link wrote BUILD/m2me.map)
#
# What it does: a lab from BUILD's programs, whose agents run under callgrind (a copy of
# bin/ where m2me is a script that starts the real one under valgrind); a device with the
# software TRE through every procedure (initial, change via the old SHO and via the pristine
# state, preload, switch) and one with its TRE in a TPM (a swtpm) through initial and both
# changes; the profiles dumped (callgrind_control -d) before the lab stops; then
# agent_layout.py maps each function that ran to its input section in BUILD's m2me.map and
# writes the linker script. A developer's tool, for after a change that moves much of the
# agent's code (a new procedure, another OpenSSL): an out-of-date layout costs memory only
# (tests/integration/agent_footprint.sh's ceilings say when), never correctness. Takes a few
# minutes (every agent instruction under valgrind).
set -euo pipefail
build=${1:?usage: scripts/agent_layout.sh BUILD (MCIM_AGENT_LAYOUT=OFF)}
root=$(cd "$(dirname "$0")/.." && pwd)
for t in valgrind callgrind_control swtpm python3 nm cc readelf; do
  command -v "$t" >/dev/null || { echo "agent_layout.sh: $t missing (scripts/deps.sh)" >&2; exit 1; }
done
for f in bin/mcim bin/mcimd bin/m2me bin/m2me-boot m2me.map; do
  [ -e "$build/$f" ] || { echo "agent_layout.sh: no $build/$f (a static-agent build)" >&2; exit 1; }
done
if readelf -SW "$build/bin/m2me" | grep -q '\.text\.mcim_hot'; then
  echo "agent_layout.sh: $build/bin/m2me is laid out already: configure BUILD with -DMCIM_AGENT_LAYOUT=OFF" >&2
  exit 1
fi
work=$(mktemp -d /tmp/mcim-layout-XXXXXX)
lab=$work/lab
cleanup() {
  "$work/bin/mcim" lab down --dir "$lab" >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bin" "$work/real"
cp "$build/bin/mcim" "$build/bin/mcimd" "$build/bin/m2me-boot" "$work/bin/"
cp "$build/bin/m2me" "$work/real/m2me" # the profiles name it .../m2me, as agent_layout.py asks
# a program, not a script: a TPM device's launcher (m2me-boot) starts the agent it measured
# with fexecve(), which cannot run a script from its descriptor
cat >"$work/wrap.c" <<'EOF'
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv)
{
  /* names in full on every line: a dump's file may use names an earlier part defined */
  char *args[64] = {"valgrind", "--tool=callgrind", "--dump-instr=no", "--compress-strings=no",
                    OUT, REAL};
  int n = 6;
  for (int i = 1; i < argc && n < 63; i++)
    args[n++] = argv[i];
  args[n] = NULL;
  execvp("valgrind", args);
  perror("valgrind");
  return 127;
}
EOF
cc -O1 -DOUT="\"--callgrind-out-file=$work/agent.%p.cg\"" -DREAL="\"$work/real/m2me\"" \
  -o "$work/bin/m2me" "$work/wrap.c"

m=$work/bin/mcim
run() { "$m" run "$@" --timeout 600 --dir "$lab" >/dev/null || { echo "agent_layout.sh: mcim run $* failed" >&2; exit 1; }; }
"$m" lab up --dir "$lab" >/dev/null
"$m" lab device add soft1 --dir "$lab" >/dev/null
"$m" lab device add tpm1 --tre tpm --dir "$lab" >/dev/null
run initial soft1 --sho sho-a
run change soft1 --to sho-b --via old-sho
run change soft1 --to sho-a --via pristine
run preload soft1 --sho sho-b
run switch soft1 --to sho-b
run initial tpm1 --sho sho-a
run change tpm1 --to sho-b --via old-sho
run change tpm1 --to sho-a --via pristine
# the agents still run: their profiles are written on a dump, not at a stop by signal
callgrind_control -d >/dev/null
for _ in $(seq 1 100); do
  n=$(find "$work" -maxdepth 1 -name 'agent.*.cg.*' -size +0 | wc -l)
  [ "$n" -ge 2 ] && break
  sleep 0.1
done
[ "$n" -ge 2 ] || { echo "agent_layout.sh: the agents' profiles were not written" >&2; exit 1; }
python3 "$root/scripts/agent_layout.py" "$build/m2me.map" "$build/bin/m2me" \
  "$root/cmake/m2me-layout.ld" "$work"/agent.*.cg*
echo "agent_layout.sh: wrote cmake/m2me-layout.ld; rebuild (m2me relinks) and run bench/agent_footprint.sh"
