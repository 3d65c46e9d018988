"""starling.torch.StreamingDiLoCo: the fragment plan, the schedule, one member against a
hand-written reference, members in threads and in processes (overlap, int8), a peer
SIGKILLed, newcomers, peak bytes against DiLoCo, refusals. Skipped without torch. Run as a
script, this file is the peer that the process tests start through python3 -m
starling.launch (its argument: a JSON object of settings)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

if __name__ != "__main__":
    torch = pytest.importorskip("torch")
    import starling
    import starling.torch as st
    from starling.streaming import plan_fragments

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")


def small_model(seed):
    """Tensors of 24, 6, 36, 6, 12, 2 floats (86)."""
    import torch
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6),
                               torch.nn.Tanh(), torch.nn.Linear(6, 2))


def deep_model(seed, layers=4, width=32):
    """`layers` equal Linear layers: 2 * layers tensors, layers * (width + 1) * width floats."""
    import torch
    torch.manual_seed(seed)
    mods = []
    for _ in range(layers):
        mods += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    return torch.nn.Sequential(*mods)


def flat(model):
    import torch
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def inner_step(model, opt, gen, inputs=4):
    import torch
    x = torch.randn(8, inputs, generator=gen)
    opt.zero_grad()
    (model(x) - x[:, :1]).pow(2).mean().backward()
    opt.step()


# ---------------------------------------------------------------- fragments, schedule

def test_plan_partitions_every_tensor_once_and_balances():
    import random
    rnd = random.Random(5)
    for _ in range(200):
        n = rnd.randint(1, 30)
        sizes = [rnd.choice([1, 3, 10, 100, 1000]) for _ in range(n)]
        p = rnd.randint(1, n)
        plan = plan_fragments(sizes, p)
        assert len(plan) == p
        assert [i for r in plan for i in r] == list(range(n))  # each once, in order
        assert all(len(r) > 0 for r in plan)
        total, big = sum(sizes), max(sizes)
        for r in plan:  # within one tensor of the equal share
            assert sum(sizes[i] for i in r) <= total / p + big
    assert plan_fragments([5] * 8, 4) == [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    # a layer's weight and bias stay together when that balances best
    assert plan_fragments([1024, 32] * 4, 4) == [range(0, 2), range(2, 4), range(4, 6),
                                                 range(6, 8)]
    assert plan_fragments([24, 6, 36, 6, 12, 2], 3) == [range(0, 2), range(2, 3),
                                                         range(3, 6)]


def test_fragments_cover_the_flat_vector(fresh_group):
    g = fresh_group(1)
    m = deep_model(0, layers=8, width=8)
    sd = st.StreamingDiLoCo(g.comms[0], m, torch.optim.SGD(m.parameters(), lr=0.1),
                            inner_steps=8, fragments=4, overlap=2)
    fr = sd.fragments
    assert [f.index for f in fr] == [0, 1, 2, 3]
    assert [(f.first, f.stop) for f in fr] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert [f.count for f in fr] == [144] * 4 and fr[0].offset == 0
    assert all(a.offset + a.count == b.offset for a, b in zip(fr, fr[1:]))
    assert fr[-1].offset + fr[-1].count == sd.count == sum(p.numel() for p in m.parameters())
    assert len({f.tag for f in fr}) == 4  # error feedback per fragment
    assert torch.equal(sd.theta, flat(m))


def test_schedule_staggered_offsets(fresh_group):
    g = fresh_group(1)
    m = deep_model(0, layers=4, width=4)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sd = st.StreamingDiLoCo(g.comms[0], m, opt, inner_steps=10, fragments=4, overlap=2,
                            prefix="a/")
    assert [f.offset_step for f in sd.fragments] == [0, 2, 5, 7]  # p * H // P
    assert [sd.fragment_at(t) for t in range(0, 21)] == [
        None, None, 1, None, None, 2, None, 3, None, None, 0,
        None, 1, None, None, 2, None, 3, None, None, 0]
    # observed: which fragment of theta changes after each step (tau = 2 steps later)
    gen = torch.Generator().manual_seed(0)
    changed, flights = [], []
    for t in range(1, 23):
        before = sd.theta.clone()
        inner_step(m, opt, gen)
        applied = sd.step()
        assert sd.t == t
        diff = [f.index for f in sd.fragments
                if not torch.equal(before[f.offset:f.offset + f.count],
                                   sd.theta[f.offset:f.offset + f.count])]
        assert applied == bool(diff)
        changed.append((t, diff))
        flights.append(sd.in_flight)
    assert [c for c in changed if c[1]] == [(4, [1]), (7, [2]), (9, [3]), (12, [0]),
                                             (14, [1]), (17, [2]), (19, [3]), (22, [0])]
    # at most one fragment in flight: completed before the next one is issued
    assert flights[:12] == [None, 1, 1, None, 2, 2, 3, 3, None, 0, 0, 1]


# ---------------------------------------------------------------- one member: reference

def reference(model, opt, steps, h, parts, tau, alpha, lr, mu, seed):
    """Streaming DiLoCo with one member written out on flat vectors: `parts` is a list
    of (start, stop) float ranges, fragment p issued when t % h == p * h // P."""
    import torch
    P = len(parts)
    params = list(model.parameters())

    def get():
        return torch.cat([q.detach().reshape(-1) for q in params])

    def put(v):
        o = 0
        with torch.no_grad():
            for q in params:
                q.copy_(v[o:o + q.numel()].view_as(q))
                o += q.numel()
    theta = get()
    mom = torch.zeros_like(theta)
    pending = None  # (p, issue step, delta)
    gen = torch.Generator().manual_seed(seed)

    def apply(p, d):
        a, b = parts[p]
        mom[a:b] = mu * mom[a:b] + d
        theta[a:b] = theta[a:b] - lr * (d + mu * mom[a:b])
        local = get()
        local[a:b] = alpha * local[a:b] + (1 - alpha) * theta[a:b]
        put(local)
    for t in range(1, steps + 1):
        inner_step(model, opt, gen)
        if pending and pending[1] + tau <= t:
            apply(pending[0], pending[2])
            pending = None
        for p in range(P):
            if t % h == p * h // P:
                a, b = parts[p]
                pending = (p, t, theta[a:b] - get()[a:b])
                if tau == 0:
                    apply(p, pending[2])
                    pending = None
    return theta, mom


@pytest.mark.parametrize("tau,alpha,opt_kind", [(0, 0.5, "sgd"), (2, 0.5, "sgd"),
                                                (1, 0.0, "adam"), (3, 1.0, "sgd")])
def test_one_member_matches_reference(fresh_group, tau, alpha, opt_kind):
    g = fresh_group(1)

    def make_opt(m):
        if opt_kind == "adam":
            return torch.optim.Adam(m.parameters(), lr=1e-2)
        return torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    m, r = small_model(3), small_model(3)
    opt, ropt = make_opt(m), make_opt(r)
    h, steps = 9, 31
    sd = st.StreamingDiLoCo(g.comms[0], m, opt, inner_steps=h, fragments=3, overlap=tau,
                            alpha=alpha, outer_lr=0.7, outer_momentum=0.9)
    sd.start()  # else the first step() would start, loading theta over the first inner step
    gen = torch.Generator().manual_seed(11)
    for _ in range(steps):
        inner_step(m, opt, gen)
        sd.step()
    parts = [(f.offset, f.offset + f.count) for f in sd.fragments]
    assert parts == [(0, 30), (30, 66), (66, 86)]
    theta, mom = reference(r, ropt, steps, h, parts, tau, alpha, 0.7, 0.9, 11)
    assert torch.allclose(sd.theta, theta, atol=1e-6, rtol=0)
    assert torch.allclose(sd.momentum, mom, atol=1e-6, rtol=0)
    assert torch.allclose(flat(m), flat(r), atol=1e-6, rtol=0)
    assert sd.syncs == sum(1 for t in range(1, steps - tau + 1) if sd.fragment_at(t) is not None)
    assert float(sd.momentum.abs().sum()) > 0


def test_one_fragment_no_overlap_alpha0_is_diloco_bit_for_bit(fresh_group):
    g = fresh_group(1)
    m1, m2 = small_model(1), small_model(1)
    o1 = torch.optim.SGD(m1.parameters(), lr=0.1)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.1)
    sd = st.StreamingDiLoCo(g.comms[0], m1, o1, inner_steps=4, fragments=1, overlap=0,
                            alpha=0.0)
    dl = st.DiLoCo(g.comms[0], m2, o2, inner_steps=4)
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for _ in range(13):
        inner_step(m1, o1, g1)
        inner_step(m2, o2, g2)
        assert sd.step() == dl.step()
    assert torch.equal(flat(m1), flat(m2))
    assert torch.equal(sd.theta, dl.theta) and torch.equal(sd.momentum, dl.momentum)


# ---------------------------------------------------------------- members in threads

def run_members(g, steps, make, seeds=None, check_every=None, **kw):
    """Every member trains its own model for `steps` inner steps, then finish(). Returns
    per member (hashes seen at round ends, final hash, final params, recoveries)."""
    torch.set_num_threads(1)

    def fn(c, i):
        m = make(i if seeds is None else seeds[i])
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        sd = st.StreamingDiLoCo(c, m, opt, **kw)
        gen = torch.Generator().manual_seed(100 + i)
        hashes = []
        while sd.t < steps:
            inner_step(m, opt, gen, inputs=m[0].in_features)
            sd.step()
            if check_every and sd.t % check_every == 0 and sd.in_flight is None:
                hashes.append(sd.state_hash())
        sd.finish()
        return hashes, sd.state_hash(), flat(m), sd.recoveries, sd
    return g.run(fn)


def test_three_members_agree_blocking(fresh_group):
    g = fresh_group(3)
    res = run_members(g, 24, small_model, inner_steps=8, fragments=3, overlap=0,
                      alpha=0.5, check_every=4)
    assert len(res[0][0]) == 6
    for r in res[1:]:
        assert r[0] == res[0][0]  # equal state after every checked step
        assert r[1] == res[0][1]
        assert torch.equal(r[2], res[0][2])
    assert torch.equal(res[0][2], res[0][4].theta)  # finish(): model = theta


def test_two_members_overlap_int8_agree(fresh_group):
    g = fresh_group(2)
    res = run_members(g, 32, small_model, inner_steps=8, fragments=2, overlap=3,
                      alpha=0.5, codec="int8+ef")
    assert res[0][1] == res[1][1]
    assert torch.equal(res[0][2], res[1][2])
    assert torch.equal(res[0][4].momentum, res[1][4].momentum)


# ---------------------------------------------------------------- bytes

def test_peak_bytes_per_step_about_one_over_p_of_diloco(fresh_group):
    """Bytes are counted, not timed: tau = 0, so each sync's bytes fall in its step."""
    g = fresh_group(2)
    torch.set_num_threads(1)

    def fn(c, i):
        out = {}
        for kind in ("diloco", "streaming"):
            m = deep_model(i)
            opt = torch.optim.SGD(m.parameters(), lr=0.05)
            if kind == "diloco":
                d = st.DiLoCo(c, m, opt, inner_steps=8, prefix="d/")
            else:
                d = st.StreamingDiLoCo(c, m, opt, inner_steps=8, fragments=4, overlap=0,
                                       prefix="s/")
            d.start()
            gen = torch.Generator().manual_seed(i)
            peak = total = 0
            for _ in range(16):
                inner_step(m, opt, gen, inputs=32)
                b = c.bytes_sent
                d.step()
                sent = c.bytes_sent - b
                peak, total = max(peak, sent), total + sent
            out[kind] = (peak, total)
        return out
    res = g.run(fn)
    for r in res:
        ratio = r["streaming"][0] / r["diloco"][0]
        print(f"peak bytes per step: diloco {r['diloco'][0]} B, streaming P=4 "
              f"{r['streaming'][0]} B (ratio {ratio:.3f}); total {r['diloco'][1]} B vs "
              f"{r['streaming'][1]} B")
        assert ratio < 0.6
        # the same bytes overall: each fragment once per round
        assert 0.8 < r["streaming"][1] / r["diloco"][1] < 1.25


# ---------------------------------------------------------------- joins

def test_newcomer_joins_at_round_end(fresh_group):
    g = fresh_group(3)
    torch.set_num_threads(1)
    steps, h = 24, 6
    joined = threading.Event()
    out = {}

    def train(comm, model, key):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        sd = st.StreamingDiLoCo(comm, model, opt, inner_steps=h, fragments=3, overlap=1,
                                update_every=1)
        gen = torch.Generator().manual_seed(key if isinstance(key, int) else 77)
        sd.start()
        while sd.t < steps:
            inner_step(model, opt, gen)
            sd.step()
            if key == 0 and sd.t == h + 1:
                joined.set()
            time.sleep(0.01)
        sd.finish()
        out[key] = (comm.size, sd.t, sd.state_hash(), flat(model))

    def newcomer():
        joined.wait(20)
        c = starling.Communicator(g.coord, "fresh0", "s3cret",
                                  starling.Config(timeout_ms=1000, op_timeout_ms=15000))
        try:
            train(c, small_model(7), "new")
        finally:
            c.close()
    t = threading.Thread(target=newcomer, daemon=True)
    t.start()
    g.run(lambda c, i: train(c, small_model(i), i))
    t.join(30)
    assert not t.is_alive()
    assert set(out) == {0, 1, 2, "new"}
    assert {v[0] for v in out.values()} == {4} and {v[1] for v in out.values()} == {steps}
    assert len({v[2] for v in out.values()}) == 1
    for v in out.values():
        assert torch.equal(v[3], out[0][3])


def test_newcomer_admitted_by_a_recovery_takes_part_in_the_redo(fresh_group):
    """Member 2 leaves (closes) while fragment 1's sync is in flight, a newcomer waits to
    join: the survivors' recovery admits it, it takes part in the redone sync with zeros,
    and every one ends with the same state."""
    g = fresh_group(3)
    torch.set_num_threads(1)
    steps = 20
    go = threading.Event()
    out = {}

    def train(comm, model, key):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        sd = st.StreamingDiLoCo(comm, model, opt, inner_steps=8, fragments=2, overlap=2)
        gen = torch.Generator().manual_seed(key if isinstance(key, int) else 77)
        sd.start()
        if key == "new":  # no update_every: only a recovery admits it, inside a redo
            assert sd.syncs == 1 and sd.t > 12 and int(sd.phase[0]) == 0
        while sd.t < steps:
            inner_step(model, opt, gen)
            sd.step()
            if key == 2 and sd.t == 12 and sd.in_flight == 1:
                go.set()
                time.sleep(1.0)  # the newcomer registers with the coordinator meanwhile
                comm.close()
                return
        sd.finish()
        out[key] = (comm.size, sd.t, sd.state_hash(), flat(model), sd.recoveries)

    def newcomer():
        go.wait(20)
        c = starling.Communicator(g.coord, "fresh0", "s3cret",
                                  starling.Config(timeout_ms=1000, op_timeout_ms=15000))
        try:
            train(c, small_model(7), "new")
        finally:
            c.close()
    t = threading.Thread(target=newcomer, daemon=True)
    t.start()
    g.run(lambda c, i: train(c, small_model(i), i))
    t.join(30)
    assert not t.is_alive()
    assert set(out) == {0, 1, "new"}, out.keys()
    assert {v[0] for v in out.values()} == {3} and {v[1] for v in out.values()} == {steps}
    assert out[0][4] >= 1 and out[1][4] >= 1
    assert len({v[2] for v in out.values()}) == 1
    for v in out.values():
        assert torch.equal(v[3], out[0][3])


# ---------------------------------------------------------------- processes

def launch(peers, settings, timeout=60):
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([PKG, e.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "starling.launch", "--peers", str(peers),
                        "--timeout-ms", "1000", os.path.abspath(__file__),
                        json.dumps(settings)], env=e, capture_output=True, text=True,
                       timeout=timeout)
    out = [json.loads(x.split("]: ", 1)[1]) for x in p.stdout.splitlines()
           if x.startswith("[rank") and "]: {" in x]  # the launcher's [rankN]: prefix
    return p, out


def test_processes_overlap_int8_agree():
    p, out = launch(2, {"overlap": 2, "codec": "int8", "steps": 40})
    assert p.returncode == 0, p.stderr
    assert len(out) == 2, p.stderr
    a, b = out
    assert a["hash"] == b["hash"] and a["params"] == b["params"]
    assert a["t"] == b["t"] == 40 and a["syncs"] == b["syncs"] > 0
    assert a["loss"] < a["loss0"]


def test_processes_peer_killed_survivors_agree():
    p, out = launch(3, {"overlap": 1, "steps": 40, "kill": 1, "kill_at": 18})
    assert p.returncode == 128 + signal.SIGKILL, p.stderr
    assert sorted(o["hint"] for o in out) == [0, 2], p.stderr
    a, b = out
    assert a["size"] == b["size"] == 2 and a["recoveries"] >= 1 and b["recoveries"] >= 1
    assert a["t"] == b["t"] == 40
    assert a["hash"] == b["hash"] and a["params"] == b["params"]
    assert a["loss0"] == b["loss0"]  # the same start after the first sync
    assert a["loss"] < a["loss0"]


def _peer(settings):
    """A toy regression, H = 8, P = 4, Adam inner steps. With "kill": that hint SIGKILLs
    itself after inner step kill_at once its fragment sync is issued (the others then
    fail in completing it)."""
    import hashlib
    import torch
    import starling
    import starling.torch as st
    torch.set_num_threads(1)
    hint = int(os.environ["STARLING_RANK_HINT"])
    comm = starling.Communicator.from_env(starling.Config(timeout_ms=1000,
                                                          op_timeout_ms=30000))
    comm.update_topology()
    model = deep_model(hint, layers=4, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sd = st.StreamingDiLoCo(comm, model, opt, inner_steps=8, fragments=4,
                            overlap=settings.get("overlap", 1), alpha=0.5,
                            codec=settings.get("codec"))
    g = torch.Generator().manual_seed(hint)
    w = torch.linspace(-1, 1, 64).reshape(8, 8)

    def loss_of(x):
        return torch.nn.functional.mse_loss(model(x), torch.tanh(x @ w))
    xe = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    sd.start()
    with torch.no_grad():
        loss0 = float(loss_of(xe))
    while sd.t < settings["steps"]:
        x = torch.randn(32, 8, generator=g)
        loss = loss_of(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sd.step()
        if hint == settings.get("kill") and sd.t == settings["kill_at"]:
            assert sd.in_flight is not None
            os.kill(os.getpid(), signal.SIGKILL)
    sd.finish()
    with torch.no_grad():
        loss1 = float(loss_of(xe))
    h = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                for p in model.parameters())).hexdigest()
    os.write(1, (json.dumps({"hint": hint, "size": comm.size, "t": sd.t, "syncs": sd.syncs,
                             "recoveries": sd.recoveries, "hash": sd.state_hash(),
                             "params": h, "loss0": loss0, "loss": loss1}) + "\n").encode())
    comm.close()


# ---------------------------------------------------------------- refusals

def test_refusals(fresh_group):
    g = fresh_group(1)
    c = g.comms[0]
    m = small_model(0)  # 6 tensors
    opt = torch.optim.SGD(m.parameters(), lr=0.1)

    made = []

    def make(**kw):
        made.append(kw)
        args = dict(inner_steps=8, fragments=2, overlap=1, prefix=f"r{len(made)}/")
        args.update(kw)
        return st.StreamingDiLoCo(c, m, opt, **args)
    cases = [
        (dict(fragments=0), r"fragments: must be at least 1, got 0"),
        (dict(fragments=7), r"fragments: 7 fragments of 6 parameter tensors"),
        (dict(fragments=5, inner_steps=4, overlap=0), r"inner_steps >= fragments"),
        (dict(overlap=-1), r"overlap: must be at least 0"),
        (dict(overlap=5), r"overlap: 5 overlapped steps exceed .* \(need overlap <= 4\)"),
        (dict(fragments=4, overlap=3), r"need overlap <= 2"),
        (dict(alpha=1.5), r"alpha: .* \[0, 1\], got 1.5"),
        (dict(alpha=-0.1), r"alpha:"),
        (dict(alpha=float("nan")), r"alpha: must be finite"),
        (dict(inner_steps=0), r"inner_steps: must be at least 1"),
        (dict(inner_steps=2.5), r"inner_steps: expected an integer"),
        (dict(outer_lr=float("inf")), r"outer_lr: must be finite"),
        (dict(update_every=0), r"update_every: must be at least 1"),
    ]
    for kw, msg in cases:
        with pytest.raises(starling.Invalid, match=msg):
            make(**kw)
    m64 = small_model(0).double()
    with pytest.raises(starling.Invalid, match=r"0.weight: .*float32.*float64"):
        st.StreamingDiLoCo(c, m64, opt)
    with pytest.raises(starling.Invalid, match="no parameters"):
        st.StreamingDiLoCo(c, torch.nn.Tanh(), opt)
    mt = torch.nn.Linear(4, 4)
    mt.weight.data = mt.weight.data.t()
    with pytest.raises(starling.Invalid, match="weight.*not contiguous"):
        st.StreamingDiLoCo(c, mt, opt, fragments=1)
    # the edges are accepted
    make(fragments=6, inner_steps=6, overlap=1, alpha=0.0)
    make(fragments=2, inner_steps=8, overlap=4, alpha=1.0)


if __name__ == "__main__":
    _peer(json.loads(sys.argv[1]))
