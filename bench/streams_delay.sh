#!/bin/bash
# streams_delay.sh -- starling's parallel TCP streams on a long, fat link.
#
# Builds a test bed (tests/net/netbed.sh) of --hosts namespaces with --rate tbf links, and
# puts the link emulator (tests/net/linkemu.c, --offload on) into the links of --emu-hosts
# with --delay-ms one way (2 hosts, emulator on host 0: a round trip of 2 x delay between
# them; a path between two emulated hosts crosses two emulators). Then, for each stream
# count in --streams, runs a coordinator in host 0 and one `starling bench-peer --streams S`
# per host: f32 sum all-reduce of --bytes, --warmup untimed calls (slow start, link set-up),
# then --iters timed calls (rank 0's clock). Reports per stream count the median time, the
# throughput each peer reaches (its ring share 2(n-1)/n * size per call / time, Mbit/s),
# that as a share of --rate, and the ratio to one stream.
#
# Unless --no-tcp-ref, a reference first: plain TCP between host 0 and host 1 on the same
# bed, one way, N Python sender threads with 1 MiB sendall()s for --ref-s seconds, goodput
# counted by the receiver from the first byte (slow start included), for each N in
# --streams (as in docs/testbed.md). The kernel's TCP buffer limits inside the namespaces
# (net.ipv4.tcp_rmem / tcp_wmem, net.core.rmem_max / wmem_max) are printed with the table:
# one stream carries at most about its window per round trip.
#
#   bench/streams_delay.sh [--streams 1,2,4,8] [--hosts 2] [--rate 1gbit] [--delay-ms 50]
#                          [--emu-hosts 0] [--bytes 256M] [--iters 3] [--warmup 1]
#                          [--starling build/tools/starling]
#                          [--linkemu build/tests/net/starling_linkemu] [--name sdelay]
#                          [--peer-arg ARG]... [--ref-s 8] [--no-tcp-ref]
#                          [--out build/bench/streams_delay.md] [--timeout 300]
#                          [--logs DIR] [--update-docs] [--docs FILE]
#
# --streams takes stream counts, each optionally with @BUFFER: bench-peer --socket-buffer
# BUFFER for that run (e.g. 1,4,1@32M: one and four streams with the kernel's buffers, one
# stream with 32 MiB buffers, side by side).
# --logs DIR keeps every process's output (coordinator, peers, reports, emulator) there.
# --peer-arg passes ARG to every bench-peer (repeat it for several; e.g. an option that
# sizes socket buffers). --timeout bounds each stream count's run. --update-docs puts the
# table into docs/testbed.md between <!-- streams_delay:begin --> and
# <!-- streams_delay:end --> (--docs FILE: another file). Needs root (namespaces, tc,
# /dev/net/tun). The bed is removed on exit. The markdown table goes to stdout and --out.
# Exit status 1 if a run failed.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/net/netbed.sh
source "$root/tests/net/netbed.sh"
# shellcheck source=../tests/net/bed_run.sh
source "$root/tests/net/bed_run.sh"
# shellcheck source=docs_section.sh
source "$here/docs_section.sh"

streams_spec="1,2,4,8" hosts=2 rate=1gbit delay_ms=50 emu_hosts=0 bytes=256M iters=3 warmup=1
starling="$root/build/tools/starling" linkemu="$root/build/tests/net/starling_linkemu"
name=sdelay out="$root/build/bench/streams_delay.md" timeout_s=300 update_docs=0
docs="$root/docs/testbed.md" ref_s=8 tcp_ref=1 logs=""
peer_args=()
usage() { sed -n '/^#   bench\/streams_delay.sh/,/--docs FILE]/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --update-docs) update_docs=1; shift; continue ;;
    --no-tcp-ref) tcp_ref=0; shift; continue ;;
    -h | --help) usage ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --streams) streams_spec=$2 ;;
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --delay-ms) delay_ms=$2 ;;
    --emu-hosts) emu_hosts=$2 ;;
    --bytes) bytes=$2 ;;
    --iters) iters=$2 ;;
    --warmup) warmup=$2 ;;
    --starling) starling=$2 ;;
    --linkemu) linkemu=$2 ;;
    --name) name=$2 ;;
    --peer-arg) peer_args+=("$2") ;;
    --ref-s) ref_s=$2 ;;
    --out) out=$2 ;;
    --timeout) timeout_s=$2 ;;
    --logs) logs=$2 ;;
    --docs) docs=$2; update_docs=1 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "streams_delay: no starling program at $starling (build first, or --starling PATH)" >&2; exit 2; }
[[ -x $linkemu ]] || { echo "streams_delay: no link emulator at $linkemu (build first, or --linkemu PATH)" >&2; exit 2; }
[[ $hosts =~ ^[0-9]+$ && $hosts -ge 2 && $hosts -le 50 && $iters =~ ^[0-9]+$ && $iters -ge 1 &&
    $warmup =~ ^[0-9]+$ && $delay_ms =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ &&
    $ref_s =~ ^[0-9]+$ && $ref_s -ge 1 ]] || usage
nbytes=$(numfmt --from=iec "$bytes" 2>/dev/null) || usage
((nbytes >= 4 && nbytes % 4 == 0)) || { echo "streams_delay: --bytes must be a multiple of 4" >&2; exit 2; }
rate_bps=$(netbed_rate_bps "$rate") || { echo "streams_delay: bad --rate '$rate'" >&2; exit 2; }
IFS=, read -r -a stream_list <<<"$streams_spec"
for s in "${stream_list[@]}"; do
    [[ $s =~ ^([0-9]+)(@[0-9]+[KMG]?)?$ && ${BASH_REMATCH[1]} -ge 1 && ${BASH_REMATCH[1]} -le 16 ]] ||
        { echo "streams_delay: expected stream counts 1..16, each optionally @BUFFER ('$streams_spec')" >&2; exit 2; }
done
[[ $update_docs == 0 || -f $docs ]] || { echo "streams_delay: no docs file $docs" >&2; exit 2; }
netbed_check || exit 77
[[ -c /dev/net/tun ]] || { echo "streams_delay: no /dev/net/tun (the link emulator needs TAP devices)" >&2; exit 77; }
netbed_guard "$name" || exit 1

# shellcheck disable=SC2317 # called by bed_session's exit trap
bed_keep_logs() {
    if [[ -n $logs ]]; then
        mkdir -p "$logs" && cp -r "$dir"/. "${TMPDIR:-/tmp}/netbed-$name".emu*.log "$logs"/
    fi
    rm -f "${TMPDIR:-/tmp}/netbed-$name".emu*.log
}
bed_session streams_delay "$name" || exit 1

netbed_up --name "$name" --hosts "$hosts" --rate "$rate" --delay-ms "$delay_ms" --offload on \
    --emu-hosts "$emu_hosts" --emu "$linkemu" || exit 1
addr0=$(netbed_addr "$name" 0)
addr1=$(netbed_addr "$name" 1)
sysctls=$(ip netns exec "$name-h0" sysctl -n net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.core.rmem_max \
    net.core.wmem_max net.ipv4.tcp_congestion_control | tr -s '\t ' ' ' | paste -sd'|')
IFS='|' read -r k_rmem k_wmem k_rmax k_wmax k_cc <<<"$sysctls"
echo "streams_delay: $hosts hosts, $rate links, +${delay_ms} ms one way on hosts $emu_hosts;" \
    "tcp_rmem '$k_rmem', tcp_wmem '$k_wmem', rmem_max $k_rmax, wmem_max $k_wmax, $k_cc" >&2



# The measured round trip between host 0 and host 1: the time of a TCP connect (median of 5).
rtt_ms=$(ip netns exec "$name-h0" /usr/bin/python3 - "$addr1" <<'EOF'
import socket, statistics, sys, threading, time
# A listener in the other namespace is not needed: a closed port answers with RST, one
# round trip like a SYN-ACK.
out = []
for _ in range(5):
    s = socket.socket(); s.settimeout(5)
    t0 = time.monotonic()
    try:
        s.connect((sys.argv[1], 9))
    except OSError:
        pass
    out.append((time.monotonic() - t0) * 1000)
    s.close()
print("%.1f" % statistics.median(out))
EOF
)
echo "streams_delay: measured round trip host 0 -> host 1: ${rtt_ms:-?} ms" >&2

# ---- TCP reference: N sender threads in host 0, a receiver in host 1.
declare -A tcp_mbit=()
if [[ $tcp_ref == 1 ]]; then
    cat >"$dir/tcp_ref.py" <<'EOF'
import socket, sys, threading, time
mode = sys.argv[1]
if mode == "recv":  # recv ADDR PORT N SECONDS: prints goodput in Mbit/s from the first byte
    addr, port, n, secs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(64); ls.settimeout(30)
    print("listening", flush=True)
    total = [0]; first = [None]; lock = threading.Lock()
    def rx(c):
        c.settimeout(secs + 30)
        while True:
            try:
                b = c.recv(1 << 20)
            except OSError:
                return
            if not b:
                return
            with lock:
                if first[0] is None:
                    first[0] = time.monotonic()
                total[0] += len(b)
    ts = []
    for _ in range(n):
        c, _ = ls.accept()
        t = threading.Thread(target=rx, args=(c,), daemon=True); t.start(); ts.append(t)
    for t in ts:
        t.join(secs + 30)
    end = time.monotonic()
    print("%.1f" % (total[0] * 8 / (end - first[0]) / 1e6 if first[0] else 0), flush=True)
else:  # send ADDR PORT N SECONDS
    addr, port, n, secs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    buf = b"\0" * (1 << 20)
    def tx():
        s = socket.create_connection((addr, port), timeout=30)
        end = time.monotonic() + secs
        while time.monotonic() < end:
            s.sendall(buf)
        s.shutdown(socket.SHUT_WR)
        s.close()
    ts = [threading.Thread(target=tx) for _ in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
EOF
    for s in "${stream_list[@]}"; do
        [[ $s == *@* ]] && continue # the reference uses the kernel's buffers
        port=$((5200 + s))
        ip netns exec "$name-h1" /usr/bin/python3 "$dir/tcp_ref.py" recv "$addr1" "$port" "$s" "$ref_s" \
            >"$dir/ref.$s.out" 2>"$dir/ref.$s.log" </dev/null 9>&- &
        rpid=$!
        pids+=("$rpid")
        end=$((SECONDS + 10))
        until grep -q listening "$dir/ref.$s.out" 2>/dev/null || ((SECONDS >= end)); do sleep 0.05; done
        ip netns exec "$name-h0" timeout $((ref_s + 40)) /usr/bin/python3 "$dir/tcp_ref.py" send \
            "$addr1" "$port" "$s" "$ref_s" >/dev/null 2>"$dir/ref.$s.send.log" </dev/null 9>&-
        if wait_all $((SECONDS + 40)) "$rpid"; then
            tcp_mbit[$s]=$(tail -n 1 "$dir/ref.$s.out")
        else
            kill -KILL "$rpid" 2>/dev/null
            tcp_mbit[$s]=fail
        fi
        echo "streams_delay: TCP reference, $s stream(s): ${tcp_mbit[$s]} Mbit/s" >&2
    done
fi

# ---- starling: run_streams K S sets result[K] to "ok MEDIAN MIN MAX" or "fail WHY".
declare -A result=()
run_streams() {
    local k=$1 s=${2%@*} port=$((7400 + $1)) run="streams-$1" i cpid t
    local -a ppids=() buf=()
    [[ $2 == *@* ]] && buf=(--socket-buffer "${2#*@}")
    if ! bed_coordinator "$name-h0" "$addr0:$port" "$dir/coord.$k.out" "$dir/coord.$k.log" \
        --run "$run" --min-peers "$hosts"; then
        result[$k]="fail $bed_why"
        return
    fi
    cpid=$bed_cpid
    for ((i = 0; i < hosts; i++)); do
        ip netns exec "$name-h$i" "$starling" bench-peer --coord "$addr0:$port" --run "$run" \
            --index "$i" --peers "$hosts" --bytes "$bytes" --iters "$iters" --warmup "$warmup" \
            --streams "$s" --listen "$(netbed_addr "$name" "$i"):0" "${buf[@]}" "${peer_args[@]}" \
            --report-fd 3 3>"$dir/rep.$k.$i" 2>"$dir/peer.$k.$i.log" </dev/null 9>&- &
        ppids+=($!)
        pids+=($!)
    done
    bed_wait_peers "$timeout_s" "$dir/peer.$k." "${ppids[@]}" || result[$k]="fail $bed_why"
    bed_stop "$cpid"
    [[ -n ${result[$k]:-} ]] && return
    t=$(cat "$dir"/rep."$k".* | awk '$1 == "t" { print $3 }')
    [[ $(grep -c . <<<"$t") -eq $iters ]] || { result[$k]="fail rank 0 reported no timings"; return; }
    result[$k]="ok $(median <<<"$t") $(sort -g <<<"$t" | head -n 1) $(sort -g <<<"$t" | tail -n 1)"
}

for k in "${!stream_list[@]}"; do
    echo "streams_delay: --streams ${stream_list[$k]} ..." >&2
    run_streams "$k" "${stream_list[$k]}"
    echo "streams_delay:   ${result[$k]}" >&2
done

# ---- The table.
share=$(awk -v n="$hosts" -v s="$nbytes" 'BEGIN { printf "%.0f", 2 * (n - 1) / n * s }')
one=""
for k in "${!stream_list[@]}"; do
    read -r st med _ <<<"${result[$k]}"
    [[ ${stream_list[$k]} == 1 && $st == ok ]] && one=$med
done
bdp=$(awk -v r="$rate_bps" -v d="$delay_ms" 'BEGIN { printf "%.1f", r / 8 * 2 * d / 1000 / 1e6 }')
mkdir -p "$(dirname "$out")"
{
    echo "### Parallel streams on a long link ($(date -u +%Y-%m-%d))"
    echo
    echo "$hosts hosts, tbf $rate links, the link emulator (\`--offload on\`) adding ${delay_ms} ms" \
        "one way on host(s) $emu_hosts (measured TCP connect round trip host 0 -> 1: ${rtt_ms:-?} ms;" \
        "bandwidth-delay product ${bdp} MB). $bytes f32 sum all-reduce, \`starling bench-peer" \
        "--streams S\`, median of $iters timed calls after $warmup warm-up (rank 0's clock)." \
        "Throughput = each peer's ring share 2(n-1)/n * size per call / time." \
        "Kernel limits in the namespaces: tcp_rmem \`$k_rmem\`, tcp_wmem \`$k_wmem\`," \
        "rmem_max $k_rmax, wmem_max $k_wmax, congestion control $k_cc." \
        "starling $(git -C "$root" describe --always --dirty 2>/dev/null || echo "?")${peer_args[*]:+ (bench-peer ${peer_args[*]})}."
    [[ $tcp_ref == 1 ]] && echo "\"TCP\": plain TCP on the same bed, one way host 0 -> 1, S Python sender threads, ${ref_s} s, receiver's goodput."
    echo
    echo "| streams | median s | range s | throughput Mbit/s | % of $rate | vs 1 stream |$([[ $tcp_ref == 1 ]] && echo " TCP Mbit/s |")"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: |$([[ $tcp_ref == 1 ]] && echo " ---: |")"
    for k in "${!stream_list[@]}"; do
        s=${stream_list[$k]}
        ref=""
        [[ $tcp_ref == 1 ]] && ref=" ${tcp_mbit[${s%@*}]:-–} |"
        read -r st rest <<<"${result[$k]}"
        if [[ $st != ok ]]; then
            echo "| $s | $st: $rest | | | | |$ref"
            continue
        fi
        read -r med mn mx <<<"$rest"
        awk -v s="${s/@/, buffers }" -v med="$med" -v mn="$mn" -v mx="$mx" -v sh="$share" -v r="$rate_bps" \
            -v one="$one" -v ref="$ref" 'BEGIN {
            tp = sh * 8 / med / 1e6
            printf "| %s | %.2f | %.2f–%.2f | %.0f | %.0f%% | %s |%s\n", s, med, mn, mx, tp,
                100 * tp * 1e6 / r, one != "" ? sprintf("%.2fx", one / med) : "–", ref }'
    done
} | tee "$out"
if [[ $update_docs == 1 ]]; then
    docs_section_update streams_delay "$docs" "$out" || exit 1
    echo "streams_delay: $docs updated (between the streams_delay markers)" >&2
fi
fails=0
for k in "${!stream_list[@]}"; do [[ ${result[$k]} == fail* ]] && fails=1; done
exit $fails
