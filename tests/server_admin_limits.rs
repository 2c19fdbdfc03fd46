//! Bounded internode and admin listeners without a cluster secret: stranger
//! connections past the limits are refused, idle and trickling ones are cut,
//! and the cluster keeps gossiping and replicating meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{start_cluster, TestNode};
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    }
}

/// A TCP connection from `source` (another loopback IP than any node's).
fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// Whether the server closed `stream` within `within` (EOF or reset; an
/// admin error frame before the end is allowed).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_internode_connections_are_cut_without_a_secret_and_the_cluster_keeps_working() {
    let nodes = start_cluster(
        2,
        2,
        &[
            "--internode-idle-timeout-ms",
            "1500",
            "--internode-connections-per-address-max",
            "100",
        ],
    );
    let target = nodes[1].internode();
    // 150 idle connections from one stranger address: 100 are admitted,
    // the rest are closed at once.
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(connect_from("127.0.0.9", target).expect("connect"));
    }
    let opened = Instant::now();
    let mut refused = 0;
    for stream in held.iter_mut().skip(100) {
        if closed_within(stream, Duration::from_millis(500)) {
            refused += 1;
        }
    }
    assert_eq!(refused, 50, "connections past the per-address limit");
    if opened.elapsed() < Duration::from_millis(900) {
        // (Only checked while well inside the timeout on a slow machine.)
        assert!(
            !closed_within(&mut held[0], Duration::from_millis(300)),
            "an admitted connection is not closed before the idle timeout"
        );
    }

    // Meanwhile every write reaches both replicas (W = all) and gossip
    // keeps both nodes listed reachable.
    let all = Quorum {
        r: Some(R_ALL),
        w: Some(2),
        ..Quorum::default()
    };
    let mut c = Client::connect(nodes[0].listen, options()).expect("connect");
    for i in 0..30 {
        let key = format!("idle{i}");
        c.put(key.as_bytes(), b"v", None, all)
            .unwrap_or_else(|e| panic!("put {key} while strangers hold connections: {e}"));
    }
    assert!(nodes[1].status().is_some_and(|s| s.reachable == 2));

    // The admitted ones are cut after the idle timeout, not before.
    let mut cut = 0;
    for stream in held.iter_mut().take(100) {
        if closed_within(stream, Duration::from_secs(5)) {
            cut += 1;
        }
    }
    assert_eq!(cut, 100, "idle connections are closed");

    // Links idle for longer than the timeout (shard 1 carries no gossip)
    // reconnect: writes still reach both replicas, reads see them.
    std::thread::sleep(Duration::from_millis(2000));
    for i in 0..30 {
        let key = format!("later{i}");
        c.put(key.as_bytes(), b"w", None, all)
            .unwrap_or_else(|e| panic!("put {key} after idle links were closed: {e}"));
    }
    let mut reader = Client::connect(nodes[1].listen, options()).expect("connect");
    for i in 0..30 {
        let got = reader
            .get_with(format!("idle{i}").as_bytes(), all)
            .expect("get");
        assert_eq!(got.values, vec![bytes::Bytes::from_static(b"v")]);
    }
    assert!(nodes.iter().all(|n| n
        .status()
        .is_some_and(|s| s.reachable == 2 && s.members == 2)));
}

#[test]
fn the_admin_http_port_bounds_connections_per_address_and_cuts_tricklers() {
    let mut started = None;
    for _ in 0..10 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let http: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let text = http.to_string();
        if let Ok(node) =
            std::panic::catch_unwind(|| TestNode::start(1, &["--http-listen", text.as_str()]))
        {
            started = Some((node, http));
            break;
        }
    }
    let (_node, http) = started.expect("a node with an admin http port");
    // 16 idle connections from one address take its share of the slots.
    let mut held: Vec<TcpStream> = (0..16)
        .map(|_| connect_from("127.0.0.7", http).expect("connect"))
        .collect();
    let mut extra = connect_from("127.0.0.7", http).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("too many connections"), "{answer:?}");

    // Another address is still served.
    let mut other = connect_from("127.0.0.8", http).expect("connect");
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = other.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // A client trickling its request head a byte a second is cut by the
    // whole-head deadline (5 s), not served forever.
    let mut trickler = connect_from("127.0.0.9", http).expect("connect");
    let begun = Instant::now();
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = None;
    for byte in request.iter().take(request.len() - 2) {
        let _ = trickler.write_all(&[*byte]);
        if closed_within(&mut trickler, Duration::from_millis(1000)) {
            cut = Some(begun.elapsed());
            break;
        }
    }
    let cut = cut.expect("the trickling client was never cut");
    assert!(
        cut >= Duration::from_secs(4) && cut < Duration::from_secs(9),
        "cut after {cut:?}"
    );
    // The idle ones were cut by the read timeout meanwhile.
    for stream in held.iter_mut() {
        assert!(closed_within(stream, Duration::from_secs(3)));
    }
}
