//! Conversion between the domain types of `protocol::message` and framed
//! flatbuffers.
//!
//! Invariant: no inbound byte is read before the buffer has passed the
//! flatbuffers verifier with options derived from `Limits` (depth, table
//! count, apparent size) — for client requests and the hot replies, the
//! hand-written verifier in `direct`, which makes every check the generic one
//! makes for those tables and a few stricter ones — and no decoded value
//! reaches the caller
//! before the semantic checks (sizes, counts, quorum ranges, routing-table
//! indices).
//! Decoding is zero-copy for keys, values and contexts: they are slices of
//! the frame's `Bytes`.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, VerifierOptions, WIPOffset};

use super::direct;
use super::frame::FRAME_LENGTH_BYTES;
use super::generated::wire;
use super::message::{
    ErrorCode, Limits, ProtocolError, ProtocolErrorKind, Quorum, Request, RequestFrame, RequestRef,
    Response, RoutingNode, RoutingTable, Sibling, REPLICAS_MAX, R_ALL, SHARDS_PER_NODE_MAX,
};

/// Deepest table nesting in any message: Response → ErrorReply →
/// RoutingTableReply → Node / PartitionOwners → vector (internode: Message →
/// Gossip → Member → vector). Slack for flatbuffers' own counting.
pub(super) const DEPTH_MAX: usize = 8;

/// Tables in a request: Request and its body, with slack.
pub(super) const REQUEST_TABLES_MAX: usize = 4;

/// Tables in a response beyond the per-element ones (siblings, nodes,
/// partitions): Response, the reply table, a nested routing table.
pub(super) const RESPONSE_TABLES_FIXED_MAX: usize = 8;

/// Builder capacity kept between messages. A builder that grew beyond this
/// for one exceptional message (a maximal get reply) is replaced, so an
/// idle connection does not pin megabytes.
const BUILDER_RETAINED_BYTES_MAX: usize = 256 * 1024;

/// Siblings of a get reply whose table offsets the encoder keeps on the
/// stack; more spill to a vector.
const SIBLINGS_INLINE: usize = 8;

/// Encodes messages into frames, reusing one flatbuffers builder. Keep one
/// per connection or per thread: building into a warm builder does not
/// allocate.
pub struct Encoder {
    /// Reset after every message; its buffer is the reusable part.
    pub(super) builder: FlatBufferBuilder<'static>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// A fresh encoder.
    pub fn new() -> Encoder {
        Encoder {
            builder: FlatBufferBuilder::with_capacity(1024),
        }
    }

    /// Appends the frame for `frame` (length prefix and flatbuffer) to `out`.
    /// Every request is written by hand (`direct`; see `encode_request_ref`),
    /// without the builder.
    pub fn encode_request(&mut self, frame: &RequestFrame, out: &mut Vec<u8>) {
        direct::encode_request(frame.id, frame.epoch, &frame.request.borrowed(), out);
    }

    /// `encode_request` through `FlatBufferBuilder`: the reference the
    /// hand-written request writer is tested against
    /// (`tests/protocol_differential.rs`) and a second frame layout for the
    /// fuzzers. Not on any client path.
    #[doc(hidden)]
    pub fn encode_request_generic(&mut self, frame: &RequestFrame, out: &mut Vec<u8>) {
        let b = &mut self.builder;
        let (body_type, body) = match &frame.request {
            Request::Ping => (
                wire::RequestBody::PingRequest,
                wire::PingRequest::create(b, &wire::PingRequestArgs {}).as_union_value(),
            ),
            Request::Get { key, quorum } => {
                let key = b.create_vector(key.as_ref());
                let args = wire::GetRequestArgs {
                    key: Some(key),
                    r: quorum.r.unwrap_or(0),
                    n: quorum.n.unwrap_or(0),
                };
                (
                    wire::RequestBody::GetRequest,
                    wire::GetRequest::create(b, &args).as_union_value(),
                )
            }
            Request::Put {
                key,
                value,
                context,
                quorum,
            } => {
                let key = b.create_vector(key.as_ref());
                let value = b.create_vector(value.as_ref());
                let context = context
                    .as_ref()
                    .filter(|context| !context.is_empty())
                    .map(|context| b.create_vector(context.as_ref()));
                let args = wire::PutRequestArgs {
                    key: Some(key),
                    value: Some(value),
                    context,
                    w: quorum.w.unwrap_or(0),
                    dw: quorum.dw.unwrap_or(0),
                    n: quorum.n.unwrap_or(0),
                };
                (
                    wire::RequestBody::PutRequest,
                    wire::PutRequest::create(b, &args).as_union_value(),
                )
            }
            Request::Delete {
                key,
                context,
                quorum,
            } => {
                let key = b.create_vector(key.as_ref());
                let context = b.create_vector(context.as_ref());
                let args = wire::DeleteRequestArgs {
                    key: Some(key),
                    context: Some(context),
                    w: quorum.w.unwrap_or(0),
                    dw: quorum.dw.unwrap_or(0),
                    n: quorum.n.unwrap_or(0),
                };
                (
                    wire::RequestBody::DeleteRequest,
                    wire::DeleteRequest::create(b, &args).as_union_value(),
                )
            }
            Request::GetRoutingTable => (
                wire::RequestBody::RoutingTableRequest,
                wire::RoutingTableRequest::create(b, &wire::RoutingTableRequestArgs {})
                    .as_union_value(),
            ),
        };
        let root = wire::Request::create(
            b,
            &wire::RequestArgs {
                id: frame.id,
                epoch: frame.epoch,
                body_type,
                body: Some(body),
            },
        );
        b.finish_minimal(root);
        self.flush_into(out);
    }

    /// Appends the frame for the reply `response` to request `id` to `out`.
    /// A node checks the frame's size (the growth of `out`) against the
    /// frame bound: a get reply with many large siblings can exceed it, and
    /// must then be replaced by an error reply (truncate `out` back and
    /// encode `TooManySiblings`).
    /// Pong, get, put and delete replies, and error replies without a
    /// routing table, are written by hand (`direct`); the rest go through
    /// the flatbuffers builder.
    pub fn encode_response(&mut self, id: u64, response: &Response, out: &mut Vec<u8>) {
        if !direct::encode_reply(id, response, out) {
            self.encode_response_generic(id, response, out);
        }
    }

    /// `encode_response` through `FlatBufferBuilder` for every reply: the
    /// reference the hand-written replies are tested against, and the path
    /// for routing tables.
    #[doc(hidden)]
    pub fn encode_response_generic(&mut self, id: u64, response: &Response, out: &mut Vec<u8>) {
        let b = &mut self.builder;
        let (body_type, body) = match response {
            Response::Pong => (
                wire::ResponseBody::PongReply,
                wire::PongReply::create(b, &wire::PongReplyArgs {}).as_union_value(),
            ),
            Response::Get {
                found,
                siblings,
                context,
            } => {
                // The sibling tables' offsets, on the stack for the usual
                // few siblings.
                let mut inline = [WIPOffset::new(0); SIBLINGS_INLINE];
                let mut spilled = Vec::new();
                let offsets = if siblings.len() <= SIBLINGS_INLINE {
                    &mut inline[..siblings.len()]
                } else {
                    spilled.resize(siblings.len(), WIPOffset::new(0));
                    &mut spilled[..]
                };
                for (offset, sibling) in offsets.iter_mut().zip(siblings) {
                    let value = b.create_vector(sibling.value.as_ref());
                    *offset = wire::Sibling::create(
                        b,
                        &wire::SiblingArgs {
                            tombstone: sibling.tombstone,
                            value: Some(value),
                        },
                    );
                }
                let values = b.create_vector(offsets);
                let context = b.create_vector(context.as_ref());
                let args = wire::GetReplyArgs {
                    found: *found,
                    values: Some(values),
                    context: Some(context),
                };
                (
                    wire::ResponseBody::GetReply,
                    wire::GetReply::create(b, &args).as_union_value(),
                )
            }
            Response::Put { context } => {
                let context = b.create_vector(context.as_ref());
                let args = wire::PutReplyArgs {
                    context: Some(context),
                };
                (
                    wire::ResponseBody::PutReply,
                    wire::PutReply::create(b, &args).as_union_value(),
                )
            }
            Response::Delete => (
                wire::ResponseBody::DeleteReply,
                wire::DeleteReply::create(b, &wire::DeleteReplyArgs {}).as_union_value(),
            ),
            Response::RoutingTable(table) => (
                wire::ResponseBody::RoutingTableReply,
                build_routing_table(b, table).as_union_value(),
            ),
            Response::Error {
                code,
                message,
                acks,
                routing,
            } => {
                let message = b.create_string(message);
                let routing = routing.as_ref().map(|table| build_routing_table(b, table));
                let args = wire::ErrorReplyArgs {
                    code: wire::ErrorCode(code.to_wire()),
                    message: Some(message),
                    acks: *acks,
                    routing,
                };
                (
                    wire::ResponseBody::ErrorReply,
                    wire::ErrorReply::create(b, &args).as_union_value(),
                )
            }
        };
        let root = wire::Response::create(
            b,
            &wire::ResponseArgs {
                id,
                body_type,
                body: Some(body),
            },
        );
        b.finish_minimal(root);
        self.flush_into(out);
    }

    /// Copies the finished flatbuffer into `out` behind its length prefix
    /// and readies the builder for the next message.
    pub(super) fn flush_into(&mut self, out: &mut Vec<u8>) {
        let data = self.builder.finished_data();
        let length = u32::try_from(data.len()).expect("an encoded message fits a u32 length");
        out.reserve(FRAME_LENGTH_BYTES + data.len());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(data);
        if data.len() > BUILDER_RETAINED_BYTES_MAX {
            self.builder = FlatBufferBuilder::with_capacity(1024);
        } else {
            self.builder.reset();
        }
    }
}

fn build_routing_table<'b>(
    b: &mut FlatBufferBuilder<'b>,
    table: &RoutingTable,
) -> WIPOffset<wire::RoutingTableReply<'b>> {
    let mut nodes = Vec::with_capacity(table.nodes.len());
    for node in &table.nodes {
        let addr = match node.addr {
            IpAddr::V4(v4) => b.create_vector(&v4.octets()),
            IpAddr::V6(v6) => b.create_vector(&v6.octets()),
        };
        let shard_ports = b.create_vector(&node.shard_ports);
        nodes.push(wire::Node::create(
            b,
            &wire::NodeArgs {
                id: node.id,
                addr: Some(addr),
                client_port: node.client_port,
                shard_ports: Some(shard_ports),
                weight: node.weight,
            },
        ));
    }
    let nodes = b.create_vector(&nodes);
    let mut partitions = Vec::with_capacity(table.partitions.len());
    let mut owners: Vec<wire::Owner> = Vec::new();
    for list in &table.partitions {
        owners.clear();
        owners.extend(
            list.iter()
                .map(|&(node, shard)| wire::Owner::new(node, shard)),
        );
        let owners = b.create_vector(&owners);
        partitions.push(wire::PartitionOwners::create(
            b,
            &wire::PartitionOwnersArgs {
                owners: Some(owners),
            },
        ));
    }
    let partitions = b.create_vector(&partitions);
    wire::RoutingTableReply::create(
        b,
        &wire::RoutingTableReplyArgs {
            epoch: table.epoch,
            q: table.q,
            n_val: table.n_val,
            nodes: Some(nodes),
            partitions: Some(partitions),
        },
    )
}

thread_local! {
    /// Backs the free `encode_*` functions.
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

/// Appends the frame for `frame` to `out` (the hand-written writer needs no
/// `Encoder`).
pub fn encode_request(frame: &RequestFrame, out: &mut Vec<u8>) {
    direct::encode_request(frame.id, frame.epoch, &frame.request.borrowed(), out);
}

/// Appends the frame for `request` with `id` and `epoch` to `out`, from
/// borrowed bytes: what a client uses to encode straight from its own
/// buffers (no `Bytes` to build, no builder). Written front to back by
/// `direct`; decodes to the same `RequestFrame` as the builder's frame.
pub fn encode_request_ref(id: u64, epoch: u64, request: &RequestRef<'_>, out: &mut Vec<u8>) {
    direct::encode_request(id, epoch, request, out);
}

/// Appends the frame for the reply `response` to request `id` to `out`, with
/// a per-thread `Encoder`.
pub fn encode_response(id: u64, response: &Response, out: &mut Vec<u8>) {
    ENCODER.with(|encoder| encoder.borrow_mut().encode_response(id, response, out));
}

// ---------------------------------------------------------------------------
// Decoding.

/// Verifies one inbound frame (client or internode) before any of it is
/// read, and returns its root table `T`: first its size against
/// `frame_bytes_max`, then the flatbuffer with tight verifier options — at
/// most `DEPTH_MAX` deep and `max_tables` tables, and an apparent size of at
/// most the frame bound (apparent size counts shared sub-objects once per
/// reference, so a frame that points many siblings at one large vector is
/// refused instead of being expanded by the reader). When the root does not
/// verify, the body may be what is broken: the envelope `H` alone may still
/// verify, and `header_id` reads from it the id to answer to.
pub(super) fn verify_frame<'buf, T, H>(
    frame: &'buf [u8],
    frame_bytes_max: usize,
    max_tables: usize,
    header_id: fn(H::Inner) -> u64,
) -> Result<T::Inner, ProtocolError>
where
    T: 'buf + flatbuffers::Follow<'buf> + flatbuffers::Verifiable,
    H: 'buf + flatbuffers::Follow<'buf> + flatbuffers::Verifiable,
{
    if frame.len() > frame_bytes_max {
        return Err(ProtocolError {
            id: None,
            kind: ProtocolErrorKind::FrameTooLarge {
                bytes: frame.len(),
                max: frame_bytes_max,
            },
        });
    }
    let options = VerifierOptions {
        max_depth: DEPTH_MAX,
        max_tables,
        max_apparent_size: frame_bytes_max,
        ignore_missing_null_terminator: false,
    };
    flatbuffers::root_with_opts::<T>(&options, frame).map_err(|error| ProtocolError {
        id: flatbuffers::root_with_opts::<H>(&options, frame)
            .ok()
            .map(header_id),
        kind: ProtocolErrorKind::Malformed(error.to_string()),
    })
}

/// Decodes one request frame (the bytes after the length prefix, as returned
/// by `FrameDecoder::decode`). Keys, values and contexts share `frame`'s
/// memory. The hand-written reader in `direct` does the work; it accepts a
/// subset of what `decode_request_generic` accepts and decodes it to the
/// same value (see its invariant).
pub fn decode_request(frame: Bytes, limits: &Limits) -> Result<RequestFrame, ProtocolError> {
    direct::decode_request(frame, limits)
}

/// `decode_request` through the generic flatbuffers verifier and accessors:
/// the reference the hand-written reader is tested against
/// (`tests/protocol_differential.rs`, `tools/fuzz-request-decoder.sh`). Not
/// on any serving path.
#[doc(hidden)]
pub fn decode_request_generic(
    frame: Bytes,
    limits: &Limits,
) -> Result<RequestFrame, ProtocolError> {
    let request = verify_frame::<wire::Request, wire::RequestHeader>(
        &frame,
        limits.frame_bytes_max,
        REQUEST_TABLES_MAX,
        |header| header.id(),
    )?;
    let id = request.id();
    let fail = |kind| ProtocolError { id: Some(id), kind };
    let request_body = match request.body_type() {
        wire::RequestBody::PingRequest => request.body_as_ping_request().map(|_| Request::Ping),
        wire::RequestBody::RoutingTableRequest => request
            .body_as_routing_table_request()
            .map(|_| Request::GetRoutingTable),
        wire::RequestBody::GetRequest => match request.body_as_get_request() {
            None => None,
            Some(get) => {
                let key = key_of(bytes_of(&frame, get.key()), limits).map_err(fail)?;
                let quorum = Quorum {
                    r: quorum_field("r", get.r(), true).map_err(fail)?,
                    w: None,
                    dw: None,
                    n: quorum_field("n", get.n(), false).map_err(fail)?,
                };
                Some(Request::Get { key, quorum })
            }
        },
        wire::RequestBody::PutRequest => match request.body_as_put_request() {
            None => None,
            Some(put) => {
                let key = key_of(bytes_of(&frame, put.key()), limits).map_err(fail)?;
                let value = bytes_of(&frame, put.value());
                if value.len() > limits.value_bytes_max {
                    return Err(fail(ProtocolErrorKind::ValueTooLarge {
                        bytes: value.len(),
                        max: limits.value_bytes_max,
                    }));
                }
                let context = context_of(bytes_of(&frame, put.context()), limits).map_err(fail)?;
                let context = Some(context).filter(|context| !context.is_empty());
                let quorum = Quorum {
                    r: None,
                    w: quorum_field("w", put.w(), false).map_err(fail)?,
                    dw: quorum_field("dw", put.dw(), false).map_err(fail)?,
                    n: quorum_field("n", put.n(), false).map_err(fail)?,
                };
                Some(Request::Put {
                    key,
                    value,
                    context,
                    quorum,
                })
            }
        },
        wire::RequestBody::DeleteRequest => match request.body_as_delete_request() {
            None => None,
            Some(delete) => {
                let key = key_of(bytes_of(&frame, delete.key()), limits).map_err(fail)?;
                let context =
                    context_of(bytes_of(&frame, delete.context()), limits).map_err(fail)?;
                let quorum = Quorum {
                    r: None,
                    w: quorum_field("w", delete.w(), false).map_err(fail)?,
                    dw: quorum_field("dw", delete.dw(), false).map_err(fail)?,
                    n: quorum_field("n", delete.n(), false).map_err(fail)?,
                };
                Some(Request::Delete {
                    key,
                    context,
                    quorum,
                })
            }
        },
        _ => None,
    };
    let Some(request_body) = request_body else {
        // Either an unknown union tag (a newer client) or a known tag whose
        // table is absent.
        return Err(fail(ProtocolErrorKind::UnknownBody(request.body_type().0)));
    };
    Ok(RequestFrame {
        id,
        epoch: request.epoch(),
        request: request_body,
    })
}

/// The generic verifier's table bound for a response under `limits`.
pub(super) fn response_tables_max(limits: &Limits) -> usize {
    RESPONSE_TABLES_FIXED_MAX
        .saturating_add(limits.siblings_max)
        .saturating_add(limits.nodes_max)
        .saturating_add(limits.partitions_max)
}

/// Decodes one response frame into the request id it answers and the reply.
/// Values and contexts share `frame`'s memory. The hand-written reader in
/// `direct` does the work for every reply but routing tables (and error
/// replies carrying one), which go through `decode_response_generic`; it
/// accepts a subset of what the generic path accepts and decodes it to the
/// same value.
pub fn decode_response(frame: Bytes, limits: &Limits) -> Result<(u64, Response), ProtocolError> {
    match direct::decode_response(&frame, limits, response_tables_max(limits)) {
        Some(decoded) => decoded,
        None => decode_response_generic(frame, limits),
    }
}

/// `decode_response` through the generic flatbuffers verifier and accessors
/// for every reply: the reference the hand-written reader is tested against
/// (`tests/protocol_differential.rs`, `tools/fuzz-request-decoder.sh`), and
/// the path for routing tables.
#[doc(hidden)]
pub fn decode_response_generic(
    frame: Bytes,
    limits: &Limits,
) -> Result<(u64, Response), ProtocolError> {
    let max_tables = response_tables_max(limits);
    let response = verify_frame::<wire::Response, wire::ResponseHeader>(
        &frame,
        limits.frame_bytes_max,
        max_tables,
        |header| header.id(),
    )?;
    let id = response.id();
    let fail = |kind| ProtocolError { id: Some(id), kind };
    let body = match response.body_type() {
        wire::ResponseBody::PongReply => response.body_as_pong_reply().map(|_| Response::Pong),
        wire::ResponseBody::DeleteReply => {
            response.body_as_delete_reply().map(|_| Response::Delete)
        }
        wire::ResponseBody::PutReply => match response.body_as_put_reply() {
            None => None,
            Some(put) => Some(Response::Put {
                context: context_of(bytes_of(&frame, put.context()), limits).map_err(fail)?,
            }),
        },
        wire::ResponseBody::GetReply => match response.body_as_get_reply() {
            None => None,
            Some(get) => Some(get_reply_of(&frame, get, limits).map_err(fail)?),
        },
        wire::ResponseBody::RoutingTableReply => match response.body_as_routing_table_reply() {
            None => None,
            Some(table) => Some(Response::RoutingTable(
                routing_table_of(table, limits).map_err(fail)?,
            )),
        },
        wire::ResponseBody::ErrorReply => match response.body_as_error_reply() {
            None => None,
            Some(error) => Some(error_reply_of(error, limits).map_err(fail)?),
        },
        _ => None,
    };
    match body {
        Some(body) => Ok((id, body)),
        None => Err(fail(ProtocolErrorKind::UnknownBody(response.body_type().0))),
    }
}

/// The `Bytes` for a verified byte vector inside `frame`; empty when absent.
pub(super) fn bytes_of(frame: &Bytes, vector: Option<Vector<'_, u8>>) -> Bytes {
    match vector {
        // The verifier proved the vector lies inside `frame`, which is what
        // `slice_ref` requires.
        Some(vector) if !vector.is_empty() => frame.slice_ref(vector.bytes()),
        _ => Bytes::new(),
    }
}

/// A request's key, checked: not empty, within the bound.
pub(super) fn key_of(key: Bytes, limits: &Limits) -> Result<Bytes, ProtocolErrorKind> {
    if key.is_empty() {
        return Err(ProtocolErrorKind::KeyEmpty);
    }
    if key.len() > limits.key_bytes_max {
        return Err(ProtocolErrorKind::KeyTooLarge {
            bytes: key.len(),
            max: limits.key_bytes_max,
        });
    }
    Ok(key)
}

/// A context, checked against its bound.
pub(super) fn context_of(context: Bytes, limits: &Limits) -> Result<Bytes, ProtocolErrorKind> {
    if context.len() > limits.context_bytes_max {
        return Err(ProtocolErrorKind::ContextTooLarge {
            bytes: context.len(),
            max: limits.context_bytes_max,
        });
    }
    Ok(context)
}

/// A quorum override: 0 is the default, 1..=REPLICAS_MAX a count, and for R
/// only, `R_ALL`.
pub(super) fn quorum_field(
    field: &'static str,
    value: u8,
    all_allowed: bool,
) -> Result<Option<u8>, ProtocolErrorKind> {
    match value {
        0 => Ok(None),
        1..=REPLICAS_MAX => Ok(Some(value)),
        R_ALL if all_allowed => Ok(Some(value)),
        _ => Err(ProtocolErrorKind::BadQuorum { field, value }),
    }
}

fn get_reply_of(
    frame: &Bytes,
    get: wire::GetReply<'_>,
    limits: &Limits,
) -> Result<Response, ProtocolErrorKind> {
    let values = get.values().unwrap_or_default();
    if values.len() > limits.siblings_max {
        return Err(ProtocolErrorKind::TooManySiblings {
            count: values.len(),
            max: limits.siblings_max,
        });
    }
    let mut siblings = Vec::with_capacity(values.len());
    for sibling in values.iter() {
        let value = bytes_of(frame, sibling.value());
        if value.len() > limits.value_bytes_max {
            return Err(ProtocolErrorKind::ValueTooLarge {
                bytes: value.len(),
                max: limits.value_bytes_max,
            });
        }
        siblings.push(Sibling {
            tombstone: sibling.tombstone(),
            value,
        });
    }
    Ok(Response::Get {
        found: get.found(),
        siblings,
        context: context_of(bytes_of(frame, get.context()), limits)?,
    })
}

fn error_reply_of(
    error: wire::ErrorReply<'_>,
    limits: &Limits,
) -> Result<Response, ProtocolErrorKind> {
    let message = error.message().unwrap_or_default();
    if message.len() > limits.error_message_bytes_max {
        return Err(ProtocolErrorKind::MessageTooLarge {
            bytes: message.len(),
            max: limits.error_message_bytes_max,
        });
    }
    let (code, message) = match ErrorCode::from_wire(error.code().0) {
        Some(code) => (code, message.to_owned()),
        // A newer node may send codes this version does not know; they are
        // failures all the same.
        None => (
            ErrorCode::Internal,
            format!("unknown error code {}: {message}", error.code().0),
        ),
    };
    let routing = match error.routing() {
        Some(table) => Some(routing_table_of(table, limits)?),
        None => None,
    };
    Ok(Response::Error {
        code,
        message,
        acks: error.acks(),
        routing,
    })
}

fn routing_table_of(
    table: wire::RoutingTableReply<'_>,
    limits: &Limits,
) -> Result<RoutingTable, ProtocolErrorKind> {
    let bad = |why: String| ProtocolErrorKind::BadRoutingTable(why);
    let q = table.q();
    if !q.is_power_of_two() || q as usize > limits.partitions_max {
        return Err(bad(format!(
            "q={q} is not a power of two in 1..={}",
            limits.partitions_max
        )));
    }
    let n_val = table.n_val();
    if n_val == 0 || n_val > REPLICAS_MAX {
        return Err(bad(format!("n_val={n_val} is not in 1..={REPLICAS_MAX}")));
    }
    let wire_nodes: Vector<'_, ForwardsUOffset<wire::Node<'_>>> = table.nodes().unwrap_or_default();
    if wire_nodes.is_empty() || wire_nodes.len() > limits.nodes_max {
        return Err(bad(format!(
            "{} nodes, expected 1..={}",
            wire_nodes.len(),
            limits.nodes_max
        )));
    }
    let mut nodes = Vec::with_capacity(wire_nodes.len());
    for (index, node) in wire_nodes.iter().enumerate() {
        let addr_bytes = node.addr().map(|addr| addr.bytes()).unwrap_or_default();
        let addr = if let Ok(v4) = <[u8; 4]>::try_from(addr_bytes) {
            IpAddr::V4(Ipv4Addr::from(v4))
        } else if let Ok(v6) = <[u8; 16]>::try_from(addr_bytes) {
            IpAddr::V6(Ipv6Addr::from(v6))
        } else {
            return Err(bad(format!(
                "node {index} has an address of {} bytes, expected 4 or 16",
                addr_bytes.len()
            )));
        };
        let shard_ports: Vec<u16> = node
            .shard_ports()
            .map(|ports| ports.iter().collect())
            .unwrap_or_default();
        if shard_ports.is_empty() || shard_ports.len() > SHARDS_PER_NODE_MAX {
            return Err(bad(format!(
                "node {index} has {} shards, expected 1..={SHARDS_PER_NODE_MAX}",
                shard_ports.len()
            )));
        }
        nodes.push(RoutingNode {
            id: node.id(),
            addr,
            client_port: node.client_port(),
            shard_ports,
            weight: node.weight(),
        });
    }
    let wire_partitions = table.partitions().unwrap_or_default();
    if wire_partitions.len() != q as usize {
        return Err(bad(format!(
            "{} preference lists for q={q}",
            wire_partitions.len()
        )));
    }
    let mut partitions = Vec::with_capacity(wire_partitions.len());
    for (partition, owners) in wire_partitions.iter().enumerate() {
        let owners = owners.owners().unwrap_or_default();
        if owners.is_empty() || owners.len() > REPLICAS_MAX as usize {
            return Err(bad(format!(
                "partition {partition} has {} owners, expected 1..={REPLICAS_MAX}",
                owners.len()
            )));
        }
        let mut list = Vec::with_capacity(owners.len());
        for owner in owners.iter() {
            let (node, shard) = (owner.node(), owner.shard());
            let Some(routing_node) = nodes.get(node as usize) else {
                return Err(bad(format!(
                    "partition {partition} names node index {node} of {}",
                    nodes.len()
                )));
            };
            if shard as usize >= routing_node.shard_ports.len() {
                return Err(bad(format!(
                    "partition {partition} names shard {shard} of node index {node}, which has {}",
                    routing_node.shard_ports.len()
                )));
            }
            list.push((node, shard));
        }
        partitions.push(list);
    }
    Ok(RoutingTable {
        epoch: table.epoch(),
        q,
        n_val,
        nodes,
        partitions,
    })
}
