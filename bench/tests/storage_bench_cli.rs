//! `storage_bench`'s command line: `--help` prints the usage and succeeds, and a bad
//! command line stops at once with the usage and exit status 2, measuring nothing
//! (it used to panic with a backtrace).

use std::process::Command;

fn storage_bench(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_storage_bench"))
        .args(args)
        .env("STORAGE_BENCH_NO_FIO", "1")
        .output()
        .expect("run storage_bench");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_prints_the_usage() {
    for flag in ["--help", "-h"] {
        let (code, stdout, _) = storage_bench(&[flag]);
        assert_eq!(code, 0, "{flag}");
        assert!(stdout.contains("usage: storage_bench"), "{flag}: {stdout}");
        assert!(stdout.contains("--runs N"), "{flag}: {stdout}");
    }
}

#[test]
fn a_bad_command_line_is_refused_with_the_usage() {
    let cases: [(&[&str], &str); 5] = [
        (&["--runs"], "--runs needs a value"),
        (&["--runs", "three"], "--runs needs a number, not \"three\""),
        (&["--runs", "0"], "--runs must be at least 1"),
        (&["--keys", "-5"], "--keys needs a number"),
        (&["--frobnicate", "1"], "unknown argument --frobnicate"),
    ];
    for (args, message) in cases {
        let (code, stdout, stderr) = storage_bench(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            stderr.contains("usage: storage_bench"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} measured something: {stdout}");
    }
}
