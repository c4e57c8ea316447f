#!/usr/bin/env bash
# Static analysis of our own sources: cppcheck (errors fail the run).
# clang-tidy runs with `scripts/lint.sh BUILD --tidy` (slower; uses .clang-tidy).
# A missing tool fails the run (scripts/deps.sh installs them): "lint: ok" means it ran.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
tidy=0
[ "${2:-}" = "--tidy" ] && tidy=1
need=(cppcheck)
[ "$tidy" -eq 1 ] && need+=(clang-tidy)
for t in "${need[@]}"; do
  command -v "$t" >/dev/null 2>&1 || { echo "lint: $t is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
cppcheck --quiet --error-exitcode=1 --std=c11 --inline-suppr \
  --enable=warning,portability --suppress=missingIncludeSystem --suppress=unknownMacro \
  -I include -I src src apps
if [ "$tidy" -eq 1 ]; then
  find src apps -name '*.c' -print0 | xargs -0 -n 8 -P "$(nproc)" clang-tidy -p "$build" --quiet
fi
echo "lint: ok"
