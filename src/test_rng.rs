//! xorshift64* for the library's unit tests (deterministic draws without a
//! dependency, so a failing seed replays exactly). The integration tests have
//! their own copy with `usize` draws, `tests/support/xorshift.rs`, which the
//! library cannot reach.

/// The generator's state; seed it with any nonzero value.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A draw in `0..n`; `n` must not be 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
