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
