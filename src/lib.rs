//! dynakv: a Dynamo-style (SOSP 2007) distributed key-value store, built as a
//! thread-per-core server on glommio.
//!
//! The crate is layered; each module's header states its job and what it must
//! never do, and `ARCHITECTURE.md` carries the code map and the invariants.
//! The pure layers (`ring`, `version`, `storage` logic, `replica`,
//! `membership`, `antientropy`, the `client` core) never touch glommio,
//! sockets, files or clocks directly: time, randomness, disk and network reach
//! them as inputs, so the same code runs under the real runtime and under the
//! deterministic simulator in `tests/`.

pub mod antientropy;
pub mod client;
pub mod config;
pub mod json;
pub mod membership;
pub mod observe;
pub mod protocol;
pub mod replica;
pub mod resp;
pub mod ring;
pub mod runtime;
pub mod storage;
#[cfg(test)]
mod test_rng;
pub mod version;
