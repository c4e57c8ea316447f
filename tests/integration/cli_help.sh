#!/usr/bin/env bash
# The command line of every program, command and subcommand (mcim, mcimd, m2me), which all
# parse their options with one parser (include/mcim/opts.h):
#   - --help (and -h): exit 0, on stdout only, in the common layout: the "usage:" line(s)
#     first, then a description, an "options:" list holding -h/--help and every --option the
#     usage lines name, an "examples:" section with at least one example; no lab touched;
#   - an unknown option, a missing value, a value given to a flag, an extra or a missing
#     argument: exit 2 and exactly one line on stderr, "NAME: what (see NAME --help)";
#   - --opt=value and --opt value both reach the command, for at least one valued option of
#     each command (shown by what the command does with the value, or the error that follows
#     the parse and quotes it);
#   - --version of mcim, mcimd and m2me, and `mcim version`: exit 0, "PROGRAM VERSION
#     (commit COMMIT)" with this tree's version and a commit of this repository.
# Adding a command, a subcommand or an option means adding it here.
. "$(dirname "$0")/lib/common.bash"
need openssl timeout

BIN="$MCIM_BIN"
SRC="${MCIM_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}"
# a lab folder that does not exist: nothing here may need (or create) one
export MCIM_LAB="$tmp/no-lab"
nolab="$tmp/no-such-lab"

# run PROGRAM ARGS...: stdout in $tmp/out, stderr in $tmp/err, exit status in $rc.
run() {
  local prog=$1
  shift
  rc=0
  timeout 20 "$BIN/$prog" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
}

# ---- help: the common layout ----

# layout NAME: $tmp/out is a help in the common layout; prints what is wrong, if anything.
layout() {
  local f="$tmp/out" o e opt
  head -n1 "$f" | grep -q '^usage: ' || { echo "the first line is not \"usage: ...\""; return; }
  o=$(grep -n '^options:$' "$f" | head -n1 | cut -d: -f1)
  e=$(grep -n '^examples:$' "$f" | head -n1 | cut -d: -f1)
  [ -n "$o" ] || { echo "no \"options:\" section"; return; }
  [ -n "$e" ] || { echo "no \"examples:\" section"; return; }
  [ "$o" -lt "$e" ] || { echo "\"examples:\" before \"options:\""; return; }
  # a description between the usage lines and the options
  awk 'NR > 1 && /^$/ { b = 1; next } b && /^options:$/ { exit } b && /./ { d = 1 } END { exit !d }' \
    "$f" || { echo "no description between the usage and the options"; return; }
  sed -n "$((o + 1)),\$p" "$f" | grep -qE '^  -h, --help  ' || { echo "options: no \"  -h, --help\" line"; return; }
  sed -n "$((e + 1))p" "$f" | grep -qE '^  [a-z]' || { echo "examples: no indented example"; return; }
  # every --option of the usage lines is in the options list
  for opt in $(awk 'NR == 1 || (u && /^ /) { u = 1; print; next } { exit }' "$f" | grep -oE -- '--[a-z][a-z-]*' | sort -u); do
    sed -n "$((o + 1)),$((e - 1))p" "$f" | grep -qE -- "^  (-[a-zA-Z], )?$opt( |\$)" ||
      { echo "options: no line for $opt (named in the usage)"; return; }
  done
}

# help PROGRAM ARGS...: PROGRAM ARGS... --help and PROGRAM ARGS... -h
help() {
  local prog=$1 name why
  shift
  name="$prog${*:+ $*}"
  run "$prog" "$@" --help
  cp "$tmp/out" "$tmp/help"
  why=$(layout)
  if [ "$rc" -ne 0 ]; then bad "$name --help: exit $rc ($(head -c 300 "$tmp/err"))"
  elif [ -s "$tmp/err" ]; then bad "$name --help: wrote on stderr: $(head -c 300 "$tmp/err")"
  elif [ -n "$why" ]; then bad "$name --help: $why"
  else ok "$name --help: exit 0, usage, description, options, examples"; fi
  run "$prog" "$@" -h
  if [ "$rc" -eq 0 ] && cmp -s "$tmp/out" "$tmp/help"; then ok "$name -h is --help"
  else bad "$name -h: exit $rc, not the same text as --help"; fi
}

help mcimd
help m2me
help mcim
# every top-level command of `mcim --help`, so a new one cannot be forgotten
run mcim --help
commands=$(awk '/^commands:/ { c = 1; next } c && /^  [a-z]/ { print $1 } c && /^$/ { c = 0 }' "$tmp/out")
[ -n "$commands" ] && ok "mcim --help lists commands: $(echo $commands)" || bad "mcim --help lists no command"
for c in lab device run trace demo crypto bench pki pcid version loadgen; do
  echo " $commands " | tr '\n' ' ' | grep -q " $c " || bad "mcim --help does not list $c"
done
for c in $commands; do help mcim "$c"; done
# subcommands
subcommands=(
  "lab up" "lab down" "lab status" "lab device add" "lab restart"
  "device status" "device attach"
  "run initial" "run change" "run preload" "run switch"
  "crypto milenage" "crypto selftest" "bench milenage" "pki init" "pcid push"
)
for s in "${subcommands[@]}"; do
  # shellcheck disable=SC2086
  help mcim $s
done
# `mcim help` is `mcim --help`
run mcim --help
cp "$tmp/out" "$tmp/help"
run mcim help
[ "$rc" -eq 0 ] && cmp -s "$tmp/out" "$tmp/help" && ok "mcim help is mcim --help" || bad "mcim help (exit $rc)"

# ---- usage errors: exit 2, one line, the same form everywhere ----

# usage_error NAME EXPECTED PROGRAM ARGS...: exit 2, nothing on stdout, stderr is exactly the
# line EXPECTED.
usage_error() {
  local name=$1 want=$2
  shift 2
  run "$@"
  if [ "$rc" -ne 2 ]; then bad "$name: exit $rc, expected 2 ($(head -c 300 "$tmp/err"))"
  elif [ -s "$tmp/out" ]; then bad "$name: wrote on stdout: $(head -c 200 "$tmp/out")"
  elif [ "$(cat "$tmp/err")" != "$want" ]; then bad "$name: stderr was '$(head -c 300 "$tmp/err")', expected '$want'"
  else ok "$name: $want"; fi
}

# unknown options, for every program, command and subcommand
unknown() { # unknown NAME ARGS...: PROGRAM ARGS... --no-such-option is refused by NAME
  local name=$1
  shift
  usage_error "${*} --no-such-option" "$name: unknown option '--no-such-option' (see $name --help)" \
    "$@" --no-such-option
}
unknown mcimd mcimd
unknown m2me m2me
unknown mcim mcim
for c in $commands; do unknown "mcim $c" mcim "$c"; done
for s in "${subcommands[@]}"; do
  case $s in
    crypto\ *) name="mcim $s" ;;   # crypto's subcommands have parsers of their own
    *) name="mcim ${s%% *}" ;; # the command's parser
  esac
  # shellcheck disable=SC2086
  unknown "$name" mcim $s
done
usage_error "an unknown option with a value" \
  "mcim trace: unknown option '--colour' (see mcim trace --help)" mcim trace T --colour=red
usage_error "an unknown short option" "mcim trace: unknown option '-x' (see mcim trace --help)" \
  mcim trace T -x
usage_error "an abbreviation is not an option" \
  "mcim run: unknown option '--sh' (see mcim run --help)" mcim run initial dev1 --sh sho-a
usage_error "mcim: unknown command" "mcim: unknown command 'frobnicate' (see mcim --help)" \
  mcim frobnicate
usage_error "mcim: no command" "mcim: missing COMMAND (see mcim --help)" mcim

# a missing value: at the end, or the next argument is an option
usage_error "run --timeout at the end" \
  "mcim run: option '--timeout' needs a value (see mcim run --help)" mcim run initial dev1 --timeout
usage_error "run --sho followed by an option" \
  "mcim run: option '--sho' needs a value (see mcim run --help)" mcim run initial dev1 --sho --json
usage_error "lab --dir" "mcim lab: option '--dir' needs a value (see mcim lab --help)" mcim lab up --dir
usage_error "device --to" "mcim device: option '--to' needs a value (see mcim device --help)" \
  mcim device attach dev1 --to
usage_error "pcid --txn" "mcim pcid: option '--txn' needs a value (see mcim pcid --help)" \
  mcim pcid push dev1 --txn
usage_error "trace -o" "mcim trace: option '-o' needs a value (see mcim trace --help)" mcim trace T -o
usage_error "demo --out" "mcim demo: option '--out' needs a value (see mcim demo --help)" mcim demo --out
usage_error "crypto milenage --k" \
  "mcim crypto milenage: option '--k' needs a value (see mcim crypto milenage --help)" \
  mcim crypto milenage --k
usage_error "bench milenage --seconds" \
  "mcim bench: option '--seconds' needs a value (see mcim bench --help)" mcim bench milenage --seconds
usage_error "pki init --days" "mcim pki: option '--days' needs a value (see mcim pki --help)" \
  mcim pki init "$tmp/pki-x" --days
usage_error "mcimd --config" "mcimd: option '--config' needs a value (see mcimd --help)" \
  mcimd --role vno --config
usage_error "m2me --dir" "m2me: option '--dir' needs a value (see m2me --help)" m2me --dir
# a value given to a flag
usage_error "run --json=yes" "mcim run: option '--json' takes no value (see mcim run --help)" \
  mcim run initial dev1 --sho sho-a --json=yes
usage_error "lab --tamper=1" "mcim lab: option '--tamper' takes no value (see mcim lab --help)" \
  mcim lab device add dev1 --tamper=1
usage_error "lab --tre hsm" "mcim lab: --tre is soft or tpm, not 'hsm' (see mcim lab --help)" \
  mcim lab device add dev1 --tre hsm
usage_error "lab --tre" "mcim lab: option '--tre' needs a value (see mcim lab --help)" \
  mcim lab device add dev1 --tre
usage_error "m2me --check-config=FILE" \
  "m2me: option '--check-config' takes no value (see m2me --help)" m2me --dir "$nolab" --check-config=x
usage_error "mcimd --version=1" "mcimd: option '--version' takes no value (see mcimd --help)" \
  mcimd --version=1
# an option given twice where once is the rule
usage_error "crypto milenage --k twice" \
  "mcim crypto milenage: option '--k' given more than once (see mcim crypto milenage --help)" \
  mcim crypto milenage --k 00 --k=00
# extra and missing arguments
usage_error "run: an extra argument" "mcim run: unexpected argument 'extra' (see mcim run --help)" \
  mcim run initial dev1 extra --sho sho-a
usage_error "run: no device" "mcim run: missing NAME, the device (see mcim run --help)" \
  mcim run initial --sho sho-a
usage_error "lab up: an extra argument" "mcim lab: unexpected argument 'extra' (see mcim lab --help)" \
  mcim lab up extra
usage_error "lab device add: no name" \
  "mcim lab: device add needs NAME (see mcim lab --help)" mcim lab device add
usage_error "device: unknown subcommand" \
  "mcim device: unknown subcommand 'frob' (see mcim device --help)" mcim device frob dev1
usage_error "pcid: no device" "mcim pcid: missing DEVICE (see mcim pcid --help)" mcim pcid push
usage_error "trace: no TXID" "mcim trace: missing TXID (see mcim trace --help)" mcim trace --format text
usage_error "trace: two TXIDs" "mcim trace: unexpected argument 'b' (see mcim trace --help)" mcim trace a b
usage_error "demo: an argument" "mcim demo: unexpected argument 'now' (see mcim demo --help)" mcim demo now
usage_error "crypto: no subcommand" \
  "mcim crypto: missing the subcommand: milenage or selftest (see mcim crypto --help)" mcim crypto
usage_error "crypto selftest: an argument" \
  "mcim crypto selftest: unexpected argument 'x' (see mcim crypto selftest --help)" mcim crypto selftest x
usage_error "bench: unknown subcommand" "mcim bench: unknown subcommand 'x' (see mcim bench --help)" \
  mcim bench x
usage_error "pki init: no DIR" "mcim pki: init needs DIR (see mcim pki --help)" mcim pki init
usage_error "pki init: two DIRs" "mcim pki: unexpected argument 'b' (see mcim pki --help)" \
  mcim pki init a b
usage_error "version: an argument" "mcim version: unexpected argument 'x' (see mcim version --help)" \
  mcim version x
usage_error "mcimd: an argument" "mcimd: unexpected argument 'vno' (see mcimd --help)" mcimd vno
usage_error "m2me: no --dir" "m2me: --dir DEVICE_DIR is required (see m2me --help)" m2me

# ---- --opt=value and --opt value: the command gets the value either way ----

# both NAME WANT_RC TEXT PROGRAM ARGS...: ARGS holds one "--opt=value"; the command exits
# WANT_RC with TEXT (a fixed string) on stderr, written as --opt=value and as --opt value.
both() {
  local name=$1 want=$2 text=$3 prog=$4 a split=()
  shift 4
  for a in "$@"; do
    case $a in --*=*) split+=("${a%%=*}" "${a#*=}") ;; *) split+=("$a") ;; esac
  done
  for form in joined split; do
    if [ $form = joined ]; then run "$prog" "$@"; else run "$prog" "${split[@]}"; fi
    if [ "$rc" -eq "$want" ] && grep -qF -- "$text" "$tmp/err"; then
      ok "$name ($form: $([ $form = joined ] && echo "--opt=value" || echo "--opt value")): exit $rc, '$text'"
    else
      bad "$name ($form): exit $rc, expected $want and '$text' on stderr: $(head -c 300 "$tmp/err")"
    fi
  done
}
both "run --dir" 1 "no lab in $nolab" mcim run initial dev1 --sho=sho-a --dir="$nolab"
both "run --timeout" 2 "--timeout wants seconds, got 'soon'" mcim run initial dev1 --sho=sho-a --timeout=soon
# trailing junk and a value whose milliseconds overflow an int: refused, not read as 12 / UB
both "run --timeout junk" 2 "--timeout wants seconds, got '12abc'" mcim run initial dev1 --sho=sho-a --timeout=12abc
both "run --timeout large" 2 "--timeout wants seconds, got '3000000'" mcim run initial dev1 --sho=sho-a --timeout=3000000
both "run: options before the arguments" 1 "no lab in $nolab" mcim run --dir="$nolab" --to=sho-b change dev1 --via=pristine
both "lab status --dir" 1 "no lab in $nolab" mcim lab status --dir="$nolab"
both "lab up --store" 2 "--store is sqlite or postgres, not 'mysql'" mcim lab up --store=mysql --dir="$nolab"
both "lab up --auc" 2 "--auc is builtin or osmo-hlr, not 'hss'" mcim lab up --auc=hss --dir="$nolab"
both "demo --auc" 2 "--auc is builtin or osmo-hlr, not 'hss'" mcim demo --auc=hss --out="$tmp/demo-auc"
both "device attach --to --dir" 1 "no lab in $nolab" mcim device attach dev1 --to=sho-a --dir="$nolab"
both "pcid push --txn" 2 "--txn takes 32 lower-case hex digits" mcim pcid push dev1 --txn=xyz
both "pcid push --dir" 1 "no lab in $nolab" mcim pcid push dev1 --dir="$nolab"
both "trace --format" 2 "not 'bogus'" mcim trace T --format=bogus
both "trace --dir" 1 "no lab in $nolab" mcim trace T --format=json --dir="$nolab"
both "trace: after --, an argument" 1 "no lab in $nolab" mcim trace --dir="$nolab" -- --txid-like
run mcim trace T -o"$tmp/x" --dir "$nolab"
[ "$rc" -eq 1 ] && grep -qF "no lab in $nolab" "$tmp/err" && ok "trace -oFILE: exit 1, no lab" ||
  bad "trace -oFILE: exit $rc: $(head -c 300 "$tmp/err")"
touch "$tmp/a-file"
both "demo --out" 1 "$tmp/a-file exists and is not a folder" mcim demo --out="$tmp/a-file"
both "bench milenage --seconds" 2 "got 'soon'" mcim bench milenage --seconds=soon
both "mcimd --check-config" 1 "$nolab.json" mcimd --role=vno --check-config="$nolab.json"
both "mcimd --role" 2 "--role 'frob' is not a kind" mcimd --role=frob --describe-config
both "mcimd --log-format" 2 "--log-format is text or json, not 'xml'" mcimd --role=vno --config=x --log-format=xml
both "m2me --dir" 1 "$nolab/agent.json" m2me --dir="$nolab" --check-config
both "m2me --log-level" 2 "not 'loud'" m2me --dir="$nolab" --log-level=loud
# the same result either way: the Milenage of TS 35.208 test set 1, the PKI, the configuration
# reference
K=465b5ce8b199b49faa5f0a2ee238a6bc OP=cdc202d5123e20f62b6d676ac72cb318
RAND=23553cbe9637a89d218ae64dae47bf35 SQN=ff9bb4d0b607 AMF=b9b9
run mcim crypto milenage --k="$K" --op="$OP" --rand="$RAND" --sqn="$SQN" --amf="$AMF"
cp "$tmp/out" "$tmp/joined"
run mcim crypto milenage --k "$K" --op "$OP" --rand "$RAND" --sqn "$SQN" --amf "$AMF"
[ "$rc" -eq 0 ] && grep -q '"res": "a54211d5e3ba50bf"' "$tmp/out" && cmp -s "$tmp/out" "$tmp/joined" &&
  ok "crypto milenage: --k=HEX and --k HEX give test set 1's RES" || bad "crypto milenage: the two forms differ (exit $rc)"
for form in joined split; do
  if [ $form = joined ]; then run mcim pki init "$tmp/pki-$form" --roles=sho-z --days=7
  else run mcim pki init "$tmp/pki-$form" --roles sho-z --days 7; fi
  cert="$tmp/pki-$form/sho-z/cert.pem"
  # --days 7: valid 6 days from now, expired in 8
  if [ "$rc" -eq 0 ] && [ -s "$cert" ] && [ ! -e "$tmp/pki-$form/vno" ] &&
    openssl x509 -in "$cert" -noout -checkend $((6 * 86400)) >/dev/null 2>&1 &&
    ! openssl x509 -in "$cert" -noout -checkend $((8 * 86400)) >/dev/null 2>&1; then
    ok "pki init --roles, --days ($form): only sho-z, for 7 days"
  else
    bad "pki init --roles, --days ($form): exit $rc $(head -c 300 "$tmp/err")"
  fi
done
run mcimd --role=sho --describe-config
cp "$tmp/out" "$tmp/joined"
run mcimd --role sho --describe-config
[ "$rc" -eq 0 ] && grep -q '^plmn ' "$tmp/out" && cmp -s "$tmp/out" "$tmp/joined" &&
  ok "mcimd --role=sho and --role sho: the same configuration reference (with plmn)" ||
  bad "mcimd --describe-config: the two forms differ (exit $rc)"

# ---- --version ----

version=$(sed -n 's/^project(mcim VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
[ -n "$version" ] || bad "no project version in $SRC/CMakeLists.txt"
# version_of NAME PROGRAM ARGS...: the first line is "NAME VERSION (commit C)", C a commit of
# this repository (or "unknown" outside a git checkout), "-dirty" allowed.
version_of() {
  local name=$1 line commit
  shift
  run "$@"
  line=$(head -n1 "$tmp/out")
  commit=$(echo "$line" | sed -n "s/^$name $version (commit \([0-9a-f]\{7,40\}\(-dirty\)\{0,1\}\|unknown\))\$/\1/p")
  if [ "$rc" -ne 0 ] || [ -s "$tmp/err" ]; then bad "$*: exit $rc $(head -c 200 "$tmp/err")"
  elif [ -z "$commit" ]; then bad "$*: '$line', expected '$name $version (commit ...)'"
  elif [ "$commit" != unknown ] && [ -d "$SRC/.git" ] &&
    ! git -C "$SRC" cat-file -e "${commit%-dirty}^{commit}" 2>/dev/null; then
    bad "$*: commit $commit is not a commit of $SRC"
  else ok "$*: $line"; fi
}
version_of mcim mcim --version
cp "$tmp/out" "$tmp/v-mcim"
version_of mcimd mcimd --version
version_of m2me m2me --version
version_of mcim mcim version
cmp -s "$tmp/out" "$tmp/v-mcim" && ok "mcim version is mcim --version" || bad "mcim version differs from mcim --version"
# --version wins over what else the daemons need (no --role, no --dir)
version_of mcimd mcimd --log-level debug --version

# nothing of it touched a lab
[ ! -e "$MCIM_LAB" ] && [ ! -e "$nolab" ] && ok "no lab folder was created" || bad "a lab folder was created"

finish
