# What `cmake --install` puts where (FHS through GNUInstallDirs), by component, and the man
# pages. Included at the end of CMakeLists.txt; the .deb packages are cmake/package.cmake.
# docs/install.md is the user's view of this layout.
#
# Components (one .deb each, cmake/package.cmake):
#   mcimd  the network role daemon: program, unit, sysusers file, sample configurations,
#          OpenAPI documents, operations guide, mcimd(8)
#   m2me   the device agent: program (one for both TREs), its launcher for TPM devices
#          (m2me-boot), units (m2me@.service; m2me-tpm@.service, a TPM device's, through
#          m2me-boot), sysusers file, sample agent.json, m2me(8), m2me-boot(8)
#   cli    the command line mcim: program, user guide, mcim(1)
include(GNUInstallDirs)

# The three programs go to bin (/usr/bin), the daemons too, not sbin. sbin is for programs
# only the administrator runs; mcimd and m2me are also run by ordinary users: `mcim lab up`
# and `mcim lab device add` start them, as the user who runs mcim, from the folder mcim
# itself is in (src/lab/lab.c, mcim_lab_bindir). One folder keeps the installed lab working
# with no search path; the systemd units run them from there too.
# Sections of the man pages: mcim(1) a user command, mcimd(8) and m2me(8) daemons.

# Unit folder, relative to the prefix: /usr/lib/systemd/system for a package (Debian 12 is
# merged-/usr, so that is also /lib/systemd/system), /usr/local/lib/systemd/system for a
# source install (systemd reads both). Not CMAKE_INSTALL_LIBDIR (lib/<multiarch> on Debian).
set(MCIM_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "systemd system unit folder (relative to the prefix, or absolute)")
set(MCIM_SYSUSERSDIR "lib/sysusers.d" CACHE STRING
    "systemd sysusers.d folder (relative to the prefix, or absolute)")
option(MCIM_MAN "Generate the man pages from --help with help2man" ON)

# Documentation folders, one per package as Debian has them (/usr/share/doc/PACKAGE: its
# copyright, changelog, examples). The component names are the package names.
set(MCIM_DOCDIR_MCIMD ${CMAKE_INSTALL_DATAROOTDIR}/doc/mcimd)
set(MCIM_DOCDIR_M2ME ${CMAKE_INSTALL_DATAROOTDIR}/doc/m2me)
set(MCIM_DOCDIR_CLI ${CMAKE_INSTALL_DATAROOTDIR}/doc/mcim-cli)
# The OpenAPI documents are interface definitions that tools read (viewers, code
# generators, gateways), not prose: /usr/share/mcim/api, which minimal images that drop
# /usr/share/doc keep. One folder: the role documents $ref common.yaml relatively.
set(MCIM_APIDIR ${CMAKE_INSTALL_DATADIR}/mcim/api)

set(MCIM_INSTALL_GEN ${PROJECT_BINARY_DIR}/install)
file(MAKE_DIRECTORY ${MCIM_INSTALL_GEN})

# ---- programs ----
install(TARGETS mcimd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT mcimd)
install(TARGETS m2me m2me-boot RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT m2me)
install(TARGETS mcim RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)

# ---- systemd units ----
# docs/examples/systemd holds the units as the packages install them (/usr/bin/mcimd, ...).
# They are copied at installation time, when the prefix is known (CPack installs with /usr
# whatever the build was configured with): ExecStartPre/ExecStart name the bin folder under
# it and Documentation= the doc folder. The copy is written into place and recorded in the
# install manifest, as install(FILES) does.
foreach(pair "mcimd@.service|mcimd" "m2me@.service|m2me" "m2me-tpm@.service|m2me")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 unit)
  list(GET pair 1 comp)
  set(src ${PROJECT_SOURCE_DIR}/docs/examples/systemd/${unit})
  install(CODE "
    if(IS_ABSOLUTE \"${MCIM_SYSTEMD_UNITDIR}\")
      set(_dir \"${MCIM_SYSTEMD_UNITDIR}\")
    else()
      set(_dir \"\${CMAKE_INSTALL_PREFIX}/${MCIM_SYSTEMD_UNITDIR}\")
    endif()
    file(READ \"${src}\" _text)
    string(REPLACE \"=/usr/bin/\" \"=\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/\" _text \"\${_text}\")
    string(REPLACE \"file:/usr/share/\" \"file:\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATAROOTDIR}/\" _text \"\${_text}\")
    message(STATUS \"Installing: \$ENV{DESTDIR}\${_dir}/${unit}\")
    file(WRITE \"\$ENV{DESTDIR}\${_dir}/${unit}\" \"\${_text}\")
    list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${_dir}/${unit}\")
  " COMPONENT ${comp})
endforeach()
# The user mcim the units run as (User=mcim): systemd-sysusers creates it at boot, the
# packages' postinst at installation. Same user, one file per package: either may be alone.
install(FILES ${PROJECT_SOURCE_DIR}/packaging/sysusers.conf DESTINATION ${MCIM_SYSUSERSDIR}
        RENAME mcimd.conf COMPONENT mcimd)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/sysusers.conf DESTINATION ${MCIM_SYSUSERSDIR}
        RENAME m2me.conf COMPONENT m2me)

# ---- sample configurations ----
# Examples (/usr/share/doc/mcimd/examples), not conffiles in /etc/mcim: they describe one host
# running every role on 127.0.0.1 with fixed ports, and need a PKI that does not exist at
# installation (pki/... paths); a real host runs some of the roles with its own addresses.
# Installed in /etc they would be half-working configurations that dpkg then guards on every
# upgrade. The operator copies what the host runs (docs/install.md); the units refuse to start
# until /etc/mcim/INSTANCE.json exists and passes --check-config.
install(FILES ${PROJECT_SOURCE_DIR}/docs/examples/README.md
              ${PROJECT_SOURCE_DIR}/docs/examples/vno.json
              ${PROJECT_SOURCE_DIR}/docs/examples/ro.json
              ${PROJECT_SOURCE_DIR}/docs/examples/pva.json
              ${PROJECT_SOURCE_DIR}/docs/examples/m2mes.json
              ${PROJECT_SOURCE_DIR}/docs/examples/sho-a.json
              ${PROJECT_SOURCE_DIR}/docs/examples/peers.json
              ${PROJECT_SOURCE_DIR}/docs/examples/systemd/sho-a.env
        DESTINATION ${MCIM_DOCDIR_MCIMD}/examples COMPONENT mcimd)
install(FILES ${PROJECT_SOURCE_DIR}/docs/examples/agent.json
        DESTINATION ${MCIM_DOCDIR_M2ME}/examples COMPONENT m2me)

# ---- documentation ----
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/api/ DESTINATION ${MCIM_APIDIR} COMPONENT mcimd
        FILES_MATCHING PATTERN "*.yaml" PATTERN "*.md")
install(FILES ${PROJECT_SOURCE_DIR}/docs/operations.md DESTINATION ${MCIM_DOCDIR_MCIMD}
        COMPONENT mcimd)
install(FILES ${PROJECT_SOURCE_DIR}/docs/device.md DESTINATION ${MCIM_DOCDIR_M2ME} COMPONENT m2me)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/guide.md
        DESTINATION ${MCIM_DOCDIR_CLI} COMPONENT cli)
# Each package's copyright (Debian's machine-readable format; the license text is
# /usr/share/common-licenses/Apache-2.0) and changelog (CHANGELOG.md, gzip -9n).
find_program(MCIM_GZIP gzip)
set(MCIM_CHANGELOG_GZ ${MCIM_INSTALL_GEN}/changelog.gz)
add_custom_command(OUTPUT ${MCIM_CHANGELOG_GZ}
  COMMAND sh -c "\"$0\" -9n -c \"$1\" > \"$2\"" ${MCIM_GZIP} ${PROJECT_SOURCE_DIR}/CHANGELOG.md
          ${MCIM_CHANGELOG_GZ}
  DEPENDS ${PROJECT_SOURCE_DIR}/CHANGELOG.md VERBATIM)
add_custom_target(mcim_changelog ALL DEPENDS ${MCIM_CHANGELOG_GZ})
foreach(c mcimd m2me cli)
  string(TOUPPER ${c} C)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/copyright ${MCIM_CHANGELOG_GZ}
          DESTINATION ${MCIM_DOCDIR_${C}} COMPONENT ${c})
endforeach()

# ---- man pages: help2man on the built programs (scripts/man.sh), at build time ----
# Generated from --help so they cannot drift from it (tests/integration/package.sh also
# checks that every option --help lists is on the page). docs/man/*.h2m add the FILES,
# ENVIRONMENT, EXIT STATUS and SEE ALSO sections --help does not have.
find_program(MCIM_HELP2MAN help2man)
if(MCIM_MAN AND MCIM_HELP2MAN AND MCIM_GZIP)
  set(pages
    "mcim|1|cli|command line of the mcim system: lab, procedures, traces, PKI"
    "mcimd|8|mcimd|network role daemon of the mcim system (RO, VNO, SHO, PVA, M2MES)"
    "m2me|8|m2me|device agent of an M2ME, software or TPM TRE (mcim system)"
    "m2me-boot|8|m2me|measured launch of the agent of an M2ME with a TPM TRE (mcim system)")
  set(outs "")
  foreach(p IN LISTS pages)
    string(REPLACE "|" ";" f "${p}")
    list(GET f 0 prog)
    list(GET f 1 sec)
    list(GET f 2 comp)
    list(GET f 3 what)
    set(out ${PROJECT_BINARY_DIR}/man/${prog}.${sec}.gz)
    add_custom_command(OUTPUT ${out}
      COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/man.sh $<TARGET_FILE:${prog}> ${sec} ${what}
              ${PROJECT_VERSION} ${PROJECT_SOURCE_DIR}/docs/man/${prog}.h2m ${out}
      DEPENDS ${prog} ${PROJECT_SOURCE_DIR}/scripts/man.sh ${PROJECT_SOURCE_DIR}/docs/man/${prog}.h2m
      COMMENT "man page ${prog}(${sec})" VERBATIM)
    list(APPEND outs ${out})
    install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${sec} COMPONENT ${comp})
  endforeach()
  add_custom_target(mcim_man ALL DEPENDS ${outs})
else()
  message(WARNING "mcim: no man pages (MCIM_MAN=${MCIM_MAN}, help2man: ${MCIM_HELP2MAN}, "
                  "gzip: ${MCIM_GZIP}); scripts/deps.sh installs help2man")
endif()

include(${PROJECT_SOURCE_DIR}/cmake/package.cmake)
