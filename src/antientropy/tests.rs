//! Unit tests of the anti-entropy layer: the tree's algebra, the codec, and
//! two or three replicas (real `Replica` machines and `Store`s over
//! `MemDisk`) exchanging until they agree (Dynamo §4.7).

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::Bytes;

use super::*;
use crate::membership::NodeId;
use crate::replica::{actor_id, QuorumConfig, Replica, ReplicaConfig, ReplicaMessage};
use crate::storage::{block_on, MemDisk, StoreConfig};
use crate::version::{SiblingSet, Value, VersionVector};

#[test]
fn incremental_updates_equal_a_rebuild_in_any_order() {
    let entries: Vec<(Bytes, u64)> = (0..500u64)
        .map(|i| (Bytes::from(format!("key-{i}")), i * 7919))
        .collect();
    let mut forward = Tree::new();
    let mut backward = Tree::new();
    for tree in [&mut forward, &mut backward] {
        for leaf in 0..LEAVES as u16 {
            let generation = tree.generation(leaf);
            assert_eq!(tree.rehash(leaf, generation, 0), RehashOutcome::Unchanged);
        }
        assert!(tree.is_ready());
    }
    for (key, version) in &entries {
        let leaf = key_leaf(key);
        forward.write_started(leaf);
        forward.write_finished(leaf, Some(entry_hash(key, *version)));
    }
    for (key, version) in entries.iter().rev() {
        let leaf = key_leaf(key);
        backward.write_started(leaf);
        backward.write_finished(leaf, Some(entry_hash(key, *version)));
    }
    forward.check_invariants();
    assert_eq!(forward.root(), backward.root());
    assert_eq!(forward.branches(), backward.branches());
    // Overwriting one key changes exactly its leaf, branch and the root.
    let (key, version) = &entries[0];
    let leaf = key_leaf(key);
    let before = forward.clone();
    forward.write_started(leaf);
    forward.write_finished(
        leaf,
        Some(entry_hash(key, *version) ^ entry_hash(key, version + 1)),
    );
    forward.check_invariants();
    assert_ne!(forward.root(), before.root());
    let changed: Vec<usize> = (0..LEAVES)
        .filter(|l| forward.leaf(*l as u16) != before.leaf(*l as u16))
        .collect();
    assert_eq!(changed, vec![leaf as usize]);
}

#[test]
fn a_rehash_raced_by_a_write_is_refused_and_the_leaf_stays_stale() {
    let mut tree = Tree::new();
    let generation = tree.generation(5);
    tree.write_started(5);
    assert_eq!(tree.rehash(5, generation, 42), RehashOutcome::Refused);
    tree.write_finished(5, Some(1));
    assert!(tree.stale_leaves().contains(&5));
    let generation = tree.generation(5);
    assert_eq!(tree.rehash(5, generation, 42), RehashOutcome::Corrected);
    assert_eq!(tree.leaf(5), 42);
    assert!(!tree.stale_leaves().contains(&5));
    // A write that finishes without a matching start (the partition became
    // tracked in between) leaves the leaf stale instead of guessing.
    tree.write_finished(6, Some(99));
    assert!(tree.stale_leaves().contains(&6));
    assert_eq!(tree.leaf(6), 0);
}

#[test]
fn messages_round_trip_and_garbage_never_panics() {
    let messages = vec![
        AaeMessage::Root {
            xid: 9,
            partition: 3,
            root: 77,
            branches: (0..BRANCHES as u64).collect(),
        },
        AaeMessage::InSync {
            xid: 1,
            partition: 2,
        },
        AaeMessage::Leaves {
            xid: 4,
            partition: 5,
            branches: vec![(31, vec![7; LEAVES_PER_BRANCH])],
        },
        AaeMessage::Keys {
            xid: 4,
            partition: 5,
            leaves: vec![0, 1023],
            keys: vec![KeyVersion {
                key: Bytes::from_static(b"k"),
                version_hash: 8,
                live: false,
            }],
        },
        AaeMessage::Want {
            xid: 0,
            partition: 5,
            keys: vec![Bytes::from_static(b"a"), Bytes::new()],
        },
        AaeMessage::Repair {
            xid: 4,
            partition: 5,
            entries: vec![RepairEntry {
                key: Bytes::from_static(b"k"),
                siblings: Bytes::from_static(b"\x01\x00\x00"),
            }],
        },
    ];
    let mut seed = 0x1234_5678u64;
    for message in messages {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        assert_eq!(AaeMessage::decode(&bytes), Ok(message.clone()));
        for cut in 0..bytes.len() {
            assert!(AaeMessage::decode(&bytes[..cut]).is_err());
        }
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut mutated = bytes.clone();
            let at = (seed as usize) % mutated.len();
            mutated[at] ^= (seed >> 32) as u8 | 1;
            let _ = AaeMessage::decode(&mutated);
        }
    }
    // Out-of-range indexes are refused.
    let mut bytes = Vec::new();
    AaeMessage::Keys {
        xid: 1,
        partition: 1,
        leaves: vec![7],
        keys: vec![],
    }
    .encode(&mut bytes);
    bytes[17] = 0xff;
    bytes[18] = 0xff;
    assert!(AaeMessage::decode(&bytes).is_err());
}

// ---------------------------------------------------------------------------
// A small cluster: every node is a primary of partition 0.

const PARTITION: u32 = 0;

struct Node {
    id: NodeId,
    store: Store<MemDisk>,
    replica: Replica,
    aae: RefCell<AntiEntropy>,
    down: bool,
}

struct Cluster {
    nodes: Vec<Node>,
    now_ms: u64,
    queue: VecDeque<(usize, usize, Vec<u8>, bool)>,
    aae_bytes: u64,
}

fn config() -> AaeConfig {
    AaeConfig {
        exchange_interval_ms: 100,
        exchange_timeout_ms: 1_000,
        tombstone_grace_ms: 500,
    }
}

impl Cluster {
    fn new(count: usize) -> Self {
        let ids: Vec<NodeId> = (1..=count as u64).map(NodeId).collect();
        let nodes = ids
            .iter()
            .map(|id| {
                let (store, _) =
                    block_on(Store::open(MemDisk::new(), StoreConfig::default())).unwrap();
                let quorum = QuorumConfig {
                    n: count,
                    r: 1,
                    w: 1,
                    dw: 0,
                };
                let replica = Replica::new(
                    *id,
                    actor_id(*id, 0, 1),
                    ReplicaConfig {
                        quorum,
                        ..ReplicaConfig::default()
                    },
                    0,
                );
                let mut aae = AntiEntropy::new(*id, config(), 0, 1 << 40);
                aae.set_partitions(vec![(PARTITION, ids.clone())]);
                Node {
                    id: *id,
                    store,
                    replica,
                    aae: RefCell::new(aae),
                    down: false,
                }
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            now_ms: 0,
            queue: VecDeque::new(),
            aae_bytes: 0,
        };
        cluster.settle();
        cluster
    }

    fn drain(&mut self, index: usize) {
        let now = self.now_ms;
        loop {
            let mut progressed = false;
            let node = &mut self.nodes[index];
            if node.down {
                return;
            }
            while let Some(io) = node.replica.poll_io() {
                progressed = true;
                let (id, result) =
                    block_on(perform_io_observed(&node.store, &node.aae, || now, io));
                let result =
                    result.unwrap_or_else(|e| crate::replica::IoResult::Failed(e.to_string()));
                node.replica.handle_io_done(now, id, result);
            }
            while node.replica.poll_reply().is_some() {}
            while let Some(transmit) = node.replica.poll_transmit() {
                progressed = true;
                let mut bytes = Vec::new();
                transmit.message.encode(&mut bytes);
                self.queue
                    .push_back((index, (transmit.to.0 - 1) as usize, bytes, false));
            }
            let mut aae = node.aae.borrow_mut();
            while let Some(request) = aae.poll_io() {
                progressed = true;
                let result = block_on(perform_scan(&node.store, &request));
                aae.handle_scan_done(now, request.io, result.map_err(|e| e.to_string()));
            }
            while let Some((to, message)) = aae.poll_transmit() {
                progressed = true;
                let mut bytes = Vec::new();
                message.encode(&mut bytes);
                aae.record_bytes_sent(bytes.len() as u64);
                self.aae_bytes += bytes.len() as u64;
                self.queue
                    .push_back((index, (to.0 - 1) as usize, bytes, true));
            }
            let actions: Vec<LocalAction> = std::iter::from_fn(|| aae.poll_action()).collect();
            drop(aae);
            for action in actions {
                progressed = true;
                match action {
                    LocalAction::Merge {
                        partition,
                        key,
                        siblings,
                    } => node.replica.start_merge(partition, key, siblings),
                    LocalAction::Purge {
                        partition,
                        key,
                        expected,
                    } => node.replica.start_purge(partition, key, expected),
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            for index in 0..self.nodes.len() {
                self.drain(index);
            }
            let Some((from, to, bytes, aae)) = self.queue.pop_front() else {
                return;
            };
            let now = self.now_ms;
            let node = &mut self.nodes[to];
            if node.down || self.nodes[from].down {
                continue;
            }
            let from_id = self.nodes[from].id;
            let node = &mut self.nodes[to];
            if aae {
                let message = AaeMessage::decode(&bytes).expect("own encoding");
                node.aae.borrow_mut().handle_message(now, from_id, message);
            } else {
                let message = ReplicaMessage::decode(&bytes).expect("own encoding");
                node.replica.handle_message(now, from_id, message);
            }
        }
        panic!("the cluster never settled");
    }

    /// Advances the clock by `ms` in 10 ms ticks.
    fn run_for(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += 10;
            let now = self.now_ms;
            for node in &mut self.nodes {
                if node.down {
                    continue;
                }
                node.replica.handle_timeout(now);
                let mut aae = node.aae.borrow_mut();
                if aae.poll_timeout() <= now {
                    aae.handle_timeout(now);
                }
            }
            self.settle();
        }
    }

    /// Merges a version written by `actor` straight into one node's copy.
    fn write_local(&mut self, index: usize, key: &str, value: Value, context: &VersionVector) {
        let node = &mut self.nodes[index];
        let mut set =
            match block_on(node.store.get(Namespace::Data, PARTITION, key.as_bytes())).unwrap() {
                Some(record) => SiblingSet::decode(&record.payload).unwrap(),
                None => SiblingSet::new(),
            };
        set.update(context, actor_id(node.id, 7, 1), value).unwrap();
        node.replica
            .start_merge(PARTITION, Bytes::copy_from_slice(key.as_bytes()), set);
        self.settle();
    }

    fn stored(&self, index: usize, key: &str) -> Option<SiblingSet> {
        block_on(
            self.nodes[index]
                .store
                .get(Namespace::Data, PARTITION, key.as_bytes()),
        )
        .unwrap()
        .map(|record| SiblingSet::decode(&record.payload).unwrap())
    }

    fn keys(&self, index: usize) -> Vec<Bytes> {
        let mut keys = self.nodes[index].store.keys(Namespace::Data, PARTITION);
        keys.sort();
        keys
    }
}

fn data(text: &str) -> Value {
    Value::Data(Bytes::copy_from_slice(text.as_bytes()))
}

#[test]
fn an_exchange_repairs_both_sides_by_merging() {
    let mut cluster = Cluster::new(2);
    cluster.run_for(50);
    assert!(cluster
        .nodes
        .iter()
        .all(|n| n.aae.borrow().is_ready(PARTITION)));
    let empty = VersionVector::new();
    for i in 0..300 {
        let key = format!("k{i}");
        if i < 200 {
            cluster.write_local(0, &key, data(&format!("a{i}")), &empty);
        }
        if i >= 100 {
            cluster.write_local(1, &key, data(&format!("b{i}")), &empty);
        }
    }
    assert_ne!(
        cluster.nodes[0].aae.borrow().root(PARTITION),
        cluster.nodes[1].aae.borrow().root(PARTITION)
    );
    cluster.run_for(1_000);
    assert_eq!(cluster.keys(0).len(), 300);
    assert_eq!(cluster.keys(0), cluster.keys(1));
    for i in 0..300 {
        let key = format!("k{i}");
        let a = cluster.stored(0, &key).unwrap();
        assert_eq!(Some(&a), cluster.stored(1, &key).as_ref(), "{key}");
        // Concurrent versions on both sides became siblings: nothing was
        // overwritten.
        let expected = if (100..200).contains(&i) { 2 } else { 1 };
        assert_eq!(a.sibling_count(), expected, "{key}");
    }
    let roots: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| n.aae.borrow().root(PARTITION))
        .collect();
    assert_eq!(roots[0], roots[1]);
    let status = cluster.nodes[0].aae.borrow().status(cluster.now_ms);
    assert!(status[0].peers[0].in_sync);
    assert!(status[0].peers[0].keys_repaired > 0);
    assert!(cluster.nodes[0].aae.borrow().stats().exchanges_in_sync > 0);
}

#[test]
fn drift_between_tree_and_store_is_found_and_corrected() {
    let mut cluster = Cluster::new(2);
    cluster.run_for(50);
    let empty = VersionVector::new();
    for i in 0..50 {
        for node in 0..2 {
            cluster.write_local(node, &format!("k{i}"), data("same"), &empty);
        }
    }
    cluster.run_for(500);
    // Bypass the tree: write straight to node 1's store.
    let mut set = SiblingSet::new();
    set.update(&empty, 99, data("sneaky")).unwrap();
    let mut payload = Vec::new();
    set.encode(&mut payload);
    block_on(cluster.nodes[1].store.put(
        Namespace::Data,
        PARTITION,
        b"k3",
        crate::storage::RecordKind::Value,
        Bytes::copy_from_slice(&payload),
        crate::storage::Durability::Buffered,
    ))
    .unwrap();
    // The trees still agree, so nothing is repaired until the store reports
    // damage; a rebuild then finds the difference and merges both ways.
    cluster.run_for(300);
    assert_ne!(cluster.stored(0, "k3"), cluster.stored(1, "k3"));
    cluster.nodes[1].aae.borrow_mut().invalidate_all();
    cluster.run_for(1_000);
    assert_eq!(cluster.stored(0, "k3"), cluster.stored(1, "k3"));
    // Both writers' versions plus the one written behind the tree's back.
    assert_eq!(cluster.stored(0, "k3").unwrap().sibling_count(), 3);
}

#[test]
fn a_tombstone_is_collected_only_after_every_primary_holds_it() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(50);
    let empty = VersionVector::new();
    for node in 0..3 {
        cluster.write_local(node, "cart", data("milk"), &empty);
    }
    cluster.run_for(500);
    let seen = cluster.stored(0, "cart").unwrap().context();
    // Node 2 is down while nodes 0 and 1 delete.
    cluster.nodes[2].down = true;
    cluster.write_local(0, "cart", Value::Tombstone, &seen);
    let tombstone = cluster.stored(0, "cart").unwrap();
    cluster.nodes[1]
        .replica
        .start_merge(PARTITION, Bytes::from_static(b"cart"), tombstone);
    cluster.settle();
    // Far past the grace period: still kept, node 2 was never compared.
    cluster.run_for(3_000);
    for node in 0..2 {
        assert!(cluster.stored(node, "cart").unwrap().is_all_tombstones());
    }
    // Node 2 comes back with the old value; exchanges carry the delete to
    // it, then everyone collects the tombstone and nothing comes back.
    cluster.nodes[2].down = false;
    cluster.run_for(5_000);
    for node in 0..3 {
        assert_eq!(cluster.stored(node, "cart"), None, "node {node}");
        assert_eq!(cluster.nodes[node].aae.borrow().tombstones_tracked(), 0);
    }
    assert!(cluster.nodes[0].aae.borrow().stats().tombstones_purged >= 1);
}

/// The in-place put's write (`write_observed_now`, given the old
/// entry from its caller's read, falling back to `perform_write_observed`
/// for a write that must wait) keeps the tree exactly where the replica
/// machine's path (`perform_io_observed`, which reads the old entry itself)
/// does: two primaries given the same writes, one by each path, compare
/// equal in every exchange and repair nothing.
#[test]
fn a_write_finished_in_place_keeps_the_tree_as_the_machine_path_does() {
    use crate::replica::IoRequest;
    let mut cluster = Cluster::new(2);
    cluster.run_for(50);
    let mut in_place = 0;
    for round in 0..4 {
        for i in 0..60 {
            let key = format!("k{i}");
            let value = if (i + round) % 5 == 0 {
                Value::Tombstone
            } else {
                data(&format!("v{round}.{i}"))
            };
            let mut set = cluster.stored(0, &key).unwrap_or_default();
            set.update(&set.context(), actor_id(NodeId(1), 7, 1), value)
                .unwrap();
            let mut payload = Vec::new();
            set.encode(&mut payload);
            let io = || IoRequest::Write {
                io: 0,
                namespace: Namespace::Data,
                partition: PARTITION,
                key: Bytes::from(key.clone()),
                payload: Bytes::from(payload.clone()),
                all_tombstones: set.is_all_tombstones(),
                // A durable write waits: the fallback's path.
                durable: i % 7 == 0,
            };
            let now = cluster.now_ms;
            let node = &cluster.nodes[0];
            let old = node
                .store
                .get_now(Namespace::Data, PARTITION, key.as_bytes())
                .expect("in memory")
                .map(|record| Entry::of_record(&record));
            let write = DataWrite {
                partition: PARTITION,
                key: key.as_bytes(),
                all_tombstones: set.is_all_tombstones(),
                durable: i % 7 == 0,
            };
            let payload_now = Bytes::from(payload.clone());
            match write_observed_now(&node.store, &node.aae, || now, write, payload_now, old) {
                Ok(result) => {
                    result.unwrap();
                    in_place += 1;
                }
                Err(_) => {
                    block_on(perform_write_observed(
                        &node.store,
                        &node.aae,
                        || now,
                        io(),
                        old,
                    ))
                    .1
                    .unwrap();
                }
            }
            let node = &cluster.nodes[1];
            block_on(perform_io_observed(&node.store, &node.aae, || now, io()))
                .1
                .unwrap();
        }
        // Before any exchange could mend a difference: the same tree and
        // the same tombstones tracked, whichever path wrote.
        let (a, b) = (cluster.nodes[0].aae.borrow(), cluster.nodes[1].aae.borrow());
        assert!(a.root(PARTITION).is_some(), "round {round}");
        assert_eq!(a.root(PARTITION), b.root(PARTITION), "round {round}");
        assert_eq!(
            a.tombstones_tracked(),
            b.tombstones_tracked(),
            "round {round}"
        );
        drop((a, b));
        cluster.run_for(400);
    }
    assert!(in_place > 150, "most writes finish in place: {in_place}");
    assert_eq!(cluster.keys(0), cluster.keys(1));
    for node in 0..2 {
        let aae = cluster.nodes[node].aae.borrow();
        let stats = aae.stats();
        assert!(stats.exchanges_in_sync > 0, "node {node}: {stats:?}");
        assert_eq!(stats.exchanges_repaired, 0, "node {node}: {stats:?}");
        assert_eq!(stats.keys_received, 0, "node {node}: {stats:?}");
    }
}
