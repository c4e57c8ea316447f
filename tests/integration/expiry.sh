#!/usr/bin/env bash
# Nothing lives forever (issue 8, point 8), on real daemons with lifetimes set short in their
# configuration files: a procedure abandoned after the SHO made its MCIM (the device stops at
# the download, step 13) ends at the SHO with TIMEOUT and its MCIM terminated (no AV can be
# made for it), the DRF's order expires and the DPF drops the package it held (content gone);
# the SHO's late step-12 authorisation for the expired order is refused; unanswered attach
# attempts at the VNO are purged; stored answers go after answer_retention, the records of
# the abandoned procedure (order, AuC entry, DRF order, package, validation, trace) and of a
# subscription that ended (order, AuC entry) after record_retention while a live
# subscription stays. Nothing waits on
# a fixed sleep: every check polls with a deadline.
. "$(dirname "$0")/lib/common.bash"

need python3 sqlite3 curl
sql() { sqlite3 "$1" "$2" 2>/dev/null || true; }
# until_ok DESC TIMEOUT_S 'CONDITION': evaluate the shell CONDITION anew until it holds or
# the deadline passes.
until_ok() {
  if wait_until "$2" eval "$3"; then ok "$1"; else bad "$1 (not within $2 s)"; fi
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
# stage_of DEV: "stage txn state" of the device's procedure, read from its agent's store (the
# control socket's status can answer late, while the agent is busy)
stage_of() { sqlite3 -cmd ".timeout 5000" "$lab/devices/$1/agent.db" \
  "SELECT stage || ' ' || txn || ' ' || state FROM procedures ORDER BY created DESC LIMIT 1" 2>/dev/null || true; }

check "lab up" "$mcim" lab up --dir "$lab"
set_cfg ro order_lifetime 20s
set_cfg ro answer_retention 24s
set_cfg sho-a order_lifetime 20s
set_cfg vno attach_lifetime 2s
# (20 s, not less: everything up to the agent's stop at the download must fit in it on a
# loaded machine; seen at load 27 with 10 s: the order expired while the package was still
# held, so the DPF never dropped it)
for r in ro sho-a vno; do check "restart $r with short lifetimes" "$mcim" lab restart "$r" --dir "$lab"; done

# --- an initial provisioning abandoned at the download (step 13) ---
# The package is held at the DPF (a trigger in the RO's database keeps it from the device: an
# SHO slow to send its MCIM) until the agent's store says it is at the download; then the
# agent is stopped (SIGSTOP) and the package let go: the device never comes for it.
dev=ex1
check "manufacture $dev" "$mcim" lab device add "$dev" --dir "$lab"
# A device that polls: one stopped while the DPF held its long poll would be handed the package
# when that hold ends (legitimately, the order still alive), not the device that never came
# back this part is about.
sed -i 's/"procedure_timeout"/"long_poll": 0, "procedure_timeout"/' "$lab/devices/$dev/agent.json"
check "$dev polls (long_poll 0)" "$mcim" lab restart "$dev" --dir "$lab"
hold_packages "$dev"
"$mcim" run initial "$dev" --sho sho-a --json --dir "$lab" >"$tmp/run-$dev.json" 2>&1 &
runpid=$!
st=""
at_download_or_past() {
  st=$(stage_of "$dev")
  case "$st" in download*|install*|report*|attach-sho*|*done|*failed) return 0 ;; *) return 1 ;; esac
}
wait_until 30 at_download_or_past || true # where it got to decides, below
case "$st" in
  "download "*" running") ;;
  *) bad "$dev did not wait at the download (agent store: '$st')"; finish; exit 1 ;;
esac
txn=$(echo "$st" | cut -d' ' -f2)
wait_until 10 package_held "$dev" || bad "sho-a's package for $dev never reached the DPF"
kill -STOP "$(agent_pid "$dev")"
release_packages "$dev"
[ "$(stage_of "$dev")" = "download $txn running" ] && ok "$dev stopped at the download (txn $txn)" ||
  bad "$dev not stopped at the download: $(stage_of "$dev")"
abandoned=$dev
sho_db="$lab/sho-a/sho-a.db"
ro_db="$lab/ro/ro.db"
# what the stores say about the abandoned procedure
order_at_sho() { sql "$sho_db" "SELECT o.state || '/' || COALESCE(o.cause, a.state) FROM orders o JOIN auc a ON a.imsi = o.imsi WHERE o.txn = '$txn'"; }
package_at_dpf() { sql "$ro_db" "SELECT state FROM dpf_packages WHERE txn = '$txn'"; }
order_at_drf() { sql "$ro_db" "SELECT state FROM drf_orders WHERE txn = '$txn'"; }
until_ok "sho-a made the MCIM (order provisioning, AuC pending)" 20 '[ "$(order_at_sho)" = provisioning/pending ]'
until_ok "the DPF holds the package" 10 '[ "$(package_at_dpf)" = ready ]'
until_ok "sho-a: the abandoned order failed with TIMEOUT" 45 '[ "$(order_at_sho)" = failed/TIMEOUT ]'
imsi=$(sql "$sho_db" "SELECT imsi FROM orders WHERE txn='$txn'")
[ "$(sql "$sho_db" "SELECT state FROM auc WHERE imsi='$imsi'")" = terminated ] &&
  ok "sho-a: its never-activated MCIM is terminated" || bad "AuC state of $imsi: $(sql "$sho_db" "SELECT state FROM auc WHERE imsi='$imsi'")"
until_ok "DRF: the order expired" 45 '[ "$(order_at_drf)" = expired ]'
[ "$(sql "$ro_db" "SELECT state || '/' || length(package) FROM dpf_packages WHERE txn='$txn'")" = "abandoned/0" ] &&
  ok "DPF: the package is dropped (abandoned, no content kept)" || bad "package: $(sql "$ro_db" "SELECT state, length(package) FROM dpf_packages WHERE txn='$txn'")"
# The device comes back: nothing is there for it any more, and its PCID still works.
kill -CONT "$(agent_pid "$abandoned")"
kill "$runpid" 2>/dev/null || true
check "$abandoned still attaches to the VNO with its PCID" "$mcim" device attach "$abandoned" --to vno --json --dir "$lab"
grep -q '"scope": "restricted"' "$tmp/out" && ok "restricted access with the PCID" || bad "attach: $(cat "$tmp/out")"
check_refused NOT_FOUND "$abandoned cannot attach to sho-a (the abandoned MCIM never reached its TRE)" "$mcim" device attach "$abandoned" --to sho-a --json --dir "$lab"
got=$(curl -s -o "$tmp/body" -w '%{http_code}' --cacert "$lab/pki/ca/operators-ca.crt" -H 'Content-Type: application/json' \
  -d "{\"imsi\":\"$imsi\"}" "$(role_url sho-a)/v1/attach" || true)
[ "$got" = 403 ] && grep -q '"cause":"SUBSCRIPTION_TERMINATED"' "$tmp/body" &&
  ok "sho-a refuses an attach with the abandoned IMSI: 403 SUBSCRIPTION_TERMINATED" ||
  bad "attach at sho-a with the abandoned IMSI $imsi: $got $(head -c 300 "$tmp/body")"

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
until_ok "RO: answers of the expired procedure purged after answer_retention" 50 '[ "$(answers_kept)" = 0 ]'

# --- the SHO's step-12 authorisation for the expired order, sent again (as sho-a sent it,
# with sho-a's certificate) once the RO's stored answer is gone: refused, no order ---
body=$(sql "$sho_db" "SELECT body FROM outbox WHERE txn='$txn' AND path='/v1/drf/authorisations'")
[ -n "$body" ] && ok "sho-a's step-12 authorisation of the abandoned procedure (its outbox)" || bad "no step-12 authorisation in sho-a's outbox"
got=$(printf '%s' "$body" | curl -s -o "$tmp/body" -w '%{http_code}' --cacert "$lab/pki/ca/operators-ca.crt" \
  --cert "$lab/pki/sho-a/cert.pem" --key "$lab/pki/sho-a/key.pem" -H 'Content-Type: application/json' \
  --data-binary @- "$(role_url ro)/v1/drf/authorisations" || true)
[ "$got" = 404 ] && grep -q '"cause":"NOT_ORDERED"' "$tmp/body" &&
  ok "RO: a late step-12 authorisation for the expired order is refused: 404 NOT_ORDERED" ||
  bad "late step-12 authorisation: $got $(head -c 300 "$tmp/body")"
[ "$(sql "$ro_db" "SELECT state || '/' || length(package) FROM dpf_packages WHERE txn='$txn'")" = "abandoned/0" ] &&
  ok "DPF: still nothing kept for the expired order" || bad "package after the late authorisation: $(sql "$ro_db" "SELECT state, length(package) FROM dpf_packages WHERE txn='$txn'")"

# --- records of finished procedures are deleted after record_retention; a live subscription
# stays ---
live=ex2
check "manufacture $live" "$mcim" lab device add "$live" --dir "$lab"
check "initial provisioning of $live at sho-a" "$mcim" run initial "$live" --sho sho-a --json --dir "$lab"
pva_db="$lab/pva/pva.db"
[ "$(sql "$pva_db" "SELECT COUNT(*) FROM validations WHERE txn='$txn'")" = 1 ] &&
  ok "PVA: the abandoned procedure's validation is on record" || bad "PVA validations of $txn: $(sql "$pva_db" "SELECT COUNT(*) FROM validations WHERE txn='$txn'")"
# a subscription that ended: gone's at sho-a, released by a change to sho-b
gone=ex3
check "manufacture $gone" "$mcim" lab device add "$gone" --dir "$lab"
check "initial provisioning of $gone at sho-a" "$mcim" run initial "$gone" --sho sho-a --json --dir "$lab"
gone_imsi=$(sql "$sho_db" "SELECT imsi FROM orders WHERE device='$gone' AND state='active'")
check "change of $gone to sho-b via sho-a" "$mcim" run change "$gone" --to sho-b --via old-sho --json --dir "$lab"
[ "$(sql "$sho_db" "SELECT o.state || '/' || a.state FROM orders o JOIN auc a ON a.imsi = o.imsi WHERE o.imsi='$gone_imsi'")" = released/terminated ] &&
  ok "sho-a: $gone's ended subscription is on record (released, terminated)" || bad "$gone at sho-a: $(sql "$sho_db" "SELECT o.state, a.state FROM orders o JOIN auc a ON a.imsi = o.imsi WHERE o.device='$gone'")"
for r in ro sho-a pva; do set_cfg "$r" record_retention 2s; done
for r in ro sho-a pva; do check "restart $r with record_retention 2s" "$mcim" lab restart "$r" --dir "$lab"; done
rows() { sql "$1" "$2"; }
until_ok "sho-a: the failed order and its never-activated AuC entry deleted" 20 \
  '[ "$(rows "$sho_db" "SELECT COUNT(*) FROM orders WHERE txn='"'"'$txn'"'"'")/$(rows "$sho_db" "SELECT COUNT(*) FROM auc WHERE imsi='"'"'$imsi'"'"'")" = 0/0 ]'
until_ok "sho-a: $gone's released order and terminated AuC entry (K, OPc) deleted" 20 \
  '[ "$(rows "$sho_db" "SELECT COUNT(*) FROM orders WHERE imsi='"'"'$gone_imsi'"'"'")/$(rows "$sho_db" "SELECT COUNT(*) FROM auc WHERE imsi='"'"'$gone_imsi'"'"'")" = 0/0 ]'
until_ok "RO: the expired DRF order and the abandoned DPF package deleted" 20 \
  '[ "$(rows "$ro_db" "SELECT COUNT(*) FROM drf_orders WHERE txn='"'"'$txn'"'"'")/$(rows "$ro_db" "SELECT COUNT(*) FROM dpf_packages WHERE txn='"'"'$txn'"'"'")" = 0/0 ]'
until_ok "PVA: the finished validation deleted" 20 \
  '[ "$(rows "$pva_db" "SELECT COUNT(*) FROM validations WHERE txn='"'"'$txn'"'"'")" = 0 ]'
until_ok "the trace of the abandoned procedure deleted at sho-a, the RO and the PVA" 20 \
  '[ "$(rows "$sho_db" "SELECT COUNT(*) FROM trace WHERE txn='"'"'$txn'"'"'")$(rows "$ro_db" "SELECT COUNT(*) FROM trace WHERE txn='"'"'$txn'"'"'")$(rows "$pva_db" "SELECT COUNT(*) FROM trace WHERE txn='"'"'$txn'"'"'")" = 000 ]'
[ "$(sql "$sho_db" "SELECT o.state || '/' || a.state FROM orders o JOIN auc a ON a.imsi = o.imsi WHERE o.device='$live'")" = active/active ] &&
  ok "sho-a: $live's active order and AuC entry stay" || bad "$live at sho-a: $(sql "$sho_db" "SELECT o.state, a.state FROM orders o JOIN auc a ON a.imsi = o.imsi WHERE o.device='$live'")"
[ "$(sql "$ro_db" "SELECT state FROM drf WHERE device='$live'")" = subscribed ] &&
  ok "DRF: $live's registry entry stays" || bad "DRF entry of $live: $(sql "$ro_db" "SELECT sho, state FROM drf WHERE device='$live'")"
check "$live still attaches to sho-a" "$mcim" device attach "$live" --to sho-a --json --dir "$lab"
finish
