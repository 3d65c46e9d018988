#!/bin/bash
# bed_run.sh -- what the benchmarks that run starling on a test bed share
# (compress_tbf.sh, baselines_tbf.sh, streams_delay.sh, ring_order.sh). Sourced: defines
# functions only, changes no shell option. They use the caller's $starling (the program)
# and append every process they start to the caller's array `pids` (killed on exit).

# wait_all DEADLINE PID...: 0 once all have exited, 1 if the deadline (SECONDS) passed.
wait_all() {
    local end=$1 pid running
    shift
    while :; do
        running=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && running=1; done
        [[ $running -eq 0 ]] && return 0
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}

# median of numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1;
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# bed_coordinator NS HOST:PORT OUT LOG ARGS...: starts `starling coordinator --listen
# HOST:PORT ARGS...` in namespace NS (stdout to OUT, stderr to LOG) and waits up to 15 s
# for it to listen. Sets bed_cpid; on failure kills it, sets bed_why and returns 1.
bed_coordinator() {
    local ns=$1 listen=$2 out=$3 log=$4 end=$((SECONDS + 15))
    shift 4
    ip netns exec "$ns" "$starling" coordinator --listen "$listen" "$@" >"$out" 2>"$log" 9>&- &
    bed_cpid=$!
    pids+=("$bed_cpid")
    until grep -q '^coordinator listening' "$out" 2>/dev/null; do
        if ! kill -0 "$bed_cpid" 2>/dev/null || ((SECONDS >= end)); then
            bed_why="coordinator did not start: $(head -c 200 "$log")"
            kill -KILL "$bed_cpid" 2>/dev/null
            return 1
        fi
        sleep 0.05
    done
}

# bed_stop PID: SIGTERM, up to 5 s to exit, then SIGKILL; reaped either way.
bed_stop() {
    kill -TERM "$1" 2>/dev/null
    wait_all $((SECONDS + 5)) "$1" || kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
