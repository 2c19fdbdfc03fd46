//! Workloads: which operation to send next, on which key, with which value.
//!
//! Job: draw the request mix of a workload (YCSB core workloads A, B, C, D
//! and F, plain get/put/mixed, ping, and the shopping-cart read-modify-write
//! of the Dynamo paper's motivating example, §4.4) from a seeded stream.
//! Invariants: keys drawn for reads and updates lie in the current key space
//! (`--keys` plus the inserts acknowledged so far); inserts take fresh indices
//! past it, each exactly once across all threads; cart values never exceed
//! [`CART_ITEMS_MAX`] elements, so a long run cannot grow values without bound.

use crate::cli::{KeyDist, ValueSize, Workload};
use crate::keydist::KeyChooser;
use crate::rng::Rng;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The kinds of operation the report breaks results down by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Ping = 0,
    Get = 1,
    Put = 2,
    /// A put of a new key (YCSB-D).
    Insert = 3,
    /// Read-modify-write: a get then a put of a new value (YCSB-F).
    Rmw = 4,
    /// Cart: a get, merging siblings, then a put with the context.
    Cart = 5,
}

pub const OP_KINDS: usize = 6;

impl OpKind {
    pub const ALL: [OpKind; OP_KINDS] = [
        OpKind::Ping,
        OpKind::Get,
        OpKind::Put,
        OpKind::Insert,
        OpKind::Rmw,
        OpKind::Cart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Ping => "ping",
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Insert => "insert",
            OpKind::Rmw => "rmw",
            OpKind::Cart => "cart",
        }
    }

    /// Whether the operation starts with a get whose reply feeds a put.
    pub fn is_read_modify_write(self) -> bool {
        matches!(self, OpKind::Rmw | OpKind::Cart)
    }
}

/// The most elements a cart holds; adding to a full cart drops the smallest.
pub const CART_ITEMS_MAX: usize = 32;

/// Keys are fixed-width ASCII (`key:` and 12 hex digits), so every target
/// stores the same bytes and key length does not vary with the index.
pub const KEY_BYTES: usize = 16;

pub fn write_key(index: u64, out: &mut [u8; KEY_BYTES]) {
    assert!(index < 1 << 48);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out[..4].copy_from_slice(b"key:");
    for i in 0..12 {
        out[KEY_BYTES - 1 - i] = HEX[((index >> (4 * i)) & 0xf) as usize];
    }
}

/// One operation to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub key: u64,
    pub value_bytes: u32,
}

/// Counters shared by all threads of a run.
#[derive(Debug, Default)]
pub struct KeySpace {
    /// Inserts handed out so far; the next insert takes `keys + this`.
    pub inserts_issued: AtomicU64,
    /// Inserts acknowledged; reads draw from `keys + this`.
    pub inserts_acked: AtomicU64,
}

/// Draws operations for one thread. Built once and cloned per thread, so
/// the O(keys) zeta of the `latest` distribution is computed once per run.
#[derive(Clone)]
pub struct OpGenerator {
    workload: Workload,
    read_ratio: f64,
    keys: u64,
    chooser: KeyChooser,
    value_size: ValueSize,
    space: Arc<KeySpace>,
}

impl OpGenerator {
    /// Whether some operation of this workload reads a get reply's values
    /// (the cart merges the siblings it read).
    pub fn merges_values(&self) -> bool {
        self.workload == Workload::Cart
    }

    /// Whether this workload issues plain puts of existing keys, which carry
    /// the context of the key's last reply (YCSB-D inserts new keys; YCSB-F
    /// and the cart put with the context their own get just returned).
    pub fn plain_puts(&self) -> bool {
        self.read_ratio < 1.0
            && !matches!(
                self.workload,
                Workload::Ping | Workload::Cart | Workload::YcsbD | Workload::YcsbF
            )
    }

    pub fn new(
        workload: Workload,
        read_ratio: f64,
        keys: u64,
        key_dist: KeyDist,
        value_size: ValueSize,
        space: Arc<KeySpace>,
    ) -> OpGenerator {
        assert!(keys >= 1);
        assert!((0.0..=1.0).contains(&read_ratio));
        let chooser = match key_dist {
            KeyDist::Uniform => KeyChooser::uniform(),
            KeyDist::Zipfian => KeyChooser::scrambled_zipfian(),
            KeyDist::Latest => KeyChooser::skewed_latest(keys),
        };
        OpGenerator {
            workload,
            read_ratio,
            keys,
            chooser,
            value_size,
            space,
        }
    }

    pub fn value_bytes(&self, rng: &mut Rng) -> u32 {
        let ValueSize { min, max } = self.value_size;
        if min == max {
            min
        } else {
            min + rng.below(u64::from(max - min) + 1) as u32
        }
    }

    fn key(&mut self, rng: &mut Rng) -> u64 {
        let key_count = self.keys + self.space.inserts_acked.load(Ordering::Relaxed);
        self.chooser.next(rng, key_count)
    }

    pub fn next(&mut self, rng: &mut Rng) -> Op {
        let read = rng.next_f64() < self.read_ratio;
        let kind = match self.workload {
            Workload::Ping => OpKind::Ping,
            Workload::Cart => OpKind::Cart,
            Workload::YcsbD if !read => OpKind::Insert,
            Workload::YcsbF if !read => OpKind::Rmw,
            _ if read => OpKind::Get,
            _ => OpKind::Put,
        };
        let key = match kind {
            OpKind::Ping => 0,
            OpKind::Insert => self.keys + self.space.inserts_issued.fetch_add(1, Ordering::Relaxed),
            _ => self.key(rng),
        };
        let value_bytes = match kind {
            OpKind::Put | OpKind::Insert | OpKind::Rmw => self.value_bytes(rng),
            _ => 0,
        };
        Op {
            kind,
            key,
            value_bytes,
        }
    }
}

/// Merges a cart's siblings (the union of their elements), adds `item`, and
/// encodes the result: elements are comma-separated tokens. Returns the new
/// value. Unparseable bytes (a value loaded by another workload) count as one
/// opaque element, so the merge never fails.
pub fn cart_merge(siblings: &[Bytes], item: u64) -> Vec<u8> {
    let mut elements: Vec<&[u8]> = Vec::new();
    for sibling in siblings {
        elements.extend(sibling.split(|&b| b == b',').filter(|e| !e.is_empty()));
    }
    let new_item = format!("i{item:x}");
    elements.push(new_item.as_bytes());
    elements.sort_unstable();
    elements.dedup();
    if elements.len() > CART_ITEMS_MAX {
        let excess = elements.len() - CART_ITEMS_MAX;
        // Keep the new item even when it sorts first.
        let keep_new = elements.iter().position(|e| *e == new_item.as_bytes());
        elements.drain(..excess);
        if let Some(pos) = keep_new {
            if pos < excess {
                elements[0] = new_item.as_bytes();
            }
        }
    }
    assert!(elements.len() <= CART_ITEMS_MAX);
    elements.join(&b","[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(workload: Workload, read_ratio: f64, dist: KeyDist) -> OpGenerator {
        OpGenerator::new(
            workload,
            read_ratio,
            1000,
            dist,
            ValueSize { min: 10, max: 20 },
            Arc::new(KeySpace::default()),
        )
    }

    #[test]
    fn keys_are_fixed_width_hex() {
        let mut k = [0u8; KEY_BYTES];
        write_key(0x2a, &mut k);
        assert_eq!(&k, b"key:00000000002a");
    }

    #[test]
    fn mixes_follow_the_read_ratio() {
        let mut rng = Rng::new(5, 0);
        let mut g = generator(Workload::YcsbB, 0.95, KeyDist::Zipfian);
        let reads = (0..10_000)
            .filter(|_| g.next(&mut rng).kind == OpKind::Get)
            .count();
        assert!((9_300..9_700).contains(&reads), "{reads}");
        let mut g = generator(Workload::YcsbF, 0.5, KeyDist::Uniform);
        let ops: Vec<Op> = (0..1000).map(|_| g.next(&mut rng)).collect();
        assert!(ops
            .iter()
            .all(|o| matches!(o.kind, OpKind::Get | OpKind::Rmw)));
        assert!(ops.iter().all(|o| o.key < 1000));
        assert!(ops
            .iter()
            .filter(|o| o.kind == OpKind::Rmw)
            .all(|o| (10..=20).contains(&o.value_bytes)));
    }

    #[test]
    fn inserts_take_fresh_keys_and_reads_follow_acknowledged_inserts() {
        let mut rng = Rng::new(9, 0);
        let mut g = generator(Workload::YcsbD, 0.0, KeyDist::Latest);
        let a = g.next(&mut rng);
        let b = g.next(&mut rng);
        assert_eq!((a.kind, a.key, b.key), (OpKind::Insert, 1000, 1001));
        g.space.inserts_acked.store(2, Ordering::Relaxed);
        let mut g2 = OpGenerator {
            read_ratio: 1.0,
            ..g
        };
        let keys: Vec<u64> = (0..1000).map(|_| g2.next(&mut rng).key).collect();
        assert!(keys.iter().all(|&k| k < 1002));
        assert!(keys.contains(&1001));
    }

    #[test]
    fn cart_merge_is_a_bounded_union() {
        let a = Bytes::from_static(b"i1,i2");
        let b = Bytes::from_static(b"i2,i3");
        assert_eq!(cart_merge(&[a, b], 4), b"i1,i2,i3,i4");
        assert_eq!(cart_merge(&[], 255), b"iff");
        let big: Vec<u8> = (0..40)
            .map(|i| format!("j{i:02}"))
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes();
        let merged = cart_merge(&[Bytes::from(big)], 1);
        let count = merged.split(|&b| b == b',').count();
        assert_eq!(count, CART_ITEMS_MAX);
        assert!(merged.split(|&b| b == b',').any(|e| e == b"i1"));
    }
}
