# The Debian packages: CPack's DEB generator, one package per install component
# (cmake/install.cmake). `make deb` builds them; tests/integration/package.sh builds them from
# the build tree under test, installs them into an empty root and runs them from there.
#
#   mcimd     the network role daemon (RO, VNO, SHO, PVA, M2MES): mcimd, mcimd@.service,
#             sample configurations, OpenAPI documents, mcimd(8)
#   m2me      the device agent: m2me (one program for both TREs), m2me-boot, m2me@.service,
#             m2me-tpm@.service (a TPM device's), sample agent.json, m2me(8), m2me-boot(8)
#   mcim-cli  the command line mcim (lab, procedures, traces, PKI), mcim(1)
#
# Depends: from dpkg-shlibdeps on the programs (the libraries they link), plus what the
# maintainer scripts use. A host usually runs one of the first two; the command line
# recommends both because `mcim lab` and `mcim demo` start them, at the same version (the
# lab's daemons and agents speak one protocol version).
set(MCIM_PACKAGE_MAINTAINER "mcim maintainers <maintainers@users.noreply.r-seed-318683aa.example>"
    CACHE STRING "Maintainer field of the Debian packages")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mcim)
set(CPACK_PACKAGE_VENDOR "the mcim authors")
set(CPACK_PACKAGE_CONTACT "${MCIM_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
# FHS paths whatever prefix the build was configured with (a source install's default is
# /usr/local; a package's is /usr). The units get their paths at installation time.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL mcimd m2me cli)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # NAME_VERSION-RELEASE_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(mcim_deb_version "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")

set(CPACK_DEBIAN_MCIMD_PACKAGE_NAME mcimd)
set(CPACK_DEBIAN_MCIMD_PACKAGE_DEPENDS "passwd") # useradd, where systemd-sysusers is not
set(CPACK_DEBIAN_MCIMD_PACKAGE_RECOMMENDS "mcim-cli (= ${mcim_deb_version})") # mcim pki init
set(CPACK_DEBIAN_MCIMD_PACKAGE_SUGGESTS "systemd, postgresql") # a store on PostgreSQL
set(CPACK_DEBIAN_MCIMD_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/packaging/deb/mcimd/postinst;${PROJECT_SOURCE_DIR}/packaging/deb/mcimd/prerm;${PROJECT_SOURCE_DIR}/packaging/deb/mcimd/postrm")
set(CPACK_COMPONENT_MCIMD_DESCRIPTION
"network roles of the mcim remote provisioning system
mcim downloads M2M subscription credentials (MCIMs: IMSI, K, OPc, AMF, SQN) over the
network into the trusted environment of a device, and changes the subscription of a
device from one home operator to another, as 3GPP TR 33.812 describes (alternative 1).
.
This package holds mcimd, one HTTPS daemon (mutual TLS, SQLite or PostgreSQL
store, secrets sealed at rest) for every network role: the registration operator (ICF, DRF,
DPF), visited network, selected home operators, platform validation authority and
equipment supplier; the systemd unit mcimd@.service, sample configurations and the
OpenAPI documents of every role's API.")

set(CPACK_DEBIAN_M2ME_PACKAGE_NAME m2me)
set(CPACK_DEBIAN_M2ME_PACKAGE_DEPENDS "passwd")
if(MCIM_STATIC_AGENT AND MCIM_LINKER_PACK_RELATIVE_RELOCS)
  # m2me's packed relocations need glibc 2.36 (version GLIBC_ABI_DT_RELR), which no symbol
  # carries: dpkg-shlibdeps alone would say libc6 (>= 2.34)
  string(APPEND CPACK_DEBIAN_M2ME_PACKAGE_DEPENDS ", libc6 (>= 2.36)")
endif()
set(CPACK_DEBIAN_M2ME_PACKAGE_SUGGESTS "systemd")
set(CPACK_DEBIAN_M2ME_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/packaging/deb/m2me/postinst;${PROJECT_SOURCE_DIR}/packaging/deb/m2me/prerm;${PROJECT_SOURCE_DIR}/packaging/deb/m2me/postrm")
set(CPACK_COMPONENT_M2ME_DESCRIPTION
"device agent of the mcim remote provisioning system
mcim downloads M2M subscription credentials (MCIMs) over the network into the trusted
environment of a device, as 3GPP TR 33.812 describes (alternative 1).
.
This package holds m2me, the agent of one M2M device (M2ME): measured boot into its
trusted environment (TRE), in software or in a TPM 2.0, network attach with UMTS AKA, and
the provisioning and change-of-subscription procedures its owner instructs over a local
control socket; m2me-boot, the launcher that measures a TPM device's images and agent into
its TPM before the agent runs; and the systemd units m2me@.service (a device with the
software TRE) and m2me-tpm@.service (a TPM device, started through m2me-boot).")

set(CPACK_DEBIAN_CLI_PACKAGE_NAME mcim-cli)
set(CPACK_DEBIAN_CLI_PACKAGE_RECOMMENDS
    "mcimd (= ${mcim_deb_version}), m2me (= ${mcim_deb_version}), mscgen")
set(CPACK_DEBIAN_CLI_PACKAGE_SUGGESTS "postgresql") # mcim lab up --store postgres
set(CPACK_COMPONENT_CLI_DESCRIPTION
"command line of the mcim remote provisioning system
mcim downloads M2M subscription credentials (MCIMs) over the network into the trusted
environment of a device, as 3GPP TR 33.812 describes (alternative 1).
.
This package holds mcim: a lab of every role on loopback (with the mcimd and m2me
packages), the procedures run as a subscriber does, their sequence charts (mscgen),
the lab PKI, Milenage test computations and self-test.")

# cpack installs each component from this build tree. It must not rebuild it first: the
# package test runs cpack while other tests run the same tree's programs, and a rebuild
# there (a new commit changes the recorded version: every program relinks) would replace
# them mid-test. `make deb` builds before packaging; a direct `make install` or `cpack`
# in a build folder expects a build (`cmake --build`) first, as `cmake --install` does.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

include(CPack)
