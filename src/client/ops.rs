//! The typed operations both client front ends offer (ping, get, put,
//! delete, routing table): the request each one sends, built from borrowed
//! arguments, and how its reply is read. The blocking client
//! (`blocking.rs`) and the glommio client (`glommio.rs`) differ only in how
//! they wait for the reply, so what an operation means is written once here.
//!
//! Pure: no sockets, no clock; `ClientCore` does routing and retries.

use bytes::Bytes;

use super::core::response_name;
use super::error::ClientError;
use crate::protocol::{Quorum, Request, Response, RoutingTable};

/// The outcome of a get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    /// False when no replica that answered holds a live version.
    pub found: bool,
    /// The live siblings' values (more than one: concurrent writes to
    /// reconcile, then put with `context`).
    pub values: Vec<Bytes>,
    /// How many siblings are deletes concurrent with the values.
    pub tombstones: usize,
    /// Pass back to `put` / `delete` to supersede what this get saw.
    pub context: Bytes,
}

impl GetResult {
    /// Splits a get reply into live values and tombstones.
    pub fn from_response(response: Response) -> Result<GetResult, ClientError> {
        match response {
            Response::Get {
                found,
                siblings,
                context,
            } => {
                let tombstones = siblings.iter().filter(|s| s.tombstone).count();
                let values = siblings
                    .into_iter()
                    .filter(|s| !s.tombstone)
                    .map(|s| s.value)
                    .collect();
                Ok(GetResult {
                    found,
                    values,
                    tombstones,
                    context,
                })
            }
            other => Err(unexpected("get", other)),
        }
    }
}

/// Turns an error reply into `ClientError::Server`, anything else into
/// `UnexpectedReply`.
pub(super) fn unexpected(expected: &'static str, response: Response) -> ClientError {
    match response {
        Response::Error {
            code,
            message,
            acks,
            ..
        } => ClientError::Server {
            code,
            message,
            acks,
        },
        other => ClientError::UnexpectedReply {
            expected,
            got: response_name(&other),
        },
    }
}

/// A liveness round trip's reply.
pub(super) fn ping_reply(response: Response) -> Result<(), ClientError> {
    match response {
        Response::Pong => Ok(()),
        other => Err(unexpected("pong", other)),
    }
}

/// A read of `key`; only `quorum.r` and `quorum.n` matter. Its reply is
/// read by `GetResult::from_response`.
pub(super) fn get_request(key: &[u8], quorum: Quorum) -> Request {
    Request::Get {
        key: Bytes::copy_from_slice(key),
        quorum,
    }
}

/// A write of `value` under `key` superseding what `context` saw (none: a
/// new sibling).
pub(super) fn put_request(
    key: &[u8],
    value: &[u8],
    context: Option<&[u8]>,
    quorum: Quorum,
) -> Request {
    Request::Put {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        context: context.map(Bytes::copy_from_slice),
        quorum,
    }
}

/// A put's reply: the new version's context.
pub(super) fn put_reply(response: Response) -> Result<Bytes, ClientError> {
    match response {
        Response::Put { context } => Ok(context),
        other => Err(unexpected("put", other)),
    }
}

/// A delete (tombstone) of `key` superseding what `context` saw.
pub(super) fn delete_request(key: &[u8], context: &[u8], quorum: Quorum) -> Request {
    Request::Delete {
        key: Bytes::copy_from_slice(key),
        context: Bytes::copy_from_slice(context),
        quorum,
    }
}

/// A delete's reply.
pub(super) fn delete_reply(response: Response) -> Result<(), ClientError> {
    match response {
        Response::Delete => Ok(()),
        other => Err(unexpected("delete", other)),
    }
}

/// A routing-table fetch's reply.
pub(super) fn routing_table_reply(response: Response) -> Result<RoutingTable, ClientError> {
    match response {
        Response::RoutingTable(table) => Ok(table),
        other => Err(unexpected("routing table", other)),
    }
}
