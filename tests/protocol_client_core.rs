//! The sans-IO client core, driven by hand with a virtual clock: routing from
//! a table (Dynamo §6.4), out-of-order replies, the WrongOwner retry,
//! timeouts, unreachable nodes and the in-flight bound. No sockets.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dynakv::client::{
    key_hash, partition_of, ClientCore, ClientError, CoreOptions, IoStage, ReplicaId, Ticket,
    Transmit,
};
use dynakv::protocol::{
    decode_request, encode_response, ErrorCode, FrameDecoder, Limits, Quorum, Request,
    RequestFrame, Response, RoutingNode, RoutingTable, FRAME_BYTES_MAX, FRAME_LENGTH_BYTES,
};
use proptest::prelude::*;

const SEED: &str = "10.0.0.1:7000";

fn seed() -> SocketAddr {
    SEED.parse().unwrap()
}

/// Three nodes at 10.0.0.{1,2,3}, node-level port 7000, shards on 7001 and
/// 7002. Partition p's preference list starts at node (p + rotation) % 3.
fn table(epoch: u64, rotation: u32) -> RoutingTable {
    let nodes = (1..=3u8)
        .map(|i| RoutingNode {
            id: u64::from(i),
            addr: IpAddr::from([10, 0, 0, i]),
            client_port: 7000,
            shard_ports: vec![7001, 7002],
            weight: 2,
        })
        .collect();
    let partitions = (0..8u32)
        .map(|p| {
            (0..3)
                .map(|k| ((p + rotation + k) % 3, (p % 2) as u16))
                .collect()
        })
        .collect();
    RoutingTable {
        epoch,
        q: 8,
        n_val: 3,
        nodes,
        partitions,
    }
}

/// The endpoint of the `k`th owner of `key`'s partition in `table`.
fn owner(table: &RoutingTable, key: &[u8], k: usize) -> SocketAddr {
    let partition = partition_of(key_hash(key), table.q) as usize;
    let (node, shard) = table.partitions[partition][k];
    let node = &table.nodes[node as usize];
    SocketAddr::new(node.addr, node.shard_ports[usize::from(shard)])
}

fn get(key: &[u8]) -> Request {
    Request::Get {
        key: Bytes::copy_from_slice(key),
        quorum: Quorum::DEFAULT,
    }
}

/// What a node would read from a transmit.
fn requests_in(transmit: &Transmit) -> Vec<RequestFrame> {
    let mut buf = BytesMut::from(&transmit.bytes[..]);
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        frames.push(decode_request(frame, &Limits::default()).unwrap());
    }
    assert!(buf.is_empty());
    frames
}

fn reply(core: &mut ClientCore, now: Instant, from: SocketAddr, id: u64, response: Response) {
    let mut out = Vec::new();
    encode_response(id, &response, &mut out);
    let frame = Bytes::from(out).slice(FRAME_LENGTH_BYTES..);
    core.handle_frame(now, from, frame).unwrap();
}

fn options() -> CoreOptions {
    CoreOptions {
        timeout: Duration::from_millis(100),
        ..CoreOptions::default()
    }
}

/// A core that already holds `table(1, 0)`.
fn core_with_table(now: Instant) -> ClientCore {
    core_with_table_and(now, options())
}

/// `core_with_table` with other options.
fn core_with_table_and(now: Instant, options: CoreOptions) -> ClientCore {
    let mut core = ClientCore::new(seed(), options);
    let ticket = core.submit(now, Request::GetRoutingTable).unwrap();
    let transmit = core.poll_transmit().unwrap();
    assert_eq!(transmit.target, seed());
    let frames = requests_in(&transmit);
    assert_eq!(frames[0].epoch, 0, "no epoch before a table is known");
    reply(
        &mut core,
        now,
        seed(),
        frames[0].id,
        Response::RoutingTable(table(1, 0)),
    );
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, ticket);
    assert_eq!(result.unwrap(), Response::RoutingTable(table(1, 0)));
    core
}

#[test]
fn partition_is_the_top_bits_of_xxh3_128() {
    assert_eq!(partition_of(u128::MAX, 256), 255);
    assert_eq!(partition_of(1 << 127, 2), 1);
    assert_eq!(partition_of((1 << 127) - 1, 2), 0);
    assert_eq!(partition_of(u128::MAX, 1), 0);
    assert_eq!(partition_of(0xabcd << 112, 16384), 0xabcd >> 2);
    // xxh3-128 with seed 0 of the empty input (the reference test vector).
    assert_eq!(key_hash(b""), 0x99aa06d3014798d86001c324468d497f);
}

#[test]
fn requests_go_to_the_seed_until_a_table_is_known_then_to_the_primary() {
    let now = Instant::now();
    let mut core = ClientCore::new(seed(), options());
    core.submit(now, get(b"alpha")).unwrap();
    assert_eq!(core.poll_transmit().unwrap().target, seed());

    let mut core = core_with_table(now);
    let table = table(1, 0);
    for key in [&b"alpha"[..], b"beta", b"gamma", b"delta", b"epsilon"] {
        core.submit(now, get(key)).unwrap();
        let transmit = core.poll_transmit().unwrap();
        assert_eq!(transmit.target, owner(&table, key, 0), "key {key:?}");
        assert_eq!(requests_in(&transmit)[0].epoch, 1, "routed with epoch 1");
    }
    // Key-less requests go to the seed.
    core.submit(now, Request::Ping).unwrap();
    assert_eq!(core.poll_transmit().unwrap().target, seed());
}

#[test]
fn pipelined_requests_share_one_transmit_and_replies_match_out_of_order() {
    let now = Instant::now();
    let mut core = ClientCore::new(seed(), options());
    let tickets: Vec<Ticket> = (0..5)
        .map(|_| core.submit(now, Request::Ping).unwrap())
        .collect();
    let transmit = core.poll_transmit().unwrap();
    assert!(core.poll_transmit().is_none(), "one buffer per target");
    let frames = requests_in(&transmit);
    assert_eq!(frames.len(), 5);
    // Answer in reverse order, with distinct replies to tell them apart.
    for (index, frame) in frames.iter().enumerate().rev() {
        let response = Response::Put {
            context: Bytes::from(vec![index as u8]),
        };
        reply(&mut core, now, seed(), frame.id, response);
    }
    let mut seen = Vec::new();
    while let Some((ticket, result)) = core.poll_completion() {
        let index = tickets.iter().position(|t| *t == ticket).unwrap();
        assert_eq!(
            result.unwrap(),
            Response::Put {
                context: Bytes::from(vec![index as u8])
            }
        );
        seen.push(index);
    }
    assert_eq!(seen, vec![4, 3, 2, 1, 0]);
    assert_eq!(core.in_flight(), 0);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn wrong_owner_with_a_table_is_retried_once_at_the_new_owner() {
    let now = Instant::now();
    let mut core = core_with_table(now);
    let ticket = core.submit(now, get(b"alpha")).unwrap();
    let first = core.poll_transmit().unwrap();
    let old_owner = owner(&table(1, 0), b"alpha", 0);
    assert_eq!(first.target, old_owner);
    let moved = table(2, 1);
    reply(
        &mut core,
        now,
        old_owner,
        requests_in(&first)[0].id,
        Response::Error {
            code: ErrorCode::WrongOwner,
            message: "moved".into(),
            acks: 0,
            routing: Some(moved.clone()),
        },
    );
    assert!(core.poll_completion().is_none(), "retried, not failed");
    assert_eq!(core.routing_table().unwrap().epoch, 2);
    let second = core.poll_transmit().unwrap();
    let new_owner = owner(&moved, b"alpha", 0);
    assert_ne!(new_owner, old_owner);
    assert_eq!(second.target, new_owner);
    let retry = &requests_in(&second)[0];
    assert_eq!(retry.epoch, 2);

    // A second WrongOwner ends the request with the server's error.
    reply(
        &mut core,
        now,
        new_owner,
        retry.id,
        Response::Error {
            code: ErrorCode::WrongOwner,
            message: "moved again".into(),
            acks: 0,
            routing: Some(table(3, 2)),
        },
    );
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, ticket);
    assert_eq!(
        result.unwrap_err(),
        ClientError::Server {
            code: ErrorCode::WrongOwner,
            message: "moved again".into(),
            acks: 0
        }
    );
    assert!(core.poll_transmit().is_none());
}

#[test]
fn wrong_owner_without_a_table_fetches_one_then_retries() {
    let now = Instant::now();
    let mut core = core_with_table(now);
    let ticket = core.submit(now, get(b"beta")).unwrap();
    let first = core.poll_transmit().unwrap();
    reply(
        &mut core,
        now,
        first.target,
        requests_in(&first)[0].id,
        Response::Error {
            code: ErrorCode::WrongOwner,
            message: "not mine".into(),
            acks: 0,
            routing: None,
        },
    );
    // The core asks the seed for the table, and holds the request.
    let fetch = core.poll_transmit().unwrap();
    assert_eq!(fetch.target, seed());
    let fetch_frames = requests_in(&fetch);
    assert_eq!(fetch_frames.len(), 1);
    assert_eq!(fetch_frames[0].request, Request::GetRoutingTable);
    assert!(core.poll_transmit().is_none());
    let moved = table(2, 2);
    reply(
        &mut core,
        now,
        seed(),
        fetch_frames[0].id,
        Response::RoutingTable(moved.clone()),
    );
    // The internal fetch is not reported; the request goes out again.
    assert!(core.poll_completion().is_none());
    let second = core.poll_transmit().unwrap();
    assert_eq!(second.target, owner(&moved, b"beta", 0));
    reply(
        &mut core,
        now,
        second.target,
        requests_in(&second)[0].id,
        Response::Get {
            found: false,
            siblings: vec![],
            context: Bytes::new(),
        },
    );
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, ticket);
    assert!(matches!(
        result.unwrap(),
        Response::Get { found: false, .. }
    ));
}

#[test]
fn timeouts_are_data_and_late_replies_are_dropped() {
    let start = Instant::now();
    let mut core = core_with_table(start);
    let ticket = core.submit(start, get(b"gamma")).unwrap();
    let transmit = core.poll_transmit().unwrap();
    let id = requests_in(&transmit)[0].id;
    let deadline = core.poll_timeout().unwrap();
    assert_eq!(deadline, start + Duration::from_millis(100));
    core.handle_timeout(deadline - Duration::from_millis(1));
    assert!(core.poll_completion().is_none(), "not yet");
    core.handle_timeout(deadline);
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, ticket);
    assert_eq!(
        result.unwrap_err(),
        ClientError::Timeout {
            addr: transmit.target,
            after: Duration::from_millis(100)
        }
    );
    // The reply arrives after all: nothing happens.
    reply(&mut core, deadline, transmit.target, id, Response::Delete);
    assert!(core.poll_completion().is_none());
    assert_eq!(core.in_flight(), 0);
}

#[test]
fn replies_from_the_wrong_target_are_ignored() {
    let now = Instant::now();
    let mut core = core_with_table(now);
    core.submit(now, get(b"delta")).unwrap();
    let transmit = core.poll_transmit().unwrap();
    let id = requests_in(&transmit)[0].id;
    let elsewhere: SocketAddr = "10.9.9.9:1".parse().unwrap();
    reply(&mut core, now, elsewhere, id, Response::Delete);
    assert!(core.poll_completion().is_none());
    reply(&mut core, now, transmit.target, id, Response::Delete);
    assert!(core.poll_completion().is_some());
}

#[test]
fn unreachable_primary_reroutes_unsent_requests_and_fails_sent_ones() {
    let now = Instant::now();
    let mut core = core_with_table_and(
        now,
        CoreOptions {
            failover_attempts: 0,
            ..options()
        },
    );
    let table = table(1, 0);
    let primary = owner(&table, b"alpha", 0);

    // Sent, then the connection breaks: the outcome is unknown, so it fails.
    let sent = core.submit(now, get(b"alpha")).unwrap();
    assert_eq!(core.poll_transmit().unwrap().target, primary);
    // Queued but not handed out: the connect fails, so it moves on.
    let unsent = core.submit(now, get(b"alpha")).unwrap();
    assert_eq!(core.pending_targets().collect::<Vec<_>>(), vec![primary]);
    core.handle_unreachable(
        now,
        primary,
        IoStage::Read,
        std::io::ErrorKind::ConnectionReset,
    );
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, sent);
    let error = result.unwrap_err();
    assert!(error.to_string().contains(&primary.to_string()), "{error}");
    let rerouted = core.poll_transmit().unwrap();
    assert_eq!(rerouted.target, owner(&table, b"alpha", 1));
    assert!(core.poll_completion().is_none());
    assert_eq!(core.in_flight(), 1);
    let id = requests_in(&rerouted)[0].id;
    reply(&mut core, now, rerouted.target, id, Response::Delete);
    assert_eq!(core.poll_completion().unwrap().0, unsent);

    // While quarantined the primary is skipped for new requests too...
    core.submit(now, get(b"alpha")).unwrap();
    assert_eq!(
        core.poll_transmit().unwrap().target,
        owner(&table, b"alpha", 1)
    );
    // ...and after `unreachable_for` it is tried again.
    let later = now + CoreOptions::default().unreachable_for;
    core.handle_timeout(later);
    core.submit(later, get(b"alpha")).unwrap();
    assert_eq!(core.poll_transmit().unwrap().target, primary);
}

/// Failover: a request already sent to a node whose connection breaks, or
/// that stays silent past `attempt_timeout`, goes to the next replica of the
/// preference list; the node is avoided meanwhile; the budget is bounded.
#[test]
fn sent_requests_fail_over_to_the_next_replica() {
    let now = Instant::now();
    let mut core = core_with_table_and(
        now,
        CoreOptions {
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(1),
            unreachable_for: Duration::from_secs(30),
            failover_attempts: 2,
            ..options()
        },
    );
    let table = table(1, 0);
    let [first, second, third] = [0, 1, 2].map(|k| owner(&table, b"alpha", k));

    // The connection to the primary breaks after the request was sent.
    let ticket = core.submit(now, get(b"alpha")).unwrap();
    assert_eq!(core.poll_transmit().unwrap().target, first);
    core.handle_unreachable(
        now,
        first,
        IoStage::Read,
        std::io::ErrorKind::ConnectionReset,
    );
    assert!(core.poll_completion().is_none(), "not failed: failed over");
    let retry = core.poll_transmit().unwrap();
    assert_eq!(retry.target, second);

    // The second replica stays silent: after attempt_timeout it counts as
    // down too and the third replica gets the request.
    core.handle_timeout(now + Duration::from_millis(999));
    assert!(core.poll_transmit().is_none());
    let later = now + Duration::from_secs(1);
    assert_eq!(core.poll_timeout(), Some(later));
    core.handle_timeout(later);
    let last = core.poll_transmit().unwrap();
    assert_eq!(last.target, third);
    // A late reply from the second replica is ignored; the third answers.
    reply(
        &mut core,
        later,
        second,
        requests_in(&retry)[0].id,
        Response::Pong,
    );
    assert!(core.poll_completion().is_none());
    reply(
        &mut core,
        later,
        third,
        requests_in(&last)[0].id,
        Response::Delete,
    );
    assert_eq!(
        core.poll_completion().unwrap(),
        (ticket, Ok(Response::Delete))
    );

    // Both failed nodes are avoided by new requests meanwhile.
    let avoided = core.submit(later, get(b"alpha")).unwrap();
    let transmit = core.poll_transmit().unwrap();
    assert_eq!(transmit.target, third);
    reply(
        &mut core,
        later,
        third,
        requests_in(&transmit)[0].id,
        Response::Pong,
    );
    assert_eq!(
        core.poll_completion().unwrap(),
        (avoided, Ok(Response::Pong))
    );

    // The budget is two failovers: the third loss of a connection fails the request.
    let ticket = core.submit(later, get(b"beta")).unwrap();
    let mut failures = 0;
    while let Some(transmit) = core.poll_transmit() {
        core.handle_unreachable(
            later,
            transmit.target,
            IoStage::Read,
            std::io::ErrorKind::ConnectionReset,
        );
        failures += 1;
    }
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, ticket);
    assert!(matches!(result, Err(ClientError::Io { .. })), "{result:?}");
    assert_eq!(failures, 3, "the first attempt and two failovers");
    assert_eq!(core.in_flight(), 0);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn all_owners_and_seed_unreachable_is_a_clear_error() {
    let now = Instant::now();
    let mut core = core_with_table(now);
    let table = table(1, 0);
    let partition = partition_of(key_hash(b"alpha"), table.q);
    let mut targets: Vec<SocketAddr> = (0..3).map(|k| owner(&table, b"alpha", k)).collect();
    targets.extend((1..=3u8).map(|i| SocketAddr::new(IpAddr::from([10, 0, 0, i]), 7000)));
    for target in targets {
        core.handle_unreachable(now, target, IoStage::Connect, std::io::ErrorKind::TimedOut);
    }
    let ticket = core.submit(now, get(b"alpha")).unwrap();
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, ticket);
    assert_eq!(
        result.unwrap_err(),
        ClientError::NoReachableReplica { partition }
    );
}

#[test]
fn a_contexts_fastest_replica_coordinates_the_put() {
    fn reader(context: &[u8]) -> Option<ReplicaId> {
        // A stand-in format for this test: node id, shard.
        Some(ReplicaId {
            node_id: u64::from(*context.first()?),
            shard: u16::from(*context.get(1)?),
        })
    }
    let now = Instant::now();
    let mut core = ClientCore::new(
        seed(),
        CoreOptions {
            fastest_replica: Some(reader),
            ..options()
        },
    );
    core.set_routing_table(table(1, 0));
    let table = table(1, 0);
    let partition = partition_of(key_hash(b"alpha"), table.q) as usize;
    let (third_node, third_shard) = table.partitions[partition][2];
    let context = vec![table.nodes[third_node as usize].id as u8, third_shard as u8];
    core.submit(
        now,
        Request::Put {
            key: Bytes::from_static(b"alpha"),
            value: Bytes::from_static(b"v"),
            context: Some(Bytes::from(context)),
            quorum: Quorum::DEFAULT,
        },
    )
    .unwrap();
    assert_eq!(
        core.poll_transmit().unwrap().target,
        owner(&table, b"alpha", 2)
    );
    // A hint naming a replica outside the preference list is ignored.
    core.submit(
        now,
        Request::Put {
            key: Bytes::from_static(b"alpha"),
            value: Bytes::from_static(b"v"),
            context: Some(Bytes::from_static(&[99, 0])),
            quorum: Quorum::DEFAULT,
        },
    )
    .unwrap();
    assert_eq!(
        core.poll_transmit().unwrap().target,
        owner(&table, b"alpha", 0)
    );
}

#[test]
fn in_flight_bound_and_size_checks_refuse_before_sending() {
    let now = Instant::now();
    let mut core = ClientCore::new(
        seed(),
        CoreOptions {
            in_flight_max: 2,
            ..options()
        },
    );
    core.submit(now, Request::Ping).unwrap();
    core.submit(now, Request::Ping).unwrap();
    assert_eq!(
        core.submit(now, Request::Ping).unwrap_err(),
        ClientError::TooManyInFlight { max: 2 }
    );
    let error = core
        .submit(
            now,
            Request::Get {
                key: Bytes::from(vec![0u8; 1025]),
                quorum: Quorum::DEFAULT,
            },
        )
        .unwrap_err();
    assert!(matches!(
        error,
        ClientError::InvalidRequest {
            code: ErrorCode::KeyTooLarge,
            ..
        }
    ));
}

#[test]
fn a_connection_level_error_fails_what_was_sent_there() {
    let now = Instant::now();
    let mut core = ClientCore::new(seed(), options());
    let ticket = core.submit(now, Request::Ping).unwrap();
    core.poll_transmit().unwrap();
    let mut out = Vec::new();
    encode_response(
        0,
        &Response::Error {
            code: ErrorCode::FrameTooLarge,
            message: "frame of 9 MB".into(),
            acks: 0,
            routing: None,
        },
        &mut out,
    );
    let frame = Bytes::from(out).slice(FRAME_LENGTH_BYTES..);
    let error = core.handle_frame(now, seed(), frame).unwrap_err();
    assert!(matches!(
        error,
        ClientError::Server {
            code: ErrorCode::FrameTooLarge,
            ..
        }
    ));
    let (done, result) = core.poll_completion().unwrap();
    assert_eq!(done, ticket);
    assert_eq!(result.unwrap_err(), error);

    // Garbage from a node is a protocol error for the connection.
    let mut core = ClientCore::new(seed(), options());
    core.submit(now, Request::Ping).unwrap();
    core.poll_transmit().unwrap();
    let error = core
        .handle_frame(now, seed(), Bytes::from_static(b"\xff\xff\xff\xff junk"))
        .unwrap_err();
    assert!(matches!(error, ClientError::Protocol { .. }), "{error}");
    assert!(core.poll_completion().unwrap().1.is_err());
}

/// One step of a random schedule for the core.
#[derive(Clone, Debug)]
enum Step {
    /// Submit a get of key `k`, or a ping for `None`.
    Submit(Option<u8>),
    /// Hand out one transmit; its frames join the network.
    Transmit,
    /// Answer the network frame at this index (if any) with reply kind `k`.
    Answer(prop::sample::Index, u8),
    /// The connection to the target of the frame at this index fails.
    Fail(prop::sample::Index, bool),
    /// Time passes.
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => prop::option::of(0u8..16).prop_map(Step::Submit),
        3 => Just(Step::Transmit),
        4 => (any::<prop::sample::Index>(), 0u8..6).prop_map(|(i, k)| Step::Answer(i, k)),
        1 => (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(i, s)| Step::Fail(i, s)),
        2 => (0u16..80).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    /// Whatever happens (replies in any order, WrongOwner with or without a
    /// table, lost connections, timeouts), every submitted ticket completes
    /// exactly once and nothing stays in flight.
    #[test]
    fn every_ticket_completes_exactly_once(steps in prop::collection::vec(step(), 1..80)) {
        let start = Instant::now();
        let mut now = start;
        let mut core = ClientCore::new(seed(), options());
        let mut submitted = std::collections::HashSet::new();
        let mut completed = std::collections::HashSet::new();
        // Frames "in the network": (target, request).
        let mut network: Vec<(SocketAddr, RequestFrame)> = Vec::new();
        let mut epoch = 1;
        let drain = |core: &mut ClientCore, completed: &mut std::collections::HashSet<Ticket>| {
            while let Some((ticket, _)) = core.poll_completion() {
                assert!(completed.insert(ticket), "{ticket:?} completed twice");
            }
        };
        for step in steps {
            match step {
                Step::Submit(key) => {
                    let request = match key {
                        Some(k) => get(&[b'k', k]),
                        None => Request::Ping,
                    };
                    submitted.insert(core.submit(now, request).unwrap());
                }
                Step::Transmit => {
                    if let Some(transmit) = core.poll_transmit() {
                        for frame in requests_in(&transmit) {
                            network.push((transmit.target, frame));
                        }
                    }
                }
                Step::Answer(index, kind) => {
                    if network.is_empty() {
                        continue;
                    }
                    let (target, frame) = network.remove(index.index(network.len()));
                    let response = match (&frame.request, kind) {
                        (Request::GetRoutingTable, _) => {
                            epoch += 1;
                            Response::RoutingTable(table(epoch, (epoch % 3) as u32))
                        }
                        (_, 0) => Response::Error {
                            code: ErrorCode::WrongOwner,
                            message: String::new(),
                            acks: 0,
                            routing: None,
                        },
                        (_, 1) => {
                            epoch += 1;
                            Response::Error {
                                code: ErrorCode::WrongOwner,
                                message: String::new(),
                                acks: 0,
                                routing: Some(table(epoch, (epoch % 3) as u32)),
                            }
                        }
                        (_, 2) => Response::Error {
                            code: ErrorCode::Overloaded,
                            message: String::new(),
                            acks: 0,
                            routing: None,
                        },
                        (Request::Ping, _) => Response::Pong,
                        _ => Response::Get {
                            found: false,
                            siblings: vec![],
                            context: Bytes::new(),
                        },
                    };
                    reply(&mut core, now, target, frame.id, response);
                }
                Step::Fail(index, sent) => {
                    if network.is_empty() {
                        continue;
                    }
                    let (target, _) = network[index.index(network.len())].clone();
                    let stage = if sent { IoStage::Read } else { IoStage::Connect };
                    core.handle_unreachable(now, target, stage, std::io::ErrorKind::ConnectionReset);
                    network.retain(|(t, _)| *t != target);
                }
                Step::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    core.handle_timeout(now);
                }
            }
            drain(&mut core, &mut completed);
            prop_assert!(core.in_flight() <= submitted.len() + 1);
        }
        // Let every deadline pass: everything must be accounted for.
        now += Duration::from_secs(10);
        core.handle_timeout(now);
        drain(&mut core, &mut completed);
        prop_assert_eq!(&completed, &submitted);
        prop_assert_eq!(core.in_flight(), 0);
        prop_assert_eq!(core.poll_timeout(), None);
    }
}

/// Dynamo §6.4: by default the client reads the fastest replica out of a
/// context with the server's `node << 32 | shard` convention.
#[test]
fn the_default_reader_finds_the_fastest_replica_in_a_context() {
    use dynakv::client::{fastest_replica_of_context, CoreOptions, ReplicaId};
    use dynakv::version::{Context, VersionVector};
    let token = Context {
        clock: VersionVector::new(),
        fastest_replica: Some((7 << 32) | 1),
    }
    .encode();
    assert_eq!(
        fastest_replica_of_context(&token),
        Some(ReplicaId {
            node_id: 7,
            shard: 1
        })
    );
    let anonymous = Context {
        clock: VersionVector::new(),
        fastest_replica: None,
    }
    .encode();
    assert_eq!(fastest_replica_of_context(&anonymous), None);
    assert_eq!(fastest_replica_of_context(b"not a context"), None);
    assert!(
        CoreOptions::default().fastest_replica.is_some(),
        "on by default"
    );
}
