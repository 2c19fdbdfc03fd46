//! Unit tests of the version layer that need crate-internal access: the
//! Dynamo paper's Figure 3 walk-through and the pruning bound.

use bytes::Bytes;

use super::*;

const SX: ActorId = 1 << 16;
const SY: ActorId = 2 << 16;
const SZ: ActorId = 3 << 16;

fn data(text: &str) -> Value {
    Value::Data(Bytes::copy_from_slice(text.as_bytes()))
}

fn clock(entries: &[(ActorId, u64)]) -> VersionVector {
    VersionVector::from_entries(entries.to_vec()).unwrap()
}

fn texts(set: &SiblingSet) -> Vec<String> {
    set.values()
        .into_iter()
        .map(|value| match value {
            Value::Data(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            Value::Tombstone => "<tombstone>".to_string(),
        })
        .collect()
}

/// Dynamo §4.4, Figure 3: D1..D5 written through Sx, Sy and Sz.
#[test]
fn dynamo_figure_3() {
    let mut sx = SiblingSet::new();
    // D1 ([Sx,1]): a new object, written through Sx without a context.
    sx.update(&VersionVector::new(), SX, data("D1")).unwrap();
    assert_eq!(sx.context(), clock(&[(SX, 1)]));
    // D2 ([Sx,2]): the client updates D1, again through Sx.
    let seen = sx.context();
    sx.update(&seen, SX, data("D2")).unwrap();
    assert_eq!(texts(&sx), ["D2"]);
    assert_eq!(sx.context(), clock(&[(SX, 2)]));

    // D2 reaches Sy and Sz.
    let mut sy = SiblingSet::new();
    sy.merge(&sx).unwrap();
    let mut sz = SiblingSet::new();
    sz.merge(&sx).unwrap();

    // D3 ([Sx,2],[Sy,1]): a client reads D2 and writes through Sy.
    let seen = sy.context();
    sy.update(&seen, SY, data("D3")).unwrap();
    assert_eq!(sy.context(), clock(&[(SX, 2), (SY, 1)]));
    // D4 ([Sx,2],[Sz,1]): another client reads D2 and writes through Sz.
    let seen = sz.context();
    sz.update(&seen, SZ, data("D4")).unwrap();
    assert_eq!(sz.context(), clock(&[(SX, 2), (SZ, 1)]));

    // A replica still holding D2 receives D3: D3 descends D2 and replaces it.
    let mut stale = sx.clone();
    stale.merge(&sy).unwrap();
    assert_eq!(texts(&stale), ["D3"]);

    // Sx receives D3 and D4: neither descends the other, both are siblings.
    sx.merge(&sy).unwrap();
    sx.merge(&sz).unwrap();
    assert_eq!(texts(&sx), ["D3", "D4"]);
    assert_eq!(sx.context(), clock(&[(SX, 2), (SY, 1), (SZ, 1)]));
    assert!(!sy.descends(&sz) && !sz.descends(&sy));

    // D5 ([Sx,3],[Sy,1],[Sz,1]): a client reads both and reconciles through Sx.
    let seen = sx.context();
    sx.update(&seen, SX, data("D5")).unwrap();
    assert_eq!(texts(&sx), ["D5"]);
    assert_eq!(sx.context(), clock(&[(SX, 3), (SY, 1), (SZ, 1)]));

    // Sy and Sz, merged with Sx, converge on D5 alone.
    sy.merge(&sx).unwrap();
    sz.merge(&sx).unwrap();
    assert_eq!(texts(&sy), ["D5"]);
    assert_eq!(sy, sx);
    assert_eq!(sz, sx);
    assert!(sx.descends(&stale));
}

#[test]
fn blind_put_delete_and_foreign_context() {
    let mut replica = SiblingSet::new();
    replica
        .update(&VersionVector::new(), SX, data("a"))
        .unwrap();
    // A put without a context creates a sibling of whatever exists.
    replica
        .update(&VersionVector::new(), SX, data("b"))
        .unwrap();
    assert_eq!(texts(&replica), ["a", "b"]);
    // A delete with the context of a get supersedes both.
    let seen = replica.context();
    replica.update(&seen, SX, Value::Tombstone).unwrap();
    assert!(replica.is_all_tombstones());
    assert!(replica.data_values().is_empty());
    assert!(!replica.is_empty());

    // A context from another replica that this one has never seen (Sy wrote
    // "c"): the put discards nothing of this replica's and "c" is superseded
    // once the two sets merge, because the client saw it.
    let mut other = SiblingSet::new();
    other.update(&VersionVector::new(), SY, data("c")).unwrap();
    let mut target = SiblingSet::new();
    target.update(&VersionVector::new(), SZ, data("d")).unwrap();
    target.update(&other.context(), SZ, data("e")).unwrap();
    assert_eq!(texts(&target), ["d", "e"]);
    target.merge(&other).unwrap();
    assert_eq!(texts(&target), ["d", "e"]);
}

#[test]
fn update_refuses_over_siblings_max_and_context_resolves() {
    let mut set = SiblingSet::new();
    for index in 0..SIBLINGS_MAX {
        set.update(&VersionVector::new(), SX, data(&index.to_string()))
            .unwrap();
    }
    let before = set.clone();
    assert_eq!(
        set.update(&VersionVector::new(), SX, data("one too many")),
        Err(VersionError::SiblingsOverflow {
            count: SIBLINGS_MAX as u64 + 1,
            max: SIBLINGS_MAX
        })
    );
    assert_eq!(set, before);
    let seen = set.context();
    set.update(&seen, SX, data("resolved")).unwrap();
    assert_eq!(texts(&set), ["resolved"]);
}

#[test]
fn forged_counter_overflow_is_an_error() {
    let mut set = SiblingSet::new();
    let forged = clock(&[(SX, u64::MAX)]);
    assert_eq!(
        set.update(&forged, SX, data("x")),
        Err(VersionError::CounterOverflow { actor: SX })
    );
    assert!(set.is_empty());
}

/// Many writers, each superseded in turn, leave many entries without
/// siblings; past `CLOCK_ENTRIES_MAX` the oldest are pruned and the floor
/// keeps new dots above every pruned counter.
#[test]
fn pruning_keeps_bound_and_floor() {
    let mut set = SiblingSet::new();
    for actor in 1..=(CLOCK_ENTRIES_MAX as u64 + 10) {
        let seen = set.context();
        set.update(&seen, actor, data(&actor.to_string())).unwrap();
        assert!(set.context().len() <= CLOCK_ENTRIES_MAX);
        assert_eq!(set.sibling_count(), 1);
    }
    assert_eq!(set.check_invariants(), Ok(()));
    assert_eq!(set.pruned_counter_floor, 1);
    // Actor 1 was pruned; its next dot must not reuse (1, 1).
    let seen = set.context();
    set.update(&seen, 1, data("again")).unwrap();
    let dots: Vec<Dot> = set.siblings().map(|(dot, _)| dot).collect();
    assert_eq!(
        dots,
        [Dot {
            actor: 1,
            counter: 2
        }]
    );
}

/// Pruning only forgets history: a replica that still holds a value the
/// pruned set had superseded gets it back as a sibling (an extra sibling),
/// and nothing the unpruned merge would keep is lost.
#[test]
fn pruning_only_adds_siblings() {
    let mut old = SiblingSet::new();
    old.update(&VersionVector::new(), 1, data("old")).unwrap();
    let mut newer = old.clone();
    let seen = newer.context();
    newer.update(&seen, 2, data("new")).unwrap();
    // Without pruning the old value is superseded.
    let exact = newer.merge_with_bound(&old, CLOCK_ENTRIES_MAX).unwrap();
    assert_eq!(texts(&exact), ["new"]);
    // With a bound of one entry, actor 1's empty entry is pruned from `newer`
    // first: the merge keeps "old" as an extra sibling, never less.
    let pruned = newer.merge_with_bound(&SiblingSet::new(), 1).unwrap();
    assert_eq!(pruned.context(), clock(&[(2, 1)]));
    let merged = pruned.merge_with_bound(&old, 2).unwrap();
    assert_eq!(texts(&merged), ["old", "new"]);
}

#[test]
fn encoding_is_canonical_and_versioned() {
    let mut set = SiblingSet::new();
    set.update(&VersionVector::new(), SX, data("a")).unwrap();
    set.update(&VersionVector::new(), SY, Value::Tombstone)
        .unwrap();
    let mut bytes = Vec::new();
    set.encode(&mut bytes);
    assert_eq!(bytes[0], SIBLING_SET_FORMAT_VERSION);
    assert_eq!(SiblingSet::decode(&bytes), Ok(set.clone()));
    // The exact layout, byte by byte (see docs/versioning.md).
    assert_eq!(
        bytes,
        [
            1, // format
            0, // pruned counter floor
            2, // entries
            0x80, 0x80, 0x04, // actor SX = 1 << 16
            1,    // counter
            1,    // siblings
            0,    // counter - dot
            0,    // tag: data
            1, b'a', // length, bytes
            0x80, 0x80, 0x04, // actor delta SY - SX = 1 << 16
            1,    // counter
            1,    // siblings
            0,    // counter - dot
            1,    // tag: tombstone
        ]
    );
    let mut unknown = bytes.clone();
    unknown[0] = 2;
    assert_eq!(
        SiblingSet::decode(&unknown),
        Err(VersionError::UnknownFormatVersion(2))
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        SiblingSet::decode(&trailing),
        Err(VersionError::TrailingBytes { count: 1 })
    );
    let empty = {
        let mut out = Vec::new();
        SiblingSet::new().encode(&mut out);
        out
    };
    assert_eq!(empty, [1, 0, 0]);
    assert_eq!(SiblingSet::decode(&empty), Ok(SiblingSet::new()));
}

/// A get's token is encoded straight from its set's clock entries
/// (`encode_token_into`); it must be byte for byte the token of the
/// `Context` holding `context()`, and decode back to it.
#[test]
fn a_token_from_clock_entries_is_the_token_of_the_context() {
    let mut set = SiblingSet::new();
    let mut tokens_checked = 0;
    for (actor, text) in [(SY, "a"), (SX, "b"), (SZ, "c"), (SX, "d")] {
        set.update(&VersionVector::new(), actor, data(text))
            .unwrap();
        for fastest_replica in [None, Some(SZ | 3)] {
            let context = Context {
                clock: set.context(),
                fastest_replica,
            };
            let mut token = Vec::new();
            encode_token_into(set.clock_entries(), fastest_replica, &mut token);
            assert_eq!(token, context.encode());
            assert_eq!(Context::decode(&token), Ok(context));
            tokens_checked += 1;
        }
    }
    // The empty set's token too.
    let mut token = Vec::new();
    encode_token_into(SiblingSet::new().clock_entries(), None, &mut token);
    assert_eq!(token, Context::default().encode());
    assert_eq!(tokens_checked, 8);
}
