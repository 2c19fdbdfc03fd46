//! Anti-entropy and tombstone collection in a three-node cluster (N=3,
//! R=2, W=2) of real processes on 127.0.0.1 … 127.0.0.3 (Dynamo §4.7;
//! design guide §4: "tombstones are collected only when every primary
//! replica is known to hold them"). With three nodes there is no fallback,
//! so a node that is down misses writes without any hint being kept for it:
//! only anti-entropy (or a read's repair, which this test never triggers
//! before it checks) can bring it up to date.

mod common;

use std::time::Duration;

use common::{start_cluster, wait_until, TestNode};
use dynakv::client::{Client, ClientError, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

const AAE_ARGS: &[&str] = &[
    "--partitions",
    "16",
    "--aae-interval-ms",
    "50",
    "--tombstone-grace-ms",
    "300",
];

fn client(node: &TestNode) -> Client {
    let options = ClientOptions {
        timeout: Duration::from_secs(3),
        unreachable_for: Duration::from_secs(60),
        ..ClientOptions::default()
    };
    Client::connect(node.listen, options).expect("connect")
}

/// Retries a transient failure (a connection to the dead node, or a
/// replica that missed the 200 ms replica timeout on a loaded machine) for
/// up to 20 s; any other error, or one that outlasts that, fails the test
/// with the last error. A single retry can run out on a loaded machine
/// (two 200 ms replica timeouts in a row), and this test is about what
/// anti-entropy repairs, not about latency.
fn retry<T>(mut op: impl FnMut() -> Result<T, ClientError>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match op() {
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other.expect("request succeeds"),
        }
    }
}

/// A number field of a one-line JSON answer (summed counters come last).
fn json_number(json: &str, field: &str) -> Option<u64> {
    let start = json.rfind(&format!("\"{field}\": "))? + field.len() + 4;
    json[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

fn keys_stored(node: &TestNode) -> Option<u64> {
    node.status().map(|s| s.keys)
}

fn all_store(nodes: &[TestNode], keys: u64) -> bool {
    nodes.iter().all(|n| keys_stored(n) == Some(keys))
}

#[test]
fn a_returning_replica_is_repaired_and_a_collected_delete_never_comes_back() {
    let mut nodes = start_cluster(3, 1, AAE_ARGS);
    let mut c = client(&nodes[0]);
    for i in 0..100 {
        let key = format!("k{i}");
        retry(|| c.put(key.as_bytes(), b"v1", None, Quorum::default()));
    }
    retry(|| c.put(b"doomed", b"alive", None, Quorum::default()));
    wait_until(20, "101 keys on every node", || all_store(&nodes, 101));

    // Node 3 is down while 50 keys are written and "doomed" is deleted.
    nodes[2].kill9();
    for i in 0..50 {
        let key = format!("n{i}");
        retry(|| c.put(key.as_bytes(), b"v2", None, Quorum::default()));
    }
    let seen = retry(|| c.get(b"doomed"));
    assert!(seen.found);
    retry(|| c.delete(b"doomed", &seen.context, Quorum::default()));
    // Far past the grace period, nodes 1 and 2 still keep the tombstone:
    // node 3 was never compared since the delete.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(keys_stored(&nodes[0]), Some(151));
    assert_eq!(keys_stored(&nodes[1]), Some(151));

    // Node 3 returns with the old "doomed". Anti-entropy gives it the 50
    // keys and the delete; then every node collects the tombstone.
    nodes[2].restart();
    wait_until(30, "the tombstone collected everywhere", || {
        all_store(&nodes, 150)
    });
    // Shards publish their anti-entropy status every 500 ms.
    wait_until(5, "admin aae to report the collection", || {
        let (code, aae, _) = nodes[0].admin(&["aae", "--json"]);
        code == 0
            && json_number(&aae, "tombstones_purged").is_some_and(|n| n >= 1)
            && aae.contains("\"in_sync\": true")
    });
    // Node 1's report does not say that node 3 has published its own yet
    // (each shard publishes every 500 ms), so the sum is read until it holds
    // the 50 keys and the delete, or the deadline says the repair fell short.
    let mut received = 0;
    wait_until(5, "anti-entropy to report 51 keys repaired", || {
        received = nodes
            .iter()
            .filter_map(|n| {
                let (_, text, _) = n.admin(&["aae", "--json"]);
                json_number(&text, "keys_received")
            })
            .sum::<u64>();
        received >= 51
    });
    assert!(received >= 51, "anti-entropy repaired {received} keys");

    // The delete sticks, and a read of every primary finds every new key.
    let all = Quorum {
        r: Some(R_ALL),
        ..Quorum::default()
    };
    let mut c = client(&nodes[2]);
    assert!(!retry(|| c.get_with(b"doomed", all)).found);
    for i in 0..50 {
        let got = retry(|| c.get_with(format!("n{i}").as_bytes(), all));
        assert_eq!(got.values, vec![bytes::Bytes::from_static(b"v2")]);
    }

    // Tombstones do not pile up: 20 more deletes are collected too.
    for i in 0..20 {
        let key = format!("k{i}");
        let seen = retry(|| c.get(key.as_bytes()));
        retry(|| c.delete(key.as_bytes(), &seen.context, Quorum::default()));
    }
    wait_until(30, "20 more tombstones collected", || {
        all_store(&nodes, 130)
    });
    let (_, text, _) = nodes[1].admin(&["aae"]);
    assert!(text.contains("tombstones purged"), "{text}");
}
