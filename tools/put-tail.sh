#!/usr/bin/env bash
# The tail latency of a sustained PUT load, where compaction and segment rotations
# run under it: a fresh node of SHARDS shards (extra arguments go to the server),
# KEYS keys of 100 bytes loaded, then RUNS runs of PUT at pipeline 16 (50
# connections, 1 s warm-up, DURATION). One line per run: ops/s, p50, p99, p99.9
# and max in microseconds. Used for BENCHMARKS.md §2zh:
#   tools/put-tail.sh 7830                                   # defaults
#   tools/put-tail.sh 7830 --compaction-bytes-per-second 1048576
#   DYNAKV=/tmp/dynakv-base tools/put-tail.sh 7830           # another binary
# Environment: DYNAKV, BENCH (binaries, default target/release/...), SHARDS
# (default 2), KEYS (default 100000), RUNS (default 3), DURATION (default 5s).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1; shift
DYNAKV=${DYNAKV:-target/release/dynakv}
B=${BENCH:-target/release/dynakv-bench}
DIR=$(mktemp -d)
"$DYNAKV" server --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" --shards "${SHARDS:-2}" "$@" >"$DIR/server.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
"$B" --target "dynakv://127.0.0.1:$PORT" --workload get --keys "${KEYS:-100000}" --value-size 100 --ops 1000 --no-progress >/dev/null
for _ in $(seq "${RUNS:-3}"); do
    "$B" --target "dynakv://127.0.0.1:$PORT" --workload put --no-load --keys "${KEYS:-100000}" --value-size 100 \
        --connections 50 --pipeline 16 --duration "${DURATION:-5s}" --warmup 1s --no-progress --json "$DIR/run.json" >/dev/null
    python3 -c "import json; d = json.load(open('$DIR/run.json')); l = d['latency_us']; \
print(f\"{d['throughput_ops_s']:.0f} p50 {l['p50']:.0f} p99 {l['p99']:.0f} p999 {l['p999']:.0f} max {l['max']:.0f}\")"
done
