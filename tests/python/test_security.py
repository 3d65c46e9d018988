"""Sealed frames against a man in the middle (docs/protocol.md, "Sealed frames").

Three members on loopback; one of them listens on 127.0.0.1:P and advertises 127.0.0.2,
where a relay in this process listens on P and forwards to it. The relay parses the
frames its client sends (the left neighbour's ring link: HELLO and AUTH in clear, then
sealed frames: header, payload, 16-byte tag) and, on the first link only, tampers with
one DATA frame: flips a payload bit, drops it, sends it twice, swaps it with the next one,
or injects a forged frame before it. Every member all-reduces known integers and retries
a collective that fails with PeerLost after update_topology. With sealing, every tampered
frame is refused: the collective fails on every member, the retry succeeds, and no
member ever holds a value that differs from the exact sum. With security "none" the
same flipped bit goes into the sum unnoticed, which is what the seal is for.
"""
import socket
import struct
import threading
import time

import pytest

import starling
from starling.errors import PeerLost, StarlingError

np = pytest.importorskip("numpy")

T_HELLO, T_AUTH, T_DATA = 1, 3, 15
TAG = 16
COUNT = 3 * 4096  # 48 KiB of f32: with 4 KiB chunks, several DATA frames per link and op
ITERS = 6
WAIT_S = 60.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            return None
        buf += data
    return buf


def shut_both(*socks):
    """Ends both directions of a relayed connection (each pump ends the other's)."""
    for x in socks:
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Relay:
    """Listens on 127.0.0.2:port, forwards to 127.0.0.1:port; tampers with frame number
    `at` among those of `types` (DATA by default) of the first connection it relays, as
    `how` says."""

    def __init__(self, port, how, sealed, at=3, types=(T_DATA,)):
        self.port, self.how, self.tag, self.at = port, how, TAG if sealed else 0, at
        self.types = types
        self.tampered = 0
        self.connections = 0
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.2", port))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.stop = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join(5)
        self.lsock.close()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                x.settimeout(None)
            first = self.connections == 0
            self.connections += 1
            for fn, args in ((self._forward, (c, s, first)), (self._pipe, (s, c))):
                t = threading.Thread(target=fn, args=args, daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        shut_both(src, dst)

    def _frames(self, src):
        """The client's frames, whole: header + payload (+ tag once sealed)."""
        while True:
            hdr = recv_exact(src, 8)
            if hdr is None:
                return
            ftype, n = hdr[0], struct.unpack_from("<I", hdr, 4)[0]
            tail = 0 if ftype in (T_HELLO, T_AUTH) else self.tag
            rest = recv_exact(src, n + tail)
            if rest is None:
                return
            yield ftype, hdr + rest

    def _forward(self, src, dst, tamper):
        data_frames = 0
        held = None  # "swap": the frame kept back until the next one has gone
        try:
            for ftype, f in self._frames(src):
                if not tamper or ftype not in self.types or self.tampered:
                    dst.sendall(f)
                    continue
                data_frames += 1
                if held is not None:  # swap: the later frame first, then the held one
                    dst.sendall(f + held)
                    held = None
                    self.tampered += 1
                    continue
                if data_frames < self.at:
                    dst.sendall(f)
                    continue
                if self.how == "flip":  # one bit of a DATA payload's first value, else the last
                    b = bytearray(f)
                    b[8 + 24 if ftype == T_DATA else len(b) - 1] ^= 0x40
                    dst.sendall(bytes(b))
                elif self.how == "drop":
                    pass
                elif self.how == "replay":
                    dst.sendall(f + f)
                elif self.how == "inject":  # a plausible frame: real header, forged body
                    forged = f[:32] + bytes(len(f) - 32)
                    dst.sendall(forged + f)
                elif self.how == "swap":
                    held = f
                    continue
                self.tampered += 1
        except OSError:
            pass
        shut_both(src, dst)


def expected(it):
    base = np.arange(COUNT, dtype=np.float32)
    return sum(base * (i + 1) + it for i in range(3)).astype(np.float32)


def run_group(how, security):
    """Three members, member 2 behind the relay. Returns (relay, per-member results)."""
    port = free_port()
    relay = Relay(port, how, sealed=security != "none")
    coord = starling.Coordinator(run="mitm", secret="k",
                                 config=starling.Config(timeout_ms=1000, security=security))
    results, errors = [None] * 3, []

    def member(i):
        # shm=False: on one host the ring's bytes would go through shared memory and
        # bypass the relay (which would then see only wake-up bytes).
        cfg = starling.Config(min_peers=3, timeout_ms=1000, op_timeout_ms=8000,
                              chunk_bytes=4096, security=security, shm=False,
                              listen=f"127.0.0.1:{port}" if i == 2 else None,
                              advertise="127.0.0.2" if i == 2 else None)
        out = {"values": [], "retries": 0}
        try:
            with starling.Communicator(coord, "mitm", "k", cfg) as c:
                c.update_topology()
                end = time.monotonic() + WAIT_S
                for it in range(ITERS):
                    while True:
                        x = np.arange(COUNT, dtype=np.float32) * (i + 1) + it
                        try:
                            c.allreduce(x)
                            break
                        except (PeerLost, starling.errors.Timeout):
                            out["retries"] += 1
                            if out["retries"] > 5 or time.monotonic() > end:
                                raise
                            c.update_topology()
                    out["values"].append(x)
                results[i] = out
        except StarlingError as e:  # reported by the test
            errors.append((i, e))
    ts = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(WAIT_S + 30)
    alive = [t.is_alive() for t in ts]
    relay.close()
    coord.close()
    assert not any(alive), "a member did not finish in time"
    return relay, results, errors


@pytest.mark.parametrize("how", ["flip", "drop", "replay", "inject", "swap"])
def test_tampered_frame_is_refused(how):
    relay, results, errors = run_group(how, "aead")
    assert relay.connections >= 1, "no ring link went through the relay"
    assert relay.tampered == 1, "the relay did not tamper (%d)" % relay.tampered
    assert not errors, errors
    # The tampered collective failed and was redone: on every member, as one.
    assert all(r["retries"] >= 1 for r in results), [r["retries"] for r in results]
    # No corrupted value was ever reduced: every result is the exact sum, bit for bit.
    for r in results:
        assert len(r["values"]) == ITERS
        for it, v in enumerate(r["values"]):
            assert np.array_equal(v, expected(it)), (how, it)
    assert relay.connections >= 2  # the redo went through a new link


def test_chacha20_suite_refuses_a_flip():
    relay, results, errors = run_group("flip", "chacha20")
    assert relay.tampered == 1 and not errors
    assert all(r["retries"] >= 1 for r in results)
    for r in results:
        for it, v in enumerate(r["values"]):
            assert np.array_equal(v, expected(it))


def test_clear_frames_let_a_flip_through():
    """The control: without the seal the same bit flip is summed unnoticed."""
    relay, results, errors = run_group("flip", "none")
    assert relay.tampered == 1 and not errors
    assert all(r["retries"] == 0 for r in results)
    wrong = sum(not np.array_equal(v, expected(it))
                for r in results for it, v in enumerate(r["values"]))
    assert wrong >= 1


def test_security_mismatch_is_refused_with_a_clear_error():
    coord = starling.Coordinator(run="mm", secret="k", config=starling.Config(timeout_ms=1000))
    try:
        with pytest.raises(starling.errors.Auth) as ei:
            starling.Communicator(coord, "mm", "k",
                                  starling.Config(security="none", op_timeout_ms=5000))
        assert "security mismatch" in str(ei.value)
        assert "security=none" in str(ei.value) and "security=aead" in str(ei.value)
    finally:
        coord.close()
    with pytest.raises(starling.errors.Invalid):
        starling.Config(security="rot13")._make()


def test_tampered_control_frame_is_refused():
    """The coordinator's connections are sealed too: a relay in front of the coordinator
    flips a bit of the third sealed frame a member sends it (after REGISTER: heartbeats,
    TOPO_REQ). The coordinator refuses the frame and drops the connection, the member
    re-registers through a new one, and the collectives go on with exact results."""
    port = free_port()
    relay = Relay(port, "flip", sealed=True, at=3, types=tuple(range(4, 20)))
    coord = starling.Coordinator(f"127.0.0.1:{port}", run="mitm-ctl", secret="k",
                                 config=starling.Config(timeout_ms=1000))
    results, errors = [None] * 2, []

    def member(i):
        cfg = starling.Config(min_peers=2, timeout_ms=1000, op_timeout_ms=8000)
        try:
            with starling.Communicator(f"127.0.0.2:{port}", "mitm-ctl", "k", cfg) as c:
                c.update_topology()
                values, end = [], time.monotonic() + 3.0
                it = 0
                while time.monotonic() < end or it < 20:
                    x = np.full(1024, float(i + 1 + it), dtype=np.float32)
                    try:
                        c.allreduce(x)
                    except PeerLost:
                        c.update_topology()
                        continue
                    values.append((it, x[0]))
                    it += 1
                    time.sleep(0.01)
                results[i] = values
        except StarlingError as e:  # reported by the test
            errors.append((i, e))
    ts = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(WAIT_S)
    alive = any(t.is_alive() for t in ts)
    relay.close()
    coord.close()
    assert not alive and not errors, errors
    assert relay.tampered == 1
    assert relay.connections >= 3  # two members, and one of them again
    for values in results:
        assert values and all(v == 2 * it + 3 for it, v in values)
