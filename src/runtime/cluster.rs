//! The node's view of the cluster, shared by its shards, and the driver of
//! the membership machine (gossip, failure detection, admin changes).
//!
//! Shard 0 runs the sans-IO [`Membership`] machine: it feeds it gossip from
//! other nodes, ticks it about once a gossip interval, sends its messages
//! over shard 0's internode links, persists its state in the data directory
//! after every change (temporary file, fsync, rename, fsync of the
//! directory), and publishes a new [`Topology`] snapshot — ring, preference
//! walks, member addresses, reachability, routing table — that every shard
//! reads through an `Arc` (never on a per-key lock; the snapshot is replaced
//! whole, with a version number).
//!
//! Member addresses are not part of the membership machine's state: each
//! node gossips an *address book* (node id → IP, client and internode ports,
//! shard count) next to every membership message. A node is the authority on
//! its own entry; entries heard second-hand only fill gaps.
//!
//! Invariants: the ring is the one the membership machine agreed on by
//! gossip (`Membership::ring`: claimed from the previous ring, highest epoch
//! wins), persisted with the state, so a change moves as few partitions as
//! it must and every node converges on one ring; failure detection only
//! changes `Topology::unreachable`, never ownership (Dynamo §4.8.3).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::internode::{Envelope, Links, KIND_MEMBERSHIP};
use super::log;
use crate::config::ServerConfig;
use crate::membership::{
    next_ring, AdminChange, ClaimedRing, MemberRecord, MemberStatus, Membership, MembershipConfig,
    MembershipMessage, MembershipState, NodeId, StagedPlan, MEMBERS_MAX,
};
use crate::protocol::{RoutingNode, RoutingTable};
use crate::replica::Preference;
use crate::ring::VnodeOwner;

/// Where a node can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub ip: IpAddr,
    /// The node-level client port.
    pub client_port: u16,
    /// Shard `i`'s client port is `shard_port_base + i`.
    pub shard_port_base: u16,
    /// Shard `i`'s internode port is `internode_port + i`.
    pub internode_port: u16,
    pub shards: u16,
}

impl Endpoint {
    pub(crate) fn of(config: &ServerConfig, shards: usize) -> Endpoint {
        Endpoint {
            ip: config.listen.ip(),
            client_port: config.listen.port(),
            shard_port_base: config.shard_port(0),
            internode_port: config.internode_addr().port(),
            shards: shards as u16,
        }
    }

    pub(crate) fn internode(&self, shard: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.internode_port.wrapping_add(shard))
    }
}

/// Node id → endpoint, gossiped next to membership messages.
pub(crate) type AddressBook = BTreeMap<NodeId, Endpoint>;

fn encode_book<'a>(
    out: &mut Vec<u8>,
    entries: impl ExactSizeIterator<Item = (&'a NodeId, &'a Endpoint)>,
) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, endpoint) in entries {
        out.extend_from_slice(&id.0.to_le_bytes());
        match endpoint.ip {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        for port in [
            endpoint.client_port,
            endpoint.shard_port_base,
            endpoint.internode_port,
            endpoint.shards,
        ] {
            out.extend_from_slice(&port.to_le_bytes());
        }
    }
}

/// A bounded, panic-free reader of untrusted bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn decode_book(cursor: &mut Cursor<'_>) -> Option<AddressBook> {
    let count = cursor.u32()? as usize;
    if count > MEMBERS_MAX {
        return None;
    }
    let mut book = AddressBook::new();
    for _ in 0..count {
        let id = NodeId(cursor.u64()?);
        let ip = match cursor.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(cursor.take(4)?).ok()?)),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(cursor.take(16)?).ok()?)),
            _ => return None,
        };
        let endpoint = Endpoint {
            ip,
            client_port: cursor.u16()?,
            shard_port_base: cursor.u16()?,
            internode_port: cursor.u16()?,
            shards: cursor.u16()?,
        };
        if endpoint.shards == 0 || endpoint.shards > 256 {
            return None;
        }
        book.insert(id, endpoint);
    }
    Some(book)
}

/// Encodes a membership message with an address book: `u32` length, the
/// message, then the book.
pub(crate) fn encode_gossip(
    out: &mut Vec<u8>,
    message: &MembershipMessage,
    book: &AddressBook,
    me: NodeId,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    message.encode(out);
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    match message {
        MembershipMessage::Push { .. } | MembershipMessage::Pull { .. } => {
            encode_book(out, book.iter())
        }
        // Heartbeats carry only the sender's own entry.
        MembershipMessage::Ping | MembershipMessage::Pong => {
            let own: Vec<(&NodeId, &Endpoint)> = book.range(me..=me).collect();
            encode_book(out, own.into_iter())
        }
    }
}

/// Decodes what `encode_gossip` wrote; `None` for anything malformed.
pub(crate) fn decode_gossip(bytes: &[u8]) -> Option<(MembershipMessage, AddressBook)> {
    let mut cursor = Cursor { bytes };
    let length = cursor.u32()? as usize;
    let message = MembershipMessage::decode(cursor.take(length)?).ok()?;
    let book = decode_book(&mut cursor)?;
    if !cursor.bytes.is_empty() {
        return None;
    }
    Some((message, book))
}

/// One published view of the cluster; replaced whole when anything changes.
pub(crate) struct Topology {
    /// Grows with every publication (ring or reachability change).
    pub version: u64,
    /// The ring's epoch (bumped by every claim, agreed by gossip).
    pub epoch: u64,
    pub q: u32,
    /// The replication factor in force: the configured N, clamped to the
    /// number of active members.
    pub n_val: usize,
    /// Per partition: every distinct node walking the ring, with the shard
    /// that holds the partition on it. The first `n_val` are the primaries.
    pub walks: Vec<Vec<VnodeOwner>>,
    pub book: AddressBook,
    pub members: Vec<(NodeId, MemberRecord)>,
    /// The agreed ring this topology was built from.
    pub ring: ClaimedRing,
    pub unreachable: BTreeSet<NodeId>,
    pub routing: RoutingTable,
}

impl Topology {
    pub(crate) fn primaries(&self, partition: u32) -> &[VnodeOwner] {
        let walk = &self.walks[partition as usize];
        &walk[..self.n_val.min(walk.len())]
    }

    pub(crate) fn preference(&self, partition: u32) -> Preference {
        let walk = &self.walks[partition as usize];
        let n = self.n_val.min(walk.len());
        Preference {
            primaries: walk[..n].iter().map(|o| o.node).collect(),
            fallbacks: walk[n..].iter().map(|o| o.node).collect(),
        }
    }

    /// The shard of `node` that holds `partition`.
    pub(crate) fn shard_on(&self, node: NodeId, partition: u32) -> Option<u16> {
        self.walks
            .get(partition as usize)?
            .iter()
            .find(|o| o.node == node)
            .map(|o| o.shard)
    }

    pub(crate) fn internode_addr(&self, node: NodeId, shard: u16) -> Option<SocketAddr> {
        let endpoint = self.book.get(&node)?;
        (shard < endpoint.shards).then(|| endpoint.internode(shard))
    }

    /// The node listening on internode address `addr`, if known.
    pub(crate) fn node_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.book
            .iter()
            .find(|(_, e)| {
                e.ip == addr.ip()
                    && addr.port() >= e.internode_port
                    && addr.port() < e.internode_port.wrapping_add(e.shards)
            })
            .map(|(id, _)| *id)
    }

    fn build(
        version: u64,
        state: &MembershipState,
        ring: &ClaimedRing,
        book: &AddressBook,
        unreachable: BTreeSet<NodeId>,
    ) -> Topology {
        Self::from_ring(version, state, ring, book, unreachable)
    }

    fn from_ring(
        version: u64,
        state: &MembershipState,
        claimed: &ClaimedRing,
        book: &AddressBook,
        unreachable: BTreeSet<NodeId>,
    ) -> Topology {
        let ring = &claimed.ring;
        let n_val = ring.n_val();
        let walks: Vec<Vec<VnodeOwner>> = (0..ring.q()).map(|p| ring.walk(p).collect()).collect();
        // The routing table lists the members the ring was claimed for.
        let index: BTreeMap<NodeId, u32> = claimed
            .members
            .iter()
            .enumerate()
            .map(|(i, member)| (member.id, i as u32))
            .collect();
        let nodes = claimed
            .members
            .iter()
            .map(|member| (&member.id, member))
            .map(|(id, record)| {
                let endpoint = book.get(id).copied();
                RoutingNode {
                    id: id.0,
                    // A member whose address is not known yet is listed
                    // unroutable; clients skip it after one failed connect.
                    addr: endpoint.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |e| e.ip),
                    client_port: endpoint.map_or(0, |e| e.client_port),
                    shard_ports: (0..record.shards)
                        .map(|s| endpoint.map_or(0, |e| e.shard_port_base.wrapping_add(s)))
                        .collect(),
                    weight: record.weight,
                }
            })
            .collect();
        let partitions = walks
            .iter()
            .map(|walk| {
                walk[..n_val.min(walk.len())]
                    .iter()
                    .map(|o| (index[&o.node], o.shard))
                    .collect()
            })
            .collect();
        let epoch = ring.epoch;
        Topology {
            version,
            epoch,
            q: ring.q(),
            n_val,
            walks,
            book: book.clone(),
            members: state.members().map(|(id, r)| (id, *r)).collect(),
            ring: claimed.clone(),
            unreachable,
            routing: RoutingTable {
                epoch,
                q: ring.q(),
                n_val: n_val as u8,
                nodes,
                partitions,
            },
        }
    }
}

/// What every shard of a node shares about the cluster.
pub(crate) struct Cluster {
    pub me: NodeId,
    topology: RwLock<Arc<Topology>>,
    /// The version of the published topology: shards compare it (a plain
    /// load of a line nobody writes between changes) before re-reading the
    /// snapshot, so the request path touches no shared counter.
    version: AtomicU64,
    /// Peers that failed to answer (link failures, replica timeouts) on any
    /// shard, for shard 0 to feed to the failure detector.
    failures: Mutex<Vec<NodeId>>,
    /// Hints held, per shard (for `admin status`).
    pub hints: Vec<AtomicUsize>,
    /// Keys stored (both namespaces), per shard (for `admin status`).
    pub keys: Vec<AtomicU64>,
    /// Keys sent to new owners by partition handoff, all shards together.
    pub handed_off: AtomicU64,
    /// Keys dropped after every new owner acknowledged them.
    pub handoff_dropped: AtomicU64,
    /// Partitions each shard still has to hand off (as of its last pass).
    pub handoff_pending: Vec<AtomicUsize>,
    /// Per shard: the last ring epoch at which it held nothing to hand off.
    pub handoff_clean_epoch: Vec<AtomicU64>,
    /// Frames dropped by full or failed links, all shards together.
    pub dropped: AtomicU64,
}

/// Bound of the failure queue between shards and shard 0.
const FAILURES_MAX: usize = 4096;

impl Cluster {
    /// The cluster as this node knows it at start-up: its persisted
    /// membership state, or a one-node cluster of itself.
    pub(crate) fn new(
        me: NodeId,
        shards: usize,
        state: &MembershipState,
        ring: &ClaimedRing,
        book: &AddressBook,
    ) -> Result<Cluster, String> {
        let topology = Topology::build(1, state, ring, book, BTreeSet::new());
        Ok(Cluster {
            me,
            version: AtomicU64::new(topology.version),
            topology: RwLock::new(Arc::new(topology)),
            failures: Mutex::new(Vec::new()),
            hints: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            keys: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            handed_off: AtomicU64::new(0),
            handoff_dropped: AtomicU64::new(0),
            handoff_pending: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            handoff_clean_epoch: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn topology(&self) -> Arc<Topology> {
        match self.topology.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The version of the current snapshot.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn publish(&self, topology: Topology) {
        let version = topology.version;
        let topology = Arc::new(topology);
        match self.topology.write() {
            Ok(mut guard) => *guard = topology,
            Err(poisoned) => *poisoned.into_inner() = topology,
        }
        self.version.store(version, Ordering::Release);
    }

    pub(crate) fn report_failure(&self, peer: NodeId) {
        if peer == self.me {
            return;
        }
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() < FAILURES_MAX {
                failures.push(peer);
            }
        }
    }

    fn take_failures(&self) -> Vec<NodeId> {
        self.failures
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }
}

const MEMBERSHIP_FILE: &str = "membership";

/// The file that holds the staged plan (`staging.rs`).
const STAGED_FILE: &str = "staged-changes";

/// What shard 0's driver starts from: the persisted membership state,
/// address book, agreed ring and staged plan.
pub(crate) struct InitialMembership {
    pub state: MembershipState,
    pub book: AddressBook,
    pub ring: ClaimedRing,
    pub staged: StagedPlan,
}

/// Loads the persisted membership state, address book and staged plan, or
/// makes a one-node cluster of this node on its first start.
pub(crate) fn load_membership(
    me: NodeId,
    config: &ServerConfig,
    shards: usize,
) -> Result<InitialMembership, String> {
    let (state, book, ring) = load_state(me, config, shards)?;
    let staged = super::staging::load_staged(&config.data_dir.join(STAGED_FILE))?;
    Ok(InitialMembership {
        state,
        book,
        ring,
        staged,
    })
}

fn load_state(
    me: NodeId,
    config: &ServerConfig,
    shards: usize,
) -> Result<(MembershipState, AddressBook, ClaimedRing), String> {
    let path = config.data_dir.join(MEMBERSHIP_FILE);
    let mut book = AddressBook::new();
    let mut ring: Option<ClaimedRing> = None;
    let state = match std::fs::read(&path) {
        Ok(bytes) => {
            let mut cursor = Cursor { bytes: &bytes };
            let parsed = (|| {
                let length = cursor.u32()? as usize;
                let state = MembershipState::decode(cursor.take(length)?).ok()?;
                let book = decode_book(&mut cursor)?;
                // The agreed ring follows (files written before rings were
                // persisted end here: the ring is claimed afresh).
                let ring = if cursor.bytes.is_empty() {
                    None
                } else {
                    let length = cursor.u32()? as usize;
                    Some(ClaimedRing::decode(cursor.take(length)?).ok()?)
                };
                Some((state, book, ring))
            })();
            let (state, saved, saved_ring) =
                parsed.ok_or_else(|| format!("{} is corrupt", path.display()))?;
            book = saved;
            ring = saved_ring.filter(|r| r.ring.q() == config.partitions);
            state
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut state = MembershipState::new();
            state
                .apply(AdminChange::Join {
                    node: me,
                    weight: config.weight_or_default(shards),
                    shards: shards as u16,
                })
                .map_err(|e| e.to_string())?;
            state
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    book.insert(me, Endpoint::of(config, shards));
    let n_val = usize::from(config.n_val);
    let ring = match next_ring(&state, ring.as_ref(), config.partitions, n_val) {
        Some(next) => next,
        None => ring.ok_or("cannot claim a ring: no member has capacity")?,
    };
    Ok((state, book, ring))
}

fn save_membership(
    dir: &std::path::Path,
    state: &MembershipState,
    book: &AddressBook,
    ring: Option<&ClaimedRing>,
) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    let mut encoded = Vec::new();
    state.encode(&mut encoded);
    bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&encoded);
    encode_book(&mut bytes, book.iter());
    if let Some(ring) = ring {
        let mut encoded = Vec::new();
        ring.encode(&mut encoded);
        bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&encoded);
    }
    super::server::write_file_durably(&dir.join(MEMBERSHIP_FILE), &bytes)
}

/// Shard 0's driver of the membership machine.
pub(crate) struct MembershipDriver {
    pub machine: Membership,
    pub book: AddressBook,
    cluster: Arc<Cluster>,
    links: Rc<Links>,
    seeds: Vec<SocketAddr>,
    rng: u64,
    next_version: u64,
    published_suspects: BTreeSet<NodeId>,
    dir: PathBuf,
    n_val_max: usize,
}

impl MembershipDriver {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        config: Arc<ServerConfig>,
        links: Rc<Links>,
        initial: InitialMembership,
        now_ms: u64,
    ) -> MembershipDriver {
        let InitialMembership {
            state,
            book,
            ring,
            staged,
        } = initial;
        let membership_config = MembershipConfig {
            gossip_interval_ms: config.gossip_interval_ms,
            suspect_after_ms: config.suspect_after_ms,
            ..MembershipConfig::default()
        };
        let own = config.internode_addr();
        let seeds: Vec<SocketAddr> = config.seeds.iter().copied().filter(|s| *s != own).collect();
        let mut seed_bytes = [0u8; 8];
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed_bytes));
        MembershipDriver {
            machine: Membership::new(cluster.me, membership_config, Vec::new(), state, now_ms)
                .with_ring(config.partitions, usize::from(config.n_val), Some(ring))
                .with_staged(staged),
            book,
            rng: u64::from_le_bytes(seed_bytes) | 1,
            next_version: 2,
            published_suspects: BTreeSet::new(),
            dir: config.data_dir.clone(),
            n_val_max: usize::from(config.n_val),
            cluster,
            links,
            seeds,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: peer choice only, no need for more.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Merges an address book heard from `from`: its own entry is
    /// authoritative, others only fill gaps. Returns whether it changed.
    fn merge_book(&mut self, from: NodeId, book: AddressBook) -> bool {
        let mut changed = false;
        for (id, endpoint) in book {
            if id == self.cluster.me {
                continue;
            }
            let authoritative = id == from;
            match self.book.get(&id) {
                Some(known) if *known == endpoint || !authoritative => {}
                _ => {
                    if self.book.len() < MEMBERS_MAX || self.book.contains_key(&id) {
                        self.book.insert(id, endpoint);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// A gossip frame from another node.
    pub(crate) fn handle_gossip(&mut self, now_ms: u64, from: NodeId, payload: &[u8]) {
        let Some((message, book)) = decode_gossip(payload) else {
            return;
        };
        if from == self.cluster.me {
            return;
        }
        let book_changed = self.merge_book(from, book);
        self.machine.handle_message(now_ms, from, message);
        self.after(book_changed);
    }

    /// The periodic round: failures from all shards, gossip, heartbeats, and
    /// now and then a push to a seed address.
    pub(crate) fn tick(&mut self, now_ms: u64) {
        for peer in self.cluster.take_failures() {
            self.machine.handle_request_timeout(now_ms, peer);
        }
        let due = self.machine.poll_timeout().is_some_and(|t| t <= now_ms);
        let random = self.random();
        self.machine.handle_timeout(now_ms, random);
        if due {
            self.complete_leave();
        }
        if due && !self.seeds.is_empty() {
            let alone = self.machine.state().members().count() <= 1;
            if alone || random % 4 == 1 {
                let seed = self.seeds[((random >> 8) % self.seeds.len() as u64) as usize];
                self.push_to(seed);
            }
        }
        self.after(false);
    }

    /// Sends this node's view to an internode address (a seed, or the member
    /// named by `admin join`): the receiver merges it and pulls back.
    pub(crate) fn push_to(&mut self, addr: SocketAddr) {
        let message = MembershipMessage::Push {
            state: self.machine.state().clone(),
            ring: self.machine.ring().cloned(),
            staged: self.machine.staged().clone(),
        };
        let (book, me) = (&self.book, self.cluster.me);
        self.links.send(addr, self.envelope(), |out| {
            encode_gossip(out, &message, book, me)
        });
    }

    fn envelope(&self) -> Envelope {
        Envelope {
            kind: KIND_MEMBERSHIP,
            from_node: self.cluster.me.0,
            from_shard: 0,
            to_shard: 0,
        }
    }

    /// A leaving node whose shards have handed every partition off (each
    /// shard's last pass at the current ring found nothing to move) and
    /// that holds no hints removes itself from the member list.
    fn complete_leave(&mut self) {
        let me = self.cluster.me;
        let leaving = self
            .machine
            .state()
            .get(me)
            .is_some_and(|r| r.status == MemberStatus::Leaving);
        if !leaving {
            return;
        }
        let epoch = self.cluster.topology().epoch;
        let owns_nothing = self
            .machine
            .ring()
            .is_some_and(|r| r.ring.partitions_of_node(me).is_empty());
        let drained = self
            .cluster
            .handoff_clean_epoch
            .iter()
            .all(|e| e.load(Ordering::Relaxed) == epoch);
        let hints: usize = self
            .cluster
            .hints
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .sum();
        if owns_nothing && drained && hints == 0 {
            match self.machine.admin(AdminChange::Remove { node: me }) {
                Ok(()) => log::info!("handoff complete: this node left the cluster"),
                Err(e) => log::warning!(error = %e, "cannot complete the leave"),
            }
        }
    }

    /// Whether the node has seeds (and so joins by gossip, never staged).
    pub(crate) fn has_seeds(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// The configured N (the ring's N is at most this).
    pub(crate) fn n_val_max(&self) -> usize {
        self.n_val_max
    }

    /// Stages a change cluster-wide (`admin … --stage`); returns how many
    /// are staged.
    pub(crate) fn stage(&mut self, change: AdminChange) -> Result<usize, String> {
        let count = self.machine.stage(change).map_err(|e| e.to_string())?;
        self.after(false);
        self.push_to_members();
        Ok(count)
    }

    /// Pushes this node's view (with the staged plan) to every member at
    /// once, after an edit of the plan: edits made one after another on
    /// different nodes then build on each other instead of racing gossip
    /// (the plan's merge is last-writer-wins).
    fn push_to_members(&mut self) {
        let me = self.cluster.me;
        let targets: Vec<SocketAddr> = self
            .machine
            .state()
            .members()
            .filter(|(id, r)| *id != me && r.status != MemberStatus::Removed)
            .filter_map(|(id, _)| self.book.get(&id).map(|e| e.internode(0)))
            .collect();
        for addr in targets {
            self.push_to(addr);
        }
    }

    /// Stages the join of a node that is not a member yet, and records its
    /// address so that gossip reaches it once the join is committed.
    pub(crate) fn stage_join(
        &mut self,
        change: AdminChange,
        endpoint: Endpoint,
    ) -> Result<usize, String> {
        let node = change.node();
        if node == self.cluster.me {
            return Err("a node cannot stage its own join; ask a member of the cluster".into());
        }
        if let Some(known) = self.book.get(&node) {
            let active = self
                .machine
                .state()
                .get(node)
                .is_some_and(|r| r.status != MemberStatus::Removed);
            if active && *known != endpoint {
                return Err(format!(
                    "{node:?} is a member at {}, not {}",
                    known.internode(0),
                    endpoint.internode(0)
                ));
            }
        }
        let count = self.machine.stage(change).map_err(|e| e.to_string())?;
        let book_changed = self.book.get(&node) != Some(&endpoint);
        if book_changed && (self.book.len() < MEMBERS_MAX || self.book.contains_key(&node)) {
            self.book.insert(node, endpoint);
        }
        self.after(book_changed);
        self.push_to_members();
        Ok(count)
    }

    /// Drops every staged change (`admin clear`).
    pub(crate) fn clear_staged(&mut self) -> usize {
        let count = self.machine.clear_staged();
        self.after(false);
        self.push_to_members();
        count
    }

    /// Applies every staged change with one claim (`admin commit`), then
    /// pushes the new view to every member at once, the nodes that joined
    /// included (they hear nothing from the cluster until they are members).
    pub(crate) fn commit_staged(&mut self) -> Result<Vec<AdminChange>, String> {
        let changes = self.machine.commit_staged().map_err(|e| e.to_string())?;
        self.after(false);
        self.push_to_members();
        Ok(changes)
    }

    /// The member whose internode address (of any shard) is `addr`.
    pub(crate) fn member_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.cluster.topology().node_at(addr).or_else(|| {
            self.book
                .iter()
                .find(|(_, e)| e.internode(0) == addr)
                .map(|(id, _)| *id)
        })
    }

    pub(crate) fn admin(&mut self, change: AdminChange) -> Result<(), String> {
        self.machine.admin(change).map_err(|e| e.to_string())?;
        self.after(false);
        Ok(())
    }

    /// Sends what the machine queued, persists and publishes changes.
    fn after(&mut self, book_changed: bool) {
        while let Some((to, message)) = self.machine.poll_transmit() {
            let Some(addr) = self.book.get(&to).map(|e| e.internode(0)) else {
                continue;
            };
            let (book, me) = (&self.book, self.cluster.me);
            let envelope = self.envelope();
            self.links
                .send(addr, envelope, |out| encode_gossip(out, &message, book, me));
        }
        if self.machine.take_staged_changed() {
            if let Err(e) =
                super::staging::save_staged(&self.dir.join(STAGED_FILE), self.machine.staged())
            {
                log::warning!("cannot persist the staged membership changes: {e}");
            }
        }
        let state_changed = self.machine.take_state_changed();
        if state_changed || book_changed {
            if let Err(e) = save_membership(
                &self.dir,
                self.machine.state(),
                &self.book,
                self.machine.ring(),
            ) {
                log::warning!(error = %e, "cannot persist the membership state");
            }
        }
        let suspects = self.machine.suspected();
        if state_changed || book_changed || suspects != self.published_suspects {
            let current = self.cluster.topology();
            let ring = self.machine.ring().unwrap_or(&current.ring);
            let topology = Topology::build(
                self.next_version,
                self.machine.state(),
                ring,
                &self.book,
                suspects.clone(),
            );
            if topology.epoch != current.epoch {
                log::info!(
                    epoch_before = current.epoch,
                    epoch = topology.epoch,
                    members = topology.members.len(),
                    n_val = topology.n_val,
                    partitions_moved = topology.ring.ring.nodes_moved_from(&current.ring.ring),
                    "ring epoch changed"
                );
            }
            self.next_version += 1;
            self.published_suspects = suspects;
            self.cluster.publish(topology);
        }
    }
}

/// `admin status`: members, liveness as seen from here, epoch, hints.
pub(crate) fn status_text(cluster: &Cluster, json: bool) -> String {
    let topology = cluster.topology();
    let hints: usize = cluster
        .hints
        .iter()
        .map(|h| h.load(Ordering::Relaxed))
        .sum();
    let keys: u64 = cluster.keys.iter().map(|k| k.load(Ordering::Relaxed)).sum();
    let handed_off = cluster.handed_off.load(Ordering::Relaxed);
    let dropped = cluster.handoff_dropped.load(Ordering::Relaxed);
    let pending: usize = cluster
        .handoff_pending
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .sum();
    let own_status = topology
        .members
        .iter()
        .find(|(id, _)| *id == cluster.me)
        .map_or("unknown", |(_, r)| status_name(r.status));
    // Removed members are kept in the state (so gossip cannot revive them)
    // but are no longer listed.
    let members: Vec<&(NodeId, MemberRecord)> = topology
        .members
        .iter()
        .filter(|(_, r)| r.status != MemberStatus::Removed)
        .collect();
    let mut out = String::new();
    if json {
        let _ = write!(
            out,
            "{{\"node\": \"{:016x}\", \"status\": \"{own_status}\", \"epoch\": {}, \"n_val\": {}, \"hints\": {}, \"keys\": {}, \"handed_off\": {}, \"handoff_dropped\": {dropped}, \"handoff_pending\": {pending}, \"members\": [",
            cluster.me.0, topology.epoch, topology.n_val, hints, keys, handed_off
        );
        for (i, (id, record)) in members.iter().enumerate() {
            let addr = topology
                .book
                .get(id)
                .map(|e| e.internode(0).to_string())
                .unwrap_or_default();
            let _ = write!(
                out,
                "{}{{\"id\": \"{:016x}\", \"internode\": {}, \"status\": \"{}\", \"weight\": {}, \"shards\": {}, \"reachable\": {}}}",
                if i == 0 { "" } else { ", " },
                id.0,
                crate::json::string(&addr),
                status_name(record.status),
                record.weight,
                record.shards,
                !topology.unreachable.contains(id)
            );
        }
        out.push_str("]}");
    } else {
        let _ = writeln!(
            out,
            "node {:016x} ({own_status}): ring epoch {}, N = {}, {} hints held, {} keys stored, {} keys handed off, {dropped} dropped after acknowledgement, {pending} partitions pending handoff",
            cluster.me.0, topology.epoch, topology.n_val, hints, keys, handed_off
        );
        for (id, record) in members {
            let addr = topology
                .book
                .get(id)
                .map(|e| e.internode(0).to_string())
                .unwrap_or_else(|| "?".into());
            let _ = writeln!(
                out,
                "  {:016x} {addr} {} weight {} shards {} {}",
                id.0,
                status_name(record.status),
                record.weight,
                record.shards,
                if topology.unreachable.contains(id) {
                    "unreachable"
                } else {
                    "reachable"
                }
            );
        }
    }
    out
}

pub(crate) fn status_name(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::Active => "active",
        MemberStatus::Leaving => "leaving",
        MemberStatus::Removed => "removed",
    }
}

/// `admin ring`: the preference list of every partition.
pub(crate) fn ring_text(cluster: &Cluster, json: bool) -> String {
    let topology = cluster.topology();
    let name = |o: &VnodeOwner| {
        let addr = topology
            .book
            .get(&o.node)
            .map(|e| e.ip.to_string())
            .unwrap_or_else(|| "?".into());
        format!("{:016x}@{addr}/{}", o.node.0, o.shard)
    };
    let mut out = String::new();
    if json {
        let _ = write!(
            out,
            "{{\"epoch\": {}, \"q\": {}, \"n_val\": {}, \"partitions\": [",
            topology.epoch, topology.q, topology.n_val
        );
        for p in 0..topology.q {
            let list: Vec<String> = topology
                .primaries(p)
                .iter()
                .map(|o| format!("\"{}\"", name(o)))
                .collect();
            let _ = write!(
                out,
                "{}[{}]",
                if p == 0 { "" } else { ", " },
                list.join(", ")
            );
        }
        out.push_str("]}");
    } else {
        let _ = writeln!(
            out,
            "ring epoch {}, Q = {}, N = {}",
            topology.epoch, topology.q, topology.n_val
        );
        for p in 0..topology.q {
            let list: Vec<String> = topology.primaries(p).iter().map(name).collect();
            let _ = writeln!(out, "  {p:5} {}", list.join(" "));
        }
    }
    out
}
