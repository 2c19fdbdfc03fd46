//! The `Store`: write buffer, segments, index, group commit, recovery and compaction
//! (docs/storage.md §4–§9).
//!
//! Invariants:
//! * `state` is never borrowed across an `.await`: every async method copies what it
//!   needs out of the borrow (file handles are `Rc`s) before awaiting.
//! * Flushes and rotations run under `io_lock`; so does a compacted segment's removal
//!   from the state, but not the removal of its files (which takes a journal commit's
//!   time, and no later holder of the lock looks for the segment). At most
//!   `flushes_in_flight_max` writes of the active segment are in flight (`inflight`,
//!   in file order, contiguous). Two writes in flight never share a block: a flush of
//!   a full buffer writes only whole blocks and keeps the partial tail in the buffer;
//!   a padded flush (flush/sync/rotation/close, the timer with no write in flight)
//!   rewrites its partial last block in the next flush, which first waits for every
//!   write up to it. The timer with writes in flight (`flush_for_interval`) issues
//!   only whole blocks and waits for none of them.
//! * Write outcomes are applied oldest first: `flushed_lsn` moves to a write's end
//!   only when it and every earlier write have succeeded. After a failure every later
//!   write is waited for and all their bytes go back in front of the buffer.
//! * A record of the active segment is in `buffer` (offset >= `buffer_file_offset`), in
//!   the in-flight writes' DMA buffers (a record cut between two writes, or between a
//!   write and the buffer, is put together from both; its head may be in `landed`, the
//!   last completed write), or on disk.
//! * `synced_lsn <= flushed_lsn <= issued_lsn <= appended_lsn` (byte counts of
//!   everything appended); a durable writer returns `Ok` only once `synced_lsn` covers
//!   its record.
//! * Each segment's `live_bytes` equals the sum of `len` of the index entries pointing
//!   into it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::cache::{CacheSlot, ReadCache};
use super::disk::{Disk, DiskFile, IoBuffer};
use super::error::{is_enospc, StorageError};
use super::hint::{self, HintEntry};
use super::index::{Index, Location};
use super::record::{self, Decoded, Header, Kind, Limits};
use super::sync::{yield_now, AsyncLock, Notify};
use super::wbuf::WriteBuffer;
use super::{
    CompactionProgress, CorruptRecord, Durability, Namespace, RecordKind, RecoveryReport,
    StoreConfig, StoreStats, StoredRecord,
};

/// Bytes of a `Seal` record (no key, no payload); always kept free in a segment.
const SEAL_BYTES: usize = record::RECORD_OVERHEAD_BYTES;
/// Largest segment: offsets and lengths in the index are `u32`.
const SEGMENT_SIZE_BYTES_MAX: u64 = u32::MAX as u64;
/// Smallest read compaction issues, so small budgets still make progress.
const COMPACTION_READ_BYTES_MIN: u64 = 64 << 10;

/// Records whose index probes compaction prefetches together.
const PROBE_GROUP: usize = 32;

/// Whether compaction must keep the record at `offset` of segment `source`:
/// a value or tombstone the index still points at, or a marker that may
/// still shadow an older record in another segment.
fn record_needed<D: Disk>(
    st: &State<D>,
    source: u32,
    offset: u64,
    header: &Header,
    raw: &[u8],
) -> bool {
    match header.kind {
        // `locate`: asking again after waiting for room, and pointing the
        // key at the copy, find the entry this found without probing the
        // set again (when nothing else was looked up in between).
        Kind::Value | Kind::Tombstone => {
            let here = Location {
                segment: source,
                offset: offset as u32,
                len: raw.len() as u32,
            };
            st.index
                .locate(header.ns, header.partition, record::key_of(raw, header))
                == Some(here)
        }
        // A marker stays while another segment may hold an older record it shadows.
        Kind::Purge | Kind::DropPartition => st
            .segments
            .iter()
            .any(|(&id, s)| id != source && s.min_seq < header.seq),
        Kind::Seal => false,
    }
}

fn segment_name(id: u32) -> String {
    format!("seg-{id:010}.log")
}

fn hint_name(id: u32) -> String {
    format!("seg-{id:010}.hint")
}

fn parse_name(name: &str, suffix: &str) -> Option<u32> {
    name.strip_prefix("seg-")?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// One segment file.
struct Segment<F> {
    file: Rc<F>,
    /// Logical length: where the next record goes (active) or where valid data ends.
    len_bytes: u64,
    /// Bytes of records the index points at.
    live_bytes: u64,
    /// Lowest `seq` of any record in the segment (`u64::MAX` when none).
    min_seq: u64,
    /// No more records will be appended.
    sealed: bool,
    /// A valid hint file exists.
    has_hint: bool,
    /// Damage was found: no hint file, not compacted, re-reported on every open.
    damaged: bool,
    /// Purge and partition-drop markers in it: compaction finds these only by
    /// reading the whole segment, so one that holds any is never compacted
    /// from the index alone (docs §7a).
    markers: u32,
}

/// A flush whose write is in flight (at most `StoreConfig::flushes_in_flight_max`, kept
/// in file order; docs §4). Its bytes left the staging buffer when it started, so reads
/// of them are served from `pieces` until it is reaped.
struct Inflight<D: Disk> {
    segment: u32,
    /// File range of the flushed bytes (`pieces` also hold the zero padding after `end`).
    start: u64,
    end: u64,
    /// `flushed_lsn` once this write and every earlier one have succeeded.
    target_lsn: u64,
    /// Consecutive DMA buffers from `start`, each `StoreConfig::write_piece_bytes` except
    /// the last, which is shortened to the padded length.
    pieces: Vec<Rc<D::Buffer>>,
    /// Polled in place (never moved out) until it completes, so a waiter that is dropped
    /// leaves it for the next one and the bytes are never forgotten; dropped then.
    write: Option<Pin<Box<dyn Future<Output = io::Result<()>>>>>,
    /// The write's outcome, kept until the flush is reaped (in order).
    result: Option<io::Result<()>>,
}

impl<D: Disk> Inflight<D> {
    /// Copies the flushed bytes `[from, to)` (file offsets inside `start..end`) out;
    /// `piece_bytes` is the length of every piece but the last.
    fn copy_range(&self, piece_bytes: usize, from: u64, to: u64, out: &mut Vec<u8>) {
        let mut pos = from;
        while pos < to {
            let rel = (pos - self.start) as usize;
            let piece = self.pieces[rel / piece_bytes].as_bytes();
            let at = rel % piece_bytes;
            let n = (piece.len() - at).min((to - pos) as usize);
            out.extend_from_slice(&piece[at..at + n]);
            pos += n as u64;
        }
    }

    /// End of the file range the write covers (`end` plus the zero padding).
    fn padded_end(&self) -> u64 {
        self.start
            + self
                .pieces
                .iter()
                .map(|p| p.as_bytes().len() as u64)
                .sum::<u64>()
    }

    /// Polls the write until it completes and keeps its outcome.
    fn poll_write(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.result.is_some() {
            return Poll::Ready(());
        }
        let write = self.write.as_mut().expect("a write or its outcome");
        match write.as_mut().poll(cx) {
            Poll::Ready(r) => {
                self.result = Some(r);
                // The write's future is done; dropping it leaves the pieces to us.
                self.write = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes `pieces` back to back from `start`, all at once; completes when every write
/// has (the first error wins).
async fn write_pieces<F: DiskFile>(
    file: Rc<F>,
    start: u64,
    pieces: Vec<Rc<F::Buffer>>,
) -> io::Result<()> {
    let mut pos = start;
    let mut writes = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let len = piece.as_bytes().len() as u64;
        let file = file.clone();
        writes.push(Some(Box::pin(
            async move { file.write_at(piece, pos).await },
        )));
        pos += len;
    }
    let mut result = Ok(());
    std::future::poll_fn(|cx| {
        for slot in writes.iter_mut() {
            if let Some(w) = slot {
                if let Poll::Ready(r) = w.as_mut().poll(cx) {
                    *slot = None;
                    if let Err(e) = r {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
            }
        }
        if writes.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    result
}

/// A write of zeros ahead of the active segment's records (`StoreConfig::prewrite_bytes`,
/// docs §4). At most one is in flight; a flush whose range reaches `start` waits for it
/// first, so zeros never land over records.
struct Prewrite {
    segment: u32,
    start: u64,
    /// `None` once the write has completed.
    write: Option<Pin<Box<dyn Future<Output = io::Result<()>>>>>,
}

impl Prewrite {
    /// Polls the write; ready once it has completed. Its outcome is not needed: zeros
    /// ahead of the records only make later writes cheaper (the space is preallocated,
    /// so a failure here means the disk is failing, and the flushes will say so).
    fn poll_write(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let Some(write) = self.write.as_mut() else {
            return Poll::Ready(());
        };
        match write.as_mut().poll(cx) {
            Poll::Ready(_) => {
                self.write = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A segment being compacted.
#[derive(Debug, Clone, Copy)]
struct CompactionJob {
    segment: u32,
    cursor: u64,
    end: u64,
    /// Compacted from the index alone (`sparse_pays`): the index is scanned
    /// for the segment's live records, and only the stretches around them
    /// are read, and only they are decoded, not the whole segment in file
    /// order.
    sparse: bool,
}

/// A sparse compaction's progress (docs §7a).
#[derive(Default)]
struct LiveScan {
    /// The index set to scan next (`Index::scan_locations`); `None` once
    /// every set was.
    next_set: Option<(usize, u32)>,
    /// `(offset, length)` of each live record found, sorted by offset once
    /// the scan is done.
    found: Vec<(u32, u32)>,
    /// How many of `found` were copied forward (or were dead by then).
    done: usize,
}

/// What a sparse compaction counts as examined for each index entry it
/// scans, against the segment bytes a whole-segment pass reads (it paces
/// the work, `Store::compact_step`). A scanned entry costs a tenth to a
/// fifth of a probed record of 100-200 bytes.
const SCAN_BYTES_PER_ENTRY: u64 = 32;

/// Live records at most this far apart are read together in a sparse
/// compaction, in one read of up to `COMPACTION_READ_BYTES_MIN` (a single
/// larger record is read alone, whole), the dead records between them with
/// them. With 4 KiB (one block) a node under PUT spent 0.07 us more of
/// kernel CPU per put on the extra reads than it saved in bytes
/// (BENCHMARKS.md §2zi).
const SPARSE_READ_GAP_BYTES: u32 = 16 << 10;

/// The most entries one set may hold for a sparse compaction: a round scans
/// at least one whole set on the shard's thread without yielding (about
/// 1 ms at this size). A set is never scanned in parts, since a removal in
/// a `KeyTable` shifts later entries back into slots already passed.
const SPARSE_SET_ENTRIES_MAX: usize = 1 << 16;

/// Whether compacting `seg` from the index (`CompactionJob::sparse`) costs
/// at most half of reading all of it: `keys` entries scanned, and its live
/// records read, counted four times for the blocks around them. Never for a
/// segment with markers, which only a pass in file order finds, nor when a
/// set is larger than `SPARSE_SET_ENTRIES_MAX` (`largest_set`).
fn sparse_pays<F>(seg: &Segment<F>, keys: u64, largest_set: usize) -> bool {
    seg.markers == 0
        && largest_set <= SPARSE_SET_ENTRIES_MAX
        && keys
            .saturating_mul(SCAN_BYTES_PER_ENTRY)
            .saturating_add(seg.live_bytes.saturating_mul(4))
            <= seg.len_bytes / 2
}

struct State<D: Disk> {
    index: Index,
    segments: BTreeMap<u32, Segment<D::File>>,
    active_id: u32,
    /// The active segment's bytes from `buffer_file_offset` to its logical end, in DMA
    /// pieces that a flush writes as they are.
    buffer: WriteBuffer<D>,
    /// Aligned file offset of `buffer[0]`.
    buffer_file_offset: u64,
    appended_lsn: u64,
    /// Everything appended before it was handed to a flush write (in flight or done).
    issued_lsn: u64,
    flushed_lsn: u64,
    synced_lsn: u64,
    /// The active segment got its `Seal`; appends wait for the rotation.
    rotation_pending: bool,
    /// End of the zeros written (or being written) ahead of the active segment's
    /// records (`StoreConfig::prewrite_bytes`); 0 for a new segment.
    prewritten_end: u64,
    bytes_prewritten: u64,
    next_seq: u64,
    failed: bool,
    disk_full: bool,
    corrupt_keys: BTreeSet<(Namespace, u32, Bytes)>,
    compaction: Option<CompactionJob>,
    flushes: u64,
    syncs: u64,
    bytes_written: u64,
    segments_compacted: u64,
    segments_compacted_sparse: u64,
    /// The progress of a sparse compaction (`CompactionJob::sparse`).
    live_scan: LiveScan,
    /// The runtime's flush loop, waiting for the buffer to stop being empty
    /// (so an idle shard arms no flush timer; see `Store::wait_dirty`).
    dirty_waker: Option<std::task::Waker>,
}

impl<D: Disk> State<D> {
    fn active_end(&self) -> u64 {
        self.buffer_file_offset + self.buffer.len_bytes() as u64
    }

    fn active(&mut self) -> &mut Segment<D::File> {
        self.segments
            .get_mut(&self.active_id)
            .expect("the active segment is in the map")
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Failed);
        }
        if self.disk_full {
            return Err(StorageError::DiskFull);
        }
        Ok(())
    }

    /// Points the key at `loc`, with no read cache slot, and keeps the live
    /// byte counts exact; returns the location it pointed at before.
    fn index_insert(
        &mut self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        loc: Location,
    ) -> Option<Location> {
        self.index_insert_with_slot(ns, partition, key, loc, |_| CacheSlot::NONE)
    }

    /// `index_insert`, with the read cache slot `slot_of` returns, given the
    /// previous location and slot (`Index::insert_with_slot`).
    fn index_insert_with_slot(
        &mut self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        loc: Location,
        slot_of: impl FnOnce(Option<(Location, CacheSlot)>) -> CacheSlot,
    ) -> Option<Location> {
        self.segments
            .get_mut(&loc.segment)
            .expect("segment of a new location")
            .live_bytes += loc.len as u64;
        let old = self
            .index
            .insert_with_slot(ns, partition, key, loc, slot_of);
        if let Some(old) = old {
            self.release(old);
        }
        old
    }

    /// Ends the compaction job of `segment`, which is damaged, leaving the
    /// segment alone: it is reported at every open until repaired.
    fn abandon_damaged(&mut self, segment: u32) {
        if let Some(seg) = self.segments.get_mut(&segment) {
            seg.damaged = true;
        }
        self.compaction = None;
        self.live_scan = LiveScan::default();
    }

    fn release(&mut self, old: Location) {
        let seg = self
            .segments
            .get_mut(&old.segment)
            .expect("segment of an indexed location");
        assert!(seg.live_bytes >= old.len as u64);
        seg.live_bytes -= old.len as u64;
    }

    /// Appends a record of `bytes_len` bytes, which `fill` encodes into the slice it
    /// is given, to the buffer; the caller checked the room.
    fn append_bytes(&mut self, bytes_len: usize, seq: u64, fill: impl FnOnce(&mut [u8])) -> u64 {
        let offset = self.active_end();
        self.buffer.append(bytes_len, fill);
        if self.appended_lsn == self.flushed_lsn {
            if let Some(waker) = self.dirty_waker.take() {
                waker.wake();
            }
        }
        self.appended_lsn += bytes_len as u64;
        let seg = self.active();
        assert_eq!(seg.len_bytes, offset);
        seg.len_bytes += bytes_len as u64;
        seg.min_seq = seg.min_seq.min(seq);
        offset
    }
}

/// Whether a write that passed the admission checks (`Store::admit`) can be
/// appended at once; both carry the record's length.
enum Admission {
    /// It fits the buffer and the active segment and leaves the buffer below
    /// `write_buffer_bytes`: appended now, no flush starts.
    Now(usize),
    /// It needs room first (`with_room`) or fills the buffer (`after_append`
    /// starts a flush).
    Wait(usize),
}

/// What an append needs before it can go into the buffer.
enum Room {
    Ready,
    Flush,
    Rotate,
}

/// A sans-IO token bucket turning a compaction byte rate into `compact_step` budgets.
/// Usage: `let budget = limiter.budget(now); let p = store.compact_step(budget).await?;
/// limiter.consume(p.bytes_examined);`
#[derive(Debug, Clone)]
pub struct CompactionRateLimiter {
    bytes_per_second: u64,
    burst_bytes: u64,
    tokens: u64,
    last: Option<Instant>,
}

impl CompactionRateLimiter {
    /// A bucket refilled at `bytes_per_second`, holding at most `burst_bytes`.
    pub fn new(bytes_per_second: u64, burst_bytes: u64) -> Self {
        assert!(burst_bytes > 0);
        CompactionRateLimiter {
            bytes_per_second,
            burst_bytes,
            tokens: burst_bytes,
            last: None,
        }
    }

    /// The budget available at `now` (pass it to `compact_step`).
    pub fn budget(&mut self, now: Instant) -> u64 {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last);
            let refill = (elapsed.as_secs_f64() * self.bytes_per_second as f64) as u64;
            if refill > 0 {
                self.tokens = self.tokens.saturating_add(refill).min(self.burst_bytes);
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
        self.tokens
    }

    /// Takes the bytes a step actually examined out of the bucket.
    pub fn consume(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }
}

/// Where `Store::prefetch_entry` found a key: what its second stage,
/// `prefetch_record`, needs without probing the index again.
#[derive(Clone, Copy)]
pub struct Prefetched {
    loc: Location,
    slot: CacheSlot,
}

/// One shard's log-structured store. See the module documentation of `storage`.
pub struct Store<D: Disk> {
    disk: D,
    config: StoreConfig,
    limits: Limits,
    align_bytes: usize,
    /// The most bytes one record may take.
    record_bytes_max: usize,
    /// Buffer capacity: the flush threshold plus room for one maximal record.
    buffer_bytes_max: usize,
    state: RefCell<State<D>>,
    io_lock: AsyncLock,
    /// A durable writer leads a sync round (`sync_to`); the others wait for `sync_done`.
    sync_leader: Cell<bool>,
    sync_done: Notify,
    /// A writer is making room (a full buffer's flush or a rotation, `make_room`);
    /// the others that need room wait for `room_made` instead of queueing on
    /// `io_lock` one by one.
    making_room: Cell<bool>,
    /// Notified whenever a `make_room` ends, however it ends.
    room_made: Notify,
    /// The file of segment `active_id + 1`, created, preallocated and named durably
    /// ahead of the rotation that will use it (`prepare_next_segment`). No rotation
    /// runs while it is being prepared, so it always belongs to the active id + 1.
    next_segment: RefCell<Option<D::File>>,
    /// `prepare_next_segment` is creating it.
    preparing_next: Cell<bool>,
    /// `stop_preparing_segments` was called: no file is prepared again.
    preparing_stopped: Cell<bool>,
    /// Notified when a preparation ends and when a rotation takes the prepared file.
    next_segment_changed: Notify,
    /// When `flush_due` first saw unflushed data (sans-IO: set from the caller's `now`).
    dirty_since: Cell<Option<Instant>>,
    /// A `compact_step` is running (they must not overlap).
    compacting: Cell<bool>,
    /// Verified records recently read from segments, by location.
    read_cache: RefCell<ReadCache>,
    /// The flushes being written, oldest first (changed only under `io_lock`).
    inflight: RefCell<VecDeque<Inflight<D>>>,
    /// The last flush reaped successfully, kept until the next one is: a record cut by
    /// a flush of whole blocks has its head there and its tail in a write still in
    /// flight or in the buffer, and is read from memory until both are on disk.
    landed: RefCell<Option<Inflight<D>>>,
    /// The write of zeros ahead of the records, while in flight (under `io_lock`).
    prewrite: RefCell<Option<Prewrite>>,
    /// One chunk of zeros that every prewrite writes (never written to after it is
    /// filled).
    zero_chunk: RefCell<Option<Rc<D::Buffer>>>,
}

fn align_down(v: u64, align: usize) -> u64 {
    v / align as u64 * align as u64
}

fn align_up(v: u64, align: usize) -> u64 {
    v.div_ceil(align as u64) * align as u64
}

/// Recovery's view of one key: the winning record so far.
struct Winner {
    seq: u64,
    segment: u32,
    /// `None` for a purge.
    loc: Option<Location>,
}

/// A record `Store::read_in_memory` hands its reader: the read cache's own,
/// lent, or a copy made for this read (out of the write buffer or a flush
/// in flight), which `get` keeps without cloning it (a clone of a `Bytes`
/// made from a `Vec` allocates).
enum Lent<'a> {
    Cached(&'a StoredRecord),
    Copied(StoredRecord),
}

impl Lent<'_> {
    fn record(&self) -> &StoredRecord {
        match self {
            Lent::Cached(record) => record,
            Lent::Copied(record) => record,
        }
    }

    fn into_owned(record: Option<Lent<'_>>) -> Option<StoredRecord> {
        record.map(|record| match record {
            Lent::Cached(record) => record.clone(),
            Lent::Copied(record) => record,
        })
    }
}

impl<D: Disk> Store<D> {
    /// Opens (or creates) the store on `disk`, rebuilding the index (docs §6).
    pub async fn open(
        disk: D,
        config: StoreConfig,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        let align_bytes = disk.alignment_bytes();
        if config.max_key_bytes > u16::MAX as usize {
            return Err(StorageError::InvalidConfig("max_key_bytes above 65535"));
        }
        if config.max_value_bytes > (u32::MAX / 4) as usize {
            return Err(StorageError::InvalidConfig("max_value_bytes above 1 GiB"));
        }
        let record_bytes_max = record::record_len(config.max_key_bytes, config.max_value_bytes);
        if config.segment_size_bytes > SEGMENT_SIZE_BYTES_MAX {
            return Err(StorageError::InvalidConfig(
                "segment_size_bytes above 4 GiB",
            ));
        }
        if config.segment_size_bytes < 2 * (record_bytes_max + SEAL_BYTES) as u64 {
            return Err(StorageError::InvalidConfig(
                "segment_size_bytes below two maximal records",
            ));
        }
        if config.write_buffer_bytes == 0
            || align_bytes == 0
            || !align_bytes.is_power_of_two()
            || config.write_piece_bytes == 0
            || config.write_piece_bytes % align_bytes != 0
        {
            return Err(StorageError::InvalidConfig(
                "zero write buffer or piece, or bad alignment",
            ));
        }
        if !(config.compaction_dead_fraction > 0.0 && config.compaction_dead_fraction <= 1.0) {
            return Err(StorageError::InvalidConfig(
                "compaction_dead_fraction outside (0, 1]",
            ));
        }
        let buffer_bytes_max =
            config.write_buffer_bytes.max(record_bytes_max) + record_bytes_max + 2 * align_bytes;
        let limits = Limits {
            key_bytes_max: config.max_key_bytes,
            payload_bytes_max: config.max_value_bytes,
        };

        let mut report = RecoveryReport::default();
        let names = disk.list_files().await?;
        let mut segment_ids = Vec::new();
        let mut hint_ids = BTreeSet::new();
        for name in &names {
            if name.ends_with(".tmp") {
                disk.remove_file(name).await?;
            } else if let Some(id) = parse_name(name, ".log") {
                segment_ids.push(id);
            } else if let Some(id) = parse_name(name, ".hint") {
                hint_ids.insert(id);
            }
        }
        segment_ids.sort_unstable();
        // A hint whose segment is gone (removed by compaction before the crash) is stale.
        for id in hint_ids.clone() {
            if segment_ids.binary_search(&id).is_err() {
                disk.remove_file(&hint_name(id)).await?;
                hint_ids.remove(&id);
            }
        }

        let mut segments: BTreeMap<u32, Segment<D::File>> = BTreeMap::new();
        let mut winners: ahash::AHashMap<(Namespace, u32, Box<[u8]>), Winner> =
            ahash::AHashMap::new();
        let mut drops: BTreeMap<(Namespace, u32), u64> = BTreeMap::new();
        let mut damaged_headers: Vec<(Header, Vec<u8>)> = Vec::new();
        let mut seq_max = 0u64;
        for &id in &segment_ids {
            let file = disk.open_file(&segment_name(id)).await?;
            let file_len = file.len_bytes().await?;
            let mut entries: Option<(u64, Vec<HintEntry>)> = None;
            if hint_ids.contains(&id) {
                let hint_file = disk.open_file(&hint_name(id)).await?;
                let hint_len = hint_file.len_bytes().await?;
                let bytes = hint_file.read_at(0, hint_len as usize).await?;
                if let Some((segment_len, list)) = hint::decode(bytes.as_ref(), id, limits) {
                    // The file may be longer: alignment padding or preallocated zeros.
                    if segment_len <= file_len {
                        entries = Some((segment_len, list));
                    }
                }
            }
            let mut damaged = false;
            let has_hint = entries.is_some();
            let (len_bytes, entries) = match entries {
                Some(e) => {
                    report.hint_files_used += 1;
                    e
                }
                None => {
                    report.segments_scanned += 1;
                    let data = file.read_at(0, file_len as usize).await?;
                    let data = data.as_ref();
                    let scan = record::scan(data, limits);
                    if file_len > scan.valid_end {
                        // Cuts a torn tail, and gives back the preallocated space of a
                        // segment that was active when the process stopped.
                        file.truncate(scan.valid_end).await?;
                        report.truncated_tail_bytes += scan.torn_tail_bytes;
                    }
                    for d in &scan.damaged {
                        damaged = true;
                        let key = match (&d.header, &d.key) {
                            (Some(h), Some(k)) => {
                                damaged_headers.push((*h, k.clone()));
                                Some((h.ns, h.partition, Bytes::copy_from_slice(k)))
                            }
                            _ => None,
                        };
                        report.corrupt.push(CorruptRecord {
                            segment: id,
                            offset: d.offset,
                            len: d.len,
                            key,
                        });
                    }
                    let list = scan
                        .records
                        .iter()
                        .map(|r| HintEntry {
                            header: r.header,
                            offset: r.offset,
                            key: record::key_of(&data[r.offset as usize..], &r.header).to_vec(),
                        })
                        .collect();
                    (scan.valid_end, list)
                }
            };
            let mut min_seq = u64::MAX;
            let mut markers = 0;
            // Growing the map one rehash at a time is a visible part of a restart.
            winners.reserve(entries.len());
            for e in entries {
                let h = e.header;
                if h.kind == Kind::Seal {
                    continue;
                }
                if matches!(h.kind, Kind::Purge | Kind::DropPartition) {
                    markers += 1;
                }
                min_seq = min_seq.min(h.seq);
                seq_max = seq_max.max(h.seq);
                if h.kind == Kind::DropPartition {
                    let d = drops.entry((h.ns, h.partition)).or_insert(0);
                    *d = (*d).max(h.seq);
                    continue;
                }
                let loc = match h.kind {
                    Kind::Value | Kind::Tombstone => Some(Location {
                        segment: id,
                        offset: e.offset as u32,
                        len: h.record_len() as u32,
                    }),
                    _ => None,
                };
                let wins = |w: &Winner| h.seq > w.seq || (h.seq == w.seq && id > w.segment);
                match winners.entry((h.ns, h.partition, e.key.into_boxed_slice())) {
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        if wins(o.get()) {
                            o.insert(Winner {
                                seq: h.seq,
                                segment: id,
                                loc,
                            });
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(Winner {
                            seq: h.seq,
                            segment: id,
                            loc,
                        });
                    }
                }
            }
            segments.insert(
                id,
                Segment {
                    file: Rc::new(file),
                    len_bytes,
                    live_bytes: 0,
                    min_seq,
                    sealed: true,
                    has_hint,
                    damaged,
                    markers,
                },
            );
        }

        let mut corrupt_keys = BTreeSet::new();
        for (h, key) in damaged_headers {
            seq_max = seq_max.max(h.seq);
            let dropped = drops.get(&(h.ns, h.partition)).is_some_and(|d| *d > h.seq);
            let superseded = winners
                .get(&(h.ns, h.partition, key.clone().into_boxed_slice()))
                .is_some_and(|w| w.seq > h.seq);
            if !dropped && !superseded && matches!(h.kind, Kind::Value | Kind::Tombstone) {
                corrupt_keys.insert((h.ns, h.partition, Bytes::from(key)));
            }
        }

        let mut index = Index::default();
        let mut partition_sizes: BTreeMap<(Namespace, u32), usize> = BTreeMap::new();
        let survives = |ns: Namespace, partition: u32, w: &Winner| {
            w.loc.is_some() && drops.get(&(ns, partition)).is_none_or(|d| *d <= w.seq)
        };
        for ((ns, partition, _), w) in &winners {
            if survives(*ns, *partition, w) {
                *partition_sizes.entry((*ns, *partition)).or_default() += 1;
            }
        }
        for ((ns, partition), n) in partition_sizes {
            index.reserve(ns, partition, n);
        }
        for ((ns, partition, key), w) in winners {
            if !survives(ns, partition, &w) {
                continue;
            }
            let loc = w.loc.expect("a surviving winner has a location");
            index.insert(ns, partition, &key, loc);
            segments
                .get_mut(&loc.segment)
                .expect("winner's segment")
                .live_bytes += loc.len as u64;
        }
        report.keys = index.keys();
        report.used_hint_files = report.hint_files_used > 0;

        let active_id = segment_ids.last().map_or(1, |id| id + 1);
        let file = disk.open_file(&segment_name(active_id)).await?;
        if file.len_bytes().await? != 0 {
            file.truncate(0).await?;
        }
        file.preallocate(config.segment_size_bytes).await?;
        // One directory sync covers the new segment and any stale files removed above.
        disk.sync_dir().await?;
        segments.insert(
            active_id,
            Segment {
                file: Rc::new(file),
                len_bytes: 0,
                live_bytes: 0,
                min_seq: u64::MAX,
                sealed: false,
                has_hint: false,
                damaged: false,
                markers: 0,
            },
        );

        let state = State {
            index,
            segments,
            active_id,
            // Spare pieces for every write that can be in flight and the landed one:
            // when several writes complete together their pieces all come back at once,
            // and with room for one flush's worth only the rest were freed and
            // allocated afresh a moment later (fresh DMA memory, its pages faulted in
            // again: about half the ingest's page faults). The store holds this many
            // pieces at its peak anyway, so the bound adds no memory beyond that peak.
            buffer: WriteBuffer::new(
                disk.clone(),
                config.write_piece_bytes,
                (config.flushes_in_flight_max.max(1) + 1)
                    * config.write_buffer_bytes.div_ceil(config.write_piece_bytes)
                    + 1,
            ),
            buffer_file_offset: 0,
            appended_lsn: 0,
            issued_lsn: 0,
            flushed_lsn: 0,
            synced_lsn: 0,
            rotation_pending: false,
            prewritten_end: 0,
            bytes_prewritten: 0,
            next_seq: seq_max + 1,
            failed: false,
            disk_full: false,
            corrupt_keys,
            compaction: None,
            flushes: 0,
            syncs: 0,
            bytes_written: 0,
            segments_compacted: 0,
            segments_compacted_sparse: 0,
            live_scan: LiveScan::default(),
            dirty_waker: None,
        };
        let config_read_cache_bytes = config.read_cache_bytes;
        let store = Store {
            disk,
            config,
            limits,
            align_bytes,
            record_bytes_max,
            buffer_bytes_max,
            state: RefCell::new(state),
            io_lock: AsyncLock::default(),
            sync_leader: Cell::new(false),
            making_room: Cell::new(false),
            room_made: Notify::default(),
            next_segment: RefCell::new(None),
            preparing_next: Cell::new(false),
            preparing_stopped: Cell::new(false),
            next_segment_changed: Notify::default(),
            sync_done: Notify::default(),
            dirty_since: Cell::new(None),
            compacting: Cell::new(false),
            read_cache: RefCell::new(ReadCache::new(config_read_cache_bytes)),
            inflight: RefCell::new(VecDeque::new()),
            landed: RefCell::new(None),
            prewrite: RefCell::new(None),
            zero_chunk: RefCell::new(None),
        };
        Ok((store, report))
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn check_bounds(&self, key: &[u8], payload: &[u8]) -> Result<usize, StorageError> {
        if key.len() > self.config.max_key_bytes {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max: self.config.max_key_bytes,
            });
        }
        if payload.len() > self.config.max_value_bytes {
            return Err(StorageError::ValueTooLarge {
                len: payload.len(),
                max: self.config.max_value_bytes,
            });
        }
        let len = record::record_len(key.len(), payload.len());
        if len > self.record_bytes_max {
            return Err(StorageError::RecordTooLarge {
                len,
                max: self.record_bytes_max,
            });
        }
        Ok(len)
    }

    fn room(&self, st: &State<D>, len: usize) -> Room {
        if st.rotation_pending
            || st.active_end() + (len + SEAL_BYTES) as u64 > self.config.segment_size_bytes
        {
            return Room::Rotate;
        }
        if st.buffer.len_bytes() + len > self.buffer_bytes_max {
            return Room::Flush;
        }
        Room::Ready
    }

    /// Waits until a record of `len` bytes fits, then runs `append` on the state (no
    /// await between the check and the append). Returns `append`'s result.
    ///
    /// One writer at a time makes room (`make_room`); the others wait for it to end
    /// and look again. Each waiter is woken once per flush or rotation, not once per
    /// writer passing `io_lock` ahead of it (BENCHMARKS.md §1, "One writer makes
    /// room").
    async fn with_room<R>(
        &self,
        len: usize,
        append: impl FnOnce(&mut State<D>) -> R,
    ) -> Result<R, StorageError> {
        loop {
            let (room, seen) = {
                let st = self.state.borrow();
                if st.failed {
                    return Err(StorageError::Failed);
                }
                (self.room(&st, len), self.room_made.epoch())
            };
            let rotate = match room {
                Room::Ready => return Ok(append(&mut self.state.borrow_mut())),
                Room::Flush => false,
                Room::Rotate => true,
            };
            if self.making_room.get() {
                self.room_made.wait(seen).await;
                continue;
            }
            self.make_room(rotate, len).await?;
        }
    }

    /// Starts the flush of a full buffer, or rotates the active segment for a record of
    /// `len` bytes (`rotate`), as the one writer making room (caller saw `making_room`
    /// clear). One flush each: if the buffer is full again when it returns, the next
    /// writer to append or to find no room starts the next one, so no writer keeps
    /// flushing for the others under a sustained load.
    async fn make_room(&self, rotate: bool, len: usize) -> Result<(), StorageError> {
        let _claim = Claim::new(&self.making_room, Some(&self.room_made));
        if rotate {
            let _io = self.io_lock.lock().await;
            self.rotate_locked(len).await
        } else {
            self.flush_behind().await
        }
    }

    /// Writes a record (value or tombstone) and points the index at it.
    ///
    /// The payload is taken as `Bytes` so that the read cache keeps the caller's bytes
    /// (a reference count, not a copy of the value).
    pub async fn put(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        kind: RecordKind,
        payload: Bytes,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let admission = self.admit(&self.state.borrow(), key, &payload)?;
        let lsn = match admission {
            Admission::Now(len) => self.append_put(
                &mut self.state.borrow_mut(),
                ns,
                partition,
                key,
                kind,
                payload,
                len,
            ),
            Admission::Wait(len) => {
                self.with_room(len, |st| {
                    self.append_put(st, ns, partition, key, kind, payload, len)
                })
                .await?
            }
        };
        self.after_append(lsn, durability).await
    }

    /// `put`, when it finishes without waiting: a buffered write whose
    /// record fits the buffer and the active segment and does not fill the
    /// buffer (so no flush starts). `Err(payload)`: nothing was done, and
    /// `put` must be awaited instead. Whatever it returns is what `put`
    /// would have returned (both apply `admit`, the one place of the
    /// admission rules). It spares
    /// the caller `put`'s future, which is large and, for such a write,
    /// finishes at its first poll anyway.
    pub fn put_now(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        kind: RecordKind,
        payload: Bytes,
        durability: Durability,
    ) -> Result<Result<(), StorageError>, Bytes> {
        if durability != Durability::Buffered {
            return Err(payload);
        }
        let mut st = self.state.borrow_mut();
        let len = match self.admit(&st, key, &payload) {
            Ok(Admission::Now(len)) => len,
            Ok(Admission::Wait(_)) => return Err(payload),
            Err(e) => return Ok(Err(e)),
        };
        self.append_put(&mut st, ns, partition, key, kind, payload, len);
        Ok(Ok(()))
    }

    /// The admission rules of a write, in the order `put` applies them:
    /// the record's bounds (`check_bounds`), then whether the store takes
    /// writes (`check_writable`), then whether it can be appended at once
    /// (`Admission::Now`: it fits the buffer and the active segment, as
    /// `with_room` finds, and does not fill the buffer, so `after_append`
    /// starts no flush) or must wait (`Admission::Wait`). Both give the
    /// record's length.
    fn admit(&self, st: &State<D>, key: &[u8], payload: &[u8]) -> Result<Admission, StorageError> {
        let len = self.check_bounds(key, payload)?;
        st.check_writable()?;
        if matches!(self.room(st, len), Room::Ready)
            && st.buffer.len_bytes() + len < self.config.write_buffer_bytes
        {
            Ok(Admission::Now(len))
        } else {
            Ok(Admission::Wait(len))
        }
    }

    /// Appends a value or tombstone record of `len` bytes (`check_bounds`)
    /// and points the index and the read cache at it; the caller made sure
    /// it fits. Returns the appended LSN.
    #[allow(clippy::too_many_arguments)]
    fn append_put(
        &self,
        st: &mut State<D>,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        record_kind: RecordKind,
        payload: Bytes,
        len: usize,
    ) -> u64 {
        let kind = match record_kind {
            RecordKind::Value => Kind::Value,
            RecordKind::Tombstone => Kind::Tombstone,
        };
        let seq = st.next_seq;
        st.next_seq += 1;
        let header = Header {
            kind,
            ns,
            partition,
            key_len: key.len(),
            payload_len: payload.len(),
            seq,
        };
        let offset = st.append_bytes(len, seq, |out| {
            record::encode(out, &header, key, &payload);
        });
        let loc = Location {
            segment: st.active_id,
            offset: offset as u32,
            len: len as u32,
        };
        // Write-through: a key's next read-modify-write finds its
        // current version in the cache even after the buffer is flushed.
        // The cache takes the caller's `Bytes` itself: no copy, and no
        // clone (cloning a `Bytes` made from a `Vec` allocates). The
        // superseded record is dropped (nothing reads it again), and the
        // new one takes the slot it frees: the slot this put's read of the
        // current version just touched. All in the index's one probe for
        // the key.
        st.index_insert_with_slot(ns, partition, key, loc, |old| {
            if self.config.read_cache_bytes == 0 {
                return CacheSlot::NONE;
            }
            let mut cache = self.read_cache.borrow_mut();
            if let Some((old, slot)) = old {
                cache.forget(slot, (old.segment, old.offset));
            }
            cache.insert((loc.segment, loc.offset), record_kind, payload)
        });
        if !st.corrupt_keys.is_empty() {
            st.corrupt_keys
                .remove(&(ns, partition, Bytes::copy_from_slice(key)));
        }
        st.appended_lsn
    }

    /// Starts the flush of a full buffer and, for durable writes, waits for the group
    /// commit.
    async fn after_append(&self, lsn: u64, durability: Durability) -> Result<(), StorageError> {
        let full = self.state.borrow().buffer.len_bytes() >= self.config.write_buffer_bytes;
        // A writer is already making room: this record is in the buffer, which that
        // writer's flush or the next one writes (the next writer to fill the buffer, or
        // the timer). A buffered write has nothing to wait for; a durable one waits
        // for its sync round below.
        if full && !self.making_room.get() {
            match self.make_room(false, 0).await {
                // The record is in the buffer and readable; a buffered write stands, and
                // later writers see `DiskFull` until a flush succeeds.
                Ok(()) | Err(StorageError::DiskFull) => {}
                Err(e) => return Err(e),
            }
        }
        match durability {
            Durability::Buffered => Ok(()),
            Durability::Durable => self.sync_to(lsn).await,
        }
    }

    /// Writes a marker record (purge or partition drop).
    async fn put_marker(
        &self,
        kind: Kind,
        ns: Namespace,
        partition: u32,
        key: &[u8],
    ) -> Result<(), StorageError> {
        let (Admission::Now(len) | Admission::Wait(len)) =
            self.admit(&self.state.borrow(), key, &[])?;
        let lsn = self
            .with_room(len, |st| {
                let seq = st.next_seq;
                st.next_seq += 1;
                let header = Header {
                    kind,
                    ns,
                    partition,
                    key_len: key.len(),
                    payload_len: 0,
                    seq,
                };
                st.append_bytes(len, seq, |out| record::encode(out, &header, key, &[]));
                st.active().markers += 1;
                match kind {
                    Kind::Purge => {
                        if let Some(old) = st.index.remove(ns, partition, key) {
                            st.release(old);
                        }
                        st.corrupt_keys
                            .remove(&(ns, partition, Bytes::copy_from_slice(key)));
                    }
                    Kind::DropPartition => {
                        for old in st.index.drop_partition(ns, partition) {
                            st.release(old);
                        }
                        st.corrupt_keys
                            .retain(|(n, p, _)| !(*n == ns && *p == partition));
                    }
                    _ => unreachable!("markers are purges and partition drops"),
                }
                st.appended_lsn
            })
            .await?;
        self.after_append(lsn, Durability::Buffered).await
    }

    /// Removes a key for good (the layer above decided its tombstone may go). Buffered.
    pub async fn purge(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
    ) -> Result<(), StorageError> {
        self.put_marker(Kind::Purge, ns, partition, key).await
    }

    /// Removes every key of one partition (after handoff). Buffered.
    pub async fn drop_partition(&self, ns: Namespace, partition: u32) -> Result<(), StorageError> {
        self.put_marker(Kind::DropPartition, ns, partition, &[])
            .await
    }

    /// The latest record of a key: from the read cache, the write buffer or
    /// one positioned read.
    pub async fn get(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
    ) -> Result<Option<StoredRecord>, StorageError> {
        let (loc, file) = match self.read_in_memory(ns, partition, key, Lent::into_owned) {
            Ok(record) => return Ok(record),
            Err(loc) => {
                let st = self.state.borrow();
                (loc, st.segments[&loc.segment].file.clone())
            }
        };
        let bytes = file.read_at(loc.offset as u64, loc.len as usize).await?;
        match self.check_record(bytes.as_ref(), ns, partition, key) {
            Some(record) => {
                self.cache_read(ns, partition, key, loc, &record);
                Ok(Some(record))
            }
            None => {
                self.state.borrow_mut().corrupt_keys.insert((
                    ns,
                    partition,
                    Bytes::copy_from_slice(key),
                ));
                Err(StorageError::Corrupt {
                    segment: loc.segment,
                    offset: loc.offset as u64,
                })
            }
        }
    }

    /// Caches a record `get` read from its segment, if the key's index entry
    /// still points at it (a put while the read was in flight superseded it
    /// otherwise) and names no slot that already holds it (another `get` of
    /// the key read it at the same time).
    fn cache_read(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        loc: Location,
        record: &StoredRecord,
    ) {
        let mut st = self.state.borrow_mut();
        let Some((current, slot)) = st.index.get_cached(ns, partition, key) else {
            return;
        };
        let location = (loc.segment, loc.offset);
        let mut cache = self.read_cache.borrow_mut();
        if current != loc || cache.holds(slot, location) {
            return;
        }
        let slot = cache.insert(location, record.kind, record.payload.clone());
        let pointed = st.index.set_cache_slot(ns, partition, key, loc, slot);
        assert!(pointed, "the entry is still at the location read");
    }

    /// The latest record of a key when no I/O is needed to find it: absent
    /// from the index, in the read cache (a cheap `Bytes` clone: every record
    /// written is cached write-through, so a key's next read-modify-write
    /// lands here), or in the write buffer (checked and copied out). `None`:
    /// the record is only on disk, and `get` must read it.
    ///
    /// The request path calls this directly so that a read that needs no
    /// I/O is answered without spawning a task (`runtime/shard.rs`).
    pub fn get_now(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
    ) -> Option<Option<StoredRecord>> {
        self.read_in_memory(ns, partition, key, Lent::into_owned)
            .ok()
    }

    /// Before `prefetch_entry`, for a batch of keys, two cheaper stages that
    /// let the index probes' own cache misses overlap: this one asks the
    /// CPU for the key's home slot in the index and returns the key's hash
    /// there; `prefetch_index_entry` (called after every key's
    /// `prefetch_index_slot`, so that the slots have arrived) asks for the
    /// entry the slot names. Nothing is changed. `None`: the partition
    /// holds no key.
    pub fn prefetch_index_slot(&self, ns: Namespace, partition: u32, key: &[u8]) -> Option<u64> {
        self.state.borrow().index.prefetch_slot(ns, partition, key)
    }

    /// The second stage of `prefetch_index_slot`.
    pub fn prefetch_index_entry(&self, ns: Namespace, partition: u32, hash: u64) {
        self.state
            .borrow()
            .index
            .prefetch_entry(ns, partition, hash);
    }

    /// Warms the CPU caches for a read of `key` that comes soon, in two
    /// stages: this one probes the index (the probe waits for the key's
    /// entry; a caller probes a batch of keys back to back so that the CPU
    /// overlaps those waits) and prefetches the read-cache slot the entry
    /// names; `prefetch_record` (called after every key's `prefetch_entry`,
    /// so that the slots have arrived) reads that slot and prefetches the
    /// record's first bytes. Nothing is changed. `None`: no such key.
    /// `for_write`: the read is a write's, which also replaces the cached
    /// record (its slot's stamp is prefetched too).
    pub fn prefetch_entry(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        for_write: bool,
    ) -> Option<Prefetched> {
        let st = self.state.borrow();
        let (loc, slot) = st.index.get_cached(ns, partition, key)?;
        self.read_cache.borrow().prefetch_slot(slot, for_write);
        Some(Prefetched { loc, slot })
    }

    /// The second stage of `prefetch_entry`. `prefetched` must come from
    /// this store; if the key moved since, the slot no longer names its
    /// record and nothing is prefetched.
    pub fn prefetch_record(&self, prefetched: &Prefetched) {
        let Prefetched { loc, slot } = *prefetched;
        self.read_cache
            .borrow()
            .prefetch_record(slot, (loc.segment, loc.offset));
    }

    /// `get_now`, lending the record to `read` instead of returning it: a
    /// cached record is read where the cache holds it, without the `Bytes`
    /// clone and drop (an atomic add and subtract on the payload's shared
    /// buffer, whose count is often a CPU cache miss of its own). For a
    /// read-modify-write that needs the current version only to compute the
    /// next. `None`: the record needs I/O, and `read` was not called.
    ///
    /// `read` must not call the store: its state is borrowed while it runs
    /// (a call that writes panics with the `RefCell` borrow error).
    pub fn read_now<R>(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        read: impl FnOnce(Option<&StoredRecord>) -> R,
    ) -> Option<R> {
        self.read_in_memory(ns, partition, key, |record| {
            read(record.as_ref().map(Lent::record))
        })
        .ok()
    }

    /// Calls `read` with the latest record of a key when no I/O is needed to
    /// find it (`get_now`); `Err`: the record is only in its segment, at
    /// this location, and `read` was not called.
    fn read_in_memory<R>(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        read: impl FnOnce(Option<Lent<'_>>) -> R,
    ) -> Result<R, Location> {
        let st = self.state.borrow();
        let Some((loc, slot)) = st.index.get_cached(ns, partition, key) else {
            return Ok(read(None));
        };
        // The cache first: a location is never reused and a record never
        // changes, so a hit is the record at `loc` (verified when it was
        // written or read), with no CRC to recompute and nothing to copy.
        if let Some(record) = self
            .read_cache
            .borrow()
            .get(slot, (loc.segment, loc.offset))
        {
            return Ok(read(Some(Lent::Cached(record))));
        }
        if loc.segment == st.active_id && loc.offset as u64 >= st.buffer_file_offset {
            let start = (loc.offset as u64 - st.buffer_file_offset) as usize;
            let record = st.buffer.with_range(start, loc.len as usize, |bytes| {
                self.check_record(bytes, ns, partition, key)
            });
            let record = record.expect("a buffered record is intact");
            return Ok(read(Some(Lent::Copied(record))));
        }
        // Written out of the buffer but still in flight (or cut by a flush and
        // only partly written): its bytes are in the flushes' DMA buffers, not
        // yet (reliably) on disk.
        if let Some(bytes) = self.unflushed_record(&st, loc) {
            let record = self.check_record(&bytes, ns, partition, key);
            let record = record.expect("a record being flushed is intact");
            return Ok(read(Some(Lent::Copied(record))));
        }
        Err(loc)
    }

    /// Validates a record read back (pairs with the encoding before the write).
    fn check_record(
        &self,
        bytes: &[u8],
        ns: Namespace,
        partition: u32,
        key: &[u8],
    ) -> Option<StoredRecord> {
        let Decoded::Valid(h) = record::decode(bytes, self.limits) else {
            return None;
        };
        if h.record_len() != bytes.len()
            || h.ns != ns
            || h.partition != partition
            || record::key_of(bytes, &h) != key
        {
            return None;
        }
        let kind = match h.kind {
            Kind::Value => RecordKind::Value,
            Kind::Tombstone => RecordKind::Tombstone,
            _ => return None,
        };
        Some(StoredRecord {
            kind,
            payload: Bytes::copy_from_slice(record::payload_of(bytes, &h)),
        })
    }

    /// A snapshot of one partition's keys.
    pub fn keys(&self, ns: Namespace, partition: u32) -> Vec<Bytes> {
        self.state.borrow().index.partition_keys(ns, partition)
    }

    /// Partitions holding at least one key, ascending.
    pub fn partitions(&self, ns: Namespace) -> Vec<u32> {
        self.state.borrow().index.partitions(ns)
    }

    /// Returns once the write buffer holds something not yet flushed, so a
    /// flush loop can sleep without a timer while the store is clean.
    pub async fn wait_dirty(&self) {
        std::future::poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.appended_lsn != st.flushed_lsn {
                return std::task::Poll::Ready(());
            }
            st.dirty_waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// Whether the runtime should call `flush` now: buffered data has waited at least
    /// `flush_interval` (measured from the first call that saw it) or fills the buffer.
    pub fn flush_due(&self, now: Instant) -> bool {
        let st = self.state.borrow();
        if st.appended_lsn == st.flushed_lsn {
            self.dirty_since.set(None);
            return false;
        }
        if st.buffer.len_bytes() >= self.config.write_buffer_bytes {
            return true;
        }
        match self.dirty_since.get() {
            None => {
                self.dirty_since.set(Some(now));
                self.config.flush_interval == Duration::ZERO
            }
            Some(since) => now.saturating_duration_since(since) >= self.config.flush_interval,
        }
    }

    /// Writes the buffer to the active segment (no `fdatasync`).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let _io = self.io_lock.lock().await;
        self.flush_locked().await
    }

    /// The flush the runtime's timer starts once `flush_due` says so. With no write in
    /// flight it is `flush` (the partial last block padded, the write waited for). While
    /// writes started by full buffers (whole blocks, `flush_behind`) are in flight it
    /// neither pads nor waits for them: a padded write would make the next flush wait
    /// for every write up to it (they share a block), and waiting here would hold
    /// `io_lock`, and so the writers, until the pipeline drained. It applies the writes
    /// that have completed, starts one more write of the whole blocks nobody issued yet
    /// (as a full buffer's flush does: it waits for the oldest write only when
    /// `flushes_in_flight_max` are in flight), and restarts the interval; the partial
    /// last block goes out with the next flush, at the latest the timer's next one
    /// after the writes in flight complete (docs/storage.md §4). `now`: the time the
    /// interval restarts from (as `flush_due`'s).
    pub async fn flush_for_interval(&self, now: Instant) -> Result<(), StorageError> {
        {
            let _io = self.io_lock.lock().await;
            self.reap_completed_locked().await?;
            if self.inflight.borrow().is_empty() {
                return self.flush_locked().await;
            }
            let whole = {
                let st = self.state.borrow();
                if st.appended_lsn == st.issued_lsn {
                    0
                } else {
                    st.buffer.whole_prefix_bytes(self.align_bytes)
                }
            };
            if whole > 0 {
                self.start_flush_locked(false).await?;
            }
            self.dirty_since.set(Some(now));
        }
        if !self.inflight.borrow().is_empty() {
            self.disk.submit_queued().await;
        }
        Ok(())
    }

    /// Flushes and waits for the write (caller holds `io_lock`).
    async fn flush_locked(&self) -> Result<(), StorageError> {
        self.start_flush_locked(true).await?;
        self.reap_locked().await
    }

    /// Starts a flush of the buffer's whole blocks without waiting for its write, so the
    /// caller can fill the buffer again meanwhile; waits for the oldest write first only
    /// when `flushes_in_flight_max` writes are in flight.
    async fn flush_behind(&self) -> Result<(), StorageError> {
        {
            let _io = self.io_lock.lock().await;
            self.start_flush_locked(false).await?;
        }
        if !self.inflight.borrow().is_empty() {
            self.disk.submit_queued().await;
        }
        Ok(())
    }

    /// A copy of a record of the active segment that is not (wholly) on disk yet, put
    /// together from the in-flight writes' buffers, the buffer and, for a record whose
    /// head is in the last completed write and whose tail is not (a flush of whole
    /// blocks cuts records), that write's buffers (`landed`); `None` when it starts on
    /// disk before all of them.
    fn unflushed_record(&self, st: &State<D>, loc: Location) -> Option<Vec<u8>> {
        let landed = self.landed.borrow();
        let inflight = self.inflight.borrow();
        let (from, to) = (loc.offset as u64, loc.offset as u64 + loc.len as u64);
        let mut out: Option<Vec<u8>> = None;
        let mut pos = from;
        for f in landed.iter().chain(inflight.iter()) {
            if f.segment == loc.segment && pos >= f.start && pos < f.end {
                let n = to.min(f.end);
                f.copy_range(
                    self.config.write_piece_bytes,
                    pos,
                    n,
                    out.get_or_insert_with(|| Vec::with_capacity(loc.len as usize)),
                );
                pos = n;
                if pos == to {
                    break;
                }
            }
        }
        let mut out = out?;
        if pos < to {
            // The rest is still in the buffer (writes are contiguous up to it).
            assert!(
                loc.segment == st.active_id && pos >= st.buffer_file_offset,
                "the tail of a record being flushed is in the buffer"
            );
            let at = st.buffer_file_offset;
            st.buffer
                .copy_range((pos - at) as usize, (to - at) as usize, &mut out);
        }
        Some(out)
    }

    /// Waits for every in-flight write, oldest first, and applies their outcomes (caller
    /// holds `io_lock`).
    async fn reap_locked(&self) -> Result<(), StorageError> {
        while self.reap_one_locked().await? {}
        Ok(())
    }

    /// Waits for the oldest in-flight write and applies its outcome; `Ok(false)` when
    /// none is in flight (caller holds `io_lock`).
    async fn reap_one_locked(&self) -> Result<bool, StorageError> {
        // Every write is polled (a disk may need it to make progress); the oldest
        // decides.
        let any = std::future::poll_fn(|cx| {
            let mut inflight = self.inflight.borrow_mut();
            let mut flights = inflight.iter_mut();
            let Some(oldest) = flights.next() else {
                return Poll::Ready(false);
            };
            let ready = oldest.poll_write(cx).is_ready();
            for f in flights {
                let _ = f.poll_write(cx);
            }
            if ready {
                Poll::Ready(true)
            } else {
                Poll::Pending
            }
        })
        .await;
        if any {
            self.complete_oldest().await?;
        }
        Ok(any)
    }

    /// Applies the outcomes of the oldest writes that have already completed, without
    /// waiting for any (caller holds `io_lock`).
    async fn reap_completed_locked(&self) -> Result<(), StorageError> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            let done = match self.inflight.borrow_mut().front_mut() {
                Some(f) => f.poll_write(&mut cx).is_ready(),
                None => false,
            };
            if !done {
                return Ok(());
            }
            self.complete_oldest().await?;
        }
    }

    /// Moves bytes of the buffer into DMA buffers and starts writing them (caller holds
    /// `io_lock`). `full`: everything appended, the partial last block zero-padded (and
    /// kept in the buffer, to be written again with what follows); otherwise only the
    /// whole blocks (whole pieces when the buffer holds one), so that two writes in
    /// flight never share a block. Waits first for an earlier write that shares this
    /// one's first block, and for the oldest while `flushes_in_flight_max` are in flight.
    /// Polls the write once, which completes it on a disk whose I/O is immediate.
    async fn start_flush_locked(&self, full: bool) -> Result<(), StorageError> {
        self.reap_completed_locked().await?;
        let overlaps = {
            let st = self.state.borrow();
            self.inflight.borrow().back().is_some_and(|f| {
                f.segment != st.active_id || f.padded_end() > st.buffer_file_offset
            })
        };
        if overlaps {
            self.reap_locked().await?;
        }
        while self.inflight.borrow().len() >= self.config.flushes_in_flight_max.max(1) {
            self.reap_one_locked().await?;
        }
        let reaches_prewrite = {
            let st = self.state.borrow();
            self.prewrite.borrow().as_ref().is_some_and(|p| {
                p.segment == st.active_id && p.start < align_up(st.active_end(), self.align_bytes)
            })
        };
        if reaches_prewrite {
            // Zeros must not land after (over) the records this flush writes.
            self.wait_prewrite_locked().await;
        }
        {
            let mut st = self.state.borrow_mut();
            if st.failed {
                return Err(StorageError::Failed);
            }
            if st.appended_lsn == st.issued_lsn {
                // Nothing waits to be written; let writers try again.
                if st.appended_lsn == st.flushed_lsn {
                    st.disk_full = false;
                }
                return Ok(());
            }
            let used = st.buffer.len_bytes();
            assert!(used > 0);
            let start = st.buffer_file_offset;
            let end = start + used as u64;
            let whole = st.buffer.whole_prefix_bytes(self.align_bytes);
            let (pieces, written_end) = if full || whole == 0 {
                let kept_from = align_down(end, self.align_bytes);
                // The records were encoded into the pieces; only the zero padding of
                // the last block is written here.
                let pieces: Vec<Rc<D::Buffer>> = st
                    .buffer
                    .take_padded(self.align_bytes)
                    .into_iter()
                    .map(Rc::new)
                    .collect();
                // The buffer starts again with the last partial block, which the next
                // flush writes again with the same prefix (the pieces just given away
                // are never written to again, so it is copied into a fresh one).
                let tail_from = (kept_from - start) as usize;
                let last = pieces.last().expect("a flush has a piece").as_bytes();
                let last_from = (pieces.len() - 1) * self.config.write_piece_bytes;
                st.buffer
                    .extend_from_slice(&last[tail_from - last_from..used - last_from]);
                st.buffer_file_offset = kept_from;
                (pieces, end)
            } else {
                let pieces: Vec<Rc<D::Buffer>> = st
                    .buffer
                    .take_prefix(whole)
                    .into_iter()
                    .map(Rc::new)
                    .collect();
                st.buffer_file_offset = start + whole as u64;
                (pieces, start + whole as u64)
            };
            // The bytes after `written_end` stay in the buffer, not yet issued.
            let target_lsn = st.appended_lsn - (end - written_end);
            assert!(target_lsn > st.issued_lsn);
            st.issued_lsn = target_lsn;
            let file = st.active().file.clone();
            self.inflight.borrow_mut().push_back(Inflight {
                segment: st.active_id,
                start,
                end: written_end,
                target_lsn,
                pieces: pieces.clone(),
                write: Some(Box::pin(write_pieces(file, start, pieces))),
                result: None,
            });
        }
        std::future::poll_fn(|cx| {
            if let Some(f) = self.inflight.borrow_mut().back_mut() {
                let _ = f.poll_write(cx);
            }
            Poll::Ready(())
        })
        .await;
        self.reap_completed_locked().await
    }

    /// Applies the outcome of the oldest write, which has completed, and forgets it.
    /// Outcomes are applied in file order, so `flushed_lsn` never covers a range an
    /// earlier, unfinished write holds. After a failure every later write is waited for
    /// and all their bytes go back in front of the buffer.
    async fn complete_oldest(&self) -> Result<(), StorageError> {
        let failed = {
            let inflight = self.inflight.borrow();
            let f = inflight.front().expect("a flush in flight");
            matches!(f.result, Some(Err(_)))
        };
        if !failed {
            let f = self
                .inflight
                .borrow_mut()
                .pop_front()
                .expect("a flush in flight");
            let mut st = self.state.borrow_mut();
            assert!(f.target_lsn >= st.flushed_lsn);
            st.flushed_lsn = f.target_lsn;
            st.disk_full = false;
            st.flushes += 1;
            st.bytes_written += f
                .pieces
                .iter()
                .map(|p| p.as_bytes().len() as u64)
                .sum::<u64>();
            self.dirty_since.set(None);
            if let Some(old) = self.landed.borrow_mut().replace(f) {
                st.buffer.recycle(old.pieces);
            }
            return Ok(());
        }
        // The later writes must be over before their bytes are written again: one of
        // them still in flight could land after the retry (its padding over new
        // records). Their outcomes are kept in place, so a waiter dropped here leaves
        // the state as it was.
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for f in self.inflight.borrow_mut().iter_mut() {
                pending |= f.poll_write(cx).is_pending();
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        let mut flights: Vec<Inflight<D>> = self.inflight.borrow_mut().drain(..).collect();
        let Some(Err(error)) = flights[0].result.take() else {
            unreachable!("the oldest write failed")
        };
        let mut st = self.state.borrow_mut();
        // Put every write's bytes back in front of the buffer, in order: reads find
        // them there, and the next flush writes them again (`ENOSPC`). A write ends
        // where the next one starts, or inside the next one's first block (a padded
        // flush whose partial last block the next one rewrites).
        // Every write in flight is the active segment's: a rotation flushes the
        // sealed segment whole before it switches (`switch_segment` asserts it), and
        // holds `io_lock`, which every flush needs, to its end.
        debug_assert!(flights.iter().all(|f| f.segment == st.active_id));
        let active: Vec<&Inflight<D>> = flights
            .iter()
            .filter(|f| f.segment == st.active_id)
            .collect();
        if let Some(first) = active.first() {
            let mut bytes = Vec::with_capacity(self.buffer_bytes_max);
            for (i, f) in active.iter().enumerate() {
                let next = active.get(i + 1).map_or(st.buffer_file_offset, |n| n.start);
                assert!(f.start <= next && next <= f.end, "flushes are contiguous");
                f.copy_range(self.config.write_piece_bytes, f.start, next, &mut bytes);
            }
            st.buffer.copy_range(0, st.buffer.len_bytes(), &mut bytes);
            st.buffer.clear();
            st.buffer.extend_from_slice(&bytes);
            st.buffer_file_offset = first.start;
        }
        st.issued_lsn = st.flushed_lsn;
        if is_enospc(&error) {
            st.disk_full = true;
            Err(StorageError::DiskFull)
        } else {
            st.failed = true;
            Err(StorageError::Io(error))
        }
    }

    /// Seals the active segment and starts the next one (caller holds `io_lock`).
    async fn rotate_locked(&self, len: usize) -> Result<(), StorageError> {
        let sealing = {
            let mut st = self.state.borrow_mut();
            if !st.rotation_pending
                && st.active_end() + (len + SEAL_BYTES) as u64 <= self.config.segment_size_bytes
            {
                // Another task rotated while this one waited for the lock.
                return Ok(());
            }
            if !st.rotation_pending {
                st.rotation_pending = true;
                let seq = st.next_seq;
                st.next_seq += 1;
                Self::append_seal(&mut st, seq);
            }
            st.active_id
        };
        self.flush_locked().await?;
        let sealed_lsn = self.state.borrow().flushed_lsn;
        // With the next file prepared, writers go on appending into it while the
        // sealed segment is synced: nothing reaches the new file before that sync,
        // because every flush needs `io_lock`, which this rotation holds to the end.
        let prepared = self.take_next_segment().await;
        let switched = match prepared {
            Some(file) => {
                self.switch_segment(sealing, file);
                self.room_made.notify_all();
                true
            }
            None => false,
        };
        // Sync the sealed segment before the next one is written: without it a crash
        // could keep writes of the new file and lose older ones of this file, and the
        // log would no longer be a prefix of what was appended (docs §4, §10).
        let sealed_file = self.state.borrow().segments[&sealing].file.clone();
        if let Err(e) = sealed_file.sync_data().await {
            self.state.borrow_mut().failed = true;
            return Err(StorageError::SyncFailed(e));
        }
        {
            let mut st = self.state.borrow_mut();
            assert_eq!(st.flushed_lsn, sealed_lsn, "nothing was flushed meanwhile");
            st.synced_lsn = sealed_lsn;
            st.syncs += 1;
        }
        // The sealed file's zeros, if any are still being written, are its last write.
        self.wait_prewrite_locked().await;
        if switched {
            return Ok(());
        }
        let file = match self.create_segment(sealing + 1).await {
            Ok(f) => f,
            Err(e) => {
                let mut st = self.state.borrow_mut();
                if is_enospc(&e) {
                    st.disk_full = true;
                    return Err(StorageError::DiskFull);
                }
                st.failed = true;
                return Err(StorageError::Io(e));
            }
        };
        self.switch_segment(sealing, file);
        Ok(())
    }

    /// Makes `file` the active segment after `sealing`, whose records are all flushed
    /// (caller holds `io_lock` and rotates).
    fn switch_segment(&self, sealing: u32, file: D::File) {
        let mut st = self.state.borrow_mut();
        assert_eq!(st.active_id, sealing);
        assert_eq!(st.appended_lsn, st.flushed_lsn);
        st.active().sealed = true;
        let new_id = sealing + 1;
        st.segments.insert(
            new_id,
            Segment {
                file: Rc::new(file),
                len_bytes: 0,
                live_bytes: 0,
                min_seq: u64::MAX,
                sealed: false,
                has_hint: false,
                damaged: false,
                markers: 0,
            },
        );
        st.active_id = new_id;
        st.buffer.clear();
        st.buffer_file_offset = 0;
        st.rotation_pending = false;
        st.prewritten_end = 0;
    }

    /// Creates segment `id`'s file, preallocates it and makes its name durable: the
    /// name must be durable before anything in the file is acknowledged.
    async fn create_segment(&self, id: u32) -> io::Result<D::File> {
        let file = self.disk.open_file(&segment_name(id)).await?;
        file.preallocate(self.config.segment_size_bytes).await?;
        self.disk.sync_dir().await?;
        Ok(file)
    }

    /// Completes when the next segment's file should be prepared: none is prepared or
    /// being prepared, and the store takes writes. A rotation that takes the prepared
    /// file makes it true again. Dropping it is harmless (it only waits).
    pub async fn next_segment_wanted(&self) {
        loop {
            let seen = self.next_segment_changed.epoch();
            let wanted = !self.preparing_next.get()
                && !self.preparing_stopped.get()
                && self.next_segment.borrow().is_none()
                && !self.state.borrow().failed;
            if wanted {
                return;
            }
            self.next_segment_changed.wait(seen).await;
        }
    }

    /// Creates the file of the segment after the active one ahead of its rotation
    /// (`create_segment`), so that the rotation, which every writer waits for, does not
    /// open, preallocate and sync the directory: under load those were 60% of a
    /// rotation's 45 ms (BENCHMARKS.md §1, "The next segment prepared ahead"). The
    /// runtime runs it in the background when `next_segment_wanted`; a store never
    /// prepared rotates as before. Does nothing when a file is prepared or being
    /// prepared. A rotation waits for a preparation in flight. After a crash the
    /// prepared file is an empty segment: recovery truncates it to nothing and
    /// compaction removes it (docs/storage.md §4, §10).
    pub async fn prepare_next_segment(&self) -> Result<(), StorageError> {
        let id = {
            let st = self.state.borrow();
            if st.failed {
                return Err(StorageError::Failed);
            }
            if self.preparing_next.get()
                || self.preparing_stopped.get()
                || self.next_segment.borrow().is_some()
            {
                return Ok(());
            }
            st.active_id + 1
        };
        let _claim = Claim::new(&self.preparing_next, Some(&self.next_segment_changed));
        let file = self.create_segment(id).await.map_err(|e| {
            if is_enospc(&e) {
                StorageError::DiskFull
            } else {
                StorageError::Io(e)
            }
        })?;
        // No rotation ran meanwhile: it waits for this preparation.
        assert_eq!(self.state.borrow().active_id + 1, id);
        *self.next_segment.borrow_mut() = Some(file);
        Ok(())
    }

    /// Takes the prepared next segment, waiting first for a preparation in flight (not
    /// racing it: both would open the file).
    async fn take_next_segment(&self) -> Option<D::File> {
        loop {
            let seen = self.next_segment_changed.epoch();
            if !self.preparing_next.get() {
                break;
            }
            self.next_segment_changed.wait(seen).await;
        }
        let prepared = self.next_segment.borrow_mut().take();
        self.next_segment_changed.notify_all();
        prepared
    }

    /// Stops preparing next segments (`prepare_next_segment`) and removes a prepared
    /// file, which holds nothing: for a clean stop, so that the next open does not find
    /// (and read through) an empty preallocated segment. `close` calls it.
    pub async fn stop_preparing_segments(&self) -> Result<(), StorageError> {
        self.preparing_stopped.set(true);
        if let Some(file) = self.take_next_segment().await {
            drop(file);
            let id = self.state.borrow().active_id + 1;
            self.disk.remove_file(&segment_name(id)).await?;
            self.disk.sync_dir().await?;
        }
        Ok(())
    }

    fn append_seal(st: &mut State<D>, seq: u64) {
        let header = Header {
            kind: Kind::Seal,
            ns: Namespace::Data,
            partition: 0,
            key_len: 0,
            payload_len: 0,
            seq,
        };
        st.append_bytes(SEAL_BYTES, seq, |out| {
            record::encode(out, &header, &[], &[])
        });
    }

    /// Writes zeros ahead of the active segment's records when durable writers are
    /// close to the end of the zeros already written (`StoreConfig::prewrite_bytes`;
    /// caller holds `io_lock` and leads a sync round). Starts the write and does not
    /// wait for it; one is in flight at a time.
    async fn start_prewrite_locked(&self) {
        let chunk_bytes = align_down(
            self.config
                .prewrite_bytes
                .min(self.config.write_piece_bytes as u64),
            self.align_bytes,
        );
        if chunk_bytes == 0 {
            return;
        }
        {
            let mut prewrite = self.prewrite.borrow_mut();
            if let Some(p) = prewrite.as_mut() {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if p.poll_write(&mut cx).is_pending() {
                    return;
                }
                *prewrite = None;
            }
        }
        let (segment, file, start, chunks) = {
            let mut st = self.state.borrow_mut();
            if st.failed || st.rotation_pending {
                return;
            }
            let records_end = align_up(st.active_end(), self.align_bytes);
            // Saturating: any `prewrite_bytes` is accepted, and a huge one means
            // "to the segment's end".
            if st.prewritten_end >= records_end.saturating_add(self.config.prewrite_bytes / 2) {
                return;
            }
            let start = st.prewritten_end.max(records_end);
            let end = records_end
                .saturating_add(self.config.prewrite_bytes)
                .min(align_down(self.config.segment_size_bytes, self.align_bytes));
            let chunks = end.saturating_sub(start) / chunk_bytes;
            if chunks == 0 {
                return;
            }
            st.prewritten_end = start + chunks * chunk_bytes;
            st.bytes_prewritten += chunks * chunk_bytes;
            (st.active_id, st.active().file.clone(), start, chunks)
        };
        let zeros = self
            .zero_chunk
            .borrow_mut()
            .get_or_insert_with(|| {
                let mut b = self.disk.alloc_buffer(chunk_bytes as usize);
                b.as_bytes_mut().fill(0);
                Rc::new(b)
            })
            .clone();
        let pieces = vec![zeros; chunks as usize];
        *self.prewrite.borrow_mut() = Some(Prewrite {
            segment,
            start,
            write: Some(Box::pin(write_pieces(file, start, pieces))),
        });
        // Poll once so the write is queued (and, on a disk whose I/O is immediate, done).
        std::future::poll_fn(|cx| {
            if let Some(p) = self.prewrite.borrow_mut().as_mut() {
                let _ = p.poll_write(cx);
            }
            Poll::Ready(())
        })
        .await;
    }

    /// Waits until no prewrite is in flight (caller holds `io_lock`).
    async fn wait_prewrite_locked(&self) {
        std::future::poll_fn(|cx| {
            let mut prewrite = self.prewrite.borrow_mut();
            if prewrite
                .as_mut()
                .is_some_and(|p| p.poll_write(cx).is_pending())
            {
                return Poll::Pending;
            }
            *prewrite = None;
            Poll::Ready(())
        })
        .await
    }

    /// Flushes and `fdatasync`s everything appended so far (group-commit aware).
    pub async fn sync(&self) -> Result<(), StorageError> {
        let lsn = self.state.borrow().appended_lsn;
        self.sync_to(lsn).await
    }

    /// Returns once an `fdatasync` covers everything up to `lsn`. One caller at a time
    /// leads a sync round; the others wait for its outcome and are covered by it if
    /// they appended before its flush (group commit).
    async fn sync_to(&self, lsn: u64) -> Result<(), StorageError> {
        loop {
            {
                let st = self.state.borrow();
                if st.failed {
                    return Err(StorageError::Failed);
                }
                if st.synced_lsn >= lsn {
                    return Ok(());
                }
            }
            if self.sync_leader.get() {
                // Another caller leads a round; its outcome decides for this one too.
                self.sync_done.wait(self.sync_done.epoch()).await;
                continue;
            }
            // Cleared, and the waiters woken, however the round ends.
            let _leader = Claim::new(&self.sync_leader, Some(&self.sync_done));
            // Let writers that are ready to run append first, so this round covers them.
            yield_now().await;
            let _io = self.io_lock.lock().await;
            self.flush_locked().await?;
            self.start_prewrite_locked().await;
            // Sealed segments were synced when they were sealed, so only the active
            // segment can hold unsynced bytes.
            let (file, target) = {
                let st = self.state.borrow();
                (st.segments[&st.active_id].file.clone(), st.flushed_lsn)
            };
            if let Err(e) = file.sync_data().await {
                // Linux may have dropped the dirty pages: a retry could falsely
                // succeed, so the store stops accepting writes (docs §9).
                self.state.borrow_mut().failed = true;
                return Err(StorageError::SyncFailed(e));
            }
            let mut st = self.state.borrow_mut();
            assert!(target >= st.synced_lsn);
            st.synced_lsn = target;
            st.syncs += 1;
        }
    }

    /// Does at most about `budget_bytes` of compaction work (docs §7).
    /// Steps must not overlap (one background task drives compaction).
    pub async fn compact_step(
        &self,
        budget_bytes: u64,
    ) -> Result<CompactionProgress, StorageError> {
        // Cleared however the step ends, including when its future is dropped; steps
        // must not overlap (Claim::new asserts it).
        let _guard = Claim::new(&self.compacting, None);
        self.compact_step_inner(budget_bytes).await
    }

    async fn compact_step_inner(
        &self,
        budget_bytes: u64,
    ) -> Result<CompactionProgress, StorageError> {
        let mut progress = CompactionProgress::default();
        loop {
            let job = {
                let mut st = self.state.borrow_mut();
                if st.failed {
                    return Err(StorageError::Failed);
                }
                if st.compaction.is_none() {
                    st.compaction = self.pick_candidate(&st);
                    if st.compaction.is_some_and(|job| job.sparse) {
                        st.live_scan = LiveScan {
                            next_set: Some((0, 0)),
                            ..LiveScan::default()
                        };
                    }
                }
                st.compaction
            };
            let Some(job) = job else {
                progress.more = false;
                return Ok(progress);
            };
            if progress.bytes_examined >= budget_bytes {
                progress.more = true;
                return Ok(progress);
            }
            if job.cursor >= job.end {
                self.finish_compaction(job.segment).await?;
                progress.segments_removed += 1;
                continue;
            }
            if job.sparse {
                self.compact_sparse_round(
                    job,
                    budget_bytes - progress.bytes_examined,
                    &mut progress,
                )
                .await?;
                continue;
            }
            let want = (budget_bytes - progress.bytes_examined)
                .max(COMPACTION_READ_BYTES_MIN)
                .min(job.end - job.cursor);
            let file = self.state.borrow().segments[&job.segment].file.clone();
            let chunk = file.read_at(job.cursor, want as usize).await?;
            let mut chunk: Vec<u8> = chunk.as_ref().to_vec();
            let mut pos = 0usize;
            let mut damaged = false;
            // The chunk's whole records, decoded (and checksummed) first.
            let mut records: Vec<(usize, Header)> = Vec::new();
            loop {
                if pos >= chunk.len() {
                    break;
                }
                let rest = &chunk[pos..];
                let header = match record::decode(rest, self.limits) {
                    Decoded::Valid(h) => h,
                    Decoded::BadPayload(h)
                        if rest.len() < h.record_len()
                            && job.cursor + (pos + h.record_len()) as u64 <= job.end =>
                    {
                        if pos > 0 {
                            break;
                        }
                        // A record larger than the chunk: read exactly it.
                        let whole = file.read_at(job.cursor, h.record_len()).await?;
                        chunk = whole.as_ref().to_vec();
                        continue;
                    }
                    // Not decodable here, but not at the start of the read:
                    // the chunk may end inside this record's header or key.
                    // Read on from here in the next round; only a record
                    // that does not decode at the start of a read is damage
                    // (a header or key cut by the read boundary used to mark
                    // whole segments damaged, and compaction then never
                    // touched them again).
                    Decoded::Invalid if pos > 0 => break,
                    _ => {
                        damaged = true;
                        break;
                    }
                };
                let len = header.record_len();
                records.push((pos, header));
                pos += len;
            }
            // Then which values and tombstones the index still points at,
            // in one pass with nothing in between, each group's index lines
            // prefetched while the group before is judged. Those found dead
            // (most of them) are passed over: a key never points back at a
            // record it left, so they stay dead while the others are copied.
            // Markers are judged when their turn comes, after the records
            // before them moved.
            let records = {
                let st = self.state.borrow();
                let probed = |header: &Header| matches!(header.kind, Kind::Value | Kind::Tombstone);
                // Each probe's two misses (the key's slot, then its entry),
                // asked for a group ahead (`KeyTable`).
                let prefetch = |group: &[(usize, Header)]| {
                    let mut hashes = [None; PROBE_GROUP];
                    for ((at, header), hash) in group.iter().zip(hashes.iter_mut()) {
                        if probed(header) {
                            let key =
                                record::key_of(&chunk[*at..*at + header.record_len()], header);
                            *hash = st.index.prefetch_slot(header.ns, header.partition, key);
                        }
                    }
                    for ((_, header), hash) in group.iter().zip(hashes) {
                        if let Some(hash) = hash {
                            st.index.prefetch_entry(header.ns, header.partition, hash);
                        }
                    }
                };
                let mut live = Vec::with_capacity(records.len());
                let mut groups = records.chunks(PROBE_GROUP).peekable();
                if let Some(first) = groups.peek() {
                    prefetch(first);
                }
                while let Some(group) = groups.next() {
                    if let Some(next) = groups.peek() {
                        prefetch(next);
                    }
                    live.extend(group.iter().copied().filter(|(at, header)| {
                        !probed(header) || {
                            let raw = &chunk[*at..*at + header.record_len()];
                            record_needed(&st, job.segment, job.cursor + *at as u64, header, raw)
                        }
                    }));
                }
                live
            };
            for (at, header) in &records {
                let raw = &chunk[*at..*at + header.record_len()];
                let offset = job.cursor + *at as u64;
                progress.bytes_copied += self
                    .compact_record(job.segment, offset, header, raw)
                    .await?;
            }
            progress.bytes_examined += pos as u64;
            let mut st = self.state.borrow_mut();
            if damaged {
                st.abandon_damaged(job.segment);
                continue;
            }
            if let Some(j) = st.compaction.as_mut() {
                j.cursor += pos as u64;
            }
        }
    }

    /// One round of a sparse compaction (docs §7a): index sets scanned for
    /// the segment's live records, whole sets until about `budget_bytes`
    /// worth (`SCAN_BYTES_PER_ENTRY`), at least one; once every set was, the
    /// next live records that one read covers (`SPARSE_READ_GAP_BYTES`),
    /// read and copied forward; once all were, the job's cursor set to its
    /// end, so the step removes the segment. A live record that does not
    /// read back marks the segment damaged and ends the job, as a pass in
    /// file order does; so does damage another reader found meanwhile
    /// (`write_hint_files`).
    async fn compact_sparse_round(
        &self,
        job: CompactionJob,
        budget_bytes: u64,
        progress: &mut CompactionProgress,
    ) -> Result<(), StorageError> {
        let batch: Vec<(u32, u32)> = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            if st.segments.get(&job.segment).is_none_or(|seg| seg.damaged) {
                st.abandon_damaged(job.segment);
                return Ok(());
            }
            let scan = &mut st.live_scan;
            if let Some(from) = scan.next_set {
                // A key never comes to point into a sealed segment, so a set
                // scanned earlier, or one made since, adds none: what the
                // scan finds over several steps is every live record.
                let entries_max = (budget_bytes / SCAN_BYTES_PER_ENTRY).max(1) as usize;
                let (visited, next) = st.index.scan_locations(from, entries_max, |loc| {
                    if loc.segment == job.segment {
                        scan.found.push((loc.offset, loc.len));
                    }
                });
                scan.next_set = next;
                if next.is_none() {
                    scan.found.sort_unstable();
                }
                progress.bytes_examined += (visited as u64).max(1) * SCAN_BYTES_PER_ENTRY;
                return Ok(());
            }
            let rest = &scan.found[scan.done..];
            let Some(&(first, first_len)) = rest.first() else {
                if let Some(j) = st.compaction.as_mut() {
                    j.cursor = j.end;
                }
                return Ok(());
            };
            let mut end = first + first_len;
            let n = 1 + rest[1..]
                .iter()
                .take_while(|&&(offset, len)| {
                    // Records never overlap: each entry names its own.
                    let near = offset
                        .checked_sub(end)
                        .is_some_and(|gap| gap <= SPARSE_READ_GAP_BYTES)
                        && offset + len - first <= COMPACTION_READ_BYTES_MIN as u32;
                    if near {
                        end = offset + len;
                    }
                    near
                })
                .count();
            rest[..n].to_vec()
        };
        let first = batch[0].0;
        let (last, last_len) = batch[batch.len() - 1];
        let span = (last + last_len - first) as usize;
        let file = self.state.borrow().segments[&job.segment].file.clone();
        let chunk = file.read_at(first as u64, span).await?;
        let chunk = chunk.as_ref();
        progress.bytes_examined += span as u64;
        for &(offset, len) in &batch {
            let at = (offset - first) as usize;
            let raw = chunk.get(at..at + len as usize);
            let header = match raw.map(|raw| record::decode(raw, self.limits)) {
                Some(Decoded::Valid(h))
                    if h.record_len() == len as usize
                        && matches!(h.kind, Kind::Value | Kind::Tombstone) =>
                {
                    h
                }
                _ => {
                    self.state.borrow_mut().abandon_damaged(job.segment);
                    return Ok(());
                }
            };
            let raw = raw.expect("decoded");
            progress.bytes_copied += self
                .compact_record(job.segment, offset as u64, &header, raw)
                .await?;
        }
        self.state.borrow_mut().live_scan.done += batch.len();
        Ok(())
    }

    fn pick_candidate(&self, st: &State<D>) -> Option<CompactionJob> {
        // The segment sealed last waits until the next one is sealed (docs
        // §7b): its live records are the newest, the ones most likely to be
        // overwritten soon, and copying them now copies them for nothing.
        // One with none left (an empty one too) goes at once, and a full disk
        // needs every byte back, so then it does not wait.
        let youngest = (self.config.compaction_spares_youngest && !st.disk_full)
            .then(|| st.segments.range(..st.active_id).next_back())
            .flatten()
            .filter(|(_, seg)| seg.live_bytes > 0)
            .map(|(&id, _)| id);
        let mut best: Option<(f64, u32)> = None;
        for (&id, seg) in &st.segments {
            if !seg.sealed || seg.damaged || id == st.active_id || Some(id) == youngest {
                continue;
            }
            let dead = seg.len_bytes - seg.live_bytes.min(seg.len_bytes);
            let fraction = if seg.len_bytes == 0 {
                1.0
            } else {
                dead as f64 / seg.len_bytes as f64
            };
            if fraction >= self.config.compaction_dead_fraction
                && best.is_none_or(|(f, _)| fraction > f)
            {
                best = Some((fraction, id));
            }
        }
        best.map(|(_, id)| CompactionJob {
            segment: id,
            cursor: 0,
            end: st.segments[&id].len_bytes,
            sparse: self.config.compaction_from_index
                && sparse_pays(&st.segments[&id], st.index.keys(), st.index.largest_set()),
        })
    }

    /// Copies one record forward if it is still needed (`record_needed`,
    /// asked again once there is room: the key may have been written while
    /// this waited); returns the bytes copied.
    async fn compact_record(
        &self,
        source: u32,
        offset: u64,
        header: &Header,
        raw: &[u8],
    ) -> Result<u64, StorageError> {
        // Borrowed from the read chunk: no copy of a record.
        let key = record::key_of(raw, header);
        let (ns, partition) = (header.ns, header.partition);
        let needed = |st: &State<D>| record_needed(st, source, offset, header, raw);
        if !needed(&self.state.borrow()) {
            return Ok(0);
        }
        let copied = self
            .with_room(raw.len(), |st| {
                if !needed(st) {
                    return 0;
                }
                let new_offset =
                    st.append_bytes(raw.len(), header.seq, |out| out.copy_from_slice(raw));
                if matches!(header.kind, Kind::Purge | Kind::DropPartition) {
                    st.active().markers += 1;
                }
                if matches!(header.kind, Kind::Value | Kind::Tombstone) {
                    let loc = Location {
                        segment: st.active_id,
                        offset: new_offset as u32,
                        len: raw.len() as u32,
                    };
                    st.index_insert(ns, partition, key, loc);
                }
                raw.len() as u64
            })
            .await?;
        Ok(copied)
    }

    async fn finish_compaction(&self, source: u32) -> Result<(), StorageError> {
        // Every copy must be durable before the original goes.
        self.sync().await?;
        let (file, has_hint) = {
            // Taken for the state change only: a hint writer (which holds it for its
            // whole write) is done with the segment, and any later one finds it gone.
            let _io = self.io_lock.lock().await;
            let mut st = self.state.borrow_mut();
            let seg = st
                .segments
                .remove(&source)
                .expect("segment under compaction");
            assert_eq!(
                seg.live_bytes, 0,
                "a compacted segment holds no live record"
            );
            if st.compaction.is_some_and(|job| job.sparse) {
                st.segments_compacted_sparse += 1;
                st.live_scan = LiveScan::default();
            }
            st.compaction = None;
            st.segments_compacted += 1;
            (seg.file, seg.has_hint)
        };
        // Closed while its name exists, so that the close frees nothing and the
        // removal frees the segment's blocks (`Disk::remove_file`, off the shard's
        // thread): the last close of a removed segment freed them in the shard's
        // thread, waiting for the file system's journal for 14-27 ms with every request
        // of the shard behind it (BENCHMARKS.md §2zh). A read still holding the file
        // (rare) closes it when it ends. A failed close loses nothing: the file holds
        // no live record and nothing is buffered for it.
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
        // The segment is out of the state from here on, so a removal that fails, or
        // is not made durable, fails the store (like a failed `fdatasync`): a file left
        // behind would be read again at the next open, where a purge marker that
        // compaction has meanwhile dropped (nothing in the state still needed it) no
        // longer shadows its records, and a purged value would come back. A segment
        // already gone is what was wanted. A stale hint file left behind is harmless
        // (open removes a hint without its segment).
        let removed = match self.disk.remove_file(&segment_name(source)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => {
                if has_hint {
                    let _ = self.disk.remove_file(&hint_name(source)).await;
                }
                self.disk.sync_dir().await
            }
        };
        if let Err(e) = removed {
            self.state.borrow_mut().failed = true;
            return Err(StorageError::Io(e));
        }
        Ok(())
    }

    /// Writes a hint file for every sealed, undamaged segment that has none (docs §3).
    pub async fn write_hint_files(&self) -> Result<(), StorageError> {
        // Hints may only describe durable segments.
        self.sync().await?;
        let ids: Vec<u32> = {
            let st = self.state.borrow();
            st.segments
                .iter()
                .filter(|(_, s)| s.sealed && !s.has_hint && !s.damaged)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ids {
            let (file, len) = {
                let st = self.state.borrow();
                let Some(seg) = st.segments.get(&id) else {
                    continue;
                };
                (seg.file.clone(), seg.len_bytes)
            };
            let data = file.read_at(0, len as usize).await?;
            let data = data.as_ref();
            let scan = record::scan(data, self.limits);
            if !scan.damaged.is_empty() || scan.valid_end != len {
                if let Some(seg) = self.state.borrow_mut().segments.get_mut(&id) {
                    seg.damaged = true;
                }
                continue;
            }
            let entries: Vec<HintEntry> = scan
                .records
                .iter()
                .filter(|r| r.header.kind != Kind::Seal)
                .map(|r| HintEntry {
                    header: r.header,
                    offset: r.offset,
                    key: record::key_of(&data[r.offset as usize..], &r.header).to_vec(),
                })
                .collect();
            let bytes = hint::encode(id, len, &entries);
            let _io = self.io_lock.lock().await;
            if !self.state.borrow().segments.contains_key(&id) {
                continue;
            }
            let tmp = format!("{}.tmp", hint_name(id));
            let hint_file = self.disk.open_file(&tmp).await?;
            let padded = align_up(bytes.len() as u64, self.align_bytes) as usize;
            let mut dma = self.disk.alloc_buffer(padded);
            dma.as_bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
            dma.as_bytes_mut()[bytes.len()..].fill(0);
            hint_file.write_at(Rc::new(dma), 0).await?;
            hint_file.truncate(bytes.len() as u64).await?;
            if let Err(e) = hint_file.sync_data().await {
                // Like every failed fdatasync (docs §9): the disk dropped writes it
                // promised, so the store stops accepting writes rather than trust it.
                // Found by tests/storage_crash_points.rs.
                self.state.borrow_mut().failed = true;
                return Err(StorageError::SyncFailed(e));
            }
            drop(hint_file);
            self.disk.rename_file(&tmp, &hint_name(id)).await?;
            self.disk.sync_dir().await?;
            if let Some(seg) = self.state.borrow_mut().segments.get_mut(&id) {
                seg.has_hint = true;
            }
        }
        Ok(())
    }

    /// Keys whose latest record was found damaged; the layer above repairs them from
    /// replicas (a new `put` or `purge` of the key clears the mark).
    pub fn corrupt_keys(&self) -> Vec<(Namespace, u32, Bytes)> {
        self.state.borrow().corrupt_keys.iter().cloned().collect()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let st = self.state.borrow();
        let mut live = 0;
        let mut total = 0;
        for seg in st.segments.values() {
            live += seg.live_bytes;
            total += seg.len_bytes;
        }
        StoreStats {
            keys: st.index.keys(),
            live_bytes: live,
            dead_bytes: total - live,
            segments: st.segments.len() as u32,
            flushes: st.flushes,
            syncs: st.syncs,
            bytes_written: st.bytes_written,
            buffered_bytes: st.appended_lsn - st.flushed_lsn,
            segments_compacted: st.segments_compacted,
            segments_compacted_sparse: st.segments_compacted_sparse,
            failed: st.failed,
            read_cache_bytes: self.read_cache.borrow().bytes() as u64,
            bytes_prewritten: st.bytes_prewritten,
        }
    }

    /// Whether the store is in the failed state (a fatal I/O error happened).
    pub fn is_failed(&self) -> bool {
        self.state.borrow().failed
    }

    /// Checks the internal accounting (for tests): live byte counts match the index.
    pub fn check_invariants(&self) {
        let st = self.state.borrow();
        if self.next_segment.borrow().is_some() {
            assert!(!st.segments.contains_key(&(st.active_id + 1)));
        }
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        st.index.for_each(|_, _, _, loc| {
            *live.entry(loc.segment).or_default() += loc.len as u64;
            let seg = &st.segments[&loc.segment];
            assert!(loc.offset as u64 + loc.len as u64 <= seg.len_bytes);
        });
        for (id, seg) in &st.segments {
            assert_eq!(
                seg.live_bytes,
                live.get(id).copied().unwrap_or(0),
                "segment {id}"
            );
        }
        assert!(st.synced_lsn <= st.flushed_lsn && st.flushed_lsn <= st.appended_lsn);
        assert_eq!(st.buffer_file_offset % self.align_bytes as u64, 0);
        st.buffer.check_invariants();
    }

    /// Seals the active segment, syncs, writes hint files and closes the store.
    pub async fn close(self) -> Result<(), StorageError> {
        {
            let _io = self.io_lock.lock().await;
            let mut st = self.state.borrow_mut();
            if st.failed {
                return Err(StorageError::Failed);
            }
            if !st.rotation_pending {
                let seq = st.next_seq;
                st.next_seq += 1;
                Self::append_seal(&mut st, seq);
                st.rotation_pending = true;
            }
            st.active().sealed = true;
        }
        self.sync().await?;
        // A prewrite landing after the truncation would lengthen the file again.
        {
            let _io = self.io_lock.lock().await;
            self.wait_prewrite_locked().await;
        }
        // Give back the preallocated space after the last record.
        let (file, len) = {
            let st = self.state.borrow();
            let seg = &st.segments[&st.active_id];
            (seg.file.clone(), seg.len_bytes)
        };
        file.truncate(len).await?;
        file.sync_data().await.map_err(|e| {
            self.state.borrow_mut().failed = true;
            StorageError::SyncFailed(e)
        })?;
        self.stop_preparing_segments().await?;
        self.write_hint_files().await
    }
}

/// Marks the one task doing a job (the sync leader, `Store::sync_to`; a writer making
/// room, `Store::make_room`; the next segment's preparation, `prepare_next_segment`;
/// a compaction step): clears the mark and wakes the tasks waiting for the job (`done`)
/// however it ends, its future dropped included.
struct Claim<'a> {
    flag: &'a Cell<bool>,
    done: Option<&'a Notify>,
}

impl<'a> Claim<'a> {
    fn new(flag: &'a Cell<bool>, done: Option<&'a Notify>) -> Self {
        assert!(!flag.replace(true), "one task at a time");
        Claim { flag, done }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.flag.set(false);
        if let Some(done) = self.done {
            done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The choice of a compaction from the index (docs §7a): a mostly dead
    /// 64 MiB segment without markers qualifies at 100,000 keys; markers, a
    /// set too large to scan at once, too many keys, or too many live bytes
    /// each send it to the pass in file order.
    #[test]
    fn a_compaction_from_the_index_is_chosen_only_where_it_pays() {
        let seg = |live_bytes: u64, markers: u32| Segment {
            file: Rc::new(()),
            len_bytes: 64 << 20,
            live_bytes,
            min_seq: 0,
            sealed: true,
            has_hint: false,
            damaged: false,
            markers,
        };
        let one_percent = (64 << 20) / 100;
        assert!(sparse_pays(&seg(one_percent, 0), 100_000, 1_000));
        assert!(sparse_pays(&seg(0, 0), 100_000, SPARSE_SET_ENTRIES_MAX));
        assert!(
            !sparse_pays(&seg(one_percent, 1), 100_000, 1_000),
            "a marker"
        );
        assert!(
            !sparse_pays(&seg(one_percent, 0), 100_000, SPARSE_SET_ENTRIES_MAX + 1),
            "a set too large to scan without yielding"
        );
        // 32 bytes an entry: a million keys cost as much as the segment.
        assert!(!sparse_pays(&seg(0, 0), 1_100_000, 1_000), "too many keys");
        // Live bytes count four times: 13% live is over half the segment.
        assert!(!sparse_pays(&seg((64 << 20) * 13 / 100, 0), 1_000, 1_000));
        assert!(sparse_pays(&seg((64 << 20) * 12 / 100, 0), 1_000, 1_000));
    }

    #[test]
    fn rate_limiter_refills_at_its_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut limiter = CompactionRateLimiter::new(1_000_000, 100_000);
        assert_eq!(limiter.budget(t0), 100_000);
        limiter.consume(100_000);
        assert_eq!(limiter.budget(t0), 0);
        assert_eq!(limiter.budget(t0 + Duration::from_millis(10)), 10_000);
        limiter.consume(4_000);
        assert_eq!(limiter.budget(t0 + Duration::from_millis(10)), 6_000);
        assert_eq!(limiter.budget(t0 + Duration::from_secs(5)), 100_000);
    }
}
