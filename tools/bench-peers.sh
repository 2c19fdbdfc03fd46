#!/usr/bin/env bash
# bench-peers.sh — interleaved A/B runs of dynakv-bench against Redis (no
# persistence, and AOF with appendfsync everysec), memcached and, when its
# binary exists, a dynakv node; the same load generator drives all of them.
#
# For every cell of the matrix (connections x value size x key distribution)
# and every repeat, the targets run one after another in a rotating order, so
# slow drift of a shared, noisy machine spreads over all targets instead of
# biasing one. Before each run, every key is written at the cell's value size,
# in a run of its own that is not measured. Each run writes its JSON; the server's
# CPU seconds from the end of the run's warm-up to its end come from
# /proc/PID/stat (utime + stime). The script ends with a markdown
# table of medians (and the min-max spread of throughput).
#
# Usage: tools/bench-peers.sh [--quick]
# Environment (defaults in brackets):
#   BENCH     load generator          [target/release/dynakv-bench]
#   DYNAKV    dynakv binary           [target/release/dynakv]; skipped if missing
#   SHARDS    dynakv shards           [2]
#   DURATION  measured time per run   [10s]     WARMUP  [2s]
#   REPEATS   repeats per cell        [3]
#   WORKLOAD  dynakv-bench workload   [mixed]   READ_RATIO [0.9]
#   KEYS      key space               [100000]
#   READ_CACHE  dynakv's read cache over all its shards, in bytes [1073741824]:
#             the 1 GiB memcached gets (-m 1024), so that, like the in-memory
#             servers, dynakv reads a data set that fits from memory (its
#             default, 32 MiB per shard, holds about 29,000 of 100,000 1 KiB
#             values; the rest are disk reads)
#   THREADS   generator threads       [1]       PIPELINE [1]
#   CONNS     connection counts       ["50 200"]
#   SIZES     value sizes             ["64 1024"]
#   DISTS     key distributions       ["uniform zipfian"]
#   TARGETS   which targets           ["redis redis-aof memcached dynakv dynakv1"]
#             (dynakvN: a dynakv node of N shards, plain dynakv has SHARDS;
#             memcachedN: memcached with N worker threads, plain memcached
#             has its default of 4)
#   OUT       results directory       [target/bench-results/<UTC timestamp>]
set -euo pipefail

cd "$(dirname "$0")/.."

BENCH=${BENCH:-target/release/dynakv-bench}
DYNAKV=${DYNAKV:-target/release/dynakv}
SHARDS=${SHARDS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
REPEATS=${REPEATS:-3}
WORKLOAD=${WORKLOAD:-mixed}
READ_RATIO=${READ_RATIO:-0.9}
KEYS=${KEYS:-100000}
READ_CACHE=${READ_CACHE:-1073741824}
THREADS=${THREADS:-1}
PIPELINE=${PIPELINE:-1}
CONNS=${CONNS:-"50 200"}
SIZES=${SIZES:-"64 1024"}
DISTS=${DISTS:-"uniform zipfian"}
TARGETS=${TARGETS:-"redis redis-aof memcached dynakv dynakv1"}
OUT=${OUT:-target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}

case "$#:${1:-}" in
    0:) ;;
    1:--quick) DURATION=1s WARMUP=0s REPEATS=1 CONNS=50 SIZES=64 DISTS=uniform ;;
    1:-h | 1:--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-peers: unknown argument(s): $*; usage: tools/bench-peers.sh [--quick]" >&2; exit 2 ;;
esac

[[ -x $BENCH ]] || { echo "bench-peers: $BENCH not found; run: cargo build --release -p dynakv-bench" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-peers: python3 is needed for the summary" >&2; exit 1; }

mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    # A generator still running (the script was interrupted during a run).
    [[ -n ${bench_pid:-} ]] && kill "$bench_pid" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A base port free for every port the target binds (dynakv: base, a client port per
# shard, an internode port per shard from base + 100).
free_port() {
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import benchlib
print(benchlib.pick_port(["127.0.0.1"], benchlib.dynakv_ports(int(sys.argv[2])), start=int(sys.argv[3])))' \
        "$(dirname "$0")" "${1:-0}" "$((21000 + RANDOM % 20000))"
}

wait_port() { # port — wait (up to 10 s) until something accepts connections on it
    local deadline=$((SECONDS + 10))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        (( SECONDS < deadline )) || { echo "bench-peers: nothing listens on $1" >&2; return 1; }
        sleep 0.1
    done
}

# WARMUP in seconds for sleep(1), from the generator's duration syntax
# (ns, us, ms, s, m, h; no unit: seconds).
WARMUP_S=$(python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)(ns|us|ms|s|m|min|h|)", sys.argv[1].strip())
if not m:
    sys.exit(f"bench-peers: WARMUP={sys.argv[1]!r} is not a duration (e.g. 2s, 500ms)")
scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "": 1, "s": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
print(float(m.group(1)) * scale)' "$WARMUP")

cpu_seconds() { # pid — utime + stime of the process, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

declare -A URL PID
start_targets() {
    local port
    for t in $TARGETS; do
        case $t in
        redis)
            command -v redis-server >/dev/null || { echo "skip redis: no redis-server" >&2; continue; }
            port=$(free_port)
            redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
                --dir "$WORK" --logfile "$WORK/redis.log" & PID[$t]=$!
            URL[$t]=redis://127.0.0.1:$port ;;
        redis-aof)
            command -v redis-server >/dev/null || { echo "skip redis-aof: no redis-server" >&2; continue; }
            port=$(free_port)
            mkdir -p "$WORK/aof"
            redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes \
                --appendfsync everysec --dir "$WORK/aof" --logfile "$WORK/redis-aof.log" & PID[$t]=$!
            URL[$t]=redis://127.0.0.1:$port ;;
        memcached | memcached[1-9]*)
            command -v memcached >/dev/null || { echo "skip $t: memcached not installed" >&2; continue; }
            threads=${t#memcached}
            [[ $threads =~ ^[0-9]*$ ]] || { echo "bench-peers: unknown target $t" >&2; exit 2; }
            port=$(free_port)
            memcached -l 127.0.0.1 -p "$port" -U 0 -m 1024 -t "${threads:-4}" -u "$(id -un)" & PID[$t]=$!
            URL[$t]=memcache://127.0.0.1:$port ;;
        dynakv | dynakv[1-9]*)
            [[ -x $DYNAKV ]] || { echo "skip $t: $DYNAKV not built" >&2; continue; }
            shards=${t#dynakv}
            [[ $shards =~ ^[0-9]*$ ]] || { echo "bench-peers: unknown target $t" >&2; exit 2; }
            shards=${shards:-$SHARDS}
            port=$(free_port "$shards")
            mkdir -p "$WORK/$t"
            "$DYNAKV" server --data-dir "$WORK/$t" --listen "127.0.0.1:$port" --shards "$shards" \
                --read-cache-bytes "$((READ_CACHE / shards))" >"$WORK/$t.log" 2>&1 & PID[$t]=$!
            URL[$t]=dynakv://127.0.0.1:$port ;;
        *) echo "bench-peers: unknown target $t" >&2; exit 2 ;;
        esac
        PIDS+=("${PID[$t]}")
        wait_port "${URL[$t]##*:}"
    done
}

start_targets
ACTIVE=()
for t in $TARGETS; do [[ -n ${URL[$t]:-} ]] && ACTIVE+=("$t"); done
(( ${#ACTIVE[@]} > 0 )) || { echo "bench-peers: no target could be started" >&2; exit 1; }

RESULTS=$OUT/results.tsv
printf 'target\tconnections\tvalue_bytes\tkey_dist\trepeat\tjson\tserver_cpu_s\n' >"$RESULTS"
rotation=0
for ((r = 1; r <= REPEATS; r++)); do
    for c in $CONNS; do for v in $SIZES; do for d in $DISTS; do
        # Rotate the order of the targets for every cell and repeat.
        n=${#ACTIVE[@]}
        for ((i = 0; i < n; i++)); do
            t=${ACTIVE[$(((i + rotation) % n))]}
            json=$OUT/$t-c$c-v$v-$d-r$r.json
            # Every key is written with a value of this cell's size before each
            # run, in a run of its own (pipelined, so it is quick), and the
            # measured run skips its load phase. A load inside the measured run
            # put its writes' CPU on the measured operations, which hurt most
            # the server whose writes cost most and the runs with the fewest
            # operations (pipeline 1). Loading before every run, not once,
            # starts each run from the same data: dynakv's load reads each key
            # and writes with its context, so siblings that concurrent blind
            # writers left on hot keys in one run do not pile up over the next.
            load_log=$OUT/load-$t-c$c-v$v-$d-r$r.txt
            "$BENCH" --target "${URL[$t]}" --workload get --load --keys "$KEYS" --value-size "$v" \
                --ops 1 --connections 50 --pipeline 16 --no-progress >"$load_log" 2>&1 \
                || echo "bench-peers: load failed: $t v=$v (see $load_log)" >&2
            "$BENCH" --target "${URL[$t]}" --workload "$WORKLOAD" --read-ratio "$READ_RATIO" --no-load \
                --keys "$KEYS" --key-dist "$d" --value-size "$v" --connections "$c" \
                --pipeline "$PIPELINE" --threads "$THREADS" --warmup "$WARMUP" --duration "$DURATION" \
                --seed "$r" --no-progress --json "$json" >"${json%.json}.txt" 2>&1 &
            bench_pid=$!
            # The server's CPU is read from the end of the warm-up (the
            # generator connects just before it, so this reads a little early).
            sleep "$WARMUP_S"
            before=$(cpu_seconds "${PID[$t]}")
            wait "$bench_pid" \
                || echo "bench-peers: run failed: $t c=$c v=$v $d r=$r (see ${json%.json}.txt)" >&2
            after=$(cpu_seconds "${PID[$t]}")
            cpu=$(python3 -c "print(round($after - $before, 3))")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$c" "$v" "$d" "$r" "$json" "$cpu" >>"$RESULTS"
        done
        rotation=$((rotation + 1))
    done; done; done
done

python3 - "$RESULTS" <<'PY' | tee "$OUT/summary.md"
import csv, json, statistics, sys
rows = {}
for row in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    try:
        j = json.load(open(row["json"]))
    except (OSError, ValueError):
        continue
    key = (row["connections"], row["value_bytes"], row["key_dist"], row["target"])
    ops = j["ops"] + j["errors"]
    cpu = float(row["server_cpu_s"])
    # The server's CPU covers the measured part (from the end of the
    # warm-up), not the load, which runs on its own.
    reads = j.get("reads", {})
    versions = reads.get("siblings_seen", 0) / reads["hits"] if reads.get("hits") else 1.0
    rows.setdefault(key, []).append((j["throughput_ops_s"], j["latency_us"]["p50"],
        j["latency_us"]["p99"], j["latency_us"]["p999"], j["errors"], ops / cpu if cpu > 0 else 0.0,
        j["generator_saturated"], versions))
med = lambda xs: statistics.median(xs)
# versions per read: the values a read hit returned (siblings, for dynakv; 1 for the others)
print("| conns | value | dist | target | ops/s (median) | spread | p50 us | p99 us | p99.9 us | errors | ops per server CPU-s | versions per read | runs |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows, key=lambda k: (int(k[0]), int(k[1]), k[2], k[3])):
    rs = rows[key]
    tput = [r[0] for r in rs]
    sat = " (generator saturated)" if any(r[6] for r in rs) else ""
    print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {med(tput):.0f}{sat} | {min(tput):.0f}-{max(tput):.0f} | "
          f"{med([r[1] for r in rs]):.1f} | {med([r[2] for r in rs]):.1f} | {med([r[3] for r in rs]):.1f} | "
          f"{sum(r[4] for r in rs)} | {med([r[5] for r in rs]):.0f} | {med([r[7] for r in rs]):.2f} | {len(rs)} |")
PY
echo "bench-peers: results in $OUT"
