"""Every collective on NumPy and torch inputs of each dtype, against NumPy references."""
import numpy as np
import pytest

import starling

try:
    import torch
except ImportError:  # torch tests skip individually
    torch = None

NP_DTYPES = ["float32", "float64", "float16", "int32", "int64", "uint8"]
TORCH_DTYPES = NP_DTYPES + ["bfloat16"]
# (backend, dtype): numpy has no bfloat16
CASES = [("numpy", d) for d in NP_DTYPES] + [("torch", d) for d in TORCH_DTYPES]
OPS = ["sum", "avg", "min", "max"]
COUNT = 1000


def member_data(dtype, i, n=COUNT, seed=0):
    """Values whose sums over 3 members are exact in every dtype (quarter steps)."""
    rng = np.random.default_rng(1000 * seed + i)
    if dtype == "uint8":
        return rng.integers(0, 256, n).astype(np.uint8)
    if dtype.startswith("int"):
        return rng.integers(-1000, 1000, n).astype(dtype)
    return (rng.integers(-32, 33, n) * 0.25).astype(np.float32)


def make(backend, dtype, values):
    if backend == "numpy":
        return values.astype(dtype)
    if torch is None:
        pytest.skip("torch is not installed")
    return torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))


def to_np(x):
    """Result as numpy (bf16 widened to float32, exactly)."""
    if torch is not None and isinstance(x, torch.Tensor):
        if x.dtype == torch.bfloat16:
            return x.float().numpy()
        return x.numpy()
    return np.asarray(x)


def cast_ref(ref64, dtype):
    """Reference rounded the way the library stores the dtype."""
    if dtype == "bfloat16":
        return torch.from_numpy(ref64.astype(np.float32)).to(torch.bfloat16).float().numpy()
    return ref64.astype(dtype)


def reference(inputs, dtype, op):
    n = len(inputs)
    if dtype == "uint8":
        stack = np.stack([x.astype(np.uint8) for x in inputs])
        if op in ("sum", "avg"):  # wrapping sum; avg = wrapped sum // n (starling.h)
            s = stack.sum(axis=0, dtype=np.uint8)
            return s if op == "sum" else (s // n).astype(np.uint8)
        return stack.min(axis=0) if op == "min" else stack.max(axis=0)
    if dtype.startswith("int"):
        stack = np.stack([x.astype(np.int64) for x in inputs])
        s = stack.sum(axis=0)
        r = {"sum": s, "avg": np.sign(s) * (np.abs(s) // n),  # truncated
             "min": stack.min(axis=0), "max": stack.max(axis=0)}[op]
        return r.astype(dtype)
    stack = np.stack([x.astype(np.float64) for x in inputs])
    r = {"sum": stack.sum(axis=0), "avg": stack.sum(axis=0) / n,
         "min": stack.min(axis=0), "max": stack.max(axis=0)}[op]
    return cast_ref(r, dtype)


def check(got, ref, dtype, op, n=3):
    got = to_np(got)
    if dtype.startswith("int") or dtype == "uint8" or op != "avg":
        np.testing.assert_array_equal(got.astype(np.float64), ref.astype(np.float64))
    else:
        rtol = {"float32": 1e-6, "float64": 1e-12, "float16": 1e-3, "bfloat16": 8e-3}[dtype]
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64),
                                   rtol=rtol, atol=rtol)


def same_bytes(results):
    raw = [to_np(r).tobytes() for r in results]
    assert all(b == raw[0] for b in raw), "members hold different bytes"


@pytest.mark.parametrize("backend,dtype", CASES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mode", ["in_place", "out"])
def test_allreduce(group3, backend, dtype, op, mode):
    raw = [member_data(dtype, i) for i in range(3)]
    ref = reference(raw, dtype, op)

    def body(c, i):
        x = make(backend, dtype, raw[i])
        keep = to_np(x).copy()
        if mode == "in_place":  # the default, as torch.distributed.all_reduce
            r = c.allreduce(x, op)
            assert r is x
        else:
            out = make(backend, dtype, np.zeros(COUNT))
            r = c.allreduce(x, op, out=out)
            assert r is out
            np.testing.assert_array_equal(to_np(x), keep)  # input untouched
        return r
    results = group3.run(body)
    for r in results:
        check(r, ref, dtype, op)
    same_bytes(results)


@pytest.mark.parametrize("backend,dtype", CASES)
def test_reduce_scatter(group3, backend, dtype):
    n, count = 3, 257
    raw = [member_data(dtype, i, n * count, seed=1) for i in range(n)]
    ref = reference(raw, dtype, "sum")

    def body(c, i):
        x = make(backend, dtype, raw[i].reshape(n, count))
        return c.rank, c.reduce_scatter(x, "sum")
    for rank, r in group3.run(body):
        assert tuple(r.shape) == (count,)
        check(r, ref[rank * count:(rank + 1) * count], dtype, "sum")


@pytest.mark.parametrize("backend,dtype", CASES)
def test_allgather(group3, backend, dtype):
    raw = [member_data(dtype, i, 100, seed=2) for i in range(3)]

    def body(c, i):
        return c.allgather(make(backend, dtype, raw[i].reshape(10, 10)))
    results = group3.run(body)
    expect = np.stack([to_np(make(backend, dtype, r)) for r in group3.by_rank(raw)])
    for r in results:
        assert tuple(r.shape) == (3, 10, 10)
        np.testing.assert_array_equal(to_np(r).reshape(3, 100), expect)
    same_bytes(results)


@pytest.mark.parametrize("backend,dtype", CASES)
def test_broadcast(group3, backend, dtype):
    raw = [member_data(dtype, i, 500, seed=3) for i in range(3)]
    root = 1

    def body(c, i):
        x = make(backend, dtype, raw[i])
        r = c.broadcast(x, src=root)
        assert r is x
        return x
    results = group3.run(body)
    expect = to_np(make(backend, dtype, group3.by_rank(raw)[root]))
    for r in results:
        np.testing.assert_array_equal(to_np(r), expect)


def test_zero_count_and_2d(group3):
    res = group3.run(lambda c, i: c.allreduce(np.zeros((0,), np.float32)))
    assert all(r.size == 0 for r in res)
    res = group3.run(lambda c, i: c.allreduce(np.full((4, 5), i + 1, np.int32), "max"))
    for r in res:
        assert r.shape == (4, 5) and (r == 3).all()


def test_tags(group3):
    res = group3.run(lambda c, i: c.allreduce(np.ones(8, np.float32), tag=42))
    assert all((r == 3).all() for r in res)


# ---------------------------------------------------------------- torch-like semantics
@pytest.fixture(scope="module")
def solo():
    """A joined run of one member, driven from the test's own thread (so that
    pytest.warns, which is not thread-safe, can watch the calls)."""
    co = starling.Coordinator(run="solo1", secret="s")
    c = starling.Communicator(co, "solo1", "s", starling.Config(min_peers=1))
    c.update_topology()
    yield c
    c.close()
    co.close()


def test_in_place_is_the_default_and_out_leaves_data(solo):
    x = np.arange(6, dtype=np.float32)
    assert solo.allreduce(x) is x
    assert solo.allreduce_async(x).wait() is x
    out = np.zeros(6, np.float32)
    assert solo.allreduce(x, out=out) is out and solo.allreduce(x, out=x) is x
    np.testing.assert_array_equal(out, np.arange(6))
    assert solo.robust_allreduce(x, "median", f=0) is x


def test_deprecated_inplace_still_accepted(solo):
    x = np.ones(4, np.float32)
    with pytest.warns(DeprecationWarning, match=r"Communicator.allreduce: inplace= is "
                                                r"deprecated"):
        assert solo.allreduce(x, inplace=True) is x
    with pytest.warns(DeprecationWarning):  # False keeps its 0.1 meaning: a new buffer
        r = solo.allreduce(x, "sum", inplace=False)
    assert r is not x and (r == 1).all()
    with pytest.warns(DeprecationWarning, match="allreduce_async: inplace="):
        assert solo.allreduce_async(x, inplace=False).wait() is not x
    with pytest.warns(DeprecationWarning, match="robust_allreduce: inplace="):
        assert solo.robust_allreduce(x, "median", f=0, inplace=False) is not x
    with pytest.warns(DeprecationWarning), \
            pytest.raises(starling.Invalid, match="inplace=True and out= contradict"):
        solo.allreduce(x, inplace=True, out=np.empty(4, np.float32))


def test_broadcast_src_and_deprecated_root(group3):
    def body(c, i):
        x = np.full(5, float(c.rank), np.float32)
        assert c.broadcast(x, src=2) is x
        y = np.full(3, float(c.rank), np.float64)
        c.broadcast_async(y, 1).wait()
        with pytest.raises(starling.Invalid, match=r"src: rank 3 is outside 0\.\.2"):
            c.broadcast(x, src=3)
        return x, y
    for x, y in group3.run(body):
        assert (x == 2).all() and (y == 1).all()


def test_broadcast_root_alias_warns(solo):
    x = np.ones(3, np.float32)
    with pytest.warns(DeprecationWarning, match="Communicator.broadcast: root= is "
                                                "deprecated.*use src="):
        assert solo.broadcast(x, root=0) is x
    with pytest.warns(DeprecationWarning), pytest.raises(starling.Invalid, match="differ"):
        solo.broadcast(x, src=1, root=0)


def test_barrier(group3):
    def body(c, i):
        assert c.barrier() is None
        assert c.barrier_async().wait() is None
        c.barrier(tag=5)
        return c.allreduce(np.ones(2, np.int32))  # the epoch goes on after barriers
    for r in group3.run(body):
        assert (r == 3).all()
