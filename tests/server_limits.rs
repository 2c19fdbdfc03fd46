//! Connection limits against the real server: 10,000 idle connections do
//! not stop a normal client from being served; one source address cannot
//! take more than `connections_per_address_max` of a shard's connections
//! while other addresses are served; idle and slow (trickling) connections
//! are closed after the idle timeout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestNode;
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{
    decode_response, encode_request, ErrorCode, Limits, Quorum, Request, RequestFrame, Response,
};

/// Raises this test process's descriptor limit to its hard limit.
fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur as u64
    }
}

/// A connection from `source` (a loopback IP) to `to`.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends a ping on `stream` and returns the reply.
fn ping(stream: &mut TcpStream) -> Response {
    let mut out = Vec::new();
    encode_request(
        &RequestFrame {
            id: 7,
            epoch: 0,
            request: Request::Ping,
        },
        &mut out,
    );
    stream.write_all(&out).unwrap();
    read_reply(stream)
}

fn read_reply(stream: &mut TcpStream) -> Response {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("reply length");
    let mut body = vec![0u8; u32::from_le_bytes(length) as usize];
    stream.read_exact(&mut body).expect("reply body");
    decode_response(Bytes::from(body), &Limits::default())
        .expect("decodes")
        .1
}

/// True when the server closed `stream` within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0)) || matches!(stream.read(&mut byte), Ok(0))
}

#[test]
fn ten_thousand_idle_connections_do_not_stop_a_normal_client() {
    let limit = raise_open_files_limit();
    assert!(
        limit > 10_500,
        "RLIMIT_NOFILE hard limit {limit} is too low (tools/setup.sh raises it)"
    );
    let node = TestNode::start(
        2,
        &[
            "--connections-per-address-max",
            "20000",
            "--idle-timeout-ms",
            "60000",
        ],
    );
    let began = Instant::now();
    // From 127.0.0.7: their 10,000 ephemeral ports are taken on that
    // address, not on 127.0.0.1 where other tests bind their servers.
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(connect_from("127.0.0.7", node.listen));
    }
    eprintln!("10000 idle connections opened in {:?}", began.elapsed());
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let served = Instant::now();
    let mut client = Client::connect(node.listen, options).expect("connect");
    for i in 0..50 {
        let key = format!("busy-{i}");
        client
            .put(key.as_bytes(), b"v", None, Quorum::DEFAULT)
            .expect("put beside 10000 idle connections");
        assert_eq!(client.get(key.as_bytes()).expect("get").values, vec!["v"]);
    }
    eprintln!("50 puts and gets served in {:?}", served.elapsed());
    // The idle connections are still open (held, not refused) until here.
    let mut sample = idle.pop().unwrap();
    assert!(matches!(ping(&mut sample), Response::Pong));
}

#[test]
fn one_address_cannot_take_every_slot_and_idle_or_slow_connections_are_closed() {
    let node = TestNode::start(
        1,
        &[
            "--connections-per-address-max",
            "5",
            "--idle-timeout-ms",
            "500",
        ],
    );
    let shard_port = SocketAddr::new(node.listen.ip(), node.shard_port(0));
    let mut held: Vec<TcpStream> = (0..5)
        .map(|_| connect_from("127.0.0.1", shard_port))
        .collect();
    for stream in &mut held {
        assert!(matches!(ping(stream), Response::Pong));
    }
    // The sixth from the same address is refused with a clear error...
    let mut sixth = connect_from("127.0.0.1", shard_port);
    match read_reply(&mut sixth) {
        Response::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Overloaded);
            assert!(message.contains("from this address"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // ...while another address is served.
    let mut other = connect_from("127.0.0.2", shard_port);
    assert!(matches!(ping(&mut other), Response::Pong));

    // A silent connection is closed after the idle timeout, and so is one
    // that trickles a frame's bytes without ever completing it.
    let mut silent = held.pop().unwrap();
    let mut slow = held.pop().unwrap();
    let began = Instant::now();
    let mut slow_closed = false;
    while began.elapsed() < Duration::from_secs(5) {
        // A length prefix promising 100 bytes, then one byte at a time.
        let byte: &[u8] = if began.elapsed() < Duration::from_millis(50) {
            &[100]
        } else {
            &[0]
        };
        if slow.write_all(byte).is_err() || closed_within(&mut slow, Duration::from_millis(100)) {
            slow_closed = true;
            break;
        }
    }
    assert!(slow_closed, "a trickling connection was held for 5 s");
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "idle connection kept"
    );
    // Closed connections free their slots: the address may connect again.
    drop(held);
    let mut again = connect_from("127.0.0.1", shard_port);
    assert!(matches!(ping(&mut again), Response::Pong));
}
