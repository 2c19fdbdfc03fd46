//! The cluster-aware client: routing, retries and context handling over the
//! client protocol.
//!
//! Job: give applications `get` / `put` / `delete` against a dynakv cluster,
//! sending each request straight to the coordinator shard of its key
//! (Dynamo §6.4, client-driven coordination) and keeping many requests in
//! flight per connection.
//!
//! Layers:
//! * `core` — the sans-IO state machine (ids, encoding, routing, reply
//!   matching, the WrongOwner retry, timeouts as data). No I/O, no clock.
//! * `blocking` — a thin `std::net` front end.
//! * `glommio` — a thin async front end for glommio executors.
//!
//! Invariant: the front ends only move bytes and time in and out of the
//! core; every decision is the core's, so it is tested without sockets.

mod blocking;
mod core;
mod error;
pub mod glommio;

pub use self::blocking::{Client, ClientOptions, GetResult};
pub use self::core::{
    key_hash, partition_of, ClientCore, CoreOptions, FastestReplicaFn, ReplicaId, Ticket, Transmit,
    IN_FLIGHT_MAX,
};
pub use self::error::{ClientError, IoStage};
