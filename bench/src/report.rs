//! Reports: the final table, the JSON document, the HdrHistogram percentile
//! distribution and the SVG latency plot.
//!
//! Job: present a merged [`RunStats`] without losing anything it counted.
//! Invariants: every figure is derived from the same merged statistics, so
//! the table, the JSON and the files agree; the JSON is written by hand and
//! every string in it is escaped; the SVG uses no external resources.

use crate::cli::{Config, RunLength};
use crate::stats::{OpStats, RunStats};
use crate::workload::OpKind;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Above this single-thread CPU utilisation the generator, not the target,
/// may be the bottleneck.
pub const SATURATION_UTILISATION: f64 = 0.9;

/// The percentiles every report shows, with their JSON names.
pub const PERCENTILES: [(f64, &str); 5] = [
    (50.0, "p50"),
    (90.0, "p90"),
    (99.0, "p99"),
    (99.9, "p999"),
    (99.99, "p9999"),
];

/// The headline numbers of a run, derived once from the merged stats.
pub struct Summary<'a> {
    pub stats: &'a RunStats,
    pub total: OpStats,
    pub duration_s: f64,
    pub throughput_ops_s: f64,
    pub cpu_us_per_op: f64,
    pub saturated: bool,
}

impl<'a> Summary<'a> {
    pub fn new(stats: &'a RunStats) -> Summary<'a> {
        let total = stats.total();
        let duration_s = stats.measured_ns as f64 / 1e9;
        let throughput_ops_s = if duration_s > 0.0 {
            total.ok as f64 / duration_s
        } else {
            0.0
        };
        let cpu_us_per_op = if stats.completions > 0 {
            stats.cpu_ns as f64 / 1e3 / stats.completions as f64
        } else {
            0.0
        };
        Summary {
            stats,
            total,
            duration_s,
            throughput_ops_s,
            cpu_us_per_op,
            saturated: stats.utilisation_max > SATURATION_UTILISATION,
        }
    }

    /// The operations that occurred, in a fixed order.
    fn ops(&self) -> impl Iterator<Item = (OpKind, &OpStats)> {
        OpKind::ALL
            .into_iter()
            .map(|k| (k, &self.stats.per_op[k as usize]))
            .filter(|(_, s)| s.ok + s.errors() > 0)
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn percentile_us(h: &Histogram<u64>, p: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        us(h.value_at_percentile(p))
    }
}

pub fn table(summary: &Summary<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>11} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op",
        "ops",
        "ops/s",
        "errors",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "p99.99us",
        "max us"
    );
    let mut row = |name: &str, s: &OpStats| {
        let rate = if summary.duration_s > 0.0 {
            s.ok as f64 / summary.duration_s
        } else {
            0.0
        };
        let h = &s.latency_ns;
        let _ = writeln!(
            out,
            "{:<8} {:>11} {:>12.0} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            s.ok,
            rate,
            s.errors(),
            percentile_us(h, 50.0),
            percentile_us(h, 90.0),
            percentile_us(h, 99.0),
            percentile_us(h, 99.9),
            percentile_us(h, 99.99),
            if h.is_empty() { 0.0 } else { us(h.max()) },
        );
    };
    for (kind, s) in summary.ops() {
        row(kind.name(), s);
    }
    row("all", &summary.total);
    out
}

/// Escapes a string for a JSON string literal (the project's one encoder).
pub use dynakv::json::string as json_string;

/// A finite JSON number (JSON has no NaN or infinity).
fn json_f64(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_latency(h: &Histogram<u64>) -> String {
    let mut out = String::from("{");
    for (p, name) in PERCENTILES {
        let _ = write!(out, "\"{name}\":{},", json_f64(percentile_us(h, p)));
    }
    let max = if h.is_empty() { 0.0 } else { us(h.max()) };
    let mean = if h.is_empty() { 0.0 } else { h.mean() / 1e3 };
    let _ = write!(
        out,
        "\"max\":{},\"mean\":{}}}",
        json_f64(max),
        json_f64(mean)
    );
    out
}

fn json_op(s: &OpStats, duration_s: f64) -> String {
    let rate = if duration_s > 0.0 {
        s.ok as f64 / duration_s
    } else {
        0.0
    };
    format!(
        "{{\"throughput_ops_s\":{},\"ops\":{},\"errors\":{},\"misses\":{},\"error_replies\":{},\"timeouts\":{},\"connection_errors\":{},\"latency_us\":{}}}",
        json_f64(rate),
        s.ok,
        s.errors(),
        s.misses,
        s.error_replies,
        s.timeouts,
        s.connection_errors,
        json_latency(&s.latency_ns)
    )
}

fn json_path(p: &Option<std::path::PathBuf>) -> String {
    match p {
        Some(p) => json_string(&p.display().to_string()),
        None => "null".into(),
    }
}

fn json_opt_u8(v: Option<u8>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

pub fn json(summary: &Summary<'_>, config: &Config) -> String {
    let s = summary.stats;
    let mut per_op = String::from("{");
    for (i, (kind, op)) in summary.ops().enumerate() {
        if i > 0 {
            per_op.push(',');
        }
        let _ = write!(
            per_op,
            "\"{}\":{}",
            kind.name(),
            json_op(op, summary.duration_s)
        );
    }
    per_op.push('}');
    let (duration_s, ops) = match config.run {
        RunLength::DurationNs(ns) => (json_f64(ns as f64 / 1e9), "null".to_string()),
        RunLength::Ops(n) => ("null".to_string(), n.to_string()),
    };
    let config_json = format!(
        "{{\"target\":{},\"scheme\":{},\"workload\":{},\"read_ratio\":{},\"keys\":{},\"key_dist\":{},\"value_size_min\":{},\"value_size_max\":{},\"load\":{},\"warmup_s\":{},\"duration_s\":{},\"ops\":{},\"connections\":{},\"pipeline\":{},\"threads\":{},\"rate\":{},\"timeout_s\":{},\"connect_timeout_s\":{},\"pin\":{},\"seed\":{},\"r\":{},\"w\":{},\"dw\":{},\"n\":{},\"json\":{},\"hdr_log\":{},\"hdr_percentiles\":{},\"plot\":{}}}",
        json_string(&config.target.url),
        json_string(config.target.scheme.name()),
        json_string(config.workload.name()),
        json_f64(config.read_ratio),
        config.keys,
        json_string(config.key_dist.name()),
        config.value_size.min,
        config.value_size.max,
        config.load,
        json_f64(config.warmup_ns as f64 / 1e9),
        duration_s,
        ops,
        config.connections,
        config.pipeline,
        config.threads,
        config.rate.map_or("null".into(), json_f64),
        json_f64(config.timeout_ns as f64 / 1e9),
        json_f64(config.connect_timeout_ns as f64 / 1e9),
        config.pin,
        config.seed,
        json_opt_u8(config.quorum.r),
        json_opt_u8(config.quorum.w),
        json_opt_u8(config.quorum.dw),
        json_opt_u8(config.quorum.n),
        json_path(&config.json),
        json_path(&config.hdr_log),
        json_path(&config.hdr_percentiles),
        json_path(&config.plot),
    );
    let t = &summary.total;
    let mut error_kinds = String::from("{");
    for (i, (kind, (count, example))) in s.error_kinds.iter().enumerate() {
        if i > 0 {
            error_kinds.push(',');
        }
        let _ = write!(
            error_kinds,
            "{}:{{\"count\":{count},\"example\":{}}}",
            json_string(kind),
            json_string(example)
        );
    }
    error_kinds.push('}');
    format!(
        "{{\"throughput_ops_s\":{},\"ops\":{},\"errors\":{},\"misses\":{},\"error_replies\":{},\"timeouts\":{},\"connection_errors\":{},\"duration_s\":{},\"latency_us\":{},\"per_op\":{},\"generator_cpu_us_per_op\":{},\"generator_core_utilisation\":{},\"generator_saturated\":{},\"generator_ring\":{},\"connections_lost\":{},\"open_loop_unsent\":{},\"load\":{{\"keys\":{},\"errors\":{},\"duration_s\":{}}},\"cart\":{{\"reads\":{},\"siblings_seen\":{},\"siblings_max\":{}}},\"reads\":{{\"hits\":{},\"siblings_seen\":{},\"siblings_max\":{},\"with_siblings\":{}}},\"error_kinds\":{},\"target\":{},\"workload\":{},\"config\":{}}}\n",
        json_f64(summary.throughput_ops_s),
        t.ok,
        t.errors(),
        t.misses,
        t.error_replies,
        t.timeouts,
        t.connection_errors,
        json_f64(summary.duration_s),
        json_latency(&t.latency_ns),
        per_op,
        json_f64(summary.cpu_us_per_op),
        json_f64(s.utilisation_max),
        summary.saturated,
        s.ring
            .map_or("null".to_string(), |mode| json_string(mode.name())),
        s.connections_lost,
        s.unsent,
        s.load_ok,
        s.load_errors,
        json_f64(s.load_ns as f64 / 1e9),
        s.cart_reads,
        s.siblings_seen,
        s.siblings_max,
        s.read_hits,
        s.read_siblings,
        s.read_siblings_max,
        s.reads_with_siblings,
        error_kinds,
        json_string(&config.target.url),
        json_string(config.workload.name()),
        config_json,
    )
}

/// An HdrHistogram interval log (the `.hlog` format of HdrHistogram's
/// `HistogramLogWriter`, read by `HistogramLogAnalyzer`, `hdr-plot` and
/// HdrHistogram's `HistogramLogProcessor`): a header, then one line per
/// second with its start offset from `base`, its length, its maximum and the
/// histogram in the compressed V2 encoding. Values are recorded in
/// nanoseconds and written with a max-value divisor of 1000, so the logged
/// maxima read in microseconds as everywhere else in the tool.
pub fn interval_log(
    base: Option<std::time::SystemTime>,
    seconds: &[(std::time::Duration, std::time::Duration, Histogram<u64>)],
) -> Result<Vec<u8>, String> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.add_comment(
        "dynakv-bench: measured request latency, one interval per second, values in ns",
    );
    if let Some(base) = base {
        builder.with_start_time(base).with_base_time(base);
    }
    let mut writer = builder
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| e.to_string())?;
    writer
        .write_comment(
            "Legend: StartTimestamp,Interval_Length,Interval_Max,Interval_Compressed_Histogram",
        )
        .map_err(|e| e.to_string())?;
    for (start, length, histogram) in seconds {
        writer
            .write_histogram(histogram, *start, *length, None)
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The percentile distribution in HdrHistogram's text format
/// (`outputPercentileDistribution`, values in microseconds), which
/// HdrHistogram's online plotter and `hdr-plot` read.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>14.12} {:>10} {:>14.2}",
                    us(v.value_iterated_to()),
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>14.12} {:>10}",
                    us(v.value_iterated_to()),
                    q,
                    total
                );
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / 1e3, h.stdev() / 1e3, us(h.max()))
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {stdev:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.3}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// A latency-by-percentile plot (x: percentile on HdrHistogram's log scale of
/// 1/(1-p), y: latency in µs), one line per operation and one for all.
pub fn svg_plot(summary: &Summary<'_>, title: &str) -> String {
    const W: f64 = 800.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 130.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    const X_DECADES: f64 = 5.0; // up to 99.999%
    const COLOURS: [&str; 7] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#000000",
    ];
    let mut series: Vec<(&str, &Histogram<u64>)> = summary
        .ops()
        .map(|(k, s)| (k.name(), &s.latency_ns))
        .collect();
    series.push(("all", &summary.total.latency_ns));
    let y_max_us = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| us(h.max()))
        .fold(1.0f64, f64::max);
    let y_top = nice_ceiling(y_max_us);
    // Label in milliseconds once microsecond labels get long.
    let (unit, unit_us) = if y_top >= 10_000.0 {
        ("ms", 1000.0)
    } else {
        ("µs", 1.0)
    };
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x_of = |q: f64| {
        let decades = if q >= 1.0 {
            X_DECADES
        } else {
            (1.0 / (1.0 - q)).log10().min(X_DECADES)
        };
        LEFT + plot_w * decades / X_DECADES
    };
    let y_of = |v_us: f64| TOP + plot_h * (1.0 - (v_us / y_top).min(1.0));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        W / 2.0,
        xml_escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = LEFT + plot_w * i as f64 / X_DECADES;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            TOP + plot_h
        );
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            TOP + plot_h + 18.0
        );
    }
    for i in 0..=5 {
        let v = y_top * f64::from(i) / 5.0;
        let y = y_of(v);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>",
            LEFT + plot_w
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 4.0,
            trim_number(v / unit_us)
        );
    }
    let _ = writeln!(out, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#333\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        LEFT + plot_w / 2.0,
        H - 16.0
    );
    let _ = writeln!(out, "<text transform=\"translate(20 {:.1}) rotate(-90)\" text-anchor=\"middle\">latency ({unit})</text>", TOP + plot_h / 2.0);
    for (i, (name, h)) in series.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let colour = if *name == "all" {
            COLOURS[6]
        } else {
            COLOURS[i % 6]
        };
        let mut points = String::new();
        for v in h.iter_quantiles(5) {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x_of(v.quantile_iterated_to()),
                y_of(us(v.value_iterated_to()))
            );
        }
        let dash = if *name == "all" {
            " stroke-dasharray=\"5,3\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            points.trim_end()
        );
        let ly = TOP + 16.0 * i as f64 + 10.0;
        let lx = LEFT + plot_w + 12.0;
        let _ = writeln!(out, "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>", lx + 20.0);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            lx + 26.0,
            ly + 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest 1, 2 or 5 times a power of ten at or above `x`.
fn nice_ceiling(x: f64) -> f64 {
    let magnitude = 10f64.powf(x.max(1e-9).log10().floor());
    for step in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * magnitude >= x {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn trim_number(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_args;

    fn sample_stats() -> RunStats {
        let mut stats = RunStats::default();
        for i in 1..=1000u64 {
            stats
                .op(OpKind::Get)
                .latency_ns
                .record(i * 1000)
                .expect("in range");
        }
        stats.op(OpKind::Get).ok = 1000;
        stats.op(OpKind::Put).ok = 10;
        stats
            .op(OpKind::Put)
            .latency_ns
            .record(5000)
            .expect("in range");
        stats.op(OpKind::Put).timeouts = 2;
        stats.measured_ns = 2_000_000_000;
        stats.cpu_ns = 1_010_000;
        stats.completions = 1010;
        stats.wall_ns = 2_000_000_000;
        stats.utilisation_max = 0.95;
        stats.ring = Some(crate::engine::RingMode::Cooperative);
        stats.record_error("ERR \"quoted\" message");
        stats.record_read_hit(1);
        stats.record_read_hit(3);
        stats
    }

    #[test]
    fn json_has_the_documented_shape() {
        let stats = sample_stats();
        let summary = Summary::new(&stats);
        let args: Vec<String> = [
            "--target",
            "redis://127.0.0.1:6379",
            "--workload",
            "mixed",
            "--json",
            "o\"ut.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let config = parse_args(&args).expect("config");
        let text = json(&summary, &config);
        for key in [
            "\"throughput_ops_s\":505.000",
            "\"ops\":1010",
            "\"errors\":2",
            "\"duration_s\":2.000",
            "\"latency_us\":{\"p50\":",
            "\"p90\":",
            "\"p99\":",
            "\"p999\":",
            "\"p9999\":",
            "\"max\":",
            "\"per_op\":{\"get\":{",
            "\"put\":{\"throughput_ops_s\":5.000,\"ops\":10,\"errors\":2",
            "\"generator_cpu_us_per_op\":1.000",
            "\"generator_saturated\":true",
            "\"generator_ring\":\"cooperative\"",
            "\"target\":\"redis://127.0.0.1:6379\"",
            "\"workload\":\"mixed\"",
            "\"config\":{\"target\":",
            "\"json\":\"o\\\"ut.json\"",
            "\"error_kinds\":{\"ERR\":{\"count\":1,\"example\":\"ERR \\\"quoted\\\" message\"}}",
            "\"reads\":{\"hits\":2,\"siblings_seen\":4,\"siblings_max\":3,\"with_siblings\":1}",
        ] {
            assert!(text.contains(key), "missing {key} in {text}");
        }
        // Balanced braces and quotes: a cheap structural check of hand-written JSON.
        let mut depth = 0i32;
        let mut in_string = false;
        let mut escaped = false;
        for c in text.chars() {
            match (in_string, escaped, c) {
                (true, false, '\\') => escaped = true,
                (true, true, _) => escaped = false,
                (_, _, '"') => in_string = !in_string,
                (false, _, '{') => depth += 1,
                (false, _, '}') => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
        }
        assert_eq!(depth, 0);
        assert!(!in_string);
        // p50 of 1..=1000 µs is about 500 µs.
        assert!(text.contains("\"p50\":500."), "{text}");
    }

    #[test]
    fn table_and_files_render() {
        let stats = sample_stats();
        let summary = Summary::new(&stats);
        let t = table(&summary);
        assert!(t.lines().count() == 4, "{t}");
        assert!(t.contains("get") && t.contains("put") && t.contains("all"));
        let hdr = percentile_distribution(&summary.total.latency_ns);
        assert!(hdr.contains("Percentile") && hdr.contains("#[Max"));
        let svg = svg_plot(&summary, "a <title>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("polyline") && svg.contains("a &lt;title&gt;"));
        assert_eq!(nice_ceiling(730.0), 800.0);
        assert_eq!(nice_ceiling(150.0), 150.0);
        assert_eq!(nice_ceiling(1_010_827.0), 1_200_000.0);
    }

    #[test]
    fn interval_log_reads_back_with_hdrhistogram() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        use hdrhistogram::serialization::Deserializer;
        use std::time::{Duration, SystemTime};
        let mut first = crate::stats::new_histogram();
        for v in [1_000u64, 2_000, 3_000, 250_000] {
            first.record(v).unwrap();
        }
        let mut second = crate::stats::new_histogram();
        second.record(7_000).unwrap();
        let seconds = vec![
            (
                Duration::from_millis(1000),
                Duration::from_millis(1001),
                first.clone(),
            ),
            (
                Duration::from_millis(2001),
                Duration::from_millis(999),
                second,
            ),
        ];
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let log = interval_log(Some(base), &seconds).unwrap();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1790000000.000"), "{text}");
        assert!(text.contains("#[MaxValueDivisor: 1000.000]"), "{text}");
        let mut read = Vec::new();
        for entry in IntervalLogIterator::new(&log) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                read.push((
                    h.start_timestamp(),
                    h.duration(),
                    h.max(),
                    h.encoded_histogram().to_string(),
                ));
            }
        }
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].0, Duration::from_millis(1000));
        assert_eq!(read[1].1, Duration::from_millis(999));
        // The maximum is written in microseconds (divisor 1000).
        assert!((read[0].2 - 250.0).abs() < 1.0, "{}", read[0].2);
        // The encoded histogram decodes to the recorded one.
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &read[0].3).unwrap();
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(bytes))
            .unwrap();
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded.value_at_quantile(1.0), first.value_at_quantile(1.0));
    }
}
