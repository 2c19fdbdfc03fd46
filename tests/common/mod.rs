//! Test harness for multi-process tests: starts real `dynakv server`
//! processes on loopback with their own data directories, waits for their
//! `ready` line, and kills them on drop. Clusters put each node on its own
//! loopback IP (127.0.0.1, 127.0.0.2, …) so that they look like separate
//! hosts, all on the same port numbers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_dynakv");

/// A running server process.
pub struct TestNode {
    pub child: Option<Child>,
    pub listen: SocketAddr,
    pub shards: usize,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// The kernel's ephemeral port range (`ip_local_port_range`), from which it
/// picks the local port of every outgoing connection; 32768-60999 when unknown.
fn ephemeral_ports() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// A pseudo-random port base per attempt, spread by pid so parallel test
/// processes rarely collide; a collision only costs a retry. The base and
/// the ports a node derives from it (up to base + 199: shard ports, the
/// internode ports from base + 100) stay outside the kernel's ephemeral
/// range where it leaves room: otherwise an outgoing connection of another
/// test may take a node's port while the node is stopped for a restart, and
/// the restart cannot listen again ("Address already in use", seen in CI).
fn candidate_port(attempt: u32) -> u16 {
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(attempt.wrapping_mul(40_503));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let spread = seed ^ nanos;
    let (low, high) = ephemeral_ports();
    let (from, to) = if low >= 10_000 + 200 {
        (low.min(20_000).saturating_sub(10_000), low - 200)
    } else if high + 2_000 <= 65_535 - 200 {
        (high + 1, 65_535 - 200)
    } else {
        (20_000, 50_000)
    };
    (from + spread % (to - from)) as u16
}

impl TestNode {
    /// Starts a node with `shards` shards in a fresh temporary data directory.
    pub fn start(shards: usize, extra_args: &[&str]) -> TestNode {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().to_path_buf();
        let mut node = TestNode::start_in(&data_dir, shards, extra_args);
        node._tmp = Some(tmp);
        node
    }

    /// Starts a node on an existing data directory (kept by the caller).
    pub fn start_in(data_dir: &Path, shards: usize, extra_args: &[&str]) -> TestNode {
        for attempt in 0..20 {
            let port = candidate_port(attempt);
            let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut node = TestNode {
                child: None,
                listen,
                shards,
                data_dir: data_dir.to_path_buf(),
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                _tmp: None,
            };
            match node.spawn() {
                Ok(()) => return node,
                Err(e) if e.contains("cannot listen") || e.contains("in use") => continue,
                Err(e) => panic!("server failed to start: {e}"),
            }
        }
        panic!("no free port range found for a test node");
    }

    /// Starts a node on a given address and data directory (kept by the
    /// caller), panicking if it cannot start.
    pub fn start_at(listen: &str, data_dir: &Path, shards: usize, extra_args: &[&str]) -> TestNode {
        let mut node = TestNode {
            child: None,
            listen: listen.parse().expect("listen address"),
            shards,
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _tmp: None,
        };
        if let Err(e) = node.spawn() {
            panic!("server on {listen} failed to start: {e}");
        }
        node
    }

    /// Makes the node own (and delete on drop) its temporary directory.
    pub fn keep_dir(&mut self, tmp: tempfile::TempDir) {
        self._tmp = Some(tmp);
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "server".to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--shards".into(),
            self.shards.to_string(),
            "--pin-shards".into(),
            "false".into(),
            "--io-memory-bytes".into(),
            (256 * 1024).to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Spawns the process and waits for its `ready` line (or its death).
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(BIN)
            .args(self.args())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {BIN}: {e}"))?;
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let tx2 = tx.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("DYNAKV_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                log.push_str(&line);
                log.push('\n');
                if line.starts_with("dynakv:") {
                    let _ = tx2.send(Err(log.clone()));
                }
            }
            log
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("dynakv ready") {
                    let _ = tx.send(Ok(()));
                }
            }
            // The process is gone: its stderr ends too. Report what it said
            // (a "cannot listen" there lets the caller retry another port).
            let log = stderr_reader.join().unwrap_or_default();
            let _ = tx.send(Err(format!("server exited before it was ready: {log}")));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {
                self.child = Some(child);
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("server not ready within 60 s".into())
            }
        }
    }

    /// `kill -9`: nothing is flushed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node is running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("wait")
    }

    /// Starts the (stopped) node again on the same directory and ports,
    /// once, without the retries of `restart`.
    #[allow(dead_code)]
    pub fn start_again_once(&mut self) -> Result<(), String> {
        self.spawn()
    }

    /// Starts the node again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill9();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => {
                    // The old process's ports may linger for a moment.
                    last = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("restart failed: {last}");
    }

    pub fn shard_port(&self, shard: usize) -> u16 {
        self.listen.port() + 1 + shard as u16
    }

    /// Runs the `dynakv` CLI against this node; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        cli_at(self.listen, args)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn cli_at(node: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--node")
        .arg(node.to_string())
        .output()
        .expect("run dynakv cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Extracts a string field from the CLI's one-line JSON output.
pub fn json_field(json: &str, field: &str) -> Option<String> {
    let start = json.find(&format!("\"{field}\": \""))? + field.len() + 5;
    let end = json[start..].find('"')? + start;
    Some(json[start..end].to_string())
}

/// Extracts the `values` array of `dynakv get --json` (values without quotes or escapes).
pub fn json_values(json: &str) -> Vec<String> {
    let start = json.find("\"values\": [").expect("values") + 11;
    let end = json[start..].find(']').expect("]") + start;
    let inner = &json[start..end];
    if inner.trim().is_empty() {
        return Vec::new();
    }
    let mut values: Vec<String> = inner
        .split(", ")
        .map(|v| v.trim_matches('"').to_string())
        .collect();
    values.sort();
    values
}

/// Timing options that make a test cluster notice failures in well under a
/// second (the defaults are Dynamo's: gossip every second).
pub const FAST_CLUSTER_ARGS: &[&str] = &[
    "--gossip-interval-ms",
    "100",
    "--suspect-after-ms",
    "600",
    "--replica-timeout-ms",
    "200",
    "--request-timeout-ms",
    "1500",
    "--hint-replay-interval-ms",
    "200",
];

impl TestNode {
    /// The internode (admin) address of shard 0: port + 100 by default.
    pub fn internode(&self) -> SocketAddr {
        SocketAddr::new(self.listen.ip(), self.listen.port() + 100)
    }

    /// Runs `dynakv admin ARGS --node <internode>`.
    pub fn admin(&self, args: &[&str]) -> (i32, String, String) {
        cli_at(self.internode(), &[&["admin"], args].concat())
    }

    /// Parsed `admin status --json`: (epoch, member count, reachable
    /// members, hints held), or None when the node does not answer.
    pub fn status(&self) -> Option<ClusterStatus> {
        let (code, out, _) = self.admin(&["status", "--json"]);
        if code != 0 {
            return None;
        }
        let number = |field: &str| -> Option<u64> {
            let start = out.find(&format!("\"{field}\": "))? + field.len() + 4;
            let digits: String = out[start..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        };
        Some(ClusterStatus {
            epoch: number("epoch")?,
            hints: number("hints")?,
            keys: number("keys")?,
            members: out.matches("\"id\": ").count(),
            reachable: out.matches("\"reachable\": true").count(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub epoch: u64,
    pub members: usize,
    pub reachable: usize,
    pub hints: u64,
    pub keys: u64,
}

/// Starts `count` nodes on 127.0.0.1 … 127.0.0.count, all on one port, each
/// seeded with the first node's internode address, and waits until every
/// node knows every member and all agree on the ring epoch.
pub fn start_cluster(count: usize, shards: usize, extra_args: &[&str]) -> Vec<TestNode> {
    'attempt: for attempt in 0..20 {
        // `candidate_port` leaves room for the internode ports.
        let port = candidate_port(attempt + 7);
        let seed = format!("127.0.0.1:{}", port + 100);
        let mut nodes = Vec::new();
        for i in 0..count {
            let tmp = tempfile::tempdir().expect("tempdir");
            let mut args: Vec<String> = FAST_CLUSTER_ARGS.iter().map(|s| s.to_string()).collect();
            if i > 0 {
                args.extend(["--seeds".to_string(), seed.clone()]);
            }
            args.extend(extra_args.iter().map(|s| s.to_string()));
            let mut node = TestNode {
                child: None,
                listen: format!("127.0.0.{}:{port}", i + 1).parse().unwrap(),
                shards,
                data_dir: tmp.path().to_path_buf(),
                extra_args: args,
                _tmp: Some(tmp),
            };
            match node.spawn() {
                Ok(()) => nodes.push(node),
                Err(e) if e.contains("cannot listen") || e.contains("in use") => continue 'attempt,
                Err(e) => panic!("server failed to start: {e}"),
            }
        }
        wait_converged(&nodes, count);
        return nodes;
    }
    panic!("no free port for a test cluster");
}

/// Waits (up to 20 s) until every running node lists `members` members, all
/// reachable, with one ring epoch.
pub fn wait_converged(nodes: &[TestNode], members: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let statuses: Vec<Option<ClusterStatus>> = nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.status())
            .collect();
        let converged = statuses
            .iter()
            .all(|s| s.is_some_and(|s| s.members == members && s.reachable == members))
            && statuses
                .windows(2)
                .all(|w| w[0].map(|s| s.epoch) == w[1].map(|s| s.epoch));
        if converged {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cluster did not converge: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The unsigned number after `"field": ` in a JSON text (the admin
/// commands' `--json` output).
pub fn json_number(text: &str, field: &str) -> Option<u64> {
    let start = text.find(&format!("\"{field}\": "))? + field.len() + 4;
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// Each node's ring epoch from `admin status` (None where it did not answer).
pub fn epochs(nodes: &[TestNode]) -> Vec<Option<u64>> {
    nodes.iter().map(|n| n.status().map(|s| s.epoch)).collect()
}

/// Waits (up to `secs`) until `check` holds, polling every 100 ms.
pub fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw protocol connection to the node's client port, with a read timeout
/// so that a missing reply fails the test instead of hanging it.
pub fn connect(node: &TestNode) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(node.listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `requests` (ids 0, 1, ...) in one write and returns every reply,
/// in id order.
pub fn pipeline(
    stream: &mut std::net::TcpStream,
    requests: Vec<dynakv::protocol::Request>,
) -> Vec<(u64, dynakv::protocol::Response)> {
    let mut wire = Vec::new();
    let count = requests.len();
    for (id, request) in requests.into_iter().enumerate() {
        let frame = dynakv::protocol::RequestFrame {
            id: id as u64,
            epoch: 0,
            request,
        };
        dynakv::protocol::encode_request(&frame, &mut wire);
    }
    std::io::Write::write_all(stream, &wire).unwrap();
    let mut decoder = dynakv::protocol::FrameDecoder::new(8 << 20);
    let mut buffer = bytes::BytesMut::new();
    let mut chunk = [0u8; 65536];
    let mut replies = Vec::with_capacity(count);
    while replies.len() < count {
        let Some(frame) = decoder.decode(&mut buffer).unwrap() else {
            let n = std::io::Read::read(stream, &mut chunk).unwrap();
            assert!(n > 0, "server closed with {} replies", replies.len());
            buffer.extend_from_slice(&chunk[..n]);
            continue;
        };
        replies.push(
            dynakv::protocol::decode_response(frame, &dynakv::protocol::Limits::default()).unwrap(),
        );
    }
    replies.sort_by_key(|(id, _)| *id);
    replies
}
