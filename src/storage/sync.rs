//! Single-threaded async primitives the store needs without depending on a runtime:
//! a lock, an epoch notifier, a one-shot yield, and `block_on` for futures that never
//! wait on anything outside the process (the `MemDisk` case).
//!
//! Invariant: nothing here holds a `RefCell` borrow across a suspension point, and
//! every waiter is woken when the state it waits for changes (wake-all, so a dropped
//! waiter can never strand the others).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// A FIFO-less async mutex for one thread.
#[derive(Default)]
pub(crate) struct AsyncLock {
    locked: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

pub(crate) struct AsyncLockGuard<'a> {
    lock: &'a AsyncLock,
}

impl AsyncLock {
    pub(crate) fn lock(&self) -> impl Future<Output = AsyncLockGuard<'_>> {
        std::future::poll_fn(move |cx| {
            if self.locked.get() {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            } else {
                self.locked.set(true);
                Poll::Ready(AsyncLockGuard { lock: self })
            }
        })
    }
}

impl Drop for AsyncLockGuard<'_> {
    fn drop(&mut self) {
        assert!(self.lock.locked.get());
        self.lock.locked.set(false);
        let waiters = std::mem::take(&mut *self.lock.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// Wakes everyone waiting for the epoch to move on.
#[derive(Default)]
pub(crate) struct Notify {
    epoch: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// Completes once `notify_all` has been called after `seen` was read.
    pub(crate) fn wait(&self, seen: u64) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.epoch.get() != seen {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    pub(crate) fn notify_all(&self) {
        self.epoch.set(self.epoch.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// Returns `Pending` once (after waking itself), so other ready tasks run first.
pub(crate) fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

fn noop_waker() -> Waker {
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: every vtable function ignores the data pointer, so a null pointer is fine.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// The most polls `block_on` tries before deciding the future waits on something that
/// will never happen (a bug in a test, or a disk that really does I/O).
const BLOCK_ON_POLLS_MAX: u32 = 1_000_000;

/// Drives a future to completion on the current thread without a runtime.
///
/// For tests and the cluster simulator: with `MemDisk` every storage future completes
/// without waiting on anything outside the process (a future may return `Pending` only
/// to yield), so polling it in a loop finishes it. Panics if the future is still pending
/// after `BLOCK_ON_POLLS_MAX` polls, e.g. when used with a real disk or with a lock held
/// by a task that nobody drives. Use a real executor when several tasks must interleave.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut future: Pin<&mut F> = pin!(future);
    for _ in 0..BLOCK_ON_POLLS_MAX {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("storage::block_on: future still pending after {BLOCK_ON_POLLS_MAX} polls");
}
