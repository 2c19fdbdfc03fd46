//! The deterministic cluster simulator: N dynakv nodes (their real `Replica`
//! and `Membership` machines, the real `Store` over a crash-injecting
//! `MemDisk`, placement by the real `Ring::claim`) in one thread, on a
//! virtual clock, over a
//! seeded network that drops, delays, duplicates, reorders and partitions
//! messages, with node crashes that lose unsynced writes and per-node clock
//! skew. Everything random comes from one seeded RNG, so a seed replays
//! exactly; every processed event is folded into a trace hash to prove it.
//!
//! A run has three phases (FoundationDB style: setup, run, check):
//! 1. workload + faults: shopping-cart clients get a key, union the
//!    elements of its siblings, add a unique element and put it back with
//!    the get's context (sometimes blind, to force siblings);
//! 2. heal: every partition ends, every crashed node restarts, the network
//!    stops losing messages; the run waits until every hint was handed back;
//! 3. check: an R=all get of every key (which read-repairs), then
//!    (1) every acknowledged element is in the final read, (2) no element
//!    appears that was never written, (3) all primaries of a key store the
//!    same sibling set, (4) no hint is left, (5) gossip taught every node
//!    every member.
//!
//! Every node also runs the anti-entropy machine; after the run quiets it
//! alone must make every key's primaries agree (before the final reads),
//! and a last phase deletes every key while a primary is down and checks
//! that every tombstone is collected and no deleted key comes back.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;
use dynakv::antientropy::{perform_io_observed, perform_scan, AaeConfig, AaeMessage, AntiEntropy};
use dynakv::membership::{
    AdminChange, ClaimedRing, Membership, MembershipConfig, MembershipMessage, MembershipState,
    NodeId,
};
use dynakv::replica::{
    actor_id, ClientReply, GetRequest, IoRequest, IoResult, Namespace, Preference, PutRequest,
    QuorumConfig, Replica, ReplicaConfig, ReplicaMessage,
};
use dynakv::ring::{key_partition, Ring};
use dynakv::storage::{block_on, CrashMode, MemDisk, StorageError, Store, StoreConfig};
use dynakv::version::{Context, SiblingSet, Value, VersionVector};

/// splitmix64: small, fast, and good enough to drive a simulation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5eed_d1a6_0f1e_1d5a)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    pub fn chance_per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// What one seed's run looks like; derived from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub keys: usize,
    pub clients: usize,
    pub ops: usize,
    pub quorum: QuorumConfig,
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub delay_ms_max: u64,
    pub faults: usize,
    /// Storage requests held back this often (per mille) and completed
    /// 1 to `IO_DELAY_MS_MAX` ms later: a slow disk, under which operations
    /// on one key queue behind each other and ride on one write
    /// (`Replica::absorb_queued`). Zero for about half the seeds.
    pub slow_io_per_mille: u64,
}

impl SimConfig {
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
        SimConfig {
            seed,
            nodes: rng.range(3, 9) as usize,
            keys: rng.range(1, 4) as usize,
            clients: rng.range(2, 5) as usize,
            ops: rng.range(60, 120) as usize,
            quorum: {
                // DW >= 1 always: with DW = 0 a correlated crash may lose an
                // acknowledged write by design, which check (1) would flag.
                let w = rng.range(1, 3) as usize;
                QuorumConfig {
                    n: 3,
                    r: rng.range(1, 3) as usize,
                    w,
                    dw: rng.range(1, w as u64) as usize,
                }
            },
            drop_per_mille: rng.range(0, 100),
            duplicate_per_mille: rng.range(0, 50),
            delay_ms_max: rng.range(2, 40),
            faults: rng.range(0, 5) as usize,
            slow_io_per_mille: rng.range(0, 1) * rng.range(100, 600),
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    pub trace_hash: u64,
    pub events: u64,
    pub acked: usize,
    pub written: usize,
    pub virtual_ms: u64,
    pub siblings_seen_max: usize,
    pub crashes: u64,
    pub io_failures: u64,
    pub hints_at_heal: usize,
    pub divergent_before_repair: usize,
    /// Virtual ms anti-entropy took, after the run went quiet, to make every
    /// key's primaries agree (without any read).
    pub aae_converge_ms: u64,
    pub aae_keys_repaired: u64,
    pub tombstones_purged: u64,
    /// Storage requests the slow disk held back, and local operations that
    /// rode on another's write.
    pub io_delayed: u64,
    pub riders: u64,
}

struct SimNode {
    id: NodeId,
    /// `None` while crashed.
    machines: Option<(Replica, Membership)>,
    /// The anti-entropy machine (`None` while crashed). In a `RefCell`
    /// because the write path updates its tree around each store write.
    aae: Option<RefCell<AntiEntropy>>,
    /// The real store over a fault-injecting in-memory disk; `None` while
    /// crashed. A crash drops it and loses the disk's unsynced writes.
    store: Option<Store<MemDisk>>,
    disk: MemDisk,
    /// A disk fault (failing fsync or full disk) is active.
    disk_faulty: bool,
    /// Persisted durably (as the runtime must): grows on every restart.
    incarnation: u16,
    /// Persisted membership state (durable).
    membership_state: MembershipState,
    /// Persisted agreed ring (durable, beside the state). Gossiped like the
    /// runtime's; routing here uses the fixed `Sim::ring`, and check (5)
    /// requires every node to end with one ring claimed for all members.
    membership_ring: Option<ClaimedRing>,
    /// Clock skew: local = global * (1 + drift) + offset.
    offset_ms: u64,
    drift_per_mille: u64,
    /// The wake-up currently scheduled, in global time.
    wake_at: Option<u64>,
}

impl SimNode {
    fn local_ms(&self, global_ms: u64) -> u64 {
        global_ms + global_ms * self.drift_per_mille / 1000 + self.offset_ms
    }

    fn global_ms(&self, local_ms: u64) -> u64 {
        // The inverse of `local_ms`, rounded up so the wake is never early.
        let base = local_ms.saturating_sub(self.offset_ms);
        (base * 1000).div_ceil(1000 + self.drift_per_mille)
    }
}

#[derive(Clone, Debug)]
enum ClientOp {
    Get {
        r: Option<usize>,
    },
    Put {
        context: VersionVector,
        value: Value,
        /// A per-request quorum (the tombstone phase's deletes).
        quorum: Option<QuorumConfig>,
    },
}

#[derive(Clone, Debug)]
enum Event {
    Replica {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Gossip {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Request {
        to: usize,
        client: usize,
        id: u64,
        key: usize,
        op: ClientOp,
    },
    Reply {
        client: usize,
        reply: ClientReply,
    },
    ClientWake {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        id: u64,
    },
    NodeWake {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition {
        blocked: Vec<(usize, usize)>,
    },
    /// The disk starts failing: every fsync fails, or it is full. The node
    /// keeps running (writes fail with clear errors, reads work) until the
    /// matching `DiskRepair`, which crashes and restarts it, as a failed
    /// fsync is fatal for a real node.
    DiskFault {
        node: usize,
        full: bool,
    },
    DiskRepair {
        node: usize,
    },
    Aae {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    /// The node's disk is replaced by an empty one (crash, then restart).
    Wipe {
        node: usize,
    },
    /// A bit flips in a durable record of the node's log; the node crashes
    /// and recovery finds the damage (or a read does, via a hint file).
    CorruptDisk {
        node: usize,
        pick: u64,
    },
    /// The node loses every hint it holds (a fallback's hints are gone).
    DropHints {
        node: usize,
    },
    /// A storage request the slow disk held back completes, if the node
    /// is still the incarnation that asked (a crash loses it).
    IoDone {
        node: usize,
        incarnation: u16,
        io: IoRequest,
    },
    Heal,
}

#[derive(Clone, Debug)]
enum ClientState {
    Idle,
    Getting { id: u64, key: usize },
    Putting { id: u64, element: u64 },
}

struct Client {
    state: ClientState,
    next_seq: u64,
    /// Elements this client created, to make every element unique.
    next_element: u64,
}

const HEAL_AT_MS: u64 = 6_000;
const FAULTS_END_MS: u64 = 5_000;
const CLIENT_TIMEOUT_MS: u64 = 2_500;
const SETTLE_MS_MAX: u64 = 120_000;
/// The longest a slow disk holds a storage request back.
const IO_DELAY_MS_MAX: u64 = 30;
/// Partitions of the simulated ring (few, so keys share partitions).
const PARTITIONS: u32 = 16;

pub struct Sim {
    config: SimConfig,
    rng: Rng,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    event_slot: usize,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    /// Directed links that currently lose everything.
    blocked: BTreeSet<(usize, usize)>,
    lossy: bool,
    ops_left: usize,
    /// Elements whose put was acknowledged.
    acked: BTreeSet<u64>,
    /// Elements ever sent in a put.
    written: BTreeSet<u64>,
    /// Final R=all reads, by key.
    final_reads: BTreeMap<usize, SiblingSet>,
    trace_hash: u64,
    events_processed: u64,
    siblings_seen_max: usize,
    healed: bool,
    /// Placement, claimed once from the (fixed) membership.
    ring: Ring,
    crashes: u64,
    io_failures: u64,
    hints_at_heal: usize,
    divergent_before_repair: usize,
    /// Replica messages scheduled and not yet delivered (stragglers
    /// included): the run is quiet only when none is left.
    replica_messages_in_flight: usize,
    aae_messages_in_flight: usize,
    /// Storage requests held back by the slow disk and not yet completed.
    io_in_flight: usize,
    io_delayed: u64,
    /// Riders counted by machines that have since crashed.
    riders_of_crashed: u64,
    /// A node kept down from early in the run until the heal.
    long_down: Option<usize>,
    aae_converge_ms: u64,
}

fn fnv(hash: &mut u64, bytes: &[u8]) {
    for byte in bytes {
        *hash ^= u64::from(*byte);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn key_bytes(key: usize) -> Bytes {
    Bytes::from(format!("cart-{key}"))
}

/// Cart values: a sorted list of u64 elements.
fn encode_cart(elements: &BTreeSet<u64>) -> Bytes {
    let mut out = Vec::with_capacity(elements.len() * 8);
    for element in elements {
        out.extend_from_slice(&element.to_le_bytes());
    }
    Bytes::from(out)
}

fn cart_union(siblings: &SiblingSet) -> BTreeSet<u64> {
    let mut elements = BTreeSet::new();
    for value in siblings.data_values() {
        assert_eq!(value.len() % 8, 0, "cart values are whole u64s");
        for chunk in value.chunks(8) {
            let mut buffer = [0u8; 8];
            buffer.copy_from_slice(chunk);
            elements.insert(u64::from_le_bytes(buffer));
        }
    }
    elements
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let mut state = MembershipState::new();
        for index in 0..config.nodes {
            state
                .apply(AdminChange::Join {
                    node: NodeId(index as u64 + 1),
                    weight: 1,
                    shards: 1,
                })
                .expect("fresh join");
        }
        let nodes = (0..config.nodes)
            .map(|index| SimNode {
                id: NodeId(index as u64 + 1),
                machines: None,
                aae: None,
                store: None,
                disk: MemDisk::new(),
                disk_faulty: false,
                incarnation: 0,
                // The administrator joined every node on the first seed;
                // the others start empty and learn the cluster by gossip.
                membership_state: if index == 0 {
                    state.clone()
                } else {
                    MembershipState::new()
                },
                membership_ring: None,
                offset_ms: rng.below(5_000),
                drift_per_mille: rng.below(20),
                wake_at: None,
            })
            .collect();
        let clients = (0..config.clients)
            .map(|_| Client {
                state: ClientState::Idle,
                next_seq: 1,
                next_element: 1,
            })
            .collect();
        let ops_left = config.ops;
        let ring = state
            .derive_ring(None, PARTITIONS, config.quorum.n)
            .expect("claim of a valid membership");
        let mut sim = Sim {
            config,
            rng,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            event_slot: 0,
            nodes,
            clients,
            blocked: BTreeSet::new(),
            lossy: true,
            ops_left,
            acked: BTreeSet::new(),
            written: BTreeSet::new(),
            final_reads: BTreeMap::new(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            events_processed: 0,
            siblings_seen_max: 0,
            healed: false,
            ring,
            crashes: 0,
            io_failures: 0,
            hints_at_heal: 0,
            divergent_before_repair: 0,
            replica_messages_in_flight: 0,
            aae_messages_in_flight: 0,
            io_in_flight: 0,
            io_delayed: 0,
            riders_of_crashed: 0,
            long_down: None,
            aae_converge_ms: 0,
        };
        for node in 0..sim.nodes.len() {
            sim.start_node(node);
        }
        for client in 0..sim.clients.len() {
            let at = sim.rng.below(100);
            sim.schedule(at, Event::ClientWake { client });
        }
        sim.plan_faults();
        sim.plan_disk_faults();
        sim.plan_aae_faults();
        sim.schedule(HEAL_AT_MS, Event::Heal);
        sim
    }

    fn plan_faults(&mut self) {
        let n = self.nodes.len();
        for _ in 0..self.config.faults {
            let start = self.rng.below(FAULTS_END_MS);
            let duration = self.rng.range(200, 3_000);
            match self.rng.below(6) {
                0 | 1 => {
                    let node = self.rng.below(n as u64) as usize;
                    self.schedule(start, Event::Crash { node });
                    self.schedule(start + duration, Event::Restart { node });
                }
                // Correlated failure (a rack's power): several nodes crash
                // at once and lose their unsynced writes together.
                5 => {
                    let count = self.rng.range(2, n as u64);
                    for node in 0..n {
                        if (self.rng.below(n as u64)) < count {
                            self.schedule(start, Event::Crash { node });
                            let restart = start + self.rng.range(100, duration);
                            self.schedule(restart, Event::Restart { node });
                        }
                    }
                }
                kind => {
                    let mut blocked = Vec::new();
                    let victim = self.rng.below(n as u64) as usize;
                    match kind {
                        // One node isolated, both directions.
                        2 => {
                            for other in 0..n {
                                if other != victim {
                                    blocked.push((victim, other));
                                    blocked.push((other, victim));
                                }
                            }
                        }
                        // Majority/minority split.
                        3 => {
                            let minority: Vec<usize> =
                                (0..n).filter(|_| self.rng.below(3) == 0).collect();
                            for &a in &minority {
                                for b in 0..n {
                                    if !minority.contains(&b) {
                                        blocked.push((a, b));
                                        blocked.push((b, a));
                                    }
                                }
                            }
                        }
                        // Asymmetric: the victim hears everyone, nobody
                        // hears the victim.
                        _ => {
                            for other in 0..n {
                                if other != victim {
                                    blocked.push((victim, other));
                                }
                            }
                        }
                    }
                    self.schedule(start, Event::Partition { blocked });
                    self.schedule(
                        start + duration,
                        Event::Partition {
                            blocked: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    /// Disk faults come from their own RNG stream, so that adding them left
    /// every earlier seed's other faults and workload unchanged.
    fn plan_disk_faults(&mut self) {
        let mut rng = Rng::new(self.config.seed ^ 0xd15c_fa17);
        if !rng.chance_per_mille(300) {
            return;
        }
        let node = rng.below(self.nodes.len() as u64) as usize;
        let start = rng.below(FAULTS_END_MS);
        let duration = rng.range(200, 2_000);
        let full = rng.below(2) == 0;
        self.schedule(start, Event::DiskFault { node, full });
        self.schedule(start + duration, Event::DiskRepair { node });
    }

    /// Faults aimed at anti-entropy, from their own RNG stream (earlier
    /// seeds' other faults and workload stay as they were): a node kept down
    /// across many writes, a fallback that loses its hints, and, when every
    /// acknowledged write has two durable copies (DW >= 2), a wiped or
    /// corrupted disk.
    fn plan_aae_faults(&mut self) {
        let mut rng = Rng::new(self.config.seed ^ 0xaae0_5eed);
        let n = self.nodes.len() as u64;
        match rng.below(10) {
            0 | 1 => {
                let node = rng.below(n) as usize;
                self.long_down = Some(node);
                let at = rng.below(1_000);
                self.schedule(at, Event::Crash { node });
            }
            2 | 3 => {
                let node = rng.below(n) as usize;
                let at = rng.range(1_000, FAULTS_END_MS);
                self.schedule(at, Event::DropHints { node });
            }
            4 | 5 if self.config.quorum.dw >= 2 => {
                let node = rng.below(n) as usize;
                let at = rng.range(500, FAULTS_END_MS);
                self.schedule(at, Event::Wipe { node });
            }
            6 | 7 if self.config.quorum.dw >= 2 => {
                let node = rng.below(n) as usize;
                let at = rng.range(500, FAULTS_END_MS);
                let pick = rng.next_u64();
                self.schedule(at, Event::CorruptDisk { node, pick });
            }
            _ => {}
        }
    }

    fn aae_config() -> AaeConfig {
        AaeConfig {
            exchange_interval_ms: 100,
            exchange_timeout_ms: 1_000,
            tombstone_grace_ms: 1_000,
        }
    }

    /// The partitions `node` is a primary for, each with its primaries.
    fn primary_partitions(&self, node: NodeId) -> Vec<(u32, Vec<NodeId>)> {
        let n = self.config.quorum.n;
        (0..PARTITIONS)
            .filter_map(|partition| {
                let primaries: Vec<NodeId> = self
                    .ring
                    .walk(partition)
                    .map(|owner| owner.node)
                    .take(n)
                    .collect();
                primaries.contains(&node).then_some((partition, primaries))
            })
            .collect()
    }

    /// Damaged data records: drop the unreadable ones (no replica operation
    /// on the key is running, so none can race) and ask the other primaries
    /// for every damaged key.
    fn repair_corrupt(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let (Some(store), Some((replica, _)), Some(aae)) = (
            node.store.as_ref(),
            node.machines.as_ref(),
            node.aae.as_ref(),
        ) else {
            return;
        };
        let local = node.local_ms(self.now_ms);
        for (namespace, partition, key) in store.corrupt_keys() {
            if namespace != Namespace::Data || replica.key_busy(namespace, &key) {
                continue;
            }
            if let Err(StorageError::Corrupt { .. }) =
                block_on(store.get(namespace, partition, &key))
            {
                let io = IoRequest::Delete {
                    io: 0,
                    namespace,
                    partition,
                    key: key.clone(),
                };
                let _ = block_on(perform_io_observed(store, aae, || local, io));
            }
            aae.borrow_mut().handle_corrupt_key(local, partition, key);
        }
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        let slot = self.event_slot;
        self.event_slot += 1;
        self.seq += 1;
        if matches!(event, Event::Replica { .. }) {
            self.replica_messages_in_flight += 1;
        }
        if matches!(event, Event::Aae { .. }) {
            self.aae_messages_in_flight += 1;
        }
        self.events.insert(slot, event);
        self.queue
            .push(Reverse((at_ms.max(self.now_ms), self.seq, slot)));
    }

    fn replica_config(&self) -> ReplicaConfig {
        ReplicaConfig {
            quorum: self.config.quorum,
            request_timeout_ms: 1_000,
            replica_timeout_ms: 250,
            hint_replay_interval_ms: 500,
            hint_replay_batch_max: 8,
        }
    }

    fn start_node(&mut self, index: usize) {
        let config = self.replica_config();
        let node = &mut self.nodes[index];
        assert!(node.machines.is_none());
        let (store, _recovery) = block_on(Store::open(node.disk.clone(), store_config()))
            .expect("the store recovers from any crash");
        node.store = Some(store);
        node.incarnation += 1;
        let local = node.local_ms(self.now_ms);
        let replica = Replica::new(
            node.id,
            actor_id(node.id, 0, node.incarnation),
            config,
            local,
        );
        let seeds = vec![NodeId(1), NodeId(2)];
        let membership = Membership::new(
            node.id,
            MembershipConfig::default(),
            seeds,
            node.membership_state.clone(),
            local,
        )
        .with_ring(
            PARTITIONS,
            self.config.quorum.n,
            node.membership_ring.clone(),
        );
        node.machines = Some((replica, membership));
        let id = node.id;
        let xid_base = u64::from(node.incarnation) << 40;
        let mut aae = AntiEntropy::new(id, Self::aae_config(), local, xid_base);
        aae.set_partitions(self.primary_partitions(id));
        self.nodes[index].aae = Some(RefCell::new(aae));
        self.repair_corrupt(index);
        self.drain(index);
    }

    fn partition(&self, key: usize) -> u32 {
        key_partition(&key_bytes(key), PARTITIONS)
    }

    /// The preference list from the ring: the first N distinct nodes of the
    /// walk are the primaries, the rest the fallbacks in order.
    fn preference(&self, key: usize) -> Preference {
        let walk: Vec<NodeId> = self
            .ring
            .walk(self.partition(key))
            .map(|owner| owner.node)
            .collect();
        let n = self.config.quorum.n;
        assert!(walk.len() >= n);
        Preference {
            primaries: walk[..n].to_vec(),
            fallbacks: walk[n..].to_vec(),
        }
    }

    fn index_of(&self, node: NodeId) -> usize {
        (node.0 - 1) as usize
    }

    fn send_over_network(&mut self, from: usize, to: usize, bytes: Vec<u8>, kind: u8) {
        let gossip = kind == 1;
        if self.blocked.contains(&(from, to)) {
            return;
        }
        if self.lossy && self.rng.chance_per_mille(self.config.drop_per_mille) {
            return;
        }
        let copies = if self.lossy && self.rng.chance_per_mille(self.config.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            // Independent delays reorder messages.
            let mut delay = self.rng.range(1, self.config.delay_ms_max);
            if self.lossy && self.rng.chance_per_mille(10) {
                // A straggler: arrives long after its request timed out.
                delay += self.rng.range(500, 3_000);
            }
            let event = if gossip {
                Event::Gossip {
                    to,
                    from,
                    bytes: bytes.clone(),
                }
            } else if kind == 2 {
                Event::Aae {
                    to,
                    from,
                    bytes: bytes.clone(),
                }
            } else {
                Event::Replica {
                    to,
                    from,
                    bytes: bytes.clone(),
                }
            };
            self.schedule(self.now_ms + delay, event);
        }
    }

    /// Runs node `index`'s outputs to quiescence: storage I/O completes at
    /// once (or, on a slow disk, some of it later, `Event::IoDone`),
    /// messages go to the network, replies to the clients.
    fn drain(&mut self, index: usize) {
        let now = self.now_ms;
        loop {
            let mut progressed = false;
            let mut held = Vec::new();
            let node = &mut self.nodes[index];
            let local = node.local_ms(now);
            let Some((replica, membership)) = node.machines.as_mut() else {
                return;
            };
            let aae = node.aae.as_ref().expect("a running node has its AAE");
            let store = node.store.as_ref().expect("a running node has its store");
            while let Some(io) = replica.poll_io() {
                progressed = true;
                if self.config.slow_io_per_mille > 0
                    && self.rng.below(1000) < self.config.slow_io_per_mille
                {
                    held.push(io);
                    continue;
                }
                if !perform_on(store, aae, replica, local, io) {
                    self.io_failures += 1;
                }
            }
            let mut aae_transmits = Vec::new();
            {
                let mut aae = aae.borrow_mut();
                while let Some(request) = aae.poll_io() {
                    progressed = true;
                    let result = block_on(perform_scan(store, &request));
                    aae.handle_scan_done(local, request.io, result.map_err(|e| e.to_string()));
                }
                while let Some((to, message)) = aae.poll_transmit() {
                    let mut bytes = Vec::new();
                    message.encode(&mut bytes);
                    aae.record_bytes_sent(bytes.len() as u64);
                    aae_transmits.push((to, bytes, 2u8));
                }
                while let Some(action) = aae.poll_action() {
                    progressed = true;
                    action.start_on(replica);
                }
            }
            let aae_wake = aae.borrow().poll_timeout();
            while let Some(peer) = replica.poll_peer_timeout() {
                membership.handle_request_timeout(local, peer);
            }
            if membership.take_state_changed() {
                node.membership_state = membership.state().clone();
                node.membership_ring = membership.ring().cloned();
            }
            let mut transmits = aae_transmits;
            while let Some(transmit) = replica.poll_transmit() {
                let mut bytes = Vec::new();
                transmit.message.encode(&mut bytes);
                transmits.push((transmit.to, bytes, 0));
            }
            while let Some((to, message)) = membership.poll_transmit() {
                let mut bytes = Vec::new();
                message.encode(&mut bytes);
                transmits.push((to, bytes, 1));
            }
            let mut replies = Vec::new();
            while let Some(reply) = replica.poll_reply() {
                replies.push(reply);
            }
            for peer in 0..self.config.nodes {
                let peer_id = NodeId(peer as u64 + 1);
                let reachable = membership.is_reachable(peer_id);
                replica.set_reachable(peer_id, reachable);
            }
            let wake_local = match (replica.poll_timeout(), membership.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake_local = Some(wake_local.map_or(aae_wake, |at| at.min(aae_wake)));
            let wake_global = wake_local.map(|local_ms| node.global_ms(local_ms).max(now));
            progressed |= !transmits.is_empty() || !replies.is_empty();
            let incarnation = node.incarnation;
            for io in held {
                self.io_in_flight += 1;
                self.io_delayed += 1;
                let delay = self.rng.range(1, IO_DELAY_MS_MAX);
                self.schedule(
                    self.now_ms + delay,
                    Event::IoDone {
                        node: index,
                        incarnation,
                        io,
                    },
                );
            }
            for (to, bytes, kind) in transmits {
                let to = self.index_of(to);
                self.send_over_network(index, to, bytes, kind);
            }
            for reply in replies {
                let id = match &reply {
                    ClientReply::Put { id, .. } | ClientReply::Get { id, .. } => *id,
                };
                let client = (id >> 32) as usize;
                let delay = self.rng.range(1, 5);
                self.schedule(self.now_ms + delay, Event::Reply { client, reply });
            }
            if let Some(at) = wake_global {
                let node = &mut self.nodes[index];
                if node
                    .wake_at
                    .is_none_or(|current| at < current || current < now)
                {
                    node.wake_at = Some(at);
                    self.schedule(at, Event::NodeWake { node: index });
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn trace(&mut self, tag: u8, a: u64, bytes: &[u8]) {
        let mut hash = self.trace_hash;
        fnv(&mut hash, &self.now_ms.to_le_bytes());
        fnv(&mut hash, &[tag]);
        fnv(&mut hash, &a.to_le_bytes());
        fnv(&mut hash, bytes);
        self.trace_hash = hash;
        self.events_processed += 1;
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, _, slot))) = self.queue.pop() else {
            return false;
        };
        assert!(at >= self.now_ms, "virtual time never goes back");
        self.now_ms = at;
        let event = self.events.remove(&slot).expect("event stored");
        match event {
            Event::Replica { to, from, bytes } => {
                self.replica_messages_in_flight -= 1;
                self.trace(1, (to * 16 + from) as u64, &bytes);
                let message = ReplicaMessage::decode(&bytes).expect("own encoding decodes");
                let from_id = self.nodes[from].id;
                let node = &mut self.nodes[to];
                let local = node.local_ms(self.now_ms);
                if let Some((replica, membership)) = node.machines.as_mut() {
                    membership.handle_heard_from(local, from_id);
                    replica.handle_message(local, from_id, message);
                    self.drain(to);
                }
            }
            Event::Gossip { to, from, bytes } => {
                self.trace(2, (to * 16 + from) as u64, &bytes);
                let message = MembershipMessage::decode(&bytes).expect("own encoding decodes");
                let from_id = self.nodes[from].id;
                let node = &mut self.nodes[to];
                let local = node.local_ms(self.now_ms);
                if let Some((_, membership)) = node.machines.as_mut() {
                    membership.handle_message(local, from_id, message);
                    self.drain(to);
                }
            }
            Event::NodeWake { node: index } => {
                let node = &mut self.nodes[index];
                if node.wake_at != Some(self.now_ms) {
                    return true; // superseded
                }
                node.wake_at = None;
                self.trace(3, index as u64, &[]);
                let random = self.rng.next_u64();
                let node = &mut self.nodes[index];
                let local = node.local_ms(self.now_ms);
                if let Some((replica, membership)) = node.machines.as_mut() {
                    // The background share swings between the monitor's
                    // extremes, as under a busy foreground: hint replay
                    // must still drain at its floor (check 4). Taken from
                    // bits of the wake's draw, so seeds keep their
                    // sequence of random numbers.
                    replica.set_background_share((random >> 54) as f64 / 1023.0);
                    replica.handle_timeout(local);
                    membership.handle_timeout(local, random);
                    if let Some(aae) = &node.aae {
                        let mut aae = aae.borrow_mut();
                        if aae.poll_timeout() <= local {
                            aae.handle_timeout(local);
                        }
                    }
                    self.repair_corrupt(index);
                    self.drain(index);
                }
            }
            Event::Aae { to, from, bytes } => {
                self.aae_messages_in_flight -= 1;
                self.trace(13, (to * 16 + from) as u64, &bytes);
                let message = AaeMessage::decode(&bytes).expect("own encoding decodes");
                let from_id = self.nodes[from].id;
                let node = &mut self.nodes[to];
                let local = node.local_ms(self.now_ms);
                if let Some(aae) = &node.aae {
                    aae.borrow_mut().handle_message(local, from_id, message);
                    self.drain(to);
                }
            }
            Event::Wipe { node: index } => {
                if self.healed || self.nodes[index].machines.is_none() {
                    return true;
                }
                self.trace(10, index as u64, &[]);
                self.crash_node(index);
                self.nodes[index].disk = MemDisk::new();
                self.start_node(index);
            }
            Event::CorruptDisk { node: index, pick } => {
                if self.healed || self.nodes[index].machines.is_none() {
                    return true;
                }
                self.trace(11, index as u64, &pick.to_le_bytes());
                let disk = self.nodes[index].disk.clone();
                let segments: Vec<String> = disk
                    .file_names()
                    .into_iter()
                    .filter(|name| name.ends_with(".log"))
                    .collect();
                if !segments.is_empty() {
                    let name = &segments[(pick % segments.len() as u64) as usize];
                    let len = disk.file_bytes(name).map_or(0, |bytes| bytes.len() as u64);
                    if len > 0 {
                        disk.flip_bit(name, (pick >> 8) % len, (pick >> 4) as u8 % 8);
                    }
                }
                // Half the time the node notices at once (a restart scans
                // the log); otherwise a read trips over it later.
                if pick % 2 == 0 {
                    self.crash_node(index);
                    self.start_node(index);
                }
            }
            Event::IoDone {
                node: index,
                incarnation,
                io,
            } => {
                self.io_in_flight -= 1;
                let node = &mut self.nodes[index];
                if node.incarnation != incarnation {
                    return true; // lost with the process that asked
                }
                if node.machines.is_none() {
                    return true;
                }
                self.trace(14, index as u64, &[]);
                let node = &mut self.nodes[index];
                let local = node.local_ms(self.now_ms);
                let (replica, _) = node.machines.as_mut().expect("running");
                let aae = node.aae.as_ref().expect("a running node has its AAE");
                let store = node.store.as_ref().expect("a running node has its store");
                if !perform_on(store, aae, replica, local, io) {
                    self.io_failures += 1;
                }
                self.drain(index);
            }
            Event::DropHints { node: index } => {
                self.trace(12, index as u64, &[]);
                let node = &mut self.nodes[index];
                if let Some(store) = node.store.as_ref() {
                    for partition in store.partitions(Namespace::Hint) {
                        for key in store.keys(Namespace::Hint, partition) {
                            let _ = block_on(store.purge(Namespace::Hint, partition, &key));
                        }
                    }
                }
            }
            Event::Request {
                to,
                client,
                id,
                key,
                op,
            } => {
                self.trace(4, id, &[to as u8, client as u8, key as u8]);
                let preference = self.preference(key);
                let partition = self.partition(key);
                let node = &mut self.nodes[to];
                let local = node.local_ms(self.now_ms);
                if let Some((replica, _)) = node.machines.as_mut() {
                    match op {
                        ClientOp::Get { r } => replica.start_get(
                            local,
                            id,
                            GetRequest {
                                key: key_bytes(key),
                                partition,
                                preference,
                                r,
                            },
                        ),
                        ClientOp::Put {
                            context,
                            value,
                            quorum,
                        } => replica.start_put(
                            local,
                            id,
                            PutRequest {
                                key: key_bytes(key),
                                partition,
                                context,
                                value,
                                preference,
                                quorum,
                            },
                        ),
                    }
                    self.drain(to);
                }
            }
            Event::Reply { client, reply } => {
                self.trace(5, client as u64, format!("{reply:?}").as_bytes());
                self.client_reply(client, reply);
            }
            Event::ClientWake { client } => {
                self.trace(6, client as u64, &[]);
                self.client_next(client);
            }
            Event::ClientTimeout { client, id } => {
                let pending = match self.clients[client].state {
                    ClientState::Getting { id: current, .. }
                    | ClientState::Putting { id: current, .. } => current == id,
                    ClientState::Idle => false,
                };
                if pending {
                    self.trace(7, id, &[]);
                    self.clients[client].state = ClientState::Idle;
                    self.client_pause(client);
                }
            }
            Event::Crash { node: index } => {
                if self.healed || self.nodes[index].machines.is_none() {
                    return true;
                }
                self.trace(8, index as u64, &[]);
                self.crash_node(index);
            }
            Event::DiskFault { node: index, full } => {
                if self.healed || self.nodes[index].machines.is_none() {
                    return true;
                }
                self.trace(12, index as u64, &[u8::from(full)]);
                let node = &mut self.nodes[index];
                node.disk_faulty = true;
                if full {
                    let used = node.disk.used_bytes();
                    node.disk.set_capacity_bytes(Some(used + 2_048));
                } else {
                    node.disk.set_fail_sync(true);
                }
            }
            Event::DiskRepair { node: index } => {
                if self.healed || !self.nodes[index].disk_faulty {
                    return true;
                }
                self.trace(13, index as u64, &[]);
                self.repair_disk(index);
            }
            Event::Restart { node: index } => {
                if self.long_down == Some(index) && !self.healed {
                    return true; // kept down until the heal
                }
                if self.nodes[index].machines.is_none() {
                    self.trace(9, index as u64, &[]);
                    self.start_node(index);
                }
            }
            Event::Partition { blocked } => {
                if self.healed {
                    return true;
                }
                self.trace(10, blocked.len() as u64, &[]);
                self.blocked = blocked.into_iter().collect();
            }
            Event::Heal => {
                self.trace(11, 0, &[]);
                self.healed = true;
                self.hints_at_heal = self.hints_left();
                // The workload ends with the faults, so the final state is
                // whatever the faults left: only hint replay and read repair
                // can make the replicas converge.
                self.ops_left = 0;
                self.blocked.clear();
                self.lossy = false;
                for index in 0..self.nodes.len() {
                    if self.nodes[index].disk_faulty {
                        self.repair_disk(index);
                    }
                    if self.nodes[index].machines.is_none() {
                        self.start_node(index);
                    }
                }
            }
        }
        true
    }

    /// Power loss: the machines and the store go, unsynced writes are lost
    /// (sometimes with a torn last write).
    fn crash_node(&mut self, index: usize) {
        self.crashes += 1;
        let mode = if self.rng.below(2) == 0 {
            CrashMode::LoseUnsynced
        } else {
            CrashMode::TearLastWrite {
                boundary_bytes: 512,
            }
        };
        let node = &mut self.nodes[index];
        if let Some((replica, _)) = node.machines.as_ref() {
            self.riders_of_crashed += replica.riders_total();
        }
        node.machines = None;
        node.aae = None;
        node.store = None;
        node.disk.crash(mode);
        node.wake_at = None;
    }

    /// Ends a disk fault: the node crashes (a failed fsync is fatal) and
    /// restarts on the repaired disk.
    fn repair_disk(&mut self, index: usize) {
        if self.nodes[index].machines.is_some() {
            self.crash_node(index);
        }
        let node = &mut self.nodes[index];
        node.disk_faulty = false;
        node.disk.set_capacity_bytes(None);
        node.disk.set_fail_sync(false);
        self.start_node(index);
    }

    fn client_pause(&mut self, client: usize) {
        let think = self.rng.range(1, 60);
        self.schedule(self.now_ms + think, Event::ClientWake { client });
    }

    fn send_request(&mut self, client: usize, to: usize, key: usize, op: ClientOp) -> u64 {
        let seq = self.clients[client].next_seq;
        self.clients[client].next_seq += 1;
        let id = ((client as u64) << 32) | seq;
        let delay = self.rng.range(1, 5);
        self.schedule(
            self.now_ms + delay,
            Event::Request {
                to,
                client,
                id,
                key,
                op,
            },
        );
        self.schedule(
            self.now_ms + CLIENT_TIMEOUT_MS,
            Event::ClientTimeout { client, id },
        );
        id
    }

    fn random_primary(&mut self, key: usize) -> usize {
        let primaries = self.preference(key).primaries;
        let pick = primaries[self.rng.below(primaries.len() as u64) as usize];
        self.index_of(pick)
    }

    fn client_next(&mut self, client: usize) {
        if !matches!(self.clients[client].state, ClientState::Idle) {
            return;
        }
        if self.ops_left == 0 {
            return;
        }
        self.ops_left -= 1;
        let key = self.rng.below(self.config.keys as u64) as usize;
        let to = self.random_primary(key);
        if self.rng.chance_per_mille(100) {
            // A blind put: no context, so it becomes a sibling of everything.
            self.client_put(client, key, to, VersionVector::new(), BTreeSet::new());
            return;
        }
        let id = self.send_request(client, to, key, ClientOp::Get { r: None });
        self.clients[client].state = ClientState::Getting { id, key };
    }

    fn client_put(
        &mut self,
        client: usize,
        key: usize,
        to: usize,
        context: VersionVector,
        mut elements: BTreeSet<u64>,
    ) {
        let element = ((client as u64 + 1) << 40) | self.clients[client].next_element;
        self.clients[client].next_element += 1;
        elements.insert(element);
        self.written.insert(element);
        let value = Value::Data(encode_cart(&elements));
        let id = self.send_request(
            client,
            to,
            key,
            ClientOp::Put {
                context,
                value,
                quorum: None,
            },
        );
        self.clients[client].state = ClientState::Putting { id, element };
    }

    fn client_reply(&mut self, client: usize, reply: ClientReply) {
        if client >= self.config.clients {
            // The checker's final reads are collected by `run`; it never
            // writes.
            return;
        }
        match (self.clients[client].state.clone(), reply) {
            (
                ClientState::Getting { id, key },
                ClientReply::Get {
                    id: reply_id,
                    result,
                },
            ) if id == reply_id => {
                self.clients[client].state = ClientState::Idle;
                match result {
                    Ok(outcome) => {
                        self.siblings_seen_max =
                            self.siblings_seen_max.max(outcome.siblings.sibling_count());
                        let elements = cart_union(&outcome.siblings);
                        // Write to the fastest reader (§6.4) when it is a
                        // primary, else any primary.
                        let primaries = self.preference(key).primaries;
                        let to = match outcome.context.fastest_replica {
                            Some(raw) if primaries.contains(&NodeId(raw)) => {
                                self.index_of(NodeId(raw))
                            }
                            _ => self.random_primary(key),
                        };
                        let context = outcome.context.clone();
                        // The context travels as an opaque token.
                        let token = context.encode();
                        let context = Context::decode(&token).expect("own token decodes").clock;
                        self.client_put(client, key, to, context, elements);
                    }
                    Err(_) => self.client_pause(client),
                }
            }
            (
                ClientState::Putting { id, element, .. },
                ClientReply::Put {
                    id: reply_id,
                    result,
                },
            ) if id == reply_id => {
                self.clients[client].state = ClientState::Idle;
                if result.is_ok() {
                    self.acked.insert(element);
                }
                self.client_pause(client);
            }
            // A late reply to a request the client gave up on.
            _ => {}
        }
    }

    fn clients_done(&self) -> bool {
        self.ops_left == 0
            && self
                .clients
                .iter()
                .all(|client| matches!(client.state, ClientState::Idle))
    }

    fn hints_left(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|node| node.machines.as_ref())
            .map(|(replica, _)| replica.hint_count())
            .sum()
    }

    fn run_until(&mut self, mut done: impl FnMut(&Sim) -> bool, limit_ms: u64) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.now_ms > limit_ms || !self.step() {
                return false;
            }
        }
    }

    /// `run_until` for checks that read every primary's store: evaluated
    /// once per 10 virtual ms instead of after every event.
    fn run_until_sampled(&mut self, mut done: impl FnMut(&Sim) -> bool, limit_ms: u64) -> bool {
        let mut next_check_ms = 0;
        self.run_until(
            |sim| {
                if sim.now_ms < next_check_ms {
                    return false;
                }
                next_check_ms = sim.now_ms + 10;
                done(sim)
            },
            limit_ms,
        )
    }

    /// Keys whose primaries store different sibling sets, described.
    fn divergent_keys(&self) -> Vec<String> {
        let mut divergent = Vec::new();
        for key in 0..self.config.keys {
            let preference = self.preference(key);
            let mut stored = Vec::new();
            for primary in &preference.primaries {
                let node = &self.nodes[self.index_of(*primary)];
                let store = node.store.as_ref().expect("every node runs after healing");
                let record =
                    block_on(store.get(Namespace::Data, self.partition(key), &key_bytes(key)))
                        .expect("reads work");
                let set = record.map(|record| SiblingSet::decode(&record.payload));
                stored.push((*primary, set));
            }
            let first = &stored[0].1;
            if stored.iter().any(|(_, set)| set != first) {
                divergent.push(format!("primaries of key {key} diverge: {stored:?}"));
            }
        }
        divergent
    }

    /// Sends one request from the checker client and runs until its reply
    /// (or the client timeout); `None` when it never came.
    fn call(&mut self, to: usize, key: usize, op: ClientOp) -> Option<ClientReply> {
        let checker = self.clients.len() - 1;
        let id = self.send_request(checker, to, key, op);
        let deadline = self.now_ms + CLIENT_TIMEOUT_MS;
        while self.now_ms <= deadline {
            let Reverse((_, _, slot)) = self.queue.peek().copied()?;
            let reply = match self.events.get(&slot) {
                Some(Event::Reply { client, reply }) if *client == checker => {
                    let reply_id = match reply {
                        ClientReply::Put { id, .. } | ClientReply::Get { id, .. } => *id,
                    };
                    (reply_id == id).then(|| reply.clone())
                }
                _ => None,
            };
            self.step();
            if reply.is_some() {
                return reply;
            }
        }
        None
    }

    /// Phase 4 (tombstones, design guide §4): one primary of key 0 is down
    /// while every key is deleted; it returns holding the old values. Every
    /// primary must end up holding nothing for any key (the tombstones were
    /// collected, so they do not pile up) and a read of all primaries must
    /// find no value (no delete was undone by the returning replica).
    fn tombstone_phase(&mut self) -> Result<(), String> {
        let victim = self.random_primary(0);
        self.crash_node(victim);
        let n = self.config.quorum.n;
        let delete_quorum = QuorumConfig {
            n,
            r: 2,
            w: 2,
            dw: 1,
        };
        for key in 0..self.config.keys {
            let mut attempts = 0;
            loop {
                attempts += 1;
                if attempts > 20 {
                    return Err(format!("the delete of key {key} never succeeded"));
                }
                let live: Vec<usize> = self
                    .preference(key)
                    .primaries
                    .iter()
                    .map(|p| self.index_of(*p))
                    .filter(|i| *i != victim)
                    .collect();
                let to = live[self.rng.below(live.len() as u64) as usize];
                let Some(ClientReply::Get {
                    result: Ok(outcome),
                    ..
                }) = self.call(to, key, ClientOp::Get { r: Some(2) })
                else {
                    continue;
                };
                let op = ClientOp::Put {
                    context: outcome.context.clock,
                    value: Value::Tombstone,
                    quorum: Some(delete_quorum),
                };
                if let Some(ClientReply::Put { result: Ok(_), .. }) = self.call(to, key, op) {
                    break;
                }
            }
        }
        self.start_node(victim);
        let collected = |sim: &Sim| {
            (0..sim.config.keys).all(|key| {
                sim.preference(key).primaries.iter().all(|primary| {
                    let node = &sim.nodes[sim.index_of(*primary)];
                    let store = node.store.as_ref().expect("every node runs");
                    block_on(store.get(Namespace::Data, sim.partition(key), &key_bytes(key)))
                        .expect("reads work")
                        .is_none()
                })
            }) && sim
                .nodes
                .iter()
                .filter_map(|node| node.aae.as_ref())
                .all(|aae| aae.borrow().tombstones_tracked() == 0)
        };
        if !self.run_until_sampled(collected, self.now_ms + SETTLE_MS_MAX) {
            return Err(format!(
                "tombstones were not collected: {:?}",
                self.divergent_keys()
            ));
        }
        for key in 0..self.config.keys {
            let to = self.random_primary(key);
            if let Some(ClientReply::Get {
                result: Ok(outcome),
                ..
            }) = self.call(to, key, ClientOp::Get { r: Some(n) })
            {
                if !outcome.siblings.data_values().is_empty() {
                    return Err(format!(
                        "deleted key {key} came back: {:?}",
                        outcome.siblings
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs the whole scenario and checks it; `Err` describes a violation.
    pub fn run(mut self) -> Result<SimReport, String> {
        let limit = HEAL_AT_MS + SETTLE_MS_MAX;
        if !self.run_until(|sim| sim.healed && sim.clients_done(), limit) {
            return Err(format!("workload did not finish by {} ms", self.now_ms));
        }
        // Quiesce: no coordinator request in flight (they keep writing to
        // fallbacks after answering the client), then no hint left.
        let quiet = |sim: &Sim| {
            sim.hints_left() == 0
                && sim.replica_messages_in_flight == 0
                && sim.io_in_flight == 0
                && sim
                    .nodes
                    .iter()
                    .filter_map(|node| node.machines.as_ref())
                    .all(|(replica, _)| replica.requests_in_flight() == 0)
        };
        if !self.run_until(quiet, self.now_ms + SETTLE_MS_MAX) {
            return Err(format!("{} hints never handed back", self.hints_left()));
        }
        self.divergent_before_repair = self.divergent_keys().len();
        // Anti-entropy alone (no read yet) must make every key's primaries
        // agree: lost hints, wiped or damaged disks and long outages leave
        // differences that only it repairs.
        let quiet_at = self.now_ms;
        if !self.run_until_sampled(
            |sim| sim.divergent_keys().is_empty(),
            self.now_ms + SETTLE_MS_MAX,
        ) {
            return Err(format!(
                "anti-entropy did not converge: {:?}",
                self.divergent_keys()
            ));
        }
        self.aae_converge_ms = self.now_ms - quiet_at;
        // Final R=all reads, retried until each key answers.
        let checker = self.clients.len();
        self.clients.push(Client {
            state: ClientState::Idle,
            next_seq: 1,
            next_element: 1,
        });
        for key in 0..self.config.keys {
            let mut attempts = 0;
            loop {
                attempts += 1;
                if attempts > 20 {
                    return Err(format!("final read of key {key} never succeeded"));
                }
                let to = self.random_primary(key);
                let id = self.send_request(
                    checker,
                    to,
                    key,
                    ClientOp::Get {
                        r: Some(self.config.quorum.n),
                    },
                );
                self.clients[checker].state = ClientState::Getting { id, key };
                let mut result = None;
                let deadline = self.now_ms + CLIENT_TIMEOUT_MS;
                while self.now_ms <= deadline && result.is_none() {
                    let Some(Reverse((_, _, slot))) = self.queue.peek().copied() else {
                        break;
                    };
                    if let Some(Event::Reply {
                        client,
                        reply:
                            ClientReply::Get {
                                id: reply_id,
                                result: r,
                            },
                    }) = self.events.get(&slot)
                    {
                        if *client == checker && *reply_id == id {
                            result = Some(r.clone());
                        }
                    }
                    self.step();
                }
                self.clients[checker].state = ClientState::Idle;
                if let Some(Ok(outcome)) = result {
                    self.final_reads.insert(key, outcome.siblings);
                    break;
                }
            }
        }
        // Let the read repair land.
        let settle = self.now_ms + 2_000;
        self.run_until(|sim| sim.now_ms >= settle, settle + 1);

        // Check (1) and (2): acknowledged elements survive, nothing appears
        // that was never written.
        let mut seen = BTreeSet::new();
        for siblings in self.final_reads.values() {
            seen.extend(cart_union(siblings));
        }
        let lost: Vec<u64> = self.acked.difference(&seen).copied().collect();
        if !lost.is_empty() {
            return Err(format!("acknowledged elements lost: {lost:x?}"));
        }
        let invented: Vec<u64> = seen.difference(&self.written).copied().collect();
        if !invented.is_empty() {
            return Err(format!("elements never written appeared: {invented:x?}"));
        }
        // Check (3): every primary of a key holds the same sibling set.
        if let Some(divergence) = self.divergent_keys().into_iter().next() {
            return Err(divergence);
        }
        // Check (5): gossip converged: every node knows every member.
        for node in &self.nodes {
            let (_, membership) = node.machines.as_ref().expect("all nodes run");
            if membership.state().active_members().len() != self.nodes.len() {
                return Err(format!(
                    "{:?} knows {} of {} members after healing",
                    node.id,
                    membership.state().active_members().len(),
                    self.nodes.len()
                ));
            }
        }
        // Check (5b): one agreed ring, claimed for every member.
        let rings: Vec<Option<&ClaimedRing>> = self
            .nodes
            .iter()
            .map(|node| node.machines.as_ref().and_then(|(_, m)| m.ring()))
            .collect();
        let first = rings[0].ok_or("node 1 holds no ring")?;
        if first.members.len() != self.nodes.len() || rings.iter().any(|r| *r != Some(first)) {
            return Err(format!(
                "rings differ after healing: epochs {:?}",
                rings
                    .iter()
                    .map(|r| r.map(|r| r.ring.epoch))
                    .collect::<Vec<_>>()
            ));
        }
        // Check (4): every hint was handed back.
        if self.hints_left() != 0 {
            return Err(format!("{} hints left", self.hints_left()));
        }
        self.tombstone_phase()?;
        Ok(SimReport {
            trace_hash: self.trace_hash,
            events: self.events_processed,
            acked: self.acked.len(),
            written: self.written.len(),
            virtual_ms: self.now_ms,
            siblings_seen_max: self.siblings_seen_max,
            crashes: self.crashes,
            io_failures: self.io_failures,
            hints_at_heal: self.hints_at_heal,
            divergent_before_repair: self.divergent_before_repair,
            aae_converge_ms: self.aae_converge_ms,
            aae_keys_repaired: self
                .nodes
                .iter()
                .filter_map(|node| node.aae.as_ref())
                .map(|aae| aae.borrow().stats().keys_received)
                .sum(),
            tombstones_purged: self
                .nodes
                .iter()
                .filter_map(|node| node.aae.as_ref())
                .map(|aae| aae.borrow().stats().tombstones_purged)
                .sum(),
            io_delayed: self.io_delayed,
            riders: self.riders_of_crashed
                + self
                    .nodes
                    .iter()
                    .filter_map(|node| node.machines.as_ref())
                    .map(|(replica, _)| replica.riders_total())
                    .sum::<u64>(),
        })
    }
}

/// Performs one storage request of `replica` on its node's store (keeping
/// the anti-entropy tree in step) and hands the result back; false when the
/// store refused it.
fn perform_on(
    store: &Store<MemDisk>,
    aae: &RefCell<AntiEntropy>,
    replica: &mut Replica,
    local_ms: u64,
    io: IoRequest,
) -> bool {
    let (io_id, result) = block_on(perform_io_observed(store, aae, || local_ms, io));
    let result = result.unwrap_or_else(|error| IoResult::Failed(error.to_string()));
    let done = !matches!(result, IoResult::Failed(_));
    replica.handle_io_done(local_ms, io_id, result);
    done
}

fn store_config() -> StoreConfig {
    StoreConfig {
        // Small buffers and segments so flushes, rotations and torn tails
        // happen within a short run.
        max_key_bytes: 256,
        max_value_bytes: 64 * 1024,
        write_buffer_bytes: 4096,
        segment_size_bytes: 256 * 1024,
        ..StoreConfig::default()
    }
}

/// Runs `seed` twice, checks both runs and that their traces match.
pub fn check_seed(seed: u64) -> Result<SimReport, String> {
    let first = Sim::new(SimConfig::from_seed(seed)).run()?;
    let second = Sim::new(SimConfig::from_seed(seed)).run()?;
    if first != second {
        return Err(format!(
            "non-deterministic: trace {:#x} then {:#x}",
            first.trace_hash, second.trace_hash
        ));
    }
    Ok(first)
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("DYNAKV_SIM_SEED={seed} cargo test --test simulator -- replay --nocapture")
}
