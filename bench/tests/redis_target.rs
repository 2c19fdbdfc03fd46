//! Runs the binary against a real `redis-server` (started here when it is on
//! PATH) and against an address where nothing listens.

mod common;

use common::{bench, free_port, json_number, run_json, temp_json};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Option<Redis> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("redis-server is not on PATH; the Redis checks did not run");
        return None;
    };
    let redis = Redis { child, port };
    // Wait until it accepts connections, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start listening on {port}"
        );
        std::thread::yield_now();
    }
    Some(redis)
}

#[test]
fn ping_and_mixed_runs_against_redis_have_no_errors() {
    let Some(redis) = start_redis() else { return };
    let target = format!("redis://127.0.0.1:{}", redis.port);
    let json = run_json(
        &[
            "--target",
            &target,
            "--workload",
            "ping",
            "--duration",
            "1s",
            "--connections",
            "8",
        ],
        "ping",
    );
    assert!(json_number(&json, "ops") > 0.0, "{json}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");

    let hlog = temp_json("mixed-hlog");
    let hgrm = temp_json("mixed-hgrm");
    let json = run_json(
        &[
            "--target",
            &target,
            "--hdr-log",
            hlog.to_str().unwrap(),
            "--hdr-percentiles",
            hgrm.to_str().unwrap(),
            "--workload",
            "mixed",
            "--read-ratio",
            "0.5",
            "--duration",
            "2s",
            "--connections",
            "8",
            "--pipeline",
            "4",
            "--threads",
            "2",
            "--keys",
            "1000",
            "--value-size",
            "16-256",
        ],
        "mixed",
    );
    assert!(json_number(&json, "ops") > 0.0, "{json}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
    // Every key was loaded first, so no get misses.
    assert_eq!(json_number(&json, "misses"), 0.0, "{json}");
    assert!(
        json.contains("\"get\":{") && json.contains("\"put\":{"),
        "{json}"
    );
    // The interval log holds every measured request, one histogram per
    // second, in HdrHistogram's own format.
    let log = std::fs::read(&hlog).unwrap();
    let mut counted = 0u64;
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = entry.unwrap() {
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                h.encoded_histogram(),
            )
            .unwrap();
            let histogram: Histogram<u64> = Deserializer::new()
                .deserialize(&mut std::io::Cursor::new(bytes))
                .unwrap();
            counted += histogram.len();
            intervals += 1;
        }
    }
    assert!(intervals >= 2, "{intervals} intervals");
    assert_eq!(counted as f64, json_number(&json, "ops"), "{json}");
    let percentiles = std::fs::read_to_string(&hgrm).unwrap();
    assert!(percentiles.contains("#[Max"), "{percentiles}");
    let _ = std::fs::remove_file(hlog);
    let _ = std::fs::remove_file(hgrm);

    // Open loop at a modest rate: the throughput follows the rate.
    let json = run_json(
        &[
            "--target",
            &target,
            "--workload",
            "get",
            "--rate",
            "2000",
            "--duration",
            "1s",
            "--connections",
            "4",
            "--keys",
            "100",
        ],
        "rate",
    );
    let rate = json_number(&json, "throughput_ops_s");
    assert!((1500.0..2500.0).contains(&rate), "open-loop rate {rate}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
}

#[test]
fn unreachable_target_exits_non_zero_with_one_line() {
    let port = free_port();
    let target = format!("redis://127.0.0.1:{port}");
    let out = bench(&[
        "--target",
        &target,
        "--workload",
        "ping",
        "--duration",
        "1s",
        "--no-progress",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn bad_flags_are_a_usage_error() {
    let out = bench(&["--target", "redis://127.0.0.1:1", "--workload", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}
