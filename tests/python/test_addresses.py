"""Addresses from Python: names and IPv6 literals for the coordinator and the data plane,
the advertise host, and errors that carry the system's text."""
import socket
import threading

import pytest

import starling


def group_of_two(coord_listen, coord_host, listen, advertise=None):
    """Two communicators (threads) through a coordinator on coord_listen, reached as
    coord_host:PORT; each all-reduces [1, 2] and returns the result."""
    coord = starling.Coordinator(coord_listen, "addr", "k", starling.Config(timeout_ms=1000))
    addr = f"{coord_host}:{coord.port}"
    out, errors = [None, None], []

    def member(i):
        try:
            cfg = starling.Config(min_peers=2, timeout_ms=1000, op_timeout_ms=15000,
                                  listen=listen, advertise=advertise)
            with starling.Communicator(addr, "addr", "k", cfg) as c:
                c.update_topology()
                x = [1.0, 2.0]
                import numpy as np
                a = np.array(x, dtype=np.float32)
                c.allreduce(a)
                out[i] = a.tolist()
        except Exception as e:  # reported below
            errors.append(e)
    ts = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    coord.close()
    assert not errors, errors
    assert out == [[2.0, 4.0], [2.0, 4.0]]


def test_localhost():
    group_of_two("localhost:0", "localhost", "localhost:0")


def test_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 on loopback")
    group_of_two("[::1]:0", "[::1]", "[::1]:0")


def test_advertise():
    # every interface, advertising another loopback address: still reachable
    group_of_two("127.0.0.1:0", "127.0.0.1", "0.0.0.0:0", advertise="127.0.0.5")


def test_refused_connection_says_why():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(starling.StarlingError) as e:
        starling.Communicator(f"127.0.0.1:{port}", "r", "k",
                              starling.Config(op_timeout_ms=2000))
    assert "Connection refused" in str(e.value), str(e.value)
    assert f"127.0.0.1:{port}" in str(e.value)


def test_bad_addresses_refused():
    with pytest.raises(starling.Invalid, match="vm:"):
        starling.Communicator("vm:", "r", "k")
    with pytest.raises(starling.Invalid, match=r"listen='::1:0'"):
        starling.Config(listen="::1:0")._make()
    with pytest.raises(starling.Invalid, match="advertise='0.0.0.0'"):
        starling.Config(advertise="0.0.0.0")._make()
    with pytest.raises(starling.Invalid) as e:
        starling.Coordinator("[::1", "r", "k")
    assert "'[::1'" in str(e.value)
