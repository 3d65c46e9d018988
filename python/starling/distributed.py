"""The "starling" backend for torch.distributed, and a fault-tolerant training step.

    import starling.distributed            # registers the backend (imports torch)
    torch.distributed.init_process_group("starling")   # env:// or tcp://HOST:PORT
    model = torch.nn.parallel.DistributedDataParallel(model)

The process group (a C++ extension over libstarling, ``_starling_c10d.so``, built by
``make`` when Debian's libtorch-dev and pybind11-dev are present) implements allreduce
(SUM, AVG, MIN, MAX), broadcast, allgather, reduce_scatter (list and ``_base`` forms) and
barrier on CPU tensors of float32/64, float16, bfloat16, int32/64 and uint8; every call
returns a Work whose ``wait()`` and ``get_future()`` work as torch's. Collectives run in
issue order on one worker thread per group, so DDP's bucket all-reduces overlap backward.

Rendezvous. If ``STARLING_COORD`` is set (``python3 -m starling.launch`` sets it), the
default group joins that coordinator with ``STARLING_RUN`` and ``STARLING_SECRET``; the
coordinator is a separate process, so any rank may die. Otherwise group rank 0 starts a
coordinator inside its process (listening on every interface, a free port), and
publishes its address (MASTER_ADDR, else the TCPStore's host) and a random secret in
torch's store; the others read them there. Then rank 0 must survive the run.
``STARLING_SECURITY`` ("aead", "chacha20" or "none"; unset: the library's "aead") sets
what every connection carries, for the group and the coordinator rank 0 hosts alike.

Failures. A member that dies or freezes makes the collective fail on every survivor
with :class:`starling.errors.PeerLost` (``wait()`` raises it; inside DDP's backward it
surfaces as a RuntimeError whose message starts ``starling``). The group's torch rank and
size stay fixed; after ``update_topology()`` the survivors carry on among themselves
(``live_size``; AVG divides by it). :class:`Manager` does this for DDP.
"""
from __future__ import annotations

import atexit
import datetime
import importlib.machinery
import importlib.util
import logging
import os
import secrets
import weakref
from ctypes import c_void_p
from typing import Any, Callable, List, Optional

import torch
import torch.distributed as dist

from . import _lib
from .comm import Communicator, Config, Coordinator
from .env import data_listen, inbound, security, shm
from .errors import Invalid, PeerLost, StarlingError
from .torch import materialize, register_model

__all__ = ["ProcessGroupStarling", "Manager", "is_peer_lost", "extension_path"]

_log = logging.getLogger("starling")
_EXT_NAME = "_starling_c10d"


def _loaded_library_dir() -> Optional[str]:
    """Directory of the libstarling the process has loaded (from /proc/self/maps)."""
    _lib.lib()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(None, 5)[-1]
                if os.path.basename(path).startswith("libstarling.so"):
                    return os.path.dirname(path)
    except OSError:
        pass
    return None


def extension_path() -> str:
    """Where the process group's extension module is: ``$STARLING_C10D``, else beside
    the loaded libstarling (a build directory), else in its ``starling/`` subdirectory
    (an installed prefix: ``make install``). Raises ImportError naming the places."""
    tried: List[str] = []
    env = os.environ.get("STARLING_C10D")
    if env:
        if os.path.isfile(env):
            return env
        raise ImportError(f"STARLING_C10D={env!r} is not a file")
    libdir = _loaded_library_dir()
    if libdir:
        for d in (libdir, os.path.join(libdir, "starling")):
            p = os.path.join(d, _EXT_NAME + ".so")
            if os.path.isfile(p):
                return p
            tried.append(p)
    raise ImportError("the starling torch.distributed backend is not built (looked for "
                      + ", ".join(tried or [_EXT_NAME + ".so beside libstarling"])
                      + "); install libtorch-dev and pybind11-dev, then rebuild (make), "
                      "or set STARLING_C10D to the module's path")


def _load_extension() -> Any:
    path = extension_path()
    loader = importlib.machinery.ExtensionFileLoader(_EXT_NAME, path)
    spec = importlib.util.spec_from_file_location(_EXT_NAME, path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


_ext = _load_extension()
ProcessGroupStarling = _ext.ProcessGroupStarling


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise Invalid(f"{name}={v!r} is not an integer") from None
    if n < 0:
        raise Invalid(f"{name}={v!r} must not be negative")
    return n


def _store_host(store: Any) -> Optional[str]:
    while store is not None:
        host = getattr(store, "host", None)
        if host:
            return host
        store = getattr(store, "underlying_store", None)
    return None


def _rendezvous(store: Any, rank: int, size: int, group_id: str, timeout_ms: int,
                default_group: bool, sec: Optional[str]) -> tuple:
    """(coordinator address, run, secret, coordinator object or None)."""
    env = os.environ
    if default_group and env.get("STARLING_COORD"):
        return (env["STARLING_COORD"], env.get("STARLING_RUN", "default"),
                env.get("STARLING_SECRET", "starling").encode(), None)
    run = f"torch-{group_id}"
    coord = None
    if rank == 0:
        host = env.get("MASTER_ADDR") or _store_host(store) or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal
        secret = secrets.token_hex(16).encode()
        cfg = Config(min_peers=size, timeout_ms=_env_int("STARLING_TIMEOUT_MS", 0) or None,
                     security=sec)
        coord = Coordinator(listen="[::]:0" if host.startswith("[") else "0.0.0.0:0",
                            run=run, secret=secret, config=cfg)
        address = f"{host}:{coord.port}"
        store.set("starling/secret", secret)
        store.set("starling/coordinator", address)
    else:
        store.wait(["starling/coordinator"], datetime.timedelta(milliseconds=timeout_ms))
        address = store.get("starling/coordinator").decode()
        secret = store.get("starling/secret")
    return address, run, secret, coord


def _tristate(v: Optional[bool]) -> int:
    """STARLING_INBOUND / STARLING_SHM for the C++ options: -1 unset, else 0 or 1."""
    return -1 if v is None else int(v)


def _create(opts: Any, pg_options: Any) -> Any:
    """torch.distributed's creator (extended API): the options carry the prefix store,
    the group's rank and size, its timeout and its name."""
    timeout_ms = int(opts.timeout.total_seconds() * 1000)
    timeout_ms = max(1, min(timeout_ms, 2**31 - 1))
    default_group = not dist.is_initialized()
    sec = security()  # STARLING_SECURITY; None: the library's default
    address, run, secret, coord = _rendezvous(opts.store, opts.group_rank, opts.group_size,
                                              str(opts.group_id), timeout_ms, default_group,
                                              sec)
    try:
        pg = ProcessGroupStarling(opts.group_rank, opts.group_size, address, run, secret,
                                  name=f"rank{os.environ.get('RANK', opts.group_rank)}",
                                  timeout_ms=_env_int("STARLING_TIMEOUT_MS", 0),
                                  op_timeout_ms=timeout_ms,
                                  streams=_env_int("STARLING_STREAMS", 0),
                                  listen=data_listen(address),
                                  advertise=os.environ.get("STARLING_ADVERTISE", ""),
                                  security=sec or "",
                                  inbound=_tristate(inbound()), shm=_tristate(shm()))
    except BaseException:
        if coord is not None:
            coord.close()
        raise
    pg._starling_coordinator = coord  # lives as long as the group
    if coord is not None:
        atexit.register(_drain_at_exit, weakref.ref(coord))
    return pg


def _drain_at_exit(ref: Any) -> None:
    """Rank 0 exiting with its group's coordinator: wait (up to 30 s) for the other ranks
    to leave first, so that one still finishing its last collective completes it instead
    of losing the coordinator mid-way."""
    coord = ref()
    if coord is not None and coord.drain(30.0) == 0:
        coord.close()


if "STARLING" not in dist.Backend._plugins:
    dist.Backend.register_backend("starling", _create, extended_api=True)


def is_peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` reports a lost member: :class:`PeerLost`, or the RuntimeError torch
    makes of it when it is raised inside autograd (DDP's backward)."""
    if isinstance(exc, PeerLost):
        return True
    return isinstance(exc, RuntimeError) and "starling" in str(exc) and "peer lost" in str(exc)


class _Borrowed(Communicator):
    """A Communicator over the process group's library handle, for shared state (the
    parameters and optimizer state) and its hash. The group owns the handle: closing
    this only forgets it. Used between steps, when the group's worker is idle."""

    def __init__(self, pg: Any) -> None:  # noqa: super().__init__ would connect anew
        import weakref
        self._h = c_void_p(pg._comm_handle)
        self._coordinator = None
        self.env = None
        self._requests = weakref.WeakSet()
        self._state: dict = {}
        self._pg = pg

    def close(self) -> None:
        self._h = c_void_p()
        self._state.clear()

    def update_topology(self) -> None:
        self._pg.update_topology()


class Manager:
    """A fault-tolerant training step for DistributedDataParallel over the starling
    backend, in the spirit of torchft's Manager: a step whose collectives failed is not
    applied; the survivors form a new epoch, make their state equal, and redo it.

        mgr = starling.distributed.Manager(ddp_model, optimizer)
        for x, y in batches:
            def closure():
                optimizer.zero_grad()
                loss = loss_fn(ddp_model(x), y)
                loss.backward()
                return loss
            loss = mgr.step(closure)     # runs closure, then optimizer.step() if all went well

    It installs a DDP communication hook that averages each gradient bucket with
    ReduceOp.AVG (the library divides by the live member count, so the average stays
    right after a loss) and never raises: a failed bucket is recorded, the step finishes
    locally and is then discarded. The model's parameters and the optimizer's state
    (materialized first, see :func:`starling.torch.materialize`) are registered as
    shared state; after a failure :meth:`recover` runs ``update_topology()`` and a state
    sync (:meth:`Communicator.sync`). A broadcast from a rank that has left (DDP's buffer
    sync from rank 0) is served by a live member. The group can shrink, not grow (torch
    fixes a group's size); ``max_recoveries`` bounds the redo loop of one step."""

    def __init__(self, ddp: torch.nn.parallel.DistributedDataParallel,
                 optimizer: torch.optim.Optimizer, group: Optional[Any] = None,
                 max_recoveries: int = 8) -> None:
        pg = group if group is not None else dist.distributed_c10d._get_default_group()
        if not isinstance(pg, ProcessGroupStarling):
            raise Invalid("Manager: the process group is not a starling one "
                          f"({type(pg).__name__}); init_process_group('starling')")
        self.pg = pg
        self.ddp = ddp
        self.optimizer = optimizer
        self.max_recoveries = max_recoveries
        self.recoveries = 0
        self.steps = 0
        self._error: Optional[BaseException] = None
        pg.root_fallback = True
        materialize(optimizer)
        self.comm = _Borrowed(pg)
        register_model(self.comm, ddp.module, optimizer)
        ddp.register_comm_hook(self, _avg_hook)

    def _failed(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc

    def step(self, closure: Callable[[], Any]) -> Any:
        """Runs ``closure`` (zero_grad, forward, backward), then ``optimizer.step()`` if
        every collective succeeded; else :meth:`recover` and runs it again. Returns the
        closure's result. Collective: every member calls it with the same layout."""
        for _ in range(self.max_recoveries + 1):
            self._error = None
            try:
                result = closure()
            except BaseException as e:  # a failed broadcast in forward, ...
                if not is_peer_lost(e):
                    raise
                self._failed(e)
            self.pg.drain()
            if self._error is None:
                self.optimizer.step()
                self.steps += 1
                self.comm.step = self.steps
                return result
            _log.warning("step %d: %s; recovering", self.steps, self._error)
            self.recover()
        raise PeerLost(f"Manager.step: still failing after {self.max_recoveries} "
                       f"recoveries: {self._error}", -5)

    def recover(self) -> bool:
        """Forms the next epoch among the survivors and makes their shared state equal.
        Returns whether this member's state was replaced."""
        self.recoveries += 1
        for _ in range(self.max_recoveries + 1):
            try:
                self.pg.update_topology()
                return self.comm.sync()
            except PeerLost:
                continue
        raise PeerLost("Manager.recover: the membership kept changing", -5)

    def state_hash(self) -> str:
        """Content hash of the shared state (equal on every member after a step)."""
        self.pg.drain()
        return self.comm.state_hash()


def _avg_hook(mgr, bucket):  # unannotated: DDP refuses annotations other than its own
    t = bucket.buffer()
    opts = dist.AllreduceOptions()
    opts.reduceOp = dist.ReduceOp.AVG
    try:
        fut = mgr.pg.allreduce([t], opts).get_future()
    except StarlingError as e:
        mgr._failed(e)
        done: torch.futures.Future = torch.futures.Future()
        done.set_result(t)
        return done

    def finished(f: torch.futures.Future) -> torch.Tensor:
        try:
            f.value()
        except Exception as e:  # PeerLost: the step is discarded by Manager.step
            mgr._failed(e)
        return t

    return fut.then(finished)
