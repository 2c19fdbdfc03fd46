//! `Ring`: the primary owner of every partition, and the walks that turn it
//! into preference lists (§4.3) and sloppy-quorum fallbacks (§4.6).
//!
//! Invariant: `owners.len() == q`; every owner's shard is below its node's
//! shard count at claim time. The ring is plain data: the same bytes on
//! every node give the same preference lists.

use super::error::RingError;
use super::hash::partition_count_valid;
use super::{NodeId, VnodeOwner, N_VAL_MAX};

/// The assignment of partitions to `(node, shard)`, with an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Increases by one whenever ownership changes; requests carry the epoch
    /// they were routed with so a stale route is detected (`WrongOwner`).
    pub epoch: u64,
    /// Partition count, a power of two fixed at cluster creation.
    q: u32,
    /// Replicas per key (Dynamo's N).
    n_val: usize,
    /// Primary owner of each partition, indexed by partition.
    owners: Vec<VnodeOwner>,
}

impl Ring {
    /// Rebuilds a ring from its parts, e.g. a routing table received from
    /// another node, checking the shape.
    pub fn from_parts(
        epoch: u64,
        q: u32,
        n_val: usize,
        owners: Vec<VnodeOwner>,
    ) -> Result<Ring, RingError> {
        if !partition_count_valid(q) {
            return Err(RingError::PartitionCountInvalid { q });
        }
        if n_val == 0 || n_val > N_VAL_MAX {
            return Err(RingError::NValInvalid { n_val });
        }
        if owners.len() != q as usize {
            return Err(RingError::OwnersLength {
                owners: owners.len(),
                q,
            });
        }
        Ok(Ring {
            epoch,
            q,
            n_val,
            owners,
        })
    }

    pub fn q(&self) -> u32 {
        self.q
    }

    pub fn n_val(&self) -> usize {
        self.n_val
    }

    /// Primary owner of each partition, indexed by partition (the routing
    /// table's body).
    pub fn owners(&self) -> &[VnodeOwner] {
        &self.owners
    }

    pub fn owner(&self, partition: u32) -> VnodeOwner {
        self.owners[partition as usize]
    }

    /// Every distinct node, walking clockwise from `partition`: the first
    /// `n_val` are the primaries (the preference list), the rest are the
    /// fallbacks for a sloppy quorum, in the order they should be tried.
    /// Each node appears with the shard that owns the partition where the
    /// walk first met it: that vnode holds this partition's replica.
    pub fn walk(&self, partition: u32) -> Walk<'_> {
        assert!(partition < self.q);
        Walk {
            ring: self,
            start: partition,
            steps: 0,
            seen: Vec::new(),
        }
    }

    /// The preference list: the first `n_val` distinct nodes clockwise from
    /// `partition` (fewer when the cluster has fewer nodes).
    pub fn preference_list(&self, partition: u32) -> Vec<VnodeOwner> {
        self.walk(partition).take(self.n_val).collect()
    }

    /// Fallback nodes for `partition`, in order: the walk past the primaries.
    pub fn fallbacks(&self, partition: u32) -> impl Iterator<Item = VnodeOwner> + '_ {
        self.walk(partition).skip(self.n_val)
    }

    /// Partitions whose primary owner is `(node, shard)`, ascending.
    pub fn partitions_of(&self, node: NodeId, shard: u16) -> Vec<u32> {
        let target = VnodeOwner { node, shard };
        (0..self.q)
            .filter(|&partition| self.owners[partition as usize] == target)
            .collect()
    }

    /// Partitions whose primary owner is any shard of `node`, ascending.
    pub fn partitions_of_node(&self, node: NodeId) -> Vec<u32> {
        (0..self.q)
            .filter(|&partition| self.owners[partition as usize].node == node)
            .collect()
    }

    /// Partitions for which `node` is one of the `n_val` primaries (it holds
    /// a replica), ascending.
    pub fn replicated_partitions_of_node(&self, node: NodeId) -> Vec<u32> {
        (0..self.q)
            .filter(|&partition| {
                self.preference_list(partition)
                    .iter()
                    .any(|owner| owner.node == node)
            })
            .collect()
    }

    /// Number of windows of `min(n_val, nodes)` consecutive partitions whose
    /// owners are not all distinct nodes (0 is the target).
    pub fn diversity_violations(&self) -> usize {
        let mut nodes: Vec<NodeId> = self.owners.iter().map(|owner| owner.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let window = self.n_val.min(nodes.len());
        let q = self.q as usize;
        (0..q)
            .filter(|&start| {
                (0..window).any(|i| {
                    (i + 1..window).any(|j| {
                        self.owners[(start + i) % q].node == self.owners[(start + j) % q].node
                    })
                })
            })
            .count()
    }

    /// How many partitions have a different primary node than in `previous`
    /// (moves between shards of one node are not counted).
    pub fn nodes_moved_from(&self, previous: &Ring) -> usize {
        assert_eq!(self.q, previous.q);
        self.owners
            .iter()
            .zip(&previous.owners)
            .filter(|(now, before)| now.node != before.node)
            .count()
    }

    /// How many partitions have a different primary vnode than in `previous`.
    pub fn vnodes_moved_from(&self, previous: &Ring) -> usize {
        assert_eq!(self.q, previous.q);
        self.owners
            .iter()
            .zip(&previous.owners)
            .filter(|(now, before)| now != before)
            .count()
    }
}

/// Iterator over the distinct nodes clockwise from a partition; see
/// `Ring::walk`. It ends after one full turn.
pub struct Walk<'a> {
    ring: &'a Ring,
    start: u32,
    /// Partitions visited so far; at most `q`.
    steps: u32,
    /// Nodes already yielded; at most the number of nodes in the ring.
    seen: Vec<NodeId>,
}

impl Iterator for Walk<'_> {
    type Item = VnodeOwner;

    fn next(&mut self) -> Option<VnodeOwner> {
        while self.steps < self.ring.q {
            let partition = (self.start + self.steps) % self.ring.q;
            self.steps += 1;
            let owner = self.ring.owners[partition as usize];
            if !self.seen.contains(&owner.node) {
                self.seen.push(owner.node);
                return Some(owner);
            }
        }
        None
    }
}
