//! antientropy: Merkle-tree anti-entropy between the replicas of a partition
//! and the safe collection of tombstones (Dynamo §4.7; design guide §4, §8).
//!
//! Job: keep, per partition per replica, a tictac Merkle tree of the stored
//! data (`tree.rs`), updated in O(1) by every write; periodically compare it
//! top-down with another primary's (`machine.rs`, messages in `message.rs`),
//! exchange the versions of the keys under differing leaves, and repair
//! **both** sides by merging through the `Replica` machine's per-key lock
//! (never by overwriting, §4.4). Collect a tombstone only when every other
//! primary was found to agree on its leaf after it was written and a grace
//! period passed.
//!
//! Invariants:
//! * sans-IO: the machine owns no socket, file, clock or random source;
//!   time comes in as `now_ms`, storage work goes out as `ScanRequest`s and
//!   `LocalAction`s, messages as `poll_transmit`. The glommio runtime and the
//!   simulator in `tests/sim/` drive the same code.
//! * a tree leaf holds the XOR of `entry_hash(key, version_hash)` over the
//!   **live** keys hashed to it; tombstones contribute nothing, so "equal
//!   leaves" means "no replica holds a live version the other lacks", which
//!   is exactly what tombstone collection needs (docs/anti-entropy.md §4);
//! * a tree takes part in an exchange only when no leaf is stale; a leaf
//!   recomputed from the store is installed only if no write touched it
//!   while the scan ran;
//! * a repair is a merge (`SiblingSet::merge`), and a purge happens only
//!   through `Replica::start_purge`, which refuses if the key changed;
//! * every message, batch and table is bounded (`*_MAX`).
//!
//! docs/anti-entropy.md describes the tree, the protocol, the tombstone rule
//! and the failure cases.

mod machine;
mod message;
mod tree;

#[cfg(test)]
mod tests;

pub use machine::{AaeConfig, AntiEntropy, LocalAction, ScanRequest};
pub use message::{AaeMessage, KeyVersion, RepairEntry};
pub use tree::{RehashOutcome, Tree};

use bytes::Bytes;

use crate::storage::{Disk, Namespace, RecordKind, StorageError, Store, StoredRecord};

/// Leaf buckets per partition tree.
pub const LEAVES: usize = 1024;
/// Inner hashes per tree (each over `LEAVES_PER_BRANCH` leaves).
pub const BRANCHES: usize = 32;
/// Leaves under one branch.
pub const LEAVES_PER_BRANCH: usize = LEAVES / BRANCHES;
/// The most keys one `Keys`, `Want` or `Repair` message carries (also the
/// most keys one exchange compares: its rate limit).
pub const KEYS_PER_MESSAGE_MAX: usize = 4096;
/// A `Repair` message is cut after about this many bytes (one entry may be
/// larger: a sibling set up to the replica layer's bound).
pub const REPAIR_MESSAGE_BYTES_TARGET: usize = 1 << 20;
/// Exchanges one shard answers at once.
pub const RESPONDERS_MAX: usize = 64;
/// Tombstones one shard tracks per partition for collection.
pub const TOMBSTONES_TRACKED_MAX: usize = 1 << 20;

/// The leaf bucket of a key: the low bits of its placement hash (the
/// partition uses the high bits, so keys of one partition spread evenly).
pub fn key_leaf(key: &[u8]) -> u16 {
    hash_leaf(crate::ring::key_hash(key))
}

/// `key_leaf` of a key whose placement hash (`ring::key_hash`) the caller has.
pub fn hash_leaf(hash: u128) -> u16 {
    (hash as u64 & (LEAVES as u64 - 1)) as u16
}

/// The hash of a stored sibling set (its canonical encoding, as stored).
pub fn version_hash(payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(payload)
}

/// A key's contribution to its leaf.
pub fn entry_hash(key: &[u8], version_hash: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, version_hash)
}

/// What the tree needs to know of one stored record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub version_hash: u64,
    /// False when every sibling is a tombstone.
    pub live: bool,
}

impl Entry {
    /// The entry of a record about to be written.
    pub fn of_payload(payload: &[u8], all_tombstones: bool) -> Entry {
        Entry {
            version_hash: version_hash(payload),
            live: !all_tombstones,
        }
    }

    /// The entry of a stored record.
    pub fn of_record(record: &StoredRecord) -> Entry {
        Entry {
            version_hash: version_hash(&record.payload),
            live: record.kind == RecordKind::Value,
        }
    }
}

/// Which keys of a partition a scan reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanFilter {
    /// Every key (a tree build).
    All,
    /// Keys hashed to these leaves.
    Leaves(Vec<u16>),
    /// Exactly these keys (absent ones are left out of the answer).
    Keys(Vec<Bytes>),
}

/// One key found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    pub key: Bytes,
    pub version_hash: u64,
    pub live: bool,
    /// The stored sibling set, when the scan asked for payloads.
    pub payload: Option<Bytes>,
}

/// Counters of one shard's anti-entropy (the runtime exports them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AaeStats {
    pub exchanges_started: u64,
    /// Comparisons (either side) that found the trees equal.
    pub exchanges_in_sync: u64,
    /// Comparisons (either side) that found and repaired differences.
    pub exchanges_repaired: u64,
    pub exchanges_timed_out: u64,
    /// Stored sets sent to a peer to merge.
    pub keys_sent: u64,
    /// Sets received from peers and merged.
    pub keys_received: u64,
    /// Bytes of anti-entropy messages sent (counted by the driver).
    pub bytes_sent: u64,
    pub trees_built: u64,
    pub leaves_rehashed: u64,
    /// Rehashed leaves whose hash had drifted from the store.
    pub leaves_corrected: u64,
    /// Tombstones handed to the replica machine for purging.
    pub tombstones_purged: u64,
    /// Damaged records asked from the other primaries.
    pub corrupt_keys_requested: u64,
}

/// `admin aae`: one partition on one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Whether the tree is built (no stale leaf).
    pub ready: bool,
    /// Tombstones waiting for collection.
    pub tombstones: usize,
    pub peers: Vec<PeerStatus>,
}

/// `admin aae`: this replica and one other primary of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub peer: crate::membership::NodeId,
    /// How long ago the last comparison finished (`None`: never).
    pub last_compared_ms_ago: Option<u64>,
    /// Whether the last comparison found the trees equal.
    pub in_sync: bool,
    /// Keys repaired (either way) by comparisons with this peer.
    pub keys_repaired: u64,
}

/// The data keys of `partition` that pass `filter` (from the store's
/// in-memory index; no I/O).
pub fn scan_keys<D: Disk>(store: &Store<D>, partition: u32, filter: &ScanFilter) -> Vec<Bytes> {
    match filter {
        ScanFilter::All => store.keys(Namespace::Data, partition),
        ScanFilter::Leaves(leaves) => {
            let mut wanted = [false; LEAVES];
            for leaf in leaves {
                wanted[*leaf as usize] = true;
            }
            let mut keys = store.keys(Namespace::Data, partition);
            keys.retain(|key| wanted[key_leaf(key) as usize]);
            keys
        }
        ScanFilter::Keys(keys) => keys.clone(),
    }
}

/// Reads one key for a scan. A damaged record is left out (the store
/// reports it in `corrupt_keys`, and the driver asks peers for it).
pub async fn scan_one<D: Disk>(
    store: &Store<D>,
    partition: u32,
    key: Bytes,
    payloads: bool,
) -> Result<Option<Scanned>, StorageError> {
    match store.get(Namespace::Data, partition, &key).await {
        Ok(Some(record)) => {
            let entry = Entry::of_record(&record);
            Ok(Some(Scanned {
                key,
                version_hash: entry.version_hash,
                live: entry.live,
                payload: payloads.then_some(record.payload),
            }))
        }
        Ok(None) | Err(StorageError::Corrupt { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A whole scan without yielding (the simulator; every `MemDisk` future
/// completes at once). The runtime loops over `scan_keys` / `scan_one`
/// itself so that it can yield.
pub async fn perform_scan<D: Disk>(
    store: &Store<D>,
    request: &ScanRequest,
) -> Result<Vec<Scanned>, StorageError> {
    let mut out = Vec::new();
    for key in scan_keys(store, request.partition, &request.filter) {
        if let Some(scanned) = scan_one(store, request.partition, key, request.payloads).await? {
            out.push(scanned);
        }
    }
    Ok(out)
}

/// Performs one of the replica machine's storage requests (the shared
/// `replica::perform_io`) and keeps the anti-entropy tree in step with it:
/// a data write or purge is bracketed by `write_started` / `write_finished`,
/// with the key's previous entry read just before (usually from the write
/// buffer or the read cache, where the replica's own read left it). `now`
/// is asked when the write has finished: a tombstone's age starts when the
/// tree stopped counting the value it replaced.
pub async fn perform_io_observed<D: Disk>(
    store: &Store<D>,
    aae: &std::cell::RefCell<AntiEntropy>,
    now: impl Fn() -> u64,
    io: crate::replica::IoRequest,
) -> (
    crate::replica::IoId,
    Result<crate::replica::IoResult, StorageError>,
) {
    use crate::replica::IoRequest;
    let (partition, key, new) = match &io {
        IoRequest::Write {
            namespace: Namespace::Data,
            partition,
            key,
            payload,
            all_tombstones,
            ..
        } => (
            *partition,
            key.clone(),
            Some(Entry::of_payload(payload, *all_tombstones)),
        ),
        IoRequest::Delete {
            namespace: Namespace::Data,
            partition,
            key,
            ..
        } => (*partition, key.clone(), None),
        _ => return crate::replica::perform_io(store, io).await,
    };
    let leaf = key_leaf(&key);
    aae.borrow_mut().write_started_at(partition, leaf);
    let old = match store.get(Namespace::Data, partition, &key).await {
        Ok(record) => Some(record.as_ref().map(Entry::of_record)),
        Err(_) => None,
    };
    observe_write(store, aae, now, io, (partition, leaf), key, old, new).await
}

/// `perform_io_observed` for a data write (`IoRequest::Write` in
/// `Namespace::Data`) whose caller read the key's stored record in the same
/// synchronous step, with no await in between: `old` is that record's entry
/// (`None`: absent), so the store is not asked for it a second time.
pub async fn perform_write_observed<D: Disk>(
    store: &Store<D>,
    aae: &std::cell::RefCell<AntiEntropy>,
    now: impl Fn() -> u64,
    io: crate::replica::IoRequest,
    old: Option<Entry>,
) -> (
    crate::replica::IoId,
    Result<crate::replica::IoResult, StorageError>,
) {
    let crate::replica::IoRequest::Write {
        io: id,
        namespace: Namespace::Data,
        partition,
        key,
        payload,
        all_tombstones,
        durable,
    } = io
    else {
        panic!("perform_write_observed is for data writes only");
    };
    let new = Some(Entry::of_payload(&payload, all_tombstones));
    let leaf = key_leaf(&key);
    aae.borrow_mut().write_started_at(partition, leaf);
    let result = crate::replica::perform_write(
        store,
        Namespace::Data,
        partition,
        &key,
        payload,
        all_tombstones,
        durable,
    )
    .await;
    let outcome = match &result {
        Ok(()) => Ok(new),
        Err(_) => Err(()),
    };
    aae.borrow_mut()
        .write_finished_at(now(), partition, leaf, &key, Some(old), outcome);
    (id, result.map(|()| crate::replica::IoResult::Done))
}

/// A data write of `key`'s new set, as `write_observed_now` takes it.
#[derive(Clone, Copy)]
pub struct DataWrite<'a> {
    pub partition: u32,
    pub key: &'a [u8],
    pub all_tombstones: bool,
    pub durable: bool,
}

/// `perform_write_observed`, when the store's write finishes without
/// waiting (`Store::put_now`): the tree is told of the write's start and
/// end in the same synchronous step. The key is borrowed (an in-place
/// put's, from the request or its frame). `Err`: nothing was done, and the
/// payload is given back for `perform_write_observed`.
pub fn write_observed_now<D: Disk>(
    store: &Store<D>,
    aae: &std::cell::RefCell<AntiEntropy>,
    now: impl Fn() -> u64,
    write: DataWrite<'_>,
    payload: Bytes,
    old: Option<Entry>,
) -> Result<Result<crate::replica::IoResult, StorageError>, Bytes> {
    let DataWrite {
        partition,
        key,
        all_tombstones,
        durable,
    } = write;
    let new = Some(Entry::of_payload(&payload, all_tombstones));
    let result = store.put_now(
        Namespace::Data,
        partition,
        key,
        RecordKind::of(all_tombstones),
        payload,
        crate::storage::Durability::of(durable),
    )?;
    // No await between the two: nothing can observe the leaf in between.
    let leaf = key_leaf(key);
    let outcome = match &result {
        Ok(()) => Ok(new),
        Err(_) => Err(()),
    };
    aae.borrow_mut()
        .write_done_at(now, partition, leaf, key, Some(old), outcome);
    Ok(result.map(|()| crate::replica::IoResult::Done))
}

/// Performs a data write or purge that `write_started` announced, and tells
/// the tree how it ended.
#[allow(clippy::too_many_arguments)]
async fn observe_write<D: Disk>(
    store: &Store<D>,
    aae: &std::cell::RefCell<AntiEntropy>,
    now: impl Fn() -> u64,
    io: crate::replica::IoRequest,
    (partition, leaf): (u32, u16),
    key: Bytes,
    old: Option<Option<Entry>>,
    new: Option<Entry>,
) -> (
    crate::replica::IoId,
    Result<crate::replica::IoResult, StorageError>,
) {
    let (id, result) = crate::replica::perform_io(store, io).await;
    let outcome = match &result {
        Ok(_) => Ok(new),
        Err(_) => Err(()),
    };
    aae.borrow_mut()
        .write_finished_at(now(), partition, leaf, &key, old, outcome);
    (id, result)
}
