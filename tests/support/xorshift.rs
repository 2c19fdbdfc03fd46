//! xorshift64*: the tiny deterministic generator of the fuzz and crash-point
//! tests and of the chaos tool (`tools/chaos`), so that a failing seed replays exactly. Included with
//! `#[path = "support/xorshift.rs"] mod xorshift;`; a test adds its own
//! domain draws in an `impl xorshift::Rng` block.

/// The generator's state; seed it with any nonzero value.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A draw in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
