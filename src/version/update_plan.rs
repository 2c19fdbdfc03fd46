//! `UpdatePlan`: `SiblingSet::update` followed by `encode`, computed
//! straight from the stored set's encoding, for the small sets a put
//! usually meets (one actor, one sibling), without decoding the set into
//! vectors and without an allocation.
//!
//! Why: a coordinator's put in place (the one-replica put of the runtime)
//! reads the stored set, updates it with the client's context and writes
//! the new encoding; through `SiblingSet` that is three allocations (the
//! entry vector, a sibling vector per entry, the updated entry vector) and
//! two walks over vectors. A plan keeps the stored set's entries and
//! siblings in fixed arrays on the stack, as positions in its bytes.
//!
//! Invariant: when `plan_update` returns `Some`, the plan's encoding is
//! byte for byte `encode` of the set that `decode` then `update` would
//! produce, and an error is the one `update` would return. It returns
//! `None` (the caller takes the `SiblingSet` path) for anything outside its
//! bounds: more than `PLAN_ENTRIES_MAX` stored entries or context entries,
//! more than `PLAN_SIBLINGS_MAX` stored siblings, a result that `update`
//! would prune, or stored bytes that do not decode. `tests/version_update_plan.rs`
//! checks it against `SiblingSet` over random sets and contexts.

use super::codec::{varint_bytes, VARINT_BYTES_MAX};
use super::sibling_set::{VALUE_TAG_DATA, VALUE_TAG_TOMBSTONE};
use super::walk::Walk;
use super::{ActorId, VersionError, CLOCK_ENTRIES_MAX, SIBLINGS_MAX, SIBLING_SET_FORMAT_VERSION};

/// The most stored entries, and the most context entries, a plan takes.
pub const PLAN_ENTRIES_MAX: usize = 8;
/// The most stored siblings a plan takes.
pub const PLAN_SIBLINGS_MAX: usize = 8;

/// Marks "no stored entry" in `OutEntry::stored`.
const NONE: u8 = u8::MAX;

/// A stored sibling: its dot counter and its value's position in the
/// stored bytes (`start == u32::MAX`: a tombstone).
#[derive(Clone, Copy, Default)]
struct StoredSibling {
    dot_counter: u64,
    start: u32,
    len: u32,
}

/// A stored entry: actor, counter and its siblings' range in the sibling array.
#[derive(Clone, Copy, Default)]
struct StoredEntry {
    actor: ActorId,
    counter: u64,
    first: u8,
    end: u8,
}

/// An entry of the result (`OutEntries`).
#[derive(Clone, Copy)]
struct OutEntry {
    actor: ActorId,
    counter: u64,
    /// Index into the stored entries (`NONE`: the entry comes from the
    /// context, or is the writer's new one).
    stored: u8,
    /// Stored siblings with a dot counter above this one survive.
    cutoff: u64,
    /// The writer's entry: the new sibling goes last.
    writer: bool,
}

/// The result of an update, ready to be encoded (see the module header).
/// The result's entries are not stored: `OutEntries` merges the stored
/// entries, the context and the writer again for each use, which costs
/// less than keeping (and moving) an array of them.
pub struct UpdatePlan<'a> {
    stored: &'a [u8],
    /// Whether there is a stored set (else the key is absent).
    has_stored: bool,
    context: &'a [(ActorId, u64)],
    actor: ActorId,
    /// The written value; `None`: a tombstone (`Value::data`).
    value: Option<&'a [u8]>,
    floor: u64,
    entry_count: usize,
    siblings: [StoredSibling; PLAN_SIBLINGS_MAX],
    entries: [StoredEntry; PLAN_ENTRIES_MAX],
    /// Entries of the result.
    out_len: usize,
    /// The writer has neither a stored nor a context entry.
    writer_alone: bool,
    dot_counter: u64,
    encoded_len_max: usize,
    all_tombstones: bool,
}

/// `SiblingSet::update(context, actor, value)` on the set encoded in
/// `stored` (`None`: the empty set), as a plan; see the module header for
/// when it returns `None`. `context` is a `VersionVector`'s entries
/// (ascending actors, counters above 0). (`UpdatePlan::new` and `compute`
/// do the same in the caller's frame, without moving the plan.)
pub fn plan_update<'a>(
    stored: Option<&'a [u8]>,
    context: &'a [(ActorId, u64)],
    actor: ActorId,
    value: Option<&'a [u8]>,
) -> Option<Result<UpdatePlan<'a>, VersionError>> {
    let mut plan = UpdatePlan::new(stored, context, actor, value);
    Some(plan.compute()?.map(|()| plan))
}

impl<'a> UpdatePlan<'a> {
    /// The plan of `SiblingSet::update(context, actor, value)` on the set
    /// encoded in `stored` (`None`: the empty set), to be computed
    /// (`compute`) where it lies: it is a few hundred bytes, and moving it
    /// costs more than a put's whole update. `context` is a
    /// `VersionVector`'s entries (ascending actors, counters above 0).
    #[inline]
    pub fn new(
        stored: Option<&'a [u8]>,
        context: &'a [(ActorId, u64)],
        actor: ActorId,
        value: Option<&'a [u8]>,
    ) -> UpdatePlan<'a> {
        UpdatePlan {
            stored: stored.unwrap_or(&[]),
            has_stored: stored.is_some(),
            context,
            actor,
            value,
            floor: 0,
            entry_count: 0,
            siblings: [StoredSibling::default(); PLAN_SIBLINGS_MAX],
            entries: [StoredEntry::default(); PLAN_ENTRIES_MAX],
            out_len: 0,
            writer_alone: false,
            dot_counter: 0,
            encoded_len_max: 0,
            all_tombstones: false,
        }
    }

    /// Computes the update. `None`: outside the plan's bounds, or stored
    /// bytes that do not decode (see the module header); the caller takes
    /// the `SiblingSet` path. `Some(Err)`: `update`'s refusal.
    pub fn compute(&mut self) -> Option<Result<(), VersionError>> {
        if self.context.len() > PLAN_ENTRIES_MAX {
            return None;
        }
        if self.has_stored && !self.read_stored(self.stored).ok()? {
            return None;
        }
        Some(self.update())
    }

    /// Reads the stored set with the checked walker (`SiblingSet::decode`'s
    /// walk) into the plan's arrays. `Ok(false)`: valid so far but beyond
    /// the plan's bounds (the rest is not walked).
    #[inline]
    fn read_stored(&mut self, bytes: &[u8]) -> Result<bool, VersionError> {
        let (mut walk, header) = Walk::start(bytes)?;
        self.floor = header.floor;
        if header.entry_count > PLAN_ENTRIES_MAX as u64 {
            return Ok(false);
        }
        let mut entry_count = 0;
        let mut sibling_total = 0usize;
        while let Some(entry) = walk.next_entry()? {
            if entry.sibling_count > (PLAN_SIBLINGS_MAX - sibling_total) as u64 {
                return Ok(false);
            }
            let first = sibling_total;
            while let Some(sibling) = walk.next_sibling()? {
                let (start, len) = match sibling.value {
                    Some(value) => ((walk.position() - value.len()) as u32, value.len() as u32),
                    None => (u32::MAX, 0),
                };
                self.siblings[sibling_total] = StoredSibling {
                    dot_counter: sibling.dot_counter,
                    start,
                    len,
                };
                sibling_total += 1;
            }
            self.entries[entry_count] = StoredEntry {
                actor: entry.actor,
                counter: entry.counter,
                first: first as u8,
                end: sibling_total as u8,
            };
            entry_count += 1;
        }
        self.entry_count = entry_count;
        Ok(true)
    }

    /// The checks and counts of `SiblingSet::update`, on the stored entries.
    fn update(&mut self) -> Result<(), VersionError> {
        // The clock joins the context; the siblings it covers go.
        let mut survivors = 0usize;
        let mut actor_counter = 0u64;
        let mut writer_alone = true;
        let mut out_len = 0;
        for out in self.out_entries(false) {
            survivors += self.siblings_of(&out).count();
            if out.actor == self.actor {
                actor_counter = out.counter;
                writer_alone = false;
            }
            out_len += 1;
        }
        let dot_counter = actor_counter
            .max(self.floor)
            .checked_add(1)
            .ok_or(VersionError::CounterOverflow { actor: self.actor })?;
        let sibling_count = survivors + 1;
        if sibling_count > SIBLINGS_MAX {
            return Err(VersionError::SiblingsOverflow {
                count: sibling_count as u64,
                max: SIBLINGS_MAX,
            });
        }
        self.dot_counter = dot_counter;
        self.writer_alone = writer_alone;
        self.out_len = out_len + usize::from(writer_alone);
        // `update` prunes past `CLOCK_ENTRIES_MAX` entries (not reachable
        // within the plan's bounds, kept as the rule).
        debug_assert!(self.out_len <= CLOCK_ENTRIES_MAX);
        self.all_tombstones = self.value.is_none()
            && self
                .out_entries(true)
                .all(|out| self.siblings_of(&out).all(|s| s.start == u32::MAX));
        self.encoded_len_max = self.measure_max(survivors);
        Ok(())
    }

    /// The result's entries, by actor (`done`: with the writer's entry as
    /// updated; else the merge of the stored entries and the context alone).
    fn out_entries(&self, done: bool) -> OutEntries<'_, 'a> {
        OutEntries {
            plan: self,
            i: 0,
            j: 0,
            writer_pending: done && self.writer_alone,
            done,
            left: if done { self.out_len } else { usize::MAX },
        }
    }

    /// The surviving stored siblings of one result entry.
    #[inline]
    fn siblings_of(&self, out: &OutEntry) -> impl Iterator<Item = StoredSibling> + '_ {
        let range = if out.stored == NONE {
            0..0
        } else {
            let stored = self.entries[out.stored as usize];
            stored.first as usize..stored.end as usize
        };
        let cutoff = out.cutoff;
        self.siblings[range]
            .iter()
            .copied()
            .filter(move |sibling| sibling.dot_counter > cutoff)
    }

    /// A bound on the encoding's length: every varint at its widest.
    fn measure_max(&self, survivors: usize) -> usize {
        let value_len = self.value.map_or(0, <[u8]>::len);
        let varints = 2 + 3 * self.out_len + 2 * (survivors + 1);
        1 + varints * VARINT_BYTES_MAX + survivors + self.stored.len() + 1 + value_len
    }

    /// A bound on the length of the updated set's encoding: the size of
    /// the buffer `encode_into` needs.
    pub fn encoded_len_max(&self) -> usize {
        self.encoded_len_max
    }

    /// Whether every sibling of the updated set is a tombstone.
    pub fn is_all_tombstones(&self) -> bool {
        self.all_tombstones
    }

    /// The updated set's clock (`SiblingSet::clock_entries`).
    pub fn clock_entries(&self) -> impl ExactSizeIterator<Item = (ActorId, u64)> + '_ {
        self.out_entries(true).map(|out| (out.actor, out.counter))
    }

    /// The dot of the new sibling.
    pub fn dot_counter(&self) -> u64 {
        self.dot_counter
    }

    /// Writes the updated set's canonical encoding (`SiblingSet::encode`)
    /// at the start of `out`, which holds at least `encoded_len_max` bytes,
    /// and returns its length. Bytes of `out` past that length may be
    /// written too (a varint is written 10 bytes wide where there is room).
    pub fn encode_into(&self, out: &mut [u8]) -> usize {
        assert!(out.len() >= self.encoded_len_max);
        let mut w = Writer { out, at: 0 };
        w.byte(SIBLING_SET_FORMAT_VERSION);
        w.varint(self.floor);
        w.varint(self.out_len as u64);
        let mut previous: ActorId = 0;
        for entry in self.out_entries(true) {
            w.varint(entry.actor - previous);
            previous = entry.actor;
            w.varint(entry.counter);
            let count = self.siblings_of(&entry).count() + usize::from(entry.writer);
            w.varint(count as u64);
            for sibling in self.siblings_of(&entry) {
                w.varint(entry.counter - sibling.dot_counter);
                if sibling.start == u32::MAX {
                    w.byte(VALUE_TAG_TOMBSTONE);
                } else {
                    w.byte(VALUE_TAG_DATA);
                    w.varint(u64::from(sibling.len));
                    let start = sibling.start as usize;
                    w.bytes(&self.stored[start..start + sibling.len as usize]);
                }
            }
            if entry.writer {
                w.varint(0);
                match self.value {
                    Some(bytes) => {
                        w.byte(VALUE_TAG_DATA);
                        w.varint(bytes.len() as u64);
                        w.bytes(bytes);
                    }
                    None => w.byte(VALUE_TAG_TOMBSTONE),
                }
            }
        }
        w.at
    }
}

/// The entries of an update's result, by actor: the merge of the stored
/// entries and the context (`SiblingSet::update`'s second loop), and the
/// writer's entry, added when it has none and given the new dot's counter.
struct OutEntries<'p, 'a> {
    plan: &'p UpdatePlan<'a>,
    i: usize,
    j: usize,
    writer_pending: bool,
    done: bool,
    left: usize,
}

impl Iterator for OutEntries<'_, '_> {
    type Item = OutEntry;

    #[inline]
    fn next(&mut self) -> Option<OutEntry> {
        let plan = self.plan;
        let local = plan.entries[..plan.entry_count].get(self.i);
        let ctx = plan.context.get(self.j);
        let next_actor = match (local, ctx) {
            (Some(local), Some(&(ctx_actor, _))) => Some(local.actor.min(ctx_actor)),
            (Some(local), None) => Some(local.actor),
            (None, Some(&(ctx_actor, _))) => Some(ctx_actor),
            (None, None) => None,
        };
        let mut out = if self.writer_pending && next_actor.is_none_or(|next| plan.actor < next) {
            self.writer_pending = false;
            OutEntry {
                actor: plan.actor,
                counter: 0,
                stored: NONE,
                cutoff: 0,
                writer: false,
            }
        } else {
            match (local, ctx) {
                (Some(local), Some(&(ctx_actor, ctx_counter))) if local.actor == ctx_actor => {
                    self.i += 1;
                    self.j += 1;
                    OutEntry {
                        actor: local.actor,
                        counter: local.counter.max(ctx_counter),
                        stored: (self.i - 1) as u8,
                        cutoff: ctx_counter,
                        writer: false,
                    }
                }
                (Some(local), Some(&(ctx_actor, _))) if local.actor < ctx_actor => {
                    self.i += 1;
                    OutEntry {
                        actor: local.actor,
                        counter: local.counter,
                        stored: (self.i - 1) as u8,
                        cutoff: 0,
                        writer: false,
                    }
                }
                (Some(local), None) => {
                    self.i += 1;
                    OutEntry {
                        actor: local.actor,
                        counter: local.counter,
                        stored: (self.i - 1) as u8,
                        cutoff: 0,
                        writer: false,
                    }
                }
                (_, Some(&(ctx_actor, ctx_counter))) => {
                    self.j += 1;
                    OutEntry {
                        actor: ctx_actor,
                        counter: ctx_counter,
                        stored: NONE,
                        cutoff: 0,
                        writer: false,
                    }
                }
                (None, None) => return None,
            }
        };
        if self.done && out.actor == plan.actor {
            out.counter = plan.dot_counter;
            out.writer = true;
        }
        self.left = self.left.saturating_sub(1);
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (self.left, Some(self.left))
        } else {
            (0, None)
        }
    }
}

impl ExactSizeIterator for OutEntries<'_, '_> {}

/// A cursor writing into a slice of the exact final length.
struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn byte(&mut self, byte: u8) {
        self.out[self.at] = byte;
        self.at += 1;
    }

    #[inline]
    fn varint(&mut self, value: u64) {
        if value < 0x80 {
            self.byte(value as u8);
            return;
        }
        let mut bytes = [0; VARINT_BYTES_MAX];
        let len = varint_bytes(value, &mut bytes);
        match self.out.get_mut(self.at..self.at + VARINT_BYTES_MAX) {
            // Room for the widest: a copy of fixed length (no call), the
            // bytes past `len` overwritten by what follows.
            Some(room) => {
                room.copy_from_slice(&bytes);
                self.at += len;
            }
            None => self.bytes(&bytes[..len]),
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}
