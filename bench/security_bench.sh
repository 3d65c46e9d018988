#!/bin/bash
# security_bench.sh -- what sealed frames cost: all-reduce bus bandwidth with security
# none, aead (AES-256-GCM on CPUs with AES-NI) and chacha20, side by side in one run.
#
#   bench/security_bench.sh [--modes none,aead,chacha20] [--peers 4] [--bytes 64M]
#                           [--iters 5] [--rounds 2] [--hosts 4] [--rate 1gbit]
#                           [--bed-bytes 64M] [--bed-iters 3] [--no-bed]
#                           [--starling build/tools/starling] [--out build/bench/security.md]
#
# Loopback: `starling bench allreduce --peers P --bytes B --no-shm` per mode (TCP links: over
# shared memory, local peers seal nothing), the modes interleaved
# --rounds times (so drift on a shared machine hits every mode alike); the figure is the
# median over rounds of each run's median time, as bus bandwidth. Namespace bed (root,
# skipped without): --hosts namespaces linked at --rate with tc tbf (tests/net/netbed.sh),
# one coordinator and one `starling bench-peer` per host, per mode. Ratios are to `none`
# in the same run. The markdown table goes to stdout and to --out.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/net/netbed.sh
source "$root/tests/net/netbed.sh"
# shellcheck source=../tests/net/bed_run.sh
source "$root/tests/net/bed_run.sh"

modes="none,aead,chacha20" peers=4 bytes=64M iters=5 rounds=2 hosts=4 rate=1gbit
bed_bytes=64M bed_iters=3 bed=1 starling="$root/build/tools/starling"
out="$root/build/bench/security.md" name=secbench
usage() { sed -n '/^#   bench\/security_bench.sh/,/--out build/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --no-bed) bed=0; shift; continue ;;
    -h | --help) usage ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --modes) modes=$2 ;;
    --peers) peers=$2 ;;
    --bytes) bytes=$2 ;;
    --iters) iters=$2 ;;
    --rounds) rounds=$2 ;;
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --bed-bytes) bed_bytes=$2 ;;
    --bed-iters) bed_iters=$2 ;;
    --starling) starling=$2 ;;
    --out) out=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "security_bench: no starling program at $starling (build first)" >&2; exit 2; }
[[ $peers =~ ^[0-9]+$ && $iters =~ ^[0-9]+$ && $rounds =~ ^[0-9]+$ && $rounds -ge 1 &&
    $hosts =~ ^[0-9]+$ && $hosts -ge 2 && $bed_iters =~ ^[0-9]+$ ]] || usage
nbytes=$(numfmt --from=iec "$bytes" 2>/dev/null) || usage
bed_nbytes=$(numfmt --from=iec "$bed_bytes" 2>/dev/null) || usage
IFS=, read -r -a mode_list <<<"$modes"
tmp=$(mktemp -d /tmp/security_bench.XXXXXX) || exit 1

# Loopback: median time per run (seconds), from bench's --json line.
declare -A lo=()
for ((r = 0; r < rounds; r++)); do
    for m in "${mode_list[@]}"; do
        echo "security_bench: loopback round $((r + 1))/$rounds, security $m ..." >&2
        if ! "$starling" bench allreduce --peers "$peers" --bytes "$bytes" --iters "$iters" \
            --security "$m" --no-shm --json >"$tmp/lo.$m.$r" 2>"$tmp/lo.$m.$r.log"; then
            echo "security_bench: bench failed: $(tail -n 3 "$tmp/lo.$m.$r.log")" >&2
            exit 1
        fi
        t=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["median_s"])' \
            "$tmp/lo.$m.$r") || { echo "security_bench: no median in bench output" >&2; exit 1; }
        lo[$m]+="$t "
    done
done

busbw() { awk -v n="$1" -v s="$2" -v t="$3" 'BEGIN { printf "%.3f", s * 2 * (n - 1) / n / t / 1e9 }'; }
declare -A lo_med=()
for m in "${mode_list[@]}"; do
    lo_med[$m]=$(tr ' ' '\n' <<<"${lo[$m]}" | grep . | median | awk '{ printf "%.4f", $1 }')
done

# The bed: one coordinator and $hosts bench-peers per mode.
declare -A bed_med=()
bed_note=""
if [[ $bed -eq 1 ]] && netbed_check 2>/dev/null && netbed_guard "$name" 2>/dev/null; then
    bed_session security_bench "$name" || exit 1
    netbed_up --name "$name" --hosts "$hosts" --rate "$rate" || exit 1
    addr0=$(netbed_addr "$name" 0)
    k=0
    for m in "${mode_list[@]}"; do
        k=$((k + 1))
        port=$((7300 + k)) run="sec-$k"
        echo "security_bench: bed $hosts hosts at $rate, security $m ..." >&2
        bed_coordinator "$name-h0" "$addr0:$port" "$dir/coord.$k.out" "$dir/coord.$k.log" \
            --run "$run" --min-peers "$hosts" --security "$m" || { echo "security_bench: $bed_why" >&2; exit 1; }
        cpid=$bed_cpid
        ppids=()
        for ((i = 0; i < hosts; i++)); do
            ip netns exec "$name-h$i" "$starling" bench-peer --coord "$addr0:$port" --run "$run" \
                --index "$i" --peers "$hosts" --bytes "$bed_bytes" --iters "$bed_iters" --warmup 1 \
                --listen "$(netbed_addr "$name" "$i"):0" --security "$m" \
                --report-fd 3 3>"$dir/rep.$k.$i" 2>"$dir/peer.$k.$i.log" </dev/null 9>&- &
            ppids+=($!)
            pids+=($!)
        done
        bed_wait_peers 600 "$dir/peer.$k." "${ppids[@]}" || { echo "security_bench: $bed_why" >&2; exit 1; }
        bed_stop "$cpid"
        times=$(cat "$dir"/rep."$k".* | awk '$1 == "t" { print $3 }')
        bed_med[$m]=$(median <<<"$times" | awk '{ printf "%.4f", $1 }')
    done
else
    bed_note="(namespace bed skipped: needs root, ip netns and tc)"
fi

mkdir -p "$(dirname "$out")"
{
    echo "## Sealed frames: what encryption costs ($(date -u +%Y-%m-%d))"
    echo
    echo "f32 sum all-reduce; bus bandwidth = size * 2(n-1)/n / median time; ratio = that mode's" \
        "bus bandwidth over \`none\`'s in the same run. CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
        "$(nproc) cores; AES-NI: $(grep -qw aes /proc/cpuinfo && echo yes || echo no)." \
        "starling $(git -C "$root" describe --always --dirty 2>/dev/null || echo "?")."
    echo
    echo "| where | security | median s | bus bandwidth GB/s | vs none |"
    echo "| --- | --- | ---: | ---: | ---: |"
    for m in "${mode_list[@]}"; do
        bw=$(busbw "$peers" "$nbytes" "${lo_med[$m]}")
        ratio=$(awk -v a="${lo_med[none]:-0}" -v b="${lo_med[$m]}" 'BEGIN { if (a > 0) printf "%.2f", a / b; else print "-" }')
        echo "| loopback, $peers peers, $bytes (median of $rounds runs x $iters calls) | $m | ${lo_med[$m]} | $bw | $ratio |"
    done
    for m in "${mode_list[@]}"; do
        [[ -n ${bed_med[$m]:-} ]] || continue
        bw=$(busbw "$hosts" "$bed_nbytes" "${bed_med[$m]}")
        ratio=$(awk -v a="${bed_med[none]:-0}" -v b="${bed_med[$m]}" 'BEGIN { if (a > 0) printf "%.2f", a / b; else print "-" }')
        echo "| bed, $hosts hosts at $rate, $bed_bytes ($bed_iters calls) | $m | ${bed_med[$m]} | $bw | $ratio |"
    done
    [[ -n $bed_note ]] && { echo; echo "$bed_note"; }
} | tee "$out"
rm -rf "$tmp"
