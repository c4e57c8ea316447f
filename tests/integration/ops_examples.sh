#!/usr/bin/env bash
# The sample configurations of docs/examples (issue 5, operations):
#   1. `mcimd --role KIND --check-config` accepts each sample as it is, `m2me --check-config`
#      accepts agent.json, and the check does refuse a broken copy;
#   2. the samples run: a PKI from `mcim pki init`, the samples copied next to it with their
#      /var/... paths moved into a temporary folder and free ports instead of 8441-8445
#      (nothing else changed); every daemon starts, answers /v1/health and /metrics;
#   3. logging as the files say: ro.json's log_file (JSON lines, role "ro", nothing on
#      stderr), vno.json's JSON on stderr, pva.json's text; the command line wins over the
#      file; SIGHUP reopens a log file moved away (logrotate);
#   4. the systemd units pass `systemd-analyze verify` (their man pages: package.sh).
# python3, curl and systemd-analyze are needed (scripts/deps.sh installs them): missing, the
# test fails. The daemons this test starts are stopped by their pid at exit.
. "$(dirname "$0")/lib/common.bash"
need python3 curl systemd-analyze

BIN="$MCIM_BIN"
SRC="${MCIM_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}"
EX="$SRC/docs/examples"
WORK="$tmp/work"
mkdir -p "$WORK"
pids=""

stop_ours() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  if [ "$failed" -ne 0 ]; then
    for f in "$WORK"/*.stderr "$WORK"/log/*; do
      [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }
    done
  fi
}
trap 'stop_ours; cleanup' EXIT

# Is every line of FILE a JSON object?
json_lines() {
  [ -s "$1" ] || return 1
  python3 -c 'import json,sys
for l in open(sys.argv[1]): assert isinstance(json.loads(l), dict)' "$1" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
running() { kill -0 "$1" 2>/dev/null; }
gone() { ! running "$1"; }

kind_of() { case "$1" in sho-*) echo sho ;; *) echo "$1" ;; esac; }

# ---- 1. --check-config on the samples as they are ----
roles="vno ro pva m2mes sho-a"
for r in $roles; do
  if out=$("$BIN/mcimd" --role "$(kind_of "$r")" --check-config "$EX/$r.json" 2>&1); then
    ok "mcimd --role $(kind_of "$r") --check-config docs/examples/$r.json"
  else
    bad "docs/examples/$r.json: $out"
  fi
done
# every role sample is listed above
for f in "$EX"/*.json; do
  b=$(basename "$f" .json)
  case " $roles peers agent " in *" $b "*) ;; *) bad "docs/examples/$b.json is not checked by this test" ;; esac
done
if out=$("$BIN/m2me" --dir "$EX" --check-config 2>&1); then ok "m2me --check-config docs/examples/agent.json"
else bad "docs/examples/agent.json: $out"; fi
# the check refuses what is wrong: an unknown key, a wrong kind, a missing required key
sed 's/^{/{ "listen_prot": 8441,/' "$EX/vno.json" >"$WORK/typo.json"
# refused: exit status 1 (not 0, not a usage error 2, not a crash), the offending key named
refused_naming() { # refused_naming NAME TEXT CMD...
  local name=$1 text=$2 st=0
  shift 2
  "$@" >"$WORK/out" 2>&1 || st=$?
  [ "$st" -eq 1 ] && grep -qF -- "$text" "$WORK/out" && ok "$name" || bad "$name: exit $st, $(head -c 300 "$WORK/out")"
}
refused_naming "--check-config names an unknown key" '"listen_prot"' \
  "$BIN/mcimd" --role vno --check-config "$WORK/typo.json"
refused_naming "--check-config refuses vno.json for kind sho (plmn is required)" '"plmn": required key is missing' \
  "$BIN/mcimd" --role sho --check-config "$EX/vno.json"

# ---- 2. a deployment of the samples ----
etc="$WORK/etc"
mkdir -p "$etc" "$WORK/log"
cp "$EX"/*.json "$etc/"
if "$BIN/mcim" pki init "$etc/pki" --roles vno,ro,pva,m2mes,sho-a >"$WORK/out" 2>&1; then ok "mcim pki init for the samples"
else bad "pki init: $(cat "$WORK/out")"; fi
sed -i "s#/var/lib/mcim#$WORK/var/lib/mcim#g; s#/var/log/mcim#$WORK/log#g" "$etc"/*.json
declare -A port url pid
n=0
for r in $roles; do
  n=$((n + 1))
  port[$r]=$(free_port)
  sed -i -E "s#\"listen_port\": 844$n\b#\"listen_port\": ${port[$r]}#" "$etc/$r.json"
  sed -i "s#127.0.0.1:844$n\"#127.0.0.1:${port[$r]}\"#g" "$etc/peers.json" "$etc/agent.json"
  url[$r]="https://127.0.0.1:${port[$r]}"
  mkdir -p "$WORK/var/lib/mcim/$r"
done
changed=$(diff <(cd "$EX" && cat $(for r in $roles; do echo "$r.json"; done) peers.json) \
               <(cd "$etc" && cat $(for r in $roles; do echo "$r.json"; done) peers.json) |
          grep '^>' | grep -vE '"listen_port"|"(database|storage_key|log_file)"|127\.0\.0\.1:' || true)
[ -z "$changed" ] && ok "the deployment differs from the samples only in paths and ports" ||
  bad "unexpected changes: $changed"
for r in $roles; do
  "$BIN/mcimd" --role "$(kind_of "$r")" --check-config "$etc/$r.json" >/dev/null 2>&1 ||
    bad "deployed $r.json does not pass --check-config"
done

ca="$etc/pki/ca/operators-ca.crt"
start() { # start NAME [OPTIONS...]: mcimd in the background, stderr to WORK/NAME.stderr
  local r="$1"
  shift
  "$BIN/mcimd" --role "$(kind_of "$r")" --config "$etc/$r.json" "$@" 2>"$WORK/$r.stderr" &
  pid[$r]=$!
  pids="$pids $!"
}
healthy() { # healthy NAME: /v1/health answers within 15 s (and the daemon did not exit)
  answers_or_died() { curl -sf --cacert "$ca" "${url[$1]}/v1/health" >/dev/null 2>&1 || gone "${pid[$1]}"; }
  wait_until 15 answers_or_died "$1" && running "${pid[$1]}"
}
for r in $roles; do start "$r"; done
for r in $roles; do
  if healthy "$r"; then ok "$r runs from docs/examples/$r.json"; else bad "$r does not start: $(tail -n 5 "$WORK/$r.stderr")"; fi
done
for r in $roles; do
  if curl -sf --cacert "$ca" -D "$WORK/hdr" "${url[$r]}/metrics" >"$WORK/metrics"; then
    if grep -qi '^content-type: text/plain; version=0.0.4' "$WORK/hdr" &&
       grep -q '^# TYPE mcim_http_requests_total counter' "$WORK/metrics" &&
       grep -q '^mcim_http_requests_total{method="GET",route="/v1/health",cause="OK"} [1-9]' "$WORK/metrics"; then
      ok "$r: GET /metrics (Prometheus text 0.0.4)"
    else
      bad "$r: /metrics: $(head -c 300 "$WORK/hdr")"
    fi
  else
    bad "$r: GET /metrics failed"
  fi
done
# peers.json: every URL answers with the name the file gives it
for r in $roles; do
  u=$(tr -d ' \n' <"$etc/peers.json" | grep -o "\"$r\":\"[^\"]*\"" | cut -d'"' -f4)
  curl -sf --cacert "$ca" "$u/v1/health" | grep -q "\"name\":\"$r\"" && ok "peers.json: $r at $u" ||
    bad "peers.json: $r at $u does not answer as $r"
done

# ---- 3. logs ----
rolog="$WORK/log/ro.log"
if json_lines "$rolog" && grep -q '"role":"ro"' "$rolog" && ! grep -qv '"role":"ro"' "$rolog"; then
  ok "ro.json: log_file gets JSON lines, role \"ro\""
else
  bad "ro log file: $(head -n 3 "$rolog" 2>/dev/null)"
fi
grep -q '"msg":"ro \\"ro\\" serving on https://127.0.0.1:' "$rolog" && ok "ro logs where it serves" ||
  bad "no start-up line in $rolog"
[ ! -s "$WORK/ro.stderr" ] && ok "ro: nothing on stderr with a log_file" || bad "ro stderr: $(head -c 300 "$WORK/ro.stderr")"
if json_lines "$WORK/vno.stderr" && grep -q '"role":"vno"' "$WORK/vno.stderr"; then ok "vno.json: JSON lines on stderr"
else bad "vno stderr: $(head -n 3 "$WORK/vno.stderr")"; fi
grep -Eq '^[0-9T:.-]+Z info +pva ' "$WORK/pva.stderr" && ok "pva.json: text lines" ||
  bad "pva stderr: $(head -n 3 "$WORK/pva.stderr")"
grep -q '"level":"info"' "$WORK/vno.stderr" && ! grep -q '"level":"debug"' "$WORK/vno.stderr" &&
  ok "log_level info: no debug line" || bad "vno log levels"

# the command line wins over the file
kill "${pid[vno]}"
wait "${pid[vno]}" 2>/dev/null || true
start vno --log-format text --log-level debug --log-file "$WORK/log/vno-cli.log"
if healthy vno; then ok "vno restarted with --log-format text --log-file"; else bad "vno restart"; fi
if grep -Eq '^[0-9T:.-]+Z debug +vno ' "$WORK/log/vno-cli.log" && ! grep -q '^{' "$WORK/log/vno-cli.log"; then
  ok "--log-format text and --log-level debug win over log_format json, log_level info"
else
  bad "vno-cli.log: $(head -n 3 "$WORK/log/vno-cli.log" 2>/dev/null)"
fi
[ ! -s "$WORK/vno.stderr" ] && ok "--log-file: nothing on stderr" || bad "vno stderr: $(head -c 300 "$WORK/vno.stderr")"

# SIGHUP reopens a log file moved away
mv "$rolog" "$rolog.1"
kill -HUP "${pid[ro]}"
reopened() { grep -q 'log file reopened' "$rolog" 2>/dev/null; }
health_logged() { grep -q '/v1/health' "$rolog"; }
if wait_until 5 reopened && curl -sf --cacert "$ca" "${url[ro]}/v1/health" >/dev/null &&
  wait_until 5 health_logged; then
  ok "SIGHUP: ro reopens its log file"
else
  bad "after SIGHUP: $(ls -la "$WORK/log")"
fi
kill -0 "${pid[ro]}" 2>/dev/null && ok "ro still runs after SIGHUP" || bad "SIGHUP stopped ro"

# SIGTERM stops them
for r in $roles; do kill "${pid[$r]}" 2>/dev/null || true; done
stopped=1
for r in $roles; do
  wait_until 10 gone "${pid[$r]}" || stopped=0
done
[ "$stopped" -eq 1 ] && ok "SIGTERM stops every daemon" || bad "a daemon ignores SIGTERM"

# ---- 4. systemd units ----
for u in mcimd@.service m2me@.service sho-a.env; do
  [ -f "$EX/systemd/$u" ] && ok "docs/examples/systemd/$u exists" || bad "docs/examples/systemd/$u missing"
done
grep -q '^ExecStartPre=/usr/bin/mcimd --role ${MCIM_KIND} --check-config /etc/mcim/%i.json$' "$EX/systemd/mcimd@.service" &&
  grep -q '^ExecStart=/usr/bin/mcimd --role ${MCIM_KIND} --config /etc/mcim/%i.json$' "$EX/systemd/mcimd@.service" &&
  ok "mcimd@.service: the instance name picks /etc/mcim/%i.json" || bad "mcimd@.service ExecStart lines"
grep -q '^ExecStart=/usr/bin/m2me --dir /var/lib/mcim/devices/%i' "$EX/systemd/m2me@.service" &&
  ok "m2me@.service: the instance name picks the device folder" || bad "m2me@.service ExecStart"
mkdir -p "$WORK/units"
sed "s#/usr/bin/mcimd#$BIN/mcimd#g" "$EX/systemd/mcimd@.service" >"$WORK/units/mcimd@vno.service"
sed "s#/usr/bin/m2me#$BIN/m2me#g" "$EX/systemd/m2me@.service" >"$WORK/units/m2me@dev1.service"
# --man=no: the units' Documentation= man pages exist once the package is installed;
# tests/integration/package.sh verifies the installed units with them (MANPATH in its root)
if systemd-analyze verify --man=no "$WORK/units/mcimd@vno.service" "$WORK/units/m2me@dev1.service" >"$WORK/out" 2>&1; then
  ok "systemd-analyze verify mcimd@vno.service m2me@dev1.service"
else
  bad "systemd-analyze verify: $(cat "$WORK/out")"
fi

finish
