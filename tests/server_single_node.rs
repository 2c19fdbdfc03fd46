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

#[test]
fn a_node_restarts_on_its_ports_right_after_a_clean_stop() {
    // The kernel tears a dead process's io_uring down asynchronously, so its
    // listeners answer for a moment after it exited; start-up must not take
    // that for another server (systemd restarts, rolling restarts).
    let mut node = TestNode::start(1, &[]);
    for _ in 0..3 {
        assert!(node.terminate().success());
        node.start_again_once()
            .expect("restart at once on the same ports");
        assert_eq!(node.cli(&["ping"]).0, 0);
    }
}

#[test]
fn a_wiped_shard_directory_never_reuses_an_incarnation() {
    // The incarnation is part of the shard's actor id: a shard that lost its
    // directory (a replaced disk) but keeps the node id must not start again
    // at an incarnation it used before, or its new dots would collide with
    // old ones held by other replicas.
    let mut node = TestNode::start(1, &[]);
    let read = |node: &TestNode| -> u32 {
        let path = node.data_dir.join("shard-0/incarnation");
        std::fs::read_to_string(&path)
            .expect("incarnation file")
            .trim()
            .parse()
            .expect("a number")
    };
    let first = read(&node);
    assert_eq!(node.cli(&["put", "k", "v"]).0, 0);
    assert!(node.terminate().success());
    node.restart();
    assert_eq!(read(&node), first, "a clean stop keeps the incarnation");
    assert!(node.terminate().success());
    std::fs::remove_dir_all(node.data_dir.join("shard-0")).expect("wipe the shard");
    node.restart();
    assert!(
        read(&node) > first,
        "a wiped shard directory must not reuse incarnation {first}"
    );
    // The node serves on the wiped shard.
    assert_eq!(node.cli(&["put", "k2", "v"]).0, 0);
}

#[test]
fn blocking_and_glommio_clients_route_zero_hop_and_see_each_others_writes() {
    use bytes::Bytes;
    use dynakv::client::glommio::AsyncClient;
    use dynakv::client::{Client, ClientOptions};
    use dynakv::protocol::Quorum;

    let node = TestNode::start(2, &[]);
    // The routing table names every shard port, so the client goes straight to the owner.
    let mut blocking = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    let table = blocking.routing_table().expect("routing table");
    assert_eq!(table.nodes.len(), 1);
    assert_eq!(
        table.nodes[0].shard_ports,
        vec![node.shard_port(0), node.shard_port(1)]
    );
    assert_eq!(table.partitions.len(), 256);
    let shards_used: std::collections::BTreeSet<u16> =
        table.partitions.iter().map(|p| p[0].1).collect();
    assert_eq!(
        shards_used.len(),
        2,
        "partitions are spread over both shards"
    );

    let seed = node.listen;
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 * 1024)
        .spawn(move || async move {
            let client = AsyncClient::connect(seed, ClientOptions::default())
                .await
                .expect("connect");
            let tasks: Vec<_> = (0..64u32)
                .map(|i| {
                    let client = client.clone();
                    glommio::spawn_local(async move {
                        let key = format!("async-{i}");
                        client
                            .put(
                                key.as_bytes(),
                                format!("a{i}").as_bytes(),
                                None,
                                Quorum::DEFAULT,
                            )
                            .await
                            .expect("put");
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
        })
        .expect("executor");
    handle.join().expect("join");

    // The blocking client reads what the glommio client wrote, then adds a concurrent sibling.
    for i in 0..64u32 {
        let key = format!("async-{i}");
        let got = blocking.get(key.as_bytes()).expect("get");
        assert_eq!(got.values, vec![Bytes::from(format!("a{i}"))], "{key}");
    }
    blocking
        .put(b"async-0", b"b0", None, Quorum::DEFAULT)
        .expect("blind put");
    let got = blocking.get(b"async-0").expect("get");
    let mut values: Vec<Bytes> = got.values.clone();
    values.sort();
    assert_eq!(
        values,
        vec![Bytes::from_static(b"a0"), Bytes::from_static(b"b0")]
    );
}

/// The shard appends a buffered put in place and makes it a task only when
/// it waits; with a 4 KiB write buffer most puts find it full and wait for a
/// flush, so both paths run. Every key reads back as its last write (one
/// sibling: each put carried the previous put's context), served from
/// memory, and again after a restart, when every read goes to disk through
/// the replica machine.
#[test]
fn buffered_puts_that_wait_for_flushes_read_back_before_and_after_a_restart() {
    use bytes::Bytes;
    use dynakv::client::{Client, ClientOptions};
    use dynakv::protocol::Quorum;

    const KEYS: usize = 300;
    let value = |key: usize, round: usize| format!("{key}-{round}-{}", "v".repeat(300));
    let check = |node: &TestNode| {
        let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
        for key in 0..KEYS {
            let got = client.get(format!("k{key}").as_bytes()).expect("get");
            assert_eq!(got.values, vec![Bytes::from(value(key, 1))], "k{key}");
        }
    };
    let mut node = TestNode::start(2, &["--write-buffer-bytes", "4096"]);
    {
        let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
        let mut contexts: Vec<Option<Bytes>> = vec![None; KEYS];
        for round in 0..2 {
            for (key, context) in contexts.iter_mut().enumerate() {
                let written = client
                    .put(
                        format!("k{key}").as_bytes(),
                        value(key, round).as_bytes(),
                        context.as_deref(),
                        Quorum::DEFAULT,
                    )
                    .expect("put");
                *context = Some(written);
            }
        }
    }
    check(&node);
    assert!(node.terminate().success());
    node.start_again_once().expect("restart");
    check(&node);
}

/// The flush loop sleeps without a timer while the write buffer is clean and
/// wakes on the next append: a buffered put (no `--dw`) must still reach the
/// segment file within a few flush intervals (1 ms by default), also after
/// the node sat idle, so it survives `kill -9` (the page cache keeps what
/// was written; only an fsync would be needed against power loss).
#[test]
fn buffered_puts_reach_the_file_after_idle_periods_and_survive_kill_9() {
    let mut node = TestNode::start(1, &[]);
    assert_eq!(node.cli(&["put", "early", "one"]).0, 0);
    // Longer than the flush loop's idle wait (100 ms): it is asleep on the
    // store, not on a timer, when the next put arrives.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(node.cli(&["put", "late", "two"]).0, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    node.kill9();
    node.restart();
    for (key, value) in [("early", "one"), ("late", "two")] {
        let (code, out, err) = node.cli(&["get", key, "--json"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json_values(&out), vec![value], "{key} after kill -9: {out}");
    }
}

/// `--flushes-in-flight-max` reaches the shards' stores: with one write in
/// flight and a 4 KiB write buffer every full buffer waits for the previous
/// flush, with sixteen many are in flight; either way every key reads back
/// its last value, before and after a restart (reads from disk). A value out
/// of range stops the server with a clear message.
#[test]
fn flushes_in_flight_max_option_starts_a_node_that_writes_and_reads_back() {
    use bytes::Bytes;
    use dynakv::client::{Client, ClientOptions};
    use dynakv::protocol::Quorum;

    const KEYS: usize = 200;
    let value = |key: usize, bound: &str| format!("{key}-{bound}-{}", "w".repeat(500));
    for bound in ["1", "16"] {
        let mut node = TestNode::start(
            1,
            &[
                "--write-buffer-bytes",
                "4096",
                "--flushes-in-flight-max",
                bound,
            ],
        );
        let check = |node: &TestNode| {
            let mut client =
                Client::connect(node.listen, ClientOptions::default()).expect("connect");
            for key in 0..KEYS {
                let got = client.get(format!("k{key}").as_bytes()).expect("get");
                assert_eq!(got.values, vec![Bytes::from(value(key, bound))], "k{key}");
            }
        };
        {
            let mut client =
                Client::connect(node.listen, ClientOptions::default()).expect("connect");
            for key in 0..KEYS {
                client
                    .put(
                        format!("k{key}").as_bytes(),
                        value(key, bound).as_bytes(),
                        None,
                        Quorum::DEFAULT,
                    )
                    .expect("put");
            }
        }
        check(&node);
        assert!(node.terminate().success());
        node.start_again_once().expect("restart");
        check(&node);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--flushes-in-flight-max", "0"])
        .output()
        .expect("run dynakv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("flushes_in_flight_max must be in 1..=16, not 0"),
        "{stderr}"
    );
}

#[test]
fn shards_with_upstream_interrupting_rings_serve_buffered_and_durable_puts() {
    // `io_uring_coop_taskrun = false` sets the shards' main rings up as
    // upstream glommio does (vendor/README.md); every other test runs the
    // cooperative default. Both shards serve, durable puts are acknowledged
    // (their writes and fdatasyncs also go through the main ring), and a
    // restart reads everything back.
    use bytes::Bytes;
    use dynakv::client::{Client, ClientOptions};
    use dynakv::protocol::Quorum;

    const KEYS: usize = 200;
    let durable = Quorum {
        dw: Some(1),
        ..Quorum::DEFAULT
    };
    // With it, client connections wait with glommio's own poll
    // (`epoll_client_reads = false`), the path every connection took before
    // the epoll instance and the one a socket that cannot join it takes.
    let mut node = TestNode::start(
        2,
        &[
            "--io-uring-coop-taskrun",
            "false",
            "--epoll-client-reads",
            "false",
        ],
    );
    {
        let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
        for key in 0..KEYS {
            let quorum = if key % 2 == 0 {
                durable
            } else {
                Quorum::DEFAULT
            };
            client
                .put(format!("k{key}").as_bytes(), b"v", None, quorum)
                .expect("put");
        }
    }
    node.terminate();
    node.restart();
    let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    for key in 0..KEYS {
        let got = client.get(format!("k{key}").as_bytes()).expect("get");
        assert_eq!(got.values, vec![Bytes::from_static(b"v")], "k{key}");
    }
}

/// A shard prepares its next segment's file ahead of the rotation
/// (`Store::prepare_next_segment`, run by the shard's `segment_loop`): the
/// file appears soon after start, rotations use it while 1,000 keys fill
/// several 256 KiB segments, and a clean stop removes the prepared one, so the
/// last segment file left holds records (before, an empty preallocated file
/// would be left for the next start to read through). Every key reads back
/// after the clean restart and again after `kill -9`.
#[test]
fn a_shard_prepares_its_next_segment_and_a_clean_stop_removes_it() {
    use bytes::Bytes;
    use dynakv::client::{Client, ClientOptions};
    use dynakv::protocol::Quorum;

    const KEYS: usize = 1000;
    let value = |key: usize| format!("{key}|{}", "s".repeat(1000));
    let mut node = TestNode::start(
        1,
        &[
            "--segment-size-bytes",
            "262144",
            "--write-buffer-bytes",
            "16384",
            "--value-bytes-max",
            "1024",
        ],
    );
    let shard_dir = node.data_dir.join("shard-0");
    let segments = || -> Vec<std::path::PathBuf> {
        let mut names: Vec<_> = std::fs::read_dir(&shard_dir)
            .expect("shard directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        names.sort();
        names
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segments().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment prepared: {:?}",
            segments()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    {
        let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
        for key in 0..KEYS {
            client
                .put(
                    format!("k{key}").as_bytes(),
                    value(key).as_bytes(),
                    None,
                    Quorum::DEFAULT,
                )
                .expect("put");
        }
    }
    assert!(
        segments().len() >= 4,
        "1 MB fill several 256 KiB segments: {:?}",
        segments()
    );
    assert!(node.terminate().success());
    let last = segments().pop().expect("a segment");
    let head = std::fs::read(&last).expect("read the last segment");
    assert!(
        head.starts_with(b"DKVR"),
        "the last segment left by a clean stop holds records, not a prepared empty file: {last:?}"
    );
    let check = |node: &TestNode| {
        let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
        for key in 0..KEYS {
            let got = client.get(format!("k{key}").as_bytes()).expect("get");
            assert_eq!(got.values, vec![Bytes::from(value(key))], "k{key}");
        }
    };
    node.start_again_once().expect("restart");
    check(&node);
    node.restart(); // kill -9, then start on the same directory
    check(&node);
}

/// Gets on a client connection are answered from the frame in place when the
/// shard can answer alone (`ShardState::get_in_place`); the others take the usual
/// path with the same answers: R above N is refused with the usual error, R =
/// all and R = 1 read the value, a missing key reads as nothing, and with no
/// read cache a flushed key is read from disk through the deferred path.
#[test]
fn gets_answered_in_place_and_refused_ones_take_the_usual_path() {
    use bytes::Bytes;
    use dynakv::client::{Client, ClientError, ClientOptions};
    use dynakv::protocol::{ErrorCode, Quorum, R_ALL};

    let node = TestNode::start(
        1,
        &["--read-cache-bytes", "0", "--write-buffer-bytes", "4096"],
    );
    let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    let value = |i: usize| format!("value-{i}-{}", "x".repeat(200));
    for i in 0..100 {
        client
            .put(
                format!("k{i}").as_bytes(),
                value(i).as_bytes(),
                None,
                Quorum::DEFAULT,
            )
            .expect("put");
    }
    let quorum = |r: u8| Quorum {
        r: Some(r),
        ..Quorum::DEFAULT
    };
    for i in 0..100 {
        let key = format!("k{i}");
        for q in [Quorum::DEFAULT, quorum(1), quorum(R_ALL)] {
            let got = client.get_with(key.as_bytes(), q).expect("get");
            assert_eq!(got.values, vec![Bytes::from(value(i))], "{key} {q:?}");
        }
    }
    match client.get_with(b"k1", quorum(2)) {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(
                message.contains("exceeds the replication factor"),
                "{message}"
            );
        }
        other => panic!("R=2 on one replica: {other:?}"),
    }
    let missing = client.get(b"never-written").expect("get");
    assert!(missing.values.is_empty());
}

/// Puts and deletes on a client connection are written from the frame in
/// place when the shard writes them alone and at once
/// (`ShardState::put_from_frame`); the others take the usual path with the
/// same answers. A put without a context adds a sibling, one with a get's
/// context supersedes what the get saw, a delete with a context leaves
/// nothing, a damaged context is refused, W above N is refused with the
/// usual error, and durable puts (DW = 1, which wait for a sync) write as
/// buffered ones do; everything reads back after a restart.
#[test]
fn puts_written_in_place_and_refused_ones_take_the_usual_path() {
    use bytes::Bytes;
    use dynakv::client::{Client, ClientError, ClientOptions};
    use dynakv::protocol::{ErrorCode, Quorum};

    let quorum = |w: Option<u8>, dw: Option<u8>| Quorum {
        w,
        dw,
        ..Quorum::DEFAULT
    };
    let mut node = TestNode::start(1, &[]);
    let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    // Two puts without a context: two siblings.
    for value in [&b"cart-a"[..], b"cart-b"] {
        client
            .put(b"cart", value, None, Quorum::DEFAULT)
            .expect("put");
    }
    let got = client.get(b"cart").expect("get");
    let mut values = got.values.clone();
    values.sort();
    assert_eq!(values, vec![Bytes::from("cart-a"), Bytes::from("cart-b")]);
    // The merge, written with the get's context, supersedes both.
    let merged = client
        .put(b"cart", b"cart-a+b", Some(&got.context), Quorum::DEFAULT)
        .expect("merge");
    assert_eq!(
        client.get(b"cart").expect("get").values,
        vec![Bytes::from("cart-a+b")]
    );
    // The put's own reply context supersedes it too.
    client
        .put(b"cart", b"cart-c", Some(&merged), Quorum::DEFAULT)
        .expect("put with the put's context");
    let got = client.get(b"cart").expect("get");
    assert_eq!(got.values, vec![Bytes::from("cart-c")]);
    // A delete with that context leaves nothing.
    client
        .delete(b"cart", &got.context, Quorum::DEFAULT)
        .expect("delete");
    let gone = client.get(b"cart").expect("get");
    assert!(!gone.found && gone.values.is_empty(), "{gone:?}");
    // A damaged context is refused, and nothing is written.
    match client.put(b"cart", b"bad", Some(b"\xff\xff\xff"), Quorum::DEFAULT) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::BadContext),
        other => panic!("damaged context: {other:?}"),
    }
    assert!(client.get(b"cart").expect("get").values.is_empty());
    // W above N: the usual error.
    match client.put(b"k", b"v", None, quorum(Some(2), None)) {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(
                message.contains("exceeds the replication factor"),
                "{message}"
            );
        }
        other => panic!("W=2 on one replica: {other:?}"),
    }
    // Durable, default, and explicit W = N = 1 puts all write.
    let quorums = [
        quorum(Some(1), Some(1)),
        Quorum::DEFAULT,
        Quorum {
            n: Some(1),
            ..quorum(Some(1), None)
        },
    ];
    for i in 0..60 {
        let q = quorums[i % quorums.len()];
        let value = format!("value-{i}");
        client
            .put(format!("k{i}").as_bytes(), value.as_bytes(), None, q)
            .unwrap_or_else(|e| panic!("k{i} {q:?}: {e:?}"));
    }
    let check = |client: &mut Client| {
        for i in 0..60 {
            let got = client.get(format!("k{i}").as_bytes()).expect("get");
            assert_eq!(got.values, vec![Bytes::from(format!("value-{i}"))], "k{i}");
        }
        assert!(client.get(b"cart").expect("get").values.is_empty());
    };
    check(&mut client);
    drop(client);
    assert!(node.terminate().success());
    node.start_again_once().expect("restart");
    let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    check(&mut client);
}
