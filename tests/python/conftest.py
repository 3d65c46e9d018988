"""Shared fixtures: an in-process coordinator and groups of communicators driven by
threads (one thread per Communicator, as the C thread rule allows)."""
import os
import sys
import threading

import pytest

np = pytest.importorskip("numpy")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

import starling  # noqa: E402

JOIN_S = 30.0  # every wait in these tests is bounded


class Group:
    """N communicators of one run in this process; run(fn) calls fn(comm, i) on N threads
    at once and returns the N results (re-raising the first exception)."""

    def __init__(self, n, run="py", secret="s3cret", **cfg):
        self.n = n
        self.coord = starling.Coordinator(run=run, secret=secret,
                                          config=starling.Config(timeout_ms=1000))
        config = starling.Config(min_peers=n, timeout_ms=1000, op_timeout_ms=15000, **cfg)
        self.comms = [None] * n

        def join(_, i):
            c = starling.Communicator(self.coord, run, secret, config)
            c.update_topology()
            self.comms[i] = c
        self.run(join)
        assert sorted(c.rank for c in self.comms) == list(range(n))
        assert all(c.size == n for c in self.comms)

    def run(self, fn, timeout=JOIN_S):
        results = [None] * self.n
        errors = [None] * self.n

        def body(i):
            try:
                results[i] = fn(self.comms[i], i)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors[i] = e
        ts = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(self.n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout)
            assert not t.is_alive(), "group member did not finish in time"
        for e in errors:
            if e is not None:
                raise e
        return results

    def by_rank(self, values):
        """values indexed by member -> list indexed by rank."""
        out = [None] * self.n
        for i, c in enumerate(self.comms):
            out[c.rank] = values[i]
        return out

    def close(self):
        for c in self.comms:
            if c is not None:
                c.close()
        self.coord.close()


@pytest.fixture(scope="session")
def group3():
    g = Group(3)
    yield g
    g.close()


@pytest.fixture
def fresh_group():
    made = []

    def make(n, **kw):
        g = Group(n, run=f"fresh{len(made)}", **kw)
        made.append(g)
        return g
    yield make
    for g in made:
        g.close()


@pytest.fixture(scope="session")
def coord():
    c = starling.Coordinator(run="solo", secret="s3cret")
    yield c
    c.close()


@pytest.fixture
def lone_comm(coord):
    """A communicator that has not joined (no update_topology)."""
    c = starling.Communicator(coord, "solo", "s3cret",
                              starling.Config(min_peers=2, op_timeout_ms=2000))
    yield c
    c.close()
