"""Bucketed data-parallel gradient averaging that overlaps backward (exported as
``starling.torch.GradientSync``; semantics in docs/python.md, "Overlapping backward").

How it works. The parameters that require gradients are grouped, in reverse registration
order (roughly the order backward produces their gradients), into buckets of at most
``bucket_mb`` MiB, one dtype per bucket. Each parameter's AccumulateGrad node gets a post
hook: it fires after backward has written the parameter's ``.grad`` (accumulated, if
there was one), copies it into the parameter's slot of its bucket's flat buffer and, once
every parameter of the bucket is in, starts an asynchronous in-place all-reduce (op avg)
of the bucket. Buckets start strictly in index order (bucket k only after 0..k-1), so
every member issues the same collectives in the same order whatever order its gradients
came in. :meth:`GradientSync.finish` starts what is left (parameters that received no
gradient contribute their ``.grad`` or zeros, as allreduce_gradients does), waits, and
writes the averages back.

Faults: the library commits a prefix of the queued collectives on every survivor and
aborts the rest, leaving their (in-place) buffers unchanged; so after PeerLost the
survivors agree on which buckets are done, and finish() recovers (update_topology, sync of
the shared state) and redoes exactly the others from their unchanged local gradients:
no gradient is averaged twice.

Threads: torch 1.13 runs CPU backward, and so these hooks, on the thread that called
``backward()``; a lock keeps the hooks' calls and finish()'s calls on the communicator
from overlapping, but the application must not use the communicator from another thread
while a backward with a live GradientSync runs (the Communicator's one-thread rule).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, List, Optional, Union

import torch

from .comm import Codec, Communicator, Request
from .errors import Invalid, PeerLost, StarlingError

__all__ = ["GradientSync", "BUCKET_TAG"]

# Tag of bucket k: BUCKET_TAG + k. Distinct from allreduce_gradients' GRAD_TAG, so the two
# can be used on one communicator (error-feedback residuals are kept per tag).
BUCKET_TAG = 0x5354_4742_0000  # "STGB"

_MiB = 1024 * 1024

# Bucket states within one iteration
_FILLING, _LAUNCHED, _FAILED, _DONE = range(4)


class _Bucket:
    """A flat buffer of one dtype and the parameters whose gradients it carries."""

    __slots__ = ("index", "dtype", "params", "offsets", "buf", "slots", "pending",
                 "state", "req")

    def __init__(self, index: int, dtype: torch.dtype, params: List[int],
                 tensors: List[torch.Tensor]) -> None:
        self.index = index
        self.dtype = dtype
        self.params = params              # indices into GradientSync.params
        self.offsets: List[int] = []
        off = 0
        for i in params:
            self.offsets.append(off)
            off += tensors[i].numel()
        self.buf = torch.zeros(off, dtype=dtype)
        self.slots = [self.buf[o:o + tensors[i].numel()].view_as(tensors[i])
                      for o, i in zip(self.offsets, params)]
        self.pending = len(params)
        self.state = _FILLING
        self.req: Optional[Request] = None


class GradientSync:
    """Averages the gradients of ``model`` over the members while backward runs.

        sync = st.GradientSync(comm, model, bucket_mb=25)
        for x, y in batches:
            opt.zero_grad()
            loss_fn(model(x), y).backward()   # buckets are all-reduced as they fill
            sync.finish()                     # wait; .grad := mean over members
            opt.step()

    Collective: every member builds it from the same model layout (names, shapes, dtypes,
    requires_grad) with the same ``bucket_mb``/``first_bucket_mb``, and calls
    :meth:`finish` once per iteration. Parameters with ``requires_grad=False`` are left
    out (their ``.grad`` is not touched). ``codec`` applies to float32 buckets only.
    Bucket k uses tag ``tag + k``. With ``grad_as_view`` every ``.grad`` becomes a view
    into its bucket's buffer, so backward accumulates straight into the buffer and
    neither the copy in nor the copy out is needed (``.grad`` is set to zeros at
    construction where it was None; ``zero_grad(set_to_none=True)`` falls back to the
    copies until the next finish() restores the views).

    Gradient accumulation: run every backward but the last of an accumulation inside
    :meth:`no_sync`; a second backward that reaches a parameter whose gradient was already
    handed over (no finish() in between, outside no_sync) raises :class:`Invalid` before
    touching its ``.grad``.
    """

    def __init__(self, comm: Communicator, model: torch.nn.Module, bucket_mb: float = 25.0,
                 codec: Union[None, str, Codec] = None, tag: int = BUCKET_TAG,
                 sync: bool = True, first_bucket_mb: Optional[float] = None,
                 grad_as_view: bool = False) -> None:
        if not bucket_mb > 0 or (first_bucket_mb is not None and not first_bucket_mb > 0):
            raise Invalid("bucket_mb and first_bucket_mb must be positive")
        self.comm = comm
        self.codec = Codec(codec) if isinstance(codec, str) else codec
        self.tag = int(tag)
        self.sync = sync
        self.grad_as_view = bool(grad_as_view)
        self.names: List[str] = []
        self.params: List[torch.nn.Parameter] = []
        for n, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if p.device.type != "cpu":
                raise Invalid(f"{n}: tensor is on device '{p.device}', CPU only")
            if p.is_sparse:
                raise Invalid(f"{n}: sparse tensors are not supported")
            self.names.append(n)
            self.params.append(p)
        if not self.params:
            raise Invalid("model has no parameter that requires a gradient")
        self.buckets = self._make_buckets(int(bucket_mb * _MiB),
                                          int((first_bucket_mb or bucket_mb) * _MiB))
        self._where = [(0, 0)] * len(self.params)  # param -> (bucket, position)
        for b in self.buckets:
            for j, i in enumerate(b.params):
                self._where[i] = (b.index, j)
        self._ready = [False] * len(self.params)
        self._next = 0            # the next bucket to launch (all before it are launched)
        self._broken = False      # a launch saw PeerLost: the epoch is aborted
        self._error: Optional[BaseException] = None
        self._no_sync = False
        self._lock = threading.Lock()
        self.recoveries = 0
        self.hook_threads: set = set()  # idents of threads the hooks ran on (for tests)
        if self.grad_as_view:
            with torch.no_grad():
                for i, p in enumerate(self.params):
                    slot = self._slot(i)
                    if p.grad is not None:
                        slot.copy_(p.grad)
                    p.grad = slot
        # Keep the AccumulateGrad nodes alive: a leaf holds only a weak reference to its
        # node, and a new node (without our hooks) would be made once this one is freed.
        self._accumulators: List[Any] = []
        self._handles: List[Any] = []
        with torch.enable_grad():
            for i, p in enumerate(self.params):
                acc = p.expand_as(p).grad_fn.next_functions[0][0]
                self._accumulators.append(acc)
                self._handles.append(acc.register_hook(self._post_hook(i)))
                self._handles.append(p.register_hook(self._pre_hook(i)))

    # ------------------------------------------------------------ layout
    def _make_buckets(self, cap: int, first_cap: int) -> List[_Bucket]:
        """Reverse registration order, one open bucket per dtype; a bucket is closed when
        the next parameter would take it past its cap (a parameter larger than the cap
        gets a bucket of its own). Buckets are numbered in the order they were opened."""
        groups: List[List[int]] = []
        dtypes: List[torch.dtype] = []
        open_: dict = {}   # dtype -> (group index, bytes so far)
        for i in reversed(range(len(self.params))):
            p = self.params[i]
            nbytes = p.numel() * p.element_size()
            cur = open_.get(p.dtype)
            if cur is not None:
                g, used = cur
                limit = first_cap if g == 0 else cap
                if used + nbytes <= limit or used == 0:
                    groups[g].append(i)
                    open_[p.dtype] = (g, used + nbytes)
                    continue
            groups.append([i])
            dtypes.append(p.dtype)
            open_[p.dtype] = (len(groups) - 1, nbytes)
        return [_Bucket(k, dt, g, self.params) for k, (dt, g) in enumerate(zip(dtypes, groups))]

    def _slot(self, i: int) -> torch.Tensor:
        b, j = self._where[i]
        return self.buckets[b].slots[j]

    @property
    def started(self) -> int:
        """How many buckets of the current iteration have been started (0 after
        finish())."""
        return self._next

    @property
    def layout(self) -> List[List[str]]:
        """The parameter names of each bucket, in launch order."""
        return [[self.names[i] for i in b.params] for b in self.buckets]

    # ------------------------------------------------------------ hooks
    def _pre_hook(self, i: int):
        def hook(grad: torch.Tensor) -> None:
            # Runs before backward accumulates into .grad: refuse while the gradient is
            # already in a bucket (possibly being sent), before anything is modified.
            if self._ready[i]:
                raise Invalid(
                    f"{self.names[i]}: a second backward reached this parameter before "
                    f"GradientSync.finish(); run all but the last backward of a gradient "
                    f"accumulation inside GradientSync.no_sync()")
        return hook

    def _post_hook(self, i: int):
        def hook(grad_inputs: Any, grad_outputs: Any) -> None:
            if self._no_sync:
                return
            self.hook_threads.add(threading.get_ident())
            self._mark_ready(i)
        return hook

    def _mark_ready(self, i: int) -> None:
        p = self.params[i]
        slot = self._slot(i)
        if p.grad is not None and p.grad.data_ptr() != slot.data_ptr():
            with torch.no_grad():
                slot.copy_(p.grad)
        elif p.grad is None:
            slot.zero_()
        self._ready[i] = True
        b = self.buckets[self._where[i][0]]
        b.pending -= 1
        self._launch_ready()

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            self._launch(self.buckets[self._next])
            self._next += 1

    def _launch(self, b: _Bucket) -> None:
        if self._broken or self._error is not None:
            b.state = _FAILED
            return
        codec = self.codec if b.dtype == torch.float32 else None
        with self._lock:
            try:
                # out= the input: in place (the result replaces the buffer at commit; on
                # PeerLost the buffer is left unchanged, which the redo relies on)
                b.req = self.comm.allreduce_async(b.buf, "avg", out=b.buf, codec=codec,
                                                  tag=self.tag + b.index)
                b.state = _LAUNCHED
            except PeerLost:
                b.state = _FAILED
                self._broken = True
            except StarlingError as e:
                b.state = _FAILED
                self._error = e

    # ------------------------------------------------------------ API
    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward inside this block only accumulates into ``.grad`` (no communication):
        for gradient accumulation, run every backward but the last in it."""
        old, self._no_sync = self._no_sync, True
        try:
            yield
        finally:
            self._no_sync = old

    def finish(self) -> bool:
        """Completes the iteration: starts the buckets not started yet (in order; a
        parameter that got no gradient contributes its ``.grad`` or zeros), waits for all,
        and sets every ``.grad`` to the mean over the members. On :class:`PeerLost`:
        ``starling.torch.recover(comm, sync)``, then redoes the unfinished buckets among
        the survivors. Returns True if a recovery happened. Collective: every member
        calls it once per iteration, at the same point."""
        from .torch import recover
        try:
            for k in range(self._next, len(self.buckets)):
                b = self.buckets[k]
                for i in b.params:
                    if not self._ready[i]:
                        self._mark_ready_unused(i)
                b.pending = 0
            self._launch_ready()
            failed = self._wait_all(self.buckets)
            recovered = False
            while failed:
                recover(self.comm, self.sync)
                recovered = True
                self.recoveries += 1
                self._broken = False
                for b in failed:
                    self._launch(b)
                failed = self._wait_all(failed)
            self._write_back()
            return recovered
        finally:
            self._reset()

    def _mark_ready_unused(self, i: int) -> None:
        p = self.params[i]
        slot = self._slot(i)
        with torch.no_grad():
            if p.grad is None:
                slot.zero_()
            elif p.grad.data_ptr() != slot.data_ptr():
                slot.copy_(p.grad)
        self._ready[i] = True

    def _wait_all(self, buckets: List[_Bucket]) -> List[_Bucket]:
        """Waits for every launched bucket; returns those that failed with PeerLost
        (raises any other error once nothing is in flight any more)."""
        failed = []
        for b in buckets:
            if b.state == _LAUNCHED:
                with self._lock:
                    try:
                        b.req.wait()
                        b.state = _DONE
                    except PeerLost:
                        b.state = _FAILED
                    except StarlingError as e:
                        b.state = _FAILED
                        if self._error is None:
                            self._error = e
                b.req = None
            if b.state == _FAILED:
                failed.append(b)
        if self._error is not None:
            raise self._error
        return failed

    def _write_back(self) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.params):
                slot = self._slot(i)
                if p.grad is not None and p.grad.data_ptr() == slot.data_ptr():
                    continue
                if self.grad_as_view or p.grad is None:
                    p.grad = slot if self.grad_as_view else slot.clone()
                else:
                    p.grad.copy_(slot)

    def _reset(self) -> None:
        for b in self.buckets:
            if b.req is not None:     # only after an unexpected exception: never leave
                try:                  # a request in flight on our buffers
                    b.req.wait()
                except StarlingError:
                    pass
                b.req = None
            b.pending = len(b.params)
            b.state = _FILLING
        self._ready = [False] * len(self.params)
        self._next = 0
        self._broken = False
        self._error = None

    def close(self) -> None:
        """Removes the hooks (backward then no longer communicates)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._accumulators = []

    def __enter__(self) -> "GradientSync":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
