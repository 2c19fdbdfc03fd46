//! Observability and the background scheduler against real `dynakv server`
//! processes: the admin HTTP port (`/metrics` parsed as Prometheus text,
//! `/health`), hot keys, JSON log lines, the utilization monitor moving the
//! background shares under load, and background work (compaction, hint
//! replay and its receiving side) finishing. docs/metrics.md.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{start_cluster, wait_converged, wait_until, TestNode, BIN};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{ErrorCode, Quorum, Request, Response};

/// A loopback port nobody listens on right now (the kernel's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts a node with its admin HTTP port; returns it and the HTTP address.
fn start_with_http(shards: usize, extra: &[&str]) -> (TestNode, SocketAddr) {
    for _ in 0..10 {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http_text = http.to_string();
        let mut args = vec!["--http-listen", http_text.as_str()];
        args.extend_from_slice(extra);
        let node = std::panic::catch_unwind(|| TestNode::start(shards, &args));
        if let Ok(node) = node {
            return (node, http);
        }
    }
    panic!("no node with an admin http port could start");
}

/// One HTTP request; returns (status, body).
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read response");
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

/// A parsed sample: metric name and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
}

/// Parses the Prometheus text format strictly enough to catch mistakes:
/// every family has HELP and TYPE before its samples, every sample line is
/// `name{label="value",…} number`.
fn parse_metrics(text: &str) -> HashMap<Series, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type line {line}"
            );
            typed.insert(name);
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing brace");
                let mut labels = Vec::new();
                let mut chars = rest.chars().peekable();
                while chars.peek().is_some() {
                    let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "label value quote in {line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => value.push(chars.next().expect("escaped char")),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.push((label, value));
                }
                (name.to_string(), labels)
            }
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(&name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        samples.insert(Series { name, labels }, value);
    }
    samples
}

/// The sum of every sample of `name` whose labels include all of `with`.
fn sum(samples: &HashMap<Series, f64>, name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|(_, v)| v)
        .sum()
}

fn client(node: &TestNode) -> Client {
    Client::connect(node.listen, ClientOptions::default()).expect("connect")
}

#[test]
fn metrics_and_health_are_served_and_counters_move_with_requests() {
    let (node, addr) = start_with_http(2, &[]);
    let (status, body) = get(addr, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\": \"ok\""), "{body}");

    let before = parse_metrics(&get(addr, "/metrics").1);
    let mut c = client(&node);
    for i in 0..60 {
        let key = format!("key-{i}");
        c.put(key.as_bytes(), b"value", None, Quorum::default())
            .expect("put");
    }
    for _ in 0..200 {
        c.get(b"key-7").expect("get");
    }
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let after = parse_metrics(&text);

    // Per-shard series with a shard label, for both shards.
    for shard in ["0", "1"] {
        assert!(
            after.keys().any(|s| s.name == "dynakv_requests_total"
                && s.labels.contains(&("shard".into(), shard.into()))),
            "no series for shard {shard}"
        );
        assert!(
            after
                .keys()
                .any(|s| s.name == "dynakv_aae_exchanges_started_total"
                    && s.labels.contains(&("shard".into(), shard.into()))),
            "no anti-entropy series for shard {shard}"
        );
    }
    let puts = |m: &HashMap<Series, f64>| sum(m, "dynakv_requests_total", &[("op", "put")]);
    let gets = |m: &HashMap<Series, f64>| sum(m, "dynakv_requests_total", &[("op", "get")]);
    assert_eq!(puts(&after) - puts(&before), 60.0);
    assert_eq!(gets(&after) - gets(&before), 200.0);
    assert_eq!(sum(&after, "dynakv_request_errors_total", &[]), 0.0);
    // Histograms: counts agree with the counters, +Inf holds everything.
    assert_eq!(
        sum(
            &after,
            "dynakv_request_duration_seconds_count",
            &[("op", "get")]
        ),
        gets(&after)
    );
    assert_eq!(
        sum(
            &after,
            "dynakv_request_duration_seconds_bucket",
            &[("op", "put"), ("le", "+Inf")]
        ),
        puts(&after)
    );
    assert_eq!(sum(&after, "dynakv_get_siblings_count", &[]), 200.0);
    assert!(sum(&after, "dynakv_store_keys", &[]) >= 60.0);
    assert!(sum(&after, "dynakv_store_live_bytes", &[]) > 0.0);
    assert!(sum(&after, "dynakv_store_flushes_total", &[]) > 0.0);
    assert!(sum(&after, "dynakv_connections", &[]) >= 1.0);
    assert_eq!(
        sum(&after, "dynakv_scheduler_foreground_shares", &[]),
        2000.0
    );
    assert!(sum(&after, "dynakv_scheduler_background_shares", &[]) >= 2.0 * 10.0);

    // Hot keys: the one key read 200 times leads, in the metrics and in
    // `admin hotkeys` (which reads snapshots at most a second old).
    assert!(
        sum(&after, "dynakv_hot_key_requests", &[("key", "key-7")]) >= 150.0,
        "hot key missing: {:?}",
        after
            .iter()
            .filter(|(s, _)| s.name == "dynakv_hot_key_requests")
            .collect::<Vec<_>>()
    );
    wait_until(5, "admin hotkeys names key-7 first", || {
        let (code, out, _) = node.admin(&["hotkeys", "--json"]);
        code == 0 && out.starts_with("{\"sample_every\": 4, \"keys\": [{\"key\": \"key-7\"")
    });
    let (code, out, _) = node.admin(&["hotkeys"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.ends_with("key-7")),
        "{out}"
    );

    // Bad requests get clear errors and the port keeps serving.
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(
        http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        405
    );
    assert_eq!(http(addr, "garbage\r\n\r\n").0, 400);
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http(addr, &long).0, 431);
    assert_eq!(get(addr, "/health").0, 200);
}

/// Starts a 2-shard server with `extra` flags, stops it with SIGTERM and
/// returns its stderr lines.
fn server_log_lines(extra: &[&str]) -> Vec<String> {
    // Ports are probed, then bound by the server: another test may take one
    // in between, which costs a retry.
    for _ in 0..10 {
        if let Some(lines) = try_server_log_lines(extra) {
            return lines;
        }
    }
    panic!("no free ports for a test server after 10 tries");
}

/// One attempt of `server_log_lines`; `None` when a port was taken.
fn try_server_log_lines(extra: &[&str]) -> Option<Vec<String>> {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // Two shard ports in a row, neither of them the node or internode port.
    let base = loop {
        let base = free_port();
        let next_free = std::net::TcpListener::bind(("127.0.0.1", base.wrapping_add(1))).is_ok();
        if base != port && base.wrapping_add(1) != port && next_free {
            break base;
        }
    };
    let internode = loop {
        let candidate = free_port();
        if ![port, base, base + 1].contains(&candidate) {
            break candidate;
        }
    };
    let mut args: Vec<String> = [
        "server",
        "--data-dir",
        &tmp.path().display().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--shard-port-base",
        &base.to_string(),
        "--internode-listen",
        &format!("127.0.0.1:{internode}"),
        "--shards",
        "2",
        "--pin-shards",
        "false",
        "--io-memory-bytes",
        "262144",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    if !ready.starts_with("dynakv ready") {
        let _ = child.wait();
        let mut said = String::new();
        let _ = stderr.read_to_string(&mut said);
        if said.contains("cannot listen") || said.contains("in use") {
            return None;
        }
        panic!("the server did not start: {ready}\n{said}");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    Some(
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect(),
    )
}

#[test]
fn log_lines_are_json_on_request() {
    let lines = server_log_lines(&["--log-format", "json"]);
    assert!(lines.len() >= 5, "{lines:?}");
    let mut shards_seen = std::collections::BTreeSet::new();
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(object["ts"].as_f64().is_some_and(|ts| ts > 1.0e9), "{line}");
        let level = object["level"].as_str().expect("level");
        assert!(level == "INFO" || level == "WARN", "{line}");
        assert!(
            object["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("dynakv")),
            "{line}"
        );
        assert!(
            object["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{line}"
        );
        if let Some(fields) = object.get("fields") {
            assert!(fields.is_object(), "{line}");
            if let Some(shard) = fields.get("shard") {
                shards_seen.insert(shard.as_u64().expect("shard is a number"));
            }
        }
    }
    // Every shard's lines carry its `shard` span field, with structured
    // fields beside it rather than inside the message.
    assert_eq!(shards_seen, [0, 1].into(), "{lines:?}");
    let store_open: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|o| o["msg"] == "store open")
        .collect();
    assert_eq!(store_open.len(), 2, "{lines:?}");
    for object in &store_open {
        assert_eq!(object["fields"]["keys"], 0, "{object}");
        assert!(object["fields"]["incarnation"].is_u64(), "{object}");
    }
    assert!(lines.iter().any(|l| l.contains("stopped cleanly")));
}

#[test]
fn the_log_level_filter_drops_lines_below_it() {
    // Text lines by default, with the shard span on shard lines.
    let lines = server_log_lines(&[]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO shard{shard=1}:") && l.contains("store open")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("stopped cleanly")),
        "{lines:?}"
    );
    // `warn` for everything but the server module, which keeps `info`:
    // its lines stay, the shards' info lines (all in a shard span) go.
    let lines = server_log_lines(&["--log-level", "warn,dynakv::runtime::server=info"]);
    assert!(
        lines.iter().any(|l| l.contains("stopped cleanly")),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("store open") || l.contains("flushed and synced")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains(" INFO ") || !l.contains("shard{")),
        "{lines:?}"
    );
}

/// `admin status --json`: each shard's background shares.
fn background_shares(node: &TestNode) -> Vec<u64> {
    let (code, out, _) = node.admin(&["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    out.match_indices("\"background_shares\": ")
        .map(|(i, m)| {
            out[i + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap()
        })
        .collect()
}

/// `admin status --json`: work done by `job`, summed over shards.
fn work_done(node: &TestNode, job: &str) -> u64 {
    let (code, out, _) = node.admin(&["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    let key = format!("\"{job}\": {{\"done\": ");
    out.match_indices(&key)
        .map(|(i, m)| {
            out[i + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn background_shares_shrink_under_foreground_load_and_recover_when_idle() {
    // A latency target no request can meet: every busy period shrinks.
    let node = TestNode::start(1, &["--foreground-latency-target-us", "1"]);
    wait_until(5, "full background shares while idle", || {
        background_shares(&node) == vec![500]
    });
    let (code, text, _) = node.admin(&["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("background shares 500"), "{text}");

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, listen) = (stop.clone(), node.listen);
        std::thread::spawn(move || {
            let mut c = Client::connect(listen, ClientOptions::default()).expect("connect");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.put(format!("k{i}").as_bytes(), b"v", None, Quorum::default())
                    .expect("put under load");
                i += 1;
            }
        })
    };
    wait_until(10, "background shares at the floor under load", || {
        background_shares(&node) == vec![10]
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    wait_until(10, "background shares back up when idle", || {
        background_shares(&node) == vec![500]
    });
}

/// Segments of 512 KiB, compacted at 30% dead: a few seconds of puts
/// (`overwrite_rounds`) seal and compact several.
const SMALL_SEGMENTS: [&str; 6] = [
    "--segment-size-bytes",
    "524288",
    "--value-bytes-max",
    "65536",
    "--compaction-dead-fraction",
    "0.3",
];

/// 60 rounds of puts of keys `k0`..`k39`, each with the context of its last
/// put (so each overwrites it), of `value(round)`.
fn overwrite_rounds(c: &mut Client, value: impl Fn(usize) -> Vec<u8>) {
    let mut contexts: Vec<Option<bytes::Bytes>> = vec![None; 40];
    for round in 0..60 {
        for (k, context) in contexts.iter_mut().enumerate() {
            let new = c
                .put(
                    format!("k{k}").as_bytes(),
                    &value(round),
                    context.as_deref(),
                    Quorum::default(),
                )
                .unwrap_or_else(|e| panic!("put round {round}: {e}"));
            *context = Some(new);
        }
    }
}

#[test]
fn compaction_runs_paced_in_the_background_and_finishes() {
    let args: Vec<&str> = SMALL_SEGMENTS
        .into_iter()
        .chain([
            // Slow enough that the pacer must make compaction wait.
            "--compaction-bytes-per-second",
            "4000000",
            // Whole segments read, so that the work is large enough to pace
            // (compaction from the index: `compaction_from_the_index_is_counted`).
            "--compaction-from-index",
            "false",
        ])
        .collect();
    let (node, addr) = start_with_http(1, &args);
    let mut c = client(&node);
    let value = vec![b'x'; 2048];
    overwrite_rounds(&mut c, |_| value.clone());
    let metrics = || parse_metrics(&get(addr, "/metrics").1);
    wait_until(30, "compaction reclaimed segments", || {
        sum(&metrics(), "dynakv_store_segments_compacted_total", &[]) >= 4.0
    });
    let m = metrics();
    assert!(
        sum(
            &m,
            "dynakv_background_work_done_total",
            &[("job", "compaction")]
        ) > 1e6
    );
    assert!(
        sum(
            &m,
            "dynakv_background_work_deferred_total",
            &[("job", "compaction")]
        ) > 0.0
    );
    // Every key still reads its latest value.
    for k in 0..40 {
        let got = c.get(format!("k{k}").as_bytes()).expect("get");
        assert_eq!(got.values.len(), 1);
        assert_eq!(got.values[0].as_ref(), value.as_slice());
    }
}

#[test]
fn compaction_from_the_index_is_counted_and_keeps_every_key() {
    // The default: mostly dead segments are compacted from the index, reading
    // only their live records (docs/storage.md §7a).
    let (node, addr) = start_with_http(1, &SMALL_SEGMENTS);
    let mut c = client(&node);
    let value = |round: usize| vec![b'a' + (round % 26) as u8; 2048];
    overwrite_rounds(&mut c, value);
    let metrics = || parse_metrics(&get(addr, "/metrics").1);
    wait_until(30, "segments compacted from the index", || {
        sum(
            &metrics(),
            "dynakv_store_segments_compacted_sparse_total",
            &[],
        ) >= 4.0
    });
    let m = metrics();
    assert!(
        sum(&m, "dynakv_store_segments_compacted_total", &[])
            >= sum(&m, "dynakv_store_segments_compacted_sparse_total", &[])
    );
    for k in 0..40 {
        let got = c.get(format!("k{k}").as_bytes()).expect("get");
        assert_eq!(got.values.len(), 1, "key {k}");
        assert_eq!(got.values[0].as_ref(), value(59).as_slice(), "key {k}");
    }
}

#[test]
fn hint_replay_and_its_receiving_side_run_in_the_background_queue() {
    let mut nodes = start_cluster(4, 1, &[]);
    nodes[3].kill9();
    let mut c = Client::connect(
        nodes[0].listen,
        ClientOptions {
            timeout: Duration::from_secs(3),
            unreachable_for: Duration::from_secs(30),
            ..ClientOptions::default()
        },
    )
    .expect("connect");
    for i in 0..40 {
        let key = format!("k{i}");
        if c.put(key.as_bytes(), b"v", None, Quorum::default())
            .is_err()
        {
            c.put(key.as_bytes(), b"v", None, Quorum::default())
                .expect("put retried");
        }
    }
    let hints = |nodes: &[TestNode]| -> u64 {
        nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| n.status())
            .map(|s| s.hints)
            .sum()
    };
    wait_until(10, "hints held for the dead node", || hints(&nodes) > 0);
    let held = hints(&nodes);
    nodes[3].restart();
    wait_converged(&nodes, 4);
    wait_until(20, "hints replayed", || hints(&nodes) == 0);
    // Status shows snapshots at most a second old: wait for them.
    wait_until(
        5,
        "hint reads and deletes counted as background work",
        || {
            nodes[..3]
                .iter()
                .map(|n| work_done(n, "hint_replay"))
                .sum::<u64>()
                >= held
        },
    );
    wait_until(
        5,
        "the returning node merged the replays in its background queue",
        || work_done(&nodes[3], "inbound") >= held,
    );
}

#[test]
fn puts_queued_on_a_hot_key_ride_on_one_write_and_are_counted() {
    // A tiny write buffer makes writes wait for flushes, so pipelined puts
    // of one key queue behind the waiting one and ride on one write
    // (docs/replication.md §2); every put is still acknowledged and kept.
    let (node, addr) = start_with_http(1, &["--write-buffer-bytes", "4096"]);
    let mut stream = common::connect(&node);
    let value = |id: u64| Bytes::from(format!("{id}-{}", "v".repeat(200)));
    let puts: Vec<Request> = (0..200u64)
        .map(|id| Request::Put {
            key: Bytes::from_static(b"hot"),
            value: value(id),
            context: None,
            quorum: Quorum::default(),
        })
        .collect();
    let mut refused = 0;
    for (id, reply) in common::pipeline(&mut stream, puts) {
        match reply {
            Response::Put { .. } => {}
            Response::Error {
                code: ErrorCode::TooManySiblings,
                ..
            } => refused += 1,
            other => panic!("put {id}: {other:?}"),
        }
    }
    // Blind puts are siblings: past the bound of 64 they are refused.
    assert_eq!(refused, 200 - 64);
    let metrics = parse_metrics(&get(addr, "/metrics").1);
    let riders = sum(&metrics, "dynakv_write_riders_total", &[]);
    assert!(riders > 0.0, "no put rode on another's write");
    let get = common::pipeline(
        &mut stream,
        vec![Request::Get {
            key: Bytes::from_static(b"hot"),
            quorum: Quorum::default(),
        }],
    );
    let Response::Get { siblings, .. } = &get[0].1 else {
        panic!("{get:?}");
    };
    assert_eq!(siblings.len(), 64, "every acknowledged put is kept");
}
