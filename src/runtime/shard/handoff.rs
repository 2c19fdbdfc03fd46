//! Partition handoff (§6 of the design guide), push style, acknowledged.
//!
//! After a ring change a shard may hold partitions that belong elsewhere:
//! on other nodes (this node is no longer one of the N primaries) or on
//! another shard of this node (the claim moved the partition between
//! shards). For each such partition the shard sends every stored key, in
//! batches, as `PutReplica` (a merge: repeating it is harmless) to each
//! target: every new primary when this node is no longer one, else the
//! shard of this node that now holds it. The requests carry ids from the top
//! half of this shard's id range; their `PutAck`s are taken off the replica
//! path (`ShardState::handoff_acked`) and counted here. When every target
//! acknowledged every key of a batch, each key is read again and, if it is
//! unchanged since it was sent, purged from this store (compaction reclaims
//! the space); a key written meanwhile stays and goes in the next pass, so a
//! write that lands on the old owner after the ring changed is handed off
//! too. A batch that is not fully acknowledged within the timeout is sent
//! again on the next pass (after a back-off). The wait is `5 × replica_timeout_ms`, 1 to 10 s.
//!
//! Keys are dropped only after the ring has been current for a grace period
//! (`DROP_GRACE_MS`, several gossip rounds), so that coordinators still
//! routing by the previous ring have moved on: a write they send to this
//! node lands before the last pass, not after the purge.
//!
//! Runs in the shard's background task queue, yields after every batch and
//! sleeps between batches (at most `BATCH_KEYS` keys per `BATCH_PAUSE`), and
//! paces itself every 16 keys against `handoff_keys_per_second` scaled by the
//! background share (`scheduler.rs`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ShardState;
use crate::membership::NodeId;
use crate::replica::ReplicaMessage;
use crate::ring::VnodeOwner;
use crate::runtime::internode::{Envelope, KIND_REPLICA};
use crate::runtime::log::{info, warning};
use crate::runtime::metrics::ShardMetrics;
use crate::runtime::scheduler::Job;
use crate::storage::Namespace;

/// Keys sent per batch before waiting for their acknowledgements.
const BATCH_KEYS: usize = 64;
/// Pause after each batch: at most `BATCH_KEYS` keys per pause per shard.
const BATCH_PAUSE: Duration = Duration::from_millis(2);
/// How often the loop looks for work.
const PASS_INTERVAL: Duration = Duration::from_millis(200);
/// Back-off after a pass that could not hand everything off.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The id bit that marks a handoff request (the top half of the shard's
/// 40-bit id range; the replica machine's own ids never reach it).
pub(super) const HANDOFF_REQ_BIT: u64 = 1 << 39;

/// Node ids are 32-bit, so a `from` with this bit set is never a real node:
/// a handoff from another shard of this node is given to the replica
/// machine as coming from `local_peer(me)` (the machine never sends to
/// itself), and `send_replica` maps its ack back to this node.
const LOCAL_PEER_BIT: u64 = 1 << 63;

/// The stand-in sender of a handoff between two shards of node `me`.
pub(super) fn local_peer(me: NodeId) -> NodeId {
    NodeId(me.0 | LOCAL_PEER_BIT)
}

/// The real node behind a replica message's target (`local_peer` → `me`).
pub(super) fn real_node(to: NodeId) -> NodeId {
    NodeId(to.0 & !LOCAL_PEER_BIT)
}

/// Where a partition this shard stores must go, if anywhere.
fn targets(shard: &ShardState, topology: &super::Topology, partition: u32) -> Vec<VnodeOwner> {
    let me = shard.node.cluster.me;
    let primaries = topology.primaries(partition);
    match primaries.iter().find(|o| o.node == me) {
        // Still a primary: only a move to another shard of this node.
        Some(own) if usize::from(own.shard) == shard.index => Vec::new(),
        Some(own) => vec![*own],
        None => primaries.to_vec(),
    }
}

impl ShardState {
    /// A `PutAck` for a handoff request arrived.
    pub(super) fn handoff_acked(&self, req: u64) {
        self.handoff_outstanding.borrow_mut().remove(&req);
    }

    /// The handoff loop; see the module header.
    pub(super) async fn handoff_loop(self: Rc<Self>) {
        let mut next_req = 1u64;
        let base = (self.replica.borrow().actor() >> 16) & 0xFFFF;
        // The ring epoch and when this shard first saw it.
        let mut epoch_seen = (u64::MAX, Instant::now());
        // The epoch of the last pass that sent everything and had it all
        // acknowledged before keys could be dropped: no need to send it all
        // again until the grace period is over.
        let mut acked_epoch = u64::MAX;
        let grace = Duration::from_millis(
            (4 * self.config.gossip_interval_ms + self.config.request_timeout_ms).max(1_000),
        );
        // Generous: a batch is 64 durable merges on each target, and a busy
        // target must not make every batch time out and start over.
        let ack_timeout =
            Duration::from_millis((5 * self.config.replica_timeout_ms).clamp(1_000, 10_000));
        while !self.shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(PASS_INTERVAL).await;
            let cluster = &self.node.cluster;
            cluster.keys[self.index].store(self.store.stats().keys, Ordering::Relaxed);
            let topology = self.topology();
            if topology.epoch != epoch_seen.0 {
                epoch_seen = (topology.epoch, Instant::now());
            }
            let may_drop = epoch_seen.1.elapsed() >= grace;
            let moving: Vec<(u32, Vec<VnodeOwner>)> = self
                .store
                .partitions(Namespace::Data)
                .into_iter()
                .filter(|&p| p < topology.q)
                .map(|p| (p, targets(&self, &topology, p)))
                .filter(|(_, targets)| !targets.is_empty())
                .collect();
            cluster.handoff_pending[self.index].store(moving.len(), Ordering::Relaxed);
            if moving.is_empty() {
                cluster.handoff_clean_epoch[self.index].store(topology.epoch, Ordering::Relaxed);
                continue;
            }
            if !may_drop && acked_epoch == topology.epoch {
                continue;
            }
            let (mut sent, mut dropped, mut complete) = (0u64, 0u64, true);
            'partitions: for (partition, targets) in &moving {
                let keys = self.store.keys(Namespace::Data, *partition);
                for batch in keys.chunks(BATCH_KEYS) {
                    if self.shutdown.load(Ordering::Relaxed)
                        || self.topology().epoch != topology.epoch
                    {
                        complete = false;
                        break 'partitions; // the ring moved on: start over
                    }
                    let mut payloads = Vec::with_capacity(batch.len());
                    let mut reqs = Vec::new();
                    for key in batch {
                        let Ok(Some(record)) =
                            self.store.get(Namespace::Data, *partition, key).await
                        else {
                            continue;
                        };
                        let Ok(siblings) = crate::version::SiblingSet::decode(&record.payload)
                        else {
                            warning!(partition = *partition, "undecodable record in handoff");
                            continue;
                        };
                        for target in targets {
                            let req = (base << 40) | HANDOFF_REQ_BIT | next_req;
                            next_req = (next_req + 1) % HANDOFF_REQ_BIT;
                            let Some(addr) = topology.internode_addr(target.node, target.shard)
                            else {
                                complete = false;
                                continue;
                            };
                            self.handoff_outstanding.borrow_mut().insert(req);
                            reqs.push(req);
                            let message = ReplicaMessage::PutReplica {
                                req,
                                partition: *partition,
                                key: key.clone(),
                                siblings: siblings.clone(),
                                durable: true,
                                hint_for: None,
                            };
                            let envelope = Envelope {
                                kind: KIND_REPLICA,
                                from_node: cluster.me.0,
                                from_shard: self.index as u16,
                                to_shard: target.shard,
                            };
                            self.links.send(addr, envelope, |out| message.encode(out));
                        }
                        payloads.push((key.clone(), record.payload));
                        sent += 1;
                        ShardMetrics::bump(&self.metrics.handoff_keys_sent, 1);
                        // Rate-limited by the scheduler's share (§8).
                        if sent % 16 == 0 {
                            self.sched.pace(Job::Handoff, 16).await;
                        }
                    }
                    // Wait for every acknowledgement of the batch.
                    let began = Instant::now();
                    let acked = loop {
                        let all_acked = {
                            let outstanding = self.handoff_outstanding.borrow();
                            reqs.iter().all(|r| !outstanding.contains(r))
                        };
                        if all_acked {
                            break true;
                        }
                        if began.elapsed() >= ack_timeout {
                            break false;
                        }
                        glommio::timer::sleep(Duration::from_millis(2)).await;
                    };
                    if !acked {
                        let mut outstanding = self.handoff_outstanding.borrow_mut();
                        for r in &reqs {
                            outstanding.remove(r);
                        }
                        complete = false;
                        continue 'partitions; // retried on the next pass
                    }
                    if may_drop && complete {
                        for (key, payload) in payloads {
                            let current = self.store.get(Namespace::Data, *partition, &key).await;
                            let unchanged = matches!(&current, Ok(Some(r)) if r.payload == payload);
                            if unchanged
                                && self
                                    .store
                                    .purge(Namespace::Data, *partition, &key)
                                    .await
                                    .is_ok()
                            {
                                dropped += 1;
                            }
                        }
                    }
                    glommio::timer::sleep(BATCH_PAUSE).await;
                }
            }
            if sent > 0 {
                cluster.handed_off.fetch_add(sent, Ordering::Relaxed);
                cluster
                    .handoff_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
                info!(
                    keys_sent = sent,
                    copies_dropped = dropped,
                    epoch = topology.epoch,
                    partitions = moving.len(),
                    "handoff pass: keys handed off, acknowledged copies dropped"
                );
            }
            if !complete {
                glommio::timer::sleep(RETRY_PAUSE).await;
            } else if !may_drop {
                acked_epoch = topology.epoch;
            }
        }
    }
}
