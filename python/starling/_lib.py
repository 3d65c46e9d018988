"""Locate and load libstarling.so, and declare the C signatures the package uses.

Search order: the ``STARLING_LIB`` environment variable (a path to the shared library),
then the build tree relative to this package (``../../build/src/libstarling.so``), then
``ctypes.util.find_library("starling")``. The library is loaded once per process.

ctypes releases the GIL around every foreign call, so a blocking collective in one
thread does not stop other Python threads. The library calls back into Python only
to log (starling._log, installed here once the library is loaded).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (POINTER, c_char, c_char_p, c_double, c_int, c_size_t, c_uint, c_uint64,
                    c_void_p)
from typing import Optional

__all__ = ["lib", "find_library"]


def find_library() -> str:
    """Returns the path of the libstarling.so this package will load."""
    env = os.environ.get("STARLING_LIB")
    if env:
        if not os.path.exists(env):
            raise OSError(f"STARLING_LIB={env!r} does not exist")
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.normpath(os.path.join(here, "..", "..", "build", "src", "libstarling.so"))
    if os.path.exists(tree):
        return tree
    found = ctypes.util.find_library("starling")
    if found:
        return found
    raise OSError("libstarling.so not found: set STARLING_LIB to its path, or build the "
                  "tree (cmake -S . -B build && cmake --build build)")


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
    "starling_config_set_min_peers": (c_int, [_P, c_int]),
    "starling_config_set_chunk_bytes": (c_int, [_P, c_size_t]),
    "starling_config_set_name": (c_int, [_P, c_char_p]),
    "starling_config_set_socket_buffer": (c_int, [_P, c_size_t]),
    "starling_config_set_ring_order": (c_int, [_P, c_char_p]),
    "starling_config_set_probe_bytes": (c_int, [_P, c_size_t]),
    # coordinator
    "starling_coord_create": (c_int, [_PP, c_char_p, c_char_p, c_void_p, c_size_t, _P]),
    "starling_coord_run": (c_int, [_P]),
    "starling_coord_stop": (None, [_P]),
    "starling_coord_port": (c_int, [_P]),
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
