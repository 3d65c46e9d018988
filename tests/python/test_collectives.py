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
@pytest.mark.parametrize("mode", ["out_of_place", "in_place", "out"])
def test_allreduce(group3, backend, dtype, op, mode):
    raw = [member_data(dtype, i) for i in range(3)]
    ref = reference(raw, dtype, op)

    def body(c, i):
        x = make(backend, dtype, raw[i])
        keep = to_np(x).copy()
        if mode == "in_place":
            r = c.allreduce(x, op, inplace=True)
            assert r is x
        elif mode == "out":
            out = make(backend, dtype, np.zeros(COUNT))
            r = c.allreduce(x, op, out=out)
            assert r is out
        else:
            r = c.allreduce(x, op)
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
        r = c.broadcast(x, root)
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
