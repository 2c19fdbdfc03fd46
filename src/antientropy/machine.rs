//! `AntiEntropy`: one shard's Merkle trees and exchanges (sans-IO).
//!
//! Inputs: `set_partitions`, `write_started` / `write_finished` (every data
//! write, purge or merge on the shard's store), `handle_message`,
//! `handle_scan_done`, `handle_corrupt_key`, `handle_timeout`, all given the
//! time `now_ms`. Outputs: `poll_transmit` (messages to peers), `poll_io`
//! (store scans), `poll_action` (merges and purges to run through the
//! `Replica` machine's per-key lock), `poll_timeout`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::message::{AaeMessage, KeyVersion, RepairEntry};
use super::tree::{RehashOutcome, Tree};
use super::{
    entry_hash, key_leaf, AaeStats, Entry, PartitionStatus, PeerStatus, ScanFilter, Scanned,
    BRANCHES, KEYS_PER_MESSAGE_MAX, LEAVES, LEAVES_PER_BRANCH, REPAIR_MESSAGE_BYTES_TARGET,
    RESPONDERS_MAX, TOMBSTONES_TRACKED_MAX,
};
use crate::membership::NodeId;
use crate::ring::PartitionMap;
use crate::version::SiblingSet;

/// Timing and bounds of one shard's anti-entropy.
#[derive(Clone, Debug)]
pub struct AaeConfig {
    /// One exchange is started per interval (the rate limit of §6.5 work:
    /// at most `KEYS_PER_MESSAGE_MAX` keys compared and repaired each).
    pub exchange_interval_ms: u64,
    /// An exchange not finished by then is abandoned.
    pub exchange_timeout_ms: u64,
    /// A tombstone is collected no sooner than this after it was written,
    /// and only once every other primary is known to hold it.
    pub tombstone_grace_ms: u64,
}

impl Default for AaeConfig {
    fn default() -> Self {
        AaeConfig {
            exchange_interval_ms: 1_000,
            exchange_timeout_ms: 30_000,
            tombstone_grace_ms: 60_000,
        }
    }
}

/// A store scan for the driver: list the data keys of `partition` that
/// pass `filter`, read each, and answer `handle_scan_done(io, ..)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    pub io: u64,
    pub partition: u32,
    pub filter: ScanFilter,
    /// Whether the answer must carry each key's stored payload.
    pub payloads: bool,
}

/// Local work for the driver to hand to the `Replica` machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAction {
    /// `Replica::start_merge`: a peer's version, merged (never overwritten).
    Merge {
        partition: u32,
        key: Bytes,
        siblings: SiblingSet,
    },
    /// `Replica::start_purge`: a tombstone every primary holds.
    Purge {
        partition: u32,
        key: Bytes,
        expected: SiblingSet,
    },
}

impl LocalAction {
    /// Hands the action to the replica machine, which runs it under the
    /// key's lock (the runtime's driver and the simulator both call this).
    pub fn start_on(self, replica: &mut crate::replica::Replica) {
        match self {
            LocalAction::Merge {
                partition,
                key,
                siblings,
            } => replica.start_merge(partition, key, siblings),
            LocalAction::Purge {
                partition,
                key,
                expected,
            } => replica.start_purge(partition, key, expected),
        }
    }
}

/// What one replica knows about its comparisons with one other primary.
#[derive(Clone, Debug)]
struct PeerSync {
    /// Per leaf, the latest local time at which this replica's leaf was
    /// found equal to the peer's (0: never). The tombstone rule reads it.
    leaf_synced_ms: Vec<u64>,
    last_compared_ms: Option<u64>,
    /// When this replica last started an exchange with the peer: the next
    /// exchange goes to the peer tried longest ago, so a peer that is down
    /// does not starve comparisons with the others.
    last_attempt_ms: u64,
    in_sync: bool,
    keys_repaired: u64,
}

impl PeerSync {
    fn new() -> Self {
        PeerSync {
            leaf_synced_ms: vec![0; LEAVES],
            last_compared_ms: None,
            last_attempt_ms: 0,
            in_sync: false,
            keys_repaired: 0,
        }
    }

    fn mark(&mut self, leaves: impl IntoIterator<Item = usize>, at_ms: u64) {
        for leaf in leaves {
            let slot = &mut self.leaf_synced_ms[leaf];
            *slot = (*slot).max(at_ms);
        }
    }
}

#[derive(Clone, Debug)]
struct PartitionState {
    tree: Tree,
    /// The other primaries of the partition.
    peers: Vec<NodeId>,
    sync: BTreeMap<NodeId, PeerSync>,
    /// Keys whose stored set is all tombstones, with the local time of the
    /// write that made them so.
    tombstones: BTreeMap<Bytes, u64>,
    rehash_in_flight: bool,
}

#[derive(Clone, Debug)]
enum InitiatedStage {
    AwaitTree,
    Scanning,
    AwaitWant,
}

#[derive(Clone, Debug)]
struct Initiated {
    partition: u32,
    peer: NodeId,
    started_ms: u64,
    deadline_ms: u64,
    stage: InitiatedStage,
    /// Whether the leaves compared equal after all (no key exchanged).
    equal: bool,
}

#[derive(Clone, Debug)]
struct Responding {
    partition: u32,
    received_ms: u64,
    sent_branches: Vec<u8>,
    deadline_ms: u64,
}

#[derive(Clone, Debug)]
enum ScanPurpose {
    Rehash {
        generations: Vec<(u16, u32)>,
        full: bool,
    },
    ExchangeKeys {
        xid: u64,
        generations: Vec<(u16, u32)>,
    },
    RespondKeys {
        from: NodeId,
        xid: u64,
        generations: Vec<(u16, u32)>,
        theirs: Vec<KeyVersion>,
    },
    AnswerWant {
        to: NodeId,
        xid: u64,
    },
    PurgeCheck,
}

/// One shard's anti-entropy machine.
pub struct AntiEntropy {
    me: NodeId,
    config: AaeConfig,
    /// Looked up on every data write (`settle`): indexed, not searched.
    partitions: PartitionMap<PartitionState>,
    initiated: BTreeMap<u64, Initiated>,
    responding: BTreeMap<(NodeId, u64), Responding>,
    scans: BTreeMap<u64, (u32, ScanPurpose)>,
    /// Damaged keys asked from the other primaries, with the time asked.
    corrupt_asked: BTreeMap<(u32, Bytes), u64>,
    next_id: u64,
    next_exchange_ms: u64,
    next_purge_check_ms: u64,
    purge_check_in_flight: bool,
    /// Round robin over the ready partitions: the next exchange compares
    /// the one at this position (modulo their number).
    cursor: usize,
    transmits: VecDeque<(NodeId, AaeMessage)>,
    ios: VecDeque<ScanRequest>,
    actions: VecDeque<LocalAction>,
    stats: AaeStats,
}

/// Rehash scans in flight at once (after a restart every partition needs one).
const REHASH_SCANS_MAX: usize = 2;
/// Tombstones checked for collection per round.
const PURGE_BATCH_MAX: usize = 256;

impl AntiEntropy {
    /// `xid_base` separates exchange ids of different incarnations (the
    /// runtime passes its request-id base), so a late answer from a previous
    /// life never matches.
    pub fn new(me: NodeId, config: AaeConfig, now_ms: u64, xid_base: u64) -> Self {
        assert!(config.exchange_interval_ms > 0 && config.exchange_timeout_ms > 0);
        AntiEntropy {
            me,
            partitions: PartitionMap::new(),
            initiated: BTreeMap::new(),
            responding: BTreeMap::new(),
            scans: BTreeMap::new(),
            corrupt_asked: BTreeMap::new(),
            next_id: xid_base.max(1),
            next_exchange_ms: now_ms + config.exchange_interval_ms,
            next_purge_check_ms: now_ms + config.exchange_interval_ms,
            purge_check_in_flight: false,
            // Replicas start their round robin at different partitions, so
            // two of them do not both compare the same partition at once.
            cursor: (me.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize,
            config,
            transmits: VecDeque::new(),
            ios: VecDeque::new(),
            actions: VecDeque::new(),
            stats: AaeStats::default(),
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn stats(&self) -> &AaeStats {
        &self.stats
    }

    /// The driver reports bytes it sent for this machine.
    pub fn record_bytes_sent(&mut self, bytes: u64) {
        self.stats.bytes_sent += bytes;
    }

    /// Whether `partition` is tracked and its tree is ready.
    pub fn is_ready(&self, partition: u32) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|state| state.tree.is_ready())
    }

    /// The root hash of a tracked partition's tree (tests, tools).
    pub fn root(&self, partition: u32) -> Option<u64> {
        self.partitions
            .get(partition)
            .map(|state| state.tree.root())
    }

    /// Tombstones waiting for collection.
    pub fn tombstones_tracked(&self) -> usize {
        self.partitions
            .values()
            .map(|state| state.tombstones.len())
            .sum()
    }

    /// Whether any exchange, scan or output is in progress.
    pub fn is_idle(&self) -> bool {
        self.initiated.is_empty()
            && self.responding.is_empty()
            && self.scans.is_empty()
            && self.transmits.is_empty()
            && self.ios.is_empty()
            && self.actions.is_empty()
    }

    /// Per partition: readiness and, per other primary, the last comparison.
    pub fn status(&self, now_ms: u64) -> Vec<PartitionStatus> {
        self.partitions
            .iter()
            .map(|(partition, state)| PartitionStatus {
                partition,
                ready: state.tree.is_ready(),
                tombstones: state.tombstones.len(),
                peers: state
                    .peers
                    .iter()
                    .map(|peer| {
                        let sync = state.sync.get(peer);
                        PeerStatus {
                            peer: *peer,
                            last_compared_ms_ago: sync
                                .and_then(|s| s.last_compared_ms)
                                .map(|at| now_ms.saturating_sub(at)),
                            in_sync: sync.is_some_and(|s| s.in_sync),
                            keys_repaired: sync.map_or(0, |s| s.keys_repaired),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// The partitions this shard is a primary for, each with its other
    /// primaries. New partitions get a tree built from the store; dropped
    /// ones are forgotten.
    pub fn set_partitions(&mut self, partitions: Vec<(u32, Vec<NodeId>)>) {
        let wanted: BTreeMap<u32, Vec<NodeId>> = partitions.into_iter().collect();
        self.partitions
            .retain(|partition, _| wanted.contains_key(&partition));
        for (partition, mut peers) in wanted {
            peers.retain(|peer| *peer != self.me);
            let state = self
                .partitions
                .get_or_insert_with(partition, || PartitionState {
                    tree: Tree::new(),
                    peers: Vec::new(),
                    sync: BTreeMap::new(),
                    tombstones: BTreeMap::new(),
                    rehash_in_flight: false,
                });
            state.sync.retain(|peer, _| peers.contains(peer));
            for peer in &peers {
                state.sync.entry(*peer).or_insert_with(PeerSync::new);
            }
            state.peers = peers;
        }
    }

    /// The store reported damage: every tree must be rebuilt.
    pub fn invalidate_all(&mut self) {
        for state in self.partitions.values_mut() {
            state.tree.invalidate();
        }
    }

    /// A data write (merge, coordinator put or purge) of `key` is about to
    /// reach the store.
    pub fn write_started(&mut self, partition: u32, key: &[u8]) {
        self.write_started_at(partition, key_leaf(key));
    }

    /// Asks the CPU to bring `partition`'s state (where its tree's leaves
    /// are) into its caches, so that a `prefetch_leaf` issued a little
    /// later does not wait for it (`ShardState::prefetch`). Changes nothing.
    pub fn prefetch_partition(&self, partition: u32) {
        if let Some(state) = self.partitions.get(partition) {
            state.tree.prefetch_header();
        }
    }

    /// Asks the CPU to bring the tree leaf a write to `partition`'s `leaf`
    /// updates into its caches (`ShardState::prefetch`). Changes nothing.
    pub fn prefetch_leaf(&self, partition: u32, leaf: u16) {
        if let Some(state) = self.partitions.get(partition) {
            state.tree.prefetch_leaf(leaf);
        }
    }

    /// `write_started` for a key whose leaf (`key_leaf`) the caller has,
    /// so that a write hashes its key once for both calls.
    pub fn write_started_at(&mut self, partition: u32, leaf: u16) {
        if let Some(state) = self.partitions.get_mut(partition) {
            state.tree.write_started(leaf);
        }
    }

    /// The write finished. `old` is the entry before (`None`: unknown, e.g.
    /// the read failed); `new` the entry after (`Ok(None)`: the key is gone;
    /// `Err(())`: the write failed and the store's state is unknown).
    pub fn write_finished(
        &mut self,
        now_ms: u64,
        partition: u32,
        key: &[u8],
        old: Option<Option<Entry>>,
        new: Result<Option<Entry>, ()>,
    ) {
        self.write_finished_at(now_ms, partition, key_leaf(key), key, old, new);
    }

    /// `write_finished` for a key whose leaf (`key_leaf(key)`) the caller has.
    pub fn write_finished_at(
        &mut self,
        now_ms: u64,
        partition: u32,
        leaf: u16,
        key: &[u8],
        old: Option<Option<Entry>>,
        new: Result<Option<Entry>, ()>,
    ) {
        self.settle(false, || now_ms, partition, leaf, key, old, new);
    }

    /// `write_started_at` and `write_finished_at` of a write that finished
    /// without waiting, with one look-up of the partition; `now_ms` is
    /// asked only when a tombstone's time is kept.
    pub fn write_done_at(
        &mut self,
        now_ms: impl FnOnce() -> u64,
        partition: u32,
        leaf: u16,
        key: &[u8],
        old: Option<Option<Entry>>,
        new: Result<Option<Entry>, ()>,
    ) {
        self.settle(true, now_ms, partition, leaf, key, old, new);
    }

    /// `write_finished_at` (the write was started), or with `start` also
    /// `write_started_at` first: one look-up of the partition either way.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        start: bool,
        now_ms: impl FnOnce() -> u64,
        partition: u32,
        leaf: u16,
        key: &[u8],
        old: Option<Option<Entry>>,
        new: Result<Option<Entry>, ()>,
    ) {
        debug_assert_eq!(leaf, key_leaf(key));
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        if start {
            state.tree.write_started(leaf);
        }
        write_finished_in(state, now_ms, leaf, key, old, new);
    }

    /// The store holds a damaged record of `key`: ask every other primary
    /// for its version (answered with `Repair`, merged like any repair),
    /// at most once per exchange interval per key.
    pub fn handle_corrupt_key(&mut self, now_ms: u64, partition: u32, key: Bytes) {
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        let asked = (partition, key.clone());
        if let Some(at) = self.corrupt_asked.get(&asked) {
            if now_ms < at + self.config.exchange_interval_ms {
                return;
            }
        }
        self.corrupt_asked.insert(asked, now_ms);
        state.tree.invalidate_leaf(key_leaf(&key));
        self.stats.corrupt_keys_requested += 1;
        for peer in state.peers.clone() {
            self.transmits.push_back((
                peer,
                AaeMessage::Want {
                    xid: 0,
                    partition,
                    keys: vec![key.clone()],
                },
            ));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, AaeMessage)> {
        self.transmits.pop_front()
    }

    pub fn poll_io(&mut self) -> Option<ScanRequest> {
        self.ios.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<LocalAction> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` is next due.
    pub fn poll_timeout(&self) -> u64 {
        let mut due = self.next_exchange_ms.min(self.next_purge_check_ms);
        for initiated in self.initiated.values() {
            due = due.min(initiated.deadline_ms);
        }
        for responding in self.responding.values() {
            due = due.min(responding.deadline_ms);
        }
        let rehash_pending = self
            .partitions
            .values()
            .any(|state| !state.tree.is_ready() && !state.rehash_in_flight);
        if rehash_pending {
            due = 0;
        }
        due
    }

    fn scan(&mut self, partition: u32, filter: ScanFilter, payloads: bool, purpose: ScanPurpose) {
        let io = self.fresh_id();
        self.scans.insert(io, (partition, purpose));
        self.ios.push_back(ScanRequest {
            io,
            partition,
            filter,
            payloads,
        });
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        // Abandon exchanges past their deadline.
        let expired: Vec<u64> = self
            .initiated
            .iter()
            .filter(|(_, e)| e.deadline_ms <= now_ms)
            .map(|(xid, _)| *xid)
            .collect();
        for xid in expired {
            self.initiated.remove(&xid);
            self.stats.exchanges_timed_out += 1;
        }
        self.responding.retain(|_, r| r.deadline_ms > now_ms);

        // Rebuild stale leaves from the store.
        let in_flight = self
            .partitions
            .values()
            .filter(|state| state.rehash_in_flight)
            .count();
        let mut budget = REHASH_SCANS_MAX.saturating_sub(in_flight);
        let stale: Vec<u32> = self
            .partitions
            .iter()
            .filter(|(_, state)| !state.tree.is_ready() && !state.rehash_in_flight)
            .map(|(partition, _)| partition)
            .take(budget)
            .collect();
        for partition in stale {
            budget -= 1;
            let state = self.partitions.get_mut(partition).expect("listed");
            state.rehash_in_flight = true;
            let leaves: Vec<u16> = state.tree.stale_leaves().iter().copied().collect();
            let full = leaves.len() == LEAVES;
            let generations = leaves
                .iter()
                .map(|leaf| (*leaf, state.tree.generation(*leaf)))
                .collect();
            let filter = if full {
                ScanFilter::All
            } else {
                ScanFilter::Leaves(leaves)
            };
            self.scan(
                partition,
                filter,
                false,
                ScanPurpose::Rehash { generations, full },
            );
        }
        let _ = budget;

        if now_ms >= self.next_exchange_ms {
            self.next_exchange_ms = now_ms + self.config.exchange_interval_ms;
            if self.initiated.is_empty() {
                self.start_exchange(now_ms);
            }
        }
        if now_ms >= self.next_purge_check_ms {
            self.next_purge_check_ms = now_ms + self.config.exchange_interval_ms;
            if !self.purge_check_in_flight {
                self.start_purge_checks(now_ms);
            }
        }
    }

    fn start_exchange(&mut self, now_ms: u64) {
        // Round robin over ready partitions with peers; with the peer
        // compared longest ago.
        let candidates: Vec<u32> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.tree.is_ready() && !state.peers.is_empty())
            .map(|(partition, _)| partition)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let partition = candidates[self.cursor % candidates.len()];
        self.cursor = self.cursor.wrapping_add(1);
        let state = self.partitions.get_mut(partition).expect("candidate");
        let peer = *state
            .peers
            .iter()
            .min_by_key(|peer| state.sync[*peer].last_attempt_ms)
            .expect("peers not empty");
        if let Some(sync) = state.sync.get_mut(&peer) {
            sync.last_attempt_ms = now_ms;
        }
        let xid = self.fresh_id();
        let state = self.partitions.get(partition).expect("candidate");
        let message = AaeMessage::Root {
            xid,
            partition,
            root: state.tree.root(),
            branches: state.tree.branches().to_vec(),
        };
        self.initiated.insert(
            xid,
            Initiated {
                partition,
                peer,
                started_ms: now_ms,
                deadline_ms: now_ms + self.config.exchange_timeout_ms,
                stage: InitiatedStage::AwaitTree,
                equal: false,
            },
        );
        self.stats.exchanges_started += 1;
        self.transmits.push_back((peer, message));
    }

    /// Tombstones past the grace period whose leaf every other primary was
    /// found equal on since they were written are re-read and, if still
    /// tombstones, purged through the replica's per-key lock.
    fn start_purge_checks(&mut self, now_ms: u64) {
        let grace = self.config.tombstone_grace_ms;
        let mut batch: BTreeMap<u32, Vec<Bytes>> = BTreeMap::new();
        let mut count = 0;
        for (partition, state) in self.partitions.iter_mut() {
            if count >= PURGE_BATCH_MAX {
                break;
            }
            for (key, written_ms) in state.tombstones.iter_mut() {
                if count >= PURGE_BATCH_MAX {
                    break;
                }
                if written_ms.saturating_add(grace) > now_ms {
                    continue;
                }
                let leaf = key_leaf(key) as usize;
                let everywhere = state.peers.iter().all(|peer| {
                    state
                        .sync
                        .get(peer)
                        .is_some_and(|s| s.leaf_synced_ms[leaf] > *written_ms)
                });
                if everywhere {
                    // Re-armed: if the purge does not happen (the key
                    // changed, or the queue was full), the rule applies
                    // afresh.
                    *written_ms = now_ms;
                    batch.entry(partition).or_default().push(key.clone());
                    count += 1;
                }
            }
        }
        for (partition, keys) in batch {
            self.purge_check_in_flight = true;
            self.scan(
                partition,
                ScanFilter::Keys(keys),
                true,
                ScanPurpose::PurgeCheck,
            );
        }
    }

    pub fn handle_message(&mut self, now_ms: u64, from: NodeId, message: AaeMessage) {
        let partition = message.partition();
        let Some(state) = self.partitions.get_mut(partition) else {
            return; // not a primary here (any more)
        };
        if !state.peers.contains(&from) {
            return; // only primaries of the partition compare
        }
        match message {
            AaeMessage::Root {
                xid,
                root,
                branches,
                ..
            } => {
                if !state.tree.is_ready() || self.responding.len() >= RESPONDERS_MAX {
                    return; // the initiator times out and tries later
                }
                let sync = state.sync.get_mut(&from).expect("peer has sync");
                let differing: Vec<u8> = (0..BRANCHES)
                    .filter(|b| state.tree.branches()[*b] != branches[*b])
                    .map(|b| b as u8)
                    .collect();
                let equal_leaves = (0..BRANCHES)
                    .filter(|b| !differing.contains(&(*b as u8)))
                    .flat_map(|b| b * LEAVES_PER_BRANCH..(b + 1) * LEAVES_PER_BRANCH);
                sync.mark(equal_leaves, now_ms);
                if differing.is_empty() && root == state.tree.root() {
                    sync.last_compared_ms = Some(now_ms);
                    sync.in_sync = true;
                    self.stats.exchanges_in_sync += 1;
                    self.transmits
                        .push_back((from, AaeMessage::InSync { xid, partition }));
                    return;
                }
                let leaves = differing
                    .iter()
                    .map(|b| (*b, state.tree.branch_leaves(*b as usize).collect()))
                    .collect();
                self.responding.insert(
                    (from, xid),
                    Responding {
                        partition,
                        received_ms: now_ms,
                        sent_branches: differing,
                        deadline_ms: now_ms + self.config.exchange_timeout_ms,
                    },
                );
                self.transmits.push_back((
                    from,
                    AaeMessage::Leaves {
                        xid,
                        partition,
                        branches: leaves,
                    },
                ));
            }
            AaeMessage::InSync { xid, .. } => {
                let Some(exchange) = self.initiated.get(&xid) else {
                    return;
                };
                if exchange.peer != from
                    || exchange.partition != partition
                    || !matches!(exchange.stage, InitiatedStage::AwaitTree)
                {
                    return;
                }
                let started_ms = exchange.started_ms;
                self.initiated.remove(&xid);
                let sync = state.sync.get_mut(&from).expect("peer has sync");
                sync.mark(0..LEAVES, started_ms);
                sync.last_compared_ms = Some(now_ms);
                sync.in_sync = true;
                self.stats.exchanges_in_sync += 1;
            }
            AaeMessage::Leaves { xid, branches, .. } => {
                let Some(exchange) = self.initiated.get_mut(&xid) else {
                    return;
                };
                if exchange.peer != from
                    || exchange.partition != partition
                    || !matches!(exchange.stage, InitiatedStage::AwaitTree)
                {
                    return;
                }
                let sync = state.sync.get_mut(&from).expect("peer has sync");
                let listed: BTreeSet<usize> = branches.iter().map(|(b, _)| *b as usize).collect();
                let unlisted = (0..BRANCHES)
                    .filter(|b| !listed.contains(b))
                    .flat_map(|b| b * LEAVES_PER_BRANCH..(b + 1) * LEAVES_PER_BRANCH);
                sync.mark(unlisted, exchange.started_ms);
                let mut differing = Vec::new();
                for (branch, theirs) in &branches {
                    for (offset, hash) in theirs.iter().enumerate() {
                        let leaf = *branch as usize * LEAVES_PER_BRANCH + offset;
                        if state.tree.leaf(leaf as u16) == *hash {
                            sync.mark([leaf], now_ms);
                        } else {
                            differing.push(leaf as u16);
                        }
                    }
                }
                if differing.is_empty() {
                    exchange.stage = InitiatedStage::AwaitWant;
                    exchange.equal = true;
                    self.transmits.push_back((
                        from,
                        AaeMessage::Keys {
                            xid,
                            partition,
                            leaves: Vec::new(),
                            keys: Vec::new(),
                        },
                    ));
                    return;
                }
                exchange.stage = InitiatedStage::Scanning;
                let generations = differing
                    .iter()
                    .map(|leaf| (*leaf, state.tree.generation(*leaf)))
                    .collect();
                self.scan(
                    partition,
                    ScanFilter::Leaves(differing),
                    false,
                    ScanPurpose::ExchangeKeys { xid, generations },
                );
            }
            AaeMessage::Keys {
                xid, leaves, keys, ..
            } => {
                let Some(responding) = self
                    .responding
                    .get(&(from, xid))
                    .filter(|r| r.partition == partition)
                else {
                    return;
                };
                let sync = state.sync.get_mut(&from).expect("peer has sync");
                let differing: BTreeSet<u16> = leaves.iter().copied().collect();
                let equal = responding
                    .sent_branches
                    .iter()
                    .flat_map(|b| {
                        let b = *b as usize;
                        b * LEAVES_PER_BRANCH..(b + 1) * LEAVES_PER_BRANCH
                    })
                    .filter(|leaf| !differing.contains(&(*leaf as u16)));
                sync.mark(equal, responding.received_ms);
                if leaves.is_empty() {
                    self.responding.remove(&(from, xid));
                    sync.last_compared_ms = Some(now_ms);
                    sync.in_sync = true;
                    self.stats.exchanges_in_sync += 1;
                    self.transmits.push_back((
                        from,
                        AaeMessage::Want {
                            xid,
                            partition,
                            keys: Vec::new(),
                        },
                    ));
                    return;
                }
                let generations = leaves
                    .iter()
                    .map(|leaf| (*leaf, state.tree.generation(*leaf)))
                    .collect();
                self.scan(
                    partition,
                    ScanFilter::Leaves(leaves),
                    true,
                    ScanPurpose::RespondKeys {
                        from,
                        xid,
                        generations,
                        theirs: keys,
                    },
                );
            }
            AaeMessage::Want { xid, keys, .. } => {
                if let Some(exchange) = self.initiated.get(&xid) {
                    if exchange.peer == from && exchange.partition == partition {
                        let exchange = self.initiated.remove(&xid).expect("present");
                        let sync = state.sync.get_mut(&from).expect("peer has sync");
                        sync.last_compared_ms = Some(now_ms);
                        sync.in_sync = exchange.equal;
                        sync.keys_repaired += keys.len() as u64;
                        if sync.in_sync {
                            self.stats.exchanges_in_sync += 1;
                        } else {
                            self.stats.exchanges_repaired += 1;
                        }
                    }
                }
                if keys.is_empty() {
                    return;
                }
                self.scan(
                    partition,
                    ScanFilter::Keys(keys),
                    true,
                    ScanPurpose::AnswerWant { to: from, xid },
                );
            }
            AaeMessage::Repair { xid, entries, .. } => {
                let mut merged = 0u64;
                for entry in entries {
                    let Ok(siblings) = SiblingSet::decode(&entry.siblings) else {
                        continue; // a bad set from a peer is dropped, never stored
                    };
                    merged += 1;
                    self.actions.push_back(LocalAction::Merge {
                        partition,
                        key: entry.key,
                        siblings,
                    });
                }
                self.stats.keys_received += merged;
                if let Some(sync) = state.sync.get_mut(&from) {
                    if self.initiated.get(&xid).is_some_and(|e| e.peer == from) {
                        sync.keys_repaired += merged;
                    }
                }
            }
        }
    }

    /// A scan finished: `Ok` with the keys found (payloads when asked), or
    /// `Err` when the store failed (the leaves stay stale, the exchange is
    /// abandoned).
    pub fn handle_scan_done(&mut self, now_ms: u64, io: u64, result: Result<Vec<Scanned>, String>) {
        let Some((partition, purpose)) = self.scans.remove(&io) else {
            return;
        };
        if matches!(purpose, ScanPurpose::PurgeCheck) {
            self.purge_check_in_flight = self
                .scans
                .values()
                .any(|(_, p)| matches!(p, ScanPurpose::PurgeCheck));
        }
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        let scanned = match result {
            Ok(scanned) => scanned,
            Err(_) => {
                if let ScanPurpose::Rehash { .. } = purpose {
                    state.rehash_in_flight = false;
                }
                if let ScanPurpose::ExchangeKeys { xid, .. } = purpose {
                    self.initiated.remove(&xid);
                }
                return;
            }
        };
        match purpose {
            ScanPurpose::Rehash {
                generations, full, ..
            } => {
                state.rehash_in_flight = false;
                Self::rehash(&mut self.stats, state, now_ms, &generations, &scanned);
                if full {
                    self.stats.trees_built += 1;
                }
            }
            ScanPurpose::ExchangeKeys { xid, generations } => {
                Self::rehash(&mut self.stats, state, now_ms, &generations, &scanned);
                let Some(exchange) = self.initiated.get_mut(&xid) else {
                    return;
                };
                // Bound the message: whole leaves only, up to the key cap.
                let mut by_leaf: BTreeMap<u16, Vec<&Scanned>> = BTreeMap::new();
                for entry in &scanned {
                    by_leaf.entry(key_leaf(&entry.key)).or_default().push(entry);
                }
                let mut leaves = Vec::new();
                let mut keys = Vec::new();
                for (leaf, _) in &generations {
                    let entries = by_leaf.get(leaf).map_or(&[][..], |v| &v[..]);
                    if !leaves.is_empty() && keys.len() + entries.len() > KEYS_PER_MESSAGE_MAX {
                        break;
                    }
                    if entries.len() > KEYS_PER_MESSAGE_MAX {
                        break; // a pathological leaf: never sent whole
                    }
                    leaves.push(*leaf);
                    keys.extend(entries.iter().map(|entry| KeyVersion {
                        key: entry.key.clone(),
                        version_hash: entry.version_hash,
                        live: entry.live,
                    }));
                }
                exchange.stage = InitiatedStage::AwaitWant;
                let peer = exchange.peer;
                self.transmits.push_back((
                    peer,
                    AaeMessage::Keys {
                        xid,
                        partition,
                        leaves,
                        keys,
                    },
                ));
            }
            ScanPurpose::RespondKeys {
                from,
                xid,
                generations,
                theirs,
            } => {
                Self::rehash(&mut self.stats, state, now_ms, &generations, &scanned);
                let compared: BTreeSet<u16> = generations.iter().map(|(leaf, _)| *leaf).collect();
                let mine: BTreeMap<&[u8], &Scanned> =
                    scanned.iter().map(|s| (&s.key[..], s)).collect();
                let theirs_by_key: BTreeMap<&[u8], &KeyVersion> = theirs
                    .iter()
                    .filter(|t| compared.contains(&key_leaf(&t.key)))
                    .map(|t| (&t.key[..], t))
                    .collect();
                let mut send = Vec::new();
                let mut want = Vec::new();
                let keys: BTreeSet<&[u8]> =
                    mine.keys().chain(theirs_by_key.keys()).copied().collect();
                for key in keys {
                    match (mine.get(key), theirs_by_key.get(key)) {
                        (Some(m), Some(t)) if m.version_hash != t.version_hash => {
                            send.push(*m);
                            want.push(t.key.clone());
                        }
                        // A tombstone need not reach a replica that holds
                        // nothing for the key: there is nothing to shadow.
                        (Some(m), None) if m.live => send.push(*m),
                        (None, Some(t)) if t.live => want.push(t.key.clone()),
                        _ => {}
                    }
                }
                let repaired = send.len().max(want.len()) as u64;
                self.stats.keys_sent += send.len() as u64;
                let entries: Vec<RepairEntry> = send
                    .iter()
                    .filter_map(|s| {
                        s.payload.as_ref().map(|payload| RepairEntry {
                            key: s.key.clone(),
                            siblings: payload.clone(),
                        })
                    })
                    .collect();
                Self::push_repairs(&mut self.transmits, from, xid, partition, entries);
                self.transmits.push_back((
                    from,
                    AaeMessage::Want {
                        xid,
                        partition,
                        keys: want,
                    },
                ));
                self.responding.remove(&(from, xid));
                let state = self.partitions.get_mut(partition).expect("present");
                if let Some(sync) = state.sync.get_mut(&from) {
                    sync.last_compared_ms = Some(now_ms);
                    sync.in_sync = repaired == 0;
                    sync.keys_repaired += repaired;
                }
                if repaired == 0 {
                    self.stats.exchanges_in_sync += 1;
                } else {
                    self.stats.exchanges_repaired += 1;
                }
            }
            ScanPurpose::AnswerWant { to, xid } => {
                let entries: Vec<RepairEntry> = scanned
                    .into_iter()
                    .filter_map(|s| {
                        s.payload.map(|payload| RepairEntry {
                            key: s.key,
                            siblings: payload,
                        })
                    })
                    .collect();
                self.stats.keys_sent += entries.len() as u64;
                Self::push_repairs(&mut self.transmits, to, xid, partition, entries);
            }
            ScanPurpose::PurgeCheck => {
                for entry in scanned {
                    if entry.live {
                        state.tombstones.remove(&entry.key);
                        continue;
                    }
                    let Some(payload) = entry.payload else {
                        continue;
                    };
                    let Ok(expected) = SiblingSet::decode(&payload) else {
                        continue;
                    };
                    self.stats.tombstones_purged += 1;
                    self.actions.push_back(LocalAction::Purge {
                        partition,
                        key: entry.key,
                        expected,
                    });
                }
            }
        }
    }

    fn push_repairs(
        transmits: &mut VecDeque<(NodeId, AaeMessage)>,
        to: NodeId,
        xid: u64,
        partition: u32,
        entries: Vec<RepairEntry>,
    ) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for entry in entries {
            let size = entry.key.len() + entry.siblings.len() + 8;
            if !batch.is_empty()
                && (bytes + size > REPAIR_MESSAGE_BYTES_TARGET
                    || batch.len() >= KEYS_PER_MESSAGE_MAX)
            {
                transmits.push_back((
                    to,
                    AaeMessage::Repair {
                        xid,
                        partition,
                        entries: std::mem::take(&mut batch),
                    },
                ));
                bytes = 0;
            }
            bytes += size;
            batch.push(entry);
        }
        if !batch.is_empty() {
            transmits.push_back((
                to,
                AaeMessage::Repair {
                    xid,
                    partition,
                    entries: batch,
                },
            ));
        }
    }

    /// Installs leaf hashes recomputed from a scan covering whole leaves,
    /// and notes the tombstones it found.
    fn rehash(
        stats: &mut AaeStats,
        state: &mut PartitionState,
        now_ms: u64,
        generations: &[(u16, u32)],
        scanned: &[Scanned],
    ) {
        let mut hashes: BTreeMap<u16, u64> = BTreeMap::new();
        for entry in scanned {
            let leaf = key_leaf(&entry.key);
            if entry.live {
                *hashes.entry(leaf).or_default() ^= entry_hash(&entry.key, entry.version_hash);
            } else if state.tombstones.len() < TOMBSTONES_TRACKED_MAX {
                state.tombstones.entry(entry.key.clone()).or_insert(now_ms);
            }
        }
        for (leaf, generation) in generations {
            let hash = hashes.get(leaf).copied().unwrap_or(0);
            match state.tree.rehash(*leaf, *generation, hash) {
                RehashOutcome::Refused => {}
                RehashOutcome::Unchanged => stats.leaves_rehashed += 1,
                RehashOutcome::Corrected => {
                    stats.leaves_rehashed += 1;
                    stats.leaves_corrected += 1;
                }
            }
        }
    }
}

/// The tree's and the tombstone list's part of `write_finished_at`, for a
/// partition's state; `now_ms` is asked only when a tombstone's time is
/// kept. With no tombstone tracked, a live write has none to forget.
fn write_finished_in(
    state: &mut PartitionState,
    now_ms: impl FnOnce() -> u64,
    leaf: u16,
    key: &[u8],
    old: Option<Option<Entry>>,
    new: Result<Option<Entry>, ()>,
) {
    let contribution = |entry: &Option<Entry>| match entry {
        Some(entry) if entry.live => entry_hash(key, entry.version_hash),
        _ => 0,
    };
    let delta = match (&old, &new) {
        (Some(old), Ok(new)) => Some(contribution(old) ^ contribution(new)),
        _ => None,
    };
    state.tree.write_finished(leaf, delta);
    match new {
        Ok(Some(entry)) if !entry.live => {
            if state.tombstones.len() < TOMBSTONES_TRACKED_MAX || state.tombstones.contains_key(key)
            {
                state
                    .tombstones
                    .insert(Bytes::copy_from_slice(key), now_ms());
            }
        }
        Ok(_) => {
            if !state.tombstones.is_empty() {
                state.tombstones.remove(key);
            }
        }
        Err(()) => {}
    }
}
