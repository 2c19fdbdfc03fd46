//! `Walk`: the one checked reader of the sibling-set encoding (see
//! `docs/versioning.md`). Every user of stored or received set bytes drives
//! it: `SiblingSet::decode` (builds the set), `EncodedSiblingSet::validate`
//! (records where the clock and the only value lie) and
//! `UpdatePlan::read_stored` (fills its fixed arrays).
//!
//! It yields the header, then each entry (actor, counter, sibling count),
//! then that entry's siblings (dot and value), and performs every check of
//! the encoding as it goes, in one fixed order, each with its own
//! `VersionError`: format byte; floor; entry count (at most
//! `CLOCK_ENTRIES_MAX`); per entry the actor delta (actors strictly
//! increasing, no overflow), the counter (not 0), the sibling count (the
//! running total at most `SIBLINGS_MERGED_MAX`); per sibling `counter - dot`
//! (dot in `1..=counter`, dots strictly increasing), the value tag, and for
//! data the length (within the input); at the end, no trailing bytes. A
//! user never checks the encoding itself, so a rule changed here changes
//! for all of them, with one exception to keep in step:
//! `view::validate_one_value` writes out these checks for the one-entry,
//! one-value shape (it only accepts; anything else comes here).
//!
//! Invariant: a walk never panics and never allocates, whatever the input;
//! a user that stops at the first error sees exactly the error, and accepts
//! exactly the inputs, of a walk driven to the end. Skipping siblings is
//! allowed: `next_entry` first walks (and checks) what is left of the
//! current entry.

use super::codec::Reader;
use super::error::VersionError;
use super::sibling_set::{SIBLING_SET_FORMAT_VERSION, VALUE_TAG_DATA, VALUE_TAG_TOMBSTONE};
use super::{ActorId, CLOCK_ENTRIES_MAX, SIBLINGS_MERGED_MAX};

/// The fields before the first entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The pruned-counter floor (any value).
    pub(crate) floor: u64,
    /// How many entries follow (at most `CLOCK_ENTRIES_MAX`).
    pub(crate) entry_count: u64,
    /// Where the entry count's varint starts: the clock as a context token
    /// holds it starts there.
    pub(crate) entry_count_at: usize,
}

/// An entry's fields before its siblings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryHead {
    pub(crate) actor: ActorId,
    /// At least 1.
    pub(crate) counter: u64,
    /// How many siblings `next_sibling` yields for this entry.
    pub(crate) sibling_count: u64,
    /// Where the sibling count's varint starts (the end of the actor and
    /// counter's bytes).
    pub(crate) sibling_count_at: usize,
}

/// One sibling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalkedSibling<'a> {
    /// In `1..=counter` of its entry, above the previous sibling's.
    pub(crate) dot_counter: u64,
    /// The value's bytes, a slice of the input (`None`: a tombstone). It
    /// ends at `Walk::position()` right after `next_sibling` returns.
    pub(crate) value: Option<&'a [u8]>,
}

/// A checked walk over one encoded sibling set (see the module header).
pub(crate) struct Walk<'a> {
    reader: Reader<'a>,
    /// Entries not yet started.
    entries_left: u64,
    /// Siblings of the current entry not yet read.
    siblings_left: u64,
    /// Siblings announced so far, over all entries (saturating).
    sibling_total: u64,
    /// No entry read yet: the next actor delta is the actor itself.
    first_entry: bool,
    actor: ActorId,
    counter: u64,
    /// The previous sibling's dot in this entry (0: none; dots are >= 1).
    last_dot: u64,
}

impl<'a> Walk<'a> {
    /// Starts a walk: reads and checks the format byte, the floor and the
    /// entry count.
    #[inline(always)]
    pub(crate) fn start(bytes: &'a [u8]) -> Result<(Walk<'a>, Header), VersionError> {
        let mut reader = Reader::new(bytes);
        let format = reader.u8()?;
        if format != SIBLING_SET_FORMAT_VERSION {
            return Err(VersionError::UnknownFormatVersion(format));
        }
        let floor = reader.varint()?;
        let entry_count_at = reader.position();
        let entry_count = reader.varint()?;
        if entry_count > CLOCK_ENTRIES_MAX as u64 {
            return Err(VersionError::ClockEntriesOverflow {
                count: entry_count,
                max: CLOCK_ENTRIES_MAX,
            });
        }
        let walk = Walk {
            reader,
            entries_left: entry_count,
            siblings_left: 0,
            sibling_total: 0,
            first_entry: true,
            actor: 0,
            counter: 0,
            last_dot: 0,
        };
        let header = Header {
            floor,
            entry_count,
            entry_count_at,
        };
        Ok((walk, header))
    }

    /// How many bytes have been read.
    #[inline(always)]
    pub(crate) fn position(&self) -> usize {
        self.reader.position()
    }

    /// The next entry's actor, counter and sibling count, checked; first
    /// walks the current entry's siblings not yet read. `Ok(None)` after
    /// the last entry, once the input is known to end there.
    #[inline(always)]
    pub(crate) fn next_entry(&mut self) -> Result<Option<EntryHead>, VersionError> {
        if self.siblings_left > 0 {
            self.skip_siblings()?;
        }
        if self.entries_left == 0 {
            self.reader.finish()?;
            return Ok(None);
        }
        self.entries_left -= 1;
        let delta = self.reader.varint()?;
        let actor = if self.first_entry {
            self.first_entry = false;
            delta
        } else {
            if delta == 0 {
                return Err(VersionError::ActorsNotSorted);
            }
            self.actor
                .checked_add(delta)
                .ok_or(VersionError::ActorsNotSorted)?
        };
        let counter = self.reader.varint()?;
        if counter == 0 {
            return Err(VersionError::CounterZero);
        }
        let sibling_count_at = self.reader.position();
        let sibling_count = self.reader.varint()?;
        self.sibling_total = self.sibling_total.saturating_add(sibling_count);
        if self.sibling_total > SIBLINGS_MERGED_MAX as u64 {
            return Err(VersionError::SiblingsOverflow {
                count: self.sibling_total,
                max: SIBLINGS_MERGED_MAX,
            });
        }
        self.actor = actor;
        self.counter = counter;
        self.siblings_left = sibling_count;
        self.last_dot = 0;
        Ok(Some(EntryHead {
            actor,
            counter,
            sibling_count,
            sibling_count_at,
        }))
    }

    /// Walks the current entry's siblings not yet read (a caller that
    /// skips them still gets their checks). Out of line: the users read
    /// every sibling.
    #[cold]
    #[inline(never)]
    fn skip_siblings(&mut self) -> Result<(), VersionError> {
        while self.next_sibling()?.is_some() {}
        Ok(())
    }

    /// The current entry's next sibling, checked. `Ok(None)` when the
    /// entry has no sibling left.
    #[inline(always)]
    pub(crate) fn next_sibling(&mut self) -> Result<Option<WalkedSibling<'a>>, VersionError> {
        if self.siblings_left == 0 {
            return Ok(None);
        }
        self.siblings_left -= 1;
        let counter = self.counter;
        let back = self.reader.varint()?;
        if back >= counter {
            return Err(VersionError::DotOutOfRange {
                dot: counter.wrapping_sub(back),
                counter,
            });
        }
        let dot_counter = counter - back;
        if self.last_dot >= dot_counter {
            return Err(VersionError::DotsNotSorted);
        }
        self.last_dot = dot_counter;
        let value = match self.reader.u8()? {
            VALUE_TAG_DATA => {
                let length = self.reader.varint()?;
                Some(self.reader.slice(length)?)
            }
            VALUE_TAG_TOMBSTONE => None,
            tag => return Err(VersionError::UnknownValueTag(tag)),
        };
        Ok(Some(WalkedSibling { dot_counter, value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::codec::put_varint;

    /// Drives a walk to the end, collecting what it yields.
    #[allow(clippy::type_complexity)]
    fn walk_all(
        bytes: &[u8],
    ) -> Result<(u64, Vec<(u64, u64, Vec<(u64, Option<Vec<u8>>)>)>), VersionError> {
        let (mut walk, header) = Walk::start(bytes)?;
        let mut entries = Vec::new();
        while let Some(entry) = walk.next_entry()? {
            let mut siblings = Vec::new();
            while let Some(sibling) = walk.next_sibling()? {
                siblings.push((sibling.dot_counter, sibling.value.map(<[u8]>::to_vec)));
            }
            assert_eq!(siblings.len() as u64, entry.sibling_count);
            entries.push((entry.actor, entry.counter, siblings));
        }
        assert_eq!(entries.len() as u64, header.entry_count);
        Ok((header.floor, entries))
    }

    #[test]
    fn yields_the_fields_and_positions() {
        // floor 300, two entries: actor 5 counter 4 with dots 2 (data "ab")
        // and 4 (tombstone); actor 7 counter 1 without siblings.
        let mut bytes = vec![SIBLING_SET_FORMAT_VERSION];
        put_varint(&mut bytes, 300);
        bytes.extend_from_slice(&[2, 5, 4, 2, 2, 0, 2, b'a', b'b', 0, 1, 2, 1, 0]);
        let (mut walk, header) = Walk::start(&bytes).unwrap();
        assert_eq!((header.floor, header.entry_count), (300, 2));
        assert_eq!(header.entry_count_at, 3);
        let first = walk.next_entry().unwrap().unwrap();
        assert_eq!((first.actor, first.counter, first.sibling_count), (5, 4, 2));
        assert_eq!(first.sibling_count_at, 6);
        let data = walk.next_sibling().unwrap().unwrap();
        assert_eq!((data.dot_counter, data.value), (2, Some(&b"ab"[..])));
        assert_eq!(walk.position(), 12);
        let tombstone = walk.next_sibling().unwrap().unwrap();
        assert_eq!((tombstone.dot_counter, tombstone.value), (4, None));
        assert!(walk.next_sibling().unwrap().is_none());
        let second = walk.next_entry().unwrap().unwrap();
        assert_eq!(
            (second.actor, second.counter, second.sibling_count),
            (7, 1, 0)
        );
        assert!(walk.next_sibling().unwrap().is_none());
        assert!(walk.next_entry().unwrap().is_none());
        assert_eq!(walk.position(), bytes.len());
    }

    #[test]
    fn skipped_siblings_are_still_checked() {
        // The first entry's second sibling has an unknown value tag; a
        // caller that skips to the next entry still gets the error.
        let bytes = [1, 0, 2, 5, 4, 2, 2, 1, 0, 9, 2, 1, 0];
        let (mut walk, _) = Walk::start(&bytes).unwrap();
        walk.next_entry().unwrap().unwrap();
        assert_eq!(walk.next_entry(), Err(VersionError::UnknownValueTag(9)));
        // Skipping a valid entry's siblings lands on the next entry.
        let bytes = [1, 0, 2, 5, 4, 2, 2, 1, 0, 1, 2, 1, 0];
        let (mut walk, _) = Walk::start(&bytes).unwrap();
        walk.next_entry().unwrap().unwrap();
        let second = walk.next_entry().unwrap().unwrap();
        assert_eq!((second.actor, second.counter), (7, 1));
        assert!(walk.next_entry().unwrap().is_none());
    }

    #[test]
    fn every_check_has_its_error() {
        let cases: &[(&[u8], VersionError)] = &[
            (&[], VersionError::Truncated),
            (&[2, 0, 0], VersionError::UnknownFormatVersion(2)),
            (&[1, 0x80, 0x00, 0], VersionError::VarintMalformed),
            (
                &[1, 0, 129, 1],
                VersionError::ClockEntriesOverflow {
                    count: 129,
                    max: CLOCK_ENTRIES_MAX,
                },
            ),
            (&[1, 0, 2, 5, 1, 0, 0, 1, 0], VersionError::ActorsNotSorted),
            (&[1, 0, 1, 5, 0, 0], VersionError::CounterZero),
            (
                &[1, 0, 1, 5, 1, 0x81, 0x02],
                VersionError::SiblingsOverflow {
                    count: 257,
                    max: SIBLINGS_MERGED_MAX,
                },
            ),
            (
                &[1, 0, 1, 5, 1, 1, 1, 0],
                VersionError::DotOutOfRange { dot: 0, counter: 1 },
            ),
            (&[1, 0, 1, 5, 2, 2, 0, 1, 0, 1], VersionError::DotsNotSorted),
            (&[1, 0, 1, 5, 2, 1, 0, 7], VersionError::UnknownValueTag(7)),
            (
                &[1, 0, 1, 5, 2, 1, 0, 0, 9, 1],
                VersionError::LengthOutOfRange {
                    length: 9,
                    remaining: 1,
                },
            ),
            (&[1, 0, 0, 0], VersionError::TrailingBytes { count: 1 }),
        ];
        for (bytes, error) in cases {
            assert_eq!(walk_all(bytes), Err(error.clone()), "{bytes:?}");
        }
        // An actor delta that overflows u64 is "not sorted" too.
        let mut bytes = vec![1, 0, 2];
        put_varint(&mut bytes, u64::MAX);
        bytes.extend_from_slice(&[1, 0]);
        put_varint(&mut bytes, 1);
        bytes.extend_from_slice(&[1, 0]);
        assert_eq!(walk_all(&bytes), Err(VersionError::ActorsNotSorted));
    }
}
