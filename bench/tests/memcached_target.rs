//! Runs the binary against a real `memcached` (started here when it is on
//! PATH): clean runs have no errors, and error replies are counted.

mod common;

use common::{free_port, json_number, run_json};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Memcached {
    child: Child,
    port: u16,
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_memcached() -> Option<Memcached> {
    let port = free_port();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let child = Command::new("memcached")
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-u",
            &user,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("memcached is not on PATH; the memcached checks did not run");
        return None;
    };
    let server = Memcached { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "memcached did not start listening on {port}"
        );
        std::thread::yield_now();
    }
    Some(server)
}

#[test]
fn memcached_runs_count_hits_and_error_replies() {
    let Some(server) = start_memcached() else {
        return;
    };
    let target = format!("memcache://127.0.0.1:{}", server.port);
    let json = run_json(
        &[
            "--target",
            &target,
            "--workload",
            "ycsb-f",
            "--duration",
            "1s",
            "--connections",
            "4",
            "--pipeline",
            "2",
            "--keys",
            "200",
        ],
        "ycsb-f",
    );
    assert!(json_number(&json, "ops") > 0.0, "{json}");
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
    assert!(json.contains("\"rmw\":{"), "{json}");

    // memcached refuses items over its 1 MiB limit with SERVER_ERROR; a mix
    // of small and oversized puts must report the refusals as error replies.
    let json = run_json(
        &[
            "--target",
            &target,
            "--workload",
            "put",
            "--ops",
            "200",
            "--connections",
            "2",
            "--value-size",
            "1-2048k",
        ],
        "oversize",
    );
    let errors = json_number(&json, "error_replies");
    let ops = json_number(&json, "ops");
    assert!(errors > 0.0 && ops > 0.0, "{json}");
    assert_eq!(errors + ops, 200.0, "{json}");
}
