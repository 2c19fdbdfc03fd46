//! Helpers shared by the integration tests: run the binary, read its JSON.

#![allow(dead_code)]

use bytes::BytesMut;
use dynakv::protocol::{decode_request, encode_response, FrameDecoder, Limits, Request, Response};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynakv-bench"))
        .args(args)
        .output()
        .expect("the dynakv-bench binary runs")
}

/// Runs the binary, but gives up after `limit`: a run that would have hung
/// is killed and fails the test with what it printed so far, instead of
/// holding the test suite forever.
pub fn bench_within(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_dynakv-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dynakv-bench binary runs");
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for dynakv-bench"),
        Err(_) => {
            // SAFETY: a plain kill of the child this function started and
            // has not reaped yet (the waiting thread still holds it).
            unsafe { libc::kill(id as libc::pid_t, libc::SIGKILL) };
            let out = rx
                .recv()
                .expect("the waiting thread reports")
                .expect("wait for dynakv-bench");
            panic!(
                "dynakv-bench {args:?} still ran after {limit:?} (it hung); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub fn temp_json(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dynakv-bench-{}-{name}.json", std::process::id()))
}

/// The first number after `"key":` in hand-written JSON: top-level keys come
/// before the nested ones in the tool's output.
pub fn json_number(json: &str, key: &str) -> f64 {
    let pattern = format!("\"{key}\":");
    let start = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + pattern.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

pub fn run_json(args: &[&str], name: &str) -> String {
    let path = temp_json(name);
    let mut all: Vec<&str> = args.to_vec();
    let path_text = path.display().to_string();
    all.extend(["--json", &path_text, "--no-progress"]);
    let out = bench(&all);
    assert!(
        out.status.success(),
        "dynakv-bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let json = std::fs::read_to_string(&path).expect("JSON written");
    let _ = std::fs::remove_file(&path);
    json
}

/// Serves the dynakv protocol on `listener` with the real protocol module,
/// a thread per connection: every request frame is answered with
/// `answer(request)`, and the replies to one read leave in one write. A
/// frame that does not decode closes the connection.
pub fn serve_dynakv(
    listener: TcpListener,
    answer: impl Fn(Request) -> Response + Clone + Send + 'static,
) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let limits = Limits::default();
                let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
                let mut buf = BytesMut::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let mut out = Vec::new();
                loop {
                    let n = match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                        let Ok(request) = decode_request(frame, &limits) else {
                            return;
                        };
                        encode_response(request.id, &answer(request.request), &mut out);
                    }
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                    out.clear();
                }
            });
        }
    });
}
