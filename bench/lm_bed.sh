#!/bin/bash
# lm_bed.sh -- one training run of bench/lm_train.py on the namespace test bed: --hosts
# network namespaces (tests/net/netbed.sh) whose links are shaped with tc tbf to --rate,
# one lm_train.py process per namespace, and a `starling coordinator` in host 0's.
#
#   bench/lm_bed.sh --out-dir DIR [--hosts 4] [--rate 100mbit] [--starling PATH]
#                   [--name lmbed] [--timeout 3600] [--expect-lost RANK,...]
#                   [--newcomer-at STEP] -- LM_TRAIN_ARGS...
#
# Every process gets starling's variables (STARLING_COORD = host 0's coordinator,
# STARLING_RUN, STARLING_PEERS, STARLING_RANK_HINT = its host index, STARLING_LISTEN = its
# namespace address) and torchrun's (RANK, WORLD_SIZE, MASTER_ADDR = host 0, MASTER_PORT),
# so every --algo of lm_train.py runs unchanged: ddp-gloo rendezvous through torch's store,
# the others through the coordinator. LM_TRAIN_ARGS go to every process as they are, with
# --out DIR/result.json added (the evaluating rank writes it).
#
# DIR receives peer.I.out / peer.I.log (stdout, stderr of host I's process), coord.log and
# result.json; it is kept. Exit status: 0 if every process exited 0, except the ranks given
# to --expect-lost (a process that kills or freezes itself on purpose), which may die by a
# signal; 1 otherwise (with the first failure on stderr); 2 on a usage error; 77 when the
# machine cannot build the bed (no root, no netns or tbf).
#
# --newcomer-at STEP: the bed has one host more; once result.json holds the evaluation at
# STEP (give --eval-every so that there is one), a process of rank --hosts starts there
# with --join (lm_train.py's newcomer: admitted at the next round end, it needs
# --update-every on the members) and STARLING_RANK_HINT but no STARLING_PEERS. Its
# output is peer.HOSTS.out/log; it must exit 0 like the others.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/net/netbed.sh
source "$root/tests/net/netbed.sh"
# shellcheck source=../tests/net/bed_run.sh
source "$root/tests/net/bed_run.sh"

hosts=4 rate=100mbit starling="$root/build/tools/starling" name=lmbed timeout_s=3600
outdir="" expect_lost="" newcomer_at=""
usage() { sed -n '/^#   bench\/lm_bed.sh/,/LM_TRAIN_ARGS\.\.\./s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --) shift; break ;;
    -h | --help) usage ;;
    esac
    [[ $# -ge 2 ]] || usage
    case $1 in
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --starling) starling=$2 ;;
    --name) name=$2 ;;
    --timeout) timeout_s=$2 ;;
    --out-dir) outdir=$2 ;;
    --expect-lost) expect_lost=$2 ;;
    --newcomer-at) newcomer_at=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -n $outdir ]] || usage
[[ $hosts =~ ^[0-9]+$ && $hosts -ge 1 && $timeout_s =~ ^[0-9]+$ ]] || usage
[[ -z $expect_lost || $expect_lost =~ ^[0-9]+(,[0-9]+)*$ ]] || usage
[[ -z $newcomer_at || $newcomer_at =~ ^[0-9]+$ ]] || usage
[[ -x $starling ]] || { echo "lm_bed: no starling program at $starling (build first)" >&2; exit 2; }
lib=${STARLING_LIB:-$(ls "$root"/build/src/libstarling.so 2>/dev/null)}
[[ -n $lib ]] || { echo "lm_bed: libstarling.so not built" >&2; exit 2; }
mkdir -p "$outdir" || exit 2
rm -f "$outdir"/peer.*.out "$outdir"/peer.*.log "$outdir/result.json"
netbed_check || exit 77
netbed_guard "$name" || exit 1
bed_session lm_bed "$name" || exit 1
nprocs=$((hosts + (${#newcomer_at} > 0))) # a host more for the newcomer
netbed_up --name "$name" --hosts "$nprocs" --rate "$rate" || exit 1
addr0=$(netbed_addr "$name" 0)
port=7400
bed_coordinator "$name-h0" "$addr0:$port" "$outdir/coord.out" "$outdir/coord.log" \
    --run lm --min-peers "$hosts" || { echo "lm_bed: $bed_why" >&2; exit 1; }
echo "lm_bed: $hosts hosts, links $rate, lm_train.py $*" >&2
ppids=()
# start_peer I PEERS WORLD ARGS...: host I's process (PEERS: STARLING_PEERS, empty for a
# newcomer; WORLD: torchrun's WORLD_SIZE, which shards the data).
start_peer() {
    local i=$1 peers=$2 world=$3 addr
    shift 3
    addr=$(netbed_addr "$name" "$i")
    env STARLING_COORD=$addr0:$port STARLING_RUN=lm ${peers:+STARLING_PEERS=$peers} \
        STARLING_RANK_HINT=$i STARLING_LISTEN=$addr:0 STARLING_LIB=$lib \
        PYTHONPATH=$root/python RANK=$i WORLD_SIZE=$world LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
        MASTER_ADDR=$addr0 MASTER_PORT=29400 GLOO_SOCKET_IFNAME=eth0 \
        ip netns exec "$name-h$i" /usr/bin/python3 "$here/lm_train.py" "$@" \
        --out "$outdir/result.json" >"$outdir/peer.$i.out" 2>"$outdir/peer.$i.log" \
        </dev/null 9>&- &
    ppids+=($!)
    pids+=($!)
}
for ((i = 0; i < hosts; i++)); do
    start_peer "$i" "$hosts" "$hosts" "$@"
done
# Waits for every process; one that fails unexpectedly (not a rank given to --expect-lost
# ending by a signal) ends the run at once: the others would wait for it until their timeout.
declare -A status
end=$((SECONDS + timeout_s))
fails=0
while ((${#status[@]} < nprocs)); do
    if [[ -n $newcomer_at && ${#ppids[@]} -eq $hosts ]] &&
        grep -q "\"step\": $newcomer_at," "$outdir/result.json" 2>/dev/null; then
        echo "lm_bed: step $newcomer_at evaluated: a newcomer starts on host $hosts" >&2
        # (its --out is never written: it is not the evaluating rank)
        start_peer "$hosts" "" $((hosts + 1)) "$@" --join
    fi
    for i in "${!ppids[@]}"; do
        [[ -n ${status[$i]:-} ]] && continue
        kill -0 "${ppids[$i]}" 2>/dev/null && continue
        wait "${ppids[$i]}" 2>/dev/null # (no "Killed" line from bash for a killed rank)
        st=$?
        status[$i]=$st
        [[ $st -eq 0 ]] && continue
        if [[ ,$expect_lost, == *,$i,* && $st -gt 128 ]]; then
            echo "lm_bed: host $i's process ended by signal $((st - 128)), as expected" >&2
            continue
        fi
        fails=$((fails + 1))
        echo "lm_bed: host $i's process exited with status $st: $(grep -v '^\s*$' "$outdir/peer.$i.log" | tail -n 3 | cut -c1-200)" >&2
    done
    if ((${#status[@]} == ${#ppids[@]} && ${#ppids[@]} < nprocs)); then
        echo "lm_bed: the run ended before step $newcomer_at was evaluated: no newcomer" >&2
        fails=$((fails + 1))
    fi
    if ((fails > 0 || SECONDS >= end)); then
        ((fails > 0)) || { echo "lm_bed: time-out after ${timeout_s}s" >&2; fails=1; }
        for p in "${ppids[@]}"; do kill -KILL "$p" 2>/dev/null; done
        wait "${ppids[@]}" 2>/dev/null
        break
    fi
    sleep 0.5
done
bed_stop "$bed_cpid"
[[ $fails -eq 0 ]]
