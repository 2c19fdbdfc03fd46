//! The admin HTTP port (`http_listen`): `GET /metrics` in the Prometheus
//! text format and `GET /health`, served by shard 0 on its glommio executor
//! (no other runtime in the process).
//!
//! Deliberately small: HTTP/1.1 requests without a body, one request per
//! connection (`Connection: close`), a bounded request head that must
//! arrive whole within a deadline (a silent or trickling client is cut),
//! and bounds on simultaneous connections, in all and per source address
//! (past them: `503` and close). Anything else gets a clear 4xx and the
//! connection is closed; the server keeps serving.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::log;
use super::metrics::{render, NodeFacts};
use super::shard::ShardState;
use crate::observe::prometheus::CONTENT_TYPE;

/// The largest request head (request line and headers) accepted.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Simultaneous admin HTTP connections; more are answered 503 and closed.
const CONNECTIONS_MAX: usize = 64;
/// Simultaneous admin HTTP connections from one source address, so one
/// host cannot take every slot from the scraper.
const CONNECTIONS_PER_ADDRESS_MAX: usize = 16;
/// A client that has not sent its whole request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts admin HTTP connections until the node shuts down.
pub(crate) async fn accept_loop(shard: Rc<ShardState>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    let per_address = Rc::new(super::limits::AddressLimiter::default());
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                log::warning!(error = %e, "admin http accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admission = match stream.peer_addr() {
            Ok(peer) if open.get() < CONNECTIONS_MAX => {
                per_address.admit(peer.ip(), CONNECTIONS_PER_ADDRESS_MAX)
            }
            _ => None,
        };
        let Some(admission) = admission else {
            glommio::spawn_local(async move {
                let mut stream = stream;
                let _ = futures_lite::future::or(
                    async {
                        let _ =
                            respond(&mut stream, 503, "text/plain", "too many connections\n").await;
                    },
                    glommio::timer::sleep(Duration::from_millis(100)),
                )
                .await;
            })
            .detach();
            continue;
        };
        open.set(open.get() + 1);
        let (shard, open) = (shard.clone(), open.clone());
        glommio::spawn_local(async move {
            let _admission = admission;
            serve(&shard, stream).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn serve(shard: &Rc<ShardState>, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let started = std::time::Instant::now();
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        // The read timeout ends a silent client; this a trickling one.
        if started.elapsed() > READ_TIMEOUT {
            break false;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break false,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > HEAD_BYTES_MAX {
            let _ = respond(&mut stream, 431, "text/plain", "request head too large\n").await;
            return;
        }
    };
    if !complete {
        return;
    }
    let (status, content_type, body) = answer(shard, &head).await;
    let _ = respond(&mut stream, status, content_type, &body).await;
}

/// The status, content type and body for one request head.
async fn answer(shard: &Rc<ShardState>, head: &[u8]) -> (u16, &'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return (400, "text/plain", "bad request line\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "text/plain", "HTTP/1.x only\n".into());
    }
    if method != "GET" {
        return (405, "text/plain", "only GET is served\n".into());
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => {
            let snapshots = shard.node.metrics.collect().await;
            let topology = shard.node.cluster.topology();
            let facts = NodeFacts {
                node_id: shard.node.cluster.me.0,
                ring_epoch: topology.epoch,
                members: topology.members.len(),
                unreachable: topology.unreachable.len(),
                up_seconds: shard.node.started.elapsed().as_secs_f64(),
            };
            (200, CONTENT_TYPE, render(&facts, &snapshots))
        }
        "/health" => health(shard),
        _ => (
            404,
            "text/plain",
            "not found; try /metrics or /health\n".into(),
        ),
    }
}

/// 200 while every shard runs and no store has failed; 503 otherwise,
/// with the reason.
fn health(shard: &Rc<ShardState>) -> (u16, &'static str, String) {
    let node = &shard.node;
    let snapshots = node.metrics.latest();
    let node_id = format!("{:016x}", node.cluster.me.0);
    let problem = if shard.shutdown.load(Ordering::Relaxed) {
        Some("shutting down".to_string())
    } else if snapshots.len() < node.shards {
        Some(format!(
            "{} of {} shards have started",
            snapshots.len(),
            node.shards
        ))
    } else {
        snapshots
            .iter()
            .find(|s| s.store_failed())
            .map(|s| format!("the store of shard {} has failed", s.shard))
    };
    let epoch = node.cluster.topology().epoch;
    match problem {
        None => (
            200,
            "application/json",
            format!(
                "{{\"status\": \"ok\", \"node\": \"{node_id}\", \"shards\": {}, \"ring_epoch\": {epoch}}}\n",
                node.shards
            ),
        ),
        Some(reason) => (
            503,
            "application/json",
            format!(
                "{{\"status\": \"unavailable\", \"node\": \"{node_id}\", \"reason\": {}}}\n",
                crate::json::string(&reason)
            ),
        ),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}
