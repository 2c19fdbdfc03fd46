//! The Redis-protocol listener: one connection task per RESP client, which
//! parses commands with the pure `crate::resp` parser, turns each into the
//! same `Request` a binary client would send, and runs it through the
//! shard's ordinary request path (`ShardState::handle_frame`, node-port
//! semantics: forwarded once to the owning shard or node, quorum in a
//! cluster). docs/resp.md is the user's page.
//!
//! The connection speaks RESP2 until `HELLO 3` switches it to RESP3; only
//! the reply shapes RESP2 lacks (nulls, maps, sets, verbatim text) differ.
//!
//! Commands on one connection run one after another, because RESP replies
//! must leave in request order; a pipelining client still gets every reply
//! of a batch in one write. Redis's last-writer-wins commands are mapped onto
//! causal versioning by reading the key's context first: `SET` and `DEL`
//! supersede every sibling they saw, so a plain Redis client never creates
//! siblings on its own.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::readiness::Readiness;

use super::shard::{Reply, ShardState};
use crate::protocol::{
    self, ErrorCode, Quorum, Request, RequestFrame, Response, Sibling, FRAME_LENGTH_BYTES,
};
use crate::resp::{self, reply, Protocol, RespLimits, RespParser};

/// Size of each read from a socket.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Node-wide RESP counters, shown by `INFO`.
#[derive(Default)]
pub(crate) struct RespStats {
    /// RESP connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// RESP commands executed.
    pub commands: AtomicU64,
    /// Plain `GET`s (and `MGET` keys) that found several live siblings and
    /// answered with the deterministic winner.
    pub sibling_resolutions: AtomicU64,
    /// Commands answered with an error.
    pub errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) async fn accept_loop(shard: Rc<ShardState>, listener: TcpListener) {
    // As the binary listener: one epoll instance for its connections.
    let readiness = Readiness::for_listener(&shard.config, "RESP");
    super::conn::accept_clients(
        shard,
        listener,
        "RESP",
        |mut stream, why| async move {
            let mut out = Vec::new();
            let message = match why {
                "too many connections" => "ERR max number of clients reached".to_string(),
                other => format!("ERR {other}"),
            };
            reply::error(&mut out, &message);
            let _ = stream.write_all(&out).await;
            let _ = stream.close().await;
        },
        move |shard, stream| {
            let readiness = readiness.clone();
            async move {
                bump(&shard.node.resp_stats.connections_accepted);
                serve(&shard, stream, readiness.as_ref()).await
            }
        },
    )
    .await
}

async fn serve(shard: &Rc<ShardState>, mut stream: TcpStream, readiness: Option<&Rc<Readiness>>) {
    let _ = stream.set_nodelay(true);
    // Removed from the epoll instance before the socket is closed (below).
    let registration = readiness.and_then(|readiness| readiness.join(stream.as_raw_fd()));
    // As for binary clients (`conn::idle_watchdog`): a connection that
    // completes no command within the idle timeout, silent or trickling
    // bytes, is closed. One timer per connection, re-armed only when it
    // fires, instead of glommio's read timeout armed on every read.
    let last_command = Rc::new(Cell::new(Instant::now()));
    let watchdog = (shard.config.idle_timeout_ms > 0).then(|| {
        glommio::spawn_local(super::conn::idle_watchdog(
            stream.as_raw_fd(),
            last_command.clone(),
            Duration::from_millis(shard.config.idle_timeout_ms),
        ))
    });
    let parser = RespParser::new(RespLimits::for_server(
        shard.config.value_bytes_max,
        shard.config.frame_bytes_max,
    ));
    let mut session = Session {
        shard: shard.clone(),
        next_id: 1,
        quit: false,
        protocol: Protocol::Resp2,
        name: None,
    };
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut out = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        let read = match &registration {
            Some(registration) => registration.read(&mut chunk).await,
            None => stream.read(&mut chunk).await,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut fatal = false;
        loop {
            match parser.parse(&mut buffer) {
                Ok(Some(args)) => {
                    last_command.set(Instant::now());
                    if !args.is_empty() {
                        session.execute(&args, &mut out).await;
                    }
                    if session.quit {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    bump(&shard.node.resp_stats.errors);
                    reply::error(&mut out, &format!("ERR {e}"));
                    fatal = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if fatal || session.quit {
            break;
        }
    }
    // Cancelled before the descriptor it shuts down is closed.
    drop(watchdog);
    drop(registration);
    let _ = stream.close().await;
}

/// One RESP connection's state.
struct Session {
    shard: Rc<ShardState>,
    /// Request ids for the internal binary requests (echoed, not routed on).
    next_id: u64,
    /// Set by QUIT: reply, then close.
    quit: bool,
    /// The reply protocol, RESP2 until `HELLO 3`.
    protocol: Protocol,
    /// The name given by `CLIENT SETNAME` or `HELLO … SETNAME`.
    name: Option<Bytes>,
}

/// What `SET` does besides writing: its `NX`/`XX` condition and `GET`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SetOptions {
    /// `NX`: write only if the key holds no live value.
    if_absent: bool,
    /// `XX`: write only if the key holds a live value.
    if_present: bool,
    /// `GET`: answer the value the key held before (its deterministic winner).
    get_old: bool,
}

impl SetOptions {
    /// Parses the options after `SET key value`. Expiry options are refused:
    /// dynakv has no expiry.
    fn parse(options: &[Bytes]) -> Outcome<SetOptions> {
        let mut parsed = SetOptions::default();
        for option in options {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" => parsed.if_absent = true,
                b"XX" => parsed.if_present = true,
                b"GET" => parsed.get_old = true,
                b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                    return Err(format!(
                        "ERR SET {} is not supported: dynakv keys do not expire (NX, XX and GET are supported)",
                        String::from_utf8_lossy(option).to_ascii_uppercase()
                    ))
                }
                _ => return Err("ERR syntax error".into()),
            }
        }
        if parsed.if_absent && parsed.if_present {
            return Err("ERR syntax error (NX and XX together)".into());
        }
        Ok(parsed)
    }
}

/// What a conditional `SET` did.
struct SetOutcome {
    /// Whether the value was written (false: the NX/XX condition failed).
    written: bool,
    /// The deterministic winner among the live values read before writing.
    old: Option<Bytes>,
}

/// What a failed internal request says, as a RESP error line.
fn error_text(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::BadRequest => {
            format!("ERR {message}")
        }
        _ => format!("ERR dynakv {}: {message}", code.name()),
    }
}

type Outcome<T> = Result<T, String>;

impl Session {
    /// Sends one request through the shard's request path and decodes the
    /// reply.
    async fn call(&mut self, request: Request) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        protocol::encode_request(
            &RequestFrame {
                id,
                epoch: 0,
                request,
            },
            &mut frame,
        );
        let frame = Bytes::from(frame).slice(FRAME_LENGTH_BYTES..);
        match self.shard.handle_frame(frame, true).await {
            Reply::Response(_, response) => response,
            Reply::Get(get) => get.into_response(),
            Reply::Written => unreachable!("handle_frame writes no reply itself"),
            Reply::Put { token, .. } => Response::Put {
                context: token.into_bytes(),
            },
            Reply::Encoded(bytes) => {
                let body = Bytes::from(bytes).slice(FRAME_LENGTH_BYTES..);
                match protocol::decode_response(body, &self.shard.node.limits) {
                    Ok((_, response)) => response,
                    Err(e) => Response::Error {
                        code: ErrorCode::Internal,
                        message: format!("undecodable forwarded reply: {e}"),
                        acks: 0,
                        routing: None,
                    },
                }
            }
        }
    }

    /// All siblings and the context of `key`.
    async fn get(&mut self, key: &Bytes) -> Outcome<(Vec<Sibling>, Bytes)> {
        match self
            .call(Request::Get {
                key: key.clone(),
                quorum: Quorum::DEFAULT,
            })
            .await
        {
            Response::Get {
                siblings, context, ..
            } => Ok((siblings, context)),
            Response::Error { code, message, .. } => Err(error_text(code, &message)),
            other => Err(format!("ERR unexpected reply {other:?}")),
        }
    }

    /// The value a plain GET shows: one deterministic live winner.
    async fn get_winner(&mut self, key: &Bytes) -> Outcome<Option<Bytes>> {
        let (siblings, _) = self.get(key).await?;
        Ok(self.winner(&siblings))
    }

    /// The deterministic live winner among `siblings`, counted in
    /// `sibling_resolutions` when there was a choice to make.
    fn winner(&self, siblings: &[Sibling]) -> Option<Bytes> {
        let live: Vec<&Bytes> = siblings
            .iter()
            .filter(|s| !s.tombstone)
            .map(|s| &s.value)
            .collect();
        if live.len() > 1 {
            bump(&self.shard.node.resp_stats.sibling_resolutions);
        }
        resp::deterministic_winner(live.into_iter()).cloned()
    }

    async fn put(&mut self, key: &Bytes, value: Bytes, context: Option<Bytes>) -> Outcome<Bytes> {
        match self
            .call(Request::Put {
                key: key.clone(),
                value,
                context,
                quorum: Quorum::DEFAULT,
            })
            .await
        {
            Response::Put { context } => Ok(context),
            Response::Error { code, message, .. } => Err(error_text(code, &message)),
            other => Err(format!("ERR unexpected reply {other:?}")),
        }
    }

    /// SET: supersede whatever the key holds now.
    async fn set(&mut self, key: &Bytes, value: Bytes) -> Outcome<()> {
        self.set_with(key, value, SetOptions::default())
            .await
            .map(|_| ())
    }

    /// SET with NX/XX/GET: read the key (R replicas), decide from what was
    /// read, and write with the read's context so the new value supersedes
    /// exactly the versions read. Check-then-write, not atomic: a writer
    /// racing between the read and the write makes a sibling, never a lost
    /// update (docs/resp.md).
    async fn set_with(
        &mut self,
        key: &Bytes,
        value: Bytes,
        options: SetOptions,
    ) -> Outcome<SetOutcome> {
        let (siblings, context) = self.get(key).await?;
        let exists = siblings.iter().any(|s| !s.tombstone);
        let old = if options.get_old {
            self.winner(&siblings)
        } else {
            None
        };
        let write = !(options.if_absent && exists || options.if_present && !exists);
        if write {
            let context = (!siblings.is_empty() && !context.is_empty()).then_some(context);
            self.put(key, value, context).await?;
        }
        Ok(SetOutcome {
            written: write,
            old,
        })
    }

    /// DEL of one key: true when it held a live value.
    async fn delete(&mut self, key: &Bytes) -> Outcome<bool> {
        let (siblings, context) = self.get(key).await?;
        if !siblings.iter().any(|s| !s.tombstone) {
            return Ok(false);
        }
        self.delete_with(key, context).await.map(|()| true)
    }

    /// Writes a tombstone superseding the versions `context` summarises.
    async fn delete_with(&mut self, key: &Bytes, context: Bytes) -> Outcome<()> {
        match self
            .call(Request::Delete {
                key: key.clone(),
                context,
                quorum: Quorum::DEFAULT,
            })
            .await
        {
            Response::Delete => Ok(()),
            Response::Error { code, message, .. } => Err(error_text(code, &message)),
            other => Err(format!("ERR unexpected reply {other:?}")),
        }
    }

    async fn execute(&mut self, args: &[Bytes], out: &mut Vec<u8>) {
        let stats = &self.shard.node.resp_stats;
        bump(&stats.commands);
        let mark = out.len();
        if let Err(message) = self.dispatch(args, out).await {
            out.truncate(mark);
            bump(&self.shard.node.resp_stats.errors);
            reply::error(out, &message);
        }
    }

    async fn dispatch(&mut self, args: &[Bytes], out: &mut Vec<u8>) -> Outcome<()> {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let argc = args.len();
        let arity = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "ERR wrong number of arguments for '{}' command",
                    name.to_ascii_lowercase()
                ))
            }
        };
        match name.as_str() {
            "PING" => {
                arity(argc <= 2)?;
                match args.get(1) {
                    Some(message) => reply::bulk(out, message),
                    None => reply::simple(out, "PONG"),
                }
            }
            "ECHO" => {
                arity(argc == 2)?;
                reply::bulk(out, &args[1]);
            }
            "QUIT" => {
                reply::simple(out, "OK");
                self.quit = true;
            }
            "HELLO" => {
                let protocol = match args.get(1) {
                    None => self.protocol,
                    Some(version) => match &version[..] {
                        b"2" => Protocol::Resp2,
                        b"3" => Protocol::Resp3,
                        _ => {
                            return Err(
                                "NOPROTO unsupported protocol version (dynakv speaks 2 and 3)"
                                    .into(),
                            )
                        }
                    },
                };
                let mut name = None;
                let mut i = 2;
                while i < argc {
                    let option = args[i].to_ascii_uppercase();
                    if option == b"AUTH" && i + 2 < argc {
                        return Err("ERR HELLO AUTH: dynakv has no client passwords; bind the RESP listener to a trusted address".into());
                    } else if option == b"SETNAME" && i + 1 < argc {
                        name = Some(client_name(&args[i + 1])?);
                        i += 2;
                    } else {
                        return Err(format!(
                            "ERR Syntax error in HELLO option '{}'",
                            String::from_utf8_lossy(&args[i])
                                .chars()
                                .take(64)
                                .collect::<String>()
                        ));
                    }
                }
                // Switched only once every option was accepted, as Redis does.
                self.protocol = protocol;
                if name.is_some() {
                    self.name = name;
                }
                reply::map(out, 7, protocol);
                for (field, value) in [("server", "dynakv"), ("version", env!("CARGO_PKG_VERSION"))]
                {
                    reply::bulk(out, field.as_bytes());
                    reply::bulk(out, value.as_bytes());
                }
                reply::bulk(out, b"proto");
                reply::integer(out, protocol.version());
                reply::bulk(out, b"id");
                reply::integer(out, i64::try_from(self.next_id).unwrap_or(0));
                for (field, value) in [("mode", "cluster"), ("role", "master")] {
                    reply::bulk(out, field.as_bytes());
                    reply::bulk(out, value.as_bytes());
                }
                reply::bulk(out, b"modules");
                reply::array(out, 0);
            }
            "AUTH" => {
                arity(argc == 2 || argc == 3)?;
                return Err("ERR AUTH <password> called without any password configured for the default user. dynakv has no client passwords; bind the RESP listener to a trusted address".into());
            }
            "SELECT" => {
                arity(argc == 2)?;
                if &args[1][..] != b"0" {
                    return Err("ERR DB index is out of range (dynakv has only database 0)".into());
                }
                reply::simple(out, "OK");
            }
            "CLIENT" => {
                arity(argc >= 2)?;
                let sub = args[1].to_ascii_uppercase();
                if sub == b"SETNAME" {
                    arity(argc == 3)?;
                    self.name = Some(client_name(&args[2])?);
                    reply::simple(out, "OK");
                } else if sub == b"GETNAME" {
                    match &self.name {
                        Some(name) => reply::bulk(out, name),
                        None => reply::null(out, self.protocol),
                    }
                } else {
                    // Libraries set client info (SETINFO, NO-EVICT, …);
                    // accept and ignore.
                    reply::simple(out, "OK");
                }
            }
            "CONFIG" => {
                // `CONFIG GET x`: dynakv's configuration is not Redis's; an
                // empty answer tells tools (redis-benchmark) nothing is set.
                arity(argc >= 2)?;
                if !args[1].eq_ignore_ascii_case(b"GET") {
                    return Err("ERR CONFIG SET/RESETSTAT/REWRITE are not supported by dynakv; see docs/configuration.md".into());
                }
                // redis-benchmark reads `save` and `appendonly` to print its
                // header; dynakv neither snapshots nor keeps an AOF.
                let known: Vec<(&Bytes, &str)> = args[2..]
                    .iter()
                    .filter_map(|p| {
                        if p.eq_ignore_ascii_case(b"save") {
                            Some((p, ""))
                        } else if p.eq_ignore_ascii_case(b"appendonly") {
                            Some((p, "no"))
                        } else {
                            None
                        }
                    })
                    .collect();
                reply::map(out, known.len(), self.protocol);
                for (parameter, value) in known {
                    reply::bulk(out, parameter);
                    reply::bulk(out, value.as_bytes());
                }
            }
            "COMMAND" => match args.get(1).map(|a| a.to_ascii_uppercase()) {
                Some(sub) if sub == b"COUNT" => reply::integer(out, COMMANDS.len() as i64),
                // Documentation and the full table are optional for clients;
                // an empty answer makes redis-cli fall back to no hints.
                Some(sub) if sub == b"DOCS" => reply::array(out, 0),
                _ => {
                    reply::array(out, COMMANDS.len());
                    for (command, arity, write, first, last, step) in COMMANDS {
                        reply::array(out, 6);
                        reply::bulk(out, command.as_bytes());
                        reply::integer(out, *arity);
                        reply::set(out, 1, self.protocol);
                        reply::simple(out, if *write { "write" } else { "readonly" });
                        reply::integer(out, *first);
                        reply::integer(out, *last);
                        reply::integer(out, *step);
                    }
                }
            },
            "INFO" => {
                let stats = &self.shard.node.resp_stats;
                let text = format!(
                    "# Server\r\nredis_version:7.0.0\r\ndynakv_version:{}\r\nredis_mode:cluster\r\nprocess_id:{}\r\n\r\n# Clients\r\nconnected_clients:{}\r\n\r\n# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ncommand_errors:{}\r\n\r\n# Dynakv\r\nshard:{}\r\nsibling_resolutions:{}\r\n",
                    env!("CARGO_PKG_VERSION"),
                    std::process::id(),
                    self.shard.counters.connections.get(),
                    stats.connections_accepted.load(Ordering::Relaxed),
                    stats.commands.load(Ordering::Relaxed),
                    stats.errors.load(Ordering::Relaxed),
                    self.shard.index,
                    stats.sibling_resolutions.load(Ordering::Relaxed),
                );
                reply::text(out, &text, self.protocol);
            }
            "GET" => {
                arity(argc == 2)?;
                let value = self.get_winner(&args[1]).await?;
                self.value_or_null(out, value.as_ref());
            }
            "SET" => {
                arity(argc >= 3)?;
                let options = SetOptions::parse(&args[3..])?;
                let outcome = self.set_with(&args[1], args[2].clone(), options).await?;
                if options.get_old {
                    self.value_or_null(out, outcome.old.as_ref());
                } else if outcome.written {
                    reply::simple(out, "OK");
                } else {
                    reply::null(out, self.protocol);
                }
            }
            "SETNX" => {
                arity(argc == 3)?;
                let options = SetOptions {
                    if_absent: true,
                    ..SetOptions::default()
                };
                let outcome = self.set_with(&args[1], args[2].clone(), options).await?;
                reply::integer(out, i64::from(outcome.written));
            }
            "GETSET" => {
                arity(argc == 3)?;
                let options = SetOptions {
                    get_old: true,
                    ..SetOptions::default()
                };
                let outcome = self.set_with(&args[1], args[2].clone(), options).await?;
                self.value_or_null(out, outcome.old.as_ref());
            }
            "GETDEL" => {
                arity(argc == 2)?;
                let (siblings, context) = self.get(&args[1]).await?;
                let old = self.winner(&siblings);
                if old.is_some() {
                    self.delete_with(&args[1], context).await?;
                }
                self.value_or_null(out, old.as_ref());
            }
            "DEL" | "UNLINK" => {
                arity(argc >= 2)?;
                let mut deleted = 0;
                for key in &args[1..] {
                    deleted += i64::from(self.delete(key).await?);
                }
                reply::integer(out, deleted);
            }
            "EXISTS" => {
                arity(argc >= 2)?;
                let mut found = 0;
                for key in &args[1..] {
                    let (siblings, _) = self.get(key).await?;
                    found += i64::from(siblings.iter().any(|s| !s.tombstone));
                }
                reply::integer(out, found);
            }
            "MGET" => {
                arity(argc >= 2)?;
                let mut values = Vec::with_capacity(argc - 1);
                for key in &args[1..] {
                    values.push(self.get_winner(key).await?);
                }
                reply::array(out, values.len());
                for value in values {
                    self.value_or_null(out, value.as_ref());
                }
            }
            "MSET" => {
                arity(argc >= 3 && argc % 2 == 1)?;
                for pair in args[1..].chunks(2) {
                    self.set(&pair[0], pair[1].clone()).await?;
                }
                reply::simple(out, "OK");
            }
            "DYN.GET" => {
                arity(argc == 2)?;
                let (siblings, context) = self.get(&args[1]).await?;
                // RESP2: [context, [sibling…]]; RESP3: the same two as a
                // map {context: …, siblings: […]}.
                match self.protocol {
                    Protocol::Resp2 => reply::array(out, 2),
                    Protocol::Resp3 => {
                        reply::map(out, 2, Protocol::Resp3);
                        reply::bulk(out, b"context");
                    }
                }
                reply::bulk(out, resp::hex_encode(&context).as_bytes());
                if self.protocol == Protocol::Resp3 {
                    reply::bulk(out, b"siblings");
                }
                reply::array(out, siblings.len());
                for sibling in siblings {
                    if sibling.tombstone {
                        reply::null(out, self.protocol);
                    } else {
                        reply::bulk(out, &sibling.value);
                    }
                }
            }
            "DYN.PUT" => {
                arity(argc == 4)?;
                let context = resp::hex_decode(&args[2])
                    .ok_or("ERR the context must be the hex string DYN.GET returned")?;
                let context = (!context.is_empty()).then(|| Bytes::from(context));
                let written = self.put(&args[1], args[3].clone(), context).await?;
                reply::bulk(out, resp::hex_encode(&written).as_bytes());
            }
            _ => {
                let shown: String = name.chars().take(64).collect();
                return Err(format!("ERR unknown command '{shown}'"));
            }
        }
        Ok(())
    }

    /// A value as a bulk string, or the protocol's null.
    fn value_or_null(&self, out: &mut Vec<u8>, value: Option<&Bytes>) {
        match value {
            Some(value) => reply::bulk(out, value),
            None => reply::null(out, self.protocol),
        }
    }
}

/// Checks a client name as Redis does: printable, no spaces.
fn client_name(name: &Bytes) -> Outcome<Bytes> {
    if name.iter().all(|&b| b.is_ascii_graphic()) {
        Ok(name.clone())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.".into())
    }
}

/// The commands `COMMAND` lists: name, Redis arity (negative: at least),
/// whether it writes, and the first key, last key and key step as Redis
/// reports them (0 when the command takes no key).
type CommandInfo = (&'static str, i64, bool, i64, i64, i64);
const COMMANDS: &[CommandInfo] = &[
    ("ping", -1, false, 0, 0, 0),
    ("echo", 2, false, 0, 0, 0),
    ("quit", 1, false, 0, 0, 0),
    ("hello", -1, false, 0, 0, 0),
    ("auth", -2, false, 0, 0, 0),
    ("select", 2, false, 0, 0, 0),
    ("client", -2, false, 0, 0, 0),
    ("config", -2, false, 0, 0, 0),
    ("command", -1, false, 0, 0, 0),
    ("info", -1, false, 0, 0, 0),
    ("get", 2, false, 1, 1, 1),
    ("set", -3, true, 1, 1, 1),
    ("setnx", 3, true, 1, 1, 1),
    ("getset", 3, true, 1, 1, 1),
    ("getdel", 2, true, 1, 1, 1),
    ("del", -2, true, 1, -1, 1),
    ("unlink", -2, true, 1, -1, 1),
    ("exists", -2, false, 1, -1, 1),
    ("mget", -2, false, 1, -1, 1),
    ("mset", -3, true, 1, -1, 2),
    ("dyn.get", 2, false, 1, 1, 1),
    ("dyn.put", 4, true, 1, 1, 1),
];
