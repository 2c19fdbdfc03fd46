//! The in-memory index (Bitcask's keydir): for every live key, where its latest record
//! is. Grouped by `(namespace, partition)` so that one partition can be listed, streamed
//! and dropped without touching the others.
//!
//! Memory: one heap block per key, `[segment u32][offset u32][len u32][key bytes]`,
//! held in an `ahash` set that hashes and compares only the key part, so the table slot
//! is a single fat pointer (16 bytes) and the whole cost is about key length + 40 bytes.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use super::Namespace;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

const LOC_BYTES: usize = 12;

/// One index entry: location and key in one allocation.
pub(crate) struct Entry(Box<[u8]>);

impl Entry {
    fn new(loc: Location, key: &[u8]) -> Entry {
        let mut v = Vec::with_capacity(LOC_BYTES + key.len());
        v.extend_from_slice(&loc.segment.to_le_bytes());
        v.extend_from_slice(&loc.offset.to_le_bytes());
        v.extend_from_slice(&loc.len.to_le_bytes());
        v.extend_from_slice(key);
        Entry(v.into_boxed_slice())
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.0[LOC_BYTES..]
    }

    pub(crate) fn location(&self) -> Location {
        let b = &self.0;
        Location {
            segment: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    fn set_location(&mut self, loc: Location) {
        self.0[0..4].copy_from_slice(&loc.segment.to_le_bytes());
        self.0[4..8].copy_from_slice(&loc.offset.to_le_bytes());
        self.0[8..12].copy_from_slice(&loc.len.to_le_bytes());
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly like `[u8]` so that lookups by `&[u8]` find the entry.
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

type PartitionSet = HashSet<Entry, ahash::RandomState>;

/// The keydir of one store.
#[derive(Default)]
pub(crate) struct Index {
    partitions: BTreeMap<(Namespace, u32), PartitionSet>,
    keys: u64,
}

impl Index {
    pub(crate) fn keys(&self) -> u64 {
        self.keys
    }

    pub(crate) fn get(&self, ns: Namespace, partition: u32, key: &[u8]) -> Option<Location> {
        self.partitions
            .get(&(ns, partition))?
            .get(key)
            .map(Entry::location)
    }

    /// Points `key` at `loc`; returns the previous location.
    pub(crate) fn insert(
        &mut self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        loc: Location,
    ) -> Option<Location> {
        let set = self.partitions.entry((ns, partition)).or_default();
        // A set hands out no `&mut` to its elements, so an update takes the entry out
        // and puts it back (the allocation is reused).
        if let Some(mut entry) = set.take(key) {
            let old = entry.location();
            entry.set_location(loc);
            set.insert(entry);
            return Some(old);
        }
        set.insert(Entry::new(loc, key));
        self.keys += 1;
        None
    }

    pub(crate) fn remove(&mut self, ns: Namespace, partition: u32, key: &[u8]) -> Option<Location> {
        let set = self.partitions.get_mut(&(ns, partition))?;
        let entry = set.take(key)?;
        self.keys -= 1;
        if set.is_empty() {
            self.partitions.remove(&(ns, partition));
        }
        Some(entry.location())
    }

    /// Removes a whole partition; returns the locations of its keys.
    pub(crate) fn drop_partition(&mut self, ns: Namespace, partition: u32) -> Vec<Location> {
        let Some(set) = self.partitions.remove(&(ns, partition)) else {
            return Vec::new();
        };
        self.keys -= set.len() as u64;
        set.iter().map(Entry::location).collect()
    }

    pub(crate) fn partition_keys(&self, ns: Namespace, partition: u32) -> Vec<bytes::Bytes> {
        self.partitions
            .get(&(ns, partition))
            .map(|set| {
                set.iter()
                    .map(|e| bytes::Bytes::copy_from_slice(e.key()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn partitions(&self, ns: Namespace) -> Vec<u32> {
        self.partitions
            .keys()
            .filter(|(n, _)| *n == ns)
            .map(|(_, p)| *p)
            .collect()
    }

    /// Every entry, for accounting after recovery.
    pub(crate) fn for_each(&self, mut f: impl FnMut(Namespace, u32, &[u8], Location)) {
        for ((ns, p), set) in &self.partitions {
            for e in set {
                f(*ns, *p, e.key(), e.location());
            }
        }
    }
}
