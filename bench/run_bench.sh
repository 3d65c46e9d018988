#!/usr/bin/env bash
# run_bench.sh -- f32 SUM all-reduce on loopback: starling, gloo and OpenMPI side by side in one
# run (the machine is shared and noisy: only figures taken together are comparable).
#
# Environment (defaults in brackets):
#   BENCH_PEERS   peer counts, space or comma separated            [2 4]
#   BENCH_BYTES   sizes, comma separated, suffixes K/M/G (binary)  [4,1M,64M,256M]
#   BENCH_ITERS   timed calls per size                              [10]
#   BENCH_WARMUP  untimed calls per size (gloo, OpenMPI)            [3]
#   BENCH_IMPLS   which implementations     [starling starling-aead starling-tcp gloo openmpi openmpi-sm]
#                 (starling: --security none, clear frames like gloo's and OpenMPI's;
#                 starling-aead: the default, every frame encrypted and authenticated;
#                 both use shared memory between these local peers, the default;
#                 starling-tcp: --security none --no-shm, every ring link on TCP;
#                 openmpi: its TCP transport; openmpi-sm: its shared-memory one, vader)
#   BENCH_TIMEOUT seconds allowed for one implementation at one peer count [900]
#   BUILD_DIR     the CMake build tree                              [build]
#   MPIRUN_ARGS   extra mpirun options (e.g. ring on slow links:
#                 --mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 4)
#
# Output: one table on stdout, the same as markdown in $BUILD_DIR/bench/results.md, raw JSON
# records in $BUILD_DIR/bench/results.jsonl and each run's stdout/stderr beside them.
# An implementation that is missing or fails shows as "n/a" with its error; the script goes on.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
OUT=$BUILD_DIR/bench
PY=/usr/bin/python3 # Debian's interpreter: the one with python3-torch (not a pyenv on PATH)
PEERS=${BENCH_PEERS:-2 4}
BYTES=${BENCH_BYTES:-4,1M,64M,256M}
ITERS=${BENCH_ITERS:-10}
WARMUP=${BENCH_WARMUP:-3}
IMPLS=${BENCH_IMPLS:-starling starling-aead starling-tcp gloo openmpi openmpi-sm}
TIMEOUT=${BENCH_TIMEOUT:-900}
MPIRUN_ARGS=${MPIRUN_ARGS:-}
STARLING=$BUILD_DIR/tools/starling
MPI_BIN=$OUT/mpi_allreduce
RESULTS=$OUT/results.jsonl
REPORT=$ROOT/bench/report.py

die() {
    echo "run_bench: $*" >&2
    exit 1
}

[ -x "$PY" ] || die "$PY not found (apt-get install python3)"
mkdir -p "$OUT" || die "cannot create $OUT"

# "64M" -> 67108864: every implementation gets plain byte counts, so none depends on the
# others' suffix parsing.
to_bytes() {
    local s=${1^^} mult=1
    s=${s%B}
    s=${s%I}
    case "$s" in
    *K) mult=1024; s=${s%K} ;;
    *M) mult=$((1024 * 1024)); s=${s%M} ;;
    *G) mult=$((1024 * 1024 * 1024)); s=${s%G} ;;
    esac
    [[ "$s" =~ ^[0-9]+$ ]] || return 1
    echo $((10#$s * mult))
}

sizes=()
IFS=', ' read -r -a raw_sizes <<<"$BYTES"
for s in "${raw_sizes[@]}"; do
    [ -n "$s" ] || continue
    b=$(to_bytes "$s") || die "bad size '$s' in BENCH_BYTES"
    { [ "$b" -ge 4 ] && [ $((b % 4)) -eq 0 ]; } || die "size $s is not a positive multiple of 4"
    sizes+=("$b")
done
[ ${#sizes[@]} -gt 0 ] || die "BENCH_BYTES is empty"
SIZES=$(IFS=,; echo "${sizes[*]}")
IFS=', ' read -r -a peer_list <<<"$PEERS"
IFS=', ' read -r -a impl_list <<<"$IMPLS"
[[ "$ITERS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ITERS must be a positive integer"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a non-negative integer"

: >"$RESULTS"
"$PY" "$REPORT" meta --note "iters $ITERS, warm-up $WARMUP; sizes $SIZES" >>"$RESULTS"

# The OpenMPI baseline is a small C program, built here with mpicc (not part of CMake).
mpi_error=""
if [[ " ${impl_list[*]} " == *" openmpi "* ]]; then
    if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
        mpi_error="mpicc/mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    elif [ ! -x "$MPI_BIN" ] || [ "$ROOT/bench/mpi_allreduce.c" -nt "$MPI_BIN" ]; then
        echo "run_bench: building $MPI_BIN"
        if ! mpicc -std=c99 -O2 -Wall -Wextra -o "$MPI_BIN" "$ROOT/bench/mpi_allreduce.c" \
            2>"$OUT/mpi_allreduce.build.log"; then
            mpi_error="mpicc failed: $(tail -n 3 "$OUT/mpi_allreduce.build.log" | tr '\n' ' ')"
        fi
    fi
fi

# run IMPL PEERS CMD...: runs one implementation at one peer count under a time limit and
# appends its records (or an error record) to results.jsonl.
run() {
    local impl=$1 peers=$2
    shift 2
    local base="$OUT/$impl-$peers" rc
    echo "run_bench: $impl, $peers peers: $*"
    timeout -k 10 "$TIMEOUT" "$@" </dev/null >"$base.out" 2>"$base.err"
    rc=$?
    grep '^{' "$base.out" || true
    "$PY" "$REPORT" collect --impl "$impl" --peers "$peers" --rc "$rc" \
        --stdout "$base.out" --stderr "$base.err" --cmd "$*" >>"$RESULTS"
    [ "$rc" -eq 0 ] || echo "run_bench: $impl, $peers peers failed (status $rc), see $base.err"
}

# unavailable IMPL PEERS WHY: records that an implementation could not be run at all.
unavailable() {
    echo "run_bench: $1, $2 peers: n/a ($3)"
    : >"$OUT/$1-$2.out"
    "$PY" "$REPORT" collect --impl "$1" --peers "$2" --rc 127 --stdout "$OUT/$1-$2.out" \
        --stderr /dev/null --error "$3" >>"$RESULTS"
}

for peers in "${peer_list[@]}"; do
    [ -n "$peers" ] || continue
    if ! [[ "$peers" =~ ^[0-9]+$ ]] || [ "$peers" -lt 2 ]; then
        die "bad peer count '$peers'"
    fi
    for impl in "${impl_list[@]}"; do
        case "$impl" in
        starling | starling-aead | starling-tcp)
            if [ ! -x "$STARLING" ]; then
                unavailable "$impl" "$peers" "$STARLING not built (make build)"
            else
                sec=none
                extra=()
                [ "$impl" = starling-aead ] && sec=aead
                [ "$impl" = starling-tcp ] && extra=(--no-shm)
                run "$impl" "$peers" "$STARLING" bench allreduce --peers "$peers" \
                    --bytes "$SIZES" --iters "$ITERS" --security "$sec" --json "${extra[@]}"
            fi
            ;;
        gloo)
            if ! "$PY" -c 'import torch.distributed' 2>/dev/null; then
                unavailable gloo "$peers" "torch not importable by $PY (apt-get install python3-torch)"
            else
                GLOO_SOCKET_IFNAME=lo run gloo "$peers" "$PY" "$ROOT/bench/gloo_allreduce.py" \
                    --peers "$peers" --bytes "$SIZES" --iters "$ITERS" --warmup "$WARMUP"
            fi
            ;;
        openmpi | openmpi-sm)
            btl="tcp,self --mca btl_tcp_if_include lo"
            [ "$impl" = openmpi-sm ] && btl="vader,self"
            if [ -n "$mpi_error" ]; then
                unavailable "$impl" "$peers" "$mpi_error"
            else
                # shellcheck disable=SC2086 # MPIRUN_ARGS is a list of options
                run "$impl" "$peers" mpirun --allow-run-as-root --oversubscribe -np "$peers" \
                    --mca btl $btl $MPIRUN_ARGS \
                    "$MPI_BIN" --bytes "$SIZES" --iters "$ITERS" --warmup "$WARMUP"
            fi
            ;;
        *) die "unknown implementation '$impl' in BENCH_IMPLS" ;;
        esac
    done
done

"$PY" "$REPORT" meta >>"$RESULTS"
echo
"$PY" "$REPORT" report "$RESULTS" --md "$OUT/results.md" || die "report failed"
