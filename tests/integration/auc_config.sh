#!/usr/bin/env bash
# The AuC backend's keys (issue 13; docs/operations.md, "The AuC backend"): `mcimd
# --check-config` accepts the built-in AuC and an osmo-hlr with its addresses, for an SHO and
# for the RO's ICF alike, and refuses each mistake with a sentence naming the key. The check
# connects to nothing (no HLR runs here).
. "$(dirname "$0")/lib/common.bash"
mcimd="$MCIM_BIN/mcimd"
src=${MCIM_SRC:?}

cp -r "$src"/docs/examples/* "$tmp/"
# with_keys ROLE FILE JSON-MEMBERS: the sample of ROLE with those members added
with_keys() {
  sed -e "s|^{|{ $3,|" "$tmp/$1.json" >"$tmp/$2"
}
# refused ROLE NAME TEXT JSON-MEMBERS: --check-config says TEXT (exit 1)
refused() {
  with_keys "$1" t.json "$4"
  check_refused_text "$3" "$1: $2" "$mcimd" --role "${1%-a}" --check-config "$tmp/t.json"
}
for role in sho-a ro; do
  kind=${role%-a}
  check "$role: the sample (builtin AuC, by default) is valid" "$mcimd" --role "$kind" --check-config "$tmp/$role.json"
  with_keys "$role" t.json '"auc": "builtin"'
  check "$role: auc builtin" "$mcimd" --role "$kind" --check-config "$tmp/t.json"
  with_keys "$role" t.json '"auc": "osmo-hlr", "hlr_gsup": "127.0.0.7"'
  check "$role: auc osmo-hlr, GSUP address only" "$mcimd" --role "$kind" --check-config "$tmp/t.json"
  with_keys "$role" t.json '"auc": "osmo-hlr", "hlr_gsup": "192.0.2.10:4222", "hlr_ctrl": "127.0.0.1:14259", "hlr_unit_name": "mcim-'$role'-1", "hlr_timeout_ms": 500'
  check "$role: auc osmo-hlr, a remote GSUP and a loopback CTRL" "$mcimd" --role "$kind" --check-config "$tmp/t.json"
  refused "$role" "auc of another kind" '"auc": expected one of' '"auc": "hss"'
  refused "$role" "osmo-hlr without hlr_gsup" '"auc" is "osmo-hlr": "hlr_gsup" (the HLR'"'"'s GSUP address, IPv4[:port]) is required' '"auc": "osmo-hlr"'
  refused "$role" "hlr_gsup not an address" '"hlr_gsup": expected IPv4[:port]' '"auc": "osmo-hlr", "hlr_gsup": "hlr.example:4222"'
  refused "$role" "hlr_gsup port 0" '"hlr_gsup": expected IPv4[:port]' '"auc": "osmo-hlr", "hlr_gsup": "127.0.0.1:0"'
  refused "$role" "hlr_gsup port 65536" '"hlr_gsup": expected IPv4[:port]' '"auc": "osmo-hlr", "hlr_gsup": "127.0.0.1:65536"'
  refused "$role" "hlr_ctrl not an address" '"hlr_ctrl": expected IPv4[:port]' '"auc": "osmo-hlr", "hlr_gsup": "127.0.0.1", "hlr_ctrl": "127.0.0.1:x"'
  refused "$role" "CTRL off loopback (given)" '"hlr_ctrl": the HLR'"'"'s CTRL interface must be on a loopback address (127.0.0.0/8)' '"auc": "osmo-hlr", "hlr_gsup": "127.0.0.1", "hlr_ctrl": "10.0.0.1:4259"'
  refused "$role" "CTRL off loopback (the GSUP address)" '"hlr_gsup": the HLR'"'"'s CTRL interface must be on a loopback address' '"auc": "osmo-hlr", "hlr_gsup": "192.0.2.10"'
  refused "$role" "an HLR address with the builtin AuC" '"hlr_gsup" is set but "auc" is "builtin"' '"hlr_gsup": "127.0.0.1"'
  refused "$role" "hlr_timeout_ms too large" '"hlr_timeout_ms"' '"auc": "osmo-hlr", "hlr_gsup": "127.0.0.1", "hlr_timeout_ms": 600001'
done
# the other kinds have no AuC: the keys are unknown there
sed -e 's|^{|{ "auc": "osmo-hlr",|' "$tmp/vno.json" >"$tmp/t.json"
st=0; "$mcimd" --role vno --check-config "$tmp/t.json" >"$tmp/out" 2>&1 || st=$?
if [ "$st" -eq 1 ] && grep -q '"auc"' "$tmp/out"; then ok "vno: \"auc\" is not a key of the VNO"
else bad "vno with auc: exit $st, $(head -c 300 "$tmp/out")"; fi
finish
