//! Tests that need to build flatbuffers by hand (wrong union types, absent
//! fields, shared sub-objects), which only this module may do. Round trips
//! and byte-level fuzzing through the public API live in
//! `tests/protocol_codec.rs` and `tests/protocol_fuzz.rs`.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use super::generated::wire;
use super::*;

fn finish<T>(mut b: FlatBufferBuilder<'static>, root: flatbuffers::WIPOffset<T>) -> Bytes {
    b.finish_minimal(root);
    Bytes::copy_from_slice(b.finished_data())
}

fn request_with_body(
    id: u64,
    body_type: wire::RequestBody,
    body: Option<flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>>,
    b: FlatBufferBuilder<'static>,
) -> Bytes {
    let mut b = b;
    let root = wire::Request::create(
        &mut b,
        &wire::RequestArgs {
            id,
            epoch: 3,
            body_type,
            body,
        },
    );
    finish(b, root)
}

#[test]
fn unknown_union_type_is_bad_request_with_the_id() {
    // A newer client may send a body type this node does not know.
    let mut b = FlatBufferBuilder::new();
    let body = wire::PingRequest::create(&mut b, &wire::PingRequestArgs {}).as_union_value();
    let frame = request_with_body(41, wire::RequestBody(77), Some(body), b);
    let error = decode_request(frame, &Limits::default()).unwrap_err();
    assert_eq!(error.id, Some(41));
    assert_eq!(error.kind, ProtocolErrorKind::UnknownBody(77));
    assert_eq!(error.code(), ErrorCode::BadRequest);
}

#[test]
fn wrong_union_type_for_the_table_is_rejected() {
    // The tag says Put but the table is a Ping (no fields): the verifier
    // checks the table as a PutRequest, which has no key, and validation
    // refuses the empty key.
    let mut b = FlatBufferBuilder::new();
    let body = wire::PingRequest::create(&mut b, &wire::PingRequestArgs {}).as_union_value();
    let frame = request_with_body(5, wire::RequestBody::PutRequest, Some(body), b);
    let error = decode_request(frame, &Limits::default()).unwrap_err();
    assert_eq!(error.id, Some(5));
    assert_eq!(error.kind, ProtocolErrorKind::KeyEmpty);

    // The tag says Get but the table is a Put whose first field (key) has
    // the same type: that is indistinguishable and decodes as a Get of the
    // same key, which is why union members are only ever appended.
    let mut b = FlatBufferBuilder::new();
    let key = b.create_vector(&b"k"[..]);
    let value = b.create_vector(&[0u8; 300][..]);
    let body = wire::PutRequest::create(
        &mut b,
        &wire::PutRequestArgs {
            key: Some(key),
            value: Some(value),
            context: None,
            w: 0,
            dw: 0,
            n: 0,
        },
    )
    .as_union_value();
    let frame = request_with_body(6, wire::RequestBody::GetRequest, Some(body), b);
    // The Put's `value` (an offset) sits in the slot where a Get has `r` (a
    // ubyte): the verifier accepts any byte there, so the decoded r is the
    // offset's low byte. Whatever it is, the result must be a clean Ok or a
    // BadQuorum, never a panic.
    match decode_request(frame, &Limits::default()) {
        Ok(frame) => assert!(matches!(frame.request, Request::Get { .. })),
        Err(error) => assert!(matches!(error.kind, ProtocolErrorKind::BadQuorum { .. })),
    }
}

#[test]
fn absent_body_is_rejected() {
    let b = FlatBufferBuilder::new();
    let frame = request_with_body(9, wire::RequestBody::NONE, None, b);
    let error = decode_request(frame, &Limits::default()).unwrap_err();
    assert_eq!(error.id, Some(9));
    assert_eq!(error.kind, ProtocolErrorKind::UnknownBody(0));

    // A known tag with no table fails verification, but the id survives.
    let b = FlatBufferBuilder::new();
    let frame = request_with_body(10, wire::RequestBody::GetRequest, None, b);
    let error = decode_request(frame, &Limits::default()).unwrap_err();
    assert!(
        matches!(error.kind, ProtocolErrorKind::Malformed(_)),
        "{error}"
    );
    assert_eq!(error.id, Some(10));
}

#[test]
fn broken_body_still_yields_the_request_id() {
    let mut b = FlatBufferBuilder::new();
    let key = b.create_vector(&b"some key"[..]);
    let body = wire::GetRequest::create(
        &mut b,
        &wire::GetRequestArgs {
            key: Some(key),
            r: 0,
            n: 0,
        },
    )
    .as_union_value();
    let frame = request_with_body(1234, wire::RequestBody::GetRequest, Some(body), b);
    // Find the key vector's length field (8 little-endian) and make the
    // vector run past the end of the buffer.
    let mut bytes = frame.to_vec();
    let position = bytes
        .windows(12)
        .position(|w| w == b"\x08\x00\x00\x00some key")
        .expect("key vector in the buffer");
    bytes[position..position + 4].copy_from_slice(&10_000u32.to_le_bytes());
    let error = decode_request(Bytes::from(bytes), &Limits::default()).unwrap_err();
    assert!(matches!(error.kind, ProtocolErrorKind::Malformed(_)));
    assert_eq!(error.id, Some(1234));
    let (reply_id, reply) = error.to_response();
    assert_eq!(reply_id, 1234);
    assert!(matches!(
        reply,
        Response::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
}

#[test]
fn quorum_overrides_out_of_range_are_rejected() {
    for (r, n, ok) in [
        (0, 0, true),
        (1, 16, true),
        (R_ALL, 3, true),
        (17, 0, false),
        (0, 17, false),
        (0, R_ALL, false),
    ] {
        let mut b = FlatBufferBuilder::new();
        let key = b.create_vector(&b"k"[..]);
        let body = wire::GetRequest::create(
            &mut b,
            &wire::GetRequestArgs {
                key: Some(key),
                r,
                n,
            },
        )
        .as_union_value();
        let frame = request_with_body(1, wire::RequestBody::GetRequest, Some(body), b);
        let result = decode_request(frame, &Limits::default());
        assert_eq!(result.is_ok(), ok, "r={r} n={n}: {result:?}");
        if let Err(error) = result {
            assert!(matches!(error.kind, ProtocolErrorKind::BadQuorum { .. }));
            assert!(error.to_string().contains("out of range"), "{error}");
        }
    }
}

#[test]
fn shared_value_vector_cannot_inflate_a_reply() {
    // Every sibling points at the same 64 KiB vector: the frame is small but
    // its apparent size is siblings × 64 KiB, which the verifier refuses.
    let mut b = FlatBufferBuilder::new();
    let value = b.create_vector(&vec![1u8; 64 * 1024][..]);
    let siblings: Vec<_> = (0..40)
        .map(|_| {
            wire::Sibling::create(
                &mut b,
                &wire::SiblingArgs {
                    tombstone: false,
                    value: Some(value),
                },
            )
        })
        .collect();
    let values = b.create_vector(&siblings);
    let body = wire::GetReply::create(
        &mut b,
        &wire::GetReplyArgs {
            found: true,
            values: Some(values),
            context: None,
        },
    )
    .as_union_value();
    let root = wire::Response::create(
        &mut b,
        &wire::ResponseArgs {
            id: 8,
            body_type: wire::ResponseBody::GetReply,
            body: Some(body),
        },
    );
    let frame = finish(b, root);
    let limits = Limits {
        frame_bytes_max: 1024 * 1024,
        ..Limits::default()
    };
    assert!(frame.len() < limits.frame_bytes_max);
    let error = decode_response(frame, &limits).unwrap_err();
    assert!(
        matches!(error.kind, ProtocolErrorKind::Malformed(_)),
        "{error}"
    );
    assert_eq!(error.id, Some(8));
}

#[test]
fn unknown_error_code_reads_as_internal() {
    let mut b = FlatBufferBuilder::new();
    let message = b.create_string("from the future");
    let body = wire::ErrorReply::create(
        &mut b,
        &wire::ErrorReplyArgs {
            code: wire::ErrorCode(999),
            message: Some(message),
            acks: 2,
            routing: None,
        },
    )
    .as_union_value();
    let root = wire::Response::create(
        &mut b,
        &wire::ResponseArgs {
            id: 3,
            body_type: wire::ResponseBody::ErrorReply,
            body: Some(body),
        },
    );
    let (id, response) = decode_response(finish(b, root), &Limits::default()).unwrap();
    assert_eq!(id, 3);
    let Response::Error {
        code,
        message,
        acks,
        routing,
    } = response
    else {
        panic!("expected an error reply");
    };
    assert_eq!(code, ErrorCode::Internal);
    assert!(message.contains("unknown error code 999"));
    assert!(message.contains("from the future"));
    assert_eq!(acks, 2);
    assert_eq!(routing, None);
}

#[test]
fn error_codes_match_the_schema() {
    for code in ErrorCode::ALL {
        let wire_code = wire::ErrorCode(code.to_wire());
        assert_eq!(wire_code.variant_name(), Some(code.name()));
        assert_eq!(ErrorCode::from_wire(code.to_wire()), Some(code));
    }
    assert_eq!(ErrorCode::from_wire(0), None);
    assert_eq!(
        ErrorCode::ALL.len(),
        usize::from(wire::ErrorCode::ENUM_MAX),
        "every schema code has a domain code"
    );
}

#[test]
fn routing_table_with_an_out_of_range_index_is_rejected() {
    let table = RoutingTable {
        epoch: 1,
        q: 2,
        n_val: 1,
        nodes: vec![RoutingNode {
            id: 1,
            addr: "10.0.0.1".parse().unwrap(),
            client_port: 7000,
            shard_ports: vec![7001, 7002],
            weight: 2,
        }],
        partitions: vec![vec![(0, 1)], vec![(0, 2)]],
    };
    let mut out = Vec::new();
    encode_response(5, &Response::RoutingTable(table.clone()), &mut out);
    let error = decode_response(Bytes::from(out).slice(4..), &Limits::default()).unwrap_err();
    assert!(error.to_string().contains("shard 2"), "{error}");

    let mut bad_node = table.clone();
    bad_node.partitions[1] = vec![(1, 0)];
    let mut out = Vec::new();
    encode_response(5, &Response::RoutingTable(bad_node), &mut out);
    let error = decode_response(Bytes::from(out).slice(4..), &Limits::default()).unwrap_err();
    assert!(error.to_string().contains("node index 1"), "{error}");

    let mut bad_q = table;
    bad_q.q = 3;
    let mut out = Vec::new();
    encode_response(5, &Response::RoutingTable(bad_q), &mut out);
    let error = decode_response(Bytes::from(out).slice(4..), &Limits::default()).unwrap_err();
    assert!(error.to_string().contains("power of two"), "{error}");
}

#[test]
fn unknown_internode_status_is_refused_with_the_id() {
    use super::generated::internode as iw;
    let mut b = FlatBufferBuilder::new();
    let body = iw::HintAck::create(
        &mut b,
        &iw::HintAckArgs {
            status: iw::ReplicaStatus(200),
            hint_seq: 4,
        },
    )
    .as_union_value();
    let root = iw::Message::create(
        &mut b,
        &iw::MessageArgs {
            id: 17,
            body_type: iw::Body::HintAck,
            body: Some(body),
        },
    );
    let error = decode_internode(finish(b, root), &InternodeLimits::default()).unwrap_err();
    assert_eq!(error.id, Some(17));
    assert_eq!(
        error.kind,
        ProtocolErrorKind::BadEnum {
            field: "status",
            value: 200
        }
    );
}
