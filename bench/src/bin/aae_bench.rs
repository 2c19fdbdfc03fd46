//! aae_bench: how long and how many bytes Merkle-tree anti-entropy needs to
//! repair 1% of keys differing on one replica of 1 million keys
//! (BENCHMARKS.md, "Anti-entropy").
//!
//! Two replicas, each the real `Store` over `MemDisk` (in memory: this
//! measures the CPU and protocol cost, not a disk), the real `Replica`
//! machine (repairs are merges through its per-key lock) and the real
//! `AntiEntropy` machine, both primaries of every one of Q partitions. Both
//! hold the same `--keys` keys (100-byte values, one sibling each), except
//! that on replica B 1% of the keys differ: half of them are missing, half
//! hold a concurrent version of their own. The bench builds both trees from
//! the stores, then runs exchange rounds (each replica starts one exchange
//! per round, as it does once per `aae_interval_ms`) until every partition's
//! roots agree, and checks every key is equal on both sides.
//!
//! Reports: tree build time, the repair's CPU time (wall time of the
//! message processing, scans and merges, with no network), rounds (so the
//! sweep time at a given interval), messages and bytes exchanged, keys
//! repaired; and the bytes of one round when everything is in sync.
//!
//! Usage: `aae_bench [--keys N] [--partitions Q] [--differ-per-mille M]`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use dynakv::antientropy::{
    perform_io_observed, perform_scan, AaeConfig, AaeMessage, AntiEntropy, LocalAction,
};
use dynakv::membership::NodeId;
use dynakv::replica::{actor_id, IoResult, QuorumConfig, Replica, ReplicaConfig};
use dynakv::ring::key_partition;
use dynakv::storage::{block_on, Durability, MemDisk, Namespace, RecordKind, Store, StoreConfig};
use dynakv::version::{SiblingSet, Value, VersionVector};

struct Node {
    store: Store<MemDisk>,
    replica: Replica,
    aae: RefCell<AntiEntropy>,
}

struct Totals {
    messages: u64,
    bytes: u64,
}

const INTERVAL_MS: u64 = 1_000;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn payload(actor: u64, value: &[u8]) -> Vec<u8> {
    let mut set = SiblingSet::new();
    set.update(
        &VersionVector::new(),
        actor,
        Value::Data(Bytes::copy_from_slice(value)),
    )
    .expect("one sibling");
    let mut out = Vec::new();
    set.encode(&mut out);
    out
}

/// Drains one node's outputs: storage requests, scans, merges; returns the
/// messages it wants to send as (to, bytes).
fn drain(node: &mut Node, now: u64) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut progressed = false;
        while let Some(io) = node.replica.poll_io() {
            progressed = true;
            let (id, result) = block_on(perform_io_observed(&node.store, &node.aae, || now, io));
            let result = result.unwrap_or_else(|e| IoResult::Failed(e.to_string()));
            node.replica.handle_io_done(now, id, result);
        }
        assert!(node.replica.poll_transmit().is_none());
        let mut aae = node.aae.borrow_mut();
        while let Some(request) = aae.poll_io() {
            progressed = true;
            let result = block_on(perform_scan(&node.store, &request));
            aae.handle_scan_done(now, request.io, result.map_err(|e| e.to_string()));
        }
        while let Some((to, message)) = aae.poll_transmit() {
            progressed = true;
            let mut bytes = Vec::new();
            message.encode(&mut bytes);
            out.push(((to.0 - 1) as usize, bytes));
        }
        let actions: Vec<LocalAction> = std::iter::from_fn(|| aae.poll_action()).collect();
        drop(aae);
        for action in actions {
            progressed = true;
            match action {
                LocalAction::Merge {
                    partition,
                    key,
                    siblings,
                } => node.replica.start_merge(partition, key, siblings),
                LocalAction::Purge { .. } => unreachable!("no tombstones here"),
            }
        }
        if !progressed {
            return out;
        }
    }
}

/// Ticks both nodes at `now` and delivers messages until nothing moves.
fn round(nodes: &mut [Node], now: u64, totals: &mut Totals) {
    let mut queue: VecDeque<(usize, usize, Vec<u8>)> = VecDeque::new();
    for (index, node) in nodes.iter_mut().enumerate() {
        node.replica.handle_timeout(now);
        node.aae.borrow_mut().handle_timeout(now);
        queue.extend(drain(node, now).into_iter().map(|(to, b)| (index, to, b)));
    }
    while let Some((from, to, bytes)) = queue.pop_front() {
        totals.messages += 1;
        totals.bytes += bytes.len() as u64 + 4 + 13; // frame length + envelope
        let message = AaeMessage::decode(&bytes).expect("own encoding");
        let node = &mut nodes[to];
        node.aae
            .borrow_mut()
            .handle_message(now, NodeId(from as u64 + 1), message);
        queue.extend(drain(node, now).into_iter().map(|(t, b)| (to, t, b)));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys = arg(&args, "--keys", 1_000_000);
    let q = arg(&args, "--partitions", 256) as u32;
    let differ_per_mille = arg(&args, "--differ-per-mille", 10);
    let ids = [NodeId(1), NodeId(2)];
    let mut nodes: Vec<Node> = ids
        .iter()
        .map(|id| {
            let (store, _) =
                block_on(Store::open(MemDisk::new(), StoreConfig::default())).expect("open");
            let quorum = QuorumConfig {
                n: 2,
                r: 1,
                w: 1,
                dw: 0,
            };
            let replica = Replica::new(
                *id,
                actor_id(*id, 0, 1),
                ReplicaConfig {
                    quorum,
                    ..ReplicaConfig::default()
                },
                0,
            );
            let config = AaeConfig {
                exchange_interval_ms: INTERVAL_MS,
                exchange_timeout_ms: 10 * INTERVAL_MS,
                tombstone_grace_ms: 3_600_000,
            };
            let mut aae = AntiEntropy::new(*id, config, 0, 1 << 40);
            aae.set_partitions((0..q).map(|p| (p, ids.to_vec())).collect());
            Node {
                store,
                replica,
                aae: RefCell::new(aae),
            }
        })
        .collect();

    // Load: the same version on both, except 1% of keys on B.
    let started = Instant::now();
    let value = [7u8; 100];
    let mut differing = 0u64;
    for i in 0..keys {
        let key = format!("key-{i:010}");
        let partition = key_partition(key.as_bytes(), q);
        let common = payload(1 << 32, &value);
        let put = |node: &Node, bytes: &[u8]| {
            block_on(node.store.put(
                Namespace::Data,
                partition,
                key.as_bytes(),
                RecordKind::Value,
                Bytes::copy_from_slice(bytes),
                Durability::Buffered,
            ))
            .expect("put");
        };
        put(&nodes[0], &common);
        // Spread the differing keys evenly (every 1000/M-th key).
        if differ_per_mille > 0 && i % (1000 / differ_per_mille) == 0 {
            differing += 1;
            if differing % 2 == 0 {
                put(&nodes[1], &payload(2 << 32, b"a concurrent version"));
            }
        } else {
            put(&nodes[1], &common);
        }
    }
    let load_s = started.elapsed().as_secs_f64();

    // Tree builds (the restart case): every partition scanned once.
    let started = Instant::now();
    let mut now = 0;
    let mut totals = Totals {
        messages: 0,
        bytes: 0,
    };
    while !(0..q).all(|p| nodes.iter().all(|n| n.aae.borrow().is_ready(p))) {
        for node in nodes.iter_mut() {
            node.aae.borrow_mut().handle_timeout(now);
            let sent = drain(node, now);
            assert!(sent.is_empty() || now > 0);
        }
        now += 1;
    }
    let build_s = started.elapsed().as_secs_f64();

    // Repair: rounds until every partition's roots agree.
    let started = Instant::now();
    let mut rounds = 0u64;
    let mut totals_repair = Totals {
        messages: 0,
        bytes: 0,
    };
    let agree = |nodes: &[Node]| {
        (0..q).all(|p| nodes[0].aae.borrow().root(p) == nodes[1].aae.borrow().root(p))
    };
    while !agree(&nodes) {
        now += INTERVAL_MS;
        rounds += 1;
        round(&mut nodes, now, &mut totals_repair);
        assert!(
            rounds < 100 * u64::from(q),
            "anti-entropy does not converge"
        );
    }
    let repair_s = started.elapsed().as_secs_f64();

    // One more full sweep of in-sync exchanges: the steady-state cost.
    let in_sync_rounds = u64::from(q).div_ceil(2);
    for _ in 0..in_sync_rounds {
        now += INTERVAL_MS;
        round(&mut nodes, now, &mut totals);
    }

    // Check every key.
    let mut equal = 0u64;
    for i in 0..keys {
        let key = format!("key-{i:010}");
        let partition = key_partition(key.as_bytes(), q);
        let get = |node: &Node| {
            block_on(node.store.get(Namespace::Data, partition, key.as_bytes()))
                .expect("get")
                .map(|r| r.payload)
        };
        let (a, b) = (get(&nodes[0]), get(&nodes[1]));
        assert_eq!(a, b, "{key} differs after repair");
        equal += 1;
    }
    let received: u64 = nodes
        .iter()
        .map(|n| n.aae.borrow().stats().keys_received)
        .sum();
    println!("aae_bench: {keys} keys, Q = {q}, {differing} keys differing on replica B ({} missing, {} concurrent)", differing - differing / 2, differing / 2);
    println!("load (both stores, MemDisk): {load_s:.2} s");
    println!("tree build from the stores (2 replicas x {q} partitions): {build_s:.2} s");
    println!(
        "repair: {repair_s:.2} s of CPU (wall, no network); {rounds} exchange rounds (sweep time {} s at aae_interval_ms = {INTERVAL_MS}); {} messages, {} bytes ({:.1} MiB); {received} sets merged; {equal} keys equal afterwards",
        rounds * INTERVAL_MS / 1000,
        totals_repair.messages,
        totals_repair.bytes,
        totals_repair.bytes as f64 / (1 << 20) as f64
    );
    println!(
        "in sync: {} exchanges of {q} partitions cost {} messages, {} bytes ({} bytes per partition)",
        in_sync_rounds * 2,
        totals.messages,
        totals.bytes,
        totals.bytes / u64::from(q).max(1)
    );
}
