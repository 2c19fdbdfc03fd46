//! Bad input against a real server: garbage bytes, a huge length prefix, a
//! truncated frame, a malformed flatbuffer, oversized keys and values, a bad
//! context, and too many connections. After each, the server still serves
//! everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{connect, pipeline, TestNode};
use dynakv::protocol::{
    decode_response, encode_request, write_frame, ErrorCode, FrameDecoder, Limits, Quorum, Request,
    RequestFrame, Response,
};

/// Reads one reply frame; `None` when the server closed the connection.
fn read_reply(stream: &mut TcpStream) -> Option<(u64, Response)> {
    let mut decoder = FrameDecoder::new(8 << 20);
    let mut buffer = BytesMut::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(frame) = decoder
            .decode(&mut buffer)
            .expect("server frames are well formed")
        {
            return Some(
                decode_response(frame, &Limits::default()).expect("server replies decode"),
            );
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn request(id: u64, request: Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(
        &RequestFrame {
            id,
            epoch: 0,
            request,
        },
        &mut out,
    );
    out
}

fn error_code(reply: &Response) -> Option<ErrorCode> {
    match reply {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// The node still answers a fresh client's ping and put/get.
fn assert_still_serving(node: &TestNode) {
    let mut stream = connect(node);
    stream.write_all(&request(7, Request::Ping)).unwrap();
    assert_eq!(read_reply(&mut stream), Some((7, Response::Pong)));
    let (code, _, err) = node.cli(&["put", "alive", "yes", "--dw", "1"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = node.cli(&["get", "alive", "--json"]);
    assert!(out.contains("\"yes\""), "{out}");
}

#[test]
fn malformed_frames_get_an_error_or_a_close_and_the_server_keeps_serving() {
    let node = TestNode::start(2, &[]);

    // Garbage: a small length prefix followed by bytes that are no flatbuffer.
    let mut stream = connect(&node);
    let mut garbage = Vec::new();
    write_frame(b"\xde\xad\xbe\xef not a flatbuffer at all", &mut garbage);
    stream.write_all(&garbage).unwrap();
    let (_, reply) = read_reply(&mut stream).expect("an error reply");
    assert_eq!(error_code(&reply), Some(ErrorCode::BadRequest), "{reply:?}");
    // The same connection still works: frame boundaries were intact.
    stream.write_all(&request(2, Request::Ping)).unwrap();
    assert_eq!(read_reply(&mut stream), Some((2, Response::Pong)));

    // A huge length prefix: rejected before any allocation, then closed.
    let mut stream = connect(&node);
    stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let reply = read_reply(&mut stream).expect("an error reply before the close");
    assert_eq!(
        error_code(&reply.1),
        Some(ErrorCode::FrameTooLarge),
        "{reply:?}"
    );
    assert_eq!(
        read_reply(&mut stream),
        None,
        "connection closed after a bad length prefix"
    );

    // A truncated frame then a closed socket: nothing breaks.
    let mut stream = connect(&node);
    let full = request(3, Request::Ping);
    stream.write_all(&full[..full.len() - 3]).unwrap();
    drop(stream);

    // Random bytes with no framing at all.
    let mut stream = connect(&node);
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = stream.write_all(&noise);
    let _ = read_reply(&mut stream);

    assert_still_serving(&node);
}

#[test]
fn oversized_keys_values_and_bad_contexts_are_rejected_clearly() {
    let node = TestNode::start(1, &[]);
    let mut stream = connect(&node);
    let quorum = Quorum::default();

    let big_key = Bytes::from(vec![b'k'; 4096]);
    stream
        .write_all(&request(
            10,
            Request::Get {
                key: big_key.clone(),
                quorum,
            },
        ))
        .unwrap();
    let (id, reply) = read_reply(&mut stream).unwrap();
    assert_eq!(
        (id, error_code(&reply)),
        (10, Some(ErrorCode::KeyTooLarge)),
        "{reply:?}"
    );

    let big_value = Bytes::from(vec![b'v'; 1024 * 1024 + 1]);
    let put = Request::Put {
        key: Bytes::from_static(b"k"),
        value: big_value,
        context: None,
        quorum,
    };
    stream.write_all(&request(11, put)).unwrap();
    let (id, reply) = read_reply(&mut stream).unwrap();
    assert_eq!(
        (id, error_code(&reply)),
        (11, Some(ErrorCode::ValueTooLarge)),
        "{reply:?}"
    );

    let bad_context = Request::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        context: Some(Bytes::from_static(b"\x01garbage context bytes")),
        quorum,
    };
    stream.write_all(&request(12, bad_context)).unwrap();
    let (id, reply) = read_reply(&mut stream).unwrap();
    assert_eq!(
        (id, error_code(&reply)),
        (12, Some(ErrorCode::BadContext)),
        "{reply:?}"
    );

    let delete = Request::Delete {
        key: Bytes::from_static(b"k"),
        context: Bytes::from_static(b"zz"),
        quorum,
    };
    stream.write_all(&request(13, delete)).unwrap();
    let (id, reply) = read_reply(&mut stream).unwrap();
    assert_eq!(
        (id, error_code(&reply)),
        (13, Some(ErrorCode::BadContext)),
        "{reply:?}"
    );

    // A quorum the cluster cannot meet is refused, not silently weakened.
    let get = Request::Get {
        key: Bytes::from_static(b"k"),
        quorum: Quorum {
            r: Some(3),
            ..Quorum::default()
        },
    };
    stream.write_all(&request(14, get)).unwrap();
    let (id, reply) = read_reply(&mut stream).unwrap();
    assert_eq!(
        (id, error_code(&reply)),
        (14, Some(ErrorCode::BadRequest)),
        "{reply:?}"
    );

    // Blind puts of one key are concurrent siblings; past the bound a put
    // is refused, with the remedy said once, and the siblings stay.
    let blind = |id| {
        request(
            id,
            Request::Put {
                key: Bytes::from_static(b"crowded"),
                value: Bytes::from(id.to_string()),
                context: None,
                quorum,
            },
        )
    };
    for id in 100..164 {
        stream.write_all(&blind(id)).unwrap();
        let (_, reply) = read_reply(&mut stream).unwrap();
        assert_eq!(error_code(&reply), None, "{reply:?}");
    }
    stream.write_all(&blind(164)).unwrap();
    let (id, reply) = read_reply(&mut stream).unwrap();
    let Response::Error { code, message, .. } = reply else {
        panic!("the 65th sibling is refused: {reply:?}");
    };
    assert_eq!((id, code), (164, ErrorCode::TooManySiblings), "{message}");
    assert_eq!(
        message.matches("read the key").count(),
        1,
        "the remedy is said once: {message}"
    );
    let get = Request::Get {
        key: Bytes::from_static(b"crowded"),
        quorum,
    };
    stream.write_all(&request(165, get)).unwrap();
    let (_, reply) = read_reply(&mut stream).unwrap();
    let Response::Get { siblings, .. } = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(siblings.len(), 64);

    assert_still_serving(&node);
}

#[test]
fn pipelined_requests_on_one_connection_all_get_their_replies() {
    let node = TestNode::start(2, &[]);
    let mut stream = connect(&node);
    let mut wire = Vec::new();
    for id in 0..500u64 {
        let key = Bytes::from(format!("pipelined-{}", id % 50));
        let request = if id % 2 == 0 {
            Request::Put {
                key,
                value: Bytes::from(id.to_string()),
                context: None,
                quorum: Quorum::default(),
            }
        } else {
            Request::Get {
                key,
                quorum: Quorum::default(),
            }
        };
        encode_request(
            &RequestFrame {
                id,
                epoch: 0,
                request,
            },
            &mut wire,
        );
    }
    stream.write_all(&wire).unwrap();
    let mut seen = vec![false; 500];
    let mut decoder = FrameDecoder::new(8 << 20);
    let mut buffer = BytesMut::new();
    let mut chunk = [0u8; 65536];
    let mut received = 0;
    while received < 500 {
        if let Some(frame) = decoder.decode(&mut buffer).unwrap() {
            let (id, reply) = decode_response(frame, &Limits::default()).unwrap();
            assert!(
                error_code(&reply).is_none(),
                "request {id} failed: {reply:?}"
            );
            assert!(!seen[id as usize], "duplicate reply for {id}");
            seen[id as usize] = true;
            received += 1;
            continue;
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed with {received} of 500 replies");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// A client that sends its requests and then half-closes (`shutdown(SHUT_WR)`,
/// as `nc -N` does) gets every reply and then the end of the stream, at once.
/// The requests and the FIN are made to reach the server together, in one
/// readiness event (the server is stopped with SIGSTOP while they are sent):
/// TCP hands over the bytes in a short read and reports the end only on the
/// next `recv`, with no event of its own (`runtime/readiness.rs`, `drain`).
/// With one request, with a batch, and with a request cut short by the FIN
/// (its bytes are dropped, nothing answered).
#[test]
fn requests_then_a_half_close_are_answered_and_the_connection_closes() {
    let node = TestNode::start(1, &[]);
    let pid = node.child.as_ref().expect("running").id() as libc::pid_t;
    /// Continues the server however the test ends.
    struct Continue(libc::pid_t);
    impl Drop for Continue {
        fn drop(&mut self) {
            // SAFETY: a signal to the test's own child process.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    for count in [1u64, 20] {
        for cut_short in [false, true] {
            let mut stream = connect(&node);
            // The connection's reader has read (a short read) and waits.
            stream.write_all(&request(100, Request::Ping)).unwrap();
            assert_eq!(read_reply(&mut stream), Some((100, Response::Pong)));
            let mut wire = Vec::new();
            for id in 0..count {
                wire.extend(request(id, Request::Ping));
            }
            if cut_short {
                wire.extend(&request(count, Request::Ping)[..6]);
            }
            {
                // SAFETY: as above.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
                let _continue = Continue(pid);
                std::thread::sleep(Duration::from_millis(50));
                stream.write_all(&wire).unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            let began = std::time::Instant::now();
            let mut answer = Vec::new();
            stream
                .read_to_end(&mut answer)
                .expect("the server closes after answering (within the 10 s read timeout)");
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "{:?}",
                began.elapsed()
            );
            let mut buffer = BytesMut::from(&answer[..]);
            let mut decoder = FrameDecoder::new(8 << 20);
            let mut ids = Vec::new();
            while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
                let (id, reply) = decode_response(frame, &Limits::default()).unwrap();
                assert_eq!(reply, Response::Pong);
                ids.push(id);
            }
            assert!(buffer.is_empty(), "whole replies only");
            assert_eq!(
                ids,
                (0..count).collect::<Vec<_>>(),
                "cut short: {cut_short}"
            );
        }
    }
    assert_still_serving(&node);
}

/// A connection reads its requests' frames in place, in its read buffer,
/// and a request that keeps part of its frame (a put's key and value, a get
/// that waits for the disk) takes it out of the buffer (`LentFrame`). Here
/// one stream of pipelined requests arrives cut at uneven points, so frames
/// straddle reads: gets answered from memory and from the disk (no read
/// cache, a 4 KiB write buffer), puts, pings and an unknown key are all
/// answered, and every put's value, kept while the buffer went on being
/// read into and reused, reads back intact.
#[test]
fn requests_cut_at_uneven_points_are_read_in_place_and_kept_values_are_intact() {
    let node = TestNode::start(
        1,
        &["--read-cache-bytes", "0", "--write-buffer-bytes", "4096"],
    );
    let value =
        |tag: &str, i: u64| Bytes::from(format!("{tag}-{i}-{}", "v".repeat(i as usize % 300)));
    let put = |key: String, value: Bytes| Request::Put {
        key: Bytes::from(key),
        value,
        context: None,
        quorum: Quorum::default(),
    };
    let get = |key: String| Request::Get {
        key: Bytes::from(key),
        quorum: Quorum::default(),
    };
    // Phase 1: keys to read, most of them flushed to the disk by now.
    let mut stream = connect(&node);
    let first: Vec<Request> = (0..200)
        .map(|i| put(format!("old-{i}"), value("old", i)))
        .collect();
    for (id, reply) in pipeline(&mut stream, first) {
        assert!(matches!(reply, Response::Put { .. }), "{id}: {reply:?}");
    }
    // Phase 2: gets of those keys, new puts, pings and a missing key, in one
    // stream written in pieces of 1 to 97 bytes.
    let mut expected = Vec::new();
    let mut wire = Vec::new();
    for id in 0..600u64 {
        let (sent, want) = match id % 4 {
            0 => (
                get(format!("old-{}", id % 200)),
                Some(value("old", id % 200)),
            ),
            1 => (put(format!("new-{id}"), value("new", id)), None),
            2 if id % 40 == 2 => (get("never-written".into()), None),
            2 => (Request::Ping, None),
            _ => (
                get(format!("old-{}", (id * 7) % 200)),
                Some(value("old", (id * 7) % 200)),
            ),
        };
        wire.extend(request(id, sent.clone()));
        expected.push((id, sent, want));
    }
    stream.set_nodelay(true).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let replies = std::thread::spawn(move || {
        let mut decoder = FrameDecoder::new(8 << 20);
        let mut buffer = BytesMut::new();
        let mut chunk = [0u8; 65536];
        let mut replies = Vec::new();
        while replies.len() < 600 {
            if let Some(frame) = decoder.decode(&mut buffer).unwrap() {
                replies.push(decode_response(frame, &Limits::default()).unwrap());
                continue;
            }
            let n = reader.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed with {} replies", replies.len());
            buffer.extend_from_slice(&chunk[..n]);
        }
        replies
    });
    let mut at = 0;
    for piece in (1..).map(|i: usize| 1 + (i * 31) % 97) {
        let end = (at + piece).min(wire.len());
        stream.write_all(&wire[at..end]).unwrap();
        at = end;
        if at == wire.len() {
            break;
        }
        if piece % 5 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let mut replies = replies.join().unwrap();
    replies.sort_by_key(|(id, _)| *id);
    for ((id, request, want), (reply_id, reply)) in expected.into_iter().zip(replies) {
        assert_eq!(id, reply_id);
        match (request, reply) {
            (Request::Get { .. }, Response::Get { siblings, .. }) => {
                let values: Vec<Bytes> = siblings.into_iter().map(|s| s.value).collect();
                assert_eq!(values, want.into_iter().collect::<Vec<_>>(), "request {id}");
            }
            (Request::Put { .. }, Response::Put { .. }) | (Request::Ping, Response::Pong) => {}
            (request, reply) => panic!("request {id} {request:?}: {reply:?}"),
        }
    }
    // Phase 3: every value the stream's puts kept reads back intact.
    let gets: Vec<Request> = (0..600u64)
        .filter(|id| id % 4 == 1)
        .map(|id| get(format!("new-{id}")))
        .collect();
    let ids: Vec<u64> = (0..600u64).filter(|id| id % 4 == 1).collect();
    for ((_, reply), id) in pipeline(&mut stream, gets).into_iter().zip(ids) {
        let Response::Get { siblings, .. } = reply else {
            panic!("new-{id}: {reply:?}");
        };
        let values: Vec<Bytes> = siblings.into_iter().map(|s| s.value).collect();
        assert_eq!(values, vec![value("new", id)], "new-{id}");
    }
}

/// A connection decodes every complete frame of a read before it handles
/// the first (its keys' entries are prefetched in between): in one write, a
/// batch with an invalid frame in the middle and a bad length prefix at the
/// end gets every reply once, the invalid frame its error between the
/// replies of its neighbours answered in place, and the connection closes
/// after the last one. A request that waits may be answered after later
/// ones; with one request in flight per connection it holds the rest of the
/// batch back (here a durable put), so every reply keeps request order.
#[test]
fn a_batch_with_bad_frames_is_answered_in_order_then_closed() {
    for (in_flight, dw) in [("1024", None), ("1", Some(1))] {
        let node = TestNode::start(2, &["--in-flight-per-connection-max", in_flight]);
        let mut stream = connect(&node);
        let key = Bytes::from_static(b"batch-key");
        let mut wire = request(1, Request::Ping);
        wire.extend(request(
            2,
            Request::Put {
                key: key.clone(),
                value: Bytes::from_static(b"v1"),
                context: None,
                quorum: Quorum {
                    dw,
                    ..Quorum::default()
                },
            },
        ));
        write_frame(b"\xde\xad\xbe\xef not a flatbuffer", &mut wire);
        wire.extend(request(
            4,
            Request::Get {
                key,
                quorum: Quorum::default(),
            },
        ));
        wire.extend(request(5, Request::Ping));
        wire.extend(u32::MAX.to_le_bytes());
        stream.write_all(&wire).unwrap();

        let mut replies = Vec::new();
        let mut decoder = FrameDecoder::new(8 << 20);
        let mut buffer = BytesMut::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(frame) = decoder.decode(&mut buffer).unwrap() {
                replies.push(decode_response(frame, &Limits::default()).unwrap());
                continue;
            }
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        let summary: Vec<String> = replies
            .iter()
            .map(|(id, reply)| match reply {
                Response::Pong => format!("{id} pong"),
                Response::Put { .. } => format!("{id} put"),
                Response::Get { siblings, .. } => format!(
                    "{id} get {:?}",
                    siblings.iter().map(|v| v.value.clone()).collect::<Vec<_>>()
                ),
                Response::Error { code, .. } => format!("error {code:?}"),
                other => format!("{id} {other:?}"),
            })
            .collect();
        let expected = [
            "1 pong",
            "2 put",
            "error BadRequest",
            "4 get [b\"v1\"]",
            "5 pong",
            "error FrameTooLarge",
        ];
        if in_flight == "1" {
            assert_eq!(summary, expected, "one request in flight: request order");
        } else {
            // Pings and errors are always answered in place, so in order;
            // the put and the get behind it on its key may wait (a fresh
            // store's first write can) and come later.
            let mut sorted = summary.clone();
            sorted.sort();
            let mut want = expected.map(String::from).to_vec();
            want.sort();
            assert_eq!(sorted, want, "every reply once: {summary:?}");
            let in_place: Vec<&String> = summary
                .iter()
                .filter(|r| r.contains("pong") || r.starts_with("error"))
                .collect();
            assert_eq!(
                in_place,
                [
                    "1 pong",
                    "error BadRequest",
                    "5 pong",
                    "error FrameTooLarge"
                ],
                "{summary:?}"
            );
        }
        assert_still_serving(&node);
    }
}

/// A single-node put is updated in place, outside the replica machine
/// (N = W = 1), and a write that waits for a flush or a group commit goes
/// on in a task holding the key's lock. Blind puts (no context) to one key
/// are concurrent: every one must survive as its own sibling under a dot of
/// its own (§4.4), buffered or durable, however the writes interleave with
/// the flushes a tiny write buffer forces.
#[test]
fn pipelined_blind_puts_to_one_key_all_survive_while_writes_wait_for_flushes() {
    const KEYS: u64 = 4;
    const PUTS_PER_KEY: u64 = 40;
    let node = TestNode::start(1, &["--write-buffer-bytes", "4096"]);
    let mut stream = connect(&node);
    let value = |id: u64| Bytes::from(format!("{id}-{}", "v".repeat(90)));
    let puts = KEYS * PUTS_PER_KEY;
    let requests = (0..puts).map(|id| Request::Put {
        key: Bytes::from(format!("blind-{}", id % KEYS)),
        value: value(id),
        context: None,
        quorum: Quorum {
            dw: (id % 3 == 0).then_some(1),
            ..Quorum::default()
        },
    });
    // All puts are in flight together; every one is acknowledged.
    for (id, reply) in pipeline(&mut stream, requests.collect()) {
        assert!(matches!(reply, Response::Put { .. }), "put {id}: {reply:?}");
    }
    let gets = (0..KEYS).map(|key| Request::Get {
        key: Bytes::from(format!("blind-{key}")),
        quorum: Quorum::default(),
    });
    for (key, reply) in pipeline(&mut stream, gets.collect()) {
        let Response::Get { siblings, .. } = reply else {
            panic!("get {key}: {reply:?}");
        };
        let mut got: Vec<Bytes> = siblings.into_iter().map(|s| s.value).collect();
        got.sort();
        let mut expected: Vec<Bytes> = (0..PUTS_PER_KEY).map(|i| value(i * KEYS + key)).collect();
        expected.sort();
        assert_eq!(got, expected, "blind-{key}");
    }
}

#[test]
fn connections_over_the_limit_are_refused_and_idle_ones_time_out() {
    let node = TestNode::start(1, &["--connections-max", "8", "--idle-timeout-ms", "500"]);
    // Fill the shard's connection budget with idle sockets on its own port.
    let shard = std::net::SocketAddr::new(node.listen.ip(), node.shard_port(0));
    // A ping on each proves the server has accepted it (the limit counts accepted connections).
    let idle: Vec<TcpStream> = (0..8u64)
        .map(|id| {
            let mut s = TcpStream::connect(shard).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&request(id, Request::Ping)).unwrap();
            assert_eq!(read_reply(&mut s), Some((id, Response::Pong)));
            s
        })
        .collect();
    let mut extra = TcpStream::connect(shard).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reply = read_reply(&mut extra).expect("an Overloaded reply");
    assert_eq!(error_code(&reply.1), Some(ErrorCode::Overloaded));
    // Idle connections are closed by the server after the timeout, freeing the budget.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut byte = [0u8; 1];
        assert!(
            matches!(s.read(&mut byte), Ok(0) | Err(_)),
            "idle connection should be closed"
        );
    }
    let mut fresh = TcpStream::connect(shard).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    fresh.write_all(&request(1, Request::Ping)).unwrap();
    assert_eq!(read_reply(&mut fresh), Some((1, Response::Pong)));
}

#[test]
fn siblings_that_outgrow_the_record_bound_are_refused_and_nothing_is_lost() {
    use dynakv::client::{Client, ClientError, ClientOptions};
    let node = TestNode::start(1, &["--value-bytes-max", "100000"]);
    let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    let value = vec![b'a'; 90_000];
    client
        .put(b"big", &value, None, Quorum::default())
        .expect("first put fits");
    // A blind put would make two 90 kB siblings: more than one record may hold.
    let err = client
        .put(b"big", &value, None, Quorum::default())
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Server {
                code: ErrorCode::ValueTooLarge,
                ..
            }
        ),
        "a clear ValueTooLarge: {err}"
    );
    let got = client.get(b"big").expect("get");
    assert_eq!(got.values.len(), 1, "the stored value is intact");
    assert_eq!(got.values[0].len(), 90_000);
    // Writing with the context replaces the sibling and fits again.
    client
        .put(b"big", b"small", Some(&got.context), Quorum::default())
        .expect("put with context");
    assert_eq!(
        client.get(b"big").unwrap().values,
        vec![Bytes::from_static(b"small")]
    );
}
