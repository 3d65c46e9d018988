"""PyTorch helpers: a model and its optimizer as shared state, a data-parallel gradient
all-reduce (after backward, or bucketed and overlapping backward: GradientSync), and the
DiLoCo outer loop, all surviving peers that die or join.

``import starling`` never imports torch; this module does, when it is imported
(``import starling.torch``). Only CPU tensors are supported (the library reads and writes
them by pointer, without copies). See docs/python.md for the exact semantics.

    import starling, starling.torch as st
    comm = starling.Communicator.from_env(); comm.update_topology()
    diloco = st.DiLoCo(comm, model, torch.optim.AdamW(model.parameters(), 1e-3),
                       inner_steps=50)
    for x, y in batches:
        loss = loss_fn(model(x), y); loss.backward()
        diloco.inner_optimizer.step(); diloco.inner_optimizer.zero_grad()
        diloco.step()            # every inner_steps calls: one outer round
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch

from .comm import Codec, Communicator
from .errors import Invalid, PeerLost

__all__ = ["register_model", "materialize", "allreduce_gradients", "recover", "DiLoCo",
           "GradientSync", "BUCKET_TAG", "StreamingDiLoCo"]

# Tags of the collectives issued here: distinct from the default 0 so that a user's own
# collectives on the same communicator are told apart (a difference is a Mismatch).
GRAD_TAG = 0x5354_4752_0000  # "STGR"
DILOCO_TAG = 0x5354_444C_0000  # "STDL"


def _check_tensor(t: torch.Tensor, what: str) -> None:
    if t.device.type != "cpu":
        raise Invalid(f"{what}: tensor is on device '{t.device}'; starling.torch shares "
                      f"CPU tensors only")
    if not t.is_contiguous():
        raise Invalid(f"{what}: tensor is not contiguous")
    if t.is_sparse:
        raise Invalid(f"{what}: sparse tensors are not supported")


def recover(comm: Communicator, sync: bool = True) -> bool:
    """After :class:`PeerLost`: forms the next epoch (retrying ``update_topology`` while it
    raises PeerLost itself), then, if ``sync``, makes the shared state equal on every
    member (:meth:`Communicator.sync`). Returns whether this member's state was replaced.
    Every survivor must call it at the same point."""
    while True:
        try:
            comm.update_topology()
            break
        except PeerLost:
            continue
    if not sync:
        return False
    while True:
        try:
            return comm.sync()
        except PeerLost:
            while True:
                try:
                    comm.update_topology()
                    break
                except PeerLost:
                    continue


# ---------------------------------------------------------------- shared state

def materialize(optimizer: torch.optim.Optimizer) -> None:
    """Creates an optimizer's lazily-made state (Adam's ``exp_avg``, ``exp_avg_sq``,
    ``step``; SGD's ``momentum_buffer``) without changing the parameters or the
    optimization: one ``step()`` with zero gradients and ``lr=0``, then every parameter
    is restored bit for bit and every state tensor is set to zero.

    Zeroed state equals fresh state for SGD (momentum, ``dampening=0``), Adam, AdamW
    (``step`` 0: the bias correction starts over). Optimizers whose fresh state is not
    zero (Adagrad with an initial accumulator, Rprop) should instead take one real step
    on every member before :func:`register_model`."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    saved_data = [p.detach().clone() for p in params]
    saved_grad = [p.grad for p in params]
    saved_lr = [g["lr"] for g in optimizer.param_groups]
    try:
        for p in params:
            p.grad = torch.zeros_like(p)
        for g in optimizer.param_groups:
            g["lr"] = 0.0
        optimizer.step()
    finally:
        for g, lr in zip(optimizer.param_groups, saved_lr):
            g["lr"] = lr
        with torch.no_grad():
            for p, d, gr in zip(params, saved_data, saved_grad):
                p.copy_(d)
                p.grad = gr
    for p in params:
        for v in optimizer.state.get(p, {}).values():
            if torch.is_tensor(v):
                v.zero_()


def register_model(comm: Communicator, model: torch.nn.Module,
                   optimizer: Optional[torch.optim.Optimizer] = None,
                   prefix: str = "") -> List[str]:
    """Registers every parameter of ``model`` (names ``prefix + name`` from
    ``named_parameters()``) and, if given, every tensor of ``optimizer``'s state (names
    ``prefix + "opt/" + param name + "/" + key``, e.g. ``opt/fc1.weight/exp_avg``) as
    shared state, without copies: the library borrows the tensors' memory and
    :meth:`Communicator.sync` overwrites it in place. Returns the names registered.

    Optimizer state that does not exist yet (Adam's is made at its first ``step()``) is
    not registered: call :func:`materialize` first, or call ``register_model`` again
    once it exists (already registered names are skipped). Every member must register the
    same names in the same order before its next ``sync()`` (else :class:`Mismatch`).

    Tensors must be CPU and contiguous (else :class:`Invalid`, naming the tensor). Do not
    replace ``param.data`` or the state tensors afterwards (``optimizer.load_state_dict``
    does): the library would keep the old memory; unregister and register again."""
    done = set(comm._state)
    names: List[str] = []
    items: List[Tuple[str, torch.Tensor]] = []
    pname: Dict[int, str] = {}
    for n, p in model.named_parameters():
        pname[id(p)] = n
        items.append((prefix + n, p.detach()))
    if optimizer is not None:
        for g in optimizer.param_groups:
            for p in g["params"]:
                n = pname.get(id(p))
                if n is None:
                    raise Invalid("optimizer holds a parameter that is not in the model")
                for k, v in sorted(optimizer.state.get(p, {}).items()):
                    if torch.is_tensor(v):
                        items.append((f"{prefix}opt/{n}/{k}", v))
    for name, t in items:
        if name in done:
            continue
        _check_tensor(t, name)
        comm.register(name, t)
        names.append(name)
    return names


# ---------------------------------------------------------------- data parallel

class _Flat:
    """One flat buffer per dtype holding a list of tensors, reused across calls."""

    def __init__(self, tensors: List[torch.Tensor]) -> None:
        self.key = [(t.dtype, t.numel()) for t in tensors]
        by_dtype: Dict[torch.dtype, List[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        # (indices, flat buffer) per dtype, in an order every member agrees on
        self.groups: List[Tuple[List[int], torch.Tensor]] = [
            (idx, torch.empty(sum(tensors[i].numel() for i in idx), dtype=dt))
            for dt, idx in sorted(by_dtype.items(), key=lambda kv: str(kv[0]))]


def allreduce_gradients(comm: Communicator, model: torch.nn.Module,
                        codec: Union[None, str, Codec] = None, tag: int = GRAD_TAG,
                        sync: bool = True) -> bool:
    """Replaces every parameter's ``.grad`` with its average over the members.

    Gradients are packed into one flat buffer per dtype (a parameter without a gradient
    contributes zeros and receives the average), all-reduced with ``op="avg"`` (``codec``
    applies to float32 only; a lossy codec on other dtypes raises :class:`Unsupported`),
    then copied back. On :class:`PeerLost` (buffers unchanged): :func:`recover`
    (update_topology, then ``sync()`` of the shared state if ``sync``), and the all-reduce
    is redone among the survivors. Returns True if a recovery happened. Collective:
    every member calls it at the same point with the same model layout."""
    params = [p for p in model.parameters()]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    for (n, _), g in zip(model.named_parameters(), grads):
        if g.device.type != "cpu":
            raise Invalid(f"{n}.grad: tensor is on device '{g.device}', CPU only")
    flat = getattr(model, "_starling_flat", None)
    if flat is None or flat.key != [(g.dtype, g.numel()) for g in grads]:
        flat = _Flat(grads)
        model._starling_flat = flat  # type: ignore[attr-defined]
    recovered = False
    for k, (idx, buf) in enumerate(flat.groups):
        dt = buf.dtype
        torch.cat([grads[i].reshape(-1) for i in idx], out=buf)
        while True:
            try:
                comm.allreduce(buf, "avg",
                               codec=codec if dt == torch.float32 else None, tag=tag + k)
                break
            except PeerLost:
                recover(comm, sync)
                recovered = True
        off = 0
        for i in idx:
            n = grads[i].numel()
            grads[i].copy_(buf[off:off + n].view_as(grads[i]))
            off += n
    return recovered


# ---------------------------------------------------------------- DiLoCo

class DiLoCo:
    """DiLoCo (Douillard et al., 2023, arXiv:2311.08105): each member trains its own copy
    of the model with an inner optimizer of the user's choice; every ``inner_steps``
    steps the members average their pseudo-gradients and apply an outer Nesterov step to
    a global copy of the parameters, which then replaces every member's model.

    Per outer round, on every member (``theta`` the global parameters, ``m`` the outer
    momentum, both float32 shared state named ``prefix + "global"`` and
    ``prefix + "momentum"``; the shared step counter is the round number):

        delta = avg over members of (theta - model)      # all-reduce, codec applies
        m     = outer_momentum * m + delta
        theta = theta - outer_lr * (delta + outer_momentum * m)   # Nesterov
        model = theta

    Call :meth:`step` once after each inner optimizer step. Recovery: a
    :class:`PeerLost` during the all-reduce leads to ``update_topology`` and
    ``sync()`` (the majority's ``theta``, ``m`` and round win), then the pseudo-gradient
    is recomputed from the synced ``theta`` and the all-reduce redone among the
    survivors. Joins: when ``update_every`` is set, each round ends with
    ``update_topology`` + ``sync()`` every ``update_every`` rounds, where newcomers are
    admitted; a newcomer's first :meth:`step` (or :meth:`start`) joins (its
    ``update_topology`` waits for the members' round end), syncs, and loads ``theta`` into
    its model, so it starts the next round with the others. With only two members, a
    sync tie goes to the lower rank (see starling_sync_state): join with two or more
    members in place.

    The inner optimizer's state stays local (as in the paper). Parameters must be CPU,
    contiguous float32 tensors."""

    def __init__(self, comm: Communicator, model: torch.nn.Module,
                 inner_optimizer: torch.optim.Optimizer, inner_steps: int = 100,
                 outer_lr: float = 0.7, outer_momentum: float = 0.9,
                 codec: Union[None, str, Codec] = None, update_every: Optional[int] = None,
                 prefix: str = "diloco/") -> None:
        if inner_steps < 1:
            raise Invalid("inner_steps must be at least 1")
        self.comm = comm
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.inner_steps = int(inner_steps)
        self.outer_lr = float(outer_lr)
        self.outer_momentum = float(outer_momentum)
        self.codec = Codec(codec) if isinstance(codec, str) else codec
        self.update_every = update_every
        self.params = [p for p in model.parameters()]
        for n, p in model.named_parameters():
            if p.dtype != torch.float32:
                raise Invalid(f"{n}: DiLoCo needs float32 parameters, got {p.dtype}")
            _check_tensor(p.detach(), n)
        self.count = sum(p.numel() for p in self.params)
        self.theta = torch.empty(self.count, dtype=torch.float32)
        self.momentum = torch.zeros(self.count, dtype=torch.float32)
        self.delta = torch.empty(self.count, dtype=torch.float32)
        self._flatten_into(self.theta)
        comm.register(prefix + "global", self.theta)
        comm.register(prefix + "momentum", self.momentum)
        self.inner = 0            # inner steps since the round began
        self.round = comm.step    # outer rounds done (the shared step counter)
        self.recoveries = 0
        self._started = False

    # -- helpers
    def _flatten_into(self, out: torch.Tensor) -> None:
        with torch.no_grad():
            torch.cat([p.detach().reshape(-1) for p in self.params], out=out)

    def _load_theta(self) -> None:
        off = 0
        with torch.no_grad():
            for p in self.params:
                n = p.numel()
                p.copy_(self.theta[off:off + n].view_as(p))
                off += n

    def _sync(self) -> None:
        self.comm.step = self.round
        recover_needed = False
        while True:
            try:
                if recover_needed:
                    recover(self.comm, sync=False)
                self.comm.sync()
                break
            except PeerLost:
                recover_needed = True
                self.recoveries += 1
        self.round = self.comm.step

    # -- API
    def start(self) -> None:
        """Joins if this communicator has not (``update_topology``), syncs the shared state
        (every member starts from the majority's ``theta``) and loads ``theta`` into the
        model. Collective; :meth:`step` calls it on first use."""
        if self.comm.epoch == 0:
            recover(self.comm, sync=False)
        self._sync()
        self._load_theta()
        self._started = True

    def step(self) -> bool:
        """Counts one inner step; on every ``inner_steps``-th call runs the outer round
        (collective). Returns True when an outer round ran."""
        if not self._started:
            self.start()
        self.inner += 1
        if self.inner < self.inner_steps:
            return False
        self.inner = 0
        self.outer_step()
        return True

    def outer_step(self) -> None:
        """The outer round now (collective), whatever the inner count."""
        if not self._started:
            self.start()
        local = torch.empty_like(self.delta)
        self._flatten_into(local)
        while True:
            torch.sub(self.theta, local, out=self.delta)
            try:
                self.comm.allreduce(self.delta, "avg", codec=self.codec,
                                    tag=DILOCO_TAG)
                break
            except PeerLost:
                self.recoveries += 1
                recover(self.comm, sync=False)
                self._sync()
        with torch.no_grad():
            m, mu = self.momentum, self.outer_momentum
            m.mul_(mu).add_(self.delta)
            self.theta.sub_(self.delta.add_(m, alpha=mu), alpha=self.outer_lr)
        self.round += 1
        self.comm.step = self.round
        if self.update_every and self.round % self.update_every == 0:
            recover(self.comm, sync=False)
            self._sync()
        self._load_theta()

    def state_hash(self) -> str:
        """Content hash of the shared state (theta, momentum, round): equal on every
        member after an outer round."""
        return self.comm.state_hash()


# Bucketed gradient averaging that overlaps backward (imported last: it uses recover()).
from ._buckets import BUCKET_TAG, GradientSync  # noqa: E402
# Streaming DiLoCo (python/starling/streaming.py; it uses recover() and _check_tensor()).
from .streaming import StreamingDiLoCo  # noqa: E402
