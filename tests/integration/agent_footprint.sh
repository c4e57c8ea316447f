#!/usr/bin/env bash
# The device agent stays small (issue 10, point 3; docs/device.md, "Footprint"), checked
# without timing anything:
#   - the shared libraries a real agent has mapped after a procedure are the ones it needs:
#     libcrypto, libssl, libsqlite3, libjansson and libcjose are linked into it
#     (MCIM_STATIC_AGENT from CMake, ON where Debian's static archives are), so only libc,
#     libm (SQLite's) and ld.so are mapped; a shared-libraries build (MCIM_STATIC_AGENT=OFF)
#     maps those five besides; the sanitizer build's runtime besides. libcurl,
#     libmicrohttpd, GnuTLS, libpq... coming back is a failure, and so is a static agent
#     that maps one of the five (its link fell back on the shared library);
#   - its peak resident memory (VmHWM) after `run initial` and `run change --via old-sho` is
#     under the ceiling below (plain build only: ASan's shadow memory and quarantine make a
#     sanitized agent several times larger; the build says which it is, MCIM_SANITIZE from
#     CMake, ON or OFF);
#   - in MCIM_TPM builds, the agent of a device whose TRE is in a TPM (a swtpm) is the same
#     m2me (its launcher, m2me-boot, runs it), maps only tpm2-tss's SAPI libraries besides
#     (never libtss2-esys; in a static build no libcrypto or libssl either: SAPI needs none),
#     and its peak over the same two procedures is under its own ceiling (below; plain static
#     build only);
#   - an idle agent's worker does not wake up: the wake-ups it counts
#     (mcim_m2me_worker_wakeups_total) of an agent that never ran a procedure, over its whole
#     life (at least IDLE_MIN_S seconds: the test's own steps, padded by a poll when they were
#     quick), are at most one per 10 s of that life, that is none; and a busy control API
#     (status requests) does not wake the worker of an agent that is done.
# The target is 8 MiB (issue 10, point 3). The static agent holds 6.3-6.4 MiB with its code
# laid out (6 480-6 504 KiB; 7 476-7 628 without: MCIM_AGENT_LAYOUT, docs/device.md,
# "Footprint"), its ceiling is the target: 1.6 MiB above with the layout, 0.5 without, more
# than the page cache moves it by (0.25-0.5 MiB), less than a library, a thread pool or
# OpenSSL's whole default provider coming back, or the static link falling back on the
# shared libraries (9.0-9.1 MiB). A shared-libraries agent (MCIM_STATIC_AGENT=OFF, where the
# archives are not installed) holds 9.0-9.1 MiB (9 248-9 320 KiB), its libraries' mapped
# pages alone 8.1 MiB: its ceiling stays 9.5 MiB.
# curl is needed (scripts/deps.sh installs it): missing, the test fails.
. "$(dirname "$0")/lib/common.bash"
need curl

IDLE_MIN_S=3
yes_no() { case "$1" in ON | on | 1 | TRUE | true | YES | yes | Y | y) echo yes ;; *) echo no ;; esac; }
sanitized=$(yes_no "${MCIM_SANITIZE:-OFF}")
static=$(yes_no "${MCIM_STATIC_AGENT:-OFF}")
if [ "$static" = yes ]; then
  CEILING_KB=8192 # 8 MiB, the target (docs/device.md, "Footprint")
else
  CEILING_KB=9728 # 9.5 MiB: with the shared libraries, 8 MiB is out of reach
fi

agent_pid() { # agent_pid NAME
  "$mcim" lab status --json --dir "$lab" | tr -d ' \n' | grep -o "\"name\":\"$1\",\"pid\":[0-9]*" |
    grep -o '[0-9]*$'
}
wakeups() { # wakeups NAME: the agent's mcim_m2me_worker_wakeups_total
  curl -s --max-time 5 --unix-socket "$lab/devices/$1/control.sock" http://localhost/metrics |
    awk '$1 == "mcim_m2me_worker_wakeups_total" { print $2 }'
}
age_s() { # age_s PID: seconds since the process started (the kernel's clock ticks)
  awk -v hz="$(getconf CLK_TCK)" -v start="$(awk '{ print $22 }' "/proc/$1/stat")" \
    '{ printf "%d", $1 - start / hz }' /proc/uptime
}

# The shared libraries process $1 has mapped (names without path and version).
mapped_libs() {
  awk '$6 ~ /\.so/ { n = $6; sub(/.*\//, "", n); sub(/\.so.*/, "", n); print n }' \
    "/proc/$1/maps" | sort -u | tr '\n' ' '
}

# What of them the agent $1 does not need; `tpm` as $2: a TPM device's agent, which loads
# tpm2-tss's SAPI libraries (libtss2-sys, -mu, -tctildr, -rc, and the TCTI -tctildr picks)
# when it opens its TRE. ESAPI (libtss2-esys) is not used (src/tre/tpm/tpm_esys.c), and SAPI
# needs no libcrypto: a TPM device's static agent maps no OpenSSL of its own either.
unneeded_libs() {
  local l extra=""
  for l in $(mapped_libs "$1"); do
    case "$l" in
    ld-linux* | libc | libm) ;;
    libtss2-esys) extra="$extra $l (ESAPI: not used)" ;;
    libtss2-*) [ "${2:-}" = tpm ] || extra="$extra $l" ;;
    libcrypto | libssl)
      [ "$static" = no ] || extra="$extra $l (linked in: MCIM_STATIC_AGENT=ON)" ;;
    libsqlite3 | libjansson | libcjose)
      [ "$static" = no ] || extra="$extra $l (linked in: MCIM_STATIC_AGENT=ON)" ;;
    libasan | libubsan | libgcc_s | libstdc++ | libclang_rt* | libdl | libpthread | librt)
      [ "$sanitized" = yes ] || extra="$extra $l" ;;
    *) extra="$extra $l" ;;
    esac
  done
  echo "$extra"
}

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture dev1 (runs the procedures)" "$mcim" lab device add dev1 --dir "$lab"
check "manufacture dev2 (stays idle)" "$mcim" lab device add dev2 --dir "$lab"
p1=$(agent_pid dev1)
p2=$(agent_pid dev2)
[ -n "$p1" ] && [ -r "/proc/$p1/status" ] && ok "dev1's agent runs (pid $p1)" || bad "no agent pid for dev1"
[ -n "$p2" ] && [ -r "/proc/$p2/status" ] && ok "dev2's agent runs (pid $p2)" || bad "no agent pid for dev2"

check "run initial dev1 --sho sho-a" "$mcim" run initial dev1 --sho sho-a --dir "$lab"
check "run change dev1 --to sho-b --via old-sho" "$mcim" run change dev1 --to sho-b --via old-sho --dir "$lab"

# the libraries it has mapped
libs=$(mapped_libs "$p1")
extra=$(unneeded_libs "$p1")
[ -z "$extra" ] && ok "the agent maps only the libraries it needs: $libs" ||
  bad "the agent maps libraries it does not need:$extra (all: $libs)"

# the code it runs laid out together (cmake/m2me-layout.ld) where the build says so: the
# section that holds it is in the program, before the rest of .text, and most of it
if [ "$(yes_no "${MCIM_AGENT_LAYOUT:-OFF}")" = yes ]; then
  need readelf
  sections=$(readelf -SW "$MCIM_BIN/m2me" | awk '$2 == ".text.mcim_hot" || $2 == ".text" { print $2, $4, $6 }')
  # "address size" in decimal (readelf prints them in hex)
  dec() { echo "$sections" | awk -v s="$1" '$1 == s { print $2, $3 }' |
    while read -r a n; do echo "$((16#$a)) $((16#$n))"; done; }
  hot=$(dec .text.mcim_hot)
  rest=$(dec .text)
  if [ -n "$hot" ] && [ -n "$rest" ] && [ "${hot% *}" -lt "${rest% *}" ] && [ "${hot#* }" -gt "${rest#* }" ]; then
    ok "m2me's code laid out: the code an agent runs (${hot#* } bytes) before the rest of .text (${rest#* })"
  else
    bad "MCIM_AGENT_LAYOUT is on, but m2me's .text.mcim_hot is missing or not the larger part before .text: ${sections:-no sections}"
  fi
fi

# its peak resident memory
hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$p1/status")
echo "      dev1's agent after both procedures: VmHWM $hwm KiB, $(awk '$1 == "VmRSS:" || $1 == "RssAnon:" || $1 == "RssFile:" || $1 == "Threads:" { printf "%s %s ", $1, $2 }' "/proc/$p1/status")"
how="MCIM_STATIC_AGENT=$( [ "$static" = yes ] && echo ON || echo OFF)"
if [ "$sanitized" = yes ]; then
  ok "sanitized build (MCIM_SANITIZE=ON): VmHWM $hwm KiB, not held to the plain build's ceiling"
elif [ -n "$hwm" ] && [ "$hwm" -le "$CEILING_KB" ]; then
  ok "peak resident memory of the agent over the procedures ($how): $hwm KiB <= $CEILING_KB KiB"
else
  bad "peak resident memory of the agent over the procedures ($how): ${hwm:-?} KiB > $CEILING_KB KiB"
fi

# A device whose TRE is in a TPM (MCIM_TPM builds; a swtpm of its own): its launcher runs
# the same m2me, which loads tpm2-tss's SAPI when it opens its TRE (docs/tre-tpm.md,
# "Memory"). The static agent peaks at 6 932-7 052 KiB with its code laid out (0.5-0.6 MiB
# above the software device's), at 8 032-8 244 without: TPM_CEILING_KB is the target, 8 MiB,
# with the layout (1 MiB above), and 9 MiB without, where 8 is not always held; both less
# than a shared libcrypto coming back (ESAPI needed it: 9.5 MiB with the agent's OpenSSL
# shared too, 11.6 with a second OpenSSL beside its own). Held: a TPM device runs m2me; the
# libraries it maps besides the software agent's are tpm2-tss's SAPI only; in a plain static
# build its peak is under TPM_CEILING_KB.
if [ "$(yes_no "${MCIM_AGENT_LAYOUT:-OFF}")" = yes ]; then
  TPM_CEILING_KB=8192
else
  TPM_CEILING_KB=9216
fi
# MCIM_TPM comes from CMake through ctest: without it this part would pass unseen
[ -n "${MCIM_TPM:-}" ] || bad "MCIM_TPM is not set (run through ctest, which gives the build's value)"
if [ "$(yes_no "${MCIM_TPM:-OFF}")" = yes ]; then
  need swtpm
  check "manufacture tdev (TPM TRE)" "$mcim" lab device add tdev --tre tpm --dir "$lab"
  check "run initial tdev --sho sho-a" "$mcim" run initial tdev --sho sho-a --dir "$lab"
  check "run change tdev --to sho-b --via old-sho" "$mcim" run change tdev --to sho-b --via old-sho --dir "$lab"
  pt=$(agent_pid tdev)
  # the program (the file it runs, fexecve'd by its launcher) and the name it runs under
  targ0=$(tr '\0' '\n' <"/proc/$pt/cmdline" | head -n 1)
  texe=$(readlink "/proc/$pt/exe")
  if [ "${targ0##*/}" = m2me ] && [ "$texe" -ef "$MCIM_BIN/m2me" ]; then
    ok "the TPM device's launcher runs m2me, the one agent program: $texe"
  else
    bad "the TPM device runs '$targ0' (file '$texe'), not $MCIM_BIN/m2me"
  fi
  tlibs=$(mapped_libs "$pt")
  extra=$(unneeded_libs "$pt" tpm)
  [ -z "$extra" ] && ok "the TPM agent maps tpm2-tss's SAPI besides, no ESAPI ($how): $tlibs" ||
    bad "the TPM agent maps libraries it does not need:$extra (all: $tlibs)"
  thwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pt/status")
  echo "      tdev's agent after both procedures: VmHWM $thwm KiB, $(awk '$1 == "VmRSS:" || $1 == "RssAnon:" || $1 == "RssFile:" { printf "%s %s ", $1, $2 }' "/proc/$pt/status")"
  if [ "$sanitized" = yes ] || [ "$static" = no ]; then
    ok "TPM agent ($how, MCIM_SANITIZE=$( [ "$sanitized" = yes ] && echo ON || echo OFF)): VmHWM $thwm KiB, held to a ceiling in a plain static build only"
  elif [ -n "$thwm" ] && [ "$thwm" -le "$TPM_CEILING_KB" ]; then
    ok "peak resident memory of the TPM agent over the procedures: $thwm KiB <= $TPM_CEILING_KB KiB"
  else
    bad "peak resident memory of the TPM agent over the procedures: ${thwm:-?} KiB > $TPM_CEILING_KB KiB"
  fi
fi

# the worker of an agent that is done is not woken by its control API
w0=$(wakeups dev1)
for _ in $(seq 20); do "$mcim" device status dev1 --dir "$lab" >/dev/null 2>&1 || true; done
w1=$(wakeups dev1)
[ -n "$w0" ] && [ "$w0" = "$w1" ] && ok "20 status requests to the idle dev1 did not wake its worker ($w0 wake-ups)" ||
  bad "dev1's worker woke up while only its status was asked: ${w0:-?} -> ${w1:-?}"

# an agent that never ran anything: no wake-up over its whole life
old_enough() { [ "$(age_s "$p2")" -ge "$IDLE_MIN_S" ]; }
wait_until 30 old_enough || bad "dev2's agent is not $IDLE_MIN_S s old after 30 s"
age=$(age_s "$p2")
w=$(wakeups dev2)
allowed=$((age / 10))
if [ -n "$w" ] && [ "$w" -le "$allowed" ]; then
  ok "the idle dev2's worker woke up $w times in its $age s (at most one per 10 s: $allowed)"
else
  bad "the idle dev2's worker woke up ${w:-?} times in its $age s (allowed: $allowed)"
fi

finish
