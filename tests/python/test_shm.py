"""Ring links over shared memory between members on one host, each member its own process.

Members on one host (same boot, network and PID namespaces, user) move their ring links'
bytes through a memfd segment; the TCP connection stays for wake-ups and to tell a dead
neighbour (docs/architecture.md, "Shared memory"). Config(shm=False) keeps a member's
links on TCP.

- Four processes, every collective and several dtypes and codecs, integer-valued inputs
  (so the exact result is known) and random ones (so every member must hold the same
  bits): all over shared memory, and in a mixed ring where one member keeps TCP. Each
  member counts the ring segments it maps (/proc/self/maps): 2 each with shared memory,
  0 for the TCP member and 1 for its two neighbours in the mixed ring.
- A member SIGKILLed in the middle of large all-reduces: the survivors see PeerLost,
  form an epoch of three and go on with exact, equal results.
- A member SIGSTOPped: the survivors are not held on the segment, they fail the op by
  the timeout, re-form and go on; the frozen one, resumed, finds itself out.
- Membership changing between transports: a member that keeps TCP joins a ring of shared
  memory links and leaves it again; the results stay exact.
- Config(shm=...) takes only a bool; STARLING_SHM.

Every wait is bounded; every process is killed in a `finally` block.
"""
import ctypes
import hashlib
import json
import os
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
from starling.errors import Invalid, PeerLost, StarlingError  # noqa: E402

SECRET = "shm-s3cret"
TIMEOUT_MS = 1000
OP_TIMEOUT_MS = 20000
WAIT_S = 60.0
COUNT = 300_001  # more than one 1 MiB chunk, odd: uneven segments


def ring_segments():
    """Ring segments this process maps (memfds made here or opened from a neighbour)."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:starling-ring" in line)


def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def join(spec):
    config = starling.Config(timeout_ms=TIMEOUT_MS, op_timeout_ms=OP_TIMEOUT_MS,
                             min_peers=spec["min_peers"], name=spec["name"],
                             shm=spec["shm"])
    comm = starling.Communicator(spec["coord"], spec["run"], SECRET, config)
    comm.update_topology()
    return comm


def say(**ev):
    print(json.dumps(ev), flush=True)


# ------------------------------------------------------------------ workers (subprocesses)

def worker_collectives(spec):
    """Every collective once; reports exactness failures and digests of every result."""
    comm = join(spec)
    n, rank, wid = comm.size, comm.rank, spec["wid"]
    wids = [int(v) for v in comm.allgather(np.array([wid], np.int32))[:, 0]]
    bad, digests = [], {}
    base = np.arange(COUNT, dtype=np.float32) % 1000

    x = base * (wid + 1)
    comm.allreduce(x, "sum")
    if not np.array_equal(x, base * sum(w + 1 for w in wids)):
        bad.append("allreduce f32 sum")
    for dt in (np.float64, np.int32, np.int64):
        y = (np.arange(COUNT) % 97 + wid).astype(dt)
        comm.allreduce(y, "max")
        if not np.array_equal(y, (np.arange(COUNT) % 97 + max(wids)).astype(dt)):
            bad.append(f"allreduce {np.dtype(dt).name} max")
    rs = np.concatenate([base[:10_007] * (wid + 1) + r for r in range(n)])
    part = comm.reduce_scatter(rs, "sum")
    if not np.array_equal(part, base[:10_007] * sum(w + 1 for w in wids) + n * rank):
        bad.append("reduce_scatter")
    g = comm.allgather(np.full(5_003, wid, np.int32))
    if [int(v) for v in g[:, 0]] != wids or not all((g[i] == wids[i]).all() for i in range(n)):
        bad.append("allgather")
    b = np.full(70_001, float(wid), np.float32)
    comm.broadcast(b, src=2)
    if not (b == wids[2]).all():
        bad.append("broadcast")

    # Random values: the sum is whatever the ring computes, but every member's bits agree.
    rng = np.random.default_rng(wid)
    r = rng.standard_normal(COUNT).astype(np.float32)
    comm.allreduce(r, "avg")
    digests["avg f32"] = digest(r)
    h = rng.standard_normal(COUNT).astype(np.float16)
    comm.allreduce(h, "sum")
    digests["sum f16"] = digest(h)
    for codec in ("int8", "topk:0.01+ef", "int4+zstd"):
        c = rng.standard_normal(COUNT).astype(np.float32)
        comm.allreduce(c, "sum", codec=codec)
        digests[codec] = digest(c)
    # Counted before a last collective: once that one is done, a member that closes ends
    # the epoch, and the others' links (and segments) go with it.
    segments = ring_segments()
    comm.allreduce(np.zeros(1, np.float32))
    say(ev="done", rank=rank, wid=wid, size=n, bad=bad, digests=digests, segments=segments)
    comm.close()


def reform(comm, wid, end):
    """update_topology (again while it fails), then the new membership by an all-gather."""
    while time.monotonic() < end:
        try:
            comm.update_topology()
            wids = [int(v) for v in comm.allgather(np.array([wid], np.int32))[:, 0]]
            say(ev="reformed", size=comm.size, epoch=comm.epoch)
            return wids
        except (PeerLost, StarlingError):
            continue
    raise AssertionError("could not re-form in time")


def worker_stream(spec):
    """All-reduces of an integer-valued tensor until told to stop (a file appears); after
    a PeerLost, and every `topo_every` all-reduces if set, a topology point (reform)."""
    comm = join(spec)
    wid = spec["wid"]
    base = np.arange(spec["count"], dtype=np.float32) % 1000
    wids = [int(v) for v in comm.allgather(np.array([wid], np.int32))[:, 0]]
    say(ev="joined", size=comm.size, segments=ring_segments())
    ok = lost = bad = 0
    j = 0
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end and not os.path.exists(spec["stop"]):
        x = base * (wid + 1) + j
        try:
            comm.allreduce(x, "sum")
        except (PeerLost, StarlingError) as e:
            lost += 1
            say(ev="lost", kind=type(e).__name__, msg=str(e)[:200])
            wids = reform(comm, wid, end)
            j = 0
            continue
        if not np.array_equal(x, base * sum(w + 1 for w in wids) + len(wids) * j):
            bad += 1
        ok += 1
        say(ev="op", size=len(wids), j=j, h=digest(x)[:16])
        j += 1
        if spec.get("topo_every") and j % spec["topo_every"] == 0:
            try:  # a topology point: newcomers are admitted here
                comm.update_topology()
                wids = [int(v) for v in comm.allgather(np.array([wid], np.int32))[:, 0]]
                j = 0
            except (PeerLost, StarlingError) as e:
                lost += 1
                say(ev="lost", kind=type(e).__name__, msg=str(e)[:200])
                wids = reform(comm, wid, end)
                j = 0
    say(ev="end", ok=ok, lost=lost, bad=bad, size=comm.size, epoch=comm.epoch)
    comm.close(coordinator_wait=0)


# ------------------------------------------------------------------ the test's side

def _die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Worker:
    def __init__(self, tmp_path, mode, **spec):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([PKG] + [p for p in [env.get("PYTHONPATH")] if p])
        self.err_path = os.path.join(str(tmp_path), f"{spec['name']}.err")
        err = open(self.err_path, "wb")
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), mode,
                                   json.dumps(spec)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=err, env=env,
                                  start_new_session=True, preexec_fn=_die_with_parent)
        err.close()
        self.events = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def count(self, ev):
        return sum(1 for e in list(self.events) if e["ev"] == ev)

    def last(self, ev):
        es = [e for e in list(self.events) if e["ev"] == ev]
        return es[-1] if es else None

    def log(self):
        try:
            with open(self.err_path, "rb") as f:
                err = f.read().decode(errors="replace")
        except OSError:
            err = ""
        return ("events: " + json.dumps(self.events[-8:]) + "\nstderr:\n" +
                "\n".join(err.splitlines()[-20:]))

    def wait(self, timeout=WAIT_S):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("worker did not finish\n" + self.log())
        self.reader.join(5)
        return rc

    def kill(self):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGCONT)
            except OSError:
                pass
            self.p.kill()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def wait_until(what, pred, timeout=WAIT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def coordinator(run):
    return starling.Coordinator(run=run, secret=SECRET,
                                config=starling.Config(timeout_ms=TIMEOUT_MS))


@pytest.mark.parametrize("tcp_wid", [None, 2], ids=["all-shm", "mixed"])
def test_every_collective(tmp_path, tcp_wid):
    run = f"shm-coll-{tcp_wid}"
    coord = coordinator(run)
    ws = []
    try:
        for wid in range(4):
            ws.append(Worker(tmp_path, "collectives", coord=coord.address, run=run,
                             name=f"w{wid}", wid=wid, min_peers=4, shm=wid != tcp_wid))
        for w in ws:
            assert w.wait() == 0, w.log()
        outs = {w.last("done")["rank"]: w.last("done") for w in ws}
        assert sorted(outs) == [0, 1, 2, 3], [w.log() for w in ws]
        for rank, o in outs.items():
            assert o["size"] == 4 and not o["bad"], o
        first = outs[0]["digests"]
        for rank, o in outs.items():
            assert o["digests"] == first, f"rank {rank} holds other bits: {o['digests']}"
        by_wid = {o["wid"]: o for o in outs.values()}
        if tcp_wid is None:
            assert all(o["segments"] == 2 for o in outs.values()), {r: o["segments"] for r, o in outs.items()}
        else:
            r = by_wid[tcp_wid]["rank"]
            for o in outs.values():
                want = 0 if o["wid"] == tcp_wid else (
                    1 if o["rank"] in ((r + 1) % 4, (r - 1) % 4) else 2)
                assert o["segments"] == want, (o["wid"], o["rank"], o["segments"], want)
    finally:
        for w in ws:
            w.kill()
        coord.close()


def stream_group(tmp_path, run, coord, n, count, shm=(True,) * 4):
    stop = os.path.join(str(tmp_path), f"{run}.stop")
    ws = [Worker(tmp_path, "stream", coord=coord.address, run=run, name=f"w{wid}", wid=wid,
                 min_peers=n, shm=shm[wid], count=count, stop=stop) for wid in range(n)]
    return ws, stop


def finish(ws, stop):
    open(stop, "w").close()
    for w in ws:
        assert w.wait() == 0, w.log()
    return [w.last("end") for w in ws]


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSTOP"])
def test_local_member_killed_or_frozen_mid_collective(tmp_path, sig):
    """4 M floats (16 MiB) per all-reduce, so the signal lands inside one."""
    run = f"shm-{sig.lower()}"
    coord = coordinator(run)
    ws, stop = stream_group(tmp_path, run, coord, 4, 4_000_001)
    victim = ws[3]
    try:
        wait_until("four members joined", lambda: all(w.count("joined") for w in ws))
        assert all(w.last("joined")["segments"] == 2 for w in ws), [w.log() for w in ws]
        wait_until("a few all-reduces", lambda: all(w.count("op") >= 3 for w in ws))
        os.kill(victim.p.pid, getattr(signal, sig))
        t0 = time.monotonic()
        live = ws[:3]
        wait_until("the survivors re-formed with three",
                   lambda: all((w.last("reformed") or {}).get("size") == 3 for w in live), 30)
        reformed_s = time.monotonic() - t0
        base = {id(w): w.count("op") for w in live}
        wait_until("five all-reduces of three",
                   lambda: all(w.count("op") >= base[id(w)] + 5 for w in live), 30)
        if sig == "SIGSTOP":
            os.kill(victim.p.pid, signal.SIGCONT)  # it finds itself out of the epoch
        ends = finish(live, stop)
        for w, e in zip(live, ends):
            assert e["bad"] == 0 and e["lost"] >= 1 and e["size"] == 3, w.log()
        assert len({e["epoch"] for e in ends}) == 1, ends
        # The same bits on every survivor, op by op, after the re-forming.
        last = [[e for e in w.events if e["ev"] == "op" and e["size"] == 3] for w in live]
        k = min(len(x) for x in last)
        assert k >= 5
        for i in range(k):
            assert len({x[i]["h"] for x in last}) == 1, (i, [x[i] for x in last])
        # Not held on the segment: detection is the failure timeout, not the op timeout.
        assert reformed_s < OP_TIMEOUT_MS / 1000, reformed_s
    finally:
        for w in ws:
            w.kill()
        coord.close()


def test_membership_changes_between_transports(tmp_path):
    """Three members on shared memory; a fourth that keeps TCP joins (two of the links
    become TCP), then is killed (the ring closes over shared memory again)."""
    run = "shm-transports"
    coord = coordinator(run)
    stop = os.path.join(str(tmp_path), "stop")
    ws = [Worker(tmp_path, "stream", coord=coord.address, run=run, name=f"w{wid}", wid=wid,
                 min_peers=3, shm=True, count=300_001, stop=stop, topo_every=10)
          for wid in range(3)]
    tcp = None
    try:
        wait_until("three joined", lambda: all(w.count("joined") for w in ws))
        wait_until("a few all-reduces", lambda: all(w.count("op") >= 3 for w in ws))
        tcp = Worker(tmp_path, "stream", coord=coord.address, run=run, name="w3", wid=3,
                     min_peers=1, shm=False, count=300_001, stop=stop, topo_every=10)
        wait_until("four in one epoch",
                   lambda: tcp.count("joined") and
                   all((w.last("op") or {}).get("size") == 4 for w in ws + [tcp]), 30)
        assert tcp.last("joined")["segments"] == 0, tcp.log()
        tcp.kill()
        wait_until("three again",
                   lambda: all((w.last("op") or {}).get("size") == 3 and
                               (w.last("reformed") or {}).get("size") == 3 for w in ws), 30)
        ends = finish(ws, stop)
        assert all(e["bad"] == 0 for e in ends), ends
    finally:
        for w in ws + ([tcp] if tcp else []):
            w.kill()
        coord.close()


@pytest.mark.parametrize("bad", [1, 0, "yes", None.__class__])
def test_shm_takes_only_a_bool(bad):
    with pytest.raises(Invalid, match=r"Config\(shm="):
        starling.Config(shm=bad)._make()


def test_starling_shm_variable():
    from starling.env import shm
    assert shm({}) is None
    assert shm({"STARLING_SHM": " "}) is None
    assert shm({"STARLING_SHM": "0"}) is False
    assert shm({"STARLING_SHM": "1"}) is True
    with pytest.raises(Invalid, match="STARLING_SHM"):
        shm({"STARLING_SHM": "off"})


if __name__ == "__main__":
    modes = {"collectives": worker_collectives, "stream": worker_stream}
    if len(sys.argv) == 3 and sys.argv[1] in modes:
        sys.exit(modes[sys.argv[1]](json.loads(sys.argv[2])))
    sys.exit("usage: test_shm.py collectives|stream SPEC")
