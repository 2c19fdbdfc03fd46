//! `EncodedSiblingSet`: a stored sibling set read in place, without
//! decoding it into a `SiblingSet`.
//!
//! A get answered by the only replica needs the set's live values and its
//! clock, nothing else: building a `SiblingSet` (a `Vec` of entries, a `Vec`
//! of siblings per entry, a `Bytes` per value) and then a `Vec` of reply
//! siblings only to copy the values into the reply and drop it all again
//! was most of a get's server-side work. The view validates the encoding
//! once with the checked walker `SiblingSet::decode` drives (`walk.rs`: same
//! checks, same order, same error), and then hands out the clock entries and values as slices of the
//! encoded bytes.
//!
//! Invariant: `EncodedSiblingSet::validate(b)` succeeds exactly when
//! `SiblingSet::decode(&b)` does, with the same error otherwise, and then
//! `clock_entries()` equals `decode(b).clock_entries()` and `values()`
//! equals `decode(b).siblings()`'s values in order (tested against the
//! decoder on random and damaged encodings, `view::tests`).

use std::ops::Range;

use bytes::Bytes;

use super::codec::Reader;
use super::error::VersionError;
use super::sibling_set::{SIBLING_SET_FORMAT_VERSION, VALUE_TAG_DATA};
use super::walk::Walk;
use super::ActorId;

/// The encoding of an empty set (`SiblingSet::new()`): format, floor 0,
/// no entries.
const EMPTY: &[u8] = &[SIBLING_SET_FORMAT_VERSION, 0, 0];

/// The canonical encoding of a sibling set, known to be valid: held
/// (`Bytes`, the default) or borrowed (`&[u8]`: a get that writes its reply
/// while the store lends it the record, `Store::read_now`).
#[derive(Clone, Debug)]
pub struct EncodedSiblingSet<B = Bytes> {
    bytes: B,
    /// Siblings that are not tombstones.
    data_siblings: usize,
    /// Where the bytes `write_clock` copies lie when they are one run: the
    /// entry count and, if there is one, the only entry's actor and counter.
    /// A set written by one coordinator (most keys) has one entry.
    clock_run: Option<Range<usize>>,
    /// Where the value lies when there is exactly one data sibling.
    only_value: Range<usize>,
}

impl EncodedSiblingSet {
    /// The empty set: what a get of a key never written answers.
    pub fn empty() -> Self {
        let empty = EncodedSiblingSet::<&'static [u8]>::empty_borrowed();
        EncodedSiblingSet {
            bytes: Bytes::from_static(empty.bytes),
            data_siblings: empty.data_siblings,
            clock_run: empty.clock_run,
            only_value: empty.only_value,
        }
    }
}

impl EncodedSiblingSet<&'static [u8]> {
    /// `empty`, borrowed.
    pub fn empty_borrowed() -> Self {
        EncodedSiblingSet {
            bytes: EMPTY,
            data_siblings: 0,
            clock_run: Some(2..3),
            only_value: 0..0,
        }
    }
}

impl<B: AsRef<[u8]>> EncodedSiblingSet<B> {
    /// Checks `bytes` as `SiblingSet::decode` would, without allocating.
    pub fn validate(bytes: B) -> Result<Self, VersionError> {
        let Layout {
            data_siblings,
            clock_run,
            only_value,
        } = validate(bytes.as_ref())?;
        Ok(EncodedSiblingSet {
            bytes,
            data_siblings,
            clock_run,
            only_value,
        })
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &B {
        &self.bytes
    }

    /// How many siblings are values (not tombstones).
    pub fn data_siblings(&self) -> usize {
        self.data_siblings
    }

    /// The entries of the set's clock by ascending actor, as
    /// `SiblingSet::clock_entries` gives them.
    pub fn clock_entries(&self) -> ClockEntries<'_> {
        let mut cursor = Cursor::after_header(self.bytes.as_ref());
        let entries = cursor.varint() as usize;
        ClockEntries {
            cursor,
            entries,
            actor: 0,
        }
    }

    /// Appends the clock's encoding as a context token holds it (entry
    /// count, then per entry the actor delta and the counter), exactly what
    /// `clock::encode_entries(self.clock_entries(), out)` appends. The set's
    /// encoding holds those same canonical varints in that order, with each
    /// entry's siblings between them, so they are copied, not re-encoded.
    pub(crate) fn write_clock(&self, out: &mut Vec<u8>) {
        if let Some(run) = &self.clock_run {
            out.extend_from_slice(&self.bytes.as_ref()[run.clone()]);
            return;
        }
        let mut cursor = Cursor::after_header(self.bytes.as_ref());
        // Copied in runs: the count and the first entry's actor and counter
        // are one, each later entry's actor and counter another.
        let mut run = cursor.position;
        let entries = cursor.varint();
        for index in 0..entries {
            cursor.varint(); // actor delta
            cursor.varint(); // counter
            out.extend_from_slice(&self.bytes.as_ref()[run..cursor.position]);
            if index + 1 < entries {
                for _ in 0..cursor.varint() {
                    cursor.skip_sibling();
                }
                run = cursor.position;
            }
        }
        if entries == 0 {
            out.extend_from_slice(&self.bytes.as_ref()[run..cursor.position]);
        }
    }

    /// Every sibling's value by actor then dot, as `SiblingSet::siblings`
    /// gives them: `None` for a tombstone.
    pub fn values(&self) -> Values<'_> {
        let mut cursor = Cursor::after_header(self.bytes.as_ref());
        let entries = cursor.varint() as usize;
        Values {
            cursor,
            entries,
            siblings: 0,
        }
    }

    /// The values that are not tombstones, in `values()` order.
    pub fn data_values(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let only = self.data_siblings == 1;
        DataValues {
            values: (!only).then(|| self.values()),
            only: only.then(|| &self.bytes.as_ref()[self.only_value.clone()]),
            left: self.data_siblings,
        }
    }
}

/// What `validate` learns of a set's layout on the way.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    data_siblings: usize,
    clock_run: Option<Range<usize>>,
    only_value: Range<usize>,
}

/// The layout of `bytes`: `validate_one_value` for the shape most keys
/// have, else the checked walk.
#[inline]
fn validate(bytes: &[u8]) -> Result<Layout, VersionError> {
    match validate_one_value(bytes) {
        Some(layout) => Ok(layout),
        None => validate_walk(bytes),
    }
}

/// The layout of a set of the shape a key written by one coordinator has
/// (nearly every key a get reads): one clock entry holding one data
/// sibling. It makes, for that shape, every check the walk makes (format,
/// canonical varints, counter not 0, dot in `1..=counter`, the value tag,
/// the length ending the input exactly), in far fewer instructions (the
/// walk's general bookkeeping was about 230 per get). It refuses nothing:
/// `None`, for another shape or for any check failing, leaves the bytes to
/// `validate_walk`, which then accepts or refuses them with its error. So
/// `validate` accepts exactly what the walk accepts, and where this
/// accepts, the layout is the walk's (`the_one_value_path_lays_out_as_the_walk`).
#[inline(always)]
fn validate_one_value(bytes: &[u8]) -> Option<Layout> {
    let mut reader = Reader::new(bytes);
    if reader.u8().ok()? != SIBLING_SET_FORMAT_VERSION {
        return None;
    }
    reader.varint().ok()?; // the floor: any value
    let entry_count_at = reader.position();
    if reader.varint().ok()? != 1 {
        return None;
    }
    reader.varint().ok()?; // the only entry's actor: any value
    let counter = reader.varint().ok()?;
    let sibling_count_at = reader.position();
    if reader.varint().ok()? != 1 {
        return None;
    }
    // The dot is `counter - back`: in 1..=counter when back < counter
    // (which also refuses a counter of 0).
    if reader.varint().ok()? >= counter || reader.u8().ok()? != VALUE_TAG_DATA {
        return None;
    }
    let length = reader.varint().ok()?;
    if length != reader.remaining() as u64 {
        return None;
    }
    Some(Layout {
        data_siblings: 1,
        clock_run: Some(entry_count_at..sibling_count_at),
        only_value: reader.position()..bytes.len(),
    })
}

/// Walks `bytes` with the checked walker (`SiblingSet::decode`'s walk),
/// building nothing, and records the layout on the way.
fn validate_walk(bytes: &[u8]) -> Result<Layout, VersionError> {
    let (mut walk, header) = Walk::start(bytes)?;
    let clock_start = header.entry_count_at;
    let mut clock_end = walk.position();
    let mut only_value = 0..0;
    let mut data_siblings = 0;
    let mut first = true;
    while let Some(entry) = walk.next_entry()? {
        if first {
            first = false;
            clock_end = entry.sibling_count_at;
        }
        while let Some(sibling) = walk.next_sibling()? {
            if let Some(value) = sibling.value {
                let end = walk.position();
                only_value = end - value.len()..end;
                data_siblings += 1;
            }
        }
    }
    Ok(Layout {
        data_siblings,
        clock_run: (header.entry_count <= 1).then_some(clock_start..clock_end),
        only_value,
    })
}

/// A cursor over bytes `validate` accepted: no checks (a read past the end
/// would be a bug, and panics on the slice bound).
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    /// Past the format byte and the floor, at the entry count.
    fn after_header(bytes: &'a [u8]) -> Self {
        let mut cursor = Cursor { bytes, position: 1 };
        cursor.varint();
        cursor
    }

    fn u8(&mut self) -> u8 {
        let byte = self.bytes[self.position];
        self.position += 1;
        byte
    }

    fn varint(&mut self) -> u64 {
        let first = self.u8();
        if first < 0x80 {
            return u64::from(first);
        }
        let mut value = u64::from(first & 0x7f);
        let mut shift = 7;
        loop {
            let byte = self.u8();
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    fn skip_sibling(&mut self) {
        self.varint(); // counter - dot
        if self.u8() == VALUE_TAG_DATA {
            self.position += self.varint() as usize;
        }
    }

    /// Reads one sibling: its value, `None` for a tombstone.
    fn sibling(&mut self) -> Option<&'a [u8]> {
        self.varint(); // counter - dot
        match self.u8() {
            VALUE_TAG_DATA => {
                let length = self.varint() as usize;
                let start = self.position;
                self.position += length;
                Some(&self.bytes[start..self.position])
            }
            _ => None,
        }
    }
}

/// `EncodedSiblingSet::clock_entries`.
pub struct ClockEntries<'a> {
    cursor: Cursor<'a>,
    entries: usize,
    actor: ActorId,
}

impl Iterator for ClockEntries<'_> {
    type Item = (ActorId, u64);

    fn next(&mut self) -> Option<(ActorId, u64)> {
        if self.entries == 0 {
            return None;
        }
        self.entries -= 1;
        // The first delta is the actor itself, and `actor` starts at 0.
        self.actor += self.cursor.varint();
        let counter = self.cursor.varint();
        for _ in 0..self.cursor.varint() {
            self.cursor.skip_sibling();
        }
        Some((self.actor, counter))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.entries, Some(self.entries))
    }
}

impl ExactSizeIterator for ClockEntries<'_> {}

/// `EncodedSiblingSet::values`.
pub struct Values<'a> {
    cursor: Cursor<'a>,
    /// Entries not yet started.
    entries: usize,
    /// Siblings left in the current entry.
    siblings: u64,
}

impl<'a> Iterator for Values<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Option<&'a [u8]>> {
        while self.siblings == 0 {
            if self.entries == 0 {
                return None;
            }
            self.entries -= 1;
            self.cursor.varint(); // actor delta
            self.cursor.varint(); // counter
            self.siblings = self.cursor.varint();
        }
        self.siblings -= 1;
        Some(self.cursor.sibling())
    }
}

/// `EncodedSiblingSet::data_values`: the only value from where `validate`
/// saw it, or the values found by walking the set.
struct DataValues<'a> {
    values: Option<Values<'a>>,
    only: Option<&'a [u8]>,
    left: usize,
}

impl<'a> Iterator for DataValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if let Some(only) = self.only.take() {
            return Some(only);
        }
        let values = self.values.as_mut()?;
        loop {
            if let Some(value) = values.next()? {
                return Some(value);
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for DataValues<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::sibling_set::VALUE_TAG_TOMBSTONE;
    use crate::version::{SiblingSet, Value, CLOCK_ENTRIES_MAX, SIBLINGS_MERGED_MAX};

    use crate::test_rng::Rng;

    /// A random valid encoding, written by hand so that every shape the
    /// format allows can come up: no entries, entries without siblings,
    /// many actors, tombstones, empty values, large counters and actors,
    /// and the maximum entry and sibling counts.
    fn random_encoding(rng: &mut Rng) -> Vec<u8> {
        use crate::version::codec::put_varint;
        let mut out = vec![SIBLING_SET_FORMAT_VERSION];
        let big = |rng: &mut Rng| match rng.below(4) {
            0 => rng.below(4),
            1 => rng.below(300),
            2 => rng.next() >> rng.below(64),
            _ => u64::MAX - rng.below(3),
        };
        put_varint(&mut out, big(rng));
        let entries = match rng.below(10) {
            0 => 0,
            1 => CLOCK_ENTRIES_MAX as u64,
            _ => 1 + rng.below(5),
        };
        put_varint(&mut out, entries);
        let mut siblings_left = SIBLINGS_MERGED_MAX as u64;
        let mut actor: u64 = 0;
        for index in 0..entries {
            // Leave room for the remaining actors below u64::MAX.
            let room = (u64::MAX - actor) / (entries - index + 1);
            let delta = if index == 0 {
                rng.below(room.max(1))
            } else {
                1 + rng.below(room.clamp(1, 1 << 40))
            };
            actor += delta;
            put_varint(&mut out, delta);
            let counter = 1 + (big(rng) >> 1);
            put_varint(&mut out, counter);
            let want = match rng.below(8) {
                0 => siblings_left,
                1 => 0,
                _ => rng.below(4),
            };
            let count = want.min(siblings_left).min(counter);
            siblings_left -= count;
            put_varint(&mut out, count);
            // `count` distinct dots in 1..=counter, ascending: the last
            // `count` below the counter, spaced by random gaps where room.
            let mut dots: Vec<u64> = Vec::new();
            let mut dot = counter;
            for left in (0..count).rev() {
                dots.push(dot);
                let gap_room = dot.saturating_sub(1).saturating_sub(left);
                dot -= 1 + if gap_room > 0 {
                    rng.below(gap_room.min(3) + 1)
                } else {
                    0
                };
            }
            dots.reverse();
            for dot in dots {
                put_varint(&mut out, counter - dot);
                if rng.below(3) == 0 {
                    out.push(VALUE_TAG_TOMBSTONE);
                } else {
                    let length = match rng.below(6) {
                        0 => 0,
                        1 => 1000 + rng.below(3000),
                        _ => rng.below(120),
                    };
                    out.push(VALUE_TAG_DATA);
                    put_varint(&mut out, length);
                    out.extend((0..length).map(|_| rng.next() as u8));
                }
            }
        }
        out
    }

    /// The view agrees with the decoder on `bytes`: both refuse it with the
    /// same error, or both accept it and give the same clock and values.
    fn assert_agrees(bytes: &[u8]) -> bool {
        let decoded = SiblingSet::decode(bytes);
        let viewed = EncodedSiblingSet::validate(Bytes::copy_from_slice(bytes));
        match (decoded, viewed) {
            (Err(expected), Err(got)) => {
                assert_eq!(got, expected, "{bytes:?}");
                false
            }
            (Ok(set), Ok(view)) => {
                let clock: Vec<_> = set.clock_entries().collect();
                assert_eq!(view.clock_entries().collect::<Vec<_>>(), clock);
                assert_eq!(view.clock_entries().len(), clock.len());
                let values: Vec<Option<&[u8]>> = set
                    .siblings()
                    .map(|(_, value)| match value {
                        Value::Data(bytes) => Some(bytes.as_ref()),
                        Value::Tombstone => None,
                    })
                    .collect();
                assert_eq!(view.values().collect::<Vec<_>>(), values);
                let mut expected = Vec::new();
                crate::version::clock::encode_entries(set.clock_entries(), &mut expected);
                let mut written = vec![0xee];
                view.write_clock(&mut written);
                assert_eq!(written[1..], expected[..], "write_clock");
                let data: Vec<&[u8]> = values.iter().flatten().copied().collect();
                assert_eq!(view.data_siblings(), data.len());
                assert_eq!(view.data_values().len(), data.len());
                assert_eq!(view.data_values().collect::<Vec<_>>(), data);
                true
            }
            (decoded, viewed) => {
                panic!("decoder {decoded:?} but view {viewed:?} for {bytes:?}")
            }
        }
    }

    #[test]
    fn agrees_with_the_decoder_on_valid_sets() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut max_entries, mut max_siblings) = (false, false);
        for _ in 0..3000 {
            let bytes = random_encoding(&mut rng);
            assert!(assert_agrees(&bytes), "generated set refused: {bytes:?}");
            let set = SiblingSet::decode(&bytes).unwrap();
            max_entries |= set.clock_entries().len() == CLOCK_ENTRIES_MAX;
            max_siblings |= set.sibling_count() == SIBLINGS_MERGED_MAX;
        }
        assert!(max_entries && max_siblings, "the bounds were reached");
        let empty = EncodedSiblingSet::empty();
        assert_eq!(SiblingSet::decode(empty.bytes()), Ok(SiblingSet::new()));
        assert!(assert_agrees(empty.bytes()));
    }

    /// Damages non-empty `bytes` one way: a flipped bit, a random byte, a
    /// truncation or a byte appended.
    fn damage(rng: &mut Rng, bytes: &mut Vec<u8>) {
        match rng.below(4) {
            0 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
            2 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            _ => bytes.push(rng.next() as u8),
        }
    }

    /// A set of one entry holding one data sibling, as `validate_one_value`
    /// reads it, with random floor, actor, counter, dot and value.
    fn one_value_encoding(rng: &mut Rng) -> Vec<u8> {
        use crate::version::codec::put_varint;
        let big = |rng: &mut Rng| match rng.below(4) {
            0 => rng.below(4),
            1 => rng.below(300),
            2 => rng.next() >> rng.below(64),
            _ => u64::MAX - rng.below(3),
        };
        let mut out = vec![SIBLING_SET_FORMAT_VERSION];
        put_varint(&mut out, big(rng));
        out.push(1);
        put_varint(&mut out, big(rng));
        let counter = 1 + (big(rng) >> 1);
        put_varint(&mut out, counter);
        out.push(1);
        put_varint(&mut out, rng.below(counter));
        out.push(VALUE_TAG_DATA);
        let length = match rng.below(5) {
            0 => 0,
            1 => 128 + rng.below(300),
            _ => rng.below(128),
        };
        put_varint(&mut out, length);
        out.extend((0..length).map(|_| rng.next() as u8));
        out
    }

    #[test]
    fn the_one_value_path_lays_out_as_the_walk() {
        let mut rng = Rng(0x0e1f_5eed_0f0e_1ab5);
        let (mut taken, mut left_to_the_walk) = (0, 0);
        for round in 0..20_000 {
            let mut bytes = one_value_encoding(&mut rng);
            // Two rounds in three damage the bytes.
            if rng.below(3) != 0 {
                damage(&mut rng, &mut bytes);
            }
            match validate_one_value(&bytes) {
                Some(layout) => {
                    taken += 1;
                    assert_eq!(
                        Ok(layout),
                        validate_walk(&bytes),
                        "round {round}: {bytes:?}"
                    );
                }
                None => left_to_the_walk += 1,
            }
            // And through `validate`, whichever path it took, the view
            // agrees with the decoder.
            assert_agrees(&bytes);
        }
        assert!(
            taken > 8_000 && left_to_the_walk > 4_000,
            "{taken} {left_to_the_walk}"
        );
        // Shapes it leaves to the walk although they are valid (tag 0 is
        // data, 1 a tombstone): a tombstone, two siblings, no entry, two
        // entries.
        for bytes in [
            &[1, 0, 1, 5, 1, 1, 0, 1][..],
            &[1, 0, 1, 5, 2, 2, 1, 0, 0, 0, 0, 0],
            &[1, 0, 0],
            &[1, 0, 2, 5, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0],
        ] {
            assert_eq!(validate_one_value(bytes), None, "{bytes:?}");
            assert!(validate_walk(bytes).is_ok(), "{bytes:?}");
        }
        // The one value it reads, and checks it makes itself on that
        // shape: each refused input goes to the walk, which refuses it too.
        assert!(validate_one_value(&[1, 0, 1, 5, 1, 1, 0, 0, 1, 9]).is_some());
        for bytes in [
            &[2, 0, 1, 5, 1, 1, 0, 0, 0][..],      // format
            &[1, 0, 1, 5, 0, 1, 0, 0, 0],          // counter 0
            &[1, 0, 1, 5, 1, 1, 1, 0, 0],          // dot 0
            &[1, 0, 1, 5, 1, 1, 0, 7, 0],          // value tag
            &[1, 0, 1, 5, 1, 1, 0, 0, 2, 9],       // length past the end
            &[1, 0, 1, 5, 1, 1, 0, 0, 0, 9],       // a trailing byte
            &[1, 0x80, 0x00, 1, 5, 1, 1, 0, 0, 0], // a padded varint
        ] {
            assert_eq!(validate_one_value(bytes), None, "{bytes:?}");
            assert!(validate_walk(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn agrees_with_the_decoder_on_damaged_sets() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut refused = 0;
        for _ in 0..6000 {
            let mut bytes = random_encoding(&mut rng);
            // Keep them small enough that most damage lands in structure.
            if bytes.len() > 400 {
                continue;
            }
            damage(&mut rng, &mut bytes);
            if !assert_agrees(&bytes) {
                refused += 1;
            }
        }
        assert!(refused > 1000, "damage was refused {refused} times");
        // Every refusal the decoder makes, one by one.
        for bytes in [
            &[][..],
            &[2, 0, 0],
            &[1, 0, 129, 1],
            &[1, 0, 1, 5, 0, 0],
            &[1, 0, 2, 5, 1, 0, 0, 1, 0],
            &[1, 0, 1, 5, 1, 1, 1, 0],
            &[1, 0, 1, 5, 2, 2, 0, 1, 0, 1],
            &[1, 0, 1, 5, 2, 1, 0, 7],
            &[1, 0, 1, 5, 2, 1, 0, 0, 9, 1],
            &[1, 0, 0, 0],
            &[1, 0x80, 0x00, 0],
        ] {
            assert!(!assert_agrees(bytes), "{bytes:?} refused");
        }
    }
}
