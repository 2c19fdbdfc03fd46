//! Differential test of `version::plan_update` (the in-place put's update
//! straight from the stored encoding) against the reference path it
//! replaces: `SiblingSet::decode`, `update`, `encode`. Over random stored
//! sets (built by puts with and without contexts, merges, a pruned floor),
//! random contexts (the set's own, an older one, a foreign one, empty,
//! tombstones) and random writers, whenever the plan answers it must give
//! the same bytes, clock, tombstone flag and error; it must answer for the
//! common shapes (this is checked too, so a plan that always declines fails);
//! and it must decline or agree on damaged stored bytes.
//!
//! Cases: 256 by default, `PROPTEST_CASES` overrides.

use bytes::Bytes;
use dynakv::version::{
    plan_update, ActorId, SiblingSet, Value, VersionVector, PLAN_ENTRIES_MAX, PLAN_SIBLINGS_MAX,
};
use proptest::prelude::*;

#[path = "support/proptest_config.rs"]
mod proptest_config;
use proptest_config::config;

#[derive(Clone, Debug)]
enum Step {
    /// A put by `actor` with the set's current context, or none.
    Put {
        actor: ActorId,
        with_context: bool,
        value: Option<Vec<u8>>,
    },
    /// A merge with a side set that got blind puts.
    MergeSide,
    PutSide {
        actor: ActorId,
        value: Option<Vec<u8>>,
    },
}

fn actor_strategy() -> impl Strategy<Value = ActorId> {
    prop_oneof![0u64..6, any::<u64>(), Just(u64::MAX)]
}

fn value_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..300))
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (actor_strategy(), any::<bool>(), value_strategy())
            .prop_map(|(actor, with_context, value)| Step::Put { actor, with_context, value }),
        1 => Just(Step::MergeSide),
        2 => (actor_strategy(), value_strategy()).prop_map(|(actor, value)| Step::PutSide { actor, value }),
    ]
}

fn value_of(value: &Option<Vec<u8>>) -> Value {
    match value {
        Some(bytes) => Value::Data(Bytes::from(bytes.clone())),
        None => Value::Tombstone,
    }
}

/// The set after `steps`, and every context it had on the way.
fn build(steps: &[Step]) -> (SiblingSet, Vec<VersionVector>) {
    let mut set = SiblingSet::new();
    let mut side = SiblingSet::new();
    let mut contexts = vec![VersionVector::new()];
    for step in steps {
        match step {
            Step::Put {
                actor,
                with_context,
                value,
            } => {
                let context = if *with_context {
                    set.context()
                } else {
                    VersionVector::new()
                };
                // A refused put (too many siblings) leaves the set as it was.
                let _ = set.update(&context, *actor, value_of(value));
            }
            Step::MergeSide => {
                let _ = set.merge(&side);
            }
            Step::PutSide { actor, value } => {
                let _ = side.update(&VersionVector::new(), *actor, value_of(value));
                contexts.push(side.context());
            }
        }
        contexts.push(set.context());
    }
    (set, contexts)
}

fn encoded(set: &SiblingSet) -> Vec<u8> {
    let mut out = Vec::new();
    set.encode(&mut out);
    out
}

/// `bytes` (an encoding with floor 0) with the pruned-counter floor set to
/// `floor`, as if entries had been pruned from the set.
fn with_floor(bytes: &[u8], floor: u64) -> Vec<u8> {
    assert_eq!(bytes[1], 0, "built sets have no floor");
    let mut out = vec![bytes[0]];
    let mut rest = floor;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&bytes[2..]);
    out
}

/// An update's encoding, clock and tombstone flag.
type Updated = (Vec<u8>, Vec<(ActorId, u64)>, bool);

/// The reference: decode (or the empty set), update, encode.
fn reference(
    stored: Option<&[u8]>,
    context: &VersionVector,
    actor: ActorId,
    value: &Value,
) -> Result<Result<Updated, String>, ()> {
    let mut set = match stored {
        None => SiblingSet::new(),
        Some(bytes) => SiblingSet::decode(bytes).map_err(|_| ())?,
    };
    Ok(match set.update(context, actor, value.clone()) {
        Ok(()) => Ok((
            encoded(&set),
            set.clock_entries().collect(),
            set.is_all_tombstones(),
        )),
        Err(e) => Err(format!("{e:?}")),
    })
}

/// Checks the plan against the reference; returns whether the plan answered.
fn check(stored: Option<&[u8]>, context: &VersionVector, actor: ActorId, value: &Value) -> bool {
    let expected = reference(stored, context, actor, value);
    let Some(plan) = plan_update(stored, context.entries(), actor, value.data()) else {
        return false;
    };
    let expected = expected.expect("the plan answered for bytes that do not decode");
    match (plan, expected) {
        (Ok(plan), Ok((bytes, clock, all_tombstones))) => {
            assert!(plan.encoded_len_max() >= bytes.len(), "length bound");
            // Garbage after the bound's worth must not matter.
            let mut out = vec![0xa5u8; plan.encoded_len_max() + 3];
            let len = plan.encode_into(&mut out[..plan.encoded_len_max()]);
            assert_eq!(&out[..len], &bytes[..], "encoding");
            assert_eq!(plan.clock_entries().collect::<Vec<_>>(), clock, "clock");
            assert_eq!(plan.is_all_tombstones(), all_tombstones, "tombstones");
        }
        (Err(e), Err(expected)) => assert_eq!(format!("{e:?}"), expected, "error"),
        (plan, expected) => panic!(
            "plan {:?} vs reference {expected:?}",
            plan.map(|p| p.encoded_len_max())
        ),
    }
    true
}

/// Whether the plan must answer: the stored set and the context are within
/// its bounds (the result then is, too, far below any pruning).
/// (`None`: the key is absent.)
fn within_bounds(set: Option<&SiblingSet>, context: &VersionVector) -> bool {
    set.is_none_or(|set| {
        set.context().len() <= PLAN_ENTRIES_MAX && set.sibling_count() <= PLAN_SIBLINGS_MAX
    }) && context.len() <= PLAN_ENTRIES_MAX
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plan_matches_decode_update_encode(
        steps in proptest::collection::vec(step_strategy(), 0..12),
        pick in any::<proptest::sample::Index>(),
        actor in actor_strategy(),
        value in value_strategy(),
        absent in proptest::bool::weighted(0.1),
        floor in prop_oneof![4 => Just(0u64), 1 => 0u64..10, 1 => any::<u64>(), 1 => Just(u64::MAX)],
    ) {
        let (set, contexts) = build(&steps);
        let context = pick.get(&contexts).clone();
        let value = value_of(&value);
        let bytes = with_floor(&encoded(&set), floor);
        let set = SiblingSet::decode(&bytes).unwrap();
        let stored = (!absent).then_some(&bytes[..]);
        let answered = check(stored, &context, actor, &value);
        if within_bounds((!absent).then_some(&set), &context) {
            prop_assert!(answered, "the plan declined a set within its bounds");
        }
        // The set's own context (the usual read-modify-write) and the empty
        // one (a blind put) too.
        let own = set.context();
        let answered = check(stored, &own, actor, &value);
        if within_bounds((!absent).then_some(&set), &own) {
            prop_assert!(answered, "the plan declined a set within its bounds");
        }
        check(stored, &VersionVector::new(), actor, &value);
    }

    #[test]
    fn plan_declines_or_agrees_on_damaged_bytes(
        steps in proptest::collection::vec(step_strategy(), 0..8),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        actor in actor_strategy(),
    ) {
        let (set, contexts) = build(&steps);
        let mut bytes = encoded(&set);
        for (at, byte) in flips {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let value = Value::Data(Bytes::from_static(b"v"));
        for context in [VersionVector::new(), contexts.last().unwrap().clone()] {
            check(Some(&bytes), &context, actor, &value);
        }
    }
}

/// The one-replica put's steady state: one actor, one sibling, the context
/// of the last write; and a pruned floor above the writer's counter.
#[test]
fn common_shapes_are_planned() {
    let value = Value::Data(Bytes::from_static(b"value"));
    let mut set = SiblingSet::new();
    set.update(&VersionVector::new(), 7, value.clone()).unwrap();
    for _ in 0..3 {
        let bytes = encoded(&set);
        assert!(check(Some(&bytes), &set.context(), 7, &value));
        set.update(&set.context(), 7, value.clone()).unwrap();
    }
    // A delete of the only sibling leaves one tombstone.
    let bytes = encoded(&set);
    assert!(check(Some(&bytes), &set.context(), 7, &Value::Tombstone));
    // A blind put adds a sibling; a first put creates the set.
    assert!(check(Some(&bytes), &VersionVector::new(), 9, &value));
    assert!(check(None, &VersionVector::new(), 9, &value));
    assert!(check(None, &set.context(), 3, &Value::Tombstone));
}
