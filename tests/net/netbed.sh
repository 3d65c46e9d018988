#!/bin/bash
# netbed.sh -- a reproducible slow-network test bed: K "hosts" as network namespaces joined
# through a bridge in its own namespace, every link shaped with `tc tbf` in both directions.
#
# Both a command-line program and a library: `source tests/net/netbed.sh` defines the
# netbed_* functions below (they return a status, never exit, and change no shell option);
# running it runs a subcommand:
#
#   netbed.sh up    --name P --hosts K [--rate 100mbit] [--burst BYTES] [--latency 50ms]
#                   [--subnet X] [--sites N0,N1,... [--intra-rate R] [--inter-rate R]]
#                   [--delay-ms D] [--jitter-ms J] [--loss P] [--emu-rate R]
#                   [--cut-at T --cut-for S] [--emu-seed N] [--emu-hosts I,J,...]
#                   [--offload on|off] [--emu PATH]
#   netbed.sh down  --name P                 deletes everything; idempotent
#   netbed.sh exec  --name P --host I -- CMD...   runs CMD in host I's namespace
#   netbed.sh addr  --name P --host I        prints host I's address
#   netbed.sh check                          0 if this machine can build a bed, else 77
#   netbed.sh rate-bps RATE                  prints a tc rate ("100mbit") in bit/s
#
# Topology (no --sites): namespaces P-h0..P-h{K-1} and P-br. Host i has `eth0`
# (10.77.X.(i+1)/24) whose peer `p<i>` is a port of bridge `br0` in P-br. tbf shapes the
# egress of eth0 (the host's upload) and the egress of p<i> (its download), so each host
# has a full-duplex link of --rate, as a switch port would give it.
#
# Topology with --sites N0,N1,...: host counts per site, in host order (hosts 0..N0-1 are
# site 0, and so on; --hosts may be omitted and must otherwise equal the sum). Each site
# has its own bridge `br<s>` in P-br; host links to it are shaped at --intra-rate. Every
# site bridge has an uplink to one core bridge `brc` (veth `up<s>` on the site bridge,
# `cr<s>` on the core), shaped at --inter-rate in both directions. So traffic inside a
# site runs at intra-rate per host, and all of a site's traffic to other sites shares
# one full-duplex uplink of inter-rate (with 2 sites: two LANs joined by one WAN link;
# the two shaped hops on that path have the same rate, so they act as one).
#
# Link emulator (any of --delay-ms, --jitter-ms, --loss, --emu-rate, --cut-at, --offload
# given; no --sites yet): the links of the hosts in --emu-hosts (default: host 0 only, so
# with 2 hosts the two are D apart) also cross starling_linkemu (tests/net/linkemu.c;
# --emu PATH, else $NETBED_LINKEMU, else starling_linkemu on PATH), which holds every
# frame D ms (+ uniform 0..J), drops it with probability P, caps the rate at R (tc units)
# and cuts the link during [T, T+S) seconds after `up` (or when sent SIGUSR1); --offload on
# lets it move GSO super-packets (needed to keep up with ~1 Gbit/s; loss is then per
# super-packet). Such a host's veth peer p<i> goes into its own bridge bh<i> with the
# emulator's TAP ta<i>; the other TAP tb<i> is a port of br0. The emulator runs in P-br,
# logs (and prints its counters on exit) to ${TMPDIR:-/tmp}/netbed-P.emu<i>.log, and is
# killed by `down` like any process in the bed. Each emulated link adds D one way: a path
# crossing two adds 2D. --emu-seed N seeds host i's emulator with N+i.
#
#     h_i:eth0 ==veth== p<i> [bh<i>] ta<i> <-- linkemu --> tb<i> [br0] p<j> ==veth== h_j:eth0
#
# Every address lives inside the bed's own namespaces (nothing in the root namespace, no
# default routes), so two beds never interfere; --subnet (default: derived from the
# name) only keeps the addresses of two beds apart in logs.
#
# tbf parameters: burst defaults to max(rate/HZ, 128 KiB) with HZ = 250 (below rate/HZ
# the bucket cannot refill between timer ticks and the rate is not reached; 128 KiB
# holds two 64 KiB GSO super-packets, which the veths pass whole), and the queue holds
# --latency (default 50 ms) of traffic beyond the burst.
#
# Cleanup: `up` first deletes leftovers of a bed of the same name; `down` kills the
# processes still running inside the bed's namespaces (by pid, TERM then KILL, bounded)
# and deletes the namespaces, which deletes every veth and bridge in them. Callers:
#     trap 'tests/net/netbed.sh down --name X' EXIT
# or, sourced: trap 'netbed_down X' EXIT, plus netbed_guard X for a SIGKILL (below).

NETBED_SELF=$(readlink -f "${BASH_SOURCE[0]}")
NETBED_HZ=250
NETBED_MIN_BURST=131072
NETBED_DEFAULT_LATENCY=50ms
NETBED_UP_WAIT_S=10 # bound on waiting for carriers and bridge ports

netbed__err() { echo "netbed: $*" >&2; }

# netbed_rate_bps RATE: prints tc rate RATE ("100mbit", "1gbit", "12.5mbps", "500kbit")
# as an integer number of bits per second; returns 1 if it cannot be read.
netbed_rate_bps() {
    local r=${1,,}
    awk -v r="$r" 'BEGIN {
        if (match(r, /^[0-9]+(\.[0-9]+)?/) == 0) exit 1
        n = substr(r, 1, RLENGTH); u = substr(r, RLENGTH + 1)
        m["bit"] = 1; m[""] = 1; m["kbit"] = 1e3; m["mbit"] = 1e6; m["gbit"] = 1e9
        m["tbit"] = 1e12; m["kibit"] = 1024; m["mibit"] = 1048576; m["gibit"] = 1073741824
        m["bps"] = 8; m["kbps"] = 8e3; m["mbps"] = 8e6; m["gbps"] = 8e9
        if (!(u in m)) exit 1
        v = n * m[u]; if (v < 8000) exit 1
        printf "%.0f\n", v
    }'
}

# netbed_ns NAME I: the namespace of host I ("br" for the bridge's).
netbed_ns() { if [[ $2 == br ]]; then echo "$1-br"; else echo "$1-h$2"; fi; }

netbed__valid_name() {
    [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$ ]] || {
        netbed__err "bad --name '$1' (1-40 of A-Z a-z 0-9 _ . -)"
        return 1
    }
}

# The namespaces of bed NAME that exist now, one per line.
netbed__list() {
    local name=$1 ns rest
    ip netns list 2>/dev/null | while read -r ns rest; do
        if [[ $ns == "$name-br" ]] || [[ $ns == "$name"-h* && ${ns#"$name"-h} =~ ^[0-9]+$ ]]; then
            echo "$ns"
        fi
    done
}

# netbed__pids NS...: the processes living in these namespaces, on one line.
netbed__pids() {
    local ns
    for ns in "$@"; do ip netns pids "$ns" 2>/dev/null; done | tr '\n' ' ' | sed 's/ *$//'
}

# netbed_down NAME: kills what still runs in the bed and deletes its namespaces.
netbed_down() {
    local name=$1 ns pids pid i sig rc=0
    netbed__valid_name "$name" || return 2
    local -a all
    mapfile -t all < <(netbed__list "$name")
    [[ ${#all[@]} -eq 0 ]] && return 0
    # A process left inside would keep its namespace (and the veths in it) alive after
    # `ip netns del`; these processes were started in the bed, so they go with it.
    # (`ip netns pids` omits zombies: an exited child its parent has not reaped is gone.)
    for sig in TERM KILL; do
        pids=$(netbed__pids "${all[@]}")
        [[ -z $pids ]] && break
        for pid in $pids; do kill -s "$sig" "$pid" 2>/dev/null; done
        for ((i = 0; i < 30; i++)); do # at most 3 s per signal
            [[ -z $(netbed__pids "${all[@]}") ]] && break
            sleep 0.1
        done
    done
    for ns in "${all[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    # Check, rather than trust `ip netns del`'s status (it races with a concurrent down).
    if [[ -n $(netbed__list "$name") ]]; then
        netbed__err "could not delete every namespace of bed '$name':" "$(netbed__list "$name" | tr '\n' ' ')"
        rc=1
    fi
    return $rc
}

# netbed__shape NS DEV RATE BURST LATENCY: tbf on the egress of DEV in NS.
netbed__shape() {
    tc -n "$1" qdisc replace dev "$2" root tbf rate "$3" burst "$4" latency "$5" || {
        netbed__err "tc tbf on $2 in $1 failed"
        return 1
    }
}

# netbed__burst RATE [BURST]: BURST if given, else max(rate/HZ, NETBED_MIN_BURST) bytes.
netbed__burst() {
    local bps
    [[ -n $2 ]] && { echo "$2"; return 0; }
    bps=$(netbed_rate_bps "$1") || { netbed__err "bad rate '$1'"; return 1; }
    awk -v b="$bps" -v hz=$NETBED_HZ -v min=$NETBED_MIN_BURST \
        'BEGIN { v = int(b / 8 / hz) + 1; if (v < min) v = min; print v }'
}

# netbed__subnet NAME: a /24 number in 16..239 derived from the name.
netbed__subnet() {
    local sum
    sum=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
    echo $((16 + sum % 224))
}

# netbed__wait_up NAME K: bounded wait until every host link has carrier and every bridge
# port forwards (STP is off, so this is quick; the bound only guards against surprises).
netbed__wait_up() {
    local name=$1 k=$2 i end=$((SECONDS + NETBED_UP_WAIT_S)) ok
    while :; do
        ok=1
        for ((i = 0; i < k; i++)); do
            ip -n "$name-h$i" link show dev eth0 2>/dev/null | grep -q LOWER_UP || ok=0
        done
        bridge -n "$name-br" link show 2>/dev/null | grep -v 'state forwarding' | grep -q . && ok=0
        [[ $ok -eq 1 ]] && return 0
        if ((SECONDS >= end)); then
            netbed__err "links of bed '$name' not up after ${NETBED_UP_WAIT_S}s"
            bridge -n "$name-br" link show >&2
            return 1
        fi
        sleep 0.05
    done
}

# Quiet: no IPv6 (router solicitations, DAD) on the shaped links.
netbed__no_ipv6() {
    ip netns exec "$1" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6;
        echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6' 2>/dev/null
    return 0
}

# netbed_up --name P --hosts K ... (the options of `netbed.sh up`).
netbed_up() {
    local name="" hosts="" rate=100mbit burst="" latency=$NETBED_DEFAULT_LATENCY subnet=""
    local sites="" intra="" inter="" emu=${NETBED_LINKEMU:-} emu_hosts=0 emu_seed=""
    # Read by netbed__build (bash locals are visible to callees): the emulator's options.
    local -a netbed__emu_args=()
    local -A netbed__emu_on=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        --delay-ms | --jitter-ms | --loss | --cut-at | --cut-for | --offload)
            [[ $# -ge 2 ]] || { netbed__err "up: $1 needs a value"; return 2; }
            netbed__emu_args+=("$1" "$2"); shift 2 ;;
        --emu-rate)
            local bps
            bps=$(netbed_rate_bps "${2:-}") || { netbed__err "up: bad --emu-rate '${2:-}'"; return 2; }
            netbed__emu_args+=(--rate "$bps"); shift 2 ;;
        --emu-seed) emu_seed=$2; shift 2 ;;
        --emu-hosts) emu_hosts=$2; shift 2 ;;
        --emu) emu=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --hosts) hosts=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --burst) burst=$2; shift 2 ;;
        --latency) latency=$2; shift 2 ;;
        --subnet) subnet=$2; shift 2 ;;
        --sites) sites=$2; shift 2 ;;
        --intra-rate) intra=$2; shift 2 ;;
        --inter-rate) inter=$2; shift 2 ;;
        *) netbed__err "up: unknown option '$1'"; return 2 ;;
        esac
    done
    [[ -n $name ]] || { netbed__err "up: --name is required"; return 2; }
    netbed__valid_name "$name" || return 2
    local -a site_of=() site_sizes=()
    local nsites=0 s n i
    if [[ -n $sites ]]; then
        IFS=, read -r -a site_sizes <<<"$sites"
        nsites=${#site_sizes[@]}
        local total=0
        for s in "${!site_sizes[@]}"; do
            n=${site_sizes[$s]}
            [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || { netbed__err "up: bad --sites '$sites'"; return 2; }
            for ((i = 0; i < n; i++)); do site_of+=("$s"); done
            total=$((total + n))
        done
        [[ -z $hosts ]] && hosts=$total
        [[ $hosts == "$total" ]] || {
            netbed__err "up: --sites $sites has $total hosts, --hosts says $hosts"
            return 2
        }
        [[ -n $intra ]] || intra=$rate
        [[ -n $inter ]] || inter=$rate
        netbed_rate_bps "$inter" >/dev/null || { netbed__err "up: bad --inter-rate '$inter'"; return 2; }
    else
        [[ -z $intra && -z $inter ]] || {
            netbed__err "up: --intra-rate and --inter-rate need --sites"
            return 2
        }
        intra=$rate
    fi
    [[ $hosts =~ ^[0-9]+$ && $hosts -ge 1 && $hosts -le 250 ]] || {
        netbed__err "up: --hosts must be 1..250"
        return 2
    }
    netbed_rate_bps "$intra" >/dev/null || { netbed__err "up: bad rate '$intra'"; return 2; }
    [[ -z $burst || $burst =~ ^[0-9]+$ ]] || { netbed__err "up: --burst is a byte count"; return 2; }
    [[ -n $subnet ]] || subnet=$(netbed__subnet "$name")
    [[ $subnet =~ ^[0-9]+$ && $subnet -le 255 ]] || { netbed__err "up: --subnet must be 0..255"; return 2; }

    if [[ ${#netbed__emu_args[@]} -gt 0 ]]; then
        [[ $nsites -eq 0 ]] || { netbed__err "up: the link emulator does not support --sites yet"; return 2; }
        [[ -n $emu ]] || emu=$(command -v starling_linkemu) || {
            netbed__err "up: no link emulator: pass --emu PATH or set NETBED_LINKEMU"
            return 2
        }
        [[ -x $emu ]] || { netbed__err "up: --emu '$emu' is not executable"; return 2; }
        [[ -z $emu_seed || $emu_seed =~ ^[0-9]{1,15}$ ]] || { netbed__err "up: --emu-seed is an integer"; return 2; }
        local -a eh
        IFS=, read -r -a eh <<<"$emu_hosts"
        for i in "${eh[@]}"; do
            [[ $i =~ ^[0-9]+$ && $i -lt $hosts ]] || { netbed__err "up: bad --emu-hosts '$emu_hosts'"; return 2; }
            netbed__emu_on[$i]=1
        done
        # Check the options once, here, rather than in a half-built bed.
        "$emu" --check --tap-a x --tap-b y "${netbed__emu_args[@]}" || return 2
        netbed__emu_args+=(--emu "$emu" --seed "$emu_seed")
    fi
    netbed_down "$name" || return 1
    if ! netbed__build "$name" "$hosts" "$subnet" "$intra" "$inter" "$burst" "$latency" \
        "$nsites" "${site_of[@]}"; then
        netbed__err "up: building bed '$name' failed; removing it"
        netbed_down "$name"
        return 1
    fi
    return 0
}

# netbed__build NAME K SUBNET INTRA INTER BURST LATENCY NSITES SITE_OF...: the work of
# netbed_up, on a clean slate; returns 1 at the first failure (the caller cleans up).
netbed__build() {
    local name=$1 hosts=$2 subnet=$3 intra=$4 inter=$5 burst=$6 latency=$7 nsites=$8
    shift 8
    local -a site_of=("$@")
    local br="$name-br" hb ib h dev i s
    hb=$(netbed__burst "$intra" "$burst") || return 1
    ip netns add "$br" && ip -n "$br" link set lo up && netbed__no_ipv6 "$br" || return 1
    if [[ $nsites -eq 0 ]]; then
        netbed__add_bridge "$br" br0 || return 1
    else
        ib=$(netbed__burst "$inter" "$burst") && netbed__add_bridge "$br" brc || return 1
        for ((s = 0; s < nsites; s++)); do
            netbed__add_bridge "$br" "br$s" &&
                ip -n "$br" link add "up$s" type veth peer name "cr$s" &&
                ip -n "$br" link set "up$s" master "br$s" up &&
                ip -n "$br" link set "cr$s" master brc up &&
                netbed__shape "$br" "up$s" "$inter" "$ib" "$latency" &&
                netbed__shape "$br" "cr$s" "$inter" "$ib" "$latency" || return 1
        done
    fi
    for ((i = 0; i < hosts; i++)); do
        h="$name-h$i"
        dev=br0
        [[ $nsites -gt 0 ]] && dev="br${site_of[$i]}"
        local port_dev=$dev
        [[ -n ${netbed__emu_on[$i]:-} ]] && port_dev="bh$i"
        # Both ends are created inside their namespaces: nothing appears, even briefly, in
        # the root namespace, so names cannot clash with the machine's or another bed's.
        ip netns add "$h" &&
            ip -n "$h" link set lo up &&
            netbed__no_ipv6 "$h" &&
            ip link add eth0 netns "$h" type veth peer name "p$i" netns "$br" &&
            ip -n "$h" addr add "10.77.$subnet.$((i + 1))/24" dev eth0 &&
            ip -n "$h" link set eth0 up &&
            { [[ $port_dev == "$dev" ]] || netbed__start_emu "$name" "$i" "$dev"; } &&
            ip -n "$br" link set "p$i" master "$port_dev" up &&
            netbed__shape "$h" eth0 "$intra" "$hb" "$latency" &&
            netbed__shape "$br" "p$i" "$intra" "$hb" "$latency" || return 1
    done
    netbed__wait_up "$name" "$hosts"
}

# netbed__start_emu NAME I DEV: starts the link emulator for host I (options from
# netbed_up's netbed__emu_args) between a new bridge bh<I> and bridge DEV, in NAME-br.
netbed__start_emu() {
    local name=$1 i=$2 dev=$3 br="$1-br" emu="" seed="" log end
    local -a args=()
    set -- "${netbed__emu_args[@]}"
    while [[ $# -gt 0 ]]; do
        case $1 in
        --emu) emu=$2 ;;
        --seed) seed=$2 ;;
        *) args+=("$1" "$2") ;;
        esac
        shift 2
    done
    [[ -n $seed ]] && args+=(--seed $((seed + i)))
    log="${TMPDIR:-/tmp}/netbed-$name.emu$i.log"
    netbed__add_bridge "$br" "bh$i" || return 1
    # Emptied here, not by the background redirection: the wait below must not read the
    # log of an emulator from an earlier bed of the same name.
    : >"$log" || return 1
    # Detached (its parent is gone), so no caller waits on it; `down` kills it by namespace.
    (ip netns exec "$br" "$emu" --tap-a "ta$i" --tap-b "tb$i" "${args[@]}" \
        </dev/null >/dev/null 2>>"$log" 9>&- &)
    end=$((SECONDS + NETBED_UP_WAIT_S))
    until grep -q '^linkemu: ready' "$log" 2>/dev/null &&
        ip -n "$br" link show "ta$i" >/dev/null 2>&1 && ip -n "$br" link show "tb$i" >/dev/null 2>&1; do
        if ((SECONDS >= end)) || grep -q -v '^linkemu: ready' "$log" 2>/dev/null; then
            netbed__err "link emulator for host $i did not start:" "$(head -n 3 "$log" 2>/dev/null)"
            return 1
        fi
        sleep 0.05
    done
    ip -n "$br" link set "ta$i" master "bh$i" up && ip -n "$br" link set "tb$i" master "$dev" up
}

# netbed__add_bridge NS DEV: a bridge that forwards at once (no STP, no forward delay).
netbed__add_bridge() {
    ip -n "$1" link add "$2" type bridge stp_state 0 forward_delay 0 &&
        ip -n "$1" link set "$2" up
}

# netbed_guard NAME [MAX_S]: for a script (that sourced this file) owning bed NAME until it
# exits. Takes an exclusive lock on fd 9 of the calling shell, waiting up to 60 s for
# another owner of the same name, and starts a detached guardian (its own session, its
# parent gone, so no kill of the caller's process tree reaches it) that takes the bed down
# once the lock is released: when the caller has exited, even by SIGKILL, which no trap
# sees (ctest's time-out). It gives up after MAX_S seconds (default 3600). Start children
# with `9>&-` so that a straggler does not hold the lock; a new owner of the same name
# waits for the guardian, so it cannot tear down a newer bed.
netbed_guard() {
    local name=$1 max=${2:-3600} lock
    netbed__valid_name "$name" || return 2
    lock="${TMPDIR:-/tmp}/netbed-$name.lock"
    exec 9>"$lock" || return 1
    flock -w 60 9 || { netbed__err "bed '$name' is in use (lock $lock held)"; return 1; }
    (setsid flock -w "$max" "$lock" "$NETBED_SELF" down --name "$name" </dev/null >/dev/null 2>&1 9>&- &)
}

# netbed_addr NAME I: host I's IPv4 address, read from its namespace.
netbed_addr() {
    local a
    a=$(ip -n "$1-h$2" -4 -o addr show dev eth0 2>/dev/null | awk '{ split($4, p, "/"); print p[1]; exit }')
    [[ -n $a ]] || { netbed__err "no host $2 in bed '$1'"; return 1; }
    echo "$a"
}

# netbed_exec NAME I CMD...: runs CMD in host I's namespace (as a child; the CLI execs).
netbed_exec() {
    local name=$1 i=$2
    shift 2
    ip netns exec "$name-h$i" "$@"
}

# netbed_check: 0 if a bed can be built here; else prints why and returns 77.
netbed_check() {
    local why="" ns="netbed-check-$$" t
    if [[ $(id -u) -ne 0 ]]; then
        why="not root"
    elif ! command -v ip >/dev/null || ! command -v tc >/dev/null || ! command -v bridge >/dev/null; then
        why="iproute2 (ip, tc, bridge) is not installed"
    elif ! ip netns add "$ns" 2>/dev/null; then
        why="cannot create a network namespace (ip netns add)"
    else
        if ! ip -n "$ns" link add c0 type veth peer name c1 2>/dev/null; then
            why="no veth support"
        elif ! ip -n "$ns" link add cb type bridge 2>/dev/null; then
            why="no bridge support"
        elif ! t=$(tc -n "$ns" qdisc replace dev c0 root tbf rate 100mbit burst 131072 latency 50ms 2>&1); then
            why="no tc tbf qdisc: $t"
        fi
        ip netns del "$ns" 2>/dev/null
    fi
    if [[ -n $why ]]; then
        echo "netbed: cannot build a test bed here: $why" >&2
        return 77
    fi
    return 0
}

netbed__usage() {
    sed -n '/^#   netbed.sh up/,/^#   netbed.sh rate-bps/s/^#   //p' "${BASH_SOURCE[0]}" >&2
}

netbed__main() {
    local cmd=${1:-} name="" host=""
    [[ $# -gt 0 ]] && shift
    case $cmd in
    up) netbed_up "$@"; return ;;
    check) netbed_check; return ;;
    rate-bps) netbed_rate_bps "${1:-}" || { netbed__err "bad rate '${1:-}'"; return 2; }; return 0 ;;
    down | exec | addr) ;;
    -h | --help | help) netbed__usage; return 0 ;;
    *) netbed__usage; return 2 ;;
    esac
    while [[ $# -gt 0 ]]; do
        case $1 in
        --name) name=${2:-}; shift 2 || return 2 ;;
        --host) host=${2:-}; shift 2 || return 2 ;;
        --) shift; break ;;
        *) netbed__err "$cmd: unknown option '$1'"; return 2 ;;
        esac
    done
    [[ -n $name ]] || { netbed__err "$cmd: --name is required"; return 2; }
    netbed__valid_name "$name" || return 2
    if [[ $cmd == down ]]; then
        netbed_down "$name"
        return
    fi
    [[ $host =~ ^[0-9]+$ ]] || { netbed__err "$cmd: --host I is required"; return 2; }
    if [[ $cmd == addr ]]; then
        netbed_addr "$name" "$host"
        return
    fi
    [[ $# -gt 0 ]] || { netbed__err "exec: no command after --"; return 2; }
    netbed__list "$name" | grep -qxF "$name-h$host" || {
        netbed__err "no host $host in bed '$name'"
        return 1
    }
    # exec: the caller's pid is the command's, so it can wait on or kill it directly.
    exec ip netns exec "$name-h$host" "$@"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    netbed__main "$@"
    exit
fi
