//! Sizing glommio's registered io_uring memory from `RLIMIT_MEMLOCK`.
//!
//! glommio registers `io_memory` bytes per executor as locked memory (10 MiB
//! by default). When the limit is too low the registration fails with only a
//! log line and I/O falls back to unregistered buffers. On the development and
//! CI machines the hard limit is 8 MiB and is charged per user, so every
//! executor of every local process shares it (design guide §11). We therefore
//! raise the soft limit to the hard limit, then give each shard a fixed
//! fraction of it, and say what we did in the log.

/// glommio's own default registered memory per executor.
const IO_MEMORY_DEFAULT_BYTES: usize = 10 << 20;
/// Never register less than this; below it, unregistered buffers are as good.
const IO_MEMORY_MIN_BYTES: usize = 256 << 10;
/// How many processes of this size we leave room for under one user's limit
/// (a 5-node local cluster plus the benchmark tool).
const PROCESSES_SHARING_LIMIT: usize = 8;

/// What start-up decided about locked memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemlockPlan {
    /// The hard limit in bytes (`u64::MAX` when unlimited).
    pub hard_limit_bytes: u64,
    /// Whether raising the soft limit to the hard limit succeeded.
    pub raised: bool,
    /// Registered io_uring memory to give each shard.
    pub io_memory_bytes: usize,
}

/// Raises `RLIMIT_MEMLOCK`'s soft limit where allowed and sizes `io_memory`.
/// `configured_bytes` (non-zero) overrides the automatic size.
pub(crate) fn plan(shards: usize, configured_bytes: usize) -> MemlockPlan {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    let mut raised = false;
    if got && limit.rlim_cur < limit.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        raised = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) } == 0;
    }
    let hard_limit_bytes = if !got || limit.rlim_max == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_max
    };
    let io_memory_bytes = if configured_bytes > 0 {
        configured_bytes
    } else if hard_limit_bytes == u64::MAX {
        IO_MEMORY_DEFAULT_BYTES
    } else {
        let share = hard_limit_bytes as usize / (shards.max(1) * PROCESSES_SHARING_LIMIT);
        let rounded = share & !(64 * 1024 - 1);
        rounded.clamp(IO_MEMORY_MIN_BYTES, IO_MEMORY_DEFAULT_BYTES)
    };
    MemlockPlan {
        hard_limit_bytes,
        raised,
        io_memory_bytes,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plan_fits_the_limit_and_honours_configuration() {
        let p = super::plan(2, 0);
        assert!(p.io_memory_bytes >= super::IO_MEMORY_MIN_BYTES);
        assert!(p.io_memory_bytes <= super::IO_MEMORY_DEFAULT_BYTES);
        if p.hard_limit_bytes != u64::MAX
            && p.hard_limit_bytes >= (super::IO_MEMORY_MIN_BYTES * 16) as u64
        {
            assert!(
                (p.io_memory_bytes * 2 * super::PROCESSES_SHARING_LIMIT) as u64
                    <= p.hard_limit_bytes
            );
        }
        assert_eq!(super::plan(2, 1 << 20).io_memory_bytes, 1 << 20);
    }
}
