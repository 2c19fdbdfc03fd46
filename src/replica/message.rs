//! Internode messages of the replica layer and their binary codec.
//!
//! Layout: one tag byte, then the fields in declaration order; integers are
//! little-endian fixed width, keys and sibling sets are `u32`-length-prefixed
//! (a sibling set in the `version` layer's canonical encoding). Decoding
//! checks every length against `KEY_BYTES_MAX` / `SIBLING_SET_BYTES_MAX`
//! before use and never panics.

use bytes::Bytes;

use super::wire::{put_bytes, put_u32, put_u64, put_u8, Reader, WireError};
use super::{KEY_BYTES_MAX, SIBLING_SET_BYTES_MAX};
use crate::membership::NodeId;
use crate::version::SiblingSet;

/// A request id, unique per sending node while the request is in flight.
pub type RequestId = u64;

/// Replica-to-replica traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaMessage {
    /// "Merge this set into your copy of the key" (a coordinator's fan-out,
    /// or read repair). With `hint_for`, the receiver is a fallback and keeps
    /// the set as a durable hint for that primary (§4.6).
    PutReplica {
        req: RequestId,
        partition: u32,
        key: Bytes,
        siblings: SiblingSet,
        /// The coordinator wants this write fsynced before the ack (DW).
        durable: bool,
        hint_for: Option<NodeId>,
    },
    /// The write is in the receiver's store (fsynced when `durable`).
    PutAck { req: RequestId, durable: bool },
    /// "Send me your copy of the key."
    GetReplica {
        req: RequestId,
        partition: u32,
        key: Bytes,
    },
    /// The receiver's copy, `None` when it holds nothing for the key.
    GetReply {
        req: RequestId,
        siblings: Option<SiblingSet>,
    },
    /// A fallback hands a hinted write back to its primary.
    HintReplay {
        req: RequestId,
        partition: u32,
        key: Bytes,
        siblings: SiblingSet,
    },
    /// The primary merged and fsynced a replayed hint; the fallback may now
    /// delete it.
    HintAck { req: RequestId },
}

const TAG_PUT_REPLICA: u8 = 1;
const TAG_PUT_ACK: u8 = 2;
const TAG_GET_REPLICA: u8 = 3;
const TAG_GET_REPLY: u8 = 4;
const TAG_HINT_REPLAY: u8 = 5;
const TAG_HINT_ACK: u8 = 6;

fn put_siblings(out: &mut Vec<u8>, siblings: &SiblingSet) {
    let mut encoded = Vec::new();
    siblings.encode(&mut encoded);
    assert!(encoded.len() <= SIBLING_SET_BYTES_MAX);
    put_bytes(out, &encoded);
}

fn read_siblings(reader: &mut Reader<'_>) -> Result<SiblingSet, WireError> {
    let bytes = reader.bytes(SIBLING_SET_BYTES_MAX)?;
    SiblingSet::decode(bytes).map_err(WireError::Siblings)
}

fn read_key(reader: &mut Reader<'_>) -> Result<Bytes, WireError> {
    Ok(Bytes::copy_from_slice(reader.bytes(KEY_BYTES_MAX)?))
}

impl ReplicaMessage {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ReplicaMessage::PutReplica {
                req,
                partition,
                key,
                siblings,
                durable,
                hint_for,
            } => {
                put_u8(out, TAG_PUT_REPLICA);
                put_u64(out, *req);
                put_u32(out, *partition);
                put_bytes(out, key);
                put_siblings(out, siblings);
                put_u8(out, u8::from(*durable));
                match hint_for {
                    Some(node) => {
                        put_u8(out, 1);
                        put_u64(out, node.0);
                    }
                    None => put_u8(out, 0),
                }
            }
            ReplicaMessage::PutAck { req, durable } => {
                put_u8(out, TAG_PUT_ACK);
                put_u64(out, *req);
                put_u8(out, u8::from(*durable));
            }
            ReplicaMessage::GetReplica {
                req,
                partition,
                key,
            } => {
                put_u8(out, TAG_GET_REPLICA);
                put_u64(out, *req);
                put_u32(out, *partition);
                put_bytes(out, key);
            }
            ReplicaMessage::GetReply { req, siblings } => {
                put_u8(out, TAG_GET_REPLY);
                put_u64(out, *req);
                match siblings {
                    Some(siblings) => {
                        put_u8(out, 1);
                        put_siblings(out, siblings);
                    }
                    None => put_u8(out, 0),
                }
            }
            ReplicaMessage::HintReplay {
                req,
                partition,
                key,
                siblings,
            } => {
                put_u8(out, TAG_HINT_REPLAY);
                put_u64(out, *req);
                put_u32(out, *partition);
                put_bytes(out, key);
                put_siblings(out, siblings);
            }
            ReplicaMessage::HintAck { req } => {
                put_u8(out, TAG_HINT_ACK);
                put_u64(out, *req);
            }
        }
    }

    /// Decodes untrusted bytes. Never panics; allocates at most the input's
    /// length.
    pub fn decode(bytes: &[u8]) -> Result<ReplicaMessage, WireError> {
        let mut reader = Reader::new(bytes);
        let message = match reader.u8()? {
            TAG_PUT_REPLICA => {
                let req = reader.u64()?;
                let partition = reader.u32()?;
                let key = read_key(&mut reader)?;
                let siblings = read_siblings(&mut reader)?;
                let durable = reader.bool()?;
                let hint_for = if reader.bool()? {
                    Some(NodeId(reader.u64()?))
                } else {
                    None
                };
                ReplicaMessage::PutReplica {
                    req,
                    partition,
                    key,
                    siblings,
                    durable,
                    hint_for,
                }
            }
            TAG_PUT_ACK => ReplicaMessage::PutAck {
                req: reader.u64()?,
                durable: reader.bool()?,
            },
            TAG_GET_REPLICA => ReplicaMessage::GetReplica {
                req: reader.u64()?,
                partition: reader.u32()?,
                key: read_key(&mut reader)?,
            },
            TAG_GET_REPLY => {
                let req = reader.u64()?;
                let siblings = if reader.bool()? {
                    Some(read_siblings(&mut reader)?)
                } else {
                    None
                };
                ReplicaMessage::GetReply { req, siblings }
            }
            TAG_HINT_REPLAY => ReplicaMessage::HintReplay {
                req: reader.u64()?,
                partition: reader.u32()?,
                key: read_key(&mut reader)?,
                siblings: read_siblings(&mut reader)?,
            },
            TAG_HINT_ACK => ReplicaMessage::HintAck { req: reader.u64()? },
            tag => return Err(WireError::UnknownTag(tag)),
        };
        reader.finish()?;
        Ok(message)
    }
}
