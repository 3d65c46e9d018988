#!/bin/bash
# bed_run.sh -- what the scripts that run starling on a test bed share (the benchmarks
# bench/compress_tbf.sh, baselines_tbf.sh, streams_delay.sh, ring_order.sh and the tests
# run_netbed_test.sh, run_partition_test.sh). Sourced after netbed.sh: defines functions
# only, changes no shell option. They use the caller's $starling (the program)
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
    ip netns exec "$ns" "$starling" coordinator --listen "$listen" "$@" >"$out" 2>"$log" \
        </dev/null 9>&- &
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

# bed_session TAG BED: what every run on a bed needs: a scratch directory ($dir, named after
# TAG), the list of processes started ($pids), a fresh run secret ($STARLING_SECRET,
# exported) and traps that, on exit or interrupt, kill those processes, take bed BED down,
# call the caller's bed_keep_logs if it defines one (the bed's processes have written
# their last words by then), and remove $dir.
bed_session() {
    bed_tag=$1 bed_name=$2
    dir=$(mktemp -d "/tmp/$1.XXXXXX") || return 1
    pids=()
    export STARLING_SECRET
    STARLING_SECRET=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    trap bed__cleanup EXIT
    trap 'echo "$bed_tag: interrupted" >&2; exit 1' INT TERM
}

# shellcheck disable=SC2317 # called by the EXIT trap
bed__cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    netbed_down "$bed_name" || echo "$bed_tag: could not remove bed '$bed_name'" >&2
    declare -F bed_keep_logs >/dev/null && bed_keep_logs
    rm -rf "$dir"
}

# bed_wait_peers TIMEOUT LOGPREFIX PID...: waits up to TIMEOUT seconds for the peers (peer
# i's stderr in LOGPREFIX<i>.log) and reaps them. 0 if all exited with status 0; else 1
# with bed_why saying what went wrong first, bed_status its exit status (124 for the
# time-out, after which all are killed) and bed_peer the peer's index.
bed_wait_peers() {
    local limit=$1 prefix=$2 i st
    shift 2
    local -a peers=("$@")
    bed_why="" bed_status=0 bed_peer=-1
    if ! wait_all $((SECONDS + limit)) "${peers[@]}"; then
        for i in "${peers[@]}"; do kill -KILL "$i" 2>/dev/null; done
        bed_why="time-out after ${limit}s" bed_status=124
    fi
    for i in "${!peers[@]}"; do
        wait "${peers[$i]}"
        st=$?
        [[ -n $bed_why || $st -eq 0 ]] && continue
        bed_status=$st bed_peer=$i
        bed_why="peer $i exited with status $st: $(grep -v '^\s*$' "$prefix$i.log" | head -n 1 | cut -c1-160)"
    done
    [[ -z $bed_why ]]
}
