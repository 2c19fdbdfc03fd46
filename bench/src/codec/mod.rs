//! Wire codecs for the three target protocols, sans-IO.
//!
//! Job: encode one benchmark request into a connection's output buffer and
//! decode complete replies from its input buffer. Invariants: a decoder never
//! consumes a partial reply (an incomplete reply is `Ok(None)`, the expected
//! outcome, and the bytes stay buffered); a malformed or over-long reply is a
//! typed [`ParseError`], never a panic; every reply is bounded by
//! [`REPLY_BYTES_MAX`] before the decoder waits for the rest of it.

pub mod dynakv;
pub mod memcache;
pub mod resp;

use bytes::{Buf, Bytes, BytesMut};
use std::fmt;
use std::ops::Range;

/// The largest reply the tool accepts; values are bounded by
/// `cli::VALUE_SIZE_BYTES_MAX` (16 MiB), and a dynakv reply may carry several
/// siblings, so this leaves room for a few of them.
pub const REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The longest status or header line a text protocol may send before its CRLF.
pub const LINE_BYTES_MAX: usize = 1024;

/// One benchmark request, borrowed from the engine's buffers.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    Ping,
    Get {
        key: &'a [u8],
    },
    Put {
        key: &'a [u8],
        value: &'a [u8],
        context: Option<&'a [u8]>,
    },
}

/// What a reply says about the request it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pong,
    Stored,
    /// A get found the key (with this many siblings; 1 for Redis and memcached).
    Hit {
        siblings: u32,
    },
    /// A get found no value; a success, counted separately from errors.
    Miss,
    /// The server answered with an error; counted as an error of the operation.
    ErrorReply,
}

/// A decoded reply. Values are only filled when the caller asked to capture
/// them (read-modify-write needs them; plain gets do not). A dynakv get or
/// put reply's causal context stays in the codec ([`Codec::context`]),
/// copied out of the receive buffer without an allocation.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The request id it answers, for protocols whose replies may come out of
    /// order (dynakv); `None` means "the oldest request in flight".
    pub id: Option<u64>,
    pub outcome: Outcome,
    pub values: Vec<Bytes>,
    /// For an error reply, what the server said (`CODE message`), so the
    /// report can say which errors occurred.
    pub error: Option<String>,
}

/// A reply the tool cannot make sense of; the connection is closed and its
/// in-flight requests are counted as errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes do not follow the protocol.
    Malformed(&'static str),
    /// A length field or line is beyond the tool's bounds.
    TooLarge(usize),
    /// A dynakv reply failed the protocol module's verification.
    Rejected(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(why) => write!(f, "malformed reply: {why}"),
            ParseError::TooLarge(n) => write!(f, "reply too large: {n} bytes"),
            ParseError::Rejected(why) => write!(f, "invalid dynakv reply: {why}"),
        }
    }
}

/// The result of scanning a buffer for one text-protocol reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes the reply occupies at the front of the buffer.
    pub consumed: usize,
    pub outcome: Outcome,
    /// Where the value lies inside those bytes, for a hit.
    pub value: Option<Range<usize>>,
}

/// Turns a scanned text reply into a [`Reply`], consuming it from `buf`.
pub fn take_scanned(buf: &mut BytesMut, scanned: Scanned, capture: bool) -> Reply {
    assert!(scanned.consumed <= buf.len());
    let mut values = Vec::new();
    let error = (scanned.outcome == Outcome::ErrorReply).then(|| {
        let line = &buf[..scanned.consumed.saturating_sub(2)];
        let line = line.strip_prefix(b"-").unwrap_or(line);
        String::from_utf8_lossy(line).into_owned()
    });
    match (capture, scanned.value) {
        (true, Some(range)) => {
            let frame = buf.split_to(scanned.consumed).freeze();
            values.push(frame.slice(range));
        }
        _ => buf.advance(scanned.consumed),
    }
    Reply {
        id: None,
        outcome: scanned.outcome,
        values,
        error,
    }
}

/// Finds the CRLF ending the line that starts at `from`; errors when the line
/// is longer than [`LINE_BYTES_MAX`].
pub fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, ParseError> {
    let window_end = buf.len().min(from + LINE_BYTES_MAX + 2);
    let window = &buf[from..window_end];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(pos) => Ok(Some(from + pos)),
        None if window.len() >= LINE_BYTES_MAX + 2 => Err(ParseError::TooLarge(window.len())),
        None => Ok(None),
    }
}

/// The protocol a connection speaks, with any per-connection codec state.
#[derive(Debug)]
pub enum Codec {
    Resp,
    Memcache,
    Dynakv(Box<dynakv::DynakvCodec>),
}

impl Codec {
    /// Whether replies arrive in request order (so a reply answers the oldest
    /// request in flight) rather than carrying request ids.
    pub fn ordered(&self) -> bool {
        match self {
            Codec::Resp | Codec::Memcache => true,
            Codec::Dynakv(_) => false,
        }
    }

    /// Appends one request to `out`; `id` is carried on the wire by protocols
    /// that have ids and ignored by the others.
    pub fn encode(&mut self, id: u64, request: &Request<'_>, out: &mut Vec<u8>) {
        match self {
            Codec::Resp => resp::encode(request, out),
            Codec::Memcache => memcache::encode(request, out),
            Codec::Dynakv(codec) => codec.encode(id, request, out),
        }
    }

    /// The causal context of the reply `decode` returned last, for a dynakv
    /// get or put reply (possibly empty); `None` for any other reply and for
    /// the protocols without contexts.
    pub fn context(&self) -> Option<&[u8]> {
        match self {
            Codec::Resp | Codec::Memcache => None,
            Codec::Dynakv(codec) => codec.context(),
        }
    }

    /// Decodes and consumes one complete reply from the front of `recv`, or
    /// returns `Ok(None)` leaving the bytes in place when it is incomplete.
    /// `capture` asks for the value bytes (read-modify-write needs them).
    pub fn decode(
        &mut self,
        recv: &mut BytesMut,
        capture: bool,
    ) -> Result<Option<Reply>, ParseError> {
        let scanned = match self {
            Codec::Resp => resp::scan(recv)?,
            Codec::Memcache => memcache::scan(recv)?,
            Codec::Dynakv(codec) => return codec.decode(recv, capture),
        };
        Ok(scanned.map(|s| take_scanned(recv, s, capture)))
    }
}
