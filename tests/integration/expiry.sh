#!/usr/bin/env bash
# Nothing lives forever (issue 8, point 8), on real daemons with lifetimes set short in their
# configuration files: a procedure abandoned after the SHO made its MCIM (the device stops at
# the download, step 13) ends at the SHO with TIMEOUT and its MCIM terminated (no AV can be
# made for it), the DRF's order expires and the DPF drops the package it held (content gone);
# the SHO's late step-12 authorisation for the expired order is refused; unanswered attach
# attempts at the VNO are purged; stored answers go after answer_retention. Nothing waits on
# a fixed sleep: every check polls with a deadline.
. "$(dirname "$0")/lib/common.bash"

for t in python3 sqlite3 curl; do
  command -v "$t" >/dev/null || { bad "$t is missing (scripts/deps.sh installs it)"; finish; exit 1; }
done
sql() { sqlite3 "$1" "$2" 2>/dev/null || true; }
# until_ok DESC TIMEOUT_S 'CONDITION': evaluate the shell CONDITION anew every 0.1 s until it
# holds or the deadline passes.
until_ok() {
  local desc=$1 t=$2 cond=$3 end
  end=$(($(date +%s) + t))
  while [ "$(date +%s)" -le "$end" ]; do
    if eval "$cond"; then ok "$desc"; return 0; fi
    sleep 0.1
  done
  bad "$desc (not within ${t}s)"
}
# set_cfg ROLE KEY VALUE: one key of a role's configuration file.
set_cfg() {
  python3 - "$lab/$1/$1.json" "$2" "$3" <<'PY'
import json, sys
p, k, v = sys.argv[1:]
c = json.load(open(p))
c[k] = v
json.dump(c, open(p, "w"), indent=2)
PY
}
agent_pid() {
  python3 -c 'import json,sys; print([d["pid"] for d in json.load(open(sys.argv[1]))["devices"] if d["name"]==sys.argv[2]][0])' "$lab/lab.json" "$1"
}
set_agent() { # set_agent DEV KEY VALUE (integer)
  python3 - "$lab/devices/$1/agent.json" "$2" "$3" <<'PY'
import json, sys
p, k, v = sys.argv[1:]
c = json.load(open(p))
c[k] = int(v)
json.dump(c, open(p, "w"), indent=2)
PY
}
stage_of() { curl -s --unix-socket "$lab/devices/$1/control.sock" http://localhost/v1/status |
  python3 -c 'import json,sys; p=json.load(sys.stdin).get("procedure") or {}; print(p.get("stage",""), p.get("txn",""), p.get("state",""))'; }

check "lab up" "$mcim" lab up --dir "$lab"
set_cfg ro order_lifetime 10s
set_cfg ro answer_retention 12s
set_cfg sho-a order_lifetime 10s
set_cfg vno attach_lifetime 2s
for r in ro sho-a vno; do check "restart $r with short lifetimes" "$mcim" lab restart "$r" --dir "$lab"; done

# --- an initial provisioning abandoned at the download (step 13) ---
# The agent polls slowly (2 s) so it can be stopped between entering `download` (its first
# poll there comes before the package) and its next poll; if it raced through anyway, the
# scenario is played again with a new device.
abandoned=""
for dev in ex1 ex2; do
  check "manufacture $dev" "$mcim" lab device add "$dev" --dir "$lab"
  set_agent "$dev" poll_ms 2000
  "$mcim" lab restart "$dev" --dir "$lab" >/dev/null
  "$mcim" run initial "$dev" --sho sho-a --json --dir "$lab" >"$tmp/run-$dev.json" 2>&1 &
  runpid=$!
  end=$(($(date +%s) + 30))
  st=""
  while [ "$(date +%s)" -le "$end" ]; do
    st=$(stage_of "$dev")
    case "$st" in download*|install*|report*|attach-sho*|*done|*failed) break ;; esac
    sleep 0.02
  done
  case "$st" in
    download*) kill -STOP "$(agent_pid "$dev")"; txn=$(echo "$st" | cut -d' ' -f2); abandoned=$dev; break ;;
    *) echo "   $dev went past the download before it could be stopped ($st): again"
       kill "$runpid" 2>/dev/null || true ;;
  esac
done
if [ -z "$abandoned" ]; then bad "could not stop a device at the download"; finish; exit 1; fi
ok "$abandoned stopped at the download (txn $txn)"
sho_db="$lab/sho-a/sho-a.db"
ro_db="$lab/ro/ro.db"
# what the stores say about the abandoned procedure
order_at_sho() { sql "$sho_db" "SELECT o.state || '/' || COALESCE(o.cause, a.state) FROM orders o JOIN auc a ON a.imsi = o.imsi WHERE o.txn = '$txn'"; }
package_at_dpf() { sql "$ro_db" "SELECT state FROM dpf_packages WHERE txn = '$txn'"; }
order_at_drf() { sql "$ro_db" "SELECT state FROM drf_orders WHERE txn = '$txn'"; }
until_ok "sho-a made the MCIM (order provisioning, AuC pending)" 10 '[ "$(order_at_sho)" = provisioning/pending ]'
until_ok "the DPF holds the package" 10 '[ "$(package_at_dpf)" = ready ]'
until_ok "sho-a: the abandoned order failed with TIMEOUT" 25 '[ "$(order_at_sho)" = failed/TIMEOUT ]'
imsi=$(sql "$sho_db" "SELECT imsi FROM orders WHERE txn='$txn'")
[ "$(sql "$sho_db" "SELECT state FROM auc WHERE imsi='$imsi'")" = terminated ] &&
  ok "sho-a: its never-activated MCIM is terminated" || bad "AuC state of $imsi: $(sql "$sho_db" "SELECT state FROM auc WHERE imsi='$imsi'")"
until_ok "DRF: the order expired" 25 '[ "$(order_at_drf)" = expired ]'
[ "$(sql "$ro_db" "SELECT state || '/' || length(package) FROM dpf_packages WHERE txn='$txn'")" = "abandoned/0" ] &&
  ok "DPF: the package is dropped (abandoned, no content kept)" || bad "package: $(sql "$ro_db" "SELECT state, length(package) FROM dpf_packages WHERE txn='$txn'")"
# The device comes back: nothing is there for it any more, and its PCID still works.
kill -CONT "$(agent_pid "$abandoned")"
kill "$runpid" 2>/dev/null || true
check "$abandoned still attaches to the VNO with its PCID" "$mcim" device attach "$abandoned" --to vno --json --dir "$lab"
grep -q '"scope": "restricted"' "$tmp/out" && ok "restricted access with the PCID" || bad "attach: $(cat "$tmp/out")"
check_fails "$abandoned cannot attach to sho-a with the abandoned MCIM" "$mcim" device attach "$abandoned" --to sho-a --dir "$lab"

# --- unanswered attach attempts do not stay ---
pcid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pcid"])' "$lab/devices/$abandoned/params.json")
vno=$(role_url vno)
for i in 1 2 3; do
  curl -s --cacert "$lab/pki/ca/operators-ca.crt" -H 'Content-Type: application/json' \
    -d "{\"pcid\":\"$pcid\"}" "$vno/v1/attach" >/dev/null || true
done
n=$(sql "$lab/vno/vno.db" "SELECT COUNT(*) FROM attach WHERE state = 'challenged'")
[ "${n:-0}" -ge 3 ] && ok "3 unanswered attach attempts recorded ($n challenged)" || bad "attach attempts: $n"
challenged() { sql "$lab/vno/vno.db" "SELECT COUNT(*) FROM attach WHERE state = 'challenged'"; }
until_ok "VNO: unanswered attach sessions purged after attach_lifetime" 15 '[ "$(challenged)" = 0 ]'

# --- stored answers go after answer_retention ---
answers_kept() { sql "$ro_db" "SELECT COUNT(*) FROM answers WHERE txn = '$txn'"; }
until_ok "RO: answers of the expired procedure purged after answer_retention" 30 '[ "$(answers_kept)" = 0 ]'
finish
