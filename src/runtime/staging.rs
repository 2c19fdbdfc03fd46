//! Staged membership changes, Riak style (`admin plan`, `admin commit`,
//! `admin clear`), and `admin where KEY`.
//!
//! A staged change (`admin leave --stage`, `admin weight … --stage`) is kept
//! on the node that received it (shard 0's driver, in memory: a restart
//! forgets it) and changes nothing until `admin commit` on that node applies
//! every staged change at once (`Membership::admin_batch`: one claim from the
//! current ring, so partitions move once). `admin plan` shows what a commit
//! would do: each member's status, weight and partition count before and
//! after, and the partitions that would move against the count minimum.
//! Without `--stage` the changes apply at once, as before.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::cluster::{Cluster, MembershipDriver};
use crate::membership::{next_ring, AdminChange, MemberStatus, MembershipState, NodeId};
use crate::ring::{key_partition, Ring};

/// The most changes one node keeps staged.
pub(crate) const STAGED_MAX: usize = 64;

/// Stages `change` after checking it applies on top of what is staged.
pub(crate) fn stage(driver: &mut MembershipDriver, change: AdminChange) -> Result<String, String> {
    if driver.staged.len() >= STAGED_MAX {
        return Err(format!(
            "{STAGED_MAX} changes are staged already; commit or clear them"
        ));
    }
    let mut state = driver.machine.state().clone();
    for staged in driver.staged.iter().chain(std::iter::once(&change)) {
        state.apply(*staged).map_err(|e| e.to_string())?;
    }
    driver.staged.push(change);
    Ok(format!(
        "staged ({} pending); `admin plan` shows the effect, `admin commit` applies",
        driver.staged.len()
    ))
}

/// Applies every staged change at once.
pub(crate) fn commit(driver: &mut MembershipDriver) -> Result<String, String> {
    if driver.staged.is_empty() {
        return Err("nothing is staged".into());
    }
    let changes = std::mem::take(&mut driver.staged);
    driver.admin_batch(&changes)?;
    Ok(format!(
        "committed {} changes; ring epoch {}",
        changes.len(),
        driver.machine.ring().map_or(0, |r| r.ring.epoch)
    ))
}

/// Drops every staged change.
pub(crate) fn clear(driver: &mut MembershipDriver) -> String {
    let count = driver.staged.len();
    driver.staged.clear();
    format!("cleared {count} staged changes")
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
    let topology = cluster.topology();
    let name = |node: NodeId| {
        topology.book.get(&node).map_or_else(
            || format!("{:016x}", node.0),
            |e| format!("{:016x}@{}", node.0, e.internode(0)),
        )
    };
    let before_state = driver.machine.state();
    let mut after_state: MembershipState = before_state.clone();
    for change in &driver.staged {
        // Checked when staged; a change made since (by gossip) may conflict.
        let _ = after_state.apply(*change);
    }
    let before = driver.machine.ring().map(|r| r.ring.clone());
    let current = driver.machine.ring();
    let after = next_ring(&after_state, current, topology.q, driver.n_val_max())
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
    let changes: Vec<String> = driver
        .staged
        .iter()
        .map(|c| change_text(c, &name))
        .collect();
    let mut out = String::new();
    if json {
        let _ = write!(
            out,
            "{{\"staged\": [{}], \"epoch\": {}, \"next_epoch\": {}, \"moved\": {moved}, \"minimum\": {minimum}, \"nodes\": [",
            changes
                .iter()
                .map(|c| crate::json::string(c))
                .collect::<Vec<_>>()
                .join(", "),
            before.epoch,
            if driver.staged.is_empty() { before.epoch } else { before.epoch + 1 },
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
            let _ = writeln!(out, "staged changes ({}):", changes.len());
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
