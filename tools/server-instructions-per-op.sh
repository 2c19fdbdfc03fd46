#!/usr/bin/env bash
# User-space instructions per operation of a 1-shard node, from callgrind:
# a deterministic A/B measure on a noisy machine (kernel time is not counted;
# see tools/server-cpu-per-op.sh for system calls per operation).
# Starts the node under `valgrind --tool=callgrind`, loads 10,000 keys, zeroes
# the counters, runs OPS operations, dumps, and prints instructions per op.
#   tools/server-instructions-per-op.sh 7700 [extra server flags]
# Environment: WL (ping|get|put, default ping), PIPE (default 1), CONNS (default 10),
# OPS (default 20000), DYNAKV / BENCH (binaries), KEEP (directory to keep the
# callgrind output in, for callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1; shift
DYNAKV=${DYNAKV:-target/release/dynakv}
B=${BENCH:-target/release/dynakv-bench}
OPS=${OPS:-20000}
DIR=$(mktemp -d)
OUTF=$DIR/callgrind.out
valgrind --tool=callgrind --callgrind-out-file="$OUTF" "$DYNAKV" server --data-dir "$DIR/data" \
    --listen "127.0.0.1:$PORT" --shards 1 --io-memory-bytes 262144 "$@" >"$DIR/log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 600); do grep -q "dynakv ready" "$DIR/log" 2>/dev/null && break; sleep 0.1; done
$B --target "dynakv://127.0.0.1:$PORT" --workload get --keys 10000 --ops 10000 --no-progress >/dev/null 2>&1
callgrind_control -z "$SP" >/dev/null
$B --target "dynakv://127.0.0.1:$PORT" --workload "${WL:-ping}" --no-load --keys 10000 --ops "$OPS" \
   --connections "${CONNS:-10}" --pipeline "${PIPE:-1}" --no-progress >/dev/null 2>&1
callgrind_control -d "$SP" >/dev/null
sleep 1
total=0
for f in "$OUTF".*; do
    n=$(awk '/^summary:|^totals:/ { print $2; exit }' "$f")
    total=$((total + ${n:-0}))
done
echo "user-space instructions per op: $((total / OPS)) (${WL:-ping}, pipeline ${PIPE:-1}, ${CONNS:-10} connections, $OPS ops)"
if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP"; cp "$OUTF".* "$KEEP"/; fi
