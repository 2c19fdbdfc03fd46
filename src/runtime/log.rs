//! Minimal start-up and error logging to stderr. Never used on the request
//! fast path.

/// Writes one line to stderr, prefixed with seconds since the Unix epoch and
/// a level.
pub(crate) fn line(level: &str, message: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{}.{:03} {level} {message}",
        now.as_secs(),
        now.subsec_millis()
    );
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::runtime::log::line("INFO", format_args!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::runtime::log::line("WARN", format_args!($($arg)*)) };
}
pub(crate) use info;
pub(crate) use warning;
