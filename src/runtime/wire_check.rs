//! Entry points into the runtime's own internode framing for the fuzz targets
//! (`fuzz/`) and `tests/hardening_decoders.rs`: the envelope, and the replica
//! and gossip payloads it carries, decoded exactly as a shard's inbound
//! handler decodes them. Hidden from the documentation and not part of the
//! server's API; it only calls the real decoders and encoders, no glommio.

use std::net::IpAddr;

use bytes::Bytes;

use super::cluster::{decode_gossip, encode_gossip, AddressBook, Endpoint};
use super::internode::{decode_envelope, encode_frame, Envelope, KIND_MEMBERSHIP, KIND_REPLICA};
use crate::membership::{MembershipMessage, NodeId};
use crate::replica::ReplicaMessage;

/// Decodes one internode frame (the bytes after its length prefix) the way
/// `ShardState::handle` does. Returns whether every layer accepted it.
pub fn decode_frame(frame: &Bytes) -> bool {
    let Some((envelope, payload)) = decode_envelope(frame) else {
        return false;
    };
    match envelope.kind {
        KIND_REPLICA => ReplicaMessage::decode(&payload).is_ok(),
        KIND_MEMBERSHIP => decode_gossip(&payload).is_some(),
        // Admin and forwarded client payloads are client-protocol frames or
        // a one-byte operation code; the other decoders cover them.
        _ => true,
    }
}

/// Decodes a gossip payload (membership message plus address book).
pub fn decode_gossip_payload(payload: &[u8]) -> bool {
    decode_gossip(payload).is_some()
}

/// A whole frame (length prefix included) carrying a replica message.
pub fn replica_frame(message: &ReplicaMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, envelope(KIND_REPLICA), |out| message.encode(out));
    out
}

/// A whole frame (length prefix included) carrying a gossip message with an
/// address book of `nodes` entries (IPv4 and IPv6 alternating).
pub fn gossip_frame(message: &MembershipMessage, nodes: u64) -> Vec<u8> {
    let mut book = AddressBook::new();
    for node in 1..=nodes {
        let ip = if node % 2 == 0 {
            IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, node as u16])
        } else {
            IpAddr::from([127, 0, 0, node as u8])
        };
        book.insert(
            NodeId(node),
            Endpoint {
                ip,
                client_port: 7000,
                shard_port_base: 7100,
                internode_port: 7200,
                shards: 2,
            },
        );
    }
    let mut out = Vec::new();
    encode_frame(&mut out, envelope(KIND_MEMBERSHIP), |out| {
        encode_gossip(out, message, &book, NodeId(1))
    });
    out
}

fn envelope(kind: u8) -> Envelope {
    Envelope {
        kind,
        from_node: 1,
        from_shard: 0,
        to_shard: 1,
    }
}
