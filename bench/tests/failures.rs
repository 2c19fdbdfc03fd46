//! Failures are counted and reported, never hidden: a server that accepts
//! connections but never answers produces timeouts and a non-zero exit, and
//! a run that cannot be performed ends in seconds with the reason, never
//! waits forever (issue #4).

mod common;

use common::{bench, bench_within, serve_dynakv};
use dynakv::protocol::{Request, Response, RoutingNode, RoutingTable};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Longer than any of these runs may take once they end as they should;
/// a run still going then has hung.
const HANG_LIMIT: Duration = Duration::from_secs(30);

/// Accepts every connection on `listener` and holds it open without ever
/// reading or replying.
fn hold_silently(listener: TcpListener) {
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
}

fn bind() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

/// A dynakv "node" whose node port serves a routing table of two shards
/// (alternate partitions, N = 2 so each partition fails over to the other)
/// whose ports accept connections and never answer. Returns the node port.
fn node_with_silent_shards() -> u16 {
    let (node, node_port) = bind();
    let (s0, port0) = bind();
    let (s1, port1) = bind();
    let table = RoutingTable {
        epoch: 1,
        q: 8,
        n_val: 2,
        nodes: vec![RoutingNode {
            id: 1,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: node_port,
            shard_ports: vec![port0, port1],
            weight: 2,
        }],
        partitions: (0..8u16)
            .map(|p| vec![(0u32, p % 2), (0u32, (p + 1) % 2)])
            .collect(),
    };
    serve_dynakv(node, move |request| {
        assert!(matches!(request, Request::GetRoutingTable), "{request:?}");
        Response::RoutingTable(table.clone())
    });
    hold_silently(s0);
    hold_silently(s1);
    node_port
}

/// Asserts a run ended by itself, soon, with a non-zero exit and one line
/// on stderr containing `reason`.
fn assert_failed_with(out: &std::process::Output, started: Instant, reason: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(reason), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
}

#[test]
fn a_silent_server_times_out_and_the_run_fails_with_the_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    hold_silently(listener);
    let target = format!("redis://127.0.0.1:{port}");
    let out = bench(&[
        "--target",
        &target,
        "--workload",
        "ping",
        "--duration",
        "2s",
        "--connections",
        "3",
        "--timeout",
        "200ms",
        "--no-progress",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
}

/// The hang seen in the field: against a cluster a client fails over when a
/// connection times out, and used to be left with free pipeline slots but
/// never asked to fill them. A load phase (which ends only when every key is
/// written) or an `--ops` run then waited forever with every socket shut
/// down. Now the client tries the next replica, finds none, stops, and the
/// run fails with the reason.
#[test]
fn a_cluster_whose_shards_never_answer_fails_the_load_phase_instead_of_hanging() {
    let stderr = run_against_silent_shards(&["--workload", "ycsb-a", "--load", "--keys", "100"]);
    assert!(stderr.contains("load phase"), "{stderr}");
}

#[test]
fn an_ops_run_against_silent_shards_ends_with_the_reason() {
    run_against_silent_shards(&["--workload", "ycsb-b", "--no-load", "--threads", "2"]);
}

/// An `--ops` run with `flags` against `node_with_silent_shards`: asserts it
/// failed soon with a request timeout as the reason; returns its stderr.
fn run_against_silent_shards(flags: &[&str]) -> String {
    let port = node_with_silent_shards();
    let target = format!("dynakv://127.0.0.1:{port}");
    let mut args = vec![
        "--target",
        &target,
        "--ops",
        "1000",
        "--connections",
        "2",
        "--pipeline",
        "2",
        "--timeout",
        "200ms",
        "--no-progress",
    ];
    args.extend_from_slice(flags);
    let started = Instant::now();
    let out = bench_within(&args, HANG_LIMIT);
    assert_failed_with(&out, started, "timed out");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A node port that accepts and never sends the routing table: the fetch
/// has a deadline.
#[test]
fn a_node_that_never_sends_the_routing_table_fails_the_run() {
    let (listener, port) = bind();
    hold_silently(listener);
    fails_soon_with_short_connect_timeout(
        &format!("dynakv://127.0.0.1:{port}"),
        "did not send the routing table",
    );
}

/// A one-second run against `target` with a 300 ms connect timeout: asserts
/// it failed soon, naming `reason`.
fn fails_soon_with_short_connect_timeout(target: &str, reason: &str) {
    let started = Instant::now();
    let out = bench_within(
        &[
            "--target",
            target,
            "--duration",
            "1s",
            "--connect-timeout",
            "300ms",
            "--no-progress",
        ],
        HANG_LIMIT,
    );
    assert_failed_with(&out, started, reason);
}

/// A listener whose accept queue is full drops further SYNs, as a
/// firewalled or overloaded port does: the connect times out.
#[test]
fn a_port_that_drops_syns_fails_the_run_at_the_connect_timeout() {
    // SAFETY: plain socket syscalls on a descriptor owned right away.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(fd)
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the address is a valid sockaddr_in of `size` bytes.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            size,
        )
    };
    assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
    // A backlog of 0 holds one connection that is never accepted; the
    // listener then drops every further SYN.
    // SAFETY: plain syscall on the descriptor above.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 0) }, 0);
    let listener = TcpListener::from(fd);
    let port = listener.local_addr().expect("addr").port();
    let _queued = TcpStream::connect(("127.0.0.1", port)).expect("the first connect is queued");
    fails_soon_with_short_connect_timeout(&format!("redis://127.0.0.1:{port}"), "cannot connect");
    drop(listener);
}
