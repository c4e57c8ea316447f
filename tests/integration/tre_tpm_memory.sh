#!/usr/bin/env bash
# K never in the device's memory in clear (issue 11, point 3; docs/tre-tpm.md "K in the TPM"):
# a device with the TPM TRE gets its MCIM's K from the SHO as a duplication blob to its TPM's
# storage key, which only that TPM imports, and its AKA runs E_K inside the TPM. This test dumps
# the m2me agent's memory (gdb's gcore) while an attach runs (stopped inside the TRE's AKA, at
# mcim_aka_usim_check) and after it, and looks for K (the 16 bytes, and their hex in both
# cases) in the dumps: none may hold it. K is read from the SHO's AuC (its sealed column opened
# with the SHO's storage key: the test is the lab's operator). Then the same during a change
# of subscription to sho-b (the agent stopped in the TRE's install) and after it.
# That the search would find K if it were there is shown twice: the dump of a device with the
# software TRE taken inside its AKA holds its K (in clear there by design; outside its AKA the
# software TRE keeps K sealed under the MCIM's own key, docs/tre.md section 8, so its other
# dumps are only reported), and a copy of the TPM device's K planted into its agent's memory
# (gdb) is found in the next dump.
# The PCID credential's K too (docs/tre-tpm.md, "The PCID credential's K"): the M2MES wraps it
# to the PCID's slot key that the TPM device's AK certified at enrolment; it is read from the
# RO ICF's AuC and looked for in a dump taken inside the pristine attach with the PCID (the
# first AKA of the initial provisioning) and after it, and in every later dump of the TPM
# device: never found there, while the software device's dump inside its PCID AKA holds it.
# Registered with MCIM_TPM only (tests/CMakeLists.txt).
. "$(dirname "$0")/lib/common.bash"
need sqlite3 swtpm gdb gcore python3
if ! python3 -c 'import cryptography.hazmat.primitives.ciphers.aead' 2>/dev/null; then
  bad "missing: python3-cryptography (scripts/deps.sh installs it)"
  finish || true
  exit 1
fi

# sho_k DEVICE [SHO]: the hex K of DEVICE's active subscription at SHO (sho-a) (the AuC's
# sealed column, src/core/seal.c: version | nonce | AES-256-GCM | tag, AAD version ||
# "auc/k/IMSI"); sho_k DEVICE ro: the K of its PCID credential at the RO's ICF
sho_k() {
  local s=${2:-sho-a}
  python3 - "$lab/$s/$s.db" "$lab/$s/storage.key" "$1" <<'EOF'
import sqlite3, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
db, keyf, dev = sys.argv[1:4]
key = open(keyf, "rb").read()
rows = sqlite3.connect(db).execute(
    "SELECT imsi, k FROM auc WHERE device = ? AND state = 'active'", (dev,)).fetchall()
assert len(rows) == 1, rows
imsi, blob = rows[0]
blob = bytes(blob)
print(AESGCM(key).decrypt(blob[1:13], blob[13:], b"\x01" + ("auc/k/%s" % imsi).encode()).hex())
EOF
}
# k_count CORE KHEX: how often the core holds K: raw, lower-case hex, upper-case hex
k_count() {
  python3 - "$1" "$2" <<'EOF'
import sys
core = open(sys.argv[1], "rb").read()
k = sys.argv[2]
print(sum(core.count(f) for f in (bytes.fromhex(k), k.encode(), k.upper().encode())))
EOF
}
# k_nowhere WHEN KHEX WHAT: the TPM device's dump WHEN ($tmp/tdev.WHEN) holds K (WHAT) nowhere
k_nowhere() {
  local n
  n=$(k_count "$tmp/tdev.$1" "$2")
  [ "$n" = 0 ] && ok "TPM device, $1: $3 nowhere in the agent's memory ($(du -k "$tmp/tdev.$1" | cut -f1) KiB)" ||
    bad "TPM device, $1: $3 found $n times in the agent's memory"
}
# dump_after PID CORE: gcore of the agent now
dump_after() { gcore -o "$tmp/gc" "$1" >"$tmp/gcore.out" 2>&1 && mv "$tmp/gc.$1" "$2"; }
# dump_at FUNC PID CORE CMD...: the agent stopped at a breakpoint at FUNC while CMD (an mcim
# command that makes it get there) runs, dumped there, then let go; CMD must then succeed
dump_at() {
  local fn=$1 pid=$2 core=$3 gpid st=0
  shift 3
  rm -f "$tmp/gdb.out"
  gdb -p "$pid" -batch -nx -ex 'set pagination off' -ex 'set confirm off' \
    -ex "break $fn" -ex 'continue' -ex "gcore $core" -ex 'delete' \
    -ex 'detach' >"$tmp/gdb.out" 2>&1 &
  gpid=$!
  bg="${bg:-} $gpid"
  # the breakpoint set, the agent is stopped or about to continue: a request sent now waits
  # in its socket until the agent runs, and then stops it at the breakpoint
  if ! wait_until 30 grep -q '^Breakpoint 1 at ' "$tmp/gdb.out"; then
    bad "gdb did not attach to the agent $pid: $(tail -c 400 "$tmp/gdb.out")"
    kill "$gpid" 2>/dev/null || true
    return 1
  fi
  "$@" >"$tmp/cmd.out" 2>&1 || st=$?
  wait "$gpid" || true
  if [ "$st" -ne 0 ]; then
    bad "$* while dumped: $(head -c 300 "$tmp/cmd.out")"
    return 1
  fi
  if [ ! -s "$core" ] || ! grep -q "Breakpoint 1, .*$fn" "$tmp/gdb.out"; then
    bad "no dump at $fn: $(tail -c 400 "$tmp/gdb.out")"
    return 1
  fi
}
# dump_during DEV PID CORE: inside the TRE's AKA of an attach (mcim_aka_usim_check: K, or its
# handle in the TPM, in use)
dump_during() {
  dump_at mcim_aka_usim_check "$2" "$3" "$mcim" device attach "$1" --to sho-a --dir "$lab" &&
    grep -q 'full access' "$tmp/cmd.out"
}
# plant PID KHEX: a copy of K (its 16 bytes) in the agent's heap, as if the TRE had kept one
plant() {
  local bytes
  bytes=$(echo "$2" | sed 's/../0x&,/g; s/,$//')
  gdb -p "$1" -batch -nx -ex 'set confirm off' \
    -ex 'set $p = (unsigned char *) ((void *(*)(unsigned long)) malloc)(16)' \
    -ex "set {unsigned char[16]} \$p = {$bytes}" -ex 'detach' >"$tmp/plant.out" 2>&1
}

check "lab up" "$mcim" lab up --dir "$lab"
check "a device with the TPM TRE" "$mcim" lab device add tdev --tre tpm --dir "$lab"
check "a device with the software TRE" "$mcim" lab device add sdev --dir "$lab"
tpid=$(pid_of tdev)
spid=$(pid_of sdev)
# the initial provisioning, each agent stopped in its first AKA: the pristine attach with the
# PCID credential
for dev in tdev sdev; do
  pid=$tpid
  [ "$dev" = sdev ] && pid=$spid
  dump_at mcim_aka_usim_check "$pid" "$tmp/$dev.pcid" "$mcim" run initial "$dev" --sho sho-a \
    --dir "$lab" && ok "initial provisioning of $dev, its agent dumped inside the PCID's AKA"
  dump_after "$pid" "$tmp/$dev.pcid_after" || bad "$dev: gcore: $(tail -c 300 "$tmp/gcore.out")"
done
kt=$(sho_k tdev) && [ ${#kt} -eq 32 ] && ok "K of the TPM device read from sho-a's AuC" ||
  bad "K of tdev: '$kt'"
ks=$(sho_k sdev) && [ ${#ks} -eq 32 ] && ok "K of the software device read from sho-a's AuC" ||
  bad "K of sdev: '$ks'"
pt=$(sho_k tdev ro) && [ ${#pt} -eq 32 ] && ok "the PCID credential's K of the TPM device read from the RO ICF's AuC" ||
  bad "PCID K of tdev: '$pt'"
ps=$(sho_k sdev ro) && [ ${#ps} -eq 32 ] && ok "the PCID credential's K of the software device read from the RO ICF's AuC" ||
  bad "PCID K of sdev: '$ps'"
[ "$failed" -eq 0 ] || { finish; exit 1; }
for when in pcid pcid_after; do
  [ -s "$tmp/tdev.$when" ] && [ -s "$tmp/sdev.$when" ] || continue
  k_nowhere "$when" "$pt" "the PCID credential's K"
  n=$(k_count "$tmp/sdev.$when" "$ps")
  if [ "$when" = pcid ]; then
    [ "$n" -gt 0 ] && ok "software device, inside the PCID's AKA: the same search finds its PCID K ($n times)" ||
      bad "software device, inside the PCID's AKA: its PCID K not found: the search would miss it"
  else
    echo "note  software device, after the PCID's AKA: its PCID K found $n times"
  fi
done

for d in t s; do
  dev=${d}dev
  pid=$tpid k=$kt
  [ "$d" = s ] && pid=$spid k=$ks
  dump_during "$dev" "$pid" "$tmp/$dev.during" && ok "$dev: agent dumped inside the AKA of an attach"
  dump_after "$pid" "$tmp/$dev.after" && ok "$dev: agent dumped after the attach" ||
    bad "$dev: gcore: $(tail -c 300 "$tmp/gcore.out")"
done
for when in during after; do
  [ -s "$tmp/tdev.$when" ] || continue
  k_nowhere "$when" "$kt" "sho-a's K"
  [ -s "$tmp/sdev.$when" ] || continue
  n=$(k_count "$tmp/sdev.$when" "$ks")
  # the software TRE keeps an MCIM's K sealed under the MCIM's own key (docs/tre.md section
  # 8) and has it in clear only inside its AKA: the control is the dump during the attach
  if [ "$when" = during ]; then
    [ "$n" -gt 0 ] && ok "software device, $when the attach: the same search finds its K ($n times)" ||
      bad "software device, $when the attach: K not found: the search would miss it"
  else
    echo "note  software device, $when the attach: its K found $n times (sealed under the slot's key, which its memory holds)"
  fi
done
# Provisioning too: a change to sho-b via the old SHO, each agent stopped in the TRE's install
# (step 12: the package opened and staged at step 7, the old MCIM discarded at step 8); the
# new K, read from sho-b's AuC once the change is done, in neither the dump then nor one after
# the change for the TPM device, in both for the software device.
for dev in tdev sdev; do
  pid=$tpid
  [ "$dev" = sdev ] && pid=$spid
  dump_at tre_op_install "$pid" "$tmp/$dev.install" "$mcim" run change "$dev" --to sho-b \
    --via old-sho --dir "$lab" && ok "$dev: agent dumped in the TRE's install of a change to sho-b"
  dump_after "$pid" "$tmp/$dev.changed" || bad "$dev: gcore: $(tail -c 300 "$tmp/gcore.out")"
done
kt_b=$(sho_k tdev sho-b) && [ ${#kt_b} -eq 32 ] || bad "K of tdev at sho-b: '$kt_b'"
ks_b=$(sho_k sdev sho-b) && [ ${#ks_b} -eq 32 ] || bad "K of sdev at sho-b: '$ks_b'"
for when in install changed; do
  [ -s "$tmp/tdev.$when" ] && [ -s "$tmp/sdev.$when" ] || continue
  k_nowhere "$when" "$kt_b" "sho-b's K"
  n=$(k_count "$tmp/sdev.$when" "$ks_b")
  echo "note  software device, $when: sho-b's K found $n times (in clear only while staged and used; the control is the planted K below)"
done

# the PCID credential's K in none of the TPM device's later dumps either
for when in during after install changed; do
  [ -s "$tmp/tdev.$when" ] || continue
  k_nowhere "$when" "$pt" "the PCID credential's K"
done

# the TPM device's K, planted: the search finds it in the next dump of the same agent
if plant "$tpid" "$kt"; then
  dump_after "$tpid" "$tmp/tdev.planted" || bad "tdev: gcore: $(tail -c 300 "$tmp/gcore.out")"
  n=$(k_count "$tmp/tdev.planted" "$kt")
  [ "$n" -gt 0 ] && ok "TPM device: a copy of K planted in its agent is found ($n)" ||
    bad "TPM device: a planted K is not found: the search would miss it"
else
  bad "cannot plant K into the agent: $(tail -c 300 "$tmp/plant.out")"
fi
# nor anywhere in the TPM device's folder (state, agent.db, logs, the swtpm's files)
if grep -rqi -e "$kt" -e "$kt_b" -e "$pt" "$lab/devices/tdev" 2>/dev/null; then
  bad "K in clear under the TPM device's folder"
else ok "no K (sho-a's, sho-b's, the PCID's) anywhere in the TPM device's folder (hex)"; fi
check "the TPM device attaches to sho-b" "$mcim" device attach tdev --to sho-b --dir "$lab"

# A renewal of the TPM device's PCID credential (the RO's DPF): the new K wrapped to the slot
# key the renewal request offered; the agent dumped after the renewal, and inside the first
# AKA of a change via the pristine state (the attach with the renewed PCID credential)
pcid_of() { "$mcim" device status "$1" --json --dir "$lab" | tr -d ' \n' | grep -o '"pcid":{"id":"[0-9]*"' | grep -o '[0-9]\{6,\}'; }
pcid_old=$(pcid_of tdev)
check "mcim pcid push tdev" "$mcim" pcid push tdev --dir "$lab"
check "tdev attaches to the VNO (the renewal is picked up)" "$mcim" device attach tdev --to vno --dir "$lab"
renewed() { pcid_new=$(pcid_of tdev) && [ -n "$pcid_new" ] && [ "$pcid_new" != "$pcid_old" ]; }
pcid_new=""
wait_until 10 renewed && ok "tdev's PCID renewed ($pcid_old -> $pcid_new)" || bad "tdev's PCID not renewed"
pr=$(python3 - "$lab/ro/ro.db" "$lab/ro/storage.key" "$pcid_new" <<'EOF'
import sqlite3, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
db, keyf, imsi = sys.argv[1:4]
key = open(keyf, "rb").read()
blob = bytes(sqlite3.connect(db).execute("SELECT k FROM auc WHERE imsi = ?", (imsi,)).fetchone()[0])
print(AESGCM(key).decrypt(blob[1:13], blob[13:], b"\x01" + ("auc/k/%s" % imsi).encode()).hex())
EOF
) && [ ${#pr} -eq 32 ] && ok "the renewed PCID credential's K read from the RO ICF's AuC" || bad "renewed PCID K: '$pr'"
dump_after "$tpid" "$tmp/tdev.renewed" || bad "tdev: gcore: $(tail -c 300 "$tmp/gcore.out")"
dump_at mcim_aka_usim_check "$tpid" "$tmp/tdev.renewed_aka" "$mcim" run change tdev --to sho-a \
  --via pristine --dir "$lab" && ok "tdev: agent dumped inside the AKA with the renewed PCID credential"
for when in renewed renewed_aka; do
  [ -s "$tmp/tdev.$when" ] || continue
  k_nowhere "$when" "$pr" "the renewed PCID credential's K"
done
if grep -rqi -e "$pr" "$lab/devices/tdev" 2>/dev/null; then
  bad "the renewed PCID credential's K in clear under the TPM device's folder"
else ok "the renewed PCID credential's K nowhere in the TPM device's folder (hex)"; fi
check "lab down" "$mcim" lab down --dir "$lab"
finish
