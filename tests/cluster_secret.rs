//! The cluster secret (docs/deployment.md): nodes configured with the same
//! `--cluster-secret-file` form a cluster, gossip, replicate and answer
//! admin commands; a stranger without the secret cannot join or gossip,
//! its raw frames (replica, admin, anything) are never read, and `dynakv
//! admin` without the secret, or with a wrong one, is refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{start_cluster, TestNode, BIN, FAST_CLUSTER_ARGS};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

/// Runs `dynakv admin status --json` against `node` with `secret_file`
/// ("" for none); returns (exit code, stdout + stderr).
fn admin_status(node: std::net::SocketAddr, secret_file: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["admin", "status", "--json", "--node", &node.to_string()])
        .args(["--timeout-ms", "3000"])
        .env("DYNAKV_CLUSTER_SECRET_FILE", secret_file)
        .output()
        .expect("run dynakv");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn only_holders_of_the_secret_join_gossip_replicate_and_administer() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "incorrect horse battery staple\n").unwrap();
    let secret_path = secret.to_str().unwrap().to_string();
    // The harness's own admin calls (wait_converged, status) use it.
    std::env::set_var("DYNAKV_CLUSTER_SECRET_FILE", &secret_path);

    // Members with the secret: formation by seeds, gossip and convergence.
    let nodes = start_cluster(2, 1, &["--cluster-secret-file", &secret_path]);
    // Replication across the authenticated links: R = all reads both nodes.
    let mut client = Client::connect(nodes[0].listen, ClientOptions::default()).expect("connect");
    client
        .put(b"guarded", b"v", None, Quorum::DEFAULT)
        .expect("put");
    let all = Quorum {
        r: Some(R_ALL),
        ..Quorum::DEFAULT
    };
    assert_eq!(
        client.get_with(b"guarded", all).expect("get").values,
        vec!["v"]
    );

    // Admin: with the secret it works; without it or with a wrong one, no.
    let (code, out) = admin_status(nodes[1].internode(), &secret_path);
    assert_eq!(code, 0, "{out}");
    let (code, out) = admin_status(nodes[1].internode(), "");
    assert_ne!(code, 0, "admin without the secret must fail: {out}");
    assert!(!out.contains("\"epoch\""), "{out}");
    let (code, out) = admin_status(nodes[1].internode(), wrong.to_str().unwrap());
    assert_ne!(code, 0, "admin with a wrong secret must fail: {out}");
    assert!(out.contains("handshake"), "{out}");

    // Raw frames from a stranger are never read: the node opens with its
    // challenge and closes on a bad answer. (The envelope below is an admin
    // status request; a replica or gossip frame meets the same gate.)
    let mut raw = TcpStream::connect(nodes[0].internode()).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = vec![0u8; 4];
    frame.push(3); // KIND_ADMIN_REQUEST
    frame.extend_from_slice(&[0u8; 12]);
    frame.extend_from_slice(&[2, 0]); // ADMIN_STATUS, not JSON
    let length = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&length.to_le_bytes());
    frame.extend_from_slice(&[0u8; 64]); // pads the "answer" to the challenge
    raw.write_all(&frame).expect("write");
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(answer.starts_with(b"DKVAUTH1"), "{answer:?}");
    assert_eq!(answer.len(), 40, "only the challenge, no admin answer");

    // A stranger node without the secret, seeded with a member, cannot join
    // or learn the cluster by gossip.
    let stranger_dir = tempfile::tempdir().unwrap();
    let mut args: Vec<&str> = FAST_CLUSTER_ARGS.to_vec();
    let seed = nodes[0].internode().to_string();
    args.extend(["--seeds", &seed]);
    let stranger_listen = format!("127.0.0.3:{}", nodes[0].listen.port());
    let stranger = TestNode::start_at(&stranger_listen, stranger_dir.path(), 1, &args);
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        for node in &nodes {
            let status = node.status().expect("member status");
            assert_eq!(status.members, 2, "a stranger joined: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out) = admin_status(stranger.internode(), "");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.matches("\"id\": ").count(),
        1,
        "the stranger learned members: {out}"
    );
    // A put the stranger coordinates stays on the stranger: nothing it sends
    // reaches the members, whose data is unchanged.
    let mut evil = Client::connect(stranger.listen, ClientOptions::default()).expect("connect");
    evil.put(b"guarded", b"evil", None, Quorum::DEFAULT)
        .expect("the stranger's own put");
    assert_eq!(
        client.get_with(b"guarded", all).expect("get").values,
        vec!["v"]
    );
}
