//! runtime: the glommio side of dynakv — executors, listeners, connections,
//! timers, cross-shard forwarding, the internode transport, the drivers of
//! the replica and membership machines, and the glommio [`disk::GlommioDisk`].
//!
//! Architecture invariant: this is the only module that uses glommio. It holds
//! no protocol, versioning, replication or membership *logic*; it feeds inputs
//! to those layers and drains their outputs. Each shard's state lives in an
//! `Rc` on its own executor; shards share only the cluster view published by
//! shard 0 (an `Arc` snapshot, see [`cluster`]) and talk through the channel
//! mesh in [`forward`] only for requests that arrived on the node-level port
//! for another shard's partition (never on the zero-hop fast path).

mod aae;
pub mod admin;
pub mod auth;
mod chaos_hooks;
mod cluster;
mod conn;
pub mod disk;
mod forward;
mod http;
mod internode;
mod limits;
pub(crate) mod log;
mod memlock;
mod metrics;
mod readiness;
mod resp;
mod scheduler;
mod server;
mod shard;
mod staging;
#[doc(hidden)]
pub mod wire_check;

pub use server::{allowed_cpus, run, ServerError};
