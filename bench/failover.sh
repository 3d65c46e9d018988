#!/usr/bin/env bash
# Failover time: 4 peers stream all-reduces, one is frozen (SIGSTOP) or killed (SIGKILL);
# prints how long after the fault the survivors completed their first all-reduce as a
# group of 3, against the configured failure-detection timeout. Target: frozen peer
# excluded and retry done within 2x the timeout.
#   usage: bench/failover.sh [BUILD_DIR] [RUNS] [TIMEOUT_MS]
set -euo pipefail
build=${1:-build}
runs=${2:-3}
tmo=${3:-3000}
here=$(cd "$(dirname "$0")" && pwd)
for kind in freeze kill; do
  for seed in $(seq 1 "$runs"); do
    /usr/bin/python3 "$here/../tests/integration/run_scenario.py" --build-dir "$build" \
      --scenario "$kind" --seed "$seed" --timeout-ms "$tmo" 2>&1 | grep -o "FAILOVER.*" || true
  done
done
