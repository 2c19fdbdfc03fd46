//! The wire protocols (client and internode): framing, flatbuffers
//! bindings, and validation into domain types.
//!
//! Job: turn bytes from a socket into `RequestFrame`s / responses and back.
//! A frame is a `u32` little-endian length followed by one flatbuffer
//! (`schema/dynakv.fbs`); `docs/protocol.md` is the specification.
//!
//! Invariants:
//! * This is the only module that sees flatbuffers types; the generated
//!   bindings (`generated`, committed, refreshed by
//!   `tools/gen-flatbuffers.sh`) are private to it.
//! * Every inbound buffer is length-checked before any allocation
//!   (`FrameDecoder`), verified with tight `VerifierOptions`, and validated
//!   against `Limits` before a domain value is produced. A bad frame yields a
//!   `ProtocolError` carrying the `ErrorCode` to reply with; it never panics.
//! * Sans-IO: no sockets, no clocks.
//!
//! Typical server loop:
//!
//! ```
//! use bytes::BytesMut;
//! use dynakv::protocol::{
//!     decode_request, Encoder, FrameDecoder, Limits, Request, RequestFrame, Response,
//! };
//!
//! let limits = Limits::default();
//! let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
//! let mut encoder = Encoder::new();
//!
//! // Bytes as a read returned them: here, two pipelined pings.
//! let mut wire = Vec::new();
//! for id in [1, 2] {
//!     let ping = RequestFrame { id, epoch: 0, request: Request::Ping };
//!     encoder.encode_request(&ping, &mut wire);
//! }
//! let mut read_buffer = BytesMut::from(&wire[..]);
//!
//! let mut replies = Vec::new();
//! while let Some(frame) = decoder.decode(&mut read_buffer).expect("frame within bounds") {
//!     match decode_request(frame, &limits) {
//!         Ok(request) => encoder.encode_response(request.id, &Response::Pong, &mut replies),
//!         Err(error) => {
//!             let (id, reply) = error.to_response();
//!             encoder.encode_response(id, &reply, &mut replies);
//!         }
//!     }
//! }
//! // One write for both replies.
//! assert!(!replies.is_empty());
//! ```

mod codec;
mod direct;
mod frame;
pub(crate) mod generated;
mod internode;
mod message;

pub use codec::{
    decode_request, decode_request_generic, decode_response, decode_response_generic,
    encode_request, encode_request_ref, encode_response, Encoder,
};
pub use direct::{
    build_request, encode_get_reply, encode_put_reply, inspect_response, parse_request, GetRef,
    ParsedRequest, PutRef, ResponseView,
};
pub use frame::{write_frame, Frame, FrameDecoder, FrameError, LentFrame, FRAME_LENGTH_BYTES};
pub use internode::{
    decode_internode, Gossip, HandoffBatch, HandoffEntry, Hello, HelloReply, Hint, InternodeBody,
    InternodeLimits, InternodeMessage, Member, MemberStatus, ReplicaPut, ReplicaStatus,
    HANDOFF_ENTRIES_MAX, INTERNODE_FRAME_BYTES_MAX, INTERNODE_PROTOCOL_VERSION, MEMBERS_MAX,
    NONCE_BYTES_MAX, TEXT_BYTES_MAX, VERSIONS_BYTES_MAX,
};
pub use message::{
    ErrorCode, Limits, ProtocolError, ProtocolErrorKind, Quorum, Request, RequestFrame, RequestRef,
    Response, RoutingNode, RoutingTable, Sibling, CONTEXT_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX,
    FRAME_BYTES_MAX, KEY_BYTES_MAX, NODES_MAX, PARTITIONS_MAX, REPLICAS_MAX, R_ALL,
    SHARDS_PER_NODE_MAX, SIBLINGS_MAX, VALUE_BYTES_MAX,
};

#[cfg(test)]
mod tests;
