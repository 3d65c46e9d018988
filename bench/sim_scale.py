#!/usr/bin/python3
"""A SimGrid model of a starling run with 1,000 to 10,000 peers (docs/results.md).

What cannot be run on one machine is simulated with SimGrid's S4U (Debian:
python3-simgrid) on a cluster of 1 Gbit/s hosts (50 us per link, a non-blocking backbone),
with costs measured on the real code:

  - Epoch change after one death, as the coordinator runs it (src/coord): QUERY to every
    live member, STATUS back, DECIDE to each, TOPO_REQ from each, then one TOPO per member
    carrying the whole member list (20 + 74 n bytes + a 16-byte tag). Each TOPO is encoded
    and sealed in turn on the coordinator's one thread: TOPO_NS_PER_MEMBER ns per member
    listed, fitted to build/bench/coord_load (0.091 s for an epoch change among 1,000 on
    this machine). Each arriving TOPO_REQ makes the coordinator check formation over every
    member (CHECK_NS_PER_MEMBER). Then every member opens its ring link to the right (TCP
    connect and the four-message handshake: two round trips) and the epoch is up when the
    last link is.
  - Ring all-reduce of SIZE bytes: 2(n-1) steps of SIZE/n bytes to the right neighbour,
    then the n-1 hops of the DONE barrier, with HOP_US of software per hop (from the
    4-byte all-reduce on loopback: 454 us over 9 hops). Simulated with one actor per
    member up to --ring-max members; above, the same model in closed form (checked against
    the simulation where both exist).

  bench/sim_scale.py [--peers 1000,2000,5000,10000] [--size 64M] [--ring-max 256]
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    from simgrid import Actor, Comm, Engine, Host, Mailbox, this_actor
except ImportError:
    sys.exit("sim_scale: needs SimGrid's Python module: apt-get install python3-simgrid")

LINK_BPS = 125e6           # 1 Gbit/s per host
LINK_LAT_S = 50e-6         # per link; a message crosses two (host, backbone, host)
TOPO_NS_PER_MEMBER = 91.0  # encode + seal one member entry of a TOPO (coord_load, n=1000)
CHECK_NS_PER_MEMBER = 5.0  # one formation check over the member list, per member
HOP_US = 50.0              # software per ring hop (loopback 4-byte all-reduce / 9 hops)
SMALL = 48                 # a small control frame with its header and tag, bytes


def platform(n, path):
    with open(path, "w") as f:
        f.write("<?xml version='1.0'?>\n"
                "<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n"
                "<platform version=\"4.1\">\n"
                "  <cluster id=\"c\" prefix=\"h\" suffix=\"\" radical=\"0-%d\" speed=\"1Gf\" "
                "bw=\"%dBps\" lat=\"%dus\" bb_bw=\"100TBps\" bb_lat=\"0us\"/>\n"
                "</platform>\n" % (n, int(LINK_BPS), int(LINK_LAT_S * 1e6)))


def engine(n):
    tmp = tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False)
    tmp.close()
    platform(n, tmp.name)
    # SimGrid's default TCP model (LV08) multiplies latencies by 13 and takes 3% off
    # bandwidth, a calibration for wide-area TCP; on a LAN take both as given.
    e = Engine(["sim_scale", "--log=root.thres:critical", "--cfg=contexts/factory:thread",
                "--cfg=network/latency-factor:1", "--cfg=network/bandwidth-factor:1"])
    e.load_platform(tmp.name)
    os.unlink(tmp.name)
    return e


def cpu(seconds):
    this_actor.execute(seconds * 1e9)  # hosts run 1 Gflop/s: flops = ns


def epoch_change(n):
    """Simulated seconds from a member's death being noticed to the next ring being up,
    and the part of it the coordinator spends sending TOPOs."""
    e = engine(n + 1)
    live = n - 1
    topo_bytes = 20 + 74 * live + 16
    marks = {}
    up = []

    def gather():
        # Every member's reply at once, as the coordinator's poll() loop reads them.
        pending = [Mailbox.by_name("c%d" % i).get_async() for i in range(1, live + 1)]
        Comm.wait_all([comm for comm, _ in pending])  # `pending` keeps the data alive

    def coordinator():
        Comm.wait_all([Mailbox.by_name("m%d" % i).put_async("QUERY", SMALL)
                       for i in range(1, live + 1)])
        gather()  # STATUS
        Comm.wait_all([Mailbox.by_name("m%d" % i).put_async("DECIDE", SMALL)
                       for i in range(1, live + 1)])
        gather()  # TOPO_REQ; each makes a formation check over the members
        cpu(CHECK_NS_PER_MEMBER * 1e-9 * live * live)
        marks["topo0"] = Engine.clock
        # Encode and seal the next TOPO while the last one is on the wire. They all leave
        # through the coordinator's one link, so sending them one after the other takes
        # as long as sending them together, and keeps the simulation linear in n.
        sending = None
        for i in range(1, live + 1):
            cpu(TOPO_NS_PER_MEMBER * 1e-9 * live)
            if sending is not None:
                sending.wait()
            sending = Mailbox.by_name("m%d" % i).put_async("TOPO", topo_bytes)
        sending.wait()
        marks["topo1"] = Engine.clock

    def member(i):
        mine = Mailbox.by_name("m%d" % i)
        coord = Mailbox.by_name("c%d" % i)
        mine.get()                        # QUERY
        coord.put("STATUS", SMALL)
        mine.get()                        # DECIDE
        coord.put("TOPO_REQ", SMALL)
        mine.get()                        # TOPO
        right = 1 + i % live
        link = Mailbox.by_name("l%d" % right)
        for _ in range(2):                # connect + HELLO/CHALLENGE, AUTH/ACCEPT
            link.put("hs", SMALL)
            Mailbox.by_name("r%d" % i).get()
        up.append(Engine.clock)

    def acceptor(i):
        mine = Mailbox.by_name("l%d" % i)
        left = 1 + (i - 2) % live
        for _ in range(2):
            mine.get()
            Mailbox.by_name("r%d" % left).put("hs", SMALL)

    Actor.create("coord", Host.by_name("h0"), coordinator)
    for i in range(1, live + 1):
        Actor.create("p%d" % i, Host.by_name("h%d" % i), member, i)
        Actor.create("a%d" % i, Host.by_name("h%d" % i), acceptor, i)
    e.run()
    return max(up), marks["topo1"] - marks["topo0"]


def hop_s(nbytes):
    return 2 * LINK_LAT_S + HOP_US * 1e-6 + nbytes / LINK_BPS


def ring_closed_form(n, size):
    return 2 * (n - 1) * hop_s(size / n) + (n - 1) * hop_s(SMALL)


def ring_simulated(n, size):
    e = engine(n)
    piece = int(size // n)
    end = []

    def member(i):
        right = Mailbox.by_name("d%d" % ((i + 1) % n))
        mine = Mailbox.by_name("d%d" % i)
        for _ in range(2 * (n - 1)):      # reduce-scatter, then all-gather
            c = right.put_async("piece", piece)
            mine.get()
            c.wait()
            cpu(HOP_US * 1e-6)
        for _ in range(n - 1):            # the DONE barrier
            c = right.put_async("done", SMALL)
            mine.get()
            c.wait()
            cpu(HOP_US * 1e-6)
        end.append(Engine.clock)

    for i in range(n):
        Actor.create("p%d" % i, Host.by_name("h%d" % i), member, i)
    e.run()
    return max(end)


def one(kind, n, size):
    """One simulation in a process of its own (SimGrid has one engine per process)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", kind, str(n),
                          str(size)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, timeout=3600, check=True).stdout.split()
    return [float(x) for x in out]


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        kind, n, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        r = ring_simulated(n, size) if kind == "ring" else epoch_change(n)
        print(*(r if isinstance(r, tuple) else (r,)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", default="1000,2000,5000,10000")
    ap.add_argument("--size", default="64M")
    ap.add_argument("--ring-max", type=int, default=256)
    a = ap.parse_args()
    mult = {"K": 1 << 10, "M": 1 << 20}
    size = int(a.size[:-1]) * mult[a.size[-1]] if a.size[-1] in mult else int(a.size)
    print("ring all-reduce of %d bytes, 1 Gbit/s hosts, %d us per link, %d us per hop:"
          % (size, LINK_LAT_S * 1e6, HOP_US))
    print("%8s %14s %14s" % ("peers", "simulated s", "closed form s"))
    n = 4
    while n <= a.ring_max:
        print("%8d %14.3f %14.3f" % (n, one("ring", n, size)[0], ring_closed_form(n, size)),
              flush=True)
        n *= 4
    for n in [int(x) for x in a.peers.split(",")]:
        print("%8d %14s %14.3f" % (n, "-", ring_closed_form(n, size)))
    print("\nepoch change after one death (QUERY, STATUS, DECIDE, TOPO_REQ, TOPO, ring links):")
    print("%8s %12s %16s %18s" % ("peers", "total s", "sending TOPOs s", "TOPO bytes in all"))
    for n in [int(x) for x in a.peers.split(",")]:
        total, topo = one("epoch", n, 0)
        print("%8d %12.3f %16.3f %18.3g" % (n, total, topo, (n - 1) * (20 + 74 * (n - 1) + 16)),
              flush=True)


if __name__ == "__main__":
    main()
