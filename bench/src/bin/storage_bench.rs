//! storage_bench: measures the per-shard storage engine on the real disk (glommio
//! `DmaFile`) against the disk's own ceilings measured by `fio` in the same run.
//!
//! Figures (each repeated `--runs` times, median reported; BENCHMARKS.md, "Storage engine"):
//! * buffered put throughput, 100-byte values, one shard;
//! * sequential ingest of 4 KiB values vs fio's raw sequential write bandwidth;
//! * durable puts from 256 concurrent writers (group commit) vs buffered, and their p99
//!   latency vs fio's write+fdatasync p99;
//! * restart time with 1 million keys, with and without hint files;
//! * store memory per key after a restart (counting global allocator).
//!
//! Usage: `storage_bench [--dir DIR] [--runs N] [--keys N]`; `STORAGE_BENCH_ONLY=ingest`
//! or `=durable` runs only that figure (for profiling). DIR must be on a real file
//! system (tmpfs refuses `O_DIRECT`); it is wiped before each measurement.
//!
//! Besides the table (stdout), each ingest and durable run prints to stderr glommio's
//! scheduler runs and task polls per put, and each durable run the median flush write,
//! `fdatasync`, and time between one round's `fdatasync` and the next round's write
//! (`TimedDisk`). Executor experiments: `STORAGE_BENCH_IO_MEMORY` (bytes),
//! `STORAGE_BENCH_SPIN_US` (`spin_before_park`), `STORAGE_BENCH_PREEMPT_US`
//! (`preempt_timer`), `STORAGE_BENCH_COOP=0` (main ring interrupt-driven, as upstream
//! glommio: the server's `io_uring_coop_taskrun = false`); unset, glommio's defaults
//! as the server uses them. Store
//! experiments (ingest only): `STORAGE_BENCH_BUFFER_BYTES` (`write_buffer_bytes`),
//! `STORAGE_BENCH_IN_FLIGHT` (`flushes_in_flight_max`), `STORAGE_BENCH_PIECE_BYTES`
//! (`write_piece_bytes`); (durable only) `STORAGE_BENCH_PREWRITE_BYTES`
//! (`prewrite_bytes`, 0 = off); `STORAGE_BENCH_WRITES=1` runs
//! ingest through `TimedDisk` and prints its writes and bytes in flight (mean over
//! time, peak).
//! `STORAGE_BENCH_ONLY=ingest` also runs fio qd1 and qd4 after each run and prints the
//! ratios (`STORAGE_BENCH_NO_FIO=1` skips them). A knob that is not a number stops the run
//! (exit 2) rather than measuring the default.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dynakv::runtime::disk::{GlommioBuffer, GlommioDisk, GlommioFile};
use dynakv::storage::{
    Disk, DiskFile, Durability, IoBuffer, Namespace, RecordKind, Store, StoreConfig,
};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

/// Counts live heap bytes (requested sizes) so the bench can report memory per key.
struct CountingAllocator;

static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Registered io_uring buffer memory per executor: RLIMIT_MEMLOCK is 8 MiB here and is
/// shared by every executor of the user.
const IO_MEMORY_BYTES: usize = 2 << 20;
const PARTITIONS: u32 = 256;
const DURABLE_WRITERS: usize = 256;
/// Durable puts per writer: 1,000 group-commit rounds, about a second. (Until
/// 2026-11-23 it was 100: 36 ms at 700k puts/s, where one slow `fdatasync` moved the
/// figure by 3x.)
const DURABLE_PUTS_PER_WRITER: u64 = 1000;

struct Args {
    dir: PathBuf,
    runs: usize,
    keys: u64,
}

const USAGE: &str = "usage: storage_bench [--dir DIR] [--runs N] [--keys N]
  --dir DIR   where the stores and fio's files go, wiped before each measurement;
              a real file system, not tmpfs (default target/storage-bench)
  --runs N    runs of each figure, median reported (default 3)
  --keys N    keys of the restart and memory figures (default 1000000)
environment: STORAGE_BENCH_ONLY=ingest|durable, and the knobs in BENCHMARKS.md §1";

/// Stops with `USAGE` and exit status 2 (a bad command line measures nothing).
fn usage_error(message: &str) -> ! {
    eprintln!("storage_bench: {message}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::from("target/storage-bench"),
        runs: 3,
        keys: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .unwrap_or_else(|| usage_error(&format!("{a} needs a value")));
        let number = |v: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage_error(&format!("{a} needs a number, not {v:?}")))
        };
        match a.as_str() {
            "--dir" => args.dir = PathBuf::from(v),
            "--runs" => args.runs = number(&v) as usize,
            "--keys" => args.keys = number(&v),
            _ => usage_error(&format!("unknown argument {a}")),
        }
    }
    if args.runs == 0 {
        usage_error("--runs must be at least 1");
    }
    args
}

fn fresh_dir(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create bench dir");
    dir.to_path_buf()
}

/// Runs `f` on a fresh glommio executor and returns its result.
fn on_glommio<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    f: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    let mut builder = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(knob::<usize>("STORAGE_BENCH_IO_MEMORY").unwrap_or(IO_MEMORY_BYTES));
    // Executor experiments (BENCHMARKS.md §1): glommio's defaults unless set.
    if let Some(us) = knob::<u64>("STORAGE_BENCH_SPIN_US") {
        builder = builder.spin_before_park(Duration::from_micros(us));
    }
    if let Some(us) = knob::<u64>("STORAGE_BENCH_PREEMPT_US") {
        builder = builder.preempt_timer(Duration::from_micros(us));
    }
    builder
        .spawn(f)
        .expect("executor")
        .join()
        .expect("executor thread")
}

/// What a durable phase spent per group-commit round, from `TimedDisk`: the flush's
/// `write_at`, the `fdatasync`, and the time from one `fdatasync`'s completion to the
/// next round's first write (the writers waking, appending and electing a leader).
#[derive(Default)]
struct RoundLog {
    /// Set for the durable phase only (open and close are not rounds).
    active: bool,
    writes: Vec<Duration>,
    syncs: Vec<Duration>,
    cpu_phases: Vec<Duration>,
    last_sync_done: Option<Instant>,
    /// Bytes of writes started and not completed, and their peak.
    in_flight_bytes: u64,
    in_flight_peak: u64,
    /// Integral of `in_flight_bytes` over time (byte-seconds) since `first_write`.
    in_flight_area: f64,
    first_write: Option<Instant>,
    last_change: Option<Instant>,
    writes_started: u64,
}

impl RoundLog {
    /// Accounts a change of the bytes in flight at `now`.
    fn in_flight_change(&mut self, now: Instant, add: u64, sub: u64) {
        if let Some(last) = self.last_change {
            self.in_flight_area += self.in_flight_bytes as f64 * (now - last).as_secs_f64();
        }
        self.first_write.get_or_insert(now);
        self.last_change = Some(now);
        self.in_flight_bytes = self.in_flight_bytes + add - sub;
        self.in_flight_peak = self.in_flight_peak.max(self.in_flight_bytes);
    }

    fn p50_us(v: &[Duration]) -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    }
}

/// `GlommioDisk` with the latency of every write and `fdatasync` recorded in a
/// `RoundLog` (two clock reads per call, i.e. per round, not per put).
#[derive(Clone)]
struct TimedDisk {
    inner: GlommioDisk,
    log: Rc<RefCell<RoundLog>>,
}

struct TimedFile {
    inner: GlommioFile,
    log: Rc<RefCell<RoundLog>>,
}

impl Disk for TimedDisk {
    type File = TimedFile;
    type Buffer = GlommioBuffer;

    fn alignment_bytes(&self) -> usize {
        self.inner.alignment_bytes()
    }
    fn alloc_buffer(&self, len_bytes: usize) -> GlommioBuffer {
        self.inner.alloc_buffer(len_bytes)
    }
    async fn open_file(&self, name: &str) -> std::io::Result<TimedFile> {
        Ok(TimedFile {
            inner: self.inner.open_file(name).await?,
            log: self.log.clone(),
        })
    }
    async fn list_files(&self) -> std::io::Result<Vec<String>> {
        self.inner.list_files().await
    }
    async fn remove_file(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove_file(name).await
    }
    async fn rename_file(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.inner.rename_file(from, to).await
    }
    async fn sync_dir(&self) -> std::io::Result<()> {
        self.inner.sync_dir().await
    }
    async fn submit_queued(&self) {
        self.inner.submit_queued().await
    }
}

impl DiskFile for TimedFile {
    type Buffer = GlommioBuffer;
    type ReadBuf = <GlommioFile as DiskFile>::ReadBuf;

    async fn read_at(&self, pos: u64, len: usize) -> std::io::Result<Self::ReadBuf> {
        self.inner.read_at(pos, len).await
    }
    async fn write_at(&self, buffer: Rc<GlommioBuffer>, pos: u64) -> std::io::Result<()> {
        let start = Instant::now();
        let len = buffer.as_bytes().len() as u64;
        {
            let mut log = self.log.borrow_mut();
            if let Some(done) = log.last_sync_done.take().filter(|_| log.active) {
                log.cpu_phases.push(start - done);
            }
            log.in_flight_change(start, len, 0);
            log.writes_started += 1;
        }
        let result = self.inner.write_at(buffer, pos).await;
        let mut log = self.log.borrow_mut();
        log.in_flight_change(Instant::now(), 0, len);
        if log.active {
            log.writes.push(start.elapsed());
        }
        result
    }
    async fn sync_data(&self) -> std::io::Result<()> {
        let start = Instant::now();
        let result = self.inner.sync_data().await;
        let done = Instant::now();
        let mut log = self.log.borrow_mut();
        if log.active {
            log.syncs.push(done - start);
            log.last_sync_done = Some(done);
        }
        result
    }
    async fn len_bytes(&self) -> std::io::Result<u64> {
        self.inner.len_bytes().await
    }
    async fn truncate(&self, len_bytes: u64) -> std::io::Result<()> {
        self.inner.truncate(len_bytes).await
    }
    async fn preallocate(&self, len_bytes: u64) -> std::io::Result<()> {
        self.inner.preallocate(len_bytes).await
    }
    async fn close(self) -> std::io::Result<()> {
        self.inner.close().await
    }
}

fn key(i: u64) -> [u8; 14] {
    let mut k = *b"key-0000000000";
    let digits = format!("{i:010}");
    k[4..].copy_from_slice(digits.as_bytes());
    k
}

/// Starts counting the executor's scheduler runs (glommio resets its counters when
/// they are read).
fn report_executor_start() {
    let _ = glommio::executor().executor_stats();
}

/// Prints (stderr) the executor's scheduler runs and task polls since
/// `report_executor_start`, per put: how often the executor went around its loop (each
/// time through `io_uring_enter`, re-arming its preemption timers).
fn report_executor(figure: &str, puts: u64) {
    let stats = glommio::executor().executor_stats();
    eprintln!(
        "  {figure}: executor {} scheduler runs, {} task polls ({:.2} and {:.2} per put)",
        stats.scheduler_runs(),
        stats.tasks_executed(),
        stats.scheduler_runs() as f64 / puts as f64,
        stats.tasks_executed() as f64 / puts as f64,
    );
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Buffered puts of 100-byte values; returns (puts per wall second, puts per CPU second
/// of the executor thread). The machine is shared, so the CPU figure is the steadier one.
fn bench_buffered_put(dir: &Path, n: u64) -> (f64, f64) {
    let dir = fresh_dir(dir);
    on_glommio(move || async move {
        let disk = GlommioDisk::new(&dir).expect("disk");
        let (store, _) = Store::open(disk, StoreConfig::default())
            .await
            .expect("open");
        let value = [0x5au8; 100];
        let cpu_start = thread_cpu();
        let start = Instant::now();
        for i in 0..n {
            store
                .put(
                    Namespace::Data,
                    (i % PARTITIONS as u64) as u32,
                    &key(i),
                    RecordKind::Value,
                    bytes::Bytes::copy_from_slice(&value),
                    Durability::Buffered,
                )
                .await
                .expect("put");
        }
        let elapsed = start.elapsed();
        let cpu = thread_cpu() - cpu_start;
        store.close().await.expect("close");
        (
            n as f64 / elapsed.as_secs_f64(),
            n as f64 / cpu.as_secs_f64(),
        )
    })
}

/// An experiment knob from the environment: `None` when unset; a value that
/// does not parse stops the run (a typo must not quietly measure the default).
fn knob<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            eprintln!("storage_bench: {name}={v} is not a number");
            std::process::exit(2);
        }
    }
}

/// The store configuration of the ingest figure: the default, with the write buffer,
/// the flushes in flight and the piece size from `STORAGE_BENCH_BUFFER_BYTES`,
/// `STORAGE_BENCH_IN_FLIGHT` and `STORAGE_BENCH_PIECE_BYTES` when set (experiment knobs).
fn ingest_config() -> StoreConfig {
    let mut config = StoreConfig::default();
    if let Some(v) = knob("STORAGE_BENCH_BUFFER_BYTES") {
        config.write_buffer_bytes = v;
    }
    if let Some(v) = knob("STORAGE_BENCH_IN_FLIGHT") {
        config.flushes_in_flight_max = v;
    }
    if let Some(v) = knob("STORAGE_BENCH_PIECE_BYTES") {
        config.write_piece_bytes = v;
    }
    config
}

/// The store configuration of the durable figure: the default, with
/// `StoreConfig::prewrite_bytes` from `STORAGE_BENCH_PREWRITE_BYTES` when set (an
/// experiment knob; 0 turns the zeros ahead of the records off).
fn durable_config() -> StoreConfig {
    let mut config = StoreConfig::default();
    if let Some(v) = knob("STORAGE_BENCH_PREWRITE_BYTES") {
        config.prewrite_bytes = v;
    }
    config
}

/// Sequential ingest of 4 KiB values, including the final sync; returns payload bytes
/// per wall second and per CPU second of the executor thread.
fn bench_ingest(dir: &Path, total_bytes: u64) -> (f64, f64) {
    let dir = fresh_dir(dir);
    on_glommio(move || async move {
        if std::env::var_os("STORAGE_BENCH_WRITES").is_none() {
            return ingest_on(GlommioDisk::new(&dir).expect("disk"), total_bytes).await;
        }
        let log = Rc::new(RefCell::new(RoundLog::default()));
        let disk = TimedDisk {
            inner: GlommioDisk::new(&dir).expect("disk"),
            log: log.clone(),
        };
        let result = ingest_on(disk, total_bytes).await;
        let log = log.borrow();
        let span = (log.last_change.unwrap() - log.first_write.unwrap()).as_secs_f64();
        eprintln!(
            "  ingest writes: {} of {:.0} KiB mean; bytes in flight: {:.2} MiB mean over time, {:.2} MiB peak",
            log.writes_started,
            total_bytes as f64 / log.writes_started as f64 / 1024.0,
            log.in_flight_area / span / (1u64 << 20) as f64,
            log.in_flight_peak as f64 / (1u64 << 20) as f64
        );
        result
    })
}

/// The ingest loop of `bench_ingest` on `disk`.
async fn ingest_on<D: Disk>(disk: D, total_bytes: u64) -> (f64, f64) {
    let (store, _) = Store::open(disk, ingest_config()).await.expect("open");
    let value = vec![0xa5u8; 4096];
    let n = total_bytes / 4096;
    report_executor_start();
    let cpu_start = thread_cpu();
    let start = Instant::now();
    for i in 0..n {
        store
            .put(
                Namespace::Data,
                (i % PARTITIONS as u64) as u32,
                &key(i),
                RecordKind::Value,
                bytes::Bytes::copy_from_slice(&value),
                Durability::Buffered,
            )
            .await
            .expect("put");
    }
    store.sync().await.expect("sync");
    let elapsed = start.elapsed();
    let cpu = thread_cpu() - cpu_start;
    report_executor("ingest", n);
    store.close().await.expect("close");
    let bytes = (n * 4096) as f64;
    (bytes / elapsed.as_secs_f64(), bytes / cpu.as_secs_f64())
}

/// 256 tasks doing durable puts of 100-byte values; returns (puts/s, p50 µs, p99 µs,
/// syncs, fraction of the wall time the executor thread was on a CPU). A group-commit
/// round is CPU work (every writer's put and wake-up) then the flush and `fdatasync`;
/// the CPU fraction tells how much of a round is the former.
fn bench_durable(dir: &Path, puts_per_writer: u64) -> (f64, u64, u64, u64, f64) {
    let dir = fresh_dir(dir);
    on_glommio(move || async move {
        let log = Rc::new(RefCell::new(RoundLog::default()));
        let disk = TimedDisk {
            inner: GlommioDisk::new(&dir).expect("disk"),
            log: log.clone(),
        };
        let (store, _) = Store::open(disk, durable_config()).await.expect("open");
        let store = Rc::new(store);
        let hist = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("histogram")));
        log.borrow_mut().active = true;
        report_executor_start();
        let cpu_start = thread_cpu();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..DURABLE_WRITERS as u64 {
            let store = store.clone();
            let hist = hist.clone();
            tasks.push(glommio::spawn_local(async move {
                let value = [0x3cu8; 100];
                for j in 0..puts_per_writer {
                    let i = w * puts_per_writer + j;
                    let t = Instant::now();
                    store
                        .put(
                            Namespace::Data,
                            (i % PARTITIONS as u64) as u32,
                            &key(i),
                            RecordKind::Value,
                            bytes::Bytes::copy_from_slice(&value),
                            Durability::Durable,
                        )
                        .await
                        .expect("durable put");
                    let us = t.elapsed().as_micros() as u64;
                    hist.borrow_mut().record(us.max(1)).expect("record");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let elapsed = start.elapsed();
        let cpu = thread_cpu() - cpu_start;
        let syncs = store.stats().syncs;
        report_executor("durable", DURABLE_WRITERS as u64 * puts_per_writer);
        {
            let mut log = log.borrow_mut();
            log.active = false;
            eprintln!(
                "  durable rounds: write p50 {:.0} us, fdatasync p50 {:.0} us, from one \
                 fdatasync's end to the next write p50 {:.0} us ({} writes, {} fdatasyncs)",
                RoundLog::p50_us(&log.writes),
                RoundLog::p50_us(&log.syncs),
                RoundLog::p50_us(&log.cpu_phases),
                log.writes.len(),
                log.syncs.len(),
            );
        }
        let result = {
            let h = hist.borrow();
            (
                (DURABLE_WRITERS as u64 * puts_per_writer) as f64 / elapsed.as_secs_f64(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                syncs,
                cpu.as_secs_f64() / elapsed.as_secs_f64(),
            )
        };
        let store = Rc::try_unwrap(store).ok().expect("sole owner");
        store.close().await.expect("close");
        result
    })
}

/// Fills a store with `n` keys and closes it (hint files written).
fn populate(dir: &Path, n: u64) {
    let dir = fresh_dir(dir);
    on_glommio(move || async move {
        let disk = GlommioDisk::new(&dir).expect("disk");
        let (store, _) = Store::open(disk, StoreConfig::default())
            .await
            .expect("open");
        let value = [0x77u8; 100];
        for i in 0..n {
            store
                .put(
                    Namespace::Data,
                    (i % PARTITIONS as u64) as u32,
                    &key(i),
                    RecordKind::Value,
                    bytes::Bytes::copy_from_slice(&value),
                    Durability::Buffered,
                )
                .await
                .expect("put");
        }
        store.close().await.expect("close");
    })
}

/// Opens the store in `dir`; returns (open wall time, open CPU time of the executor
/// thread, keys, used hints, heap bytes held).
fn timed_open(dir: &Path) -> (Duration, Duration, u64, bool, usize) {
    let dir = dir.to_path_buf();
    on_glommio(move || async move {
        let disk = GlommioDisk::new(&dir).expect("disk");
        let before = ALLOCATED_BYTES.load(Ordering::Relaxed);
        let cpu_start = thread_cpu();
        let start = Instant::now();
        let (store, report) = Store::open(disk, StoreConfig::default())
            .await
            .expect("open");
        let elapsed = start.elapsed();
        let cpu = thread_cpu() - cpu_start;
        let held = ALLOCATED_BYTES
            .load(Ordering::Relaxed)
            .saturating_sub(before);
        assert_eq!(report.keys, store.stats().keys);
        drop(store);
        (elapsed, cpu, report.keys, report.used_hint_files, held)
    })
}

fn remove_hints(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).expect("remove hint");
        }
    }
}

/// Finds the number after `"field" :` that follows `section` in fio's JSON output.
fn json_number_after(json: &str, section: &str, field: &str) -> Option<f64> {
    let at = json.find(section)?;
    let rest = &json[at..];
    let f = rest.find(field)?;
    let rest = &rest[f + field.len()..];
    let colon = rest.find(':')?;
    let num: String = rest[colon + 1..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

fn fio(args: &[&str]) -> String {
    let out = Command::new("fio")
        .args(args)
        .arg("--output-format=json")
        .output()
        .expect("run fio (apt-get install -y fio)");
    assert!(
        out.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// fio's sequential direct write bandwidth (bytes/s) with 1 MiB blocks at `iodepth`.
fn fio_seq_write(dir: &Path, iodepth: u32) -> f64 {
    let dir = fresh_dir(dir);
    let file = dir.join("fio-seq.dat");
    let json = fio(&[
        "--name=seqwrite",
        &format!("--filename={}", file.display()),
        "--rw=write",
        "--bs=1M",
        "--size=512M",
        "--direct=1",
        "--ioengine=io_uring",
        &format!("--iodepth={iodepth}"),
        "--end_fsync=1",
    ]);
    json_number_after(&json, "\"write\" : {", "\"bw_bytes\"").expect("fio bw_bytes")
}

/// fio's fdatasync latency percentiles (µs) after each 4 KiB write: (p50, p99).
fn fio_fdatasync(dir: &Path) -> (f64, f64) {
    let dir = fresh_dir(dir);
    let file = dir.join("fio-sync.dat");
    let json = fio(&[
        "--name=fdatasync",
        &format!("--filename={}", file.display()),
        "--rw=write",
        "--bs=4k",
        "--size=4M",
        "--fdatasync=1",
        "--ioengine=sync",
    ]);
    // `"sync" : {` is the fdatasync latency section (the bare word also appears as the
    // ioengine's name in the job options).
    let sync_at = json.find("\"sync\" : {").expect("fio sync section");
    let sync = &json[sync_at..];
    let p50 = json_number_after(sync, "\"percentile\"", "\"50.000000\"").expect("p50");
    let p99 = json_number_after(sync, "\"percentile\"", "\"99.000000\"").expect("p99");
    (p50 / 1000.0, p99 / 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn show(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let args = parse_args();
    if let Some(coop) = knob::<u8>("STORAGE_BENCH_COOP") {
        glommio::set_main_ring_coop_taskrun(coop != 0);
    }
    let runs = args.runs.max(1);
    let dir = args.dir.clone();
    const MIB: f64 = 1024.0 * 1024.0;

    let mut put_rate = Vec::new();
    let mut put_cpu_rate = Vec::new();
    let mut ingest = Vec::new();
    let mut ingest_cpu = Vec::new();
    let mut fio_qd1 = Vec::new();
    let mut fio_qd4 = Vec::new();
    let mut durable_rate = Vec::new();
    let mut durable_p50 = Vec::new();
    let mut durable_p99 = Vec::new();
    let mut durable_syncs = Vec::new();
    let mut durable_busy = Vec::new();
    let mut fio_sync_p50 = Vec::new();
    let mut fio_sync_p99 = Vec::new();
    let mut open_hint = Vec::new();
    let mut open_hint_cpu = Vec::new();
    let mut open_scan_cpu = Vec::new();
    let mut open_scan = Vec::new();
    let mut mem_per_key = Vec::new();
    // For profiling one figure: `STORAGE_BENCH_ONLY=ingest|durable perf record ...`.
    if std::env::var("STORAGE_BENCH_ONLY").as_deref() == Ok("durable") {
        for _ in 0..runs {
            let (rate, p50, p99, syncs, busy) = bench_durable(&dir, DURABLE_PUTS_PER_WRITER);
            println!(
                "durable {rate:.0}/s p50 {p50} us p99 {p99} us, {syncs} syncs, CPU {:.0}% of wall",
                busy * 100.0
            );
        }
        return;
    }
    if std::env::var("STORAGE_BENCH_ONLY").as_deref() == Ok("ingest") {
        for _ in 0..runs {
            let (wall, cpu) = bench_ingest(&dir, 512 << 20);
            let (qd1, qd4) = if std::env::var_os("STORAGE_BENCH_NO_FIO").is_some() {
                (f64::NAN, f64::NAN)
            } else {
                (fio_seq_write(&dir, 1), fio_seq_write(&dir, 4))
            };
            println!(
                "ingest {:.1} MiB/s, {:.1} MiB per CPU-second; fio qd1 {:.1}, qd4 {:.1} MiB/s; ratio to qd1 {:.3}, to qd4 {:.3}",
                wall / MIB,
                cpu / MIB,
                qd1 / MIB,
                qd4 / MIB,
                wall / qd1,
                wall / qd4
            );
        }
        return;
    }
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        let (wall, cpu) = bench_buffered_put(&dir, 1_000_000);
        put_rate.push(wall);
        put_cpu_rate.push(cpu);
        eprintln!("  buffered put: {wall:.0}/s ({cpu:.0} per CPU-second)");
        let (wall, cpu) = bench_ingest(&dir, 512 << 20);
        ingest.push(wall / MIB);
        ingest_cpu.push(cpu / MIB);
        fio_qd1.push(fio_seq_write(&dir, 1) / MIB);
        fio_qd4.push(fio_seq_write(&dir, 4) / MIB);
        eprintln!(
            "  ingest 4 KiB: {:.1} MiB/s ({:.1} MiB per CPU-second); fio qd1 {:.1}, qd4 {:.1} MiB/s",
            ingest[run], ingest_cpu[run], fio_qd1[run], fio_qd4[run]
        );
        let (rate, p50, p99, syncs, busy) = bench_durable(&dir, DURABLE_PUTS_PER_WRITER);
        durable_busy.push(busy);
        durable_rate.push(rate);
        durable_p50.push(p50 as f64);
        durable_p99.push(p99 as f64);
        durable_syncs.push(syncs as f64);
        let (fp50, fp99) = fio_fdatasync(&dir);
        fio_sync_p50.push(fp50);
        fio_sync_p99.push(fp99);
        eprintln!(
            "  durable x{DURABLE_WRITERS}: {rate:.0}/s p50 {p50} us p99 {p99} us ({syncs} syncs); fio fdatasync p50 {fp50:.0} us p99 {fp99:.0} us"
        );
        populate(&dir, args.keys);
        let (t, t_cpu, keys, hints, held) = timed_open(&dir);
        open_hint_cpu.push(t_cpu.as_secs_f64());
        assert!(hints, "close wrote hint files");
        assert_eq!(keys, args.keys);
        open_hint.push(t.as_secs_f64());
        mem_per_key.push(held as f64 / keys as f64);
        remove_hints(&dir);
        let (t_scan, t_scan_cpu, keys_scan, hints_scan, _) = timed_open(&dir);
        open_scan_cpu.push(t_scan_cpu.as_secs_f64());
        assert!(!hints_scan);
        assert_eq!(keys_scan, args.keys);
        open_scan.push(t_scan.as_secs_f64());
        eprintln!(
            "  restart {keys} keys: {:.3} s with hints, {:.3} s scanning; {:.1} heap bytes/key",
            t.as_secs_f64(),
            t_scan.as_secs_f64(),
            mem_per_key[run]
        );
    }
    let put = median(put_rate.clone());
    let durable = median(durable_rate.clone());
    println!("## storage_bench results (medians of {runs} runs; every run listed)");
    println!();
    println!("| figure | median | runs | target |");
    println!("|---|---|---|---|");
    println!(
        "| buffered put, 100 B values (puts/s) | {put:.0} | {} | >= 400000 |",
        show(&put_rate)
    );
    println!(
        "| buffered put, 100 B values (puts per CPU-second) | {:.0} | {} | |",
        median(put_cpu_rate.clone()),
        show(&put_cpu_rate)
    );
    println!(
        "| ingest 4 KiB values (MiB/s) | {:.1} | {} | |",
        median(ingest.clone()),
        show(&ingest)
    );
    println!(
        "| ingest 4 KiB values (MiB per CPU-second) | {:.1} | {} | |",
        median(ingest_cpu.clone()),
        show(&ingest_cpu)
    );
    println!(
        "| fio seq write 1 MiB qd1 (MiB/s) | {:.1} | {} | |",
        median(fio_qd1.clone()),
        show(&fio_qd1)
    );
    println!(
        "| fio seq write 1 MiB qd4 (MiB/s) | {:.1} | {} | |",
        median(fio_qd4.clone()),
        show(&fio_qd4)
    );
    let ratios_qd4: Vec<f64> = ingest.iter().zip(&fio_qd4).map(|(a, b)| a / b).collect();
    let ratios_qd1: Vec<f64> = ingest.iter().zip(&fio_qd1).map(|(a, b)| a / b).collect();
    println!(
        "| ingest / fio qd4 | {:.3} | {} | >= 0.70 |",
        median(ratios_qd4.clone()),
        show(&ratios_qd4)
    );
    println!(
        "| ingest / fio qd1 | {:.3} | {} | |",
        median(ratios_qd1.clone()),
        show(&ratios_qd1)
    );
    println!(
        "| durable put x{DURABLE_WRITERS} writers (puts/s) | {durable:.0} | {} | |",
        show(&durable_rate)
    );
    let dratio: Vec<f64> = durable_rate
        .iter()
        .zip(&put_rate)
        .map(|(d, b)| d / b)
        .collect();
    println!(
        "| durable / buffered | {:.3} | {} | >= 0.5 |",
        median(dratio.clone()),
        show(&dratio)
    );
    println!(
        "| durable put p50 (us) | {:.0} | {} | |",
        median(durable_p50.clone()),
        show(&durable_p50)
    );
    println!(
        "| durable put p99 (us) | {:.0} | {} | |",
        median(durable_p99.clone()),
        show(&durable_p99)
    );
    println!(
        "| fio write+fdatasync p50 (us) | {:.0} | {} | |",
        median(fio_sync_p50.clone()),
        show(&fio_sync_p50)
    );
    println!(
        "| fio write+fdatasync p99 (us) | {:.0} | {} | |",
        median(fio_sync_p99.clone()),
        show(&fio_sync_p99)
    );
    let pratio: Vec<f64> = durable_p99
        .iter()
        .zip(&fio_sync_p99)
        .map(|(a, b)| a / b)
        .collect();
    println!(
        "| durable p99 / fio fdatasync p99 | {:.2} | {} | |",
        median(pratio.clone()),
        show(&pratio)
    );
    println!(
        "| durable: executor CPU time / wall time | {:.2} | {} | |",
        median(durable_busy.clone()),
        show(&durable_busy)
    );
    println!(
        "| group-commit rounds per run | {:.0} | {} | |",
        median(durable_syncs.clone()),
        show(&durable_syncs)
    );
    println!(
        "| restart {} keys, hint files (s) | {:.3} | {} | <= 2 |",
        args.keys,
        median(open_hint.clone()),
        show(&open_hint)
    );
    println!(
        "| restart {} keys, scanning (s) | {:.3} | {} | |",
        args.keys,
        median(open_scan.clone()),
        show(&open_scan)
    );
    println!(
        "| restart {} keys, hint files (CPU s) | {:.3} | {} | |",
        args.keys,
        median(open_hint_cpu.clone()),
        show(&open_hint_cpu)
    );
    println!(
        "| restart {} keys, scanning (CPU s) | {:.3} | {} | |",
        args.keys,
        median(open_scan_cpu.clone()),
        show(&open_scan_cpu)
    );
    println!(
        "| store heap bytes per key (14 B keys) | {:.1} | {} | <= 62 (14 + 48) |",
        median(mem_per_key.clone()),
        show(&mem_per_key)
    );
}
