#!/usr/bin/env bash
# `--help` of every program, command and subcommand: exit status 0, a "usage:" line and at
# least one example (the word "example"), on standard output. Adding a command or a
# subcommand means adding it here.
set -eu

BIN="${MCIM_BIN:?MCIM_BIN must be the bin folder of a build}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcim-cli-help.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }

# help PROGRAM ARGS...: PROGRAM ARGS... --help
help() {
  local prog="$1" name rc=0
  shift
  name="$prog${*:+ $*} --help"
  # a lab folder that does not exist: --help must not need (nor touch) one
  MCIM_LAB="$WORK/no-lab" timeout 20 "$BIN/$prog" "$@" --help >"$WORK/out" 2>"$WORK/err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    bad "$name: exit $rc ($(head -c 300 "$WORK/err"))"
  elif ! grep -q '^usage: ' "$WORK/out"; then
    bad "$name: no \"usage:\" line on stdout"
  elif ! grep -qi 'example' "$WORK/out"; then
    bad "$name: no example"
  else
    ok "$name"
  fi
}

help mcimd
help m2me
help mcim
# every top-level command of `mcim --help`, so a new one cannot be forgotten
commands=$("$BIN/mcim" --help | awk '/^commands:/ { c = 1; next } c && /^  [a-z]/ { print $1 } c && /^$/ { c = 0 }')
[ -n "$commands" ] && ok "mcim --help lists commands: $(echo $commands)" || bad "mcim --help lists no command"
for c in $commands; do help mcim "$c"; done
for c in lab device run trace demo crypto bench pki pcid; do
  echo " $commands " | tr '\n' ' ' | grep -q " $c " || bad "mcim --help does not list $c"
done
# subcommands
help mcim lab up
help mcim lab down
help mcim lab status
help mcim lab device add
help mcim lab restart
help mcim device status
help mcim device attach
help mcim run initial
help mcim run change
help mcim run preload
help mcim run switch
help mcim crypto milenage
help mcim crypto selftest
help mcim bench milenage
help mcim pki init
help mcim pcid push
# `mcim help` is `mcim --help`
rc=0
"$BIN/mcim" help >"$WORK/out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] && grep -q '^usage: ' "$WORK/out" && ok "mcim help" || bad "mcim help (exit $rc)"
# no lab folder was created by any of it
[ ! -e "$WORK/no-lab" ] && ok "--help touches no lab folder" || bad "--help created $WORK/no-lab"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
