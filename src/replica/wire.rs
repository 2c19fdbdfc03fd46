//! A small, bounds-checked binary codec shared by the internode messages of
//! `replica` and `membership`: fixed-width little-endian integers and
//! length-prefixed byte strings.
//!
//! Invariant: every read checks the remaining length before touching the
//! input, and every length is checked against a caller-given maximum before
//! anything is allocated, so no input makes a decoder panic or allocate more
//! than the input's own length.

use std::fmt;

/// Why internode bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The input ended in the middle of a field.
    Truncated,
    /// The message tag names no known message.
    UnknownTag(u8),
    /// A length field is above its bound.
    TooLong { length: u64, max: u64 },
    /// Bytes were left after the message.
    TrailingBytes { count: usize },
    /// A field held a value outside its domain (named).
    Invalid(&'static str),
    /// An embedded sibling set did not decode.
    Siblings(crate::version::VersionError),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "message truncated"),
            WireError::UnknownTag(tag) => write!(f, "unknown message tag {tag}"),
            WireError::TooLong { length, max } => {
                write!(f, "length {length} above the maximum {max}")
            }
            WireError::TrailingBytes { count } => write!(f, "{count} trailing bytes"),
            WireError::Invalid(what) => write!(f, "invalid field: {what}"),
            WireError::Siblings(error) => write!(f, "bad sibling set: {error}"),
        }
    }
}

impl std::error::Error for WireError {}

pub(crate) fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    assert!(bytes.len() <= u32::MAX as usize);
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
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

    fn take(&mut self, count: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() - self.position < count {
            return Err(WireError::Truncated);
        }
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let mut buffer = [0u8; 4];
        buffer.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(buffer))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        let mut buffer = [0u8; 8];
        buffer.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buffer))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid("bool")),
        }
    }

    /// A `u32`-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let length = self.u32()? as usize;
        if length > max {
            return Err(WireError::TooLong {
                length: length as u64,
                max: max as u64,
            });
        }
        self.take(length)
    }

    /// A count of at most `max` items.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize, WireError> {
        let count = self.u32()? as usize;
        if count > max {
            return Err(WireError::TooLong {
                length: count as u64,
                max: max as u64,
            });
        }
        Ok(count)
    }

    pub(crate) fn finish(&self) -> Result<(), WireError> {
        let count = self.bytes.len() - self.position;
        if count != 0 {
            return Err(WireError::TrailingBytes { count });
        }
        Ok(())
    }
}
