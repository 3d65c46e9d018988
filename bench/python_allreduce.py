"""Side by side: a 64 MiB float32 all-reduce (sum, in place) among N local processes,
from Python with starling and with torch.distributed (gloo), on the same torch tensors,
in the same run. Median of --iters timed calls after one warm-up.

    STARLING_LIB=build/src/libstarling.so PYTHONPATH=python python3 bench/python_allreduce.py

Prints one JSON line per backend and a summary.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")


def timed(fn, barrier, iters):
    """This rank's times of `iters` calls, each after a barrier, after one warm-up."""
    fn()
    ts = []
    for _ in range(iters):
        barrier()
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def report(backend, n, nbytes, times):
    os.write(1, (json.dumps({"backend": backend, "peers": n, "bytes": nbytes,
                             "times": times}) + "\n").encode())


def summarize(rows):
    """One call's time is the slowest rank's; the figure is the median over calls."""
    n, nbytes = rows[0]["peers"], rows[0]["bytes"]
    per_call = [max(c) for c in zip(*(r["times"] for r in rows))]
    med = sorted(per_call)[len(per_call) // 2]
    return {"backend": rows[0]["backend"], "peers": n, "bytes": nbytes, "median_s": med,
            "min_s": min(per_call), "busbw_GBps": 2 * (n - 1) / n * nbytes / med / 1e9}


def worker_starling(nbytes, iters):
    import torch
    import starling
    torch.set_num_threads(1)
    comm = starling.Communicator.from_env(starling.Config(timeout_ms=3000,
                                                          op_timeout_ms=120000))
    comm.update_topology()
    t = torch.ones(nbytes // 4, dtype=torch.float32)
    one = torch.ones(1, dtype=torch.float32)
    ts = timed(lambda: comm.allreduce(t, "sum"),
               lambda: comm.allreduce(one, "sum"), iters)
    report("starling", comm.size, nbytes, ts)
    comm.close()


def worker_gloo(nbytes, iters, rank, world, port):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    t = torch.ones(nbytes // 4, dtype=torch.float32)
    ts = timed(lambda: dist.all_reduce(t), dist.barrier, iters)
    report("gloo", world, nbytes, ts)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd_list, env):
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, text=True)
             for c in cmd_list]
    out = []
    for p in procs:
        o, _ = p.communicate(timeout=600)
        out += [json.loads(x) for x in o.splitlines() if x.startswith("{")]
        if p.returncode:
            sys.exit(f"a worker failed with status {p.returncode}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the backends this many times (a loaded machine)")
    ap.add_argument("--cli", default=None,
                    help="path of the starling CLI: adds `starling bench allreduce` (C)")
    ap.add_argument("--worker", nargs="*")
    a = ap.parse_args()
    nbytes = a.mib << 20
    if a.worker:
        if a.worker[0] == "starling":
            worker_starling(nbytes, a.iters)
        else:
            worker_gloo(nbytes, a.iters, int(a.worker[1]), a.peers, int(a.worker[2]))
        return
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join([PKG, env.get("PYTHONPATH", "")])
    common = ["--peers", str(a.peers), "--mib", str(a.mib), "--iters", str(a.iters)]
    calls = {"starling": [], "gloo": [], "C": []}
    for k in range(a.rounds):
        res = run([[sys.executable, "-m", "starling.launch", "--no-prefix", "--peers",
                    str(a.peers), HERE]
                   + common + ["--worker", "starling"]], env)
        port = free_port()
        res += run([[sys.executable, HERE] + common + ["--worker", "gloo", str(r), str(port)]
                    for r in range(a.peers)], env)
        for b in ("starling", "gloo"):
            s = summarize([r for r in res if r["backend"] == b])
            calls[b].append(s["median_s"])
            print(json.dumps(dict(s, round=k)), flush=True)
        if a.cli:
            o = subprocess.run([a.cli, "bench", "allreduce", "--peers", str(a.peers),
                                "--bytes", f"{a.mib}M", "--iters", str(a.iters), "--json"],
                               capture_output=True, text=True, timeout=600).stdout
            r = [json.loads(x) for x in o.splitlines() if x.startswith("{")][-1]
            calls["C"].append(r["median_s"])
            print(json.dumps({"backend": "C", "round": k, "median_s": r["median_s"]}),
                  flush=True)
    by = {b: {"median_s": sorted(v)[len(v) // 2]} for b, v in calls.items() if v}
    print(f"{a.mib} MiB f32 all-reduce, {a.peers} processes, median of {a.iters}: "
          f"starling {by['starling']['median_s'] * 1e3:.0f} ms, "
          f"gloo {by['gloo']['median_s'] * 1e3:.0f} ms "
          f"(starling/gloo time {by['starling']['median_s'] / by['gloo']['median_s']:.2f})"
          + (f", C CLI {by['C']['median_s'] * 1e3:.0f} ms" if "C" in by else "")
          + (f"; medians over {a.rounds} alternating rounds" if a.rounds > 1 else ""))


if __name__ == "__main__":
    main()
