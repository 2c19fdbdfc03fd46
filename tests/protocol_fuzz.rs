//! CI-sized fuzzing of the frame and message decoders (issue 7): every byte
//! of a corpus of valid frames is mutated, every frame is truncated at every
//! length, and a seeded random mutator runs on top. The decoders must never
//! panic, and whatever they accept must survive a re-encode unchanged (so an
//! accepted mutant is a real message, not a half-read one).
//!
//! `DYNAKV_FUZZ_ITERATIONS` (default 20000) sets the random mutations per
//! run; `DYNAKV_FUZZ_SEED` replays a seed.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use dynakv::protocol::{
    decode_request, decode_response, encode_request, encode_response, ErrorCode, FrameDecoder,
    Limits, Quorum, Request, RequestFrame, Response, RoutingNode, RoutingTable, Sibling,
    FRAME_LENGTH_BYTES, R_ALL,
};

fn routing_table() -> RoutingTable {
    RoutingTable {
        epoch: 42,
        q: 8,
        n_val: 3,
        nodes: vec![
            RoutingNode {
                id: 1,
                addr: IpAddr::from([127, 0, 0, 1]),
                client_port: 7000,
                shard_ports: vec![7001, 7002],
                weight: 2,
            },
            RoutingNode {
                id: 2,
                addr: "::1".parse().expect("literal address"),
                client_port: 7100,
                shard_ports: vec![7101],
                weight: 1,
            },
            RoutingNode {
                id: 3,
                addr: IpAddr::from([10, 1, 2, 3]),
                client_port: 7200,
                shard_ports: vec![7201, 7202, 7203],
                weight: 3,
            },
        ],
        partitions: (0..8u32)
            .map(|p| vec![(p % 3, 0), ((p + 1) % 3, 0), ((p + 2) % 3, 0)])
            .collect(),
    }
}

/// Payloads (no length prefix) of valid requests.
fn request_corpus() -> Vec<Vec<u8>> {
    let requests = vec![
        Request::Ping,
        Request::GetRoutingTable,
        Request::Get {
            key: Bytes::from_static(b"user:1"),
            quorum: Quorum {
                r: Some(R_ALL),
                n: Some(3),
                ..Quorum::DEFAULT
            },
        },
        Request::Put {
            key: Bytes::from_static(b"user:1"),
            value: Bytes::from_static(b"{\"name\":\"ada\"}"),
            context: Some(Bytes::from_static(b"\x01ctx-bytes")),
            quorum: Quorum {
                r: None,
                w: Some(2),
                dw: Some(1),
                n: Some(3),
            },
        },
        Request::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::new(),
            context: None,
            quorum: Quorum::DEFAULT,
        },
        Request::Delete {
            key: Bytes::from_static(b"user:1"),
            context: Bytes::from_static(b"\x01ctx"),
            quorum: Quorum {
                r: None,
                w: Some(3),
                dw: None,
                n: None,
            },
        },
    ];
    requests
        .into_iter()
        .enumerate()
        .map(|(id, request)| {
            let mut out = Vec::new();
            encode_request(
                &RequestFrame {
                    id: id as u64 + 1,
                    epoch: 7,
                    request,
                },
                &mut out,
            );
            out.split_off(FRAME_LENGTH_BYTES)
        })
        .collect()
}

/// Payloads (no length prefix) of valid responses.
fn response_corpus() -> Vec<Vec<u8>> {
    let responses = vec![
        Response::Pong,
        Response::Delete,
        Response::Put {
            context: Bytes::from_static(b"\x01new-context"),
        },
        Response::Get {
            found: true,
            siblings: vec![
                Sibling {
                    tombstone: false,
                    value: Bytes::from_static(b"left"),
                },
                Sibling {
                    tombstone: true,
                    value: Bytes::new(),
                },
            ],
            context: Bytes::from_static(b"\x01ctx"),
        },
        Response::RoutingTable(routing_table()),
        Response::Error {
            code: ErrorCode::QuorumFailed,
            message: "1 of 2 replicas acknowledged".to_owned(),
            acks: 1,
            routing: None,
        },
        Response::Error {
            code: ErrorCode::WrongOwner,
            message: "partition 3 moved".to_owned(),
            acks: 0,
            routing: Some(routing_table()),
        },
    ];
    responses
        .into_iter()
        .enumerate()
        .map(|(id, response)| {
            let mut out = Vec::new();
            encode_response(id as u64 + 1, &response, &mut out);
            out.split_off(FRAME_LENGTH_BYTES)
        })
        .collect()
}

/// Small limits, so that the size checks are reachable by mutation too.
fn limits() -> Limits {
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

/// Feeds `payload` to both decoders; whatever decodes must re-encode to a
/// message that decodes to the same value. Returns how many decoded.
fn check(payload: &[u8], limits: &Limits) -> usize {
    let mut accepted = 0;
    if let Ok(frame) = decode_request(Bytes::copy_from_slice(payload), limits) {
        let mut out = Vec::new();
        encode_request(&frame, &mut out);
        let again = decode_request(Bytes::from(out).slice(FRAME_LENGTH_BYTES..), limits)
            .expect("a re-encoded request decodes");
        assert_eq!(again, frame, "request changed by a re-encode");
        accepted += 1;
    }
    if let Ok((id, response)) = decode_response(Bytes::copy_from_slice(payload), limits) {
        let mut out = Vec::new();
        encode_response(id, &response, &mut out);
        let again = decode_response(Bytes::from(out).slice(FRAME_LENGTH_BYTES..), limits)
            .expect("a re-encoded response decodes");
        assert_eq!(again, (id, response), "response changed by a re-encode");
        accepted += 1;
    }
    accepted
}

/// The framed stream, including its length prefix, through `FrameDecoder`.
fn check_stream(wire: &[u8], limits: &Limits) {
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let mut buf = BytesMut::from(wire);
    // Each successful decode consumes at least the prefix, so this ends.
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        check(&frame, limits);
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let mut corpus = request_corpus();
    corpus.extend(response_corpus());
    corpus
}

#[test]
fn corpus_is_valid() {
    let limits = limits();
    for payload in request_corpus() {
        assert!(decode_request(Bytes::from(payload), &limits).is_ok());
    }
    for payload in response_corpus() {
        assert!(decode_response(Bytes::from(payload), &limits).is_ok());
    }
}

#[test]
fn every_byte_mutated() {
    let limits = limits();
    let mut accepted = 0;
    let mut tried = 0;
    for payload in corpus() {
        for position in 0..payload.len() {
            for mutation in [0x00u8, 0x01, 0x7f, 0x80, 0xff, payload[position] ^ 0x01] {
                let mut mutant = payload.clone();
                mutant[position] = mutation;
                accepted += check(&mutant, &limits);
                tried += 1;
            }
        }
    }
    // Many mutants (values, ids, flags) are still valid messages; if none
    // were, the check above would prove nothing about accepted input.
    assert!(
        accepted > 0 && accepted < tried * 2,
        "{accepted} of {tried}"
    );
}

#[test]
fn every_truncation() {
    let limits = limits();
    for payload in corpus() {
        for len in 0..payload.len() {
            check(&payload[..len], &limits);
            // Framed with the original length: the stream decoder waits.
            let mut wire = (payload.len() as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(&payload[..len]);
            let mut buf = BytesMut::from(&wire[..]);
            let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
            assert_eq!(decoder.decode(&mut buf), Ok(None));
            // Framed with the truncated length: a whole, broken frame.
            let mut wire = (len as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(&payload[..len]);
            check_stream(&wire, &limits);
        }
    }
}

#[path = "support/xorshift.rs"]
mod xorshift;
use xorshift::Rng;

#[test]
fn random_mutations_of_framed_streams() {
    let iterations: usize = std::env::var("DYNAKV_FUZZ_ITERATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("DYNAKV_FUZZ_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0x5eed_d1a6);
    let limits = limits();
    let corpus = corpus();
    let mut rng = Rng(seed | 1);
    for iteration in 0..iterations {
        // A stream of up to three frames, then a few random byte edits
        // anywhere, length prefixes included.
        let mut wire = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let payload = &corpus[rng.below(corpus.len())];
            wire.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            wire.extend_from_slice(payload);
        }
        for _ in 0..1 + rng.below(4) {
            let position = rng.below(wire.len());
            match rng.below(4) {
                0 => wire[position] = rng.next() as u8,
                1 => wire[position] ^= 1 << rng.below(8),
                2 => wire.truncate(position),
                _ => wire.insert(position, rng.next() as u8),
            }
            if wire.is_empty() {
                break;
            }
        }
        let outcome = std::panic::catch_unwind(|| check_stream(&wire, &limits));
        assert!(
            outcome.is_ok(),
            "panic at iteration {iteration}, seed {seed}; replay with DYNAKV_FUZZ_SEED={seed}"
        );
    }
}
