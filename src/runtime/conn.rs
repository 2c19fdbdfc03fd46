//! Client connections: accept, read frames, handle them concurrently, and
//! write replies back in batches.
//!
//! Many requests may be in flight on one connection and replies may leave in
//! any order (each carries its request id). The reader decodes every complete
//! frame a read returns and handles the requests concurrently, up to
//! `in_flight_per_connection_max`; past that it stops reading, which pushes
//! back on the client through TCP. Each request is polled once in place, so
//! one that needs no I/O has its reply queued before the reader moves on
//! (and costs no task: only a request that waits is spawned as one);
//! after each read the reader sends every reply queued so far in one
//! non-blocking `send`. A writer task sends what completes later and what a
//! full socket buffer left behind. The per-request kernel cost, not
//! user-space code, decides throughput (design guide §11), so the reader
//! wakes no other task for a request answered at once, and the idle timeout
//! is one timer per connection that fires only when the connection has been
//! quiet, not one armed and cancelled on every read.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;

use super::log;
use super::readiness::{Readiness, Registration};
use super::shard::{
    connection_allowed, Deferred, PreparedGroup, Reply, ShardState, PREFETCH_GROUP,
};
use crate::protocol::{
    self, ErrorCode, Frame, FrameDecoder, FrameError, LentFrame, Response, FRAME_LENGTH_BYTES,
};

/// Size of each read from a socket.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub(crate) async fn accept_loop(shard: Rc<ShardState>, listener: TcpListener, via_node_port: bool) {
    // The listener's connections learn when to read from one epoll
    // instance (`readiness`); without one, each waits on its own.
    let readiness = Readiness::for_listener(&shard.config, "client");
    accept_clients(shard, listener, "client", refuse, move |shard, stream| {
        let readiness = readiness.clone();
        async move { serve(&shard, stream, via_node_port, readiness.as_ref()).await }
    })
    .await
}

/// The accept loop of a client-facing listener (this protocol's, and the
/// RESP front end's): backs off on accept errors, refuses connections over
/// the shard's total or per-address limit with `refuse(stream, why)`, and
/// runs `serve` for each admitted connection, counted while it lasts.
pub(crate) async fn accept_clients<R, RF, S, SF>(
    shard: Rc<ShardState>,
    listener: TcpListener,
    name: &'static str,
    refuse: R,
    serve: S,
) where
    R: Fn(TcpStream, &'static str) -> RF,
    RF: std::future::Future<Output = ()> + 'static,
    S: Fn(Rc<ShardState>, TcpStream) -> SF,
    SF: std::future::Future<Output = ()> + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warning!(listener = name, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !connection_allowed(&shard) {
            glommio::spawn_local(refuse(stream, "too many connections")).detach();
            continue;
        }
        let admission = match stream.peer_addr() {
            Ok(peer) => shard
                .address_limiter
                .admit(peer.ip(), shard.config.connections_per_address_max),
            Err(_) => None,
        };
        let Some(admission) = admission else {
            glommio::spawn_local(refuse(stream, "too many connections from this address")).detach();
            continue;
        };
        let connection = serve(shard.clone(), stream);
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _admission = admission;
            let counters = &shard.counters;
            counters.connections.set(counters.connections.get() + 1);
            connection.await;
            counters.connections.set(counters.connections.get() - 1);
        })
        .detach();
    }
}

/// Over the connection limit: say so in one error frame, then close.
async fn refuse(mut stream: TcpStream, message: &'static str) {
    let mut out = Vec::new();
    let response = Response::Error {
        code: ErrorCode::Overloaded,
        message: message.into(),
        acks: 0,
        routing: None,
    };
    protocol::encode_response(0, &response, &mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}

async fn serve(
    shard: &Rc<ShardState>,
    stream: TcpStream,
    via_node_port: bool,
    readiness: Option<&Rc<Readiness>>,
) {
    let _ = stream.set_nodelay(true);
    let socket = Rc::new(Socket::new(stream, readiness));
    let outbox = Rc::new(Outbox::new(socket.fd));
    let in_flight = Rc::new(Semaphore::new(
        shard.config.in_flight_per_connection_max as u64,
    ));
    // Ends a connection that completes no request within the idle timeout,
    // whether it is silent or trickles bytes (a slow sender). One timer per
    // connection, re-armed only when it fires, instead of one per read.
    let last_request = Rc::new(Cell::new(Instant::now()));
    let watchdog = (shard.config.idle_timeout_ms > 0).then(|| {
        glommio::spawn_local(idle_watchdog(
            socket.fd,
            last_request.clone(),
            Duration::from_millis(shard.config.idle_timeout_ms),
        ))
    });

    let (writer_socket, writer_outbox) = (socket.clone(), outbox.clone());
    let writer_task = glommio::spawn_local(async move {
        let mut batch = Vec::with_capacity(READ_CHUNK_BYTES);
        while writer_outbox.take(&mut batch).await {
            let sent = writer_socket.write_all(&batch).await;
            writer_outbox.writing.set(false);
            if sent.is_err() {
                break;
            }
        }
        let _ = writer_socket.close().await;
    });

    let decoder = FrameDecoder::new(shard.node.limits.frame_bytes_max);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut spare = None;
    // The lengths of the whole frames of one read, in order from the
    // buffer's front.
    let mut lengths = Vec::new();
    // The frames `ShardState::prefetch` verified, of the group being handled.
    // Allocated at the first read of several frames (about 3.5 KiB): a
    // connection that never pipelines does not pay for it.
    let mut prepared: Option<Box<PreparedGroup>> = None;
    'read: loop {
        let n = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        // The requests of this read count their latency from now.
        let read_at = Instant::now();
        // Every whole frame of this read first: when there are several
        // (a pipelined batch), their keys' data is prefetched before the
        // first is handled, so that their cache misses overlap
        // (`ShardState::prefetch`). The frames stay in the buffer: each is
        // lent to its handler (`LentFrame`), which takes it only if its
        // request must keep it.
        let mut frame_error = None;
        lengths.clear();
        let mut at = 0;
        loop {
            match decoder.whole(&buffer[at..]) {
                Ok(Some(length)) => {
                    lengths.push(length);
                    at += FRAME_LENGTH_BYTES + length;
                }
                Ok(None) => break,
                Err(e) => {
                    frame_error = Some(e);
                    break;
                }
            }
        }
        let requests = lengths.len();
        outbox.begin_batch();
        for i in 0..requests {
            if requests > 1 && i % PREFETCH_GROUP == 0 {
                // The buffer's front is frame `i`'s length prefix.
                let group = prepared.get_or_insert_with(|| Box::new(std::array::from_fn(|_| None)));
                shard.prefetch(lent_frames(&buffer, &lengths[i..]), group);
            }
            let permit = match in_flight.try_acquire_static_permit(1) {
                Ok(permit) => permit,
                Err(_) => {
                    // At the in-flight bound: send what is ready,
                    // then wait for a request to finish.
                    shard.settle_batch();
                    outbox.end_batch();
                    let permit = in_flight.clone().acquire_static_permit(1).await;
                    outbox.begin_batch();
                    match permit {
                        Ok(permit) => permit,
                        Err(_) => break 'read,
                    }
                }
            };
            // A request answered in place (a ping, a get of a set
            // in memory, a one-replica write the store appends at
            // once) queues its reply with no future built. The
            // rest are polled once here: one that needs no I/O
            // queues its reply in this poll, with no task spawned
            // for it. One that waits goes on in its
            // own task; every future on the request path registers
            // the waker of each poll, so the task's first poll
            // re-arms what this one left with a no-op waker.
            // The box of a request that finished in place is kept
            // for the next one: no allocation per request either.
            // A get of a set in memory writes its reply straight into the
            // outgoing bytes (`Reply::Written`); the borrow ends before
            // `push`.
            let handled = {
                let frame = Frame::Lent(LentFrame::front(&mut buffer, lengths[i]));
                let mut out = outbox.bytes.borrow_mut();
                // Verified by `prefetch` when it ran for this frame's group.
                // (Every slot is taken before the next read: a read of one
                // frame finds its slot empty.)
                let prepared = prepared
                    .as_mut()
                    .and_then(|group| group[i % PREFETCH_GROUP].take());
                shard.handle_frame_now(frame, via_node_port, read_at, Some(&mut out), prepared)
            };
            let deferred = match handled {
                Ok(reply) => {
                    outbox.push(reply);
                    drop(permit);
                    continue;
                }
                Err(deferred) => deferred,
            };
            let future = request(shard.clone(), outbox.clone(), deferred, permit);
            let mut request = boxed(spare.take(), future);
            let mut cx = std::task::Context::from_waker(Waker::noop());
            if request.as_mut().poll(&mut cx).is_pending() {
                glommio::spawn_local(request).detach();
            } else {
                spare = Some(request);
            }
        }
        // The batch's requests answered in place are counted now, as their
        // replies are about to be sent (an error below still sends them).
        shard.settle_batch();
        if let Some(e) = frame_error {
            // The stream cannot be re-synchronised after a bad length
            // prefix: answer once and close.
            let FrameError::TooLarge { .. } = e;
            let code = ErrorCode::FrameTooLarge;
            outbox.push(Reply::Response(
                0,
                Response::Error {
                    code,
                    message: e.to_string(),
                    acks: 0,
                    routing: None,
                },
            ));
            break 'read;
        }
        if requests > 0 {
            last_request.set(read_at);
        }
        // Every reply this read produced without waiting for I/O goes out
        // now, in one send, from this task: the writer task is only woken
        // for replies that complete later, or a send that would block.
        outbox.end_batch();
    }
    outbox.batching.set(false);
    drop(watchdog);
    // Let requests already started finish and their replies leave, then close.
    let _ = in_flight
        .acquire(shard.config.in_flight_per_connection_max as u64)
        .await;
    outbox.close();
    writer_task.await;
}

/// The frames whose `lengths` are given, from the front of `buffer` (each
/// after its length prefix).
fn lent_frames<'a>(buffer: &'a [u8], lengths: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
    lengths.iter().scan(0, move |at, &length| {
        let start = *at + FRAME_LENGTH_BYTES;
        *at = start + length;
        buffer.get(start..*at)
    })
}

/// `future` in `spare`'s box (the allocation of a finished future of the
/// same type), or in a new one.
fn boxed<F: Future>(spare: Option<Pin<Box<F>>>, future: F) -> Pin<Box<F>> {
    match spare {
        Some(mut spare) => {
            spare.set(future);
            spare
        }
        None => Box::pin(future),
    }
}

/// One request of a connection that `handle_frame_now` deferred: handled,
/// its reply queued, its in-flight permit given back.
async fn request(
    shard: Rc<ShardState>,
    outbox: Rc<Outbox>,
    deferred: Deferred,
    permit: glommio::sync::StaticPermit,
) {
    let reply = shard.handle_deferred(deferred).await;
    outbox.push(reply);
    drop(permit);
}

/// Sleeps until `idle` after the last complete request and then shuts the
/// socket's read side down, which ends the connection's reader with EOF (its
/// requests in flight still finish and their replies still leave). Dropped
/// (cancelled) when the connection ends, before its descriptor is closed.
/// Binary client connections and RESP connections (`resp.rs`) both use it.
pub(crate) async fn idle_watchdog(fd: RawFd, last_request: Rc<Cell<Instant>>, idle: Duration) {
    loop {
        let deadline = last_request.get() + idle;
        let now = Instant::now();
        if now >= deadline {
            // SAFETY: the descriptor is open: the connection that owns it
            // cancels this task before dropping its stream.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
            return;
        }
        glommio::timer::sleep(deadline - now).await;
    }
}

/// One connection's socket, shared by its reader and writer tasks. They run
/// on one thread and never hold the borrow across an await, so a `RefCell`
/// does what a lock would (`futures_lite::io::split` takes a mutex per call).
struct Socket {
    /// The socket in its listener's epoll instance (`readiness`), which
    /// then tells the reader when to read; `None` where it could not be
    /// added, and glommio's own wait is used. Declared before `stream`, so
    /// that it is dropped (removed from the instance) before the socket is
    /// closed; `close` closes it first too, waking a reader still waiting.
    registration: RefCell<Option<Registration>>,
    stream: RefCell<TcpStream>,
    fd: RawFd,
}

impl Socket {
    fn new(stream: TcpStream, readiness: Option<&Rc<Readiness>>) -> Self {
        let fd = stream.as_raw_fd();
        let registration = readiness.and_then(|readiness| readiness.join(fd));
        Socket {
            registration: RefCell::new(registration),
            stream: RefCell::new(stream),
            fd,
        }
    }

    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| match &*self.registration.borrow() {
            Some(registration) => registration.poll_read(cx, buf),
            None => Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf),
        })
        .await
    }

    async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = std::future::poll_fn(|cx| {
                Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf)
            })
            .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    async fn close(&self) -> std::io::Result<()> {
        // Out of the epoll instance before the descriptor closes; a reader
        // waiting on it is woken and reads the end of the stream.
        if let Some(registration) = &*self.registration.borrow() {
            registration.close();
        }
        std::future::poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_close(cx)).await
    }
}

/// Replies waiting to be written, encoded straight into one buffer. The
/// reader sends it itself after each read (`send_now`); the writer task
/// takes over what that could not send, and replies that complete later.
struct Outbox {
    bytes: RefCell<Vec<u8>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    /// The writer task holds a batch it has not finished sending: nothing
    /// else may write to the socket until it has, or bytes would interleave.
    writing: Cell<bool>,
    /// The reader is handling the requests of one read and sends their
    /// replies itself when it is done, so a reply pushed meanwhile need not
    /// wake the writer.
    batching: Cell<bool>,
    fd: RawFd,
}

impl Outbox {
    fn new(fd: RawFd) -> Self {
        Outbox {
            bytes: RefCell::new(Vec::new()),
            waker: RefCell::new(None),
            closed: Cell::new(false),
            writing: Cell::new(false),
            batching: Cell::new(false),
            fd,
        }
    }

    fn push(&self, reply: Reply) {
        {
            reply.encode(&mut self.bytes.borrow_mut());
        }
        if !self.batching.get() {
            self.wake_writer();
        }
    }

    /// The reader starts handling the requests of one read; it sends their
    /// replies itself when done (`end_batch`).
    fn begin_batch(&self) {
        self.batching.set(true);
    }

    /// The reader is done with a read, or must wait: send what is queued.
    fn end_batch(&self) {
        if self.batching.replace(false) {
            self.send_now();
        }
    }

    fn wake_writer(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Sends what is queued with one non-blocking `send`, unless the writer
    /// task is mid-batch. Whatever is left (the socket buffer was full, or
    /// the send failed) stays queued for the writer, which waits for the
    /// socket to drain or reports the error.
    fn send_now(&self) {
        if self.writing.get() || self.closed.get() {
            // The writer sends what is queued once it is done.
            self.wake_writer();
            return;
        }
        let mut bytes = self.bytes.borrow_mut();
        if bytes.is_empty() {
            return;
        }
        // SAFETY: `fd` is the connection's open socket (the outbox lives no
        // longer than the connection) and the pointer and length describe
        // initialised bytes we own.
        let sent = unsafe {
            libc::send(
                self.fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent > 0 {
            bytes.drain(..sent as usize);
        }
        let left = !bytes.is_empty();
        drop(bytes);
        if left {
            self.wake_writer();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake_writer();
    }

    /// Waits for queued replies and moves them into `batch` (cleared first),
    /// marking the writer busy until it clears `writing`. Returns false once
    /// the outbox is closed and empty.
    async fn take(&self, batch: &mut Vec<u8>) -> bool {
        std::future::poll_fn(|cx| {
            let mut bytes = self.bytes.borrow_mut();
            if !bytes.is_empty() {
                batch.clear();
                std::mem::swap(&mut *bytes, batch);
                self.writing.set(true);
                return Poll::Ready(true);
            }
            if self.closed.get() {
                return Poll::Ready(false);
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
