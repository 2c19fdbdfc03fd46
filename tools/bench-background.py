#!/usr/bin/env python3
"""Foreground latency with and without background work (issue 6's scheduler
benchmark), on a 3-node local cluster, in one run with one tool.

Each repeat starts a fresh cluster on 127.0.0.1-3 (one shard each; N=2, R=1,
W=2, so that a dead node's writes leave hints on the third node), then:

  1. max:      closed loop, mixed 90% get / 10% put, 20000 keys, 100 B values
               -> max ops/s; the open-loop rate is half of it
  2. baseline: open loop at that rate, nothing in the background
  3. compact:  a burst of overwrites (put, 5000 keys) leaves most of the log
               dead; then the same open-loop run while compaction reclaims it
  4. hints:    node 3 is killed, 2000 keys are written through the CLI (hints
               pile up on the fallback), node 3 restarts, and the same
               open-loop run measures while the hints replay to it
  5. aae:      node 3's shard directory is wiped (a replaced disk: the node
               keeps its id and membership), it restarts empty, and the same
               open-loop run measures while anti-entropy refills it from the
               other primaries (finished: every pair of primaries in sync,
               from `dynakv admin aae --json` on every node)
  6. baseline again; ratios are against the mean of the two baseline p99s
     (before each baseline, compaction has run out of work)

The background work must still finish: the report gives the compaction bytes
done during the window, the dead bytes before and after, and how long
after the window compaction ran out of eligible segments, and the hints held before and after the window and the time until none
is left. Numbers come from each node's /metrics (admin HTTP port).

Usage: tools/bench-background.py   (build first: cargo build --release --workspace)
Environment: BENCH, DYNAKV, DURATION (s, 5), REPEATS (3), OUT.
"""
import glob, json, os, shutil, statistics, subprocess, tempfile, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

from benchlib import admin_status, binaries, flags, pick_port, results_dir, run_bench, start_server

flags(__doc__)

BENCH, DYNAKV = binaries("release")
DURATION = int(os.environ.get("DURATION", "5"))
REPEATS = int(os.environ.get("REPEATS", "3"))
HINT_KEYS = int(os.environ.get("HINT_KEYS", "2000"))
OUT = results_dir("background")
IPS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
SERVER_ARGS = [
    "--n-val", "2", "--r", "1", "--w", "2",
    "--gossip-interval-ms", "100", "--suspect-after-ms", "600",
    "--hint-replay-interval-ms", "20",
    "--value-bytes-max", "65536", "--segment-size-bytes", str(1 << 20),
    "--compaction-bytes-per-second", str(8 << 20),
    # One exchange per shard every 100 ms, so a sweep over the ~170
    # partitions a node holds takes seconds (in-sync exchanges cost ~324 B;
    # they run in the baseline windows too).
    "--aae-interval-ms", "100",
]


class Node:
    def __init__(self, ip, port, seed):
        self.dir = tempfile.mkdtemp(prefix="dynakv-bg-")
        self.ip, self.port, self.seed = ip, port, seed
        self.start()

    def start(self):
        extra = ["--seeds", self.seed] if self.seed else []
        self.proc = start_server(DYNAKV, ["--data-dir", self.dir, "--listen", f"{self.ip}:{self.port}", "--shards", "1",
                                          "--http-listen", f"{self.ip}:{self.port + 50}", *SERVER_ARGS, *extra],
                                 stderr=open(os.path.join(OUT, f"server-{self.ip}.log"), "a"))

    def kill(self):
        self.proc.kill(); self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate(); self.proc.wait()

    def aae_in_sync(self):
        out = subprocess.run([DYNAKV, "admin", "aae", "--json", "--node", f"{self.ip}:{self.port + 100}"],
                             capture_output=True, text=True)
        text = out.stdout
        return (out.returncode == 0 and '"partitions": [{' in text and '"ready": false' not in text
                and '"in_sync": false' not in text and '"last_compared_ms_ago": null' not in text)

    def metrics(self):
        text = urllib.request.urlopen(f"http://{self.ip}:{self.port + 50}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            labels = series[len(name):]
            key = name + ("|" + labels.split('job="')[1].split('"')[0] if 'job="' in labels else "")
            out[key] = out.get(key, 0.0) + float(value)
        return out

    def members_seen(self):
        status = admin_status(DYNAKV, f"{self.ip}:{self.port + 100}")
        return sum(1 for m in status.get("members", []) if m.get("reachable")) if status else 0


def total(nodes, key):
    return sum(n.metrics().get(key, 0.0) for n in nodes if n.proc.poll() is None)


def converge(nodes):
    deadline = time.time() + 30
    while not all(n.members_seen() == 3 for n in nodes):
        if time.time() > deadline:
            raise SystemExit("the cluster did not converge within 30 s")
        time.sleep(0.2)


def bench(nodes, name, extra, conns=50):
    return run_bench(BENCH, OUT, name, [
        "--target", f"dynakv://{nodes[0].ip}:{nodes[0].port}", "--value-size", "100", "--connections", str(conns),
        "--pipeline", "1", "--timeout", "10s", *extra])


MEASURE = ["--workload", "mixed", "--read-ratio", "0.9", "--keys", "20000"]


def open_loop(nodes, name, rate):
    # 200 clients: each sends every 200/R s, so one slow reply does not
    # leave a pipeline-1 client permanently behind its schedule.
    return bench(nodes, name, [*MEASURE, "--no-load", "--rate", str(rate), "--duration", f"{DURATION}s", "--warmup", "1s"], conns=200)


def wait_for(what, check, limit_s=120):
    began = time.time()
    while not check():
        if time.time() - began > limit_s:
            return None
        time.sleep(0.25)
    return time.time() - began


def compaction_idle(nodes, quiet_s=3.0, limit_s=120):
    """Waits until compaction found nothing more to do: its byte count stood
    still for quiet_s. Returns the time of its last progress, or None."""
    last = [total(nodes, "dynakv_background_work_done_total|compaction"), time.time()]
    def idle():
        now = total(nodes, "dynakv_background_work_done_total|compaction")
        if now != last[0]:
            last[0], last[1] = now, time.time()
        return time.time() - last[1] >= quiet_s
    return None if wait_for("compaction", idle, limit_s) is None else last[1]


def repeat(r):
    port = pick_port(IPS, (0, 1, 50, 100), start=23000)
    seed = f"127.0.0.1:{port + 100}"
    nodes = [Node(IPS[0], port, None)] + [Node(ip, port, seed) for ip in IPS[1:]]
    row = {}
    try:
        converge(nodes)
        mx = bench(nodes, f"max-r{r}", [*MEASURE, "--duration", "4s"])
        if not mx:
            return None
        rate = int(mx["throughput_ops_s"] / 2)
        row["max"], row["rate"] = mx["throughput_ops_s"], rate
        # The max run's puts left dead records: let compaction finish first,
        # so the baseline really has nothing in the background.
        compaction_idle(nodes)
        row["baseline"] = open_loop(nodes, f"baseline-r{r}", rate)

        # Compaction: overwrite 5000 keys many times, then measure at once.
        bench(nodes, f"overwrite-r{r}", ["--workload", "put", "--keys", "5000", "--duration", "6s", "--connections", "20"])
        dead0 = total(nodes, "dynakv_store_dead_bytes")
        done0 = total(nodes, "dynakv_background_work_done_total|compaction")
        row["compact"] = open_loop(nodes, f"compact-r{r}", rate)
        row["compact_bytes"] = total(nodes, "dynakv_background_work_done_total|compaction") - done0
        row["dead_before_mb"] = dead0 / 1e6

        # Finished: compaction has found nothing more to do (segments under
        # compaction_dead_fraction dead are left alone by design).
        t_end = time.time()
        last = compaction_idle(nodes)
        row["compact_finish_s"] = None if last is None else last - t_end
        row["dead_after_mb"] = total(nodes, "dynakv_store_dead_bytes") / 1e6

        # Hint replay: node 3 down while 2000 keys are written, then back.
        nodes[2].kill()
        time.sleep(1.5)  # suspected after 600 ms: writes go to the fallback at once
        def put(i):
            subprocess.run([DYNAKV, "put", f"hint:{r}:{i}", "v" * 100, "--node", f"{nodes[i % 2].ip}:{port}"], capture_output=True)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(HINT_KEYS)))
        nodes[2].start()
        converge(nodes)
        held0 = total(nodes, "dynakv_hints_held")
        stored0 = total(nodes, "dynakv_hints_stored_total")
        row["hints"] = open_loop(nodes, f"hints-r{r}", rate)
        row["hints_before"], row["hints_after"] = held0, total(nodes, "dynakv_hints_held")
        # Puts hinted during the window: node 3 looked down (or a put target
        # timed out) while it was up; 0 when replay never blamed it.
        row["hints_stored"] = total(nodes, "dynakv_hints_stored_total") - stored0
        row["hints_finish_s"] = wait_for("hint replay", lambda: total(nodes, "dynakv_hints_held") == 0)
        # Anti-entropy over a wiped replica: node 3 loses its shard
        # directory and comes back empty; the other primaries refill it.
        keys3 = total([nodes[2]], "dynakv_store_keys")
        nodes[2].stop()
        for d in glob.glob(os.path.join(nodes[2].dir, "shard-*")):
            if os.path.isdir(d):
                shutil.rmtree(d)
        nodes[2].start()
        converge(nodes)
        sent0 = total(nodes, "dynakv_aae_keys_sent_total")
        bytes0 = total(nodes, "dynakv_aae_sent_bytes_total")
        row["aae_keys_before"] = keys3
        row["aae_keys_at_start"] = total([nodes[2]], "dynakv_store_keys")
        row["aae"] = open_loop(nodes, f"aae-r{r}", rate)
        row["aae_keys_after_window"] = total([nodes[2]], "dynakv_store_keys")
        row["aae_finish_s"] = wait_for("anti-entropy repair", lambda: all(n.aae_in_sync() for n in nodes))
        row["aae_sent"] = total(nodes, "dynakv_aae_keys_sent_total") - sent0
        row["aae_bytes"] = total(nodes, "dynakv_aae_sent_bytes_total") - bytes0
        row["aae_keys_final"] = total([nodes[2]], "dynakv_store_keys")
        # The baseline again, now that nothing runs in the background: the
        # ratio is taken against the mean of the two baseline p99s.
        compaction_idle(nodes)
        row["baseline2"] = open_loop(nodes, f"baseline2-r{r}", rate)
        row["deferred"] = {job: total(nodes, f"dynakv_background_work_deferred_total|{job}") for job in ("compaction", "hint_replay", "inbound")}
    finally:
        for n in nodes:
            n.stop()
            subprocess.run(["rm", "-rf", n.dir])
    return row


def main():
    rows = [row for row in (repeat(r) for r in range(REPEATS)) if row]
    json.dump(rows, open(os.path.join(OUT, "summary.json"), "w"), indent=1, default=str)
    med = statistics.median
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {len(rows)} repeats, {DURATION}s windows; results in {OUT}\n")
    print(f"max closed-loop ops/s per repeat: {[round(r['max']) for r in rows]}; open-loop rate = half\n")
    print("| window | p50 us | p99 us | p99.9 us | p99 / mean baseline p99, median (per repeat); baseline row: after / before | errors | background work |")
    print("|---|---|---|---|---|---|---|")
    for kind, label in (("baseline", "no background work (before and after)"), ("compact", "compaction running"), ("hints", "hint replay running"), ("aae", "anti-entropy refilling a wiped replica")):
        ok = [r for r in rows if r.get(kind) and r.get("baseline") and r.get("baseline2")]
        js = [r[kind] for r in ok]
        if kind == "baseline":
            js += [r["baseline2"] for r in ok]
        if not js:
            print(f"| {label} | failed | | | | | |")
            continue
        base = lambda r: (r["baseline"]["latency_us"]["p99"] + r["baseline2"]["latency_us"]["p99"]) / 2
        if kind == "baseline":
            # How far the two baselines of one repeat differ: the noise floor.
            ratios = [r["baseline2"]["latency_us"]["p99"] / r["baseline"]["latency_us"]["p99"] for r in ok]
        else:
            ratios = [r[kind]["latency_us"]["p99"] / base(r) for r in ok]
        if kind == "compact":
            work = "; ".join(f"{r['compact_bytes'] / 1e6:.1f} MB compacted in window, dead {r['dead_before_mb']:.0f} -> {r['dead_after_mb']:.0f} MB, idle {r['compact_finish_s'] if r['compact_finish_s'] is None else round(r['compact_finish_s'], 1)} s after" for r in rows)
        elif kind == "hints":
            work = "; ".join(f"{r['hints_before']:.0f} -> {r['hints_after']:.0f} hints ({r.get('hints_stored', 0):.0f} stored in the window), none left after {r['hints_finish_s'] if r['hints_finish_s'] is None else round(r['hints_finish_s'], 1)} s" for r in rows)
        elif kind == "aae":
            work = "; ".join(f"node 3 keys {r['aae_keys_before']:.0f} before wipe, {r['aae_keys_at_start']:.0f} at start, {r['aae_keys_after_window']:.0f} after window, {r['aae_keys_final']:.0f} when all in sync ({r['aae_finish_s'] if r['aae_finish_s'] is None else round(r['aae_finish_s'], 1)} s after); {r['aae_sent']:.0f} sets / {r['aae_bytes'] / 1e6:.1f} MB sent" for r in rows if 'aae' in r)
        else:
            work = ""
        print(f"| {label} | {med([j['latency_us']['p50'] for j in js]):.0f} | {med([j['latency_us']['p99'] for j in js]):.0f} | "
              f"{med([j['latency_us']['p999'] for j in js]):.0f} | {med(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) | "
              f"{sum(j['errors'] for j in js)} | {work} |")
    print(f"\ndeferrals (last repeat): {rows[-1].get('deferred') if rows else None}")
    if rows and rows[0].get("baseline"):
        print(f"command (open-loop window): `{rows[0]['baseline']['command']}`")


if __name__ == "__main__":
    for binary in (BENCH, DYNAKV):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} not found: cargo build --release --workspace")
    main()
