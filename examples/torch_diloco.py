"""A PyTorch MLP trained on Fashion-MNIST by several processes with DiLoCo, one of them
killed midway; the survivors finish and print the same accuracy and parameter hash.

    python3 -m starling.launch --peers 4 examples/torch_diloco.py --kill-rank 1 --kill-step 500

Each peer trains on its own shard (by STARLING_RANK_HINT) with AdamW as the inner
optimizer; every --inner-steps steps starling.torch.DiLoCo averages the pseudo-gradients
and applies the outer Nesterov step. The peer whose hint is --kill-rank SIGKILLs itself
before its step --kill-step; the others get PeerLost, form a new epoch, sync and go on.
Data: --data DIR with the four IDX .gz files (default /usr/share/datasets/fashion-mnist);
if they are missing, a synthetic stand-in is used and announced (accuracy then means
nothing).
"""
import argparse
import gzip
import hashlib
import os
import signal
import sys
import time

import numpy as np
import torch

import starling
import starling.torch as st


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir):
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    paths = [os.path.join(data_dir, n) for n in names]
    if all(os.path.exists(p) for p in paths):
        xtr, ytr, xte, yte = (read_idx(p) for p in paths)
        f = lambda x: torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)
        return f(xtr), torch.from_numpy(ytr.astype(np.int64)), f(xte), \
            torch.from_numpy(yte.astype(np.int64)), True
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 784, generator=g)
    def synth(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return centers[y] + 2.0 * torch.randn(n, 784, generator=g), y
    xtr, ytr = synth(60000)
    xte, yte = synth(10000)
    return xtr, ytr, xte, yte, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--steps", type=int, default=1000, help="inner steps per peer")
    ap.add_argument("--inner-steps", type=int, default=50, help="H: inner steps per round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--outer-lr", type=float, default=0.7)
    ap.add_argument("--outer-momentum", type=float, default=0.9)
    ap.add_argument("--codec", default=None, help="e.g. int8+ef")
    ap.add_argument("--kill-rank", type=int, default=-1, help="STARLING_RANK_HINT to kill")
    ap.add_argument("--kill-step", type=int, default=500)
    a = ap.parse_args()

    torch.set_num_threads(1)
    hint = int(os.environ.get("STARLING_RANK_HINT", "0"))
    t0 = time.perf_counter()
    xtr, ytr, xte, yte, real = load(a.data)
    if not real and hint == 0:
        print(f"torch_diloco: {a.data} has no Fashion-MNIST IDX files; using SYNTHETIC data",
              flush=True)

    comm = starling.Communicator.from_env(starling.Config(timeout_ms=1000,
                                                          op_timeout_ms=60000))
    comm.update_topology()
    world = comm.size
    shard = torch.arange(hint, len(xtr), max(world, 1))  # this peer's examples
    torch.manual_seed(1234 + hint)  # different inits: DiLoCo's first sync equalizes them
    model = torch.nn.Sequential(torch.nn.Linear(784, a.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(a.hidden, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    diloco = st.DiLoCo(comm, model, opt, inner_steps=a.inner_steps, outer_lr=a.outer_lr,
                       outer_momentum=a.outer_momentum, codec=a.codec)
    g = torch.Generator().manual_seed(hint)
    for step in range(a.steps):
        if hint == a.kill_rank and step == a.kill_step:
            print(f"torch_diloco: peer {hint} kills itself at step {step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        idx = shard[torch.randint(0, len(shard), (a.batch,), generator=g)]
        loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        diloco.step()
    if diloco.inner:
        diloco.outer_step()  # a last round for a partial one (same count on every peer)
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    h = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                for p in model.parameters())).hexdigest()[:16]
    print(f"torch_diloco: peer {hint} done: members {comm.size}, rounds {diloco.round}, "
          f"recoveries {diloco.recoveries}, test accuracy {acc:.4f}, params {h}, "
          f"time {time.perf_counter() - t0:.1f} s", flush=True)
    comm.close()


if __name__ == "__main__":
    sys.exit(main())
