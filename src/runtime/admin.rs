//! The client side of admin requests (`dynakv admin …`): one blocking
//! request over a node's internode port, answered on the same connection.
//!
//! This is plain `std::net`, used by the CLI only; the server side is in
//! `shard.rs` (`ShardState::admin`). The answer is bounded like any
//! internode frame and checked before use.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::auth::ClusterSecret;
use super::internode::{
    encode_frame, Envelope, ENVELOPE_BYTES, KIND_ADMIN_REQUEST, KIND_ADMIN_RESPONSE,
};
use super::shard::{
    ADMIN_AAE, ADMIN_CLEAR, ADMIN_COMMIT, ADMIN_HOTKEYS, ADMIN_JOIN, ADMIN_JOIN_INFO, ADMIN_LEAVE,
    ADMIN_PLAN, ADMIN_RING, ADMIN_STAGE_JOIN, ADMIN_STATUS, ADMIN_WEIGHT, ADMIN_WHERE,
};

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
    /// The node's most requested keys (each shard's top-K, merged).
    HotKeys,
    /// A member leaves the ring: `target` (an internode address) or the node
    /// asked; it hands its data off, then leaves the member list. With
    /// `stage`, only staged until `Commit`.
    Leave {
        target: Option<SocketAddr>,
        stage: bool,
    },
    /// A member's capacity weight changes (staged with `stage`).
    Weight {
        target: Option<SocketAddr>,
        weight: u32,
        stage: bool,
    },
    /// What committing the staged changes would do.
    Plan,
    /// Apply every staged change at once.
    Commit,
    /// Drop every staged change.
    Clear,
    /// A key's partition and preference list.
    Where { key: String },
    /// Anti-entropy per partition: last comparison with each other primary,
    /// keys repaired, in sync or not (docs/anti-entropy.md).
    Aae,
    /// A node's id, capacity and addresses, for a staged join (`stage_join`);
    /// refused unless the node runs alone without seeds.
    JoinInfo,
    /// Stage the join of the node `description` (a `JoinInfo` answer) on a
    /// member; applied by `Commit`.
    StageJoin { description: String },
}

fn options_text(target: &Option<SocketAddr>, weight: Option<u32>, stage: bool) -> String {
    let mut words = Vec::new();
    if let Some(target) = target {
        words.push(format!("target={target}"));
    }
    if let Some(weight) = weight {
        words.push(format!("weight={weight}"));
    }
    if stage {
        words.push("stage".to_string());
    }
    words.join(" ")
}

/// Sends `request` to the internode address `node` and returns the node's
/// answer text, or its error text. With `secret`, the connection first
/// passes the cluster-secret handshake (`auth`), which a node configured
/// with a secret requires.
pub fn admin_request(
    node: SocketAddr,
    request: &AdminRequest,
    json: bool,
    timeout: Duration,
    secret: Option<&ClusterSecret>,
) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&node, timeout)
        .map_err(|e| format!("cannot connect to {node}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if let Some(secret) = secret {
        super::auth::connect_blocking(&mut stream, secret)
            .map_err(|e| format!("cluster-secret handshake with {node} failed: {e}"))?;
    }
    let (op, argument) = match request {
        AdminRequest::Status => (ADMIN_STATUS, String::new()),
        AdminRequest::Ring => (ADMIN_RING, String::new()),
        AdminRequest::Join { member } => (ADMIN_JOIN, member.to_string()),
        AdminRequest::HotKeys => (ADMIN_HOTKEYS, String::new()),
        AdminRequest::Leave { target, stage } => (ADMIN_LEAVE, options_text(target, None, *stage)),
        AdminRequest::Weight {
            target,
            weight,
            stage,
        } => (ADMIN_WEIGHT, options_text(target, Some(*weight), *stage)),
        AdminRequest::Plan => (ADMIN_PLAN, String::new()),
        AdminRequest::Commit => (ADMIN_COMMIT, String::new()),
        AdminRequest::Clear => (ADMIN_CLEAR, String::new()),
        AdminRequest::Where { key } => (ADMIN_WHERE, key.clone()),
        AdminRequest::Aae => (ADMIN_AAE, String::new()),
        AdminRequest::JoinInfo => (ADMIN_JOIN_INFO, String::new()),
        AdminRequest::StageJoin { description } => (ADMIN_STAGE_JOIN, description.clone()),
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
        .map_err(|e| {
            format!("no answer from {node}: {e} (a node with a cluster secret closes connections that do not pass the handshake: --cluster-secret-file)")
        })?;
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

/// `admin join --stage`: asks the new node `node` for its description and
/// hands it to `member`, which stages the join; nothing moves until `admin
/// commit` on any member.
pub fn stage_join(
    node: SocketAddr,
    member: SocketAddr,
    timeout: Duration,
    secret: Option<&ClusterSecret>,
) -> Result<String, String> {
    let description = admin_request(node, &AdminRequest::JoinInfo, false, timeout, secret)
        .map_err(|e| format!("{node} cannot join: {e}"))?;
    admin_request(
        member,
        &AdminRequest::StageJoin { description },
        false,
        timeout,
        secret,
    )
    .map_err(|e| format!("{member} did not stage the join: {e}"))
}

/// The value of `"field": ` in one of our own JSON replies: a number, or a
/// string (without quotes; our strings here are addresses and hex ids).
fn json_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{field}\": "))? + field.len() + 4;
    let rest = &text[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()
    } else {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

/// `admin status --all`: asks `node` for its members, then every listed
/// member for its own status, and shows each node's keys and pending
/// handoff side by side (a node that does not answer is shown as such).
pub fn cluster_status(
    node: SocketAddr,
    json: bool,
    timeout: Duration,
    secret: Option<&ClusterSecret>,
) -> Result<String, String> {
    let first = admin_request(node, &AdminRequest::Status, true, timeout, secret)?;
    let members: Vec<SocketAddr> = first
        .split("\"internode\": \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect();
    let mut rows = Vec::new();
    for member in members {
        rows.push((
            member,
            admin_request(member, &AdminRequest::Status, true, timeout, secret),
        ));
    }
    let mut out = String::new();
    if json {
        out.push('[');
        for (i, (member, answer)) in rows.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match answer {
                Ok(text) => out.push_str(text.trim()),
                Err(e) => out.push_str(&format!(
                    "{{\"internode\": {}, \"error\": {}}}",
                    crate::json::string(&member.to_string()),
                    crate::json::string(e)
                )),
            }
        }
        out.push(']');
    } else {
        out.push_str(&format!(
            "{:<22} {:<8} {:>6} {:>9} {:>10} {:>8} {:>8} {:>7}\n",
            "node", "status", "epoch", "keys", "handed off", "dropped", "pending", "hints"
        ));
        for (member, answer) in rows {
            match answer {
                Ok(text) => {
                    let field = |name: &str| json_field(&text, name).unwrap_or("?").to_string();
                    out.push_str(&format!(
                        "{:<22} {:<8} {:>6} {:>9} {:>10} {:>8} {:>8} {:>7}\n",
                        member,
                        field("status"),
                        field("epoch"),
                        field("keys"),
                        field("handed_off"),
                        field("handoff_dropped"),
                        field("handoff_pending"),
                        field("hints")
                    ));
                }
                Err(e) => out.push_str(&format!("{member:<22} no answer: {e}\n")),
            }
        }
    }
    Ok(out)
}
