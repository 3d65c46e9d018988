#!/usr/bin/env bash
# install-deps.sh -- make sure the Debian packages a make target needs are installed.
#
#   tools/install-deps.sh GROUP...      GROUP is one of: core bench demo
#
# Checks each package with dpkg-query. If some are missing:
#  - as root: installs them with apt-get (no recommends, non-interactive), running
#    `apt-get update` first when the package lists are absent, or once more when the
#    install fails (stale lists on a fresh machine);
#  - otherwise: prints the exact `sudo apt-get install` line and fails, so the user decides.
# Exit status: 0 when everything is present afterwards, 1 otherwise, 2 on bad usage.
set -euo pipefail

# make and libc6-dev are listed explicitly: on a minimal Debian they are absent, and gcc only
# *recommends* libc6-dev, which --no-install-recommends would skip.
# python3-venv, -setuptools and -wheel: tests/install pip-installs python/ offline into a
# venv (python3-venv brings pip's and setuptools' wheels for ensurepip).
# g++, libtorch-dev, pybind11-dev and python3-dev: the torch.distributed backend
# (python/csrc), a C++ extension built against torch 1.13's headers.
# fortunes (bench): the text corpus of the language-model workload (python/starling/textdata.py;
# without it a synthetic corpus is used, and announced); gnuplot-nox (bench, demo): the plots.
pkgs_core=(make cmake pkg-config gcc g++ libc6-dev libsodium-dev libxxhash-dev libzstd-dev zlib1g-dev
    libcmocka-dev libopenblas-dev libuv1-dev python3 python3-numpy python3-pytest python3-torch
    python3-venv python3-setuptools python3-wheel iproute2 nftables libtorch-dev pybind11-dev python3-dev)
pkgs_bench=(openmpi-bin libopenmpi-dev fortunes gnuplot-nox)
pkgs_demo=(gnuplot-nox dataset-fashion-mnist)

usage() {
    echo "usage: $0 GROUP...   (groups: core bench demo fuzz)" >&2
    exit 2
}

[ $# -ge 1 ] || usage

wanted=()
for group in "$@"; do
    case "$group" in
    core) wanted+=("${pkgs_core[@]}") ;;
    bench) wanted+=("${pkgs_bench[@]}") ;;
    fuzz) wanted+=(clang libclang-rt-14-dev) ;;
    demo) wanted+=("${pkgs_demo[@]}") ;;
    *) echo "install-deps: unknown group '$group'" >&2; usage ;;
    esac
done

is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [ "$status" = "install ok installed" ]
}

missing=()
for p in "${wanted[@]}"; do
    is_installed "$p" || missing+=("$p")
done
# Deduplicate while keeping order (groups may overlap in the future).
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present for: $*"
    exit 0
fi

echo "install-deps: missing Debian packages: ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: not root; install them with:" >&2
    echo "    sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run to finish instead of failing on its lock.
apt_opts=(-o DPkg::Lock::Timeout=900 -y --no-install-recommends)

apt_update() {
    echo "install-deps: apt-get update"
    apt-get -o DPkg::Lock::Timeout=900 update </dev/null
}

# A fresh machine (or image with its lists removed) has no package lists at all.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt_update
    updated=1
else
    updated=0
fi

if ! apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null; then
    if [ "$updated" -eq 1 ]; then
        echo "install-deps: apt-get install failed" >&2
        exit 1
    fi
    echo "install-deps: install failed; refreshing package lists and retrying" >&2
    apt_update
    if ! apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null; then
        echo "install-deps: apt-get install failed" >&2
        exit 1
    fi
fi

# Verify: a package name that apt resolved to something else would otherwise go unnoticed.
still=()
for p in "${missing[@]}"; do
    is_installed "$p" || still+=("$p")
done
if [ ${#still[@]} -gt 0 ]; then
    echo "install-deps: still missing after install: ${still[*]}" >&2
    exit 1
fi
echo "install-deps: installed ${missing[*]}"
