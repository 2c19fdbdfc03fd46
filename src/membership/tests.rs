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
        },
        MembershipMessage::Push {
            state: state.clone(),
            ring: next_ring(&state, None, 64, 3),
        },
        MembershipMessage::Pull { state, ring: None },
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
                machines[(to.0 - 1) as usize].handle_message(now_ms, from, message);
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
