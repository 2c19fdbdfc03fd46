//! Failures in a four-node cluster (N=3, R=2, W=2) of real processes on
//! 127.0.0.1 … 127.0.0.4: `kill -9` of a node (sloppy quorum and hinted
//! handoff, Dynamo §4.6), its restart (hint replay), SIGSTOP/SIGCONT (a node
//! that hangs instead of dying), and a shopping-cart workload from several
//! client threads across a node kill, checking that no acknowledged element
//! is lost (§4.4, §6).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{start_cluster, wait_converged, wait_until, TestNode};
use dynakv::client::{Client, ClientError, ClientOptions};
use dynakv::protocol::{Quorum, RoutingTable, R_ALL};
use dynakv::ring::{key_hash, partition_of};

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        // A node that refused a connection is avoided for the rest of the
        // test phase; routing then picks the next primary.
        unreachable_for: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

fn client(node: &TestNode) -> Client {
    Client::connect(node.listen, options()).expect("connect")
}

/// A put that retries once after a transient failure (a connection to a
/// dead node): the client library reports it instead of guessing whether
/// the write took effect, and routes the retry to another primary.
fn put_retrying(c: &mut Client, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
    match c.put(key, value, None, Quorum::default()) {
        Err(e) if e.is_transient() => c.put(key, value, None, Quorum::default()).map(|_| ()),
        other => other.map(|_| ()),
    }
}

fn all() -> Quorum {
    Quorum {
        r: Some(R_ALL),
        ..Quorum::default()
    }
}

fn hints_held(nodes: &[TestNode]) -> u64 {
    nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| n.status().map_or(0, |s| s.hints))
        .sum()
}

/// Whether `node` is the first primary (the coordinator clients pick) of `key`.
fn first_primary_is(table: &RoutingTable, key: &[u8], node: &TestNode) -> bool {
    let partition = partition_of(key_hash(key), table.q);
    let (index, _) = table.partitions[partition as usize][0];
    let entry = &table.nodes[index as usize];
    entry.addr == node.listen.ip()
}

/// Whether `node` is any primary of `key`.
fn is_primary(table: &RoutingTable, key: &[u8], node: &TestNode) -> bool {
    let partition = partition_of(key_hash(key), table.q);
    table.partitions[partition as usize]
        .iter()
        .any(|(index, _)| table.nodes[*index as usize].addr == node.listen.ip())
}

#[test]
fn kill_9_keeps_writes_going_with_hints_that_replay_after_restart() {
    let mut nodes = start_cluster(4, 1, &[]);
    let mut c = client(&nodes[0]);
    let table = c.routing_table().expect("table");
    nodes[3].kill9();

    // Every write succeeds with W=2 although one node in four is dead; the
    // keys that node is a primary of are held as hints by a fallback.
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for key in &keys {
        put_retrying(&mut c, key.as_bytes(), key.as_bytes())
            .unwrap_or_else(|e| panic!("put {key} with a node down: {e}"));
    }
    let on_dead = keys
        .iter()
        .filter(|k| is_primary(&table, k.as_bytes(), &nodes[3]))
        .count();
    assert!(on_dead > 0, "the dead node is a primary of some keys");
    for key in &keys {
        let got = c.get(key.as_bytes()).expect("get with a node down");
        assert_eq!(got.values, vec![Bytes::from(key.clone())], "{key}");
    }
    wait_until(10, "hints for the dead node", || hints_held(&nodes) > 0);

    // Restart: hints go back to it and are deleted once it acknowledged.
    nodes[3].restart();
    wait_converged(&nodes, 4);
    wait_until(20, "hint replay", || hints_held(&nodes) == 0);
    let mut c = client(&nodes[3]);
    for key in &keys {
        let got = c.get_with(key.as_bytes(), all()).expect("R=all get");
        assert_eq!(got.values, vec![Bytes::from(key.clone())], "{key}");
    }
}

#[test]
fn a_stopped_node_is_routed_around_and_catches_up_after_sigcont() {
    let nodes = start_cluster(4, 1, &[]);
    let mut c = client(&nodes[0]);
    let table = c.routing_table().expect("table");
    let stopped = &nodes[3];
    let pid = stopped.child.as_ref().expect("running").id() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };

    // Writes coordinated by live nodes succeed: the stopped primary times
    // out and a fallback takes a hint.
    let keys: Vec<String> = (0..200)
        .map(|i| format!("s{i}"))
        .filter(|k| !first_primary_is(&table, k.as_bytes(), stopped))
        .take(30)
        .collect();
    let mut written = 0;
    for key in &keys {
        c.put(key.as_bytes(), b"v1", None, Quorum::default())
            .unwrap_or_else(|e| panic!("put {key} with a node stopped: {e}"));
        written += 1;
    }
    assert_eq!(written, keys.len());
    wait_until(10, "the stopped node to be suspected", || {
        nodes[0].status().is_some_and(|s| s.reachable == 3)
    });

    // SIGCONT: it is heard again, hints drain, every primary answers.
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_converged(&nodes, 4);
    wait_until(20, "hint replay", || hints_held(&nodes) == 0);
    for key in &keys {
        let got = c.get_with(key.as_bytes(), all()).expect("R=all get");
        assert_eq!(got.values, vec![Bytes::from_static(b"v1")], "{key}");
    }
}

/// The cart's elements: the union of every sibling's comma-separated items.
fn elements(values: &[Bytes]) -> BTreeSet<String> {
    values
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn shopping_carts_lose_no_acknowledged_item_across_a_node_kill() {
    let mut nodes = start_cluster(4, 1, &[]);
    let carts = ["cart-a", "cart-b", "cart-c"];
    let threads = 4;
    let ops_per_thread_max = 2000;
    // 0: before the kill, 1: node down, 2: restarted, 3: stop.
    let phase = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for t in 0..threads {
        let entry = nodes[t % 3].listen;
        let phase = phase.clone();
        workers.push(std::thread::spawn(move || {
            let mut c = Client::connect(entry, options()).expect("connect");
            let mut acked: Vec<(usize, String, usize)> = Vec::new();
            let mut failures = 0;
            for i in 0..ops_per_thread_max {
                let now = phase.load(Ordering::SeqCst);
                if now == 3 {
                    break;
                }
                let cart = (t + i) % carts.len();
                let key = carts[cart].as_bytes();
                // Read, merge the siblings, add one unique item, write back
                // with the read's context (the cart of Dynamo §4.4).
                let Ok(got) = c.get(key) else {
                    failures += 1;
                    continue;
                };
                let mut items = elements(&got.values);
                let item = format!("t{t}-{i}");
                items.insert(item.clone());
                let value = items.into_iter().collect::<Vec<_>>().join(",");
                let context = (!got.context.is_empty()).then_some(&got.context[..]);
                match c.put(key, value.as_bytes(), context, Quorum::default()) {
                    Ok(_) => acked.push((cart, item, now)),
                    Err(_) => failures += 1,
                }
            }
            (acked, failures)
        }));
    }
    // Kill one node while the carts are being written, then bring it back.
    wait_until(20, "the workload to start", || {
        nodes[0]
            .cli(&["get", "cart-a", "--json"])
            .1
            .contains("\"found\": true")
    });
    nodes[3].kill9();
    phase.store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    nodes[3].restart();
    phase.store(2, Ordering::SeqCst);
    wait_converged(&nodes, 4);
    std::thread::sleep(Duration::from_millis(500));
    phase.store(3, Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (a, f) = worker.join().expect("worker");
        acked.extend(a);
        failures += f;
    }
    let while_down = acked.iter().filter(|(_, _, p)| *p == 1).count();
    assert!(
        while_down >= 10,
        "carts kept being written while a node was down ({while_down} acked then, {} in all, {failures} failed)",
        acked.len()
    );

    wait_converged(&nodes, 4);
    wait_until(20, "hint replay", || hints_held(&nodes) == 0);
    let mut c = client(&nodes[1]);
    for (cart, name) in carts.iter().enumerate() {
        let got = c.get_with(name.as_bytes(), all()).expect("final R=all get");
        let items = elements(&got.values);
        for (_, item, _) in acked.iter().filter(|(c, _, _)| *c == cart) {
            assert!(
                items.contains(item),
                "{name} lost acknowledged item {item}: {items:?}"
            );
        }
    }
}

#[test]
fn without_a_quorum_writes_and_reads_fail_clearly_and_recover() {
    let mut nodes = start_cluster(3, 1, &[]);
    let mut c = client(&nodes[0]);
    put_retrying(&mut c, b"q", b"before").expect("put");
    nodes[1].kill9();
    nodes[2].kill9();
    // One node of three: W = 2 and R = 2 cannot be met; the error says how
    // far the request got (a first attempt may hit a dead node's port).
    let err = put_retrying(&mut c, b"q", b"alone").expect_err("W=2 with one node");
    assert!(err.to_string().contains("1 of W=2"), "{err}");
    let err = match c.get(b"q") {
        Err(e) if e.is_transient() => c.get(b"q").expect_err("R=2 with one node"),
        other => other.expect_err("R=2 with one node"),
    };
    assert!(err.to_string().contains("1 of R=2"), "{err}");
    // W = 1 still works: the write is on one replica.
    let w1 = Quorum {
        w: Some(1),
        ..Quorum::default()
    };
    c.put(b"q", b"w1", None, w1).expect("W=1 put");
    nodes[1].restart();
    wait_until(20, "a quorum again", || client(&nodes[0]).get(b"q").is_ok());
}
