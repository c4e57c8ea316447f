#!/usr/bin/env bash
# tests/model/trail.sh RUNDIR PROP: replay the counterexample `make model` left in RUNDIR
# (build/model/<run>/<prop>.trail), one line per change of the model's state that matters
# (the fault budget, locals and guards left out). docs/model.md.
set -euo pipefail
dir=${1:?usage: trail.sh RUNDIR PROP}
prop=${2:?usage: trail.sh RUNDIR PROP}
[ -f "$dir/$prop.trail" ] || { echo "no $dir/$prop.trail" >&2; exit 1; }
cd "$dir"
# shellcheck disable=SC2046
spin $(cat defs) -t -p -k "$prop.trail" mcim.pml 2>&1 |
  grep -E '^ *[0-9]+:[[:space:]]+proc|CYCLE' |
  grep -vE '\[(faults|ok|r|ans|sesA|sesV|d_acc|s|st|t|x) = |\[\(|\[else\]|\[skip\]|\[break\]|_spin_nvr' |
  sed -E 's/^ *[0-9]+:[[:space:]]+proc +[0-9]+ \(([A-Za-z:]+):1\) mcim.pml:([0-9]+) \(state [0-9]+\)[[:space:]]+/\1 line \2: /'
