//! One shard: a glommio executor pinned to a core that owns a fixed set of
//! partitions, their store, its client port, and its share of the node port.
//!
//! The request path of a single node lives here: decode, route to the owning
//! shard, read-modify-write the key's sibling set under a per-key latch, and
//! encode the reply. The versioning rules themselves are in `crate::version`;
//! this file only applies them to what the store holds.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use glommio::{Latency, Shares};

use super::conn;
use super::disk::GlommioDisk;
use super::forward::{Forwarder, Handler, Mesh};
use super::log::{self, info};
use crate::config::ServerConfig;
use crate::protocol::{
    self, ErrorCode, Limits, Request, RequestFrame, Response, RoutingNode, RoutingTable, Sibling,
};
use crate::ring::{self, Member, NodeId, Ring};
use crate::storage::{Durability, Namespace, RecordKind, StorageError, Store, StoreConfig};
use crate::version::{ActorId, Context, SiblingSet, Value, VersionError};

/// What every shard of a node shares, read-only, after start-up.
pub(crate) struct NodeInfo {
    pub node_id: u64,
    /// Owning shard of each partition, derived from `ring`.
    pub owner_shard: Vec<u16>,
    /// What `GetRoutingTable` returns.
    pub routing: RoutingTable,
    pub limits: Limits,
    /// The replication factor in force: the configured N, clamped to the node count.
    pub n_val: u8,
}

impl NodeInfo {
    pub(crate) fn new(
        node_id: u64,
        config: &ServerConfig,
        shards: usize,
    ) -> Result<NodeInfo, String> {
        let members = [Member {
            id: NodeId(node_id),
            weight: shards as u32,
            shards: shards as u16,
        }];
        let n_val = 1;
        let ring = Ring::claim(None, &members, config.partitions, n_val as usize)
            .map_err(|e| format!("cannot build the ring: {e}"))?;
        let owner_shard: Vec<u16> = (0..config.partitions)
            .map(|p| ring.preference_list(p)[0].shard)
            .collect();
        let routing = RoutingTable {
            epoch: ring.epoch,
            q: config.partitions,
            n_val,
            nodes: vec![RoutingNode {
                id: node_id,
                addr: config.listen.ip(),
                client_port: config.listen.port(),
                shard_ports: (0..shards).map(|s| config.shard_port(s)).collect(),
                weight: shards as u32,
            }],
            partitions: owner_shard.iter().map(|&s| vec![(0u32, s)]).collect(),
        };
        let limits = Limits {
            frame_bytes_max: config.frame_bytes_max,
            key_bytes_max: config.key_bytes_max,
            value_bytes_max: config.value_bytes_max,
            ..Limits::default()
        };
        Ok(NodeInfo {
            node_id,
            owner_shard,
            routing,
            limits,
            n_val,
        })
    }

    pub(crate) fn partition_of(&self, key: &[u8]) -> u32 {
        ring::partition_of(ring::key_hash(key), self.routing.q)
    }
}

/// Counters a shard keeps about itself (read by the admin surface later).
#[derive(Default)]
pub(crate) struct ShardCounters {
    pub connections: Cell<usize>,
    pub requests: Cell<u64>,
    pub forwarded: Cell<u64>,
    pub errors: Cell<u64>,
}

/// The state of one running shard; lives in an `Rc` on its executor.
pub(crate) struct ShardState {
    pub index: usize,
    pub node: Arc<NodeInfo>,
    pub config: Arc<ServerConfig>,
    pub store: Store<GlommioDisk>,
    /// The version-vector actor of this shard's coordinator (see `actor_id`).
    pub actor: ActorId,
    pub counters: ShardCounters,
    latches: RefCell<AHashMap<Bytes, Rc<Semaphore>>>,
    forwarder: RefCell<Option<Rc<Forwarder>>>,
    pub shutdown: Arc<AtomicBool>,
}

/// A dot's actor names the node, the shard and the shard's incarnation. The
/// incarnation grows after every unclean stop: writes acknowledged from the
/// write buffer may be lost in a crash, and reusing their counters for new
/// values would let an old context falsely supersede a value it never saw.
pub(crate) fn actor_id(node_id: u64, shard: usize, incarnation: u32) -> ActorId {
    ((node_id & 0xFFFF_FFFF) << 32)
        | ((shard as u64 & 0xFF) << 24)
        | (incarnation as u64 & 0xFF_FFFF)
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
    let incarnation = next_incarnation(&dir)?;
    let store_config = StoreConfig {
        max_key_bytes: config.key_bytes_max,
        max_value_bytes: config.value_bytes_max + 64 * 1024,
        segment_size_bytes: config.segment_size_bytes,
        write_buffer_bytes: config.write_buffer_bytes,
        flush_interval: Duration::from_micros(config.flush_interval_us),
        compaction_dead_fraction: config.compaction_dead_fraction,
        ..StoreConfig::default()
    };
    let started = Instant::now();
    let disk = GlommioDisk::new(&dir).map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    let (store, report) = Store::open(disk, store_config)
        .await
        .map_err(|e| format!("cannot open store in {}: {e}", dir.display()))?;
    info!(
        "shard {index}: store open in {} ms: {} keys, hint files {}, {} torn tail bytes truncated, {} corrupt records; incarnation {incarnation}",
        started.elapsed().as_millis(),
        report.keys,
        if report.used_hint_files { "used" } else { "not used" },
        report.truncated_tail_bytes,
        report.corrupt.len()
    );
    let shard = Rc::new(ShardState {
        index,
        actor: actor_id(node.node_id, index, incarnation),
        node: node.clone(),
        config: config.clone(),
        store,
        counters: ShardCounters::default(),
        latches: Default::default(),
        forwarder: RefCell::new(None),
        shutdown: shutdown.clone(),
    });

    let foreground = glommio::executor().create_task_queue(
        Shares::Static(1000),
        Latency::Matters(Duration::from_millis(1)),
        "foreground",
    );
    let background = glommio::executor().create_task_queue(
        Shares::Static(100),
        Latency::NotImportant,
        "background",
    );

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
    let compactor = shard.clone();
    glommio::spawn_local_into(async move { compactor.compaction_loop().await }, background)
        .map_err(|e| e.to_string())?
        .detach();

    let _ = ready.send(Ok(index));
    while !shutdown.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // Shutdown: everything acknowledged so far reaches the disk, then the
    // index snapshot, then the clean-stop marker that keeps the incarnation.
    let result = async {
        shard.store.sync().await?;
        shard.store.write_hint_files().await
    }
    .await;
    match result {
        Ok(()) => {
            mark_clean_stop(&dir)?;
            info!("shard {index}: flushed and synced");
            Ok(())
        }
        Err(e) => Err(format!("flush on shutdown failed: {e}")),
    }
}

const INCARNATION_FILE: &str = "incarnation";
const CLEAN_STOP_FILE: &str = "clean-stop";

/// Reads the shard's incarnation, bumping it unless the last stop was clean.
fn next_incarnation(dir: &std::path::Path) -> Result<u32, String> {
    let path = dir.join(INCARNATION_FILE);
    let current: u32 = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{} is corrupt", path.display()))?,
        Err(_) => 0,
    };
    let clean = dir.join(CLEAN_STOP_FILE);
    let next = if clean.exists() { current } else { current + 1 };
    super::server::write_file_durably(&path, format!("{next}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
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

/// Either a reply to encode, or an already encoded reply from another shard.
pub(crate) enum Reply {
    Response(u64, Response),
    Encoded(Vec<u8>),
}

impl ShardState {
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

    /// Handles one complete inbound frame (without its length prefix).
    pub(crate) async fn handle_frame(self: &Rc<Self>, frame: Bytes, via_node_port: bool) -> Reply {
        self.counters.requests.set(self.counters.requests.get() + 1);
        let request = match protocol::decode_request(frame.clone(), &self.node.limits) {
            Ok(request) => request,
            Err(e) => {
                self.counters.errors.set(self.counters.errors.get() + 1);
                let (id, response) = e.to_response();
                return Reply::Response(id, response);
            }
        };
        if let Some(key) = request.request.key() {
            let partition = self.node.partition_of(key);
            let owner = self.node.owner_shard[partition as usize] as usize;
            if owner != self.index {
                if !via_node_port {
                    return Reply::Response(
                        request.id,
                        Response::Error {
                            code: ErrorCode::WrongOwner,
                            message: format!("partition {partition} is owned by shard {owner}"),
                            acks: 0,
                            routing: Some(self.node.routing.clone()),
                        },
                    );
                }
                let forwarder = self.forwarder.borrow().clone();
                self.counters
                    .forwarded
                    .set(self.counters.forwarded.get() + 1);
                return match forwarder {
                    Some(f) => match f.forward(owner, frame.to_vec()).await {
                        Some(encoded) => Reply::Encoded(encoded),
                        None => {
                            Self::error(request.id, ErrorCode::Unavailable, "node is shutting down")
                        }
                    },
                    None => Self::error(request.id, ErrorCode::Internal, "no shard mesh"),
                };
            }
            return self.handle_local(request, partition).await;
        }
        self.handle_local(request, 0).await
    }

    /// Handles a frame forwarded from another shard of this node.
    async fn handle_forwarded(self: &Rc<Self>, frame: Bytes) -> Vec<u8> {
        let mut out = Vec::new();
        match self.handle_frame(frame, false).await {
            Reply::Response(id, response) => protocol::encode_response(id, &response, &mut out),
            Reply::Encoded(bytes) => out = bytes,
        }
        out
    }

    async fn handle_local(self: &Rc<Self>, request: RequestFrame, partition: u32) -> Reply {
        let id = request.id;
        let result = match request.request {
            Request::Ping => Ok(Response::Pong),
            Request::GetRoutingTable => Ok(Response::RoutingTable(self.node.routing.clone())),
            Request::Get { key, quorum } => match self.check_quorum(quorum.r, "r") {
                Ok(()) => self.get(partition, &key).await,
                Err(reply) => return Reply::Response(id, reply),
            },
            Request::Put {
                key,
                value,
                context,
                quorum,
            } => {
                if let Err(reply) = self
                    .check_quorum(quorum.w, "w")
                    .and(self.check_quorum(quorum.dw, "dw"))
                {
                    return Reply::Response(id, reply);
                }
                let durable = quorum.dw.unwrap_or(self.config.dw) > 0;
                self.write(
                    partition,
                    key,
                    context.as_deref(),
                    Value::Data(value),
                    durable,
                )
                .await
            }
            Request::Delete {
                key,
                context,
                quorum,
            } => {
                if let Err(reply) = self
                    .check_quorum(quorum.w, "w")
                    .and(self.check_quorum(quorum.dw, "dw"))
                {
                    return Reply::Response(id, reply);
                }
                let durable = quorum.dw.unwrap_or(self.config.dw) > 0;
                match self
                    .write(partition, key, Some(&context), Value::Tombstone, durable)
                    .await
                {
                    Ok(_) => Ok(Response::Delete),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(response) => Reply::Response(id, response),
            Err((code, message)) => {
                self.counters.errors.set(self.counters.errors.get() + 1);
                Self::error(id, code, message)
            }
        }
    }

    /// A per-request quorum may not ask for more replicas than N.
    fn check_quorum(&self, value: Option<u8>, name: &str) -> Result<(), Response> {
        match value {
            Some(v) if v != protocol::R_ALL && v > self.node.n_val => Err(Response::Error {
                code: ErrorCode::BadRequest,
                message: format!(
                    "{name}={v} exceeds the replication factor N={} of this cluster",
                    self.node.n_val
                ),
                acks: 0,
                routing: None,
            }),
            _ => Ok(()),
        }
    }

    async fn load(&self, partition: u32, key: &[u8]) -> Result<SiblingSet, (ErrorCode, String)> {
        match self.store.get(Namespace::Data, partition, key).await {
            Ok(Some(record)) => SiblingSet::decode(&record.payload).map_err(|e| {
                (
                    ErrorCode::Internal,
                    format!("stored sibling set is unreadable: {e}"),
                )
            }),
            Ok(None) => Ok(SiblingSet::new()),
            Err(e) => Err(storage_error(e)),
        }
    }

    fn context_token(&self, set: &SiblingSet) -> Bytes {
        Bytes::from(
            Context {
                clock: set.context(),
                fastest_replica: Some(self.actor),
            }
            .encode(),
        )
    }

    async fn get(&self, partition: u32, key: &[u8]) -> Result<Response, (ErrorCode, String)> {
        let set = self.load(partition, key).await?;
        // Only live values are returned; a tombstone sibling is summarised by
        // the context, so the next put supersedes it (docs/versioning.md).
        let siblings: Vec<Sibling> = set
            .data_values()
            .into_iter()
            .map(|value| Sibling {
                tombstone: false,
                value: value.clone(),
            })
            .collect();
        Ok(Response::Get {
            found: !siblings.is_empty(),
            siblings,
            context: self.context_token(&set),
        })
    }

    /// Applies a put or delete as the coordinator of a single replica:
    /// the new value gets a fresh dot of this shard's actor and supersedes
    /// exactly the siblings the context covers (Dynamo §4.4).
    async fn write(
        self: &Rc<Self>,
        partition: u32,
        key: Bytes,
        context: Option<&[u8]>,
        value: Value,
        durable: bool,
    ) -> Result<Response, (ErrorCode, String)> {
        let clock = match context {
            None => Default::default(),
            Some([]) => Default::default(),
            Some(bytes) => {
                Context::decode(bytes)
                    .map_err(|e| (ErrorCode::BadContext, format!("bad context: {e}")))?
                    .clock
            }
        };
        let set = {
            let _latch = self.lock_key(&key).await;
            let mut set = self.load(partition, &key).await?;
            set.update(&clock, self.actor, value).map_err(|e| match e {
                VersionError::SiblingsOverflow { .. } => (
                    ErrorCode::TooManySiblings,
                    format!("{e}; read the key and write back a merged value with its context"),
                ),
                other => (ErrorCode::BadContext, format!("bad context: {other}")),
            })?;
            let mut payload = Vec::new();
            set.encode(&mut payload);
            let kind = if set.is_all_tombstones() {
                RecordKind::Tombstone
            } else {
                RecordKind::Value
            };
            self.store
                .put(
                    Namespace::Data,
                    partition,
                    &key,
                    kind,
                    &payload,
                    Durability::Buffered,
                )
                .await
                .map_err(storage_error)?;
            set
        };
        // The sync runs after the latch is released so that durable writers
        // to the same key share one group commit instead of queueing.
        if durable {
            self.store.sync().await.map_err(storage_error)?;
        }
        Ok(Response::Put {
            context: self.context_token(&set),
        })
    }

    /// Serialises read-modify-write of one key; other keys proceed.
    async fn lock_key(self: &Rc<Self>, key: &Bytes) -> KeyLatch {
        let semaphore = self
            .latches
            .borrow_mut()
            .entry(key.clone())
            .or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone();
        let permit = semaphore.acquire_static_permit(1).await.ok();
        KeyLatch {
            shard: self.clone(),
            key: key.clone(),
            semaphore: Some(semaphore),
            permit,
        }
    }

    async fn flush_loop(self: Rc<Self>) {
        let interval = Duration::from_micros(self.config.flush_interval_us.max(100));
        while !self.shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(interval).await;
            if self.store.flush_due(Instant::now()) {
                if let Err(e) = self.store.flush().await {
                    log::warning!("shard {}: write-buffer flush failed: {e}", self.index);
                }
            }
        }
    }

    /// Compaction in bounded steps, rate-limited, in the background queue so
    /// foreground requests always win (§6.5).
    async fn compaction_loop(self: Rc<Self>) {
        let step_bytes: u64 = 1 << 20;
        let pause = Duration::from_secs_f64(
            step_bytes as f64 / self.config.compaction_bytes_per_second.max(1) as f64,
        );
        while !self.shutdown.load(Ordering::Relaxed) {
            match self.store.compact_step(step_bytes).await {
                Ok(progress) if progress.more => glommio::timer::sleep(pause).await,
                Ok(_) => glommio::timer::sleep(Duration::from_secs(1)).await,
                Err(e) => {
                    log::warning!("shard {}: compaction failed: {e}", self.index);
                    glommio::timer::sleep(Duration::from_secs(10)).await;
                }
            }
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

/// Holds a key's latch; releasing it removes the entry when nobody waits.
struct KeyLatch {
    shard: Rc<ShardState>,
    key: Bytes,
    semaphore: Option<Rc<Semaphore>>,
    permit: Option<glommio::sync::StaticPermit>,
}

impl Drop for KeyLatch {
    fn drop(&mut self) {
        drop(self.permit.take());
        if let Some(semaphore) = self.semaphore.take() {
            // One reference in the map and ours: no other writer holds or awaits it.
            if Rc::strong_count(&semaphore) == 2 {
                self.shard.latches.borrow_mut().remove(&self.key);
            }
        }
    }
}

/// Accepting on a listener: used by `conn`.
pub(crate) fn connection_allowed(shard: &ShardState) -> bool {
    shard.counters.connections.get() < shard.config.connections_max
}
