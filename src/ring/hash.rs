//! Key hashing and partitioning: the one placement hash of the cluster.
//!
//! Invariant: `key_hash` is xxh3-128 with seed 0 and `partition_of` takes the
//! top `log2(q)` bits. Both are frozen by golden vectors
//! (`tests/ring_golden.rs`): changing either would move every key.

use super::{PARTITIONS_MAX, PARTITIONS_MIN};

/// The 128-bit placement hash of a key: xxh3-128, seed 0. Never use `ahash`
/// or std's hasher for placement: they are not stable across builds.
pub fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// Whether `q` is a valid partition count: a power of two in
/// `PARTITIONS_MIN..=PARTITIONS_MAX`.
pub fn partition_count_valid(q: u32) -> bool {
    q.is_power_of_two() && (PARTITIONS_MIN..=PARTITIONS_MAX).contains(&q)
}

/// The partition of a hash: its top `log2(q)` bits, so partition `i` is the
/// `i`-th of `q` equal ranges of the hash space (Dynamo strategy 3, §6.2).
pub fn partition_of(hash: u128, q: u32) -> u32 {
    assert!(partition_count_valid(q), "partition count {q} invalid");
    let bits = q.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    let partition = (hash >> (128 - bits)) as u32;
    debug_assert!(partition < q);
    partition
}

/// The partition of a key.
pub fn key_partition(key: &[u8], q: u32) -> u32 {
    partition_of(key_hash(key), q)
}
