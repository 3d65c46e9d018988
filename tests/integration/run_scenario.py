#!/usr/bin/python3
"""Multi-process integration and fault scenarios for starling (loopback only).

Starts a coordinator (`<build>/tools/starling coordinator`) and several `itest_peer`
processes on 127.0.0.1, injects one kind of fault, and checks what the peers report:
every surviving peer finishes every iteration and all of them end with the same shared-state
hash. Standard library only; run with /usr/bin/python3.

    run_scenario.py --build-dir BUILD --scenario NAME [--seed N] [--keep]

Scenarios: loopback-2 loopback-3 loopback-4 loopback-5 loopback-8 big big-4 kill freeze
coord-restart coord-failover coord-failover-kill join bad-input slow-clients.

Nothing here asserts on time: every wait has a generous deadline only so that a hang
becomes a failure instead of a stuck test. On failure the driver prints the seed, the reason
and the last lines of every process's output; every process is killed (by process group)
in a `finally` block whatever happens.
"""

import argparse
import ctypes
import ctypes.util
import fcntl
import hashlib
import hmac
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
POLL_S = 0.02


class ScenarioFailure(Exception):
    pass


def log(msg):
    print("[run_scenario %.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


def free_port():
    """A port that was free a moment ago (the peer binds it right after)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Proc:
    """One child process in its own process group, output captured to files."""

    def __init__(self, h, name, argv, env, deadline_s, expendable=False):
        self.name = name
        self.argv = argv
        self.expendable = expendable  # may die (it is the fault we inject)
        self.stdout_path = os.path.join(h.tmpdir, name + ".out")
        self.stderr_path = os.path.join(h.tmpdir, name + ".err")
        self.deadline = time.monotonic() + deadline_s
        self.deadline_s = deadline_s
        self.signalled = None
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True, close_fds=True)
        finally:
            out.close()
            err.close()
        self.pid = self.popen.pid

    def poll(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        self.signalled = sig
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGCONT)
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stdout_lines(self):
        try:
            with open(self.stdout_path, "rb") as f:
                data = f.read()
        except OSError:
            return []
        text = data.decode("utf-8", "replace")
        lines = text.split("\n")
        # The last element is a partial line (or "" after a newline): ignore it.
        return lines[:-1]

    def tail(self, path, n):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return ["(no output file)"]
        return data.decode("utf-8", "replace").splitlines()[-n:]

    def describe_exit(self):
        rc = self.popen.poll()
        if rc is None:
            return "still running"
        if rc < 0:
            try:
                return "killed by %s" % signal.Signals(-rc).name
            except ValueError:
                return "killed by signal %d" % -rc
        return "exit status %d" % rc


class Harness:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build_dir)
        self.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
        self.rng = random.Random(self.seed)
        self.tmpdir = tempfile.mkdtemp(prefix="starling-it-%s-" % args.scenario)
        self.procs = []
        self.run = "it-%s-%d" % (args.scenario, self.seed)
        self.stop_file = os.path.join(self.tmpdir, "stop")
        self.secret = secrets.token_hex(16)
        self.coord = None
        self.coord_port = None
        self.coord_list = None  # peers' --coord when set: "HOST:PORT,HOST:PORT" (failover)
        self.coordinator = os.path.join(self.build, "tools", "starling")
        self.peer_bin = os.path.join(self.build, "tests", "integration", "itest_peer")
        for path in (self.coordinator, self.peer_bin):
            if not os.access(path, os.X_OK):
                raise ScenarioFailure("not built: %s" % path)

    # ------------------------------------------------------------ processes

    def env(self, secret=None):
        e = dict(os.environ)
        e["STARLING_SECRET"] = self.secret if secret is None else secret
        return e

    def start_coordinator(self, min_peers, port=0, extra=None, deadline_s=None):
        name = "coord%d" % sum(1 for p in self.procs if p.name.startswith("coord"))
        argv = [self.coordinator, "coordinator", "--listen", "%s:%d" % (HOST, port),
                "--run", self.run, "--min-peers", str(min_peers)] + (extra or [])
        proc = Proc(self, name, argv, self.env(), deadline_s or self.args.timeout)
        self.procs.append(proc)
        pat = re.compile(r"coordinator listening on 127\.0\.0\.1:(\d+)")
        end = time.monotonic() + 20
        while time.monotonic() < end:
            for line in proc.stdout_lines():
                m = pat.search(line)
                if m:
                    self.coord = proc
                    self.coord_port = int(m.group(1))
                    log("%s listening on port %d (pid %d)" % (name, self.coord_port, proc.pid))
                    return proc
            if not proc.alive():
                raise ScenarioFailure("%s exited before listening (%s)"
                                      % (name, proc.describe_exit()))
            time.sleep(POLL_S)
        raise ScenarioFailure("%s did not print 'coordinator listening on ...' within 20 s"
                              % name)

    def start_peer(self, name, mode, extra=None, expendable=False, secret=None, listen=None,
                   deadline_s=None):
        deadline_s = deadline_s or self.args.timeout
        coord = self.coord_list or "%s:%d" % (HOST, self.coord_port)
        argv = [self.peer_bin, "--coord", coord, "--run", self.run,
                "--name", name, "--mode", mode, "--seed", str(self.seed),
                "--deadline-s", str(int(deadline_s) + 5)]
        if listen:
            argv += ["--listen", listen]
        argv += (extra or []) + self.args.peer_arg
        proc = Proc(self, name, argv, self.env(secret), deadline_s, expendable)
        self.procs.append(proc)
        log("started %s (pid %d): %s" % (name, proc.pid, " ".join(argv[1:])))
        return proc

    def check_health(self, waiting_for=()):
        """Fails fast when a process that must not die has died, or a deadline passed."""
        now = time.monotonic()
        for p in self.procs:
            rc = p.poll()
            if rc is None:
                if now > p.deadline:
                    raise ScenarioFailure("%s still running after its %.0f s deadline (hang?)"
                                          % (p.name, p.deadline_s))
                continue
            if p.expendable or p.signalled is not None:
                continue
            if p is self.coord or p.name.startswith("coord"):
                if p is self.coord:
                    raise ScenarioFailure("coordinator %s died: %s" % (p.name, p.describe_exit()))
                continue
            if rc != 0:
                raise ScenarioFailure("%s failed: %s" % (p.name, p.describe_exit()))

    def wait_until(self, what, pred, timeout_s):
        end = time.monotonic() + timeout_s
        while True:
            self.check_health()
            if pred():
                return
            if time.monotonic() > end:
                raise ScenarioFailure("timed out after %.0f s waiting for %s" % (timeout_s, what))
            time.sleep(POLL_S)

    def wait_exit(self, procs, timeout_s):
        names = ", ".join(p.name for p in procs)
        self.wait_until("%s to finish" % names, lambda: all(p.poll() is not None for p in procs),
                        timeout_s)
        for p in procs:
            if p.poll() != 0:
                raise ScenarioFailure("%s failed: %s" % (p.name, p.describe_exit()))

    def stop_coordinator(self):
        """The coordinator must have survived the scenario; then it is asked to stop."""
        c = self.coord
        if c is None:
            return
        if not c.alive():
            raise ScenarioFailure("coordinator %s died: %s" % (c.name, c.describe_exit()))
        c.signal(signal.SIGTERM)
        try:
            c.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log("note: coordinator did not exit within 15 s of SIGTERM")
            return
        if c.poll() != 0:
            log("note: coordinator exited with %s after SIGTERM" % c.describe_exit())

    def kill_all(self):
        for p in self.procs:
            p.kill()

    def report(self, reason):
        print("=" * 78, flush=True)
        print("SCENARIO FAILED: %s" % self.args.scenario)
        print("seed: %d   (rerun: %s --build-dir %s --scenario %s --seed %d)"
              % (self.seed, sys.argv[0], self.args.build_dir, self.args.scenario, self.seed))
        print("reason: %s" % reason)
        print("logs kept in %s" % self.tmpdir)
        for p in self.procs:
            print("-" * 78)
            print("%s (pid %d): %s%s" % (p.name, p.pid, p.describe_exit(),
                                         " [signalled %s]" % signal.Signals(p.signalled).name
                                         if p.signalled else ""))
            print("  argv: %s" % " ".join(p.argv))
            print("  --- last 10 lines of stdout:")
            for line in p.tail(p.stdout_path, 10):
                print("  | " + line)
            print("  --- last 50 lines of stderr:")
            for line in p.tail(p.stderr_path, 50):
                print("  | " + line)
        print("=" * 78, flush=True)


# ------------------------------------------------------------------ output parsing

def parse_iters(proc):
    """[(iter, size, epoch)] from the ITER lines."""
    out = []
    for line in proc.stdout_lines():
        if line.startswith("ITER "):
            f = line.split()
            if len(f) == 4:
                out.append((int(f[1]), int(f[2]), int(f[3])))
    return out


def last_iter(proc):
    it = parse_iters(proc)
    return it[-1][0] if it else -1


def kv_line(proc, prefix):
    """The key=value fields of the first line starting with `prefix`, or None."""
    for line in proc.stdout_lines():
        if line.startswith(prefix + " "):
            return dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)
    return None


def done_hash(proc):
    d = kv_line(proc, "DONE")
    return d.get("hash") if d else None


def check_equal_hashes(procs, what="DONE"):
    """The library's state hash and the peers' own checksum of the bytes (wsum) must be
    equal on every peer."""
    hashes = {}
    for p in procs:
        d = kv_line(p, what) or {}
        if not d.get("hash") or not d.get("wsum"):
            raise ScenarioFailure("%s printed no %s hash/wsum" % (p.name, what))
        hashes[p.name] = (d["hash"], d["wsum"])
    if len(set(h for h, _ in hashes.values())) != 1:
        raise ScenarioFailure("%s state hashes differ: %s" % (what, hashes))
    if len(set(w for _, w in hashes.values())) != 1:
        raise ScenarioFailure("%s state hashes are equal but the bytes differ (wsum): %s"
                              % (what, hashes))
    log("%s hashes equal on %d peers: %s" % (what, len(procs), next(iter(hashes.values()))))
    return next(iter(hashes.values()))[0]


def stream_iters(procs):
    """The iteration count every peer reports in its DONE line (they must agree)."""
    counts = {}
    for p in procs:
        d = kv_line(p, "DONE") or {}
        if "iters" not in d:
            raise ScenarioFailure("%s printed no DONE iters=" % p.name)
        counts[p.name] = int(d["iters"])
    if len(set(counts.values())) != 1:
        raise ScenarioFailure("peers stopped after different iteration counts: %s" % counts)
    return next(iter(counts.values()))


def check_stream(procs, first_iter=None):
    """Each peer completed every iteration once, in order, up to the common stop point;
    members agree on each iteration's (size, epoch). Returns {iter: (size, epoch)}."""
    iters = stream_iters(procs)
    agreed = {}
    for p in procs:
        its = parse_iters(p)
        start = (first_iter or {}).get(p.name, 0)
        want = list(range(start, iters))
        got = [i for i, _, _ in its]
        if got != want:
            raise ScenarioFailure("%s completed iterations %s, want %d..%d once each in order"
                                  % (p.name, summarize(got), start, iters - 1))
        for i, size, epoch in its:
            prev = agreed.setdefault(i, (size, epoch))
            if prev != (size, epoch):
                raise ScenarioFailure("iteration %d: %s saw size %d epoch %d, another member saw "
                                      "size %d epoch %d" % (i, p.name, size, epoch, prev[0],
                                                            prev[1]))
    log("stream checked: %d iterations" % iters)
    return agreed


def summarize(seq):
    if len(seq) <= 12:
        return str(seq)
    return "[%s ... %s] (%d items)" % (", ".join(map(str, seq[:6])),
                                       ", ".join(map(str, seq[-4:])), len(seq))


def count_peer_lost(proc):
    return sum(1 for line in proc.stdout_lines() if line.startswith("TOPO ") and "why=peer-lost"
               in line)


# ------------------------------------------------------------------ scenarios

def scenario_loopback(h, n):
    h.start_coordinator(n)
    peers = []
    for i in range(n):
        extra = ["--min-peers", str(n), "--expect-seeded"]
        if n >= 3 and i == n - 1:
            extra.append("--fresh")
        peers.append(h.start_peer("p%d" % i, "collectives", extra))
    h.wait_exit(peers, h.args.timeout - 10)
    sync = check_equal_hashes(peers, "SYNC")
    done = check_equal_hashes(peers, "DONE")
    if sync != done:
        raise ScenarioFailure("state hash changed between the first sync (%s) and the end (%s) "
                              "although nothing wrote it" % (sync, done))
    for i, p in enumerate(peers):
        d = kv_line(p, "SYNC")
        if int(d.get("size", -1)) != n:
            raise ScenarioFailure("%s: first epoch has size %s, want %d" % (p.name, d.get("size"), n))
        if n >= 3:
            want = "1" if i == n - 1 else "0"
            if d.get("changed") != want:
                raise ScenarioFailure("%s: first sync changed=%s, want %s (%s)"
                                      % (p.name, d.get("changed"), want,
                                         "fresh peer must receive the majority's state"
                                         if want == "1" else "majority state must not change"))
    ranks = sorted(int(kv_line(p, "SYNC")["rank"]) for p in peers)
    if ranks != list(range(n)):
        raise ScenarioFailure("ranks of the first epoch are %s, want 0..%d once each"
                              % (ranks, n - 1))
    h.stop_coordinator()


def scenario_big(h, n):
    h.start_coordinator(n)
    peers = [h.start_peer("p%d" % i, "big", ["--min-peers", str(n), "--expect-seeded", "--bytes",
                                              str(h.args.big_bytes)]) for i in range(n)]
    h.wait_exit(peers, h.args.timeout - 10)
    check_equal_hashes(peers, "DONE")
    h.stop_coordinator()


# Failure-detection timeout: the library's default. Shorter would only make the fault
# tests quicker, and a busy shared machine could then be mistaken for a dead peer.
DEFAULT_DETECT_MS = 3000


def detect_ms(h):
    return h.args.timeout_ms or DEFAULT_DETECT_MS


def coord_args(h):
    return ["--timeout-ms", str(detect_ms(h))]


def stream_args(h, n, extra=None):
    return ["--min-peers", str(n), "--iters", str(h.args.max_iters), "--count", str(h.args.count),
            "--sleep-ms", str(h.args.sleep_ms), "--topo-every", "8",
            "--stop-file", h.stop_file, "--timeout-ms", str(detect_ms(h))] + (extra or [])


def start_stream(h, n, listen_ports=None):
    peers = []
    for i in range(n):
        listen = "%s:%d" % (HOST, listen_ports[i]) if listen_ports else None
        peers.append(h.start_peer("p%d" % i, "stream", stream_args(h, n), listen=listen))
    return peers


def wait_progress(h, procs, target, what, pred=None):
    """Waits until every peer in `procs` completed iteration `target` (and `pred(proc)`)."""
    h.wait_until("%s to reach iteration %d (%s)" % (", ".join(p.name for p in procs), target, what),
                 lambda: all(last_iter(p) >= target and (pred is None or pred(p))
                             for p in procs), h.args.timeout / 2)


def stop_stream(h, peers, why):
    """Creates the stop file: the members vote to stop at their next topology point."""
    log("requesting stop (%s); peers at %s" % (why, {p.name: last_iter(p) for p in peers}))
    with open(h.stop_file, "w") as f:
        f.write("stop\n")


def scenario_fault(h, kind):
    """kill / freeze: 4 peers stream, one dies or freezes mid-stream, 3 go on and finish."""
    n = 4
    h.start_coordinator(n, extra=coord_args(h))
    peers = start_stream(h, n)
    victim = h.rng.randrange(n)
    target = h.rng.randrange(20, 80)
    delay = h.rng.uniform(0, 0.01)
    log("seed %d: %s p%d at iteration >= %d (+%.3f s)" % (h.seed, kind, victim, target, delay))
    v = peers[victim]
    v.expendable = True
    wait_progress(h, [v], target, "fault point")
    time.sleep(delay)
    v.signal(signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
    at = last_iter(v)
    log("%s sent to %s at its iteration %d" % (kind, v.name, at))
    survivors = [p for p in peers if p is not v]
    # Failover time, reported for bench/failover.sh (a figure, never asserted on).
    t0, end = time.monotonic(), time.monotonic() + h.args.timeout / 2
    while time.monotonic() < end and not any(
            any(size == n - 1 for _, size, _ in parse_iters(p)) for p in survivors):
        time.sleep(0.005)
    log("FAILOVER %s: first iteration with %d members done %.0f ms after the fault "
        "(timeout %d ms)" % (kind, n - 1, (time.monotonic() - t0) * 1000, detect_ms(h)))
    # Go on until the survivors have run a while as a group of 3.
    wait_progress(h, survivors, at + 40, "progress after the fault",
                  lambda p: parse_iters(p)[-1][1] == n - 1)
    stop_stream(h, survivors, "survivors ran 40 iterations after the fault")
    h.wait_exit(survivors, h.args.timeout - 20)
    if done_hash(v):
        raise ScenarioFailure("%s printed DONE although it was %s" % (v.name, kind))
    check_equal_hashes(survivors)
    agreed = check_stream(survivors)
    sizes = sorted(set(s for s, _ in agreed.values()))
    if 3 not in sizes or any(s not in (3, 4) for s in sizes):
        raise ScenarioFailure("iteration sizes seen: %s, want 4 then 3" % sizes)
    last4 = max([i for i, (s, _) in agreed.items() if s == 4], default=-1)
    first3 = min(i for i, (s, _) in agreed.items() if s == 3)
    if last4 > first3:
        raise ScenarioFailure("size went back to 4 at iteration %d after 3 at %d" % (last4, first3))
    log("survivors went from 4 to 3 members at iteration %d; %s"
        % (first3, ", ".join("%s: %d peer-lost retries" % (p.name, count_peer_lost(p))
                             for p in survivors)))
    if kind == "freeze":
        v.signal(signal.SIGKILL)
    h.stop_coordinator()


def topo_iters(proc):
    return [int(line.split()[1].split("=")[1]) for line in proc.stdout_lines()
            if line.startswith("TOPO ")]


def scenario_coord_restart(h):
    n = 4
    h.start_coordinator(n, extra=coord_args(h))
    peers = start_stream(h, n)
    target = h.rng.randrange(20, 80)
    pause = h.rng.uniform(0.2, 1.5)
    log("seed %d: kill the coordinator at iteration >= %d, restart after %.2f s"
        % (h.seed, target, pause))
    wait_progress(h, peers, target, "coordinator kill point")
    old, port = h.coord, h.coord_port
    h.coord = None
    old.signal(signal.SIGKILL)
    old.popen.wait(timeout=10)
    at_kill = max(last_iter(p) for p in peers)
    log("coordinator killed; peers at %s" % {p.name: last_iter(p) for p in peers})
    time.sleep(pause)
    for attempt in range(10):
        try:
            h.start_coordinator(n, port=port, extra=coord_args(h))
            break
        except ScenarioFailure as e:
            # The port may take a moment to become bindable again; bounded retries.
            log("restart attempt %d failed: %s" % (attempt + 1, e))
            time.sleep(0.5)
    else:
        raise ScenarioFailure("could not restart the coordinator on port %d" % port)
    if h.coord_port != port:
        raise ScenarioFailure("restarted coordinator bound %d, not %d" % (h.coord_port, port))
    # Two topology points after the kill: the second certainly went through the new one.
    wait_progress(h, peers, at_kill + 24, "two topology updates after the restart",
                  lambda p: sum(1 for i in topo_iters(p) if i > at_kill) >= 2)
    stop_stream(h, peers, "topology updates went through the new coordinator")
    h.wait_exit(peers, h.args.timeout - 20)
    check_equal_hashes(peers)
    agreed = check_stream(peers)
    if any(s != n for s, _ in agreed.values()):
        raise ScenarioFailure("membership changed although no peer died: sizes %s"
                              % sorted(set(s for s, _ in agreed.values())))
    h.stop_coordinator()


def scenario_coord_failover_kill(h):
    """A peer and the active coordinator are SIGKILLed together: the failed collective is
    resolved by the standby once it has taken over (the survivors re-register and repeat
    their FAIL), and the 3 survivors go on as a group of 3 with equal hashes."""
    n = 4
    active = h.start_coordinator(n, extra=coord_args(h))
    a_port = h.coord_port
    h.start_coordinator(1, extra=coord_args(h) + ["--standby-of", "%s:%d" % (HOST, a_port)])
    h.coord_list = "%s:%d,%s:%d" % (HOST, a_port, HOST, h.coord_port)
    peers = start_stream(h, n)
    victim = peers[h.rng.randrange(n)]
    victim.expendable = True
    target = h.rng.randrange(20, 60)
    log("seed %d: kill %s and the active coordinator at iteration >= %d"
        % (h.seed, victim.name, target))
    wait_progress(h, [victim], target, "fault point")
    victim.signal(signal.SIGKILL)
    active.signal(signal.SIGKILL)
    at = last_iter(victim)
    survivors = [p for p in peers if p is not victim]
    t0 = time.monotonic()
    wait_progress(h, survivors, at + 1, "a first iteration with 3 members",
                  lambda p: parse_iters(p)[-1][1] == n - 1)
    log("first iteration with %d members done %.0f ms after the faults (timeout %d ms; with "
        "a standby a member gives up waiting for a decision after 5 timeouts)"
        % (n - 1, (time.monotonic() - t0) * 1000, detect_ms(h)))
    wait_progress(h, survivors, at + 40, "progress after the fault",
                  lambda p: parse_iters(p)[-1][1] == n - 1)
    stop_stream(h, survivors, "survivors ran 40 iterations after the fault")
    h.wait_exit(survivors, h.args.timeout - 20)
    check_equal_hashes(survivors)
    agreed = check_stream(survivors)
    sizes = sorted(set(s for s, _ in agreed.values()))
    if sizes != [n - 1, n]:
        raise ScenarioFailure("iteration sizes seen: %s, want 4 then 3" % sizes)
    log("survivors resolved through the standby: %s"
        % ", ".join("%s: %d peer-lost retries" % (p.name, count_peer_lost(p))
                    for p in survivors))
    h.stop_coordinator()


def run_joiner(h, peers, n, iters, why):
    """Starts peer p<n> with --join, waits until it is admitted and everyone has run
    `iters` iterations more, stops the stream and checks the hashes. Returns the joiner,
    everyone, and the iteration it joined at."""
    joiner = h.start_peer("p%d" % n, "stream", stream_args(h, n, ["--join"]))
    everyone = peers + [joiner]
    h.wait_until("the joiner to be admitted", lambda: kv_line(joiner, "JOINED") is not None,
                 h.args.timeout / 2)
    join_iter = int(kv_line(joiner, "JOINED")["iter"])
    wait_progress(h, everyone, join_iter + iters, "progress with %d members" % (n + 1))
    stop_stream(h, everyone, why)
    h.wait_exit(everyone, h.args.timeout - 20)
    check_equal_hashes(everyone)
    return joiner, everyone, join_iter


def scenario_coord_failover(h):
    """An active coordinator and its standby; the peers know both. The active is killed
    amid the stream, a 5th peer joins after that: the standby takes over, no collective
    fails (every iteration ran with all members), the joiner is admitted, hashes agree."""
    n = 4
    active = h.start_coordinator(n, extra=coord_args(h))
    a_port = h.coord_port
    standby = h.start_coordinator(1, extra=coord_args(h) + ["--standby-of",
                                                          "%s:%d" % (HOST, a_port)])
    b_port = h.coord_port
    h.coord_list = "%s:%d,%s:%d" % (HOST, a_port, HOST, b_port)
    peers = start_stream(h, n)
    target = h.rng.randrange(20, 60)
    log("seed %d: kill the active coordinator at iteration >= %d" % (h.seed, target))
    wait_progress(h, peers, target, "coordinator kill point")
    active.signal(signal.SIGKILL)
    active.popen.wait(timeout=10)
    at_kill = max(last_iter(p) for p in peers)
    log("active killed; peers at %s" % {p.name: last_iter(p) for p in peers})
    h.wait_until("the standby's promotion", lambda: any(
        "promoted" in line for line in standby.tail(standby.stderr_path, 400)),
        h.args.timeout / 4)
    joiner, everyone, join_iter = run_joiner(h, peers, n, 24,
                                             "ran with the joiner through the promoted standby")
    agreed = check_stream(everyone, {"p4": join_iter})
    for i, (size, _) in agreed.items():
        want = n + 1 if i >= join_iter else n
        if size != want:
            raise ScenarioFailure("iteration %d ran with %d members, want %d (killed the active "
                                  "at %d, joined at %d)" % (i, size, want, at_kill, join_iter))
    for p in peers:
        if count_peer_lost(p):
            raise ScenarioFailure("%s saw %d peer-lost retries: the coordinator's death failed "
                                  "a collective" % (p.name, count_peer_lost(p)))
    log("standby took over; joiner admitted at iteration %d (active killed at %d)"
        % (join_iter, at_kill))
    h.stop_coordinator()


def scenario_join(h):
    n = 3
    h.start_coordinator(n, extra=coord_args(h))
    peers = start_stream(h, n)
    target = h.rng.randrange(20, 60)
    log("seed %d: a 4th peer joins once the group reaches iteration %d" % (h.seed, target))
    wait_progress(h, peers, target, "join point")
    joiner, everyone, join_iter = run_joiner(h, peers, n, 40, "ran 40 iterations with the joiner")
    if kv_line(joiner, "SYNC").get("changed") != "1":
        raise ScenarioFailure("joiner's first sync reported changed=%s, want 1 (it starts from "
                              "zeros)" % kv_line(joiner, "SYNC").get("changed"))
    for p in peers:
        if kv_line(p, "SYNC").get("changed") != "0":
            raise ScenarioFailure("%s: first sync changed=%s, want 0"
                                  % (p.name, kv_line(p, "SYNC").get("changed")))
    agreed = check_stream(everyone, {"p3": join_iter})
    for i, (s, _) in agreed.items():
        want = 4 if i >= join_iter else 3
        if s != want:
            raise ScenarioFailure("iteration %d ran with %d members, want %d (joined at %d)"
                                  % (i, s, want, join_iter))
    log("joiner admitted at iteration %d (target %d)" % (join_iter, target))
    h.stop_coordinator()


# --- bad input -------------------------------------------------------------------------
#
# Frames as in src/proto/msg.h: an 8-byte header (u8 type, u8 flags, u16 zero, u32 payload
# length, little-endian), then the payload. A connection starts with HELLO (u32 magic "STRL",
# u16 version, u8 role, 32-byte nonce, u8-length run name, u64 peer id, u64 epoch,
# u8 stream, u8 nstreams, u8 security, u8 caps, and since version 6 u64 host tag); the
# server answers CHALLENGE (nonce, MAC, u8 security, u8 caps, u64 host tag) or REJECT
# (i32 code, u8-length reason); the client sends AUTH (MAC); the server answers ACCEPT or
# REJECT. Frames after that are sealed (docs/protocol.md): the malformed frames this client
# sends after authenticating are refused either way.
# MACs are HMAC-SHA-256 under a key derived from (secret, run) with BLAKE2b
# (src/auth/handshake.c), so this client can also authenticate for real and then misbehave.
# This client's host tag is 0 ("shares no memory"), so a peer's data port treats its links
# as links between hosts, except in the same-host attacks, which send the peer's own tag
# (read from its CHALLENGE) and then a bad SHM_OFFER (docs/protocol.md, "Shared-memory
# links").

MAGIC = 0x4C525453
PROTOCOL_VERSION = 6
SEC_CHACHA = 2  # what this client asks for: ChaCha20-Poly1305 whatever the CPUs have
SUITE_CHACHA = 1
T_HELLO, T_CHALLENGE, T_AUTH, T_REJECT, T_REGISTER = 1, 2, 3, 4, 5
T_TOPO_REQ, T_DATA, T_ACCEPT = 8, 15, 18
T_SHM_OFFER, T_SHM_REPLY = 22, 23  # protocol v6
ROLE_CONTROL, ROLE_DATA, ROLE_PROBE, ROLE_DATA_REV = 1, 2, 3, 4  # 4: protocol v5
E_AUTH, E_VERSION = -8, -9
CTRL_MAX = 1 << 20  # STARLING_CTRL_MAX (src/proto/msg.h)
CHALLENGE_LEN = 32 + 32 + 1 + 1 + 8  # nonce, MAC, security, caps, host tag (v6)
SHM_RING_MIN = 64 << 10  # STARLING_SHM_RING_MIN (src/net/shm.h)
SHM_DATA_OFF = 4096  # where a segment's ring starts (src/net/shm.c)


def frame(ftype, payload, flags=0, reserved=0, length=None):
    n = len(payload) if length is None else length
    return struct.pack("<BBHI", ftype, flags, reserved, n) + payload


def pstr(b):
    return bytes([len(b)]) + b


class Hello:
    def __init__(self, run, role, rng, version=PROTOCOL_VERSION, magic=MAGIC, peer_id=None,
                 epoch=0, stream=0, nstreams=0, security=SEC_CHACHA, caps=0, host=0):
        self.run = run.encode() if isinstance(run, str) else run
        self.security, self.caps, self.host = security, caps, host
        self.role, self.version, self.magic = role, version, magic
        self.nonce = bytes(rng.randrange(256) for _ in range(32))
        self.peer_id = peer_id if peer_id is not None else rng.randrange(1, 1 << 64)
        self.epoch, self.stream, self.nstreams = epoch, stream, nstreams

    def payload(self):
        """As starling__hello_encode writes it: the host tag only from version 6 on, so
        that a HELLO of an older version has that version's layout."""
        p = (struct.pack("<IHB", self.magic, self.version, self.role) + self.nonce +
             pstr(self.run) + struct.pack("<QQBBBB", self.peer_id, self.epoch, self.stream,
                                          self.nstreams, self.security, self.caps))
        return p + struct.pack("<Q", self.host) if self.version >= 6 else p

    def ident(self, ch_tail):
        """ch_tail: the CHALLENGE after its MAC (security, caps, host tag). The proof's
        ident is peer_id, epoch, role, stream, nstreams, security, caps, the CHALLENGE's
        security and caps, then (v6) both host tags."""
        ch_sec_caps, ch_host = ch_tail[:2], ch_tail[2:10]
        return (struct.pack("<QQBBBBB", self.peer_id, self.epoch, self.role, self.stream,
                            self.nstreams, self.security, self.caps) + ch_sec_caps +
                struct.pack("<Q", self.host) + ch_host)


def derive_key(secret, run):
    skey = hashlib.blake2b(secret, digest_size=32).digest()
    return hashlib.blake2b(b"starling-v1-key\0" + run, key=skey, digest_size=32).digest()


class Seal:
    """The client end of a sealed connection (src/auth/seal.c, docs/protocol.md): keys
    from the run key and both nonces, ChaCha20-Poly1305 from libsodium through ctypes,
    a frame counter as nonce. Lets this driver send well-sealed frames whose contents
    are malformed, so the receivers' decoders are what refuses them."""

    _lib = None

    def __init__(self, key, cnonce, snonce):
        if Seal._lib is None:
            Seal._lib = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
            if Seal._lib.sodium_init() < 0:
                raise ScenarioFailure("libsodium would not initialise")
        self.tx = self._derive(key, b"C", cnonce, snonce)
        self.rx = self._derive(key, b"S", cnonce, snonce)
        self.ntx = self.nrx = 0

    @staticmethod
    def _derive(key, direction, cn, sn):
        msg = b"starling-v3-seal\0" + direction + bytes([SUITE_CHACHA]) + cn + sn
        return hashlib.blake2b(msg, key=key, digest_size=32).digest()

    def seal(self, ad, m):
        c = ctypes.create_string_buffer(max(len(m), 1))
        tag = ctypes.create_string_buffer(16)
        nonce = struct.pack("<QI", self.ntx, 0)
        self.ntx += 1
        Seal._lib.crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            c, tag, None, m, ctypes.c_ulonglong(len(m)), ad, ctypes.c_ulonglong(len(ad)),
            None, nonce, self.tx)
        return c.raw[:len(m)] + tag.raw

    def open(self, hdr, c, tag):
        """The clear bytes of the server's next sealed frame, or None if it does not open."""
        m = ctypes.create_string_buffer(max(len(c), 1))
        nonce = struct.pack("<QI", self.nrx, 0)
        self.nrx += 1
        rc = Seal._lib.crypto_aead_chacha20poly1305_ietf_decrypt_detached(
            m, None, c, ctypes.c_ulonglong(len(c)), tag, hdr, ctypes.c_ulonglong(len(hdr)),
            nonce, self.rx)
        return m.raw[:len(c)] if rc == 0 else None

    def frame(self, ftype, payload, length=None):
        """A control frame, sealed: clear header (associated data), ciphertext, tag."""
        hdr = frame(ftype, b"", length=len(payload) if length is None else length)
        return hdr + self.seal(hdr, payload)

    def record(self, data):
        """A probe record: ciphertext, tag (no header)."""
        return self.seal(b"", data)


def flip_last(b):
    return b[:-1] + bytes([b[-1] ^ 1])


def proof(key, who, n1, n2, hello, ch_tail):
    """ch_tail: the CHALLENGE's bytes after the MAC (the server's security, caps and host
    tag)."""
    return hmac.new(key, who + n1 + n2 + hello.ident(ch_tail), hashlib.sha256).digest()


def recv_exact(sock, n, end):
    buf = b""
    while len(buf) < n:
        left = end - time.monotonic()
        if left <= 0:
            raise ScenarioFailure("no complete frame from the server within the deadline")
        sock.settimeout(min(left, 1.0))
        try:
            data = sock.recv(n - len(buf))
        except socket.timeout:
            continue
        if not data:
            return None
        buf += data
    return buf


def recv_frame(sock, timeout_s=15.0):
    """(type, payload), or None if the server closed (or reset) the connection."""
    end = time.monotonic() + timeout_s
    try:
        hdr = recv_exact(sock, 8, end)
        if hdr is None:
            return None
        ftype, _, _, n = struct.unpack("<BBHI", hdr)
        if n > CTRL_MAX:
            raise ScenarioFailure("server sent a frame of %d bytes during a handshake" % n)
        payload = recv_exact(sock, n, end) if n else b""
        if payload is None:
            return None
    except ConnectionError:
        return None
    return ftype, payload


def reject_code(payload):
    if len(payload) < 5:
        return None, ""
    code = struct.unpack("<i", payload[:4])[0]
    return code, payload[5:5 + payload[4]].decode("utf-8", "replace")


def expect_closed(sock, what, timeout_s=15.0, required=True):
    """Reads until the other side closes (bounded in bytes and time). If the connection
    stays open: a failure if `required`, else None."""
    sock.settimeout(0.5)
    end = time.monotonic() + timeout_s
    total = 0
    while time.monotonic() < end and total < (1 << 20):
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:
            return "reset (%s)" % e.__class__.__name__
        if not data:
            return "closed after %d more bytes" % total
        total += len(data)
    if not required:
        return None
    raise ScenarioFailure("the server kept the connection open %.0f s after %s (a malformed "
                          "frame must close the connection)" % (timeout_s, what))


def connect(port):
    s = socket.create_connection((HOST, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_ignoring_reset(s, data):
    try:
        s.sendall(data)
        return True
    except OSError:
        return False  # the receiver already closed: that is a refusal too


def attack_close(port, what, data):
    """Sends `data`; the server must close the connection (it may REJECT first)."""
    s = connect(port)
    try:
        if not send_ignoring_reset(s, data):
            return "%s: refused while sending" % what
        return "%s: %s" % (what, expect_closed(s, what))
    finally:
        s.close()


def attack_reject(port, what, hello, want_code):
    """A well-formed HELLO the server must refuse with REJECT(want_code), then close."""
    s = connect(port)
    try:
        send_ignoring_reset(s, frame(T_HELLO, hello.payload()))
        f = recv_frame(s)
        if f is None:
            return "%s: closed without a REJECT (acceptable)" % what
        if f[0] != T_REJECT:
            raise ScenarioFailure("%s: server answered frame type %d, want REJECT" % (what, f[0]))
        code, reason = reject_code(f[1])
        if code != want_code:
            raise ScenarioFailure("%s: REJECT code %s (%r), want %d" % (what, code, reason,
                                                                       want_code))
        return "%s: REJECT %d %r, %s" % (what, code, reason, expect_closed(s, what))
    finally:
        s.close()


def handshake(s, hello, key, what, seal_out=None):
    """Runs the client side of the handshake with `key`. Returns the final frame
    (ACCEPT or REJECT) or None if the server closed; seal_out (a list) gets the
    connection's Seal."""
    send_ignoring_reset(s, frame(T_HELLO, hello.payload()))
    f = recv_frame(s)
    if f is None:
        return None
    if f[0] == T_REJECT:
        return f
    if f[0] != T_CHALLENGE or len(f[1]) != CHALLENGE_LEN:
        raise ScenarioFailure("%s: server answered HELLO with frame type %d (%d bytes), want "
                              "CHALLENGE (%d bytes)" % (what, f[0], len(f[1]), CHALLENGE_LEN))
    snonce, smac, tail = f[1][:32], f[1][32:64], f[1][64:]
    mine = proof(key, b"C", snonce, hello.nonce, hello, tail)
    if hmac.compare_digest(proof(key, b"S", hello.nonce, snonce, hello, tail), smac):
        what += " (server proof verified)"
    send_ignoring_reset(s, frame(T_AUTH, mine))
    if seal_out is not None:
        seal_out.append(Seal(key, hello.nonce, snonce))
    return recv_frame(s)


def attack_wrong_secret(port, what, hello, h):
    s = connect(port)
    try:
        key = derive_key(secrets.token_bytes(16), hello.run)
        f = handshake(s, hello, key, what)
        if f is None:
            return "%s: closed without a REJECT (acceptable)" % what
        if f[0] != T_REJECT:
            raise ScenarioFailure("%s: a wrong secret was answered with frame type %d, want "
                                  "REJECT (AUTH)" % (what, f[0]))
        code, reason = reject_code(f[1])
        if code != E_AUTH:
            raise ScenarioFailure("%s: REJECT code %s (%r), want %d" % (what, code, reason, E_AUTH))
        return "%s: REJECT %d %r, %s" % (what, code, reason, expect_closed(s, what))
    finally:
        s.close()


def attack_after_auth(port, what, hello, h, payload, must_close=True):
    """Authenticates with the run's real secret, then sends `payload` (malformed). With
    must_close False, a connection left open is only noted: a peer parks authenticated
    ring links until its engine adopts them, and only then reads them. `payload` is the
    bytes to send, or a function of the connection's Seal that makes them."""
    s = connect(port)
    try:
        key = derive_key(h.secret.encode(), hello.run)
        seal = []
        f = handshake(s, hello, key, what, seal)
        if f is None:
            return "%s: connection refused at the handshake" % what
        if f[0] == T_REJECT:
            code, reason = reject_code(f[1])
            return "%s: handshake refused: REJECT %s %r" % (what, code, reason)
        if f[0] != T_ACCEPT:
            raise ScenarioFailure("%s: the real secret was answered with frame type %d, want "
                                  "ACCEPT" % (what, f[0]))
        if callable(payload):  # frames sealed like a real member's
            payload = payload(seal[0])
        if not send_ignoring_reset(s, payload):
            return "%s: authenticated, then refused while sending" % what
        note = expect_closed(s, what, timeout_s=15.0 if must_close else 2.0,
                             required=must_close)
        if note is None:
            return "%s: authenticated; NOTE: connection still open 2 s later (parked, unread)" % what
        return "%s: authenticated, then %s" % (what, note)
    finally:
        s.close()


def server_host_tag(port, hello):
    """The host tag in the server's CHALLENGE (0: it never shares memory), or None if it
    answered no CHALLENGE. The connection ends there, before AUTH."""
    s = connect(port)
    try:
        send_ignoring_reset(s, frame(T_HELLO, hello.payload()))
        f = recv_frame(s)
    finally:
        s.close()
    if f is None or f[0] != T_CHALLENGE or len(f[1]) != CHALLENGE_LEN:
        return None
    return struct.unpack_from("<Q", f[1], 66)[0]


def shm_offer(pid, fd, size, nonce):
    return struct.pack("<IIQ", pid, fd, size) + nonce


class FakeSegment:
    """A memfd that passes every check of src/net/shm.c's starling__shm_attach but the
    nonce: sealed against shrinking and growing, 4096 + ring bytes, the segment magic and
    its ring size in the header, and a nonce that is not the one offered."""

    def __init__(self, ring=SHM_RING_MIN):
        self.ring = ring
        self.fd = os.memfd_create("it-fake-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, SHM_DATA_OFF + ring)
        os.pwrite(self.fd, b"STRLSHM1" + secrets.token_bytes(16) + struct.pack("=Q", ring), 0)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)

    def close(self):
        os.close(self.fd)


def attack_shm_refused(port, what, hello, h, offer):
    """On a same-host link (`hello` carries the peer's own host tag): authenticates, sends
    the sealed SHM_OFFER `offer` (its payload), and requires the sealed answer
    SHM_REPLY{ok 0}: the peer could not use what was offered, so the link stays on TCP
    (and is then parked unread, as any link from a stranger: not waited for here)."""
    s = connect(port)
    try:
        key = derive_key(h.secret.encode(), hello.run)
        seal = []
        f = handshake(s, hello, key, what, seal)
        if f is None or f[0] != T_ACCEPT:
            raise ScenarioFailure("%s: the real secret was not accepted: %r" % (what, f))
        if not send_ignoring_reset(s, seal[0].frame(T_SHM_OFFER, offer)):
            raise ScenarioFailure("%s: refused while sending the offer" % what)
        end = time.monotonic() + 15.0
        try:
            hdr = recv_exact(s, 8, end)
            ftype, _, _, n = struct.unpack("<BBHI", hdr) if hdr else (None, 0, 0, 0)
            rest = recv_exact(s, n + 16, end) if ftype == T_SHM_REPLY and n == 1 else None
        except ConnectionError:
            hdr = rest = None
        if hdr is None:
            raise ScenarioFailure("%s: closed without an SHM_REPLY (an offer it cannot use "
                                  "must be answered ok=0, not end the link)" % what)
        if rest is None:
            raise ScenarioFailure("%s: answered frame type %s (%d bytes), want SHM_REPLY (1)"
                                  % (what, ftype, n))
        ok = seal[0].open(hdr, rest[:1], rest[1:])
        if ok is None:
            raise ScenarioFailure("%s: the SHM_REPLY does not open under the link's key" % what)
        if ok != b"\0":
            raise ScenarioFailure("%s: SHM_REPLY ok=%d: the peer mapped a segment it had to "
                                  "refuse" % (what, ok[0]))
        return "%s: SHM_REPLY ok=0 (stays on TCP)" % what
    finally:
        s.close()


def shm_attacks(h, port, hello, rng):
    """Links that claim to come from this host (the peer's own host tag, read from its
    CHALLENGE): the peer waits for an SHM_OFFER right after ACCEPT, and must refuse a
    malformed one (closing the link) and answer ok=0 to one it cannot map. Run against
    one peer only: every peer's acceptor runs the same code, and the stream must outlast
    the attacks."""
    tag = server_host_tag(port, hello())
    if not tag:
        return ["same-host attacks skipped: the peer's CHALLENGE carries host tag %r "
                "(it shares no memory)" % tag]
    notes = ["the peer's host tag is 0x%016x" % tag]
    nonce = bytes(rng.randrange(256) for _ in range(16))
    same = dict(host=tag)
    notes.append(attack_after_auth(port, "same-host link, SHM_OFFER of a ring that is not a "
                                   "power of two", hello(**same), h,
                                   lambda sl: sl.frame(T_SHM_OFFER, shm_offer(
                                       os.getpid(), 3, SHM_RING_MIN + 4096, nonce))))
    notes.append(attack_after_auth(port, "same-host link, SHM_OFFER of a segment but pid 0",
                                   hello(**same), h, lambda sl: sl.frame(
                                       T_SHM_OFFER, shm_offer(0, 3, SHM_RING_MIN, nonce))))
    notes.append(attack_after_auth(port, "same-host link, SHM_OFFER one byte short",
                                   hello(**same), h, lambda sl: sl.frame(
                                       T_SHM_OFFER, shm_offer(0, 0, 0, nonce)[:-1])))
    notes.append(attack_after_auth(port, "same-host link, SHM_REPLY instead of SHM_OFFER",
                                   hello(**same), h, lambda sl: sl.frame(T_SHM_REPLY, b"\1")))
    notes.append(attack_after_auth(port, "same-host link, DATA instead of SHM_OFFER",
                                   hello(**same), h, frame(T_DATA, b"\1" + bytes(23))))
    notes.append(attack_after_auth(port, "same-host link, SHM_OFFER in clear (not sealed)",
                                   hello(**same), h, frame(T_SHM_OFFER, shm_offer(
                                       0, 0, 0, nonce)) + bytes(16)))
    notes.append(attack_after_auth(port, "same-host link, silent after ACCEPT",
                                   hello(**same), h, b""))
    notes.append(attack_shm_refused(port, "same-host link, SHM_OFFER of no segment (size 0)",
                                    hello(**same), h, shm_offer(0, 0, 0, bytes(16))))
    with tempfile.TemporaryFile() as f:
        f.truncate(SHM_DATA_OFF + SHM_RING_MIN)
        notes.append(attack_shm_refused(port, "same-host link, SHM_OFFER of a plain file",
                                        hello(**same), h, shm_offer(
                                            os.getpid(), f.fileno(), SHM_RING_MIN, nonce)))
    fake = FakeSegment()
    try:
        notes.append(attack_shm_refused(port, "same-host link, SHM_OFFER of a sealed segment "
                                        "with another nonce", hello(**same), h, shm_offer(
                                            os.getpid(), fake.fd, fake.ring, nonce)))
    finally:
        fake.close()
    return notes


def attacks_for(h, port, role, rng, epoch, same_host=False):
    """Runs every malformed-input attack against one listening port (with same_host, on a
    data port, the same-host link attacks too). Returns the sockets left open on purpose
    (a half-sent frame, silent connections)."""
    run = h.run.encode()
    nstreams = 1 if role == ROLE_DATA else 0

    def hello(**kw):
        args = dict(run=run, role=role, rng=rng, epoch=epoch if role == ROLE_DATA else 0,
                    nstreams=nstreams)
        args.update(kw)
        return Hello(**args)

    notes = []
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    good = hello().payload()
    notes.append(attack_close(port, "random garbage (4 KiB)", garbage))
    notes.append(attack_close(port, "all-zero bytes", b"\0" * 512))
    notes.append(attack_close(port, "HELLO header with length 0xFFFFFFFF",
                              frame(T_HELLO, garbage[:64], length=0xFFFFFFFF) + garbage[:64]))
    notes.append(attack_close(port, "HELLO header with length CTRL_MAX+1",
                              frame(T_HELLO, b"", length=CTRL_MAX + 1) + garbage[:1024]))
    notes.append(attack_close(port, "DATA header with length 0xFFFFFFFF as first frame",
                              frame(T_DATA, b"", length=0xFFFFFFFF) + garbage[:64]))
    notes.append(attack_close(port, "unknown frame type 200", frame(200, garbage[:16])))
    notes.append(attack_close(port, "frame type 0", frame(0, garbage[:16])))
    notes.append(attack_close(port, "nonzero reserved header bits",
                              frame(T_HELLO, good, reserved=0xBEEF)))
    notes.append(attack_close(port, "AUTH as the first frame", frame(T_AUTH, garbage[:32])))
    notes.append(attack_close(port, "HELLO with a bad magic", frame(T_HELLO, hello(
        magic=0xDEADBEEF).payload())))
    notes.append(attack_close(port, "HELLO one byte short", frame(T_HELLO, good[:-1])))
    notes.append(attack_close(port, "HELLO with trailing bytes", frame(T_HELLO, good + b"xx")))
    notes.append(attack_close(port, "HELLO with run length past the end",
                              frame(T_HELLO, good[:39] + b"\xff" + good[40:])))
    notes.append(attack_close(port, "HELLO with unknown role 9",
                              frame(T_HELLO, hello(role=9).payload())))
    notes.append(attack_close(port, "HELLO with unknown role 5 (the one after ROLE_DATA_REV)",
                              frame(T_HELLO, hello(role=ROLE_DATA_REV + 1).payload())))
    notes.append(attack_close(port, "HELLO with a control character in the run name",
                              frame(T_HELLO, hello(run=b"it\x01x").payload())))
    if role == ROLE_DATA:
        notes.append(attack_close(port, "data HELLO with nstreams 0",
                                  frame(T_HELLO, hello(nstreams=0).payload())))
        notes.append(attack_close(port, "data HELLO with stream >= nstreams",
                                  frame(T_HELLO, hello(stream=3, nstreams=2).payload())))
        notes.append(attack_close(port, "reversed data HELLO with nstreams 0",
                                  frame(T_HELLO, hello(role=ROLE_DATA_REV,
                                                       nstreams=0).payload())))
        notes.append(attack_close(port, "reversed data HELLO with stream >= nstreams",
                                  frame(T_HELLO, hello(role=ROLE_DATA_REV, stream=2,
                                                       nstreams=2).payload())))
    for v in (0, PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 0xFFFF):
        notes.append(attack_reject(port, "HELLO with protocol version %d" % v, hello(version=v),
                                   E_VERSION))
    notes.append(attack_reject(port, "HELLO for another run", hello(run=b"not-" + run[:50]),
                               E_AUTH))
    notes.append(attack_wrong_secret(port, "correct HELLO, wrong secret", hello(), h))
    # Authenticated (the driver knows the secret), then malformed frames.
    if role == ROLE_CONTROL:
        reg_huge = struct.pack("<Q", 1234567) + pstr(b"evil") + pstr(b"127.0.0.1") + \
            struct.pack("<HIQI", 9, 1, 5, 0xFFFFFFFF)
        notes.append(attack_after_auth(port, "authenticated, REGISTER with 2^32-1 members",
                                       hello(), h, lambda sl: sl.frame(T_REGISTER, reg_huge)))
        notes.append(attack_after_auth(port, "authenticated, REGISTER in clear (not sealed)",
                                       hello(), h, frame(T_REGISTER, reg_huge) + garbage[:64]))
        # Port 0 is no longer malformed (protocol v5: a peer that accepts no inbound
        # connections); min_peers 0 still is. The HELLO names the REGISTER's peer, so that
        # the decoder's refusal, not the id mismatch, is what closes the connection.
        reg_min0 = struct.pack("<Q", 1234567) + pstr(b"evil") + pstr(b"127.0.0.1") + \
            struct.pack("<HIQI", 9, 0, 0, 0)
        notes.append(attack_after_auth(port, "authenticated, REGISTER with min_peers 0",
                                       hello(peer_id=1234567), h,
                                       lambda sl: sl.frame(T_REGISTER, reg_min0)))
        notes.append(attack_after_auth(port, "authenticated, control frame of CTRL_MAX+1 bytes",
                                       hello(), h, frame(T_TOPO_REQ, b"", length=CTRL_MAX + 1)
                                       + garbage[:256]))
        notes.append(attack_after_auth(port, "authenticated, REGISTER cut short",
                                       hello(), h, lambda sl: sl.frame(T_REGISTER, reg_huge[:7])))
    else:
        # A link from an unknown peer id for the current epoch: the peer may park it
        # unread, so closing is not required; the run must not notice.
        notes.append(attack_after_auth(port, "authenticated link, DATA frame of 4 GiB",
                                       hello(), h, frame(T_DATA, b"", length=0xFFFFFFFF)
                                       + garbage[:256], must_close=False))
        notes.append(attack_after_auth(port, "authenticated link, DATA frame shorter than its "
                                       "header", hello(), h, frame(T_DATA, garbage[:8]),
                                       must_close=False))
        notes.append(attack_after_auth(port, "authenticated link, garbage",
                                       hello(), h, garbage, must_close=False))
        if same_host:
            notes += shm_attacks(h, port, hello, rng)
        # Link probes (docs/protocol.md): a stranger is not answered; one claiming a later
        # epoch is, but a count outside 64 KiB..256 MiB ends it.
        probe = dict(run=run, rng=rng, role=ROLE_PROBE)
        notes.append(attack_after_auth(port, "link probe from a peer of no epoch",
                                       Hello(**probe), h,
                                       lambda sl: sl.record(struct.pack("<Q", 1 << 20))))
        notes.append(attack_after_auth(port, "link probe of 2^40 bytes",
                                       Hello(epoch=epoch + 1, **probe), h,
                                       lambda sl: sl.record(struct.pack("<Q", 1 << 40))))
        notes.append(attack_after_auth(port, "link probe of 1 byte",
                                       Hello(epoch=epoch + 1, **probe), h,
                                       lambda sl: sl.record(struct.pack("<Q", 1)) + b"x"))
        notes.append(attack_after_auth(port, "link probe count with a forged tag",
                                       Hello(epoch=epoch + 1, **probe), h,
                                       lambda sl: flip_last(sl.record(struct.pack("<Q", 1 << 20)))))
    s = connect(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    notes.append("connect, then reset: sent")
    # Left open on purpose while the run goes on: a half-sent HELLO and silent sockets.
    held = []
    s = connect(port)
    send_ignoring_reset(s, frame(T_HELLO, good)[:20])
    held.append(s)
    for _ in range(3):
        held.append(connect(port))
    for _ in range(20):
        connect(port).close()
    return notes, held


def scenario_bad_input(h):
    n = 3
    h.start_coordinator(n, extra=coord_args(h))
    ports = [free_port() for _ in range(n)]
    peers = start_stream(h, n, listen_ports=ports)
    target = h.rng.randrange(20, 60)
    log("seed %d: attacks start at iteration %d; peer data ports %s" % (h.seed, target, ports))
    wait_progress(h, peers, target, "attack point")
    rng = random.Random(h.seed ^ 0x5EED)
    epoch = parse_iters(peers[0])[-1][2]
    targets = [("coordinator", h.coord_port, ROLE_CONTROL)] + \
        [("p%d data port" % i, ports[i], ROLE_DATA) for i in range(n)]
    held = []
    try:
        for k, (name, port, role) in enumerate(targets):
            notes, more = attacks_for(h, port, role, rng, epoch, same_host=k == 1)
            held += more
            for note in notes:
                log("  %s: %s" % (name, note))
            h.check_health()
        # A real client with the wrong secret is refused cleanly by the coordinator while
        # the half-open connections are still held: it still accepts and answers.
        bad = h.start_peer("badauth", "badauth", ["--min-peers", str(n)],
                           secret=secrets.token_hex(16), deadline_s=60)
        h.wait_exit([bad], 60)
        if "AUTH refused" not in "\n".join(bad.stdout_lines()):
            raise ScenarioFailure("badauth peer did not report a refusal")
        log("coordinator refused a real client with a wrong secret after the attacks")
        if any(p.poll() is not None for p in peers):
            raise ScenarioFailure("the stream ended before the attacks were over (raise "
                                  "--max-iters)")
        # The run goes on with the half-open connections still held.
        wait_progress(h, peers, max(last_iter(p) for p in peers) + 24, "progress after attacks")
        stop_stream(h, peers, "attacks done")
    finally:
        for s in held:
            s.close()
    h.wait_exit(peers, h.args.timeout - 20)
    check_equal_hashes(peers)
    agreed = check_stream(peers)
    if any(s != n for s, _ in agreed.values()):
        raise ScenarioFailure("bad input disturbed the membership: sizes %s"
                              % sorted(set(s for s, _ in agreed.values())))
    for p in peers:
        if count_peer_lost(p):
            raise ScenarioFailure("%s lost a peer during the attacks (%d times)"
                                  % (p.name, count_peer_lost(p)))
    # The coordinator still accepts connections and answers a handshake.
    s = connect(h.coord_port)
    try:
        f = handshake(s, Hello(h.run.encode(), ROLE_CONTROL, rng), derive_key(
            h.secret.encode(), h.run.encode()), "final handshake")
        if f is None or f[0] != T_ACCEPT:
            raise ScenarioFailure("after the run the coordinator did not ACCEPT a correct "
                                  "handshake: %r" % (f,))
    finally:
        s.close()
    log("coordinator accepted a correct handshake at the end")
    h.stop_coordinator()


class SlowClients(threading.Thread):
    """Keeps opening connections that never finish a handshake (silent, or half a HELLO),
    one per port every `interval_s`, and holds them all until stopped (at most `cap` per
    port). A server whose handshakes are served one at a time, each up to its deadline,
    falls behind for good: legitimate connections queue behind these forever."""

    def __init__(self, h, ports, interval_s=0.5, cap=120):
        super().__init__(daemon=True)
        self.h, self.ports, self.interval_s, self.cap = h, ports, interval_s, cap
        self.stop_event = threading.Event()
        self.socks = []
        self.opened = 0
        self.failed = 0

    def run(self):
        half = frame(T_HELLO, Hello(self.h.run.encode(), ROLE_CONTROL,
                                    random.Random(1)).payload())[:20]
        n = 0
        while not self.stop_event.is_set() and n < self.cap:
            for port in self.ports:
                try:
                    s = socket.create_connection((HOST, port), timeout=2)
                    if n % 2:
                        s.sendall(half)
                    self.socks.append(s)
                    self.opened += 1
                except OSError:
                    self.failed += 1
            n += 1
            self.stop_event.wait(self.interval_s)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=10)
        for s in self.socks:
            s.close()
        self.socks = []


def scenario_slow_clients(h):
    """3 peers stream while silent and half-finished connections keep arriving at the
    coordinator and at every data port; meanwhile a 4th peer joins (new connections to
    the coordinator, new ring links): the join must still go through."""
    n = 3
    h.start_coordinator(n, extra=coord_args(h))
    ports = [free_port() for _ in range(n)]
    peers = start_stream(h, n, listen_ports=ports)
    wait_progress(h, peers, 20, "start")
    slow = SlowClients(h, [h.coord_port] + ports)
    slow.start()
    try:
        time.sleep(3)  # let a queue of slow clients build up
        log("slow clients: %d connections open" % slow.opened)
        bad = h.start_peer("badauth", "badauth", ["--min-peers", str(n)],
                           secret=secrets.token_hex(16), deadline_s=90)
        joiner = h.start_peer("p3", "stream", stream_args(h, n, ["--join"]))
        everyone = peers + [joiner]
        h.wait_until("the joiner to be admitted while slow clients keep arriving",
                     lambda: kv_line(joiner, "JOINED") is not None, 90)
        join_iter = int(kv_line(joiner, "JOINED")["iter"])
        log("joiner admitted at iteration %d; slow clients: %d opened" % (join_iter,
                                                                         slow.opened))
        wait_progress(h, everyone, join_iter + 40, "progress with 4 members")
        h.wait_exit([bad], 90)
        if "AUTH refused" not in "\n".join(bad.stdout_lines()):
            raise ScenarioFailure("badauth peer did not report a refusal")
        stop_stream(h, everyone, "ran 40 iterations with the joiner")
    finally:
        slow.stop()
    h.wait_exit(everyone, h.args.timeout - 20)
    check_equal_hashes(everyone)
    agreed = check_stream(everyone, {"p3": join_iter})
    for i, (sz, _) in agreed.items():
        if sz != (4 if i >= join_iter else 3):
            raise ScenarioFailure("iteration %d ran with %d members (joined at %d)"
                                  % (i, sz, join_iter))
    h.stop_coordinator()


SCENARIOS = {
    "loopback-2": lambda h: scenario_loopback(h, 2),
    "loopback-3": lambda h: scenario_loopback(h, 3),
    "loopback-4": lambda h: scenario_loopback(h, 4),
    "loopback-5": lambda h: scenario_loopback(h, 5),
    "loopback-8": lambda h: scenario_loopback(h, 8),
    "big": lambda h: scenario_big(h, 2),
    "big-4": lambda h: scenario_big(h, 4),
    "kill": lambda h: scenario_fault(h, "kill"),
    "freeze": lambda h: scenario_fault(h, "freeze"),
    "coord-restart": scenario_coord_restart,
    "coord-failover": scenario_coord_failover,
    "coord-failover-kill": scenario_coord_failover_kill,
    "join": scenario_join,
    "bad-input": scenario_bad_input,
    "slow-clients": scenario_slow_clients,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--seed", type=int)
    ap.add_argument("--timeout", type=float, default=240,
                    help="deadline of each process, seconds (keep below the ctest TIMEOUT)")
    ap.add_argument("--max-iters", type=int, default=5000,
                    help="upper bound of stream iterations (the driver stops them earlier)")
    ap.add_argument("--count", type=int, default=65536, help="floats per stream all-reduce")
    ap.add_argument("--sleep-ms", type=int, default=5, help="pause between stream iterations")
    ap.add_argument("--timeout-ms", type=int, default=0,
                    help="failure-detection timeout of coordinator and stream peers "
                    "(default %d)" % DEFAULT_DETECT_MS)
    ap.add_argument("--big-bytes", type=int, default=268435456)
    ap.add_argument("--peer-arg", action="append", default=[],
                    help="extra argument for every itest_peer (repeat), e.g. --peer-arg=--log-level "
                    "--peer-arg=debug")
    ap.add_argument("--keep", action="store_true", help="keep the log directory on success")
    args = ap.parse_args()

    h = None
    ok = False
    try:
        h = Harness(args)
        log("scenario %s, seed %d, logs in %s" % (args.scenario, h.seed, h.tmpdir))
        SCENARIOS[args.scenario](h)
        ok = True
        log("PASS %s (seed %d)" % (args.scenario, h.seed))
    except ScenarioFailure as e:
        if h is None:
            print("run_scenario: %s" % e, flush=True)
        else:
            h.report(str(e))
    except BaseException as e:  # KeyboardInterrupt, bugs in this driver
        if h is not None:
            h.report("%s: %s" % (e.__class__.__name__, e))
        raise
    finally:
        if h is not None:
            h.kill_all()
            if ok and not args.keep:
                shutil.rmtree(h.tmpdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
