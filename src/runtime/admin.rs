//! The client side of admin requests (`dynakv admin …`): one blocking
//! request over a node's internode port, answered on the same connection.
//!
//! This is plain `std::net`, used by the CLI only; the server side is in
//! `shard.rs` (`ShardState::admin`). The answer is bounded like any
//! internode frame and checked before use.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::internode::{
    encode_frame, Envelope, ENVELOPE_BYTES, KIND_ADMIN_REQUEST, KIND_ADMIN_RESPONSE,
};
use super::shard::{ADMIN_AAE, ADMIN_JOIN, ADMIN_LEAVE, ADMIN_RING, ADMIN_STATUS};

/// The largest admin answer accepted (a ring listing of 65536 partitions).
const ADMIN_ANSWER_BYTES_MAX: usize = 64 << 20;

/// An admin operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// Members, liveness as seen from the node, ring epoch, hint counts.
    Status,
    /// The preference list of every partition.
    Ring,
    /// Ask the node to exchange cluster state with `member` (an internode
    /// address of a node already in the cluster); gossip spreads the join.
    Join { member: SocketAddr },
    /// The node leaves the ring (it keeps running; see docs/cluster-runtime.md).
    Leave,
    /// Anti-entropy per partition: last comparison with each other primary,
    /// keys repaired, in sync or not (docs/anti-entropy.md).
    Aae,
}

/// Sends `request` to the internode address `node` and returns the node's
/// answer text, or its error text.
pub fn admin_request(
    node: SocketAddr,
    request: &AdminRequest,
    json: bool,
    timeout: Duration,
) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&node, timeout)
        .map_err(|e| format!("cannot connect to {node}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let (op, argument) = match request {
        AdminRequest::Status => (ADMIN_STATUS, String::new()),
        AdminRequest::Ring => (ADMIN_RING, String::new()),
        AdminRequest::Join { member } => (ADMIN_JOIN, member.to_string()),
        AdminRequest::Leave => (ADMIN_LEAVE, String::new()),
        AdminRequest::Aae => (ADMIN_AAE, String::new()),
    };
    let envelope = Envelope {
        kind: KIND_ADMIN_REQUEST,
        from_node: 0,
        from_shard: 0,
        to_shard: 0,
    };
    let mut frame = Vec::new();
    encode_frame(&mut frame, envelope, |out| {
        out.push(op);
        out.push(u8::from(json));
        out.extend_from_slice(argument.as_bytes());
    });
    stream
        .write_all(&frame)
        .map_err(|e| format!("cannot send to {node}: {e}"))?;
    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .map_err(|e| format!("no answer from {node}: {e}"))?;
    let length = u32::from_le_bytes(length) as usize;
    if !(ENVELOPE_BYTES + 1..=ADMIN_ANSWER_BYTES_MAX).contains(&length) {
        return Err(format!("bad answer length {length} from {node}"));
    }
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("short answer from {node}: {e}"))?;
    if body[0] != KIND_ADMIN_RESPONSE {
        return Err(format!("unexpected answer kind {} from {node}", body[0]));
    }
    let ok = body[ENVELOPE_BYTES] == 1;
    let text = String::from_utf8_lossy(&body[ENVELOPE_BYTES + 1..]).into_owned();
    if ok {
        Ok(text)
    } else {
        Err(text)
    }
}
