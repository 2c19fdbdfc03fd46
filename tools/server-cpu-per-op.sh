#!/usr/bin/env bash
# Server CPU microseconds and system calls per operation for one workload:
# starts a node of SHARDS shards with the given extra flags, loads KEYS keys, then
# REPEATS times runs 200,000 operations (50 connections) and divides the
# server's utime+stime (from /proc) and, when `perf` can read the kernel's
# syscall tracepoints, its system calls and context switches by them. Used
# for A/B checks of one change or setting, e.g. the idle timeout:
#   tools/server-cpu-per-op.sh 7700                       # default
#   tools/server-cpu-per-op.sh 7700 --idle-timeout-ms 0   # no idle timeout
# Environment: WL (get|put|ping, default get), PIPE (pipeline depth, default 1),
# REPEATS (default 1), OPS (default 200000), CONNS (default 50), KEYS (key
# space, default 10000; the ceiling uses 100000), VALUE_SIZE (bytes, default 100),
# SHARDS (default 2),
# DYNAKV / BENCH (binaries, default target/release/...), SERVER (dynakv, the
# default, or redis or memcached, with THREADS: the same figures for a peer, the
# extra flags going to that server).
# SYSCALLS=0 skips the counting: the tracepoints it attaches to the server tax every
# system call and context switch, so a change that alters how many there are (how
# replies are sent, how often a shard sleeps) looks better or worse under them than
# it is (BENCHMARKS.md §2za); time such a change with SYSCALLS=0 or dynakv-bench alone.
# Each run prints one line (server CPU per op, and its user and kernel parts, and
# the machine's rescheduling and function-call IPIs per op from /proc/interrupts);
# the syscall counts are deterministic enough to
# compare across builds on a noisy machine, the CPU time is not (use medians).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1; shift
DYNAKV=${DYNAKV:-target/release/dynakv}
B=${BENCH:-target/release/dynakv-bench}
OPS=${OPS:-200000}
DIR=$(mktemp -d)
case ${SERVER:-dynakv} in
dynakv)
    "$DYNAKV" server --data-dir "$DIR" --listen "127.0.0.1:$PORT" --shards "${SHARDS:-2}" "$@" >/dev/null 2>&1 &
    URL=dynakv://127.0.0.1:$PORT ;;
redis) # the same figures for Redis (no persistence), to compare in one window
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" "$@" >/dev/null 2>&1 &
    URL=redis://127.0.0.1:$PORT ;;
memcached) # memcached with THREADS worker threads (default 4)
    memcached -l 127.0.0.1 -p "$PORT" -U 0 -m 1024 -t "${THREADS:-4}" -u "$(id -un)" "$@" >/dev/null 2>&1 &
    URL=memcache://127.0.0.1:$PORT ;;
*) echo "server-cpu-per-op: SERVER is dynakv, redis or memcached" >&2; exit 2 ;;
esac
SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
VS=${VALUE_SIZE:-100}
$B --target "$URL" --workload get --keys "${KEYS:-10000}" --value-size "$VS" --ops 10000 --no-progress >/dev/null 2>&1
cpu() { awk '{ sub(/^.*\) /, ""); print $12 + $13, $12, $13 }' "/proc/$SP/stat"; }
# Rescheduling and function-call IPIs, machine-wide (/proc/interrupts RES and CAL,
# summed over CPUs): a thread interrupted to post an io_uring completion costs one.
ipis() { awk '/^ *(RES|CAL):/ { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s[$1] += $i }
    END { print s["RES:"] + 0, s["CAL:"] + 0 }' /proc/interrupts; }
# dynakv reads and writes sockets with recvfrom/sendto, Redis and memcached with
# read/write (and epoll_wait): all are counted, so a peer's line is comparable.
# membarrier: what glommio issued before each sleep until the vendor patch of
# BENCHMARKS.md §2zm (0 since).
EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_membarrier,context-switches
COUNT=0
if [[ ${SYSCALLS:-1} != 0 ]] && command -v perf >/dev/null && perf stat -e "$EVENTS" -- true >/dev/null 2>&1; then COUNT=1; fi
for r in $(seq "${REPEATS:-1}"); do
    PERF_OUT=$DIR/perf.$r
    if (( COUNT )); then
        perf stat -x, -e "$EVENTS" -p "$SP" -o "$PERF_OUT" &
        PP=$!
        sleep 0.2
    fi
    c0=$(cpu)
    i0=$(ipis)
    report=$($B --target "$URL" --workload "${WL:-get}" --no-load --keys "${KEYS:-10000}" --value-size "$VS" --ops "$OPS" \
       --connections "${CONNS:-50}" --pipeline "${PIPE:-1}" --no-progress 2>&1)
    tput=$(awk '/throughput/ { for (i = 1; i < NF; i++) if ($i == "throughput") print $(i + 1) }' <<<"$report")
    gen=$(awk '/^generator:/ { print $2 }' <<<"$report")
    c1=$(cpu)
    i1=$(ipis)
    counts=""
    if (( COUNT )); then
        kill -INT "$PP"; wait "$PP" 2>/dev/null || true
        counts=$(awk -F, -v ops="$OPS" '/^[0-9]/ { n = $3; sub(/^(raw_)?syscalls:sys_enter_?/, "", n); if (n == "") n = "syscalls"; printf " %s/op %.3f", n, $1 / ops }' "$PERF_OUT")
    fi
    per_op=$(python3 -c "
a, b = '$c0'.split(), '$c1'.split()
us = lambda i: (int(b[i]) - int(a[i])) * 1e6 / $(getconf CLK_TCK) / $OPS
print(f'{us(0):.2f} (user {us(1):.2f}, kernel {us(2):.2f})')")
    ipi=$(awk -v a="$i0" -v b="$i1" -v ops="$OPS" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf " IPIs/op: resched %.4f, call %.4f", (y[1] - x[1]) / ops, (y[2] - x[2]) / ops }')
    echo "run $r: ops/s ${tput:-?} server CPU us/op $per_op generator us/op ${gen:-?}$counts$ipi"
done
