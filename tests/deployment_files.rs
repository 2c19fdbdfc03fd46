//! The deployment files in tools/ stay true: the example configuration
//! names every option and parses to exactly the built-in defaults, and the
//! systemd unit sets the limits docs/deployment.md promises.

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
