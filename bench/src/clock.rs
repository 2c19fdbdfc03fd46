//! Clocks: the monotonic clock that timestamps requests and the per-thread
//! CPU clock that measures the generator's own cost.
//!
//! Invariant: every timestamp in the engine comes from `now_ns` (one clock,
//! CLOCK_MONOTONIC), so intended, send and completion times are comparable.

/// Monotonic nanoseconds since an arbitrary origin (CLOCK_MONOTONIC).
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time consumed by the calling thread, user and system, in nanoseconds.
/// System time includes the io_uring submissions and the TCP work the kernel
/// does inline for this thread, which is most of a load generator's cost.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    // Both clocks exist on every Linux the tool supports; failure is a bug.
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance() {
        let a = now_ns();
        let c0 = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(now_ns() > a);
        assert!(thread_cpu_ns() > c0);
    }
}
