#!/usr/bin/env bash
# The charts of docs/charts/, from a REAL run: `mcim demo` with the build's binaries (every
# role a daemon on loopback), then its charts of the initial provisioning and of both change
# procedures (.svg from mscgen, .mmd mermaid, .txt numbered steps) copied into DEST, and
# DEST/README.md written around them (the mermaid embedded, the SVGs linked).
#
# usage: scripts/charts.sh [BIN_DIR] [DEST]          (defaults: build/bin, docs/charts)
#   MCIM_CHARTS_DEMO_DIR=DIR  keep the whole demo output (lab, .msc, .json) in DIR
# tests/integration/charts.sh regenerates into a temporary DEST and compares the structure.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$src/build/bin}" && pwd)
dest=${2:-$src/docs/charts}
[ -x "$bin/mcim" ] || { echo "charts.sh: no $bin/mcim (build first: make build)" >&2; exit 1; }
command -v mscgen >/dev/null || { echo "charts.sh: mscgen is needed (scripts/deps.sh)" >&2; exit 1; }

work=$(mktemp -d /tmp/mcim-charts-XXXXXX)
trap 'rm -rf "$work"' EXIT
demo=${MCIM_CHARTS_DEMO_DIR:-$work/demo}
# The demo stops its lab itself; it runs from the work folder so nothing lands in the tree.
if ! (cd "$work" && "$bin/mcim" demo --out "$demo") >"$work/demo.log" 2>&1; then
  cat "$work/demo.log" >&2
  echo "charts.sh: the demo failed, no chart copied" >&2
  exit 1
fi

names="initial change-old-sho change-pristine"
mkdir -p "$dest"
for n in $names; do
  for ext in svg mmd txt; do
    [ -s "$demo/$n.$ext" ] || { echo "charts.sh: the demo wrote no $n.$ext" >&2; exit 1; }
    cp "$demo/$n.$ext" "$dest/$n.$ext"
  done
done

section() { # section NAME TITLE BLURB
  printf '## %s\n\n%s\n\n' "$2" "$3"
  printf 'SVG (mscgen): [%s.svg](%s.svg) · text: [%s.txt](%s.txt) · mermaid source: [%s.mmd](%s.mmd)\n\n' \
    "$1" "$1" "$1" "$1" "$1" "$1"
  printf '```mermaid\n'
  cat "$dest/$1.mmd"
  printf '```\n\n'
}

{
  cat <<'EOF'
# Flow charts of the procedures, from real runs

These are the flow charts the seed asks for (`../../../shared/seeds/000_7688898cabdb5491.txt`,
figures 5.1.3.8.4.2-X), drawn from what the daemons actually exchanged in one `mcim demo` run:
initial provisioning with sho-a, change to sho-b via the old SHO's connectivity, change back to
sho-a via the pristine state. Nothing here is drawn by hand: `scripts/charts.sh` runs the demo
with the build's binaries and copies its charts; `tests/integration/charts.sh` regenerates them
and checks that the participants and the sequence of numbered steps are still these.

How to read them (see also [the guide](../guide.md#reading-a-chart)):
- Lifelines are the seed's entities, in a fixed order: M2ME subscriber, M2ME, TRE (inside the
  M2ME), VNO, RO, PVA, old SHO, new SHO. The lab instance is in parentheses: an SHO is labelled
  by its part in that procedure (sho-a is the new SHO of the initial provisioning and of the
  change back, the old SHO of the change to sho-b).
- The RO function that handles a message (ICF, DRF, DPF) starts the message.
- `N)` is the seed's step number; an arrow without a number is outside the numbered steps
  (the attaches to an SHO, the deferred discard notice of the pristine path and what follows
  it).
- A failed message is red with a cross (`-x`) and says `[FAILED: CAUSE]`. A refused attach
  `SUBSCRIPTION_NOT_ACTIVE`, when a change chart shows one, is expected: the device tried the
  new SHO before the new SHO had activated the subscription (it waits for the report and for
  the release of the old subscription), and retried. How often that happens depends on
  timing, as does the interleaving of concurrent messages; the numbered steps do not.
- Both ends of some exchanges record them (e.g. the VNO's AV request to the ICF and the ICF's
  answer), so a step may show a request and its answer.

Regenerate: `scripts/charts.sh build/bin` (after `make build`).

EOF
  section initial "Initial provisioning (pristine steps 4-15)" \
    "The subscriber's order at the SHO and the owner's instruction to the device (steps 1-2, as in the change procedures), then the seed's steps 4-15: PCID attach via the VNO with AVs from the RO's ICF, restricted connectivity, discovery of the SHO at the DRF, remote validation by the PVA, the sealed MCIM through the DPF into the TRE, the status reports, the DRF registration; then the device attaches to its SHO with the new MCIM."
  section change-old-sho "Change of SHO using the connectivity of the old SHO (steps 1-14)" \
    "Seed 5.1.3.8.4.2. The device keeps using the old SHO's connectivity: validation, atomic download of the new MCIM (staged and verified before anything else), discard of the old credentials in the TRE (8), the discard receipt to the old SHO and its acknowledgement (9-10), the acknowledgement relayed by the DPF to the new SHO without the old SHO's identity (11), install and reports (12-13), registration at the DRF (14)."
  section change-pristine "Change of SHO by going back to the pristine state (steps 1-15)" \
    "Seed 5.1.3.8.4.3. The TRE removes the old SHO's MCIM (3), then initial provisioning with the new SHO (4-15). The old SHO learns it later: the device delivers the queued discard notice once it has connectivity again (the arrows at the end)."
} >"$dest/README.md"

echo "charts written to $dest: $(cd "$dest" && ls | tr '\n' ' ')"
