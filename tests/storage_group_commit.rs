//! Group commit against `fdatasync`s that stay in flight (docs/storage.md §5): `MemDisk`
//! holds each `sync_data` until the test completes or fails it, and a held sync covers
//! only the writes that completed before it was called. A durable put must not return
//! before an `fdatasync` covering its record has completed, a failed `fdatasync` fails
//! its round and every later one (whether or not their writes already landed), and no
//! two `fdatasync`s of one file may run at once, across segment rotations. These hold
//! for any scheduling of sync rounds, including rounds that overlap.

use std::collections::BTreeSet;

use dynakv::storage::{
    block_on, CrashMode, DiskOp, Durability, MemDisk, Namespace, RecordKind, StorageError, Store,
    StoreConfig,
};

const NS: Namespace = Namespace::Data;
const LEN: usize = 200;

/// Segments small enough that a few dozen records rotate them.
fn config() -> StoreConfig {
    StoreConfig {
        max_key_bytes: 64,
        max_value_bytes: 1024,
        segment_size_bytes: 8 << 10,
        read_cache_bytes: 0,
        ..StoreConfig::default()
    }
}

fn open(disk: &MemDisk) -> Store<MemDisk> {
    let (store, _) = block_on(Store::open(disk.clone(), config())).expect("open");
    store.check_invariants();
    store
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let tag = format!("value-{i:05}|");
    tag.bytes().cycle().take(LEN).collect()
}

/// Whether record `i`'s value is in the durable image of some file (what a crash keeps).
fn is_durable(disk: &MemDisk, i: usize) -> bool {
    let v = value(i);
    disk.file_names().iter().any(|name| {
        disk.durable_file_bytes(name)
            .is_some_and(|bytes| bytes.windows(v.len()).any(|w| w == v.as_slice()))
    })
}

#[path = "support/tasks.rs"]
mod tasks;

type Task<'a> = tasks::Task<'a, Result<(), StorageError>>;
type Tasks<'a> = tasks::Tasks<'a, Result<(), StorageError>>;

fn durable_put(store: &Store<MemDisk>, i: usize) -> Task<'_> {
    put_task(store, i, Durability::Durable)
}

fn put_task(store: &Store<MemDisk>, i: usize, durability: Durability) -> Task<'_> {
    Box::pin(async move {
        store
            .put(
                NS,
                (i % 4) as u32,
                &key(i),
                RecordKind::Value,
                bytes::Bytes::copy_from_slice(&value(i)),
                durability,
            )
            .await
    })
}

/// Steps until a `sync_data` is held; panics if all tasks finish first.
fn step_until_a_sync_is_held(disk: &MemDisk, tasks: &mut Tasks<'_>) -> u64 {
    for _ in 0..10_000 {
        if let Some(&t) = disk.held_syncs().first() {
            return t;
        }
        let finished = tasks.step();
        assert!(
            finished.is_empty(),
            "writers {finished:?} returned while no fdatasync had completed"
        );
    }
    panic!("no fdatasync was issued");
}

/// Checks that every writer that returned `Ok` in `finished` is durable right now.
fn check_acks_durable(disk: &MemDisk, finished: &[(usize, Result<(), StorageError>)]) {
    for (i, r) in finished {
        assert!(r.is_ok(), "writer {i}: {r:?}");
        assert!(
            is_durable(disk, *i),
            "writer {i} returned before an fdatasync covering its record completed"
        );
    }
}

/// Holds every fdatasync from now on; writers `first` run until their round's
/// fdatasync is held, then writers `second` join while it stays held, and 50 steps
/// must finish none of them. Returns the held fdatasync's ticket.
fn second_cohort_behind_a_held_sync<'a>(
    disk: &MemDisk,
    store: &'a Store<MemDisk>,
    tasks: &mut Tasks<'a>,
    first: std::ops::Range<usize>,
    second: std::ops::Range<usize>,
) -> u64 {
    disk.hold_syncs(true);
    for i in first {
        tasks.spawn(i, durable_put(store, i));
    }
    let held = step_until_a_sync_is_held(disk, tasks);
    // The second cohort appends (and, if rounds overlap, writes) while the
    // first round's fdatasync is held.
    for i in second {
        tasks.spawn(i, durable_put(store, i));
    }
    for _ in 0..50 {
        let finished = tasks.step();
        assert!(
            finished.is_empty(),
            "writers {finished:?} returned while the only fdatasync was held"
        );
    }
    held
}

/// Closes `store` without a sync, crashes `disk` losing what was not synced, reopens
/// it, and asserts that every key of `0..writers` (all acknowledged) kept its value.
fn assert_nothing_lost_in_a_crash(store: Store<MemDisk>, disk: &MemDisk, writers: usize) {
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let store = open(disk);
    let missing: BTreeSet<usize> = (0..writers)
        .filter(|&i| {
            let got = block_on(store.get(NS, (i % 4) as u32, &key(i))).expect("get");
            got.map(|r| r.payload.to_vec()) != Some(value(i))
        })
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

/// A store on `MemDisk` whose durable writers keep `prewrite_bytes` of zeros written
/// ahead of their records, in segments of `segment_size_bytes` and 4 KiB pieces.
fn prewrite_config(segment_size_bytes: u64, prewrite_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_size_bytes,
        write_piece_bytes: 4096,
        prewrite_bytes,
        ..config()
    }
}

#[test]
fn a_durable_put_never_returns_before_an_fdatasync_covering_it() {
    let disk = MemDisk::new();
    let store = open(&disk);
    let mut tasks = Tasks::default();
    let first = second_cohort_behind_a_held_sync(&disk, &store, &mut tasks, 0..16, 16..32);
    disk.release_sync(first);
    // Release every held sync a few steps after it shows up, checking each writer at
    // the moment it returns.
    let mut steps = 0;
    while tasks.pending() > 0 {
        steps += 1;
        assert!(steps < 10_000, "writers did not finish");
        check_acks_durable(&disk, tasks.step());
        if steps % 5 == 0 {
            for t in disk.held_syncs() {
                disk.release_sync(t);
            }
        }
    }
    assert_eq!(tasks.results.len(), 32);
    drop(tasks);
    assert_nothing_lost_in_a_crash(store, &disk, 32);
}

#[test]
fn a_failed_fdatasync_fails_its_round_and_every_later_one() {
    let disk = MemDisk::new();
    let store = open(&disk);
    let mut tasks = Tasks::default();
    let held = second_cohort_behind_a_held_sync(&disk, &store, &mut tasks, 0..8, 8..16);
    let syncs_before = disk.sync_count();
    disk.fail_held_sync(held, libc::EIO);
    let mut steps = 0;
    while tasks.pending() > 0 {
        steps += 1;
        assert!(steps < 10_000, "writers did not finish");
        tasks.step();
        // Any fdatasync issued after the failure must not decide anything: let it
        // succeed, so that only the store's own bookkeeping can fail the writers.
        for t in disk.held_syncs() {
            disk.release_sync(t);
        }
    }
    for (i, r) in &tasks.results {
        assert!(
            matches!(r, Err(StorageError::SyncFailed(_) | StorageError::Failed)),
            "writer {i} after a failed fdatasync: {r:?}"
        );
    }
    assert_eq!(tasks.results.len(), 16);
    assert_eq!(
        disk.sync_count(),
        syncs_before,
        "an fdatasync after a failed one succeeded"
    );
    drop(tasks);
    assert!(matches!(
        block_on(store.put(
            NS,
            0,
            &key(99),
            RecordKind::Value,
            bytes::Bytes::copy_from_slice(&value(99)),
            Durability::Durable,
        )),
        Err(StorageError::Failed)
    ));
}

#[test]
fn fdatasyncs_of_a_file_never_overlap_across_rotations() {
    let disk = MemDisk::new();
    let store = open(&disk);
    disk.hold_syncs(true);
    let mut tasks = Tasks::default();
    let mut next = 0;
    let mut steps = 0;
    // Waves of writers join while syncs are held; the small segments rotate several
    // times, and each rotation syncs the sealed segment.
    while next < 160 || tasks.pending() > 0 {
        steps += 1;
        assert!(steps < 100_000, "writers did not finish");
        if steps % 7 == 0 && next < 160 {
            for _ in 0..16 {
                tasks.spawn(next, durable_put(&store, next));
                next += 1;
            }
        }
        check_acks_durable(&disk, tasks.step());
        if steps % 3 == 0 {
            // The oldest held sync first: they complete in the order they were issued.
            if let Some(&t) = disk.held_syncs().first() {
                disk.release_sync(t);
            }
        }
    }
    assert_eq!(tasks.results.len(), 160);
    assert_eq!(
        disk.sync_data_in_flight_peak(),
        1,
        "two fdatasyncs of one file ran at once"
    );
    drop(tasks);
    store.check_invariants();
    let segments = disk
        .file_names()
        .iter()
        .filter(|n| n.ends_with(".log"))
        .count();
    assert!(
        segments >= 3,
        "the segments rotated ({segments} segment files)"
    );
    assert_nothing_lost_in_a_crash(store, &disk, 160);
}

/// Zeros written ahead of the records for durable writers (`StoreConfig::prewrite_bytes`,
/// docs/storage.md §4) are one more write in flight next to the flushes: a flush whose
/// records reach them must wait until they have landed, or the zeros, landing last,
/// would erase acknowledged records. Here the zeros stay held while 200 more durable
/// writers append well past their start, and every other write is released at once: no
/// write over the held range may be issued, and after the zeros are released everything
/// acknowledged survives a crash.
#[test]
fn zeros_written_ahead_of_the_records_never_land_over_them() {
    let disk = MemDisk::new();
    let config = StoreConfig {
        write_buffer_bytes: 16 << 10,
        ..prewrite_config(1 << 20, 32 << 10)
    };
    let (store, _) = block_on(Store::open(disk.clone(), config)).expect("open");
    disk.hold_writes(true);
    let mut tasks = Tasks::default();
    tasks.spawn(0, durable_put(&store, 0));
    // Writer 0's round: its flush (at 0) is released, the zeros after it are kept held.
    let mut zeros: BTreeSet<(u64, u64, usize)> = BTreeSet::new();
    for _ in 0..1_000 {
        if tasks.pending() == 0 {
            break;
        }
        check_acks_durable(&disk, tasks.step());
        for w in disk.held_writes() {
            if w.1 == 0 {
                disk.release_write(w.0);
            } else {
                zeros.insert(w);
            }
        }
    }
    assert_eq!(tasks.pending(), 0, "writer 0 finished");
    let zero_start = zeros.first().expect("zeros were written ahead").1;
    let zero_end = zeros.iter().map(|w| w.1 + w.2 as u64).max().unwrap();
    assert_eq!(zero_start, 512, "the zeros start after writer 0's block");
    assert_eq!(zero_end, 512 + (32 << 10), "prewrite_bytes of zeros");
    assert_eq!(store.stats().bytes_prewritten, 32 << 10);

    // 200 writers append about 50 KiB, past the held zeros.
    for i in 1..=200 {
        tasks.spawn(i, durable_put(&store, i));
    }
    let mut steps = 0;
    while tasks.pending() > 0 {
        steps += 1;
        assert!(steps < 20_000, "writers did not finish");
        check_acks_durable(&disk, tasks.step());
        for w in disk.held_writes() {
            if zeros.contains(&w) {
                continue;
            }
            assert!(
                zeros.is_empty() || w.1 + w.2 as u64 <= zero_start,
                "a write of [{}, {}) was issued over zeros still in flight",
                w.1,
                w.1 + w.2 as u64
            );
            disk.release_write(w.0);
        }
        if steps == 500 {
            // The writers wait for the zeros; let them land.
            assert!(tasks.pending() > 0, "the writers waited for the zeros");
            for w in std::mem::take(&mut zeros) {
                disk.release_write(w.0);
            }
        }
    }
    assert_eq!(tasks.results.len(), 201);
    drop(tasks);
    store.check_invariants();
    assert_nothing_lost_in_a_crash(store, &disk, 201);
}

/// Steps `tasks` to the end, releasing every held write as it shows up and checking
/// each writer's ack when it returns; `zeros` decides what happens to a held write that
/// starts at or after `zero_start` (the zeros ahead of the records): `Some(errno)` fails
/// it, `None` releases it.
fn finish_releasing(
    disk: &MemDisk,
    tasks: &mut Tasks<'_>,
    zero_start: u64,
    zeros: Option<i32>,
) -> usize {
    let mut zero_writes = 0;
    let mut steps = 0;
    while tasks.pending() > 0 {
        steps += 1;
        assert!(steps < 20_000, "writers did not finish");
        check_acks_durable(disk, tasks.step());
        for (ticket, pos, _) in disk.held_writes() {
            match zeros {
                Some(errno) if pos >= zero_start => {
                    zero_writes += 1;
                    disk.fail_write(ticket, errno);
                }
                _ => disk.release_write(ticket),
            }
        }
    }
    zero_writes
}

/// A write of zeros ahead of the records that fails changes nothing the store relies
/// on: its outcome is not needed (the records are written over that range anyway), the
/// store stays writable, and everything acknowledged survives a crash.
#[test]
fn a_failed_write_of_zeros_ahead_loses_nothing() {
    let disk = MemDisk::new();
    let config = prewrite_config(1 << 20, 32 << 10);
    let (store, _) = block_on(Store::open(disk.clone(), config)).expect("open");
    disk.hold_writes(true);
    let mut tasks = Tasks::default();
    tasks.spawn(0, durable_put(&store, 0));
    // Writer 0's record ends in the first block: its zeros start at 512.
    let failed = finish_releasing(&disk, &mut tasks, 512, Some(libc::EIO));
    assert!(failed > 0, "the zeros ahead were written, and failed");
    for i in 1..=200 {
        tasks.spawn(i, durable_put(&store, i));
    }
    finish_releasing(&disk, &mut tasks, 0, None);
    assert_eq!(tasks.results.len(), 201);
    assert!(!store.is_failed());
    drop(tasks);
    store.check_invariants();
    assert_nothing_lost_in_a_crash(store, &disk, 201);
}

/// `prewrite_bytes` takes any value (the server does not bound it): a huge one writes
/// zeros to the segment's end and no further, and the store goes on rotating.
#[test]
fn zeros_ahead_stop_at_the_segment_end_whatever_prewrite_bytes_is() {
    let disk = MemDisk::new();
    let config = prewrite_config(64 << 10, u64::MAX);
    let (store, _) = block_on(Store::open(disk.clone(), config)).expect("open");
    block_on(durable_put(&store, 0)).expect("durable put");
    // From writer 0's block to the segment's end, in whole 4 KiB chunks.
    assert_eq!(store.stats().bytes_prewritten, (64 << 10) - 4096);
    for name in disk.file_names() {
        let len = disk.file_bytes(&name).map_or(0, |b| b.len());
        assert!(
            len <= 64 << 10,
            "{name}: {len} bytes, past the segment's end"
        );
    }
    for i in 1..600 {
        block_on(durable_put(&store, i)).expect("durable put");
    }
    assert!(store.stats().segments >= 3, "the segments rotated");
    store.check_invariants();
    assert_nothing_lost_in_a_crash(store, &disk, 600);
}

/// With the next segment prepared (`Store::prepare_next_segment`), a rotation switches
/// to it before it syncs the sealed segment: while that `fdatasync` is held, only the
/// writer rotating waits; the others append into the new segment and return (their
/// records readable),
/// but nothing is written to the new file until the sync completes, since the log must
/// stay a prefix of what was appended across files. Everything survives a crash after
/// `sync`.
#[test]
fn writers_append_to_the_prepared_segment_while_the_sealed_one_syncs() {
    const WRITERS: usize = 60; // about 14 KB: one rotation of the 8 KiB segment
    let disk = MemDisk::new();
    let store = open(&disk);
    disk.start_trace();
    block_on(store.prepare_next_segment()).expect("prepare");
    let prepared_inode = disk
        .take_trace()
        .iter()
        .find_map(|op| match op {
            DiskOp::Create { inode, .. } => Some(*inode),
            _ => None,
        })
        .expect("the prepared file was created");
    disk.start_trace();
    let mut tasks = Tasks::default();
    rotate_with_the_sync_held(&disk, &store, &mut tasks, WRITERS);
    // Only the writer that rotates waits for the held sync; every other writer, those
    // after the rotation included, appended and returned.
    assert_eq!(
        tasks.pending(),
        1,
        "writers waiting while the sealed segment's fdatasync is held"
    );
    for (i, r) in &tasks.results {
        assert!(r.is_ok(), "writer {i}: {r:?}");
        let got = block_on(store.get(NS, (*i % 4) as u32, &key(*i))).expect("get");
        assert_eq!(
            got.map(|r| r.payload.to_vec()),
            Some(value(*i)),
            "writer {i}"
        );
    }
    let early_writes = disk
        .take_trace()
        .iter()
        .filter(|op| matches!(op, DiskOp::Write { inode, .. } if *inode == prepared_inode))
        .count();
    assert_eq!(
        early_writes, 0,
        "the new file was written before the sealed one was synced"
    );
    disk.hold_syncs(false);
    for t in disk.held_syncs() {
        disk.release_sync(t);
    }
    for _ in 0..10_000 {
        if tasks.pending() == 0 {
            break;
        }
        tasks.step();
    }
    assert_eq!(tasks.pending(), 0, "writers did not finish");
    assert!(tasks.results.iter().all(|(_, r)| r.is_ok()));
    drop(tasks);
    block_on(store.sync()).expect("sync");
    store.check_invariants();
    assert_nothing_lost_in_a_crash(store, &disk, WRITERS);
}

/// Holds every `fdatasync` and spawns `writers` buffered writers, enough for one
/// rotation of a store whose next segment is prepared; steps them until the rotation's
/// sync of the sealed segment is held, then 50 steps more. Returns the held sync's
/// ticket.
fn rotate_with_the_sync_held<'a>(
    disk: &MemDisk,
    store: &'a Store<MemDisk>,
    tasks: &mut Tasks<'a>,
    writers: usize,
) -> u64 {
    disk.hold_syncs(true);
    for i in 0..writers {
        tasks.spawn(i, put_task(store, i, Durability::Buffered));
    }
    let mut steps = 0;
    while disk.held_syncs().is_empty() {
        tasks.step();
        steps += 1;
        assert!(steps < 10_000, "the rotation's fdatasync was never issued");
    }
    for _ in 0..50 {
        tasks.step();
    }
    disk.held_syncs()[0]
}

/// The sealed segment's `fdatasync` failing after the switch fails the store, as a
/// failed `fdatasync` always does: the rotating writer gets `SyncFailed`, a durable
/// writer whose record went into the new segment meanwhile never returns `Ok`, later
/// writes get `Failed`, and every record appended stays readable.
#[test]
fn a_failed_sync_of_the_sealed_segment_after_the_switch_fails_the_store() {
    const WRITERS: usize = 60;
    let disk = MemDisk::new();
    let store = open(&disk);
    block_on(store.prepare_next_segment()).expect("prepare");
    let mut tasks = Tasks::default();
    let held = rotate_with_the_sync_held(&disk, &store, &mut tasks, WRITERS);
    let rotating = tasks.pending_names();
    assert_eq!(rotating.len(), 1, "only the rotating writer waits");
    tasks.spawn(WRITERS, durable_put(&store, WRITERS));
    for _ in 0..50 {
        tasks.step();
    }
    assert_eq!(tasks.pending(), 2, "the durable writer waits for a sync");
    disk.fail_held_sync(held, libc::EIO);
    for _ in 0..10_000 {
        if tasks.pending() == 0 {
            break;
        }
        tasks.step();
        for t in disk.held_syncs() {
            disk.release_sync(t);
        }
    }
    assert_eq!(tasks.pending(), 0, "writers did not finish");
    for (i, r) in &tasks.results {
        if *i == rotating[0] {
            assert!(
                matches!(r, Err(StorageError::SyncFailed(_))),
                "rotating writer: {r:?}"
            );
        } else if *i == WRITERS {
            assert!(
                matches!(r, Err(StorageError::SyncFailed(_) | StorageError::Failed)),
                "durable writer in the new segment: {r:?}"
            );
        } else {
            assert!(r.is_ok(), "buffered writer {i}: {r:?}");
        }
    }
    assert!(matches!(
        block_on(durable_put(&store, WRITERS + 1)),
        Err(StorageError::Failed)
    ));
    for i in (0..=WRITERS).filter(|i| *i != rotating[0]) {
        let got = block_on(store.get(NS, (i % 4) as u32, &key(i))).expect("get");
        assert_eq!(
            got.map(|r| r.payload.to_vec()),
            Some(value(i)),
            "record {i}"
        );
    }
}
