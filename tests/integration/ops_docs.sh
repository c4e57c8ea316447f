#!/usr/bin/env bash
# docs/operations.md against the programs:
#   - each "describe-config" block is exactly what `mcimd --role KIND --describe-config`
#     (the common keys: kind vno, which has no others; then each kind's own keys after them)
#     and `m2me --describe-config` print;
#   - every metric of the catalogue (src/core/metrics.c) is in the table "Every metric", and
#     the table names no metric the catalogue lacks;
#   - every metric's HELP text that names a TS 28.552 measurement is in the mapping table.
set -eu

BIN="${MCIM_BIN:?MCIM_BIN must be the bin folder of a build}"
SRC="${MCIM_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}"
DOC="$SRC/docs/operations.md"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcim-ops-docs.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }

block() { # block NAME: the text block after "<!-- describe-config NAME -->"
  awk -v name="$1" '
    $0 == "<!-- describe-config " name " -->" { want = 1; next }
    want && /^```text$/ { on = 1; next }
    on && /^```$/ { exit }
    on { print }' "$DOC"
}

"$BIN/mcimd" --role vno --describe-config >"$WORK/common"
ncommon=$(wc -l <"$WORK/common")
block common >"$WORK/doc"
if [ -s "$WORK/doc" ] && cmp -s "$WORK/common" "$WORK/doc"; then ok "operations.md: the common keys"
else bad "operations.md: the common keys differ from mcimd --describe-config:"; diff "$WORK/doc" "$WORK/common" | head -20; fi
for k in ro sho pva m2mes; do
  "$BIN/mcimd" --role "$k" --describe-config >"$WORK/all"
  if ! head -n "$ncommon" "$WORK/all" | cmp -s - "$WORK/common"; then
    bad "kind $k: its reference does not start with the common keys"
    continue
  fi
  tail -n +"$((ncommon + 1))" "$WORK/all" >"$WORK/own"
  block "$k" >"$WORK/doc"
  if cmp -s "$WORK/own" "$WORK/doc"; then ok "operations.md: the keys of kind $k"
  else bad "operations.md: the keys of kind $k differ:"; diff "$WORK/doc" "$WORK/own" | head -20; fi
done
"$BIN/mcimd" --role vno --describe-config | cmp -s - "$WORK/common" && ok "kind vno has the common keys only" ||
  bad "kind vno has keys of its own now: document them"
"$BIN/m2me" --describe-config >"$WORK/agent"
block agent >"$WORK/doc"
if [ -s "$WORK/doc" ] && cmp -s "$WORK/agent" "$WORK/doc"; then ok "operations.md: agent.json keys"
else bad "operations.md: agent.json keys differ:"; diff "$WORK/doc" "$WORK/agent" | head -20; fi
# every kind of mcimd --help is covered
kinds=$("$BIN/mcimd" --help | awk '/^kinds:/ { k = 1; next } k && /^  [a-z]/ { print $1 } k && /^$/ { k = 0 }')
for k in $kinds; do
  case " vno ro sho pva m2mes " in *" $k "*) ;; *) bad "kind $k (mcimd --help) is not in operations.md" ;; esac
done

# metrics: the catalogue's names against the table
grep -oE '^    "mcim_[a-z0-9_]+"' "$SRC/src/core/metrics.c" | tr -d ' "' | sort -u >"$WORK/catalogue"
[ -s "$WORK/catalogue" ] && ok "$(wc -l <"$WORK/catalogue") metrics in the catalogue" || bad "no metric read from metrics.c"
awk '/^### Every metric/ { t = 1; next } t && /^#/ { t = 0 } t' "$DOC" | grep -oE '^\| `mcim_[a-z0-9_]+`' |
  tr -d '|` ' | sort -u >"$WORK/table"
while read -r m; do
  grep -qxF "$m" "$WORK/table" && ok "documented: $m" || bad "metric $m is not in operations.md's table"
done <"$WORK/catalogue"
while read -r m; do
  grep -qxF "$m" "$WORK/catalogue" || bad "operations.md documents $m, which the code does not have"
done <"$WORK/table"
# the 28.552 names of the HELP texts are in the mapping table
grep -oE 'TS 28\.552 [A-Za-z]+\.[A-Za-z.]+' "$SRC/src/core/metrics.c" | awk '{print $3}' | sed 's/\.$//' | sort -u |
  while read -r n; do
    if awk '/^### TS 28.552 mapping/ { t = 1; next } t && /^#/ { t = 0 } t' "$DOC" | grep -q "| $n |"; then
      echo "ok   mapping of $n"
    else
      echo "FAIL $n (named in a HELP text) is not in the TS 28.552 mapping table"
    fi
  done >"$WORK/map"
while read -r l; do case "$l" in ok*) ok "${l#ok   }" ;; *) bad "${l#FAIL }" ;; esac; done <"$WORK/map"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
