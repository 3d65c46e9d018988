"""Run by tests/install (install.python) with the venv's python, outside the source tree,
STARLING_LIB unset and LD_LIBRARY_PATH at the staged lib directory: the pip-installed
package must find the installed library by itself and all-reduce between two
Communicators (one thread each) of an in-process Coordinator.

usage: outside_allreduce.py EXPECTED_LIB_DIR EXPECTED_VERSION
       outside_allreduce.py --missing    (no LD_LIBRARY_PATH: the error names what it tried)
"""
import os
import sys
import threading
from importlib import metadata

JOIN_S = 40.0  # every wait is bounded


def fail(msg):
    print("install.python: " + msg, file=sys.stderr)
    sys.exit(1)


def missing():
    """Without the staged directory the library is not found (unless one is installed on
    this machine), and the error says where it looked and what to do."""
    import starling
    try:
        path = starling.find_library()
    except OSError as e:
        msg = str(e)
        for part in ("$STARLING_LIB", "libstarling.so.0 through the dynamic loader",
                     "/usr/local/lib/libstarling.so.0", "make install", "LD_LIBRARY_PATH"):
            if part not in msg:
                fail(f"the not-found error does not mention {part!r}: {msg}")
        print("install.python: not-found error ok")
        return
    print(f"install.python: a libstarling is installed on this machine ({path}): "
          f"not-found error not checked")


def main():
    if sys.argv[1:] == ["--missing"]:
        missing()
        return
    lib_dir, version = os.path.realpath(sys.argv[1]), sys.argv[2]
    try:
        import numpy as np
    except ImportError:
        print("install.python: numpy missing, skipped")
        sys.exit(77)
    import starling

    where = os.path.realpath(starling.__file__)
    if not where.startswith(os.path.realpath(sys.prefix) + os.sep):
        fail(f"imported {where}, not the copy installed in {sys.prefix}")
    found = os.path.realpath(starling.find_library())
    if os.path.dirname(found) != lib_dir:
        fail(f"find_library() gave {found}, expected a file in {lib_dir}")
    versions = {"package metadata": metadata.version("starling"),
                "starling.__version__": starling.__version__,
                "starling.version() (the library)": starling.version(),
                "CMake project": version}
    if len(set(versions.values())) != 1:
        fail(f"versions disagree: {versions}")

    n, count = 2, 1000
    coord = starling.Coordinator(run="outside", secret="s",
                                 config=starling.Config(timeout_ms=2000))
    config = starling.Config(min_peers=n, timeout_ms=2000, op_timeout_ms=20000)
    results, errors = [None] * n, [None] * n

    def peer(i):
        try:
            with starling.Communicator(coord, "outside", "s", config) as comm:
                comm.update_topology()
                x = np.arange(count, dtype=np.float32) + (i + 1)
                results[i] = comm.allreduce(x, "sum")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors[i] = e

    threads = [threading.Thread(target=peer, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
        if t.is_alive():
            fail("a peer did not finish in time")
    coord.close()
    for i, e in enumerate(errors):
        if e is not None:
            fail(f"peer {i}: {type(e).__name__}: {e}")
    expected = 2 * np.arange(count, dtype=np.float32) + 3
    for i, r in enumerate(results):
        if not np.array_equal(r, expected):
            fail(f"peer {i}: wrong all-reduce result {r[:5]}...")
    print(f"install.python: all-reduce ok with {found} (starling {starling.__version__})")
    torch_backend(lib_dir)


def torch_backend(lib_dir):
    """With the torch.distributed backend installed (lib/starling/_starling_c10d.so), the
    installed package finds it and a one-process group all-reduces over it."""
    ext = os.path.join(lib_dir, "starling", "_starling_c10d.so")
    if not os.path.exists(ext):
        print("install.python: torch backend not installed (no libtorch-dev): not checked")
        return
    import socket
    import torch
    import torch.distributed as dist
    import starling.distributed as sd

    if os.path.realpath(sd.extension_path()) != os.path.realpath(ext):
        fail(f"extension_path() gave {sd.extension_path()}, expected {ext}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("starling", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    t = torch.arange(4, dtype=torch.float32)
    dist.all_reduce(t)
    dist.destroy_process_group()
    if t.tolist() != [0.0, 1.0, 2.0, 3.0]:
        fail(f"torch backend all_reduce gave {t.tolist()}")
    print(f"install.python: torch backend ok with {ext}")


if __name__ == "__main__":
    main()
