//! The load generator's event loop: one io_uring per thread driving that
//! thread's connections.
//!
//! Job: keep each client's pipeline full (closed loop) or send on each
//! client's schedule (open loop), time every request, and account every
//! reply, error and timeout. Each thread owns its sockets, its ring and its
//! statistics and shares nothing on the request path but two counters of the
//! key space (YCSB-D inserts).
//!
//! Connection model: a *client* is one of `--connections`; it holds one socket
//! per endpoint (one for Redis and memcached; one per shard for a dynakv
//! cluster, so each request goes straight to its coordinator shard) and keeps
//! at most `--pipeline` requests in flight over them.
//!
//! I/O: every live socket always has one `Recv` in flight; a socket's
//! outgoing requests are batched into one buffer and sent with one `Send`
//! while the previous send is in flight. Submissions are batched: SQEs queue
//! up during an iteration and go to the kernel in the single
//! `io_uring_enter` that also waits for completions. Sockets are nonblocking,
//! so no stray syscall can ever stall the loop; current kernels still arm
//! io_uring's internal poll for a `Recv` or `Send` that cannot complete at
//! once, and on kernels that answer EAGAIN instead the engine waits with a
//! `PollAdd` and retries (never a spin).
//!
//! Invariants: a socket's buffers are never moved or resized while an SQE
//! points into them; at most one recv and one send are in flight per socket,
//! so the completion queue (twice the submission queue, which is at least
//! twice the socket count) cannot overflow; a client never has more than
//! `pipeline` requests in flight; every request issued in the measured phase
//! is accounted exactly once.

use crate::clock::{now_ns, thread_cpu_ns};
use crate::codec::{Codec, Outcome, Reply, Request};
use crate::contexts::ContextCache;
use crate::rng::Rng;
use crate::stats::{new_histogram, RunStats};
use crate::workload::{cart_merge, write_key, KeySpace, Op, OpGenerator, OpKind, KEY_BYTES};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Receive-buffer space a socket starts with and keeps free for each `Recv`.
/// Small, so ten thousand connections cost 160 MiB, not 640; a reply larger
/// than the free space grows the buffer geometrically (see `arm_recv`).
const RECV_CHUNK_BYTES: usize = 16 * 1024;
/// How often timeouts are checked and progress is published.
const HOUSEKEEPING_NS: u64 = 10_000_000;
const PROGRESS_NS: u64 = 1_000_000_000;
/// Sockets per thread: the completion queue must hold two completions per
/// socket, and io_uring's queues top out at 32768 submission entries.
pub const SOCKETS_PER_THREAD_MAX: usize = 16_384;

/// The low two bits of an SQE's user data say what it is; the rest is the
/// socket index. Bit 0 tells the receive side (0) from the send side (1), so
/// a readiness poll standing in for an operation owns that operation's slot.
const TAG_BITS: u32 = 2;
const TAG_RECV: u64 = 0;
const TAG_SEND: u64 = 1;
const TAG_RECV_POLL: u64 = 2;
const TAG_SEND_POLL: u64 = 3;

/// Where a key's requests go: a single endpoint, or the dynakv routing table
/// flattened to the endpoint indexes of each partition's preference list.
#[derive(Clone, Debug)]
pub enum Router {
    Single,
    Partitioned {
        /// log2 of the partition count Q.
        partition_bits: u32,
        /// For each partition, the endpoint indexes of its replica shards,
        /// coordinator first: a client whose connection to the coordinator
        /// failed sends to the next one (failover).
        replicas: Arc<Vec<Vec<u32>>>,
    },
}

impl Router {
    /// The endpoints that may take a request for `key`, in order of preference.
    pub fn candidates(&self, key: &[u8]) -> &[u32] {
        match self {
            Router::Single => &[0],
            Router::Partitioned {
                partition_bits,
                replicas,
            } => &replicas[partition_of(key, *partition_bits)],
        }
    }

    /// Whether a client outlives a failed connection by failing over.
    fn fails_over(&self) -> bool {
        matches!(self, Router::Partitioned { .. })
    }
}

/// The partition of a key among `2^partition_bits` partitions, computed by
/// the ring layer itself so the tool always hashes exactly as nodes do.
pub fn partition_of(key: &[u8], partition_bits: u32) -> usize {
    assert!(partition_bits <= 32);
    dynakv::ring::key_partition(key, 1u32 << partition_bits) as usize
}

/// Everything a thread's engine needs, fixed for the run.
pub struct EngineSetup {
    pub thread_index: u32,
    pub threads: u32,
    pub pipeline: u32,
    /// Open loop: the interval between one client's scheduled sends.
    pub client_interval_ns: Option<u64>,
    pub timeout_ns: u64,
    pub keys: u64,
    pub load: bool,
    pub warmup_ns: u64,
    pub duration_ns: Option<u64>,
    /// This thread's share of `--ops`.
    pub ops_budget: Option<u64>,
    pub router: Router,
    pub seed: u64,
    /// Random bytes that values are sliced from.
    pub value_pool: Arc<Vec<u8>>,
    pub space: Arc<KeySpace>,
    pub progress: Option<Sender<Progress>>,
}

/// A once-a-second report from a thread for the live progress line.
pub struct Progress {
    pub ok: u64,
    pub errors: u64,
    pub latency_ns: Histogram<u64>,
}

/// Why a run phase could not be carried out.
#[derive(Debug)]
pub enum EngineError {
    /// io_uring could not be set up or `io_uring_enter` failed.
    Ring(std::io::Error),
    /// Every client lost a connection; nothing more can be sent.
    AllConnectionsLost(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Ring(e) => write!(f, "io_uring: {e}"),
            EngineError::AllConnectionsLost(first) => {
                write!(f, "all connections were lost; the first: {first}")
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The only request, or the get of a read-modify-write.
    First,
    /// The put of a read-modify-write.
    Second,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    id: u64,
    op: OpKind,
    stage: Stage,
    key: u64,
    /// When the request should have been sent: the schedule in open loop, the
    /// moment a pipeline slot opened in closed loop. Latency counts from here.
    intended_ns: u64,
    /// When it was handed to the socket; timeouts count from here.
    sent_ns: u64,
    client: u32,
    /// Issued in the measured phase (not warm-up, not load).
    measured: bool,
}

struct Socket {
    stream: TcpStream,
    client: u32,
    recv: BytesMut,
    recv_busy: bool,
    /// The bytes the in-flight `Send` points into, and how much of them went.
    sending: Vec<u8>,
    sent_bytes: usize,
    send_busy: bool,
    /// Requests encoded while a send was in flight; sent next, in one go.
    queued: Vec<u8>,
    inflight: VecDeque<Pending>,
    next_id: u64,
    codec: Codec,
    dead: bool,
}

struct Client {
    /// Socket index per endpoint.
    sockets: Vec<u32>,
    in_flight: u32,
    /// Open loop: the intended time of the client's next request.
    next_due_ns: u64,
    /// Open loop: the due time of this client's live heap entry, 0 for none.
    heap_due_ns: u64,
    dead: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PhaseKind {
    Load,
    Run,
}

/// Per-phase state of the loop.
struct PhaseState {
    kind: PhaseKind,
    issuing: bool,
    /// Load: next key index to write.
    load_cursor: u64,
    warmup_end_ns: u64,
    measure_end_ns: Option<u64>,
    measured_issued: u64,
    last_completion_ns: u64,
}

pub struct Engine {
    setup: EngineSetup,
    ring: IoUring,
    sockets: Vec<Socket>,
    clients: Vec<Client>,
    generator: OpGenerator,
    rng: Rng,
    pub stats: RunStats,
    ready: Vec<u32>,
    to_flush: Vec<u32>,
    schedule: BinaryHeap<Reverse<(u64, u32)>>,
    total_in_flight: u64,
    live_clients: usize,
    interval: Histogram<u64>,
    interval_ok: u64,
    interval_errors: u64,
    key_buf: [u8; KEY_BYTES],
    value_buf: Vec<u8>,
    in_load: bool,
    /// The target speaks dynakv's protocol (replies carry contexts).
    dynakv: bool,
    /// dynakv, for a workload with plain puts: the context of the last version
    /// this thread saw of each key, sent with the key's next plain put
    /// (`contexts.rs`).
    contexts: Option<ContextCache>,
    /// A read-modify-write's context between its get and its put, reused.
    context_buf: Vec<u8>,
    /// With `contexts`: the run's next operations, drawn `OPS_AHEAD` early so
    /// that a put's context slot is prefetched before the put reads it.
    ahead: VecDeque<Op>,
    /// `DYNAKV_BENCH_WAIT`, where the kernel has `min_wait_usec`.
    wait_batch: Option<WaitBatch>,
}

/// How many operations a run with a context cache draws ahead of sending
/// them. One request costs the generator about a microsecond, so a few ahead
/// hide a slot's cache miss (about 0.1 us) entirely.
const OPS_AHEAD: usize = 4;

/// The next of the values `draw` yields, in order, with `depth` more drawn
/// already and waiting in `queue`; `on_draw` sees each value once, when it is
/// drawn (`Engine::next_run_op` prefetches there).
fn draw_ahead<T>(
    queue: &mut VecDeque<T>,
    depth: usize,
    mut draw: impl FnMut() -> T,
    mut on_draw: impl FnMut(&T),
) -> T {
    while queue.len() <= depth {
        let value = draw();
        on_draw(&value);
        queue.push_back(value);
    }
    queue.pop_front().expect("drawn above")
}

/// How many of a socket's oldest requests have their context slots prefetched
/// when a read completes: a pipeline's worth of replies at the default depths.
const REPLY_PREFETCH: usize = 16;

/// How a thread's ring lets the kernel post completions (docs/benchmark-tool.md,
/// "The generator's ring").
/// Ordered from the weakest (`Interrupting`) up, so that a run reports the
/// weakest mode any of its threads was granted (`RunStats::ring`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RingMode {
    /// No flags: the kernel interrupts the running thread (an IPI when it runs on
    /// another CPU, paid by the sender) to post each completion, as rings did
    /// before Linux 5.19.
    Interrupting,
    /// `COOP_TASKRUN` and `SINGLE_ISSUER` (the default): a completion waits for
    /// this thread's next entry into the kernel instead of interrupting it.
    Cooperative,
    /// `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER` and `COOP_TASKRUN`):
    /// completions are posted only when this thread waits for them. Measured
    /// slower than `Cooperative` with two server shards (more, smaller reads on
    /// the server), so only for A/B runs.
    Deferred,
}

impl RingMode {
    /// The name the report prints (`generator ring:`, JSON `generator_ring`).
    pub fn name(self) -> &'static str {
        match self {
            RingMode::Deferred => "deferred",
            RingMode::Cooperative => "cooperative",
            RingMode::Interrupting => "interrupting",
        }
    }

    /// `DYNAKV_BENCH_RING=defer|plain` picks another mode, for A/B measurements
    /// of the tool itself; anything else (or nothing) is `Cooperative`.
    pub fn from_env() -> RingMode {
        match std::env::var("DYNAKV_BENCH_RING").as_deref() {
            Ok("defer") => RingMode::Deferred,
            Ok("plain") => RingMode::Interrupting,
            _ => RingMode::Cooperative,
        }
    }
}

/// `DYNAKV_BENCH_WAIT=WANT,MIN_US`: the event loop waits for WANT completions
/// (at most the requests in flight), or for at least one once MIN_US
/// microseconds have passed (`IORING_ENTER_EXT_ARG`'s `min_wait_usec`, Linux
/// 6.12), instead of waking for the first. With `DYNAKV_BENCH_RING=defer` the
/// kernel then wakes the thread once per batch, so the server's sends stop
/// paying a wake-up of the generator per reply. For A/B runs only: measured
/// +8 to +10% for a one-shard dynakv with the generator on its own vCPU, no
/// change for Redis, and -14 to -16% for a two-shard node sharing the two
/// vCPUs with the generator (BENCHMARKS.md §5c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitBatch {
    pub want: u32,
    pub min_wait_us: u32,
}

impl WaitBatch {
    /// `WANT,MIN_US`, both at least 1; anything else is `None`.
    pub fn parse(text: &str) -> Option<WaitBatch> {
        let (want, min_wait_us) = text.split_once(',')?;
        let batch = WaitBatch {
            want: want.trim().parse().ok()?,
            min_wait_us: min_wait_us.trim().parse().ok()?,
        };
        (batch.want >= 1 && batch.min_wait_us >= 1).then_some(batch)
    }

    fn from_env() -> Option<WaitBatch> {
        WaitBatch::parse(&std::env::var("DYNAKV_BENCH_WAIT").ok()?)
    }
}

/// Builds a thread's ring in `mode`, falling back to the next weaker mode where
/// the kernel refuses the flags (`EINVAL` before Linux 6.1 for deferred task
/// running, before 5.19 for cooperative). Must run on the thread that will use the
/// ring: `SINGLE_ISSUER` binds the ring to its creator. Returns the mode granted.
fn build_ring(entries: u32, mode: RingMode) -> Result<(IoUring, RingMode), EngineError> {
    let mut mode = mode;
    loop {
        let mut builder = IoUring::builder();
        match mode {
            RingMode::Deferred => {
                builder
                    .setup_coop_taskrun()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
            }
            RingMode::Cooperative => {
                builder.setup_coop_taskrun().setup_single_issuer();
            }
            RingMode::Interrupting => {}
        }
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, mode)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && mode != RingMode::Interrupting => {
                mode = match mode {
                    RingMode::Deferred => RingMode::Cooperative,
                    _ => RingMode::Interrupting,
                };
            }
            Err(e) => return Err(EngineError::Ring(e)),
        }
    }
}

impl Engine {
    /// Builds an engine over already-connected sockets: `clients[c][e]` is
    /// client c's socket to endpoint e.
    pub fn new(
        setup: EngineSetup,
        clients: Vec<Vec<TcpStream>>,
        codec: impl Fn() -> Codec,
        generator: OpGenerator,
    ) -> Result<Engine, EngineError> {
        let socket_count: usize = clients.iter().map(Vec::len).sum();
        assert!(socket_count > 0);
        assert!(socket_count <= SOCKETS_PER_THREAD_MAX);
        let entries = (2 * socket_count + 8).next_power_of_two() as u32;
        let (ring, ring_mode) = build_ring(entries, RingMode::from_env())?;
        let wait_batch = WaitBatch::from_env().filter(|_| ring.params().is_feature_min_timeout());
        let mut sockets = Vec::with_capacity(socket_count);
        let mut client_list = Vec::with_capacity(clients.len());
        for (c, streams) in clients.into_iter().enumerate() {
            let mut indices = Vec::with_capacity(streams.len());
            for stream in streams {
                indices.push(sockets.len() as u32);
                sockets.push(Socket {
                    stream,
                    client: c as u32,
                    recv: BytesMut::with_capacity(RECV_CHUNK_BYTES),
                    recv_busy: false,
                    sending: Vec::new(),
                    sent_bytes: 0,
                    send_busy: false,
                    queued: Vec::new(),
                    inflight: VecDeque::new(),
                    next_id: 1,
                    codec: codec(),
                    dead: false,
                });
            }
            client_list.push(Client {
                sockets: indices,
                in_flight: 0,
                next_due_ns: 0,
                heap_due_ns: 0,
                dead: false,
            });
        }
        let rng = Rng::new(setup.seed, u64::from(setup.thread_index));
        let ordered = sockets
            .first()
            .map(|s: &Socket| s.codec.ordered())
            .unwrap_or(true);
        let dynakv = !ordered;
        let contexts = (dynakv && generator.plain_puts()).then(|| ContextCache::new(setup.keys));
        let live_clients = client_list.len();
        Ok(Engine {
            setup,
            ring,
            sockets,
            clients: client_list,
            generator,
            rng,
            stats: RunStats {
                ring: Some(ring_mode),
                ..RunStats::default()
            },
            ready: Vec::new(),
            to_flush: Vec::new(),
            schedule: BinaryHeap::new(),
            total_in_flight: 0,
            live_clients,
            interval: new_histogram(),
            interval_ok: 0,
            interval_errors: 0,
            key_buf: [0; KEY_BYTES],
            value_buf: Vec::new(),
            in_load: false,
            dynakv,
            contexts,
            context_buf: Vec::new(),
            ahead: VecDeque::with_capacity(OPS_AHEAD),
            wait_batch,
        })
    }

    /// Writes this thread's share of the key space once (keys `i` with
    /// `i % threads == thread_index`), closed loop, unmeasured.
    pub fn run_load(&mut self) -> Result<(), EngineError> {
        if !self.setup.load {
            return Ok(());
        }
        let start = now_ns();
        let mut phase = PhaseState {
            kind: PhaseKind::Load,
            issuing: true,
            load_cursor: u64::from(self.setup.thread_index),
            warmup_end_ns: u64::MAX,
            measure_end_ns: None,
            measured_issued: 0,
            last_completion_ns: start,
        };
        self.in_load = true;
        let result = self.run_phase(&mut phase);
        self.in_load = false;
        self.stats.load_ns = now_ns() - start;
        result
    }

    /// Runs warm-up and the measured phase.
    pub fn run_measure(&mut self) -> Result<(), EngineError> {
        let start = now_ns();
        let cpu_start = thread_cpu_ns();
        let completions_before = self.stats.completions;
        let warmup_end_ns = start + self.setup.warmup_ns;
        let mut phase = PhaseState {
            kind: PhaseKind::Run,
            issuing: true,
            load_cursor: 0,
            warmup_end_ns,
            measure_end_ns: self.setup.duration_ns.map(|d| warmup_end_ns + d),
            measured_issued: 0,
            last_completion_ns: warmup_end_ns,
        };
        if let Some(interval) = self.setup.client_interval_ns {
            // Spread the clients' first sends over one interval so an open
            // loop does not start with a burst of every client at once.
            let n = self.clients.len() as u64;
            for (c, client) in self.clients.iter_mut().enumerate() {
                client.next_due_ns = start + interval * c as u64 / n;
            }
        }
        let result = self.run_phase(&mut phase);
        let end = now_ns();
        if let (Some(interval), Some(measure_end)) =
            (self.setup.client_interval_ns, phase.measure_end_ns)
        {
            // Open loop: requests whose intended time passed before the end
            // but that never went out because the client's pipeline stayed
            // full. They are the most delayed of all, so they are reported
            // rather than silently left out.
            for client in self.clients.iter().filter(|c| !c.dead) {
                if client.next_due_ns < measure_end {
                    self.stats.unsent += (measure_end - client.next_due_ns).div_ceil(interval);
                }
            }
        }
        self.stats.wall_ns = end - start;
        self.stats.cpu_ns = thread_cpu_ns() - cpu_start;
        self.stats.completions -= completions_before;
        self.stats.utilisation_max = self.stats.cpu_ns as f64 / self.stats.wall_ns.max(1) as f64;
        let measure_end = phase.measure_end_ns.unwrap_or(0);
        self.stats.measured_ns = measure_end
            .max(phase.last_completion_ns)
            .saturating_sub(warmup_end_ns)
            .max(1);
        result
    }

    fn run_phase(&mut self, phase: &mut PhaseState) -> Result<(), EngineError> {
        let mut next_housekeeping = now_ns() + HOUSEKEEPING_NS;
        let mut next_progress = now_ns() + PROGRESS_NS;
        for c in 0..self.clients.len() as u32 {
            self.ready.push(c);
        }
        for s in 0..self.sockets.len() {
            self.arm_recv(s);
        }
        loop {
            let now = now_ns();
            if phase.kind == PhaseKind::Run {
                if let Some(end) = phase.measure_end_ns {
                    if now >= end {
                        phase.issuing = false;
                    }
                }
            }
            // Open-loop clients whose next send is due.
            while let Some(&Reverse((due, c))) = self.schedule.peek() {
                if due > now {
                    break;
                }
                self.schedule.pop();
                let client = &mut self.clients[c as usize];
                if client.heap_due_ns == due {
                    client.heap_due_ns = 0;
                    self.ready.push(c);
                }
            }
            while let Some(c) = self.ready.pop() {
                self.fill(c, now, phase);
            }
            self.flush_sends();
            if !phase.issuing && self.total_in_flight == 0 {
                break;
            }
            if self.live_clients == 0 {
                let first = self.stats.first_failure.clone().unwrap_or_default();
                return Err(EngineError::AllConnectionsLost(first));
            }
            // Every live client with room was just filled: it either has a
            // request in flight, waits in the open-loop schedule, or stopped.
            // A phase still issuing with neither would wait forever.
            assert!(
                !phase.issuing || self.total_in_flight > 0 || !self.schedule.is_empty(),
                "the phase is issuing but no client can issue"
            );
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING_NS;
                self.check_timeouts(now);
                if now >= next_progress {
                    next_progress = now + PROGRESS_NS;
                    self.publish_progress();
                }
                continue;
            }
            let mut wake_ns = next_housekeeping;
            if phase.issuing {
                if let Some(&Reverse((due, _))) = self.schedule.peek() {
                    wake_ns = wake_ns.min(due);
                }
                if let Some(end) = phase.measure_end_ns {
                    wake_ns = wake_ns.min(end);
                }
            }
            self.submit_and_wait(wake_ns.saturating_sub(now))?;
            self.drain_completions(phase);
        }
        self.publish_progress();
        Ok(())
    }

    /// Issues requests for a client while its pipeline has room and (open
    /// loop) its schedule says they are due.
    fn fill(&mut self, c: u32, now: u64, phase: &mut PhaseState) {
        let pipeline = self.setup.pipeline;
        loop {
            let client = &self.clients[c as usize];
            if client.dead || !phase.issuing || client.in_flight >= pipeline {
                return;
            }
            let intended_ns = match (phase.kind, self.setup.client_interval_ns) {
                (PhaseKind::Run, Some(interval)) => {
                    if client.next_due_ns > now {
                        let due = client.next_due_ns;
                        if client.heap_due_ns != due {
                            self.clients[c as usize].heap_due_ns = due;
                            self.schedule.push(Reverse((due, c)));
                        }
                        return;
                    }
                    let due = client.next_due_ns;
                    self.clients[c as usize].next_due_ns = due + interval;
                    due
                }
                _ => now,
            };
            let op = match phase.kind {
                PhaseKind::Load => {
                    if phase.load_cursor >= self.setup.keys {
                        phase.issuing = false;
                        return;
                    }
                    let key = phase.load_cursor;
                    phase.load_cursor += u64::from(self.setup.threads);
                    let value_bytes = self.generator.value_bytes(&mut self.rng);
                    // dynakv: load by read-modify-write, so loading a key that
                    // an earlier run wrote replaces it instead of adding a
                    // sibling; the other targets simply overwrite.
                    let kind = if self.dynakv {
                        OpKind::Rmw
                    } else {
                        OpKind::Put
                    };
                    Op {
                        kind,
                        key,
                        value_bytes,
                    }
                }
                PhaseKind::Run => {
                    let measured = intended_ns >= phase.warmup_end_ns;
                    if measured {
                        if let Some(budget) = self.setup.ops_budget {
                            if phase.measured_issued >= budget {
                                phase.issuing = false;
                                return;
                            }
                        }
                        phase.measured_issued += 1;
                    }
                    self.next_run_op()
                }
            };
            let measured = phase.kind == PhaseKind::Run && intended_ns >= phase.warmup_end_ns;
            self.clients[c as usize].in_flight += 1;
            self.total_in_flight += 1;
            let (stage, request_kind) = if op.kind.is_read_modify_write() {
                (Stage::First, RequestKind::Get)
            } else {
                (
                    Stage::First,
                    match op.kind {
                        OpKind::Ping => RequestKind::Ping,
                        OpKind::Get => RequestKind::Get,
                        _ => RequestKind::Put {
                            value_bytes: op.value_bytes,
                        },
                    },
                )
            };
            let pending = Pending {
                id: 0,
                op: op.kind,
                stage,
                key: op.key,
                intended_ns,
                sent_ns: now,
                client: c,
                measured,
            };
            // Lent out of `self` for the send, which does not touch it, so
            // the context is encoded straight from the cache.
            let contexts = self.contexts.take();
            let context = match (&contexts, op.kind) {
                (Some(cache), OpKind::Put) if phase.kind == PhaseKind::Run => cache.get(op.key),
                (Some(cache), kind) => {
                    // The reply will store its context in the key's slot.
                    if kind != OpKind::Ping {
                        cache.prefetch(op.key);
                    }
                    None
                }
                _ => None,
            };
            let sent = self.send_request(pending, request_kind, None, context);
            self.contexts = contexts;
            if !sent {
                self.unreachable(pending);
                return;
            }
        }
    }

    /// The run's next operation. With a context cache the operations are drawn
    /// `OPS_AHEAD` early and a plain put's slot is prefetched when it is drawn:
    /// the put reads its context when it is sent, and at 100,000 keys that read
    /// missed the cache on nearly every put (62% of the engine's own samples
    /// under a PUT load, BENCHMARKS.md §5b). Only a workload without inserts has
    /// a cache (`OpGenerator::plain_puts`), so drawing early never allocates an
    /// insert's key that the run then does not send.
    fn next_run_op(&mut self) -> Op {
        let Some(cache) = &self.contexts else {
            return self.generator.next(&mut self.rng);
        };
        let (generator, rng) = (&mut self.generator, &mut self.rng);
        draw_ahead(
            &mut self.ahead,
            OPS_AHEAD,
            || generator.next(rng),
            |op| {
                if op.kind == OpKind::Put {
                    cache.prefetch(op.key);
                }
            },
        )
    }

    /// A request for which every candidate connection is gone: counted as a
    /// connection error, and its client stops (it would only spin).
    fn unreachable(&mut self, pending: Pending) {
        if pending.measured {
            self.stats.op(pending.op).connection_errors += 1;
            self.interval_errors += 1;
        } else if self.in_load {
            self.stats.load_errors += 1;
        }
        let client = &mut self.clients[pending.client as usize];
        client.in_flight -= 1;
        self.total_in_flight -= 1;
        if !client.dead {
            client.dead = true;
            self.live_clients -= 1;
        }
    }

    /// Encodes a request onto the socket of its key's coordinator, or of the
    /// next replica whose connection still stands, and queues it. False when
    /// this client has no connection left that could take it.
    #[must_use]
    fn send_request(
        &mut self,
        mut pending: Pending,
        kind: RequestKind,
        value: Option<&[u8]>,
        context: Option<&[u8]>,
    ) -> bool {
        write_key(pending.key, &mut self.key_buf);
        let client = &self.clients[pending.client as usize];
        let sockets = &self.sockets;
        let live = |e: usize| !sockets[client.sockets[e] as usize].dead;
        let endpoint = match kind {
            // A ping has no key; spread pings over the endpoints.
            RequestKind::Ping => {
                let count = client.sockets.len();
                let first = self.rng.below(count as u64) as usize;
                (0..count).map(|i| (first + i) % count).find(|&e| live(e))
            }
            _ => self
                .setup
                .router
                .candidates(&self.key_buf)
                .iter()
                .map(|&e| e as usize)
                .find(|&e| live(e)),
        };
        let Some(endpoint) = endpoint else {
            return false;
        };
        let s = client.sockets[endpoint] as usize;
        let value_slice: &[u8] = match (kind, value) {
            (_, Some(v)) => v,
            (RequestKind::Put { value_bytes }, None) => {
                let pool = &self.setup.value_pool;
                let len = value_bytes as usize;
                assert!(len <= pool.len() / 2);
                let offset = self.rng.below((pool.len() - len) as u64 + 1) as usize;
                &pool[offset..offset + len]
            }
            _ => &[],
        };
        let request = match kind {
            RequestKind::Ping => Request::Ping,
            RequestKind::Get => Request::Get { key: &self.key_buf },
            RequestKind::Put { .. } => Request::Put {
                key: &self.key_buf,
                value: value_slice,
                context,
            },
        };
        let socket = &mut self.sockets[s];
        assert!(!socket.dead);
        pending.id = socket.next_id;
        socket.next_id += 1;
        let was_empty = socket.queued.is_empty();
        socket
            .codec
            .encode(pending.id, &request, &mut socket.queued);
        socket.inflight.push_back(pending);
        if was_empty && !socket.send_busy {
            self.to_flush.push(s as u32);
        }
        true
    }

    fn flush_sends(&mut self) {
        while let Some(s) = self.to_flush.pop() {
            let socket = &mut self.sockets[s as usize];
            if socket.send_busy || socket.dead || socket.queued.is_empty() {
                continue;
            }
            std::mem::swap(&mut socket.sending, &mut socket.queued);
            socket.sent_bytes = 0;
            self.push_send(s as usize);
        }
    }

    fn push_send(&mut self, s: usize) {
        let socket = &mut self.sockets[s];
        assert!(socket.sent_bytes < socket.sending.len());
        let rest = &socket.sending[socket.sent_bytes..];
        let entry = opcode::Send::new(
            types::Fd(socket.stream.as_raw_fd()),
            rest.as_ptr(),
            rest.len().min(u32::MAX as usize) as u32,
        )
        .build()
        .user_data(((s as u64) << TAG_BITS) | TAG_SEND);
        socket.send_busy = true;
        self.push_entry(&entry);
    }

    fn arm_recv(&mut self, s: usize) {
        let socket = &mut self.sockets[s];
        if socket.recv_busy || socket.dead {
            return;
        }
        if socket.recv.capacity() - socket.recv.len() < RECV_CHUNK_BYTES / 4 {
            // Buffered bytes are an incomplete reply: doubling the room keeps
            // a large value to a logarithmic number of receives.
            socket.recv.reserve(RECV_CHUNK_BYTES.max(socket.recv.len()));
        }
        let spare = socket.recv.spare_capacity_mut();
        let entry = opcode::Recv::new(
            types::Fd(socket.stream.as_raw_fd()),
            spare.as_mut_ptr().cast::<u8>(),
            spare.len().min(u32::MAX as usize) as u32,
        )
        .build()
        .user_data(((s as u64) << TAG_BITS) | TAG_RECV);
        socket.recv_busy = true;
        self.push_entry(&entry);
    }

    fn push_entry(&mut self, entry: &io_uring::squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points into belongs to a socket
            // that is neither dropped nor resized until its completion arrives
            // (recv_busy / send_busy guard them), see the module invariants.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return;
            }
            // The submission queue is full: hand the batch to the kernel.
            if let Err(e) = self.ring.submit() {
                assert!(
                    e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY),
                    "io_uring submit: {e}"
                );
            }
        }
    }

    fn submit_and_wait(&mut self, wait_ns: u64) -> Result<(), EngineError> {
        let ts = types::Timespec::new()
            .sec(wait_ns / 1_000_000_000)
            .nsec((wait_ns % 1_000_000_000) as u32);
        let mut args = types::SubmitArgs::new().timespec(&ts);
        let mut want = 1;
        if let Some(batch) = self.wait_batch {
            // Never more than could complete: a closed loop's requests in
            // flight (each request's completion, or its send's).
            want = batch.want.min(self.total_in_flight.max(1) as u32) as usize;
            if want > 1 {
                args = args.min_wait_usec(batch.min_wait_us);
            }
        }
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(EngineError::Ring(e)),
        }
    }

    fn drain_completions(&mut self, phase: &mut PhaseState) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                return;
            };
            let s = (cqe.user_data() >> TAG_BITS) as usize;
            let result = cqe.result();
            match cqe.user_data() & ((1 << TAG_BITS) - 1) {
                TAG_RECV => self.on_recv(s, result, phase),
                TAG_SEND => self.on_send(s, result),
                TAG_RECV_POLL => self.on_ready(s, result, true),
                _ => self.on_ready(s, result, false),
            }
        }
    }

    fn on_send(&mut self, s: usize, result: i32) {
        let socket = &mut self.sockets[s];
        assert!(socket.send_busy);
        socket.send_busy = false;
        if socket.dead {
            return;
        }
        if result < 0 {
            if result == -libc::EINTR {
                self.push_send(s);
            } else if result == -libc::EAGAIN {
                self.push_poll(s, false);
            } else {
                self.fail_socket(s, Failure::Io(-result));
            }
            return;
        }
        socket.sent_bytes += result as usize;
        if socket.sent_bytes < socket.sending.len() {
            self.push_send(s);
            return;
        }
        socket.sending.clear();
        socket.sent_bytes = 0;
        if !socket.queued.is_empty() {
            self.to_flush.push(s as u32);
        }
    }

    /// Kernels that complete a `Recv` or `Send` on an O_NONBLOCK socket with
    /// EAGAIN (6.x kernels arm their internal poll instead) get a readiness
    /// poll, and the operation is retried when it fires, never in a spin.
    fn push_poll(&mut self, s: usize, receive: bool) {
        let socket = &mut self.sockets[s];
        let (events, tag) = if receive {
            assert!(!socket.recv_busy);
            socket.recv_busy = true;
            (libc::POLLIN, TAG_RECV_POLL)
        } else {
            assert!(!socket.send_busy);
            socket.send_busy = true;
            (libc::POLLOUT, TAG_SEND_POLL)
        };
        let entry = opcode::PollAdd::new(types::Fd(socket.stream.as_raw_fd()), events as u32)
            .build()
            .user_data(((s as u64) << TAG_BITS) | tag);
        self.push_entry(&entry);
    }

    fn on_ready(&mut self, s: usize, result: i32, receive: bool) {
        let socket = &mut self.sockets[s];
        if receive {
            assert!(socket.recv_busy);
            socket.recv_busy = false;
        } else {
            assert!(socket.send_busy);
            socket.send_busy = false;
        }
        if socket.dead {
            return;
        }
        if result < 0 && result != -libc::EINTR {
            self.fail_socket(s, Failure::Io(-result));
        } else if receive {
            self.arm_recv(s);
        } else {
            self.push_send(s);
        }
    }

    fn on_recv(&mut self, s: usize, result: i32, phase: &mut PhaseState) {
        let socket = &mut self.sockets[s];
        assert!(socket.recv_busy);
        socket.recv_busy = false;
        if socket.dead {
            return;
        }
        if result <= 0 {
            if result == -libc::EINTR {
                self.arm_recv(s);
            } else if result == -libc::EAGAIN || result == -libc::ENOBUFS {
                self.push_poll(s, true);
            } else {
                // 0 is an orderly close by the peer; anything else is an error.
                self.fail_socket(
                    s,
                    if result == 0 {
                        Failure::Closed
                    } else {
                        Failure::Io(-result)
                    },
                );
            }
            return;
        }
        let received = result as usize;
        assert!(socket.recv.len() + received <= socket.recv.capacity());
        // SAFETY: the kernel wrote `received` bytes into the spare capacity
        // that the recv SQE pointed at, directly after the current length.
        unsafe { socket.recv.set_len(socket.recv.len() + received) };
        if let Some(cache) = &self.contexts {
            // Each reply stores its context in its key's slot. The slots were
            // touched when the requests went out, but a round trip of the
            // server's work on a shared core since then evicts them: the
            // store missed on about a quarter of the engine's samples under a
            // PUT load. The oldest requests are the ones this read answers.
            for pending in socket.inflight.iter().take(REPLY_PREFETCH) {
                if pending.op != OpKind::Ping {
                    cache.prefetch(pending.key);
                }
            }
        }
        let now = now_ns();
        loop {
            let socket = &mut self.sockets[s];
            if socket.dead {
                return;
            }
            let capture = match socket.inflight.front() {
                Some(p) if socket.codec.ordered() => {
                    p.op == OpKind::Cart && p.stage == Stage::First
                }
                // A reply with an id answers a request known only once it
                // is decoded: capture whenever the run merges values (a
                // cart); otherwise no get reply's values are read, and
                // collecting them cost about a tenth of a GET's generator
                // instructions.
                _ => self.generator.merges_values(),
            };
            match socket.codec.decode(&mut socket.recv, capture) {
                Ok(Some(reply)) => self.on_reply(s, reply, now, phase),
                Ok(None) => break,
                Err(e) => {
                    self.fail_socket(s, Failure::Parse(e));
                    return;
                }
            }
        }
        self.arm_recv(s);
    }

    fn on_reply(&mut self, s: usize, reply: Reply, now: u64, phase: &mut PhaseState) {
        let socket = &mut self.sockets[s];
        let pending = if socket.codec.ordered() {
            socket.inflight.pop_front()
        } else {
            let position = socket.inflight.iter().position(|p| Some(p.id) == reply.id);
            position.and_then(|i| socket.inflight.remove(i))
        };
        let Some(pending) = pending else {
            // A reply to nothing we sent: the stream is out of step.
            self.fail_socket(s, Failure::UnexpectedReply);
            return;
        };
        if pending.stage == Stage::First
            && pending.op.is_read_modify_write()
            && matches!(reply.outcome, Outcome::Hit { .. } | Outcome::Miss)
        {
            self.continue_read_modify_write(s, pending, &reply, now);
            return;
        }
        self.stats.completions += 1;
        let errored = reply.outcome == Outcome::ErrorReply;
        if errored {
            self.stats
                .record_error(reply.error.as_deref().unwrap_or("unknown"));
        }
        if let (Some(cache), Some(context)) = (&mut self.contexts, self.sockets[s].codec.context())
        {
            if !context.is_empty() && pending.op != OpKind::Ping {
                cache.put(pending.key, context);
            }
        }
        if phase.kind == PhaseKind::Load {
            if errored {
                self.stats.load_errors += 1;
            } else {
                self.stats.load_ok += 1;
            }
        } else if pending.measured {
            phase.last_completion_ns = phase.last_completion_ns.max(now);
            let latency_ns = now.saturating_sub(pending.intended_ns).max(1);
            if let Outcome::Hit { siblings } = reply.outcome {
                self.stats.record_read_hit(siblings);
            }
            let stats = self.stats.op(pending.op);
            if errored {
                stats.error_replies += 1;
                self.interval_errors += 1;
            } else {
                stats.ok += 1;
                if reply.outcome == Outcome::Miss {
                    stats.misses += 1;
                }
                stats.latency_ns.saturating_record(latency_ns);
                if self.setup.progress.is_some() {
                    self.interval.saturating_record(latency_ns);
                    self.interval_ok += 1;
                }
            }
        }
        if pending.op == OpKind::Insert && !errored {
            self.setup
                .space
                .inserts_acked
                .fetch_add(1, Ordering::Relaxed);
        }
        self.finish_slot(pending.client);
    }

    /// Sends the put of a read-modify-write on the same client, keeping its
    /// pipeline slot and its intended time, so the latency covers both trips.
    /// `s` is the socket the get's reply came on (its codec holds the
    /// context).
    fn continue_read_modify_write(&mut self, s: usize, pending: Pending, reply: &Reply, now: u64) {
        let mut value = std::mem::take(&mut self.value_buf);
        value.clear();
        if pending.op == OpKind::Cart {
            let siblings = reply.values.len() as u64;
            self.stats.cart_reads += 1;
            self.stats.siblings_seen += siblings;
            self.stats.siblings_max = self.stats.siblings_max.max(siblings);
            let item = self.rng.next_u64() & 0xffff_ffff;
            value.extend_from_slice(&cart_merge(&reply.values, item));
        } else {
            let len = self.generator.value_bytes(&mut self.rng) as usize;
            let pool = &self.setup.value_pool;
            let offset = self.rng.below((pool.len() - len) as u64 + 1) as usize;
            value.extend_from_slice(&pool[offset..offset + len]);
        }
        let next = Pending {
            stage: Stage::Second,
            sent_ns: now,
            ..pending
        };
        let mut context = std::mem::take(&mut self.context_buf);
        context.clear();
        let has_context = match self.sockets[s].codec.context() {
            Some(c) => {
                context.extend_from_slice(c);
                true
            }
            None => false,
        };
        let sent = self.send_request(
            next,
            RequestKind::Put {
                value_bytes: value.len() as u32,
            },
            Some(&value),
            has_context.then_some(&context[..]),
        );
        if !sent {
            self.unreachable(next);
        }
        self.value_buf = value;
        self.context_buf = context;
    }

    fn finish_slot(&mut self, c: u32) {
        let client = &mut self.clients[c as usize];
        assert!(client.in_flight > 0);
        client.in_flight -= 1;
        self.total_in_flight -= 1;
        self.ready.push(c);
    }

    fn check_timeouts(&mut self, now: u64) {
        for s in 0..self.sockets.len() {
            let socket = &self.sockets[s];
            if socket.dead {
                continue;
            }
            let oldest = socket.inflight.iter().map(|p| p.sent_ns).min();
            if let Some(sent_ns) = oldest {
                if now.saturating_sub(sent_ns) > self.setup.timeout_ns {
                    self.fail_socket(s, Failure::Timeout);
                }
            }
        }
    }

    /// Closes a socket after an error or a timeout: every request in flight
    /// on it is counted as failed, and its client stops (a client that cannot
    /// reach one endpoint would otherwise skew the key mix).
    fn fail_socket(&mut self, s: usize, failure: Failure) {
        let socket = &mut self.sockets[s];
        if socket.dead {
            return;
        }
        socket.dead = true;
        if self.stats.first_failure.is_none() {
            let peer = socket
                .stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            self.stats.first_failure = Some(format!("connection to {peer}: {failure}"));
        }
        // Shutting the socket down completes its in-flight recv and send, so
        // their buffers are released by the kernel before the engine drops them.
        // SAFETY: plain syscall on a descriptor this socket owns.
        unsafe { libc::shutdown(socket.stream.as_raw_fd(), libc::SHUT_RDWR) };
        socket.queued.clear();
        let lost: Vec<Pending> = socket.inflight.drain(..).collect();
        let c = socket.client;
        self.stats.connections_lost += 1;
        for pending in lost {
            if pending.measured {
                let stats = self.stats.op(pending.op);
                match failure {
                    Failure::Timeout => stats.timeouts += 1,
                    _ => stats.connection_errors += 1,
                }
                self.interval_errors += 1;
            } else if self.in_load {
                self.stats.load_errors += 1;
            }
            let client = &mut self.clients[c as usize];
            client.in_flight -= 1;
            self.total_in_flight -= 1;
        }
        let client = &mut self.clients[c as usize];
        if client.dead {
            return;
        }
        if self.setup.router.fails_over() {
            // Against a cluster the client fails over: its later requests for
            // this endpoint's partitions go to the next replica
            // (`send_request`), and the endpoint stays avoided for the rest of
            // the run. The slots its lost requests held are free again, and
            // only `fill` ever issues into them, so the client must be ready
            // now: a client left out of `ready` with nothing in flight would
            // never issue again, and a load phase or an `--ops` run, which
            // end only when every key or op is issued, would then wait
            // forever on sockets that are all shut down. If no connection
            // can take its next request, `fill` stops it (`unreachable`).
            self.ready.push(c);
        } else {
            client.dead = true;
            self.live_clients -= 1;
            // The client's other sockets carry on until their requests finish
            // but get no new ones.
        }
    }

    fn publish_progress(&mut self) {
        let Some(sender) = &self.setup.progress else {
            return;
        };
        let latency_ns = std::mem::replace(&mut self.interval, new_histogram());
        // The receiver only goes away at the end of the run; a failed send
        // then loses nothing that matters.
        let _ = sender.send(Progress {
            ok: std::mem::take(&mut self.interval_ok),
            errors: std::mem::take(&mut self.interval_errors),
            latency_ns,
        });
    }

    /// Closes every socket and waits for the kernel to hand back every buffer.
    pub fn shutdown(&mut self) {
        for socket in &mut self.sockets {
            // SAFETY: plain syscall on a descriptor the socket owns.
            unsafe { libc::shutdown(socket.stream.as_raw_fd(), libc::SHUT_RDWR) };
            socket.dead = true;
        }
        let deadline = now_ns() + 1_000_000_000;
        while self.sockets.iter().any(|s| s.recv_busy || s.send_busy) && now_ns() < deadline {
            if self.submit_and_wait(10_000_000).is_err() {
                break;
            }
            while let Some(cqe) = self.ring.completion().next() {
                let socket = &mut self.sockets[(cqe.user_data() >> TAG_BITS) as usize];
                if cqe.user_data() & 1 == 0 {
                    socket.recv_busy = false;
                } else {
                    socket.send_busy = false;
                }
            }
        }
        // If the kernel still holds buffers (it never should after shutdown),
        // leak them rather than free memory it may write to.
        if self.sockets.iter().any(|s| s.recv_busy || s.send_busy) {
            std::mem::forget(std::mem::take(&mut self.sockets));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestKind {
    Ping,
    Get,
    Put { value_bytes: u32 },
}

/// Why a socket was given up.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// recv or send failed with this errno.
    Io(i32),
    /// The reply stream broke the protocol.
    Parse(crate::codec::ParseError),
    /// A reply matched no request in flight.
    UnexpectedReply,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "a request timed out"),
            Failure::Closed => write!(f, "the server closed the connection"),
            Failure::Io(errno) => write!(f, "{}", std::io::Error::from_raw_os_error(*errno)),
            Failure::Parse(e) => write!(f, "{e}"),
            Failure::UnexpectedReply => write!(f, "a reply matched no request in flight"),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's version as (major, minor), from `uname -r`'s text.
    fn kernel_version() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (next(), next())
    }

    #[test]
    fn drawing_ahead_keeps_the_order_and_sees_each_value_once() {
        let mut queue = VecDeque::new();
        let mut next = 0u32;
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for _ in 0..10 {
            out.push(draw_ahead(
                &mut queue,
                4,
                || {
                    next += 1;
                    next
                },
                |v| seen.push(*v),
            ));
            assert_eq!(queue.len(), 4, "four drawn ahead");
        }
        assert_eq!(
            out,
            (1..=10).collect::<Vec<_>>(),
            "in drawn order, none lost"
        );
        assert_eq!(
            seen,
            (1..=14).collect::<Vec<_>>(),
            "each seen once, when drawn"
        );
    }

    #[test]
    fn a_wait_batch_is_two_positive_numbers() {
        assert_eq!(
            WaitBatch::parse("64,50"),
            Some(WaitBatch {
                want: 64,
                min_wait_us: 50
            })
        );
        assert_eq!(
            WaitBatch::parse(" 16 , 10 "),
            Some(WaitBatch {
                want: 16,
                min_wait_us: 10
            })
        );
        for bad in [
            "", "64", "64,", ",50", "0,50", "64,0", "-1,5", "a,b", "1,2,3",
        ] {
            assert_eq!(WaitBatch::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_ring_mode_is_granted_where_the_kernel_has_it() {
        // A wrong flag combination fails with EINVAL like an old kernel does,
        // and would silently fall back; on a kernel that has every flag, each
        // mode must be granted as asked.
        let kernel = kernel_version();
        for (mode, since) in [
            (RingMode::Deferred, (6, 1)),
            (RingMode::Cooperative, (5, 19)),
            (RingMode::Interrupting, (0, 0)),
        ] {
            let (_ring, granted) = build_ring(8, mode).expect("a ring of some mode");
            if kernel >= since {
                assert_eq!(granted, mode, "kernel {kernel:?}");
            }
        }
    }
}
