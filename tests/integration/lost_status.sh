#!/usr/bin/env bash
# The answer to the device's install status lost (review of 2026-12-07): the RO takes the
# status (step 14: committed, the report to the SHO in its outbox) and dies before answering,
# and stays down past the device's procedure deadline. The procedure ends TIMEOUT, but the
# installed MCIM stays in the TRE: the RO may have taken the status, as here, and the SHO then
# activates the subscription. Once the RO is back, its report reaches sho-a and the device
# attaches to sho-a with that MCIM. Before, the agent's roll back discarded it: the SHO
# activated a subscription whose MCIM was gone (after a change via the old SHO, the device
# was left with none).
. "$(dirname "$0")/lib/common.bash"
need python3

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture d1" "$mcim" lab device add d1 --dir "$lab"
# a short deadline, so that the procedure ends while the RO is down
python3 - "$lab/devices/d1/agent.json" "$(scaled 15)" <<'PY'
import json, sys
p, t = sys.argv[1], int(sys.argv[2])
c = json.load(open(p))
c["procedure_timeout"] = t
json.dump(c, open(p, "w"), indent=2)
PY
check "d1 restarted with a 15 s procedure deadline" "$mcim" lab restart d1 --dir "$lab"
# the RO dies after committing the status, before its answer
MCIM_CRASHPOINT="ro:POST /v1/dpf/status:before-answer" "$mcim" lab restart ro --dir "$lab" >/dev/null

check_refused TIMEOUT "initial provisioning of d1, the status's answer lost" \
  "$mcim" run initial d1 --sho sho-a --json --timeout "$(scaled 60)" --dir "$lab"
db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM trace WHERE to_name = 'crashpoint'" 1 &&
  ok "the RO died at its answer to the status" || bad "no crashpoint row at the RO"
db_is "$lab/ro/ro.db" "SELECT state FROM dpf_packages WHERE device = 'd1'" installed &&
  ok "the RO had taken the status (package installed)" ||
  bad "the RO's package: $(sql "$lab/ro/ro.db" "SELECT state FROM dpf_packages WHERE device = 'd1'")"

slots() {
  "$mcim" device status d1 --json --dir "$lab" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join("%s:%s" % (m.get("sho"), m.get("state")) for m in s.get("slots", s.get("mcims", []))))'
}
got=$(slots)
case " $got " in
*" sho-a:active "*) ok "the MCIM stays installed in the TRE ($got)" ;;
*) bad "the TRE's MCIMs after the timeout: '$got' (discarded?)" ;;
esac
grep -q "stays installed: its status was sent and not answered" "$lab/devices/d1/agent.log" &&
  ok "the agent says why it kept the MCIM" || bad "no log line of the kept MCIM"

check "RO restarted" "$mcim" lab restart ro --dir "$lab"
attached() { "$mcim" device attach d1 --to sho-a --json --dir "$lab" >"$tmp/att" 2>&1; }
wait_until 60 attached && ok "d1 attaches to sho-a with the kept MCIM, once the RO's report landed" ||
  bad "d1 cannot attach to sho-a: $(head -c 300 "$tmp/att")"
finish
