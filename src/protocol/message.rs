//! Domain types of the client protocol: what a request and a response mean,
//! free of flatbuffers.
//!
//! Invariant: a value of these types that came from `decode_*` has passed
//! both flatbuffers verification and the semantic checks against `Limits`
//! (sizes, counts, routing-table consistency), so the layers above never
//! re-check the wire.

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;

/// The largest frame (length prefix excluded) accepted by default: a maximal
/// value (`VALUE_BYTES_MAX`) twice over plus headroom for key, context and
/// flatbuffers overhead, so a put of the largest value and a get reply with
/// two such siblings both fit.
pub const FRAME_BYTES_MAX: usize = 2 * 1024 * 1024 + 64 * 1024;

/// Default bound on key size. Keys are held in the in-memory index of every
/// replica, so they are kept short.
pub const KEY_BYTES_MAX: usize = 1024;

/// Default bound on value size (1 MiB).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Default bound on the opaque context: a version vector with one entry per
/// replica that ever coordinated a write, plus the fastest-replica hint.
pub const CONTEXT_BYTES_MAX: usize = 4096;

/// Default bound on siblings in one get reply. Dotted version vectors keep
/// siblings to the number of truly concurrent writers, and the version layer
/// refuses puts beyond 64 (`version::SIBLINGS_MAX`); replicas that accepted
/// writes while partitioned can together hold up to four times that
/// (`version::SIBLINGS_MERGED_MAX`), which a get must still be able to
/// return. The frame bound applies on top.
pub const SIBLINGS_MAX: usize = 256;

/// Default bound on the human-readable message of an error reply.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;

/// Default bound on nodes in a routing table.
pub const NODES_MAX: usize = 1024;

/// Default bound on `q`, the number of partitions.
pub const PARTITIONS_MAX: usize = 65536;

/// Bound on shards (cores) per node in a routing table.
pub const SHARDS_PER_NODE_MAX: usize = 1024;

/// Bound on the length of one preference list, and on N, R, W and DW.
pub const REPLICAS_MAX: u8 = 16;

/// The value of `Quorum::r` that asks for every replica of the preference
/// list to answer.
pub const R_ALL: u8 = 255;

/// Per-request quorum overrides (Dynamo §4.5). `None` means the cluster
/// default. On the wire `None` is 0, so `Some(0)` is not representable and
/// is sent as `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Quorum {
    /// Replicas that must answer a get; `R_ALL` for all of them.
    pub r: Option<u8>,
    /// Replicas that must acknowledge a put or delete.
    pub w: Option<u8>,
    /// Replicas that must have made a put or delete durable (fsynced).
    pub dw: Option<u8>,
    /// Replicas in the preference list.
    pub n: Option<u8>,
}

impl Quorum {
    /// All cluster defaults.
    pub const DEFAULT: Quorum = Quorum {
        r: None,
        w: None,
        dw: None,
        n: None,
    };
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Liveness probe.
    Ping,
    /// Read all siblings of `key`. Only `quorum.r` and `quorum.n` travel.
    Get { key: Bytes, quorum: Quorum },
    /// Write `value`; `context` (from a get) names what it supersedes. An
    /// empty context is the same as none. Only `w`, `dw` and `n` travel.
    Put {
        key: Bytes,
        value: Bytes,
        context: Option<Bytes>,
        quorum: Quorum,
    },
    /// Write a tombstone superseding `context`. Only `w`, `dw` and `n`
    /// travel. The protocol layer checks only the context's size; whether it
    /// is a well-formed context is for the version layer to decide.
    Delete {
        key: Bytes,
        context: Bytes,
        quorum: Quorum,
    },
    /// Fetch the current routing table.
    GetRoutingTable,
}

impl Request {
    /// The key the request is about, if any; routing uses it.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Request::Get { key, .. } | Request::Put { key, .. } | Request::Delete { key, .. } => {
                Some(key)
            }
            Request::Ping | Request::GetRoutingTable => None,
        }
    }

    /// The same request with its bytes borrowed, as `encode_request_ref`
    /// takes it.
    pub fn borrowed(&self) -> RequestRef<'_> {
        match self {
            Request::Ping => RequestRef::Ping,
            Request::Get { key, quorum } => RequestRef::Get {
                key,
                quorum: *quorum,
            },
            Request::Put {
                key,
                value,
                context,
                quorum,
            } => RequestRef::Put {
                key,
                value,
                context: context.as_deref(),
                quorum: *quorum,
            },
            Request::Delete {
                key,
                context,
                quorum,
            } => RequestRef::Delete {
                key,
                context,
                quorum: *quorum,
            },
            Request::GetRoutingTable => RequestRef::GetRoutingTable,
        }
    }
}

/// A `Request` whose key, value and context are borrowed: what a client
/// encodes from its own buffers without first copying them into `Bytes`
/// (`encode_request_ref`). Same meaning, field by field, as `Request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRef<'a> {
    /// Liveness probe.
    Ping,
    /// Read all siblings of `key`. Only `quorum.r` and `quorum.n` travel.
    Get { key: &'a [u8], quorum: Quorum },
    /// Write `value`; an empty context is the same as none. Only `w`,
    /// `dw` and `n` travel.
    Put {
        key: &'a [u8],
        value: &'a [u8],
        context: Option<&'a [u8]>,
        quorum: Quorum,
    },
    /// Write a tombstone superseding `context`. Only `w`, `dw` and `n`
    /// travel.
    Delete {
        key: &'a [u8],
        context: &'a [u8],
        quorum: Quorum,
    },
    /// Fetch the current routing table.
    GetRoutingTable,
}

/// A request with its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFrame {
    /// Chosen by the client and echoed in the response.
    pub id: u64,
    /// The ring epoch the client routed with; 0 when unknown.
    pub epoch: u64,
    /// What is asked.
    pub request: Request,
}

/// One concurrent version of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// A concurrent delete; `value` is then empty.
    pub tombstone: bool,
    /// The value bytes.
    pub value: Bytes,
}

/// A reply from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Request::Ping`.
    Pong,
    /// Answer to `Request::Get`.
    Get {
        /// False when no replica that answered holds a live version.
        found: bool,
        /// The siblings, tombstones included (a tombstone concurrent with a
        /// live value is a sibling like any other).
        siblings: Vec<Sibling>,
        /// Opaque causal context for a following put or delete.
        context: Bytes,
    },
    /// Answer to `Request::Put`.
    Put {
        /// Context of the version just written.
        context: Bytes,
    },
    /// Answer to `Request::Delete`.
    Delete,
    /// Answer to `Request::GetRoutingTable`.
    RoutingTable(RoutingTable),
    /// The request failed.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
        /// For `Timeout` and `QuorumFailed`: replicas that acknowledged.
        acks: u32,
        /// For `WrongOwner`: the node's current table.
        routing: Option<RoutingTable>,
    },
}

/// One node as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingNode {
    /// Stable node id.
    pub id: u64,
    /// The address clients connect to.
    pub addr: IpAddr,
    /// The node-level port, which forwards to the right shard.
    pub client_port: u16,
    /// The client port of each shard, indexed by shard number; never empty.
    pub shard_ports: Vec<u16>,
    /// Capacity weight.
    pub weight: u32,
}

/// The ring as clients see it (§6.4 client-driven coordination).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    /// Ring epoch; a request routed with an older epoch may get `WrongOwner`.
    pub epoch: u64,
    /// Number of partitions; a power of two, at least 1.
    pub q: u32,
    /// Cluster default N.
    pub n_val: u8,
    /// The nodes; `partitions` refers to them by index.
    pub nodes: Vec<RoutingNode>,
    /// Exactly `q` preference lists, primary first: `(node index, shard)`.
    /// Every index is in range and every list is non-empty.
    pub partitions: Vec<Vec<(u32, u16)>>,
}

/// Why a request failed, as sent on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or asks for something impossible.
    BadRequest,
    /// The frame exceeds the frame size bound.
    FrameTooLarge,
    /// The key is empty or exceeds the key size bound.
    KeyTooLarge,
    /// The value exceeds the value size bound.
    ValueTooLarge,
    /// The context is malformed, foreign or too large.
    BadContext,
    /// The key has more concurrent siblings than allowed.
    TooManySiblings,
    /// The receiving shard does not own the key's partition at its epoch.
    WrongOwner,
    /// Not enough replicas answered in time.
    Timeout,
    /// Enough replicas answered, but too few succeeded.
    QuorumFailed,
    /// The node sheds load; retry later.
    Overloaded,
    /// The disk is full; reads still work.
    StorageFull,
    /// A storage error (I/O, fsync); the write is not acknowledged.
    StorageFailed,
    /// Too few replicas are reachable to try.
    Unavailable,
    /// A bug or unexpected condition in the node.
    Internal,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::FrameTooLarge,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::BadContext,
        ErrorCode::TooManySiblings,
        ErrorCode::WrongOwner,
        ErrorCode::Timeout,
        ErrorCode::QuorumFailed,
        ErrorCode::Overloaded,
        ErrorCode::StorageFull,
        ErrorCode::StorageFailed,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The wire value (`schema/dynakv.fbs`, enum `ErrorCode`).
    pub fn to_wire(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::KeyTooLarge => 3,
            ErrorCode::ValueTooLarge => 4,
            ErrorCode::BadContext => 5,
            ErrorCode::TooManySiblings => 6,
            ErrorCode::WrongOwner => 7,
            ErrorCode::Timeout => 8,
            ErrorCode::QuorumFailed => 9,
            ErrorCode::Overloaded => 10,
            ErrorCode::StorageFull => 11,
            ErrorCode::StorageFailed => 12,
            ErrorCode::Unavailable => 13,
            ErrorCode::Internal => 14,
        }
    }

    /// The code for a wire value; `None` for 0 and for values this version
    /// does not know (a newer peer), which readers treat as `Internal`.
    pub fn from_wire(value: u16) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.to_wire() == value)
    }

    /// A stable name, as in the schema.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::FrameTooLarge => "FrameTooLarge",
            ErrorCode::KeyTooLarge => "KeyTooLarge",
            ErrorCode::ValueTooLarge => "ValueTooLarge",
            ErrorCode::BadContext => "BadContext",
            ErrorCode::TooManySiblings => "TooManySiblings",
            ErrorCode::WrongOwner => "WrongOwner",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::QuorumFailed => "QuorumFailed",
            ErrorCode::Overloaded => "Overloaded",
            ErrorCode::StorageFull => "StorageFull",
            ErrorCode::StorageFailed => "StorageFailed",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Internal => "Internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bounds applied when decoding. Both sides of a connection should use the
/// same values; `Limits::default()` is the protocol's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, length prefix excluded.
    pub frame_bytes_max: usize,
    /// Largest key; keys are also never empty.
    pub key_bytes_max: usize,
    /// Largest value (and sibling value).
    pub value_bytes_max: usize,
    /// Largest context.
    pub context_bytes_max: usize,
    /// Most siblings in a get reply.
    pub siblings_max: usize,
    /// Longest error message.
    pub error_message_bytes_max: usize,
    /// Most nodes in a routing table.
    pub nodes_max: usize,
    /// Largest `q` in a routing table.
    pub partitions_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: FRAME_BYTES_MAX,
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX,
            context_bytes_max: CONTEXT_BYTES_MAX,
            siblings_max: SIBLINGS_MAX,
            error_message_bytes_max: ERROR_MESSAGE_BYTES_MAX,
            nodes_max: NODES_MAX,
            partitions_max: PARTITIONS_MAX,
        }
    }
}

/// What exactly is wrong with an inbound frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolErrorKind {
    /// The frame exceeds `Limits::frame_bytes_max`.
    FrameTooLarge { bytes: usize, max: usize },
    /// The flatbuffer failed verification (bounds, alignment, depth, size).
    Malformed(String),
    /// The message has no body or a body type this version does not know.
    UnknownBody(u8),
    /// A required field is absent.
    MissingField(&'static str),
    /// The key is empty.
    KeyEmpty,
    /// The key exceeds the bound.
    KeyTooLarge { bytes: usize, max: usize },
    /// The value exceeds the bound.
    ValueTooLarge { bytes: usize, max: usize },
    /// The context exceeds the bound.
    ContextTooLarge { bytes: usize, max: usize },
    /// A quorum override is out of range.
    BadQuorum { field: &'static str, value: u8 },
    /// A get reply has more siblings than the bound.
    TooManySiblings { count: usize, max: usize },
    /// An error message exceeds the bound.
    MessageTooLarge { bytes: usize, max: usize },
    /// A routing table is inconsistent.
    BadRoutingTable(String),
    /// An enum field holds a value this version does not know.
    BadEnum { field: &'static str, value: u16 },
    /// A bounded field (nonce, name, port list) exceeds its bound.
    FieldTooLarge {
        field: &'static str,
        bytes: usize,
        max: usize,
    },
    /// A list (handoff entries, members) exceeds its bound.
    TooManyEntries {
        field: &'static str,
        count: usize,
        max: usize,
    },
}

/// An inbound frame that cannot be used, with what to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// The request (or response) id, when the envelope could be read.
    pub id: Option<u64>,
    /// What went wrong.
    pub kind: ProtocolErrorKind,
}

impl ProtocolError {
    /// The code to put into the error reply.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            ProtocolErrorKind::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolErrorKind::KeyEmpty | ProtocolErrorKind::KeyTooLarge { .. } => {
                ErrorCode::KeyTooLarge
            }
            ProtocolErrorKind::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            ProtocolErrorKind::ContextTooLarge { .. } => ErrorCode::BadContext,
            ProtocolErrorKind::TooManySiblings { .. } => ErrorCode::TooManySiblings,
            ProtocolErrorKind::Malformed(_)
            | ProtocolErrorKind::UnknownBody(_)
            | ProtocolErrorKind::MissingField(_)
            | ProtocolErrorKind::BadQuorum { .. }
            | ProtocolErrorKind::MessageTooLarge { .. }
            | ProtocolErrorKind::BadRoutingTable(_)
            | ProtocolErrorKind::BadEnum { .. }
            | ProtocolErrorKind::FieldTooLarge { .. }
            | ProtocolErrorKind::TooManyEntries { .. } => ErrorCode::BadRequest,
        }
    }

    /// The error reply a node sends for this error (id 0 when unknown).
    pub fn to_response(&self) -> (u64, Response) {
        let response = Response::Error {
            code: self.code(),
            message: self.to_string(),
            acks: 0,
            routing: None,
        };
        (self.id.unwrap_or(0), response)
    }
}

impl fmt::Display for ProtocolErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolErrorKind::FrameTooLarge { bytes, max } => {
                write!(f, "frame of {bytes} bytes exceeds the maximum of {max}")
            }
            ProtocolErrorKind::Malformed(why) => write!(f, "malformed flatbuffer: {why}"),
            ProtocolErrorKind::UnknownBody(tag) => {
                write!(f, "missing or unknown message body type {tag}")
            }
            ProtocolErrorKind::MissingField(field) => write!(f, "required field {field} is absent"),
            ProtocolErrorKind::KeyEmpty => write!(f, "key is empty"),
            ProtocolErrorKind::KeyTooLarge { bytes, max } => {
                write!(f, "key of {bytes} bytes exceeds the maximum of {max}")
            }
            ProtocolErrorKind::ValueTooLarge { bytes, max } => {
                write!(f, "value of {bytes} bytes exceeds the maximum of {max}")
            }
            ProtocolErrorKind::ContextTooLarge { bytes, max } => {
                write!(f, "context of {bytes} bytes exceeds the maximum of {max}")
            }
            ProtocolErrorKind::BadQuorum { field, value } => write!(
                f,
                "quorum override {field}={value} is out of range (0 = default, 1..={REPLICAS_MAX}{})",
                if *field == "r" { ", 255 = all" } else { "" }
            ),
            ProtocolErrorKind::TooManySiblings { count, max } => {
                write!(f, "{count} siblings exceed the maximum of {max}")
            }
            ProtocolErrorKind::MessageTooLarge { bytes, max } => {
                write!(f, "error message of {bytes} bytes exceeds the maximum of {max}")
            }
            ProtocolErrorKind::BadRoutingTable(why) => write!(f, "bad routing table: {why}"),
            ProtocolErrorKind::BadEnum { field, value } => {
                write!(f, "{field} has the unknown value {value}")
            }
            ProtocolErrorKind::FieldTooLarge { field, bytes, max } => {
                write!(f, "{field} of {bytes} bytes exceeds the maximum of {max}")
            }
            ProtocolErrorKind::TooManyEntries { field, count, max } => {
                write!(f, "{count} {field} exceed the maximum of {max}")
            }
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{} (message id {id})", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for ProtocolError {}
