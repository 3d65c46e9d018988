#!/usr/bin/python3
"""Reversed ring links cost nothing: all-reduce time with members that accept no inbound
connections (Config(inbound=False): they open both of their ring links) against the same
group where every member accepts them, side by side in one run (docs/results.md).

N peer processes on loopback and one in-process coordinator; each configuration is run
--rounds times, alternating, and each round times --iters all-reduces of --size bytes
(f32 sum, checked exactly) after one warm-up. Reported: the median time per all-reduce of
each configuration and their ratio.

  bench/nat_bench.py [--peers 4] [--closed 2] [--size 64M] [--iters 5] [--rounds 3]

Needs build/src/libstarling.so (make) and numpy.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "build", "src", "libstarling.so")
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("STARLING_LIB", LIB)

PEER = r"""
import json, sys, time
import numpy as np
import starling
coord, rank, n, closed, count, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    sys.argv[4] == "1", int(sys.argv[5]), int(sys.argv[6])
c = starling.Communicator(coord, "nat-bench", "k", starling.Config(
    min_peers=n, inbound=not closed, name="p%d" % rank, timeout_ms=3000))
c.update_topology()
if c.size != n:
    raise SystemExit("epoch of %d members, want %d" % (c.size, n))
x = np.empty(count, np.float32)
times = []
for i in range(iters + 1):
    x.fill(rank + 1)
    t0 = time.perf_counter()
    c.allreduce(x)
    t = time.perf_counter() - t0
    if x[0] != n * (n + 1) / 2 or x[-1] != x[0]:
        raise SystemExit("wrong sum %r" % x[0])
    if i:
        times.append(t)
c.barrier()
print(json.dumps({"rank": rank, "times": times}))
c.close()
"""


def size_arg(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(s[:-1]) * units[s[-1]]) if s[-1] in units else int(s)


def one_round(coord_addr, n, closed, size, iters):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    procs = [subprocess.Popen([sys.executable, "-c", PEER, coord_addr, str(r), str(n),
                               "1" if r < closed else "0", str(size // 4), str(iters)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for r in range(n)]
    worst = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit("peer failed: " + err[-2000:])
        worst.append(json.loads(out)["times"])
    # per all-reduce, the slowest member's time
    return [max(ts[i] for ts in worst) for i in range(iters)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--closed", type=int, default=2)
    ap.add_argument("--size", type=size_arg, default=64 << 20)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not 0 < a.closed <= a.peers // 2:
        ap.error("--closed must be 1..peers/2 (at most half the members may accept none)")
    import starling
    res = {0: [], a.closed: []}
    for _ in range(a.rounds):
        for k in (0, a.closed):
            # a coordinator per round: min_peers holds for its first epoch only
            co = starling.Coordinator("127.0.0.1:0", "nat-bench", "k",
                                      starling.Config(timeout_ms=3000))
            try:
                res[k] += one_round(co.address, a.peers, k, a.size, a.iters)
            finally:
                co.close()
    base, nat = statistics.median(res[0]), statistics.median(res[a.closed])
    print(f"{a.peers} peers on loopback, {a.size / 2**20:.0f} MiB f32 all-reduce, "
          f"{a.rounds} rounds x {a.iters}")
    print(f"  every member accepts connections: median {base * 1e3:.1f} ms")
    print(f"  {a.closed} accept none (reversed links): median {nat * 1e3:.1f} ms")
    print(f"  ratio {nat / base:.3f}")


if __name__ == "__main__":
    main()
