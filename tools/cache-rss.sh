#!/usr/bin/env bash
# A one-shard node's resident memory while puts overwrite keys that its read
# cache holds: the check that the cache costs what `read_cache_bytes` says
# (BENCHMARKS.md §2z). Starts the node with a read cache larger than the key
# space, loads KEYS keys of VALUE_SIZE bytes, prints the server's RSS, then
# overwrites them with `put` at pipeline 16 for DURATION seconds, printing the
# RSS every 5 s. The payloads' own bytes are about KEYS x (VALUE_SIZE + 40).
#   tools/cache-rss.sh 7713
# Environment: DYNAKV / BENCH (binaries, default target/release/...), KEYS
# (default 100000), VALUE_SIZE (default 1024), DURATION (seconds, default 20),
# CACHE (read cache bytes, default 1073741824), CONNS (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1
DYNAKV=${DYNAKV:-target/release/dynakv}
B=${BENCH:-target/release/dynakv-bench}
KEYS=${KEYS:-100000}; VS=${VALUE_SIZE:-1024}; DURATION=${DURATION:-20}
DIR=$(mktemp -d)
"$DYNAKV" server --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" --shards 1 \
    --read-cache-bytes "${CACHE:-1073741824}" >"$DIR/server.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
rss() { awk '/VmRSS/ { printf "%d MB", $2 / 1024 }' "/proc/$SP/status"; }
"$B" --target "dynakv://127.0.0.1:$PORT" --workload get --load --keys "$KEYS" --value-size "$VS" \
    --ops 1 --connections 50 --pipeline 16 --no-progress >/dev/null
echo "loaded $KEYS keys of $VS bytes: RSS $(rss)"
"$B" --target "dynakv://127.0.0.1:$PORT" --workload put --no-load --keys "$KEYS" --value-size "$VS" \
    --connections "${CONNS:-50}" --pipeline 16 --duration "${DURATION}s" --no-progress >"$DIR/bench.txt" 2>&1 &
BP=$!
for ((t = 5; t <= DURATION; t += 5)); do sleep 5; echo "overwriting, ${t} s: RSS $(rss)"; done
wait $BP
grep throughput "$DIR/bench.txt"
