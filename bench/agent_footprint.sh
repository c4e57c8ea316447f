#!/usr/bin/env bash
# The footprint of the device agent (m2me): resident memory, idle CPU and idle wake-ups of a
# real agent in a real lab, and the size of its binary (issue 10, point 3; docs/device.md
# "Footprint").
#
# Usage: bench/agent_footprint.sh [BIN_DIR]      (BIN_DIR holds mcim and m2me; default build/bin)
# Environment: IDLE_S   seconds of the idle measurement (default 10)
#              MAPS=1   also print where the resident memory is, per mapping (smaps), at the end
#              TRE=tpm  the agent of a device whose TRE is in a TPM (a swtpm: `lab device add
#                       --tre tpm`; docs/tre-tpm.md "Memory") instead of the software TRE
#              KEEP=DIR use DIR as the lab folder and leave the lab running (default: a
#                       temporary folder, stopped and removed at the end)
#
# What it does: `mcim lab up`, `mcim lab device add dev1`; the agent's VmRSS/VmHWM after its
# start; its CPU time (utime+stime of /proc/PID/stat, and the nanoseconds of every thread's
# /proc/PID/task/*/schedstat: the ticks are too coarse for 0.1 ms/s) and its context
# switches (every wake-up of any of its threads) over IDLE_S seconds of idling; then
# `mcim run initial dev1 --sho sho-a` and `mcim run change dev1 --to sho-b --via old-sho`
# and VmHWM after each (VmHWM is the peak since the start: the peak of both procedures).
# Prints a table, then one JSON line (the last line) with every figure.
# A benchmark, not a test: the idle period is a plain sleep, the figures vary with the load.
set -euo pipefail
bin=${1:-build/bin}
idle_s=${IDLE_S:-10}
tre=${TRE:-soft}
case "$tre" in soft | tpm) ;; *) echo "agent_footprint.sh: TRE is soft or tpm, not $tre" >&2; exit 1 ;; esac
for p in mcim m2me; do
  [ -x "$bin/$p" ] || { echo "agent_footprint.sh: $bin/$p not built" >&2; exit 1; }
done
if [ -n "${KEEP:-}" ]; then
  lab=$KEEP
else
  lab=$(mktemp -d /tmp/mcim-footprint-XXXXXX)/lab
  trap '"$bin/mcim" lab down --dir "$lab" >/dev/null 2>&1 || true; rm -rf "${lab%/lab}"' EXIT
fi

"$bin/mcim" lab up --dir "$lab" >/dev/null
"$bin/mcim" lab device add dev1 --tre "$tre" --dir "$lab" >/dev/null
pid=$("$bin/mcim" lab status --json --dir "$lab" | tr -d ' \n' |
  grep -o '"devices":\[.*' | grep -o '"name":"dev1","pid":[0-9]*' | grep -o '[0-9]*$')
[ -n "$pid" ] && [ -r "/proc/$pid/status" ] || { echo "agent_footprint.sh: no agent pid" >&2; exit 1; }
# `lab device add` returns once the agent answers on its control socket
"$bin/mcim" device status dev1 --dir "$lab" >/dev/null

kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$pid/status"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; } # utime + stime, clock ticks
run_ns() { cat /proc/"$pid"/task/*/schedstat | awk '{ s += $1 } END { printf "%d", s }'; }
switches() {
  cat /proc/"$pid"/task/*/status |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { s += $2 } END { print s }'
}
hz=$(getconf CLK_TCK)

start_rss=$(kb "$pid" VmRSS)
start_hwm=$(kb "$pid" VmHWM)
start_anon=$(kb "$pid" RssAnon)
start_file=$(kb "$pid" RssFile)
start_threads=$(kb "$pid" Threads)

t0=$(ticks); n0=$(run_ns); s0=$(switches); w0=$(date +%s%N)
sleep "$idle_s"
t1=$(ticks); n1=$(run_ns); s1=$(switches); w1=$(date +%s%N)
wall_s=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
idle_ticks=$((t1 - t0))
idle_ms_per_s=$(awk -v n="$((n1 - n0))" -v w="$wall_s" 'BEGIN { printf "%.4f", n / 1e6 / w }')
idle_tick_ms_per_s=$(awk -v t="$idle_ticks" -v hz="$hz" -v w="$wall_s" \
  'BEGIN { printf "%.3f", t * 1000 / hz / w }')
idle_wakeups_per_s=$(awk -v s="$((s1 - s0))" -v w="$wall_s" 'BEGIN { printf "%.2f", s / w }')

"$bin/mcim" run initial dev1 --sho sho-a --dir "$lab" >/dev/null
initial_hwm=$(kb "$pid" VmHWM)
"$bin/mcim" run change dev1 --to sho-b --via old-sho --dir "$lab" >/dev/null
change_hwm=$(kb "$pid" VmHWM)
end_rss=$(kb "$pid" VmRSS)
end_anon=$(kb "$pid" RssAnon)
end_file=$(kb "$pid" RssFile)
end_threads=$(kb "$pid" Threads)
pss=$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup")
private_dirty=$(awk '$1 == "Private_Dirty:" { print $2 }' "/proc/$pid/smaps_rollup")
binary=$(stat -c %s "$bin/m2me")
text=$(size "$bin/m2me" 2>/dev/null | awk 'NR == 2 { print $1 }' || true)
libs=$(awk '$6 ~ /\.so/ { print $6 }' "/proc/$pid/maps" | sort -u | wc -l)

printf '%-44s %s\n' \
  "TRE" "$tre" \
  "m2me binary (bytes, text)" "$binary, ${text:-?}" \
  "shared libraries mapped" "$libs" \
  "after start: VmRSS / VmHWM (KiB)" "$start_rss / $start_hwm (anon $start_anon, file $start_file)" \
  "after start: threads" "$start_threads" \
  "idle ${wall_s} s: CPU (schedstat)" "$idle_ms_per_s ms/s" \
  "idle: CPU (utime+stime)" "$idle_ticks ticks of 1/$hz s = $idle_tick_ms_per_s ms/s" \
  "idle: wake-ups of all threads (ctxt switches)" "$((s1 - s0)) = $idle_wakeups_per_s /s" \
  "VmHWM after run initial (KiB)" "$initial_hwm" \
  "VmHWM after run change --via old-sho (KiB)" "$change_hwm (peak of both procedures)" \
  "after the procedures: VmRSS (KiB)" "$end_rss (anon $end_anon, file $end_file; Pss $pss, Private_Dirty $private_dirty)" \
  "after the procedures: threads" "$end_threads"
if [ -n "${MAPS:-}" ]; then
  echo "resident KiB, private dirty KiB, mapping (after the procedures):"
  awk '/^[0-9a-f]+-[0-9a-f]+ / { name = $6; if (name == "") name = "[anon]" }
       /^Rss:/ { rss[name] += $2 } /^Private_Dirty:/ { pd[name] += $2 }
       END { for (n in rss) if (rss[n] > 0) printf "%8d %8d  %s\n", rss[n], pd[n], n }' \
    "/proc/$pid/smaps" | sort -rn
fi
printf '{"tre":"%s","binary_bytes":%s,"libraries":%s,"start_vmrss_kb":%s,"start_vmhwm_kb":%s,"start_threads":%s,' \
  "$tre" "$binary" "$libs" "$start_rss" "$start_hwm" "$start_threads"
printf '"idle_seconds":%s,"idle_cpu_ms_per_s":%s,"idle_cpu_ticks":%s,"idle_wakeups_per_s":%s,' \
  "$wall_s" "$idle_ms_per_s" "$idle_ticks" "$idle_wakeups_per_s"
printf '"initial_vmhwm_kb":%s,"peak_vmhwm_kb":%s,"end_vmrss_kb":%s,"end_anon_kb":%s,"end_file_kb":%s,"end_pss_kb":%s,"end_private_dirty_kb":%s,"end_threads":%s}\n' \
  "$initial_hwm" "$change_hwm" "$end_rss" "$end_anon" "$end_file" "$pss" "$private_dirty" "$end_threads"
