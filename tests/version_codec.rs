//! Decoder robustness for sibling sets and context tokens: arbitrary bytes
//! and mutated valid encodings never panic, and every accepted input is
//! canonical (re-encoding it gives the same bytes).
//!
//! Cases: 256 by default, `PROPTEST_CASES` overrides.

use bytes::Bytes;
use dynakv::version::{
    ActorId, Context, ContextError, SiblingSet, Value, VersionVector, CONTEXT_BYTES_MAX,
};
use proptest::prelude::*;

#[path = "support/proptest_config.rs"]
mod proptest_config;
use proptest_config::config;

/// A step building a sibling set: a put by `actor` that either carries the
/// set's current context or none, or a merge with a set built on the side.
#[derive(Clone, Debug)]
enum Step {
    Put {
        actor: ActorId,
        with_context: bool,
        value: Option<Vec<u8>>,
    },
    MergeSide,
    PutSide {
        actor: ActorId,
    },
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let actor = prop_oneof![0u64..4, any::<u64>()];
    prop_oneof![
        4 => (actor.clone(), any::<bool>(), proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..20)))
            .prop_map(|(actor, with_context, value)| Step::Put { actor, with_context, value }),
        1 => Just(Step::MergeSide),
        2 => actor.prop_map(|actor| Step::PutSide { actor }),
    ]
}

fn build(steps: &[Step]) -> SiblingSet {
    let mut set = SiblingSet::new();
    let mut side = SiblingSet::new();
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
                let value = match value {
                    Some(bytes) => Value::Data(Bytes::from(bytes.clone())),
                    None => Value::Tombstone,
                };
                set.update(&context, *actor, value).unwrap();
            }
            Step::MergeSide => set.merge(&side).unwrap(),
            Step::PutSide { actor } => side
                .update(
                    &VersionVector::new(),
                    *actor,
                    Value::Data(Bytes::from_static(b"s")),
                )
                .unwrap(),
        }
    }
    set
}

fn encoded(set: &SiblingSet) -> Vec<u8> {
    let mut out = Vec::new();
    set.encode(&mut out);
    out
}

fn check_sibling_set_decode(bytes: &[u8]) {
    if let Ok(set) = SiblingSet::decode(bytes) {
        assert_eq!(encoded(&set), bytes, "accepted a non-canonical encoding");
        // An accepted set is usable: merging and updating it works.
        let mut copy = set.clone();
        copy.merge(&set).unwrap();
        assert_eq!(copy, set);
    }
}

fn check_context_decode(bytes: &[u8]) {
    if let Ok(context) = Context::decode(bytes) {
        assert_eq!(context.encode(), bytes, "accepted a non-canonical token");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sibling_set_round_trips(steps in proptest::collection::vec(step_strategy(), 0..30)) {
        let set = build(&steps);
        let bytes = encoded(&set);
        prop_assert_eq!(bytes.len(), set.encoded_len());
        // The zero-copy decode gives the same set, and its values are slices
        // of the input.
        let shared = bytes::Bytes::from(bytes.clone());
        let decoded = SiblingSet::decode_shared(&shared).unwrap();
        prop_assert_eq!(&decoded, &set);
        let range = shared.as_ptr() as usize..shared.as_ptr() as usize + shared.len();
        for value in decoded.data_values() {
            prop_assert!(value.is_empty() || range.contains(&(value.as_ptr() as usize)));
        }
        // Merging a set into an empty one gives it back unchanged (a
        // one-reply get relies on it and skips the merge).
        let mut merged = SiblingSet::new();
        merged.merge(&set).unwrap();
        prop_assert_eq!(&merged, &set);
        prop_assert_eq!(SiblingSet::decode(&bytes), Ok(set));
    }

    #[test]
    fn sibling_set_decode_never_panics_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        with_format in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if with_format && !bytes.is_empty() {
            bytes[0] = dynakv::version::SIBLING_SET_FORMAT_VERSION;
        }
        check_sibling_set_decode(&bytes);
    }

    #[test]
    fn sibling_set_decode_never_panics_on_mutations(
        steps in proptest::collection::vec(step_strategy(), 0..20),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = encoded(&build(&steps));
        for (index, byte, kind) in mutations {
            match kind {
                0 if !bytes.is_empty() => {
                    let at = index.index(bytes.len());
                    bytes[at] = byte;
                }
                1 if !bytes.is_empty() => {
                    let at = index.index(bytes.len());
                    bytes.truncate(at);
                }
                _ => {
                    let at = index.index(bytes.len() + 1);
                    bytes.insert(at, byte);
                }
            }
        }
        check_sibling_set_decode(&bytes);
    }

    #[test]
    fn context_round_trips(
        steps in proptest::collection::vec(step_strategy(), 0..30),
        fastest_replica in proptest::option::of(any::<u64>()),
    ) {
        let context = Context { clock: build(&steps).context(), fastest_replica };
        let token = context.encode();
        prop_assert!(token.len() <= CONTEXT_BYTES_MAX);
        prop_assert_eq!(Context::decode(&token), Ok(context));
    }

    #[test]
    fn context_decode_rejects_garbage_and_mutations(
        steps in proptest::collection::vec(step_strategy(), 0..20),
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
        flip in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        check_context_decode(&garbage);
        let token = Context { clock: build(&steps).context(), fastest_replica: None }.encode();
        let mut damaged = token.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= 1 << bit;
        // A single flipped bit is always caught (format byte or CRC32).
        let result = Context::decode(&damaged);
        prop_assert!(
            matches!(result, Err(ContextError::UnknownFormatVersion(_)) | Err(ContextError::ChecksumMismatch { .. })),
            "{:?}", result
        );
    }
}
