//! ring layer: hashing, partitions, capacity-weighted claim, preference lists.
//!
//! Job: map a key to its partition (xxh3-128, top bits; Dynamo strategy 3,
//! §6.2), partitions to `(node, shard)` owners in proportion to each node's
//! capacity weight, and a partition to its preference list (§4.3) and
//! sloppy-quorum fallbacks (§4.6).
//!
//! Invariants:
//! * pure and deterministic: the same membership (in any order) and the same
//!   previous ring give the same ring on every node; no clocks, no
//!   randomness sources, no I/O;
//! * every node's partition count is within one partition of its weighted
//!   share (of the capped share when weights are so skewed that a share
//!   exceeds `q / n_val`), and within one partition across its shards;
//! * the target for every window of `n_val` consecutive partitions is
//!   `n_val` distinct nodes; `Ring::diversity_violations` counts misses;
//! * a membership change keeps every partition whose owner stays within its
//!   target; movement is reported against the theoretical minimum.
//!
//! Algorithm and measured figures: `docs/ring.md`.

mod claim;
mod error;
mod hash;
mod partition_map;
mod table;

pub use error::RingError;
pub use hash::{key_hash, key_partition, partition_count_valid, partition_of};
pub use partition_map::PartitionMap;
pub use table::{Ring, Walk};

/// Default partition count (design guide §1).
pub const PARTITIONS_DEFAULT: u32 = 256;
/// Smallest partition count.
pub const PARTITIONS_MIN: u32 = 1;
/// Largest partition count: claim cost grows with `q × members`.
pub const PARTITIONS_MAX: u32 = 16_384;
/// Largest replica count N.
pub const N_VAL_MAX: usize = 16;
/// Largest membership.
pub const MEMBERS_MAX: usize = 4_096;

/// A node's stable identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// One member of the cluster as the claim sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// Capacity weight; by convention its shard count. Zero means "owns no
    /// partitions" (a node being drained).
    pub weight: u32,
    /// Shards (cores) the node runs; its partitions are spread over them.
    pub shards: u16,
}

impl Member {
    /// A member whose weight is its shard count (the default).
    pub fn with_shards(id: NodeId, shards: u16) -> Member {
        Member {
            id,
            weight: u32::from(shards),
            shards,
        }
    }
}

/// A vnode's owner: one shard of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VnodeOwner {
    pub node: NodeId,
    pub shard: u16,
}

impl Ring {
    /// Builds the ring for `members`; see `claim.rs` and `docs/ring.md`.
    /// `previous`, when given, must have the same `q`; partitions move away
    /// from their previous owners only as far as the new targets require.
    pub fn claim(
        previous: Option<&Ring>,
        members: &[Member],
        q: u32,
        n_val: usize,
    ) -> Result<Ring, RingError> {
        claim::claim(previous, members, q, n_val)
    }
}
