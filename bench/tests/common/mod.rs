//! Helpers shared by the integration tests: run the binary, read its JSON.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynakv-bench"))
        .args(args)
        .output()
        .expect("the dynakv-bench binary runs")
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
