#!/usr/bin/env bash
# The main job. Until the lab demo exists (issue 5), it runs the most complete
# thing that works: the Milenage self-check against the published test sets and
# a short AV-generation benchmark.
set -euo pipefail
bin=${1:-build/bin}
"$bin/mcim" crypto selftest
"$bin/mcim" bench milenage --seconds 1
