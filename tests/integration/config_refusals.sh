#!/usr/bin/env bash
# `mcimd --check-config` refuses what this binary cannot do (issue 9, point 7): a store
# locator whose backend is not built in is refused by the check, with its cause, and the
# daemon started on it refuses to start with the same cause; the lab refuses such a store too.
. "$(dirname "$0")/lib/common.bash"
mcimd="$MCIM_BIN/mcimd"
src=${MCIM_SRC:?}

cp -r "$src"/docs/examples/* "$tmp/"
check "the sample ro.json is valid" "$mcimd" --role ro --check-config "$tmp/ro.json"

for loc in postgres://mcim@db.example/ro postgresql://mcim@db.example/ro; do
  sed -e "s|\"database\": *\"[^\"]*\"|\"database\": \"$loc\"|" \
      -e "s|\"log_file\": *\"[^\"]*\"|\"log_file\": \"$tmp/ro.log\"|" "$src/docs/examples/ro.json" >"$tmp/pg.json"
  grep -q "\"$loc\"" "$tmp/pg.json" || bad "test setup: the database key was not rewritten"
  check_refused_text "this build has no store backend for ${loc%%//*}// locators" \
    "--check-config refuses database $loc" "$mcimd" --role ro --check-config "$tmp/pg.json"
  # the daemon itself: exit status 1 and the cause in its log output
  st=0
  (cd "$tmp" && timeout 20 "$mcimd" --role ro --config "$tmp/pg.json") >"$tmp/start.out" 2>&1 || st=$?
  if [ "$st" -eq 1 ] && grep -q "this build has no store backend" "$tmp/start.out" "$tmp/ro.log"; then
    ok "mcimd does not start on database $loc (exit 1, cause logged)"
  else
    bad "mcimd on database $loc: exit $st, $(head -c 300 "$tmp/start.out")"
  fi
done

check_refused_text "--store postgres is not available" "mcim lab up --store postgres is refused" \
  "$mcim" lab up --store postgres --dir "$lab"
[ ! -e "$lab/lab.json" ] && ok "the refused lab left no lab behind" || bad "a lab.json was written"
finish
