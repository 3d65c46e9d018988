"""Unmodified DistributedDataParallel over backend="starling" against backend="gloo":
step time side by side in one run, then what each does when a process is SIGKILLed.

    STARLING_LIB=build/src/libstarling.so PYTHONPATH=python /usr/bin/python3 \\
        bench/ddp_bench.py --peers 4

N local processes on loopback, started as torchrun starts them (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT and nothing else); each round initializes one group per backend
in turn (tcp:// on a fresh port; the order reversed every other round), runs --warmup
untimed then --steps timed DDP steps (zero_grad, forward, backward with DDP's bucketed
all-reduces, SGD step) on an MLP of --depth square layers of --width (default 4 x 2048:
16.8 M float32 parameters, DDP's default 25 MiB buckets), and destroys the group. A
backend's figure in a round is the slowest process's mean step time; the table gives the
median over rounds and the median of the per-round ratios to gloo's.

Kill run (unless --no-kill): the same training for --kill-steps steps per backend, with
rank 1 SIGKILLing itself at step --kill-at. Over starling the step goes through
starling.distributed.Manager (the survivors form a new epoch and redo the step); over
gloo it is plain DDP with a --gloo-timeout-s collective timeout. The table says how many
steps the survivors finished, and how the survivors' run ended.

Prints one JSON line per measurement and markdown tables at the end (on stdout).
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")
BACKENDS = ("gloo", "starling")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process")
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP's bucket_cap_mb")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-kill", action="store_true", help="skip the kill run")
    p.add_argument("--kill-steps", type=int, default=12)
    p.add_argument("--kill-at", type=int, default=4)
    p.add_argument("--timeout-ms", type=int, default=2000,
                   help="starling's failure timeout (STARLING_TIMEOUT_MS)")
    p.add_argument("--gloo-timeout-s", type=int, default=60,
                   help="gloo's collective timeout in the kill run")
    p.add_argument("--wait-s", type=int, default=900, help="bound on each whole run")
    p.add_argument("--worker", choices=("time", "kill"), help=argparse.SUPPRESS)
    p.add_argument("--ports", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---- the processes -------------------------------------------------------------------

def make_model(a):
    import torch
    torch.manual_seed(0)
    layers = []
    for _ in range(a.depth):
        layers += [torch.nn.Linear(a.width, a.width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def setup(a, backend, port, timeout_s=None):
    import datetime
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    kw = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}",
                            rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), **kw)
    model = make_model(a)
    ddp = DDP(model, bucket_cap_mb=a.bucket_mb)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-4, momentum=0.9)
    g = torch.Generator().manual_seed(dist.get_rank())
    x = torch.randn(a.batch, a.width, generator=g)
    y = torch.randn(a.batch, a.width, generator=g)
    return ddp, opt, x, y


def worker_time(a):
    import torch
    import torch.distributed as dist
    import starling.distributed  # noqa: F401  registers the backend
    ports = [int(p) for p in a.ports.split(",")]
    rank = int(os.environ["RANK"])
    k = 0
    for r in range(a.rounds):
        for backend in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]):
            ddp, opt, x, y = setup(a, backend, ports[k])
            k += 1

            def step():
                opt.zero_grad()
                torch.nn.functional.mse_loss(ddp(x), y).backward()
                opt.step()
            for _ in range(a.warmup):
                step()
            dist.barrier()
            t = time.perf_counter()
            for _ in range(a.steps):
                step()
            mine = torch.tensor([(time.perf_counter() - t) / a.steps], dtype=torch.float64)
            dist.all_reduce(mine, dist.ReduceOp.MAX)
            if rank == 0:
                print(json.dumps({"round": r, "backend": backend, "step_s": float(mine),
                                  "peers": dist.get_world_size(), "threads": a.threads,
                                  "params": sum(p.numel() for p in ddp.parameters()),
                                  "bucket_mb": a.bucket_mb}), flush=True)
            del ddp, opt
            dist.destroy_process_group()


def worker_kill(a):
    import hashlib
    import torch
    import torch.distributed as dist
    import starling.distributed as sd
    backend, port = a.ports.split(":")
    rank = int(os.environ["RANK"])
    ddp, opt, x, y = setup(a, backend, int(port), timeout_s=a.gloo_timeout_s)
    mgr = sd.Manager(ddp, opt) if backend == "starling" else None

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        return loss
    steps, outcome, t0 = 0, "finished", time.perf_counter()
    t_kill, kill_step_s = None, None
    for s in range(a.kill_steps):
        if s == a.kill_at:
            t_kill = time.perf_counter()
            if rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        try:
            if mgr is not None:
                mgr.step(closure)
            else:
                closure()
                opt.step()
            steps += 1
            if s == a.kill_at:
                kill_step_s = time.perf_counter() - t_kill
        except Exception as e:  # gloo: the survivors' collectives fail
            outcome = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            break
    out = {"backend": backend, "rank": rank, "steps": steps, "outcome": outcome,
           "after_kill_s": time.perf_counter() - (t_kill or t0),
           "kill_step_s": kill_step_s}
    if mgr is not None:
        p = torch.cat([q.detach().reshape(-1) for q in ddp.parameters()])
        out.update(recoveries=mgr.recoveries, live_size=mgr.pg.live_size,
                   hash=hashlib.sha256(p.numpy().tobytes()).hexdigest()[:16])
    print(json.dumps(out), flush=True)
    os._exit(0)  # gloo's group cannot be destroyed cleanly after a loss


# ---- the driver ----------------------------------------------------------------------

def spawn(a, argv, mode, ports, extra_env=None):
    """a.peers processes of this file with torchrun's variables only; returns their
    (returncode, JSON lines, stderr), each wait bounded by --wait-s."""
    procs = []
    for rank in range(a.peers):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STARLING_") or k == "STARLING_LIB"}
        env.update(RANK=str(rank), WORLD_SIZE=str(a.peers), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=ports.split(",")[0].split(":")[-1],
                   PYTHONPATH=os.pathsep.join([PKG, os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS=str(a.threads))
        env.update(extra_env or {})
        procs.append(subprocess.Popen([sys.executable, HERE, "--worker", mode, "--ports", ports]
                                      + argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    res, deadline = [], time.monotonic() + a.wait_s
    try:
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err += f"\n(killed after --wait-s {a.wait_s})"
            lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            for x in lines:
                print(json.dumps(x), flush=True)
            res.append((p.returncode, lines, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return res


def timing(a, argv):
    res = spawn(a, argv, "time", ",".join(map(str, free_ports(2 * a.rounds))))
    rc, lines, err = res[0]
    if any(r[0] != 0 for r in res):
        sys.stderr.write("".join(r[2] for r in res))
        raise SystemExit("ddp_bench: a timing process failed")
    times = {b: [x["step_s"] for x in lines if x["backend"] == b] for b in BACKENDS}
    nparams = lines[0]["params"]
    print(f"\n{a.peers} processes (loopback), torch threads {a.threads}, MLP {a.depth} x "
          f"{a.width} ({nparams / 1e6:.1f} M params), batch {a.batch}, DDP bucket_cap_mb "
          f"{a.bucket_mb:g}; {a.rounds} rounds x {a.steps} steps; load "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| backend | median step | min..max over rounds | median of per-round ratios "
          "to gloo's |")
    print("| --- | --- | --- | --- |")
    for b in BACKENDS:
        paired = statistics.median(t / g for t, g in zip(times[b], times["gloo"]))
        print(f"| {b} | {statistics.median(times[b]) * 1e3:.0f} ms | "
              f"{min(times[b]) * 1e3:.0f}..{max(times[b]) * 1e3:.0f} ms | {paired:.2f}x |")


def kill_run(a, argv):
    print(f"\nKill run: rank 1 of {a.peers} SIGKILLs itself at step {a.kill_at} of "
          f"{a.kill_steps}; starling timeout {a.timeout_ms} ms, gloo timeout "
          f"{a.gloo_timeout_s} s\n")
    rows = []
    for b in BACKENDS:
        t = time.monotonic()
        res = spawn(a, argv, "kill", f"{b}:{free_ports(1)[0]}",
                    {"STARLING_TIMEOUT_MS": str(a.timeout_ms)})
        wall = time.monotonic() - t
        surv = [x for i, r in enumerate(res) if i != 1 for x in r[1]]
        killed = res[1][0] == -signal.SIGKILL
        if len(surv) != a.peers - 1:
            outcome = "survivors did not report: " + res[0][2].strip().splitlines()[-1][:120] \
                if res[0][2].strip() else "survivors did not report"
            rows.append((b, killed, "-", outcome, "-", wall, "-"))
            continue
        steps = sorted({x["steps"] for x in surv})
        # one line per distinct outcome, the ports left out (each survivor names its own)
        outcomes = sorted({re.sub(r":\d+", ":PORT", x["outcome"]) for x in surv})
        hashes = sorted({x.get("hash", "-") for x in surv})
        ks = [x["kill_step_s"] for x in surv if x["kill_step_s"] is not None]
        rows.append((b, killed, ",".join(map(str, steps)), "; ".join(outcomes),
                     f"{max(ks):.2f} s" if ks else "-", wall,
                     "equal" if len(hashes) == 1 and hashes[0] != "-" else
                     ("-" if hashes == ["-"] else "DIFFER")))
    print("| backend | rank 1 killed | steps the survivors finished | how the survivors' run "
          "ended | the kill step (redone) | wall, start to end | survivors' parameter hashes |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b, killed, steps, outcome, ks, wall, h in rows:
        print(f"| {b} | {'yes' if killed else 'no'} | {steps} of {a.kill_steps} | {outcome} "
              f"| {ks} | {wall:.1f} s | {h} |")


def main(argv):
    a = parse(argv)
    if a.worker == "time":
        import torch
        torch.set_num_threads(a.threads)
        worker_time(a)
        return 0
    if a.worker == "kill":
        import torch
        torch.set_num_threads(a.threads)
        worker_kill(a)
        return 0
    timing(a, argv)
    if not a.no_kill:
        kill_run(a, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
