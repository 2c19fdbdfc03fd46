//! `AaeMessage`: the anti-entropy exchange between two replicas of a
//! partition, with a hand-written binary codec in the style of
//! `replica::message` (a tag byte, fixed-width little-endian integers,
//! `u32`-length-prefixed byte strings, every count and length bounded before
//! anything is allocated). `decode` never panics.

use bytes::Bytes;

use super::{BRANCHES, KEYS_PER_MESSAGE_MAX, LEAVES, LEAVES_PER_BRANCH};
use crate::replica::wire::{put_bytes, put_u32, put_u64, put_u8, Reader, WireError};
use crate::replica::{KEY_BYTES_MAX, SIBLING_SET_BYTES_MAX};

/// One key's version summary in a `Keys` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    pub key: Bytes,
    /// `version_hash` of the stored sibling set.
    pub version_hash: u64,
    /// Whether the set holds a live value (false: all tombstones).
    pub live: bool,
}

/// One key's stored sibling set (canonical encoding) in a `Repair`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairEntry {
    pub key: Bytes,
    pub siblings: Bytes,
}

/// The exchange, initiator A and responder B (docs/anti-entropy.md §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AaeMessage {
    /// A → B: A's root and branch hashes.
    Root {
        xid: u64,
        partition: u32,
        root: u64,
        branches: Vec<u64>,
    },
    /// B → A: the trees are equal.
    InSync { xid: u64, partition: u32 },
    /// B → A: B's leaf hashes under each branch that differs.
    Leaves {
        xid: u64,
        partition: u32,
        branches: Vec<(u8, Vec<u64>)>,
    },
    /// A → B: the leaves A found different, and A's keys in them.
    Keys {
        xid: u64,
        partition: u32,
        leaves: Vec<u16>,
        keys: Vec<KeyVersion>,
    },
    /// B → A (or a replica repairing a damaged record → any replica): send
    /// me your sets of these keys.
    Want {
        xid: u64,
        partition: u32,
        keys: Vec<Bytes>,
    },
    /// Either way: stored sets for the receiver to merge.
    Repair {
        xid: u64,
        partition: u32,
        entries: Vec<RepairEntry>,
    },
}

impl AaeMessage {
    pub fn partition(&self) -> u32 {
        match self {
            AaeMessage::Root { partition, .. }
            | AaeMessage::InSync { partition, .. }
            | AaeMessage::Leaves { partition, .. }
            | AaeMessage::Keys { partition, .. }
            | AaeMessage::Want { partition, .. }
            | AaeMessage::Repair { partition, .. } => *partition,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AaeMessage::Root {
                xid,
                partition,
                root,
                branches,
            } => {
                assert_eq!(branches.len(), BRANCHES);
                put_u8(out, 1);
                put_u64(out, *xid);
                put_u32(out, *partition);
                put_u64(out, *root);
                for hash in branches {
                    put_u64(out, *hash);
                }
            }
            AaeMessage::InSync { xid, partition } => {
                put_u8(out, 2);
                put_u64(out, *xid);
                put_u32(out, *partition);
            }
            AaeMessage::Leaves {
                xid,
                partition,
                branches,
            } => {
                put_u8(out, 3);
                put_u64(out, *xid);
                put_u32(out, *partition);
                put_u32(out, branches.len() as u32);
                for (branch, leaves) in branches {
                    assert_eq!(leaves.len(), LEAVES_PER_BRANCH);
                    put_u8(out, *branch);
                    for hash in leaves {
                        put_u64(out, *hash);
                    }
                }
            }
            AaeMessage::Keys {
                xid,
                partition,
                leaves,
                keys,
            } => {
                put_u8(out, 4);
                put_u64(out, *xid);
                put_u32(out, *partition);
                put_u32(out, leaves.len() as u32);
                for leaf in leaves {
                    out.extend_from_slice(&leaf.to_le_bytes());
                }
                put_u32(out, keys.len() as u32);
                for key in keys {
                    put_bytes(out, &key.key);
                    put_u64(out, key.version_hash);
                    put_u8(out, u8::from(key.live));
                }
            }
            AaeMessage::Want {
                xid,
                partition,
                keys,
            } => {
                put_u8(out, 5);
                put_u64(out, *xid);
                put_u32(out, *partition);
                put_u32(out, keys.len() as u32);
                for key in keys {
                    put_bytes(out, key);
                }
            }
            AaeMessage::Repair {
                xid,
                partition,
                entries,
            } => {
                put_u8(out, 6);
                put_u64(out, *xid);
                put_u32(out, *partition);
                put_u32(out, entries.len() as u32);
                for entry in entries {
                    put_bytes(out, &entry.key);
                    put_bytes(out, &entry.siblings);
                }
            }
        }
    }

    /// Decodes untrusted bytes; never panics, never allocates more than the
    /// input's own length allows.
    pub fn decode(bytes: &[u8]) -> Result<AaeMessage, WireError> {
        let mut reader = Reader::new(bytes);
        let tag = reader.u8()?;
        let xid = reader.u64()?;
        let partition = reader.u32()?;
        let message = match tag {
            1 => {
                let root = reader.u64()?;
                let mut branches = Vec::with_capacity(BRANCHES);
                for _ in 0..BRANCHES {
                    branches.push(reader.u64()?);
                }
                AaeMessage::Root {
                    xid,
                    partition,
                    root,
                    branches,
                }
            }
            2 => AaeMessage::InSync { xid, partition },
            3 => {
                let count = reader.count(BRANCHES)?;
                let mut branches = Vec::with_capacity(count);
                for _ in 0..count {
                    let branch = reader.u8()?;
                    if branch as usize >= BRANCHES {
                        return Err(WireError::Invalid("branch index"));
                    }
                    let mut leaves = Vec::with_capacity(LEAVES_PER_BRANCH);
                    for _ in 0..LEAVES_PER_BRANCH {
                        leaves.push(reader.u64()?);
                    }
                    branches.push((branch, leaves));
                }
                AaeMessage::Leaves {
                    xid,
                    partition,
                    branches,
                }
            }
            4 => {
                let count = reader.count(LEAVES)?;
                let mut leaves = Vec::with_capacity(count);
                for _ in 0..count {
                    let low = reader.u8()?;
                    let high = reader.u8()?;
                    let leaf = u16::from_le_bytes([low, high]);
                    if leaf as usize >= LEAVES {
                        return Err(WireError::Invalid("leaf index"));
                    }
                    leaves.push(leaf);
                }
                let count = reader.count(KEYS_PER_MESSAGE_MAX)?;
                let mut keys = Vec::with_capacity(count.min(bytes.len() / 13));
                for _ in 0..count {
                    let key = Bytes::copy_from_slice(reader.bytes(KEY_BYTES_MAX)?);
                    let version_hash = reader.u64()?;
                    let live = reader.bool()?;
                    keys.push(KeyVersion {
                        key,
                        version_hash,
                        live,
                    });
                }
                AaeMessage::Keys {
                    xid,
                    partition,
                    leaves,
                    keys,
                }
            }
            5 => {
                let count = reader.count(KEYS_PER_MESSAGE_MAX)?;
                let mut keys = Vec::with_capacity(count.min(bytes.len() / 4));
                for _ in 0..count {
                    keys.push(Bytes::copy_from_slice(reader.bytes(KEY_BYTES_MAX)?));
                }
                AaeMessage::Want {
                    xid,
                    partition,
                    keys,
                }
            }
            6 => {
                let count = reader.count(KEYS_PER_MESSAGE_MAX)?;
                let mut entries = Vec::with_capacity(count.min(bytes.len() / 8));
                for _ in 0..count {
                    let key = Bytes::copy_from_slice(reader.bytes(KEY_BYTES_MAX)?);
                    let siblings = Bytes::copy_from_slice(reader.bytes(SIBLING_SET_BYTES_MAX)?);
                    entries.push(RepairEntry { key, siblings });
                }
                AaeMessage::Repair {
                    xid,
                    partition,
                    entries,
                }
            }
            other => return Err(WireError::UnknownTag(other)),
        };
        reader.finish()?;
        Ok(message)
    }
}
