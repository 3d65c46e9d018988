#!/bin/bash
# straggler_bench.sh -- issue 16's deadline rounds, measured: DiLoCo on loopback with one
# starting peer computing --factor times slower (`starling run --slow 1:F`), side by side:
#   fault-free  no straggler, blocking rounds (the accuracy to reach);
#   blocking    the straggler, every round waits for it (round_deadline=off);
#   deadline    the straggler, round_deadline=--deadline (default auto: a round closes at
#               1.25x the fastest member's time for H inner steps; the straggler sends
#               what it has).
# Each configuration runs once per seed (--seeds 1,2,3), with no faults. Reported per
# configuration: rounds per minute (rounds / wall time of the run), the mean final test
# accuracy over the seeds, and the straggler's inner steps and cut rounds. Targets
# (issue 16): deadline within 1 point of fault-free, at >= 2x blocking's rounds/minute.
#
#   bench/straggler_bench.sh [--peers 4] [--steps 2000] [--inner-steps 50] [--factor 3]
#                            [--seeds 1,2,3] [--deadline auto] [--starling build/tools/starling]
#                            [--out build/bench/straggler.md]
#
# The markdown table goes to stdout and to --out. Wall time includes each run's start-up
# (about a second), the same for every configuration.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peers=4 steps=2000 inner=50 factor=3 seeds=1,2,3 deadline=auto
starling=$root/build/tools/starling
out=$root/build/bench/straggler.md
while [ $# -gt 0 ]; do
    case $1 in
    --peers) peers=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --inner-steps) inner=$2; shift 2 ;;
    --factor) factor=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --starling) starling=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "straggler_bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$starling" ] || { echo "straggler_bench.sh: $starling not built (make build)" >&2; exit 2; }
work=$(mktemp -d /tmp/straggler-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"

run_one() { # NAME SEED ARGS...
    local name=$1 seed=$2
    shift 2
    if ! timeout 900 "$starling" run --peers "$peers" --steps "$steps" --inner-steps "$inner" \
        --no-faults --seed "$seed" --out "$work/$name-$seed" "$@" >"$work/$name-$seed.log" 2>&1
    then
        echo "straggler_bench.sh: $name (seed $seed) failed; its log:" >&2
        tail -20 "$work/$name-$seed.log" >&2
        exit 1
    fi
}

IFS=, read -r -a seed_list <<<"$seeds"
for seed in "${seed_list[@]}"; do
    run_one fault-free "$seed"
    run_one blocking "$seed" --slow "1:$factor" --set round_deadline=off
    run_one deadline "$seed" --slow "1:$factor" --set "round_deadline=$deadline"
done

/usr/bin/python3 - "$work" "$steps" "$inner" "$factor" "$peers" "$seeds" "$deadline" <<'EOF' | tee "$out"
import json, math, os, sys
work, steps, inner, factor, peers, seeds, deadline = sys.argv[1:]
steps, inner = int(steps), int(inner)
rounds = math.ceil(steps / inner)
rows = {}
for name in ("fault-free", "blocking", "deadline"):
    rs = []
    for seed in seeds.split(","):
        with open(os.path.join(work, "%s-%s" % (name, seed), "summary.json")) as f:
            d = json.load(f)
        assert d["hashes_agree"], (name, seed)
        rs.append(d)
    rows[name] = rs
def mean(xs):
    return sum(xs) / len(xs)
print("DiLoCo, %s peers on loopback, %d steps (H=%d, %d rounds), peer 1 computing %sx "
      "slower; deadline run: round_deadline=%s; seeds %s\n"
      % (peers, steps, inner, rounds, factor, deadline, seeds))
print("| run | rounds/min | vs blocking | test accuracy | vs fault-free | straggler's inner "
      "steps | its cut rounds |")
print("|---|---|---|---|---|---|---|")
rpm_block = mean([rounds * 60.0 / d["wall_time_s"] for d in rows["blocking"]])
acc_free = mean([d["test_accuracy"] for d in rows["fault-free"]])
for name, rs in rows.items():
    rpm = mean([rounds * 60.0 / d["wall_time_s"] for d in rs])
    acc = mean([d["test_accuracy"] for d in rs])
    local = mean([d["local_steps"]["peer-1"] for d in rs])
    cut = mean([d["rounds_cut"]["peer-1"] for d in rs])
    print("| %s | %.0f | %.2fx | %.2f%% | %+.2f pt | %.0f | %.1f |" %
          (name, rpm, rpm / rpm_block, 100 * acc, 100 * (acc - acc_free), local, cut))
EOF
