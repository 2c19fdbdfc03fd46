#!/usr/bin/env bash
# The share of a node's CPU samples under given functions, during a sustained
# load: a fresh node of SHARDS shards (default 2), KEYS keys (default 100,000)
# of 100 bytes loaded, then WL (dynakv-bench workload, default put) at pipeline
# PIPE (default 16) with 50 connections for 14 s, of which `perf record --call-graph dwarf`
# samples the server for 6 s from the third second. Prints the total samples
# and, for each NAME, the percentage of samples with a frame whose symbol
# contains it. Used for BENCHMARKS.md §2zi, §2zk, §2zl, §2zm:
#   tools/perf-share.sh 7831 compact_step drop_slot          # the default binary
#   DYNAKV=/tmp/dynakv-base tools/perf-share.sh 7831 compact_step
#   PIPE=1 tools/perf-share.sh 7831 membarrier smp_call_function     # §2zm
# Extra server options: SERVER_ARGS="--compaction-from-index false".
# Environment: DYNAKV, BENCH (binaries), SHARDS, KEYS, WL, PIPE (pipeline depth,
# default 16), OUT (perf data file, default a temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1; shift
DYNAKV=${DYNAKV:-target/release/dynakv}
B=${BENCH:-target/release/dynakv-bench}
DIR=$(mktemp -d)
DATA=${OUT:-$DIR/perf.data}
# shellcheck disable=SC2086
"$DYNAKV" server --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" --shards "${SHARDS:-2}" ${SERVER_ARGS:-} >"$DIR/server.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
"$B" --target "dynakv://127.0.0.1:$PORT" --workload get --keys "${KEYS:-100000}" --value-size 100 --ops 1000 --no-progress >/dev/null
"$B" --target "dynakv://127.0.0.1:$PORT" --workload "${WL:-put}" --no-load --keys "${KEYS:-100000}" --value-size 100 \
    --connections 50 --pipeline "${PIPE:-16}" --duration 14s --no-progress --json "$DIR/run.json" >/dev/null &
GP=$!
sleep 3
perf record -o "$DATA" --call-graph dwarf,16384 -F 400 -p "$SP" -- sleep 6 >/dev/null 2>&1
wait $GP
python3 -c "import json; print(f\"ops/s {json.load(open('$DIR/run.json'))['throughput_ops_s']:.0f}\")"
perf script -i "$DATA" -F ip,sym 2>/dev/null | python3 -c '
import sys
names = sys.argv[1:]
total, hits = 0, dict.fromkeys(names, 0)
for sample in sys.stdin.read().split("\n\n"):
    frames = [l.strip().split(" ", 1)[-1] for l in sample.strip().split("\n") if l.strip()]
    if not frames:
        continue
    total += 1
    for n in names:
        hits[n] += any(n in f for f in frames)
print("samples", total)
for n in names:
    print(f"{n} {100 * hits[n] / max(total, 1):.2f}%")
' "$@"
