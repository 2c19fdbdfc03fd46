//! Byte-level helpers shared by the sibling-set and context encodings:
//! canonical LEB128 varints and a bounds-checked reader.
//!
//! Invariant: every read checks the remaining length first, so no input can
//! make a reader panic or allocate more than the input's own length.

use super::error::VersionError;

/// The most bytes a `u64` LEB128 varint can take.
pub(crate) const VARINT_BYTES_MAX: usize = 10;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
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

/// Writes `value`'s varint (what `put_varint` appends) at the start of
/// `out`, which must hold `VARINT_BYTES_MAX` bytes; returns its length.
pub(crate) fn write_varint(out: &mut [u8], mut value: u64) -> usize {
    let out = &mut out[..VARINT_BYTES_MAX];
    let mut length = 0;
    while value >= 0x80 {
        out[length] = (value & 0x7f) as u8 | 0x80;
        value >>= 7;
        length += 1;
    }
    out[length] = value as u8;
    length + 1
}

/// The 7-bit payloads of the eight bytes of `word` (little-endian),
/// packed into its low 56 bits: pairs of bytes, then pairs of 14-bit
/// halves, then of 28-bit halves, each pair closing its gap.
#[inline(always)]
fn gather(word: u64) -> u64 {
    let word = word & 0x7f7f_7f7f_7f7f_7f7f;
    let word = (word & 0x007f_007f_007f_007f) | ((word & 0x7f00_7f00_7f00_7f00) >> 1);
    let word = (word & 0x0000_3fff_0000_3fff) | ((word & 0x3fff_0000_3fff_0000) >> 2);
    (word & 0x0000_0000_0fff_ffff) | ((word & 0x0fff_ffff_0000_0000) >> 4)
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
    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, VersionError> {
        // Ten bytes at once when the input holds them: every actor id
        // (`node << 32 | shard`, up to ten bytes with a random node id) of a
        // get's set and token is read here. The continuation bits say where
        // the varint ends, and `gather` packs the 7-bit payloads of the
        // first eight bytes; a varint the byte loop below would refuse (a
        // zero last byte, a tenth byte other than 1, no end in ten bytes) is
        // left to that loop, which gives the error.
        if let Some(bytes) = self
            .bytes
            .get(self.position..self.position + VARINT_BYTES_MAX)
        {
            let low = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
            let ends = !low & 0x8080_8080_8080_8080;
            let read = if ends != 0 {
                let length = (ends.trailing_zeros() / 8 + 1) as usize;
                let kept = match length {
                    8 => low,
                    _ => low & ((1u64 << (8 * length)) - 1),
                };
                Some((length, gather(kept)))
            } else if bytes[8] < 0x80 {
                Some((9, gather(low) | u64::from(bytes[8]) << 56))
            } else if bytes[9] == 1 {
                Some((10, gather(low) | u64::from(bytes[8] & 0x7f) << 56 | 1 << 63))
            } else {
                None
            };
            if let Some((length, value)) = read {
                if bytes[length - 1] != 0 || length == 1 {
                    self.position += length;
                    return Ok(value);
                }
            }
        }
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

    /// The byte loop alone (what `varint` did before the eight-byte path):
    /// the value or error and the position after.
    fn byte_loop(bytes: &[u8], start: usize) -> (Result<u64, VersionError>, usize) {
        let mut reader = Reader::new(bytes);
        reader.position = start;
        let mut read = || -> Result<u64, VersionError> {
            let mut value: u64 = 0;
            for index in 0..VARINT_BYTES_MAX {
                let byte = reader.u8()?;
                let payload = u64::from(byte & 0x7f);
                if index == VARINT_BYTES_MAX - 1 && payload > 1 {
                    return Err(VersionError::VarintMalformed);
                }
                value |= payload << (7 * index);
                if byte & 0x80 == 0 {
                    if byte == 0 && index > 0 {
                        return Err(VersionError::VarintMalformed);
                    }
                    return Ok(value);
                }
            }
            Err(VersionError::VarintMalformed)
        };
        let result = read();
        (result, reader.position)
    }

    #[test]
    fn varint_is_the_byte_loop() {
        // Varints of every length at every offset from the end, valid and
        // padded, and random bytes with few or many continuation bits:
        // the same value or error, and the same position, as the loop.
        let mut rng = crate::test_rng::Rng(0x0a71_11e7);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for bits in 0..64 {
            let value = (1u64 << bits) | (rng.next() & ((1u64 << bits) - 1));
            for tail in 0..10 {
                let mut out = Vec::new();
                put_varint(&mut out, value);
                let mut padded = out.clone();
                *padded.last_mut().expect("a byte") |= 0x80;
                padded.push(0);
                for bytes in [out, padded] {
                    let mut input = bytes;
                    input.extend((0..tail).map(|_| rng.next() as u8));
                    inputs.push(input);
                }
            }
        }
        for _ in 0..2000 {
            let high = rng.below(2) == 0;
            let input = (0..rng.below(14))
                .map(|_| rng.next() as u8 | if high && rng.below(8) != 0 { 0x80 } else { 0 })
                .collect();
            inputs.push(input);
        }
        for input in inputs {
            for start in 0..=input.len() {
                let mut reader = Reader::new(&input);
                reader.position = start;
                let result = reader.varint();
                assert_eq!(
                    (result, reader.position),
                    byte_loop(&input, start),
                    "{input:?} from {start}"
                );
            }
        }
    }

    #[test]
    fn varint_round_trip_and_canonical() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            (7 << 32) | 3,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut written = [0xee; VARINT_BYTES_MAX];
            let length = write_varint(&mut written, value);
            assert_eq!(&written[..length], &out[..], "{value}");
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
}
