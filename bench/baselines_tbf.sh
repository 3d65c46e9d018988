#!/bin/bash
# baselines_tbf.sh -- starling against gloo and OpenMPI on one shaped test bed, side by side.
#
# Builds a test bed (tests/net/netbed.sh) of --hosts network namespaces whose links are
# shaped with tc tbf to --rate in both directions, and runs on it, one after the other, an
# f32 sum all-reduce of --bytes with one process per host (--warmup untimed calls, then
# --iters timed calls; every implementation checks its first result):
#   starling  `starling coordinator` in host 0, `starling bench-peer` per host (--streams);
#             time: rank 0's clock per call;
#   gloo      torch.distributed, bench/gloo_allreduce.py --rank R per host
#             (GLOO_SOCKET_IFNAME=eth0); time: the slowest rank's per call;
#   mpi       OpenMPI, bench/mpi_allreduce.c built with mpicc, one `mpirun` in host 0
#             that starts the other hosts' daemons through a small rsh agent running
#             `ip netns exec` (no ssh), --mca btl tcp,self on eth0, its default algorithm
#             choice; time: the slowest rank's per call;
#   mpi-ring  the same with the ring algorithm forced (coll_tuned_allreduce_algorithm 4).
# Reports per implementation the median and range of the timed calls, the ring bound
# 2(n-1)/n * size / rate and the median's percentage of it (100% = the link is the only
# cost; TCP/IP headers alone cap it near 95.6%), and the bytes each host's tbf passed per
# call (the most loaded host; headers included), which shows what the algorithm sends.
#
#   bench/baselines_tbf.sh [--impls starling,gloo,mpi,mpi-ring] [--hosts 4] [--rate 100mbit]
#                          [--bytes 64M] [--iters 3] [--warmup 1] [--streams 1]
#                          [--starling build/tools/starling] [--name bbench]
#                          [--out build/bench/baselines_tbf.md] [--timeout 600]
#                          [--update-docs] [--docs FILE]
#
# --timeout bounds each implementation's run. An implementation whose program is missing
# (no python3-torch, no mpicc/mpirun) is reported as skipped. --update-docs puts the table
# into docs/testbed.md between <!-- baselines_tbf:begin --> and <!-- baselines_tbf:end -->
# (--docs FILE: another file). Needs root (namespaces, tc). The bed is removed on exit.
# The markdown table goes to stdout and to --out. Exit status 1 if an implementation failed.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/net/netbed.sh
source "$root/tests/net/netbed.sh"
# shellcheck source=../tests/net/bed_run.sh
source "$root/tests/net/bed_run.sh"
# shellcheck source=docs_section.sh
source "$here/docs_section.sh"

impls="starling,gloo,mpi,mpi-ring" hosts=4 rate=100mbit bytes=64M iters=3 warmup=1 streams=1
starling="$root/build/tools/starling" name=bbench out="$root/build/bench/baselines_tbf.md"
timeout_s=600 update_docs=0 docs="$root/docs/testbed.md"
usage() { sed -n '/^#   bench\/baselines_tbf.sh/,/--docs FILE]/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --update-docs) update_docs=1; shift; continue ;;
    -h | --help) usage ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --impls) impls=$2 ;;
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --bytes) bytes=$2 ;;
    --iters) iters=$2 ;;
    --warmup) warmup=$2 ;;
    --streams) streams=$2 ;;
    --starling) starling=$2 ;;
    --name) name=$2 ;;
    --out) out=$2 ;;
    --timeout) timeout_s=$2 ;;
    --docs) docs=$2; update_docs=1 ;;
    *) usage ;;
    esac
    shift 2
done
[[ $hosts =~ ^[0-9]+$ && $hosts -ge 2 && $hosts -le 200 && $iters =~ ^[0-9]+$ && $iters -ge 1 &&
    $warmup =~ ^[0-9]+$ && $streams =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] || usage
nbytes=$(numfmt --from=iec "$bytes" 2>/dev/null) || usage
((nbytes >= 4 && nbytes % 4 == 0)) || { echo "baselines_tbf: --bytes must be a multiple of 4" >&2; exit 2; }
rate_bps=$(netbed_rate_bps "$rate") || { echo "baselines_tbf: bad --rate '$rate'" >&2; exit 2; }
IFS=, read -r -a impl_list <<<"$impls"
for im in "${impl_list[@]}"; do
    case $im in
    starling | gloo | mpi | mpi-ring) ;;
    *) echo "baselines_tbf: unknown implementation '$im' (starling, gloo, mpi, mpi-ring)" >&2; exit 2 ;;
    esac
done
if [[ ,$impls, == *,starling,* && ! -x $starling ]]; then
    echo "baselines_tbf: no starling program at $starling (build first, or --starling PATH)" >&2
    exit 2
fi
[[ $update_docs == 0 || -f $docs ]] || { echo "baselines_tbf: no docs file $docs" >&2; exit 2; }
netbed_check || exit 77
netbed_guard "$name" || exit 1

bed_session baselines_tbf "$name" || exit 1

netbed_up --name "$name" --hosts "$hosts" --rate "$rate" || exit 1
addr0=$(netbed_addr "$name" 0)
burst=$(netbed__burst "$rate")
echo "baselines_tbf: $hosts hosts, links $rate (tbf burst $burst B), $bytes f32 sum," \
    "$warmup warm-up + $iters timed calls each" >&2



# "MEDIAN MIN MAX" of the numbers on stdin; status 1 unless there are exactly $iters.
summary() {
    local t
    t=$(cat)
    [[ $(grep -c . <<<"$t") -eq $iters ]] || return 1
    echo "$(median <<<"$t") $(sort -g <<<"$t" | head -n 1) $(sort -g <<<"$t" | tail -n 1)"
}

# Bytes each host's upload tbf has passed so far, one per host on one line.
tbf_sent() {
    local i
    for ((i = 0; i < hosts; i++)); do
        tc -s -n "$name-h$i" qdisc show dev eth0 | awk '/^qdisc tbf/{ t = 1 } t && /Sent/{ printf "%s ", $2; exit }'
    done
    echo
}

# Kills whatever still runs in the hosts' namespaces (an MPI daemon after a failure).
reap_hosts() {
    local i pid
    for ((i = 0; i < hosts; i++)); do
        for pid in $(ip netns pids "$name-h$i" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
}

declare -A result=() wire=()

run_starling() {
    local port=7300 run="baselines" i cpid t
    local -a ppids=()
    if ! bed_coordinator "$name-h0" "$addr0:$port" "$dir/coord.out" "$dir/coord.log" \
        --run "$run" --min-peers "$hosts"; then
        result[starling]="fail $bed_why"
        return
    fi
    cpid=$bed_cpid
    for ((i = 0; i < hosts; i++)); do
        ip netns exec "$name-h$i" "$starling" bench-peer --coord "$addr0:$port" --run "$run" \
            --index "$i" --peers "$hosts" --bytes "$bytes" --iters "$iters" --warmup "$warmup" \
            --streams "$streams" --listen "$(netbed_addr "$name" "$i"):0" \
            --report-fd 3 3>"$dir/starling.rep.$i" 2>"$dir/starling.$i.log" </dev/null 9>&- &
        ppids+=($!)
        pids+=($!)
    done
    bed_wait_peers "$timeout_s" "$dir/starling." "${ppids[@]}" || result[starling]="fail $bed_why"
    bed_stop "$cpid"
    [[ -n ${result[starling]:-} ]] && return
    t=$(cat "$dir"/starling.rep.* | awk '$1 == "t" { print $3 }' | summary) ||
        { result[starling]="fail rank 0 did not report $iters timings"; return; }
    result[starling]="ok $t"
}

run_gloo() {
    local i st t
    local -a gpids=()
    if ! /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null; then
        result[gloo]="skip no torch.distributed for /usr/bin/python3 (python3-torch)"
        return
    fi
    for ((i = 0; i < hosts; i++)); do
        GLOO_SOCKET_IFNAME=eth0 OMP_NUM_THREADS=1 ip netns exec "$name-h$i" /usr/bin/python3 \
            "$here/gloo_allreduce.py" --peers "$hosts" --rank "$i" --init-addr "$addr0:29500" \
            --bytes "$nbytes" --warmup "$warmup" --iters "$iters" --timeout "$timeout_s" \
            >"$dir/gloo.$i.out" 2>"$dir/gloo.$i.log" </dev/null 9>&- &
        gpids+=($!)
        pids+=($!)
    done
    if ! wait_all $((SECONDS + timeout_s + 10)) "${gpids[@]}"; then
        for i in "${gpids[@]}"; do kill -KILL "$i" 2>/dev/null; done
        result[gloo]="fail time-out after ${timeout_s}s"
        return
    fi
    for ((i = 0; i < hosts; i++)); do
        wait "${gpids[$i]}"
        st=$?
        if [[ $st -ne 0 ]]; then
            result[gloo]="fail rank $i exited with status $st: $(grep -v '^\s*$' "$dir/gloo.$i.log" | tail -n 1 | cut -c1-160)"
            return
        fi
    done
    t=$(/usr/bin/python3 -c 'import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print(d["median_s"], d["min_s"], d.get("max_s", "nan"))' <"$dir/gloo.0.out") && [[ -n $t ]] ||
        { result[gloo]="fail rank 0 printed no result"; return; }
    result[gloo]="ok $t"
}

mpi_bin=""
build_mpi() {
    [[ -n $mpi_bin ]] && return 0
    if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
        mpi_why="no mpicc/mpirun (openmpi-bin, libopenmpi-dev)"
        return 1
    fi
    if ! mpicc -std=c99 -O2 -Wall -Wextra -o "$dir/mpi_allreduce" "$here/mpi_allreduce.c" \
        2>"$dir/mpi_build.log"; then
        mpi_why="mpicc failed: $(tail -n 2 "$dir/mpi_build.log" | tr '\n' ' ' | cut -c1-160)"
        return 1
    fi
    # The rsh agent: mpirun (in host 0) calls it as `agent [options] HOST COMMAND...` to
    # start its daemon on HOST; HOST is an address of the bed, whose namespace runs it.
    {
        echo '#!/bin/bash'
        echo 'while [[ $1 == -* ]]; do shift; done'
        echo 'host=$1; shift'
        echo 'case $host in'
        for ((i = 0; i < hosts; i++)); do echo "$(netbed_addr "$name" "$i")) ns=$name-h$i ;;"; done
        echo '*) echo "mpi agent: unknown host $host" >&2; exit 1 ;;'
        echo 'esac'
        echo 'exec ip netns exec "$ns" /bin/sh -c "$*"'
    } >"$dir/mpi_agent.sh" && chmod +x "$dir/mpi_agent.sh" || { mpi_why="cannot write the agent"; return 1; }
    mpi_bin="$dir/mpi_allreduce"
}

# run_mpi KEY MCA_ARGS...
run_mpi() {
    local key=$1 i st t hostlist="" mpid
    shift
    build_mpi || { result[$key]="skip $mpi_why"; return; }
    for ((i = 0; i < hosts; i++)); do hostlist+="$(netbed_addr "$name" "$i"):1,"; done
    ip netns exec "$name-h0" mpirun --allow-run-as-root -np "$hosts" --host "${hostlist%,}" \
        --map-by node --mca plm_rsh_agent "$dir/mpi_agent.sh" --mca plm_rsh_no_tree_spawn 1 \
        --mca btl tcp,self --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 "$@" \
        "$mpi_bin" --bytes "$nbytes" --iters "$iters" --warmup "$warmup" \
        >"$dir/$key.out" 2>"$dir/$key.log" </dev/null 9>&- &
    mpid=$!
    pids+=("$mpid")
    if ! wait_all $((SECONDS + timeout_s)) "$mpid"; then
        kill -KILL "$mpid" 2>/dev/null
        reap_hosts
        result[$key]="fail time-out after ${timeout_s}s"
        return
    fi
    wait "$mpid"
    st=$?
    if [[ $st -ne 0 ]]; then
        reap_hosts
        result[$key]="fail mpirun exited with status $st: $(grep -v '^\s*$' "$dir/$key.log" | head -n 1 | cut -c1-160)"
        return
    fi
    t=$(/usr/bin/python3 -c 'import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        d = json.loads(line)
        print(d["median_s"], d["min_s"], d.get("max_s", "nan"))' <"$dir/$key.out") && [[ -n $t ]] ||
        { result[$key]="fail rank 0 printed no result"; return; }
    result[$key]="ok $t"
}

for im in "${impl_list[@]}"; do
    echo "baselines_tbf: $im ..." >&2
    before=$(tbf_sent)
    case $im in
    starling) run_starling ;;
    gloo) run_gloo ;;
    mpi) run_mpi mpi ;;
    mpi-ring) run_mpi mpi-ring --mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 4 ;;
    esac
    after=$(tbf_sent)
    # The most loaded host's upload per call, timed and warm-up calls alike.
    wire[$im]=$(awk -v b="$before" -v a="$after" -v calls=$((warmup + iters)) 'BEGIN {
        nb = split(b, x, " "); split(a, y, " "); m = 0
        for (k = 1; k <= nb; k++) if (y[k] - x[k] > m) m = y[k] - x[k]
        printf "%.1f", m / calls / 1048576 }')
    echo "baselines_tbf:   ${result[$im]} (max upload per call ${wire[$im]} MiB)" >&2
done

ring_bound=$(awk -v n="$hosts" -v s="$nbytes" -v r="$rate_bps" 'BEGIN { printf "%.3f", 2 * (n - 1) / n * s * 8 / r }')
ring_mib=$(awk -v n="$hosts" -v s="$nbytes" 'BEGIN { printf "%.1f", 2 * (n - 1) / n * s / 1048576 }')
mkdir -p "$(dirname "$out")"
{
    echo "### All-reduce baselines on $rate links ($(date -u +%Y-%m-%d))"
    echo
    echo "$hosts hosts (network namespaces, one bridge, tbf $rate each way, burst $burst B)," \
        "$bytes f32 sum all-reduce, one process per host, median of $iters timed calls after" \
        "$warmup warm-up. Ring bound 2(n-1)/n * size / rate =" \
        "**${ring_bound} s** ($ring_mib MiB per host); TCP/IP headers alone cap a link at" \
        "~95.6% of it. \"upload per call\": bytes the busiest host's tbf passed per call," \
        "headers included. Time per call: starling rank 0's clock; gloo and OpenMPI the" \
        "slowest rank's. starling $(git -C "$root" describe --always --dirty 2>/dev/null || echo "?")" \
        "(--streams $streams); gloo: torch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "?");" \
        "OpenMPI $(mpirun --version 2>/dev/null | awk 'NR == 1 { print $NF }') TCP BTL," \
        "\`mpi\` with its default algorithm choice, \`mpi-ring\` with" \
        "\`coll_tuned_allreduce_algorithm 4\` (ring)."
    echo
    echo "| implementation | median s | range s | % of ring bound | upload per call |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for im in "${impl_list[@]}"; do
        read -r st rest <<<"${result[$im]}"
        if [[ $st != ok ]]; then
            echo "| $im | $st: $rest | | | |"
            continue
        fi
        read -r med mn mx <<<"$rest"
        awk -v im="$im" -v med="$med" -v mn="$mn" -v mx="$mx" -v b="$ring_bound" -v w="${wire[$im]}" 'BEGIN {
            range = (mx == "nan") ? sprintf("%.3f–", mn) : sprintf("%.3f–%.3f", mn, mx)
            printf "| %s | %.3f | %s | %.0f%% | %s MiB |\n", im, med, range, 100 * b / med, w }'
    done
} | tee "$out"
if [[ $update_docs == 1 ]]; then
    docs_section_update baselines_tbf "$docs" "$out" || exit 1
    echo "baselines_tbf: $docs updated (between the baselines_tbf markers)" >&2
fi
fails=0
for im in "${impl_list[@]}"; do [[ ${result[$im]} == fail* ]] && fails=1; done
exit $fails
