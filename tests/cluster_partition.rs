//! A network partition made with nftables: node 4 of four is cut off from
//! the others' internode traffic (clients still reach every node). The
//! majority keeps writing with a sloppy quorum and hints (Dynamo §4.6); the
//! isolated coordinator cannot reach W and says so; after the partition
//! heals the hints drain and every primary agrees. Needs root and `nft`
//! (CI runs as root; `tools/test.sh` installs nftables).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{start_cluster, wait_converged, wait_until, TestNode};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, RoutingTable, R_ALL};
use dynakv::ring::{key_hash, partition_of};

/// An nftables table that drops internode traffic between one IP and the
/// rest; deleted on drop.
struct Partition {
    table: String,
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Partition {
    fn isolate(node: &TestNode) -> Partition {
        let table = format!("dynakv_test_{}", std::process::id());
        let ip = node.listen.ip();
        let low = node.internode().port();
        let high = low + 16;
        let script = format!(
            "table inet {table} {{
               chain out {{
                 type filter hook output priority 0; policy accept;
                 ip saddr {ip} ip daddr != {ip} tcp dport {low}-{high} drop
                 ip daddr {ip} ip saddr != {ip} tcp dport {low}-{high} drop
                 ip saddr {ip} ip daddr != {ip} tcp sport {low}-{high} drop
                 ip daddr {ip} ip saddr != {ip} tcp sport {low}-{high} drop
               }}
             }}\n"
        );
        nft(&script).expect("nft needs root: this test runs as root in CI");
        Partition { table }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
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

    let partition = Partition::isolate(isolated);
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
