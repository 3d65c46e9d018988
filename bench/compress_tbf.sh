#!/bin/bash
# compress_tbf.sh -- compressed all-reduce on slow links: codecs side by side in one run.
#
# Builds a test bed (tests/net/netbed.sh) of --hosts network namespaces whose links are
# shaped with tc tbf to --rate in both directions, then for each codec runs a coordinator
# in host 0's namespace and one `starling bench-peer` per host (f32 sum all-reduce of
# --bytes, --warmup untimed calls, then --iters timed calls; bench-peer checks the first
# result itself). Reports per codec: median time of the timed calls (rank 0's clock),
# payload bytes each peer sent per call, the time the link needs for those bytes at --rate
# (for `none` this is the ring bound 2(n-1)/n * size / rate), the speed-up over `none`, and
# for a codec the error of its result against an exact all-reduce of the same input (the
# "e" line bench-peer reports; with --compress it also runs that exact all-reduce, untimed).
# Optionally gloo (torch.distributed) on the same bed for reference.
#
#   bench/compress_tbf.sh [--codecs none,bf16,int8,int4,topk:0.01] [--hosts 4]
#                         [--rate 100mbit] [--bytes 64M] [--iters 3] [--warmup 1]
#                         [--streams 1] [--starling build/tools/starling] [--name cbench]
#                         [--out build/bench/compress_tbf.md] [--timeout 600] [--no-gloo]
#
# A codec other than `none` is passed as `bench-peer --compress SPEC`; if bench-peer does
# not know the option (usage error, exit 2) the codec is reported as unsupported and the
# others still run. Needs root (namespaces, tc). The bed is removed on exit.
# The markdown table goes to stdout and to --out.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/net/netbed.sh
source "$root/tests/net/netbed.sh"
# shellcheck source=../tests/net/bed_run.sh
source "$root/tests/net/bed_run.sh"

codecs="none,bf16,int8,int4,topk:0.01" hosts=4 rate=100mbit bytes=64M iters=3 warmup=1
streams=1 starling="$root/build/tools/starling" name=cbench out="$root/build/bench/compress_tbf.md"
timeout_s=600 gloo=1
usage() { sed -n '/^#   bench\/compress_tbf.sh/,/--no-gloo]/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --no-gloo) gloo=0; shift; continue ;;
    -h | --help) usage ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --codecs) codecs=$2 ;;
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --bytes) bytes=$2 ;;
    --iters) iters=$2 ;;
    --warmup) warmup=$2 ;;
    --streams) streams=$2 ;;
    --starling) starling=$2 ;;
    --name) name=$2 ;;
    --out) out=$2 ;;
    --timeout) timeout_s=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "compress_tbf: no starling program at $starling (build first)" >&2; exit 2; }
[[ $hosts =~ ^[0-9]+$ && $hosts -ge 2 && $iters =~ ^[0-9]+$ && $iters -ge 1 &&
    $warmup =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] || usage
nbytes=$(numfmt --from=iec "$bytes" 2>/dev/null) || usage
rate_bps=$(netbed_rate_bps "$rate") || { echo "compress_tbf: bad --rate '$rate'" >&2; exit 2; }
netbed_check || exit 77
netbed_guard "$name" || exit 1
IFS=, read -r -a codec_list <<<"$codecs"

bed_session compress_tbf "$name" || exit 1

netbed_up --name "$name" --hosts "$hosts" --rate "$rate" || exit 1
addr0=$(netbed_addr "$name" 0)
burst=$(netbed__burst "$rate")
echo "compress_tbf: $hosts hosts, links $rate (tbf burst $burst B), $bytes f32 sum," \
    "$warmup warm-up + $iters timed calls per codec" >&2



# run_codec K SPEC: one coordinator and $hosts peers; sets result[K] to
# "ok MEDIAN MIN MAX SENT_PER_CALL_MEAN SENT_PER_CALL_MAX ERROR" or "skip WHY" / "fail WHY".
declare -A result=()
run_codec() {
    local k=$1 spec=$2 port=$((7100 + $1)) run="compress-$1" i cpid
    local -a ppids=() extra=()
    [[ $spec != none ]] && extra=(--compress "$spec")
    if ! bed_coordinator "$name-h0" "$addr0:$port" "$dir/coord.$k.out" "$dir/coord.$k.log" \
        --run "$run" --min-peers "$hosts"; then
        result[$k]="fail $bed_why"
        return
    fi
    cpid=$bed_cpid
    for ((i = 0; i < hosts; i++)); do
        ip netns exec "$name-h$i" "$starling" bench-peer --coord "$addr0:$port" --run "$run" \
            --index "$i" --peers "$hosts" --bytes "$bytes" --iters "$iters" --warmup "$warmup" \
            --streams "$streams" --listen "$(netbed_addr "$name" "$i"):0" "${extra[@]}" \
            --report-fd 3 3>"$dir/rep.$k.$i" 2>"$dir/peer.$k.$i.log" </dev/null 9>&- &
        ppids+=($!)
        pids+=($!)
    done
    if ! bed_wait_peers "$timeout_s" "$dir/peer.$k." "${ppids[@]}"; then
        if [[ $bed_status -eq 2 ]] && grep -q -- "unknown option '--compress'" "$dir/peer.$k.$bed_peer.log"; then
            result[$k]="skip bench-peer has no --compress option yet"
        elif [[ $bed_status -eq 2 ]]; then
            result[$k]="fail bench-peer refused the arguments: $bed_why"
        else
            result[$k]="fail $bed_why"
        fi
    fi
    bed_stop "$cpid"
    [[ -n ${result[$k]:-} ]] && return
    local times med mn mx sent_mean sent_max relerr
    times=$(cat "$dir"/rep."$k".* | awk '$1 == "t" { print $3 }')
    [[ $(grep -c . <<<"$times") -eq $iters ]] || { result[$k]="fail rank 0 reported no timings"; return; }
    med=$(median <<<"$times")
    mn=$(sort -g <<<"$times" | head -n 1)
    mx=$(sort -g <<<"$times" | tail -n 1)
    read -r sent_mean sent_max < <(cat "$dir"/rep."$k".* | awk -v it="$iters" '$1 == "p" {
        s = $4 / it; t += s; n++; if (s > m) m = s } END { printf "%.0f %.0f\n", n ? t / n : 0, m }')
    # "e IDX MAXERR RMSERR RMSREF" (rank 0, compressed runs): error against an exact
    # all-reduce of the same input; without a codec the result was checked exactly.
    relerr=$(cat "$dir"/rep."$k".* | awk '$1 == "e" { printf "%.2e/%.2e", $4 / ($5 > 0 ? $5 : 1), $3; exit }')
    result[$k]="ok $med $mn $mx $sent_mean $sent_max ${relerr:-exact}"
}

for k in "${!codec_list[@]}"; do
    echo "compress_tbf: codec ${codec_list[$k]} ..." >&2
    run_codec "$k" "${codec_list[$k]}"
    echo "compress_tbf:   ${result[$k]}" >&2
done

# gloo (torch.distributed) on the same bed, plain f32 sum, for reference.
gloo_result=""
if [[ $gloo -eq 1 ]] && /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null; then
    echo "compress_tbf: gloo ..." >&2
    cat >"$dir/gloo_peer.py" <<'EOF'
import sys, time, torch, torch.distributed as dist
rank, n, addr, nbytes, warmup, iters = sys.argv[1:7]
rank, n, nbytes, warmup, iters = int(rank), int(n), int(nbytes), int(warmup), int(iters)
dist.init_process_group("gloo", init_method="tcp://" + addr, rank=rank, world_size=n)
t = torch.empty(nbytes // 4, dtype=torch.float32)
want = n * (n + 1) / 2
for k in range(warmup + iters):
    t.fill_(rank + 1.0)
    dist.barrier()
    t0 = time.monotonic()
    dist.all_reduce(t)
    dt = time.monotonic() - t0
    if k == warmup and not bool((t == want).all()):
        sys.exit("gloo rank %d: wrong result" % rank)
    if k >= warmup and rank == 0:
        print("t", dt, flush=True)
dist.barrier()
EOF
    gpids=()
    for ((i = 0; i < hosts; i++)); do
        GLOO_SOCKET_IFNAME=eth0 ip netns exec "$name-h$i" /usr/bin/python3 "$dir/gloo_peer.py" \
            "$i" "$hosts" "$addr0:29500" "$nbytes" "$warmup" "$iters" \
            >"$dir/gloo.$i.out" 2>"$dir/gloo.$i.log" </dev/null 9>&- &
        gpids+=($!)
        pids+=($!)
    done
    if wait_all $((SECONDS + timeout_s)) "${gpids[@]}"; then
        gloo_ok=1
        for i in "${gpids[@]}"; do wait "$i" || gloo_ok=0; done
        times=$(awk '$1 == "t" { print $2 }' "$dir/gloo.0.out")
        if [[ $gloo_ok -eq 1 && $(wc -l <<<"$times") -eq $iters ]]; then
            gloo_result="ok $(median <<<"$times") $(sort -g <<<"$times" | head -n 1) $(sort -g <<<"$times" | tail -n 1)"
        else
            gloo_result="fail $(cat "$dir"/gloo.*.log | grep -v '^\s*$' | tail -n 1 | cut -c1-160)"
        fi
    else
        for i in "${gpids[@]}"; do kill -KILL "$i" 2>/dev/null; done
        gloo_result="fail time-out after ${timeout_s}s"
    fi
    echo "compress_tbf:   gloo: $gloo_result" >&2
fi

# The table.
none_med=""
for k in "${!codec_list[@]}"; do
    read -r st med _ <<<"${result[$k]}"
    [[ ${codec_list[$k]} == none && $st == ok ]] && none_med=$med
done
ring_bound=$(awk -v n="$hosts" -v s="$nbytes" -v r="$rate_bps" 'BEGIN { printf "%.3f", 2 * (n - 1) / n * s * 8 / r }')
mkdir -p "$(dirname "$out")"
{
    echo "## Compressed all-reduce on $rate links ($(date -u +%Y-%m-%d))"
    echo
    echo "$hosts hosts (network namespaces, bridge, tbf $rate each way, burst $burst B)," \
        "$bytes f32 sum all-reduce, median of $iters timed calls after $warmup warm-up," \
        "rank 0's clock. Ring bound for \`none\`: 2(n-1)/n * size / rate = **${ring_bound} s**;" \
        "TCP goodput on a shaped link is ~95.6% of the rate." \
        "\"link time\" = the largest per-peer payload of one call at $rate (for \`none\`, the ring bound)." \
        "starling $(git -C "$root" describe --always --dirty 2>/dev/null || echo "?")."
    echo
    echo "Error: relative RMS error / max abs error of the first timed result against an" \
        "uncompressed all-reduce of the same input (bench-peer's \"e\" line);" \
        "\"exact\": checked bit for bit against the known pattern."
    echo
    echo "| codec | median s | min–max s | sent per peer per call | vs none bytes | link time s | link time / median | speed-up vs none | error |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    none_sent=""
    for k in "${!codec_list[@]}"; do
        read -r st med _ _ _ smax _ <<<"${result[$k]}"
        [[ ${codec_list[$k]} == none && $st == ok ]] && none_sent=$smax
    done
    for k in "${!codec_list[@]}"; do
        c=${codec_list[$k]}
        read -r st rest <<<"${result[$k]}"
        if [[ $st != ok ]]; then
            echo "| \`$c\` | $st: $rest | | | | | | | |"
            continue
        fi
        read -r med mn mx smean smax relerr <<<"$rest"
        awk -v c="$c" -v med="$med" -v mn="$mn" -v mx="$mx" -v sm="$smean" -v sx="$smax" -v e="$relerr" \
            -v r="$rate_bps" -v nm="$none_med" -v ns="$none_sent" 'BEGIN {
            lt = sx * 8 / r
            printf "| `%s` | %.3f | %.3f–%.3f | %.2f MiB | %s | %.3f | %.0f%% | %s | %s |\n", c, med, mn, mx,
                sm / 1048576, ns != "" ? sprintf("%.3f", sm / ns) : "–", lt, 100 * lt / med,
                nm != "" ? sprintf("%.2fx", nm / med) : "–", e }'
    done
    if [[ -n $gloo_result ]]; then
        read -r st med mn mx <<<"$gloo_result"
        if [[ $st == ok ]]; then
            awk -v med="$med" -v mn="$mn" -v mx="$mx" -v b="$ring_bound" -v nm="$none_med" 'BEGIN {
                printf "| gloo (torch), f32 | %.3f | %.3f–%.3f | – | – | %.3f | %.0f%% | %s | exact |\n", med, mn, mx,
                    b, 100 * b / med, nm != "" ? sprintf("%.2fx", nm / med) : "–" }'
        else
            echo "| gloo (torch), f32 | $gloo_result | | | | | | | |"
        fi
    fi
} | tee "$out"
fails=0
for k in "${!codec_list[@]}"; do [[ ${result[$k]} == fail* ]] && fails=1; done
exit $fails
