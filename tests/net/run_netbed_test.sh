#!/bin/bash
# run_netbed_test.sh -- an all-reduce across a shaped network test bed (tests/net/netbed.sh).
#
# Builds a bed of --hosts network namespaces with tbf-shaped links, runs `starling
# coordinator` in host 0's namespace and one `starling bench-peer` in each host's namespace
# (its data plane listening on that host's address), and checks:
#   - every peer exits 0: bench-peer compares the first reduced result with the known
#     pattern itself and fails on any difference;
#   - the report lines: ranks 0..n-1 each once in one epoch of n members, rank 0 reported
#     every timing, each peer sent at least the ring's 2(n-1)/n of the buffer per call;
#   - the traffic crossed the shaped links: each host's tbf counted at least that much.
# Nothing asserts on time. Exit status: 0 pass, 1 fail, 77 skip (the machine cannot build a
# bed: not root, no namespaces, veth or tbf), 2 bad usage.
#
#   run_netbed_test.sh --starling build/tools/starling [--name N] [--hosts 4] [--rate 100mbit]
#                      [--sites 2,2 --intra-rate 1gbit --inter-rate 100mbit]
#                      [--bytes 8M] [--iters 2] [--timeout 120] [--logs DIR]
#
# The bed is taken down on every exit: by the EXIT trap, and after a SIGKILL (ctest's
# time-out) by the guardian netbed_guard leaves behind.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=netbed.sh
source "$here/netbed.sh"
# shellcheck source=bed_run.sh
source "$here/bed_run.sh"

starling="" name="" hosts=4 rate=100mbit sites="" intra="" inter="" bytes=8M iters=2
timeout_s=120 logs=""
usage() { sed -n '/^#   run_netbed_test.sh/,/^#  *\[--bytes/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || usage
    case $1 in
    --starling) starling=$2 ;;
    --name) name=$2 ;;
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --sites) sites=$2 ;;
    --intra-rate) intra=$2 ;;
    --inter-rate) inter=$2 ;;
    --bytes) bytes=$2 ;;
    --iters) iters=$2 ;;
    --timeout) timeout_s=$2 ;;
    --logs) logs=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "run_netbed_test: --starling PATH (executable) is required" >&2; exit 2; }
[[ $hosts =~ ^[0-9]+$ && $iters =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] || usage
# A name per build tree and configuration: two build trees can test at once, and a
# rerun finds the leftovers of a run that was killed outright.
if [[ -z $name ]]; then
    name="stn$(printf '%s %s %s %s' "$starling" "$hosts" "$rate" "$sites" | cksum | cut -c1-7)"
fi

netbed_check || exit 77
netbed_guard "$name" $((timeout_s + 120)) || exit 1

deadline=$((SECONDS + timeout_s))
# shellcheck disable=SC2317 # called by bed_session's exit trap
bed_keep_logs() { [[ -z $logs ]] || { mkdir -p "$logs" && cp -r "$dir"/. "$logs"/; }; }
bed_session netbed-test "$name" || exit 1

fail() {
    local f
    echo "run_netbed_test: FAIL: $*" >&2
    for f in "$dir"/*; do
        [[ -s $f ]] || continue
        echo "---- ${f##*/}" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}

bed_opts=(--name "$name" --hosts "$hosts" --rate "$rate")
[[ -n $sites ]] && bed_opts+=(--sites "$sites")
[[ -n $intra ]] && bed_opts+=(--intra-rate "$intra")
[[ -n $inter ]] && bed_opts+=(--inter-rate "$inter")
netbed_up "${bed_opts[@]}" || fail "netbed up ${bed_opts[*]}"
echo "run_netbed_test: bed '$name' up: ${bed_opts[*]}"

nbytes=$(numfmt --from=iec "$bytes") || usage
ring_bytes=$((iters * 2 * (hosts - 1) * nbytes / hosts)) # the least each peer sends
run=netbed-test
coord_addr="$(netbed_addr "$name" 0):7000"

bed_coordinator "$name-h0" "$coord_addr" "$dir/coordinator.out" "$dir/coordinator.log" \
    --run "$run" --min-peers "$hosts" || fail "$bed_why"
coord_pid=$bed_cpid

peer_pids=()
for ((i = 0; i < hosts; i++)); do
    ip netns exec "$name-h$i" "$starling" bench-peer --coord "$coord_addr" --run "$run" \
        --index "$i" --peers "$hosts" --bytes "$bytes" --iters "$iters" --warmup 1 \
        --listen "$(netbed_addr "$name" "$i"):0" --report-fd 3 \
        3>"$dir/report.$i" 2>"$dir/peer.$i.log" </dev/null 9>&- &
    peer_pids+=($!)
    pids+=($!)
done

# Bounded wait for every peer; then collect each exit status.
while :; do
    running=0
    for pid in "${peer_pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
    [[ $running -eq 0 ]] && break
    ((SECONDS < deadline)) || fail "peers still running after ${timeout_s}s"
    sleep 0.1
done
for ((i = 0; i < hosts; i++)); do
    wait "${peer_pids[$i]}"
    st=$?
    [[ $st -eq 0 ]] || fail "peer $i exited with status $st"
done

# The reports.
declare -A rank_seen=()
for ((i = 0; i < hosts; i++)); do
    r="$dir/report.$i"
    read -r tag rank size _epoch < <(grep '^ready ' "$r")
    [[ $tag == ready && $size == "$hosts" ]] || fail "peer $i: no 'ready R $hosts E' line"
    [[ -z ${rank_seen[$rank]:-} ]] || fail "rank $rank reported twice"
    rank_seen[$rank]=1
    read -r tag _idx prank sent _rss < <(grep '^p 0 ' "$r")
    [[ $tag == p && $prank == "$rank" ]] || fail "peer $i (rank $rank): no 'p 0 $rank SENT RSS' line"
    ((sent >= ring_bytes)) || fail "peer $i sent $sent payload bytes, the ring needs >= $ring_bytes"
    if [[ $rank == 0 ]]; then
        nt=$(grep -c '^t 0 ' "$r")
        [[ $nt == "$iters" ]] || fail "rank 0 reported $nt timings, expected $iters"
        echo "run_netbed_test: rank 0 timings (s): $(awk '/^t 0 /{ printf "%.3f ", $3 }' "$r")"
    fi
    echo "run_netbed_test: peer $i rank $rank sent $sent bytes"
done
[[ ${#rank_seen[@]} == "$hosts" ]] || fail "ranks seen: ${!rank_seen[*]}"

# The data went through the shaped links, not around them.
for ((i = 0; i < hosts; i++)); do
    q=$(tc -s -n "$name-h$i" qdisc show dev eth0 | awk '/^qdisc tbf/{ t = 1 } t && /Sent/{ print $2; exit }')
    [[ -n $q ]] || fail "no tbf statistics on host $i's link"
    ((q >= ring_bytes)) || fail "host $i's tbf passed $q bytes, fewer than the $ring_bytes sent"
done

kill -TERM "$coord_pid" 2>/dev/null
for ((k = 0; k < 50; k++)); do kill -0 "$coord_pid" 2>/dev/null || break; sleep 0.1; done
echo "run_netbed_test: PASS ($hosts hosts, $bytes x $iters, ${bed_opts[*]})"
exit 0
