//! Membership tests (§4.8): admin changes, deterministic merge, gossip
//! convergence, failure detection that never edits the member list.

use super::*;

fn join(id: u64) -> AdminChange {
    AdminChange::Join {
        node: NodeId(id),
        weight: 1,
        shards: 1,
    }
}

#[test]
fn admin_changes_bump_versions_and_are_validated() {
    let mut state = MembershipState::new();
    state.apply(join(1)).unwrap();
    state.apply(join(2)).unwrap();
    assert_eq!(
        state.apply(join(1)),
        Err(MembershipError::AlreadyMember(NodeId(1)))
    );
    assert_eq!(
        state.apply(AdminChange::Leave { node: NodeId(9) }),
        Err(MembershipError::UnknownNode(NodeId(9)))
    );
    let before = state.epoch();
    state
        .apply(AdminChange::SetCapacity {
            node: NodeId(2),
            weight: 4,
        })
        .unwrap();
    assert!(state.epoch() > before);
    assert_eq!(state.get(NodeId(2)).unwrap().weight, 4);
    state.apply(AdminChange::Leave { node: NodeId(1) }).unwrap();
    assert_eq!(state.active_members().len(), 1);
    assert_eq!(state.ring_members()[0].weight, 4);
}

#[test]
fn merge_is_commutative_associative_idempotent() {
    // Three views with concurrent changes to the same members.
    let mut base = MembershipState::new();
    base.apply(join(1)).unwrap();
    base.apply(join(2)).unwrap();
    let mut a = base.clone();
    a.apply(AdminChange::Leave { node: NodeId(1) }).unwrap();
    let mut b = base.clone();
    b.apply(AdminChange::SetCapacity {
        node: NodeId(1),
        weight: 3,
    })
    .unwrap();
    b.apply(join(3)).unwrap();
    let mut c = base.clone();
    c.apply(AdminChange::SetCapacity {
        node: NodeId(2),
        weight: 2,
    })
    .unwrap();
    let views = [a, b, c];
    let orders = [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]];
    let mut results = Vec::new();
    for order in orders {
        let mut merged = MembershipState::new();
        for index in order {
            merged.merge(&views[index]);
            merged.merge(&views[index]);
        }
        results.push(merged);
    }
    assert!(results.windows(2).all(|pair| pair[0] == pair[1]));
    // Equal versions are broken by the record order: Leaving beats Active.
    assert_eq!(
        results[0].get(NodeId(1)).unwrap().status,
        MemberStatus::Leaving
    );
    let ring = results[0].derive_ring(None, 16, 2).unwrap();
    assert_eq!(ring.q(), 16);
}

#[test]
fn state_and_messages_round_trip_and_garbage_never_panics() {
    let mut state = MembershipState::new();
    for id in 1..=5 {
        state.apply(join(id)).unwrap();
    }
    let mut bytes = Vec::new();
    state.encode(&mut bytes);
    assert_eq!(MembershipState::decode(&bytes), Ok(state.clone()));
    for cut in 0..bytes.len() {
        assert!(MembershipState::decode(&bytes[..cut]).is_err());
    }
    for message in [
        MembershipMessage::Push {
            state: state.clone(),
            ring: None,
            staged: StagedPlan::default(),
        },
        MembershipMessage::Push {
            state: state.clone(),
            ring: next_ring(&state, None, 64, 3),
            staged: StagedPlan {
                version: 9,
                author: NodeId(3),
                changes: vec![
                    join(7),
                    AdminChange::Leave { node: NodeId(1) },
                    AdminChange::SetCapacity {
                        node: NodeId(2),
                        weight: 3,
                    },
                    AdminChange::Remove { node: NodeId(4) },
                ],
            },
        },
        MembershipMessage::Pull {
            state,
            ring: None,
            staged: StagedPlan::default(),
        },
        MembershipMessage::Ping,
        MembershipMessage::Pong,
    ] {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        assert_eq!(MembershipMessage::decode(&bytes), Ok(message));
    }
    let mut x = 0x1234_5678u64;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let garbage: Vec<u8> = (0..(x % 80)).map(|i| (x >> (i % 56)) as u8).collect();
        let _ = MembershipMessage::decode(&garbage);
    }
}

/// Delivers every queued message among `machines` until none is left.
fn exchange(machines: &mut [Membership], now_ms: u64) {
    loop {
        let mut moved = false;
        for index in 0..machines.len() {
            while let Some((to, message)) = machines[index].poll_transmit() {
                moved = true;
                let from = machines[index].me();
                // A member without a machine here is a node not started.
                if let Some(target) = machines.get_mut((to.0 - 1) as usize) {
                    target.handle_message(now_ms, from, message);
                }
            }
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn gossip_spreads_an_admin_change_to_every_node() {
    // §4.8.1: a change made on one node reaches all by push-pull gossip,
    // and seeds keep nodes that only know the seeds from staying apart.
    let count = 6;
    let mut machines: Vec<Membership> = (1..=count)
        .map(|id| {
            let mut state = MembershipState::new();
            state.apply(join(id)).unwrap();
            Membership::new(
                NodeId(id),
                MembershipConfig::default(),
                vec![NodeId(1)],
                state,
                0,
            )
        })
        .collect();
    let mut random = 7u64;
    for round in 0..40u64 {
        let now_ms = round * 1_000;
        for machine in machines.iter_mut() {
            random = random
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            machine.handle_timeout(now_ms, random >> 11);
        }
        exchange(&mut machines, now_ms);
    }
    let first = machines[0].state().clone();
    assert_eq!(first.active_members().len(), count as usize);
    assert!(machines.iter().all(|m| *m.state() == first));
}

#[test]
fn failure_detection_steers_routing_only() {
    // §4.8.3: a silent peer is suspected, a peer heard again is not, and
    // neither changes the member list.
    let mut state = MembershipState::new();
    state.apply(join(1)).unwrap();
    state.apply(join(2)).unwrap();
    let mut m = Membership::new(
        NodeId(1),
        MembershipConfig::default(),
        vec![],
        state.clone(),
        0,
    );
    m.handle_timeout(0, 1);
    assert!(m.is_reachable(NodeId(2)));
    m.handle_timeout(4_000, 1);
    assert!(
        !m.is_reachable(NodeId(2)),
        "silent for longer than suspect_after_ms"
    );
    m.handle_heard_from(4_100, NodeId(2));
    assert!(m.is_reachable(NodeId(2)));
    m.handle_request_timeout(4_200, NodeId(2));
    assert!(!m.is_reachable(NodeId(2)));
    assert_eq!(*m.state(), state, "ownership never changes on suspicion");
    assert!(!m.take_state_changed());
}

#[test]
fn staged_plans_round_trip_and_a_message_without_one_carries_the_empty_plan() {
    let plan = StagedPlan {
        version: 4,
        author: NodeId(2),
        changes: vec![join(5), AdminChange::Leave { node: NodeId(1) }],
    };
    let mut bytes = Vec::new();
    plan.encode(&mut bytes);
    assert_eq!(StagedPlan::decode(&bytes), Ok(plan.clone()));
    for cut in 0..bytes.len() {
        assert!(StagedPlan::decode(&bytes[..cut]).is_err());
    }
    // A join with weight 0 is not a change anyone can stage.
    let mut bad = bytes.clone();
    let weight_at = 1 + 8 + 8 + 4 + 1 + 8;
    bad[weight_at..weight_at + 4].copy_from_slice(&0u32.to_le_bytes());
    assert!(StagedPlan::decode(&bad).is_err());
    // A push encoded by a node that predates staged plans: state and ring only.
    let mut state = MembershipState::new();
    state.apply(join(1)).unwrap();
    let mut old = vec![1u8];
    state.encode(&mut old);
    old.push(0);
    assert_eq!(
        MembershipMessage::decode(&old),
        Ok(MembershipMessage::Push {
            state,
            ring: None,
            staged: StagedPlan::default(),
        })
    );
}

fn ring_machine(id: u64, state: &MembershipState) -> Membership {
    Membership::new(
        NodeId(id),
        MembershipConfig::default(),
        vec![NodeId(1)],
        state.clone(),
        0,
    )
    .with_ring(64, 3, None)
}

#[test]
fn staging_changes_nothing_until_commit_and_validates_each_change() {
    let mut state = MembershipState::new();
    for id in 1..=3 {
        state.apply(join(id)).unwrap();
    }
    let mut m = ring_machine(1, &state);
    let ring = m.ring().cloned().unwrap();
    let _ = m.take_state_changed();
    assert_eq!(m.commit_staged(), Err(MembershipError::NothingStaged));
    assert_eq!(m.stage(join(4)), Ok(1));
    assert_eq!(
        m.stage(join(4)),
        Err(MembershipError::AlreadyMember(NodeId(4))),
        "checked on top of what is staged"
    );
    assert_eq!(m.stage(AdminChange::Leave { node: NodeId(2) }), Ok(2));
    assert_eq!(
        m.stage(AdminChange::Leave { node: NodeId(9) }),
        Err(MembershipError::UnknownNode(NodeId(9)))
    );
    assert_eq!(*m.state(), state, "staging edits no member");
    assert_eq!(m.ring(), Some(&ring), "staging moves no partition");
    assert!(!m.take_state_changed());
    assert!(m.take_staged_changed());
    assert_eq!(m.staged().version, 2);
    assert_eq!(m.staged().author, NodeId(1));

    let applied = m.commit_staged().unwrap();
    assert_eq!(applied.len(), 2);
    assert!(m.staged().changes.is_empty());
    assert_eq!(m.staged().version, 3);
    assert!(m.take_state_changed() && m.take_staged_changed());
    let after = m.ring().unwrap();
    assert_eq!(after.ring.epoch, ring.ring.epoch + 1, "one claim for both");
    assert!(after.ring.partitions_of_node(NodeId(2)).is_empty());
    assert!(!after.ring.partitions_of_node(NodeId(4)).is_empty());

    assert_eq!(m.stage(join(5)), Ok(1));
    assert_eq!(m.clear_staged(), 1);
    assert!(m.staged().changes.is_empty());
    assert_eq!(m.staged().version, 5);
    for id in 10..10 + STAGED_CHANGES_MAX as u64 {
        m.stage(join(id)).unwrap();
    }
    assert_eq!(m.stage(join(999)), Err(MembershipError::TooManyStaged));
}

#[test]
fn a_staged_plan_spreads_by_gossip_and_any_node_commits_it_once() {
    let mut state = MembershipState::new();
    for id in 1..=4 {
        state.apply(join(id)).unwrap();
    }
    let mut machines: Vec<Membership> = (1..=4).map(|id| ring_machine(id, &state)).collect();
    let epoch = machines[0].ring().unwrap().ring.epoch;
    machines[0]
        .stage(AdminChange::SetCapacity {
            node: NodeId(3),
            weight: 4,
        })
        .unwrap();
    machines[1]
        .stage(AdminChange::Leave { node: NodeId(4) })
        .unwrap();
    let mut random = 11u64;
    let mut rounds = |machines: &mut Vec<Membership>, from: u64, to: u64| {
        for round in from..to {
            for machine in machines.iter_mut() {
                random = random
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                machine.handle_timeout(round * 1_000, random >> 11);
            }
            exchange(machines, round * 1_000);
        }
    };
    rounds(&mut machines, 0, 20);
    // Two concurrent edits at version 1: the same one wins everywhere.
    let plan = machines[0].staged().clone();
    assert!(machines.iter().all(|m| *m.staged() == plan));
    assert_eq!(plan.version, 1);
    assert_eq!(plan.author, NodeId(2), "equal versions: the greater author");
    assert!(machines
        .iter()
        .all(|m| m.ring().unwrap().ring.epoch == epoch));

    // Node 3 stages one more and node 4 commits what it has heard.
    machines[2].stage(join(5)).unwrap();
    rounds(&mut machines, 20, 40);
    assert_eq!(machines[3].staged().changes.len(), 2);
    machines[3].commit_staged().unwrap();
    // Node 1 commits the same plan before hearing of node 4's commit.
    machines[0].commit_staged().unwrap();
    rounds(&mut machines, 40, 60);
    let first = machines[0].ring().cloned().unwrap();
    assert_eq!(
        first.ring.epoch,
        epoch + 1,
        "the plan moved partitions once"
    );
    for m in &machines {
        assert_eq!(m.ring(), Some(&first));
        assert_eq!(m.state(), machines[0].state());
        assert!(m.staged().changes.is_empty());
    }
    let members = machines[0].state();
    assert_eq!(
        members.get(NodeId(4)).unwrap().status,
        MemberStatus::Leaving
    );
    assert_eq!(members.get(NodeId(5)).unwrap().status, MemberStatus::Active);
}
