//! Start-up, background-event and error logging to stderr through the
//! `tracing` crate, one line per event: human-readable by default
//! (`tracing-subscriber`'s fmt format), one JSON object per line with
//! `log_format = "json"` (a small formatter here, so the `json` feature's
//! serde_json tree stays out), filtered by `log_level` directives.
//!
//! Never used on the request fast path: requests are counted in the metrics
//! (`metrics.rs`), not logged. Events carry structured fields (`peer`,
//! `partition`, `epoch`, counts) rather than only formatted text, and every
//! shard executor runs inside a `shard` span (`server.rs`), so each line a
//! shard writes says `shard=N` without the call site repeating it.
//!
//! The `info!` and `warning!` macros forward to `tracing::info!` and
//! `tracing::warn!` (same syntax: optional `field = value` pairs, then a
//! format string), so call sites need no `tracing` import.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Parses `log_level`: `RUST_LOG`-style target directives without span
/// filters, e.g. `info`, `warn`, `dynakv::runtime::cluster=debug,info`.
/// A bare word must be a level: `Targets` alone would read a typo such as
/// `inf` as "only the target `inf`" and silently drop every line.
pub(crate) fn parse_filter(text: &str) -> Result<Targets, String> {
    let refuse = |why: String| {
        format!("log_level '{text}': {why} (expected a level such as info, or target=level directives separated by commas)")
    };
    for directive in text.split(',').map(str::trim) {
        if !directive.contains('=') {
            directive
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .map_err(|_| refuse(format!("'{directive}' is not a level")))?;
        }
    }
    text.parse::<Targets>().map_err(|e| refuse(e.to_string()))
}

/// Installs the process-wide subscriber writing to stderr. A second call
/// (tests that start several servers in one process) keeps the first one.
pub(crate) fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let targets = parse_filter(filter)?;
    // The fmt layer formats a line into a buffer and writes it with one
    // `write` to the unbuffered stderr, so shards' lines never interleave.
    let installed = match format {
        LogFormat::Text => {
            // Without the target (the JSON lines carry it): shorter lines,
            // and no `dynakv::…:` that reads like the CLI's `dynakv:` errors.
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false);
            let subscriber = tracing_subscriber::registry().with(targets).with(layer);
            tracing::subscriber::set_global_default(subscriber)
        }
        LogFormat::Json => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .fmt_fields(JsonFields)
                .event_format(JsonLine);
            let subscriber = tracing_subscriber::registry().with(targets).with(layer);
            tracing::subscriber::set_global_default(subscriber)
        }
    };
    // Already set: an earlier server in this process chose the format.
    let _ = installed;
    Ok(())
}

/// Formats fields as the members of a JSON object (`"name": value, …`),
/// without braces. Used for span fields, which the fmt layer stores
/// pre-formatted per span, so `JsonLine` can splice them into each line.
struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = JsonMembers::default();
        fields.record(&mut members);
        members.fold_message();
        writer.write_str(&members.text)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = JsonMembers::default();
        fields.record(&mut members);
        members.fold_message();
        if !current.fields.is_empty() && !members.text.is_empty() {
            current.fields.push_str(", ");
        }
        current.fields.push_str(&members.text);
        Ok(())
    }
}

/// Collects an event's or span's fields as JSON object members; the
/// `message` field is kept apart (it becomes the line's `msg`).
#[derive(Default)]
struct JsonMembers {
    text: String,
    message: Option<String>,
}

impl JsonMembers {
    fn member(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if !self.text.is_empty() {
            self.text.push_str(", ");
        }
        let _ = write!(self.text, "{}: {value}", crate::json::string(field.name()));
    }

    /// A span has no message; should one carry a `message` field, keep it
    /// as an ordinary member.
    fn fold_message(&mut self) {
        if let Some(message) = self.message.take() {
            let value = crate::json::string(&message);
            if !self.text.is_empty() {
                self.text.push_str(", ");
            }
            let _ = write!(self.text, "\"message\": {value}");
        }
    }
}

impl Visit for JsonMembers {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, format_args!("{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, format_args!("{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.member(field, format_args!("{value}"));
        } else {
            // JSON has no NaN or infinity.
            self.member(field, format_args!("\"{value}\""));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.member(field, format_args!("{}", crate::json::string(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here as Display wrapped in Debug, and the
        // message as `fmt::Arguments`, whose Debug is its text.
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.member(field, format_args!("{}", crate::json::string(&text)));
        }
    }
}

/// One JSON object per event:
/// `{"ts": 1763850000.123, "level": "INFO", "target": "dynakv::runtime::shard",
/// "msg": "…", "fields": {"shard": 0, "partition": 17}}`. `ts` is seconds
/// since the Unix epoch; `fields` (span fields from the outermost span in,
/// then the event's) is left out when there are none.
struct JsonLine;

impl<S> FormatEvent<S, JsonFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut members = JsonMembers::default();
        event.record(&mut members);
        let metadata = event.metadata();
        write!(
            writer,
            "{{\"ts\": {}.{:03}, \"level\": \"{}\", \"target\": {}, \"msg\": {}",
            now.as_secs(),
            now.subsec_millis(),
            metadata.level(),
            crate::json::string(metadata.target()),
            crate::json::string(members.message.as_deref().unwrap_or("")),
        )?;
        let mut fields = String::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(stored) = extensions.get::<FormattedFields<JsonFields>>() {
                    if !stored.fields.is_empty() {
                        if !fields.is_empty() {
                            fields.push_str(", ");
                        }
                        fields.push_str(&stored.fields);
                    }
                }
            }
        }
        if !members.text.is_empty() {
            if !fields.is_empty() {
                fields.push_str(", ");
            }
            fields.push_str(&members.text);
        }
        if !fields.is_empty() {
            write!(writer, ", \"fields\": {{{fields}}}")?;
        }
        writeln!(writer, "}}")
    }
}

macro_rules! info {
    ($($arg:tt)*) => { ::tracing::info!($($arg)*) };
}
macro_rules! warning {
    ($($arg:tt)*) => { ::tracing::warn!($($arg)*) };
}
pub(crate) use info;
pub(crate) use warning;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_directives_parse_and_bad_ones_are_refused() {
        let filter = parse_filter("warn").unwrap();
        assert!(filter.would_enable("dynakv::runtime::shard", &tracing::Level::WARN));
        assert!(!filter.would_enable("dynakv::runtime::shard", &tracing::Level::INFO));
        let filter = parse_filter("dynakv::runtime::cluster=debug,info").unwrap();
        assert!(filter.would_enable("dynakv::runtime::cluster", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("dynakv::runtime::shard", &tracing::Level::DEBUG));
        assert!(filter.would_enable("glommio", &tracing::Level::INFO));
        assert!(parse_filter("loud").is_err());
        assert!(parse_filter("dynakv=sometimes").is_err());
    }
}
