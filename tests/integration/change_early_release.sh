#!/usr/bin/env bash
# An old SHO that releases its DRF entry on its own, with another txn, before it takes the
# discard receipt, and then does not answer (change via the old SHO, steps 8-11; model
# finding F4, docs/model.md). An SHO registers its own entry `released` whenever it likes,
# with any txn (POST /v1/drf/registrations: registration_proven asks only that it hold an
# entry). The agent is killed just after the TRE destroyed the old MCIM (step 8, a crash
# point); meanwhile sho-a, as a hostile SHO would, registers its entry `released` for a txn
# that is not this change's, and stops. The agent comes back, cannot reach sho-a at step 9,
# and past `ack_deadline` hands the DPF the TRE-signed receipt (step 11). The DPF must take
# it: sho-a's `released` entry links it to the device whatever txn it names. Before the fix
# the DPF took a released entry only for this very txn and refused the receipt
# (REGISTRATION_PENDING until the procedure's deadline): the change failed after step 8, a
# veto by the old SHO, the device left with its PCID only.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl

# armed: the agent dies once the TRE destroyed the old MCIM, before it saved that
old_sho_change_killed discard:after-tre "after the TRE's discard (step 8)"
# sho-a, hostile: its entry `released` with another txn (a newer seq than its own), then gone
other=0000000000000000000000000000f4f4
[ "$other" != "$txn" ] || bad "the other txn is this one"
body="{\"txn\":\"$other\",\"device\":\"la\",\"sho\":\"sho-a\",\"state\":\"released\",\"endpoint\":\"$(role_url sho-a)\",\"seq\":9000000000000000000}"
code=$(curl -s -o "$tmp/reg.json" -w '%{http_code}' --cacert "$lab/pki/ca/operators-ca.crt" \
  --cert "$lab/pki/sho-a/cert.pem" --key "$lab/pki/sho-a/key.pem" -H 'Content-Type: application/json' \
  -d "$body" "$(role_url ro)/v1/drf/registrations")
[ "$code" = 200 ] && ok "sho-a registered its entry released for another txn" ||
  bad "registration: $code $(head -c 300 "$tmp/reg.json")"
db_is "$lab/ro/ro.db" "SELECT state || ' ' || txn FROM drf WHERE device='la' AND sho='sho-a'" "released $other" &&
  ok "the DRF: sho-a released, txn $other" ||
  bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state, txn FROM drf WHERE device='la'")"
old_sho_change_completes "with no veto by sho-a"
"$mcim" device attach la --to sho-b --json --dir "$lab" >"$tmp/att.json" 2>&1 &&
  grep -q '"scope": "full"' "$tmp/att.json" && ok "la attaches to sho-b (full)" || bad "attach: $(head -c 300 "$tmp/att.json")"
# sho-a back: the RO relays the receipt, sho-a terminates the old subscription
old_sho_back_terminates
finish
