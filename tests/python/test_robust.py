"""starling.Aggregator and Communicator.robust_allreduce against hand-checked values and
with a Byzantine member (docs/aggregation.md)."""
import pytest

np = pytest.importorskip("numpy")
import starling  # noqa: E402


def test_aggregator_median_by_hand():
    # Coordinate-wise median of 5 rows: column 0 sorted 1,2,3,100,1e30 -> 3;
    # column 1 sorted -5,0,1,2,4 -> 1.
    v = np.array([[1, 0], [2, 4], [3, -5], [100, 1], [1e30, 2]], dtype=np.float32)
    agg = starling.Aggregator("median")
    assert agg.spec == "median"
    np.testing.assert_array_equal(agg.aggregate(v, f=2), np.array([3, 1], dtype=np.float32))


def test_aggregator_refusals():
    with pytest.raises(starling.Invalid, match="unknown"):
        starling.Aggregator("medianx")
    agg = starling.Aggregator("krum")
    v = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(starling.Invalid, match="n > 2f"):
        agg.aggregate(v, f=1)        # krum needs n > 2f + 2
    with pytest.raises(starling.Invalid):
        agg.aggregate(np.zeros(3, dtype=np.float32), f=0)   # not 2-D


def test_robust_allreduce_with_a_byzantine_member(fresh_group):
    g = fresh_group(5)
    n = 4001

    def body(comm, i):
        x = np.arange(n, dtype=np.float32) % 7 + 0.01 * comm.rank
        if comm.rank == g.n - 1:
            x[:] = 1e30                  # the Byzantine member
        return comm.robust_allreduce(x, "median", f=1)

    outs = g.run(body)
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()          # bit parity
    honest = np.arange(n, dtype=np.float32) % 7
    assert np.all(outs[0] >= honest - 0.1) and np.all(outs[0] <= honest + 0.1)


def test_robust_allreduce_refuses_bad_f(fresh_group):
    g = fresh_group(3)

    def body(comm, i):
        with pytest.raises(starling.Invalid, match="n > 2f"):
            comm.robust_allreduce(np.ones(8, dtype=np.float32), "median", f=2)
        return comm.allreduce(np.ones(2, dtype=np.float32))   # the epoch is intact

    for o in g.run(body):
        np.testing.assert_array_equal(o, np.full(2, 3, dtype=np.float32))
