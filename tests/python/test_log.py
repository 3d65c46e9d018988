"""The library's log lines reach Python's logging (logger "starling", starling._log)."""
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import starling

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")


class Collect(logging.Handler):
    """Keeps (level, message, thread name) of every record."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self.mu = threading.Lock()

    def emit(self, record):
        with self.mu:
            self.records.append((record.levelno, record.getMessage(), record.threadName))


@pytest.fixture
def collect():
    log = logging.getLogger("starling")
    h = Collect()
    old = log.level
    log.addHandler(h)
    yield h
    log.removeHandler(h)
    log.setLevel(old)


def test_coordinator_info_lines_arrive_from_its_thread(collect):
    logging.getLogger("starling").setLevel(logging.INFO)  # read when handles are made
    with starling.Coordinator(run="logs", secret="k") as co:
        with starling.Communicator(co, "logs", "k", starling.Config(min_peers=1,
                                                                   name="peerL")) as c:
            c.update_topology()
            c.allreduce(np.ones(2, np.float32))
    infos = [(m, t) for lv, m, t in collect.records if lv == logging.INFO]
    # coord_members.c: "peer <name> registered (...)" and "epoch 1: 1 members: ..."
    assert any("peerL" in m and "registered" in m for m, _ in infos), collect.records
    assert any(m.startswith("epoch 1: 1 members") for m, _ in infos), collect.records
    assert any(t != threading.current_thread().name for _, t in infos)  # a library thread
    assert not [r for r in collect.records if r[0] < logging.INFO]  # level honoured


def test_debug_line_of_a_failed_call(collect):
    logging.getLogger("starling").setLevel(logging.DEBUG)
    with starling.Coordinator(run="logd", secret="k") as co:
        with starling.Communicator(co, "logd", "k", starling.Config(min_peers=2,
                                                                   name="peerD")) as c:
            with pytest.raises(starling.State):
                c.allreduce(np.ones(2, np.float32))
    assert any(lv == logging.DEBUG for lv, _, _ in collect.records), collect.records


def test_warning_default_level_keeps_info_out(collect):
    logging.getLogger("starling").setLevel(logging.WARNING)
    with starling.Coordinator(run="logw", secret="k") as co:
        with starling.Communicator(co, "logw", "k", starling.Config(min_peers=1)) as c:
            c.update_topology()
    assert not [r for r in collect.records if r[0] < logging.WARNING], collect.records


def run_child(code, **env):
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = os.pathsep.join([PKG, e.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True,
                          text=True, timeout=60)


CHILD = ("import starling\n"
         "co = starling.Coordinator(run='e', secret='k')\n"
         "c = starling.Communicator(co, 'e', 'k', starling.Config(min_peers=1))\n"
         "c.update_topology(); c.close(); co.close()\n")
LEAVE_OPEN = ("import numpy as np, starling\n"
              "co = starling.Coordinator(run='e', secret='k')\n"
              "c = starling.Communicator(co, 'e', 'k', starling.Config(min_peers=1))\n"
              "c.update_topology()\n"
              "c.allreduce(np.ones(4, np.float32))\n"
              "print('left open', flush=True)\n")  # exit with both handles open


def test_env_level_adds_a_stderr_handler_and_exit_is_clean():
    p = run_child(LEAVE_OPEN, STARLING_LOG_LEVEL="info")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "left open\n"
    assert "starling[INFO] epoch 1: 1 members" in p.stderr, p.stderr


def test_env_off_and_bad_value():
    p = run_child(CHILD, STARLING_LOG_LEVEL="off")
    assert p.returncode == 0 and "starling[" not in p.stderr, p.stderr
    p = run_child(CHILD, STARLING_LOG_LEVEL="loud")
    assert p.returncode == 0, p.stderr
    assert "STARLING_LOG_LEVEL='loud' is not one of" in p.stderr
