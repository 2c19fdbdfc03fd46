//! Start-up, background-event and error logging to stderr, one line per
//! event: human-readable by default, one JSON object per line with
//! `log_format = "json"`. Never used on the request fast path: requests are
//! counted in the metrics (`metrics.rs`), not logged.
//!
//! Why not the `tracing` crate: every event dynakv logs is a rare,
//! whole-line message from the runtime (start-up, ring changes, handoff
//! passes, failures), written directly to stderr; spans, per-request
//! context and dynamic filtering would add a dependency tree and a global
//! dispatcher for no event we emit. ARCHITECTURE.md records the decision.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether lines are JSON objects (set once at start-up).
static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the line format for the rest of the process.
pub(crate) fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Writes one line to stderr with the time (seconds since the Unix epoch)
/// and a level.
pub(crate) fn line(level: &str, message: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let text = if JSON.load(Ordering::Relaxed) {
        format!(
            "{{\"ts\": {}.{:03}, \"level\": \"{level}\", \"msg\": {}}}\n",
            now.as_secs(),
            now.subsec_millis(),
            crate::json::string(&message.to_string())
        )
    } else {
        format!(
            "{}.{:03} {level} {message}\n",
            now.as_secs(),
            now.subsec_millis()
        )
    };
    // One write per line, so lines of different shards never interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::runtime::log::line("INFO", format_args!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::runtime::log::line("WARN", format_args!($($arg)*)) };
}
pub(crate) use info;
pub(crate) use warning;
