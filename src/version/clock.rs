//! `VersionVector`: a causal summary, one `(actor, counter)` entry per actor.
//!
//! Entry `(a, n)` means "every event of actor `a` numbered `1..=n` is in the
//! history". Invariants: entries are sorted by actor with no duplicates, no
//! counter is zero, and there are at most `CLOCK_ENTRIES_MAX` entries.

use super::codec::{put_varint, Reader};
use super::error::VersionError;
use super::{ActorId, CLOCK_ENTRIES_MAX};

/// A version vector: what a get returns as its context, and what a put
/// carries back to say which versions the client saw (§4.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    /// Sorted by actor; counters are never zero. A missing actor counts as 0.
    entries: Vec<(ActorId, u64)>,
}

impl VersionVector {
    /// The empty clock: a put with it creates a sibling of whatever exists.
    pub fn new() -> Self {
        VersionVector {
            entries: Vec::new(),
        }
    }

    /// Builds a clock from entries, checking every invariant: sorted, unique
    /// actors, non-zero counters, at most `CLOCK_ENTRIES_MAX` entries.
    pub fn from_entries(entries: Vec<(ActorId, u64)>) -> Result<Self, VersionError> {
        if entries.len() > CLOCK_ENTRIES_MAX {
            return Err(VersionError::ClockEntriesOverflow {
                count: entries.len() as u64,
                max: CLOCK_ENTRIES_MAX,
            });
        }
        for pair in entries.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(VersionError::ActorsNotSorted);
            }
        }
        if entries.iter().any(|&(_, counter)| counter == 0) {
            return Err(VersionError::CounterZero);
        }
        Ok(VersionVector { entries })
    }

    /// Internal constructor for clocks built by this module, which are
    /// correct by construction; the invariants are still asserted.
    pub(crate) fn from_sorted_unchecked(entries: Vec<(ActorId, u64)>) -> Self {
        debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
        debug_assert!(entries.iter().all(|&(_, counter)| counter > 0));
        assert!(entries.len() <= CLOCK_ENTRIES_MAX);
        VersionVector { entries }
    }

    pub fn entries(&self) -> &[(ActorId, u64)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counter of `actor`, 0 when absent.
    pub fn get(&self, actor: ActorId) -> u64 {
        match self.entries.binary_search_by_key(&actor, |&(a, _)| a) {
            Ok(index) => self.entries[index].1,
            Err(_) => 0,
        }
    }

    /// Whether `self` has seen every event that `other` has seen.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|&(actor, counter)| self.get(actor) >= counter)
    }

    /// Joins `other` into `self` (pointwise maximum). When the join has more
    /// than `CLOCK_ENTRIES_MAX` entries the ones with the smallest counters are
    /// dropped: a smaller clock covers less, so a put carrying it can only keep
    /// extra siblings, never discard one it did not see.
    pub fn merge(&mut self, other: &VersionVector) {
        let mut joined = Vec::with_capacity(self.entries.len() + other.entries.len());
        let (mut i, mut j) = (0, 0);
        while i < self.entries.len() || j < other.entries.len() {
            let left = self.entries.get(i).copied();
            let right = other.entries.get(j).copied();
            match (left, right) {
                (Some(l), Some(r)) if l.0 == r.0 => {
                    joined.push((l.0, l.1.max(r.1)));
                    i += 1;
                    j += 1;
                }
                (Some(l), Some(r)) if l.0 < r.0 => {
                    joined.push(l);
                    i += 1;
                }
                (Some(_), Some(r)) | (None, Some(r)) => {
                    joined.push(r);
                    j += 1;
                }
                (Some(l), None) => {
                    joined.push(l);
                    i += 1;
                }
                (None, None) => unreachable!("loop condition"),
            }
        }
        if joined.len() > CLOCK_ENTRIES_MAX {
            let mut by_counter: Vec<(u64, ActorId)> = joined
                .iter()
                .map(|&(actor, counter)| (counter, actor))
                .collect();
            by_counter.sort_unstable();
            let drop_count = joined.len() - CLOCK_ENTRIES_MAX;
            let dropped: Vec<ActorId> = by_counter[..drop_count]
                .iter()
                .map(|&(_, actor)| actor)
                .collect();
            joined.retain(|(actor, _)| !dropped.contains(actor));
        }
        self.entries = joined;
        assert!(self.entries.len() <= CLOCK_ENTRIES_MAX);
    }

    /// Decodes a clock's body (`encode_entries`) into `entries` (empty;
    /// a caller's reusable buffer, or a new `VersionVector`'s).
    pub(crate) fn decode_body_into(
        reader: &mut Reader<'_>,
        entries: &mut Vec<(ActorId, u64)>,
    ) -> Result<(), VersionError> {
        let count = reader.varint()?;
        if count > CLOCK_ENTRIES_MAX as u64 {
            return Err(VersionError::ClockEntriesOverflow {
                count,
                max: CLOCK_ENTRIES_MAX,
            });
        }
        entries.reserve_exact(count as usize);
        let mut previous: Option<ActorId> = None;
        for _ in 0..count {
            let delta = reader.varint()?;
            let actor = match previous {
                None => delta,
                Some(previous) => {
                    if delta == 0 {
                        return Err(VersionError::ActorsNotSorted);
                    }
                    previous
                        .checked_add(delta)
                        .ok_or(VersionError::ActorsNotSorted)?
                }
            };
            let counter = reader.varint()?;
            if counter == 0 {
                return Err(VersionError::CounterZero);
            }
            entries.push((actor, counter));
            previous = Some(actor);
        }
        Ok(())
    }
}

/// Appends the body encoding of a clock with `entries` (the counterpart of
/// `VersionVector::decode_body_into`): entry count, then per entry the actor as a
/// delta from the previous actor (the first from 0) and the counter, all as
/// canonical varints. `entries` must be what a `VersionVector` holds:
/// ascending actors, counters above 0.
pub(crate) fn encode_entries(
    entries: impl ExactSizeIterator<Item = (ActorId, u64)>,
    out: &mut Vec<u8>,
) {
    put_varint(out, entries.len() as u64);
    let mut previous: ActorId = 0;
    for (actor, counter) in entries {
        debug_assert!(previous == 0 || actor > previous);
        debug_assert!(counter > 0);
        put_varint(out, actor - previous);
        put_varint(out, counter);
        previous = actor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_descends_merge() {
        let a = VersionVector::from_entries(vec![(1, 2), (3, 1)]).unwrap();
        let b = VersionVector::from_entries(vec![(1, 1), (2, 5)]).unwrap();
        assert_eq!(a.get(1), 2);
        assert_eq!(a.get(2), 0);
        assert!(!a.descends(&b));
        assert!(!b.descends(&a));
        let mut joined = a.clone();
        joined.merge(&b);
        assert_eq!(joined.entries(), &[(1, 2), (2, 5), (3, 1)]);
        assert!(joined.descends(&a) && joined.descends(&b));
        assert!(a.descends(&VersionVector::new()));
    }

    #[test]
    fn from_entries_validates() {
        assert_eq!(
            VersionVector::from_entries(vec![(2, 1), (1, 1)]),
            Err(VersionError::ActorsNotSorted)
        );
        assert_eq!(
            VersionVector::from_entries(vec![(1, 1), (1, 2)]),
            Err(VersionError::ActorsNotSorted)
        );
        assert_eq!(
            VersionVector::from_entries(vec![(1, 0)]),
            Err(VersionError::CounterZero)
        );
        let too_many: Vec<_> = (0..=CLOCK_ENTRIES_MAX as u64).map(|a| (a, 1)).collect();
        assert!(matches!(
            VersionVector::from_entries(too_many),
            Err(VersionError::ClockEntriesOverflow { .. })
        ));
    }

    #[test]
    fn merge_over_bound_drops_smallest_counters() {
        let a: Vec<_> = (0..CLOCK_ENTRIES_MAX as u64)
            .map(|a| (a * 2, a + 10))
            .collect();
        let mut a = VersionVector::from_entries(a).unwrap();
        let b = VersionVector::from_entries(vec![(1, 1), (3, 1_000)]).unwrap();
        a.merge(&b);
        assert_eq!(a.len(), CLOCK_ENTRIES_MAX);
        // (1, 1) and the smallest (0, 10) are gone; (3, 1000) stays.
        assert_eq!(a.get(1), 0);
        assert_eq!(a.get(0), 0);
        assert_eq!(a.get(3), 1_000);
    }
}
