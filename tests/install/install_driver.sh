#!/usr/bin/env bash
# Driver of the install.* tests (tests/install/CMakeLists.txt). Each test is one mode:
#
#   install_driver.sh stage     installs the build tree into STAGE (DESTDIR) with prefix
#                               /usr/local, checks the file list, SONAME and the CLI, runs
#                               the uninstall script (cmake/uninstall.cmake) and checks that
#                               nothing is left, then installs again for the tests below
#   install_driver.sh pkgconfig an outside C program built with `pkg-config --cflags --libs
#                               starling` (PKG_CONFIG_PATH + PKG_CONFIG_SYSROOT_DIR = STAGE)
#   install_driver.sh cmake     an outside CMake project: find_package(starling), shared and
#                               static, CMAKE_PREFIX_PATH into STAGE
#   install_driver.sh python    pip install --no-build-isolation --no-index of python/ into a
#                               venv (--system-site-packages), then an all-reduce from
#                               outside the tree with STARLING_LIB unset (and, with no
#                               LD_LIBRARY_PATH, the error when the library is not found)
#
# Settings come from the environment (set by CMake): SRC (source tree), BUILD (build tree),
# STAGE, WORK (this test's scratch directory), LIBDIR (CMAKE_INSTALL_LIBDIR), VERSION,
# SOVERSION, CC, PYTHON. Exit 0 pass, 1 fail, 77 skipped (a tool is missing).
set -euo pipefail

mode=${1:?usage: install_driver.sh stage|pkgconfig|cmake|python}
: "${SRC:?}" "${BUILD:?}" "${STAGE:?}" "${WORK:?}" "${LIBDIR:?}" "${VERSION:?}"
: "${SOVERSION:?}"
PREFIX=/usr/local
lib="$STAGE$PREFIX/$LIBDIR"

fail() { echo "install.$mode: $*" >&2; exit 1; }
skip() { echo "install.$mode: skipped: $*"; exit 77; }
need() { command -v "$1" >/dev/null 2>&1 || skip "$1 not found${2:+ ($2)}"; }
# has TEXT PATTERN [grep options]: grep on a captured output, not on a pipe (with
# pipefail, `cmd | grep -q` fails when grep exits first and cmd gets SIGPIPE).
has() { grep -q "${@:3}" -e "$2" <<<"$1"; }

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
if [ "$mode" != stage ] && [ ! -e "$lib/libstarling.so.$SOVERSION" ]; then
    fail "nothing staged in $STAGE (install.stage runs first)"
fi

expected_files() {
    cat <<LIST
$PREFIX/bin/starling
$PREFIX/include/starling.h
$PREFIX/$LIBDIR/libstarling.so
$PREFIX/$LIBDIR/libstarling.so.$SOVERSION
$PREFIX/$LIBDIR/libstarling.so.$VERSION
$PREFIX/$LIBDIR/libstarling.a
$PREFIX/$LIBDIR/pkgconfig/starling.pc
$PREFIX/$LIBDIR/cmake/starling/starlingConfig.cmake
$PREFIX/$LIBDIR/cmake/starling/starlingConfigVersion.cmake
$PREFIX/$LIBDIR/cmake/starling/starlingTargets.cmake
$PREFIX/$LIBDIR/cmake/starling/starlingStaticTargets.cmake
LIST
}

# The install script always writes BUILD/install_manifest.txt, which `make uninstall`
# reads: keep the one of a real install, put this test's beside its other output.
install_once() {
    DESTDIR="$STAGE" cmake -DCMAKE_INSTALL_PREFIX="$PREFIX" -P "$BUILD/cmake_install.cmake" \
        >"$WORK/install.log" || { cat "$WORK/install.log"; fail "install failed"; }
    mv "$BUILD/install_manifest.txt" "$WORK/install_manifest.txt"
}

stage() {
    local manifest="$BUILD/install_manifest.txt" saved="$WORK/install_manifest.saved"
    if [ -e "$manifest" ]; then
        if [ ! -w "$manifest" ] || [ ! -w "$BUILD" ]; then
            skip "$manifest is not writable (a root install?): not overwriting it"
        fi
        cp -p "$manifest" "$saved"
        # shellcheck disable=SC2064 # expanded now: the locals are gone at exit
        trap "mv -f '$saved' '$manifest'" EXIT
    fi
    rm -rf "$STAGE"
    install_once
    local f
    while read -r f; do
        [ -e "$STAGE$f" ] || fail "not installed: $f"
        grep -qxF "$f" "$WORK/install_manifest.txt" || fail "not in the manifest: $f"
    done < <(expected_files)
    if [ ! -L "$lib/libstarling.so" ] || [ ! -L "$lib/libstarling.so.$SOVERSION" ]; then
        fail "libstarling.so and .so.$SOVERSION should be symbolic links"
    fi
    if command -v readelf >/dev/null; then
        has "$(readelf -d "$lib/libstarling.so.$VERSION")" "SONAME.*\[libstarling.so.$SOVERSION\]" ||
            fail "SONAME is not libstarling.so.$SOVERSION"
        ! has "$(readelf -d "$STAGE$PREFIX/bin/starling")" libstarling ||
            fail "the installed CLI should not need libstarling.so (static link)"
    fi
    has "$("$STAGE$PREFIX/bin/starling" --version)" "$VERSION" -F ||
        fail "installed 'starling --version' does not print $VERSION"
    grep -qx "prefix=$PREFIX" "$lib/pkgconfig/starling.pc" ||
        fail "starling.pc does not say prefix=$PREFIX"

    # make uninstall's script removes exactly the manifest's files and the package dir.
    DESTDIR="$STAGE" cmake -DMANIFEST="$WORK/install_manifest.txt" \
        -P "$SRC/cmake/uninstall.cmake" >"$WORK/uninstall.log" ||
        { cat "$WORK/uninstall.log"; fail "uninstall failed"; }
    local left
    left=$(find "$STAGE" ! -type d)
    [ -z "$left" ] || fail "left after uninstall: $left"
    [ ! -e "$lib/cmake/starling" ] || fail "lib/cmake/starling left after uninstall"

    install_once
    echo "install.stage: installed into $STAGE$PREFIX ($(grep -c '' "$WORK/install_manifest.txt") files)"
}

pkgconfig_test() {
    need pkg-config
    need "${CC:-cc}" "C compiler"
    export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$STAGE"
    unset PKG_CONFIG_LIBDIR
    local v flags
    v=$(pkg-config --modversion starling) || fail "pkg-config does not find starling.pc"
    [ "$v" = "$VERSION" ] || fail "pkg-config version $v, expected $VERSION"
    flags=$(pkg-config --cflags --libs starling) || fail "pkg-config --cflags --libs failed"
    echo "pkg-config --cflags --libs starling: $flags"
    # shellcheck disable=SC2086 # the flags are words
    "${CC:-cc}" -std=c99 -pedantic -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L \
        -o outside_pc "$SRC/tests/install/outside_allreduce.c" $flags -pthread ||
        fail "compiling against the installed header and library failed"
    local deps
    deps=$(LD_LIBRARY_PATH="$lib" ldd ./outside_pc)
    has "$deps" "$lib/libstarling.so.$SOVERSION" -F ||
        fail "outside_pc does not load the staged libstarling.so.$SOVERSION: $deps"
    LD_LIBRARY_PATH="$lib" timeout 55 ./outside_pc || fail "outside_pc failed"
}

cmake_test() {
    need "${CC:-cc}" "C compiler"
    # Only the staged package: no package registry, nothing from a real install first.
    CC="${CC:-cc}" cmake -S "$SRC/tests/install/outside_project" -B "$WORK/outside" \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$STAGE$PREFIX" \
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
        >"$WORK/configure.log" 2>&1 || { cat "$WORK/configure.log"; fail "configure failed"; }
    grep -F "starling $VERSION from $lib/cmake/starling" "$WORK/configure.log" ||
        { cat "$WORK/configure.log"; fail "find_package(starling) did not use the staged package"; }
    cmake --build "$WORK/outside" >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log"; fail "build failed"; }
    if command -v readelf >/dev/null; then
        has "$(readelf -d "$WORK/outside/outside_shared")" "NEEDED.*libstarling.so.$SOVERSION" ||
            fail "outside_shared does not need libstarling.so.$SOVERSION"
        ! has "$(readelf -d "$WORK/outside/outside_static")" libstarling ||
            fail "outside_static should not need libstarling.so"
    fi
    # No LD_LIBRARY_PATH: the imported target's location is in the build RPATH.
    local deps
    deps=$(ldd "$WORK/outside/outside_shared")
    has "$deps" "$lib/libstarling.so.$SOVERSION" -F ||
        fail "outside_shared does not load the staged library: $deps"
    timeout 55 "$WORK/outside/outside_shared" || fail "outside_shared failed"
    timeout 55 "$WORK/outside/outside_static" || fail "outside_static failed"
}

python_test() {
    local py=${PYTHON:-/usr/bin/python3}
    [ -x "$py" ] || skip "$py not found"
    "$py" -c 'import ensurepip, venv' 2>/dev/null || skip "python3-venv missing"
    "$py" -c 'import setuptools, wheel' 2>/dev/null ||
        skip "python3-setuptools or python3-wheel missing"
    "$py" -m venv --system-site-packages "$WORK/venv" >"$WORK/venv.log" 2>&1 ||
        { cat "$WORK/venv.log"; skip "python3 -m venv failed (python3-venv, python3-pip-whl?)"; }
    # A copy: pip builds in the source directory (build/, *.egg-info) and the tree stays clean.
    mkdir "$WORK/pysrc"
    cp -R "$SRC/python/." "$WORK/pysrc/"
    rm -rf "$WORK/pysrc/build" "$WORK"/pysrc/*.egg-info
    find "$WORK/pysrc" -name __pycache__ -prune -exec rm -rf {} +
    env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_NO_CACHE_DIR=1 "$WORK/venv/bin/python" -m pip install --no-build-isolation \
        --no-index "$WORK/pysrc" >"$WORK/pip.log" 2>&1 ||
        { cat "$WORK/pip.log"; fail "pip install --no-build-isolation --no-index failed"; }
    rm -rf "$WORK/pysrc"
    # -I: no PYTHONPATH, no user site, no script directory on sys.path.
    env -u STARLING_LIB -u PYTHONPATH -u LD_LIBRARY_PATH \
        timeout 55 "$WORK/venv/bin/python" -I "$SRC/tests/install/outside_allreduce.py" \
        --missing
    env -u STARLING_LIB -u PYTHONPATH LD_LIBRARY_PATH="$lib" \
        timeout 55 "$WORK/venv/bin/python" -I "$SRC/tests/install/outside_allreduce.py" \
        "$lib" "$VERSION"
}

case "$mode" in
stage) stage ;;
pkgconfig) pkgconfig_test ;;
cmake) cmake_test ;;
python) python_test ;;
*) fail "unknown mode" ;;
esac
