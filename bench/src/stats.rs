//! Result accounting: per-operation latency histograms and counters.
//!
//! Job: collect what each thread measured and merge threads into one result.
//! Invariants: latency is recorded in nanoseconds, only for successful
//! operations of the measured phase; every measured request ends up counted
//! exactly once, as `ok` (hits and misses), an error reply, a timeout or a
//! connection error, never silently dropped.

use crate::workload::{OpKind, OP_KINDS};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Distinct error kinds kept; further kinds are counted under `other`.
pub const ERROR_KINDS_MAX: usize = 16;

/// The largest latency the histograms resolve; larger ones saturate to it.
pub const LATENCY_NS_MAX: u64 = 100_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // 3 significant digits: 0.1% resolution, as wrk2 and memtier use.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

#[derive(Clone, Debug)]
pub struct OpStats {
    pub latency_ns: Histogram<u64>,
    /// Successful completions (hits, misses, stores, pongs).
    pub ok: u64,
    /// Gets that found no value (included in `ok`).
    pub misses: u64,
    pub error_replies: u64,
    pub timeouts: u64,
    /// Requests lost when their connection failed or sent garbage.
    pub connection_errors: u64,
}

impl OpStats {
    pub fn new() -> OpStats {
        OpStats {
            latency_ns: new_histogram(),
            ok: 0,
            misses: 0,
            error_replies: 0,
            timeouts: 0,
            connection_errors: 0,
        }
    }

    pub fn errors(&self) -> u64 {
        self.error_replies + self.timeouts + self.connection_errors
    }

    pub fn merge(&mut self, other: &OpStats) {
        self.latency_ns
            .add(&other.latency_ns)
            .expect("histograms share bounds");
        self.ok += other.ok;
        self.misses += other.misses;
        self.error_replies += other.error_replies;
        self.timeouts += other.timeouts;
        self.connection_errors += other.connection_errors;
    }
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats::new()
    }
}

/// What one thread (or, merged, the whole run) measured.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub per_op: [OpStats; OP_KINDS],
    /// Generator CPU time over the run phase (warm-up and measured), and the
    /// wall time and number of completed requests over the same span.
    pub cpu_ns: u64,
    pub wall_ns: u64,
    pub completions: u64,
    /// The highest single-thread CPU utilisation (merged: max over threads).
    pub utilisation_max: f64,
    /// Measured-phase length: from the end of warm-up to the end of the run
    /// or the last completion, whichever is later.
    pub measured_ns: u64,
    /// Carts: gets answered, siblings seen in them, and the most in one.
    pub cart_reads: u64,
    pub siblings_seen: u64,
    pub siblings_max: u64,
    /// Measured reads that found the key: how many, the versions they
    /// returned (a dynakv get returns every sibling; Redis and memcached
    /// one value), the most in one, and how many returned more than one.
    pub read_hits: u64,
    pub read_siblings: u64,
    pub read_siblings_max: u64,
    pub reads_with_siblings: u64,
    /// Load phase: keys written, failures, and its wall time.
    pub load_ok: u64,
    pub load_errors: u64,
    pub load_ns: u64,
    pub connections_lost: u64,
    /// The io_uring mode the kernel granted the thread's ring (merged: the
    /// weakest any thread got); `None` before an engine ran.
    pub ring: Option<crate::engine::RingMode>,
    /// Open loop: scheduled requests never sent because the target did not
    /// keep up with the rate.
    pub unsent: u64,
    /// What went wrong with the first connection that was given up.
    pub first_failure: Option<String>,
    /// Error replies by kind (the first word of the server's message, e.g.
    /// a dynakv error code): how many, and the first full message.
    pub error_kinds: BTreeMap<String, (u64, String)>,
}

impl RunStats {
    pub fn op(&mut self, kind: OpKind) -> &mut OpStats {
        &mut self.per_op[kind as usize]
    }

    /// A measured read that found the key, with the versions it returned.
    pub fn record_read_hit(&mut self, siblings: u32) {
        let siblings = u64::from(siblings);
        self.read_hits += 1;
        self.read_siblings += siblings;
        self.read_siblings_max = self.read_siblings_max.max(siblings);
        if siblings > 1 {
            self.reads_with_siblings += 1;
        }
    }

    pub fn merge(&mut self, other: &RunStats) {
        for (mine, theirs) in self.per_op.iter_mut().zip(other.per_op.iter()) {
            mine.merge(theirs);
        }
        self.cpu_ns += other.cpu_ns;
        self.wall_ns = self.wall_ns.max(other.wall_ns);
        self.completions += other.completions;
        self.utilisation_max = self.utilisation_max.max(other.utilisation_max);
        self.ring = match (self.ring, other.ring) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.measured_ns = self.measured_ns.max(other.measured_ns);
        self.cart_reads += other.cart_reads;
        self.siblings_seen += other.siblings_seen;
        self.siblings_max = self.siblings_max.max(other.siblings_max);
        self.read_hits += other.read_hits;
        self.read_siblings += other.read_siblings;
        self.read_siblings_max = self.read_siblings_max.max(other.read_siblings_max);
        self.reads_with_siblings += other.reads_with_siblings;
        self.load_ok += other.load_ok;
        self.load_errors += other.load_errors;
        self.load_ns = self.load_ns.max(other.load_ns);
        self.connections_lost += other.connections_lost;
        self.unsent += other.unsent;
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&other.first_failure);
        }
        for (kind, (count, example)) in &other.error_kinds {
            self.record_error_kind(kind, *count, example);
        }
    }

    /// Counts an error reply under its kind, keeping the first example.
    pub fn record_error(&mut self, message: &str) {
        let kind = message
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches(':');
        self.record_error_kind(kind, 1, message);
    }

    fn record_error_kind(&mut self, kind: &str, count: u64, example: &str) {
        let key = if self.error_kinds.contains_key(kind) || self.error_kinds.len() < ERROR_KINDS_MAX
        {
            kind
        } else {
            "other"
        };
        let entry = self
            .error_kinds
            .entry(key.to_string())
            .or_insert_with(|| (0, example.to_string()));
        entry.0 += count;
    }

    /// All operations together.
    pub fn total(&self) -> OpStats {
        let mut all = OpStats::new();
        for op in &self.per_op {
            all.merge(op);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merged_run_reports_the_weakest_ring_mode() {
        use crate::engine::RingMode;
        let with = |ring| RunStats {
            ring,
            ..RunStats::default()
        };
        let mut merged = RunStats::default();
        merged.merge(&with(Some(RingMode::Deferred)));
        assert_eq!(merged.ring, Some(RingMode::Deferred));
        merged.merge(&with(None));
        assert_eq!(merged.ring, Some(RingMode::Deferred));
        merged.merge(&with(Some(RingMode::Interrupting)));
        merged.merge(&with(Some(RingMode::Cooperative)));
        assert_eq!(merged.ring, Some(RingMode::Interrupting));
    }

    #[test]
    fn error_kinds_are_counted_by_first_word_and_bounded() {
        let mut a = RunStats::default();
        a.record_error("WrongOwner partition 3 moved");
        a.record_error("WrongOwner partition 4 moved");
        a.record_error("ERR unknown command");
        assert_eq!(
            a.error_kinds["WrongOwner"],
            (2, "WrongOwner partition 3 moved".to_string())
        );
        for i in 0..40 {
            a.record_error(&format!("KIND{i} x"));
        }
        assert_eq!(a.error_kinds.len(), ERROR_KINDS_MAX + 1);
        let mut b = RunStats::default();
        b.record_error("ERR again");
        b.merge(&a);
        assert_eq!(b.error_kinds["ERR"].0, 2);
        assert_eq!(b.error_kinds["ERR"].1, "ERR again");
        let total: u64 = b.error_kinds.values().map(|(n, _)| n).sum();
        assert_eq!(total, 44);
    }
}
