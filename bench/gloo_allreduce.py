#!/usr/bin/python3
"""Gloo all-reduce baseline for `make bench`: torch.distributed with the gloo backend on loopback.

Run with Debian's interpreter (/usr/bin/python3, python3-torch 1.13, CPU):

    /usr/bin/python3 bench/gloo_allreduce.py --peers 4 --bytes 4,1M,64M,256M --iters 10

Spawns --peers processes joined by init_method=tcp://127.0.0.1:PORT. For each size, an f32
SUM all_reduce is run --warmup times, then --iters timed calls, each after a barrier and after
refilling the buffer (outside the timing, so every call reduces known values; the first result
is checked). One call's time is the slowest rank's; the figure reported is the median over calls.
Prints one JSON object per size on stdout:

    {"impl":"gloo","peers":N,"bytes":S,"median_s":T,"busbw_GBps":S*2(N-1)/N/T/1e9, ...}

Exit status is non-zero (with the reason on stderr) if any rank fails or the run times out.

One rank per process, for peers on several hosts (e.g. network namespaces, as in
bench/baselines_tbf.sh): every host runs

    /usr/bin/python3 bench/gloo_allreduce.py --peers N --rank R --init-addr HOST0:PORT ...

with GLOO_SOCKET_IFNAME naming its interface; rank 0 listens on HOST0:PORT and prints the
JSON lines. The process re-executes itself once to apply the malloc setting below.
"""

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import sys
import time
import traceback

UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
         "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_size(text):
    """'4', '1M', '64MiB', '1G' -> bytes (binary multiples)."""
    t = text.strip().upper()
    i = len(t)
    while i > 0 and not t[i - 1].isdigit():
        i -= 1
    num, unit = t[:i], t[i:].strip()
    if not num or unit not in UNITS:
        raise argparse.ArgumentTypeError("bad size %r (use e.g. 4, 1K, 64M, 1G)" % text)
    return int(num) * UNITS[unit]


def parse_sizes(text):
    sizes = [parse_size(s) for s in text.split(",") if s.strip()]
    for s in sizes:
        if s < 4 or s % 4:
            raise argparse.ArgumentTypeError("size %d is not a positive multiple of 4 (f32)" % s)
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, args, init_method, results):
    """One peer. Rank 0 puts its per-size results on `results`; every rank puts ("error", ...)
    on failure."""
    try:
        import datetime
        import torch
        import torch.distributed as dist

        # Peers share 2 cores: keep torch's own thread pool out of the way of gloo's I/O.
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=init_method, rank=rank,
                                world_size=args.peers,
                                timeout=datetime.timedelta(seconds=args.op_timeout))
        n = args.peers
        # One buffer of the largest size, written now (so every page is faulted in before any
        # timing); smaller sizes use a prefix of it.
        big = torch.empty(max(args.bytes) // 4, dtype=torch.float32)
        big.fill_(1.0)
        times = torch.zeros(args.iters, dtype=torch.float64)
        mine = float(rank + 1)
        expect = float(n * (n + 1) // 2)
        for nbytes in args.bytes:
            buf = big.narrow(0, 0, nbytes // 4)
            for it in range(args.warmup + args.iters):
                buf.fill_(mine)
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                t1 = time.perf_counter()
                if it == 0:
                    got = (buf[0].item(), buf[-1].item())
                    if got != (expect, expect):
                        raise RuntimeError("wrong sum at %d bytes: %r, expected %r"
                                           % (nbytes, got, expect))
                if it >= args.warmup:
                    times[it - args.warmup] = t1 - t0
            # A call lasts until its slowest rank is done.
            dist.all_reduce(times, op=dist.ReduceOp.MAX)
            if rank == 0:
                med = statistics.median(times.tolist())
                busbw = nbytes * 2.0 * (n - 1) / n / med / 1e9
                results.put(("ok", {"impl": "gloo", "peers": n, "bytes": nbytes,
                                    "median_s": med, "busbw_GBps": busbw,
                                    "min_s": min(times.tolist()),
                                    "max_s": max(times.tolist()), "iters": args.iters,
                                    "torch": torch.__version__}))
        dist.barrier()
        dist.destroy_process_group()
        results.put(("done", rank))
    except BaseException as e:  # report every failure to the parent, then exit non-zero
        results.put(("error", "rank %d: %s: %s" % (rank, type(e).__name__, e)))
        traceback.print_exc(file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=2)
    ap.add_argument("--bytes", type=parse_sizes, default=parse_sizes("4,1M,64M,256M"),
                    help="comma list of sizes in bytes; suffixes K, M, G (binary)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="whole run, seconds; the ranks are killed past it")
    ap.add_argument("--op-timeout", type=float, default=300.0,
                    help="gloo's own timeout for one collective, seconds")
    ap.add_argument("--no-malloc-fix", dest="malloc_fix", action="store_false",
                    help="leave glibc malloc as is (large temporaries then come from fresh "
                         "mmaps and pay page faults on every call)")
    ap.add_argument("--rank", type=int, default=None,
                    help="run only this rank, in this process (peers on several hosts); "
                         "needs --init-addr")
    ap.add_argument("--init-addr", default=None,
                    help="HOST:PORT where rank 0 meets the others (with --rank)")
    args = ap.parse_args()
    if args.peers < 2 or args.iters < 1 or args.warmup < 0:
        ap.error("need --peers >= 2, --iters >= 1, --warmup >= 0")
    if (args.rank is None) != (args.init_addr is None):
        ap.error("--rank and --init-addr go together")
    if args.rank is not None and not 0 <= args.rank < args.peers:
        ap.error("--rank must be 0..peers-1")

    # Children inherit these at exec (spawn start method).
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.malloc_fix:
        # glibc serves allocations above 32 MiB with a fresh mmap each time, so any scratch the
        # library allocates per call pays ~10 us per page. Keep the heap instead: the strongest
        # baseline, matching what mpi_allreduce.c does with mallopt.
        os.environ["GLIBC_TUNABLES"] = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=%d" % (
            1 << 40)

    if args.rank is not None:
        return one_rank(args)

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, args, "tcp://127.0.0.1:%d" % port, results),
                         daemon=True)
             for r in range(args.peers)]

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    status = 0
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + args.timeout
        done = set()
        while len(done) < args.peers:
            left = deadline - time.monotonic()
            if left <= 0:
                print("gloo_allreduce: timed out after %.0f s" % args.timeout, file=sys.stderr)
                status = 1
                break
            try:
                kind, payload = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    print("gloo_allreduce: rank %d exited with %d" % (procs.index(dead[0]),
                          dead[0].exitcode), file=sys.stderr)
                    status = 1
                    break
                continue
            if kind == "ok":
                print(json.dumps(payload), flush=True)
            elif kind == "done":
                done.add(payload)
            else:
                print("gloo_allreduce: %s" % payload, file=sys.stderr)
                status = 1
                break
    finally:
        for p in procs:
            p.join(timeout=5 if status == 0 else 0.1)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return status


def one_rank(args):
    """--rank: this process is one peer; prints rank 0's results. Bounded by --timeout."""
    if args.malloc_fix and os.environ.get("GLOO_ALLREDUCE_REEXEC") is None:
        # GLIBC_TUNABLES is read at start-up: re-execute once with it set.
        os.environ["GLOO_ALLREDUCE_REEXEC"] = "1"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    # The default action ends the process even while it is blocked inside gloo.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, int(args.timeout)))
    results = queue.Queue()
    try:
        worker(args.rank, args, "tcp://" + args.init_addr, results)
    except SystemExit:
        pass
    status = 0
    while not results.empty():
        kind, payload = results.get()
        if kind == "ok":
            print(json.dumps(payload), flush=True)
        elif kind == "error":
            print("gloo_allreduce: %s" % payload, file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
