"""Streaming DiLoCo for PyTorch (Douillard et al., 2025, "Streaming DiLoCo with overlapping
communication", arXiv:2501.18512): DiLoCo whose outer synchronisation is cut into P
fragments of the model, synchronised one at a time at staggered steps, each fragment's
all-reduce overlapping the next ``overlap`` inner steps. Exported by ``starling.torch``;
see docs/python.md ("Streaming DiLoCo") for the exact semantics.

    import starling.torch as st
    sd = st.StreamingDiLoCo(comm, model, torch.optim.AdamW(model.parameters(), 1e-3),
                            inner_steps=100, fragments=4, overlap=1, alpha=0.5)
    for x, y in batches:
        loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
        sd.step()                 # after every inner step
    sd.finish()                   # every member: the same model (one last outer step)

The schedule is the C trainer's (src/train/trainer.c, docs/training.md) counted in inner
steps done: fragment p's pseudo-gradient is issued after inner step t when
``t % H == p * H // P`` and applied ``overlap`` steps later.
"""
from __future__ import annotations

import math
import operator
from typing import List, NamedTuple, Optional, Sequence, Union

import torch

from .comm import Codec, Communicator, Request
from .errors import Invalid, PeerLost

__all__ = ["StreamingDiLoCo", "Fragment", "plan_fragments", "STREAM_TAG"]

# Tags: fragment p's all-reduce uses STREAM_TAG + p (so a codec's error-feedback residual,
# kept by the library per tag, stays per fragment); the member count of a recovery uses
# STREAM_COUNT_TAG. Distinct from starling.torch's GRAD_TAG and DILOCO_TAG.
STREAM_TAG = 0x5354_5344_0000  # "STSD"
STREAM_COUNT_TAG = STREAM_TAG + 0xFFFF
MAX_FRAGMENTS = 0xFFFF


class Fragment(NamedTuple):
    """One fragment: parameters ``first .. stop-1`` (in ``model.parameters()`` order),
    floats ``offset .. offset+count-1`` of the flat global vector, issued after inner step
    t when ``t % inner_steps == offset_step``, all-reduced with tag ``tag``."""
    index: int
    first: int
    stop: int
    offset: int
    count: int
    offset_step: int
    tag: int


def plan_fragments(sizes: Sequence[int], fragments: int) -> List[range]:
    """Splits tensors of ``sizes`` elements (in order) into ``fragments`` contiguous,
    non-empty groups of about equal total size: cut k (k = 1..P-1) goes at the tensor
    boundary whose prefix sum is nearest to ``k * total / P`` (the lower one on a tie),
    kept inside the range that leaves every group at least one tensor. Depends only on the
    sizes, so every member computes the same plan. Returns ranges of tensor indices."""
    n = len(sizes)
    if not 1 <= fragments <= n:
        raise Invalid(f"fragments: {fragments} fragments of {n} parameter tensors "
                      f"(need 1..{n}: a fragment holds whole tensors)")
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + int(s))
    total = prefix[-1]
    cuts = [0]
    for k in range(1, fragments):
        lo, hi = cuts[-1] + 1, n - (fragments - k)
        # exact arithmetic: compare |prefix[i] * P - k * total| (integers)
        best = min(range(lo, hi + 1), key=lambda i: (abs(prefix[i] * fragments - k * total), i))
        cuts.append(best)
    cuts.append(n)
    return [range(cuts[k], cuts[k + 1]) for k in range(fragments)]


def _count(value, what: str, lo: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise Invalid(f"{what}: expected an integer, got {value!r}") from None
    if v < lo:
        raise Invalid(f"{what}: must be at least {lo}, got {v}")
    return v


def _real(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise Invalid(f"{what}: expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise Invalid(f"{what}: must be finite, got {v}")
    return v


class _InFlight:
    """A fragment's sync between issue and completion."""
    __slots__ = ("frag", "issue_step", "req", "error")

    def __init__(self, frag: Fragment, issue_step: int, req: Optional[Request],
                 error: Optional[PeerLost]) -> None:
        self.frag = frag
        self.issue_step = issue_step
        self.req = req
        self.error = error  # a PeerLost raised at issue: reported at completion


class StreamingDiLoCo:
    """Streaming DiLoCo: DiLoCo (see :class:`starling.torch.DiLoCo`) with the outer
    synchronisation spread over the round, one fragment of the model at a time.

    The parameters (``model.parameters()`` order) are split into ``fragments`` = P
    contiguous groups of whole tensors of about equal size (:func:`plan_fragments`).
    ``theta`` (the global parameters) and ``m`` (the outer momentum) are flat float32
    shared state named ``prefix + "global"`` and ``prefix + "momentum"``, plus
    ``prefix + "phase"`` (int32, non-zero only while a recovery redoes a fragment's sync);
    the shared step counter is the number of inner steps done. With H = ``inner_steps``,
    tau = ``overlap`` and t the inner steps done, :meth:`step` does, in order:

    1. completes the sync issued at t - tau, if any (fragment p, tag STREAM_TAG + p):
       ``delta_p`` = the average over members of ``theta_p - local_p`` computed at issue,
       then ``m_p = mu m_p + delta_p``, ``theta_p -= outer_lr (delta_p + mu m_p)``
       (Nesterov, as DiLoCo) and ``local_p = alpha local_p + (1 - alpha) theta_p``;
    2. at a round end (t % H == 0) every ``update_every`` rounds: ``update_topology`` +
       ``sync()``, where newcomers are admitted (nothing is in flight there);
    3. issues fragment p if ``t % H == p * H // P``: ``theta_p - local_p`` all-reduced
       (AVG, ``codec``) asynchronously, so it overlaps the next tau inner steps; with
       tau = 0 it is completed at once (a blocking sync).

    ``tau * P <= H`` (as in the C trainer) keeps at most one fragment in flight, so a
    step never sends more than 1/P of the model. The inner optimizer's state stays local
    and is never reset. Faults: a :class:`PeerLost` of a fragment's sync (at issue or at
    completion; always handled at completion, so every survivor recovers at the same step)
    leads to ``update_topology`` and ``sync()``, then the pseudo-gradient is recomputed
    from the current local parameters and the all-reduce redone, blocking, among the
    survivors; a newcomer admitted by that recovery takes part with zeros and the average
    is rescaled to the members that hold a pseudo-gradient. :meth:`finish` completes the
    sync in flight and applies one more outer step to every fragment, then loads
    ``theta`` into the model, so every member ends with the same model."""

    def __init__(self, comm: Communicator, model: torch.nn.Module,
                 inner_optimizer: torch.optim.Optimizer, inner_steps: int = 100,
                 fragments: int = 4, overlap: int = 1, alpha: float = 0.5,
                 outer_lr: float = 0.7, outer_momentum: float = 0.9,
                 codec: Union[None, str, Codec] = None, update_every: Optional[int] = None,
                 prefix: str = "sdiloco/") -> None:
        from .torch import _check_tensor  # here: starling.torch imports this module
        h = _count(inner_steps, "inner_steps", 1)
        p = _count(fragments, "fragments", 1)
        tau = _count(overlap, "overlap", 0)
        a = _real(alpha, "alpha")
        if not 0.0 <= a <= 1.0:
            raise Invalid(f"alpha: the mixing weight of the local parameters must be in "
                          f"[0, 1], got {a}")
        if update_every is not None:
            update_every = _count(update_every, "update_every", 1)
        named = list(model.named_parameters())
        if not named:
            raise Invalid("model: it has no parameters")
        for n, t in named:
            if t.dtype != torch.float32:
                raise Invalid(f"{n}: StreamingDiLoCo needs float32 parameters, got {t.dtype}")
            _check_tensor(t.detach(), n)
        if p > len(named):
            raise Invalid(f"fragments: {p} fragments of {len(named)} parameter tensors "
                          f"(a fragment holds whole tensors: at most {len(named)})")
        if p > MAX_FRAGMENTS:
            raise Invalid(f"fragments: at most {MAX_FRAGMENTS}, got {p}")
        if p > h:
            raise Invalid(f"fragments: {p} fragments need inner_steps >= fragments ({h}): "
                          f"each fragment syncs at its own step of the round")
        if tau * p > h:
            raise Invalid(f"overlap: {tau} overlapped steps exceed inner_steps / fragments "
                          f"({h} / {p}): a fragment's sync must finish before the next "
                          f"fragment's starts (need overlap <= {h // p})")
        self.comm = comm
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.inner_steps = h
        self.overlap = tau
        self.alpha = a
        self.outer_lr = _real(outer_lr, "outer_lr")
        self.outer_momentum = _real(outer_momentum, "outer_momentum")
        self.codec = Codec(codec) if isinstance(codec, str) else codec
        self.update_every = update_every
        self.names = [n for n, _ in named]
        self.params = [t for _, t in named]
        sizes = [t.numel() for t in self.params]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.fragments: List[Fragment] = [
            Fragment(k, r.start, r.stop, offsets[r.start], offsets[r.stop] - offsets[r.start],
                     k * h // p, STREAM_TAG + k)
            for k, r in enumerate(plan_fragments(sizes, p))]
        self._offsets = offsets
        self._at_offset = {f.offset_step: f.index for f in self.fragments}
        self.count = offsets[-1]
        self.theta = torch.empty(self.count, dtype=torch.float32)
        self.momentum = torch.zeros(self.count, dtype=torch.float32)
        self.phase = torch.zeros(1, dtype=torch.int32)
        self.delta = torch.empty(self.count, dtype=torch.float32)
        with torch.no_grad():
            for i, t in enumerate(self.params):
                self._slice(self.theta, i).copy_(t.detach())
        comm.register(prefix + "global", self.theta)
        comm.register(prefix + "momentum", self.momentum)
        comm.register(prefix + "phase", self.phase)
        self.t = comm.step        # inner steps done (the shared step counter)
        self.recoveries = 0
        self.syncs = 0            # fragment syncs applied by this member
        self._flight: Optional[_InFlight] = None
        self._started = False

    # ------------------------------------------------------------ properties
    @property
    def round(self) -> int:
        """Rounds of H inner steps done."""
        return self.t // self.inner_steps

    @property
    def inner(self) -> int:
        """Inner steps since the round began."""
        return self.t % self.inner_steps

    @property
    def in_flight(self) -> Optional[int]:
        """The fragment whose sync is under way, or None."""
        return self._flight.frag.index if self._flight else None

    def fragment_at(self, t: int) -> Optional[int]:
        """The fragment issued after inner step ``t`` (``t >= 1``), or None."""
        return self._at_offset.get(t % self.inner_steps) if t >= 1 else None

    # ------------------------------------------------------------ helpers
    def _slice(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Parameter i's part of a flat vector, shaped as the parameter."""
        o = self._offsets[i]
        return flat[o:self._offsets[i + 1]].view_as(self.params[i])

    def _pseudo_grad(self, f: Fragment) -> None:
        """delta_p = theta_p - local_p."""
        with torch.no_grad():
            for i in range(f.first, f.stop):
                torch.sub(self._slice(self.theta, i), self.params[i].detach(),
                          out=self._slice(self.delta, i))

    def _load(self, f: Optional[Fragment] = None) -> None:
        """local = theta, for fragment f or the whole model."""
        r = range(f.first, f.stop) if f else range(len(self.params))
        with torch.no_grad():
            for i in r:
                self.params[i].copy_(self._slice(self.theta, i))

    def _sync(self) -> None:
        """update_topology already done: sync() (retried with a new epoch on PeerLost);
        the step counter is the majority's afterwards."""
        self.comm.step = self.t
        recover_needed = False
        while True:
            try:
                if recover_needed:
                    _recover(self.comm)
                self.comm.sync()
                break
            except PeerLost:
                recover_needed = True
                self.recoveries += 1
        self.t = self.comm.step

    def _apply(self, f: Fragment, mix: bool = True) -> None:
        """Outer Nesterov step on fragment f's theta and momentum with its reduced delta,
        then the mixing into the local parameters."""
        s = slice(f.offset, f.offset + f.count)
        d, m, th = self.delta[s], self.momentum[s], self.theta[s]
        mu = self.outer_momentum
        with torch.no_grad():
            m.mul_(mu).add_(d)
            th.sub_(d.add_(m, alpha=mu), alpha=self.outer_lr)
            if not mix or self.alpha == 0.0:
                self._load(f)
            else:
                for i in range(f.first, f.stop):
                    self.params[i].mul_(self.alpha).add_(self._slice(self.theta, i),
                                                         alpha=1.0 - self.alpha)
        self.syncs += 1

    def _issue(self, f: Fragment) -> None:
        if self._flight is not None:  # not reached with overlap * fragments <= inner_steps
            self._complete()
        self._pseudo_grad(f)
        d = self.delta[f.offset:f.offset + f.count]
        try:
            req = self.comm.allreduce_async(d, "avg", codec=self.codec, tag=f.tag)
            self._flight = _InFlight(f, self.t, req, None)
        except PeerLost as e:
            # Reported at completion: every survivor recovers at the same step.
            self._flight = _InFlight(f, self.t, None, e)

    def _complete(self) -> None:
        fl, self._flight = self._flight, None
        assert fl is not None
        try:
            if fl.error is not None:
                raise fl.error
            fl.req.wait()
        except PeerLost:
            self._redo(fl.frag)
            return
        self._apply(fl.frag)

    def _reduce_counted(self, f: Fragment, contributor: bool) -> None:
        """A recovery's sync of fragment f: the members that hold a pseudo-gradient are
        counted (a newcomer admitted by the recovery sends zeros), the average is taken
        over them. Retried through recovery until it succeeds."""
        mine = torch.tensor([1 if contributor else 0], dtype=torch.int32)
        d = self.delta[f.offset:f.offset + f.count]
        while True:
            if contributor:
                self._pseudo_grad(f)  # from the synced theta_p
            else:
                d.zero_()
            try:
                k = int(self.comm.allreduce(mine.clone(), "sum", tag=STREAM_COUNT_TAG)[0])
                self.comm.allreduce(d, "avg", codec=self.codec, tag=f.tag)
                break
            except PeerLost:
                self.recoveries += 1
                _recover(self.comm)
                self._sync()
        if k < 1:  # cannot happen: the survivors contribute
            raise Invalid("StreamingDiLoCo: no member holds a pseudo-gradient")
        if k != self.comm.size:
            d.mul_(self.comm.size / k)  # the newcomers' zeros must not dilute the mean
        self._apply(f, mix=contributor)
        self.phase.zero_()

    def _redo(self, f: Fragment) -> None:
        self.recoveries += 1
        _recover(self.comm)
        # Marks the state "inside fragment f's sync" so a newcomer admitted here joins it.
        self.phase.fill_(f.index + 1)
        self._sync()
        self._reduce_counted(f, contributor=True)

    def _after_complete(self) -> None:
        """Steps 2 and 3 of the schedule at self.t."""
        h = self.inner_steps
        if self.update_every and self.t % h == 0 and (self.t // h) % self.update_every == 0:
            _recover(self.comm)
            self._sync()
        self._issue_due()

    def _issue_due(self) -> None:
        """Step 3 of the schedule at self.t."""
        k = self.fragment_at(self.t)
        if k is not None:
            self._issue(self.fragments[k])
            if self.overlap == 0:
                self._complete()

    # ------------------------------------------------------------ API
    def start(self) -> None:
        """Joins if this communicator has not (``update_topology``), syncs the shared state
        (every member starts from the majority's ``theta``, ``m`` and step) and loads
        ``theta`` into the model. A member admitted by a recovery of a fragment's sync
        takes part in that sync (with zeros) here. Collective; :meth:`step` calls it on
        first use."""
        if self._started:
            return
        if self.comm.epoch == 0:
            _recover(self.comm)
        self._sync()
        self._load()
        self._started = True
        # The sync above met the members' sync inside their step t: do the rest of it.
        ph = int(self.phase[0])
        if ph:  # admitted by the recovery of fragment ph - 1's sync: take part in its redo
            if not 1 <= ph <= len(self.fragments):
                raise Invalid(f"StreamingDiLoCo: shared phase {ph} names no fragment "
                              f"(the members use another fragment count)")
            self._reduce_counted(self.fragments[ph - 1], contributor=False)
            self._after_complete()
        else:  # the first sync (t = 0: nothing due) or a round end's (update_every)
            self._issue_due()

    def step(self) -> bool:
        """Counts one inner step and runs the schedule (collective when a fragment's sync
        is issued or completed). Returns True when an outer step was applied."""
        if not self._started:
            self.start()
        before = self.syncs
        self.t += 1
        self.comm.step = self.t
        fl = self._flight
        if fl is not None and fl.issue_step + self.overlap <= self.t:
            self._complete()
        self._after_complete()
        return self.syncs != before

    def finish(self) -> None:
        """Ends the run on every member (collective): completes the sync in flight, then
        syncs every fragment once more (blocking, in fragment order: one last outer step
        each, from the current local parameters) and loads ``theta`` into the model, so
        every member holds the same model and state. :meth:`step` may be called again
        afterwards (training resumes from ``theta``)."""
        if not self._started:
            self.start()
        if self._flight is not None:
            self._complete()
        for f in self.fragments:
            self._issue(f)
            self._complete()
        self._load()
        self.comm.step = self.t

    def state_hash(self) -> str:
        """Content hash of the shared state (theta, momentum, phase, step): equal on every
        member whenever no sync is in flight."""
        self.comm.step = self.t
        return self.comm.state_hash()


def _recover(comm: Communicator) -> None:
    from .torch import recover
    recover(comm, sync=False)
