#!/usr/bin/env python3
"""cli_driver.py -- runs the real `starling` binary and checks its command line.

    cli_driver.py STARLING TOOLS_DIR help     every command's --help, -h and `help CMD`:
                                              exit 0, a usage line, every option of its
                                              table (read from the source in TOOLS_DIR),
                                              and every option it lists is accepted
    cli_driver.py STARLING TOOLS_DIR errors   typos get the right suggestion, a missing
                                              value is refused, negative numbers stay
                                              values, --name=VALUE works; exit 2 each
    cli_driver.py STARLING TOOLS_DIR run      a tiny `starling run` with options in both
                                              forms completes, hashes equal

Nothing here asserts on time; every process runs under a time-out.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

STARLING, TOOLS, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
FAILS = []

# Each command line that has a --help, and the source file holding its option table.
COMMANDS = [
    (["run"], "cmd_run_opts.c"),
    (["coordinator"], "cmd_coord.c"),
    (["bench"], "cmd_bench.c"),
    (["bench", "allreduce"], "cmd_bench.c"),
    (["bench", "latency"], "cmd_bench.c"),
    (["bench", "codec"], "cmd_bench_codec.c"),
    (["demo"], "cmd_demo.c"),
    (["bench-peer"], "cmd_bench_peer.c"),
    (["demo-peer"], "cmd_demo_peer.c"),
    (["run-peer"], "cmd_run_peer.c"),
]
# A few options each table must have, so that a broken source scan cannot pass silently.
MUST = {
    "run": ["--peers", "--steps", "--algo", "--kill", "--freeze", "--join", "--set", "--json",
            "--security"],
    "coordinator": ["--listen", "--run", "--secret-file", "--ring-order", "--security"],
    "bench": ["--peers", "--bytes", "--iters", "--compress", "--security"],
    "bench codec": ["--count", "--data", "--reference"],
    "demo": ["--peers", "--steps", "--elements", "--security"],
    "bench-peer": ["--coord", "--report-fd", "--security"],
    "demo-peer": ["--coord", "--joiner", "--security"],
    "run-peer": ["--coord", "--set", "--joiner", "--security"],
}


def fail(msg):
    FAILS.append(msg)
    print("FAIL:", msg, file=sys.stderr)


def run(args, timeout=60, env=None):
    p = subprocess.run([STARLING] + args, capture_output=True, text=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout, p.stderr


def table_options(src):
    text = open(os.path.join(TOOLS, src)).read()
    return re.findall(r'CLI_OPT_(?:VALUE|FLAG|LIST)\(\s*"(--[a-z0-9-]+)"', text)


def mentions(text, opt):
    return re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", text) is not None


def help_mode():
    for words, src in COMMANDS:
        name = " ".join(words)
        opts = table_options(src)
        for must in MUST.get(name if name not in ("bench allreduce", "bench latency") else "bench", []):
            if must not in opts:
                fail(f"{src}: option {must} not found in the table (source scan broken?)")
        outputs = []
        for form in (words + ["--help"], words + ["-h"], ["help"] + words):
            rc, out, err = run(form)
            what = "starling " + " ".join(form)
            if rc != 0:
                fail(f"{what}: exit {rc}, expected 0; stderr: {err.strip()}")
                continue
            if err:
                fail(f"{what}: wrote to stderr: {err.strip()}")
            if not out.startswith("usage: starling " + name):
                fail(f"{what}: does not start with 'usage: starling {name}': {out[:80]!r}")
            if not mentions(out, "--help"):
                fail(f"{what}: does not list --help")
            for o in opts:
                if not mentions(out, o):
                    fail(f"{what}: does not mention {o}")
            outputs.append(out)
        if len(set(outputs)) > 1:
            fail(f"starling {name}: --help, -h and 'help {name}' differ")
        if not outputs:
            continue
        # Every option the help lists is one the parser accepts: followed by a bogus
        # option, the parser must complain about the bogus one, not the listed one.
        listed = re.findall(r"^  (--[a-z0-9-]+)( \S+)?", outputs[0], re.M)
        if len(listed) != len(opts):
            fail(f"starling {name} --help lists {len(listed)} options, its table has {len(opts)}")
        prefix = ["bench", "allreduce"] if words == ["bench"] else list(words)
        if words == ["bench", "codec"]:
            prefix.append("int8")
        for opt, arg in listed:
            args = prefix + ([opt + "=x"] if arg else [opt]) + ["--zzz-not-an-option"]
            rc, out, err = run(args)
            if rc != 2 or "unknown option '--zzz-not-an-option'" not in err:
                fail(f"starling {' '.join(args)}: exit {rc}, stderr {err.strip()!r}: "
                     f"{opt} listed by --help but not parsed")
        print(f"ok: starling {name} --help ({len(opts)} options)")

    for form in (["--help"], ["-h"], ["help"]):
        rc, out, err = run(form)
        if rc != 0 or not out.startswith("usage: starling"):
            fail(f"starling {' '.join(form)}: exit {rc}")
        for cmd in ("run", "coordinator", "bench", "demo", "help", "--version"):
            if not mentions(out, cmd):
                fail(f"starling {' '.join(form)}: does not list {cmd}")
        for hidden in ("run-peer", "bench-peer", "demo-peer"):
            if hidden in out:
                fail(f"starling {' '.join(form)}: lists the internal command {hidden}")
    print("ok: starling --help")


def expect_usage(args, want, unwanted=None):
    """Exit 2, `want` on stderr (a line of it), nothing on stdout."""
    rc, out, err = run(args)
    what = "starling " + " ".join(args)
    if rc != 2:
        fail(f"{what}: exit {rc}, expected 2; stderr {err.strip()!r}")
    elif want not in err:
        fail(f"{what}: stderr lacks {want!r}: {err.strip()!r}")
    elif unwanted and unwanted in err:
        fail(f"{what}: stderr has {unwanted!r}: {err.strip()!r}")
    elif out:
        fail(f"{what}: wrote to stdout: {out[:200]!r}")
    else:
        print(f"ok: {what} -> {err.splitlines()[0]}")


def errors_mode():
    # Typos: the nearest option or command.
    expect_usage(["run", "--step", "10"],
                 "starling run: unknown option '--step' (did you mean '--steps'?)")
    expect_usage(["run", "--stesp", "10"], "(did you mean '--steps'?)")
    expect_usage(["run", "-peers", "3"], "unknown option '-peers' (did you mean '--peers'?)")
    expect_usage(["run", "--peers=3", "--jsno"], "unknown option '--jsno' (did you mean '--json'?)")
    expect_usage(["run", "--hlep"], "(did you mean '--help'?)")
    expect_usage(["run", "--zzzz"], "unknown option '--zzzz'", unwanted="did you mean")
    expect_usage(["coordinator", "--listn", "127.0.0.1:0"], "(did you mean '--listen'?)")
    expect_usage(["demo", "--peer", "3"], "starling demo: unknown option '--peer' (did you mean '--peers'?)")
    expect_usage(["bench", "allreduce", "--byte", "4"], "starling bench allreduce: unknown option '--byte' (did you mean '--bytes'?)")
    expect_usage(["bench", "codec", "int8", "--cuont", "4"], "starling bench codec: unknown option '--cuont' (did you mean '--count'?)")
    expect_usage(["bench", "allreduc"], "unknown benchmark 'allreduc' (did you mean 'allreduce'?)")
    expect_usage(["run-peer", "--cord", "x"], "starling run-peer: unknown option '--cord' (did you mean '--coord'?)")
    expect_usage(["rnu"], "starling: unknown command 'rnu' (did you mean 'run'?)")
    expect_usage(["bnech"], "starling: unknown command 'bnech' (did you mean 'bench'?)")
    expect_usage(["help", "dmeo"], "starling: unknown command 'dmeo' (did you mean 'demo'?)")
    expect_usage(["train"], "starling: unknown command 'train'", unwanted="did you mean")
    expect_usage(["--hepl"], "starling: unknown option '--hepl' (did you mean '--help'?)")
    expect_usage(["run", "--step", "10"], "run 'starling run --help' for usage")

    # A forgotten value: the next option is not taken as the value.
    expect_usage(["run", "--peers", "--steps", "10"],
                 "starling run: option '--peers' needs a value (got option '--steps')")
    expect_usage(["coordinator", "--listen", "--run", "x"],
                 "starling coordinator: option '--listen' needs a value (got option '--run')")
    expect_usage(["run", "--kill", "--no-faults"],
                 "option '--kill' needs a value (got option '--no-faults')")
    expect_usage(["run", "--out", "--"], "option '--out' needs a value (got '--')")
    expect_usage(["run", "--peers"], "option '--peers' needs a value")
    expect_usage(["run", "--peers="], "option --peers needs a non-empty value")
    expect_usage(["run", "--json=1"], "option --json takes no value")
    expect_usage(["run", "--peers", "2", "--peers=3"], "option --peers given twice")
    expect_usage(["run", "extra"], "unexpected argument 'extra'")
    # Negative numbers stay values, and are then range-checked.
    expect_usage(["run", "--peers", "-1"], "--peers: expected an integer in 1..64, got '-1'")
    expect_usage(["run", "--steps", "-5"], "--steps: expected an integer in 1..100000000, got '-5'")
    expect_usage(["demo", "--step-ms", "-0.5"], "--step-ms: expected an integer in 0..10000, got '-0.5'")
    # --name=VALUE: the value is checked like a separate one.
    expect_usage(["run", "--peers=0"], "--peers: expected an integer in 1..64, got '0'")
    expect_usage(["run", "--algo=sgd"], "--algo: expected ddp, diloco or streaming, got 'sgd'")
    # A security mode not among the three names, refused before anything starts.
    bogus = "--security: expected aead, chacha20 or none, got 'bogus'"
    expect_usage(["run", "--security", "bogus"], "starling run: " + bogus)
    expect_usage(["run", "--security=AEAD"], "--security: expected aead, chacha20 or none, got 'AEAD'")
    expect_usage(["coordinator", "--listen", "127.0.0.1:0", "--run", "x", "--security", "bogus"],
                 "starling coordinator: " + bogus)
    expect_usage(["bench", "allreduce", "--peers", "2", "--bytes", "4", "--iters", "1",
                  "--security", "bogus"], "starling bench allreduce: " + bogus)
    expect_usage(["demo", "--security", "bogus"], "starling demo: " + bogus)
    expect_usage(["bench-peer", "--coord", "127.0.0.1:1", "--run", "x", "--index", "0",
                  "--peers", "1", "--bytes", "4", "--iters", "1", "--security", "bogus"],
                 "starling bench-peer: " + bogus)
    expect_usage(["run-peer", "--coord", "127.0.0.1:1", "--run", "x", "--index", "0",
                  "--peers", "1", "--eval-every", "1", "--security", "bogus"],
                 "starling run-peer: " + bogus)
    expect_usage(["demo-peer", "--coord", "127.0.0.1:1", "--run", "x", "--index", "0",
                  "--peers", "1", "--steps", "1", "--elements", "1", "--join-step", "1",
                  "--security", "bogus"], "starling demo-peer: " + bogus)
    expect_usage(["run", "--securty", "none"], "(did you mean '--security'?)")
    # Stragglers: RANK:FACTOR, a starting peer, a factor in [1, 100], once per peer.
    expect_usage(["run", "--slow", "1"], "--slow: expected RANK:FACTOR (e.g. 1:3), got '1'")
    expect_usage(["run", "--slow", "x:2"], "--slow: expected RANK:FACTOR (e.g. 1:3), got 'x:2'")
    expect_usage(["run", "--slow", "4:2"], "--slow: RANK 4 is not a starting peer (0..3)")
    expect_usage(["run", "--slow", "1:0.5"], "--slow: FACTOR in '1:0.5' must be a number in [1, 100]")
    expect_usage(["run", "--slow", "1:3x"], "--slow: FACTOR in '1:3x' must be a number in [1, 100]")
    expect_usage(["run", "--slow", "1:2", "--slow", "1:3"], "--slow: peer 1 is given twice")
    expect_usage(["run", "--set", "round_deadline=soon"],
                 "round_deadline: expected off, auto, auto:F (F in [1, 10]) or seconds in (0, 86400], got \"soon\"")


def run_mode():
    with tempfile.TemporaryDirectory(prefix="starling-cli-test.") as tmp:
        out = os.path.join(tmp, "out")
        # Both forms, "--name VALUE" and "--name=VALUE"; --data synthetic keeps it small
        # and independent of the Fashion-MNIST package.
        args = ["run", "--peers=2", "--algo", "ddp", "--steps=30", "--hidden=16",
                "--batch", "16", "--data=synthetic:500", "--no-faults", "--eval-every=10",
                "--deadline-s", "150", "--slow", "1:2", "--out=" + out, "--json"]
        rc, stdout, err = run(args, timeout=170)
        what = "starling " + " ".join(args)
        if rc != 0:
            fail(f"{what}: exit {rc}\n{stdout}\n{err}")
            return
        try:
            s = json.load(open(os.path.join(out, "summary.json")))
        except (OSError, ValueError) as e:
            fail(f"{what}: summary.json: {e}")
            return
        checks = [
            (s.get("hashes_agree") is True, "hashes_agree"),
            (s.get("completed") is True, "completed"),
            (s.get("peers") == 2 and s.get("peers_alive") == 2, "2 peers, both alive"),
            (s.get("steps") == 30 and s.get("algo") == "ddp", "steps 30, ddp"),
            (s.get("options", {}).get("hidden") == "16", "--hidden=16 reached the trainer"),
            (s.get("options", {}).get("batch") == "16", "--batch 16 reached the trainer"),
            (s.get("data") == "synthetic", "synthetic data"),
            (s.get("local_steps") == {"peer-0": 30, "peer-1": 30}, "every step computed (ddp waits)"),
            (s.get("rounds_cut") == {"peer-0": 0, "peer-1": 0}, "no round cut"),
            (stdout.strip().splitlines()[-1] == open(os.path.join(out, "summary.json")).read().strip(),
             "--json: the summary is the last line of stdout"),
        ]
        for ok, name in checks:
            if not ok:
                fail(f"{what}: {name}: {json.dumps(s)}")
        if os.path.exists(os.path.join(out, "metrics.csv")):
            print(f"ok: {what}")
        else:
            fail(f"{what}: no metrics.csv")


{"help": help_mode, "errors": errors_mode, "run": run_mode}[MODE]()
if FAILS:
    print(f"{len(FAILS)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("all checks passed")
