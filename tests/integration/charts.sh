#!/usr/bin/env bash
# docs/charts/ are still what the code draws (issue 5): scripts/charts.sh regenerates the
# charts of a real `mcim demo` run into a temporary folder, and their STRUCTURE is compared
# with the committed ones: the same lifelines in the same order, the same numbered steps
# (step, from, to, message) and the same unnumbered successful messages; never timestamps,
# IMSIs or txids (the charts hold none), nor the interleaving of concurrent messages or how
# often a device retried. Then: mscgen accepts the msc, every svg is well-formed XML, every
# mermaid chart declares every lifeline and carries every step of its text chart, and
# docs/charts/README.md embeds the committed mermaid charts and links the SVGs.
: "${MCIM_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${MCIM_BIN:=$MCIM_SRC/build/bin}"
export MCIM_BIN
. "$(dirname "$0")/lib/common.bash"
need mscgen python3

committed="$MCIM_SRC/docs/charts"
fresh="$tmp/charts"
names="initial change-old-sho change-pristine"

if MCIM_CHARTS_DEMO_DIR="$tmp/demo" bash "$MCIM_SRC/scripts/charts.sh" "$MCIM_BIN" "$fresh" \
  >"$tmp/gen.log" 2>&1; then
  ok "scripts/charts.sh regenerated the charts from a real run"
else
  bad "scripts/charts.sh failed: $(tail -n 20 "$tmp/gen.log")"
  finish
  exit 1
fi

# A text chart line: "N) FROM -> TO: MSG[ [FAILED: CAUSE]]", N a step number or "-".
# Expected failures: the device's attach to the new SHO before the SHO activated the
# subscription (it waits for steps 11 and 13), refused and retried; how many times depends on
# timing. Any other failure is a failed step.
expected_failure='SUBSCRIPTION_NOT_ACTIVE'
lifelines_txt() { # the FROM and TO of every line, in first-use order
  sed -E 's/^([0-9]+|-)\) (.*) -> ([^:]*): .*$/\2\n\3/' "$1" | awk '!seen[$0]++'
}
numbered() { # numbered steps without failure, sorted by step then text, unique
  grep -E '^[0-9]+\) ' "$1" | grep -v '\[FAILED: ' | sort -t')' -k1,1n -k2 -u
}
unnumbered() {
  grep -E '^-\) ' "$1" | grep -v '\[FAILED: ' | sort -u
}
unexpected_failures() {
  grep '\[FAILED: ' "$1" | grep -v "\[FAILED: $expected_failure\]" || true
}
first_steps() { # step numbers in the order they first appear
  # Steps 2 and 3 of a change via the old SHO are concurrent by design (docs/protocol.md): the
  # new SHO asks the PVA (3) as soon as it has the order (1), while the subscriber instructs
  # the device (2); either may be traced first.
  grep -oE '^[0-9]+\)' "$1" | tr -d ')' | awk '!seen[$0]++' | tr '\n' ' ' | sed 's/^1 3 2 /1 2 3 /'
}
mermaid_lifelines() { # "ID|LABEL" in declaration order
  sed -nE 's/^  (participant|actor) ([A-Za-z0-9_]+) as (.*)$/\2|\3/p' "$1"
}
mermaid_steps() { # the step numbers of the arrows, in order ("-" for none)
  sed -nE 's/^  [A-Za-z0-9_]+(->>|-x)[A-Za-z0-9_]+: (([0-9]+)\) )?.*$/\3/p' "$1" | sed 's/^$/-/' | tr '\n' ' '
}
text_steps() {
  sed -E 's/^([0-9]+|-)\) .*/\1/' "$1" | tr '\n' ' '
}
msc_lifelines() { # the labels of the entity line, in order
  sed -n '3p' "$1" | grep -oE '\[label="[^"]*"\]' | sed -E 's/\[label="(.*)"\]/\1/'
}
well_formed() { # well_formed SVG
  python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$1" 2>"$tmp/xml.err"
}

for n in $names; do
  for ext in svg mmd txt; do
    [ -s "$committed/$n.$ext" ] || bad "docs/charts/$n.$ext is missing or empty"
    [ -s "$fresh/$n.$ext" ] || bad "regenerated $n.$ext is missing or empty"
  done
  [ -s "$committed/$n.txt" ] && [ -s "$fresh/$n.txt" ] || continue

  # structure: committed vs regenerated
  if [ "$(lifelines_txt "$committed/$n.txt" | sort)" = "$(lifelines_txt "$fresh/$n.txt" | sort)" ]; then
    ok "$n: the same participants ($(lifelines_txt "$fresh/$n.txt" | paste -sd, -))"
  else
    bad "$n: participants differ: committed [$(lifelines_txt "$committed/$n.txt" | paste -sd, -)] regenerated [$(lifelines_txt "$fresh/$n.txt" | paste -sd, -)]"
  fi
  if diff <(numbered "$committed/$n.txt") <(numbered "$fresh/$n.txt") >"$tmp/diff"; then
    ok "$n: the same numbered steps ($(numbered "$fresh/$n.txt" | wc -l) arrows)"
  else
    bad "$n: numbered steps differ (< committed, > regenerated):
$(cat "$tmp/diff")"
  fi
  if diff <(unnumbered "$committed/$n.txt") <(unnumbered "$fresh/$n.txt") >"$tmp/diff"; then
    ok "$n: the same unnumbered messages"
  else
    bad "$n: unnumbered messages differ (< committed, > regenerated):
$(cat "$tmp/diff")"
  fi
  if [ "$(first_steps "$committed/$n.txt")" = "$(first_steps "$fresh/$n.txt")" ]; then
    ok "$n: steps first appear in the same order ($(first_steps "$fresh/$n.txt"))"
  else
    bad "$n: step order: committed $(first_steps "$committed/$n.txt"), regenerated $(first_steps "$fresh/$n.txt")"
  fi
  for f in "$committed/$n.txt" "$fresh/$n.txt"; do
    u=$(unexpected_failures "$f")
    [ -z "$u" ] && ok "$n: no failed step in ${f#"$tmp"/}" || bad "$n: failed steps in $f: $u"
    order=$(first_steps "$f")
    [ "$order" = "$(echo "$order" | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')" ] &&
      ok "$n: steps in the seed's order in ${f#"$tmp"/}" || bad "$n: steps out of order in $f: $order"
  done

  # mermaid: every lifeline declared, every step of the text chart, nothing undeclared
  for dir in "$committed" "$fresh"; do
    m="$dir/$n.mmd"
    t="$dir/$n.txt"
    head -n1 "$m" | grep -qx 'sequenceDiagram' || bad "$m: not a sequenceDiagram"
    labels=$(mermaid_lifelines "$m" | cut -d'|' -f2)
    missing=""
    while IFS= read -r who; do
      found=0
      while IFS= read -r l; do
        if [ "$l" = "$who" ] || [[ "$l" == "$who ("* ]]; then found=1; fi
      done <<<"$labels"
      [ "$found" -eq 1 ] || missing="$missing [$who]"
    done < <(lifelines_txt "$t")
    [ -z "$missing" ] && ok "$n: the mermaid chart declares every lifeline (${dir##*/})" ||
      bad "$n: lifelines missing from $m:$missing"
    if [ "$(mermaid_steps "$m")" = "$(text_steps "$t")" ]; then
      ok "$n: the mermaid chart has every step of the text chart (${dir##*/})"
    else
      bad "$n: mermaid steps [$(mermaid_steps "$m")] vs text steps [$(text_steps "$t")]"
    fi
    ids=$(mermaid_lifelines "$m" | cut -d'|' -f1)
    undeclared=$(sed -nE 's/^  ([A-Za-z0-9_]+)(->>|-x)([A-Za-z0-9_]+): .*$/\1\n\3/p' "$m" | sort -u |
      while read -r id; do printf '%s\n' "$ids" | grep -qx "$id" || echo "$id"; done)
    [ -z "$undeclared" ] && ok "$n: every mermaid arrow joins declared lifelines (${dir##*/})" ||
      bad "$n: undeclared mermaid ids in $m: $undeclared"
  done
  if [ "$(mermaid_lifelines "$committed/$n.mmd")" = "$(mermaid_lifelines "$fresh/$n.mmd")" ]; then
    ok "$n: the same mermaid lifelines in the same order"
  else
    bad "$n: mermaid lifelines differ: $(mermaid_lifelines "$committed/$n.mmd" | paste -sd, -) vs $(mermaid_lifelines "$fresh/$n.mmd" | paste -sd, -)"
  fi

  # msc: mscgen accepts it; its lifelines are the mermaid ones
  if [ -s "$tmp/demo/$n.msc" ]; then
    if mscgen -T svg -i "$tmp/demo/$n.msc" -o "$tmp/$n.check.svg" >"$tmp/mscgen.log" 2>&1; then
      ok "$n: mscgen accepts the msc"
    else
      bad "$n: mscgen refuses the msc: $(head -c 400 "$tmp/mscgen.log")"
    fi
    [ "$(msc_lifelines "$tmp/demo/$n.msc")" = "$(mermaid_lifelines "$fresh/$n.mmd" | cut -d'|' -f2)" ] &&
      ok "$n: msc and mermaid draw the same lifelines" || bad "$n: msc lifelines: $(msc_lifelines "$tmp/demo/$n.msc" | paste -sd, -)"
    grep -c ' => \| -x ' "$tmp/demo/$n.msc" | grep -qx "$(wc -l <"$fresh/$n.txt")" &&
      ok "$n: the msc has one arrow per message" || bad "$n: msc arrows vs text lines differ"
  else
    bad "$n: the demo wrote no $n.msc"
  fi

  # svg: well-formed XML, an svg document with the lifelines' labels
  for f in "$committed/$n.svg" "$fresh/$n.svg"; do
    if well_formed "$f"; then ok "$n: well-formed svg (${f#"$tmp"/})"; else bad "$n: $f: $(head -c 300 "$tmp/xml.err")"; fi
    grep -q '<svg' "$f" && grep -q 'M2ME subscriber' "$f" && grep -q 'RO' "$f" ||
      bad "$n: $f does not look like the chart"
  done
done

# The README embeds the committed mermaid charts as they are and links the SVGs.
readme="$committed/README.md"
if [ -f "$readme" ]; then
  # the mermaid blocks, in order, to readme-block-1.mmd, -2, ...
  awk -v dir="$tmp" '
    /^```mermaid$/ { inblock = 1; block++; next }
    /^```$/ && inblock { inblock = 0; next }
    inblock { print > (dir "/readme-block-" block ".mmd") }' "$readme"
  i=1
  for n in $names; do
    if cmp -s "$tmp/readme-block-$i.mmd" "$committed/$n.mmd"; then
      ok "README.md embeds $n.mmd as committed"
    else
      bad "README.md's mermaid block $i is not $n.mmd (run scripts/charts.sh)"
    fi
    grep -q "($n.svg)" "$readme" && ok "README.md links $n.svg" || bad "README.md does not link $n.svg"
    i=$((i + 1))
  done
else
  bad "docs/charts/README.md is missing"
fi

finish
