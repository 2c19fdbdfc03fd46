//! Table-driven tests of the quorum logic (raft-rs style): each case names
//! the Dynamo section it checks. One coordinator runs against an in-memory
//! map standing for its own store; replica answers are injected by hand.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;
use crate::membership::NodeId;
use crate::version::{SiblingSet, Value, VersionError, VersionVector};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);
const D: NodeId = NodeId(4);
const E: NodeId = NodeId(5);

type MapStore = BTreeMap<(Namespace, u32, Bytes), (Bytes, bool)>;

struct Harness {
    replica: Replica,
    store: MapStore,
    now_ms: u64,
    sent: Vec<Transmit>,
    replies: Vec<ClientReply>,
    /// When set, reads of the hint namespace are held here instead of
    /// answered (a slow disk, or a driver that delays them) until
    /// `release_hint_reads`.
    hold_hint_reads: bool,
    held: Vec<IoRequest>,
}

impl Harness {
    fn new(me: NodeId, quorum: QuorumConfig) -> Harness {
        let config = ReplicaConfig {
            quorum,
            request_timeout_ms: 1_000,
            replica_timeout_ms: 100,
            hint_replay_interval_ms: 50,
            hint_replay_batch_max: 4,
        };
        let mut harness = Harness {
            replica: Replica::new(me, actor_id(me, 0, 1), config, 0),
            store: MapStore::new(),
            now_ms: 0,
            sent: Vec::new(),
            replies: Vec::new(),
            hold_hint_reads: false,
            held: Vec::new(),
        };
        harness.pump();
        harness
    }

    /// Runs storage I/O to completion and collects the outputs.
    fn pump(&mut self) {
        while let Some(io) = self.replica.poll_io() {
            if self.hold_hint_reads
                && matches!(
                    io,
                    IoRequest::Read {
                        namespace: Namespace::Hint,
                        ..
                    }
                )
            {
                self.held.push(io);
                continue;
            }
            self.perform(io);
        }
        self.collect();
    }

    /// Answers the held hint reads (and whatever I/O they lead to).
    fn release_hint_reads(&mut self) {
        self.hold_hint_reads = false;
        for io in std::mem::take(&mut self.held) {
            self.perform(io);
        }
        self.pump();
    }

    /// Performs one storage request on the map and hands back its result.
    fn perform(&mut self, io: IoRequest) {
        let (id, result) = match io {
            IoRequest::Read {
                io,
                namespace,
                partition,
                key,
            } => {
                let value = self
                    .store
                    .get(&(namespace, partition, key))
                    .map(|(bytes, _)| bytes.clone());
                (io, IoResult::Read(value))
            }
            IoRequest::Write {
                io,
                namespace,
                partition,
                key,
                payload,
                durable,
                ..
            } => {
                self.store
                    .insert((namespace, partition, key), (payload, durable));
                (io, IoResult::Done)
            }
            IoRequest::Delete {
                io,
                namespace,
                partition,
                key,
            } => {
                self.store.remove(&(namespace, partition, key));
                (io, IoResult::Done)
            }
            IoRequest::ListHints { io } => (io, IoResult::HintKeys(Vec::new())),
        };
        self.replica.handle_io_done(self.now_ms, id, result);
    }

    /// Drains the machine's messages and replies.
    fn collect(&mut self) {
        while let Some(transmit) = self.replica.poll_transmit() {
            // Every message survives its own codec.
            let mut bytes = Vec::new();
            transmit.message.encode(&mut bytes);
            assert_eq!(ReplicaMessage::decode(&bytes), Ok(transmit.message.clone()));
            self.sent.push(transmit);
        }
        while let Some(reply) = self.replica.poll_reply() {
            self.replies.push(reply);
        }
    }

    fn put(&mut self, context: VersionVector, value: &str) {
        self.replica.start_put(
            self.now_ms,
            7,
            PutRequest {
                key: Bytes::from_static(b"k"),
                partition: 0,
                context,
                value: Value::Data(Bytes::copy_from_slice(value.as_bytes())),
                preference: preference(),
                quorum: None,
            },
        );
        self.pump();
    }

    fn get(&mut self, r: Option<usize>) {
        self.replica.start_get(
            self.now_ms,
            8,
            GetRequest {
                key: Bytes::from_static(b"k"),
                partition: 0,
                preference: preference(),
                r,
            },
        );
        self.pump();
    }

    fn deliver(&mut self, from: NodeId, message: ReplicaMessage) {
        self.replica.handle_message(self.now_ms, from, message);
        self.pump();
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.replica.handle_timeout(self.now_ms);
        self.pump();
    }

    /// The requests sent to `to` so far, removed from `sent`.
    fn take_sent_to(&mut self, to: NodeId) -> Vec<ReplicaMessage> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.sent.drain(..).partition(|t| t.to == to);
        self.sent = rest;
        mine.into_iter().map(|t| t.message).collect()
    }

    fn stored(&self, namespace: Namespace, key: &[u8]) -> Option<SiblingSet> {
        self.store
            .get(&(namespace, 0, Bytes::copy_from_slice(key)))
            .map(|(bytes, _)| SiblingSet::decode(bytes).expect("stored sets decode"))
    }
}

fn preference() -> Preference {
    Preference {
        primaries: vec![A, B, C],
        fallbacks: vec![D, E],
    }
}

fn req_of(message: &ReplicaMessage) -> RequestId {
    match message {
        ReplicaMessage::PutReplica { req, .. }
        | ReplicaMessage::GetReplica { req, .. }
        | ReplicaMessage::HintReplay { req, .. } => *req,
        other => panic!("not a request: {other:?}"),
    }
}

fn set_with(actor: u64, values: &[&str]) -> SiblingSet {
    let mut set = SiblingSet::new();
    for value in values {
        // Blind updates: concurrent siblings.
        set.update(
            &VersionVector::new(),
            actor,
            Value::Data(Bytes::copy_from_slice(value.as_bytes())),
        )
        .expect("small set");
    }
    set
}

/// What a remote replica does with a PutReplica in a put case.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Buffered,
    Durable,
    Silent,
}

#[test]
fn put_quorum_table() {
    use Answer::*;
    struct Case {
        section: &'static str,
        quorum: QuorumConfig,
        answers: [Answer; 2],
        expect: Result<(usize, usize), (usize, usize)>,
    }
    let q = |w, dw| QuorumConfig { n: 3, r: 2, w, dw };
    let cases = [
        Case {
            section: "§4.5 W=2: coordinator plus one replica",
            quorum: q(2, 1),
            answers: [Buffered, Silent],
            expect: Ok((2, 1)),
        },
        Case {
            section: "§4.5 W=1: the coordinator's durable write alone",
            quorum: q(1, 1),
            answers: [Silent, Silent],
            expect: Ok((1, 1)),
        },
        Case {
            section: "§4.5 W=3 with one replica silent fails and says how far it got",
            quorum: q(3, 1),
            answers: [Buffered, Silent],
            expect: Err((2, 1)),
        },
        Case {
            section: "§6.1 DW=2: buffered replica acks do not count as durable",
            quorum: q(2, 2),
            answers: [Buffered, Buffered],
            expect: Err((3, 1)),
        },
        Case {
            section: "§6.1 DW=2 met by one durable replica",
            quorum: q(2, 2),
            answers: [Buffered, Durable],
            expect: Ok((3, 2)),
        },
        Case {
            section: "§6.1 DW=0: buffered everywhere is enough",
            quorum: q(2, 0),
            answers: [Silent, Buffered],
            expect: Ok((2, 0)),
        },
    ];
    for case in cases {
        let mut h = Harness::new(A, case.quorum);
        // No fallbacks are reachable, so silence is not papered over by a
        // hint (that is the next test).
        h.replica.set_reachable(D, false);
        h.replica.set_reachable(E, false);
        h.put(VersionVector::new(), "v");
        let stored = h.store.values().next().expect("coordinator wrote first");
        assert_eq!(stored.1, case.quorum.dw >= 1, "{}", case.section);
        for (node, answer) in [(B, case.answers[0]), (C, case.answers[1])] {
            let sent = h.take_sent_to(node);
            assert_eq!(sent.len(), 1, "{}", case.section);
            let req = req_of(&sent[0]);
            match answer {
                Buffered => h.deliver(
                    node,
                    ReplicaMessage::PutAck {
                        req,
                        durable: false,
                    },
                ),
                Durable => h.deliver(node, ReplicaMessage::PutAck { req, durable: true }),
                Silent => {}
            }
        }
        h.advance(100);
        h.advance(1_000);
        let result = match h.replies.as_slice() {
            [ClientReply::Put { id: 7, result }] => result.clone(),
            other => panic!("{}: replies {other:?}", case.section),
        };
        match (result, case.expect) {
            (Ok(outcome), Ok((acks, durable_acks))) => {
                assert_eq!(
                    (outcome.acks, outcome.durable_acks),
                    (acks, durable_acks),
                    "{}",
                    case.section
                );
            }
            (
                Err(ReplicaError::PutQuorumFailed {
                    acks, durable_acks, ..
                }),
                Err(expected),
            ) => assert_eq!((acks, durable_acks), expected, "{}", case.section),
            (result, expect) => panic!("{}: got {result:?}, want {expect:?}", case.section),
        }
    }
}

#[test]
fn duplicate_acks_count_once() {
    // §4.5: W counts distinct replicas; a duplicated packet is not a replica.
    let mut h = Harness::new(
        A,
        QuorumConfig {
            n: 3,
            r: 2,
            w: 3,
            dw: 1,
        },
    );
    h.put(VersionVector::new(), "v");
    let req = req_of(&h.take_sent_to(B)[0]);
    h.deliver(
        B,
        ReplicaMessage::PutAck {
            req,
            durable: false,
        },
    );
    h.deliver(
        B,
        ReplicaMessage::PutAck {
            req,
            durable: false,
        },
    );
    // An ack for B's request coming from C is not C's ack either.
    h.deliver(
        C,
        ReplicaMessage::PutAck {
            req,
            durable: false,
        },
    );
    assert!(h.replies.is_empty(), "two of three acks: {:?}", h.replies);
}

#[test]
fn sloppy_quorum_sends_hint_to_first_healthy_fallback() {
    // §4.6: B is believed down, so D (first fallback) takes the write as a
    // hint for B; C stays silent past the replica timeout, so E takes one
    // for C.
    let mut h = Harness::new(A, QuorumConfig::default());
    h.replica.set_reachable(B, false);
    h.put(VersionVector::new(), "v");
    assert!(h.take_sent_to(B).is_empty());
    let to_d = h.take_sent_to(D);
    assert!(matches!(
        to_d.as_slice(),
        [ReplicaMessage::PutReplica {
            hint_for: Some(B),
            ..
        }]
    ));
    assert_eq!(h.take_sent_to(C).len(), 1);
    let ack = ReplicaMessage::PutAck {
        req: req_of(&to_d[0]),
        durable: true,
    };
    h.deliver(D, ack);
    // W=2 is met by A's own write and D's hint.
    assert!(matches!(
        h.replies.as_slice(),
        [ClientReply::Put {
            result: Ok(PutOutcome {
                acks: 2,
                durable_acks: 2,
                ..
            }),
            ..
        }]
    ));
    h.advance(100);
    assert_eq!(h.replica.poll_peer_timeout(), Some(C));
    assert_eq!(h.replica.poll_peer_timeout(), None);
    let to_e = h.take_sent_to(E);
    assert!(matches!(
        to_e.as_slice(),
        [ReplicaMessage::PutReplica {
            hint_for: Some(C),
            ..
        }]
    ));
    // The coordinator keeps the fan-out going after answering the client.
    assert_eq!(h.replica.requests_in_flight(), 1);
    let ack = ReplicaMessage::PutAck {
        req: req_of(&to_e[0]),
        durable: true,
    };
    h.deliver(E, ack);
    assert_eq!(h.replica.requests_in_flight(), 0);
}

#[test]
fn fallback_stores_hint_durably_and_deletes_only_after_primary_ack() {
    // §4.6: the hint is persisted, replayed when the primary is reachable,
    // kept while unacknowledged, deleted after the ack.
    let mut h = Harness::new(D, QuorumConfig::default());
    let set = set_with(actor_id(A, 0, 1), &["x"]);
    h.deliver(
        A,
        ReplicaMessage::PutReplica {
            req: 1,
            partition: 0,
            key: Bytes::from_static(b"k"),
            siblings: set.clone(),
            durable: false,
            hint_for: Some(B),
        },
    );
    assert_eq!(
        h.take_sent_to(A),
        vec![ReplicaMessage::PutAck {
            req: 1,
            durable: true
        }]
    );
    let hint = hint_key(B, b"k");
    assert!(
        h.store[&(Namespace::Hint, 0, hint.clone())].1,
        "hints are durable"
    );
    assert_eq!(h.replica.hint_count(), 1);

    h.replica.set_reachable(B, false);
    h.advance(50);
    assert!(
        h.take_sent_to(B).is_empty(),
        "no replay to an unreachable primary"
    );
    h.replica.set_reachable(B, true);
    h.advance(50);
    let replay = h.take_sent_to(B);
    assert_eq!(replay.len(), 1);
    // Not acknowledged: the replay times out and the hint stays.
    h.advance(100);
    assert_eq!(h.replica.hint_count(), 1);
    h.advance(50);
    let replay = h.take_sent_to(B);
    assert!(
        matches!(replay.as_slice(), [ReplicaMessage::HintReplay { siblings, .. }] if *siblings == set)
    );
    h.deliver(
        B,
        ReplicaMessage::HintAck {
            req: req_of(&replay[0]),
        },
    );
    assert_eq!(h.replica.hint_count(), 0);
    assert!(!h.store.contains_key(&(Namespace::Hint, 0, hint)));
}

#[test]
fn replica_merges_never_overwrites() {
    // §4.4: two concurrent versions arriving from two coordinators both
    // survive on the replica, as siblings.
    let mut h = Harness::new(C, QuorumConfig::default());
    for (from, value) in [(A, "from-a"), (B, "from-b")] {
        h.deliver(
            from,
            ReplicaMessage::PutReplica {
                req: 9,
                partition: 0,
                key: Bytes::from_static(b"k"),
                siblings: set_with(actor_id(from, 0, 1), &[value]),
                durable: false,
                hint_for: None,
            },
        );
    }
    let stored = h.stored(Namespace::Data, b"k").expect("stored");
    assert_eq!(stored.sibling_count(), 2);
}

#[test]
fn put_with_unseen_context_keeps_siblings() {
    // §4.4: a put whose context did not see the stored version does not
    // replace it.
    let mut h = Harness::new(
        A,
        QuorumConfig {
            n: 3,
            r: 2,
            w: 1,
            dw: 1,
        },
    );
    h.put(VersionVector::new(), "first");
    h.put(VersionVector::new(), "second");
    assert_eq!(h.stored(Namespace::Data, b"k").unwrap().sibling_count(), 2);
    // With the context of what is stored, the put supersedes both.
    let context = h.stored(Namespace::Data, b"k").unwrap().context();
    h.put(context, "resolved");
    let stored = h.stored(Namespace::Data, b"k").unwrap();
    assert_eq!(stored.sibling_count(), 1);
}

#[test]
fn get_quorum_table() {
    // §4.5: a get waits for R replies; §5: it merges them, dropping only
    // dominated versions; §6.4: the first responder is reported.
    struct Case {
        section: &'static str,
        r: usize,
        /// Which remotes answer, with what.
        b: Option<Option<&'static str>>,
        c: Option<Option<&'static str>>,
        expect: Result<usize, usize>,
    }
    let cases = [
        Case {
            section: "§4.5 R=2: local plus one",
            r: 2,
            b: Some(Some("b")),
            c: None,
            expect: Ok(2),
        },
        Case {
            section: "§4.5 R=3 with one silent fails with the count",
            r: 3,
            b: Some(None),
            c: None,
            expect: Err(2),
        },
        Case {
            section: "§4.4 concurrent versions come back as siblings",
            r: 3,
            b: Some(Some("b")),
            c: Some(Some("c")),
            expect: Ok(3),
        },
        Case {
            section: "§4.5 R=1 answers from the coordinator alone",
            r: 1,
            b: None,
            c: None,
            expect: Ok(1),
        },
    ];
    for case in cases {
        let mut h = Harness::new(A, QuorumConfig::default());
        h.put(VersionVector::new(), "a");
        h.sent.clear();
        h.replies.clear();
        h.get(Some(case.r));
        for (node, answer) in [(B, case.b), (C, case.c)] {
            let sent = h.take_sent_to(node);
            let req = req_of(&sent[0]);
            if let Some(value) = answer {
                let siblings = value.map(|v| set_with(actor_id(node, 0, 1), &[v]));
                h.deliver(node, ReplicaMessage::GetReply { req, siblings });
            }
        }
        h.advance(1_000);
        // The setup put times out unacknowledged; only the get matters here.
        h.replies
            .retain(|reply| matches!(reply, ClientReply::Get { .. }));
        let result = match h.replies.as_slice() {
            [ClientReply::Get { id: 8, result }] => result.clone(),
            other => panic!("{}: {other:?}", case.section),
        };
        match (result, case.expect) {
            (Ok(outcome), Ok(siblings)) => {
                assert_eq!(
                    outcome.siblings.sibling_count(),
                    siblings,
                    "{}",
                    case.section
                );
                assert_eq!(outcome.context.clock, outcome.siblings.context());
                assert_eq!(
                    outcome.context.fastest_replica,
                    Some(A.0),
                    "{}",
                    case.section
                );
            }
            (Err(ReplicaError::GetQuorumFailed { replies, r }), Err(expected)) => {
                assert_eq!((replies, r), (expected, case.r), "{}", case.section);
            }
            (result, expect) => panic!("{}: got {result:?}, want {expect:?}", case.section),
        }
    }
}

#[test]
fn read_repair_updates_stale_replicas() {
    // §5: replicas whose copy lacks versions get the merged set.
    let mut h = Harness::new(A, QuorumConfig::default());
    h.put(VersionVector::new(), "a");
    h.sent.clear();
    h.get(None);
    let req_b = req_of(&h.take_sent_to(B)[0]);
    let req_c = req_of(&h.take_sent_to(C)[0]);
    h.deliver(
        B,
        ReplicaMessage::GetReply {
            req: req_b,
            siblings: None,
        },
    );
    let fresh = h.stored(Namespace::Data, b"k");
    h.deliver(
        C,
        ReplicaMessage::GetReply {
            req: req_c,
            siblings: fresh.clone(),
        },
    );
    let repairs_b = h.take_sent_to(B);
    assert!(matches!(
        repairs_b.as_slice(),
        [ReplicaMessage::PutReplica { siblings, hint_for: None, .. }] if Some(siblings) == fresh.as_ref()
    ));
    assert!(h.take_sent_to(C).is_empty(), "C is up to date");
}

#[test]
fn an_answered_get_lets_go_of_a_silent_replica_after_the_replica_timeout() {
    // One primary is dead: every get is answered by R = 2, and must not hold
    // its slot in the request table until the full request deadline (under
    // load that filled REQUESTS_MAX and refused requests as Overloaded).
    let mut h = Harness::new(A, QuorumConfig::default());
    h.put(VersionVector::new(), "a");
    h.advance(1_000); // the put's replicas never answered: it is over
    while h.replica.poll_peer_timeout().is_some() {}
    assert_eq!(h.replica.requests_in_flight(), 0);
    h.sent.clear();
    h.get(None);
    let req_b = req_of(&h.take_sent_to(B)[0]);
    let _silent_c = h.take_sent_to(C);
    let fresh = h.stored(Namespace::Data, b"k");
    h.deliver(
        B,
        ReplicaMessage::GetReply {
            req: req_b,
            siblings: fresh,
        },
    );
    assert!(matches!(
        h.replies.as_slice(),
        [.., ClientReply::Get { result: Ok(_), .. }]
    ));
    assert_eq!(h.replica.requests_in_flight(), 1, "still waiting for C");
    h.advance(100); // replica_timeout_ms
    assert_eq!(h.replica.requests_in_flight(), 0, "let go of silent C");
    assert_eq!(h.replica.poll_peer_timeout(), Some(C));

    // A get still short of R keeps waiting past the replica timeout.
    h.get(None);
    h.sent.clear();
    h.advance(100);
    assert_eq!(h.replica.requests_in_flight(), 1);
    h.advance(900); // request_timeout_ms
    assert_eq!(h.replica.requests_in_flight(), 0);
    assert!(matches!(
        h.replies.last(),
        Some(ClientReply::Get {
            result: Err(ReplicaError::GetQuorumFailed { .. }),
            ..
        })
    ));
}

#[test]
fn a_primary_believed_down_holds_no_request_slot_when_the_quorum_does_without_it() {
    let mut h = Harness::new(A, QuorumConfig::default());
    for down in [C, D, E] {
        h.replica.set_reachable(down, false);
    }
    // No fallback left in this preference list: C is still sent the write (the
    // detector may be wrong) but not waited for, since A and B make W = 2.
    h.put(VersionVector::new(), "a");
    assert_eq!(h.take_sent_to(C).len(), 1, "C is still tried");
    let put_b = h.take_sent_to(B);
    h.deliver(
        B,
        ReplicaMessage::PutAck {
            req: req_of(&put_b[0]),
            durable: false,
        },
    );
    assert!(matches!(
        h.replies.last(),
        Some(ClientReply::Put { result: Ok(_), .. })
    ));
    assert_eq!(h.replica.requests_in_flight(), 0, "not waiting for C");

    // A get is not sent to C at all while A and B make R = 2.
    h.get(None);
    assert!(h.take_sent_to(C).is_empty());
    let get_b = h.take_sent_to(B);
    let fresh = h.stored(Namespace::Data, b"k");
    h.deliver(
        B,
        ReplicaMessage::GetReply {
            req: req_of(&get_b[0]),
            siblings: fresh,
        },
    );
    assert!(matches!(
        h.replies.last(),
        Some(ClientReply::Get { result: Ok(_), .. })
    ));
    assert_eq!(h.replica.requests_in_flight(), 0);

    // With B down too, R = 2 needs C: both are asked, as before.
    h.replica.set_reachable(B, false);
    h.get(None);
    assert_eq!(h.take_sent_to(B).len(), 1);
    assert_eq!(h.take_sent_to(C).len(), 1);
}

#[test]
fn not_a_primary_and_bad_quorum_are_refused() {
    let mut h = Harness::new(D, QuorumConfig::default());
    h.put(VersionVector::new(), "v");
    assert!(matches!(
        h.replies.as_slice(),
        [ClientReply::Put {
            result: Err(ReplicaError::NotAPrimary { .. }),
            ..
        }]
    ));
    assert!(!QuorumConfig {
        n: 3,
        r: 4,
        w: 2,
        dw: 1
    }
    .is_valid());
    assert!(!QuorumConfig {
        n: 3,
        r: 2,
        w: 2,
        dw: 3
    }
    .is_valid());
    assert!(QuorumConfig::default().is_valid());
}

#[test]
fn messages_round_trip_and_garbage_never_panics() {
    let set = set_with(actor_id(A, 0, 1), &["x", "y"]);
    let messages = [
        ReplicaMessage::PutReplica {
            req: 1,
            partition: 2,
            key: Bytes::from_static(b"key"),
            siblings: set.clone(),
            durable: true,
            hint_for: Some(B),
        },
        ReplicaMessage::PutAck {
            req: 3,
            durable: false,
        },
        ReplicaMessage::GetReplica {
            req: 4,
            partition: 5,
            key: Bytes::new(),
        },
        ReplicaMessage::GetReply {
            req: 6,
            siblings: None,
        },
        ReplicaMessage::GetReply {
            req: 6,
            siblings: Some(set.clone()),
        },
        ReplicaMessage::HintReplay {
            req: 7,
            partition: 8,
            key: Bytes::from_static(b"k"),
            siblings: set,
        },
        ReplicaMessage::HintAck { req: 9 },
    ];
    // A deterministic xorshift drives the garbage.
    let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next();
    for message in messages {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        assert_eq!(ReplicaMessage::decode(&bytes), Ok(message));
        for cut in 0..bytes.len() {
            assert!(ReplicaMessage::decode(&bytes[..cut]).is_err());
        }
        for _ in 0..200 {
            let mut damaged = bytes.clone();
            let index = (next() % damaged.len() as u64) as usize;
            damaged[index] ^= (next() % 255 + 1) as u8;
            let _ = ReplicaMessage::decode(&damaged);
        }
    }
    for _ in 0..2_000 {
        let length = (next() % 64) as usize;
        let garbage: Vec<u8> = (0..length).map(|_| next() as u8).collect();
        let _ = ReplicaMessage::decode(&garbage);
    }
}

#[test]
fn hint_keys_round_trip() {
    let stored = hint_key(NodeId(0x0102_0304), b"cart");
    assert_eq!(
        parse_hint_key(&stored),
        Some((NodeId(0x0102_0304), Bytes::from_static(b"cart")))
    );
    assert_eq!(parse_hint_key(b"short"), None);
    assert_ne!(
        actor_id(A, 0, 1),
        actor_id(A, 0, 2),
        "a restart changes the actor"
    );
}

#[test]
fn concurrent_puts_on_one_coordinator_get_distinct_dots() {
    // §4.4: two blind puts started together both survive as siblings; the
    // per-key lock keeps the second update from reading a stale copy and
    // reissuing the first one's dot.
    let mut h = Harness::new(
        A,
        QuorumConfig {
            n: 3,
            r: 2,
            w: 1,
            dw: 1,
        },
    );
    for (id, value) in [(1, "x"), (2, "y")] {
        h.replica.start_put(
            0,
            id,
            PutRequest {
                key: Bytes::from_static(b"k"),
                partition: 0,
                context: VersionVector::new(),
                value: Value::Data(Bytes::from_static(value.as_bytes())),
                preference: preference(),
                quorum: None,
            },
        );
    }
    h.pump();
    let stored = h.stored(Namespace::Data, b"k").unwrap();
    let dots: Vec<_> = stored.siblings().map(|(dot, _)| dot).collect();
    assert_eq!(dots.len(), 2);
    assert_ne!(dots[0], dots[1]);
}

#[test]
fn put_with_a_context_never_seen_here_keeps_unseen_siblings() {
    // §4.4: a context from a read served elsewhere covers only what that
    // read saw; a sibling this coordinator holds and the client never saw
    // survives next to the new value.
    let mut h = Harness::new(
        A,
        QuorumConfig {
            n: 3,
            r: 2,
            w: 1,
            dw: 1,
        },
    );
    h.put(VersionVector::new(), "local");
    let foreign = VersionVector::from_entries(vec![(actor_id(B, 0, 1), 5)]).unwrap();
    h.put(foreign, "from-elsewhere");
    let stored = h.stored(Namespace::Data, b"k").unwrap();
    let values: Vec<_> = stored.data_values().into_iter().cloned().collect();
    assert_eq!(
        values,
        vec![
            Bytes::from_static(b"local"),
            Bytes::from_static(b"from-elsewhere")
        ]
    );
}

#[test]
fn a_key_locked_outside_the_machine_queues_machine_work_until_unlocked() {
    // The runtime's in-place put (N = W = 1) holds the per-key lock while
    // its write waits: a put through the machine on the same key must not
    // read the stored set before that write lands, or it would reissue the
    // in-place write's dot and lose its value (§4.4).
    let mut h = single_replica();
    let key = Bytes::from_static(b"k");
    assert!(!h.replica.key_busy(Namespace::Data, b"k"));
    let lock = h
        .replica
        .lock_key(Namespace::Data, key.clone())
        .expect("an unlocked key locks");
    assert!(h.replica.key_busy(Namespace::Data, b"k"));
    assert!(
        h.replica.lock_key(Namespace::Data, key.clone()).is_none(),
        "a locked key does not lock twice"
    );
    // The in-place writer updates the stored set under the shard's actor.
    let mut written = SiblingSet::new();
    written
        .update(
            &VersionVector::new(),
            h.replica.actor(),
            Value::Data(Bytes::from_static(b"in-place")),
        )
        .unwrap();
    h.queue_put(1, single_put(VersionVector::new(), "machine"));
    assert!(
        h.replica.poll_io().is_none(),
        "the machine's put waits for the lock"
    );
    let mut payload = Vec::new();
    written.encode(&mut payload);
    h.store.insert(
        (Namespace::Data, 0, key.clone()),
        (Bytes::from(payload), false),
    );
    h.replica.unlock_key(lock);
    h.pump();
    assert!(matches!(
        h.replies.as_slice(),
        [ClientReply::Put {
            id: 1,
            result: Ok(_)
        }]
    ));
    let stored = h.stored(Namespace::Data, b"k").unwrap();
    let dots: Vec<_> = stored.siblings().map(|(dot, _)| dot).collect();
    assert_eq!(dots.len(), 2, "both writes survive as siblings");
    assert_ne!(dots[0], dots[1]);
    assert!(!h.replica.key_busy(Namespace::Data, b"k"));
    // Unlocked with nothing queued: the key locks again.
    let lock = h
        .replica
        .lock_key(Namespace::Data, key)
        .expect("free again");
    h.replica.unlock_key(lock);
}

impl Harness {
    /// Makes this node (a fallback) hold `count` hints for primary `B`,
    /// keys `h0`, `h1`, ..., and forgets the acks it sent.
    fn hold_hints_for_b(&mut self, count: usize) {
        for i in 0..count {
            self.deliver(
                A,
                ReplicaMessage::PutReplica {
                    req: 1_000 + i as u64,
                    partition: 0,
                    key: Bytes::from(format!("h{i}")),
                    siblings: set_with(actor_id(A, 0, 1), &["x"]),
                    durable: false,
                    hint_for: Some(B),
                },
            );
        }
        assert_eq!(self.take_sent_to(A).len(), count, "every hint stored");
        assert_eq!(self.replica.hint_count(), count);
    }

    /// The replays sent to `B` so far (removed from `sent`), by request id.
    fn replays_to_b(&mut self) -> Vec<RequestId> {
        self.take_sent_to(B)
            .iter()
            .map(|message| match message {
                ReplicaMessage::HintReplay { req, .. } => *req,
                other => panic!("not a replay: {other:?}"),
            })
            .collect()
    }

    /// Peers reported to the failure detector so far.
    fn peer_timeouts(&mut self) -> Vec<NodeId> {
        std::iter::from_fn(|| self.replica.poll_peer_timeout()).collect()
    }
}

#[test]
fn hint_replay_starts_at_the_background_share_and_never_below_one_per_interval() {
    // Design guide §8 (Dynamo §6.5): background work takes the share's pace.
    // The harness allows 4 replays per 50 ms interval at full share; the
    // primary acknowledges each replay at once, so only the budget limits.
    // Table: (share, replays started in 10 intervals once the banked batch
    // is spent): full, half, a quarter, and two shares under the floor of
    // one replay per interval.
    for (share, expected) in [(1.0, 40), (0.5, 20), (0.25, 10), (0.125, 10), (0.0, 10)] {
        let mut h = Harness::new(D, QuorumConfig::default());
        h.hold_hints_for_b(100);
        h.replica.set_background_share(share);
        let mut per_interval = Vec::new();
        for interval in 0..11 {
            h.advance(50);
            let replays = h.replays_to_b();
            for req in &replays {
                h.deliver(B, ReplicaMessage::HintAck { req: *req });
            }
            if interval == 0 {
                // A fresh machine banks one batch.
                assert_eq!(replays.len(), 4, "share {share}: the banked batch");
            } else {
                per_interval.push(replays.len());
            }
        }
        assert_eq!(
            per_interval.iter().sum::<usize>(),
            expected,
            "share {share}: {per_interval:?}"
        );
        assert!(
            per_interval.iter().all(|&n| n >= 1),
            "share {share}: an interval without a replay: {per_interval:?}"
        );
        assert_eq!(
            h.replica.hint_count(),
            100 - 4 - expected,
            "acked hints deleted"
        );
        // Under full share only the in-flight bound limits; under less,
        // every tick after the bank held ready hints back.
        let deferred = if share == 1.0 { 0 } else { 10 };
        assert_eq!(h.replica.hint_replays_deferred(), deferred, "share {share}");
        assert!(
            h.peer_timeouts().is_empty(),
            "share {share}: a primary blamed"
        );
    }
}

#[test]
fn a_replay_slowed_before_its_send_never_times_out_nor_blames_its_primary() {
    // The replay deadline counts from the send of `HintReplay`: a hint read
    // that waits five replica timeouts (a paced or slow disk), or a delete
    // that waits as long after the ack, is this node's own delay and must
    // not report a primary that answers in time (§4.6 with §6.5 pacing).
    let mut h = Harness::new(D, QuorumConfig::default());
    h.hold_hints_for_b(2);
    h.hold_hint_reads = true;
    h.advance(50);
    assert_eq!(h.held.len(), 2, "both replays started with their reads");
    for _ in 0..10 {
        h.advance(50);
    }
    assert!(h.replays_to_b().is_empty(), "nothing sent before the read");
    assert_eq!(h.held.len(), 2, "a replay being read is not restarted");
    assert!(
        h.peer_timeouts().is_empty(),
        "the primary was blamed for our read"
    );

    h.release_hint_reads();
    let replays = h.replays_to_b();
    assert_eq!(replays.len(), 2);
    // Answered within the replica timeout (100 ms) of the send.
    h.advance(50);
    assert!(h.peer_timeouts().is_empty());
    // The deletes after the acks are slow too.
    h.hold_hint_reads = true;
    for req in replays {
        h.deliver(B, ReplicaMessage::HintAck { req });
    }
    for _ in 0..10 {
        h.advance(50);
    }
    assert!(h.peer_timeouts().is_empty(), "blamed during our delete");
    assert!(
        h.replays_to_b().is_empty(),
        "an acknowledged hint replayed again"
    );
    h.release_hint_reads();
    assert_eq!(
        h.replica.hint_count(),
        0,
        "both hints deleted after their acks"
    );

    // A primary that does not answer a sent replay is still reported, once
    // per replay, and a late ack of the timed-out request is ignored.
    h.hold_hints_for_b(1);
    h.advance(50);
    let replays = h.replays_to_b();
    assert_eq!(replays.len(), 1);
    h.advance(50);
    assert!(
        h.peer_timeouts().is_empty(),
        "50 ms after the send: in time"
    );
    h.advance(50);
    assert_eq!(
        h.peer_timeouts(),
        vec![B],
        "100 ms after the send: timed out"
    );
    h.deliver(B, ReplicaMessage::HintAck { req: replays[0] });
    assert_eq!(h.replica.hint_count(), 1, "a late ack deletes nothing");
    h.advance(50);
    let retry = h.replays_to_b();
    assert_eq!(retry.len(), 1, "replayed again");
    assert_ne!(retry[0], replays[0], "under a new request id");
    h.deliver(B, ReplicaMessage::HintAck { req: retry[0] });
    assert_eq!(h.replica.hint_count(), 0);
    assert!(h.peer_timeouts().is_empty());
}

#[test]
fn only_hint_replay_reads_count_as_background_work() {
    // The runtime runs hint replay's storage work in the background queue
    // (design guide §8) and a fallback's store of a hint for a waiting put
    // in the foreground: the machine tells them apart by request id.
    let held_ids = |h: &Harness| -> Vec<IoId> {
        h.held
            .iter()
            .map(|io| match io {
                IoRequest::Read { io, .. } => *io,
                other => panic!("held: {other:?}"),
            })
            .collect()
    };
    let mut h = Harness::new(D, QuorumConfig::default());
    h.hold_hint_reads = true;
    h.deliver(
        A,
        ReplicaMessage::PutReplica {
            req: 1,
            partition: 0,
            key: Bytes::from_static(b"k"),
            siblings: set_with(actor_id(A, 0, 1), &["x"]),
            durable: false,
            hint_for: Some(B),
        },
    );
    let store_read = held_ids(&h);
    assert_eq!(store_read.len(), 1);
    assert!(!h.replica.is_hint_replay_io(store_read[0]), "a hint store");
    h.release_hint_reads();
    assert_eq!(h.replica.hint_count(), 1);

    h.hold_hint_reads = true;
    h.advance(50);
    let replay_read = held_ids(&h);
    assert_eq!(replay_read.len(), 1);
    assert!(
        h.replica.is_hint_replay_io(replay_read[0]),
        "a replay's read"
    );
    h.release_hint_reads();
    let replays = h.replays_to_b();
    h.hold_hint_reads = true;
    h.deliver(B, ReplicaMessage::HintAck { req: replays[0] });
    let delete_read = held_ids(&h);
    assert_eq!(delete_read.len(), 1);
    assert!(
        h.replica.is_hint_replay_io(delete_read[0]),
        "a delete's read"
    );
    h.release_hint_reads();
    assert_eq!(h.replica.hint_count(), 0);
}

// ---------------------------------------------------------------------------
// A hot key's queue rides on one write (`Replica::absorb_queued`).

/// An N = W = 1 harness and the request of a put of `value` to key "k" with
/// `context`.
fn single_replica() -> Harness {
    Harness::new(
        A,
        QuorumConfig {
            n: 1,
            r: 1,
            w: 1,
            dw: 0,
        },
    )
}

fn single_put(context: VersionVector, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::from_static(b"k"),
        partition: 0,
        context,
        value: Value::Data(Bytes::copy_from_slice(value.as_bytes())),
        preference: Preference {
            primaries: vec![A],
            fallbacks: vec![],
        },
        quorum: None,
    }
}

impl Harness {
    /// Runs the machine's storage requests like `pump`, counting the reads
    /// and writes of data key "k".
    fn pump_counting(&mut self) -> (usize, usize) {
        let (mut reads, mut writes) = (0, 0);
        while let Some(io) = self.replica.poll_io() {
            match &io {
                IoRequest::Read {
                    namespace: Namespace::Data,
                    ..
                } => reads += 1,
                IoRequest::Write {
                    namespace: Namespace::Data,
                    ..
                } => writes += 1,
                _ => {}
            }
            self.perform(io);
        }
        self.collect();
        (reads, writes)
    }

    /// The data values stored for key "k", in sibling order.
    fn stored_values(&self) -> Vec<String> {
        self.stored(Namespace::Data, b"k")
            .expect("k is stored")
            .data_values()
            .into_iter()
            .map(|value| String::from_utf8(value.to_vec()).expect("utf-8 test values"))
            .collect()
    }

    /// Takes the lock of data key "k", as a waiting in-place write does.
    fn lock_k(&mut self) -> KeyLock {
        self.replica
            .lock_key(Namespace::Data, Bytes::from_static(b"k"))
            .expect("unlocked")
    }

    /// Starts put `id` now; it queues while "k" is locked.
    fn queue_put(&mut self, id: u64, request: PutRequest) {
        self.replica.start_put(self.now_ms, id, request);
    }

    /// The put replies so far, by client id.
    fn put_results(&self) -> BTreeMap<u64, Result<PutOutcome, ReplicaError>> {
        self.replies
            .iter()
            .filter_map(|reply| match reply {
                ClientReply::Put { id, result } => Some((*id, result.clone())),
                ClientReply::Get { .. } => None,
            })
            .collect()
    }
}

#[test]
fn puts_queued_on_a_hot_key_ride_on_one_write_each_with_its_own_context() {
    let mut h = single_replica();
    let lock = h.lock_k();
    // Five blind puts queue behind the lock (a waiting in-place write).
    for id in 1..=5 {
        h.queue_put(id, single_put(VersionVector::new(), &format!("v{id}")));
    }
    assert!(h.replica.poll_io().is_none(), "all wait for the lock");
    h.replica.unlock_key(lock);
    assert_eq!(
        h.pump_counting(),
        (1, 1),
        "one read and one write for the five puts"
    );
    assert_eq!(h.replica.riders_total(), 4);
    let results = h.put_results();
    assert_eq!(results.len(), 5);
    let actor = h.replica.actor();
    // Each put's context is the clock of the set it would have written
    // alone, after the puts queued before it: its own dot and theirs, never
    // a later put's (that would let the client supersede a value it never
    // read).
    for (id, result) in &results {
        let outcome = result.as_ref().expect("every put succeeds");
        assert_eq!(outcome.acks, 1);
        assert_eq!(outcome.context.entries(), &[(actor, *id)]);
    }
    let stored = h.stored(Namespace::Data, b"k").unwrap();
    assert_eq!(stored.sibling_count(), 5, "blind puts are siblings");
    // A put with the second put's context supersedes the first two only.
    let second = results[&2].as_ref().unwrap().context.clone();
    h.queue_put(6, single_put(second, "v6"));
    h.pump();
    assert_eq!(h.stored_values(), ["v3", "v4", "v5", "v6"]);
}

#[test]
fn a_refused_rider_is_answered_alone_and_the_others_still_write() {
    let mut h = single_replica();
    // The key holds one sibling fewer than the bound.
    let full: Vec<String> = (0..crate::version::SIBLINGS_MAX - 1)
        .map(|i| format!("s{i}"))
        .collect();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let stored = set_with(actor_id(B, 0, 1), &full);
    let mut payload = Vec::new();
    stored.encode(&mut payload);
    h.store.insert(
        (Namespace::Data, 0, Bytes::from_static(b"k")),
        (Bytes::from(payload), false),
    );
    let lock = h.lock_k();
    // The first blind put reaches the bound, the second would pass it, the
    // third read the 63 and supersedes them.
    h.queue_put(1, single_put(VersionVector::new(), "fills"));
    h.queue_put(2, single_put(VersionVector::new(), "one too many"));
    h.queue_put(3, single_put(stored.context(), "merged"));
    h.replica.unlock_key(lock);
    assert_eq!(h.pump_counting(), (1, 1));
    let results = h.put_results();
    assert!(results[&1].is_ok());
    assert!(
        matches!(
            results[&2],
            Err(ReplicaError::Version(VersionError::SiblingsOverflow { .. }))
        ),
        "{:?}",
        results[&2]
    );
    assert!(results[&3].is_ok());
    assert_eq!(h.stored_values(), ["fills", "merged"]);
}

#[test]
fn riders_share_the_write_failure_and_acknowledge_only_after_the_write() {
    let mut h = single_replica();
    let lock = h.lock_k();
    h.queue_put(1, single_put(VersionVector::new(), "a"));
    // A remote coordinator's replica write of the same key queues too.
    h.replica.handle_message(
        0,
        B,
        ReplicaMessage::PutReplica {
            req: 77,
            partition: 0,
            key: Bytes::from_static(b"k"),
            siblings: set_with(actor_id(B, 0, 1), &["remote"]),
            durable: false,
            hint_for: None,
        },
    );
    h.queue_put(2, single_put(VersionVector::new(), "b"));
    h.replica.unlock_key(lock);
    let read = h.replica.poll_io().expect("the leader reads");
    assert!(matches!(read, IoRequest::Read { .. }));
    h.perform(read);
    let write = h.replica.poll_io().expect("one write for all three");
    assert!(h.replica.poll_io().is_none());
    let IoRequest::Write { io, payload, .. } = write else {
        panic!("expected the write, got {write:?}");
    };
    assert_eq!(SiblingSet::decode(&payload).unwrap().sibling_count(), 3);
    h.collect();
    assert!(
        h.replies.is_empty() && h.sent.is_empty(),
        "nothing before the write"
    );
    h.replica
        .handle_io_done(0, io, IoResult::Failed("disk on fire".into()));
    h.collect();
    let results = h.put_results();
    assert!(matches!(results[&1], Err(ReplicaError::Storage(_))));
    assert!(matches!(results[&2], Err(ReplicaError::Storage(_))));
    assert!(
        h.take_sent_to(B).is_empty(),
        "the replica write is not acknowledged"
    );
    assert!(!h.replica.key_busy(Namespace::Data, b"k"));
}

#[test]
fn a_purge_queued_between_puts_reads_what_the_puts_before_it_wrote() {
    let mut h = single_replica();
    let lock = h.lock_k();
    h.queue_put(1, single_put(VersionVector::new(), "a"));
    h.queue_put(2, single_put(VersionVector::new(), "b"));
    // Judged collectable before the puts: it must not purge them.
    h.replica
        .start_purge(0, Bytes::from_static(b"k"), SiblingSet::new());
    h.queue_put(3, single_put(VersionVector::new(), "c"));
    h.replica.unlock_key(lock);
    // Two puts on one write, the purge's read (no write: the set changed),
    // the last put's read and write.
    assert_eq!(h.pump_counting(), (3, 2));
    assert_eq!(h.put_results().len(), 3);
    assert_eq!(h.stored(Namespace::Data, b"k").unwrap().sibling_count(), 3);
}

/// One local operation on key "k" for `coalesced_queue_answers_as_one_at_a_time`.
#[derive(Clone, Debug)]
enum QueuedOp {
    Put {
        id: u64,
        context: VersionVector,
        durable: bool,
    },
    /// A remote coordinator's replica write.
    Merge {
        req: u64,
        siblings: SiblingSet,
        durable: bool,
    },
    Purge,
}

fn run_queued_op(h: &mut Harness, op: &QueuedOp) {
    match op {
        QueuedOp::Put {
            id,
            context,
            durable,
        } => {
            let mut request = single_put(context.clone(), &format!("v{id}"));
            request.quorum = Some(QuorumConfig {
                n: 1,
                r: 1,
                w: 1,
                dw: usize::from(*durable),
            });
            h.replica.start_put(h.now_ms, *id, request);
        }
        QueuedOp::Merge {
            req,
            siblings,
            durable,
        } => h.replica.handle_message(
            h.now_ms,
            B,
            ReplicaMessage::PutReplica {
                req: *req,
                partition: 0,
                key: Bytes::from_static(b"k"),
                siblings: siblings.clone(),
                durable: *durable,
                hint_for: None,
            },
        ),
        QueuedOp::Purge => h
            .replica
            .start_purge(0, Bytes::from_static(b"k"), SiblingSet::new()),
    }
}

#[test]
fn coalesced_queue_answers_as_one_at_a_time() {
    // Riding on one write must be invisible: every reply, every
    // acknowledgement and the stored set equal those of running the same
    // operations one after another, each reading what the last wrote.
    let mut rng = crate::test_rng::Rng(0x0dd_c0a1_e5ce);
    for case in 0..400u64 {
        let count = 2 + rng.below(14);
        let mut ops = Vec::new();
        for i in 0..count {
            let durable = rng.below(4) == 0;
            ops.push(match rng.below(10) {
                0..=5 => {
                    // A context naming some of the puts so far (a client
                    // that read part of the history), or none (blind).
                    let seen = rng.below(i + 1);
                    let context = if seen == 0 {
                        VersionVector::new()
                    } else {
                        VersionVector::from_entries(vec![(actor_id(A, 0, 1), seen)]).unwrap()
                    };
                    QueuedOp::Put {
                        id: 100 + i,
                        context,
                        durable,
                    }
                }
                6..=8 => {
                    let values: Vec<String> =
                        (0..=rng.below(2)).map(|v| format!("m{i}.{v}")).collect();
                    let values: Vec<&str> = values.iter().map(String::as_str).collect();
                    QueuedOp::Merge {
                        req: 500 + i,
                        siblings: set_with(actor_id(C, 0, 1 + i as u16), &values),
                        durable,
                    }
                }
                _ => QueuedOp::Purge,
            });
        }
        let mut alone = single_replica();
        for op in &ops {
            run_queued_op(&mut alone, op);
            alone.pump();
        }
        let mut queued = single_replica();
        let lock = queued.lock_k();
        for op in &ops {
            run_queued_op(&mut queued, op);
        }
        queued.replica.unlock_key(lock);
        let (reads, _) = queued.pump_counting();
        assert_eq!(
            queued.put_results(),
            alone.put_results(),
            "case {case}: {ops:?}"
        );
        assert_eq!(
            queued.take_sent_to(B),
            alone.take_sent_to(B),
            "case {case}: acknowledgements"
        );
        assert_eq!(
            queued.stored(Namespace::Data, b"k"),
            alone.stored(Namespace::Data, b"k"),
            "case {case}: stored set"
        );
        let purges = ops
            .iter()
            .filter(|op| matches!(op, QueuedOp::Purge))
            .count();
        assert!(
            reads <= 1 + 2 * purges,
            "case {case}: {reads} reads; a run of puts and merges reads once"
        );
    }
}

#[test]
fn at_most_riders_max_ride_on_one_write() {
    let mut h = single_replica();
    let actor = h.replica.actor();
    let lock = h.lock_k();
    // Each put supersedes the one before it (its context names that put's
    // dot), so the set stays one value however many there are.
    let count = RIDERS_MAX as u64 + 44;
    for id in 1..=count {
        let context = if id == 1 {
            VersionVector::new()
        } else {
            VersionVector::from_entries(vec![(actor, id - 1)]).unwrap()
        };
        h.queue_put(id, single_put(context, &format!("v{id}")));
    }
    h.replica.unlock_key(lock);
    // The leader and RIDERS_MAX riders, then the next leader and the rest.
    assert_eq!(h.pump_counting(), (2, 2));
    assert_eq!(h.replica.riders_total(), count - 2);
    let results = h.put_results();
    assert_eq!(results.len(), count as usize);
    assert!(results.values().all(Result::is_ok));
    assert_eq!(h.stored_values(), [format!("v{count}")]);
}
