#!/bin/bash
# run_linkemu_test.sh -- checks the link emulator (linkemu.c) in a 2-host test bed
# (netbed.sh up --hosts 2 --delay-ms ...: host 0's link crosses the emulator, so every
# packet between the two hosts crosses it once each way).
#
# Probes are UDP datagrams echoed by host 1 (ping is not installed here; a small Python
# prober does the same job), plus one TCP transfer. Checks, each a behaviour, not a speed:
#   delay: with --delay-ms 20, no round trip is shorter than 2 x 20 ms (the emulator must
#          hold every frame at least that long), and most probes come back;
#   cut:   after SIGUSR1 nothing passes, after a second SIGUSR1 probes pass again;
#   loss:  with --loss 0.5, the emulator dropped 35..65% of the frames in each direction
#          and 10..45% of 200 round trips (two crossings: 25% expected) came back;
#   sched: with --cut-at 3 --cut-for 4, nothing passes once the emulator reports the cut,
#          and probes pass after it reports the link restored;
#   rate:  with --emu-rate 20mbit, a 4 MiB TCP transfer takes at least (size - burst) x 8 /
#          rate seconds (a lower bound: the emulator must not pass more than the rate);
#   offload: with --offload on (GSO super-packets), the delay holds and a 16 MiB TCP
#          transfer arrives whole.
# Exit status: 0 pass, 1 fail, 77 skip (not root, no namespaces/veth/tbf, no /dev/net/tun,
# no python3), 2 bad usage. Every wait is bounded; the bed is removed on every exit (EXIT
# trap, and netbed_guard's guardian after a SIGKILL).
#
#   run_linkemu_test.sh --linkemu build/tests/net/starling_linkemu [--timeout 150] [--name N]

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=netbed.sh
source "$here/netbed.sh"

linkemu="" timeout_s=150 name=""
usage() { sed -n 's/^#   run_linkemu_test.sh/run_linkemu_test.sh/p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || usage
    case $1 in
    --linkemu) linkemu=$2 ;;
    --timeout) timeout_s=$2 ;;
    --name) name=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $linkemu ]] || { echo "run_linkemu_test: --linkemu PATH (executable) is required" >&2; exit 2; }
[[ $timeout_s =~ ^[0-9]+$ ]] || usage
[[ -n $name ]] || name="stl$(printf '%s' "$linkemu" | cksum | cut -c1-7)"

netbed_check || exit 77
[[ -c /dev/net/tun ]] || { echo "run_linkemu_test: no /dev/net/tun: skipped" >&2; exit 77; }
py=/usr/bin/python3
[[ -x $py ]] || py=$(command -v python3) || { echo "run_linkemu_test: no python3: skipped" >&2; exit 77; }
netbed_guard "$name" $((timeout_s + 120)) || exit 1

deadline=$((SECONDS + timeout_s))
dir=$(mktemp -d /tmp/linkemu-test.XXXXXX)
emulog="${TMPDIR:-/tmp}/netbed-$name.emu0.log"
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    netbed_down "$name" || echo "run_linkemu_test: could not remove bed '$name'" >&2
    rm -rf "$dir" "$emulog"
}
trap cleanup EXIT
trap 'echo "run_linkemu_test: interrupted" >&2; exit 1' INT TERM

fail() {
    echo "run_linkemu_test: FAIL: $*" >&2
    [[ -s $emulog ]] && { echo "---- emulator log" >&2; tail -n 20 "$emulog" >&2; }
    exit 1
}
left() { # seconds left before the deadline, at least 1
    local l=$((deadline - SECONDS))
    ((l > 0)) || fail "deadline of ${timeout_s}s passed"
    echo "$l"
}

cat >"$dir/probe.py" <<'PY'
import socket, struct, sys, time
mode = sys.argv[1]
if mode == "echo":  # echo ADDR PORT: UDP echo, forever
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[2], int(sys.argv[3])))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(d, a)
elif mode == "probe":  # probe ADDR PORT COUNT INTERVAL_S WAIT_S: prints "sent received min median max" (ms)
    addr, port, count, interval, wait = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    sent, rtts, nxt, i = {}, [], time.monotonic(), 0
    end = None
    while True:
        now = time.monotonic()
        if i < count and now >= nxt:
            s.sendto(struct.pack("!Id", i, now) + b"x" * 56, (addr, port))
            sent[i] = now; i += 1; nxt += interval
            if i == count: end = now + wait
        if end is not None and (now >= end or len(rtts) == count):
            break
        try:
            d, _ = s.recvfrom(2048)
            k, t0 = struct.unpack("!Id", d[:12])
            if k in sent:
                rtts.append((time.monotonic() - t0) * 1e3); del sent[k]
        except BlockingIOError:
            time.sleep(0.0005)
    rtts.sort()
    if rtts:
        print(count, len(rtts), "%.3f %.3f %.3f" % (rtts[0], rtts[len(rtts) // 2], rtts[-1]))
    else:
        print(count, 0, "- - -")
elif mode == "sink":  # sink ADDR PORT: receives one TCP stream to its end, then answers "ok"
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((sys.argv[2], int(sys.argv[3]))); l.listen(1)
    while True:
        c, _ = l.accept()
        n = 0
        while True:
            d = c.recv(1 << 16)
            if not d: break
            n += len(d)
        c.sendall(str(n).encode()); c.close()
elif mode == "send":  # send ADDR PORT NBYTES: prints the seconds from connect to the sink's answer
    n = int(sys.argv[4]); buf = b"\0" * (1 << 16)
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=60)
    t0 = time.monotonic(); left = n
    while left > 0:
        k = c.send(buf[:min(left, len(buf))]); left -= k
    c.shutdown(socket.SHUT_WR)
    got = int(c.recv(64).decode())
    print("%.4f %d" % (time.monotonic() - t0, got))
PY

# bed OPTIONS...: (re)builds the 2-host bed with the emulator on host 0's link and starts
# the echo server and the TCP sink in host 1. Sets a1 (host 1's address).
bed() {
    netbed_up --name "$name" --hosts 2 --rate 1gbit --emu "$linkemu" --emu-seed 7 "$@" ||
        fail "netbed up $*"
    a1=$(netbed_addr "$name" 1) || fail "no address for host 1"
    (ip netns exec "$name-h1" "$py" "$dir/probe.py" echo "$a1" 7001 </dev/null >/dev/null 2>&1 9>&- &)
    (ip netns exec "$name-h1" "$py" "$dir/probe.py" sink "$a1" 7002 </dev/null >/dev/null 2>&1 9>&- &)
    # Wait (bounded) until a probe comes back: servers up, ARP resolved.
    local r
    for ((k = 0; k < 40; k++)); do
        r=$(probe 1 0.01 1) || fail "prober failed"
        [[ $(echo "$r" | cut -d' ' -f2) -ge 1 ]] && return 0
        ((SECONDS < deadline)) || break
    done
    [[ $* == *--loss* ]] && return 0 # a lossy link may keep failing; the test counts
    fail "no probe came back across the bed ($*)"
}
# probe COUNT INTERVAL_S WAIT_S: "sent received min median max" from host 0 to host 1.
probe() {
    timeout "$(left)" ip netns exec "$name-h0" "$py" "$dir/probe.py" probe "$a1" 7001 "$@" 9>&-
}
emu_pid() { ip netns pids "$name-br" | head -n 1; }
# stats DIR: the emulator's counters "received dropped_loss" for direction DIR (a->b, b->a),
# after it has exited.
stats() { awk -v d="linkemu: $1:" 'index($0, d) == 1 { print $4, $9 }' "$emulog"; }

# ---- delay, and a cut by SIGUSR1 ----
bed --delay-ms 20
read -r n got mn med mx < <(probe 20 0.05 1)
echo "run_linkemu_test: delay 20 ms: $got/$n back, rtt min $mn median $med max $mx ms"
((got >= n / 2)) || fail "delay: only $got of $n probes came back"
awk -v m="$mn" 'BEGIN { exit !(m >= 40) }' || fail "delay: a round trip of $mn ms < 2 x 20 ms"
awk -v m="$med" 'BEGIN { exit !(m < 1000) }' || fail "delay: median round trip $med ms (held far too long)"

pid=$(emu_pid)
[[ -n $pid ]] || fail "no emulator process"
kill -USR1 "$pid"
read -r n got _ < <(probe 10 0.05 1)
echo "run_linkemu_test: cut (SIGUSR1): $got/$n back"
((got == 0)) || fail "cut: $got probes passed a cut link"
kill -USR1 "$pid"
read -r n got _ < <(probe 10 0.05 1)
echo "run_linkemu_test: restored (SIGUSR1): $got/$n back"
((got >= n / 2)) || fail "restore: only $got of $n probes came back"

# ---- loss ----
bed --loss 0.5
# 400 probes: about 400 frames go a->b and 200 come back b->a, so that each direction has
# well over the 100 frames the 35..65% bound is checked on (2.8 standard deviations at 100).
read -r n got _ < <(probe 400 0.005 1)
netbed_down "$name" || fail "could not take the bed down"
for d in a-\>b b-\>a; do
    read -r rx lost < <(stats "$d")
    [[ -n $rx ]] || fail "loss: no counters for $d in the emulator's log"
    echo "run_linkemu_test: loss 0.5: $d dropped $lost of $rx frames"
    ((rx >= 100 && lost * 100 >= rx * 35 && lost * 100 <= rx * 65)) ||
        fail "loss: $d dropped $lost of $rx frames, expected 35..65%"
done
echo "run_linkemu_test: loss 0.5: $got/$n round trips back (25% expected)"
((got * 100 >= n * 10 && got * 100 <= n * 45)) || fail "loss: $got of $n round trips, expected 10..45%"

# ---- scheduled cut, then the rate cap ----
bed --cut-at 3 --cut-for 4 --emu-rate 20mbit
until grep -q '^linkemu: cut at' "$emulog"; do
    ((SECONDS < deadline)) || fail "the emulator never reported the scheduled cut"
    sleep 0.05
done
read -r n got _ < <(probe 10 0.05 0.5)
echo "run_linkemu_test: scheduled cut: $got/$n back"
((got == 0)) || fail "scheduled cut: $got probes passed a cut link"
until grep -q '^linkemu: restored at' "$emulog"; do
    ((SECONDS < deadline)) || fail "the emulator never reported the end of the cut"
    sleep 0.05
done
read -r n got _ < <(probe 10 0.05 1)
echo "run_linkemu_test: after the scheduled cut: $got/$n back"
((got >= n / 2)) || fail "after the scheduled cut only $got of $n probes came back"

nbytes=$((4 << 20)) rate=20000000
burst=$(awk '/^linkemu: ready/ { for (i = 1; i < NF; i++) if ($i == "burst") print $(i + 1) }' "$emulog")
read -r secs got < <(timeout "$(left)" ip netns exec "$name-h0" "$py" "$dir/probe.py" send "$a1" 7002 "$nbytes" 9>&-)
[[ $got == "$nbytes" ]] || fail "rate: the sink received '$got' bytes of $nbytes"
min=$(awk -v n="$nbytes" -v b="$burst" -v r=$rate 'BEGIN { printf "%.3f", (n - b) * 8 / r }')
echo "run_linkemu_test: rate 20 Mbit/s: $nbytes bytes in $secs s (lower bound $min s;" \
    "$(awk -v n="$nbytes" -v s="$secs" 'BEGIN { printf "%.1f", n * 8 / s / 1e6 }') Mbit/s)"
awk -v s="$secs" -v m="$min" 'BEGIN { exit !(s >= m) }' || fail "rate: $nbytes bytes in $secs s < $min s"

# ---- offload: GSO super-packets pass through with their virtio header ----
bed --delay-ms 20 --offload on
read -r n got mn _ < <(probe 10 0.05 1)
echo "run_linkemu_test: offload on, delay 20 ms: $got/$n back, rtt min $mn ms"
((got >= n / 2)) || fail "offload: only $got of $n probes came back"
awk -v m="$mn" 'BEGIN { exit !(m >= 40) }' || fail "offload: a round trip of $mn ms < 2 x 20 ms"
nbytes=$((16 << 20))
read -r secs got < <(timeout "$(left)" ip netns exec "$name-h0" "$py" "$dir/probe.py" send "$a1" 7002 "$nbytes" 9>&-)
[[ $got == "$nbytes" ]] || fail "offload: the sink received '$got' bytes of $nbytes"
echo "run_linkemu_test: offload on: $nbytes bytes in $secs s"

echo "run_linkemu_test: PASS"
exit 0
