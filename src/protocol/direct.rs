//! Hand-written reading and writing of client requests and of the hot
//! replies, straight between bytes and domain types, without the generic
//! flatbuffers verifier or `FlatBufferBuilder` (issue #4: on the request
//! path those two cost about as much as the rest of a GET together, and the
//! load generator that shares the node's cores paid the builder for every
//! request it sent).
//!
//! Job: `decode_request` verifies and decodes a `Request` flatbuffer in one
//! pass, `encode_request` writes every request (the client side),
//! `encode_reply` writes Pong, GetReply, PutReply, DeleteReply and
//! routing-free ErrorReply frames, and `decode_response` reads those five
//! replies back on the client side. Everything else (routing tables, error
//! replies carrying one, internode messages) stays on the generic path in
//! `codec`.
//!
//! Invariant (the safety argument, also in `docs/protocol.md`): the request
//! reader accepts a subset of what the generic verifier with `codec`'s
//! options accepts, and decodes what it accepts to the same `RequestFrame`.
//! It performs every check that verifier performs for the schema's
//! `Request` and its five body tables, in the same arithmetic (offsets,
//! alignment relative to the buffer start, vtable length and bounds, union
//! consistency, vector bounds, the apparent-size sum), and reads no byte
//! before a check has proved it inside the frame. It is deliberately
//! stricter in three ways no conforming builder can trip: a vtable must hold
//! at least its two header entries, a table's inline size must lie inside
//! the frame and cover at least its soffset, and every present field
//! must lie inside that inline size (the generic verifier checks only that
//! it lies inside the frame). Depth and table count cannot exceed their
//! bounds: a request is two tables, one level below the root.
//! The response reader keeps the same invariant for `Response` and its
//! five hand-read reply tables (and `Sibling`), with the same three stricter
//! checks; there the table count is bounded as the generic verifier bounds
//! it (one table per sibling), and strings are checked for UTF-8 and their
//! NUL as it checks them.
//! Both writers' frames decode, through the hand-written and the generic
//! readers alike, to the value the builder's frame decodes to.
//! `tests/protocol_differential.rs` checks all of this against the generic
//! path with proptest and mutation fuzzers (`tools/fuzz-request-decoder.sh`
//! runs them for as long as asked).

use std::ops::Range;

use bytes::Bytes;

use super::codec::{
    context_of, key_of, quorum_field, response_tables_max, DEPTH_MAX, REQUEST_TABLES_MAX,
    RESPONSE_TABLES_FIXED_MAX,
};
use super::frame::FRAME_LENGTH_BYTES;
use super::generated::wire;
use super::message::{
    ErrorCode, Limits, ProtocolError, ProtocolErrorKind, Quorum, Request, RequestFrame, RequestRef,
    Response, Sibling,
};

/// Bytes of a flatbuffers uoffset, soffset or vector length.
const OFFSET_BYTES: usize = 4;

/// Bytes of a vtable entry (and of each of its two header entries).
const VOFFSET_BYTES: usize = 2;

// A request is the root table and one body table directly below it; the
// limits the generic verifier applies can never be reached, so this reader
// does not count them.
const _: () = assert!(DEPTH_MAX >= 2 && REQUEST_TABLES_MAX >= 2);
// The hand-written replies are at most two tables deep plus one table per
// sibling, which the response table bound allows for.
const _: () = assert!(RESPONSE_TABLES_FIXED_MAX >= 2);

// The field slots this module reads and writes, tied to the generated
// bindings so that a schema change that moves one fails to compile here.
const _: () = {
    assert!(wire::Request::VT_ID == 4 && wire::Request::VT_EPOCH == 6);
    assert!(wire::Request::VT_BODY_TYPE == 8 && wire::Request::VT_BODY == 10);
    assert!(wire::GetRequest::VT_KEY == 4);
    assert!(wire::GetRequest::VT_R == 6 && wire::GetRequest::VT_N == 8);
    assert!(wire::PutRequest::VT_KEY == 4 && wire::PutRequest::VT_VALUE == 6);
    assert!(wire::PutRequest::VT_CONTEXT == 8 && wire::PutRequest::VT_W == 10);
    assert!(wire::PutRequest::VT_DW == 12 && wire::PutRequest::VT_N == 14);
    assert!(wire::DeleteRequest::VT_KEY == 4 && wire::DeleteRequest::VT_CONTEXT == 6);
    assert!(wire::DeleteRequest::VT_W == 8 && wire::DeleteRequest::VT_DW == 10);
    assert!(wire::DeleteRequest::VT_N == 12);
    assert!(wire::Response::VT_ID == 4);
    assert!(wire::Response::VT_BODY_TYPE == 6 && wire::Response::VT_BODY == 8);
    assert!(wire::GetReply::VT_FOUND == 4 && wire::GetReply::VT_VALUES == 6);
    assert!(wire::GetReply::VT_CONTEXT == 8);
    assert!(wire::Sibling::VT_TOMBSTONE == 4 && wire::Sibling::VT_VALUE == 6);
    assert!(wire::PutReply::VT_CONTEXT == 4);
    assert!(wire::ErrorReply::VT_CODE == 4 && wire::ErrorReply::VT_MESSAGE == 6);
    assert!(wire::ErrorReply::VT_ACKS == 8);
};

// ---------------------------------------------------------------------------
// Reading requests.

/// Why a frame failed verification, and where.
struct Fault {
    what: &'static str,
    position: usize,
}

impl Fault {
    fn kind(&self) -> ProtocolErrorKind {
        ProtocolErrorKind::Malformed(format!("{} at byte {}", self.what, self.position))
    }
}

/// A table whose soffset, vtable and inline size have been checked.
#[derive(Clone, Copy)]
struct Table {
    /// Position of the table (its soffset) in the buffer.
    position: usize,
    /// Position of its vtable.
    vtable: usize,
    /// Bytes of the vtable: even, at least 4, inside the buffer.
    vtable_bytes: usize,
    /// The table's inline size from the vtable: at least 4, inside the buffer.
    inline_bytes: usize,
}

/// A bounds-checked cursor over one frame. Every read goes through a check
/// that the bytes lie inside `buffer`; `apparent_bytes` sums what the
/// generic verifier would count toward its apparent-size bound.
struct Reader<'buf> {
    buffer: &'buf [u8],
    apparent_bytes: usize,
}

impl<'buf> Reader<'buf> {
    /// The `size` bytes at `position`, counted toward the apparent size.
    fn range(&mut self, position: usize, size: usize) -> Result<Range<usize>, Fault> {
        match position.checked_add(size) {
            Some(end) if end <= self.buffer.len() => {
                self.apparent_bytes += size;
                Ok(position..end)
            }
            _ => Err(Fault {
                what: "range out of bounds",
                position,
            }),
        }
    }

    fn aligned(position: usize, align: usize) -> Result<(), Fault> {
        if position % align == 0 {
            Ok(())
        } else {
            Err(Fault {
                what: "unaligned scalar",
                position,
            })
        }
    }

    fn array<const N: usize>(&mut self, position: usize) -> Result<[u8; N], Fault> {
        Self::aligned(position, N)?;
        let range = self.range(position, N)?;
        let mut bytes = [0; N];
        bytes.copy_from_slice(&self.buffer[range]);
        Ok(bytes)
    }

    fn u8_at(&mut self, position: usize) -> Result<u8, Fault> {
        Ok(self.array::<1>(position)?[0])
    }

    fn u16_at(&mut self, position: usize) -> Result<u16, Fault> {
        Ok(u16::from_le_bytes(self.array(position)?))
    }

    fn u32_at(&mut self, position: usize) -> Result<u32, Fault> {
        Ok(u32::from_le_bytes(self.array(position)?))
    }

    fn u64_at(&mut self, position: usize) -> Result<u64, Fault> {
        Ok(u64::from_le_bytes(self.array(position)?))
    }

    /// The position a uoffset at `position` points to. Like the generic
    /// verifier, the sum saturates; the next read then fails its bounds check.
    fn follow(&mut self, position: usize) -> Result<usize, Fault> {
        let offset = self.u32_at(position)? as usize;
        Ok(position.saturating_add(offset))
    }

    /// Checks the table at `position` as the generic verifier does: its
    /// soffset, and its vtable (length even, inside the buffer).
    fn table(&mut self, position: usize) -> Result<Table, Fault> {
        let soffset = i32::from_le_bytes(self.array(position)?);
        // A positive soffset points backwards.
        let vtable = if soffset > 0 {
            position.checked_sub(soffset.unsigned_abs() as usize)
        } else {
            position.checked_add(soffset.unsigned_abs() as usize)
        };
        let vtable = match vtable {
            Some(vtable) if vtable < self.buffer.len() => vtable,
            _ => {
                return Err(Fault {
                    what: "vtable out of bounds",
                    position,
                })
            }
        };
        let vtable_bytes = self.u16_at(vtable)? as usize;
        // The vtable starts even, so an even length ends it even too.
        Self::aligned(vtable + vtable_bytes, VOFFSET_BYTES)?;
        self.range(vtable, vtable_bytes)?;
        Ok(Table {
            position,
            vtable,
            vtable_bytes,
            inline_bytes: 0,
        })
    }

    /// Stricter than the generic verifier: the vtable holds both header
    /// entries (every builder writes them), and the table's inline size
    /// covers its soffset and lies inside the frame. Returns `table` with
    /// its inline size, which `inside` checks fields against.
    fn strict(&self, table: Table) -> Result<Table, Fault> {
        if table.vtable_bytes < 2 * VOFFSET_BYTES {
            return Err(Fault {
                what: "vtable shorter than its header",
                position: table.vtable,
            });
        }
        // Inside the vtable, which `table` checked; the generic verifier
        // never reads this entry, so it is not counted.
        let inline_bytes = self.peek_u16(table.vtable + VOFFSET_BYTES) as usize;
        if inline_bytes < OFFSET_BYTES || table.position + inline_bytes > self.buffer.len() {
            return Err(Fault {
                what: "table size out of bounds",
                position: table.position,
            });
        }
        Ok(Table {
            inline_bytes,
            ..table
        })
    }

    /// A u16 inside a range already checked (and counted, or deliberately
    /// not counted) by the caller.
    fn peek_u16(&self, position: usize) -> u16 {
        u16::from_le_bytes([self.buffer[position], self.buffer[position + 1]])
    }

    /// Where the field in slot `voffset` of `table` lies, or `None` when it
    /// is absent, as the generic verifier derives it (and counts it: it
    /// reads the vtable entry again). Use `inside` before reading it.
    fn slot(&mut self, table: Table, voffset: usize) -> Option<usize> {
        if voffset < table.vtable_bytes {
            self.apparent_bytes += VOFFSET_BYTES;
        }
        self.entry(table, voffset)
    }

    /// `slot` without counting: for the stricter checks of fields the
    /// generic reads already counted.
    fn entry(&self, table: Table, voffset: usize) -> Option<usize> {
        if voffset >= table.vtable_bytes {
            return None;
        }
        // `voffset` and `vtable_bytes` are even, so the entry is inside the
        // vtable, which `table` checked.
        match self.peek_u16(table.vtable + voffset) as usize {
            0 => None,
            offset => Some(table.position + offset),
        }
    }

    /// Stricter than the generic verifier: a present field of `size` bytes
    /// lies after the soffset and inside the table's inline size.
    fn inside(table: Table, field: usize, size: usize) -> Result<usize, Fault> {
        let offset = field - table.position;
        if offset < OFFSET_BYTES || offset + size > table.inline_bytes {
            return Err(Fault {
                what: "field outside its table",
                position: field,
            });
        }
        Ok(field)
    }

    /// A checked slot: its position when present.
    fn field(&mut self, table: Table, voffset: usize, size: usize) -> Result<Option<usize>, Fault> {
        match self.slot(table, voffset) {
            Some(field) => Self::inside(table, field, size).map(Some),
            None => Ok(None),
        }
    }

    fn u8_field(&mut self, table: Table, voffset: usize) -> Result<u8, Fault> {
        match self.field(table, voffset, 1)? {
            Some(field) => self.u8_at(field),
            None => Ok(0),
        }
    }

    /// A `[ubyte]` field: the range of its bytes, empty when absent.
    fn bytes_field(&mut self, table: Table, voffset: usize) -> Result<Range<usize>, Fault> {
        let Some(field) = self.field(table, voffset, OFFSET_BYTES)? else {
            return Ok(0..0);
        };
        let vector = self.follow(field)?;
        let length = self.u32_at(vector)? as usize;
        self.range(vector + OFFSET_BYTES, length)
    }

    /// The table a uoffset field points to (a union's value).
    fn table_field(&mut self, field: usize) -> Result<Table, Fault> {
        let position = self.follow(field)?;
        let table = self.table(position)?;
        self.strict(table)
    }
}

/// A verified request body, before the semantic checks.
#[derive(Debug, Clone)]
enum Body {
    Ping,
    RoutingTable,
    Get {
        key: Range<usize>,
        r: u8,
        n: u8,
    },
    Put {
        key: Range<usize>,
        value: Range<usize>,
        context: Range<usize>,
        w: u8,
        dw: u8,
        n: u8,
    },
    Delete {
        key: Range<usize>,
        context: Range<usize>,
        w: u8,
        dw: u8,
        n: u8,
    },
    /// No body, or a union tag this version does not know.
    Unknown(u8),
}

/// Verifies the body table of union member `tag` at uoffset field `field`
/// and reads its fields, all before any semantic check (as the generic path
/// verifies the whole buffer first).
fn read_body(reader: &mut Reader<'_>, tag: u8, field: usize) -> Result<Body, Fault> {
    Ok(match wire::RequestBody(tag) {
        wire::RequestBody::PingRequest => {
            reader.table_field(field)?;
            Body::Ping
        }
        wire::RequestBody::RoutingTableRequest => {
            reader.table_field(field)?;
            Body::RoutingTable
        }
        wire::RequestBody::GetRequest => {
            let get = reader.table_field(field)?;
            Body::Get {
                key: reader.bytes_field(get, 4)?,
                r: reader.u8_field(get, 6)?,
                n: reader.u8_field(get, 8)?,
            }
        }
        wire::RequestBody::PutRequest => {
            let put = reader.table_field(field)?;
            Body::Put {
                key: reader.bytes_field(put, 4)?,
                value: reader.bytes_field(put, 6)?,
                context: reader.bytes_field(put, 8)?,
                w: reader.u8_field(put, 10)?,
                dw: reader.u8_field(put, 12)?,
                n: reader.u8_field(put, 14)?,
            }
        }
        wire::RequestBody::DeleteRequest => {
            let delete = reader.table_field(field)?;
            Body::Delete {
                key: reader.bytes_field(delete, 4)?,
                context: reader.bytes_field(delete, 6)?,
                w: reader.u8_field(delete, 8)?,
                dw: reader.u8_field(delete, 10)?,
                n: reader.u8_field(delete, 12)?,
            }
        }
        // The generic verifier does not look at the value of an unknown
        // member (nor of NONE), and neither does this.
        _ => Body::Unknown(tag),
    })
}

/// A get request frame read in place (`ParsedRequest::get`): its key is a
/// slice of the frame, not a `Bytes` of it.
#[derive(Debug, PartialEq, Eq)]
pub struct GetRef<'a> {
    pub id: u64,
    pub key: &'a [u8],
    pub quorum: Quorum,
}

/// A put or delete request frame read in place (`ParsedRequest::put`): its
/// key, value and context are slices of the frame, not `Bytes` of it.
#[derive(Debug, PartialEq, Eq)]
pub struct PutRef<'a> {
    pub id: u64,
    pub key: &'a [u8],
    /// The value; `None`: a delete.
    pub value: Option<&'a [u8]>,
    /// The context (empty: none).
    pub context: &'a [u8],
    pub quorum: Quorum,
}

/// A request frame verified (`parse_request`) but not yet decoded into a
/// `RequestFrame` (`build_request`): the id, the epoch, and the body's
/// fields as ranges of the frame. Splitting the two lets the shard answer a
/// get from the frame in place (`ParsedRequest::get`) and build the request
/// only for everything else, with the frame verified once either way.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    id: u64,
    epoch: u64,
    body: Body,
}

impl ParsedRequest {
    /// Whether the built request keeps bytes of its frame (a key, a value,
    /// a context): `false` for a ping or a routing-table request, which
    /// `build_request` builds from any frame (an empty one, so that a frame
    /// lent by a read buffer need not be taken).
    pub fn refers_to_frame(&self) -> bool {
        !matches!(self.body, Body::Ping | Body::RoutingTable)
    }

    /// The key of a get, put or delete, read from `frame` (the frame it was
    /// parsed from) before any semantic check: what `build_request` would
    /// put in the request's key, or refuse (`None` for any other request).
    /// A shard routes on it before building the request.
    pub fn key<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        match &self.body {
            Body::Get { key, .. } | Body::Put { key, .. } | Body::Delete { key, .. } => {
                frame.get(key.clone())
            }
            Body::Ping | Body::RoutingTable | Body::Unknown(_) => None,
        }
    }

    /// Whether the request is a put or a delete (`ShardState::prefetch`
    /// warms a write's anti-entropy leaf and asks for its cache slot's
    /// stamp).
    pub fn writes(&self) -> bool {
        matches!(self.body, Body::Put { .. } | Body::Delete { .. })
    }

    /// The get this request is, read from `frame` (the frame it was parsed
    /// from) with the checks `build_request` makes, in the same order:
    /// `Some` exactly when `build_request` would decode it to a
    /// `Request::Get`, with the same id, key and quorum; `None` for any
    /// other request and for a get `build_request` refuses (which then
    /// gives the error). No `Bytes` of the frame or the key is made, so
    /// none of their atomic reference counts is touched
    /// (`ShardState::get_in_place`).
    pub fn get<'a>(&self, frame: &'a [u8], limits: &Limits) -> Option<GetRef<'a>> {
        let Body::Get { ref key, r, n } = self.body else {
            return None;
        };
        let key = frame.get(key.clone())?;
        if key.is_empty() || key.len() > limits.key_bytes_max {
            return None;
        }
        let quorum = Quorum {
            r: quorum_field("r", r, true).ok()?,
            w: None,
            dw: None,
            n: quorum_field("n", n, false).ok()?,
        };
        Some(GetRef {
            id: self.id,
            key,
            quorum,
        })
    }

    /// The put or delete this request is, read from `frame` as `get` reads
    /// a get: `Some` exactly when `build_request` would decode it to a
    /// `Request::Put` or `Request::Delete`, with the same id, key, value,
    /// context (a put's empty context is none) and quorum; `None` for any
    /// other request and for one `build_request` refuses
    /// (`ShardState::put_from_frame`).
    pub fn put<'a>(&self, frame: &'a [u8], limits: &Limits) -> Option<PutRef<'a>> {
        let (key, value, context, w, dw, n) = match &self.body {
            Body::Put {
                key,
                value,
                context,
                w,
                dw,
                n,
            } => (key, Some(value), context, *w, *dw, *n),
            Body::Delete {
                key,
                context,
                w,
                dw,
                n,
            } => (key, None, context, *w, *dw, *n),
            _ => return None,
        };
        let key = frame.get(key.clone())?;
        if key.is_empty() || key.len() > limits.key_bytes_max {
            return None;
        }
        let value = match value {
            Some(value) if value.len() > limits.value_bytes_max => return None,
            Some(value) => Some(frame.get(value.clone())?),
            None => None,
        };
        let context = frame.get(context.clone())?;
        if context.len() > limits.context_bytes_max {
            return None;
        }
        let quorum = Quorum {
            r: None,
            w: quorum_field("w", w, false).ok()?,
            dw: quorum_field("dw", dw, false).ok()?,
            n: quorum_field("n", n, false).ok()?,
        };
        Some(PutRef {
            id: self.id,
            key,
            value,
            context,
            quorum,
        })
    }
}

/// Verifies a request frame, `decode_request`'s first half: every check up
/// to the semantic ones, which `build_request` (or `ParsedRequest::get`)
/// makes.
pub fn parse_request(frame: &[u8], limits: &Limits) -> Result<ParsedRequest, ProtocolError> {
    if frame.len() > limits.frame_bytes_max {
        return Err(ProtocolError {
            id: None,
            kind: ProtocolErrorKind::FrameTooLarge {
                bytes: frame.len(),
                max: limits.frame_bytes_max,
            },
        });
    }
    let mut reader = Reader {
        buffer: frame,
        apparent_bytes: 0,
    };
    // The header (`RequestHeader`, a prefix of `Request`): read exactly as
    // the generic verifier reads it, so that the id is recovered exactly
    // when the generic path would recover it.
    let (header, id, epoch) = read_header(&mut reader)
        .and_then(|header| {
            if reader.apparent_bytes > limits.frame_bytes_max {
                return Err(Fault {
                    what: "apparent size too large",
                    position: 0,
                });
            }
            Ok(header)
        })
        .map_err(|fault| ProtocolError {
            id: None,
            kind: fault.kind(),
        })?;
    let malformed = |fault: Fault| ProtocolError {
        id: Some(id),
        kind: fault.kind(),
    };
    let body = read_request_body(&mut reader, header).map_err(malformed)?;
    if reader.apparent_bytes > limits.frame_bytes_max {
        return Err(malformed(Fault {
            what: "apparent size too large",
            position: 0,
        }));
    }
    Ok(ParsedRequest { id, epoch, body })
}

/// Decodes one request frame; see `codec::decode_request`, whose contract
/// this keeps. Keys, values and contexts share `frame`'s memory.
pub(super) fn decode_request(frame: Bytes, limits: &Limits) -> Result<RequestFrame, ProtocolError> {
    let parsed = parse_request(&frame, limits)?;
    build_request(frame, parsed, limits)
}

/// `decode_request`'s second half: the request `parsed` (from
/// `parse_request(&frame)`) holds, with its semantic checks (key, value and
/// context bounds, quorum fields). Keys, values and contexts share
/// `frame`'s memory.
pub fn build_request(
    frame: Bytes,
    parsed: ParsedRequest,
    limits: &Limits,
) -> Result<RequestFrame, ProtocolError> {
    let ParsedRequest { id, epoch, body } = parsed;
    let fail = |kind| ProtocolError { id: Some(id), kind };
    let slice = |range: Range<usize>| frame.slice(range);
    let request = match body {
        Body::Ping => Request::Ping,
        Body::RoutingTable => Request::GetRoutingTable,
        Body::Get { key, r, n } => {
            let key = key_of(slice(key), limits).map_err(fail)?;
            let quorum = Quorum {
                r: quorum_field("r", r, true).map_err(fail)?,
                w: None,
                dw: None,
                n: quorum_field("n", n, false).map_err(fail)?,
            };
            Request::Get { key, quorum }
        }
        Body::Put {
            key,
            value,
            context,
            w,
            dw,
            n,
        } => {
            let key = key_of(slice(key), limits).map_err(fail)?;
            if value.len() > limits.value_bytes_max {
                return Err(fail(ProtocolErrorKind::ValueTooLarge {
                    bytes: value.len(),
                    max: limits.value_bytes_max,
                }));
            }
            let value = slice(value);
            let context = context_of(slice(context), limits).map_err(fail)?;
            let context = Some(context).filter(|context| !context.is_empty());
            let quorum = Quorum {
                r: None,
                w: quorum_field("w", w, false).map_err(fail)?,
                dw: quorum_field("dw", dw, false).map_err(fail)?,
                n: quorum_field("n", n, false).map_err(fail)?,
            };
            Request::Put {
                key,
                value,
                context,
                quorum,
            }
        }
        Body::Delete {
            key,
            context,
            w,
            dw,
            n,
        } => {
            let key = key_of(slice(key), limits).map_err(fail)?;
            let context = context_of(slice(context), limits).map_err(fail)?;
            let quorum = Quorum {
                r: None,
                w: quorum_field("w", w, false).map_err(fail)?,
                dw: quorum_field("dw", dw, false).map_err(fail)?,
                n: quorum_field("n", n, false).map_err(fail)?,
            };
            Request::Delete {
                key,
                context,
                quorum,
            }
        }
        Body::Unknown(tag) => return Err(fail(ProtocolErrorKind::UnknownBody(tag))),
    };
    Ok(RequestFrame { id, epoch, request })
}

/// The root table and its `id` and `epoch`, with only the checks the
/// generic verifier makes of a `RequestHeader` (the caller applies its
/// apparent-size bound). Inlined: `decode_request` is the hot caller, and
/// a call cost it 60 instructions per request.
#[inline(always)]
fn read_header(reader: &mut Reader<'_>) -> Result<(Table, u64, u64), Fault> {
    let root = reader.follow(0)?;
    let table = reader.table(root)?;
    let id = match reader.slot(table, 4) {
        Some(field) => reader.u64_at(field)?,
        None => 0,
    };
    let epoch = match reader.slot(table, 6) {
        Some(field) => reader.u64_at(field)?,
        None => 0,
    };
    Ok((table, id, epoch))
}

/// After the header: the stricter checks of the root table and its header
/// fields, then the union and the body.
fn read_request_body(reader: &mut Reader<'_>, header: Table) -> Result<Body, Fault> {
    let root = reader.strict(header)?;
    for voffset in [4, 6] {
        if let Some(field) = reader.entry(root, voffset) {
            Reader::inside(root, field, 8)?;
        }
    }
    // The generic verifier derives the value's slot before the tag's; both
    // reads are counted.
    let value = reader.field(root, 10, OFFSET_BYTES)?;
    let tag = reader.field(root, 8, 1)?;
    match (tag, value) {
        (None, None) => Ok(Body::Unknown(wire::RequestBody::NONE.0)),
        (Some(tag), Some(value)) => {
            let tag = reader.u8_at(tag)?;
            read_body(reader, tag, value)
        }
        (Some(position), None) | (None, Some(position)) => Err(Fault {
            what: "union tag and value not both present",
            position,
        }),
    }
}

// ---------------------------------------------------------------------------
// Reading responses (the client side).

/// A verified response body, before the semantic checks.
enum Reply {
    Pong,
    Delete,
    Put {
        context: Range<usize>,
    },
    Get {
        found: bool,
        /// How many siblings the reply holds (each went to the caller's
        /// `SiblingSink` as it was verified).
        siblings: usize,
        /// The length of the first sibling value over the limit, if any.
        oversized: Option<usize>,
        context: Range<usize>,
    },
    Error {
        code: u16,
        message: Range<usize>,
        acks: u32,
    },
    /// No body, or a union tag this version does not know.
    Unknown(u8),
}

/// Tables the generic verifier counts before a get reply's siblings: the
/// Response and the GetReply.
const REPLY_TABLES_BEFORE_SIBLINGS: usize = 2;

// A get reply is Response → GetReply → Sibling: three levels.
const _: () = assert!(DEPTH_MAX >= 3);

/// Verifies the reply table of union member `tag` at uoffset field `field`
/// and reads its fields, all before any semantic check. `max_tables` is the
/// generic verifier's table bound for this frame. `None` for a routing
/// table, or an error reply carrying one: rare and nested, those are left
/// to the generic path.
fn read_reply(
    reader: &mut Reader<'_>,
    tag: u8,
    field: usize,
    max_tables: usize,
    limits: &Limits,
    sink: &mut impl SiblingSink,
) -> Result<Option<Reply>, Fault> {
    Ok(Some(match wire::ResponseBody(tag) {
        wire::ResponseBody::PongReply => {
            reader.table_field(field)?;
            Reply::Pong
        }
        wire::ResponseBody::DeleteReply => {
            reader.table_field(field)?;
            Reply::Delete
        }
        wire::ResponseBody::PutReply => {
            let put = reader.table_field(field)?;
            Reply::Put {
                context: reader.bytes_field(put, 4)?,
            }
        }
        wire::ResponseBody::GetReply => {
            let get = reader.table_field(field)?;
            let found = reader.u8_field(get, 4)? != 0;
            let mut siblings = 0;
            let mut oversized = None;
            if let Some(values) = reader.field(get, 6, OFFSET_BYTES)? {
                // A vector of uoffsets, each to a Sibling table.
                let vector = reader.follow(values)?;
                let length = reader.u32_at(vector)? as usize;
                let start = vector.saturating_add(OFFSET_BYTES);
                Reader::aligned(start, OFFSET_BYTES)?;
                reader.range(start, length.saturating_mul(OFFSET_BYTES))?;
                // The generic verifier counts one table per sibling and
                // fails past its bound; the vector's range above already
                // bounds `length` by the frame.
                if REPLY_TABLES_BEFORE_SIBLINGS.saturating_add(length) > max_tables {
                    return Err(Fault {
                        what: "too many tables",
                        position: vector,
                    });
                }
                sink.reserve(length);
                for index in 0..length {
                    let sibling = reader.table_field(start + index * OFFSET_BYTES)?;
                    let tombstone = reader.u8_field(sibling, 4)? != 0;
                    let value = reader.bytes_field(sibling, 6)?;
                    if oversized.is_none() && value.len() > limits.value_bytes_max {
                        oversized = Some(value.len());
                    }
                    sink.push(tombstone, value);
                }
                siblings = length;
            }
            Reply::Get {
                found,
                siblings,
                oversized,
                context: reader.bytes_field(get, 8)?,
            }
        }
        wire::ResponseBody::ErrorReply => {
            let error = reader.table_field(field)?;
            // Counted like the other slots: the generic verifier looks the
            // routing slot up too (the fuzzer found the 2 bytes missing
            // from the apparent size when it was not).
            if reader.slot(error, 10).is_some() {
                return Ok(None);
            }
            let code = match reader.field(error, 4, 2)? {
                Some(field) => reader.u16_at(field)?,
                None => 0,
            };
            let message = match reader.field(error, 6, OFFSET_BYTES)? {
                Some(field) => {
                    let string = reader.follow(field)?;
                    let length = reader.u32_at(string)? as usize;
                    let message = reader.range(string + OFFSET_BYTES, length)?;
                    // As the generic verifier: valid UTF-8, then a NUL
                    // right after (not counted toward the apparent size).
                    if std::str::from_utf8(&reader.buffer[message.clone()]).is_err() {
                        return Err(Fault {
                            what: "string is not UTF-8",
                            position: message.start,
                        });
                    }
                    if reader.buffer.get(message.end) != Some(&0) {
                        return Err(Fault {
                            what: "string without its NUL terminator",
                            position: message.end,
                        });
                    }
                    message
                }
                None => 0..0,
            };
            let acks = match reader.field(error, 8, OFFSET_BYTES)? {
                Some(field) => reader.u32_at(field)?,
                None => 0,
            };
            Reply::Error {
                code,
                message,
                acks,
            }
        }
        wire::ResponseBody::RoutingTableReply => return Ok(None),
        // The generic verifier does not look at the value of an unknown
        // member (nor of NONE), and neither does this.
        _ => Reply::Unknown(tag),
    }))
}

/// After the header: the stricter checks of the root table and its `id`,
/// then the union and the reply.
fn read_response_body(
    reader: &mut Reader<'_>,
    header: Table,
    max_tables: usize,
    limits: &Limits,
    sink: &mut impl SiblingSink,
) -> Result<Option<Reply>, Fault> {
    let root = reader.strict(header)?;
    if let Some(field) = reader.entry(root, 4) {
        Reader::inside(root, field, 8)?;
    }
    // The generic verifier derives the value's slot before the tag's.
    let value = reader.field(root, 8, OFFSET_BYTES)?;
    let tag = reader.field(root, 6, 1)?;
    match (tag, value) {
        (None, None) => Ok(Some(Reply::Unknown(wire::ResponseBody::NONE.0))),
        (Some(tag), Some(value)) => {
            let tag = reader.u8_at(tag)?;
            read_reply(reader, tag, value, max_tables, limits, sink)
        }
        (Some(position), None) | (None, Some(position)) => Err(Fault {
            what: "union tag and value not both present",
            position,
        }),
    }
}

/// The `Bytes` for `range` of `frame`, sharing its memory; an empty range
/// takes no reference.
fn slice_of(frame: &Bytes, range: Range<usize>) -> Bytes {
    if range.is_empty() {
        Bytes::new()
    } else {
        frame.slice(range)
    }
}

/// Where the response reader hands each verified sibling (its tombstone
/// flag and the range of its value in the frame), in wire order, as it
/// reads it; `reserve` comes first with the count. The full decoder
/// collects them; the bench's lean reader needs only the count.
trait SiblingSink {
    fn reserve(&mut self, count: usize);
    fn push(&mut self, tombstone: bool, value: Range<usize>);
}

/// Discards the siblings (the reply keeps their count).
impl SiblingSink for () {
    fn reserve(&mut self, _count: usize) {}
    fn push(&mut self, _tombstone: bool, _value: Range<usize>) {}
}

/// Collects the siblings as `Sibling`s sharing `frame`'s memory.
struct Collect<'frame> {
    frame: &'frame Bytes,
    siblings: Vec<Sibling>,
}

impl SiblingSink for Collect<'_> {
    fn reserve(&mut self, count: usize) {
        self.siblings.reserve_exact(count);
    }
    fn push(&mut self, tombstone: bool, value: Range<usize>) {
        self.siblings.push(Sibling {
            tombstone,
            value: slice_of(self.frame, value),
        });
    }
}

/// Verifies one response frame and reads its reply, before the semantic
/// checks: the structural half of `decode_response`, shared with
/// `inspect_response`. `None` as `decode_response` returns it.
fn verify_response(
    frame: &[u8],
    limits: &Limits,
    max_tables: usize,
    sink: &mut impl SiblingSink,
) -> Option<Result<(u64, Reply), ProtocolError>> {
    if frame.len() > limits.frame_bytes_max {
        return Some(Err(ProtocolError {
            id: None,
            kind: ProtocolErrorKind::FrameTooLarge {
                bytes: frame.len(),
                max: limits.frame_bytes_max,
            },
        }));
    }
    let mut reader = Reader {
        buffer: frame,
        apparent_bytes: 0,
    };
    // `ResponseHeader`, a prefix of `Response`, read as the generic
    // verifier reads it, so that the id is recovered exactly when the
    // generic path would recover it.
    let header = read_response_header(&mut reader).and_then(|header| {
        if reader.apparent_bytes > limits.frame_bytes_max {
            return Err(Fault {
                what: "apparent size too large",
                position: 0,
            });
        }
        Ok(header)
    });
    let (header, id) = match header {
        Ok(header) => header,
        Err(fault) => {
            return Some(Err(ProtocolError {
                id: None,
                kind: fault.kind(),
            }))
        }
    };
    let malformed = |fault: Fault| ProtocolError {
        id: Some(id),
        kind: fault.kind(),
    };
    let reply = match read_response_body(&mut reader, header, max_tables, limits, sink) {
        Ok(None) => return None,
        Ok(Some(reply)) => reply,
        Err(fault) => return Some(Err(malformed(fault))),
    };
    if reader.apparent_bytes > limits.frame_bytes_max {
        return Some(Err(malformed(Fault {
            what: "apparent size too large",
            position: 0,
        })));
    }
    Some(Ok((id, reply)))
}

/// Decodes one response frame; see `codec::decode_response`, whose
/// contract this keeps. `max_tables` is the generic verifier's table bound
/// for responses under `limits`. Values and contexts share `frame`'s
/// memory. Returns `None` for a routing table or an error reply carrying
/// one, which the caller decodes on the generic path.
pub(super) fn decode_response(
    frame: &Bytes,
    limits: &Limits,
    max_tables: usize,
) -> Option<Result<(u64, Response), ProtocolError>> {
    let mut sink = Collect {
        frame,
        siblings: Vec::new(),
    };
    let decoded = verify_response(frame, limits, max_tables, &mut sink)?;
    Some(decoded.and_then(|(id, reply)| {
        reply_of(frame, reply, sink.siblings, limits)
            .map(|response| (id, response))
            .map_err(|kind| ProtocolError { id: Some(id), kind })
    }))
}

/// What a successful Pong, Put, Delete or Get reply says, read without
/// allocating or taking a reference to the frame: ranges point into the
/// frame that was inspected. For load generators that count replies
/// (`dynakv-bench`); everything else goes through `decode_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseView {
    Pong,
    Delete,
    Put {
        /// The new version's causal context.
        context: Range<usize>,
    },
    Get {
        found: bool,
        /// How many siblings the reply holds, tombstones included.
        siblings: usize,
        context: Range<usize>,
    },
}

/// Reads one response frame (without its length prefix) as far as a load
/// generator needs it: the request id and a [`ResponseView`], when
/// [`decode_response`](super::decode_response) would return `Ok` with a
/// Pong, Put, Delete or Get reply for the same frame (and the view then
/// agrees with that reply: same id, found flag, sibling count, context
/// bytes). `None` for everything else (error replies, routing tables,
/// frames that fail verification or the limits), which the caller passes
/// to `decode_response` for the exact reply or error. Makes the same
/// checks as `decode_response`; `tests/protocol_differential.rs` holds the
/// two to that.
pub fn inspect_response(frame: &[u8], limits: &Limits) -> Option<(u64, ResponseView)> {
    let max_tables = response_tables_max(limits);
    if let Some(view) = inspect_one_value_get_reply(frame, limits, max_tables) {
        return Some(view);
    }
    let (id, reply) = verify_response(frame, limits, max_tables, &mut ())?.ok()?;
    reply_limits(&reply, limits).ok()?;
    let view = match reply {
        Reply::Pong => ResponseView::Pong,
        Reply::Delete => ResponseView::Delete,
        Reply::Put { context } => ResponseView::Put { context },
        Reply::Get {
            found,
            siblings,
            context,
            ..
        } => ResponseView::Get {
            found,
            siblings,
            context,
        },
        Reply::Error { .. } | Reply::Unknown(_) => return None,
    };
    Some((id, view))
}

/// What the verifier counts toward the apparent size of a one-value get
/// reply (`encode_one_value_get_reply`'s layout) beyond its value's and its
/// context's bytes: the tables, vtables and lengths of the head, and the
/// context's length. `tests::one_value_get_fast_path_is_the_verifiers`
/// checks it against `Reader`'s count.
const ONE_VALUE_GET_APPARENT_FIXED_BYTES: usize = 113;

/// `inspect_response` for a frame laid out exactly as
/// `encode_one_value_get_reply` writes it (nearly every get reply a
/// load generator reads), without walking the flatbuffer: the frame's
/// first 96 bytes must equal the fixed head (`ONE_VALUE_GET_HEAD`) outside
/// its three patched fields, the context's uoffset must point where the
/// writer puts the context (right after the value, 4-aligned), and the
/// context must end the frame. Such a frame is the writer's frame for some
/// id, value and token, whatever the bytes of the value, padding and token
/// are, and the full reader accepts every writer's frame whose sizes keep
/// the limits (checked here as it checks them: frame size, apparent size,
/// table count, then `reply_limits`); its view is then this one. `None`
/// for anything else, which the caller reads the full way (also for a
/// frame this would accept under looser limits: the full reader gives the
/// exact error). The fuzzer in `tests/protocol_differential.rs` holds the
/// two readers to the same answers.
fn inspect_one_value_get_reply(
    frame: &[u8],
    limits: &Limits,
    max_tables: usize,
) -> Option<(u64, ResponseView)> {
    const ID_END: usize = ONE_VALUE_GET_ID_AT + 8;
    const CONTEXT_FIELD_END: usize = ONE_VALUE_GET_CONTEXT_FIELD_AT + OFFSET_BYTES;
    let head = frame.get(..ONE_VALUE_GET_HEAD_BYTES)?;
    let template = &*ONE_VALUE_GET_HEAD;
    if head[..ONE_VALUE_GET_ID_AT] != template[..ONE_VALUE_GET_ID_AT]
        || head[ID_END..ONE_VALUE_GET_CONTEXT_FIELD_AT]
            != template[ID_END..ONE_VALUE_GET_CONTEXT_FIELD_AT]
        || head[CONTEXT_FIELD_END..ONE_VALUE_GET_VALUE_LENGTH_AT]
            != template[CONTEXT_FIELD_END..ONE_VALUE_GET_VALUE_LENGTH_AT]
    {
        return None;
    }
    let u32_at = |bytes: &[u8], at: usize| -> Option<usize> {
        let field = bytes.get(at..at + OFFSET_BYTES)?;
        Some(u32::from_le_bytes(field.try_into().expect("four bytes")) as usize)
    };
    let id = u64::from_le_bytes(
        head[ONE_VALUE_GET_ID_AT..ID_END]
            .try_into()
            .expect("eight bytes"),
    );
    let value_length = u32_at(head, ONE_VALUE_GET_VALUE_LENGTH_AT)?;
    // Where the writer puts the context's length: after the value, padded
    // to a uoffset's alignment (the head is 4-aligned in the frame).
    let context_at = (ONE_VALUE_GET_HEAD_BYTES + value_length).next_multiple_of(OFFSET_BYTES);
    if u32_at(head, ONE_VALUE_GET_CONTEXT_FIELD_AT)? != context_at - ONE_VALUE_GET_CONTEXT_FIELD_AT
    {
        return None;
    }
    let context_length = u32_at(frame, context_at)?;
    let context = context_at + OFFSET_BYTES..context_at + OFFSET_BYTES + context_length;
    if context.end != frame.len() {
        return None;
    }
    let apparent_bytes = ONE_VALUE_GET_APPARENT_FIXED_BYTES + value_length + context_length;
    if frame.len() > limits.frame_bytes_max
        || apparent_bytes > limits.frame_bytes_max
        || REPLY_TABLES_BEFORE_SIBLINGS + 1 > max_tables
    {
        return None;
    }
    let reply = Reply::Get {
        found: true,
        siblings: 1,
        oversized: (value_length > limits.value_bytes_max).then_some(value_length),
        context,
    };
    reply_limits(&reply, limits).ok()?;
    let Reply::Get { context, .. } = reply else {
        unreachable!("built above")
    };
    Some((
        id,
        ResponseView::Get {
            found: true,
            siblings: 1,
            context,
        },
    ))
}

/// The root table and its `id`, with only the checks the generic verifier
/// makes of a `ResponseHeader` (the caller applies its apparent-size
/// bound).
fn read_response_header(reader: &mut Reader<'_>) -> Result<(Table, u64), Fault> {
    let root = reader.follow(0)?;
    let table = reader.table(root)?;
    let id = match reader.slot(table, 4) {
        Some(field) => reader.u64_at(field)?,
        None => 0,
    };
    Ok((table, id))
}

/// The limits a verified put or get reply must keep, in the generic path's
/// order: the sibling count, an oversized value, the context's size. The one
/// statement of these rules for `reply_of` and `inspect_response`. (An error
/// reply's message is checked by `reply_of`; `inspect_response` declines
/// error replies.)
fn reply_limits(reply: &Reply, limits: &Limits) -> Result<(), ProtocolErrorKind> {
    let context = match reply {
        Reply::Put { context } => context,
        Reply::Get {
            siblings: count,
            oversized,
            context,
            ..
        } => {
            if *count > limits.siblings_max {
                return Err(ProtocolErrorKind::TooManySiblings {
                    count: *count,
                    max: limits.siblings_max,
                });
            }
            if let Some(bytes) = *oversized {
                return Err(ProtocolErrorKind::ValueTooLarge {
                    bytes,
                    max: limits.value_bytes_max,
                });
            }
            context
        }
        Reply::Pong | Reply::Delete | Reply::Error { .. } | Reply::Unknown(_) => return Ok(()),
    };
    if context.len() > limits.context_bytes_max {
        return Err(ProtocolErrorKind::ContextTooLarge {
            bytes: context.len(),
            max: limits.context_bytes_max,
        });
    }
    Ok(())
}

/// The semantic checks of a verified reply, in the generic path's order.
/// `siblings` are those the reader collected for a get reply.
fn reply_of(
    frame: &Bytes,
    reply: Reply,
    siblings: Vec<Sibling>,
    limits: &Limits,
) -> Result<Response, ProtocolErrorKind> {
    reply_limits(&reply, limits)?;
    Ok(match reply {
        Reply::Pong => Response::Pong,
        Reply::Delete => Response::Delete,
        Reply::Put { context } => Response::Put {
            context: slice_of(frame, context),
        },
        Reply::Get {
            found,
            siblings: count,
            context,
            ..
        } => {
            debug_assert_eq!(count, siblings.len());
            Response::Get {
                found,
                siblings,
                context: slice_of(frame, context),
            }
        }
        Reply::Error {
            code,
            message,
            acks,
        } => {
            let text = &frame[message];
            if text.len() > limits.error_message_bytes_max {
                return Err(ProtocolErrorKind::MessageTooLarge {
                    bytes: text.len(),
                    max: limits.error_message_bytes_max,
                });
            }
            // Checked UTF-8 while verifying.
            let text = std::str::from_utf8(text).unwrap_or_default();
            let (code, message) = match ErrorCode::from_wire(code) {
                Some(code) => (code, text.to_owned()),
                // As the generic path: a newer node's code is a failure
                // all the same.
                None => (
                    ErrorCode::Internal,
                    format!("unknown error code {code}: {text}"),
                ),
            };
            Response::Error {
                code,
                message,
                acks,
                routing: None,
            }
        }
        Reply::Unknown(tag) => return Err(ProtocolErrorKind::UnknownBody(tag)),
    })
}

// ---------------------------------------------------------------------------
// Writing requests (the client side).
//
// Layout of every request frame, front to back (positions relative to the
// flatbuffer, which is what flatbuffers aligns against; the length prefix
// comes before it):
//
//   0    root uoffset → Request table
//   4    Request vtable, 12 bytes: slots id, epoch, body_type, body
//   16   body vtable: 4 bytes, then 2 per slot up to its last present one
//        padding to 4 mod 8
//   R    Request table: soffset, then its present fields: id: u64 and
//        epoch: u64 (8-aligned, as R is 4 mod 8), body: uoffset,
//        body_type: u8; padding to 4
//   B    body table: soffset, its present byte-vector uoffsets, then its
//        present u8 quorum fields; padding to 4
//        the body's present byte vectors (key, value, context), each
//        4-aligned
//
// Every body table has the same shape: byte-vector slots first, then u8
// slots, which is the schema's field order (Ping and RoutingTableRequest:
// no fields; GetRequest: key, then r and n; PutRequest: key, value,
// context, then w, dw and n; DeleteRequest: key, context, then w, dw and
// n), so slot i is field i.
//
// As `FlatBufferBuilder` does, a field equal to its default (a zero id,
// epoch or quorum override; a put's absent or empty context) is left out,
// and a vtable ends at its last present slot, while the byte vectors the
// builder always writes (keys, values, a delete's context) are present
// even when empty. A node's reader therefore looks at exactly the fields it
// looks at in a builder's frame, so a hand-written request costs it no more
// to read; and the frame is no larger than the builder's.

/// Where the Request vtable and the body vtable start.
const REQUEST_VTABLE_POSITION: usize = OFFSET_BYTES;
/// The Request vtable: its two header entries and 4 slots.
const REQUEST_VTABLE_BYTES: usize = (2 + 4) * VOFFSET_BYTES;
const BODY_VTABLE_POSITION: usize = REQUEST_VTABLE_POSITION + REQUEST_VTABLE_BYTES;

/// Bytes of a u64 field.
const U64_BYTES: usize = 8;

/// The most bytes of a request frame before its first vector's bytes: the
/// length prefix, the root, the Request vtable, a body vtable of 6 slots,
/// up to 6 bytes of padding, a Request table with id and epoch, a body
/// table of 3 vectors and 3 u8 fields, and the first vector's length.
const REQUEST_HEAD_BYTES_MAX: usize = FRAME_LENGTH_BYTES
    + BODY_VTABLE_POSITION
    + (2 + 6) * VOFFSET_BYTES
    + 6
    + (OFFSET_BYTES + 2 * U64_BYTES + 2 * OFFSET_BYTES)
    + (OFFSET_BYTES + 3 * OFFSET_BYTES + OFFSET_BYTES)
    + OFFSET_BYTES;

/// Appends the frame for request `request` with `id` and `epoch` to `out`,
/// front to back in the layout above. The frame decodes (`decode_request`
/// and `decode_request_generic` alike) to the same value as the one
/// `FlatBufferBuilder` writes (`codec::Encoder::encode_request_generic`);
/// the bytes differ (field order, vtable placement).
pub(super) fn encode_request(id: u64, epoch: u64, request: &RequestRef<'_>, out: &mut Vec<u8>) {
    use wire::RequestBody as Tag;
    let write_quorum = |quorum: Quorum| {
        [
            quorum.w.unwrap_or(0),
            quorum.dw.unwrap_or(0),
            quorum.n.unwrap_or(0),
        ]
    };
    // Each body as its byte vectors and u8 fields in slot order (`None` and
    // 0 are left out); the builder always writes keys, values and a
    // delete's context, and leaves out a put's absent or empty context.
    match *request {
        RequestRef::Ping => write_request(id, epoch, Tag::PingRequest, [], [], out),
        RequestRef::GetRoutingTable => {
            write_request(id, epoch, Tag::RoutingTableRequest, [], [], out)
        }
        RequestRef::Get { key, quorum } => write_request(
            id,
            epoch,
            Tag::GetRequest,
            [Some(key)],
            [quorum.r.unwrap_or(0), quorum.n.unwrap_or(0)],
            out,
        ),
        RequestRef::Put {
            key,
            value,
            context,
            quorum,
        } => write_request(
            id,
            epoch,
            Tag::PutRequest,
            [
                Some(key),
                Some(value),
                context.filter(|context| !context.is_empty()),
            ],
            write_quorum(quorum),
            out,
        ),
        RequestRef::Delete {
            key,
            context,
            quorum,
        } => write_request(
            id,
            epoch,
            Tag::DeleteRequest,
            [Some(key), Some(context)],
            write_quorum(quorum),
            out,
        ),
    }
}

/// Writes one request frame whose body table has `V` byte-vector slots
/// followed by `S` u8 slots (every request body has this shape), in the
/// layout above. One copy per body type, so the slot loops unroll and the
/// fields every request of that type has are laid out at compile time.
#[inline(always)]
fn write_request<const V: usize, const S: usize>(
    id: u64,
    epoch: u64,
    tag: wire::RequestBody,
    vectors: [Option<&[u8]>; V],
    scalars: [u8; S],
    out: &mut Vec<u8>,
) {
    // The Request table: soffset, id and epoch when not zero (8-aligned, as
    // the table is at 4 mod 8), the body uoffset, the tag, 3 bytes padding.
    let id_offset = if id != 0 { OFFSET_BYTES } else { 0 };
    let epoch_offset = if epoch != 0 {
        OFFSET_BYTES + id_offset.min(1) * U64_BYTES
    } else {
        0
    };
    let body_offset = OFFSET_BYTES + (id_offset.min(1) + epoch_offset.min(1)) * U64_BYTES;
    let tag_offset = body_offset + OFFSET_BYTES;
    let request_inline_bytes = tag_offset + OFFSET_BYTES;

    // The body table: soffset, the present vectors' uoffsets, the present
    // u8 fields, padding to 4. Its vtable ends at the last present slot.
    let mut vector_offsets = [0; V];
    let mut scalar_offsets = [0; S];
    let mut cursor = OFFSET_BYTES;
    let mut body_vtable_slots = 0;
    for (slot, (offset, vector)) in vector_offsets.iter_mut().zip(vectors).enumerate() {
        if vector.is_some() {
            *offset = cursor;
            cursor += OFFSET_BYTES;
            body_vtable_slots = slot + 1;
        }
    }
    for (index, (offset, &scalar)) in scalar_offsets.iter_mut().zip(&scalars).enumerate() {
        if scalar != 0 {
            *offset = cursor;
            cursor += 1;
            body_vtable_slots = V + index + 1;
        }
    }
    let body_inline_bytes = cursor.next_multiple_of(OFFSET_BYTES);
    let body_vtable_bytes = (2 + body_vtable_slots) * VOFFSET_BYTES;

    // Positions in the flatbuffer: the Request table at 4 mod 8 after both
    // vtables, the body table after it, then each present vector 4-aligned.
    let vtables_end = BODY_VTABLE_POSITION + body_vtable_bytes;
    let root_table = vtables_end + (12 - vtables_end % 8) % 8;
    let body_table = root_table + request_inline_bytes;
    let mut vector_positions = [0; V];
    let mut end = body_table + body_inline_bytes;
    for (position, vector) in vector_positions.iter_mut().zip(vectors) {
        if let Some(vector) = vector {
            end = end.next_multiple_of(OFFSET_BYTES);
            *position = end;
            end += OFFSET_BYTES + vector.len();
        }
    }
    let length = u32::try_from(end).expect("an encoded message fits a u32 length");

    // Everything before the first vector's bytes is assembled on the stack
    // and appended in one copy.
    let mut head = Head {
        bytes: [0; REQUEST_HEAD_BYTES_MAX],
        len: 0,
    };
    head.push(&length.to_le_bytes());
    // Root uoffset, Request vtable (id, epoch, body_type, body), body vtable.
    head.push(&(root_table as u32).to_le_bytes());
    head.u16(REQUEST_VTABLE_BYTES);
    head.u16(request_inline_bytes);
    head.u16(id_offset);
    head.u16(epoch_offset);
    head.u16(tag_offset);
    head.u16(body_offset);
    head.u16(body_vtable_bytes);
    head.u16(body_inline_bytes);
    for slot in 0..body_vtable_slots {
        head.u16(if slot < V {
            vector_offsets[slot]
        } else {
            scalar_offsets[slot - V]
        });
    }
    // Padding, then the Request table; a positive soffset points back to
    // its vtable.
    head.len += root_table - vtables_end;
    head.push(&((root_table - REQUEST_VTABLE_POSITION) as u32).to_le_bytes());
    if id != 0 {
        head.push(&id.to_le_bytes());
    }
    if epoch != 0 {
        head.push(&epoch.to_le_bytes());
    }
    head.push(&((request_inline_bytes - body_offset) as u32).to_le_bytes());
    head.push(&[tag.0, 0, 0, 0]);
    // The body table, padded.
    debug_assert_eq!(head.len, FRAME_LENGTH_BYTES + body_table);
    head.push(&((body_table - BODY_VTABLE_POSITION) as u32).to_le_bytes());
    for (&offset, &position) in vector_offsets.iter().zip(&vector_positions) {
        if offset != 0 {
            head.push(&((position - (body_table + offset)) as u32).to_le_bytes());
        }
    }
    for &scalar in &scalars {
        if scalar != 0 {
            head.push(&[scalar]);
        }
    }
    head.len = FRAME_LENGTH_BYTES + body_table + body_inline_bytes;

    // The vectors: padding and length, then the bytes. The body table ends
    // 4-aligned, where the first vector starts: its length goes out with
    // the head.
    out.reserve(FRAME_LENGTH_BYTES + end);
    let base = out.len() + FRAME_LENGTH_BYTES;
    let mut written = body_table + body_inline_bytes;
    let mut first = true;
    for (&position, vector) in vector_positions.iter().zip(vectors) {
        let Some(vector) = vector else { continue };
        let length = (vector.len() as u32).to_le_bytes();
        if first {
            debug_assert_eq!(position, written);
            head.push(&length);
            out.extend_from_slice(&head.bytes[..head.len]);
            first = false;
        } else {
            let padding = position - written;
            let mut word = [0; 2 * OFFSET_BYTES];
            word[padding..padding + OFFSET_BYTES].copy_from_slice(&length);
            out.extend_from_slice(&word[..padding + OFFSET_BYTES]);
        }
        out.extend_from_slice(vector);
        written = position + OFFSET_BYTES + vector.len();
    }
    if first {
        out.extend_from_slice(&head.bytes[..head.len]);
    }
    debug_assert!(root_table % 8 == 4);
    debug_assert_eq!(out.len() - base, end);
}

/// The bytes of a request frame before its first vector's bytes, assembled
/// on the stack front to back.
struct Head {
    bytes: [u8; REQUEST_HEAD_BYTES_MAX],
    len: usize,
}

impl Head {
    fn push(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// A vtable entry. Every offset in a request head is below a few
    /// hundred, so it fits.
    fn u16(&mut self, value: usize) {
        self.push(&(value as u16).to_le_bytes());
    }
}

// ---------------------------------------------------------------------------
// Writing replies.
//
// Layout of every frame written here, front to back (positions relative to
// the flatbuffer, which is what flatbuffers aligns against; the length
// prefix comes before it):
//
//   root uoffset → Response table
//   the vtables the message needs
//   Response table (at 4 mod 8, so its u64 id is 8-aligned):
//     soffset, id: u64, body: uoffset, body_type: u8, 3 bytes padding
//   body table (4-aligned), then what it points to (vectors, siblings)
//
// Every uoffset points forwards and every vtable lies before its tables,
// as flatbuffers requires of offsets (uoffsets are unsigned) and allows of
// vtables (soffsets are signed).

/// Inline size of the Response table as written here.
const RESPONSE_TABLE_BYTES: u16 = 20;

/// Appends a flatbuffer to `out` with positions relative to its start.
struct Writer<'out> {
    out: &'out mut Vec<u8>,
    /// Index in `out` where the flatbuffer begins.
    base: usize,
}

impl Writer<'_> {
    fn position(&self) -> usize {
        self.out.len() - self.base
    }

    fn pad_to(&mut self, align: usize) {
        let padding = self.position().wrapping_neg() % align;
        self.out.resize(self.out.len() + padding, 0);
    }

    fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// A vtable: its own length, the table's inline size, then the field
    /// offsets in slot order. Returns its position.
    fn vtable(&mut self, inline_bytes: u16, fields: &[u16]) -> usize {
        debug_assert!(self.position() % VOFFSET_BYTES == 0);
        let position = self.position();
        let vtable_bytes = (2 + fields.len()) * VOFFSET_BYTES;
        self.u16(vtable_bytes as u16);
        self.u16(inline_bytes);
        for &field in fields {
            self.u16(field);
        }
        position
    }

    /// Starts a table whose vtable is at `vtable`: writes its soffset.
    /// Returns the table's position.
    fn table(&mut self, vtable: usize) -> usize {
        debug_assert!(self.position() % OFFSET_BYTES == 0 && vtable < self.position());
        let position = self.position();
        let soffset = i32::try_from(position - vtable).expect("a vtable within 2 GiB of its table");
        self.out.extend_from_slice(&soffset.to_le_bytes());
        position
    }

    /// A uoffset placeholder; `point` fills it in once the target is known.
    fn uoffset(&mut self) -> usize {
        let position = self.position();
        self.u32(0);
        position
    }

    /// Points the uoffset at `from` to the current position.
    fn point(&mut self, from: usize) {
        let offset = u32::try_from(self.position() - from).expect("a frame fits a u32 length");
        let at = self.base + from;
        self.out[at..at + OFFSET_BYTES].copy_from_slice(&offset.to_le_bytes());
    }

    /// A byte vector (or, with `nul`, a string and its terminator), at a
    /// 4-aligned position.
    fn bytes(&mut self, bytes: &[u8], nul: bool) {
        self.pad_to(OFFSET_BYTES);
        self.u32(u32::try_from(bytes.len()).expect("a frame fits a u32 length"));
        self.out.extend_from_slice(bytes);
        if nul {
            self.out.push(0);
        }
    }
}

/// Appends the frame for reply `response` to request `id` to `out` if it is
/// one of the replies written by hand, and returns whether it was. The
/// frame decodes (`decode_response`) to the same value as the one
/// `FlatBufferBuilder` writes; the bytes differ (field order, explicit
/// defaults).
pub(super) fn encode_reply(id: u64, response: &Response, out: &mut Vec<u8>) -> bool {
    // Routing tables (and error replies carrying one) are rare and nested:
    // they keep the builder.
    let body_type = match response {
        Response::Pong => wire::ResponseBody::PongReply,
        Response::Get { .. } => wire::ResponseBody::GetReply,
        Response::Put { .. } => wire::ResponseBody::PutReply,
        Response::Delete => wire::ResponseBody::DeleteReply,
        Response::Error { routing: None, .. } => wire::ResponseBody::ErrorReply,
        Response::Error {
            routing: Some(_), ..
        }
        | Response::RoutingTable(_) => return false,
    };
    if let Response::Put { context } = response {
        encode_put_reply(id, context, out);
        return true;
    }
    let frame_start = out.len();
    out.reserve(FRAME_LENGTH_BYTES + 64 + payload_bytes(response));
    out.extend_from_slice(&[0; FRAME_LENGTH_BYTES]);
    let base = out.len();
    let mut w = Writer { out, base };
    let root = w.uoffset();
    // Response: id at 4, body at 12, body_type at 16.
    let response_vtable = w.vtable(RESPONSE_TABLE_BYTES, &[4, 16, 12]);
    match response {
        Response::Pong | Response::Delete => {
            // An empty table: no fields.
            let body_vtable = w.vtable(OFFSET_BYTES as u16, &[]);
            let body = response_table(&mut w, root, response_vtable, id, body_type);
            w.point(body);
            w.table(body_vtable);
        }
        Response::Put { .. } => unreachable!("written from its template above"),
        Response::Get {
            found,
            siblings,
            context,
        } => get_reply(
            &mut w,
            root,
            response_vtable,
            id,
            *found,
            siblings
                .iter()
                .map(|sibling| (sibling.tombstone, sibling.value.as_ref())),
            |out| out.extend_from_slice(context),
        ),
        Response::Error {
            code,
            message,
            acks,
            routing: None,
        } => {
            // ErrorReply: code at 12, message at 4, acks at 8.
            let body_vtable = w.vtable(16, &[12, 4, 8]);
            let body = response_table(&mut w, root, response_vtable, id, body_type);
            w.point(body);
            w.table(body_vtable);
            let message_field = w.uoffset();
            w.u32(*acks);
            w.u16(code.to_wire());
            w.pad_to(OFFSET_BYTES);
            w.point(message_field);
            w.bytes(message.as_bytes(), true);
        }
        Response::Error {
            routing: Some(_), ..
        }
        | Response::RoutingTable(_) => {
            unreachable!("left to the builder above")
        }
    }
    let length = u32::try_from(out.len() - base).expect("an encoded message fits a u32 length");
    out[frame_start..base].copy_from_slice(&length.to_le_bytes());
    true
}

/// Bytes of a put reply's flatbuffer before its context token's bytes.
const PUT_REPLY_HEAD_BYTES: usize = 60;
/// Where a put reply's request id and context length go, in its flatbuffer.
const PUT_REPLY_ID_AT: usize = 32;
const PUT_REPLY_CONTEXT_LENGTH_AT: usize = 56;

/// A put reply's flatbuffer up to its context token, with the id and the
/// token's length left 0. The layout is `Writer`'s (see above) and depends
/// on nothing else, so it is fixed: root uoffset (28); the Response vtable
/// (10 bytes: inline 20, id at 4, body_type at 16, body at 12); the
/// PutReply vtable (6 bytes: inline 8, context at 4); 8 bytes of padding;
/// the Response table at 28 (soffset 24, id, body uoffset 8, body type, 3
/// bytes padding); the PutReply table at 48 (soffset 34, context uoffset
/// 4); the context's length at 56. `tests::put_reply_template_is_the_writers`
/// checks it against `Writer`'s frame.
const PUT_REPLY_HEAD: [u8; PUT_REPLY_HEAD_BYTES] = [
    28,
    0,
    0,
    0, // root uoffset -> Response table at 28
    10,
    0,
    20,
    0,
    4,
    0,
    16,
    0,
    12,
    0, // Response vtable at 4
    6,
    0,
    8,
    0,
    4,
    0, // PutReply vtable at 14
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0, // padding: the table's id 8-aligned
    24,
    0,
    0,
    0, // Response table at 28: soffset to its vtable at 4
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0, // id
    8,
    0,
    0,
    0, // body uoffset -> PutReply table at 48
    wire::ResponseBody::PutReply.0,
    0,
    0,
    0, // body type, padding
    34,
    0,
    0,
    0, // PutReply table at 48: soffset to its vtable at 14
    4,
    0,
    0,
    0, // context uoffset -> its vector at 56
    0,
    0,
    0,
    0, // the context's length
];

/// Appends the frame of the put reply to request `id` with token `context`
/// to `out`: the fixed head (`PUT_REPLY_HEAD`) with the id and length
/// filled in, then the token. The bytes are those `Writer` would write.
pub fn encode_put_reply(id: u64, context: &[u8], out: &mut Vec<u8>) {
    let mut head = [0u8; FRAME_LENGTH_BYTES + PUT_REPLY_HEAD_BYTES];
    let frame_bytes = u32::try_from(PUT_REPLY_HEAD_BYTES + context.len())
        .expect("an encoded message fits a u32 length");
    let context_bytes = context.len() as u32;
    head[..FRAME_LENGTH_BYTES].copy_from_slice(&frame_bytes.to_le_bytes());
    head[FRAME_LENGTH_BYTES..].copy_from_slice(&PUT_REPLY_HEAD);
    let id_at = FRAME_LENGTH_BYTES + PUT_REPLY_ID_AT;
    head[id_at..id_at + 8].copy_from_slice(&id.to_le_bytes());
    let length_at = FRAME_LENGTH_BYTES + PUT_REPLY_CONTEXT_LENGTH_AT;
    head[length_at..length_at + OFFSET_BYTES].copy_from_slice(&context_bytes.to_le_bytes());
    out.reserve(head.len() + context.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(context);
}

/// Appends the frame of a get reply to request `id` to `out`, from the
/// reply's parts instead of a `Response::Get`: `values` are its siblings'
/// values (none a tombstone), and `context` appends its context token. The
/// bytes are exactly those `encode_reply` writes for the `Response::Get`
/// with those siblings and that token (both write through `get_reply`).
/// `reserve`: about how many bytes the reply takes, to grow `out` once.
pub fn encode_get_reply<'v>(
    id: u64,
    mut values: impl ExactSizeIterator<Item = &'v [u8]>,
    context: impl FnOnce(&mut Vec<u8>),
    reserve: usize,
    out: &mut Vec<u8>,
) {
    if values.len() == 1 {
        let value = values.next().expect("one value");
        encode_one_value_get_reply(id, value, context, reserve, out);
        return;
    }
    encode_get_reply_written(id, values, context, reserve, out);
}

/// `encode_get_reply`, every field written by `Writer`.
fn encode_get_reply_written<'v>(
    id: u64,
    values: impl ExactSizeIterator<Item = &'v [u8]>,
    context: impl FnOnce(&mut Vec<u8>),
    reserve: usize,
    out: &mut Vec<u8>,
) {
    let frame_start = out.len();
    out.reserve(FRAME_LENGTH_BYTES + 64 + reserve);
    out.extend_from_slice(&[0; FRAME_LENGTH_BYTES]);
    let base = out.len();
    let mut w = Writer { out, base };
    let root = w.uoffset();
    let response_vtable = w.vtable(RESPONSE_TABLE_BYTES, &[4, 16, 12]);
    let found = values.len() > 0;
    get_reply(
        &mut w,
        root,
        response_vtable,
        id,
        found,
        values.map(|value| (false, value)),
        context,
    );
    let length = u32::try_from(out.len() - base).expect("an encoded message fits a u32 length");
    out[frame_start..base].copy_from_slice(&length.to_le_bytes());
}

/// Bytes of a one-value get reply's flatbuffer before the value's bytes:
/// everything before the value has a fixed layout (`get_reply`'s, for one
/// sibling), ending with the value's length.
const ONE_VALUE_GET_HEAD_BYTES: usize = 96;
/// Where the request id, the context's uoffset and the value's length go
/// in that head.
const ONE_VALUE_GET_ID_AT: usize = 40;
const ONE_VALUE_GET_CONTEXT_FIELD_AT: usize = 64;
const ONE_VALUE_GET_VALUE_LENGTH_AT: usize = 92;

/// The head of a one-value get reply with id 0 and an empty value, written
/// once by `Writer` (`get_reply`), so that its layout is `Writer`'s by
/// construction; `tests::one_value_get_reply_is_the_writers` checks the
/// patched frames against `Writer`'s.
static ONE_VALUE_GET_HEAD: std::sync::LazyLock<[u8; ONE_VALUE_GET_HEAD_BYTES]> =
    std::sync::LazyLock::new(|| {
        let mut frame = Vec::new();
        encode_get_reply_written(0, std::iter::once(&[][..]), |_| {}, 0, &mut frame);
        let head = &frame[FRAME_LENGTH_BYTES..FRAME_LENGTH_BYTES + ONE_VALUE_GET_HEAD_BYTES];
        head.try_into().expect("the head's length")
    });

/// `encode_get_reply` of exactly one value (nearly every get): the fixed
/// head copied and patched (id, value length, the context's uoffset), then
/// the value, padding, and the context token with its length.
fn encode_one_value_get_reply(
    id: u64,
    value: &[u8],
    context: impl FnOnce(&mut Vec<u8>),
    reserve: usize,
    out: &mut Vec<u8>,
) {
    let frame_start = out.len();
    out.reserve(FRAME_LENGTH_BYTES + 64 + reserve);
    let base = frame_start + FRAME_LENGTH_BYTES;
    out.extend_from_slice(&[0; FRAME_LENGTH_BYTES]);
    out.extend_from_slice(&ONE_VALUE_GET_HEAD[..]);
    let value_length = u32::try_from(value.len()).expect("a frame fits a u32 length");
    let patch = |out: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        out[base + at..base + at + bytes.len()].copy_from_slice(bytes);
    };
    patch(out, ONE_VALUE_GET_ID_AT, &id.to_le_bytes());
    patch(
        out,
        ONE_VALUE_GET_VALUE_LENGTH_AT,
        &value_length.to_le_bytes(),
    );
    out.extend_from_slice(value);
    let padding = (out.len() - base).wrapping_neg() % OFFSET_BYTES;
    out.resize(out.len() + padding, 0);
    let context_at = out.len() - base;
    let context_offset =
        u32::try_from(context_at - ONE_VALUE_GET_CONTEXT_FIELD_AT).expect("a frame fits a u32");
    patch(
        out,
        ONE_VALUE_GET_CONTEXT_FIELD_AT,
        &context_offset.to_le_bytes(),
    );
    out.extend_from_slice(&[0; OFFSET_BYTES]);
    let start = out.len();
    context(out);
    let context_length = u32::try_from(out.len() - start).expect("a frame fits a u32 length");
    patch(out, context_at, &context_length.to_le_bytes());
    let length = u32::try_from(out.len() - base).expect("an encoded message fits a u32 length");
    out[frame_start..base].copy_from_slice(&length.to_le_bytes());
}

/// The GetReply body and the Response table before it: `siblings` as
/// (tombstone, value), then the context token `context` appends.
fn get_reply<'v>(
    w: &mut Writer<'_>,
    root: usize,
    response_vtable: usize,
    id: u64,
    found: bool,
    siblings: impl ExactSizeIterator<Item = (bool, &'v [u8])>,
    context: impl FnOnce(&mut Vec<u8>),
) {
    // GetReply: found at 12, values at 4, context at 8. Sibling:
    // tombstone at 8, value at 4.
    let body_vtable = w.vtable(16, &[12, 4, 8]);
    let sibling_vtable = w.vtable(12, &[8, 4]);
    let body = response_table(w, root, response_vtable, id, wire::ResponseBody::GetReply);
    w.point(body);
    w.table(body_vtable);
    let values_field = w.uoffset();
    let context_field = w.uoffset();
    w.out.push(u8::from(found));
    w.pad_to(OFFSET_BYTES);
    w.point(values_field);
    let count = siblings.len();
    w.u32(u32::try_from(count).expect("siblings fit a u32"));
    let elements = w.position();
    for _ in 0..count {
        w.uoffset();
    }
    for (index, (tombstone, value)) in siblings.enumerate() {
        w.pad_to(OFFSET_BYTES);
        w.point(elements + index * OFFSET_BYTES);
        w.table(sibling_vtable);
        let value_field = w.uoffset();
        w.out.push(u8::from(tombstone));
        w.pad_to(OFFSET_BYTES);
        w.point(value_field);
        w.bytes(value, false);
    }
    w.pad_to(OFFSET_BYTES);
    w.point(context_field);
    // The context's length is known once it is written.
    let length_at = w.uoffset();
    let start = w.out.len();
    context(w.out);
    let length = u32::try_from(w.out.len() - start).expect("a frame fits a u32 length");
    let at = w.base + length_at;
    w.out[at..at + OFFSET_BYTES].copy_from_slice(&length.to_le_bytes());
}

/// Writes the Response table (after padding it to 4 mod 8), points the root
/// at it, and returns the position of its body uoffset.
fn response_table(
    w: &mut Writer<'_>,
    root: usize,
    vtable: usize,
    id: u64,
    body_type: wire::ResponseBody,
) -> usize {
    w.pad_to(8);
    w.u32(0);
    w.point(root);
    let table = w.table(vtable);
    debug_assert_eq!((table + OFFSET_BYTES) % 8, 0, "the id is 8-aligned");
    w.out.extend_from_slice(&id.to_le_bytes());
    let body = w.uoffset();
    w.out.extend_from_slice(&[body_type.0, 0, 0, 0]);
    debug_assert_eq!(w.position() - table, usize::from(RESPONSE_TABLE_BYTES));
    body
}

/// The variable-length bytes of a hand-written reply, with their per-item
/// overhead, for reserving `out` once.
fn payload_bytes(response: &Response) -> usize {
    match response {
        Response::Get {
            siblings, context, ..
        } => {
            siblings
                .iter()
                .map(|sibling| sibling.value.len() + 24)
                .sum::<usize>()
                + context.len()
                + 8
        }
        Response::Put { context } => context.len() + 8,
        Response::Error { message, .. } => message.len() + 8,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The put reply as `Writer` writes it, field by field: the reference
    /// for `PUT_REPLY_HEAD`.
    fn put_reply_by_writer(id: u64, context: &[u8], out: &mut Vec<u8>) {
        let frame_start = out.len();
        out.extend_from_slice(&[0; FRAME_LENGTH_BYTES]);
        let base = out.len();
        let mut w = Writer { out, base };
        let root = w.uoffset();
        // Response: id at 4, body at 12, body_type at 16.
        let response_vtable = w.vtable(RESPONSE_TABLE_BYTES, &[4, 16, 12]);
        // PutReply: context at 4.
        let body_vtable = w.vtable(8, &[4]);
        let body = response_table(
            &mut w,
            root,
            response_vtable,
            id,
            wire::ResponseBody::PutReply,
        );
        w.point(body);
        w.table(body_vtable);
        let context_field = w.uoffset();
        w.point(context_field);
        w.bytes(context, false);
        let length = (out.len() - base) as u32;
        out[frame_start..base].copy_from_slice(&length.to_le_bytes());
    }

    #[test]
    fn a_parsed_requests_get_and_put_are_what_decode_request_decodes_them_to() {
        // On gets, puts and deletes with keys, values, contexts and quorums
        // in and out of bounds, on the other requests, and on damaged and
        // truncated copies of them all: `parse_request` then
        // `ParsedRequest::get` (the shard's in-place get) or
        // `ParsedRequest::put` (its in-place put or delete) is `Some`
        // exactly when `decode_request` gives that request, with the same
        // id, key, value, context and quorum; never both.
        use crate::protocol::{encode_request, Quorum, Request, RequestFrame, R_ALL};
        let limits = Limits {
            key_bytes_max: 24,
            value_bytes_max: 64,
            context_bytes_max: 16,
            ..Limits::default()
        };
        // (kind: 0 get, 1 put, 2 delete; id; key; value; context; quorum)
        type Seen = (u8, u64, Vec<u8>, Option<Vec<u8>>, Vec<u8>, Quorum);
        let expected = |frame: &[u8]| -> Option<Seen> {
            let decoded = decode_request(Bytes::copy_from_slice(frame), &limits).ok()?;
            let id = decoded.id;
            match decoded.request {
                Request::Get { key, quorum } => Some((0, id, key.to_vec(), None, vec![], quorum)),
                Request::Put {
                    key,
                    value,
                    context,
                    quorum,
                } => {
                    let context = context.map(|c| c.to_vec()).unwrap_or_default();
                    Some((1, id, key.to_vec(), Some(value.to_vec()), context, quorum))
                }
                Request::Delete {
                    key,
                    context,
                    quorum,
                } => Some((2, id, key.to_vec(), None, context.to_vec(), quorum)),
                _ => None,
            }
        };
        let peeked = |frame: &[u8]| -> Option<Seen> {
            let parsed = parse_request(frame, &limits).ok()?;
            let get = parsed.get(frame, &limits);
            let put = parsed.put(frame, &limits);
            assert!(get.is_none() || put.is_none(), "a get and a put");
            if let Some(g) = get {
                return Some((0, g.id, g.key.to_vec(), None, vec![], g.quorum));
            }
            let p = put?;
            let kind = if p.value.is_some() { 1 } else { 2 };
            let value = p.value.map(<[u8]>::to_vec);
            Some((
                kind,
                p.id,
                p.key.to_vec(),
                value,
                p.context.to_vec(),
                p.quorum,
            ))
        };
        // And wherever the decoder accepts a request, the key the shard
        // routes on before building it (`ParsedRequest::key`) is its key.
        let keys_agree = |frame: &[u8]| {
            if let Ok(decoded) = decode_request(Bytes::copy_from_slice(frame), &limits) {
                let parsed = parse_request(frame, &limits).expect("decoded, so parsed");
                assert_eq!(
                    parsed.key(frame),
                    decoded.request.key().map(|k| &k[..]),
                    "{:?}",
                    decoded.request
                );
            }
        };
        let mut rng = crate::test_rng::Rng(0x7065_656b);
        // Per kind (get, put, delete): accepted, refused.
        let mut tally = [[0; 2]; 3];
        for case in 0..1_200u64 {
            let bytes = |rng: &mut crate::test_rng::Rng, max: u64| {
                Bytes::from(
                    (0..rng.below(max))
                        .map(|_| rng.next() as u8)
                        .collect::<Vec<_>>(),
                )
            };
            let key = bytes(&mut rng, 30);
            let quorum_value = |rng: &mut crate::test_rng::Rng| match rng.below(6) {
                0 | 1 => None,
                2 => Some(R_ALL),
                3 => Some(200),
                _ => Some(1 + rng.below(5) as u8),
            };
            let quorum = |rng: &mut crate::test_rng::Rng| Quorum {
                r: None,
                w: quorum_value(rng),
                dw: quorum_value(rng),
                n: quorum_value(rng),
            };
            let kind = case % 6;
            let request = match kind {
                0 | 1 => {
                    let quorum = quorum(&mut rng);
                    Request::Get {
                        key,
                        quorum: Quorum {
                            r: quorum.w,
                            w: None,
                            dw: None,
                            n: quorum.n,
                        },
                    }
                }
                2 | 3 => Request::Put {
                    key,
                    value: bytes(&mut rng, 80),
                    context: Some(bytes(&mut rng, 20)),
                    quorum: quorum(&mut rng),
                },
                4 => Request::Delete {
                    key,
                    context: bytes(&mut rng, 20),
                    quorum: quorum(&mut rng),
                },
                _ => Request::Ping,
            };
            let mut wire = Vec::new();
            encode_request(
                &RequestFrame {
                    id: rng.next(),
                    epoch: case,
                    request,
                },
                &mut wire,
            );
            let frame = wire[FRAME_LENGTH_BYTES..].to_vec();
            let want = expected(&frame);
            assert_eq!(peeked(&frame), want, "case {case}");
            keys_agree(&frame);
            let kind = match kind {
                0 | 1 => 0,
                2 | 3 => 1,
                4 => 2,
                _ => continue,
            };
            tally[kind][usize::from(want.is_none())] += 1;
            for _ in 0..20 {
                let mut damaged = frame.clone();
                let at = rng.below(damaged.len() as u64) as usize;
                damaged[at] ^= 1 << rng.below(8);
                assert_eq!(
                    peeked(&damaged),
                    expected(&damaged),
                    "case {case}, bit flip at {at}"
                );
                keys_agree(&damaged);
                damaged.truncate(rng.below(damaged.len() as u64) as usize);
                assert_eq!(
                    peeked(&damaged),
                    expected(&damaged),
                    "case {case}, truncated"
                );
            }
        }
        for (kind, [accepted, refused]) in tally.iter().enumerate() {
            assert!(*accepted > 30 && *refused > 30, "kind {kind}: {tally:?}");
        }
    }

    #[test]
    fn a_parsed_requests_key_is_the_decoders_and_damage_never_panics() {
        // On every request the encoder writes, the parsed key is the
        // decoded one (none for a ping or a routing-table request) and
        // `writes` says whether it is a put or delete; damaged frames are
        // refused or parsed, never a panic, and a key is read in bounds.
        use crate::protocol::{encode_request, Quorum, Request, RequestFrame};
        let limits = Limits::default();
        let mut rng = crate::test_rng::Rng(0x6b65_7973);
        for case in 0..300u64 {
            let key = bytes::Bytes::from(
                (0..1 + rng.below(40))
                    .map(|_| rng.next() as u8)
                    .collect::<Vec<_>>(),
            );
            let quorum = Quorum::default();
            let request = match case % 5 {
                0 => Request::Ping,
                1 => Request::GetRoutingTable,
                2 => Request::Get { key, quorum },
                3 => Request::Put {
                    key,
                    value: bytes::Bytes::from(vec![7; rng.below(300) as usize]),
                    context: (case % 2 == 0).then(|| bytes::Bytes::from_static(b"ctx")),
                    quorum,
                },
                _ => Request::Delete {
                    key,
                    context: bytes::Bytes::from_static(b"ctx"),
                    quorum,
                },
            };
            let mut wire = Vec::new();
            encode_request(
                &RequestFrame {
                    id: case,
                    epoch: 0,
                    request,
                },
                &mut wire,
            );
            let frame = bytes::Bytes::copy_from_slice(&wire[FRAME_LENGTH_BYTES..]);
            let decoded = decode_request(frame.clone(), &limits).expect("own frame decodes");
            let writes = matches!(
                decoded.request,
                Request::Put { .. } | Request::Delete { .. }
            );
            let parsed = parse_request(&frame, &limits).expect("own frame parses");
            assert_eq!(
                parsed.key(&frame),
                decoded.request.key().map(|k| &k[..]),
                "case {case}"
            );
            assert_eq!(parsed.writes(), writes, "case {case}");
            for _ in 0..20 {
                let mut damaged = frame.to_vec();
                let at = rng.below(damaged.len() as u64) as usize;
                damaged[at] ^= 1 << rng.below(8);
                if let Ok(parsed) = parse_request(&damaged, &limits) {
                    let _ = parsed.key(&damaged);
                }
                damaged.truncate(rng.below(damaged.len() as u64) as usize);
                if let Ok(parsed) = parse_request(&damaged, &limits) {
                    let _ = parsed.key(&damaged);
                }
            }
        }
    }

    #[test]
    fn one_value_get_fast_path_is_the_verifiers() {
        // The lean reader's shortcut for the writer's one-value layout
        // against the full reader on the same frames: same view, and the
        // apparent size it assumes is the one `Reader` counts.
        let limits = Limits::default();
        let max_tables = response_tables_max(&limits);
        let mut rng = crate::test_rng::Rng(0x0fa5_7ba7);
        let mut cases: Vec<(usize, usize)> = (0..12).map(|len| (len, len % 5)).collect();
        cases.extend((0..200).map(|_| (rng.below(1500) as usize, rng.below(80) as usize)));
        for (value_len, context_len) in cases {
            let value: Vec<u8> = (0..value_len).map(|_| rng.next() as u8).collect();
            let context: Vec<u8> = (0..context_len).map(|_| rng.next() as u8).collect();
            let id = rng.next();
            let mut frame = Vec::new();
            let write_context = |out: &mut Vec<u8>| out.extend_from_slice(&context);
            encode_get_reply(
                id,
                std::iter::once(&value[..]),
                write_context,
                0,
                &mut frame,
            );
            let payload = &frame[FRAME_LENGTH_BYTES..];
            let mut reader = Reader {
                buffer: payload,
                apparent_bytes: 0,
            };
            let Ok((header, read_id)) = read_response_header(&mut reader) else {
                panic!("no header");
            };
            let reply = read_response_body(&mut reader, header, max_tables, &limits, &mut ());
            assert!(matches!(reply, Ok(Some(Reply::Get { .. }))));
            assert_eq!(
                reader.apparent_bytes,
                ONE_VALUE_GET_APPARENT_FIXED_BYTES + value_len + context_len
            );
            let fast = inspect_one_value_get_reply(payload, &limits, max_tables);
            let full = verify_response(payload, &limits, max_tables, &mut ())
                .and_then(Result::ok)
                .map(|(id, reply)| match reply {
                    Reply::Get { context, .. } => (
                        id,
                        ResponseView::Get {
                            found: true,
                            siblings: 1,
                            context,
                        },
                    ),
                    _ => panic!("not a get reply"),
                });
            assert_eq!(fast, full, "value {value_len}, context {context_len}");
            assert_eq!(fast.map(|(id, _)| id), Some(read_id));
            // One byte more or less is not the writer's layout.
            assert_eq!(
                inspect_one_value_get_reply(&payload[..payload.len() - 1], &limits, max_tables),
                None
            );
            let mut longer = payload.to_vec();
            longer.push(0);
            assert_eq!(
                inspect_one_value_get_reply(&longer, &limits, max_tables),
                None
            );
        }
    }

    #[test]
    fn one_value_get_reply_is_the_writers() {
        let mut rng = crate::test_rng::Rng(0x5eed_0005);
        let mut cases: Vec<(u64, usize, usize)> =
            (0..=40).map(|len| (len as u64, len, len % 9)).collect();
        cases.extend([(u64::MAX, 1000, 27), (0x0102_0304_0506_0708, 4096, 0)]);
        cases.extend(
            (0..300).map(|_| (rng.next(), rng.below(300) as usize, rng.below(70) as usize)),
        );
        for (id, value_len, context_len) in cases {
            let value: Vec<u8> = (0..value_len).map(|_| rng.next() as u8).collect();
            let context: Vec<u8> = (0..context_len).map(|_| rng.next() as u8).collect();
            // After some bytes already in `out`, as in a connection's batch.
            let prefix = (id % 7) as usize;
            let mut expected = vec![0xa5; prefix];
            let write_context = |out: &mut Vec<u8>| out.extend_from_slice(&context);
            encode_get_reply_written(
                id,
                std::iter::once(&value[..]),
                write_context,
                0,
                &mut expected,
            );
            let mut written = vec![0xa5; prefix];
            encode_get_reply(
                id,
                std::iter::once(&value[..]),
                write_context,
                0,
                &mut written,
            );
            assert_eq!(
                written, expected,
                "id {id}, value of {value_len} bytes, context of {context_len} bytes"
            );
        }
    }

    #[test]
    fn put_reply_template_is_the_writers() {
        let mut rng = crate::test_rng::Rng(0x5eed_0004);
        let mut cases = vec![
            (0u64, 0usize),
            (1, 1),
            (u64::MAX, 27),
            (0x0102_0304_0506_0708, 300),
        ];
        cases.extend((0..200).map(|_| (rng.next(), rng.below(70) as usize)));
        for (id, context_len) in cases {
            let context: Vec<u8> = (0..context_len).map(|_| rng.next() as u8).collect();
            // After some bytes already in `out`, as in a connection's batch.
            let prefix = (id % 7) as usize;
            let mut expected = vec![0xa5; prefix];
            put_reply_by_writer(id, &context, &mut expected);
            let mut written = vec![0xa5; prefix];
            let response = Response::Put {
                context: Bytes::from(context.clone()),
            };
            assert!(encode_reply(id, &response, &mut written));
            assert_eq!(written, expected, "id {id}, context of {context_len} bytes");
        }
    }
}
