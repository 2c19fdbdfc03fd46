//! replica layer: the coordinator and replica state machines of one shard —
//! quorum put and get, sloppy quorum with hinted handoff, read repair
//! (Dynamo §4.5, §4.6, §5, §6.1, §6.4).
//!
//! Job: turn a client's get or put into replica traffic and local storage
//! operations, count acknowledgements against R, W and DW, and answer the
//! client. Serve other coordinators' replica requests. Keep hints for
//! unreachable primaries and hand them back when the primaries return.
//!
//! Shape (sans-IO, as quinn-proto): inputs are `start_put`, `start_get`,
//! `handle_message`, `handle_io_done`, `handle_timeout` (given the current
//! time `now_ms`), `set_reachable` and `set_background_share` (the
//! utilization monitor's pace for hint replay); outputs are drained
//! with `poll_transmit`, `poll_io`, `poll_reply`, `poll_peer_timeout`, and the
//! next deadline is `poll_timeout`. The machine owns no socket, file, clock or
//! random source; the runtime and the simulator in `tests/sim/` drive the same
//! code.
//!
//! Invariants:
//! * a stored sibling set is only ever replaced by its merge with incoming
//!   data (`SiblingSet::merge`) or by a coordinator `update` of it: a
//!   replica never drops a sibling the incoming version has not seen (§4.4);
//! * read-modify-writes of one key are serialised through a per-key lock,
//!   so two merges or two coordinator updates never race and no dot of this
//!   shard's actor is ever issued twice;
//! * a put is acknowledged to the client only after W replicas, DW of them
//!   durably, hold the write; the coordinator's own copy is written first
//!   (durably when DW >= 1) and the set it sends is the result of that write;
//! * a hint is written durably and deleted only after its primary
//!   acknowledged a durable merge of exactly the set that is deleted;
//! * hint replays start at the background share's pace, never fewer than
//!   one per interval, and a replay's deadline runs from its send only, so
//!   this node's own waits never report a primary to the failure detector;
//! * every queue and table has a `*_MAX` bound; over it, the request gets a
//!   clear `ReplicaError::Overloaded`.
//!
//! `docs/replication.md` describes the machines, the messages and what the
//! simulator proves.
//!
//! The driver loop, on a one-node "cluster" (N = W = R = 1) whose store is a
//! map:
//!
//! ```
//! use std::collections::BTreeMap;
//! use bytes::Bytes;
//! use dynakv::membership::NodeId;
//! use dynakv::replica::*;
//! use dynakv::version::{Value, VersionVector};
//!
//! let me = NodeId(1);
//! let quorum = QuorumConfig { n: 1, r: 1, w: 1, dw: 1 };
//! let config = ReplicaConfig { quorum, ..ReplicaConfig::default() };
//! let mut replica = Replica::new(me, actor_id(me, 0, 1), config, 0);
//! let preference = Preference { primaries: vec![me], fallbacks: vec![] };
//! let mut store: BTreeMap<(Namespace, u32, Bytes), Bytes> = BTreeMap::new();
//!
//! // The driver: perform storage I/O, send messages, deliver replies.
//! fn drive(replica: &mut Replica, store: &mut BTreeMap<(Namespace, u32, Bytes), Bytes>)
//!     -> Vec<ClientReply>
//! {
//!     let mut replies = Vec::new();
//!     while let Some(io) = replica.poll_io() {
//!         let (id, result) = match io {
//!             IoRequest::Read { io, namespace, partition, key } => {
//!                 (io, IoResult::Read(store.get(&(namespace, partition, key)).cloned()))
//!             }
//!             IoRequest::Write { io, namespace, partition, key, payload, .. } => {
//!                 store.insert((namespace, partition, key), payload);
//!                 (io, IoResult::Done)
//!             }
//!             IoRequest::Delete { io, namespace, partition, key } => {
//!                 store.remove(&(namespace, partition, key));
//!                 (io, IoResult::Done)
//!             }
//!             IoRequest::ListHints { io } => (io, IoResult::HintKeys(Vec::new())),
//!         };
//!         replica.handle_io_done(0, id, result);
//!         replies.extend(std::iter::from_fn(|| replica.poll_reply()));
//!     }
//!     assert!(replica.poll_transmit().is_none(), "N = 1: nobody to talk to");
//!     replies
//! }
//!
//! replica.start_put(0, 42, PutRequest {
//!     key: Bytes::from_static(b"cart"),
//!     partition: 0,
//!     context: VersionVector::new(),
//!     value: Value::Data(Bytes::from_static(b"milk")),
//!     preference: preference.clone(),
//!     quorum: None,
//! });
//! let replies = drive(&mut replica, &mut store);
//! assert!(matches!(replies[..], [ClientReply::Put { id: 42, result: Ok(_) }]));
//!
//! replica.start_get(0, 43, GetRequest {
//!     key: Bytes::from_static(b"cart"), partition: 0, preference, r: None,
//! });
//! match &drive(&mut replica, &mut store)[..] {
//!     [ClientReply::Get { id: 43, result: Ok(outcome) }] => {
//!         assert_eq!(outcome.siblings.data_values(), vec![&Bytes::from_static(b"milk")]);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

mod io;
mod message;
mod node;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

pub use io::{perform_io, perform_io_now, perform_write};
pub use message::{ReplicaMessage, RequestId};
pub use node::{
    actor_id, hint_key, parse_hint_key, ClientReply, ClientRequestId, GetOutcome, GetRequest, IoId,
    IoRequest, IoResult, KeyLock, Namespace, Preference, PutOutcome, PutRequest, QuorumConfig,
    Replica, ReplicaConfig, ReplicaError, Transmit,
};
pub use wire::WireError;

/// The longest key the replica layer accepts or decodes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// The longest encoded sibling set a message may carry.
pub const SIBLING_SET_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The most coordinator requests (gets and puts) in flight on one shard.
pub const REQUESTS_MAX: usize = 4096;

/// The most local read-modify-write operations queued on one shard.
pub const LOCAL_OPS_MAX: usize = 16 * 1024;

/// The most queued operations of one key that ride on one write
/// (`Replica::absorb_queued`, docs/replication.md §2): a bound on the work of
/// one read-modify-write, not on its bytes.
pub const RIDERS_MAX: usize = 256;

/// The most hints one shard keeps in its index.
pub const HINTS_MAX: usize = 1 << 20;
