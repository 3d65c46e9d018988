#!/bin/bash
# run_hostnames_test.sh -- names instead of addresses, resolved through /etc/hosts inside
# network namespaces: a bed of 2 hosts (tests/net/netbed.sh), a hosts file per namespace
# (/etc/netns/NS/hosts, which `ip netns exec` mounts over /etc/hosts) naming both hosts,
# a coordinator listening on its host's name, and two `starling bench-peer`s that reach it
# by name and listen on their own host's name. Checks that both peers finish their checked
# all-reduces and that the coordinator was told the addresses the names resolve to there
# (each peer resolves its own listen name; only numeric addresses go on the wire). Exit: 0 pass, 1 fail, 77 skip (no bed possible).
#
#   run_hostnames_test.sh --starling build/tools/starling [--timeout 120]

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=netbed.sh
source "$here/netbed.sh"
# shellcheck source=bed_run.sh
source "$here/bed_run.sh"

starling="" timeout_s=120
while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || { echo "usage: $0 --starling PATH [--timeout S]" >&2; exit 2; }
    case $1 in
    --starling) starling=$2 ;;
    --timeout) timeout_s=$2 ;;
    *) echo "usage: $0 --starling PATH [--timeout S]" >&2; exit 2 ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "run_hostnames_test: --starling PATH is required" >&2; exit 2; }
name="sthn$(printf '%s' "$starling" | cksum | cut -c1-6)"

netbed_check || exit 77
netbed_guard "$name" $((timeout_s + 120)) || exit 1
deadline=$((SECONDS + timeout_s))

# shellcheck disable=SC2317 # called by bed_session's exit trap
bed_keep_logs() { rm -rf "/etc/netns/$name-h0" "/etc/netns/$name-h1"; }
bed_session hostnames-test "$name" || exit 1

fail() {
    local f
    echo "run_hostnames_test: FAIL: $*" >&2
    for f in "$dir"/*; do
        [[ -s $f ]] || { continue; }
        echo "---- ${f##*/}" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

netbed_up --name "$name" --hosts 2 --rate 1gbit || fail "netbed up"
a0=$(netbed_addr "$name" 0) a1=$(netbed_addr "$name" 1)
for i in 0 1; do
    mkdir -p "/etc/netns/$name-h$i" || fail "cannot create /etc/netns/$name-h$i"
    printf '127.0.0.1 localhost\n%s coord.starling-test h0.starling-test\n%s h1.starling-test\n' \
        "$a0" "$a1" >"/etc/netns/$name-h$i/hosts"
done
ip netns exec "$name-h1" getent hosts coord.starling-test | grep -q "^$a0 " ||
    fail "the namespace's hosts file is not used (ip netns exec did not mount it)"

bed_coordinator "$name-h0" coord.starling-test:7000 "$dir/coordinator.out" \
    "$dir/coordinator.log" --run names --min-peers 2 || fail "$bed_why"
peers=()
for i in 0 1; do
    ip netns exec "$name-h$i" "$starling" bench-peer --coord coord.starling-test:7000 \
        --run names --index "$i" --peers 2 --bytes 1M --iters 2 --warmup 1 \
        --listen "h$i.starling-test:0" --report-fd 3 3>"$dir/report.$i" \
        2>"$dir/peer.$i.log" >/dev/null </dev/null 9>&- &
    peers+=($!)
    pids+=($!)
done
bed_wait_peers $((deadline - SECONDS)) "$dir/peer." "${peers[@]}" || fail "$bed_why"
for i in 0 1; do
    grep -q '^ready [01] 2 ' "$dir/report.$i" || fail "peer $i: no 'ready R 2 E' line"
    # each peer resolved its own name (its namespace's hosts file) and registered the address
    a=$(netbed_addr "$name" "$i")
    grep -q "data plane $a:" "$dir/coordinator.log" ||
        fail "the coordinator was not told $a (h$i.starling-test) as peer $i's data plane"
done
echo "run_hostnames_test: 2 peers all-reduced through coord.starling-test and h0/h1.starling-test"
