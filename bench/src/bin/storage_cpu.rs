//! storage_cpu: the storage engine's own CPU per put, on the in-memory `MemDisk`, for
//! instruction counts under callgrind. On the shared development VM wall and CPU times
//! swing by 2x between runs and there are no hardware counters; callgrind's count is
//! the same on every run. (glommio does not run under valgrind, so this drives the
//! store with `block_on`, or with the small run queue below, instead of
//! `storage_bench`'s `GlommioDisk`.)
//!
//! Usage: `storage_cpu ingest N` (N buffered puts of 4 KiB values, then `sync`),
//! `storage_cpu put N` (100-byte values), `storage_cpu durable N` (N durable puts of
//! 100-byte values from `DURABLE_WRITERS` concurrent tasks, as `storage_bench`'s durable
//! figure: group commit, one leader per sync round, the others woken by it), or
//! `storage_cpu compact N [KEYS]` (N puts of 100-byte values over KEYS uniform keys,
//! default 100,000, as a sustained PUT load on the server leaves them, then compaction run to
//! its end in 256 KiB steps as the server's; prints compaction's time per put, the
//! figure of BENCHMARKS.md §2zi; `FROM_INDEX=0` turns `compaction_from_index` off); keys and
//! partitions as in `storage_bench`, `StoreConfig::default()`, a fresh `Bytes` per put
//! (as the server builds per request). The counts include `MemDisk`'s own copies of
//! every written byte and, for `durable`, the run queue's wake-ups, the same for any
//! engine version. BENCHMARKS.md §1 has the commands.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

/// dynakv-bench's own generator (its key draws), shared as a file: the
/// crate has no library target.
#[allow(dead_code)]
#[path = "../rng.rs"]
mod rng;

use dynakv::storage::{block_on, Durability, MemDisk, Namespace, RecordKind, Store, StoreConfig};

/// Concurrent writers of the `durable` mode (as `storage_bench`).
const DURABLE_WRITERS: u64 = 256;

fn key(i: u64) -> String {
    format!("key-{i:010}")
}

/// A put of key `i` (in partition `i % 256`), a fresh `Bytes` of `value`.
fn put(store: &Store<MemDisk>, i: u64, value: &[u8], durability: Durability) {
    block_on(store.put(
        Namespace::Data,
        (i % 256) as u32,
        key(i).as_bytes(),
        RecordKind::Value,
        bytes::Bytes::copy_from_slice(value),
        durability,
    ))
    .expect("put");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: storage_cpu ingest|put|durable N | compact N [KEYS]";
    let mode = args.next().expect(usage);
    let n: u64 = args.next().expect(usage).parse().expect(usage);
    if mode == "compact" {
        let keys = args.next().map_or(100_000, |k| k.parse().expect(usage));
        run_compact(n, keys);
        return;
    }
    let (len, durability) = match mode.as_str() {
        "ingest" => (4096, Durability::Buffered),
        "put" => (100, Durability::Buffered),
        "durable" => (100, Durability::Durable),
        _ => panic!("{usage}"),
    };
    let (store, _) = block_on(Store::open(MemDisk::new(), StoreConfig::default())).expect("open");
    let value = vec![0xa5u8; len];
    if durability == Durability::Durable {
        run_durable(Rc::new(store), n, value);
        return;
    }
    for i in 0..n {
        put(&store, i, &value, durability);
    }
    block_on(store.sync()).expect("sync");
    println!("{n} puts of {len} B, {} flushes", store.stats().flushes);
}

/// `n` durable puts from `DURABLE_WRITERS` tasks, each waiting for its put's sync round
/// before the next one, polled by a FIFO run queue: a task runs again only once woken,
/// as on glommio (the leader of a round yields once so the others append first).
fn run_durable(store: Rc<Store<MemDisk>>, n: u64, value: Vec<u8>) {
    assert!(
        n % DURABLE_WRITERS == 0,
        "N must be a multiple of {DURABLE_WRITERS}"
    );
    let per_writer = n / DURABLE_WRITERS;
    let queue = Arc::new(RunQueue::default());
    let mut tasks: Vec<Option<Pin<Box<dyn Future<Output = ()>>>>> = Vec::new();
    let mut polls = 0u64;
    for w in 0..DURABLE_WRITERS {
        let store = store.clone();
        let value = value.clone();
        tasks.push(Some(Box::pin(async move {
            for j in 0..per_writer {
                let i = w * per_writer + j;
                store
                    .put(
                        Namespace::Data,
                        (i % 256) as u32,
                        key(i).as_bytes(),
                        RecordKind::Value,
                        bytes::Bytes::copy_from_slice(&value),
                        Durability::Durable,
                    )
                    .await
                    .expect("durable put");
            }
        })));
        queue.ready.lock().expect("run queue").push_back(w as usize);
    }
    let wakers: Vec<Arc<TaskWaker>> = (0..tasks.len())
        .map(|id| {
            Arc::new(TaskWaker {
                id,
                queued: AtomicBool::new(true),
                queue: queue.clone(),
            })
        })
        .collect();
    let wakers: Vec<(Arc<TaskWaker>, Waker)> = wakers
        .into_iter()
        .map(|w| (w.clone(), Waker::from(w)))
        .collect();
    let mut done = 0;
    loop {
        let next = queue.ready.lock().expect("run queue").pop_front();
        let Some(id) = next else { break };
        let Some(task) = tasks[id].as_mut() else {
            continue;
        };
        polls += 1;
        let (flag, waker) = &wakers[id];
        flag.queued.store(false, Ordering::Relaxed);
        if task
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
        {
            tasks[id] = None;
            done += 1;
        }
    }
    assert_eq!(
        done, DURABLE_WRITERS,
        "every writer finished (none left waiting)"
    );
    let stats = store.stats();
    println!(
        "{n} durable puts of {} B from {DURABLE_WRITERS} tasks: {} syncs, {} flushes, {} task polls",
        value.len(),
        stats.syncs,
        stats.flushes,
        polls
    );
}

/// `n` puts of 100-byte values over `keys` keys, then compaction to its end, timed.
fn run_compact(n: u64, keys: u64) {
    let config = StoreConfig {
        compaction_from_index: std::env::var("FROM_INDEX").map_or(true, |v| v != "0"),
        ..StoreConfig::default()
    };
    let (store, _) = block_on(Store::open(MemDisk::new(), config)).expect("open");
    let value = vec![0xa5u8; 100];
    // Uniform keys, drawn as dynakv-bench draws them.
    let mut rng = rng::Rng::new(1, 0);
    for _ in 0..n {
        put(&store, rng.below(keys), &value, Durability::Buffered);
    }
    block_on(store.sync()).expect("sync");
    let (mut examined, mut copied, mut removed) = (0u64, 0u64, 0u32);
    let start = std::time::Instant::now();
    loop {
        let step = block_on(store.compact_step(256 << 10)).expect("compact");
        examined += step.bytes_examined;
        copied += step.bytes_copied;
        removed += step.segments_removed;
        if !step.more {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "{n} puts over {keys} keys; compaction: {removed} segments removed ({} from the index \
         alone), {:.1} MiB examined, {:.1} MiB copied in {secs:.3} s: {:.1} ns per put",
        stats.segments_compacted_sparse,
        examined as f64 / (1 << 20) as f64,
        copied as f64 / (1 << 20) as f64,
        secs * 1e9 / n as f64,
    );
}

/// Ids of the tasks to poll, in wake order.
#[derive(Default)]
struct RunQueue {
    ready: Mutex<VecDeque<usize>>,
}

struct TaskWaker {
    id: usize,
    /// In `queue` already: a second wake before the poll adds nothing (as glommio's
    /// `SCHEDULED` flag).
    queued: AtomicBool,
    queue: Arc<RunQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::Relaxed) {
            self.queue
                .ready
                .lock()
                .expect("run queue")
                .push_back(self.id);
        }
    }
}
