#!/usr/bin/env bash
# The TRE's two backends side by side in one lab (issue 11 point 8; docs/tre-tpm.md
# "Measured"): a device with the software TRE and a device whose TRE keys are in its own TPM
# (a swtpm, `mcim lab device add --tre tpm`), driven alternately through the same commands.
#
# Usage: bench/tre_backends.sh [BIN_DIR]   (BIN_DIR holds mcim and m2me; default build/bin)
# Environment: ROUNDS   rounds (default 5); each round runs both devices, in alternating order
#              ATTACHES attaches per device and round (default 10)
#              KEEP=DIR use DIR as the lab folder and leave the lab running
#
# Per device and round: ATTACHES times `mcim device attach DEV --to SHO` (AKA with the active
# MCIM: Milenage on K in the agent for the software TRE; for the TPM TRE, E_K in the TPM since
# slice 3, a TPM2_Load and two TPM2_EncryptDecrypt2 per attach; an attach signs nothing), then
# one `mcim run change DEV --via old-sho` to the
# other SHO (every statement the device signs is a TPM2_Sign, the package is opened with a
# TPM2_ECDH_ZGen). Wall time from the command's start to its end; CPU of the agent process
# and, for the TPM device, of its swtpm, from the nanoseconds of every thread's
# /proc/PID/task/*/schedstat. Prints the median over the rounds of each figure, then one
# JSON line (the last line). A benchmark, not a test: the figures vary with the load.
set -euo pipefail
bin=${1:-build/bin}
rounds=${ROUNDS:-5}
attaches=${ATTACHES:-10}
for p in mcim m2me; do
  [ -x "$bin/$p" ] || { echo "tre_backends.sh: $bin/$p not built" >&2; exit 1; }
done
command -v swtpm >/dev/null || { echo "tre_backends.sh: swtpm not installed (scripts/deps.sh)" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then
  lab=$KEEP
else
  lab=$(mktemp -d /tmp/mcim-trebench-XXXXXX)/lab
  trap '"$bin/mcim" lab down --dir "$lab" >/dev/null 2>&1 || true; rm -rf "${lab%/lab}"' EXIT
fi

"$bin/mcim" lab up --dir "$lab" >/dev/null
"$bin/mcim" lab device add soft --dir "$lab" >/dev/null
"$bin/mcim" lab device add tpm --tre tpm --dir "$lab" >/dev/null
status() { "$bin/mcim" lab status --json --dir "$lab" | tr -d ' \n'; }
agent_pid() { status | grep -o "\"name\":\"$1\",\"pid\":[0-9]*" | grep -o '[0-9]*$'; }
swtpm_pid() { status | grep -o "\"name\":\"$1\",[^]]*\"swtpm\":{\"pid\":[0-9]*" | grep -o '[0-9]*$'; }
run_ns() { # run_ns PID...: CPU nanoseconds of every thread of the processes
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat; done | awk '{ s += $1 } END { printf "%d", s }'
}
now_ns() { date +%s%N; }

declare -A pid tpm_pid at
pid[soft]=$(agent_pid soft)
pid[tpm]=$(agent_pid tpm)
tpm_pid[tpm]=$(swtpm_pid tpm)
for d in soft tpm; do
  "$bin/mcim" run initial "$d" --sho sho-a --dir "$lab" >/dev/null
  at[$d]=sho-a
done

# rows of "device figure value", one per round
samples=$(mktemp)
for r in $(seq "$rounds"); do
  order="soft tpm"
  [ $((r % 2)) -eq 0 ] && order="tpm soft"
  for d in $order; do
    tp=${tpm_pid[$d]:-}
    a0=$(run_ns "${pid[$d]}"); t0=$([ -n "$tp" ] && run_ns "$tp" || echo 0); w0=$(now_ns)
    for _ in $(seq "$attaches"); do
      "$bin/mcim" device attach "$d" --to "${at[$d]}" --dir "$lab" >/dev/null
    done
    w1=$(now_ns); a1=$(run_ns "${pid[$d]}"); t1=$([ -n "$tp" ] && run_ns "$tp" || echo 0)
    echo "$d attach_ms $(awk -v w=$((w1 - w0)) -v n="$attaches" 'BEGIN { printf "%.2f", w / n / 1e6 }')" >>"$samples"
    echo "$d attach_agent_cpu_ms $(awk -v c=$((a1 - a0)) -v n="$attaches" 'BEGIN { printf "%.3f", c / n / 1e6 }')" >>"$samples"
    echo "$d attach_tpm_cpu_ms $(awk -v c=$((t1 - t0)) -v n="$attaches" 'BEGIN { printf "%.3f", c / n / 1e6 }')" >>"$samples"
    to=sho-b
    [ "${at[$d]}" = sho-b ] && to=sho-a
    a0=$(run_ns "${pid[$d]}"); t0=$([ -n "$tp" ] && run_ns "$tp" || echo 0); w0=$(now_ns)
    "$bin/mcim" run change "$d" --to "$to" --via old-sho --dir "$lab" >/dev/null
    w1=$(now_ns); a1=$(run_ns "${pid[$d]}"); t1=$([ -n "$tp" ] && run_ns "$tp" || echo 0)
    at[$d]=$to
    echo "$d change_ms $(awk -v w=$((w1 - w0)) 'BEGIN { printf "%.1f", w / 1e6 }')" >>"$samples"
    echo "$d change_agent_cpu_ms $(awk -v c=$((a1 - a0)) 'BEGIN { printf "%.2f", c / 1e6 }')" >>"$samples"
    echo "$d change_tpm_cpu_ms $(awk -v c=$((t1 - t0)) 'BEGIN { printf "%.2f", c / 1e6 }')" >>"$samples"
  done
done
hwm() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"; }
libs() { awk '$6 ~ /\.so/ { n = $6; sub(/.*\//, "", n); print n }' "/proc/$1/maps" | sort -u | wc -l; }

median() { # median DEVICE FIGURE
  awk -v d="$1" -v f="$2" '$1 == d && $2 == f { print $3 }' "$samples" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
figures="attach_ms attach_agent_cpu_ms attach_tpm_cpu_ms change_ms change_agent_cpu_ms change_tpm_cpu_ms"
printf '%-42s %12s %12s\n' "median of $rounds rounds" "soft" "tpm"
for f in $figures; do
  printf '%-42s %12s %12s\n' "$f" "$(median soft "$f")" "$(median tpm "$f")"
done
printf '%-42s %12s %12s\n' "agent VmHWM (KiB)" "$(hwm "${pid[soft]}")" "$(hwm "${pid[tpm]}")"
printf '%-42s %12s %12s\n' "agent shared libraries mapped" "$(libs "${pid[soft]}")" "$(libs "${pid[tpm]}")"
printf '{"rounds":%s,"attaches":%s' "$rounds" "$attaches"
for d in soft tpm; do
  for f in $figures; do printf ',"%s_%s":%s' "$d" "$f" "$(median "$d" "$f")"; done
  printf ',"%s_vmhwm_kb":%s,"%s_libraries":%s' "$d" "$(hwm "${pid[$d]}")" "$d" "$(libs "${pid[$d]}")"
done
printf '}\n'
rm -f "$samples"
