#!/usr/bin/env python3
"""Single-node dynakv benchmarks, each a comparison taken in one run.

1. ceiling:   PING vs GET vs PUT on the same node (closed loop, pipeline 1 and 16),
              interleaved, REPEATS times; GET/PING and PUT/PING ratios of medians.
2. cores:     1 shard vs 2 shards, GET-heavy mix; throughput and ops per server CPU-second.
3. latency:   open loop at 50% and 75% of the measured maximum GET rate; p50/p99/p99.9
              of GET vs PING at the same rate.

Usage: tools/bench-single-node.py [--quick] [--ceiling-only | --latency-only]   (build first: cargo build --release --workspace)
--ceiling-only runs section 1 alone (for A/B of two server binaries: DYNAKV=... each).
--latency-only runs section 3 alone, after measuring the closed-loop GET maximum it needs
               (pipeline 1, 50 connections, REPEATS runs, median) on the same node.
Environment: BENCH, DYNAKV (binaries), DURATION (s, default 5), REPEATS (3), OUT (results dir).
Prints markdown tables; every run's JSON is kept under OUT.
"""
import json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import dynakv_ports, flags, pick_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.environ.get("BENCH", os.path.join(ROOT, "target/release/dynakv-bench"))
DYNAKV = os.environ.get("DYNAKV", os.path.join(ROOT, "target/release/dynakv"))
FLAGS = flags(__doc__, ("--quick", "--ceiling-only", "--latency-only"))
QUICK = "--quick" in FLAGS
DURATION = int(os.environ.get("DURATION", "1" if QUICK else "5"))
REPEATS = int(os.environ.get("REPEATS", "1" if QUICK else "3"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "target/bench-results", time.strftime("single-%Y%m%dT%H%M%SZ", time.gmtime())))
os.makedirs(OUT, exist_ok=True)
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


class Node:
    def __init__(self, shards):
        self.dir = tempfile.mkdtemp(prefix="dynakv-bench-")
        self.port = pick_port(["127.0.0.1"], dynakv_ports(shards))
        self.err = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen([DYNAKV, "server", "--data-dir", self.dir, "--listen", f"127.0.0.1:{self.port}",
                                      "--shards", str(shards)], stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("dynakv ready"):
            self.err.seek(0)
            raise SystemExit(f"dynakv did not start: {line!r}\n{self.err.read()[-2000:]}")
        self.url = f"dynakv://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate(); self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


WARMUP_S = 1


def run(node, name, workload, *extra):
    path = os.path.join(OUT, f"{name}.json")
    timed = "--ops" not in extra
    length = ["--duration", f"{DURATION}s", "--warmup", f"{WARMUP_S}s"] if timed else []
    cmd = [BENCH, "--target", node.url, "--workload", workload, *length, "--keys", "100000", "--timeout", "10s",
           "--no-progress", "--json", path, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The server's CPU is read when the measured part starts: counted from the
    # launch, the warm-up's CPU was charged to the measured operations (server CPU
    # per op came out about 4/3 too high with 3 s runs). The generator connects
    # before its warm-up, so this reads a little early. Timed runs here load no keys
    # (each section loads them in a run of its own first).
    if timed:
        time.sleep(WARMUP_S)
    before = cpu_seconds(node.proc.pid)
    _, stderr = proc.communicate()
    after = cpu_seconds(node.proc.pid)
    if proc.returncode != 0:
        print(f"run failed: {' '.join(cmd)}\n{stderr}", file=sys.stderr)
        return None
    j = json.load(open(path))
    j["server_cpu_s"] = after - before
    j["command"] = " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)
    return j


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def ceiling():
    node = Node(2)
    rows = {}
    try:
        run(node, "ceiling-load", "get", "--ops", "1000", "--value-size", "100")  # populate keys once
        for pipeline in (1, 16):
            for r in range(REPEATS):
                order = ["ping", "get", "put"]
                order = order[r % 3:] + order[:r % 3]
                for wl in order:
                    j = run(node, f"ceiling-{wl}-p{pipeline}-r{r}", wl, "--connections", "50", "--pipeline", str(pipeline),
                            "--no-load", "--value-size", "100")
                    if j:
                        rows.setdefault((pipeline, wl), []).append(j)
    finally:
        node.stop()
    print("\n### Ceiling: PING vs GET vs PUT, one node, 2 shards, 50 connections, 100-byte values\n")
    print("| pipeline | op | ops/s (median) | spread | vs PING | p50 us | p99 us | p99.9 us | server CPU us/op | generator CPU us/op | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for pipeline in (1, 16):
        ping = med([j["throughput_ops_s"] for j in rows.get((pipeline, "ping"), [])])
        for wl in ("ping", "get", "put"):
            js = rows.get((pipeline, wl), [])
            if not js:
                continue
            t = [j["throughput_ops_s"] for j in js]
            cpu = med([j["server_cpu_s"] * 1e6 / max(1, j["ops"]) for j in js])
            print(f"| {pipeline} | {wl} | {med(t):.0f} | {min(t):.0f}-{max(t):.0f} | {med(t) / ping:.2f} | "
                  f"{med([j['latency_us']['p50'] for j in js]):.0f} | {med([j['latency_us']['p99'] for j in js]):.0f} | "
                  f"{med([j['latency_us']['p999'] for j in js]):.0f} | {cpu:.1f} | {med([j['generator_cpu_us_per_op'] for j in js]):.1f} | "
                  f"{sum(j['errors'] for j in js)} |")
    print(f"\ncommand (one run): `{rows[(1, 'get')][0]['command']}`")
    return med([j["throughput_ops_s"] for j in rows.get((1, "get"), [])])


def cores():
    rows = {}
    for r in range(REPEATS):
        for shards in ((1, 2) if r % 2 == 0 else (2, 1)):
            node = Node(shards)
            try:
                # Keys loaded by a run of their own, so that the measured run's server
                # CPU is the mix's alone.
                run(node, f"cores-load-s{shards}-r{r}", "get", "--ops", "1000", "--value-size", "100")
                j = run(node, f"cores-s{shards}-r{r}", "mixed", "--read-ratio", "0.9", "--connections", "50", "--pipeline", "16",
                        "--value-size", "100", "--threads", "1", "--no-load")
                if j:
                    rows.setdefault(shards, []).append(j)
            finally:
                node.stop()
    print("\n### Cores: 1 shard vs 2 shards, 90% GET / 10% PUT, 50 connections x pipeline 16\n")
    print("| shards | ops/s (median) | spread | ops per server CPU-s | p99 us | generator saturated |")
    print("|---|---|---|---|---|---|")
    for shards in (1, 2):
        js = rows.get(shards, [])
        t = [j["throughput_ops_s"] for j in js]
        eff = [j["ops"] / j["server_cpu_s"] for j in js if j["server_cpu_s"] > 0]
        print(f"| {shards} | {med(t):.0f} | {min(t):.0f}-{max(t):.0f} | {med(eff):.0f} | {med([j['latency_us']['p99'] for j in js]):.0f} | "
              f"{any(j['generator_saturated'] for j in js)} |")
    if rows.get(1) and rows.get(2):
        t1 = med([j["throughput_ops_s"] for j in rows[1]]); t2 = med([j["throughput_ops_s"] for j in rows[2]])
        print(f"\n2 shards / 1 shard throughput: {t2 / t1:.2f}x")


def latency(max_get):
    node = Node(2)
    rows = {}
    try:
        run(node, "latency-load", "get", "--ops", "1000", "--value-size", "100")
        if max_get is None:
            # --latency-only: the closed-loop maximum the rates are fractions of, as the
            # ceiling measures it (pipeline 1, 50 connections), on this node.
            runs = [run(node, f"latency-max-r{r}", "get", "--connections", "50", "--pipeline", "1", "--no-load",
                        "--value-size", "100") for r in range(REPEATS)]
            max_get = med([j["throughput_ops_s"] for j in runs if j])
        for frac in (0.5, 0.75):
            rate = int(max_get * frac)
            for r in range(REPEATS):
                for wl in (("ping", "get") if r % 2 == 0 else ("get", "ping")):
                    j = run(node, f"latency-{wl}-{int(frac * 100)}-r{r}", wl, "--connections", "50", "--rate", str(rate), "--no-load",
                            "--value-size", "100")
                    if j:
                        rows.setdefault((frac, wl), []).append(j)
    finally:
        node.stop()
    print(f"\n### Latency under load: open loop at 50% and 75% of the closed-loop GET maximum ({max_get:.0f} ops/s), 50 connections\n")
    print("| load | op | rate achieved | p50 us | p99 us | p99.9 us | p99.9 / p50 |")
    print("|---|---|---|---|---|---|---|")
    for frac in (0.5, 0.75):
        for wl in ("ping", "get"):
            js = rows.get((frac, wl), [])
            if not js:
                continue
            p50 = med([j["latency_us"]["p50"] for j in js]); p999 = med([j["latency_us"]["p999"] for j in js])
            print(f"| {int(frac * 100)}% | {wl} | {med([j['throughput_ops_s'] for j in js]):.0f} | {p50:.0f} | "
                  f"{med([j['latency_us']['p99'] for j in js]):.0f} | {p999:.0f} | {p999 / p50:.1f} |")


if __name__ == "__main__":
    for binary in (BENCH, DYNAKV):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} not found: cargo build --release --workspace")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, duration {DURATION}s per run, {REPEATS} repeats, results in {OUT}")
    if "--latency-only" in FLAGS:
        latency(None)
        raise SystemExit(0)
    max_get = ceiling()
    if "--ceiling-only" in FLAGS:
        raise SystemExit(0)
    cores()
    latency(max_get)
