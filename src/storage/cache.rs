//! A bounded cache of verified records, keyed by their location in the log.
//!
//! A record never changes once written and a location is never reused
//! (segment ids only grow), so the cache needs no invalidation: a put writes a
//! new record at a new location and moves the index there; purges, partition
//! drops and compaction move or remove index entries, so stale locations are
//! simply never asked for again and age out. Eviction is first in, first out,
//! bounded by payload bytes.
//!
//! Why: reads that miss the write buffer cost one positioned read, and on a
//! machine where per-request kernel work decides throughput (design guide
//! §11), a hot key should cost a map lookup instead.

use std::collections::VecDeque;

use ahash::AHashMap;
use bytes::Bytes;

use super::RecordKind;

/// Bookkeeping bytes charged per entry on top of its payload.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// `(segment id, offset)` of a record.
pub(crate) type RecordLocation = (u32, u32);

pub(crate) struct ReadCache {
    entries: AHashMap<RecordLocation, (RecordKind, Bytes)>,
    /// Insertion order, for eviction; may name locations already evicted.
    order: VecDeque<RecordLocation>,
    bytes: usize,
    bytes_max: usize,
}

impl ReadCache {
    pub(crate) fn new(bytes_max: usize) -> ReadCache {
        ReadCache {
            entries: AHashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    pub(crate) fn get(&self, location: RecordLocation) -> Option<(RecordKind, Bytes)> {
        self.entries.get(&location).cloned()
    }

    pub(crate) fn insert(&mut self, location: RecordLocation, kind: RecordKind, payload: Bytes) {
        let cost = payload.len() + ENTRY_OVERHEAD_BYTES;
        if cost > self.bytes_max / 8 {
            return; // A huge record would flush everything else out.
        }
        if self.entries.insert(location, (kind, payload)).is_some() {
            return; // Same location, same immutable record: already charged.
        }
        self.bytes += cost;
        self.order.push_back(location);
        while self.bytes > self.bytes_max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, evicted)) = self.entries.remove(&oldest) {
                self.bytes -= evicted.len() + ENTRY_OVERHEAD_BYTES;
            }
        }
        debug_assert!(self.bytes <= self.bytes_max);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bound_and_evicts_oldest_first() {
        let mut cache = ReadCache::new(10 * (100 + ENTRY_OVERHEAD_BYTES));
        for i in 0..20u32 {
            cache.insert(
                (1, i * 200),
                RecordKind::Value,
                Bytes::from(vec![i as u8; 100]),
            );
            assert!(cache.bytes() <= 10 * (100 + ENTRY_OVERHEAD_BYTES));
        }
        assert!(cache.get((1, 0)).is_none(), "the oldest entry was evicted");
        assert_eq!(
            cache.get((1, 19 * 200)).unwrap().1[0],
            19,
            "the newest is kept"
        );
        // Re-inserting a present location charges nothing more.
        let before = cache.bytes();
        cache.insert((1, 19 * 200), RecordKind::Value, Bytes::from(vec![19; 100]));
        assert_eq!(cache.bytes(), before);
        // A disabled cache holds nothing.
        let mut off = ReadCache::new(0);
        off.insert((1, 0), RecordKind::Value, Bytes::from_static(b"x"));
        assert!(off.get((1, 0)).is_none());
    }
}
