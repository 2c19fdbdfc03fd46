//! Fixed-bucket histograms in the Prometheus style: cumulative buckets by
//! upper bound, a sum and a count. Recording is a short scan over at most a
//! few dozen bounds and three additions, cheap enough for the request path.

/// Upper bounds, in microseconds, of the request latency buckets.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Upper bounds of the siblings-per-read buckets.
pub const SIBLING_BOUNDS: &[u64] = &[0, 1, 2, 3, 4, 8, 16, 64];

/// The most buckets a histogram may have (every bound plus `+Inf`).
pub const BUCKETS_MAX: usize = 32;

/// One histogram: `counts[i]` observations fell at or under `bounds[i]` and
/// above the bound before it; the last slot holds the ones above every bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Vec<u64>,
    sum: u64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must be strictly increasing.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.len() < BUCKETS_MAX, "too many histogram buckets");
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "bounds must increase"
        );
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Counts `n` observations of `value`.
    pub fn record_n(&mut self, value: u64, n: u64) {
        let slot = self.bounds.partition_point(|&b| b < value);
        self.counts[slot] += n;
        self.sum = self.sum.saturating_add(value.saturating_mul(n));
        self.count += n;
    }

    /// The upper bounds (without `+Inf`).
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Per-bucket (not cumulative) counts; the last is the `+Inf` overflow.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Sum of every observation.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `other` (same bounds) into this one: how shards are merged.
    pub fn merge(&mut self, other: &Histogram) {
        assert_eq!(
            self.bounds, other.bounds,
            "merging histograms of different buckets"
        );
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.count += other.count;
    }

    /// The observations since `earlier` (a copy of this histogram taken
    /// before): how the utilization monitor looks at one period only.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        assert_eq!(self.bounds, earlier.bounds);
        Histogram {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: self.sum.saturating_sub(earlier.sum),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// An upper bound on the `q` quantile (0 < q ≤ 1): the bound of the
    /// bucket holding it, `u64::MAX` if it is in the overflow bucket, `None`
    /// when empty.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.bounds.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_of_their_upper_bound() {
        let mut h = Histogram::new(&[10, 20, 30]);
        for v in [0, 10, 11, 20, 30, 31, 1000] {
            h.record(v);
        }
        assert_eq!(h.counts(), &[2, 2, 1, 2]);
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum(), 1102);
    }

    #[test]
    fn n_observations_count_as_n_records() {
        let mut one_by_one = Histogram::new(&[10, 20, 30]);
        let mut at_once = Histogram::new(&[10, 20, 30]);
        for _ in 0..5 {
            one_by_one.record(15);
        }
        at_once.record_n(15, 5);
        at_once.record_n(25, 0);
        assert_eq!(at_once, one_by_one);
        assert_eq!(at_once.sum(), 75);
    }

    #[test]
    fn quantiles_and_periods() {
        let mut h = Histogram::new(LATENCY_BOUNDS_US);
        for _ in 0..99 {
            h.record(80);
        }
        let before = h.clone();
        h.record(40_000);
        assert_eq!(h.quantile_upper_bound(0.5), Some(100));
        assert_eq!(h.quantile_upper_bound(1.0), Some(50_000));
        let period = h.since(&before);
        assert_eq!(period.count(), 1);
        assert_eq!(period.quantile_upper_bound(0.99), Some(50_000));
        assert_eq!(
            Histogram::new(LATENCY_BOUNDS_US).quantile_upper_bound(0.99),
            None
        );
        let mut merged = before.clone();
        merged.merge(&period);
        assert_eq!(merged, h);
    }
}
