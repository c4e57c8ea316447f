#!/usr/bin/env bash
# The Debian packages (issue 9, points 4-5), built from the build tree under test (the one
# MCIM_BIN is the bin/ of) and installed into an empty root:
#   1. cpack builds mcimd, m2me and mcim-cli (into this test's folder, nothing written in the
#      build tree, nothing rebuilt); their control fields: name, version = the project's,
#      maintainer, summary, Depends from dpkg-shlibdeps, each satisfied by this system;
#   2. dpkg installs them into an empty root (--root with a fresh admin folder; maintainer
#      scripts run chrootless with DPKG_ROOT set): every file at its FHS place and nothing
#      else, checksums verified, the postinst made the user mcim and /etc/mcim root:mcim 0750;
#   3. the man pages render without a warning, and each names every option its program's
#      --help lists (mcim: every command's --help too);
#   4. `mcimd --check-config` accepts every installed sample configuration, `m2me
#      --check-config` the installed agent.json; `systemd-analyze verify` the installed units
#      (their ExecStart programs are the installed ones, their man: links resolve);
#   5. a lab from the installed programs alone: the installed mcim starts the installed mcimd
#      and m2me (not the build's), manufactures a device, runs an initial provisioning, and
#      stops the lab;
#   6. dpkg --purge leaves nothing of the packages behind (the user mcim stays, as documented).
# A missing tool fails the test. The sanitized build packages its sanitized programs: they
# run the same checks (dpkg-shlibdeps lists what they link).
. "$(dirname "$0")/lib/common.bash"

BIN="${MCIM_BIN:?}"
SRC="${MCIM_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}"
BUILD=$(cd "$BIN/.." && pwd)

# Every tool this test or the packaging uses (scripts/deps.sh installs them all).
tools="cpack dpkg dpkg-deb dpkg-query dpkg-shlibdeps file gzip help2man groff man col systemd-analyze python3"
[ "$(id -u)" -eq 0 ] || tools="$tools fakeroot"
# shellcheck disable=SC2086
need $tools
[ -f "$BUILD/CPackConfig.cmake" ] || { bad "$BUILD/CPackConfig.cmake missing: not a build tree of mcim"; finish; }

version=$(sed -n 's/^project(mcim VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
[ -n "$version" ] || { bad "no version in CMakeLists.txt project()"; finish; }
debver="$version-1"
arch=$(dpkg --print-architecture)

# ---- 1. build the packages ----
debs="$tmp/debs"
t0=$(date +%s)
if cpack --config "$BUILD/CPackConfig.cmake" -G DEB -B "$debs" >"$tmp/cpack.log" 2>&1; then
  ok "cpack -G DEB from $(basename "$BUILD") ($(($(date +%s) - t0)) s)"
else
  bad "cpack: $(tail -n 20 "$tmp/cpack.log")"
  finish
fi
pkgs="mcimd m2me mcim-cli"
for p in $pkgs; do
  f="$debs/${p}_${debver}_$arch.deb"
  if [ -f "$f" ]; then ok "$p: $(basename "$f") ($(stat -c %s "$f") bytes)"; else bad "$p: no $(basename "$f") ($(ls "$debs"))"; fi
done
[ "$failed" -eq 0 ] || finish
deb() { echo "$debs/${1}_${debver}_$arch.deb"; }
field() { dpkg-deb -f "$(deb "$1")" "$2"; }

for p in $pkgs; do
  [ "$(field "$p" Package)" = "$p" ] && [ "$(field "$p" Version)" = "$debver" ] &&
    [ "$(field "$p" Architecture)" = "$arch" ] &&
    ok "$p: Package, Version $debver (project version), Architecture $arch" ||
    bad "$p: $(dpkg-deb -f "$(deb "$p")" Package Version Architecture | tr '\n' ' ')"
  m=$(field "$p" Maintainer)
  [[ $m == *" <"*"@"*">" ]] && ok "$p: Maintainer $m" || bad "$p: Maintainer '$m'"
  d=$(dpkg-deb -f "$(deb "$p")" Description | head -n1)
  [ -n "$d" ] && [ "${#d}" -le 80 ] && [ "$(dpkg-deb -f "$(deb "$p")" Description | wc -l)" -ge 3 ] &&
    ok "$p: Description: $d (and a long description)" || bad "$p: Description '$d'"
  [ -n "$(field "$p" Section)" ] && [ -n "$(field "$p" Priority)" ] && [ -n "$(field "$p" Installed-Size)" ] &&
    ok "$p: Section, Priority, Installed-Size" || bad "$p: Section/Priority/Installed-Size missing"
  dep=$(field "$p" Depends)
  # dpkg-shlibdeps: the C library and the libraries the program links, with versions; the
  # device agent links neither libcurl nor libmicrohttpd (docs/device.md, "Footprint"), and
  # where OpenSSL, SQLite, jansson and cjose are linked into it (MCIM_STATIC_AGENT=ON, from
  # CMake) it depends on none of their packages either, whatever its TRE (a TPM device runs
  # the same m2me: tpm2-tss's SAPI, loaded when a TPM is opened, needs no libcrypto)
  if [ "$p" = m2me ]; then
    case "${MCIM_STATIC_AGENT:-OFF}" in
    ON | on | 1 | TRUE | true | YES | yes) shared_libs=(libssl3 libjansson4 libsqlite3-0 libcjose0) static=ON ;;
    *) shared_libs=() static=OFF ;;
    esac
    agent_dep=1
    [[ $dep == *"libc6 (>= "* ]] || agent_dep=0
    for l in libssl3 libjansson4 libsqlite3-0; do
      if [ "$static" = OFF ] && [[ $dep != *"$l"* ]]; then agent_dep=0; fi
    done
    for l in libcurl libmicrohttpd libgnutls libpq ${shared_libs[@]+"${shared_libs[@]}"}; do
      [[ $dep != *"$l"* ]] || agent_dep=0
    done
    if [ "$agent_dep" -eq 1 ]; then
      ok "$p: Depends from dpkg-shlibdeps, the agent's libraries only (MCIM_STATIC_AGENT=$static: $dep)"
    else
      bad "$p: Depends '$dep' (no shlibdeps, or a library the agent must not link; MCIM_STATIC_AGENT=$static)"
    fi
  elif [[ $dep == *"libc6 (>= "* ]] && [[ $dep == *"libssl3"* ]] && [[ $dep == *"libjansson4"* ]] && [[ $dep == *"libcurl4"* ]]; then
    ok "$p: Depends from dpkg-shlibdeps ($dep)"
  else
    bad "$p: Depends '$dep' (no shlibdeps?)"
  fi
  # each dependency satisfied on this system (the one the programs run on below)
  unmet=""
  while read -r alt; do
    [ -n "$alt" ] || continue
    sat=0
    IFS='|' read -ra choices <<<"$alt"
    for c in "${choices[@]}"; do
      read -r name op ver <<<"$(echo "$c" | sed -E 's/^ *([^ (]+) *(\(([<>=]+) *([^)]+)\))? *$/\1 \3 \4/')"
      have=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$name" 2>/dev/null | awk '$1 == "installed" { print $2 }' | head -n1)
      [ -n "$have" ] || continue
      if [ -z "$op" ] || dpkg --compare-versions "$have" "$op" "$ver"; then sat=1; fi
    done
    [ "$sat" -eq 1 ] || unmet="$unmet [$alt]"
  done < <(echo "$dep" | tr ',' '\n')
  [ -z "$unmet" ] && ok "$p: every dependency installed here" || bad "$p: unmet dependencies:$unmet"
done
[[ $(field mcim-cli Recommends) == *"mcimd (= $debver)"*"m2me (= $debver)"* ]] &&
  ok "mcim-cli recommends mcimd and m2me of its own version (mcim lab)" || bad "mcim-cli Recommends: $(field mcim-cli Recommends)"
for p in mcimd m2me; do
  s=$(dpkg-deb -I "$(deb "$p")")
  [[ $s == *postinst* && $s == *prerm* && $s == *postrm* ]] && ok "$p: maintainer scripts postinst, prerm, postrm" ||
    bad "$p: maintainer scripts: $s"
done

# ---- 2. install into an empty root ----
root="$tmp/root"
admin="$root/var/lib/dpkg"
mkdir -p "$root/etc" "$admin/info" "$admin/updates"
: >"$admin/status"
: >"$admin/available"
# The root is empty: the libraries the packages depend on are this system's (checked above),
# hence --force-depends. The maintainer scripts run here with DPKG_ROOT=$root (chrootless);
# as non-root, under fakeroot.
asroot=""
[ "$(id -u)" -eq 0 ] || asroot="fakeroot"
dpkg_root() {
  $asroot dpkg --root="$root" --admindir="$admin" --log="$tmp/dpkg.log" \
    --force-script-chrootless --force-depends --force-not-root "$@"
}
if dpkg_root -i "$(deb mcimd)" "$(deb m2me)" "$(deb mcim-cli)" >"$tmp/dpkg.out" 2>&1; then
  ok "dpkg --root -i mcimd m2me mcim-cli"
else
  bad "dpkg -i: $(grep -v 'depends on\|is not installed\|however:' "$tmp/dpkg.out" | tail -n 15)"
  finish
fi
st=$(dpkg-query --admindir="$admin" -W -f='${Package} ${db:Status-Abbrev}\n' $pkgs)
[ "$(echo "$st" | grep -c ' ii $')" -eq 3 ] && ok "all three installed and configured" || bad "dpkg status: $st"
if $asroot dpkg --root="$root" --admindir="$admin" --verify $pkgs >"$tmp/out" 2>&1 && [ ! -s "$tmp/out" ]; then
  ok "dpkg --verify: every installed file matches its checksum"
else
  bad "dpkg --verify: $(head -c 400 "$tmp/out")"
fi

# Where each file is: exactly these, nothing outside /usr.
expect_mcimd="/usr/bin/mcimd
/usr/lib/systemd/system/mcimd@.service
/usr/lib/sysusers.d/mcimd.conf
/usr/share/doc/mcimd/changelog.gz
/usr/share/doc/mcimd/copyright
/usr/share/doc/mcimd/examples/README.md
/usr/share/doc/mcimd/examples/m2mes.json
/usr/share/doc/mcimd/examples/peers.json
/usr/share/doc/mcimd/examples/pva.json
/usr/share/doc/mcimd/examples/ro.json
/usr/share/doc/mcimd/examples/sho-a.env
/usr/share/doc/mcimd/examples/sho-a.json
/usr/share/doc/mcimd/examples/vno.json
/usr/share/doc/mcimd/operations.md
/usr/share/man/man8/mcimd.8.gz
$(cd "$SRC/docs/api" && ls *.yaml README.md | sed 's#^#/usr/share/mcim/api/#')"
expect_m2me="/usr/bin/m2me
/usr/bin/m2me-boot
/usr/lib/systemd/system/m2me-tpm@.service
/usr/lib/systemd/system/m2me@.service
/usr/lib/sysusers.d/m2me.conf
/usr/share/doc/m2me/changelog.gz
/usr/share/doc/m2me/copyright
/usr/share/doc/m2me/device.md
/usr/share/doc/m2me/examples/agent.json
/usr/share/man/man8/m2me.8.gz
/usr/share/man/man8/m2me-boot.8.gz"
expect_cli="/usr/bin/mcim
/usr/share/doc/mcim-cli/README.md
/usr/share/doc/mcim-cli/changelog.gz
/usr/share/doc/mcim-cli/copyright
/usr/share/doc/mcim-cli/guide.md
/usr/share/man/man1/mcim.1.gz"
for p in $pkgs; do
  case $p in mcimd) want=$expect_mcimd ;; m2me) want=$expect_m2me ;; mcim-cli) want=$expect_cli ;; esac
  got=$(dpkg-query --admindir="$admin" -L "$p" | while read -r f; do [ -d "$root$f" ] || echo "$f"; done | sort)
  d=$(diff <(echo "$want" | sort) <(echo "$got") || true)
  [ -z "$d" ] && ok "$p: files at their FHS places ($(echo "$got" | wc -l) files)" || bad "$p: files differ from the expected layout: $d"
done
for p in mcim mcimd m2me m2me-boot; do
  f="$root/usr/bin/$p"
  if [ -x "$f" ] && file -b "$f" | grep -q 'ELF.*executable.*stripped' && ! file -b "$f" | grep -q 'not stripped'; then
    ok "/usr/bin/$p: a stripped ELF executable"
  else
    bad "/usr/bin/$p: $(file -b "$f" 2>&1)"
  fi
done
cmp -s "$root/usr/share/doc/mcimd/copyright" "$SRC/packaging/copyright" &&
  grep -q '^License: Apache-2.0' "$root/usr/share/doc/mcimd/copyright" && ok "copyright: Apache-2.0 (Debian format)" ||
  bad "copyright file"
gzip -dc "$root/usr/share/doc/m2me/changelog.gz" | cmp -s - "$SRC/CHANGELOG.md" && ok "changelog.gz is CHANGELOG.md" ||
  bad "changelog.gz differs from CHANGELOG.md (the build's copy is older: build again)"

# The postinst: the user mcim (systemd-sysusers, or useradd) and /etc/mcim root:mcim 0750.
uid_line=$(grep '^mcim:' "$root/etc/passwd" 2>/dev/null || true)
gid=$(grep '^mcim:' "$root/etc/group" 2>/dev/null | cut -d: -f3)
if [ -n "$uid_line" ] && [ -n "$gid" ] && [ "$(echo "$uid_line" | cut -d: -f6,7)" = "/var/lib/mcim:/usr/sbin/nologin" ]; then
  ok "postinst: system user mcim (home /var/lib/mcim, no login shell)"
else
  bad "postinst: user mcim: '$uid_line' gid '$gid'"
fi
uid=$(echo "$uid_line" | cut -d: -f3)
[ -n "$uid" ] && [ "$uid" -lt 1000 ] && ok "mcim is a system user (uid $uid)" || bad "mcim uid '$uid'"
perm=$(stat -c '%a %u %g' "$root/etc/mcim" 2>/dev/null || true)
if [ "$(id -u)" -eq 0 ]; then
  [ "$perm" = "750 0 $gid" ] && ok "postinst: /etc/mcim root:mcim 0750" || bad "/etc/mcim: '$perm', expected '750 0 $gid'"
else
  [ "${perm%% *}" = 750 ] && ok "postinst: /etc/mcim 0750 (owner faked: not root)" || bad "/etc/mcim: '$perm'"
fi

# ---- 3. man pages ----
help_options() { # the options a help text names: --long, and -x short forms
  grep -oE -- '(^|[^A-Za-z0-9_./-])--?[A-Za-z][A-Za-z0-9-]*' | sed -E 's/^[^-]*//' | sed -E 's/-+$//' | sort -u
}
for pg in man1/mcim.1 man8/mcimd.8 man8/m2me.8 man8/m2me-boot.8; do
  page="$root/usr/share/man/$pg.gz"
  prog=$(basename "$pg" | cut -d. -f1)
  # lintian's check: man --warnings renders the page to nothing on stderr
  warn=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
  if [ -z "$warn" ] && [ -s "$page" ]; then ok "$prog($(basename "$pg" | cut -d. -f2)) renders without warnings"
  else bad "$pg: $warn"; fi
  # rendered wide and without hyphenation, so that an option is never split over two lines
  text=$(MANROFFOPT='-rHY=0' MANWIDTH=250 LC_ALL=C.UTF-8 man -l "$page" 2>/dev/null | col -b)
  for sect in NAME SYNOPSIS DESCRIPTION OPTIONS EXAMPLES "SEE ALSO"; do
    grep -q "^$sect\$" <<<"$text" || bad "$prog: no $sect section"
  done
  [[ $text == *"$prog $version"* ]] && ok "$prog: the page is of version $version" || bad "$prog: version $version not on the page"
  { "$root/usr/bin/$prog" --help
    if [ "$prog" = mcim ]; then
      for c in $("$root/usr/bin/mcim" --help | awk '/^commands:$/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }'); do
        "$root/usr/bin/mcim" "$c" --help
      done
    fi
  } >"$tmp/help.txt" 2>&1
  n=0 miss=""
  for o in $(help_options <"$tmp/help.txt"); do
    n=$((n + 1))
    grep -qE -- "(^|[^A-Za-z0-9-])$o([^A-Za-z0-9-]|\$)" <<<"$text" || miss="$miss $o"
  done
  [ "$n" -ge 5 ] && [ -z "$miss" ] && ok "$prog: the page names all $n options of --help" ||
    bad "$prog: options of --help missing on the page ($n options):$miss"
done
grep -q '^COMMANDS$' <<<"$(MANWIDTH=200 man -l "$root/usr/share/man/man1/mcim.1.gz" 2>/dev/null | col -b)" &&
  ok "mcim(1): a COMMANDS section" || bad "mcim(1): no COMMANDS section"

# ---- 4. sample configurations and units ----
ex="$root/usr/share/doc/mcimd/examples"
n=0
for f in "$ex"/*.json; do
  b=$(basename "$f" .json)
  case $b in
    peers) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d and all(v.startswith("https://") for v in d.values())' "$f" &&
             ok "examples/peers.json: names to https URLs" || bad "examples/peers.json" ;;
    sho-*) kind=sho ;;
    *) kind=$b ;;
  esac
  [ "$b" = peers ] && continue
  n=$((n + 1))
  check "installed mcimd --role $kind --check-config examples/$b.json" "$root/usr/bin/mcimd" --role "$kind" --check-config "$f"
done
[ "$n" -eq 5 ] && ok "five role configurations installed" || bad "$n role configurations in examples/"
grep -qx 'MCIM_KIND=sho' "$ex/sho-a.env" && ok "examples/sho-a.env: MCIM_KIND=sho" || bad "examples/sho-a.env"
check "installed m2me --check-config examples/agent.json" "$root/usr/bin/m2me" --dir "$root/usr/share/doc/m2me/examples" --check-config

units="$root/usr/lib/systemd/system"
grep -qx 'ExecStart=/usr/bin/mcimd --role ${MCIM_KIND} --config /etc/mcim/%i.json' "$units/mcimd@.service" &&
  grep -qx 'ExecStartPre=/usr/bin/mcimd --role ${MCIM_KIND} --check-config /etc/mcim/%i.json' "$units/mcimd@.service" &&
  ok "mcimd@.service runs /usr/bin/mcimd on /etc/mcim/%i.json" || bad "mcimd@.service Exec lines: $(grep Exec "$units/mcimd@.service")"
grep -qx 'ExecStart=/usr/bin/m2me --dir /var/lib/mcim/devices/%i --log-format json' "$units/m2me@.service" &&
  ok "m2me@.service runs /usr/bin/m2me on /var/lib/mcim/devices/%i" || bad "m2me@.service Exec lines: $(grep Exec "$units/m2me@.service")"
# a TPM device's unit: the measured launch, then the same agent, the m2me beside m2me-boot
# (docs/tre-tpm.md)
grep -qx 'ExecStart=/usr/bin/m2me-boot --dir /var/lib/mcim/devices/%i --log-format json' "$units/m2me-tpm@.service" &&
  grep -qx 'DeviceAllow=/dev/tpmrm0 rw' "$units/m2me-tpm@.service" &&
  ok "m2me-tpm@.service runs m2me-boot, which measures and runs the agent beside it, with /dev/tpmrm0 only" ||
  bad "m2me-tpm@.service: $(grep -E 'Exec|Device' "$units/m2me-tpm@.service")"
for x in m2me-boot m2me; do
  [ -x "$root/usr/bin/$x" ] || bad "m2me-tpm@.service runs /usr/bin/$x: not installed"
done
for u in mcimd m2me; do
  grep -qx 'User=mcim' "$units/$u@.service" && grep -q "^StateDirectory=mcim/" "$units/$u@.service" &&
    grep -q "^Documentation=man:$u(8) file:/usr/share/doc/$u/" "$units/$u@.service" &&
    ok "$u@.service: user mcim, state in /var/lib/mcim, documentation installed" || bad "$u@.service: User/StateDirectory/Documentation"
  docfile=$(sed -n "s#^Documentation=man:$u(8) file:##p" "$units/$u@.service")
  [ -f "$root$docfile" ] && ok "$u@.service: its Documentation file is installed" || bad "$u@.service: $docfile is not installed"
  # every program an Exec line names is in the packages
  for x in $(grep -E '^Exec[A-Za-z]*=' "$units/$u@.service" | sed -E 's/^[A-Za-z]+=[-@!+:]*([^ ]+).*/\1/' | sort -u); do
    case $x in /usr/bin/mcim*|/usr/bin/m2me) [ -x "$root$x" ] || bad "$u@.service runs $x: not installed" ;; esac
  done
done
# systemd-analyze verify on the host, the installed units with their programs in the root
# (the host has no /usr/bin/mcimd); man: links looked up in the installed man pages.
mkdir -p "$tmp/units"
sed "s#=/usr/bin/#=$root/usr/bin/#g" "$units/mcimd@.service" >"$tmp/units/mcimd@vno.service"
sed "s#=/usr/bin/#=$root/usr/bin/#g" "$units/m2me@.service" >"$tmp/units/m2me@dev1.service"
sed "s#=/usr/bin/#=$root/usr/bin/#g; s# /usr/bin/m2me # $root/usr/bin/m2me #" "$units/m2me-tpm@.service" >"$tmp/units/m2me-tpm@dev2.service"
if MANPATH="$root/usr/share/man" systemd-analyze verify "$tmp/units/mcimd@vno.service" "$tmp/units/m2me@dev1.service" "$tmp/units/m2me-tpm@dev2.service" >"$tmp/out" 2>&1; then
  ok "systemd-analyze verify: the installed mcimd@.service, m2me@.service and m2me-tpm@.service"
else
  bad "systemd-analyze verify: $(cat "$tmp/out")"
fi
[ -s "$root/usr/lib/sysusers.d/mcimd.conf" ] && grep -q '^u mcim ' "$root/usr/lib/sysusers.d/mcimd.conf" &&
  ok "sysusers.d: user mcim" || bad "sysusers.d/mcimd.conf"

# ---- 5. a lab from the installed programs ----
# MCIM_BIN (set by ctest for the build's programs) would point the installed mcim at the
# build's daemons: without it, mcim starts the mcimd and m2me next to itself.
imcim() { env -u MCIM_BIN "$root/usr/bin/mcim" "$@"; }
check "installed mcim --version: $version" imcim --version
head -n1 "$tmp/out" | grep -q "^mcim $version " || bad "mcim --version: $(head -n1 "$tmp/out")"
for p in mcimd m2me; do
  "$root/usr/bin/$p" --version 2>&1 | head -n1 | grep -q "^$p $version " && ok "installed $p --version: $version" ||
    bad "$p --version: $("$root/usr/bin/$p" --version 2>&1 | head -n1)"
done
lab_pids() { # lab_pids roles|devices: the pids lab.json records
  python3 -c 'import json,sys; print(" ".join(str(x["pid"]) for x in json.load(open(sys.argv[1]))[sys.argv[2]]))' "$lab/lab.json" "$1" 2>/dev/null
}
check "installed mcim lab up" imcim lab up --dir "$lab" --sho sho-a
exes=""
for pid in $(lab_pids roles); do
  exes="$exes $(readlink "/proc/$pid/exe" 2>/dev/null || echo "gone:$pid")"
done
exes=$(echo "$exes" | tr ' ' '\n' | grep -v '^$' | sort -u)
[ "$exes" = "$root/usr/bin/mcimd" ] && ok "every role of the lab runs the installed mcimd" ||
  bad "the lab's roles run: $exes"
check "installed mcim lab device add dev1" imcim lab device add dev1 --dir "$lab"
apid=$(lab_pids devices)
[ -n "$apid" ] && [ "$(readlink "/proc/$apid/exe" 2>/dev/null)" = "$root/usr/bin/m2me" ] &&
  ok "the device's agent is the installed m2me" || bad "agent pid '$apid' runs $(readlink "/proc/$apid/exe" 2>/dev/null)"
check "installed mcim run initial dev1 --sho sho-a" imcim run initial dev1 --sho sho-a --json --dir "$lab"
[ "$(jfield "$tmp/out" result)" = success ] && ok "initial provisioning succeeded" || bad "run initial: $(head -c 400 "$tmp/out")"
check "installed mcim device attach dev1 --to sho-a" imcim device attach dev1 --to sho-a --json --dir "$lab"
grep -q '"scope": "full"' "$tmp/out" && ok "full access with the downloaded MCIM" || bad "attach: $(head -c 300 "$tmp/out")"
all_pids="$(lab_pids roles) $(lab_pids devices)"
check "installed mcim lab down" imcim lab down --dir "$lab"
left=""
for pid in $all_pids; do
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in "$root"/*) left="$left $pid" ;; esac
done
[ -z "$left" ] && ok "lab down: no installed program left running" || bad "still running:$left"

# ---- 6. purge ----
if dpkg_root --purge mcim-cli m2me mcimd >"$tmp/out" 2>&1; then ok "dpkg --purge mcim-cli m2me mcimd"
else bad "dpkg --purge: $(tail -n 10 "$tmp/out")"; fi
left=$(cd "$root" && find . -path ./var/lib/dpkg -prune -o ! -type d -print | grep -vE '^\./etc/(passwd|group|shadow|gshadow|\.pwd\.lock)-?$' || true)
[ -z "$left" ] && [ ! -e "$root/etc/mcim" ] && ok "purge: nothing left but the user mcim" || bad "left after purge: $left $(ls -d "$root/etc/mcim" 2>/dev/null)"

finish
