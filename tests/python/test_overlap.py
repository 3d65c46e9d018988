"""starling.torch.GradientSync: bucketed gradient averaging overlapping backward, against
allreduce_gradients (copy-then-reduce), with several buckets, unused parameters, gradient
accumulation, and a peer SIGKILLed mid-backward. Skipped without torch. Run as a script,
this file is the peer that the kill test starts through python3 -m starling.launch."""
import json
import os
import signal
import subprocess
import sys
import threading

if __name__ != "__main__":
    import pytest
    torch = pytest.importorskip("torch")
    import starling
    import starling.torch as st
else:
    import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")


def make_model(seed, unused=False):
    """A small MLP (2499 parameters; 5 buckets at bucket_mb=0.004); with ``unused``
    an extra layer that forward never calls."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(8, 32)
            self.skip = torch.nn.Linear(32, 32) if unused else None
            self.b = torch.nn.Linear(32, 32)
            self.c = torch.nn.Linear(32, 32)
            self.d = torch.nn.Linear(32, 3)

        def forward(self, x, use_c=True):
            h = torch.relu(self.a(x))
            h = torch.relu(self.b(h))
            if use_c:
                h = torch.relu(self.c(h))
            return self.d(h)
    torch.manual_seed(seed)
    return Net()


def batch(member, it, n=6):
    g = torch.Generator().manual_seed(1000 * member + it)
    return torch.randn(n, 8, generator=g), torch.randn(n, 3, generator=g)


def loss_of(model, x, y, **kw):
    return torch.nn.functional.mse_loss(model(x, **kw), y)


def flat_grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def twin_models(n, **kw):
    """n pairs (bucketed, reference) of identical models."""
    return [(make_model(0, **kw), make_model(0, **kw)) for _ in range(n)]


def test_matches_allreduce_gradients(fresh_group):
    check_matches(fresh_group, view=False)


def test_matches_allreduce_gradients_grad_as_view(fresh_group):
    check_matches(fresh_group, view=True)


def check_matches(fresh_group, view):
    """3 members, 5 buckets, 3 SGD steps: the bucketed gradients and parameters are
    bit-identical across members and equal to copy-then-reduce within float tolerance."""
    g = fresh_group(3)
    models = twin_models(3)

    def fn(c, i):
        m, ref = models[i]
        sync = st.GradientSync(c, m, bucket_mb=0.004, grad_as_view=view)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
        grads, started = [], []
        for it in range(3):
            x, y = batch(i, it)
            for mm, o in ((m, opt), (ref, opt_ref)):
                o.zero_grad()
                loss_of(mm, x, y).backward()
            started.append(sync.started)  # every bucket started during backward
            assert sync.finish() is False
            assert st.allreduce_gradients(c, ref) is False
            grads.append((flat_grads(m), flat_grads(ref)))
            opt.step()
            opt_ref.step()
        params = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
        assert started == [5, 5, 5] and sync.started == 0
        return sync.layout, grads, params, sync.hook_threads == {threading.get_ident()}
    res = g.run(fn)
    layout = res[0][0]
    assert layout == [["d.bias", "d.weight", "c.bias"], ["c.weight"], ["b.bias"],
                      ["b.weight"], ["a.bias", "a.weight"]]  # reverse order, <= 4 KiB
    assert sorted(n for b in layout for n in b) == sorted(
        n for n, _ in models[0][0].named_parameters())
    for r in res:
        assert r[3], "the hooks ran on the thread that called backward"
        for (gb, gr), (gb0, _) in zip(r[1], res[0][1]):
            assert torch.equal(gb, gb0)                 # bit parity across members
            assert torch.allclose(gb, gr, rtol=1e-5, atol=1e-7), (gb - gr).abs().max()
        assert torch.equal(r[2], res[0][2])
    # the members' gradients differed before averaging (the test means something)
    assert not torch.allclose(res[0][1][0][0], res[0][1][0][1] * 0)


def test_unused_parameters(fresh_group):
    """A layer no member uses and a layer only member 1 skips (its bucket is started by
    finish() there, during backward elsewhere): the same averages as allreduce_gradients
    (a parameter without a gradient contributes zeros)."""
    g = fresh_group(3)
    models = twin_models(3, unused=True)

    def fn(c, i):
        m, ref = models[i]
        sync = st.GradientSync(c, m, bucket_mb=0.004)
        out = []
        for it in range(2):
            x, y = batch(i, it)
            for mm in (m, ref):
                mm.zero_grad(set_to_none=True)
                loss_of(mm, x, y, use_c=(i != 1)).backward()
            sync.finish()
            st.allreduce_gradients(c, ref)
            out.append((flat_grads(m), flat_grads(ref)))
        return out, m.skip.weight.grad
    res = g.run(fn)
    for r in res:
        for (gb, gr), (gb0, _) in zip(r[0], res[0][0]):
            assert torch.equal(gb, gb0)
            assert torch.allclose(gb, gr, rtol=1e-5, atol=1e-7)
        assert torch.count_nonzero(r[1]) == 0  # the never-used layer: zeros, not None


def test_gradient_accumulation_with_no_sync(fresh_group):
    """Two backward calls, the first inside no_sync(): the average of the accumulated
    gradients. A second backward outside no_sync before finish() is refused before it
    touches .grad, and finish() still completes the iteration."""
    g = fresh_group(3)
    models = twin_models(3)

    def fn(c, i):
        m, ref = models[i]
        sync = st.GradientSync(c, m, bucket_mb=0.004)
        x0, y0 = batch(i, 0)
        x1, y1 = batch(i, 1)
        with sync.no_sync():
            loss_of(m, x0, y0).backward()
        loss_of(m, x1, y1).backward()
        sync.finish()
        loss_of(ref, x0, y0).backward()
        loss_of(ref, x1, y1).backward()
        st.allreduce_gradients(c, ref)
        ok = torch.allclose(flat_grads(m), flat_grads(ref), rtol=1e-5, atol=1e-7)
        # refused: backward twice without finish()
        m.zero_grad()
        loss_of(m, x0, y0).backward()
        before = flat_grads(m).clone()
        try:
            loss_of(m, x1, y1).backward()
            refused = None
        except starling.Invalid as e:
            refused = str(e)
        unchanged = torch.equal(flat_grads(m), before)
        sync.finish()
        return ok, flat_grads(m), refused, unchanged
    res = g.run(fn)
    for r in res:
        assert r[0]
        assert torch.equal(r[1], res[0][1])
        assert r[2] and "no_sync" in r[2], r[2]
        assert r[3]


def test_refusals(fresh_group):
    g = fresh_group(1)
    m = make_model(0)
    with pytest.raises(starling.Invalid, match="positive"):
        st.GradientSync(g.comms[0], m, bucket_mb=0)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(starling.Invalid, match="requires a gradient"):
        st.GradientSync(g.comms[0], m)


def test_peer_killed_mid_backward_survivors_agree():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([PKG, e.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "starling.launch", "--peers", "3",
                        "--timeout-ms", "1000", "--no-prefix", os.path.abspath(__file__)], env=e,
                       capture_output=True, text=True, timeout=90)
    out = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert p.returncode == 128 + signal.SIGKILL, p.stderr
    assert sorted(o["hint"] for o in out) == [0, 2], p.stderr
    a, b = out
    assert a["size"] == b["size"] == 2
    assert a["recoveries"] == b["recoveries"] == 1
    assert a["hash"] == b["hash"] and a["params"] == b["params"]
    assert a["steps"] == b["steps"] == STEPS
    # Every bucket of every step is either the average over all three members (it
    # committed before the kill) or over the two survivors (redone), never anything
    # else (e.g. an average of averages); the kill step redid only its last bucket.
    for o in out:
        assert all(k in ("all", "survivors") for step in o["kinds"] for k in step), o
    assert a["kinds"] == b["kinds"]
    assert a["kinds"][KILL_STEP] == ["all"] * 4 + ["survivors"]
    assert all(k == "all" for step in a["kinds"][:KILL_STEP] for k in step)
    assert all(k == "survivors" for step in a["kinds"][KILL_STEP + 1:] for k in step)


STEPS, KILL_STEP = 6, 3


def _peer():
    """3 peers, STEPS SGD steps with GradientSync (5 buckets); hint 1 SIGKILLs itself in
    step KILL_STEP from a hook on the first layer's weight (in the last bucket), once the
    four other buckets have completed. Every survivor also recomputes each
    member's gradient (the data is a function of hint and step) to classify every
    bucket's result."""
    import hashlib
    import torch
    import starling
    import starling.torch as st
    torch.set_num_threads(1)
    hint = int(os.environ["STARLING_RANK_HINT"])
    comm = starling.Communicator.from_env(starling.Config(timeout_ms=1000,
                                                          op_timeout_ms=30000))
    comm.update_topology()
    model = make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    st.materialize(opt)
    st.register_model(comm, model, opt)
    comm.sync()
    sync = st.GradientSync(comm, model, bucket_mb=0.004)
    params = list(model.parameters())
    alive = [0, 1, 2]
    kinds = []
    for step in range(STEPS):
        # reference gradients of every member, from the current (shared) parameters
        ref = {}
        for h in alive:
            model.zero_grad()
            x, y = batch(h, step)
            with sync.no_sync():
                loss_of(model, x, y).backward()
            ref[h] = [q.grad.clone() for q in params]
        model.zero_grad()
        handle = None
        if hint == 1 and step == KILL_STEP:
            def die(_grad):
                # Let the buckets already started complete (so that the kill step has
                # both kinds of bucket), then die before the last one starts.
                for b in sync.buckets[:sync.started]:
                    b.req.wait()
                os.kill(os.getpid(), signal.SIGKILL)
            handle = model.a.weight.register_hook(die)
        x, y = batch(hint, step)
        loss_of(model, x, y).backward()
        if sync.finish():
            alive = [0, 2]
        if handle is not None:
            handle.remove()
        row = []
        for b in sync.buckets:
            got = torch.cat([params[i].grad.reshape(-1) for i in b.params])

            def avg(hs):
                return torch.cat([sum(ref[h][i] for h in hs).reshape(-1) / len(hs)
                                  for i in b.params])
            k = "other"
            for name, hs in (("all", [0, 1, 2]), ("survivors", [0, 2])):
                if all(h in ref for h in hs) and torch.allclose(got, avg(hs), rtol=1e-5,
                                                                atol=1e-7):
                    k = name
                    break
            row.append(k)
        kinds.append(row)
        opt.step()
    h = hashlib.sha256(b"".join(q.detach().numpy().tobytes() for q in params)).hexdigest()
    os.write(1, (json.dumps({"hint": hint, "size": comm.size, "steps": STEPS,
                             "recoveries": sync.recoveries, "hash": comm.state_hash(),
                             "params": h, "kinds": kinds}) + "\n").encode())
    comm.close()


if __name__ == "__main__":
    _peer()
