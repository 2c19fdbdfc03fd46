//! The byte-level record format (docs/storage.md §2): encoding into a buffer and
//! validating decoding. Pure functions over byte slices; no I/O.
//!
//! Invariant: `decode` accepts a record only if magic, version, flags, bounds and both
//! CRCs check out; a length field is used to skip only once the header CRC covering it
//! has passed.

use super::Namespace;

pub(crate) const MAGIC: u32 = 0x5256_4B44;
pub(crate) const FORMAT_VERSION: u8 = 1;
pub(crate) const HEADER_BYTES: usize = 32;
pub(crate) const TRAILER_BYTES: usize = 4;
/// Header and trailer bytes around key and payload.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = HEADER_BYTES + TRAILER_BYTES;

/// What a record on disk means (a superset of the public `RecordKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Value = 1,
    Tombstone = 2,
    Purge = 3,
    DropPartition = 4,
    Seal = 5,
}

impl Kind {
    pub(crate) fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Value),
            2 => Some(Kind::Tombstone),
            3 => Some(Kind::Purge),
            4 => Some(Kind::DropPartition),
            5 => Some(Kind::Seal),
            _ => None,
        }
    }
}

/// The decoded header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    pub ns: Namespace,
    pub partition: u32,
    pub key_len: usize,
    pub payload_len: usize,
    pub seq: u64,
}

impl Header {
    pub(crate) fn record_len(&self) -> usize {
        record_len(self.key_len, self.payload_len)
    }
}

pub(crate) fn record_len(key_len: usize, payload_len: usize) -> usize {
    RECORD_OVERHEAD_BYTES + key_len + payload_len
}

/// A fresh CRC-32 hasher. `crc32fast::Hasher::new` asks which CPU
/// features there are each time (about 40 instructions, twice per record
/// encoded); a copy of one made once is the same hasher without asking.
fn crc_hasher() -> crc32fast::Hasher {
    static PROTOTYPE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone()
}

/// `crc32fast::hash`, from `crc_hasher`.
fn crc(bytes: &[u8]) -> u32 {
    let mut hasher = crc_hasher();
    hasher.update(bytes);
    hasher.finalize()
}

/// Writes the 32 header bytes, including the header CRC over them and the key.
fn encode_header(out: &mut [u8; HEADER_BYTES], header: &Header, key: &[u8]) {
    assert_eq!(header.key_len, key.len());
    assert!(key.len() <= u16::MAX as usize);
    assert!(header.payload_len <= u32::MAX as usize);
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4] = FORMAT_VERSION;
    out[5] = header.kind as u8;
    out[6] = header.ns as u8;
    out[7] = 0;
    out[8..12].copy_from_slice(&header.partition.to_le_bytes());
    out[12..14].copy_from_slice(&(key.len() as u16).to_le_bytes());
    out[14..16].copy_from_slice(&[0, 0]);
    out[16..20].copy_from_slice(&(header.payload_len as u32).to_le_bytes());
    out[20..28].copy_from_slice(&header.seq.to_le_bytes());
    let mut hasher = crc_hasher();
    hasher.update(&out[0..28]);
    hasher.update(key);
    out[28..32].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// Encodes one record into `out`, which is exactly `record_len` bytes: the write
/// buffer hands it a slice of DMA memory, so the record is written once, in place.
pub(crate) fn encode(out: &mut [u8], header: &Header, key: &[u8], payload: &[u8]) {
    assert_eq!(header.key_len, key.len());
    assert_eq!(header.payload_len, payload.len());
    assert!(key.len() <= u16::MAX as usize);
    assert!(payload.len() <= u32::MAX as usize);
    let len = header.record_len();
    assert_eq!(out.len(), len);
    encode_header(
        (&mut out[..HEADER_BYTES]).try_into().expect("32 bytes"),
        header,
        key,
    );
    out[HEADER_BYTES..HEADER_BYTES + key.len()].copy_from_slice(key);
    let payload_start = HEADER_BYTES + key.len();
    out[payload_start..payload_start + payload.len()].copy_from_slice(payload);
    // One pass over the contiguous bytes: three short updates (header, key, payload)
    // cost more for small records, where crc32fast's vector path does not start.
    let crc = crc(&out[..len - TRAILER_BYTES]);
    out[len - TRAILER_BYTES..].copy_from_slice(&crc.to_le_bytes());
}

/// Bounds a decoder enforces, so a damaged length can never make it read far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub key_bytes_max: usize,
    pub payload_bytes_max: usize,
}

/// The outcome of decoding at one position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole, valid record.
    Valid(Header),
    /// The header (and key) validated but the record is cut short or its payload CRC
    /// fails: the lengths are trustworthy, the content is not.
    BadPayload(Header),
    /// Nothing trustworthy at this position.
    Invalid,
}

/// Parses the header fields at the start of `bytes` and checks the header CRC.
pub(crate) fn decode_header(bytes: &[u8], limits: Limits) -> Option<Header> {
    if bytes.len() < HEADER_BYTES {
        return None;
    }
    if u32::from_le_bytes(bytes[0..4].try_into().ok()?) != MAGIC {
        return None;
    }
    if bytes[4] != FORMAT_VERSION || bytes[7] != 0 || bytes[14] != 0 || bytes[15] != 0 {
        return None;
    }
    let kind = Kind::from_u8(bytes[5])?;
    let ns = Namespace::from_u8(bytes[6])?;
    let partition = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    let key_len = u16::from_le_bytes(bytes[12..14].try_into().ok()?) as usize;
    let payload_len = u32::from_le_bytes(bytes[16..20].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(bytes[20..28].try_into().ok()?);
    if key_len > limits.key_bytes_max || payload_len > limits.payload_bytes_max {
        return None;
    }
    if bytes.len() < HEADER_BYTES + key_len {
        return None;
    }
    let mut hasher = crc_hasher();
    hasher.update(&bytes[0..28]);
    hasher.update(&bytes[32..32 + key_len]);
    let header_crc = u32::from_le_bytes(bytes[28..32].try_into().ok()?);
    if hasher.finalize() != header_crc {
        return None;
    }
    Some(Header {
        kind,
        ns,
        partition,
        key_len,
        payload_len,
        seq,
    })
}

/// Decodes the record at the start of `bytes`, checking everything.
pub(crate) fn decode(bytes: &[u8], limits: Limits) -> Decoded {
    let Some(header) = decode_header(bytes, limits) else {
        return Decoded::Invalid;
    };
    let len = header.record_len();
    if bytes.len() < len {
        return Decoded::BadPayload(header);
    }
    let crc = u32::from_le_bytes(bytes[len - 4..len].try_into().expect("4 bytes"));
    if self::crc(&bytes[..len - TRAILER_BYTES]) != crc {
        return Decoded::BadPayload(header);
    }
    Decoded::Valid(header)
}

/// The key of a record whose header has been validated.
pub(crate) fn key_of<'a>(bytes: &'a [u8], header: &Header) -> &'a [u8] {
    &bytes[HEADER_BYTES..HEADER_BYTES + header.key_len]
}

/// The payload of a record that has been validated.
pub(crate) fn payload_of<'a>(bytes: &'a [u8], header: &Header) -> &'a [u8] {
    let start = HEADER_BYTES + header.key_len;
    &bytes[start..start + header.payload_len]
}

/// One valid record found by a scan.
#[derive(Debug, Clone)]
pub(crate) struct ScannedRecord {
    pub header: Header,
    pub offset: u64,
}

/// A damaged byte range found by a scan, followed by a valid record.
#[derive(Debug, Clone)]
pub(crate) struct DamagedRange {
    pub offset: u64,
    pub len: u64,
    /// The header of the damaged record when its header CRC held.
    pub header: Option<Header>,
    pub key: Option<Vec<u8>>,
}

/// The result of scanning a whole segment.
#[derive(Debug, Default)]
pub(crate) struct ScanResult {
    pub records: Vec<ScannedRecord>,
    pub damaged: Vec<DamagedRange>,
    /// Where the valid data ends (the segment's logical length).
    pub valid_end: u64,
    /// Bytes after `valid_end` that are not zero padding (a torn or damaged tail).
    pub torn_tail_bytes: u64,
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// Bytes from `pos` up to the last non-zero byte: the damaged tail, without the zero
/// padding or preallocated space after it.
fn garbage_len(bytes: &[u8], pos: usize) -> u64 {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    end.saturating_sub(pos) as u64
}

/// Scans a segment's bytes (docs/storage.md §6 step 3).
pub(crate) fn scan(bytes: &[u8], limits: Limits) -> ScanResult {
    let mut result = ScanResult::default();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        match decode(rest, limits) {
            Decoded::Valid(header) => {
                result.records.push(ScannedRecord {
                    header,
                    offset: pos as u64,
                });
                pos += header.record_len();
                continue;
            }
            Decoded::BadPayload(_) | Decoded::Invalid if all_zero(rest) => break,
            Decoded::BadPayload(header) => {
                // The header CRC passed, so its lengths are trusted: try the next record
                // right after it first, and scan byte by byte only if that fails.
                let next = pos + header.record_len();
                let key = key_of(rest, &header).to_vec();
                if next <= bytes.len()
                    && (next == bytes.len()
                        || all_zero(&bytes[next..])
                        || matches!(decode(&bytes[next..], limits), Decoded::Valid(_)))
                {
                    if next == bytes.len() || all_zero(&bytes[next..]) {
                        // Damage in the last record: a torn tail.
                        result.torn_tail_bytes = garbage_len(bytes, pos);
                        break;
                    }
                    result.damaged.push(DamagedRange {
                        offset: pos as u64,
                        len: (next - pos) as u64,
                        header: Some(header),
                        key: Some(key),
                    });
                    pos = next;
                    continue;
                }
                match resync(bytes, pos + 1, limits) {
                    Some(next) => {
                        result.damaged.push(DamagedRange {
                            offset: pos as u64,
                            len: (next - pos) as u64,
                            header: Some(header),
                            key: Some(key),
                        });
                        pos = next;
                    }
                    None => {
                        result.torn_tail_bytes = garbage_len(bytes, pos);
                        break;
                    }
                }
            }
            Decoded::Invalid => match resync(bytes, pos + 1, limits) {
                Some(next) => {
                    result.damaged.push(DamagedRange {
                        offset: pos as u64,
                        len: (next - pos) as u64,
                        header: None,
                        key: None,
                    });
                    pos = next;
                }
                None => {
                    result.torn_tail_bytes = garbage_len(bytes, pos);
                    break;
                }
            },
        }
    }
    result.valid_end = pos.min(bytes.len()) as u64;
    result
}

/// Finds the first position at or after `from` where a whole valid record starts.
fn resync(bytes: &[u8], from: usize, limits: Limits) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut pos = from;
    while pos + HEADER_BYTES <= bytes.len() {
        let window = &bytes[pos..];
        let found = window.windows(4).position(|w| w == magic)?;
        pos += found;
        if matches!(decode(&bytes[pos..], limits), Decoded::Valid(_)) {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        key_bytes_max: 1024,
        payload_bytes_max: 1 << 20,
    };

    fn rec(seq: u64, key: &[u8], payload: &[u8]) -> Vec<u8> {
        let header = Header {
            kind: Kind::Value,
            ns: Namespace::Data,
            partition: 7,
            key_len: key.len(),
            payload_len: payload.len(),
            seq,
        };
        let mut out = vec![0u8; header.record_len()];
        encode(&mut out, &header, key, payload);
        out
    }

    #[test]
    fn round_trip_and_every_single_bit_flip_is_detected() {
        let bytes = rec(9, b"key", b"payload");
        let Decoded::Valid(h) = decode(&bytes, LIMITS) else {
            panic!("valid record rejected");
        };
        assert_eq!(h.seq, 9);
        assert_eq!(key_of(&bytes, &h), b"key");
        assert_eq!(payload_of(&bytes, &h), b"payload");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&damaged, LIMITS), Decoded::Valid(_)),
                "flip of bit {bit} not detected"
            );
        }
    }

    #[test]
    fn scan_reports_middle_damage_and_truncates_tail() {
        let mut seg = Vec::new();
        seg.extend(rec(1, b"a", b"1111"));
        let second = seg.len();
        seg.extend(rec(2, b"b", b"2222"));
        seg.extend(rec(3, b"c", b"3333"));
        let tail = seg.len();
        seg.extend(&rec(4, b"d", b"4444")[..20]);
        seg.extend([0u8; 100]);
        // Damage the header of the second record: its key is unknown, the scan resyncs.
        seg[second + 9] ^= 0x40;
        let result = scan(&seg, LIMITS);
        assert_eq!(result.records.len(), 2);
        assert_eq!(result.damaged.len(), 1);
        assert_eq!(result.damaged[0].offset, second as u64);
        assert!(result.damaged[0].key.is_none());
        assert_eq!(result.valid_end, tail as u64);
        // The cut record's non-zero bytes count; the zero padding after it does not.
        assert!(result.torn_tail_bytes > 0 && result.torn_tail_bytes <= 20);
    }

    #[test]
    fn scan_names_the_key_of_a_damaged_payload() {
        let mut seg = Vec::new();
        seg.extend(rec(1, b"a", b"1111"));
        let second = seg.len();
        seg.extend(rec(2, b"b", b"2222"));
        seg.extend(rec(3, b"c", b"3333"));
        let end = seg.len();
        seg.extend([0u8; 64]);
        seg[second + HEADER_BYTES + 1 + 2] ^= 1;
        let result = scan(&seg, LIMITS);
        assert_eq!(result.records.len(), 2);
        assert_eq!(result.damaged[0].key.as_deref(), Some(&b"b"[..]));
        assert_eq!(result.valid_end, end as u64);
        assert_eq!(result.torn_tail_bytes, 0);
    }
}
