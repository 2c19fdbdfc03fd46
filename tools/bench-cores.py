#!/usr/bin/env python3
"""How dynakv's throughput scales with shards (cores), and how it compares with
Redis and memcached, on a machine with cores to spare for the load generator.

The server and the generator get disjoint CPU sets (taskset), so a shard never
competes with the generator for a core: dynakv's shards are pinned one per CPU
of SERVER_CPUS, the generator's threads one per CPU of GEN_CPUS (--pin). For
each shard count, pipeline depth and repeat (targets in a rotating order), a
fresh server is started, its keys loaded by a priming run, and then one
measured run without warm-up; the server's CPU seconds over the measured run
come from /proc/PID/stat, so "ops per server CPU-s" covers exactly the
measured requests (plus connection set-up).

Latency under load (issue 4's target): on one node of LATENCY_SHARDS shards,
the closed-loop GET maximum is measured, then GET and PING run open loop at
50% and 75% of it (latency from each request's intended send time), and the
table gives p50/p99/p99.9 of each against the PING at the same rate.

Peers, same generator and CPU sets: Redis (one main thread; persistence off)
pinned to the first server CPU, and memcached with as many worker threads as
the largest shard count.

Usage: tools/bench-cores.py [--quick]     (build first: cargo build --release --workspace)
Environment (defaults in brackets):
  BENCH, DYNAKV          binaries [target/release/...]
  REDIS, MEMCACHED       peer binaries [found on PATH; skipped when missing]
  PEERS                  which peers to run ["redis,memcached"; "" for none]
  SHARDS                 shard counts ["1,2,4,8"]
  SERVER_CPUS, GEN_CPUS  CPU lists for taskset [first half / second half of the CPUs]
  GEN_THREADS            generator threads [number of GEN_CPUS]
  CONNS                  connections in total [256]
  PIPELINES              depths ["1,16"]
  DURATION               measured seconds per run [5]
  REPEATS                [3]
  LATENCY_SHARDS         shard count of the latency-under-load table [4; 0 skips it]
  OUT                    results directory [target/bench-results/cores-<UTC time>]
Prints markdown tables; every run's JSON is kept under OUT.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import binaries, dynakv_ports, flags, pick_port, results_dir, run_bench  # noqa: E402

QUICK = "--quick" in flags(__doc__, ("--quick",))
BENCH, DYNAKV = binaries("release")
CPUS = sorted(os.sched_getaffinity(0))
HALF = max(1, len(CPUS) // 2)


def cpu_list(name, default):
    text = os.environ.get(name)
    if not text:
        return default
    cpus = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


SERVER_CPUS = cpu_list("SERVER_CPUS", CPUS[:HALF])
GEN_CPUS = cpu_list("GEN_CPUS", CPUS[HALF:] or CPUS)
GEN_THREADS = int(os.environ.get("GEN_THREADS", str(len(GEN_CPUS))))
SHARDS = [int(s) for s in os.environ.get("SHARDS", "1,2" if QUICK else "1,2,4,8").split(",")]
SHARDS = [s for s in SHARDS if s <= len(SERVER_CPUS)]
CONNS = int(os.environ.get("CONNS", "256"))
PIPELINES = [int(p) for p in os.environ.get("PIPELINES", "1,16").split(",")]
DURATION = int(os.environ.get("DURATION", "1" if QUICK else "5"))
REPEATS = int(os.environ.get("REPEATS", "1" if QUICK else "3"))
KEYS = 100_000
LATENCY_SHARDS = int(os.environ.get("LATENCY_SHARDS", "2" if QUICK else "4"))
OUT = results_dir("cores")
HZ = os.sysconf("SC_CLK_TCK")
PEERS = os.environ.get("PEERS", "redis,memcached").split(",")
REDIS = "redis" in PEERS and (os.environ.get("REDIS") or shutil.which("redis-server"))
MEMCACHED = "memcached" in PEERS and (os.environ.get("MEMCACHED") or shutil.which("memcached"))


def taskset(cpus):
    return ["taskset", "-c", ",".join(map(str, cpus))]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def wait_port(port):
    import socket
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Server:
    """One target process on SERVER_CPUS: dynakv with N shards, redis or memcached."""

    def __init__(self, kind, shards=1):
        self.kind, self.dir = kind, tempfile.mkdtemp(prefix="bench-cores-")
        self.port = pick_port(["127.0.0.1"], dynakv_ports(shards) if kind == "dynakv" else [0])
        if kind == "dynakv":
            cmd = [DYNAKV, "server", "--data-dir", self.dir, "--listen", f"127.0.0.1:{self.port}", "--shards", str(shards)]
            self.proc = subprocess.Popen(taskset(SERVER_CPUS) + cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            line = self.proc.stdout.readline()
            if not line.startswith("dynakv ready"):
                raise SystemExit(f"dynakv did not start: {line!r}")
            self.url = f"dynakv://127.0.0.1:{self.port}"
        elif kind == "redis":
            cmd = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", self.dir, "--logfile", os.path.join(self.dir, "log")]
            self.proc = subprocess.Popen(taskset(SERVER_CPUS[:1]) + cmd)
            self.url = f"redis://127.0.0.1:{self.port}"
        else:
            cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "1024", "-t", str(shards), "-u", "root"]
            self.proc = subprocess.Popen(taskset(SERVER_CPUS) + cmd)
            self.url = f"memcache://127.0.0.1:{self.port}"
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(server, name, pipeline, repeat):
    common = ["--target", server.url, "--keys", str(KEYS), "--value-size", "100", "--connections", str(CONNS),
              "--threads", str(GEN_THREADS), "--pin", "--timeout", "10s", "--seed", str(repeat + 1)]
    gen = taskset(GEN_CPUS)
    # Priming: loads every key, opens the connections once, warms caches.
    run_bench(gen[0], OUT, f"{name}-prime", gen[1:] + [BENCH, "--workload", "mixed", "--read-ratio", "0.9",
                                                        "--duration", "1s", "--pipeline", str(pipeline), *common])
    before = cpu_seconds(server.proc.pid)
    j = run_bench(gen[0], OUT, name, gen[1:] + [BENCH, "--workload", "mixed", "--read-ratio", "0.9", "--no-load",
                                                "--warmup", "0s", "--duration", f"{DURATION}s",
                                                "--pipeline", str(pipeline), *common])
    if j is None:
        return None
    cpu = cpu_seconds(server.proc.pid) - before
    j["server_cpu_s"] = cpu
    j["ops_per_cpu_s"] = (j["ops"] + j["errors"]) / cpu if cpu > 0 else 0.0
    return j


def latency_table():
    """Open loop at 50% and 75% of the closed-loop GET maximum."""
    shards = LATENCY_SHARDS
    server = Server("dynakv", shards)
    gen = taskset(GEN_CPUS)
    common = ["--target", server.url, "--keys", str(KEYS), "--value-size", "100", "--connections", str(CONNS),
              "--threads", str(GEN_THREADS), "--pin", "--timeout", "10s", "--no-load"]
    bench = lambda name, *args: run_bench(gen[0], OUT, name, gen[1:] + [BENCH, *common, *args])
    rows = []
    try:
        # Load every key once (a PUT of each key in order is not a workload;
        # a mixed run with the load phase is).
        run_bench(gen[0], OUT, "latency-load", gen[1:] + [BENCH, "--target", server.url, "--keys", str(KEYS),
                  "--value-size", "100", "--connections", str(CONNS), "--threads", str(GEN_THREADS), "--pin",
                  "--workload", "get", "--ops", "1000"])
        top = bench("latency-max", "--workload", "get", "--pipeline", "1", "--duration", f"{DURATION}s", "--warmup", "1s")
        if top is None:
            return
        peak = top["throughput_ops_s"]
        for share in (0.5, 0.75):
            rate = int(peak * share)
            for workload in ("ping", "get"):
                j = bench(f"latency-{workload}-{int(share * 100)}", "--workload", workload, "--rate", str(rate),
                          "--duration", f"{DURATION}s", "--warmup", "1s")
                if j:
                    rows.append((share, workload, rate, j))
    finally:
        server.stop()
    print(f"\n### Latency under load: one node, {shards} shards, open loop at 50% and 75% of the closed-loop GET "
          f"maximum ({peak:.0f} ops/s at pipeline 1, {CONNS} connections)\n")
    print("| load | op | rate asked | rate achieved | p50 us | p99 us | p99.9 us | p99.9 / p50 | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for share, workload, rate, j in rows:
        lat = j["latency_us"]
        ratio = lat["p999"] / lat["p50"] if lat["p50"] else float("nan")
        print(f"| {int(share * 100)}% | {workload} | {rate} | {j['throughput_ops_s']:.0f} | {lat['p50']:.0f} | "
              f"{lat['p99']:.0f} | {lat['p999']:.0f} | {ratio:.1f} | {j['errors']} |")


def main():
    if not (os.path.exists(BENCH) and os.path.exists(DYNAKV)):
        raise SystemExit("build first: cargo build --release --workspace")
    targets = [("dynakv", s) for s in SHARDS]
    if REDIS:
        targets.append(("redis", 1))
    if MEMCACHED:
        targets.append(("memcached", max(SHARDS)))
    print(f"machine: {len(CPUS)} CPUs; server CPUs {SERVER_CPUS}; generator CPUs {GEN_CPUS} ({GEN_THREADS} threads); "
          f"{CONNS} connections; 90% GET / 10% PUT of {KEYS} keys, 100-byte values; {DURATION} s x {REPEATS}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.1f}")
    rows = {}
    rotation = 0
    for repeat in range(REPEATS):
        for pipeline in PIPELINES:
            order = targets[rotation % len(targets):] + targets[:rotation % len(targets)]
            rotation += 1
            for kind, n in order:
                server = Server(kind, n)
                try:
                    j = measure(server, f"{kind}-{n}-p{pipeline}-r{repeat}", pipeline, repeat)
                finally:
                    server.stop()
                if j:
                    rows.setdefault((pipeline, kind, n), []).append(j)
    med = statistics.median
    for pipeline in PIPELINES:
        print(f"\n### {CONNS} connections x pipeline {pipeline}\n")
        print("| target | threads/shards | ops/s (median) | spread | vs dynakv 1 shard | ops per server CPU-s | p50 us | p99 us | p99.9 us | errors | generator saturated |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        base = rows.get((pipeline, "dynakv", SHARDS[0]))
        base_t = med([j["throughput_ops_s"] for j in base]) if base else None
        for kind, n in targets:
            js = rows.get((pipeline, kind, n), [])
            if not js:
                print(f"| {kind} | {n} | failed | | | | | | | | |")
                continue
            t = [j["throughput_ops_s"] for j in js]
            lat = lambda p: med([j["latency_us"][p] for j in js])
            ratio = f"{med(t) / base_t:.2f}" if base_t else ""
            print(f"| {kind} | {n} | {med(t):.0f} | {min(t):.0f}-{max(t):.0f} | {ratio} | {med([j['ops_per_cpu_s'] for j in js]):.0f} | "
                  f"{lat('p50'):.0f} | {lat('p99'):.0f} | {lat('p999'):.0f} | {sum(j['errors'] for j in js)} | "
                  f"{any(j['generator_saturated'] for j in js)} |")
    if LATENCY_SHARDS and LATENCY_SHARDS <= len(SERVER_CPUS):
        latency_table()
    print(f"\nresults in {OUT}")


if __name__ == "__main__":
    main()
