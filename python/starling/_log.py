"""The library's log lines, delivered to Python's :mod:`logging` on the logger "starling".

Installed by :func:`starling._lib.lib` when it loads libstarling: a ctypes callback set
with ``starling_log_set_handler``. Levels map ERROR -> ``logging.ERROR``, WARN ->
``logging.WARNING``, INFO -> ``logging.INFO``, DEBUG -> ``logging.DEBUG``.

Which lines the library formats at all is its own level (``starling_log_set_level``),
taken from the "starling" logger's effective level when the library is loaded and again
whenever a :class:`~starling.Coordinator` or :class:`~starling.Communicator` is made (so
``logging.getLogger("starling").setLevel(logging.DEBUG)`` before making them is enough).
The environment variable ``STARLING_LOG_LEVEL`` (``debug``, ``info``, ``warning``,
``error`` or ``off``) overrides it: it sets the logger's level, and when no logging
handler is configured anywhere it adds one writing ``starling[LEVEL] message`` to stderr;
``off`` installs no callback at all.

The callback runs on library threads (the coordinator's event loop, each communicator's
engine thread) as well as on the calling thread: ctypes takes the GIL for it. It only
calls :mod:`logging` (never back into starling, as starling.h requires) and swallows
its own exceptions. The callback object is kept at module level so it is never
collected, and it is removed with ``atexit`` before the interpreter shuts down, so a
library thread still running then (a communicator nobody closed) does not call into a
finalized interpreter.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import os
import sys
from ctypes import CFUNCTYPE, c_char_p, c_int, c_void_p
from typing import Optional

__all__ = ["logger", "install", "sync_level"]

logger = logging.getLogger("starling")

# starling_log_level -> logging level
_TO_PY = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
_ENV_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
               "warn": logging.WARNING, "error": logging.ERROR}

_HANDLER_T = CFUNCTYPE(None, c_void_p, c_int, c_char_p)

_lib: Optional[ctypes.CDLL] = None
_installed = False


def _on_log(user: Optional[int], level: int, msg: Optional[bytes]) -> None:
    try:
        py_level = _TO_PY.get(level, logging.DEBUG)
        if logger.isEnabledFor(py_level):
            logger.log(py_level, "%s", (msg or b"").decode(errors="replace"))
    except Exception:  # noqa: BLE001 - never raise into a C thread
        pass


_callback = _HANDLER_T(_on_log)  # module-level: alive as long as the interpreter


def _c_level(py_level: int) -> int:
    """The library level that formats every line the logger would keep."""
    if py_level <= logging.DEBUG:
        return 3
    if py_level <= logging.INFO:
        return 2
    if py_level <= logging.WARNING:
        return 1
    return 0


def sync_level() -> None:
    """Sets the library's level from the "starling" logger's effective level."""
    if _installed and _lib is not None:
        _lib.starling_log_set_level(_c_level(logger.getEffectiveLevel()))


def _uninstall() -> None:
    global _installed
    if _installed and _lib is not None:
        _lib.starling_log_set_handler(_HANDLER_T(), None)  # a NULL handler
        _installed = False


def install(lib: ctypes.CDLL) -> None:
    """Routes the library's log lines to the "starling" logger (once per process)."""
    global _lib, _installed
    lib.starling_log_set_handler.restype = None
    lib.starling_log_set_handler.argtypes = [_HANDLER_T, c_void_p]
    lib.starling_log_set_level.restype = None
    lib.starling_log_set_level.argtypes = [c_int]
    _lib = lib
    env = os.environ.get("STARLING_LOG_LEVEL", "").strip().lower()
    if env == "off":
        return
    if env:
        if env in _ENV_LEVELS:
            logger.setLevel(_ENV_LEVELS[env])
            if not logger.hasHandlers():
                h = logging.StreamHandler(sys.stderr)
                h.setFormatter(logging.Formatter("starling[%(levelname)s] %(message)s"))
                logger.addHandler(h)
        else:
            logger.warning("STARLING_LOG_LEVEL=%r is not one of debug, info, warning, "
                           "error, off: ignored", env)
    lib.starling_log_set_handler(_callback, None)
    _installed = True
    atexit.register(_uninstall)
    sync_level()
