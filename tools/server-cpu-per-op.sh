#!/usr/bin/env bash
# Server CPU microseconds per operation for one workload, from /proc: starts a
# 2-shard node with the given extra flags, loads 10,000 keys, runs 200,000
# operations (50 connections), and divides the server's utime+stime by them.
# Used for A/B checks of one setting, e.g. the per-read idle timer:
#   tools/server-cpu-per-op.sh 7700                       # default
#   tools/server-cpu-per-op.sh 7700 --idle-timeout-ms 0   # no idle timer
# Environment: WL (get|put|ping, default get), PIPE (pipeline depth, default 1),
# DYNAKV (the server binary, default target/release/dynakv).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1; shift
DIR=$(mktemp -d)
"${DYNAKV:-target/release/dynakv}" server --data-dir "$DIR" --listen "127.0.0.1:$PORT" --shards 2 "$@" >/dev/null 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
B=target/release/dynakv-bench
$B --target "dynakv://127.0.0.1:$PORT" --workload get --keys 10000 --ops 10000 --no-progress >/dev/null 2>&1
cpu() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SP/stat"; }
c0=$(cpu)
$B --target "dynakv://127.0.0.1:$PORT" --workload "${WL:-get}" --no-load --keys 10000 --ops 200000 \
   --connections 50 --pipeline "${PIPE:-1}" --no-progress 2>&1 | grep throughput
c1=$(cpu)
echo "server CPU us/op: $(python3 -c "print(round(($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / 200000, 2))")"
