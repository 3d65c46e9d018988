"""starling.torch: model/optimizer as shared state, gradient all-reduce, DiLoCo with a
peer killed. Skipped without torch. Run as a script, this file is the DiLoCo peer that
the kill test starts through python3 -m starling.launch."""
import json
import os
import signal
import subprocess
import sys

if __name__ != "__main__":
    import pytest
    torch = pytest.importorskip("torch")
    import starling
    import starling.torch as st

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")


def make_model(seed):
    import torch
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 3))


def test_import_starling_does_not_import_torch():
    code = "import sys, starling; print('torch' in sys.modules)"
    e = dict(os.environ, PYTHONPATH=PKG)
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "False", out.stderr


def test_register_model_sync_gives_majority_params(fresh_group):
    g = fresh_group(3)
    # members 0 and 1 hold the same model and optimizer state; member 2 differs
    models = [make_model(1), make_model(1), make_model(2)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    for i, (m, o) in enumerate(zip(models, opts)):
        st.materialize(o)
        assert all(len(o.state[p]) == 3 for p in m.parameters())  # step, exp_avg(_sq)
        if i == 2:
            for v in o.state[next(m.parameters())].values():
                v.fill_(5.0)
    before = [p.detach().clone() for p in models[2].parameters()]

    def fn(c, i):
        names = st.register_model(c, models[i], opts[i], prefix="m/")
        assert st.register_model(c, models[i], opts[i], prefix="m/") == []  # idempotent
        return names, c.sync(), c.state_hash()
    res = g.run(fn)
    names = res[0][0]
    assert "m/0.weight" in names and "m/opt/0.weight/exp_avg" in names
    assert [r[1] for r in res] == [False, False, True]
    assert len({r[2] for r in res}) == 1
    for p, q, b in zip(models[0].parameters(), models[2].parameters(), before):
        assert torch.equal(p, q) and not torch.equal(q, b)
    s0 = opts[0].state[next(models[0].parameters())]
    s2 = opts[2].state[next(models[2].parameters())]
    for k in s0:
        assert torch.equal(s0[k], s2[k])
    # training continues normally on the synced tensors
    x = torch.randn(4, 8)
    models[2](x).sum().backward()
    opts[2].step()


def test_register_model_refuses_non_contiguous(fresh_group):
    g = fresh_group(1)
    m = torch.nn.Linear(4, 4)
    m.weight.data = m.weight.data.t()  # a transposed view: not contiguous
    with pytest.raises(starling.Invalid, match="weight.*not contiguous"):
        st.register_model(g.comms[0], m)


def test_allreduce_gradients_is_mean(fresh_group):
    g = fresh_group(3)
    models = [make_model(0) for _ in range(3)]
    grads = []
    for i, m in enumerate(models):
        torch.manual_seed(100 + i)
        m(torch.randn(5, 8)).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    models[1][2].bias.grad = None  # a missing gradient counts as zeros

    def fn(c, i):
        return st.allreduce_gradients(c, models[i])
    assert g.run(fn) == [False, False, False]
    for j, p in enumerate(models[0].parameters()):
        parts = [grads[i][j] if not (i == 1 and j == 3) else torch.zeros_like(grads[i][j])
                 for i in range(3)]
        want = sum(parts) / 3
        for m in models:
            got = list(m.parameters())[j].grad
            assert torch.allclose(got, want, atol=1e-6), (j, (got - want).abs().max())


def test_diloco_newcomer_joins_at_round_end(fresh_group):
    """3 members with update_every=1; a 4th communicator joins during round 1: its first
    step() waits for a round end, syncs theta/momentum/round and goes on in lockstep."""
    import threading
    import time
    g = fresh_group(3)
    torch.set_num_threads(1)
    rounds = 5
    joined = threading.Event()
    out = {}

    def train(comm, model, key):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        d = st.DiLoCo(comm, model, opt, inner_steps=2, update_every=1)
        gen = torch.Generator().manual_seed(hash(key) % 1000)
        while d.round < rounds:
            x = torch.randn(8, 8, generator=gen)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
            if d.step() and d.round == 1 and key == 0:
                joined.set()
            time.sleep(0.02)
        out[key] = (comm.size, d.round, d.state_hash(),
                    torch.cat([p.detach().reshape(-1) for p in model.parameters()]))

    def newcomer():
        joined.wait(20)
        c = starling.Communicator(g.coord, "fresh0", "s3cret",
                                  starling.Config(timeout_ms=1000, op_timeout_ms=15000))
        try:
            train(c, make_model(7), "new")
        finally:
            c.close()
    t = threading.Thread(target=newcomer, daemon=True)
    t.start()
    g.run(lambda c, i: train(c, make_model(i), i))
    t.join(30)
    assert not t.is_alive()
    assert set(out) == {0, 1, 2, "new"}
    assert {v[0] for v in out.values()} == {4} and {v[1] for v in out.values()} == {rounds}
    assert len({v[2] for v in out.values()}) == 1
    for v in out.values():
        assert torch.equal(v[3], out[0][3])


def test_diloco_peer_killed_survivors_agree():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([PKG, e.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "starling.launch", "--peers", "3",
                        "--timeout-ms", "1000", os.path.abspath(__file__)], env=e,
                       capture_output=True, text=True, timeout=60)
    out = [json.loads(x.split("]: ", 1)[1]) for x in p.stdout.splitlines()
           if x.startswith("[rank") and "]: {" in x]  # the launcher's [rankN]: prefix
    assert p.returncode == 128 + signal.SIGKILL, p.stderr
    assert sorted(o["hint"] for o in out) == [0, 2], p.stderr
    a, b = out
    assert a["size"] == b["size"] == 2 and a["recoveries"] >= 1 and b["recoveries"] >= 1
    assert a["rounds"] == b["rounds"] == 6
    assert a["hash"] == b["hash"] and a["params"] == b["params"]
    assert a["loss0"] == b["loss0"]  # the same start after the first sync
    assert a["loss"] < 0.75 * a["loss0"]  # it trained (init: the tie-winning rank's)


def _diloco_peer():
    """3 peers, 6 outer rounds of 5 inner Adam steps on a toy regression; hint 1 kills
    itself in round 3, after its inner steps (the others are in the all-reduce)."""
    import hashlib
    import torch
    import starling
    import starling.torch as st
    torch.set_num_threads(1)
    hint = int(os.environ["STARLING_RANK_HINT"])
    comm = starling.Communicator.from_env(starling.Config(timeout_ms=1000,
                                                          op_timeout_ms=30000))
    comm.update_topology()
    model = make_model(hint)  # different inits: the first sync makes them equal
    # lr 3e-3: with outer momentum 0.9, a larger inner lr overshoots within 6 rounds
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    d = st.DiLoCo(comm, model, opt, inner_steps=5, outer_lr=0.7, outer_momentum=0.9)
    g = torch.Generator().manual_seed(hint)
    w = torch.arange(24, dtype=torch.float32).reshape(8, 3) / 24

    def loss_of(x):
        return torch.nn.functional.mse_loss(model(x), x @ w)
    xe = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    d.start()  # join + sync: every member starts from the same theta
    with torch.no_grad():
        loss0 = float(loss_of(xe))
    while d.round < 6:
        if hint == 1 and d.round == 3 and d.inner == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        x = torch.randn(32, 8, generator=g)
        loss = loss_of(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        d.step()
    with torch.no_grad():
        loss1 = float(loss_of(xe))
    h = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                for p in model.parameters())).hexdigest()
    os.write(1, (json.dumps({"hint": hint, "size": comm.size, "rounds": d.round,
                             "recoveries": d.recoveries, "hash": d.state_hash(),
                             "params": h, "loss0": loss0, "loss": loss1}) + "\n").encode())
    comm.close()


if __name__ == "__main__":
    _diloco_peer()
