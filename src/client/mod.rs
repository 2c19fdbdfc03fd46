//! The cluster-aware client: routing, retries and context handling over the
//! client protocol.
//!
//! Job: give applications `get` / `put` / `delete` against a dynakv cluster,
//! sending each request straight to the coordinator shard of its key
//! (Dynamo §6.4, client-driven coordination) and keeping many requests in
//! flight per connection.
//!
//! Layers:
//! * `core` — the sans-IO state machine (ids, encoding, routing, reply
//!   matching, the WrongOwner retry, timeouts as data). No I/O, no clock.
//! * `ops` — the typed operations (ping, get, put, delete, routing table):
//!   each request built from borrowed arguments and its reply read, shared
//!   by both front ends.
//! * `blocking` — a thin `std::net` front end.
//! * `glommio` — a thin async front end for glommio executors.
//!
//! Invariant: the front ends only move bytes and time in and out of the
//! core; every decision is the core's, so it is tested without sockets.
//!
//! The driver loop of the sans-IO core, with a node played by hand:
//!
//! ```
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use dynakv::client::{ClientCore, CoreOptions};
//! use dynakv::protocol::{
//!     decode_request, encode_response, FrameDecoder, Limits, Request, Response,
//! };
//!
//! let seed = "127.0.0.1:7000".parse().unwrap();
//! let mut core = ClientCore::new(seed, CoreOptions::default());
//! let now = Instant::now();
//! let ticket = core.submit(now, Request::Ping).unwrap();
//!
//! // The driver writes what the core hands out (one buffer per target)...
//! let transmit = core.poll_transmit().unwrap();
//! assert_eq!(transmit.target, seed);
//!
//! // ...the node reads the request and answers it...
//! let mut wire = BytesMut::from(&transmit.bytes[..]);
//! let frame = FrameDecoder::new(1 << 20).decode(&mut wire).unwrap().unwrap();
//! let request = decode_request(frame, &Limits::default()).unwrap();
//! let mut reply = Vec::new();
//! encode_response(request.id, &Response::Pong, &mut reply);
//!
//! // ...and the driver feeds every frame it reads back to the core.
//! let mut wire = BytesMut::from(&reply[..]);
//! let frame = FrameDecoder::new(1 << 20).decode(&mut wire).unwrap().unwrap();
//! core.handle_frame(Instant::now(), seed, frame).unwrap();
//! assert_eq!(core.poll_completion(), Some((ticket, Ok(Response::Pong))));
//! // Arm a timer for `core.poll_timeout()` and call `handle_timeout` when it
//! // fires; a failed connection goes to `handle_unreachable`.
//! ```

pub mod blocking;
mod core;
mod error;
pub mod glommio;
mod ops;

pub use self::blocking::{Client, ClientOptions, GetResult};
pub use self::core::{
    fastest_replica_of_context, key_hash, partition_of, ClientCore, CoreOptions, FastestReplicaFn,
    ReplicaId, Ticket, Transmit, IN_FLIGHT_MAX,
};
pub use self::error::{ClientError, IoStage};
