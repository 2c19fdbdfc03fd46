"""Shared pieces of the tools/bench-*.py scripts: where the binaries and the
results go, free loopback ports, starting a server, asking its admin port,
and running dynakv-bench with a JSON report.

Each script keeps what is its own (its cluster shape, phases and table); this
module holds what they all did the same way.
"""
import json, os, socket, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flags(doc, allowed=()):
    """The command-line flags of a bench script, checked before it starts anything:
    `-h`/`--help` prints the script's docstring and exits 0; a flag not in ALLOWED
    (or any positional argument) prints the usage to stderr and exits 2, so a typo
    cannot start a long benchmark on the wrong settings."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(doc.strip())
        raise SystemExit(0)
    unknown = [a for a in args if a not in allowed]
    if unknown:
        usage = next((line for line in doc.splitlines() if line.startswith("Usage:")), "")
        print(f"{os.path.basename(sys.argv[0])}: unknown argument(s) {' '.join(unknown)}\n{usage}",
              file=sys.stderr)
        raise SystemExit(2)
    return set(args)


def binaries(profile):
    """(BENCH, DYNAKV): the environment's, else target/PROFILE/."""
    return (os.environ.get("BENCH", os.path.join(ROOT, f"target/{profile}/dynakv-bench")),
            os.environ.get("DYNAKV", os.path.join(ROOT, f"target/{profile}/dynakv")))


def results_dir(kind):
    """$OUT, else target/bench-results/KIND-<UTC time>; created."""
    out = os.environ.get("OUT", os.path.join(ROOT, "target/bench-results",
                                             time.strftime(f"{kind}-%Y%m%dT%H%M%SZ", time.gmtime())))
    os.makedirs(out, exist_ok=True)
    return out


def port_free(ip, port):
    s = socket.socket()
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_port(ips, offsets, start=21000):
    """A base port such that base + every offset is free on every IP."""
    for base in range(start, 60000, 397):
        if all(port_free(ip, base + o) for ip in ips for o in offsets):
            return base
    raise SystemExit("no free ports")


def dynakv_ports(shards):
    """Port offsets a `dynakv server --listen IP:BASE --shards SHARDS` binds on
    built-in defaults: BASE, a client port per shard, and an internode port per
    shard from BASE + 100 (config.rs: shard_port, internode_shard_addr)."""
    return [*range(shards + 1), *range(100, 100 + shards)]


def start_server(dynakv, args, stderr=subprocess.DEVNULL):
    """Starts `dynakv server ARGS` and waits for its ready line."""
    proc = subprocess.Popen([dynakv, "server", *args], stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = proc.stdout.readline()
    if not line.startswith("dynakv ready"):
        raise SystemExit(f"server {' '.join(args)} did not start: {line!r}")
    return proc


def admin_status(dynakv, internode):
    """`dynakv admin status --json` of the node at INTERNODE (ip:port), or None."""
    out = subprocess.run([dynakv, "admin", "status", "--node", internode, "--json"], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def run_bench(bench, out, name, args):
    """Runs dynakv-bench ARGS with a JSON report OUT/NAME.json; returns the
    report with the command line added, or None (the failure is printed)."""
    path = os.path.join(out, f"{name}.json")
    cmd = [bench, *args, "--no-progress", "--json", path]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"run failed: {' '.join(cmd)}\n{done.stderr}", file=sys.stderr)
        return None
    j = json.load(open(path))
    j["command"] = " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)
    return j
