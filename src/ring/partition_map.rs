//! A map from partition to a per-partition state, for the layers that keep
//! one per partition they hold (the store's index, the anti-entropy trees).
//! A lookup is on the request path of every read and write, so it is an
//! index into a vector, not a search of an ordered map.

use std::collections::BTreeMap;

/// Partitions below this are held in a vector indexed by partition (every
/// partition of a valid ring is: `PARTITIONS_MAX`); any other in an ordered
/// map, so that any `u32` works.
const DENSE_PARTITIONS: u32 = super::PARTITIONS_MAX;

/// Per partition, a `T`. Iterates in partition order. A dense slot is a
/// box, so the vector is one word per partition up to the highest held,
/// whatever the size of `T`.
pub struct PartitionMap<T> {
    /// Grown to the highest dense partition held; `None` where none is.
    dense: Vec<Option<Box<T>>>,
    sparse: BTreeMap<u32, T>,
    len: usize,
}

impl<T> Default for PartitionMap<T> {
    fn default() -> Self {
        PartitionMap {
            dense: Vec::new(),
            sparse: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> PartitionMap<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Partitions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, partition: u32) -> Option<&T> {
        if partition < DENSE_PARTITIONS {
            self.dense.get(partition as usize)?.as_deref()
        } else {
            self.sparse.get(&partition)
        }
    }

    #[inline]
    pub fn get_mut(&mut self, partition: u32) -> Option<&mut T> {
        if partition < DENSE_PARTITIONS {
            self.dense.get_mut(partition as usize)?.as_deref_mut()
        } else {
            self.sparse.get_mut(&partition)
        }
    }

    /// `partition`'s state, made by `make` if it has none.
    pub fn get_or_insert_with(&mut self, partition: u32, make: impl FnOnce() -> T) -> &mut T {
        if partition < DENSE_PARTITIONS {
            let slot = partition as usize;
            if self.dense.len() <= slot {
                self.dense.resize_with(slot + 1, || None);
            }
            let slot = &mut self.dense[slot];
            if slot.is_none() {
                self.len += 1;
            }
            slot.get_or_insert_with(|| Box::new(make()))
        } else {
            let len = &mut self.len;
            self.sparse.entry(partition).or_insert_with(|| {
                *len += 1;
                make()
            })
        }
    }

    pub fn remove(&mut self, partition: u32) -> Option<T> {
        let removed = if partition < DENSE_PARTITIONS {
            self.dense
                .get_mut(partition as usize)?
                .take()
                .map(|boxed| *boxed)
        } else {
            self.sparse.remove(&partition)
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Keeps the partitions for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(u32, &mut T) -> bool) {
        let mut removed = 0;
        for (partition, slot) in self.dense.iter_mut().enumerate() {
            if let Some(state) = slot {
                if !keep(partition as u32, state) {
                    *slot = None;
                    removed += 1;
                }
            }
        }
        self.sparse.retain(|partition, state| {
            let kept = keep(*partition, state);
            removed += usize::from(!kept);
            kept
        });
        self.len -= removed;
    }

    /// The partitions held and their states, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter_map(|(p, slot)| Some((p as u32, slot.as_deref()?)));
        dense.chain(self.sparse.iter().map(|(&p, state)| (p, state)))
    }

    /// `iter`, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        let dense = self
            .dense
            .iter_mut()
            .enumerate()
            .filter_map(|(p, slot)| Some((p as u32, slot.as_deref_mut()?)));
        dense.chain(self.sparse.iter_mut().map(|(&p, state)| (p, state)))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, state)| state)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.iter_mut().map(|(_, state)| state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    /// Random inserts, removals, retains and updates over dense and sparse
    /// partitions agree with an ordered map: look-ups, length, and the
    /// order of iteration.
    #[test]
    fn agrees_with_an_ordered_map() {
        for seed in 0..20 {
            let mut rng = Rng(seed * 2 + 1);
            let mut map = PartitionMap::new();
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            for step in 0..2_000u64 {
                // Mostly dense partitions, some at and past the boundary.
                let partition = match rng.below(10) {
                    0 => DENSE_PARTITIONS - 1 + rng.below(3) as u32,
                    1 => u32::MAX - rng.below(2) as u32,
                    _ => rng.below(64) as u32,
                };
                match rng.below(6) {
                    0 | 1 => {
                        *map.get_or_insert_with(partition, || 0) += step;
                        *model.entry(partition).or_insert(0) += step;
                    }
                    2 => assert_eq!(map.remove(partition), model.remove(&partition)),
                    3 => {
                        if let Some(state) = map.get_mut(partition) {
                            *state ^= 1;
                        }
                        if let Some(state) = model.get_mut(&partition) {
                            *state ^= 1;
                        }
                    }
                    4 => {
                        let cut = rng.below(64) as u32;
                        map.retain(|p, state| p % 3 != cut % 3 || *state % 2 == 0);
                        model.retain(|p, state| p % 3 != cut % 3 || *state % 2 == 0);
                    }
                    _ => {
                        for state in map.values_mut() {
                            *state += 1;
                        }
                        for state in model.values_mut() {
                            *state += 1;
                        }
                    }
                }
                assert_eq!(map.get(partition), model.get(&partition));
                assert_eq!(map.len(), model.len());
                assert_eq!(map.is_empty(), model.is_empty());
            }
            let held: Vec<(u32, u64)> = map.iter().map(|(p, s)| (p, *s)).collect();
            let expected: Vec<(u32, u64)> = model.iter().map(|(p, s)| (*p, *s)).collect();
            assert_eq!(held, expected, "seed {seed}");
            assert!(map.values().eq(model.values()));
        }
    }
}
