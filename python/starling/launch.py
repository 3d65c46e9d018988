"""Start N peers of a run, in the manner of torchrun.

    python3 -m starling.launch --peers 4 train.py --lr 0.1
    python3 -m starling.launch --peers 4 --coordinator 10.0.0.1:7000 train.py   # join

Without ``--coordinator`` an in-process coordinator listens on ``--listen`` (default
127.0.0.1:0, a free port). Each child runs ``python3 script.py args...`` with:

  STARLING_COORD      coordinator "HOST:PORT"
  STARLING_RUN        run name (--run, default "default")
  STARLING_SECRET     shared secret (--secret, else inherited STARLING_SECRET, else a
                      random one when the coordinator is local)
  STARLING_RANK_HINT  this child's index, --rank-offset + 0..N-1 (a hint for logs and data
                      sharding; the ring rank is decided by the coordinator at each epoch)
  STARLING_PEERS      the expected member count (--world, default N), used as min_peers
                      by Communicator.from_env()

The launcher waits for every child (peers may die and the others carry on: that is the
point of starling), then exits with the status of the first child that failed (128+signal
for a signal), or 0. With ``--fail-fast`` the first failure terminates the others.
Ctrl-C (or SIGTERM) terminates every child: SIGTERM, then SIGKILL after 5 s.
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import List, Optional


def _parse(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m starling.launch",
                                description="Start N starling peers running a script.")
    p.add_argument("--peers", type=int, default=1, help="processes to start here (N)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="join this coordinator instead of starting one")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where the local coordinator listens (default 127.0.0.1:0)")
    p.add_argument("--run", default=os.environ.get("STARLING_RUN", "default"),
                   help="run name")
    p.add_argument("--secret", default=None, help="shared secret (default: $STARLING_SECRET)")
    p.add_argument("--world", type=int, default=None,
                   help="expected members across all machines (STARLING_PEERS; default N)")
    p.add_argument("--rank-offset", type=int, default=0,
                   help="first STARLING_RANK_HINT (for several machines)")
    p.add_argument("--timeout-ms", type=int, default=None,
                   help="the local coordinator's failure-detection timeout")
    p.add_argument("--fail-fast", action="store_true",
                   help="terminate the other children when one fails")
    p.add_argument("script", help="Python script each peer runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    a = p.parse_args(argv)
    if a.peers < 1:
        p.error("--peers must be at least 1")
    return a


def _status(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def _terminate(procs: List[subprocess.Popen], grace_s: float = 5.0) -> None:
    for pr in procs:
        if pr.poll() is None:
            pr.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for pr in procs:
        try:
            pr.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pr.kill()
            pr.wait()


def main(argv: Optional[List[str]] = None) -> int:
    a = _parse(sys.argv[1:] if argv is None else argv)
    secret = a.secret or os.environ.get("STARLING_SECRET")
    coord = None
    if a.coordinator:
        if not secret:
            print("starling.launch: --coordinator needs --secret or STARLING_SECRET",
                  file=sys.stderr)
            return 2
        address = a.coordinator
    else:
        from .comm import Config, Coordinator
        secret = secret or secrets.token_hex(16)
        cfg = Config(timeout_ms=a.timeout_ms) if a.timeout_ms else None
        coord = Coordinator(a.listen, a.run, secret, cfg)
        address = coord.address
        print(f"starling.launch: coordinator on {address}, run '{a.run}', "
              f"{a.peers} peers", file=sys.stderr, flush=True)

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = dict(os.environ)
    base["PYTHONPATH"] = os.pathsep.join(
        [pkg_parent] + [x for x in base.get("PYTHONPATH", "").split(os.pathsep) if x])
    base.update(STARLING_COORD=address, STARLING_RUN=a.run, STARLING_SECRET=secret,
                STARLING_PEERS=str(a.world or a.peers))

    procs: List[subprocess.Popen] = []
    first_failure = 0

    def on_term(signum, frame):  # SIGTERM behaves as Ctrl-C
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        for i in range(a.peers):
            env = dict(base, STARLING_RANK_HINT=str(a.rank_offset + i))
            procs.append(subprocess.Popen([sys.executable, a.script] + a.args, env=env))
        running = list(procs)
        while running:
            for pr in list(running):
                rc = pr.poll()
                if rc is None:
                    continue
                running.remove(pr)
                if rc != 0:
                    print(f"starling.launch: peer {procs.index(pr) + a.rank_offset} "
                          f"(pid {pr.pid}) exited with status {_status(rc)}",
                          file=sys.stderr, flush=True)
                    if not first_failure:
                        first_failure = _status(rc)
                        if a.fail_fast:
                            _terminate(running)
            time.sleep(0.05)
    except KeyboardInterrupt:
        _terminate(procs)
        first_failure = first_failure or 130
    finally:
        signal.signal(signal.SIGTERM, old)
        if coord is not None:
            coord.close()
    return first_failure


if __name__ == "__main__":
    sys.exit(main())
