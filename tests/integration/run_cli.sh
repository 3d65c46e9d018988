#!/bin/bash
# run_cli.sh -- integration tests of `starling run` (registered in CMakeLists.txt here).
#
#   run_cli.sh STARLING flags   bad flags and bad data directories give clear errors
#   run_cli.sh STARLING small   a short run with a kill, a freeze and a join: exit 0,
#                               summary.json says the survivors' hashes agree, accuracy
#                               well above chance (10 classes); then 5 ddp peers, one
#                               sign-flipping, under the median: learns, hashes agree
# Nothing here asserts on time; every command runs under `timeout`.
set -u
STARLING=${1:?usage: run_cli.sh STARLING flags|small}
MODE=${2:?usage: run_cli.sh STARLING flags|small}
TMP=$(mktemp -d /tmp/starling-run-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
FAILS=0

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

# expect_usage "stderr fragment" args...: exit status 2 and the fragment on stderr,
# and no process started (the parent validates everything first).
expect_usage() {
    local want=$1 rc
    shift
    timeout 30 "$STARLING" run --out "$TMP/out" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    if [ $rc -ne 2 ]; then
        fail "starling run $* -> exit $rc, expected 2"
        cat "$TMP/stderr" >&2
    elif ! grep -qF -- "$want" "$TMP/stderr"; then
        fail "starling run $*: stderr lacks '$want':"
        cat "$TMP/stderr" >&2
    elif grep -q "peer-" "$TMP/stdout"; then
        fail "starling run $*: peers were started before the usage error"
    else
        echo "ok: starling run $* -> $(head -n1 "$TMP/stderr")"
    fi
}

case $MODE in
flags)
    expect_usage "unknown option '--bogus'" --bogus
    expect_usage "unexpected argument 'extra'" extra
    expect_usage "--peers" --peers 0
    expect_usage "--peers" --peers 1000
    expect_usage "--peers" --peers four
    expect_usage "--algo: expected ddp, diloco or streaming" --algo sgd
    expect_usage "--steps" --steps -5
    expect_usage "--inner-steps applies to diloco and streaming" --algo ddp --inner-steps 5
    expect_usage "--fragments applies to --algo streaming" --fragments 4
    expect_usage "--compress" --compress int9
    expect_usage "topk bits must be 2, 4 or 8" --compress topk:0.02:bits=3
    expect_usage "--kill: expected RANK@STEP" --kill 1
    expect_usage "--kill: expected RANK@STEP" --kill 1@x
    expect_usage "--kill: RANK 4 is not a starting peer" --kill 4@10
    expect_usage "--kill: STEP 2000 is not below --steps 2000" --kill 1@2000
    expect_usage "--kill: peer 1 is killed twice" --kill 1@10 --kill 1@20
    expect_usage "must survive" --peers 2 --kill 0@10 --kill 1@10
    expect_usage "--freeze: expected RANK@STEP:SECONDS" --freeze 1@10
    expect_usage "--freeze: expected RANK@STEP:SECONDS" --freeze 1@10:-1
    expect_usage "--join: expected @STEP" --join 5
    expect_usage "--join: STEP 99 is not below --steps 50" --steps 50 --join @99
    expect_usage "--no-faults contradicts" --no-faults --kill 1@10
    expect_usage "--noniid: expected a Dirichlet alpha > 0" --noniid 0
    expect_usage "option --json given twice" --json --json
    expect_usage "option --peers given twice" --peers 2 --peers 3
    expect_usage "--set: expected KEY=VALUE" --set lr
    expect_usage "nosuchkey" --set nosuchkey=1
    expect_usage "lr" --lr banana
    expect_usage "hidden" --hidden 0,0
    expect_usage "batch" --batch 0
    expect_usage "--resume: '$TMP/none' is not a directory" --resume "$TMP/none"
    mkdir -p "$TMP/empty"
    expect_usage "--resume: no checkpoint.bin in" --resume "$TMP/empty"
    expect_usage "--data: '$TMP/none' is not a directory" --data "$TMP/none"
    expect_usage "--data: '$TMP/empty' has no train-images-idx3-ubyte.gz" --data "$TMP/empty"
    expect_usage "--byzantine needs --attack" --byzantine 1
    expect_usage "--attack needs --byzantine" --attack sign_flip
    expect_usage "--byzantine: K 4 must be below --peers 4" --byzantine 4 --attack noise
    expect_usage "--attack: expected sign_flip" --byzantine 1 --attack flip
    expect_usage "--aggregator: unknown aggregator" --byzantine 1 --attack ipm --aggregator avg
    expect_usage "krum needs n > 2f + 2" --peers 5 --byzantine 2 --attack alie --aggregator krum
    expect_usage "--f applies with --aggregator only" --f 1
    expect_usage "--nnm applies with --aggregator only" --nnm
    expect_usage "compress" --byzantine 1 --attack noise --aggregator median --compress int8+ef

    # A data directory whose files exist but are corrupt: the peers refuse it and the
    # run fails (exit 1) with the reader's message.
    mkdir -p "$TMP/bad"
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
             t10k-labels-idx1-ubyte; do
        printf 'not an idx file' >"$TMP/bad/$f"
    done
    timeout 60 "$STARLING" run --peers 1 --steps 10 --no-faults --data "$TMP/bad" \
        --out "$TMP/out-bad" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    if [ $rc -ne 1 ]; then
        fail "corrupt data directory -> exit $rc, expected 1"
        cat "$TMP/stdout" "$TMP/stderr" >&2
    elif ! grep -q "creating the trainer" "$TMP/stderr"; then
        fail "corrupt data directory: no clear message"
        cat "$TMP/stderr" >&2
    else
        echo "ok: corrupt data -> $(grep -m1 'creating the trainer' "$TMP/stderr")"
    fi
    ;;
small)
    out=$TMP/small
    timeout 170 "$STARLING" run --peers 3 --steps 400 --inner-steps 20 --kill 1@120 \
        --freeze 2@60:1 --join @200 --deadline-s 150 --out "$out" --json >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    cat "$TMP/stdout"
    cat "$TMP/stderr" >&2
    [ $rc -eq 0 ] || fail "the run exited with $rc"
    for f in metrics.csv summary.json; do
        [ -s "$out/$f" ] || fail "$out/$f missing"
    done
    if command -v gnuplot >/dev/null; then
        [ -s "$out/plot.png" ] || fail "plot.png missing although gnuplot is installed"
    fi
    head -n1 "$out/metrics.csv" | grep -qx "step,peer,loss,test_accuracy,test_loss,bytes_sent,peers,epoch" ||
        fail "metrics.csv header"
    # The summary is the last line of stdout with --json, and equals summary.json.
    tail -n1 "$TMP/stdout" | cmp -s - "$out/summary.json" || fail "--json line differs from summary.json"
    python3 - "$out/summary.json" <<'PY' || fail "summary.json checks"
import json, sys
s = json.load(open(sys.argv[1]))
errs = []
def want(cond, what):
    if not cond:
        errs.append(what)
want(s["hashes_agree"] is True, "hashes_agree")
want(s["completed"] is True, "completed")
want(s["peers_alive"] == 3, "peers_alive == 3 (3 started, 1 killed, 1 joined)")
want(s["test_accuracy"] > 0.5, "test accuracy above chance (0.1) by a margin")
want(len(s["kills"]) == 1 and s["kills"][0]["rank"] == 1, "one kill of peer 1")
want(len(s["freezes"]) == 1, "one freeze")
want(len(s["joins"]) == 1 and s["joins"][0]["admitted"] is True, "one join, admitted")
want(set(s["bytes_sent"]) == {"peer-0", "peer-1", "peer-2", "peer-3"}, "bytes per peer")
want(all(v > 0 for v in s["bytes_sent"].values()), "every peer sent bytes")
want(s["data"] in ("fashion-mnist", "synthetic"), "data")
for e in errs:
    print("summary.json:", e, "--", json.dumps(s), file=sys.stderr)
sys.exit(1 if errs else 0)
PY

    # DiLoCo with 2-bit top-k outer gradients and error feedback through the default
    # fault schedule (a kill at 40%, a newcomer at 60%): the survivors agree, it learns,
    # and it sends far fewer bytes than the int8 run above.
    out=$TMP/sq
    timeout 170 "$STARLING" run --peers 3 --steps 200 --inner-steps 20 --hidden 64 --batch 64 \
        --compress topk:0.05:bits=2+ef --data synthetic:3000 --deadline-s 150 --out "$out" \
        >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    [ $rc -eq 0 ] || { fail "the topk:bits=2 run exited with $rc"; cat "$TMP/stdout" "$TMP/stderr" >&2; }
    python3 - "$out/summary.json" <<'PY' || fail "topk:bits=2 summary.json checks"
import json, sys
s = json.load(open(sys.argv[1]))
errs = []
def want(cond, what):
    if not cond:
        errs.append(what)
want(s["hashes_agree"] is True and s["completed"] is True, "completed, hashes agree")
want(s["compress"] == "topk:0.05:bits=2+ef", "the codec in the summary")
want(len(s["kills"]) == 1 and len(s["joins"]) == 1, "the default kill and join")
want(s["test_accuracy"] > 0.5, "test accuracy above chance by a margin")
for e in errs:
    print("summary.json:", e, "--", json.dumps(s), file=sys.stderr)
sys.exit(1 if errs else 0)
PY

    # Byzantine: 5 ddp peers, the last sign-flipping, coordinate-wise median (f = 1):
    # it still learns, and every peer, the attacker included, ends with the same hash.
    out=$TMP/byz
    timeout 170 "$STARLING" run --peers 5 --algo ddp --steps 150 --hidden 32 --batch 32 \
        --byzantine 1 --attack sign_flip --aggregator median --no-faults --data synthetic:3000 \
        --deadline-s 150 --out "$out" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    [ $rc -eq 0 ] || { fail "the Byzantine run exited with $rc"; cat "$TMP/stdout" "$TMP/stderr" >&2; }
    python3 - "$out/summary.json" <<'PY' || fail "Byzantine summary.json checks"
import json, sys
s = json.load(open(sys.argv[1]))
errs = []
def want(cond, what):
    if not cond:
        errs.append(what)
want(s["hashes_agree"] is True and s["peers_alive"] == 5, "5 peers alive, hashes agree")
want(s["byzantine"] == 1 and s["attack"] == "sign_flip", "byzantine, attack")
want(s["aggregator"] == "median" and s["options"].get("f") == "1", "aggregator, f")
want(s["test_accuracy"] > 0.5, "test accuracy above chance by a margin")
for e in errs:
    print("summary.json:", e, "--", json.dumps(s), file=sys.stderr)
sys.exit(1 if errs else 0)
PY
    ;;
*)
    echo "unknown mode $MODE" >&2
    exit 2
    ;;
esac
if [ $FAILS -ne 0 ]; then
    echo "$FAILS check(s) failed" >&2
    exit 1
fi
echo "all checks passed"
