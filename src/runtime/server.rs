//! The `dynakv server` process: configuration in, one pinned glommio
//! executor per shard out, and an orderly shutdown on SIGTERM or SIGINT.
//!
//! The main thread owns no data. It blocks the termination signals (so every
//! executor thread inherits the mask and only the main thread receives them),
//! starts the shards, waits until each has opened its store and bound its
//! ports, prints one `ready` line on stdout, and then waits for a signal or a
//! failed shard. Shutdown is cooperative: the main thread raises a flag that
//! each shard checks on a short timer; a shard then stops accepting, flushes
//! and syncs its store, writes its hint files, and returns.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::forward::Mesh;
use super::log::{self, info};
use super::memlock;
use super::shard::{self, NodeInfo};
use crate::config::ServerConfig;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    /// The data directory or a file in it could not be used.
    DataDir(PathBuf, std::io::Error),
    /// Another process holds the data directory.
    Locked(PathBuf),
    /// A port is already in use or cannot be bound.
    Bind(SocketAddr, std::io::Error),
    /// An executor thread could not be started.
    Executor(String),
    /// The log subscriber could not be set up (a bad `log_level`).
    Log(String),
    /// A shard failed while starting or running.
    Shard(usize, String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::DataDir(p, e) => write!(f, "data directory {}: {e}", p.display()),
            ServerError::Locked(p) => write!(
                f,
                "data directory {} is in use by another dynakv process",
                p.display()
            ),
            ServerError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            ServerError::Executor(e) => write!(f, "cannot start executor: {e}"),
            ServerError::Log(e) => write!(f, "logging: {e}"),
            ServerError::Shard(i, e) => write!(f, "shard {i}: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Runs a node until SIGTERM or SIGINT. Returns once every shard has flushed.
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    // `validate` already parsed the filter; a failure here would be a bug,
    // but it is reported as a start-up error rather than a panic.
    log::init(config.log_format, &config.log_level).map_err(ServerError::Log)?;
    let shards = config.shard_count();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServerError::DataDir(config.data_dir.clone(), e))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let node_id = load_or_create_node_id(&config.data_dir)?;
    check_ports_free(&config, shards)?;

    let plan = memlock::plan(shards, config.io_memory_bytes);
    let limit = if plan.hard_limit_bytes == u64::MAX {
        "unlimited".to_string()
    } else {
        format!("{} KiB", plan.hard_limit_bytes / 1024)
    };
    info!(
        "RLIMIT_MEMLOCK hard limit {limit} (soft limit {}); registering {} KiB of io_uring memory per shard for {shards} shards{}",
        if plan.raised { "raised to it" } else { "left as is" },
        plan.io_memory_bytes / 1024,
        if config.io_memory_bytes > 0 { " (configured)" } else { " (sized from the limit; glommio falls back to unregistered buffers if registration still fails)" },
    );

    let (warn, note) = read_cache_note(config.read_cache_bytes, shards, mem_total_bytes());
    if warn {
        log::warning!("{note}");
    } else {
        info!("{note}");
    }

    let (soft, hard) = raise_open_files_limit();
    info!("RLIMIT_NOFILE soft limit {soft} (hard limit {hard}); each client, RESP and internode connection holds one descriptor");

    // Read by each executor as it sets up its rings (vendor/README.md).
    glommio::set_main_ring_coop_taskrun(config.io_uring_coop_taskrun);
    info!(
        "io_uring: shards' main rings {}",
        if config.io_uring_coop_taskrun {
            "post completions cooperatively (IORING_SETUP_COOP_TASKRUN where the kernel has it, Linux 5.19+)"
        } else {
            "interrupt the shard to post completions (io_uring_coop_taskrun = false)"
        }
    );

    block_termination_signals();
    super::chaos_hooks::install(&config);
    let shutdown = Arc::new(AtomicBool::new(false));
    let exited = Arc::new(AtomicUsize::new(0));
    let node = Arc::new(NodeInfo::new(node_id, &config, shards).map_err(ServerError::Executor)?);
    let mesh = Mesh::new(shards);
    let cpus = allowed_cpus();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, (usize, String)>>();
    let mut handles = Vec::with_capacity(shards);
    for index in 0..shards {
        let placement = if config.pin_shards && !cpus.is_empty() {
            Placement::Fixed(cpus[index % cpus.len()])
        } else {
            Placement::Unbound
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("dynakv-shard-{index}"))
            .io_memory(plan.io_memory_bytes)
            .spin_before_park(Duration::from_micros(config.spin_before_park_us));
        let (node, config, shutdown, mesh, ready, exited) = (
            node.clone(),
            config.clone(),
            shutdown.clone(),
            mesh.clone(),
            ready_tx.clone(),
            exited.clone(),
        );
        let handle = builder
            .spawn(move || {
                // Entered on the shard's own thread for the executor's whole
                // life, so every line any of its tasks logs carries `shard=N`.
                let span = tracing::info_span!("shard", shard = index).entered();
                async move {
                    let result =
                        shard::run(index, node, config, mesh, shutdown, ready.clone()).await;
                    if let Err(e) = &result {
                        let _ = ready.send(Err((index, e.clone())));
                    }
                    exited.fetch_add(1, Ordering::SeqCst);
                    drop(span);
                    result
                }
            })
            .map_err(|e| ServerError::Executor(e.to_string()))?;
        handles.push(handle);
    }
    drop(ready_tx);

    let mut started = 0;
    let mut failure = None;
    while started < shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => started += 1,
            Ok(Err((index, e))) => {
                failure = Some(ServerError::Shard(index, e));
                break;
            }
            Err(_) => {
                failure = Some(ServerError::Executor(
                    "a shard exited while starting".into(),
                ));
                break;
            }
        }
    }
    if failure.is_none() {
        let ports: Vec<String> = (0..shards)
            .map(|i| config.shard_port(i).to_string())
            .collect();
        println!(
            "dynakv ready: node {node_id:016x} listening on {} (shard ports {}, internode {}), {shards} shards, data in {}",
            config.listen,
            ports.join(","),
            config.internode_addr(),
            config.data_dir.display()
        );
        let _ = std::io::stdout().flush();
        loop {
            if let Some(signal) = wait_for_signal(Duration::from_millis(100)) {
                info!(signal, "received signal; shutting down");
                break;
            }
            if exited.load(Ordering::SeqCst) > 0 {
                log::warning!("a shard stopped; shutting the node down");
                break;
            }
        }
    }
    shutdown.store(true, Ordering::SeqCst);
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(ServerError::Shard(index, e))),
            Err(e) => failure = failure.or(Some(ServerError::Shard(index, format!("{e:?}")))),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            info!("stopped cleanly");
            Ok(())
        }
    }
}

/// Holds an exclusive `flock` on the data directory for the process lifetime.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, ServerError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ServerError::DataDir(path.clone(), e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(ServerError::Locked(dir.to_path_buf()));
    }
    Ok(file)
}

/// A node's id is chosen once, at its first start, and kept in `node.id`.
fn load_or_create_node_id(dir: &Path) -> Result<u64, ServerError> {
    let path = dir.join("node.id");
    match std::fs::read_to_string(&path) {
        // Node ids fit 32 bits (they name the node inside version-vector
        // actor ids); an id written by an older version keeps its low half,
        // which is all that older actor ids used.
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .map(|id| (id & 0xFFFF_FFFF).max(1))
            .map_err(|_| {
                ServerError::DataDir(
                    path.clone(),
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "node.id is not a hex u64",
                    ),
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 8];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
                .map_err(|e| ServerError::DataDir(PathBuf::from("/dev/urandom"), e))?;
            // The low 32 bits name the node inside version-vector actor ids, so they must not be zero.
            let id = (u64::from_le_bytes(bytes) & 0xFFFF_FFFF) | 1;
            write_file_durably(&path, format!("{id:016x}\n").as_bytes())
                .map_err(|e| ServerError::DataDir(path.clone(), e))?;
            Ok(id)
        }
        Err(e) => Err(ServerError::DataDir(path, e)),
    }
}

/// Writes a small file through a temporary name, fsyncs it, renames it into
/// place and fsyncs the directory, so a crash leaves the old or the new file.
pub(crate) fn write_file_durably(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The listeners bind with `SO_REUSEPORT` (every shard accepts on the node
/// port), which would silently let a second server share our ports. A
/// connect to each port first proves nobody listens there. (A plain bind
/// would also refuse ports that a killed predecessor's connections still
/// hold in `TIME_WAIT`, which blocks restarts after `kill -9` for a minute.)
fn check_ports_free(config: &ServerConfig, shards: usize) -> Result<(), ServerError> {
    let mut addrs = vec![config.listen];
    addrs.extend((0..shards).map(|i| SocketAddr::new(config.listen.ip(), config.shard_port(i))));
    addrs.extend((0..shards).map(|i| config.internode_shard_addr(i)));
    addrs.extend(config.http_listen);
    addrs.extend(config.resp_listen);
    for addr in addrs {
        // A predecessor that just exited can still answer for a moment: the
        // kernel tears its io_uring instance down asynchronously, and the
        // accept requests queued there keep its listening socket alive until
        // then (seen on restarts right after a clean SIGTERM stop). Only a
        // port that keeps answering for two seconds is taken.
        let answers =
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        let mut tries = 0;
        while answers() {
            tries += 1;
            if tries < 20 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return Err(ServerError::Bind(
                addr,
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "address in use by another process",
                ),
            ));
        }
    }
    Ok(())
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// (every connection holds one) and returns the (soft, hard) limits now in
/// force. The hard limit is the operator's: see docs/deployment.md.
fn raise_open_files_limit() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return (0, 0);
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        (limit.rlim_cur as u64, limit.rlim_max as u64)
    }
}

fn termination_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

fn block_termination_signals() {
    let set = termination_sigset();
    // SAFETY: blocks two signals for this thread; threads spawned later inherit the mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits up to `timeout` for SIGTERM or SIGINT; returns its number.
fn wait_for_signal(timeout: Duration) -> Option<i32> {
    let set = termination_sigset();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timeout we own.
    let signal = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (signal > 0).then_some(signal)
}

/// The CPUs this process may run on, in order (the benchmark tool pins its
/// threads with the same list).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The machine's memory from `/proc/meminfo` (`MemTotal`), if it can be read.
fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

/// `MemTotal: N kB` in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then(|| kib.saturating_mul(1024))
}

/// The start-up line about the read caches (`read_cache_bytes` per shard):
/// what they may hold in all, and `true` (say it as a warning) when that is
/// more than the machine's memory, where a cache that fills would end in the
/// kernel's out-of-memory killer rather than in evictions.
fn read_cache_note(per_shard: usize, shards: usize, mem_total: Option<u64>) -> (bool, String) {
    let total = (per_shard as u64).saturating_mul(shards as u64);
    let mib = |b: u64| b / (1 << 20);
    let mut note = format!(
        "read cache: {} MiB per shard, {} MiB for {shards} shards",
        mib(per_shard as u64),
        mib(total)
    );
    let over = match mem_total {
        Some(mem) => {
            note.push_str(&format!(" (the machine has {} MiB)", mib(mem)));
            total > mem
        }
        None => false,
    };
    if over {
        note.push_str(
            "; more than the machine's memory: lower read_cache_bytes (docs/configuration.md)",
        );
    } else if per_shard == 0 {
        note.push_str("; off: every read that misses the write buffer goes to the disk");
    }
    (over, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24571904 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_571_904 * 1024));
        assert_eq!(parse_mem_total("MemFree: 5 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 5 MB\n"), None);
        // This machine's, whatever it is, is read.
        assert!(mem_total_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn a_read_cache_larger_than_the_machine_is_a_warning() {
        let gib = 1u64 << 30;
        let (warn, note) = read_cache_note(32 << 20, 2, Some(24 * gib));
        assert!(!warn, "{note}");
        assert_eq!(
            note,
            "read cache: 32 MiB per shard, 64 MiB for 2 shards (the machine has 24576 MiB)"
        );
        let (warn, note) = read_cache_note(16 << 30, 2, Some(24 * gib));
        assert!(warn, "{note}");
        assert!(note.contains("32768 MiB for 2 shards"), "{note}");
        assert!(note.contains("lower read_cache_bytes"), "{note}");
        // Unknown memory: no warning; a huge value does not overflow.
        let (warn, note) = read_cache_note(usize::MAX, 256, None);
        assert!(!warn, "{note}");
        let (warn, note) = read_cache_note(0, 4, Some(gib));
        assert!(!warn && note.contains("off"), "{note}");
    }
}
