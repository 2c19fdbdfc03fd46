//! A rolling restart of a three-node cluster (N=3, R=2, W=2) under
//! continuous writes: each node in turn gets SIGTERM, exits cleanly, starts
//! again on its data directory and rejoins; the client library fails over
//! from the stopped node to the next replica. Writes keep succeeding
//! throughout and no acknowledged write is lost (docs/deployment.md).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_cluster, wait_converged, wait_until};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

#[test]
fn rolling_restart_under_writes_loses_nothing_and_keeps_serving() {
    let mut nodes = start_cluster(3, 1, &[]);
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        // Above the cluster's 1.5 s request timeout (FAST_CLUSTER_ARGS).
        attempt_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let seed = nodes[0].listen;
    let stop = Arc::new(AtomicBool::new(false));
    // (key, acknowledged) per write, and the failures with their errors.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, acknowledged, failures, options) = (
            stop.clone(),
            acknowledged.clone(),
            failures.clone(),
            options.clone(),
        );
        std::thread::spawn(move || {
            let mut client = Client::connect(seed, options).expect("connect");
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("roll-{i}");
                match client.put(key.as_bytes(), key.as_bytes(), None, Quorum::DEFAULT) {
                    Ok(_) => acknowledged.lock().unwrap().push(key),
                    Err(e) => failures.lock().unwrap().push(format!("{key}: {e}")),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let acked = || acknowledged.lock().unwrap().len();
    wait_until(10, "the first writes", || acked() >= 20);

    for index in 0..nodes.len() {
        let before = acked();
        let status = nodes[index].terminate();
        assert!(
            status.success(),
            "node {index} did not stop cleanly: {status}"
        );
        // Writes go on while the node is down...
        wait_until(10, "writes while a node is down", || acked() >= before + 20);
        nodes[index].restart();
        wait_converged(&nodes, 3);
        // ...and after it is back.
        let back = acked();
        wait_until(10, "writes after the restart", || acked() >= back + 20);
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} writes failed during the rolling restart: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Every acknowledged write is readable from every primary (R = all),
    // once hints have been replayed.
    let keys = acknowledged.lock().unwrap().clone();
    assert!(keys.len() >= 120, "only {} writes", keys.len());
    wait_until(20, "hints replayed", || {
        nodes
            .iter()
            .all(|n| n.status().is_some_and(|s| s.hints == 0))
    });
    let mut reader = Client::connect(nodes[2].listen, options).expect("connect");
    let all = Quorum {
        r: Some(R_ALL),
        ..Quorum::DEFAULT
    };
    let mut duplicated = 0;
    for key in &keys {
        let got = reader.get_with(key.as_bytes(), all).expect("read back");
        // A put that failed over after its first attempt was applied is
        // applied twice: a duplicate sibling of the same value, never a loss.
        assert!(
            !got.values.is_empty() && got.values.iter().all(|v| v == key.as_bytes()),
            "acknowledged write {key} lost or changed: {:?}",
            got.values
        );
        duplicated += usize::from(got.values.len() > 1);
    }
    eprintln!(
        "{} writes acknowledged, {duplicated} left a duplicate sibling by failing over",
        keys.len()
    );
}
