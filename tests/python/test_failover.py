"""Coordinator failover with real processes on loopback: an active `starling coordinator`,
a standby (`--standby-of`) that watches it, and peer processes that know both
("A,B": tried in order, the next one whenever the connection is lost or refused).

- The active is SIGKILLed while three peers all-reduce: no collective fails, the standby
  promotes itself ("promoted" on its stderr), admits a newcomer, and the epoch it forms
  (term + 1 in the high 32 bits) is above every one the old active formed.
- The coordinators are partitioned from each other (a relay in this process carries the
  standby's watch connection, then swallows every byte): the standby promotes itself but
  the peers stay with the active, so the standby must not form an epoch, even for a peer
  that only it can see, while the active goes on forming epochs with its majority. No
  epoch number ever names two memberships.
- The active is SIGSTOPped (frozen, not dead): the standby promotes itself, the peers and
  a newcomer go to it; once resumed, the deposed active (no standby, none of its members)
  forms no epoch for another newcomer and, after a timeout without quorum, becomes the
  standby of the one that took over and sends it on
  to the standby.

The peers are this file run as a script (`test_failover.py worker SPEC`, SPEC a JSON
object): each reports JSON lines on stdout, one per event (a new epoch with its members
in rank order, learnt by an all-gather of the peers' ids; each topology point; the end).
Every wait is bounded; every process is killed (by its own id) in a `finally` block.
"""
import ctypes
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

np = pytest.importorskip("numpy")

HERE = os.path.abspath(os.path.dirname(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PKG = os.path.join(ROOT, "python")
if PKG not in sys.path:
    sys.path.insert(0, PKG)

import starling  # noqa: E402
from starling.errors import Invalid, StarlingError  # noqa: E402


def _cli_path():
    """<build>/tools/starling, as tests/integration/run_scenario.py finds it: the build
    directory is the one holding $STARLING_LIB (<build>/src/libstarling.so; ctest sets
    it), else the checkout's build/."""
    lib = os.environ.get("STARLING_LIB")
    if lib:
        build = os.path.dirname(os.path.dirname(os.path.abspath(lib)))
        path = os.path.join(build, "tools", "starling")
        if os.access(path, os.X_OK):
            return path
    return os.path.join(ROOT, "build", "tools", "starling")


STARLING = _cli_path()
SECRET_VAR = "STARLING_FAILOVER_TEST_SECRET"
SECRET = "failover-s3cret"
TIMEOUT_MS = 1000       # coordinators' and peers' failure detection
COUNT = 1024            # elements per all-reduce
OPS_PER_POINT = 5       # all-reduces between two topology points
PAUSE_S = 0.02          # after each all-reduce
LISTENING = re.compile(r"coordinator listening on 127\.0\.0\.1:(\d+)")

pytestmark = pytest.mark.skipif(not os.access(STARLING, os.X_OK),
                                reason=f"starling CLI not built ({STARLING})")


# ------------------------------------------------------------------ the peer processes

def emit(obj):
    """One JSON line in one write(2)."""
    os.write(1, (json.dumps(obj) + "\n").encode())


def _create(spec, config, until):
    """A Communicator, retrying errors other than a bad argument until `until`."""
    last = None
    while True:
        try:
            return starling.Communicator(spec["coord"], spec["run"], SECRET, config), None
        except Invalid:
            raise
        except StarlingError as e:
            last = e
        if time.monotonic() > until:
            return None, last
        time.sleep(0.1)


def worker_stream(spec):
    """All-reduces of known values; every OPS_PER_POINT of them a topology point:
    update_topology, then an all-gather of [id, stop] that gives the epoch's members in
    rank order and makes the stop decision collective (the stop file exists, or this
    peer's deadline passed). Member `id` contributes arange(COUNT) * (id + 1) + j for the
    epoch's j-th all-reduce, so every result is known exactly from the members."""
    wid = spec["id"]
    t0 = time.monotonic()
    deadline = t0 + spec["deadline_s"]
    config = starling.Config(timeout_ms=TIMEOUT_MS, op_timeout_ms=spec["op_timeout_ms"],
                             min_peers=spec["min_peers"], name=f"w{wid}")
    comm, err = _create(spec, config, t0 + 10)
    if comm is None:
        emit({"ev": "done", "id": wid, "ok": False, "why": f"create: {err!r}"})
        return 1
    emit({"ev": "up", "id": wid})
    base = np.arange(COUNT, dtype=np.float32)
    errors = []          # every exception: [where, class, message]
    coll_fail = 0        # collectives (all-reduce, all-gather) that raised
    topo_fail = 0        # update_topology calls that raised
    bad = 0              # all-reduce results that were not the exact sum
    iters = points = 0
    last = None          # [epoch, j, sha1 of the result] of the last all-reduce
    epoch_seen = None
    while True:
        while True:  # the topology point
            try:
                comm.update_topology()
                break
            except StarlingError as e:
                topo_fail += 1
                errors.append(["update_topology", type(e).__name__, e.message])
                if time.monotonic() > deadline:
                    emit({"ev": "done", "id": wid, "ok": False, "why": "deadline in "
                          "update_topology", "errors": errors})
                    return 1
        points += 1
        stop = int(os.path.exists(spec["stop_file"]) or time.monotonic() > deadline)
        try:
            g = comm.allgather(np.array([wid, stop], np.int32))
        except StarlingError as e:
            coll_fail += 1
            errors.append(["allgather", type(e).__name__, e.message])
            continue
        epoch, size, rank = comm.epoch, comm.size, comm.rank
        members = [int(v) for v in g[:, 0]]
        if members[rank] != wid or len(members) != size:
            errors.append(["allgather", "wrong", f"{members} rank {rank} size {size}"])
        if epoch != epoch_seen:
            epoch_seen = epoch
            emit({"ev": "epoch", "id": wid, "epoch": epoch, "size": size, "rank": rank,
                  "members": members, "t": time.monotonic() - t0})
        emit({"ev": "topo", "id": wid, "point": points, "epoch": epoch, "size": size,
              "iters": iters})
        if int(g[:, 1].sum()) > 0:
            break
        total = sum(m + 1 for m in members)
        for j in range(OPS_PER_POINT):
            x = base * (wid + 1) + j
            try:
                comm.allreduce(x, "sum")
            except StarlingError as e:
                coll_fail += 1
                errors.append(["allreduce", type(e).__name__, e.message])
                break
            if not np.array_equal(x, base * total + size * j):
                bad += 1
            last = [epoch, j, hashlib.sha1(x.tobytes()).hexdigest()]
            iters += 1
            time.sleep(PAUSE_S)
    emit({"ev": "done", "id": wid, "ok": True, "epoch": comm.epoch, "size": comm.size,
          "iters": iters, "points": points, "bad": bad, "coll_fail": coll_fail,
          "topo_fail": topo_fail, "errors": errors, "last": last})
    comm.close()
    return 0


def worker_lone(spec):
    """A peer that can reach only one coordinator: it is created (retrying while that
    coordinator refuses it), then calls update_topology once and reports what happened."""
    wid = spec["id"]
    t0 = time.monotonic()
    config = starling.Config(timeout_ms=TIMEOUT_MS, op_timeout_ms=spec["op_timeout_ms"],
                             min_peers=spec["min_peers"], name=f"w{wid}")
    comm, err = _create(spec, config, t0 + spec["create_s"])
    if comm is None:
        emit({"ev": "lone", "id": wid, "created": False, "cls": type(err).__name__,
              "msg": err.message})
        return 0
    t1 = time.monotonic()
    out = {"ev": "lone", "id": wid, "created": True, "create_s": t1 - t0}
    try:
        comm.update_topology()
    except StarlingError as e:
        out.update(joined=False, cls=type(e).__name__, msg=e.message)
    else:
        out.update(joined=True, epoch=comm.epoch, size=comm.size, rank=comm.rank)
        emit({"ev": "epoch", "id": wid, "epoch": comm.epoch, "size": comm.size,
              "rank": comm.rank, "members": None, "t": time.monotonic() - t0})
    out["topo_s"] = time.monotonic() - t1
    emit(out)
    comm.close()
    return 0


# ------------------------------------------------------------------ the test's side

def _die_with_parent():
    """Child side of Popen: SIGKILL when the test process goes away."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Proc:
    """A child process: stdout read line by line on a thread, stderr to a file."""

    def __init__(self, tmp, name, argv, env):
        self.name = name
        self.err_path = os.path.join(str(tmp), name + ".err")
        self.lines = []
        self._lock = threading.Lock()
        with open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=err, env=env,
                                          start_new_session=True,
                                          preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.popen.stdout:
            with self._lock:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def stdout(self):
        with self._lock:
            return list(self.lines)

    def events(self, ev=None):
        out = []
        for line in self.stdout():
            if line.startswith("{"):
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                if ev is None or o.get("ev") == ev:
                    out.append(o)
        return out

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.popen.poll() is None

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(2)

    def describe(self, tail=25):
        rc = self.popen.poll()
        err = "\n".join(self.stderr().splitlines()[-tail:])
        out = "\n".join(self.stdout()[-tail:])
        return (f"--- {self.name} (pid {self.popen.pid}, rc {rc})\n"
                f"stdout (last lines):\n{out}\nstderr (last lines):\n{err}")


class Cluster:
    """The processes of one test; describe() for failure messages, close() kills all."""

    def __init__(self, tmp, run):
        self.tmp, self.run = tmp, run
        self.procs = []
        self.stop_file = os.path.join(str(tmp), "stop")
        self.env = dict(os.environ)
        self.env[SECRET_VAR] = SECRET
        self.env["PYTHONPATH"] = os.pathsep.join(
            [PKG] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self.env.setdefault("STARLING_LOG_LEVEL", "info")

    def coordinator(self, name, min_peers, extra=()):
        argv = [STARLING, "coordinator", "--listen", "127.0.0.1:0", "--run", self.run,
                "--secret-env", SECRET_VAR, "--timeout-ms", str(TIMEOUT_MS),
                "--min-peers", str(min_peers)] + list(extra)
        p = Proc(self.tmp, name, argv, self.env)
        self.procs.append(p)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            for line in p.stdout():
                m = LISTENING.search(line)
                if m:
                    p.address = f"127.0.0.1:{m.group(1)}"
                    return p
            if not p.alive():
                time.sleep(0.1)  # let the reader drain the last lines
                if any(LISTENING.search(x) for x in p.stdout()):
                    continue
                pytest.fail(f"{name} exited before listening ({' '.join(argv)}):\n"
                            + p.describe())
            time.sleep(0.02)
        pytest.fail(f"{name} did not print 'coordinator listening on ...' in 10 s:\n"
                    + p.describe())

    def worker(self, name, mode, **spec):
        spec.update(mode=mode, run=self.run, stop_file=self.stop_file)
        argv = [sys.executable, os.path.abspath(__file__), "worker", json.dumps(spec)]
        p = Proc(self.tmp, name, argv, self.env)
        self.procs.append(p)
        return p

    def pair_and_three(self, op_timeout_ms):
        """Active A, its standby B, and three stream workers given "A,B" that have formed
        an epoch and passed two more topology points, with B having heard it."""
        a = self.coordinator("A", 3)
        b = self.coordinator("B", 3, ["--standby-of", a.address])
        coords = f"{a.address},{b.address}"
        time.sleep(0.3)  # B attaches to A
        peers = [self.worker(f"w{i}", "stream", id=i, coord=coords, min_peers=3,
                             op_timeout_ms=op_timeout_ms, deadline_s=40) for i in range(3)]
        self.wait("the first epoch, then two more topology points", lambda: all(
            len(p.events("topo")) >= 3 for p in peers), 15, peers + [a, b])
        time.sleep(1.0)  # B has heard the epoch
        return a, b, coords, peers

    def wait_takeover(self, b, peers, before):
        """B promotes itself and the peers pass two more topology points through it."""
        self.wait("B's 'promoted'", lambda: "promoted" in b.stderr(), 10, peers + [b])
        self.wait("the survivors' topology points through B", lambda: all(
            len(p.events("topo")) >= before[p.name] + 2 for p in peers), 15, peers + [b])

    def stop(self):
        with open(self.stop_file, "w") as f:
            f.write("stop\n")

    def wait(self, what, pred, timeout, must_live=()):
        end = time.monotonic() + timeout
        while True:
            if pred():
                return
            for p in must_live:
                if not p.alive():
                    time.sleep(0.2)
                    if pred():
                        return
                    pytest.fail(f"{p.name} died while waiting for {what}\n" + self.describe())
            if time.monotonic() > end:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n"
                            + self.describe())
            time.sleep(0.05)

    def describe(self):
        return "\n".join(p.describe() for p in self.procs)

    def close(self):
        for p in self.procs:
            p.kill()


def last_event(p, ev):
    evs = p.events(ev)
    return evs[-1] if evs else None


def done(p):
    return last_event(p, "done") is not None


def check_epochs_unique(procs):
    """Every epoch number names one membership (size, members in rank order) in every
    report; returns {epoch: (size, members)}."""
    table = {}
    for p in procs:
        for e in p.events("epoch"):
            members = tuple(e["members"]) if e["members"] is not None else None
            table.setdefault(e["epoch"], set()).add((e["size"], members, p.name))
    merged, clashes = {}, {}
    for epoch, seen in table.items():
        sizes = {s for s, _, _ in seen}
        lists = {m for _, m, _ in seen if m is not None}
        if len(sizes) > 1 or len(lists) > 1:
            clashes[epoch] = sorted(seen, key=str)
        merged[epoch] = (sizes.pop() if len(sizes) == 1 else sizes,
                         lists.pop() if len(lists) == 1 else lists)
    assert not clashes, f"epoch numbers naming two memberships (split brain): {clashes}"
    for epoch, (size, members) in merged.items():
        if members:
            assert len(members) == size and len(set(members)) == size, (epoch, size, members)
    return merged


def check_finished_cleanly(stream, expect_size, cluster):
    """Every stream worker ended normally: no exception at all, exact results, the same
    final epoch, size and last result."""
    outs = {}
    for p in stream:
        d = last_event(p, "done")
        assert d is not None, f"{p.name} never reported\n" + cluster.describe()
        assert d["ok"], f"{p.name}: {d}\n" + cluster.describe()
        assert d["coll_fail"] == 0 and d["topo_fail"] == 0 and not d["errors"], \
            f"{p.name} saw exceptions: {d['errors']}\n" + cluster.describe()
        assert d["bad"] == 0, f"{p.name}: {d['bad']} inexact all-reduce results"
        assert d["iters"] > 0 and d["last"] is not None, d
        outs[p.name] = d
    finals = {(d["epoch"], d["size"], tuple(d["last"])) for d in outs.values()}
    assert len(finals) == 1, f"the workers ended apart: {outs}"
    epoch, size, _ = finals.pop()
    assert size == expect_size, outs
    return epoch, outs


def term(epoch):
    return epoch >> 32


# ------------------------------------------------------------------ the tests

def test_standby_rejects_a_bad_active_address():
    p = subprocess.run([STARLING, "coordinator", "--listen", "127.0.0.1:0", "--run", "x",
                        "--standby-of", "not-an-address"], capture_output=True, text=True,
                       timeout=10, env=dict(os.environ, STARLING_SECRET=SECRET),
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)  # the CLI's usage error
    assert "unknown option" not in p.stderr, p.stderr  # the option exists
    assert "--standby-of" in p.stderr and "not-an-address" in p.stderr, p.stderr
    assert "coordinator listening" not in p.stdout


def test_standby_takes_over_when_the_active_dies(tmp_path):
    c = Cluster(tmp_path, "failover-kill")
    try:
        a, b, coords, peers = c.pair_and_three(op_timeout_ms=15000)
        before = {p.name: len(p.events("topo")) for p in peers}
        epoch_before = max(e["epoch"] for p in peers for e in p.events("epoch"))
        assert all(last_event(p, "topo")["size"] == 3 for p in peers)
        assert "promoted" not in b.stderr(), "B promoted while A was alive\n" + b.describe()

        a.popen.send_signal(signal.SIGKILL)  # mid-stream
        a.popen.wait(5)
        c.wait_takeover(b, peers, before)
        newcomer = c.worker("w3", "stream", id=3, coord=coords, min_peers=3,
                            op_timeout_ms=15000, deadline_s=30)
        everyone = peers + [newcomer]
        c.wait("every worker in an epoch of 4", lambda: all(
            (last_event(p, "topo") or {}).get("size") == 4 for p in everyone), 15,
            everyone + [b])
        c.wait("two more topology points", lambda: all(
            len([t for t in p.events("topo") if t["size"] == 4]) >= 3 for p in everyone),
            10, everyone + [b])
        c.stop()
        c.wait("the workers to finish", lambda: all(done(p) for p in everyone), 20)

        final, outs = check_finished_cleanly(everyone, 4, c)
        table = check_epochs_unique(everyone)
        assert final > epoch_before, (final, epoch_before)
        assert term(final) == term(epoch_before) + 1, \
            f"epoch {final:#x} formed by the promoted standby is not in term " \
            f"{term(epoch_before) + 1} (the active's epoch was {epoch_before:#x})"
        assert table[final][0] == 4 and sorted(table[final][1]) == [0, 1, 2, 3], table
        # Every epoch after the kill came from B's term: B formed them, above A's.
        for epoch in table:
            assert epoch <= epoch_before or term(epoch) == term(epoch_before) + 1, table
        # The survivors ran through the failover without a gap in their stream.
        for p in peers:
            assert outs[p.name]["iters"] > outs["w3"]["iters"], outs
        assert a.popen.returncode == -signal.SIGKILL
        assert b.alive(), b.describe()
    finally:
        c.close()


class BlackholeRelay:
    """127.0.0.1:port -> 127.0.0.1:target. Once partition() is called, every byte in
    either direction is swallowed and new connections are accepted but never answered:
    both ends keep an open, silent connection (a partition, not a closed socket)."""

    def __init__(self, target):
        self.target = target
        self.blackhole = False
        self.stop = False
        self.connections = 0
        self.forwarded = 0
        self.swallowed = 0
        self.socks = []
        self.lock = threading.Lock()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def partition(self):
        self.blackhole = True

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stop:
            try:
                cl, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            cl.settimeout(None)
            with self.lock:
                self.socks.append(cl)
            if self.blackhole:
                self._spawn(self._pipe, cl, None)
                continue
            try:
                sv = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                cl.close()
                continue
            sv.settimeout(None)
            for x in (cl, sv):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.socks.append(sv)
                self.connections += 1
            self._spawn(self._pipe, cl, sv)
            self._spawn(self._pipe, sv, cl)

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.blackhole or dst is None:
                    self.swallowed += len(data)
                    continue
                dst.sendall(data)
                self.forwarded += len(data)
        except OSError:
            pass
        # Across the partition not even a close gets through: the other end stays open
        # and silent (A dropping its silent standby must not tell B anything).
        for x in (src,) if self.blackhole and not self.stop else (src, dst):
            if x is not None:
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        with self.lock:
            socks = list(self.socks)
        for x in socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)
        for x in socks:
            x.close()
        self.lsock.close()


def test_partitioned_coordinators_never_share_an_epoch_number(tmp_path):
    c = Cluster(tmp_path, "failover-partition")
    relay = None
    try:
        a = c.coordinator("A", 3)
        relay = BlackholeRelay(int(a.address.rsplit(":", 1)[1]))
        # min_peers 1 on B: only the fence (a majority of the last epoch B heard of) can
        # keep it from forming an epoch for the one peer it sees.
        b = c.coordinator("B", 1, ["--standby-of", relay.address])
        coords = f"{a.address},{b.address}"
        time.sleep(0.3)
        peers = [c.worker(f"w{i}", "stream", id=i, coord=coords, min_peers=3,
                          op_timeout_ms=15000, deadline_s=40) for i in range(3)]
        c.wait("the first epoch, then two more topology points", lambda: all(
            len(p.events("topo")) >= 3 for p in peers), 15, peers + [a, b])
        time.sleep(1.0)  # B has attached and heard the epoch
        assert relay.connections >= 1 and relay.forwarded > 0, \
            "B never watched A through the relay\n" + c.describe()
        first = {(e["epoch"], e["size"]) for p in peers for e in p.events("epoch")}
        assert len(first) == 1 and first.pop()[1] == 3, first

        relay.partition()
        c.wait("B's 'promoted' (it hears A no more)", lambda: "promoted" in b.stderr(), 10,
               peers + [a, b])
        # The peers never lost A: they are still with it, B has none of them.
        lone = c.worker("w9", "lone", id=9, coord=b.address, min_peers=1,
                        op_timeout_ms=3000, create_s=5)
        newcomer = c.worker("w3", "stream", id=3, coord=coords, min_peers=3,
                            op_timeout_ms=15000, deadline_s=30)
        everyone = peers + [newcomer]
        c.wait("every A,B worker in an epoch of 4 (A's majority admits the newcomer)",
               lambda: all((last_event(p, "topo") or {}).get("size") == 4
                           for p in everyone), 15, everyone + [a, b])
        c.wait("the B-only peer's report", lambda: last_event(lone, "lone") is not None,
               15, [a, b])
        c.wait("two more topology points", lambda: all(
            len([t for t in p.events("topo") if t["size"] == 4]) >= 3 for p in everyone),
            10, everyone + [a, b])
        c.stop()
        c.wait("the workers to finish", lambda: all(done(p) for p in everyone), 20)

        rep = last_event(lone, "lone")
        assert rep["created"], f"B (promoted) did not admit the peer: {rep}\n" + c.describe()
        assert not rep["joined"], \
            f"B formed an epoch without a majority of the last one it heard of: {rep}\n" \
            + c.describe()
        assert rep["cls"] == "Timeout", rep
        assert not lone.events("epoch")

        final, outs = check_finished_cleanly(everyone, 4, c)
        table = check_epochs_unique(everyone + [lone])
        epochs = sorted(table)
        assert table[final][0] == 4 and sorted(table[final][1]) == [0, 1, 2, 3], table
        assert table[epochs[0]][0] == 3 and final > epochs[0], table
        # Every epoch anyone saw is A's: none is in B's term.
        assert {term(e) for e in epochs} == {term(epochs[0])}, \
            {hex(e): v for e, v in table.items()}
        assert a.alive() and b.alive(), c.describe()
        assert relay.swallowed > 0  # the watch connection was really cut, not closed
    finally:
        c.close()
        if relay is not None:
            relay.close()


EPOCH_LINE = re.compile(r"\bepoch (\d+): (\d+) members:")


def proc_state(p):
    """The state letter of /proc/PID/stat ('T': stopped), None once it is gone."""
    try:
        with open(f"/proc/{p.popen.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_frozen_active_stays_deposed_after_it_resumes(tmp_path):
    """The active is SIGSTOPped (frozen, not dead: its listening socket still completes TCP
    connects, it just never answers): the standby promotes itself, the peers move to it
    without a failed collective, and a newcomer is admitted (after its connect to the
    frozen A times out). Then A is resumed: it has no standby and none of its old members,
    so it must form no epoch for a new peer, only send it (after a timeout without
    quorum) to B, which takes it into its term's epochs, and become B's standby."""
    c = Cluster(tmp_path, "failover-frozen")
    a = None
    try:
        a, b, coords, peers = c.pair_and_three(op_timeout_ms=20000)
        epoch_before = max(e["epoch"] for p in peers for e in p.events("epoch"))
        assert all(last_event(p, "topo")["size"] == 3 for p in peers)
        assert "promoted" not in b.stderr(), "B promoted while A was alive\n" + b.describe()
        b_term = term(epoch_before) + 1

        a.popen.send_signal(signal.SIGSTOP)  # mid-stream; frozen, not dead
        c.wait("A stopped", lambda: proc_state(a) == "T", 5, [a])
        t_stop = time.monotonic()
        before = {p.name: len(p.events("topo")) for p in peers}
        c.wait("B's 'promoted'", lambda: "promoted" in b.stderr(), 10, peers + [b])
        t_promoted = time.monotonic() - t_stop
        c.wait_takeover(b, peers, before)

        # A newcomer while A is frozen: its connect to A completes, the handshake never
        # does; after a bounded wait it goes on to B.
        w3 = c.worker("w3", "stream", id=3, coord=coords, min_peers=3,
                      op_timeout_ms=20000, deadline_s=35)
        four = peers + [w3]
        c.wait("every worker in an epoch of 4 (A frozen)", lambda: all(
            (last_event(p, "topo") or {}).get("size") == 4 for p in four), 15, four + [b])
        c.wait("two more topology points of 4", lambda: all(
            len([t for t in p.events("topo") if t["size"] == 4]) >= 3 for p in four),
            10, four + [b])
        assert proc_state(a) == "T", "A was not stopped all along\n" + c.describe()
        epoch4 = last_event(w3, "topo")["epoch"]
        assert term(epoch4) == b_term, (hex(epoch4), hex(epoch_before))

        # A is resumed: deposed, with no standby and none of its members any more.
        a_log_before = a.stderr()  # A wrote nothing while stopped
        a.popen.send_signal(signal.SIGCONT)
        t_cont = time.monotonic()
        c.wait("A running again", lambda: proc_state(a) not in ("T", None), 5, [a])
        w4 = c.worker("w4", "stream", id=4, coord=coords, min_peers=3,
                      op_timeout_ms=20000, deadline_s=30)
        everyone = four + [w4]
        c.wait("every worker in an epoch of 5 (A refuses w4, B admits it)", lambda: all(
            (last_event(p, "topo") or {}).get("size") == 5 for p in everyone), 20,
            everyone + [a, b])
        t_five = time.monotonic() - t_cont
        # A, a timeout without quorum, dials its former standby, hears it answer as the
        # active, and becomes its standby; w4 is refused either way (by A without quorum,
        # or by A as a standby, depending on when it arrives).
        c.wait("A deposed, now B's standby, in its log", lambda: "deposed: the coordinator"
               in a.stderr()[len(a_log_before):], 5, [a])
        assert any(why in a.stderr()[len(a_log_before):] for why in (
            "coordinator without quorum", "standby: the active coordinator")), \
            "A did not refuse w4:\n" + a.stderr()[len(a_log_before):]
        c.wait("two more topology points of 5", lambda: all(
            len([t for t in p.events("topo") if t["size"] == 5]) >= 3 for p in everyone),
            10, everyone + [a, b])
        c.stop()
        c.wait("the workers to finish", lambda: all(done(p) for p in everyone), 20)

        a_log = a.stderr()
        assert a_log.startswith(a_log_before), "A's log was rewritten?"
        after = a_log[len(a_log_before):]
        formed_after = [m.group(0) for m in EPOCH_LINE.finditer(after)]
        assert not formed_after, \
            f"the resumed (deposed) A sent epochs: {formed_after}\n--- A after SIGCONT:\n" \
            f"{after}\n" + c.describe()
        a_epochs = {int(m.group(1)) for m in EPOCH_LINE.finditer(a_log_before)}
        assert a_epochs and max(a_epochs) <= epoch_before, (a_epochs, epoch_before)

        final, outs = check_finished_cleanly(everyone, 5, c)
        table = check_epochs_unique(everyone)
        assert term(final) == b_term, \
            f"final epoch {final:#x} is not in B's term {b_term} (A's last {epoch_before:#x})"
        assert table[final][0] == 5 and sorted(table[final][1]) == [0, 1, 2, 3, 4], table
        assert table[epoch4][0] == 4 and sorted(table[epoch4][1]) == [0, 1, 2, 3], table
        # After the freeze every epoch is B's; w3 and w4 never saw one of A's.
        for epoch in table:
            assert epoch <= epoch_before or term(epoch) == b_term, \
                {hex(e): v for e, v in table.items()}
        for p in (w3, w4):
            assert {term(e["epoch"]) for e in p.events("epoch")} == {b_term}, p.events("epoch")
        assert not set(a_epochs) & {e for e in table if term(e) == b_term}
        for p in peers:
            assert outs[p.name]["iters"] > outs["w3"]["iters"] > outs["w4"]["iters"], outs
        assert a.alive() and b.alive(), c.describe()
        assert t_promoted < 5 and t_five < 15, (t_promoted, t_five)
    finally:
        if a is not None and a.alive():
            try:
                a.popen.send_signal(signal.SIGCONT)
            except OSError:
                pass
        c.close()

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        SPEC = json.loads(sys.argv[2])
        sys.exit({"stream": worker_stream, "lone": worker_lone}[SPEC["mode"]](SPEC))
    sys.exit("usage: test_failover.py worker SPEC")
