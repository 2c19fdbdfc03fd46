//! Errors of the version layer: one enum for sibling sets and clocks (decoding
//! and bound violations), one for client context tokens.
//!
//! `thiserror` is not a dependency, so `Display` and `Error` are written by hand.

use std::fmt;

/// Why a sibling set or version vector was refused, either while decoding
/// bytes from outside the process or because an operation would cross a bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionError {
    /// The input ended in the middle of a field.
    Truncated,
    /// The first byte names an encoding this build does not know.
    UnknownFormatVersion(u8),
    /// A varint was longer than 10 bytes, overflowed `u64`, or was not minimal.
    VarintMalformed,
    /// Bytes were left after the last field.
    TrailingBytes { count: usize },
    /// More clock entries than the bound allows.
    ClockEntriesOverflow { count: u64, max: usize },
    /// More siblings than the bound allows (for `update`: resolve siblings by
    /// writing with the context of a get first).
    SiblingsOverflow { count: u64, max: usize },
    /// Clock entries must be sorted by actor, without duplicates.
    ActorsNotSorted,
    /// A clock counter of zero carries no information and is never encoded.
    CounterZero,
    /// A sibling's dot must lie in `1..=counter` of its entry.
    DotOutOfRange { dot: u64, counter: u64 },
    /// The dots of one entry's siblings must be strictly increasing.
    DotsNotSorted,
    /// A sibling's value tag is neither data nor tombstone.
    UnknownValueTag(u8),
    /// A length field points past the end of the input.
    LengthOutOfRange { length: u64, remaining: usize },
    /// A new dot would overflow its actor's `u64` counter (only reachable with
    /// a forged context that claims a counter near `u64::MAX`).
    CounterOverflow { actor: u64 },
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionError::Truncated => write!(f, "version data truncated"),
            VersionError::UnknownFormatVersion(v) => {
                write!(f, "unknown version data format {v}")
            }
            VersionError::VarintMalformed => write!(f, "malformed varint in version data"),
            VersionError::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after version data")
            }
            VersionError::ClockEntriesOverflow { count, max } => {
                write!(f, "clock has {count} entries, more than the maximum {max}")
            }
            VersionError::SiblingsOverflow { count, max } => write!(
                f,
                "{count} siblings, more than the maximum {max}; \
                 read the key and write with its context to resolve them"
            ),
            VersionError::ActorsNotSorted => write!(f, "clock actors not strictly increasing"),
            VersionError::CounterZero => write!(f, "clock counter is zero"),
            VersionError::DotOutOfRange { dot, counter } => {
                write!(f, "sibling dot {dot} outside 1..={counter}")
            }
            VersionError::DotsNotSorted => write!(f, "sibling dots not strictly increasing"),
            VersionError::UnknownValueTag(t) => write!(f, "unknown sibling value tag {t}"),
            VersionError::LengthOutOfRange { length, remaining } => {
                write!(f, "length {length} exceeds the {remaining} remaining bytes")
            }
            VersionError::CounterOverflow { actor } => {
                write!(f, "counter of actor {actor:#x} would overflow")
            }
        }
    }
}

impl std::error::Error for VersionError {}

/// Why a client context token was refused. A token comes from a client, so
/// every byte of it is untrusted: a malformed or foreign token is rejected
/// with one of these, never interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// The token is shorter than the smallest valid token.
    TooShort { bytes: usize },
    /// The token is longer than `CONTEXT_BYTES_MAX`.
    TooLong { bytes: usize, max: usize },
    /// The first byte names a token format this build does not know: the
    /// token is foreign or from a newer version.
    UnknownFormatVersion(u8),
    /// The CRC32 at the end does not match: the token was damaged or forged.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// Flags byte has bits set that this format does not define.
    UnknownFlags(u8),
    /// The checksum matched but the body is not a valid clock.
    Clock(VersionError),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::TooShort { bytes } => {
                write!(f, "context token of {bytes} bytes is too short")
            }
            ContextError::TooLong { bytes, max } => {
                write!(
                    f,
                    "context token of {bytes} bytes exceeds the maximum {max}"
                )
            }
            ContextError::UnknownFormatVersion(v) => write!(
                f,
                "context token format {v} is unknown (foreign or newer token)"
            ),
            ContextError::ChecksumMismatch { stored, computed } => write!(
                f,
                "context token checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            ContextError::UnknownFlags(flags) => {
                write!(f, "context token has unknown flags {flags:#04x}")
            }
            ContextError::Clock(e) => write!(f, "context token clock invalid: {e}"),
        }
    }
}

impl std::error::Error for ContextError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ContextError::Clock(e) => Some(e),
            _ => None,
        }
    }
}
