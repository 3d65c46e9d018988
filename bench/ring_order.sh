#!/bin/bash
# ring_order.sh -- issue 7's topology-aware ring, measured: two sites joined by one slow
# link, the worst ring order against the one the coordinator picks from measured links.
#
# Builds a test bed (tests/net/netbed.sh) of two sites of --per-site hosts each: links of
# --intra-rate inside a site, one full-duplex --inter-rate uplink between the sites. Then,
# in one run, for each ring order: a coordinator in host 0's namespace and one
# `starling bench-peer` per host (f32 sum all-reduce of --bytes, --warmup untimed calls,
# --iters timed ones). Peers are named so that sorting by name alternates between the
# sites (a0 in site 0, a1 in site 1, a2 in site 0, ...): every ring link crosses the
# uplink, and each direction of it carries --per-site flows at once.
#   worst     coordinator --ring-order name: the alternating order;
#   measured  coordinator --ring-order measured: the peers measure their links when the
#             first epoch forms (probes of --probe-bytes), the coordinator reorders;
#   best      the peers named by site (b0..: site 0 first), --ring-order name: the order
#             a person who knows the topology would write down.
# Reports per order the median time, the speed-up over worst (target: measured >= 1.5x),
# the ring bound of the best order (2(n-1)/n * size / inter-rate), and the order the
# coordinator logged.
#
#   bench/ring_order.sh [--per-site 3] [--intra-rate 1gbit] [--inter-rate 100mbit]
#                       [--bytes 16M] [--iters 3] [--warmup 1] [--probe-bytes 2M]
#                       [--starling build/tools/starling] [--name rorder]
#                       [--out build/bench/ring_order.md] [--timeout 300] [--check]
#
# --check: a test rather than a benchmark (ctest net.ring-order): only the measured order
# runs, and the exit status is 0 only if the coordinator logged its decision and its ring
# crosses the uplink exactly twice (every site visited once). Times are reported, not
# judged.
#
# Needs root (namespaces, tc). The bed is removed on exit. The markdown table goes to
# stdout and to --out.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/net/netbed.sh
source "$root/tests/net/netbed.sh"
# shellcheck source=../tests/net/bed_run.sh
source "$root/tests/net/bed_run.sh"

per_site=3 intra=1gbit inter=100mbit bytes=16M iters=3 warmup=1 probe=2M
starling="$root/build/tools/starling" name=rorder out="$root/build/bench/ring_order.md" timeout_s=300
check=0
usage() { sed -n '/^#   bench\/ring_order.sh/,/--check]/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help) usage ;;
    --check) check=1; shift; continue ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --per-site) per_site=$2 ;;
    --intra-rate) intra=$2 ;;
    --inter-rate) inter=$2 ;;
    --bytes) bytes=$2 ;;
    --iters) iters=$2 ;;
    --warmup) warmup=$2 ;;
    --probe-bytes) probe=$2 ;;
    --starling) starling=$2 ;;
    --name) name=$2 ;;
    --out) out=$2 ;;
    --timeout) timeout_s=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "ring_order: no starling program at $starling (build first)" >&2; exit 2; }
[[ $per_site =~ ^[0-9]+$ && $per_site -ge 2 && $iters =~ ^[0-9]+$ && $iters -ge 1 &&
    $warmup =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] || usage
nbytes=$(numfmt --from=iec "$bytes" 2>/dev/null) || usage
inter_bps=$(netbed_rate_bps "$inter") || { echo "ring_order: bad --inter-rate '$inter'" >&2; exit 2; }
netbed_rate_bps "$intra" >/dev/null || { echo "ring_order: bad --intra-rate '$intra'" >&2; exit 2; }
hosts=$((2 * per_site))
netbed_check || exit 77
netbed_guard "$name" || exit 1

bed_session ring_order "$name" || exit 1

netbed_up --name "$name" --sites "$per_site,$per_site" --intra-rate "$intra" \
    --inter-rate "$inter" || exit 1
addr0=$(netbed_addr "$name" 0)
echo "ring_order: 2 sites x $per_site hosts, $intra inside, $inter between; $bytes f32 sum," \
    "$warmup warm-up + $iters timed calls per order" >&2

# peer_name KIND I: host I's name. alt: a<2*(I mod per_site) + site> (sorted by name, the
# ring alternates between the sites); site: b<I> (site 0, then site 1).
peer_name() {
    local site=$(($2 / per_site)) pos=$(($2 % per_site))
    if [[ $1 == alt ]]; then printf 'a%02d' $((2 * pos + site)); else printf 'b%02d' "$2"; fi
}



# run_order K POLICY NAMES: sets result[K] to "ok MEDIAN MIN MAX" or "fail WHY", and
# ring[K] to the member list of the coordinator's last epoch.
declare -A result=() ring=() crossings=()
run_order() {
    local k=$1 policy=$2 names=$3 port=$((7300 + $1)) run="rorder-$1" i cpid
    local -a ppids=()
    if ! bed_coordinator "$name-h0" "$addr0:$port" "$dir/coord.$k.out" "$dir/coord.$k.log" \
        --run "$run" --min-peers "$hosts" --ring-order "$policy" --probe-bytes "$probe"; then
        result[$k]="fail $bed_why"
        return
    fi
    cpid=$bed_cpid
    for ((i = 0; i < hosts; i++)); do
        ip netns exec "$name-h$i" "$starling" bench-peer --coord "$addr0:$port" --run "$run" \
            --index "$i" --peers "$hosts" --bytes "$bytes" --iters "$iters" --warmup "$warmup" \
            --name "$(peer_name "$names" "$i")" --listen "$(netbed_addr "$name" "$i"):0" \
            --report-fd 3 3>"$dir/rep.$k.$i" 2>"$dir/peer.$k.$i.log" </dev/null 9>&- &
        ppids+=($!)
        pids+=($!)
    done
    bed_wait_peers "$timeout_s" "$dir/peer.$k." "${ppids[@]}" || result[$k]="fail $bed_why"
    bed_stop "$cpid"
    ring[$k]=$(grep -o 'epoch [0-9]*: [0-9]* members:.*' "$dir/coord.$k.log" | tail -n 1 |
        sed 's/.*members: *//')
    # Ring links that cross between the sites (a name's site: see peer_name).
    crossings[$k]=$(awk -v ps="$per_site" '{ for (i = 1; i <= NF; i++) {
            v = substr($i, 2) + 0; s[i] = substr($i, 1, 1) == "a" ? v % 2 : int(v / ps) }
        for (i = 1; i <= NF; i++) c += s[i] != s[i % NF + 1]; print c + 0 }' <<<"${ring[$k]}")
    [[ -n ${result[$k]:-} ]] && return
    local times
    times=$(cat "$dir"/rep."$k".* | awk '$1 == "t" { print $3 }')
    [[ $(grep -c . <<<"$times") -eq $iters ]] || { result[$k]="fail rank 0 reported no timings"; return; }
    result[$k]="ok $(median <<<"$times") $(sort -g <<<"$times" | head -n 1) $(sort -g <<<"$times" | tail -n 1)"
}

orders=(worst measured best)
policies=(name measured name)
namings=(alt alt site)
if [[ $check -eq 1 ]]; then
    run_order 1 measured alt
    echo "ring_order: measured: ${result[1]}; ring: ${ring[1]} (${crossings[1]} crossings)"
    grep -ho 'ring order (measured.*' "$dir/coord.1.log" | head -n 1
    [[ ${result[1]} == ok* && ${crossings[1]} -eq 2 ]] &&
        grep -q 'ring order (measured' "$dir/coord.1.log"
    exit
fi
for k in 0 1 2; do
    echo "ring_order: ${orders[$k]} ..." >&2
    run_order "$k" "${policies[$k]}" "${namings[$k]}"
    echo "ring_order:   ${result[$k]}; ring: ${ring[$k]} (${crossings[$k]} crossings)" >&2
done

bound=$(awk -v n="$hosts" -v b="$nbytes" -v r="$inter_bps" 'BEGIN { printf "%.3f", 2 * (n - 1) / n * b * 8 / r }')
worst_med=$(awk '{ print $2 }' <<<"${result[0]}")
mkdir -p "$(dirname "$out")" || exit 1
{
    echo "Two sites of $per_site hosts ($intra inside a site, one $inter link between them)," \
        "$bytes f32 sum all-reduce, median of $iters (+$warmup warm-up); ring bound of the" \
        "best order (2(n-1)/n x size / $inter): $bound s."
    echo
    echo "| ring order | ring (coordinator's last epoch) | uplink crossings | median | min | max | speed-up vs worst |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for k in 0 1 2; do
        read -r st med mn mx <<<"${result[$k]}"
        if [[ $st == ok ]]; then
            printf '| %s | %s | %s | %.3f s | %.3f s | %.3f s | %s |\n' "${orders[$k]}" \
                "${ring[$k]}" "${crossings[$k]}" "$med" "$mn" "$mx" \
                "$(awk -v w="$worst_med" -v m="$med" 'BEGIN { if (w > 0 && m > 0) printf "%.2fx", w / m; else print "-" }')"
        else
            printf '| %s | %s | %s | %s | | | |\n' "${orders[$k]}" "${ring[$k]}" "${crossings[$k]}" \
                "${result[$k]}"
        fi
    done
    echo
    grep -ho 'ring order (measured.*' "$dir/coord.1.log" | sed 's/^/Coordinator: /' | head -n 2
} | tee "$out.tmp"
mv "$out.tmp" "$out"
[[ ${result[1]} == ok* ]]
