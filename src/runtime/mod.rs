//! runtime: the glommio side of dynakv — executors, listeners, connections,
//! timers, cross-shard forwarding, and the glommio [`disk::GlommioDisk`].
//!
//! Architecture invariant: this is the only module that uses glommio. It holds
//! no protocol, versioning or storage *logic*; it feeds inputs to those layers
//! and drains their outputs. Each shard's state lives in an `Rc` on its own
//! executor; shards talk only through the channel mesh in [`forward`], and
//! only for requests that arrived on the node-level port for another shard's
//! partition (never on the zero-hop fast path).

mod conn;
pub mod disk;
mod forward;
mod log;
mod memlock;
mod server;
mod shard;

pub use server::{run, ServerError};
