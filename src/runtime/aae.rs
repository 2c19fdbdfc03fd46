//! The anti-entropy driver of one shard: feeds the shard's sans-IO
//! `AntiEntropy` machine (`crate::antientropy`) its partitions, its timer and
//! its inbound messages; performs its store scans in the shard's
//! `background` task queue, yielding every few keys and rate-limited in keys
//! and bytes per second; sends its messages over the internode links (kind
//! `KIND_AAE`); hands its merges and purges to the shard's `Replica` machine
//! (per-key lock); removes records the store can no longer read so their
//! keys can be repaired from the other primaries; and publishes a status
//! snapshot for `dynakv admin aae`. No comparison or repair logic lives here.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::cluster::Topology;
use super::internode::{Envelope, KIND_AAE};
use super::shard::{NodeInfo, ShardState};
use crate::antientropy::{
    perform_io_observed, scan_keys, scan_one, AaeMessage, AaeStats, LocalAction, PartitionStatus,
    ScanRequest, Scanned,
};
use crate::membership::NodeId;
use crate::replica::IoRequest;
use crate::storage::{Namespace, StorageError};

/// The driver's tick: timers, inbound messages' follow-up work and sends.
const TICK: Duration = Duration::from_millis(20);
/// How often a shard publishes its status for `admin aae`.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// Keys scanned between voluntary yields.
const KEYS_PER_YIELD: usize = 64;

/// One shard's last published anti-entropy status.
#[derive(Clone, Debug)]
pub(crate) struct ShardAae {
    at: Instant,
    partitions: Vec<PartitionStatus>,
    stats: AaeStats,
}

/// Every shard's published status, read by shard 0 for `admin aae`.
pub(crate) struct AaeBoard {
    shards: Mutex<Vec<Option<ShardAae>>>,
}

impl AaeBoard {
    pub(crate) fn new(shards: usize) -> Self {
        AaeBoard {
            shards: Mutex::new(vec![None; shards]),
        }
    }

    fn publish(&self, shard: usize, status: ShardAae) {
        if let Ok(mut shards) = self.shards.lock() {
            if let Some(slot) = shards.get_mut(shard) {
                *slot = Some(status);
            }
        }
    }
}

/// A token bucket over keys and bytes (one second's worth of burst).
struct Budget {
    keys_per_second: f64,
    bytes_per_second: f64,
    keys: f64,
    bytes: f64,
    refilled: Instant,
}

impl Budget {
    fn new(keys_per_second: u64, bytes_per_second: u64) -> Self {
        Budget {
            keys_per_second: keys_per_second as f64,
            bytes_per_second: bytes_per_second as f64,
            keys: 0.0,
            bytes: 0.0,
            refilled: Instant::now(),
        }
    }

    /// Spends, sleeping first while either bucket is in debt.
    async fn spend(&mut self, keys: u64, bytes: u64) {
        let elapsed = self.refilled.elapsed().as_secs_f64();
        self.refilled = Instant::now();
        self.keys = (self.keys + elapsed * self.keys_per_second).min(self.keys_per_second);
        self.bytes = (self.bytes + elapsed * self.bytes_per_second).min(self.bytes_per_second);
        self.keys -= keys as f64;
        self.bytes -= bytes as f64;
        let wait = (-self.keys / self.keys_per_second)
            .max(-self.bytes / self.bytes_per_second)
            .max(0.0);
        if wait > 0.0 {
            glommio::timer::sleep(Duration::from_secs_f64(wait.min(1.0))).await;
        }
    }
}

impl ShardState {
    /// An anti-entropy message from a peer: handled at once; the work it
    /// causes (scans, answers) is done by `aae_loop`.
    pub(crate) fn handle_aae(&self, from: NodeId, payload: &[u8]) {
        let Ok(message) = AaeMessage::decode(payload) else {
            return; // bad bytes from a peer are dropped
        };
        if from == self.node.cluster.me || message.partition() >= self.topology().q {
            return;
        }
        let now = self.now_ms();
        self.aae.borrow_mut().handle_message(now, from, message);
    }

    /// The partitions this shard holds as a primary, with their primaries.
    fn aae_partitions(&self, topology: &Topology) -> Vec<(u32, Vec<NodeId>)> {
        let me = self.node.cluster.me;
        (0..topology.q)
            .filter_map(|partition| {
                let primaries = topology.primaries(partition);
                primaries
                    .iter()
                    .any(|o| o.node == me && usize::from(o.shard) == self.index)
                    .then(|| (partition, primaries.iter().map(|o| o.node).collect()))
            })
            .collect()
    }

    /// Runs anti-entropy until shutdown (in the background task queue).
    pub(crate) async fn aae_loop(self: Rc<Self>) {
        if self.config.aae_interval_ms == 0 {
            return;
        }
        let mut budget = Budget::new(
            self.config.aae_keys_per_second,
            self.config.aae_bytes_per_second,
        );
        let mut seen_version = u64::MAX;
        let mut published = Instant::now() - PUBLISH_EVERY;
        while !self.shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(TICK).await;
            let topology = self.topology();
            if topology.version != seen_version {
                seen_version = topology.version;
                let partitions = self.aae_partitions(&topology);
                self.aae.borrow_mut().set_partitions(partitions);
            }
            self.repair_corrupt().await;
            let now = self.now_ms();
            let due = self.aae.borrow().poll_timeout() <= now;
            if due {
                self.aae.borrow_mut().handle_timeout(now);
            }
            self.aae_drain(&topology, &mut budget).await;
            if published.elapsed() >= PUBLISH_EVERY {
                published = Instant::now();
                let (partitions, stats) = {
                    let aae = self.aae.borrow();
                    (aae.status(self.now_ms()), aae.stats().clone())
                };
                self.node.aae_board.publish(
                    self.index,
                    ShardAae {
                        at: published,
                        partitions,
                        stats,
                    },
                );
            }
        }
    }

    /// Damaged data records (the store's checksum failed): a record the
    /// store can no longer read is removed, when no replica operation holds
    /// the key (one that starts meanwhile fails its read, so none can be
    /// overtaken), and every damaged key is asked from the other primaries.
    async fn repair_corrupt(self: &Rc<Self>) {
        for (namespace, partition, key) in self.store.corrupt_keys() {
            if namespace != Namespace::Data || self.replica.borrow().key_busy(namespace, &key) {
                continue;
            }
            let unreadable = matches!(
                self.store.get(namespace, partition, &key).await,
                Err(StorageError::Corrupt { .. })
            );
            if unreadable && !self.replica.borrow().key_busy(namespace, &key) {
                let io = IoRequest::Delete {
                    io: 0,
                    namespace,
                    partition,
                    key: key.clone(),
                };
                let _ = perform_io_observed(&self.store, &self.aae, || self.now_ms(), io).await;
            }
            let now = self.now_ms();
            self.aae
                .borrow_mut()
                .handle_corrupt_key(now, partition, key);
        }
    }

    /// Drains the machine: local actions to the replica machine, messages to
    /// the links, scans on the store; until it has nothing left.
    async fn aae_drain(self: &Rc<Self>, topology: &Topology, budget: &mut Budget) {
        loop {
            let (ios, transmits, actions) = {
                let mut aae = self.aae.borrow_mut();
                let ios: Vec<ScanRequest> = std::iter::from_fn(|| aae.poll_io()).collect();
                let transmits: Vec<(NodeId, AaeMessage)> =
                    std::iter::from_fn(|| aae.poll_transmit()).collect();
                let actions: Vec<LocalAction> = std::iter::from_fn(|| aae.poll_action()).collect();
                (ios, transmits, actions)
            };
            if ios.is_empty() && transmits.is_empty() && actions.is_empty() {
                return;
            }
            if !actions.is_empty() {
                let count = actions.len() as u64;
                {
                    let mut replica = self.replica.borrow_mut();
                    for action in actions {
                        action.start_on(&mut replica);
                    }
                }
                self.pump();
                budget.spend(count, 0).await;
            }
            for (to, message) in transmits {
                let bytes = self.send_aae(topology, to, &message);
                self.aae.borrow_mut().record_bytes_sent(bytes as u64);
                budget.spend(0, bytes as u64).await;
            }
            for request in ios {
                let result = self.aae_scan(&request, budget).await;
                let now = self.now_ms();
                self.aae
                    .borrow_mut()
                    .handle_scan_done(now, request.io, result);
            }
        }
    }

    async fn aae_scan(
        &self,
        request: &ScanRequest,
        budget: &mut Budget,
    ) -> Result<Vec<Scanned>, String> {
        let keys: Vec<Bytes> = scan_keys(&self.store, request.partition, &request.filter);
        let mut out = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let scanned = scan_one(&self.store, request.partition, key, request.payloads)
                .await
                .map_err(|e| e.to_string())?;
            let bytes = scanned
                .as_ref()
                .and_then(|s| s.payload.as_ref())
                .map_or(0, |p| p.len());
            out.extend(scanned);
            budget.spend(1, bytes as u64).await;
            if i % KEYS_PER_YIELD == KEYS_PER_YIELD - 1 {
                glommio::yield_if_needed().await;
            }
        }
        Ok(out)
    }

    /// Sends to the shard of `to` that holds the message's partition;
    /// returns the bytes queued (0 when no address is known yet: as if the
    /// network lost it, the exchange times out).
    fn send_aae(&self, topology: &Topology, to: NodeId, message: &AaeMessage) -> usize {
        let partition = message.partition();
        let shards = topology.book.get(&to).map_or(1, |e| e.shards);
        let to_shard = topology
            .shard_on(to, partition)
            .unwrap_or((partition % u32::from(shards.max(1))) as u16);
        let Some(addr) = topology.internode_addr(to, to_shard) else {
            return 0;
        };
        let envelope = Envelope {
            kind: KIND_AAE,
            from_node: self.node.cluster.me.0,
            from_shard: self.index as u16,
            to_shard,
        };
        let mut bytes = 0;
        self.links.send(addr, envelope, |out| {
            let start = out.len();
            message.encode(out);
            bytes = out.len() - start;
        });
        bytes
    }
}

/// One node-wide counter of `admin aae`: its JSON field, the text around
/// its value in the text summary line, and where it is read from.
struct AaeTotal {
    json: &'static str,
    text_before: &'static str,
    text_after: &'static str,
    read: fn(&AaeStats) -> u64,
}

/// The counters `admin aae` sums over shards, in output order. Both the JSON
/// fields and the text line are rendered from this one list, so they cannot
/// disagree on what is shown.
const AAE_TOTALS: [AaeTotal; 10] = [
    AaeTotal {
        json: "exchanges_started",
        text_before: "exchanges: ",
        text_after: " started",
        read: |s| s.exchanges_started,
    },
    AaeTotal {
        json: "exchanges_in_sync",
        text_before: ", ",
        text_after: " in sync",
        read: |s| s.exchanges_in_sync,
    },
    AaeTotal {
        json: "exchanges_repaired",
        text_before: ", ",
        text_after: " repaired",
        read: |s| s.exchanges_repaired,
    },
    AaeTotal {
        json: "exchanges_timed_out",
        text_before: ", ",
        text_after: " timed out",
        read: |s| s.exchanges_timed_out,
    },
    AaeTotal {
        json: "keys_sent",
        text_before: "; keys sent ",
        text_after: "",
        read: |s| s.keys_sent,
    },
    AaeTotal {
        json: "keys_received",
        text_before: ", received ",
        text_after: "",
        read: |s| s.keys_received,
    },
    AaeTotal {
        json: "bytes_sent",
        text_before: "; ",
        text_after: " bytes sent",
        read: |s| s.bytes_sent,
    },
    AaeTotal {
        json: "trees_built",
        text_before: "; ",
        text_after: " trees built",
        read: |s| s.trees_built,
    },
    AaeTotal {
        json: "tombstones_purged",
        text_before: "; ",
        text_after: " tombstones purged",
        read: |s| s.tombstones_purged,
    },
    AaeTotal {
        json: "corrupt_keys_requested",
        text_before: "; ",
        text_after: " damaged keys asked for",
        read: |s| s.corrupt_keys_requested,
    },
];

/// `dynakv admin aae [--json]`: per partition held by each shard of this
/// node, each other primary, when they last compared, keys repaired, and
/// whether they were in sync; then the counters.
pub(crate) fn aae_text(node: &NodeInfo, json: bool) -> String {
    let shards: Vec<Option<ShardAae>> = node
        .aae_board
        .shards
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let stats: Vec<&AaeStats> = shards.iter().flatten().map(|s| &s.stats).collect();
    let totals = aae_totals(&stats);
    let mut rows = Vec::new();
    for (shard, status) in shards.iter().enumerate() {
        let Some(status) = status else { continue };
        let age_ms = status.at.elapsed().as_millis() as u64;
        for partition in &status.partitions {
            rows.push((shard, age_ms, partition.clone()));
        }
    }
    let mut out = String::new();
    if json {
        out.push_str("{\"partitions\": [");
        for (i, (shard, age_ms, p)) in rows.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"partition\": {}, \"shard\": {}, \"ready\": {}, \"tombstones\": {}, \"peers\": [",
                if i == 0 { "" } else { ", " },
                p.partition,
                shard,
                p.ready,
                p.tombstones
            );
            for (j, peer) in p.peers.iter().enumerate() {
                let ago = peer
                    .last_compared_ms_ago
                    .map_or("null".to_string(), |ms| (ms + age_ms).to_string());
                let _ = write!(
                    out,
                    "{}{{\"peer\": \"{:016x}\", \"last_compared_ms_ago\": {}, \"in_sync\": {}, \"keys_repaired\": {}}}",
                    if j == 0 { "" } else { ", " },
                    peer.peer.0,
                    ago,
                    peer.in_sync,
                    peer.keys_repaired
                );
            }
            out.push_str("]}");
        }
        out.push(']');
        write_aae_totals(&mut out, &totals, true);
        out.push('}');
        return out;
    }
    let _ = writeln!(
        out,
        "partition shard ready tombstones  peer              compared      in-sync repaired"
    );
    for (shard, age_ms, p) in &rows {
        for peer in &p.peers {
            let compared = peer
                .last_compared_ms_ago
                .map_or("never".to_string(), |ms| format!("{} ms ago", ms + age_ms));
            let _ = writeln!(
                out,
                "{:>9} {:>5} {:>5} {:>10}  {:016x}  {:>12}  {:>7} {:>8}",
                p.partition,
                shard,
                if p.ready { "yes" } else { "no" },
                p.tombstones,
                peer.peer.0,
                compared,
                if peer.in_sync { "yes" } else { "no" },
                peer.keys_repaired
            );
        }
    }
    write_aae_totals(&mut out, &totals, false);
    out.push('\n');
    out
}

/// Each of `AAE_TOTALS` summed over the shards' counters.
fn aae_totals(shards: &[&AaeStats]) -> [u64; AAE_TOTALS.len()] {
    std::array::from_fn(|i| shards.iter().map(|s| (AAE_TOTALS[i].read)(s)).sum())
}

/// Appends the totals: as JSON fields (`, "name": value` each, inside the
/// caller's object) or as the text summary line (without its newline).
fn write_aae_totals(out: &mut String, totals: &[u64; AAE_TOTALS.len()], json: bool) {
    for (total, value) in AAE_TOTALS.iter().zip(totals) {
        let _ = if json {
            write!(out, ", \"{}\": {value}", total.json)
        } else {
            write!(out, "{}{value}{}", total.text_before, total.text_after)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct counters on two shards: every field is summed, and the JSON
    /// fields and the text line show the same numbers, in the shapes
    /// operators' scripts read (docs/anti-entropy.md).
    #[test]
    fn admin_aae_totals_render_the_same_sums_as_json_and_text() {
        let shard = |base: u64| AaeStats {
            exchanges_started: base + 1,
            exchanges_in_sync: base + 2,
            exchanges_repaired: base + 3,
            exchanges_timed_out: base + 4,
            keys_sent: base + 5,
            keys_received: base + 6,
            bytes_sent: base + 7,
            trees_built: base + 8,
            leaves_rehashed: 1_000,
            leaves_corrected: 1_000,
            tombstones_purged: base + 9,
            corrupt_keys_requested: base + 10,
        };
        let (a, b) = (shard(0), shard(100));
        let totals = aae_totals(&[&a, &b]);
        assert_eq!(totals, [102, 104, 106, 108, 110, 112, 114, 116, 118, 120]);

        let mut text = String::new();
        write_aae_totals(&mut text, &totals, false);
        assert_eq!(
            text,
            "exchanges: 102 started, 104 in sync, 106 repaired, 108 timed out; keys sent 110, received 112; 114 bytes sent; 116 trees built; 118 tombstones purged; 120 damaged keys asked for"
        );

        let mut json = String::from("{\"partitions\": []");
        write_aae_totals(&mut json, &totals, true);
        json.push('}');
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let fields = [
            ("exchanges_started", 102),
            ("exchanges_in_sync", 104),
            ("exchanges_repaired", 106),
            ("exchanges_timed_out", 108),
            ("keys_sent", 110),
            ("keys_received", 112),
            ("bytes_sent", 114),
            ("trees_built", 116),
            ("tombstones_purged", 118),
            ("corrupt_keys_requested", 120),
        ];
        for (name, value) in fields {
            assert_eq!(parsed[name].as_u64(), Some(value), "{name} in {json}");
        }
        assert_eq!(parsed.as_object().expect("object").len(), fields.len() + 1);
    }
}
