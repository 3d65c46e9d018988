"""starling: fault-tolerant collectives for training one model on many machines.

A pure-Python package over libstarling.so (ctypes, no compiled extension). Buffers are
NumPy arrays or PyTorch CPU tensors, passed without copies. See docs/python.md.

    import starling
    comm = starling.Communicator("127.0.0.1:7000", run="demo", secret="change-me")
    comm.update_topology()
    while True:
        try:
            comm.allreduce(grad, "avg")
        except starling.PeerLost:
            comm.update_topology()
            continue
"""
from ._lib import find_library
from .comm import (DTYPES, OPS, Aggregator, Codec, Communicator, Config, Coordinator,
                   Request)
from .env import Env
from .errors import (ERRORS, Auth, Busy, Closed, Corrupt, Invalid, Limit, Mismatch,
                     NoMemory, NotFound, OSFailure, PeerLost, Protocol, StarlingError,
                     State, Timeout, Unsupported, Version)

__all__ = [
    "Aggregator", "Codec", "Communicator", "Config", "Coordinator", "Request", "DTYPES", "OPS",
    "Env", "StarlingError", "Invalid", "NoMemory", "OSFailure", "Timeout", "PeerLost", "Mismatch",
    "Protocol", "Auth", "Version", "State", "Closed", "Unsupported", "Corrupt", "Limit",
    "NotFound", "Busy", "ERRORS", "find_library", "version", "__version__",
]

__version__ = "0.1.0"


def version() -> str:
    """Version string of the loaded libstarling."""
    from ._lib import lib
    return lib().starling_version_string().decode()
