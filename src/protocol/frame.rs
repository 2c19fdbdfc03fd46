//! Framing: a `u32` little-endian length, then that many bytes holding one
//! flatbuffer. Sans-IO: the caller reads bytes into a `BytesMut` and asks the
//! decoder for whole frames.
//!
//! Invariant: the length is checked against the maximum before the caller is
//! told how much to reserve or read, so a hostile length prefix never causes
//! an allocation; an incomplete frame is an expected outcome (`Ok(None)`),
//! not an error.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const FRAME_LENGTH_BYTES: usize = 4;

/// A frame that must not be read: the connection is to be closed (after an
/// error reply), since the byte stream cannot be resynchronised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the maximum.
    TooLarge {
        /// The announced length.
        bytes: usize,
        /// The decoder's maximum.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { bytes, max } => write!(
                f,
                "frame length prefix announces {bytes} bytes, more than the maximum of {max}"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits whole frames off the front of a read buffer.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    /// Largest frame accepted, length prefix excluded.
    max: usize,
}

impl FrameDecoder {
    /// A decoder accepting frames of up to `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        assert!(frame_bytes_max > 0);
        assert!(frame_bytes_max <= u32::MAX as usize);
        FrameDecoder {
            max: frame_bytes_max,
        }
    }

    /// The largest frame this decoder accepts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes the next whole frame (without its length prefix) off the front
    /// of `buf`; `Ok(None)` when `buf` does not yet hold a whole frame. Call
    /// it in a loop after each read: one read often carries many frames.
    /// The returned `Bytes` shares `buf`'s allocation (no copy).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(length) = self.whole(buf)? else {
            return Ok(None);
        };
        buf.advance(FRAME_LENGTH_BYTES);
        let frame = buf.split_to(length).freeze();
        debug_assert_eq!(frame.len(), length);
        Ok(Some(frame))
    }

    /// The length (prefix excluded) of the whole frame at the front of
    /// `buf`, which is left as it is; `Ok(None)` when `buf` does not yet
    /// hold a whole frame. With `LentFrame::front`, the way to read frames
    /// in place: a connection first finds every whole frame of a read, then
    /// lends each to its handler.
    pub fn whole(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        match self.peek_length(buf)? {
            Some(length) if buf.len() >= FRAME_LENGTH_BYTES + length => Ok(Some(length)),
            _ => Ok(None),
        }
    }

    /// How many more bytes `buf` needs before `decode` can return the next
    /// frame (0 when it already can). Readers use it to reserve exactly what
    /// an accepted frame needs; it fails like `decode` on an oversized one.
    pub fn bytes_needed(&self, buf: &BytesMut) -> Result<usize, FrameError> {
        match self.peek_length(buf)? {
            None => Ok(FRAME_LENGTH_BYTES - buf.len()),
            Some(length) => Ok((FRAME_LENGTH_BYTES + length).saturating_sub(buf.len())),
        }
    }

    /// The announced length of the frame at the front of `buf`, checked.
    fn peek_length(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.get(..FRAME_LENGTH_BYTES) else {
            return Ok(None);
        };
        let mut le = [0u8; FRAME_LENGTH_BYTES];
        le.copy_from_slice(prefix);
        let length = u32::from_le_bytes(le) as usize;
        if length > self.max {
            return Err(FrameError::TooLarge {
                bytes: length,
                max: self.max,
            });
        }
        Ok(Some(length))
    }
}

/// A whole frame at the front of a read buffer, lent to its handler: read in
/// place (`bytes`), and made a `Bytes` (`take`) only by a request that must
/// keep it (a put's key and value, a request that waits or is forwarded).
/// Either way the frame leaves the buffer: `take` splits it off, and a frame
/// not taken is skipped when it is dropped. A frame read in place touches no
/// reference count: `split_to` on a shared buffer is an atomic add on its
/// count, and a drop an atomic subtract, often a CPU cache miss of their own
/// at pipeline depth 1 (3% of a shard's samples, BENCHMARKS.md §2zc).
pub struct LentFrame<'a> {
    buf: &'a mut BytesMut,
    /// The frame's length; 0 once taken.
    len: usize,
}

impl<'a> LentFrame<'a> {
    /// The frame of `len` bytes (`FrameDecoder::whole`) at the front of
    /// `buf`, after its length prefix, which leaves `buf` now.
    pub fn front(buf: &'a mut BytesMut, len: usize) -> LentFrame<'a> {
        assert!(
            buf.len() >= FRAME_LENGTH_BYTES + len,
            "a lent frame is whole"
        );
        buf.advance(FRAME_LENGTH_BYTES);
        LentFrame { buf, len }
    }

    /// The frame's bytes, in place.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The frame as `Bytes` sharing the buffer's allocation (no copy).
    pub fn take(mut self) -> Bytes {
        let len = std::mem::take(&mut self.len);
        self.buf.split_to(len).freeze()
    }
}

impl Drop for LentFrame<'_> {
    fn drop(&mut self) {
        self.buf.advance(self.len);
    }
}

/// A frame handed to a request's handler: held (`Bytes`, from a forwarded
/// request or a test) or lent by the connection's read buffer.
pub enum Frame<'a> {
    /// A frame with an owner of its own.
    Held(Bytes),
    /// A frame still in the connection's read buffer.
    Lent(LentFrame<'a>),
}

impl Frame<'_> {
    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Frame::Held(frame) => frame,
            Frame::Lent(frame) => frame.bytes(),
        }
    }

    /// The frame as `Bytes` (no copy): what a request that keeps it holds.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Frame::Held(frame) => frame,
            Frame::Lent(frame) => frame.take(),
        }
    }
}

/// Appends a frame holding `payload` to `out`.
pub fn write_frame(payload: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(payload.len()).expect("frame payload fits a u32 length");
    out.reserve(FRAME_LENGTH_BYTES + payload.len());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> BytesMut {
        let mut out = Vec::new();
        for payload in payloads {
            write_frame(payload, &mut out);
        }
        BytesMut::from(&out[..])
    }

    #[test]
    fn many_frames_per_read() {
        let mut buf = framed(&[b"one", b"", b"three"]);
        let mut decoder = FrameDecoder::new(16);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b""[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"three"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_frames_wait_byte_by_byte() {
        let whole = framed(&[b"hello", b"world"]);
        let mut decoder = FrameDecoder::new(16);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in whole.iter() {
            assert!(decoder.bytes_needed(&buf).unwrap() > 0);
            buf.extend_from_slice(&[*byte]);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, vec![&b"hello"[..], &b"world"[..]]);
        assert_eq!(decoder.bytes_needed(&buf).unwrap(), FRAME_LENGTH_BYTES);
    }

    #[test]
    fn huge_length_prefix_is_rejected_before_the_payload_arrives() {
        let mut decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let expected = FrameError::TooLarge {
            bytes: u32::MAX as usize,
            max: 1024,
        };
        assert_eq!(decoder.decode(&mut buf), Err(expected));
        assert_eq!(decoder.bytes_needed(&buf), Err(expected));
        assert_eq!(buf.len(), FRAME_LENGTH_BYTES, "nothing consumed");
        assert!(expected.to_string().contains("maximum of 1024"));
    }

    #[test]
    fn lent_frames_leave_the_buffer_whether_taken_or_not() {
        let mut buf = framed(&[b"one", b"", b"three", b"four"]);
        buf.extend_from_slice(&9u32.to_le_bytes()[..2]);
        let decoder = FrameDecoder::new(16);
        let mut lengths = Vec::new();
        let mut at = 0;
        while let Some(len) = decoder.whole(&buf[at..]).unwrap() {
            lengths.push(len);
            at += FRAME_LENGTH_BYTES + len;
        }
        assert_eq!(lengths, vec![3, 0, 5, 4]);
        let before = buf.len();
        // Read in place and dropped: skipped.
        let one = LentFrame::front(&mut buf, lengths[0]);
        assert_eq!(one.bytes(), b"one");
        drop(one);
        assert_eq!(buf.len(), before - FRAME_LENGTH_BYTES - 3);
        let empty = LentFrame::front(&mut buf, lengths[1]);
        assert_eq!(empty.bytes(), b"");
        drop(empty);
        // Taken: split off, and the buffer goes on after it.
        let three = Frame::Lent(LentFrame::front(&mut buf, lengths[2]));
        assert_eq!(three.bytes(), b"three");
        let three = three.into_bytes();
        assert_eq!(three, &b"three"[..]);
        assert_eq!(&buf[..FRAME_LENGTH_BYTES], &4u32.to_le_bytes());
        let four = LentFrame::front(&mut buf, lengths[3]).take();
        assert_eq!(four, &b"four"[..]);
        // What is left is the incomplete frame's prefix, as `decode` leaves it.
        assert_eq!(&buf[..], &9u32.to_le_bytes()[..2]);
        assert_eq!(decoder.whole(&buf).unwrap(), None);
        // A held frame gives its own bytes back.
        let held = Frame::Held(Bytes::from_static(b"held"));
        assert_eq!(held.bytes(), b"held");
        assert_eq!(held.into_bytes(), &b"held"[..]);
    }

    #[test]
    #[should_panic(expected = "a lent frame is whole")]
    fn a_frame_longer_than_the_buffer_is_not_lent() {
        let mut buf = framed(&[b"three"]);
        let _ = LentFrame::front(&mut buf, 6);
    }

    #[test]
    fn frame_of_exactly_max_is_accepted() {
        let payload = vec![7u8; 64];
        let mut buf = framed(&[&payload]);
        let mut decoder = FrameDecoder::new(64);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &payload[..]);
        let mut buf = framed(&[&[0u8; 65]]);
        assert!(decoder.decode(&mut buf).is_err());
    }
}
