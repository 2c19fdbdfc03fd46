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
//! Inbound connections are bounded whether or not a cluster secret is
//! configured ([`InboundLimits`]): at most `internode_connections_max` per
//! shard and `internode_connections_per_address_max` from one source IP
//! (more are closed at once, with a rate-limited warning), and a connection
//! that completes no frame within `internode_idle_timeout_ms` (silent, or a
//! slow sender trickling bytes) is closed. Outgoing links close themselves
//! after half that time without traffic and reconnect on the next frame, so
//! the cut-off never drops a healthy peer's frames.
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
use super::limits::AddressLimiter;
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
    /// A link with nothing to send for this long closes its connection
    /// (before the peer's idle cut-off does) and reconnects on demand.
    idle_close: Cell<Option<Duration>>,
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
            idle_close: Cell::new(None),
        })
    }

    /// Makes links close connections idle for `idle` (half the peers'
    /// `internode_idle_timeout_ms`); `None` keeps them open.
    pub(crate) fn set_idle_close(&self, idle: Option<Duration>) {
        self.idle_close.set(idle);
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
        loop {
            let taken = match (stream.is_some(), self.idle_close.get()) {
                (true, Some(idle)) => {
                    let timer = async {
                        glommio::timer::sleep(idle).await;
                        None
                    };
                    futures_lite::future::or(async { Some(link.take(&mut batch).await) }, timer)
                        .await
                }
                _ => Some(link.take(&mut batch).await),
            };
            match taken {
                Some(true) => {}
                Some(false) => break,
                None => {
                    // Idle: close before the peer's cut-off can drop a
                    // frame written to a connection it is closing.
                    if let Some(mut s) = stream.take() {
                        let _ = s.close().await;
                    }
                    continue;
                }
            }
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

/// Bounds on inbound internode (and admin) connections of one shard.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InboundLimits {
    /// Connections open at once (`internode_connections_max`).
    pub connections_max: usize,
    /// Connections open at once from one source IP
    /// (`internode_connections_per_address_max`).
    pub per_address_max: usize,
    /// No complete frame for this long closes the connection
    /// (`internode_idle_timeout_ms`); `None` disables it.
    pub idle: Option<Duration>,
}

impl InboundLimits {
    pub(crate) fn of(config: &crate::config::ServerConfig) -> InboundLimits {
        InboundLimits {
            connections_max: config.internode_connections_max,
            per_address_max: config.internode_connections_per_address_max,
            idle: (config.internode_idle_timeout_ms > 0)
                .then(|| Duration::from_millis(config.internode_idle_timeout_ms)),
        }
    }
}

/// Refused connections are logged at most this often (with a count), so a
/// flood cannot fill the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts internode connections and hands every frame to `handler`.
pub(crate) async fn accept_loop<H: InboundHandler>(
    handler: Rc<H>,
    listener: TcpListener,
    secret: Option<Arc<ClusterSecret>>,
    limits: InboundLimits,
) {
    let open = Rc::new(Cell::new(0usize));
    let per_address = Rc::new(AddressLimiter::default());
    let mut refused = 0u64;
    let mut last_refusal_log: Option<std::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                log::warning!(error = %e, "internode accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let admission = if open.get() >= limits.connections_max {
            Err(format!(
                "{} internode connections open (internode_connections_max)",
                open.get()
            ))
        } else {
            match peer {
                Some(peer) => per_address
                    .admit(peer.ip(), limits.per_address_max)
                    .ok_or_else(|| {
                        format!(
                            "{} internode connections open from {} (internode_connections_per_address_max)",
                            limits.per_address_max,
                            peer.ip()
                        )
                    }),
                None => Err("no peer address".to_string()),
            }
        };
        let admission = match admission {
            Ok(admission) => admission,
            Err(why) => {
                refused += 1;
                if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    log::warning!(
                        "internode connection from {} refused: {why} ({refused} refused since the last such line)",
                        peer.map(|p| p.to_string()).unwrap_or_default()
                    );
                    refused = 0;
                    last_refusal_log = Some(std::time::Instant::now());
                }
                glommio::spawn_local(refuse(stream, secret.is_none(), why)).detach();
                continue;
            }
        };
        let (handler, secret, open) = (handler.clone(), secret.clone(), open.clone());
        open.set(open.get() + 1);
        glommio::spawn_local(async move {
            let _admission = admission;
            let mut stream = stream;
            let authenticated = match secret {
                // Nothing the peer sends is read as a frame before it has
                // proved it holds the secret.
                Some(secret) => match with_timeout(auth::accept(&mut stream, &secret)).await {
                    Ok(()) => true,
                    Err(e) => {
                        let peer = stream
                            .peer_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        log::warning!(%peer, error = %e, "internode connection refused");
                        let _ = stream.close().await;
                        false
                    }
                },
                None => true,
            };
            if authenticated {
                serve(handler, stream, limits.idle).await;
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Over a connection limit: closes the connection. Without a secret the
/// peer may be `dynakv admin`, which reads one answer: it gets the reason
/// as an admin error (a node's link never reads, so the frame is harmless).
async fn refuse(mut stream: TcpStream, say_why: bool, why: String) {
    if say_why {
        let mut out = Vec::new();
        let envelope = Envelope {
            kind: KIND_ADMIN_RESPONSE,
            from_node: 0,
            from_shard: 0,
            to_shard: 0,
        };
        encode_frame(&mut out, envelope, |out| {
            out.push(0);
            out.extend_from_slice(format!("connection refused: {why}").as_bytes());
        });
        let _ = futures_lite::future::or(
            async {
                let _ = stream.write_all(&out).await;
            },
            glommio::timer::sleep(Duration::from_millis(100)),
        )
        .await;
    }
    let _ = stream.close().await;
}

async fn serve<H: InboundHandler>(handler: Rc<H>, mut stream: TcpStream, idle: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    // The read timeout ends a silent connection; `last_frame` ends a slow
    // one that trickles bytes but completes no frame in time.
    if let Some(idle) = idle {
        let _ = stream.set_read_timeout(Some(idle));
    }
    let mut last_frame = std::time::Instant::now();
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
                    last_frame = std::time::Instant::now();
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
        if idle.is_some_and(|idle| last_frame.elapsed() > idle) {
            break;
        }
    }
}
