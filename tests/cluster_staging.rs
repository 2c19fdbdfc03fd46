//! Staged membership changes like Riak (`admin plan`, `commit`, `clear`),
//! `admin where KEY`, and a drain (`admin leave --wait`), on real processes.

mod common;

use std::time::Duration;

use common::{epochs, json_number as number, start_cluster, wait_until};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::Quorum;

#[test]
fn plan_commit_clear_where_and_a_drain() {
    let nodes = start_cluster(4, 1, &[]);
    let options = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let mut c = Client::connect(nodes[0].listen, options.clone()).expect("connect");
    let keys: Vec<String> = (0..60).map(|i| format!("s{i}")).collect();
    for key in &keys {
        c.put(key.as_bytes(), key.as_bytes(), None, Quorum::default())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    // where: the key's partition and its N = 3 distinct primaries, the
    // same ones `admin ring` lists for that partition.
    let (code, out, err) = nodes[0].admin(&["where", "s7", "--json"]);
    assert_eq!(code, 0, "{err}");
    let partition = number(&out, "partition").expect("partition") as u32;
    assert_eq!(partition, dynakv::ring::key_partition(b"s7", 256));
    let ids: Vec<&str> = out
        .split("\"node\": \"")
        .skip(1)
        .map(|rest| &rest[..16])
        .collect();
    assert_eq!(ids.len(), 3, "{out}");
    let (_, ring, _) = nodes[1].admin(&["ring"]);
    let line = ring
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{partition} ")))
        .expect("partition line");
    for id in &ids {
        assert!(line.contains(id), "{line} vs {out}");
    }
    let (code, text, _) = nodes[0].admin(&["where", "s7"]);
    assert_eq!(code, 0);
    assert!(text.contains(&format!("partition {partition}")), "{text}");

    // status --all: every node's own status, pending handoff included.
    let (code, all, err) = nodes[0].admin(&["status", "--all", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(all.matches("\"handoff_pending\": ").count(), 4, "{all}");
    let (_, table, _) = nodes[0].admin(&["status", "--all"]);
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.contains("pending"), "{table}");

    // A staged weight change changes nothing until commit; clear drops it.
    let before = epochs(&nodes);
    let n4 = nodes[3].internode().to_string();
    let (code, out, err) = nodes[0].admin(&["weight", "--member", &n4, "--weight", "3", "--stage"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, plan, _) = nodes[0].admin(&["plan", "--json"]);
    assert!(plan.contains("weight"), "{plan}");
    let row = &plan[plan.find(&format!("@{n4}\"")).expect("n4 in plan")..];
    let (p0, p1) = (
        number(row, "partitions_before").unwrap(),
        number(row, "partitions_after").unwrap(),
    );
    assert!(p1 > p0, "{plan}");
    assert!(number(&plan, "moved").unwrap() >= p1 - p0, "{plan}");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(epochs(&nodes), before, "a staged change applied early");
    let (code, out, _) = nodes[0].admin(&["clear"]);
    assert_eq!(code, 0);
    assert!(out.contains("cleared 1"), "{out}");
    let (_, plan, _) = nodes[0].admin(&["plan"]);
    assert!(plan.contains("no staged changes"), "{plan}");
    assert!(plan.contains("0 of 256 partitions would move"), "{plan}");

    // Stage node 4's leave and a weight change, then commit both at once:
    // one ring change (epoch + 1) that every node adopts.
    let n1 = nodes[0].internode().to_string();
    assert_eq!(nodes[1].admin(&["leave", "--member", &n4, "--stage"]).0, 0);
    assert_eq!(
        nodes[1]
            .admin(&["weight", "--member", &n1, "--weight", "2", "--stage"])
            .0,
        0
    );
    let (_, plan, _) = nodes[1].admin(&["plan"]);
    assert!(plan.contains("staged changes (2)"), "{plan}");
    let (code, out, err) = nodes[1].admin(&["commit"]);
    assert_eq!(code, 0, "{out}{err}");
    let epoch = before[0].unwrap();
    wait_until(20, "every node to adopt the committed ring", || {
        epochs(&nodes).iter().all(|e| *e == Some(epoch + 1))
    });
    assert!(
        nodes[0].admin(&["commit"]).0 != 0,
        "nothing staged any more"
    );
    wait_until(30, "node 4 to hand off and leave every member list", || {
        nodes[..3]
            .iter()
            .all(|n| n.status().is_some_and(|s| s.members == 3))
    });

    // Drain node 3: leave --wait returns once it handed everything off.
    let (code, out, err) = nodes[2].admin(&["leave", "--wait", "--wait-s", "30"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("drained"), "{out}");
    assert!(nodes[2].status().is_some_and(|s| s.keys == 0));
    wait_until(20, "the two remaining nodes to list two members", || {
        nodes[..2]
            .iter()
            .all(|n| n.status().is_some_and(|s| s.members == 2))
    });
    let mut c = Client::connect(nodes[0].listen, options).expect("connect");
    wait_until(20, "every key to be readable on the two nodes left", || {
        keys.iter().all(|key| {
            c.get(key.as_bytes())
                .is_ok_and(|got| got.values == vec![bytes::Bytes::from(key.clone())])
        })
    });
}
