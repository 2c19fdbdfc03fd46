//! version layer: dotted version vectors with siblings (Dynamo §4.4).
//!
//! Job: decide, per key, which versions supersede which. A `SiblingSet` (a
//! DVVSet, Almeida, Baquero et al., DAIS 2014) holds the concurrent values of
//! one key with their causal context; `VersionVector` is that context's
//! clock; `Context` is the opaque client token that carries it.
//!
//! Invariants:
//! * pure: no I/O, no clocks, no randomness; values in, values out;
//! * `SiblingSet::merge` is commutative, associative and idempotent
//!   (property-tested in `tests/version_laws.rs`);
//! * a sibling is discarded only when the incoming version has seen its dot:
//!   a put supersedes exactly what its context covers, a blind put or a put
//!   with a context from elsewhere keeps everything it did not see;
//! * every clock, sibling set and token is bounded (`*_MAX` below); pruning
//!   of clock entries may add siblings, never a false "supersedes";
//! * decoders accept only canonical, valid encodings and never panic;
//!   `EncodedSiblingSet` (a stored set read in place) accepts exactly what
//!   `SiblingSet::decode` accepts.
//!
//! The model, the byte layouts and the bounds are in `docs/versioning.md`.

mod clock;
mod codec;
mod context;
mod crc;
mod error;
mod sibling_set;
mod update_plan;
mod view;
mod walk;

pub use clock::VersionVector;
pub use context::{
    encode_set_token_into, encode_token_into, encode_token_to, Context, CONTEXT_BYTES_MAX,
    CONTEXT_FORMAT_VERSION, TOKEN_BUFFER_BYTES,
};
pub use error::{ContextError, VersionError};
pub use sibling_set::{Dot, SiblingSet, Value, SIBLING_SET_FORMAT_VERSION};
pub use update_plan::{plan_update, UpdatePlan, PLAN_ENTRIES_MAX, PLAN_SIBLINGS_MAX};
pub use view::{ClockEntries, EncodedSiblingSet, Values};

/// A replica/coordinator identity (by convention `node id << 16 | shard`,
/// opaque here). It must never be reused by a replica that lost its data.
pub type ActorId = u64;

/// The most siblings `SiblingSet::update` leaves: a put that would leave more
/// is refused until a client resolves them (a put with a get's context).
pub const SIBLINGS_MAX: usize = 64;

/// The most siblings a merge may produce or a decoder accept. Replicas that
/// accepted writes while partitioned can together exceed `SIBLINGS_MAX`;
/// this leaves room for that without ever dropping a sibling to fit.
pub const SIBLINGS_MERGED_MAX: usize = 4 * SIBLINGS_MAX;

/// The most entries (actors) in a clock. Beyond it, entries without siblings
/// are pruned, smallest counter first, which can only add siblings.
pub const CLOCK_ENTRIES_MAX: usize = 128;

#[cfg(test)]
mod tests;
