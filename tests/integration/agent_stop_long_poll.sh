#!/usr/bin/env bash
# The agent's stop ends a long poll it holds (src/device/agent.c: mcim_device_free interrupts
# the worker's call, mcim_http_lite_interrupt), on a real m2me agent and a real DPF: the device
# waits for its package at the DPF (step 13) with Prefer: wait, the DPF holds the request (its
# /metrics: mcim_http_long_polls_held), the package kept from it by a trigger in the RO's
# database (an SHO slow to send its MCIM); then SIGTERM, and the agent must be gone long before
# the hold (30 s, the agent's long_poll and the DPF's) would end on its own. unit/test_lite_interrupt
# tests the client's interrupt alone. Nothing waits on a fixed sleep: every check polls with a
# deadline.
. "$(dirname "$0")/lib/common.bash"

need python3 sqlite3 curl
bg=""
trap cleanup_bg EXIT
hold=30  # seconds: the DPF's long_poll and the agent's
prompt=5 # seconds: the deadline of the agent's exit after SIGTERM (times MCIM_TIME_SCALE)
dev=lp1
# set_json FILE KEY VALUE: one key of a JSON configuration file (VALUE as JSON)
set_json() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
p, k, v = sys.argv[1:]
c = json.load(open(p))
c[k] = json.loads(v)
json.dump(c, open(p, "w"), indent=2)
PY
}
# stage_of DEV: "stage txn state" of the device's latest procedure, from its agent's store
stage_of() { sqlite3 -cmd ".timeout 5000" "$lab/devices/$1/agent.db" \
  "SELECT stage || ' ' || txn || ' ' || state FROM procedures ORDER BY created DESC LIMIT 1" 2>/dev/null || true; }
at_download() { case "$(stage_of "$dev")" in "download "*" running") return 0 ;; *) return 1 ;; esac; }
# held_at ROLE: the role's mcim_http_long_polls_held (its /metrics)
held_at() {
  curl -sS --max-time 5 --cacert "$lab/pki/ca/operators-ca.crt" "$(role_url "$1")/metrics" |
    awk '/^mcim_http_long_polls_held / { n = $2 } END { print n + 0 }'
}
dpf_holds() { [ "$(held_at ro)" -ge 1 ]; }

check "lab up" "$mcim" lab up --dir "$lab"
set_json "$lab/ro/ro.json" long_poll "\"${hold}s\""
check "ro: long_poll ${hold}s" "$mcim" lab restart ro --dir "$lab"
check "manufacture $dev" "$mcim" lab device add "$dev" --dir "$lab"
set_json "$lab/devices/$dev/agent.json" long_poll "$hold"
set_json "$lab/devices/$dev/agent.json" procedure_timeout "$(scaled 300)"
check "$dev: long_poll ${hold}s" "$mcim" lab restart "$dev" --dir "$lab"
[ "$(held_at ro)" = 0 ] && ok "the DPF holds no request yet" || bad "the DPF holds $(held_at ro) requests before the procedure"

# the package kept from the device at the DPF: every package of $dev stored 'held'
hold_packages "$dev"
run_bg "$tmp/run.json" initial "$dev" --sho sho-a
if wait_until 60 at_download; then ok "$dev at the download: $(stage_of "$dev")"
else bad "$dev never at the download (agent store: '$(stage_of "$dev")')"; finish; exit 1; fi
wait_until 20 package_held "$dev" && ok "sho-a's package for $dev at the DPF, kept from it" ||
  bad "sho-a's package for $dev never reached the DPF"
# the proof that the agent's call is held: the DPF counts it (no other client long-polls it)
if wait_until 10 dpf_holds; then ok "the DPF holds $dev's request ($(held_at ro) held)"
else bad "the DPF holds no request of $dev"; finish; exit 1; fi

pid=$(pid_of "$dev")
[ -n "$pid" ] && ! process_gone "$pid" && ok "$dev's agent runs (pid $pid)" || bad "no agent pid for $dev"
t0=$(now_us)
kill -TERM "$pid"
if wait_until "$prompt" process_gone "$pid"; then
  ms=$((($(now_us) - t0) / 1000))
  ok "$dev's agent exited ${ms} ms after SIGTERM, inside a held long poll of ${hold} s"
else
  bad "$dev's agent still runs $(scaled "$prompt") s after SIGTERM (the held call was not interrupted)"
fi
# the request was still held when the agent went: the DPF's hold had not ended on its own
[ "$(held_at ro)" -ge 1 ] && ok "the DPF still holds the request after the stop (its hold had not ended)" ||
  bad "the DPF's hold ended before the stop"
grep -q "signal 15: stopping" "$lab/devices/$dev/agent.log" && ok "$dev's agent logged its stop (SIGTERM)" ||
  bad "$dev's agent did not log its stop: $(tail -n 3 "$lab/devices/$dev/agent.log")"
# the procedure stays for the next start (an interrupted call is retried then)
db_is "$lab/devices/$dev/agent.db" "SELECT state FROM procedures ORDER BY created DESC LIMIT 1" running &&
  ok "the procedure stays running in the agent's store" ||
  bad "the procedure is '$(stage_of "$dev")' after the stop"
finish
