#!/usr/bin/env bash
# `mcimd --check-config` refuses what this binary cannot do (issue 9, point 7), and accepts
# what it can: a PostgreSQL locator is accepted by the check (the backend is built in; the
# check does not connect), and the daemon started on a server that is not there refuses to
# start with the cause, the locator in its log without the password. (The lab on PostgreSQL:
# pg_lab.sh.)
. "$(dirname "$0")/lib/common.bash"
mcimd="$MCIM_BIN/mcimd"
src=${MCIM_SRC:?}

cp -r "$src"/docs/examples/* "$tmp/"
check "the sample ro.json is valid" "$mcimd" --role ro --check-config "$tmp/ro.json"
# the daemon gets as far as its store: certificates and a storage key it can load
check "mcim pki init for the samples" "$mcim" pki init "$tmp/pki" --roles ro,sho-a
mkdir -p "$tmp/state"

# port 1 on loopback: nothing listens there
for loc in "postgres://mcim:pw-Ru5xK@127.0.0.1:1/ro" "postgresql://mcim@127.0.0.1:1/ro?password=pw-Ru5xK"; do
  sed -e "s|\"database\": *\"[^\"]*\"|\"database\": \"$loc\"|" \
      -e "s|\"storage_key\": *\"[^\"]*\"|\"storage_key\": \"$tmp/state/storage.key\"|" \
      -e "s|\"log_file\": *\"[^\"]*\"|\"log_file\": \"$tmp/ro.log\"|" "$src/docs/examples/ro.json" >"$tmp/pg.json"
  grep -qF "\"$loc\"" "$tmp/pg.json" || bad "test setup: the database key was not rewritten"
  check "--check-config accepts database ${loc%%//*}//" "$mcimd" --role ro --check-config "$tmp/pg.json"
  # the daemon itself: exit status 1 and the cause in its log output, never the password
  rm -f "$tmp/ro.log"
  st=0
  (cd "$tmp" && timeout 30 "$mcimd" --role ro --config "$tmp/pg.json") >"$tmp/start.out" 2>&1 || st=$?
  if [ "$st" -eq 1 ] && grep -q "store postgres: cannot connect to ${loc%%//*}//mcim" "$tmp/start.out" "$tmp/ro.log"; then
    ok "mcimd does not start without its PostgreSQL server (exit 1, cause logged)"
  else
    bad "mcimd on database $loc: exit $st, $(head -c 300 "$tmp/start.out") $(head -c 600 "$tmp/ro.log" 2>/dev/null)"
  fi
  if grep -q "pw-Ru5xK" "$tmp/start.out" "$tmp/ro.log" 2>/dev/null; then
    bad "the locator's password is in the daemon's output or log"
  else
    ok "the locator's password is in neither the daemon's output nor its log"
  fi
done

# a refused locator is not echoed (it may hold a password)
long="postgres://mcim:pw-Zz9qT@db.example/ro?application_name=$(printf 'x%.0s' $(seq 1 1100))"
sed -e "s|\"database\": *\"[^\"]*\"|\"database\": \"$long\"|" "$src/docs/examples/ro.json" >"$tmp/long.json"
st=0
"$mcimd" --role ro --check-config "$tmp/long.json" >"$tmp/out" 2>&1 || st=$?
if [ "$st" -eq 1 ] && grep -q '"database": expected a string of 1..1024 bytes, got a string (value hidden)' "$tmp/out" &&
  ! grep -q "pw-Zz9qT" "$tmp/out"; then ok "a refused database locator is not echoed"
else bad "too long a locator: exit $st, $(head -c 300 "$tmp/out")"; fi
# A name that does not fit the kind: the peers tell roles apart by name, so an RO named like
# an SHO would be an SHO to every one of them (and a second VNO one that may grant full
# access); refused by the check, with the reason, and by the daemon before anything starts.
for bad_name in "ro:ro:ro-eu" "vno:vno:vno-b" "sho:sho-a:pva" "pva:pva:sho-a"; do
  kind=${bad_name%%:*} example=${bad_name#*:} example=${example%%:*} name=${bad_name##*:}
  sed -e "s|\"name\": *\"[^\"]*\"|\"name\": \"$name\"|" \
      -e "s|\"log_file\": *\"[^\"]*\"|\"log_file\": \"$tmp/name.log\"|" \
      "$src/docs/examples/$example.json" >"$tmp/name.json"
  grep -qF "\"$name\"" "$tmp/name.json" || bad "test setup: the name was not rewritten in $kind.json"
  st=0
  "$mcimd" --role "$kind" --check-config "$tmp/name.json" >"$tmp/out" 2>&1 || st=$?
  if [ "$st" -eq 1 ] && grep -q "name \"$name\" does not fit kind $kind" "$tmp/out"; then
    ok "--check-config refuses a $kind named $name"
  else
    bad "a $kind named $name: exit $st, $(head -c 300 "$tmp/out")"
  fi
  st=0
  (cd "$tmp" && timeout 30 "$mcimd" --role "$kind" --config "$tmp/name.json") >"$tmp/start.out" 2>&1 || st=$?
  if [ "$st" -eq 1 ] && grep -q "does not fit kind $kind" "$tmp/start.out" "$tmp/name.log" 2>/dev/null; then
    ok "mcimd does not start a $kind named $name"
  else
    bad "mcimd, a $kind named $name: exit $st, $(head -c 300 "$tmp/start.out")"
  fi
done
# An SHO's msin_prefix that is not digits, or that leaves fewer than 6 random digits in the
# MSIN (a 6-digit plmn and 4 digits of prefix): the daemon refuses to start, with the key.
for case in "00102:12a" "001020:1234"; do
  plmn=${case%%:*} prefix=${case#*:}
  sed -e "s|\"plmn\": *\"[^\"]*\"|\"plmn\": \"$plmn\", \"msin_prefix\": \"$prefix\"|" \
      -e "s|\"log_file\": *\"[^\"]*\"|\"log_file\": \"$tmp/msin.log\"|" \
      -e "s|\"database\": *\"[^\"]*\"|\"database\": \"$tmp/state/sho-a.db\"|" \
      -e "s|\"storage_key\": *\"[^\"]*\"|\"storage_key\": \"$tmp/state/sho-a.key\"|" \
      "$src/docs/examples/sho-a.json" >"$tmp/msin.json"
  grep -qF "\"msin_prefix\": \"$prefix\"" "$tmp/msin.json" || bad "test setup: no msin_prefix in sho-a.json"
  st=0
  (cd "$tmp" && timeout 30 "$mcimd" --role sho --config "$tmp/msin.json") >"$tmp/start.out" 2>&1 || st=$?
  if [ "$st" -eq 1 ] && grep -qE 'msin_prefix[\\]?": expected digits' "$tmp/start.out" "$tmp/msin.log" 2>/dev/null; then
    ok "mcimd does not start an SHO with plmn $plmn and msin_prefix $prefix"
  else
    bad "an SHO with plmn $plmn and msin_prefix $prefix: exit $st, $(head -c 300 "$tmp/start.out") $(head -c 300 "$tmp/msin.log" 2>/dev/null)"
  fi
done
finish
