#!/usr/bin/env bash
# A device changes owner (issue 8, point 1: ownership is anchored): `mcim device handover`
# has the current owner sign the handover for the RO's owner record and for the device's
# TRE; then the new owner changes the device's SHO, and the old owner can do neither.
. "$(dirname "$0")/lib/common.bash"
need openssl

check "lab up" "$mcim" lab up --dir "$lab"
check "manufacture d1" "$mcim" lab device add d1 --dir "$lab"
check "initial provisioning of d1 at sho-a" "$mcim" run initial d1 --sho sho-a --json --dir "$lab"
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/new-owner.pem" 2>/dev/null
cp "$lab/devices/d1/owner/owner.key" "$tmp/old-owner.pem"
check_refused_text "is not an EC private key in PEM" "a handover to a file that is no key is refused" \
  "$mcim" device handover d1 --new-owner-key /etc/hostname --dir "$lab"
check "the owner hands d1 over" "$mcim" device handover d1 --new-owner-key "$tmp/new-owner.pem" --json --dir "$lab"
cmp -s "$tmp/new-owner.pem" "$lab/devices/d1/owner/owner.key" && ok "the lab's owner key of d1 is the new owner's" ||
  bad "the lab's owner key of d1 was not replaced"
[ "$(stat -c %a "$lab/devices/d1/owner/owner.key")" = 600 ] && ok "the owner key file is mode 600" ||
  bad "owner key mode: $(stat -c %a "$lab/devices/d1/owner/owner.key")"
# the old owner (its key put back in the lab) can neither hand over again nor order
cp "$tmp/old-owner.pem" "$lab/devices/d1/owner/owner.key"
check_refused NOT_OWNER "the old owner cannot hand d1 over again" \
  "$mcim" device handover d1 --new-owner-key "$tmp/old-owner.pem" --json --dir "$lab"
check_refused NOT_OWNER "the old owner cannot change d1's SHO" \
  "$mcim" run change d1 --to sho-b --via old-sho --json --dir "$lab"
cp "$tmp/new-owner.pem" "$lab/devices/d1/owner/owner.key"
check "the new owner changes d1 to sho-b via the old SHO" "$mcim" run change d1 --to sho-b --via old-sho --json --dir "$lab"
finish
