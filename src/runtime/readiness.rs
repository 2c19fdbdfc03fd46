//! When a shard's client sockets have bytes to read, from one epoll instance
//! per listener, edge-triggered (Redis and memcached also wait with epoll,
//! level-triggered).
//!
//! glommio waits for a readable socket with a one-shot `POLL_ADD` on its
//! io_uring: each wait arms a poll in the kernel (a wait-queue entry added
//! and removed, the socket polled, the queue's lock taken) and posts one
//! completion. At pipeline depth 1 that is once per request, about 6% of a
//! shard's CPU (BENCHMARKS.md §2zd). Here each connection's socket is added
//! to the epoll instance once, when it is accepted. The kernel then queues
//! an event whenever bytes arrive, and the shard keeps one `POLL_ADD` armed
//! on the epoll descriptor (`glommio::poll_readable`, a vendor patch). One
//! completion and one `epoll_wait` then cover every connection that became
//! readable meanwhile.
//!
//! Invariants:
//! - a connection that may have bytes is `ready`: it is created ready, and
//!   every event marks it ready and wakes it; it is marked not ready only by
//!   its own read that returned fewer bytes than asked for, or `EAGAIN`. Any
//!   byte that arrives after that read queues an event (edge-triggered epoll
//!   reports every arrival), so no byte is left waiting for a wake-up that
//!   does not come. An event may be stale (its bytes already read); it costs
//!   one `recv` that returns `EAGAIN`.
//! - a short read is "drained" only while no event has said more than
//!   "bytes": TCP's `recv` returns the bytes before a FIN, a reset or an
//!   urgent mark, and reports those only on the next call, with no event of
//!   their own (the one event for them came with the bytes). So an event
//!   with `EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR` or `EPOLLPRI` makes the
//!   connection read until `EAGAIN`, the end or an error (`drain`).
//! - a registration is removed from the epoll instance before its socket is
//!   closed (`Registration::close`, or its drop, comes first), so a
//!   descriptor number reused by a later connection is never removed in its
//!   place; and a reader still waiting then is woken and reads the end of
//!   the stream, since no event can reach it any more.
//! - everything runs on the shard's thread: the driver's `epoll_wait` and
//!   its processing of the events happen with no await between them.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::log;
use crate::config::ServerConfig;

/// Events taken by one `epoll_wait`; more are taken by the next one.
const EVENTS_MAX: usize = 256;

/// The epoll instance of one listener's connections, and their states.
pub(crate) struct Readiness {
    epoll: OwnedFd,
    slots: RefCell<Slots>,
}

#[derive(Default)]
struct Slots {
    states: Vec<State>,
    /// Tokens of `states` no connection uses.
    free: Vec<u32>,
}

#[derive(Default)]
struct State {
    /// The socket may have bytes (or an end of stream) to read.
    ready: bool,
    /// An event reported more than bytes (an end, an error, an urgent
    /// mark): a short read does not clear `ready`; only `EAGAIN` does.
    drain: bool,
    /// Closed (`Registration::close`): out of the epoll instance, and every
    /// read is the end of the stream.
    closed: bool,
    /// The connection's reader, waiting for an event.
    waker: Option<Waker>,
}

impl Readiness {
    /// A new epoll instance, with its driver task spawned on the current
    /// executor.
    pub(crate) fn start() -> io::Result<Rc<Readiness>> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let readiness = Rc::new(Readiness {
            // SAFETY: `fd` was just created and is owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: RefCell::default(),
        });
        glommio::spawn_local(drive(readiness.clone())).detach();
        Ok(readiness)
    }

    /// The epoll instance of a listener's connections, where the
    /// configuration asks for one (`epoll_client_reads`) and one can be
    /// made; `None` (logged): its connections wait with glommio's poll.
    pub(crate) fn for_listener(config: &ServerConfig, listener: &str) -> Option<Rc<Readiness>> {
        if !config.epoll_client_reads {
            return None;
        }
        match Readiness::start() {
            Ok(readiness) => Some(readiness),
            Err(error) => {
                log::warning!(listener, %error, "no epoll instance for the listener's connections; each waits on its own");
                None
            }
        }
    }

    /// `register`, or `None` (logged) where the socket cannot join: its
    /// connection then waits with glommio's poll.
    pub(crate) fn join(self: &Rc<Self>, fd: RawFd) -> Option<Registration> {
        match self.register(fd) {
            Ok(registration) => Some(registration),
            Err(error) => {
                log::warning!(%error, "a connection could not join its listener's epoll instance; it waits on its own");
                None
            }
        }
    }

    /// Adds `fd` (a connected socket) to the epoll instance; it starts
    /// ready. The registration must be closed or dropped before `fd` is
    /// closed.
    pub(crate) fn register(self: &Rc<Self>, fd: RawFd) -> io::Result<Registration> {
        let token = {
            let mut slots = self.slots.borrow_mut();
            let token = match slots.free.pop() {
                Some(token) => token,
                None => {
                    slots.states.push(State::default());
                    (slots.states.len() - 1) as u32
                }
            };
            slots.states[token as usize] = State {
                ready: true,
                drain: false,
                closed: false,
                waker: None,
            };
            token
        };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32,
            u64: u64::from(token),
        };
        // SAFETY: `event` is a valid epoll_event for the call's duration.
        let added =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if added < 0 {
            let error = io::Error::last_os_error();
            self.slots.borrow_mut().free.push(token);
            return Err(error);
        }
        Ok(Registration {
            readiness: self.clone(),
            token,
            fd,
        })
    }

    /// Marks the connection of `token` ready and wakes its reader; `events`
    /// (the event's flags) beyond `EPOLLIN` make it read until `EAGAIN`.
    fn mark_ready(&self, token: u64, events: u32) {
        const MORE_THAN_BYTES: u32 =
            (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
        let waker = {
            let mut slots = self.slots.borrow_mut();
            let Some(state) = slots.states.get_mut(token as usize) else {
                return;
            };
            state.ready = true;
            state.drain |= events & MORE_THAN_BYTES != 0;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Takes the epoll instance's events whenever its descriptor is readable,
/// for as long as the executor runs.
async fn drive(readiness: Rc<Readiness>) {
    let fd = readiness.epoll.as_raw_fd();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX];
    loop {
        // Completes at once while events are left over from the last
        // `epoll_wait` (more than `EVENTS_MAX`), after the executor has run
        // the other tasks.
        if let Err(error) = glommio::poll_readable(fd).await {
            log::warning!(%error, "waiting on the connections' epoll instance failed");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        // SAFETY: `events` holds `EVENTS_MAX` entries; timeout 0.
        let n = unsafe { libc::epoll_wait(fd, events.as_mut_ptr(), EVENTS_MAX as i32, 0) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                log::warning!(%error, "epoll_wait on the connections' instance failed");
            }
            continue;
        }
        for event in &events[..n as usize] {
            // Copied out: the kernel's struct is packed.
            let (token, flags) = (event.u64, event.events);
            readiness.mark_ready(token, flags);
        }
    }
}

/// One connection's socket in a `Readiness`; removed from it when dropped.
pub(crate) struct Registration {
    readiness: Rc<Readiness>,
    token: u32,
    fd: RawFd,
}

impl Registration {
    /// Reads from the socket into `buf` when it may have bytes; otherwise
    /// waits for its next event. As `AsyncRead::poll_read`: `Ok(0)` is the
    /// end of the stream.
    pub(crate) fn poll_read(&self, cx: &Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        // An empty read would look like the end of the stream.
        debug_assert!(!buf.is_empty());
        loop {
            let wait = self.with_state(|state| {
                if state.closed {
                    return Some(Poll::Ready(Ok(0)));
                }
                if state.ready {
                    return None;
                }
                match &state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                Some(Poll::Pending)
            });
            if let Some(wait) = wait {
                return wait;
            }
            // SAFETY: `buf` is valid for writes of its length; the socket
            // is open while its registration lives.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > 0 && n < buf.len() {
                    // Drained, unless an end, an error or an urgent mark
                    // waits behind these bytes (`drain`): whatever arrives
                    // from now on queues an event.
                    self.with_state(|state| state.ready = state.drain);
                }
                return Poll::Ready(Ok(n));
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock => self.with_state(|state| {
                    state.ready = false;
                    state.drain = false;
                }),
                io::ErrorKind::Interrupted => {}
                _ => return Poll::Ready(Err(error)),
            }
        }
    }

    /// `f` on this connection's state (never held across a call out).
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.readiness.slots.borrow_mut().states[self.token as usize])
    }

    /// `poll_read` as a future.
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Takes the socket out of the epoll instance before it is closed, and
    /// wakes a reader waiting on it, whose reads from now on are the end of
    /// the stream: the events that would have woken it are gone with the
    /// socket (another task closes a connection whose send failed, while
    /// its reader waits).
    pub(crate) fn close(&self) {
        let Some(waker) = self.with_state(|state| {
            let open = !std::mem::replace(&mut state.closed, true);
            open.then(|| state.waker.take())
        }) else {
            return;
        };
        // SAFETY: `fd` is still open (see `Readiness::register`); a null
        // event is allowed for `EPOLL_CTL_DEL` since Linux 2.6.9.
        unsafe {
            libc::epoll_ctl(
                self.readiness.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            );
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.close();
        let mut slots = self.readiness.slots.borrow_mut();
        slots.states[self.token as usize] = State::default();
        slots.free.push(self.token);
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    fn on_glommio<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(f)
            .expect("spawn executor")
            .join()
            .expect("executor thread");
    }

    /// A read, which fails the test if no event wakes it within 10 s.
    async fn read(registration: &Registration, buf: &mut [u8]) -> usize {
        let read = async { Some(poll_fn(|cx| registration.poll_read(cx, buf)).await) };
        let deadline = async {
            glommio::timer::sleep(Duration::from_secs(10)).await;
            None
        };
        futures_lite::future::or(read, deadline)
            .await
            .expect("the reader is woken within 10 s")
            .expect("read")
    }

    /// Bytes written while the reader waits, right after its short read, and
    /// in pieces longer than its buffer all reach it, in order, woken by the
    /// epoll instance's events; the end of the stream reads as 0.
    #[test]
    fn every_byte_reaches_a_waiting_reader_and_the_end_reads_as_zero() {
        on_glommio(|| async {
            let readiness = Readiness::start().expect("epoll");
            let (ours, theirs) = UnixStream::pair().expect("pair");
            let registration = readiness.register(ours.as_raw_fd()).expect("register");
            let theirs = Rc::new(RefCell::new(theirs));
            // The peer writes only after the reader waits (no bytes yet).
            let writer = theirs.clone();
            let late = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                writer.borrow_mut().write_all(b"late").unwrap();
            });
            let mut buf = [0u8; 8];
            let n = read(&registration, &mut buf).await;
            assert_eq!(&buf[..n], b"late");
            late.await;
            let mut sent = Vec::new();
            let mut received = Vec::new();
            for round in 0..500u32 {
                // Written with no await after the reader's last (short)
                // read: only the event can tell it.
                let piece: Vec<u8> = (0..(round % 23 + 1)).map(|i| (round + i) as u8).collect();
                theirs.borrow_mut().write_all(&piece).unwrap();
                sent.extend_from_slice(&piece);
                while received.len() < sent.len() {
                    let n = read(&registration, &mut buf).await;
                    assert!(n > 0, "bytes outstanding, not the end");
                    received.extend_from_slice(&buf[..n]);
                }
                if round % 50 == 0 {
                    glommio::yield_if_needed().await;
                }
            }
            assert_eq!(received, sent);
            drop(theirs);
            assert_eq!(read(&registration, &mut buf).await, 0, "end of stream");
        });
    }

    /// TCP returns the bytes before a FIN and reports the end only on the
    /// next `recv`, with no event of its own: bytes and a half-close that
    /// reach the socket together (one event, `EPOLLIN | EPOLLRDHUP`) are
    /// read, and then the end, though the bytes came in a short read. The
    /// same for a request written then answered by a peer that then closes.
    #[test]
    fn bytes_then_the_end_in_one_event_are_both_read() {
        on_glommio(|| async {
            let readiness = Readiness::start().expect("epoll");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let mut theirs = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (ours, _) = listener.accept().expect("accept");
            let registration = readiness.register(ours.as_raw_fd()).expect("register");
            let mut buf = [0u8; 64];
            theirs.write_all(b"first").unwrap();
            let n = read(&registration, &mut buf).await;
            assert_eq!(&buf[..n], b"first");
            // Drained by that short read; now bytes and the FIN together,
            // with no await in between (the driver cannot run).
            theirs.write_all(b"last").unwrap();
            theirs.shutdown(std::net::Shutdown::Write).unwrap();
            let n = read(&registration, &mut buf).await;
            assert_eq!(&buf[..n], b"last");
            let began = std::time::Instant::now();
            assert_eq!(read(&registration, &mut buf).await, 0, "then the end");
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "{:?}",
                began.elapsed()
            );
        });
    }

    /// A connection closed by another task (its writer, after a failed
    /// send) while its reader waits: the reader is woken at once and reads
    /// the end of the stream, though no event can come any more.
    #[test]
    fn a_reader_waiting_when_its_socket_is_closed_reads_the_end() {
        on_glommio(|| async {
            let readiness = Readiness::start().expect("epoll");
            let (ours, _theirs) = UnixStream::pair().expect("pair");
            let registration = Rc::new(readiness.register(ours.as_raw_fd()).expect("register"));
            let closer = registration.clone();
            let close = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                closer.close();
            });
            let mut buf = [0u8; 8];
            let began = std::time::Instant::now();
            assert_eq!(
                read(&registration, &mut buf).await,
                0,
                "closed: end of stream"
            );
            // Woken by the close, not found closed when `read`'s deadline
            // polls it again.
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "{:?}",
                began.elapsed()
            );
            close.await;
            assert_eq!(read(&registration, &mut buf).await, 0, "and it stays so");
        });
    }

    /// A descriptor epoll refuses (a regular file: `EPERM`) is not
    /// registered, and its slot goes back to the free list: the connection
    /// falls back to glommio's wait (`Readiness::join` gives `None`).
    #[test]
    fn a_descriptor_epoll_refuses_is_not_registered_and_leaks_no_slot() {
        on_glommio(|| async {
            let readiness = Readiness::start().expect("epoll");
            let file = tempfile::tempfile().expect("file");
            let refused = readiness.register(file.as_raw_fd()).err().expect("refused");
            assert_eq!(refused.raw_os_error(), Some(libc::EPERM));
            assert_eq!(readiness.slots.borrow().free, vec![0]);
            assert!(readiness.join(file.as_raw_fd()).is_none());
            let (ours, _theirs) = UnixStream::pair().expect("pair");
            let registration = readiness.register(ours.as_raw_fd()).expect("register");
            assert_eq!(registration.token, 0, "the refused slot is reused");
            assert!(readiness.slots.borrow().free.is_empty());
        });
    }

    /// A dropped registration leaves the epoll instance and its slot is
    /// reused; the next connection starts ready and is not woken by the old
    /// one's bytes.
    #[test]
    fn a_dropped_registration_leaves_the_instance_and_its_slot_is_reused() {
        on_glommio(|| async {
            let readiness = Readiness::start().expect("epoll");
            let (first, mut first_peer) = UnixStream::pair().expect("pair");
            let registration = readiness.register(first.as_raw_fd()).expect("register");
            let token = registration.token;
            drop(registration);
            // Removed from the instance: adding it again succeeds (a socket
            // still in it would give EEXIST).
            let again = readiness.register(first.as_raw_fd()).expect("re-register");
            assert_eq!(again.token, token, "the slot is reused");
            drop(again);
            let (second, mut second_peer) = UnixStream::pair().expect("pair");
            let registration = readiness.register(second.as_raw_fd()).expect("register");
            assert_eq!(registration.token, token);
            first_peer.write_all(b"old").unwrap();
            second_peer.write_all(b"new").unwrap();
            let mut buf = [0u8; 8];
            let n = read(&registration, &mut buf).await;
            assert_eq!(&buf[..n], b"new");
            assert_eq!(readiness.slots.borrow().free.len(), 0);
            drop(registration);
            assert_eq!(readiness.slots.borrow().free, vec![token]);
        });
    }
}
