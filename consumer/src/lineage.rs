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

/// Whether a table that is not empty is still an application's first leases being created (by
/// other workers that started at the same time): every lease still at the initial position's
/// sentinel, and none finished. Its missing leases are then the initial ones
/// ([`initial_leases`]), not [`repairs`] (which start at `TRIM_HORIZON` and would read, from
/// `LATEST`, data the application does not want). A lease that has moved past its sentinel, or a
/// finished one, shows the application has run.
///
/// A table whose leases never moved (an application that never checkpointed) is also taken for
/// one: a lease deleted from it by hand is created again at the initial position, as the KCL does
/// for a shard none of whose ancestors has a lease.
pub fn first_leases_in_progress(leases: &[Lease], position: InitialPosition) -> bool {
    let sentinel = position.checkpoint();
    !leases.is_empty() && leases.iter().all(|l| l.checkpoint == sentinel)
}

/// The creation of missing leases by one worker, as a plan the driver follows: create
/// [`next`](Self::next); report it [`created`](Self::created), or [`refused`](Self::refused) (it
/// exists: another worker created it) and then [`rescanned`](Self::rescanned) with the table's
/// keys.
///
/// - **Generations.** A lease comes after every parent of it that is also to be created, so that
///   no child's lease exists before its parent's (a child whose parent has no lease counts as
///   ready, see [`readiness`]). A generation is finished, by this worker or others, before the
///   next one starts.
/// - **Spread.** Within a generation the worker starts at a point chosen by `start` (a hash of its
///   id) and goes round, so that workers that start together (a fleet's first start) create
///   different leases instead of all trying the same ones in the same order.
/// - **Refusals.** A refusal means another worker is creating here too: the worker looks at the
///   table and goes on with what is still missing. Each refusal removes a lease from the plan, so
///   there are at most as many refusals (and scans) as leases, and in practice a few per worker.
#[derive(Debug)]
pub(crate) struct Creation {
    /// Generations still to create, the current one first, each in reverse creation order (the
    /// next lease last).
    generations: std::collections::VecDeque<Vec<Lease>>,
    /// Where the worker goes next after a refusal: mixed anew at each one.
    jump: u64,
}

impl Creation {
    pub(crate) fn new(leases: Vec<Lease>, start: u64) -> Self {
        let mut pending = leases;
        let mut generations = std::collections::VecDeque::new();
        while !pending.is_empty() {
            let waiting: BTreeSet<String> = pending.iter().map(|l| l.key.clone()).collect();
            let (mut ready, rest): (Vec<Lease>, Vec<Lease>) = pending.into_iter().partition(|l| {
                !l.parent_shard_ids
                    .iter()
                    .any(|p| p != &l.key && waiting.contains(p))
            });
            if ready.is_empty() {
                // A cycle in the listing (never seen from Kinesis): the given order.
                let mut rest = rest;
                rest.reverse();
                generations.push_back(rest);
                break;
            }
            let len = ready.len() as u64;
            // The remainder is below `len`, which came from a usize.
            ready.rotate_left((start % len) as usize);
            ready.reverse();
            generations.push_back(ready);
            pending = rest;
        }
        Creation {
            generations,
            jump: start,
        }
    }

    /// The lease to create now; `None` once every lease of the plan exists.
    pub(crate) fn next(&self) -> Option<&Lease> {
        self.generations.front().and_then(|g| g.last())
    }

    /// The lease [`next`](Self::next) gave was created.
    pub(crate) fn created(&mut self) {
        self.done_with_next();
    }

    /// The lease [`next`](Self::next) gave exists already; look at the table and report it with
    /// [`rescanned`](Self::rescanned).
    pub(crate) fn refused(&mut self) {
        self.done_with_next();
    }

    /// The table holds the leases for which `exists` is true: they are not created again. The
    /// worker goes on from another point of what is missing, chosen anew: going on with the next
    /// lease would be going on right behind the worker it ran into, and the two would then
    /// refuse each other a write in two.
    pub(crate) fn rescanned(&mut self, exists: impl Fn(&str) -> bool) {
        // splitmix64's step: a new point, the same for the same worker and refusal.
        self.jump = self.jump.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.jump;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        if let Some(generation) = self.generations.front_mut() {
            generation.retain(|l| !exists(&l.key));
            if !generation.is_empty() {
                let len = generation.len() as u64;
                // The remainder is below `len`, which came from a usize.
                generation.rotate_left((mixed % len) as usize);
            }
        }
        self.drop_finished();
    }

    fn done_with_next(&mut self) {
        if let Some(generation) = self.generations.front_mut() {
            generation.pop();
        }
        self.drop_finished();
    }

    fn drop_finished(&mut self) {
        while self.generations.front().is_some_and(Vec::is_empty) {
            self.generations.pop_front();
        }
    }
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

    /// Every lease of the plan, in the order one worker alone creates them.
    fn alone(leases: Vec<Lease>, start: u64) -> Vec<String> {
        let mut plan = Creation::new(leases, start);
        let mut order = Vec::new();
        while let Some(lease) = plan.next() {
            order.push(lease.key.clone());
            plan.created();
        }
        order
    }

    #[test]
    fn a_creation_plan_puts_parents_first_and_every_lease_once_from_any_start() {
        let leases = initial_leases(&listing(), InitialPosition::TrimHorizon);
        let mut firsts = BTreeSet::new();
        for start in 0..16 {
            let order = alone(leases.clone(), start);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, ["0", "1", "2", "3", "4"], "start {start}: {order:?}");
            let at = |k: &str| order.iter().position(|o| o == k);
            for lease in &leases {
                for parent in &lease.parent_shard_ids {
                    assert!(
                        at(parent) < at(&lease.key),
                        "start {start}: {} before its parent {parent}: {order:?}",
                        lease.key
                    );
                }
            }
            firsts.insert(order[0].clone());
        }
        // The first generation (0 and 4) is entered at either point.
        assert_eq!(firsts, BTreeSet::from(["0".to_owned(), "4".to_owned()]));
        // A cycle (never listed by Kinesis) is still created, once each.
        let cycle = vec![
            lease("a", &["b"], Checkpoint::TrimHorizon),
            lease("b", &["a"], Checkpoint::TrimHorizon),
        ];
        assert_eq!(alone(cycle, 3), ["a", "b"]);
        assert_eq!(alone(Vec::new(), 3), Vec::<String>::new());
    }

    #[test]
    fn a_refusal_drops_what_the_table_holds_and_the_plan_goes_on() {
        let leases: Vec<Lease> = (0..6)
            .map(|i| lease(&i.to_string(), &[], Checkpoint::Latest))
            .collect();
        let mut plan = Creation::new(leases, 0);
        assert_eq!(plan.next().map(|l| l.key.as_str()), Some("0"));
        plan.created();
        // "1" was created by another worker, and "3" and "4" too meanwhile.
        plan.refused();
        plan.rescanned(|k| ["0", "1", "3", "4"].contains(&k));
        let mut rest = alone_from(&mut plan);
        rest.sort();
        assert_eq!(rest, ["2", "5"]);
    }

    fn alone_from(plan: &mut Creation) -> Vec<String> {
        let mut order = Vec::new();
        while let Some(lease) = plan.next() {
            order.push(lease.key.clone());
            plan.created();
        }
        order
    }

    /// A fleet's first start, as the driver runs the plan: `workers` workers, each with its plan
    /// from the hash of its id, their calls interleaved at random against one table with
    /// DynamoDB's `attribute_not_exists` semantics. Every lease is created exactly once, no child
    /// before its parent, and the refused writes (each followed by a scan) stay a few per worker,
    /// against workers x leases when every worker went through the same list.
    #[test]
    fn workers_starting_together_create_every_lease_once_with_few_refusals() {
        use rand::{Rng, SeedableRng};
        // 1,000 open shards, and 200 of them split in two (closed parents with children).
        let mut shards: Vec<ShardDescription> = (0..1000)
            .map(|i| shard(&format!("s{i}"), &[], i < 200))
            .collect();
        for i in 0..200 {
            let parent = format!("s{i}");
            shards.push(shard(&format!("s{i}-a"), &[&parent], false));
            shards.push(shard(&format!("s{i}-b"), &[&parent], false));
        }
        let leases = initial_leases(&shards, InitialPosition::TrimHorizon);
        for workers in [2usize, 10, 50] {
            for seed in 0..5u64 {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut plans: Vec<Creation> = (0..workers)
                    .map(|w| {
                        Creation::new(
                            leases.clone(),
                            crate::coordination::rank(&format!("worker-{w}-{seed}")),
                        )
                    })
                    .collect();
                let mut table: BTreeSet<String> = BTreeSet::new();
                let mut refusals = 0usize;
                loop {
                    let busy: Vec<usize> =
                        (0..workers).filter(|&w| plans[w].next().is_some()).collect();
                    if busy.is_empty() {
                        break;
                    }
                    let w = busy[rng.random_range(0..busy.len())];
                    let Some(lease) = plans[w].next() else {
                        continue;
                    };
                    let key = lease.key.clone();
                    for parent in &lease.parent_shard_ids {
                        assert!(table.contains(parent), "{key} created before {parent}");
                    }
                    if table.insert(key) {
                        plans[w].created();
                    } else {
                        refusals += 1;
                        plans[w].refused();
                        plans[w].rescanned(|k| table.contains(k));
                    }
                }
                assert_eq!(table.len(), leases.len());
                // Measured: 8 to 9 per worker; every worker through the same list would
                // be about workers x leases (70,000 at 50 workers).
                assert!(
                    refusals <= workers * 25,
                    "{workers} workers, seed {seed}: {refusals} refusals"
                );
                if seed == 0 {
                    eprintln!(
                        "{workers} workers, {} leases: {refusals} refusals (and as many scans)",
                        leases.len()
                    );
                }
            }
        }
    }

    #[test]
    fn first_leases_in_progress_only_while_every_lease_is_at_its_sentinel() {
        let latest = |k: &str| lease(k, &[], Checkpoint::Latest);
        // (leases, position, expected)
        let table: Vec<(Vec<Lease>, InitialPosition, bool)> = vec![
            (vec![], InitialPosition::Latest, false),
            (vec![latest("a"), latest("b")], InitialPosition::Latest, true),
            (vec![latest("a")], InitialPosition::TrimHorizon, false),
            (
                vec![latest("a"), lease("b", &[], at("5"))],
                InitialPosition::Latest,
                false,
            ),
            (
                vec![latest("a"), lease("b", &[], Checkpoint::ShardEnd)],
                InitialPosition::Latest,
                false,
            ),
            (
                vec![lease("a", &[], Checkpoint::TrimHorizon)],
                InitialPosition::TrimHorizon,
                true,
            ),
            (
                vec![lease("a", &[], Checkpoint::AtTimestamp)],
                InitialPosition::AtTimestamp,
                true,
            ),
        ];
        for (leases, position, expected) in table {
            let keys: Vec<_> = leases.iter().map(|l| (&l.key, &l.checkpoint)).collect();
            assert_eq!(
                first_leases_in_progress(&leases, position),
                expected,
                "{keys:?} from {position:?}"
            );
        }
    }
}
