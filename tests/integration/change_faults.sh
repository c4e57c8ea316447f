#!/usr/bin/env bash
# Failure paths of a change of subscription on real daemons (issue 4): every role a real
# mcimd, every device a real m2me agent; faults are injected from outside (SIGSTOP of a
# daemon, a modified firmware image, a package altered in the RO's database, restarts), never
# by mocking our components. After each case the invariants of DESIGN.md section 4 are
# checked (one active subscription on the network side, at most one active MCIM in the TRE,
# the PCID credential kept, nothing half done), and so is each SHO's privacy: neither keeps
# the other's name or IMSIs (issue 8, point 5), whatever failed.
#  a. the old SHO unreachable at step 9: past the device's acknowledgement deadline the RO
#     takes the TRE-signed discard receipt in its place, the new SHO activates, and the old
#     SHO learns it when it comes back (the RO's outbox); then a pristine change back, whose
#     deferred notice reaches the other SHO through the RO's relay;
#     a2: the old SHO up but refusing the receipt (hostile): the same, it cannot veto;
#  b. a negative PVA verdict at step 4 (firmware modified after provisioning);
#  c. a tampered package at step 7, and replayed packages (an installed one, another txn's);
#  d. restarts of the PVA, the RO, the new SHO, the old SHO and the agent mid-change.
#
# Synchronisation: the agent's stage (GET /v1/status on its control socket) and, where a
# fixed point in the procedure is needed, a hold: a trigger in the RO's (or PVA's) SQLite
# database keeps a freshly stored package (or validation request) out of the device's
# reach until the test lets it go. To the device this is an SHO that is slow to send its
# MCIM, a situation the protocol must handle anyway; the daemons' code is untouched.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl ss

bg="" # background `mcim run` we started
on_exit() {
  for p in $bg; do kill "$p" 2>/dev/null || true; done
  cleanup
}
trap on_exit EXIT

ctl() { # ctl DEV PATH: GET on the agent's control socket
  curl -s --max-time "$(scaled 5)" --unix-socket "$lab/devices/$1/control.sock" "http://localhost$2"
}
proc_view() { ctl "$1" /v1/status | tr -d '\n' | grep -o '"procedure":{[^}]*}' || true; }
running_at() { # running_at DEV STAGE-REGEX: the current procedure runs at that stage
  local v; v=$(proc_view "$1")
  echo "$v" | grep -q '"state":"running"' && echo "$v" | grep -Eq "\"stage\":\"($2)\""
}

# Holds (hold_packages, hold_validations and their release: lib/common.bash).

# proc_field DEV TXN FIELD: a field of GET /v1/procedures/{txn} (numbers and strings)
proc_field() {
  ctl "$1" "/v1/procedures/$2" | tr -d '\n' | grep -o "\"$3\": *[^,}]*" | head -n1 |
    sed 's/^[^:]*: *//; s/^"//; s/"$//'
}
tre_status() { "$mcim" device status "$1" --json --dir "$lab"; }
active_imsi() { sql "$lab/$2/$2.db" "SELECT imsi FROM auc WHERE device='$1' AND state='active'"; }

# invariants DEV LABEL: DESIGN.md section 4 after a procedure ended
invariants() {
  local dev=$1 label=$2 active=0 n tre
  for s in sho-a sho-b; do
    n=$(sql "$lab/$s/$s.db" "SELECT COUNT(*) FROM auc WHERE device='$dev' AND state='active'")
    active=$((active + n))
  done
  [ "$active" -le 1 ] && ok "$label: at most one active subscription at the SHOs ($active)" ||
    bad "$label: $active active subscriptions"
  n=$(sql "$lab/ro/ro.db" "SELECT COUNT(*) FROM drf WHERE device='$dev' AND state='subscribed'")
  [ "$n" -le 1 ] && ok "$label: at most one DRF subscription ($n)" || bad "$label: $n DRF subscriptions"
  tre_status "$dev" >"$tmp/inv.json"
  tre=$(grep -c '"state": "active"' "$tmp/inv.json" || true)
  [ "$tre" -le 1 ] && ok "$label: at most one active MCIM in the TRE ($tre)" || bad "$label: $tre active slots"
  grep -q '"pcid": {' "$tmp/inv.json" && ok "$label: PCID credential kept" || bad "$label: no PCID"
  # the old SHO's session is kept in agent.db only between steps 8 and 11 (and only while
  # a procedure runs): none left once it ended
  if sql "$lab/devices/$dev/agent.db" "SELECT data FROM procedures" | grep -q saved_token; then
    bad "$label: a saved access token left in agent.db"
  else ok "$label: no access token left at rest"; fi
}
# outbox_empty: every role has delivered what it queued (reports, relays, registrations)
outbox_empty() {
  local s
  for s in ro pva sho-a sho-b; do
    db_is "$lab/$s/$s.db" "SELECT COUNT(*) FROM outbox WHERE state='pending'" 0 || return 1
  done
}

# drained: every outbox delivers what it queued, within 20 s (before the invariants are read)
drained() {
  wait_until 20 outbox_empty || bad "outboxes not drained in 20 s: $(for s in ro pva sho-a sho-b; do
    echo "$s: $(sql "$lab/$s/$s.db" "SELECT peer || ' ' || path || ' ' || attempts FROM outbox WHERE state='pending'" | tr '\n' ';')"; done)"
}

# MCIM_FT_SECTIONS=bd runs only those sections (default: all)
sections=${MCIM_FT_SECTIONS:-abcd}
want() { case "$sections" in *"$1"*) return 0 ;; *) return 1 ;; esac; }

check "lab up" "$mcim" lab up --dir "$lab"
for d in fa fb fc fd; do
  want "$(echo "$d" | cut -c2)" || continue
  check "manufacture $d" "$mcim" lab device add "$d" --dir "$lab"
  check "initial provisioning of $d with sho-a" "$mcim" run initial "$d" --sho sho-a --json --dir "$lab"
done

# ---------------------------------------------------------------------------------------
# a. The old SHO unreachable at step 9 (issue 8, point 7: no veto by a dead old SHO)
# ---------------------------------------------------------------------------------------
if want a; then
echo "# a. old SHO unreachable at step 9"
sed -i "s/\"procedure_timeout\": *[0-9]*/\"procedure_timeout\": $(scaled 60)/" "$lab/devices/fa/agent.json"
grep -q '"ack_deadline"' "$lab/devices/fa/agent.json" ||
  sed -i 's/"procedure_timeout"/"ack_deadline": 3, "procedure_timeout"/' "$lab/devices/fa/agent.json"
check "fa: acknowledgement deadline 3 s, agent restarted" "$mcim" lab restart fa --dir "$lab"
imsi_a=$(active_imsi fa sho-a)
hold_packages fa
run_bg "$tmp/a1.json" change fa --to sho-b --via old-sho
# sho-a is paused once the device waits at the DPF for its package (step 7): by then the
# PVA has checked the device's sho-a token (step 4) and the RO has answered a download poll
# made with it (the RO has known sho-a's certificate since it verified sho-a's package at
# initial provisioning), so both hold sho-a's certificate in their cache and need nothing
# more from sho-a. The device still holds its sho-a session in memory, so step 8 goes
# through; the first message that needs sho-a itself is the receipt of step 9. (Paused any
# earlier, the PVA could not check the token at step 4; the hold guarantees it is not later.)
if wait_until 60 package_held fa && wait_until 30 running_at fa download; then
  ok "fa waits at step 7, its package held at the DPF"
else bad "fa never reached step 7: $(proc_view fa)"; fi
pause sho-a
release_packages fa
# Past the deadline the RO takes the TRE-signed discard receipt in place of sho-a's
# acknowledgement: the change completes, sho-b activates.
if run_wait; then ok "a: the change succeeded with sho-a down"; else bad "a: the change failed: $(head -c 600 "$tmp/a1.json")"; fi
txn_a1=$(jfield "$tmp/a1.json" txid)
[ "$(jfield "$tmp/a1.json" result)" = success ] && ok "a: result success" || bad "a: result $(jfield "$tmp/a1.json" result)"
tr -d ' \n' <"$tmp/a1.json" | grep -q '"n":11,"from":"fa","to":"ro","msg":"DPF:theTRE-signeddiscardreceipt' &&
  ok "a: step 11 with the TRE-signed receipt (no acknowledgement by the deadline)" || bad "a: no receipt at step 11 in the trace"
wait_until 20 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_a1'" active &&
  ok "a: sho-b's order active" || bad "a: sho-b order $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_a1'")"
db_is "$lab/sho-b/sho-b.db" "SELECT released FROM orders WHERE txn='$txn_a1'" 1 &&
  ok "a: sho-b got the (privacy-filtered) release from the RO" || bad "a: sho-b's order not released"
db_is "$lab/ro/ro.db" "SELECT sho FROM drf WHERE device='fa' AND state='subscribed' AND sho='sho-b'" sho-b &&
  ok "a: the DRF points to sho-b" || bad "a: DRF $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='fa'")"
db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE peer='sho-a' AND path='/v1/discards' AND txn='$txn_a1' AND state='pending'" 1 &&
  ok "a: the receipt waits in the RO's outbox for sho-a" || bad "a: RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, path, state, attempts FROM outbox WHERE txn='$txn_a1'")"
tre_status fa >"$tmp/a1st.json"
tr -d ' \n' <"$tmp/a1st.json" | grep -q '"pending":\[\]' && ok "a: nothing left queued in the TRE (the RO has the receipt)" ||
  bad "a: pending: $(grep -A6 '"pending"' "$tmp/a1st.json")"
check "a: fa attaches to sho-b (full)" "$mcim" device attach fa --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "a: full access at sho-b" || bad "a: $(cat "$tmp/out")"
# sho-a was down the whole time: it comes back (killed and restarted) and learns it
kill -KILL "$(pid_of sho-a)" && resume sho-a
check "a: sho-a restarted" "$mcim" lab restart sho-a --dir "$lab"
wait_until 120 db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" terminated &&
  ok "a: sho-a learnt it on restart: old IMSI terminated" ||
  bad "a: sho-a still has $imsi_a as $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
wait_until 20 db_is "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='fa' AND sho='sho-a'" released &&
  ok "a: and released its DRF entry" || bad "a: DRF $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='fa'")"
check_refused NOT_FOUND "a: fa no longer attaches to sho-a (no MCIM of it in the TRE)" "$mcim" device attach fa --to sho-a --json --dir "$lab"
drained
invariants fa "a (sho-a back)"

# and the way back via pristine: sho-b is told through the RO's relay
imsi_ab=$(active_imsi fa sho-b)
check "a: change fa back to sho-a via pristine" "$mcim" run change fa --to sho-a --via pristine --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "a: pristine change succeeded" || bad "a: $(head -c 400 "$tmp/out")"
wait_until 30 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE imsi='$imsi_ab'" terminated &&
  ok "a: the deferred notice reached sho-b (relayed): $imsi_ab terminated" ||
  bad "a: sho-b still has $imsi_ab as $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM auc WHERE imsi='$imsi_ab'")"
tre_status fa >"$tmp/a2st.json"
grep -q '"pending": \[\]' "$tmp/a2st.json" && ok "a: no notice left queued" || bad "a: pending: $(grep -A6 '"pending"' "$tmp/a2st.json")"
check "a: fa attaches to sho-a" "$mcim" device attach fa --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "a: full access at sho-a" || bad "a: $(cat "$tmp/out")"
check_refused NOT_FOUND "a: fa no longer attaches to sho-b (no MCIM of it in the TRE)" "$mcim" device attach fa --to sho-b --json --dir "$lab"
drained
invariants fa "a (after the pristine change)"
privacy "a (old SHO down, then back)"

# a2. A hostile old SHO: up and answering, but it refuses the receipt (a trigger in its
# database aborts the termination of fa's subscription: its discard handler answers 409, to
# the device at step 9 and to the RO's relay after). It cannot veto: past the deadline the
# RO takes the receipt, sho-b activates. sho-a's own books keep the old subscription
# `active` (its refusal), but no credential for it exists: the TRE destroyed it at step 8.
echo "# a2. old SHO up but refusing the receipt"
imsi_h=$(active_imsi fa sho-a)
sql "$lab/sho-a/sho-a.db" "CREATE TRIGGER hostile_fa BEFORE UPDATE OF state ON auc
  WHEN NEW.device = 'fa' AND NEW.state <> 'active' BEGIN SELECT RAISE(ABORT, 'hostile'); END;"
run_bg "$tmp/a3.json" change fa --to sho-b --via old-sho
if run_wait; then ok "a2: the change succeeded with sho-a refusing"; else bad "a2: the change failed: $(head -c 600 "$tmp/a3.json")"; fi
txn_h=$(jfield "$tmp/a3.json" txid)
tr -d ' \n' <"$tmp/a3.json" | grep -q '"n":9,"from":"fa","to":"sho-a","msg":"discardreceipt[^}]*"cause":"CONFLICT"' &&
  ok "a2: sho-a refused the receipt at step 9 (CONFLICT, traced by the device)" || bad "a2: no refused receipt at step 9 in the trace"
tr -d ' \n' <"$tmp/a3.json" | grep -q '"n":11,"from":"fa","to":"ro","msg":"DPF:theTRE-signeddiscardreceipt' &&
  ok "a2: step 11 with the TRE-signed receipt" || bad "a2: no receipt at step 11 in the trace"
wait_until 20 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_h'" active &&
  ok "a2: sho-b's order active" || bad "a2: sho-b order $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_h'")"
check "a2: fa attaches to sho-b (full)" "$mcim" device attach fa --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "a2: full access at sho-b" || bad "a2: $(cat "$tmp/out")"
check_refused NOT_FOUND "a2: fa cannot attach to sho-a (no MCIM of it in the TRE)" "$mcim" device attach fa --to sho-a --json --dir "$lab"
db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_h'" active &&
  ok "a2: sho-a's books still say active (its own refusal; the credential is gone)" ||
  bad "a2: sho-a has $imsi_h as $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_h'")"
drained
sql "$lab/sho-a/sho-a.db" "DROP TRIGGER hostile_fa;"
privacy "a2 (hostile old SHO)"

fi

# ---------------------------------------------------------------------------------------
# b. A negative PVA verdict at step 4: the firmware changed after provisioning
# ---------------------------------------------------------------------------------------
if want b; then
echo "# b. PVA verdict negative at step 4"
imsi_b=$(active_imsi fb sho-a)
cp "$lab/devices/fb/firmware/os.img" "$tmp/os.img.orig"
printf 'implant\n' >>"$lab/devices/fb/firmware/os.img"
check "b: fb's os image modified, agent restarted (measured boot)" "$mcim" lab restart fb --dir "$lab"
check_refused VALIDATION_FAILED "b: change fb to sho-b via old-sho" "$mcim" run change fb --to sho-b --via old-sho --json --dir "$lab"
cp "$tmp/out" "$tmp/b1.json"
txn_b1=$(jfield "$tmp/b1.json" txid)
step=$(proc_field fb "$txn_b1" step)
case "$step" in 4 | 5) ok "b: failed at step $step" ;; *) bad "b: step '$step'" ;; esac
grep -q '"detail": ".*os' "$tmp/b1.json" && ok "b: the detail names the os component" || bad "b: detail: $(grep detail "$tmp/b1.json")"
db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM dpf_packages WHERE txn='$txn_b1'" 0 &&
  ok "b: no package at the DPF for that txn" || bad "b: a package was made"
db_is "$lab/sho-b/sho-b.db" "SELECT COUNT(*) FROM auc WHERE device='fb'" 0 && ok "b: sho-b made no MCIM" ||
  bad "b: sho-b AuC: $(sql "$lab/sho-b/sho-b.db" "SELECT imsi, state FROM auc WHERE device='fb'")"
db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_b1'" failed && ok "b: sho-b's order failed" ||
  bad "b: sho-b order $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_b1'")"
db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_b'" active && ok "b: sho-a's subscription untouched" ||
  bad "b: sho-a's AuC state of $imsi_b"
tre_status fb >"$tmp/b1st.json"
tr -d ' \n' <"$tmp/b1st.json" | grep -q "\"slot\":\"sho-a\",\"sho\":\"sho-a\",\"imsi\":\"$imsi_b\",\"state\":\"active\"" &&
  ok "b: the old MCIM still active in the TRE" || bad "b: slots: $(cat "$tmp/b1st.json")"
grep -q '"staged": \[\]' "$tmp/b1st.json" && grep -q '"pending": \[\]' "$tmp/b1st.json" &&
  ok "b: nothing staged, nothing queued" || bad "b: staged/pending left"
check "b: fb still attaches to sho-a" "$mcim" device attach fb --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "b: full access at sho-a" || bad "b: $(cat "$tmp/out")"
invariants fb "b"
cp "$tmp/os.img.orig" "$lab/devices/fb/firmware/os.img"
check "b: firmware restored, agent restarted" "$mcim" lab restart fb --dir "$lab"
check "b: then the change succeeds" "$mcim" run change fb --to sho-b --via old-sho --json --dir "$lab"
drained
invariants fb "b (after the good change)"
privacy "b (validation failed, then a good change)"

fi

# ---------------------------------------------------------------------------------------
# c. A tampered package at step 7, replayed packages
# ---------------------------------------------------------------------------------------
if want c; then
echo "# c. tampered and replayed packages at step 7"
imsi_c=$(active_imsi fc sho-a)
txn_c0=$(sql "$lab/ro/ro.db" "SELECT txn FROM dpf_packages WHERE device='fc'")
# One character of the signature flipped as the SHO's package lands at the DPF (the RO
# checked it on the way in; what the device gets is no longer what sho-b signed).
sql "$lab/ro/ro.db" "CREATE TRIGGER tamper_fc AFTER INSERT ON dpf_packages WHEN NEW.device = 'fc' BEGIN
  UPDATE dpf_packages SET package = substr(package, 1, length(package) - 21)
    || CASE substr(package, length(package) - 20, 1) WHEN 'A' THEN 'B' ELSE 'A' END
    || substr(package, length(package) - 19) WHERE txn = NEW.txn; END;"
check_refused PACKAGE_INVALID "c: change fc to sho-b via old-sho (tampered package)" "$mcim" run change fc --to sho-b --via old-sho --json --dir "$lab"
cp "$tmp/out" "$tmp/c1.json"
sql "$lab/ro/ro.db" "DROP TRIGGER tamper_fc"
txn_c1=$(jfield "$tmp/c1.json" txid)
[ "$(proc_field fc "$txn_c1" step)" = 7 ] && ok "c: failed at step 7" || bad "c: step $(proc_field fc "$txn_c1" step)"
tr -d ' \n' <"$tmp/c1.json" | grep -q '"n":7,"from":"fc","to":"tre","msg":"verifyandstagetheMCIMpackage(atomic)","cause":"PACKAGE_INVALID"' &&
  ok "c: the TRE refused it at staging (traced)" || bad "c: no refused staging in the trace"
grep -q '"msg": "discard' "$tmp/c1.json" && bad "c: step 8 ran" || ok "c: step 8 never ran"
tre_status fc >"$tmp/c1st.json"
tr -d ' \n' <"$tmp/c1st.json" | grep -q "\"slot\":\"sho-a\",\"sho\":\"sho-a\",\"imsi\":\"$imsi_c\",\"state\":\"active\"" &&
  ok "c: the old MCIM intact" || bad "c: slots: $(cat "$tmp/c1st.json")"
grep -q '"staged": \[\]' "$tmp/c1st.json" && grep -q '"pending": \[\]' "$tmp/c1st.json" &&
  ok "c: nothing staged, nothing queued" || bad "c: staged/pending left"
check "c: fc still attaches to sho-a" "$mcim" device attach fc --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "c: full access at sho-a" || bad "c: $(cat "$tmp/out")"
drained
db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_c1'" failed && ok "c: sho-b's order failed (report)" ||
  bad "c: sho-b order $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn_c1'")"
db_is "$lab/sho-b/sho-b.db" "SELECT COUNT(*) FROM auc WHERE device='fc' AND state <> 'terminated'" 0 &&
  ok "c: sho-b's MCIM for fc terminated" || bad "c: sho-b AuC: $(sql "$lab/sho-b/sho-b.db" "SELECT imsi, state FROM auc WHERE device='fc'")"
invariants fc "c (tampered)"

# A good change, then replays on the way back to sho-a.
check "c: change fc to sho-b via old-sho (untampered)" "$mcim" run change fc --to sho-b --via old-sho --json --dir "$lab"
imsi_cb=$(active_imsi fc sho-b)
[ -n "$imsi_cb" ] && ok "c: fc subscribes to sho-b" || bad "c: no active sho-b IMSI"
# (1) the package sho-a made for fc at initial provisioning, installed then, offered again
# (the DPF kept nothing of it after the report: it is taken from what sho-a sent at step 12)
pkg0=$(sql "$lab/sho-a/sho-a.db" "SELECT body FROM outbox WHERE txn='$txn_c0' AND path='/v1/drf/authorisations'" |
  grep -o '"package": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')
[ -n "$pkg0" ] && ok "c: the initial package, as sho-a sent it" || bad "c: no initial package in sho-a's outbox"
sql "$lab/ro/ro.db" "CREATE TRIGGER replay_fc AFTER INSERT ON dpf_packages WHEN NEW.device = 'fc' BEGIN
  UPDATE dpf_packages SET package = '$pkg0' WHERE txn = NEW.txn; END;"
check_refused PACKAGE_INVALID "c: change fc to sho-a, the initial package replayed" "$mcim" run change fc --to sho-a --via old-sho --json --dir "$lab"
cp "$tmp/out" "$tmp/c3.json"
sql "$lab/ro/ro.db" "DROP TRIGGER replay_fc"
txn_c3=$(jfield "$tmp/c3.json" txid)
[ "$(proc_field fc "$txn_c3" step)" = 7 ] && ok "c: at step 7" || bad "c: step $(proc_field fc "$txn_c3" step)"
# (2) a package sho-a signed for another procedure of this device (never staged) offered
# for a new txn. The one made for the procedure just refused is such a package; the row
# now holds the replayed one, so its own is taken from sho-a's outbox (what sho-a sent).
pkg3=$(sql "$lab/sho-a/sho-a.db" "SELECT body FROM outbox WHERE txn='$txn_c3' AND path='/v1/dpf/packages'" |
  grep -o '"package": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')
if [ -n "$pkg3" ]; then
  sql "$lab/ro/ro.db" "CREATE TRIGGER replay_fc AFTER INSERT ON dpf_packages WHEN NEW.device = 'fc' BEGIN
    UPDATE dpf_packages SET package = '$pkg3' WHERE txn = NEW.txn; END;"
  check_refused PACKAGE_INVALID "c: change fc to sho-a, another txn's package offered" "$mcim" run change fc --to sho-a --via old-sho --json --dir "$lab"
  sql "$lab/ro/ro.db" "DROP TRIGGER replay_fc"
else
  bad "c: sho-a's package for $txn_c3 not found in its outbox"
fi
tre_status fc >"$tmp/c4st.json"
tr -d ' \n' <"$tmp/c4st.json" | grep -q "\"slot\":\"sho-b\",\"sho\":\"sho-b\",\"imsi\":\"$imsi_cb\",\"state\":\"active\"" &&
  ok "c: sho-b's MCIM intact after the replays" || bad "c: slots: $(cat "$tmp/c4st.json")"
check "c: fc attaches to sho-b" "$mcim" device attach fc --to sho-b --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "c: full access at sho-b" || bad "c: $(cat "$tmp/out")"
drained
invariants fc "c (replays)"
check "c: and a clean change back to sho-a works" "$mcim" run change fc --to sho-a --via old-sho --json --dir "$lab"
drained
invariants fc "c (final)"
privacy "c (tampered and replayed statements)"

fi

# ---------------------------------------------------------------------------------------
# d. Restarts between steps
# ---------------------------------------------------------------------------------------
if want d; then
echo "# d. restarts mid-change"
cur=sho-a
# change_with LABEL HOLD STAGE ACTION...: a change of fd via the old SHO (from the SHO it
# subscribes to, $cur, to the other), held at STAGE (HOLD: packages or validations), ACTION
# run there, the hold released; the change must succeed and the invariants hold. A failed
# change is followed by a recovery via the pristine state, so the next cases still run.
change_with() {
  local label=$1 hold=$2 stage=$3 to old=$cur
  shift 3
  [ "$cur" = sho-a ] && to=sho-b || to=sho-a
  local imsi_old
  imsi_old=$(active_imsi fd "$old")
  "hold_$hold" fd
  run_bg "$tmp/d.json" change fd --to "$to" --via old-sho
  if wait_until 60 "${hold%s}_held" fd && wait_until 30 running_at fd "$stage"; then
    "$@" && ok "d/$label: done" || bad "d/$label: the fault action failed at $(proc_view fd)"
  else
    bad "d/$label: stage $stage never reached: $(proc_view fd)"
  fi
  "release_$hold" fd
  local failed_change=0
  if run_wait; then ok "d/$label: change $old -> $to succeeded"; else
    bad "d/$label: change $old -> $to: $(jfield "$tmp/d.json" result): $(jfield "$tmp/d.json" detail)"
    failed_change=1
  fi
  resume sho-a
  resume sho-b
  resume ro
  if [ $failed_change = 1 ]; then
    # back to a known state for the next cases (the PCID path always works)
    "$mcim" run change fd --to "$to" --via pristine --json --dir "$lab" >"$tmp/rec.json" 2>&1 ||
      bad "d/$label: recovery via pristine failed: $(jfield "$tmp/rec.json" result)"
  fi
  drained
  db_is "$lab/$old/$old.db" "SELECT state FROM auc WHERE imsi='$imsi_old'" terminated &&
    ok "d/$label: $old terminated the old IMSI" || bad "d/$label: $old still has $imsi_old"
  [ -n "$(active_imsi fd "$to")" ] && ok "d/$label: $to active" || bad "d/$label: $to not active"
  invariants fd "d/$label"
  privacy "d/$label"
  cur=$to
}
restart() { "$mcim" lab restart "$1" --dir "$lab" >/dev/null; }
# the old SHO paused, the device blocked on the receipt (step 9): after the package is let go
at_receipt() { # at_receipt ACTION...: pause the old SHO, let the package go, wait for step 9
  local before
  before=$(failures_at 9)
  pause "$cur"
  release_packages fd
  wait_until 30 running_at fd receipt || return 1
  "$@" "$before"
}
port_of() { role_url "$1" | grep -o '[0-9]*$'; }
# in_flight NAME: the agent of fd has a connection open to NAME (paused: the kernel accepted
# it). After a request timeout the agent has closed the connection that timed out, so an
# established one is the retry's.
in_flight() {
  ss -Htnp state established "( dport = :$(port_of "$1") )" | grep -q "pid=$(pid_of fd),"
}
failures_at() { # failures_at STEP: failed attempts of that step the agent of fd traced
  sql "$lab/devices/fd/agent.db" "SELECT COUNT(*) FROM trace WHERE step=$1 AND cause IS NOT NULL AND cause <> '' AND cause <> 'OK'"
}
failures_above() { [ "$(failures_at "$1")" -gt "$2" ]; } # failures_above STEP N
# stalled NAME STEP BEFORE: the agent gave up on a first request to the paused NAME at STEP
# (request timeout) and its retry, signed afresh where it is a device statement, is in
# flight on a new connection, while the first one still waits in NAME's socket buffer
stalled() { wait_until 30 failures_above "$2" "$3" && wait_until 10 in_flight "$1"; }
stall_old_sho() { # the old SHO stalls longer than the agent's request timeout at step 9
  stalled "$cur" 9 "$1" && resume "$cur"
}
stall_ro_at_11() { # the RO stalls past the request timeout when the acknowledgement comes (11)
  local before
  before=$(failures_at 11)
  pause ro
  resume "$cur"
  wait_until 30 running_at fd release && stalled ro 11 "$before" && resume ro
}
crash_old_sho() { # the old SHO dies with the retried receipt in flight (its TLS handshake
  # under way) and comes back: a peer gone mid-handshake is an unreachable peer, retried
  stalled "$cur" 9 "$1" || return 1
  kill -KILL "$(pid_of "$cur")" && resume "$cur" && restart "$cur"
}
restart_agent_at_9() { # the agent restarts between steps 8 and 11, then the old SHO returns
  # (with the receipt it sent before the restart still in the old SHO's socket buffer)
  sql "$lab/devices/fd/agent.db" "SELECT data FROM procedures WHERE state='running'" | grep -q saved_token || return 1
  restart fd && resume "$cur"
}

change_with "pva at step 4" validations nonce restart pva
change_with "ro at step 7" packages download restart ro
change_with "new SHO (sho-b) at step 7" packages download restart sho-b
change_with "new SHO (sho-a) at step 7" packages download restart sho-a
change_with "old SHO (sho-a) at step 7" packages download restart sho-a
change_with "old SHO (sho-b) at step 7" packages download restart sho-b
change_with "old SHO (sho-a) stalls past the request timeout at step 9" packages download at_receipt stall_old_sho
change_with "old SHO (sho-b) stalls past the request timeout at step 9" packages download at_receipt stall_old_sho
change_with "RO stalls past the request timeout at step 11" packages download at_receipt stall_ro_at_11
change_with "agent at step 7" packages download restart fd
change_with "agent between steps 8 and 11" packages download at_receipt restart_agent_at_9
change_with "old SHO (sho-b) crash at step 9, the receipt in flight" packages download at_receipt crash_old_sho
fi

check "lab down" "$mcim" lab down --dir "$lab"
finish
