//! The internode protocol through its public API: every message round-trips,
//! bounds are enforced, and mutated or truncated frames never panic.
//!
//! Proptest case count: 128 by default; set `PROPTEST_CASES` to raise it.

use std::net::IpAddr;

use bytes::Bytes;
use dynakv::protocol::{
    decode_internode, Encoder, ErrorCode, Gossip, HandoffBatch, HandoffEntry, Hello, HelloReply,
    Hint, InternodeBody, InternodeLimits, InternodeMessage, Member, MemberStatus,
    ProtocolErrorKind, ReplicaPut, ReplicaStatus, FRAME_LENGTH_BYTES, INTERNODE_PROTOCOL_VERSION,
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
    prop::collection::vec(any::<u8>(), 1..=32).prop_map(Bytes::from)
}

fn status() -> impl Strategy<Value = ReplicaStatus> {
    prop::sample::select(vec![
        ReplicaStatus::Ok,
        ReplicaStatus::WrongOwner,
        ReplicaStatus::StorageFull,
        ReplicaStatus::StorageFailed,
        ReplicaStatus::Overloaded,
        ReplicaStatus::BadRequest,
    ])
}

fn member() -> impl Strategy<Value = Member> {
    (
        any::<u64>(),
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from)
        ],
        any::<u16>(),
        prop::collection::vec(any::<u16>(), 0..=4),
        prop::collection::vec(any::<u16>(), 0..=4),
        any::<u32>(),
        prop::sample::select(vec![
            MemberStatus::Joining,
            MemberStatus::Valid,
            MemberStatus::Leaving,
            MemberStatus::Removed,
        ]),
        any::<u64>(),
    )
        .prop_map(
            |(id, addr, client_port, client_ports, internode_ports, weight, status, version)| {
                Member {
                    id,
                    addr,
                    client_port,
                    shard_client_ports: client_ports,
                    shard_internode_ports: internode_ports,
                    weight,
                    status,
                    version,
                }
            },
        )
}

fn body() -> impl Strategy<Value = InternodeBody> {
    prop_oneof![
        (
            any::<u16>(),
            "[a-z-]{0,16}",
            any::<u64>(),
            any::<u16>(),
            any::<u64>(),
            bytes(32)
        )
            .prop_map(
                |(protocol_version, cluster_name, node_id, shard, ring_epoch, nonce)| {
                    InternodeBody::Hello(Hello {
                        protocol_version,
                        cluster_name,
                        node_id,
                        shard,
                        ring_epoch,
                        nonce,
                    })
                }
            ),
        (
            any::<bool>(),
            "[ -~]{0,32}",
            any::<u64>(),
            any::<u16>(),
            any::<u64>(),
            bytes(32),
            bytes(32)
        )
            .prop_map(
                |(accepted, reason, node_id, shard, ring_epoch, nonce, proof)| {
                    InternodeBody::HelloReply(HelloReply {
                        accepted,
                        reason,
                        node_id,
                        shard,
                        ring_epoch,
                        nonce,
                        proof,
                    })
                }
            ),
        (any::<u32>(), key(), bytes(256), any::<bool>(), any::<u64>()).prop_map(
            |(partition, key, versions, durable, epoch)| {
                InternodeBody::ReplicaPut(ReplicaPut {
                    partition,
                    key,
                    versions,
                    durable,
                    epoch,
                })
            }
        ),
        (status(), any::<bool>())
            .prop_map(|(status, durable)| InternodeBody::ReplicaPutReply { status, durable }),
        (any::<u32>(), key(), any::<u64>()).prop_map(|(partition, key, epoch)| {
            InternodeBody::ReplicaGet {
                partition,
                key,
                epoch,
            }
        }),
        (status(), any::<bool>(), bytes(256)).prop_map(|(status, found, versions)| {
            InternodeBody::ReplicaGetReply {
                status,
                found,
                versions,
            }
        }),
        (any::<u64>(), any::<u32>(), key(), bytes(256), any::<u64>()).prop_map(
            |(intended_node, partition, key, versions, hint_seq)| {
                InternodeBody::Hint(Hint {
                    intended_node,
                    partition,
                    key,
                    versions,
                    hint_seq,
                })
            }
        ),
        (status(), any::<u64>())
            .prop_map(|(status, hint_seq)| InternodeBody::HintAck { status, hint_seq }),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(
                (key(), bytes(64)).prop_map(|(key, versions)| HandoffEntry { key, versions }),
                0..=8
            ),
            any::<bool>()
        )
            .prop_map(|(partition, epoch, batch_seq, entries, last)| {
                InternodeBody::HandoffBatch(HandoffBatch {
                    partition,
                    epoch,
                    batch_seq,
                    entries,
                    last,
                })
            }),
        (status(), any::<u32>(), any::<u64>()).prop_map(|(status, partition, batch_seq)| {
            InternodeBody::HandoffAck {
                status,
                partition,
                batch_seq,
            }
        }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(member(), 0..=6),
            any::<bool>()
        )
            .prop_map(|(from_node, ring_epoch, members, reply)| {
                InternodeBody::Gossip(Gossip {
                    from_node,
                    ring_epoch,
                    members,
                    reply,
                })
            }),
        (status(), "[ -~]{0,64}")
            .prop_map(|(status, message)| InternodeBody::Error { status, message }),
    ]
}

fn encode(message: &InternodeMessage) -> Bytes {
    let mut out = Vec::new();
    Encoder::new().encode_internode(message, &mut out);
    let length = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(length + FRAME_LENGTH_BYTES, out.len());
    Bytes::from(out).slice(FRAME_LENGTH_BYTES..)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn internode_messages_round_trip(id in any::<u64>(), body in body()) {
        let message = InternodeMessage { id, body };
        let decoded = decode_internode(encode(&message), &InternodeLimits::default()).unwrap();
        prop_assert_eq!(decoded, message);
    }
}

fn replica_put(key_len: usize, versions_len: usize) -> InternodeMessage {
    InternodeMessage {
        id: 31,
        body: InternodeBody::ReplicaPut(ReplicaPut {
            partition: 3,
            key: Bytes::from(vec![b'k'; key_len]),
            versions: Bytes::from(vec![1; versions_len]),
            durable: true,
            epoch: 9,
        }),
    }
}

#[test]
fn internode_bounds_are_enforced() {
    let limits = InternodeLimits {
        versions_bytes_max: 100,
        handoff_entries_max: 2,
        members_max: 1,
        ..InternodeLimits::default()
    };
    let error = decode_internode(encode(&replica_put(0, 1)), &limits).unwrap_err();
    assert_eq!(error.kind, ProtocolErrorKind::KeyEmpty);
    assert_eq!(error.id, Some(31));
    let error = decode_internode(encode(&replica_put(1025, 1)), &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::KeyTooLarge);
    let error = decode_internode(encode(&replica_put(1, 101)), &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::ValueTooLarge);
    assert!(decode_internode(encode(&replica_put(1, 100)), &limits).is_ok());

    let batch = InternodeMessage {
        id: 1,
        body: InternodeBody::HandoffBatch(HandoffBatch {
            partition: 0,
            epoch: 1,
            batch_seq: 0,
            entries: vec![
                HandoffEntry {
                    key: Bytes::from_static(b"k"),
                    versions: Bytes::new(),
                };
                3
            ],
            last: true,
        }),
    };
    let error = decode_internode(encode(&batch), &limits).unwrap_err();
    assert!(
        error.to_string().contains("3 handoff entries exceed"),
        "{error}"
    );

    let member = Member {
        id: 1,
        addr: IpAddr::from([10, 0, 0, 1]),
        client_port: 7000,
        shard_client_ports: vec![7001],
        shard_internode_ports: vec![7101],
        weight: 1,
        status: MemberStatus::Valid,
        version: 1,
    };
    let gossip = InternodeMessage {
        id: 0,
        body: InternodeBody::Gossip(Gossip {
            from_node: 1,
            ring_epoch: 1,
            members: vec![member.clone(), member],
            reply: false,
        }),
    };
    let error = decode_internode(encode(&gossip), &limits).unwrap_err();
    assert!(error.to_string().contains("2 members exceed"), "{error}");

    let hello = InternodeMessage {
        id: 1,
        body: InternodeBody::Hello(Hello {
            protocol_version: INTERNODE_PROTOCOL_VERSION,
            cluster_name: "c".into(),
            node_id: 1,
            shard: 0,
            ring_epoch: 0,
            nonce: Bytes::from(vec![0; 65]),
        }),
    };
    let error = decode_internode(encode(&hello), &limits).unwrap_err();
    assert!(error.to_string().contains("nonce of 65 bytes"), "{error}");

    let small = InternodeLimits {
        frame_bytes_max: 16,
        ..InternodeLimits::default()
    };
    let error = decode_internode(encode(&replica_put(1, 1)), &small).unwrap_err();
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn mutated_and_truncated_internode_frames_never_panic() {
    let member = Member {
        id: 7,
        addr: "::1".parse().unwrap(),
        client_port: 7000,
        shard_client_ports: vec![7001, 7002],
        shard_internode_ports: vec![7101, 7102],
        weight: 2,
        status: MemberStatus::Joining,
        version: 3,
    };
    let corpus: Vec<Bytes> = [
        InternodeBody::Hello(Hello {
            protocol_version: INTERNODE_PROTOCOL_VERSION,
            cluster_name: "prod".into(),
            node_id: 1,
            shard: 2,
            ring_epoch: 3,
            nonce: Bytes::from_static(b"0123456789abcdef"),
        }),
        replica_put(8, 40).body,
        InternodeBody::ReplicaGetReply {
            status: ReplicaStatus::Ok,
            found: true,
            versions: Bytes::from_static(b"\x01versions"),
        },
        InternodeBody::HandoffBatch(HandoffBatch {
            partition: 1,
            epoch: 2,
            batch_seq: 3,
            entries: vec![
                HandoffEntry {
                    key: Bytes::from_static(b"a"),
                    versions: Bytes::from_static(b"va"),
                },
                HandoffEntry {
                    key: Bytes::from_static(b"b"),
                    versions: Bytes::from_static(b"vb"),
                },
            ],
            last: false,
        }),
        InternodeBody::Gossip(Gossip {
            from_node: 7,
            ring_epoch: 2,
            members: vec![member],
            reply: true,
        }),
        InternodeBody::Error {
            status: ReplicaStatus::Overloaded,
            message: "busy".into(),
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(id, body)| {
        encode(&InternodeMessage {
            id: id as u64 + 1,
            body,
        })
    })
    .collect();
    let limits = InternodeLimits::default();
    let mut encoder = Encoder::new();
    let mut accepted = 0;
    let mut check = |bytes: &[u8]| {
        if let Ok(message) = decode_internode(Bytes::copy_from_slice(bytes), &limits) {
            // Whatever is accepted is a real message: it survives a
            // re-encode unchanged.
            let mut out = Vec::new();
            encoder.encode_internode(&message, &mut out);
            let again =
                decode_internode(Bytes::from(out).slice(FRAME_LENGTH_BYTES..), &limits).unwrap();
            assert_eq!(again, message);
            accepted += 1;
        }
    };
    for frame in &corpus {
        for position in 0..frame.len() {
            for mutation in [0x00u8, 0x01, 0x80, 0xff, frame[position] ^ 0x04] {
                let mut mutant = frame.to_vec();
                mutant[position] = mutation;
                check(&mutant);
            }
        }
        for len in 0..frame.len() {
            check(&frame[..len]);
        }
    }
    assert!(accepted > 0);
}
