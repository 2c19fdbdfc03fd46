//! Golden vectors for placement: key → xxh3-128 (seed 0) → partition.
//! Computed once and frozen: if this test fails, every key of every
//! existing cluster would move. Never update the table to make it pass.
//! (The hash of the empty key matches the reference XXH3_128bits value
//! `99aa06d3014798d86001c324468d497f`.)

use dynakv::ring::{key_hash, key_partition, partition_of};

/// (key, hash, partition for Q = 256, partition for Q = 4096)
const GOLDEN: &[(&[u8], u128, u32, u32)] = &[
    (b"", 0x99aa06d3014798d86001c324468d497f, 153, 2458),
    (b"a", 0xa96faf705af16834e6c632b61e964e1f, 169, 2710),
    (b"hello", 0xb5e9c1ad071b3e7fc779cfaa5e523818, 181, 2910),
    (b"dynakv", 0xf2e8074f60a27357758a53576a0a09e1, 242, 3886),
    (b"user:42", 0x8763cfe7e8dd227b54c6a0eba0ce373f, 135, 2166),
    (
        b"The quick brown fox jumps over the lazy dog",
        0xddd650205ca3e7fa24a1cc2e3a8a7651,
        221,
        3549,
    ),
    (
        &[0x00, 0xff, 0x01, 0xfe],
        0xcf51bbef88fdad33fabcbb0e3662be75,
        207,
        3317,
    ),
    (&[0xab; 300], 0x34905cac9c379f90c3bba68e636e3292, 52, 841),
];

#[test]
fn golden_vectors() {
    for &(key, hash, partition_256, partition_4096) in GOLDEN {
        assert_eq!(key_hash(key), hash, "hash of {key:?}");
        assert_eq!(partition_of(hash, 256), partition_256);
        assert_eq!(partition_of(hash, 4096), partition_4096);
        assert_eq!(key_partition(key, 256), partition_256);
        // Partitions nest: Q = 4096 refines Q = 256 (top bits).
        assert_eq!(partition_4096 >> 4, partition_256);
    }
}

#[test]
fn partition_is_the_top_bits() {
    assert_eq!(partition_of(0, 256), 0);
    assert_eq!(partition_of(u128::MAX, 256), 255);
    assert_eq!(partition_of(1u128 << 120, 256), 1);
    assert_eq!(partition_of((1u128 << 120) - 1, 256), 0);
    assert_eq!(partition_of(u128::MAX, 1), 0);
    assert_eq!(partition_of(u128::MAX, 16_384), 16_383);
}
