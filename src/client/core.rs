//! The sans-IO client core: request ids, encoding, routing, matching replies
//! to requests, the WrongOwner retry and timeouts, with no sockets and no
//! clock of its own.
//!
//! A driver (the blocking or the glommio front end, or a test) feeds it
//! inputs and drains its outputs:
//!
//! * `submit(now, request)` queues a request and returns its `Ticket`;
//! * `poll_transmit()` hands out the bytes to write, one buffer per target
//!   (`SocketAddr`) holding every frame queued for it, so a driver writes
//!   many requests with one send;
//! * `handle_frame(now, from, frame)` takes one frame read from a target;
//! * `handle_unreachable(now, target, stage, kind)` reports a failed or lost
//!   connection;
//! * `handle_timeout(now)` expires requests; `poll_timeout()` says when to
//!   call it next;
//! * `poll_completion()` yields each finished request exactly once.
//!
//! Routing (Dynamo §6.4, client-driven coordination): a key's partition is the
//! top `log2 q` bits of its xxh3-128 hash; its coordinator is the first
//! reachable owner of the partition's preference list, or the replica a
//! context names as the fastest reader. Without a routing table every request
//! goes to the seed node's node-level port, which forwards it. A `WrongOwner`
//! reply refreshes the table (from the reply, or by fetching it) and the
//! request is retried once.
//!
//! Invariants: every submitted ticket completes exactly once (reply, error or
//! timeout); at most `in_flight_max` operations are in flight; a reply is
//! accepted only from the target its attempt was sent to.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::{ClientError, IoStage};
use crate::protocol::{
    decode_response, encode_request_ref, ErrorCode, Limits, Request, Response, RoutingTable,
};

/// Default bound on operations in flight in one client.
pub const IN_FLIGHT_MAX: usize = 4096;

/// The handle of one submitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// One replica: a shard of a node, as named by a context's fastest-replica
/// hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaId {
    /// The node's stable id.
    pub node_id: u64,
    /// The shard on that node.
    pub shard: u16,
}

impl ReplicaId {
    /// The replica a context's fastest-replica field names, by the server's
    /// convention `node id << 32 | shard` (docs/cluster-runtime.md §5).
    pub fn from_actor(actor: u64) -> ReplicaId {
        ReplicaId {
            node_id: actor >> 32,
            shard: actor as u16,
        }
    }
}

/// The default fastest-replica reader: decodes a dynakv context token (the
/// client library ships with the server, so it may know the token's format;
/// applications never need to). A token that does not decode names no one.
pub fn fastest_replica_of_context(context: &[u8]) -> Option<ReplicaId> {
    let context = crate::version::Context::decode(context).ok()?;
    context.fastest_replica.map(ReplicaId::from_actor)
}

/// Reads the fastest replica out of an opaque context. The context format
/// belongs to the `version` module; the client takes the reader as a plain
/// function so that it stays ignorant of the format.
pub type FastestReplicaFn = fn(&[u8]) -> Option<ReplicaId>;

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// How long a request may wait for its reply, retries included.
    pub timeout: Duration,
    /// Bounds for encoding checks and reply decoding.
    pub limits: Limits,
    /// Most operations in flight.
    pub in_flight_max: usize,
    /// How long a target that failed is avoided by routing.
    pub unreachable_for: Duration,
    /// Reader for the fastest-replica hint of contexts, if any.
    pub fastest_replica: Option<FastestReplicaFn>,
    /// How many times a request already sent to a node is sent again to
    /// the next replica when that node's connection breaks or it does not
    /// answer within `attempt_timeout` (failover). 0: such a request fails
    /// with the connection's error. A failed-over put may be applied twice,
    /// which at worst leaves a duplicate sibling, never a lost write.
    pub failover_attempts: u8,
    /// A sent request with no reply after this long counts its target as
    /// down (avoided for `unreachable_for`) and fails over. Keep it above the
    /// cluster's `request_timeout_ms`, or slow quorums fail over needlessly.
    pub attempt_timeout: Duration,
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            timeout: Duration::from_secs(5),
            limits: Limits::default(),
            in_flight_max: IN_FLIGHT_MAX,
            unreachable_for: Duration::from_secs(1),
            // "Write to the fastest reader" (Dynamo §6.4) is on by default.
            fastest_replica: Some(fastest_replica_of_context),
            failover_attempts: 2,
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

/// Bytes to write to one target.
#[derive(Debug)]
pub struct Transmit {
    /// Where to send them.
    pub target: SocketAddr,
    /// One or more whole frames.
    pub bytes: Vec<u8>,
}

/// Whose operation it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Submitted by the user; its completion is reported.
    User,
    /// A routing-table fetch the core started after a WrongOwner without a
    /// table; its completion is consumed by the core.
    TableRefresh,
}

#[derive(Debug)]
struct Operation {
    origin: Origin,
    request: Request,
    /// The replica a context named as the fastest reader.
    preferred: Option<ReplicaId>,
    deadline: Instant,
    /// When `handle_timeout` must look at the operation: its deadline, or
    /// earlier, its current attempt's failover deadline. Keys `deadlines`.
    wake: Instant,
    /// Failovers spent (at most `failover_attempts`).
    failovers: u8,
    /// The WrongOwner retry is spent.
    retried: bool,
    attempt: Attempt,
}

#[derive(Debug)]
enum Attempt {
    /// Encoded into the target's pending transmit buffer (or already
    /// handed out when `sent`).
    OnWire {
        wire_id: u64,
        target: SocketAddr,
        sent: bool,
    },
    /// Waiting for a routing table before being sent again.
    AwaitingTable,
}

/// A target's frames not yet handed to the driver.
#[derive(Debug)]
struct Pending {
    target: SocketAddr,
    bytes: Vec<u8>,
    wire_ids: Vec<u64>,
}

/// The client state machine.
pub struct ClientCore {
    options: CoreOptions,
    /// The node-level address every request goes to before a routing table
    /// is known, and whenever no owner is reachable.
    seed: SocketAddr,
    table: Option<RoutingTable>,
    ticket_next: u64,
    /// Wire ids start at 1: 0 marks a connection-level error reply.
    wire_id_next: u64,
    operations: HashMap<Ticket, Operation>,
    /// Wire id of the current attempt to the ticket it belongs to.
    attempts: HashMap<u64, Ticket>,
    /// Every operation's wake-up instant (`Operation::wake`), earliest first.
    deadlines: BTreeSet<(Instant, Ticket)>,
    /// In submission order per target; at most one entry per target.
    pending: Vec<Pending>,
    completions: VecDeque<(Ticket, Result<Response, ClientError>)>,
    /// Targets to avoid until the instant given.
    unreachable: HashMap<SocketAddr, Instant>,
    /// A TableRefresh operation is in flight.
    table_refresh: Option<Ticket>,
}

impl ClientCore {
    /// A core that bootstraps from the node-level port `seed`.
    pub fn new(seed: SocketAddr, options: CoreOptions) -> ClientCore {
        assert!(options.in_flight_max > 0);
        assert!(!options.timeout.is_zero());
        ClientCore {
            options,
            seed,
            table: None,
            ticket_next: 1,
            wire_id_next: 1,
            operations: HashMap::new(),
            attempts: HashMap::new(),
            deadlines: BTreeSet::new(),
            pending: Vec::new(),
            completions: VecDeque::new(),
            unreachable: HashMap::new(),
            table_refresh: None,
        }
    }

    /// The options the core was built with.
    pub fn options(&self) -> &CoreOptions {
        &self.options
    }

    /// The routing table in use, if one was received.
    pub fn routing_table(&self) -> Option<&RoutingTable> {
        self.table.as_ref()
    }

    /// Installs `table` unless the current one is newer. Routing tables also
    /// arrive by themselves, in replies to `GetRoutingTable` and with
    /// `WrongOwner` errors.
    pub fn set_routing_table(&mut self, table: RoutingTable) {
        let newer = self
            .table
            .as_ref()
            .is_none_or(|current| table.epoch >= current.epoch);
        if newer {
            self.table = Some(table);
        }
    }

    /// Operations submitted and not yet completed (user and internal).
    pub fn in_flight(&self) -> usize {
        self.operations.len()
    }

    /// Queues `request`; its outcome comes out of `poll_completion`.
    pub fn submit(&mut self, now: Instant, request: Request) -> Result<Ticket, ClientError> {
        self.check_request(&request)?;
        if self.operations.len() >= self.options.in_flight_max {
            return Err(ClientError::TooManyInFlight {
                max: self.options.in_flight_max,
            });
        }
        let preferred = match (&request, self.options.fastest_replica) {
            (
                Request::Put {
                    context: Some(context),
                    ..
                },
                Some(reader),
            )
            | (Request::Delete { context, .. }, Some(reader)) => reader(context),
            _ => None,
        };
        let ticket = self.start(now, Origin::User, request, preferred);
        Ok(ticket)
    }

    /// The next buffer of frames to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.pending.is_empty() {
            return None;
        }
        let pending = self.pending.remove(0);
        Some(self.hand_out(pending))
    }

    /// The frames queued for `target`, if any: a driver with one writer per
    /// connection drains its own target.
    pub fn poll_transmit_to(&mut self, target: SocketAddr) -> Option<Transmit> {
        let index = self.pending.iter().position(|p| p.target == target)?;
        let pending = self.pending.remove(index);
        Some(self.hand_out(pending))
    }

    /// Targets with frames waiting to be written.
    pub fn pending_targets(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.pending.iter().map(|pending| pending.target)
    }

    /// The next finished operation.
    pub fn poll_completion(&mut self) -> Option<(Ticket, Result<Response, ClientError>)> {
        self.completions.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Targets that have operations sent and awaiting replies.
    pub fn awaiting_targets(&self) -> Vec<SocketAddr> {
        let mut targets: Vec<SocketAddr> = self
            .operations
            .values()
            .filter_map(|operation| match operation.attempt {
                Attempt::OnWire {
                    target, sent: true, ..
                } => Some(target),
                _ => None,
            })
            .collect();
        targets.sort_unstable();
        targets.dedup();
        targets
    }

    /// Expires every operation whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, ticket)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if self.attempt_expired(now, ticket) {
                continue;
            }
            let target = match self.operations.get(&ticket).map(|op| &op.attempt) {
                Some(Attempt::OnWire { target, .. }) => *target,
                _ => self.seed,
            };
            let error = ClientError::Timeout {
                addr: target,
                after: self.options.timeout,
            };
            self.complete(now, ticket, Err(error));
        }
        // Forget targets whose quarantine is over.
        self.unreachable.retain(|_, until| *until > now);
    }

    /// A connection to `target` failed (`stage` says when). Requests not yet
    /// handed out for it are rerouted; requests already sent fail, since
    /// their outcome is unknown.
    pub fn handle_unreachable(
        &mut self,
        now: Instant,
        target: SocketAddr,
        stage: IoStage,
        kind: io::ErrorKind,
    ) {
        let error = ClientError::Io {
            addr: target,
            stage,
            kind,
        };
        self.handle_connection_error(now, target, &error);
    }

    /// The connection to `target` is unusable for a reason the driver
    /// describes with `error` (e.g. a frame over the size bound): the target
    /// is avoided for a while, what was not yet handed out for it is
    /// rerouted, and what was sent there fails with `error`.
    pub fn handle_connection_error(
        &mut self,
        now: Instant,
        target: SocketAddr,
        error: &ClientError,
    ) {
        self.unreachable
            .insert(target, now + self.options.unreachable_for);
        let unsent = match self.pending.iter().position(|p| p.target == target) {
            Some(index) => self.pending.remove(index).wire_ids,
            None => Vec::new(),
        };
        for wire_id in unsent {
            if let Some(ticket) = self.attempts.remove(&wire_id) {
                // With nowhere else to go, the request fails with what
                // happened to its target, which says more than "no route".
                self.redispatch_or(now, ticket, Some(error));
            }
        }
        let sent: Vec<Ticket> = self
            .operations
            .iter()
            .filter(|(_, op)| {
                matches!(op.attempt, Attempt::OnWire { target: t, sent: true, .. } if t == target)
            })
            .map(|(ticket, _)| *ticket)
            .collect();
        let failover = match error {
            ClientError::Io { .. } => true,
            ClientError::Server { code, .. } => {
                matches!(code, ErrorCode::Overloaded | ErrorCode::Unavailable)
            }
            _ => false,
        };
        for ticket in sent {
            if failover && self.spend_failover(ticket) {
                self.redispatch_or(now, ticket, Some(error));
            } else {
                self.complete(now, ticket, Err(error.clone()));
            }
        }
    }

    /// Takes one failover from `ticket`'s budget; false when it is spent.
    fn spend_failover(&mut self, ticket: Ticket) -> bool {
        let budget = self.options.failover_attempts;
        match self.operations.get_mut(&ticket) {
            Some(operation) if operation.failovers < budget => {
                operation.failovers += 1;
                true
            }
            _ => false,
        }
    }

    /// Called when `ticket`'s wake-up instant has passed. If that was its
    /// attempt's failover deadline rather than its own, the target is
    /// marked down and the request sent elsewhere (or, when it cannot fail
    /// over, left to wait for its own deadline); returns true. Returns false
    /// when the operation's own deadline has come.
    fn attempt_expired(&mut self, now: Instant, ticket: Ticket) -> bool {
        let Some(operation) = self.operations.get(&ticket) else {
            return false;
        };
        if operation.deadline <= now {
            return false;
        }
        let (deadline, wake) = (operation.deadline, operation.wake);
        let sent_to = match operation.attempt {
            Attempt::OnWire {
                target, sent: true, ..
            } => Some(target),
            _ => None,
        };
        self.set_wake(ticket, wake, deadline);
        if let Some(target) = sent_to {
            if self.spend_failover(ticket) {
                self.unreachable
                    .insert(target, now + self.options.unreachable_for);
                let error = ClientError::Timeout {
                    addr: target,
                    after: self.options.attempt_timeout,
                };
                self.redispatch_or(now, ticket, Some(&error));
            }
        }
        true
    }

    /// Moves `ticket`'s entry in `deadlines` from `old` to `new`.
    fn set_wake(&mut self, ticket: Ticket, old: Instant, new: Instant) {
        assert!(self.deadlines.remove(&(old, ticket)));
        assert!(self.deadlines.insert((new, ticket)));
        self.operations
            .get_mut(&ticket)
            .expect("live operation")
            .wake = new;
    }

    /// One frame (length prefix removed) read from `from`. An `Err` means
    /// the stream from `from` cannot be trusted or the node is closing it:
    /// the core has already failed the requests sent there (with that
    /// error) and rerouted the unsent ones; the driver just closes the
    /// connection.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: Bytes,
    ) -> Result<(), ClientError> {
        let (wire_id, response) = match decode_response(frame, &self.options.limits) {
            Ok(decoded) => decoded,
            Err(error) => {
                let protocol_error = ClientError::Protocol {
                    addr: from,
                    message: error.to_string(),
                };
                // A reply whose id could be read fails only its request.
                if let Some(ticket) = error.id.and_then(|id| self.attempt_from(id, from)) {
                    self.complete(now, ticket, Err(protocol_error));
                    return Ok(());
                }
                self.handle_connection_error(now, from, &protocol_error);
                return Err(protocol_error);
            }
        };
        if wire_id == 0 {
            // A connection-level error: the node could not read some frame
            // and closes the connection. Every request sent there fails.
            let (code, message, acks) = match response {
                Response::Error {
                    code,
                    message,
                    acks,
                    ..
                } => (code, message, acks),
                other => (
                    ErrorCode::Internal,
                    format!("unsolicited reply {}", response_name(&other)),
                    0,
                ),
            };
            let error = ClientError::Server {
                code,
                message,
                acks,
            };
            self.handle_connection_error(now, from, &error);
            return Err(error);
        }
        let Some(ticket) = self.attempt_from(wire_id, from) else {
            // A late reply to an attempt that timed out or was retried.
            return Ok(());
        };
        self.attempts.remove(&wire_id);
        match response {
            Response::Error {
                code: ErrorCode::WrongOwner,
                message,
                acks,
                routing,
            } => self.handle_wrong_owner(now, ticket, message, acks, routing),
            Response::RoutingTable(table) => {
                // Every table that passes by is installed (if newer), whether
                // the user or the core asked for it.
                self.set_routing_table(table.clone());
                self.complete(now, ticket, Ok(Response::RoutingTable(table)));
            }
            other => self.complete(now, ticket, Ok(other)),
        }
        Ok(())
    }

    // -----------------------------------------------------------------------

    fn check_request(&self, request: &Request) -> Result<(), ClientError> {
        let limits = &self.options.limits;
        let invalid = |code, message| Err(ClientError::InvalidRequest { code, message });
        if let Some(key) = request.key() {
            if key.is_empty() {
                return invalid(ErrorCode::KeyTooLarge, "key is empty".to_owned());
            }
            if key.len() > limits.key_bytes_max {
                return invalid(
                    ErrorCode::KeyTooLarge,
                    format!(
                        "key of {} bytes exceeds the maximum of {}",
                        key.len(),
                        limits.key_bytes_max
                    ),
                );
            }
        }
        let context = match request {
            Request::Put { value, context, .. } => {
                if value.len() > limits.value_bytes_max {
                    return invalid(
                        ErrorCode::ValueTooLarge,
                        format!(
                            "value of {} bytes exceeds the maximum of {}",
                            value.len(),
                            limits.value_bytes_max
                        ),
                    );
                }
                context.as_ref()
            }
            Request::Delete { context, .. } => Some(context),
            _ => None,
        };
        if let Some(context) = context {
            if context.len() > limits.context_bytes_max {
                return invalid(
                    ErrorCode::BadContext,
                    format!(
                        "context of {} bytes exceeds the maximum of {}",
                        context.len(),
                        limits.context_bytes_max
                    ),
                );
            }
        }
        Ok(())
    }

    /// Creates an operation and sends its first attempt.
    fn start(
        &mut self,
        now: Instant,
        origin: Origin,
        request: Request,
        preferred: Option<ReplicaId>,
    ) -> Ticket {
        let ticket = Ticket(self.ticket_next);
        self.ticket_next += 1;
        let deadline = now + self.options.timeout;
        let operation = Operation {
            origin,
            request,
            preferred,
            deadline,
            wake: deadline,
            failovers: 0,
            retried: false,
            attempt: Attempt::AwaitingTable,
        };
        assert!(self.operations.insert(ticket, operation).is_none());
        assert!(self.deadlines.insert((deadline, ticket)));
        if origin == Origin::TableRefresh {
            assert!(self.table_refresh.is_none());
            self.table_refresh = Some(ticket);
        }
        self.redispatch(now, ticket);
        ticket
    }

    /// Routes the operation again and queues a fresh attempt (new wire id,
    /// so a late reply to an old attempt is recognised and dropped).
    fn redispatch(&mut self, now: Instant, ticket: Ticket) {
        self.redispatch_or(now, ticket, None);
    }

    /// `redispatch`, completing with `fallback` (if given) instead of the
    /// routing error when no target is left.
    fn redispatch_or(&mut self, now: Instant, ticket: Ticket, fallback: Option<&ClientError>) {
        let Some(operation) = self.operations.get(&ticket) else {
            return;
        };
        if let Attempt::OnWire { wire_id, .. } = operation.attempt {
            self.attempts.remove(&wire_id);
        }
        let target = match self.route(now, &operation.request, operation.preferred) {
            Ok(target) => target,
            Err(error) => {
                let error = fallback.cloned().unwrap_or(error);
                self.complete(now, ticket, Err(error));
                return;
            }
        };
        let wire_id = self.wire_id_next;
        self.wire_id_next += 1;
        let epoch = self.table.as_ref().map_or(0, |table| table.epoch);
        let index = match self.pending.iter().position(|p| p.target == target) {
            Some(index) => index,
            None => {
                self.pending.push(Pending {
                    target,
                    bytes: Vec::new(),
                    wire_ids: Vec::new(),
                });
                self.pending.len() - 1
            }
        };
        let pending = &mut self.pending[index];
        // Written straight from the operation's request: no copy of it.
        encode_request_ref(
            wire_id,
            epoch,
            &operation.request.borrowed(),
            &mut pending.bytes,
        );
        pending.wire_ids.push(wire_id);
        self.attempts.insert(wire_id, ticket);
        let operation = self.operations.get_mut(&ticket).expect("checked above");
        operation.attempt = Attempt::OnWire {
            wire_id,
            target,
            sent: false,
        };
        let (old, deadline) = (operation.wake, operation.deadline);
        let wake = deadline.min(now + self.options.attempt_timeout);
        if wake != old {
            self.set_wake(ticket, old, wake);
        }
    }

    fn hand_out(&mut self, pending: Pending) -> Transmit {
        for wire_id in &pending.wire_ids {
            let Some(ticket) = self.attempts.get(wire_id) else {
                continue;
            };
            if let Some(operation) = self.operations.get_mut(ticket) {
                if let Attempt::OnWire { sent, .. } = &mut operation.attempt {
                    *sent = true;
                }
            }
        }
        debug_assert!(!pending.bytes.is_empty());
        Transmit {
            target: pending.target,
            bytes: pending.bytes,
        }
    }

    /// The ticket of the current attempt `wire_id`, if it was sent to
    /// `from`.
    fn attempt_from(&self, wire_id: u64, from: SocketAddr) -> Option<Ticket> {
        let ticket = *self.attempts.get(&wire_id)?;
        match self.operations.get(&ticket)?.attempt {
            Attempt::OnWire {
                wire_id: current,
                target,
                ..
            } if current == wire_id && target == from => Some(ticket),
            _ => None,
        }
    }

    fn handle_wrong_owner(
        &mut self,
        now: Instant,
        ticket: Ticket,
        message: String,
        acks: u32,
        routing: Option<RoutingTable>,
    ) {
        let Some(operation) = self.operations.get_mut(&ticket) else {
            return;
        };
        let give_up = operation.retried || operation.origin == Origin::TableRefresh;
        if give_up {
            let error = ClientError::Server {
                code: ErrorCode::WrongOwner,
                message,
                acks,
            };
            self.complete(now, ticket, Err(error));
            return;
        }
        operation.retried = true;
        match routing {
            Some(table) => {
                self.set_routing_table(table);
                self.redispatch(now, ticket);
            }
            None => {
                // The node did not include its table: fetch it, and send
                // this request again when it arrives (or fails).
                operation.attempt = Attempt::AwaitingTable;
                if self.table_refresh.is_none() {
                    // If the fetch cannot even be routed it completes at
                    // once, which sends this request out again.
                    self.start(now, Origin::TableRefresh, Request::GetRoutingTable, None);
                }
            }
        }
    }

    /// Finishes `ticket` with `result`: user operations are reported,
    /// internal ones release their waiters.
    fn complete(&mut self, now: Instant, ticket: Ticket, result: Result<Response, ClientError>) {
        let Some(operation) = self.operations.remove(&ticket) else {
            return;
        };
        assert!(self.deadlines.remove(&(operation.wake, ticket)));
        if let Attempt::OnWire { wire_id, .. } = operation.attempt {
            self.attempts.remove(&wire_id);
        }
        match operation.origin {
            Origin::User => self.completions.push_back((ticket, result)),
            Origin::TableRefresh => {
                debug_assert_eq!(self.table_refresh, Some(ticket));
                self.table_refresh = None;
                // Whether or not a newer table arrived, the waiting
                // operations go out again; a second WrongOwner ends them.
                let waiting: Vec<Ticket> = self
                    .operations
                    .iter()
                    .filter(|(_, op)| matches!(op.attempt, Attempt::AwaitingTable))
                    .map(|(ticket, _)| *ticket)
                    .collect();
                for waiting_ticket in waiting {
                    self.redispatch(now, waiting_ticket);
                }
            }
        }
    }

    /// The target for `request`: the coordinator of its key's partition, or
    /// the seed for key-less requests and before a table is known.
    fn route(
        &self,
        now: Instant,
        request: &Request,
        preferred: Option<ReplicaId>,
    ) -> Result<SocketAddr, ClientError> {
        let reachable = |target: &SocketAddr| {
            self.unreachable
                .get(target)
                .is_none_or(|until| *until <= now)
        };
        let (Some(key), Some(table)) = (request.key(), self.table.as_ref()) else {
            return self.seed_if_reachable(reachable, 0);
        };
        let partition = partition_of(key_hash(key), table.q);
        let owners = &table.partitions[partition as usize];
        let endpoint = |&(node, shard): &(u32, u16)| {
            let node = &table.nodes[node as usize];
            SocketAddr::new(node.addr, node.shard_ports[usize::from(shard)])
        };
        if let Some(preferred) = preferred {
            let named = owners.iter().find(|(node, shard)| {
                table.nodes[*node as usize].id == preferred.node_id && *shard == preferred.shard
            });
            if let Some(target) = named.map(endpoint).filter(reachable) {
                return Ok(target);
            }
        }
        if let Some(target) = owners.iter().map(endpoint).find(reachable) {
            return Ok(target);
        }
        // No owner answers: any node's node-level port forwards the request.
        if let Some(target) = owners
            .iter()
            .map(|&(node, _)| {
                let node = &table.nodes[node as usize];
                SocketAddr::new(node.addr, node.client_port)
            })
            .find(reachable)
        {
            return Ok(target);
        }
        self.seed_if_reachable(reachable, partition)
    }

    fn seed_if_reachable(
        &self,
        reachable: impl Fn(&SocketAddr) -> bool,
        partition: u32,
    ) -> Result<SocketAddr, ClientError> {
        if reachable(&self.seed) {
            Ok(self.seed)
        } else {
            Err(ClientError::NoReachableReplica { partition })
        }
    }
}

/// Placement is the ring layer's: the client must hash exactly as nodes do.
pub use crate::ring::{key_hash, partition_of};

/// The name of a reply's kind, for error messages.
pub fn response_name(response: &Response) -> String {
    match response {
        Response::Pong => "pong".to_owned(),
        Response::Get { .. } => "get".to_owned(),
        Response::Put { .. } => "put".to_owned(),
        Response::Delete => "delete".to_owned(),
        Response::RoutingTable(_) => "routing table".to_owned(),
        Response::Error { code, message, .. } => format!("error {code}: {message}"),
    }
}
