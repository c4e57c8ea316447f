#!/usr/bin/env bash
# Real attestation at the PVA with the TPM TRE (issue 11 point 4; docs/tre-tpm.md, "Attestation
# at the PVA"; docs/roles-pva-m2mes.md, "A TPM device's quote"): a TPM device measures its
# firmware and agent images into PCR 23 at boot, with an ima-ng log beside its TRE state; at
# the PVA's nonce its TPM quotes the PCR, and the PVA validates the procedure on that quote
# (its trace says which evidence it used; its attestation certificate, marked by the M2MES,
# makes the TPM quote required). A device manufactured with a modified image, and a
# device whose agent image is modified after manufacture (then rebooted), are refused with
# VALIDATION_FAILED naming the component; the image put back and the device rebooted (PCR 23
# reset and measured again), it passes again. The refusals of forged evidence (another TPM, a
# replayed quote, a log that does not replay, a garbled TPMS_ATTEST) are unit-tested
# (tests/unit/test_tre_tpm_quote.c). Registered with MCIM_TPM only (tests/CMakeLists.txt).
. "$(dirname "$0")/lib/common.bash"
need sqlite3 swtpm openssl python3

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
# log_ok DEV: the ima-ng log beside DEV's TRE state, one line per image, in boot order
log_ok() {
  local f="$lab/devices/$1/tre/measurements.ima"
  [ -f "$f" ] && [ "$(wc -l <"$f")" = 3 ] &&
    [ "$(cut -d' ' -f1,3 "$f" | sort -u)" = "23 ima-ng" ] &&
    [ "$(cut -d' ' -f5 "$f" | tr '\n' ' ')" = "boot os agent " ] &&
    ! grep -vqE '^23 [0-9a-f]{64} ima-ng sha256:[0-9a-f]{64} [a-z]+$' "$f"
}

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture dev1 (TRE: tpm)" "$mcim" lab device add dev1 --tre tpm --dir "$lab"
check "manufacture dev2 (TRE: tpm, modified os image)" "$mcim" lab device add dev2 --tre tpm --tamper --dir "$lab"
log_ok dev1 && ok "dev1's measurement log: PCR 23, ima-ng, boot os agent" ||
  bad "dev1's log: $(cat "$lab/devices/dev1/tre/measurements.ima" 2>&1)"
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

# dev1's agent image modified in place, the device rebooted: measured as it now is
agent_img="$lab/devices/dev1/firmware/agent.img"
cp "$agent_img" "$tmp/agent.img"
echo "# patched" >>"$agent_img"
check "restart dev1 (modified agent image)" "$mcim" lab restart dev1 --dir "$lab"
log_ok dev1 && ok "dev1's log after the reboot: still three lines (PCR 23 reset at boot)" ||
  bad "dev1's log: $(cat "$lab/devices/dev1/tre/measurements.ima" 2>&1)"
check_refused VALIDATION_FAILED "change dev1 to sho-b via old-sho (modified agent image)" "$mcim" run change dev1 --to sho-b --via old-sho --json --dir "$lab"
grep -q '"detail": ".*agent digest' "$tmp/out" && ok "the detail names the agent image" || bad "detail: $(grep detail "$tmp/out")"

# the image put back, the device rebooted: validated again
cp "$tmp/agent.img" "$agent_img"
check "restart dev1 (agent image restored)" "$mcim" lab restart dev1 --dir "$lab"
check "change dev1 to sho-b via old-sho" "$mcim" run change dev1 --to sho-b --via old-sho --json --dir "$lab"
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
