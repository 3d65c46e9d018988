"""One process of a language-model training run: the byte-level GPT of starling.models
on the text corpus of starling.textdata (Debian's fortunes; a synthetic one, announced,
when it is missing), trained by one of several data-parallel algorithms.

    python3 -m starling.launch --peers 4 bench/lm_train.py --algo diloco --steps 1000 \\
        --inner-steps 50 --codec int8 --eval-every 100 --out /tmp/diloco.json

Started by python3 -m starling.launch (or with torchrun's variables), one process per
peer. --algo:

  local         no communication (a single-process baseline; each process trains alone)
  ddp-gloo      torch DistributedDataParallel over gloo (env:// rendezvous)
  ddp-starling  DistributedDataParallel over the starling backend, each step through
                starling.distributed.Manager (a killed peer is survived: the others
                redo the step among themselves)
  diloco        starling.torch.DiLoCo: --inner-steps H AdamW steps, then an outer
                Nesterov step on the averaged pseudo-gradient (--outer-lr,
                --outer-momentum, --codec)
  streaming     starling.torch.StreamingDiLoCo (--fragments, --overlap, --alpha as well)

Every process uses the same model seed (--seed) and draws its own batches (shard and
stream fixed by --seed and its rank, see starling.textdata.batches). Inner optimizer:
AdamW (betas 0.9, 0.95; weight decay on matrices only) with linear warmup and cosine decay
to a tenth of --lr.

Evaluation: before the first step, every --eval-every steps and at the end, the process
of rank --log-rank (default 0) computes the mean cross-entropy (nats) on fixed held-out
windows (every 20th document of the corpus) and, with --out, rewrites FILE.json: per
point the step, wall seconds since the start (and the same without evaluation time), the
eval loss and perplexity, the mean training loss since the previous point and the bytes
this rank has sent; plus the largest number of bytes sent in one step. Bytes come from
Communicator.bytes_sent() for the starling algorithms; gloo counts none, so for ddp-gloo
they are the ring all-reduce's 2(n-1)/n * 4 * params per step, an estimate (the JSON says
so). For diloco/streaming a mid-run point evaluates this rank's own model: take
--eval-every a multiple of H to see the global one.

Faults: --kill-rank R --kill-step S: the process of rank R SIGKILLs itself before step S.
--freeze-rank/--freeze-step: SIGSTOPs itself instead (the others see it lost after the
failure timeout); a helper SIGKILLs it --freeze-seconds later so the run can end.

At the end every process prints one line:
  lm_train: rank R done: algo A, steps S, members M, eval loss L, ppl P, params HASH, ...
HASH is the first 16 hex digits of the sha256 of the parameters: equal on every
survivor for the synchronous algorithms and after DiLoCo's last outer step.
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from starling import textdata  # noqa: E402
from starling.models import GPT, GPTConfig, param_count  # noqa: E402

ALGOS = ("local", "ddp-gloo", "ddp-starling", "diloco", "streaming")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=ALGOS, default="diloco")
    p.add_argument("--steps", type=int, default=1000, help="inner steps per process")
    p.add_argument("--batch", type=int, default=8, help="sequences per step per process")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak inner learning rate")
    p.add_argument("--warmup", type=int, default=None,
                   help="warmup steps (default steps/10, at most 200)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="model and data seed")
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--inner-steps", type=int, default=50, help="H (diloco, streaming)")
    p.add_argument("--outer-lr", type=float, default=0.7)
    p.add_argument("--outer-momentum", type=float, default=0.9)
    p.add_argument("--codec", default=None, help="starling codec spec: int8, int4, "
                   "topk:0.02+ef, ... (diloco, streaming)")
    p.add_argument("--fragments", type=int, default=4, help="P (streaming)")
    p.add_argument("--overlap", type=int, default=1, help="tau, inner steps (streaming)")
    p.add_argument("--alpha", type=float, default=0.5, help="mixing factor (streaming)")
    p.add_argument("--corpus", default=None,
                   help=f"fortune directory or text file (default {textdata.FORTUNES_DIR}); "
                        f"'synthetic' for the generated corpus")
    p.add_argument("--eval-every", type=int, default=100, help="0: only first and last")
    p.add_argument("--eval-windows", type=int, default=64,
                   help="held-out windows of --context bytes per evaluation")
    p.add_argument("--log-rank", type=int, default=0, help="the rank that evaluates and "
                   "writes --out")
    p.add_argument("--out", default=None, help="JSON file written by --log-rank")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--timeout-ms", type=int, default=2000,
                   help="starling's failure-detection timeout of this process")
    p.add_argument("--op-timeout-ms", type=int, default=300000,
                   help="bound on one collective (also gloo's and the starling group's "
                        "timeout): longer than an evaluation")
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--kill-step", type=int, default=-1)
    p.add_argument("--freeze-rank", type=int, default=-1)
    p.add_argument("--freeze-step", type=int, default=-1)
    p.add_argument("--freeze-seconds", type=float, default=60.0,
                   help="SIGKILL the frozen process after this long (0: never)")
    p.add_argument("--update-every", type=int, default=0,
                   help="diloco: admit newcomers every N rounds (0: never)")
    p.add_argument("--join", action="store_true",
                   help="diloco: this process is a newcomer to a running run: it is "
                        "admitted at a round end, takes the members' state and round, "
                        "and trains the remaining steps")
    a = p.parse_args(argv)
    if a.join and a.algo != "diloco":
        p.error("--join: only --algo diloco admits newcomers here")
    if a.update_every < 0:
        p.error("--update-every must be >= 0")
    if a.steps < 1 or a.batch < 1 or a.context < 2 or a.inner_steps < 1:
        p.error("--steps, --batch and --inner-steps must be >= 1, --context >= 2")
    if a.warmup is None:
        a.warmup = min(200, a.steps // 10)
    return a


def env_rank_world():
    """(rank, world) as the launcher said: torchrun's RANK / WORLD_SIZE (which
    starling.launch sets too), else starling's own, else a lone process."""
    e = os.environ
    rank = e.get("RANK", e.get("STARLING_RANK_HINT", "0"))
    world = e.get("WORLD_SIZE", e.get("STARLING_PEERS", "1"))
    return int(rank), int(world)


def lr_factor(step, warmup, total, floor=0.1):
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model, a):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, a.warmup, a.steps))
    return opt, sched


def params_hash(model):
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def lm_loss(module, x, y):
    logits = module(x)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


class Algo:
    """One algorithm's set-up and step. ``step(x, y)`` does one inner step and returns
    the training loss; ``bytes_sent()`` this process's bytes so far (None: not counted);
    ``finish()`` ends the run (a last outer round for a partial one)."""

    def __init__(self, a, model, opt, rank, world):
        self.a, self.model, self.opt = a, model, opt
        self.comm = None
        self.members = lambda: world
        self.recoveries = lambda: 0
        self.bytes_note = "Communicator.bytes_sent() of this rank"
        self.per_step_estimate = None
        algo = a.algo
        if algo == "local":
            self.bytes_note = "none: no communication"
            self.module = model
        elif algo in ("ddp-gloo", "ddp-starling"):
            import torch.distributed as dist
            timeout = datetime.timedelta(milliseconds=a.op_timeout_ms)
            if algo == "ddp-gloo":
                if os.environ.get("MASTER_ADDR", "127.0.0.1").startswith("127."):
                    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
                dist.init_process_group("gloo", init_method="env://", timeout=timeout)
                n = dist.get_world_size()
                self.per_step_estimate = int(2 * (n - 1) / n * 4 * param_count(model))
                self.bytes_note = ("estimate: ring all-reduce 2(n-1)/n * 4 * params bytes "
                                   "per step (gloo counts no bytes)")
            else:
                os.environ.setdefault("STARLING_TIMEOUT_MS", str(a.timeout_ms))
                import starling.distributed as sd
                dist.init_process_group("starling", init_method="env://", timeout=timeout)
            self.module = torch.nn.parallel.DistributedDataParallel(model)
            if algo == "ddp-starling":
                self.mgr = sd.Manager(self.module, opt)
                self.comm = self.mgr.comm
                self.members = lambda: self.mgr.pg.live_size
                self.recoveries = lambda: self.mgr.recoveries
        else:
            import starling
            import starling.torch as st
            self.comm = starling.Communicator.from_env(starling.Config(
                timeout_ms=a.timeout_ms, op_timeout_ms=a.op_timeout_ms))
            self.comm.update_topology()
            self.members = lambda: self.comm.size
            self.module = model
            kw = dict(inner_steps=a.inner_steps, outer_lr=a.outer_lr,
                      outer_momentum=a.outer_momentum, codec=a.codec)
            if algo == "diloco":
                self.outer = st.DiLoCo(self.comm, model, opt,
                                       update_every=a.update_every or None, **kw)
            else:
                self.outer = streaming_class()(self.comm, model, opt, fragments=a.fragments,
                                 overlap=a.overlap, alpha=a.alpha, **kw)
            self.recoveries = lambda: self.outer.recoveries
            self.outer.start()  # every member from the same global parameters
        # A newcomer (--join) has the members' round now: it goes on from there.
        self.first_step = self.outer.round * a.inner_steps if a.join else 0
        self.steps = 0

    def step(self, x, y):
        if self.a.algo == "ddp-starling":
            def closure():
                self.opt.zero_grad()
                loss = lm_loss(self.module, x, y)
                loss.backward()
                return loss
            loss = self.mgr.step(closure)   # optimizer.step() inside, if all arrived
        else:
            self.opt.zero_grad()
            loss = lm_loss(self.module, x, y)
            loss.backward()
            self.opt.step()
            if self.a.algo in ("diloco", "streaming"):
                self.outer.step()
        self.steps += 1
        return loss.item()

    def bytes_sent(self):
        if self.per_step_estimate is not None:
            return self.per_step_estimate * self.steps
        return self.comm.bytes_sent if self.comm is not None else 0

    def finish(self):
        if self.a.algo == "diloco" and self.outer.inner:
            self.outer.outer_step()  # the same partial round on every member
        elif self.a.algo == "streaming":
            for name in ("finish", "flush"):
                if hasattr(self.outer, name):
                    getattr(self.outer, name)()
                    break

    def close(self):
        if self.a.algo in ("ddp-gloo", "ddp-starling"):
            import torch.distributed as dist
            dist.destroy_process_group()
        elif self.comm is not None:
            self.comm.close()


def streaming_class():
    """starling.torch.StreamingDiLoCo, imported only for --algo streaming."""
    import starling.torch as st
    cls = getattr(st, "StreamingDiLoCo", None)
    if cls is None:
        raise SystemExit("lm_train: --algo streaming needs starling.torch.StreamingDiLoCo, "
                         "which this starling does not have (see --algo diloco)")
    return cls


def fault(a, rank, step):
    if rank == a.kill_rank and step == a.kill_step:
        print(f"lm_train: rank {rank} kills itself at step {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if rank == a.freeze_rank and step == a.freeze_step:
        print(f"lm_train: rank {rank} freezes at step {step}"
              + (f" (killed {a.freeze_seconds:g} s later)" if a.freeze_seconds else ""),
              flush=True)
        if a.freeze_seconds > 0:
            subprocess.Popen(["/bin/sh", "-c",
                              f"sleep {a.freeze_seconds}; kill -KILL {os.getpid()}"],
                             start_new_session=True)
        os.kill(os.getpid(), signal.SIGSTOP)


def main(argv=None):
    a = parse(argv)
    if a.algo == "streaming":
        streaming_class()  # before anything else: the error, not a hung peer, comes first
    torch.set_num_threads(a.threads)
    rank, world = env_rank_world()
    logger = rank == a.log_rank
    data, source = textdata.load_corpus(a.corpus)
    train, held = textdata.split(data)
    if logger:
        print(f"lm_train: corpus {source}; train {len(train)} bytes, held out {len(held)}",
              flush=True)
    cfg = GPTConfig(depth=a.depth, width=a.width, heads=a.heads, context=a.context)
    model = GPT(cfg, seed=a.seed)
    opt, sched = make_optimizer(model, a)
    algo = Algo(a, model, opt, rank, world)
    stream = textdata.batches(train, a.batch, a.context, seed=a.seed, rank=rank,
                              world=world)

    report = {"algo": a.algo, "world": world, "params": param_count(model),
              "model": cfg.to_dict(), "corpus": source, "args": vars(a),
              "bytes_sent_source": algo.bytes_note, "points": [], "peak_step_bytes": 0}
    t0 = time.perf_counter()
    eval_s = 0.0
    losses = []

    def evaluate(step):
        nonlocal eval_s
        te = time.perf_counter()
        loss, ppl = textdata.eval_loss(model, held, a.context, windows=a.eval_windows)
        eval_s += time.perf_counter() - te
        wall = time.perf_counter() - t0
        point = {"step": step, "wall_s": round(wall, 3), "train_s": round(wall - eval_s, 3),
                 "eval_loss": loss, "eval_ppl": ppl,
                 "train_loss": sum(losses) / len(losses) if losses else None,
                 "bytes_sent": algo.bytes_sent(), "members": algo.members()}
        losses.clear()
        report["points"].append(point)
        print(f"lm_train: step {step} eval loss {loss:.4f} ppl {ppl:.2f} "
              f"wall {wall:.1f} s bytes {point['bytes_sent']}", flush=True)
        if a.out:
            tmp = a.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(report, f, indent=1)
            os.replace(tmp, a.out)
        return loss, ppl

    if logger:
        evaluate(0)
    first = algo.first_step
    if first:
        print(f"lm_train: rank {rank} joined at step {first} (round {algo.outer.round}), "
              f"{algo.members()} members", flush=True)
        with warnings.catch_warnings():  # the schedule where the members are; no opt.step
            warnings.simplefilter("ignore")
            for _ in range(first):
                sched.step()
    for step in range(first, a.steps):
        fault(a, rank, step)
        x, y = next(stream)
        before = algo.bytes_sent()
        try:
            losses.append(algo.step(x, y))
        except RuntimeError as e:  # gloo's lost connection; starling's are handled above
            print(f"lm_train: rank {rank}: step {step} failed after "
                  f"{time.perf_counter() - t0:.1f} s: {e}", file=sys.stderr, flush=True)
            if logger and a.out:
                report["failed"] = {"step": step, "error": str(e)}
                with open(a.out, "w") as f:
                    json.dump(report, f, indent=1)
            return 1
        sched.step()
        report["peak_step_bytes"] = max(report["peak_step_bytes"],
                                        algo.bytes_sent() - before)
        if logger and a.eval_every and (step + 1) % a.eval_every == 0 \
                and step + 1 < a.steps:
            evaluate(step + 1)
    algo.finish()
    h = params_hash(model)
    if logger:
        report["final"] = {"hash": h, "members": algo.members(),
                           "recoveries": algo.recoveries()}
        loss, ppl = evaluate(a.steps)
    else:
        loss, ppl = textdata.eval_loss(model, held, a.context, windows=a.eval_windows)
    print(f"lm_train: rank {rank} done: algo {a.algo}, steps {a.steps}, members "
          f"{algo.members()}, eval loss {loss:.4f}, ppl {ppl:.2f}, params {h}, "
          f"bytes {algo.bytes_sent()}, recoveries {algo.recoveries()}, "
          f"time {time.perf_counter() - t0:.1f} s", flush=True)
    algo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
