#!/usr/bin/env bash
# The old SHO's acknowledgement lost after it took the discard receipt (change via the old
# SHO, steps 9-11; model finding F2, docs/model.md). sho-a takes the receipt at step 9: it
# terminates the subscription and releases its DRF entry (its outbox tells the RO); its
# answer never reaches the device (the agent is killed as the answer arrives, a crash point),
# and once the agent is back sho-a is unreachable. Past `ack_deadline` the device hands the
# DPF the TRE-signed receipt in place of the ack (step 11). The DPF must take it: sho-a's own
# `released` entry for this txn is the proof it took the receipt. Before the fix the DPF
# counted only entries not released and refused it (REGISTRATION_PENDING until the
# procedure's deadline): the change failed after step 8, the device left with its PCID only.
. "$(dirname "$0")/lib/common.bash"
need sqlite3 curl

# armed: the agent dies as the 2xx answer of its receipt stage (sho-a's ack) arrives
old_sho_change_killed receipt:after-send "as sho-a's acknowledgement arrived (step 10)"
# sho-a took the receipt: subscription terminated, its `released` registration at the DRF
wait_until 20 db_is "$lab/ro/ro.db" "SELECT state || ' ' || txn FROM drf WHERE device='la' AND sho='sho-a'" "released $txn" &&
  ok "sho-a released its DRF entry for this txn" ||
  bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state, txn FROM drf WHERE device='la'")"
db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" terminated &&
  ok "sho-a terminated $imsi_a" || bad "sho-a: $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
# the ack never reaches the device: sho-a is gone when the agent comes back
old_sho_change_completes "without sho-a's ack"
wait_until 20 db_is "$lab/ro/ro.db" "SELECT sho FROM drf WHERE device='la' AND state='subscribed'" sho-b &&
  ok "the DRF points to sho-b" || bad "DRF $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='la'")"
"$mcim" device attach la --to sho-b --json --dir "$lab" >"$tmp/att.json" 2>&1 &&
  grep -q '"scope": "full"' "$tmp/att.json" && ok "la attaches to sho-b (full)" || bad "attach: $(head -c 300 "$tmp/att.json")"
"$mcim" device status la --json --dir "$lab" | tr -d ' \n' | grep -q '"pending":\[\]' &&
  ok "nothing left queued in the TRE" || bad "the TRE still queues a notice"
# sho-a back: the RO's relay of the receipt gets sho-a's stored answer, nothing is left
check "sho-a restarted" "$mcim" lab restart sho-a --dir "$lab"
wait_until 60 db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE state='pending'" 0 &&
  ok "the RO's outbox drained (the receipt relayed to sho-a)" ||
  bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, path, state, attempts FROM outbox WHERE state='pending'")"
finish
