//! Project rules, checked by `cargo test` rather than by memory (the
//! rust-analyzer "tidy" practice). See ARCHITECTURE.md, "Invariants".

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pure layers never touch glommio, sockets, or the clock: time,
/// randomness, disk and network reach them as inputs (design guide §3).
#[test]
fn pure_layers_are_sans_io() {
    let pure = [
        "src/ring",
        "src/version",
        "src/storage",
        "src/protocol",
        "src/replica",
        "src/membership",
        "src/antientropy",
        "src/observe",
        "src/resp",
    ];
    let forbidden = [
        "glommio",
        "Instant::now",
        "SystemTime::now",
        "std::net::TcpStream",
        "std::fs::",
        "thread_rng",
    ];
    let mut violations = Vec::new();
    let mut files = Vec::new();
    for dir in pure {
        rust_files(&root().join(dir), &mut files);
    }
    files.push(root().join("src/client/core.rs"));
    files.push(root().join("src/client/ops.rs"));
    for file in files.iter().filter(|f| f.exists()) {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests at the end of a file may build inputs from the clock.
        let production = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in production.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    violations.push(format!("{}:{}: uses `{word}`", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "pure layers must stay sans-IO:\n{}",
        violations.join("\n")
    );
}

/// No skipped tests and no placeholders in shipped code.
#[test]
fn no_ignored_tests_or_placeholders() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "bench/src", "bench/tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    let tidy = root().join("tests/tidy.rs");
    let patterns = [
        concat!("#[", "ignore"),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    let mut violations = Vec::new();
    for file in files.iter().filter(|f| **f != tidy) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for p in patterns {
                if line.contains(p) {
                    violations.push(format!("{}:{}: {p}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// Every module states its job in a `//!` header.
#[test]
fn modules_have_headers() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "generated"))
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header:\n{}",
        missing.join("\n")
    );
}

/// The documents the README links to exist.
#[test]
fn linked_documents_exist() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for doc in [
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "docs/configuration.md",
        "docs/storage.md",
        "docs/protocol.md",
        "docs/versioning.md",
        "docs/ring.md",
    ] {
        assert!(readme.contains(doc), "README does not link {doc}");
        assert!(root().join(doc).exists(), "{doc} is missing");
    }
}

/// The vendored glommio's sleep protocol keeps its two fences and no
/// `membarrier()` (vendor/README.md). `tests/glommio_wakeups.rs` shows that
/// wake-ups arrive, but on x86 a missing fence need not show there: the
/// locked compare-and-swap in `notify` orders it in hardware.
#[test]
fn the_vendored_glommio_sleeps_behind_fences() {
    // The text of `path` between the first `from` and the next `to`.
    let between = |path: &str, from: &str, to: &str| -> String {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        let (_, after) = text
            .split_once(from)
            .unwrap_or_else(|| panic!("{path}: {from}"));
        let (span, _) = after
            .split_once(to)
            .unwrap_or_else(|| panic!("{path}: {to}"));
        span.to_string()
    };
    let uring = "vendor/glommio/src/sys/uring.rs";
    assert!(
        between(
            uring,
            "self.notifier.prepare_to_sleep();",
            "process_remote_channels()"
        )
        .contains("fence(std::sync::atomic::Ordering::SeqCst)"),
        "no SeqCst fence between prepare_to_sleep and the last look at the queues"
    );
    let whole = std::fs::read_to_string(root().join(uring)).unwrap();
    assert!(!whole.contains("membarrier::heavy()"), "membarrier is back");
    assert!(
        between(
            "vendor/glommio/src/sys/mod.rs",
            "pub(crate) fn notify(&self, force: bool) {",
            ".should_notify"
        )
        .contains("fence(Ordering::SeqCst)"),
        "no SeqCst fence before notify reads should_notify"
    );
}
