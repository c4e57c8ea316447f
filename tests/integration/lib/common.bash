# Shared helpers of the integration tests (sourced). Each test gets its own lab folder and
# ports, so tests may run in parallel; the lab is always torn down on exit.
set -eu

mcim="${MCIM_BIN:?MCIM_BIN must point at the build bin dir}/mcim"
tmp=$(mktemp -d /tmp/mcim-it-XXXXXX)
lab="$tmp/lab"
passed=0
failed=0

stopped="" # pids paused (SIGSTOP) by `pause`: cleanup resumes them first

cleanup() {
  local p
  for p in $stopped; do kill -CONT "$p" 2>/dev/null || true; done
  "$mcim" lab down --dir "$lab" >/dev/null 2>&1 || true
  if [ "$failed" -ne 0 ] && [ -d "$lab" ]; then
    echo "--- logs of the failed run ---"
    # warnings and errors first (slow answers, refusals, retries), then each log's end
    for f in "$lab"/*/*.log "$lab"/devices/*/agent.log; do
      [ -f "$f" ] || continue
      echo "== $f: warnings and errors (last 20)"
      grep -E '^[^ ]+ (warn|error) ' "$f" | tail -n 20 || true
      echo "== $f: last 30 lines"
      tail -n 30 "$f"
    done
  fi
  # MCIM_KEEP_TMP=1 keeps the test's folder (lab, logs, stores) to look at after a failure
  if [ "${MCIM_KEEP_TMP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok    $1"; }
bad() { failed=$((failed + 1)); echo "FAIL  $1"; }
check() { # check NAME CMD...: passes if CMD succeeds
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>"$tmp/err"; then ok "$name"; else bad "$name: $(head -c 600 "$tmp/err")"; fi
}
# Negative checks name the cause of the refusal: a command that merely fails (a crash, a
# usage error, another refusal) does not pass one.
# check_refused CAUSE NAME CMD...: CMD (an mcim command) is refused for CAUSE: exit status 1
# (not 0, not 2 = usage error, not >= 128 = killed by a signal), and CAUSE is the refusal's
# cause: the "result" of `--json` output if it has one (mcim run), else its "cause" (mcim
# device attach), else "(CAUSE)" on stderr (the text form of every mcim command).
check_refused() {
  local cause=$1 name=$2 st=0 got
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err" || st=$?
  if ! refusal_status "$name" "$st" "$cause"; then return 0; fi
  if grep -q '"result":' "$tmp/out"; then got=$(jfield "$tmp/out" result)
  elif grep -q '"cause":' "$tmp/out"; then got=$(jfield "$tmp/out" cause)
  else got=$(grep -oE '\([A-Z][A-Z0-9_]*\)(:|$)' "$tmp/err" | head -n1 | tr -d '():'); fi
  if [ "$got" = "$cause" ]; then ok "$name: refused, $cause"
  else bad "$name: refused with '$got', expected $cause: $(head -c 300 "$tmp/out") $(head -c 300 "$tmp/err")"; fi
}
# check_refused_text TEXT NAME CMD...: CMD is refused (exit status 1, as above) with TEXT
# (a fixed string) on stderr: for refusals the command reports without a cause name.
check_refused_text() {
  local text=$1 name=$2 st=0
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err" || st=$?
  if ! refusal_status "$name" "$st" "'$text'"; then return 0; fi
  if grep -qF -- "$text" "$tmp/err"; then ok "$name: refused, '$text'"
  else bad "$name: refused without '$text': $(head -c 300 "$tmp/err")"; fi
}
refusal_status() { # refusal_status NAME STATUS EXPECTED: STATUS is a refusal's (1), else bad
  if [ "$2" -eq 1 ]; then return 0; fi
  if [ "$2" -eq 0 ]; then bad "$1: succeeded, expected a refusal ($3)"
  elif [ "$2" -eq 2 ]; then bad "$1: usage error (exit 2), expected a refusal ($3): $(head -c 300 "$tmp/err")"
  elif [ "$2" -ge 128 ]; then bad "$1: killed by signal $(($2 - 128)) (exit $2), expected a refusal ($3): $(head -c 300 "$tmp/err")"
  else bad "$1: exit status $2, expected 1, a refusal ($3): $(head -c 300 "$tmp/err")"; fi
  return 1
}
# MCIM_TIME_SCALE (an integer, default 1; scripts/valgrind.sh sets it): every daemon and agent
# runs that many times slower (valgrind's memcheck), so every deadline of the tests is that many
# times longer: wait_until's, those written with `scaled`, and the lab's own (src/lab: the
# agents' procedure_timeout and request_timeout_ms, its waits for a daemon). What a test
# proves does not change: a deadline is how long it waits for what must happen.
time_scale=${MCIM_TIME_SCALE:-1}
scaled() { echo $(($1 * time_scale)); } # scaled SECONDS: a deadline of a test, scaled
# wait_until DEADLINE_S CMD...: run CMD every 0.05 s until it succeeds (status 0) or
# DEADLINE_S seconds (a decimal number) times MCIM_TIME_SCALE have passed (status 1). The
# synchronisation of every test: never a fixed sleep.
wait_until() {
  local end
  end=$(($(now_us) + $(awk -v s="$1" -v k="$time_scale" 'BEGIN { printf "%d", s * k * 1000000 }')))
  shift
  while :; do
    "$@" && return 0
    [ "$(now_us)" -lt "$end" ] || return 1
    sleep 0.05
  done
}
now_us() { local t=${EPOCHREALTIME//[!0-9]/}; echo "${t#"${t%%[1-9]*}"}"; }
# need TOOL...: a tool the test needs is missing: the test fails (it does not skip).
need() {
  local t missing=""
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing="$missing $t"; done
  [ -z "$missing" ] && return 0
  bad "missing:$missing (scripts/deps.sh installs it)"
  finish || true
  exit 1
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
role_url() { # role_url NAME
  tr -d ' \n' <"$lab/peers.json" | grep -o "\"$1\":\"[^\"]*\"" | cut -d'"' -f4
}
jfield() { # jfield FILE NAME: first string value of "NAME" in a JSON file
  tr -d '\n' <"$1" | grep -o "\"$2\": *\"[^\"]*\"" | head -n1 | sed 's/.*: *"\(.*\)"/\1/'
}
# The stores of a lab on SQLite (the test needs sqlite3). sql DB SQL...: sqlite3 that waits up
# to 10 s for a writer of DB (a daemon's or an agent's) instead of failing busy. expiry.sh
# defines an sql of its own (errors ignored), which replaces this one there.
sql() { sqlite3 -cmd ".timeout 10000" "$@"; }
db_is() { [ "$(sql "$1" "$2")" = "$3" ]; } # db_is DB SQL VALUE
# run_bg OUT ARGS...: `$mcim run ARGS --json --dir $lab` in the background, its output in OUT,
# its pid in runpid and added to $bg (which the script's exit trap kills); run_wait: its exit
# status, and it leaves $bg.
run_bg() {
  local out=$1
  shift
  "$mcim" run "$@" --json --dir "$lab" >"$out" 2>&1 &
  runpid=$!
  bg="$bg $runpid"
}
run_wait() {
  local rc=0
  wait "$runpid" || rc=$?
  bg=$(echo "$bg" | tr ' ' '\n' | grep -vx "$runpid" | tr '\n' ' ' || true)
  return $rc
}
cleanup_bg() { # an EXIT trap: the background `mcim run`s of run_bg ($bg) killed, then cleanup
  local p
  for p in ${bg:-}; do kill "$p" 2>/dev/null || true; done
  cleanup
}
pid_of() { # pid_of NAME: the pid lab.json records for a role or a device agent
  tr -d ' \n' <"$lab/lab.json" | grep -o "\"name\":\"$1\",[^}]*\"pid\":[0-9]*" | grep -o '[0-9]*$'
}
# preloaded_lab DEV: the lab up, DEV manufactured, provisioned with sho-a and pre-provisioned
# with sho-b (the DRF holds sho-b `preloaded`): where the switch tests start
preloaded_lab() {
  check "lab up" "$mcim" lab up --dir "$lab"
  check "manufacture $1" "$mcim" lab device add "$1" --dir "$lab"
  check "initial provisioning of $1 with sho-a" "$mcim" run initial "$1" --sho sho-a --json --dir "$lab"
  check "preload $1 with sho-b" "$mcim" run preload "$1" --sho sho-b --json --dir "$lab"
  wait_until 20 db_is "$lab/ro/ro.db" "SELECT state FROM drf WHERE device='$1' AND sho='sho-b'" preloaded &&
    ok "the DRF holds sho-b preloaded" ||
    bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='$1'" | tr '\n' ';')"
}
# pause NAME: stop a role or an agent (SIGSTOP), resumed by `resume NAME` or on exit
pause() { local p; p=$(pid_of "$1"); kill -STOP "$p"; stopped="$stopped $p"; }
resume() {
  local p; p=$(pid_of "$1")
  kill -CONT "$p" 2>/dev/null || true
  stopped=$(echo "$stopped" | tr ' ' '\n' | grep -vx "$p" | tr '\n' ' ' || true)
}

# privacy LABEL: neither SHO keeps the other's name or any IMSI the other issued (issue 8,
# point 5): database (every table: orders, AuC, stored answers, traces of what it sent and
# received, replay, outbox) with its JWS payloads decoded, and its log. Labs on SQLite only.
# One python3 pass per SHO (decoding thousands of JWS one process each took minutes). Runs of
# 40 or more base64url characters (signatures, ciphertexts, sealed values, JWS segments once
# their payloads are decoded) are left out of the search: "sho-b" is 5 characters of that
# alphabet, found in them by chance (about one run in fifty with megabytes of trace rows: a
# failure of crash_every_step on 2026-12-08 named sho-b inside a package's base64).
privacy() {
  local s o f found
  for s in sho-a sho-b; do
    o=sho-b; [ "$s" = sho-b ] && o=sho-a
    f="$tmp/priv-$s.txt"
    sqlite3 "$lab/$s/$s.db" .dump >"$f"
    cat "$lab/$s/$s.log" >>"$f"
    sqlite3 "$lab/$o/$o.db" "SELECT imsi FROM auc" >"$tmp/priv-imsis"
    found=$(python3 - "$f" "$o" "$tmp/priv-imsis" <<'PY'
import base64, re, sys
text = open(sys.argv[1], errors="replace").read()
for seg in re.findall(r"eyJ[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)", text):
    try:
        text += "\n" + base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)).decode(errors="replace")
    except Exception:
        pass
text = re.sub(r"[A-Za-z0-9_-]{40,}", " ", text)
other = sys.argv[2]
found = ["name:" + other] if other in text else []
found += ["imsi:" + i for i in open(sys.argv[3]).read().split() if i in text]
print(" ".join(found))
PY
)
    [ -z "$found" ] && ok "$1: $s keeps nothing of $o (name, $(wc -l <"$tmp/priv-imsis") IMSIs)" ||
      bad "$1: $s knows of $o: $found ($(grep -F -m2 -e "$o" "$f" | head -c 300))"
  done
}

# A device agent and its procedures. agent_get DEV PATH: GET on DEV's agent control socket;
# agent_proc_field DEV TXN FIELD: FIELD of the agent's procedure TXN (a string, number or
# bool); agent_proc_ended DEV TXN: that procedure no longer runs; process_gone PID: not
# running (a zombie counts); crash_kills DEV "STAGE WHEN": how many times DEV's agent was
# killed at that crash point (its trace).
agent_get() { curl -s --max-time 5 --unix-socket "$lab/devices/$1/control.sock" "http://localhost$2"; }
agent_proc_field() {
  agent_get "$1" "/v1/procedures/$2" | tr -d '\n' | grep -o "\"$3\": *[^,}]*" | head -n1 |
    sed 's/^[^:]*: *//; s/^"//; s/"$//'
}
agent_proc_ended() { local s; s=$(agent_proc_field "$1" "$2" state); [ -n "$s" ] && [ "$s" != running ]; }
process_gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
crash_kills() {
  sql "$lab/devices/$1/agent.db" "SELECT COUNT(*) FROM trace WHERE to_name='crashpoint' AND msg='$2: SIGKILL'"
}

# The tests of a change via the old SHO in which la's agent is killed at a crash point and the
# change completes past the device's ack_deadline without sho-a (change_lost_ack,
# change_early_release).
# old_sho_change_killed STAGE:WHEN WHAT: the EXIT trap set to cleanup_bg; the lab up, la
# manufactured and provisioned with sho-a ($imsi_a its IMSI there), la's ack_deadline 2 s and
# procedure_timeout 40 s, its agent restarted armed at the crash point STAGE:WHEN; `mcim run
# change la --to sho-b --via old-sho` in the background, and the agent killed at that point
# (WHAT: when that is, for the output). That `mcim run` lost its agent: left running, killed on
# exit; the procedure, $txn, is followed on the agent itself.
old_sho_change_killed() {
  local point="${1%%:*} ${1#*:}" where=$2 pid
  bg=""
  trap cleanup_bg EXIT
  check "lab up" "$mcim" lab up --dir "$lab"
  check "manufacture la" "$mcim" lab device add la --dir "$lab"
  check "initial provisioning of la with sho-a" "$mcim" run initial la --sho sho-a --json --dir "$lab"
  # shellcheck disable=SC2034 # for the caller
  imsi_a=$(sql "$lab/sho-a/sho-a.db" "SELECT imsi FROM auc WHERE device='la' AND state='active'")
  sed -i 's/"procedure_timeout": *[0-9]*/"procedure_timeout": 40/' "$lab/devices/la/agent.json"
  grep -q '"ack_deadline"' "$lab/devices/la/agent.json" ||
    sed -i 's/"procedure_timeout"/"ack_deadline": 2, "procedure_timeout"/' "$lab/devices/la/agent.json"
  MCIM_CRASHPOINT="la:$1" "$mcim" lab restart la --dir "$lab" >/dev/null &&
    ok "la: ack deadline 2 s, agent armed at $point" || bad "la: restart"
  pid=$(pid_of la)
  run_bg "$tmp/run.json" change la --to sho-b --via old-sho
  if wait_until 60 process_gone "$pid" && [ "$(crash_kills la "$point")" = 1 ]; then
    ok "la killed $where, recorded by the crash point"
  else bad "la not killed at $point (kills $(crash_kills la "$point"))"; fi
  txn=$(sql "$lab/devices/la/agent.db" "SELECT txn FROM trace WHERE to_name='crashpoint' LIMIT 1")
  [ -n "$txn" ] && ok "txn $txn" || bad "no txn"
}
# old_sho_change_completes WHAT: sho-a killed, la's agent restarted (not armed): the change
# $txn completes (WHAT: how, for the output) with the TRE-signed discard receipt at step 11,
# and sho-b's order is active.
old_sho_change_completes() {
  local res
  kill -KILL "$(pid_of sho-a)"
  check "la restarted (not armed)" "$mcim" lab restart la --dir "$lab"
  if wait_until 60 agent_proc_ended la "$txn"; then ok "the procedure ended"; else bad "the procedure still runs"; fi
  res=$(agent_proc_field la "$txn" result)
  [ "$res" = success ] && ok "the change completed $1" ||
    bad "the change ended '$res' at step $(agent_proc_field la "$txn" step): $(agent_proc_field la "$txn" cause) $(agent_proc_field la "$txn" detail)"
  sql "$lab/devices/la/agent.db" "SELECT msg FROM trace WHERE txn='$txn' AND step=11" | grep -q 'TRE-signed discard receipt' &&
    ok "step 11 with the TRE-signed receipt" || bad "no receipt at step 11: $(sql "$lab/devices/la/agent.db" "SELECT step, msg FROM trace WHERE txn='$txn'" | tail -n 5 | tr '\n' ';')"
  wait_until 20 db_is "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'" active &&
    ok "sho-b's order active" || bad "sho-b order $(sql "$lab/sho-b/sho-b.db" "SELECT state FROM orders WHERE txn='$txn'")"
}

# old_sho_back_terminates: after old_sho_change_completes, sho-a restarted: the RO relays the
# TRE-signed receipt it took at step 11, sho-a terminates $imsi_a, and the RO's outbox drains.
old_sho_back_terminates() {
  check "sho-a restarted" "$mcim" lab restart sho-a --dir "$lab"
  wait_until 60 db_is "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'" terminated &&
    ok "sho-a terminated $imsi_a on the relayed receipt" ||
    bad "sho-a: $(sql "$lab/sho-a/sho-a.db" "SELECT state FROM auc WHERE imsi='$imsi_a'")"
  wait_until 60 db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM outbox WHERE state='pending'" 0 &&
    ok "the RO's outbox drained" ||
    bad "RO outbox: $(sql "$lab/ro/ro.db" "SELECT peer, path, state, attempts FROM outbox WHERE state='pending'")"
}

# ---- a lab on PostgreSQL (lab up --store postgres [--instances N]) ----
pg_port=""
q() { # q ROLE SQL: the values from the role's database (its lab server), one row a line
  [ -n "$pg_port" ] || pg_port=$(tr -d '\n ' <"$lab/lab.json" | grep -o '"postgres":{[^}]*}' | grep -o '"port":[0-9]*' | cut -d: -f2)
  PGPASSFILE="$lab/pgpass" psql -X -qAt -h 127.0.0.1 -p "$pg_port" -U mcim -d "mcim_${1//-/_}" -c "$2" 2>&1
}
instance() { # instance ROLE K FIELD: lab.json's FIELD (pid, url) of the K-th instance of ROLE
  python3 -c 'import json,sys; print(next(r[sys.argv[4]] for r in json.load(open(sys.argv[1]))["roles"] if r["name"] == sys.argv[2] and r["instance"] == int(sys.argv[3])))' "$lab/lab.json" "$1" "$2" "$3"
}
served() { # served ROLE K: procedure requests (all but health and metrics) the instance answered
  curl -sS --max-time 5 --cacert "$lab/pki/ca/operators-ca.crt" "$(instance "$1" "$2" url)/metrics" |
    awk '/^mcim_http_requests_total/ && !/route="\/v1\/health"/ && !/route="\/metrics"/ { n += $2 } END { print n + 0 }'
}

# Holds: what the SHO stored at the DPF (or asked of the PVA) stays invisible to device DEV
# until released (hold_packages DEV, release_packages DEV, package_held DEV; the same for
# validations), by a trigger in the role's database.
hold_packages() {
  sql "$lab/ro/ro.db" "CREATE TRIGGER hold_$1 AFTER INSERT ON dpf_packages WHEN NEW.device = '$1'
    BEGIN UPDATE dpf_packages SET state = 'held' WHERE txn = NEW.txn; END;"
}
release_packages() {
  sql "$lab/ro/ro.db" "DROP TRIGGER IF EXISTS hold_$1;
    UPDATE dpf_packages SET state = 'ready' WHERE device = '$1' AND state = 'held';"
}
package_held() { db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM dpf_packages WHERE device='$1' AND state='held'" 1; }
hold_validations() {
  sql "$lab/pva/pva.db" "CREATE TRIGGER hold_$1 AFTER INSERT ON validations WHEN NEW.device = '$1'
    BEGIN UPDATE validations SET state = 'held' WHERE id = NEW.id; END;"
}
release_validations() {
  sql "$lab/pva/pva.db" "DROP TRIGGER IF EXISTS hold_$1;
    UPDATE validations SET state = 'pending' WHERE device = '$1' AND state = 'held';"
}
validation_held() { db_is "$lab/pva/pva.db" "SELECT COUNT(*) FROM validations WHERE device='$1' AND state='held'" 1; }
