//! Stable-toolchain hardening of every decoder that reads bytes from outside
//! the process (issue 7): client frames, context tokens, sibling sets, the
//! runtime's internode frames (replica messages and gossip), the membership
//! state codec and the flatbuffers internode protocol. Each valid encoding in
//! a corpus is mutated at every byte (six values per byte) and truncated at
//! every length; the decoder must not panic, and a counting global allocator
//! checks that no decode keeps more than its frame limit allocated at once
//! (framed streams, the way a connection reader reserves bytes) or more than
//! a small multiple of its input (bare payload decoders, which must never
//! trust a length field to pre-allocate).
//!
//! `tests/protocol_fuzz.rs` adds re-encode checks and a seeded random
//! mutator for the client protocol; `fuzz/` holds the coverage-guided
//! (cargo-fuzz) versions of these targets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use dynakv::membership::{
    next_ring, AdminChange, MembershipMessage, MembershipState, NodeId, StagedPlan,
};
use dynakv::protocol::{
    decode_internode, decode_request, decode_response, Encoder, ErrorCode, FrameDecoder, Gossip,
    HandoffBatch, HandoffEntry, Hello, InternodeBody, InternodeLimits, InternodeMessage, Limits,
    Member, MemberStatus, Quorum, ReplicaPut, ReplicaStatus, Request, RequestFrame, Response,
    Sibling, INTERNODE_FRAME_BYTES_MAX,
};
use dynakv::replica::ReplicaMessage;
use dynakv::runtime::wire_check;
use dynakv::version::{Context, SiblingSet, Value, VersionVector};

// ---------------------------------------------------------------------------
// Counting allocator: per-thread live bytes and their peak while measuring.

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            LIVE.with(|live| {
                let now = live.get() + delta;
                live.set(now);
                PEAK.with(|peak| peak.set(peak.get().max(now)));
            });
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the peak of bytes it held at once.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    MEASURING.with(|m| m.set(true));
    let result = f();
    MEASURING.with(|m| m.set(false));
    (result, PEAK.with(|peak| peak.get()).max(0) as usize)
}

// ---------------------------------------------------------------------------
// The targets.

/// Client-protocol limits small enough that every size check is reachable.
fn client_limits() -> Limits {
    Limits {
        frame_bytes_max: 64 * 1024,
        key_bytes_max: 64,
        value_bytes_max: 1024,
        context_bytes_max: 512,
        siblings_max: 4,
        error_message_bytes_max: 128,
        nodes_max: 8,
        partitions_max: 64,
    }
}

fn internode_limits() -> InternodeLimits {
    InternodeLimits {
        frame_bytes_max: 64 * 1024,
        key_bytes_max: 64,
        versions_bytes_max: 4096,
        handoff_entries_max: 16,
        members_max: 16,
    }
}

/// A decoder under test: its name, the byte strings it is fed, how it reads
/// them (true = accepted), and the most bytes it may hold at once.
struct Target {
    name: &'static str,
    corpus: Vec<Vec<u8>>,
    decode: fn(&[u8]) -> bool,
    /// Allocation bound for an input of the given length.
    bound: fn(usize) -> usize,
}

/// Bare payload decoders may copy their input a few times, plus a constant:
/// the version codecs pre-allocate up to a count they have checked against
/// `CLOCK_ENTRIES_MAX` / `SIBLINGS_MERGED_MAX` (a 3-byte sibling set can
/// make a 5 KiB vector), which is bounded but not proportional to the input.
fn payload_bound(input_len: usize) -> usize {
    32 * 1024 + 8 * input_len
}

/// A stream decoder reads like a connection: reserve what the frame decoder
/// says the next frame needs (checked against the frame limit), split it
/// off, decode it.
fn stream(wire: &[u8], frame_bytes_max: usize, mut each: impl FnMut(Bytes) -> bool) -> bool {
    let decoder = FrameDecoder::new(frame_bytes_max);
    let mut decoder_mut = decoder.clone();
    let mut buffer = BytesMut::new();
    let mut accepted = true;
    let mut input = wire;
    loop {
        let needed = match decoder.bytes_needed(&buffer) {
            Ok(needed) => needed,
            Err(_) => return false,
        };
        if needed > 0 {
            if input.is_empty() {
                // A partial frame waits for more bytes; nothing was accepted.
                return accepted && buffer.is_empty();
            }
            buffer.reserve(needed);
            let take = needed.min(input.len());
            buffer.extend_from_slice(&input[..take]);
            input = &input[take..];
            continue;
        }
        match decoder_mut.decode(&mut buffer) {
            Ok(Some(frame)) => accepted &= each(frame),
            Ok(None) => unreachable!("bytes_needed said a frame is ready"),
            Err(_) => return false,
        }
        if buffer.is_empty() && input.is_empty() {
            return accepted;
        }
    }
}

fn decode_client(wire: &[u8]) -> bool {
    let limits = client_limits();
    stream(wire, limits.frame_bytes_max, |frame| {
        let request = decode_request(frame.clone(), &limits).is_ok();
        let response = decode_response(frame, &limits).is_ok();
        request || response
    })
}

fn decode_runtime_internode(wire: &[u8]) -> bool {
    stream(wire, INTERNODE_FRAME_BYTES_MAX, |frame| {
        wire_check::decode_frame(&frame)
    })
}

fn decode_flatbuffers_internode(wire: &[u8]) -> bool {
    let limits = internode_limits();
    stream(wire, limits.frame_bytes_max, |frame| {
        decode_internode(frame, &limits).is_ok()
    })
}

fn decode_context(bytes: &[u8]) -> bool {
    Context::decode(bytes).is_ok()
}

fn decode_sibling_set(bytes: &[u8]) -> bool {
    SiblingSet::decode(bytes).is_ok()
}

fn decode_replica_message(bytes: &[u8]) -> bool {
    ReplicaMessage::decode(bytes).is_ok()
}

fn decode_membership(bytes: &[u8]) -> bool {
    MembershipMessage::decode(bytes).is_ok() || MembershipState::decode(bytes).is_ok()
}

fn decode_gossip(bytes: &[u8]) -> bool {
    wire_check::decode_gossip_payload(bytes)
}

// ---------------------------------------------------------------------------
// Corpora: valid encodings of every message shape.

fn sibling_sets() -> Vec<SiblingSet> {
    let mut sets = vec![SiblingSet::new()];
    let mut one = SiblingSet::new();
    one.update(
        &VersionVector::new(),
        7,
        Value::Data(Bytes::from_static(b"apple")),
    )
    .expect("update");
    sets.push(one.clone());
    // Concurrent writes by three actors: three siblings.
    let mut three = one.clone();
    for actor in [8u64, 9] {
        three
            .update(
                &VersionVector::new(),
                actor,
                Value::Data(Bytes::from(vec![actor as u8; 3])),
            )
            .expect("update");
    }
    sets.push(three.clone());
    // A delete that saw everything: one tombstone.
    let mut gone = three.clone();
    gone.update(&three.context(), 300, Value::Tombstone)
        .expect("delete");
    sets.push(gone);
    sets
}

fn contexts() -> Vec<Vec<u8>> {
    let clocks = [
        VersionVector::new(),
        VersionVector::from_entries(vec![(1, 1)]).expect("clock"),
        VersionVector::from_entries(vec![(1, 3), (1 << 16 | 2, 300), (u64::MAX, u64::MAX)])
            .expect("clock"),
    ];
    let mut out = Vec::new();
    for clock in clocks {
        for fastest_replica in [None, Some(5), Some(u64::MAX)] {
            out.push(
                Context {
                    clock: clock.clone(),
                    fastest_replica,
                }
                .encode(),
            );
        }
    }
    out
}

fn client_frames() -> Vec<Vec<u8>> {
    let context = contexts().pop().map(Bytes::from);
    let requests = vec![
        Request::Ping,
        Request::GetRoutingTable,
        Request::Get {
            key: Bytes::from_static(b"cart:1"),
            quorum: Quorum {
                r: Some(2),
                n: Some(3),
                ..Quorum::DEFAULT
            },
        },
        Request::Put {
            key: Bytes::from_static(b"cart:1"),
            value: Bytes::from_static(b"apple,pear"),
            context,
            quorum: Quorum {
                r: None,
                w: Some(2),
                dw: Some(1),
                n: Some(3),
            },
        },
    ];
    let responses = vec![
        Response::Pong,
        Response::Get {
            found: true,
            siblings: vec![
                Sibling {
                    tombstone: false,
                    value: Bytes::from_static(b"one"),
                },
                Sibling {
                    tombstone: true,
                    value: Bytes::new(),
                },
            ],
            context: Bytes::from(contexts().remove(4)),
        },
        Response::Error {
            code: ErrorCode::QuorumFailed,
            message: "1 of 2 acks".to_string(),
            acks: 1,
            routing: None,
        },
    ];
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    for (id, request) in requests.into_iter().enumerate() {
        let mut wire = Vec::new();
        encoder.encode_request(
            &RequestFrame {
                id: id as u64 + 1,
                epoch: 3,
                request,
            },
            &mut wire,
        );
        out.push(wire);
    }
    for (id, response) in responses.into_iter().enumerate() {
        let mut wire = Vec::new();
        encoder.encode_response(id as u64 + 100, &response, &mut wire);
        out.push(wire);
    }
    out
}

fn replica_messages() -> Vec<ReplicaMessage> {
    let sets = sibling_sets();
    vec![
        ReplicaMessage::PutReplica {
            req: 1,
            partition: 5,
            key: Bytes::from_static(b"cart:1"),
            siblings: sets[2].clone(),
            durable: true,
            hint_for: Some(NodeId(3)),
        },
        ReplicaMessage::PutAck {
            req: 1,
            durable: false,
        },
        ReplicaMessage::GetReplica {
            req: 2,
            partition: 9,
            key: Bytes::from_static(b"k"),
        },
        ReplicaMessage::GetReply {
            req: 2,
            siblings: Some(sets[3].clone()),
        },
        ReplicaMessage::GetReply {
            req: 3,
            siblings: None,
        },
        ReplicaMessage::HintReplay {
            req: 4,
            partition: 1,
            key: Bytes::from_static(b"hinted"),
            siblings: sets[1].clone(),
        },
        ReplicaMessage::HintAck { req: 4 },
    ]
}

fn membership_states() -> Vec<MembershipState> {
    let mut state = MembershipState::new();
    let mut out = vec![state.clone()];
    for node in 1..=3 {
        state
            .apply(AdminChange::Join {
                node: NodeId(node),
                weight: node as u32,
                shards: 2,
            })
            .expect("join");
    }
    out.push(state.clone());
    state
        .apply(AdminChange::Leave { node: NodeId(2) })
        .expect("leave");
    out.push(state);
    out
}

fn membership_messages() -> Vec<MembershipMessage> {
    let states = membership_states();
    vec![
        MembershipMessage::Ping,
        MembershipMessage::Pong,
        MembershipMessage::Push {
            state: states[1].clone(),
            ring: None,
            staged: StagedPlan::default(),
        },
        MembershipMessage::Pull {
            state: states[2].clone(),
            ring: next_ring(&states[2], None, 16, 3),
            staged: StagedPlan {
                version: 3,
                author: NodeId(2),
                changes: vec![
                    AdminChange::Leave { node: NodeId(2) },
                    AdminChange::SetCapacity {
                        node: NodeId(1),
                        weight: 5,
                    },
                ],
            },
        },
    ]
}

fn flatbuffers_internode_frames() -> Vec<Vec<u8>> {
    let member = |id: u64, addr: IpAddr| Member {
        id,
        addr,
        client_port: 7000,
        shard_client_ports: vec![7001, 7002],
        shard_internode_ports: vec![7101, 7102],
        weight: 1,
        status: MemberStatus::Valid,
        version: 4,
    };
    let mut versions = Vec::new();
    sibling_sets()[2].encode(&mut versions);
    let bodies = vec![
        InternodeBody::Hello(Hello {
            protocol_version: 1,
            cluster_name: "dynakv".to_string(),
            node_id: 1,
            shard: 0,
            ring_epoch: 2,
            nonce: Bytes::from_static(&[7; 16]),
        }),
        InternodeBody::ReplicaPut(ReplicaPut {
            partition: 3,
            key: Bytes::from_static(b"cart:1"),
            versions: Bytes::from(versions.clone()),
            durable: true,
            epoch: 2,
        }),
        InternodeBody::ReplicaGetReply {
            status: ReplicaStatus::Ok,
            found: true,
            versions: Bytes::from(versions.clone()),
        },
        InternodeBody::HandoffBatch(HandoffBatch {
            partition: 3,
            epoch: 2,
            batch_seq: 1,
            entries: vec![
                HandoffEntry {
                    key: Bytes::from_static(b"a"),
                    versions: Bytes::from(versions.clone()),
                },
                HandoffEntry {
                    key: Bytes::from_static(b"b"),
                    versions: Bytes::from(versions),
                },
            ],
            last: true,
        }),
        InternodeBody::Gossip(Gossip {
            from_node: 1,
            ring_epoch: 2,
            members: vec![
                member(1, IpAddr::from([127, 0, 0, 1])),
                member(2, "::1".parse().expect("literal")),
            ],
            reply: false,
        }),
        InternodeBody::Error {
            status: ReplicaStatus::Overloaded,
            message: "busy".to_string(),
        },
    ];
    let mut encoder = Encoder::new();
    bodies
        .into_iter()
        .enumerate()
        .map(|(id, body)| {
            let mut out = Vec::new();
            encoder.encode_internode(
                &InternodeMessage {
                    id: id as u64,
                    body,
                },
                &mut out,
            );
            out
        })
        .collect()
}

fn targets() -> Vec<Target> {
    let encode = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        out
    };
    let frame_bound_client = |_| client_limits().frame_bytes_max;
    let frame_bound_internode = |_| INTERNODE_FRAME_BYTES_MAX;
    let frame_bound_flatbuffers = |_| internode_limits().frame_bytes_max;
    vec![
        Target {
            name: "client frames",
            corpus: client_frames(),
            decode: decode_client,
            bound: frame_bound_client,
        },
        Target {
            name: "context tokens",
            corpus: contexts(),
            decode: decode_context,
            bound: payload_bound,
        },
        Target {
            name: "sibling sets",
            corpus: sibling_sets()
                .iter()
                .map(|set| encode(&|out| set.encode(out)))
                .collect(),
            decode: decode_sibling_set,
            bound: payload_bound,
        },
        Target {
            name: "replica messages",
            corpus: replica_messages()
                .iter()
                .map(|m| encode(&|out| m.encode(out)))
                .collect(),
            decode: decode_replica_message,
            bound: payload_bound,
        },
        Target {
            name: "membership messages and state",
            corpus: membership_messages()
                .iter()
                .map(|m| encode(&|out| m.encode(out)))
                .chain(
                    membership_states()
                        .iter()
                        .map(|s| encode(&|out| s.encode(out))),
                )
                .collect(),
            decode: decode_membership,
            bound: payload_bound,
        },
        Target {
            name: "gossip payloads",
            corpus: membership_messages()
                .iter()
                .map(|m| wire_check::gossip_frame(m, 3)[4 + 13..].to_vec())
                .collect(),
            decode: decode_gossip,
            bound: payload_bound,
        },
        Target {
            name: "runtime internode frames",
            corpus: replica_messages()
                .iter()
                .map(wire_check::replica_frame)
                .chain(
                    membership_messages()
                        .iter()
                        .map(|m| wire_check::gossip_frame(m, 3)),
                )
                .collect(),
            decode: decode_runtime_internode,
            bound: frame_bound_internode,
        },
        Target {
            name: "flatbuffers internode frames",
            corpus: flatbuffers_internode_frames(),
            decode: decode_flatbuffers_internode,
            bound: frame_bound_flatbuffers,
        },
    ]
}

/// Feeds one input; panics (with the target's name) if the decoder panicked
/// or held more than its bound. Returns whether it was accepted and the peak.
fn feed(target: &Target, input: &[u8], what: &str) -> (bool, usize) {
    let decode = target.decode;
    let (outcome, peak) = measure(|| std::panic::catch_unwind(|| decode(input)));
    let accepted = match outcome {
        Ok(accepted) => accepted,
        Err(_) => panic!("{}: decoder panicked on {what}: {input:02x?}", target.name),
    };
    let bound = (target.bound)(input.len());
    assert!(
        peak <= bound,
        "{}: {what} ({} bytes) held {peak} bytes at once, bound {bound}: {input:02x?}",
        target.name,
        input.len()
    );
    (accepted, peak)
}

#[test]
fn every_corpus_entry_decodes() {
    for target in targets() {
        assert!(!target.corpus.is_empty(), "{}", target.name);
        for input in &target.corpus {
            let (accepted, _) = feed(&target, input, "corpus entry");
            assert!(accepted, "{}: a valid encoding was refused", target.name);
        }
    }
}

#[test]
fn every_byte_mutated_never_panics_or_over_allocates() {
    for target in targets() {
        let (mut tried, mut accepted, mut peak_max) = (0usize, 0usize, 0usize);
        for input in &target.corpus {
            for position in 0..input.len() {
                let original = input[position];
                for value in [0x00u8, 0x01, 0x7f, 0x80, 0xff, original ^ 0x01] {
                    if value == original {
                        continue;
                    }
                    let mut mutant = input.clone();
                    mutant[position] = value;
                    let (ok, peak) =
                        feed(&target, &mutant, &format!("byte {position} = {value:#04x}"));
                    tried += 1;
                    accepted += usize::from(ok);
                    peak_max = peak_max.max(peak);
                }
            }
        }
        // Checksummed and canonical encodings refuse most mutants; if every
        // mutant were accepted the decoder would be checking nothing.
        assert!(
            accepted < tried,
            "{}: all {tried} mutants accepted",
            target.name
        );
        eprintln!(
            "{}: {tried} mutants, {accepted} accepted, peak allocation {peak_max} bytes",
            target.name
        );
    }
}

#[test]
fn every_truncation_never_panics_or_over_allocates() {
    for target in targets() {
        for input in &target.corpus {
            for len in 0..input.len() {
                feed(&target, &input[..len], &format!("truncated to {len}"));
            }
        }
    }
}

#[test]
fn the_allocation_check_catches_a_decoder_that_trusts_a_length() {
    // A deliberately careless decoder: pre-allocates what a length field
    // claims. The bound used above must flag it, or the check proves nothing.
    fn careless(bytes: &[u8]) -> bool {
        let Some(prefix) = bytes.get(..4) else {
            return false;
        };
        let claimed = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let buffer: Vec<u8> = Vec::with_capacity(claimed.min(1 << 26));
        std::hint::black_box(&buffer);
        true
    }
    let target = Target {
        name: "careless",
        corpus: vec![vec![4, 0, 0, 0, 1, 2, 3, 4]],
        decode: careless,
        bound: payload_bound,
    };
    let mut mutant = target.corpus[0].clone();
    mutant[3] = 0x01; // claims 16 MiB
    let outcome = std::panic::catch_unwind(|| feed(&target, &mutant, "length mutant"));
    assert!(outcome.is_err(), "an over-allocation went unnoticed");
}
