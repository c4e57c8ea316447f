# Top-level entry points. The README's two commands: `make demo` and `make check`.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build build-asan check test test-asan demo bench lint clean

all: build

deps:
	bash scripts/deps.sh

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMCIM_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

# Everything CI runs: install dependencies, build twice (plain and sanitized), run every test.
check: deps
	$(MAKE) test
	$(MAKE) test-asan
	$(MAKE) lint

# The main job: `mcim demo` (see README).
demo: deps build
	bash scripts/demo.sh $(BUILD)/bin

bench: deps build
	bash bench/run.sh $(BUILD)/bin

lint: build
	bash scripts/lint.sh $(BUILD)

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
	rm -rf $(BUILD) $(ASAN_BUILD)
