//! A bounded cache of verified records, keyed by their location in the log.
//!
//! A record never changes once written and a location is never reused
//! (segment ids only grow), so the cache needs no invalidation: a put writes a
//! new record at a new location and moves the index there; purges, partition
//! drops and compaction move or remove index entries, so stale locations are
//! simply never asked for again and age out. Eviction is first in, first out,
//! bounded by payload bytes. A put that supersedes a cached record drops it
//! at once (`forget`), so a key that is overwritten holds one entry, not one
//! per version until eviction: an overwrite-heavy shard keeps its live records
//! in the cache instead of a cache three parts dead, and its map stays small
//! enough to stay in the CPU caches.
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

/// Stale names `order` may hold beyond twice the entries before they are dropped.
const ORDER_SLACK: usize = 64;

/// `(segment id, offset)` of a record.
pub(crate) type RecordLocation = (u32, u32);

pub(crate) struct ReadCache {
    entries: AHashMap<RecordLocation, (RecordKind, Bytes)>,
    /// Insertion order, for eviction; may name locations already evicted or
    /// forgotten. Bounded: at most `2 x entries + ORDER_SLACK` names (`insert`
    /// drops the stale ones when it grows past that).
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
        if self.order.len() > 2 * self.entries.len() + ORDER_SLACK {
            // Most names are of forgotten records: drop them in one pass, in
            // order (amortised: at least half the names go each time).
            let entries = &self.entries;
            self.order.retain(|location| entries.contains_key(location));
        }
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

    /// Drops the record at `location`, which a newer record of its key has
    /// superseded: nothing will ask for it again.
    pub(crate) fn forget(&mut self, location: RecordLocation) {
        if let Some((_, payload)) = self.entries.remove(&location) {
            self.bytes -= payload.len() + ENTRY_OVERHEAD_BYTES;
        }
    }

    /// Records held (for tests and bounds).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
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

    #[test]
    fn forgotten_records_free_their_bytes_and_the_order_stays_bounded() {
        // One key overwritten a million times: each put caches its record
        // and forgets the one before it, as `Store::append_put` does.
        let mut cache = ReadCache::new(1 << 20);
        let mut previous = None;
        for i in 0..1_000_000u32 {
            let location = (1 + i / 65_536, (i % 65_536) * 160);
            cache.insert(location, RecordKind::Value, Bytes::from_static(&[7; 100]));
            if let Some(old) = previous.replace(location) {
                cache.forget(old);
            }
            assert_eq!(cache.len(), 1);
            assert_eq!(cache.bytes(), 100 + ENTRY_OVERHEAD_BYTES);
            assert!(cache.order.len() <= 2 * (cache.len() + 1) + ORDER_SLACK);
        }
        assert!(
            cache.get(previous.unwrap()).is_some(),
            "the live record stays"
        );
        // Forgetting an absent location changes nothing.
        cache.forget((9_999, 0));
        assert_eq!(cache.bytes(), 100 + ENTRY_OVERHEAD_BYTES);
        // Eviction still goes oldest first, past the names of forgotten
        // records (the even ones here). Eight entries fit (a record over an
        // eighth of the bound is not cached at all).
        let mut cache = ReadCache::new(8 * (100 + ENTRY_OVERHEAD_BYTES));
        for i in 0..16u32 {
            cache.insert((1, i), RecordKind::Value, Bytes::from(vec![i as u8; 100]));
            if i % 2 == 0 {
                cache.forget((1, i));
            }
        }
        assert_eq!(cache.len(), 8);
        // A ninth evicts the oldest live record, 1.
        cache.insert((1, 16), RecordKind::Value, Bytes::from(vec![16; 100]));
        assert!(cache.get((1, 1)).is_none());
        for live in [3, 5, 7, 9, 11, 13, 15, 16] {
            assert!(cache.get((1, live)).is_some(), "{live}");
        }
        assert_eq!(cache.bytes(), 8 * (100 + ENTRY_OVERHEAD_BYTES));
    }
}
