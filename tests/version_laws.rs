//! Property tests of the version layer's laws (Dynamo §4.4, design guide §4).
//!
//! A random history of puts, deletes, reads and replica merges runs against
//! three replicas and, beside them, an exact causal model: every write gets
//! an id and a causal history (what its context had seen plus itself); a
//! replica knows a set of writes; its siblings must be exactly the known
//! writes that no other known write has seen. The sibling sets produced along
//! the way are then checked for the merge laws.
//!
//! Cases: 128 by default, `PROPTEST_CASES` overrides.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use dynakv::version::{ActorId, Dot, SiblingSet, Value, VersionVector};
use proptest::prelude::*;

const REPLICAS: usize = 3;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(128);
    ProptestConfig::with_cases(cases)
}

fn actor_of(replica: usize) -> ActorId {
    ((replica as u64 + 1) << 16) | 3
}

#[derive(Clone, Debug)]
enum ContextChoice {
    /// A put without a context.
    Blind,
    /// The context of a get from this replica, taken just now.
    Fresh(usize),
    /// A context saved by an earlier `Read` (stale by now, perhaps).
    Saved(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        coordinator: usize,
        context: ContextChoice,
        tombstone: bool,
    },
    Read {
        replica: usize,
    },
    Sync {
        source: usize,
        target: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let replica = 0..REPLICAS;
    let context = prop_oneof![
        1 => Just(ContextChoice::Blind),
        3 => (0..REPLICAS).prop_map(ContextChoice::Fresh),
        2 => (0..8usize).prop_map(ContextChoice::Saved),
    ];
    prop_oneof![
        4 => (replica.clone(), context, proptest::bool::weighted(0.2)).prop_map(
            |(coordinator, context, tombstone)| Op::Put { coordinator, context, tombstone }
        ),
        1 => replica.clone().prop_map(|replica| Op::Read { replica }),
        3 => (replica.clone(), replica).prop_map(|(source, target)| Op::Sync { source, target }),
    ]
}

/// The three replicas and the exact model beside them.
struct World {
    sets: Vec<SiblingSet>,
    known: Vec<BTreeSet<u32>>,
    /// Causal history of each write, itself included.
    history: Vec<BTreeSet<u32>>,
    /// Which write each dot stands for.
    writes_by_dot: BTreeMap<Dot, u32>,
    saved: Vec<(VersionVector, BTreeSet<u32>)>,
    /// Every sibling set seen along the way, for the merge laws.
    pool: Vec<SiblingSet>,
}

impl World {
    fn new() -> Self {
        World {
            sets: vec![SiblingSet::new(); REPLICAS],
            known: vec![BTreeSet::new(); REPLICAS],
            history: Vec::new(),
            writes_by_dot: BTreeMap::new(),
            saved: Vec::new(),
            pool: Vec::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Put {
                coordinator,
                ref context,
                tombstone,
            } => {
                let (clock, seen) = match *context {
                    ContextChoice::Blind => (VersionVector::new(), BTreeSet::new()),
                    ContextChoice::Fresh(replica) => {
                        (self.sets[replica].context(), self.known[replica].clone())
                    }
                    ContextChoice::Saved(index) => match self.saved.get(index) {
                        Some(saved) => saved.clone(),
                        None => (VersionVector::new(), BTreeSet::new()),
                    },
                };
                let write = self.history.len() as u32;
                let value = if tombstone {
                    Value::Tombstone
                } else {
                    Value::Data(Bytes::from(write.to_le_bytes().to_vec()))
                };
                let actor = actor_of(coordinator);
                let set = &mut self.sets[coordinator];
                set.update(&clock, actor, value)
                    .expect("histories stay below the sibling bound");
                let dot = Dot {
                    actor,
                    counter: set.context().get(actor),
                };
                assert!(
                    self.writes_by_dot.insert(dot, write).is_none(),
                    "dot {dot:?} issued twice"
                );
                let mut history = seen.clone();
                history.insert(write);
                self.history.push(history);
                self.known[coordinator].extend(seen);
                self.known[coordinator].insert(write);
                self.pool.push(self.sets[coordinator].clone());
            }
            Op::Read { replica } => {
                self.saved
                    .push((self.sets[replica].context(), self.known[replica].clone()));
            }
            Op::Sync { source, target } => {
                let source_set = self.sets[source].clone();
                self.sets[target].merge(&source_set).unwrap();
                let source_known = self.known[source].clone();
                self.known[target].extend(source_known);
                assert!(self.sets[target].descends(&source_set));
                self.pool.push(self.sets[target].clone());
            }
        }
    }

    /// The model's siblings: known writes that no other known write has seen.
    fn expected_siblings(&self, replica: usize) -> BTreeSet<u32> {
        let known = &self.known[replica];
        known
            .iter()
            .copied()
            .filter(|&write| {
                !known
                    .iter()
                    .any(|&other| other != write && self.history[other as usize].contains(&write))
            })
            .collect()
    }

    fn actual_siblings(&self, replica: usize) -> BTreeSet<u32> {
        self.sets[replica]
            .siblings()
            .map(|(dot, value)| {
                let write = self.writes_by_dot[&dot];
                if let Value::Data(bytes) = value {
                    assert_eq!(bytes.as_ref(), write.to_le_bytes(), "value under wrong dot");
                }
                write
            })
            .collect()
    }
}

fn merged(left: &SiblingSet, right: &SiblingSet) -> SiblingSet {
    let mut out = left.clone();
    out.merge(right).unwrap();
    out
}

proptest! {
    #![proptest_config(config())]

    /// After every step, each replica holds exactly the siblings of the causal
    /// model: nothing a put's context did not cover is lost, nothing it
    /// covered survives (this also covers blind puts, deletes, stale saved
    /// contexts and contexts taken from another replica).
    #[test]
    fn siblings_match_the_causal_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
            for replica in 0..REPLICAS {
                prop_assert_eq!(world.actual_siblings(replica), world.expected_siblings(replica));
            }
        }
    }

    /// Merge is commutative, associative and idempotent, and its result
    /// descends both inputs, over sets produced by real histories.
    #[test]
    fn merge_laws(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
        }
        let mut pool = world.pool.clone();
        pool.extend(world.sets.iter().cloned());
        pool.push(SiblingSet::new());
        let step = (pool.len() / 8).max(1);
        let sample: Vec<&SiblingSet> = pool.iter().step_by(step).collect();
        for a in &sample {
            prop_assert_eq!(&merged(a, a), *a);
            for b in &sample {
                let ab = merged(a, b);
                prop_assert_eq!(&ab, &merged(b, a));
                prop_assert!(ab.descends(a) && ab.descends(b));
                for c in &sample {
                    prop_assert_eq!(merged(&ab, c), merged(a, &merged(b, c)));
                }
            }
        }
    }

    /// A put carrying the context of a get supersedes exactly what the get
    /// returned; writes that reached the replica after the get survive.
    #[test]
    fn put_with_get_context_supersedes_exactly_what_get_returned(
        before in 1..5usize,
        after in 0..5usize,
    ) {
        let mut replica = SiblingSet::new();
        for index in 0..before {
            replica.update(&VersionVector::new(), actor_of(index % 2), Value::Data(Bytes::from(format!("before{index}")))).unwrap();
        }
        let get_context = replica.context();
        let got: Vec<Value> = replica.values().into_iter().cloned().collect();
        for index in 0..after {
            replica.update(&VersionVector::new(), actor_of(2), Value::Data(Bytes::from(format!("after{index}")))).unwrap();
        }
        let concurrent: Vec<Value> = replica.values().into_iter().filter(|v| !got.contains(v)).cloned().collect();
        replica.update(&get_context, actor_of(0), Value::Data(Bytes::from_static(b"resolved"))).unwrap();
        let mut expected = concurrent;
        expected.push(Value::Data(Bytes::from_static(b"resolved")));
        let mut actual: Vec<Value> = replica.values().into_iter().cloned().collect();
        expected.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        actual.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        prop_assert_eq!(actual, expected);
    }
}
