//! Scale by simulation (issue 5): how many push-pull gossip rounds (§4.8)
//! until every node of a large cluster has seen one administrator change.
//! Push-pull epidemic spread should take O(log n) rounds; the test asserts a
//! generous logarithmic bound and, with `DYNAKV_GOSSIP_REPORT=1`, prints the
//! measured table (recorded in docs/membership.md).

use std::collections::VecDeque;

use dynakv::membership::{
    AdminChange, Membership, MembershipConfig, MembershipMessage, MembershipState, NodeId,
};

/// splitmix64: a tiny seeded generator, so every run is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Returns the number of gossip rounds until all `n` nodes hold the same state.
fn rounds_to_agree(n: usize, seed: u64) -> usize {
    let config = MembershipConfig {
        gossip_interval_ms: 1000,
        suspect_after_ms: 3000,
        seed_round_one_in: 4,
    };
    let mut state = MembershipState::new();
    for i in 0..n as u64 {
        state
            .apply(AdminChange::Join {
                node: NodeId(i + 1),
                weight: 2,
                shards: 2,
            })
            .expect("join");
    }
    let seeds = vec![NodeId(1), NodeId(2), NodeId(3)];
    let mut nodes: Vec<Membership> = (0..n as u64)
        .map(|i| {
            Membership::new(
                NodeId(i + 1),
                config.clone(),
                seeds.clone(),
                state.clone(),
                0,
            )
        })
        .collect();
    // One change, made on one node.
    nodes[n / 2]
        .admin(AdminChange::SetCapacity {
            node: NodeId(1),
            weight: 7,
        })
        .expect("admin");
    let target = nodes[n / 2].state().clone();
    let mut rng = Rng(seed);
    for round in 1..=200 {
        let now = round as u64 * 1000;
        let mut wire: VecDeque<(NodeId, NodeId, MembershipMessage)> = VecDeque::new();
        for node in nodes.iter_mut() {
            node.handle_timeout(now, rng.next());
            while let Some((to, message)) = node.poll_transmit() {
                // Heartbeats carry no membership state; leaving them out keeps
                // the simulation of a 1,000-node cluster cheap.
                if matches!(
                    message,
                    MembershipMessage::Push { .. } | MembershipMessage::Pull { .. }
                ) {
                    wire.push_back((node.me(), to, message));
                }
            }
        }
        // Deliver everything sent this round, and the answers it provokes.
        while let Some((from, to, message)) = wire.pop_front() {
            let receiver = &mut nodes[(to.0 - 1) as usize];
            receiver.handle_message(now, from, message);
            while let Some((reply_to, reply)) = receiver.poll_transmit() {
                if matches!(
                    reply,
                    MembershipMessage::Push { .. } | MembershipMessage::Pull { .. }
                ) {
                    wire.push_back((receiver.me(), reply_to, reply));
                }
            }
        }
        if nodes.iter().all(|node| *node.state() == target) {
            return round;
        }
    }
    panic!("{n} nodes did not agree within 200 rounds (seed {seed})");
}

#[test]
fn gossip_spreads_a_change_in_logarithmic_rounds() {
    let report = std::env::var_os("DYNAKV_GOSSIP_REPORT").is_some();
    if report {
        println!("| nodes | log2(n) | rounds (seeds 1..5) | max |");
        println!("|---|---|---|---|");
    }
    for n in [10usize, 100, 1000] {
        let rounds: Vec<usize> = (1..=5).map(|seed| rounds_to_agree(n, seed)).collect();
        let max = *rounds.iter().max().unwrap();
        let log2 = (n as f64).log2();
        if report {
            println!("| {n} | {log2:.1} | {rounds:?} | {max} |");
        }
        assert!(
            (max as f64) <= 3.0 * log2 + 4.0,
            "{n} nodes took {max} rounds (> 3 log2 n + 4): {rounds:?}"
        );
    }
}
