//! The blocking and glommio clients over real TCP sockets, against a small
//! in-test peer that speaks the real protocol: one "node" on 127.0.0.1 with
//! a node-level port and two shard ports. The peer answers pipelined
//! requests in reverse order, serves keys only on the shard that owns them
//! (WrongOwner with its table otherwise), and keeps values in a map. The real
//! server is tested elsewhere; this checks the clients' routing, reply
//! matching, retry and error paths end to end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dynakv::client::glommio::AsyncClient;
use dynakv::client::{key_hash, partition_of, Client, ClientError, ClientOptions};
use dynakv::protocol::{
    decode_request, encode_response, ErrorCode, FrameDecoder, Limits, Quorum, Request, Response,
    RoutingNode, RoutingTable, Sibling, FRAME_BYTES_MAX,
};

/// A key the peer never answers, to provoke timeouts.
const BLACKHOLE: &[u8] = b"blackhole";

struct PeerState {
    table: RoutingTable,
    data: HashMap<Vec<u8>, (Bytes, u64)>,
    /// (port that received it, key) for every keyed request served.
    served: Vec<(u16, Bytes)>,
    wrong_owner_replies: usize,
}

struct Peer {
    seed: SocketAddr,
    shards: [SocketAddr; 2],
    state: Arc<Mutex<PeerState>>,
}

fn table(epoch: u64, seed_port: u16, shard_ports: [u16; 2], swap: bool) -> RoutingTable {
    RoutingTable {
        epoch,
        q: 4,
        n_val: 1,
        nodes: vec![RoutingNode {
            id: 1,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: seed_port,
            shard_ports: shard_ports.to_vec(),
            weight: 2,
        }],
        partitions: (0..4u16)
            .map(|p| vec![(0, (p % 2) ^ u16::from(swap))])
            .collect(),
    }
}

impl Peer {
    fn start() -> Peer {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let state = Arc::new(Mutex::new(PeerState {
            table: table(
                1,
                addrs[0].port(),
                [addrs[1].port(), addrs[2].port()],
                false,
            ),
            data: HashMap::new(),
            served: Vec::new(),
            wrong_owner_replies: 0,
        }));
        for listener in listeners {
            let state = state.clone();
            // Accept loops end with the test process.
            thread::spawn(move || {
                let port = listener.local_addr().unwrap().port();
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    let state = state.clone();
                    thread::spawn(move || serve(port, stream, state));
                }
            });
        }
        Peer {
            seed: addrs[0],
            shards: [addrs[1], addrs[2]],
            state,
        }
    }

    /// Moves every partition to the other shard, at a new epoch.
    fn move_partitions(&self) {
        let mut state = self.state.lock().unwrap();
        let epoch = state.table.epoch + 1;
        state.table = table(
            epoch,
            self.seed.port(),
            [self.shards[0].port(), self.shards[1].port()],
            epoch % 2 == 0,
        );
    }

    fn owner_port(&self, key: &[u8]) -> u16 {
        let state = self.state.lock().unwrap();
        let partition = partition_of(key_hash(key), state.table.q) as usize;
        let shard = state.table.partitions[partition][0].1;
        state.table.nodes[0].shard_ports[usize::from(shard)]
    }
}

fn serve(port: u16, mut stream: TcpStream, state: Arc<Mutex<PeerState>>) {
    let limits = Limits::default();
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut buffer = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut replies = Vec::new();
        while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
            let request = decode_request(frame, &limits).unwrap();
            if let Some(response) = answer(port, &request.request, &state) {
                replies.push((request.id, response));
            }
        }
        // Reverse order: the client must match replies by id.
        let mut out = Vec::new();
        for (id, response) in replies.iter().rev() {
            encode_response(*id, response, &mut out);
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn answer(port: u16, request: &Request, state: &Mutex<PeerState>) -> Option<Response> {
    let mut state = state.lock().unwrap();
    if let Some(key) = request.key() {
        if key.as_ref() == BLACKHOLE {
            return None;
        }
        let partition = partition_of(key_hash(key), state.table.q) as usize;
        let shard = state.table.partitions[partition][0].1;
        let owner_port = state.table.nodes[0].shard_ports[usize::from(shard)];
        let node_level = state.table.nodes[0].client_port;
        if port != owner_port && port != node_level {
            state.wrong_owner_replies += 1;
            return Some(Response::Error {
                code: ErrorCode::WrongOwner,
                message: format!("partition {partition} is on port {owner_port}"),
                acks: 0,
                routing: Some(state.table.clone()),
            });
        }
        state.served.push((port, key.clone()));
    }
    Some(match request {
        Request::Ping => Response::Pong,
        Request::GetRoutingTable => Response::RoutingTable(state.table.clone()),
        Request::Get { key, .. } => match state.data.get(key.as_ref()) {
            Some((value, version)) => Response::Get {
                found: true,
                siblings: vec![Sibling {
                    tombstone: false,
                    value: value.clone(),
                }],
                context: Bytes::from(version.to_le_bytes().to_vec()),
            },
            None => Response::Get {
                found: false,
                siblings: vec![],
                context: Bytes::new(),
            },
        },
        Request::Put {
            key, value, quorum, ..
        } => {
            if quorum.w == Some(9) {
                return Some(Response::Error {
                    code: ErrorCode::QuorumFailed,
                    message: "w=9 with n=1".into(),
                    acks: 1,
                    routing: None,
                });
            }
            let version = state.data.get(key.as_ref()).map_or(1, |(_, v)| v + 1);
            state.data.insert(key.to_vec(), (value.clone(), version));
            Response::Put {
                context: Bytes::from(version.to_le_bytes().to_vec()),
            }
        }
        Request::Delete { key, .. } => {
            state.data.remove(key.as_ref());
            Response::Delete
        }
    })
}

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    }
}

#[test]
fn blocking_client_routes_each_key_to_its_shard() {
    let peer = Peer::start();
    let mut client = Client::connect(peer.seed, options()).unwrap();
    client.ping().unwrap();
    assert_eq!(client.cached_routing_table().unwrap().epoch, 1);

    for i in 0..20 {
        let key = format!("key-{i}");
        let missing = client.get(key.as_bytes()).unwrap();
        assert!(!missing.found);
        let context = client
            .put(key.as_bytes(), b"value", None, Quorum::DEFAULT)
            .unwrap();
        let found = client.get(key.as_bytes()).unwrap();
        assert!(found.found);
        assert_eq!(found.values, vec![Bytes::from_static(b"value")]);
        assert_eq!(found.context, context);
        client
            .delete(key.as_bytes(), &found.context, Quorum::DEFAULT)
            .unwrap();
        assert!(!client.get(key.as_bytes()).unwrap().found);
    }
    let state = peer.state.lock().unwrap();
    assert_eq!(state.wrong_owner_replies, 0);
    assert_eq!(state.served.len(), 20 * 5);
    drop(state);
    // Every keyed request reached the shard that owns the key, and both
    // shards were used.
    let state = peer.state.lock().unwrap();
    let served = state.served.clone();
    drop(state);
    for (port, key) in &served {
        assert_eq!(*port, peer.owner_port(key), "key {key:?}");
    }
    for shard in peer.shards {
        assert!(served.iter().any(|(port, _)| *port == shard.port()));
    }
}

#[test]
fn blocking_client_pipelines_and_matches_out_of_order_replies() {
    let peer = Peer::start();
    let mut client = Client::connect(peer.seed, options()).unwrap();
    let mut expected = HashMap::new();
    for i in 0..64u32 {
        let key = format!("pipelined-{i}");
        let ticket = client
            .send(Request::Put {
                key: Bytes::from(key.clone()),
                value: Bytes::from(i.to_le_bytes().to_vec()),
                context: None,
                quorum: Quorum::DEFAULT,
            })
            .unwrap();
        expected.insert(ticket, key);
    }
    let mut done = 0;
    while let Some((ticket, result)) = client.recv() {
        assert!(expected.remove(&ticket).is_some());
        assert!(matches!(result.unwrap(), Response::Put { .. }));
        done += 1;
    }
    assert_eq!(done, 64);
    assert!(expected.is_empty());
    for i in 0..64u32 {
        let got = client.get(format!("pipelined-{i}").as_bytes()).unwrap();
        assert_eq!(got.values, vec![Bytes::from(i.to_le_bytes().to_vec())]);
    }
}

#[test]
fn blocking_client_retries_once_after_wrong_owner() {
    let peer = Peer::start();
    let mut client = Client::connect(peer.seed, options()).unwrap();
    client.put(b"moving", b"v1", None, Quorum::DEFAULT).unwrap();
    peer.move_partitions();
    // The client still routes with epoch 1: the old shard answers
    // WrongOwner with the new table, and the retry succeeds.
    let got = client.get(b"moving").unwrap();
    assert_eq!(got.values, vec![Bytes::from_static(b"v1")]);
    assert_eq!(client.cached_routing_table().unwrap().epoch, 2);
    assert_eq!(peer.state.lock().unwrap().wrong_owner_replies, 1);
}

#[test]
fn blocking_client_errors_are_clear() {
    // Nothing listens on a port we just released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = Client::connect(closed, options()).err().unwrap();
    assert_eq!(
        error.to_string(),
        format!("node {closed} unreachable: connection refused")
    );

    let peer = Peer::start();
    let mut client = Client::connect(peer.seed, options()).unwrap();
    let start = Instant::now();
    let error = client.get(BLACKHOLE).unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(error.to_string().contains("within 300 ms"), "{error}");

    let quorum = Quorum {
        w: Some(9),
        ..Quorum::DEFAULT
    };
    let error = client.put(b"k", b"v", None, quorum).unwrap_err();
    assert_eq!(
        error.to_string(),
        "server error QuorumFailed: w=9 with n=1 (1 replicas acknowledged)"
    );
    // The client is still usable after errors.
    client.ping().unwrap();
}

#[test]
fn glommio_client_runs_many_requests_concurrently() {
    let peer = Peer::start();
    let seed = peer.seed;
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        // Stay far below the 8 MiB locked-memory limit shared by every
        // test process (design.md §11).
        .io_memory(256 * 1024)
        .spawn(move || async move {
            let client = AsyncClient::connect(seed, options()).await.unwrap();
            client.ping().await.unwrap();
            let tasks: Vec<_> = (0..32u32)
                .map(|i| {
                    let client = client.clone();
                    glommio::spawn_local(async move {
                        let key = format!("async-{i}");
                        let context = client
                            .put(key.as_bytes(), &i.to_le_bytes(), None, Quorum::DEFAULT)
                            .await
                            .unwrap();
                        let got = client.get(key.as_bytes()).await.unwrap();
                        assert_eq!(got.values, vec![Bytes::from(i.to_le_bytes().to_vec())]);
                        assert_eq!(got.context, context);
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            let error = client.get(BLACKHOLE).await.unwrap_err();
            assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
            client.ping().await.unwrap();
        })
        .unwrap();
    handle.join().unwrap();
    let state = peer.state.lock().unwrap();
    assert_eq!(state.wrong_owner_replies, 0);
    assert_eq!(state.served.len(), 64);
}

#[test]
fn blocking_client_refuses_a_node_that_sends_an_oversized_frame() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 64];
        let _ = stream.read(&mut request);
        // A length prefix far over the client's bound, then nothing.
        let _ = stream.write_all(&u32::MAX.to_le_bytes());
        // Hold the connection open until the client gives up on it.
        let _ = stream.read(&mut request);
    });
    let error = Client::connect(addr, options()).err().unwrap();
    assert!(matches!(error, ClientError::Protocol { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "node {addr} sent an invalid reply: frame length prefix announces 4294967295 \
             bytes, more than the maximum of {FRAME_BYTES_MAX}"
        )
    );
}

#[test]
fn glommio_client_retries_after_wrong_owner_and_reports_refused_connections() {
    let peer = Arc::new(Peer::start());
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let inner = peer.clone();
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 * 1024)
        .spawn(move || async move {
            let error = AsyncClient::connect(closed, options()).await.err().unwrap();
            assert_eq!(
                error.to_string(),
                format!("node {closed} unreachable: connection refused")
            );

            let client = AsyncClient::connect(inner.seed, options()).await.unwrap();
            client
                .put(b"moving", b"v1", None, Quorum::DEFAULT)
                .await
                .unwrap();
            inner.move_partitions();
            // The retry is queued by the reader task when the WrongOwner
            // reply arrives, and written by a flush it starts.
            let got = client.get(b"moving").await.unwrap();
            assert_eq!(got.values, vec![Bytes::from_static(b"v1")]);
            assert_eq!(client.cached_routing_table().unwrap().epoch, 2);
        })
        .unwrap();
    handle.join().unwrap();
    assert_eq!(peer.state.lock().unwrap().wrong_owner_replies, 1);
}

#[test]
fn blocking_client_reconnects_after_the_node_closed_an_idle_connection() {
    // A node that answers one request per connection, then closes it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let state = Arc::new(Mutex::new(PeerState {
        table: table(1, port, [port, port], false),
        data: HashMap::new(),
        served: Vec::new(),
        wrong_owner_replies: 0,
    }));
    let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
            let mut buffer = BytesMut::new();
            let mut chunk = vec![0u8; 4096];
            let frame = loop {
                if let Some(frame) = decoder.decode(&mut buffer).unwrap() {
                    break frame;
                }
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0);
                buffer.extend_from_slice(&chunk[..n]);
            };
            let request = decode_request(frame, &Limits::default()).unwrap();
            let response = answer(port, &request.request, &state).unwrap();
            let mut out = Vec::new();
            encode_response(request.id, &response, &mut out);
            stream.write_all(&out).unwrap();
            drop(stream);
            if closed_tx.send(()).is_err() {
                return;
            }
        }
    });
    let mut client = Client::connect(addr, options()).unwrap();
    for _ in 0..3 {
        // Wait until the node has closed the previous connection, as
        // between two commands of a user: the client must notice the close
        // before writing, not lose the request to it.
        closed_rx.recv().unwrap();
        client.ping().unwrap();
    }
    closed_rx.recv().unwrap();
    assert!(closed_rx.try_recv().is_err(), "exactly four connections");
}
