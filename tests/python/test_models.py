"""The language-model workload: starling.models (GPT), starling.textdata (corpus, split,
batches, eval_loss), and one short 2-peer DiLoCo run of bench/lm_train.py on the
synthetic corpus. Needs torch (skipped without it), not the fortunes package."""
import math
import os
import re
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from starling import textdata  # noqa: E402
from starling.models import GPT, GPTConfig, param_count  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PKG = os.path.join(ROOT, "python")
TINY = GPTConfig(depth=2, width=32, heads=4, context=16)


def test_forward_shape_and_causal_mask():
    m = GPT(TINY, seed=1)
    x = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
    logits = m(x)
    assert logits.shape == (3, 16, 256) and logits.dtype == torch.float32
    assert m(x[:, :5]).shape == (3, 5, 256)  # shorter than the context
    x2 = x.clone()
    x2[:, 9:] = (x2[:, 9:] + 1) % 256       # change every byte from position 9 on
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.equal(a[:, :9], b[:, :9])   # earlier positions do not see later bytes
    assert not torch.allclose(a[:, 9:], b[:, 9:])
    with pytest.raises(ValueError):
        m(torch.zeros(1, 17, dtype=torch.int64))


def test_default_config_size_and_parameters():
    cfg = GPTConfig()
    m = GPT(cfg)
    n = param_count(m)
    assert n == param_count(cfg) == 10_795_008  # the figure in the module docstring
    assert 10_000_000 <= n <= 20_000_000
    assert m.blocks[0].attn.qkv.weight.shape == (3 * cfg.width, cfg.width)
    # tied head: no parameter of its own; the state holds parameters only (no mask)
    assert [n_ for n_, _ in m.named_parameters()][:2] == ["tok.weight", "pos.weight"]
    assert not any("head" in n_ for n_ in m.state_dict())
    assert len(list(m.parameters())) == len(m.state_dict())
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in m.parameters())
    assert param_count(TINY) == param_count(GPT(TINY))
    with pytest.raises(ValueError):
        GPTConfig(width=30, heads=4)


def test_init_deterministic_by_seed_and_leaves_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = GPT(TINY, seed=7), GPT(TINY, seed=7), GPT(TINY, seed=8)
    assert torch.equal(torch.rand(3), expected)  # the private generator only
    pa, pb, pc = (list(m.parameters()) for m in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc))
    # GPT-2 scale: residual projections smaller than the rest
    assert a.blocks[0].attn.proj.weight.std() < a.blocks[0].fc.weight.std()


def test_split_is_by_document_disjoint_and_deterministic():
    data = textdata.synthetic_corpus(40_000, seed=3)
    assert data == textdata.synthetic_corpus(40_000, seed=3)
    assert data != textdata.synthetic_corpus(40_000, seed=4)
    docs = textdata.documents(data)
    train, held = textdata.split(data)
    assert (train, held) == textdata.split(data)
    tdocs, hdocs = textdata.documents(train), textdata.documents(held)
    assert hdocs == docs[19::20]
    assert tdocs == [d for i, d in enumerate(docs) if i % 20 != 19]
    assert len(tdocs) + len(hdocs) == len(docs) and len(hdocs) >= 10
    assert 0.03 < len(held) / len(data) < 0.08


def test_synthetic_fallback_is_announced(tmp_path, monkeypatch, capsys):
    data, source = textdata.load_corpus(str(tmp_path / "missing"), fallback_bytes=5000)
    err = capsys.readouterr().err
    assert source.startswith("synthetic") and len(data) >= 5000
    assert "WARNING" in err and "SYNTHETIC" in err and "missing" in err
    monkeypatch.setattr(textdata, "FORTUNES_DIR", str(tmp_path / "no-fortunes"))
    data2, source2 = textdata.load_corpus(fallback_bytes=5000)
    err = capsys.readouterr().err
    assert data2 == data and source2.startswith("synthetic")
    assert "'fortunes'" in err and "apt-get install -y --no-install-recommends fortunes" in err
    textdata.load_corpus("synthetic", fallback_bytes=5000)  # asked for: no warning
    assert capsys.readouterr().err == ""


def test_fortune_files_are_read_without_indexes(tmp_path, capsys):
    (tmp_path / "a").write_bytes(b"one\n%\ntwo\nlines\n%\n")
    (tmp_path / "a.dat").write_bytes(b"\x00\x00\x00\x02binary%\n")
    os.symlink("a", tmp_path / "a.u8")
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "rude").write_bytes(b"no\n%\n")
    (tmp_path / "b").write_bytes(b"three\n%\n")
    data, source = textdata.load_corpus(str(tmp_path))
    assert data == b"one\n%\ntwo\nlines\n%\nthree\n%\n" and "3 documents" in source
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not os.path.isdir(textdata.FORTUNES_DIR), reason="fortunes absent")
def test_fortunes_corpus_when_installed():
    data, source = textdata.load_corpus()
    assert source.startswith("fortunes:") and len(textdata.documents(data)) > 10_000
    assert len(data) > 2_000_000


def test_batches_per_rank_deterministic_and_disjoint():
    data = textdata.synthetic_corpus(20_000)
    take = lambda seed, rank, world: [next(it) for it in
                                      [textdata.batches(data, 4, 16, seed, rank, world)]
                                      for _ in range(3)]
    a = take(0, 0, 2)
    x, y = a[0]
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one byte
    assert bytes(x[0].tolist()) in data
    b, c, d = take(0, 0, 2), take(0, 1, 2), take(1, 0, 2)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))      # same (seed, rank)
    assert not any(torch.equal(p[0], q[0]) for p, q in zip(a, c))  # another rank
    assert not any(torch.equal(p[0], q[0]) for p, q in zip(a, d))  # another seed
    # Shards: with the positions themselves as tokens, a window shows where it was read.
    pos = torch.arange(1000)
    for _ in range(20):
        y0 = next(textdata.batches(pos, 8, 16, 5, 0, 2))[1]
        y1 = next(textdata.batches(pos, 8, 16, 5, 1, 2))[1]
        assert int(y0.max()) < 500 <= int(y1.min())
    with pytest.raises(ValueError):
        next(textdata.batches(data[:20], 4, 16, 0, 0, 2))


def test_eval_loss_deterministic():
    m = GPT(TINY, seed=0)
    held = textdata.split(textdata.synthetic_corpus(40_000))[1]
    m.train()
    loss, ppl = textdata.eval_loss(m, held, 16, windows=8, batch=3)
    assert m.training  # mode restored
    assert (loss, ppl) == textdata.eval_loss(m, held, 16, windows=8, batch=3)
    assert math.isclose(ppl, math.exp(loss))
    assert abs(loss - math.log(256)) < 0.3  # a fresh model is near uniform
    assert math.isclose(textdata.eval_loss(m, held, 16, windows=8, batch=8)[0], loss,
                        rel_tol=1e-5)


def test_lm_train_diloco_two_peers_agree():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PKG, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "starling.launch", "--peers", "2", "--timeout-ms", "1000",
           os.path.join(ROOT, "bench", "lm_train.py"), "--algo", "diloco", "--depth", "1",
           "--width", "32", "--heads", "2", "--context", "16", "--steps", "30",
           "--inner-steps", "10", "--corpus", "synthetic", "--eval-every", "10",
           "--eval-windows", "16"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    done = re.findall(r"^\[rank(\d)\]: lm_train: rank \d done: algo diloco, steps 30, "
                      r"members 2, eval loss (\S+), ppl \S+, params ([0-9a-f]{16}),",
                      p.stdout, re.M)
    assert sorted(r for r, _, _ in done) == ["0", "1"], p.stdout + p.stderr
    (_, loss0, hash0), (_, loss1, hash1) = done
    assert hash0 == hash1 and loss0 == loss1
    assert math.isfinite(float(loss0)) and float(loss0) < math.log(256)


def test_lm_train_diloco_newcomer_joins():
    """2 members (--update-every 1) and, once rank 0 has evaluated step 100, a third
    process with --join: it is admitted at a round end, says at which step, trains the
    remaining steps, and the three end with the same parameters and eval loss."""
    import threading
    import starling
    steps = 2000
    coord = starling.Coordinator(listen="127.0.0.1:0", run="lmjoin", secret="j",
                                 config=starling.Config(timeout_ms=1000))
    lm = [sys.executable, os.path.join(ROOT, "bench", "lm_train.py"), "--algo", "diloco",
          "--depth", "1", "--width", "32", "--heads", "2", "--context", "16", "--steps",
          str(steps), "--inner-steps", "100", "--update-every", "1", "--corpus", "synthetic",
          "--eval-every", "100", "--eval-windows", "8", "--timeout-ms", "1000",
          "--op-timeout-ms", "60000"]
    procs = []

    def start(rank, extra, peers):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STARLING_") or k == "STARLING_LIB"}
        for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
        env.update(PYTHONPATH=os.pathsep.join([PKG, os.environ.get("PYTHONPATH", "")]),
                   STARLING_COORD=coord.address, STARLING_RUN="lmjoin", STARLING_SECRET="j",
                   STARLING_RANK_HINT=str(rank), RANK=str(rank), WORLD_SIZE="3",
                   OMP_NUM_THREADS="1")
        if peers:
            env["STARLING_PEERS"] = str(peers)
        procs.append(subprocess.Popen(lm + extra, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        start(0, [], 2)
        start(1, [], 2)
        first = []
        guard = threading.Timer(60, procs[0].kill)  # bounds the read: EOF once killed
        guard.start()
        try:
            for line in procs[0].stdout:
                first.append(line)
                if line.startswith("lm_train: step 100 eval"):
                    break
        finally:
            guard.cancel()
        assert any(x.startswith("lm_train: step 100 eval") for x in first), "".join(first)
        start(2, ["--join"], None)
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        coord.close()
    for rc, out, err in outs:
        assert rc == 0, out + err
    joined = re.search(r"^lm_train: rank 2 joined at step (\d+) \(round (\d+)\), 3 members",
                       outs[2][1], re.M)
    assert joined, outs[2][1] + outs[2][2]
    at = int(joined.group(1))
    assert at % 100 == 0 and 200 <= at < steps
    done = [re.search(r"^lm_train: rank \d done: algo diloco, steps %d, members 3, eval loss "
                      r"(\S+), ppl \S+, params ([0-9a-f]{16})," % steps, o, re.M)
            for _, o, _ in outs]
    assert all(done), [o for _, o, _ in outs]
    assert len({d.groups() for d in done}) == 1
