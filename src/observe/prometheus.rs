//! The Prometheus text exposition format (version 0.0.4): `# HELP` and
//! `# TYPE` lines once per metric family, then its samples, with label values
//! escaped. Families must be written whole, one after another; the caller
//! loops over shards inside each family.

use std::fmt::Write;

use super::histogram::Histogram;

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What kind of series a family holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Builds one exposition text.
#[derive(Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Starts a family: its help text and type.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        if value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(self.out, " {}", value as i64);
        } else {
            let _ = writeln!(self.out, " {value}");
        }
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram; bounds and
    /// sum are divided by `divisor` (1e6 turns microseconds into seconds;
    /// dividing keeps `100 / 1e6` printing as `0.0001`).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram, divisor: f64) {
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (i, count) in h.counts().iter().enumerate() {
            cumulative += count;
            let le = match h.bounds().get(i) {
                Some(&b) => format_float(b as f64 / divisor),
                None => "+Inf".to_string(),
            };
            self.out.push_str(&bucket);
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.sample(&format!("{name}_sum"), labels, h.sum() as f64 / divisor);
        self.sample(&format!("{name}_count"), labels, h.count() as f64);
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn format_float(v: f64) -> String {
    format!("{v}")
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|v| ("le", v))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(out, value.as_bytes());
        out.push('"');
    }
    out.push('}');
}

/// Escapes a label value: `\`, `"` and newline as the format asks; bytes
/// that are not printable ASCII (keys are arbitrary bytes) as `\xNN`, which
/// keeps the text valid UTF-8 and unambiguous.
pub fn escape_label_value(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\\\x{b:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms() {
        let mut e = Encoder::new();
        e.family("x_total", "Things.", Kind::Counter);
        e.sample("x_total", &[("shard", "0"), ("op", "get")], 3.0);
        e.family("lat_seconds", "Latency.", Kind::Histogram);
        let mut h = Histogram::new(&[100, 1000]);
        h.record(50);
        h.record(5000);
        e.histogram("lat_seconds", &[("shard", "1")], &h, 1e6);
        let text = e.finish();
        assert!(text.contains("# TYPE x_total counter\n"));
        assert!(text.contains("x_total{shard=\"0\",op=\"get\"} 3\n"));
        assert!(text.contains("lat_seconds_bucket{shard=\"1\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("lat_seconds_bucket{shard=\"1\",le=\"0.001\"} 1\n"));
        assert!(text.contains("lat_seconds_bucket{shard=\"1\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("lat_seconds_count{shard=\"1\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_value(&mut s, b"a\"b\\c\nd\xff");
        assert_eq!(s, "a\\\"b\\\\c\\nd\\\\xff");
    }
}
