//! storage: the per-shard, append-only, log-structured store (Bitcask-style).
//!
//! Job: keep one shard's records durable and findable. A record is an opaque payload
//! (the versioning layer's sibling set) under `(namespace, partition, key)`. Writes are
//! appended to a write buffer and flushed to log segments; an in-memory index (keydir)
//! points at each key's latest record; recovery rebuilds the index from hint files or by
//! scanning; compaction rewrites live records out of mostly-dead segments.
//! The byte-level format and the crash-case analysis are in `docs/storage.md`.
//!
//! Invariants:
//! * Storage knows nothing of the ring or the network: `partition` is an opaque `u32`.
//! * Sans-IO: no clocks (`flush_due(now)` takes the time), all I/O through the `Disk`
//!   trait; the runtime supplies `GlommioDisk`, tests and the simulator `MemDisk`.
//! * Nothing is acknowledged as durable before an `fdatasync` that covers it; after a
//!   failed `fdatasync` the store accepts no writes.
//! * A record is trusted only after its CRCs check; damage in the middle of a log is
//!   reported and its key marked for repair, never skipped by an unchecked length.
//! * Tombstones are removed only by an explicit `purge` from the layer above.
//! * A `Store` lives on one executor: state in a `RefCell`, never borrowed across an
//!   `.await`.
//!
//! Driving it in tests or in the simulator (every `MemDisk` future completes at once):
//!
//! ```
//! use dynakv::storage::{block_on, Durability, MemDisk, Namespace, RecordKind, Store, StoreConfig};
//! let disk = MemDisk::new();
//! let (store, _report) = block_on(Store::open(disk.clone(), StoreConfig::default())).unwrap();
//! let payload = bytes::Bytes::from_static(b"v");
//! block_on(store.put(Namespace::Data, 7, b"k", RecordKind::Value, payload, Durability::Durable)).unwrap();
//! let got = block_on(store.get(Namespace::Data, 7, b"k")).unwrap().unwrap();
//! assert_eq!(&got.payload[..], b"v");
//! ```

#![allow(async_fn_in_trait)]

mod cache;
mod disk;
mod error;
mod hint;
mod index;
mod keytable;
mod memdisk;
mod record;
mod store;
mod sync;
mod wbuf;

pub use disk::{Disk, DiskFile, IoBuffer};
pub use error::StorageError;
pub use memdisk::{CrashMode, DiskOp, MemBuffer, MemDisk, MemFile, MEM_DISK_ALIGNMENT_BYTES};
pub use store::{CompactionRateLimiter, Prefetched, Store};
pub use sync::block_on;

use std::time::Duration;

/// Separate keyspaces in one store: replica data and hints held for other nodes (§4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Namespace {
    /// Data of partitions this shard replicates.
    Data = 0,
    /// Hinted-handoff writes held on behalf of an unreachable primary.
    Hint = 1,
}

impl Namespace {
    pub(crate) fn from_u8(v: u8) -> Option<Namespace> {
        match v {
            0 => Some(Namespace::Data),
            1 => Some(Namespace::Hint),
            _ => None,
        }
    }
}

/// What a stored payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A sibling set with at least one live value.
    Value,
    /// A sibling set whose values are all deletes; stays until `purge`.
    Tombstone,
}

impl RecordKind {
    /// `Tombstone` for a set whose values are all deletes, else `Value`.
    pub fn of(all_tombstones: bool) -> Self {
        if all_tombstones {
            RecordKind::Tombstone
        } else {
            RecordKind::Value
        }
    }
}

/// How long a write waits before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged once it is in the write buffer (§6.1).
    Buffered,
    /// Acknowledged after an `fdatasync` covering it (group commit).
    Durable,
}

impl Durability {
    /// `Durable` when the write must be synced before it is acknowledged.
    pub fn of(durable: bool) -> Self {
        if durable {
            Durability::Durable
        } else {
            Durability::Buffered
        }
    }
}

/// Bounds and tuning of one store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest key accepted (bytes); at most 65535.
    pub max_key_bytes: usize,
    /// Largest payload accepted (bytes).
    pub max_value_bytes: usize,
    /// A segment is sealed when the next record would not fit (bytes); at most 4 GiB.
    pub segment_size_bytes: u64,
    /// The write buffer is flushed when it holds this many bytes.
    pub write_buffer_bytes: usize,
    /// The write buffer is a list of DMA buffers ("pieces") of this many bytes (a
    /// multiple of the disk's alignment); a flush of a full buffer writes its whole
    /// pieces, one `write_at` each (docs/storage.md §4).
    pub write_piece_bytes: usize,
    /// `flush_due` turns true when buffered data has waited this long.
    pub flush_interval: Duration,
    /// Most flush writes of the active segment in flight at once (at least 1). A flush
    /// started by a full buffer waits for the oldest write only at this bound
    /// (docs/storage.md §4).
    pub flushes_in_flight_max: usize,
    /// Segments whose dead fraction reaches this are compacted.
    pub compaction_dead_fraction: f64,
    /// Whether a mostly dead segment without markers may be compacted from
    /// the index, reading only its live records (docs §7a); `false`: every
    /// segment is read whole, in file order.
    pub compaction_from_index: bool,
    /// Whether the segment sealed last is left until the next one is sealed
    /// before it may be compacted (docs §7b); `false`: it may be at once.
    pub compaction_spares_youngest: bool,
    /// Bytes of recently read records kept in memory (`cache.rs`); 0 disables it.
    pub read_cache_bytes: usize,
    /// Durable writes keep up to this many bytes of the active segment after its records
    /// written with zeros (whole `write_piece_bytes` chunks, one write in flight at a
    /// time), so that a group commit's write and `fdatasync` land on blocks the file
    /// system already counts as written. Into a preallocated (unwritten) range, every
    /// round's `fdatasync` also commits the file system's extent conversion. 0
    /// disables it (docs/storage.md §4).
    pub prewrite_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            segment_size_bytes: 64 << 20,
            write_buffer_bytes: 1 << 20,
            write_piece_bytes: wbuf::PIECE_BYTES_DEFAULT,
            flush_interval: Duration::from_millis(1),
            flushes_in_flight_max: 2,
            compaction_dead_fraction: 0.5,
            compaction_from_index: true,
            compaction_spares_youngest: true,
            read_cache_bytes: 32 << 20,
            prewrite_bytes: 1 << 20,
        }
    }
}

/// A record returned by `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Value or tombstone.
    pub kind: RecordKind,
    /// The opaque sibling set.
    pub payload: bytes::Bytes,
}

/// A damaged byte range found by recovery in the middle of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Segment number.
    pub segment: u32,
    /// Offset of the damage in the segment.
    pub offset: u64,
    /// Bytes skipped up to the next valid record.
    pub len: u64,
    /// The record's key when its header checksum held (then it is marked for repair).
    pub key: Option<(Namespace, u32, bytes::Bytes)>,
}

/// What `open` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Live keys in the rebuilt index.
    pub keys: u64,
    /// Whether at least one hint file was used.
    pub used_hint_files: bool,
    /// Segments read through their hint file.
    pub hint_files_used: u32,
    /// Segments scanned record by record.
    pub segments_scanned: u32,
    /// Bytes cut off torn or damaged segment tails.
    pub truncated_tail_bytes: u64,
    /// Damage found in the middle of segments.
    pub corrupt: Vec<CorruptRecord>,
}

/// Counters and gauges of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live keys (both namespaces).
    pub keys: u64,
    /// Bytes of records the index points at.
    pub live_bytes: u64,
    /// Bytes of segments not pointed at (overwritten, purged, markers, seals).
    pub dead_bytes: u64,
    /// Segment files, including the active one.
    pub segments: u32,
    /// Completed flushes of the write buffer.
    pub flushes: u64,
    /// Completed group-commit rounds (each `fdatasync`s every dirty segment).
    pub syncs: u64,
    /// Bytes handed to the disk by flushes (including alignment padding and rewrites).
    pub bytes_written: u64,
    /// Bytes currently in the write buffer.
    pub buffered_bytes: u64,
    /// Segments removed by compaction.
    pub segments_compacted: u64,
    /// Of those, segments compacted from the index alone: mostly dead, only
    /// the stretches around their live records read (docs/storage.md §7a).
    pub segments_compacted_sparse: u64,
    /// Whether the store is in the failed state.
    pub failed: bool,
    /// Bytes held by the read cache.
    pub read_cache_bytes: u64,
    /// Bytes of zeros issued ahead of the active segment's records
    /// (`StoreConfig::prewrite_bytes`; counted when the write starts, whatever
    /// its outcome).
    pub bytes_prewritten: u64,
}

/// What one `compact_step` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionProgress {
    /// Segment bytes read and examined, and, for a compaction from the
    /// index (docs §7a), 32 bytes for each index entry scanned.
    pub bytes_examined: u64,
    /// Live bytes copied into the active segment.
    pub bytes_copied: u64,
    /// Segments deleted.
    pub segments_removed: u32,
    /// Whether compaction work remains.
    pub more: bool,
}

/// A hint to load the cache line at `ptr` into the CPU caches; it never
/// faults and has no other effect.
#[inline(always)]
pub(crate) fn prefetch_read(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache: it reads nothing the program
    // sees and does not fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}
