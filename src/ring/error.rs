//! Errors of the ring layer: invalid claim inputs or an invalid routing table
//! received from elsewhere.

use std::fmt;

use super::NodeId;

/// Why a ring could not be claimed or accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// `q` is not a power of two in `PARTITIONS_MIN..=PARTITIONS_MAX`.
    PartitionCountInvalid { q: u32 },
    /// `n_val` is zero or above `N_VAL_MAX`.
    NValInvalid { n_val: usize },
    /// No member has a positive weight, so nobody can own a partition.
    NoCapacity,
    /// More members than `MEMBERS_MAX`.
    TooManyMembers { count: usize },
    /// The same node id appears twice in the membership.
    DuplicateMember(NodeId),
    /// A member declares zero shards.
    ShardsZero(NodeId),
    /// The previous ring has another partition count; `q` is fixed at
    /// cluster creation.
    PartitionCountChanged { previous: u32, q: u32 },
    /// An owner list does not have exactly `q` entries.
    OwnersLength { owners: usize, q: u32 },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::PartitionCountInvalid { q } => write!(
                f,
                "partition count {q} is not a power of two in {}..={}",
                super::PARTITIONS_MIN,
                super::PARTITIONS_MAX
            ),
            RingError::NValInvalid { n_val } => {
                write!(f, "n_val {n_val} not in 1..={}", super::N_VAL_MAX)
            }
            RingError::NoCapacity => write!(f, "no member has a positive capacity weight"),
            RingError::TooManyMembers { count } => {
                write!(f, "{count} members, more than {}", super::MEMBERS_MAX)
            }
            RingError::DuplicateMember(node) => write!(f, "node {} listed twice", node.0),
            RingError::ShardsZero(node) => write!(f, "node {} declares zero shards", node.0),
            RingError::PartitionCountChanged { previous, q } => {
                write!(f, "partition count cannot change from {previous} to {q}")
            }
            RingError::OwnersLength { owners, q } => {
                write!(f, "{owners} partition owners for {q} partitions")
            }
        }
    }
}

impl std::error::Error for RingError {}
