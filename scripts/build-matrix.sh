#!/usr/bin/env bash
# Configure and build (no tests run) every standard build: gcc and clang, each of Debug,
# RelWithDebInfo, Release and MinSizeRel, with Debian's hardening flags (dpkg-buildflags,
# DEB_BUILD_MAINT_OPTIONS=hardening=+all) and warnings as errors (MCIM_WERROR=ON).
# Stops at the first failure and says which combination failed.
#
# Usage: scripts/build-matrix.sh [DIR]      (DIR defaults to build-matrix; builds in DIR/<cc>-<type>)
# Environment:
#   MATRIX_CC      compilers to use            (default "gcc clang")
#   MATRIX_TYPES   build types to use          (default "Debug RelWithDebInfo Release MinSizeRel")
#   MATRIX_FULL    combinations that also build the unit tests and bench/, as <cc>-<type>
#                  ("all" for every one, the default; "" or "none" for none). The others build the
#                  library and the programs only (MCIM_TESTS=OFF, MCIM_BENCH=OFF).
#   JOBS           parallel compile jobs       (default: nproc)
#   CMAKE_FLAGS    more -D options for every configure
#
# Debug takes its flags from dpkg-buildflags with DEB_BUILD_OPTIONS=noopt (-O0, and so no
# _FORTIFY_SOURCE, which needs optimisation), the other types from the default (-O2); the build
# type's own flags come after them (-O3 for Release, -Os for MinSizeRel).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
root=${1:-build-matrix}
ccs=${MATRIX_CC:-gcc clang}
types=${MATRIX_TYPES:-Debug RelWithDebInfo Release MinSizeRel}
full=${MATRIX_FULL-all}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
read -r -a extra <<<"${CMAKE_FLAGS:-}"

if ! command -v dpkg-buildflags >/dev/null 2>&1; then
  echo "build-matrix: dpkg-buildflags not found (package dpkg-dev; scripts/deps.sh installs it)" >&2
  exit 1
fi

flags() { # $1: build type, $2: CFLAGS|CPPFLAGS|LDFLAGS
  local opts=${DEB_BUILD_OPTIONS:-}
  [ "$1" = Debug ] && opts="$opts noopt"
  DEB_BUILD_OPTIONS=$opts DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get "$2"
}

is_full() { # $1: <cc>-<type>
  [ "$full" = all ] && return 0
  local f
  for f in $full; do [ "$f" = "$1" ] && return 0; done
  return 1
}

start=$(date +%s)
n=0
for cc in $ccs; do
  if ! command -v "$cc" >/dev/null 2>&1; then
    echo "build-matrix: compiler $cc not found" >&2
    exit 1
  fi
  for type in $types; do
    combo="$cc-$type"
    dir="$root/$combo"
    what="library, programs, unit tests, bench"
    parts=(-DMCIM_TESTS=ON -DMCIM_BENCH=ON)
    if ! is_full "$combo"; then
      what="library and programs"
      parts=(-DMCIM_TESTS=OFF -DMCIM_BENCH=OFF)
    fi
    t0=$(date +%s)
    echo "build-matrix: $combo ($what) in $dir" >&2
    # The compiler is cached per build directory: a directory configured with another
    # compiler is started afresh rather than failing.
    if [ -f "$dir/CMakeCache.txt" ] &&
       ! grep -q "^CMAKE_C_COMPILER:[A-Z]*=.*$cc\$" "$dir/CMakeCache.txt"; then
      rm -rf "$dir"
    fi
    log="$dir.log"
    mkdir -p "$root"
    if ! { CC=$cc cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DCMAKE_C_COMPILER="$cc" \
             -DCMAKE_C_FLAGS="$(flags "$type" CPPFLAGS) $(flags "$type" CFLAGS)" \
             -DCMAKE_EXE_LINKER_FLAGS="$(flags "$type" LDFLAGS)" \
             -DMCIM_WERROR=ON "${parts[@]}" ${extra[@]+"${extra[@]}"} &&
           cmake --build "$dir" -j "$jobs"; } >"$log" 2>&1; then
      grep -E 'error:|Error' "$log" | head -40 >&2 || true
      echo "build-matrix: FAILED: $combo (cc=$cc, CMAKE_BUILD_TYPE=$type); full log: $log" >&2
      exit 1
    fi
    n=$((n + 1))
    echo "build-matrix: $combo ok ($(( $(date +%s) - t0 )) s)" >&2
  done
done
echo "build-matrix: all $n builds ok in $(( $(date +%s) - start )) s" >&2
