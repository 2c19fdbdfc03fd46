//! nftables filters that cut internode traffic between loopback addresses:
//! the partitions of the chaos tool (`tools/chaos/main.rs`) and of the
//! partition test (`tests/cluster_partition.rs`), which include this one file
//! so that the rules are written in one place.
//!
//! Needs root and `nft`. A filter lives in its own `inet` table, so removing
//! the table removes every rule it added and nothing else.

use std::io::Write;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};

/// One nftables table of drop rules for internode traffic.
pub struct InternodeFilter {
    table: String,
}

impl InternodeFilter {
    /// A filter in the table `inet NAME`; nothing is installed yet.
    pub fn new(name: String) -> InternodeFilter {
        InternodeFilter { table: name }
    }

    /// Whether this process may create nftables tables (root, `nft`).
    pub fn available(&self) -> bool {
        let table = &self.table;
        nft(&format!(
            "add table inet {table}\ndelete table inet {table}\n"
        ))
        .is_ok()
    }

    /// Adds rules that drop the TCP packets to or from a port in `ports`
    /// that the first address of each pair sends to the second (one
    /// direction: pass both pairs to cut a link both ways).
    pub fn drop_pairs(
        &self,
        pairs: &[(IpAddr, IpAddr)],
        ports: RangeInclusive<u16>,
    ) -> Result<(), String> {
        let (low, high) = (ports.start(), ports.end());
        let mut rules = String::new();
        for (from, to) in pairs {
            rules.push_str(&format!(
                "    ip saddr {from} ip daddr {to} tcp dport {low}-{high} drop\n    ip saddr {from} ip daddr {to} tcp sport {low}-{high} drop\n"
            ));
        }
        let table = &self.table;
        nft(&format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
        ))
    }

    /// Removes the table and every rule in it (nothing when none is there).
    pub fn clear(&self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
    }
}

/// Runs an nft script; the error is nft's own message.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
