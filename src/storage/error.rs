//! The storage layer's error type: one enum for everything that crosses the `Store`
//! boundary. Broken invariants are assertions, not variants.

use std::fmt;
use std::io;

/// Why a storage operation did not succeed.
#[derive(Debug)]
pub enum StorageError {
    /// The key is longer than `StoreConfig::max_key_bytes`.
    KeyTooLarge { len: usize, max: usize },
    /// The payload is longer than `StoreConfig::max_value_bytes`.
    ValueTooLarge { len: usize, max: usize },
    /// The encoded record would exceed the record size bound (header + key + payload).
    RecordTooLarge { len: usize, max: usize },
    /// The disk is full (`ENOSPC`): nothing was written, reads still work, retry later.
    DiskFull,
    /// The store hit a fatal I/O error earlier (e.g. a failed `fdatasync`) and accepts no writes.
    Failed,
    /// `fdatasync` failed; the store is now failed and nothing pending was acknowledged.
    SyncFailed(io::Error),
    /// An I/O error other than `ENOSPC` (opening, reading, writing, renaming, deleting files).
    Io(io::Error),
    /// A stored record failed its checksum when read; its key is marked for repair.
    Corrupt { segment: u32, offset: u64 },
    /// The configuration breaks a bound (e.g. a segment smaller than two maximal records).
    InvalidConfig(&'static str),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::KeyTooLarge { len, max } => {
                write!(f, "key of {len} bytes exceeds the maximum of {max} bytes")
            }
            StorageError::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes exceeds the maximum of {max} bytes")
            }
            StorageError::RecordTooLarge { len, max } => {
                write!(
                    f,
                    "record of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
            StorageError::DiskFull => write!(f, "disk full (ENOSPC): write rejected"),
            StorageError::Failed => write!(f, "store failed after a fatal I/O error"),
            StorageError::SyncFailed(e) => write!(f, "fdatasync failed, store failed: {e}"),
            StorageError::Io(e) => write!(f, "storage I/O error: {e}"),
            StorageError::Corrupt { segment, offset } => {
                write!(f, "corrupt record in segment {segment} at offset {offset}")
            }
            StorageError::InvalidConfig(why) => write!(f, "invalid storage config: {why}"),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<io::Error> for StorageError {
    fn from(e: io::Error) -> Self {
        if is_enospc(&e) {
            StorageError::DiskFull
        } else {
            StorageError::Io(e)
        }
    }
}

/// Whether an I/O error means the device is out of space.
pub(crate) fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}
