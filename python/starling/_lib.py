"""Locate and load libstarling.so, and declare the C signatures the package uses.

Search order (find_library): the ``STARLING_LIB`` environment variable (a path to the
shared library), then the build tree relative to this package
(``../../build/src/libstarling.so``), then ``libstarling.so.0`` through the dynamic loader,
then the lib directories of /usr/local, /usr and sys.prefix. The library is loaded once
per process.

ctypes releases the GIL around every foreign call, so a blocking collective in one
thread does not stop other Python threads. The library calls back into Python only
to log (starling._log, installed here once the library is loaded).
"""
from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from ctypes import (POINTER, c_char, c_char_p, c_double, c_int, c_size_t, c_uint, c_uint64,
                    c_void_p)
from typing import List, Optional

__all__ = ["lib", "find_library"]


# The SONAME of the installed library (CMakeLists.txt STARLING_SOVERSION): a library of
# another ABI version is never picked up by accident.
SONAME = "libstarling.so.0"


def _tree_library() -> str:
    """libstarling.so of the source checkout this package sits in (build/ from make)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "build", "src", "libstarling.so"))


def _prefix_dirs() -> List[str]:
    """Library directories of the usual install prefixes, for a library installed where
    the loader does not look (no ldconfig after `make install`, or PREFIX=sys.prefix)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = []
    for prefix in ("/usr/local", "/usr", sys.prefix):
        for sub in (os.path.join("lib", multiarch) if multiarch else "", "lib64", "lib"):
            if sub:
                d = os.path.join(prefix, sub)
                if d not in dirs:
                    dirs.append(d)
    return dirs


def _loaded_path(handle: ctypes.CDLL) -> Optional[str]:
    """The file the dynamic loader chose for `handle` (dladdr on one of its functions)."""

    class _DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", c_char_p), ("dli_fbase", c_void_p),
                    ("dli_sname", c_char_p), ("dli_saddr", c_void_p)]

    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None
    dladdr.argtypes = [c_void_p, POINTER(_DlInfo)]
    dladdr.restype = c_int
    info = _DlInfo()
    addr = ctypes.cast(handle.starling_version, c_void_p)
    if dladdr(addr, ctypes.byref(info)) == 0 or not info.dli_fname:
        return None
    return os.path.abspath(os.fsdecode(info.dli_fname))


def find_library() -> str:
    """Returns the path of the libstarling.so this package will load.

    Tried in order: $STARLING_LIB; the build tree of the checkout this package is in;
    the dynamic loader (``libstarling.so.0`` through ld.so.cache, LD_LIBRARY_PATH and
    the default directories); the lib directories of /usr/local, /usr and sys.prefix.
    Raises OSError naming everything tried when none is found."""
    env = os.environ.get("STARLING_LIB")
    if env:
        if not os.path.exists(env):
            raise OSError(f"STARLING_LIB={env!r} does not exist (unset it to search the "
                          f"build tree and the system)")
        return env
    tried = ["$STARLING_LIB (unset)"]
    tree = _tree_library()
    if os.path.exists(tree):
        return tree
    tried.append(tree)
    try:
        handle = ctypes.CDLL(SONAME)
    except OSError:
        tried.append(f"{SONAME} through the dynamic loader (ld.so.cache, LD_LIBRARY_PATH)")
    else:
        return _loaded_path(handle) or SONAME
    for d in _prefix_dirs():
        path = os.path.join(d, SONAME)
        if os.path.exists(path):
            return path
        tried.append(path)
    raise OSError("libstarling not found; tried:\n  " + "\n  ".join(tried) +
                  "\nInstall it (from the source tree: `make install` as root, which also "
                  "runs ldconfig), add its directory to LD_LIBRARY_PATH, or set STARLING_LIB "
                  "to the path of libstarling.so.")


# Opaque handles are plain void pointers on the Python side.
_P = c_void_p
_PP = POINTER(c_void_p)

# name: (restype, argtypes)
_SIGNATURES = {
    "starling_version": (c_uint, []),
    "starling_version_string": (c_char_p, []),
    "starling_strerror": (c_char_p, [c_int]),
    "starling_dtype_size": (c_size_t, [c_int]),
    # config
    "starling_config_create": (c_int, [_PP]),
    "starling_config_destroy": (None, [_P]),
    "starling_config_set_timeout_ms": (c_int, [_P, c_int]),
    "starling_config_set_op_timeout_ms": (c_int, [_P, c_int]),
    "starling_config_set_streams": (c_int, [_P, c_int]),
    "starling_config_set_listen": (c_int, [_P, c_char_p]),
    "starling_config_set_advertise": (c_int, [_P, c_char_p]),
    "starling_last_error": (c_char_p, []),
    "starling_config_set_min_peers": (c_int, [_P, c_int]),
    "starling_config_set_chunk_bytes": (c_int, [_P, c_size_t]),
    "starling_config_set_name": (c_int, [_P, c_char_p]),
    "starling_config_set_socket_buffer": (c_int, [_P, c_size_t]),
    "starling_config_set_ring_order": (c_int, [_P, c_char_p]),
    "starling_config_set_probe_bytes": (c_int, [_P, c_size_t]),
    "starling_config_set_security": (c_int, [_P, c_char_p]),
    "starling_config_set_standby_of": (c_int, [_P, c_char_p]),
    "starling_config_set_inbound": (c_int, [_P, c_int]),
    "starling_config_set_shm": (c_int, [_P, c_int]),
    # coordinator
    "starling_coord_create": (c_int, [_PP, c_char_p, c_char_p, c_void_p, c_size_t, _P]),
    "starling_coord_run": (c_int, [_P]),
    "starling_coord_stop": (None, [_P]),
    "starling_coord_port": (c_int, [_P]),
    "starling_coord_peers": (c_int, [_P]),
    "starling_coord_destroy": (None, [_P]),
    # communicator
    "starling_comm_create": (c_int, [_PP, c_char_p, c_char_p, c_void_p, c_size_t, _P]),
    "starling_comm_destroy": (None, [_P]),
    "starling_update_topology": (c_int, [_P]),
    "starling_measure_links": (c_int, [_P]),
    "starling_comm_link": (c_int, [_P, c_int, POINTER(c_double), POINTER(c_double)]),
    "starling_comm_epoch": (c_uint64, [_P]),
    "starling_comm_rank": (c_int, [_P]),
    "starling_comm_size": (c_int, [_P]),
    "starling_comm_bytes_sent": (c_uint64, [_P]),
    "starling_comm_errmsg": (c_char_p, [_P]),
    # call options, codecs
    "starling_callopts_create": (c_int, [_PP]),
    "starling_callopts_destroy": (None, [_P]),
    "starling_callopts_set_tag": (c_int, [_P, c_uint64]),
    "starling_callopts_set_codec": (c_int, [_P, _P]),
    "starling_codec_create": (c_int, [_PP, c_char_p, POINTER(c_char), c_size_t]),
    "starling_codec_destroy": (None, [_P]),
    "starling_codec_spec": (c_char_p, [_P]),
    "starling_codec_max_encoded": (c_size_t, [_P, c_size_t]),
    "starling_codec_encode": (c_int, [_P, c_void_p, c_size_t, c_uint64, c_void_p, c_size_t,
                                      POINTER(c_size_t)]),
    "starling_codec_decode": (c_int, [_P, c_void_p, c_size_t, c_size_t, c_uint64, c_void_p]),
    # robust aggregation
    "starling_aggregator_create": (c_int, [_PP, c_char_p, POINTER(c_char), c_size_t]),
    "starling_aggregator_destroy": (None, [_P]),
    "starling_aggregator_spec": (c_char_p, [_P]),
    "starling_aggregate": (c_int, [_P, c_void_p, c_size_t, c_size_t, c_int, c_void_p,
                                   POINTER(c_char), c_size_t]),
    "starling_robust_allreduce": (c_int, [_P, c_void_p, c_void_p, c_size_t, _P, c_int, _P]),
    "starling_residual_get": (c_int, [_P, c_uint64, c_void_p, c_size_t]),
    "starling_residual_set": (c_int, [_P, c_uint64, c_void_p, c_size_t]),
    # collectives
    "starling_allreduce": (c_int, [_P, c_void_p, c_void_p, c_size_t, c_int, c_int, _P]),
    "starling_allreduce_async": (c_int, [_P, c_void_p, c_void_p, c_size_t, c_int, c_int, _P,
                                         _PP]),
    "starling_reduce_scatter": (c_int, [_P, c_void_p, c_void_p, c_size_t, c_int, c_int, _P]),
    "starling_reduce_scatter_async": (c_int, [_P, c_void_p, c_void_p, c_size_t, c_int, c_int,
                                              _P, _PP]),
    "starling_allgather": (c_int, [_P, c_void_p, c_void_p, c_size_t, c_int, _P]),
    "starling_allgather_async": (c_int, [_P, c_void_p, c_void_p, c_size_t, c_int, _P, _PP]),
    "starling_broadcast": (c_int, [_P, c_void_p, c_size_t, c_int, c_int, _P]),
    "starling_broadcast_async": (c_int, [_P, c_void_p, c_size_t, c_int, c_int, _P, _PP]),
    "starling_request_wait": (c_int, [_P]),
    "starling_request_test": (c_int, [_P, POINTER(c_int)]),
    "starling_request_free": (None, [_P]),
    # shared state
    "starling_state_register": (c_int, [_P, c_char_p, c_void_p, c_size_t, c_int]),
    "starling_state_unregister": (c_int, [_P, c_char_p]),
    "starling_state_set_step": (c_int, [_P, c_uint64]),
    "starling_state_step": (c_uint64, [_P]),
    "starling_sync_state": (c_int, [_P, POINTER(c_int)]),
    "starling_state_hash_hex": (c_int, [_P, POINTER(c_char)]),
}

_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    """The loaded library with every used function's argtypes/restype declared."""
    global _lib
    if _lib is None:
        handle = ctypes.CDLL(find_library())
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(handle, name)
            fn.restype = restype
            fn.argtypes = argtypes
        from . import _log
        _log.install(handle)
        _lib = handle
    return _lib
