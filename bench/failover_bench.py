#!/usr/bin/python3
"""Coordinator failover on loopback, measured from the peers (docs/results.md).

An active `starling coordinator`, a standby (`--standby-of`), and N peer processes that
were given both ("A,B"). Each peer loops: an all-reduce of SIZE bytes, then
update_topology. The active is SIGKILLed (or SIGSTOPped, --freeze) mid-run, and a newcomer
is started at the same moment. Reported, with the failure timeout as the unit:
  - the slowest all-reduce that started after the death, in the same ring (collectives need
    no coordinator);
  - the first update_topology after the death (re-registration with the standby and its
    confirmation of the epoch);
  - the newcomer's admission: from the death to its first epoch with the others.
Every all-reduce is checked exactly; a failed collective is counted (the target is 0).

  bench/failover_bench.py [--peers 4] [--timeout-ms 1000] [--size 1M] [--rounds 3] [--freeze]

Needs build/tools/starling and build/src/libstarling.so (make), numpy.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "build", "tools", "starling")
LIB = os.path.join(ROOT, "build", "src", "libstarling.so")
SECRET = "failover-bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peer_main(spec):
    """One peer: prints JSON lines (its events, wall-clock seconds)."""
    import numpy as np
    import starling
    cfg = starling.Config(timeout_ms=spec["timeout_ms"], op_timeout_ms=60000,
                          min_peers=spec["min_peers"], name=spec["name"])
    comm = starling.Communicator(spec["coords"], run="failover-bench", secret=SECRET,
                                 config=cfg)
    t0 = time.time()
    comm.update_topology()
    out = lambda obj: os.write(1, (json.dumps(obj) + "\n").encode())
    out({"ev": "joined", "t0": t0, "t": time.time(), "size": comm.size, "epoch": comm.epoch})
    fails = 0
    end = time.time() + spec["seconds"]
    while True:
        # Stop together: one peer leaving would fail the others' next collective.
        if comm.allreduce(np.array([float(time.time() > end)], np.float32), "max")[0] > 0:
            break
        x = np.ones(spec["size"] // 4, np.float32)  # all-reduce works in place
        a = time.time()
        try:
            r = comm.allreduce(x, "sum")
            if r[0] != comm.size or r[-1] != comm.size:
                out({"ev": "wrong", "got": float(r[0]), "size": comm.size})
                fails += 1
        except starling.StarlingError as e:
            fails += 1
            out({"ev": "fail", "t": a, "msg": str(e)})
        b = time.time()
        comm.update_topology()
        c = time.time()
        out({"ev": "it", "a": a, "b": b, "c": c, "size": comm.size, "epoch": comm.epoch})
    out({"ev": "end", "fails": fails, "epoch": comm.epoch, "size": comm.size})
    comm.close()


def spawn(spec):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), STARLING_LIB=LIB,
               STARLING_LOG_LEVEL="warn")
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--peer",
                             json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)


def coordinator(port, timeout_ms, min_peers, standby_of=None):
    args = [CLI, "coordinator", "--listen", "127.0.0.1:%d" % port, "--run", "failover-bench",
            "--timeout-ms", str(timeout_ms), "--min-peers", str(min_peers)]
    if standby_of:
        args += ["--standby-of", standby_of]
    env = dict(os.environ, STARLING_SECRET=SECRET)
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         text=True)
    line = p.stdout.readline()
    if "listening" not in line:
        raise SystemExit("coordinator did not start: %r" % line)
    return p


def one_round(a):
    pa, pb = free_port(), free_port()
    coords = "127.0.0.1:%d,127.0.0.1:%d" % (pa, pb)
    A = coordinator(pa, a.timeout_ms, a.peers)
    B = coordinator(pb, a.timeout_ms, 1, standby_of="127.0.0.1:%d" % pa)
    time.sleep(0.5)
    base = dict(coords=coords, timeout_ms=a.timeout_ms, min_peers=a.peers, size=a.size)
    peers = [spawn(dict(base, name="p%d" % i, seconds=a.before + a.after)) for i in range(a.peers)]
    time.sleep(a.before)
    death = time.time()
    A.send_signal(signal.SIGSTOP if a.freeze else signal.SIGKILL)
    newcomer = spawn(dict(base, name="new", min_peers=1, seconds=a.after))
    logs = []
    for p in peers + [newcomer]:
        try:
            o, _ = p.communicate(timeout=a.before + a.after + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            o, _ = p.communicate()
        logs.append([json.loads(l) for l in o.splitlines() if l.startswith("{")])
    for c in (A, B):
        if a.freeze:
            c.send_signal(signal.SIGCONT)
        c.terminate()
        try:
            c.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            c.kill()
    bad = [e for log in logs for e in log if e["ev"] in ("fail", "wrong")]
    for e in bad[:3]:
        print("  failed:", e, file=sys.stderr)
    fails = len(bad)
    its = [e for log in logs[:-1] for e in log if e["ev"] == "it"]
    before = [e["b"] - e["a"] for e in its if e["b"] < death]
    # After the death, in the same ring (before the newcomer's epoch): what the
    # coordinator's death alone costs a collective.
    after_ar = [e["b"] - e["a"] for e in its if e["a"] >= death and e["size"] == a.peers]
    first_topo = []
    for log in logs[:-1]:
        t = [e for e in log if e["ev"] == "it" and e["c"] > death]
        if t:
            first_topo.append(t[0]["c"] - max(t[0]["b"], death))
    joined = [e for e in logs[-1] if e["ev"] == "joined"]
    admit = joined[0]["t"] - death if joined else float("nan")
    big = [e for e in its if e["a"] > death and e["size"] == a.peers + 1]
    return dict(fails=fails, ar_before_ms=1e3 * statistics.median(before) if before else 0,
                ar_after_max_ms=1e3 * max(after_ar) if after_ar else float("nan"),
                first_topo_ms=1e3 * max(first_topo) if first_topo else float("nan"),
                admit_ms=1e3 * admit, grew=bool(big))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer")
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--timeout-ms", type=int, default=1000)
    ap.add_argument("--size", default="1M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=float, default=3.0)
    ap.add_argument("--after", type=float, default=8.0)
    ap.add_argument("--freeze", action="store_true", help="SIGSTOP the active, not SIGKILL")
    a = ap.parse_args()
    if a.peer:
        peer_main(json.loads(a.peer))
        return
    mult = {"K": 1 << 10, "M": 1 << 20}
    a.size = int(a.size[:-1]) * mult[a.size[-1]] if a.size[-1] in mult else int(a.size)
    rows = [one_round(a) for _ in range(a.rounds)]
    how = "SIGSTOP" if a.freeze else "SIGKILL"
    print("failover: %d peers, timeout %d ms, %d-byte all-reduces, active %sed; %d rounds"
          % (a.peers, a.timeout_ms, a.size, how, a.rounds))
    print("%-6s %6s %14s %16s %18s %14s %6s" % ("round", "fails", "allreduce ms",
                                               "after death max", "1st update_topo ms",
                                               "newcomer ms", "grew"))
    for i, r in enumerate(rows):
        print("%-6d %6d %14.2f %16.2f %18.0f %14.0f %6s" % (
            i + 1, r["fails"], r["ar_before_ms"], r["ar_after_max_ms"], r["first_topo_ms"],
            r["admit_ms"], r["grew"]))
    worst = max(r["first_topo_ms"] for r in rows)
    print("worst first update_topology after the death: %.0f ms = %.2f x the timeout; "
          "failed collectives: %d" % (worst, worst / a.timeout_ms, sum(r["fails"] for r in rows)))


if __name__ == "__main__":
    main()
