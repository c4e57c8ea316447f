#!/usr/bin/env bash
# Every role answers hostile or broken requests with a problem+json cause and keeps serving
# (issue 3, item 6): malformed JSON, wrong types, unknown fields, oversized bodies, wrong
# content type, unknown routes and methods, missing client certificates, garbage tokens.
. "$(dirname "$0")/lib/common.bash"
need curl python3

check "lab up" "$mcim" lab up --dir "$lab"
check "lab status" "$mcim" lab status --dir "$lab"
check_refused_text "a lab is already up in $lab" "a second lab up in the same folder is refused" "$mcim" lab up --dir "$lab"

pki="$lab/pki"
ca="$pki/ca/operators-ca.crt"
admin=(--cert "$pki/admin/cert.pem" --key "$pki/admin/key.pem")
vno_cert=(--cert "$pki/vno/cert.pem" --key "$pki/vno/key.pem")
{ printf '{"x":"'; head -c 400000 /dev/zero | tr '\0' 'a'; printf '"}'; } >"$tmp/big.json"

# expect NAME CAUSE STATUS CURL-ARGS...: the answer is problem+json with that cause.
expect() {
  local name=$1 cause=$2 status=$3
  shift 3
  local got
  rm -f "$tmp/body"
  got=$(curl -s -o "$tmp/body" -w '%{http_code} %{content_type}' --cacert "$ca" "$@" || true)
  if [ "${got%% *}" = "$status" ] && [ "${got#* }" = "application/problem+json" ] &&
    grep -q "\"cause\":\"$cause\"" "$tmp/body"; then
    ok "$name -> $status $cause"
  else
    bad "$name: got '$got' $(head -c 300 "$tmp/body"), expected $status $cause"
  fi
}

for role in vno ro pva m2mes sho-a sho-b; do
  url=$(role_url "$role")
  case $role in
  vno | sho-a | sho-b) post=/v1/attach ;;
  ro) post=/v1/drf/discover ;;
  pva) post=/v1/rims ;;
  m2mes) post=/v1/devices ;;
  esac
  j=(-H 'Content-Type: application/json')
  expect "$role unknown route" ROUTE_NOT_FOUND 404 "$url/v1/nothing-here"
  expect "$role wrong method" METHOD_NOT_ALLOWED 405 -X DELETE "$url$post"
  expect "$role malformed JSON" BAD_JSON 400 "${admin[@]}" "${j[@]}" -d '{"pcid":' "$url$post"
  expect "$role duplicate keys" BAD_JSON 400 "${admin[@]}" "${j[@]}" -d '{"a":1,"a":2}' "$url$post"
  expect "$role wrong content type" UNSUPPORTED_MEDIA_TYPE 415 "${admin[@]}" \
    -H 'Content-Type: text/plain' -d '{}' "$url$post"
  expect "$role oversized body" TOO_LARGE 413 "${admin[@]}" "${j[@]}" --data-binary @"$tmp/big.json" "$url$post"
  expect "$role admin trace without certificate" PEER_NOT_AUTHENTICATED 401 \
    "$url/v1/admin/trace/00112233445566778899aabbccddeeff"
  expect "$role admin trace with a role certificate" FORBIDDEN 403 "${vno_cert[@]}" \
    "$url/v1/admin/trace/00112233445566778899aabbccddeeff"
done

vno=$(role_url vno)
ro=$(role_url ro)
pva=$(role_url pva)
m2mes=$(role_url m2mes)
sho=$(role_url sho-a)
j=(-H 'Content-Type: application/json')
expect "vno attach: wrong type" WRONG_TYPE 400 "${j[@]}" -d '{"pcid":5}' "$vno/v1/attach"
expect "vno attach: unknown field" UNKNOWN_FIELD 400 "${j[@]}" -d '{"pcid":"1","evil":1}' "$vno/v1/attach"
expect "vno attach: missing field" FIELD_MISSING 400 "${j[@]}" -d '{}' "$vno/v1/attach"
expect "vno attach: unknown PCID" UNKNOWN_IDENTITY 404 "${j[@]}" -d '{"pcid":"001019999999999"}' "$vno/v1/attach"
expect "vno attach answer: unknown session" WRONG_STATE 409 "${j[@]}" -d '{"res":"0011223344556677"}' "$vno/v1/attach/abc"
expect "vno attach answer: bad hex" BAD_HEX 400 "${j[@]}" -d '{"res":"zz11223344556677"}' "$vno/v1/attach/abc"
expect "ICF without client certificate" PEER_NOT_AUTHENTICATED 401 "${j[@]}" -d '{"pcid":"1"}' "$ro/v1/icf/avs"
expect "ICF AVs for a non-access-network" FORBIDDEN 403 "${admin[@]}" "${j[@]}" -d '{"pcid":"1"}' "$ro/v1/icf/avs"
expect "ICF PCID registration by a non-M2MES" FORBIDDEN 403 "${vno_cert[@]}" "${j[@]}" -d '{}' "$ro/v1/icf/pcids"
expect "DRF discovery without token" NO_ACCESS 401 "${j[@]}" -d '{"txn":"00112233445566778899aabbccddeeff","device":"d"}' "$ro/v1/drf/discover"
expect "DRF discovery with a garbage token" JOSE_MALFORMED 400 -H 'Authorization: Bearer x.y.z' "${j[@]}" \
  -d '{"txn":"00112233445566778899aabbccddeeff","device":"d"}' "$ro/v1/drf/discover"
expect "DPF download without token" NO_ACCESS 401 "${j[@]}" -d '{}' "$ro/v1/dpf/packages/dev1/00112233445566778899aabbccddeeff"
expect "DPF download by GET (the device's request is a POST)" METHOD_NOT_ALLOWED 405 "$ro/v1/dpf/packages/dev1/00112233445566778899aabbccddeeff"
expect "PVA pending without token" NO_ACCESS 401 "${j[@]}" -d '{}' "$pva/v1/validations/pending/dev1/00112233445566778899aabbccddeeff"
expect "PVA pending by GET (the device's request is a POST)" METHOD_NOT_ALLOWED 405 "$pva/v1/validations/pending/dev1/00112233445566778899aabbccddeeff"
expect "M2MES device by a non-admin" FORBIDDEN 403 "${vno_cert[@]}" "${j[@]}" -d '{"device":"x"}' "$m2mes/v1/devices"
expect "SHO order: garbage JWS" JOSE_MALFORMED 400 "${j[@]}" \
  -d '{"txn":"00112233445566778899aabbccddeeff","order":"a.b.c"}' "$sho/v1/orders"
expect "SHO verdict from a non-PVA" FORBIDDEN 403 "${vno_cert[@]}" "${j[@]}" \
  -d '{"txn":"00112233445566778899aabbccddeeff","device":"d","verdict":"x"}' "$sho/v1/verdicts"

# After all that, every role still serves.
check "every role still answers" "$mcim" lab status --dir "$lab"

# A role given a port another role holds does not pass for started: the daemon that answers
# there is sho-a (same CA, so TLS alone cannot tell), and the lab checks the name it gives.
python3 - "$lab" <<'PY'
import json, sys
d = sys.argv[1]
lab = json.load(open(d + "/lab.json"))
a = [r for r in lab["roles"] if r["name"] == "sho-a"][0]
for r in lab["roles"]:
    if r["name"] == "sho-b":
        r["port"], r["url"] = a["port"], a["url"]
json.dump(lab, open(d + "/lab.json", "w"), indent=2)
c = json.load(open(d + "/sho-b/sho-b.json"))
c["listen_port"] = a["port"]
json.dump(c, open(d + "/sho-b/sho-b.json", "w"), indent=2)
PY
check_refused_text "sho-b (sho) exited at start" "sho-b on sho-a's port is not taken for started" \
  "$mcim" lab restart sho-b --dir "$lab"
check "lab down" "$mcim" lab down --dir "$lab"
# after down: exit status 1 (not a usage error, not a crash), and every role stopped
st=0
"$mcim" lab status --json --dir "$lab" >"$tmp/out" 2>"$tmp/err" || st=$?
[ "$st" -eq 1 ] && [ "$(grep -c '"running": false' "$tmp/out")" -eq 6 ] && [ "$(grep -c '"healthy": false' "$tmp/out")" -eq 6 ] &&
  ok "status after down: exit 1, the 6 roles stopped" || bad "status after down: exit $st, $(head -c 400 "$tmp/out") $(head -c 200 "$tmp/err")"
finish
