//! The utilization monitor's policy (design guide §8, Dynamo §6.5): how many
//! glommio shares the background task queue gets in the next period, from
//! what the last period measured on the shard.
//!
//! Dynamo's admission controller watches foreground latency and gives
//! background tasks time slices only while the foreground is healthy. Here
//! the same idea sets the background queue's shares (glommio
//! `Shares::Dynamic`; the foreground queue has fixed shares) and scales the
//! background jobs' rate limits: multiplicative decrease when the
//! foreground's p99 exceeds its target or the executor is nearly saturated,
//! additive-then-doubling increase when the foreground is comfortably idle,
//! hold in between. The share never drops below a floor, so background work
//! always finishes eventually.

/// Shares of the foreground task queue (fixed).
pub const FOREGROUND_SHARES: usize = 1000;

/// What one monitoring period measured on a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeriodSample {
    /// Fraction of the period's wall time the executor spent running tasks
    /// (0.0 ..= 1.0; may slightly exceed 1.0 through measurement skew).
    pub busy_fraction: f64,
    /// Foreground requests completed in the period.
    pub foreground_requests: u64,
    /// Upper bound of the foreground p99 latency in the period, in
    /// microseconds (`None` when no request completed).
    pub foreground_p99_us: Option<u64>,
}

/// Limits and targets of the policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SharesPolicy {
    /// The fewest shares the background queue ever gets (> 0).
    pub shares_min: usize,
    /// The most shares the background queue gets (an idle foreground).
    pub shares_max: usize,
    /// Foreground p99 above this is "hurting": shares are halved.
    pub latency_target_us: u64,
    /// Executor busy above this fraction is "saturated": shares are halved.
    pub busy_high: f64,
    /// Busy below this fraction, with latency on target, lets shares grow.
    pub busy_low: f64,
}

impl Default for SharesPolicy {
    fn default() -> Self {
        SharesPolicy {
            shares_min: 10,
            shares_max: 500,
            latency_target_us: 2_000,
            busy_high: 0.85,
            busy_low: 0.6,
        }
    }
}

/// The monitor's state: the current background shares and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The foreground is comfortable; background shares grow.
    Grow,
    /// Between the thresholds; shares stay.
    Hold,
    /// Foreground latency is over target or the core is saturated; shares shrink.
    Shrink,
}

/// The utilization monitor of one shard.
#[derive(Clone, Debug)]
pub struct UtilizationMonitor {
    policy: SharesPolicy,
    shares: usize,
    last: Verdict,
    periods: u64,
    shrinks: u64,
}

impl UtilizationMonitor {
    /// A monitor starting at the maximum share (nothing measured yet).
    pub fn new(policy: SharesPolicy) -> UtilizationMonitor {
        assert!(policy.shares_min >= 1 && policy.shares_min <= policy.shares_max);
        assert!(policy.busy_low <= policy.busy_high);
        UtilizationMonitor {
            policy,
            shares: policy.shares_max,
            last: Verdict::Hold,
            periods: 0,
            shrinks: 0,
        }
    }

    /// Feeds one period's measurements; returns the new background shares.
    pub fn handle_period(&mut self, sample: PeriodSample) -> usize {
        let p = self.policy;
        let hurting = sample
            .foreground_p99_us
            .is_some_and(|p99| p99 > p.latency_target_us);
        let saturated = sample.busy_fraction > p.busy_high;
        let verdict = if hurting || (saturated && sample.foreground_requests > 0) {
            Verdict::Shrink
        } else if sample.foreground_requests == 0 || sample.busy_fraction < p.busy_low {
            Verdict::Grow
        } else {
            Verdict::Hold
        };
        self.shares = match verdict {
            Verdict::Shrink => (self.shares / 2).max(p.shares_min),
            // Grow gently after a shrink, then double: a single quiet
            // period does not hand the core back to background work at once.
            Verdict::Grow if self.last == Verdict::Shrink => {
                (self.shares + p.shares_min).min(p.shares_max)
            }
            Verdict::Grow => (self.shares * 2).min(p.shares_max),
            Verdict::Hold => self.shares,
        };
        if verdict == Verdict::Shrink {
            self.shrinks += 1;
        }
        self.last = verdict;
        self.periods += 1;
        self.shares
    }

    /// The background queue's current shares.
    pub fn shares(&self) -> usize {
        self.shares
    }

    /// The verdict of the last period.
    pub fn last_verdict(&self) -> Verdict {
        self.last
    }

    /// Periods measured so far, and how many of them shrank the shares.
    pub fn periods(&self) -> (u64, u64) {
        (self.periods, self.shrinks)
    }

    /// The fraction of the background jobs' configured rate they may use
    /// now: the share of the maximum, never below the floor's share.
    pub fn rate_fraction(&self) -> f64 {
        self.shares as f64 / self.policy.shares_max as f64
    }

    /// The policy in force.
    pub fn policy(&self) -> SharesPolicy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(busy: f64, requests: u64, p99: Option<u64>) -> PeriodSample {
        PeriodSample {
            busy_fraction: busy,
            foreground_requests: requests,
            foreground_p99_us: p99,
        }
    }

    #[test]
    fn slow_foreground_halves_background_down_to_the_floor() {
        let mut m = UtilizationMonitor::new(SharesPolicy::default());
        assert_eq!(m.shares(), 500);
        let slow = sample(0.5, 100, Some(10_000));
        assert_eq!(m.handle_period(slow), 250);
        assert_eq!(m.handle_period(slow), 125);
        for _ in 0..10 {
            m.handle_period(slow);
        }
        assert_eq!(m.shares(), 10, "never below shares_min");
        assert_eq!(m.last_verdict(), Verdict::Shrink);
    }

    #[test]
    fn a_saturated_core_with_foreground_traffic_shrinks_but_idle_background_alone_grows() {
        let mut m = UtilizationMonitor::new(SharesPolicy::default());
        assert_eq!(m.handle_period(sample(0.99, 10, Some(100))), 250);
        // Busy only with background work: nothing to protect, grow gently, then double.
        assert_eq!(m.handle_period(sample(0.99, 0, None)), 260);
        assert_eq!(m.handle_period(sample(0.99, 0, None)), 500);
    }

    #[test]
    fn between_the_thresholds_shares_hold() {
        let mut m = UtilizationMonitor::new(SharesPolicy::default());
        m.handle_period(sample(0.9, 10, Some(100)));
        assert_eq!(m.handle_period(sample(0.7, 10, Some(100))), 250);
        assert_eq!(m.last_verdict(), Verdict::Hold);
        assert_eq!(m.periods(), (2, 1));
        assert!((m.rate_fraction() - 0.5).abs() < 1e-9);
    }
}
