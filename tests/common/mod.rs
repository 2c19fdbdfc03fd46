//! Test harness for multi-process tests: starts real `dynakv server`
//! processes on loopback with their own data directories, waits for their
//! `ready` line, and kills them on drop.
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

/// A pseudo-random port base per attempt, spread by pid so parallel test
/// processes rarely collide; a collision only costs a retry.
fn candidate_port(attempt: u32) -> u16 {
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(attempt.wrapping_mul(40_503));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    20_000 + ((seed ^ nanos) % 30_000) as u16
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
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("dynakv ready") {
                    let _ = tx.send(Ok(()));
                }
            }
            let _ = tx.send(Err("server exited before it was ready".into()));
        });
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("DYNAKV_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                log.push_str(&line);
                log.push('\n');
                if line.contains("dynakv:") {
                    let _ = tx2.send(Err(log.clone()));
                }
            }
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
