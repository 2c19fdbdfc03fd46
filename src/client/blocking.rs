//! A blocking `std::net` front end for the client core.
//!
//! It owns one TCP connection per target (`SocketAddr`) the core routes to,
//! writes every frame queued for a target with one `write_all`, and waits for
//! replies on all connections at once with `poll(2)`, so requests sent with
//! `send` are pipelined and their replies may arrive in any order.
//!
//! Invariant: this file only moves bytes and time between sockets and the
//! core; routing, retries and timeouts are the core's decisions.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::core::{ClientCore, CoreOptions, FastestReplicaFn, Ticket};
use super::error::{ClientError, IoStage};
use super::ops;
pub use super::ops::GetResult;
use crate::protocol::{FrameDecoder, Limits, Quorum, Request, Response, RoutingTable};

/// Bytes read from a socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long a request may wait for its reply, retries included.
    pub timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Protocol bounds (must match the cluster's).
    pub limits: Limits,
    /// Most requests in flight.
    pub in_flight_max: usize,
    /// How long a node that failed is avoided by routing.
    pub unreachable_for: Duration,
    /// Reader of a context's fastest replica (`version` module), if any.
    pub fastest_replica: Option<FastestReplicaFn>,
    /// Times a sent request is sent again to the next replica when its node
    /// fails (see `CoreOptions::failover_attempts`).
    pub failover_attempts: u8,
    /// No reply for this long: the node counts as down and the request
    /// fails over (see `CoreOptions::attempt_timeout`).
    pub attempt_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let core = CoreOptions::default();
        ClientOptions {
            timeout: core.timeout,
            connect_timeout: Duration::from_secs(1),
            limits: core.limits,
            in_flight_max: core.in_flight_max,
            unreachable_for: core.unreachable_for,
            fastest_replica: core.fastest_replica,
            failover_attempts: core.failover_attempts,
            attempt_timeout: core.attempt_timeout,
        }
    }
}

impl ClientOptions {
    /// The core's share of the options.
    pub(super) fn core(&self) -> CoreOptions {
        CoreOptions {
            timeout: self.timeout,
            limits: self.limits.clone(),
            in_flight_max: self.in_flight_max,
            unreachable_for: self.unreachable_for,
            fastest_replica: self.fastest_replica,
            failover_attempts: self.failover_attempts,
            attempt_timeout: self.attempt_timeout,
        }
    }
}

/// One TCP connection to a target.
struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet split into frames.
    buffer: BytesMut,
    decoder: FrameDecoder,
}

/// A blocking, cluster-aware dynakv client.
pub struct Client {
    core: ClientCore,
    options: ClientOptions,
    connections: HashMap<SocketAddr, Connection>,
    /// Completions taken from the core that the caller has not collected.
    finished: VecDeque<(Ticket, Result<Response, ClientError>)>,
    /// Scratch space for `read`.
    read_chunk: Vec<u8>,
}

impl Client {
    /// Connects to a node's node-level port and fetches the routing table.
    pub fn connect(addr: SocketAddr, options: ClientOptions) -> Result<Client, ClientError> {
        let mut client = Client {
            core: ClientCore::new(addr, options.core()),
            options,
            connections: HashMap::new(),
            finished: VecDeque::new(),
            read_chunk: vec![0; READ_CHUNK_BYTES],
        };
        client.routing_table()?;
        Ok(client)
    }

    /// Liveness round trip to the seed node.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        ops::ping_reply(self.call(Request::Ping)?)
    }

    /// Reads `key` with the cluster's default quorum.
    pub fn get(&mut self, key: &[u8]) -> Result<GetResult, ClientError> {
        self.get_with(key, Quorum::DEFAULT)
    }

    /// Reads `key`; only `quorum.r` and `quorum.n` matter.
    pub fn get_with(&mut self, key: &[u8], quorum: Quorum) -> Result<GetResult, ClientError> {
        GetResult::from_response(self.call(ops::get_request(key, quorum))?)
    }

    /// Writes `value` under `key`, superseding what `context` (from a get)
    /// saw; without a context the value becomes a new sibling. Returns the
    /// new version's context.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        context: Option<&[u8]>,
        quorum: Quorum,
    ) -> Result<Bytes, ClientError> {
        ops::put_reply(self.call(ops::put_request(key, value, context, quorum))?)
    }

    /// Deletes `key` (writes a tombstone) superseding what `context` saw.
    pub fn delete(
        &mut self,
        key: &[u8],
        context: &[u8],
        quorum: Quorum,
    ) -> Result<(), ClientError> {
        ops::delete_reply(self.call(ops::delete_request(key, context, quorum))?)
    }

    /// Fetches the current routing table from the seed node (and routes
    /// with it from now on).
    pub fn routing_table(&mut self) -> Result<RoutingTable, ClientError> {
        ops::routing_table_reply(self.call(Request::GetRoutingTable)?)
    }

    /// The routing table in use, without a round trip.
    pub fn cached_routing_table(&self) -> Option<&RoutingTable> {
        self.core.routing_table()
    }

    /// Queues `request` without waiting; the bytes go out with the next
    /// `recv`, `wait` or `flush`, together with everything else queued.
    pub fn send(&mut self, request: Request) -> Result<Ticket, ClientError> {
        self.core.submit(Instant::now(), request)
    }

    /// Writes every queued request now.
    pub fn flush(&mut self) {
        self.write_pending(Instant::now());
    }

    /// The next finished request, in completion order; `None` when nothing
    /// is in flight. An `Err` reply (server error, timeout, lost
    /// connection) belongs to its ticket, not to the call.
    pub fn recv(&mut self) -> Option<(Ticket, Result<Response, ClientError>)> {
        loop {
            if let Some(done) = self.finished.pop_front() {
                return Some(done);
            }
            if self.core.in_flight() == 0 {
                return None;
            }
            self.drive();
        }
    }

    /// Waits for `ticket`'s outcome; other completions stay for `recv`.
    ///
    /// # Panics
    ///
    /// If `ticket` was not returned by `send` on this client or was already
    /// collected (by `recv` or an earlier `wait`): a bug in the caller.
    pub fn wait(&mut self, ticket: Ticket) -> Result<Response, ClientError> {
        loop {
            if let Some(index) = self.finished.iter().position(|(t, _)| *t == ticket) {
                let (_, result) = self.finished.remove(index).expect("index from position");
                return result;
            }
            assert!(
                self.core.in_flight() > 0,
                "ticket {ticket:?} is neither finished nor in flight"
            );
            self.drive();
        }
    }

    fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let ticket = self.send(request)?;
        self.wait(ticket)
    }

    /// One round: write what is queued, wait for readable sockets or the
    /// next deadline, feed what was read, expire what is overdue.
    fn drive(&mut self) {
        self.write_pending(Instant::now());
        self.collect();
        if !self.finished.is_empty() {
            return;
        }
        let now = Instant::now();
        let Some(deadline) = self.core.poll_timeout() else {
            return;
        };
        let targets = self.core.awaiting_targets();
        let mut fds: Vec<libc::pollfd> = targets
            .iter()
            .filter_map(|target| self.connections.get(target))
            .map(|connection| libc::pollfd {
                fd: connection.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait_ms = deadline
            .saturating_duration_since(now)
            .as_millis()
            .saturating_add(1)
            .min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid, exclusively borrowed array of `pollfd`
        // whose length is passed alongside; the descriptors belong to
        // streams that outlive the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        let now = Instant::now();
        if ready > 0 {
            for (target, fd) in targets
                .iter()
                .filter(|target| self.connections.contains_key(target))
                .zip(fds.iter())
                .collect::<Vec<_>>()
            {
                if fd.revents != 0 {
                    self.read_from(now, *target);
                }
            }
        }
        // poll failing (EINTR) or timing out both fall through to here.
        self.core.handle_timeout(now);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(done) = self.core.poll_completion() {
            self.finished.push_back(done);
        }
    }

    /// Connects where needed and writes each target's queued frames with
    /// one `write_all`. Connecting happens before the core hands the bytes
    /// out, so a refused connection reroutes the requests instead of
    /// failing them.
    fn write_pending(&mut self, now: Instant) {
        loop {
            let targets: Vec<SocketAddr> = self.core.pending_targets().collect();
            if targets.is_empty() {
                return;
            }
            let awaiting = self.core.awaiting_targets();
            for target in targets {
                // An idle connection the node closed (say, it restarted) is
                // noticed only when reading; find out before writing, so a
                // request is not lost to a connection that was already dead.
                let closed = !awaiting.contains(&target)
                    && self
                        .connections
                        .get(&target)
                        .is_some_and(|connection| peer_closed(&connection.stream));
                if closed {
                    self.connections.remove(&target);
                }
                if !self.connections.contains_key(&target) {
                    match self.open(target) {
                        Ok(connection) => {
                            self.connections.insert(target, connection);
                        }
                        Err(error) => {
                            self.core.handle_unreachable(
                                now,
                                target,
                                IoStage::Connect,
                                error.kind(),
                            );
                            continue;
                        }
                    }
                }
                let Some(transmit) = self.core.poll_transmit_to(target) else {
                    continue;
                };
                let connection = self.connections.get_mut(&target).expect("opened above");
                if let Err(error) = connection.stream.write_all(&transmit.bytes) {
                    self.connections.remove(&target);
                    self.core
                        .handle_unreachable(now, target, IoStage::Write, error.kind());
                }
            }
        }
    }

    fn open(&self, target: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&target, self.options.connect_timeout)?;
        stream.set_nodelay(true)?;
        // `poll` says when to read; the timeouts only guard against a peer
        // that stops reading our writes.
        stream.set_write_timeout(Some(self.options.timeout))?;
        stream.set_read_timeout(Some(self.options.timeout))?;
        Ok(Connection {
            stream,
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: FrameDecoder::new(self.options.limits.frame_bytes_max),
        })
    }

    /// Reads what `target`'s socket has and feeds every whole frame to the
    /// core.
    fn read_from(&mut self, now: Instant, target: SocketAddr) {
        let Some(connection) = self.connections.get_mut(&target) else {
            return;
        };
        let read = connection.stream.read(&mut self.read_chunk);
        let n = match read {
            Ok(0) => {
                self.connections.remove(&target);
                self.core.handle_unreachable(
                    now,
                    target,
                    IoStage::Read,
                    io::ErrorKind::UnexpectedEof,
                );
                return;
            }
            Ok(n) => n,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                return;
            }
            Err(error) => {
                self.connections.remove(&target);
                self.core
                    .handle_unreachable(now, target, IoStage::Read, error.kind());
                return;
            }
        };
        connection.buffer.extend_from_slice(&self.read_chunk[..n]);
        loop {
            match connection.decoder.decode(&mut connection.buffer) {
                Ok(Some(frame)) => {
                    if self.core.handle_frame(now, target, frame).is_err() {
                        // The core has failed that target's requests.
                        self.connections.remove(&target);
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    self.connections.remove(&target);
                    let error = ClientError::Protocol {
                        addr: target,
                        message: error.to_string(),
                    };
                    self.core.handle_connection_error(now, target, &error);
                    return;
                }
            }
        }
    }
}

/// Whether the peer has closed `stream` (end of file pending), without
/// blocking or consuming anything.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: the buffer is one valid, writable byte; MSG_PEEK leaves the
    // data in the socket and MSG_DONTWAIT keeps the call from blocking.
    let received = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    received == 0
}
