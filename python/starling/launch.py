"""Start N peers of a run, in the manner of torchrun.

    python3 -m starling.launch --peers 4 train.py --lr 0.1
    python3 -m starling.launch --peers 4 --coordinator 10.0.0.1:7000 train.py   # join

Without ``--coordinator`` an in-process coordinator listens on ``--listen`` (default
127.0.0.1:0, a free port). Each child runs ``python3 script.py args...`` with starling's
variables, read by ``starling.Communicator.from_env()``:

  STARLING_COORD      coordinator "HOST:PORT" (or "ACTIVE,STANDBY": see --coordinator)
  STARLING_RUN        run name (--run, default "default")
  STARLING_SECRET     shared secret (--secret, else inherited STARLING_SECRET, else a
                      random one when the coordinator is local)
  STARLING_RANK_HINT  this child's index, --rank-offset + 0..N-1 (a hint for logs and data
                      sharding; the ring rank is decided by the coordinator at each epoch)
  STARLING_PEERS      the expected member count (--world, default N), used as min_peers
                      by Communicator.from_env()
  STARLING_SECURITY   what every connection carries (--security aead|chacha20|none, else
                      inherited STARLING_SECURITY, else unset: the library's "aead"); the
                      local coordinator uses the same mode, and every member must agree

and torchrun's, so that torch code (``torch.distributed.init_process_group("gloo")`` with
``env://``, data samplers) runs unchanged:

  RANK                the same number as STARLING_RANK_HINT
  WORLD_SIZE          --world, default N
  LOCAL_RANK          this child's index on this machine, 0..N-1
  LOCAL_WORLD_SIZE    N
  MASTER_ADDR         --master-addr, else the coordinator's host (127.0.0.1 for 0.0.0.0)
  MASTER_PORT         --master-port, else a free port there. Never the coordinator's port:
                      torch's rank 0 binds MASTER_PORT for its TCPStore.

When joining a remote coordinator (``--coordinator``), MASTER_ADDR / MASTER_PORT come from
--master-addr / --master-port, else from the inherited environment (MASTER_ADDR defaults
to the coordinator's host); without a port MASTER_PORT is not set (torch's ``env://`` then
needs it: pass the same --master-port on every machine). --security then only reaches
the children: the remote coordinator must have been started with the same mode.

Every line a child writes to stdout or stderr is copied to the launcher's stdout or stderr
prefixed with ``[rank<RANK>]: `` (threads read the pipes line by line and flush each line;
a last line without a newline is completed with one; the children get PYTHONUNBUFFERED=1
unless it is set, so that their prints are not held back in a pipe buffer). ``--no-prefix``
leaves the children on the launcher's own stdout and stderr instead.

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
import socket
import subprocess
import sys
import threading
import time
from typing import BinaryIO, List, Optional

from .env import SECURITY_MODES, security
from .errors import Invalid


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
    p.add_argument("--security", choices=SECURITY_MODES, default=None,
                   help="encryption of every connection, for the local coordinator and "
                        "the children (STARLING_SECURITY; default: $STARLING_SECURITY, "
                        "else the library's, aead)")
    p.add_argument("--fail-fast", action="store_true",
                   help="terminate the other children when one fails")
    p.add_argument("--master-addr", default=None, metavar="HOST",
                   help="MASTER_ADDR for torch (default: the coordinator's host)")
    p.add_argument("--master-port", type=int, default=None, metavar="PORT",
                   help="MASTER_PORT for torch (default: a free port when the coordinator "
                        "is local, else inherited)")
    p.add_argument("--no-prefix", action="store_true",
                   help="do not prefix the children's output lines with [rankN]: ")
    p.add_argument("script", help="Python script each peer runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    a = p.parse_args(argv)
    if a.peers < 1:
        p.error("--peers must be at least 1")
    if a.world is not None and a.world < 1:
        p.error("--world must be at least 1")
    if a.master_port is not None and not 1 <= a.master_port <= 65535:
        p.error("--master-port must be in 1..65535")
    if a.security is None:
        try:
            a.security = security()  # inherited; None when unset
        except Invalid as e:
            p.error(f"{e.message} (or pass --security)")
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


class _Output:
    """Copies a child's pipes to the launcher's stdout/stderr, each line prefixed, from
    one thread per pipe. One lock for both, so that lines never interleave mid-line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: List[threading.Thread] = []

    def say(self, text: str) -> None:
        """The launcher's own line, on stderr."""
        with self.lock:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def follow(self, src: BinaryIO, dst: BinaryIO, prefix: bytes) -> None:
        t = threading.Thread(target=self._copy, args=(src, dst, prefix), daemon=True,
                             name="starling-launch-output")
        t.start()
        self.threads.append(t)

    def _copy(self, src: BinaryIO, dst: BinaryIO, prefix: bytes) -> None:
        broken = False
        try:
            for line in iter(src.readline, b""):
                if broken:
                    continue  # keep draining, so that the child never blocks on a write
                if not line.endswith(b"\n"):
                    line += b"\n"  # the last line, unterminated
                with self.lock:
                    try:
                        dst.write(prefix + line)
                        dst.flush()
                    except (OSError, ValueError):  # our stdout closed (| head)
                        broken = True
        finally:
            src.close()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Waits for the pipes to reach end of file (bounded: a grandchild may hold one)."""
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: Optional[List[str]] = None) -> int:
    a = _parse(sys.argv[1:] if argv is None else argv)
    secret = a.secret or os.environ.get("STARLING_SECRET")
    out = _Output()
    coord = None
    if a.coordinator:
        if not secret:
            out.say("starling.launch: --coordinator needs --secret or STARLING_SECRET")
            return 2
        address = a.coordinator  # "HOST:PORT", or the active's first then its standbys'
        coord_host, _, coord_port = address.split(",")[0].rpartition(":")
        master_addr = a.master_addr or os.environ.get("MASTER_ADDR") or coord_host
        master_port = a.master_port or (int(os.environ["MASTER_PORT"])
                                        if os.environ.get("MASTER_PORT", "").isdigit()
                                        else None)
    else:
        from .comm import Config, Coordinator
        secret = secret or secrets.token_hex(16)
        cfg = (Config(timeout_ms=a.timeout_ms or None, security=a.security)
               if a.timeout_ms or a.security else None)
        coord = Coordinator(a.listen, a.run, secret, cfg)
        address = coord.address
        coord_host, coord_port = coord.host, str(coord.port)
        master_addr = a.master_addr or ("127.0.0.1" if coord_host in ("0.0.0.0", "")
                                        else coord_host)
        master_port = a.master_port
        if master_port is None:
            master_port = _free_port(master_addr if a.master_addr is None else "0.0.0.0")
    same_host = coord is not None or master_addr == coord_host
    if master_port is not None and str(master_port) == coord_port and same_host:
        out.say(f"starling.launch: MASTER_PORT {master_port} is the coordinator's port; "
                f"torch's rank 0 binds MASTER_PORT: choose another --master-port")
        if coord is not None:
            coord.close()
        return 2
    if coord is not None:
        sec = f", security {a.security}" if a.security else ""
        out.say(f"starling.launch: coordinator on {address}, run '{a.run}'{sec}, "
                f"{a.peers} peers; MASTER_ADDR={master_addr} MASTER_PORT={master_port}")
    elif master_port is None:
        out.say("starling.launch: MASTER_PORT not set (no --master-port, none inherited): "
                "torch.distributed's env:// will not find its store")

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = dict(os.environ)
    base["PYTHONPATH"] = os.pathsep.join(
        [pkg_parent] + [x for x in base.get("PYTHONPATH", "").split(os.pathsep) if x])
    world = a.world or a.peers
    base.update(STARLING_COORD=address, STARLING_RUN=a.run, STARLING_SECRET=secret,
                STARLING_PEERS=str(world), WORLD_SIZE=str(world),
                LOCAL_WORLD_SIZE=str(a.peers), MASTER_ADDR=master_addr)
    if master_port is not None:
        base["MASTER_PORT"] = str(master_port)
    if a.security is not None:
        base["STARLING_SECURITY"] = a.security
    prefix = not a.no_prefix
    if prefix:
        base.setdefault("PYTHONUNBUFFERED", "1")

    procs: List[subprocess.Popen] = []
    first_failure = 0

    def on_term(signum, frame):  # SIGTERM behaves as Ctrl-C
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        for i in range(a.peers):
            rank = str(a.rank_offset + i)
            env = dict(base, STARLING_RANK_HINT=rank, RANK=rank, LOCAL_RANK=str(i))
            pipe = subprocess.PIPE if prefix else None
            pr = subprocess.Popen([sys.executable, a.script] + a.args, env=env,
                                  stdout=pipe, stderr=pipe)
            procs.append(pr)
            if prefix:
                tag = f"[rank{rank}]: ".encode()
                out.follow(pr.stdout, sys.stdout.buffer, tag)
                out.follow(pr.stderr, sys.stderr.buffer, tag)
        running = list(procs)
        while running:
            for pr in list(running):
                rc = pr.poll()
                if rc is None:
                    continue
                running.remove(pr)
                if rc != 0:
                    out.say(f"starling.launch: rank {procs.index(pr) + a.rank_offset} "
                            f"(pid {pr.pid}) exited with status {_status(rc)}")
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
        out.drain()
        if coord is not None:
            coord.close()
    return first_failure


if __name__ == "__main__":
    sys.exit(main())
