//! observe: the pure half of dynakv's observability and background
//! scheduling — fixed-bucket histograms, the hot-key top-K, the utilization
//! monitor's share policy, and the Prometheus text encoder.
//!
//! Architecture invariant: sans-IO like the other pure layers. Nothing here
//! reads a clock, touches glommio, a socket or a file; the runtime
//! (`src/runtime/metrics.rs`, `src/runtime/scheduler.rs`, `src/runtime/http.rs`)
//! feeds measurements in and serves what comes out.

pub mod histogram;
pub mod hotkeys;
pub mod prometheus;
pub mod shares;
