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
}
