//! Which leases a worker takes, as a pure decision over what its scans showed.
//!
//! Unstable: public only with the feature `unstable-internals` (for tests outside the crate), with
//! no stability promise.
//!
//! **Expiry by the observer's clock.** [`Observations`] remembers, per lease, the counter last
//! seen and when this worker first saw it (the arrival of the scan answer, which is after the
//! write that set it). A lease whose counter has not moved for the failover time is expired,
//! whatever the clocks of other workers say.
//!
//! **Fair share.** Only workable leases count: not finished, and ready by lineage (finished
//! leases and children waiting for their parents do no work, so counting them would skew the
//! balance — a common complaint about the KCL). With `n` workable leases and `w` live workers
//! (the owners of unexpired leases, and this one), every worker should hold `n / w` or one more.
//! A worker below `n / w` takes free leases first, then asks the most loaded workers to hand
//! leases over, never taking one below `n / w`; a worker at `n / w` asks for one more only from a
//! worker above `n / w + 1`. Several leases may move in one cycle.
//!
//! **Expired leases are taken at once.** The first worker to see a lease expire takes it, above
//! its fair share if need be (up to `max_leases`): a dead worker's shards must not wait for a
//! worker below its share, nor for a newly started worker to watch them for a whole failover
//! time. The fair share is then restored by graceful handoffs, which cause no duplicates.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    lease::Lease,
    lineage::{Readiness, readiness},
};

/// When this worker first saw a lease's current counter, and whether it has seen the counter
/// move (its owner renewing, as far as this worker knows, rather than dead since before this
/// worker started looking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    counter: u64,
    since: Instant,
    moved: bool,
}

/// What this worker has seen of every lease's counter, by its own clock.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    seen: HashMap<String, Seen>,
}

impl Observations {
    /// Records a scan whose answer arrived at `at`. Leases no longer in the table are forgotten.
    pub fn record(&mut self, leases: &[Lease], at: Instant) {
        let keys: HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
        self.seen.retain(|key, _| keys.contains(key.as_str()));
        for lease in leases {
            self.note(lease, at);
        }
    }

    /// Records one lease read (or written) at `at`.
    pub fn note(&mut self, lease: &Lease, at: Instant) {
        match self.seen.get_mut(&lease.key) {
            Some(seen) if seen.counter == lease.counter => {}
            Some(seen) => {
                *seen = Seen {
                    counter: lease.counter,
                    since: at,
                    moved: true,
                }
            }
            None => {
                self.seen.insert(
                    lease.key.clone(),
                    Seen {
                        counter: lease.counter,
                        since: at,
                        moved: false,
                    },
                );
            }
        }
    }

    /// When `lease` expires if its counter does not move: the failover time after this worker
    /// first saw its current counter. `None` if this worker has not seen this counter.
    pub fn expires_at(&self, lease: &Lease, failover: Duration) -> Option<Instant> {
        self.seen
            .get(&lease.key)
            .filter(|seen| seen.counter == lease.counter)
            .map(|seen| seen.since + failover)
    }

    /// Whether this worker has seen `lease`'s counter move since it first saw the lease: its
    /// owner has shown itself alive to this worker.
    pub fn has_moved(&self, lease: &Lease) -> bool {
        self.seen.get(&lease.key).is_some_and(|seen| seen.moved)
    }

    /// Whether `lease` has an owner whose counter has not moved for the failover time.
    pub fn is_expired(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        lease.owner.is_some() && self.expires_at(lease, failover).is_some_and(|at| now > at)
    }

    /// The earliest moment one of the leases owned by others may expire (to look again then,
    /// rather than at the next periodic scan).
    pub fn next_expiry<'a>(
        &self,
        leases: impl IntoIterator<Item = &'a Lease>,
        me: &str,
        now: Instant,
        failover: Duration,
    ) -> Option<Instant> {
        leases
            .into_iter()
            .filter(|l| l.owner.as_deref().is_some_and(|o| o != me))
            .filter_map(|l| self.expires_at(l, failover))
            .filter(|at| *at >= now)
            .min()
    }
}

/// The limits of the balancing decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceLimits {
    /// The failover time: a lease whose counter has not moved this long is expired.
    pub failover: Duration,
    /// Most leases this worker holds (the KCL's `maxLeasesForWorker`; `None`: no limit).
    pub max_leases: Option<usize>,
    /// Most leases this worker asks others to hand over per cycle (`None`: as many as its fair
    /// share needs; the KCL's `maxLeasesToStealAtOneTime` is 1).
    pub max_handoffs: Option<usize>,
    /// A free lease that nobody took for this long (by this worker's observation) is taken
    /// whatever the fair share says: the fair share may still count a worker that has left.
    pub free_patience: Duration,
}

/// What a worker already does with leases, as [`plan`] needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Mine<'a> {
    /// Leases it runs or is acquiring (taking, asking for, waiting to be handed): counted as its
    /// own and never planned again.
    pub held: &'a BTreeSet<String>,
    /// Leases it is letting go of (releasing, or handing to another worker): never planned, and
    /// counted for whoever the table names as owner.
    pub letting_go: &'a BTreeSet<String>,
}

/// What a worker should do this cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Leases to take (a conditional write each; losing a race is normal): every expired lease
    /// (the first worker to see a lease expire takes it, above its fair share if need be, so
    /// that failover does not wait for a worker below its share; balance is restored afterwards
    /// by graceful handoffs), free leases up to the fair share, and leases the table names this
    /// worker as owner of that it does not hold (handed over, or held by an earlier run of a
    /// worker with the same id, or lost during a pause), within `max_leases`.
    pub take: Vec<Lease>,
    /// Leases the table shows being handed to this worker that it is not waiting for (its request
    /// was written but the answer lost, or it restarted): wait for the previous owner to release.
    pub adopt: Vec<Lease>,
    /// Leases held by live workers to ask for through a graceful handoff.
    pub hand_off: Vec<Lease>,
    /// This worker holds more than the ceiling of its fair share: others will ask it for leases,
    /// so it should look at the table often until they have.
    pub above_share: bool,
}

/// Decides which leases `me` takes and asks for, given the table (as last scanned), what this
/// worker observed, and what it already does.
pub fn plan(
    leases: &[Lease],
    observations: &Observations,
    me: &str,
    mine: Mine<'_>,
    now: Instant,
    limits: BalanceLimits,
) -> Plan {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let workable: Vec<&Lease> = leases
        .iter()
        .filter(|l| !l.is_finished() && readiness(l, &by_key) == Readiness::Ready)
        .collect();
    let expired = |l: &Lease| observations.is_expired(l, now, limits.failover);

    // Live workers and what they hold (a lease being handed over counts for its new owner).
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    counts.insert(me, 0);
    for lease in leases.iter().filter(|l| !expired(l)) {
        if let Some(from) = lease.checkpoint_owner.as_deref() {
            counts.entry(from).or_insert(0);
        }
    }
    let mut plan = Plan::default();
    let mut free: Vec<&Lease> = Vec::new();
    let mut stale: Vec<&Lease> = Vec::new();
    let mut named_mine: Vec<&Lease> = Vec::new();
    for lease in &workable {
        let owner = lease.owner.as_deref();
        if mine.held.contains(&lease.key) {
            *counts.entry(me).or_insert(0) += 1;
            continue;
        }
        if mine.letting_go.contains(&lease.key) {
            if let Some(owner) = owner.filter(|o| *o != me && !expired(lease)) {
                *counts.entry(owner).or_insert(0) += 1;
            }
            continue;
        }
        match owner {
            Some(owner) if owner == me => {
                if lease.in_handoff() {
                    *counts.entry(me).or_insert(0) += 1;
                    plan.adopt.push((*lease).clone());
                } else {
                    // Taken back below, within `max_leases`.
                    named_mine.push(*lease);
                }
            }
            Some(owner) if !expired(lease) => *counts.entry(owner).or_insert(0) += 1,
            Some(_) => stale.push(lease),
            None => free.push(lease),
        }
    }
    let cap = limits.max_leases.unwrap_or(usize::MAX);
    // Leases the table names this worker as owner of that it does not hold (handed over to it, or
    // held by an earlier run, or lost during a pause and not yet taken by anyone): taken back
    // first, but only within the cap; the rest are left to expire for workers with room (a
    // worker that resumed from a pause may already have taken others' expired leases).
    let held = counts.get(me).copied().unwrap_or(0);
    let room = cap.saturating_sub(held);
    for lease in named_mine.iter().take(room) {
        plan.take.push((*lease).clone());
    }
    *counts.entry(me).or_insert(0) += named_mine.len().min(room);
    let total = workable.len();
    let workers = counts.len();
    let floor = total / workers;
    let ceil = total.div_ceil(workers);
    let mut have = counts.get(me).copied().unwrap_or(0);
    let target = ceil.min(cap);
    plan.above_share = have > ceil;

    // Expired leases and free leases nobody took for a while, all of them (up to the cap), the
    // longest waiting first; then other free ones up to the fair share. Each worker tries them in
    // its own order, so that workers that see the same leases at once mostly take different ones.
    let (waiting, fresh): (Vec<&Lease>, Vec<&Lease>) = free.into_iter().partition(|l| {
        observations
            .expires_at(l, limits.free_patience)
            .is_some_and(|at| now >= at)
    });
    stale.extend(waiting);
    stale.sort_by_key(|l| {
        (
            observations.expires_at(l, limits.failover),
            spread(me, &l.key),
        )
    });
    let mut fresh = fresh;
    fresh.sort_by_key(|l| spread(me, &l.key));
    for lease in stale {
        if have >= cap {
            break;
        }
        plan.take.push(lease.clone());
        have += 1;
    }
    for lease in fresh {
        if have >= target {
            break;
        }
        plan.take.push(lease.clone());
        have += 1;
    }

    // Then handoffs from the most loaded live workers.
    let mut budget = limits.max_handoffs.unwrap_or(usize::MAX);
    let mut loads: Vec<(usize, &str)> = counts
        .iter()
        .filter(|(w, _)| **w != me)
        .map(|(w, c)| (*c, *w))
        .collect();
    let mut asked: HashSet<&str> = HashSet::new();
    while budget > 0 && have < target {
        loads.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let Some((load, victim)) = loads.first().copied() else {
            break;
        };
        // Below the floor, take from anyone above it; at the floor, only from someone above the
        // ceiling, so that a balanced fleet stays still.
        let allowed = if have < floor {
            load > floor
        } else {
            load > ceil
        };
        if !allowed {
            break;
        }
        let Some(lease) = pick(&workable, victim, me, &asked, mine, &expired) else {
            loads.remove(0);
            continue;
        };
        asked.insert(lease.key.as_str());
        plan.hand_off.push(lease.clone());
        loads[0].0 -= 1;
        have += 1;
        budget -= 1;
    }
    plan
}

/// A worker's own order of lease keys (a hash of its name and the key), so that workers looking
/// at the same leases at once tend to pick different ones.
fn spread(me: &str, key: &str) -> (u64, String) {
    let mut hasher = DefaultHasher::new();
    (me, key).hash(&mut hasher);
    (hasher.finish(), key.to_owned())
}

/// One of `victim`'s leases to ask for: not already being handed over, not expired, not one this
/// worker is busy with.
fn pick<'a>(
    workable: &[&'a Lease],
    victim: &str,
    me: &str,
    asked: &HashSet<&str>,
    mine: Mine<'_>,
    expired: &impl Fn(&Lease) -> bool,
) -> Option<&'a Lease> {
    workable
        .iter()
        .copied()
        .filter(|l| l.owner.as_deref() == Some(victim) && !l.in_handoff() && !expired(l))
        .filter(|l| !asked.contains(l.key.as_str()))
        .filter(|l| !mine.held.contains(&l.key) && !mine.letting_go.contains(&l.key))
        .min_by_key(|l| spread(me, &l.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use proptest::prelude::*;

    const FAILOVER: Duration = Duration::from_secs(10);

    fn limits() -> BalanceLimits {
        BalanceLimits {
            failover: FAILOVER,
            max_leases: None,
            max_handoffs: None,
            free_patience: Duration::from_secs(2),
        }
    }

    fn owned(key: usize, owner: Option<&str>) -> Lease {
        let mut lease = Lease::new(format!("shardId-{key:012}"), Checkpoint::TrimHorizon);
        lease.owner = owner.map(str::to_owned);
        lease.counter = 1;
        lease
    }

    /// Leases owned as listed (`None`: free).
    fn table(owners: &[Option<&str>]) -> Vec<Lease> {
        owners
            .iter()
            .enumerate()
            .map(|(i, o)| owned(i, *o))
            .collect()
    }

    fn spread(counts: &[(&'static str, usize)]) -> Vec<Option<&'static str>> {
        counts
            .iter()
            .flat_map(|(w, n)| std::iter::repeat_n(if w.is_empty() { None } else { Some(*w) }, *n))
            .collect()
    }

    const NONE: &BTreeSet<String> = &BTreeSet::new();

    fn mine(held: &BTreeSet<String>) -> Mine<'_> {
        Mine {
            held,
            letting_go: NONE,
        }
    }

    fn held(leases: &[Lease], me: &str) -> BTreeSet<String> {
        leases
            .iter()
            .filter(|l| l.owner.as_deref() == Some(me))
            .map(|l| l.key.clone())
            .collect()
    }

    fn decide(leases: &[Lease], me: &str, limits: BalanceLimits) -> (usize, usize) {
        let now = Instant::now();
        let mut obs = Observations::default();
        obs.record(leases, now);
        let plan = plan(leases, &obs, me, mine(&held(leases, me)), now, limits);
        (plan.take.len(), plan.hand_off.len())
    }

    #[test]
    fn table_of_decisions() {
        // (leases per owner, "" = free; me = "m"), (takes, handoffs)
        type Case = (&'static [(&'static str, usize)], (usize, usize));
        let cases: &[Case] = &[
            (&[("", 12)], (12, 0)),
            (&[("a", 6), ("b", 6)], (0, 4)),
            (&[("a", 4), ("b", 4), ("m", 4)], (0, 0)),
            (&[("a", 5), ("b", 5), ("m", 3)], (0, 1)),
            (&[("a", 5), ("b", 4), ("m", 4)], (0, 0)),
            (&[("a", 6), ("b", 4), ("m", 4)], (0, 1)),
            (&[("a", 4), ("", 2), ("m", 1)], (2, 0)),
            (&[("a", 3), ("b", 3), ("c", 3), ("m", 0)], (0, 2)),
            (&[("a", 9), ("", 3)], (3, 3)),
        ];
        for (owners, want) in cases {
            let leases = table(&spread(owners));
            assert_eq!(decide(&leases, "m", limits()), *want, "{owners:?}");
        }
    }

    #[test]
    fn limits_cap_takes_and_handoffs() {
        let leases = table(&spread(&[("", 10)]));
        let capped = BalanceLimits {
            max_leases: Some(3),
            ..limits()
        };
        assert_eq!(decide(&leases, "m", capped), (3, 0));
        let leases = table(&spread(&[("a", 6), ("b", 6)]));
        let one = BalanceLimits {
            max_handoffs: Some(1),
            ..limits()
        };
        assert_eq!(decide(&leases, "m", one), (0, 1));
    }

    #[test]
    fn leases_named_mine_are_taken_back_only_within_the_cap() {
        // m resumed from a pause: it already runs 3 leases (taken from others meanwhile), and the
        // table still names it owner of the 2 it lost. Under a cap of 3 it takes none of them
        // back; under a cap of 4, one; without a cap, both.
        let mut leases: Vec<Lease> = (0..3).map(|k| owned(k, Some("m"))).collect();
        leases.extend((3..5).map(|k| owned(k, Some("m"))));
        leases.push(owned(5, Some("a")));
        let held: BTreeSet<String> = leases[..3].iter().map(|l| l.key.clone()).collect();
        let obs = Observations::default();
        let now = Instant::now();
        for (cap, want) in [(Some(3), 0), (Some(4), 1), (None, 2)] {
            let limits = BalanceLimits {
                max_leases: cap,
                ..limits()
            };
            let plan = plan(&leases, &obs, "m", mine(&held), now, limits);
            assert_eq!(plan.take.len(), want, "cap {cap:?}");
            assert!(
                plan.take.iter().all(|l| l.owner.as_deref() == Some("m")),
                "cap {cap:?}: {:?}",
                plan.take
            );
            assert!(plan.hand_off.is_empty(), "cap {cap:?}");
        }
    }

    #[test]
    fn expired_leases_are_taken_and_their_owner_stops_counting() {
        let leases = table(&spread(&[("dead", 6), ("m", 0)]));
        let start = Instant::now();
        let mut obs = Observations::default();
        obs.record(&leases, start);
        let empty = BTreeSet::new();
        // Not yet expired: dead counts as live and holds 6; m asks for 3 handoffs.
        let early = plan(&leases, &obs, "m", mine(&empty), start + FAILOVER, limits());
        assert_eq!((early.take.len(), early.hand_off.len()), (0, 3));
        // Counter unchanged for longer than the failover time: m takes all six.
        let late = plan(
            &leases,
            &obs,
            "m",
            mine(&empty),
            start + FAILOVER + Duration::from_millis(1),
            limits(),
        );
        assert_eq!((late.take.len(), late.hand_off.len()), (6, 0));
        // A renewal seen meanwhile restarts the clock.
        let mut renewed = leases.clone();
        renewed[0].counter += 1;
        obs.record(&renewed, start + Duration::from_secs(5));
        assert_eq!(
            obs.expires_at(&renewed[0], FAILOVER),
            Some(start + Duration::from_secs(15))
        );
        assert_eq!(
            obs.next_expiry(&renewed, "m", start, FAILOVER),
            Some(start + FAILOVER)
        );
    }

    #[test]
    fn finished_and_blocked_leases_do_not_count() {
        // a holds 2 finished parents; their children are free; m should take both children and
        // not count a's finished leases as load.
        let mut leases = table(&spread(&[("a", 2)]));
        for lease in &mut leases {
            lease.checkpoint = Checkpoint::ShardEnd;
        }
        let child = |key: &str, parent: &str| {
            Lease::new(key, Checkpoint::TrimHorizon).with_parents([parent])
        };
        leases.push(child("c0", &leases[0].key.clone()));
        leases.push(child("c1", &leases[1].key.clone()));
        // A grandchild waits for c0: not workable yet.
        leases.push(Lease::new("g", Checkpoint::TrimHorizon).with_parents(["c0"]));
        let now = Instant::now();
        let mut obs = Observations::default();
        obs.record(&leases, now);
        let plan = plan(&leases, &obs, "m", mine(NONE), now, limits());
        let keys: Vec<&str> = plan.take.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["c0", "c1"]);
    }

    #[test]
    fn leases_in_handoff_are_not_asked_for_again() {
        let mut leases = table(&spread(&[("a", 2)]));
        leases[0].checkpoint_owner = Some("a".into());
        leases[0].owner = Some("b".into());
        // b has 1 (arriving), a has 1: m (0) at floor 0 of 2/3 -> ceil 1; nobody above 1.
        assert_eq!(decide(&leases, "m", limits()), (0, 0));
    }

    proptest! {
        /// Workers that apply their plans one after another (takes and handoffs granted at once)
        /// reach a balance (max - min <= 1) in a few rounds, and then nothing moves.
        #[test]
        fn fleets_converge(owners in proptest::collection::vec(0usize..6, 0..40), workers in 1usize..6) {
            let names: Vec<String> = (0..workers).map(|i| format!("w{i}")).collect();
            let mut leases: Vec<Lease> = owners
                .iter()
                .enumerate()
                .map(|(i, o)| owned(i, names.get(*o).map(String::as_str)))
                .collect();
            let now = Instant::now();
            let mut stable_rounds = 0;
            for _round in 0..(leases.len() + 10) {
                let mut moved = false;
                for me in &names {
                    let mut obs = Observations::default();
                    obs.record(&leases, now);
                    let h = held(&leases, me);
                    let p = plan(&leases, &obs, me, mine(&h), now, limits());
                    for l in p.take.iter().chain(&p.hand_off) {
                        let target = leases.iter_mut().find(|x| x.key == l.key).unwrap();
                        target.owner = Some(me.clone());
                        target.counter += 1;
                        moved = true;
                    }
                }
                if moved { stable_rounds = 0 } else { stable_rounds += 1 }
                if stable_rounds == 2 { break; }
            }
            prop_assert_eq!(stable_rounds, 2, "never settled");
            let mut counts: HashMap<&str, usize> = names.iter().map(|n| (n.as_str(), 0)).collect();
            for l in &leases {
                prop_assert!(l.owner.is_some(), "a lease left free");
                *counts.get_mut(l.owner.as_deref().unwrap()).unwrap() += 1;
            }
            let max = counts.values().max().copied().unwrap_or(0);
            let min = counts.values().min().copied().unwrap_or(0);
            prop_assert!(max - min <= 1, "unbalanced: {:?}", counts);
        }
    }
}
