//! Carrying out the replica machine's storage requests on a `Store`.
//!
//! The machine asks for storage work through `poll_io` and learns the outcome
//! through `handle_io_done`; this is the one mapping of those requests onto
//! the storage engine, shared by the glommio runtime and the simulator. It
//! awaits the store's own futures and does no I/O of its own (the `Disk`
//! behind the store decides what a write is).

use super::node::{IoId, IoRequest, IoResult};
use crate::storage::{Disk, Durability, Namespace, RecordKind, StorageError, Store};
use bytes::Bytes;

/// Performs `io` at once when it is a read the store can answer without
/// I/O (`Store::get_now`: the key is absent, cached or in the write buffer);
/// otherwise hands it back, for `perform_io`. The runtime uses it to answer
/// most reads without spawning a task; the outcome is the one `perform_io`
/// would give.
pub fn perform_io_now<D: Disk>(
    store: &Store<D>,
    io: IoRequest,
) -> Result<(IoId, IoResult), IoRequest> {
    if let IoRequest::Read {
        io: id,
        namespace,
        partition,
        key,
    } = &io
    {
        if let Some(record) = store.get_now(*namespace, *partition, key) {
            return Ok((*id, IoResult::Read(record.map(|record| record.payload))));
        }
    }
    Err(io)
}

/// Performs `io` on `store`. A storage error is returned as is, so each
/// driver can word `IoResult::Failed` for its own audience.
pub async fn perform_io<D: Disk>(
    store: &Store<D>,
    io: IoRequest,
) -> (IoId, Result<IoResult, StorageError>) {
    match io {
        IoRequest::Read {
            io,
            namespace,
            partition,
            key,
        } => {
            let result = store.get(namespace, partition, &key).await;
            (
                io,
                result.map(|record| IoResult::Read(record.map(|record| record.payload))),
            )
        }
        IoRequest::Write {
            io,
            namespace,
            partition,
            key,
            payload,
            all_tombstones,
            durable,
        } => {
            let result = perform_write(
                store,
                namespace,
                partition,
                &key,
                payload,
                all_tombstones,
                durable,
            )
            .await;
            (io, result.map(|()| IoResult::Done))
        }
        IoRequest::Delete {
            io,
            namespace,
            partition,
            key,
        } => {
            let result = store.purge(namespace, partition, &key).await;
            (io, result.map(|()| IoResult::Done))
        }
        IoRequest::ListHints { io } => {
            let keys = store
                .partitions(Namespace::Hint)
                .into_iter()
                .flat_map(|partition| {
                    store
                        .keys(Namespace::Hint, partition)
                        .into_iter()
                        .map(move |key| (partition, key))
                })
                .collect();
            (io, Ok(IoResult::HintKeys(keys)))
        }
    }
}

/// Performs the write of an `IoRequest::Write` with these fields (what
/// `perform_io` does for one). A caller that only ever writes awaits this
/// future rather than `perform_io`'s, which is as large as the largest of
/// every request kind's.
pub async fn perform_write<D: Disk>(
    store: &Store<D>,
    namespace: Namespace,
    partition: u32,
    key: &[u8],
    payload: Bytes,
    all_tombstones: bool,
    durable: bool,
) -> Result<(), StorageError> {
    // A durable write joins the store's group commit.
    store
        .put(
            namespace,
            partition,
            key,
            RecordKind::of(all_tombstones),
            payload,
            Durability::of(durable),
        )
        .await
}
