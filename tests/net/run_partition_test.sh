#!/bin/bash
# run_partition_test.sh -- a network partition in a shaped test bed (tests/net/netbed.sh):
# one host is cut off mid-run, the others carry on, the link heals and the cut-off peer
# comes back and catches up.
#
# Builds a bed of --hosts namespaces, runs `starling coordinator` in host 0 and one
# `itest_peer --mode stream` per host (all-reduces in a loop; on STARLING_E_PEER_LOST a
# topology update, a state sync and a retry; shared state "w" plus the iteration "it").
# Host --victim's peer runs with --rejoin: when a state sync replaces its state it resumes
# at the group's synced iteration (REJOINED line). Then:
#   1. every peer completes --warm iterations with 4 members;
#   2. cut: the victim's link goes silent (--cut port: its bridge port is disabled, so
#      frames are dropped with the carrier still up, as when a switch or a WAN link
#      fails; --cut link: `ip link set eth0 down` inside the victim's namespace);
#   3. checks the others carry on: each completes --progress iterations with n-1 members
#      after its first such iteration, and the cut lasts at least --cut-s seconds; the
#      victim completes none of the iterations the smaller group runs (it may finish the
#      ones in flight at the cut, which the old epoch commits on the survivors);
#   4. heal: the victim must print REJOINED, then every peer completes --progress
#      iterations with n members;
#   5. stop (the stop file: the members vote to stop at a topology point) and check: every
#      peer exits 0 with the same iteration count and the same state hash (the library's
#      XXH3 and the peers' own FNV of the bytes); the survivors completed every iteration
#      once, in order; the victim every one before its REJOINED "from" (its iteration at
#      the cut, or the ones in flight too when it held their result) and every one from
#      the group's REJOINED iteration on; members agree on each iteration's (size, epoch); sizes go n, then
#      n-1, then n again (and the victim's rejoin iteration is the first back at n).
# Nothing asserts on time; the times of detection and rejoin are printed as figures.
# Exit status: 0 pass, 1 fail, 77 skip (the machine cannot build a bed), 2 bad usage.
#
#   run_partition_test.sh --starling build/tools/starling
#                         --itest-peer build/tests/integration/itest_peer
#                         [--name N] [--hosts 4] [--rate 1gbit] [--victim 3]
#                         [--cut port|link] [--cut-s 8] [--warm 20] [--progress 30]
#                         [--count 65536] [--timeout-ms 3000] [--timeout 100] [--logs DIR]
#
# --timeout bounds the whole run (every wait has its own bound below it). The bed is taken
# down on every exit: by the EXIT trap, and after a SIGKILL (ctest's time-out) by the
# guardian netbed_guard leaves behind.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=netbed.sh
source "$here/netbed.sh"
# shellcheck source=bed_run.sh
source "$here/bed_run.sh"

starling="" itest="" name="" hosts=4 rate=1gbit victim=3 cut=port cut_s=8 warm=20
progress=30 count=65536 detect_ms=3000 timeout_s=100 logs=""
usage() { sed -n '/^#   run_partition_test.sh/,/--logs DIR\]/s/^#   //p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || usage
    case $1 in
    --starling) starling=$2 ;;
    --itest-peer) itest=$2 ;;
    --name) name=$2 ;;
    --hosts) hosts=$2 ;;
    --rate) rate=$2 ;;
    --victim) victim=$2 ;;
    --cut) cut=$2 ;;
    --cut-s) cut_s=$2 ;;
    --warm) warm=$2 ;;
    --progress) progress=$2 ;;
    --count) count=$2 ;;
    --timeout-ms) detect_ms=$2 ;;
    --timeout) timeout_s=$2 ;;
    --logs) logs=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[[ -x $starling ]] || { echo "run_partition_test: --starling PATH (executable) is required" >&2; exit 2; }
[[ -x $itest ]] || { echo "run_partition_test: --itest-peer PATH (executable) is required" >&2; exit 2; }
for v in "$hosts" "$victim" "$cut_s" "$warm" "$progress" "$count" "$detect_ms" "$timeout_s"; do
    [[ $v =~ ^[0-9]+$ ]] || usage
done
((hosts >= 3)) || { echo "run_partition_test: --hosts must be >= 3 (survivors form a group)" >&2; exit 2; }
((victim >= 1 && victim < hosts)) || { echo "run_partition_test: --victim must be 1..hosts-1 (host 0 runs the coordinator)" >&2; exit 2; }
[[ $cut == port || $cut == link ]] || { echo "run_partition_test: --cut port|link" >&2; exit 2; }
netbed_rate_bps "$rate" >/dev/null || { echo "run_partition_test: bad --rate '$rate'" >&2; exit 2; }
[[ -n $name ]] || name="stp$(printf '%s %s %s' "$starling" "$hosts" "$rate" | cksum | cut -c1-7)"

netbed_check || exit 77
netbed_guard "$name" $((timeout_s + 120)) || exit 1

t_start=$SECONDS
deadline=$((SECONDS + timeout_s))
# shellcheck disable=SC2317 # called by bed_session's exit trap
bed_keep_logs() { [[ -z $logs ]] || { mkdir -p "$logs" && cp -r "$dir"/. "$logs"/; }; }
bed_session partition-test "$name" || exit 1

say() { echo "run_partition_test [$((SECONDS - t_start))s]: $*"; }
fail() {
    local f
    echo "run_partition_test: FAIL: $*" >&2
    for f in "$dir"/*.out "$dir"/*.err "$dir"/*.log; do
        [[ -s $f ]] || continue
        echo "---- ${f##*/}" >&2
        grep -v '^ITER ' "$f" | tail -n 25 >&2
        grep '^ITER ' "$f" | tail -n 3 >&2
    done
    exit 1
}

# ITER lines are "ITER i size epoch". last_iter P: the last iteration peer P completed (-1).
last_iter() { awk '$1 == "ITER" { l = $2 } END { print (l == "" ? -1 : l) }' "$dir/p$1.out"; }
# first_with P SIZE [AFTER]: the first iteration > AFTER that P completed with SIZE members.
first_with() {
    awk -v s="$2" -v a="${3:--1}" '$1 == "ITER" && $3 == s && $2 > a { print $2; f = 1; exit }
        END { if (!f) print -1 }' "$dir/p$1.out"
}
# A peer that must be alive, is.
check_alive() {
    local i
    for ((i = 0; i < hosts; i++)); do
        kill -0 "${peer_pids[$i]}" 2>/dev/null && continue
        wait "${peer_pids[$i]}"
        fail "peer $i exited early with status $?"
    done
    kill -0 "$coord_pid" 2>/dev/null || fail "the coordinator exited"
}
# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds; fails after SECONDS or at the
# overall deadline, whichever comes first.
wait_for() {
    local what=$1 end=$((SECONDS + $2))
    shift 2
    ((end > deadline)) && end=$deadline
    until "$@"; do
        check_alive
        ((SECONDS < end)) || fail "timed out waiting for $what"
        sleep 0.1
    done
}
# all_reached ITER SIZE PEER...: each PEER's last ITER line is >= ITER with SIZE members.
all_reached() {
    local it=$1 size=$2 i
    shift 2
    for i in "$@"; do
        awk -v t="$it" -v s="$size" '$1 == "ITER" { l = $2; z = $3 } END { exit !(l >= t && z == s) }' \
            "$dir/p$i.out" || return 1
    done
}

netbed_up --name "$name" --hosts "$hosts" --rate "$rate" || fail "netbed up"
say "bed '$name' up: $hosts hosts, $rate links; victim host $victim, cut by $cut"

run=partition-test
coord_addr="$(netbed_addr "$name" 0):7000"
bed_coordinator "$name-h0" "$coord_addr" "$dir/coord.out" "$dir/coord.log" --run "$run" \
    --min-peers "$hosts" --timeout-ms "$detect_ms" --verbose || fail "$bed_why"
coord_pid=$bed_cpid

# By default 64 Ki f32 (256 KiB) per all-reduce and 10 ms between iterations: a few dozen
# iterations a second, so a topology point (every 8) comes often and the run stays short.
peer_pids=()
survivors=()
for ((i = 0; i < hosts; i++)); do
    extra=()
    if [[ $i == "$victim" ]]; then extra=(--rejoin); else survivors+=("$i"); fi
    : >"$dir/p$i.out" # polled at once, before the peer's own redirection may have run
    ip netns exec "$name-h$i" "$itest" --coord "$coord_addr" --run "$run" --name "p$i" \
        --mode stream --listen "$(netbed_addr "$name" "$i"):0" --min-peers "$hosts" \
        --iters 100000000 --count "$count" --sleep-ms 10 --topo-every 8 --stop-file "$dir/stop" \
        --timeout-ms "$detect_ms" --deadline-s $((timeout_s + 10)) --log-level info "${extra[@]}" \
        >"$dir/p$i.out" 2>"$dir/p$i.err" </dev/null 9>&- &
    peer_pids+=($!)
    pids+=($!)
done
all=("${!peer_pids[@]}")

# 1. Warm up with every member.
wait_for "every peer to complete iteration $warm with $hosts members" 30 \
    all_reached "$warm" "$hosts" "${all[@]}"

# 2. Cut.
cut_iter=$(last_iter "$victim")
if [[ $cut == port ]]; then
    bridge -n "$name-br" link set dev "p$victim" state 0 || fail "could not disable bridge port p$victim"
else
    ip -n "$name-h$victim" link set eth0 down || fail "could not take host $victim's eth0 down"
fi
t_cut=$(date +%s.%N)
cut_at=$SECONDS
say "cut host $victim at its iteration $cut_iter; survivors at $(for i in "${survivors[@]}"; do printf '%s ' "$(last_iter "$i")"; done)"

# 3. The others carry on with n-1 members.
has_smaller() {
    local i
    for i in "${survivors[@]}"; do [[ $(first_with "$i" $((hosts - 1))) -ge 0 ]] || return 1; done
}
wait_for "the survivors to complete an iteration with $((hosts - 1)) members" 30 has_smaller
t_first=$(date +%s.%N)
first_small=$(first_with "${survivors[0]}" $((hosts - 1)))
say "survivors: first iteration with $((hosts - 1)) members is $first_small" \
    "($(awk -v a="$t_cut" -v b="$t_first" 'BEGIN { printf "%.1f", b - a }') s after the cut; failure timeout ${detect_ms} ms)"
wait_for "the survivors to complete $progress iterations with $((hosts - 1)) members" 30 \
    all_reached $((first_small + progress)) $((hosts - 1)) "${survivors[@]}"
while ((SECONDS < cut_at + cut_s)); do
    check_alive
    sleep 0.2
done
# The victim may finish the iterations that were in flight at the cut (committed in the old
# epoch by everyone: the survivors ran them with n members too), none of the smaller group's.
during=$(last_iter "$victim")
((during < first_small)) || fail "the victim completed iteration $during while cut off (the survivors' first with $((hosts - 1)) members is $first_small)"

# 4. Heal: the victim must come back.
if [[ $cut == port ]]; then
    bridge -n "$name-br" link set dev "p$victim" state 3 || fail "could not re-enable bridge port p$victim"
else
    ip -n "$name-h$victim" link set eth0 up || fail "could not bring host $victim's eth0 up"
fi
t_heal=$(date +%s.%N)
say "healed after $((SECONDS - cut_at)) s; survivors at $(last_iter "${survivors[0]}"), victim at $during"
rejoined() { grep -q '^REJOINED ' "$dir/p$victim.out"; }
wait_for "the victim to rejoin (REJOINED line)" 40 rejoined
t_rejoin=$(date +%s.%N)
read -r rj_from rj_iter rj_size < <(awk '$1 == "REJOINED" { for (k = 2; k <= NF; k++) { split($k, kv, "="); v[kv[1]] = kv[2] }
    print v["from"], v["iter"], v["size"]; exit }' "$dir/p$victim.out")
say "victim rejoined: from its iteration $rj_from to the group's $rj_iter with $rj_size members" \
    "($(awk -v a="$t_heal" -v b="$t_rejoin" 'BEGIN { printf "%.1f", b - a }') s after the heal)"
[[ $rj_size == "$hosts" ]] || fail "the victim rejoined into an epoch of $rj_size members, want $hosts"
wait_for "every peer to complete $progress iterations with $hosts members after the rejoin" 30 \
    all_reached $((rj_iter + progress)) "$hosts" "${all[@]}"

# 5. Stop and check.
: >"$dir/stop"
say "stop requested at iterations $(for i in "${all[@]}"; do printf '%s ' "$(last_iter "$i")"; done)"
end=$((SECONDS + 30))
((end > deadline)) && end=$deadline
while :; do
    running=0
    for pid in "${peer_pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
    [[ $running -eq 0 ]] && break
    ((SECONDS < end)) || fail "peers still running 30 s after the stop request"
    sleep 0.1
done
for i in "${all[@]}"; do
    wait "${peer_pids[$i]}"
    st=$?
    [[ $st -eq 0 ]] || fail "peer $i exited with status $st"
done

declare -A done_line=()
for i in "${all[@]}"; do
    d=$(grep -m1 '^DONE ' "$dir/p$i.out") || fail "peer $i printed no DONE line"
    done_line[$i]=${d#DONE }
done
ref=${done_line[0]}
for i in "${all[@]}"; do
    [[ ${done_line[$i]} == "$ref" ]] || fail "peers end differently: p0 '$ref', p$i '${done_line[$i]}'"
done
n_iters=$(sed -n 's/.*iters=\([0-9]*\).*/\1/p' <<<"$ref")
say "every peer: DONE $ref"

# Per-iteration checks, over every peer's ITER lines at once. The victim completes the
# iterations before its REJOINED "from" and none of the smaller group's. The ones in flight
# at the cut were committed in the old epoch by the survivors; the victim completes them too
# when it held their whole result (it may learn so only when it reconnects, after the heal),
# and otherwise takes them with the group's state at the rejoin: "from" lies between its
# iteration at the cut + 1 and the survivors' first with n-1 members.
((rj_from > cut_iter && rj_from <= first_small)) ||
    fail "the victim rejoined from its iteration $rj_from: it was at $cut_iter at the cut, the survivors went on alone from $first_small"
for i in "${all[@]}"; do awk -v p="$i" '$1 == "ITER" { print p, $2, $3, $4 }' "$dir/p$i.out"; done >"$dir/iters.all"
why=$(awk -v n="$hosts" -v v="$victim" -v total="$n_iters" -v cut="$((first_small - 1))" -v rj="$rj_iter" -v from="$rj_from" '
    { p = $1; it = $2; size = $3; ep = $4
      if ((p, it) in seen) { print "peer " p " completed iteration " it " twice"; exit }
      seen[p, it] = 1; cnt[p]++
      if (it in S && (S[it] != size || E[it] != ep)) {
          print "iteration " it ": members disagree on size/epoch (" S[it] "/" E[it] " vs " size "/" ep ")"; exit }
      S[it] = size; E[it] = ep
      if (p == v && it >= from && it < rj) { print "victim completed iteration " it " while it was out"; exit }
      if (size != n && size != n - 1) { print "iteration " it " ran with " size " members"; exit } }
    END {
      for (p = 0; p < n; p++) {
          want = (p == v) ? from + (total - rj) : total
          if (cnt[p] != want) { print "peer " p " completed " cnt[p] " iterations, want " want; exit } }
      # n members, then n-1 from the first iteration after the cut, then n from rj on.
      phase = 0
      for (it = 0; it < total; it++) {
          if (phase == 0 && S[it] == n - 1) phase = 1
          if (phase == 1 && S[it] == n) {
              if (it != rj) { print "back to " n " members at iteration " it ", the victim rejoined at " rj; exit }
              phase = 2 }
          if (phase == 2 && S[it] != n) { print "iteration " it " ran with " S[it] " members after the rejoin"; exit }
      }
      if (phase != 2) print "sizes never went " n ", " n - 1 ", " n " (ended in phase " phase ")"
    }' "$dir/iters.all")
[[ -z $why ]] || fail "$why"

kill -TERM "$coord_pid" 2>/dev/null
for ((k = 0; k < 50; k++)); do kill -0 "$coord_pid" 2>/dev/null || break; sleep 0.1; done
say "PASS: $hosts hosts, $n_iters iterations; $((hosts - 1)) carried on from iteration $first_small," \
    "host $victim cut off at $during and back at $rj_iter; equal state hashes"
exit 0
