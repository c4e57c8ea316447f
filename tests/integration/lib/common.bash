# Shared helpers of the integration tests (sourced). Each test gets its own lab folder and
# ports, so tests may run in parallel; the lab is always torn down on exit.
set -eu

mcim="${MCIM_BIN:?MCIM_BIN must point at the build bin dir}/mcim"
tmp=$(mktemp -d /tmp/mcim-it-XXXXXX)
lab="$tmp/lab"
passed=0
failed=0

cleanup() {
  "$mcim" lab down --dir "$lab" >/dev/null 2>&1 || true
  if [ "$failed" -ne 0 ] && [ -d "$lab" ]; then
    echo "--- logs of the failed run ---"
    for f in "$lab"/*/*.log "$lab"/devices/*/agent.log; do
      [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok    $1"; }
bad() { failed=$((failed + 1)); echo "FAIL  $1"; }
check() { # check NAME CMD...: passes if CMD succeeds
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>"$tmp/err"; then ok "$name"; else bad "$name: $(head -c 600 "$tmp/err")"; fi
}
check_fails() { # check_fails NAME CMD...: passes if CMD fails
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>"$tmp/err"; then bad "$name: succeeded, expected failure"; else ok "$name"; fi
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
