//! `dynakv-chaos`: a Jepsen-style soak of a real five-node cluster (issue 7,
//! docs/chaos.md).
//!
//! It starts `dynakv server` processes on 127.0.0.1 … 127.0.0.N, runs
//! shopping-cart clients (get, merge the siblings, add a unique element, put
//! with the context) and plain writers (unique keys) at a steady rate, and
//! injects faults on a seeded schedule: kill -9 and restart, SIGSTOP/SIGCONT,
//! nftables partitions (one node, majority/minority, a ring of overlapping
//! majorities, one-way) and clock jumps on one node (the test-only server
//! option `debug_clock_jump_ms`). Then it heals everything, waits for the
//! members to agree and the hints to drain, reads every key with R = all
//! until two rounds agree, and checks: no acknowledged element or write lost,
//! no element that no client wrote, replicas converged. It reports
//! availability and latency percentiles during faults, elements recovered
//! from writes whose outcome was unknown, and the time to converge.
//! Exit status: 0 pass, 1 a check failed, 2 the tool could not run.
//!
//! `--last-write-wins` starts the servers with `debug_last_write_wins`
//! (replicas drop siblings); the checker must then report lost elements.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

mod nft;

use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};
use nft::InternodeFilter;

const USAGE: &str = "usage: dynakv-chaos [--bin PATH] [--duration-s N] [--seed N] [--nodes N]
       [--shards N] [--carts N] [--cart-clients N] [--writers N] [--rate N]
       [--fault-every-s N] [--fault-for-s N] [--faults LIST|all|none]
       [--clock-jump-ms N] [--settle-timeout-s N] [--last-write-wins] [--report PATH]
faults: kill, pause, isolate, majority, ring, oneway, clock";

const FAULT_KINDS: [&str; 7] = [
    "kill", "pause", "isolate", "majority", "ring", "oneway", "clock",
];

#[derive(Clone, Debug)]
struct Options {
    bin: PathBuf,
    duration: Duration,
    seed: u64,
    nodes: usize,
    shards: usize,
    carts: usize,
    cart_clients: usize,
    writers: usize,
    /// Operations per second per client thread.
    rate: f64,
    fault_every: Duration,
    fault_for: Duration,
    faults: Vec<String>,
    clock_jump_ms: u64,
    settle_timeout: Duration,
    last_write_wins: bool,
    report: Option<PathBuf>,
}

fn default_bin() -> PathBuf {
    // Next to this binary (target/<profile>/dynakv), else on the PATH.
    let here = std::env::current_exe().ok();
    if let Some(dir) = here.as_ref().and_then(|p| p.parent()) {
        let candidate = dir.join("dynakv");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("dynakv")
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        bin: default_bin(),
        duration: Duration::from_secs(120),
        seed: 1,
        nodes: 5,
        shards: 1,
        carts: 16,
        cart_clients: 4,
        writers: 2,
        rate: 20.0,
        fault_every: Duration::from_secs(8),
        fault_for: Duration::from_secs(4),
        faults: FAULT_KINDS.iter().map(|s| s.to_string()).collect(),
        clock_jump_ms: 10_000,
        settle_timeout: Duration::from_secs(90),
        last_write_wins: false,
        report: None,
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if flag == "--last-write-wins" {
            o.last_write_wins = true;
            i += 1;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = args
            .get(i + 1)
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| -> Result<u64, String> {
            v.parse().map_err(|_| format!("{flag}: bad number '{v}'"))
        };
        match flag {
            "--bin" => o.bin = PathBuf::from(value),
            "--duration-s" => o.duration = Duration::from_secs(number(value)?),
            "--seed" => o.seed = number(value)?,
            "--nodes" => o.nodes = number(value)? as usize,
            "--shards" => o.shards = number(value)? as usize,
            "--carts" => o.carts = number(value)?.max(1) as usize,
            "--cart-clients" => o.cart_clients = number(value)? as usize,
            "--writers" => o.writers = number(value)? as usize,
            "--rate" => {
                o.rate = value
                    .parse()
                    .map_err(|_| format!("--rate: bad number '{value}'"))?
            }
            "--fault-every-s" => o.fault_every = Duration::from_secs(number(value)?.max(1)),
            "--fault-for-s" => o.fault_for = Duration::from_secs(number(value)?),
            "--faults" => {
                o.faults = match value.as_str() {
                    "all" => FAULT_KINDS.iter().map(|s| s.to_string()).collect(),
                    "none" => Vec::new(),
                    list => list.split(',').map(|s| s.trim().to_string()).collect(),
                };
                if let Some(bad) = o.faults.iter().find(|f| !FAULT_KINDS.contains(&f.as_str())) {
                    return Err(format!("unknown fault '{bad}'\n{USAGE}"));
                }
            }
            "--clock-jump-ms" => o.clock_jump_ms = number(value)?.max(1),
            "--settle-timeout-s" => o.settle_timeout = Duration::from_secs(number(value)?),
            "--report" => o.report = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
        i += 2;
    }
    if o.nodes < 3 || o.nodes > 20 {
        return Err("--nodes must be in 3..=20".into());
    }
    if o.fault_for >= o.fault_every {
        return Err("--fault-for-s must be shorter than --fault-every-s".into());
    }
    Ok(o)
}

// xorshift64* (the tests' generator): the schedule and the workload replay
// from the seed.
#[path = "../../tests/support/xorshift.rs"]
mod xorshift;
use xorshift::Rng;

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
}

// ---------------------------------------------------------------------------
// Server processes.

struct Node {
    index: usize,
    listen: SocketAddr,
    internode: SocketAddr,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self, bin: &PathBuf) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .map_err(|e| format!("log file: {e}"))?;
        let mut child = Command::new(bin)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("dynakv ready") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(format!("node {} exited ({status}): {tail}", self.index + 1));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("node {} not ready within 60 s", self.index + 1));
            }
        }
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, bin: &PathBuf) -> Result<(), String> {
        self.kill9();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn(bin) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last)
    }

    /// (members, reachable, hints, epoch) from `admin status --json`.
    fn status(&self, bin: &PathBuf) -> Option<(usize, usize, u64, u64)> {
        let out = Command::new(bin)
            .args(["admin", "status", "--json", "--node"])
            .arg(self.internode.to_string())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let number = |field: &str| -> Option<u64> {
            let start = text.find(&format!("\"{field}\": "))? + field.len() + 4;
            let digits: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        };
        Some((
            text.matches("\"id\": ").count(),
            text.matches("\"reachable\": true").count(),
            number("hints")?,
            number("epoch")?,
        ))
    }
}

struct Cluster {
    bin: PathBuf,
    nodes: Vec<Node>,
    root: PathBuf,
    port: u16,
    shards: usize,
    filter: InternodeFilter,
    nft: bool,
}

impl Cluster {
    fn start(o: &Options) -> Result<Cluster, String> {
        let root = std::env::temp_dir().join(format!("dynakv-chaos-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let filter = InternodeFilter::new(format!("dynakv_chaos_{}", std::process::id()));
        let nft = filter.available();
        let mut last = String::new();
        for attempt in 0..10u64 {
            let port = 20_000
                + ((std::process::id() as u64 * 7919 + attempt * 104_729 + o.seed) % 25_000) as u16;
            let seed_addr = format!("127.0.0.1:{}", port + 100);
            let mut nodes = Vec::new();
            let mut failed = None;
            for index in 0..o.nodes {
                let dir = root.join(format!("a{attempt}-node{}", index + 1));
                let listen: SocketAddr = format!("127.0.0.{}:{port}", index + 1)
                    .parse()
                    .expect("address");
                let mut args: Vec<String> = [
                    "server",
                    "--data-dir",
                    &dir.display().to_string(),
                    "--listen",
                    &listen.to_string(),
                    "--shards",
                    &o.shards.to_string(),
                    "--pin-shards",
                    "false",
                    "--io-memory-bytes",
                    "262144",
                    "--gossip-interval-ms",
                    "100",
                    "--suspect-after-ms",
                    "600",
                    "--replica-timeout-ms",
                    "200",
                    "--request-timeout-ms",
                    "1500",
                    "--hint-replay-interval-ms",
                    "200",
                    "--aae-interval-ms",
                    "50",
                    "--debug-clock-jump-ms",
                    &o.clock_jump_ms.to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                if index > 0 {
                    args.extend(["--seeds".to_string(), seed_addr.clone()]);
                }
                if o.last_write_wins {
                    args.extend(["--debug-last-write-wins".to_string(), "true".to_string()]);
                }
                let mut node = Node {
                    index,
                    listen,
                    internode: SocketAddr::new(listen.ip(), port + 100),
                    dir,
                    args,
                    child: None,
                };
                match node.spawn(&o.bin) {
                    Ok(()) => nodes.push(node),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    return Ok(Cluster {
                        bin: o.bin.clone(),
                        nodes,
                        root,
                        port,
                        shards: o.shards,
                        filter,
                        nft,
                    })
                }
                Some(e) => {
                    for node in &mut nodes {
                        node.kill9();
                    }
                    if !(e.contains("listen") || e.contains("in use")) {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(format!("no free port range: {last}"))
    }

    /// Waits until every node lists every member as reachable under one
    /// epoch; returns whether that happened in time.
    fn wait_converged(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let n = self.nodes.len();
        while Instant::now() < deadline {
            let statuses: Vec<_> = self.nodes.iter().map(|n| n.status(&self.bin)).collect();
            let epochs: BTreeSet<u64> = statuses.iter().flatten().map(|s| s.3).collect();
            if statuses
                .iter()
                .all(|s| s.is_some_and(|s| s.0 == n && s.1 == n))
                && epochs.len() == 1
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Whether every primary's Merkle trees matched every other primary's
    /// (`admin aae --json` on every node: every partition's tree built, and
    /// every peer compared after `since` and found in sync). This checks the
    /// replicas themselves, not what a merging read shows.
    fn replicas_in_sync(&self, since: Instant) -> bool {
        let window_ms = since.elapsed().as_millis() as u64;
        self.nodes.iter().all(|node| {
            let Ok(out) = Command::new(&self.bin)
                .args(["admin", "aae", "--json", "--node"])
                .arg(node.internode.to_string())
                .output()
            else {
                return false;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            let fresh = text
                .split("\"last_compared_ms_ago\": ")
                .skip(1)
                .all(|rest| {
                    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                    digits.parse::<u64>().is_ok_and(|ago| ago <= window_ms)
                });
            out.status.success()
                && text.contains("\"partitions\": [{")
                && !text.contains("\"ready\": false")
                && !text.contains("\"in_sync\": false")
                && fresh
        })
    }

    fn hints(&self) -> Option<u64> {
        self.nodes
            .iter()
            .map(|n| n.status(&self.bin).map(|s| s.2))
            .sum()
    }

    /// Drops internode packets from each `from` node to each `to` node.
    fn block(&self, pairs: &[(usize, usize)]) -> Result<(), String> {
        let low = self.port + 100;
        let high = low + self.shards as u16;
        let addresses: Vec<_> = pairs
            .iter()
            .map(|&(from, to)| (self.nodes[from].listen.ip(), self.nodes[to].listen.ip()))
            .collect();
        self.filter.drop_pairs(&addresses, low..=high)
    }

    fn unblock(&self) {
        if self.nft {
            self.filter.clear();
        }
    }

    fn addresses(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.listen).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.unblock();
        for node in &mut self.nodes {
            node.signal(libc::SIGCONT);
            node.kill9();
        }
        if std::env::var_os("DYNAKV_CHAOS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

#[derive(Clone, Copy)]
struct Op {
    latency_us: u64,
    ok: bool,
    during_fault: bool,
}

#[derive(Default)]
struct Outcomes {
    ops: Vec<Op>,
    /// cart -> elements whose put was acknowledged.
    acked: BTreeMap<String, BTreeSet<String>>,
    /// cart -> elements whose put failed or timed out (outcome unknown).
    unknown: BTreeMap<String, BTreeSet<String>>,
    /// Plain writes: key -> value, acknowledged or unknown.
    writes_acked: BTreeMap<String, String>,
    writes_unknown: BTreeMap<String, String>,
}

struct Shared {
    stop: AtomicBool,
    fault_active: AtomicBool,
    started: Instant,
    addrs: Vec<SocketAddr>,
    outcomes: Mutex<Outcomes>,
    ops_started: AtomicU64,
}

fn client_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

fn elements(values: &[bytes::Bytes]) -> BTreeSet<String> {
    values
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One client thread: shopping carts (`cart == true`) or plain writes.
fn client_loop(shared: Arc<Shared>, id: usize, cart: bool, o: Options) {
    let mut rng = Rng::new(o.seed ^ ((id as u64 + 1) * 0x1000_0001));
    let mut client: Option<Client> = None;
    let period = Duration::from_secs_f64(1.0 / o.rate.max(0.1));
    let mut next = Instant::now();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += period;
        seq += 1;
        shared.ops_started.fetch_add(1, Ordering::Relaxed);
        let begun = Instant::now();
        let during_fault = shared.fault_active.load(Ordering::Relaxed);
        if client.is_none() {
            let addr = shared.addrs[rng.below(shared.addrs.len())];
            client = Client::connect(addr, client_options()).ok();
        }
        let record = |ok: bool, outcomes: &mut Outcomes| {
            outcomes.ops.push(Op {
                latency_us: begun.elapsed().as_micros() as u64,
                ok,
                during_fault,
            });
        };
        let Some(c) = client.as_mut() else {
            record(false, &mut shared.outcomes.lock().expect("lock"));
            continue;
        };
        if cart {
            let key = format!("cart-{}", rng.below(o.carts));
            let element = format!("c{id}.{seq}");
            let read = c.get(key.as_bytes());
            let Ok(read) = read else {
                client = None;
                record(false, &mut shared.outcomes.lock().expect("lock"));
                continue;
            };
            let mut set = elements(&read.values);
            set.insert(element.clone());
            let value = set.into_iter().collect::<Vec<_>>().join(",");
            let context = (!read.context.is_empty()).then_some(&read.context[..]);
            let result = c.put(key.as_bytes(), value.as_bytes(), context, Quorum::default());
            let mut outcomes = shared.outcomes.lock().expect("lock");
            let ok = result.is_ok();
            let slot = if ok {
                &mut outcomes.acked
            } else {
                &mut outcomes.unknown
            };
            slot.entry(key).or_default().insert(element);
            record(ok, &mut outcomes);
            drop(outcomes);
            if !ok {
                client = None;
            }
        } else {
            let key = format!("w{id}.{seq}");
            let value = format!("v{id}.{seq}.{}", rng.next() % 1000);
            let result = c.put(key.as_bytes(), value.as_bytes(), None, Quorum::default());
            let mut outcomes = shared.outcomes.lock().expect("lock");
            let ok = result.is_ok();
            if ok {
                outcomes.writes_acked.insert(key, value);
            } else {
                outcomes.writes_unknown.insert(key, value);
            }
            record(ok, &mut outcomes);
            drop(outcomes);
            if !ok {
                client = None;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Faults.

struct FaultRecord {
    at_s: f64,
    what: String,
    ok: bool,
}

/// Applies one fault; returns its description and how to heal it.
fn apply_fault(cluster: &mut Cluster, kind: &str, rng: &mut Rng) -> Result<(String, Heal), String> {
    let n = cluster.nodes.len();
    let victim = rng.below(n);
    let name = |i: usize| format!("n{}", i + 1);
    // A random split: `minority` nodes on one side.
    let split = |rng: &mut Rng, minority: usize| -> (Vec<usize>, Vec<usize>) {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let (a, b) = order.split_at(minority);
        (a.to_vec(), b.to_vec())
    };
    let both = |a: &[usize], b: &[usize]| -> Vec<(usize, usize)> {
        a.iter()
            .flat_map(|&x| b.iter().flat_map(move |&y| [(x, y), (y, x)]))
            .collect()
    };
    let names = |v: &[usize]| v.iter().map(|&i| name(i)).collect::<Vec<_>>().join(",");
    match kind {
        "kill" => {
            cluster.nodes[victim].kill9();
            Ok((format!("kill -9 {}", name(victim)), Heal::Restart(victim)))
        }
        "pause" => {
            cluster.nodes[victim].signal(libc::SIGSTOP);
            Ok((format!("SIGSTOP {}", name(victim)), Heal::Continue(victim)))
        }
        "clock" => {
            let forward = rng.below(2) == 0;
            cluster.nodes[victim].signal(if forward {
                libc::SIGUSR1
            } else {
                libc::SIGUSR2
            });
            Ok((
                format!(
                    "clock of {} jumps {}",
                    name(victim),
                    if forward { "forward" } else { "back" }
                ),
                Heal::ClockBack(victim, forward),
            ))
        }
        "isolate" => {
            let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
            cluster.block(&both(&[victim], &others))?;
            Ok((format!("partition {} | rest", name(victim)), Heal::Network))
        }
        "majority" => {
            let (a, b) = split(rng, (n - 1) / 2);
            cluster.block(&both(&a, &b))?;
            Ok((
                format!("partition {} | {}", names(&a), names(&b)),
                Heal::Network,
            ))
        }
        "ring" => {
            // Each node reaches only its ring neighbours: every node sees a
            // majority (of five), but no two see the same one.
            let mut pairs = Vec::new();
            for i in 0..n {
                for j in 0..n {
                    let d = (i + n - j) % n;
                    if i != j && d != 1 && d != n - 1 {
                        pairs.push((i, j));
                    }
                }
            }
            cluster.block(&pairs)?;
            Ok(("ring of overlapping majorities".to_string(), Heal::Network))
        }
        "oneway" => {
            let minority = 1 + rng.below((n - 1) / 2);
            let (a, b) = split(rng, minority);
            let pairs: Vec<(usize, usize)> = a
                .iter()
                .flat_map(|&x| b.iter().map(move |&y| (x, y)))
                .collect();
            cluster.block(&pairs)?;
            Ok((
                format!("one-way: {} -> {} dropped", names(&a), names(&b)),
                Heal::Network,
            ))
        }
        other => Err(format!("unknown fault {other}")),
    }
}

enum Heal {
    Restart(usize),
    Continue(usize),
    ClockBack(usize, bool),
    Network,
}

fn heal(cluster: &mut Cluster, heal: Heal) -> Result<(), String> {
    match heal {
        Heal::Restart(i) => {
            let bin = cluster.bin.clone();
            cluster.nodes[i].restart(&bin)
        }
        Heal::Continue(i) => {
            cluster.nodes[i].signal(libc::SIGCONT);
            Ok(())
        }
        Heal::ClockBack(i, forward) => {
            cluster.nodes[i].signal(if forward {
                libc::SIGUSR2
            } else {
                libc::SIGUSR1
            });
            Ok(())
        }
        Heal::Network => {
            cluster.unblock();
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// Final reads and the report.

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn latency_line(ops: &[&Op]) -> String {
    let mut ok: Vec<u64> = ops.iter().filter(|o| o.ok).map(|o| o.latency_us).collect();
    ok.sort_unstable();
    let successes = ok.len();
    format!(
        "{} ops, availability {:.4}, latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        ops.len(),
        if ops.is_empty() {
            1.0
        } else {
            successes as f64 / ops.len() as f64
        },
        percentile(&ok, 50.0) as f64 / 1000.0,
        percentile(&ok, 90.0) as f64 / 1000.0,
        percentile(&ok, 99.0) as f64 / 1000.0,
        ok.last().copied().unwrap_or(0) as f64 / 1000.0,
    )
}

/// What the final reads found: cart elements, and plain keys' values.
type FinalState = (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, Vec<String>>,
);

/// One R = all read of every key: cart elements and plain values.
fn read_all(
    addrs: &[SocketAddr],
    carts: &[String],
    writes: &[String],
) -> Result<FinalState, String> {
    let all = Quorum {
        r: Some(R_ALL),
        ..Quorum::default()
    };
    let mut last = String::new();
    for attempt in 0..20 {
        let addr = addrs[attempt % addrs.len()];
        let mut client = match Client::connect(addr, client_options()) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut cart_state = BTreeMap::new();
        let mut write_state = BTreeMap::new();
        let result = (|| -> Result<(), String> {
            for key in carts {
                let got = client
                    .get_with(key.as_bytes(), all)
                    .map_err(|e| format!("{key}: {e}"))?;
                cart_state.insert(key.clone(), elements(&got.values));
            }
            for key in writes {
                let got = client
                    .get_with(key.as_bytes(), all)
                    .map_err(|e| format!("{key}: {e}"))?;
                write_state.insert(
                    key.clone(),
                    got.values
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect(),
                );
            }
            Ok(())
        })();
        match result {
            Ok(()) => return Ok((cart_state, write_state)),
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Err(format!("R=all reads keep failing: {last}"))
}

fn run(o: Options) -> Result<bool, String> {
    let mut out = String::new();
    let mut say = |line: String| {
        println!("{line}");
        out.push_str(&line);
        out.push('\n');
    };
    say(format!(
        "dynakv-chaos: seed {} duration {} s, {} nodes x {} shards, {} cart clients on {} carts, {} writers, {} ops/s each, faults [{}] every {} s for {} s{}",
        o.seed,
        o.duration.as_secs(),
        o.nodes,
        o.shards,
        o.cart_clients,
        o.carts,
        o.writers,
        o.rate,
        o.faults.join(","),
        o.fault_every.as_secs(),
        o.fault_for.as_secs(),
        if o.last_write_wins { ", servers in last-write-wins mode (must fail)" } else { "" }
    ));
    let mut cluster = Cluster::start(&o)?;
    let mut faults = o.faults.clone();
    if !cluster.nft {
        let before = faults.len();
        faults.retain(|f| !matches!(f.as_str(), "isolate" | "majority" | "ring" | "oneway"));
        if faults.len() != before {
            say("nft unavailable (needs root): partition faults skipped".to_string());
        }
    }
    if !cluster.wait_converged(Duration::from_secs(30)) {
        return Err("the cluster did not form within 30 s".into());
    }
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        fault_active: AtomicBool::new(false),
        started: Instant::now(),
        addrs: cluster.addresses(),
        outcomes: Mutex::new(Outcomes::default()),
        ops_started: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    for id in 0..o.cart_clients + o.writers {
        let shared = shared.clone();
        let o = o.clone();
        let cart = id < o.cart_clients;
        threads.push(std::thread::spawn(move || client_loop(shared, id, cart, o)));
    }
    // The fault schedule: a quiet lead-in, then one fault per period.
    let mut rng = Rng::new(o.seed);
    let mut log: Vec<FaultRecord> = Vec::new();
    let end = shared.started + o.duration;
    let mut next_fault = shared.started + o.fault_every.min(Duration::from_secs(5));
    while Instant::now() + o.fault_for < end && !faults.is_empty() {
        let now = Instant::now();
        if next_fault > now {
            std::thread::sleep(next_fault - now);
        }
        next_fault += o.fault_every;
        let kind = faults[rng.below(faults.len())].clone();
        let at_s = shared.started.elapsed().as_secs_f64();
        match apply_fault(&mut cluster, &kind, &mut rng) {
            Ok((what, healing)) => {
                shared.fault_active.store(true, Ordering::Relaxed);
                std::thread::sleep(o.fault_for);
                let healed = heal(&mut cluster, healing);
                shared.fault_active.store(false, Ordering::Relaxed);
                log.push(FaultRecord {
                    at_s,
                    ok: healed.is_ok(),
                    what: match healed {
                        Ok(()) => what,
                        Err(e) => format!("{what}; heal FAILED: {e}"),
                    },
                });
            }
            Err(e) => log.push(FaultRecord {
                at_s,
                what: format!("{kind}: could not inject: {e}"),
                ok: false,
            }),
        }
    }
    let now = Instant::now();
    if end > now {
        std::thread::sleep(end - now);
    }
    shared.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    for record in &log {
        say(format!(
            "  fault at {:7.1} s: {}{}",
            record.at_s,
            record.what,
            if record.ok { "" } else { " (!)" }
        ));
    }

    // Heal everything and let the cluster settle.
    cluster.unblock();
    for node in &cluster.nodes {
        node.signal(libc::SIGCONT);
    }
    let healed_at = Instant::now();
    let bin = cluster.bin.clone();
    for node in &mut cluster.nodes {
        if node.child.is_none() {
            node.restart(&bin)?;
        }
    }
    let formed = cluster.wait_converged(o.settle_timeout);
    let mut hints_drained = false;
    let mut drained_s = f64::NAN;
    while formed && healed_at.elapsed() < o.settle_timeout {
        if cluster.hints() == Some(0) {
            hints_drained = true;
            drained_s = healed_at.elapsed().as_secs_f64();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let outcomes = std::mem::take(&mut *shared.outcomes.lock().expect("lock"));
    let carts: Vec<String> = (0..o.carts).map(|i| format!("cart-{i}")).collect();
    let write_keys: Vec<String> = outcomes
        .writes_acked
        .keys()
        .chain(outcomes.writes_unknown.keys())
        .cloned()
        .collect();
    // R = all reads repair what they find; read until two rounds agree.
    let mut previous = read_all(&cluster.addresses(), &carts, &write_keys)?;
    let mut rounds = 1;
    let mut stable = false;
    while rounds < 6 {
        let again = read_all(&cluster.addresses(), &carts, &write_keys)?;
        rounds += 1;
        if again == previous {
            stable = true;
            break;
        }
        previous = again;
        std::thread::sleep(Duration::from_millis(500));
    }
    let converge_s = healed_at.elapsed().as_secs_f64();
    let (cart_state, write_state) = previous;
    // The replicas themselves: anti-entropy must find every pair of
    // primaries of every partition in sync, compared after the reads above.
    let reads_done = Instant::now();
    let mut in_sync = false;
    while healed_at.elapsed() < o.settle_timeout + Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        if cluster.replicas_in_sync(reads_done) {
            in_sync = true;
            break;
        }
    }
    let in_sync_s = healed_at.elapsed().as_secs_f64();

    // The checks.
    let mut lost = Vec::new();
    let mut unexpected = Vec::new();
    let mut recovered = 0usize;
    let mut unknown_total = 0usize;
    for key in &carts {
        let found = cart_state.get(key).cloned().unwrap_or_default();
        let acked = outcomes.acked.get(key).cloned().unwrap_or_default();
        let unknown = outcomes.unknown.get(key).cloned().unwrap_or_default();
        unknown_total += unknown.len();
        for element in &acked {
            if !found.contains(element) {
                lost.push(format!("{key}/{element}"));
            }
        }
        for element in &found {
            if !acked.contains(element) && !unknown.contains(element) {
                unexpected.push(format!("{key}/{element}"));
            }
        }
        recovered += unknown.iter().filter(|e| found.contains(*e)).count();
    }
    let mut writes_lost = 0;
    let mut writes_wrong = 0;
    let mut writes_recovered = 0;
    for (key, values) in &write_state {
        if let Some(value) = outcomes.writes_acked.get(key) {
            if values.is_empty() {
                writes_lost += 1;
                lost.push(key.clone());
            } else if values.iter().any(|v| v != value) {
                writes_wrong += 1;
                unexpected.push(format!("{key}={values:?}"));
            }
        } else if let Some(value) = outcomes.writes_unknown.get(key) {
            if values.iter().any(|v| v != value) {
                writes_wrong += 1;
                unexpected.push(format!("{key}={values:?}"));
            } else if !values.is_empty() {
                writes_recovered += 1;
            }
        }
    }

    let during: Vec<&Op> = outcomes.ops.iter().filter(|op| op.during_fault).collect();
    let calm: Vec<&Op> = outcomes.ops.iter().filter(|op| !op.during_fault).collect();
    let acked_elements: usize = outcomes.acked.values().map(BTreeSet::len).sum();
    say(format!(
        "operations during faults: {}",
        latency_line(&during)
    ));
    say(format!(
        "operations without faults: {}",
        latency_line(&calm)
    ));
    say(format!(
        "carts: {acked_elements} elements acknowledged, {unknown_total} with unknown outcome, {recovered} of those recovered"
    ));
    say(format!(
        "plain writes: {} acknowledged, {} unknown ({} recovered), {writes_lost} lost, {writes_wrong} wrong",
        outcomes.writes_acked.len(),
        outcomes.writes_unknown.len(),
        writes_recovered
    ));
    say(format!(
        "settle: members agree {formed}, hints drained {hints_drained} after {drained_s:.1} s, R=all reads stable {stable} after {rounds} rounds; converged {converge_s:.1} s after healing"
    ));
    say(format!(
        "replicas (anti-entropy Merkle trees of every primary pair) in sync: {in_sync} ({in_sync_s:.1} s after healing)"
    ));
    say(format!("lost: {}", lost.len()));
    for item in lost.iter().take(10) {
        say(format!("  lost {item}"));
    }
    say(format!("unexpected: {}", unexpected.len()));
    for item in unexpected.iter().take(10) {
        say(format!("  unexpected {item}"));
    }
    let faults_ok = log.iter().all(|f| f.ok);
    let pass = lost.is_empty()
        && unexpected.is_empty()
        && formed
        && hints_drained
        && stable
        && in_sync
        && faults_ok
        && acked_elements > 0;
    say(format!("result: {}", if pass { "PASS" } else { "FAIL" }));
    if let Some(path) = &o.report {
        std::fs::write(path, &out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(pass)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run(options) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("dynakv-chaos: {e}");
            std::process::exit(2);
        }
    }
}
