//! Fuzz target: the request path against an in-memory store. The input is a
//! script of steps: client frames (decoded and validated like the shard's
//! request path, then handed to a real `Replica` coordinator on node 1 of a
//! three-node preference list), replica messages from peers 2 and 3 (raw
//! bytes through the real decoder), and clock advances. Storage requests run
//! on a real `Store` over `MemDisk` through `replica::perform_io`.
//! Properties: no panic; every client request gets exactly one reply once
//! the clock passes the request timeout; the store's invariants hold.
#![no_main]

use std::collections::BTreeMap;

use bytes::BytesMut;
use dynakv::membership::NodeId;
use dynakv::protocol::{decode_request, FrameDecoder, Limits, Request};
use dynakv::replica::{
    actor_id, perform_io, ClientReply, GetRequest, IoResult, Preference, PutRequest,
    QuorumConfig, Replica, ReplicaConfig, ReplicaMessage,
};
use dynakv::storage::{block_on, MemDisk, Store, StoreConfig};
use dynakv::version::{Context, Value, VersionVector};
use libfuzzer_sys::fuzz_target;

const ME: NodeId = NodeId(1);

fn drive(replica: &mut Replica, store: &Store<MemDisk>, now: u64, replies: &mut BTreeMap<u64, u32>) {
    loop {
        let mut progressed = false;
        while let Some(io) = replica.poll_io() {
            let (id, result) = block_on(perform_io(store, io));
            let result = result.unwrap_or_else(|e| IoResult::Failed(e.to_string()));
            replica.handle_io_done(now, id, result);
            progressed = true;
        }
        while replica.poll_transmit().is_some() {
            progressed = true;
        }
        while replica.poll_peer_timeout().is_some() {}
        while let Some(reply) = replica.poll_reply() {
            let id = match reply {
                ClientReply::Put { id, .. } | ClientReply::Get { id, .. } => id,
            };
            *replies.entry(id).or_default() += 1;
            progressed = true;
        }
        if !progressed {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        key_bytes_max: 64,
        value_bytes_max: 1024,
        ..Limits::default()
    };
    let config = ReplicaConfig {
        quorum: QuorumConfig { n: 3, r: 2, w: 2, dw: 1 },
        ..ReplicaConfig::default()
    };
    let timeout = config.request_timeout_ms.max(config.replica_timeout_ms) + 1;
    let mut replica = Replica::new(ME, actor_id(ME, 0, 1), config, 0);
    let store_config = StoreConfig {
        max_key_bytes: 64,
        // The replica layer stores whole sibling sets; a segment holds at
        // least two maximal records.
        max_value_bytes: 8 * 1024,
        segment_size_bytes: 32 * 1024,
        write_buffer_bytes: 4096,
        ..StoreConfig::default()
    };
    let (store, _) = match block_on(Store::open(MemDisk::new(), store_config)) {
        Ok(opened) => opened,
        Err(e) => panic!("an empty MemDisk opens: {e}"),
    };
    let preference = Preference {
        primaries: vec![ME, NodeId(2), NodeId(3)],
        fallbacks: vec![NodeId(4)],
    };
    let mut now = 0u64;
    let mut next_id = 0u64;
    let mut started: Vec<u64> = Vec::new();
    let mut replies: BTreeMap<u64, u32> = BTreeMap::new();
    let mut rest = data;
    while rest.len() >= 3 {
        let step = rest[0];
        let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match step % 4 {
            0 | 1 => {
                let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
                let mut buffer = BytesMut::from(body);
                while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
                    let Ok(frame) = decode_request(frame, &limits) else {
                        continue;
                    };
                    next_id += 1;
                    let id = next_id;
                    let (key, value, context) = match frame.request {
                        Request::Get { key, .. } => {
                            started.push(id);
                            let partition = key.first().copied().unwrap_or(0) as u32 % 8;
                            let request = GetRequest { key, partition, preference: preference.clone(), r: None };
                            replica.start_get(now, id, request);
                            drive(&mut replica, &store, now, &mut replies);
                            continue;
                        }
                        Request::Put { key, value, context, .. } => {
                            (key, Value::Data(value), context.unwrap_or_default())
                        }
                        Request::Delete { key, context, .. } => (key, Value::Tombstone, context),
                        Request::Ping | Request::GetRoutingTable => continue,
                    };
                    // The shard refuses a context the version layer cannot read.
                    let context = if context.is_empty() {
                        VersionVector::new()
                    } else {
                        match Context::decode(&context) {
                            Ok(context) => context.clock,
                            Err(_) => continue,
                        }
                    };
                    started.push(id);
                    let partition = key.first().copied().unwrap_or(0) as u32 % 8;
                    let request = PutRequest {
                        key,
                        partition,
                        context,
                        value,
                        preference: preference.clone(),
                        quorum: None,
                    };
                    replica.start_put(now, id, request);
                    drive(&mut replica, &store, now, &mut replies);
                }
            }
            2 => {
                if let Ok(message) = ReplicaMessage::decode(body) {
                    let from = NodeId(2 + u64::from(step >> 7));
                    replica.handle_message(now, from, message);
                    drive(&mut replica, &store, now, &mut replies);
                }
            }
            _ => {
                now += u64::from(body.first().copied().unwrap_or(1)) * 10;
                replica.handle_timeout(now);
                drive(&mut replica, &store, now, &mut replies);
            }
        }
    }
    // Past every deadline, each request has its one reply.
    for _ in 0..4 {
        now += timeout;
        replica.handle_timeout(now);
        drive(&mut replica, &store, now, &mut replies);
    }
    for id in &started {
        assert_eq!(replies.get(id), Some(&1), "request {id}: replies {:?}", replies.get(id));
    }
    assert!(replies.keys().all(|id| started.contains(id)), "a reply nobody asked for");
    store.check_invariants();
});
