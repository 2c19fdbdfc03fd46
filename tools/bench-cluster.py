#!/usr/bin/env python3
"""Cluster vs single node (issue 5's benchmark), in one run with one tool.

Starts three nodes on 127.0.0.1, 127.0.0.2, 127.0.0.3 (N=3, R=2, W=2; one
shard each unless SHARDS says otherwise), waits until every node sees three
members, and runs dynakv-bench (cluster-aware, zero hop) against it; then one
node at N=1 with the same shard total; interleaved, REPEATS times. Reports
throughput, p50/p99/p99.9, errors, and `WrongOwner` replies (a request the
client routed to a shard that does not coordinate its key: the forwarding-hop
fraction, target 0 in steady state).

Usage: tools/bench-cluster.py   (build first: cargo build --release --workspace)
Environment: BENCH, DYNAKV, DURATION (s, 5), REPEATS (3), SHARDS (1), OUT.
"""
import os, statistics, subprocess, tempfile, time

from benchlib import admin_status, binaries, flags, pick_port, results_dir, run_bench, start_server

flags(__doc__)

BENCH, DYNAKV = binaries("release")
DURATION = int(os.environ.get("DURATION", "5"))
REPEATS = int(os.environ.get("REPEATS", "3"))
SHARDS = int(os.environ.get("SHARDS", "1"))
OUT = results_dir("cluster")


def ports(span):
    """Client and shard ports, and the internode ports 100 above them."""
    return list(range(span)) + list(range(100, 100 + span))


class Node:
    def __init__(self, ip, port, shards, extra):
        self.dir = tempfile.mkdtemp(prefix="dynakv-cluster-")
        self.ip, self.port = ip, port
        self.proc = start_server(DYNAKV, ["--data-dir", self.dir, "--listen", f"{ip}:{port}", "--shards", str(shards), *extra])

    def stop(self):
        self.proc.terminate(); self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


def members_seen(node):
    status = admin_status(DYNAKV, f"{node.ip}:{node.port + 100}")
    return len(status.get("members", [])) if status else 0


def start(kind):
    if kind == "single":
        port = pick_port(["127.0.0.1"], ports(3 * SHARDS + 1))
        return [Node("127.0.0.1", port, 3 * SHARDS, ["--n-val", "1", "--r", "1", "--w", "1"])]
    ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    port = pick_port(ips, ports(SHARDS + 1))
    seed = f"127.0.0.1:{port + 100}"
    nodes = [Node(ips[0], port, SHARDS, [])] + [Node(ip, port, SHARDS, ["--seeds", seed]) for ip in ips[1:]]
    deadline = time.time() + 30
    while not all(members_seen(n) == 3 for n in nodes):
        if time.time() > deadline:
            raise SystemExit("the cluster did not form within 30 s")
        time.sleep(0.2)
    return nodes


def run(nodes, name):
    return run_bench(BENCH, OUT, name, [
        "--target", f"dynakv://{nodes[0].ip}:{nodes[0].port}", "--workload", "mixed", "--read-ratio", "0.9",
        "--keys", "100000", "--value-size", "100", "--connections", "50", "--pipeline", "1", "--duration", f"{DURATION}s",
        "--warmup", "1s", "--timeout", "10s"])


def main():
    rows = {}
    for r in range(REPEATS):
        for kind in (("cluster", "single") if r % 2 == 0 else ("single", "cluster")):
            nodes = start(kind)
            try:
                j = run(nodes, f"{kind}-r{r}")
                if j:
                    rows.setdefault(kind, []).append(j)
            finally:
                for n in nodes:
                    n.stop()
    med = statistics.median
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {REPEATS} repeats of {DURATION}s; results in {OUT}\n")
    print("| setup | ops/s (median) | spread | p50 us | p99 us | p99.9 us | errors | WrongOwner replies |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, label in (("single", f"1 node, {3 * SHARDS} shards, N=1"), ("cluster", f"3 nodes x {SHARDS} shard(s), N=3 R=2 W=2")):
        js = rows.get(kind, [])
        if not js:
            print(f"| {label} | failed | | | | | | |")
            continue
        t = [j["throughput_ops_s"] for j in js]
        wrong = sum(j.get("error_kinds", {}).get("WrongOwner", {}).get("count", 0) for j in js)
        print(f"| {label} | {med(t):.0f} | {min(t):.0f}-{max(t):.0f} | {med([j['latency_us']['p50'] for j in js]):.0f} | "
              f"{med([j['latency_us']['p99'] for j in js]):.0f} | {med([j['latency_us']['p999'] for j in js]):.0f} | "
              f"{sum(j['errors'] for j in js)} | {wrong} |")
    if rows.get("cluster"):
        print(f"\ncommand (cluster run): `{rows['cluster'][0]['command']}`")


if __name__ == "__main__":
    for binary in (BENCH, DYNAKV):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} not found: cargo build --release --workspace")
    main()
