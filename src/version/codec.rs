//! Byte-level helpers shared by the sibling-set and context encodings:
//! canonical LEB128 varints and a bounds-checked reader.
//!
//! Invariant: every read checks the remaining length first, so no input can
//! make a reader panic or allocate more than the input's own length.

use super::error::VersionError;

/// The most bytes a `u64` LEB128 varint can take.
pub(crate) const VARINT_BYTES_MAX: usize = 10;

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, value: u64) {
    // Most varints here (counts, small counters) are one byte: a push.
    if value < 0x80 {
        out.push(value as u8);
        return;
    }
    let mut bytes = [0; VARINT_BYTES_MAX];
    let len = varint_bytes(value, &mut bytes);
    // All 10 bytes, then cut back: a copy of fixed length is two moves,
    // one of `len` bytes a call to `memcpy`.
    let start = out.len();
    out.extend_from_slice(&bytes);
    out.truncate(start + len);
}

/// Writes `value`'s canonical LEB128 encoding at the start of `out` and
/// returns its length. The first 8 bytes are computed as one word (the
/// 7-bit groups spread with three shifts, the continuation bits set from
/// the length), not one byte per loop turn: the actor ids in clocks take
/// 9 or 10 bytes. `put_varint_bytewise` is the definition it is checked
/// against.
#[inline]
pub(crate) fn varint_bytes(value: u64, out: &mut [u8; VARINT_BYTES_MAX]) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    let len = bits.div_ceil(7);
    let low = spread_groups(value & 0x00ff_ffff_ffff_ffff);
    // Every byte before the last of the varint continues it.
    let continues = match len {
        1 => 0,
        2..=8 => 0x8080_8080_8080_8080u64 & (u64::MAX >> (72 - 8 * len)),
        _ => 0x8080_8080_8080_8080,
    };
    out[..8].copy_from_slice(&(low | continues).to_le_bytes());
    if len > 8 {
        let ninth = (value >> 56) as u8 & 0x7f;
        out[8] = if len == 10 { ninth | 0x80 } else { ninth };
        out[9] = (value >> 63) as u8;
    }
    len
}

/// The inverse of `pack_groups`: a value of at most 56 bits as 8 bytes of
/// 7 bits each, high bits clear.
#[inline(always)]
fn spread_groups(value: u64) -> u64 {
    let x = (value & 0x0000_0000_0fff_ffff) | (value & 0x00ff_ffff_f000_0000) << 4;
    let x = (x & 0x0000_3fff_0000_3fff) | (x & 0x0fff_c000_0fff_c000) << 2;
    (x & 0x007f_007f_007f_007f) | (x & 0x3f80_3f80_3f80_3f80) << 1
}

/// The 7-bit groups of up to 8 little-endian varint bytes (their high
/// bits ignored), packed into one 56-bit value: pairs of bytes, then pairs
/// of pairs, then the two halves, each step closing the gaps the high bits
/// left.
#[inline(always)]
fn pack_groups(word: u64) -> u64 {
    let x = word & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | (x & 0x7f00_7f00_7f00_7f00) >> 1;
    let x = (x & 0x0000_3fff_0000_3fff) | (x & 0x3fff_0000_3fff_0000) >> 2;
    (x & 0x0000_0000_0fff_ffff) | (x & 0x0fff_ffff_0000_0000) >> 4
}

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    /// How many bytes have been read.
    #[inline(always)]
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self) -> Result<u8, VersionError> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or(VersionError::Truncated)?;
        self.position += 1;
        Ok(byte)
    }

    /// Reads a canonical (minimal) LEB128 varint. Non-minimal encodings are
    /// refused so that every value has exactly one encoding, which makes
    /// `encode(decode(bytes)) == bytes` hold for every accepted input.
    #[inline(always)]
    pub(crate) fn varint(&mut self) -> Result<u64, VersionError> {
        // Most varints here (counts, lengths, small counters) are one byte:
        // read inline, without a call or a loop; the rest out of line.
        if let Some(&byte) = self.bytes.get(self.position) {
            if byte < 0x80 {
                self.position += 1;
                return Ok(u64::from(byte));
            }
        }
        self.varint_long()
    }

    /// `varint` for a value of more than one byte (or no byte at all).
    /// With at least 8 bytes left (nearly always: a varint is followed by
    /// more of the encoding, and the actor ids in clocks take 9 or 10
    /// bytes) it reads them as one word, finds the last byte from the high
    /// bits and packs the 7-bit groups with three shifts; a byte-by-byte
    /// loop would take a compare and a branch per byte. The checks and the
    /// errors are those of `varint_bytewise` (`fast_varint_reads_as_the_bytewise_loop`).
    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, VersionError> {
        let rest = &self.bytes[self.position..];
        let Some(first) = rest.first_chunk::<8>() else {
            return self.varint_bytewise();
        };
        let word = u64::from_le_bytes(*first);
        let stops = !word & 0x8080_8080_8080_8080;
        if stops != 0 {
            // The varint ends at the first byte without its high bit.
            let len = (stops.trailing_zeros() / 8) as usize + 1;
            // A last byte of zero (other than a lone zero) is padding.
            if len > 1 && rest[len - 1] == 0 {
                return Err(VersionError::VarintMalformed);
            }
            self.position += len;
            return Ok(pack_groups(word & (u64::MAX >> (64 - 8 * len))));
        }
        // Eight bytes with the high bit set: the ninth ends it, or the
        // tenth does, and then it must be 1 (bit 63, the only bit left:
        // more would overflow, 0 is padding, a high bit an eleventh byte).
        let low = pack_groups(word);
        let ninth = *rest.get(8).ok_or(VersionError::Truncated)?;
        if ninth < 0x80 {
            if ninth == 0 {
                return Err(VersionError::VarintMalformed);
            }
            self.position += 9;
            return Ok(low | u64::from(ninth) << 56);
        }
        let tenth = *rest.get(9).ok_or(VersionError::Truncated)?;
        if tenth != 1 {
            return Err(VersionError::VarintMalformed);
        }
        self.position += 10;
        Ok(low | u64::from(ninth & 0x7f) << 56 | 1 << 63)
    }

    /// `varint`, one byte at a time: the definition `varint_long` follows,
    /// and its path near the end of the input.
    fn varint_bytewise(&mut self) -> Result<u64, VersionError> {
        let mut value: u64 = 0;
        for index in 0..VARINT_BYTES_MAX {
            let byte = self.u8()?;
            let payload = u64::from(byte & 0x7f);
            if index == VARINT_BYTES_MAX - 1 && payload > 1 {
                return Err(VersionError::VarintMalformed);
            }
            value |= payload << (7 * index);
            if byte & 0x80 == 0 {
                // A last byte of zero (other than a lone zero) is padding.
                if byte == 0 && index > 0 {
                    return Err(VersionError::VarintMalformed);
                }
                return Ok(value);
            }
        }
        Err(VersionError::VarintMalformed)
    }

    #[inline(always)]
    pub(crate) fn slice(&mut self, length: u64) -> Result<&'a [u8], VersionError> {
        let remaining = self.remaining();
        if length > remaining as u64 {
            return Err(VersionError::LengthOutOfRange { length, remaining });
        }
        let start = self.position;
        self.position += length as usize;
        Ok(&self.bytes[start..self.position])
    }

    #[inline(always)]
    pub(crate) fn finish(&self) -> Result<(), VersionError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(VersionError::TrailingBytes { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_canonical() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert!(out.len() <= VARINT_BYTES_MAX);
            let mut reader = Reader::new(&out);
            assert_eq!(reader.varint(), Ok(value));
            assert_eq!(reader.finish(), Ok(()));
        }
        // Padding with a zero continuation byte is refused.
        assert_eq!(
            Reader::new(&[0x81, 0x00]).varint(),
            Err(VersionError::VarintMalformed)
        );
        // Eleven bytes, and a tenth byte carrying more than one bit, are refused.
        assert_eq!(
            Reader::new(&[0xff; 11]).varint(),
            Err(VersionError::VarintMalformed)
        );
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            Reader::new(&over).varint(),
            Err(VersionError::VarintMalformed)
        );
        assert_eq!(Reader::new(&[0x80]).varint(), Err(VersionError::Truncated));
    }

    /// What `varint` reads (its value, or its error, and where it stops)
    /// from `bytes`, and the same by the byte-by-byte definition.
    fn both_reads(bytes: &[u8]) -> [(Result<u64, VersionError>, usize); 2] {
        let mut fast = Reader::new(bytes);
        let mut bytewise = Reader::new(bytes);
        let fast_value = fast.varint();
        let bytewise_value = bytewise.varint_bytewise();
        [
            (fast_value, fast.position()),
            (bytewise_value, bytewise.position()),
        ]
    }

    /// The byte-by-byte LEB128 writer `varint_bytes` must agree with.
    fn put_varint_bytewise(out: &mut Vec<u8>, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn fast_varint_writes_as_the_bytewise_loop() {
        let mut rng = crate::test_rng::Rng(0x2545_f491_4f6c_dd1d);
        let mut checked = 0;
        for bits in 0..=64u32 {
            for _ in 0..256 {
                let state = rng.next();
                let value = match bits {
                    0 => 0,
                    64 => state | 1 << 63,
                    _ => (state & ((1u64 << bits) - 1)) | 1 << (bits - 1),
                };
                let mut expected = vec![0xaa];
                put_varint_bytewise(&mut expected, value);
                let mut written = vec![0xaa];
                put_varint(&mut written, value);
                assert_eq!(written, expected, "{value:#x}");
                let mut bytes = [0; VARINT_BYTES_MAX];
                let len = varint_bytes(value, &mut bytes);
                assert_eq!(&bytes[..len], &expected[1..], "{value:#x}");
                checked += 1;
            }
        }
        assert_eq!(checked, 65 * 256);
    }

    #[test]
    fn fast_varint_reads_as_the_bytewise_loop() {
        // Every encoded value of every length, followed by 0 to 10 more
        // bytes (the word read needs 8 in reach), and each damaged: a byte
        // replaced, the varint cut short, or padded with a zero byte.
        let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        let mut checked = 0;
        for bits in 0..=64u32 {
            for _ in 0..64 {
                let value = match bits {
                    0 => 0,
                    64 => next() | 1 << 63,
                    _ => (next() & ((1u64 << bits) - 1)) | 1 << (bits - 1),
                };
                let mut encoded = Vec::new();
                put_varint(&mut encoded, value);
                for tail in 0..=10usize {
                    let mut bytes = encoded.clone();
                    bytes.extend((0..tail).map(|_| next() as u8));
                    let [fast, bytewise] = both_reads(&bytes);
                    assert_eq!(fast, bytewise, "{bytes:02x?}");
                    assert_eq!(fast, (Ok(value), encoded.len()), "{bytes:02x?}");
                    let mut damaged = bytes.clone();
                    let at = next() as usize % damaged.len();
                    damaged[at] = next() as u8;
                    let [fast, bytewise] = both_reads(&damaged);
                    assert_eq!(fast.0, bytewise.0, "{damaged:02x?}");
                    if fast.0.is_ok() {
                        assert_eq!(fast.1, bytewise.1, "{damaged:02x?}");
                    }
                    let cut = &bytes[..encoded.len() - 1];
                    assert_eq!(both_reads(cut)[0].0, both_reads(cut)[1].0, "{cut:02x?}");
                    let mut padded = encoded.clone();
                    *padded.last_mut().expect("a byte") |= 0x80;
                    padded.push(0);
                    padded.extend((0..tail).map(|_| next() as u8));
                    let [fast, bytewise] = both_reads(&padded);
                    assert_eq!(fast.0, bytewise.0, "{padded:02x?}");
                    checked += 1;
                }
            }
        }
        // Random bytes, mostly with high bits set (long varints, overlong
        // ones, eleven bytes and more).
        for _ in 0..200_000 {
            let len = next() as usize % 14;
            let high = next();
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let byte = next() as u8;
                    if high >> (i % 64) & 3 != 0 {
                        byte | 0x80
                    } else {
                        byte
                    }
                })
                .collect();
            let [fast, bytewise] = both_reads(&bytes);
            assert_eq!(fast.0, bytewise.0, "{bytes:02x?}");
            if fast.0.is_ok() {
                assert_eq!(fast.1, bytewise.1, "{bytes:02x?}");
            }
            checked += 1;
        }
        assert!(checked > 240_000);
    }
}
