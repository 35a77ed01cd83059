//! Resharding lineage, as pure decisions over plain data: which leases to create at start and
//! when a shard ends, when a child may start, which holes a shard sync repairs, and which
//! finished leases may be deleted.
//!
//! Unstable: public only with the feature `unstable-internals` (for tests outside the crate), with
//! no stability promise.
//!
//! The rule that keeps per-key order across splits and merges: **a shard is processed only once
//! every parent that has a lease has reached `SHARD_END`** (a merge has two parents). A parent
//! without a lease does not block: it was finished and cleaned up, or lies before the initial
//! position.

use std::collections::{BTreeSet, HashMap};

use kinesis_aggregation::HashKeyRange;

use crate::{checkpoint::Checkpoint, lease::Lease};

/// Where a new application starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitialPosition {
    /// The oldest record still in each shard, and every shard still in the stream's retention.
    TrimHorizon,
    /// Records put from now on, in the shards open now (the KCL's default in code).
    #[default]
    Latest,
    /// Records from a timestamp on (the timestamp is the worker's setting; the lease records only
    /// `AT_TIMESTAMP`, as the KCL's does).
    AtTimestamp,
}

impl InitialPosition {
    /// The checkpoint a new lease starts with.
    pub fn checkpoint(self) -> Checkpoint {
        match self {
            InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
            InitialPosition::Latest => Checkpoint::Latest,
            InitialPosition::AtTimestamp => Checkpoint::AtTimestamp,
        }
    }
}

/// A shard as `ListShards` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDescription {
    /// The shard id.
    pub id: String,
    /// `ParentShardId` and `AdjacentParentShardId` (a merge has both).
    pub parents: BTreeSet<String>,
    /// The shard's hash-key range.
    pub hash_key_range: Option<HashKeyRange>,
    /// Whether the shard is closed (its sequence-number range has an end).
    pub closed: bool,
}

/// A child named by `GetRecords` or `SubscribeToShard` at a shard's end (`ChildShards`), or found
/// through `ListShards`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildShard {
    /// The child's shard id.
    pub id: String,
    /// All of its parents (two for a merge).
    pub parents: BTreeSet<String>,
    /// Its hash-key range.
    pub hash_key_range: Option<HashKeyRange>,
}

fn lease_for(
    id: &str,
    parents: &BTreeSet<String>,
    range: Option<HashKeyRange>,
    checkpoint: Checkpoint,
) -> Lease {
    let mut lease = Lease::new(id, checkpoint).with_parents(parents.iter().cloned());
    lease.hash_key_range = range;
    lease
}

/// The leases a new application creates from the shard listing.
///
/// From `TRIM_HORIZON` or a timestamp, every listed shard gets a lease (closed ones included:
/// their records are still in retention, and lineage orders them before their children). From
/// `LATEST`, only the open shards: older data is not wanted, and their closed parents get no
/// lease, so nothing blocks them. Closed shards are recognised by their ending sequence number,
/// so a listing that ignores `ShardFilter` gives the same answer.
pub fn initial_leases(shards: &[ShardDescription], position: InitialPosition) -> Vec<Lease> {
    shards
        .iter()
        .filter(|s| position != InitialPosition::Latest || !s.closed)
        .map(|s| lease_for(&s.id, &s.parents, s.hash_key_range, position.checkpoint()))
        .collect()
}

/// The leases to create for the children of a shard that ended: each starts at `TRIM_HORIZON`
/// (all of the child's data comes after its parents'), unowned, with its parents and range.
pub fn child_leases(children: &[ChildShard]) -> Vec<Lease> {
    children
        .iter()
        .map(|c| lease_for(&c.id, &c.parents, c.hash_key_range, Checkpoint::TrimHorizon))
        .collect()
}

/// Whether a lease's shard may be processed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Every parent that has a lease has reached `SHARD_END`.
    Ready,
    /// These parents' leases have not reached `SHARD_END` yet.
    Blocked {
        /// The parents still being processed.
        waiting_on: Vec<String>,
    },
}

/// Whether `lease`'s shard may be processed, given every lease in the table by key.
pub fn readiness(lease: &Lease, leases: &HashMap<&str, &Lease>) -> Readiness {
    let waiting_on: Vec<String> = lease
        .parent_shard_ids
        .iter()
        .filter(|parent| {
            leases
                .get(parent.as_str())
                .is_some_and(|p| !p.is_finished())
        })
        .cloned()
        .collect();
    if waiting_on.is_empty() {
        Readiness::Ready
    } else {
        Readiness::Blocked { waiting_on }
    }
}

/// Whether a child of the shard `ended` may get its lease now: every other parent has a lease, or
/// is no longer listed (trimmed away after it was processed).
///
/// A parent without a lease may be a shard further down a lineage still being read (a merge of a
/// shard with a descendant of shards not yet finished): a child created before that parent's lease
/// would count as ready and start before that parent's records were read. Such a child is created
/// by its last parent to end, or by a shard sync, once every parent has a lease.
pub fn child_may_be_created(
    child: &ChildShard,
    ended: &str,
    has_lease: impl Fn(&str) -> bool,
    listed: impl Fn(&str) -> bool,
) -> bool {
    child
        .parents
        .iter()
        .filter(|p| p.as_str() != ended)
        .all(|p| has_lease(p) || !listed(p))
}

/// The leases a shard sync creates to repair holes, all starting at `TRIM_HORIZON` so that no
/// record of the shard is skipped:
/// - listed shards without a lease below a leased shard (a descendant not yet created, for
///   instance after a shard end seen without `ChildShards`), each once every one of its listed
///   parents has a lease (see [`child_may_be_created`]), down the lineage as far as that holds;
/// - open shards without a lease with no leased ancestor (a hole in the hash-key coverage).
///
/// A closed shard with no leased ancestor is left alone: either it was processed and its lease
/// cleaned up, or it lies before the initial position.
pub fn repairs(shards: &[ShardDescription], leases: &HashMap<&str, &Lease>) -> Vec<Lease> {
    let listed: HashMap<&str, &ShardDescription> =
        shards.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut have: BTreeSet<&str> = leases.keys().copied().collect();
    let mut out = Vec::new();
    loop {
        let mut grew = false;
        for shard in shards {
            if have.contains(shard.id.as_str()) {
                continue;
            }
            let below_a_lease = shard.parents.iter().any(|p| have.contains(p.as_str()));
            let parents_ready = shard
                .parents
                .iter()
                .all(|p| have.contains(p.as_str()) || !listed.contains_key(p.as_str()));
            if below_a_lease && parents_ready {
                out.push(lease_for(
                    &shard.id,
                    &shard.parents,
                    shard.hash_key_range,
                    Checkpoint::TrimHorizon,
                ));
                have.insert(shard.id.as_str());
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    for shard in shards {
        if !shard.closed
            && !have.contains(shard.id.as_str())
            && !has_leased_ancestor(shard, &listed, &have)
        {
            out.push(lease_for(
                &shard.id,
                &shard.parents,
                shard.hash_key_range,
                Checkpoint::TrimHorizon,
            ));
        }
    }
    out
}

/// Whether any ancestor of `shard` (through the listing) has a lease.
fn has_leased_ancestor(
    shard: &ShardDescription,
    listed: &HashMap<&str, &ShardDescription>,
    have: &BTreeSet<&str>,
) -> bool {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&str> = shard.parents.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if have.contains(id) {
            return true;
        }
        if let Some(parent) = listed.get(id) {
            stack.extend(parent.parents.iter().map(String::as_str));
        }
    }
    false
}

/// Finished leases that may be deleted: at `SHARD_END`, with children recorded, every child's
/// lease present and started (past its starting sentinel), and no lease left for any of its own
/// parents (so the lineage above it is gone first).
pub fn removable(leases: &HashMap<&str, &Lease>) -> Vec<String> {
    let mut out: Vec<String> = leases
        .values()
        .filter(|l| l.is_finished() && !l.child_shard_ids.is_empty())
        .filter(|l| {
            l.child_shard_ids.iter().all(|child| {
                leases
                    .get(child.as_str())
                    .is_some_and(|c| !c.checkpoint.is_sentinel_start())
            })
        })
        .filter(|l| {
            l.parent_shard_ids
                .iter()
                .all(|p| !leases.contains_key(p.as_str()))
        })
        .map(|l| l.key.clone())
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SequenceNumber;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardDescription {
        ShardDescription {
            id: id.to_owned(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            hash_key_range: Some(HashKeyRange::ALL),
            closed,
        }
    }

    fn lease(id: &str, parents: &[&str], checkpoint: Checkpoint) -> Lease {
        Lease::new(id, checkpoint).with_parents(parents.iter().copied())
    }

    fn by_key(leases: &[Lease]) -> HashMap<&str, &Lease> {
        leases.iter().map(|l| (l.key.as_str(), l)).collect()
    }

    fn at(n: &str) -> Checkpoint {
        Checkpoint::at(SequenceNumber::parse(n).unwrap(), 0)
    }

    /// 0 split into 1 and 2; 1 and 2 merged into 3; 4 unrelated and open.
    fn listing() -> Vec<ShardDescription> {
        vec![
            shard("0", &[], true),
            shard("1", &["0"], true),
            shard("2", &["0"], true),
            shard("3", &["1", "2"], false),
            shard("4", &[], false),
        ]
    }

    #[test]
    fn initial_leases_follow_the_position() {
        let keys = |position| -> Vec<(String, Checkpoint, usize)> {
            initial_leases(&listing(), position)
                .into_iter()
                .map(|l| (l.key, l.checkpoint, l.parent_shard_ids.len()))
                .collect()
        };
        let all = keys(InitialPosition::TrimHorizon);
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|(_, cp, _)| *cp == Checkpoint::TrimHorizon));
        assert_eq!(all[3], ("3".to_owned(), Checkpoint::TrimHorizon, 2));
        let latest = keys(InitialPosition::Latest);
        assert_eq!(
            latest,
            [
                ("3".to_owned(), Checkpoint::Latest, 2),
                ("4".to_owned(), Checkpoint::Latest, 0)
            ]
        );
        assert_eq!(keys(InitialPosition::AtTimestamp).len(), 5);
    }

    #[test]
    fn a_child_waits_for_every_parent_with_a_lease() {
        // (parent checkpoints, expected readiness of the merge child "3")
        type Case<'a> = (&'a [(&'a str, Checkpoint)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&[], &[]),
            (
                &[("1", Checkpoint::ShardEnd), ("2", Checkpoint::ShardEnd)],
                &[],
            ),
            (&[("1", Checkpoint::ShardEnd), ("2", at("5"))], &["2"]),
            (
                &[("1", Checkpoint::TrimHorizon), ("2", at("5"))],
                &["1", "2"],
            ),
            // One parent's lease is gone (finished and cleaned up): only the other counts.
            (&[("2", Checkpoint::ShardEnd)], &[]),
            (&[("2", Checkpoint::Latest)], &["2"]),
        ];
        for (parents, waiting) in cases {
            let mut leases: Vec<Lease> = parents
                .iter()
                .map(|(id, cp)| lease(id, &[], cp.clone()))
                .collect();
            leases.push(lease("3", &["1", "2"], Checkpoint::TrimHorizon));
            let map = by_key(&leases);
            let want = if waiting.is_empty() {
                Readiness::Ready
            } else {
                Readiness::Blocked {
                    waiting_on: waiting.iter().map(|s| (*s).to_owned()).collect(),
                }
            };
            assert_eq!(readiness(map["3"], &map), want, "{parents:?}");
        }
    }

    #[test]
    fn child_leases_start_at_trim_horizon_with_parents_and_range() {
        let children = child_leases(&[ChildShard {
            id: "3".into(),
            parents: ["1".to_owned(), "2".to_owned()].into(),
            hash_key_range: Some(HashKeyRange::ALL),
        }]);
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].checkpoint, Checkpoint::TrimHorizon);
        assert_eq!(children[0].owner, None);
        assert_eq!(children[0].parent_shard_ids.len(), 2);
        assert_eq!(children[0].hash_key_range, Some(HashKeyRange::ALL));
    }

    #[test]
    fn repairs_fill_holes_but_leave_finished_history_alone() {
        // Leases for 1 and 2 only: 3 (their child) and 4 (an open hole) are repaired; 0 (closed,
        // no parent lease: processed and cleaned up) is not.
        let leases = [
            lease("1", &["0"], at("9")),
            lease("2", &["0"], Checkpoint::ShardEnd),
        ];
        let repaired: Vec<String> = repairs(&listing(), &by_key(&leases))
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(repaired, ["3", "4"]);
        let all: Vec<Lease> = initial_leases(&listing(), InitialPosition::TrimHorizon);
        assert!(repairs(&listing(), &by_key(&all)).is_empty());
    }

    #[test]
    fn a_merge_child_waits_for_the_lease_of_a_parent_further_down_a_lineage() {
        // 0 split into 1 and 2, which merged into 3; then 3 and 5 merged into 6. Only 0 and 5 have
        // leases (0 is still being read): 6 must not be created before 3 has a lease, and 3 not
        // before 1 and 2 have theirs.
        let listing = vec![
            shard("0", &[], true),
            shard("1", &["0"], true),
            shard("2", &["0"], true),
            shard("3", &["1", "2"], true),
            shard("5", &[], true),
            shard("6", &["3", "5"], false),
        ];
        let leases = [
            lease("0", &[], at("7")),
            lease("5", &[], Checkpoint::ShardEnd),
        ];
        let created: Vec<String> = repairs(&listing, &by_key(&leases))
            .into_iter()
            .map(|l| l.key)
            .collect();
        // Down the lineage in one sync: 1 and 2 below 0, then 3 below both, then 6.
        assert_eq!(created, ["1", "2", "3", "6"]);
        // At the end of 5, the child 6 may not be created while 3 has no lease.
        let six = ChildShard {
            id: "6".into(),
            parents: ["3".to_owned(), "5".to_owned()].into(),
            hash_key_range: None,
        };
        let leased = |have: &'static [&'static str]| move |id: &str| have.contains(&id);
        assert!(!child_may_be_created(
            &six,
            "5",
            leased(&["0", "5"]),
            |_| true
        ));
        assert!(child_may_be_created(&six, "5", leased(&["3", "5"]), |_| {
            true
        }));
        // A parent no longer listed (trimmed away) does not hold it back.
        assert!(child_may_be_created(&six, "5", leased(&["5"]), |id| id != "3"));
    }

    #[test]
    fn finished_leases_go_once_children_started_and_parents_are_gone() {
        let mut zero = lease("0", &[], Checkpoint::ShardEnd);
        zero.child_shard_ids = ["1".to_owned(), "2".to_owned()].into();
        let mut one = lease("1", &["0"], Checkpoint::ShardEnd);
        one.child_shard_ids = ["3".to_owned()].into();
        let two = lease("2", &["0"], at("4"));
        let three = lease("3", &["1", "2"], Checkpoint::TrimHorizon);
        let leases = [zero.clone(), one.clone(), two.clone(), three.clone()];
        // 0: children started -> removable. 1: its parent 0 still has a lease, and 3 not started.
        assert_eq!(removable(&by_key(&leases)), ["0"]);
        let three_started = lease("3", &["1", "2"], at("1"));
        let leases = [one.clone(), two.clone(), three_started];
        assert_eq!(removable(&by_key(&leases)), ["1"]);
        // A child with no lease yet keeps its parent.
        let leases = [one, two];
        assert!(removable(&by_key(&leases)).is_empty());
    }
}
