#!/usr/bin/env bash
# Deterministic user-space instructions per request of one dynakv shard, for
# A/B checks of request-path changes on a noisy machine. Starts a 1-shard node
# under `valgrind --tool=callgrind` (collection off), loads the keys, then
# counts instructions over a fixed run of OPS operations of each workload
# (ping, get, put) and prints instructions per operation.
#   tools/callgrind-per-op.sh 7950                 # all three workloads
#   WLS="get put" OPS=20000 PIPE=16 tools/callgrind-per-op.sh 7950
# Environment: WLS (workloads, default "ping get put"), OPS (default 20000),
# PIPE (pipeline depth, default 16), CONNS (default 10), KEYS (default 1000),
# VALUE (value size, default 100), OUTDIR (keeps the callgrind files there),
# DYNAKV / BENCH (the binaries, default target/release/...).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1; shift
OPS=${OPS:-20000}; PIPE=${PIPE:-16}; CONNS=${CONNS:-10}; KEYS=${KEYS:-1000}; VALUE=${VALUE:-100}
DIR=$(mktemp -d)
OUT=${OUTDIR:-$DIR/cg}
mkdir -p "$OUT"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.%p" \
  "${DYNAKV:-target/release/dynakv}" server --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" --shards 1 \
  --io-memory-bytes 262144 "$@" >"$DIR/server.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
B=${BENCH:-target/release/dynakv-bench}
run() { $B --target "dynakv://127.0.0.1:$PORT" --no-progress --timeout 60s "$@" >"$DIR/bench.log" 2>&1 \
  || { cat "$DIR/bench.log"; exit 1; }; }
run --workload get --keys "$KEYS" --value-size "$VALUE" --ops 1000 --connections 1
# Let start-up work (the anti-entropy trees' first build) finish, and warm
# the connections' paths, before anything is counted.
sleep 3
run --workload ping --ops 5000 --connections "$CONNS" --pipeline "$PIPE"
for wl in ${WLS:-ping get put}; do
  callgrind_control -i on "$SP" >/dev/null 2>&1
  callgrind_control -z "$SP" >/dev/null 2>&1
  run --workload "$wl" --no-load --keys "$KEYS" --value-size "$VALUE" --ops "$OPS" \
    --connections "$CONNS" --pipeline "$PIPE"
  callgrind_control -d "$wl" "$SP" >/dev/null 2>&1
  callgrind_control -i off "$SP" >/dev/null 2>&1
  f=$(ls -t "$OUT"/callgrind.$SP.* | head -1)
  ir=$(grep -h '^summary:\|^totals:' "$f" | head -1 | awk '{print $2}')
  echo "$wl: $(python3 -c "print(round($ir / $OPS))") instructions/op ($ir over $OPS ops, pipeline $PIPE, $CONNS connections)"
done
