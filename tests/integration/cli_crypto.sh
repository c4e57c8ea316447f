#!/usr/bin/env bash
# `mcim crypto`: known answers from TS 35.208 test set 1 (published values,
# typed in here, not produced by mcim), usage errors (exit 2, field named on
# stderr), --help, selftest. Needs MCIM_BIN (set by ctest).
set -eu

mcim="${MCIM_BIN:?MCIM_BIN must point at the build bin dir}/mcim"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok    $1"; }
bad() { failed=$((failed + 1)); echo "FAIL  $1"; }

# run NAME EXPECTED_RC ARGS...: runs mcim, keeps stdout/stderr in $tmp/out, $tmp/err.
run() {
  local name=$1 want=$2 rc=0
  shift 2
  "$mcim" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [ "$rc" -eq "$want" ]; then ok "$name (exit $rc)"; else bad "$name: exit $rc, expected $want"; fi
}

# field NAME: the value of "NAME" in the JSON on $tmp/out (compact or indented).
field() {
  tr -d ' \n' <"$tmp/out" | grep -o "\"$1\":\"[0-9a-f]*\"" | cut -d'"' -f4 || true
}

expect_field() {
  local got
  got=$(field "$1")
  if [ "$got" = "$2" ]; then ok "$3: $1"; else bad "$3: $1 = '$got', expected '$2'"; fi
}

# stderr_has TEXT NAME: the error names the field / problem, on one line.
stderr_has() {
  if grep -qF -- "$1" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]; then
    ok "$2: stderr says '$1'"
  else
    bad "$2: stderr was '$(cat "$tmp/err")', expected one line containing '$1'"
  fi
}

# TS 35.208 test set 1 (= TS 35.207 test set 1), section 4.3.1.
K=465b5ce8b199b49faa5f0a2ee238a6bc
RAND=23553cbe9637a89d218ae64dae47bf35
SQN=ff9bb4d0b607
AMF=b9b9
OP=cdc202d5123e20f62b6d676ac72cb318
OPC=cd63cb71954a9f4e48a5994e37a02baf
check_set1() {
  expect_field opc "$OPC" "$1"
  expect_field mac_a 4a9ffac354dfafb3 "$1"
  expect_field mac_s 01cfaf9ec4e871e9 "$1"
  expect_field res a54211d5e3ba50bf "$1"
  expect_field ck b40ba9a3c58b2a05bbf0d987b21bf8cb "$1"
  expect_field ik f769bcd751044604127672711c6d3441 "$1"
  expect_field ak aa689c648370 "$1"
  expect_field ak_star 451e8beca43b "$1"
}

run "set 1 with --op" 0 crypto milenage --k $K --op $OP --rand $RAND --sqn $SQN --amf $AMF
check_set1 "set 1 with --op"
if [ "$(grep -c '^{' "$tmp/out")" -eq 1 ] && [ ! -s "$tmp/err" ]; then
  ok "one JSON object, nothing on stderr"
else
  bad "output is not one JSON object / stderr not empty"
fi

run "set 1 with --opc, --x=V form, upper case" 0 crypto milenage --k=${K^^} --opc=$OPC \
  --rand $RAND --sqn=$SQN --amf ${AMF^^}
check_set1 "set 1 with --opc"

# TS 35.208 test set 19: AUTN as published in RFC 5448 Appendix C (test case 1).
run "set 19 autn" 0 crypto milenage --k 5122250214c33e723a5dd523fc145fc0 \
  --op c9e8763286b5b9ffbdf56e1297d0887b --rand 81e92b6c0ee0e12ebceba8d92a99dfa5 \
  --sqn 16f3b3f70fc2 --amf c3ab
expect_field autn bb52e91c747ac3ab2a5c23d15ee351d5 "set 19"
expect_field res 28d7b0f2a2ec3de5 "set 19"

# Usage errors: exit 2, one line on stderr naming the field.
args_ok=(--op "$OP" --rand "$RAND" --sqn "$SQN" --amf "$AMF")
run "K too short" 2 crypto milenage --k ${K:0:30} "${args_ok[@]}"
stderr_has "mcim crypto milenage: --k: expected 32 hex digits, got 30" "K too short"
run "K not hex" 2 crypto milenage --k ${K:0:31}z "${args_ok[@]}"
stderr_has "--k: not hexadecimal" "K not hex"
run "SQN too long" 2 crypto milenage --k $K --op $OP --rand $RAND --sqn ${SQN}00 --amf $AMF
stderr_has "--sqn: expected 12 hex digits, got 14" "SQN too long"
run "AMF empty" 2 crypto milenage --k $K --op $OP --rand $RAND --sqn $SQN --amf=
stderr_has "--amf: expected 4 hex digits, got 0" "AMF empty"
run "RAND missing" 2 crypto milenage --k $K --op $OP --sqn $SQN --amf $AMF
stderr_has "--rand: required" "RAND missing"
run "value missing" 2 crypto milenage --k $K --op $OP --rand $RAND --sqn $SQN --amf
stderr_has "mcim crypto milenage: option '--amf' needs a value" "value missing"
run "value missing before next option" 2 crypto milenage --k --op $OP --rand $RAND --sqn $SQN --amf $AMF
stderr_has "mcim crypto milenage: option '--k' needs a value" "value missing before next option"
run "K twice" 2 crypto milenage --k $K --k $K "${args_ok[@]}"
stderr_has "mcim crypto milenage: option '--k' given more than once" "K twice"
run "both OP and OPc" 2 crypto milenage --k $K --op $OP --opc $OPC --rand $RAND --sqn $SQN --amf $AMF
stderr_has "--op, --opc: give one of them, not both" "both OP and OPc"
run "neither OP nor OPc" 2 crypto milenage --k $K --rand $RAND --sqn $SQN --amf $AMF
stderr_has "--op or --opc" "neither OP nor OPc"
run "unknown option" 2 crypto milenage --k $K --frobnicate 1 "${args_ok[@]}"
stderr_has "unknown option '--frobnicate'" "unknown option"
run "stray argument" 2 crypto milenage $K "${args_ok[@]}"
stderr_has "unexpected argument" "stray argument"
run "unknown subcommand" 2 crypto frobnicate
run "no subcommand" 2 crypto

# Help: exit 0, usage with an example on stdout.
run "crypto milenage --help" 0 crypto milenage --help
if grep -q "^usage: mcim crypto milenage" "$tmp/out" && grep -q "example" "$tmp/out"; then
  ok "help shows usage and an example"
else
  bad "help text lacks usage or example"
fi
run "crypto --help" 0 crypto --help

# Self-test: every published set, one line each, and a summary.
run "crypto selftest" 0 crypto selftest
if [ "$(grep -c '^ok ' "$tmp/out")" -eq 21 ] && grep -q "21 passed, 0 failed" "$tmp/out"; then
  ok "selftest: 21 sets ok"
else
  bad "selftest output unexpected: $(tail -1 "$tmp/out")"
fi

# The bench contract: last line av_per_s=N.
run "bench milenage" 0 bench milenage --seconds 0.2
if tail -1 "$tmp/out" | grep -Eq '^av_per_s=[0-9]+$'; then ok "bench last line"; else bad "bench last line: $(tail -1 "$tmp/out")"; fi
run "bench bad seconds" 2 bench milenage --seconds -1
stderr_has "--seconds" "bench bad seconds"

echo "cli_crypto: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
