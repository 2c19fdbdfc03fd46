//! The client's one error type, shared by the sans-IO core and both front
//! ends.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::ErrorCode;

/// What a connection was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoStage {
    /// Opening the connection: nothing was sent.
    Connect,
    /// Writing requests: some may have been sent.
    Write,
    /// Waiting for replies: requests were sent, their outcome is unknown.
    Read,
}

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A connection to a node failed.
    Io {
        /// The node's address and port.
        addr: SocketAddr,
        /// When it failed.
        stage: IoStage,
        /// What the operating system said.
        kind: io::ErrorKind,
    },
    /// No reply within the client's timeout. The request may or may not have
    /// taken effect.
    Timeout {
        /// Where the request was sent.
        addr: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The node answered with an error.
    Server {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
        /// For `Timeout` / `QuorumFailed`: replicas that acknowledged.
        acks: u32,
    },
    /// The node sent bytes that are not a valid reply; the connection is
    /// closed.
    Protocol {
        /// The node's address and port.
        addr: SocketAddr,
        /// What was wrong with them.
        message: String,
    },
    /// The node answered with a reply of the wrong kind (e.g. a put reply to
    /// a get).
    UnexpectedReply {
        /// What the request expected.
        expected: &'static str,
        /// What came back.
        got: String,
    },
    /// The request was refused by the client before sending (e.g. a key
    /// over the size bound); `code` is what a node would have answered.
    InvalidRequest {
        /// The code a node would answer with.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// Every replica of the key's partition, and the seed node, is marked
    /// unreachable.
    NoReachableReplica {
        /// The key's partition.
        partition: u32,
    },
    /// The client has `max` requests in flight already.
    TooManyInFlight {
        /// The bound.
        max: usize,
    },
}

impl ClientError {
    /// True for failures a caller may retry without changing the request
    /// (the outcome of a put may still be unknown: retrying it can create a
    /// duplicate sibling).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoReachableReplica { .. }
            | ClientError::TooManyInFlight { .. } => true,
            ClientError::Server { code, .. } => matches!(
                code,
                ErrorCode::Timeout
                    | ErrorCode::QuorumFailed
                    | ErrorCode::Overloaded
                    | ErrorCode::Unavailable
                    | ErrorCode::WrongOwner
            ),
            ClientError::Protocol { .. }
            | ClientError::UnexpectedReply { .. }
            | ClientError::InvalidRequest { .. } => false,
        }
    }
}

/// `io::ErrorKind`'s own text ("connection refused"), without the OS error
/// number, which differs between systems.
fn kind_text(kind: io::ErrorKind) -> String {
    io::Error::from(kind).to_string()
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io {
                addr,
                stage: IoStage::Connect,
                kind,
            } => write!(f, "node {addr} unreachable: {}", kind_text(*kind)),
            ClientError::Io {
                addr,
                stage: IoStage::Write,
                kind,
            } => write!(
                f,
                "connection to node {addr} failed while sending: {}",
                kind_text(*kind)
            ),
            ClientError::Io {
                addr,
                stage: IoStage::Read,
                kind,
            } => write!(
                f,
                "connection to node {addr} failed while waiting for the reply \
                 (the request may have taken effect): {}",
                kind_text(*kind)
            ),
            ClientError::Timeout { addr, after } => write!(
                f,
                "no reply from node {addr} within {} ms (the request may have taken effect)",
                after.as_millis()
            ),
            ClientError::Server {
                code,
                message,
                acks,
            } => {
                write!(f, "server error {code}: {message}")?;
                if matches!(code, ErrorCode::Timeout | ErrorCode::QuorumFailed) {
                    write!(f, " ({acks} replicas acknowledged)")?;
                }
                Ok(())
            }
            ClientError::Protocol { addr, message } => {
                write!(f, "node {addr} sent an invalid reply: {message}")
            }
            ClientError::UnexpectedReply { expected, got } => {
                write!(f, "expected a {expected} reply, got {got}")
            }
            ClientError::InvalidRequest { code, message } => {
                write!(f, "request refused before sending ({code}): {message}")
            }
            ClientError::NoReachableReplica { partition } => write!(
                f,
                "no replica of partition {partition} is reachable, nor is the seed node"
            ),
            ClientError::TooManyInFlight { max } => {
                write!(f, "{max} requests already in flight")
            }
        }
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_node_and_the_cause() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let error = ClientError::Io {
            addr,
            stage: IoStage::Connect,
            kind: io::ErrorKind::ConnectionRefused,
        };
        assert_eq!(
            error.to_string(),
            "node 127.0.0.1:7000 unreachable: connection refused"
        );
        let error = ClientError::Server {
            code: ErrorCode::QuorumFailed,
            message: "w=3 not met".into(),
            acks: 2,
        };
        assert_eq!(
            error.to_string(),
            "server error QuorumFailed: w=3 not met (2 replicas acknowledged)"
        );
        assert!(error.is_transient());
    }
}
