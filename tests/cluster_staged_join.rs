//! Staged joins (`admin join --stage`) and a staged plan that every node
//! sees and that survives restarts, on real processes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    epochs, json_number as number, start_cluster, wait_until, TestNode, FAST_CLUSTER_ARGS,
};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

/// The `admin plan --json` row of the node at internode address `addr`.
fn plan_row(plan: &str, addr: SocketAddr) -> Option<&str> {
    let at = plan.find(&format!("@{addr}\""))?;
    let rest = &plan[at..];
    Some(&rest[..rest.find('}').unwrap_or(rest.len())])
}

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    }
}

#[test]
fn a_staged_join_moves_nothing_until_commit_and_clear_drops_it() {
    let mut nodes = start_cluster(3, 1, &[]);
    let mut c = Client::connect(nodes[0].listen, options()).expect("connect");
    let keys: Vec<String> = (0..60).map(|i| format!("j{i}")).collect();
    for key in &keys {
        c.put(key.as_bytes(), key.as_bytes(), None, Quorum::default())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    let before = epochs(&nodes);
    let epoch = before[0].expect("epoch");

    // A fourth node on 127.0.0.4, alone: no seeds.
    let tmp = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.4:{}", nodes[0].listen.port());
    let mut new = TestNode::start_at(&listen, tmp.path(), 1, FAST_CLUSTER_ARGS);
    new.keep_dir(tmp);
    let member = nodes[0].internode().to_string();

    // A node with seeds (every cluster member here) refuses a staged join.
    let (code, _, err) = common::cli_at(
        nodes[1].internode(),
        &["admin", "join", "--cluster", &member, "--stage"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("seeds"), "{err}");

    let (code, out, err) = new.admin(&["join", "--cluster", &member, "--stage"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("staged (1 pending)"), "{out}");

    // Every member's plan shows the join (the plan is gossiped); before the
    // commit nothing moves and the new node stays alone.
    wait_until(10, "every member to show the staged join", || {
        nodes.iter().all(|n| {
            let (_, plan, _) = n.admin(&["plan", "--json"]);
            plan_row(&plan, new.internode()).is_some_and(|row| {
                row.contains("\"status_before\": \"new\"")
                    && number(row, "partitions_before") == Some(0)
                    && number(row, "partitions_after").is_some_and(|p| p > 0)
            })
        })
    });
    let (_, plan, _) = nodes[2].admin(&["plan"]);
    assert!(plan.contains("staged changes (1)"), "{plan}");
    assert!(plan.contains("  join "), "{plan}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(epochs(&nodes), before, "a staged join applied early");
    assert_eq!(new.status().map(|s| s.members), Some(1));
    assert!(nodes
        .iter()
        .all(|n| n.status().is_some_and(|s| s.members == 3)));

    // Clear on another member drops it everywhere; the new node stays out.
    let (code, out, _) = nodes[2].admin(&["clear"]);
    assert_eq!(code, 0);
    assert!(out.contains("cleared 1"), "{out}");
    wait_until(10, "every member to drop the staged join", || {
        nodes
            .iter()
            .all(|n| n.admin(&["plan"]).1.contains("no staged changes"))
    });
    assert_eq!(epochs(&nodes), before);
    assert_eq!(new.status().map(|s| s.members), Some(1));

    // Stage it again; the staging node restarts and still has it.
    let (code, out, err) = new.admin(&["join", "--cluster", &member, "--stage"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(10, "the plan to reach node 3", || {
        nodes[2].admin(&["plan"]).1.contains("staged changes (1)")
    });
    nodes[0].restart();
    common::wait_converged(&nodes, 3);
    let (_, plan, _) = nodes[0].admin(&["plan", "--json"]);
    assert!(plan_row(&plan, new.internode()).is_some(), "{plan}");

    // Commit on a node that did not stage it: one ring change, four members.
    let (code, out, err) = nodes[1].admin(&["commit"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut all = nodes.iter().collect::<Vec<_>>();
    all.push(&new);
    wait_until(20, "all four nodes to adopt the committed ring", || {
        all.iter().all(|n| {
            n.status()
                .is_some_and(|s| s.members == 4 && s.epoch == epoch + 1)
        })
    });
    let (_, plan, _) = new.admin(&["plan", "--json"]);
    let owned = plan_row(&plan, new.internode())
        .and_then(|row| number(row, "partitions_before"))
        .expect("new node in the plan");
    assert!(owned >= 256 / 4 - 16, "the new node owns its share: {plan}");
    wait_until(30, "handoff to fill the new node", || {
        new.status().is_some_and(|s| s.keys > 0)
    });
    let all_r = Quorum {
        r: Some(R_ALL),
        ..Quorum::default()
    };
    let mut reader = Client::connect(new.listen, options()).expect("connect");
    wait_until(30, "every key to be readable with R = all", || {
        keys.iter().all(|key| {
            reader
                .get_with(key.as_bytes(), all_r)
                .is_ok_and(|got| got.values == vec![bytes::Bytes::from(key.clone())])
        })
    });
}

#[test]
fn a_staged_plan_survives_a_restart_and_a_corrupt_file_stops_the_start() {
    let mut node = TestNode::start(1, &[]);
    let (code, out, err) = node.admin(&["weight", "--weight", "3", "--stage"]);
    assert_eq!(code, 0, "{out}{err}");
    node.restart();
    let (_, plan, _) = node.admin(&["plan"]);
    assert!(plan.contains("staged changes (1)"), "{plan}");
    assert!(plan.contains("-> 3"), "{plan}");

    node.terminate();
    let path = node.data_dir.join("staged-changes");
    let mut bytes = std::fs::read(&path).expect("staged-changes file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("write");
    let error = node
        .start_again_once()
        .expect_err("a corrupt plan must stop the start");
    assert!(error.contains("staged-changes is corrupt"), "{error}");

    std::fs::remove_file(&path).expect("remove");
    node.start_again_once().expect("starts without the plan");
    let (code, out, err) = node.admin(&["commit"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("nothing is staged"), "{err}");
}
