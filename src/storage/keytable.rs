//! One partition's index entries: an open-addressing hash set with linear
//! probing, whose slots are the entries' addresses (`Index` groups one per
//! `(namespace, partition)`).
//!
//! Why not `std`'s `HashSet`: a lookup there is three dependent loads that
//! usually miss the CPU caches at 100,000 keys (the control bytes, the
//! slot, the entry), and nothing tells a caller where the first two are, so
//! a batch of lookups cannot be prefetched stage by stage. Here a key's
//! home slot is `hash & mask` (`prefetch_home`), and each slot carries a
//! 4-bit tag of its key's hash in the low bits of the entry's address
//! (entries are 16-byte aligned), so that the slot names the entry worth
//! fetching before any key is compared (`prefetch_entry`): a pipelined
//! batch's lookups overlap their misses (`ShardState::prefetch`).
//!
//! Memory: one 8-byte slot per key at a load between 0.4 and 0.8 while keys
//! are added (the table doubles past 0.8, and like `HashSet` never shrinks),
//! about what `HashSet`'s 8-byte slot and control byte cost at its load of
//! 0.44 to 0.875; the entry's block is unchanged. A removal re-hashes the
//! keys of the run after it (removals are rare: purges, dropped hints).
//! Removal shifts the rest of the probe run back (no tombstones), so a
//! lookup ends at the first empty slot.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::cache::CacheSlot;
use super::index::Location;

/// Bytes of a packed `Location`.
const LOC_BYTES: usize = 12;

/// Bytes of a packed `CacheSlot`.
const SLOT_BYTES: usize = 4;

/// Bytes before the key in an entry's allocation: key length (u16), location and
/// cache slot.
const ENTRY_HEADER_BYTES: usize = 2 + LOC_BYTES + SLOT_BYTES;

/// An entry's alignment: the low bits of its address hold the slot's tag
/// (the allocator gives 16-byte blocks at least anyway).
const ENTRY_ALIGN: usize = 16;

/// The slot bits that hold the tag.
const TAG_MASK: usize = ENTRY_ALIGN - 1;

/// An empty slot (no entry is at address 0).
const EMPTY: usize = 0;

/// The smallest table that holds a key.
const CAPACITY_MIN: usize = 8;

/// Slots a prefetch looks through for its key's tag before giving up (one
/// or two cache lines).
const PREFETCH_SCAN: usize = 8;

/// The tag of a hash: its top 4 bits (the home slot uses the low bits).
fn tag_of(hash: u64) -> usize {
    (hash >> 60) as usize & TAG_MASK
}

/// Whether a table of `capacity` slots may hold `len` keys: at most 0.8
/// full, so that a lookup's run of occupied slots stays short.
fn fits(len: usize, capacity: usize) -> bool {
    // As `len * 5 <= capacity * 4`, without overflowing for any `len`.
    len <= capacity / 5 * 4 + (capacity % 5) * 4 / 5
}

fn layout(key_len: usize) -> Layout {
    Layout::from_size_align(ENTRY_HEADER_BYTES + key_len, ENTRY_ALIGN).expect("small layout")
}

/// One index entry, borrowed from its table: key length, location, cache
/// slot and key in one heap block, `[key_len u16][segment u32][offset
/// u32][len u32][cache slot u32][key]`, owned by the table, which frees it
/// when the key is removed or the table dropped. Entries never move, so
/// `Index` may remember one (`Index::last`) while its table changes.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a> {
    ptr: NonNull<u8>,
    table: PhantomData<&'a ()>,
}

impl<'a> Entry<'a> {
    /// The entry at `ptr`.
    ///
    /// # Safety
    /// `ptr` is a live entry's block (from `new_block`), and stays live for `'a`.
    pub(crate) unsafe fn from_block(ptr: NonNull<u8>) -> Entry<'a> {
        Entry {
            ptr,
            table: PhantomData,
        }
    }

    /// The entry's block (for `Index::last`).
    pub(crate) fn block(self) -> NonNull<u8> {
        self.ptr
    }

    fn of_slot(slot: usize) -> Entry<'a> {
        debug_assert_ne!(slot, EMPTY);
        // SAFETY: a non-empty slot holds a live entry's address (tag bits
        // aside), which its table keeps until the slot is cleared.
        Entry {
            ptr: unsafe { NonNull::new_unchecked((slot & !TAG_MASK) as *mut u8) },
            table: PhantomData,
        }
    }

    fn key_len(self) -> usize {
        // SAFETY: every entry starts with its 2-byte key length, written by `new_block`.
        let len = unsafe { [*self.ptr.as_ptr(), *self.ptr.as_ptr().add(1)] };
        u16::from_le_bytes(len) as usize
    }

    fn bytes(self) -> &'a [u8] {
        // SAFETY: the block is `ENTRY_HEADER_BYTES + key_len` bytes, initialised by
        // `new_block`, and lives for `'a`. Only the location and cache slot
        // (`EntryMut::set`) ever change, never while these bytes are borrowed.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr(), ENTRY_HEADER_BYTES + self.key_len())
        }
    }

    pub(crate) fn key(self) -> &'a [u8] {
        &self.bytes()[ENTRY_HEADER_BYTES..]
    }

    pub(crate) fn location(self) -> Location {
        let b = &self.bytes()[2..2 + LOC_BYTES];
        Location {
            segment: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    pub(crate) fn cache_slot(self) -> CacheSlot {
        let b = &self.bytes()[2 + LOC_BYTES..ENTRY_HEADER_BYTES];
        CacheSlot(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// An entry borrowed from a table (or `Index`) held exclusively, so that its
/// location and cache slot may be set in place (`set`): nothing else can
/// borrow its bytes meanwhile.
pub(crate) struct EntryMut<'a> {
    ptr: NonNull<u8>,
    table: PhantomData<&'a mut ()>,
}

impl<'a> EntryMut<'a> {
    /// The entry at `ptr`, for writing.
    ///
    /// # Safety
    /// `ptr` is a live entry's block (from `new_block`) that stays live for
    /// `'a`, and nothing else reads or writes it during `'a` (its owner is
    /// borrowed exclusively for `'a`).
    pub(crate) unsafe fn from_block(ptr: NonNull<u8>) -> EntryMut<'a> {
        EntryMut {
            ptr,
            table: PhantomData,
        }
    }

    fn read(&self) -> Entry<'_> {
        Entry {
            ptr: self.ptr,
            table: PhantomData,
        }
    }

    #[cfg(test)]
    pub(crate) fn key(&self) -> &[u8] {
        self.read().key()
    }

    pub(crate) fn location(&self) -> Location {
        self.read().location()
    }

    pub(crate) fn cache_slot(&self) -> CacheSlot {
        self.read().cache_slot()
    }

    /// Sets the location and cache slot of the entry in place: neither is
    /// part of its hash or its key, so the table stays valid, and an update
    /// costs one lookup instead of a removal and an insertion.
    pub(crate) fn set(self, loc: Location, slot: CacheSlot) {
        // SAFETY: `self` is the only handle to the entry for its lifetime
        // (`from_block`, `KeyTable::get_mut`), it takes itself by value, and
        // no reference from `key` outlives the borrow of `self` it came from.
        unsafe { write_header(self.ptr, loc, slot) }
    }
}

/// Writes the location and cache slot into an entry's header.
///
/// # Safety
/// `ptr` is a live entry's block, and nothing borrows its bytes.
unsafe fn write_header(ptr: NonNull<u8>, loc: Location, slot: CacheSlot) {
    let mut b = [0u8; LOC_BYTES + SLOT_BYTES];
    b[0..4].copy_from_slice(&loc.segment.to_le_bytes());
    b[4..8].copy_from_slice(&loc.offset.to_le_bytes());
    b[8..12].copy_from_slice(&loc.len.to_le_bytes());
    b[12..16].copy_from_slice(&slot.0.to_le_bytes());
    // SAFETY: the block holds `ENTRY_HEADER_BYTES` = 2 + LOC_BYTES +
    // SLOT_BYTES bytes, and the caller guarantees no reference into it is live.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), ptr.as_ptr().add(2), b.len()) }
}

/// A new entry's block, owned by the caller until it is freed (`free_block`).
fn new_block(loc: Location, slot: CacheSlot, key: &[u8]) -> NonNull<u8> {
    assert!(key.len() <= u16::MAX as usize);
    let layout = layout(key.len());
    // SAFETY: the layout has a non-zero size (the header is 18 bytes).
    let ptr = unsafe { alloc(layout) };
    let Some(ptr) = NonNull::new(ptr) else {
        handle_alloc_error(layout)
    };
    // SAFETY: the block is `ENTRY_HEADER_BYTES + key.len()` bytes, and only
    // this function has its address.
    unsafe {
        let len = (key.len() as u16).to_le_bytes();
        ptr.as_ptr().write(len[0]);
        ptr.as_ptr().add(1).write(len[1]);
        write_header(ptr, loc, slot);
        std::ptr::copy_nonoverlapping(
            key.as_ptr(),
            ptr.as_ptr().add(ENTRY_HEADER_BYTES),
            key.len(),
        );
    }
    ptr
}

/// Frees an entry's block.
///
/// # Safety
/// `ptr` came from `new_block`, and nothing uses it afterwards.
unsafe fn free_block(ptr: NonNull<u8>) {
    // SAFETY: allocated in `new_block` with this layout (its key length is
    // in the block).
    unsafe {
        let key_len = Entry::from_block(ptr).key_len();
        dealloc(ptr.as_ptr(), layout(key_len));
    }
}

/// The entries of one `(namespace, partition)`.
pub(crate) struct KeyTable<S = ahash::RandomState> {
    /// `EMPTY`, or an entry's address with its key's tag in the low bits.
    /// A power-of-two length (or none, before the first key).
    slots: Box<[usize]>,
    len: usize,
    hasher: S,
}

impl<S: Default> Default for KeyTable<S> {
    fn default() -> Self {
        KeyTable {
            slots: Box::default(),
            len: 0,
            hasher: S::default(),
        }
    }
}

impl<S> Drop for KeyTable<S> {
    fn drop(&mut self) {
        for &slot in self.slots.iter().filter(|&&slot| slot != EMPTY) {
            // SAFETY: the table owns its entries, and is going away.
            unsafe { free_block(Entry::of_slot(slot).ptr) };
        }
    }
}

impl<S: BuildHasher> KeyTable<S> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot holding `key` (`Ok`), or the empty slot where it would go
    /// (`Err`). The table has slots.
    fn find(&self, key: &[u8], hash: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return Err(i);
            }
            if slot & TAG_MASK == tag && Entry::of_slot(slot).key() == key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(key, self.hash(key)).ok()?;
        Some(Entry::of_slot(self.slots[i]))
    }

    /// `get`, for setting the entry's location and cache slot (`EntryMut::set`).
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<EntryMut<'_>> {
        let block = self.get(key)?.ptr;
        // SAFETY: the table owns the entry and is borrowed exclusively for
        // the handle's lifetime.
        Some(unsafe { EntryMut::from_block(block) })
    }

    /// Adds an entry for `key`, which the table does not hold.
    pub(crate) fn insert_new(&mut self, key: &[u8], loc: Location, slot: CacheSlot) {
        if !fits(self.len + 1, self.slots.len()) {
            self.grow_to(self.len + 1);
        }
        let hash = self.hash(key);
        let Err(i) = self.find(key, hash) else {
            panic!("insert_new of a key the table holds");
        };
        let block = new_block(loc, slot, key);
        self.slots[i] = block.as_ptr() as usize | tag_of(hash);
        self.len += 1;
    }

    /// Removes `key`'s entry; returns its location.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Location> {
        if self.len == 0 {
            return None;
        }
        let mut hole = self.find(key, self.hash(key)).ok()?;
        let entry = Entry::of_slot(self.slots[hole]);
        let loc = entry.location();
        // SAFETY: the slot is cleared below, before anything could use it.
        unsafe { free_block(entry.ptr) };
        self.slots[hole] = EMPTY;
        self.len -= 1;
        // Shift the rest of the run back over the hole, so that every key
        // stays reachable from its home slot without crossing an empty one.
        let mask = self.slots.len() - 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let slot = self.slots[i];
            if slot == EMPTY {
                return Some(loc);
            }
            let home = self.hash(Entry::of_slot(slot).key()) as usize & mask;
            // The entry at `i` may move to the hole unless its home lies
            // cyclically in (hole, i].
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.slots[hole] = slot;
                self.slots[i] = EMPTY;
                hole = i;
            }
        }
    }

    /// Makes room for `additional` more keys without growing again.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let len = self.len.saturating_add(additional);
        if !fits(len, self.slots.len()) {
            self.grow_to(len);
        }
    }

    /// Rebuilds the table with the smallest power-of-two capacity that fits `len` keys.
    fn grow_to(&mut self, len: usize) {
        let mut capacity = self.slots.len().max(CAPACITY_MIN);
        while !fits(len, capacity) {
            capacity = capacity
                .checked_mul(2)
                .expect("key table capacity overflow");
        }
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; capacity].into_boxed_slice());
        let mask = capacity - 1;
        for slot in old.iter().copied().filter(|&slot| slot != EMPTY) {
            let mut i = self.hash(Entry::of_slot(slot).key()) as usize & mask;
            while self.slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        self.slots
            .iter()
            .filter(|&&slot| slot != EMPTY)
            .map(|&slot| Entry::of_slot(slot))
    }

    /// The location of every entry, in slot order, each entry asked of
    /// the CPU `SCAN_AHEAD` entries before it is read: a scan's misses
    /// overlap instead of following one another (compaction's scan for a
    /// segment's live records, `Index::scan_locations`).
    pub(crate) fn for_each_location(&self, mut f: impl FnMut(Location)) {
        const SCAN_AHEAD: usize = 16;
        let mut ahead = self.slots.iter().filter(|&&slot| slot != EMPTY);
        for &slot in ahead.by_ref().take(SCAN_AHEAD) {
            super::prefetch_read((slot & !TAG_MASK) as *const u8);
        }
        for &slot in self.slots.iter().filter(|&&slot| slot != EMPTY) {
            if let Some(&next) = ahead.next() {
                super::prefetch_read((next & !TAG_MASK) as *const u8);
            }
            f(Entry::of_slot(slot).location());
        }
    }

    /// Asks the CPU to load the home slot of a key of hash `hash` (the
    /// first stage of a batch's prefetch; `prefetch_entry` is the second).
    pub(crate) fn prefetch_home(&self, hash: u64) {
        if !self.slots.is_empty() {
            let i = hash as usize & (self.slots.len() - 1);
            super::prefetch_read(std::ptr::from_ref(&self.slots[i]).cast());
        }
    }

    /// Asks the CPU to load the entry that most likely is the key of hash
    /// `hash`: the first in its probe run whose tag matches (no key is
    /// compared, so no entry is loaded here). Changes nothing.
    pub(crate) fn prefetch_entry(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let mut i = hash as usize & mask;
        for _ in 0..PREFETCH_SCAN {
            let slot = self.slots[i];
            if slot == EMPTY {
                return;
            }
            if slot & TAG_MASK == tag {
                // The header and the key's first bytes, which may start a
                // second line (a block is 16-byte aligned, a line 64).
                let entry = (slot & !TAG_MASK) as *const u8;
                super::prefetch_read(entry);
                super::prefetch_read(entry.wrapping_add(ENTRY_HEADER_BYTES + 15));
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::hash::Hasher;

    fn loc(n: u32) -> Location {
        Location {
            segment: n,
            offset: n.wrapping_mul(7),
            len: n ^ 0x55,
        }
    }

    /// A hasher that puts every key into one of `1 << bits` hashes, so that
    /// runs are long, wrap around the table's end, and share tags.
    #[derive(Default, Clone)]
    struct Crowded<const BITS: u32>;
    struct CrowdedHasher<const BITS: u32>(u64);
    impl<const BITS: u32> Hasher for CrowdedHasher<BITS> {
        fn finish(&self) -> u64 {
            // Spread the few values over the top bits (tags) and low bits
            // (home slots) alike.
            let h = self.0 % (1 << BITS);
            h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7) | h
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.wrapping_mul(31).wrapping_add(b as u64);
            }
        }
    }
    impl<const BITS: u32> BuildHasher for Crowded<BITS> {
        type Hasher = CrowdedHasher<BITS>;
        fn build_hasher(&self) -> Self::Hasher {
            CrowdedHasher(0)
        }
    }

    /// Random inserts, updates in place, removals and reservations agree with
    /// a map model in every answer and listing, with real hashing and with
    /// hashes crowded into a few values (long runs that wrap around, shared
    /// tags, removals shifting entries back across the table's end).
    fn agrees_with_a_map_model<S: BuildHasher + Default>(seed: u64, keys: u64) {
        let mut rng = crate::test_rng::Rng(seed);
        for round in 0..6 {
            let mut table = KeyTable::<S>::default();
            let mut model: BTreeMap<Vec<u8>, (Location, CacheSlot)> = BTreeMap::new();
            for step in 0..3000u32 {
                let n = rng.below(keys);
                let key = format!("key-{n}").into_bytes();
                let l = loc(round * 10_000 + step);
                match rng.below(10) {
                    0..=3 => match table.get_mut(&key) {
                        Some(entry) => {
                            assert_eq!(entry.key(), &key[..]);
                            entry.set(l, CacheSlot(step));
                            model.insert(key, (l, CacheSlot(step)));
                        }
                        None => {
                            assert!(!model.contains_key(&key));
                            table.insert_new(&key, l, CacheSlot(step));
                            model.insert(key, (l, CacheSlot(step)));
                        }
                    },
                    4..=6 => assert_eq!(
                        table.remove(&key),
                        model.remove(&key).map(|(l, _)| l),
                        "round {round} step {step}"
                    ),
                    7 => table.reserve(rng.below(100) as usize),
                    _ => {
                        let found = table.get(&key).map(|e| (e.location(), e.cache_slot()));
                        assert_eq!(found, model.get(&key).copied());
                        // The prefetches read in bounds whatever the hash.
                        table.prefetch_home(rng.next());
                        table.prefetch_entry(rng.next());
                        table.prefetch_entry(table.hash(&key));
                    }
                }
                assert_eq!(table.len(), model.len());
                assert!(table.slots.is_empty() || fits(table.len(), table.slots.len()));
            }
            for (key, expected) in &model {
                let entry = table.get(key).expect("every model key is found");
                assert_eq!(
                    (entry.key(), entry.location(), entry.cache_slot()),
                    (&key[..], expected.0, expected.1)
                );
            }
            let mut listed: Vec<Vec<u8>> = table.iter().map(|e| e.key().to_vec()).collect();
            listed.sort();
            assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
        }
    }

    #[test]
    fn agrees_with_a_map_model_with_real_hashes() {
        agrees_with_a_map_model::<ahash::RandomState>(0x7ab1e, 600);
    }

    #[test]
    fn agrees_with_a_map_model_with_crowded_hashes() {
        agrees_with_a_map_model::<Crowded<3>>(0xc0ded, 60);
        agrees_with_a_map_model::<Crowded<6>>(0xc0ded, 300);
    }

    #[test]
    fn the_load_bound_is_exact_and_never_overflows() {
        for capacity in [0usize, 8, 16, 1 << 20, 1 << 62] {
            for len in [
                0usize,
                1,
                5,
                6,
                7,
                13,
                1 << 19,
                1 << 61,
                usize::MAX / 4,
                usize::MAX,
            ] {
                let exact = (len as u128) * 5 <= (capacity as u128) * 4;
                assert_eq!(fits(len, capacity), exact, "len {len}, capacity {capacity}");
            }
        }
        for capacity in (8..200).step_by(8) {
            for len in 0..200 {
                assert_eq!(fits(len, capacity), len * 5 <= capacity * 4);
            }
        }
    }

    #[test]
    fn a_reservation_holds_its_keys_without_growing() {
        for reserved in [1usize, 6, 7, 100, 1000] {
            let mut table = KeyTable::<ahash::RandomState>::default();
            table.insert_new(b"first", loc(0), CacheSlot::NONE);
            table.reserve(reserved);
            let capacity = table.slots.len();
            for n in 0..reserved as u32 {
                table.insert_new(format!("{n}").as_bytes(), loc(n), CacheSlot::NONE);
            }
            assert_eq!(
                table.slots.len(),
                capacity,
                "grew after reserve({reserved})"
            );
            assert_eq!(table.len(), reserved + 1);
        }
    }

    #[test]
    fn entries_are_aligned_for_their_tag() {
        let mut table = KeyTable::<ahash::RandomState>::default();
        for n in 0..1000u32 {
            table.insert_new(format!("{n}").as_bytes(), loc(n), CacheSlot::NONE);
        }
        assert!(table
            .iter()
            .all(|e| e.block().as_ptr() as usize & TAG_MASK == 0));
    }
}
