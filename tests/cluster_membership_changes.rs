//! Membership changes under load (issue 5): a five-node cluster keeps taking
//! writes while a sixth node joins and one of the original nodes leaves; in
//! the end every acknowledged write is readable through the final ring with
//! R = all (Dynamo §4.8 explicit changes, partition handoff, read repair).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{start_cluster, wait_converged, wait_until, TestNode, FAST_CLUSTER_ARGS};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

#[test]
fn writes_acknowledged_during_a_join_and_a_leave_are_all_readable_afterwards() {
    let mut nodes = start_cluster(5, 1, &[]);
    let options = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };

    // A writer that records every acknowledged key; failures are allowed
    // while the ring changes (the client sees a clear error), losses are not.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, acknowledged, seed, options) = (
            stop.clone(),
            acknowledged.clone(),
            nodes[0].listen,
            options.clone(),
        );
        std::thread::spawn(move || {
            let mut client = Client::connect(seed, options.clone()).expect("connect");
            let mut failures = 0u32;
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load-{i}");
                match client.put(key.as_bytes(), key.as_bytes(), None, Quorum::default()) {
                    Ok(_) => acknowledged.lock().unwrap().push(key),
                    Err(_) => {
                        failures += 1;
                        // A fresh client re-reads the routing table after a change.
                        if let Ok(fresh) = Client::connect(seed, options.clone()) {
                            client = fresh;
                        }
                    }
                }
                i += 1;
            }
            failures
        })
    };
    let acked_so_far = |n: usize| {
        let acknowledged = acknowledged.clone();
        move || acknowledged.lock().unwrap().len() >= n
    };
    wait_until(20, "writes before the join", acked_so_far(50));

    // A sixth node joins.
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = nodes[0].listen.port();
    let mut joining = TestNode::start_at(
        &format!("127.0.0.6:{port}"),
        tmp.path(),
        1,
        FAST_CLUSTER_ARGS,
    );
    joining.keep_dir(tmp);
    let member = nodes[0].internode().to_string();
    let (code, _, err) = joining.admin(&["join", "--cluster", &member]);
    assert_eq!(code, 0, "{err}");
    nodes.push(joining);
    wait_converged(&nodes, 6);
    let before_leave = acknowledged.lock().unwrap().len();
    wait_until(20, "writes after the join", acked_so_far(before_leave + 50));

    // The second node leaves.
    let (code, _, err) = nodes[1].admin(&["leave"]);
    assert_eq!(code, 0, "{err}");
    wait_until(20, "the leave to spread", || {
        nodes.iter().all(|n| {
            let (_, ring, _) = n.admin(&["ring", "--json"]);
            !ring.contains("127.0.0.2")
        })
    });
    let after_leave = acknowledged.lock().unwrap().len();
    wait_until(20, "writes after the leave", acked_so_far(after_leave + 50));
    stop.store(true, Ordering::Relaxed);
    let failures = writer.join().expect("writer");
    let keys = acknowledged.lock().unwrap().clone();
    assert!(
        keys.len() >= 150,
        "the cluster kept taking writes: {} acknowledged, {failures} failed",
        keys.len()
    );

    // Every acknowledged key is readable through the final ring, from every
    // primary (R = all); handoff and read repair may need a moment.
    let mut reader = Client::connect(nodes[0].listen, options).expect("connect");
    let all = Quorum {
        r: Some(R_ALL),
        ..Quorum::default()
    };
    let mut missing: Vec<String> = keys.clone();
    wait_until(30, "every acknowledged write to be readable", || {
        missing.retain(|key| {
            !reader
                .get_with(key.as_bytes(), all)
                .is_ok_and(|got| got.values == vec![Bytes::from(key.clone())])
        });
        missing.is_empty()
    });
}
