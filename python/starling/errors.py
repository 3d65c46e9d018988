"""Exceptions raised for the library's error codes (the starling_error enum).

Every failure raises a subclass of :class:`StarlingError` carrying ``.code`` (the negative
C code) and ``.message``: the Python call that failed, the ``starling_strerror`` text and
the communicator's detail from ``starling_comm_errmsg`` in parentheses, e.g.
``Communicator.allreduce: a peer was lost (a ring link closed)``. Argument checks made in Python (non-contiguous, wrong dtype,
read-only output, ...) raise :class:`Invalid`, the same class the library uses for a bad
argument; it is also a :class:`ValueError`.
"""
from __future__ import annotations

from typing import Dict, Type


class StarlingError(Exception):
    """Base of every starling error. ``code`` is the C code, ``message`` the detail."""

    code: int = 0

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class Invalid(StarlingError, ValueError):
    """STARLING_E_INVALID: bad argument."""
    code = -1


class NoMemory(StarlingError, MemoryError):
    """STARLING_E_NOMEM: allocation failed."""
    code = -2


class OSFailure(StarlingError, OSError):
    """STARLING_E_OS: an operating-system call failed (message has the errno text)."""
    code = -3


class Timeout(StarlingError, TimeoutError):
    """STARLING_E_TIMEOUT: the call's deadline passed."""
    code = -4


class PeerLost(StarlingError):
    """STARLING_E_PEER_LOST: a member died or froze; buffers unchanged; update the
    topology and retry."""
    code = -5


class Mismatch(StarlingError):
    """STARLING_E_MISMATCH: members disagree on a collective or the state layout."""
    code = -6


class Protocol(StarlingError):
    """STARLING_E_PROTOCOL: malformed frame received."""
    code = -7


class Auth(StarlingError):
    """STARLING_E_AUTH: the other side does not know the run's secret."""
    code = -8


class Version(StarlingError):
    """STARLING_E_VERSION: protocol version differs from the other side's."""
    code = -9


class State(StarlingError):
    """STARLING_E_STATE: handle used in the wrong state (e.g. a collective before
    update_topology)."""
    code = -10


class Closed(StarlingError):
    """STARLING_E_CLOSED: the communicator was closed."""
    code = -11


class Unsupported(StarlingError):
    """STARLING_E_UNSUPPORTED: this dtype/op (or codec/dtype) combination is not meaningful."""
    code = -12


class Corrupt(StarlingError):
    """STARLING_E_CORRUPT: data failed its integrity check."""
    code = -13


class Limit(StarlingError):
    """STARLING_E_LIMIT: a configured limit was exceeded."""
    code = -14


class NotFound(StarlingError, KeyError):
    """STARLING_E_NOT_FOUND: no such name."""
    code = -15

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class Busy(StarlingError):
    """STARLING_E_BUSY: too many requests in flight."""
    code = -16


ERRORS: Dict[int, Type[StarlingError]] = {
    cls.code: cls
    for cls in (Invalid, NoMemory, OSFailure, Timeout, PeerLost, Mismatch, Protocol, Auth,
                Version, State, Closed, Unsupported, Corrupt, Limit, NotFound, Busy)
}


def error_for(code: int, message: str) -> StarlingError:
    """The exception instance for C code ``code`` (unknown codes give StarlingError)."""
    cls = ERRORS.get(code, StarlingError)
    return cls(message, code)
