//! A small, fast, seedable pseudo-random generator for the load generator.
//!
//! Job: turn `--seed` into reproducible streams of keys, value sizes and
//! operation choices, one independent stream per thread. Invariant: the same
//! seed and the same thread index always produce the same sequence, so a run's
//! request mix can be replayed. It is not cryptographic and must never be used
//! for anything but load shaping.

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64 as its
/// authors recommend, because it is fast (a few ns per draw) and has no
/// detectable bias at the sample sizes a benchmark draws.
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// Builds a stream from a seed and a stream index (the thread index), so
    /// threads draw independent sequences from one `--seed`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut sm = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut state = [0u64; 4];
        for word in state.iter_mut() {
            *word = splitmix64(&mut sm);
        }
        // An all-zero state is the one fixed point of xoshiro; SplitMix64
        // never yields four zero words, but assert it since it would be silent.
        assert!(state.iter().any(|&w| w != 0));
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.state[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.state[1] << 17;
        self.state[2] ^= self.state[0];
        self.state[3] ^= self.state[1];
        self.state[1] ^= self.state[2];
        self.state[0] ^= self.state[3];
        self.state[2] ^= t;
        self.state[3] = self.state[3].rotate_left(45);
        result
    }

    /// A uniform draw in `[0, bound)` by Lemire's multiply-shift, whose bias
    /// (at most bound / 2^64) is far below anything a benchmark can observe.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A uniform double in `[0, 1)` from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let mut a = Rng::new(7, 0);
        let mut b = Rng::new(7, 0);
        let mut c = Rng::new(7, 1);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn below_and_f64_stay_in_range() {
        let mut r = Rng::new(1, 0);
        for _ in 0..10_000 {
            assert!(r.below(10) < 10);
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
