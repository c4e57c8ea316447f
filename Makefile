# Top-level entry points. The README's two commands: `make demo` and `make check`.
BUILD      ?= build
ASAN_BUILD ?= build-asan
MATRIX_DIR ?= build-matrix
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
# Warnings are errors only in CI: `make check` sets WERROR=ON; a plain `make` never has -Werror
# (passed at every configure, so a build folder `make check` used does not keep it).
WERROR     ?= OFF
# The static agent's code layout (cmake/m2me-layout.ld; docs/device.md, "Footprint"): on, but
# for the valgrind run, whose reports would name the laid-out code "???". Passed at every
# configure too, so the build folder the valgrind run used does not keep it off.
AGENT_LAYOUT ?= ON
# The sanitized build uses clang, the plain one the default cc (gcc on Debian): the tests run
# with both compilers.
ASAN_CC    ?= clang
# What `make check` builds of the matrix (scripts/build-matrix.sh): every combination builds the
# library and the programs; the unit tests and bench/ only these three (gcc's warnings depend
# on the optimisation, clang's hardly; the plain and the sanitized builds already build the
# tests with gcc -O2 and clang -O0). About a quarter less CPU than all 8 in full.
CHECK_MATRIX_FULL ?= gcc-Release gcc-MinSizeRel clang-Release
# The libFuzzer targets (tests/fuzz/, docs/fuzzing.md): their build folder (clang, ASan, UBSan,
# MCIM_FUZZ=ON), the seconds each target runs, and how long each runs in `make check`.
FUZZ_BUILD ?= build-fuzz
FUZZ_CC    ?= clang
FUZZ_SECONDS ?= 60
CHECK_FUZZ_SECONDS ?= 5

.PHONY: all deps build build-asan check test test-asan test-notpm matrix demo bench lint clean fuzz valgrind

all: build

deps:
	bash scripts/deps.sh

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMCIM_WERROR=$(WERROR) \
	  -DMCIM_AGENT_LAYOUT=$(AGENT_LAYOUT) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMCIM_SANITIZE=ON \
	  -DCMAKE_C_COMPILER=$(ASAN_CC) -DMCIM_WERROR=$(WERROR) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

# The tests of a build without the TPM TRE (MCIM_TPM=OFF: what a user without tpm2-tss gets),
# plain gcc, in $(NOTPM_BUILD). Why: the two builds above have the TPM TRE, so the code that
# differs without it (src/tre/tre_soft.c's stand-ins for the TPM functions, the parts of the
# lab, the M2MES and the tests under MCIM_HAVE_TPM or MCIM_TPM) ran in no test of CI, and
# unit/test_m2mes once failed only there, unseen. Every unit test and every integration test
# but the long fault, crash and load runs (NOTPM_SKIP: no code of theirs differs without the
# TPM TRE, and the builds above run them); the TPM TRE's own tests are not registered in such
# a build (tests/CMakeLists.txt), which the line before ctest checks. It adds about 2.5 min on
# 2 cores (2 min 31 s from a fresh configure with ccache, 66 tests, load 4-8).
NOTPM_BUILD ?= build-notpm
NOTPM_SKIP ?= crash_every_step|change_faults|concurrent_procedures|loadgen|hostile_load|drf_scale|scale_out|hlr_scale_out|discovery_recovery|expiry
test-notpm:
	$(MAKE) build BUILD=$(NOTPM_BUILD) CMAKE_FLAGS="$(CMAKE_FLAGS) -DMCIM_TPM=OFF"
	@! ctest --test-dir $(NOTPM_BUILD) -N | grep -E 'Test +#[0-9]+: .*tpm' || \
	  { echo "test-notpm: a TPM test is registered in a build without the TPM TRE" >&2; exit 1; }
	@echo "test-notpm: not run here (the test and test-asan suites run them): $(NOTPM_SKIP)"
	ctest --test-dir $(NOTPM_BUILD) --output-on-failure -j $(JOBS) -E '^integration/($(NOTPM_SKIP))$$'

# Everything CI runs: install dependencies, build twice (plain with gcc, sanitized with clang)
# and run every test, run the tests again on a build without the TPM TRE (test-notpm), replay
# the fuzz regressions and fuzz each target a few seconds, lint, then build every compiler and
# build type with Debian's hardening flags (no tests run), all with warnings as errors.
# MCIM_TPM=ON: without tpm2-tss the TPM TRE and its tests would be left out quietly (the
# default for a user's build); in CI that is a configure error instead.
check: deps
	$(MAKE) test WERROR=ON CMAKE_FLAGS="$(CMAKE_FLAGS) -DMCIM_TPM=ON"
	$(MAKE) test-asan WERROR=ON CMAKE_FLAGS="$(CMAKE_FLAGS) -DMCIM_TPM=ON"
	$(MAKE) test-notpm WERROR=ON
	$(MAKE) fuzz WERROR=ON FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS)
	$(MAKE) model
	$(MAKE) valgrind WERROR=ON AGENT_LAYOUT=OFF CMAKE_FLAGS="$(CMAKE_FLAGS) -DMCIM_TPM=ON"
	$(MAKE) lint WERROR=ON
	$(MAKE) matrix MATRIX_FULL="$(CHECK_MATRIX_FULL)"

# gcc and clang, each of Debug, RelWithDebInfo, Release and MinSizeRel, with Debian's hardening
# flags and -Werror, in $(MATRIX_DIR)/<cc>-<type>. MATRIX_FULL (default: all; none: only the
# library and the programs) says which of them also build the unit tests and bench/.
matrix: deps
	JOBS=$(JOBS) MATRIX_FULL="$(or $(MATRIX_FULL),all)" bash scripts/build-matrix.sh $(MATRIX_DIR)

# The libFuzzer targets (docs/fuzzing.md): built in $(FUZZ_BUILD) with clang, ASan and UBSan,
# then scripts/fuzz.sh replays tests/fuzz/regressions/ and runs each target FUZZ_SECONDS on a
# copy of its corpus; fails on any crash, leak, hang (10 s an input) or OOM (2048 MB).
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=$(FUZZ_CC) \
	  -DMCIM_FUZZ=ON -DMCIM_TESTS=OFF -DMCIM_BENCH=OFF -DMCIM_WERROR=$(WERROR) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target mcim_fuzz
	bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The Promela model of the procedures (tests/model/, docs/model.md): spin checks every
# configuration against every property, exhaustively within the stated bound (MODEL_MAXF
# faults, MODEL_HMOVES moves of the hostile SHO), and each deliberately broken variant must
# fail its property; results in $(MODEL_OUT)/model.txt. About 90 s of CPU.
MODEL_OUT ?= $(BUILD)/model
.PHONY: model
model: deps
	bash tests/model/run.sh $(MODEL_OUT)

# The integration tests that drive procedures, with every daemon and agent under valgrind
# memcheck (scripts/valgrind.sh, docs/valgrind.md), on the plain build: fails on a
# failed test, an invalid access, a use of uninitialised memory or a definite leak.
# VALGRIND_TESTS: which tests (names of tests/integration/*.sh; default: the script's list).
valgrind: deps build
	bash scripts/valgrind.sh $(BUILD) $(VALGRIND_TESTS)

# The main job: `mcim demo` (see README).
demo: deps build
	bash scripts/demo.sh $(BUILD)/bin

bench: deps build
	bash bench/run.sh $(BUILD)/bin

# cppcheck and clang-tidy (.clang-tidy: every finding is an error), about 1.5-4 min on 2 cores
lint: build
	bash scripts/lint.sh $(BUILD) --tidy

# The Debian packages mcimd, m2me and mcim-cli from the plain build, in $(BUILD)/packages
# (cmake/package.cmake, docs/install.md); tests/integration/package.sh installs and runs them.
deb: deps build
	rm -f $(BUILD)/packages/*.deb
	cpack --config $(BUILD)/CPackConfig.cmake -G DEB -B $(BUILD)/packages
	@ls -l $(BUILD)/packages/*.deb

# `cmake --install` of the plain build (docs/install.md): PREFIX, and DESTDIR to stage.
PREFIX ?= /usr/local
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

.PHONY: deb install

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(MATRIX_DIR) $(FUZZ_BUILD) $(NOTPM_BUILD)
