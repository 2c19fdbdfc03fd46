//! Client connections: accept, read frames, handle them concurrently, and
//! write replies back in batches.
//!
//! Many requests may be in flight on one connection and replies may leave in
//! any order (each carries its request id). The reader decodes every complete
//! frame a read returns and starts one task per request, up to
//! `in_flight_per_connection_max`; past that it stops reading, which pushes
//! back on the client through TCP. The writer sends every reply queued since
//! its last send in one write: the per-request kernel cost, not user-space
//! code, decides throughput (design guide §11).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;

use super::log;
use super::shard::{connection_allowed, Reply, ShardState};
use crate::protocol::{self, ErrorCode, FrameDecoder, FrameError, Response};

/// Size of each read from a socket.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub(crate) async fn accept_loop(shard: Rc<ShardState>, listener: TcpListener, via_node_port: bool) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warning!(error = %e, "client accept failed");
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
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _admission = admission;
            shard
                .counters
                .connections
                .set(shard.counters.connections.get() + 1);
            serve(&shard, stream, via_node_port).await;
            shard
                .counters
                .connections
                .set(shard.counters.connections.get() - 1);
        })
        .detach();
    }
}

/// Over the connection limit: say so in one error frame, then close.
async fn refuse(mut stream: TcpStream, message: &str) {
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

async fn serve(shard: &Rc<ShardState>, stream: TcpStream, via_node_port: bool) {
    let _ = stream.set_nodelay(true);
    // An idle or half-open connection holds nothing for longer than this.
    // (0 disables it; each read then arms no timer.)
    if shard.config.idle_timeout_ms > 0 {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(shard.config.idle_timeout_ms)));
    }
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let outbox = Rc::new(Outbox::default());
    let in_flight = Rc::new(Semaphore::new(
        shard.config.in_flight_per_connection_max as u64,
    ));

    let writer_outbox = outbox.clone();
    let writer_task = glommio::spawn_local(async move {
        let mut batch = Vec::with_capacity(READ_CHUNK_BYTES);
        while writer_outbox.take(&mut batch).await {
            if writer.write_all(&batch).await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });

    let mut decoder = FrameDecoder::new(shard.node.limits.frame_bytes_max);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // The read timeout ends a silent connection; this ends a slow one that
    // trickles bytes but completes no request within the idle timeout.
    let idle = Duration::from_millis(shard.config.idle_timeout_ms);
    let mut last_request = std::time::Instant::now();
    'read: loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    last_request = std::time::Instant::now();
                    let permit = match in_flight.clone().acquire_static_permit(1).await {
                        Ok(permit) => permit,
                        Err(_) => break 'read,
                    };
                    let (shard, outbox) = (shard.clone(), outbox.clone());
                    glommio::spawn_local(async move {
                        let reply = shard.handle_frame(frame, via_node_port).await;
                        outbox.push(reply);
                        drop(permit);
                    })
                    .detach();
                }
                Ok(None) => {
                    if !idle.is_zero() && last_request.elapsed() > idle {
                        break 'read;
                    }
                    break;
                }
                Err(e) => {
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
            }
        }
    }
    // Let requests already started finish and their replies leave, then close.
    let _ = in_flight
        .acquire(shard.config.in_flight_per_connection_max as u64)
        .await;
    outbox.close();
    writer_task.await;
}

/// Replies waiting to be written, encoded straight into one buffer that the
/// writer swaps out and sends in one write.
#[derive(Default)]
struct Outbox {
    bytes: RefCell<Vec<u8>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl Outbox {
    fn push(&self, reply: Reply) {
        {
            let mut bytes = self.bytes.borrow_mut();
            match reply {
                Reply::Response(id, response) => {
                    protocol::encode_response(id, &response, &mut bytes)
                }
                Reply::Encoded(encoded) => bytes.extend_from_slice(&encoded),
            }
        }
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits for queued replies and moves them into `batch` (cleared first).
    /// Returns false once the outbox is closed and empty.
    async fn take(&self, batch: &mut Vec<u8>) -> bool {
        std::future::poll_fn(|cx| {
            let mut bytes = self.bytes.borrow_mut();
            if !bytes.is_empty() {
                batch.clear();
                std::mem::swap(&mut *bytes, batch);
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
