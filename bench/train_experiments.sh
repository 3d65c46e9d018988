#!/bin/bash
# train_experiments.sh -- issue 4's learning-quality targets, measured side by side.
#
# Runs `starling run ... --seed SEED --json --out DIR` once per experiment, one after the
# other (they are CPU-bound: running them together would only make every wall time
# meaningless), then writes one markdown table and the targets, met or not:
#   1. the default run (= `make demo`: 4 peers, diloco H=50, int8, batch 128, one peer
#      killed at 40% of the steps, a newcomer at 60%): accuracy >= 85%, hashes equal;
#   2. a longer run (--steps 2x) >= 88%, against the MLP baselines of Fashion-MNIST
#      (bench/train_baselines.py: the grid of the package's baselines.json, with the
#      accuracies its paper publishes);
#   3. DiLoCo (H=50 and H=200) vs DDP at equal steps, 4 peers, --no-faults, each with and
#      without --compress int8: accuracy within 1 point, >= 50x fewer bytes sent per peer;
#   4. Streaming DiLoCo (--fragments 4) vs DiLoCo at the same H and codec: peak bytes sent
#      by a peer in one step (see "Peak bytes per step" below), target lower by ~P;
#   5. the default run vs the same flags with --no-faults (the diloco H=50 int8 run of 3):
#      accuracy within 1 point;
#   6. non-IID (--noniid 0.5) vs IID, diloco H=50 int8.
#
#   bench/train_experiments.sh [--quick] [--update-docs] [--report-only] [--steps S] [--seed N]
#                              [--starling PATH] [--out FILE] [--work DIR]
#                              [--run-timeout SECONDS] [--docs FILE] [--only NAME,NAME]
#
# --quick: a smoke test (300 steps; the default run, ddp, diloco H=50 with and without
#   int8, streaming; no longer run, no H=200, no non-IID): about a minute.
# --update-docs: also put the table into docs/results.md, between the marker comments
#   <!-- train_experiments:begin --> and <!-- train_experiments:end --> (replaced in
#   place, or appended at the end of the file if they are absent); --docs FILE writes
#   another file instead (for trying it out).
# --report-only: run nothing; rebuild the table from the runs already in --work.
# --steps: the steps of the comparison runs (default 2000, the default of `starling run`;
#   the longer run takes 2x). --only: run only these experiments (names as in the table).
# Defaults: --starling build/tools/starling, --out build/bench/train_experiments.md,
#   --work build/bench/train_experiments (one directory per run: stdout.log, stderr.log,
#   summary.json, metrics.csv, plot.png), --run-timeout 600 (each run, SIGTERM then
#   SIGKILL to the run's process group; the peers also die with their parent).
#
# Peak bytes per step: `starling run` writes a metrics.csv row per peer every
# max(1, steps/500) steps (and after each evaluation), with the bytes that peer has sent
# so far. The peak is the largest increase between two consecutive rows of one peer,
# over all peers. The rows are at most 4 steps apart at 2000 steps (8 in the 4000-step
# run), closer than the H/P = 12 steps between two fragment syncs of streaming (H=50,
# P=4) and than the H steps between two diloco rounds, so no interval holds more than
# one synchronisation (in a run with faults, a recovery redoes the interrupted one in the
# same interval): the peak is the bytes of the largest single synchronisation a peer took
# part in. ddp synchronises at every step: its peak is an interval's increase divided by
# its steps.
#
# Exit status: 0 if every run completed with equal hashes (targets met or not: they are
# reported, not enforced); 1 if a run failed (the script stops at a run that left no
# summary, with its log paths and the tail of its stderr); 2 on a usage error.

set -u -o pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=docs_section.sh
source "$here/docs_section.sh"

starling="$root/build/tools/starling" out="$root/build/bench/train_experiments.md"
work="$root/build/bench/train_experiments" docs="$root/docs/results.md"
quick=0 update_docs=0 report_only=0 steps="" seed=1 run_timeout=600 only=""
usage() { sed -n '/^#   bench\/train_experiments.sh/,/--only NAME,NAME]/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --quick) quick=1; shift; continue ;;
    --update-docs) update_docs=1; shift; continue ;;
    --report-only) report_only=1; shift; continue ;;
    -h | --help) usage ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --steps) steps=$2 ;;
    --seed) seed=$2 ;;
    --starling) starling=$2 ;;
    --out) out=$2 ;;
    --work) work=$2 ;;
    --run-timeout) run_timeout=$2 ;;
    --only) only=$2 ;;
    --docs) docs=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -z $steps ]] && { [[ $quick == 1 ]] && steps=300 || steps=2000; }
[[ $steps =~ ^[0-9]+$ && $steps -ge 10 && $seed =~ ^[0-9]+$ && $run_timeout =~ ^[0-9]+$ &&
    $run_timeout -ge 10 ]] || usage
[[ $report_only == 1 || -x $starling ]] || { echo "train_experiments: no starling program at $starling (build first: make build)" >&2; exit 2; }
for tool in timeout jq /usr/bin/python3; do
    command -v "$tool" >/dev/null || { echo "train_experiments: $tool is needed" >&2; exit 2; }
done

# ------------------------------------------------------------------ the experiments
# name|group|flags (word-split; no flag here takes a value with spaces)
plan=()
add() { plan+=("$1|$2|$3"); }
add demo 1 ""
[[ $quick == 0 ]] && add long 2 "--steps $((2 * steps))"
add ddp 3 "--algo ddp --no-faults"
add ddp-int8 3 "--algo ddp --compress int8 --no-faults"
add diloco-h50 3 "--algo diloco --inner-steps 50 --compress none --no-faults"
add diloco-h50-int8 3 "--algo diloco --inner-steps 50 --compress int8 --no-faults"
if [[ $quick == 0 ]]; then
    add diloco-h200 3 "--algo diloco --inner-steps 200 --compress none --no-faults"
    add diloco-h200-int8 3 "--algo diloco --inner-steps 200 --compress int8 --no-faults"
fi
add streaming-p4-h50 4 "--algo streaming --inner-steps 50 --fragments 4 --compress none --no-faults"
if [[ $quick == 0 ]]; then
    add streaming-p4-h50-int8 4 "--algo streaming --inner-steps 50 --fragments 4 --compress int8 --no-faults"
    add diloco-h50-int8-noniid 6 "--algo diloco --inner-steps 50 --compress int8 --noniid 0.5 --no-faults"
fi
if [[ -n $only ]]; then
    IFS=, read -r -a only_list <<<"$only"
    kept=()
    for e in "${plan[@]}"; do
        for n in "${only_list[@]}"; do [[ ${e%%|*} == "$n" ]] && kept+=("$e"); done
    done
    [[ ${#kept[@]} -gt 0 ]] || { echo "train_experiments: --only matches no experiment" >&2; exit 2; }
    plan=("${kept[@]}")
fi

# ------------------------------------------------------------------ running
mkdir -p "$work" "$(dirname "$out")" || exit 1
if [[ $report_only == 1 ]]; then
    [[ -s $work/plan.tsv ]] || { echo "train_experiments: --report-only: no runs in $work (plan.tsv)" >&2; exit 1; }
    # the settings of the runs, not of this command line
    [[ -s $work/times ]] && read -r load_start load_end total_s quick steps seed commit <"$work/times"
    plan=()
fi
cur_pid=""
# shellcheck disable=SC2317 # called by traps
stop_current() {
    # timeout(1) forwards the signal to starling and its process group; the peers also
    # have PR_SET_PDEATHSIG, so nothing outlives the run.
    if [[ -n $cur_pid ]] && kill -0 "$cur_pid" 2>/dev/null; then
        kill -TERM "$cur_pid" 2>/dev/null
        wait "$cur_pid" 2>/dev/null
    fi
    cur_pid=""
}
trap 'stop_current; echo "train_experiments: interrupted" >&2; exit 1' INT TERM
trap 'stop_current' EXIT

loadavg() { cut -d' ' -f1 /proc/loadavg; }
if [[ $report_only == 0 ]]; then
    commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    # the program may be built from a tree with edits not yet committed: say so
    [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]] && commit="$commit+edits"
    load_start=$(loadavg)
    t_start=$(date +%s)
    : >"$work/plan.tsv"
fi
any_failed=0
n=0
for e in "${plan[@]}"; do
    IFS='|' read -r name group flags <<<"$e"
    n=$((n + 1))
    dir="$work/$name"
    rm -rf "$dir" && mkdir -p "$dir" || exit 1
    # shellcheck disable=SC2206 # flags are words by construction
    args=($flags --seed "$seed" --json --out "$dir")
    # the comparison runs take --steps too, unless they set their own
    [[ $name != demo && $flags != *--steps* ]] && args=(--steps "$steps" "${args[@]}")
    # the default run is `starling run` itself (2000 steps) unless --steps or --quick differ
    [[ $name == demo && $steps != 2000 ]] && args=(--steps "$steps" "${args[@]}")
    printf '[%d/%d] %-24s starling run %s\n' "$n" "${#plan[@]}" "$name" "${args[*]}"
    printf '%s\t%s\t%s\n' "$name" "$group" "${args[*]}" >>"$work/plan.tsv"
    t0=$(date +%s.%N)
    timeout -k 10 "$run_timeout" "$starling" run "${args[@]}" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    cur_pid=$!
    wait "$cur_pid"
    rc=$?
    cur_pid=""
    t1=$(date +%s.%N)
    tail -n 1 "$dir/stdout.log" >"$dir/result.json" 2>/dev/null
    if ! jq -e '.test_accuracy' "$dir/result.json" >/dev/null 2>&1; then
        if [[ $rc == 124 || $rc == 137 ]]; then
            why="timed out after $run_timeout s"
        else
            why="exit status $rc, no summary line"
        fi
        echo "train_experiments: run '$name' failed: $why" >&2
        echo "  logs: $dir/stdout.log, $dir/stderr.log; last lines of stderr:" >&2
        tail -n 5 "$dir/stderr.log" | sed 's/^/    /' >&2
        exit 1
    fi
    jq -r --arg t "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
        '"        accuracy \(.test_accuracy * 10000 | round / 100)%, hashes agree: \(.hashes_agree), peers alive \(.peers_alive), wall \(.wall_time_s) s (with start-up: \($t) s)"' \
        "$dir/result.json"
    if [[ $rc != 0 ]]; then
        echo "train_experiments: run '$name' reported a failure (exit $rc): see $dir/stdout.log" >&2
        any_failed=1
    fi
done
if [[ $report_only == 0 ]]; then
    load_end=$(loadavg)
    total_s=$(($(date +%s) - t_start))
    echo "$load_start $load_end $total_s $quick $steps $seed $commit" >"$work/times"
fi

# ------------------------------------------------------------------ the report
baselines=$(/usr/bin/python3 "$here/train_baselines.py" --json 2>/dev/null) || baselines="null"
report=$(set -o pipefail; WORK="$work" BASELINES="$baselines" QUICK="$quick" SEED="$seed" STEPS="$steps" \
    LOAD_START="${load_start:-?}" LOAD_END="${load_end:-?}" TOTAL_S="${total_s:-?}" \
    COMMIT="${commit:-unknown}" \
    /usr/bin/python3 - <<'PYEOF' | /usr/bin/python3 "$here/md_wrap.py"
import csv, json, os, time

work = os.environ["WORK"]
quick = os.environ["QUICK"] == "1"
runs, order = {}, []
with open(os.path.join(work, "plan.tsv")) as f:
    for line in f:
        name, group, args = line.rstrip("\n").split("\t")
        with open(os.path.join(work, name, "result.json")) as g:
            s = json.loads(g.read())
        # ddp synchronises at every step, so a row interval holds several: per step there
        # is the interval's increase divided by its steps
        ddp = "ddp" in args.split()
        peak, interval = 0, 0
        last = {}
        with open(os.path.join(work, name, "metrics.csv")) as g:
            for row in csv.DictReader(g):
                p, step, b = row["peer"], int(row["step"]), int(row["bytes_sent"])
                ps, pb = last.get(p, (0, 0))
                if step > ps:
                    peak = max(peak, (b - pb) // (step - ps) if ddp else b - pb)
                    interval = max(interval, step - ps) if p in last else interval
                last[p] = (step, b)
        shown = [a for a in args.split() if a not in ("--json",)]
        i = shown.index("--out"); del shown[i:i + 2]
        i = shown.index("--seed"); del shown[i:i + 2]
        runs[name] = dict(s=s, group=int(group), flags=" ".join(shown), peak=peak,
                          interval=interval, sent=max(s["bytes_sent"].values()))
        order.append(name)

def pct(x): return f"{100 * x:.2f}%"
def mb(b): return f"{b / 1e6:.2f}" if b >= 1e7 else f"{b / 1e6:.3f}"
def kb(b): return f"{b / 1e3:.1f}"
def yes(b): return "**met**" if b else "**not met**"

out = []
day = time.strftime("%Y-%m-%d")
out.append(f"## Training experiments: issue 4's targets ({day}{', --quick' if quick else ''})")
out.append("")
out.append(f"`bench/train_experiments.sh{' --quick' if quick else ''}` (commit {os.environ['COMMIT']}): "
           f"every run is `starling run FLAGS --seed {os.environ['SEED']} --json --out DIR` "
           "on Fashion-MNIST with the defaults unless a flag says otherwise (4 peers, diloco, "
           "H=50, int8, batch 128 per peer, AdamW lr 1e-3 with cosine decay, "
           f"{os.environ['STEPS']} steps, peer 1 killed at 40% of the steps "
           "and a newcomer at 60%), one run after the other. Accuracy: all 10 000 test images, "
           "final shared parameters. MB sent: data-plane payload of the peer that sent most. "
           "Peak: the largest increase of one peer's bytes sent between two consecutive "
           f"metrics.csv rows (at most {max(r['interval'] for r in runs.values())} steps apart, "
           "so at most one synchronisation each, or in the runs with faults an interrupted one "
           "and its retry; ddp synchronises every step: its peak is the increase divided by the "
           "steps; see the script's header). Single runs, one seed. Wall: the run's own "
           f"wall time. Load average {os.environ['LOAD_START']} at the start, "
           f"{os.environ['LOAD_END']} at the end; the script took {os.environ['TOTAL_S']} s.")
out.append("")
out.append("| # | run | flags | test acc | hashes agree | peers alive | MB sent / peer | peak kB / step | wall s |")
out.append("| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |")
for name in order:
    r = runs[name]; s = r["s"]
    out.append(f"| {r['group']} | {name} | `{r['flags'] or '(none)'}` | {pct(s['test_accuracy'])} | "
               f"{'yes' if s['hashes_agree'] else 'NO'} | {s['peers_alive']} | {mb(r['sent'])} | "
               f"{kb(r['peak'])} | {s['wall_time_s']:.1f} |")
out.append("")
out.append("Targets:")
g = runs.get
if g("demo"):
    d = g("demo")["s"]
    ok = d["test_accuracy"] >= 0.85 and d["hashes_agree"]
    out.append(f"- Default run (`starling run`): test accuracy >= 85% with all surviving hashes "
               f"equal: {yes(ok)} ({pct(d['test_accuracy'])}, hashes "
               f"{'equal' if d['hashes_agree'] else 'DIFFER'}, {d['peers_alive']} peers alive, "
               f"{d['wall_time_s']:.1f} s).")
best = None
for name in ("demo", "long"):
    if g(name) and (best is None or g(name)["s"]["test_accuracy"] > g(best)["s"]["test_accuracy"]):
        best = name
bl = json.loads(os.environ["BASELINES"])
if best:
    a = g(best)["s"]["test_accuracy"]
    cmdline = f"`starling run {g(best)['flags']}`" if g(best)["flags"] else "`starling run`, no flags"
    line = f"- A run >= 88%: {yes(a >= 0.88)} ({best}, {cmdline}: {pct(a)}"
    if best == "demo" and g("long"):
        line += f"; the {g('long')['flags']} run: {pct(g('long')['s']['test_accuracy'])}"
    line += ")."
    if bl and bl.get("best"):
        b = bl["best"]
        line += (f" Best MLP of the package's `benchmark/baselines.json` grid "
                 f"({len(bl['mlp'])} settings; accuracies from {bl['source']}, the file "
                 f"holds none): MLPClassifier {b['activation']} {b['hidden_layer_sizes']}, "
                 f"{pct(b['test_accuracy'])}; this run is {100 * (a - b['test_accuracy']):+.2f} "
                 "points from it.")
    out.append(line)
def versus(dn, pn):
    D, P = g(dn), g(pn)
    diff = 100 * (D["s"]["test_accuracy"] - P["s"]["test_accuracy"])
    ratio = P["sent"] / D["sent"] if D["sent"] else float("inf")
    return diff, ratio
dilocos = [f"diloco-{h}{c}" for h in ("h50", "h200") for c in ("", "-int8") if g(f"diloco-{h}{c}")]
if g("ddp") and dilocos:
    out.append("- DiLoCo within 1 point of data-parallel (`ddp`, no codec) at equal steps, "
               "sending >= 50x fewer bytes per peer (in brackets: against `ddp` with the same "
               "codec):")
    for dn in dilocos:
        diff, ratio = versus(dn, "ddp")
        extra = ""
        if dn.endswith("-int8") and g("ddp-int8"):
            d2, r2 = versus(dn, "ddp-int8")
            extra = f" [vs ddp-int8: {d2:+.2f} points, {r2:.3f}x]"
        ok = diff >= -1.0 and ratio >= 50
        out.append(f"  - {dn}: {diff:+.2f} points, {ratio:.3f}x fewer bytes{extra}: {yes(ok)}")
    out.append("  - Without a codec DiLoCo sends one full-model all-reduce per H steps where "
               "ddp sends one per step, plus a few bytes of state synchronisation per round, "
               "so the ratio is just under H: at H=50 exactly at the target's edge.")
for c in ("", "-int8"):
    sn, dn = f"streaming-p4-h50{c}", f"diloco-h50{c}"
    if g(sn) and g(dn):
        S, D = g(sn), g(dn)
        ratio = D["peak"] / S["peak"] if S["peak"] else float("inf")
        out.append(f"- Streaming DiLoCo (P=4) vs DiLoCo, H=50{', int8' if c else ', no codec'}: "
                   f"peak per step {kb(S['peak'])} kB vs {kb(D['peak'])} kB, {ratio:.2f}x lower "
                   f"(target ~4x): {yes(ratio >= 3.0)}; total sent {mb(S['sent'])} vs "
                   f"{mb(D['sent'])} MB; accuracy {pct(S['s']['test_accuracy'])} vs "
                   f"{pct(D['s']['test_accuracy'])}.")
if g("demo") and g("diloco-h50-int8"):
    a, b = g("demo")["s"]["test_accuracy"], g("diloco-h50-int8")["s"]["test_accuracy"]
    out.append(f"- Faults (one kill, one join) vs none, same flags (demo vs diloco-h50-int8): "
               f"{pct(a)} vs {pct(b)}, {100 * (a - b):+.2f} points: {yes(abs(a - b) <= 0.01)}.")
if g("diloco-h50-int8-noniid") and g("diloco-h50-int8"):
    a, b = g("diloco-h50-int8-noniid")["s"]["test_accuracy"], g("diloco-h50-int8")["s"]["test_accuracy"]
    out.append(f"- Non-IID (Dirichlet alpha 0.5) vs IID, diloco H=50 int8: {pct(a)} vs {pct(b)} "
               f"({100 * (a - b):+.2f} points; no target).")
print("\n".join(out))  # wrapped at 90 columns by md_wrap.py
PYEOF
) || { echo "train_experiments: building the report failed" >&2; exit 1; }

printf '%s\n' "$report" >"$out"
echo
printf '%s\n' "$report"
echo
echo "train_experiments: table written to $out; runs under $work"

if [[ $update_docs == 1 ]]; then
    docs_section_update train_experiments "$docs" "$out" || exit 1
    echo "train_experiments: $docs updated (between the train_experiments markers)"
fi
exit "$any_failed"
