//! One shard: a glommio executor pinned to a core that owns a fixed set of
//! partitions, their store, its client port, its share of the node port, and
//! its internode port.
//!
//! The request path lives here: decode, find the key's partition and its
//! preference list in the published [`Topology`], and, when this shard holds
//! the partition on a primary node, coordinate the get or put with the
//! shard's [`Replica`] machine; otherwise forward once inside the node (node
//! port) or answer `WrongOwner` with the routing table. The shard drives its
//! `Replica`: storage requests run on the shard's `Store`, messages go out
//! over internode links, replies wake the waiting connection task, and a
//! short timer feeds `handle_timeout`. The versioning and quorum rules
//! themselves live in `crate::version` and `crate::replica`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use glommio::net::TcpListener;

use super::cluster::{self, Cluster, MembershipDriver, Topology};
use super::conn;
use super::disk::GlommioDisk;
use super::forward::{Forwarder, Handler, Mesh};
use super::internode::{
    self, Envelope, InboundHandler, Links, KIND_AAE, KIND_ADMIN_REQUEST, KIND_ADMIN_RESPONSE,
    KIND_CLIENT_FORWARD, KIND_CLIENT_REPLY, KIND_MEMBERSHIP, KIND_REPLICA,
};
use super::log::{self, info};
use super::metrics::{self, MetricsHub, Op, ShardMetrics};
use super::scheduler::{Job, JobRates, Scheduler};
use crate::antientropy::{
    perform_io_observed, perform_write_observed, write_observed_now, AaeConfig, AntiEntropy,
    DataWrite, Entry,
};
use crate::config::ServerConfig;
use crate::membership::{AdminChange, NodeId};
use crate::protocol::{self, ErrorCode, Frame, Limits, Request, RequestFrame, Response};
use crate::replica::{
    ClientReply, GetRequest, IoRequest, IoResult, PutRequest, QuorumConfig, Replica, ReplicaConfig,
    ReplicaError, ReplicaMessage, Transmit,
};
use crate::ring;
use crate::storage::{Namespace, StorageError, Store, StoreConfig, StoredRecord};
use crate::version::{
    encode_token_into, Context, EncodedSiblingSet, SiblingSet, UpdatePlan, Value, VersionError,
    VersionVector,
};

mod get_reply;
mod handoff;

pub(crate) use get_reply::GetReply;

/// What every shard of a node shares after start-up.
pub(crate) struct NodeInfo {
    pub limits: Limits,
    pub shards: usize,
    /// The cluster view (ring, addresses, reachability), published by shard 0.
    pub cluster: Arc<Cluster>,
    /// The membership state loaded at start-up, for shard 0's driver.
    pub initial_membership: std::sync::Mutex<Option<cluster::InitialMembership>>,
    /// Where shards publish metric snapshots for scrapes and admin commands.
    pub metrics: MetricsHub,
    /// When the node started.
    pub started: Instant,
    /// Counters of the Redis-protocol front end (`INFO`).
    pub resp_stats: super::resp::RespStats,
    /// The cluster secret, when internode traffic must authenticate.
    pub cluster_secret: Option<Arc<super::auth::ClusterSecret>>,
    /// Every shard's anti-entropy status, for `admin aae`.
    pub aae_board: super::aae::AaeBoard,
}

impl NodeInfo {
    pub(crate) fn new(
        node_id: u64,
        config: &ServerConfig,
        shards: usize,
    ) -> Result<NodeInfo, String> {
        let me = NodeId(node_id);
        let initial = cluster::load_membership(me, config, shards)?;
        let cluster = Arc::new(Cluster::new(
            me,
            shards,
            &initial.state,
            &initial.ring,
            &initial.book,
        )?);
        let limits = Limits {
            frame_bytes_max: config.frame_bytes_max,
            key_bytes_max: config.key_bytes_max,
            value_bytes_max: config.value_bytes_max,
            ..Limits::default()
        };
        Ok(NodeInfo {
            limits,
            shards,
            cluster,
            initial_membership: std::sync::Mutex::new(Some(initial)),
            metrics: MetricsHub::new(shards),
            started: Instant::now(),
            resp_stats: Default::default(),
            cluster_secret: match &config.cluster_secret_file {
                Some(path) => Some(Arc::new(super::auth::ClusterSecret::load(path)?)),
                None => None,
            },
            aae_board: super::aae::AaeBoard::new(shards),
        })
    }
}

/// Gauges the shard keeps outside `ShardMetrics` (requests and errors by
/// operation are counted there).
#[derive(Default)]
pub(crate) struct ShardCounters {
    pub connections: Cell<usize>,
    pub forwarded: Cell<u64>,
}

/// A client request waiting for its `ClientReply` (or, for an in-place
/// put whose write waits, its result).
struct Waiter<T = ClientReply> {
    reply: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Default for Waiter<T> {
    fn default() -> Self {
        Waiter {
            reply: RefCell::new(None),
            waker: RefCell::new(None),
        }
    }
}

/// A client request forwarded to another node, waiting for its reply frame.
#[derive(Default)]
struct ForwardSlot {
    reply: RefCell<Option<Vec<u8>>>,
    waker: RefCell<Option<Waker>>,
}

/// The size of the chunks context tokens are cut from (`context_token`).
const CONTEXT_CHUNK_BYTES: usize = 4096;

/// The largest payload an in-place put encodes in the shard's reused
/// scratch buffer (`exact_payload`); a larger one is encoded
/// in its own allocation.
const PAYLOAD_SCRATCH_BYTES: usize = 8 * 1024;

/// An in-place put's write, ready to go (`ShardState::put_single_update`).
struct InPlaceWrite {
    /// The updated set's encoding.
    payload: Bytes,
    all_tombstones: bool,
    /// The reply's context token (the updated set's clock).
    context: PutToken,
    /// The stored record's anti-entropy entry (`None`: absent).
    old: Option<Entry>,
}

/// An in-place put's write that did not finish at once
/// (`ShardState::put_single_now`), for `put_single_wait`.
struct PutWaiting {
    key: Bytes,
    io: IoRequest,
    old: Option<Entry>,
    /// The reply's context token.
    context: PutToken,
    durable: bool,
}

impl PutWaiting {
    /// The wait of `update`, a write of `key` to `partition` that did not
    /// finish at once.
    fn new(key: Bytes, partition: u32, update: InPlaceWrite, durable: bool) -> PutWaiting {
        let InPlaceWrite {
            payload,
            all_tombstones,
            context,
            old,
        } = update;
        PutWaiting {
            io: IoRequest::Write {
                io: 0,
                namespace: Namespace::Data,
                partition,
                key: key.clone(),
                payload,
                all_tombstones,
                durable,
            },
            key,
            old,
            context,
            durable,
        }
    }
}

/// Why `ShardState::put_in_place` did not answer a put.
enum PutDeclined {
    /// The replica machine must coordinate it (a read that needs I/O, an
    /// unreadable set, a locked key); nothing was done.
    Machine,
    /// The write must wait (a flush, a rotation, a durable write): the
    /// update, not yet written.
    Waiting(InPlaceWrite),
}

/// The reply of an in-place put (`delete`: a delete) that ended with
/// `result`, the written set's token on success.
fn put_reply(id: u64, delete: bool, result: Result<PutToken, (ErrorCode, String, u32)>) -> Reply {
    match result {
        // A delete's success is its own answer, without the written context.
        Ok(_) if delete => Reply::Response(id, Response::Delete),
        Ok(token) => Reply::Put { id, token },
        Err(error) => local_reply(id, Err(error)),
    }
}

/// The most bytes of a context token a put's reply holds itself
/// (`PutToken::Inline`): a clock of two actors at the widest varints
/// takes 57, and the reply is no larger than its other kinds.
const PUT_TOKEN_INLINE_BYTES: usize = 64;

/// The context token of an in-place put's reply (`ShardState::put_token`).
/// It is held in the reply itself when it fits, as a one- or two-actor
/// clock's does, so the reply frame is written from it with no `Bytes` cut
/// from the token chunk (a reference count, and the chunk kept alive until
/// the reply is sent); a longer one is a slice of the token chunk.
pub(crate) enum PutToken {
    Inline {
        len: u8,
        bytes: [u8; PUT_TOKEN_INLINE_BYTES],
    },
    Shared(Bytes),
}

// A put's reply is no larger than a get's, so the inline token does not
// grow every `Reply` (and every future and queue that holds one).
const _: () = assert!(
    std::mem::size_of::<u64>() + std::mem::size_of::<PutToken>() <= std::mem::size_of::<GetReply>()
);

impl PutToken {
    /// `token`, inline when it fits, else in the `Bytes` `shared` makes.
    fn new(token: &[u8], shared: impl FnOnce(&[u8]) -> Bytes) -> PutToken {
        if token.len() > PUT_TOKEN_INLINE_BYTES {
            return PutToken::Shared(shared(token));
        }
        let mut bytes = [0; PUT_TOKEN_INLINE_BYTES];
        bytes[..token.len()].copy_from_slice(token);
        PutToken::Inline {
            len: token.len() as u8,
            bytes,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            PutToken::Inline { len, bytes } => &bytes[..usize::from(*len)],
            PutToken::Shared(bytes) => bytes,
        }
    }

    /// The token as `Response::Put` carries it.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            PutToken::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            PutToken::Shared(bytes) => bytes,
        }
    }
}

/// The reply of a request this shard coordinated that ended with `result`.
fn local_reply(id: u64, result: Result<Response, (ErrorCode, String, u32)>) -> Reply {
    match result {
        Ok(response) => Reply::Response(id, response),
        Err((code, message, acks)) => Reply::Response(
            id,
            Response::Error {
                code,
                message,
                acks,
                routing: None,
            },
        ),
    }
}

/// The reply to an in-place put whose write ended with `result`.
fn put_single_reply(
    result: IoResult,
    context: PutToken,
) -> Result<PutToken, (ErrorCode, String, u32)> {
    match result {
        IoResult::Done => Ok(context),
        IoResult::Failed(error) => Err(replica_error(ReplicaError::Storage(error), false)),
        other => Err((
            ErrorCode::Internal,
            format!("write answered with {other:?}"),
            0,
        )),
    }
}

/// The most client requests one shard has forwarded to other nodes and
/// not yet seen answered.
const FORWARDS_MAX: usize = 4096;

/// The state of one running shard; lives in an `Rc` on its executor.
pub(crate) struct ShardState {
    pub index: usize,
    pub node: Arc<NodeInfo>,
    pub config: Arc<ServerConfig>,
    pub store: Store<GlommioDisk>,
    pub counters: ShardCounters,
    /// Request, storage, hint and hot-key metrics (docs/metrics.md).
    pub metrics: ShardMetrics,
    /// The foreground and background task queues and the utilization monitor.
    pub sched: Rc<Scheduler>,
    /// Client connections open per source address (`connections_per_address_max`).
    pub address_limiter: Rc<super::limits::AddressLimiter>,
    forwarder: RefCell<Option<Rc<Forwarder>>>,
    pub shutdown: Arc<AtomicBool>,
    /// This shard's replication machine (coordinator, replica, fallback).
    pub(crate) replica: RefCell<Replica>,
    /// This shard's anti-entropy machine; its trees follow every data write
    /// (`perform`), its driver is `aae.rs`.
    pub(crate) aae: RefCell<AntiEntropy>,
    waiters: RefCell<AHashMap<u64, Rc<Waiter>>>,
    next_client_id: Cell<u64>,
    pub(crate) links: Rc<Links>,
    /// Shard 0 only: the membership machine's driver.
    membership: RefCell<Option<MembershipDriver>>,
    /// The origin of this shard's millisecond clock.
    started: Instant,
    /// The topology version whose reachability the replica has seen.
    seen_topology: Cell<u64>,
    /// This shard's copy of the published topology, refreshed when the
    /// cluster's version moves; cloning it is a non-atomic `Rc` increment
    /// (cloning the `Arc` would bounce its counter between cores on every
    /// request, hence the deliberate double pointer).
    #[allow(clippy::redundant_allocation)]
    topology: RefCell<Rc<Arc<Topology>>>,
    /// Client requests forwarded to other nodes, by token.
    forwards: RefCell<AHashMap<u64, Rc<ForwardSlot>>>,
    next_forward: Cell<u64>,
    /// Set while `pump` runs: glommio runs a spawned task at once, so a
    /// storage request that completes without waiting would otherwise call
    /// `pump` recursively, once per queued request, and overflow the stack.
    pumping: Cell<bool>,
    /// Handoff requests sent and not yet acknowledged (`handoff.rs`).
    handoff_outstanding: RefCell<ahash::AHashSet<u64>>,
    /// Reused buffer for encoding context tokens (`context_token`).
    context_scratch: RefCell<Vec<u8>>,
    /// The box of the last in-place write (`put_single`) that finished at
    /// its first poll, for the next one: its future is large, and nearly
    /// every write finishes at once. Typed `Any` because the future's type
    /// has no name; `reboxed` recovers it.
    write_spare: RefCell<Option<Box<dyn std::any::Any>>>,
    /// In-place puts whose write waits in a task (`put_single`): with the
    /// machine's own requests, bounded by `REQUESTS_MAX`; past it puts go
    /// through the machine, which refuses them as overloaded.
    puts_waiting: Cell<usize>,
    /// The chunk context tokens are cut from (`context_token`): a token is
    /// a slice of it, not an allocation of its own.
    context_chunk: RefCell<bytes::BytesMut>,
    /// Where in-place puts' payloads are encoded before they are copied
    /// into their own allocation (`payload_bytes`).
    payload_scratch: RefCell<Vec<u8>>,
    /// A put's context clock, decoded (`coordinate_put`).
    put_clock: RefCell<Vec<(u64, u64)>>,
    /// Where an in-place put's reply token is written (`put_token`).
    put_token_buffer: RefCell<[u8; crate::version::TOKEN_BUFFER_BYTES]>,
}

/// The incarnation the replica layer sees: the shard's restart counter
/// times the node's shard count (rounded up to a power of two) plus the
/// shard index. Request ids start at `incarnation << 40`, so the shard a
/// request came from can be read back from its id; answers (`PutAck`,
/// `GetReply`, `HintAck`) carry only the id and are routed to that shard.
fn replica_incarnation(incarnation: u32, shard: usize, shards: usize) -> u16 {
    let factor = shards.next_power_of_two() as u64;
    ((u64::from(incarnation) * factor + shard as u64) & 0xFFFF) as u16
}

/// The shard of a node with `shards` shards that sent request `req`.
fn shard_of_request(req: u64, shards: u16) -> u16 {
    let factor = u64::from(shards.max(1)).next_power_of_two();
    (((req >> 40) & 0xFFFF) % factor) as u16
}

/// Runs one shard until the node shuts down.
pub(crate) async fn run(
    index: usize,
    node: Arc<NodeInfo>,
    config: ServerConfig,
    mesh: Mesh,
    shutdown: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<usize, (usize, String)>>,
) -> Result<(), String> {
    let config = Arc::new(config);
    let dir = config.data_dir.join(format!("shard-{index}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let incarnation = next_incarnation(
        &dir,
        &config.data_dir.join(format!("shard-{index}.incarnation")),
    )?;
    let store_config = store_config(&config);
    let started = Instant::now();
    let disk = GlommioDisk::new(&dir)
        .map_err(|e| format!("cannot use {}: {e}", dir.display()))?
        .poll_always(config.disk_poll_always);
    let (store, report) = Store::open(disk, store_config)
        .await
        .map_err(|e| format!("cannot open store in {}: {e}", dir.display()))?;
    info!(
        open_ms = started.elapsed().as_millis() as u64,
        keys = report.keys,
        hint_files_used = report.used_hint_files,
        torn_tail_bytes = report.truncated_tail_bytes,
        corrupt_records = report.corrupt.len(),
        incarnation,
        "store open"
    );
    let cluster = node.cluster.clone();
    let failure_cluster = cluster.clone();
    let links = Links::new(
        config.listen.ip(),
        node.cluster_secret.clone(),
        Rc::new(move |addr: SocketAddr| {
            failure_cluster.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(peer) = failure_cluster.topology().node_at(addr) {
                failure_cluster.report_failure(peer);
            }
        }),
    );
    links.set_idle_close(
        (config.internode_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(config.internode_idle_timeout_ms / 2)),
    );
    let started = Instant::now();
    let me = cluster.me;
    let replica_config = ReplicaConfig {
        // Every request carries its own quorum (N follows the ring); this
        // one only has to be valid.
        quorum: QuorumConfig {
            n: 1,
            r: 1,
            w: 1,
            dw: 0,
        },
        request_timeout_ms: config.request_timeout_ms,
        replica_timeout_ms: config.replica_timeout_ms,
        hint_replay_interval_ms: config.hint_replay_interval_ms,
        ..ReplicaConfig::default()
    };
    let actor = crate::replica::actor_id(
        me,
        index as u16,
        replica_incarnation(incarnation, index, node.shards),
    );
    let replica = Replica::new(me, actor, replica_config, 0);
    let aae_config = AaeConfig {
        exchange_interval_ms: config.aae_interval_ms.max(1),
        exchange_timeout_ms: (config.aae_interval_ms * 10).clamp(1_000, 30_000),
        tombstone_grace_ms: config.tombstone_grace_ms,
    };
    // Exchange ids in this shard incarnation's own range, like request ids.
    let aae = AntiEntropy::new(me, aae_config, 0, ((actor >> 16) & 0xFFFF) << 40);
    let membership = if index == 0 {
        let initial = node
            .initial_membership
            .lock()
            .map_err(|_| "membership lock poisoned".to_string())?
            .take()
            .ok_or("membership state already taken")?;
        Some(MembershipDriver::new(
            cluster.clone(),
            config.clone(),
            links.clone(),
            initial,
            0,
        ))
    } else {
        None
    };
    let sched = Scheduler::new(
        crate::observe::shares::SharesPolicy {
            shares_min: config.background_shares_min,
            shares_max: config.background_shares_max,
            latency_target_us: config.foreground_latency_target_us,
            ..Default::default()
        },
        JobRates {
            per_second: [
                config.compaction_bytes_per_second.max(1),
                config.handoff_keys_per_second,
                // Hint replay is paced by the replica machine; this only counts.
                u64::MAX,
                config.handoff_keys_per_second.saturating_mul(2),
            ],
        },
    )?;
    let (foreground, background) = (sched.foreground, sched.background);
    let shard = Rc::new(ShardState {
        index,
        node: node.clone(),
        config: config.clone(),
        store,
        counters: ShardCounters::default(),
        metrics: ShardMetrics::new(),
        sched,
        address_limiter: Rc::default(),
        forwarder: RefCell::new(None),
        shutdown: shutdown.clone(),
        replica: RefCell::new(replica),
        aae: RefCell::new(aae),
        waiters: RefCell::new(AHashMap::new()),
        next_client_id: Cell::new(1),
        links,
        membership: RefCell::new(membership),
        started,
        seen_topology: Cell::new(0),
        topology: RefCell::new(Rc::new(node.cluster.topology())),
        pumping: Cell::new(false),
        forwards: RefCell::new(AHashMap::new()),
        next_forward: Cell::new(1),
        handoff_outstanding: RefCell::new(ahash::AHashSet::new()),
        context_scratch: RefCell::new(Vec::with_capacity(64)),
        context_chunk: RefCell::new(bytes::BytesMut::new()),
        payload_scratch: RefCell::new(Vec::new()),
        put_clock: RefCell::new(Vec::with_capacity(crate::version::PLAN_ENTRIES_MAX)),
        put_token_buffer: RefCell::new([0; crate::version::TOKEN_BUFFER_BYTES]),
        write_spare: RefCell::new(None),
        puts_waiting: Cell::new(0),
    });
    shard.pump();

    let handler_shard = shard.clone();
    let handler: Handler = Rc::new(move |frame: Vec<u8>| {
        let shard = handler_shard.clone();
        Box::pin(async move { shard.handle_forwarded(Bytes::from(frame)).await })
    });
    let forwarder = Forwarder::join(mesh, index, handler).await?;
    *shard.forwarder.borrow_mut() = Some(forwarder);

    let shard_addr = std::net::SocketAddr::new(config.listen.ip(), config.shard_port(index));
    let shard_listener =
        TcpListener::bind(shard_addr).map_err(|e| format!("cannot listen on {shard_addr}: {e}"))?;
    let node_listener = TcpListener::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    if let Some(resp_addr) = config.resp_listen {
        let listener = TcpListener::bind(resp_addr)
            .map_err(|e| format!("cannot listen on {resp_addr} (RESP): {e}"))?;
        glommio::spawn_local_into(
            super::resp::accept_loop(shard.clone(), listener),
            foreground,
        )
        .map_err(|e| e.to_string())?
        .detach();
    }
    let internode_addr = config.internode_shard_addr(index);
    let internode_listener = TcpListener::bind(internode_addr)
        .map_err(|e| format!("cannot listen on {internode_addr}: {e}"))?;
    glommio::spawn_local_into(
        internode::accept_loop(
            shard.clone(),
            internode_listener,
            node.cluster_secret.clone(),
            internode::InboundLimits::of(&config),
        ),
        foreground,
    )
    .map_err(|e| e.to_string())?
    .detach();
    let ticker = shard.clone();
    glommio::spawn_local_into(async move { ticker.replica_loop().await }, foreground)
        .map_err(|e| e.to_string())?
        .detach();
    if index == 0 {
        let gossiper = shard.clone();
        glommio::spawn_local_into(async move { gossiper.membership_loop().await }, foreground)
            .map_err(|e| e.to_string())?
            .detach();
    }
    for (listener, via_node_port) in [(shard_listener, false), (node_listener, true)] {
        let shard = shard.clone();
        glommio::spawn_local_into(
            conn::accept_loop(shard, listener, via_node_port),
            foreground,
        )
        .map_err(|e| e.to_string())?
        .detach();
    }
    let flusher = shard.clone();
    glommio::spawn_local_into(async move { flusher.flush_loop().await }, foreground)
        .map_err(|e| e.to_string())?
        .detach();
    let preparer = shard.clone();
    glommio::spawn_local_into(async move { preparer.segment_loop().await }, foreground)
        .map_err(|e| e.to_string())?
        .detach();
    let handoff = shard.clone();
    glommio::spawn_local_into(async move { handoff.handoff_loop().await }, background)
        .map_err(|e| e.to_string())?
        .detach();
    let compactor = shard.clone();
    glommio::spawn_local_into(async move { compactor.compaction_loop().await }, background)
        .map_err(|e| e.to_string())?
        .detach();
    let (monitored, stopper) = (shard.clone(), shard.clone());
    glommio::spawn_local_into(
        shard.sched.clone().monitor_loop(
            move || monitored.metrics.foreground_latency(),
            move || stopper.shutdown.load(Ordering::Relaxed),
        ),
        foreground,
    )
    .map_err(|e| e.to_string())?
    .detach();
    let (receiver, stopper) = (shard.clone(), shard.clone());
    glommio::spawn_local_into(
        shard.sched.clone().inbox_loop(
            move |from, message| receiver.deliver_replica(from, message),
            move || stopper.shutdown.load(Ordering::Relaxed),
        ),
        background,
    )
    .map_err(|e| e.to_string())?
    .detach();
    if let (0, Some(addr)) = (index, config.http_listen) {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen for admin http on {addr}: {e}"))?;
        glommio::spawn_local_into(
            super::http::accept_loop(shard.clone(), listener),
            foreground,
        )
        .map_err(|e| e.to_string())?
        .detach();
        info!(%addr, "admin http (/metrics, /health) listening");
    }
    let anti_entropy = shard.clone();
    glommio::spawn_local_into(async move { anti_entropy.aae_loop().await }, background)
        .map_err(|e| e.to_string())?
        .detach();

    // Published before `ready`, so /health answers 200 as soon as the
    // node says it is ready.
    shard.publish_metrics();
    let _ = ready.send(Ok(index));
    while !shutdown.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    shard.links.close_all();
    // Shutdown: everything acknowledged so far reaches the disk, then the
    // index snapshot, then the clean-stop marker that keeps the incarnation.
    let result = async {
        shard.store.sync().await?;
        shard.store.stop_preparing_segments().await?;
        shard.store.write_hint_files().await
    }
    .await;
    match result {
        Ok(()) => {
            mark_clean_stop(&dir)?;
            info!("flushed and synced");
            Ok(())
        }
        Err(e) => Err(format!("flush on shutdown failed: {e}")),
    }
}

/// Waits for `event`, or 100 ms, so that a loop waiting on the store notices
/// shutdown; true when the event came first.
async fn event_or_tick(event: impl std::future::Future<Output = ()>) -> bool {
    futures_lite::future::or(
        async {
            event.await;
            true
        },
        async {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            false
        },
    )
    .await
}

const INCARNATION_FILE: &str = "incarnation";
const CLEAN_STOP_FILE: &str = "clean-stop";

/// Reads the shard's incarnation, bumping it unless the last stop was clean.
///
/// A copy is kept outside the shard directory (`mirror`, in the data
/// directory beside `node.id`): when the shard's directory is lost or wiped
/// (a replaced disk) while the node keeps its id, the shard must not start
/// again at an incarnation it already used, or its coordinator would issue
/// dots (actor, counter) that other replicas hold for different values, and
/// a merge would take two different writes for one (Riak regenerates vnode
/// ids for the same reason). The larger of the two is used.
fn next_incarnation(dir: &std::path::Path, mirror: &std::path::Path) -> Result<u32, String> {
    let read = |path: &std::path::Path| -> Result<u32, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("{} is corrupt", path.display())),
            Err(_) => Ok(0),
        }
    };
    let path = dir.join(INCARNATION_FILE);
    let current = read(&path)?.max(read(mirror)?);
    let clean = dir.join(CLEAN_STOP_FILE);
    let next = if clean.exists() { current } else { current + 1 };
    for file in [&path, mirror] {
        super::server::write_file_durably(file, format!("{next}\n").as_bytes())
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    if clean.exists() {
        std::fs::remove_file(&clean).map_err(|e| format!("{}: {e}", clean.display()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(next)
}

fn mark_clean_stop(dir: &std::path::Path) -> Result<(), String> {
    super::server::write_file_durably(&dir.join(CLEAN_STOP_FILE), b"1\n")
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Requests of a pipelined read whose data `ShardState::prefetch` loads
/// before the first of them is handled (a connection prefetches a longer
/// batch group by group, each just before it is handled): 32 keys'
/// entries, slots and sets are about 6 KiB of cache lines, well inside a
/// core's L1.
pub(crate) const PREFETCH_GROUP: usize = 32;

/// A frame of a pipelined batch that `ShardState::prefetch` verified, for
/// `handle_frame_now` to take instead of verifying it again, with its key's
/// placement hash (`ring::key_hash`) where it has a key. Only for the frame
/// it was parsed from, unchanged; `handle_frame_now` verifies a frame again
/// whose length is not the one parsed (a slot handed to the wrong frame
/// would apply one frame's field ranges to another).
pub(crate) struct Prepared {
    parsed: protocol::ParsedRequest,
    hash: Option<u128>,
    frame_len: usize,
}

/// `Prepared` frames of one prefetch group, by position in the group.
pub(crate) type PreparedGroup = [Option<Prepared>; PREFETCH_GROUP];

/// A request's key that `ShardState::prefetch` follows into the index.
#[derive(Clone, Copy, Default)]
struct Probe<'a> {
    key: &'a [u8],
    partition: u32,
    index_hash: u64,
    /// A put or delete.
    writes: bool,
    /// Its anti-entropy tree leaf (`antientropy::hash_leaf`).
    leaf: u16,
}

/// A request `ShardState::handle_frame_now` could not answer in place,
/// decoded and routed, for `handle_deferred`.
#[allow(clippy::redundant_allocation)] // what `ShardState::topology` hands out
pub(crate) struct Deferred {
    request: RequestFrame,
    topology: Rc<Arc<Topology>>,
    partition: u32,
    route: Route,
}

/// What `ShardState::get_in_place` did with a get.
enum InPlace {
    /// Answered: the reply is written into the connection's outgoing
    /// bytes (`Reply::Written`).
    Written,
    /// This shard answers it alone, but its set in `partition` needs I/O.
    Waits(u32),
    /// Not this shard's to answer alone; nothing was done.
    NotAlone,
}

/// Where a deferred request goes.
enum Route {
    /// This shard coordinates it; counted in the metrics from `began`.
    Local { began: Instant },
    /// This shard's in-place put (or delete) whose write waits
    /// (`ShardState::put_single_wait`); counted from `began`.
    PutWaiting {
        began: Instant,
        waiting: Box<PutWaiting>,
    },
    /// Another shard of this node holds the key (a node-port client).
    Shard { owner: usize, frame: Bytes },
    /// No shard of this node holds the key (a thin client on the node port).
    Remote { frame: Bytes },
}

/// Either a reply to encode, or an already encoded reply from another shard.
pub(crate) enum Reply {
    Response(u64, Response),
    Encoded(Vec<u8>),
    /// A get answered from the stored encoding of its set, written
    /// straight from those bytes (`get_reply`).
    Get(GetReply),
    /// A reply already appended to the connection's outgoing bytes (a get
    /// answered while the store lent it the set: `get_single_into`).
    Written,
    /// An in-place put's success, its token held in the reply
    /// (`PutToken`); the frame is `Response::Put`'s.
    Put {
        id: u64,
        token: PutToken,
    },
}

impl Reply {
    /// Appends the reply's frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Response(id, response) => protocol::encode_response(*id, response, out),
            Reply::Encoded(encoded) => out.extend_from_slice(encoded),
            Reply::Get(get) => get.encode(out),
            Reply::Put { id, token } => protocol::encode_put_reply(*id, token.as_slice(), out),
            Reply::Written => {}
        }
    }
}

impl ShardState {
    /// The reply to a frame that does not decode, counted as invalid.
    fn invalid(&self, e: protocol::ProtocolError) -> Reply {
        ShardMetrics::bump(&self.metrics.invalid, 1);
        let (id, response) = e.to_response();
        Reply::Response(id, response)
    }

    fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::Response(
            id,
            Response::Error {
                code,
                message: message.into(),
                acks: 0,
                routing: None,
            },
        )
    }

    /// The current topology, from this shard's cache.
    #[allow(clippy::redundant_allocation)]
    pub(crate) fn topology(&self) -> Rc<Arc<Topology>> {
        let version = self.node.cluster.version();
        if self.topology.borrow().version != version {
            *self.topology.borrow_mut() = Rc::new(self.node.cluster.topology());
        }
        self.topology.borrow().clone()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        super::chaos_hooks::jumped(self.started.elapsed().as_millis() as u64)
    }

    /// Handles one complete inbound frame (without its length prefix).
    pub(crate) async fn handle_frame(self: &Rc<Self>, frame: Bytes, via_node_port: bool) -> Reply {
        match self.handle_frame_now(
            Frame::Held(frame),
            via_node_port,
            Instant::now(),
            None,
            None,
        ) {
            Ok(reply) => {
                self.settle_batch();
                reply
            }
            Err(deferred) => self.handle_deferred(deferred).await,
        }
    }

    /// `handle_frame` without waiting: the reply of a request answered in
    /// place (a ping, a get of a set in memory, a one-replica put written
    /// at once, an error, a wrong owner), or what is left to do for one
    /// that waits (`handle_deferred`). The caller (`conn`) builds no future
    /// for the former, so the per-request path of the common requests has
    /// no future to set up, move or poll. `read_at`: when the bytes of the
    /// frame were read (a connection reads once for a whole pipelined
    /// batch); the request's latency in the metrics counts from then.
    /// `out`: the connection's outgoing bytes, where a get this shard
    /// answers alone from memory writes its reply at once (`get_in_place`,
    /// `Reply::Written`); without it, such a get's reply holds the set
    /// (`Reply::Get`). A lent `frame` is taken (`Frame::into_bytes`) only
    /// by a request that keeps part of it.
    // Not boxed: a box would be an allocation per deferred request (every
    // replicated write); the value is moved once, into the request's future.
    #[allow(clippy::result_large_err)]
    pub(crate) fn handle_frame_now(
        self: &Rc<Self>,
        frame: Frame<'_>,
        via_node_port: bool,
        read_at: Instant,
        out: Option<&mut Vec<u8>>,
        prepared: Option<Prepared>,
    ) -> Result<Reply, Deferred> {
        // Verified once (here, or by `prefetch`); a get this shard answers
        // alone is answered from the frame in place, everything else is
        // then built into a `Request`.
        let prepared = prepared.filter(|p| {
            debug_assert_eq!(p.frame_len, frame.bytes().len(), "a frame's own slot");
            p.frame_len == frame.bytes().len()
        });
        let (parsed, hash) = match prepared {
            Some(Prepared { parsed, hash, .. }) => (parsed, hash),
            None => match protocol::parse_request(frame.bytes(), &self.node.limits) {
                Ok(parsed) => (parsed, None),
                Err(e) => return Ok(self.invalid(e)),
            },
        };
        // The key's placement hash, computed once.
        let key_hash = |key: &[u8]| {
            debug_assert!(hash.is_none_or(|hash| hash == ring::key_hash(key)));
            hash.unwrap_or_else(|| ring::key_hash(key))
        };
        let topology = self.topology();
        let mut waits = None;
        // Only where every partition has one replica (N = 1, or one node):
        // elsewhere no get or put is answered alone.
        if topology.n_val == 1 {
            if let Some(put) = parsed.put(frame.bytes(), &self.node.limits) {
                let hash = key_hash(put.key);
                if let Some(reply) = self.put_from_frame(put, hash, &topology, read_at) {
                    return Ok(reply);
                }
            } else if let (Some(out), Some(get)) =
                (out, parsed.get(frame.bytes(), &self.node.limits))
            {
                let hash = key_hash(get.key);
                match self.get_in_place(get, hash, &topology, read_at, out) {
                    InPlace::Written => return Ok(Reply::Written),
                    InPlace::Waits(partition) => waits = Some(partition),
                    InPlace::NotAlone => {}
                }
            }
        }
        // Where a request with a key goes is decided before it is built, so
        // that its frame is held twice (`Bytes` clone) only when it is
        // forwarded whole.
        let placed = parsed.key(frame.bytes()).map(|key| {
            let partition = ring::partition_of(key_hash(key), topology.q);
            (partition, self.local_owner(&topology, partition))
        });
        let forwarded = match placed {
            Some((_, Some(owner))) => {
                via_node_port && owner != self.index && owner < self.node.shards
            }
            Some((_, None)) => via_node_port,
            None => false,
        };
        // A ping or routing-table request keeps nothing of its frame.
        let frame = if parsed.refers_to_frame() {
            frame.into_bytes()
        } else {
            Bytes::new()
        };
        let kept = forwarded.then(|| frame.clone());
        let request = match protocol::build_request(frame, parsed, &self.node.limits) {
            Ok(request) => request,
            // Not reached for a get that waits: `ParsedRequest::get` accepts
            // only what builds into a get.
            Err(e) => return Ok(self.invalid(e)),
        };
        if let Some(partition) = waits {
            // A get answered alone whose set needs I/O: deferred as
            // `handle_local_now` defers it.
            return Err(Deferred {
                request,
                topology,
                partition,
                route: Route::Local { began: read_at },
            });
        }
        let Some((partition, local)) = placed else {
            return self.handle_local_now(request, 0, topology, read_at);
        };
        match (local, kept) {
            (Some(owner), _) if owner == self.index => {
                self.handle_local_now(request, partition, topology, read_at)
            }
            (Some(owner), Some(frame)) => Err(Deferred {
                request,
                topology,
                partition,
                route: Route::Shard { owner, frame },
            }),
            (None, Some(frame)) => Err(Deferred {
                request,
                topology,
                partition,
                route: Route::Remote { frame },
            }),
            _ => {
                // Not held here: a cluster-aware client routed with an old
                // table, or a thin client reached the wrong node. Either way
                // the current table lets it retry at a primary (§6.4).
                ShardMetrics::bump(&self.metrics.wrong_owner, 1);
                let message = match local {
                    Some(owner) => format!("partition {partition} is held by shard {owner}"),
                    None => format!("this node is not a primary for partition {partition}"),
                };
                Ok(Reply::Response(
                    request.id,
                    Response::Error {
                        code: ErrorCode::WrongOwner,
                        message,
                        acks: 0,
                        routing: Some(topology.routing.clone()),
                    },
                ))
            }
        }
    }

    /// Verifies the frames of one pipelined read (up to `PREFETCH_GROUP`
    /// of them) into `prepared`, by position, for `handle_frame_now`, and
    /// warms the CPU caches for handling them before the first is handled:
    /// every request with a key has its index entry probed and its
    /// read-cache slot prefetched (and, for a put or delete, its
    /// anti-entropy tree leaf: `AntiEntropy::prefetch_leaf`), then (the
    /// slots loaded meanwhile) its stored set's first bytes prefetched
    /// (`Store::prefetch_entry`, `Store::prefetch_record`). Their cache
    /// misses, which dominate a GET's or PUT's time at 100,000 keys
    /// (BENCHMARKS.md §2s), then overlap instead of coming one after the
    /// other. A frame that does not verify is left `None` (its handler
    /// verifies it again, and answers the error); a frame with no key, or
    /// a key this shard does not hold, is not prefetched. A frame that
    /// verifies is verified once, here (BENCHMARKS.md §2zl). Not inlined
    /// into the connection loop, which runs it once per group.
    #[inline(never)]
    pub(crate) fn prefetch<'a>(
        &self,
        frames: impl Iterator<Item = &'a [u8]>,
        prepared: &mut PreparedGroup,
    ) {
        let q = self.topology.borrow().q;
        // Never held across an await, but a prefetch may not panic.
        let aae = self.aae.try_borrow().ok();
        // The keys the index may hold, packed at the front.
        let mut keys = [Probe::default(); PREFETCH_GROUP];
        let mut count = 0;
        let mut frames = frames.fuse();
        for slot in prepared.iter_mut() {
            // Every slot is written: none is left from an earlier group.
            *slot = None;
            let Some(frame) = frames.next() else {
                continue;
            };
            let Ok(parsed) = protocol::parse_request(frame, &self.node.limits) else {
                continue;
            };
            let writes = parsed.writes();
            let Some(key) = parsed.key(frame) else {
                *slot = Some(Prepared {
                    parsed,
                    hash: None,
                    frame_len: frame.len(),
                });
                continue;
            };
            let hash = ring::key_hash(key);
            *slot = Some(Prepared {
                parsed,
                hash: Some(hash),
                frame_len: frame.len(),
            });
            let partition = ring::partition_of(hash, q);
            // A write's tree leaf: its partition's state now, the leaf
            // itself with the index entries, once that state has arrived
            // (loading its address here stalled: 2% of a shard's samples
            // under a PUT load, BENCHMARKS.md §2zl).
            let leaf = crate::antientropy::hash_leaf(hash);
            if let (true, Some(aae)) = (writes, &aae) {
                aae.prefetch_partition(partition);
            }
            match self
                .store
                .prefetch_index_slot(Namespace::Data, partition, key)
            {
                Some(index_hash) => {
                    keys[count] = Probe {
                        key,
                        partition,
                        index_hash,
                        writes,
                        leaf,
                    };
                    count += 1;
                }
                // A partition the store holds no key of yet: its leaf now.
                None => {
                    if let (true, Some(aae)) = (writes, &aae) {
                        aae.prefetch_leaf(partition, leaf);
                    }
                }
            }
        }
        let keys = &keys[..count];
        for probe in keys {
            self.store
                .prefetch_index_entry(Namespace::Data, probe.partition, probe.index_hash);
            if let (true, Some(aae)) = (probe.writes, &aae) {
                aae.prefetch_leaf(probe.partition, probe.leaf);
            }
        }
        let mut found = [None; PREFETCH_GROUP];
        for (probe, found) in keys.iter().zip(found.iter_mut()) {
            *found = self.store.prefetch_entry(
                Namespace::Data,
                probe.partition,
                probe.key,
                probe.writes,
            );
        }
        for prefetched in found.iter().flatten() {
            self.store.prefetch_record(prefetched);
        }
    }

    /// The rest of a request `handle_frame_now` could not answer in place.
    pub(crate) async fn handle_deferred(self: &Rc<Self>, deferred: Deferred) -> Reply {
        let Deferred {
            request,
            topology,
            partition,
            route,
        } = deferred;
        match route {
            Route::Local { began } => {
                let op = Op::of(&request.request);
                let reply = self
                    .handle_local_inner(request, partition, &topology, true)
                    .await;
                self.record_local(op, began, &reply);
                reply
            }
            Route::PutWaiting { began, waiting } => {
                let op = Op::of(&request.request);
                let delete = matches!(request.request, Request::Delete { .. });
                // Boxed: that future is large, and this one is part of
                // every deferred request's.
                let result = Box::pin(self.put_single_wait(*waiting)).await;
                let reply = put_reply(request.id, delete, result);
                self.record_local(op, began, &reply);
                reply
            }
            Route::Shard { owner, frame } => {
                let forwarder = self.forwarder.borrow().clone();
                self.counters
                    .forwarded
                    .set(self.counters.forwarded.get() + 1);
                match forwarder {
                    Some(f) => match f.forward(owner, frame.to_vec()).await {
                        Some(encoded) => Reply::Encoded(encoded),
                        None => {
                            Self::error(request.id, ErrorCode::Unavailable, "node is shutting down")
                        }
                    },
                    None => Self::error(request.id, ErrorCode::Internal, "no shard mesh"),
                }
            }
            Route::Remote { frame } => {
                // A thin client on the node port: forward once to a primary
                // node, over the internode link of the shard holding it.
                self.counters
                    .forwarded
                    .set(self.counters.forwarded.get() + 1);
                self.forward_remote(&topology, partition, frame, request.id)
                    .await
            }
        }
    }

    /// Sends a client request to a reachable primary of `partition` on
    /// another node and waits for its encoded reply (or `Unavailable` after
    /// twice the request timeout).
    async fn forward_remote(
        self: &Rc<Self>,
        topology: &Topology,
        partition: u32,
        frame: Bytes,
        id: u64,
    ) -> Reply {
        let me = self.node.cluster.me;
        let target = topology
            .primaries(partition)
            .iter()
            .copied()
            .find(|o| o.node != me && !topology.unreachable.contains(&o.node));
        let addr = target.and_then(|o| topology.internode_addr(o.node, o.shard));
        let (Some(target), Some(addr)) = (target, addr) else {
            return Self::error(
                id,
                ErrorCode::Unavailable,
                "no primary of the key is reachable",
            );
        };
        if self.forwards.borrow().len() >= FORWARDS_MAX {
            return Self::error(id, ErrorCode::Overloaded, "too many forwarded requests");
        }
        let token = self.next_forward.get();
        self.next_forward.set(token + 1);
        let slot = Rc::new(ForwardSlot::default());
        self.forwards.borrow_mut().insert(token, slot.clone());
        let envelope = Envelope {
            kind: KIND_CLIENT_FORWARD,
            from_node: me.0,
            from_shard: self.index as u16,
            to_shard: target.shard,
        };
        self.links.send(addr, envelope, |out| {
            out.extend_from_slice(&token.to_le_bytes());
            out.extend_from_slice(&frame);
        });
        let wait = std::future::poll_fn(|cx| match slot.reply.borrow_mut().take() {
            Some(reply) => Poll::Ready(Some(reply)),
            None => {
                *slot.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let deadline = Duration::from_millis(2 * self.config.request_timeout_ms);
        let reply = futures_lite::future::or(wait, async {
            glommio::timer::sleep(deadline).await;
            None
        })
        .await;
        self.forwards.borrow_mut().remove(&token);
        match reply {
            Some(encoded) => Reply::Encoded(encoded),
            None => Self::error(
                id,
                ErrorCode::Unavailable,
                "the node the request was forwarded to did not answer",
            ),
        }
    }

    /// Handles a frame forwarded from another shard of this node.
    async fn handle_forwarded(self: &Rc<Self>, frame: Bytes) -> Vec<u8> {
        match self.handle_frame(frame, false).await {
            Reply::Encoded(bytes) => bytes,
            reply => {
                let mut out = Vec::new();
                reply.encode(&mut out);
                out
            }
        }
    }

    /// Handles a request this shard coordinates, counting it in the metrics
    /// (operation, latency, error) and the hot keys: answered in place when
    /// it needs no I/O (a ping, the routing table, a get of a set in memory,
    /// a one-replica put the store appends at once, a bad quorum), else
    /// deferred to `handle_deferred`. Its latency counts from `began`, when
    /// its bytes were read: one clock read per read, not per request, and
    /// a request's wait behind the ones before it in a pipelined batch is
    /// part of its latency, as it is for the client.
    #[allow(clippy::result_large_err, clippy::redundant_allocation)]
    fn handle_local_now(
        &self,
        request: RequestFrame,
        partition: u32,
        topology: Rc<Arc<Topology>>,
        began: Instant,
    ) -> Result<Reply, Deferred> {
        self.metrics
            .offer_key(request.request.key().map(|k| k.as_ref()));
        let op = Op::of(&request.request);
        let id = request.id;
        let reply = match &request.request {
            Request::Ping => Reply::Response(id, Response::Pong),
            Request::GetRoutingTable => {
                Reply::Response(id, Response::RoutingTable(topology.routing.clone()))
            }
            Request::Get { key, quorum } => {
                match self.check_quorum(quorum.r, "r", topology.n_val) {
                    Ok(()) => {
                        let r = self.read_quorum(quorum.r, topology.n_val);
                        match self.get_single_now(&topology, partition, key, r) {
                            Some(set) => self.get_single_reply(&topology, partition, id, set),
                            None => {
                                return Err(Deferred {
                                    request,
                                    topology,
                                    partition,
                                    route: Route::Local { began },
                                })
                            }
                        }
                    }
                    Err(reply) => Reply::Response(id, reply),
                }
            }
            Request::Put { .. } | Request::Delete { .. } => {
                self.put_local_now(request, partition, topology, began)?
            }
        };
        self.metrics.record_in_batch(op, began, failed(&reply));
        Ok(reply)
    }

    /// Counts the requests of the batch just handled in place
    /// (`ShardMetrics::record_in_batch`); the connection calls it before it
    /// sends their replies.
    pub(crate) fn settle_batch(&self) {
        self.metrics.settle_batch();
    }

    /// A put or delete this shard coordinates (`handle_local_now`),
    /// answered with no future built when this shard is the key's only
    /// replica and the write finishes at once, as a buffered write nearly
    /// always does: the quorum checked, the context decoded, the set
    /// updated in place (`put_single_update`) and written
    /// (`put_single_now`), in the order and with the errors the machine's
    /// path would give. Deferred: a put the replica machine coordinates
    /// (`Route::Local`, then `coordinate_put`), or an in-place write that
    /// must wait (`Route::PutWaiting`).
    #[allow(clippy::result_large_err, clippy::redundant_allocation)]
    fn put_local_now(
        &self,
        request: RequestFrame,
        partition: u32,
        topology: Rc<Arc<Topology>>,
        began: Instant,
    ) -> Result<Reply, Deferred> {
        let id = request.id;
        let (quorum, delete) = match &request.request {
            Request::Put { quorum, .. } => (*quorum, false),
            Request::Delete { quorum, .. } => (*quorum, true),
            _ => unreachable!("put_local_now is given puts and deletes only"),
        };
        let quorum = match self.put_quorum(quorum, topology.n_val) {
            Ok(quorum) => quorum,
            Err(response) => return Ok(Reply::Response(id, response)),
        };
        let me = self.node.cluster.me;
        let in_place = puts_in_place(topology.primaries(partition), me, quorum);
        let route = if in_place {
            let (key, context, value) = match &request.request {
                Request::Put {
                    key,
                    value,
                    context,
                    ..
                } => (key, context.as_deref(), Some(&value[..])),
                Request::Delete { key, context, .. } => (key, Some(&context[..]), None),
                _ => unreachable!("put_local_now is given puts and deletes only"),
            };
            match self.put_in_place(&topology, partition, key, context, quorum, value) {
                Ok(result) => return Ok(put_reply(id, delete, result)),
                Err(PutDeclined::Waiting(update)) => {
                    let durable = quorum.dw >= 1;
                    let waiting = PutWaiting::new(key.clone(), partition, update, durable);
                    Route::PutWaiting {
                        began,
                        waiting: Box::new(waiting),
                    }
                }
                Err(PutDeclined::Machine) => Route::Local { began },
            }
        } else {
            Route::Local { began }
        };
        Err(Deferred {
            request,
            topology,
            partition,
            route,
        })
    }

    /// Counts a request this shard coordinated, begun at `began`.
    fn record_local(&self, op: Op, began: Instant, reply: &Reply) {
        self.metrics.record(op, began.elapsed(), failed(reply));
    }

    /// R for a get: the request's, else the configured default clamped to N.
    fn read_quorum(&self, r: Option<u8>, n: usize) -> usize {
        match r {
            Some(protocol::R_ALL) => n,
            Some(r) => usize::from(r),
            None => usize::from(self.config.r).min(n),
        }
    }

    /// The reply of a get answered by `get_single_now`.
    fn get_single_reply(
        &self,
        topology: &Topology,
        partition: u32,
        id: u64,
        set: EncodedSiblingSet,
    ) -> Reply {
        self.metrics.record_siblings(set.data_siblings());
        let me = self.node.cluster.me.0;
        Reply::Get(GetReply {
            id,
            set,
            fastest_replica: Some(fastest_replica(topology, partition, me)),
        })
    }

    /// The request's reply; `tried_now`: `handle_local_now` already found
    /// that a get cannot be answered in place. A put or delete comes here
    /// only when it is the machine's (`put_local_now` answers the rest).
    async fn handle_local_inner(
        self: &Rc<Self>,
        request: RequestFrame,
        partition: u32,
        topology: &Topology,
        tried_now: bool,
    ) -> Reply {
        let id = request.id;
        let n = topology.n_val;
        let result = match request.request {
            Request::Ping => Ok(Response::Pong),
            Request::GetRoutingTable => Ok(Response::RoutingTable(topology.routing.clone())),
            Request::Get { key, quorum } => match self.check_quorum(quorum.r, "r", n) {
                Ok(()) => {
                    let r = self.read_quorum(quorum.r, n);
                    if !tried_now {
                        if let Some(set) = self.get_single_now(topology, partition, &key, r) {
                            return self.get_single_reply(topology, partition, id, set);
                        }
                    }
                    self.coordinate_get(topology, partition, key, r).await
                }
                Err(reply) => return Reply::Response(id, reply),
            },
            Request::Put {
                key,
                value,
                context,
                quorum,
            } => match self.put_quorum(quorum, n) {
                Ok(q) => {
                    self.coordinate_put(
                        topology,
                        partition,
                        key,
                        context.as_deref(),
                        Value::Data(value),
                        q,
                    )
                    .await
                }
                Err(reply) => return Reply::Response(id, reply),
            },
            Request::Delete {
                key,
                context,
                quorum,
            } => match self.put_quorum(quorum, n) {
                Ok(q) => self
                    .coordinate_put(
                        topology,
                        partition,
                        key,
                        Some(&context),
                        Value::Tombstone,
                        q,
                    )
                    .await
                    .map(|_| Response::Delete),
                Err(reply) => return Reply::Response(id, reply),
            },
        };
        local_reply(id, result)
    }

    /// A per-request quorum may not ask for more replicas than N.
    fn check_quorum(&self, value: Option<u8>, name: &str, n: usize) -> Result<(), Response> {
        match value {
            Some(v) if v != protocol::R_ALL && usize::from(v) > n => Err(Response::Error {
                code: ErrorCode::BadRequest,
                message: format!("{name}={v} exceeds the replication factor N={n} of this cluster"),
                acks: 0,
                routing: None,
            }),
            _ => Ok(()),
        }
    }

    /// W and DW for a put: the request's, else the configured defaults
    /// clamped to the N in force.
    fn put_quorum(&self, quorum: protocol::Quorum, n: usize) -> Result<QuorumConfig, Response> {
        self.check_quorum(quorum.w, "w", n)?;
        self.check_quorum(quorum.dw, "dw", n)?;
        let w = match quorum.w {
            Some(protocol::R_ALL) => n,
            Some(w) => usize::from(w).max(1),
            None => usize::from(self.config.w).min(n),
        };
        let dw = match quorum.dw {
            Some(protocol::R_ALL) => n,
            Some(dw) => usize::from(dw),
            None => usize::from(self.config.dw).min(w),
        };
        if dw > w {
            return Err(Response::Error {
                code: ErrorCode::BadRequest,
                message: format!("dw={dw} exceeds w={w}"),
                acks: 0,
                routing: None,
            });
        }
        Ok(QuorumConfig {
            n,
            r: usize::from(self.config.r).min(n),
            w,
            dw,
        })
    }

    /// The context token of a reply: `clock` is the entries of the
    /// replied set's clock (`SiblingSet::clock_entries`, or a
    /// `VersionVector`'s), encoded without building a `VersionVector`.
    fn context_token(
        &self,
        topology: &Topology,
        partition: u32,
        clock: impl ExactSizeIterator<Item = (u64, u64)>,
        fastest: Option<u64>,
    ) -> Bytes {
        let fastest_replica = fastest.map(|node| fastest_replica(topology, partition, node));
        // Encoded into the shard's scratch buffer and copied into the token
        // chunk, whose next slice it becomes. A token lives until its reply
        // is encoded, so a chunk is freed soon after the last token cut from
        // it; a new one is allocated every `CONTEXT_CHUNK_BYTES` of tokens.
        let mut scratch = self.context_scratch.borrow_mut();
        scratch.clear();
        encode_token_into(clock, fastest_replica, &mut scratch);
        self.chunk_token(&scratch)
    }

    /// `token` copied into the token chunk, as the next slice cut from it.
    fn chunk_token(&self, token: &[u8]) -> Bytes {
        let mut chunk = self.context_chunk.borrow_mut();
        if chunk.capacity() < token.len() {
            chunk.reserve(CONTEXT_CHUNK_BYTES.max(token.len()));
        }
        chunk.extend_from_slice(token);
        chunk.split().freeze()
    }

    /// `context_token` for an in-place put's reply: held in the reply when
    /// it fits (`PutToken::Inline`), else cut from the token chunk.
    fn put_token(
        &self,
        topology: &Topology,
        partition: u32,
        clock: impl ExactSizeIterator<Item = (u64, u64)>,
        fastest: Option<u64>,
    ) -> PutToken {
        let fastest_replica = fastest.map(|node| fastest_replica(topology, partition, node));
        // A fixed buffer, not the scratch `Vec`: no growth checks. Kept in
        // the shard rather than on the stack, where zeroing its 188 bytes
        // per put cost more than the growth checks it saves.
        let mut token = self.put_token_buffer.borrow_mut();
        let len = crate::version::encode_token_to(clock, fastest_replica, &mut token);
        PutToken::new(&token[..len], |token| self.chunk_token(token))
    }

    async fn coordinate_get(
        self: &Rc<Self>,
        topology: &Topology,
        partition: u32,
        key: Bytes,
        r: usize,
    ) -> Result<Response, (ErrorCode, String, u32)> {
        let request = GetRequest {
            key,
            partition,
            preference: topology.preference(partition),
            r: Some(r),
        };
        let began = Instant::now();
        let reply = self
            .coordinate(|replica, now, id| replica.start_get(now, id, request))
            .await;
        match reply {
            ClientReply::Get {
                result: Ok(outcome),
                ..
            } => Ok(self.get_response(
                topology,
                partition,
                &outcome.siblings,
                outcome.context.clock.entries().iter().copied(),
                outcome.context.fastest_replica,
            )),
            ClientReply::Get { result: Err(e), .. } | ClientReply::Put { result: Err(e), .. } => {
                Err(replica_error(e, self.timed_out(began)))
            }
            ClientReply::Put { .. } => Err((ErrorCode::Internal, "mismatched reply".into(), 0)),
        }
    }

    /// A get whose only replica is this shard (N = 1, R = 1), answered
    /// without the replica machine when the key's set is in memory. The
    /// machine would ask this shard alone and answer with its one reply
    /// unchanged (nothing to merge, nobody to repair), with this node as the
    /// fastest replica; its bookkeeping (request tables, timers, a waiter)
    /// would be work for nothing. `None`: take the machine's path (a read
    /// that needs I/O, an unreadable set, any other quorum). The set stays
    /// encoded, checked as the decoder would check it: the reply is
    /// written from its bytes (`GetReply`).
    fn get_single_now(
        &self,
        topology: &Topology,
        partition: u32,
        key: &Bytes,
        r: usize,
    ) -> Option<EncodedSiblingSet> {
        if !self.answers_get_alone(topology, partition, key, r) {
            return None;
        }
        match self.store.get_now(Namespace::Data, partition, key)? {
            None => Some(EncodedSiblingSet::empty()),
            Some(record) => EncodedSiblingSet::validate(record.payload).ok(),
        }
    }

    /// `handle_frame_now` for a get that this shard answers alone, from the
    /// frame read in place (`protocol::ParsedRequest::get`): the request is not
    /// decoded into a `Request` (no `Bytes` of the frame or the key, whose
    /// reference counts are atomic adds and subtracts), and the reply is
    /// written into `out` while the store lends the set. `NotAlone`: the get is
    /// not this shard's to answer alone (another owner, another quorum),
    /// nothing was done, and the frame takes the usual path, which gives
    /// the same answer. `Waits`: the set needs I/O; the caller builds the
    /// request and defers it as `handle_local_now` defers it.
    fn get_in_place(
        &self,
        get: protocol::GetRef<'_>,
        hash: u128,
        topology: &Topology,
        began: Instant,
        out: &mut Vec<u8>,
    ) -> InPlace {
        let partition = ring::partition_of(hash, topology.q);
        if self.local_owner(topology, partition) != Some(self.index)
            || self
                .check_quorum(get.quorum.r, "r", topology.n_val)
                .is_err()
        {
            return InPlace::NotAlone;
        }
        let r = self.read_quorum(get.quorum.r, topology.n_val);
        if !self.answers_get_alone(topology, partition, get.key, r) {
            return InPlace::NotAlone;
        }
        // From here on as `handle_local_now`.
        self.metrics.offer_key(Some(get.key));
        if self.get_single_into(topology, partition, get.key, get.id, out) {
            self.metrics.record_in_batch(Op::Get, began, false);
            InPlace::Written
        } else {
            InPlace::Waits(partition)
        }
    }

    /// `handle_frame_now` for a put or delete that this shard writes alone
    /// and at once (`put_in_place`), from the frame read in place
    /// (`protocol::ParsedRequest::put`): no `Bytes` of the frame, the key or
    /// the value is made (their reference counts were 5% of a shard's
    /// samples under a PUT load at pipeline 16, BENCHMARKS.md §2zg). `None`:
    /// nothing was done, and the frame takes the usual path
    /// (`put_local_now`), which gives the same answer: the put is not this
    /// shard's alone (another owner or quorum), it is durable (it waits for
    /// a sync; built as usual, its wait keeps the key), the replica machine
    /// must take it, or its write must wait.
    fn put_from_frame(
        &self,
        put: protocol::PutRef<'_>,
        hash: u128,
        topology: &Topology,
        began: Instant,
    ) -> Option<Reply> {
        let partition = ring::partition_of(hash, topology.q);
        if self.local_owner(topology, partition) != Some(self.index) {
            return None;
        }
        let quorum = self.put_quorum(put.quorum, topology.n_val).ok()?;
        if quorum.dw >= 1
            || !puts_in_place(topology.primaries(partition), self.node.cluster.me, quorum)
        {
            return None;
        }
        let context = Some(put.context);
        let result = self
            .put_in_place(topology, partition, put.key, context, quorum, put.value)
            .ok()?;
        // From here on as `handle_local_now`.
        let delete = put.value.is_none();
        let reply = put_reply(put.id, delete, result);
        self.metrics.offer_key(Some(put.key));
        let op = if delete { Op::Delete } else { Op::Put };
        self.metrics.record_in_batch(op, began, failed(&reply));
        Some(reply)
    }

    /// The shard of this node that is a primary of `partition`, if any.
    fn local_owner(&self, topology: &Topology, partition: u32) -> Option<usize> {
        let me = self.node.cluster.me;
        topology
            .primaries(partition)
            .iter()
            .find(|owner| owner.node == me)
            .map(|owner| usize::from(owner.shard))
    }

    /// Whether a get with read quorum `r` is this shard's alone to answer
    /// (`get_single_now`): the partition's only replica is this node, and
    /// R = 1.
    fn answers_get_alone(&self, topology: &Topology, partition: u32, key: &[u8], r: usize) -> bool {
        let me = self.node.cluster.me;
        let single = matches!(topology.primaries(partition), [only] if only.node == me);
        single && r == 1 && key.len() <= crate::replica::KEY_BYTES_MAX
    }

    /// `get_single_now` and `get_single_reply` for a get that
    /// `answers_get_alone`, with the reply written to `out` while the store
    /// lends the set (`Store::read_now`), not built from a clone of it: a
    /// cached record's `Bytes` clone and drop are an atomic add and
    /// subtract on its buffer's count, often a CPU cache miss of their own
    /// (6% of a shard's samples under a 90% GET load of 1 KiB values,
    /// BENCHMARKS.md §2z). `false`: as `get_single_now`'s `None`, and
    /// nothing was written.
    fn get_single_into(
        &self,
        topology: &Topology,
        partition: u32,
        key: &[u8],
        id: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        let fastest = fastest_replica(topology, partition, self.node.cluster.me.0);
        let written = self
            .store
            .read_now(Namespace::Data, partition, key, |record| {
                let set = match record {
                    None => EncodedSiblingSet::empty_borrowed(),
                    Some(record) => EncodedSiblingSet::validate(&record.payload[..]).ok()?,
                };
                self.metrics.record_siblings(set.data_siblings());
                get_reply::encode(id, &set, Some(fastest), out);
                Some(())
            });
        written.flatten().is_some()
    }

    /// The client's answer to a successful get of `siblings`.
    fn get_response(
        &self,
        topology: &Topology,
        partition: u32,
        siblings: &SiblingSet,
        clock: impl ExactSizeIterator<Item = (u64, u64)>,
        fastest_replica: Option<u64>,
    ) -> Response {
        let context = self.context_token(topology, partition, clock, fastest_replica);
        let response = get_reply::response_of(siblings, context);
        if let Response::Get { siblings, .. } = &response {
            self.metrics.record_siblings(siblings.len());
        }
        response
    }

    /// A put the replica machine coordinates: any put that this shard
    /// cannot update in place (`put_local_now` tries that first).
    async fn coordinate_put(
        self: &Rc<Self>,
        topology: &Topology,
        partition: u32,
        key: Bytes,
        context: Option<&[u8]>,
        value: Value,
        quorum: QuorumConfig,
    ) -> Result<Response, (ErrorCode, String, u32)> {
        // Decoded as the in-place path decodes it (the shard's reusable
        // buffer), so that both refuse a context with the same error.
        let clock = {
            let mut clock = self.put_clock.borrow_mut();
            match context {
                None | Some([]) => clock.clear(),
                Some(bytes) => {
                    Context::decode_clock_into(bytes, &mut clock)
                        .map_err(|e| (ErrorCode::BadContext, format!("bad context: {e}"), 0))?;
                }
            }
            VersionVector::from_sorted_unchecked(clock.as_slice().to_vec())
        };
        let request = PutRequest {
            key,
            partition,
            context: clock,
            value,
            preference: topology.preference(partition),
            quorum: Some(quorum),
        };
        let began = Instant::now();
        let reply = self
            .coordinate(|replica, now, id| replica.start_put(now, id, request))
            .await;
        match reply {
            ClientReply::Put {
                result: Ok(outcome),
                ..
            } => Ok(Response::Put {
                context: self.context_token(
                    topology,
                    partition,
                    outcome.context.entries().iter().copied(),
                    Some(self.node.cluster.me.0),
                ),
            }),
            ClientReply::Get { result: Err(e), .. } | ClientReply::Put { result: Err(e), .. } => {
                Err(replica_error(e, self.timed_out(began)))
            }
            ClientReply::Get { .. } => Err((ErrorCode::Internal, "mismatched reply".into(), 0)),
        }
    }

    /// The put of `put_local_now` when this shard is the key's only
    /// replica (N = W = 1, DW <= 1): the context decoded into the shard's
    /// reusable buffer (no allocation), the set updated in place
    /// (`put_single_update`) and written (`put_single_now`). `Ok`: the
    /// put's result, a refusal of its context or of the update included.
    /// `Err`: the machine must take it (nothing was done), or the write
    /// must wait. The key and value (`None`: a delete) are borrowed, from
    /// the request or from its frame in place (`put_from_frame`).
    // The `Err` is no larger than the `Ok` (a token held inline).
    #[allow(clippy::result_large_err)]
    fn put_in_place(
        &self,
        topology: &Topology,
        partition: u32,
        key: &[u8],
        context: Option<&[u8]>,
        quorum: QuorumConfig,
        value: Option<&[u8]>,
    ) -> Result<Result<PutToken, (ErrorCode, String, u32)>, PutDeclined> {
        let update = {
            let mut clock = self.put_clock.borrow_mut();
            match context {
                None | Some([]) => clock.clear(),
                Some(bytes) => {
                    if let Err(e) = Context::decode_clock_into(bytes, &mut clock) {
                        return Ok(Err((ErrorCode::BadContext, format!("bad context: {e}"), 0)));
                    }
                }
            }
            self.put_single_update(topology, partition, key, quorum, &clock, value)
                .ok_or(PutDeclined::Machine)?
        };
        let update = match update {
            Ok(update) => update,
            Err(e) => return Ok(Err(replica_error(ReplicaError::Version(e), false))),
        };
        let durable = quorum.dw >= 1;
        self.put_single_now(partition, key, update, durable)
            .map_err(PutDeclined::Waiting)
    }

    /// The updated set of a put whose only replica is this shard (N = W = 1,
    /// DW <= 1), when it can be updated in place: the key is not locked by
    /// the replica machine and its set is in memory and readable. The
    /// machine would do exactly this update and write and then answer with
    /// its one acknowledgement; its bookkeeping (request tables, deadline
    /// timer, a waiter, a spawned task) would be work for nothing.
    /// `None`: take the machine's path (a read that needs I/O, an
    /// unreadable set, a locked key, any other quorum); `Some(Err)`: the
    /// update's refusal.
    ///
    /// The update is `version::plan_update` straight from the stored bytes
    /// into the shard's payload scratch (no decode; one allocation, the
    /// payload's own, `payload_bytes`) when the set is small enough, as it
    /// nearly always is; else
    /// `SiblingSet::decode_shared`, `update` and `encode`, which give the
    /// same bytes (`tests/version_update_plan.rs`).
    fn put_single_update(
        &self,
        topology: &Topology,
        partition: u32,
        key: &[u8],
        quorum: QuorumConfig,
        clock: &[(u64, u64)],
        value: Option<&[u8]>,
    ) -> Option<Result<InPlaceWrite, VersionError>> {
        if !puts_in_place(topology.primaries(partition), self.node.cluster.me, quorum)
            || key.len() > crate::replica::KEY_BYTES_MAX
            || self.puts_waiting.get() >= crate::replica::REQUESTS_MAX
            || self.replica.borrow().key_busy(Namespace::Data, key)
        {
            return None;
        }
        // The stored set is lent, not cloned (`Store::read_now`): nothing
        // below calls the store.
        self.store
            .read_now(Namespace::Data, partition, key, |record| {
                self.put_single_update_of(topology, partition, record, clock, value)
            })
            .flatten()
    }

    /// `put_single_update` with the stored record in hand (`None`: the key
    /// has none).
    fn put_single_update_of(
        &self,
        topology: &Topology,
        partition: u32,
        record: Option<&StoredRecord>,
        clock: &[(u64, u64)],
        value: Option<&[u8]>,
    ) -> Option<Result<InPlaceWrite, VersionError>> {
        let actor = self.replica.borrow().actor();
        let me = self.node.cluster.me.0;
        let stored = record.map(|record| &record.payload[..]);
        let mut plan = UpdatePlan::new(stored, clock, actor, value);
        let (payload, all_tombstones, context) = match plan.compute() {
            Some(Ok(())) => {
                let payload =
                    self.payload_bytes(plan.encoded_len_max(), |out| plan.encode_into(out));
                let context = self.put_token(topology, partition, plan.clock_entries(), Some(me));
                (payload, plan.is_all_tombstones(), context)
            }
            Some(Err(e)) => return Some(Err(e)),
            None => {
                // A set larger than the plan takes (rare): decoded, and
                // updated with a copy of the value.
                let mut set = match record {
                    None => SiblingSet::new(),
                    Some(record) => SiblingSet::decode_shared(&record.payload).ok()?,
                };
                let clock = VersionVector::from_sorted_unchecked(clock.to_vec());
                let value = match value {
                    Some(bytes) => Value::Data(Bytes::copy_from_slice(bytes)),
                    None => Value::Tombstone,
                };
                if let Err(e) = set.update(&clock, actor, value) {
                    return Some(Err(e));
                }
                let mut payload = Vec::with_capacity(set.encoded_len());
                set.encode(&mut payload);
                let context = self.put_token(topology, partition, set.clock_entries(), Some(me));
                (Bytes::from(payload), set.is_all_tombstones(), context)
            }
        };
        // The stored record's anti-entropy entry goes with it, so the
        // write need not read the record again for the tree.
        let old = record.map(Entry::of_record);
        Some(Ok(InPlaceWrite {
            payload,
            all_tombstones,
            context,
            old,
        }))
    }

    /// A new stored payload of at most `len_max` bytes, which `fill` writes
    /// (`exact_payload`, in the shard's reused `payload_scratch`).
    fn payload_bytes(&self, len_max: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Bytes {
        exact_payload(&mut self.payload_scratch.borrow_mut(), len_max, fill)
    }

    /// Writes an in-place put's updated set (from `put_single_update`) and
    /// answers as the machine would with its one acknowledgement, when the
    /// write finishes at once (`perform_write_now`), as nearly every one
    /// does. `Err`: nothing was written, and the update is given back to
    /// wait (`PutWaiting`, `put_single_wait`).
    #[allow(clippy::result_large_err)]
    fn put_single_now(
        &self,
        partition: u32,
        key: &[u8],
        mut update: InPlaceWrite,
        durable: bool,
    ) -> Result<Result<PutToken, (ErrorCode, String, u32)>, InPlaceWrite> {
        let write = DataWrite {
            partition,
            key,
            all_tombstones: update.all_tombstones,
            durable,
        };
        // The payload moves into the write and, if it must wait, back.
        let payload = std::mem::take(&mut update.payload);
        match self.perform_write_now(write, payload, update.old) {
            Ok(result) => Ok(put_single_reply(result, update.context)),
            Err(payload) => {
                update.payload = payload;
                Err(update)
            }
        }
    }

    /// The in-place put's write that did not finish at once. It is polled
    /// once in place; one that waits (a flush, a group commit) runs on in a
    /// task holding the machine's lock on the key, and the client is
    /// answered with the machine's quorum failure if it is not done by the
    /// request deadline (the write still completes, as in the machine).
    async fn put_single_wait(
        self: &Rc<Self>,
        waiting: PutWaiting,
    ) -> Result<PutToken, (ErrorCode, String, u32)> {
        let PutWaiting {
            key,
            io,
            old,
            context,
            durable,
        } = waiting;
        let reply = move |result: IoResult| put_single_reply(result, context);
        let shard = self.clone();
        let spare = self.write_spare.borrow_mut().take();
        let mut write = reboxed(spare, async move { shard.perform_write(io, old).await });
        let mut cx = std::task::Context::from_waker(Waker::noop());
        if let Poll::Ready(result) = std::future::Future::poll((*write).as_mut(), &mut cx) {
            *self.write_spare.borrow_mut() = Some(write);
            return reply(result);
        }
        let write = *write;
        // The write waits. Nothing ran between the caller's check that the
        // key is unlocked and here (one thread, no await), so the lock is
        // free; machine work on the key queues behind it until it is done.
        let lock = self
            .replica
            .borrow_mut()
            .lock_key(Namespace::Data, key)
            .expect("the key was unlocked when the put began");
        let waiter: Rc<Waiter<IoResult>> = Rc::new(Waiter::default());
        let done = waiter.clone();
        let shard = self.clone();
        let task = async move {
            let result = write.await;
            shard.puts_waiting.set(shard.puts_waiting.get() - 1);
            shard.replica.borrow_mut().unlock_key(lock);
            shard.pump();
            *done.reply.borrow_mut() = Some(result);
            if let Some(waker) = done.waker.borrow_mut().take() {
                waker.wake();
            }
        };
        self.puts_waiting.set(self.puts_waiting.get() + 1);
        match glommio::spawn_local_into(task, self.sched.foreground) {
            Ok(task) => {
                task.detach();
            }
            Err(e) => {
                // As in `start_io`: not expected while the shard runs; the
                // write (and the key's lock) are lost with the task.
                self.puts_waiting.set(self.puts_waiting.get() - 1);
                log::warning!(error = %e, "cannot spawn storage task");
                let error = format!("cannot spawn storage task: {e}");
                return Err(replica_error(ReplicaError::Storage(error), false));
            }
        }
        let wait = std::future::poll_fn(|cx| match waiter.reply.borrow_mut().take() {
            Some(result) => Poll::Ready(Some(result)),
            None => {
                *waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let deadline = Duration::from_millis(self.config.request_timeout_ms);
        let result = futures_lite::future::or(wait, async {
            glommio::timer::sleep(deadline).await;
            None
        })
        .await;
        match result {
            Some(result) => reply(result),
            None => {
                let failed = ReplicaError::PutQuorumFailed {
                    acks: 0,
                    durable_acks: 0,
                    w: 1,
                    dw: usize::from(durable),
                };
                Err(replica_error(failed, true))
            }
        }
    }

    /// Whether a request that began then has reached its deadline: a quorum
    /// failure at the deadline is a `Timeout` (replicas did not answer in
    /// time), one before it a `QuorumFailed` (no replica left to ask).
    fn timed_out(&self, began: Instant) -> bool {
        began.elapsed() >= Duration::from_millis(self.config.request_timeout_ms)
    }

    /// Starts a client request on the replica machine and waits for its reply.
    async fn coordinate(
        self: &Rc<Self>,
        start: impl FnOnce(&mut Replica, u64, u64),
    ) -> ClientReply {
        let id = self.next_client_id.get();
        self.next_client_id.set(id + 1);
        let waiter = Rc::new(Waiter::default());
        self.waiters.borrow_mut().insert(id, waiter.clone());
        self.sync_reachability();
        start(&mut self.replica.borrow_mut(), self.now_ms(), id);
        self.pump();
        std::future::poll_fn(|cx| match waiter.reply.borrow_mut().take() {
            Some(reply) => Poll::Ready(reply),
            None => {
                *waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Tells the replica machine what the failure detector believes now.
    fn sync_reachability(&self) {
        let topology = self.topology();
        if topology.version == self.seen_topology.get() {
            return;
        }
        self.seen_topology.set(topology.version);
        let mut replica = self.replica.borrow_mut();
        for (id, _) in &topology.members {
            replica.set_reachable(*id, !topology.unreachable.contains(id));
        }
    }

    /// Drains every output of the replica machine: storage requests run as
    /// tasks (each feeds its result back and pumps again), messages go out
    /// on the internode links, replies wake their waiters, timeouts go to
    /// the failure detector.
    pub(crate) fn pump(self: &Rc<Self>) {
        if self.pumping.get() {
            // The running pump drains whatever this caller added.
            return;
        }
        self.pumping.set(true);
        self.pump_outputs();
        self.pumping.set(false);
    }

    /// Drains the machine's outputs one at a time (no lists collected per
    /// pass), until a pass finds none: handling one output can queue more.
    fn pump_outputs(self: &Rc<Self>) {
        loop {
            let mut idle = true;
            loop {
                let io = self.replica.borrow_mut().poll_io();
                let Some(io) = io else { break };
                idle = false;
                self.start_io(io);
            }
            let mut topology = None;
            loop {
                let transmit = self.replica.borrow_mut().poll_transmit();
                let Some(transmit) = transmit else { break };
                idle = false;
                let topology = topology.get_or_insert_with(|| self.topology());
                self.send_replica(topology, transmit);
            }
            loop {
                let reply = self.replica.borrow_mut().poll_reply();
                let Some(reply) = reply else { break };
                idle = false;
                let id = match &reply {
                    ClientReply::Put { id, .. } | ClientReply::Get { id, .. } => *id,
                };
                let waiter = self.waiters.borrow_mut().remove(&id);
                if let Some(waiter) = waiter {
                    *waiter.reply.borrow_mut() = Some(reply);
                    if let Some(waker) = waiter.waker.borrow_mut().take() {
                        waker.wake();
                    }
                }
            }
            loop {
                let peer = self.replica.borrow_mut().poll_peer_timeout();
                let Some(peer) = peer else { break };
                idle = false;
                self.node.cluster.report_failure(peer);
            }
            if idle {
                let hints = self.replica.borrow().hint_count();
                self.node.cluster.hints[self.index].store(hints, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Runs one storage request of the replica machine: a data read the
    /// store answers from memory at once (most of them: the read cache and
    /// the write buffer), anything else in a task that feeds its result
    /// back and pumps again.
    fn start_io(self: &Rc<Self>, io: IoRequest) {
        let io = match io {
            IoRequest::Read {
                namespace: Namespace::Data,
                ..
            } => match crate::replica::perform_io_now(&self.store, io) {
                Ok((id, result)) => {
                    self.replica
                        .borrow_mut()
                        .handle_io_done(self.now_ms(), id, result);
                    return;
                }
                Err(io) => io,
            },
            io => io,
        };
        // A buffered write usually completes without waiting (it appends to
        // the write buffer): it is polled once here, and spawned as a task
        // only if it does wait (a flush of a full buffer, a segment
        // rotation). The futures it can wait on register the waker of every
        // poll, so the task's first poll (with the real waker) re-arms them.
        let inline = matches!(io, IoRequest::Write { durable: false, .. });
        let id = io.id();
        let shard = self.clone();
        let queue = self.io_queue(&io);
        let mut task = Box::pin(async move {
            let (id, result) = shard.perform(io).await;
            shard
                .replica
                .borrow_mut()
                .handle_io_done(shard.now_ms(), id, result);
            shard.pump();
        });
        if inline {
            let mut cx = std::task::Context::from_waker(Waker::noop());
            if std::future::Future::poll(task.as_mut(), &mut cx).is_ready() {
                return;
            }
        }
        match glommio::spawn_local_into(task, queue) {
            Ok(task) => {
                task.detach();
            }
            Err(e) => {
                // Not expected while the shard runs. The machine is told the
                // I/O failed, so nothing waits on an answer that cannot come
                // (a client op fails now rather than at its deadline; a hint
                // replay goes back to idle and is retried).
                log::warning!(error = %e, "cannot spawn storage task");
                let failed = IoResult::Failed(format!("cannot spawn storage task: {e}"));
                self.replica
                    .borrow_mut()
                    .handle_io_done(self.now_ms(), id, failed);
            }
        }
    }

    /// The task queue a storage request runs in, counting hint traffic: hint
    /// replay's reads, deletes and listing are background work (§8); a
    /// fallback storing a hint for a waiting client (its read of the held
    /// hint, then its write) is not.
    fn io_queue(&self, io: &IoRequest) -> glommio::TaskQueueHandle {
        match io {
            IoRequest::Write {
                namespace: Namespace::Hint,
                ..
            } => {
                ShardMetrics::bump(&self.metrics.hints_stored, 1);
                self.sched.foreground
            }
            IoRequest::Delete {
                namespace: Namespace::Hint,
                ..
            } => {
                ShardMetrics::bump(&self.metrics.hints_replayed, 1);
                self.sched.count(Job::HintReplay, 1);
                self.sched.background
            }
            IoRequest::Read {
                io,
                namespace: Namespace::Hint,
                ..
            }
            | IoRequest::ListHints { io } => {
                if self.replica.borrow().is_hint_replay_io(*io) {
                    self.sched.count(Job::HintReplay, 1);
                    self.sched.background
                } else {
                    self.sched.foreground
                }
            }
            _ => self.sched.foreground,
        }
    }

    /// Hands a replica message from another node to the replica machine
    /// (the inbox task calls this for handoff and hint-replay messages).
    pub(crate) fn deliver_replica(self: &Rc<Self>, from: NodeId, message: ReplicaMessage) {
        self.sync_reachability();
        self.replica
            .borrow_mut()
            .handle_message(self.now_ms(), from, message);
        self.pump();
    }

    /// Publishes this shard's metrics snapshot when a scrape asked for one
    /// or the last one is a second old (called on the replica tick).
    fn publish_metrics(&self) {
        let now = Instant::now();
        let hub = &self.node.metrics;
        let Some(generation) = self.metrics.publish_due(hub, now) else {
            return;
        };
        let snapshot = self.metrics.snapshot(
            self.index,
            self.store.stats(),
            self.replica.borrow().hint_count(),
            self.replica.borrow().riders_total(),
            self.counters.connections.get(),
            self.counters.forwarded.get(),
            self.sched.inbox_accepted(),
            self.sched.snapshot(),
            self.aae.borrow().stats().clone(),
        );
        self.metrics.publish(hub, generation, now, snapshot);
    }

    /// Runs one storage request of the replica machine on this shard's store.
    async fn perform(&self, io: IoRequest) -> (u64, IoResult) {
        let io = super::chaos_hooks::maybe_last_write_wins(io);
        // Data writes keep this shard's anti-entropy trees in step.
        let (id, result) = perform_io_observed(&self.store, &self.aae, || self.now_ms(), io).await;
        // The replica layer carries storage failures as text; the code for
        // the client is recovered from it in `replica_error`.
        let result = result.unwrap_or_else(|e| {
            let (code, text) = storage_error(e);
            IoResult::Failed(format!("{}: {text}", code.name()))
        });
        (id, result)
    }

    /// Runs a data write of this shard's own (an in-place put) whose key's
    /// stored entry `old` was read just before, with no await in between.
    async fn perform_write(&self, io: IoRequest, old: Option<Entry>) -> IoResult {
        let io = super::chaos_hooks::maybe_last_write_wins(io);
        let (_, result) =
            perform_write_observed(&self.store, &self.aae, || self.now_ms(), io, old).await;
        result.unwrap_or_else(|e| {
            let (code, text) = storage_error(e);
            IoResult::Failed(format!("{}: {text}", code.name()))
        })
    }

    /// `perform_write` when the store's write finishes without waiting
    /// (`antientropy::write_observed_now`); `Err(payload)`: nothing was
    /// done, await `perform_write` instead (`PutWaiting`).
    fn perform_write_now(
        &self,
        write: DataWrite<'_>,
        payload: Bytes,
        old: Option<Entry>,
    ) -> Result<IoResult, Bytes> {
        let payload = super::chaos_hooks::maybe_last_write_wins_payload(payload);
        let now = || self.now_ms();
        let result = write_observed_now(&self.store, &self.aae, now, write, payload, old)?;
        Ok(result.unwrap_or_else(|e| {
            let (code, text) = storage_error(e);
            IoResult::Failed(format!("{}: {text}", code.name()))
        }))
    }

    /// Sends a replica message to the shard of its target node that holds
    /// the partition (requests) or that sent the request (answers).
    fn send_replica(&self, topology: &Topology, transmit: Transmit) {
        let to = handoff::real_node(transmit.to);
        let shards = topology.book.get(&to).map_or(1, |e| e.shards);
        let to_shard = match &transmit.message {
            ReplicaMessage::PutReplica { partition, .. }
            | ReplicaMessage::GetReplica { partition, .. }
            | ReplicaMessage::HintReplay { partition, .. } => topology
                .shard_on(to, *partition)
                .unwrap_or((*partition % u32::from(shards)) as u16),
            ReplicaMessage::PutAck { req, .. }
            | ReplicaMessage::GetReply { req, .. }
            | ReplicaMessage::HintAck { req } => shard_of_request(*req, shards),
        };
        let Some(addr) = topology.internode_addr(to, to_shard) else {
            // No address known yet: as if the network lost it; the replica
            // layer times out and moves on.
            return;
        };
        let envelope = Envelope {
            kind: KIND_REPLICA,
            from_node: self.node.cluster.me.0,
            from_shard: self.index as u16,
            to_shard,
        };
        self.links
            .send(addr, envelope, |out| transmit.message.encode(out));
    }

    /// Feeds `handle_timeout` and refreshes reachability, on a short tick.
    async fn replica_loop(self: Rc<Self>) {
        let tick = Duration::from_millis(10);
        while !self.shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(tick).await;
            self.publish_metrics();
            self.sync_reachability();
            let now = self.now_ms();
            let due = self
                .replica
                .borrow()
                .poll_timeout()
                .is_some_and(|t| t <= now);
            if due {
                // Hint replay starts at the background share's pace
                // (design guide §8), decided in the machine before any
                // replay deadline is set.
                let share = self.sched.rate_fraction();
                let mut replica = self.replica.borrow_mut();
                replica.set_background_share(share);
                let deferred = replica.hint_replays_deferred();
                replica.handle_timeout(now);
                self.sched
                    .count_deferred(Job::HintReplay, replica.hint_replays_deferred() - deferred);
            }
            self.pump();
        }
    }

    /// Shard 0: ticks the membership machine (gossip, heartbeats, failure
    /// detection) a few times per gossip interval.
    async fn membership_loop(self: Rc<Self>) {
        let tick = Duration::from_millis((self.config.gossip_interval_ms / 4).clamp(5, 250));
        while !self.shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(tick).await;
            let now = self.now_ms();
            if let Some(driver) = self.membership.borrow_mut().as_mut() {
                driver.tick(now);
            }
        }
    }

    fn admin(&self, payload: &[u8]) -> Result<String, String> {
        let (&op, rest) = payload.split_first().ok_or("empty admin request")?;
        let (&json, rest) = rest.split_first().ok_or("short admin request")?;
        let json = json != 0;
        let argument = std::str::from_utf8(rest).map_err(|_| "admin argument is not UTF-8")?;
        let cluster = &self.node.cluster;
        match op {
            ADMIN_STATUS => {
                let mut shards: Vec<_> = self
                    .node
                    .metrics
                    .latest()
                    .iter()
                    .map(|s| (s.shard, s.scheduler.clone()))
                    .collect();
                shards.sort_by_key(|(i, _)| *i);
                let scheduler = super::scheduler::status_text(&shards, json);
                let text = cluster::status_text(cluster, json);
                Ok(if json {
                    // Append the scheduler as one more top-level field.
                    let body = text
                        .trim_end()
                        .strip_suffix('}')
                        .unwrap_or(&text)
                        .to_string();
                    format!("{body}, \"scheduler\": {scheduler}}}")
                } else {
                    format!("{text}scheduler (shares; work done/deferred per job):\n{scheduler}")
                })
            }
            ADMIN_HOTKEYS => Ok(metrics::hotkeys_text(&self.node.metrics.latest(), json)),
            ADMIN_RING => Ok(cluster::ring_text(cluster, json)),
            ADMIN_AAE => Ok(super::aae::aae_text(&self.node, json)),
            ADMIN_JOIN => {
                let member: SocketAddr = argument
                    .parse()
                    .map_err(|_| format!("bad cluster member address '{argument}'"))?;
                let mut driver = self.membership.borrow_mut();
                let driver = driver.as_mut().ok_or("admin requests go to shard 0")?;
                driver.push_to(member);
                Ok(format!(
                    "asked {member} for the cluster state; the join spreads by gossip"
                ))
            }
            ADMIN_LEAVE | ADMIN_WEIGHT => {
                let options = AdminOptions::parse(argument)?;
                let mut driver = self.membership.borrow_mut();
                let driver = driver.as_mut().ok_or("admin requests go to shard 0")?;
                let node = match options.target {
                    None => cluster.me,
                    Some(addr) => driver
                        .member_at(addr)
                        .ok_or_else(|| format!("no member has internode address {addr}"))?,
                };
                let change = if op == ADMIN_LEAVE {
                    AdminChange::Leave { node }
                } else {
                    AdminChange::SetCapacity {
                        node,
                        weight: options.weight.ok_or("admin weight needs a weight")?,
                    }
                };
                if options.stage {
                    return super::staging::stage(driver, change);
                }
                driver.admin(change)?;
                Ok(if op == ADMIN_LEAVE {
                    format!(
                        "{node:?} is leaving: it owns no partitions in the next ring, hands its data off, then leaves the member list"
                    )
                } else {
                    format!("{node:?} has a new weight; partitions move to match it")
                })
            }
            ADMIN_PLAN | ADMIN_COMMIT | ADMIN_CLEAR => {
                let mut driver = self.membership.borrow_mut();
                let driver = driver.as_mut().ok_or("admin requests go to shard 0")?;
                match op {
                    ADMIN_PLAN => Ok(super::staging::plan_text(driver, cluster, json)),
                    ADMIN_COMMIT => super::staging::commit(driver),
                    _ => Ok(super::staging::clear(driver)),
                }
            }
            ADMIN_WHERE => Ok(super::staging::where_text(cluster, argument, json)),
            ADMIN_JOIN_INFO | ADMIN_STAGE_JOIN => {
                let mut driver = self.membership.borrow_mut();
                let driver = driver.as_mut().ok_or("admin requests go to shard 0")?;
                if op == ADMIN_JOIN_INFO {
                    super::staging::join_info_text(driver, cluster)
                } else {
                    super::staging::stage_join(driver, argument)
                }
            }
            other => Err(format!("unknown admin operation {other}")),
        }
    }

    /// Flushes the write buffer once it has waited `flush_interval_us`. A
    /// clean store arms no flush timer: the loop sleeps until the next
    /// append (an idle shard used to wake a thousand times a second), waking
    /// ten times a second only to notice shutdown.
    async fn flush_loop(self: Rc<Self>) {
        let interval = Duration::from_micros(self.config.flush_interval_us.max(100));
        while !self.shutdown.load(Ordering::Relaxed) {
            if !event_or_tick(self.store.wait_dirty()).await {
                continue;
            }
            // The first `flush_due` that sees the buffer dirty starts its
            // interval; the second, one interval later, says to flush.
            if !self.store.flush_due(Instant::now()) {
                glommio::timer::sleep(interval).await;
                if !self.store.flush_due(Instant::now()) {
                    continue;
                }
            }
            // Does not wait for (or pad behind) writes that full buffers
            // already have in flight (`Store::flush_for_interval`).
            if let Err(e) = self.store.flush_for_interval(Instant::now()).await {
                log::warning!(error = %e, "write-buffer flush failed");
                // The buffer stays dirty: try again one interval later, not at once.
                glommio::timer::sleep(interval).await;
            }
        }
    }

    /// Creates the next segment's file ahead of the rotation that will use it
    /// (`Store::prepare_next_segment`): a rotation, which the shard's writers wait
    /// for, then only flushes and syncs the sealed segment. Little CPU (three
    /// system calls), so it runs in the foreground queue and is ready long before
    /// the active segment fills.
    async fn segment_loop(self: Rc<Self>) {
        while !self.shutdown.load(Ordering::Relaxed) {
            if !event_or_tick(self.store.next_segment_wanted()).await
                || self.shutdown.load(Ordering::Relaxed)
            {
                continue;
            }
            if let Err(e) = self.store.prepare_next_segment().await {
                // The rotation creates the file itself and reports what fails there.
                log::warning!(error = %e, "preparing the next segment failed");
                glommio::timer::sleep(Duration::from_secs(10)).await;
            }
        }
    }

    /// Compaction in bounded steps, rate-limited, in the background queue so
    /// foreground requests always win (§6.5).
    async fn compaction_loop(self: Rc<Self>) {
        // Small steps: each is one turn of the background queue, and the
        // scheduler paces them against the (share-scaled) byte rate.
        let step_bytes: u64 = 256 << 10;
        while !self.shutdown.load(Ordering::Relaxed) {
            match self.store.compact_step(step_bytes).await {
                Ok(progress) if progress.more => {
                    self.sched
                        .pace(Job::Compaction, progress.bytes_examined.max(1))
                        .await
                }
                Ok(_) => glommio::timer::sleep(Duration::from_secs(1)).await,
                Err(e) => {
                    log::warning!(error = %e, "compaction failed");
                    glommio::timer::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    }
}

/// Admin operations (the first payload byte of an admin request).
pub(crate) const ADMIN_STATUS: u8 = 1;
pub(crate) const ADMIN_RING: u8 = 2;
pub(crate) const ADMIN_JOIN: u8 = 3;
pub(crate) const ADMIN_LEAVE: u8 = 4;
/// (Numbered apart from the others so concurrent additions do not collide.)
pub(crate) const ADMIN_HOTKEYS: u8 = 20;
pub(crate) const ADMIN_WEIGHT: u8 = 5;
pub(crate) const ADMIN_PLAN: u8 = 6;
pub(crate) const ADMIN_COMMIT: u8 = 7;
pub(crate) const ADMIN_CLEAR: u8 = 8;
pub(crate) const ADMIN_WHERE: u8 = 9;

/// The argument of `ADMIN_LEAVE` and `ADMIN_WEIGHT`: space-separated
/// `target=IP:PORT` (another member, by internode address; default this
/// node), `weight=W`, and `stage`.
#[derive(Debug, Default)]
struct AdminOptions {
    target: Option<SocketAddr>,
    weight: Option<u32>,
    stage: bool,
}

impl AdminOptions {
    fn parse(text: &str) -> Result<AdminOptions, String> {
        let mut options = AdminOptions::default();
        for word in text.split_whitespace() {
            match word.split_once('=') {
                Some(("target", addr)) => {
                    options.target = Some(
                        addr.parse()
                            .map_err(|_| format!("bad member address '{addr}'"))?,
                    );
                }
                Some(("weight", weight)) => {
                    let weight: u32 = weight
                        .parse()
                        .map_err(|_| format!("bad weight '{weight}'"))?;
                    if weight == 0 {
                        return Err("weight must be >= 1 (use leave to drain a node)".into());
                    }
                    options.weight = Some(weight);
                }
                None if word == "stage" => options.stage = true,
                _ => return Err(format!("unknown admin option '{word}'")),
            }
        }
        Ok(options)
    }
}
pub(crate) const ADMIN_AAE: u8 = 21;
/// A node's description for a staged join (asked of the joining node).
pub(crate) const ADMIN_JOIN_INFO: u8 = 30;
/// Stage the join of the node described (asked of a member).
pub(crate) const ADMIN_STAGE_JOIN: u8 = 31;

impl InboundHandler for ShardState {
    fn handle(self: &Rc<Self>, envelope: Envelope, payload: Bytes) -> Option<Vec<u8>> {
        let from = NodeId(envelope.from_node);
        match envelope.kind {
            KIND_REPLICA => {
                // Bad bytes from a peer are dropped; the sender times out.
                let message = ReplicaMessage::decode(&payload).ok()?;
                match &message {
                    // Acknowledged handoff transfers are counted by the
                    // handoff loop, not the replica machine.
                    ReplicaMessage::PutAck { req, .. } if req & handoff::HANDOFF_REQ_BIT != 0 => {
                        self.handoff_acked(*req);
                        return None;
                    }
                    _ => {}
                }
                let from = match &message {
                    // A partition moving between two shards of this node is
                    // handed off over the node's own internode port; the
                    // replica machine sees a stand-in sender.
                    ReplicaMessage::PutReplica { req, .. }
                        if req & handoff::HANDOFF_REQ_BIT != 0 && from == self.node.cluster.me =>
                    {
                        handoff::local_peer(from)
                    }
                    _ if from == self.node.cluster.me => return None,
                    _ => from,
                };
                let q = self.topology().q;
                match &message {
                    ReplicaMessage::PutReplica { partition, .. }
                    | ReplicaMessage::GetReplica { partition, .. }
                    | ReplicaMessage::HintReplay { partition, .. }
                        if *partition >= q =>
                    {
                        return None;
                    }
                    _ => {}
                }
                // The receiving side of hint replay and partition handoff
                // waits for the background queue (bounded inbox, §8);
                // handoff requests carry ids with bit 39 set.
                let background = match &message {
                    ReplicaMessage::HintReplay { .. } => true,
                    ReplicaMessage::PutReplica { req, .. } => req & (1 << 39) != 0,
                    _ => false,
                };
                if background {
                    self.sched.admit(from, message);
                    return None;
                }
                self.deliver_replica(from, message);
                None
            }
            KIND_CLIENT_FORWARD => {
                if payload.len() < 8 {
                    return None;
                }
                let token = u64::from_le_bytes(payload[..8].try_into().ok()?);
                let frame = payload.slice(8..);
                let from_shard = envelope.from_shard;
                let shard = self.clone();
                glommio::spawn_local(async move {
                    // Forwarded once: handled as if it came on a shard port.
                    let reply = shard.handle_forwarded(frame).await;
                    let topology = shard.topology();
                    let Some(addr) = topology.internode_addr(from, from_shard) else {
                        return;
                    };
                    let envelope = Envelope {
                        kind: KIND_CLIENT_REPLY,
                        from_node: shard.node.cluster.me.0,
                        from_shard: shard.index as u16,
                        to_shard: from_shard,
                    };
                    shard.links.send(addr, envelope, |out| {
                        out.extend_from_slice(&token.to_le_bytes());
                        out.extend_from_slice(&reply);
                    });
                })
                .detach();
                None
            }
            KIND_CLIENT_REPLY => {
                if payload.len() < 8 {
                    return None;
                }
                let token = u64::from_le_bytes(payload[..8].try_into().ok()?);
                if let Some(slot) = self.forwards.borrow_mut().remove(&token) {
                    *slot.reply.borrow_mut() = Some(payload[8..].to_vec());
                    if let Some(waker) = slot.waker.borrow_mut().take() {
                        waker.wake();
                    }
                }
                None
            }
            KIND_AAE => {
                self.handle_aae(from, &payload);
                None
            }
            KIND_MEMBERSHIP => {
                let now = self.now_ms();
                if let Some(driver) = self.membership.borrow_mut().as_mut() {
                    driver.handle_gossip(now, from, &payload);
                }
                None
            }
            KIND_ADMIN_REQUEST => {
                let (ok, text) = match self.admin(&payload) {
                    Ok(text) => (1u8, text),
                    Err(text) => (0u8, text),
                };
                let mut out = Vec::new();
                let envelope = Envelope {
                    kind: KIND_ADMIN_RESPONSE,
                    from_node: self.node.cluster.me.0,
                    from_shard: self.index as u16,
                    to_shard: 0,
                };
                internode::encode_frame(&mut out, envelope, |out| {
                    out.push(ok);
                    out.extend_from_slice(text.as_bytes());
                });
                Some(out)
            }
            _ => None,
        }
    }
}

/// `future` pinned in the box of `spare` when that holds a finished future
/// of the same type (`ShardState::write_spare`), else in a new box.
fn reboxed<F: std::future::Future + 'static>(
    spare: Option<Box<dyn std::any::Any>>,
    future: F,
) -> Box<std::pin::Pin<Box<F>>> {
    match spare.and_then(|spare| spare.downcast::<std::pin::Pin<Box<F>>>().ok()) {
        Some(mut spare) => {
            spare.set(future);
            spare
        }
        None => Box::new(Box::pin(future)),
    }
}

/// The store settings a shard opens its store with, from the server's.
/// (A stored value is its sibling set: the limit leaves room for a set's
/// clock and siblings around the largest accepted value.)
fn store_config(config: &ServerConfig) -> StoreConfig {
    StoreConfig {
        max_key_bytes: config.key_bytes_max,
        max_value_bytes: config.value_bytes_max + 64 * 1024,
        segment_size_bytes: config.segment_size_bytes,
        write_buffer_bytes: config.write_buffer_bytes,
        flush_interval: Duration::from_micros(config.flush_interval_us),
        flushes_in_flight_max: config.flushes_in_flight_max,
        prewrite_bytes: config.prewrite_bytes,
        read_cache_bytes: config.read_cache_bytes,
        compaction_dead_fraction: config.compaction_dead_fraction,
        compaction_from_index: config.compaction_from_index,
        ..StoreConfig::default()
    }
}

/// Whether a put with `quorum` on a partition with these primaries is this
/// node's to update in place (`ShardState::put_single_update`): this node is
/// the only replica and the machine would wait for its write alone (N = W =
/// 1, DW <= 1). Every other put needs the machine's fan-out and counting.
fn puts_in_place(primaries: &[ring::VnodeOwner], me: NodeId, quorum: QuorumConfig) -> bool {
    matches!(primaries, [only] if only.node == me)
        && quorum.n == 1
        && quorum.w == 1
        && quorum.dw <= 1
}

/// The context's name for the fastest reader, `node`: (node << 32 | shard),
/// with the shard of that node which holds the partition.
fn fastest_replica(topology: &Topology, partition: u32, node: u64) -> u64 {
    let shard = topology.shard_on(NodeId(node), partition).unwrap_or(0);
    (node << 32) | u64::from(shard)
}

/// A replica-layer failure as a client error: code, message, acks.
fn replica_error(e: ReplicaError, timed_out: bool) -> (ErrorCode, String, u32) {
    let message = e.to_string();
    let quorum_code = if timed_out {
        ErrorCode::Timeout
    } else {
        ErrorCode::QuorumFailed
    };
    match e {
        ReplicaError::PutQuorumFailed { acks, .. } => (quorum_code, message, acks as u32),
        ReplicaError::GetQuorumFailed { replies, .. } => (quorum_code, message, replies as u32),
        ReplicaError::NotAPrimary { .. } => (ErrorCode::WrongOwner, message, 0),
        ReplicaError::InvalidRequest(_) => (ErrorCode::BadRequest, message, 0),
        ReplicaError::Overloaded => (ErrorCode::Overloaded, message, 0),
        // The version layer's message already says how to resolve it.
        ReplicaError::Version(VersionError::SiblingsOverflow { .. }) => {
            (ErrorCode::TooManySiblings, message, 0)
        }
        ReplicaError::Version(_) => (ErrorCode::BadContext, format!("bad context: {message}"), 0),
        ReplicaError::Storage(text) => {
            let code = [
                ErrorCode::StorageFull,
                ErrorCode::KeyTooLarge,
                ErrorCode::ValueTooLarge,
            ]
            .into_iter()
            .find(|code| text.starts_with(code.name()))
            .unwrap_or(ErrorCode::StorageFailed);
            (code, message, 0)
        }
    }
}

fn storage_error(e: StorageError) -> (ErrorCode, String) {
    let code = match &e {
        StorageError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
        StorageError::ValueTooLarge { .. } | StorageError::RecordTooLarge { .. } => {
            ErrorCode::ValueTooLarge
        }
        StorageError::DiskFull => ErrorCode::StorageFull,
        StorageError::Failed => ErrorCode::StorageFailed,
        _ => ErrorCode::Internal,
    };
    (code, format!("storage: {e}"))
}

/// Accepting on a listener: used by `conn`.
pub(crate) fn connection_allowed(shard: &ShardState) -> bool {
    shard.counters.connections.get() < shard.config.connections_max
}

/// A new stored payload of at most `len_max` bytes, which `fill` writes at
/// the start of the slice it is given, returning their number. `fill`
/// writes into `scratch` (reused, so in the CPU's caches and zeroed once),
/// and the payload is then copied into an allocation of exactly its length
/// that it owns alone. A payload past `PAYLOAD_SCRATCH_BYTES` is written in
/// its own allocation, cut to its length.
///
/// Why a copy, not a slice of a shared chunk (how this was until
/// 2026-11-24): the read cache keeps the payload, and a slice keeps its
/// whole chunk alive. An overwritten key's payload leaves the cache at
/// once, but its chunk lived on while any other payload cut from it was
/// cached, so a node whose keys were all cached held about ln(payloads per
/// chunk) + 0.6 times their bytes (4.7x for 1 KiB values in 64 KiB chunks:
/// RSS 570 MB where 135 MB held the same keys after loading), past the
/// bound `read_cache_bytes` promises (BENCHMARKS.md §2z).
fn exact_payload(
    scratch: &mut Vec<u8>,
    len_max: usize,
    fill: impl FnOnce(&mut [u8]) -> usize,
) -> Bytes {
    if len_max > PAYLOAD_SCRATCH_BYTES {
        let mut payload = vec![0; len_max];
        let len = fill(&mut payload);
        payload.truncate(len);
        // `Bytes::from` a vector with spare capacity would keep all of it.
        payload.shrink_to_fit();
        return Bytes::from(payload);
    }
    if scratch.len() < len_max {
        scratch.resize(len_max, 0);
    }
    let len = fill(&mut scratch[..len_max]);
    Bytes::copy_from_slice(&scratch[..len])
}

/// Whether a reply counts as an error in the metrics.
fn failed(reply: &Reply) -> bool {
    matches!(reply, Reply::Response(_, Response::Error { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an in-place put hands the read cache holds no memory but its
    /// own bytes: nothing else shares its allocation (a slice of a shared
    /// chunk would keep the whole chunk alive), and the allocation is
    /// exactly its length, below and above the scratch's bound.
    #[test]
    fn a_payload_owns_an_allocation_of_its_own_length() {
        let mut scratch = Vec::new();
        for (len_max, len) in [
            (1, 1),
            (100, 60),
            (1100, 1090),
            (PAYLOAD_SCRATCH_BYTES, PAYLOAD_SCRATCH_BYTES - 3),
            (PAYLOAD_SCRATCH_BYTES + 1, PAYLOAD_SCRATCH_BYTES - 100),
            (100_000, 70_000),
        ] {
            let mut payloads = Vec::new();
            for round in 0..3u8 {
                let payload = exact_payload(&mut scratch, len_max, |out| {
                    assert_eq!(out.len(), len_max);
                    out[..len].fill(round);
                    len
                });
                assert_eq!(payload.len(), len);
                assert!(payload.iter().all(|&b| b == round));
                payloads.push(payload);
            }
            for payload in payloads {
                assert!(
                    payload.is_unique(),
                    "{len_max}/{len}: shares its allocation"
                );
                let owned = Vec::from(payload);
                assert_eq!(
                    owned.capacity(),
                    len,
                    "{len_max}/{len}: allocation past its length"
                );
            }
        }
    }

    #[test]
    fn the_store_gets_the_servers_storage_options() {
        let mut config = ServerConfig::default();
        for (name, value) in [
            ("key_bytes_max", "300"),
            ("value_bytes_max", "5000"),
            ("segment_size_bytes", "8388608"),
            ("write_buffer_bytes", "131072"),
            ("flush_interval_us", "2500"),
            ("flushes_in_flight_max", "5"),
            ("prewrite_bytes", "65536"),
            ("read_cache_bytes", "268435456"),
            ("compaction_dead_fraction", "0.25"),
            ("compaction_from_index", "false"),
        ] {
            config.set(name, value).unwrap();
        }
        let store = store_config(&config);
        assert_eq!(store.max_key_bytes, 300);
        assert_eq!(store.max_value_bytes, 5000 + 64 * 1024);
        assert_eq!(store.segment_size_bytes, 8_388_608);
        assert_eq!(store.write_buffer_bytes, 131_072);
        assert_eq!(store.flush_interval, Duration::from_micros(2500));
        assert_eq!(store.flushes_in_flight_max, 5);
        assert_eq!(store.prewrite_bytes, 65536);
        assert_eq!(store.read_cache_bytes, 256 << 20);
        assert_eq!(store.compaction_dead_fraction, 0.25);
        assert!(!store.compaction_from_index);
    }

    #[test]
    fn only_a_put_whose_one_replica_is_this_node_is_done_in_place() {
        let me = NodeId(1);
        let owner = |node| ring::VnodeOwner {
            node: NodeId(node),
            shard: 0,
        };
        let quorum = |n, w, dw| QuorumConfig { n, r: 1, w, dw };
        // (primaries, quorum, in place)
        let cases = [
            (vec![owner(1)], quorum(1, 1, 0), true),
            (vec![owner(1)], quorum(1, 1, 1), true),
            // Another node is the only replica: forwarded, never local.
            (vec![owner(2)], quorum(1, 1, 0), false),
            // N > 1: the other replicas need the machine's fan-out, even
            // at W = 1 (the put still goes to every primary).
            (vec![owner(1), owner(2)], quorum(2, 1, 0), false),
            (vec![owner(1), owner(2), owner(3)], quorum(3, 2, 1), false),
            (vec![owner(2), owner(1)], quorum(2, 1, 1), false),
            // A quorum that does not match the one replica is refused by
            // the machine, with its error.
            (vec![owner(1)], quorum(2, 1, 0), false),
            (vec![owner(1)], quorum(1, 2, 0), false),
            (vec![owner(1)], quorum(1, 1, 2), false),
        ];
        for (primaries, quorum, expected) in cases {
            assert_eq!(
                puts_in_place(&primaries, me, quorum),
                expected,
                "{primaries:?} {quorum:?}"
            );
        }
    }

    #[test]
    fn a_put_reply_is_the_frame_of_its_response_inline_or_shared() {
        // Tokens of every length a context can have, around the inline
        // bound: the reply frame, and the token `Response::Put` would
        // carry, are those of the response with the token as `Bytes`.
        for len in 7..=crate::version::CONTEXT_BYTES_MAX {
            let token: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut shared_made = false;
            let put = PutToken::new(&token, |token| {
                shared_made = true;
                Bytes::copy_from_slice(token)
            });
            assert_eq!(shared_made, len > PUT_TOKEN_INLINE_BYTES, "{len}");
            assert_eq!(put.as_slice(), &token[..], "{len}");
            let id = 0x0102_0304_0506_0708 + len as u64;
            let mut written = Vec::new();
            Reply::Put { id, token: put }.encode(&mut written);
            let mut expected = Vec::new();
            let context = Bytes::from(token.clone());
            Reply::Response(id, Response::Put { context }).encode(&mut expected);
            assert_eq!(written, expected, "{len}");
            let put = PutToken::new(&token, Bytes::copy_from_slice);
            assert_eq!(put.into_bytes(), Bytes::from(token), "{len}");
        }
    }
}
