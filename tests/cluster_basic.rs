//! A three-node cluster of real `dynakv server` processes on 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3: formation by seeds and by `admin join`, quorum
//! reads and writes (N=3, R=2, W=2) through the CLI and the client library,
//! siblings and contexts across coordinators (Dynamo §4.4, §4.5), and the
//! admin surface.

mod common;

use std::time::Duration;

use common::{json_field, json_values, start_cluster, wait_converged, TestNode, FAST_CLUSTER_ARGS};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

#[test]
fn three_nodes_by_seeds_serve_quorum_reads_and_writes_with_siblings() {
    let nodes = start_cluster(3, 2, &[]);

    // The ring names all three nodes, each partition with three primaries.
    let (code, out, err) = nodes[1].admin(&["ring", "--json"]);
    assert_eq!(code, 0, "{err}");
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert!(out.contains(ip), "ring lacks {ip}: {out}");
    }
    assert!(out.contains("\"n_val\": 3"), "{out}");

    // A put through node 1, a get through node 3: the client library routes
    // by the routing table it learns from WrongOwner.
    let (code, out, err) = nodes[0].cli(&["put", "cart", "apple", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(json_field(&out, "context").is_some());
    let (code, out, err) = nodes[2].cli(&["get", "cart", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_values(&out), vec!["apple"]);

    // A blind put from another node makes a sibling; a put with the get's
    // context supersedes exactly what the get saw.
    assert_eq!(nodes[1].cli(&["put", "cart", "pear"]).0, 0);
    let (_, out, _) = nodes[2].cli(&["get", "cart", "--json", "--r", "all"]);
    assert_eq!(json_values(&out), vec!["apple", "pear"]);
    let context = json_field(&out, "context").expect("context");
    let (code, _, err) = nodes[0].cli(&["put", "cart", "apple+pear", "--context", &context]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = nodes[1].cli(&["get", "cart", "--json", "--r", "all"]);
    assert_eq!(json_values(&out), vec!["apple+pear"]);

    // Delete with context: not found anywhere.
    let context = json_field(&out, "context").unwrap();
    assert_eq!(nodes[2].cli(&["del", "cart", "--context", &context]).0, 0);
    let (_, out, _) = nodes[0].cli(&["get", "cart", "--json", "--r", "all"]);
    assert!(out.contains("\"found\": false"), "{out}");

    // The client library: many keys, every one readable with R = all from
    // another entry node, so every primary holds it.
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let mut writer = Client::connect(nodes[0].listen, options.clone()).expect("connect");
    for i in 0..50 {
        let key = format!("key-{i}");
        writer
            .put(
                key.as_bytes(),
                format!("v{i}").as_bytes(),
                None,
                Quorum::default(),
            )
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    let table = writer.routing_table().expect("routing table");
    assert_eq!(table.nodes.len(), 3);
    assert_eq!(table.n_val, 3);
    assert!(table.partitions.iter().all(|p| p.len() == 3));
    let mut reader = Client::connect(nodes[2].listen, options).expect("connect");
    let all = Quorum {
        r: Some(R_ALL),
        ..Quorum::default()
    };
    for i in 0..50 {
        let key = format!("key-{i}");
        let got = reader.get_with(key.as_bytes(), all).expect("get");
        assert_eq!(
            got.values,
            vec![bytes::Bytes::from(format!("v{i}"))],
            "{key}"
        );
    }

    // A quorum larger than N is refused clearly.
    let (code, _, err) = nodes[0].cli(&["put", "k", "v", "--w", "4"]);
    assert_ne!(code, 0);
    assert!(err.contains("N=3"), "{err}");

    // Status: three members, all reachable, no hints.
    for node in &nodes {
        let status = node.status().expect("status");
        assert_eq!((status.members, status.reachable), (3, 3), "{status:?}");
    }
    let (code, out, _) = nodes[0].admin(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("ring epoch"), "{out}");
}

#[test]
fn nodes_started_apart_form_one_cluster_by_admin_join() {
    // Three one-node clusters (no seeds)...
    let mut nodes = Vec::new();
    let base = start_cluster(1, 1, &[]);
    let port = base[0].listen.port();
    nodes.extend(base);
    for i in 2..=3 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut node =
            TestNode::start_at(&format!("127.0.0.{i}:{port}"), &dir, 1, FAST_CLUSTER_ARGS);
        node.keep_dir(tmp);
        nodes.push(node);
    }
    // ...each alone until joined.
    assert_eq!(nodes[2].status().expect("status").members, 1);
    for node in &nodes[1..] {
        let member = nodes[0].internode().to_string();
        let (code, out, err) = node.admin(&["join", "--cluster", &member]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("gossip"), "{out}");
    }
    wait_converged(&nodes, 3);
    assert_eq!(nodes[1].cli(&["put", "joined", "yes", "--w", "3"]).0, 0);
    let (_, out, _) = nodes[2].cli(&["get", "joined", "--json", "--r", "all"]);
    assert_eq!(json_values(&out), vec!["yes"]);
}

#[test]
fn leave_drops_a_node_from_the_ring_and_garbage_on_internode_ports_is_harmless() {
    let nodes = start_cluster(4, 1, &[]);

    // Garbage, a truncated frame, and an oversized length prefix on the
    // internode port: the connection is dropped, the node keeps serving.
    use std::io::Write;
    for bytes in [
        &b"hello, this is not a frame"[..],
        &[5, 0, 0, 0, 1, 2][..],
        &[0xff, 0xff, 0xff, 0xff, 1][..],
        &[13, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
    ] {
        let mut s = std::net::TcpStream::connect(nodes[0].internode()).expect("connect");
        let _ = s.write_all(bytes);
    }
    assert_eq!(nodes[0].status().expect("still serving").members, 4);

    let (code, out, err) = nodes[3].admin(&["leave"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("leaving"), "{out}");
    common::wait_until(10, "the leave to spread", || {
        nodes.iter().all(|n| {
            let (_, ring, _) = n.admin(&["ring", "--json"]);
            !ring.contains("127.0.0.4") && ring.contains("\"n_val\": 3")
        })
    });
    // The remaining three nodes hold every key (N = 3).
    assert_eq!(nodes[0].cli(&["put", "after-leave", "x", "--w", "3"]).0, 0);
    let (_, out, _) = nodes[2].cli(&["get", "after-leave", "--json", "--r", "all"]);
    assert_eq!(json_values(&out), vec!["x"]);
}

/// One request on a raw connection (a thin client that knows no ring).
fn thin_request(
    node: &TestNode,
    id: u64,
    request: dynakv::protocol::Request,
) -> dynakv::protocol::Response {
    use dynakv::protocol::{decode_response, encode_request, FrameDecoder, Limits, RequestFrame};
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(node.listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut out = Vec::new();
    encode_request(
        &RequestFrame {
            id,
            epoch: 0,
            request,
        },
        &mut out,
    );
    stream.write_all(&out).expect("write");
    let mut decoder = FrameDecoder::new(8 << 20);
    let mut buffer = bytes::BytesMut::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(frame) = decoder.decode(&mut buffer).expect("frame") {
            let (reply_id, response) = decode_response(frame, &Limits::default()).expect("reply");
            assert_eq!(reply_id, id);
            return response;
        }
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn the_node_port_forwards_thin_clients_to_a_primary_node() {
    use dynakv::protocol::{Request, Response};
    // N = 1: most keys live on another node than the one the client uses.
    let nodes = start_cluster(3, 1, &["--n-val", "1", "--r", "1", "--w", "1"]);
    for i in 0..30u64 {
        let key = bytes::Bytes::from(format!("thin-{i}"));
        let put = Request::Put {
            key: key.clone(),
            value: key.clone(),
            context: None,
            quorum: Quorum::default(),
        };
        match thin_request(&nodes[0], i, put) {
            Response::Put { .. } => {}
            other => panic!("put {i} through node 1: {other:?}"),
        }
        let get = Request::Get {
            key: key.clone(),
            quorum: Quorum::default(),
        };
        match thin_request(&nodes[1], 1000 + i, get) {
            Response::Get { siblings, .. } => {
                assert_eq!(siblings.len(), 1, "{i}");
                assert_eq!(siblings[0].value, key);
            }
            other => panic!("get {i} through node 2: {other:?}"),
        }
    }
}
