"""What the launcher told this process: starling's, torchrun's or SLURM's variables.

:meth:`Env.read` (and :meth:`starling.Communicator.from_env`, which uses it) looks, in
this order, for:

1. starling's (``python3 -m starling.launch``): ``STARLING_COORD`` (coordinator
   "HOST:PORT"), ``STARLING_RUN``, ``STARLING_SECRET``, ``STARLING_RANK_HINT``,
   ``STARLING_PEERS``, and ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE`` when set.
2. torchrun's (``RANK`` or ``WORLD_SIZE`` set): ``RANK``, ``WORLD_SIZE``,
   ``MASTER_ADDR``, ``MASTER_PORT`` (all four required), ``LOCAL_RANK``,
   ``LOCAL_WORLD_SIZE``.
3. SLURM's (``SLURM_PROCID`` set, as srun does): ``SLURM_PROCID`` (rank),
   ``SLURM_NTASKS`` (world size), ``SLURM_LOCALID`` (local rank),
   ``SLURM_NTASKS_PER_NODE`` or ``SLURM_TASKS_PER_NODE`` with ``SLURM_NODEID`` (local world
   size), ``MASTER_ADDR`` else ``SLURM_LAUNCH_NODE_IPADDR`` (the node srun ran on: rank 0
   must run there, as it does for srun inside sbatch), ``MASTER_PORT`` else
   ``20000 + SLURM_JOB_ID % 10000`` (29500 without a job id), so that two jobs sharing a
   node pick different ports.

Without starling's variables there is no coordinator yet: rank 0 starts one in its own
process (:attr:`Env.host_coordinator`), listening on the master port of the master
address (on 127.0.0.1 when that is a loopback address, else on every interface, as
torch's TCPStore does), and every rank connects to it. ``STARLING_COORD_PORT`` overrides
that port; by default it is ``MASTER_PORT``, except under torchrun's own store
(``TORCHELASTIC_USE_AGENT_STORE=True``: torchrun's agent already holds ``MASTER_PORT``)
where it is ``MASTER_PORT + 1``. A script that also calls
``torch.distributed.init_process_group("env://")`` must set ``STARLING_COORD_PORT``, since
rank 0's TCPStore binds ``MASTER_PORT`` too (``python3 -m starling.launch`` keeps the two
apart by itself).

The secret is ``STARLING_SECRET``; without it a fixed default is used and a warning
logged: anyone who can reach the port can then join, as with torchrun's store, which has
no authentication either. The run name is ``STARLING_RUN`` (default "default").

``STARLING_SECURITY`` (:func:`security`: "aead", "chacha20" or "none"; unset or empty: the
library's default, "aead") is what every connection carries, for the communicator and the
coordinator rank 0 hosts alike: every member and the coordinator must agree.

Malformed values raise :class:`starling.Invalid` naming the variable, e.g.
``RANK='abc': expected an integer``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping, Optional

from .errors import Invalid

__all__ = ["Env", "DEFAULT_SECRET", "SECURITY_MODES", "security"]

# The secret when none is given. Not a secret at all: documented, and warned about.
DEFAULT_SECRET = "starling"

# The names starling_config_set_security takes (include/starling.h).
SECURITY_MODES = ("aead", "chacha20", "none")


@dataclass(frozen=True)
class Env:
    """The launch environment, as read by :meth:`read`.

    ``rank``, ``world_size``, ``local_rank`` and ``local_world_size`` are what the
    launcher said (``None`` when it did not): use them to shard data. ``rank`` is a hint:
    the ring rank (:attr:`Communicator.rank`) is decided by the coordinator at each epoch
    and may differ, and it changes when members die or join."""

    source: str                 # "starling", "torchrun" or "slurm"
    coordinator: str            # "HOST:PORT" every rank connects to
    run: str
    secret: str
    default_secret: bool        # no STARLING_SECRET: the documented default is used
    rank: Optional[int] = None
    world_size: Optional[int] = None
    local_rank: Optional[int] = None
    local_world_size: Optional[int] = None
    host_coordinator: bool = False  # this process (rank 0) starts the coordinator
    listen: Optional[str] = None    # where that coordinator listens

    @classmethod
    def read(cls, environ: Optional[Mapping[str, str]] = None) -> "Env":
        """Reads ``environ`` (default ``os.environ``); raises :class:`starling.Invalid`
        when no launch environment is found or a value is malformed."""
        e = os.environ if environ is None else environ
        if e.get("STARLING_COORD"):
            return _starling(e)
        if "RANK" in e or "WORLD_SIZE" in e:
            return _torchrun(e)
        if "SLURM_PROCID" in e:
            return _slurm(e)
        raise Invalid("no launch environment: expected STARLING_COORD (python3 -m "
                      "starling.launch), torchrun's RANK, WORLD_SIZE, MASTER_ADDR and "
                      "MASTER_PORT, or SLURM's SLURM_PROCID and SLURM_NTASKS (srun)")


# ---------------------------------------------------------------- parsing

def _int(e: Mapping[str, str], name: str, lo: int, hi: Optional[int] = None,
         required: bool = True, what: str = "") -> Optional[int]:
    """The integer value of variable ``name`` within lo..hi, else Invalid naming it."""
    raw = e.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise Invalid(f"{name} is not set{what}")
        return None
    try:
        v = int(raw.strip(), 10)
    except ValueError:
        raise Invalid(f"{name}={raw!r}: expected an integer") from None
    if v < lo or (hi is not None and v > hi):
        bound = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise Invalid(f"{name}={raw!r}: expected an integer {bound}")
    return v


def _port(e: Mapping[str, str], name: str, required: bool = True,
          what: str = "") -> Optional[int]:
    return _int(e, name, 1, 65535, required, what)


def _master_addr(e: Mapping[str, str], name: str) -> str:
    """The address that variable ``name`` holds (a host name, a dotted quad or an IPv6
    literal, bracketed or not), as the host part of the library's "HOST:PORT" text
    ("[::1]" for IPv6). A name must resolve (the library resolves it again when it
    connects)."""
    raw = e.get(name, "").strip()
    if not raw:
        raise Invalid(f"{name} is not set")
    bare = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        ip = ipaddress.ip_address(bare.split("%")[0])
        return f"[{bare}]" if ip.version == 6 else bare
    except ValueError:
        pass
    try:
        socket.getaddrinfo(bare, None, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise Invalid(f"{name}={raw!r}: cannot resolve it ({err})") from None
    return bare


def _listen_host(addr: str) -> str:
    """Where rank 0's coordinator listens for address ``addr``: there when it is a loopback
    address (as torch's TCPStore does), else every interface of its family."""
    bare = addr[1:-1] if addr.startswith("[") else addr
    try:
        infos = socket.getaddrinfo(bare, None, 0, socket.SOCK_STREAM)
        ip = ipaddress.ip_address(infos[0][4][0].split("%")[0])
    except (socket.gaierror, UnicodeError, ValueError, IndexError):
        return "0.0.0.0"
    if ip.is_loopback:
        return addr
    return "[::]" if ip.version == 6 else "0.0.0.0"


def _secret(e: Mapping[str, str]) -> tuple:
    s = e.get("STARLING_SECRET")
    return (s, False) if s else (DEFAULT_SECRET, True)


def _master(e: Mapping[str, str], addr: str, master_port: int, rank: int, source: str,
            run: str, secret: tuple, **shard) -> Env:
    """Rank 0 hosts the coordinator on the master address; all connect to it."""
    port = _port(e, "STARLING_COORD_PORT", required=False)
    if port is None:
        port = master_port
        if e.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            port = master_port + 1  # torchrun's agent holds MASTER_PORT for its store
            if port > 65535:
                raise Invalid(f"MASTER_PORT={master_port}: torchrun holds it, and "
                              f"MASTER_PORT + 1 is no port: set STARLING_COORD_PORT")
    listen_host = _listen_host(addr)
    return Env(source=source, coordinator=f"{addr}:{port}", run=run, secret=secret[0],
               default_secret=secret[1], rank=rank, host_coordinator=rank == 0,
               listen=f"{listen_host}:{port}", **shard)


def _starling(e: Mapping[str, str]) -> Env:
    coord = e["STARLING_COORD"].strip()
    # One coordinator, or the active's address then its standbys', separated by commas.
    for one in coord.split(","):
        host, sep, port = one.rpartition(":")
        if not sep or not host:
            raise Invalid(f"STARLING_COORD={coord!r}: expected HOST:PORT[,HOST:PORT...]")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise Invalid(f"STARLING_COORD={coord!r}: expected HOST:PORT[,HOST:PORT...] with "
                          f"ports in 1..65535")
    sec = _secret(e)
    return Env(source="starling", coordinator=coord, run=e.get("STARLING_RUN") or "default",
               secret=sec[0], default_secret=sec[1],
               rank=_int(e, "STARLING_RANK_HINT", 0, required=False),
               world_size=_int(e, "STARLING_PEERS", 1, required=False),
               local_rank=_int(e, "LOCAL_RANK", 0, required=False),
               local_world_size=_int(e, "LOCAL_WORLD_SIZE", 1, required=False))


def _torchrun(e: Mapping[str, str]) -> Env:
    why = " (torchrun-style environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)"
    world = _int(e, "WORLD_SIZE", 1, what=why)
    rank = _int(e, "RANK", 0, what=why)
    if rank >= world:
        raise Invalid(f"RANK={e['RANK']!r}: must be below WORLD_SIZE={world}")
    addr = _master_addr(e, "MASTER_ADDR")
    port = _port(e, "MASTER_PORT", what=why)
    local_world = _int(e, "LOCAL_WORLD_SIZE", 1, required=False)
    local_rank = _int(e, "LOCAL_RANK", 0, required=False)
    if local_rank is not None and local_world is not None and local_rank >= local_world:
        raise Invalid(f"LOCAL_RANK={e['LOCAL_RANK']!r}: must be below "
                      f"LOCAL_WORLD_SIZE={local_world}")
    return _master(e, addr, port, rank, "torchrun", e.get("STARLING_RUN") or "default",
                   _secret(e), world_size=world, local_rank=local_rank,
                   local_world_size=local_world)


def _tasks_on_node(spec: str, node: int) -> Optional[int]:
    """SLURM_TASKS_PER_NODE ("2(x3),1": 2 tasks on each of 3 nodes, then 1) for node
    index ``node``; None if malformed or too short."""
    i = 0
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            return None
        reps = int(m.group(2) or 1)
        if node < i + reps:
            return int(m.group(1))
        i += reps
    return None


def _slurm(e: Mapping[str, str]) -> Env:
    why = " (SLURM environment: SLURM_PROCID, SLURM_NTASKS)"
    world = _int(e, "SLURM_NTASKS", 1, what=why)
    rank = _int(e, "SLURM_PROCID", 0, what=why)
    if rank >= world:
        raise Invalid(f"SLURM_PROCID={e['SLURM_PROCID']!r}: must be below "
                      f"SLURM_NTASKS={world}")
    local_rank = _int(e, "SLURM_LOCALID", 0, required=False)
    local_world = None
    if e.get("SLURM_NTASKS_PER_NODE", "").strip():
        local_world = _int(e, "SLURM_NTASKS_PER_NODE", 1)
    elif e.get("SLURM_TASKS_PER_NODE", "").strip():
        node = _int(e, "SLURM_NODEID", 0, required=False) or 0
        local_world = _tasks_on_node(e["SLURM_TASKS_PER_NODE"], node)
        if local_world is None:
            raise Invalid(f"SLURM_TASKS_PER_NODE={e['SLURM_TASKS_PER_NODE']!r}: expected "
                          f"a list like '2(x3),1' covering node {node}")
    if e.get("MASTER_ADDR", "").strip():
        addr = _master_addr(e, "MASTER_ADDR")
    elif e.get("SLURM_LAUNCH_NODE_IPADDR", "").strip():
        addr = _master_addr(e, "SLURM_LAUNCH_NODE_IPADDR")
    else:
        raise Invalid("neither MASTER_ADDR nor SLURM_LAUNCH_NODE_IPADDR is set: the "
                      "address of rank 0's node is unknown")
    port = _port(e, "MASTER_PORT", required=False)
    if port is None:
        job = _int(e, "SLURM_JOB_ID", 0, required=False)
        port = 29500 if job is None else 20000 + job % 10000
    return _master(e, addr, port, rank, "slurm", e.get("STARLING_RUN") or "default",
                   _secret(e), world_size=world, local_rank=local_rank,
                   local_world_size=local_world)


def security(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The security mode ``STARLING_SECURITY`` names (one of :data:`SECURITY_MODES`), or
    ``None`` when it is unset or empty (the library's default, "aead"); else Invalid
    naming the variable."""
    e = os.environ if environ is None else environ
    raw = e.get("STARLING_SECURITY")
    if raw is None or raw.strip() == "":
        return None
    if raw.strip() not in SECURITY_MODES:
        raise Invalid(f"STARLING_SECURITY={raw!r}: expected one of "
                      f"{', '.join(SECURITY_MODES)}")
    return raw.strip()


def _flag01(name: str, environ: Optional[Mapping[str, str]]) -> Optional[bool]:
    """A 0/1 variable: True for "1", False for "0", None when unset or empty; else
    Invalid naming the variable."""
    e = os.environ if environ is None else environ
    raw = (e.get(name) or "").strip()
    if raw == "":
        return None
    if raw not in ("0", "1"):
        raise Invalid(f"{name}={raw!r}: expected 0 or 1")
    return raw == "1"


def inbound(environ: Optional[Mapping[str, str]] = None) -> Optional[bool]:
    """``STARLING_INBOUND``: "0" for a rank that accepts no connections (behind a NAT; it
    opens its ring links itself), "1" for one that does, ``None`` when unset or empty (the
    library's default: it does); else Invalid naming the variable."""
    return _flag01("STARLING_INBOUND", environ)


def shm(environ: Optional[Mapping[str, str]] = None) -> Optional[bool]:
    """``STARLING_SHM``: "0" keeps ring links to ranks on this host on TCP, "1" lets them
    share memory, ``None`` when unset or empty (the library's default: they do); else
    Invalid naming the variable."""
    return _flag01("STARLING_SHM", environ)


def data_listen(coordinator: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """The data plane's listen address for a member of the run at ``coordinator``
    ("HOST:PORT"): ``STARLING_LISTEN`` if set; else loopback when the coordinator's
    address is a loopback one (one machine); else every interface (``0.0.0.0`` or
    ``[::]``), the others then being told this host's address on its link to the
    coordinator (or ``STARLING_ADVERTISE``)."""
    e = os.environ if environ is None else environ
    if e.get("STARLING_LISTEN"):
        return e["STARLING_LISTEN"]
    host = coordinator.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
                                  [0][4][0].split("%")[0])
    except (OSError, ValueError, IndexError, UnicodeError):
        return "0.0.0.0:0"
    if ip.is_loopback:
        return "[::1]:0" if ip.version == 6 else "127.0.0.1:0"
    return "[::]:0" if ip.version == 6 else "0.0.0.0:0"
