"""Argument checks, error mapping, codecs, async requests and shared state."""
import threading
import time

import numpy as np
import pytest

import starling

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


# ---------------------------------------------------------------- refused inputs
def test_non_contiguous_numpy_refused(lone_comm):
    a = np.zeros(20, np.float32)[::2]
    with pytest.raises(starling.Invalid, match="data: array is not C-contiguous"):
        lone_comm.allreduce(a)
    with pytest.raises(starling.Invalid, match="not C-contiguous"):
        lone_comm.allreduce(np.zeros((4, 4), np.float32).T)


@needs_torch
def test_non_contiguous_torch_refused(lone_comm):
    t = torch.zeros(4, 6).t()
    with pytest.raises(starling.Invalid, match=r"data: tensor is not contiguous"):
        lone_comm.allreduce(t)


@needs_torch
def test_non_cpu_tensor_refused(lone_comm):
    t = torch.empty(4, device="meta")
    with pytest.raises(starling.Invalid, match="data: tensor is on device 'meta', only CPU"):
        lone_comm.allreduce(t)


def test_wrong_dtype_refused(lone_comm):
    with pytest.raises(starling.Invalid, match=r"data: unsupported dtype complex64"):
        lone_comm.allreduce(np.zeros(4, np.complex64))
    with pytest.raises(starling.Invalid, match=r"unsupported dtype int16"):
        lone_comm.allreduce(np.zeros(4, np.int16))
    with pytest.raises(starling.Invalid, match=r"out: dtype float64 differs from the input's "
                                               r"float32"):
        lone_comm.allreduce(np.zeros(4, np.float32), out=np.zeros(4, np.float64))
    with pytest.raises(starling.Invalid, match=r"out: has 5 elements, expected 4"):
        lone_comm.allreduce(np.zeros(4, np.float32), out=np.zeros(5, np.float32))
    with pytest.raises(starling.Invalid, match=r"expected a numpy.ndarray or a torch CPU"):
        lone_comm.allreduce([1.0, 2.0])
    with pytest.raises(starling.Invalid, match="unknown op 'mean'"):
        lone_comm.allreduce(np.zeros(4, np.float32), "mean")


@needs_torch
def test_wrong_torch_dtype_refused(lone_comm):
    with pytest.raises(starling.Invalid, match=r"unsupported dtype torch.int16"):
        lone_comm.allreduce(torch.zeros(4, dtype=torch.int16))
    with pytest.raises(starling.Invalid, match=r"unsupported dtype torch.complex64"):
        lone_comm.allreduce(torch.zeros(4, dtype=torch.complex64))


def test_read_only_refused_for_outputs(lone_comm):
    a = np.zeros(8, np.float32)
    a.setflags(write=False)
    with pytest.raises(starling.Invalid, match="data: array is read-only, it cannot receive"):
        lone_comm.allreduce(a)  # in place by default
    with pytest.raises(starling.Invalid, match="out: array is read-only"):
        lone_comm.allreduce(np.zeros(8, np.float32), out=a)
    with pytest.raises(starling.Invalid, match="data: array is read-only"):
        lone_comm.broadcast(a)
    with pytest.raises(starling.Invalid, match="read-only"):
        lone_comm.register("w", a)


def test_read_only_input_accepted(group3):
    def body(c, i):
        a = np.full(8, i, np.float32)
        a.setflags(write=False)
        return c.allreduce(a, out=np.empty(8, np.float32))
    for r in group3.run(body):
        assert (r == 3).all()


# ---------------------------------------------------------------- error mapping
def test_collective_before_update_topology_is_state_error(lone_comm):
    with pytest.raises(starling.State) as e:
        lone_comm.allreduce(np.zeros(4, np.float32))
    assert e.value.code == -10
    assert isinstance(e.value, starling.StarlingError)
    assert str(e.value) == ("Communicator.allreduce: handle in the wrong state (not a member "
                            "yet: call Communicator.update_topology() first)")


def test_bad_codec_spec_is_invalid_with_library_message():
    with pytest.raises(starling.Invalid) as e:
        starling.Codec("int9")
    assert e.value.code == -1
    assert "unknown codec 'int9'" in e.value.message


def test_codec_spec_canonical():
    c = starling.Codec("int8")
    assert c.spec.startswith("int8:block=")
    assert repr(c).startswith("Codec('int8")


def test_codec_encode_decode_roundtrip():
    c = starling.Codec("int8")
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    wire = c.encode(x)
    assert len(wire) < x.nbytes
    y = c.decode(wire, np.empty_like(x))
    np.testing.assert_allclose(y, x, atol=2.0 / 127)


def test_wrong_secret_is_auth(coord):
    with pytest.raises(starling.Auth) as e:
        starling.Communicator(coord, "solo", "wrong", starling.Config(op_timeout_ms=2000))
    assert e.value.code == -8


def test_connect_refused_is_error():
    with pytest.raises(starling.StarlingError):
        starling.Communicator("127.0.0.1:1", "x", "s", starling.Config(op_timeout_ms=500))


def test_closed_communicator(coord):
    c = starling.Communicator(coord, "solo", "s3cret", starling.Config(op_timeout_ms=2000))
    c.close()
    with pytest.raises(starling.Closed):
        c.allreduce(np.zeros(4, np.float32))
    c.close()  # twice is fine


def test_error_messages_name_python_calls(lone_comm, fresh_group):
    """Messages say which Python call failed, never a C function (starling_*)."""
    msgs = []
    for call, name in ((lambda: lone_comm.barrier(), "barrier"),
                       (lambda: lone_comm.allreduce_async(np.zeros(2, np.float32)),
                        "allreduce_async"),
                       (lambda: lone_comm.sync(), "sync"),
                       (lambda: lone_comm.allgather(np.zeros(2, np.float32)), "allgather")):
        with pytest.raises(starling.State) as e:
            call()
        assert str(e.value).startswith(f"Communicator.{name}: handle in the wrong state")
        msgs.append(str(e.value))
    with pytest.raises(starling.StarlingError) as e:
        starling.Communicator("127.0.0.1:1", "x", "s", starling.Config(op_timeout_ms=500))
    assert str(e.value).startswith("Communicator('127.0.0.1:1', run='x'): ")
    msgs.append(str(e.value))
    with pytest.raises(starling.Invalid) as e:
        starling.Codec("int9")
    assert str(e.value).startswith("Codec('int9'): invalid argument (unknown codec")
    msgs.append(str(e.value))

    g = fresh_group(2)

    def body(c, i):  # an asynchronous failure names the _async method that made it
        req = c.allreduce_async(np.zeros(4 + i, np.float32))
        with pytest.raises(starling.Mismatch) as e:
            req.wait()
        c.update_topology()
        return str(e.value)
    for m in g.run(body):
        assert m.startswith("Communicator.allreduce_async: peers disagree on the call"), m
        msgs.append(m)
    assert not [m for m in msgs if "starling_" in m], msgs


def test_error_table_complete():
    L = starling._lib.lib()
    for code, cls in starling.ERRORS.items():
        assert cls.code == code
        assert L.starling_strerror(code).decode() != "unknown error"


def test_config_bad_value_is_invalid(coord):
    with pytest.raises(starling.Invalid, match=r"Config\(streams=99\): invalid argument"):
        starling.Communicator(coord, "solo", "s3cret", starling.Config(streams=99))


def test_mismatch(fresh_group):
    g = fresh_group(2)

    def body(c, i):
        with pytest.raises(starling.Mismatch) as e:
            c.allreduce(np.zeros(4 + i, np.float32))
        # epoch aborted until a new topology update, then usable again
        c.update_topology()
        return e.value.message, c.allreduce(np.ones(3, np.float32))
    for msg, r in g.run(body):
        assert msg and (r == 2).all()


# ---------------------------------------------------------------- codecs
def test_int8_allreduce_within_tolerance_and_identical(group3):
    rng = np.random.default_rng(7)
    raw = [rng.standard_normal(10000).astype(np.float32) for _ in range(3)]
    codec = starling.Codec("int8")
    res = group3.run(lambda c, i: c.allreduce(raw[i].copy(), "sum", codec=codec, tag=7))
    ref = sum(r.astype(np.float64) for r in raw)
    scale = max(np.abs(r).max() for r in raw)
    for r in res:
        assert np.abs(r - ref).max() < 3 * 3 * scale / 127
        assert r.tobytes() == res[0].tobytes()
    # a spec string works too, and bf16 casts
    res = group3.run(lambda c, i: c.allreduce(raw[i].copy(), "avg", codec="bf16"))
    for r in res:
        np.testing.assert_allclose(r, ref / 3, atol=0.05)
        assert r.tobytes() == res[0].tobytes()


def test_codec_on_int_dtype_is_unsupported(group3):
    def body(c, i):
        with pytest.raises(starling.Unsupported):
            c.allreduce(np.zeros(4, np.int32), codec="int8")
    group3.run(body)
    group3.run(lambda c, i: c.update_topology())  # in case the epoch was aborted


def test_error_feedback_residual(group3):
    x = np.random.default_rng(1).standard_normal(512).astype(np.float32)

    def body(c, i):
        c.allreduce(x.copy(), codec="int4+ef", tag=99)
        r = c.residual_get(99, np.empty(512, np.float32))
        with pytest.raises(starling.NotFound):
            c.residual_get(12345, np.empty(512, np.float32))
        return r
    for r in group3.run(body):
        assert np.abs(r).max() > 0


# ---------------------------------------------------------------- async
def test_async_wait_and_test(group3):
    def body(c, i):
        a = np.full(100000, i + 1, np.float32)
        b = np.full(1000, i, np.int64)
        ra = c.allreduce_async(a, "sum", tag=1)
        rb = c.allgather_async(b, tag=2)
        deadline = time.monotonic() + 20
        while not ra.test():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert ra.done and ra.wait() is a
        g = rb.wait()
        assert rb.wait() is g  # may be waited again
        return a, g
    for a, g in group3.run(body):
        assert (a == 6).all()
        assert sorted(g[:, 0].tolist()) == [0, 1, 2]


def test_async_keeps_buffers_alive(group3):
    def body(c, i):
        req = c.allreduce_async(np.full(50000, 1.0, np.float64))  # no other reference
        import gc
        gc.collect()
        return req.wait()
    for r in group3.run(body):
        assert (r == 3).all()


@needs_torch
def test_async_torch_reduce_scatter_broadcast(group3):
    def body(c, i):
        t = torch.arange(30, dtype=torch.float32) * (i + 1)
        r1 = c.reduce_scatter_async(t)
        bt = torch.full((5,), float(c.rank), dtype=torch.bfloat16)
        r2 = c.broadcast_async(bt, src=2)
        return c.rank, r1.wait(), r2.wait()
    for rank, rs, bt in group3.run(body):
        expect = (torch.arange(30, dtype=torch.float32) * 6)[rank * 10:(rank + 1) * 10]
        assert torch.equal(rs, expect)
        assert (bt.float() == 2).all()


# ---------------------------------------------------------------- shared state
def test_shared_state_sync(fresh_group):
    g = fresh_group(3)
    rng = np.random.default_rng(3)
    truth = rng.standard_normal(1000).astype(np.float32)
    bias = np.arange(10, dtype=np.int64)
    arrays = []

    def body(c, i):
        w = truth.copy()
        b = bias.copy()
        if i == 2:  # this member differs; the majority wins
            w[::7] += 1
            b[3] = -1
        arrays.append((i, w))
        c.register("w", w)
        c.register("b", b)
        c.step = 5
        before = c.state_hash()
        changed = c.sync()
        return changed, before, c.state_hash(), w, b, c.step
    res = g.run(body)
    hashes = {r[2] for r in res}
    assert len(hashes) == 1
    for i, (changed, before, after, w, b, step) in enumerate(res):
        assert changed == (i == 2)
        assert (before == after) == (i != 2)
        np.testing.assert_array_equal(w, truth)
        np.testing.assert_array_equal(b, bias)
        assert step == 5
        assert len(after) == 32

    def unreg(c, i):
        c.unregister("b")
        with pytest.raises(starling.NotFound):
            c.unregister("b")
    g.run(unreg)


@needs_torch
def test_shared_state_torch_bf16(fresh_group):
    g = fresh_group(2)

    def body(c, i):
        p = torch.full((64,), 1.5 if i == 0 else 1.5, dtype=torch.bfloat16)
        m = torch.zeros(64, dtype=torch.float32)
        c.register("p", p)
        c.register("m", m)
        c.step = 10 + i  # differs: ties go to the lowest rank
        c.sync()
        return c.state_hash(), c.step
    res = g.run(body)
    assert res[0] == res[1]


def test_coordinator_context_and_properties():
    with starling.Coordinator(run="ctx", secret="x") as co:
        assert co.port > 0 and co.address.endswith(str(co.port))
        with starling.Communicator(co, "ctx", "x", starling.Config(min_peers=1)) as c:
            assert c.epoch == 0
            c.update_topology()
            assert (c.rank, c.size, c.epoch) == (0, 1, 1)
            r = c.allreduce(np.ones(4, np.float32))
            assert (r == 1).all()
            assert c.bytes_sent == 0
            assert "rank=0" in repr(c)
    assert starling.version() == "0.1.0"


def test_measure_links_and_link_figures(fresh_group):
    g = fresh_group(3)

    def measure(c, _):
        assert c.link((c.rank + 1) % c.size) is None  # nothing measured yet
        c.measure_links()
        figures = [c.link(r) for r in range(c.size) if r != c.rank]
        with pytest.raises(starling.Invalid):
            c.link(c.rank)
        return figures
    for figures in g.run(measure):
        assert all(f is not None and f[0] > 1e6 and 0 < f[1] < 1.0 for f in figures)


def test_config_ring_order_refused():
    with pytest.raises(starling.Invalid):
        starling.Coordinator(run="ro", secret="x", config=starling.Config(ring_order="fastest"))
    with pytest.raises(starling.Invalid):
        starling.Coordinator(run="ro", secret="x", config=starling.Config(probe_bytes=10))


def test_socket_buffer_config_carries_collectives(fresh_group):
    g = fresh_group(2, socket_buffer=1 << 20)

    def body(c, i):
        x = np.full(300_000, i + 1, dtype=np.float32)
        c.allreduce(x)
        return float(x[0]), float(x[-1])
    assert g.run(body) == [(3.0, 3.0), (3.0, 3.0)]
