"""The torch.distributed backend (starling.distributed): unmodified DDP over
backend="starling" against DDP over gloo with the same seeds, a torchrun-style environment
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT only), every collective DDP and users call
through torch.distributed with tcp://, the refusals, STARLING_SECURITY, and Manager
surviving a SIGKILLed process. Skipped when torch or the extension (libtorch-dev,
pybind11-dev) is missing.

Run as a script, this file is one of the processes: `test_distributed.py MODE`."""
import json
import os
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")
WAIT_S = 120  # every wait on the processes is bounded

if __name__ != "__main__":
    import pytest
    pytest.importorskip("torch")
    sys.path.insert(0, PKG)
    try:
        import starling.distributed  # noqa: F401
    except ImportError as e:
        pytest.skip(f"torch backend not built: {e}", allow_module_level=True)
    import starling


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(mode, n, extra_env=None, keep_starling_env=False):
    """n processes of this file in `mode`, each with only torchrun's four variables for
    rendezvous (any STARLING_* but the library's path removed unless asked; SECOND_PORT
    is this test's, for a second group)."""
    port = free_port()
    procs = []
    for rank in range(n):
        env = {k: v for k, v in os.environ.items()
               if keep_starling_env or not k.startswith("STARLING_") or k == "STARLING_LIB"}
        for k in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "GROUP_RANK"):
            env.pop(k, None)
        env.update(RANK=str(rank), WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), PYTHONPATH=PKG, OMP_NUM_THREADS="1")
        env.update(extra_env or {})
        procs.append(subprocess.Popen([sys.executable, __file__, mode], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=WAIT_S)
            lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            results.append((p.returncode, lines[-1] if lines else None, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def test_ddp_matches_gloo_torchrun_env():
    """3 processes, torchrun's variables only: 8 DDP steps over gloo, then the same over
    starling (env:// both). starling's replicas are bit-identical, and equal to gloo's
    within float tolerance."""
    res = spawn("parity", 3, extra_env={"SECOND_PORT": str(free_port())})
    for rc, out, err in res:
        assert rc == 0 and out is not None, err
    runs = [out for _, out, _ in res]
    assert all(r["size"] == {"gloo": 3, "starling": 3} for r in runs)
    assert len({r["hash"]["starling"] for r in runs}) == 1
    import torch
    for r in runs:
        g = torch.tensor(r["params"]["gloo"])
        s = torch.tensor(r["params"]["starling"])
        assert torch.allclose(g, s, rtol=1e-5, atol=1e-6), (g - s).abs().max()
        # and training moved the parameters (not two copies of the initial ones)
        assert r["moved"] > 1e-3


def test_collectives_tcp_init_and_refusals():
    """3 processes, init_method=tcp://: all_reduce (every op, async Work), broadcast,
    all_gather, all_gather_into_tensor, reduce_scatter, barrier, and refused calls."""
    res = spawn("collectives", 3)
    for rc, out, err in res:
        assert rc == 0 and out is not None and out.get("ok"), err


def test_security_from_the_environment():
    """2 processes, torchrun's variables and STARLING_SECURITY=none: the group and the
    coordinator rank 0 hosts send clear frames (an encrypting peer is refused by that
    coordinator) and all_reduce works."""
    res = spawn("security", 2, extra_env={"STARLING_SECURITY": "none"})
    for rc, out, err in res:
        assert rc == 0 and out is not None and out.get("ok"), err
    assert res[0][1]["refused"] and not res[1][1]["refused"]


def check_shm(shm):
    res = spawn("shm", 2, extra_env={"STARLING_SHM": shm} if shm else None)
    for rc, out, err in res:
        assert rc == 0 and out is not None and out.get("ok"), err
        assert out["segments"] == (0 if shm == "0" else 2), out


def test_shm_by_default():
    """2 processes: the group's ring links go through shared memory (each rank maps two
    ring segments: its link to the other and the other's to it); all_reduce is exact."""
    check_shm("")


def test_shm_off_from_the_environment():
    """STARLING_SHM=0 reaches the backend: no ring segment, every link on TCP."""
    check_shm("0")


def test_bad_security_mode_raises_invalid(monkeypatch):
    """A bad mode is starling.Invalid: from the extension's constructor (before any
    connection), and from the backend's creator naming STARLING_SECURITY."""
    import datetime
    import types
    import starling.distributed as sd
    with pytest.raises(starling.Invalid, match="security mode 'bogus'"):
        sd.ProcessGroupStarling(0, 1, "127.0.0.1:1", "r", b"k", security="bogus")
    monkeypatch.setenv("STARLING_SECURITY", "bogus")
    opts = types.SimpleNamespace(timeout=datetime.timedelta(seconds=5))
    with pytest.raises(starling.Invalid, match="STARLING_SECURITY='bogus'"):
        sd._create(opts, None)


def test_manager_survives_sigkill():
    """3 processes under Manager (coordinator outside them, STARLING_COORD); rank 1
    SIGKILLs itself in the backward of step KILL_STEP. The two survivors recover once,
    finish every step, and their states are equal."""
    coord = starling.Coordinator(listen="127.0.0.1:0", run="ddp-kill", secret="k",
                                 config=starling.Config(timeout_ms=1000))
    try:
        res = spawn("manager", 3, keep_starling_env=True,
                    extra_env={"STARLING_COORD": coord.address, "STARLING_RUN": "ddp-kill",
                               "STARLING_SECRET": "k", "STARLING_TIMEOUT_MS": "1000"})
    finally:
        coord.close()
    assert res[1][0] == -signal.SIGKILL, res[1][2]
    survivors = [res[0], res[2]]
    for rc, out, err in survivors:
        assert rc == 0 and out is not None, err
    a, b = (out for _, out, _ in survivors)
    assert a["live_size"] == b["live_size"] == 2
    assert a["recoveries"] == b["recoveries"] == 1
    assert a["steps"] == b["steps"] == STEPS
    assert a["hash"] == b["hash"]
    assert a["params"] == b["params"]


# ---- the processes -------------------------------------------------------------------

STEPS, KILL_STEP = 8, 3


def make_model():
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 4))


def batch(rank, step):
    import torch
    g = torch.Generator().manual_seed(100 * rank + step)
    return torch.randn(16, 10, generator=g), torch.randn(16, 4, generator=g)


def flat(model):
    import torch
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def train_ddp(backend, rank):
    import hashlib
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group(backend)  # env://
    model = make_model()
    start = flat(model).clone()
    ddp = DDP(model, bucket_cap_mb=0.01)  # several buckets
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    for step in range(STEPS):
        x, y = batch(rank, step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()
    p = flat(model)
    size = dist.get_world_size()
    dist.destroy_process_group()
    return (p.tolist(), hashlib.sha256(p.numpy().tobytes()).hexdigest(), size,
            float((p - start).abs().max()))


def mode_parity():
    import torch
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    out = {"params": {}, "hash": {}, "size": {}}
    ports = (os.environ["MASTER_PORT"], os.environ["SECOND_PORT"])
    for backend, port in zip(("gloo", "starling"), ports):
        # a store of its own per group (the first one's port may be in TIME_WAIT)
        os.environ["MASTER_PORT"] = port
        params, h, size, moved = train_ddp(backend, rank)
        out["params"][backend], out["hash"][backend], out["size"][backend] = params, h, size
        out["moved"] = moved
    print(json.dumps(out), flush=True)


def expect_error(kind, fn, *words):
    try:
        fn()
    except kind as e:
        for w in words:
            assert w in str(e), f"{w!r} not in {e}"
        return
    raise AssertionError(f"{fn} did not raise {kind.__name__}")


def mode_collectives():
    import torch
    import torch.distributed as dist
    from starling.errors import Invalid, Unsupported
    torch.set_num_threads(1)
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    url = f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        del os.environ[k]
    dist.init_process_group("starling", init_method=url, rank=rank, world_size=n)
    assert dist.get_backend() == "starling"
    assert dist.get_rank() == rank and dist.get_world_size() == n

    base = torch.arange(6, dtype=torch.float32)
    tri = n * (n + 1) // 2  # sum of rank + 1 over the ranks
    for op, want in ((dist.ReduceOp.SUM, n * base + tri), (dist.ReduceOp.MIN, base + 1),
                     (dist.ReduceOp.MAX, base + n), (dist.ReduceOp.AVG, base + tri / n)):
        t = base + (rank + 1)
        dist.all_reduce(t, op=op)
        assert torch.equal(t, want), (op, t, want)
    # async: Work.wait() and the future; an int64 tensor
    t = torch.full((1000,), rank + 1, dtype=torch.int64)
    work = dist.all_reduce(t, async_op=True)
    assert work.wait()
    assert torch.equal(t, torch.full((1000,), n * (n + 1) // 2, dtype=torch.int64))
    t = torch.ones(3)
    fut = dist.all_reduce(t, async_op=True).get_future()
    fut.wait()
    assert torch.equal(t, torch.full((3,), float(n)))

    # a non-contiguous tensor: reduced through a dense copy written back
    t = torch.arange(16.0).reshape(4, 4).t()
    dist.all_reduce(t)
    assert torch.equal(t, n * torch.arange(16.0).reshape(4, 4).t())

    t = torch.full((5,), float(rank))
    dist.broadcast(t, src=1)
    assert torch.equal(t, torch.ones(5))

    outs = [torch.empty(4) for _ in range(n)]
    dist.all_gather(outs, torch.full((4,), float(rank)))
    assert all(torch.equal(o, torch.full((4,), float(r))) for r, o in enumerate(outs))
    big = torch.empty(4 * n)
    dist.all_gather_into_tensor(big, torch.full((4,), float(rank)))
    assert torch.equal(big, torch.arange(n).float().repeat_interleave(4))

    out = torch.empty(2)
    dist.reduce_scatter(out, [torch.full((2,), float(r + rank)) for r in range(n)])
    assert torch.equal(out, torch.full((2,), float(n * rank + n * (n - 1) // 2)))
    dist.barrier()

    # refusals: the message names the call; nothing else changes (the group still works)
    expect_error(Unsupported, lambda: dist.all_reduce(torch.ones(2), op=dist.ReduceOp.PRODUCT),
                 "starling")
    expect_error(Invalid, lambda: dist.all_gather([torch.empty(4)], torch.ones(4)),
                 "allgather")
    expect_error(Invalid, lambda: dist.all_gather_into_tensor(torch.empty(3), torch.ones(4)),
                 "allgather")
    expect_error(Unsupported, lambda: dist.all_reduce(torch.ones(2, dtype=torch.int16)),
                 "dtype")
    expect_error(ValueError, lambda: dist.broadcast(torch.ones(2), src=n), "")
    t = torch.ones(4)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((4,), float(n)))
    pg = dist.distributed_c10d._get_default_group()
    assert pg.live_size == n and sorted(pg.live_ranks) == list(range(n))
    assert pg.bytes_sent > 0
    # Works dropped unwaited (their tensors' Python objects gone: only the worker holds
    # them), then the group: its destructor finishes them without holding the GIL.
    for _ in range(4):
        dist.all_reduce(torch.ones(1 << 20), async_op=True)
    del pg
    dist.destroy_process_group()
    print(json.dumps({"ok": True}), flush=True)


def mode_security():
    import torch
    import torch.distributed as dist
    from starling.errors import Auth
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("starling")
    t = torch.full((4,), float(rank + 1))
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((4,), float(n * (n + 1) // 2)))
    coord = dist.distributed_c10d._get_default_group()._starling_coordinator
    refused = False
    if coord is not None:  # rank 0 hosts it, in "none": an aead peer is refused
        try:
            # (the mode travels in HELLO, before the secret is proved: any will do)
            starling.Communicator(f"127.0.0.1:{coord.port}", coord.run_name, "any").close()
        except Auth as e:
            refused = "security mismatch" in str(e)
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps({"ok": True, "refused": refused}), flush=True)


def mode_shm():
    import torch
    import torch.distributed as dist
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("starling")
    t = torch.arange(300_001, dtype=torch.float32) + rank
    dist.all_reduce(t)
    ok = torch.equal(t, torch.arange(300_001, dtype=torch.float32) * n + n * (n - 1) // 2)
    with open("/proc/self/maps") as f:
        segments = sum(1 for line in f if "memfd:starling-ring" in line)
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps({"ok": bool(ok), "segments": segments}), flush=True)


def mode_manager():
    import hashlib
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    import starling.distributed as sd
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    dist.init_process_group("starling")
    model = make_model()
    ddp = DDP(model, bucket_cap_mb=0.01)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    mgr = sd.Manager(ddp, opt)
    for step in range(STEPS):
        x, y = batch(rank, step)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(ddp(x), y)
            if rank == 1 and step == KILL_STEP:
                # dies in backward, once the last layer's gradient (first bucket) is out
                model[4].weight.register_hook(
                    lambda g: os.kill(os.getpid(), signal.SIGKILL))
            loss.backward()
            return loss
        mgr.step(closure)
    p = flat(model)
    pg = mgr.pg
    print(json.dumps({"steps": mgr.steps, "recoveries": mgr.recoveries,
                      "live_size": pg.live_size, "hash": mgr.state_hash(),
                      "params": hashlib.sha256(p.numpy().tobytes()).hexdigest()}),
          flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, PKG)
    import starling.distributed  # noqa: F401,E402 - registers backend "starling"
    {"parity": mode_parity, "collectives": mode_collectives,
     "manager": mode_manager, "security": mode_security, "shm": mode_shm}[sys.argv[1]]()
