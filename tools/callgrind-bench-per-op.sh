#!/usr/bin/env bash
# Deterministic user-space instructions per request of the load generator
# itself (`dynakv-bench`), for A/B checks of client-side changes on a noisy
# machine (issue #4: the generator shares the server's cores). Starts a
# native 1-shard node, loads the keys, then runs the generator under
# `valgrind --tool=callgrind` twice per workload, with OPS1 and OPS2
# operations, and prints (Ir(OPS2) - Ir(OPS1)) / (OPS2 - OPS1): start-up,
# connecting and the report cancel out.
#   tools/callgrind-bench-per-op.sh 7100                 # ping, get, put at pipeline 16
#   WLS="get put" PIPE=1 tools/callgrind-bench-per-op.sh 7100
# Environment: WLS (workloads, default "ping get put"), OPS1 / OPS2 (default
# 5000 / 25000), PIPE (pipeline depth, default 16), CONNS (default 10), KEYS
# (default 1000), VALUE (value size, default 100), OUTDIR (keeps the
# callgrind files there, named WL.OPS.out, for callgrind_annotate), DYNAKV /
# BENCH (the binaries, default target/release/...).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1; shift
OPS1=${OPS1:-5000}; OPS2=${OPS2:-25000}; PIPE=${PIPE:-16}; CONNS=${CONNS:-10}
KEYS=${KEYS:-1000}; VALUE=${VALUE:-100}
DIR=$(mktemp -d)
OUT=${OUTDIR:-$DIR/cg}
mkdir -p "$OUT"
"${DYNAKV:-target/release/dynakv}" server --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" --shards 1 \
  --io-memory-bytes 262144 "$@" >"$DIR/server.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
B=${BENCH:-target/release/dynakv-bench}
$B --target "dynakv://127.0.0.1:$PORT" --no-progress --timeout 60s --workload get --keys "$KEYS" \
  --value-size "$VALUE" --ops 1000 --connections 1 >"$DIR/bench.log" 2>&1 || { cat "$DIR/bench.log"; exit 1; }
sleep 2
count() { # workload ops -> instructions
  local f="$OUT/$1.$2.out"
  valgrind --tool=callgrind --callgrind-out-file="$f" $B --target "dynakv://127.0.0.1:$PORT" \
    --no-progress --timeout 60s --workload "$1" --no-load --keys "$KEYS" --value-size "$VALUE" \
    --ops "$2" --connections "$CONNS" --pipeline "$PIPE" >"$DIR/bench.log" 2>&1 \
    || { cat "$DIR/bench.log" >&2; exit 1; }
  grep -h '^summary:\|^totals:' "$f" | head -1 | awk '{print $2}'
}
for wl in ${WLS:-ping get put}; do
  a=$(count "$wl" "$OPS1")
  b=$(count "$wl" "$OPS2")
  echo "$wl: $(python3 -c "print(round(($b - $a) / ($OPS2 - $OPS1)))") generator instructions/op" \
    "(($b - $a) / ($OPS2 - $OPS1), pipeline $PIPE, $CONNS connections)"
done
