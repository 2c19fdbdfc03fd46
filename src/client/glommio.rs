//! An async front end for the client core on a glommio executor.
//!
//! Many tasks may call one `AsyncClient` at once: each request is submitted
//! to the shared core, whichever task holds a connection's write half writes
//! everything queued for that connection in one `write_all` (so concurrent
//! requests share sends), and one reader task per connection feeds replies to
//! the core and wakes the tasks waiting for them. Replies arrive in any order.
//!
//! Invariant: this file only moves bytes, wake-ups and time between glommio
//! and the core; routing, retries and timeouts are the core's decisions. No
//! `RefCell` borrow is held across an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{split, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;

use super::blocking::ClientOptions;
use super::core::{ClientCore, Ticket};
use super::error::{ClientError, IoStage};
use super::ops::{self, GetResult};
use crate::protocol::{FrameDecoder, Quorum, Request, Response, RoutingTable};

/// Bytes read from a socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A connection's state in the shared map.
enum Slot {
    /// A task is connecting; it will write what is queued once connected.
    Connecting,
    /// Connected.
    Ready(Rc<Connection>),
}

struct Connection {
    /// Taken by the task that writes; `None` while a write is in progress.
    writer: RefCell<Option<WriteHalf<TcpStream>>>,
    /// The reader task; dropping it cancels it.
    reader: RefCell<Option<glommio::Task<()>>>,
}

enum Waiter {
    Waiting(Option<Waker>),
    Done(Result<Response, ClientError>),
}

struct Shared {
    core: RefCell<ClientCore>,
    options: ClientOptions,
    connections: RefCell<HashMap<SocketAddr, Slot>>,
    waiters: RefCell<HashMap<Ticket, Waiter>>,
}

/// An async, cluster-aware dynakv client for one glommio executor. Clone it
/// freely within the executor: clones share connections and state.
#[derive(Clone)]
pub struct AsyncClient {
    shared: Rc<Shared>,
}

impl AsyncClient {
    /// Connects to a node's node-level port and fetches the routing table.
    pub async fn connect(
        addr: SocketAddr,
        options: ClientOptions,
    ) -> Result<AsyncClient, ClientError> {
        let core = ClientCore::new(addr, options.core());
        let client = AsyncClient {
            shared: Rc::new(Shared {
                core: RefCell::new(core),
                options,
                connections: RefCell::new(HashMap::new()),
                waiters: RefCell::new(HashMap::new()),
            }),
        };
        client.routing_table().await?;
        Ok(client)
    }

    /// Liveness round trip to the seed node.
    pub async fn ping(&self) -> Result<(), ClientError> {
        ops::ping_reply(self.call(Request::Ping).await?)
    }

    /// Reads `key` with the cluster's default quorum.
    pub async fn get(&self, key: &[u8]) -> Result<GetResult, ClientError> {
        self.get_with(key, Quorum::DEFAULT).await
    }

    /// Reads `key`; only `quorum.r` and `quorum.n` matter.
    pub async fn get_with(&self, key: &[u8], quorum: Quorum) -> Result<GetResult, ClientError> {
        GetResult::from_response(self.call(ops::get_request(key, quorum)).await?)
    }

    /// Writes `value` under `key` superseding `context`; returns the new
    /// version's context.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        context: Option<&[u8]>,
        quorum: Quorum,
    ) -> Result<Bytes, ClientError> {
        ops::put_reply(
            self.call(ops::put_request(key, value, context, quorum))
                .await?,
        )
    }

    /// Deletes `key` superseding `context`.
    pub async fn delete(
        &self,
        key: &[u8],
        context: &[u8],
        quorum: Quorum,
    ) -> Result<(), ClientError> {
        ops::delete_reply(self.call(ops::delete_request(key, context, quorum)).await?)
    }

    /// Fetches the current routing table (and routes with it from now on).
    pub async fn routing_table(&self) -> Result<RoutingTable, ClientError> {
        ops::routing_table_reply(self.call(Request::GetRoutingTable).await?)
    }

    /// The routing table in use, without a round trip.
    pub fn cached_routing_table(&self) -> Option<RoutingTable> {
        self.shared.core.borrow().routing_table().cloned()
    }

    /// Sends `request` and waits for its reply; other tasks' requests go out
    /// and come back concurrently on the same connections.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let shared = &self.shared;
        let ticket = shared.core.borrow_mut().submit(Instant::now(), request)?;
        shared
            .waiters
            .borrow_mut()
            .insert(ticket, Waiter::Waiting(None));
        // Removes the waiter if this future is dropped before completion.
        let _guard = WaiterGuard {
            shared: shared.clone(),
            ticket,
        };
        shared.dispatch();
        flush(shared.clone()).await;
        loop {
            let deadline = shared.core.borrow().poll_timeout();
            let completion = Completion {
                shared: shared.clone(),
                ticket,
            };
            let expired = async {
                match deadline {
                    Some(deadline) => {
                        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now()))
                            .await;
                    }
                    None => std::future::pending::<()>().await,
                }
                None::<Result<Response, ClientError>>
            };
            let completed = async { Some(completion.await) };
            if let Some(result) = futures_lite::future::or(completed, expired).await {
                return result;
            }
            shared.core.borrow_mut().handle_timeout(Instant::now());
            shared.dispatch();
            // Expiring a routing-table fetch resends the requests that
            // waited for it.
            flush(shared.clone()).await;
        }
    }
}

impl Shared {
    /// Hands every finished operation to its waiter and wakes it.
    fn dispatch(&self) {
        let mut waiters = self.waiters.borrow_mut();
        while let Some((ticket, result)) = self.core.borrow_mut().poll_completion() {
            if let Some(waiter) = waiters.get_mut(&ticket) {
                if let Waiter::Waiting(Some(waker)) =
                    std::mem::replace(waiter, Waiter::Done(result))
                {
                    waker.wake();
                }
            }
        }
    }

    fn close(&self, target: SocketAddr) {
        let slot = self.connections.borrow_mut().remove(&target);
        if let Some(Slot::Ready(connection)) = slot {
            // The reader may be the task running this: let it finish its
            // current poll rather than cancel it from inside.
            if let Some(reader) = connection.reader.borrow_mut().take() {
                reader.detach();
            }
        }
    }
}

/// Removes a waiter whose `call` was dropped.
struct WaiterGuard {
    shared: Rc<Shared>,
    ticket: Ticket,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.shared.waiters.borrow_mut().remove(&self.ticket);
    }
}

/// Resolves when `ticket`'s waiter is done.
struct Completion {
    shared: Rc<Shared>,
    ticket: Ticket,
}

impl Future for Completion {
    type Output = Result<Response, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut waiters = self.shared.waiters.borrow_mut();
        let Some(waiter) = waiters.get_mut(&self.ticket) else {
            unreachable!("a waiter lives as long as its call");
        };
        match waiter {
            Waiter::Waiting(waker) => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Waiter::Done(_) => {
                let Some(Waiter::Done(result)) = waiters.remove(&self.ticket) else {
                    unreachable!("checked above");
                };
                Poll::Ready(result)
            }
        }
    }
}

/// Writes everything the core has queued, connecting where needed. Targets
/// whose writer is busy (or still connecting) are left to the task that
/// holds them: it drains its target's queue before letting go.
async fn flush(shared: Rc<Shared>) {
    let mut busy: Vec<SocketAddr> = Vec::new();
    loop {
        let target = shared
            .core
            .borrow()
            .pending_targets()
            .find(|target| !busy.contains(target));
        let Some(target) = target else {
            return;
        };
        let connection = match shared.connections.borrow().get(&target) {
            Some(Slot::Ready(connection)) => Some(connection.clone()),
            Some(Slot::Connecting) => {
                busy.push(target);
                continue;
            }
            None => None,
        };
        let connection = match connection {
            Some(connection) => connection,
            None => match open(&shared, target).await {
                Some(connection) => connection,
                None => continue,
            },
        };
        let writer = connection.writer.borrow_mut().take();
        let Some(mut writer) = writer else {
            busy.push(target);
            continue;
        };
        loop {
            let transmit = shared.core.borrow_mut().poll_transmit_to(target);
            let Some(transmit) = transmit else {
                break;
            };
            if let Err(error) = writer.write_all(&transmit.bytes).await {
                shared.close(target);
                shared.core.borrow_mut().handle_unreachable(
                    Instant::now(),
                    target,
                    IoStage::Write,
                    error.kind(),
                );
                shared.dispatch();
                break;
            }
        }
        *connection.writer.borrow_mut() = Some(writer);
    }
}

/// Connects to `target` and starts its reader; `None` when the connection
/// failed (the core then reroutes what was queued for it).
async fn open(shared: &Rc<Shared>, target: SocketAddr) -> Option<Rc<Connection>> {
    shared
        .connections
        .borrow_mut()
        .insert(target, Slot::Connecting);
    let connected = TcpStream::connect_timeout(target, shared.options.connect_timeout).await;
    let stream = match connected {
        Ok(stream) => stream,
        Err(error) => {
            shared.connections.borrow_mut().remove(&target);
            let error = io::Error::from(error);
            shared.core.borrow_mut().handle_unreachable(
                Instant::now(),
                target,
                IoStage::Connect,
                error.kind(),
            );
            shared.dispatch();
            return None;
        }
    };
    // Latency matters more than packet count: requests are already batched.
    let _ = stream.set_nodelay(true);
    let (reader, writer) = split(stream);
    let connection = Rc::new(Connection {
        writer: RefCell::new(Some(writer)),
        reader: RefCell::new(None),
    });
    let task = glommio::spawn_local(read_loop(Rc::downgrade(shared), target, reader));
    *connection.reader.borrow_mut() = Some(task);
    shared
        .connections
        .borrow_mut()
        .insert(target, Slot::Ready(connection.clone()));
    Some(connection)
}

/// Reads frames from `target` until the connection fails, feeding them to
/// the core. It holds the client weakly so that dropping the client ends it.
async fn read_loop(shared: Weak<Shared>, target: SocketAddr, mut reader: ReadHalf<TcpStream>) {
    let (frame_bytes_max, mut chunk) = match shared.upgrade() {
        Some(shared) => (
            shared.options.limits.frame_bytes_max,
            vec![0u8; READ_CHUNK_BYTES],
        ),
        None => return,
    };
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        let read = reader.read(&mut chunk).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let n = match read {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof),
            Ok(n) => Ok(n),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => Err(error.kind()),
        };
        let n = match n {
            Ok(n) => n,
            Err(kind) => {
                shared.close(target);
                shared
                    .core
                    .borrow_mut()
                    .handle_unreachable(now, target, IoStage::Read, kind);
                shared.dispatch();
                glommio::spawn_local(flush(shared.clone())).detach();
                return;
            }
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut failed = false;
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    let handled = shared.core.borrow_mut().handle_frame(now, target, frame);
                    if handled.is_err() {
                        failed = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let error = ClientError::Protocol {
                        addr: target,
                        message: error.to_string(),
                    };
                    shared
                        .core
                        .borrow_mut()
                        .handle_connection_error(now, target, &error);
                    failed = true;
                    break;
                }
            }
        }
        shared.dispatch();
        // A WrongOwner retry or a reroute may have queued new frames.
        if shared.core.borrow().pending_targets().next().is_some() {
            glommio::spawn_local(flush(shared.clone())).detach();
        }
        if failed {
            shared.close(target);
            return;
        }
    }
}
