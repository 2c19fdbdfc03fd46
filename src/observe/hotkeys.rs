//! Hot keys: a bounded top-K of the most requested keys, by the
//! space-saving algorithm (Metwally, Agrawal, El Abbadi, 2005).
//!
//! The summary holds at most `capacity` keys. A key already held has its
//! count incremented (one hash lookup); a new key takes the place of the key
//! with the smallest count and inherits that count plus one, recording it as
//! its possible over-estimate (`error`). Any key requested more than
//! `total / capacity` times is guaranteed to be held, and a held key's true
//! count lies in `count - error ..= count`.

use ahash::AHashMap;

/// The most keys one summary may hold.
pub const HOT_KEYS_CAPACITY_MAX: usize = 1024;

/// One held key and its estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKey {
    /// The key's bytes (a copy: the summary never pins a request buffer).
    pub key: Vec<u8>,
    /// Estimated number of offers; at most `error` above the true number.
    pub count: u64,
    /// How much of `count` may have been inherited from an evicted key.
    pub error: u64,
}

/// A space-saving summary of bounded size.
#[derive(Clone, Debug)]
pub struct SpaceSaving {
    capacity: usize,
    entries: Vec<HotKey>,
    /// `hashes[slot]`: the 64-bit hash of `entries[slot].key`.
    hashes: Vec<u64>,
    /// Slot of each held key, by its 64-bit hash: an offer hashes its key
    /// once, and an eviction neither hashes the old key again nor copies
    /// the new one into the map (with `Vec<u8>` keys the three map
    /// operations of an eviction were most of its cost). A key whose hash
    /// equals a held key's is not counted (below).
    index: AHashMap<u64, usize>,
    hasher: ahash::RandomState,
    offers: u64,
    /// A lower bound of every held count: the last evicted minimum (counts
    /// only grow), so an eviction's scan stops at the first count equal to
    /// it, which is the first minimum a full scan would find.
    floor: u64,
    /// Where the next eviction's scan starts: the slot after the last one
    /// evicted. Scanning from slot 0 every time walked past every slot
    /// refilled since the floor last rose (on a spread of keys, where nearly
    /// every sampled offer evicts, half the summary on average: about 500
    /// instructions per sampled offer, 130 per request). From here, the
    /// next slot still at the floor is usually the first one looked at.
    cursor: usize,
}

/// The slot and count of the first entry of least count in slot order
/// starting at `from` and wrapping around (as `min_by_key` over that order
/// finds it), given that no count is below `floor`: the scan stops at the
/// first count equal to `floor`.
fn first_minimum(entries: &[HotKey], floor: u64, from: usize) -> (usize, u64) {
    assert!(!entries.is_empty(), "a full summary holds at least one key");
    let from = from % entries.len();
    let (after, before) = entries.split_at(from);
    let mut best = (0, u64::MAX);
    for (slot, entry) in before
        .iter()
        .enumerate()
        .map(|(i, e)| (from + i, e))
        .chain(after.iter().enumerate())
    {
        debug_assert!(entry.count >= floor, "no count is below the floor");
        if entry.count < best.1 {
            best = (slot, entry.count);
            if entry.count == floor {
                break;
            }
        }
    }
    best
}

impl SpaceSaving {
    /// An empty summary of at most `capacity` keys (1 ..= 1024).
    pub fn new(capacity: usize) -> SpaceSaving {
        assert!((1..=HOT_KEYS_CAPACITY_MAX).contains(&capacity));
        SpaceSaving {
            capacity,
            entries: Vec::with_capacity(capacity),
            hashes: Vec::with_capacity(capacity),
            index: AHashMap::with_capacity(capacity),
            // Fixed seeds: the same keys evict the same way in every run.
            hasher: ahash::RandomState::with_seeds(
                0x9e37_79b9_7f4a_7c15,
                0xbf58_476d_1ce4_e5b9,
                0x94d0_49bb_1331_11eb,
                0x2545_f491_4f6c_dd1d,
            ),
            offers: 0,
            floor: 0,
            cursor: 0,
        }
    }

    /// Counts one request for `key`.
    pub fn offer(&mut self, key: &[u8]) {
        self.offer_weighted(key, 1);
    }

    /// Counts `weight` requests for `key` (used when the caller samples).
    pub fn offer_weighted(&mut self, key: &[u8], weight: u64) {
        self.offers += weight;
        let hash = self.hasher.hash_one(key);
        if let Some(&slot) = self.index.get(&hash) {
            if self.entries[slot].key == key {
                self.entries[slot].count += weight;
            }
            // Otherwise another held key has the same 64-bit hash (about
            // one chance in 2^64 per pair): this offer is not counted, and
            // the summary stays consistent. It only ever under-counts.
            return;
        }
        if self.entries.len() < self.capacity {
            self.index.insert(hash, self.entries.len());
            self.hashes.push(hash);
            self.entries.push(HotKey {
                key: key.to_vec(),
                count: weight,
                error: 0,
            });
            return;
        }
        let (slot, min) = first_minimum(&self.entries, self.floor, self.cursor);
        self.floor = min;
        self.cursor = slot + 1;
        // The evicted key's buffer takes the new key: no allocation per
        // eviction, which on a spread of keys is nearly every sampled offer.
        let evicted = self.index.remove(&self.hashes[slot]);
        debug_assert_eq!(evicted, Some(slot), "every held key is indexed");
        self.hashes[slot] = hash;
        self.index.insert(hash, slot);
        let entry = &mut self.entries[slot];
        entry.key.clear();
        entry.key.extend_from_slice(key);
        entry.count = min + weight;
        entry.error = min;
        debug_assert_eq!(self.index.len(), self.entries.len());
    }

    /// Total weight offered so far.
    pub fn offers(&self) -> u64 {
        self.offers
    }

    /// The `n` keys with the highest counts, highest first (ties by key).
    pub fn top(&self, n: usize) -> Vec<HotKey> {
        let mut all = self.entries.clone();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }
}

/// Merges per-shard top lists into one, highest first. A key lives on one
/// shard of a node, so lists from different shards rarely share keys; when
/// they do (a request forwarded between shards is counted where it was
/// handled), their counts add.
pub fn merge_top(lists: &[Vec<HotKey>], n: usize) -> Vec<HotKey> {
    let mut merged: AHashMap<&[u8], HotKey> = AHashMap::new();
    for list in lists {
        for hot in list {
            merged
                .entry(hot.key.as_slice())
                .and_modify(|m| {
                    m.count += hot.count;
                    m.error += hot.error;
                })
                .or_insert_with(|| hot.clone());
        }
    }
    let mut all: Vec<HotKey> = merged.into_values().collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary against a plain model that evicts the first entry of
    /// least count found by a full scan starting after the slot it evicted
    /// last (wrapping around): the same entries, counts and errors after
    /// every offer (so the scan's early stop changes nothing).
    #[test]
    fn evicts_exactly_as_a_full_scan_would() {
        let mut rng = crate::test_rng::Rng(0x5eed_0007);
        for capacity in [1, 2, 5, 32] {
            let mut s = SpaceSaving::new(capacity);
            let mut model: Vec<HotKey> = Vec::new();
            let mut next = 0;
            for _ in 0..5_000 {
                let key = (rng.below(3 * capacity as u64 + 2) as u32).to_le_bytes();
                let weight = 1 + rng.below(4);
                s.offer_weighted(&key, weight);
                if let Some(entry) = model.iter_mut().find(|e| e.key == key) {
                    entry.count += weight;
                } else if model.len() < capacity {
                    model.push(HotKey {
                        key: key.to_vec(),
                        count: weight,
                        error: 0,
                    });
                } else {
                    let (slot, min) = (0..model.len())
                        .map(|i| (next + i) % model.len())
                        .map(|i| (i, model[i].count))
                        .min_by_key(|&(_, count)| count)
                        .unwrap();
                    next = slot + 1;
                    model[slot] = HotKey {
                        key: key.to_vec(),
                        count: min + weight,
                        error: min,
                    };
                }
                let held: Vec<_> = s
                    .entries
                    .iter()
                    .map(|e| (&e.key, e.count, e.error))
                    .collect();
                let expected: Vec<_> = model.iter().map(|e| (&e.key, e.count, e.error)).collect();
                assert_eq!(held, expected, "capacity {capacity}");
            }
        }
    }

    /// Two keys with one 64-bit hash: the second is not counted, and the
    /// summary stays consistent (a real collision cannot be found in a
    /// test's time, so a held key's hash is forged).
    #[test]
    fn a_key_whose_hash_a_held_key_has_is_not_counted() {
        let mut s = SpaceSaving::new(2);
        s.offer(b"a");
        s.offer(b"b");
        // Make "a"'s slot claim the hash "c" will have.
        let forged = s.hasher.hash_one(&b"c"[..]);
        let a = s.index.remove(&s.hashes[0]).unwrap();
        s.hashes[0] = forged;
        s.index.insert(forged, a);
        s.offer(b"c");
        s.offer(b"c");
        let counts: Vec<(&[u8], u64)> = s
            .entries
            .iter()
            .map(|e| (e.key.as_slice(), e.count))
            .collect();
        assert_eq!(
            counts,
            vec![(&b"a"[..], 1), (&b"b"[..], 1)],
            "c counted nowhere"
        );
        assert_eq!(s.offers(), 4);
        assert_eq!(s.index.len(), s.entries.len());
    }

    #[test]
    fn a_frequent_key_is_found_among_many_rare_ones() {
        let mut s = SpaceSaving::new(8);
        for i in 0..10_000u32 {
            if i % 4 == 0 {
                s.offer(b"hot");
            } else {
                s.offer(&i.to_le_bytes());
            }
        }
        let top = s.top(3);
        assert_eq!(top[0].key, b"hot");
        // The true count is 2500; the estimate may exceed it by `error`.
        assert!(top[0].count >= 2500 && top[0].count - top[0].error <= 2500);
        assert_eq!(s.offers(), 10_000);
        assert!(s.top(100).len() <= 8);
    }

    #[test]
    fn counts_are_exact_while_the_summary_has_room() {
        let mut s = SpaceSaving::new(4);
        for (key, times) in [(&b"a"[..], 5), (b"b", 3), (b"c", 1)] {
            for _ in 0..times {
                s.offer(key);
            }
        }
        let top = s.top(10);
        let counts: Vec<(&[u8], u64, u64)> = top
            .iter()
            .map(|h| (h.key.as_slice(), h.count, h.error))
            .collect();
        assert_eq!(counts, vec![(&b"a"[..], 5, 0), (b"b", 3, 0), (b"c", 1, 0)]);
    }

    #[test]
    fn shard_lists_merge_by_key() {
        let a = vec![HotKey {
            key: b"x".to_vec(),
            count: 5,
            error: 0,
        }];
        let b = vec![
            HotKey {
                key: b"y".to_vec(),
                count: 7,
                error: 1,
            },
            HotKey {
                key: b"x".to_vec(),
                count: 4,
                error: 0,
            },
        ];
        let merged = merge_top(&[a, b], 1);
        assert_eq!(
            merged,
            vec![HotKey {
                key: b"x".to_vec(),
                count: 9,
                error: 0
            }]
        );
    }
}
