//! The per-shard background scheduler (design guide §8, Dynamo §6.5).
//!
//! Two glommio task queues per shard: `foreground` (fixed shares, latency
//! matters) runs client requests, replica traffic, gossip and flushing;
//! `background` runs compaction, hint replay, partition handoff, and the
//! receiving side of handoff and hint streams. The background queue's shares
//! are `Shares::Dynamic`, read from a cell that the utilization monitor
//! ([`crate::observe::shares::UtilizationMonitor`]) sets every period from
//! the foreground's measured p99 latency and the executor's busy time.
//! Background jobs also pace themselves with [`Scheduler::pace`]: a rate
//! limit per job, scaled by the same monitor, so a job that does I/O rather
//! than CPU work backs off too. Hint replay takes the same scaled rate in
//! the replica machine, which is told the share and starts replays by it
//! (`Replica::set_background_share`), so no replay deadline runs while a
//! replay waits for its turn. A job that has to wait counts a deferral;
//! what it finished counts as work done. Both appear in `admin status` and
//! in the metrics.
//!
//! The receiving side is protected by the [`Inbox`]: handoff and hint-replay
//! messages from other nodes are not merged on arrival but queued (bounded;
//! past the bound they are dropped and the sender retries later) and drained
//! by a task in the background queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{Latency, Shares, SharesManager, TaskQueueHandle};

use crate::membership::NodeId;
use crate::observe::histogram::Histogram;
use crate::observe::shares::{
    PeriodSample, SharesPolicy, UtilizationMonitor, Verdict, FOREGROUND_SHARES,
};
use crate::replica::ReplicaMessage;

/// Background jobs, counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Job {
    /// Log compaction (bytes examined).
    Compaction = 0,
    /// Partition handoff, sending side (keys).
    Handoff = 1,
    /// Hint replay, sending side (hint reads and deletes).
    HintReplay = 2,
    /// Handoff and hint-replay messages received from other nodes.
    Inbound = 3,
}

/// Number of [`Job`] values.
pub(crate) const JOBS: usize = 4;
/// Label of each job in the metrics and the status output.
pub(crate) const JOB_NAMES: [&str; JOBS] = ["compaction", "handoff", "hint_replay", "inbound"];

/// How often the utilization monitor measures and sets shares.
pub(crate) const MONITOR_PERIOD: Duration = Duration::from_millis(100);
/// The most handoff and hint-replay messages waiting for the background queue.
pub(crate) const INBOX_MAX: usize = 4096;
/// Inbound messages merged per turn of the inbox task before it paces.
const INBOX_BATCH: usize = 32;

/// The background queue's shares, read by glommio every adjustment period.
struct DynamicShares(Rc<Cell<usize>>);

impl SharesManager for DynamicShares {
    fn shares(&self) -> usize {
        self.0.get()
    }

    fn adjustment_period(&self) -> Duration {
        MONITOR_PERIOD
    }
}

/// Rate limits of the background jobs at full share, in units per second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobRates {
    pub per_second: [u64; JOBS],
}

/// Messages from other nodes that wait for the background queue.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: RefCell<VecDeque<(NodeId, ReplicaMessage)>>,
    dropped: Cell<u64>,
    accepted: Cell<u64>,
    /// `inbox_loop`, waiting for the queue to stop being empty.
    waker: RefCell<Option<std::task::Waker>>,
}

/// One shard's scheduler state.
pub(crate) struct Scheduler {
    pub foreground: TaskQueueHandle,
    pub background: TaskQueueHandle,
    shares: Rc<Cell<usize>>,
    monitor: RefCell<UtilizationMonitor>,
    rates: JobRates,
    next_allowed: [Cell<Option<Instant>>; JOBS],
    done: [Cell<u64>; JOBS],
    deferred: [Cell<u64>; JOBS],
    busy: Cell<f64>,
    p99_us: Cell<Option<u64>>,
    pub inbox: Inbox,
}

/// The scheduler's state at one moment, for metrics and `admin status`.
#[derive(Clone, Debug, Default)]
pub(crate) struct SchedulerSnapshot {
    pub foreground_shares: usize,
    pub background_shares: usize,
    pub busy_fraction: f64,
    pub foreground_p99_us: Option<u64>,
    pub verdict: &'static str,
    pub done: [u64; JOBS],
    pub deferred: [u64; JOBS],
    pub inbox: usize,
    pub inbox_dropped: u64,
}

impl Scheduler {
    /// Creates the shard's two task queues.
    pub(crate) fn new(policy: SharesPolicy, rates: JobRates) -> Result<Rc<Scheduler>, String> {
        let monitor = UtilizationMonitor::new(policy);
        let shares = Rc::new(Cell::new(monitor.shares()));
        let executor = glommio::executor();
        let foreground = executor.create_task_queue(
            Shares::Static(FOREGROUND_SHARES),
            Latency::Matters(Duration::from_millis(1)),
            "foreground",
        );
        let background = executor.create_task_queue(
            Shares::Dynamic(Rc::new(DynamicShares(shares.clone()))),
            Latency::NotImportant,
            "background",
        );
        Ok(Rc::new(Scheduler {
            foreground,
            background,
            shares,
            monitor: RefCell::new(monitor),
            rates,
            next_allowed: Default::default(),
            done: Default::default(),
            deferred: Default::default(),
            busy: Cell::new(0.0),
            p99_us: Cell::new(None),
            inbox: Inbox::default(),
        }))
    }

    /// Counts `units` of work by `job` and, when the job ran ahead of its
    /// rate limit (scaled by the monitor's current share), waits until it is
    /// back on schedule, counting a deferral. Always lets other tasks run.
    pub(crate) async fn pace(&self, job: Job, units: u64) {
        let j = job as usize;
        self.done[j].set(self.done[j].get() + units);
        let fraction = self.monitor.borrow().rate_fraction();
        let rate = (self.rates.per_second[j] as f64 * fraction).max(1.0);
        let cost = Duration::from_secs_f64(units as f64 / rate);
        let now = Instant::now();
        // A job idle for a while starts afresh rather than with a burst.
        let start = self.next_allowed[j].get().map_or(now, |t| t.max(now));
        self.next_allowed[j].set(Some(start + cost));
        if start > now {
            self.deferred[j].set(self.deferred[j].get() + 1);
            glommio::timer::sleep(start - now).await;
        } else {
            glommio::executor().yield_if_needed().await;
        }
    }

    /// Counts work that paces itself elsewhere: hint replay is paced by the
    /// replica machine, which starts replays at the share's rate
    /// ([`Scheduler::rate_fraction`], fed to it by the shard's replica loop)
    /// before any replay deadline is set.
    pub(crate) fn count(&self, job: Job, units: u64) {
        let j = job as usize;
        self.done[j].set(self.done[j].get() + units);
    }

    /// Counts deferrals decided elsewhere (hint replay ticks at which the
    /// replica machine held replays back for the share's pace).
    pub(crate) fn count_deferred(&self, job: Job, times: u64) {
        let j = job as usize;
        self.deferred[j].set(self.deferred[j].get() + times);
    }

    /// The fraction of its full rate limit background work may use now
    /// (the share over `background_shares_max`), as `pace` scales by.
    pub(crate) fn rate_fraction(&self) -> f64 {
        self.monitor.borrow().rate_fraction()
    }

    /// The utilization monitor: every period, measures the executor's busy
    /// time and the foreground latency since the last period and sets the
    /// background queue's shares. Runs in the foreground queue until
    /// `stop()` says so.
    pub(crate) async fn monitor_loop(
        self: Rc<Self>,
        latency: impl Fn() -> Histogram,
        stop: impl Fn() -> bool,
    ) {
        let mut last_latency = latency();
        let mut last_at = Instant::now();
        // Discard what accumulated before the loop started.
        let _ = glommio::executor().executor_stats();
        while !stop() {
            glommio::timer::sleep(MONITOR_PERIOD).await;
            let now = Instant::now();
            let wall = now.duration_since(last_at).as_secs_f64().max(1e-6);
            last_at = now;
            let stats = glommio::executor().executor_stats();
            let busy = stats.total_runtime().as_secs_f64() / wall;
            let current = latency();
            let period = current.since(&last_latency);
            last_latency = current;
            let sample = PeriodSample {
                busy_fraction: busy,
                foreground_requests: period.count(),
                foreground_p99_us: period.quantile_upper_bound(0.99),
            };
            let shares = self.monitor.borrow_mut().handle_period(sample);
            self.shares.set(shares);
            self.busy.set(busy.min(1.0));
            self.p99_us.set(sample.foreground_p99_us);
        }
    }

    /// Queues an inbound handoff or hint-replay message; `false` when the
    /// inbox is full (the message is dropped; the sender retries).
    pub(crate) fn admit(&self, from: NodeId, message: ReplicaMessage) -> bool {
        let mut queue = self.inbox.queue.borrow_mut();
        if queue.len() >= INBOX_MAX {
            self.inbox.dropped.set(self.inbox.dropped.get() + 1);
            return false;
        }
        queue.push_back((from, message));
        self.inbox.accepted.set(self.inbox.accepted.get() + 1);
        if let Some(waker) = self.inbox.waker.borrow_mut().take() {
            waker.wake();
        }
        true
    }

    /// Drains the inbox in the background queue, handing each message to
    /// `deliver` (the shard's replica machine), a batch per turn.
    pub(crate) async fn inbox_loop(
        self: Rc<Self>,
        deliver: impl Fn(NodeId, ReplicaMessage),
        stop: impl Fn() -> bool,
    ) {
        while !stop() {
            let batch: Vec<(NodeId, ReplicaMessage)> = {
                let mut queue = self.inbox.queue.borrow_mut();
                let n = queue.len().min(INBOX_BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                // Sleep until a message arrives: no timer while the inbox is
                // empty, except a slow one to notice `stop`.
                let arrived = std::future::poll_fn(|cx| {
                    if self.inbox.queue.borrow().is_empty() {
                        *self.inbox.waker.borrow_mut() = Some(cx.waker().clone());
                        std::task::Poll::Pending
                    } else {
                        std::task::Poll::Ready(())
                    }
                });
                futures_lite::future::or(
                    arrived,
                    glommio::timer::sleep(Duration::from_millis(100)),
                )
                .await;
                continue;
            }
            let n = batch.len() as u64;
            for (from, message) in batch {
                deliver(from, message);
            }
            self.pace(Job::Inbound, n).await;
        }
    }

    /// Messages accepted into the inbox so far.
    pub(crate) fn inbox_accepted(&self) -> u64 {
        self.inbox.accepted.get()
    }

    pub(crate) fn snapshot(&self) -> SchedulerSnapshot {
        let monitor = self.monitor.borrow();
        SchedulerSnapshot {
            foreground_shares: FOREGROUND_SHARES,
            background_shares: self.shares.get(),
            busy_fraction: self.busy.get(),
            foreground_p99_us: self.p99_us.get(),
            verdict: match monitor.last_verdict() {
                Verdict::Grow => "grow",
                Verdict::Hold => "hold",
                Verdict::Shrink => "shrink",
            },
            done: std::array::from_fn(|j| self.done[j].get()),
            deferred: std::array::from_fn(|j| self.deferred[j].get()),
            inbox: self.inbox.queue.borrow().len(),
            inbox_dropped: self.inbox.dropped.get(),
        }
    }
}

/// The scheduler section of `admin status`, summed or listed over shards.
pub(crate) fn status_text(shards: &[(usize, SchedulerSnapshot)], json: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if json {
        out.push('[');
        for (i, (shard, s)) in shards.iter().enumerate() {
            let jobs: Vec<String> = JOB_NAMES
                .iter()
                .enumerate()
                .map(|(j, name)| {
                    format!(
                        "\"{name}\": {{\"done\": {}, \"deferred\": {}}}",
                        s.done[j], s.deferred[j]
                    )
                })
                .collect();
            let _ = write!(
                out,
                "{}{{\"shard\": {shard}, \"foreground_shares\": {}, \"background_shares\": {}, \"busy\": {:.3}, \"foreground_p99_us\": {}, \"verdict\": \"{}\", \"inbox\": {}, \"inbox_dropped\": {}, \"jobs\": {{{}}}}}",
                if i == 0 { "" } else { ", " },
                s.foreground_shares,
                s.background_shares,
                s.busy_fraction,
                s.foreground_p99_us.map_or("null".to_string(), |v| v.to_string()),
                s.verdict,
                s.inbox,
                s.inbox_dropped,
                jobs.join(", ")
            );
        }
        out.push(']');
    } else {
        for (shard, s) in shards {
            let jobs: Vec<String> = JOB_NAMES
                .iter()
                .enumerate()
                .map(|(j, name)| format!("{name} {}/{}", s.done[j], s.deferred[j]))
                .collect();
            let _ = writeln!(
                out,
                "  shard {shard}: background shares {} (foreground {}), busy {:.0}%, p99 {}, {}; work done/deferred: {}",
                s.background_shares,
                s.foreground_shares,
                s.busy_fraction * 100.0,
                s.foreground_p99_us
                    .map_or("idle".to_string(), |v| format!("≤{v} µs")),
                s.verdict,
                jobs.join(", ")
            );
        }
    }
    out
}
