//! The internode protocol (`schema/internode.fbs`): domain types and their
//! codec, for shard-to-shard replica traffic, hinted and partition handoff
//! and gossip.
//!
//! Invariant: as for the client protocol, every inbound frame is verified
//! with tight `VerifierOptions` and checked against `InternodeLimits` before
//! a domain value is produced; keys and version blobs are zero-copy slices
//! of the frame. The `versions` blobs are opaque here: they are
//! `version::SiblingSet` encodings, validated by the version layer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, Vector, WIPOffset};

use super::codec::{bytes_of, verify_frame, Encoder};
use super::generated::internode as wire;
use super::message::{ProtocolError, ProtocolErrorKind, KEY_BYTES_MAX, SHARDS_PER_NODE_MAX};

/// The version a node announces in `Hello`.
pub const INTERNODE_PROTOCOL_VERSION: u16 = 1;

/// Default frame bound on internode links: a handoff batch or a sibling set
/// with several maximal values must fit.
pub const INTERNODE_FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Default bound on one `versions` blob.
pub const VERSIONS_BYTES_MAX: usize = 6 * 1024 * 1024;

/// Default bound on entries in one handoff batch.
pub const HANDOFF_ENTRIES_MAX: usize = 4096;

/// Default bound on members in a gossip message.
pub const MEMBERS_MAX: usize = 1024;

/// Bound on nonces and proofs in the handshake.
pub const NONCE_BYTES_MAX: usize = 64;

/// Bound on the cluster name, a rejection reason or an error message.
pub const TEXT_BYTES_MAX: usize = 4096;

/// Tables beyond the per-element ones (handoff entries, members).
const TABLES_FIXED_MAX: usize = 8;

/// Bounds applied when decoding internode frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternodeLimits {
    /// Largest frame, length prefix excluded.
    pub frame_bytes_max: usize,
    /// Largest key (never empty).
    pub key_bytes_max: usize,
    /// Largest `versions` blob.
    pub versions_bytes_max: usize,
    /// Most entries in a handoff batch.
    pub handoff_entries_max: usize,
    /// Most members in a gossip message.
    pub members_max: usize,
}

impl Default for InternodeLimits {
    fn default() -> Self {
        InternodeLimits {
            frame_bytes_max: INTERNODE_FRAME_BYTES_MAX,
            key_bytes_max: KEY_BYTES_MAX,
            versions_bytes_max: VERSIONS_BYTES_MAX,
            handoff_entries_max: HANDOFF_ENTRIES_MAX,
            members_max: MEMBERS_MAX,
        }
    }
}

/// Outcome of a replica operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaStatus {
    /// Done.
    Ok,
    /// The receiver does not own the partition at this epoch.
    WrongOwner,
    /// The receiver's disk is full.
    StorageFull,
    /// The receiver's storage failed.
    StorageFailed,
    /// The receiver sheds load.
    Overloaded,
    /// The message was malformed.
    BadRequest,
}

impl ReplicaStatus {
    const ALL: [ReplicaStatus; 6] = [
        ReplicaStatus::Ok,
        ReplicaStatus::WrongOwner,
        ReplicaStatus::StorageFull,
        ReplicaStatus::StorageFailed,
        ReplicaStatus::Overloaded,
        ReplicaStatus::BadRequest,
    ];

    fn to_wire(self) -> wire::ReplicaStatus {
        wire::ReplicaStatus(match self {
            ReplicaStatus::Ok => 0,
            ReplicaStatus::WrongOwner => 1,
            ReplicaStatus::StorageFull => 2,
            ReplicaStatus::StorageFailed => 3,
            ReplicaStatus::Overloaded => 4,
            ReplicaStatus::BadRequest => 5,
        })
    }

    fn from_wire(value: wire::ReplicaStatus) -> Result<ReplicaStatus, ProtocolErrorKind> {
        ReplicaStatus::ALL
            .iter()
            .copied()
            .find(|status| status.to_wire() == value)
            .ok_or(ProtocolErrorKind::BadEnum {
                field: "status",
                value: u16::from(value.0),
            })
    }
}

/// A member's state in the membership view (§4.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    /// Staged to join; not yet an owner.
    Joining,
    /// A full member.
    Valid,
    /// Handing its partitions off.
    Leaving,
    /// Gone; kept so the removal spreads.
    Removed,
}

impl MemberStatus {
    const ALL: [MemberStatus; 4] = [
        MemberStatus::Joining,
        MemberStatus::Valid,
        MemberStatus::Leaving,
        MemberStatus::Removed,
    ];

    fn to_wire(self) -> wire::MemberStatus {
        wire::MemberStatus(match self {
            MemberStatus::Joining => 0,
            MemberStatus::Valid => 1,
            MemberStatus::Leaving => 2,
            MemberStatus::Removed => 3,
        })
    }

    fn from_wire(value: wire::MemberStatus) -> Result<MemberStatus, ProtocolErrorKind> {
        MemberStatus::ALL
            .iter()
            .copied()
            .find(|status| status.to_wire() == value)
            .ok_or(ProtocolErrorKind::BadEnum {
                field: "member status",
                value: u16::from(value.0),
            })
    }
}

/// First message on every internode connection, from the dialler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// `INTERNODE_PROTOCOL_VERSION` of the sender.
    pub protocol_version: u16,
    /// Must match the receiver's.
    pub cluster_name: String,
    /// The dialling node.
    pub node_id: u64,
    /// The dialling shard.
    pub shard: u16,
    /// The dialler's ring epoch.
    pub ring_epoch: u64,
    /// Random bytes for the authentication exchange.
    pub nonce: Bytes,
}

/// The listener's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloReply {
    /// False: the connection is closed after this message.
    pub accepted: bool,
    /// Why not, when refused.
    pub reason: String,
    /// The listening node.
    pub node_id: u64,
    /// The listening shard.
    pub shard: u16,
    /// The listener's ring epoch.
    pub ring_epoch: u64,
    /// The listener's random bytes.
    pub nonce: Bytes,
    /// HMAC over both nonces with the cluster secret; empty without one.
    pub proof: Bytes,
}

/// Coordinator to replica: merge `versions` into the replica's copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaPut {
    /// The key's partition.
    pub partition: u32,
    /// The key.
    pub key: Bytes,
    /// `version::SiblingSet` encoding.
    pub versions: Bytes,
    /// Acknowledge only once durable.
    pub durable: bool,
    /// The coordinator's ring epoch.
    pub epoch: u64,
}

/// A write held for an unreachable primary, replayed to it (§4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The primary the write was meant for.
    pub intended_node: u64,
    /// The key's partition.
    pub partition: u32,
    /// The key.
    pub key: Bytes,
    /// `version::SiblingSet` encoding.
    pub versions: Bytes,
    /// Position in the sender's hint log, echoed in the ack.
    pub hint_seq: u64,
}

/// One key of a partition handoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffEntry {
    /// The key.
    pub key: Bytes,
    /// `version::SiblingSet` encoding.
    pub versions: Bytes,
}

/// A batch of a partition streamed to its new owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffBatch {
    /// The partition.
    pub partition: u32,
    /// The ring epoch that moved it.
    pub epoch: u64,
    /// Position of the batch in the stream, echoed in the ack.
    pub batch_seq: u64,
    /// The keys.
    pub entries: Vec<HandoffEntry>,
    /// The final batch of the partition.
    pub last: bool,
}

/// A member as gossip spreads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable node id.
    pub id: u64,
    /// The node's address.
    pub addr: IpAddr,
    /// Node-level client port.
    pub client_port: u16,
    /// Client port per shard.
    pub shard_client_ports: Vec<u16>,
    /// Internode port per shard.
    pub shard_internode_ports: Vec<u16>,
    /// Capacity weight.
    pub weight: u32,
    /// Membership state.
    pub status: MemberStatus,
    /// Higher wins when views disagree.
    pub version: u64,
}

/// Push-pull membership exchange (§4.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gossip {
    /// The sender.
    pub from_node: u64,
    /// The sender's committed ring epoch.
    pub ring_epoch: u64,
    /// The sender's view.
    pub members: Vec<Member>,
    /// The pull half of an exchange.
    pub reply: bool,
}

/// What an internode message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InternodeBody {
    /// Connection set-up, dialler side.
    Hello(Hello),
    /// Connection set-up, listener side.
    HelloReply(HelloReply),
    /// Replica write.
    ReplicaPut(ReplicaPut),
    /// Replica write outcome.
    ReplicaPutReply {
        /// Outcome.
        status: ReplicaStatus,
        /// The write is on stable storage.
        durable: bool,
    },
    /// Replica read.
    ReplicaGet {
        /// The key's partition.
        partition: u32,
        /// The key.
        key: Bytes,
        /// The coordinator's ring epoch.
        epoch: u64,
    },
    /// Replica read outcome.
    ReplicaGetReply {
        /// Outcome.
        status: ReplicaStatus,
        /// The replica holds the key.
        found: bool,
        /// `version::SiblingSet` encoding; empty when not found.
        versions: Bytes,
    },
    /// Hinted handoff.
    Hint(Hint),
    /// Hint outcome.
    HintAck {
        /// Outcome; the sender deletes its hint only on `Ok`.
        status: ReplicaStatus,
        /// The hint acknowledged.
        hint_seq: u64,
    },
    /// Partition handoff.
    HandoffBatch(HandoffBatch),
    /// Handoff outcome.
    HandoffAck {
        /// Outcome.
        status: ReplicaStatus,
        /// The partition.
        partition: u32,
        /// The batch acknowledged.
        batch_seq: u64,
    },
    /// Membership.
    Gossip(Gossip),
    /// A request failed as a whole.
    Error {
        /// Why.
        status: ReplicaStatus,
        /// For people.
        message: String,
    },
}

/// An internode message with its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternodeMessage {
    /// Request id, echoed by the reply.
    pub id: u64,
    /// The message.
    pub body: InternodeBody,
}

// ---------------------------------------------------------------------------
// Encoding.

fn build_addr<'b>(b: &mut FlatBufferBuilder<'b>, addr: IpAddr) -> WIPOffset<Vector<'b, u8>> {
    match addr {
        IpAddr::V4(v4) => b.create_vector(&v4.octets()),
        IpAddr::V6(v6) => b.create_vector(&v6.octets()),
    }
}

impl Encoder {
    /// Appends the frame for `message` to `out`.
    pub fn encode_internode(&mut self, message: &InternodeMessage, out: &mut Vec<u8>) {
        let b = &mut self.builder;
        let (body_type, body) = match &message.body {
            InternodeBody::Hello(hello) => {
                let cluster_name = b.create_string(&hello.cluster_name);
                let nonce = b.create_vector(hello.nonce.as_ref());
                let args = wire::HelloArgs {
                    protocol_version: hello.protocol_version,
                    cluster_name: Some(cluster_name),
                    node_id: hello.node_id,
                    shard: hello.shard,
                    ring_epoch: hello.ring_epoch,
                    nonce: Some(nonce),
                };
                (
                    wire::Body::Hello,
                    wire::Hello::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::HelloReply(reply) => {
                let reason = b.create_string(&reply.reason);
                let nonce = b.create_vector(reply.nonce.as_ref());
                let proof = b.create_vector(reply.proof.as_ref());
                let args = wire::HelloReplyArgs {
                    accepted: reply.accepted,
                    reason: Some(reason),
                    node_id: reply.node_id,
                    shard: reply.shard,
                    ring_epoch: reply.ring_epoch,
                    nonce: Some(nonce),
                    proof: Some(proof),
                };
                (
                    wire::Body::HelloReply,
                    wire::HelloReply::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::ReplicaPut(put) => {
                let key = b.create_vector(put.key.as_ref());
                let versions = b.create_vector(put.versions.as_ref());
                let args = wire::ReplicaPutArgs {
                    partition: put.partition,
                    key: Some(key),
                    versions: Some(versions),
                    durable: put.durable,
                    epoch: put.epoch,
                };
                (
                    wire::Body::ReplicaPut,
                    wire::ReplicaPut::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::ReplicaPutReply { status, durable } => {
                let args = wire::ReplicaPutReplyArgs {
                    status: status.to_wire(),
                    durable: *durable,
                };
                (
                    wire::Body::ReplicaPutReply,
                    wire::ReplicaPutReply::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::ReplicaGet {
                partition,
                key,
                epoch,
            } => {
                let key = b.create_vector(key.as_ref());
                let args = wire::ReplicaGetArgs {
                    partition: *partition,
                    key: Some(key),
                    epoch: *epoch,
                };
                (
                    wire::Body::ReplicaGet,
                    wire::ReplicaGet::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::ReplicaGetReply {
                status,
                found,
                versions,
            } => {
                let versions = b.create_vector(versions.as_ref());
                let args = wire::ReplicaGetReplyArgs {
                    status: status.to_wire(),
                    found: *found,
                    versions: Some(versions),
                };
                (
                    wire::Body::ReplicaGetReply,
                    wire::ReplicaGetReply::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::Hint(hint) => {
                let key = b.create_vector(hint.key.as_ref());
                let versions = b.create_vector(hint.versions.as_ref());
                let args = wire::HintArgs {
                    intended_node: hint.intended_node,
                    partition: hint.partition,
                    key: Some(key),
                    versions: Some(versions),
                    hint_seq: hint.hint_seq,
                };
                (
                    wire::Body::Hint,
                    wire::Hint::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::HintAck { status, hint_seq } => {
                let args = wire::HintAckArgs {
                    status: status.to_wire(),
                    hint_seq: *hint_seq,
                };
                (
                    wire::Body::HintAck,
                    wire::HintAck::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::HandoffBatch(batch) => {
                let mut entries = Vec::with_capacity(batch.entries.len());
                for entry in &batch.entries {
                    let key = b.create_vector(entry.key.as_ref());
                    let versions = b.create_vector(entry.versions.as_ref());
                    entries.push(wire::HandoffEntry::create(
                        b,
                        &wire::HandoffEntryArgs {
                            key: Some(key),
                            versions: Some(versions),
                        },
                    ));
                }
                let entries = b.create_vector(&entries);
                let args = wire::HandoffBatchArgs {
                    partition: batch.partition,
                    epoch: batch.epoch,
                    batch_seq: batch.batch_seq,
                    entries: Some(entries),
                    last: batch.last,
                };
                (
                    wire::Body::HandoffBatch,
                    wire::HandoffBatch::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::HandoffAck {
                status,
                partition,
                batch_seq,
            } => {
                let args = wire::HandoffAckArgs {
                    status: status.to_wire(),
                    partition: *partition,
                    batch_seq: *batch_seq,
                };
                (
                    wire::Body::HandoffAck,
                    wire::HandoffAck::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::Gossip(gossip) => {
                let mut members = Vec::with_capacity(gossip.members.len());
                for member in &gossip.members {
                    let addr = build_addr(b, member.addr);
                    let client_ports = b.create_vector(&member.shard_client_ports);
                    let internode_ports = b.create_vector(&member.shard_internode_ports);
                    members.push(wire::Member::create(
                        b,
                        &wire::MemberArgs {
                            id: member.id,
                            addr: Some(addr),
                            client_port: member.client_port,
                            shard_client_ports: Some(client_ports),
                            shard_internode_ports: Some(internode_ports),
                            weight: member.weight,
                            status: member.status.to_wire(),
                            version: member.version,
                        },
                    ));
                }
                let members = b.create_vector(&members);
                let args = wire::GossipArgs {
                    from_node: gossip.from_node,
                    ring_epoch: gossip.ring_epoch,
                    members: Some(members),
                    reply: gossip.reply,
                };
                (
                    wire::Body::Gossip,
                    wire::Gossip::create(b, &args).as_union_value(),
                )
            }
            InternodeBody::Error { status, message } => {
                let message = b.create_string(message);
                let args = wire::InternodeErrorArgs {
                    status: status.to_wire(),
                    message: Some(message),
                };
                (
                    wire::Body::InternodeError,
                    wire::InternodeError::create(b, &args).as_union_value(),
                )
            }
        };
        let root = wire::Message::create(
            b,
            &wire::MessageArgs {
                id: message.id,
                body_type,
                body: Some(body),
            },
        );
        b.finish_minimal(root);
        self.flush_into(out);
    }
}

// ---------------------------------------------------------------------------
// Decoding.

struct Reader<'l> {
    frame: &'l Bytes,
    limits: &'l InternodeLimits,
}

impl Reader<'_> {
    fn key(&self, vector: Option<Vector<'_, u8>>) -> Result<Bytes, ProtocolErrorKind> {
        let key = bytes_of(self.frame, vector);
        if key.is_empty() {
            return Err(ProtocolErrorKind::KeyEmpty);
        }
        if key.len() > self.limits.key_bytes_max {
            return Err(ProtocolErrorKind::KeyTooLarge {
                bytes: key.len(),
                max: self.limits.key_bytes_max,
            });
        }
        Ok(key)
    }

    fn versions(&self, vector: Option<Vector<'_, u8>>) -> Result<Bytes, ProtocolErrorKind> {
        let versions = bytes_of(self.frame, vector);
        if versions.len() > self.limits.versions_bytes_max {
            return Err(ProtocolErrorKind::ValueTooLarge {
                bytes: versions.len(),
                max: self.limits.versions_bytes_max,
            });
        }
        Ok(versions)
    }

    fn small(
        &self,
        field: &'static str,
        vector: Option<Vector<'_, u8>>,
    ) -> Result<Bytes, ProtocolErrorKind> {
        let bytes = bytes_of(self.frame, vector);
        if bytes.len() > NONCE_BYTES_MAX {
            return Err(ProtocolErrorKind::FieldTooLarge {
                field,
                bytes: bytes.len(),
                max: NONCE_BYTES_MAX,
            });
        }
        Ok(bytes)
    }
}

fn text(field: &'static str, value: Option<&str>) -> Result<String, ProtocolErrorKind> {
    let value = value.unwrap_or_default();
    if value.len() > TEXT_BYTES_MAX {
        return Err(ProtocolErrorKind::FieldTooLarge {
            field,
            bytes: value.len(),
            max: TEXT_BYTES_MAX,
        });
    }
    Ok(value.to_owned())
}

fn ports(
    field: &'static str,
    vector: Option<Vector<'_, u16>>,
) -> Result<Vec<u16>, ProtocolErrorKind> {
    let vector = vector.unwrap_or_default();
    if vector.len() > SHARDS_PER_NODE_MAX {
        return Err(ProtocolErrorKind::FieldTooLarge {
            field,
            bytes: vector.len() * 2,
            max: SHARDS_PER_NODE_MAX * 2,
        });
    }
    Ok(vector.iter().collect())
}

fn member_of(member: wire::Member<'_>) -> Result<Member, ProtocolErrorKind> {
    let addr_bytes = member.addr().map(|addr| addr.bytes()).unwrap_or_default();
    let addr = if let Ok(v4) = <[u8; 4]>::try_from(addr_bytes) {
        IpAddr::V4(Ipv4Addr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(addr_bytes) {
        IpAddr::V6(Ipv6Addr::from(v6))
    } else {
        return Err(ProtocolErrorKind::FieldTooLarge {
            field: "member address (4 or 16 bytes)",
            bytes: addr_bytes.len(),
            max: 16,
        });
    };
    Ok(Member {
        id: member.id(),
        addr,
        client_port: member.client_port(),
        shard_client_ports: ports("shard_client_ports", member.shard_client_ports())?,
        shard_internode_ports: ports("shard_internode_ports", member.shard_internode_ports())?,
        weight: member.weight(),
        status: MemberStatus::from_wire(member.status())?,
        version: member.version(),
    })
}

/// Decodes one internode frame (the bytes after the length prefix).
pub fn decode_internode(
    frame: Bytes,
    limits: &InternodeLimits,
) -> Result<InternodeMessage, ProtocolError> {
    let message = verify_frame::<wire::Message, wire::MessageHeader>(
        &frame,
        limits.frame_bytes_max,
        TABLES_FIXED_MAX
            .saturating_add(limits.handoff_entries_max)
            .saturating_add(limits.members_max),
        |header| header.id(),
    )?;
    let id = message.id();
    let reader = Reader {
        frame: &frame,
        limits,
    };
    let body =
        decode_body(&reader, &message).map_err(|kind| ProtocolError { id: Some(id), kind })?;
    Ok(InternodeMessage { id, body })
}

fn decode_body(
    r: &Reader<'_>,
    message: &wire::Message<'_>,
) -> Result<InternodeBody, ProtocolErrorKind> {
    let unknown = ProtocolErrorKind::UnknownBody(message.body_type().0);
    let body = match message.body_type() {
        wire::Body::Hello => {
            let hello = message.body_as_hello().ok_or(unknown)?;
            InternodeBody::Hello(Hello {
                protocol_version: hello.protocol_version(),
                cluster_name: text("cluster_name", hello.cluster_name())?,
                node_id: hello.node_id(),
                shard: hello.shard(),
                ring_epoch: hello.ring_epoch(),
                nonce: r.small("nonce", hello.nonce())?,
            })
        }
        wire::Body::HelloReply => {
            let reply = message.body_as_hello_reply().ok_or(unknown)?;
            InternodeBody::HelloReply(HelloReply {
                accepted: reply.accepted(),
                reason: text("reason", reply.reason())?,
                node_id: reply.node_id(),
                shard: reply.shard(),
                ring_epoch: reply.ring_epoch(),
                nonce: r.small("nonce", reply.nonce())?,
                proof: r.small("proof", reply.proof())?,
            })
        }
        wire::Body::ReplicaPut => {
            let put = message.body_as_replica_put().ok_or(unknown)?;
            InternodeBody::ReplicaPut(ReplicaPut {
                partition: put.partition(),
                key: r.key(put.key())?,
                versions: r.versions(put.versions())?,
                durable: put.durable(),
                epoch: put.epoch(),
            })
        }
        wire::Body::ReplicaPutReply => {
            let reply = message.body_as_replica_put_reply().ok_or(unknown)?;
            InternodeBody::ReplicaPutReply {
                status: ReplicaStatus::from_wire(reply.status())?,
                durable: reply.durable(),
            }
        }
        wire::Body::ReplicaGet => {
            let get = message.body_as_replica_get().ok_or(unknown)?;
            InternodeBody::ReplicaGet {
                partition: get.partition(),
                key: r.key(get.key())?,
                epoch: get.epoch(),
            }
        }
        wire::Body::ReplicaGetReply => {
            let reply = message.body_as_replica_get_reply().ok_or(unknown)?;
            InternodeBody::ReplicaGetReply {
                status: ReplicaStatus::from_wire(reply.status())?,
                found: reply.found(),
                versions: r.versions(reply.versions())?,
            }
        }
        wire::Body::Hint => {
            let hint = message.body_as_hint().ok_or(unknown)?;
            InternodeBody::Hint(Hint {
                intended_node: hint.intended_node(),
                partition: hint.partition(),
                key: r.key(hint.key())?,
                versions: r.versions(hint.versions())?,
                hint_seq: hint.hint_seq(),
            })
        }
        wire::Body::HintAck => {
            let ack = message.body_as_hint_ack().ok_or(unknown)?;
            InternodeBody::HintAck {
                status: ReplicaStatus::from_wire(ack.status())?,
                hint_seq: ack.hint_seq(),
            }
        }
        wire::Body::HandoffBatch => {
            let batch = message.body_as_handoff_batch().ok_or(unknown)?;
            let wire_entries = batch.entries().unwrap_or_default();
            if wire_entries.len() > r.limits.handoff_entries_max {
                return Err(ProtocolErrorKind::TooManyEntries {
                    field: "handoff entries",
                    count: wire_entries.len(),
                    max: r.limits.handoff_entries_max,
                });
            }
            let mut entries = Vec::with_capacity(wire_entries.len());
            for entry in wire_entries.iter() {
                entries.push(HandoffEntry {
                    key: r.key(entry.key())?,
                    versions: r.versions(entry.versions())?,
                });
            }
            InternodeBody::HandoffBatch(HandoffBatch {
                partition: batch.partition(),
                epoch: batch.epoch(),
                batch_seq: batch.batch_seq(),
                entries,
                last: batch.last(),
            })
        }
        wire::Body::HandoffAck => {
            let ack = message.body_as_handoff_ack().ok_or(unknown)?;
            InternodeBody::HandoffAck {
                status: ReplicaStatus::from_wire(ack.status())?,
                partition: ack.partition(),
                batch_seq: ack.batch_seq(),
            }
        }
        wire::Body::Gossip => {
            let gossip = message.body_as_gossip().ok_or(unknown)?;
            let wire_members = gossip.members().unwrap_or_default();
            if wire_members.len() > r.limits.members_max {
                return Err(ProtocolErrorKind::TooManyEntries {
                    field: "members",
                    count: wire_members.len(),
                    max: r.limits.members_max,
                });
            }
            let mut members = Vec::with_capacity(wire_members.len());
            for member in wire_members.iter() {
                members.push(member_of(member)?);
            }
            InternodeBody::Gossip(Gossip {
                from_node: gossip.from_node(),
                ring_epoch: gossip.ring_epoch(),
                members,
                reply: gossip.reply(),
            })
        }
        wire::Body::InternodeError => {
            let error = message.body_as_internode_error().ok_or(unknown)?;
            InternodeBody::Error {
                status: ReplicaStatus::from_wire(error.status())?,
                message: text("message", error.message())?,
            }
        }
        _ => return Err(unknown),
    };
    Ok(body)
}
