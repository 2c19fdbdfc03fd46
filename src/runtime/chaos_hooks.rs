//! Test-only fault hooks for the chaos tool (docs/chaos.md), both off by
//! default: a clock jump on signal (`debug_clock_jump_ms`: SIGUSR1 moves the
//! node's clock forward, SIGUSR2 back) and a deliberately broken
//! last-write-wins store (`debug_last_write_wins`) that proves the chaos
//! checker can fail. Process-wide state in atomics; the signal handler only
//! adds to an atomic.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use bytes::Bytes;

use super::log::warning;
use crate::config::ServerConfig;
use crate::replica::{IoRequest, Namespace};
use crate::version::SiblingSet;

static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);
static CLOCK_JUMP_MS: AtomicI64 = AtomicI64::new(0);
static LAST_WRITE_WINS: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    let jump = CLOCK_JUMP_MS.load(Ordering::Relaxed);
    let delta = if signal == libc::SIGUSR1 { jump } else { -jump };
    CLOCK_OFFSET_MS.fetch_add(delta, Ordering::Relaxed);
}

/// Applies the configuration; call once at start-up, before any thread.
pub(crate) fn install(config: &ServerConfig) {
    LAST_WRITE_WINS.store(config.debug_last_write_wins, Ordering::Relaxed);
    if config.debug_last_write_wins {
        warning!("debug_last_write_wins is set: this node drops siblings (test only)");
    }
    if config.debug_clock_jump_ms == 0 {
        return;
    }
    let jump = i64::try_from(config.debug_clock_jump_ms).unwrap_or(i64::MAX);
    CLOCK_JUMP_MS.store(jump, Ordering::Relaxed);
    for signal in [libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: installs an async-signal-safe handler (one atomic add).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A shard's clock reading with the jumps so far applied (never below 0).
pub(crate) fn jumped(now_ms: u64) -> u64 {
    let offset = CLOCK_OFFSET_MS.load(Ordering::Relaxed);
    (now_ms as i64).saturating_add(offset).max(0) as u64
}

/// With `debug_last_write_wins`, a data write keeps only its last sibling.
// Inline, with the rewrite out of line: off (always, outside chaos tests)
// it costs a load and a branch, with no call moving the request through.
#[inline(always)]
pub(crate) fn maybe_last_write_wins(io: IoRequest) -> IoRequest {
    if !LAST_WRITE_WINS.load(Ordering::Relaxed) {
        return io;
    }
    match io {
        IoRequest::Write {
            io,
            namespace: Namespace::Data,
            partition,
            key,
            payload,
            all_tombstones,
            durable,
        } => IoRequest::Write {
            io,
            namespace: Namespace::Data,
            partition,
            key,
            payload: last_write_wins(payload),
            all_tombstones,
            durable,
        },
        other => other,
    }
}

/// `maybe_last_write_wins` for a data write's payload alone.
#[inline(always)]
pub(crate) fn maybe_last_write_wins_payload(payload: Bytes) -> Bytes {
    if !LAST_WRITE_WINS.load(Ordering::Relaxed) {
        return payload;
    }
    last_write_wins(payload)
}

#[cold]
#[inline(never)]
fn last_write_wins(payload: Bytes) -> Bytes {
    match SiblingSet::decode(&payload) {
        Ok(mut set) => {
            set.drop_all_but_last_sibling();
            let mut out = Vec::new();
            set.encode(&mut out);
            out.into()
        }
        Err(_) => payload,
    }
}
