//! Client protocol through its public API: every message round-trips, every
//! malformed input gives a clear error (and never a panic).
//!
//! Proptest case count: 128 by default; set `PROPTEST_CASES` to raise it.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use dynakv::protocol::{
    decode_request, decode_response, encode_request, encode_response, Encoder, ErrorCode,
    FrameDecoder, FrameError, Limits, ProtocolErrorKind, Quorum, Request, RequestFrame, Response,
    RoutingNode, RoutingTable, Sibling, FRAME_BYTES_MAX, FRAME_LENGTH_BYTES, KEY_BYTES_MAX, R_ALL,
    VALUE_BYTES_MAX,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(128);
    ProptestConfig::with_cases(cases)
}

fn bytes(len_max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=len_max).prop_map(Bytes::from)
}

fn key() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 1..=64).prop_map(Bytes::from)
}

fn count() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![Just(None), (1u8..=16).prop_map(Some)]
}

fn r_count() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![count(), Just(Some(R_ALL))]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::GetRoutingTable),
        (key(), r_count(), count()).prop_map(|(key, r, n)| Request::Get {
            key,
            quorum: Quorum {
                r,
                n,
                ..Quorum::DEFAULT
            },
        }),
        (
            key(),
            bytes(256),
            prop::option::of(bytes(64).prop_filter("non-empty", |c| !c.is_empty())),
            count(),
            count(),
            count()
        )
            .prop_map(|(key, value, context, w, dw, n)| Request::Put {
                key,
                value,
                context,
                quorum: Quorum { r: None, w, dw, n },
            }),
        (key(), bytes(64), count(), count(), count()).prop_map(|(key, context, w, dw, n)| {
            Request::Delete {
                key,
                context,
                quorum: Quorum { r: None, w, dw, n },
            }
        }),
    ]
}

fn routing_table() -> impl Strategy<Value = RoutingTable> {
    let node = (
        any::<u64>(),
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from)
        ],
        any::<u16>(),
        prop::collection::vec(any::<u16>(), 1..=4),
        any::<u32>(),
    )
        .prop_map(|(id, addr, client_port, shard_ports, weight)| RoutingNode {
            id,
            addr,
            client_port,
            shard_ports,
            weight,
        });
    (
        any::<u64>(),
        0u32..=6,
        1u8..=5,
        prop::collection::vec(node, 1..=5),
        any::<u64>(),
    )
        .prop_map(|(epoch, q_log2, n_val, nodes, seed)| {
            let q = 1u32 << q_log2;
            // Deterministic but varied owners drawn from the seed.
            let mut state = seed;
            let mut next = move || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u32
            };
            let partitions = (0..q)
                .map(|_| {
                    let len = 1 + next() as usize % usize::from(n_val);
                    (0..len)
                        .map(|_| {
                            let node = next() % nodes.len() as u32;
                            let shard = next() as usize % nodes[node as usize].shard_ports.len();
                            (node, shard as u16)
                        })
                        .collect()
                })
                .collect();
            RoutingTable {
                epoch,
                q,
                n_val,
                nodes,
                partitions,
            }
        })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Pong),
        Just(Response::Delete),
        bytes(64).prop_map(|context| Response::Put { context }),
        (
            any::<bool>(),
            prop::collection::vec(
                (any::<bool>(), bytes(128))
                    .prop_map(|(tombstone, value)| Sibling { tombstone, value }),
                0..=8
            ),
            bytes(64)
        )
            .prop_map(|(found, siblings, context)| Response::Get {
                found,
                siblings,
                context
            }),
        routing_table().prop_map(Response::RoutingTable),
        (
            error_code(),
            "[ -~]{0,80}",
            any::<u32>(),
            prop::option::of(routing_table())
        )
            .prop_map(|(code, message, acks, routing)| Response::Error {
                code,
                message,
                acks,
                routing
            }),
    ]
}

/// Splits a buffer holding exactly one frame into its payload.
fn only_frame(out: Vec<u8>) -> Bytes {
    let mut buf = BytesMut::from(&out[..]);
    let frame = FrameDecoder::new(FRAME_BYTES_MAX)
        .decode(&mut buf)
        .expect("within bounds")
        .expect("complete");
    assert!(buf.is_empty());
    frame
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_round_trip(id in any::<u64>(), epoch in any::<u64>(), request in request()) {
        let frame = RequestFrame { id, epoch, request };
        let mut out = Vec::new();
        encode_request(&frame, &mut out);
        let decoded = decode_request(only_frame(out), &Limits::default()).unwrap();
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn responses_round_trip(id in any::<u64>(), response in response()) {
        let mut out = Vec::new();
        encode_response(id, &response, &mut out);
        let (decoded_id, decoded) = decode_response(only_frame(out), &Limits::default()).unwrap();
        prop_assert_eq!(decoded_id, id);
        prop_assert_eq!(decoded, response);
    }

    #[test]
    fn pipelined_frames_split_at_any_read_boundary(
        requests in prop::collection::vec(request(), 1..=8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..=6),
    ) {
        // One encoder reused for all messages, as a connection does.
        let mut encoder = Encoder::new();
        let mut wire = Vec::new();
        let frames: Vec<RequestFrame> = requests
            .into_iter()
            .enumerate()
            .map(|(id, request)| RequestFrame { id: id as u64, epoch: 1, request })
            .collect();
        for frame in &frames {
            encoder.encode_request(frame, &mut wire);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len())).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[start..cut]);
            start = cut;
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                decoded.push(decode_request(frame, &Limits::default()).unwrap());
            }
        }
        prop_assert_eq!(decoded, frames);
    }
}

#[test]
fn put_with_an_empty_context_reads_as_no_context() {
    let frame = RequestFrame {
        id: 1,
        epoch: 0,
        request: Request::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            context: Some(Bytes::new()),
            quorum: Quorum::DEFAULT,
        },
    };
    let mut out = Vec::new();
    encode_request(&frame, &mut out);
    let decoded = decode_request(only_frame(out), &Limits::default()).unwrap();
    let Request::Put { context, .. } = decoded.request else {
        panic!("expected a put");
    };
    assert_eq!(context, None);
}

#[test]
fn decoded_values_share_the_frame_memory() {
    let value = Bytes::from(vec![9u8; 4096]);
    let frame = RequestFrame {
        id: 1,
        epoch: 0,
        request: Request::Put {
            key: Bytes::from_static(b"key"),
            value,
            context: None,
            quorum: Quorum::DEFAULT,
        },
    };
    let mut out = Vec::new();
    encode_request(&frame, &mut out);
    let payload = only_frame(out);
    let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
    let decoded = decode_request(payload.clone(), &Limits::default()).unwrap();
    let Request::Put { key, value, .. } = decoded.request else {
        panic!("expected a put");
    };
    assert!(range.contains(&(value.as_ptr() as usize)), "value copied");
    assert!(range.contains(&(key.as_ptr() as usize)), "key copied");
}

fn put_frame(key_len: usize, value_len: usize, context_len: usize) -> Bytes {
    let frame = RequestFrame {
        id: 77,
        epoch: 0,
        request: Request::Put {
            key: Bytes::from(vec![b'k'; key_len]),
            value: Bytes::from(vec![b'v'; value_len]),
            context: (context_len > 0).then(|| Bytes::from(vec![b'c'; context_len])),
            quorum: Quorum::DEFAULT,
        },
    };
    let mut out = Vec::new();
    encode_request(&frame, &mut out);
    only_frame(out)
}

#[test]
fn oversized_key_value_and_context_are_refused_with_their_codes() {
    let limits = Limits::default();
    let cases = [
        (
            put_frame(KEY_BYTES_MAX + 1, 1, 0),
            ErrorCode::KeyTooLarge,
            "key of 1025 bytes",
        ),
        (put_frame(0, 1, 0), ErrorCode::KeyTooLarge, "key is empty"),
        (
            put_frame(1, VALUE_BYTES_MAX + 1, 0),
            ErrorCode::ValueTooLarge,
            "value of 1048577 bytes",
        ),
        (
            put_frame(1, 1, limits.context_bytes_max + 1),
            ErrorCode::BadContext,
            "context of 4097 bytes",
        ),
    ];
    for (frame, code, text) in cases {
        let error = decode_request(frame, &limits).unwrap_err();
        assert_eq!(error.code(), code, "{error}");
        assert_eq!(error.id, Some(77));
        assert!(error.to_string().contains(text), "{error}");
    }
    // The largest allowed key, value and context together fit a frame.
    let frame = put_frame(KEY_BYTES_MAX, VALUE_BYTES_MAX, limits.context_bytes_max);
    assert!(decode_request(frame, &limits).is_ok());
}

#[test]
fn get_reply_with_too_many_siblings_is_refused() {
    let limits = Limits {
        siblings_max: 3,
        ..Limits::default()
    };
    let response = Response::Get {
        found: true,
        siblings: vec![
            Sibling {
                tombstone: false,
                value: Bytes::from_static(b"x"),
            };
            4
        ],
        context: Bytes::new(),
    };
    let mut out = Vec::new();
    encode_response(12, &response, &mut out);
    let error = decode_response(only_frame(out), &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::TooManySiblings);
    assert_eq!(
        error.kind,
        ProtocolErrorKind::TooManySiblings { count: 4, max: 3 }
    );
}

#[test]
fn garbage_is_refused_as_bad_request() {
    for garbage in [
        &b""[..],
        &b"\x00"[..],
        &b"\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0u8; 64][..],
    ] {
        let error = decode_request(Bytes::copy_from_slice(garbage), &Limits::default())
            .expect_err("garbage is refused");
        // All zeros happens to be a valid empty table, so it fails later,
        // for its missing body; either way the reply is BadRequest.
        assert!(
            matches!(
                error.kind,
                ProtocolErrorKind::Malformed(_) | ProtocolErrorKind::UnknownBody(0)
            ),
            "{error}"
        );
        assert_eq!(error.code(), ErrorCode::BadRequest);
        let error = decode_response(Bytes::copy_from_slice(garbage), &Limits::default())
            .expect_err("garbage is refused");
        assert!(matches!(
            error.kind,
            ProtocolErrorKind::Malformed(_) | ProtocolErrorKind::UnknownBody(0)
        ));
    }
}

#[test]
fn huge_length_prefix_is_a_frame_error() {
    let mut buf = BytesMut::from(&((FRAME_BYTES_MAX as u32) + 1).to_le_bytes()[..]);
    let error = FrameDecoder::new(FRAME_BYTES_MAX)
        .decode(&mut buf)
        .unwrap_err();
    assert_eq!(
        error,
        FrameError::TooLarge {
            bytes: FRAME_BYTES_MAX + 1,
            max: FRAME_BYTES_MAX
        }
    );
    // A frame handed to the decoder directly is checked as well.
    let limits = Limits {
        frame_bytes_max: 16,
        ..Limits::default()
    };
    let error = decode_request(Bytes::from(vec![0u8; 17]), &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn truncated_frames_are_incomplete_then_malformed() {
    let request = RequestFrame {
        id: 5,
        epoch: 6,
        request: Request::Get {
            key: Bytes::from_static(b"a key"),
            quorum: Quorum::DEFAULT,
        },
    };
    let mut out = Vec::new();
    encode_request(&request, &mut out);
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    for len in 0..out.len() {
        // On the stream, a truncated frame is just not complete yet.
        let mut buf = BytesMut::from(&out[..len]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        // Handed over on its own, a truncated payload is malformed, unless
        // only alignment padding at the end was cut.
        if len >= FRAME_LENGTH_BYTES {
            let payload = Bytes::copy_from_slice(&out[FRAME_LENGTH_BYTES..len]);
            match decode_request(payload, &Limits::default()) {
                Ok(decoded) => {
                    assert!(out.len() - len < 8, "{len} of {} decoded", out.len());
                    assert_eq!(decoded, request);
                }
                Err(error) => assert_eq!(error.code(), ErrorCode::BadRequest),
            }
        }
    }
}
