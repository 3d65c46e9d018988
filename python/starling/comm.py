"""Coordinator, Communicator, collectives, codecs and shared state over libstarling.

Buffers are NumPy arrays or PyTorch CPU tensors, passed to the library by pointer with no
copy. They must be C-contiguous, of a supported dtype (float32, float64, float16,
bfloat16 (torch only), int32, int64, uint8), on the CPU, and writable when they receive
results. Anything else raises :class:`starling.Invalid` with a message saying why.
"""
from __future__ import annotations

import copy
import ctypes
import os
import re
import threading
import time
import warnings
import weakref
from ctypes import byref, c_double, c_int, c_size_t, c_void_p
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

from . import _lib, _log
from .errors import Invalid, NotFound, OSFailure, StarlingError, Timeout, error_for

__all__ = ["Config", "Coordinator", "Communicator", "Codec", "Request", "DTYPES", "OPS"]

# starling_dtype / starling_op values (stable, from starling.h)
F32, F64, F16, BF16, I32, I64, U8 = range(7)
DTYPES = {"f32": F32, "f64": F64, "f16": F16, "bf16": BF16, "i32": I32, "i64": I64, "u8": U8}
OPS = {"sum": 0, "avg": 1, "min": 2, "max": 3}
# The tag of barrier(): apart from the default 0, so that a barrier facing some other
# collective on another member is reported as a Mismatch.
BARRIER_TAG = 0x5354_4252_0000  # "STBR"

_NUMPY_DTYPES = {"float32": F32, "float64": F64, "float16": F16, "int32": I32,
                 "int64": I64, "uint8": U8}
_TORCH_DTYPES = {"torch.float32": F32, "torch.float64": F64, "torch.float16": F16,
                 "torch.bfloat16": BF16, "torch.int32": I32, "torch.int64": I64,
                 "torch.uint8": U8}

Array = Any  # numpy.ndarray or torch.Tensor


# C names that the library's detail messages may mention, as the Python user calls them.
_PY_NAMES = {
    "starling_update_topology": "Communicator.update_topology()",
    "starling_measure_links": "Communicator.measure_links()",
    "starling_sync_state": "Communicator.sync()",
    "starling_state_register": "Communicator.register()",
    "starling_comm_destroy": "Communicator.close()",
}
_C_NAME = re.compile(r"\bstarling_[a-z0-9_]+\b")


def _python_names(text: str) -> str:
    return _C_NAME.sub(lambda m: _PY_NAMES.get(m.group(0), m.group(0)), text)


def _check(rc: int, comm: Optional["Communicator"] = None, what: str = "",
           created: bool = False) -> None:
    """Raises the exception matching `rc` (no-op for STARLING_OK) with the message
    "<what>: <starling_strerror> (<starling_comm_errmsg>)", ``what`` naming the Python
    call (e.g. "Communicator.allreduce"); C function names in the detail are replaced by
    their Python equivalents."""
    if rc == 0:
        return
    L = _lib.lib()
    text = L.starling_strerror(rc).decode()
    detail = ""
    if comm is not None and comm._h:
        detail = (L.starling_comm_errmsg(comm._h) or b"").decode(errors="replace")
    elif created:  # a create call: no handle, the library kept why for this thread
        detail = (L.starling_last_error() or b"").decode(errors="replace")
    msg = f"{what}: {text}" if what else text
    if detail and detail != text:
        msg = f"{msg} ({_python_names(detail)})"
    raise error_for(rc, msg)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


class _Buf:
    """A validated view of a user buffer: pointer, element count, starling dtype."""

    __slots__ = ("obj", "ptr", "count", "dtype", "is_torch")

    def __init__(self, obj: Array, role: str, writable: bool) -> None:
        if _is_torch(obj):
            if obj.device.type != "cpu":
                raise Invalid(f"{role}: tensor is on device '{obj.device}', only CPU "
                              f"tensors are supported")
            key = str(obj.dtype)
            if key not in _TORCH_DTYPES:
                raise Invalid(f"{role}: unsupported dtype {obj.dtype} (supported: float32, "
                              f"float64, float16, bfloat16, int32, int64, uint8)")
            if not obj.is_contiguous():
                raise Invalid(f"{role}: tensor is not contiguous (call .contiguous())")
            self.ptr = obj.data_ptr()
            self.count = obj.numel()
            self.dtype = _TORCH_DTYPES[key]
            self.is_torch = True
        elif hasattr(obj, "__array_interface__") and hasattr(obj, "flags"):
            key = str(obj.dtype)
            if key not in _NUMPY_DTYPES:
                raise Invalid(f"{role}: unsupported dtype {obj.dtype} (supported: float32, "
                              f"float64, float16, int32, int64, uint8; bfloat16 via torch)")
            if not obj.dtype.isnative:
                raise Invalid(f"{role}: array is not in native byte order")
            if not obj.flags.c_contiguous:
                raise Invalid(f"{role}: array is not C-contiguous "
                              f"(use numpy.ascontiguousarray)")
            if writable and not obj.flags.writeable:
                raise Invalid(f"{role}: array is read-only, it cannot receive results")
            self.ptr = obj.ctypes.data
            self.count = obj.size
            self.dtype = _NUMPY_DTYPES[key]
            self.is_torch = False
        else:
            raise Invalid(f"{role}: expected a numpy.ndarray or a torch CPU tensor, "
                          f"got {type(obj).__name__}")
        self.obj = obj


def _empty_like(b: _Buf, shape: Tuple[int, ...]) -> Array:
    if b.is_torch:
        import torch
        return torch.empty(shape, dtype=b.obj.dtype)
    import numpy as np
    return np.empty(shape, dtype=b.obj.dtype)


def _bool01(field: str) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if not isinstance(v, bool):
            raise Invalid(f"Config({field}={v!r}): expected True or False", -1)
        return int(v)
    return conv


class Config:
    """Communicator / coordinator settings (see starling_config_* in starling.h).

    ``None`` keeps the library default: timeout 3000 ms, op_timeout 60000 ms, 1 stream,
    listen "127.0.0.1:0", min_peers 1, chunk 1 MiB, the kernel's socket buffers, ring order
    "join" (coordinator; or "name", "measured"), probes of 2 MiB, advertise: the listening
    host (or, listening on a wildcard, this host's side of the coordinator link), security
    "aead" (every frame encrypted and authenticated; "chacha20" forces ChaCha20-Poly1305,
    "none" sends clear frames: both ends must agree, see starling_config_set_security).

    Addresses ("HOST:PORT") take names ("localhost", /etc/hosts, DNS), dotted quads and
    bracketed IPv6 literals ("[::1]:7000"). ``advertise`` is a host without a port: the
    one the other members connect to, for machines with several addresses.
    ``standby_of`` (coordinator only) makes a :class:`Coordinator` the standby of the
    active one at that address: it takes over when the active has been silent for the
    timeout. Peers then take both coordinators, active first: ``"HOST:PORT,HOST:PORT"``.
    ``inbound=False``: this peer accepts no connections (behind a NAT or a firewall); it
    opens both of its ring links itself, and the coordinator never makes two such peers
    neighbours (it admits at most as many as there are members that accept connections).
    ``shm=False`` keeps ring links to members on this host on TCP; by default they go
    through shared memory (proved, not guessed from addresses: see
    starling_config_set_shm).
    """

    def __init__(self, timeout_ms: Optional[int] = None, op_timeout_ms: Optional[int] = None,
                 streams: Optional[int] = None, listen: Optional[str] = None,
                 min_peers: Optional[int] = None, chunk_bytes: Optional[int] = None,
                 name: Optional[str] = None, socket_buffer: Optional[int] = None,
                 ring_order: Optional[str] = None, probe_bytes: Optional[int] = None,
                 advertise: Optional[str] = None, security: Optional[str] = None,
                 standby_of: Optional[str] = None, inbound: Optional[bool] = None,
                 shm: Optional[bool] = None) -> None:
        self.timeout_ms = timeout_ms
        self.op_timeout_ms = op_timeout_ms
        self.streams = streams
        self.listen = listen
        self.min_peers = min_peers
        self.chunk_bytes = chunk_bytes
        self.name = name
        self.socket_buffer = socket_buffer
        self.ring_order = ring_order
        self.probe_bytes = probe_bytes
        self.advertise = advertise
        self.security = security
        self.standby_of = standby_of
        self.inbound = inbound
        self.shm = shm

    def _make(self) -> c_void_p:
        """A new starling_config handle (caller destroys it)."""
        L = _lib.lib()
        h = c_void_p()
        _check(L.starling_config_create(byref(h)), what="Config")
        try:
            for field, fn, conv in (
                    ("timeout_ms", L.starling_config_set_timeout_ms, int),
                    ("op_timeout_ms", L.starling_config_set_op_timeout_ms, int),
                    ("streams", L.starling_config_set_streams, int),
                    ("listen", L.starling_config_set_listen, str.encode),
                    ("min_peers", L.starling_config_set_min_peers, int),
                    ("chunk_bytes", L.starling_config_set_chunk_bytes, int),
                    ("name", L.starling_config_set_name, str.encode),
                    ("socket_buffer", L.starling_config_set_socket_buffer, int),
                    ("ring_order", L.starling_config_set_ring_order, str.encode),
                    ("probe_bytes", L.starling_config_set_probe_bytes, int),
                    ("advertise", L.starling_config_set_advertise, str.encode),
                    ("security", L.starling_config_set_security, str.encode),
                    ("standby_of", L.starling_config_set_standby_of, str.encode),
                    ("inbound", L.starling_config_set_inbound, _bool01("inbound")),
                    ("shm", L.starling_config_set_shm, _bool01("shm"))):
                v = getattr(self, field)
                if v is not None:
                    _check(fn(h, conv(v)), what=f"Config({field}={v!r})")
        except BaseException:
            L.starling_config_destroy(h)
            raise
        return h

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v is not None)
        return f"Config({items})"


def _secret_bytes(secret: Union[str, bytes]) -> bytes:
    b = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not b:
        raise Invalid("secret must not be empty")
    return b


class _Closing:
    """A handle released by ``close()`` (idempotent): also a context manager, and closed
    when garbage-collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Coordinator(_Closing):
    """An in-process coordinator: starling_coord_create, then starling_coord_run on a
    Python daemon thread (the GIL is released while it runs). ``stop()`` / ``close()``
    end it; also a context manager."""

    def __init__(self, listen: str = "127.0.0.1:0", run: str = "default",
                 secret: Union[str, bytes] = "starling", config: Optional[Config] = None
                 ) -> None:
        L = _lib.lib()
        _log.sync_level()
        self._h = c_void_p()
        self._thread: Optional[threading.Thread] = None
        sec = _secret_bytes(secret)
        cfg = config._make() if config else None
        try:
            _check(L.starling_coord_create(byref(self._h), listen.encode(), run.encode(),
                                           sec, len(sec), cfg), what=f"Coordinator({listen!r})",
                   created=True)
        finally:
            if cfg:
                L.starling_config_destroy(cfg)
        self.run_name = run
        self.host = listen.rsplit(":", 1)[0]
        self.port: int = L.starling_coord_port(self._h)
        self._rc: Optional[int] = None
        self._thread = threading.Thread(target=self._run, name="starling-coord", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._rc = _lib.lib().starling_coord_run(self._h)

    @property
    def address(self) -> str:
        """"HOST:PORT" that peers connect to."""
        return f"{self.host}:{self.port}"

    @property
    def peers(self) -> int:
        """How many peers are registered with it now (a peer that left or was declared
        lost no longer counts)."""
        if not self._h:
            return 0
        return max(0, _lib.lib().starling_coord_peers(self._h))

    def drain(self, timeout: float) -> int:
        """Waits until no peer is registered any more (each has left, or was declared lost
        after the failure timeout), at most ``timeout`` seconds. Returns how many remain."""
        deadline = time.monotonic() + timeout
        said = False
        while self._thread is not None and self.peers > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not said and time.monotonic() + 1.0 < deadline:
                _log.logger.info("waiting up to %.0f s for %d peer(s) to leave the "
                                 "coordinator on %s before stopping it", left, self.peers,
                                 self.address)
                said = True
            time.sleep(min(0.02, left))
        return self.peers

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the event loop and joins its thread."""
        if self._h and self._thread is not None:
            _lib.lib().starling_coord_stop(self._h)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise StarlingError("coordinator thread did not stop", -4)
            self._thread = None

    def close(self) -> None:
        """Stops (if running) and frees the coordinator."""
        if self._h:
            self.stop()
            _lib.lib().starling_coord_destroy(self._h)
            self._h = c_void_p()


class _Parsed:
    """A library handle made once from a spec string (codecs, aggregators): a bad spec
    raises the matching exception with the library's message naming the problem."""
    _create = _destroy = _spec = ""  # the C functions

    def __init__(self, spec: str) -> None:
        L = _lib.lib()
        self._h = c_void_p()
        err = ctypes.create_string_buffer(256)
        rc = getattr(L, self._create)(byref(self._h), spec.encode(), err, len(err))
        if rc != 0:
            self._h = c_void_p()
            detail = err.value.decode(errors="replace")
            text = L.starling_strerror(rc).decode()
            raise error_for(rc, f"{type(self).__name__}({spec!r}): {text}" +
                            (f" ({detail})" if detail else ""))

    @property
    def spec(self) -> str:
        """The canonical spec, defaults spelled out (e.g. "int8:block=256")."""
        return getattr(_lib.lib(), self._spec)(self._h).decode()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __del__(self) -> None:
        if getattr(self, "_h", None):
            getattr(_lib.lib(), self._destroy)(self._h)
            self._h = c_void_p()


class Codec(_Parsed):
    """A compression codec parsed once from a spec string, e.g. ``"int8+ef"``,
    ``"int4:block=64"``, ``"topk:0.01+ef+zstd"`` (grammar in docs/codecs.md).
    Immutable; may be shared by threads and calls. A bad spec raises :class:`Invalid`
    with the library's message."""

    _create, _destroy, _spec = ("starling_codec_create", "starling_codec_destroy",
                                "starling_codec_spec")

    def max_encoded(self, count: int) -> int:
        return _lib.lib().starling_codec_max_encoded(self._h, count)

    def encode(self, data: Array, seed: int = 0) -> bytes:
        """Encodes a float32 buffer; returns the wire bytes."""
        b = _Buf(data, "data", writable=False)
        if b.dtype != F32:
            raise Invalid("data: codecs encode float32 only")
        cap = self.max_encoded(b.count)
        out = ctypes.create_string_buffer(max(cap, 1))
        n = c_size_t()
        _check(_lib.lib().starling_codec_encode(self._h, b.ptr, b.count, seed, out, cap,
                                                byref(n)), what="Codec.encode")
        return out.raw[:n.value]

    def decode(self, data: bytes, out: Array, seed: int = 0) -> Array:
        """Decodes bytes made by :meth:`encode` into the float32 buffer ``out``."""
        b = _Buf(out, "out", writable=True)
        if b.dtype != F32:
            raise Invalid("out: codecs decode into float32 only")
        _check(_lib.lib().starling_codec_decode(self._h, data, len(data), b.count, seed,
                                                b.ptr), what="Codec.decode")
        return out


class Aggregator(_Parsed):
    """A robust aggregation rule parsed once from a spec, e.g. ``"median"``, ``"krum"``,
    ``"nnm+trimmed_mean"``, ``"geomed:iters=50"`` (docs/aggregation.md). Immutable."""

    _create, _destroy, _spec = ("starling_aggregator_create", "starling_aggregator_destroy",
                                "starling_aggregator_spec")

    def aggregate(self, vectors: Array, f: int, out: Optional[Array] = None) -> Array:
        """Aggregates the rows of a 2-D float32 array (n vectors of d values) assuming at
        most ``f`` are Byzantine; returns (or fills ``out`` with) d values."""
        if len(tuple(vectors.shape)) != 2:
            raise Invalid("vectors: expected a 2-D array (n vectors x d values)")
        n, d = (int(x) for x in vectors.shape)
        src = _Buf(vectors, "vectors", writable=False)
        if src.dtype != F32:
            raise Invalid("vectors: aggregators take float32")
        if out is None:
            out = _empty_like(src, (d,))
        dst = _Buf(out, "out", writable=True)
        if dst.dtype != F32 or dst.count != d:
            raise Invalid(f"out: expected {d} float32 values")
        err = ctypes.create_string_buffer(256)
        rc = _lib.lib().starling_aggregate(self._h, src.ptr, n, d, int(f), dst.ptr, err,
                                           len(err))
        if rc != 0:
            text = _lib.lib().starling_strerror(rc).decode()
            detail = err.value.decode(errors="replace")
            raise error_for(rc, f"Aggregator.aggregate: {text}" +
                            (f" ({detail})" if detail else ""))
        return out


class Request:
    """An asynchronous collective in flight. Holds references to its buffers until it
    completes. ``wait()`` returns the result array (raising on failure); ``test()`` is
    non-blocking and returns True once complete (raising if it failed)."""

    def __init__(self, comm: "Communicator", handle: c_void_p, keep: List[Any],
                 result: Any, method: str = "") -> None:
        self._comm = comm
        self._what = f"Communicator.{method}" if method else "Request"
        self._h = handle
        self._keep = keep
        self._result = result
        self._rc: Optional[int] = None

    def _finish(self, rc: int) -> Any:
        self._rc = rc
        if self._h:
            _lib.lib().starling_request_free(self._h)
            self._h = c_void_p()
        self._keep = []
        self._comm._requests.discard(self)
        _check(rc, what=self._what)
        return self._result

    def wait(self) -> Any:
        """Blocks until complete (bounded by the communicator's op_timeout); returns the
        output buffer or raises the collective's error. May be called again."""
        if self._rc is not None:
            _check(self._rc, what=self._what)
            return self._result
        return self._finish(_lib.lib().starling_request_wait(self._h))

    def test(self) -> bool:
        """True if complete (raises if it failed), False if still running."""
        if self._rc is not None:
            _check(self._rc, what=self._what)
            return True
        done = c_int(0)
        rc = _lib.lib().starling_request_test(self._h, byref(done))
        if not done.value:
            _check(rc, what=self._what)
            return False
        self._finish(rc)
        return True

    @property
    def done(self) -> bool:
        return self._rc is not None

    def __del__(self) -> None:
        if getattr(self, "_h", None):
            # starling_request_free waits first: buffers in _keep stay alive until then.
            _lib.lib().starling_request_free(self._h)
            self._h = c_void_p()


def _op(op: Union[str, int]) -> int:
    if isinstance(op, str):
        if op not in OPS:
            raise Invalid(f"unknown op {op!r} (expected one of {', '.join(OPS)})")
        return OPS[op]
    return int(op)


def _legacy_inplace(inplace: Optional[bool], out: Optional[Array], method: str) -> bool:
    """``inplace=`` of release 0.1 (out-of-place by default then), accepted for one more
    release with a DeprecationWarning: ``inplace=True`` is now the default and does
    nothing; ``inplace=False`` without ``out=`` keeps its old meaning (the result in a new
    buffer, ``data`` untouched), so old code is not silently changed. Returns whether a new
    output buffer must be made."""
    if inplace is None:
        return False
    warnings.warn(f"Communicator.{method}: inplace= is deprecated and will be removed; "
                  f"collectives are in place by default, pass out= for a separate result",
                  DeprecationWarning, stacklevel=3)
    if inplace and out is not None:
        raise Invalid(f"Communicator.{method}: inplace=True and out= contradict each other")
    return not inplace and out is None


def _legacy_root(src: int, root: Optional[int], method: str) -> int:
    """``root=``, broadcast's source before it took torch's name ``src``: accepted for one
    more release with a DeprecationWarning."""
    if root is None:
        return int(src)
    warnings.warn(f"Communicator.{method}: root= is deprecated and will be removed; use src=",
                  DeprecationWarning, stacklevel=3)
    if src not in (0, root):
        raise Invalid(f"Communicator.{method}: src={src} and root={root} differ")
    return int(root)


class Communicator(_Closing):
    """A peer's handle on a run. Create it, then call :meth:`update_topology` to join.

    ``coordinator`` is a :class:`Coordinator`, a ``"HOST:PORT"``, or several of them
    separated by commas, the active one first and then its standbys
    (``Config(standby_of=...)``): the peer moves on to the next when one is lost or
    refuses it.

    Thread rule (from starling.h): one thread at a time per communicator; different
    communicators may be used from different threads concurrently.
    """

    def __init__(self, coordinator: Union[str, Coordinator], run: str = "default",
                 secret: Union[str, bytes] = "starling", config: Optional[Config] = None
                 ) -> None:
        L = _lib.lib()
        _log.sync_level()
        self._h = c_void_p()
        self._coordinator: Optional[Coordinator] = None  # hosted for from_env's rank 0
        self.env = None  # the starling.Env read by from_env
        self._requests: "weakref.WeakSet[Request]" = weakref.WeakSet()
        self._state: dict = {}
        addr = coordinator.address if isinstance(coordinator, Coordinator) else coordinator
        sec = _secret_bytes(secret)
        cfg = config._make() if config else None
        try:
            h = c_void_p()
            rc = L.starling_comm_create(byref(h), addr.encode(), run.encode(), sec, len(sec),
                                        cfg)
        finally:
            if cfg:
                L.starling_config_destroy(cfg)
        _check(rc, what=f"Communicator({addr!r}, run={run!r})", created=True)
        self._h = h

    @classmethod
    def from_env(cls, config: Optional[Config] = None,
                 environ: Optional[Mapping[str, str]] = None) -> "Communicator":
        """Made from the launch environment (``environ``, default ``os.environ``) as read
        by :meth:`starling.Env.read`: starling's variables (``python3 -m starling.launch``),
        else torchrun's (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), else SLURM's.
        ``STARLING_ADVERTISE`` (a host) sets ``config.advertise`` unless it is set,
        ``STARLING_SECURITY`` ("aead", "chacha20" or "none") sets ``config.security``
        likewise (rank 0's coordinator gets the same mode; another value is Invalid naming
        the variable), and the data plane listens on ``config.listen``, else
        ``STARLING_LISTEN``, else on loopback when the coordinator is on a loopback address
        and on every interface otherwise (:func:`starling.env.data_listen`, as the torch
        backend does).

        The world size becomes ``min_peers`` and the rank hint the name "peer<rank>"
        (unless ``config`` sets them; ``config`` itself is not modified). Without
        starling's variables, rank 0 first starts a :class:`Coordinator` in this process,
        kept by the communicator and closed with it (rank 0 should close last), and every
        rank connects to it, retrying until rank 0 is up (bounded by ``op_timeout_ms``,
        default 60 s). The values read are :attr:`env` (rank, world_size, local_rank, ...)
        for sharding data. Not yet a member: call :meth:`update_topology`."""
        from .env import Env, data_listen, inbound, security, shm
        env = Env.read(environ)
        config = copy.copy(config) if config is not None else Config()
        if config.min_peers is None and env.world_size:
            config.min_peers = env.world_size
        if config.name is None and env.rank is not None:
            config.name = f"peer{env.rank}"
        advertise = (os.environ if environ is None else environ).get("STARLING_ADVERTISE")
        if config.advertise is None and advertise:
            config.advertise = advertise  # the host the other members should connect to
        if config.security is None:
            config.security = security(environ)  # None: the library's default
        if config.inbound is None:
            config.inbound = inbound(environ)
        if config.shm is None:
            config.shm = shm(environ)
        if config.listen is None:
            config.listen = data_listen(env.coordinator, environ)
        if env.default_secret:
            _log.logger.warning(
                "STARLING_SECRET is not set: using the documented default secret, so any "
                "process that can reach %s may join run '%s' (no better than torchrun's "
                "unauthenticated store); set STARLING_SECRET on every rank",
                env.coordinator, env.run)
        coord = None
        if env.host_coordinator:
            try:
                coord = Coordinator(env.listen, env.run, env.secret,
                                    Config(timeout_ms=config.timeout_ms,
                                           security=config.security))
            except StarlingError as e:
                raise type(e)(f"{e.message}: rank 0 starts the run's coordinator on "
                              f"{env.listen} (from {env.source}'s environment); if that "
                              f"port is taken (by torch.distributed's store?), set "
                              f"STARLING_COORD_PORT on every rank", e.code) from None
            _log.logger.info("rank 0 started the coordinator on %s", coord.address)
        try:
            if env.source == "starling":
                comm = cls(env.coordinator, env.run, env.secret, config)
            else:
                comm = cls._connect_retrying(env.coordinator, env.run, env.secret, config)
        except BaseException:
            if coord is not None:
                coord.close()
            raise
        comm._coordinator = coord
        comm.env = env
        return comm

    @classmethod
    def _connect_retrying(cls, address: str, run: str, secret: str,
                          config: Config) -> "Communicator":
        """Connects, retrying while the coordinator is not up yet (OSFailure: refused;
        Timeout), for at most op_timeout_ms (the library's default: 60 s)."""
        budget_s = (config.op_timeout_ms or 60000) / 1000.0
        deadline = time.monotonic() + budget_s
        pause = 0.05
        while True:
            try:
                return cls(address, run, secret, config)
            except (OSFailure, Timeout):
                if time.monotonic() + pause >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    # ------------------------------------------------------------ lifecycle
    def _handle(self) -> c_void_p:
        if not self._h:
            raise error_for(-11, "Communicator: closed (close() was called)")
        return self._h

    def close(self, coordinator_wait: float = 30.0) -> None:
        """Leaves the run and frees the communicator (requests in flight fail with
        Closed). Buffers registered as shared state are released, and the coordinator
        that :meth:`from_env` started on rank 0 is closed once the other members have
        left too, or after ``coordinator_wait`` seconds: a member still finishing its
        last collective when rank 0 leaves would otherwise lose its coordinator and
        fail with Timeout instead of completing it."""
        if self._h:
            h, self._h = self._h, c_void_p()
            _lib.lib().starling_comm_destroy(h)
            for r in list(self._requests):
                # The library failed them with CLOSED; free handles and buffers now.
                if r._h:
                    r._rc = -11
                    _lib.lib().starling_request_free(r._h)
                    r._h = c_void_p()
                    r._keep = []
            self._state.clear()
        coord, self._coordinator = getattr(self, "_coordinator", None), None
        if coord is not None:
            left = coord.drain(coordinator_wait)
            if left:
                _log.logger.warning("stopping the coordinator on %s with %d peer(s) still "
                                    "registered, after waiting %.0f s for them to leave",
                                    coord.address, left, coordinator_wait)
            coord.close()


    def update_topology(self) -> None:
        """Joins the next epoch / applies membership changes. Every live member calls it
        at the same point. Raises Timeout, Closed, or PeerLost (call it again)."""
        _check(_lib.lib().starling_update_topology(self._handle()), self,
               "Communicator.update_topology")

    def measure_links(self) -> None:
        """Measures this member's links to the others and reports them to the coordinator,
        which may reorder the ring (ring order "measured"). Collective, like
        update_topology (which it includes)."""
        _check(_lib.lib().starling_measure_links(self._handle()), self,
               "Communicator.measure_links")

    def link(self, rank: int) -> Optional[tuple]:
        """(bytes per second, round-trip seconds) of this member's last measurement of its
        link to ``rank``, or None if not measured."""
        bps, rtt = c_double(), c_double()
        rc = _lib.lib().starling_comm_link(self._handle(), int(rank), byref(bps), byref(rtt))
        if rc == NotFound.code:
            return None
        _check(rc, self, "Communicator.link")
        return bps.value, rtt.value

    @property
    def rank(self) -> int:
        return _lib.lib().starling_comm_rank(self._handle())

    @property
    def size(self) -> int:
        return _lib.lib().starling_comm_size(self._handle())

    @property
    def epoch(self) -> int:
        return _lib.lib().starling_comm_epoch(self._handle())

    @property
    def bytes_sent(self) -> int:
        return _lib.lib().starling_comm_bytes_sent(self._handle())

    @property
    def errmsg(self) -> str:
        return (_lib.lib().starling_comm_errmsg(self._handle()) or b"").decode(
            errors="replace")

    # ------------------------------------------------------------ collectives
    def _opts(self, tag: int, codec: Union[None, str, Codec], what: str
              ) -> Optional[c_void_p]:
        if not tag and codec is None:
            return None
        L = _lib.lib()
        h = c_void_p()
        _check(L.starling_callopts_create(byref(h)), what=what)
        try:
            if tag:
                _check(L.starling_callopts_set_tag(h, int(tag)), what=f"{what}: tag={tag}")
            if codec is not None:
                c = codec if isinstance(codec, Codec) else Codec(codec)
                _check(L.starling_callopts_set_codec(h, c._h), what=f"{what}: codec")
        except BaseException:
            L.starling_callopts_destroy(h)
            raise
        return h

    def _call(self, name: str, args: tuple, tag: int, codec: Any, asynchronous: bool,
              keep: List[Any], result: Any, method: str = "") -> Any:
        """Runs C collective ``name`` (or its _async twin); ``method`` is the Python
        method's name for messages (default: the C name without its prefix)."""
        method = method or name[len("starling_"):] + ("_async" if asynchronous else "")
        what = f"Communicator.{method}"
        L = _lib.lib()
        opts = self._opts(tag, codec, what)
        try:
            if asynchronous:
                req = c_void_p()
                rc = getattr(L, name + "_async")(*args, opts, byref(req))
            else:
                rc = getattr(L, name)(*args, opts)
        finally:
            if opts:
                L.starling_callopts_destroy(opts)  # allowed once the call returned
        _check(rc, self, what)
        if asynchronous:
            r = Request(self, req, keep, result, method)
            self._requests.add(r)
            return r
        return result

    def allreduce(self, data: Array, op: Union[str, int] = "sum", *, out: Optional[Array] = None,
                  codec: Union[None, str, Codec] = None, tag: int = 0,
                  inplace: Optional[bool] = None) -> Array:
        """All-reduce ``data`` with ``op`` ("sum", "avg", "min", "max").

        In place, as ``torch.distributed.all_reduce``: ``data`` receives the result and is
        returned. With ``out=`` (same dtype and size) the result goes there instead and
        ``data`` is only read. If the call fails (e.g. :class:`PeerLost`) ``data`` is
        unchanged. ``inplace=`` is deprecated (see :func:`_legacy_inplace`)."""
        copy = _legacy_inplace(inplace, out, "allreduce")
        return self._allreduce(data, op, out, copy, codec, tag, False)

    def allreduce_async(self, data: Array, op: Union[str, int] = "sum", *,
                        out: Optional[Array] = None, codec: Union[None, str, Codec] = None,
                        tag: int = 0, inplace: Optional[bool] = None) -> Request:
        """As :meth:`allreduce`, returning a :class:`Request`; buffers must not be touched
        until it completes."""
        copy = _legacy_inplace(inplace, out, "allreduce_async")
        return self._allreduce(data, op, out, copy, codec, tag, True)

    def _allreduce(self, data, op, out, copy, codec, tag, asy):
        h = self._handle()
        src = _Buf(data, "data", writable=out is None and not copy)
        if out is None:
            out = _empty_like(src, tuple(data.shape)) if copy else data
        dst = _Buf(out, "out", writable=True)
        self._same(src, dst, src.count, "out")
        return self._call("starling_allreduce",
                          (h, src.ptr, dst.ptr, src.count, src.dtype, _op(op)),
                          tag, codec, asy, [data, out], out)

    @staticmethod
    def _same(src: _Buf, dst: _Buf, count: int, role: str) -> None:
        if dst.dtype != src.dtype:
            raise Invalid(f"{role}: dtype {dst.obj.dtype} differs from the input's "
                          f"{src.obj.dtype}")
        if dst.count != count:
            raise Invalid(f"{role}: has {dst.count} elements, expected {count}")

    def reduce_scatter(self, data: Array, op: Union[str, int] = "sum", *,
                       out: Optional[Array] = None, codec: Union[None, str, Codec] = None,
                       tag: int = 0) -> Array:
        """``data`` holds size*count elements; this member receives the reduction of block
        ``rank`` (count elements). Without ``out``: shape ``data.shape[1:]`` if
        ``data.shape[0] == size``, else a flat array."""
        return self._reduce_scatter(data, op, out, codec, tag, False)

    def reduce_scatter_async(self, data: Array, op: Union[str, int] = "sum", *,
                             out: Optional[Array] = None,
                             codec: Union[None, str, Codec] = None, tag: int = 0) -> Request:
        return self._reduce_scatter(data, op, out, codec, tag, True)

    def _reduce_scatter(self, data, op, out, codec, tag, asy):
        h = self._handle()
        size = self.size
        src = _Buf(data, "data", writable=False)
        if size < 1 or src.count % size:
            raise Invalid(f"data: {src.count} elements is not a multiple of the member "
                          f"count {size}")
        count = src.count // size
        if out is None:
            shape = tuple(data.shape[1:]) if (len(data.shape) >= 1 and data.shape[0] == size) \
                else (count,)
            out = _empty_like(src, shape)
        dst = _Buf(out, "out", writable=True)
        self._same(src, dst, count, "out")
        return self._call("starling_reduce_scatter",
                          (h, src.ptr, dst.ptr, count, src.dtype, _op(op)),
                          tag, codec, asy, [data, out], out)

    def allgather(self, data: Array, *, out: Optional[Array] = None,
                  codec: Union[None, str, Codec] = None, tag: int = 0) -> Array:
        """Every member contributes ``data``; the result (default shape
        ``(size,) + data.shape``) holds them ordered by rank."""
        return self._allgather(data, out, codec, tag, False)

    def allgather_async(self, data: Array, *, out: Optional[Array] = None,
                        codec: Union[None, str, Codec] = None, tag: int = 0) -> Request:
        return self._allgather(data, out, codec, tag, True)

    def _allgather(self, data, out, codec, tag, asy):
        h = self._handle()
        size = self.size
        src = _Buf(data, "data", writable=False)
        if out is None:
            out = _empty_like(src, (size,) + tuple(data.shape))
        dst = _Buf(out, "out", writable=True)
        self._same(src, dst, src.count * size, "out")
        return self._call("starling_allgather", (h, src.ptr, dst.ptr, src.count, src.dtype),
                          tag, codec, asy, [data, out], out)

    def broadcast(self, data: Array, src: int = 0, *, codec: Union[None, str, Codec] = None,
                  tag: int = 0, root: Optional[int] = None) -> Array:
        """Copies ``data`` of the member of rank ``src`` into ``data`` on every member (in
        place, as ``torch.distributed.broadcast``); returns ``data``. ``root=`` is a
        deprecated alias of ``src``."""
        src = _legacy_root(src, root, "broadcast")
        return self._broadcast(data, src, codec, tag, False)

    def broadcast_async(self, data: Array, src: int = 0, *,
                        codec: Union[None, str, Codec] = None, tag: int = 0,
                        root: Optional[int] = None) -> Request:
        src = _legacy_root(src, root, "broadcast_async")
        return self._broadcast(data, src, codec, tag, True)

    def _broadcast(self, data, src, codec, tag, asy):
        h = self._handle()
        b = _Buf(data, "data", writable=True)
        size = self.size
        if size > 0 and not 0 <= src < size:  # size 0: not joined, the library says so
            raise Invalid(f"src: rank {src} is outside 0..{size - 1}")
        return self._call("starling_broadcast", (h, b.ptr, b.count, b.dtype, int(src)),
                          tag, codec, asy, [data], data)

    def barrier(self, *, tag: int = BARRIER_TAG) -> None:
        """Returns once every member of the epoch has called it (a collective of zero
        elements, as ``torch.distributed.barrier``). Raises like any collective
        (:class:`PeerLost`: update the topology and call it again)."""
        self._call("starling_allreduce", (self._handle(), None, None, 0, U8, 0), tag, None,
                   False, [], None, "barrier")

    def barrier_async(self, *, tag: int = BARRIER_TAG) -> Request:
        """As :meth:`barrier`, returning a :class:`Request` (``wait()`` returns None)."""
        return self._call("starling_allreduce", (self._handle(), None, None, 0, U8, 0), tag,
                          None, True, [], None, "barrier_async")

    # ------------------------------------------------------------ error feedback
    def robust_allreduce(self, data: Array, aggregator: Union[str, "Aggregator"], f: int, *,
                         out: Optional[Array] = None, codec: Union[None, str, Codec] = None,
                         tag: int = 0, inplace: Optional[bool] = None) -> Array:
        """Byzantine-robust all-reduce of a float32 buffer: every member's vector is
        gathered and ``aggregator`` (assuming at most ``f`` Byzantine members) is applied
        identically everywhere, so all members get the same bytes. Costs n/2 times the
        bytes of :meth:`allreduce` (docs/aggregation.md). In place unless ``out=`` is
        given, like :meth:`allreduce`."""
        copy = _legacy_inplace(inplace, out, "robust_allreduce")
        h = self._handle()
        agg = aggregator if isinstance(aggregator, Aggregator) else Aggregator(aggregator)
        src = _Buf(data, "data", writable=out is None and not copy)
        if src.dtype != F32:
            raise Invalid("data: the robust all-reduce takes float32")
        if out is None:
            out = _empty_like(src, tuple(data.shape)) if copy else data
        dst = _Buf(out, "out", writable=True)
        self._same(src, dst, src.count, "out")
        L = _lib.lib()
        opts = self._opts(tag, codec, "Communicator.robust_allreduce")
        try:
            rc = L.starling_robust_allreduce(h, src.ptr, dst.ptr, src.count, agg._h, int(f),
                                             opts)
        finally:
            if opts:
                L.starling_callopts_destroy(opts)
        _check(rc, self, "Communicator.robust_allreduce")
        return out

    def residual_get(self, tag: int, out: Array) -> Array:
        """Copies this member's error-feedback residual of ``tag`` into float32 ``out``."""
        b = _Buf(out, "out", writable=True)
        if b.dtype != F32:
            raise Invalid("out: residuals are float32")
        _check(_lib.lib().starling_residual_get(self._handle(), tag, b.ptr, b.count), self,
               "Communicator.residual_get")
        return out

    def residual_set(self, tag: int, data: Array) -> None:
        b = _Buf(data, "data", writable=False)
        if b.dtype != F32:
            raise Invalid("data: residuals are float32")
        _check(_lib.lib().starling_residual_set(self._handle(), tag, b.ptr, b.count), self,
               "Communicator.residual_set")

    # ------------------------------------------------------------ shared state
    def register(self, name: str, data: Array) -> None:
        """Registers ``data`` as shared state under ``name``. The library borrows the
        buffer (this object keeps a reference) until :meth:`unregister` or close, and may
        overwrite it during :meth:`sync`."""
        b = _Buf(data, f"state {name!r}", writable=True)
        _check(_lib.lib().starling_state_register(self._handle(), name.encode(), b.ptr,
                                                  b.count, b.dtype), self,
               "Communicator.register")
        self._state[name] = data

    def unregister(self, name: str) -> None:
        _check(_lib.lib().starling_state_unregister(self._handle(), name.encode()), self,
               "Communicator.unregister")
        self._state.pop(name, None)

    @property
    def step(self) -> int:
        """The shared step counter."""
        return _lib.lib().starling_state_step(self._handle())

    @step.setter
    def step(self, value: int) -> None:
        _check(_lib.lib().starling_state_set_step(self._handle(), int(value)), self,
               "Communicator.step")

    def sync(self) -> bool:
        """Collective: makes every member's shared state equal to the majority's. Returns
        True if this member's state was replaced."""
        changed = c_int(0)
        _check(_lib.lib().starling_sync_state(self._handle(), byref(changed)), self,
               "Communicator.sync")
        return bool(changed.value)

    def state_hash(self) -> str:
        """The 128-bit content hash of this member's shared state (32 hex digits)."""
        buf = ctypes.create_string_buffer(33)
        _check(_lib.lib().starling_state_hash_hex(self._handle(), buf), self,
               "Communicator.state_hash")
        return buf.value.decode()

    def __repr__(self) -> str:
        if not self._h:
            return "Communicator(closed)"
        return f"Communicator(rank={self.rank}, size={self.size}, epoch={self.epoch})"
