//! Staged membership changes, Riak style (`admin plan`, `admin commit`,
//! `admin clear`), staged joins, and `admin where KEY`.
//!
//! A staged change (`admin leave --stage`, `admin weight … --stage`, `admin
//! join --stage`) changes nothing until `admin commit` applies every staged
//! change at once (`Membership::commit_staged`: one claim from the current
//! ring, so partitions move once). `admin plan` shows what a commit would
//! do: each member's status, weight and partition count before and after,
//! and the partitions that would move against the count minimum. Without
//! `--stage` the changes apply at once, as before.
//!
//! The staged plan is cluster-wide: it lives in the membership machine
//! (`StagedPlan`, versioned, last writer wins), travels with every gossip
//! message, and is persisted by every node in `DATA_DIR/staged-changes`
//! (CRC-checked; a corrupt file stops the start with a clear error). So
//! every node's `admin plan` shows the same plan once gossip has spread it,
//! any node can commit or clear it, and a restart forgets nothing.
//!
//! A staged join: the CLI asks the new node for its description
//! (`join_info_text`: id, weight, shards, addresses; the node must be
//! running alone, without seeds) and hands it to a member, which stages
//! `AdminChange::Join` and records the address. The new node keeps serving
//! as its own one-node cluster and hears nothing from the cluster until the
//! commit, when the committing node pushes the new view to it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use super::cluster::{Cluster, Endpoint, MembershipDriver};
use crate::membership::{
    next_ring, AdminChange, MemberStatus, MembershipState, NodeId, StagedPlan,
};
use crate::ring::{key_partition, Ring};

/// Stages `change` (checked on top of what is staged).
pub(crate) fn stage(driver: &mut MembershipDriver, change: AdminChange) -> Result<String, String> {
    let count = driver.stage(change)?;
    Ok(staged_text(count))
}

fn staged_text(count: usize) -> String {
    format!(
        "staged ({count} pending); `admin plan` on any node shows the effect, `admin commit` applies"
    )
}

/// Applies every staged change at once.
pub(crate) fn commit(driver: &mut MembershipDriver) -> Result<String, String> {
    let changes = driver.commit_staged()?;
    Ok(format!(
        "committed {} changes; ring epoch {}",
        changes.len(),
        driver.machine.ring().map_or(0, |r| r.ring.epoch)
    ))
}

/// Drops every staged change.
pub(crate) fn clear(driver: &mut MembershipDriver) -> String {
    let count = driver.clear_staged();
    format!("cleared {count} staged changes")
}

/// Magic of the staged-changes file: `DKVSTAGE`, then `u32` length and
/// `u32` CRC32 of the encoded plan, then the plan.
const STAGED_MAGIC: &[u8; 8] = b"DKVSTAGE";

/// Writes the staged plan durably (temporary file, fsync, rename, fsync of
/// the directory).
pub(crate) fn save_staged(path: &Path, plan: &StagedPlan) -> std::io::Result<()> {
    let mut body = Vec::new();
    plan.encode(&mut body);
    let mut bytes = Vec::with_capacity(16 + body.len());
    bytes.extend_from_slice(STAGED_MAGIC);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    super::server::write_file_durably(path, &bytes)
}

/// Reads what `save_staged` wrote; no file is the empty plan.
pub(crate) fn load_staged(path: &Path) -> Result<StagedPlan, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StagedPlan::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    decode_staged_file(&bytes).map_err(|why| {
        format!(
            "{} is corrupt ({why}); it holds the staged membership changes: remove it to start without them (other nodes keep their copy)",
            path.display()
        )
    })
}

fn decode_staged_file(bytes: &[u8]) -> Result<StagedPlan, String> {
    if bytes.len() < 16 || &bytes[..8] != STAGED_MAGIC {
        return Err("not a staged-changes file".into());
    }
    let length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let body = &bytes[16..];
    if body.len() != length {
        return Err(format!("length {length}, {} bytes follow", body.len()));
    }
    if crc32fast::hash(body) != crc {
        return Err("CRC mismatch".into());
    }
    StagedPlan::decode(body).map_err(|e| e.to_string())
}

/// `admin join-info` (asked of a node about to join by `admin join
/// --stage`): the node's id, capacity and addresses, as `key=value` words.
/// Refused unless the node runs alone and has no seeds, since otherwise it
/// would join (or has joined) by gossip without any staging.
pub(crate) fn join_info_text(
    driver: &MembershipDriver,
    cluster: &Cluster,
) -> Result<String, String> {
    if driver.has_seeds() {
        return Err("this node has seeds and joins by gossip at once; start it without --seeds to stage its join".into());
    }
    let state = driver.machine.state();
    let others = state
        .members()
        .filter(|(id, r)| *id != cluster.me && r.status != MemberStatus::Removed)
        .count();
    if others > 0 {
        return Err(format!(
            "this node is already in a cluster with {others} other members"
        ));
    }
    let record = state
        .get(cluster.me)
        .filter(|r| r.status == MemberStatus::Active)
        .ok_or("this node is not an active member of its own one-node cluster")?;
    let endpoint = driver
        .book
        .get(&cluster.me)
        .ok_or("this node does not know its own address")?;
    Ok(format!(
        "node={:016x} weight={} shards={} ip={} client_port={} shard_port_base={} internode_port={}",
        cluster.me.0,
        record.weight,
        record.shards,
        endpoint.ip,
        endpoint.client_port,
        endpoint.shard_port_base,
        endpoint.internode_port
    ))
}

/// Parses what `join_info_text` wrote into the change to stage and the
/// joining node's address.
pub(crate) fn parse_join_info(text: &str) -> Result<(AdminChange, Endpoint), String> {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for word in text.split_whitespace() {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("bad join description word '{word}'"))?;
        fields.insert(key, value);
    }
    let field = |key: &str| {
        fields
            .get(key)
            .copied()
            .ok_or_else(|| format!("join description lacks {key}"))
    };
    let number = |key: &str| -> Result<u64, String> {
        field(key)?
            .parse::<u64>()
            .map_err(|_| format!("bad {key} in join description"))
    };
    let port = |key: &str| -> Result<u16, String> {
        u16::try_from(number(key)?).map_err(|_| format!("bad {key} in join description"))
    };
    let node = NodeId(
        u64::from_str_radix(field("node")?, 16).map_err(|_| "bad node id in join description")?,
    );
    let weight = u32::try_from(number("weight")?).map_err(|_| "bad weight")?;
    let shards = port("shards")?;
    if weight == 0 || shards == 0 || shards > 256 {
        return Err("join description: weight and shards must be >= 1 (shards <= 256)".into());
    }
    let ip: IpAddr = field("ip")?
        .parse()
        .map_err(|_| "bad ip in join description")?;
    let endpoint = Endpoint {
        ip,
        client_port: port("client_port")?,
        shard_port_base: port("shard_port_base")?,
        internode_port: port("internode_port")?,
        shards,
    };
    Ok((
        AdminChange::Join {
            node,
            weight,
            shards,
        },
        endpoint,
    ))
}

/// `admin stage-join` (on a member): stages the join of the node described.
pub(crate) fn stage_join(
    driver: &mut MembershipDriver,
    description: &str,
) -> Result<String, String> {
    let (change, endpoint) = parse_join_info(description)?;
    let count = driver.stage_join(change, endpoint)?;
    Ok(format!(
        "join of {:016x} at {} {}",
        change.node().0,
        endpoint.internode(0),
        staged_text(count)
    ))
}

fn change_text(change: &AdminChange, name: &dyn Fn(NodeId) -> String) -> String {
    match change {
        AdminChange::Join { node, weight, .. } => format!("join {} weight {weight}", name(*node)),
        AdminChange::Leave { node } => format!("leave {}", name(*node)),
        AdminChange::SetCapacity { node, weight } => {
            format!("weight {} -> {weight}", name(*node))
        }
        AdminChange::Remove { node } => format!("remove {}", name(*node)),
    }
}

/// Partitions (as primary) per node.
fn counts(ring: &Ring) -> BTreeMap<NodeId, u64> {
    let mut counts = BTreeMap::new();
    for owner in ring.owners() {
        *counts.entry(owner.node).or_insert(0) += 1;
    }
    counts
}

/// `admin plan`: what committing the staged changes would do.
pub(crate) fn plan_text(driver: &MembershipDriver, cluster: &Cluster, json: bool) -> String {
    let book = &driver.book;
    let name = |node: NodeId| {
        book.get(&node).map_or_else(
            || format!("{:016x}", node.0),
            |e| format!("{:016x}@{}", node.0, e.internode(0)),
        )
    };
    let before_state = driver.machine.state();
    let mut after_state: MembershipState = before_state.clone();
    let staged = &driver.machine.staged().changes;
    for change in staged {
        // Checked when staged; a change made since (by gossip) may conflict.
        let _ = after_state.apply(*change);
    }
    let before = driver.machine.ring().map(|r| r.ring.clone());
    let current = driver.machine.ring();
    let after = next_ring(
        &after_state,
        current,
        cluster.topology().q,
        driver.n_val_max(),
    )
    .map(|r| r.ring)
    .or_else(|| before.clone());
    let (Some(before), Some(after)) = (before, after) else {
        return if json {
            "{\"error\": \"no ring\"}".into()
        } else {
            "no ring yet\n".into()
        };
    };
    let (count_before, count_after) = (counts(&before), counts(&after));
    let moved = after.nodes_moved_from(&before);
    let minimum: u64 = count_before
        .iter()
        .map(|(node, &b)| b.saturating_sub(count_after.get(node).copied().unwrap_or(0)))
        .sum();
    let q = f64::from(before.q());
    let mut rows = Vec::new();
    for (node, record) in after_state.members() {
        let old = before_state.get(node);
        if old.is_some_and(|r| r.status == MemberStatus::Removed)
            && record.status == MemberStatus::Removed
        {
            continue;
        }
        rows.push((
            node,
            old.map(|r| r.status),
            record.status,
            old.map_or(0, |r| r.weight),
            record.weight,
            count_before.get(&node).copied().unwrap_or(0),
            count_after.get(&node).copied().unwrap_or(0),
        ));
    }
    let status = |s: Option<MemberStatus>| s.map_or("new", super::cluster::status_name);
    let changes: Vec<String> = staged.iter().map(|c| change_text(c, &name)).collect();
    let mut out = String::new();
    if json {
        let _ = write!(
            out,
            "{{\"staged\": [{}], \"plan_version\": {}, \"epoch\": {}, \"next_epoch\": {}, \"moved\": {moved}, \"minimum\": {minimum}, \"nodes\": [",
            changes
                .iter()
                .map(|c| crate::json::string(c))
                .collect::<Vec<_>>()
                .join(", "),
            driver.machine.staged().version,
            before.epoch,
            if staged.is_empty() { before.epoch } else { before.epoch + 1 },
        );
        for (i, (node, s0, s1, w0, w1, c0, c1)) in rows.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"node\": {}, \"status_before\": \"{}\", \"status_after\": \"{}\", \"weight_before\": {w0}, \"weight_after\": {w1}, \"partitions_before\": {c0}, \"partitions_after\": {c1}}}",
                if i == 0 { "" } else { ", " },
                crate::json::string(&name(*node)),
                status(*s0),
                status(Some(*s1)),
            );
        }
        out.push_str("]}");
    } else {
        if changes.is_empty() {
            out.push_str("no staged changes\n");
        } else {
            let plan = driver.machine.staged();
            let _ = writeln!(
                out,
                "staged changes ({}), plan version {} (last edit on {}):",
                changes.len(),
                plan.version,
                name(plan.author)
            );
            for change in &changes {
                let _ = writeln!(out, "  {change}");
            }
        }
        let _ = writeln!(
            out,
            "{moved} of {} partitions would move (count minimum {minimum})",
            before.q()
        );
        let _ = writeln!(
            out,
            "  {:<40} {:>9} {:>9} {:>7} {:>7} {:>17} {:>17}",
            "node", "status", "after", "weight", "after", "partitions", "after"
        );
        for (node, s0, s1, w0, w1, c0, c1) in rows {
            let _ = writeln!(
                out,
                "  {:<40} {:>9} {:>9} {w0:>7} {w1:>7} {c0:>7} ({:>5.1}%) {c1:>7} ({:>5.1}%)",
                name(node),
                status(s0),
                status(Some(s1)),
                c0 as f64 * 100.0 / q,
                c1 as f64 * 100.0 / q,
            );
        }
    }
    out
}

/// `admin where KEY`: the key's partition and preference list.
pub(crate) fn where_text(cluster: &Cluster, key: &str, json: bool) -> String {
    let topology = cluster.topology();
    let partition = key_partition(key.as_bytes(), topology.q);
    let rows: Vec<(NodeId, u16, String, u16, u16, bool)> = topology
        .primaries(partition)
        .iter()
        .map(|o| {
            let endpoint = topology.book.get(&o.node);
            (
                o.node,
                o.shard,
                endpoint.map_or_else(|| "?".into(), |e| e.ip.to_string()),
                endpoint.map_or(0, |e| e.shard_port_base.wrapping_add(o.shard)),
                endpoint.map_or(0, |e| e.internode_port.wrapping_add(o.shard)),
                !topology.unreachable.contains(&o.node),
            )
        })
        .collect();
    let mut out = String::new();
    if json {
        let _ = write!(
            out,
            "{{\"key\": {}, \"partition\": {partition}, \"epoch\": {}, \"preference_list\": [",
            crate::json::string(key),
            topology.epoch
        );
        for (i, (node, shard, ip, port, internode, reachable)) in rows.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"node\": \"{:016x}\", \"ip\": {}, \"shard\": {shard}, \"port\": {port}, \"internode_port\": {internode}, \"reachable\": {reachable}}}",
                if i == 0 { "" } else { ", " },
                node.0,
                crate::json::string(ip),
            );
        }
        out.push_str("]}");
    } else {
        let _ = writeln!(
            out,
            "key {key:?}: partition {partition} of {} (ring epoch {})",
            topology.q, topology.epoch
        );
        for (i, (node, shard, ip, port, internode, reachable)) in rows.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {}. {:016x} {ip} shard {shard} port {port} (internode {internode}){}",
                i + 1,
                node.0,
                if *reachable { "" } else { " unreachable" }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> StagedPlan {
        StagedPlan {
            version: 7,
            author: NodeId(3),
            changes: vec![
                AdminChange::Join {
                    node: NodeId(9),
                    weight: 2,
                    shards: 4,
                },
                AdminChange::Leave { node: NodeId(1) },
            ],
        }
    }

    fn file_bytes(plan: &StagedPlan) -> Vec<u8> {
        let mut body = Vec::new();
        plan.encode(&mut body);
        let mut bytes = STAGED_MAGIC.to_vec();
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    #[test]
    fn the_staged_file_round_trips_and_every_damage_is_refused() {
        let plan = plan();
        let bytes = file_bytes(&plan);
        assert_eq!(decode_staged_file(&bytes), Ok(plan));
        for cut in 0..bytes.len() {
            assert!(decode_staged_file(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(decode_staged_file(&damaged).is_err(), "flip at {at}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_staged_file(&longer).is_err());
    }

    #[test]
    fn a_join_description_parses_back_and_bad_ones_are_refused() {
        let text = "node=00000000000000ff weight=3 shards=2 ip=127.0.0.4 client_port=7000 shard_port_base=7001 internode_port=7100";
        let (change, endpoint) = parse_join_info(text).expect("parses");
        assert_eq!(
            change,
            AdminChange::Join {
                node: NodeId(255),
                weight: 3,
                shards: 2,
            }
        );
        assert_eq!(endpoint.internode(1), "127.0.0.4:7101".parse().unwrap());
        assert_eq!(endpoint.client_port, 7000);
        for bad in [
            "",
            "node=zz weight=3 shards=2 ip=127.0.0.4 client_port=1 shard_port_base=2 internode_port=3",
            "node=ff weight=0 shards=2 ip=127.0.0.4 client_port=1 shard_port_base=2 internode_port=3",
            "node=ff weight=1 shards=0 ip=127.0.0.4 client_port=1 shard_port_base=2 internode_port=3",
            "node=ff weight=1 shards=300 ip=127.0.0.4 client_port=1 shard_port_base=2 internode_port=3",
            "node=ff weight=1 shards=1 ip=nowhere client_port=1 shard_port_base=2 internode_port=3",
            "node=ff weight=1 shards=1 ip=127.0.0.4 client_port=70000 shard_port_base=2 internode_port=3",
            "node=ff weight=1 shards=1 ip=127.0.0.4 shard_port_base=2 internode_port=3",
            "node=ff weight=1 shards=1 ip=127.0.0.4 client_port=1 shard_port_base=2 internode_port",
        ] {
            assert!(parse_join_info(bad).is_err(), "{bad:?}");
        }
    }
}
