#!/usr/bin/env bash
# Install every Debian package that mcim's build, tests and demo need.
# Idempotent: packages already present are skipped; apt-get update runs at most once.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libssl-dev libgnutls28-dev libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev libcjose-dev
  libsqlite3-dev sqlite3 libpq-dev
  # (libssl-dev, libsqlite3-dev, libjansson-dev and libcjose-dev also ship the static archives
  # that m2me is linked with: MCIM_STATIC_AGENT, docs/device.md "Footprint")
  haproxy # `mcim lab up --instances N`: the load balancer in front of each role's instances
  postgresql # the PostgreSQL store's tests: scripts/pg.sh starts a throw-away server (Debian 12: 15)
  libcmocka-dev
  libtss2-dev # the TPM 2.0 TRE (src/tre/tpm/, MCIM_TPM): tpm2-tss's ESAPI, TCTI loader (swtpm TCTI), marshalling
  swtpm swtpm-tools # the TPM 2.0 simulator standing in for the chip (tests/unit/test_tre_tpm.c fails without it)
  gdb python3-cryptography # tests/integration/tre_tpm_memory.sh: the agent's memory (gcore), the SHO's sealed K
  libosmocore-dev # the osmo-hlr AuC backend (libosmogsm's GSUP codec), and bench/'s peer
  osmo-hlr # the real HLR of tests/unit/test_auc_osmo_hlr.c (which fails without it)
  mscgen
  openssl ca-certificates curl
  iproute2 # ss: tests/integration/change_faults.sh (the agent's connections)
  procps # pgrep: tests/integration/demo.sh (what a demo leaves running)
  python3 # the integration tests: JSON, XML and socket helpers (hostile_load.sh: its socket holder)
  python3-yaml python3-jsonschema # tests/integration/openapi_routes.sh (run by /usr/bin/python3)
  systemd # systemd-analyze verify of the units (tests/integration/ops_examples.sh)
  clang # CI builds with gcc and clang
  libclang-rt-14-dev # clang's sanitizer and libFuzzer runtimes (only recommended by clang-14): make test-asan, make fuzz
  clang-tidy # scripts/lint.sh BUILD --tidy
  cppcheck # scripts/lint.sh
  spin # make model: the Promela model of the procedures (tests/model/, docs/model.md); gcc compiles its verifier
  valgrind # scripts/valgrind.sh: the daemons and agents of the integration tests under memcheck
  dpkg-dev fakeroot file # dpkg-buildflags, CPack's .deb, its install test
  help2man groff-base man-db # man pages from the help text; rendering checked
  git # the build records the commit it was built from (mcim --version)
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "deps.sh: missing packages (${missing[*]}) and not root; install them or run as root" >&2
    exit 1
  fi
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
