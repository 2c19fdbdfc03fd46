//! The in-memory index (Bitcask's keydir): for every live key, where its latest record
//! is. Grouped by `(namespace, partition)` so that one partition can be listed, streamed
//! and dropped without touching the others.
//!
//! Memory: one heap block per key,
//! `[key_len u16][segment u32][offset u32][len u32][cache slot u32][key]`, its address
//! in an 8-byte slot of the partition's `KeyTable` (an open-addressing set, 0.4 to 0.8
//! full as keys are added; it never shrinks): 18 + key length bytes (a 16-byte-aligned
//! allocator block) plus 10 to 20 bytes of table per key.
//!
//! The entry names the read cache's slot of its record (`CacheSlot`), so that reading a
//! key's current record is one probe of this set and one array element, not a second
//! hash-table probe keyed by location (`cache.rs`).

use std::cell::Cell;
use std::ptr::NonNull;

use super::cache::CacheSlot;
use super::keytable::{Entry, EntryMut, KeyTable};
use super::Namespace;
use crate::ring::PartitionMap;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

type PartitionSet = KeyTable;

/// The keydir of one store.
#[derive(Default)]
pub(crate) struct Index {
    /// Per namespace (`Namespace as usize`), the set of each partition
    /// that has a key: a lookup is an index, not a search
    /// (`ring::PartitionMap`).
    sets: [PartitionMap<PartitionSet>; 2],
    keys: u64,
    /// The entry `get_cached` (or `locate`) found last. A read-modify-write put reads a
    /// key's record and then points the key at its new one, and
    /// `insert_with_slot` finds the entry here, with one comparison of the
    /// key (whose bytes the read just brought into the CPU caches), instead
    /// of hashing the key and probing the set again. Cleared whenever an
    /// entry is dropped (`remove`, `remove_set`), so it always points at a
    /// live entry: entries never move (a set holds thin pointers to them).
    last: Cell<Option<LastFound>>,
}

/// An entry `Index::get_cached` found, and where.
#[derive(Clone, Copy)]
struct LastFound {
    ns: Namespace,
    partition: u32,
    /// The entry's heap block (`Entry::0`), owned by its set.
    entry: NonNull<u8>,
}

impl Index {
    pub(crate) fn keys(&self) -> u64 {
        self.keys
    }

    fn set(&self, ns: Namespace, partition: u32) -> Option<&PartitionSet> {
        self.sets[ns as usize].get(partition)
    }

    fn set_mut(&mut self, ns: Namespace, partition: u32) -> Option<&mut PartitionSet> {
        self.sets[ns as usize].get_mut(partition)
    }

    fn set_or_default(&mut self, ns: Namespace, partition: u32) -> &mut PartitionSet {
        self.sets[ns as usize].get_or_insert_with(partition, PartitionSet::default)
    }

    fn remove_set(&mut self, ns: Namespace, partition: u32) -> Option<PartitionSet> {
        // The set's entries go with it.
        self.last.set(None);
        self.sets[ns as usize].remove(partition)
    }

    /// The non-empty partitions of `ns` and their sets, in partition order.
    fn sets(&self, ns: Namespace) -> impl Iterator<Item = (u32, &PartitionSet)> {
        self.sets[ns as usize].iter()
    }

    /// Where `key`'s latest record is (tests; the store uses `get_cached`
    /// and `locate`, which remember the entry).
    #[cfg(test)]
    pub(crate) fn get(&self, ns: Namespace, partition: u32, key: &[u8]) -> Option<Location> {
        self.set(ns, partition)?
            .get(key)
            .map(|entry| entry.location())
    }

    /// `get`, remembered like `get_cached`'s find, and answered from the
    /// remembered entry when it is `key`'s. Compaction asks where a record's
    /// key points, asks again after waiting for room (the key may have been
    /// written meanwhile) and then points the key at the copy: one probe of
    /// the set for the three, not three.
    pub(crate) fn locate(&self, ns: Namespace, partition: u32, key: &[u8]) -> Option<Location> {
        if let Some(entry) = self.last_found(ns, partition, key) {
            return Some(entry.location());
        }
        self.get_cached(ns, partition, key).map(|(loc, _)| loc)
    }

    /// Where `key`'s latest record is, and the read cache slot its entry
    /// names (which holds the record only if the cache says so).
    pub(crate) fn get_cached(
        &self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
    ) -> Option<(Location, CacheSlot)> {
        let entry = self.set(ns, partition)?.get(key)?;
        self.last.set(Some(LastFound {
            ns,
            partition,
            entry: entry.block(),
        }));
        Some((entry.location(), entry.cache_slot()))
    }

    /// The first stage of prefetching `key`'s entry for a lookup soon
    /// (`Store::prefetch_index_slot`): asks the CPU for its home slot, and
    /// returns the key's hash in its set for the second stage. `None`: the
    /// partition holds no key.
    pub(crate) fn prefetch_slot(&self, ns: Namespace, partition: u32, key: &[u8]) -> Option<u64> {
        let set = self.set(ns, partition)?;
        let hash = set.hash(key);
        set.prefetch_home(hash);
        Some(hash)
    }

    /// The second stage: asks the CPU for the entry the home slot's run
    /// names for `hash` (once the slot has arrived). Changes nothing.
    pub(crate) fn prefetch_entry(&self, ns: Namespace, partition: u32, hash: u64) {
        if let Some(set) = self.set(ns, partition) {
            set.prefetch_entry(hash);
        }
    }

    /// The entry `get_cached` found last, if it is `key`'s in `(ns,
    /// partition)`.
    fn last_found(&self, ns: Namespace, partition: u32, key: &[u8]) -> Option<Entry<'_>> {
        let last = self.last.get()?;
        if last.ns != ns || last.partition != partition {
            return None;
        }
        // SAFETY: `last` points at a live entry's block (it is cleared
        // whenever an entry is dropped), which its set keeps while `self`
        // is borrowed.
        let entry = unsafe { Entry::from_block(last.entry) };
        (entry.key() == key).then_some(entry)
    }

    /// `last_found`, for setting the entry's location and cache slot.
    fn last_found_mut(
        &mut self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
    ) -> Option<EntryMut<'_>> {
        let block = self.last_found(ns, partition, key)?.block();
        // SAFETY: a live entry's block (`last_found`), which its set keeps
        // while `self` is borrowed, and `&mut self` makes this handle the
        // only one.
        Some(unsafe { EntryMut::from_block(block) })
    }

    /// Makes room for `additional` keys in one partition (recovery knows the counts).
    pub(crate) fn reserve(&mut self, ns: Namespace, partition: u32, additional: usize) {
        self.set_or_default(ns, partition).reserve(additional);
    }

    /// Points `key` at `loc`, with no cache slot; returns the previous location.
    pub(crate) fn insert(
        &mut self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        loc: Location,
    ) -> Option<Location> {
        self.insert_with_slot(ns, partition, key, loc, |_| CacheSlot::NONE)
    }

    /// Points `key` at `loc` and its cache slot at the one `slot_of` returns,
    /// given the previous location and slot (so that the caller can move the
    /// read cache from the old record to the new one in the same probe of
    /// the set); returns the previous location.
    pub(crate) fn insert_with_slot(
        &mut self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        loc: Location,
        slot_of: impl FnOnce(Option<(Location, CacheSlot)>) -> CacheSlot,
    ) -> Option<Location> {
        if let Some(entry) = self.last_found_mut(ns, partition, key) {
            let old = entry.location();
            let slot = slot_of(Some((old, entry.cache_slot())));
            entry.set(loc, slot);
            return Some(old);
        }
        let set = self.set_or_default(ns, partition);
        if let Some(entry) = set.get_mut(key) {
            let old = entry.location();
            let slot = slot_of(Some((old, entry.cache_slot())));
            entry.set(loc, slot);
            return Some(old);
        }
        set.insert_new(key, loc, slot_of(None));
        self.keys += 1;
        None
    }

    /// Points `key`'s entry at cache slot `slot` if the entry is still at
    /// `loc` (the record `slot` holds); returns whether it was.
    pub(crate) fn set_cache_slot(
        &mut self,
        ns: Namespace,
        partition: u32,
        key: &[u8],
        loc: Location,
        slot: CacheSlot,
    ) -> bool {
        let Some(entry) = self.set_mut(ns, partition).and_then(|set| set.get_mut(key)) else {
            return false;
        };
        if entry.location() != loc {
            return false;
        }
        entry.set(loc, slot);
        true
    }

    pub(crate) fn remove(&mut self, ns: Namespace, partition: u32, key: &[u8]) -> Option<Location> {
        // The entry is dropped below; `last` may point at it.
        self.last.set(None);
        let set = self.set_mut(ns, partition)?;
        let loc = set.remove(key)?;
        let empty = set.is_empty();
        self.keys -= 1;
        if empty {
            self.remove_set(ns, partition);
        }
        Some(loc)
    }

    /// Removes a whole partition; returns the locations of its keys.
    pub(crate) fn drop_partition(&mut self, ns: Namespace, partition: u32) -> Vec<Location> {
        let Some(set) = self.remove_set(ns, partition) else {
            return Vec::new();
        };
        self.keys -= set.len() as u64;
        set.iter().map(|entry| entry.location()).collect()
    }

    pub(crate) fn partition_keys(&self, ns: Namespace, partition: u32) -> Vec<bytes::Bytes> {
        self.set(ns, partition)
            .map(|set| {
                set.iter()
                    .map(|e| bytes::Bytes::copy_from_slice(e.key()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The partitions of `ns` that hold keys, in order.
    pub(crate) fn partitions(&self, ns: Namespace) -> Vec<u32> {
        self.sets(ns).map(|(p, _)| p).collect()
    }

    /// Calls `f` with the location of every entry of the sets from `from`
    /// (`Namespace as usize` and a partition) on, a
    /// whole set at a time, in order, until at least `entries_max` entries
    /// were visited. Returns how many were, and the set to go on from
    /// (`None`: the last set was visited). Compaction's scan for the live
    /// records of a mostly dead segment (`Store::compact_step`, docs §7a),
    /// a few sets per step.
    pub(crate) fn scan_locations(
        &self,
        from: (usize, u32),
        entries_max: usize,
        mut f: impl FnMut(Location),
    ) -> (usize, Option<(usize, u32)>) {
        let mut visited = 0;
        for (n, sets) in self.sets.iter().enumerate().skip(from.0) {
            let first = if n == from.0 { from.1 } else { 0 };
            for (partition, set) in sets.iter().filter(|(p, _)| *p >= first) {
                if visited >= entries_max {
                    return (visited, Some((n, partition)));
                }
                set.for_each_location(&mut f);
                visited += set.len();
            }
        }
        (visited, None)
    }

    /// The number of entries of the largest set (a sparse compaction scans
    /// a whole set without yielding).
    pub(crate) fn largest_set(&self) -> usize {
        self.sets
            .iter()
            .flat_map(|sets| sets.values())
            .map(|set| set.len())
            .max()
            .unwrap_or(0)
    }

    /// Every entry, for accounting after recovery.
    pub(crate) fn for_each(&self, mut f: impl FnMut(Namespace, u32, &[u8], Location)) {
        for ns in [Namespace::Data, Namespace::Hint] {
            for (p, set) in self.sets(ns) {
                for e in set.iter() {
                    f(ns, p, e.key(), e.location());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u32) -> Location {
        Location {
            segment: n,
            offset: n * 10,
            len: n + 36,
        }
    }

    /// Resumed after every set (`entries_max` 1) or every few, the scan
    /// visits each entry once: both namespaces, empty sets, and partitions
    /// on both sides of `PartitionMap`'s dense range, in order.
    #[test]
    fn a_resumed_scan_visits_every_entry_once() {
        let mut index = Index::default();
        let partitions = [0u32, 1, 7, 255, 16_383, 16_384, 20_000, u32::MAX];
        let mut n = 0;
        for ns in [Namespace::Data, Namespace::Hint] {
            for (i, &p) in partitions.iter().enumerate() {
                for k in 0..i * 3 {
                    n += 1;
                    index.insert(ns, p, format!("k{k}").as_bytes(), loc(n));
                }
            }
        }
        index.insert(Namespace::Data, 9, b"gone", loc(n + 1));
        index.remove(Namespace::Data, 9, b"gone");
        let mut all = Vec::new();
        index.for_each(|_, _, _, l| all.push(l));
        all.sort_by_key(|l| l.segment);
        assert_eq!(all.len(), n as usize);
        for entries_max in [1, 5, 1000] {
            let mut seen = Vec::new();
            let mut from = Some((0, 0));
            let mut rounds = 0;
            while let Some(at) = from {
                let (visited, next) = index.scan_locations(at, entries_max, |l| seen.push(l));
                assert!(visited >= entries_max.min(1) || next.is_none());
                from = next;
                rounds += 1;
            }
            seen.sort_by_key(|l| l.segment);
            assert_eq!(seen, all, "entries_max {entries_max}");
            if entries_max == 1 {
                assert!(rounds > 10, "one set a round");
            }
        }
        assert_eq!(index.largest_set(), 21);
    }

    #[test]
    fn insert_update_remove_and_drop_partition() {
        let mut index = Index::default();
        assert_eq!(index.insert(Namespace::Data, 1, b"a", loc(1)), None);
        assert_eq!(index.insert(Namespace::Data, 1, b"", loc(2)), None);
        assert_eq!(index.insert(Namespace::Hint, 1, b"a", loc(3)), None);
        assert_eq!(index.insert(Namespace::Data, 1, b"a", loc(4)), Some(loc(1)));
        assert_eq!(index.get(Namespace::Data, 1, b"a"), Some(loc(4)));
        assert_eq!(index.get(Namespace::Data, 1, b""), Some(loc(2)));
        assert_eq!(index.get(Namespace::Data, 2, b"a"), None);
        assert_eq!(index.keys(), 3);
        let long = vec![7u8; 1000];
        index.insert(Namespace::Data, 2, &long, loc(5));
        assert_eq!(
            index.partition_keys(Namespace::Data, 2)[0].as_ref(),
            &long[..]
        );
        assert_eq!(index.remove(Namespace::Data, 1, b""), Some(loc(2)));
        assert_eq!(index.remove(Namespace::Data, 1, b""), None);
        assert_eq!(index.partitions(Namespace::Data), vec![1, 2]);
        assert_eq!(index.drop_partition(Namespace::Data, 1), vec![loc(4)]);
        assert_eq!(index.partitions(Namespace::Data), vec![2]);
        assert_eq!(index.partitions(Namespace::Hint), vec![1]);
        assert_eq!(index.keys(), 2);
    }

    /// A put's insert finds the entry its read just found without a probe
    /// (`Index::last`), but only for the same key in the same namespace
    /// and partition, and never one that was removed in between.
    #[test]
    fn an_insert_reuses_only_the_entry_just_read() {
        let mut index = Index::default();
        let slot = |n| move |_: Option<(Location, CacheSlot)>| CacheSlot(n);
        index.insert_with_slot(Namespace::Data, 1, b"a", loc(1), slot(1));
        // The read-modify-write the hint is for.
        assert_eq!(
            index.get_cached(Namespace::Data, 1, b"a"),
            Some((loc(1), CacheSlot(1)))
        );
        let old = index.insert_with_slot(Namespace::Data, 1, b"a", loc(2), |old| {
            assert_eq!(old, Some((loc(1), CacheSlot(1))));
            CacheSlot(2)
        });
        assert_eq!(old, Some(loc(1)));
        // Another key, the same key in another partition or namespace: new
        // entries, and the one read is untouched.
        let others: [(Namespace, u32, &[u8]); 3] = [
            (Namespace::Data, 1, b"b"),
            (Namespace::Data, 2, b"a"),
            (Namespace::Hint, 1, b"a"),
        ];
        for (n, (ns, p, key)) in (3..).zip(others) {
            assert_eq!(
                index.get_cached(Namespace::Data, 1, b"a"),
                Some((loc(2), CacheSlot(2)))
            );
            assert_eq!(index.insert_with_slot(ns, p, key, loc(n), slot(n)), None);
        }
        assert_eq!(
            index.get_cached(Namespace::Data, 1, b"a"),
            Some((loc(2), CacheSlot(2)))
        );
        assert_eq!(index.keys(), 4);
        // Removed after the read (alone, or with its partition): the insert
        // makes a new entry.
        assert_eq!(index.remove(Namespace::Data, 1, b"a"), Some(loc(2)));
        let old = index.insert_with_slot(Namespace::Data, 1, b"a", loc(6), |old| {
            assert_eq!(old, None);
            CacheSlot(6)
        });
        assert_eq!(old, None);
        assert_eq!(
            index.get_cached(Namespace::Data, 1, b"a"),
            Some((loc(6), CacheSlot(6)))
        );
        assert_eq!(index.drop_partition(Namespace::Data, 1).len(), 2);
        assert_eq!(index.insert(Namespace::Data, 1, b"a", loc(7)), None);
        assert_eq!(
            index.get_cached(Namespace::Data, 1, b"a"),
            Some((loc(7), CacheSlot::NONE))
        );
        assert_eq!(index.keys(), 3);
    }

    /// The remembered entry (`Index::last`) stays right while its partition's
    /// table grows (slots move, entries do not) and while removals shift other
    /// keys back over holes; a removal of the remembered key itself clears it.
    #[test]
    fn the_remembered_entry_survives_growth_and_shifts() {
        let mut index = Index::default();
        index.insert(Namespace::Data, 3, b"target", loc(1));
        for round in 0..4u32 {
            assert!(index.get_cached(Namespace::Data, 3, b"target").is_some());
            for n in 0..2000 {
                index.insert(
                    Namespace::Data,
                    3,
                    format!("{round}-{n}").as_bytes(),
                    loc(n),
                );
            }
            // Answered through `last`, across the growth.
            let old = index.insert(Namespace::Data, 3, b"target", loc(100 + round));
            assert_eq!(old, Some(if round == 0 { loc(1) } else { loc(99 + round) }));
            assert_eq!(
                index.get(Namespace::Data, 3, b"target"),
                Some(loc(100 + round))
            );
        }
        for round in 0..4u32 {
            for n in 0..2000 {
                let key = format!("{round}-{n}");
                assert!(index.remove(Namespace::Data, 3, key.as_bytes()).is_some());
                if n % 97 == 0 {
                    assert!(index.get_cached(Namespace::Data, 3, b"target").is_some());
                }
            }
        }
        assert_eq!(index.keys(), 1);
        assert_eq!(index.locate(Namespace::Data, 3, b"target"), Some(loc(103)));
        assert_eq!(index.remove(Namespace::Data, 3, b"target"), Some(loc(103)));
        assert_eq!(index.insert(Namespace::Data, 3, b"target", loc(7)), None);
    }

    /// Random inserts, updates, removals and partition drops, over dense and
    /// sparse partitions of both namespaces, agree with an ordered-map model
    /// in every answer and every listing.
    #[test]
    fn agrees_with_a_map_model() {
        use std::collections::BTreeMap as Model;
        let mut rng = crate::test_rng::Rng(0x1dec5);
        let dense = crate::ring::PARTITIONS_MAX;
        let partitions = [0, 1, 7, dense - 1, dense, u32::MAX];
        for round in 0..20 {
            let mut index = Index::default();
            // Each key's location and cache slot.
            let mut with_slots: Model<(Namespace, u32, Vec<u8>), (Location, CacheSlot)> =
                Model::new();
            for step in 0..400u32 {
                let ns = if rng.below(3) == 0 {
                    Namespace::Hint
                } else {
                    Namespace::Data
                };
                let p = partitions[rng.below(partitions.len() as u64) as usize];
                let key = vec![b'k', rng.below(12) as u8];
                let l = loc(round * 1000 + step);
                let id = (ns, p, key.clone());
                match rng.below(12) {
                    0..=2 => assert_eq!(
                        index.insert(ns, p, &key, l),
                        with_slots.insert(id, (l, CacheSlot::NONE)).map(|(l, _)| l)
                    ),
                    3..=4 => {
                        let slot = CacheSlot(step);
                        let expected = with_slots.get(&id).copied();
                        let old = index.insert_with_slot(ns, p, &key, l, |old| {
                            assert_eq!(old, expected, "the slot callback sees the entry");
                            slot
                        });
                        assert_eq!(old, expected.map(|(l, _)| l));
                        with_slots.insert(id, (l, slot));
                    }
                    5..=6 => assert_eq!(
                        index.remove(ns, p, &key),
                        with_slots.remove(&id).map(|(l, _)| l)
                    ),
                    7 => {
                        let mut dropped = index.drop_partition(ns, p);
                        let mut expected: Vec<Location> = with_slots
                            .iter()
                            .filter(|((n, q, _), _)| *n == ns && *q == p)
                            .map(|(_, (l, _))| *l)
                            .collect();
                        with_slots.retain(|(n, q, _), _| !(*n == ns && *q == p));
                        dropped.sort_by_key(|l| l.segment);
                        expected.sort_by_key(|l| l.segment);
                        assert_eq!(dropped, expected);
                    }
                    8 => {
                        // Pointing the slot of an entry at the wrong location
                        // changes nothing; at its own location, the slot.
                        let slot = CacheSlot(10_000 + step);
                        let current = with_slots.get(&id).copied();
                        assert!(!index.set_cache_slot(ns, p, &key, l, slot));
                        if let Some((at, _)) = current {
                            assert!(index.set_cache_slot(ns, p, &key, at, slot));
                            with_slots.insert(id, (at, slot));
                        }
                    }
                    _ => {
                        assert_eq!(index.get(ns, p, &key), with_slots.get(&id).map(|(l, _)| *l));
                        assert_eq!(index.get_cached(ns, p, &key), with_slots.get(&id).copied());
                    }
                }
                assert_eq!(index.keys(), with_slots.len() as u64);
            }
            for (id, expected) in &with_slots {
                assert_eq!(index.get_cached(id.0, id.1, &id.2), Some(*expected));
            }
            let model: Model<(Namespace, u32, Vec<u8>), Location> =
                with_slots.into_iter().map(|(id, (l, _))| (id, l)).collect();
            for ns in [Namespace::Data, Namespace::Hint] {
                let mut expected: Vec<u32> = model
                    .keys()
                    .filter(|(n, _, _)| *n == ns)
                    .map(|(_, p, _)| *p)
                    .collect();
                expected.dedup();
                assert_eq!(index.partitions(ns), expected);
                for &p in &partitions {
                    let mut keys: Vec<Vec<u8>> = index
                        .partition_keys(ns, p)
                        .iter()
                        .map(|k| k.to_vec())
                        .collect();
                    keys.sort();
                    let expected: Vec<Vec<u8>> = model
                        .keys()
                        .filter(|(n, q, _)| *n == ns && *q == p)
                        .map(|(_, _, k)| k.clone())
                        .collect();
                    assert_eq!(keys, expected);
                }
            }
            let mut seen = Vec::new();
            index.for_each(|ns, p, key, l| seen.push(((ns, p, key.to_vec()), l)));
            let listed: Vec<(Namespace, u32)> =
                seen.iter().map(|((n, p, _), _)| (*n, *p)).collect();
            assert!(listed.windows(2).all(|w| w[0] <= w[1]), "for_each in order");
            seen.sort_by(|a, b| a.0.cmp(&b.0));
            let expected: Vec<_> = model.into_iter().collect();
            assert_eq!(seen, expected);
        }
    }
}
