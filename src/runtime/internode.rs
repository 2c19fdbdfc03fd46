//! Internode transport: framed, shard-to-shard links between nodes.
//!
//! Every shard listens on its own internode port (`internode_listen` port +
//! shard index) and keeps one outgoing connection per peer shard it talks to.
//! A frame is a `u32` little-endian length, then an envelope (kind, sending
//! node, sending shard, receiving shard) and the payload: a replica message,
//! a membership message with the sender's address book, or an admin request
//! or response, or a client request forwarded from another node's node
//! port and its reply. Lengths are checked against [`INTERNODE_FRAME_BYTES_MAX`]
//! before any allocation and a bad frame closes the connection; nothing an
//! inbound peer sends can panic the shard.
//!
//! Outgoing connections leave from the node's own IP (a `socket2` socket bound
//! to it, connected with a timeout on the executor's blocking pool, then
//! handed to glommio), so nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 look
//! like separate hosts. Messages queued on a link are written in one send per
//! batch (design guide §11); a link that cannot connect or write drops what
//! it holds (the replica layer times out and retries elsewhere), reports the
//! peer address to the failure detector, and backs off before reconnecting.
//!
//! Invariants: a link's outbox never exceeds [`LINK_OUTBOX_BYTES_MAX`] (past
//! it new messages are dropped, as a lossy network would); links are only
//! used on the shard that created them (`Rc`, no sharing between shards).

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::auth::{self, ClusterSecret};
use super::log;
use crate::protocol::FrameDecoder;

/// A replica-layer message (`ReplicaMessage` encoding).
pub(crate) const KIND_REPLICA: u8 = 1;
/// A membership message followed by the sender's address book.
pub(crate) const KIND_MEMBERSHIP: u8 = 2;
/// An admin request; answered on the same connection.
pub(crate) const KIND_ADMIN_REQUEST: u8 = 3;
/// The answer to an admin request.
pub(crate) const KIND_ADMIN_RESPONSE: u8 = 4;
/// A client request frame that arrived on another node's node-level port
/// for a partition this node holds: `u64` token, then the frame.
pub(crate) const KIND_CLIENT_FORWARD: u8 = 5;
/// The encoded reply to a forwarded client request: `u64` token, then the
/// reply frame (length prefix included).
pub(crate) const KIND_CLIENT_REPLY: u8 = 6;
/// An anti-entropy message (`antientropy::AaeMessage` encoding).
pub(crate) const KIND_AAE: u8 = 7;

/// Bytes of the envelope after the length prefix.
pub(crate) const ENVELOPE_BYTES: usize = 1 + 8 + 2 + 2;

/// The largest internode frame: a replica message may carry a whole sibling
/// set (`replica::SIBLING_SET_BYTES_MAX`) plus its key and header.
pub(crate) const INTERNODE_FRAME_BYTES_MAX: usize =
    crate::replica::SIBLING_SET_BYTES_MAX + crate::replica::KEY_BYTES_MAX + 4096;

/// The most bytes queued on one outgoing link.
const LINK_OUTBOX_BYTES_MAX: usize = 64 << 20;

/// The most outgoing links one shard keeps (one per peer shard it talks to).
const LINKS_MAX: usize = 4096;

/// How long a connect may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Backoff between reconnection attempts: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_LAST: Duration = Duration::from_millis(1000);

/// Size of each read from a socket.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Who sent a frame and which shard it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub kind: u8,
    pub from_node: u64,
    pub from_shard: u16,
    pub to_shard: u16,
}

/// Appends one frame: length, envelope, then whatever `payload` writes.
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    envelope: Envelope,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.push(envelope.kind);
    out.extend_from_slice(&envelope.from_node.to_le_bytes());
    out.extend_from_slice(&envelope.from_shard.to_le_bytes());
    out.extend_from_slice(&envelope.to_shard.to_le_bytes());
    payload(out);
    let length = out.len() - start - 4;
    assert!(
        length <= INTERNODE_FRAME_BYTES_MAX,
        "internode frame too large"
    );
    out[start..start + 4].copy_from_slice(&(length as u32).to_le_bytes());
}

/// Splits a frame (without its length prefix) into envelope and payload.
pub(crate) fn decode_envelope(frame: &Bytes) -> Option<(Envelope, Bytes)> {
    if frame.len() < ENVELOPE_BYTES {
        return None;
    }
    let envelope = Envelope {
        kind: frame[0],
        from_node: u64::from_le_bytes(frame[1..9].try_into().ok()?),
        from_shard: u16::from_le_bytes(frame[9..11].try_into().ok()?),
        to_shard: u16::from_le_bytes(frame[11..13].try_into().ok()?),
    };
    Some((envelope, frame.slice(ENVELOPE_BYTES..)))
}

/// Opens a TCP connection to `to` leaving from `source` (port chosen by the
/// kernel), with a timeout, on the blocking pool so the shard never stalls.
pub(crate) async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let std_stream = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<std::net::TcpStream> {
            let domain = socket2::Domain::for_address(to);
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            if source.is_ipv4() == to.is_ipv4() {
                socket.bind(&SocketAddr::new(source, 0).into())?;
            }
            socket.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
            socket.set_nodelay(true)?;
            Ok(socket.into())
        })
        .await?;
    // SAFETY: the descriptor comes from a connected socket we own and give up.
    Ok(unsafe { TcpStream::from_raw_fd(std_stream.into_raw_fd()) })
}

/// `connect_from`, then the cluster-secret handshake when one is configured.
pub(crate) async fn connect_authenticated(
    source: IpAddr,
    to: SocketAddr,
    secret: Option<&ClusterSecret>,
) -> std::io::Result<TcpStream> {
    let mut stream = connect_from(source, to).await?;
    if let Some(secret) = secret {
        with_timeout(auth::connect(&mut stream, secret)).await?;
    }
    Ok(stream)
}

/// Bounds a handshake by `auth::HANDSHAKE_TIMEOUT`.
async fn with_timeout(
    handshake: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    futures_lite::future::or(handshake, async {
        glommio::timer::sleep(auth::HANDSHAKE_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "cluster-secret handshake timed out",
        ))
    })
    .await
}

/// One outgoing connection to a peer shard, with its queue of frames.
struct Link {
    addr: SocketAddr,
    outbox: RefCell<Vec<u8>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl Link {
    async fn take(&self, batch: &mut Vec<u8>) -> bool {
        std::future::poll_fn(|cx| {
            let mut bytes = self.outbox.borrow_mut();
            if self.closed.get() {
                return Poll::Ready(false);
            }
            if !bytes.is_empty() {
                batch.clear();
                std::mem::swap(&mut *bytes, batch);
                return Poll::Ready(true);
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Called with a peer address whose link failed (connect or write).
pub(crate) type FailureFn = Rc<dyn Fn(SocketAddr)>;

/// A shard's outgoing links, by peer shard address.
pub(crate) struct Links {
    source: IpAddr,
    /// When set, every outgoing connection proves it holds the secret.
    secret: Option<Arc<ClusterSecret>>,
    links: RefCell<AHashMap<SocketAddr, Rc<Link>>>,
    on_failure: FailureFn,
    /// Frames dropped because a link was full or the table was (diagnostics).
    pub dropped: Cell<u64>,
}

impl Links {
    pub(crate) fn new(
        source: IpAddr,
        secret: Option<Arc<ClusterSecret>>,
        on_failure: FailureFn,
    ) -> Rc<Links> {
        Rc::new(Links {
            source,
            secret,
            links: RefCell::new(AHashMap::new()),
            on_failure,
            dropped: Cell::new(0),
        })
    }

    /// Queues one frame to `addr`; the link's writer sends it with whatever
    /// else is queued by then.
    pub(crate) fn send(
        self: &Rc<Self>,
        addr: SocketAddr,
        envelope: Envelope,
        payload: impl FnOnce(&mut Vec<u8>),
    ) {
        let link = match self.link(addr) {
            Some(link) => link,
            None => {
                self.dropped.set(self.dropped.get() + 1);
                return;
            }
        };
        {
            let mut outbox = link.outbox.borrow_mut();
            if outbox.len() >= LINK_OUTBOX_BYTES_MAX {
                self.dropped.set(self.dropped.get() + 1);
                return;
            }
            encode_frame(&mut outbox, envelope, payload);
        }
        link.wake();
    }

    fn link(self: &Rc<Self>, addr: SocketAddr) -> Option<Rc<Link>> {
        if let Some(link) = self.links.borrow().get(&addr) {
            return Some(link.clone());
        }
        if self.links.borrow().len() >= LINKS_MAX {
            return None;
        }
        let link = Rc::new(Link {
            addr,
            outbox: RefCell::new(Vec::new()),
            waker: RefCell::new(None),
            closed: Cell::new(false),
        });
        self.links.borrow_mut().insert(addr, link.clone());
        let (links, writer_link) = (self.clone(), link.clone());
        glommio::spawn_local(async move { links.write_loop(writer_link).await }).detach();
        Some(link)
    }

    /// Closes every link (shutdown).
    pub(crate) fn close_all(&self) {
        for link in self.links.borrow().values() {
            link.closed.set(true);
            link.wake();
        }
    }

    async fn write_loop(self: Rc<Self>, link: Rc<Link>) {
        let mut stream: Option<TcpStream> = None;
        let mut backoff = BACKOFF_FIRST;
        let mut batch = Vec::with_capacity(READ_CHUNK_BYTES);
        while link.take(&mut batch).await {
            if stream.is_none() {
                match connect_authenticated(self.source, link.addr, self.secret.as_deref()).await {
                    Ok(s) => {
                        backoff = BACKOFF_FIRST;
                        stream = Some(s);
                    }
                    Err(_) => {
                        // The batch is dropped: its requests time out in the
                        // replica layer, which retries on a fallback.
                        (self.on_failure)(link.addr);
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_LAST);
                        continue;
                    }
                }
            }
            let Some(s) = stream.as_mut() else { continue };
            if s.write_all(&batch).await.is_err() {
                stream = None;
                (self.on_failure)(link.addr);
            }
        }
        if let Some(mut s) = stream {
            let _ = s.close().await;
        }
    }
}

/// What an inbound frame turns into: possibly an answer on the same
/// connection (admin requests).
pub(crate) trait InboundHandler: 'static {
    fn handle(self: &Rc<Self>, envelope: Envelope, payload: Bytes) -> Option<Vec<u8>>;
}

/// Accepts internode connections and hands every frame to `handler`.
pub(crate) async fn accept_loop<H: InboundHandler>(
    handler: Rc<H>,
    listener: TcpListener,
    secret: Option<Arc<ClusterSecret>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                log::warning!(error = %e, "internode accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (handler, secret) = (handler.clone(), secret.clone());
        glommio::spawn_local(async move {
            let mut stream = stream;
            if let Some(secret) = secret {
                // Nothing the peer sends is read as a frame before it has
                // proved it holds the secret.
                if let Err(e) = with_timeout(auth::accept(&mut stream, &secret)).await {
                    let peer = stream
                        .peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    log::warning!(%peer, error = %e, "internode connection refused");
                    let _ = stream.close().await;
                    return;
                }
            }
            serve(handler, stream).await
        })
        .detach();
    }
}

async fn serve<H: InboundHandler>(handler: Rc<H>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut decoder = FrameDecoder::new(INTERNODE_FRAME_BYTES_MAX);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut answers = Vec::new();
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    let Some((envelope, payload)) = decode_envelope(&frame) else {
                        return;
                    };
                    if let Some(answer) = handler.handle(envelope, payload) {
                        answers.extend_from_slice(&answer);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if !answers.is_empty() && stream.write_all(&answers).await.is_err() {
            break;
        }
    }
}
