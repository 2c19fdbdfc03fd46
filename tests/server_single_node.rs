//! One real `dynakv server` process on loopback, driven through the CLI and
//! the client library: round trips, siblings and contexts (Dynamo §4.4),
//! deletes, restarts, and bad input.

mod common;

use common::{json_field, json_values, TestNode};

#[test]
fn cli_round_trip_siblings_contexts_and_delete() {
    let node = TestNode::start(2, &[]);
    let (code, out, err) = node.cli(&["ping"]);
    assert_eq!(code, 0, "ping failed: {err}");
    assert!(out.starts_with("pong"), "{out}");

    // Missing key: found false, still a context.
    let (code, out, _) = node.cli(&["get", "cart", "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"found\": false"), "{out}");
    assert_eq!(out.lines().count(), 1, "--json prints exactly one line");

    // Two puts without context create two siblings.
    let (code, out, err) = node.cli(&["put", "cart", "apple", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(json_field(&out, "context").is_some(), "{out}");
    assert_eq!(node.cli(&["put", "cart", "pear"]).0, 0);
    let (_, out, _) = node.cli(&["get", "cart", "--json"]);
    assert!(out.contains("\"found\": true"), "{out}");
    assert_eq!(json_values(&out), vec!["apple", "pear"]);
    let context = json_field(&out, "context").expect("context");

    // A concurrent writer adds a third sibling the get did not see...
    assert_eq!(node.cli(&["put", "cart", "plum"]).0, 0);
    // ...so a put with the get's context replaces exactly the two it saw.
    let (code, _, err) = node.cli(&["put", "cart", "apple+pear", "--context", &context]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = node.cli(&["get", "cart", "--json"]);
    assert_eq!(json_values(&out), vec!["apple+pear", "plum"]);

    // Merge and write back: one value remains.
    let context = json_field(&out, "context").unwrap();
    assert_eq!(
        node.cli(&[
            "put",
            "cart",
            "apple+pear+plum",
            "--context",
            &context,
            "--dw",
            "1"
        ])
        .0,
        0
    );
    let (_, out, _) = node.cli(&["get", "cart", "--json"]);
    assert_eq!(json_values(&out), vec!["apple+pear+plum"]);

    // Delete with context leaves a tombstone that reads as not found.
    let context = json_field(&out, "context").unwrap();
    let (code, _, err) = node.cli(&["del", "cart", "--context", &context]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = node.cli(&["get", "cart", "--json"]);
    assert!(out.contains("\"found\": false"), "{out}");
    assert_eq!(json_values(&out), Vec::<String>::new());

    // A put after the delete, with the tombstone's context, brings the key back with one value.
    let context = json_field(&out, "context").unwrap();
    assert_eq!(
        node.cli(&["put", "cart", "fig", "--context", &context]).0,
        0
    );
    let (_, out, _) = node.cli(&["get", "cart", "--json"]);
    assert_eq!(json_values(&out), vec!["fig"]);
}

#[test]
fn cli_errors_are_one_clear_line_and_nonzero() {
    let node = TestNode::start(1, &[]);
    let (code, _, err) = node.cli(&["put", "k", "v", "--context", "!!!not-a-token!!!"]);
    assert_ne!(code, 0);
    assert!(err.contains("bad context"), "{err}");

    // Valid base64, but not a context the server ever issued.
    let (code, _, err) = node.cli(&["put", "k", "v", "--context", "AAAAAAAAAAAAAAAA"]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("context"), "{err}");

    let big = "x".repeat(2000);
    let (code, _, err) = node.cli(&["put", &big, "v"]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("key"), "{err}");

    let (code, _, err) = common::cli_at("127.0.0.1:1".parse().unwrap(), &["ping"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("127.0.0.1:1"),
        "names the unreachable node: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let (code, _, err) = node.cli(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command"), "{err}");
}

#[test]
fn durable_writes_survive_kill_9_and_buffered_writes_survive_sigterm() {
    let mut node = TestNode::start(2, &[]);
    for i in 0..50 {
        let (code, _, err) = node.cli(&[
            "put",
            &format!("durable-{i}"),
            &format!("v{i}"),
            "--dw",
            "1",
        ]);
        assert_eq!(code, 0, "{err}");
    }
    node.restart(); // kill -9, then start on the same directory
    for i in 0..50 {
        let (_, out, _) = node.cli(&["get", &format!("durable-{i}"), "--json"]);
        assert_eq!(
            json_values(&out),
            vec![format!("v{i}")],
            "acknowledged durable write lost: {out}"
        );
    }

    for i in 0..50 {
        assert_eq!(node.cli(&["put", &format!("buffered-{i}"), "b"]).0, 0);
    }
    let status = node.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    node.restart();
    for i in 0..50 {
        let (_, out, _) = node.cli(&["get", &format!("buffered-{i}"), "--json"]);
        assert_eq!(
            json_values(&out),
            vec!["b"],
            "SIGTERM must flush the write buffer: {out}"
        );
    }
}
