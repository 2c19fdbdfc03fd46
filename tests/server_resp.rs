//! The Redis-protocol front end against the real binary, driven by the real
//! `redis-cli` and `redis-benchmark` (Debian's redis-tools, installed by
//! tools/setup.sh) and by raw sockets for malformed input: the command set,
//! inline commands, siblings made by binary clients seen through GET (one
//! deterministic winner, counted in INFO) and DYN.GET / DYN.PUT, and bounds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestNode;
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::Quorum;

/// A free port on `ip` for the RESP listener.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A node with a RESP listener on 127.0.0.9 (an address no other test's
/// clients use, so their ephemeral ports cannot take it); a port another
/// process grabbed between the probe and the bind costs a retry.
fn start_with_resp() -> (TestNode, SocketAddr) {
    start_with_resp_and(&[])
}

/// `start_with_resp` with more server flags.
fn start_with_resp_and(flags: &[&str]) -> (TestNode, SocketAddr) {
    for _ in 0..10 {
        let resp: SocketAddr = format!("127.0.0.9:{}", free_port("127.0.0.9"))
            .parse()
            .unwrap();
        let resp_text = resp.to_string();
        let mut args = vec!["--resp-listen", resp_text.as_str()];
        args.extend_from_slice(flags);
        let started = std::panic::catch_unwind(|| TestNode::start(2, &args));
        if let Ok(node) = started {
            return (node, resp);
        }
    }
    panic!("no node with a RESP listener could start");
}

/// Runs `redis-cli -3 --no-raw` (RESP3, replies shown with their types as
/// on a terminal) with `args` against `resp`; returns its stdout.
fn redis_cli3(resp: SocketAddr, args: &[&str]) -> String {
    let mut all = vec!["-3", "--no-raw"];
    all.extend_from_slice(args);
    redis_cli(resp, &all)
}

/// Runs `redis-cli` with `args` against `resp`; returns its stdout.
fn redis_cli(resp: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", &resp.ip().to_string(), "-p", &resp.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli (install redis-tools: tools/setup.sh)");
    assert!(out.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Sends raw bytes and half-closes, then reads until the server closes: it
/// answers what it was sent, then sees the end of the stream (or closes
/// after a fatal error) well within the read timeout.
fn raw(resp: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(resp).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).expect("write");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A reset after a fatal error's reply (the server closed with our
        // bytes unread) ends the answer as well as a close does.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the server did not close after answering {:?}: {e}",
            String::from_utf8_lossy(&answer)
        ),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn redis_cli_runs_the_command_set() {
    let (_node, resp) = start_with_resp();
    assert_eq!(redis_cli(resp, &["ping"]), "PONG");
    assert_eq!(redis_cli(resp, &["echo", "hi there"]), "hi there");
    assert_eq!(redis_cli(resp, &["set", "a", "hello"]), "OK");
    assert_eq!(redis_cli(resp, &["get", "a"]), "hello");
    // A second SET supersedes the first: no sibling is left behind.
    assert_eq!(redis_cli(resp, &["set", "a", "world"]), "OK");
    assert_eq!(redis_cli(resp, &["get", "a"]), "world");
    assert_eq!(redis_cli(resp, &["exists", "a", "nope", "a"]), "2");
    assert_eq!(redis_cli(resp, &["mset", "x", "1", "y", "2"]), "OK");
    assert_eq!(
        redis_cli(resp, &["mget", "x", "nope", "y"]),
        "1\n\n2",
        "a missing key is a nil (printed empty without a tty)"
    );
    assert_eq!(redis_cli(resp, &["del", "a", "x", "nope"]), "2");
    assert_eq!(redis_cli(resp, &["get", "a"]), "");
    assert_eq!(redis_cli(resp, &["exists", "a"]), "0");
    assert_eq!(redis_cli(resp, &["select", "0"]), "OK");
    assert!(redis_cli(resp, &["select", "1"]).contains("out of range"));
    assert!(redis_cli(resp, &["set", "k", "v", "ex", "10"]).contains("do not expire"));
    assert!(redis_cli(resp, &["auth", "secret"]).contains("without any password"));
    assert!(redis_cli(resp, &["hello", "4"]).contains("NOPROTO"));
    assert!(redis_cli(resp, &["hello", "2"]).contains("dynakv"));
    assert!(redis_cli(resp, &["nosuchcmd"]).contains("unknown command"));
    assert!(redis_cli(resp, &["get"]).contains("wrong number of arguments"));
    assert!(redis_cli(resp, &["info"]).contains("sibling_resolutions:0"));
    assert_eq!(redis_cli(resp, &["command", "count"]), "22");
    // Binary-safe values survive the round trip.
    assert_eq!(
        raw(
            resp,
            b"*3\r\n$3\r\nSET\r\n$3\r\nbin\r\n$4\r\n\x00\r\n\xff\r\n*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n"
        ),
        "+OK\r\n$4\r\n\x00\r\n\u{fffd}\r\n"
    );
    // Inline commands, pipelined, answered in order.
    assert_eq!(
        raw(
            resp,
            b"PING\r\nSET inl \"two words\"\r\nGET inl\nQUIT\r\nPING\r\n"
        ),
        "+PONG\r\n+OK\r\n$9\r\ntwo words\r\n+OK\r\n",
        "QUIT answers and closes; nothing after it runs"
    );
}

/// SET's NX, XX and GET options, SETNX, GETSET and GETDEL: read the key,
/// decide, write with the read's context (docs/resp.md).
#[test]
fn set_options_nx_xx_and_get_read_then_write_with_the_context() {
    let (node, resp) = start_with_resp();
    let cli = |args: &[&str]| redis_cli(resp, args);
    // NX writes only where no live value exists.
    assert_eq!(cli(&["set", "n", "v1", "nx"]), "OK");
    assert_eq!(cli(&["set", "n", "v2", "nx"]), "", "refused: a nil");
    assert_eq!(cli(&["get", "n"]), "v1");
    // XX writes only where one does.
    assert_eq!(cli(&["set", "fresh", "v", "xx"]), "");
    assert_eq!(cli(&["exists", "fresh"]), "0");
    assert_eq!(cli(&["set", "n", "v3", "XX"]), "OK");
    assert_eq!(cli(&["get", "n"]), "v3");
    // GET answers the value before; with a failed condition nothing is written.
    assert_eq!(cli(&["set", "n", "v4", "get"]), "v3");
    assert_eq!(cli(&["set", "n", "v5", "nx", "get"]), "v4");
    assert_eq!(cli(&["get", "n"]), "v4");
    assert_eq!(cli(&["set", "fresh", "v", "xx", "get"]), "");
    assert_eq!(cli(&["exists", "fresh"]), "0");
    // A deleted key (a tombstone) counts as absent for NX.
    assert_eq!(cli(&["del", "n"]), "1");
    assert_eq!(cli(&["set", "n", "again", "nx"]), "OK");
    assert_eq!(cli(&["get", "n"]), "again");
    // Bad combinations and expiry are refused, and say why.
    assert!(cli(&["set", "k", "v", "nx", "xx"]).contains("syntax error"));
    assert!(cli(&["set", "k", "v", "bogus"]).contains("syntax error"));
    for expiry in [
        &["px", "100"][..],
        &["exat", "1"],
        &["pxat", "1"],
        &["keepttl"],
    ] {
        let mut args = vec!["set", "k", "v"];
        args.extend_from_slice(expiry);
        assert!(cli(&args).contains("do not expire"), "{expiry:?}");
    }
    assert_eq!(cli(&["exists", "k"]), "0", "a refused SET writes nothing");
    // SETNX, GETSET, GETDEL.
    assert_eq!(cli(&["setnx", "s", "1"]), "1");
    assert_eq!(cli(&["setnx", "s", "2"]), "0");
    assert_eq!(cli(&["getset", "s", "3"]), "1");
    assert_eq!(cli(&["getset", "new", "x"]), "");
    assert_eq!(cli(&["get", "new"]), "x");
    assert_eq!(cli(&["getdel", "s"]), "3");
    assert_eq!(cli(&["exists", "s"]), "0");
    assert_eq!(cli(&["getdel", "s"]), "");

    // On a key with siblings, GET answers the deterministic winner and the
    // write's context supersedes every sibling read: one value is left.
    let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    for value in [&b"apple"[..], b"pear"] {
        client
            .put(b"cart", value, None, Quorum::DEFAULT)
            .expect("put");
    }
    assert_eq!(client.get(b"cart").expect("get").values.len(), 2);
    assert_eq!(cli(&["set", "cart", "fig", "nx", "get"]), "pear");
    assert_eq!(client.get(b"cart").expect("get").values.len(), 2);
    assert_eq!(cli(&["set", "cart", "fig", "xx", "get"]), "pear");
    assert_eq!(
        client.get(b"cart").expect("get").values,
        vec![bytes::Bytes::from("fig")]
    );
}

/// `HELLO 3` switches a connection to RESP3: the server map, `_` nulls,
/// INFO as verbatim text, DYN.GET as a map; the real `redis-cli -3`
/// (which sends `HELLO 3` itself on connecting) reads them all.
#[test]
fn resp3_after_hello_3_and_redis_cli_dash_3_reads_it() {
    let (_node, resp) = start_with_resp();
    let answer = raw(
        resp,
        b"GET none\r\nHELLO 3 SETNAME probe\r\nGET none\r\nMGET none\r\nCLIENT GETNAME\r\nHELLO\r\nHELLO 2\r\nGET none\r\nHELLO 4\r\nHELLO 3 AUTH u p\r\nGET none\r\n",
    );
    let version = env!("CARGO_PKG_VERSION");
    let map = |marker: &str, proto: u8| {
        format!(
            "{marker}\r\n$6\r\nserver\r\n$6\r\ndynakv\r\n$7\r\nversion\r\n${}\r\n{version}\r\n$5\r\nproto\r\n:{proto}\r\n",
            version.len()
        )
    };
    let mut at = 0;
    let mut expect = |part: &str| {
        let found = answer[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} not after {at} in {answer:?}"));
        at += found + part.len();
    };
    expect("$-1\r\n");
    expect(&map("%7", 3));
    expect("$7\r\nmodules\r\n*0\r\n_\r\n*1\r\n_\r\n$5\r\nprobe\r\n");
    expect(&map("%7", 3));
    expect(&map("*14", 2));
    expect("$-1\r\n-NOPROTO");
    // A refused HELLO changes nothing: still RESP2.
    expect("-ERR HELLO AUTH");
    expect("\r\n$-1\r\n");

    let cli = |args: &[&str]| redis_cli3(resp, args);
    assert!(cli(&["hello", "3"]).contains("\"proto\" => (integer) 3"));
    assert_eq!(cli(&["get", "missing"]), "(nil)");
    assert_eq!(cli(&["set", "k", "v"]), "OK");
    assert_eq!(cli(&["set", "k", "w", "get"]), "\"v\"");
    let info = cli(&["info"]);
    assert!(info.contains("sibling_resolutions:0"), "{info}");
    assert!(
        !info.contains("txt:"),
        "a verbatim string's format is not shown: {info}"
    );
    let dyn_get = cli(&["dyn.get", "k"]);
    assert!(
        dyn_get.contains("\"context\" =>") && dyn_get.contains("\"siblings\" =>"),
        "{dyn_get}"
    );
    assert!(dyn_get.contains("\"w\""), "{dyn_get}");
    let config = cli(&["config", "get", "appendonly"]);
    assert!(config.contains("\"appendonly\" => \"no\""), "{config}");
}

#[test]
fn siblings_show_one_deterministic_winner_and_dyn_commands_see_them_all() {
    let (node, resp) = start_with_resp();
    // Two blind puts from a binary client make two siblings.
    let mut client = Client::connect(node.listen, ClientOptions::default()).expect("connect");
    client
        .put(b"cart", b"apple", None, Quorum::DEFAULT)
        .expect("put");
    client
        .put(b"cart", b"pear", None, Quorum::DEFAULT)
        .expect("put");
    assert_eq!(client.get(b"cart").expect("get").values.len(), 2);

    for _ in 0..3 {
        assert_eq!(
            redis_cli(resp, &["get", "cart"]),
            "pear",
            "the byte-greatest"
        );
    }
    // INFO is node-wide: three GETs resolved siblings, whichever shard
    // accepted each connection.
    assert!(
        redis_cli(resp, &["info"]).contains("sibling_resolutions:3"),
        "{}",
        redis_cli(resp, &["info"])
    );

    let all = redis_cli(resp, &["dyn.get", "cart"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all}");
    let context = lines[0];
    let mut values = lines[1..].to_vec();
    values.sort();
    assert_eq!(values, ["apple", "pear"]);

    // DYN.PUT with that context supersedes both; a plain GET no longer resolves.
    let written = redis_cli(resp, &["dyn.put", "cart", context, "apple+pear"]);
    assert!(!written.is_empty() && written.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(redis_cli(resp, &["get", "cart"]), "apple+pear");
    assert!(redis_cli(resp, &["info"]).contains("sibling_resolutions:3"));
    assert_eq!(
        client.get(b"cart").expect("get").values,
        vec![bytes::Bytes::from("apple+pear")]
    );
    assert!(redis_cli(resp, &["dyn.put", "cart", "xyz", "v"]).contains("hex"));
    // A context that is hex but not a context is refused by the version layer.
    assert!(redis_cli(resp, &["dyn.put", "cart", "00ff", "v"]).starts_with("ERR"));
}

#[test]
fn malformed_and_oversized_input_gets_an_error_and_the_server_keeps_serving() {
    let (_node, resp) = start_with_resp();
    // Commands then a half-close (`nc -N`): answered, then closed.
    assert_eq!(
        raw(resp, b"PING\r\n*1\r\n$4\r\nPING\r\n"),
        "+PONG\r\n+PONG\r\n"
    );
    let answer = raw(resp, b"*99999999\r\n");
    assert!(answer.starts_with("-ERR Protocol error"), "{answer}");
    let answer = raw(resp, b"*1\r\n$99999999999\r\n");
    assert!(
        answer.contains("bulk string of 99999999999 bytes"),
        "{answer}"
    );
    let answer = raw(resp, b"*1\r\n$abc\r\n");
    assert!(answer.contains("invalid length"), "{answer}");
    let answer = raw(resp, b"GET \"unterminated\r\n");
    assert!(answer.contains("unbalanced quotes"), "{answer}");
    let answer = raw(resp, &vec![b'a'; 100_000]);
    assert!(answer.contains("longer than"), "{answer}");
    // A key over the server's key bound is a per-command error.
    let key = "k".repeat(2000);
    assert!(redis_cli(resp, &["set", &key, "v"]).starts_with("ERR"));
    assert_eq!(redis_cli(resp, &["ping"]), "PONG");
}

#[test]
fn redis_benchmark_runs_set_and_get_cleanly() {
    // Connections waited on through the listener's epoll instance (the
    // default) and with glommio's own poll (`epoll_client_reads = false`).
    for flags in [&[][..], &["--epoll-client-reads", "false"][..]] {
        redis_benchmark_runs_against(flags);
    }
}

fn redis_benchmark_runs_against(flags: &[&str]) {
    let (_node, resp) = start_with_resp_and(flags);
    let out = Command::new("redis-benchmark")
        .args(["-h", &resp.ip().to_string(), "-p", &resp.port().to_string()])
        .args(["-t", "set,get", "-n", "2000", "-c", "8", "-q"])
        .output()
        .expect("redis-benchmark (install redis-tools: tools/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("WARNING") && !stdout.contains("WARNING"),
        "{stdout}\n{stderr}"
    );
    for test in ["SET:", "GET:"] {
        assert!(
            stdout.contains(test) && stdout.contains("requests per second"),
            "{stdout}"
        );
    }
    // Every SET reached the store: the benchmark's key is readable.
    assert_eq!(redis_cli(resp, &["exists", "key:__rand_int__"]), "1");
}

/// In a three-node cluster (N=3, R=2, W=2) RESP commands take the same
/// quorum path as binary requests: a SET through one node is read through
/// another, and writes and reads keep working with one node stopped.
#[test]
fn resp_commands_use_the_cluster_quorum_path() {
    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut attempt = 0u32;
    let port = loop {
        attempt += 1;
        let port = 20_000
            + (std::process::id()
                .wrapping_mul(7919)
                .wrapping_add(attempt * 331)
                % 25_000) as u16;
        let resp = port + 50;
        let free = (1..=3).all(|i| {
            [port, port + 1, port + 100]
                .iter()
                .all(|p| std::net::TcpListener::bind(format!("127.0.0.{i}:{p}")).is_ok())
                && std::net::TcpListener::bind(format!("127.0.1.{i}:{resp}")).is_ok()
        });
        if free {
            break port;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let seed = format!("127.0.0.1:{}", port + 100);
    let mut nodes = Vec::new();
    for (i, dir) in data.iter().enumerate() {
        let ip = format!("127.0.0.{}", i + 1);
        // RESP on 127.0.1.x: no test's client connections take ports there.
        let resp = format!("127.0.1.{}:{}", i + 1, port + 50);
        let mut args: Vec<&str> = common::FAST_CLUSTER_ARGS.to_vec();
        args.extend(["--resp-listen", &resp]);
        if i > 0 {
            args.extend(["--seeds", &seed]);
        }
        nodes.push(TestNode::start_at(
            &format!("{ip}:{port}"),
            dir.path(),
            1,
            &args,
        ));
    }
    common::wait_converged(&nodes, 3);
    let resp_of =
        |i: usize| -> SocketAddr { format!("127.0.1.{}:{}", i + 1, port + 50).parse().unwrap() };

    for i in 0..20 {
        let key = format!("c{i}");
        assert_eq!(redis_cli(resp_of(i % 3), &["set", &key, &key]), "OK");
        assert_eq!(redis_cli(resp_of((i + 1) % 3), &["get", &key]), key);
    }
    // Every primary holds the values: an R = all read through the binary
    // client finds each one.
    let mut client = Client::connect(nodes[2].listen, ClientOptions::default()).expect("connect");
    let all = Quorum {
        r: Some(dynakv::protocol::R_ALL),
        ..Quorum::DEFAULT
    };
    for i in 0..20 {
        let key = format!("c{i}");
        assert_eq!(
            client.get_with(key.as_bytes(), all).expect("get").values,
            vec![bytes::Bytes::from(key.clone())]
        );
    }
    // One node down: W=2 and R=2 are still met through the others.
    nodes[1].kill9();
    assert_eq!(redis_cli(resp_of(0), &["set", "while-down", "yes"]), "OK");
    assert_eq!(redis_cli(resp_of(2), &["get", "while-down"]), "yes");
    assert_eq!(redis_cli(resp_of(2), &["del", "c0"]), "1");
    assert_eq!(redis_cli(resp_of(0), &["exists", "c0"]), "0");
}

/// Whether the server closes `stream` (EOF) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0)) || matches!(stream.read(&mut byte), Ok(0))
}

/// The idle timeout on RESP connections: a silent connection and one that
/// trickles a command's bytes without completing it are closed, while one
/// that completes a command now and then stays open well past the timeout
/// (the watchdog re-arms on every completed command).
#[test]
fn resp_connections_idle_or_trickling_are_closed_and_active_ones_kept() {
    let (_node, resp) = start_with_resp_and(&["--idle-timeout-ms", "500"]);
    let mut silent = TcpStream::connect(resp).expect("connect");
    let mut slow = TcpStream::connect(resp).expect("connect");
    let mut active = TcpStream::connect(resp).expect("connect");
    active
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let began = Instant::now();
    // A bulk string promising 100 bytes, then one byte every 100 ms.
    slow.write_all(b"*2\r\n$4\r\nECHO\r\n$100\r\n")
        .expect("write");
    let mut slow_closed = false;
    while began.elapsed() < Duration::from_secs(2) {
        // The active connection completes a PING every 100 ms.
        active.write_all(b"PING\r\n").expect("active write");
        let mut pong = [0u8; 7];
        active
            .read_exact(&mut pong)
            .expect("PONG on the active connection");
        assert_eq!(&pong, b"+PONG\r\n");
        if !slow_closed
            && (slow.write_all(b"x").is_err()
                || closed_within(&mut slow, Duration::from_millis(100)))
        {
            slow_closed = true;
            assert!(
                began.elapsed() >= Duration::from_millis(400),
                "closed before the idle timeout: {:?}",
                began.elapsed()
            );
        }
        if slow_closed {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(slow_closed, "a trickling RESP connection was held for 2 s");
    assert!(
        closed_within(&mut silent, Duration::from_millis(100)),
        "a silent RESP connection was held for 2 s"
    );
    // Still served after four idle timeouts.
    active.write_all(b"PING\r\n").expect("active write");
    let mut pong = [0u8; 7];
    active.read_exact(&mut pong).expect("PONG after 2 s");
    assert_eq!(&pong, b"+PONG\r\n");
}
