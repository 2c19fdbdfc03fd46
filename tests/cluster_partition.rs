//! A network partition made with nftables: node 4 of four is cut off from
//! the others' internode traffic (clients still reach every node). The
//! majority keeps writing with a sloppy quorum and hints (Dynamo §4.6); the
//! isolated coordinator cannot reach W and says so; after the partition
//! heals the hints drain and every primary agrees. Needs root and `nft`
//! (CI runs as root; `tools/test.sh` installs nftables).

mod common;
// Shared with the chaos tool, which also probes whether nft can run here.
#[path = "../tools/chaos/nft.rs"]
#[allow(dead_code)]
mod nft;

use std::time::Duration;

use bytes::Bytes;
use common::{start_cluster, wait_converged, wait_until, TestNode};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, RoutingTable, R_ALL};
use dynakv::ring::{key_hash, partition_of};
use nft::InternodeFilter;

/// Node `isolated`'s internode traffic to and from every other node
/// dropped (the chaos tool's filter, `tools/chaos/nft.rs`); removed on drop.
struct Partition {
    filter: InternodeFilter,
}

impl Partition {
    fn isolate(nodes: &[TestNode], isolated: usize) -> Partition {
        let filter = InternodeFilter::new(format!("dynakv_test_{}", std::process::id()));
        let ip = nodes[isolated].listen.ip();
        let low = nodes[isolated].internode().port();
        let mut pairs = Vec::new();
        for (i, other) in nodes.iter().enumerate().filter(|&(i, _)| i != isolated) {
            assert_ne!(
                other.listen.ip(),
                ip,
                "node {i} shares the isolated address"
            );
            pairs.push((ip, other.listen.ip()));
            pairs.push((other.listen.ip(), ip));
        }
        filter
            .drop_pairs(&pairs, low..=low + 16)
            .expect("nft needs root: this test runs as root in CI");
        Partition { filter }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.filter.clear();
    }
}

fn first_primary_is(table: &RoutingTable, key: &[u8], node: &TestNode) -> bool {
    let partition = partition_of(key_hash(key), table.q);
    let (index, _) = table.partitions[partition as usize][0];
    table.nodes[index as usize].addr == node.listen.ip()
}

#[test]
fn the_majority_side_keeps_writing_and_the_cluster_heals() {
    let nodes = start_cluster(4, 1, &[]);
    let options = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let mut c = Client::connect(nodes[0].listen, options.clone()).expect("connect");
    let table = c.routing_table().expect("table");
    let isolated = &nodes[3];

    let partition = Partition::isolate(&nodes, 3);
    wait_until(10, "the isolated node to be suspected", || {
        // (The isolated node's admin port is cut off too.)
        nodes[0].status().is_some_and(|s| s.reachable == 3)
    });

    // Keys coordinated on the majority side: every write succeeds.
    let keys: Vec<String> = (0..300)
        .map(|i| format!("p{i}"))
        .filter(|k| !first_primary_is(&table, k.as_bytes(), isolated))
        .take(30)
        .collect();
    for key in &keys {
        c.put(key.as_bytes(), b"majority", None, Quorum::default())
            .unwrap_or_else(|e| panic!("put {key} on the majority side: {e}"));
    }
    // A key coordinated by the isolated node: W = 2 is out of its reach.
    let minority_key = (0..300)
        .map(|i| format!("m{i}"))
        .find(|k| first_primary_is(&table, k.as_bytes(), isolated))
        .expect("a key of the isolated node");
    let err = c
        .put(
            minority_key.as_bytes(),
            b"minority",
            None,
            Quorum::default(),
        )
        .expect_err("the isolated coordinator cannot reach W=2");
    assert!(err.to_string().contains("of W=2"), "{err}");
    wait_until(10, "hints for the isolated node", || {
        nodes[..3]
            .iter()
            .map(|n| n.status().map_or(0, |s| s.hints))
            .sum::<u64>()
            > 0
    });

    drop(partition);
    wait_converged(&nodes, 4);
    wait_until(30, "hint replay after the partition heals", || {
        nodes
            .iter()
            .map(|n| n.status().map_or(1, |s| s.hints))
            .sum::<u64>()
            == 0
    });
    let all = Quorum {
        r: Some(R_ALL),
        ..Quorum::default()
    };
    let mut c = Client::connect(nodes[3].listen, options).expect("connect");
    for key in &keys {
        let got = c.get_with(key.as_bytes(), all).expect("R=all get");
        assert_eq!(got.values, vec![Bytes::from_static(b"majority")], "{key}");
    }
}
