//! The flush pipeline with several writes in flight (docs/storage.md §4): `MemDisk`
//! holds each write until the test completes or fails it, in any order. The store must
//! apply outcomes in file order (`flushed_lsn` never covers a write still in flight),
//! keep every record readable (in flight, cut between two writes, or in the buffer),
//! put every byte back after a failure (`ENOSPC`: retried; `EIO`: the store fails), and
//! recover from a crash that kept a later write and lost an earlier one.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use dynakv::storage::{
    block_on, CrashMode, Durability, MemDisk, Namespace, RecordKind, StorageError, Store,
    StoreConfig,
};

#[path = "support/tasks.rs"]
mod tasks;
use tasks::Tasks;

const NS: Namespace = Namespace::Data;
const IN_FLIGHT: usize = 3;
const LEN: usize = 1500;

/// A write buffer smaller than a DMA piece (flushes of whole 512-byte blocks) or larger
/// (flushes of whole 256 KiB pieces); no read cache, so reads come from the flushes'
/// buffers, the write buffer or the disk.
fn config(write_buffer_bytes: usize) -> StoreConfig {
    StoreConfig {
        max_key_bytes: 64,
        max_value_bytes: 4096,
        segment_size_bytes: 16 << 20,
        write_buffer_bytes,
        flushes_in_flight_max: IN_FLIGHT,
        read_cache_bytes: 0,
        ..StoreConfig::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let tag = format!("value-{i:05}|");
    tag.bytes().cycle().take(LEN).collect()
}

fn put(store: &Store<MemDisk>, i: usize, d: Durability) -> Result<(), StorageError> {
    block_on(store.put(
        NS,
        (i % 4) as u32,
        &key(i),
        RecordKind::Value,
        bytes::Bytes::copy_from_slice(&value(i)),
        d,
    ))
}

fn get(store: &Store<MemDisk>, i: usize) -> Option<Vec<u8>> {
    block_on(store.get(NS, (i % 4) as u32, &key(i)))
        .expect("get")
        .map(|r| r.payload.to_vec())
}

fn assert_all_readable(store: &Store<MemDisk>, keys: std::ops::Range<usize>, when: &str) {
    for i in keys {
        assert_eq!(get(store, i), Some(value(i)), "key {i} {when}");
    }
}

/// Polls `fut` until it is ready, calling `between` after every pending poll.
fn drive<T>(fut: impl Future<Output = T>, mut between: impl FnMut()) -> T {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100_000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        between();
    }
    panic!("future still pending");
}

/// Polls `fut` a few times and returns whether it is still pending (then drops it).
fn stays_pending<T>(fut: impl Future<Output = T>) -> bool {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    (0..50).all(|_| fut.as_mut().poll(&mut cx).is_pending())
}

/// Opens a store holding writes and puts records (key 0 durable, before holding) until
/// `IN_FLIGHT` flush writes are held; returns the store and the number of keys.
fn fill_pipeline(disk: &MemDisk, write_buffer_bytes: usize) -> (Store<MemDisk>, usize) {
    let (store, _) = block_on(Store::open(disk.clone(), config(write_buffer_bytes))).expect("open");
    put(&store, 0, Durability::Durable).unwrap();
    disk.hold_writes(true);
    let mut n = 1;
    // Writes of one flush are issued together: count flushes by distinct write starts
    // that follow each other (each flush's pieces are contiguous).
    while flush_count(disk) < IN_FLIGHT {
        put(&store, n, Durability::Buffered).unwrap();
        n += 1;
        assert!(n < 10_000, "the pipeline fills");
    }
    store.check_invariants();
    (store, n)
}

/// Flushes in flight: held writes grouped by flush (a flush's pieces are one piece
/// apart; flushes of a buffer smaller than a piece are one write each).
fn flush_count(disk: &MemDisk) -> usize {
    flush_tickets(disk).len()
}

/// The held writes' tickets grouped by flush, oldest first.
fn flush_tickets(disk: &MemDisk) -> Vec<Vec<u64>> {
    let mut flushes: Vec<Vec<u64>> = Vec::new();
    let mut prev_end = None;
    for (ticket, pos, len) in disk.held_writes() {
        // A piece of the same flush starts where the previous piece ended; the next
        // flush starts at or before it (pieces of one flush come first, in order).
        match prev_end {
            Some(end) if pos == end && len > 0 && (pos % (256 << 10)) == 0 => {
                flushes.last_mut().unwrap().push(ticket)
            }
            _ => flushes.push(vec![ticket]),
        }
        prev_end = Some(pos + len as u64);
    }
    flushes
}

fn release_all(disk: &MemDisk) {
    for (ticket, _, _) in disk.held_writes() {
        disk.release_write(ticket);
    }
}

/// Drops `store`, loses what was not synced, reopens, and checks that the
/// first `n` keys are all readable with nothing reported corrupt.
fn crash_and_check_all_readable(
    store: Store<MemDisk>,
    disk: &MemDisk,
    write_buffer_bytes: usize,
    n: usize,
) {
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) =
        block_on(Store::open(disk.clone(), config(write_buffer_bytes))).expect("reopen");
    assert!(report.corrupt.is_empty());
    assert_all_readable(&store, 0..n, "after the crash");
}

/// Fills the pipeline (`fill_pipeline`), completes each held flush, oldest first, as
/// `outcomes` says (`None`: it succeeds, `Some(errno)`: it fails with that error) and
/// flushes. Returns the store, the number of keys, the buffered bytes before the
/// outcomes and the flush's result.
fn flush_with_outcomes(
    disk: &MemDisk,
    write_buffer_bytes: usize,
    outcomes: [Option<i32>; IN_FLIGHT],
) -> (Store<MemDisk>, usize, u64, Result<(), StorageError>) {
    let (store, n) = fill_pipeline(disk, write_buffer_bytes);
    let buffered = store.stats().buffered_bytes;
    let groups = flush_tickets(disk);
    assert_eq!(groups.len(), IN_FLIGHT);
    for (group, outcome) in groups.iter().zip(outcomes) {
        for t in group {
            match outcome {
                None => disk.release_write(*t),
                Some(errno) => disk.fail_write(*t, errno),
            }
        }
    }
    let result = drive(store.flush(), || {});
    (store, n, buffered, result)
}

/// Writes completing newest first: `flushed_lsn` (the store's `buffered_bytes`) stays
/// put until the oldest completes, records stay readable throughout, and afterwards
/// everything is flushed, synced and survives a crash.
#[test]
fn writes_completing_out_of_order_are_applied_in_file_order() {
    for write_buffer_bytes in [16 << 10, 300 << 10] {
        let disk = MemDisk::new();
        let (store, n) = fill_pipeline(&disk, write_buffer_bytes);
        assert_all_readable(&store, 0..n, "with writes in flight");
        let buffered = store.stats().buffered_bytes;
        let flushes = store.stats().flushes;
        let groups = flush_tickets(&disk);
        assert_eq!(groups.len(), IN_FLIGHT);
        // The newer flushes complete; the oldest does not.
        for t in groups[1..].iter().flatten() {
            disk.release_write(*t);
        }
        // A flush must wait for the oldest write (it is still held).
        assert!(
            stays_pending(store.flush()),
            "the flush waits for the oldest"
        );
        assert!(
            disk.held_writes().iter().all(|w| groups[0].contains(&w.0)),
            "the newer writes completed"
        );
        let stats = store.stats();
        assert_eq!(
            stats.buffered_bytes, buffered,
            "nothing counts as flushed while the oldest write is in flight"
        );
        assert_eq!(stats.flushes, flushes);
        assert_all_readable(&store, 0..n, "after the newer writes completed");
        store.check_invariants();
        // Now the oldest: everything is applied, in order.
        drive(store.flush(), || release_all(&disk)).unwrap();
        assert_eq!(store.stats().buffered_bytes, 0);
        assert!(store.stats().flushes >= flushes + IN_FLIGHT as u64);
        assert_all_readable(&store, 0..n, "after every write completed");
        disk.hold_writes(false);
        release_all(&disk);
        block_on(store.sync()).unwrap();
        crash_and_check_all_readable(store, &disk, write_buffer_bytes, n);
    }
}

/// The oldest write fails with `EIO` while a newer one succeeds: the store fails,
/// nothing after the failure counts as flushed, every record stays readable, and a
/// crash keeps what was acknowledged as durable.
#[test]
fn the_oldest_write_failing_while_a_newer_one_succeeds_fails_the_store() {
    let disk = MemDisk::new();
    let (store, n, buffered, result) =
        flush_with_outcomes(&disk, 16 << 10, [Some(libc::EIO), None, None]);
    assert!(matches!(result, Err(StorageError::Io(_))), "{result:?}");
    assert!(store.is_failed());
    assert_eq!(store.stats().buffered_bytes, buffered, "nothing flushed");
    store.check_invariants();
    assert_all_readable(&store, 0..n, "after the failure (bytes back in the buffer)");
    assert!(matches!(
        put(&store, n, Durability::Buffered),
        Err(StorageError::Failed)
    ));
    drop(store);
    disk.hold_writes(false);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = block_on(Store::open(disk.clone(), config(16 << 10))).expect("reopen");
    assert!(report.corrupt.is_empty());
    assert_eq!(get(&store, 0), Some(value(0)), "the durable put survives");
}

/// `ENOSPC` on a write in the middle of the pipeline: the writes before it count, it
/// and every later one go back in front of the buffer (the later one had completed:
/// its bytes are written again), writers see `DiskFull`, reads work, and once space
/// returns the same bytes are written and survive a crash.
#[test]
fn full_disk_in_the_middle_of_the_pipeline_keeps_every_record() {
    for write_buffer_bytes in [16 << 10, 300 << 10] {
        let disk = MemDisk::new();
        let (store, n, buffered, result) =
            flush_with_outcomes(&disk, write_buffer_bytes, [None, Some(libc::ENOSPC), None]);
        assert!(matches!(result, Err(StorageError::DiskFull)), "{result:?}");
        assert!(!store.is_failed());
        let after = store.stats().buffered_bytes;
        assert!(
            after < buffered && after > 0,
            "the first write counts, the rest does not ({buffered} -> {after})"
        );
        store.check_invariants();
        assert_all_readable(&store, 0..n, "after ENOSPC");
        assert!(matches!(
            put(&store, n, Durability::Buffered),
            Err(StorageError::DiskFull)
        ));
        disk.hold_writes(false);
        release_all(&disk);
        block_on(store.sync()).unwrap();
        assert_eq!(store.stats().buffered_bytes, 0);
        assert_all_readable(&store, 0..n, "after the retry");
        crash_and_check_all_readable(store, &disk, write_buffer_bytes, n);
    }
}

/// Power loss with only the newer writes on disk (the oldest still in flight): recovery
/// succeeds, the durable record is there, every record found holds its own value, and
/// the store takes writes again.
#[test]
fn a_crash_keeping_newer_writes_and_losing_the_oldest_recovers() {
    let disk = MemDisk::new();
    let (store, n) = fill_pipeline(&disk, 16 << 10);
    let groups = flush_tickets(&disk);
    for t in groups[1..].iter().flatten() {
        disk.release_write(*t);
    }
    assert!(stays_pending(store.flush()), "the oldest write is held");
    assert!(disk.held_writes().iter().all(|w| groups[0].contains(&w.0)));
    // The crash: every completed write reached the disk, the held one did not.
    let files: Vec<(String, Vec<u8>)> = disk
        .file_names()
        .into_iter()
        .map(|name| {
            let bytes = disk.file_bytes(&name).expect("a file");
            (name, bytes)
        })
        .collect();
    drop(store);
    let disk = MemDisk::from_durable_files(files);
    let (store, report) = block_on(Store::open(disk.clone(), config(16 << 10))).expect("reopen");
    assert_eq!(get(&store, 0), Some(value(0)), "the durable put survives");
    let mut found = 0;
    for i in 1..n {
        if let Ok(Some(r)) = block_on(store.get(NS, (i % 4) as u32, &key(i))) {
            assert_eq!(r.payload.to_vec(), value(i), "key {i}");
            found += 1;
        }
    }
    assert!(found < n - 1, "the held write's records are lost");
    eprintln!(
        "{found} of {} keys kept, {} damaged ranges",
        n - 1,
        report.corrupt.len()
    );
    put(&store, n, Durability::Durable).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, _) = block_on(Store::open(disk.clone(), config(16 << 10))).expect("reopen");
    assert_eq!(get(&store, n), Some(value(n)));
}

/// The timer's flush (`Store::flush_for_interval`) while a full buffer's whole-block
/// write is held: it returns at once, having started one more whole-block write of what
/// followed (no padded write, nothing waited for), keeps every record readable, and,
/// once the writes completed, the next one pads and writes the partial last block.
/// Everything then survives a crash after `sync`, in file order.
#[test]
fn the_interval_flush_does_not_wait_for_writes_in_flight() {
    let write_buffer_bytes = 16 << 10;
    let disk = MemDisk::new();
    let (store, _) = block_on(Store::open(disk.clone(), config(write_buffer_bytes))).expect("open");
    put(&store, 0, Durability::Durable).unwrap();
    disk.hold_writes(true);
    let mut n = 1;
    while flush_count(&disk) < 1 {
        put(&store, n, Durability::Buffered).unwrap();
        n += 1;
    }
    // Two more records: more than a block that nobody has issued, and a partial one.
    for _ in 0..2 {
        put(&store, n, Durability::Buffered).unwrap();
        n += 1;
    }
    let held = disk.held_writes();
    let flushes = store.stats().flushes;
    drive(store.flush_for_interval(Instant::now()), || {
        panic!("the interval flush waited for a held write")
    })
    .unwrap();
    let now_held = disk.held_writes();
    assert_eq!(now_held.len(), held.len() + 1, "one more write started");
    let (_, pos, len) = *now_held.last().unwrap();
    let (_, prev_pos, prev_len) = *held.last().unwrap();
    assert_eq!(
        pos,
        prev_pos + prev_len as u64,
        "it follows the write in flight"
    );
    assert!(len > 0 && len % 512 == 0, "whole blocks only: {len}");
    assert_eq!(store.stats().flushes, flushes, "nothing was waited for");
    // The partial last block was not padded and written: the next whole blocks (it and
    // one more record) start right after the write just started, without waiting for
    // it (a padded write would share their first block, and be waited for).
    put(&store, n, Durability::Buffered).unwrap();
    n += 1;
    drive(store.flush_for_interval(Instant::now()), || {
        panic!("the second interval flush waited for a held write")
    })
    .unwrap();
    let last_held = disk.held_writes();
    assert_eq!(
        last_held.len(),
        now_held.len() + 1,
        "one more write started"
    );
    assert_eq!(
        last_held.last().unwrap().1,
        pos + len as u64,
        "right after the last"
    );
    assert_all_readable(&store, 0..n, "with the writes held");
    store.check_invariants();
    // The writes complete; the next interval flush writes the rest (padded) and waits.
    release_all(&disk);
    disk.hold_writes(false);
    block_on(store.flush_for_interval(Instant::now())).unwrap();
    assert_eq!(store.stats().buffered_bytes, 0, "everything flushed");
    assert_all_readable(&store, 0..n, "after the writes completed");
    store.check_invariants();
    block_on(store.sync()).unwrap();
    crash_and_check_all_readable(store, &disk, write_buffer_bytes, n);
}

/// Writers that fill the buffer while its flush waits for a write slot: one writer makes
/// room, and every other buffered writer whose record went into the buffer returns at
/// once (it waits for no write). Once the writes complete, the writers that found the
/// buffer at its hard bound append too, and the records go out in a few flushes of
/// about the buffer's size, not in one small flush per writer, each waiting for the
/// last (BENCHMARKS.md §1, "Writers waiting for a flush": 133 ms at p50 on a real
/// disk). Everything is readable throughout and survives a crash after `sync`.
#[test]
fn writers_past_the_flush_threshold_share_one_flush() {
    let write_buffer_bytes = 16 << 10;
    let writers = 64;
    let disk = MemDisk::new();
    let (store, n0) = fill_pipeline(&disk, write_buffer_bytes);
    let flushes_before = store.stats().flushes;
    let keys: Vec<Vec<u8>> = (0..n0 + writers).map(key).collect();
    let mut tasks: Tasks<'_, Result<(), StorageError>> = Tasks::default();
    for (i, key) in keys.iter().enumerate().skip(n0) {
        tasks.spawn(
            i,
            Box::pin(store.put(
                NS,
                (i % 4) as u32,
                key,
                RecordKind::Value,
                bytes::Bytes::from(value(i)),
                Durability::Buffered,
            )),
        );
    }
    tasks.step();
    assert!(tasks.pending() > 0, "the buffer reached its hard bound");
    let appended_and_waiting: Vec<usize> = tasks
        .pending_names()
        .into_iter()
        .filter(|&i| get(&store, i).is_some())
        .collect();
    assert_eq!(
        appended_and_waiting.len(),
        1,
        "only the writer making room waits with its record in the buffer: {appended_and_waiting:?}"
    );
    assert_all_readable(&store, 0..n0, "with the pipeline full");
    store.check_invariants();
    // The disk completes whatever is held; the writers go on until all are done.
    for _ in 0..10_000 {
        if tasks.pending() == 0 {
            break;
        }
        release_all(&disk);
        tasks.step();
    }
    assert_eq!(tasks.pending(), 0, "every writer finished");
    for (i, r) in &tasks.results {
        assert!(r.is_ok(), "buffered put {i}: {r:?}");
    }
    drop(tasks);
    let n = n0 + writers;
    release_all(&disk);
    disk.hold_writes(false);
    block_on(store.flush()).unwrap();
    let flushes = store.stats().flushes - flushes_before;
    let buffers = (writers * LEN).div_ceil(write_buffer_bytes);
    assert!(
        flushes <= (2 * buffers + IN_FLIGHT + 1) as u64,
        "{flushes} flushes for {writers} writers, {buffers} buffers' worth"
    );
    assert_all_readable(&store, 0..n, "after the writers finished");
    store.check_invariants();
    block_on(store.sync()).unwrap();
    crash_and_check_all_readable(store, &disk, write_buffer_bytes, n);
}

/// Writes completing together hand back the pieces of every flush in flight at once;
/// the write buffer keeps them all for reuse, so a sustained ingest stops allocating
/// DMA buffers once the pipeline has been full (a fresh buffer on `GlommioDisk` is
/// fresh memory whose pages are faulted in again). Several rounds of holding two
/// flushes of four 256 KiB pieces each and completing every write together (eight
/// pieces come back at once, besides the last completed flush's four): no buffer is
/// allocated after the third round (the first ones grow the pipeline to its size).
#[test]
fn a_full_pipeline_completing_at_once_reuses_every_piece() {
    let write_buffer_bytes = 1 << 20;
    let pieces_in_flight = 2 * (write_buffer_bytes / (256 << 10));
    let disk = MemDisk::new();
    let (store, _) = block_on(Store::open(disk.clone(), config(write_buffer_bytes))).expect("open");
    disk.hold_writes(true);
    let mut n = 0;
    let mut allocated_after_round = Vec::new();
    for _ in 0..6 {
        while disk.held_writes().len() < pieces_in_flight {
            put(&store, n, Durability::Buffered).unwrap();
            n += 1;
        }
        assert_eq!(disk.held_writes().len(), pieces_in_flight);
        allocated_after_round.push(disk.buffers_allocated());
        // Every write in flight completes; the next flush applies them all.
        release_all(&disk);
    }
    assert!(
        allocated_after_round[2..].windows(2).all(|w| w[0] == w[1]),
        "buffers allocated after each round: {allocated_after_round:?}"
    );
    assert_all_readable(&store, 0..n, "after the rounds");
    store.check_invariants();
    disk.hold_writes(false);
    block_on(store.sync()).unwrap();
    crash_and_check_all_readable(store, &disk, write_buffer_bytes, n);
}

/// `write_piece_bytes` other than the default: pieces that are not a power of two, a
/// write buffer of several pieces, records straddling pieces; every record reads back
/// with writes in flight and after a crash. A piece size that is zero or not a
/// multiple of the disk's alignment is refused at open.
#[test]
fn other_piece_sizes_keep_every_record() {
    let piece_bytes = (1 << 20) + (64 << 10);
    let config = StoreConfig {
        write_piece_bytes: piece_bytes,
        ..config(3 << 20)
    };
    let disk = MemDisk::new();
    let (store, _) = block_on(Store::open(disk.clone(), config.clone())).expect("open");
    let n = 8 * (3 << 20) / LEN;
    for i in 0..n {
        put(&store, i, Durability::Buffered).unwrap();
        if i % 1000 == 0 {
            store.check_invariants();
        }
    }
    assert!(store.stats().flushes >= 6, "full-buffer flushes happened");
    assert_all_readable(&store, 0..n, "before the sync");
    block_on(store.sync()).unwrap();
    drop(store);
    disk.crash(CrashMode::LoseUnsynced);
    let (store, report) = block_on(Store::open(disk.clone(), config.clone())).expect("reopen");
    assert!(report.corrupt.is_empty());
    assert_all_readable(&store, 0..n, "after the crash");
    drop(store);
    for bad in [0, 1000] {
        let config = StoreConfig {
            write_piece_bytes: bad,
            ..config.clone()
        };
        assert!(
            matches!(
                block_on(Store::open(MemDisk::new(), config)),
                Err(StorageError::InvalidConfig(_))
            ),
            "piece of {bad} bytes"
        );
    }
}

/// The write-through read cache drops the record a put supersedes: a key written
/// over and over holds one cache entry, not one per version until eviction (the
/// cache of an overwrite-heavy shard stays its live records; docs/storage.md §5a).
/// Its reads still come from the cache, value for value.
#[test]
fn the_read_cache_holds_one_record_per_overwritten_key() {
    let disk = MemDisk::new();
    let config = StoreConfig {
        read_cache_bytes: 8 << 20,
        ..config(1 << 20)
    };
    let (store, _) = block_on(Store::open(disk.clone(), config)).expect("open");
    let keys = 10;
    for round in 0..200 {
        for k in 0..keys {
            put(&store, k, Durability::Buffered).expect("put");
            assert_eq!(get(&store, k), Some(value(k)), "key {k} round {round}");
        }
    }
    // Ten live records of LEN bytes each (and a fixed overhead per entry), not
    // the 2,000 versions written.
    let cached = store.stats().read_cache_bytes as usize;
    assert!(
        cached <= keys * (LEN + 128),
        "{cached} bytes cached for {keys} live records"
    );
    assert!(cached >= keys * LEN, "the live records are cached");
}

/// A read cache of eight records under forty keys: records are evicted, their
/// slots reused by other keys' records, read back from the disk and cached
/// again, while the keys' index entries still name their old slots. A slot
/// answers only for the record it holds (docs/storage.md §5a): every read
/// returns its key's latest version, and the cache stays within its bound.
#[test]
fn a_small_read_cache_reuses_slots_without_mixing_up_records() {
    fn versioned(i: usize, version: usize) -> Vec<u8> {
        let tag = format!("key-{i:05} version-{version:05}|");
        tag.bytes().cycle().take(LEN).collect()
    }
    // The value's first tag, enough to tell records apart in a failure.
    let tag =
        |value: Option<Vec<u8>>| value.map(|v| String::from_utf8_lossy(&v[..24]).into_owned());
    let disk = MemDisk::new();
    let bound = 8 * (LEN + 64);
    let config = StoreConfig {
        read_cache_bytes: bound,
        ..config(16 << 10)
    };
    let (store, _) = block_on(Store::open(disk.clone(), config)).expect("open");
    let keys = 40;
    let mut latest = vec![None; keys];
    let mut rng = 0x5107_u64;
    let mut next = |below: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % below as u64) as usize
    };
    for step in 0..4_000 {
        let i = next(keys);
        if next(3) == 0 {
            block_on(store.put(
                NS,
                (i % 4) as u32,
                &key(i),
                RecordKind::Value,
                bytes::Bytes::from(versioned(i, step)),
                Durability::Buffered,
            ))
            .expect("put");
            latest[i] = Some(versioned(i, step));
        } else {
            let got = get(&store, i);
            assert_eq!(
                tag(got.clone()),
                tag(latest[i].clone()),
                "key {i} at step {step}"
            );
            assert_eq!(got, latest[i], "key {i} at step {step}");
        }
        if step % 50 == 0 {
            block_on(store.flush()).expect("flush");
        }
        assert!(store.stats().read_cache_bytes as usize <= bound);
    }
    for (i, value) in latest.iter().enumerate() {
        assert_eq!(get(&store, i).as_ref(), value.as_ref(), "key {i}");
    }
}
