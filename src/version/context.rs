//! `Context`: the opaque token a get hands to the client and a put/delete
//! hands back (§4.4), also naming the replica that answered the read first so
//! the client can coordinate its next write there (§6.4).
//!
//! Invariant: a token is untrusted input. `decode` checks its size, format
//! byte and CRC32 before reading anything else, then validates the clock, so
//! a garbage, truncated or foreign token is refused with a `ContextError`.

use std::cell::Cell;

use super::clock::{encode_entries, VersionVector};
use super::codec::{varint_bytes, Reader, VARINT_BYTES_MAX};
use super::crc::{crc32, crc32_finish, crc32_update, CRC32_START};
use super::error::ContextError;
use super::view::EncodedSiblingSet;
use super::{ActorId, CLOCK_ENTRIES_MAX};

/// Format byte of the context token; see `docs/versioning.md`.
pub const CONTEXT_FORMAT_VERSION: u8 = 1;

/// Flag bit: a fastest-replica actor id follows the flags byte.
const FLAG_FASTEST_REPLICA: u8 = 0x01;

const CHECKSUM_BYTES: usize = 4;

/// Format byte, flags, entry count (0) and checksum.
const CONTEXT_BYTES_MIN: usize = 1 + 1 + 1 + CHECKSUM_BYTES;

/// The largest valid token: format, flags, fastest replica, entry count
/// (two varint bytes cover `CLOCK_ENTRIES_MAX`), every entry at its widest,
/// checksum.
pub const CONTEXT_BYTES_MAX: usize =
    1 + 1 + VARINT_BYTES_MAX + 2 + CLOCK_ENTRIES_MAX * 2 * VARINT_BYTES_MAX + CHECKSUM_BYTES;

/// The content of a context token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// What the client saw: the clock of the sibling set its get returned.
    pub clock: VersionVector,
    /// The replica that answered the get first ("write to the fastest
    /// reader", §6.4); the client routes its next put for the key there.
    pub fastest_replica: Option<ActorId>,
}

impl Context {
    pub fn encode(&self) -> Vec<u8> {
        // Sized for the widest varints: the token is built without regrowing.
        let mut out = Vec::with_capacity(
            CONTEXT_BYTES_MIN + VARINT_BYTES_MAX + self.clock.len() * 2 * VARINT_BYTES_MAX,
        );
        self.encode_into(&mut out);
        out
    }

    /// Appends the token to `out` (a caller's reusable buffer).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_token_into(
            self.clock.entries().iter().copied(),
            self.fastest_replica,
            out,
        );
    }

    pub fn decode(bytes: &[u8]) -> Result<Context, ContextError> {
        let mut entries = Vec::new();
        let fastest_replica = Self::decode_into(bytes, &mut entries)?;
        Ok(Context {
            clock: VersionVector::from_sorted_unchecked(entries),
            fastest_replica,
        })
    }

    /// `decode`, with the clock's entries (ascending actors, counters above
    /// 0) put in `entries`, a caller's reusable buffer, instead of a new
    /// `VersionVector`: a put decodes its context without an allocation.
    /// Returns the fastest replica. On an error `entries` holds no more
    /// than the token's bytes could describe; its content is unspecified.
    pub fn decode_clock_into(
        bytes: &[u8],
        entries: &mut Vec<(ActorId, u64)>,
    ) -> Result<Option<ActorId>, ContextError> {
        entries.clear();
        Self::decode_into(bytes, entries)
    }

    fn decode_into(
        bytes: &[u8],
        entries: &mut Vec<(ActorId, u64)>,
    ) -> Result<Option<ActorId>, ContextError> {
        if bytes.len() > CONTEXT_BYTES_MAX {
            return Err(ContextError::TooLong {
                bytes: bytes.len(),
                max: CONTEXT_BYTES_MAX,
            });
        }
        if bytes.len() < CONTEXT_BYTES_MIN {
            return Err(ContextError::TooShort { bytes: bytes.len() });
        }
        if bytes[0] != CONTEXT_FORMAT_VERSION {
            return Err(ContextError::UnknownFormatVersion(bytes[0]));
        }
        let (body, checksum_bytes) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        let mut stored = [0u8; CHECKSUM_BYTES];
        stored.copy_from_slice(checksum_bytes);
        let stored = u32::from_le_bytes(stored);
        let computed = crc32(body);
        if stored != computed {
            return Err(ContextError::ChecksumMismatch { stored, computed });
        }
        let mut reader = Reader::new(&body[1..]);
        let flags = reader.u8().map_err(ContextError::Clock)?;
        if flags & !FLAG_FASTEST_REPLICA != 0 {
            return Err(ContextError::UnknownFlags(flags));
        }
        let fastest_replica = if flags & FLAG_FASTEST_REPLICA != 0 {
            Some(reader.varint().map_err(ContextError::Clock)?)
        } else {
            None
        };
        VersionVector::decode_body_into(&mut reader, entries).map_err(ContextError::Clock)?;
        reader.finish().map_err(ContextError::Clock)?;
        Ok(fastest_replica)
    }
}

/// Appends the token of the context with `clock`'s entries and
/// `fastest_replica`, exactly what `Context::encode_into` writes, without
/// building the `VersionVector`: a sibling set's clock
/// (`SiblingSet::clock_entries`) goes straight into its get's token.
/// `clock` must hold what a `VersionVector` does (ascending actors,
/// counters above 0).
pub fn encode_token_into(
    clock: impl ExactSizeIterator<Item = (ActorId, u64)>,
    fastest_replica: Option<ActorId>,
    out: &mut Vec<u8>,
) {
    assert!(clock.len() <= CLOCK_ENTRIES_MAX);
    encode_token_with(fastest_replica, |out| encode_entries(clock, out), out);
}

/// The buffer `encode_token_to` writes into: the largest token, and room
/// for one varint written 10 bytes wide past its end.
pub const TOKEN_BUFFER_BYTES: usize = CONTEXT_BYTES_MAX + VARINT_BYTES_MAX;

/// `encode_token_into` at the start of a fixed buffer, which always has
/// room (no `Vec` growth checks, each varint one fixed-width copy);
/// returns the token's length. An in-place put's reply token is written
/// so, straight into what the reply holds. The bytes are
/// `encode_token_into`'s (`encode_token_to_writes_encode_token_into`).
pub fn encode_token_to(
    clock: impl ExactSizeIterator<Item = (ActorId, u64)>,
    fastest_replica: Option<ActorId>,
    out: &mut [u8; TOKEN_BUFFER_BYTES],
) -> usize {
    assert!(clock.len() <= CLOCK_ENTRIES_MAX);
    // Every varint starts at most `CONTEXT_BYTES_MAX - CHECKSUM_BYTES - 1`
    // bytes in, so its 10-byte copy stays inside the buffer.
    let varint = |out: &mut [u8; TOKEN_BUFFER_BYTES], at: usize, value: u64| -> usize {
        let mut bytes = [0; VARINT_BYTES_MAX];
        let len = varint_bytes(value, &mut bytes);
        out[at..at + VARINT_BYTES_MAX].copy_from_slice(&bytes);
        at + len
    };
    // The head (format, flags, fastest replica) as `encode_token_with`
    // writes it: all of its bytes in one fixed-width copy, and the CRC
    // continued from the register after it.
    let head = token_head(fastest_replica);
    out[..head.bytes.len()].copy_from_slice(&head.bytes);
    let mut at = varint(out, head.len, clock.len() as u64);
    let mut previous: ActorId = 0;
    for (actor, counter) in clock {
        debug_assert!(previous == 0 || actor > previous);
        debug_assert!(counter > 0);
        at = varint(out, at, actor - previous);
        at = varint(out, at, counter);
        previous = actor;
    }
    let checksum = crc32_finish(crc32_update(head.crc, &out[head.len..at]));
    out[at..at + CHECKSUM_BYTES].copy_from_slice(&checksum.to_le_bytes());
    at += CHECKSUM_BYTES;
    assert!((CONTEXT_BYTES_MIN..=CONTEXT_BYTES_MAX).contains(&at));
    at
}

/// `encode_token_into(set.clock_entries(), fastest_replica, out)`, with the
/// clock's bytes copied from the set's encoding (`write_clock`) instead of
/// decoded and encoded again: the token of a get answered from a stored set.
pub fn encode_set_token_into<B: AsRef<[u8]>>(
    set: &EncodedSiblingSet<B>,
    fastest_replica: Option<ActorId>,
    out: &mut Vec<u8>,
) {
    encode_token_with(fastest_replica, |out| set.write_clock(out), out);
}

/// A token's bytes before its clock (format byte, flags, the fastest
/// replica's varint) for one fastest replica, and the CRC register after
/// them.
#[derive(Clone, Copy)]
struct TokenHead {
    fastest_replica: Option<ActorId>,
    bytes: [u8; 2 + VARINT_BYTES_MAX],
    len: usize,
    crc: u32,
}

impl TokenHead {
    fn new(fastest_replica: Option<ActorId>) -> TokenHead {
        let mut bytes = [0u8; 2 + VARINT_BYTES_MAX];
        bytes[0] = CONTEXT_FORMAT_VERSION;
        let len = match fastest_replica {
            Some(actor) => {
                bytes[1] = FLAG_FASTEST_REPLICA;
                let varint: &mut [u8; VARINT_BYTES_MAX] = (&mut bytes[2..])
                    .try_into()
                    .expect("ten bytes after the flags");
                2 + varint_bytes(actor, varint)
            }
            None => 2,
        };
        TokenHead {
            fastest_replica,
            bytes,
            len,
            crc: crc32_update(CRC32_START, &bytes[..len]),
        }
    }
}

thread_local! {
    /// The head of the last token this thread wrote. A shard's gets name
    /// the same fastest replica (this shard) nearly every time, so its
    /// ten-byte varint and the CRC over it are computed once, not per
    /// reply; another replica's token replaces it.
    static LAST_HEAD: Cell<Option<TokenHead>> = const { Cell::new(None) };
}

/// The head of a token naming `fastest_replica`: the remembered one when it
/// names the same replica, else a new one, remembered from now on.
fn token_head(fastest_replica: Option<ActorId>) -> TokenHead {
    match LAST_HEAD.get() {
        Some(head) if head.fastest_replica == fastest_replica => head,
        _ => {
            let head = TokenHead::new(fastest_replica);
            LAST_HEAD.set(Some(head));
            head
        }
    }
}

/// Appends a token whose clock `clock` appends (entry count, then per entry
/// actor delta and counter, as `encode_entries` writes them).
fn encode_token_with(
    fastest_replica: Option<ActorId>,
    clock: impl FnOnce(&mut Vec<u8>),
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let head = token_head(fastest_replica);
    out.extend_from_slice(&head.bytes[..head.len]);
    let clock_start = out.len();
    clock(out);
    let checksum = crc32_finish(crc32_update(head.crc, &out[clock_start..]));
    out.extend_from_slice(&checksum.to_le_bytes());
    let len = out.len() - start;
    assert!((CONTEXT_BYTES_MIN..=CONTEXT_BYTES_MAX).contains(&len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VersionError;

    #[test]
    fn encode_token_to_writes_encode_token_into() {
        let mut rng = crate::test_rng::Rng(0x51_7cc1_b727_220a);
        let mut next = move || rng.next();
        for case in 0..20_000u32 {
            // Clocks of 0 to 8 entries with actors and counters of every
            // width (small ones too: their varints are one byte).
            let entries = next() as usize % (CLOCK_ENTRIES_MAX + 1);
            let mut actor = 0u64;
            let mut clock = Vec::new();
            for _ in 0..entries {
                let width = next() % 64 + 1;
                let step = (next() >> (64 - width)).max(1);
                let Some(next_actor) = actor.checked_add(step) else {
                    break;
                };
                actor = next_actor;
                let counter = (next() >> (next() % 64)).max(1);
                clock.push((actor, counter));
            }
            let fastest = match case % 3 {
                0 => None,
                1 => Some(next() >> (next() % 64)),
                _ => Some(u64::MAX),
            };
            let mut expected = vec![0xaa];
            encode_token_into(clock.iter().copied(), fastest, &mut expected);
            let mut token = [0x55; TOKEN_BUFFER_BYTES];
            let len = encode_token_to(clock.iter().copied(), fastest, &mut token);
            assert_eq!(&token[..len], &expected[1..], "{clock:?} {fastest:?}");
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let context = Context {
            clock: VersionVector::from_entries(vec![(7 << 16, 3), ((9 << 16) | 2, 1)]).unwrap(),
            fastest_replica: Some(9 << 16 | 2),
        };
        let token = context.encode();
        assert_eq!(Context::decode(&token), Ok(context.clone()));

        let empty = Context::default().encode();
        assert_eq!(empty.len(), CONTEXT_BYTES_MIN);
        assert_eq!(Context::decode(&empty), Ok(Context::default()));

        assert_eq!(
            Context::decode(&token[..3]),
            Err(ContextError::TooShort { bytes: 3 })
        );
        let mut foreign = token.clone();
        foreign[0] = 0x7b; // e.g. a JSON token from another store
        assert_eq!(
            Context::decode(&foreign),
            Err(ContextError::UnknownFormatVersion(0x7b))
        );
        let mut damaged = token.clone();
        let last_body = damaged.len() - CHECKSUM_BYTES - 1;
        damaged[last_body] ^= 0x01;
        assert!(matches!(
            Context::decode(&damaged),
            Err(ContextError::ChecksumMismatch { .. })
        ));
        let long = vec![CONTEXT_FORMAT_VERSION; CONTEXT_BYTES_MAX + 1];
        assert!(matches!(
            Context::decode(&long),
            Err(ContextError::TooLong { .. })
        ));
    }

    #[test]
    fn tokens_for_alternating_replicas_are_whole() {
        // The remembered head is replaced and reused as the fastest replica
        // changes: every token is the one built from scratch (format,
        // flags, varint, clock, CRC over all of it).
        let clock = VersionVector::from_entries(vec![(7 << 16, 3), ((9 << 16) | 2, 1)]).unwrap();
        for fastest in [
            Some(u64::MAX),
            Some(3 << 32),
            Some(3 << 32),
            None,
            None,
            Some(5),
        ] {
            let mut token = vec![0xee];
            encode_token_into(clock.entries().iter().copied(), fastest, &mut token);
            let mut expected = vec![0xee, CONTEXT_FORMAT_VERSION];
            match fastest {
                Some(actor) => {
                    expected.push(FLAG_FASTEST_REPLICA);
                    crate::version::codec::put_varint(&mut expected, actor);
                }
                None => expected.push(0),
            }
            encode_entries(clock.entries().iter().copied(), &mut expected);
            let checksum = crc32fast::hash(&expected[1..]);
            expected.extend_from_slice(&checksum.to_le_bytes());
            assert_eq!(token, expected, "{fastest:?}");
            let context = Context::decode(&token[1..]).expect("a valid token");
            assert_eq!(context.fastest_replica, fastest);
        }
    }

    #[test]
    fn valid_checksum_over_invalid_body_is_refused() {
        // Unsorted actors, checksummed correctly: still refused.
        let mut body = vec![CONTEXT_FORMAT_VERSION, 0, 2, 5, 1, 0, 1];
        let checksum = crc32fast::hash(&body);
        body.extend_from_slice(&checksum.to_le_bytes());
        assert_eq!(
            Context::decode(&body),
            Err(ContextError::Clock(VersionError::ActorsNotSorted))
        );
        // Unknown flag bits.
        let mut body = vec![CONTEXT_FORMAT_VERSION, 0x80, 0];
        let checksum = crc32fast::hash(&body);
        body.extend_from_slice(&checksum.to_le_bytes());
        assert_eq!(
            Context::decode(&body),
            Err(ContextError::UnknownFlags(0x80))
        );
    }

    #[test]
    fn widest_token_fits_the_bound() {
        let entries: Vec<_> = (0..CLOCK_ENTRIES_MAX as u64)
            .map(|i| {
                (
                    u64::MAX - (CLOCK_ENTRIES_MAX as u64 - 1 - i) * (1 << 57),
                    u64::MAX,
                )
            })
            .collect();
        let context = Context {
            clock: VersionVector::from_entries(entries).unwrap(),
            fastest_replica: Some(u64::MAX),
        };
        let token = context.encode();
        assert!(token.len() <= CONTEXT_BYTES_MAX);
        assert_eq!(Context::decode(&token), Ok(context));
    }
}
