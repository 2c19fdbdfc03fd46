//! The hand-written request reader and reply writer (`protocol::direct`,
//! issue #4) against the generic flatbuffers path they replace.
//!
//! Requests: whatever the hand-written reader accepts, the generic verifier
//! accepts too and decodes to the same `RequestFrame`; whatever the generic
//! path rejects, the hand-written one rejects, with the same id (and, for
//! the semantic checks, the same error). The only allowed difference is a
//! stricter structural rejection (`Malformed`), which well-formed frames
//! never meet and which `deliberately_stricter_*` pins down.
//!
//! Replies: the hand-written frames decode through `decode_response` to the
//! same value as the `FlatBufferBuilder` ones. The load generator's lean
//! reader (`inspect_response`) answers every payload `compare_responses`
//! sees exactly when `decode_response` accepts it as a Pong, Put, Delete or
//! Get reply, and then says the same id, found flag, sibling count and
//! context (`check_inspect`).
//!
//! Request frames: the hand-written writer's (`encode_request`,
//! `encode_request_ref`) decode through both request readers to the input,
//! and to what the builder's frame (`Encoder::encode_request_generic`)
//! decodes to, errors included; the mutation fuzzer starts from frames of
//! both writers.
//!
//! `DYNAKV_DIFF_ITERATIONS` (default 20000) sets the mutation fuzzer's
//! iterations, `DYNAKV_DIFF_SECONDS` runs it for a time instead (as
//! `tools/fuzz-request-decoder.sh` does), `DYNAKV_DIFF_SEED` replays a seed.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dynakv::protocol::{
    decode_request, decode_request_generic, decode_response, decode_response_generic,
    encode_get_reply, encode_request, encode_request_ref, inspect_response, Encoder, ErrorCode,
    FrameDecoder, Limits, ProtocolError, ProtocolErrorKind, Quorum, Request, RequestFrame,
    RequestRef, Response, ResponseView, RoutingNode, RoutingTable, Sibling, FRAME_LENGTH_BYTES,
    KEY_BYTES_MAX, REPLICAS_MAX, R_ALL,
};
use proptest::prelude::*;

/// Small limits, so that the size checks are reachable by mutation too.
fn small_limits() -> Limits {
    Limits {
        frame_bytes_max: 64 * 1024,
        key_bytes_max: 64,
        value_bytes_max: 1024,
        context_bytes_max: 64,
        siblings_max: 4,
        error_message_bytes_max: 128,
        nodes_max: 8,
        partitions_max: 64,
    }
}

/// How the two request decoders answered one payload.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    BothAccepted,
    BothRejected,
    /// The hand-written reader refused a frame the generic path accepts (or
    /// rejects only semantically): one of its stricter structural checks.
    Stricter,
}

fn is_malformed(error: &ProtocolError) -> bool {
    matches!(error.kind, ProtocolErrorKind::Malformed(_))
}

/// The hand-written reader's only checks beyond the generic verifier's.
const STRICTER_CHECKS: [&str; 3] = [
    "vtable shorter than its header",
    "table size out of bounds",
    "field outside its table",
];

/// A stricter rejection: asserts it came from one of `STRICTER_CHECKS`.
fn stricter(hand: &ProtocolError, payload: &[u8]) -> Verdict {
    let ProtocolErrorKind::Malformed(message) = &hand.kind else {
        panic!("only structural checks may be stricter: {hand:?} for {payload:?}");
    };
    assert!(
        STRICTER_CHECKS
            .iter()
            .any(|check| message.starts_with(check)),
        "a check the generic verifier also makes failed where it passed: {message}, {payload:?}"
    );
    Verdict::Stricter
}

/// Decodes `payload` both ways and checks the contract between them.
fn compare(payload: &[u8], limits: &Limits) -> Verdict {
    let hand = decode_request(Bytes::copy_from_slice(payload), limits);
    let generic = decode_request_generic(Bytes::copy_from_slice(payload), limits);
    judge(hand, generic, |frame| frame.id, payload)
}

/// `compare` for responses: `decode_response` against
/// `decode_response_generic`.
fn compare_responses(payload: &[u8], limits: &Limits) -> Verdict {
    let hand = decode_response(Bytes::copy_from_slice(payload), limits);
    check_inspect(payload, limits, &hand);
    let generic = decode_response_generic(Bytes::copy_from_slice(payload), limits);
    judge(hand, generic, |(id, _)| *id, payload)
}

/// The lean reader against `decoded`, the full decoder's answer for
/// `payload`: a view exactly for an accepted Pong, Put, Delete or Get
/// reply, agreeing with it.
fn check_inspect(
    payload: &[u8],
    limits: &Limits,
    decoded: &Result<(u64, Response), ProtocolError>,
) {
    let view = inspect_response(payload, limits);
    let expected = match decoded {
        Ok((id, Response::Pong)) => Some((*id, ResponseView::Pong)),
        Ok((id, Response::Delete)) => Some((*id, ResponseView::Delete)),
        Ok((id, Response::Put { context })) => {
            let Some((_, ResponseView::Put { context: range })) = &view else {
                panic!("lean reader gave {view:?} for {decoded:?}: {payload:?}");
            };
            assert_eq!(&payload[range.clone()], &context[..], "{payload:?}");
            Some((
                *id,
                ResponseView::Put {
                    context: range.clone(),
                },
            ))
        }
        Ok((
            id,
            Response::Get {
                found,
                siblings,
                context,
            },
        )) => {
            let Some((_, ResponseView::Get { context: range, .. })) = &view else {
                panic!("lean reader gave {view:?} for {decoded:?}: {payload:?}");
            };
            assert_eq!(&payload[range.clone()], &context[..], "{payload:?}");
            Some((
                *id,
                ResponseView::Get {
                    found: *found,
                    siblings: siblings.len(),
                    context: range.clone(),
                },
            ))
        }
        Ok((_, Response::Error { .. } | Response::RoutingTable(_))) | Err(_) => None,
    };
    assert_eq!(view, expected, "lean reader vs {decoded:?}: {payload:?}");
}

/// The contract between a hand-written decoder's answer and the generic
/// one's for the same payload.
fn judge<T: PartialEq + std::fmt::Debug>(
    hand: Result<T, ProtocolError>,
    generic: Result<T, ProtocolError>,
    id_of: fn(&T) -> u64,
    payload: &[u8],
) -> Verdict {
    match (hand, generic) {
        (Ok(hand), Ok(generic)) => {
            assert_eq!(hand, generic, "decoded differently: {payload:?}");
            Verdict::BothAccepted
        }
        (Ok(hand), Err(generic)) => {
            panic!(
                "hand-written reader accepted {hand:?}, generic refused ({generic:?}): {payload:?}"
            )
        }
        (Err(hand), Ok(generic)) => {
            assert_eq!(hand.id, Some(id_of(&generic)), "{payload:?}");
            stricter(&hand, payload)
        }
        (Err(hand), Err(generic)) => {
            assert_eq!(hand.id, generic.id, "{hand:?} vs {generic:?}: {payload:?}");
            if is_malformed(&generic) {
                assert!(
                    is_malformed(&hand),
                    "generic refused the structure, hand-written reader did not: {hand:?}, {payload:?}"
                );
                Verdict::BothRejected
            } else if is_malformed(&hand) {
                stricter(&hand, payload)
            } else {
                assert_eq!(hand.kind, generic.kind, "{payload:?}");
                Verdict::BothRejected
            }
        }
    }
}

/// The hand-written writer's frame for `frame`, without its length prefix.
fn payload_of(frame: &RequestFrame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(frame, &mut out);
    assert_eq!(
        u32::from_le_bytes(out[..FRAME_LENGTH_BYTES].try_into().unwrap()) as usize,
        out.len() - FRAME_LENGTH_BYTES
    );
    out.split_off(FRAME_LENGTH_BYTES)
}

/// `FlatBufferBuilder`'s frame for `frame`, without its length prefix.
fn generic_payload_of(frame: &RequestFrame) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new().encode_request_generic(frame, &mut out);
    assert_eq!(
        u32::from_le_bytes(out[..FRAME_LENGTH_BYTES].try_into().unwrap()) as usize,
        out.len() - FRAME_LENGTH_BYTES
    );
    out.split_off(FRAME_LENGTH_BYTES)
}

/// What `request` decodes to when its checks pass: a put's empty context
/// travels as none.
fn normalized(request: &Request) -> Request {
    match request {
        Request::Put {
            key,
            value,
            context,
            quorum,
        } => Request::Put {
            key: key.clone(),
            value: value.clone(),
            context: context.clone().filter(|context| !context.is_empty()),
            quorum: *quorum,
        },
        other => other.clone(),
    }
}

/// The contract of the hand-written request writer for one frame, under
/// `limits`: written after `prefix` (requests are appended to a
/// connection's output, and alignment is relative to the flatbuffer), its
/// frame is one whole frame; the three ways in are byte for byte the same;
/// both readers decode it to the same value or error, never meeting a
/// stricter check; that is what the builder's frame decodes to; and, when
/// accepted, it is the input.
fn check_written_request(frame: &RequestFrame, prefix: &[u8], limits: &Limits) {
    let mut written = prefix.to_vec();
    encode_request(frame, &mut written);
    let mut by_ref = prefix.to_vec();
    encode_request_ref(
        frame.id,
        frame.epoch,
        &frame.request.borrowed(),
        &mut by_ref,
    );
    assert_eq!(written, by_ref);
    let mut by_encoder = prefix.to_vec();
    Encoder::new().encode_request(frame, &mut by_encoder);
    assert_eq!(written, by_encoder);
    let wire_limits = Limits {
        frame_bytes_max: u32::MAX as usize,
        ..Limits::default()
    };
    let payload = single_frame(&written[prefix.len()..], &wire_limits);
    let generic_payload = generic_payload_of(frame);
    for payload in [&payload[..], &generic_payload[..]] {
        assert_ne!(
            compare(payload, limits),
            Verdict::Stricter,
            "a writer's frame met a stricter check: {frame:?}"
        );
    }
    let hand = decode_request(payload.clone(), limits);
    assert_eq!(hand, decode_request_generic(payload, limits));
    assert_eq!(
        hand,
        decode_request_generic(Bytes::from(generic_payload), limits),
        "the builder's frame decodes differently: {frame:?}"
    );
    if let Ok(decoded) = hand {
        assert_eq!(
            decoded,
            RequestFrame {
                request: normalized(&frame.request),
                ..frame.clone()
            }
        );
    }
}

// ---------------------------------------------------------------------------
// Requests from the encoder.

fn bytes_strategy(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Quorum values: defaults, valid counts, `R_ALL`, and out of range.
fn quorum_value() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![
        Just(None),
        (1u8..=16).prop_map(Some),
        Just(Some(R_ALL)),
        any::<u8>().prop_map(|value| Some(value).filter(|&value| value != 0)),
    ]
}

fn request_strategy() -> impl Strategy<Value = Request> {
    let quorum = || {
        (
            quorum_value(),
            quorum_value(),
            quorum_value(),
            quorum_value(),
        )
            .prop_map(|(r, w, dw, n)| Quorum { r, w, dw, n })
    };
    prop_oneof![
        Just(Request::Ping),
        Just(Request::GetRoutingTable),
        (bytes_strategy(80), quorum()).prop_map(|(key, quorum)| Request::Get {
            key,
            quorum: Quorum {
                w: None,
                dw: None,
                ..quorum
            }
        }),
        (
            bytes_strategy(80),
            bytes_strategy(1100),
            proptest::option::of(bytes_strategy(80)),
            quorum()
        )
            .prop_map(|(key, value, context, quorum)| Request::Put {
                key,
                value,
                context,
                quorum: Quorum { r: None, ..quorum }
            }),
        (bytes_strategy(80), bytes_strategy(80), quorum()).prop_map(|(key, context, quorum)| {
            Request::Delete {
                key,
                context,
                quorum: Quorum { r: None, ..quorum },
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encoded_requests_decode_the_same_both_ways(
        id in any::<u64>(),
        epoch in any::<u64>(),
        request in request_strategy(),
    ) {
        let frame = RequestFrame { id, epoch, request };
        let payload = payload_of(&frame);
        for limits in [small_limits(), Limits::default()] {
            for payload in [&payload, &generic_payload_of(&frame)] {
                let verdict = compare(payload, &limits);
                prop_assert_ne!(verdict, Verdict::Stricter, "an encoder frame met a stricter check");
            }
        }
        // Within the default limits, every generated request that the
        // semantic checks allow round-trips.
        if let Ok(decoded) = decode_request(Bytes::from(payload), &Limits::default()) {
            prop_assert_eq!(decoded.id, id);
            prop_assert_eq!(decoded.epoch, epoch);
        }
    }
}

/// Ids and epochs: the defaults the writer leaves out, the extremes, anything.
fn id_value() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>()]
}

/// Keys around the bounds: empty, short, near and past the default
/// maximum.
fn key_strategy() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        bytes_strategy(40),
        (KEY_BYTES_MAX - 2..=KEY_BYTES_MAX + 1).prop_map(|length| Bytes::from(vec![0x6b; length])),
    ]
}

/// Contexts: absent, empty, or bytes (past the small limits' bound too).
fn context_strategy() -> impl Strategy<Value = Option<Bytes>> {
    prop_oneof![
        Just(None),
        Just(Some(Bytes::new())),
        bytes_strategy(100).prop_map(Some)
    ]
}

fn written_request_strategy() -> impl Strategy<Value = Request> {
    let quorum = || {
        (
            quorum_value(),
            quorum_value(),
            quorum_value(),
            quorum_value(),
        )
            .prop_map(|(r, w, dw, n)| Quorum { r, w, dw, n })
    };
    prop_oneof![
        Just(Request::Ping),
        Just(Request::GetRoutingTable),
        (key_strategy(), quorum()).prop_map(|(key, quorum)| Request::Get {
            key,
            quorum: Quorum {
                w: None,
                dw: None,
                ..quorum
            }
        }),
        (
            key_strategy(),
            prop_oneof![Just(Bytes::new()), bytes_strategy(1100)],
            context_strategy(),
            quorum()
        )
            .prop_map(|(key, value, context, quorum)| Request::Put {
                key,
                value,
                context,
                quorum: Quorum { r: None, ..quorum }
            }),
        (key_strategy(), context_strategy(), quorum()).prop_map(|(key, context, quorum)| {
            Request::Delete {
                key,
                context: context.unwrap_or_default(),
                quorum: Quorum { r: None, ..quorum },
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hand_written_requests_decode_like_builder_ones(
        id in id_value(),
        epoch in id_value(),
        request in written_request_strategy(),
        prefix in proptest::collection::vec(any::<u8>(), 0..9),
    ) {
        let frame = RequestFrame { id, epoch, request };
        for limits in [Limits::default(), small_limits()] {
            check_written_request(&frame, &prefix, &limits);
        }
    }
}

#[test]
fn hand_written_request_edge_cases_decode_like_builder_ones() {
    let limits = Limits::default();
    let all = Quorum {
        r: Some(R_ALL),
        w: Some(REPLICAS_MAX),
        dw: Some(REPLICAS_MAX),
        n: Some(REPLICAS_MAX),
    };
    let ones = Quorum {
        r: Some(1),
        w: Some(1),
        dw: Some(1),
        n: Some(1),
    };
    // Each quorum field alone, so a vtable ends at each slot in turn.
    let single = [
        Quorum {
            r: Some(2),
            ..Quorum::DEFAULT
        },
        Quorum {
            w: Some(2),
            ..Quorum::DEFAULT
        },
        Quorum {
            dw: Some(2),
            ..Quorum::DEFAULT
        },
        Quorum {
            n: Some(2),
            ..Quorum::DEFAULT
        },
    ];
    let keys = [
        Bytes::new(),
        Bytes::from_static(b"k"),
        Bytes::from(vec![0xff; limits.key_bytes_max]),
        Bytes::from(vec![0xff; limits.key_bytes_max + 1]),
    ];
    let contexts = [None, Some(Bytes::new()), Some(Bytes::from_static(b"ctx"))];
    let values = [Bytes::new(), Bytes::from_static(b"v")];
    // The largest put the default limits allow, and one byte more of each.
    let largest = |extra_key, extra_value, extra_context| Request::Put {
        key: Bytes::from(vec![0xee; limits.key_bytes_max + extra_key]),
        value: Bytes::from(vec![0x5a; limits.value_bytes_max + extra_value]),
        context: Some(Bytes::from(vec![
            1;
            limits.context_bytes_max + extra_context
        ])),
        quorum: Quorum { r: None, ..all },
    };
    let mut requests = vec![
        Request::Ping,
        Request::GetRoutingTable,
        largest(0, 0, 0),
        largest(1, 0, 0),
        largest(0, 1, 0),
        largest(0, 0, 1),
    ];
    for key in &keys {
        for quorum in [Quorum::DEFAULT, all, ones].iter().chain(&single) {
            requests.push(Request::Get {
                key: key.clone(),
                quorum: Quorum {
                    w: None,
                    dw: None,
                    ..*quorum
                },
            });
            for context in &contexts {
                let quorum = Quorum { r: None, ..*quorum };
                for value in &values {
                    requests.push(Request::Put {
                        key: key.clone(),
                        value: value.clone(),
                        context: context.clone(),
                        quorum,
                    });
                }
                requests.push(Request::Delete {
                    key: key.clone(),
                    context: context.clone().unwrap_or_default(),
                    quorum,
                });
            }
        }
    }
    let mut accepted = 0;
    for request in requests {
        for (id, epoch) in [(0, 0), (1, 0), (0, 1), (u64::MAX, u64::MAX), (7, 1 << 63)] {
            let frame = RequestFrame {
                id,
                epoch,
                request: request.clone(),
            };
            for prefix in [&b""[..], b"x", b"abc", b"0123456"] {
                check_written_request(&frame, prefix, &limits);
            }
            accepted +=
                usize::from(decode_request(Bytes::from(payload_of(&frame)), &limits).is_ok());
        }
    }
    // Refused: the empty and over-long keys, and the largest put's three
    // one-byte-more variants; the other 143 requests decode, with each of
    // the 5 ids.
    assert_eq!(accepted, 143 * 5);
}

#[test]
fn hand_written_requests_are_no_larger_than_builder_ones() {
    let frames = [
        Request::Ping,
        Request::Get {
            key: Bytes::from_static(b"key:000000000001"),
            quorum: Quorum::DEFAULT,
        },
        Request::Put {
            key: Bytes::from_static(b"key:000000000001"),
            value: Bytes::from(vec![1; 100]),
            context: None,
            quorum: Quorum::DEFAULT,
        },
        Request::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            context: Some(Bytes::from_static(b"context")),
            quorum: Quorum {
                w: Some(2),
                dw: Some(1),
                n: Some(3),
                r: None,
            },
        },
        Request::Delete {
            key: Bytes::from_static(b"k"),
            context: Bytes::from_static(b"context"),
            quorum: Quorum::DEFAULT,
        },
    ];
    for request in frames {
        let frame = RequestFrame {
            id: 12345,
            epoch: 0,
            request,
        };
        let (hand, generic) = (payload_of(&frame), generic_payload_of(&frame));
        assert!(
            hand.len() <= generic.len(),
            "{} vs {} bytes: {frame:?}",
            hand.len(),
            generic.len()
        );
    }
}

#[test]
fn borrowed_requests_match_their_owned_form() {
    let key = b"user:42".to_vec();
    let value = vec![9u8; 33];
    let quorum = Quorum {
        w: Some(2),
        ..Quorum::DEFAULT
    };
    let borrowed = RequestRef::Put {
        key: &key,
        value: &value,
        context: Some(b"ctx"),
        quorum,
    };
    let owned = Request::Put {
        key: Bytes::from(key.clone()),
        value: Bytes::from(value.clone()),
        context: Some(Bytes::from_static(b"ctx")),
        quorum,
    };
    assert_eq!(owned.borrowed(), borrowed);
    let mut out = Vec::new();
    encode_request_ref(3, 4, &borrowed, &mut out);
    let decoded =
        decode_request(single_frame(&out, &Limits::default()), &Limits::default()).unwrap();
    assert_eq!(
        decoded,
        RequestFrame {
            id: 3,
            epoch: 4,
            request: owned
        }
    );
}

// ---------------------------------------------------------------------------
// Deliberate differences.

/// Position of the vtable of the table at `table`.
fn vtable_of(payload: &[u8], table: usize) -> usize {
    let soffset = i32::from_le_bytes(payload[table..table + 4].try_into().unwrap());
    (table as i64 - soffset as i64) as usize
}

fn u16_at(payload: &[u8], position: usize) -> usize {
    u16::from_le_bytes([payload[position], payload[position + 1]]) as usize
}

fn u32_at(payload: &[u8], position: usize) -> usize {
    u32::from_le_bytes(payload[position..position + 4].try_into().unwrap()) as usize
}

/// The root table's position and the body table's position.
fn tables_of(payload: &[u8]) -> (usize, usize) {
    let root = u32_at(payload, 0);
    let vtable = vtable_of(payload, root);
    let body_field = root + u16_at(payload, vtable + 10);
    (root, body_field + u32_at(payload, body_field))
}

fn get_frame() -> Vec<u8> {
    payload_of(&RequestFrame {
        id: 77,
        epoch: 5,
        request: Request::Get {
            key: Bytes::from_static(b"user:1"),
            quorum: Quorum {
                r: Some(2),
                ..Quorum::DEFAULT
            },
        },
    })
}

#[test]
fn deliberately_stricter_field_outside_the_inline_size() {
    // The root table claims 4 inline bytes (its soffset only): its id, epoch
    // and body then lie outside it. The generic verifier checks only that a
    // field lies inside the frame.
    let mut payload = get_frame();
    let (root, _) = tables_of(&payload);
    let vtable = vtable_of(&payload, root);
    payload[vtable + 2..vtable + 4].copy_from_slice(&4u16.to_le_bytes());
    let limits = Limits::default();
    assert!(decode_request_generic(Bytes::from(payload.clone()), &limits).is_ok());
    let error = decode_request(Bytes::from(payload.clone()), &limits).unwrap_err();
    assert!(is_malformed(&error), "{error:?}");
    // The header itself is intact: the id is still recovered.
    assert_eq!(error.id, Some(77));
    assert_eq!(compare(&payload, &limits), Verdict::Stricter);
}

#[test]
fn deliberately_stricter_inline_size_beyond_the_frame() {
    let mut payload = get_frame();
    let (_, body) = tables_of(&payload);
    let vtable = vtable_of(&payload, body);
    payload[vtable + 2..vtable + 4].copy_from_slice(&0xfff0u16.to_le_bytes());
    let limits = Limits::default();
    assert!(decode_request_generic(Bytes::from(payload.clone()), &limits).is_ok());
    assert_eq!(compare(&payload, &limits), Verdict::Stricter);
}

#[test]
fn deliberately_stricter_vtable_without_its_header() {
    // A ping body whose vtable claims 0 bytes: no fields, which a ping does
    // not need, so the generic verifier accepts it; no builder writes it.
    let mut payload = payload_of(&RequestFrame {
        id: 9,
        epoch: 0,
        request: Request::Ping,
    });
    let (_, body) = tables_of(&payload);
    let vtable = vtable_of(&payload, body);
    payload[vtable..vtable + 2].copy_from_slice(&0u16.to_le_bytes());
    let limits = Limits::default();
    assert_eq!(
        decode_request_generic(Bytes::from(payload.clone()), &limits)
            .unwrap()
            .request,
        Request::Ping
    );
    let error = decode_request(Bytes::from(payload.clone()), &limits).unwrap_err();
    assert_eq!(error.id, Some(9));
    assert_eq!(error.code(), ErrorCode::BadRequest);
    assert_eq!(compare(&payload, &limits), Verdict::Stricter);
}

#[test]
fn unknown_and_absent_bodies_match_the_generic_path() {
    let mut payload = get_frame();
    let (root, _) = tables_of(&payload);
    let vtable = vtable_of(&payload, root);
    let tag = root + u16_at(&payload, vtable + 8);
    for value in [0u8, 6, 77, 255] {
        payload[tag] = value;
        let error = decode_request(Bytes::from(payload.clone()), &Limits::default()).unwrap_err();
        assert_eq!(error.kind, ProtocolErrorKind::UnknownBody(value));
        assert_eq!(error.id, Some(77));
        compare(&payload, &Limits::default());
    }
    // The tag's slot emptied while the value stays: an inconsistent union.
    let mut payload = get_frame();
    payload[vtable + 8..vtable + 10].copy_from_slice(&0u16.to_le_bytes());
    let error = decode_request(Bytes::from(payload.clone()), &Limits::default()).unwrap_err();
    assert!(is_malformed(&error));
    assert_eq!(error.id, Some(77));
    assert_eq!(compare(&payload, &Limits::default()), Verdict::BothRejected);
}

#[test]
fn apparent_size_bound_matches_the_generic_path() {
    // A put whose context points at its value: the apparent size counts the
    // value twice. Around the bound, both decoders flip at the same limit.
    let mut payload = payload_of(&RequestFrame {
        id: 3,
        epoch: 0,
        request: Request::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![7u8; 40]),
            context: Some(Bytes::from(vec![1u8; 8])),
            quorum: Quorum::DEFAULT,
        },
    });
    let (_, body) = tables_of(&payload);
    let vtable = vtable_of(&payload, body);
    let value_field = body + u16_at(&payload, vtable + 6);
    let context_field = body + u16_at(&payload, vtable + 8);
    let value_vector = value_field + u32_at(&payload, value_field);
    let offset = (value_vector - context_field) as u32;
    payload[context_field..context_field + 4].copy_from_slice(&offset.to_le_bytes());
    let mut flips = 0;
    let mut last = None;
    for frame_bytes_max in payload.len()..payload.len() + 80 {
        let limits = Limits {
            frame_bytes_max,
            ..small_limits()
        };
        let verdict = compare(&payload, &limits);
        let accepted = decode_request(Bytes::from(payload.clone()), &limits).is_ok();
        if last.is_some_and(|last| last != accepted) {
            flips += 1;
        }
        last = Some(accepted);
        assert_ne!(verdict, Verdict::Stricter);
    }
    assert_eq!(flips, 1, "the bound was not crossed in the range tried");
}

// ---------------------------------------------------------------------------
// Mutation fuzzing.

#[path = "support/xorshift.rs"]
mod xorshift;
use xorshift::Rng;

/// Domain draws on top of the shared generator.
impl Rng {
    fn bytes(&mut self, max: usize) -> Bytes {
        let length = self.below(max + 1);
        (0..length).map(|_| self.next() as u8).collect()
    }

    fn quorum_value(&mut self) -> Option<u8> {
        match self.below(4) {
            0 => None,
            1 => Some(1 + self.below(16) as u8),
            2 => Some(R_ALL),
            _ => Some(self.next() as u8).filter(|&value| value != 0),
        }
    }

    fn request(&mut self) -> RequestFrame {
        let key_bytes_max = if self.below(8) == 0 { 80 } else { 20 };
        let key = self.bytes(key_bytes_max);
        let request = match self.below(5) {
            0 => Request::Ping,
            1 => Request::GetRoutingTable,
            2 => Request::Get {
                key,
                quorum: Quorum {
                    r: self.quorum_value(),
                    n: self.quorum_value(),
                    ..Quorum::DEFAULT
                },
            },
            3 => Request::Put {
                key,
                value: {
                    let value_bytes_max = if self.below(8) == 0 { 1100 } else { 40 };
                    self.bytes(value_bytes_max)
                },
                context: Some(self.bytes(70)).filter(|_| self.below(2) == 0),
                quorum: Quorum {
                    r: None,
                    w: self.quorum_value(),
                    dw: self.quorum_value(),
                    n: self.quorum_value(),
                },
            },
            _ => Request::Delete {
                key,
                context: self.bytes(70),
                quorum: Quorum {
                    r: None,
                    w: self.quorum_value(),
                    dw: self.quorum_value(),
                    n: self.quorum_value(),
                },
            },
        };
        RequestFrame {
            id: self.next(),
            epoch: self.next() >> self.below(64),
            request,
        }
    }

    /// A random reply (routing tables included), written by either encoder.
    fn response_payload(&mut self) -> Vec<u8> {
        let response = match self.below(6) {
            0 => Response::Pong,
            1 => Response::Delete,
            2 => Response::Put {
                context: self.bytes(70),
            },
            3 | 4 => Response::Get {
                found: self.below(2) == 0,
                siblings: (0..self.below(7))
                    .map(|_| Sibling {
                        tombstone: self.below(4) == 0,
                        value: {
                            let value_bytes_max = if self.below(8) == 0 { 1100 } else { 40 };
                            self.bytes(value_bytes_max)
                        },
                    })
                    .collect(),
                context: self.bytes(70),
            },
            _ => Response::Error {
                code: ErrorCode::ALL[self.below(ErrorCode::ALL.len())],
                message: {
                    let length = if self.below(8) == 0 { 140 } else { 30 };
                    (0..self.below(length + 1))
                        .map(|_| ['a', 'é', '€', '\u{1F600}'][self.below(4)])
                        .collect()
                },
                acks: self.next() as u32,
                routing: Some(routing_table()).filter(|_| self.below(4) == 0),
            },
        };
        let id = self.next();
        let mut out = Vec::new();
        let mut encoder = Encoder::new();
        if self.below(2) == 0 {
            encoder.encode_response(id, &response, &mut out);
        } else {
            encoder.encode_response_generic(id, &response, &mut out);
        }
        out.split_off(FRAME_LENGTH_BYTES)
    }

    fn payload(&mut self, kind: Kind) -> Vec<u8> {
        match kind {
            Kind::Request => {
                let frame = self.request();
                if self.below(2) == 0 {
                    payload_of(&frame)
                } else {
                    generic_payload_of(&frame)
                }
            }
            Kind::Response => self.response_payload(),
        }
    }

    /// A u32 worth writing over an offset: small, near the frame's size,
    /// negative as an soffset, or anything.
    fn offset_value(&mut self, length: usize, at: usize) -> u32 {
        match self.below(6) {
            0 => self.below(64) as u32,
            1 => (length as u32).wrapping_sub(self.below(16) as u32),
            2 => (self.below(length) as u32).wrapping_sub(at as u32),
            3 => (at as u32).wrapping_sub(self.below(length) as u32),
            4 => u32::MAX - self.below(16) as u32,
            _ => self.next() as u32,
        }
    }
}

/// One random mutation of a valid payload, or fully random bytes.
fn mutate(rng: &mut Rng, kind: Kind, payload: &mut Vec<u8>) {
    let length = payload.len().max(1);
    match rng.below(11) {
        // Bit flip.
        0 => {
            let at = rng.below(length).min(payload.len().saturating_sub(1));
            if let Some(byte) = payload.get_mut(at) {
                *byte ^= 1 << rng.below(8);
            }
        }
        // Byte overwrite.
        1 => {
            if let Some(byte) = payload.get_mut(rng.below(length)) {
                *byte = rng.next() as u8;
            }
        }
        // Truncation.
        2 => payload.truncate(rng.below(length)),
        // Extension.
        3 => {
            let extra = rng.below(32);
            payload.extend((0..extra).map(|_| rng.next() as u8));
        }
        // An offset (uoffset, soffset or vector length) pointed anywhere.
        4 | 5 => {
            if payload.len() >= 4 {
                let at = rng.below(payload.len() / 4) * 4;
                let value = rng.offset_value(payload.len(), at);
                payload[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        // A vtable entry (or length, or inline size) changed.
        6 => {
            if payload.len() >= 2 {
                let at = rng.below(payload.len() / 2) * 2;
                let value = match rng.below(3) {
                    0 => rng.below(24) as u16,
                    1 => (payload.len() as u16).wrapping_sub(rng.below(8) as u16),
                    _ => rng.next() as u16,
                };
                payload[at..at + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
        // A table's soffset pointed at another table's vtable (or any
        // even position): vtables overlapping.
        7 => {
            if payload.len() >= 8 {
                let (root, _) = tables_or_zero(kind, payload);
                let table = [root, rng.below(payload.len() / 4) * 4][rng.below(2)];
                let target = rng.below(payload.len() / 2) * 2;
                if table + 4 <= payload.len() {
                    let soffset = table as i64 - target as i64;
                    payload[table..table + 4].copy_from_slice(&(soffset as i32).to_le_bytes());
                }
            }
        }
        // The union tag changed.
        8 => {
            if let Some(tag) = tag_position(kind, payload) {
                payload[tag] = match rng.below(3) {
                    0 => rng.below(7) as u8,
                    _ => rng.next() as u8,
                };
            }
        }
        // Fully random bytes, sometimes behind a plausible root offset.
        9 => {
            *payload = (0..rng.below(96)).map(|_| rng.next() as u8).collect();
            if payload.len() >= 8 && rng.below(2) == 0 {
                let root = (rng.below(payload.len() / 4) * 4) as u32;
                payload[..4].copy_from_slice(&root.to_le_bytes());
            }
        }
        // Two frames spliced.
        _ => {
            let at = rng.below(length);
            let other = rng.payload(kind);
            let from = rng.below(other.len());
            payload.truncate(at);
            payload.extend_from_slice(&other[from..]);
        }
    }
}

/// Which root table a payload holds: its union's tag and value slots.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Request,
    Response,
}

impl Kind {
    fn tag_slot(self) -> usize {
        match self {
            Kind::Request => 8,
            Kind::Response => 6,
        }
    }

    fn body_slot(self) -> usize {
        self.tag_slot() + 2
    }
}

/// The root table and body positions if they can be found, else zeros.
fn tables_or_zero(kind: Kind, payload: &[u8]) -> (usize, usize) {
    let root = get_u32(payload, 0);
    let body = root.and_then(|root| {
        let vtable = vtable_checked(payload, root)?;
        let body_field = root + get_u16(payload, vtable + kind.body_slot())?;
        Some(body_field + get_u32(payload, body_field)?)
    });
    (root.unwrap_or(0), body.unwrap_or(0))
}

fn tag_position(kind: Kind, payload: &[u8]) -> Option<usize> {
    let root = get_u32(payload, 0)?;
    let vtable = vtable_checked(payload, root)?;
    let tag = root + get_u16(payload, vtable + kind.tag_slot())?;
    payload.get(tag).map(|_| tag)
}

fn get_u16(payload: &[u8], position: usize) -> Option<usize> {
    let bytes = payload.get(position..position.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]) as usize)
}

fn get_u32(payload: &[u8], position: usize) -> Option<usize> {
    let bytes = payload.get(position..position.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
}

fn vtable_checked(payload: &[u8], table: usize) -> Option<usize> {
    let soffset = get_u32(payload, table)? as u32 as i32;
    usize::try_from(table as i64 - soffset as i64).ok()
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// Mutates encoder frames of `kind` and checks each with `compare`, for
/// `DYNAKV_DIFF_ITERATIONS` iterations or `DYNAKV_DIFF_SECONDS` seconds.
fn fuzz(kind: Kind, compare: fn(&[u8], &Limits) -> Verdict) {
    let seed: u64 = env("DYNAKV_DIFF_SEED").unwrap_or(0xd1ff_5eed);
    let deadline =
        env::<u64>("DYNAKV_DIFF_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let iterations: u64 = match deadline {
        Some(_) => u64::MAX,
        None => env("DYNAKV_DIFF_ITERATIONS").unwrap_or(20_000),
    };
    let mut rng = Rng(seed | 1);
    let mut counts = [0u64; 3];
    let mut done = 0;
    while done < iterations {
        if done % 1024 == 0 && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let mut payload = rng.payload(kind);
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, kind, &mut payload);
        }
        // Sometimes a frame bound right at the frame, so the size and
        // apparent-size bounds are reached.
        let limits = match rng.below(4) {
            0 => Limits {
                frame_bytes_max: payload.len() + rng.below(64),
                ..small_limits()
            },
            1 => Limits::default(),
            _ => small_limits(),
        };
        let outcome = std::panic::catch_unwind(|| compare(&payload, &limits));
        let Ok(verdict) = outcome else {
            panic!("iteration {done} failed (above); replay with DYNAKV_DIFF_SEED={seed}");
        };
        counts[verdict as usize] += 1;
        done += 1;
    }
    eprintln!(
        "differential fuzz ({kind:?}): {done} iterations, seed {seed:#x}: {} both accepted, {} both rejected, {} stricter",
        counts[0], counts[1], counts[2]
    );
    // Mutants that stay valid exercise the equality of accepted frames,
    // and rejected ones the error agreement; a run without both proved
    // little.
    if done >= 1000 {
        assert!(counts[0] > done / 100, "{counts:?}");
        assert!(counts[1] > done / 10, "{counts:?}");
    }
}

#[test]
fn mutated_frames_decode_the_same_or_stricter() {
    fuzz(Kind::Request, compare);
}

// ---------------------------------------------------------------------------
// Replies.

fn routing_table() -> RoutingTable {
    RoutingTable {
        epoch: 42,
        q: 2,
        n_val: 1,
        nodes: vec![RoutingNode {
            id: 1,
            addr: [127, 0, 0, 1].into(),
            client_port: 7000,
            shard_ports: vec![7001],
            weight: 1,
        }],
        partitions: vec![vec![(0, 0)], vec![(0, 0)]],
    }
}

fn response_strategy() -> impl Strategy<Value = Response> {
    let sibling = (any::<bool>(), bytes_strategy(300))
        .prop_map(|(tombstone, value)| Sibling { tombstone, value });
    prop_oneof![
        Just(Response::Pong),
        Just(Response::Delete),
        bytes_strategy(200).prop_map(|context| Response::Put { context }),
        (
            any::<bool>(),
            proptest::collection::vec(sibling, 0..12),
            bytes_strategy(200)
        )
            .prop_map(|(found, siblings, context)| Response::Get {
                found,
                siblings,
                context
            }),
        (
            proptest::sample::select(ErrorCode::ALL.to_vec()),
            "\\PC{0,60}",
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(code, message, acks, routed)| Response::Error {
                code,
                message,
                acks,
                routing: Some(routing_table()).filter(|_| routed),
            }),
    ]
}

/// The one frame in `wire`, through `FrameDecoder` (so the length prefix is
/// checked too).
fn single_frame(wire: &[u8], limits: &Limits) -> Bytes {
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let mut buffer = BytesMut::from(wire);
    let frame = decoder.decode(&mut buffer).unwrap().expect("a whole frame");
    assert!(buffer.is_empty(), "bytes after the frame");
    frame
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hand_written_replies_decode_like_builder_ones(
        id in any::<u64>(),
        response in response_strategy(),
        prefix in proptest::collection::vec(any::<u8>(), 0..9),
    ) {
        let limits = Limits {
            siblings_max: 16,
            ..Limits::default()
        };
        let mut encoder = Encoder::new();
        // Written after other bytes, as replies are appended to a
        // connection's output: alignment is relative to the flatbuffer.
        let mut hand = prefix.clone();
        encoder.encode_response(id, &response, &mut hand);
        let mut generic = Vec::new();
        encoder.encode_response_generic(id, &response, &mut generic);
        // Both writers' frames, through both readers: the same value, and
        // never a stricter check.
        for wire in [&hand[prefix.len()..], &generic[..]] {
            let frame = single_frame(wire, &limits);
            let verdict = compare_responses(&frame, &limits);
            prop_assert_eq!(verdict, Verdict::BothAccepted);
            let decoded = decode_response(frame.clone(), &limits);
            prop_assert_eq!(&decoded, &decode_response_generic(frame, &limits));
            prop_assert_eq!(decoded, Ok((id, response.clone())));
        }
    }
}

#[test]
fn mutated_replies_decode_the_same_or_stricter() {
    fuzz(Kind::Response, compare_responses);
}

/// A get reply from the hand-written writer, without its length prefix.
fn get_reply_payload(siblings: usize) -> Vec<u8> {
    let response = Response::Get {
        found: true,
        siblings: (0..siblings)
            .map(|index| Sibling {
                tombstone: index % 2 == 1,
                value: Bytes::from(vec![index as u8; 3]),
            })
            .collect(),
        context: Bytes::from_static(b"ctx"),
    };
    let mut out = Vec::new();
    Encoder::new().encode_response(31, &response, &mut out);
    out.split_off(FRAME_LENGTH_BYTES)
}

/// The root table's position and the reply table's position in a response.
fn response_tables_of(payload: &[u8]) -> (usize, usize) {
    let root = u32_at(payload, 0);
    let vtable = vtable_of(payload, root);
    let body_field = root + u16_at(payload, vtable + Kind::Response.body_slot());
    (root, body_field + u32_at(payload, body_field))
}

#[test]
fn deliberately_stricter_reply_field_outside_the_inline_size() {
    // The GetReply claims 4 inline bytes: its fields lie outside it, which
    // the generic verifier does not check.
    let mut payload = get_reply_payload(2);
    let (_, body) = response_tables_of(&payload);
    let vtable = vtable_of(&payload, body);
    payload[vtable + 2..vtable + 4].copy_from_slice(&4u16.to_le_bytes());
    let limits = Limits::default();
    assert!(decode_response_generic(Bytes::from(payload.clone()), &limits).is_ok());
    let error = decode_response(Bytes::from(payload.clone()), &limits).unwrap_err();
    assert!(is_malformed(&error), "{error:?}");
    assert_eq!(error.id, Some(31));
    assert_eq!(compare_responses(&payload, &limits), Verdict::Stricter);
}

#[test]
fn sibling_count_bounds_match_the_generic_path() {
    // Tables bound: 8 + siblings_max + nodes_max + partitions_max = 12.
    let limits = Limits {
        siblings_max: 4,
        nodes_max: 0,
        partitions_max: 0,
        ..Limits::default()
    };
    for (siblings, semantic) in [(4, false), (5, true), (10, true), (11, false), (40, false)] {
        let payload = get_reply_payload(siblings);
        let verdict = compare_responses(&payload, &limits);
        let error = decode_response(Bytes::from(payload), &limits).err();
        match (siblings, error) {
            (4, None) => assert_eq!(verdict, Verdict::BothAccepted),
            (_, Some(error)) if semantic => {
                assert_eq!(verdict, Verdict::BothRejected);
                assert_eq!(
                    error.kind,
                    ProtocolErrorKind::TooManySiblings {
                        count: siblings,
                        max: 4
                    }
                );
            }
            // Beyond the table bound the generic verifier fails first.
            (_, Some(error)) => {
                assert_eq!(verdict, Verdict::BothRejected);
                assert!(is_malformed(&error), "{error:?}");
                assert_eq!(error.id, Some(31));
            }
            (siblings, None) => panic!("{siblings} siblings accepted"),
        }
    }
}

#[test]
fn error_message_strings_are_checked_like_the_generic_path() {
    let response = Response::Error {
        code: ErrorCode::Timeout,
        message: "only 1 of 2".to_owned(),
        acks: 1,
        routing: None,
    };
    let mut out = Vec::new();
    Encoder::new().encode_response(5, &response, &mut out);
    let payload = out.split_off(FRAME_LENGTH_BYTES);
    let limits = Limits::default();
    assert_eq!(
        decode_response(Bytes::from(payload.clone()), &limits),
        Ok((5, response))
    );
    // The hand-written writer puts the message last: its NUL ends the frame.
    assert_eq!(payload.last(), Some(&0));
    let mut unterminated = payload.clone();
    *unterminated.last_mut().unwrap() = b'!';
    let mut not_utf8 = payload.clone();
    let at = unterminated.len() - 2;
    not_utf8[at] = 0xff;
    let mut too_long = payload;
    too_long.pop();
    for bad in [unterminated, not_utf8, too_long] {
        assert_eq!(compare_responses(&bad, &limits), Verdict::BothRejected);
        let error = decode_response(Bytes::from(bad), &limits).unwrap_err();
        assert!(is_malformed(&error), "{error:?}");
        assert_eq!(error.id, Some(5));
    }
    // An unknown code decodes as the generic path decodes it.
    let unknown = Response::Error {
        code: ErrorCode::Internal,
        message: "unknown error code 99: x".to_owned(),
        acks: 0,
        routing: None,
    };
    let mut out = Vec::new();
    Encoder::new().encode_response(6, &unknown, &mut out);
    let mut payload = out.split_off(FRAME_LENGTH_BYTES);
    let (_, body) = response_tables_of(&payload);
    let vtable = vtable_of(&payload, body);
    let code = body + u16_at(&payload, vtable + 4);
    payload[code..code + 2].copy_from_slice(&99u16.to_le_bytes());
    assert_eq!(compare_responses(&payload, &limits), Verdict::BothAccepted);
}

#[test]
fn routing_replies_take_the_generic_path() {
    let limits = Limits::default();
    for response in [
        Response::RoutingTable(routing_table()),
        Response::Error {
            code: ErrorCode::WrongOwner,
            message: "moved".to_owned(),
            acks: 0,
            routing: Some(routing_table()),
        },
    ] {
        let mut out = Vec::new();
        Encoder::new().encode_response(8, &response, &mut out);
        let payload = out.split_off(FRAME_LENGTH_BYTES);
        assert_eq!(compare_responses(&payload, &limits), Verdict::BothAccepted);
        assert_eq!(
            decode_response(Bytes::from(payload), &limits),
            Ok((8, response))
        );
    }
}

#[test]
fn largest_get_reply_decodes_like_the_builder_one() {
    // Two maximal siblings: the frame bound is sized for this.
    let limits = Limits::default();
    let response = Response::Get {
        found: true,
        siblings: vec![
            Sibling {
                tombstone: false,
                value: Bytes::from(vec![0xa5; limits.value_bytes_max]),
            },
            Sibling {
                tombstone: false,
                value: Bytes::from(vec![0x5a; limits.value_bytes_max]),
            },
        ],
        context: Bytes::from(vec![1; limits.context_bytes_max]),
    };
    let mut encoder = Encoder::new();
    let mut hand = Vec::new();
    encoder.encode_response(1, &response, &mut hand);
    let mut generic = Vec::new();
    encoder.encode_response_generic(1, &response, &mut generic);
    assert!(
        hand.len() <= generic.len() + 64,
        "{} vs {}",
        hand.len(),
        generic.len()
    );
    let decoded = decode_response(single_frame(&hand, &limits), &limits).unwrap();
    assert_eq!(decoded, (1, response));
}

#[test]
fn routing_slot_counts_toward_the_apparent_size() {
    // Found by the response fuzzer: an error reply whose vtable was
    // lengthened to 44 bytes, so its (zero) routing slot lies inside it.
    // The generic verifier counts that slot's 2 bytes toward the apparent
    // size; so must the hand-written reader, or it accepts a frame one
    // bound too late.
    let payload: [u8; 85] = [
        28, 0, 0, 0, 10, 0, 20, 0, 4, 0, 16, 0, 12, 0, 44, 0, 16, 0, 12, 0, 4, 0, 8, 0, 0, 0, 0, 0,
        24, 0, 0, 0, 143, 159, 45, 239, 20, 244, 156, 12, 8, 0, 0, 0, 6, 0, 0, 0, 34, 0, 0, 0, 12,
        0, 0, 0, 37, 179, 172, 117, 13, 0, 0, 0, 16, 0, 0, 0, 240, 159, 152, 128, 226, 130, 172,
        195, 169, 240, 159, 152, 128, 226, 130, 172, 0,
    ];
    let mut verdicts = Vec::new();
    for frame_bytes_max in payload.len()..payload.len() + 64 {
        let limits = Limits {
            frame_bytes_max,
            ..small_limits()
        };
        verdicts.push(compare_responses(&payload, &limits));
    }
    // The bound is crossed inside the range tried: rejected below it,
    // accepted above.
    assert_eq!(verdicts.first(), Some(&Verdict::BothRejected));
    assert_eq!(verdicts.last(), Some(&Verdict::BothAccepted));
}

#[test]
fn lean_reader_agrees_at_the_limits() {
    // Get replies at and just past each bound the lean reader must apply
    // itself (siblings, a value, the context), and a miss: `check_inspect`
    // (inside `compare_responses`) holds it to `decode_response` for each.
    let limits = small_limits();
    let get = |found: bool, siblings: usize, value: usize, context: usize| Response::Get {
        found,
        siblings: (0..siblings)
            .map(|index| Sibling {
                tombstone: index == 1,
                value: Bytes::from(vec![index as u8; value]),
            })
            .collect(),
        context: Bytes::from(vec![7; context]),
    };
    let mut accepted = 0;
    let mut refused = 0;
    for response in [
        get(true, limits.siblings_max, 3, 5),
        get(true, limits.siblings_max + 1, 3, 5),
        get(true, 2, limits.value_bytes_max, 5),
        get(true, 2, limits.value_bytes_max + 1, 5),
        get(true, 1, 3, limits.context_bytes_max),
        get(true, 1, 3, limits.context_bytes_max + 1),
        get(false, 0, 0, 0),
        Response::Put {
            context: Bytes::from(vec![9; limits.context_bytes_max]),
        },
        Response::Put {
            context: Bytes::from(vec![9; limits.context_bytes_max + 1]),
        },
        Response::Put {
            context: Bytes::new(),
        },
        Response::Pong,
        Response::Delete,
        Response::Error {
            code: ErrorCode::Timeout,
            message: "late".to_owned(),
            acks: 1,
            routing: None,
        },
    ] {
        let mut out = Vec::new();
        Encoder::new().encode_response(12, &response, &mut out);
        let payload = out.split_off(FRAME_LENGTH_BYTES);
        compare_responses(&payload, &limits);
        match inspect_response(&payload, &limits) {
            Some((id, _)) => {
                assert_eq!(id, 12);
                accepted += 1;
            }
            None => refused += 1,
        }
    }
    // The five at or under their bounds, the miss, the three small replies
    // (Put twice, Pong, Delete): seen; the four over a bound and the error
    // reply: left to the full decoder.
    assert_eq!((accepted, refused), (8, 5));
}

/// The server's one-value get reply (`encode_get_reply` of one value, the
/// fixed-head writer), mutated where the lean reader's shortcut for that
/// layout looks (the value's length, the context's uoffset and length, the
/// frame's end) and anywhere else, under limits near the frame's sizes:
/// `compare_responses` holds `inspect_response` to `decode_response` on
/// each. Half the frames are left whole, so the shortcut's acceptance under
/// tight limits is compared too.
#[test]
fn mutated_one_value_get_replies_read_the_same() {
    let seed: u64 = env("DYNAKV_DIFF_SEED").unwrap_or(0x0e7a_1ee5);
    let iterations: u64 = env("DYNAKV_DIFF_ITERATIONS").unwrap_or(20_000);
    let mut rng = Rng(seed | 1);
    let (mut gets, mut others) = (0u64, 0u64);
    for done in 0..iterations {
        let value_bytes_max = if rng.below(8) == 0 { 1100 } else { 120 };
        let value = rng.bytes(value_bytes_max);
        let context = rng.bytes(70);
        let id = rng.next();
        let mut frame = Vec::new();
        encode_get_reply(
            id,
            std::iter::once(&value[..]),
            |out| out.extend_from_slice(&context),
            0,
            &mut frame,
        );
        let mut payload = frame.split_off(FRAME_LENGTH_BYTES);
        if rng.below(2) == 0 {
            for _ in 0..1 + rng.below(2) {
                mutate_one_value_get(&mut rng, &mut payload);
            }
        }
        // A bound within two of `size`, either side.
        let near = rng.below(5).wrapping_sub(2);
        let near = |size: usize| size.saturating_add_signed(near as isize);
        let mut limits = small_limits();
        match rng.below(5) {
            // The frame's size, or its apparent size (a little more).
            0 => limits.frame_bytes_max = near(payload.len() + rng.below(2) * 12),
            1 => limits.value_bytes_max = near(value.len()),
            2 => limits.context_bytes_max = near(context.len()),
            3 => limits.siblings_max = rng.below(2),
            _ => limits = Limits::default(),
        }
        let outcome = std::panic::catch_unwind(|| {
            compare_responses(&payload, &limits);
            inspect_response(&payload, &limits)
        });
        let Ok(view) = outcome else {
            panic!("iteration {done} failed (above); replay with DYNAKV_DIFF_SEED={seed}");
        };
        match view {
            Some((_, ResponseView::Get { siblings: 1, .. })) => gets += 1,
            _ => others += 1,
        }
    }
    // Both answers must be common for the comparison to prove anything.
    assert!(
        gets > iterations / 5 && others > iterations / 5,
        "{gets} {others}"
    );
}

/// One mutation of a one-value get reply: a patched field of the fixed
/// head (id at 40, context uoffset at 64, value length at 92) or the
/// context's length nudged, the frame cut or extended by a few bytes, or
/// any of `mutate`'s.
fn mutate_one_value_get(rng: &mut Rng, payload: &mut Vec<u8>) {
    let nudge = |rng: &mut Rng, payload: &mut Vec<u8>, at: usize| {
        if let Some(field) = payload.get_mut(at..at + 4) {
            let value = u32::from_le_bytes(field.try_into().unwrap());
            let value = match rng.below(3) {
                0 => value.wrapping_add(1 + rng.below(4) as u32),
                1 => value.wrapping_sub(1 + rng.below(4) as u32),
                _ => rng.next() as u32,
            };
            field.copy_from_slice(&value.to_le_bytes());
        }
    };
    match rng.below(6) {
        0 => nudge(rng, payload, 92),
        1 => nudge(rng, payload, 64),
        2 => {
            // The context's length, where the writer put it.
            let value_length = payload.get(92..96).map_or(0, |field| {
                u32::from_le_bytes(field.try_into().unwrap()) as usize
            });
            nudge(rng, payload, (96 + value_length).next_multiple_of(4));
        }
        3 => {
            let cut = rng.below(5).min(payload.len());
            payload.truncate(payload.len() - cut);
        }
        4 => payload.extend((0..1 + rng.below(4)).map(|_| rng.next() as u8)),
        _ => mutate(rng, Kind::Response, payload),
    }
}
