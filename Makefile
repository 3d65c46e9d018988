# starling -- the friendly front door over CMake. The real build is CMakeLists.txt.
#
#   make / make build   configure (RelWithDebInfo, warnings as errors) into build/ and build
#   make deps           check (and as root install) the Debian packages the core needs
#   make test           deps, build, then the whole ctest suite
#   make test-asan      the same suite built with ASan+UBSan in build-asan/
#   make fuzz           libFuzzer targets (clang) run for a short bounded time, in build-fuzz/
#   make bench          starling vs gloo vs OpenMPI all-reduce, side by side (bench/run_bench.sh)
#   make demo           deps, build, then `starling run` with its defaults (~15-25 s run)
#   make format         clang-format -i over the C sources
#   make install        build, then install the CLI, header, shared and static library,
#                       starling.pc and the CMake package under PREFIX (default /usr/local;
#                       DESTDIR=/staging honoured); as root with no DESTDIR, runs ldconfig
#   make uninstall      remove exactly the files the last install from BUILD_DIR wrote
#                       ($(BUILD_DIR)/install_manifest.txt; pass the same DESTDIR)
#   make clean          remove the build directories
#
# Variables: JOBS (default 2), CMAKE_ARGS (extra -D options), BUILD_DIR, ASAN_BUILD_DIR,
# PREFIX, DESTDIR.

JOBS ?= 2
BUILD_TYPE ?= RelWithDebInfo
BUILD_DIR ?= ./build
ASAN_BUILD_DIR ?= build-asan
FUZZ_BUILD_DIR ?= build-fuzz
CMAKE_ARGS ?=
PREFIX ?= /usr/local
DESTDIR ?=
CTEST_ARGS ?= --output-on-failure -j$(JOBS) --timeout 300

DEPS := tools/install-deps.sh
FORMAT_DIRS := src include tools tests bench

.PHONY: all build deps test test-asan fuzz bench demo clean format help install uninstall

all: build

build:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DSTARLING_WERROR=ON $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j$(JOBS)

deps:
	bash $(DEPS) core

# Each target below runs its steps in order in one recipe, so `make -j` cannot start the
# build before the packages it needs are installed.
test:
	bash $(DEPS) core
	$(MAKE) --no-print-directory build
	ctest --test-dir $(BUILD_DIR) $(CTEST_ARGS)

# Same build type as `make build` (-O2 -g): the sanitizers catch the same bugs and the
# multi-process tests stay fast enough for their time-outs.
test-asan:
	bash $(DEPS) core
	cmake -S . -B $(ASAN_BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DSTARLING_WERROR=ON \
	    -DSTARLING_SANITIZE=ON $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD_DIR) -j$(JOBS)
	ASAN_OPTIONS=$${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1} \
	UBSAN_OPTIONS=$${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
	    ctest --test-dir $(ASAN_BUILD_DIR) $(CTEST_ARGS)

# Each decoder of network input has a libFuzzer target; this runs them for a bounded time
# (the corpus replay runs in `make test` without clang).
fuzz:
	bash $(DEPS) core fuzz
	CC=clang cmake -S . -B $(FUZZ_BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DSTARLING_FUZZ=ON \
	    $(CMAKE_ARGS)
	cmake --build $(FUZZ_BUILD_DIR) -j$(JOBS) \
	    --target fuzz_frames fuzz_frames_replay fuzz_codec fuzz_codec_replay
	ctest --test-dir $(FUZZ_BUILD_DIR) -R '^fuzz\.' $(CTEST_ARGS)

bench:
	bash $(DEPS) core bench
	$(MAKE) --no-print-directory build
	bash bench/run_bench.sh

# `starling run` with its defaults: a coordinator and 4 peer processes on loopback train the
# built-in MLP on Fashion-MNIST with DiLoCo (int8 outer gradients); peer 1 is killed at 40%
# of the steps and a newcomer joins at 60%. Results in ./starling-run/ (metrics.csv,
# summary.json, plot.png). `starling demo` is the shorter all-reduce walk-through.
demo:
	bash $(DEPS) core demo
	$(MAKE) --no-print-directory build
	$(BUILD_DIR)/tools/starling run

# The prefix is given at configure time too: GNUInstallDirs picks the library directory
# from it (lib/x86_64-linux-gnu under /usr on Debian, lib elsewhere). ldconfig refreshes
# ld.so.cache so that `import starling` and programs find libstarling.so.0 at once.
install:
	$(MAKE) --no-print-directory build CMAKE_ARGS="$(CMAKE_ARGS) -DCMAKE_INSTALL_PREFIX=$(PREFIX)"
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD_DIR) --prefix "$(PREFIX)"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
	    echo "ldconfig"; PATH="$$PATH:/sbin:/usr/sbin" ldconfig; fi

uninstall:
	DESTDIR="$(DESTDIR)" cmake -DMANIFEST=$(BUILD_DIR)/install_manifest.txt -P cmake/uninstall.cmake
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
	    echo "ldconfig"; PATH="$$PATH:/sbin:/usr/sbin" ldconfig; fi

format:
	@command -v clang-format >/dev/null || { echo "clang-format not found (apt-get install clang-format)" >&2; exit 1; }
	find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) -print0 | xargs -0 -r clang-format -i

clean:
	rm -rf $(BUILD_DIR) $(ASAN_BUILD_DIR)

help:
	@sed -n '3,/^$$/p' Makefile | sed 's/^# \{0,1\}//'
