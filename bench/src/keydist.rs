//! Key distributions, following YCSB's generators so results are comparable
//! with published YCSB numbers.
//!
//! Job: map random draws to key indices in `[0, key_count)`. Invariants: every
//! draw is inside the key space it was asked for; `Zipfian` with θ = 0.99 puts
//! item 0 first in popularity; `ScrambledZipfian` spreads the popular items
//! over the key space with the 64-bit FNV hash exactly as YCSB's
//! `ScrambledZipfianGenerator` does (so hot keys do not cluster in one
//! partition); `SkewedLatest` favours the most recently inserted keys as
//! YCSB's `SkewedLatestGenerator` does.

use crate::rng::Rng;

/// YCSB's default Zipfian constant.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// YCSB's ScrambledZipfianGenerator draws from a fixed, very large item space
/// and hashes the result into the real key space; these are its constants
/// (the zeta of 10^10 items at θ = 0.99 is precomputed there and here).
const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// The Zipfian generator of Gray et al., "Quickly Generating Billion-Record
/// Synthetic Databases" (SIGMOD 1994), as YCSB implements it, including the
/// incremental zeta update when the item count grows (used by `latest`).
#[derive(Clone, Debug)]
pub struct Zipfian {
    theta: f64,
    alpha: f64,
    zeta2: f64,
    zetan: f64,
    eta: f64,
    /// The item count `zetan` was computed for.
    count_for_zeta: u64,
}

impl Zipfian {
    /// Builds a generator over `[0, item_count)`. Computing zeta is O(item_count),
    /// about 10 ns per item, paid once at start-up.
    pub fn new(item_count: u64) -> Zipfian {
        assert!(item_count >= 1);
        let theta = ZIPFIAN_THETA;
        let zetan = zeta_range(0, item_count, theta, 0.0);
        Zipfian::with_zetan(item_count, theta, zetan)
    }

    fn with_zetan(item_count: u64, theta: f64, zetan: f64) -> Zipfian {
        let zeta2 = zeta_range(0, 2, theta, 0.0);
        let mut z = Zipfian {
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2,
            zetan,
            eta: 0.0,
            count_for_zeta: item_count,
        };
        z.eta = z.eta_for(item_count);
        z
    }

    fn eta_for(&self, item_count: u64) -> f64 {
        (1.0 - (2.0 / item_count as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// Draws an item in `[0, item_count)`. When `item_count` grew since the last
    /// call, zeta is extended incrementally (as YCSB does); it never shrinks,
    /// since the key space of a run only grows by inserts.
    pub fn next(&mut self, rng: &mut Rng, item_count: u64) -> u64 {
        assert!(item_count >= 1);
        if item_count > self.count_for_zeta {
            self.zetan = zeta_range(self.count_for_zeta, item_count, self.theta, self.zetan);
            self.count_for_zeta = item_count;
            self.eta = self.eta_for(item_count);
        }
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(item_count - 1);
        }
        let ret = (item_count as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        ret.min(item_count - 1)
    }
}

/// Sum of 1/i^θ for i in (from, to], added to `initial`.
fn zeta_range(from: u64, to: u64, theta: f64, initial: f64) -> f64 {
    let mut sum = initial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// YCSB's 64-bit FNV-1 variant (hashes the 8 bytes of the value, then takes
/// the absolute value as Java's `Math.abs` on a long does).
pub fn fnv_hash64(mut value: u64) -> u64 {
    const FNV_OFFSET_BASIS_64: u64 = 0xCBF2_9CE4_8422_2325;
    const FNV_PRIME_64: u64 = 1_099_511_628_211;
    let mut hash = FNV_OFFSET_BASIS_64;
    for _ in 0..8 {
        let octet = value & 0xff;
        value >>= 8;
        hash ^= octet;
        hash = hash.wrapping_mul(FNV_PRIME_64);
    }
    (hash as i64).wrapping_abs() as u64
}

/// One of the supported key distributions, with its state.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform,
    /// Zipfian over 10^10 items, hashed into the key space (YCSB `zipfian`).
    ScrambledZipfian(Zipfian),
    /// `newest - zipfian(newest)`: recent inserts are hottest (YCSB `latest`).
    SkewedLatest(Zipfian),
}

impl KeyChooser {
    pub fn uniform() -> KeyChooser {
        KeyChooser::Uniform
    }

    pub fn scrambled_zipfian() -> KeyChooser {
        KeyChooser::ScrambledZipfian(Zipfian::with_zetan(
            SCRAMBLED_ITEM_COUNT,
            ZIPFIAN_THETA,
            SCRAMBLED_ZETAN,
        ))
    }

    pub fn skewed_latest(initial_key_count: u64) -> KeyChooser {
        KeyChooser::SkewedLatest(Zipfian::new(initial_key_count.max(1)))
    }

    /// Draws a key index in `[0, key_count)`. For `SkewedLatest`, `key_count`
    /// is the current size of the key space including inserts so far, so the
    /// newest key is `key_count - 1`.
    pub fn next(&mut self, rng: &mut Rng, key_count: u64) -> u64 {
        assert!(key_count >= 1);
        let key = match self {
            KeyChooser::Uniform => rng.below(key_count),
            KeyChooser::ScrambledZipfian(z) => {
                fnv_hash64(z.next(rng, SCRAMBLED_ITEM_COUNT)) % key_count
            }
            KeyChooser::SkewedLatest(z) => {
                let newest = key_count - 1;
                newest - z.next(rng, key_count).min(newest)
            }
        };
        assert!(key < key_count);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(chooser: &mut KeyChooser, key_count: u64, draws: usize) -> Vec<u64> {
        let mut rng = Rng::new(42, 0);
        let mut counts = vec![0u64; key_count as usize];
        for _ in 0..draws {
            counts[chooser.next(&mut rng, key_count) as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipfian_item_zero_gets_its_theoretical_share() {
        // P(item 0) = 1 / zeta(n, θ); for n = 1000, θ = 0.99, zeta ≈ 7.39, so ≈ 13.5%.
        let n = 1000u64;
        let mut z = Zipfian::new(n);
        let mut rng = Rng::new(1, 0);
        let draws = 200_000;
        let mut zero = 0u64;
        let mut top10 = 0u64;
        for _ in 0..draws {
            let k = z.next(&mut rng, n);
            assert!(k < n);
            if k == 0 {
                zero += 1;
            }
            if k < 10 {
                top10 += 1;
            }
        }
        let p0 = zero as f64 / draws as f64;
        let expected = 1.0 / zeta_range(0, n, ZIPFIAN_THETA, 0.0);
        assert!((p0 - expected).abs() < 0.01, "p0 {p0} expected {expected}");
        // The ten hottest of 1000 items take about 40% of draws; uniform would give 1%.
        let p_top10 = top10 as f64 / draws as f64;
        assert!(p_top10 > 0.35 && p_top10 < 0.45, "top10 share {p_top10}");
    }

    #[test]
    fn scrambled_zipfian_is_skewed_but_hot_keys_are_spread() {
        let n = 10_000u64;
        let counts = histogram(&mut KeyChooser::scrambled_zipfian(), n, 200_000);
        let mut sorted = counts.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top100: u64 = sorted[..100].iter().sum();
        // The hottest 1% of keys carry a large share (uniform would be 1%).
        // With YCSB's 10^10-item space the 100 hottest items hold
        // zeta(100) / zeta(10^10) = 5.2 / 26.5, about 20% of draws.
        let share = top100 as f64 / 200_000.0;
        assert!(share > 0.17 && share < 0.3, "top 1% share {share}");
        // Scrambling: the hottest keys are not the lowest indices.
        let hottest = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .map(|(i, _)| i)
            .unwrap_or(0);
        let low_share: u64 = counts[..100].iter().sum();
        assert!(
            low_share < top100 / 2,
            "hot keys cluster at the start: {low_share}"
        );
        assert_ne!(hottest, 0);
    }

    #[test]
    fn fnv_hash_matches_ycsb_for_known_values() {
        // Golden values of YCSB's Utils.fnvhash64 (Java long arithmetic,
        // Math.abs at the end), computed independently.
        assert_eq!(fnv_hash64(0), 6_284_781_860_667_377_211);
        assert_eq!(fnv_hash64(1), 8_517_097_267_634_966_620);
        assert_eq!(fnv_hash64(12345), 1_792_800_413_050_876_852);
    }

    #[test]
    fn latest_favours_the_newest_keys_and_follows_inserts() {
        let mut chooser = KeyChooser::skewed_latest(1000);
        let counts = histogram(&mut chooser, 1000, 100_000);
        // The newest key is the single hottest one.
        let hottest = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .map(|(i, _)| i);
        assert_eq!(hottest, Some(999));
        let newest10: u64 = counts[990..].iter().sum();
        assert!(newest10 as f64 / 100_000.0 > 0.35);
        // After inserts grow the key space, the new newest key is hottest.
        let mut rng = Rng::new(3, 0);
        let mut hits_new = 0;
        for _ in 0..10_000 {
            let k = chooser.next(&mut rng, 2000);
            assert!(k < 2000);
            if k == 1999 {
                hits_new += 1;
            }
        }
        assert!(
            hits_new > 1000,
            "newest after growth drawn {hits_new} times"
        );
    }

    #[test]
    fn uniform_covers_the_space_evenly() {
        let counts = histogram(&mut KeyChooser::uniform(), 10, 100_000);
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{c}");
        }
    }
}
