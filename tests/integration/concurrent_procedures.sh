#!/usr/bin/env bash
# Concurrency never fails a procedure (issue 8, point 2): N devices (default 40) run the same
# procedure at the same time: initial provisioning, then twice a change via the pristine
# state (which used to lose the race between the subscriber's order reaching the DRF and the
# device asking it: CLAIM_MISMATCH at step 8) and a change via the old SHO back, then a
# preload of a second MCIM and switches to it and back. Every run
# must succeed, and the invariants of DESIGN.md section 4 hold for every device after each
# round, as does the privacy of each SHO (neither keeps the other's name or IMSIs, issue 8,
# point 5). MCIM_CONCURRENT_DEVICES overrides N.
. "$(dirname "$0")/lib/common.bash"

n=${MCIM_CONCURRENT_DEVICES:-40}
command -v sqlite3 >/dev/null || { bad "sqlite3 is missing (scripts/deps.sh installs it)"; finish; exit 1; }

check "lab up" "$mcim" lab up --dir "$lab"
for i in $(seq 1 "$n"); do
  "$mcim" lab device add "c$i" --dir "$lab" >/dev/null 2>"$tmp/add.err" || { bad "manufacture c$i: $(head -c 300 "$tmp/add.err")"; finish; exit 1; }
done
ok "$n devices manufactured"

# The device name goes where `mcim run` wants it: substitute DEV.
run_all() {
  local name=$1 i fails=0 pids=() t0
  shift
  t0=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    args=()
    for a in "$@"; do [ "$a" = DEV ] && args+=("c$i") || args+=("$a"); done
    "$mcim" run "${args[@]}" --json --dir "$lab" >"$tmp/r$i.json" 2>"$tmp/r$i.err" &
    pids[$i]=$!
  done
  for i in $(seq 1 "$n"); do
    if ! wait "${pids[$i]}"; then
      fails=$((fails + 1))
      if [ "$fails" -le 3 ]; then
        # the cause, the device's detail and the steps that carried a cause: enough to tell
        # which step failed without the daemons' logs
        echo "   c$i: $(jfield "$tmp/r$i.json" result): $(jfield "$tmp/r$i.json" detail) $(head -c 300 "$tmp/r$i.err")"
        tr -d '\n' <"$tmp/r$i.json" | grep -o '{[^{}]*"cause"[^{}]*}' | head -n 4 | sed 's/^/      /'
      fi
    fi
  done
  local wall
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ "$fails" -eq 0 ] && ok "$name: $n of $n succeeded (${wall} s wall for the round)" ||
    bad "$name: $fails of $n failed"
}

# Messages still in flight when `mcim run` returns (the relayed discard notices of a change via
# the pristine state, reports, registrations) are part of the procedure: the invariants are
# checked once every role's outbox has delivered them.
outboxes_drained() {
  local d n
  for d in "$lab"/*/*.db; do
    n=$(sqlite3 "$d" "SELECT COUNT(*) FROM outbox WHERE state = 'pending'" 2>/dev/null) || return 1
    [ "$n" = 0 ] || return 1
  done
}

# invariants: per device one active subscription at the SHOs, and the DRF's one subscribed
# entry at that SHO.
invariants() {
  local label=$1 multi
  wait_until 60 outboxes_drained || bad "$label: outboxes not drained within 60 s"
  multi=$( (sqlite3 "$lab/sho-a/sho-a.db" "SELECT device FROM auc WHERE state='active'"
            sqlite3 "$lab/sho-b/sho-b.db" "SELECT device FROM auc WHERE state='active'") |
          sort | uniq -d | head -n 3)
  [ -z "$multi" ] && ok "$label: at most one active subscription per device" || bad "$label: several active: $multi"
  # the registry agrees with the SHOs: one subscribed DRF entry per device, at the SHO where
  # its subscription is active, and no other
  local drf active
  drf=$(sqlite3 "$lab/ro/ro.db" "SELECT device || ' ' || sho FROM drf WHERE state = 'subscribed'" | sort)
  active=$( (sqlite3 "$lab/sho-a/sho-a.db" "SELECT device || ' sho-a' FROM auc WHERE state = 'active'"
             sqlite3 "$lab/sho-b/sho-b.db" "SELECT device || ' sho-b' FROM auc WHERE state = 'active'") | sort)
  if [ -n "$drf" ] && [ "$drf" = "$active" ]; then
    ok "$label: the DRF's subscribed entries are the SHOs' active subscriptions ($(echo "$drf" | wc -l) devices)"
  else
    bad "$label: DRF subscribed vs SHOs active: $(diff <(echo "$drf") <(echo "$active") | head -n 6 | tr '\n' ' ')"
  fi
  privacy "$label"
}

run_all "initial x$n" initial DEV --sho sho-a
invariants "after initial"
for round in 1 2; do
  run_all "change via pristine to sho-b x$n (round $round)" change DEV --to sho-b --via pristine
  invariants "after pristine to sho-b ($round)"
  run_all "change via old SHO to sho-a x$n (round $round)" change DEV --to sho-a --via old-sho
  invariants "after old-sho to sho-a ($round)"
done
# the variant: a second MCIM pre-provisioned, then switched to and back
run_all "preload sho-b x$n" preload DEV --sho sho-b
run_all "switch to sho-b x$n" switch DEV --to sho-b
invariants "after switch to sho-b"
run_all "switch back to sho-a x$n" switch DEV --to sho-a
invariants "after switch back"
finish
