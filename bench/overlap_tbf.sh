#!/bin/bash
# overlap_tbf.sh -- bench/overlap_bench.py on shaped links: copy-then-reduce against
# GradientSync's bucketed all-reduces overlapping backward, when the network (not the CPU)
# limits the all-reduce.
#
# Builds a test bed (tests/net/netbed.sh) of --hosts network namespaces whose links are
# shaped with tc tbf to --rate in both directions, runs a coordinator in host 0's namespace
# and one overlap_bench.py worker per host, and prints the table of the peer that got ring
# rank 0. Arguments after `--` go to overlap_bench.py (e.g. --bucket-mb 25,4 --rounds 5).
#
#   bench/overlap_tbf.sh [--hosts 4] [--rate 1gbit] [--starling build/tools/starling]
#                        [--name obench] [--timeout 1800] [-- OVERLAP_BENCH_ARGS...]
#
# Needs root (namespaces, tc) and /usr/bin/python3 with torch. The bed is removed on exit.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/net/netbed.sh
source "$root/tests/net/netbed.sh"
# shellcheck source=../tests/net/bed_run.sh
source "$root/tests/net/bed_run.sh"

hosts=4 rate=1gbit starling="$root/build/tools/starling" name=obench timeout_s=1800
usage() { sed -n '/^#   bench\/overlap_tbf.sh/,/OVERLAP_BENCH_ARGS/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --) shift; break ;;
    -h | --help) usage ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --starling) starling=$2 ;;
    --name) name=$2 ;;
    --timeout) timeout_s=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "overlap_tbf: no starling program at $starling (build first)" >&2; exit 2; }
[[ $hosts =~ ^[0-9]+$ && $hosts -ge 2 && $timeout_s =~ ^[0-9]+$ ]] || usage
lib=${STARLING_LIB:-$(ls "$root"/build/src/libstarling.so 2>/dev/null)}
[[ -n $lib ]] || { echo "overlap_tbf: libstarling.so not built" >&2; exit 2; }
netbed_check || exit 77
netbed_guard "$name" || exit 1
bed_session overlap_tbf "$name" || exit 1
netbed_up --name "$name" --hosts "$hosts" --rate "$rate" || exit 1
addr0=$(netbed_addr "$name" 0)
port=7300
echo "overlap_tbf: $hosts hosts, links $rate" >&2
bed_coordinator "$name-h0" "$addr0:$port" "$dir/coord.out" "$dir/coord.log" \
    --run overlap --min-peers "$hosts" || { echo "overlap_tbf: $bed_why" >&2; exit 1; }
ppids=()
for ((i = 0; i < hosts; i++)); do
    STARLING_COORD=$addr0:$port STARLING_RUN=overlap STARLING_PEERS=$hosts \
        STARLING_RANK_HINT=$i STARLING_LIB=$lib PYTHONPATH=$root/python \
        ip netns exec "$name-h$i" /usr/bin/python3 "$here/overlap_bench.py" --worker \
        --listen "$(netbed_addr "$name" "$i"):0" --link "$rate (tbf, $hosts namespaces)" "$@" \
        >"$dir/peer.$i.out" 2>"$dir/peer.$i.log" </dev/null 9>&- &
    ppids+=($!)
    pids+=($!)
done
if ! bed_wait_peers "$timeout_s" "$dir/peer." "${ppids[@]}"; then
    echo "overlap_tbf: $bed_why" >&2
    exit 1
fi
cat "$dir"/peer.*.out
