"""Data-parallel step time: copy-then-reduce (starling.torch.allreduce_gradients after
backward) against bucketed all-reduces overlapping backward (starling.torch.GradientSync),
side by side in one run, N local processes on loopback.

    STARLING_LIB=build/src/libstarling.so PYTHONPATH=python /usr/bin/python3 \\
        bench/overlap_bench.py --peers 4 --threads 1 --bucket-mb 25,4

One step = zero_grad, forward, backward, gradient averaging, SGD (momentum) step, on an
MLP of --depth square layers of --width (default 4 x 2048: 16.8 M float32 parameters,
64 MiB of gradients). The modes alternate within each round (--rounds), each running
--warmup untimed then --steps timed steps back to back; a mode's figure in a round is the
slowest member's mean step time, and the table gives the median over rounds, its ratio
to copy-then-reduce's, and the median of the per-round ratios (the two modes measured
minutes apart at most: more robust to the load of other jobs). The order of the modes is
reversed every other round. Also measured, as bounds: "compute" (the same step without any
communication) and "allreduce" (only the all-reduce of one 64 MiB flat buffer).

Prints one JSON line per mode and round (rank 0) and a markdown table at the end.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process")
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--bucket-mb", default="25",
                   help="comma-separated bucket sizes for GradientSync (MiB)")
    p.add_argument("--first-bucket-mb", type=float, default=None)
    p.add_argument("--view", action="store_true",
                   help="also run GradientSync with grad_as_view=True (at the first size)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ddp", action="store_true",
                   help="also run unmodified DistributedDataParallel over the starling "
                        "torch.distributed backend (its C++ reducer's buckets, --bucket-mb's "
                        "first size)")
    p.add_argument("--no-bounds", action="store_true",
                   help="skip the compute-only and all-reduce-only modes")
    p.add_argument("--link", default="", help=argparse.SUPPRESS)  # for the table's title
    p.add_argument("--listen", default=None,
                   help="this peer's listen address (bench/overlap_tbf.sh: its namespace's)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def ddp_model(a, comm, model, bucket_mb):
    """DistributedDataParallel over a torch.distributed group of the starling backend with
    the same members: rank 0 (ring rank) hosts the store on its data-plane host, sent to
    the others over `comm`. Outside DDP's forward its hooks are idle, so the other modes
    keep using `model` itself."""
    import socket
    import torch
    import torch.distributed as dist
    import starling.distributed  # noqa: F401  registers the backend
    host = (a.listen or "127.0.0.1:0").rsplit(":", 1)[0]
    buf = torch.zeros(72, dtype=torch.uint8)
    if comm.rank == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        text = f"{host} {port}".encode()
        buf[:len(text)] = torch.tensor(list(text), dtype=torch.uint8)
    comm.broadcast(buf, src=0)
    host0, port = bytes(buf.tolist()).rstrip(b"\0").decode().split()
    os.environ.pop("STARLING_COORD", None)  # a group of its own: rank 0 hosts a coordinator
    os.environ["MASTER_ADDR"] = host0
    os.environ["STARLING_LISTEN"] = f"{host}:0"
    dist.init_process_group("starling", init_method=f"tcp://{host0}:{port}", rank=comm.rank,
                            world_size=comm.size)
    return torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=bucket_mb)


def worker(a):
    import torch
    import starling
    import starling.torch as st
    torch.set_num_threads(a.threads)
    comm = starling.Communicator.from_env(starling.Config(timeout_ms=5000,
                                                          op_timeout_ms=300000,
                                                          listen=a.listen))
    comm.update_topology()
    torch.manual_seed(0)
    layers = []
    for _ in range(a.depth):
        layers += [torch.nn.Linear(a.width, a.width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    g = torch.Generator().manual_seed(comm.rank)
    x = torch.randn(a.batch, a.width, generator=g)
    y = torch.randn(a.batch, a.width, generator=g)
    flat = torch.ones(nparams, dtype=torch.float32)

    def compute():
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()

    def step_copy():
        compute()
        st.allreduce_gradients(comm, model)
        opt.step()

    def step_compute():
        compute()
        opt.step()

    def step_allreduce():
        comm.allreduce(flat, "avg", out=flat)

    modes = [("copy-then-reduce", step_copy, None)]
    sizes = [float(s) for s in a.bucket_mb.split(",") if s]
    for mb in sizes:
        modes.append((f"bucketed {mb:g} MiB", None,
                      dict(bucket_mb=mb, first_bucket_mb=a.first_bucket_mb)))
    if a.view:
        modes.append((f"bucketed {sizes[0]:g} MiB, grad_as_view", None,
                      dict(bucket_mb=sizes[0], first_bucket_mb=a.first_bucket_mb,
                           grad_as_view=True)))
    if a.ddp:
        ddp = ddp_model(a, comm, model, sizes[0])

        def step_ddp():
            opt.zero_grad()
            torch.nn.functional.mse_loss(ddp(x), y).backward()
            opt.step()
        modes.append((f"DDP over the starling backend, {sizes[0]:g} MiB", step_ddp, None))
    if not a.no_bounds:
        modes += [("compute only (no sync)", step_compute, None),
                  ("all-reduce only (64 MiB)" if nparams * 4 == 64 << 20 else
                   f"all-reduce only ({nparams * 4 / 2**20:.0f} MiB)", step_allreduce, None)]
    times = {m[0]: [] for m in modes}
    nbuckets = {}
    one = torch.zeros(1)
    for r in range(a.rounds):
        # reversed every other round, so that a drift in the machine's load does not
        # always favour the same mode
        for name, fn, kw in (modes if r % 2 == 0 else modes[::-1]):
            sync = None
            if kw is not None:
                sync = st.GradientSync(comm, model, **kw)
                nbuckets[name] = len(sync.buckets)

                def fn():
                    compute()
                    sync.finish()
                    opt.step()
            for _ in range(a.warmup):
                fn()
            comm.allreduce(one, "sum", out=one)  # start together
            t = time.perf_counter()
            for _ in range(a.steps):
                fn()
            mine = torch.tensor([(time.perf_counter() - t) / a.steps], dtype=torch.float64)
            slowest = comm.allreduce(mine, "max")
            if sync is not None:
                sync.close()
            times[name].append(float(slowest))
            if comm.rank == 0:
                print(json.dumps({"round": r, "mode": name, "step_s": float(slowest),
                                  "peers": comm.size, "threads": a.threads,
                                  "params": nparams, "batch": a.batch}), flush=True)
    if comm.rank == 0:
        base = statistics.median(times["copy-then-reduce"])
        where = f"links {a.link}" if a.link else "loopback"
        print(f"\n{comm.size} processes ({where}), torch threads {a.threads}, MLP {a.depth} x "
              f"{a.width} ({nparams / 1e6:.1f} M params), batch {a.batch}; "
              f"{a.rounds} rounds x {a.steps} steps; load {os.getloadavg()[0]:.1f}\n")
        print("| mode | median step | min..max over rounds | median / copy-then-reduce's "
              "| median of per-round ratios |")
        print("| --- | --- | --- | --- | --- |")
        for name, _, _ in modes:
            med = statistics.median(times[name])
            paired = statistics.median(t / c for t, c in zip(times[name],
                                                             times["copy-then-reduce"]))
            label = name + (f" ({nbuckets[name]} buckets)" if name in nbuckets else "")
            print(f"| {label} | {med * 1e3:.0f} ms | {min(times[name]) * 1e3:.0f}.."
                  f"{max(times[name]) * 1e3:.0f} ms | {med / base:.2f}x | {paired:.2f}x |")
        sys.stdout.flush()
    comm.close()


def main(argv):
    a = parse(argv)
    if a.worker:
        worker(a)
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PKG, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "starling.launch", "--peers", str(a.peers), "--fail-fast",
           HERE, "--worker"] + argv
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
