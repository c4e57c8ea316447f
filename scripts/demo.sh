#!/usr/bin/env bash
# The main job: `mcim demo` (see `mcim demo --help`), after a quick check that the
# cryptographic core matches every published Milenage test set.
set -euo pipefail
bin=${1:-build/bin}
"$bin/mcim" crypto selftest >/dev/null
exec "$bin/mcim" demo
