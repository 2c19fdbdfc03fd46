//! The deployment files in tools/ stay true: the example configuration
//! names every option and parses to exactly the built-in defaults, and the
//! systemd unit sets the limits docs/deployment.md promises; the bench
//! scripts refuse a flag they do not know before starting anything.

use dynakv::config::ServerConfig;

#[test]
fn the_example_config_lists_every_option_at_its_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/dynakv.example.toml");
    let text = std::fs::read_to_string(&path).expect("tools/dynakv.example.toml");
    for option in ServerConfig::OPTIONS {
        let set = text.lines().any(|line| {
            let line = line.trim_start_matches("# ");
            line.starts_with(&format!("{option} = "))
        });
        assert!(set, "tools/dynakv.example.toml lacks {option}");
    }
    let parsed = ServerConfig::from_toml(&text, &path).expect("parses");
    assert_eq!(
        parsed,
        ServerConfig::default(),
        "a documented default is not the real one"
    );
}

#[test]
fn the_systemd_unit_sets_the_limits_and_a_clean_stop() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/dynakv.service");
    let unit = std::fs::read_to_string(path).expect("tools/dynakv.service");
    for line in [
        "LimitNOFILE=",
        "LimitMEMLOCK=infinity",
        "KillSignal=SIGTERM",
        "ExecStart=/usr/local/bin/dynakv server --config /etc/dynakv/dynakv.toml",
    ] {
        assert!(unit.contains(line), "tools/dynakv.service lacks {line}");
    }
}

/// An operator's typo (`--ceilng-only`) or `--help` once started a full
/// benchmark run of several minutes: every bench script must answer `--help`
/// with its docstring and refuse an unknown flag with exit status 2, before
/// it starts a server or creates a results directory.
#[test]
fn the_bench_scripts_answer_help_and_refuse_unknown_flags() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("dynakv-bench-flags-{}", std::process::id()));
    for (interpreter, script) in [
        ("python3", "bench-single-node.py"),
        ("python3", "bench-cores.py"),
        ("python3", "bench-cluster.py"),
        ("python3", "bench-background.py"),
        ("python3", "bench-availability.py"),
        ("bash", "bench-peers.sh"),
    ] {
        let run = |arg: &str| {
            std::process::Command::new(interpreter)
                .arg(root.join("tools").join(script))
                .arg(arg)
                // Where a script would write its results, so a run that got
                // past the flags would show up as a created directory.
                .env("OUT", &scratch)
                .env("DYNAKV", "/nonexistent/dynakv")
                .env("BENCH", "/nonexistent/dynakv-bench")
                .stdin(std::process::Stdio::null())
                .output()
                .expect("the interpreter runs")
        };
        let help = run("--help");
        assert_eq!(help.status.code(), Some(0), "{script} --help");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            text.contains("Usage:"),
            "{script} --help prints no usage: {text}"
        );
        let bad = run("--no-such-flag");
        assert_eq!(
            bad.status.code(),
            Some(2),
            "{script} accepted an unknown flag"
        );
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains("--no-such-flag"), "{script}: {err}");
        let created = scratch.exists();
        let _ = std::fs::remove_dir_all(&scratch);
        assert!(
            !created,
            "{script} created its results directory before checking its flags"
        );
    }
}
