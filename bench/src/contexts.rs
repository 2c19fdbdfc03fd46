//! dynakv only: the context of the last version a thread saw of each key, sent
//! with the next plain put of that key, as an application client would.
//! Without it every put would be a blind write, which in a Dynamo store adds a
//! sibling (§4.4), and a long update-heavy run would pile siblings up to the
//! server's bound.
//!
//! Job: remember one context per key for as little CPU as the generator can
//! spend on it, because the generator shares the machine with the server it
//! measures. Every dynakv reply but a PING's writes the cache, so the write
//! must not wait on memory: a request's slot is prefetched when the request is
//! sent, and the reply, at least a round trip later, finds it in cache.
//!
//! Layout: direct-mapped, one 64-byte slot (one cache line) per key index modulo
//! a power of two of at most `SLOTS_MAX`, holding the key and a context of up to
//! `INLINE_BYTES`; a longer context (a clock with several actors, as keys of an
//! N = 3 cluster may get) lives in a side map, overwritten in place while the key
//! keeps a long one, so a steady run allocates nothing either way. A key whose
//! slot another key took since loses its context (its next put is blind); with
//! at most `SLOTS_MAX` keys no two keys share a slot.
//!
//! Replaced (2026-11-24) a `HashMap<u64, Vec<u8>>` whose probe missed the cache
//! on nearly every reply at 100,000 keys: 16% of the generator's samples under a
//! GET load (BENCHMARKS.md §5a).

use std::collections::HashMap;

/// Slots at most: 64 MiB of address space per thread, touched only where keys land.
pub const SLOTS_MAX: usize = 1 << 20;
/// Context bytes a slot holds itself (a one-entry clock is about 20).
pub const INLINE_BYTES: usize = 54;
/// `Slot::len` of a context kept in the side map.
const SPILLED: u16 = u16::MAX;
/// Side-map entries at most; cleared when full (its keys' next puts are blind).
const SPILLED_MAX: usize = 1 << 16;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    /// The key plus one; 0 marks an empty slot.
    key_plus_one: u64,
    len: u16,
    bytes: [u8; INLINE_BYTES],
}

/// `n` empty slots from zeroed memory, so that pages no key lands on are never
/// touched (a million slots are 64 MiB).
fn zeroed_slots(n: usize) -> Vec<Slot> {
    assert!(n > 0);
    let layout = std::alloc::Layout::array::<Slot>(n).expect("at most SLOTS_MAX slots");
    // SAFETY: the layout has a non-zero size; an all-zero `Slot` is a valid empty
    // slot (plain integers and bytes); the vector owns the block, allocated by the
    // global allocator with exactly the layout `Vec<Slot>` of capacity `n` uses.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<Slot>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Vec::from_raw_parts(ptr, n, n)
    }
}

pub struct ContextCache {
    slots: Vec<Slot>,
    mask: usize,
    spilled: HashMap<u64, Vec<u8>>,
}

impl ContextCache {
    /// A cache sized for keys `0..keys` (more keys share slots).
    pub fn new(keys: u64) -> ContextCache {
        let n = usize::try_from(keys)
            .unwrap_or(usize::MAX)
            .clamp(1, SLOTS_MAX)
            .next_power_of_two();
        ContextCache {
            slots: zeroed_slots(n),
            mask: n - 1,
            spilled: HashMap::new(),
        }
    }

    fn slot_of(&self, key: u64) -> usize {
        (key as usize) & self.mask
    }

    /// Starts loading `key`'s slot into the cache, so that the reply to a
    /// request of it finds the slot there.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot: *const Slot = &self.slots[self.slot_of(key)];
            // SAFETY: a prefetch is a hint; it never faults and reads nothing.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    slot.cast::<i8>(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    /// The context last stored for `key`, if its slot still holds it.
    pub fn get(&self, key: u64) -> Option<&[u8]> {
        let slot = &self.slots[self.slot_of(key)];
        if slot.key_plus_one != key.wrapping_add(1) {
            return None;
        }
        if slot.len == SPILLED {
            return self.spilled.get(&key).map(Vec::as_slice);
        }
        Some(&slot.bytes[..slot.len as usize])
    }

    /// Remembers `context` as `key`'s, in place of whatever its slot held.
    pub fn put(&mut self, key: u64, context: &[u8]) {
        let i = self.slot_of(key);
        let slot = &mut self.slots[i];
        let same_key = slot.key_plus_one == key.wrapping_add(1);
        if slot.len == SPILLED {
            if same_key && context.len() > INLINE_BYTES {
                // A long context replacing the key's long context: overwritten in
                // place, so a steady run of many-entry clocks allocates nothing.
                if let Some(kept) = self.spilled.get_mut(&key) {
                    kept.clear();
                    kept.extend_from_slice(context);
                    return;
                }
            }
            self.spilled.remove(&slot.key_plus_one.wrapping_sub(1));
        }
        slot.key_plus_one = key.wrapping_add(1);
        if context.len() <= INLINE_BYTES {
            slot.len = context.len() as u16;
            slot.bytes[..context.len()].copy_from_slice(context);
            return;
        }
        slot.len = SPILLED;
        if self.spilled.len() >= SPILLED_MAX {
            // The cleared keys' slots still say spilled; `get` finds nothing.
            self.spilled.clear();
        }
        self.spilled.insert(key, context.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn remembers_the_last_context_of_each_key() {
        let mut cache = ContextCache::new(100);
        assert_eq!(cache.get(7), None);
        cache.put(7, b"first");
        cache.put(8, b"other");
        cache.put(7, b"second");
        cache.prefetch(7);
        assert_eq!(cache.get(7), Some(&b"second"[..]));
        assert_eq!(cache.get(8), Some(&b"other"[..]));
        assert_eq!(cache.get(9), None);
        // Key 0 is not mistaken for an empty slot.
        assert_eq!(cache.get(0), None);
        cache.put(0, b"");
        assert_eq!(cache.get(0), Some(&b""[..]));
    }

    #[test]
    fn long_contexts_live_beside_the_slots() {
        let mut cache = ContextCache::new(16);
        let long = vec![0xAB; INLINE_BYTES + 1];
        let edge = vec![0xCD; INLINE_BYTES];
        cache.put(3, &long);
        cache.put(4, &edge);
        assert_eq!(cache.get(3), Some(&long[..]));
        assert_eq!(cache.get(4), Some(&edge[..]));
        // Another long context for the same key reuses the side copy's buffer: a
        // shorter one leaves it with the longer one's capacity.
        let longest = vec![0xEF; INLINE_BYTES + 40];
        cache.put(3, &longest);
        cache.put(3, &long);
        assert_eq!(cache.get(3), Some(&long[..]));
        assert!(
            cache.spilled[&3].capacity() >= longest.len(),
            "overwritten in place"
        );
        assert_eq!(cache.spilled.len(), 1);
        // Shrinking back inline drops the side copy.
        cache.put(3, b"short");
        assert_eq!(cache.get(3), Some(&b"short"[..]));
        assert!(cache.spilled.is_empty());
    }

    #[test]
    fn a_key_that_shares_a_slot_takes_it_over() {
        let mut cache = ContextCache::new(4);
        assert_eq!(cache.mask, 3);
        let long = vec![1; INLINE_BYTES + 10];
        cache.put(1, &long);
        // 5 maps to the same slot as 1: 1's context is gone, not mixed up.
        cache.put(5, b"five");
        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(5), Some(&b"five"[..]));
        assert!(
            cache.spilled.is_empty(),
            "the evicted key's side copy went with it"
        );
    }

    #[test]
    fn sized_by_the_key_space_up_to_the_bound() {
        assert_eq!(ContextCache::new(0).slots.len(), 1);
        assert_eq!(ContextCache::new(100_000).slots.len(), 131_072);
        assert_eq!(ContextCache::new(u64::MAX).slots.len(), SLOTS_MAX);
    }

    #[test]
    fn a_full_side_map_is_cleared_without_confusing_keys() {
        let mut cache = ContextCache::new(1 << 20);
        let long = vec![9; INLINE_BYTES + 1];
        for key in 0..=SPILLED_MAX as u64 {
            cache.put(key, &long);
        }
        // The map was cleared once, before the last insertion.
        assert_eq!(cache.spilled.len(), 1);
        assert_eq!(cache.get(0), None);
        assert_eq!(cache.get(SPILLED_MAX as u64), Some(&long[..]));
    }
}
