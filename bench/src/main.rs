//! `dynakv-bench`: dynakv's load generator, in the tradition of
//! memtier_benchmark, YCSB and wrk2.
//!
//! Job: drive a dynakv cluster, a Redis server or a memcached server with the
//! same load generator and the same connection model, and report throughput
//! and latency percentiles (HdrHistogram), with open-loop latency corrected
//! for coordinated omission and the generator's own CPU cost alongside.
//! Usage and output are documented in `docs/benchmark-tool.md`.
//!
//! Invariants: a run that could not be performed (no connection, a broken
//! event loop, nothing succeeded) exits non-zero with one clear line on
//! stderr; bad flags exit 2 with the usage text; errors, timeouts and lost
//! connections are always counted and reported, never hidden.

mod cli;
mod clock;
mod cluster;
mod codec;
mod contexts;
mod engine;
mod keydist;
mod report;
mod rng;
mod stats;
mod workload;

use cli::{Config, RunLength, Scheme, UsageError};
use codec::Codec;
use engine::{Engine, EngineSetup, Progress, Router};
use hdrhistogram::Histogram;
use stats::{new_histogram, RunStats};
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use workload::{KeySpace, OpGenerator};

/// Where requests can go and how to talk to them.
struct Plan {
    endpoints: Vec<SocketAddr>,
    router: Router,
    codec: CodecSpec,
}

/// Which codec each connection gets; `Copy`, so every thread builds its own.
#[derive(Clone, Copy, Debug)]
enum CodecSpec {
    Resp,
    Memcache,
    Dynakv {
        quorum: dynakv::protocol::Quorum,
        epoch: u64,
    },
}

impl CodecSpec {
    fn build(self) -> Codec {
        match self {
            CodecSpec::Resp => Codec::Resp,
            CodecSpec::Memcache => Codec::Memcache,
            CodecSpec::Dynakv { quorum, epoch } => {
                Codec::Dynakv(Box::new(codec::dynakv::DynakvCodec::new(quorum, epoch)))
            }
        }
    }
}

fn plan(config: &Config, known_down: &[SocketAddr]) -> Result<Plan, String> {
    match config.target.scheme {
        Scheme::Redis => Ok(Plan {
            endpoints: vec![config.target.addr],
            router: Router::Single,
            codec: CodecSpec::Resp,
        }),
        Scheme::Memcache => Ok(Plan {
            endpoints: vec![config.target.addr],
            router: Router::Single,
            codec: CodecSpec::Memcache,
        }),
        Scheme::Dynakv => {
            let timeout = Duration::from_nanos(config.connect_timeout_ns);
            let table = cluster::fetch_routing_table(config.target.addr, timeout)?;
            let cluster = cluster::plan_from_table(&table)?;
            // A node that is down at start-up (issue 5's availability runs)
            // is left out: its partitions go to their next replica.
            let down: Vec<SocketAddr> = cluster
                .endpoints
                .iter()
                .copied()
                .filter(|addr| {
                    known_down.contains(addr) || connect(*addr, config.connect_timeout_ns).is_err()
                })
                .collect();
            for addr in &down {
                eprintln!(
                    "dynakv-bench: {addr} is unreachable; its partitions go to their next replica"
                );
            }
            let cluster = cluster.without(&down)?;
            let quorum = dynakv::protocol::Quorum {
                r: config.quorum.r,
                w: config.quorum.w,
                dw: config.quorum.dw,
                n: config.quorum.n,
            };
            Ok(Plan {
                endpoints: cluster.endpoints,
                router: Router::Partitioned {
                    partition_bits: cluster.partition_bits,
                    replicas: Arc::new(cluster.replicas),
                },
                codec: CodecSpec::Dynakv {
                    quorum,
                    epoch: cluster.epoch,
                },
            })
        }
    }
}

fn connect(addr: SocketAddr, timeout_ns: u64) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_nanos(timeout_ns))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Raises the soft open-files limit to the hard one, since a run may hold
/// thousands of sockets.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

use dynakv::runtime::allowed_cpus;

/// Pins the calling thread to one CPU; a failure (e.g. a CPU taken away
/// since) only costs the pinning, so it is reported and the run goes on.
fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        eprintln!(
            "dynakv-bench: warning: cannot pin a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn value_pool(config: &Config) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let len = (2 * config.value_size.max as usize).max(64 * 1024);
    let mut rng = rng::Rng::new(config.seed, u64::MAX);
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match cli::parse_args(&args) {
        Ok(c) => c,
        Err(UsageError::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("dynakv-bench: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(code) => code,
        Err(why) => {
            eprintln!("dynakv-bench: error: {why}");
            ExitCode::from(1)
        }
    }
}

/// Opens every connection of the run: for each client, one stream per
/// endpoint, spread over the threads. The error names the endpoint that
/// could not be reached, if that was the failure.
#[allow(clippy::type_complexity)]
fn connect_all(
    config: &Config,
    plan: &Plan,
) -> Result<Vec<Vec<Vec<TcpStream>>>, (Option<SocketAddr>, String)> {
    let threads = config.threads as usize;
    let sockets_per_thread = (config.connections as usize).div_ceil(threads) * plan.endpoints.len();
    if sockets_per_thread > engine::SOCKETS_PER_THREAD_MAX {
        return Err((
            None,
            format!(
                "{sockets_per_thread} sockets per thread exceed {}; use more --threads",
                engine::SOCKETS_PER_THREAD_MAX
            ),
        ));
    }
    let mut per_thread: Vec<Vec<Vec<TcpStream>>> = (0..threads).map(|_| Vec::new()).collect();
    for c in 0..config.connections as usize {
        let mut streams = Vec::with_capacity(plan.endpoints.len());
        for addr in &plan.endpoints {
            let stream = connect(*addr, config.connect_timeout_ns).map_err(|e| {
                (
                    Some(*addr),
                    format!("cannot connect to {addr} ({}): {e}", config.target.url),
                )
            })?;
            streams.push(stream);
        }
        per_thread[c % threads].push(streams);
    }
    Ok(per_thread)
}

fn run(config: &Config) -> Result<ExitCode, String> {
    raise_nofile_limit();
    // Connect everything up front: a target that cannot be reached fails the
    // run here, before anything is measured. A dynakv node that went away
    // between the plan's probe and these connections is left out like one
    // that was down at the probe (its partitions go to the next replica).
    let mut down: Vec<SocketAddr> = Vec::new();
    let (plan, per_thread) = loop {
        let plan = plan(config, &down)?;
        match connect_all(config, &plan) {
            Ok(per_thread) => break (plan, per_thread),
            Err((Some(addr), why))
                if matches!(plan.codec, CodecSpec::Dynakv { .. }) && down.len() < 8 =>
            {
                eprintln!("dynakv-bench: {why}; leaving it out");
                down.push(addr);
            }
            Err((_, why)) => return Err(why),
        }
    };
    let threads = config.threads as usize;
    let space = Arc::new(KeySpace::default());
    let pool = Arc::new(value_pool(config));
    let barrier = Arc::new(Barrier::new(threads));
    let show_progress = config.progress && std::io::stderr().is_terminal();
    // The threads' once-a-second reports feed the live line and the
    // interval log.
    let report_intervals = show_progress || config.hdr_log.is_some();
    let (progress_tx, progress_rx) = mpsc::channel::<Progress>();
    let client_interval_ns = config
        .rate
        .map(|rate| ((f64::from(config.connections) / rate) * 1e9).max(1.0) as u64);
    let prototype = OpGenerator::new(
        config.workload,
        config.read_ratio,
        config.keys,
        config.key_dist,
        config.value_size,
        space.clone(),
    );
    let mut handles = Vec::with_capacity(threads);
    let allowed_cpus = allowed_cpus();
    for (t, clients) in per_thread.into_iter().enumerate() {
        let ops_budget = match config.run {
            RunLength::Ops(n) => {
                let share = n / threads as u64 + u64::from((t as u64) < n % threads as u64);
                Some(share)
            }
            RunLength::DurationNs(_) => None,
        };
        let setup = EngineSetup {
            thread_index: t as u32,
            threads: config.threads,
            pipeline: config.pipeline,
            client_interval_ns,
            timeout_ns: config.timeout_ns,
            keys: config.keys,
            load: config.load,
            warmup_ns: config.warmup_ns,
            duration_ns: match config.run {
                RunLength::DurationNs(d) => Some(d),
                RunLength::Ops(_) => None,
            },
            ops_budget,
            router: plan.router.clone(),
            seed: config.seed,
            value_pool: pool.clone(),
            space: space.clone(),
            progress: report_intervals.then(|| progress_tx.clone()),
        };
        let generator = prototype.clone();
        let barrier = barrier.clone();
        let codec = plan.codec;
        let cpu = config
            .pin
            .then(|| allowed_cpus.get(t % allowed_cpus.len().max(1)).copied())
            .flatten();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || -> Result<RunStats, String> {
                if let Some(cpu) = cpu {
                    pin_current_thread(cpu);
                }
                // Every thread must reach the barrier, or the others hang:
                // the guard reaches it on every way out, a panic included.
                let mut barrier = LoadBarrier::new(barrier);
                let mut engine = Engine::new(setup, clients, || codec.build(), generator)
                    .map_err(|e| e.to_string())?;
                let loaded = engine.run_load();
                barrier.wait();
                loaded.map_err(|e| format!("load phase: {e}"))?;
                let measured = engine.run_measure();
                engine.shutdown();
                measured.map_err(|e| e.to_string())?;
                Ok(std::mem::take(&mut engine.stats))
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(handle);
    }
    drop(progress_tx);
    let intervals = if report_intervals {
        collect_intervals(progress_rx, threads, show_progress)
    } else {
        Intervals::default()
    };

    let mut merged = RunStats::default();
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(stats)) => merged.merge(&stats),
            Ok(Err(why)) => failure = Some(why),
            Err(_) => failure = Some("a load-generator thread panicked".into()),
        }
    }
    if let Some(why) = failure {
        return Err(why);
    }
    report(config, &merged, &intervals)
}

/// The barrier between the load phase and the measured phase, passed
/// exactly once by each thread: explicitly after its load phase, or on drop
/// when the thread leaves early (an error or a panic), so that one failed
/// thread never leaves the others waiting at it forever.
struct LoadBarrier {
    barrier: Arc<Barrier>,
    passed: bool,
}

impl LoadBarrier {
    fn new(barrier: Arc<Barrier>) -> LoadBarrier {
        LoadBarrier {
            barrier,
            passed: false,
        }
    }

    fn wait(&mut self) {
        assert!(!self.passed, "a thread passes the load barrier once");
        self.passed = true;
        self.barrier.wait();
    }
}

impl Drop for LoadBarrier {
    fn drop(&mut self) {
        if !self.passed {
            self.wait();
        }
    }
}

/// The measured latencies of each second of the run, for `--hdr-log`.
#[derive(Default)]
struct Intervals {
    /// Wall-clock time when the threads started.
    base: Option<std::time::SystemTime>,
    /// (start offset from `base`, length, histogram), from the first
    /// second that measured anything.
    seconds: Vec<(Duration, Duration, Histogram<u64>)>,
}

/// Gathers the threads' once-a-second reports until every thread has hung
/// up: one progress line a second when `show` is set, and each second's
/// histogram for the interval log.
fn collect_intervals(rx: mpsc::Receiver<Progress>, threads: usize, show: bool) -> Intervals {
    let start = std::time::Instant::now();
    let mut intervals = Intervals {
        base: Some(std::time::SystemTime::now()),
        seconds: Vec::new(),
    };
    let mut interval_start = Duration::ZERO;
    let mut second = new_histogram();
    let (mut ok, mut errors, mut reports) = (0u64, 0u64, 0usize);
    let mut stderr = std::io::stderr();
    while let Ok(p) = rx.recv() {
        ok += p.ok;
        errors += p.errors;
        // Both histograms come from `new_histogram`, so their bounds agree.
        let _ = second.add(&p.latency_ns);
        reports += 1;
        if reports % threads == 0 {
            let now = start.elapsed();
            if !second.is_empty() || !intervals.seconds.is_empty() {
                intervals
                    .seconds
                    .push((interval_start, now - interval_start, second.clone()));
            }
            interval_start = now;
            if show {
                let (p50, p99) = if second.is_empty() {
                    (0.0, 0.0)
                } else {
                    (
                        second.value_at_percentile(50.0) as f64 / 1e3,
                        second.value_at_percentile(99.0) as f64 / 1e3,
                    )
                };
                let _ = write!(
                    stderr,
                    "\r[{:>5.1}s] {:>10} ops/s  p50 {:>8.1} us  p99 {:>8.1} us  errors {:<8}",
                    now.as_secs_f64(),
                    ok,
                    p50,
                    p99,
                    errors
                );
                let _ = stderr.flush();
            }
            second.reset();
            ok = 0;
            errors = 0;
        }
    }
    if show {
        let _ = writeln!(stderr);
    }
    intervals
}

fn report(config: &Config, stats: &RunStats, intervals: &Intervals) -> Result<ExitCode, String> {
    let summary = report::Summary::new(stats);
    let mode = match config.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".into(),
    };
    println!(
        "target {}  workload {}  {}  {} connections x pipeline {}  {} thread(s)  keys {} ({})",
        config.target.url,
        config.workload.name(),
        mode,
        config.connections,
        config.pipeline,
        config.threads,
        config.keys,
        config.key_dist.name()
    );
    if config.load {
        println!(
            "load phase: {} keys written, {} errors, {:.2} s",
            stats.load_ok,
            stats.load_errors,
            stats.load_ns as f64 / 1e9
        );
    }
    print!("{}", report::table(&summary));
    let t = &summary.total;
    println!(
        "duration {:.2} s  throughput {:.0} ops/s  errors {} (error replies {}, timeouts {}, connection errors {})  misses {}  connections lost {}",
        summary.duration_s,
        summary.throughput_ops_s,
        t.errors(),
        t.error_replies,
        t.timeouts,
        t.connection_errors,
        t.misses,
        stats.connections_lost
    );
    for (kind, (count, example)) in &stats.error_kinds {
        println!("error replies {kind}: {count} (e.g. {example:?})");
    }
    if let Some(first) = &stats.first_failure {
        println!("first lost connection: {first}");
    }
    println!(
        "generator: {:.2} CPU us per request, busiest thread at {:.0}% of a core, io_uring {}",
        summary.cpu_us_per_op,
        stats.utilisation_max * 100.0,
        stats.ring.map_or("unknown", engine::RingMode::name)
    );
    if stats.reads_with_siblings > 0 {
        // Concurrent writes to one key are siblings in dynakv (Dynamo
        // §4.4), and every one comes back with each read of the key.
        println!(
            "reads: {} hits, {:.2} versions per hit, at most {}; {} hits ({:.2}%) returned siblings",
            stats.read_hits,
            stats.read_siblings as f64 / stats.read_hits as f64,
            stats.read_siblings_max,
            stats.reads_with_siblings,
            100.0 * stats.reads_with_siblings as f64 / stats.read_hits as f64
        );
    }
    if stats.cart_reads > 0 {
        println!(
            "cart: {} reads, {:.2} siblings per read, at most {}",
            stats.cart_reads,
            stats.siblings_seen as f64 / stats.cart_reads as f64,
            stats.siblings_max
        );
    }
    if stats.unsent > 0 {
        eprintln!(
            "dynakv-bench: warning: the target did not keep up with --rate: {} scheduled requests were never sent",
            stats.unsent
        );
    }
    if summary.saturated {
        eprintln!(
            "dynakv-bench: warning: the generator saturated a core ({:.0}%); results may measure the tool, not the target: add --threads",
            stats.utilisation_max * 100.0
        );
    }
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &config.json {
        write(path, report::json(&summary, config))?;
    }
    if let Some(path) = &config.hdr_log {
        let log = report::interval_log(intervals.base, &intervals.seconds)
            .map_err(|e| format!("cannot encode the interval log: {e}"))?;
        std::fs::write(path, log).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &config.hdr_percentiles {
        write(path, report::percentile_distribution(&t.latency_ns))?;
    }
    if let Some(path) = &config.plot {
        let title = format!(
            "{} {} ({})",
            config.target.url,
            config.workload.name(),
            mode
        );
        write(path, report::svg_plot(&summary, &title))?;
    }
    if t.ok == 0 {
        return Err(format!("no operation succeeded ({} errors)", t.errors()));
    }
    Ok(ExitCode::SUCCESS)
}
