"""A peer started by python3 -m starling.launch in the multi-process tests and the
benchmark. Prints one JSON line on success. Usage: peer_worker.py MODE [args]."""
import json
import os
import signal
import sys
import time

import numpy as np

import starling


def emit(obj):
    """One JSON line in one write(2): peers share the launcher's stdout pipe."""
    os.write(1, (json.dumps(obj) + "\n").encode())


def vm_hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def join():
    comm = starling.Communicator.from_env(starling.Config(timeout_ms=1000,
                                                          op_timeout_ms=30000))
    comm.update_topology()
    return comm, int(os.environ["STARLING_RANK_HINT"])


def mode_kill():
    """Hint 2 SIGKILLs itself before iteration 5; the others see PeerLost, update the
    topology and do 10 more all-reduces among the survivors."""
    comm, hint = join()
    it = lost = after = 0
    msg = ""
    r = None
    while after < 10:
        if hint == 2 and it == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        x = np.full(1000, hint + 1, np.float32)
        try:
            r = comm.allreduce(x, "sum")
        except starling.PeerLost as e:
            assert (x == hint + 1).all(), "input changed by a failed collective"
            lost += 1
            msg = e.message
            while True:
                try:
                    comm.update_topology()
                    break
                except starling.PeerLost:
                    continue
            continue
        it += 1
        if lost:
            after += 1
        time.sleep(0.01)
    emit({"hint": hint, "size": comm.size, "epoch": comm.epoch, "lost": lost,
                      "iters": it, "value": float(r[0]), "msg": msg})
    comm.close()


def mode_mem(nbytes):
    """Peak-RSS growth during 256 MiB all-reduces, buffers allocated (and touched) first:
    in place (the library reduces into a whole-buffer scratch so that a failed collective
    leaves the input unchanged, as from C), then out-of-place into a caller's `out` (the
    library writes straight into it). The Python layer must add no copy to either."""
    comm, hint = join()
    comm.allreduce(np.ones(1 << 20, np.float32))  # warm the data plane
    a = np.full(nbytes // 4, hint + 1, np.float32)
    out = np.full(nbytes // 4, -1, np.float32)
    base = vm_hwm_bytes()
    comm.allreduce(a, "sum")
    mid = vm_hwm_bytes()
    ok = bool(a[0] == a[-1] == 3)
    a[:] = hint + 1
    comm.allreduce(a, "sum", out=out)  # the scratch above is still held by the library
    end = vm_hwm_bytes()
    ok = ok and bool(out[0] == out[-1] == 3 and a[0] == hint + 1)
    emit({"hint": hint, "inplace_ratio": (mid - base) / nbytes,
                      "out_ratio": (end - mid) / nbytes, "ok": ok})
    comm.close()


def mode_bench(nbytes, iters):
    comm, hint = join()
    a = np.ones(nbytes // 4, np.float32)
    comm.allreduce(a)  # warm-up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        comm.allreduce(a)
        times.append(time.perf_counter() - t)
    n = comm.size
    if comm.rank == 0:
        med = sorted(times)[len(times) // 2]
        emit({"peers": n, "bytes": nbytes, "median_s": med,
                          "min_s": min(times),
                          "busbw_GBps": 2 * (n - 1) / n * nbytes / med / 1e9})
    comm.close()


if __name__ == "__main__":
    m = sys.argv[1]
    if m == "kill":
        mode_kill()
    elif m == "mem":
        mode_mem(int(sys.argv[2]))
    elif m == "bench":
        mode_bench(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {m}")
