//! Runs the binary against a dynakv-protocol fixture node: one node port that
//! serves the routing table and two shard ports that own alternate
//! partitions. The fixture speaks the real protocol module and answers a
//! request that reaches the wrong shard with `WrongOwner`, so the test proves
//! that the tool sends every request straight to its coordinator shard
//! (zero hop) and carries the quorum overrides. The real server replaces the
//! fixture in the project's cluster tests once it exists.

mod common;

use bytes::Bytes;
use common::{json_number, run_json, serve_dynakv};
use dynakv::protocol::{
    ErrorCode, Request, Response, RoutingNode, RoutingTable, Sibling, SIBLINGS_MAX,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const Q: u32 = 16;

#[derive(Default)]
struct Counters {
    requests: [AtomicU64; 2],
    misrouted: AtomicU64,
    gets_with_r1: AtomicU64,
    puts_with_dw1: AtomicU64,
}

/// A key's live versions, each with the version number that a context names.
struct Entry {
    siblings: Vec<(u64, Bytes)>,
    next_version: u64,
}

type Store = Arc<Mutex<HashMap<Bytes, Entry>>>;

/// The fixture's context: the highest version the client saw, 8 bytes LE.
fn context_of(version: u64) -> Bytes {
    Bytes::copy_from_slice(&version.to_le_bytes())
}

fn version_of(context: &[u8]) -> u64 {
    context.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

fn owner_shard(key: &[u8]) -> u16 {
    let partition = dynakv::ring::key_partition(key, Q);
    (partition % 2) as u16
}

fn table(node_port: u16, shard_ports: [u16; 2]) -> RoutingTable {
    RoutingTable {
        epoch: 1,
        q: Q,
        n_val: 1,
        nodes: vec![RoutingNode {
            id: 1,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: node_port,
            shard_ports: shard_ports.to_vec(),
            weight: 2,
        }],
        partitions: (0..Q).map(|p| vec![(0u32, (p % 2) as u16)]).collect(),
    }
}

fn answer(
    request: Request,
    shard: Option<u16>,
    store: &Store,
    counters: &Counters,
    table: &RoutingTable,
) -> Response {
    if let (Some(shard), Some(key)) = (shard, request.key()) {
        counters.requests[usize::from(shard)].fetch_add(1, Ordering::Relaxed);
        if owner_shard(key) != shard {
            counters.misrouted.fetch_add(1, Ordering::Relaxed);
            return Response::Error {
                code: ErrorCode::WrongOwner,
                message: "wrong shard".into(),
                acks: 0,
                routing: Some(table.clone()),
            };
        }
    }
    match request {
        Request::Ping => Response::Pong,
        Request::GetRoutingTable => Response::RoutingTable(table.clone()),
        Request::Get { key, quorum } => {
            if quorum.r == Some(1) {
                counters.gets_with_r1.fetch_add(1, Ordering::Relaxed);
            }
            let map = store.lock().expect("store lock");
            let (siblings, version) = match map.get(&key) {
                Some(entry) => (
                    entry
                        .siblings
                        .iter()
                        .map(|(_, value)| Sibling {
                            tombstone: false,
                            value: value.clone(),
                        })
                        .collect(),
                    entry.next_version - 1,
                ),
                None => (Vec::new(), 0),
            };
            Response::Get {
                found: !siblings.is_empty(),
                siblings,
                context: context_of(version),
            }
        }
        Request::Put {
            key,
            value,
            context,
            quorum,
        } => {
            if quorum.dw == Some(1) {
                counters.puts_with_dw1.fetch_add(1, Ordering::Relaxed);
            }
            let mut map = store.lock().expect("store lock");
            let entry = map.entry(key).or_insert(Entry {
                siblings: Vec::new(),
                next_version: 1,
            });
            // A put supersedes the versions its context saw; the others stay
            // as siblings, as a causal store keeps concurrent writes.
            let seen = context.as_deref().map(version_of).unwrap_or(0);
            entry.siblings.retain(|(version, _)| *version > seen);
            if entry.siblings.len() >= SIBLINGS_MAX {
                return Response::Error {
                    code: ErrorCode::TooManySiblings,
                    message: "too many siblings".into(),
                    acks: 0,
                    routing: None,
                };
            }
            let version = entry.next_version;
            entry.next_version += 1;
            entry.siblings.push((version, value));
            Response::Put {
                context: context_of(version),
            }
        }
        Request::Delete { .. } => Response::Delete,
    }
}

fn start_fixture() -> (u16, Arc<Counters>) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind");
    let (node, s0, s1) = (bind(), bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("addr").port();
    let table = table(port(&node), [port(&s0), port(&s1)]);
    let node_port = port(&node);
    let store: Store = Arc::default();
    let counters = Arc::new(Counters::default());
    let serve = |listener: TcpListener, shard: Option<u16>| {
        let (store, counters, table) = (store.clone(), counters.clone(), table.clone());
        serve_dynakv(listener, move |request| {
            answer(request, shard, &store, &counters, &table)
        });
    };
    serve(node, None);
    serve(s0, Some(0));
    serve(s1, Some(1));
    (node_port, counters)
}

/// Runs the binary against a fresh fixture with `args` after `--target`: the
/// JSON report (saved as `name`) and the fixture's counters.
fn run_on_fixture(args: &[&str], name: &str) -> (String, Arc<Counters>) {
    let (port, counters) = start_fixture();
    let target = format!("dynakv://127.0.0.1:{port}");
    let mut all = vec!["--target", target.as_str()];
    all.extend_from_slice(args);
    (run_json(&all, name), counters)
}

#[test]
fn requests_go_straight_to_their_coordinator_shard() {
    let (json, counters) = run_on_fixture(
        &[
            "--workload",
            "ycsb-a",
            "--duration",
            "1s",
            "--connections",
            "4",
            "--pipeline",
            "4",
            "--keys",
            "500",
            "--r",
            "1",
            "--dw",
            "1",
        ],
        "ycsb-a",
    );
    assert!(json_number(&json, "ops") > 0.0, "{json}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
    assert_eq!(json_number(&json, "misses"), 0.0, "{json}");
    assert_eq!(counters.misrouted.load(Ordering::Relaxed), 0);
    assert!(counters.requests[0].load(Ordering::Relaxed) > 0);
    assert!(counters.requests[1].load(Ordering::Relaxed) > 0);
    assert!(counters.gets_with_r1.load(Ordering::Relaxed) > 0);
    assert!(
        counters.puts_with_dw1.load(Ordering::Relaxed) > 0,
        "--dw reaches the puts"
    );
    assert!(json.contains("\"dw\":1"), "the JSON names --dw: {json}");
}

#[test]
fn cart_merges_siblings_and_writes_with_the_context() {
    let (json, counters) = run_on_fixture(
        &[
            "--workload",
            "cart",
            "--duration",
            "1s",
            "--connections",
            "4",
            "--keys",
            "20",
        ],
        "cart",
    );
    assert!(json_number(&json, "ops") > 0.0, "{json}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
    assert!(json.contains("\"cart\":{\"throughput_ops_s\""), "{json}");
    assert!(json_number(&json, "siblings_seen") > 0.0, "{json}");
    assert_eq!(counters.misrouted.load(Ordering::Relaxed), 0);
}

/// One second of half gets, half puts against a fresh fixture, with
/// `connections` clients of `pipeline` requests each over `keys` keys: the JSON
/// report.
fn half_puts_json(connections: &str, pipeline: &str, keys: &str, name: &str) -> String {
    run_on_fixture(
        &[
            "--workload",
            "mixed",
            "--read-ratio",
            "0.5",
            "--duration",
            "1s",
            "--connections",
            connections,
            "--pipeline",
            pipeline,
            "--keys",
            keys,
        ],
        name,
    )
    .0
}

/// The report's `reads` object and what follows it.
fn reads_of(json: &str) -> &str {
    &json[json.find("\"reads\":{").expect("a reads object")..]
}

#[test]
fn reads_count_the_siblings_that_concurrent_puts_left() {
    // Two keys, many puts in flight: puts whose context missed each
    // other's writes leave siblings, and the reads that return them are
    // counted in the JSON's `reads` (and the footer).
    let json = half_puts_json("4", "8", "2", "siblings");
    let reads = reads_of(&json);
    let hits = json_number(reads, "hits");
    let seen = json_number(reads, "siblings_seen");
    assert!(hits > 0.0, "{json}");
    assert!(json_number(reads, "with_siblings") > 0.0, "{json}");
    assert!(json_number(reads, "siblings_max") > 1.0, "{json}");
    assert!(seen > hits, "more versions than reads: {json}");
}

#[test]
fn plain_puts_carry_the_context_of_the_keys_last_reply() {
    // One client, one request at a time: every put follows a reply for its
    // key (the load's, a get's or a put's), so with the context that reply
    // carried it supersedes every version and a read never sees two. A put
    // sent blind (no context remembered) would add a sibling instead.
    let json = half_puts_json("1", "1", "3", "contexts");
    let reads = reads_of(&json);
    assert!(json_number(reads, "hits") > 100.0, "{json}");
    assert_eq!(json_number(reads, "siblings_max"), 1.0, "{json}");
    assert_eq!(json_number(reads, "with_siblings"), 0.0, "{json}");
    let puts = &json[json.find("\"put\":{").expect("a put entry")..];
    assert!(json_number(puts, "ops") > 100.0, "{json}");
}

#[test]
fn an_ops_run_with_puts_sends_exactly_its_budget() {
    // A run that remembers contexts draws its operations a few ahead of
    // sending them (`Engine::next_run_op`); the operations drawn but not yet
    // sent when the budget is reached must not go out. Load: a get and a put
    // per key; then exactly `--ops` requests. (That drawing ahead keeps the
    // order and loses nothing: `engine::tests`.)
    let (json, counters) = run_on_fixture(
        &[
            "--workload",
            "mixed",
            "--read-ratio",
            "0.5",
            "--ops",
            "1000",
            "--warmup",
            "0s",
            "--connections",
            "3",
            "--pipeline",
            "4",
            "--keys",
            "50",
        ],
        "ops-budget",
    );
    assert_eq!(json_number(&json, "ops"), 1000.0, "{json}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
    let requests: u64 = counters
        .requests
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .sum();
    assert_eq!(requests, 2 * 50 + 1000, "{json}");
}
