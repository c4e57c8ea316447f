#!/usr/bin/env bash
# Static analysis of our own sources: cppcheck (errors fail the run).
# clang-tidy runs with `scripts/lint.sh BUILD --tidy` (slower; uses .clang-tidy).
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
if command -v cppcheck >/dev/null 2>&1; then
  cppcheck --quiet --error-exitcode=1 --std=c11 --inline-suppr \
    --enable=warning,portability --suppress=missingIncludeSystem --suppress=unknownMacro \
    -I include -I src src apps
fi
if [ "${2:-}" = "--tidy" ] && command -v clang-tidy >/dev/null 2>&1; then
  find src apps -name '*.c' -print0 | xargs -0 -n 8 -P "$(nproc)" clang-tidy -p "$build" --quiet
fi
echo "lint: ok"
