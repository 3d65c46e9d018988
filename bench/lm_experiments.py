#!/usr/bin/python3
"""Issue 13's language-model experiments: the GPT of starling.models on the fortunes
corpus, 4 processes on the namespace bed (4 hosts, 100 Mbit/s tbf links), trained by DDP
(gloo and starling), DiLoCo, Streaming DiLoCo and sparse quantized outer gradients, one
run after the other (they are CPU-bound: running them together would make every wall
time meaningless). Writes a markdown table, the targets met or not, and two plots (eval
loss against bytes sent and against wall-clock time).

    bench/lm_experiments.py [--only NAME,...] [--steps 600] [--seed 0] [--hosts 4]
                            [--rate 100mbit] [--model small|default] [--update-docs]
                            [--report-only] [--work DIR] [--list]

Each run is `bench/lm_bed.sh` with the run's bench/lm_train.py options; its directory
under --work (default build/bench/lm_experiments/NAME) keeps the processes' logs and the
evaluating rank's result.json. --report-only rebuilds the table and plots from the runs
already there. --update-docs puts the table into docs/results.md between
<!-- lm_experiments:begin --> and <!-- lm_experiments:end --> and the plots into
docs/img/. --model small (the default here: depth 4, width 192, 4 heads, context 64,
1.84 M parameters, ~0.5 s per step for 4 processes on 2 cores) or default (the
10.8 M-parameter GPTConfig(), ~4 s per step: hours per run on this machine); tiny
(depth 1, width 32: a smoke test of the driver, seconds per run).

Bytes are what the evaluating rank (rank 0) sent: Communicator.bytes_sent() for the
starling algorithms; for ddp-gloo an estimate, 2(n-1)/n * 4 * params per step (gloo counts
nothing). "Peak" is the most bytes rank 0 sent in one step. "To DDP's loss" is the wall
time of the first evaluation at or below ddp-gloo's final eval loss.

Exit status 0 when every run ran (targets met or not: they are reported); 1 when a run
failed; 2 on a usage error.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = {"tiny": ["--depth", "1", "--width", "32", "--heads", "2", "--context", "16"],
          "small": ["--depth", "4", "--width", "192", "--heads", "4", "--context", "64"],
          "default": ["--depth", "6", "--width", "384", "--heads", "6", "--context", "128"]}


def runs(steps):
    """name -> (lm_train.py options, lm_bed.sh options, what the row shows)."""
    r = {"ddp-gloo": (["--algo", "ddp-gloo"], [], "DDP over gloo (the reference)"),
         "ddp-starling": (["--algo", "ddp-starling"], [], "DDP over the starling backend")}
    for h in (50, 100):
        for codec in ("none", "int8", "int4"):
            r[f"diloco-H{h}-{codec}"] = (
                ["--algo", "diloco", "--inner-steps", str(h), "--codec", codec], [],
                f"DiLoCo H={h}, {codec}")
    for codec in ("none", "int8", "int4", "fp4"):
        r[f"streaming-H100-P4-{codec}"] = (
            ["--algo", "streaming", "--inner-steps", "100", "--fragments", "4", "--overlap",
             "1", "--alpha", "0.5", "--codec", codec], [],
            f"Streaming DiLoCo H=100, P=4, tau=1, alpha=0.5, {codec}")
    for spec in ("topk:0.03:bits=4+ef", "topk:0.02:bits=2+ef"):
        short = spec.replace(":", "").replace("=", "").replace("+", "")
        r[f"diloco-H100-{short}"] = (
            ["--algo", "diloco", "--inner-steps", "100", "--codec", spec], [],
            f"DiLoCo H=100, {spec}")
    # SparseLoCo's outer step: the error feedback is the momentum, the update applied as is
    r["diloco-H100-topk0.03bits4ef-sgd"] = (
        ["--algo", "diloco", "--inner-steps", "100", "--codec", "topk:0.03:bits=4+ef",
         "--outer-lr", "1", "--outer-momentum", "0"], [],
        "DiLoCo H=100, topk:0.03:bits=4+ef, outer SGD lr 1 without momentum")
    # as long as it takes to reach DDP's final loss, if it does: the wall-clock target
    r["diloco-H100-int8-x4"] = (
        ["--algo", "diloco", "--inner-steps", "100", "--codec", "int8", "--steps",
         str(4 * steps)], [], f"DiLoCo H=100, int8, {4 * steps} steps (4x)")
    at = str(int(steps * 0.4))
    r["diloco-H100-int8-kill"] = (
        ["--algo", "diloco", "--inner-steps", "100", "--codec", "int8", "--kill-rank", "2",
         "--kill-step", at], ["--expect-lost", "2"],
        f"DiLoCo H=100, int8, rank 2 SIGKILLed at step {at}")
    r["diloco-H100-int8-freeze"] = (
        ["--algo", "diloco", "--inner-steps", "100", "--codec", "int8", "--freeze-rank", "2",
         "--freeze-step", at, "--freeze-seconds", "30"], ["--expect-lost", "2"],
        f"DiLoCo H=100, int8, rank 2 SIGSTOPped at step {at} (lost after the 3 s timeout)")
    # every fault in one run: a kill, a newcomer admitted at the next round end after the
    # evaluation at 1/3 of the run, a freeze (lost after the 3 s timeout)
    kill, join, freeze = steps // 5, steps // 3 // 100 * 100, steps * 7 // 10
    r["diloco-H100-int8-faults"] = (
        ["--algo", "diloco", "--inner-steps", "100", "--codec", "int8", "--update-every", "1",
         "--kill-rank", "3", "--kill-step", str(kill), "--freeze-rank", "2", "--freeze-step",
         str(freeze), "--freeze-seconds", "30"],
        ["--expect-lost", "2,3", "--newcomer-at", str(join)],
        f"DiLoCo H=100, int8: rank 3 SIGKILLed at step {kill}, a newcomer started after "
        f"step {join}, rank 2 SIGSTOPped at step {freeze}")
    return r


CORE = ["ddp-gloo", "ddp-starling", "diloco-H50-int8", "diloco-H100-int8", "streaming-H100-P4-int4",
        "diloco-H100-topk0.03bits4ef", "diloco-H100-topk0.03bits4ef-sgd",
        "diloco-H100-int8-faults", "diloco-H100-int8-x4"]


def run_one(args, name, opts, bed_opts, work):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    cmd = ["bash", os.path.join(HERE, "lm_bed.sh"), "--out-dir", d, "--hosts", str(args.hosts),
           "--rate", args.rate, "--name", "lmexp", "--timeout", str(args.run_timeout)]
    # the row's options last: they may override the common ones (--steps)
    cmd += bed_opts + ["--"] + MODELS[args.model] + [
        "--steps", str(args.steps), "--batch", "8", "--seed", str(args.seed),
        "--eval-every", str(args.eval_every), "--timeout-ms", "3000"] + opts
    with open(os.path.join(d, "command"), "w") as f:
        f.write(" ".join(cmd) + "\n")
    print(f"lm_experiments: {name} ...", file=sys.stderr, flush=True)
    rc = subprocess.call(cmd)
    if rc != 0 or not os.path.exists(os.path.join(d, "result.json")):
        print(f"lm_experiments: {name} failed (exit {rc}); logs in {d}", file=sys.stderr)
        return False
    return True


def load(work, name):
    try:
        with open(os.path.join(work, name, "result.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def survivors(work, name):
    """{rank: params hash} from the `lm_train: rank N done: ... params H` lines of the
    processes that finished."""
    out = {}
    d = os.path.join(work, name)
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if not (f.startswith("peer.") and f.endswith(".out")):
            continue
        with open(os.path.join(d, f), errors="replace") as fh:
            for line in fh:
                m = re.match(r"lm_train: rank (\d+) done: .* params ([0-9a-f]+),", line)
                if m:
                    out[int(m.group(1))] = m.group(2)
    return out


def hashes_cell(work, name):
    h = survivors(work, name)
    if not h:
        return "?"
    same = len(set(h.values())) == 1
    return (f"{len(h)} finished, hashes {'equal' if same else '**differ**'} "
            f"({next(iter(h.values()))[:12]}{'' if same else ', ...'})")


def mib(b):
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


def report(args, table_runs, work):
    res = {n: load(work, n) for n in table_runs}
    res = {n: r for n, r in res.items() if r and r.get("points")}
    if not res:
        return None, []
    ref = res.get("ddp-gloo")
    ref_loss = ref["points"][-1]["eval_loss"] if ref else None
    ref_bytes = ref["points"][-1]["bytes_sent"] if ref else None
    ref_wall = ref["points"][-1]["wall_s"] if ref else None
    ref_peak = None
    lines = ["| run | final eval loss | vs DDP (gloo) | bytes sent by rank 0 | fewer bytes "
             "than DDP | peak bytes in a step | wall time | to DDP's final loss | members at "
             "the end | processes finished, their parameters |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    rows = {}
    specs = runs(args.steps)
    for n in table_runs:
        r = res.get(n)
        if not r:
            continue
        last = r["points"][-1]
        loss, b, wall = last["eval_loss"], last["bytes_sent"], last["wall_s"]
        reach = next((p["wall_s"] for p in r["points"] if ref_loss is not None
                      and p["eval_loss"] <= ref_loss), None)
        rel = (loss / ref_loss - 1) * 100 if ref_loss else None
        fewer = ref_bytes / b if ref_bytes and b else None
        rows[n] = dict(loss=loss, rel=rel, fewer=fewer, peak=r.get("peak_step_bytes", 0),
                       wall=wall, reach=reach)
        if n == "diloco-H100-int8":
            ref_peak = r.get("peak_step_bytes")
        fin = r.get("final", {})
        lines.append(
            f"| {specs[n][2] if n in specs else n} | {loss:.4f} | "
            f"{'' if rel is None else f'{rel:+.2f} %'} | {mib(b)}"
            f"{' (est.)' if 'estimate' in r.get('bytes_sent_source', '') else ''} | "
            f"{'' if fewer is None else f'{fewer:.0f}x'} | {mib(r.get('peak_step_bytes', 0))} | "
            f"{wall:.0f} s | {'not reached' if reach is None else f'{reach:.0f} s'}"
            f"{'' if reach is None or not ref_wall else f' ({ref_wall / reach:.1f}x faster)'} | "
            f"{fin.get('members', '?')} | {hashes_cell(work, n)} |")
    first = next(iter(res.values()))
    meta = (f"{first['world']} processes on the namespace bed ({args.hosts} hosts, tbf "
            f"{args.rate} each way), model {first['model']} ({first['params']:,} parameters), "
            f"batch 8 per process, {args.steps} steps, AdamW inner lr {first['args']['lr']}, "
            f"seed {args.seed}, corpus {first['corpus']}; `bench/lm_experiments.py "
            f"--model {args.model} --steps {args.steps} --seed {args.seed}`.")
    targets = []

    def target(what, names, cond):
        have = [rows[n] for n in names if n in rows]
        if not have or ref_loss is None:
            targets.append(f"- {what}: not measured")
            return
        ok = [cond(x) for x in have]
        targets.append(f"- {what}: **{'met' if all(ok) else 'not met'}** (" + "; ".join(
            f"{n}: {rows[n]['rel']:+.2f} %, {rows[n]['fewer']:.0f}x" for n in names
            if n in rows) + ")")
    target("DiLoCo H=100 int8 within 2 % of DDP at >= 200x fewer bytes", ["diloco-H100-int8"],
           lambda x: x["rel"] <= 2 and x["fewer"] >= 200)
    target("Streaming DiLoCo int4 (or fp4) within 2 % of DDP at >= 400x fewer bytes",
           ["streaming-H100-P4-int4", "streaming-H100-P4-fp4"],
           lambda x: x["rel"] <= 2 and x["fewer"] >= 400)
    target("sparse quantized (top-k <= 3 %, <= 4 bits, EF) within 3 % at >= 1000x fewer bytes",
           ["diloco-H100-topk0.03bits4ef", "diloco-H100-topk0.03bits4ef-sgd",
            "diloco-H100-topk0.02bits2ef"],
           lambda x: x["rel"] <= 3 and x["fewer"] >= 1000)
    for n in ("streaming-H100-P4-int4", "streaming-H100-P4-int8"):
        if n in rows and ref_peak:
            targets.append(f"- peak bytes per step, {n} vs diloco-H100-int8: "
                           f"{ref_peak / max(rows[n]['peak'], 1):.1f}x lower (target >= P = 4)")
    best = [(rows[n]["reach"], n) for n in rows if rows[n]["reach"] and not n.startswith("ddp-")]
    if best and ref_wall:
        t, n = min(best)
        targets.append(f"- wall-clock to DDP's final loss >= 5x faster than DDP over gloo: "
                       f"**{'met' if ref_wall / t >= 5 else 'not met'}** (best {n}: {t:.0f} s "
                       f"vs {ref_wall:.0f} s, {ref_wall / t:.1f}x)")
    elif ref_wall:
        targets.append("- wall-clock to DDP's final loss >= 5x faster than DDP over gloo: "
                       "**not met** (no other run reached DDP's final loss)")
    return "\n".join([meta, ""] + lines + ["", "Targets:"] + targets), list(res)


def plot(work, names, outdir):
    """Two PNGs with gnuplot: eval loss vs bytes sent (log scale) and vs wall time."""
    if not shutil.which("gnuplot"):
        print("lm_experiments: gnuplot not installed (apt-get install gnuplot-nox): no plots",
              file=sys.stderr)
        return []
    os.makedirs(outdir, exist_ok=True)
    data = os.path.join(work, "plot.dat")
    with open(data, "w") as f:
        for n in names:
            r = load(work, n)
            f.write(f'"{n}"\n')
            for p in r["points"]:
                f.write(f"{max(p['bytes_sent'], 1)} {p['wall_s']} {p['eval_loss']}\n")
            f.write("\n\n")
    pngs = []
    for col, fname, xl, log in ((1, "lm_loss_vs_bytes.png", "bytes sent by rank 0", True),
                                (2, "lm_loss_vs_wall.png", "wall-clock seconds", False)):
        out = os.path.join(outdir, fname)
        script = (f"set terminal png size 900,560; set output '{out}'; set key outside right; "
                  f"set xlabel '{xl}'; set ylabel 'held-out loss (nats/byte)'; set grid; "
                  f"{'set logscale x;' if log else ''} set yrange [:4]; "
                  f"plot for [i=0:{len(names) - 1}] '{data}' index i using {col}:3 "
                  f"with linespoints title columnheader(1)")
        if subprocess.call(["gnuplot", "-e", script]) == 0:
            pngs.append(out)
    return pngs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(CORE),
                   help="runs, comma-separated (--list shows them; 'all' for every run)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hosts", type=int, default=4)
    p.add_argument("--rate", default="100mbit")
    p.add_argument("--model", choices=sorted(MODELS), default="small")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--run-timeout", type=int, default=5400)
    p.add_argument("--work", default=os.path.join(ROOT, "build", "bench", "lm_experiments"))
    p.add_argument("--update-docs", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    specs = runs(args.steps)
    if args.list:
        for n, (_, _, what) in specs.items():
            print(f"{n:32} {what}")
        return 0
    names = list(specs) if args.only == "all" else args.only.split(",")
    bad = [n for n in names if n not in specs]
    if bad:
        print(f"lm_experiments: unknown run(s) {', '.join(bad)} (see --list)", file=sys.stderr)
        return 2
    if args.steps < 100 or args.steps % 100:
        print("lm_experiments: --steps must be a multiple of 100 (H)", file=sys.stderr)
        return 2
    failed = []
    if not args.report_only:
        for n in names:
            opts, bed_opts, _ = specs[n]
            if not run_one(args, n, opts, bed_opts, args.work):
                failed.append(n)
    order = [n for n in specs if n in names or load(args.work, n)]
    text, have = report(args, order, args.work)
    if text is None:
        print("lm_experiments: no results", file=sys.stderr)
        return 1
    out = os.path.join(args.work, "lm_experiments.md")
    with open(out, "w") as f:
        f.write(text + "\n")
    print(text)
    pngs = plot(args.work, have, os.path.join(args.work, "img"))
    if args.update_docs:
        img = os.path.join(ROOT, "docs", "img")
        os.makedirs(img, exist_ok=True)
        for png in pngs:
            shutil.copy(png, img)
        sect = os.path.join(args.work, "section.md")
        with open(sect, "w") as f:
            f.write(text + "\n\n" + "".join(
                f"![{os.path.basename(x)}](img/{os.path.basename(x)})\n" for x in pngs))
        subprocess.check_call(["bash", "-c", 'source "$1"; docs_section_update lm_experiments '
                               '"$2" "$3"', "-", os.path.join(HERE, "docs_section.sh"),
                               os.path.join(ROOT, "docs", "results.md"), sect])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
