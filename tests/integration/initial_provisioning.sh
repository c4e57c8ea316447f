#!/usr/bin/env bash
# Initial provisioning end to end on real daemons (issue 3): pristine steps 4-15 with every
# step traced, then `full` access with the new MCIM; a tampered device gets no MCIM; a
# daemon restarted mid-procedure and an agent killed mid-procedure both converge; the RO
# never holds the MCIM in clear; the JSON shapes of DESIGN.md section 8.
# Synchronisation: the agent's own store (agent.db, table procedures: the stage and seed step
# each procedure is at, docs/device.md section 7), polled with deadlines.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl mscgen

# agent_at DEV: "state stage step" of the device's procedure, as its agent's store has it
agent_at() { sql "$lab/devices/$1/agent.db" "SELECT state || ' ' || stage || ' ' || step FROM procedures ORDER BY created DESC, rowid DESC LIMIT 1"; }
at_stage() { [ "$(agent_at "$1")" = "running $2" ]; } # at_stage DEV "STAGE STEP"
# at_or_past DEV STAGE: the procedure is at STAGE, at a later stage of initial provisioning
# or over (too late: polling stops there)
at_or_past() {
  local state stage later
  read -r state stage _ <<<"$(agent_at "$1")"
  later=" ${initial_stages#* "$2" } "
  [ -n "$state" ] && { [ "$state" != running ] || [ "$stage" = "$2" ] || [[ $later == *" $stage "* ]]; }
}
initial_stages=" attach discover nonce quote download install report attach-sho " # docs/device.md
pid_gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; } # (a zombie counts)

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture dev1" "$mcim" lab device add dev1 --dir "$lab"
check "manufacture dev2 (tampered firmware)" "$mcim" lab device add dev2 --tamper --dir "$lab"
check "manufacture dev3" "$mcim" lab device add dev3 --dir "$lab"
check "manufacture dev4" "$mcim" lab device add dev4 --dir "$lab"

# A pristine device has only its PCID credential.
check "status of a pristine device" "$mcim" device status dev1 --json --dir "$lab"
if grep -q '"pcid"' "$tmp/out" && grep -q '"slots": \[\]' "$tmp/out"; then ok "pristine: PCID, no slot"; else bad "pristine status: $(cat "$tmp/out")"; fi
check_refused NOT_FOUND "a pristine device cannot attach to an SHO (no MCIM of it)" "$mcim" device attach dev1 --to sho-a --json --dir "$lab"
check "a pristine device attaches to the VNO" "$mcim" device attach dev1 --to vno --json --dir "$lab"
grep -q '"scope": "restricted"' "$tmp/out" && ok "VNO gives restricted access" || bad "VNO scope: $(cat "$tmp/out")"

# The procedure.
check "run initial dev1 --sho sho-a" "$mcim" run initial dev1 --sho sho-a --json --dir "$lab"
cp "$tmp/out" "$tmp/run1.json"
[ "$(jfield "$tmp/run1.json" result)" = success ] && ok "result success" || bad "result: $(head -c 400 "$tmp/run1.json")"
txid=$(jfield "$tmp/run1.json" txid)
[ ${#txid} -eq 32 ] && ok "txid is 32 hex digits" || bad "txid '$txid'"
steps=$(tr -d ' \n' <"$tmp/run1.json" | grep -o '"n":[0-9]*' | cut -d: -f2 | tr '\n' ' ')
for n in 4 5 6 7 8 9 10 11 12 13 14 15; do
  case " $steps " in *" $n "*) ok "step $n traced" ;; *) bad "step $n missing from: $steps" ;; esac
done
# Steps come in the seed's order: the first occurrence of each of 4..15 is increasing.
first=$(echo "$steps" | tr ' ' '\n' | awk '$1>=4 && !seen[$1]++' | tr '\n' ' ')
# The package request (13) is a poll, traced as sent: it may leave before the SHO's
# authorisation (12) reaches the DRF and be answered once it has, so 13 may be stamped first.
first=$(echo " $first " | sed 's/ 13 12 / 12 13 /; s/^ //; s/ $//')
sorted=$(echo "$first" | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')
[ "$first" = "$sorted" ] && ok "steps in the seed's order ($first)" || { bad "order: $first"; "$mcim" trace "$txid" --format json --dir "$lab" | grep -E "\"(n|from|to|msg|time)\"" | paste - - - - - | head -30; }
for f in from to msg; do
  grep -q "\"$f\"" "$tmp/run1.json" && ok "steps carry \"$f\"" || bad "steps lack $f"
done
grep -q '"msg": "DRF: ' "$tmp/run1.json" && grep -q '"msg": "DPF: ' "$tmp/run1.json" &&
  grep -q '"msg": "ICF: ' "$tmp/run1.json" && ok "the RO functions are named in msg" || bad "RO functions not named"

check "dev1 status after provisioning" "$mcim" device status dev1 --json --dir "$lab"
grep -q '"sho": "sho-a"' "$tmp/out" && grep -q '"state": "active"' "$tmp/out" &&
  grep -q '"imsi": "00102' "$tmp/out" && ok "slot sho-a active with an IMSI of sho-a's PLMN" || bad "status: $(cat "$tmp/out")"
check "attach with the new MCIM" "$mcim" device attach dev1 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "sho-a gives full access" || bad "scope: $(cat "$tmp/out")"
check_refused NOT_FOUND "no MCIM of sho-b" "$mcim" device attach dev1 --to sho-b --json --dir "$lab"

# Charts of the run.
check "trace text" "$mcim" trace "$txid" --format text --dir "$lab"
grep -q "^13) RO -> M2ME" "$tmp/out" && ok "text chart numbered as the seed" || bad "text: $(head -5 "$tmp/out")"
check "trace json" "$mcim" trace "$txid" --format json --dir "$lab"
grep -q '"events"' "$tmp/out" && grep -q '"time"' "$tmp/out" && grep -q '"body"' "$tmp/out" && ok "json events" || bad "json trace"
if grep -qE '"(k|opc|ck|ik|xres)": "[0-9a-f]{8,}' "$tmp/out"; then bad "a secret in the trace"; else ok "no secret in the trace bodies"; fi
check "trace svg (mscgen)" "$mcim" trace "$txid" --format svg -o "$tmp/t.svg" --dir "$lab"
grep -q "<svg" "$tmp/t.svg" && ok "svg rendered" || bad "no svg"

# The RO relays the MCIM without being able to read it (invariant 4): what the SHO handed it
# (step 12, the delivered outbox message) is the SHO-signed package whose content is a JWE;
# no MCIM field appears in clear. Once the install is reported the DPF keeps nothing of it.
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT state || '/' || length(package) FROM dpf_packages WHERE txn='$txid'")" = "installed/0" ] &&
  ok "the DPF deleted the package once the install was reported" || bad "DPF package after the report"
pkg=$(sqlite3 "$lab/sho-a/sho-a.db" "SELECT body FROM outbox WHERE txn='$txid' AND path='/v1/drf/authorisations'" |
  grep -o '"package":"[^"]*"' | cut -d'"' -f4)
payload=$(echo "$pkg" | cut -d. -f2 | tr '_-' '/+')
while [ $((${#payload} % 4)) -ne 0 ]; do payload="$payload="; done
claims=$(echo "$payload" | base64 -d 2>/dev/null || true)
jwe=$(echo "$claims" | grep -o '"jwe":"[^"]*"' | cut -d'"' -f4)
[ "$(echo "$jwe" | tr -cd . | wc -c)" -eq 4 ] && ok "the RO holds a 5-part JWE" || bad "package claims: $claims"
hdr=$(echo "$jwe" | cut -d. -f1 | tr '_-' '/+')
while [ $((${#hdr} % 4)) -ne 0 ]; do hdr="$hdr="; done
echo "$hdr" | base64 -d 2>/dev/null | grep -q '"ECDH-ES"' && ok "sealed with ECDH-ES to the TRE" || bad "JWE header"
if echo "$claims" | grep -qE '"(k|opc|imsi)"'; then bad "MCIM fields in clear in the RO"; else ok "no MCIM field in clear at the RO"; fi
if cat "$lab"/*/*.log | grep -qE '"(k|opc)":"[0-9a-f]{32}"'; then bad "a key in a log"; else ok "no key in any role log"; fi

# Invariant 1 (network side): one active subscription; the DRF knows it.
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT COUNT(*) FROM drf WHERE device='dev1' AND state='subscribed'")" = 1 ] &&
  ok "DRF: dev1 subscribes to exactly one SHO" || bad "DRF entries"
[ "$(sqlite3 "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE device='dev1'")" = active ] &&
  ok "sho-a's AuC: subscription active" || bad "sho-a AuC state"

# A tampered device fails validation and receives no MCIM; the cause says why.
check_refused VALIDATION_FAILED "run initial dev2 (tampered)" "$mcim" run initial dev2 --sho sho-b --json --dir "$lab"
grep -q '"detail": ".*os' "$tmp/out" && ok "the detail names the component" || bad "detail: $(grep detail "$tmp/out")"
check "dev2 status" "$mcim" device status dev2 --json --dir "$lab"
grep -q '"slots": \[\]' "$tmp/out" && ok "dev2 has no MCIM" || bad "dev2 slots: $(cat "$tmp/out")"
[ "$(sqlite3 "$lab/ro/ro.db" "SELECT COUNT(*) FROM dpf_packages WHERE device='dev2'")" = 0 ] &&
  ok "no package was ever made for dev2" || bad "a package for dev2"

# A daemon restarted in the middle: the PVA is down when the procedure starts (the SHO's
# request and the device's polls are retried), and comes back once the device waits for it
# (its store says: stage nonce, step 10).
pva_pid=$(tr -d ' \n' <"$lab/lab.json" | grep -o '"name":"pva","kind":"pva","port":[0-9]*,"url":"[^"]*","pid":[0-9]*' | grep -o '[0-9]*$')
kill "$pva_pid"
wait_until 10 pid_gone "$pva_pid" && ok "the PVA is down" || bad "the PVA (pid $pva_pid) does not stop"
"$mcim" run initial dev3 --sho sho-b --json --dir "$lab" >"$tmp/run3.json" 2>&1 &
runpid=$!
if wait_until 30 at_stage dev3 "nonce 10"; then
  ok "dev3 waits for the PVA at step 10 (agent store: $(agent_at dev3))"
else bad "dev3 never waited at step 10: $(agent_at dev3)"; fi
check "restart the PVA mid-procedure" "$mcim" lab restart pva --dir "$lab"
if wait $runpid; then ok "dev3 provisioned despite the PVA restart"; else bad "dev3: $(head -c 600 "$tmp/run3.json")"; fi

# The device agent killed in the middle, at step 13 (the download): it resumes from its
# store. The package is held at the DPF (a trigger in the RO's database hides it from the
# device, an SHO slow to send its MCIM) so the procedure cannot finish before the crash; the
# agent is killed only once its store says it is at step 13, and the store still says so
# after the kill.
hold_packages dev4
"$mcim" run initial dev4 --sho sho-a --json --dir "$lab" >"$tmp/run4.json" 2>&1 &
runpid=$!
pid4=$(tr -d ' \n' <"$lab/lab.json" | grep -o '"name":"dev4","dir":"[^"]*","model":"[^"]*","tamper":false,"pid":[0-9]*' | grep -o '[0-9]*$')
held4_or_gone() { package_held dev4 || ! at_stage dev4 "download 13"; }
wait_until 30 at_or_past dev4 download || true
if ! at_stage dev4 "download 13"; then
  bad "dev4 not at step 13 when its agent was to be killed (finished first?): $(agent_at dev4)"
elif ! { wait_until 30 held4_or_gone && package_held dev4; }; then
  bad "dev4's package never reached the DPF: $(agent_at dev4)"
else
  # the package is there (held): the agent polls for it, at step 13, and cannot go past it
  kill -9 "$pid4"
  if wait_until 10 pid_gone "$pid4" && at_stage dev4 "download 13"; then
    ok "dev4's agent killed at step 13 (its store: $(agent_at dev4))"
  else bad "dev4's agent not killed at step 13: store $(agent_at dev4)"; fi
fi
check "restart the agent of dev4" "$mcim" lab restart dev4 --dir "$lab"
release_packages dev4
if wait $runpid; then ok "dev4 provisioned despite the agent crash"; else bad "dev4: $(head -c 600 "$tmp/run4.json")"; fi
[ "$(jfield "$tmp/run4.json" result)" = success ] && ok "dev4: result success" || bad "dev4: $(head -c 400 "$tmp/run4.json")"
[ "$(sql "$lab/devices/dev4/agent.db" "SELECT COUNT(*) FROM trace WHERE step = 10 AND to_name = 'pva'")" = 1 ] &&
  ok "dev4 resumed at step 13: its quote (step 10) was sent once" ||
  bad "dev4 redid step 10: $(sql "$lab/devices/dev4/agent.db" "SELECT step, to_name, msg FROM trace WHERE step = 10")"
check "dev4 attaches to sho-a" "$mcim" device attach dev4 --to sho-a --dir "$lab"

check "lab down" "$mcim" lab down --dir "$lab"
finish
