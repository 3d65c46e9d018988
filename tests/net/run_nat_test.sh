#!/bin/bash
# run_nat_test.sh -- NAT traversal in a shaped test bed (tests/net/netbed.sh): two peers sit
# behind home routers that let no connection in; one of them joins a running group late.
#
# Bed: 5 hosts at --rate (namespaces NAME-h0..h4, bridge NAME-br); hosts 0..2 reachable at
# 10.77.X.(i+1). Hosts 3 and 4 each get a home router, namespace NAME-rt<i>: the host's bed
# link (eth0, bridge port p<i>) moves into it as `wan` with the public 10.77.X.(i+1) (shaped
# again); a new veth, router `lan` 192.168.(10+i).1/24 <-> host eth0 .2/24, is the host's
# only way out (a route to the bed's /24, no default route). The router forwards,
# masquerades the LAN on wan and drops forwarded packets of connections not opened from
# the LAN (nftables table homenat). Then:
#   1. the NAT works: host 3/4 reaches host 0, which sees the router's public address; host
#      0 cannot reach the private address, not even with a route through the router;
#   2. `starling coordinator` in host 0; itest_peer --mode stream p0..p2 on hosts 0..2, p3
#      on host 3 with --no-inbound: each completes --warm iterations with 4 members;
#   3. p4 on host 4 joins with --no-inbound --join (from zeros, it takes the group's state
#      and iteration at a topology point: JOINED, SYNC changed=1); every peer completes
#      --progress iterations with 5 members after that;
#   4. stop (the stop file) and check: every peer exits 0 with the same DONE line
#      (iterations, XXH3 and FNV of the state); each member completed each iteration once,
#      members agree on its (size, epoch): 4 before p4's JOINED iteration, 5 from it on;
#   5. the coordinator's log says "accepts no inbound connections" for p3 and p4 (each such
#      line names one of them), and no ring it formed has p3 and p4 as neighbours.
# Nothing asserts on time; the join time and the final ring are printed as figures.
# Exit status: 0 pass, 1 fail, 2 bad usage, 77 skip (no bed possible, no nft or
# /usr/bin/python3, or the kernel refuses the NAT ruleset).
#
#   run_nat_test.sh --starling build/tools/starling
#                   --itest-peer build/tests/integration/itest_peer
#                   [--name N] [--rate 1gbit] [--warm 20] [--progress 30]
#                   [--count 65536] [--timeout-ms 3000] [--timeout 100] [--logs DIR]
#
# --timeout bounds the whole run (every wait has its own bound below it). The bed and the
# routers are taken down on every exit: by the EXIT trap, and after a SIGKILL (ctest's
# time-out) by the guardians left behind (netbed_guard's, and ours for the routers).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=netbed.sh
source "$here/netbed.sh"
# shellcheck source=bed_run.sh
source "$here/bed_run.sh"

starling="" itest="" name="" rate=1gbit warm=20 progress=30 count=65536 detect_ms=3000
timeout_s=100 logs=""
usage() { sed -n '/^#   run_nat_test.sh/,/--logs DIR\]/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || usage
    case $1 in
    --starling) starling=$2 ;;
    --itest-peer) itest=$2 ;;
    --name) name=$2 ;;
    --rate) rate=$2 ;;
    --warm) warm=$2 ;;
    --progress) progress=$2 ;;
    --count) count=$2 ;;
    --timeout-ms) detect_ms=$2 ;;
    --timeout) timeout_s=$2 ;;
    --logs) logs=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "run_nat_test: --starling PATH (executable) is required" >&2; exit 2; }
[[ -x $itest ]] || { echo "run_nat_test: --itest-peer PATH (executable) is required" >&2; exit 2; }
for v in "$warm" "$progress" "$count" "$detect_ms" "$timeout_s"; do [[ $v =~ ^[0-9]+$ ]] || usage; done
netbed_rate_bps "$rate" >/dev/null || { echo "run_nat_test: bad --rate '$rate'" >&2; exit 2; }
[[ -n $name ]] || name="snat$(printf '%s %s' "$starling" "$rate" | cksum | cut -c1-7)"
hosts=5 nated=(3 4) py=/usr/bin/python3

netbed_check || exit 77
command -v nft >/dev/null || { echo "run_nat_test: skipped: nft (nftables) is not installed" >&2; exit 77; }
[[ -x $py ]] || { echo "run_nat_test: skipped: no $py (the NAT check's listener)" >&2; exit 77; }
netbed_guard "$name" $((timeout_s + 120)) || exit 1
routers=("$name-rt3" "$name-rt4")
# netbed_guard's guardian knows only the bed's own namespaces; this one, waiting on the same
# lock, deletes the routers once this script has gone, however it went.
(setsid flock -w $((timeout_s + 120)) "${TMPDIR:-/tmp}/netbed-$name.lock" bash -c \
    'for ns; do kill -KILL $(ip netns pids "$ns") 2>/dev/null; ip netns del "$ns"; done' \
    nat-guard "${routers[@]}" </dev/null >/dev/null 2>&1 9>&- &)
# nat_down: kills what runs in the routers (nothing, normally) and deletes them.
nat_down() {
    local ns
    for ns in "${routers[@]}"; do
        ip netns list 2>/dev/null | awk '{ print $1 }' | grep -qxF "$ns" || continue
        # shellcheck disable=SC2046 # one pid per word
        kill -KILL $(ip netns pids "$ns" 2>/dev/null) 2>/dev/null
        ip netns del "$ns" 2>/dev/null || echo "run_nat_test: could not delete namespace $ns" >&2
    done
}

t_start=$SECONDS
deadline=$((SECONDS + timeout_s))
# shellcheck disable=SC2317 # called by bed_session's exit trap
bed_keep_logs() { [[ -z $logs ]] || { mkdir -p "$logs" && cp -r "$dir"/. "$logs"/; }; }
bed_session nat-test "$name" || exit 1
trap 'bed__cleanup; nat_down' EXIT

say() { echo "run_nat_test [$((SECONDS - t_start))s]: $*"; }
fail() {
    local f
    echo "run_nat_test: FAIL: $*" >&2
    for f in "$dir"/*.out "$dir"/*.err "$dir"/*.log; do
        [[ -s $f ]] || continue
        echo "---- ${f##*/}" >&2
        grep -v '^ITER ' "$f" | tail -n 25 >&2
        grep '^ITER ' "$f" | tail -n 3 >&2
    done
    exit 1
}
# ITER lines are "ITER i size epoch". last_iter P: the last iteration peer P completed (-1).
last_iter() { awk '$1 == "ITER" { l = $2 } END { print (l == "" ? -1 : l) }' "$dir/p$1.out"; }
# Every peer started (peer_pids[i] is p<i>) and the coordinator, once started, are alive.
check_alive() {
    local i
    for i in "${!peer_pids[@]}"; do
        kill -0 "${peer_pids[$i]}" 2>/dev/null && continue
        wait "${peer_pids[$i]}"
        fail "peer p$i exited early with status $?"
    done
    [[ -z $coord_pid ]] || kill -0 "$coord_pid" 2>/dev/null || fail "the coordinator exited"
}
# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds; fails after SECONDS or at the
# overall deadline, whichever comes first.
wait_for() {
    local what=$1 end=$((SECONDS + $2))
    shift 2
    ((end > deadline)) && end=$deadline
    until "$@"; do
        check_alive
        ((SECONDS < end)) || fail "timed out waiting for $what"
        sleep 0.1
    done
}
# all_reached ITER SIZE PEER...: each PEER's last ITER line is >= ITER with SIZE members.
all_reached() {
    local it=$1 size=$2 i
    shift 2
    for i in "$@"; do
        awk -v t="$it" -v s="$size" '$1 == "ITER" { l = $2; z = $3 } END { exit !(l >= t && z == s) }' \
            "$dir/p$i.out" || return 1
    done
}

peer_pids=() coord_pid=""
nat_down # leftovers of a run of the same name
netbed_up --name "$name" --hosts "$hosts" --rate "$rate" || fail "netbed up"
addr0=$(netbed_addr "$name" 0) || fail "no address for host 0"
bed_net=${addr0%.*}
burst=$(netbed__burst "$rate") || fail "bad rate '$rate'"

# The home routers.
declare -A pub=() priv=()
for i in "${nated[@]}"; do
    h="$name-h$i" r="$name-rt$i" lan="192.168.$((10 + i))"
    pub[$i]=$(netbed_addr "$name" "$i") || fail "no address for host $i"
    priv[$i]=$lan.2
    ip netns add "$r" && ip -n "$r" link set lo up || fail "could not create namespace $r"
    ip netns exec "$r" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
        >/dev/null 2>&1 # no IPv6 chatter, as in the bed (harmless where there is no IPv6)
    ip netns exec "$r" sysctl -q -w net.ipv4.ip_forward=1 >/dev/null &&
        ip -n "$h" link set eth0 netns "$r" && ip -n "$r" link set eth0 name wan &&
        ip -n "$r" addr add "${pub[$i]}/24" dev wan && ip -n "$r" link set wan up &&
        tc -n "$r" qdisc replace dev wan root tbf rate "$rate" burst "$burst" latency "$NETBED_DEFAULT_LATENCY" &&
        ip link add eth0 netns "$h" type veth peer name lan netns "$r" &&
        ip -n "$r" addr add "$lan.1/24" dev lan && ip -n "$r" link set lan up &&
        ip -n "$h" addr add "$lan.2/24" dev eth0 && ip -n "$h" link set eth0 up &&
        ip -n "$h" route add "$bed_net.0/24" via "$lan.1" || fail "could not build host $i's router $r"
    # `fwd` is a reserved word in nft: hence these chain names.
    if ! why=$(ip netns exec "$r" nft -f - 2>&1 <<EOF
table ip homenat {
  chain outbound {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" ip saddr $lan.0/24 masquerade
  }
  chain inbound {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan" accept
  }
}
EOF
    ); then
        echo "run_nat_test: skipped: nftables refuses the NAT ruleset: $why" >&2
        exit 77
    fi
done
links_up() {
    local i
    for i in "${nated[@]}"; do
        ip -n "$name-rt$i" link show dev wan | grep -q LOWER_UP &&
            ip -n "$name-rt$i" link show dev lan | grep -q LOWER_UP &&
            ip -n "$name-h$i" link show dev eth0 | grep -q LOWER_UP || return 1
    done
    ! bridge -n "$name-br" link show | grep -v 'state forwarding' | grep -q .
}
wait_for "the routers' links to come up" 10 links_up
say "bed '$name' up: $hosts hosts, $rate links; hosts ${nated[*]} behind routers ${routers[*]}" \
    "(public ${pub[3]}, ${pub[4]}; private ${priv[3]}, ${priv[4]})"

# 1. The NAT: a listener that answers with the address it sees, in host 0 and in each NATed
# host; out from behind the router must work, in must not.
srv='import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(8); print(s.getsockname()[1], flush=True)
while True:
    c, a = s.accept(); c.sendall((a[0] + "\n").encode()); c.close()'
declare -A lport=() && lpids=()
has_port() { grep -q '^[0-9]' "$1"; }
for i in 0 "${nated[@]}"; do
    a=${priv[$i]:-$addr0}
    : >"$dir/listen$i.port"
    ip netns exec "$name-h$i" "$py" -c "$srv" "$a" >"$dir/listen$i.port" 2>"$dir/listen$i.err" </dev/null 9>&- &
    lpids+=($!) pids+=($!)
    wait_for "the check listener in host $i" 10 has_port "$dir/listen$i.port"
    lport[$i]=$(head -n 1 "$dir/listen$i.port")
done
# tcp_read HOST ADDR PORT: connects from host HOST, prints the listener's line (2 s bound).
tcp_read() {
    ip netns exec "$name-h$1" timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n 1 <&3' "$2" "$3" 2>/dev/null
}
for i in "${nated[@]}"; do
    out_ok() { seen=$(tcp_read "$i" "$addr0" "${lport[0]}") && [[ -n $seen ]]; }
    wait_for "host $i to reach host 0 through its router" 10 out_ok
    [[ $seen == "${pub[$i]}" ]] || fail "host 0 sees host $i at $seen, want the router's ${pub[$i]} (masquerade)"
    ! tcp_read 0 "${priv[$i]}" "${lport[$i]}" >/dev/null || fail "host 0 reached host $i's private ${priv[$i]}"
    ip -n "$name-h0" route add "${priv[$i]%.*}.0/24" via "${pub[$i]}" || fail "route add in host 0"
    ! tcp_read 0 "${priv[$i]}" "${lport[$i]}" >/dev/null && in_blocked=1 || in_blocked=0
    ip -n "$name-h0" route del "${priv[$i]%.*}.0/24" via "${pub[$i]}" || fail "route del in host 0"
    ((in_blocked)) || fail "host 0 reached host $i's ${priv[$i]} through its router (the router lets connections in)"
done
kill "${lpids[@]}" 2>/dev/null && wait "${lpids[@]}" 2>/dev/null
say "NAT checked: hosts ${nated[*]} reach host 0 as ${pub[3]}, ${pub[4]}; no connection gets in"

# 2. The coordinator, 3 reachable peers and p3 behind its router.
run=nat-test
coord_addr="$addr0:7000"
bed_coordinator "$name-h0" "$coord_addr" "$dir/coord.out" "$dir/coord.log" --run "$run" \
    --min-peers 4 --timeout-ms "$detect_ms" --verbose || fail "$bed_why"
coord_pid=$bed_cpid
# start_peer I LISTEN EXTRA...: itest_peer p<I> in host I. 64 Ki f32 per all-reduce, 10 ms
# between iterations, a topology point every 8: a join is admitted quickly.
start_peer() {
    local i=$1 listen=$2
    shift 2
    : >"$dir/p$i.out" # polled at once, before the peer's own redirection may have run
    ip netns exec "$name-h$i" "$itest" --coord "$coord_addr" --run "$run" --name "p$i" \
        --mode stream --listen "$listen" --min-peers 4 --iters 100000000 --count "$count" \
        --sleep-ms 10 --topo-every 8 --stop-file "$dir/stop" --timeout-ms "$detect_ms" \
        --deadline-s $((timeout_s + 10)) --log-level info "$@" \
        >"$dir/p$i.out" 2>"$dir/p$i.err" </dev/null 9>&- &
    peer_pids[$i]=$!
    pids+=($!)
}
for i in 0 1 2; do start_peer "$i" "$(netbed_addr "$name" "$i"):0"; done
start_peer 3 "${priv[3]}:0" --no-inbound
wait_for "p0..p3 to complete iteration $warm with 4 members" 40 all_reached "$warm" 4 0 1 2 3
say "4 members at iterations $(for i in 0 1 2 3; do printf '%s ' "$(last_iter "$i")"; done)"

# 3. p4, behind its router too, joins late.
t_j0=$(date +%s.%N)
at_start=$(last_iter 0)
start_peer 4 "${priv[4]}:0" --no-inbound --join
joined() { grep -q '^JOINED ' "$dir/p4.out"; }
wait_for "p4 to join (JOINED line)" 40 joined
t_j1=$(date +%s.%N)
read -r join_iter join_size < <(awk '$1 == "JOINED" { for (k = 2; k <= NF; k++) { split($k, kv, "="); v[kv[1]] = kv[2] }
    print v["iter"], v["size"]; exit }' "$dir/p4.out")
[[ $join_iter =~ ^[0-9]+$ ]] || fail "cannot read p4's JOINED line"
[[ $join_size == 5 ]] || fail "p4 joined an epoch of $join_size members, want 5"
grep -m1 '^SYNC ' "$dir/p4.out" | grep -qw 'changed=1' || fail "p4's first sync did not replace its state (want SYNC changed=1)"
say "p4 joined at iteration $join_iter ($(awk -v a="$t_j0" -v b="$t_j1" 'BEGIN { printf "%.1f", b - a }') s" \
    "after its start; the group was at $at_start then)"
wait_for "every peer to complete $progress iterations with 5 members" 40 \
    all_reached $((join_iter + progress)) 5 0 1 2 3 4

# 4. Stop and check.
: >"$dir/stop"
say "stop requested at iterations $(for i in 0 1 2 3 4; do printf '%s ' "$(last_iter "$i")"; done)"
wait_all $((SECONDS + 30 < deadline ? SECONDS + 30 : deadline)) "${peer_pids[@]}" ||
    fail "peers still running 30 s after the stop request"
for i in 0 1 2 3 4; do
    wait "${peer_pids[$i]}" || fail "peer p$i exited with status $?"
    d=$(grep -m1 '^DONE ' "$dir/p$i.out") || fail "peer p$i printed no DONE line"
    [[ $i == 0 ]] && ref=$d
    [[ $d == "$ref" ]] || fail "peers end differently: p0 '$ref', p$i '$d'"
done
n_iters=$(sed -n 's/.*iters=\([0-9]*\).*/\1/p' <<<"$ref")
[[ $n_iters =~ ^[0-9]+$ ]] || fail "no iteration count in '$ref'"
say "every peer: $ref"
for i in 0 1 2 3 4; do awk -v p="$i" '$1 == "ITER" { print p, $2, $3, $4 }' "$dir/p$i.out"; done >"$dir/iters.all"
why=$(awk -v total="$n_iters" -v j="$join_iter" '
    function bad(m) { print m; failed = 1; exit }
    { p = $1; it = $2; size = $3; ep = $4
      if ((p, it) in seen) bad("peer p" p " completed iteration " it " twice")
      seen[p, it] = 1; cnt[p]++
      if (it in S && (S[it] != size || E[it] != ep))
          bad("iteration " it ": members disagree on size/epoch (" S[it] "/" E[it] " vs " size "/" ep ")")
      S[it] = size; E[it] = ep
      if (p == 4 && it < j) bad("p4 completed iteration " it ", before it joined at " j)
      if (size != (it < j ? 4 : 5)) bad("iteration " it " ran with " size " members (p4 joined at " j ")") }
    END { if (failed) exit
      for (p = 0; p < 5; p++) {
          want = (p == 4) ? total - j : total
          if (cnt[p] != want) { print "peer p" p " completed " cnt[p] + 0 " iterations, want " want; exit } } }' \
    "$dir/iters.all")
[[ -z $why ]] || fail "$why"

# 5. The coordinator's view: the NATed peers named as such, never neighbours in a ring.
log=$dir/coord.log
for i in "${nated[@]}"; do
    grep 'accepts no inbound connections' "$log" | grep -qw "p$i" ||
        fail "the coordinator log has no 'accepts no inbound connections' line for p$i"
done
! grep 'accepts no inbound connections' "$log" | grep -vw -e p3 -e p4 | grep -q . ||
    fail "the coordinator says a peer other than p3, p4 accepts no inbound connections"
# "epoch E: N members: NAME..." lists the ring in order; ring: the last one of 5 members.
ring=$(awk '{ for (k = 1; k <= NF && $k != "members:"; k++) ; if (k > NF) next
      n = NF - k; a = b = 0; r = ""
      for (m = k + 1; m <= NF; m++) { r = r " " $m; if ($m == "p3") a = m - k; if ($m == "p4") b = m - k }
      if (n == 5) five = r
      d = a - b; if (d < 0) d = -d
      if (a && b && (d == 1 || d == n - 1)) { print "BAD " $0; exit } }
    END { print five }' "$log" | head -n 1)
[[ $ring != BAD* ]] || fail "p3 and p4 are neighbours in a ring: ${ring#BAD }"
[[ -n $ring ]] || fail "no epoch of 5 members in the coordinator log"

kill -TERM "$coord_pid" 2>/dev/null
for ((k = 0; k < 50; k++)); do kill -0 "$coord_pid" 2>/dev/null || break; sleep 0.1; done
say "PASS: $n_iters iterations; p3 NATed from the start, p4 NATed joined at iteration $join_iter;" \
    "ring of 5:$ring; equal state hashes"
exit 0
