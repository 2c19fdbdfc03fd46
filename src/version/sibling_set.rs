//! `SiblingSet`: a dotted version vector set (DVVSet; Almeida, Baquero et al.,
//! DAIS 2014), the per-key versioned value that replicas store and exchange.
//!
//! Model. Per actor (a coordinator identity) the set keeps one entry: a
//! counter `n` and the siblings written by that actor that are still current,
//! each tagged with its dot `(actor, d)`, `d <= n`. The entry claims that the
//! set has seen every event `(actor, 1..=n)`; an event it has seen that is not
//! among its siblings was superseded. This is what makes the merge exact: a
//! sibling survives a merge unless the other side has seen its dot and no
//! longer holds it.
//!
//! Invariants (checked by `check_invariants` in tests and by `decode` on
//! every input):
//! * entries are sorted by actor, unique, with counters >= 1;
//! * within an entry, sibling dots are strictly increasing and in `1..=n`;
//! * at most `CLOCK_ENTRIES_MAX` entries, at most `SIBLINGS_MERGED_MAX`
//!   siblings; `update` refuses to leave more than `SIBLINGS_MAX`.
//!
//! Dots must be unique: actor `a` creates dots only through `update` on its
//! own replica's copy, which always holds `a`'s highest counter for the key.
//! An actor id must therefore change when a replica loses its data (the
//! `ActorId` includes an incarnation in the caller's scheme), or old dots
//! could be reissued for new values.

use bytes::Bytes;

use super::clock::VersionVector;
use super::codec::put_varint;
use super::error::VersionError;
use super::walk::Walk;
use super::{ActorId, CLOCK_ENTRIES_MAX, SIBLINGS_MAX, SIBLINGS_MERGED_MAX};

/// Format byte of the sibling-set encoding; see `docs/versioning.md`.
pub const SIBLING_SET_FORMAT_VERSION: u8 = 1;

pub(crate) const VALUE_TAG_DATA: u8 = 0;
pub(crate) const VALUE_TAG_TOMBSTONE: u8 = 1;

/// One sibling's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// Bytes written by a put.
    Data(Bytes),
    /// A delete. It is a version like any other, so a delete concurrent with
    /// a put shows up as a sibling instead of silently winning or losing.
    Tombstone,
}

impl Value {
    /// The bytes of a put's value; `None` for a delete's tombstone (the
    /// form `UpdatePlan` takes, so that a value can be borrowed).
    pub fn data(&self) -> Option<&[u8]> {
        match self {
            Value::Data(bytes) => Some(bytes),
            Value::Tombstone => None,
        }
    }

    /// A total order used only to break a tie deterministically when two sets
    /// disagree on the value of one dot, which the dot-uniqueness rule makes
    /// impossible unless an actor id was reused after data loss.
    fn tie_order(&self) -> (u8, &[u8]) {
        match self {
            Value::Tombstone => (0, &[]),
            Value::Data(bytes) => (1, bytes.as_ref()),
        }
    }
}

/// An event identifier: the `counter`-th write coordinated by `actor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub actor: ActorId,
    pub counter: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Sibling {
    dot_counter: u64,
    value: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    actor: ActorId,
    /// The set has seen events `(actor, 1..=counter)`.
    counter: u64,
    /// The current values among those events, by ascending dot.
    siblings: Vec<Sibling>,
}

/// A DVVSet: the siblings of one key and their causal context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiblingSet {
    /// Sorted by actor, unique.
    entries: Vec<Entry>,
    /// The highest counter of any entry pruned from this set (0 if none). New
    /// dots start above it so that an actor whose entry was pruned can never
    /// reissue a dot it used before.
    pub(crate) pruned_counter_floor: u64,
}

impl SiblingSet {
    pub fn new() -> Self {
        SiblingSet::default()
    }

    /// No siblings: the key was never written (or this replica holds nothing).
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|entry| entry.siblings.is_empty())
    }

    pub fn sibling_count(&self) -> usize {
        self.entries.iter().map(|entry| entry.siblings.len()).sum()
    }

    /// All current siblings with their dots, by actor then dot.
    pub fn siblings(&self) -> impl Iterator<Item = (Dot, &Value)> + '_ {
        self.entries.iter().flat_map(|entry| {
            entry.siblings.iter().map(move |sibling| {
                let dot = Dot {
                    actor: entry.actor,
                    counter: sibling.dot_counter,
                };
                (dot, &sibling.value)
            })
        })
    }

    /// All current siblings, tombstones included, by actor then dot: the same
    /// set of versions always comes out in the same order.
    pub fn values(&self) -> Vec<&Value> {
        self.siblings().map(|(_, value)| value).collect()
    }

    /// The siblings that are not tombstones, in `values()` order.
    pub fn data_values(&self) -> Vec<&Bytes> {
        self.siblings()
            .filter_map(|(_, value)| match value {
                Value::Data(bytes) => Some(bytes),
                Value::Tombstone => None,
            })
            .collect()
    }

    /// Every sibling is a delete (false for an empty set). A get answers
    /// "not found" for such a key, but still returns its context so a later
    /// put supersedes the tombstones.
    pub fn is_all_tombstones(&self) -> bool {
        !self.is_empty() && self.siblings().all(|(_, value)| *value == Value::Tombstone)
    }

    /// The causal context: the join of every event this set has seen. A get
    /// returns it to the client inside the context token.
    pub fn context(&self) -> VersionVector {
        VersionVector::from_sorted_unchecked(
            self.entries
                .iter()
                .map(|entry| (entry.actor, entry.counter))
                .collect(),
        )
    }

    /// The entries of `context()` (by ascending actor), without building
    /// the `VersionVector`: for `context::encode_token_into`.
    pub fn clock_entries(&self) -> impl ExactSizeIterator<Item = (ActorId, u64)> + '_ {
        self.entries
            .iter()
            .map(|entry| (entry.actor, entry.counter))
    }

    /// Counter of `actor` in this set's clock, 0 when absent.
    fn counter(&self, actor: ActorId) -> u64 {
        match self
            .entries
            .binary_search_by_key(&actor, |entry| entry.actor)
        {
            Ok(index) => self.entries[index].counter,
            Err(_) => 0,
        }
    }

    /// Coordinator put (or delete, with `Value::Tombstone`): records `value`
    /// under a new dot of `actor`, discards exactly the siblings whose dots
    /// `context` covers, and keeps every other sibling. The context's entries
    /// join the set's clock, so the new version supersedes what the client
    /// saw even where this replica had not seen it yet.
    ///
    /// Refuses, leaving `self` unchanged, when more than `SIBLINGS_MAX`
    /// siblings would remain: the client must read and write with the
    /// context of that read to resolve them.
    pub fn update(
        &mut self,
        context: &VersionVector,
        actor: ActorId,
        value: Value,
    ) -> Result<(), VersionError> {
        let ctx = context.entries();
        // First, without changing anything, what the update would leave:
        // the siblings the context does not cover, and the actor's counter
        // once the context joins the clock. A refused update leaves `self`
        // as it was.
        let mut survivors = 0usize;
        let mut actor_counter = 0u64;
        let (mut i, mut j) = (0, 0);
        while i < self.entries.len() || j < ctx.len() {
            match (self.entries.get(i), ctx.get(j)) {
                (Some(local), Some(&(ctx_actor, ctx_counter))) if local.actor == ctx_actor => {
                    survivors += local
                        .siblings
                        .iter()
                        .filter(|sibling| sibling.dot_counter > ctx_counter)
                        .count();
                    if local.actor == actor {
                        actor_counter = local.counter.max(ctx_counter);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(local), Some(&(ctx_actor, _))) if local.actor < ctx_actor => {
                    survivors += local.siblings.len();
                    if local.actor == actor {
                        actor_counter = local.counter;
                    }
                    i += 1;
                }
                (Some(local), None) => {
                    survivors += local.siblings.len();
                    if local.actor == actor {
                        actor_counter = local.counter;
                    }
                    i += 1;
                }
                (_, Some(&(ctx_actor, ctx_counter))) => {
                    if ctx_actor == actor {
                        actor_counter = ctx_counter;
                    }
                    j += 1;
                }
                (None, None) => unreachable!("loop condition"),
            }
        }
        let dot_counter = actor_counter
            .max(self.pruned_counter_floor)
            .checked_add(1)
            .ok_or(VersionError::CounterOverflow { actor })?;
        let sibling_count = survivors + 1;
        if sibling_count > SIBLINGS_MAX {
            return Err(VersionError::SiblingsOverflow {
                count: sibling_count as u64,
                max: SIBLINGS_MAX,
            });
        }

        // Then the update itself, moving the entries (no sibling is copied):
        // the clock joins the context, the siblings it covers go.
        let old = std::mem::take(&mut self.entries);
        let mut entries: Vec<Entry> = Vec::with_capacity(old.len() + ctx.len() + 1);
        let mut old = old.into_iter().peekable();
        let mut ctx = ctx.iter().copied().peekable();
        loop {
            let take_local = match (old.peek(), ctx.peek()) {
                (Some(local), Some(&(ctx_actor, _))) => {
                    if local.actor == ctx_actor {
                        None
                    } else {
                        Some(local.actor < ctx_actor)
                    }
                }
                (Some(_), None) => Some(true),
                (None, Some(_)) => Some(false),
                (None, None) => break,
            };
            match take_local {
                Some(true) => entries.push(old.next().expect("peeked")),
                Some(false) => {
                    let (ctx_actor, ctx_counter) = ctx.next().expect("peeked");
                    entries.push(Entry {
                        actor: ctx_actor,
                        counter: ctx_counter,
                        siblings: Vec::new(),
                    });
                }
                None => {
                    let mut local = old.next().expect("peeked");
                    let (_, ctx_counter) = ctx.next().expect("peeked");
                    local.counter = local.counter.max(ctx_counter);
                    local
                        .siblings
                        .retain(|sibling| sibling.dot_counter > ctx_counter);
                    entries.push(local);
                }
            }
        }

        let index = match entries.binary_search_by_key(&actor, |entry| entry.actor) {
            Ok(index) => index,
            Err(index) => {
                entries.insert(
                    index,
                    Entry {
                        actor,
                        counter: 0,
                        siblings: Vec::new(),
                    },
                );
                index
            }
        };
        let entry = &mut entries[index];
        debug_assert_eq!(entry.counter, actor_counter);
        entry.counter = dot_counter;
        entry.siblings.push(Sibling { dot_counter, value });
        self.entries = entries;
        debug_assert_eq!(self.sibling_count(), sibling_count);
        self.prune(CLOCK_ENTRIES_MAX);
        // Non-empty entries are at most SIBLINGS_MAX < CLOCK_ENTRIES_MAX, so
        // pruning empty entries always brings the clock within its bound.
        assert!(self.entries.len() <= CLOCK_ENTRIES_MAX);
        debug_assert_eq!(self.check_invariants(), Ok(()));
        Ok(())
    }

    /// Synchronises with another replica's copy (replica merge, read
    /// reconciliation, handoff). The result keeps a sibling of either side
    /// unless the other side has seen its dot and superseded it. Commutative,
    /// associative and idempotent while the clock stays within
    /// `CLOCK_ENTRIES_MAX` entries; past it, pruning can only add siblings.
    ///
    /// Refuses, leaving `self` unchanged, when the result would hold more
    /// than `SIBLINGS_MERGED_MAX` siblings or more than `CLOCK_ENTRIES_MAX`
    /// actors with siblings: nothing is ever dropped to fit.
    pub fn merge(&mut self, other: &SiblingSet) -> Result<(), VersionError> {
        let merged = self.merge_with_bound(other, CLOCK_ENTRIES_MAX)?;
        *self = merged;
        Ok(())
    }

    pub(crate) fn merge_with_bound(
        &self,
        other: &SiblingSet,
        entries_max: usize,
    ) -> Result<SiblingSet, VersionError> {
        let mut entries = Vec::with_capacity(self.entries.len() + other.entries.len());
        let (mut i, mut j) = (0, 0);
        while i < self.entries.len() || j < other.entries.len() {
            match (self.entries.get(i), other.entries.get(j)) {
                (Some(left), Some(right)) if left.actor == right.actor => {
                    entries.push(merge_entry(left, right));
                    i += 1;
                    j += 1;
                }
                (Some(left), Some(right)) if left.actor < right.actor => {
                    entries.push(left.clone());
                    i += 1;
                }
                (Some(_), Some(right)) | (None, Some(right)) => {
                    entries.push(right.clone());
                    j += 1;
                }
                (Some(left), None) => {
                    entries.push(left.clone());
                    i += 1;
                }
                (None, None) => unreachable!("loop condition"),
            }
        }
        let mut merged = SiblingSet {
            entries,
            pruned_counter_floor: self.pruned_counter_floor.max(other.pruned_counter_floor),
        };
        let sibling_count = merged.sibling_count();
        if sibling_count > SIBLINGS_MERGED_MAX {
            return Err(VersionError::SiblingsOverflow {
                count: sibling_count as u64,
                max: SIBLINGS_MERGED_MAX,
            });
        }
        merged.prune(entries_max);
        if merged.entries.len() > entries_max {
            return Err(VersionError::ClockEntriesOverflow {
                count: merged.entries.len() as u64,
                max: entries_max,
            });
        }
        debug_assert_eq!(merged.check_invariants(), Ok(()));
        Ok(merged)
    }

    /// Whether `self` has seen every event `other` has seen, so that
    /// replacing `other` by `self` loses nothing.
    pub fn descends(&self, other: &SiblingSet) -> bool {
        other
            .entries
            .iter()
            .all(|entry| self.counter(entry.actor) >= entry.counter)
    }

    /// Drops entries without siblings, smallest counter first, until at most
    /// `entries_max` remain (or only entries with siblings are left).
    ///
    /// Why this is safe: a dropped entry only forgets history, never a value.
    /// Forgetting history can make a superseded value look concurrent again
    /// (an extra sibling after a merge) but can never make one version look
    /// newer than another it did not see. The floor keeps the dropped
    /// actor's future dots above every dot it issued before.
    fn prune(&mut self, entries_max: usize) {
        if self.entries.len() <= entries_max {
            return;
        }
        let mut empty: Vec<(u64, ActorId)> = self
            .entries
            .iter()
            .filter(|entry| entry.siblings.is_empty())
            .map(|entry| (entry.counter, entry.actor))
            .collect();
        empty.sort_unstable();
        let drop_count = (self.entries.len() - entries_max).min(empty.len());
        let dropped = &empty[..drop_count];
        for &(counter, _) in dropped {
            self.pruned_counter_floor = self.pruned_counter_floor.max(counter);
        }
        self.entries.retain(|entry| {
            !(entry.siblings.is_empty()
                && dropped.binary_search(&(entry.counter, entry.actor)).is_ok())
        });
    }

    /// Checks every structural invariant; `decode` enforces the same rules.
    pub(crate) fn check_invariants(&self) -> Result<(), VersionError> {
        if self.entries.len() > CLOCK_ENTRIES_MAX {
            return Err(VersionError::ClockEntriesOverflow {
                count: self.entries.len() as u64,
                max: CLOCK_ENTRIES_MAX,
            });
        }
        for pair in self.entries.windows(2) {
            if pair[0].actor >= pair[1].actor {
                return Err(VersionError::ActorsNotSorted);
            }
        }
        for entry in &self.entries {
            if entry.counter == 0 {
                return Err(VersionError::CounterZero);
            }
            for pair in entry.siblings.windows(2) {
                if pair[0].dot_counter >= pair[1].dot_counter {
                    return Err(VersionError::DotsNotSorted);
                }
            }
            for sibling in &entry.siblings {
                if sibling.dot_counter == 0 || sibling.dot_counter > entry.counter {
                    return Err(VersionError::DotOutOfRange {
                        dot: sibling.dot_counter,
                        counter: entry.counter,
                    });
                }
            }
        }
        let sibling_count = self.sibling_count();
        if sibling_count > SIBLINGS_MERGED_MAX {
            return Err(VersionError::SiblingsOverflow {
                count: sibling_count as u64,
                max: SIBLINGS_MERGED_MAX,
            });
        }
        Ok(())
    }

    /// Deliberately broken, for the chaos tool's proof that its checker can
    /// fail (`debug_last_write_wins`, docs/chaos.md): drops every sibling but
    /// the one with the highest dot counter (ties: the highest actor) and
    /// keeps the clock, which is exactly the data loss of last-write-wins.
    /// Nothing calls it unless that test-only server option is set.
    #[doc(hidden)]
    pub fn drop_all_but_last_sibling(&mut self) {
        let last = self
            .entries
            .iter()
            .flat_map(|e| e.siblings.iter().map(move |s| (s.dot_counter, e.actor)))
            .max();
        for entry in &mut self.entries {
            entry
                .siblings
                .retain(|s| Some((s.dot_counter, entry.actor)) == last);
        }
    }

    /// The exact length of `encode`'s output, to size its buffer (a buffer
    /// of exactly this capacity becomes a `Bytes` without another allocation).
    pub fn encoded_len(&self) -> usize {
        let mut len =
            1 + varint_len(self.pruned_counter_floor) + varint_len(self.entries.len() as u64);
        let mut previous: ActorId = 0;
        for entry in &self.entries {
            len += varint_len(entry.actor - previous)
                + varint_len(entry.counter)
                + varint_len(entry.siblings.len() as u64);
            previous = entry.actor;
            for sibling in &entry.siblings {
                len += varint_len(entry.counter - sibling.dot_counter) + 1;
                if let Value::Data(bytes) = &sibling.value {
                    len += varint_len(bytes.len() as u64) + bytes.len();
                }
            }
        }
        len
    }

    /// Appends the canonical encoding (see `docs/versioning.md`):
    /// format byte, floor, entry count, then per entry the actor delta, the
    /// counter, the sibling count and per sibling `counter - dot`, a value
    /// tag and, for data, its length and bytes. All integers are varints.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(SIBLING_SET_FORMAT_VERSION);
        put_varint(out, self.pruned_counter_floor);
        put_varint(out, self.entries.len() as u64);
        let mut previous: ActorId = 0;
        for entry in &self.entries {
            put_varint(out, entry.actor - previous);
            previous = entry.actor;
            put_varint(out, entry.counter);
            put_varint(out, entry.siblings.len() as u64);
            for sibling in &entry.siblings {
                put_varint(out, entry.counter - sibling.dot_counter);
                match &sibling.value {
                    Value::Data(bytes) => {
                        out.push(VALUE_TAG_DATA);
                        put_varint(out, bytes.len() as u64);
                        out.extend_from_slice(bytes);
                    }
                    Value::Tombstone => out.push(VALUE_TAG_TOMBSTONE),
                }
            }
        }
    }

    /// Decodes and validates an encoding. Every bound and invariant is
    /// checked; no input panics or allocates more than its own length.
    /// Accepted inputs are canonical: `encode(decode(b)) == b`.
    pub fn decode(bytes: &[u8]) -> Result<SiblingSet, VersionError> {
        Self::decode_values(bytes, Bytes::copy_from_slice)
    }

    /// `decode`, with every value a slice of `bytes` instead of a copy (no
    /// allocation per sibling; the values keep `bytes` alive).
    pub fn decode_shared(bytes: &Bytes) -> Result<SiblingSet, VersionError> {
        Self::decode_values(bytes, |value| bytes.slice_ref(value))
    }

    /// `decode`, making each value's `Bytes` from its slice of the input.
    fn decode_values(
        bytes: &[u8],
        value_of: impl Fn(&[u8]) -> Bytes,
    ) -> Result<SiblingSet, VersionError> {
        let (mut walk, header) = Walk::start(bytes)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(header.entry_count as usize);
        while let Some(head) = walk.next_entry()? {
            let mut siblings: Vec<Sibling> = Vec::with_capacity(head.sibling_count as usize);
            while let Some(sibling) = walk.next_sibling()? {
                let value = match sibling.value {
                    Some(bytes) => Value::Data(value_of(bytes)),
                    None => Value::Tombstone,
                };
                siblings.push(Sibling {
                    dot_counter: sibling.dot_counter,
                    value,
                });
            }
            entries.push(Entry {
                actor: head.actor,
                counter: head.counter,
                siblings,
            });
        }
        let pruned_counter_floor = header.floor;
        let set = SiblingSet {
            entries,
            pruned_counter_floor,
        };
        debug_assert_eq!(set.check_invariants(), Ok(()));
        Ok(set)
    }
}

/// The length of `value`'s LEB128 varint.
fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Merges two entries of the same actor: the higher counter wins, and a
/// sibling survives unless the other side has seen its dot without keeping it.
fn merge_entry(left: &Entry, right: &Entry) -> Entry {
    debug_assert_eq!(left.actor, right.actor);
    let mut siblings = Vec::with_capacity(left.siblings.len() + right.siblings.len());
    let (mut i, mut j) = (0, 0);
    while i < left.siblings.len() || j < right.siblings.len() {
        match (left.siblings.get(i), right.siblings.get(j)) {
            (Some(l), Some(r)) if l.dot_counter == r.dot_counter => {
                // Both still hold the dot; with unique dots the values agree.
                // If they do not (an actor id reused after data loss), pick one
                // deterministically so that merge stays commutative.
                let keep = if l.value.tie_order() >= r.value.tie_order() {
                    l
                } else {
                    r
                };
                siblings.push(keep.clone());
                i += 1;
                j += 1;
            }
            (Some(l), Some(r)) if l.dot_counter < r.dot_counter => {
                if l.dot_counter > right.counter {
                    siblings.push(l.clone());
                }
                i += 1;
            }
            (Some(_), Some(r)) | (None, Some(r)) => {
                if r.dot_counter > left.counter {
                    siblings.push(r.clone());
                }
                j += 1;
            }
            (Some(l), None) => {
                if l.dot_counter > right.counter {
                    siblings.push(l.clone());
                }
                i += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    Entry {
        actor: left.actor,
        counter: left.counter.max(right.counter),
        siblings,
    }
}

#[cfg(test)]
mod varint_len_tests {
    use super::super::codec::put_varint;
    use super::varint_len;

    #[test]
    fn matches_the_encoding() {
        for shift in 0..64 {
            for value in [
                1u64 << shift,
                (1u64 << shift) - 1,
                (1u64 << shift) + 1,
                u64::MAX,
            ] {
                let mut out = Vec::new();
                put_varint(&mut out, value);
                assert_eq!(varint_len(value), out.len(), "{value}");
            }
        }
    }
}
