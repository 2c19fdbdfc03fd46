//! A bounded cache of verified records, each in a numbered slot that the
//! key's index entry names (`CacheSlot`), with the location it caches.
//!
//! A record never changes once written and a location is never reused
//! (segment ids only grow), so the cache needs no invalidation: a put writes a
//! new record at a new location and moves the index there; purges, partition
//! drops and compaction move or remove index entries, so stale locations are
//! simply never asked for again and age out. A slot is a hit only while it
//! still holds the location the index entry points at, so an entry whose slot
//! was evicted (and perhaps reused for another record) simply misses. Eviction
//! is first in, first out, bounded by payload bytes. A put that supersedes a
//! cached record drops it at once (`forget`), so a key that is overwritten
//! holds one entry, not one per version until eviction: an overwrite-heavy
//! shard keeps its live records in the cache instead of a cache three parts
//! dead. The freed slot is the next one `insert` hands out, so a key that is
//! overwritten keeps its slot, and its put touches the one slot its read of
//! the current version brought into the CPU caches.
//!
//! Why slots and not a map keyed by location: a read-modify-write put reads
//! the key's current record and then writes a new one. Keyed by location,
//! that is three random hash-table probes (the read, the forget, the insert),
//! each a likely CPU cache miss with 100,000 keys (BENCHMARKS §2m); through
//! the slot the index entry names, it is one array element.
//!
//! Why a cache at all: reads that miss the write buffer cost one positioned
//! read, and on a machine where per-request kernel work decides throughput
//! (design guide §11), a hot key should cost a lookup instead.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{RecordKind, StoredRecord};

/// Bookkeeping bytes charged per entry on top of its payload.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// How much of a record's payload `prefetch_record` asks for ahead: 32 cache
/// lines, so a value of up to about 2 KiB is in cache when its GET copies it
/// into the reply (with 256 bytes, the copy of 1 KiB values was 11.6% of a
/// shard's samples, all waiting on memory; 2048 gave 17-21% more 1 KiB GETs
/// at pipeline 16, BENCHMARKS.md §2x). A larger payload's copy is sequential,
/// which the CPU's own prefetcher follows.
const PREFETCH_PAYLOAD_BYTES: usize = 2048;

/// Stale names `order` may hold beyond twice the entries before they are dropped.
const ORDER_SLACK: usize = 64;

/// `(segment id, offset)` of a record.
pub(crate) type RecordLocation = (u32, u32);

/// The number of a cache slot, as an index entry keeps it (4 bytes, so that
/// the index stays within its memory bound). `NONE` names no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheSlot(pub(crate) u32);

impl CacheSlot {
    /// No slot: the record is not cached (or was never looked for).
    pub(crate) const NONE: CacheSlot = CacheSlot(u32::MAX);
}

/// A cached record.
struct Slot {
    /// Where the record lives: a slot answers only for this location.
    location: RecordLocation,
    /// Kept as the store hands it out, so that a read can borrow it.
    record: StoredRecord,
}

pub(crate) struct ReadCache {
    /// The slots; `None` is free (and named in `free`). Never longer than the
    /// most records held at once, which the byte bound limits to
    /// `bytes_max / ENTRY_OVERHEAD_BYTES`.
    slots: Vec<Option<Slot>>,
    /// Free slots, the last freed on top: `insert` reuses it first.
    free: Vec<u32>,
    /// Records held.
    len: usize,
    /// Per slot, how many records it has let go of (evicted or forgotten):
    /// a name in `order` taken with the slot's current stamp is of the
    /// record it holds. Dense (4 bytes a slot), so that dropping stale names
    /// reads this and not the slots, many times as large, at random.
    stamps: Vec<u32>,
    /// Insertion order, for eviction, as (slot, its stamp then); may name
    /// slots whose record was evicted or forgotten (the stamp has moved on).
    /// Bounded: at most `2 x len + ORDER_SLACK` names (`insert` drops the
    /// stale ones when it grows past that), so a slot is reused far fewer
    /// than 2^32 times while a stale name of it is kept: a stamp never
    /// comes round to a stale name's.
    order: VecDeque<(CacheSlot, u32)>,
    bytes: usize,
    bytes_max: usize,
}

impl ReadCache {
    pub(crate) fn new(bytes_max: usize) -> ReadCache {
        ReadCache {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            stamps: Vec::new(),
            order: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// The slot's record if it still holds the one at `location`.
    fn slot(&self, slot: CacheSlot, location: RecordLocation) -> Option<&Slot> {
        self.slots
            .get(slot.0 as usize)?
            .as_ref()
            .filter(|s| s.location == location)
    }

    /// Starts loading `slot`'s element into the CPU caches, without reading
    /// it, and, for a write, its stamp, which the write bumps when it
    /// replaces the record (`drop_slot`): a random 4-byte read, a cache miss
    /// per put otherwise (BENCHMARKS.md §2zk).
    pub(crate) fn prefetch_slot(&self, slot: CacheSlot, for_write: bool) {
        if let Some(element) = self.slots.get(slot.0 as usize) {
            crate::storage::prefetch_read((element as *const Option<Slot>).cast());
        }
        if for_write {
            if let Some(stamp) = self.stamps.get(slot.0 as usize) {
                crate::storage::prefetch_read((stamp as *const u32).cast());
            }
        }
    }

    /// Starts loading the record `slot` holds, if it holds `location`'s
    /// (reading the slot, which `prefetch_slot` loaded): its first
    /// `PREFETCH_PAYLOAD_BYTES` and its last byte. A GET copies the payload
    /// whole, and a PUT hashes the old one (`antientropy::version_hash`:
    /// xxh3 reads a short input from both ends).
    pub(crate) fn prefetch_record(&self, slot: CacheSlot, location: RecordLocation) {
        if let Some(s) = self.slot(slot, location) {
            let payload = &s.record.payload;
            let head = payload.len().min(PREFETCH_PAYLOAD_BYTES);
            for offset in (0..head).step_by(64) {
                crate::storage::prefetch_read(payload[offset..].as_ptr());
            }
            if let Some(last) = payload.last() {
                crate::storage::prefetch_read(last);
            }
        }
    }

    /// The record at `location`, if `slot` (from its index entry) holds it.
    pub(crate) fn get(&self, slot: CacheSlot, location: RecordLocation) -> Option<&StoredRecord> {
        self.slot(slot, location).map(|s| &s.record)
    }

    /// Whether `slot` holds the record at `location`.
    pub(crate) fn holds(&self, slot: CacheSlot, location: RecordLocation) -> bool {
        self.slot(slot, location).is_some()
    }

    /// Caches the record at `location`, which the cache does not hold, and
    /// returns its slot for the key's index entry (`CacheSlot::NONE` when it
    /// is not cached: a disabled cache, or a record too large).
    pub(crate) fn insert(
        &mut self,
        location: RecordLocation,
        kind: RecordKind,
        payload: Bytes,
    ) -> CacheSlot {
        let cost = payload.len() + ENTRY_OVERHEAD_BYTES;
        if cost > self.bytes_max / 8 {
            return CacheSlot::NONE; // A huge record would flush everything else out.
        }
        let record = Slot {
            location,
            record: StoredRecord { kind, payload },
        };
        let slot = match self.free.pop() {
            Some(free) => {
                let s = &mut self.slots[free as usize];
                debug_assert!(s.is_none(), "a free slot is empty");
                *s = Some(record);
                CacheSlot(free)
            }
            None => {
                let slot = CacheSlot(u32::try_from(self.slots.len()).expect("slots fit a u32"));
                assert_ne!(slot, CacheSlot::NONE);
                self.slots.push(Some(record));
                self.stamps.push(0);
                slot
            }
        };
        self.len += 1;
        self.bytes += cost;
        self.order.push_back((slot, self.stamps[slot.0 as usize]));
        if self.order.len() > 2 * self.len + ORDER_SLACK {
            // Most names are of records let go of: drop them in one pass, in
            // order (amortised: at least half the names go each time).
            let stamps = &self.stamps;
            self.order
                .retain(|&(slot, stamp)| stamps[slot.0 as usize] == stamp);
        }
        while self.bytes > self.bytes_max {
            let Some((oldest, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.stamps[oldest.0 as usize] == stamp {
                self.drop_slot(oldest);
            }
        }
        debug_assert!(self.bytes <= self.bytes_max);
        // The record just cached is the newest: eviction took older ones
        // (it is at most an eighth of the bound).
        debug_assert!(self.holds(slot, location));
        slot
    }

    /// Drops the record at `location` if `slot` holds it: a newer record of
    /// its key has superseded it, or it is evicted.
    pub(crate) fn forget(&mut self, slot: CacheSlot, location: RecordLocation) {
        if self.slot(slot, location).is_some() {
            self.drop_slot(slot);
        }
    }

    /// Empties `slot`, which holds a record, and frees it.
    fn drop_slot(&mut self, slot: CacheSlot) {
        let record = self.slots[slot.0 as usize]
            .take()
            .expect("the slot holds a record");
        self.stamps[slot.0 as usize] = self.stamps[slot.0 as usize].wrapping_add(1);
        self.bytes -= record.record.payload.len() + ENTRY_OVERHEAD_BYTES;
        self.len -= 1;
        self.free.push(slot.0);
    }

    /// Records held (for tests and bounds).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
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
        let mut slots = Vec::new();
        for i in 0..20u32 {
            slots.push(cache.insert(
                (1, i * 200),
                RecordKind::Value,
                Bytes::from(vec![i as u8; 100]),
            ));
            assert!(cache.bytes() <= 10 * (100 + ENTRY_OVERHEAD_BYTES));
        }
        assert_eq!(cache.len(), 10);
        assert!(
            cache.get(slots[0], (1, 0)).is_none(),
            "the oldest entry was evicted"
        );
        assert_eq!(
            cache.get(slots[19], (1, 19 * 200)).unwrap().payload[0],
            19,
            "the newest is kept"
        );
        // The oldest's slot, freed when the eleventh record was cached, went
        // to the twelfth: a slot answers only for the location it holds, so
        // the evicted record's index entry, still naming the slot, misses
        // instead of reading another key's record.
        assert_eq!(slots[0], slots[11]);
        assert!(cache.get(slots[0], (1, 0)).is_none());
        assert_eq!(cache.get(slots[11], (1, 11 * 200)).unwrap().payload[0], 11);
        // No slot, or a slot never handed out, holds nothing.
        assert!(cache.get(CacheSlot::NONE, (1, 19 * 200)).is_none());
        assert!(cache.get(CacheSlot(1_000), (1, 19 * 200)).is_none());
        // A disabled cache holds nothing.
        let mut off = ReadCache::new(0);
        let slot = off.insert((1, 0), RecordKind::Value, Bytes::from_static(b"x"));
        assert_eq!(slot, CacheSlot::NONE);
        assert!(off.get(slot, (1, 0)).is_none());
    }

    #[test]
    fn forgotten_records_free_their_bytes_and_the_order_stays_bounded() {
        // One key overwritten a million times: each put forgets the record
        // it supersedes and caches its own, as `Store::append_put` does.
        let mut cache = ReadCache::new(1 << 20);
        let mut previous: Option<(CacheSlot, RecordLocation)> = None;
        for i in 0..1_000_000u32 {
            let location = (1 + i / 65_536, (i % 65_536) * 160);
            if let Some((slot, old)) = previous {
                cache.forget(slot, old);
            }
            let slot = cache.insert(location, RecordKind::Value, Bytes::from_static(&[7; 100]));
            // The key keeps its slot.
            assert_eq!(slot, CacheSlot(0));
            previous = Some((slot, location));
            assert_eq!(cache.len(), 1);
            assert_eq!(cache.bytes(), 100 + ENTRY_OVERHEAD_BYTES);
            assert!(cache.order.len() <= 2 * (cache.len() + 1) + ORDER_SLACK);
        }
        let (slot, live) = previous.unwrap();
        assert!(cache.get(slot, live).is_some(), "the live record stays");
        // Forgetting an absent location, or a slot that holds another one,
        // changes nothing.
        cache.forget(CacheSlot(9_999), (9_999, 0));
        cache.forget(slot, (9_999, 0));
        assert_eq!(cache.bytes(), 100 + ENTRY_OVERHEAD_BYTES);
        assert!(cache.get(slot, live).is_some());
        // Eviction still goes oldest first, past the names of forgotten
        // records (the even ones here). Eight entries fit (a record over an
        // eighth of the bound is not cached at all).
        let mut cache = ReadCache::new(8 * (100 + ENTRY_OVERHEAD_BYTES));
        let mut slots = Vec::new();
        for i in 0..16u32 {
            let slot = cache.insert((1, i), RecordKind::Value, Bytes::from(vec![i as u8; 100]));
            slots.push(slot);
            if i % 2 == 0 {
                cache.forget(slot, (1, i));
            }
        }
        assert_eq!(cache.len(), 8);
        // A ninth evicts the oldest live record, 1.
        let slot = cache.insert((1, 16), RecordKind::Value, Bytes::from(vec![16; 100]));
        slots.push(slot);
        assert!(cache.get(slots[1], (1, 1)).is_none());
        for live in [3, 5, 7, 9, 11, 13, 15, 16] {
            let record = cache.get(slots[live], (1, live as u32)).expect("live");
            assert_eq!(record.payload[0], live as u8);
        }
        assert_eq!(cache.bytes(), 8 * (100 + ENTRY_OVERHEAD_BYTES));
        // Every slot handed out is one of at most nine (eight live and the
        // one each forget frees for the next insert): the slots stay as
        // many as the records held at once, not as the records ever cached.
        assert!(cache.slots.len() <= 9, "{}", cache.slots.len());
    }
}
