#!/usr/bin/env python3
"""Availability and latency of a three-node cluster with one node down
(issue 5's benchmark): all nodes up, one node stopped (sloppy quorum: its
writes go to a fallback as hints), and right after it returns (hints replay
to it while the load goes on), in one run with one tool, REPEATS times.

Starts three nodes on 127.0.0.1, 127.0.0.2, 127.0.0.3 (N=3, R=2, W=2; one
shard each unless SHARDS says otherwise) and runs dynakv-bench (cluster-aware,
with failover) against node 1 in three phases per repeat:

  all-up     every node running;
  one-down   node 3 stopped with SIGTERM (the tool leaves its unreachable
             endpoints out; their partitions go to the next replica);
  replay     node 3 restarted on its data directory; the run starts as soon
             as every node sees three reachable members, while hints replay.

Reports throughput, p50/p99/p99.9, errors (an error is an unavailable
request), the hints held by nodes 1 and 2 when each phase starts, and the
hints held just before node 3 returns.

Usage: tools/bench-availability.py   (build first: cargo build --workspace,
or --release and BENCH/DYNAKV pointing at target/release)
Environment: BENCH, DYNAKV, DURATION (s, 5), REPEATS (3), SHARDS (1), OUT,
NODES (3; with 4 or more a fallback outside the preference list holds hints
for node 3, so the replay phase replays them).
"""
import os, statistics, subprocess, sys, tempfile, time

from benchlib import admin_status, binaries, flags, pick_port, results_dir, run_bench, start_server

flags(__doc__)

BENCH, DYNAKV = binaries("debug")
DURATION = int(os.environ.get("DURATION", "5"))
REPEATS = int(os.environ.get("REPEATS", "3"))
SHARDS = int(os.environ.get("SHARDS", "1"))
OUT = results_dir("availability")
NODES = int(os.environ.get("NODES", "3"))
IPS = [f"127.0.0.{i + 1}" for i in range(NODES)]
PHASES = ("all-up", "one-down", "replay")


class Node:
    def __init__(self, ip, port, extra):
        self.dir = tempfile.mkdtemp(prefix="dynakv-avail-")
        self.ip, self.port, self.extra = ip, port, extra
        self.start()

    def start(self):
        self.proc = start_server(DYNAKV, ["--data-dir", self.dir, "--listen", f"{self.ip}:{self.port}",
                                          "--shards", str(SHARDS), *self.extra])

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def remove(self):
        if self.proc.poll() is None:
            self.stop()
        subprocess.run(["rm", "-rf", self.dir])

    def status(self):
        return admin_status(DYNAKV, f"{self.ip}:{self.port + 100}")


def reachable_members(node):
    s = node.status()
    return sum(1 for m in s["members"] if m.get("reachable")) if s else 0


def hints(nodes):
    total = 0
    for n in nodes:
        s = n.status()
        if s:
            total += s.get("hints", 0)
    return total


def wait_converged(nodes):
    deadline = time.time() + 30
    while not all(reachable_members(n) == NODES for n in nodes):
        if time.time() > deadline:
            raise SystemExit("the cluster did not converge within 30 s")
        time.sleep(0.1)


def run(nodes, name):
    return run_bench(BENCH, OUT, name, [
        "--target", f"dynakv://{nodes[0].ip}:{nodes[0].port}", "--workload", "mixed", "--read-ratio", "0.5",
        "--keys", "20000", "--value-size", "100", "--connections", "32", "--pipeline", "1", "--duration", f"{DURATION}s",
        "--warmup", "0s", "--timeout", "10s"])


def main():
    rows = {p: [] for p in PHASES}
    hints_at = {p: [] for p in PHASES}
    hints_before_return = []
    for r in range(REPEATS):
        port = pick_port(IPS, list(range(SHARDS + 1)) + list(range(100, 100 + SHARDS + 1)))
        seed = f"127.0.0.1:{port + 100}"
        nodes = [Node(IPS[0], port, [])] + [Node(ip, port, ["--seeds", seed]) for ip in IPS[1:]]
        try:
            wait_converged(nodes)
            for phase in PHASES:
                if phase == "one-down":
                    nodes[2].stop()
                elif phase == "replay":
                    hints_before_return.append(hints(nodes[:2] + nodes[3:]))
                    nodes[2].start()
                    wait_converged(nodes)
                hints_at[phase].append(hints(nodes[:2] + nodes[3:]))
                print(f"repeat {r}: {phase} (hints held {hints_at[phase][-1]})", file=sys.stderr, flush=True)
                j = run(nodes, f"{phase}-r{r}")
                if j:
                    rows[phase].append(j)
        finally:
            for n in nodes:
                n.remove()
    med = statistics.median
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {NODES} nodes; {REPEATS} repeats of {DURATION}s per phase; results in {OUT}\n")
    print("| phase | ops/s (median) | spread | p50 us | p99 us | p99.9 us | errors (all repeats) | requests (all repeats) | hints held at start (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for phase in PHASES:
        js = rows[phase]
        if not js:
            print(f"| {phase} | failed | | | | | | | |")
            continue
        t = [j["throughput_ops_s"] for j in js]
        print(f"| {phase} | {med(t):.0f} | {min(t):.0f}-{max(t):.0f} | {med([j['latency_us']['p50'] for j in js]):.0f} | "
              f"{med([j['latency_us']['p99'] for j in js]):.0f} | {med([j['latency_us']['p999'] for j in js]):.0f} | "
              f"{sum(j['errors'] for j in js)} | {sum(j.get('requests', j.get('ops', 0)) for j in js)} | {med(hints_at[phase]):.0f} |")
    if hints_before_return:
        print(f"\nhints held by the other nodes just before node 3 returned (median): {med(hints_before_return):.0f}")
    if rows["all-up"]:
        print(f"\ncommand (each phase): `{rows['all-up'][0]['command']}`")


if __name__ == "__main__":
    for binary in (BENCH, DYNAKV):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} not found: cargo build --workspace")
    main()
