//! Crash and fault tests of the storage engine on the fault-injecting `MemDisk`
//! (docs/storage.md §9, §10). Each case states the outcome it expects and asserts it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use dynakv::storage::{
    block_on, CrashMode, DiskOp, Durability, MemDisk, Namespace, RecordKind, StorageError, Store,
    StoreConfig,
};

const NS: Namespace = Namespace::Data;

fn config() -> StoreConfig {
    StoreConfig {
        max_key_bytes: 64,
        max_value_bytes: 4096,
        segment_size_bytes: 64 << 10,
        write_buffer_bytes: 16 << 10,
        ..StoreConfig::default()
    }
}

fn open(disk: &MemDisk) -> (Store<MemDisk>, dynakv::storage::RecoveryReport) {
    let (store, report) = block_on(Store::open(disk.clone(), config())).expect("open");
    store.check_invariants();
    (store, report)
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize, len: usize) -> Vec<u8> {
    let tag = format!("value-{i:05}|");
    tag.bytes().cycle().take(len.max(tag.len())).collect()
}

fn put(store: &Store<MemDisk>, i: usize, len: usize, d: Durability) -> Result<(), StorageError> {
    block_on(store.put(
        NS,
        (i % 4) as u32,
        &key(i),
        RecordKind::Value,
        bytes::Bytes::copy_from_slice(&value(i, len)),
        d,
    ))
}

fn get(store: &Store<MemDisk>, i: usize) -> Option<Vec<u8>> {
    block_on(store.get(NS, (i % 4) as u32, &key(i)))
        .expect("get")
        .map(|r| r.payload.to_vec())
}

/// Finds the offset of a byte string in a file (test keys are unique).
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in file")
}

#[test]
fn crash_loses_exactly_the_unsynced_writes() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..10 {
        put(&store, i, 100, Durability::Durable).unwrap();
    }
    for i in 10..20 {
        put(&store, i, 100, Durability::Buffered).unwrap();
    }
    // Written to the segment but never synced: still lost at power failure.
    block_on(store.flush()).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    for i in 0..10 {
        assert_eq!(get(&store, i), Some(value(i, 100)), "durable key {i}");
    }
    for i in 10..20 {
        assert_eq!(get(&store, i), None, "unsynced key {i}");
    }
    assert_eq!(report.keys, 10);
}

/// Writes 10 durable keys, then one flush of about 12 KiB of buffered keys, tears it,
/// and checks: durable keys intact, the surviving buffered keys form a prefix of the
/// write order (the log is a prefix), each with its exact value, the torn part cut off.
fn torn_write_case(boundary_bytes: u64) {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..10 {
        put(&store, i, 100, Durability::Durable).unwrap();
    }
    for i in 10..40 {
        put(&store, i, 400, Durability::Buffered).unwrap();
    }
    block_on(store.flush()).unwrap();
    drop(store);
    disk.crash(CrashMode::TearLastWrite { boundary_bytes });
    let (store, report) = open(&disk);
    assert!(
        report.corrupt.is_empty(),
        "a torn tail is not middle damage"
    );
    assert!(
        report.truncated_tail_bytes > 0,
        "the torn record is cut off"
    );
    for i in 0..10 {
        assert_eq!(get(&store, i), Some(value(i, 100)), "durable key {i}");
    }
    let survivors: Vec<usize> = (10..40).filter(|i| get(&store, *i).is_some()).collect();
    assert!(!survivors.is_empty(), "blocks before the tear survive");
    assert!(survivors.len() < 30, "blocks after the tear are lost");
    assert_eq!(survivors, (10..10 + survivors.len()).collect::<Vec<_>>());
    for i in survivors {
        assert_eq!(get(&store, i), Some(value(i, 400)));
    }
    // The store keeps working after the truncation, and a second restart agrees.
    put(&store, 100, 50, Durability::Durable).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    assert_eq!(report.truncated_tail_bytes, 0);
    assert_eq!(get(&store, 100), Some(value(100, 50)));
}

#[test]
fn torn_write_at_512_bytes_truncates_the_tail() {
    torn_write_case(512);
}

#[test]
fn torn_write_at_4_kib_truncates_the_tail() {
    torn_write_case(4096);
}

fn segment_names(disk: &MemDisk) -> Vec<String> {
    disk.file_names()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect()
}

#[test]
fn bit_flip_in_a_payload_reports_the_key_for_repair_and_keeps_the_others() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..50 {
        put(&store, i, 200, Durability::Buffered).unwrap();
    }
    block_on(store.sync()).unwrap();
    drop(store);
    let seg = &segment_names(&disk)[0];
    let bytes = disk.file_bytes(seg).unwrap();
    // Key 20's payload follows its key; flip a bit 50 bytes into the payload.
    let at = find(&bytes, &key(20)) + key(20).len() + 50;
    disk.flip_bit(seg, at as u64, 3);
    let (store, report) = open(&disk);
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(
        report.corrupt[0].key,
        Some((NS, 0, bytes::Bytes::from(key(20))))
    );
    assert_eq!(
        store.corrupt_keys(),
        vec![(NS, 0, bytes::Bytes::from(key(20)))]
    );
    assert_eq!(get(&store, 20), None);
    for i in (0..50).filter(|i| *i != 20) {
        assert_eq!(get(&store, i), Some(value(i, 200)), "key {i}");
    }
    // A repair (a new put of the key) clears the mark.
    put(&store, 20, 200, Durability::Durable).unwrap();
    assert!(store.corrupt_keys().is_empty());
}

#[test]
fn bit_flip_in_a_header_resynchronises_by_scanning() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..50 {
        put(&store, i, 200, Durability::Buffered).unwrap();
    }
    block_on(store.sync()).unwrap();
    drop(store);
    let seg = &segment_names(&disk)[0];
    let bytes = disk.file_bytes(seg).unwrap();
    // The payload_len field of key 30's record (header offset 16): a damaged length
    // must not be trusted, the scan has to find the next record by itself.
    let record_start = find(&bytes, &key(30)) - 32;
    disk.flip_bit(seg, (record_start + 17) as u64, 6);
    let (store, report) = open(&disk);
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].key, None, "the header is damaged");
    assert_eq!(report.corrupt[0].offset, record_start as u64);
    assert_eq!(get(&store, 30), None);
    for i in (0..50).filter(|i| *i != 30) {
        assert_eq!(get(&store, i), Some(value(i, 200)), "key {i}");
    }
}

#[test]
fn bit_flip_found_by_a_read_marks_the_key() {
    // With the read cache on, the verified copy written through to memory
    // keeps serving the key: a read never returns damaged bytes.
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..50 {
        put(&store, i, 200, Durability::Durable).unwrap();
    }
    let seg = &segment_names(&disk)[0];
    let bytes = disk.file_bytes(seg).unwrap();
    disk.flip_bit(seg, (find(&bytes, &key(7)) + 20) as u64, 0);
    assert_eq!(get(&store, 7), Some(value(7, 200)), "served from the cache");

    // Without it, the read goes to the segment and its checksum catches the flip.
    let disk = MemDisk::new();
    let uncached = StoreConfig {
        read_cache_bytes: 0,
        ..config()
    };
    let (store, _) = block_on(Store::open(disk.clone(), uncached)).expect("open");
    for i in 0..50 {
        put(&store, i, 200, Durability::Durable).unwrap();
    }
    let seg = &segment_names(&disk)[0];
    let bytes = disk.file_bytes(seg).unwrap();
    disk.flip_bit(seg, (find(&bytes, &key(7)) + 20) as u64, 0);
    let err = block_on(store.get(NS, 3, &key(7))).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert_eq!(
        store.corrupt_keys(),
        vec![(NS, 3, bytes::Bytes::from(key(7)))]
    );
    assert_eq!(get(&store, 8), Some(value(8, 200)));
}

#[test]
fn failed_fdatasync_fails_the_store_and_acknowledges_nothing() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    put(&store, 1, 100, Durability::Durable).unwrap();
    disk.set_fail_sync(true);
    let err = put(&store, 2, 100, Durability::Durable).unwrap_err();
    assert!(matches!(err, StorageError::SyncFailed(_)), "{err}");
    assert!(store.is_failed());
    assert!(store.stats().failed);
    // Later writes are refused; reads keep working.
    assert!(matches!(
        put(&store, 3, 100, Durability::Buffered),
        Err(StorageError::Failed)
    ));
    assert!(matches!(block_on(store.sync()), Err(StorageError::Failed)));
    assert_eq!(get(&store, 1), Some(value(1, 100)));
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    assert_eq!(get(&store, 1), Some(value(1, 100)));
    assert_eq!(get(&store, 2), None, "the failed sync made nothing durable");
}

/// A durable put running as a task of `run_tasks`.
type Task<'a> = Pin<Box<dyn Future<Output = Result<(), StorageError>> + 'a>>;

/// A tiny round-robin executor: polls every task until all are done. `Store` futures
/// only wait on each other (locks, group commit) or yield, so this drives them.
fn run_tasks<'a, T>(mut tasks: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    fn noop_waker() -> Waker {
        fn clone(_: *const ()) -> RawWaker {
            RawWaker::new(std::ptr::null(), &VTABLE)
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        // SAFETY: the vtable ignores the data pointer.
        unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
    }
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut results: Vec<Option<T>> = tasks.iter().map(|_| None).collect();
    for _round in 0..100_000 {
        let mut pending = 0;
        for (i, task) in tasks.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match task.as_mut().poll(&mut cx) {
                Poll::Ready(v) => results[i] = Some(v),
                Poll::Pending => pending += 1,
            }
        }
        if pending == 0 {
            return results.into_iter().map(|r| r.expect("done")).collect();
        }
    }
    panic!("tasks did not finish");
}

#[test]
fn group_commit_shares_fdatasyncs_between_concurrent_durable_writers() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    let syncs_before = disk.sync_count();
    let writers = 64;
    let tasks: Vec<Task<'_>> = (0..writers)
        .map(|i| {
            let store = &store;
            Box::pin(async move {
                store
                    .put(
                        NS,
                        0,
                        &key(i),
                        RecordKind::Value,
                        bytes::Bytes::copy_from_slice(&value(i, 100)),
                        Durability::Durable,
                    )
                    .await
            }) as Pin<Box<dyn Future<Output = _>>>
        })
        .collect();
    for r in run_tasks(tasks) {
        r.unwrap();
    }
    let syncs = disk.sync_count() - syncs_before;
    assert!(syncs >= 1);
    assert!(
        syncs <= 4,
        "{writers} durable writers needed {syncs} fdatasyncs"
    );
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, _) = open(&disk);
    for i in 0..writers {
        assert_eq!(
            block_on(store.get(NS, 0, &key(i)))
                .unwrap()
                .unwrap()
                .payload
                .to_vec(),
            value(i, 100)
        );
    }
}

#[test]
fn failed_fdatasync_acknowledges_none_of_the_waiting_writers() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    disk.set_fail_sync(true);
    let tasks: Vec<Task<'_>> = (0..16)
        .map(|i| {
            let store = &store;
            Box::pin(async move {
                store
                    .put(
                        NS,
                        0,
                        &key(i),
                        RecordKind::Value,
                        bytes::Bytes::copy_from_slice(&value(i, 100)),
                        Durability::Durable,
                    )
                    .await
            }) as Pin<Box<dyn Future<Output = _>>>
        })
        .collect();
    let results = run_tasks(tasks);
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(StorageError::SyncFailed(_)))));
    assert!(store.is_failed());
}

#[test]
fn full_disk_gives_writers_a_clear_error_reads_work_and_reopen_is_intact() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..20 {
        put(&store, i, 300, Durability::Durable).unwrap();
    }
    disk.set_capacity_bytes(Some(disk.used_bytes() + 20_000));
    let mut accepted = Vec::new();
    let mut full = false;
    for i in 20..400 {
        match put(&store, i, 300, Durability::Buffered) {
            Ok(()) => accepted.push(i),
            Err(StorageError::DiskFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(full, "the disk filled up");
    assert!(!store.is_failed(), "ENOSPC is not fatal");
    // Writers keep getting the clear error, durable ones too.
    assert!(matches!(
        put(&store, 999, 300, Durability::Durable),
        Err(StorageError::DiskFull)
    ));
    assert!(matches!(
        block_on(store.sync()),
        Err(StorageError::DiskFull)
    ));
    // Reads work, including buffered records that could not be flushed.
    for &i in accepted.iter().chain(&(0..20).collect::<Vec<_>>()) {
        assert_eq!(get(&store, i), Some(value(i, 300)), "key {i}");
    }
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    disk.set_capacity_bytes(None);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty(), "nothing written was damaged");
    for i in 0..20 {
        assert_eq!(get(&store, i), Some(value(i, 300)), "durable key {i}");
    }
    // Whatever else survived is exactly what was written.
    for &i in &accepted {
        if let Some(v) = get(&store, i) {
            assert_eq!(v, value(i, 300));
        }
    }
}

#[test]
fn full_disk_clears_once_space_returns() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    put(&store, 0, 300, Durability::Durable).unwrap();
    disk.set_capacity_bytes(Some(disk.used_bytes()));
    assert!(matches!(
        put(&store, 1, 300, Durability::Durable),
        Err(StorageError::DiskFull)
    ));
    disk.set_capacity_bytes(None);
    block_on(store.flush()).unwrap();
    put(&store, 2, 300, Durability::Durable).unwrap();
    assert_eq!(get(&store, 2), Some(value(2, 300)));
}

#[test]
fn bounds_are_enforced_with_clear_errors() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    let long_key = vec![b'k'; 65];
    assert!(matches!(
        block_on(store.put(
            NS,
            0,
            &long_key,
            RecordKind::Value,
            bytes::Bytes::copy_from_slice(b"v"),
            Durability::Buffered
        )),
        Err(StorageError::KeyTooLarge { len: 65, max: 64 })
    ));
    let big = vec![0u8; 4097];
    assert!(matches!(
        block_on(store.put(
            NS,
            0,
            b"k",
            RecordKind::Value,
            bytes::Bytes::copy_from_slice(&big),
            Durability::Buffered
        )),
        Err(StorageError::ValueTooLarge {
            len: 4097,
            max: 4096
        })
    ));
    assert_eq!(store.stats().keys, 0);
    // The largest allowed record goes through.
    block_on(store.put(
        NS,
        0,
        &long_key[..64],
        RecordKind::Value,
        bytes::Bytes::copy_from_slice(&big[..4096]),
        Durability::Durable,
    ))
    .unwrap();
    let bad = StoreConfig {
        segment_size_bytes: 1000,
        ..config()
    };
    assert!(matches!(
        block_on(Store::open(MemDisk::new(), bad)),
        Err(StorageError::InvalidConfig(_))
    ));
}

#[test]
fn hint_files_make_restart_skip_scanning_and_a_bad_hint_falls_back() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..600 {
        put(&store, i, 300, Durability::Buffered).unwrap();
    }
    block_on(store.put(
        NS,
        1,
        &key(1),
        RecordKind::Tombstone,
        bytes::Bytes::copy_from_slice(b"t"),
        Durability::Buffered,
    ))
    .unwrap();
    block_on(store.purge(NS, 2, &key(2))).unwrap();
    block_on(store.close()).unwrap();
    let check = |store: &Store<MemDisk>| {
        assert_eq!(store.stats().keys, 599);
        let t = block_on(store.get(NS, 1, &key(1))).unwrap().unwrap();
        assert_eq!(t.kind, RecordKind::Tombstone);
        assert_eq!(get(store, 2), None);
        for i in 3..600 {
            assert_eq!(get(store, i), Some(value(i, 300)));
        }
    };
    let (store, report) = open(&disk);
    assert!(report.used_hint_files);
    assert_eq!(report.segments_scanned, 0, "{report:?}");
    check(&store);
    drop(store);
    // Damage one hint file: that segment is scanned instead, same result.
    let hint = disk
        .file_names()
        .into_iter()
        .find(|n| n.ends_with(".hint"))
        .unwrap();
    disk.flip_bit(&hint, 30, 1);
    let (store, report) = open(&disk);
    assert!(report.segments_scanned >= 1);
    assert!(report.corrupt.is_empty());
    check(&store);
}

#[test]
fn compaction_reclaims_dead_segments_and_keeps_every_live_record() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for round in 0..6 {
        for i in 0..100 {
            put(&store, i, 300 + round, Durability::Buffered).unwrap();
        }
    }
    block_on(store.put(
        NS,
        0,
        &key(0),
        RecordKind::Tombstone,
        bytes::Bytes::copy_from_slice(b"t"),
        Durability::Buffered,
    ))
    .unwrap();
    block_on(store.purge(NS, 1, &key(1))).unwrap();
    block_on(store.sync()).unwrap();
    let before = store.stats();
    assert!(before.segments > 3);
    let mut steps = 0;
    loop {
        let p = block_on(store.compact_step(16 << 10)).unwrap();
        store.check_invariants();
        assert!(p.bytes_examined <= (16 << 10) + (64 << 10));
        steps += 1;
        if !p.more {
            break;
        }
        // Foreground work between steps.
        put(&store, 500 + steps, 10, Durability::Buffered).unwrap();
    }
    let after = store.stats();
    assert!(after.segments_compacted > 0);
    assert!(after.dead_bytes < before.dead_bytes, "{before:?} {after:?}");
    // Every sealed segment left is under the dead fraction (0.5), so at most
    // the live bytes plus the active segment are dead: no segment may be
    // skipped (a record header cut by a read's chunk boundary once marked
    // whole segments damaged and left them uncompacted).
    assert!(
        after.dead_bytes <= after.live_bytes + config().segment_size_bytes,
        "compaction left dead segments behind: {after:?}"
    );
    let check = |store: &Store<MemDisk>| {
        assert_eq!(
            block_on(store.get(NS, 0, &key(0))).unwrap().unwrap().kind,
            RecordKind::Tombstone,
            "tombstones stay until purged"
        );
        assert_eq!(get(store, 1), None);
        for i in 2..100 {
            assert_eq!(get(store, i), Some(value(i, 305)), "key {i}");
        }
    };
    check(&store);
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    check(&store);
}

#[test]
fn compaction_reads_across_chunk_boundaries_inside_large_segments() {
    // Segments larger than one compaction read (64 KiB) and records of
    // varied sizes, so that some record header is cut by a read boundary:
    // that is no damage, and compaction must reclaim every dead segment.
    let disk = MemDisk::new();
    let cfg = StoreConfig {
        segment_size_bytes: 256 << 10,
        ..config()
    };
    let store = block_on(Store::open(disk.clone(), cfg.clone()))
        .expect("open")
        .0;
    let len = |i: usize, round: usize| 200 + (i * 7 + round * 13) % 397;
    for round in 0..8 {
        for i in 0..600 {
            put(&store, i, len(i, round), Durability::Buffered).unwrap();
        }
    }
    block_on(store.sync()).unwrap();
    compact_all(&store, 16 << 10);
    let after = store.stats();
    assert!(
        after.dead_bytes <= after.live_bytes + cfg.segment_size_bytes,
        "compaction left dead segments behind: {after:?}"
    );
    for i in 0..600 {
        assert_eq!(get(&store, i), Some(value(i, len(i, 7))), "key {i}");
    }
    drop(store);
    let (store, report) = block_on(Store::open(disk.clone(), cfg)).expect("reopen");
    assert!(report.corrupt.is_empty(), "{report:?}");
    for i in 0..600 {
        assert_eq!(get(&store, i), Some(value(i, len(i, 7))), "key {i}");
    }
}

#[test]
fn drop_partition_removes_only_that_partition() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for i in 0..40 {
        put(&store, i, 50, Durability::Buffered).unwrap();
    }
    block_on(store.put(
        Namespace::Hint,
        2,
        b"hinted",
        RecordKind::Value,
        bytes::Bytes::copy_from_slice(b"h"),
        Durability::Buffered,
    ))
    .unwrap();
    assert_eq!(store.partitions(NS), vec![0, 1, 2, 3]);
    assert_eq!(store.keys(NS, 2).len(), 10);
    block_on(store.drop_partition(NS, 2)).unwrap();
    block_on(store.sync()).unwrap();
    let check = |store: &Store<MemDisk>| {
        assert_eq!(store.partitions(NS), vec![0, 1, 3]);
        assert!(store.keys(NS, 2).is_empty());
        assert_eq!(
            store.partitions(Namespace::Hint),
            vec![2],
            "other namespace kept"
        );
        for i in (0..40).filter(|i| i % 4 != 2) {
            assert_eq!(get(store, i), Some(value(i, 50)));
        }
    };
    check(&store);
    // A later write to the dropped partition survives a restart (seq ordering).
    put(&store, 2, 50, Durability::Durable).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, _) = open(&disk);
    assert_eq!(get(&store, 2), Some(value(2, 50)));
    block_on(store.drop_partition(NS, 2)).unwrap();
    check(&store);
}

#[test]
fn flush_due_follows_the_callers_clock() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    let t0 = std::time::Instant::now();
    assert!(!store.flush_due(t0), "nothing buffered");
    put(&store, 1, 10, Durability::Buffered).unwrap();
    assert!(!store.flush_due(t0), "first sight starts the interval");
    assert!(!store.flush_due(t0 + std::time::Duration::from_micros(500)));
    assert!(store.flush_due(t0 + std::time::Duration::from_millis(1)));
    block_on(store.flush()).unwrap();
    assert!(!store.flush_due(t0 + std::time::Duration::from_millis(5)));
}

#[test]
fn compaction_interleaved_with_writes_reclaims_every_dead_segment() {
    // The runtime's pattern: small compaction steps between puts, 1 MiB
    // segments, many overwrites of small values. Reads cut records at
    // arbitrary points (headers, keys, payloads); none of it is damage.
    let disk = MemDisk::new();
    let cfg = StoreConfig {
        segment_size_bytes: 1 << 20,
        write_buffer_bytes: 64 << 10,
        ..config()
    };
    let store = block_on(Store::open(disk.clone(), cfg.clone()))
        .expect("open")
        .0;
    let len = |round: usize| 100 + round % 3;
    for round in 0..40 {
        for i in 0..5000 {
            put(&store, i, len(round), Durability::Buffered).unwrap();
            if i % 50 == 0 {
                block_on(store.compact_step(256 << 10)).unwrap();
            }
        }
    }
    compact_all(&store, 256 << 10);
    let after = store.stats();
    assert!(
        after.dead_bytes <= after.live_bytes + cfg.segment_size_bytes,
        "compaction left dead segments behind: {after:?}"
    );
    for i in (0..5000).step_by(97) {
        assert_eq!(get(&store, i), Some(value(i, len(39))), "key {i}");
    }
}

/// Runs `check` on the store, then again after a crash that loses what was
/// not synced and a reopen that finds nothing damaged.
fn check_across_a_crash(disk: &MemDisk, store: Store<MemDisk>, check: impl Fn(&Store<MemDisk>)) {
    check(&store);
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(disk);
    assert!(report.corrupt.is_empty(), "{report:?}");
    check(&store);
}

/// Compacts until no work is left, checking the invariants at every step.
fn compact_all(store: &Store<MemDisk>, budget: u64) {
    while block_on(store.compact_step(budget)).unwrap().more {
        store.check_invariants();
    }
    store.check_invariants();
}

/// Sealed segments hold overwrites of a few hot keys and the only records of
/// some cold keys: each is mostly dead, and compaction finds its live records
/// from the index and reads only them (docs/storage.md §7).
#[test]
fn a_mostly_dead_segment_is_compacted_from_the_index_reading_only_its_live_records() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    // A cold key every 4 rounds: farther apart (about 20 KiB) than live
    // records a compaction from the index reads together (16 KiB).
    for round in 0..60 {
        if round % 4 == 0 {
            put(&store, 1000 + round, 120, Durability::Buffered).unwrap();
        }
        for i in 0..16 {
            put(&store, i, 300 + round, Durability::Buffered).unwrap();
        }
    }
    block_on(store.sync()).unwrap();
    let before = store.stats();
    assert!(before.segments >= 4, "{before:?}");
    let read_before = disk.bytes_read();
    compact_all(&store, 16 << 10);
    let after = store.stats();
    let removed = after.segments_compacted;
    assert!(removed >= 3, "{after:?}");
    assert_eq!(
        after.segments_compacted_sparse, removed,
        "every segment was mostly dead: {after:?}"
    );
    // A pass in file order reads every byte of each removed segment (about
    // 60 KiB each); this read only the cold keys' records and the blocks
    // around them.
    let read = disk.bytes_read() - read_before;
    assert!(
        read * 4 < removed * (60 << 10),
        "{read} bytes read to compact {removed} segments"
    );
    let check = |store: &Store<MemDisk>| {
        for i in 0..16 {
            assert_eq!(get(store, i), Some(value(i, 359)), "hot key {i}");
        }
        for round in (0..60).step_by(4) {
            let i = 1000 + round;
            assert_eq!(get(store, i), Some(value(i, 120)), "cold key {i}");
        }
    };
    check_across_a_crash(&disk, store, check);
}

/// The segment sealed last keeps its live records until the next segment
/// is sealed (docs/storage.md §7b): they are the newest, the likeliest to be
/// overwritten, and copying them at once copied 8% of a PUT load's
/// throughput away (BENCHMARKS.md §2zj). Once another is sealed it goes like
/// the others, and a full disk does not wait at all.
#[test]
fn the_segment_sealed_last_waits_for_the_next_unless_the_disk_is_full() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    let round = |store: &Store<MemDisk>, r: usize| {
        for i in 0..16 {
            put(store, i, 300 + r, Durability::Buffered).unwrap();
        }
    };
    let mut r = 0;
    while store.stats().segments < 5 {
        round(&store, r);
        r += 1;
    }
    block_on(store.sync()).unwrap();
    let names = segment_names(&disk);
    let youngest = names[names.len() - 2].clone();
    compact_all(&store, 16 << 10);
    let left = segment_names(&disk);
    assert!(left.contains(&youngest), "spared: {left:?}");
    assert_eq!(left.len(), 2, "the older ones went: {left:?}");
    // Another segment sealed: the spared one goes, the new youngest stays.
    let active = left[1].clone();
    while segment_names(&disk).last() == Some(&active) {
        round(&store, r);
        r += 1;
    }
    block_on(store.sync()).unwrap();
    compact_all(&store, 16 << 10);
    let left = segment_names(&disk);
    assert!(!left.contains(&youngest), "{left:?}");
    assert!(
        left.contains(&active),
        "the new youngest is spared: {left:?}"
    );
    // A full disk: the youngest goes at once, to give its dead bytes back.
    disk.set_capacity_bytes(Some(disk.used_bytes()));
    let mut full = false;
    for _ in 0..1000 {
        match put(&store, 0, 300, Durability::Buffered) {
            Ok(()) => {}
            Err(StorageError::DiskFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(full, "the disk filled up");
    disk.set_capacity_bytes(Some(disk.used_bytes() + (64 << 10)));
    compact_all(&store, 16 << 10);
    let left = segment_names(&disk);
    assert!(
        !left.contains(&active),
        "not spared on a full disk: {left:?}"
    );
    disk.set_capacity_bytes(None);
    for i in 0..16 {
        assert!(get(&store, i).is_some(), "key {i}");
    }
}

/// Between the rounds of a compaction from the index, the hot keys are
/// written again and new partitions get keys: nothing comes back, nothing is
/// lost, and the segment still goes.
#[test]
fn writes_between_the_rounds_of_a_compaction_from_the_index_keep_their_newest_values() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for round in 0..50 {
        put(&store, 2000 + round, 100, Durability::Buffered).unwrap();
        for i in 0..16 {
            put(&store, i, 200 + round, Durability::Buffered).unwrap();
        }
    }
    block_on(store.sync()).unwrap();
    let mut step = 0;
    // A budget of one index entry: a set, or one read of live records, per step.
    while block_on(store.compact_step(1)).unwrap().more {
        store.check_invariants();
        step += 1;
        // Hot keys overwritten (some of their records under compaction die),
        // and cold keys rewritten (theirs die while found live).
        put(&store, step % 16, 500, Durability::Buffered).unwrap();
        if step % 3 == 0 {
            put(&store, 2000 + step % 50, 90, Durability::Buffered).unwrap();
        }
        // A key in a partition the scan may have passed, or not reached.
        block_on(store.put(
            NS,
            4 + (step % 8) as u32,
            &key(5000 + step),
            RecordKind::Value,
            bytes::Bytes::copy_from_slice(&value(5000 + step, 64)),
            Durability::Buffered,
        ))
        .unwrap();
        assert!(step < 100_000, "compaction never ends");
    }
    let stats = store.stats();
    assert!(stats.segments_compacted_sparse > 0, "{stats:?}");
    let check = |store: &Store<MemDisk>| {
        for i in 0..16 {
            let rewritten = (1..=step).any(|s| s % 16 == i);
            let len = if rewritten { 500 } else { 249 };
            assert_eq!(get(store, i), Some(value(i, len)), "hot key {i}");
        }
        for i in 2000..2050 {
            let rewritten = (1..=step).any(|s| s % 3 == 0 && 2000 + s % 50 == i);
            let len = if rewritten { 90 } else { 100 };
            assert_eq!(get(store, i), Some(value(i, len)), "cold key {i}");
        }
        for s in 1..=step {
            let got = block_on(store.get(NS, 4 + (s % 8) as u32, &key(5000 + s)))
                .unwrap()
                .map(|r| r.payload.to_vec());
            assert_eq!(got, Some(value(5000 + s, 64)), "new key {s}");
        }
    };
    block_on(store.sync()).unwrap();
    check_across_a_crash(&disk, store, check);
}

/// A purge marker is found only by reading its segment in file order, so a
/// segment holding one is never compacted from the index, also after a
/// restart that counts markers from hint files; the purged key stays gone.
#[test]
fn a_segment_holding_a_marker_is_compacted_in_file_order_and_the_purge_holds() {
    marker_outlives_compactions(Marker::Purge, true, 1);
}

/// Which marker `marker_outlives_compactions` writes.
#[derive(Clone, Copy, Debug)]
enum Marker {
    /// A purge of key 900.
    Purge,
    /// A drop of partition 0 (key 900's, and hot keys 0, 4, 8, 12's).
    DropPartition,
}

/// A marker shadows a live segment's record through `compactions` (1 or 2)
/// rounds of compaction. The first copies it out of its segment, which must
/// be read in file order; the second meets the segment holding the copy,
/// mostly dead by then. That segment must be read in file order too, and
/// the copy copied again: compacted from the index, the marker (which the
/// index does not hold) would be dropped, and a restart that reads the
/// segments would bring the shadowed records back. `hint_files`: the
/// marker's segment is counted at open from its hint file, or else by
/// scanning it.
fn marker_outlives_compactions(marker: Marker, hint_files: bool, compactions: usize) {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    // Records a compaction leaves alone (all live), shadowed by the marker.
    for i in 800..950 {
        put(&store, i, 300, Durability::Buffered).unwrap();
    }
    let hot = |store: &Store<MemDisk>, rounds: std::ops::Range<usize>| {
        for round in rounds {
            for i in 0..16 {
                put(store, i, 300 + round, Durability::Buffered).unwrap();
            }
        }
    };
    hot(&store, 0..10);
    match marker {
        Marker::Purge => block_on(store.purge(NS, (900 % 4) as u32, &key(900))).unwrap(),
        Marker::DropPartition => block_on(store.drop_partition(NS, 0)).unwrap(),
    }
    hot(&store, 10..30);
    block_on(store.sync()).unwrap();
    if hint_files {
        block_on(store.write_hint_files()).unwrap();
    }
    drop(store);
    let (store, report) = open(&disk);
    assert_eq!(report.used_hint_files, hint_files, "{report:?}");
    let compact_round = |store: &Store<MemDisk>, rounds| {
        hot(store, rounds);
        block_on(store.sync()).unwrap();
        let before = store.stats();
        compact_all(store, 16 << 10);
        let after = store.stats();
        assert!(
            after.segments_compacted - before.segments_compacted
                > after.segments_compacted_sparse - before.segments_compacted_sparse,
            "a marker's segment was read in file order: {after:?}"
        );
    };
    // The first copies the marker into the active segment; the second
    // finds that segment sealed and mostly dead.
    compact_round(&store, 30..60);
    if compactions > 1 {
        compact_round(&store, 60..120);
    }
    assert!(store.stats().segments_compacted_sparse > 0);
    let last_round = if compactions > 1 { 119 } else { 59 };
    let dropped = |i: usize| match marker {
        Marker::Purge => i == 900,
        Marker::DropPartition => i % 4 == 0,
    };
    let check = |store: &Store<MemDisk>| {
        for i in 800..950 {
            let expected = (!dropped(i)).then(|| value(i, 300));
            assert_eq!(get(store, i), expected, "key {i}, {marker:?}");
        }
        for i in 0..16 {
            assert_eq!(get(store, i), Some(value(i, 300 + last_round)), "key {i}");
        }
    };
    check_across_a_crash(&disk, store, check);
}

#[test]
fn a_purge_copied_by_compaction_keeps_its_new_segment_in_file_order() {
    marker_outlives_compactions(Marker::Purge, true, 2);
    marker_outlives_compactions(Marker::Purge, false, 2);
}

#[test]
fn a_partition_drop_copied_by_compaction_keeps_its_new_segment_in_file_order() {
    marker_outlives_compactions(Marker::DropPartition, true, 2);
    marker_outlives_compactions(Marker::DropPartition, false, 2);
}

/// A live record that fails its checksum when a compaction from the index
/// reads it leaves its segment alone (damaged, reported at open), as a pass
/// in file order does; the other segments are still compacted.
#[test]
fn a_damaged_live_record_found_by_a_compaction_from_the_index_keeps_its_segment() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    put(&store, 700, 200, Durability::Buffered).unwrap();
    for round in 0..40 {
        for i in 0..16 {
            put(&store, i, 300 + round, Durability::Buffered).unwrap();
        }
    }
    block_on(store.sync()).unwrap();
    let first = segment_names(&disk)[0].clone();
    let bytes = disk.file_bytes(&first).unwrap();
    let at = find(&bytes, &key(700)) + key(700).len() + 50;
    disk.flip_bit(&first, at as u64, 3);
    let read_before = disk.bytes_read();
    compact_all(&store, 16 << 10);
    let stats = store.stats();
    assert!(stats.segments_compacted_sparse > 0, "{stats:?}");
    assert_eq!(
        stats.segments_compacted, stats.segments_compacted_sparse,
        "every segment removed was compacted from the index: {stats:?}"
    );
    assert!(
        disk.bytes_read() - read_before < 64 << 10,
        "the damaged segment was read from the index too: only live records"
    );
    assert!(
        segment_names(&disk).contains(&first),
        "the damaged segment stays"
    );
    for i in 0..16 {
        assert_eq!(get(&store, i), Some(value(i, 339)), "key {i}");
    }
    drop(store);
    let (store, report) = open(&disk);
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    assert_eq!(
        store.corrupt_keys(),
        vec![(NS, (700 % 4) as u32, bytes::Bytes::from(key(700)))]
    );
    for i in 0..16 {
        assert_eq!(get(&store, i), Some(value(i, 339)), "key {i}");
    }
}

/// A flush started by a full buffer is not waited for (docs/storage.md §4): with writes
/// that stay in flight, puts go on, records of the flush in flight are read from its
/// buffers, the next flush waits for it, and a durable put is acknowledged only after
/// the write and an `fdatasync`.
#[test]
fn writes_in_flight_keep_records_readable_and_durable_puts_wait_for_them() {
    let disk = MemDisk::new();
    disk.set_write_delay_polls(3);
    // No read cache, so reads of records in flight are served from the flush's buffers.
    let uncached = StoreConfig {
        read_cache_bytes: 0,
        ..config()
    };
    let (store, _) = block_on(Store::open(disk.clone(), uncached)).expect("open");
    for i in 0..300 {
        put(&store, i, 700, Durability::Buffered).unwrap();
        // Every record so far, whether in the buffer, in flight or on disk.
        for j in [0, i / 2, i.saturating_sub(30), i] {
            assert_eq!(get(&store, j), Some(value(j, 700)), "key {j} after put {i}");
        }
        store.check_invariants();
    }
    assert!(
        store.stats().flushes > 5,
        "the buffer was flushed several times"
    );
    put(&store, 300, 700, Durability::Durable).unwrap();
    let stats = store.stats();
    assert_eq!(
        stats.buffered_bytes, 0,
        "the durable put waited for every write"
    );
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    for i in 0..=300 {
        assert_eq!(
            get(&store, i),
            Some(value(i, 700)),
            "key {i} after the crash"
        );
    }
}

/// `ENOSPC` on a write that was in flight: its bytes go back into the buffer, reads keep
/// working, writers get `DiskFull`, and once space returns the same bytes are written.
#[test]
fn full_disk_on_a_write_in_flight_keeps_its_records() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    put(&store, 0, 300, Durability::Durable).unwrap();
    disk.set_write_delay_polls(2);
    disk.set_capacity_bytes(Some(disk.used_bytes() + 40_000));
    let mut accepted = Vec::new();
    for i in 1..1000 {
        match put(&store, i, 300, Durability::Buffered) {
            Ok(()) => accepted.push(i),
            Err(StorageError::DiskFull) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(accepted.len() < 998, "the disk filled up");
    assert!(!store.is_failed());
    for &i in &accepted {
        assert_eq!(get(&store, i), Some(value(i, 300)), "key {i}");
    }
    store.check_invariants();
    disk.set_capacity_bytes(None);
    block_on(store.sync()).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    for &i in accepted.iter().chain(&[0]) {
        assert_eq!(get(&store, i), Some(value(i, 300)), "synced key {i}");
    }
}

/// A flush whose caller is dropped while its write is in flight: the write is not
/// forgotten, and the next `sync` waits for it before acknowledging anything.
#[test]
fn a_dropped_flush_leaves_its_write_for_the_next_sync() {
    let disk = MemDisk::new();
    disk.set_write_delay_polls(5);
    let (store, _) = open(&disk);
    for i in 0..20 {
        put(&store, i, 300, Durability::Buffered).unwrap();
    }
    {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut flush = Box::pin(store.flush());
        assert!(
            flush.as_mut().poll(&mut cx).is_pending(),
            "the write is in flight"
        );
    }
    block_on(store.sync()).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    for i in 0..20 {
        assert_eq!(get(&store, i), Some(value(i, 300)), "synced key {i}");
    }
}

/// Write buffers larger than one DMA piece (256 KiB), with records that straddle
/// pieces: every record reads back from a partly filled piece, from the pieces of a
/// write in flight and from disk; a flush that fails part-way through its pieces
/// (`ENOSPC` after the first ones were written) puts every record back in the buffer,
/// loses nothing, and writes them all once space returns.
#[test]
fn records_straddling_dma_pieces_survive_reads_and_a_flush_failing_part_way() {
    let disk = MemDisk::new();
    disk.set_write_delay_polls(2);
    let big = StoreConfig {
        max_key_bytes: 64,
        max_value_bytes: 4096,
        segment_size_bytes: 16 << 20,
        write_buffer_bytes: 1 << 20,
        // No read cache, so every read below comes from the buffer, a flush or disk.
        read_cache_bytes: 0,
        ..StoreConfig::default()
    };
    let (store, _) = block_on(Store::open(disk.clone(), big.clone())).expect("open");
    // 3001-byte values: no record size divides the piece size.
    let len = 3001;
    for i in 0..1500 {
        put(&store, i, len, Durability::Buffered).unwrap();
        for j in [0, i / 2, i.saturating_sub(90), i.saturating_sub(1), i] {
            assert_eq!(get(&store, j), Some(value(j, len)), "key {j} after put {i}");
        }
    }
    store.check_invariants();
    let flushes = store.stats().flushes;
    assert!(flushes >= 2, "several multi-piece flushes, not {flushes}");
    block_on(store.sync()).unwrap();
    // Room for a bit more than one piece: the next flush (four pieces) fails part-way.
    disk.set_capacity_bytes(Some(disk.used_bytes() + (300 << 10)));
    let written_before = disk.bytes_written();
    let mut accepted = Vec::new();
    for i in 1500..2500 {
        match put(&store, i, len, Durability::Buffered) {
            Ok(()) => accepted.push(i),
            Err(StorageError::DiskFull) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(accepted.len() < 1000, "the disk filled up");
    assert!(
        disk.bytes_written() > written_before,
        "the failing flush wrote its first piece before ENOSPC"
    );
    assert!(!store.is_failed(), "ENOSPC is not fatal");
    store.check_invariants();
    for &i in accepted.iter().chain(&(0..1500).collect::<Vec<_>>()) {
        assert_eq!(get(&store, i), Some(value(i, len)), "key {i} after ENOSPC");
    }
    disk.set_capacity_bytes(None);
    block_on(store.sync()).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = block_on(Store::open(disk.clone(), big)).expect("reopen");
    assert!(report.corrupt.is_empty(), "nothing written was damaged");
    for &i in accepted.iter().chain(&(0..1500).collect::<Vec<_>>()) {
        assert_eq!(get(&store, i), Some(value(i, len)), "synced key {i}");
    }
}

/// Whether `fut` is ready at its first poll (then it is dropped either way).
fn ready_at_once<T>(fut: impl Future<Output = T>) -> bool {
    let mut fut = std::pin::pin!(fut);
    fut.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// The next segment prepared ahead (`Store::prepare_next_segment`): the rotation that
/// follows creates no file and syncs no directory, it only seals, flushes and syncs
/// the old segment; a file is wanted again once the rotation took it. A crash with a
/// prepared file loses nothing synced, the empty segment it leaves is read as empty
/// and compaction removes it; `close` removes a prepared file and stops preparing.
#[test]
fn a_segment_prepared_ahead_is_used_by_the_rotation_and_left_empty_by_a_crash() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    assert!(
        ready_at_once(store.next_segment_wanted()),
        "none prepared at open"
    );
    let segments_at_open = segment_names(&disk);
    block_on(store.prepare_next_segment()).unwrap();
    assert!(
        !ready_at_once(store.next_segment_wanted()),
        "one is prepared"
    );
    let prepared: Vec<String> = segment_names(&disk)
        .into_iter()
        .filter(|n| !segments_at_open.contains(n))
        .collect();
    assert_eq!(prepared.len(), 1, "one new file: {prepared:?}");
    store.check_invariants();
    // Preparing again while one is prepared does nothing.
    block_on(store.prepare_next_segment()).unwrap();
    assert_eq!(segment_names(&disk).len(), segments_at_open.len() + 1);

    disk.start_trace();
    let mut n = 0;
    while store.stats().segments == 1 {
        put(&store, n, 1000, Durability::Buffered).unwrap();
        n += 1;
    }
    let trace = disk.take_trace();
    let count = |want: fn(&DiskOp) -> bool| trace.iter().filter(|op| want(op)).count();
    let creates = count(|op| matches!(op, DiskOp::Create { .. }));
    let dir_syncs = count(|op| matches!(op, DiskOp::SyncDir));
    assert_eq!(
        (creates, dir_syncs),
        (0, 0),
        "the rotation created files or synced the directory"
    );
    assert!(
        count(|op| matches!(op, DiskOp::Sync { .. })) > 0,
        "the sealed segment is synced"
    );
    assert_eq!(
        segment_names(&disk).len(),
        segments_at_open.len() + 1,
        "no other file"
    );
    assert!(
        ready_at_once(store.next_segment_wanted()),
        "the rotation took it"
    );
    store.check_invariants();

    // Prepared again, then a crash: what was synced survives, the empty file is read
    // as an empty segment and compacted away.
    block_on(store.prepare_next_segment()).unwrap();
    block_on(store.sync()).unwrap();
    let files_before_crash = segment_names(&disk);
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty(), "{report:?}");
    assert_eq!(report.truncated_tail_bytes, 0, "{report:?}");
    for i in 0..n {
        assert_eq!(get(&store, i), Some(value(i, 1000)), "key {i}");
    }
    let prepared_name = files_before_crash.last().unwrap().clone();
    for _ in 0..100 {
        if !segment_names(&disk).contains(&prepared_name) {
            break;
        }
        block_on(store.compact_step(1 << 20)).unwrap();
    }
    store.check_invariants();
    assert!(
        !segment_names(&disk).contains(&prepared_name),
        "the empty segment {prepared_name} is compacted away: {:?}",
        segment_names(&disk)
    );

    // close removes a prepared file, and nothing is prepared after it.
    block_on(store.prepare_next_segment()).unwrap();
    let with_prepared = segment_names(&disk);
    block_on(store.close()).unwrap();
    let after_close = segment_names(&disk);
    assert_eq!(
        after_close.len(),
        with_prepared.len() - 1,
        "{after_close:?}"
    );
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    for i in 0..n {
        assert_eq!(get(&store, i), Some(value(i, 1000)), "key {i}");
    }
    block_on(store.stop_preparing_segments()).unwrap();
    assert!(!ready_at_once(store.next_segment_wanted()), "stopped");
    block_on(store.prepare_next_segment()).unwrap();
    assert_eq!(
        segment_names(&disk).len(),
        after_close.len() + 1,
        "only the new active segment"
    );
}

/// A next segment that cannot be prepared ahead (its `fallocate` fails) is not fatal:
/// `prepare_next_segment` reports `DiskFull` for `ENOSPC` and an I/O error otherwise,
/// the store keeps serving, and the file stays wanted. The rotation then creates the
/// file itself: with the disk still full, writers get `DiskFull`, reads keep working
/// and nothing appended is lost; once space returns, the next flush lets writers in
/// again, the rotation succeeds, and everything acknowledged survives a crash.
#[test]
fn a_next_segment_that_cannot_be_prepared_is_not_fatal() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    disk.fail_preallocate(Some(libc::ENOSPC));
    assert!(
        matches!(
            block_on(store.prepare_next_segment()),
            Err(StorageError::DiskFull)
        ),
        "ENOSPC is DiskFull"
    );
    assert!(!store.is_failed());
    assert!(ready_at_once(store.next_segment_wanted()), "still wanted");
    disk.fail_preallocate(Some(libc::EIO));
    assert!(
        matches!(
            block_on(store.prepare_next_segment()),
            Err(StorageError::Io(_))
        ),
        "another error is an I/O error"
    );
    assert!(!store.is_failed(), "a failed preparation is not fatal");
    store.check_invariants();

    // Writes go on until the rotation, which cannot create its file either.
    disk.fail_preallocate(Some(libc::ENOSPC));
    let mut n = 0;
    let mut accepted = Vec::new();
    loop {
        match put(&store, n, 1000, Durability::Buffered) {
            Ok(()) => accepted.push(n),
            Err(StorageError::DiskFull) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
        n += 1;
        assert!(n < 100_000, "the rotation never failed");
    }
    assert!(!store.is_failed(), "ENOSPC at the rotation is not fatal");
    assert_eq!(store.stats().segments, 1, "no new segment");
    assert!(
        matches!(
            put(&store, n, 1000, Durability::Buffered),
            Err(StorageError::DiskFull)
        ),
        "writers keep getting DiskFull while the disk is full"
    );
    for &i in &accepted {
        assert_eq!(get(&store, i), Some(value(i, 1000)), "key {i} while full");
    }
    store.check_invariants();

    // Space returns: the next flush lets writers in, and the rotation succeeds.
    disk.fail_preallocate(None);
    block_on(store.flush()).unwrap();
    for i in n..n + 20 {
        put(&store, i, 1000, Durability::Buffered).unwrap();
        accepted.push(i);
    }
    assert_eq!(store.stats().segments, 2, "rotated");
    block_on(store.sync()).unwrap();
    store.check_invariants();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty(), "{report:?}");
    for &i in &accepted {
        assert_eq!(get(&store, i), Some(value(i, 1000)), "synced key {i}");
    }
}

/// A compacted segment whose file cannot be removed fails the store, like a failed
/// `fdatasync`: the segment is already out of the store's state, and a file left
/// behind would be read again at the next open, where a purge marker that
/// compaction dropped meanwhile would no longer shadow its records. Until then
/// reads keep working, writers get `Failed`, and nothing acknowledged is lost:
/// after a crash every key reads back its last value, and the purged key stays
/// purged.
#[test]
fn a_compacted_segment_that_cannot_be_removed_fails_the_store_and_loses_nothing() {
    let disk = MemDisk::new();
    let (store, _) = open(&disk);
    for round in 0..6 {
        for i in 0..100 {
            put(&store, i, 300 + round, Durability::Buffered).unwrap();
        }
    }
    block_on(store.purge(NS, 1, &key(1))).unwrap();
    block_on(store.sync()).unwrap();
    disk.fail_remove(Some(libc::EIO));
    let error = loop {
        match block_on(store.compact_step(16 << 10)) {
            Ok(p) if p.more => {}
            Ok(p) => panic!("compaction ended without removing a segment: {p:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(error, StorageError::Io(_)), "{error}");
    assert!(store.is_failed());
    assert!(matches!(
        put(&store, 7, 10, Durability::Buffered),
        Err(StorageError::Failed)
    ));
    let check = |store: &Store<MemDisk>| {
        assert_eq!(get(store, 1), None, "purged");
        for i in (0..100).filter(|&i| i != 1) {
            assert_eq!(get(store, i), Some(value(i, 305)), "key {i}");
        }
    };
    check(&store);
    drop(store);
    disk.fail_remove(None);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = open(&disk);
    assert!(report.corrupt.is_empty());
    check(&store);
    // And compaction goes on from there.
    loop {
        let p = block_on(store.compact_step(16 << 10)).unwrap();
        if !p.more {
            break;
        }
    }
    assert!(store.stats().segments_compacted > 0);
    check(&store);
}
