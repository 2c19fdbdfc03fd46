//! Partition handoff after a join: with N = 1 every key lives on exactly one
//! node, so a key whose partition moves to the new node is readable after
//! the join only if the old owner handed it off.

mod common;

use std::time::Duration;

use common::{start_cluster, wait_converged, wait_until, TestNode, FAST_CLUSTER_ARGS};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::Quorum;

#[test]
fn keys_of_moved_partitions_are_readable_after_a_join() {
    let n1 = ["--n-val", "1", "--r", "1", "--w", "1"];
    let mut nodes = start_cluster(3, 1, &n1);
    let options = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let mut c = Client::connect(nodes[0].listen, options.clone()).expect("connect");
    let keys: Vec<String> = (0..120).map(|i| format!("h{i}")).collect();
    for key in &keys {
        c.put(key.as_bytes(), key.as_bytes(), None, Quorum::default())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let port = nodes[0].listen.port();
    let args: Vec<&str> = FAST_CLUSTER_ARGS.iter().copied().chain(n1).collect();
    let mut new = TestNode::start_at(&format!("127.0.0.4:{port}"), tmp.path(), 1, &args);
    new.keep_dir(tmp);
    let member = nodes[0].internode().to_string();
    assert_eq!(new.admin(&["join", "--cluster", &member]).0, 0);
    nodes.push(new);
    wait_converged(&nodes, 4);
    wait_until(20, "the new node to receive its partitions", || {
        nodes[3].status().is_some_and(|s| s.keys > 0)
    });

    // Every key is readable through the new ring, including those whose
    // only owner is now the new node.
    let mut c = Client::connect(nodes[3].listen, options).expect("connect");
    let table = c.routing_table().expect("table");
    assert_eq!(table.nodes.len(), 4);
    wait_until(20, "every key to be readable after the join", || {
        keys.iter().all(|key| {
            c.get(key.as_bytes())
                .is_ok_and(|got| got.values == vec![bytes::Bytes::from(key.clone())])
        })
    });
}

/// Sum of the keys every listed node stores (both namespaces).
fn stored(nodes: &[TestNode]) -> Option<u64> {
    nodes.iter().map(|n| n.status().map(|s| s.keys)).sum()
}

/// A number field of `admin status --json`.
fn status_field(node: &TestNode, field: &str) -> Option<u64> {
    let (code, out, _) = node.admin(&["status", "--json"]);
    if code != 0 {
        return None;
    }
    let start = out.find(&format!("\"{field}\": "))? + field.len() + 4;
    out[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// Every listed node has handed off every partition it no longer holds
/// (and dropped its copies), and the nodes together store between the
/// acknowledged and the attempted keys: each at most once (N = 1; a put
/// that timed out at the client may still have been stored).
fn drained(nodes: &[TestNode], acked: u64, attempted: u64) -> bool {
    if std::env::var_os("DYNAKV_TEST_LOG").is_some() {
        let pending: Vec<Option<u64>> = nodes
            .iter()
            .map(|n| status_field(n, "handoff_pending"))
            .collect();
        let keys: Vec<Option<u64>> = nodes.iter().map(|n| n.status().map(|s| s.keys)).collect();
        eprintln!("[test] pending {pending:?} keys {keys:?} acked {acked} attempted {attempted}");
    }
    nodes
        .iter()
        .all(|n| status_field(n, "handoff_pending") == Some(0))
        && stored(nodes).is_some_and(|s| (acked..=attempted).contains(&s))
}

#[test]
fn a_join_under_load_moves_keys_and_old_owners_drop_them_then_a_leave_drains_a_node() {
    // N = 1: every key has exactly one owner, so once handoff has dropped
    // the old copies the nodes together store each key exactly once.
    let n1 = ["--n-val", "1", "--r", "1", "--w", "1"];
    let mut nodes = start_cluster(3, 2, &n1);
    let options = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let mut c = Client::connect(nodes[0].listen, options.clone()).expect("connect");
    for i in 0..150 {
        let key = format!("d{i}");
        c.put(key.as_bytes(), key.as_bytes(), None, Quorum::default())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    // A writer keeps going through the join; every acknowledged key counts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let addr = nodes[1].listen;
        let options = options.clone();
        std::thread::spawn(move || {
            let mut acked: Vec<String> = (0..150).map(|i| format!("d{i}")).collect();
            let mut c = Client::connect(addr, options).expect("connect");
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{i}");
                if c.put(key.as_bytes(), key.as_bytes(), None, Quorum::default())
                    .is_ok()
                {
                    acked.push(key);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (acked, 150 + i)
        })
    };

    let tmp = tempfile::tempdir().expect("tempdir");
    let port = nodes[0].listen.port();
    let args: Vec<&str> = FAST_CLUSTER_ARGS.iter().copied().chain(n1).collect();
    let mut new = TestNode::start_at(&format!("127.0.0.4:{port}"), tmp.path(), 2, &args);
    new.keep_dir(tmp);
    let member = nodes[0].internode().to_string();
    assert_eq!(new.admin(&["join", "--cluster", &member]).0, 0);
    nodes.push(new);
    wait_converged(&nodes, 4);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, attempted) = writer.join().expect("writer");
    let total = acked.len() as u64;

    // The new node received keys; the old owners dropped what they handed
    // off, so the four nodes together store every key once.
    wait_until(60, "old owners to drop the keys they handed off", || {
        nodes[3].status().is_some_and(|s| s.keys > 0) && drained(&nodes, total, attempted)
    });
    assert!(nodes[..3]
        .iter()
        .any(|n| status_field(n, "handoff_dropped").is_some_and(|d| d > 0)));
    let (_, out, _) = nodes[0].admin(&["status"]);
    assert!(out.contains("dropped after acknowledgement"), "{out}");

    // Node 2 leaves: it hands everything off, then every node (itself
    // included) drops it from the member list.
    let (code, out, err) = nodes[1].admin(&["leave"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(60, "the leaving node to hand off and be removed", || {
        let (_, own, _) = nodes[1].admin(&["status", "--json"]);
        own.contains("\"status\": \"removed\"")
            && nodes[1].status().is_some_and(|s| s.keys == 0)
            && [0, 2, 3]
                .iter()
                .all(|&i| nodes[i].status().is_some_and(|s| s.members == 3))
    });
    let rest: Vec<TestNode> = vec![nodes.remove(0), nodes.remove(1), nodes.remove(1)];
    wait_until(60, "the remaining nodes to store every key once", || {
        drained(&rest, total, attempted)
    });

    // No acknowledged write is lost: every key reads back through the ring.
    let mut c = Client::connect(rest[2].listen, options).expect("connect");
    wait_until(20, "every acknowledged key to be readable", || {
        acked.iter().all(|key| {
            c.get(key.as_bytes())
                .is_ok_and(|got| got.values == vec![bytes::Bytes::from(key.clone())])
        })
    });
    drop(nodes);
}
