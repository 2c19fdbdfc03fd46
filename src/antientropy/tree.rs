//! The tictac Merkle tree of one partition on one replica: `LEAVES` leaf
//! buckets, each the XOR of `entry_hash(key, version_hash)` over the live
//! keys hashed into it; `BRANCHES` inner hashes, each the XOR of its
//! `LEAVES_PER_BRANCH` leaves; a root, the XOR of the branches. XOR makes a
//! write an O(1) update (take the old entry out, put the new one in) in any
//! order, so the tree never needs a rebuild on the write path.
//!
//! Consistency with the store: a write brackets its store operation with
//! `write_started` / `write_finished`; a leaf recomputed from the store (a
//! rehash) is installed only if no write to that leaf started or finished
//! while the scan ran (`generation`, `writes_in_flight`). A leaf whose
//! state is unknown (a failed write, a rejected rehash, a fresh tree) is
//! `stale` and is rehashed before the tree takes part in an exchange.

use std::collections::BTreeSet;

use super::{BRANCHES, LEAVES, LEAVES_PER_BRANCH};

/// One leaf: its hash and the two counters a write updates with it, side
/// by side so that a write's update of the leaf is one cache line, not three
/// (a tree is 16 KiB, and a shard holds over a hundred: a random key's leaf
/// is rarely in the CPU's caches).
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(16))]
struct Leaf {
    hash: u64,
    /// Bumped whenever a write to the leaf starts or finishes.
    generation: u32,
    /// Writes to the leaf between `write_started` and `write_finished`.
    writes_in_flight: u16,
}

/// One partition's tree.
#[derive(Clone, Debug)]
pub struct Tree {
    leaves: Vec<Leaf>,
    branches: Vec<u64>,
    root: u64,
    /// Leaves whose hash may not match the store; empty once built.
    stale: BTreeSet<u16>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// A tree whose every leaf is stale (it must be built from the store).
    pub fn new() -> Self {
        Tree {
            leaves: vec![Leaf::default(); LEAVES],
            branches: vec![0; BRANCHES],
            root: 0,
            stale: (0..LEAVES as u16).collect(),
        }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn branches(&self) -> &[u64] {
        &self.branches
    }

    /// The hashes of the leaves under `branch`, in order.
    pub fn branch_leaves(&self, branch: usize) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.leaves[branch * LEAVES_PER_BRANCH..(branch + 1) * LEAVES_PER_BRANCH]
            .iter()
            .map(|leaf| leaf.hash)
    }

    pub fn leaf(&self, leaf: u16) -> u64 {
        self.leaves[leaf as usize].hash
    }

    /// Asks the CPU for the line holding where the leaves are, which
    /// `prefetch_leaf` reads first. Changes nothing.
    pub fn prefetch_header(&self) {
        crate::storage::prefetch_read(std::ptr::from_ref(&self.leaves).cast());
    }

    /// Asks the CPU to bring `leaf` into its caches, for a write to it that
    /// comes soon (`ShardState::prefetch`). Changes nothing.
    pub fn prefetch_leaf(&self, leaf: u16) {
        if let Some(leaf) = self.leaves.get(leaf as usize) {
            crate::storage::prefetch_read(std::ptr::from_ref(leaf).cast());
        }
    }

    /// Whether every leaf matches the store (the tree may be compared).
    pub fn is_ready(&self) -> bool {
        self.stale.is_empty()
    }

    pub fn stale_leaves(&self) -> &BTreeSet<u16> {
        &self.stale
    }

    pub fn generation(&self, leaf: u16) -> u32 {
        self.leaves[leaf as usize].generation
    }

    /// XORs `delta` into a leaf and its ancestors.
    fn toggle(&mut self, leaf: u16, delta: u64) {
        self.leaves[leaf as usize].hash ^= delta;
        self.branches[leaf as usize / LEAVES_PER_BRANCH] ^= delta;
        self.root ^= delta;
    }

    /// A write to a key of `leaf` is about to reach the store.
    pub fn write_started(&mut self, leaf: u16) {
        let state = &mut self.leaves[leaf as usize];
        state.writes_in_flight += 1;
        state.generation = state.generation.wrapping_add(1);
    }

    /// The write finished. `delta` is `old_entry ^ new_entry` when both are
    /// known and the write succeeded; `None` marks the leaf stale.
    pub fn write_finished(&mut self, leaf: u16, delta: Option<u64>) {
        let state = &mut self.leaves[leaf as usize];
        // A write that started before the partition was tracked has no
        // `write_started` here: its effect is unknown, so the leaf is stale.
        let delta = if state.writes_in_flight == 0 {
            None
        } else {
            delta
        };
        state.writes_in_flight = state.writes_in_flight.saturating_sub(1);
        state.generation = state.generation.wrapping_add(1);
        match delta {
            Some(delta) => self.toggle(leaf, delta),
            None => {
                self.stale.insert(leaf);
            }
        }
    }

    /// Installs a leaf hash recomputed from the store by a scan that began
    /// when the leaf's generation was `generation_at_start`. Refused (and
    /// the leaf marked stale) when a write touched the leaf meanwhile or is
    /// still in flight. Returns whether the hash changed the leaf.
    pub fn rehash(&mut self, leaf: u16, generation_at_start: u32, hash: u64) -> RehashOutcome {
        let state = self.leaves[leaf as usize];
        if state.generation != generation_at_start || state.writes_in_flight != 0 {
            self.stale.insert(leaf);
            return RehashOutcome::Refused;
        }
        self.stale.remove(&leaf);
        let delta = state.hash ^ hash;
        if delta == 0 {
            return RehashOutcome::Unchanged;
        }
        self.toggle(leaf, delta);
        RehashOutcome::Corrected
    }

    /// Marks one leaf stale (a damaged record of one of its keys).
    pub fn invalidate_leaf(&mut self, leaf: u16) {
        self.stale.insert(leaf);
    }

    /// Marks every leaf stale (the store reported damage, or was replaced).
    pub fn invalidate(&mut self) {
        self.stale = (0..LEAVES as u16).collect();
    }

    /// Checks the inner levels against the leaves (tests, debug).
    pub fn check_invariants(&self) {
        let mut root = 0;
        for branch in 0..BRANCHES {
            let xor = self.branch_leaves(branch).fold(0, |a, b| a ^ b);
            assert_eq!(xor, self.branches[branch], "branch {branch} hash");
            root ^= xor;
        }
        assert_eq!(root, self.root, "root hash");
    }
}

/// What `Tree::rehash` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RehashOutcome {
    /// A write raced the scan; the leaf stays stale.
    Refused,
    /// The leaf already matched the store.
    Unchanged,
    /// The leaf had drifted and was corrected.
    Corrected,
}
