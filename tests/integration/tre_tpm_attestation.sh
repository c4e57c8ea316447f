#!/usr/bin/env bash
# Real attestation at the PVA with the TPM TRE (issue 11 point 4; docs/tre-tpm.md, "Attestation at
# the PVA"; docs/roles-pva-m2mes.md, "A TPM device's quote"): a TPM device's launcher (m2me-boot)
# measures its boot and os images and the agent executable it is about to run (m2me, as every
# device's) into PCR 10 (static: no TPM2_PCR_Reset clears it) with an ima-ng log beside its
# TRE state, then execs the agent, which measures nothing; at the PVA's nonce its TPM quotes the
# PCR, and the PVA validates the procedure on that quote against the RIMs the M2MES published (the
# agent's: the digest of the m2me the lab runs) (its trace says which evidence it used; its
# attestation certificate, marked by the M2MES, makes the TPM quote required). A device
# manufactured with a modified os image, and a device whose m2me executable is replaced by a
# modified copy (a byte appended) and rebooted, are refused with VALIDATION_FAILED naming the
# component; the executable put back and the device rebooted (its TPM restarted: PCR 10 cleared, a
# new log), it passes again; its agent restarted without a TPM restart (the launcher appends to the
# log of PCR 10), its quote still verifies. The refusals of forged evidence (another TPM, a
# replayed quote, a log that does not replay, a garbled TPMS_ATTEST) and the TPM's refusal of
# TPM2_PCR_Reset of PCR 10 are unit-tested (tests/unit/test_tre_tpm_quote.c). Registered with
# MCIM_TPM only (tests/CMakeLists.txt).
. "$(dirname "$0")/lib/common.bash"
need sqlite3 swtpm openssl python3 sha256sum

# The lab runs the programs of a folder of its own (links to the build's), so that this test
# can put a modified m2me where the launcher takes it from (MCIM_BIN), as an attacker with
# write access to the device's disk would.
real_bin=$MCIM_BIN
mkdir -p "$tmp/bin"
for p in "$real_bin"/*; do ln -s "$p" "$tmp/bin/$(basename "$p")"; done
export MCIM_BIN="$tmp/bin"
mcim="$MCIM_BIN/mcim"
# the agent a TPM device runs: m2me, the one agent program (docs/tre-tpm.md, "Memory")
agent=m2me
m2me_sha=$(sha256sum "$real_bin/$agent" | cut -d' ' -f1)

# pva_quotes DEV RESULT: the PVA's traced validations of DEV decided on a TPM quote with RESULT
pva_quotes() {
  sqlite3 "$lab/pva/pva.db" "SELECT COUNT(*) FROM trace WHERE from_name='$1' AND msg='TRE quote'
    AND body LIKE '%\"evidence\":\"tpm-quote\"%' AND body LIKE '%\"result\":\"$2\"%'"
}
# tpm_marked DEV: the attestation certificate the M2MES issued DEV says its key is in a TPM
# (MCIM_OID_TPM_ATTESTATION), so the PVA takes no quote of DEV without the TPM's evidence
tpm_marked() {
  sqlite3 "$lab/m2mes/m2mes.db" "SELECT answer FROM devices WHERE device='$1'" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["attestation_cert"])' |
    openssl x509 -noout -text | grep -q '1\.3\.6\.1\.4\.1\.32473\.11\.2'
}
# enrolled DEV: the M2MES enrolled DEV's TPM (docs/tre-tpm.md, "Enrolment"): the attestation
# certificate names the TPM's restricted attestation key (1.3.6.1.4.1.32473.11.3, what the PVA
# verifies quotes with) and the model (1.3.6.1.4.1.32473.11.4)
enrolled() {
  local text
  text=$(sqlite3 "$lab/m2mes/m2mes.db" "SELECT answer FROM devices WHERE device='$1'" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["attestation_cert"])' |
    openssl x509 -noout -text)
  grep -q '1\.3\.6\.1\.4\.1\.32473\.11\.3' <<<"$text" &&
    grep -A2 '1\.3\.6\.1\.4\.1\.32473\.11\.4' <<<"$text" | grep -q 'm2me-lab-1'
}
# log_ok DEV LINES: the ima-ng log beside DEV's TRE state, of PCR 10: LINES lines, boot os agent
# once per launch since the TPM started
log_ok() {
  local f="$lab/devices/$1/tre/measurements.ima" want="" i
  for ((i = 0; i < $2 / 3; i++)); do want+="boot os agent "; done
  [ -f "$f" ] && [ "$(wc -l <"$f")" = "$2" ] &&
    [ "$(cut -d' ' -f1,3 "$f" | sort -u)" = "10 ima-ng" ] &&
    [ "$(cut -d' ' -f5 "$f" | tr '\n' ' ')" = "$want" ] &&
    ! grep -vqE '^10 [0-9a-f]{64} ima-ng sha256:[0-9a-f]{64} [a-z]+$' "$f"
}
# agent_measured DEV SHA: the last launch of DEV measured an agent executable of SHA-256 SHA
agent_measured() {
  [ "$(grep ' agent$' "$lab/devices/$1/tre/measurements.ima" | tail -n1 | cut -d' ' -f4)" = "sha256:$2" ]
}
# agent_up DEV: DEV's agent answers on its control socket
agent_up() {
  curl -sf --unix-socket "$lab/devices/$1/control.sock" http://localhost/v1/status >/dev/null
}

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture dev1 (TRE: tpm)" "$mcim" lab device add dev1 --tre tpm --dir "$lab"
check "manufacture dev2 (TRE: tpm, modified os image)" "$mcim" lab device add dev2 --tre tpm --tamper --dir "$lab"
log_ok dev1 3 && ok "dev1's measurement log: PCR 10, ima-ng, boot os agent" ||
  bad "dev1's log: $(cat "$lab/devices/dev1/tre/measurements.ima" 2>&1)"
agent_measured dev1 "$m2me_sha" && ok "dev1's launcher measured the agent executable it runs ($agent)" ||
  bad "dev1's agent measurement is not SHA-256 of $real_bin/$agent ($m2me_sha)"
grep -q "measured into PCR 10; starting the agent" "$lab/devices/dev1/agent.log" &&
  ok "dev1's agent was started by its launcher (m2me-boot)" || bad "no launch in dev1's agent.log"
tpm_marked dev1 && ok "dev1's attestation certificate is marked TPM-resident by the M2MES" ||
  bad "dev1's attestation certificate has no TPM mark"
enrolled dev1 && ok "dev1's TPM was enrolled: its certificate names the attestation key and the model" ||
  bad "dev1's attestation certificate names no enrolled attestation key or model"
[ -s "$lab/devices/dev1/tpm/swtpm_setup.log" ] && grep -q "EK certificate" "$lab/devices/dev1/tpm/swtpm_setup.log" &&
  ok "dev1's TPM was manufactured with an EK certificate (swtpm_setup)" || bad "no EK certificate made for dev1's TPM"

check "initial provisioning of dev1 with sho-a" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "result success" || bad "result: $(head -c 600 "$tmp/out")"
[ "$(pva_quotes dev1 success)" = 1 ] && ok "the PVA validated dev1 on its TPM quote" ||
  bad "PVA trace: $(sqlite3 "$lab/pva/pva.db" "SELECT cause, body FROM trace WHERE msg='TRE quote'")"

check_refused VALIDATION_FAILED "initial provisioning of dev2 (modified os image)" "$mcim" run initial dev2 --sho sho-b --json --dir "$lab"
grep -q '"detail": ".*os digest' "$tmp/out" && ok "the detail names the os image" || bad "detail: $(grep detail "$tmp/out")"
[ "$(pva_quotes dev2 failure)" = 1 ] && ok "the PVA refused dev2 on its TPM quote" ||
  bad "PVA trace: $(sqlite3 "$lab/pva/pva.db" "SELECT cause, body FROM trace WHERE from_name='dev2'")"
# the slot key dev2's TRE made and certified at that quote (for K, docs/tre-tpm.md "The
# procedure's slot key") went with the failed procedure
made=$(grep -c 'made for this procedure, certified by the attestation key' "$lab/devices/dev2/agent.log" || true)
gone=$(grep -c 'slot key 0x[0-9a-f]* destroyed (TPM2_EvictControl)' "$lab/devices/dev2/agent.log" || true)
[ "$made" -ge 1 ] && [ "$gone" = "$made" ] && ok "dev2's unused slot key ($made) destroyed with its failed procedure" ||
  bad "dev2: $made slot keys made at its quotes, $gone destroyed"

# dev1's m2me replaced by a modified copy (a byte appended: it still runs), the device
# rebooted (its TPM too): the launcher measures what it runs, the PVA refuses it
rm "$MCIM_BIN/$agent"
cp "$real_bin/$agent" "$MCIM_BIN/$agent"
printf '\0' >>"$MCIM_BIN/$agent"
bad_sha=$(sha256sum "$MCIM_BIN/$agent" | cut -d' ' -f1)
check "restart dev1 (modified m2me executable)" "$mcim" lab restart dev1 --dir "$lab"
log_ok dev1 3 && ok "dev1's log after the reboot: a new log of three lines (PCR 10 cleared by the TPM's restart)" ||
  bad "dev1's log: $(cat "$lab/devices/dev1/tre/measurements.ima" 2>&1)"
agent_measured dev1 "$bad_sha" && ok "the launcher measured the modified m2me" ||
  bad "dev1's agent measurement is not SHA-256 of the modified m2me ($bad_sha)"
check_refused VALIDATION_FAILED "change dev1 to sho-b via old-sho (modified m2me)" "$mcim" run change dev1 --to sho-b --via old-sho --json --dir "$lab"
grep -q '"detail": ".*agent digest' "$tmp/out" && ok "the detail names the agent" || bad "detail: $(grep detail "$tmp/out")"

# the executable put back, the device rebooted: validated again
ln -sf "$real_bin/$agent" "$MCIM_BIN/$agent"
check "restart dev1 (m2me restored)" "$mcim" lab restart dev1 --dir "$lab"
agent_measured dev1 "$m2me_sha" && ok "the launcher measured the restored m2me" || bad "dev1's agent measurement after the restore"

# dev1's agent stopped and started again by its launcher, its TPM still running (as init
# restarts a service): PCR 10 keeps its value, the launcher appends to its log
tpm_pid=$(tr -d ' \n' <"$lab/lab.json" | grep -o '"name":"dev1",[^}]*"swtpm_pid":[0-9]*' | grep -o '[0-9]*$')
agent_pid=$(pid_of dev1)
kill -TERM "$agent_pid"
wait_until 20 sh -c "! kill -0 $agent_pid 2>/dev/null" || bad "dev1's agent did not stop"
# (with --log-format json, as m2me-tpm@.service starts it: passed on to the agent)
lines_before=$(wc -l <"$lab/devices/dev1/agent.log")
setsid "$MCIM_BIN/m2me-boot" --dir "$lab/devices/dev1" --agent "$MCIM_BIN/$agent" --log-format json \
  >>"$lab/devices/dev1/agent.log" 2>&1 </dev/null &
new_pid=$!
# lab.json follows, so that `lab down` stops it
python3 - "$lab/lab.json" "$new_pid" <<'PY'
import json, sys
p, pid = sys.argv[1], int(sys.argv[2])
lab = json.load(open(p))
for d in lab["devices"]:
    if d["name"] == "dev1":
        d["pid"] = pid
json.dump(lab, open(p, "w"), indent=2)
PY
wait_until 20 agent_up dev1 && ok "dev1's agent is up again (its launcher ran)" || bad "dev1's agent did not come back"
tail -n +"$((lines_before + 1))" "$lab/devices/dev1/agent.log" | grep -q '^{.*"role": *"dev1"' &&
  ok "the agent logs JSON lines: --log-format reached it through the launcher" ||
  bad "no JSON log line from the restarted agent: $(tail -n 3 "$lab/devices/dev1/agent.log")"
kill -0 "$tpm_pid" && ok "dev1's TPM kept running (pid $tpm_pid)" || bad "dev1's swtpm is gone"
log_ok dev1 6 && ok "dev1's log: the launcher appended its three lines (six, PCR 10 not reset)" ||
  bad "dev1's log: $(cat "$lab/devices/dev1/tre/measurements.ima" 2>&1)"
check "change dev1 to sho-b via old-sho (agent restarted, log appended)" "$mcim" run change dev1 --to sho-b --via old-sho --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "result success" || bad "result: $(head -c 600 "$tmp/out")"
[ "$(pva_quotes dev1 success)" = 2 ] && ok "the PVA validated the change on dev1's TPM quote" ||
  bad "PVA trace: $(sqlite3 "$lab/pva/pva.db" "SELECT cause, body FROM trace WHERE from_name='dev1' AND msg='TRE quote'")"
check "dev1 attaches to sho-b" "$mcim" device attach dev1 --to sho-b --json --dir "$lab"

# The SHO wraps K for an enrolled TPM device only to the slot key its quote offered, certified
# by its AK over the txn (docs/tre-tpm.md, "The procedure's slot key"): its order of the change
# put back to "validating", a verdict signed by the PVA (its lab key) without the quote fails
# it with TPM_SLOT_KEY_MISSING (never K wrapped to the storage key instead), and one whose
# quote had its tpm_slot taken out fails it with QUOTE_INVALID (the TRE's signature covers the
# offer). The other refusals (forged, another AK, another txn, not a slot key) need the TRE's
# signing key: unit-tested on the SHO's check (test_tre_tpm_slots test_rewrap_to_null).
pki="$lab/pki"
txn=$(sql "$lab/sho-b/sho-b.db" "SELECT txn FROM orders WHERE device='dev1' ORDER BY created DESC LIMIT 1")
pva_verdict=$(sql "$lab/pva/pva.db" "SELECT verdict FROM validations WHERE txn='$txn' AND verdict IS NOT NULL")
# verdict_to_sho MODE: a verdict for $txn signed with the PVA's key, POSTed to sho-b as the PVA
verdict_to_sho() {
  python3 - "$pki/pva/key.pem" "$txn" "$1" "$pva_verdict" >"$tmp/verdict.json" <<'PY'
import base64, json, os, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
txn, mode, old = sys.argv[2], sys.argv[3], sys.argv[4]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
unb64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
now = int(time.time())
claims = {"iss": "pva", "aud": "sho-b", "sub": "dev1", "typ": "mcim-verdict+jwt", "txn": txn,
          "iat": now, "exp": now + 300, "jti": b64(os.urandom(16)), "result": "success",
          "cause": "OK", "mismatches": [], "validation_id": b64(os.urandom(8)),
          "model": "m2me-lab-1"}
if mode == "stripped":
    quote = json.loads(unb64(old.split(".")[1]))["quote"]
    h, p, s = quote.split(".")
    body = json.loads(unb64(p))
    assert "tpm_slot" in body
    del body["tpm_slot"]
    claims["quote"] = ".".join([h, b64(json.dumps(body).encode()), s])
head = b64(json.dumps({"alg": "ES256", "typ": "mcim-verdict+jwt"}).encode())
pay = b64(json.dumps(claims).encode())
der = key.sign((head + "." + pay).encode(), ec.ECDSA(hashes.SHA256()))
r, s = utils.decode_dss_signature(der)
sig = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
print(json.dumps({"txn": txn, "device": "dev1", "verdict": head + "." + pay + "." + sig}))
PY
  curl -s -o "$tmp/answer" --cacert "$pki/ca/operators-ca.crt" --cert "$pki/pva/cert.pem" \
    --key "$pki/pva/key.pem" -H 'Content-Type: application/json' -d @"$tmp/verdict.json" \
    "$(role_url sho-b)/v1/verdicts"
}
for case in "none:TPM_SLOT_KEY_MISSING" "stripped:QUOTE_INVALID"; do
  sql "$lab/sho-b/sho-b.db" "UPDATE orders SET state='validating', cause=NULL WHERE txn='$txn'"
  verdict_to_sho "${case%%:*}"
  grep -q '"state":"failed"' "$tmp/answer" &&
    db_is "$lab/sho-b/sho-b.db" "SELECT state || ' ' || cause FROM orders WHERE txn='$txn'" "failed ${case#*:}" &&
    ok "sho-b refuses dev1's verdict (${case%%:*}): the order fails, ${case#*:}" ||
    bad "verdict (${case%%:*}): $(cat "$tmp/answer"); order: $(sql "$lab/sho-b/sho-b.db" "SELECT state, cause FROM orders WHERE txn='$txn'")"
done
grep -q "the verdict carries no quote: no slot key for dev1's TPM" "$lab/sho-b/sho-b.log" &&
  ok "sho-b's log says why" || bad "sho-b's log does not name the missing slot key"
check "lab down" "$mcim" lab down --dir "$lab"
finish
