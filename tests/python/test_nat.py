"""Peers that accept no inbound connections (Config(inbound=False): behind a NAT or a
firewall), mixed with peers that do, on loopback.

Such a "closed" peer registers with data port 0 and opens both of its ring links itself
(to its right neighbour as usual, and a reversed link, HELLO role ROLE_DATA_REV, to its
left one). The coordinator admits at most n/2 of them into an epoch of n >= 2 (the
surplus waits in update_topology, newcomers first), orders the ring so that no two are
neighbours, and the other members do not measure their links to them.

- Four members, two closed, created in orders that would make the two closed ones
  neighbours in join order: one epoch of 4, no two closed neighbours, every collective of
  the Python API exact (1 and 2 streams per link).
- A ring of two, one closed (it dials the other twice): all-reduce exact.
- Surplus: two closed peers alone form no epoch; with one open peer, an epoch of 2 forms
  and the other closed peer waits (and the coordinator says so); when a second open peer
  arrives, all four are admitted.
- A closed member (a subprocess) SIGKILLed while the group all-reduces: the survivors
  (one of them closed) see PeerLost, update the topology and all-reduce exactly; an open
  member SIGKILLed so that the survivors have too few open members: one closed survivor
  waits, the other two go on.
- Config(inbound=...) takes only a bool; STARLING_INBOUND.
- measure_links in a mixed group: nobody measures a link to a closed member; with ring
  order "measured" the reordered ring still keeps closed members apart.

In-process members are driven by one thread each (update_topology and collectives are
collective, blocking calls); every join and wait is bounded; every communicator,
coordinator and process is closed or killed in a `finally` block.
"""
import ctypes
import json
import logging
import os
import re
import signal
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
from starling.errors import Invalid, PeerLost  # noqa: E402

SECRET = "nat-s3cret"
TIMEOUT_MS = 1000       # failure detection, coordinator and peers
OP_TIMEOUT_MS = 20000   # bounds every blocking call of the library
JOIN_S = 30.0           # bounds every thread join of these tests
COUNT = 300_001         # f32 elements: more than one 1 MiB chunk, odd


# ------------------------------------------------------------------ helpers

def coordinator(run, **cfg):
    return starling.Coordinator(run=run, secret=SECRET,
                                config=starling.Config(timeout_ms=TIMEOUT_MS, **cfg))


def communicator(coord, run, closed, name, min_peers, op_timeout_ms=OP_TIMEOUT_MS, **cfg):
    """A peer of `run`; closed: Config(inbound=False), else Config(inbound=True)."""
    config = starling.Config(timeout_ms=TIMEOUT_MS, op_timeout_ms=op_timeout_ms,
                             min_peers=min_peers, name=name, inbound=not closed, **cfg)
    return starling.Communicator(coord, run, SECRET, config)


_RUNNERS = []  # every Runner of the running test, joined (bounded) by close_all


class Runner:
    """Calls fn on a thread; join() is bounded and re-raises the thread's exception."""

    def __init__(self, fn, *args, name="member"):
        _RUNNERS.append(self)
        self.result = None
        self.error = None
        self.name = name
        self.thread = threading.Thread(target=self._body, args=(fn,) + args, daemon=True,
                                       name=name)
        self.thread.start()

    def _body(self, fn, *args):
        try:
            self.result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised by join()
            self.error = e

    def alive(self):
        return self.thread.is_alive()

    def join(self, timeout=JOIN_S):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name} did not finish in {timeout:.0f} s"
        if self.error is not None:
            raise self.error
        return self.result


def run_all(comms, fn, timeout=JOIN_S):
    """fn(comm, i) on one thread per communicator, at once; the results in order."""
    rs = [Runner(fn, c, i, name=f"member {i}") for i, c in enumerate(comms)]
    deadline = time.monotonic() + timeout
    for r in rs:
        r.thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [r.name for r in rs if r.alive()]
    assert not stuck, f"{stuck} did not finish in {timeout:.0f} s"
    for r in rs:
        if r.error is not None:
            raise r.error
    return [r.result for r in rs]


def close_all(comms, coord=None):
    """Closes every communicator, then the coordinator; first waits (bounded: a blocked
    call ends at the op timeout) for the threads still inside a call of theirs (one
    thread at a time per communicator)."""
    end = time.monotonic() + OP_TIMEOUT_MS / 1000 + 5
    while _RUNNERS:
        _RUNNERS.pop().thread.join(max(0.0, end - time.monotonic()))
    for c in comms:
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - best effort in finally
                pass
    if coord is not None:
        coord.close()


def wait_until(what, pred, timeout):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def update_until_joined(comm):
    """update_topology, again while it raises PeerLost (as starling.h says)."""
    for _ in range(20):
        try:
            comm.update_topology()
            return
        except PeerLost:
            continue
    pytest.fail("update_topology raised PeerLost 20 times")


def closed_by_rank(comms, closed):
    """[closed?] indexed by rank (every communicator in one epoch)."""
    size = comms[0].size
    out = [None] * size
    for c, k in zip(comms, closed):
        assert out[c.rank] is None, f"two members of rank {c.rank}"
        out[c.rank] = k
    assert None not in out, out
    return out


def assert_no_adjacent_closed(by_rank):
    n = len(by_rank)
    if n < 2:
        return
    pairs = [(r, (r + 1) % n) for r in range(n) if by_rank[r] and by_rank[(r + 1) % n]]
    assert not pairs, f"closed members are ring neighbours at ranks {pairs}: ring {by_rank}"


def assert_one_epoch(comms, size):
    """comms (all of the epoch's members, or some of them) share one epoch of `size`."""
    got = [(c.epoch, c.size) for c in comms]
    assert len({e for e, _ in got}) == 1 and all(s == size for _, s in got), got
    ranks = sorted(c.rank for c in comms)
    if len(comms) == size:
        assert ranks == list(range(size)), ranks
    else:
        assert len(set(ranks)) == len(ranks) and all(0 <= r < size for r in ranks), ranks


def exact_allreduce(comms, count=COUNT, streams_note=""):
    """Every member contributes arange*(rank+1) + rank; the f32 sum is exact."""
    base = np.arange(count, dtype=np.float32)
    size = comms[0].size

    def body(c, i):
        x = base * (c.rank + 1) + c.rank
        r = c.allreduce(x, "sum")
        assert r is x
        return x
    want = base * (size * (size + 1) // 2) + size * (size - 1) // 2
    for x in run_all(comms, body):
        np.testing.assert_array_equal(x, want, err_msg=f"all-reduce {streams_note}")


DATA_PLANE = re.compile(r"^(\S+): registered with \S+, data plane on [^\s]+:(\d+)")


def data_ports(messages):
    """{member name: its data plane's listening port}, from the members' log lines."""
    out = {}
    for m in messages:
        hit = DATA_PLANE.match(m)
        if hit:
            out[hit.group(1)] = int(hit.group(2))
    return out


def accepted_on(port):
    """How many established TCP connections (IPv4 and IPv6) have local port `port`: the
    connections a member's data plane accepted (its own dials use ephemeral ports)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def check_nothing_dialled_in(messages, comms, closed, names, streams):
    """No connection was accepted on a closed member's data plane; an open member of rank
    r accepted `streams` from its left neighbour (its right link) and, if the member of
    rank r+1 is closed, `streams` more from it (the reversed link)."""
    ports = data_ports(messages)
    assert set(names) <= set(ports), (names, ports)
    by_rank = closed_by_rank(comms, closed)
    n = len(by_rank)
    got = {name: accepted_on(ports[name]) for name in names}
    want = {}
    for c, name, k in zip(comms, names, closed):
        want[name] = 0 if k else streams * (1 + int(by_rank[(c.rank + 1) % n]))
    assert got == want, f"connections accepted on each data plane: {got}, expected " \
                        f"{want} (ring {by_rank}, streams {streams})"


# ------------------------------------------------------------------ 1. four, two closed

# The order the members are created (and registered) in: "C" closed, "O" open. In join
# order, "CCOO" and "OCCO" would make the closed ones neighbours (and "OOCC" wraps round).
@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("pattern", ["CCOO", "OCCO", "OOCC", "COCO"])
def test_mixed_four_every_collective(streams, pattern, caplog):
    caplog.set_level(logging.INFO, logger="starling")
    run = f"nat-mixed-{pattern}-{streams}"
    closed = [ch == "C" for ch in pattern]
    names = [f"{run}-{'c' if k else 'o'}{i}" for i, k in enumerate(closed)]
    coord = coordinator(run)
    comms = []
    try:
        for name, k in zip(names, closed):
            comms.append(communicator(coord, run, k, name, 4, streams=streams))
        run_all(comms, lambda c, i: c.update_topology())
        assert_one_epoch(comms, 4)
        by_rank = closed_by_rank(comms, closed)
        assert sum(by_rank) == 2
        assert_no_adjacent_closed(by_rank)
        note = f"(pattern {pattern}, streams {streams}, ring {by_rank})"

        exact_allreduce(comms, streams_note=note)
        check_nothing_dialled_in(caplog.messages, comms, closed, names, streams)
        base = np.arange(COUNT, dtype=np.float32)

        def collectives(c, i):
            n, r = c.size, c.rank
            out = {}
            # int64 min / max, out-of-place
            v = np.arange(1000, dtype=np.int64) * (r + 1) - 500 * r
            mx = c.allreduce(v, "max", out=np.empty_like(v))
            mn = c.allreduce(v, "min", out=np.empty_like(v))
            out["minmax"] = (mx, mn)
            # broadcast from every rank, f32 of more than one chunk
            out["bcast"] = []
            for src in range(n):
                b = base + 1000 * r
                c.broadcast(b, src)
                out["bcast"].append(b)
            # all-gather of (rank, closed, name hash)
            g = c.allgather(np.array([r, int(closed[i]), i], np.int32))
            out["gather"] = g
            # reduce-scatter: block k of member r is arange(count) + 10*k + r
            cnt = 4099
            d = np.stack([np.arange(cnt, dtype=np.float32) + 10 * k + r for k in range(n)])
            out["rs"] = c.reduce_scatter(d, "sum")
            c.barrier()
            # asynchronous all-reduce
            a = base * (r + 1)
            req = c.allreduce_async(a, "sum")
            assert req.wait() is a
            out["async"] = a
            # robust all-reduce (an all-gather on the ring, then the same rule everywhere)
            rb = (np.arange(513, dtype=np.float32) % 11) + r
            out["robust"] = c.robust_allreduce(rb, "median", f=1).copy()
            out["robust_in"] = (np.arange(513, dtype=np.float32) % 11) + r
            # shared state: the closed member of rank 0.. differs, the majority wins
            w = np.arange(777, dtype=np.float32)
            if r == 1:
                w[::5] += 3
            c.register("w", w)
            out["changed"] = c.sync()
            out["hash"] = c.state_hash()
            out["w"] = w.copy()
            c.unregister("w")
            return r, out

        res = run_all(comms, collectives)
        n = 4
        ranks = [r for r, _ in res]
        v = [np.arange(1000, dtype=np.int64) * (r + 1) - 500 * r for r in range(n)]
        robust_in = np.stack([(np.arange(513, dtype=np.float32) % 11) + r for r in range(n)])
        robust_want = starling.Aggregator("median").aggregate(robust_in, f=1)
        hashes = set()
        for r, out in res:
            mx, mn = out["minmax"]
            np.testing.assert_array_equal(mx, np.max(v, axis=0), err_msg=note)
            np.testing.assert_array_equal(mn, np.min(v, axis=0), err_msg=note)
            for src, b in enumerate(out["bcast"]):
                np.testing.assert_array_equal(b, base + 1000 * src,
                                              err_msg=f"broadcast from {src} {note}")
            g = out["gather"]
            assert g.shape == (n, 3)
            assert list(g[:, 0]) == list(range(n)), g
            assert [bool(k) for k in g[:, 1]] == by_rank, (g, by_rank)
            want_rs = sum(np.arange(4099, dtype=np.float32) + 10 * r + m for m in range(n))
            np.testing.assert_array_equal(out["rs"], want_rs, err_msg=f"reduce_scatter {note}")
            np.testing.assert_array_equal(out["async"], base * 10, err_msg=note)
            np.testing.assert_array_equal(out["robust"], robust_want, err_msg=note)
            assert out["changed"] == (r == 1), (r, out["changed"])
            np.testing.assert_array_equal(out["w"], np.arange(777, dtype=np.float32))
            hashes.add(out["hash"])
        assert sorted(ranks) == list(range(n))
        assert len(hashes) == 1, hashes
        # the epoch is intact after all that
        exact_allreduce(comms, count=1001, streams_note=note)
    finally:
        close_all(comms, coord)


# ------------------------------------------------------------------ 2. ring of two

@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("closed_first", [True, False])
def test_two_members_one_closed(streams, closed_first, caplog):
    caplog.set_level(logging.INFO, logger="starling")
    run = f"nat-two-{closed_first}-{streams}"
    closed = [closed_first, not closed_first]
    names = [f"{run}-m{i}" for i in range(2)]
    coord = coordinator(run)
    comms = []
    try:
        for name, k in zip(names, closed):
            comms.append(communicator(coord, run, k, name, 2, streams=streams))
        run_all(comms, lambda c, i: c.update_topology())
        assert_one_epoch(comms, 2)
        for _ in range(3):
            exact_allreduce(comms, streams_note=f"(ring of 2, streams {streams})")
        check_nothing_dialled_in(caplog.messages, comms, closed, names, streams)

        def bcast(c, i):
            b = np.full(70_000, float(c.rank + 7), np.float64)
            c.broadcast(b, 1)
            return b
        for b in run_all(comms, bcast):
            assert (b == 8.0).all()
    finally:
        close_all(comms, coord)


def test_two_closed_form_no_epoch_a_lone_one_may():
    """Two closed peers (min_peers 2) never form an epoch together: both wait (Timeout at
    their op timeout). A closed peer alone (min_peers 1) forms an epoch of 1."""
    run = "nat-two-closed"
    coord = coordinator(run)
    comms = []
    try:
        for i in range(2):
            comms.append(starling.Communicator(coord, run, SECRET, starling.Config(
                timeout_ms=TIMEOUT_MS, op_timeout_ms=2500, min_peers=2, name=f"c{i}",
                inbound=False)))
        rs = [Runner(c.update_topology, name=f"c{i}") for i, c in enumerate(comms)]
        time.sleep(1.5)
        assert all(r.alive() for r in rs), "two closed peers formed an epoch together"
        for r in rs:
            with pytest.raises(starling.Timeout):
                r.join(10)
        assert all(c.size == 0 for c in comms), [c.size for c in comms]
        close_all(comms)
        comms = []
        lone = communicator(coord, run, True, "lone", 1)
        comms.append(lone)
        Runner(lone.update_topology, name="lone").join(10)
        assert (lone.size, lone.rank) == (1, 0)
        x = np.arange(10, dtype=np.float32)
        lone.allreduce(x)
        np.testing.assert_array_equal(x, np.arange(10, dtype=np.float32))
    finally:
        close_all(comms, coord)


# ------------------------------------------------------------------ 3. surplus waits

def test_surplus_closed_waits_for_an_open_member(caplog):
    caplog.set_level(logging.INFO, logger="starling")
    run = "nat-surplus"
    coord = coordinator(run)
    comms = []
    try:
        c1 = communicator(coord, run, True, "c1", 2)
        c2 = communicator(coord, run, True, "c2", 2)
        comms += [c1, c2]
        r1 = Runner(c1.update_topology, name="c1")
        r2 = Runner(c2.update_topology, name="c2")
        time.sleep(1.5)  # longer than the failure timeout
        assert r1.alive() and r2.alive(), \
            "two closed peers formed an epoch without a member that accepts connections"
        wait_until("the coordinator's 'wait for more members that accept connections'",
                   lambda: any("wait for more members that accept connections" in m
                               for m in caplog.messages), 5)

        o1 = communicator(coord, run, False, "o1", 2)
        comms.append(o1)
        ro1 = Runner(o1.update_topology, name="o1")
        wait_until("an epoch of 2 (o1 and one closed peer)",
                   lambda: not ro1.alive() and (not r1.alive() or not r2.alive()), 10)
        ro1.join(1)
        time.sleep(0.5)
        assert r1.alive() != r2.alive(), \
            f"c1 {'blocked' if r1.alive() else 'returned'}, " \
            f"c2 {'blocked' if r2.alive() else 'returned'}: expected exactly one admitted"
        (cin, rin), (cout, rout) = ((c1, r1), (c2, r2)) if not r1.alive() else \
            ((c2, r2), (c1, r1))
        rin.join(1)
        assert_one_epoch([o1, cin], 2)
        assert cout.size == 0, cout.size  # not a member of anything yet
        exact_allreduce([o1, cin], streams_note="(epoch of 2, one closed waiting)")
        assert rout.alive(), "the surplus closed peer returned without an open member"
        msgs = [m for m in caplog.messages if "wait for more members" in m]
        assert any("1 of them wait" in m for m in msgs), msgs

        # A second open member: the members call update_topology (a topology point), the
        # newcomer too; the closed peer still waiting is admitted with it.
        o2 = communicator(coord, run, False, "o2", 2)
        comms.append(o2)
        ro2 = Runner(o2.update_topology, name="o2")
        time.sleep(0.3)
        assert rout.alive() and ro2.alive(), "admitted before the members' topology point"
        run_all([o1, cin], lambda c, i: c.update_topology())
        ro2.join(10)
        rout.join(10)
        four = [c1, c2, o1, o2]
        assert_one_epoch(four, 4)
        by_rank = closed_by_rank(four, [True, True, False, False])
        assert_no_adjacent_closed(by_rank)
        exact_allreduce(four, streams_note=f"(ring {by_rank})")
    finally:
        close_all(comms, coord)


def test_surplus_newcomer_waits_at_a_topology_point():
    """A running epoch of 2 (one open, one closed); a closed newcomer arrives and the
    members hit a topology point: the newcomer is not admitted (the epoch of 2 stays, the
    members go on), and it is once an open newcomer comes at the next point."""
    run = "nat-surplus-later"
    coord = coordinator(run)
    comms = []
    try:
        o1 = communicator(coord, run, False, "o1", 2)
        c1 = communicator(coord, run, True, "c1", 2)
        comms += [o1, c1]
        run_all([o1, c1], lambda c, i: c.update_topology())
        assert_one_epoch([o1, c1], 2)
        epoch2 = o1.epoch
        c2 = communicator(coord, run, True, "c2", 1)
        comms.append(c2)
        rc2 = Runner(c2.update_topology, name="c2")
        time.sleep(0.3)
        run_all([o1, c1], lambda c, i: c.update_topology())
        assert_one_epoch([o1, c1], 2)
        exact_allreduce([o1, c1], streams_note="(the closed newcomer waits)")
        time.sleep(0.5)
        assert rc2.alive(), f"the closed newcomer returned (size {c2.size})"
        o2 = communicator(coord, run, False, "o2", 1)
        comms.append(o2)
        ro2 = Runner(o2.update_topology, name="o2")
        time.sleep(0.3)
        run_all([o1, c1], lambda c, i: c.update_topology())
        ro2.join(10)
        rc2.join(10)
        four = [o1, c1, c2, o2]
        assert_one_epoch(four, 4)
        assert o1.epoch > epoch2
        assert_no_adjacent_closed(closed_by_rank(four, [False, True, True, False]))
        exact_allreduce(four)
    finally:
        close_all(comms, coord)


# ------------------------------------------------------------------ 4. SIGKILL

def _die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_victim(spec):
    """A member in its own process: joins, then all-reduces its part (as the in-process
    members do) until it is killed; reports each completed all-reduce on stdout."""
    config = starling.Config(timeout_ms=TIMEOUT_MS, op_timeout_ms=OP_TIMEOUT_MS,
                             min_peers=spec["min_peers"], name=spec["name"],
                             inbound=spec["inbound"])
    comm = starling.Communicator(spec["coord"], spec["run"], SECRET, config)
    comm.update_topology()
    ids = comm.allgather(np.array([spec["wid"]], np.int32))
    print(json.dumps({"ev": "joined", "rank": comm.rank, "size": comm.size,
                      "ids": [int(v) for v in ids[:, 0]]}), flush=True)
    base = np.arange(spec["count"], dtype=np.float32)
    j = 0
    while True:
        x = base * (spec["wid"] + 1) + j
        comm.allreduce(x, "sum")
        print(json.dumps({"ev": "op", "j": j}), flush=True)
        j += 1
        if spec.get("idle"):
            time.sleep(3600)
        time.sleep(0.01)


def spawn_victim(tmp_path, **spec):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PKG] + [p for p in [env.get("PYTHONPATH")] if p])
    err = open(os.path.join(str(tmp_path), f"{spec['name']}.err"), "wb")
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "victim",
                          json.dumps(spec)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=err, env=env,
                         start_new_session=True, preexec_fn=_die_with_parent)
    err.close()
    p.lines = []
    p.err_path = err.name

    def read():
        for raw in p.stdout:
            p.lines.append(raw.decode(errors="replace").rstrip("\n"))
    p.reader = threading.Thread(target=read, daemon=True)
    p.reader.start()
    return p


def kill(p):
    if p is not None and p.poll() is None:
        p.kill()
    if p is not None:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def victim_log(p):
    try:
        with open(p.err_path, "rb") as f:
            err = f.read().decode(errors="replace")
    except OSError:
        err = ""
    return "stdout:\n" + "\n".join(p.lines[-10:]) + "\nstderr:\n" + "\n".join(
        err.splitlines()[-20:])


def stream_member(comm, wid, state, after_target, count=20_011):
    """All-reduces of arange*(wid+1) + j (j counts the epoch's all-reduces, the same on
    every member) until `after_target` of them succeeded after a PeerLost; on PeerLost:
    update_topology (again while PeerLost), then an all-gather of the wids gives the new
    membership. Every result is checked exactly."""
    base = np.arange(count, dtype=np.float32)
    ids = [int(v) for v in comm.allgather(np.array([wid], np.int32))[:, 0]]
    out = {"lost": 0, "bad": [], "after": 0, "before": 0, "sizes": [len(ids)],
           "msgs": []}
    j = 0
    while out["after"] < after_target:
        x = base * (wid + 1) + j
        try:
            comm.allreduce(x, "sum")
        except PeerLost as e:
            np.testing.assert_array_equal(x, base * (wid + 1) + j)  # unchanged
            out["lost"] += 1
            out["msgs"].append(e.message)
            while True:
                update_until_joined(comm)
                try:
                    ids = [int(v) for v in comm.allgather(np.array([wid], np.int32))[:, 0]]
                    break
                except PeerLost as e2:
                    out["msgs"].append(e2.message)
            out["sizes"].append(len(ids))
            j = 0
            continue
        want = base * sum(m + 1 for m in ids) + len(ids) * j
        if not np.array_equal(x, want):
            out["bad"].append((len(ids), j))
        if out["lost"]:
            out["after"] += 1
        else:
            out["before"] += 1
        state[wid] = state.get(wid, 0) + 1
        j += 1
        time.sleep(0.005)
    out["size"], out["epoch"], out["rank"] = comm.size, comm.epoch, comm.rank
    return out


def test_closed_member_sigkilled_mid_run(tmp_path):
    """Members 0, 1 (open), 2 (closed) in this process, 3 (closed) a subprocess; 3 is
    SIGKILLed while all four all-reduce: the three survivors see PeerLost, update the
    topology and go on, exactly, in an epoch of 3 in which the closed one has two open
    neighbours."""
    run = "nat-kill-closed"
    coord = coordinator(run)
    comms = []
    victim = None
    try:
        closed = [False, False, True]
        for wid, k in enumerate(closed):
            comms.append(communicator(coord, run, k, f"w{wid}", 4))
        victim = spawn_victim(tmp_path, coord=coord.address, run=run, name="w3", wid=3,
                              inbound=False, min_peers=4, count=20_011)
        run_all(comms, lambda c, i: c.update_topology(), timeout=20)
        assert_one_epoch(comms, 4)
        state = {}
        rs = [Runner(stream_member, c, wid, state, 10, name=f"w{wid}")
              for wid, c in enumerate(comms)]
        wait_until("five all-reduces of four", lambda: all(
            state.get(w, 0) >= 5 for w in range(3)) or not all(r.alive() for r in rs), 20)
        assert victim.poll() is None, "the victim died early\n" + victim_log(victim)
        assert any(json.loads(x).get("ev") == "joined" and json.loads(x)["size"] == 4
                   for x in victim.lines if x.startswith("{")), victim_log(victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        outs = [r.join(JOIN_S) for r in rs]
        for wid, o in enumerate(outs):
            assert o["lost"] >= 1, (wid, o)
            assert o["before"] >= 5, (wid, o)
            assert not o["bad"], (wid, o)
            assert o["size"] == 3 and o["sizes"][0] == 4 and o["sizes"][-1] == 3, (wid, o)
        assert len({o["epoch"] for o in outs}) == 1, outs
        assert_no_adjacent_closed(closed_by_rank(comms, closed))
        exact_allreduce(comms)
    finally:
        kill(victim)
        close_all(comms, coord)


def test_open_member_sigkilled_leaves_a_closed_survivor_waiting(tmp_path):
    """Members 0 (open), 1 and 2 (closed) in this process, 3 (open) a subprocess, which is
    SIGKILLed between two collectives. Of the survivors, one open and two closed, at most
    one closed may stay (they must not be neighbours): an epoch of 2 forms, and the other
    closed survivor waits in update_topology."""
    run = "nat-kill-open"
    coord = coordinator(run)
    comms = []
    victim = None
    try:
        closed = [False, True, True]
        for wid, k in enumerate(closed):
            # the closed survivor left out waits in update_topology until its op timeout
            comms.append(communicator(coord, run, k, f"w{wid}", 4, op_timeout_ms=8000))
        victim = spawn_victim(tmp_path, coord=coord.address, run=run, name="w3", wid=3,
                              inbound=True, min_peers=4, count=1000, idle=True)
        run_all(comms, lambda c, i: c.update_topology(), timeout=20)
        assert_one_epoch(comms, 4)

        def first(c, wid):
            c.allgather(np.array([wid], np.int32))
            x = np.arange(1000, dtype=np.float32) * (wid + 1)
            c.allreduce(x, "sum")
            return x
        for x in run_all(comms, first):
            np.testing.assert_array_equal(x, np.arange(1000, dtype=np.float32) * 10)
        wait_until("the victim's all-reduce", lambda: any(
            '"op"' in x for x in victim.lines), 5)
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)

        def after(c, wid):
            x = np.ones(64, np.float32)
            with pytest.raises(PeerLost):
                c.allreduce(x, "sum")
            assert (x == 1).all()
            update_until_joined(c)
            return c.size
        rs = [Runner(after, c, wid, name=f"w{wid}") for wid, c in enumerate(comms)]
        wait_until("two survivors in a new epoch",
                   lambda: sum(not r.alive() for r in rs) >= 2, 20)
        time.sleep(1.5)
        left = [wid for wid, r in enumerate(rs) if r.alive()]
        assert len(left) == 1 and closed[left[0]], \
            f"still waiting: {left} (expected exactly one closed survivor)"
        members = [comms[w] for w in range(3) if w != left[0]]
        sizes = [rs[w].join(1) for w in range(3) if w != left[0]]
        assert sizes == [2, 2], sizes
        assert_one_epoch(members, 2)
        exact_allreduce(members, streams_note="(survivors: one open, one closed)")
        assert rs[left[0]].alive()
    finally:
        kill(victim)
        close_all(comms, coord)


# ------------------------------------------------------------------ 5. the setting

@pytest.mark.parametrize("bad", ["yes", 1, 0, "False", 1.0])
def test_inbound_takes_only_a_bool(bad):
    coord = coordinator("nat-cfg")
    try:
        with pytest.raises(Invalid, match="inbound"):
            starling.Communicator(coord, "nat-cfg", SECRET, starling.Config(inbound=bad))
    finally:
        coord.close()


def test_inbound_false_and_true_accepted():
    coord = coordinator("nat-cfg-ok")
    comms = []
    try:
        for k in (False, True, None):
            c = starling.Communicator(coord, "nat-cfg-ok", SECRET, starling.Config(
                inbound=k, min_peers=1, timeout_ms=TIMEOUT_MS, op_timeout_ms=5000))
            comms.append(c)
        assert "inbound=False" in repr(starling.Config(inbound=False))
    finally:
        close_all(comms, coord)


def test_starling_inbound_variable():
    from starling.env import inbound
    assert inbound({}) is None and inbound({"STARLING_INBOUND": " "}) is None
    assert inbound({"STARLING_INBOUND": "0"}) is False
    assert inbound({"STARLING_INBOUND": "1"}) is True
    for raw in ("yes", "false", "2"):
        with pytest.raises(Invalid, match="STARLING_INBOUND"):
            inbound({"STARLING_INBOUND": raw})


# ------------------------------------------------------------------ 6. measure_links

def test_measure_links_skips_the_closed_member():
    run = "nat-measure"
    closed = [False, True, False]
    coord = coordinator(run)
    comms = []
    try:
        for i, k in enumerate(closed):
            comms.append(communicator(coord, run, k, f"m{i}", 3))
        run_all(comms, lambda c, i: c.update_topology())
        assert_one_epoch(comms, 3)
        run_all(comms, lambda c, i: c.measure_links())
        assert_one_epoch(comms, 3)
        shut = comms[1].rank
        for i, c in enumerate(comms):
            others = [r for r in range(3) if r != c.rank]
            figures = {r: c.link(r) for r in others}
            if closed[i]:
                # it dials out: its links to the open members are measured
                assert all(figures[r] is not None for r in others), figures
            else:
                assert figures[shut] is None, \
                    f"member {i} measured its link to the closed member: {figures}"
                for r in others:
                    if r != shut:
                        assert figures[r] is not None, (i, figures)
            for r, f in figures.items():
                if f is not None:
                    assert f[0] > 1e6 and 0 < f[1] < 1.0, (i, r, f)
        exact_allreduce(comms)
    finally:
        close_all(comms, coord)


def test_measured_ring_order_keeps_closed_members_apart():
    run = "nat-measured"
    closed = [True, True, False, False, False]
    coord = coordinator(run, ring_order="measured")
    comms = []
    try:
        for i, k in enumerate(closed):
            comms.append(communicator(coord, run, k, f"m{i}", 5))
        run_all(comms, lambda c, i: c.update_topology())
        assert_one_epoch(comms, 5)
        assert_no_adjacent_closed(closed_by_rank(comms, closed))
        for _ in range(2):
            run_all(comms, lambda c, i: c.measure_links())
            assert_one_epoch(comms, 5)
            assert_no_adjacent_closed(closed_by_rank(comms, closed))
            exact_allreduce(comms)
    finally:
        close_all(comms, coord)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "victim":
        sys.exit(worker_victim(json.loads(sys.argv[2])))
    sys.exit("usage: test_nat.py victim SPEC")
