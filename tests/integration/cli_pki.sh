#!/usr/bin/env bash
# `mcim pki init`: the lab PKI on disk, checked with the openssl command line tool
# (chains, usages, SANs, key modes, overwrite protection, usage errors).
set -eu

MCIM="${MCIM_BIN:?MCIM_BIN must be the bin folder of a build}/mcim"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcim-cli-pki.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
check() { # check NAME COMMAND...: the command must succeed
  local name="$1"
  shift
  if "$@" >"$WORK/out" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/     /' "$WORK/out"; fi
}
refuse() { # refuse NAME STATUS COMMAND...: the command must exit with STATUS
  local name="$1" want="$2" got=0
  shift 2
  "$@" >"$WORK/out" 2>&1 || got=$?
  if [ "$got" -eq "$want" ]; then ok "$name"; else bad "$name (exit $got, want $want)"; sed 's/^/     /' "$WORK/out"; fi
}
# openssl is needed (scripts/deps.sh installs it): missing, the test fails.
command -v openssl >/dev/null 2>&1 || { bad "openssl is missing (scripts/deps.sh installs it)"; exit 1; }
text() { openssl x509 -in "$1" -noout -text; }
has() { # has NAME FILE REGEX: the certificate text matches
  local t
  t=$(text "$2") || { bad "$1: openssl cannot read $2"; return 0; }
  if grep -Eq "$3" <<<"$t"; then ok "$1"; else bad "$1"; fi
}
lacks() { # lacks NAME FILE REGEX: the certificate (which openssl reads) does not match
  local t
  t=$(text "$2") || { bad "$1: openssl cannot read $2"; return 0; }
  if grep -Eq "$3" <<<"$t"; then bad "$1"; else ok "$1"; fi
}

P="$WORK/lab/pki"
OPS="$P/ca/operators-ca.crt"
M2MES="$P/ca/m2mes-ca.crt"
ROLES="vno ro pva m2mes sho-a sho-b"

check "pki --help" "$MCIM" pki --help
if "$MCIM" pki --help | grep -q "example"; then ok "help has an example"; else bad "help has an example"; fi
check "pki init --help" "$MCIM" pki init --help
check "pki init DIR" "$MCIM" pki init "$P"

for f in ca/operators-ca.crt ca/operators-ca.key ca/m2mes-ca.crt ca/m2mes-ca.key admin/cert.pem admin/key.pem; do
  if [ -s "$P/$f" ]; then ok "exists $f"; else bad "exists $f"; fi
done
for key in "$P"/ca/*.key "$P"/*/key.pem; do
  mode="$(stat -c %a "$key")"
  if [ "$mode" = 600 ]; then ok "mode 600 ${key#"$P"/}"; else bad "mode $mode ${key#"$P"/}"; fi
done
if ls "$P"/*/*.tmp* >/dev/null 2>&1; then bad "no temporary files left"; else ok "no temporary files left"; fi

# CAs: self-signed, CA:TRUE, certificate signing only.
for ca in "$OPS" "$M2MES"; do
  n="${ca##*/}"
  check "$n self-signed" openssl verify -CAfile "$ca" "$ca"
  has "$n CA:TRUE" "$ca" "CA:TRUE"
  has "$n keyCertSign" "$ca" "Certificate Sign"
  lacks "$n no EKU" "$ca" "Extended Key Usage"
  has "$n P-256" "$ca" "NIST CURVE: P-256"
done

# Roles: operators' CA, server and client TLS, SAN localhost + 127.0.0.1 + role name.
for r in $ROLES; do
  c="$P/$r/cert.pem"
  check "$r verifies (operators CA)" openssl verify -x509_strict -CAfile "$OPS" "$c"
  check "$r purpose sslserver" openssl verify -purpose sslserver -CAfile "$OPS" "$c"
  check "$r purpose sslclient" openssl verify -purpose sslclient -CAfile "$OPS" "$c"
  refuse "$r not from the M2MES CA" 2 openssl verify -CAfile "$M2MES" "$c"
  has "$r CN" "$c" "Subject: .*CN ?= ?$r\$"
  has "$r EKU server+client" "$c" "TLS Web Server Authentication, TLS Web Client Authentication"
  has "$r keyUsage digitalSignature" "$c" "Digital Signature"
  has "$r SAN" "$c" "DNS:localhost, IP Address:127.0.0.1, DNS:$r\$"
  has "$r CA:FALSE" "$c" "CA:FALSE"
  # The key on disk is the certificate's key.
  if [ "$(openssl x509 -in "$c" -noout -pubkey)" = "$(openssl pkey -in "$P/$r/key.pem" -pubout)" ]; then
    ok "$r key matches"
  else
    bad "$r key matches"
  fi
done

# admin: client only.
A="$P/admin/cert.pem"
check "admin verifies" openssl verify -x509_strict -purpose sslclient -CAfile "$OPS" "$A"
refuse "admin is not a server" 2 openssl verify -purpose sslserver -CAfile "$OPS" "$A"
has "admin EKU client" "$A" "TLS Web Client Authentication"
lacks "admin no server EKU" "$A" "TLS Web Server Authentication"

# An existing PKI is not replaced without --force.
before="$(sha256sum "$OPS" "$P/ro/key.pem")"
refuse "init again refused" 1 "$MCIM" pki init "$P"
if grep -q -- "--force" "$WORK/out"; then ok "refusal mentions --force"; else bad "refusal mentions --force"; fi
if [ "$(sha256sum "$OPS" "$P/ro/key.pem")" = "$before" ]; then ok "refused init changed nothing"; else bad "refused init changed nothing"; fi
check "init --force" "$MCIM" pki init "$P" --force --roles ro,sho-c --days 30
if [ "$(sha256sum "$OPS")" != "$(echo "$before" | head -1)" ]; then ok "--force made a new CA"; else bad "--force made a new CA"; fi
check "sho-c verifies" openssl verify -CAfile "$OPS" "$P/sho-c/cert.pem"
has "sho-c SAN" "$P/sho-c/cert.pem" "DNS:sho-c\$"
check "roles=LIST form" "$MCIM" pki init "$WORK/other" --roles=sho-x

# Usage errors: exit 2, nothing created.
refuse "no subcommand" 2 "$MCIM" pki
refuse "unknown subcommand" 2 "$MCIM" pki frobnicate
refuse "no DIR" 2 "$MCIM" pki init
refuse "two DIRs" 2 "$MCIM" pki init "$WORK/a" "$WORK/b"
refuse "unknown option" 2 "$MCIM" pki init "$WORK/a" --bogus
refuse "bad role name" 2 "$MCIM" pki init "$WORK/a" --roles "ro,a/b"
refuse "reserved role admin" 2 "$MCIM" pki init "$WORK/a" --roles admin
refuse "empty role" 2 "$MCIM" pki init "$WORK/a" --roles "ro,,pva"
refuse "duplicate role" 2 "$MCIM" pki init "$WORK/a" --roles "ro,ro"
refuse "bad days" 2 "$MCIM" pki init "$WORK/a" --days 0
refuse "roles without value" 2 "$MCIM" pki init "$WORK/a" --roles
if [ -e "$WORK/a" ]; then bad "usage errors create nothing"; else ok "usage errors create nothing"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
