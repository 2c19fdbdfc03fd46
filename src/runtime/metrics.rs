//! Per-shard metrics and their collection at scrape time.
//!
//! Each shard counts into its own [`ShardMetrics`] — plain `Cell`s and
//! `RefCell`s, no atomics, no locks on the request path. Nothing crosses
//! cores until someone asks: every shard publishes a [`ShardSnapshot`] (plain
//! data, `Send`) into its slot of the node's [`MetricsHub`] when a scrape has
//! asked for one (checked on the shard's 10 ms tick) and at least once a
//! second. The scraper (the admin HTTP server on shard 0, or an admin
//! command) bumps the hub's generation, waits briefly for every shard to
//! publish, and renders the snapshots: per-shard series with a `shard`
//! label, merged at scrape time (docs/metrics.md lists every name).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::antientropy::AaeStats;
use crate::observe::histogram::{Histogram, LATENCY_BOUNDS_US, SIBLING_BOUNDS};
use crate::observe::hotkeys::{merge_top, HotKey, SpaceSaving};
use crate::observe::prometheus::{Encoder, Kind};
use crate::protocol::Request;
use crate::storage::StoreStats;

use super::scheduler::{SchedulerSnapshot, JOB_NAMES};

/// Client operations counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Get = 0,
    Put = 1,
    Delete = 2,
    Other = 3,
}

/// Number of [`Op`] values.
const OPS: usize = 4;
const OP_NAMES: [&str; OPS] = ["get", "put", "delete", "other"];

impl Op {
    pub(crate) fn of(request: &Request) -> Op {
        match request {
            Request::Get { .. } => Op::Get,
            Request::Put { .. } => Op::Put,
            Request::Delete { .. } => Op::Delete,
            Request::Ping | Request::GetRoutingTable => Op::Other,
        }
    }
}

/// Keys a shard's hot-key summary holds.
pub(crate) const HOT_KEYS_PER_SHARD: usize = 32;
/// One request in this many is offered to the hot-key summary (its counts
/// are scaled back up): keeps the summary's eviction scan off most requests.
pub(crate) const HOT_KEY_SAMPLE_EVERY: u64 = 4;
/// A shard publishes a snapshot at least this often, scrape or not (the
/// admin commands read the latest one without waiting).
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a scrape waits for every shard's fresh snapshot before it
/// renders what it has (a shard busy for longer shows its previous one).
const SCRAPE_WAIT: Duration = Duration::from_millis(250);

/// What one shard counts; lives in its `ShardState`, touched only by its
/// own executor.
pub(crate) struct ShardMetrics {
    requests: [Cell<u64>; OPS],
    errors: [Cell<u64>; OPS],
    /// Requests that failed to decode (no operation known).
    pub invalid: Cell<u64>,
    /// Requests answered `WrongOwner` (routed with an old table).
    pub wrong_owner: Cell<u64>,
    /// Latency of locally handled requests, by operation, in microseconds.
    latency: RefCell<[Histogram; OPS]>,
    /// Live siblings returned per successful get.
    siblings: RefCell<Histogram>,
    /// Hints written by this shard as a fallback (sloppy quorum).
    pub hints_stored: Cell<u64>,
    /// Hints deleted after their primary acknowledged the replay.
    pub hints_replayed: Cell<u64>,
    /// Keys this shard pushed to new owners (partition handoff).
    pub handoff_keys_sent: Cell<u64>,
    hot: RefCell<SpaceSaving>,
    hot_tick: Cell<u64>,
    /// The batch being counted by `record_in_batch`: when its bytes were read,
    /// and its requests and errors by operation, not yet in `requests`,
    /// `errors` and `latency` (`settle_batch` adds them).
    batch_began: Cell<Option<Instant>>,
    batch_requests: [Cell<u64>; OPS],
    batch_errors: [Cell<u64>; OPS],
    /// The hub generation this shard last published.
    published: Cell<u64>,
    published_at: Cell<Option<Instant>>,
}

impl ShardMetrics {
    pub(crate) fn new() -> ShardMetrics {
        ShardMetrics {
            requests: Default::default(),
            errors: Default::default(),
            invalid: Cell::new(0),
            wrong_owner: Cell::new(0),
            latency: RefCell::new(std::array::from_fn(|_| Histogram::new(LATENCY_BOUNDS_US))),
            siblings: RefCell::new(Histogram::new(SIBLING_BOUNDS)),
            hints_stored: Cell::new(0),
            hints_replayed: Cell::new(0),
            handoff_keys_sent: Cell::new(0),
            hot: RefCell::new(SpaceSaving::new(HOT_KEYS_PER_SHARD)),
            hot_tick: Cell::new(0),
            batch_began: Cell::new(None),
            batch_requests: Default::default(),
            batch_errors: Default::default(),
            published: Cell::new(0),
            published_at: Cell::new(None),
        }
    }

    /// Counts a request for `key` towards the hot keys (sampled).
    pub(crate) fn offer_key(&self, key: Option<&[u8]>) {
        let Some(key) = key else { return };
        let tick = self.hot_tick.get().wrapping_add(1);
        self.hot_tick.set(tick);
        if tick % HOT_KEY_SAMPLE_EVERY == 0 {
            self.hot
                .borrow_mut()
                .offer_weighted(key, HOT_KEY_SAMPLE_EVERY);
        }
    }

    /// Counts one locally handled request.
    pub(crate) fn record(&self, op: Op, elapsed: Duration, failed: bool) {
        self.count(
            op as usize,
            1,
            u64::from(failed),
            elapsed.as_micros() as u64,
        );
    }

    /// Adds `n` requests of operation `i`, `errors` of them failed, each
    /// `elapsed_us` long.
    fn count(&self, i: usize, n: u64, errors: u64, elapsed_us: u64) {
        Self::bump(&self.requests[i], n);
        Self::bump(&self.errors[i], errors);
        self.latency.borrow_mut()[i].record_n(elapsed_us, n);
    }

    /// Counts one request answered in place, in the batch of requests read
    /// at `began` (one read of a connection). The batch's requests get one
    /// latency, taken when the batch ends (`settle_batch`): the caller sends
    /// their replies together then, so that is the latency their client sees,
    /// and the batch pays one clock read instead of one per request (the
    /// clock was 1.5% of a pipelined PUT's server CPU, 2.5-2.9% of a GET's).
    /// A request of another batch settles the one before it first, so a
    /// batch that was not settled is counted late, never lost or merged.
    pub(crate) fn record_in_batch(&self, op: Op, began: Instant, failed: bool) {
        if self.batch_began.get() != Some(began) {
            self.settle_batch();
            self.batch_began.set(Some(began));
        }
        let i = op as usize;
        Self::bump(&self.batch_requests[i], 1);
        if failed {
            Self::bump(&self.batch_errors[i], 1);
        }
    }

    /// Counts the batch `record_in_batch` holds, at the time since its read.
    pub(crate) fn settle_batch(&self) {
        let Some(began) = self.batch_began.take() else {
            return;
        };
        let elapsed_us = began.elapsed().as_micros() as u64;
        for i in 0..OPS {
            let n = self.batch_requests[i].take();
            if n > 0 {
                self.count(i, n, self.batch_errors[i].take(), elapsed_us);
            }
        }
    }

    /// Counts the siblings a successful get returned.
    pub(crate) fn record_siblings(&self, count: usize) {
        self.siblings.borrow_mut().record(count as u64);
    }

    /// Bumps a counter cell.
    pub(crate) fn bump(cell: &Cell<u64>, by: u64) {
        cell.set(cell.get() + by);
    }

    /// Foreground latency of every operation together, for the
    /// utilization monitor.
    pub(crate) fn foreground_latency(&self) -> Histogram {
        self.settle_batch();
        let latency = self.latency.borrow();
        let mut all = Histogram::new(LATENCY_BOUNDS_US);
        for h in latency.iter() {
            all.merge(h);
        }
        all
    }

    /// Whether this shard should publish now: a scrape asked for a newer
    /// generation, or the last publication is old.
    pub(crate) fn publish_due(&self, hub: &MetricsHub, now: Instant) -> Option<u64> {
        let wanted = hub.wanted.load(Ordering::Acquire);
        let stale = self
            .published_at
            .get()
            .is_none_or(|at| now.duration_since(at) >= PUBLISH_INTERVAL);
        (wanted > self.published.get() || stale).then_some(wanted)
    }

    /// Builds this shard's snapshot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn snapshot(
        &self,
        shard: usize,
        store: StoreStats,
        hints_held: usize,
        riders: u64,
        connections: usize,
        forwarded: u64,
        handoff_received: u64,
        scheduler: SchedulerSnapshot,
        aae: AaeStats,
    ) -> ShardSnapshot {
        self.settle_batch();
        ShardSnapshot {
            shard,
            requests: std::array::from_fn(|i| self.requests[i].get()),
            errors: std::array::from_fn(|i| self.errors[i].get()),
            invalid: self.invalid.get(),
            wrong_owner: self.wrong_owner.get(),
            latency: self.latency.borrow().clone(),
            siblings: self.siblings.borrow().clone(),
            store,
            hints_held,
            riders,
            hints_stored: self.hints_stored.get(),
            hints_replayed: self.hints_replayed.get(),
            handoff_keys_sent: self.handoff_keys_sent.get(),
            handoff_received,
            connections,
            forwarded,
            hot: self.hot.borrow().top(HOT_KEYS_PER_SHARD),
            scheduler,
            aae,
        }
    }

    /// Puts `snapshot` into the hub as generation `generation`.
    pub(crate) fn publish(
        &self,
        hub: &MetricsHub,
        generation: u64,
        now: Instant,
        snapshot: ShardSnapshot,
    ) {
        let shard = snapshot.shard;
        if let Ok(mut slot) = hub.slots[shard].lock() {
            *slot = Some((generation, Arc::new(snapshot)));
        }
        self.published.set(generation);
        self.published_at.set(Some(now));
    }
}

/// One shard's numbers at one moment; crosses cores inside the hub.
#[derive(Clone, Debug)]
pub(crate) struct ShardSnapshot {
    pub shard: usize,
    requests: [u64; OPS],
    errors: [u64; OPS],
    invalid: u64,
    wrong_owner: u64,
    latency: [Histogram; OPS],
    siblings: Histogram,
    store: StoreStats,
    hints_held: usize,
    /// Local writes that rode on another write of their key
    /// (`Replica::riders_total`).
    riders: u64,
    hints_stored: u64,
    hints_replayed: u64,
    handoff_keys_sent: u64,
    handoff_received: u64,
    connections: usize,
    forwarded: u64,
    pub hot: Vec<HotKey>,
    pub scheduler: SchedulerSnapshot,
    /// This shard's anti-entropy counters (docs/anti-entropy.md).
    aae: AaeStats,
}

impl ShardSnapshot {
    /// Whether this shard's store is in the failed state.
    pub(crate) fn store_failed(&self) -> bool {
        self.store.failed
    }
}

/// A published snapshot and the hub generation it answered.
type Published = (u64, Arc<ShardSnapshot>);

/// One per-shard series: name, help text, and how to read it from a snapshot.
type ShardSeries = (&'static str, &'static str, fn(&ShardSnapshot) -> f64);

/// Where shards publish their snapshots; shared by every shard of a node.
pub(crate) struct MetricsHub {
    /// The newest generation a scraper asked for.
    wanted: AtomicU64,
    /// Each shard's latest snapshot and the generation it answered.
    slots: Vec<Mutex<Option<Published>>>,
}

impl MetricsHub {
    pub(crate) fn new(shards: usize) -> MetricsHub {
        MetricsHub {
            wanted: AtomicU64::new(0),
            slots: (0..shards).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The latest snapshot of every shard that has published one.
    pub(crate) fn latest(&self) -> Vec<Arc<ShardSnapshot>> {
        self.slots
            .iter()
            .filter_map(|slot| slot.lock().ok()?.as_ref().map(|(_, s)| s.clone()))
            .collect()
    }

    /// Asks every shard for a fresh snapshot and waits (on this executor's
    /// timer, never blocking it) until all answered or `SCRAPE_WAIT` passed.
    pub(crate) async fn collect(&self) -> Vec<Arc<ShardSnapshot>> {
        let generation = self.wanted.fetch_add(1, Ordering::AcqRel) + 1;
        let began = Instant::now();
        loop {
            let fresh = self.slots.iter().all(|slot| {
                slot.lock()
                    .ok()
                    .and_then(|s| s.as_ref().map(|(g, _)| *g >= generation))
                    .unwrap_or(false)
            });
            if fresh || began.elapsed() >= SCRAPE_WAIT {
                return self.latest();
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Node-level facts rendered beside the shard series.
pub(crate) struct NodeFacts {
    pub node_id: u64,
    pub ring_epoch: u64,
    pub members: usize,
    pub unreachable: usize,
    pub up_seconds: f64,
}

/// Renders every shard's snapshot in the Prometheus text format.
pub(crate) fn render(node: &NodeFacts, shards: &[Arc<ShardSnapshot>]) -> String {
    let mut e = Encoder::new();
    let node_id = format!("{:016x}", node.node_id);
    e.family(
        "dynakv_node_info",
        "Constant 1, labelled with the node id.",
        Kind::Gauge,
    );
    e.sample("dynakv_node_info", &[("node", &node_id)], 1.0);
    e.family(
        "dynakv_up_seconds",
        "Seconds since the node started.",
        Kind::Gauge,
    );
    e.sample("dynakv_up_seconds", &[], node.up_seconds);
    e.family(
        "dynakv_ring_epoch",
        "The ring (membership) epoch this node routes by.",
        Kind::Gauge,
    );
    e.sample("dynakv_ring_epoch", &[], node.ring_epoch as f64);
    e.family(
        "dynakv_members",
        "Cluster members this node knows.",
        Kind::Gauge,
    );
    e.sample("dynakv_members", &[], node.members as f64);
    e.family(
        "dynakv_members_unreachable",
        "Members this node's failure detector suspects.",
        Kind::Gauge,
    );
    e.sample("dynakv_members_unreachable", &[], node.unreachable as f64);

    let labels = |s: &ShardSnapshot| s.shard.to_string();
    let per_op =
        |e: &mut Encoder, name: &str, help: &str, pick: fn(&ShardSnapshot) -> &[u64; OPS]| {
            e.family(name, help, Kind::Counter);
            for s in shards {
                let shard = labels(s);
                for (i, op) in OP_NAMES.iter().enumerate() {
                    e.sample(name, &[("shard", &shard), ("op", op)], pick(s)[i] as f64);
                }
            }
        };
    per_op(
        &mut e,
        "dynakv_requests_total",
        "Client requests handled by this shard, by operation.",
        |s| &s.requests,
    );
    per_op(
        &mut e,
        "dynakv_request_errors_total",
        "Client requests answered with an error, by operation.",
        |s| &s.errors,
    );
    let counters: &[ShardSeries] = &[
        (
            "dynakv_requests_invalid_total",
            "Request frames that failed to decode or validate.",
            |s| s.invalid as f64,
        ),
        (
            "dynakv_requests_wrong_owner_total",
            "Requests answered WrongOwner (client routed with an old table).",
            |s| s.wrong_owner as f64,
        ),
        (
            "dynakv_requests_forwarded_total",
            "Requests forwarded once to the shard or node holding the key.",
            |s| s.forwarded as f64,
        ),
        ("dynakv_store_flushes_total", "Write-buffer flushes.", |s| {
            s.store.flushes as f64
        }),
        (
            "dynakv_store_syncs_total",
            "Group-commit fdatasync rounds.",
            |s| s.store.syncs as f64,
        ),
        (
            "dynakv_store_written_bytes_total",
            "Bytes handed to the disk by flushes.",
            |s| s.store.bytes_written as f64,
        ),
        (
            "dynakv_store_segments_compacted_total",
            "Log segments removed by compaction.",
            |s| s.store.segments_compacted as f64,
        ),
        (
            "dynakv_store_segments_compacted_sparse_total",
            "Of those, mostly dead segments compacted from the index, only the stretches around their live records read.",
            |s| s.store.segments_compacted_sparse as f64,
        ),
        (
            "dynakv_write_riders_total",
            "Puts and replica merges that rode on another write of the same key instead of rewriting it (a hot key's queue).",
            |s| s.riders as f64,
        ),
        (
            "dynakv_hints_stored_total",
            "Hints written as a fallback replica (sloppy quorum).",
            |s| s.hints_stored as f64,
        ),
        (
            "dynakv_hints_replayed_total",
            "Hints delivered to their primary and deleted.",
            |s| s.hints_replayed as f64,
        ),
        (
            "dynakv_handoff_keys_sent_total",
            "Keys pushed to a partition's new owners after a ring change.",
            |s| s.handoff_keys_sent as f64,
        ),
        (
            "dynakv_handoff_received_total",
            "Handoff and hint-replay messages accepted into the background queue.",
            |s| s.handoff_received as f64,
        ),
        (
            "dynakv_aae_exchanges_started_total",
            "Anti-entropy exchanges this shard started with another primary.",
            |s| s.aae.exchanges_started as f64,
        ),
        (
            "dynakv_aae_exchanges_in_sync_total",
            "Anti-entropy comparisons (either side) that found the trees equal.",
            |s| s.aae.exchanges_in_sync as f64,
        ),
        (
            "dynakv_aae_exchanges_repaired_total",
            "Anti-entropy comparisons (either side) that found and repaired differences.",
            |s| s.aae.exchanges_repaired as f64,
        ),
        (
            "dynakv_aae_exchanges_timed_out_total",
            "Anti-entropy exchanges abandoned because the peer went silent.",
            |s| s.aae.exchanges_timed_out as f64,
        ),
        (
            "dynakv_aae_keys_sent_total",
            "Stored sibling sets sent to a peer replica to merge (repairs given).",
            |s| s.aae.keys_sent as f64,
        ),
        (
            "dynakv_aae_keys_received_total",
            "Sibling sets received from a peer replica and merged (repairs taken).",
            |s| s.aae.keys_received as f64,
        ),
        (
            "dynakv_aae_sent_bytes_total",
            "Bytes of anti-entropy messages sent.",
            |s| s.aae.bytes_sent as f64,
        ),
        (
            "dynakv_aae_trees_built_total",
            "Merkle trees built from the store (start-up, new partitions, damage).",
            |s| s.aae.trees_built as f64,
        ),
        (
            "dynakv_tombstones_purged_total",
            "Tombstones collected once every primary was known to hold them.",
            |s| s.aae.tombstones_purged as f64,
        ),
        (
            "dynakv_aae_corrupt_keys_requested_total",
            "Damaged records asked back from the other primaries.",
            |s| s.aae.corrupt_keys_requested as f64,
        ),
    ];
    for (name, help, value) in counters {
        e.family(name, help, Kind::Counter);
        for s in shards {
            e.sample(name, &[("shard", &labels(s))], value(s));
        }
    }
    let gauges: &[ShardSeries] = &[
        ("dynakv_connections", "Open client connections.", |s| {
            s.connections as f64
        }),
        (
            "dynakv_store_keys",
            "Live keys in the store (data and hints).",
            |s| s.store.keys as f64,
        ),
        (
            "dynakv_store_live_bytes",
            "Bytes of records the index points at.",
            |s| s.store.live_bytes as f64,
        ),
        (
            "dynakv_store_dead_bytes",
            "Bytes of segments no longer pointed at (compaction reclaims them).",
            |s| s.store.dead_bytes as f64,
        ),
        ("dynakv_store_segments", "Log segment files.", |s| {
            f64::from(s.store.segments)
        }),
        (
            "dynakv_store_buffered_bytes",
            "Bytes in the write buffer.",
            |s| s.store.buffered_bytes as f64,
        ),
        (
            "dynakv_store_failed",
            "1 when the store is in the failed state.",
            |s| f64::from(u8::from(s.store.failed)),
        ),
        (
            "dynakv_hints_held",
            "Hints this shard holds for unreachable primaries.",
            |s| s.hints_held as f64,
        ),
        (
            "dynakv_scheduler_background_shares",
            "Current glommio shares of the background task queue.",
            |s| s.scheduler.background_shares as f64,
        ),
        (
            "dynakv_scheduler_foreground_shares",
            "Shares of the foreground task queue (fixed).",
            |s| s.scheduler.foreground_shares as f64,
        ),
        (
            "dynakv_scheduler_busy_ratio",
            "Fraction of the last monitor period the executor was running tasks.",
            |s| s.scheduler.busy_fraction,
        ),
        (
            "dynakv_scheduler_foreground_p99_seconds",
            "Upper bound of foreground p99 latency in the last monitor period (0 when idle).",
            |s| {
                s.scheduler
                    .foreground_p99_us
                    .map_or(0.0, |v| v.min(10_000_000) as f64 * 1e-6)
            },
        ),
        (
            "dynakv_scheduler_background_inbox",
            "Handoff and hint-replay messages waiting for the background queue.",
            |s| s.scheduler.inbox as f64,
        ),
    ];
    for (name, help, value) in gauges {
        e.family(name, help, Kind::Gauge);
        for s in shards {
            e.sample(name, &[("shard", &labels(s))], value(s));
        }
    }
    for (name, help, done) in [
        (
            "dynakv_background_work_done_total",
            "Background work done, by job (bytes for compaction, keys or messages otherwise).",
            true,
        ),
        (
            "dynakv_background_work_deferred_total",
            "Times a background job waited for its rate limit, by job.",
            false,
        ),
    ] {
        e.family(name, help, Kind::Counter);
        for s in shards {
            let shard = labels(s);
            for (j, job) in JOB_NAMES.iter().enumerate() {
                let v = if done {
                    s.scheduler.done[j]
                } else {
                    s.scheduler.deferred[j]
                };
                e.sample(name, &[("shard", &shard), ("job", job)], v as f64);
            }
        }
    }
    e.family("dynakv_background_inbox_dropped_total", "Handoff and hint-replay messages dropped because the background inbox was full (the sender retries).", Kind::Counter);
    for s in shards {
        e.sample(
            "dynakv_background_inbox_dropped_total",
            &[("shard", &labels(s))],
            s.scheduler.inbox_dropped as f64,
        );
    }
    e.family(
        "dynakv_request_duration_seconds",
        "Latency of locally handled client requests, by operation.",
        Kind::Histogram,
    );
    for s in shards {
        let shard = labels(s);
        for (i, op) in OP_NAMES.iter().enumerate() {
            e.histogram(
                "dynakv_request_duration_seconds",
                &[("shard", &shard), ("op", op)],
                &s.latency[i],
                1e6,
            );
        }
    }
    e.family(
        "dynakv_get_siblings",
        "Live siblings returned per successful get.",
        Kind::Histogram,
    );
    for s in shards {
        e.histogram(
            "dynakv_get_siblings",
            &[("shard", &labels(s))],
            &s.siblings,
            1.0,
        );
    }
    e.family(
        "dynakv_hot_key_requests",
        "Estimated requests for the shard's most requested keys (space-saving top-K, sampled).",
        Kind::Gauge,
    );
    for s in shards {
        let shard = labels(s);
        for hot in &s.hot {
            let key = String::from_utf8_lossy(&hot.key);
            e.sample(
                "dynakv_hot_key_requests",
                &[("shard", &shard), ("key", &key)],
                hot.count as f64,
            );
        }
    }
    e.finish()
}

/// `dynakv admin hotkeys`: the node's most requested keys (from each
/// shard's latest snapshot, at most a second old), text or JSON.
pub(crate) fn hotkeys_text(shards: &[Arc<ShardSnapshot>], json: bool) -> String {
    let lists: Vec<Vec<HotKey>> = shards.iter().map(|s| s.hot.clone()).collect();
    let top = merge_top(&lists, HOT_KEYS_PER_SHARD);
    let shard_of = |key: &[u8]| {
        shards
            .iter()
            .find(|s| s.hot.iter().any(|h| h.key == key))
            .map_or(0, |s| s.shard)
    };
    let mut out = String::new();
    use std::fmt::Write;
    if json {
        out.push_str("{\"sample_every\": ");
        let _ = write!(out, "{HOT_KEY_SAMPLE_EVERY}, \"keys\": [");
        for (i, hot) in top.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"key\": {}, \"shard\": {}, \"count\": {}, \"error\": {}}}",
                if i == 0 { "" } else { ", " },
                crate::json::string(&String::from_utf8_lossy(&hot.key)),
                shard_of(&hot.key),
                hot.count,
                hot.error
            );
        }
        out.push_str("]}");
    } else {
        let _ = writeln!(
            out,
            "most requested keys (estimates; one request in {HOT_KEY_SAMPLE_EVERY} sampled):"
        );
        for hot in &top {
            let _ = writeln!(
                out,
                "  {:>10}  (±{:<6}) shard {}  {}",
                hot.count,
                hot.error,
                shard_of(&hot.key),
                String::from_utf8_lossy(&hot.key)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(metrics: &ShardMetrics, op: Op) -> (u64, u64, u64) {
        let i = op as usize;
        (
            metrics.requests[i].get(),
            metrics.errors[i].get(),
            metrics.latency.borrow()[i].count(),
        )
    }

    #[test]
    fn a_batch_is_counted_once_it_settles_with_one_latency() {
        let metrics = ShardMetrics::new();
        let read = Instant::now() - Duration::from_millis(3);
        metrics.record_in_batch(Op::Put, read, false);
        metrics.record_in_batch(Op::Put, read, true);
        metrics.record_in_batch(Op::Get, read, false);
        assert_eq!(count(&metrics, Op::Put), (0, 0, 0), "not before it settles");
        metrics.settle_batch();
        assert_eq!(count(&metrics, Op::Put), (2, 1, 2));
        assert_eq!(count(&metrics, Op::Get), (1, 0, 1));
        // Counted from the read: at least the 3 ms since it.
        let put = &metrics.latency.borrow()[Op::Put as usize];
        assert!(put.sum() >= 2 * 3_000, "{}", put.sum());
        assert_eq!(put.quantile_upper_bound(0.0), put.quantile_upper_bound(1.0));
        metrics.settle_batch();
        assert_eq!(count(&metrics, Op::Put), (2, 1, 2), "settled once");
    }

    #[test]
    fn another_batch_settles_the_one_before_and_readers_settle_the_last() {
        let metrics = ShardMetrics::new();
        let first = Instant::now() - Duration::from_millis(20);
        let second = Instant::now();
        metrics.record_in_batch(Op::Get, first, false);
        metrics.record_in_batch(Op::Get, second, false);
        assert_eq!(count(&metrics, Op::Get), (1, 0, 1), "the first settled");
        assert!(metrics.latency.borrow()[Op::Get as usize].sum() >= 20_000);
        // The utilization monitor's and a scrape's reads see the open batch.
        assert_eq!(metrics.foreground_latency().count(), 2);
        assert_eq!(count(&metrics, Op::Get), (2, 0, 2));
        metrics.record_in_batch(Op::Delete, second, false);
        metrics.record(Op::Delete, Duration::from_micros(5), true);
        assert_eq!(
            count(&metrics, Op::Delete),
            (1, 1, 1),
            "direct counts stay direct"
        );
        metrics.settle_batch();
        assert_eq!(count(&metrics, Op::Delete), (2, 1, 2));
    }
}
