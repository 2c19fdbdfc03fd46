//! Hint files (docs/storage.md §3): a CRC-protected snapshot of the records of one
//! sealed segment, so a restart reads about key length + 24 bytes per record instead
//! of the whole segment. Pure encoding and validating decoding.

use super::record::{Header, Kind, Limits};
use super::Namespace;

const HINT_MAGIC: u32 = 0x4856_4B44;
const HINT_VERSION: u8 = 1;
const HINT_HEADER_BYTES: usize = 24;
const HINT_ENTRY_BYTES: usize = 24;

/// One record as described by a hint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HintEntry {
    pub header: Header,
    pub offset: u64,
    pub key: Vec<u8>,
}

/// Encodes the hint file of `segment` (`segment_len_bytes` long) listing `entries`.
pub(crate) fn encode(segment: u32, segment_len_bytes: u64, entries: &[HintEntry]) -> Vec<u8> {
    let size: usize = HINT_HEADER_BYTES
        + entries
            .iter()
            .map(|e| HINT_ENTRY_BYTES + e.key.len())
            .sum::<usize>()
        + 4;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&HINT_MAGIC.to_le_bytes());
    out.extend_from_slice(&[HINT_VERSION, 0, 0, 0]);
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(&segment_len_bytes.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        assert_eq!(e.key.len(), e.header.key_len);
        out.push(e.header.kind as u8);
        out.push(e.header.ns as u8);
        out.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&e.header.partition.to_le_bytes());
        out.extend_from_slice(&(e.offset as u32).to_le_bytes());
        out.extend_from_slice(&(e.header.payload_len as u32).to_le_bytes());
        out.extend_from_slice(&e.header.seq.to_le_bytes());
        out.extend_from_slice(&e.key);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(out.len(), size);
    out
}

/// Decodes a hint file; `None` when anything does not check out (the caller scans).
/// Returns the segment length the hint describes and its entries.
pub(crate) fn decode(bytes: &[u8], segment: u32, limits: Limits) -> Option<(u64, Vec<HintEntry>)> {
    if bytes.len() < HINT_HEADER_BYTES + 4 {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(0) != HINT_MAGIC || body[4] != HINT_VERSION {
        return None;
    }
    if u32_at(8) != segment {
        return None;
    }
    let segment_len_bytes = u64::from_le_bytes(body[12..20].try_into().ok()?);
    let count = u32_at(20) as usize;
    let mut entries = Vec::with_capacity(count.min(body.len() / HINT_ENTRY_BYTES));
    let mut pos = HINT_HEADER_BYTES;
    for _ in 0..count {
        if pos + HINT_ENTRY_BYTES > body.len() {
            return None;
        }
        let e = &body[pos..pos + HINT_ENTRY_BYTES];
        let kind = Kind::from_u8(e[0])?;
        let ns = Namespace::from_u8(e[1])?;
        let key_len = u16::from_le_bytes([e[2], e[3]]) as usize;
        let partition = u32::from_le_bytes(e[4..8].try_into().ok()?);
        let offset = u32::from_le_bytes(e[8..12].try_into().ok()?) as u64;
        let payload_len = u32::from_le_bytes(e[12..16].try_into().ok()?) as usize;
        let seq = u64::from_le_bytes(e[16..24].try_into().ok()?);
        if key_len > limits.key_bytes_max || payload_len > limits.payload_bytes_max {
            return None;
        }
        pos += HINT_ENTRY_BYTES;
        if pos + key_len > body.len() {
            return None;
        }
        let header = Header {
            kind,
            ns,
            partition,
            key_len,
            payload_len,
            seq,
        };
        if offset + header.record_len() as u64 > segment_len_bytes {
            return None;
        }
        entries.push(HintEntry {
            header,
            offset,
            key: body[pos..pos + key_len].to_vec(),
        });
        pos += key_len;
    }
    if pos != body.len() {
        return None;
    }
    Some((segment_len_bytes, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_rejected() {
        let limits = Limits {
            key_bytes_max: 64,
            payload_bytes_max: 1024,
        };
        let entries = vec![HintEntry {
            header: Header {
                kind: Kind::Value,
                ns: Namespace::Hint,
                partition: 3,
                key_len: 2,
                payload_len: 10,
                seq: 77,
            },
            offset: 100,
            key: b"k1".to_vec(),
        }];
        let bytes = encode(5, 4096, &entries);
        assert_eq!(decode(&bytes, 5, limits), Some((4096, entries)));
        assert_eq!(decode(&bytes, 6, limits), None);
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x10;
            assert_eq!(decode(&d, 5, limits), None, "damage at {i} accepted");
        }
    }
}
