//! `Replica`: the state machine of one shard in its two roles, coordinator
//! (runs a client's get or put) and replica (serves other coordinators and
//! keeps hints). See the module header in `mod.rs` for the invariants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::Hash;

use ahash::AHashMap;

use bytes::Bytes;

use super::message::{ReplicaMessage, RequestId};
use super::{HINTS_MAX, KEY_BYTES_MAX, LOCAL_OPS_MAX, REQUESTS_MAX, RIDERS_MAX};
use crate::membership::NodeId;
pub use crate::storage::Namespace;
use crate::version::{ActorId, Context, SiblingSet, Value, VersionError, VersionVector};

/// The client-side id of a coordinator request, chosen by the driver and
/// echoed in the `ClientReply`.
pub type ClientRequestId = u64;

/// The id of one storage operation asked for by `poll_io`.
pub type IoId = u64;

/// The actor id a shard writes its dots under. The incarnation must grow
/// every time the node restarts (persist it durably before serving), because
/// a restarted node may have lost buffered writes that carried its dots, and
/// reissuing such a dot for a different value would make replicas disagree
/// on one version (see `version::sibling_set`).
pub fn actor_id(node: NodeId, shard: u16, incarnation: u16) -> ActorId {
    assert!(
        node.0 < (1 << 32),
        "node ids above 2^32 do not fit an actor id"
    );
    (node.0 << 32) | (u64::from(incarnation) << 16) | u64::from(shard)
}

/// The storage key of a hint: the intended primary (8 bytes, big endian)
/// followed by the key. The hint namespace sorts by primary, so one primary's
/// hints are adjacent.
pub fn hint_key(primary: NodeId, key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&primary.0.to_be_bytes());
    out.extend_from_slice(key);
    Bytes::from(out)
}

/// Splits a hint storage key; `None` for a key too short to be one.
pub fn parse_hint_key(stored: &[u8]) -> Option<(NodeId, Bytes)> {
    if stored.len() < 8 || stored.len() - 8 > KEY_BYTES_MAX {
        return None;
    }
    let mut primary = [0u8; 8];
    primary.copy_from_slice(&stored[..8]);
    Some((
        NodeId(u64::from_be_bytes(primary)),
        Bytes::copy_from_slice(&stored[8..]),
    ))
}

/// N, R, W and DW (§4.5, §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumConfig {
    /// Replicas per key (the preference list's primaries).
    pub n: usize,
    /// Replies a get waits for.
    pub r: usize,
    /// Acknowledgements a put waits for.
    pub w: usize,
    /// How many of the W acknowledgements must be durable (fsynced).
    pub dw: usize,
}

impl QuorumConfig {
    /// Whether the values make sense: 1 <= R, W <= N and DW <= W.
    pub fn is_valid(&self) -> bool {
        self.n >= 1
            && (1..=self.n).contains(&self.r)
            && (1..=self.n).contains(&self.w)
            && self.dw <= self.w
    }
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            n: 3,
            r: 2,
            w: 2,
            dw: 1,
        }
    }
}

/// Timing and bounds of one shard's machine.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub quorum: QuorumConfig,
    /// A client request not answered by then fails with a timeout.
    pub request_timeout_ms: u64,
    /// A replica that has not answered by then is replaced by a fallback
    /// (puts) and reported to the failure detector.
    pub replica_timeout_ms: u64,
    /// Hint replay runs at most once per interval...
    pub hint_replay_interval_ms: u64,
    /// ...with at most this many hints in flight, and at most this many
    /// started per interval at full background share (rate limit, §6.5;
    /// `set_background_share` scales the starts down, to a floor of one
    /// per interval).
    pub hint_replay_batch_max: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            quorum: QuorumConfig::default(),
            request_timeout_ms: 1_000,
            replica_timeout_ms: 300,
            hint_replay_interval_ms: 1_000,
            hint_replay_batch_max: 16,
        }
    }
}

/// Where the nodes for a key are: the N primaries of its preference list
/// and, in ring-walk order, the further distinct nodes that may stand in for
/// them (fallbacks, §4.6). Computed by the driver from the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preference {
    pub primaries: Vec<NodeId>,
    pub fallbacks: Vec<NodeId>,
}

#[derive(Clone, Debug)]
pub struct PutRequest {
    pub key: Bytes,
    pub partition: u32,
    /// The clock of the client's context; empty for a blind put, which then
    /// becomes a sibling of everything stored.
    pub context: VersionVector,
    /// `Value::Tombstone` for a delete.
    pub value: Value,
    pub preference: Preference,
    /// Per-request override of the configured quorum.
    pub quorum: Option<QuorumConfig>,
}

#[derive(Clone, Debug)]
pub struct GetRequest {
    pub key: Bytes,
    pub partition: u32,
    pub preference: Preference,
    /// Per-request override of R (R = N asks for every primary's reply).
    pub r: Option<usize>,
}

/// A successful put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// Replicas (the coordinator included) that acknowledged before the reply.
    pub acks: usize,
    pub durable_acks: usize,
    /// The clock of the coordinator's stored set after the put: the context
    /// a client passes to its next put to supersede this value.
    pub context: VersionVector,
}

/// A successful get: the surviving siblings and the context for the next put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOutcome {
    /// The merge of the replies; empty when no replica holds the key.
    pub siblings: SiblingSet,
    /// Clock of `siblings` and the first replica that answered (§6.4). In
    /// this layer `fastest_replica` carries the raw `NodeId`.
    pub context: Context,
    /// How many replicas answered before the reply.
    pub replies: usize,
}

/// Why a client request failed. Every quorum failure says how far it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaError {
    /// The put did not collect W acknowledgements, DW of them durable, in time.
    PutQuorumFailed {
        acks: usize,
        durable_acks: usize,
        w: usize,
        dw: usize,
    },
    /// The get did not collect R replies in time.
    GetQuorumFailed { replies: usize, r: usize },
    /// This shard is not a primary for the key; route to `primaries`.
    NotAPrimary { primaries: Vec<NodeId> },
    /// The quorum override or the preference list is malformed.
    InvalidRequest(&'static str),
    /// Too many requests in flight; retry later.
    Overloaded,
    /// The versioned value refused the operation (too many siblings: read
    /// and write with the read's context to resolve them).
    Version(VersionError),
    /// The coordinator's own storage failed.
    Storage(String),
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaError::PutQuorumFailed {
                acks,
                durable_acks,
                w,
                dw,
            } => write!(
                f,
                "put reached {acks} of W={w} replicas ({durable_acks} of DW={dw} durable)"
            ),
            ReplicaError::GetQuorumFailed { replies, r } => {
                write!(f, "get reached {replies} of R={r} replicas")
            }
            ReplicaError::NotAPrimary { primaries } => {
                write!(f, "not a primary for the key; primaries are {primaries:?}")
            }
            ReplicaError::InvalidRequest(what) => write!(f, "invalid request: {what}"),
            ReplicaError::Overloaded => write!(f, "too many requests in flight"),
            ReplicaError::Version(error) => write!(f, "{error}"),
            ReplicaError::Storage(error) => write!(f, "local storage failed: {error}"),
        }
    }
}

impl std::error::Error for ReplicaError {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    Put {
        id: ClientRequestId,
        result: Result<PutOutcome, ReplicaError>,
    },
    Get {
        id: ClientRequestId,
        result: Result<GetOutcome, ReplicaError>,
    },
}

/// A storage operation for the driver to perform and answer with
/// `handle_io_done(io, result)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoRequest {
    /// Answer `IoResult::Read` with the stored payload, if any.
    Read {
        io: IoId,
        namespace: Namespace,
        partition: u32,
        key: Bytes,
    },
    /// Store `payload` (an encoded `SiblingSet`; a tombstone record when
    /// `all_tombstones`), fsynced before answering when `durable`. Answer
    /// `IoResult::Done`.
    Write {
        io: IoId,
        namespace: Namespace,
        partition: u32,
        key: Bytes,
        payload: Bytes,
        all_tombstones: bool,
        durable: bool,
    },
    /// Remove the key (hint deletion). Answer `IoResult::Done`.
    Delete {
        io: IoId,
        namespace: Namespace,
        partition: u32,
        key: Bytes,
    },
    /// List every key of the hint namespace (after a restart). Answer
    /// `IoResult::HintKeys`.
    ListHints { io: IoId },
}

impl IoRequest {
    /// The id `handle_io_done` must be answered with.
    pub fn id(&self) -> IoId {
        match self {
            IoRequest::Read { io, .. }
            | IoRequest::Write { io, .. }
            | IoRequest::Delete { io, .. }
            | IoRequest::ListHints { io } => *io,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoResult {
    Read(Option<Bytes>),
    Done,
    HintKeys(Vec<(u32, Bytes)>),
    Failed(String),
}

/// A message for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: NodeId,
    pub message: ReplicaMessage,
}

// ---------------------------------------------------------------------------
// Internal state.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetState {
    Waiting {
        deadline_ms: u64,
    },
    Acked,
    /// Timed out (and replaced, when a fallback was left).
    Abandoned,
}

#[derive(Debug)]
struct PutTarget {
    node: NodeId,
    hint_for: Option<NodeId>,
    req: RequestId,
    state: TargetState,
}

#[derive(Debug)]
struct PutOp {
    client: ClientRequestId,
    partition: u32,
    key: Bytes,
    quorum: QuorumConfig,
    deadline_ms: u64,
    /// Primaries other than this shard, in preference order.
    remote_primaries: Vec<NodeId>,
    fallbacks: Vec<NodeId>,
    /// The coordinator's updated set, once its local write is done.
    siblings: Option<SiblingSet>,
    targets: Vec<PutTarget>,
    acks: usize,
    durable_acks: usize,
    replied: bool,
}

#[derive(Debug)]
struct GetTarget {
    node: NodeId,
    req: RequestId,
    reply: Option<Option<SiblingSet>>,
}

#[derive(Debug)]
struct GetOp {
    client: ClientRequestId,
    partition: u32,
    key: Bytes,
    r: usize,
    targets: Vec<GetTarget>,
    first_responder: Option<NodeId>,
    replied: bool,
}

/// What to do once a local merge is stored.
#[derive(Clone, Debug)]
enum AfterMerge {
    AckPut { to: NodeId, req: RequestId },
    AckHint { to: NodeId, req: RequestId },
    Nothing,
}

#[derive(Clone, Debug)]
enum LocalOpKind {
    /// The coordinator's `update` for put `op`.
    CoordinatorUpdate {
        op: u64,
        context: VersionVector,
        value: Value,
        durable: bool,
    },
    /// Merge an incoming set into the stored one.
    Merge {
        siblings: SiblingSet,
        durable: bool,
        then: AfterMerge,
        /// For a hint: (primary, key) to index once stored.
        hint: Option<(NodeId, Bytes)>,
    },
    /// Purge a collected tombstone (anti-entropy), if the stored set still
    /// is exactly the tombstone that was judged collectable.
    PurgeIfUnchanged { expected: SiblingSet },
    /// Delete a replayed hint, if it still is exactly what was replayed.
    DeleteHintIfUnchanged {
        expected: SiblingSet,
        primary: NodeId,
        key: Bytes,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LocalStage {
    Queued,
    Reading,
    Writing,
}

#[derive(Debug)]
struct LocalOp {
    namespace: Namespace,
    partition: u32,
    key: Bytes,
    kind: LocalOpKind,
    stage: LocalStage,
    /// The set being written (Writing stage).
    result: Option<SiblingSet>,
    /// Ops queued behind this one on the key that ride on its write
    /// (`absorb_queued`), in queue order, each with what it would have
    /// written had it run alone after the ones before it (or its refusal).
    riders: Vec<(u64, Result<SiblingSet, ReplicaError>)>,
}

#[derive(Clone, Debug)]
enum IoPurpose {
    LocalOp(u64),
    /// The coordinator's own read for get `op`.
    GetLocal(u64),
    /// A read serving another coordinator's `GetReplica`.
    ServeGet {
        to: NodeId,
        req: RequestId,
    },
    /// Loading a hint to replay it.
    HintLoad {
        primary: NodeId,
        partition: u32,
        key: Bytes,
    },
    ListHints,
}

#[derive(Clone, Debug)]
enum Pending {
    Put(u64),
    Get(u64),
    Replay {
        primary: NodeId,
        partition: u32,
        key: Bytes,
        siblings: SiblingSet,
    },
}

/// Where the replay of one held hint stands. Only `Sent` has a deadline:
/// the time a hint waits for its budget, its storage read or the delete
/// after the ack is this shard's own doing, and must never time the replay
/// out or report a healthy primary to the failure detector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum HintState {
    /// Not being replayed; started when the replay budget allows.
    #[default]
    Idle,
    /// The hint's read from storage is in progress.
    Loading,
    /// `HintReplay` request `req` was sent; the primary must acknowledge it
    /// by `deadline_ms`, counted from the send.
    Sent { req: RequestId, deadline_ms: u64 },
    /// The primary acknowledged; the local delete is in progress.
    Deleting,
}

/// Hint replay's start budget: replays may start at `hint_replay_batch_max`
/// per `hint_replay_interval_ms` times the background share, never below
/// one per interval, so replay always drains however busy the foreground
/// is (design guide §8, Dynamo §6.5).
#[derive(Clone, Copy, Debug)]
struct ReplayBudget {
    /// The background share, 0..=1, as last set by the driver.
    share: f64,
    /// Replays that may start now (fractional credit accumulates).
    credit: f64,
    /// When credit was last added.
    refilled_ms: u64,
    /// Replay ticks that left a ready hint waiting for credit (the share's
    /// pace held replay back), for the scheduler's deferral count.
    deferred: u64,
}

type HintIndexKey = (NodeId, u32, Bytes);

/// A deadline of a coordinator request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Replica `req` of put `op` must have answered by now.
    PutTarget { op: u64, req: RequestId },
    /// Put `op` must have been answered by now.
    PutDeadline { op: u64 },
    /// Get `op` must have been answered by now.
    GetDeadline { op: u64 },
    /// A get answered by now stops waiting for its silent replicas.
    GetLinger { op: u64 },
}

impl Timer {
    /// The lane of `TimerQueue` the timer goes to: one per timeout length,
    /// so that within a lane deadlines arrive in order.
    fn lane(&self) -> usize {
        match self {
            Timer::PutTarget { .. } | Timer::GetLinger { .. } => 0,
            Timer::PutDeadline { .. } | Timer::GetDeadline { .. } => 1,
        }
    }
}

/// Request deadlines ordered by `(deadline_ms, timer)`, like a
/// `BTreeSet<(u64, Timer)>` (the same order, hence the same behaviour),
/// at the cost of a queue push per timer: every timer of a lane is armed
/// `now_ms` plus the same timeout, so it almost always goes at the back of
/// its lane; one that does not (a clock that stepped back, an equal
/// deadline of a smaller timer) is inserted in its place.
#[derive(Debug, Default)]
struct TimerQueue {
    lanes: [VecDeque<(u64, Timer)>; 2],
}

impl TimerQueue {
    fn insert(&mut self, deadline_ms: u64, timer: Timer) {
        let lane = &mut self.lanes[timer.lane()];
        let item = (deadline_ms, timer);
        match lane.back() {
            Some(last) if *last > item => {
                let at = lane.partition_point(|queued| *queued < item);
                if lane.get(at) != Some(&item) {
                    lane.insert(at, item);
                }
            }
            Some(last) if *last == item => {}
            _ => lane.push_back(item),
        }
    }

    /// The lane whose front is the earliest timer.
    fn first_lane(&self) -> Option<usize> {
        match (self.lanes[0].front(), self.lanes[1].front()) {
            (Some(short), Some(long)) => Some(usize::from(long < short)),
            (Some(_), None) => Some(0),
            (None, Some(_)) => Some(1),
            (None, None) => None,
        }
    }

    fn first(&self) -> Option<(u64, Timer)> {
        self.first_lane().map(|lane| self.lanes[lane][0])
    }

    fn pop_first(&mut self) -> Option<(u64, Timer)> {
        let lane = self.first_lane()?;
        self.lanes[lane].pop_front()
    }
}

/// An empty request table with fixed hasher seeds: the machine stays a
/// function of its inputs.
fn table<K: Hash + Eq, V>() -> AHashMap<K, V> {
    AHashMap::with_hasher(ahash::RandomState::with_seeds(
        0x6479_6e61_6b76_0001,
        0x6479_6e61_6b76_0002,
        0x6479_6e61_6b76_0003,
        0x6479_6e61_6b76_0004,
    ))
}

/// The local operations of one key: the one running and those queued
/// behind it, in order (usually none, so no queue is allocated).
#[derive(Debug)]
struct LockQueue {
    running: u64,
    waiting: VecDeque<u64>,
}

/// The per-key lock held by a read-modify-write outside the machine
/// (`Replica::lock_key`); give it back with `Replica::unlock_key`.
#[derive(Debug)]
#[must_use = "a key lock must be given back with Replica::unlock_key"]
pub struct KeyLock {
    namespace: Namespace,
    key: Bytes,
    token: u64,
}

/// The replica state machine of one shard.
pub struct Replica {
    /// This node.
    me: NodeId,
    /// The actor this shard's coordinator writes dots under (`actor_id`).
    actor: ActorId,
    config: ReplicaConfig,
    /// Peers the failure detector currently believes unreachable.
    unreachable: BTreeSet<NodeId>,
    next_id: u64,
    // The request tables are hash maps (every request inserts into and
    // removes from several of them; a B-tree moves its large values around
    // on each change). They are never iterated, so their order cannot leak
    // into behaviour; the hasher's seeds are fixed anyway (`table`).
    puts: AHashMap<u64, PutOp>,
    gets: AHashMap<u64, GetOp>,
    /// Outstanding replica requests by request id.
    pending: AHashMap<RequestId, Pending>,
    local_ops: AHashMap<u64, LocalOp>,
    /// Per-key FIFO of local operations; the front one runs.
    locks: AHashMap<(Namespace, Bytes), LockQueue>,
    ios: AHashMap<IoId, IoPurpose>,
    /// Request deadlines, earliest first; entries of finished ops are
    /// dropped when they come due.
    timers: TimerQueue,
    /// Hints this shard holds, by (primary, partition, key).
    hints: BTreeMap<HintIndexKey, HintState>,
    next_replay_ms: u64,
    replay_budget: ReplayBudget,
    transmits: VecDeque<Transmit>,
    io_queue: VecDeque<IoRequest>,
    replies: VecDeque<ClientReply>,
    peer_timeouts: VecDeque<NodeId>,
    /// Ops so far that rode on another op's write (`absorb_queued`).
    riders_total: u64,
}

impl Replica {
    /// A machine for a shard that starts (or restarts) at `now_ms`. It first
    /// asks for the list of stored hints so that replay survives restarts.
    pub fn new(me: NodeId, actor: ActorId, config: ReplicaConfig, now_ms: u64) -> Self {
        assert!(config.quorum.is_valid());
        assert!(config.replica_timeout_ms > 0 && config.request_timeout_ms > 0);
        assert!(config.hint_replay_interval_ms > 0 && config.hint_replay_batch_max > 0);
        // Ids start in a range of their own per incarnation (bits 16..32 of
        // the actor), so a late answer to a request of a previous life can
        // never be mistaken for an answer to a new request.
        let incarnation = (actor >> 16) & 0xffff;
        let replay_batch_max = config.hint_replay_batch_max as f64;
        let mut replica = Replica {
            me,
            actor,
            config,
            unreachable: BTreeSet::new(),
            next_id: (incarnation << 40) + 1,
            puts: table(),
            gets: table(),
            pending: table(),
            local_ops: table(),
            locks: table(),
            ios: table(),
            timers: TimerQueue::default(),
            hints: BTreeMap::new(),
            next_replay_ms: now_ms,
            replay_budget: ReplayBudget {
                share: 1.0,
                // A restarted shard may start one full batch at once.
                credit: replay_batch_max,
                refilled_ms: now_ms,
                deferred: 0,
            },
            transmits: VecDeque::new(),
            io_queue: VecDeque::new(),
            replies: VecDeque::new(),
            peer_timeouts: VecDeque::new(),
            riders_total: 0,
        };
        let io = replica.fresh_id();
        replica.ios.insert(io, IoPurpose::ListHints);
        replica.io_queue.push_back(IoRequest::ListHints { io });
        replica
    }

    /// Anti-entropy repair: merge `siblings` into this shard's copy of a
    /// data key, through the per-key lock like any replica write (never an
    /// overwrite, §4.4). Nothing is acknowledged; the exchange that sent it
    /// compares again later.
    pub fn start_merge(&mut self, partition: u32, key: Bytes, siblings: SiblingSet) {
        if self.local_ops.len() >= LOCAL_OPS_MAX {
            return; // dropped: the next exchange finds the difference again
        }
        self.enqueue_local(
            Namespace::Data,
            partition,
            key,
            LocalOpKind::Merge {
                siblings,
                durable: false,
                then: AfterMerge::Nothing,
                hint: None,
            },
        );
    }

    /// Tombstone collection: purge a data key, through the per-key lock,
    /// only if its stored set still equals `expected` (a write that landed
    /// since the decision is never purged).
    pub fn start_purge(&mut self, partition: u32, key: Bytes, expected: SiblingSet) {
        if self.local_ops.len() >= LOCAL_OPS_MAX {
            return;
        }
        self.enqueue_local(
            Namespace::Data,
            partition,
            key,
            LocalOpKind::PurgeIfUnchanged { expected },
        );
    }

    /// Whether a local read-modify-write of the key is queued or running
    /// (a caller that must not race one, such as the removal of an
    /// unreadable record, waits until it is not).
    pub fn key_busy(&self, namespace: Namespace, key: &[u8]) -> bool {
        // Usually no key is locked at all: no copy of the key to look up.
        !self.locks.is_empty()
            && self
                .locks
                .contains_key(&(namespace, Bytes::copy_from_slice(key)))
    }

    /// Takes the per-key lock for a read-modify-write the driver does
    /// outside the machine: a coordinator that is its key's only replica
    /// (N = W = 1) updates the set in place and holds the lock while its
    /// write waits (a flush, a segment rotation), so that machine work on
    /// the key queued meanwhile (a put, a merge, a purge) runs after it and
    /// reads what it wrote. `None` when the key is already locked. Release
    /// with `unlock_key`.
    pub fn lock_key(&mut self, namespace: Namespace, key: Bytes) -> Option<KeyLock> {
        let token = self.fresh_id();
        match self.locks.entry((namespace, key.clone())) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(LockQueue {
                    running: token,
                    waiting: VecDeque::new(),
                });
                Some(KeyLock {
                    namespace,
                    key,
                    token,
                })
            }
        }
    }

    /// Releases a lock from `lock_key` and starts the next local operation
    /// queued on the key, if any (its I/O comes out of `poll_io`).
    pub fn unlock_key(&mut self, lock: KeyLock) {
        let lock_key = (lock.namespace, lock.key);
        let queue = self.locks.get_mut(&lock_key).expect("lock held");
        assert_eq!(queue.running, lock.token, "only the lock holder unlocks");
        match queue.waiting.pop_front() {
            Some(next) => {
                queue.running = next;
                self.local_start(next);
            }
            None => {
                self.locks.remove(&lock_key);
            }
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// Hints currently held, for diagnostics and the simulator's checks.
    pub fn hint_count(&self) -> usize {
        self.hints.len()
    }

    /// Local operations so far that rode on another's write instead of
    /// reading and writing the key themselves (`absorb_queued`).
    pub fn riders_total(&self) -> u64 {
        self.riders_total
    }

    /// Coordinator requests in flight.
    pub fn requests_in_flight(&self) -> usize {
        self.puts.len() + self.gets.len()
    }

    /// Failure-detector input: routing avoids unreachable peers (§4.8.3).
    pub fn set_reachable(&mut self, peer: NodeId, reachable: bool) {
        if reachable {
            self.unreachable.remove(&peer);
        } else {
            self.unreachable.insert(peer);
        }
    }

    fn is_reachable(&self, peer: NodeId) -> bool {
        !self.unreachable.contains(&peer)
    }

    /// Whether storage request `io` (just taken from `poll_io`) is hint
    /// replay's own work: a replay's hint read, the listing of held hints,
    /// or the read of an acknowledged hint before its delete. The runtime
    /// runs that in the background queue; a fallback reading the hint it is
    /// about to store for a waiting put is foreground work (design guide §8).
    pub fn is_hint_replay_io(&self, io: IoId) -> bool {
        match self.ios.get(&io) {
            Some(IoPurpose::HintLoad { .. } | IoPurpose::ListHints) => true,
            Some(IoPurpose::LocalOp(op)) => self
                .local_ops
                .get(op)
                .is_some_and(|op| matches!(op.kind, LocalOpKind::DeleteHintIfUnchanged { .. })),
            _ => false,
        }
    }

    /// Utilization-monitor input: the fraction (0 to 1) of its full rate
    /// that background work may use now (the runtime's background share,
    /// `UtilizationMonitor::rate_fraction`). Hint replay starts at most
    /// `hint_replay_batch_max` replays per interval times this, and never
    /// fewer than one per interval. A value outside 0..=1 (or NaN) is
    /// clamped; the default is 1.
    pub fn set_background_share(&mut self, share: f64) {
        self.replay_budget.share = if share.is_nan() {
            1.0
        } else {
            share.clamp(0.0, 1.0)
        };
    }

    /// Replay ticks so far at which a hint ready to replay waited for the
    /// budget (the background share's pace), not for the in-flight bound.
    pub fn hint_replays_deferred(&self) -> u64 {
        self.replay_budget.deferred
    }

    /// Replay starts the budget allows at `now_ms`: credit earned since the
    /// last refill at the current share, never less than one start per
    /// `hint_replay_interval_ms`, and never more than a batch banked.
    fn replay_credit(&mut self, now_ms: u64) -> f64 {
        let batch_max = self.config.hint_replay_batch_max as f64;
        let budget = &mut self.replay_budget;
        let elapsed_ms = now_ms.saturating_sub(budget.refilled_ms) as f64;
        let per_interval = (batch_max * budget.share).max(1.0);
        let earned = per_interval * elapsed_ms / self.config.hint_replay_interval_ms as f64;
        budget.credit = (budget.credit + earned).min(batch_max);
        budget.refilled_ms = budget.refilled_ms.max(now_ms);
        budget.credit
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn send(&mut self, to: NodeId, message: ReplicaMessage) {
        assert_ne!(to, self.me, "a shard never sends replica traffic to itself");
        self.transmits.push_back(Transmit { to, message });
    }

    // -----------------------------------------------------------------------
    // Outputs.

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_io(&mut self) -> Option<IoRequest> {
        self.io_queue.pop_front()
    }

    pub fn poll_reply(&mut self) -> Option<ClientReply> {
        self.replies.pop_front()
    }

    /// Peers that failed to answer in time; feed them to the failure
    /// detector (`Membership::handle_request_timeout`).
    pub fn poll_peer_timeout(&mut self) -> Option<NodeId> {
        self.peer_timeouts.pop_front()
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut earliest = self.timers.first().map(|(deadline_ms, _)| deadline_ms);
        // Replay deadlines are swept on the replay tick, so the hint index
        // (possibly large) is not scanned here.
        if !self.hints.is_empty() {
            earliest = Some(earliest.map_or(self.next_replay_ms, |t| t.min(self.next_replay_ms)));
        }
        earliest
    }

    // -----------------------------------------------------------------------
    // Coordinator: put (§4.5, §5).

    /// Starts a put (or delete) coordinated here; the answer comes out of
    /// `poll_reply` with `id`.
    pub fn start_put(&mut self, now_ms: u64, id: ClientRequestId, request: PutRequest) {
        let quorum = request.quorum.unwrap_or(self.config.quorum);
        if let Err(error) = self.check_request(&request.key, &request.preference, quorum) {
            self.replies.push_back(ClientReply::Put {
                id,
                result: Err(error),
            });
            return;
        }
        if self.local_ops.len() >= LOCAL_OPS_MAX {
            self.replies.push_back(ClientReply::Put {
                id,
                result: Err(ReplicaError::Overloaded),
            });
            return;
        }
        let op_id = self.fresh_id();
        let remote_primaries: Vec<NodeId> = request
            .preference
            .primaries
            .iter()
            .copied()
            .filter(|node| *node != self.me)
            .collect();
        let op = PutOp {
            client: id,
            partition: request.partition,
            key: request.key.clone(),
            quorum,
            deadline_ms: now_ms + self.config.request_timeout_ms,
            remote_primaries,
            fallbacks: request.preference.fallbacks.clone(),
            siblings: None,
            targets: Vec::new(),
            acks: 0,
            durable_acks: 0,
            replied: false,
        };
        self.timers
            .insert(op.deadline_ms, Timer::PutDeadline { op: op_id });
        self.puts.insert(op_id, op);
        // The coordinator writes its own copy first, durably when DW >= 1
        // (§6.1: "the coordinator selects one out of the N replicas to
        // perform a durable write"; dynakv picks itself).
        self.enqueue_local(
            Namespace::Data,
            request.partition,
            request.key,
            LocalOpKind::CoordinatorUpdate {
                op: op_id,
                context: request.context,
                value: request.value,
                durable: quorum.dw >= 1,
            },
        );
    }

    fn check_request(
        &self,
        key: &Bytes,
        preference: &Preference,
        quorum: QuorumConfig,
    ) -> Result<(), ReplicaError> {
        if !quorum.is_valid() {
            return Err(ReplicaError::InvalidRequest(
                "quorum needs 1 <= R, W <= N, DW <= W",
            ));
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(ReplicaError::InvalidRequest("key too long"));
        }
        if preference.primaries.len() != quorum.n {
            return Err(ReplicaError::InvalidRequest(
                "preference list length differs from N",
            ));
        }
        if !preference.primaries.contains(&self.me) {
            return Err(ReplicaError::NotAPrimary {
                primaries: preference.primaries.clone(),
            });
        }
        if self.puts.len() + self.gets.len() >= REQUESTS_MAX {
            return Err(ReplicaError::Overloaded);
        }
        Ok(())
    }

    /// The coordinator's local write is done: count it and fan out.
    fn put_local_done(
        &mut self,
        now_ms: u64,
        op_id: u64,
        result: Result<(SiblingSet, bool), ReplicaError>,
    ) {
        let Some(op) = self.puts.get_mut(&op_id) else {
            return;
        };
        let (siblings, durable) = match result {
            Ok(done) => done,
            Err(error) => {
                let client = op.client;
                self.puts.remove(&op_id);
                self.replies.push_back(ClientReply::Put {
                    id: client,
                    result: Err(error),
                });
                return;
            }
        };
        op.acks += 1;
        if durable {
            op.durable_acks += 1;
        }
        op.siblings = Some(siblings);
        let primaries = op.remote_primaries.clone();
        let mut believed_down = Vec::new();
        for primary in primaries {
            if self.is_reachable(primary) {
                self.put_send(now_ms, op_id, primary, None);
            } else if let Some(fallback) = self.pick_fallback(op_id) {
                // Sloppy quorum (§4.6): the next healthy node on the ring
                // stands in and keeps the write as a hint for `primary`.
                self.put_send(now_ms, op_id, fallback, Some(primary));
            } else {
                believed_down.push(primary);
            }
        }
        // No fallback left for these: try the primary anyway (the failure
        // detector may be wrong), but wait for it only when the quorum
        // needs it. Waiting out the replica timeout for a dead node on every
        // put would hold the op's slot of REQUESTS_MAX for nothing and, under
        // load with a node down, refuse requests as Overloaded. A late ack
        // of an abandoned target still counts.
        for primary in believed_down {
            self.put_send(now_ms, op_id, primary, None);
            let op = self.puts.get_mut(&op_id).expect("put op exists");
            let waiting = op
                .targets
                .iter()
                .filter(|target| matches!(target.state, TargetState::Waiting { .. }))
                .count()
                - 1;
            let durable_possible = op.durable_acks + if op.quorum.dw >= 2 { waiting } else { 0 };
            if op.acks + waiting >= op.quorum.w && durable_possible >= op.quorum.dw {
                if let Some(target) = op.targets.last_mut() {
                    target.state = TargetState::Abandoned;
                }
            }
        }
        self.put_check(op_id);
    }

    fn pick_fallback(&self, op_id: u64) -> Option<NodeId> {
        let op = &self.puts[&op_id];
        op.fallbacks.iter().copied().find(|node| {
            *node != self.me
                && self.is_reachable(*node)
                && !op.remote_primaries.contains(node)
                && !op.targets.iter().any(|target| target.node == *node)
        })
    }

    fn put_send(&mut self, now_ms: u64, op_id: u64, node: NodeId, hint_for: Option<NodeId>) {
        let req = self.fresh_id();
        let deadline_ms = now_ms + self.config.replica_timeout_ms;
        let op = self.puts.get_mut(&op_id).expect("put op exists");
        let siblings = op.siblings.clone().expect("sent after the local write");
        // DW beyond the coordinator's own durable write asks every other
        // replica for durability; a hint is always stored durably.
        let durable = op.quorum.dw >= 2;
        op.targets.push(PutTarget {
            node,
            hint_for,
            req,
            state: TargetState::Waiting { deadline_ms },
        });
        let message = ReplicaMessage::PutReplica {
            req,
            partition: op.partition,
            key: op.key.clone(),
            siblings,
            durable,
            hint_for,
        };
        self.pending.insert(req, Pending::Put(op_id));
        self.timers
            .insert(deadline_ms, Timer::PutTarget { op: op_id, req });
        self.send(node, message);
    }

    fn put_ack(&mut self, from: NodeId, req: RequestId, durable: bool) {
        let Some(Pending::Put(op_id)) = self.pending.get(&req).cloned() else {
            return;
        };
        let Some(op) = self.puts.get_mut(&op_id) else {
            self.pending.remove(&req);
            return;
        };
        let Some(target) = op.targets.iter_mut().find(|target| target.req == req) else {
            return;
        };
        if target.node != from || target.state == TargetState::Acked {
            // A duplicate, or an ack from a node we did not ask: ignore.
            return;
        }
        // A late ack of an abandoned target still counts: that node does
        // hold the write.
        target.state = TargetState::Acked;
        self.pending.remove(&req);
        op.acks += 1;
        if durable {
            op.durable_acks += 1;
        }
        self.put_check(op_id);
    }

    /// Answers the client once W/DW are met, or as soon as they no longer
    /// can be; drops the op once nothing is outstanding.
    fn put_check(&mut self, op_id: u64) {
        let op = self.puts.get_mut(&op_id).expect("put op exists");
        let waiting = op
            .targets
            .iter()
            .filter(|target| matches!(target.state, TargetState::Waiting { .. }))
            .count();
        if !op.replied && op.siblings.is_some() {
            if op.acks >= op.quorum.w && op.durable_acks >= op.quorum.dw {
                op.replied = true;
                self.replies.push_back(ClientReply::Put {
                    id: op.client,
                    result: Ok(PutOutcome {
                        acks: op.acks,
                        durable_acks: op.durable_acks,
                        context: op
                            .siblings
                            .as_ref()
                            .map(SiblingSet::context)
                            .unwrap_or_default(),
                    }),
                });
            } else if waiting == 0 {
                op.replied = true;
                self.replies.push_back(ClientReply::Put {
                    id: op.client,
                    result: Err(ReplicaError::PutQuorumFailed {
                        acks: op.acks,
                        durable_acks: op.durable_acks,
                        w: op.quorum.w,
                        dw: op.quorum.dw,
                    }),
                });
            }
        }
        if op.replied && waiting == 0 {
            self.remove_put(op_id);
        }
    }

    fn remove_put(&mut self, op_id: u64) {
        if let Some(op) = self.puts.remove(&op_id) {
            for target in &op.targets {
                self.pending.remove(&target.req);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Coordinator: get (§4.5, §5, §6.4).

    /// Starts a get coordinated here. Every primary is asked (R_ALL); the
    /// client is answered after R replies, and read repair runs once all
    /// have answered or the request times out.
    pub fn start_get(&mut self, now_ms: u64, id: ClientRequestId, request: GetRequest) {
        let mut quorum = self.config.quorum;
        quorum.n = request.preference.primaries.len().max(1);
        quorum.r = request.r.unwrap_or(quorum.r.min(quorum.n));
        quorum.w = quorum.w.min(quorum.n);
        quorum.dw = quorum.dw.min(quorum.w);
        if let Err(error) = self.check_request(&request.key, &request.preference, quorum) {
            self.replies.push_back(ClientReply::Get {
                id,
                result: Err(error),
            });
            return;
        }
        let op_id = self.fresh_id();
        // Primaries the failure detector believes down are not asked when
        // the others can still make R: an op waiting for a dead node holds
        // its slot until the replica timeout for nothing (they catch up by
        // hints, read repair of later gets, and anti-entropy).
        let reachable: Vec<NodeId> = request
            .preference
            .primaries
            .iter()
            .copied()
            .filter(|&node| node == self.me || self.is_reachable(node))
            .collect();
        let asked = if reachable.len() >= quorum.r {
            reachable
        } else {
            request.preference.primaries.clone()
        };
        let mut targets = Vec::with_capacity(asked.len());
        for &node in &asked {
            let req = self.fresh_id();
            targets.push(GetTarget {
                node,
                req,
                reply: None,
            });
            if node == self.me {
                let io = self.fresh_id();
                self.ios.insert(io, IoPurpose::GetLocal(op_id));
                self.io_queue.push_back(IoRequest::Read {
                    io,
                    namespace: Namespace::Data,
                    partition: request.partition,
                    key: request.key.clone(),
                });
            } else {
                self.pending.insert(req, Pending::Get(op_id));
                self.send(
                    node,
                    ReplicaMessage::GetReplica {
                        req,
                        partition: request.partition,
                        key: request.key.clone(),
                    },
                );
            }
        }
        let deadline_ms = now_ms + self.config.request_timeout_ms;
        self.timers
            .insert(deadline_ms, Timer::GetDeadline { op: op_id });
        // A get answered after R replies waits for the other replicas (for
        // read repair) only as long as a put waits for one replica: an op
        // kept to the full request deadline for a dead primary would hold a
        // slot of REQUESTS_MAX for nothing and, under load with one node
        // down, fill the table (Overloaded).
        let linger_ms = now_ms + self.config.replica_timeout_ms;
        if linger_ms < deadline_ms {
            self.timers
                .insert(linger_ms, Timer::GetLinger { op: op_id });
        }
        self.gets.insert(
            op_id,
            GetOp {
                client: id,
                partition: request.partition,
                key: request.key,
                r: quorum.r,
                targets,
                first_responder: None,
                replied: false,
            },
        );
    }

    fn get_reply(&mut self, op_id: u64, from: NodeId, siblings: Option<SiblingSet>) {
        let Some(op) = self.gets.get_mut(&op_id) else {
            return;
        };
        let Some(target) = op.targets.iter_mut().find(|target| target.node == from) else {
            return;
        };
        if target.reply.is_some() {
            return; // duplicate
        }
        target.reply = Some(siblings);
        self.pending.remove(&target.req);
        if op.first_responder.is_none() {
            op.first_responder = Some(from);
        }
        self.get_check(op_id, false);
    }

    /// Answers once R replies are in; repairs and drops the op once every
    /// target answered, or at the deadline (`expired`).
    fn get_check(&mut self, op_id: u64, expired: bool) {
        let op = self.gets.get_mut(&op_id).expect("get op exists");
        let replies = op.targets.iter().filter(|t| t.reply.is_some()).count();
        let all_in = replies == op.targets.len();
        if op.replied && !all_in && !expired {
            return;
        }
        if (all_in || expired) && op.targets.len() == 1 {
            return self.get_finish_single(op_id, replies);
        }
        // Syntactic reconciliation: merge drops dominated versions (§4.4).
        // The first set found is taken as it is: merging a decoded set into
        // an empty one gives it back unchanged, and a one-replica get (R = 1,
        // or N = 1) then merges nothing.
        let mut merged: Option<SiblingSet> = None;
        let mut merge_error = None;
        for target in &op.targets {
            if let Some(Some(siblings)) = &target.reply {
                match &mut merged {
                    None => merged = Some(siblings.clone()),
                    Some(merged) => {
                        if let Err(error) = merged.merge(siblings) {
                            merge_error = Some(error);
                        }
                    }
                }
            }
        }
        let mut merged = merged.unwrap_or_default();
        let mut answer = None;
        if !op.replied {
            answer = if let Some(error) = merge_error.clone() {
                Some(Err(ReplicaError::Version(error)))
            } else if replies >= op.r {
                Some(Ok(()))
            } else if expired {
                Some(Err(ReplicaError::GetQuorumFailed { replies, r: op.r }))
            } else {
                None
            };
            op.replied = answer.is_some();
        }
        let client = op.client;
        let first_responder = op.first_responder;
        let finished = all_in || expired;
        if finished {
            let op = self.gets.remove(&op_id).expect("get op exists");
            for target in &op.targets {
                self.pending.remove(&target.req);
            }
            if merge_error.is_none() && replies > 0 {
                self.read_repair(&op, &merged);
            }
        }
        if let Some(result) = answer {
            let result = result.map(|()| {
                let context = Context {
                    clock: merged.context(),
                    fastest_replica: first_responder.map(|node| node.0),
                };
                // The op is gone once finished: its set moves into the reply.
                let siblings = if finished {
                    std::mem::take(&mut merged)
                } else {
                    merged.clone()
                };
                GetOutcome {
                    context,
                    siblings,
                    replies,
                }
            });
            self.replies
                .push_back(ClientReply::Get { id: client, result });
        }
    }

    /// Finishes a get that asked one replica (N = 1, or R = 1 with the other
    /// primaries believed down): the general path with nothing to merge or
    /// repair. Its one reply is the merged set, so no replier is stale, and
    /// the set moves into the answer instead of being copied.
    fn get_finish_single(&mut self, op_id: u64, replies: usize) {
        let mut op = self.gets.remove(&op_id).expect("get op exists");
        let target = &mut op.targets[0];
        self.pending.remove(&target.req);
        if op.replied {
            return;
        }
        // R <= the number asked, so R = 1 here: answered iff it replied.
        let result = if replies >= op.r {
            let siblings = target.reply.take().flatten().unwrap_or_default();
            Ok(GetOutcome {
                context: Context {
                    clock: siblings.context(),
                    fastest_replica: op.first_responder.map(|node| node.0),
                },
                siblings,
                replies,
            })
        } else {
            Err(ReplicaError::GetQuorumFailed { replies, r: op.r })
        };
        self.replies.push_back(ClientReply::Get {
            id: op.client,
            result,
        });
    }

    /// Sends the merged set to every replier whose copy has not seen all of
    /// it (§5, read repair). Fire and forget: the acks are not awaited.
    fn read_repair(&mut self, op: &GetOp, merged: &SiblingSet) {
        if merged.is_empty() && merged.context().is_empty() {
            return;
        }
        for target in &op.targets {
            let Some(reply) = &target.reply else {
                continue;
            };
            let stale = match reply {
                Some(siblings) => siblings != merged,
                None => true,
            };
            if !stale {
                continue;
            }
            if target.node == self.me {
                self.enqueue_local(
                    Namespace::Data,
                    op.partition,
                    op.key.clone(),
                    LocalOpKind::Merge {
                        siblings: merged.clone(),
                        durable: false,
                        then: AfterMerge::Nothing,
                        hint: None,
                    },
                );
            } else {
                let req = self.fresh_id();
                self.send(
                    target.node,
                    ReplicaMessage::PutReplica {
                        req,
                        partition: op.partition,
                        key: op.key.clone(),
                        siblings: merged.clone(),
                        durable: false,
                        hint_for: None,
                    },
                );
            }
        }
    }

    // -----------------------------------------------------------------------
    // Inbound messages.

    pub fn handle_message(&mut self, now_ms: u64, from: NodeId, message: ReplicaMessage) {
        let writes = matches!(
            message,
            ReplicaMessage::PutReplica { .. } | ReplicaMessage::HintReplay { .. }
        );
        if writes && self.local_ops.len() >= LOCAL_OPS_MAX {
            // Back-pressure: no ack, so the coordinator (or the fallback
            // replaying a hint) retries or goes elsewhere.
            return;
        }
        match message {
            ReplicaMessage::PutReplica {
                req,
                partition,
                key,
                siblings,
                durable,
                hint_for,
            } => {
                let then = AfterMerge::AckPut { to: from, req };
                match hint_for {
                    Some(primary) if primary != self.me => {
                        if self.hints.len() >= HINTS_MAX {
                            return; // no ack: the coordinator tries elsewhere
                        }
                        // A hint is persisted like any replica write and
                        // durably, since it may be the only extra copy.
                        let stored_key = hint_key(primary, &key);
                        self.enqueue_local(
                            Namespace::Hint,
                            partition,
                            stored_key,
                            LocalOpKind::Merge {
                                siblings,
                                durable: true,
                                then,
                                hint: Some((primary, key)),
                            },
                        );
                    }
                    _ => self.enqueue_local(
                        Namespace::Data,
                        partition,
                        key,
                        LocalOpKind::Merge {
                            siblings,
                            durable,
                            then,
                            hint: None,
                        },
                    ),
                }
            }
            ReplicaMessage::PutAck { req, durable } => self.put_ack(from, req, durable),
            ReplicaMessage::GetReplica {
                req,
                partition,
                key,
            } => {
                let io = self.fresh_id();
                self.ios.insert(io, IoPurpose::ServeGet { to: from, req });
                self.io_queue.push_back(IoRequest::Read {
                    io,
                    namespace: Namespace::Data,
                    partition,
                    key,
                });
            }
            ReplicaMessage::GetReply { req, siblings } => {
                if let Some(Pending::Get(op_id)) = self.pending.get(&req).cloned() {
                    self.get_reply(op_id, from, siblings);
                }
            }
            ReplicaMessage::HintReplay {
                req,
                partition,
                key,
                siblings,
            } => {
                // Durable: the fallback deletes its copy after this ack.
                self.enqueue_local(
                    Namespace::Data,
                    partition,
                    key,
                    LocalOpKind::Merge {
                        siblings,
                        durable: true,
                        then: AfterMerge::AckHint { to: from, req },
                        hint: None,
                    },
                );
            }
            ReplicaMessage::HintAck { req } => {
                let Some(Pending::Replay {
                    primary,
                    partition,
                    key,
                    siblings,
                }) = self.pending.get(&req).cloned()
                else {
                    return;
                };
                if primary != from {
                    return;
                }
                self.pending.remove(&req);
                // Acknowledged: no deadline while the delete runs, so a slow
                // delete never reports the primary that answered.
                if let Some(state) = self.hints.get_mut(&(primary, partition, key.clone())) {
                    *state = HintState::Deleting;
                }
                self.enqueue_local(
                    Namespace::Hint,
                    partition,
                    hint_key(primary, &key),
                    LocalOpKind::DeleteHintIfUnchanged {
                        expected: siblings,
                        primary,
                        key,
                    },
                );
            }
        }
        // `now_ms` is part of the signature for symmetry with the other
        // inputs; replica-side handling needs no deadline yet.
        let _ = now_ms;
    }

    // -----------------------------------------------------------------------
    // Timers.

    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some((deadline_ms, timer)) = self.timers.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.timers.pop_first();
            // Timers are removed lazily: one whose op finished is a no-op.
            match timer {
                Timer::PutTarget { op, req } => self.put_target_expired(now_ms, op, req),
                Timer::PutDeadline { op } => self.put_deadline_expired(op),
                Timer::GetDeadline { op } => self.get_deadline_expired(op),
                Timer::GetLinger { op } => self.get_linger_expired(op),
            }
        }

        if now_ms >= self.next_replay_ms {
            self.next_replay_ms = now_ms + self.config.hint_replay_interval_ms;
            // Replays sent and not acknowledged in time are retried; their
            // primaries are reported to the failure detector. A replay still
            // loading or deleting has no deadline: that wait is ours.
            let mut timed_out = Vec::new();
            for ((primary, _, _), state) in self.hints.iter_mut() {
                if let HintState::Sent { req, deadline_ms } = *state {
                    if deadline_ms <= now_ms {
                        *state = HintState::Idle;
                        timed_out.push((*primary, req));
                    }
                }
            }
            for (primary, req) in timed_out {
                // A late ack finds nothing and is ignored; the retry sends
                // the hint again under a new request id.
                self.pending.remove(&req);
                self.peer_timeouts.push_back(primary);
            }
            self.start_hint_replays(now_ms);
        }
    }

    /// A put target did not answer in time: abandon it and replace it by a
    /// fallback, hinted for the same primary (§4.6).
    fn put_target_expired(&mut self, now_ms: u64, op_id: u64, req: RequestId) {
        let Some(op) = self.puts.get_mut(&op_id) else {
            return;
        };
        let Some(target) = op.targets.iter_mut().find(|target| target.req == req) else {
            return;
        };
        if !matches!(target.state, TargetState::Waiting { .. }) {
            return;
        }
        target.state = TargetState::Abandoned;
        let hint_for = target.hint_for.unwrap_or(target.node);
        self.peer_timeouts.push_back(target.node);
        if now_ms < op.deadline_ms {
            if let Some(fallback) = self.pick_fallback(op_id) {
                self.put_send(now_ms, op_id, fallback, Some(hint_for));
            }
        }
        self.put_check(op_id);
    }

    fn put_deadline_expired(&mut self, op_id: u64) {
        let Some(op) = self.puts.get_mut(&op_id) else {
            return;
        };
        if !op.replied {
            op.replied = true;
            let reply = ClientReply::Put {
                id: op.client,
                result: Err(ReplicaError::PutQuorumFailed {
                    acks: op.acks,
                    durable_acks: op.durable_acks,
                    w: op.quorum.w,
                    dw: op.quorum.dw,
                }),
            };
            self.replies.push_back(reply);
        }
        // The local update may still be running; it will find no op.
        self.remove_put(op_id);
    }

    /// The replica timeout passed: a get already answered is finished with
    /// the replies it has (read repair included); one still short of R keeps
    /// waiting until its request deadline.
    fn get_linger_expired(&mut self, op_id: u64) {
        match self.gets.get(&op_id) {
            Some(op) if op.replied => self.get_deadline_expired(op_id),
            _ => {}
        }
    }

    fn get_deadline_expired(&mut self, op_id: u64) {
        let Some(op) = self.gets.get(&op_id) else {
            return;
        };
        for target in &op.targets {
            if target.reply.is_none() && target.node != self.me {
                self.peer_timeouts.push_back(target.node);
            }
        }
        self.get_check(op_id, true);
    }

    /// Hands hints back to reachable primaries (§4.6): at most
    /// `hint_replay_batch_max` in flight, started as the replay budget
    /// allows (`replay_credit`: the background share's pace, §6.5 and
    /// design guide §8). Each start is one hint read from storage; the
    /// replay's deadline is set only when its `HintReplay` is sent.
    fn start_hint_replays(&mut self, now_ms: u64) {
        let in_flight = self
            .hints
            .values()
            .filter(|state| **state != HintState::Idle)
            .count();
        let credit = self.replay_credit(now_ms);
        let room = self.config.hint_replay_batch_max.saturating_sub(in_flight);
        let budget = room.min(credit as usize);
        let mut ready: Vec<HintIndexKey> = self
            .hints
            .iter()
            .filter(|((primary, _, _), state)| {
                **state == HintState::Idle && self.is_reachable(*primary)
            })
            .map(|(key, _)| key.clone())
            .take(budget + 1)
            .collect();
        if ready.len() > budget {
            ready.truncate(budget);
            if budget < room {
                self.replay_budget.deferred += 1;
            }
        }
        self.replay_budget.credit -= ready.len() as f64;
        for (primary, partition, key) in ready {
            let io = self.fresh_id();
            *self
                .hints
                .get_mut(&(primary, partition, key.clone()))
                .expect("hint indexed") = HintState::Loading;
            self.io_queue.push_back(IoRequest::Read {
                io,
                namespace: Namespace::Hint,
                partition,
                key: hint_key(primary, &key),
            });
            self.ios.insert(
                io,
                IoPurpose::HintLoad {
                    primary,
                    partition,
                    key,
                },
            );
        }
    }

    // -----------------------------------------------------------------------
    // Local storage operations.

    fn enqueue_local(
        &mut self,
        namespace: Namespace,
        partition: u32,
        key: Bytes,
        kind: LocalOpKind,
    ) {
        let op_id = self.fresh_id();
        self.local_ops.insert(
            op_id,
            LocalOp {
                namespace,
                partition,
                key: key.clone(),
                kind,
                stage: LocalStage::Queued,
                result: None,
                riders: Vec::new(),
            },
        );
        match self.locks.entry((namespace, key)) {
            std::collections::hash_map::Entry::Occupied(mut queue) => {
                queue.get_mut().waiting.push_back(op_id);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(LockQueue {
                    running: op_id,
                    waiting: VecDeque::new(),
                });
                self.local_start(op_id);
            }
        }
    }

    fn local_start(&mut self, op_id: u64) {
        let io = self.fresh_id();
        let op = self.local_ops.get_mut(&op_id).expect("local op exists");
        assert_eq!(op.stage, LocalStage::Queued);
        op.stage = LocalStage::Reading;
        self.io_queue.push_back(IoRequest::Read {
            io,
            namespace: op.namespace,
            partition: op.partition,
            key: op.key.clone(),
        });
        self.ios.insert(io, IoPurpose::LocalOp(op_id));
    }

    /// Finishes local op `op_id` (successfully or not), runs its
    /// continuation and starts the next op queued on the same key.
    ///
    /// The ops riding on its write finish right after it, in queue order:
    /// each with the set it would have written alone, or with the write's
    /// failure, which they share.
    fn local_finish(&mut self, now_ms: u64, op_id: u64, result: Result<SiblingSet, ReplicaError>) {
        let mut op = self.local_ops.remove(&op_id).expect("local op exists");
        let lock_key = (op.namespace, op.key.clone());
        let queue = self.locks.get_mut(&lock_key).expect("lock held");
        assert_eq!(queue.running, op_id, "only the lock holder finishes");
        let next = queue.waiting.pop_front();
        match next {
            Some(next) => queue.running = next,
            None => {
                self.locks.remove(&lock_key);
            }
        }
        let riders = std::mem::take(&mut op.riders);
        let failure = result.as_ref().err().cloned();
        self.local_continue(now_ms, op, result);
        for (rider_id, outcome) in riders {
            let rider = self.local_ops.remove(&rider_id).expect("rider exists");
            let outcome = match (&failure, outcome) {
                (Some(error), Ok(_)) => Err(error.clone()),
                (_, outcome) => outcome,
            };
            self.local_continue(now_ms, rider, outcome);
        }
        if let Some(next) = next {
            self.local_start(next);
        }
    }

    /// Runs a finished local op's continuation: the put's count and fan-out,
    /// a merge's acknowledgement, a hint's bookkeeping.
    fn local_continue(
        &mut self,
        now_ms: u64,
        op: LocalOp,
        result: Result<SiblingSet, ReplicaError>,
    ) {
        match op.kind {
            LocalOpKind::CoordinatorUpdate {
                op: put, durable, ..
            } => {
                self.put_local_done(now_ms, put, result.map(|set| (set, durable)));
            }
            LocalOpKind::Merge {
                then,
                hint,
                durable,
                ..
            } => {
                if result.is_ok() {
                    if let Some((primary, key)) = hint {
                        self.hints.entry((primary, op.partition, key)).or_default();
                    }
                    match then {
                        AfterMerge::AckPut { to, req } => {
                            self.send(to, ReplicaMessage::PutAck { req, durable });
                        }
                        AfterMerge::AckHint { to, req } => {
                            self.send(to, ReplicaMessage::HintAck { req });
                        }
                        AfterMerge::Nothing => {}
                    }
                }
            }
            LocalOpKind::PurgeIfUnchanged { .. } => {}
            LocalOpKind::DeleteHintIfUnchanged { primary, key, .. } => {
                let index_key = (primary, op.partition, key);
                match result {
                    // Deleted: forget the hint.
                    Ok(ref set) if set.is_empty() && set.context().is_empty() => {
                        self.hints.remove(&index_key);
                    }
                    // Changed meanwhile (a newer hint arrived) or failed:
                    // keep it and replay again.
                    _ => {
                        if let Some(state) = self.hints.get_mut(&index_key) {
                            *state = HintState::Idle;
                        }
                    }
                }
            }
        }
    }

    pub fn handle_io_done(&mut self, now_ms: u64, io: IoId, result: IoResult) {
        let Some(purpose) = self.ios.remove(&io) else {
            return;
        };
        match purpose {
            IoPurpose::LocalOp(op_id) => self.local_io_done(now_ms, op_id, result),
            IoPurpose::GetLocal(op_id) => {
                let siblings = match result {
                    IoResult::Read(Some(bytes)) => match SiblingSet::decode_shared(&bytes) {
                        Ok(set) => Some(set),
                        Err(_) => return, // unreadable: no local reply
                    },
                    IoResult::Read(None) => None,
                    _ => return,
                };
                let me = self.me;
                self.get_reply(op_id, me, siblings);
            }
            IoPurpose::ServeGet { to, req } => {
                let siblings = match result {
                    IoResult::Read(Some(bytes)) => match SiblingSet::decode_shared(&bytes) {
                        Ok(set) => Some(set),
                        Err(_) => return,
                    },
                    IoResult::Read(None) => None,
                    _ => return,
                };
                self.send(to, ReplicaMessage::GetReply { req, siblings });
            }
            IoPurpose::HintLoad {
                primary,
                partition,
                key,
            } => {
                let index_key = (primary, partition, key.clone());
                let siblings = match result {
                    IoResult::Read(Some(bytes)) => SiblingSet::decode_shared(&bytes).ok(),
                    IoResult::Read(None) => {
                        self.hints.remove(&index_key);
                        return;
                    }
                    _ => None,
                };
                // Unreadable, or the primary went away while the hint was
                // read: back to idle, with no one to blame.
                let Some(siblings) = siblings.filter(|_| self.is_reachable(primary)) else {
                    if let Some(state) = self.hints.get_mut(&index_key) {
                        *state = HintState::Idle;
                    }
                    return;
                };
                let req = self.fresh_id();
                // The deadline counts from the send: how long the read
                // took is this shard's business, not the primary's.
                let deadline_ms = now_ms + self.config.replica_timeout_ms;
                let Some(state) = self.hints.get_mut(&index_key) else {
                    return; // forgotten meanwhile: nothing to replay
                };
                *state = HintState::Sent { req, deadline_ms };
                self.pending.insert(
                    req,
                    Pending::Replay {
                        primary,
                        partition,
                        key: key.clone(),
                        siblings: siblings.clone(),
                    },
                );
                self.send(
                    primary,
                    ReplicaMessage::HintReplay {
                        req,
                        partition,
                        key,
                        siblings,
                    },
                );
            }
            IoPurpose::ListHints => {
                if let IoResult::HintKeys(keys) = result {
                    for (partition, stored) in keys.into_iter().take(HINTS_MAX) {
                        if let Some((primary, key)) = parse_hint_key(&stored) {
                            self.hints.entry((primary, partition, key)).or_default();
                        }
                    }
                }
            }
        }
    }

    fn local_io_done(&mut self, now_ms: u64, op_id: u64, result: IoResult) {
        let op = self.local_ops.get(&op_id).expect("local op exists");
        match op.stage {
            LocalStage::Reading => {
                let stored = match result {
                    IoResult::Read(Some(bytes)) => match SiblingSet::decode_shared(&bytes) {
                        Ok(set) => set,
                        Err(error) => {
                            return self.local_finish(
                                now_ms,
                                op_id,
                                Err(ReplicaError::Version(error)),
                            );
                        }
                    },
                    IoResult::Read(None) => SiblingSet::new(),
                    IoResult::Failed(error) => {
                        return self.local_finish(now_ms, op_id, Err(ReplicaError::Storage(error)));
                    }
                    other => panic!("read answered with {other:?}"),
                };
                self.local_read_done(now_ms, op_id, stored);
            }
            LocalStage::Writing => {
                let set = self
                    .local_ops
                    .get_mut(&op_id)
                    .expect("local op exists")
                    .result
                    .take()
                    .expect("writing op has its result");
                match result {
                    IoResult::Done => self.local_finish(now_ms, op_id, Ok(set)),
                    IoResult::Failed(error) => {
                        self.local_finish(now_ms, op_id, Err(ReplicaError::Storage(error)))
                    }
                    other => panic!("write answered with {other:?}"),
                }
            }
            LocalStage::Queued => panic!("I/O done for a queued op"),
        }
    }

    fn local_read_done(&mut self, now_ms: u64, op_id: u64, stored: SiblingSet) {
        let op = self.local_ops.get(&op_id).expect("local op exists");
        // `unchanged`: the stored set, kept while nothing in this write is
        // sure to change it (a merge may bring nothing new).
        let (mut new_set, mut durable, mut unchanged) = match &op.kind {
            LocalOpKind::CoordinatorUpdate {
                context,
                value,
                durable,
                ..
            } => {
                let mut updated = stored;
                if let Err(error) = updated.update(context, self.actor, value.clone()) {
                    return self.local_finish(now_ms, op_id, Err(ReplicaError::Version(error)));
                }
                (updated, *durable, None)
            }
            LocalOpKind::Merge {
                siblings, durable, ..
            } => {
                let mut merged = stored.clone();
                if let Err(error) = merged.merge(siblings) {
                    return self.local_finish(now_ms, op_id, Err(ReplicaError::Version(error)));
                }
                (merged, *durable, Some(stored))
            }
            LocalOpKind::DeleteHintIfUnchanged { expected, .. }
            | LocalOpKind::PurgeIfUnchanged { expected } => {
                if stored != *expected {
                    return self.local_finish(now_ms, op_id, Ok(stored));
                }
                let io = self.fresh_id();
                let op = self.local_ops.get_mut(&op_id).expect("local op exists");
                op.stage = LocalStage::Writing;
                op.result = Some(SiblingSet::new());
                self.io_queue.push_back(IoRequest::Delete {
                    io,
                    namespace: op.namespace,
                    partition: op.partition,
                    key: op.key.clone(),
                });
                self.ios.insert(io, IoPurpose::LocalOp(op_id));
                return;
            }
        };
        // With riders, the set written holds their updates too; the leader
        // keeps its own.
        let own = self.absorb_queued(op_id, &mut new_set, &mut durable, &mut unchanged);
        if !durable && unchanged.is_some_and(|stored| stored == new_set) {
            // Nothing new and no durability asked: no write needed.
            return self.local_finish(now_ms, op_id, Ok(own.unwrap_or(new_set)));
        }
        let mut payload = Vec::with_capacity(new_set.encoded_len());
        new_set.encode(&mut payload);
        let io = self.fresh_id();
        let op = self.local_ops.get_mut(&op_id).expect("local op exists");
        op.stage = LocalStage::Writing;
        self.io_queue.push_back(IoRequest::Write {
            io,
            namespace: op.namespace,
            partition: op.partition,
            key: op.key.clone(),
            payload: Bytes::from(payload),
            all_tombstones: new_set.is_all_tombstones(),
            durable,
        });
        op.result = Some(own.unwrap_or(new_set));
        self.ios.insert(io, IoPurpose::LocalOp(op_id));
    }

    /// Coalesces a hot key's queue: the puts and merges queued right behind
    /// op `op_id` on its key are applied, in queue order, to the set it is
    /// about to write, and ride on that one write instead of each reading
    /// and rewriting the whole set in turn (a key with many siblings under
    /// many concurrent writers would otherwise be rewritten once per put,
    /// one write at a time, and its queue could outgrow the request
    /// deadline). Each rider keeps what it would have written had it run
    /// alone after the ones before it: a put's own dot, and the clock of
    /// that set as its context, never the clock of later riders' writes.
    /// The write is durable if any rider asked for that. Applying stops at
    /// the first op of another kind (a purge, a hint's delete), which must
    /// read what the ones before it wrote, and after `RIDERS_MAX` riders.
    /// Returns the leader's own set when riders joined (`set` is then the
    /// one to write).
    fn absorb_queued(
        &mut self,
        op_id: u64,
        set: &mut SiblingSet,
        durable: &mut bool,
        unchanged: &mut Option<SiblingSet>,
    ) -> Option<SiblingSet> {
        let op = &self.local_ops[&op_id];
        let partition = op.partition;
        let lock_key = (op.namespace, op.key.clone());
        let queue = self.locks.get_mut(&lock_key)?;
        if queue.waiting.is_empty() {
            return None;
        }
        let own = set.clone();
        let mut riders = Vec::new();
        while riders.len() < RIDERS_MAX {
            let Some(&next) = queue.waiting.front() else {
                break;
            };
            let rider = &self.local_ops[&next];
            if rider.partition != partition {
                break;
            }
            let outcome = match &rider.kind {
                LocalOpKind::CoordinatorUpdate {
                    context,
                    value,
                    durable: wants_durable,
                    ..
                } => match set.update(context, self.actor, value.clone()) {
                    Ok(()) => {
                        *durable |= *wants_durable;
                        // A put always adds a dot: the set changes.
                        *unchanged = None;
                        Ok(set.clone())
                    }
                    Err(error) => Err(ReplicaError::Version(error)),
                },
                LocalOpKind::Merge {
                    siblings,
                    durable: wants_durable,
                    ..
                } => match set.merge(siblings) {
                    Ok(()) => {
                        *durable |= *wants_durable;
                        Ok(set.clone())
                    }
                    Err(error) => Err(ReplicaError::Version(error)),
                },
                LocalOpKind::PurgeIfUnchanged { .. }
                | LocalOpKind::DeleteHintIfUnchanged { .. } => break,
            };
            queue.waiting.pop_front();
            riders.push((next, outcome));
        }
        if riders.is_empty() {
            return None;
        }
        self.riders_total += riders.len() as u64;
        self.local_ops
            .get_mut(&op_id)
            .expect("local op exists")
            .riders = riders;
        Some(own)
    }
}

#[cfg(test)]
mod timer_queue_tests {
    use super::*;

    /// The queue pops timers in exactly the order of a `BTreeSet` of the
    /// same entries, including deadlines that arrive out of order (a clock
    /// that stepped back) and equal deadlines.
    #[test]
    fn pops_in_the_order_of_a_btree_set() {
        let mut queue = TimerQueue::default();
        let mut model = BTreeSet::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now_ms = 1_000u64;
        for round in 0..5_000u64 {
            let r = next();
            // Mostly forward, sometimes a step back.
            now_ms = if r % 50 == 0 {
                now_ms.saturating_sub(r % 200)
            } else {
                now_ms + r % 3
            };
            let op = round;
            let timer = match r % 4 {
                0 => Timer::PutTarget { op, req: r >> 40 },
                1 => Timer::GetLinger { op },
                2 => Timer::PutDeadline { op },
                _ => Timer::GetDeadline { op },
            };
            let deadline_ms = now_ms + if timer.lane() == 0 { 300 } else { 1_000 };
            queue.insert(deadline_ms, timer);
            model.insert((deadline_ms, timer));
            if r % 7 == 0 {
                // Some inserted twice: a set keeps one.
                queue.insert(deadline_ms, timer);
            }
            if r % 3 == 0 {
                assert_eq!(queue.first(), model.first().copied());
                assert_eq!(queue.pop_first(), model.pop_first());
            }
        }
        while let Some(expected) = model.pop_first() {
            assert_eq!(queue.pop_first(), Some(expected));
        }
        assert_eq!(queue.first(), None);
    }
}
