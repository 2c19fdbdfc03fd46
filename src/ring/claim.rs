//! The claim algorithm: membership in, ring out.
//!
//! Steps (each deterministic; members are sorted by id first, so the input
//! order never matters):
//! 1. **Targets.** Each node's partition count is its weight's share of `q`,
//!    rounded by largest remainder (a node whose previous count was above its
//!    floor is rounded up first, which avoids churn). When at least `n_val`
//!    nodes have capacity, no node may exceed `floor(q / n_val)` partitions,
//!    since a node owning more cannot keep every window of `n_val`
//!    consecutive partitions on distinct nodes; the excess is spread over the
//!    others in proportion to their weights ("water filling").
//! 2. **Keep.** Every partition keeps its previous owner when that node is
//!    still a member with capacity.
//! 3. **Release.** A node over target gives up its surplus, choosing first
//!    the partitions that sit too close to another of its own partitions.
//! 4. **Assign.** Free partitions, in ring order, go to a node under target:
//!    fewest same-node neighbours within `n_val - 1` first, then the largest
//!    fraction of its target still missing, then a fixed pseudo-random
//!    order of `(partition, node)`.
//! 5. **Repair.** Where a window of `n_val` consecutive partitions still has
//!    a node twice, the later partition swaps owners with another partition
//!    so that neither conflicts, preferring partitions that already moved in
//!    this claim (free of extra movement). Counts are unchanged by swaps.
//! 6. **Shards.** Each node's partitions are spread over its shards (counts
//!    differ by at most one), keeping each partition on its previous shard
//!    where possible.

use super::error::RingError;
use super::hash::partition_count_valid;
use super::table::Ring;
use super::{Member, NodeId, VnodeOwner, MEMBERS_MAX, N_VAL_MAX};

/// Bound on repair passes over the ring; each pass can only remove
/// violations, and in practice one or two passes leave none.
const REPAIR_PASSES_MAX: usize = 8;

/// Bound on the steps of the last-resort walk, per partition.
const WALK_STEPS_PER_PARTITION_MAX: usize = 64;

/// Partners sampled per step of the last-resort walk.
const WALK_SAMPLES: usize = 16;

/// Bound on the first hops a three-way rotation tries per conflict.
const ROTATION_FIRST_HOPS_MAX: usize = 32;

/// Work bound (partitions² × receivers × window) under which free
/// partitions are assigned most-constrained-first rather than in ring order.
const CONSTRAINED_ASSIGN_COST_MAX: usize = 20_000_000;

/// Builds the ring for `members`, moving as few partitions as possible away
/// from their owners in `previous`. See the module header for the steps and
/// `docs/ring.md` for the guarantees.
pub fn claim(
    previous: Option<&Ring>,
    members: &[Member],
    q: u32,
    n_val: usize,
) -> Result<Ring, RingError> {
    if !partition_count_valid(q) {
        return Err(RingError::PartitionCountInvalid { q });
    }
    if n_val == 0 || n_val > N_VAL_MAX {
        return Err(RingError::NValInvalid { n_val });
    }
    if members.len() > MEMBERS_MAX {
        return Err(RingError::TooManyMembers {
            count: members.len(),
        });
    }
    if let Some(previous) = previous {
        if previous.q() != q {
            return Err(RingError::PartitionCountChanged {
                previous: previous.q(),
                q,
            });
        }
    }
    let mut members: Vec<Member> = members.to_vec();
    members.sort_unstable_by_key(|member| member.id);
    for pair in members.windows(2) {
        if pair[0].id == pair[1].id {
            return Err(RingError::DuplicateMember(pair[0].id));
        }
    }
    if let Some(member) = members.iter().find(|member| member.shards == 0) {
        return Err(RingError::ShardsZero(member.id));
    }
    if members.iter().all(|member| member.weight == 0) {
        return Err(RingError::NoCapacity);
    }

    let q_usize = q as usize;
    let member_index = |node: NodeId| members.binary_search_by_key(&node, |m| m.id).ok();

    // The previous owner of each partition, as an index into `members`.
    let previous_owner: Vec<Option<usize>> = match previous {
        Some(previous) => previous
            .owners()
            .iter()
            .map(|owner| member_index(owner.node))
            .collect(),
        None => vec![None; q_usize],
    };
    let mut previous_counts = vec![0u32; members.len()];
    for index in previous_owner.iter().flatten() {
        previous_counts[*index] += 1;
    }

    let targets = targets(&members, q, n_val, &previous_counts);
    assert_eq!(
        targets.iter().map(|&t| u64::from(t)).sum::<u64>(),
        u64::from(q)
    );
    let active_count = targets.iter().filter(|&&target| target > 0).count();
    let window = n_val.min(active_count);

    // Step 2: keep.
    let mut owner: Vec<Option<usize>> = previous_owner
        .iter()
        .map(|&index| index.filter(|&i| targets[i] > 0))
        .collect();
    let mut counts = vec![0u32; members.len()];
    for index in owner.iter().flatten() {
        counts[*index] += 1;
    }

    // Step 3: free partitions (no owner that stays) go to nodes under target.
    let free: Vec<usize> = (0..q_usize).filter(|&p| owner[p].is_none()).collect();
    let receivers = (0..members.len())
        .filter(|&m| counts[m] < targets[m])
        .count();
    let constrained_cost = free.len() * free.len() * receivers * window.max(1);
    if previous.is_some() && constrained_cost <= CONSTRAINED_ASSIGN_COST_MAX {
        // Most constrained partition first: the one with the fewest
        // receivers that would not conflict there.
        let mut remaining = free;
        while !remaining.is_empty() {
            let (position, _) = remaining
                .iter()
                .enumerate()
                .map(|(position, &p)| {
                    let options = (0..members.len())
                        .filter(|&m| counts[m] < targets[m] && conflicts(&owner, p, m, window) == 0)
                        .count();
                    (position, options)
                })
                .min_by_key(|&(position, options)| (options, position))
                .expect("non-empty");
            let p = remaining.remove(position);
            let member = best_receiver(&members, &owner, &counts, &targets, p, window);
            owner[p] = Some(member);
            counts[member] += 1;
        }
    } else {
        for p in free {
            let member = best_receiver(&members, &owner, &counts, &targets, p, window);
            owner[p] = Some(member);
            counts[member] += 1;
        }
    }

    // Step 4: the remaining deficits are filled from the surplus of nodes
    // over target. The receiver chooses where: the partition of a donor
    // that conflicts least for the receiver and most for the donor.
    loop {
        let receiver = (0..members.len())
            .filter(|&m| counts[m] < targets[m])
            .max_by(|&a, &b| {
                let missing_a = u64::from(targets[a] - counts[a]);
                let missing_b = u64::from(targets[b] - counts[b]);
                (missing_a * u64::from(targets[b]))
                    .cmp(&(missing_b * u64::from(targets[a])))
                    .then(missing_a.cmp(&missing_b))
                    .then(members[b].id.cmp(&members[a].id))
            });
        let Some(receiver) = receiver else { break };
        let p = (0..q_usize)
            .filter(|&p| {
                let donor = owner[p].expect("all partitions owned after step 3");
                counts[donor] > targets[donor]
            })
            .min_by_key(|&p| {
                let donor = owner[p].expect("owned");
                (
                    conflicts(&owner, p, receiver, window),
                    usize::MAX - conflicts(&owner, p, donor, window),
                    mix(p as u64, members[receiver].id.0),
                )
            })
            .expect("deficits and surpluses balance");
        let donor = owner[p].expect("owned");
        counts[donor] -= 1;
        owner[p] = Some(receiver);
        counts[receiver] += 1;
    }
    assert_eq!(counts, targets);
    let mut owner: Vec<usize> = owner
        .into_iter()
        .map(|o| o.expect("every partition assigned"))
        .collect();

    // Step 5: repair windows that hold a node twice. The count minimum of
    // moves is what steps 2-4 moved; repair may add at most half of it plus
    // `2 * n_val`, and nothing when no arrangement can be free of repeats (a
    // node owns more than `q / window` partitions) or nothing had to move.
    let moved_minimum = (0..q_usize)
        .filter(|&p| previous_owner[p] != Some(owner[p]))
        .count();
    let feasible = counts
        .iter()
        .all(|&count| count as usize <= q_usize / window.max(1));
    // With nothing to move (same membership) the budget is zero, so claiming
    // again never changes a ring.
    let extra_moves_max = if feasible && moved_minimum > 0 {
        moved_minimum / 2 + 2 * n_val
    } else {
        0
    };
    repair(
        &mut owner,
        &previous_owner,
        window,
        extra_moves_max,
        feasible,
    );

    // Step 6: shards.
    let owners = assign_shards(&members, &owner, previous);

    let epoch = match previous {
        None => 1,
        Some(previous) if previous.owners() == owners.as_slice() && previous.n_val() == n_val => {
            previous.epoch
        }
        Some(previous) => previous.epoch + 1,
    };
    Ring::from_parts(epoch, q, n_val, owners)
}

/// Step 3: the node under target that should take free partition `p`:
/// fewest same-node neighbours, then the largest fraction of its target
/// still missing, then the largest count missing, then a fixed mix.
fn best_receiver(
    members: &[Member],
    owner: &[Option<usize>],
    counts: &[u32],
    targets: &[u32],
    p: usize,
    window: usize,
) -> usize {
    let mut best: Option<(usize, usize)> = None; // (member, conflicts)
    for member in 0..members.len() {
        if counts[member] >= targets[member] {
            continue;
        }
        let candidate_conflicts = conflicts(owner, p, member, window);
        let better = match best {
            None => true,
            Some((incumbent, incumbent_conflicts)) => {
                if candidate_conflicts != incumbent_conflicts {
                    candidate_conflicts < incumbent_conflicts
                } else {
                    let missing = u64::from(targets[member] - counts[member]);
                    let incumbent_missing = u64::from(targets[incumbent] - counts[incumbent]);
                    // Compare missing / target as fractions.
                    let left = missing * u64::from(targets[incumbent]);
                    let right = incumbent_missing * u64::from(targets[member]);
                    if left != right {
                        left > right
                    } else if missing != incumbent_missing {
                        missing > incumbent_missing
                    } else {
                        mix(p as u64, members[member].id.0) > mix(p as u64, members[incumbent].id.0)
                    }
                }
            }
        };
        if better {
            best = Some((member, candidate_conflicts));
        }
    }
    let (member, _) = best.expect("deficits cover the free partitions");
    member
}

/// Step 1: partition count per member (indexed like `members`).
fn targets(members: &[Member], q: u32, n_val: usize, previous_counts: &[u32]) -> Vec<u32> {
    let active: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].weight > 0)
        .collect();
    assert!(!active.is_empty());
    let cap: Option<u64> = {
        let cap = u64::from(q) / n_val as u64;
        if active.len() >= n_val && cap * active.len() as u64 >= u64::from(q) {
            Some(cap)
        } else {
            None
        }
    };
    let mut fixed: Vec<Option<u64>> = vec![None; members.len()];
    loop {
        let remaining: u64 = u64::from(q) - fixed.iter().flatten().sum::<u64>();
        let weight_free: u64 = active
            .iter()
            .filter(|&&i| fixed[i].is_none())
            .map(|&i| u64::from(members[i].weight))
            .sum();
        let mut capped_any = false;
        if let Some(cap) = cap {
            for &i in &active {
                if fixed[i].is_none()
                    && remaining * u64::from(members[i].weight) > cap * weight_free
                {
                    fixed[i] = Some(cap);
                    capped_any = true;
                }
            }
        }
        if !capped_any {
            // Largest remainder among the uncapped members.
            let mut result = vec![0u32; members.len()];
            let mut remainders: Vec<(bool, u64, usize)> = Vec::new();
            let mut assigned: u64 = 0;
            for &i in &active {
                match fixed[i] {
                    Some(count) => {
                        result[i] = count as u32;
                        assigned += count;
                    }
                    None => {
                        let scaled = remaining * u64::from(members[i].weight);
                        let floor = scaled / weight_free;
                        let remainder = scaled % weight_free;
                        result[i] = floor as u32;
                        assigned += floor;
                        if remainder > 0 {
                            let sticky = u64::from(previous_counts[i]) > floor;
                            remainders.push((sticky, remainder, i));
                        }
                    }
                }
            }
            let extra = (u64::from(q) - assigned) as usize;
            assert!(extra <= remainders.len());
            // Sticky first, then the largest remainder, then the smallest id.
            remainders.sort_unstable_by(|a, b| {
                b.0.cmp(&a.0)
                    .then(b.1.cmp(&a.1))
                    .then(members[a.2].id.cmp(&members[b.2].id))
            });
            for &(_, _, i) in remainders.iter().take(extra) {
                result[i] += 1;
            }
            return result;
        }
    }
}

/// Number of partitions within `window - 1` of `p` (either side) that are
/// owned by `member`.
fn conflicts<T: OwnerSlot>(owner: &[T], p: usize, member: usize, window: usize) -> usize {
    let q = owner.len();
    let reach = (window.saturating_sub(1)).min(q.saturating_sub(1) / 2);
    let mut count = 0;
    for distance in 1..=reach {
        if owner[(p + distance) % q].is_member(member) {
            count += 1;
        }
        if owner[(p + q - distance) % q].is_member(member) {
            count += 1;
        }
    }
    count
}

/// Lets `conflicts` work on both the partial (`Option<usize>`) and the
/// complete (`usize`) owner arrays.
trait OwnerSlot {
    fn is_member(&self, member: usize) -> bool;
}

impl OwnerSlot for Option<usize> {
    fn is_member(&self, member: usize) -> bool {
        *self == Some(member)
    }
}

impl OwnerSlot for usize {
    fn is_member(&self, member: usize) -> bool {
        *self == member
    }
}

/// Step 5: swap owners to clear windows where a node appears twice.
fn repair(
    owner: &mut [usize],
    previous_owner: &[Option<usize>],
    window: usize,
    extra_moves_max: usize,
    feasible: bool,
) {
    let q = owner.len();
    if window < 2 {
        return;
    }
    // Moves made beyond the count minimum, against `extra_moves_max`.
    let mut budget = extra_moves_max as i64;
    for _ in 0..REPAIR_PASSES_MAX {
        let mut violations = 0;
        let moved = |owner: &[usize], u: usize| previous_owner[u] != Some(owner[u]);
        // Of two partitions in conflict, fix the one that moved in this claim
        // first: swapping it away costs one extra move at most, swapping an
        // unmoved one costs two.
        let mut order: Vec<usize> = (0..q).collect();
        order.sort_by_key(|&v| (!moved(owner, v), v));
        for v in order {
            if conflicts(owner, v, owner[v], window) == 0 {
                continue;
            }
            violations += 1;
            // Partitions that already moved cost nothing to swap; others cost
            // up to two extra moves, so they are tried second. A swap that
            // clears both positions is preferred; failing that, any swap that
            // lowers the conflicts of the two positions (a descent step, so
            // the passes cannot cycle).
            'search: for (free_only, clear_only) in
                [(true, true), (false, true), (true, false), (false, false)]
            {
                for step in 1..q {
                    let u = (v + step) % q;
                    if owner[u] == owner[v] || (free_only && !(moved(owner, u) && moved(owner, v)))
                    {
                        continue;
                    }
                    let before = conflicts(owner, v, owner[v], window)
                        + conflicts(owner, u, owner[u], window);
                    let moved_before = moved_count(owner, previous_owner, &[u, v]);
                    owner.swap(u, v);
                    let after = conflicts(owner, v, owner[v], window)
                        + conflicts(owner, u, owner[u], window);
                    let cost = moved_count(owner, previous_owner, &[u, v]) - moved_before;
                    let improves = if clear_only {
                        after == 0
                    } else {
                        after < before
                    };
                    if improves && cost <= budget {
                        budget -= cost;
                        break 'search;
                    }
                    owner.swap(u, v);
                }
            }
            if conflicts(owner, v, owner[v], window) > 0 {
                rotate(owner, previous_owner, v, window, &mut budget);
            }
        }
        if violations == 0 {
            return;
        }
    }
    // The walk may move partitions that did not have to move, so it runs only
    // for a fresh ring, where every partition is placed anyway. After a
    // membership change the remaining windows (with very heavy nodes) are
    // left and counted by `Ring::diversity_violations`: preference lists
    // still hold distinct nodes, they only reach further around the ring.
    if feasible && previous_owner.iter().all(Option::is_none) {
        walk_out_of_local_minimum(owner, previous_owner, window);
    }
}

/// How many of `positions` have another owner than in the previous ring.
fn moved_count(owner: &[usize], previous_owner: &[Option<usize>], positions: &[usize]) -> i64 {
    positions
        .iter()
        .filter(|&&p| previous_owner[p] != Some(owner[p]))
        .count() as i64
}

/// When swaps and rotations leave conflicts (a local minimum, seen with a
/// few very heavy nodes), a bounded, deterministic walk: swap a conflicting
/// position with a pseudo-randomly chosen one whenever that does not add
/// conflicts, accepting sideways steps so the search can leave plateaus.
/// Only reached in hard cases; it may move partitions that did not have to.
fn walk_out_of_local_minimum(owner: &mut [usize], previous_owner: &[Option<usize>], window: usize) {
    let q = owner.len();
    let steps_max = WALK_STEPS_PER_PARTITION_MAX * q;
    let mut step: u64 = 0;
    // Partitions that differ from the previous ring among `positions`.
    let moved = |owner: &[usize], positions: [usize; 2]| {
        positions
            .iter()
            .filter(|&&p| previous_owner[p] != Some(owner[p]))
            .count() as i64
    };
    while (step as usize) < steps_max {
        let conflicting: Vec<usize> = (0..q)
            .filter(|&v| conflicts(owner, v, owner[v], window) > 0)
            .collect();
        if conflicting.is_empty() {
            return;
        }
        for &v in &conflicting {
            if conflicts(owner, v, owner[v], window) == 0 {
                continue;
            }
            // Sample a few partners; take the one that lowers conflicts the
            // most, then adds the fewest moves, if it adds no conflicts.
            let mut best: Option<((i64, i64), usize)> = None;
            for _ in 0..WALK_SAMPLES {
                step += 1;
                let u = (mix(step, v as u64) % q as u64) as usize;
                if owner[u] == owner[v] {
                    continue;
                }
                let before = (conflicts(owner, v, owner[v], window)
                    + conflicts(owner, u, owner[u], window)) as i64;
                let moved_before = moved(owner, [u, v]);
                owner.swap(u, v);
                let after = (conflicts(owner, v, owner[v], window)
                    + conflicts(owner, u, owner[u], window)) as i64;
                let moved_after = moved(owner, [u, v]);
                owner.swap(u, v);
                let score = (after - before, moved_after - moved_before);
                if after <= before && best.is_none_or(|(incumbent, _)| score < incumbent) {
                    best = Some((score, u));
                }
            }
            if let Some((_, u)) = best {
                owner.swap(u, v);
            }
        }
    }
}

/// Last resort for a conflict at `v` that no swap clears: a rotation of three
/// owners. `v`'s node `a` moves to `u1` where it fits, `u1`'s node `b` moves
/// to `u2` where it fits, and `u2`'s node `c` takes `v`. Counts are kept.
/// Bounded to `ROTATION_FIRST_HOPS_MAX` choices of `u1`.
fn rotate(
    owner: &mut [usize],
    previous_owner: &[Option<usize>],
    v: usize,
    window: usize,
    budget: &mut i64,
) -> bool {
    let q = owner.len();
    let a = owner[v];
    let mut first_hops = 0;
    for step in 1..q {
        let u1 = (v + step) % q;
        let b = owner[u1];
        if b == a {
            continue;
        }
        owner[u1] = a;
        owner[v] = usize::MAX;
        let a_fits = conflicts(owner, u1, a, window) == 0;
        owner[u1] = b;
        owner[v] = a;
        if !a_fits {
            continue;
        }
        first_hops += 1;
        if first_hops > ROTATION_FIRST_HOPS_MAX {
            return false;
        }
        for step2 in 1..q {
            let u2 = (v + step2) % q;
            let c = owner[u2];
            if u2 == u1 || c == a || c == b {
                continue;
            }
            let moved_before = moved_count(owner, previous_owner, &[v, u1, u2]);
            owner[u1] = a;
            owner[u2] = b;
            owner[v] = c;
            let cost = moved_count(owner, previous_owner, &[v, u1, u2]) - moved_before;
            if cost <= *budget
                && conflicts(owner, v, c, window) == 0
                && conflicts(owner, u1, a, window) == 0
                && conflicts(owner, u2, b, window) == 0
            {
                *budget -= cost;
                return true;
            }
            owner[u1] = b;
            owner[u2] = c;
            owner[v] = a;
        }
    }
    false
}

/// Step 6: spread each node's partitions over its shards.
fn assign_shards(members: &[Member], owner: &[usize], previous: Option<&Ring>) -> Vec<VnodeOwner> {
    let q = owner.len();
    let mut shard_of: Vec<u16> = vec![0; q];
    let mut partitions_by_member: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
    for (p, &member) in owner.iter().enumerate() {
        partitions_by_member[member].push(p);
    }
    for (member, partitions) in partitions_by_member.iter().enumerate() {
        if partitions.is_empty() {
            continue;
        }
        let node = members[member].id;
        let shards = usize::from(members[member].shards);
        let base = partitions.len() / shards;
        let extra = partitions.len() % shards;
        let ceiling = base + usize::from(extra > 0);
        let mut retained: Vec<Vec<usize>> = vec![Vec::new(); shards];
        let mut unplaced: Vec<usize> = Vec::new();
        for &p in partitions {
            let kept = previous
                .map(|ring| ring.owners()[p])
                .filter(|before| before.node == node && usize::from(before.shard) < shards)
                .map(|before| usize::from(before.shard));
            match kept {
                Some(shard) if retained[shard].len() < ceiling => retained[shard].push(p),
                _ => unplaced.push(p),
            }
        }
        // At most `extra` shards may end one above `base`; trim the others.
        if extra > 0 {
            let mut at_ceiling: Vec<usize> = (0..shards)
                .filter(|&s| retained[s].len() == ceiling)
                .collect();
            while at_ceiling.len() > extra {
                let shard = at_ceiling.pop().expect("non-empty");
                let p = retained[shard]
                    .pop()
                    .expect("shard at ceiling holds partitions");
                unplaced.push(p);
            }
        }
        unplaced.sort_unstable();
        for p in unplaced {
            let shard = (0..shards)
                .min_by_key(|&s| (retained[s].len(), s))
                .expect("shards >= 1");
            retained[shard].push(p);
        }
        for (shard, list) in retained.iter().enumerate() {
            debug_assert!(list.len() == base || list.len() == base + 1);
            for &p in list {
                shard_of[p] = shard as u16;
            }
        }
    }
    owner
        .iter()
        .enumerate()
        .map(|(p, &member)| VnodeOwner {
            node: members[member].id,
            shard: shard_of[p],
        })
        .collect()
}

/// A fixed 64-bit mix (splitmix64 finaliser) of a partition and a node id,
/// used only to break ties in a way that does not favour low ids or low
/// partitions. Pure: no randomness source.
fn mix(partition: u64, node: u64) -> u64 {
    let mut z = partition
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(node)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
