"""Communicator.from_env and starling.Env: starling's, torchrun's and SLURM's variables;
processes started with only torchrun's or SLURM's variables join and all-reduce."""
import json
import os
import socket
import subprocess
import sys

import pytest

import starling
from starling import Env

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29511", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "3"}
SLURM = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
         "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_NODEID": "1", "SLURM_JOB_ID": "123456",
         "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1"}


# ---------------------------------------------------------------- parsing
def test_starling_variables_come_first():
    e = Env.read(dict(TORCHRUN, STARLING_COORD="127.0.0.1:7000", STARLING_RUN="r",
                      STARLING_SECRET="k", STARLING_RANK_HINT="2", STARLING_PEERS="4"))
    assert (e.source, e.coordinator, e.run, e.secret, e.rank, e.world_size) == \
        ("starling", "127.0.0.1:7000", "r", "k", 2, 4)
    assert not e.host_coordinator and not e.default_secret
    assert (e.local_rank, e.local_world_size) == (1, 3)


def test_starling_coord_may_list_standbys():
    e = Env.read({"STARLING_COORD": "127.0.0.1:7000,127.0.0.1:7001"})
    assert e.coordinator == "127.0.0.1:7000,127.0.0.1:7001"  # passed to the library as is


def test_torchrun_variables():
    e = Env.read(TORCHRUN)
    assert e.source == "torchrun" and e.coordinator == "127.0.0.1:29511"
    assert (e.rank, e.world_size, e.local_rank, e.local_world_size) == (1, 3, 1, 3)
    assert not e.host_coordinator and e.default_secret and e.secret == "starling"
    e0 = Env.read(dict(TORCHRUN, RANK="0", STARLING_SECRET="k", MASTER_ADDR="localhost"))
    assert e0.host_coordinator and not e0.default_secret  # a name is kept, not resolved
    assert e0.coordinator == e0.listen == "localhost:29511"
    # IPv6 literals, bare or bracketed; a loopback master listens there, any other on
    # every interface of its family
    for addr, coord, listen in (("::1", "[::1]:29511", "[::1]:29511"),
                                ("[::1]", "[::1]:29511", "[::1]:29511"),
                                ("fd00::7", "[fd00::7]:29511", "[::]:29511"),
                                ("10.1.2.3", "10.1.2.3:29511", "0.0.0.0:29511"),
                                ("127.0.0.1", "127.0.0.1:29511", "127.0.0.1:29511")):
        e0 = Env.read(dict(TORCHRUN, RANK="0", MASTER_ADDR=addr))
        assert (e0.coordinator, e0.listen) == (coord, listen), addr
    # torchrun's agent holds MASTER_PORT for its own store: the next port
    assert Env.read(dict(TORCHRUN, TORCHELASTIC_USE_AGENT_STORE="True")).coordinator == \
        "127.0.0.1:29512"
    assert Env.read(dict(TORCHRUN, STARLING_COORD_PORT="4000")).coordinator == \
        "127.0.0.1:4000"


def test_slurm_variables():
    e = Env.read(SLURM)
    assert e.source == "slurm" and e.coordinator == "127.0.0.1:23456"  # 20000 + job % 10^4
    assert (e.rank, e.world_size, e.local_rank, e.local_world_size) == (3, 4, 1, 2)
    e = Env.read(dict(SLURM, SLURM_PROCID="0", SLURM_TASKS_PER_NODE="3,1",
                      SLURM_NODEID="0", MASTER_ADDR="127.0.0.2", MASTER_PORT="5555"))
    assert e.host_coordinator and e.coordinator == "127.0.0.2:5555"
    assert e.local_world_size == 3
    assert Env.read(dict(SLURM, SLURM_NTASKS_PER_NODE="2")).local_world_size == 2


@pytest.mark.parametrize("env,msg", [
    ({}, "no launch environment"),
    (dict(TORCHRUN, RANK="abc"), r"RANK='abc': expected an integer"),
    (dict(TORCHRUN, WORLD_SIZE="0"), r"WORLD_SIZE='0': expected an integer >= 1"),
    (dict(TORCHRUN, RANK="3"), r"RANK='3': must be below WORLD_SIZE=3"),
    (dict(TORCHRUN, RANK="-1"), r"RANK='-1'"),
    (dict(TORCHRUN, MASTER_PORT="99999"), r"MASTER_PORT='99999': expected an integer in "
                                          r"1\.\.65535"),
    ({k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"}, "MASTER_PORT is not set"),
    ({k: v for k, v in TORCHRUN.items() if k != "MASTER_ADDR"}, "MASTER_ADDR is not set"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    (dict(TORCHRUN, MASTER_ADDR="no-such-host.invalid"),
     "MASTER_ADDR='no-such-host.invalid': cannot resolve"),
    (dict(TORCHRUN, LOCAL_RANK="x"), "LOCAL_RANK='x'"),
    (dict(TORCHRUN, STARLING_COORD_PORT="0"), "STARLING_COORD_PORT='0'"),
    (dict(SLURM, SLURM_NTASKS="four"), "SLURM_NTASKS='four'"),
    (dict(SLURM, SLURM_TASKS_PER_NODE="2(x1)"), r"SLURM_TASKS_PER_NODE='2\(x1\)'"),
    ({k: v for k, v in SLURM.items() if k != "SLURM_LAUNCH_NODE_IPADDR"},
     "neither MASTER_ADDR nor SLURM_LAUNCH_NODE_IPADDR"),
    ({"STARLING_COORD": "127.0.0.1"}, "STARLING_COORD='127.0.0.1': expected HOST:PORT"),
    ({"STARLING_COORD": "h:1", "STARLING_PEERS": "0"}, "STARLING_PEERS='0'"),
    ({"STARLING_COORD": "h:1,"}, r"STARLING_COORD='h:1,': expected HOST:PORT\[,HOST:PORT"),
    ({"STARLING_COORD": "h:1,g:0"}, "STARLING_COORD='h:1,g:0': expected .* ports in 1..65535"),
])
def test_malformed_values_name_the_variable(env, msg):
    with pytest.raises(starling.Invalid, match=msg):
        Env.read(env)
    with pytest.raises(starling.Invalid, match=msg):  # the same through from_env
        starling.Communicator.from_env(environ=env)


@pytest.mark.parametrize("coord,environ,want", [
    ("127.0.0.1:7000", {}, "127.0.0.1:0"),
    ("localhost:7000", {}, None),  # loopback either way: 127.0.0.1:0 or [::1]:0
    ("[::1]:7000", {}, "[::1]:0"),
    ("10.20.30.40:7000", {}, "0.0.0.0:0"),
    ("[fd00::7]:7000", {}, "[::]:0"),
    ("10.20.30.40:7000", {"STARLING_LISTEN": "10.9.9.9:7100"}, "10.9.9.9:7100"),
])
def test_data_listen(coord, environ, want):
    got = starling.env.data_listen(coord, environ)
    if want is None:
        assert got in ("127.0.0.1:0", "[::1]:0")
    else:
        assert got == want


def test_from_env_in_process_keeps_the_config_and_closes_its_coordinator():
    port = free_port()
    cfg = starling.Config(timeout_ms=1000)
    c = starling.Communicator.from_env(cfg, environ={
        "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port), "STARLING_SECRET": "k"})
    assert cfg.min_peers is None and cfg.name is None  # copied, not modified
    assert c.env.source == "torchrun" and c.env.rank == 0 and c.env.world_size == 1
    c.update_topology()
    assert c.size == 1 and c.barrier() is None
    c.close()
    # the coordinator went with it: nothing listens on its port (SO_REUSEADDR: a closed
    # connection of the coordinator's may be in TIME_WAIT there; Linux still refuses the
    # bind while a socket listens on the port)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_hosting_rank_keeps_its_coordinator_until_the_others_have_left():
    """Rank 0's close() stops the coordinator it hosts only once the other members have
    left (or after coordinator_wait): rank 1, still registered, forms a new epoch alone
    after rank 0 has left, then closes, and only then does rank 0's close() return."""
    import threading
    port = free_port()
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "STARLING_SECRET": "k"}
    cfg = starling.Config(timeout_ms=1000)
    c0 = starling.Communicator.from_env(cfg, environ=dict(env, RANK="0"))
    c1 = starling.Communicator.from_env(cfg, environ=dict(env, RANK="1"))
    ups = [threading.Thread(target=c.update_topology) for c in (c0, c1)]
    for t in ups:
        t.start()
    for t in ups:
        t.join(30)
    assert c0.size == 2 and c1.size == 2
    coord = c0._coordinator
    closer = threading.Thread(target=c0.close, kwargs={"coordinator_wait": 30.0})
    closer.start()
    try:
        c1.update_topology()  # rank 0 left: the coordinator still serves rank 1
        assert c1.size == 1 and c1.rank == 0
        assert closer.is_alive() and coord.peers == 1
    finally:
        c1.close()
        closer.join(30)
    assert not closer.is_alive() and coord.peers == 0 and c0._coordinator is None
    # a member that never leaves is waited for coordinator_wait seconds only
    c0 = starling.Communicator.from_env(cfg, environ=dict(env, RANK="0", WORLD_SIZE="1",
                                                          MASTER_PORT=str(free_port())))
    c1 = starling.Communicator(c0._coordinator.address, c0.env.run, "k", cfg)
    try:
        c0.close(coordinator_wait=0.3)  # returns; rank 1 loses its coordinator
        assert c0._coordinator is None
    finally:
        c1.close()


def test_from_env_takes_the_security_mode_for_itself_and_its_coordinator():
    """STARLING_SECURITY=none: rank 0's hosted coordinator and the communicator both send
    clear frames (an encrypting peer is refused by the coordinator); config.security wins
    over the variable; another value is Invalid naming it, before any connection."""
    port = free_port()
    c = starling.Communicator.from_env(starling.Config(timeout_ms=1000), environ={
        "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port), "STARLING_SECRET": "k", "STARLING_SECURITY": "none"})
    try:
        c.update_topology()
        assert c.size == 1 and c.barrier() is None
        with pytest.raises(starling.errors.Auth, match="security mismatch"):
            starling.Communicator(c.env.coordinator, c.env.run, "k")  # aead: refused
    finally:
        c.close()
    # a coordinator of the launcher's (STARLING_COORD) in chacha20: the variable reaches
    # the communicator, and an explicit config.security is kept over it
    coord = starling.Coordinator("127.0.0.1:0", "sec", "k",
                                 starling.Config(security="chacha20"))
    try:
        env = {"STARLING_COORD": coord.address, "STARLING_RUN": "sec",
               "STARLING_SECRET": "k"}
        c = starling.Communicator.from_env(environ=dict(env, STARLING_SECURITY="chacha20"))
        c.close()
        c = starling.Communicator.from_env(starling.Config(security="aead"),
                                           environ=dict(env, STARLING_SECURITY="none"))
        c.close()  # aead and chacha20 agree
        with pytest.raises(starling.errors.Auth, match="security mismatch"):
            starling.Communicator.from_env(environ=dict(env, STARLING_SECURITY="none"))
    finally:
        coord.close()
    for bad in ("rot13", "AEAD"):
        with pytest.raises(starling.Invalid, match=f"STARLING_SECURITY='{bad}'"):
            starling.Communicator.from_env(environ=dict(TORCHRUN, STARLING_SECURITY=bad))
    assert starling.env.security({"STARLING_SECURITY": ""}) is None  # empty: the default


# ---------------------------------------------------------------- processes
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHILD = r"""
import json, os, sys
import numpy as np
import starling
c = starling.Communicator.from_env(starling.Config(timeout_ms=1000, op_timeout_ms=30000))
c.update_topology()
e = c.env
x = np.full(8, e.rank + 1, np.float32)
c.allreduce(x)
c.barrier()
os.write(1, (json.dumps({"rank": e.rank, "world": e.world_size, "local": e.local_rank,
                         "local_world": e.local_world_size, "source": e.source,
                         "size": c.size, "sum": float(x[0]),
                         "hosts": c._coordinator is not None}) + "\n").encode())
c.close()
"""


def run_ranks(envs):
    """One process per environment, each with only that launch environment (starling's
    variables removed, except STARLING_LIB which says where the library is)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("STARLING_", "SLURM_")) or k == "STARLING_LIB"}
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK",
              "LOCAL_WORLD_SIZE"):
        base.pop(k, None)
    base["PYTHONPATH"] = os.pathsep.join([PKG, os.environ.get("PYTHONPATH", "")])
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], env=dict(base, **e),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for e in envs]
    outs = []
    for p in procs:
        try:
            o, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, o, err))
    for rc, o, err in outs:
        assert rc == 0, err
    return [json.loads(o) for _, o, _ in outs], [err for _, _, err in outs]


def test_torchrun_environment_alone_joins_and_allreduces():
    port = str(free_port())
    envs = [{"RANK": str(r), "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": port} for r in range(3)]
    out, errs = run_ranks(envs)
    assert [o["rank"] for o in out] == [0, 1, 2]
    for o in out:
        assert o["source"] == "torchrun" and o["world"] == 3 and o["size"] == 3
        assert o["sum"] == 6.0  # 1 + 2 + 3
        assert o["hosts"] == (o["rank"] == 0)
        assert o["local"] is None  # not given
    for err in errs:  # the documented default secret is announced
        assert "STARLING_SECRET is not set" in err


def test_slurm_environment_alone_joins_and_allreduces():
    port = str(free_port())
    envs = [{"SLURM_PROCID": str(r), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(r),
             "SLURM_TASKS_PER_NODE": "2", "SLURM_NODEID": "0",
             "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1", "MASTER_PORT": port,
             "STARLING_SECRET": "slurm-k"} for r in range(2)]
    out, errs = run_ranks(envs)
    for r, o in enumerate(out):
        assert (o["source"], o["rank"], o["world"], o["local"], o["local_world"]) == \
            ("slurm", r, 2, r, 2)
        assert o["size"] == 2 and o["sum"] == 3.0
    assert not [e for e in errs if "STARLING_SECRET is not set" in e]


LAUNCHED = r"""
import json, os, sys
import numpy
import starling
c = starling.Communicator.from_env(starling.Config(op_timeout_ms=30000))
c.update_topology()
x = numpy.ones(4, dtype=numpy.float32)
c.allreduce(x)  # both members linked before either leaves (a leave races a join)
out = {"security": os.environ.get("STARLING_SECURITY"), "size": c.size, "sum": float(x[0])}
c.close()
with open(os.path.join(sys.argv[1], "out%s" % os.environ["STARLING_RANK_HINT"]), "w") as f:
    json.dump(out, f)  # a file each: two children's lines on one stdout may interleave
"""


def test_launch_security_reaches_its_coordinator_and_the_children(tmp_path):
    """--security none: the launcher's coordinator and both children send clear frames (a
    mismatch on either side would refuse the children); an inherited STARLING_SECURITY
    that is no mode is refused by the launcher, naming the variable."""
    script = tmp_path / "child.py"
    script.write_text(LAUNCHED)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STARLING_") or k == "STARLING_LIB"}
    env["PYTHONPATH"] = os.pathsep.join([PKG, os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "starling.launch", "--peers", "2", "--no-prefix"]
    p = subprocess.run(cmd + ["--security", "none", str(script), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr)
    outs = [json.loads((tmp_path / ("out%d" % r)).read_text()) for r in range(2)]
    assert outs == [{"security": "none", "size": 2, "sum": 2.0}] * 2
    assert "security none" in p.stderr
    p = subprocess.run(cmd + [str(script)], env=dict(env, STARLING_SECURITY="clear"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "STARLING_SECURITY='clear'" in p.stderr
