//! Failures are counted and reported, never hidden: a server that accepts
//! connections but never answers produces timeouts and a non-zero exit.

mod common;

use common::bench;
use std::net::TcpListener;

#[test]
fn a_silent_server_times_out_and_the_run_fails_with_the_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and hold every connection without ever replying.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
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
