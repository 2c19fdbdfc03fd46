//! The chaos soak tool in CI (issue 7, docs/chaos.md): a short run of
//! `dynakv-chaos` against a real five-node cluster with every fault kind on
//! a fixed seed must pass, and the same tool against servers in the
//! deliberately broken last-write-wins mode must report lost elements (the
//! checker can fail). Partition faults need root and `nft`, as in
//! `tests/cluster_partition.rs`; without them the tool skips those faults
//! and says so.

use std::process::Command;

const CHAOS: &str = env!("CARGO_BIN_EXE_dynakv-chaos");
const SERVER: &str = env!("CARGO_BIN_EXE_dynakv");

fn chaos(args: &[&str]) -> (i32, String) {
    let out = Command::new(CHAOS)
        .args(["--bin", SERVER])
        .args(args)
        .output()
        .expect("run dynakv-chaos");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn count(report: &str, label: &str) -> usize {
    report
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no '{label}' line in the report:\n{report}"))
}

#[test]
fn a_short_soak_with_every_fault_kind_loses_nothing() {
    let (code, report) = chaos(&[
        "--duration-s",
        "70",
        "--seed",
        "7",
        "--fault-every-s",
        "5",
        "--fault-for-s",
        "3",
        "--carts",
        "8",
    ]);
    assert_eq!(code, 0, "the soak failed:\n{report}");
    assert!(report.contains("result: PASS"), "{report}");
    assert_eq!(count(&report, "lost:"), 0, "{report}");
    // Every fault kind came up at least once on this seed and duration
    // (fourteen faults drawn from seven kinds).
    for kind in ["kill -9", "SIGSTOP", "clock of"] {
        assert!(report.contains(kind), "no '{kind}' fault:\n{report}");
    }
}

#[test]
fn the_checker_reports_lost_elements_when_replicas_drop_siblings() {
    let (code, report) = chaos(&[
        "--duration-s",
        "12",
        "--seed",
        "5",
        "--faults",
        "none",
        "--carts",
        "2",
        "--last-write-wins",
    ]);
    assert_eq!(
        code, 1,
        "the checker passed a last-write-wins store:\n{report}"
    );
    assert!(count(&report, "lost:") > 0, "{report}");
    assert!(report.contains("result: FAIL"), "{report}");
}
