#!/usr/bin/env bash
# A/B of two dynakv server binaries with nothing attached to the server (no perf,
# no tracepoints): for each of A, B, B, A, a fresh one-shard node with a 1 GiB read
# cache, KEYS keys of VALUE_SIZE bytes loaded, then RUNS runs of bench-peers' own
# command (`--warmup 1s --duration 3s --seed 1..RUNS`). Prints, per node, each
# run's ops/s and p99 (us). Used for BENCHMARKS.md §2z, §2za, §2zb.
#   tools/ab-plain.sh /tmp/dynakv-base /tmp/dynakv-new
# Environment: WL (dynakv-bench workload, default mixed), RATIO (its read ratio,
# default 0.9, which overrides the workload's own: RATIO=0 for puts), VALUE_SIZE
# (default 64), CONNS (default 50), KEYS (default 100000), RUNS (default 3),
# PORT (default 7800), PIPE (pipeline depth, default 16), BENCH (default
# target/release/dynakv-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2
BENCH=${BENCH:-target/release/dynakv-bench}
VS=${VALUE_SIZE:-64}; KEYS=${KEYS:-100000}; PORT=${PORT:-7800}
for bin in "$A" "$B" "$B" "$A"; do
    DIR=$(mktemp -d)
    "$bin" server --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" --shards 1 \
        --read-cache-bytes 1073741824 >"$DIR/server.log" 2>&1 &
    SP=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    "$BENCH" --target "dynakv://127.0.0.1:$PORT" --workload get --load --keys "$KEYS" --value-size "$VS" \
        --ops 1 --connections 50 --pipeline 16 --no-progress >/dev/null 2>&1
    line="$bin:"
    for seed in $(seq "${RUNS:-3}"); do
        "$BENCH" --target "dynakv://127.0.0.1:$PORT" --workload "${WL:-mixed}" --read-ratio "${RATIO:-0.9}" --no-load \
            --keys "$KEYS" --key-dist uniform --value-size "$VS" --connections "${CONNS:-50}" --pipeline "${PIPE:-16}" \
            --threads 1 --warmup 1s --duration 3s --seed "$seed" --no-progress --json "$DIR/run.json" >/dev/null 2>&1
        line+=" $(python3 -c "import json; d = json.load(open('$DIR/run.json')); print(f\"{d['throughput_ops_s']:.0f}({d['latency_us']['p99']:.0f})\")")"
    done
    echo "$line"
    kill "$SP"; wait "$SP" 2>/dev/null || true
    rm -rf "$DIR"
done
