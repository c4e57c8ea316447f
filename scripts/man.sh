#!/usr/bin/env bash
# A man page from a program's --help, with help2man (cmake/install.cmake runs it at build time).
#
#   scripts/man.sh PROGRAM SECTION "WHAT IT IS" VERSION INCLUDE OUT
#
# The help text is what the program prints; this script only reshapes it for help2man:
#   - "usage:" becomes "Usage:", its wrapped lines are joined and each further form of the
#     command becomes an "  or:  PROGRAM ..." line (SYNOPSIS);
#   - "options:" becomes "Options:" (OPTIONS, one entry per option);
#   - the "examples:" block goes to an EXAMPLES section kept line for line (help2man would
#     fill it as prose);
#   - a program with a "commands:" list (mcim) gets a COMMANDS section holding each
#     command's own --help, line for line.
# INCLUDE (help2man --include format: "[SECTION]" then roff) adds what --help does not say:
# FILES, ENVIRONMENT, EXIT STATUS, SEE ALSO. The version is VERSION (the project's, from
# CMakeLists.txt), not the program's --version, so the page does not change with each commit.
# OUT ending in .gz is compressed (gzip -9n, as Debian ships man pages).
set -euo pipefail

if [ "$#" -ne 6 ]; then
  echo "usage: $0 PROGRAM SECTION DESCRIPTION VERSION INCLUDE OUT" >&2
  exit 2
fi
prog=$1 section=$2 what=$3 version=$4 include=$5 out=$6
base=$(basename "$prog")
command -v help2man >/dev/null || { echo "$0: help2man is not installed (scripts/deps.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/mcim-man.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$prog" --help >"$work/help.txt" 2>&1 || {
  echo "$0: $prog --help failed:" >&2
  cat "$work/help.txt" >&2
  exit 1
}
[ -s "$work/help.txt" ] || { echo "$0: $prog --help printed nothing" >&2; exit 1; }

# roff for text kept line for line: backslashes, dashes, leading dots and quotes escaped.
roff_lines() {
  sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\([.']\)/\\\\\&\1/"
}

# The help text for help2man (help.h2m) and the examples (examples.txt).
awk -v prog="$base" -v ex="$work/examples.txt" '
  function flush() { if (pending != "") { print pending; pending = "" } }
  BEGIN { state = "usage" }
  state == "usage" && NR == 1 && /^usage: / { pending = "Usage:" substr($0, 7); next }
  state == "usage" && pending != "" && /^[ \t]+[^ \t]/ {
    line = $0
    sub(/^[ \t]+/, "", line)
    if (index(line, prog " ") == 1 || line == prog) { flush(); pending = "  or:  " line }
    else pending = pending " " line
    next
  }
  state == "usage" { flush(); state = "text" }
  state == "examples" && (/^[ \t]/ || /^$/) { print > ex; next }
  state == "examples" { state = "text" }
  /^examples?:$/ { state = "examples"; next }
  /^options:$/ { print "Options:"; next }
  { print }
  END { flush() }
' "$work/help.txt" >"$work/help.h2m"

: >"$work/include.h2m"
if [ -s "$work/examples.txt" ]; then
  {
    echo "[EXAMPLES]"
    echo ".nf"
    # drop the common indentation and the trailing blank lines
    sed -e 's/^  //' "$work/examples.txt" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' | roff_lines
    echo ".fi"
  } >>"$work/include.h2m"
fi

# mcim: one subsection per command, from `mcim COMMAND --help`.
commands=$(awk '/^commands:$/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }' "$work/help.txt")
if [ -n "$commands" ]; then
  echo "[COMMANDS]" >>"$work/include.h2m"
  echo "Each command's \\fB\\-\\-help\\fR, as the program prints it." >>"$work/include.h2m"
  for c in $commands; do
    if ! "$prog" "$c" --help >"$work/cmd.txt" 2>&1; then
      echo "$0: $base $c --help failed:" >&2
      cat "$work/cmd.txt" >&2
      exit 1
    fi
    {
      echo ".SS \"$base $c\""
      echo ".nf"
      roff_lines <"$work/cmd.txt"
      echo ".fi"
    } >>"$work/include.h2m"
  done
fi
if [ -n "$include" ]; then
  cat "$include" >>"$work/include.h2m"
fi

# help2man runs PROGRAM --help: a stand-in named like the program prints the reshaped text.
mkdir "$work/bin"
printf '#!/bin/sh\ncat "%s"\n' "$work/help.h2m" >"$work/bin/$base"
chmod +x "$work/bin/$base"
help2man --no-info --section="$section" --name="$what" --version-string="$version" \
  --include="$work/include.h2m" --output="$work/page" "$work/bin/$base"

mkdir -p "$(dirname "$out")"
case "$out" in
  *.gz) gzip -9n <"$work/page" >"$out.tmp" ;;
  *) cp "$work/page" "$out.tmp" ;;
esac
mv "$out.tmp" "$out"
