//! The cluster secret: a mutual challenge-response handshake on internode
//! and admin connections, so that a host without the secret can neither
//! join, gossip, send replica messages, forward client requests, nor run
//! admin commands, and cannot pose as a node to receive them.
//!
//! When `cluster_secret_file` is set, every internode connection begins,
//! before any frame, with (HMAC-SHA256 keyed with the secret; `||` is
//! concatenation):
//!
//! ```text
//! acceptor  → connector : "DKVAUTH1" || nonce_a            (8 + 32 bytes)
//! connector → acceptor  : nonce_c || HMAC("dynakv connector" || nonce_a || nonce_c)
//! acceptor  → connector : HMAC("dynakv acceptor" || nonce_c || nonce_a)
//! ```
//!
//! Each side proves it holds the secret over a fresh nonce chosen by the
//! other (no replay), the secret never crosses the wire, and tags are
//! compared in constant time. An acceptor that sees a bad tag, or nothing
//! within [`HANDSHAKE_TIMEOUT`], closes the connection without reading a
//! frame. Without a secret no handshake takes place (trusted network).
//! The traffic itself is not encrypted: the secret authenticates peers; it
//! does not hide data (docs/deployment.md).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Sent first by the acceptor; names the handshake's version.
const MAGIC: &[u8; 8] = b"DKVAUTH1";
const NONCE_BYTES: usize = 32;
const TAG_BYTES: usize = 32;
/// Shortest secret accepted: 128 bits, written as at least 16 bytes.
pub(crate) const SECRET_BYTES_MIN: usize = 16;
/// Longest secret file read.
const SECRET_BYTES_MAX: usize = 4096;
/// A peer that has not completed the handshake by then is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared cluster secret.
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

impl ClusterSecret {
    /// Reads the secret from `path`; a trailing newline is not part of it.
    pub fn load(path: &Path) -> Result<ClusterSecret, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read cluster secret file {}: {e}", path.display()))?;
        let mut secret = bytes;
        while matches!(secret.last(), Some(b'\n' | b'\r')) {
            secret.pop();
        }
        if secret.len() < SECRET_BYTES_MIN || secret.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "cluster secret in {} must be {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes, not {} (try: head -c 32 /dev/urandom | base64 > FILE)",
                path.display(),
                secret.len()
            ));
        }
        Ok(ClusterSecret(secret))
    }

    fn mac(&self, label: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac
    }

    fn tag(&self, label: &[u8], first: &[u8], second: &[u8]) -> [u8; TAG_BYTES] {
        self.mac(label, first, second)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Constant-time check of `tag`.
    fn verify(&self, label: &[u8], first: &[u8], second: &[u8], tag: &[u8]) -> bool {
        self.mac(label, first, second).verify_slice(tag).is_ok()
    }
}

const CONNECTOR: &[u8] = b"dynakv connector";
const ACCEPTOR: &[u8] = b"dynakv acceptor";

/// Fresh random bytes from the kernel.
fn nonce() -> std::io::Result<[u8; NONCE_BYTES]> {
    let mut bytes = [0u8; NONCE_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn refused(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_string())
}

/// The acceptor's side, on a fresh inbound connection.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
) -> std::io::Result<()> {
    let mine = nonce()?;
    let mut hello = Vec::with_capacity(MAGIC.len() + NONCE_BYTES);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&mine);
    stream.write_all(&hello).await?;
    let mut answer = [0u8; NONCE_BYTES + TAG_BYTES];
    stream.read_exact(&mut answer).await?;
    let (theirs, tag) = answer.split_at(NONCE_BYTES);
    if !secret.verify(CONNECTOR, &mine, theirs, tag) {
        return Err(refused("peer does not hold the cluster secret"));
    }
    stream
        .write_all(&secret.tag(ACCEPTOR, theirs, &mine))
        .await?;
    Ok(())
}

/// The connector's side, on a fresh outbound connection.
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
) -> std::io::Result<()> {
    let mut hello = [0u8; MAGIC.len() + NONCE_BYTES];
    stream.read_exact(&mut hello).await?;
    let (reply, mine) = connector_reply(&hello, secret)?;
    stream.write_all(&reply).await?;
    let mut tag = [0u8; TAG_BYTES];
    stream.read_exact(&mut tag).await?;
    check_acceptor(&hello, &mine, &tag, secret)
}

/// The connector's side over a blocking socket (the admin CLI).
pub fn connect_blocking(
    stream: &mut std::net::TcpStream,
    secret: &ClusterSecret,
) -> std::io::Result<()> {
    let mut hello = [0u8; MAGIC.len() + NONCE_BYTES];
    stream.read_exact(&mut hello)?;
    let (reply, mine) = connector_reply(&hello, secret)?;
    stream.write_all(&reply)?;
    let mut tag = [0u8; TAG_BYTES];
    stream.read_exact(&mut tag)?;
    check_acceptor(&hello, &mine, &tag, secret)
}

fn connector_reply(
    hello: &[u8; MAGIC.len() + NONCE_BYTES],
    secret: &ClusterSecret,
) -> std::io::Result<(Vec<u8>, [u8; NONCE_BYTES])> {
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(refused("peer did not start the cluster-secret handshake"));
    }
    let theirs = &hello[MAGIC.len()..];
    let mine = nonce()?;
    let mut reply = Vec::with_capacity(NONCE_BYTES + TAG_BYTES);
    reply.extend_from_slice(&mine);
    reply.extend_from_slice(&secret.tag(CONNECTOR, theirs, &mine));
    Ok((reply, mine))
}

fn check_acceptor(
    hello: &[u8],
    mine: &[u8; NONCE_BYTES],
    tag: &[u8; TAG_BYTES],
    secret: &ClusterSecret,
) -> std::io::Result<()> {
    if secret.verify(ACCEPTOR, mine, &hello[MAGIC.len()..], tag) {
        Ok(())
    } else {
        Err(refused("peer does not hold the cluster secret"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret(text.as_bytes().to_vec())
    }

    #[test]
    fn tags_bind_the_secret_the_role_and_both_nonces() {
        let s = secret("0123456789abcdef");
        let t = s.tag(CONNECTOR, b"a", b"b");
        assert!(s.verify(CONNECTOR, b"a", b"b", &t));
        assert!(!s.verify(ACCEPTOR, b"a", b"b", &t), "roles differ");
        assert!(!s.verify(CONNECTOR, b"b", b"a", &t), "nonce order matters");
        assert!(!secret("0123456789abcdeX").verify(CONNECTOR, b"a", b"b", &t));
        assert!(!s.verify(CONNECTOR, b"a", b"b", &t[..31]));
    }

    #[test]
    fn the_handshake_succeeds_only_with_the_same_secret() {
        use futures_lite::future::block_on;
        // Two in-memory pipes stand in for a socket; the two sides run in
        // one thread, alternately, which the fixed message order permits.
        let a = secret("the shared secret!");
        let (mut acceptor_end, mut connector_end) = duplex();
        let (accepted, connected) = block_on(futures_lite::future::zip(
            accept(&mut acceptor_end, &a),
            connect(&mut connector_end, &secret("the shared secret!")),
        ));
        assert!(accepted.is_ok() && connected.is_ok());
        // A wrong secret: the acceptor refuses (the connector would wait
        // for a tag that never comes; the race ends with the acceptor).
        let (mut acceptor_end, mut connector_end) = duplex();
        let accepted = block_on(futures_lite::future::or(
            accept(&mut acceptor_end, &a),
            async {
                let _ = connect(&mut connector_end, &secret("a wrong secret....")).await;
                std::future::pending().await
            },
        ));
        assert_eq!(
            accepted.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn short_or_missing_secret_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "short\n").unwrap();
        assert!(ClusterSecret::load(&path)
            .unwrap_err()
            .contains("16 to 4096"));
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        assert_eq!(ClusterSecret::load(&path).unwrap().0, b"0123456789abcdef");
        assert!(ClusterSecret::load(&dir.path().join("none")).is_err());
    }

    /// An in-memory bidirectional byte pipe.
    fn duplex() -> (End, End) {
        let a = std::rc::Rc::new(std::cell::RefCell::new(std::collections::VecDeque::new()));
        let b = std::rc::Rc::new(std::cell::RefCell::new(std::collections::VecDeque::new()));
        (
            End {
                incoming: a.clone(),
                outgoing: b.clone(),
            },
            End {
                incoming: b,
                outgoing: a,
            },
        )
    }

    type Queue = std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<u8>>>;

    struct End {
        incoming: Queue,
        outgoing: Queue,
    }

    impl AsyncRead for End {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut queue = self.incoming.borrow_mut();
            if queue.is_empty() {
                // The other side runs in the same `zip`; ask to be polled again.
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            let n = buf.len().min(queue.len());
            for (slot, byte) in buf.iter_mut().zip(queue.drain(..n)) {
                *slot = byte;
            }
            std::task::Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for End {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.outgoing.borrow_mut().extend(buf.iter().copied());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
}
