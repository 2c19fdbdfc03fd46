//! membership layer: who is in the cluster, spread by gossip, and who looks
//! reachable from here (Dynamo §4.8, §4.9).
//!
//! Job:
//! * apply explicit administrator changes (join, leave, capacity change) to a
//!   member list, each change bumping that member's version counter;
//! * spread the member list by push-pull gossip with one random peer about
//!   once a second, choosing a seed node now and then so that two halves that
//!   were started apart never stay apart (§4.8.2, "logical partitions");
//! * detect failures locally, from missed heartbeats and request timeouts
//!   reported by the replica layer (§4.8.3).
//!
//! Invariants:
//! * sans-IO: time (`now_ms`) and randomness (`random`) are inputs, messages
//!   are outputs (`poll_transmit`), timers are data (`poll_timeout`);
//! * `MembershipState::merge` is deterministic, commutative, associative and
//!   idempotent: per member the record with the higher version wins, equal
//!   versions are broken by a total order on the record, so every node that
//!   has seen the same changes holds the same state, the same `epoch`, and
//!   derives the same ring;
//! * failure detection only steers routing (`is_reachable`); it never edits
//!   the member list, so a slow or partitioned node never loses ownership.
//!
//! The ring itself is derived from `MembershipState::active_members` by the
//! `ring` layer's claim algorithm; `docs/membership.md` has the details.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::replica::wire::{put_u32, put_u64, put_u8, Reader, WireError};

#[cfg(test)]
mod tests;

pub use crate::ring::NodeId;
use crate::ring::{Member, Ring, RingError, VnodeOwner};

/// The most members a cluster may have; bounds gossip messages.
pub const MEMBERS_MAX: usize = 1024;

/// The most bytes of an encoded `MembershipState`.
pub const STATE_BYTES_MAX: usize = 8 + MEMBERS_MAX * MEMBER_RECORD_BYTES;

const MEMBER_RECORD_BYTES: usize = 8 + 8 + 1 + 4 + 2;

const STATE_FORMAT_VERSION: u8 = 1;

/// Where a member stands. Ordered so that, for equal versions, a later stage
/// wins the deterministic tie-break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Owns partitions in the ring.
    Active = 1,
    /// Asked to leave: owns nothing in the ring derived from this state; its
    /// data is handed off by the runtime, then it is removed.
    Leaving = 2,
    /// Left: its handoff completed. Kept as a record (with its version) so
    /// that gossip cannot bring an older `Active` or `Leaving` record back;
    /// a later `Join` makes it active again.
    Removed = 3,
}

/// One member as the cluster agreed on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberRecord {
    /// Version counter of this record: every admin change bumps it, and the
    /// higher version wins a merge.
    pub version: u64,
    pub status: MemberStatus,
    /// Capacity weight: the share of partitions the ring gives this node.
    pub weight: u32,
    /// How many shards (cores) the node runs.
    pub shards: u16,
}

/// An explicit administrator change (§4.8.1): nodes never join or leave on
/// their own, and failure detection never triggers one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminChange {
    Join {
        node: NodeId,
        weight: u32,
        shards: u16,
    },
    Leave {
        node: NodeId,
    },
    SetCapacity {
        node: NodeId,
        weight: u32,
    },
    /// A leaving member whose data is handed off drops out of the member
    /// list (status `Removed`).
    Remove {
        node: NodeId,
    },
}

/// Why an admin change or a persisted state was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The change names a node that is not a member.
    UnknownNode(NodeId),
    /// A join of a node that is already an active member.
    AlreadyMember(NodeId),
    /// A weight of zero or a shard count of zero.
    InvalidCapacity,
    /// The cluster is at `MEMBERS_MAX`.
    TooManyMembers,
    /// Persisted or gossiped bytes did not decode.
    Wire(WireError),
    /// `Remove` of a member that is not leaving.
    NotLeaving(NodeId),
    /// `STAGED_CHANGES_MAX` changes are staged already.
    TooManyStaged,
    /// A commit with nothing staged.
    NothingStaged,
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::UnknownNode(node) => write!(f, "{node:?} is not a member"),
            MembershipError::AlreadyMember(node) => write!(f, "{node:?} is already a member"),
            MembershipError::InvalidCapacity => write!(f, "weight and shards must be >= 1"),
            MembershipError::TooManyMembers => write!(f, "more than {MEMBERS_MAX} members"),
            MembershipError::Wire(error) => write!(f, "membership state: {error}"),
            MembershipError::TooManyStaged => write!(
                f,
                "{STAGED_CHANGES_MAX} changes are staged already; commit or clear them"
            ),
            MembershipError::NothingStaged => write!(f, "nothing is staged"),
            MembershipError::NotLeaving(node) => {
                write!(
                    f,
                    "{node:?} is not leaving; only a leaving member is removed"
                )
            }
        }
    }
}

impl std::error::Error for MembershipError {}

/// The most changes staged at once (`Membership::stage`); bounds gossip.
pub const STAGED_CHANGES_MAX: usize = 64;

const STAGED_FORMAT_VERSION: u8 = 1;

const CHANGE_JOIN: u8 = 1;
const CHANGE_LEAVE: u8 = 2;
const CHANGE_SET_CAPACITY: u8 = 3;
const CHANGE_REMOVE: u8 = 4;

impl AdminChange {
    /// The member the change is about.
    pub fn node(&self) -> NodeId {
        match *self {
            AdminChange::Join { node, .. }
            | AdminChange::Leave { node }
            | AdminChange::SetCapacity { node, .. }
            | AdminChange::Remove { node } => node,
        }
    }

    /// Fixed size: tag, node, weight, shards (unused fields are zero).
    fn encode(&self, out: &mut Vec<u8>) {
        let (tag, node, weight, shards) = match *self {
            AdminChange::Join {
                node,
                weight,
                shards,
            } => (CHANGE_JOIN, node, weight, shards),
            AdminChange::Leave { node } => (CHANGE_LEAVE, node, 0, 0),
            AdminChange::SetCapacity { node, weight } => (CHANGE_SET_CAPACITY, node, weight, 0),
            AdminChange::Remove { node } => (CHANGE_REMOVE, node, 0, 0),
        };
        put_u8(out, tag);
        put_u64(out, node.0);
        put_u32(out, weight);
        out.extend_from_slice(&shards.to_le_bytes());
    }

    fn decode_from(reader: &mut Reader<'_>) -> Result<AdminChange, WireError> {
        let tag = reader.u8()?;
        let node = NodeId(reader.u64()?);
        let weight = reader.u32()?;
        let shards = u16::from(reader.u8()?) | (u16::from(reader.u8()?) << 8);
        Ok(match tag {
            CHANGE_JOIN if weight > 0 && shards > 0 => AdminChange::Join {
                node,
                weight,
                shards,
            },
            CHANGE_LEAVE => AdminChange::Leave { node },
            CHANGE_SET_CAPACITY if weight > 0 => AdminChange::SetCapacity { node, weight },
            CHANGE_REMOVE => AdminChange::Remove { node },
            _ => return Err(WireError::Invalid("staged change")),
        })
    }
}

/// The changes staged cluster-wide (Riak's `plan`/`commit`/`clear`), spread
/// by gossip next to the member list so that every node's `admin plan` shows
/// them and any node can commit or clear them.
///
/// Every edit (stage, clear, commit) bumps `version`; a merge keeps the
/// greater plan, ordered by version, then author, then the encoded changes,
/// so every node that has heard the same edits holds the same plan. Two
/// edits made on different nodes before either heard of the other conflict:
/// one of them wins whole (last writer wins), the other is lost, and
/// `admin plan` shows which. A commit applies the plan and publishes an
/// empty one at the next version in the same gossip message as the changed
/// member list; a node that commits the same plan concurrently applies the
/// same changes to the same records, which merge to one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedPlan {
    /// Bumped by every edit; the higher version wins a merge.
    pub version: u64,
    /// The node that made the last edit (0 for the empty plan of a node that
    /// never edited one): breaks ties between concurrent edits.
    pub author: NodeId,
    /// The staged changes in the order they were staged, at most
    /// `STAGED_CHANGES_MAX`.
    pub changes: Vec<AdminChange>,
}

impl Default for StagedPlan {
    fn default() -> Self {
        StagedPlan {
            version: 0,
            author: NodeId(0),
            changes: Vec::new(),
        }
    }
}

impl StagedPlan {
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.changes.len() <= STAGED_CHANGES_MAX);
        put_u8(out, STAGED_FORMAT_VERSION);
        put_u64(out, self.version);
        put_u64(out, self.author.0);
        put_u32(out, self.changes.len() as u32);
        for change in &self.changes {
            change.encode(out);
        }
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<StagedPlan, WireError> {
        if reader.u8()? != STAGED_FORMAT_VERSION {
            return Err(WireError::Invalid("staged plan format version"));
        }
        let version = reader.u64()?;
        let author = NodeId(reader.u64()?);
        let count = reader.count(STAGED_CHANGES_MAX)?;
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            changes.push(AdminChange::decode_from(reader)?);
        }
        Ok(StagedPlan {
            version,
            author,
            changes,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<StagedPlan, WireError> {
        let mut reader = Reader::new(bytes);
        let plan = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(plan)
    }

    /// The total order that decides a merge.
    fn order_key(&self) -> (u64, NodeId, Vec<u8>) {
        let mut bytes = Vec::new();
        self.encode(&mut bytes);
        (self.version, self.author, bytes)
    }

    /// Keeps the greater of the two plans; returns whether `theirs` won.
    pub fn merge(&mut self, theirs: &StagedPlan) -> bool {
        if theirs.changes.len() > STAGED_CHANGES_MAX || theirs.order_key() <= self.order_key() {
            return false;
        }
        *self = theirs.clone();
        true
    }
}

/// The replicated member list. Persist it (`encode`) after every change
/// reported by `Membership::take_state_changed`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipState {
    members: BTreeMap<NodeId, MemberRecord>,
}

impl MembershipState {
    pub fn new() -> Self {
        MembershipState::default()
    }

    pub fn members(&self) -> impl Iterator<Item = (NodeId, &MemberRecord)> + '_ {
        self.members.iter().map(|(id, record)| (*id, record))
    }

    pub fn get(&self, node: NodeId) -> Option<&MemberRecord> {
        self.members.get(&node)
    }

    /// Members that own partitions, by ascending id: the input of
    /// `Ring::claim`.
    pub fn active_members(&self) -> Vec<(NodeId, MemberRecord)> {
        self.members
            .iter()
            .filter(|(_, record)| record.status == MemberStatus::Active)
            .map(|(id, record)| (*id, *record))
            .collect()
    }

    /// The claim input: active members with their weights and shards.
    pub fn ring_members(&self) -> Vec<Member> {
        self.active_members()
            .into_iter()
            .map(|(id, record)| Member {
                id,
                weight: record.weight,
                shards: record.shards,
            })
            .collect()
    }

    /// The ring every node derives from this state (§4.8: membership
    /// changes are spread by gossip, placement follows deterministically).
    /// Pass the previous ring so that as few partitions as possible move.
    pub fn derive_ring(
        &self,
        previous: Option<&Ring>,
        q: u32,
        n_val: usize,
    ) -> Result<Ring, RingError> {
        Ring::claim(previous, &self.ring_members(), q, n_val)
    }

    /// A number that grows with every change any node has seen: the sum of
    /// the member versions. Two states with the same changes have the same
    /// epoch; a merge never lowers it. The ring carries it as its epoch.
    pub fn epoch(&self) -> u64 {
        self.members.values().map(|record| record.version).sum()
    }

    /// Applies an admin change, bumping the member's version.
    pub fn apply(&mut self, change: AdminChange) -> Result<(), MembershipError> {
        match change {
            AdminChange::Join {
                node,
                weight,
                shards,
            } => {
                if weight == 0 || shards == 0 {
                    return Err(MembershipError::InvalidCapacity);
                }
                let version = match self.members.get(&node) {
                    Some(record) if record.status == MemberStatus::Active => {
                        return Err(MembershipError::AlreadyMember(node));
                    }
                    Some(record) => record.version + 1,
                    None => {
                        if self.members.len() >= MEMBERS_MAX {
                            return Err(MembershipError::TooManyMembers);
                        }
                        1
                    }
                };
                self.members.insert(
                    node,
                    MemberRecord {
                        version,
                        status: MemberStatus::Active,
                        weight,
                        shards,
                    },
                );
            }
            AdminChange::Leave { node } => {
                let record = self
                    .members
                    .get_mut(&node)
                    .ok_or(MembershipError::UnknownNode(node))?;
                record.version += 1;
                record.status = MemberStatus::Leaving;
            }
            AdminChange::SetCapacity { node, weight } => {
                if weight == 0 {
                    return Err(MembershipError::InvalidCapacity);
                }
                let record = self
                    .members
                    .get_mut(&node)
                    .ok_or(MembershipError::UnknownNode(node))?;
                record.version += 1;
                record.weight = weight;
            }
            AdminChange::Remove { node } => {
                let record = self
                    .members
                    .get_mut(&node)
                    .ok_or(MembershipError::UnknownNode(node))?;
                if record.status != MemberStatus::Leaving {
                    return Err(MembershipError::NotLeaving(node));
                }
                record.version += 1;
                record.status = MemberStatus::Removed;
            }
        }
        Ok(())
    }

    /// Joins another node's view into this one; returns whether anything
    /// changed. Per member, the greater record wins, ordered by version then
    /// by the record's fields, which makes the result independent of the
    /// order in which views are merged.
    pub fn merge(&mut self, other: &MembershipState) -> bool {
        let mut changed = false;
        for (id, theirs) in &other.members {
            match self.members.get_mut(id) {
                Some(ours) => {
                    if theirs > ours {
                        *ours = *theirs;
                        changed = true;
                    }
                }
                None => {
                    if self.members.len() >= MEMBERS_MAX {
                        // Bounded: a view beyond MEMBERS_MAX is refused by
                        // `apply` and `decode`, so this is a broken peer.
                        continue;
                    }
                    self.members.insert(*id, *theirs);
                    changed = true;
                }
            }
        }
        changed
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.members.len() <= MEMBERS_MAX);
        put_u8(out, STATE_FORMAT_VERSION);
        put_u32(out, self.members.len() as u32);
        for (id, record) in &self.members {
            put_u64(out, id.0);
            put_u64(out, record.version);
            put_u8(out, record.status as u8);
            put_u32(out, record.weight);
            out.extend_from_slice(&record.shards.to_le_bytes());
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<MembershipState, WireError> {
        let mut reader = Reader::new(bytes);
        let state = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(state)
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<MembershipState, WireError> {
        if reader.u8()? != STATE_FORMAT_VERSION {
            return Err(WireError::Invalid("membership format version"));
        }
        let count = reader.count(MEMBERS_MAX)?;
        let mut members = BTreeMap::new();
        let mut previous: Option<u64> = None;
        for _ in 0..count {
            let id = reader.u64()?;
            if previous.is_some_and(|previous| previous >= id) {
                return Err(WireError::Invalid("member ids not increasing"));
            }
            previous = Some(id);
            let version = reader.u64()?;
            let status = match reader.u8()? {
                1 => MemberStatus::Active,
                2 => MemberStatus::Leaving,
                3 => MemberStatus::Removed,
                _ => return Err(WireError::Invalid("member status")),
            };
            let weight = reader.u32()?;
            let shards = u16::from(reader.u8()?) | (u16::from(reader.u8()?) << 8);
            if version == 0 || weight == 0 || shards == 0 {
                return Err(WireError::Invalid("member record"));
            }
            members.insert(
                NodeId(id),
                MemberRecord {
                    version,
                    status,
                    weight,
                    shards,
                },
            );
        }
        Ok(MembershipState { members })
    }
}

/// Gossip and heartbeat traffic between membership machines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipMessage {
    /// "Here is my view": the receiver merges it and answers with `Pull`
    /// when its own view holds anything the sender lacks.
    Push {
        state: MembershipState,
        ring: Option<ClaimedRing>,
        staged: StagedPlan,
    },
    /// The answer to a `Push`: the receiver's merged view.
    Pull {
        state: MembershipState,
        ring: Option<ClaimedRing>,
        staged: StagedPlan,
    },
    /// A heartbeat; answered by `Pong`.
    Ping,
    Pong,
}

const TAG_PUSH: u8 = 1;
const TAG_PULL: u8 = 2;
const TAG_PING: u8 = 3;
const TAG_PONG: u8 = 4;

impl MembershipMessage {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            MembershipMessage::Push {
                state,
                ring,
                staged,
            } => {
                put_u8(out, TAG_PUSH);
                state.encode(out);
                put_ring(out, ring);
                staged.encode(out);
            }
            MembershipMessage::Pull {
                state,
                ring,
                staged,
            } => {
                put_u8(out, TAG_PULL);
                state.encode(out);
                put_ring(out, ring);
                staged.encode(out);
            }
            MembershipMessage::Ping => put_u8(out, TAG_PING),
            MembershipMessage::Pong => put_u8(out, TAG_PONG),
        }
    }

    /// Decodes untrusted bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<MembershipMessage, WireError> {
        let mut reader = Reader::new(bytes);
        let message = match reader.u8()? {
            TAG_PUSH => MembershipMessage::Push {
                state: MembershipState::decode_from(&mut reader)?,
                ring: read_ring(&mut reader)?,
                staged: read_staged(&mut reader)?,
            },
            TAG_PULL => MembershipMessage::Pull {
                state: MembershipState::decode_from(&mut reader)?,
                ring: read_ring(&mut reader)?,
                staged: read_staged(&mut reader)?,
            },
            TAG_PING => MembershipMessage::Ping,
            TAG_PONG => MembershipMessage::Pong,
            tag => return Err(WireError::UnknownTag(tag)),
        };
        reader.finish()?;
        Ok(message)
    }
}

/// The ring the cluster agreed on, with the members it was claimed for.
/// It travels with the membership state in gossip: the higher epoch wins
/// (equal epochs: the higher fingerprint), and a node whose state names
/// other ring members than the winning ring claims the next ring from it,
/// so a change moves only the partitions it must (Riak-style claim from the
/// previous ring) and every node ends up with the same ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedRing {
    pub ring: Ring,
    /// The claim input, sorted by id: active members with weight and shards.
    pub members: Vec<Member>,
}

impl ClaimedRing {
    /// `(epoch, members, fingerprint)`: the larger record wins a merge. At
    /// equal epochs the ring of more members wins, so a node that starts
    /// alone and joins adopts the cluster's ring, not the other way round.
    pub fn order_key(&self) -> (u64, usize, u128) {
        let mut bytes = Vec::new();
        self.encode(&mut bytes);
        (
            self.ring.epoch,
            self.members.len(),
            crate::ring::key_hash(&bytes),
        )
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.ring.epoch);
        put_u32(out, self.ring.q());
        put_u8(out, self.ring.n_val() as u8);
        put_u32(out, self.members.len() as u32);
        for member in &self.members {
            put_u64(out, member.id.0);
            put_u32(out, member.weight);
            out.extend_from_slice(&member.shards.to_le_bytes());
        }
        for owner in self.ring.owners() {
            let index = self
                .members
                .binary_search_by_key(&owner.node, |m| m.id)
                .unwrap_or(0) as u16;
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&owner.shard.to_le_bytes());
        }
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<ClaimedRing, WireError> {
        let epoch = reader.u64()?;
        let q = reader.u32()?;
        if !crate::ring::partition_count_valid(q) {
            return Err(WireError::Invalid("ring partition count"));
        }
        let n_val = usize::from(reader.u8()?);
        let count = reader.count(MEMBERS_MAX)?;
        let mut members: Vec<Member> = Vec::with_capacity(count);
        for _ in 0..count {
            let id = NodeId(reader.u64()?);
            let weight = reader.u32()?;
            let shards = u16::from(reader.u8()?) | (u16::from(reader.u8()?) << 8);
            if members.last().is_some_and(|last| last.id >= id) || shards == 0 {
                return Err(WireError::Invalid("ring members"));
            }
            members.push(Member { id, weight, shards });
        }
        let mut owners = Vec::with_capacity(q as usize);
        for _ in 0..q {
            let index = usize::from(u16::from(reader.u8()?) | (u16::from(reader.u8()?) << 8));
            let shard = u16::from(reader.u8()?) | (u16::from(reader.u8()?) << 8);
            let member = members.get(index).ok_or(WireError::Invalid("ring owner"))?;
            if shard >= member.shards {
                return Err(WireError::Invalid("ring owner shard"));
            }
            owners.push(VnodeOwner {
                node: member.id,
                shard,
            });
        }
        let ring = Ring::from_parts(epoch, q, n_val, owners)
            .map_err(|_| WireError::Invalid("ring shape"))?;
        Ok(ClaimedRing { ring, members })
    }

    pub fn decode(bytes: &[u8]) -> Result<ClaimedRing, WireError> {
        let mut reader = Reader::new(bytes);
        let ring = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(ring)
    }
}

fn put_ring(out: &mut Vec<u8>, ring: &Option<ClaimedRing>) {
    match ring {
        None => put_u8(out, 0),
        Some(ring) => {
            put_u8(out, 1);
            ring.encode(out);
        }
    }
}

/// The staged plan that ends a `Push` or `Pull`; a message from a node
/// that predates staged plans ends before it and carries the empty plan.
fn read_staged(reader: &mut Reader<'_>) -> Result<StagedPlan, WireError> {
    if reader.finish().is_ok() {
        Ok(StagedPlan::default())
    } else {
        StagedPlan::decode_from(reader)
    }
}

fn read_ring(reader: &mut Reader<'_>) -> Result<Option<ClaimedRing>, WireError> {
    if reader.bool()? {
        Ok(Some(ClaimedRing::decode_from(reader)?))
    } else {
        Ok(None)
    }
}

/// The ring that follows `current` for `state`: `None` when `current` was
/// claimed for the state's ring members and N already (or nobody has
/// capacity); otherwise the claim from `current` (fresh without one), with
/// the epoch one above `current`'s. Deterministic: the same state and
/// current ring give the same next ring on every node.
pub fn next_ring(
    state: &MembershipState,
    current: Option<&ClaimedRing>,
    q: u32,
    n_val_max: usize,
) -> Option<ClaimedRing> {
    let members = state.ring_members();
    if members.is_empty() {
        return None;
    }
    let n_val = n_val_max.min(members.len()).max(1);
    if let Some(current) = current {
        if current.members == members && current.ring.n_val() == n_val {
            return None;
        }
    }
    let previous = current.map(|r| &r.ring);
    let mut ring = Ring::claim(previous, &members, q, n_val).ok()?;
    ring.epoch = previous.map_or(1, |p| p.epoch + 1);
    Some(ClaimedRing { ring, members })
}

/// Timing of gossip and failure detection.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// One gossip round and one heartbeat round per interval (§4.8.1: "each
    /// node contacts a peer chosen at random every second").
    pub gossip_interval_ms: u64,
    /// A peer not heard from for this long is suspected unreachable.
    pub suspect_after_ms: u64,
    /// One gossip round in this many goes to a seed instead of a member.
    pub seed_round_one_in: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval_ms: 1_000,
            suspect_after_ms: 3_000,
            seed_round_one_in: 4,
        }
    }
}

/// What this node believes about one peer's liveness. Local only, never
/// gossiped (§4.8.3: "a purely local notion of failure detection").
#[derive(Clone, Copy, Debug)]
struct PeerHealth {
    last_heard_ms: u64,
    suspected: bool,
}

/// The most queued outbound messages; a round adds at most one per member.
const OUTBOX_MAX: usize = 4 * MEMBERS_MAX;

/// The membership machine of one node.
pub struct Membership {
    /// This node.
    me: NodeId,
    config: MembershipConfig,
    /// The agreed member list, merged from gossip and admin changes.
    state: MembershipState,
    /// Seed nodes, contacted now and then whatever the member list says, so
    /// that nodes which were configured apart still meet.
    seeds: Vec<NodeId>,
    /// When the next gossip and heartbeat round is due.
    next_round_ms: u64,
    /// Local liveness beliefs, by peer.
    health: BTreeMap<NodeId, PeerHealth>,
    /// Messages waiting for `poll_transmit`.
    outbox: VecDeque<(NodeId, MembershipMessage)>,
    /// Set when `state` or `ring` changed; the driver persists them and
    /// publishes the ring.
    state_changed: bool,
    /// The agreed ring, when this machine keeps one (`with_ring`).
    ring: Option<ClaimedRing>,
    /// `(q, n_val)` for claiming rings; `None`: the machine keeps no ring.
    ring_params: Option<(u32, usize)>,
    /// The changes staged cluster-wide, gossiped with the state.
    staged: StagedPlan,
    /// Set when `staged` changed; the driver persists it.
    staged_changed: bool,
}

impl Membership {
    /// A machine starting at `now_ms` from `state` (empty for a new node, or
    /// the persisted state after a restart).
    pub fn new(
        me: NodeId,
        config: MembershipConfig,
        seeds: Vec<NodeId>,
        state: MembershipState,
        now_ms: u64,
    ) -> Self {
        assert!(config.gossip_interval_ms > 0);
        assert!(config.suspect_after_ms >= config.gossip_interval_ms);
        assert!(config.seed_round_one_in > 0);
        Membership {
            me,
            config,
            state,
            seeds,
            next_round_ms: now_ms,
            health: BTreeMap::new(),
            outbox: VecDeque::new(),
            state_changed: false,
            ring: None,
            ring_params: None,
            staged: StagedPlan::default(),
            staged_changed: false,
        }
    }

    /// Starts from a persisted staged plan (after a restart).
    pub fn with_staged(mut self, staged: StagedPlan) -> Self {
        self.staged = staged;
        self
    }

    /// The changes staged cluster-wide.
    pub fn staged(&self) -> &StagedPlan {
        &self.staged
    }

    /// Whether the staged plan changed since the last call (persist it).
    pub fn take_staged_changed(&mut self) -> bool {
        std::mem::take(&mut self.staged_changed)
    }

    fn edit_staged(&mut self, changes: Vec<AdminChange>) {
        self.staged = StagedPlan {
            version: self.staged.version + 1,
            author: self.me,
            changes,
        };
        self.staged_changed = true;
    }

    /// Stages `change` after checking that it applies on top of the current
    /// state and what is staged already; nothing else changes until
    /// `commit_staged`. Returns how many changes are staged.
    pub fn stage(&mut self, change: AdminChange) -> Result<usize, MembershipError> {
        if self.staged.changes.len() >= STAGED_CHANGES_MAX {
            return Err(MembershipError::TooManyStaged);
        }
        let mut state = self.state.clone();
        for staged in self.staged.changes.iter().chain(std::iter::once(&change)) {
            state.apply(*staged)?;
        }
        let mut changes = self.staged.changes.clone();
        changes.push(change);
        self.edit_staged(changes);
        Ok(self.staged.changes.len())
    }

    /// Drops every staged change; returns how many there were.
    pub fn clear_staged(&mut self) -> usize {
        let count = self.staged.changes.len();
        self.edit_staged(Vec::new());
        count
    }

    /// Applies every staged change at once (`admin_batch`: all or none, one
    /// claim) and empties the plan. Returns the changes applied.
    pub fn commit_staged(&mut self) -> Result<Vec<AdminChange>, MembershipError> {
        if self.staged.changes.is_empty() {
            return Err(MembershipError::NothingStaged);
        }
        let changes = self.staged.changes.clone();
        self.admin_batch(&changes)?;
        self.edit_staged(Vec::new());
        Ok(changes)
    }

    fn merge_staged(&mut self, theirs: &StagedPlan) {
        if self.staged.merge(theirs) {
            self.staged_changed = true;
        }
    }

    /// Makes the machine keep the cluster's ring (`q` partitions, `n_val`
    /// replicas at most), starting from `ring` (the persisted one) or, with
    /// none, from a fresh claim of the current state.
    pub fn with_ring(mut self, q: u32, n_val: usize, ring: Option<ClaimedRing>) -> Self {
        self.ring_params = Some((q, n_val.max(1)));
        self.ring = ring.filter(|ring| ring.ring.q() == q);
        self.reconcile_ring();
        self
    }

    /// The agreed ring (with `with_ring`).
    pub fn ring(&self) -> Option<&ClaimedRing> {
        self.ring.as_ref()
    }

    /// Adopts `theirs` when it wins over ours: higher epoch, then higher
    /// fingerprint. Returns whether it was adopted.
    fn adopt_ring(&mut self, theirs: Option<ClaimedRing>) -> bool {
        let Some((q, _)) = self.ring_params else {
            return false;
        };
        let Some(theirs) = theirs else { return false };
        if theirs.ring.q() != q {
            return false; // another cluster's ring: never adopted
        }
        let better = match &self.ring {
            None => true,
            Some(ours) => theirs.order_key() > ours.order_key(),
        };
        if better {
            self.ring = Some(theirs);
            self.state_changed = true;
        }
        better
    }

    /// When the ring was claimed for other members (or another N) than the
    /// state's, claims the next ring from it: partitions move only as far as
    /// the change requires, and the epoch goes up by one. Every node that
    /// holds the same ring and state claims the same next ring.
    fn reconcile_ring(&mut self) {
        let Some((q, n_val_max)) = self.ring_params else {
            return;
        };
        if let Some(next) = next_ring(&self.state, self.ring.as_ref(), q, n_val_max) {
            self.ring = Some(next);
            self.state_changed = true;
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn state(&self) -> &MembershipState {
        &self.state
    }

    /// Applies an administrator change here; gossip spreads it.
    pub fn admin(&mut self, change: AdminChange) -> Result<(), MembershipError> {
        self.state.apply(change)?;
        self.state_changed = true;
        self.reconcile_ring();
        Ok(())
    }

    /// Applies several admin changes at once (a staged plan's commit): all
    /// or none, and one claim for all of them, so the partitions move once.
    pub fn admin_batch(&mut self, changes: &[AdminChange]) -> Result<(), MembershipError> {
        let mut state = self.state.clone();
        for change in changes {
            state.apply(*change)?;
        }
        self.state = state;
        self.state_changed = true;
        self.reconcile_ring();
        Ok(())
    }

    /// Whether the state changed since the last call (persist it, re-derive
    /// the ring).
    pub fn take_state_changed(&mut self) -> bool {
        std::mem::take(&mut self.state_changed)
    }

    /// Any traffic from `peer` (gossip, replica messages, replies) proves it
    /// is alive.
    pub fn handle_heard_from(&mut self, now_ms: u64, peer: NodeId) {
        if peer == self.me {
            return;
        }
        self.health.insert(
            peer,
            PeerHealth {
                last_heard_ms: now_ms,
                suspected: false,
            },
        );
    }

    /// The replica layer waited for `peer` in vain: suspect it until it is
    /// heard from again. This steers routing only.
    pub fn handle_request_timeout(&mut self, now_ms: u64, peer: NodeId) {
        if peer == self.me {
            return;
        }
        let health = self.health.entry(peer).or_insert(PeerHealth {
            last_heard_ms: now_ms,
            suspected: true,
        });
        health.suspected = true;
    }

    /// Whether routing should currently use `peer`. Optimistic for a peer
    /// never heard of: it is reachable until heartbeats say otherwise.
    pub fn is_reachable(&self, peer: NodeId) -> bool {
        peer == self.me
            || self
                .health
                .get(&peer)
                .is_none_or(|health| !health.suspected)
    }

    pub fn handle_message(&mut self, now_ms: u64, from: NodeId, message: MembershipMessage) {
        self.handle_heard_from(now_ms, from);
        match message {
            MembershipMessage::Push {
                state,
                ring,
                staged,
            } => {
                let their_key = ring.as_ref().map(ClaimedRing::order_key);
                if self.state.merge(&state) {
                    self.state_changed = true;
                }
                self.adopt_ring(ring);
                self.reconcile_ring();
                self.merge_staged(&staged);
                // Push-pull: answer only when the sender lacks something.
                let our_key = self.ring.as_ref().map(ClaimedRing::order_key);
                if state != self.state
                    || (self.ring_params.is_some() && their_key != our_key)
                    || staged != self.staged
                {
                    self.send(
                        from,
                        MembershipMessage::Pull {
                            state: self.state.clone(),
                            ring: self.ring.clone(),
                            staged: self.staged.clone(),
                        },
                    );
                }
            }
            MembershipMessage::Pull {
                state,
                ring,
                staged,
            } => {
                if self.state.merge(&state) {
                    self.state_changed = true;
                }
                self.adopt_ring(ring);
                self.reconcile_ring();
                self.merge_staged(&staged);
            }
            MembershipMessage::Ping => self.send(from, MembershipMessage::Pong),
            MembershipMessage::Pong => {}
        }
    }

    /// Runs the gossip and heartbeat round when due. `random` is a fresh
    /// random number from the driver's RNG (seeded in the simulator).
    pub fn handle_timeout(&mut self, now_ms: u64, random: u64) {
        if now_ms < self.next_round_ms {
            return;
        }
        self.next_round_ms = now_ms + self.config.gossip_interval_ms;

        let peers: Vec<NodeId> = self
            .state
            .members
            .iter()
            .filter(|(id, record)| **id != self.me && record.status != MemberStatus::Removed)
            .map(|(id, _)| *id)
            .collect();
        // Heartbeats to every member: O(members) messages a second per
        // node, fine for the cluster sizes dynakv targets (tens of nodes).
        for &peer in &peers {
            self.send(peer, MembershipMessage::Ping);
            let health = self.health.entry(peer).or_insert(PeerHealth {
                last_heard_ms: now_ms,
                suspected: false,
            });
            if now_ms.saturating_sub(health.last_heard_ms) > self.config.suspect_after_ms {
                health.suspected = true;
            }
        }

        let seeds: Vec<NodeId> = self
            .seeds
            .iter()
            .copied()
            .filter(|id| *id != self.me)
            .collect();
        let seed_round = random % self.config.seed_round_one_in == 0 || peers.is_empty();
        let pool = if seed_round && !seeds.is_empty() {
            &seeds
        } else {
            &peers
        };
        if !pool.is_empty() {
            let target = pool[((random >> 16) % pool.len() as u64) as usize];
            self.send(
                target,
                MembershipMessage::Push {
                    state: self.state.clone(),
                    ring: self.ring.clone(),
                    staged: self.staged.clone(),
                },
            );
        }
    }

    fn send(&mut self, to: NodeId, message: MembershipMessage) {
        if self.outbox.len() >= OUTBOX_MAX {
            // Gossip is periodic: a dropped message is resent next round.
            return;
        }
        self.outbox.push_back((to, message));
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, MembershipMessage)> {
        self.outbox.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_round_ms)
    }

    /// Peers currently suspected, for diagnostics.
    pub fn suspected(&self) -> BTreeSet<NodeId> {
        self.health
            .iter()
            .filter(|(_, health)| health.suspected)
            .map(|(id, _)| *id)
            .collect()
    }
}
