#!/usr/bin/env bash
# A device on a hostile network talks only to the operator it means (issue 8: devices sit on
# hostile networks). Every role's certificate comes from the same operators' CA and, in a lab,
# names the same loopback address, so a server that merely chains to the CA and matches the
# host could be any operator's. Here sho-b sits where the device expects sho-a (its address
# given for sho-a): the device refuses it at the TLS handshake, by the certificate's name,
# and nothing of the device reaches sho-b; pointed back at the real sho-a, it attaches.
. "$(dirname "$0")/lib/common.bash"
need python3

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture d1" "$mcim" lab device add d1 --dir "$lab"
check "initial provisioning of d1 at sho-a" "$mcim" run initial d1 --sho sho-a --json --dir "$lab"

# point_sho_a_at ROLE: the agent's address for sho-a becomes ROLE's; the agent restarts
point_sho_a_at() {
  python3 - "$lab/devices/d1/agent.json" "$lab/lab.json" "$1" <<'PY'
import json, sys
p, labfile, role = sys.argv[1:]
c = json.load(open(p))
url = [r["url"] for r in json.load(open(labfile))["roles"] if r["name"] == role][0]
c["networks"]["sho-a"] = url
json.dump(c, open(p, "w"), indent=2)
PY
  "$mcim" lab restart d1 --dir "$lab" >/dev/null
}
# every request a role answers is logged ("POST /v1/attach -> 403"): none reaches sho-b
attaches_at_sho_b() { grep -c 'POST /v1/attach' "$lab/sho-b/sho-b.log" || true; }

before=$(attaches_at_sho_b)
point_sho_a_at sho-b
check_refused PEER_NOT_AUTHENTICATED "d1 refuses sho-b answering at sho-a's address" \
  "$mcim" device attach d1 --to sho-a --json --dir "$lab"
grep -q "sho-b's, not sho-a's" "$tmp/out" "$tmp/err" &&
  ok "the refusal names both: the certificate is sho-b's, not sho-a's" ||
  bad "refusal detail: $(head -c 300 "$tmp/out") $(head -c 300 "$tmp/err")"
[ "$(attaches_at_sho_b)" = "$before" ] && ok "no attach request of d1 reached sho-b (its IMSI stays unknown there)" ||
  bad "sho-b's attach sessions: $before before, $(attaches_at_sho_b) after"
point_sho_a_at sho-a
check "d1 attaches to the real sho-a" "$mcim" device attach d1 --to sho-a --json --dir "$lab"
finish
