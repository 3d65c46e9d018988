#!/usr/bin/python3
"""All-reduces while the (only) coordinator is frozen (docs/results.md).

4 peer processes all-reduce 1 MiB of f32 in a loop; after 3 s the coordinator is
SIGSTOPped and stays frozen. Collectives do not need the coordinator, but each peer keeps
trying to re-register with it, and an attempt against a frozen process (its listening
socket still accepts) takes up to timeout/2. Printed: all-reduces before and during the
freeze, median and slowest. Give it the checkout (with its build/) to measure, so two
builds can be compared side by side:

  bench/frozen_coordinator.py [ROOT ...]      (default: this checkout)
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = 9.0
FREEZE_AT = 3.0


def peer(coord):
    import numpy as np
    import starling
    c = starling.Communicator(coord, run="frozen", secret="frozen-bench",
                              config=starling.Config(timeout_ms=1000, op_timeout_ms=60000,
                                                     min_peers=4))
    c.update_topology()
    times = []
    end = time.time() + SECONDS
    while True:
        # Stop together: one peer leaving would fail the others' next collective.
        if c.allreduce(np.array([float(time.time() > end)], np.float32), "max")[0] > 0:
            break
        x = np.ones(1 << 18, np.float32)
        a = time.time()
        c.allreduce(x, "sum")
        times.append((a, time.time() - a))
    print(json.dumps(times))
    c.close()


def measure(root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, STARLING_SECRET="frozen-bench", PYTHONPATH=root + "/python",
               STARLING_LIB=root + "/build/src/libstarling.so", STARLING_LOG_LEVEL="error")
    coord = subprocess.Popen([root + "/build/tools/starling", "coordinator", "--listen",
                              "127.0.0.1:%d" % port, "--run", "frozen", "--timeout-ms", "1000",
                              "--min-peers", "4"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env)
    coord.stdout.readline()
    peers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--peer",
                               "127.0.0.1:%d" % port], stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(4)]
    time.sleep(FREEZE_AT)
    frozen = time.time()
    coord.send_signal(signal.SIGSTOP)
    try:
        outs = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in peers]
    finally:
        coord.send_signal(signal.SIGCONT)
        coord.kill()
        for p in peers:
            p.kill()
    before = [d for o in outs for (a, d) in o if a < frozen]
    during = [d for o in outs for (a, d) in o if a >= frozen]
    span = max(a + d for o in outs for (a, d) in o) - frozen
    print("%s: before the freeze %d all-reduces, median %.1f ms; coordinator frozen: %d "
          "all-reduces in %.1f s (%.0f/s), median %.1f ms, slowest %.0f ms"
          % (root, len(before) // 4, 1e3 * statistics.median(before), len(during) // 4, span,
             len(during) / 4 / span, 1e3 * statistics.median(during), 1e3 * max(during)))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--peer":
        peer(sys.argv[2])
        return
    for root in sys.argv[1:] or [HERE]:
        measure(os.path.abspath(root))


if __name__ == "__main__":
    main()
