//! Crash-point enumeration of the storage engine (issue 7; ALICE, OSDI 2014).
//!
//! A workload of 1,000 operations (buffered and durable puts, tombstones,
//! purges, hinted-handoff records, syncs, compaction steps, hint-file writes)
//! runs on a tracing `MemDisk`, which records every create, write, sync,
//! truncate, rename, remove and directory sync. For prefixes of that trace
//! the test builds the disk states a power loss could leave — unsynced
//! writes all lost, all kept, kept in random subsets (reordered), the last
//! one torn at 512 B or 4 KiB, directory operations since the last directory
//! sync lost or kept in order — and recovers each one, checking:
//!
//! * recovery does not panic or fail;
//! * no write acknowledged as durable before the crash point is lost: each
//!   key holds its last acknowledged write or a later write of it;
//! * no value that was never written appears (every payload is unique);
//! * recovering again after a crash right after recovery gives the same state.
//!
//! The CI run samples: every prefix at a metadata operation (sync, create,
//! rename, remove, directory sync) or a stride, and a few states each.
//! `DYNAKV_CRASH_POINTS=all` checks every prefix with every state and more
//! random subsets (minutes). The fsyncgate case runs the workload with the
//! n-th `fdatasync` failing, for a spread of n: nothing pending on it is
//! acknowledged, the store stays failed, and recovery honours the acks given.
//! `tests/storage_crash.rs` holds the hand-written single-fault cases.

use std::collections::BTreeMap;

use dynakv::storage::{
    block_on, CrashMode, DiskOp, Durability, MemDisk, Namespace, RecordKind, StorageError, Store,
    StoreConfig,
};

fn config() -> StoreConfig {
    StoreConfig {
        max_key_bytes: 64,
        max_value_bytes: 4096,
        // Small segments and buffers: many rotations, flushes, compactions.
        segment_size_bytes: 24 << 10,
        write_buffer_bytes: 6 << 10,
        compaction_dead_fraction: 0.4,
        read_cache_bytes: 0,
        ..StoreConfig::default()
    }
}

#[path = "support/xorshift.rs"]
mod xorshift;
use xorshift::Rng;

type Key = (Namespace, u32, Vec<u8>);
/// What a key holds: `None` when purged, else (kind, payload).
type Content = Option<(RecordKind, Vec<u8>)>;

/// Marks in the trace: write `w` acknowledged durable, or "every write
/// before `n` is durable" (a `sync` returned).
const MARK_ACK: u64 = 1 << 62;
const MARK_SYNCED_BEFORE: u64 = 1 << 61;

/// The workload's writes, in issue order, per key.
#[derive(Default)]
struct History {
    /// (write number, what it wrote) per key.
    writes: BTreeMap<Key, Vec<(u64, Content)>>,
    /// The key of each write number.
    key_of: Vec<Key>,
}

struct Workload {
    trace: Vec<DiskOp>,
    history: History,
    /// Writes that returned an error (their outcome is unknown).
    failed_writes: u64,
    /// Whether the store ended failed.
    ended_failed: bool,
}

/// Runs 1,000 operations on a fresh traced disk. With `fail_sync_from`, the
/// n-th `fdatasync` and all later ones fail.
fn run_workload(seed: u64, fail_sync_from: Option<u64>) -> Workload {
    let disk = MemDisk::new();
    disk.start_trace();
    disk.fail_syncs_from(fail_sync_from);
    let (store, _) = block_on(Store::open(disk.clone(), config())).expect("open");
    let mut rng = Rng(seed | 1);
    let mut history = History::default();
    let mut failed_writes = 0;
    let mut failed_at: Option<usize> = None;
    for step in 0..1000usize {
        let roll = rng.below(100);
        let write_no = history.key_of.len() as u64;
        let (ns, keys) = if roll < 85 {
            (Namespace::Data, 48)
        } else {
            (Namespace::Hint, 12)
        };
        let k = rng.below(keys);
        let key: Key = (ns, (k % 4) as u32, format!("key-{k:03}").into_bytes());
        let result: Result<(), StorageError>;
        match roll {
            // Puts: values of 20 B to ~3 KiB, so writes cross 512 B and
            // 4 KiB boundaries; a unique tag makes every payload distinct.
            0..=69 | 85..=94 => {
                let durable = rng.below(4) == 0 || ns == Namespace::Hint;
                let tombstone = (60..70).contains(&roll);
                let len = if rng.below(8) == 0 {
                    1000 + rng.below(2500)
                } else {
                    20 + rng.below(200)
                };
                let tag = format!("w{write_no}:");
                let payload: Vec<u8> = tag.bytes().cycle().take(len.max(tag.len())).collect();
                let kind = RecordKind::of(tombstone);
                let durability = Durability::of(durable);
                history.key_of.push(key.clone());
                history
                    .writes
                    .entry(key.clone())
                    .or_default()
                    .push((write_no, Some((kind, payload.clone()))));
                result = block_on(store.put(
                    key.0,
                    key.1,
                    &key.2,
                    kind,
                    bytes::Bytes::copy_from_slice(&payload),
                    durability,
                ));
                if result.is_ok() && durable {
                    disk.mark(MARK_ACK | write_no);
                }
            }
            70..=74 | 95..=99 => {
                history.key_of.push(key.clone());
                history
                    .writes
                    .entry(key.clone())
                    .or_default()
                    .push((write_no, None));
                result = block_on(store.purge(key.0, key.1, &key.2));
            }
            75..=78 => {
                result = block_on(store.sync());
                if result.is_ok() {
                    disk.mark(MARK_SYNCED_BEFORE | write_no);
                }
            }
            79..=82 => {
                result = block_on(store.compact_step(16 << 10)).map(|_| ());
            }
            83 => result = block_on(store.write_hint_files()),
            _ => result = block_on(store.flush()),
        }
        if let Err(error) = result {
            if failed_at.is_none() {
                assert!(
                    matches!(error, StorageError::SyncFailed(_) | StorageError::Failed),
                    "step {step}: unexpected error {error}"
                );
                failed_at = Some(step);
            }
            failed_writes += 1;
            assert!(
                store.is_failed(),
                "step {step}: an error left the store writable"
            );
        } else if failed_at.is_some() && !(75..85).contains(&roll) {
            panic!("step {step}: a write was accepted after the store failed");
        }
    }
    let ended_failed = store.is_failed();
    drop(store);
    Workload {
        trace: disk.take_trace(),
        history,
        failed_writes,
        ended_failed,
    }
}

// ---------------------------------------------------------------------------
// Replaying a trace prefix into the file system state it leaves.

#[derive(Clone, Default)]
struct FileState {
    durable: Vec<u8>,
    /// Writes since the last sync of this file: (position, bytes).
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

#[derive(Clone, Default)]
struct FsState {
    files: BTreeMap<u64, FileState>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    /// Directory operations since the last directory sync.
    dir_pending: Vec<DirOp>,
    /// Highest write number acknowledged durable, per key.
    acked: BTreeMap<Key, u64>,
}

fn write_into(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let end = pos as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[pos as usize..end].copy_from_slice(bytes);
}

impl FsState {
    fn apply(&mut self, op: &DiskOp, history: &History) {
        match op {
            DiskOp::Create { inode, name } => {
                self.files.insert(*inode, FileState::default());
                self.names.insert(name.clone(), *inode);
                self.dir_pending.push(DirOp::Link(name.clone(), *inode));
            }
            DiskOp::Write { inode, pos, bytes } => {
                let file = self.files.get_mut(inode).expect("write to a created file");
                file.pending.push((*pos, bytes.clone()));
            }
            DiskOp::Sync { inode } => {
                let file = self.files.get_mut(inode).expect("sync of a created file");
                for (pos, bytes) in std::mem::take(&mut file.pending) {
                    write_into(&mut file.durable, pos, &bytes);
                }
            }
            DiskOp::Truncate { inode, len } => {
                // As MemDisk models it: a shrinking truncate is durable at once.
                let file = self
                    .files
                    .get_mut(inode)
                    .expect("truncate of a created file");
                let len = *len as usize;
                file.durable.truncate(len);
                for (pos, bytes) in file.pending.iter_mut() {
                    bytes.truncate(len.saturating_sub(*pos as usize));
                }
            }
            DiskOp::Rename { from, to } => {
                let inode = self.names.remove(from).expect("rename of a name");
                self.names.insert(to.clone(), inode);
                self.dir_pending
                    .push(DirOp::Rename(from.clone(), to.clone()));
            }
            DiskOp::Remove { name } => {
                self.names.remove(name);
                self.dir_pending.push(DirOp::Unlink(name.clone()));
            }
            DiskOp::SyncDir => {
                self.durable_names = self.names.clone();
                self.dir_pending.clear();
            }
            DiskOp::Mark(label) => {
                if label & MARK_ACK != 0 {
                    let write = label & !MARK_ACK;
                    self.ack(&history.key_of[write as usize], write);
                } else if label & MARK_SYNCED_BEFORE != 0 {
                    let before = label & !MARK_SYNCED_BEFORE;
                    for write in 0..before {
                        self.ack(&history.key_of[write as usize], write);
                    }
                }
            }
        }
    }

    fn ack(&mut self, key: &Key, write: u64) {
        let slot = self.acked.entry(key.clone()).or_insert(write);
        *slot = (*slot).max(write);
    }

    /// Pending writes as (inode, index) pairs, in issue order per file.
    fn pending(&self) -> Vec<(u64, usize)> {
        self.files
            .iter()
            .flat_map(|(inode, file)| (0..file.pending.len()).map(move |i| (*inode, i)))
            .collect()
    }
}

/// One crash state: how many pending directory operations survive (in
/// order), which pending writes survive, and which of those is torn.
struct Crash {
    name: String,
    dir_ops_kept: usize,
    keep: Box<dyn Fn(u64, usize) -> bool>,
    tear: Option<((u64, usize), u64)>,
}

fn build_disk(fs: &FsState, crash: &Crash) -> MemDisk {
    let mut names = fs.durable_names.clone();
    for op in fs.dir_pending.iter().take(crash.dir_ops_kept) {
        match op {
            DirOp::Link(name, inode) => {
                names.insert(name.clone(), *inode);
            }
            DirOp::Unlink(name) => {
                names.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
        }
    }
    let files = names.into_iter().map(|(name, inode)| {
        let file = &fs.files[&inode];
        let mut data = file.durable.clone();
        for (i, (pos, bytes)) in file.pending.iter().enumerate() {
            if !(crash.keep)(inode, i) {
                continue;
            }
            let keep = match crash.tear {
                Some((at, boundary)) if at == (inode, i) => {
                    let end = pos + bytes.len() as u64;
                    ((end - 1) / boundary * boundary).saturating_sub(*pos) as usize
                }
                _ => bytes.len(),
            };
            write_into(&mut data, *pos, &bytes[..keep]);
        }
        (name, data)
    });
    MemDisk::from_durable_files(files.collect::<Vec<_>>())
}

/// Everything a store holds: (kind, payload) per key.
fn dump(store: &Store<MemDisk>, what: &str) -> BTreeMap<Key, (RecordKind, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for ns in [Namespace::Data, Namespace::Hint] {
        for partition in store.partitions(ns) {
            for key in store.keys(ns, partition) {
                let record = block_on(store.get(ns, partition, &key))
                    .unwrap_or_else(|e| panic!("{what}: get failed: {e}"))
                    .unwrap_or_else(|| panic!("{what}: an indexed key reads as absent"));
                out.insert(
                    (ns, partition, key.to_vec()),
                    (record.kind, record.payload.to_vec()),
                );
            }
        }
    }
    out
}

/// Recovers `disk` and checks the recovered state against the history.
fn check_recovery(disk: MemDisk, fs: &FsState, history: &History, what: &str) {
    let (store, _report) = block_on(Store::open(disk.clone(), config()))
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    store.check_invariants();
    let state = dump(&store, what);
    drop(store);
    for (key, content) in &state {
        let writes = history
            .writes
            .get(key)
            .unwrap_or_else(|| panic!("{what}: key {key:?} was never written"));
        let Some((number, _)) = writes
            .iter()
            .find(|(_, written)| written.as_ref() == Some(content))
        else {
            panic!("{what}: key {key:?} holds a value that was never written");
        };
        if let Some(acked) = fs.acked.get(key) {
            assert!(
                number >= acked,
                "{what}: key {key:?} went back from acknowledged write {acked} to {number}"
            );
        }
    }
    for (key, acked) in &fs.acked {
        if state.contains_key(key) {
            continue;
        }
        // Absent is right only if a purge at or after the acknowledged write
        // may have survived.
        let writes = &history.writes[key];
        assert!(
            writes
                .iter()
                .any(|(number, written)| number >= acked && written.is_none()),
            "{what}: key {key:?} lost its acknowledged write {acked}"
        );
    }
    // A crash right after recovery, then recovery again: the same state.
    disk.crash(CrashMode::LoseUnsynced);
    let (store, _) = block_on(Store::open(disk, config()))
        .unwrap_or_else(|e| panic!("{what}: second recovery failed: {e}"));
    assert_eq!(
        dump(&store, what),
        state,
        "{what}: recovering twice differs"
    );
}

/// The crash states of one prefix. `random` extra subsets of the pending
/// writes are drawn from `rng`.
fn crash_states(fs: &FsState, rng: &mut Rng, random: usize) -> Vec<Crash> {
    let dir_all = fs.dir_pending.len();
    let mut out = vec![
        Crash {
            name: "unsynced lost".into(),
            dir_ops_kept: 0,
            keep: Box::new(|_, _| false),
            tear: None,
        },
        Crash {
            name: "unsynced kept".into(),
            dir_ops_kept: dir_all,
            keep: Box::new(|_, _| true),
            tear: None,
        },
    ];
    let pending = fs.pending();
    if let Some(&last) = pending.last() {
        for boundary in [512, 4096] {
            out.push(Crash {
                name: format!("last write torn at {boundary}"),
                dir_ops_kept: dir_all,
                keep: Box::new(|_, _| true),
                tear: Some((last, boundary)),
            });
        }
    }
    for round in 0..random {
        if pending.is_empty() && dir_all == 0 {
            break;
        }
        let chosen: Vec<(u64, usize)> = pending
            .iter()
            .copied()
            .filter(|_| rng.below(2) == 0)
            .collect();
        let tear = if !chosen.is_empty() && rng.below(3) == 0 {
            let at = chosen[rng.below(chosen.len())];
            Some((at, if rng.below(2) == 0 { 512 } else { 4096 }))
        } else {
            None
        };
        out.push(Crash {
            name: format!("random subset {round}"),
            dir_ops_kept: rng.below(dir_all + 1),
            keep: Box::new(move |inode, i| chosen.contains(&(inode, i))),
            tear,
        });
    }
    out
}

#[test]
fn every_crash_point_of_the_workload_recovers_what_was_acknowledged() {
    let all = std::env::var("DYNAKV_CRASH_POINTS").is_ok_and(|v| v == "all");
    let seed = std::env::var("DYNAKV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0FFEE);
    let workload = run_workload(seed, None);
    assert_eq!(workload.failed_writes, 0);
    let trace = &workload.trace;
    let count = |f: fn(&DiskOp) -> bool| trace.iter().filter(|op| f(op)).count();
    let (creates, writes, syncs, renames, removes) = (
        count(|op| matches!(op, DiskOp::Create { .. })),
        count(|op| matches!(op, DiskOp::Write { .. })),
        count(|op| matches!(op, DiskOp::Sync { .. })),
        count(|op| matches!(op, DiskOp::Rename { .. })),
        count(|op| matches!(op, DiskOp::Remove { .. })),
    );
    // The workload must reach every kind of operation, or the enumeration
    // below proves less than it claims.
    assert!(creates > 5 && writes > 100 && syncs > 50 && renames > 0 && removes > 0);
    let stride = if all { 1 } else { 7 };
    let random = if all { 12 } else { 1 };
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut fs = FsState::default();
    let (mut prefixes, mut states) = (0, 0);
    for (i, op) in trace.iter().enumerate() {
        fs.apply(op, &workload.history);
        let metadata = !matches!(op, DiskOp::Write { .. } | DiskOp::Mark(_));
        if !(all || metadata || i % stride == 0 || i + 1 == trace.len()) {
            continue;
        }
        prefixes += 1;
        for crash in crash_states(&fs, &mut rng, random) {
            states += 1;
            let what = format!(
                "crash after op {i} of {} ({op:?}), {}",
                trace.len(),
                crash.name
            )
            .chars()
            .take(300)
            .collect::<String>();
            check_recovery(build_disk(&fs, &crash), &fs, &workload.history, &what);
        }
    }
    eprintln!(
        "trace: {} ops ({creates} creates, {writes} writes, {syncs} syncs, {renames} renames, \
         {removes} removes); {prefixes} prefixes, {states} crash states recovered",
        trace.len()
    );
}

#[test]
fn a_failed_fdatasync_at_any_point_acknowledges_nothing_pending_and_fails_the_store() {
    let all = std::env::var("DYNAKV_CRASH_POINTS").is_ok_and(|v| v == "all");
    let seed = 0xF5_7C6A7E;
    let syncs = run_workload(seed, None)
        .trace
        .iter()
        .filter(|op| matches!(op, DiskOp::Sync { .. }))
        .count() as u64;
    let step = if all { 1 } else { (syncs / 25).max(1) };
    let mut rng = Rng(seed);
    for n in (1..=syncs).step_by(step as usize) {
        let workload = run_workload(seed, Some(n));
        assert!(workload.ended_failed, "sync {n}: the store did not fail");
        assert!(
            workload.failed_writes > 0,
            "sync {n}: no operation saw the failure"
        );
        // Replay the whole trace; every state a crash could now leave must
        // honour exactly the acknowledgements given before the failure.
        let mut fs = FsState::default();
        for op in &workload.trace {
            fs.apply(op, &workload.history);
        }
        for crash in crash_states(&fs, &mut rng, 2) {
            let what = format!("sync {n} failed, then crash: {}", crash.name);
            check_recovery(build_disk(&fs, &crash), &fs, &workload.history, &what);
        }
    }
}

#[test]
fn the_checker_notices_a_lost_acknowledgement_and_a_value_never_written() {
    let workload = run_workload(0xC0FFEE, None);
    let mut fs = FsState::default();
    // Half-way through the trace, with writes still to come.
    for op in &workload.trace[..workload.trace.len() / 2] {
        fs.apply(op, &workload.history);
    }
    let lose = || Crash {
        name: "unsynced lost".into(),
        dir_ops_kept: 0,
        keep: Box::new(|_, _| false),
        tear: None,
    };
    // The honest check passes.
    check_recovery(build_disk(&fs, &lose()), &fs, &workload.history, "honest");
    // Pretend the last write of every key was acknowledged although most of
    // them are not on disk yet: the check must report lost writes.
    let mut lying = fs.clone();
    for (key, writes) in &workload.history.writes {
        let (last, _) = writes.last().expect("a key has writes");
        lying.ack(key, *last);
    }
    let outcome = std::panic::catch_unwind(|| {
        check_recovery(
            build_disk(&lying, &lose()),
            &lying,
            &workload.history,
            "lying acks",
        )
    });
    assert!(outcome.is_err(), "a lost acknowledged write went unnoticed");
    // Forget every write's payload: whatever recovery finds was "never written".
    let mut forgetful = History {
        writes: BTreeMap::new(),
        key_of: workload.history.key_of.clone(),
    };
    for (key, writes) in &workload.history.writes {
        forgetful.writes.insert(
            key.clone(),
            writes.iter().map(|(n, _)| (*n, None)).collect(),
        );
    }
    let outcome = std::panic::catch_unwind(|| {
        check_recovery(
            build_disk(&fs, &lose()),
            &fs,
            &forgetful,
            "forgetful history",
        )
    });
    assert!(outcome.is_err(), "a value never written went unnoticed");
}
