//! Scripted schedules for one machine: each defect the chaos run found, and the paths around it.

use super::*;
use crate::checkpoint::Checkpoint;

const F: Duration = Duration::from_secs(10);

fn settings() -> Settings {
    Settings {
        failover: F,
        trust: Duration::from_secs(9),
        renew_interval: Duration::from_secs(4),
        scan_interval: Duration::from_secs(2),
        shard_sync_interval: Duration::from_secs(60),
        handoff_timeout: Duration::from_secs(15),
        shutdown_timeout: Duration::from_secs(30),
        max_leases: None,
        max_handoffs: None,
        watchers: super::WATCHERS,
        slow_scan: Duration::from_secs(20),
        call_timeout: Duration::from_secs(2),
        longest_call: Duration::from_secs(10),
        scan_budget: super::FLEET_SCAN_ITEMS,
    }
}

/// The base of the renewal of `key` among `actions`, if one is renewed.
fn renewal_base<'a>(actions: &'a [Action], key: &str) -> Option<Option<&'a Lease>> {
    actions.iter().find_map(|a| match a {
        Action::Renew { key: k, base, .. } if k == key => Some(base.as_ref()),
        _ => None,
    })
}

fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
    let mut lease = Lease::new(key, Checkpoint::TrimHorizon);
    lease.owner = owner.map(str::to_owned);
    lease.counter = counter;
    lease
}

fn in_handoff(key: &str, to: &str, from: &str, counter: u64) -> Lease {
    let mut lease = lease(key, Some(to), counter);
    lease.checkpoint_owner = Some(from.to_owned());
    lease
}

/// One worker's machine, on a clock the test moves.
struct Worker {
    machine: Machine,
    start: Instant,
    now: Instant,
    /// Every action so far.
    log: Vec<Action>,
}

impl Worker {
    /// A worker that has synced; its first scan is due.
    fn new(me: &str) -> Self {
        let start = Instant::now();
        let mut worker = Worker {
            machine: Machine::new(me, settings(), start),
            start,
            now: start,
            log: Vec::new(),
        };
        worker.feed(Input::Tick);
        worker.feed(Input::Synced(true));
        worker
    }

    /// `b`, which took `s0` (counter 4) at the start and, 4 s in, has sent its first renewal.
    fn renewing_s0() -> Self {
        let mut b = Worker::new("b");
        b.scan(&[lease("s0", None, 3)]);
        b.feed(Input::Taken {
            key: "s0".into(),
            sent: b.now,
            outcome: written(lease("s0", Some("b"), 4)),
        });
        b.at(Duration::from_secs(4)).feed(Input::Tick);
        b
    }

    fn at(&mut self, since_start: Duration) -> &mut Self {
        self.now = self.start + since_start;
        self
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        let actions = self.machine.handle(input, self.now);
        self.log.extend(actions.iter().cloned());
        actions
    }

    fn scan(&mut self, leases: &[Lease]) -> Vec<Action> {
        // A scan is answered only if one was asked for; ask if need be.
        if self.machine.scanning.is_none() {
            self.machine.next_scan = self.now;
            self.feed(Input::Tick);
        }
        self.feed(Input::Scanned(Some(leases.to_vec())))
    }

    fn starts(&self, key: &str) -> usize {
        self.log
            .iter()
            .filter(|a| matches!(a, Action::Start { lease, .. } if lease.key == key))
            .count()
    }

    /// A renewal of `key` sent now, answered with `outcome`.
    fn renewed(&mut self, key: &str, outcome: Outcome) -> Vec<Action> {
        self.feed(Input::Renewed {
            key: key.into(),
            sent: self.now,
            outcome,
        })
    }

    /// The leases a tick at the current time renews.
    fn renewals_due(&mut self) -> Vec<String> {
        self.feed(Input::Tick)
            .into_iter()
            .filter_map(|a| match a {
                Action::Renew { key, .. } => Some(key),
                _ => None,
            })
            .collect()
    }

    fn renewals(&self, key: &str) -> usize {
        self.log
            .iter()
            .filter(|a| matches!(a, Action::Renew { key: k, .. } if k == key))
            .count()
    }
}

fn takes(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Take { lease } => Some(lease.key.clone()),
            _ => None,
        })
        .collect()
}

fn written(lease: Lease) -> Outcome {
    Outcome::Written(lease)
}

/// 400 free leases scanned and taken by `b` at once, at its current time (no cap: the fair
/// share of a fleet of one is everything); their keys.
fn take_400_at_once(b: &mut Worker) -> Vec<String> {
    let keys: Vec<String> = (0..400).map(|i| format!("shardId-{i:012}")).collect();
    let leases: Vec<Lease> = keys.iter().map(|k| lease(k, None, 1)).collect();
    assert_eq!(takes(&b.scan(&leases)).len(), keys.len());
    for key in &keys {
        b.feed(Input::Taken {
            key: key.clone(),
            sent: b.now,
            outcome: written(lease(key, Some("b"), 2)),
        });
    }
    keys
}

/// Defect 1: a lease asked of a worker that then died was taken at its expiry and then started a
/// second time when a later scan showed it "handed over".
#[test]
fn a_lease_awaited_from_a_dead_owner_is_started_once() {
    let mut b = Worker::new("b");
    // a holds both leases; b asks for one of them.
    let table = [lease("s0", Some("a"), 5), lease("s1", Some("a"), 7)];
    let asked = b.scan(&table);
    let asks: Vec<&Action> = asked
        .iter()
        .filter(|a| matches!(a, Action::AskHandoff { .. }))
        .collect();
    assert_eq!(asks.len(), 1, "{asked:?}");
    let Action::AskHandoff { lease: asked } = asks[0] else {
        unreachable!()
    };
    let key = asked.key.clone();
    let request = in_handoff(&key, "b", "a", asked.counter);
    b.feed(Input::HandoffAsked {
        key: key.clone(),
        outcome: written(request.clone()),
    });
    // a dies (kill -9): its counters stop moving; b keeps looking.
    let other = if key == "s0" { "s1" } else { "s0" };
    let other_lease = table
        .iter()
        .find(|l| l.key == other)
        .cloned()
        .unwrap_or_else(|| lease(other, Some("a"), 1));
    let mut now = Duration::from_millis(600);
    let mut taken = None;
    while now < Duration::from_secs(20) && taken.is_none() {
        let actions = b.at(now).scan(&[request.clone(), other_lease.clone()]);
        if takes(&actions).contains(&key) {
            taken = Some(now);
        }
        now += Duration::from_millis(500);
    }
    let taken_at = taken.expect("the awaited lease was never taken at its expiry");
    assert!(
        taken_at > F && taken_at <= F + Duration::from_secs(2),
        "taken at {taken_at:?}"
    );
    let mut mine = lease(&key, Some("b"), request.counter + 1);
    b.feed(Input::Taken {
        key: key.clone(),
        sent: b.now,
        outcome: written(mine.clone()),
    });
    assert_eq!(b.starts(&key), 1);
    // Later scans show it owned by b with no handoff: the old code started it again here.
    for step in 1..10 {
        mine.counter += 1;
        let at = taken_at + Duration::from_millis(500 * step);
        b.at(at).scan(&[mine.clone(), other_lease.clone()]);
    }
    assert_eq!(b.starts(&key), 1, "started twice: {:?}", b.log);
}

/// Defect 2: a worker only awaiting a lease (released to it, not started yet) was asked for it
/// by a third worker and dropped it without releasing: the shard went unread until expiry.
#[test]
fn a_handoff_asked_of_a_worker_only_awaiting_the_lease_is_released_at_once() {
    let mut w3 = Worker::new("w3");
    let table = [
        lease("s5", Some("w2"), 4),
        lease("s6", Some("w2"), 3),
        lease("s7", Some("w1"), 3),
    ];
    let actions = w3.scan(&table);
    let Some(Action::AskHandoff { lease: asked }) = actions
        .iter()
        .find(|a| matches!(a, Action::AskHandoff { .. }))
        .cloned()
    else {
        panic!("{actions:?}");
    };
    let key = asked.key.clone();
    w3.feed(Input::HandoffAsked {
        key: key.clone(),
        outcome: written(in_handoff(&key, "w3", "w2", asked.counter)),
    });
    // w2 released it to w3, and w1 asked w3 for it before w3 started it.
    let asked_by_w1 = in_handoff(&key, "w1", "w3", asked.counter + 1);
    let table: Vec<Lease> = table
        .iter()
        .map(|l| {
            if l.key == key {
                asked_by_w1.clone()
            } else {
                l.clone()
            }
        })
        .collect();
    let actions = w3.at(Duration::from_millis(700)).scan(&table);
    assert!(
        actions.iter().any(|a| matches!(a,
            Action::Release { lease, role: Role::PreviousOwner } if lease.key == key)),
        "w3 must complete the handoff to w1 at once: {actions:?}"
    );
    assert_eq!(w3.starts(&key), 0);
}

/// Defect 3: a worker at its fair share left expired leases alone, so a dead worker's shards
/// waited for a worker below its share, or for a new worker to watch them for a whole failover
/// time.
#[test]
fn expired_leases_are_taken_by_the_first_worker_to_see_them_whatever_its_share() {
    let mut b = Worker::new("b");
    // 12 leases: a (about to die), b and c hold 4 each.
    let table: Vec<Lease> = (0..12)
        .map(|i| {
            let owner = ["a", "b", "c"][i % 3];
            lease(&format!("s{i:02}"), Some(owner), 1)
        })
        .collect();
    b.scan(&table);
    // b's own leases are running (taken before this test began).
    for l in table.iter().filter(|l| l.owner.as_deref() == Some("b")) {
        b.machine.locals.insert(
            l.key.clone(),
            Local::Running(Run {
                lease: l.clone(),
                started: b.now,
                trust_until: b.now + Duration::from_secs(3600),
                renewing: true,
                renew_at: b.now + Duration::from_secs(3600),
                stop: Stop::Run,
                handing_off: false,
                revoked: false,
                own_refusals: 0,
            }),
        );
    }
    // c keeps renewing; a does not.
    let at = F + Duration::from_millis(100);
    let renewed: Vec<Lease> = table
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if l.owner.as_deref() == Some("c") {
                l.counter += 3;
            }
            l
        })
        .collect();
    b.at(Duration::from_secs(5)).scan(&renewed);
    let actions = b.at(at).scan(&renewed);
    let mut taken = takes(&actions);
    taken.sort();
    let a_held: Vec<String> = table
        .iter()
        .filter(|l| l.owner.as_deref() == Some("a"))
        .map(|l| l.key.clone())
        .collect();
    // b holds 4 and the fair share between b and c is 6: the old rule took 2.
    assert_eq!(taken, a_held, "all of the dead worker's leases at once");
}

/// Defect 4: a panicking processor's task ended with a `JoinError` that the loop ignored: the
/// lease stayed held and renewed, with nobody processing the shard.
#[test]
fn a_panicked_processor_releases_its_lease_and_is_renewed_no_more() {
    let mut b = Worker::new("b");
    let actions = b.scan(&[lease("s0", None, 3)]);
    assert_eq!(takes(&actions), ["s0"]);
    let mine = lease("s0", Some("b"), 4);
    b.feed(Input::Taken {
        key: "s0".into(),
        sent: b.now,
        outcome: written(mine.clone()),
    });
    assert_eq!(b.starts("s0"), 1);
    b.at(Duration::from_secs(5)).feed(Input::Tick);
    assert_eq!(b.renewals("s0"), 1);
    b.feed(Input::Renewed {
        key: "s0".into(),
        sent: b.now,
        outcome: written(lease("s0", Some("b"), 5)),
    });
    let actions = b.at(Duration::from_secs(6)).feed(Input::Exited {
        key: "s0".into(),
        how: Exited::Panicked("boom".into()),
    });
    assert!(
        actions.iter().any(|a| matches!(a,
            Action::Release { lease, role: Role::Owner } if lease.key == "s0")),
        "{actions:?}"
    );
    for second in 7..30 {
        b.at(Duration::from_secs(second)).feed(Input::Tick);
    }
    assert_eq!(
        b.renewals("s0"),
        1,
        "renewed without a processor: {:?}",
        b.log
    );
}

/// A renewal refused only because an earlier write of this worker landed after its answer was
/// lost (the item still names it holder, with a higher counter) does not lose the lease: it is
/// renewed again at once from that item, then after [`RETRY`] once refusals keep coming, and
/// the trust still counts from the last renewal known to be written.
#[test]
fn a_renewal_refused_by_its_own_earlier_write_renews_again_from_the_item() {
    let mut b = Worker::renewing_s0();
    assert_eq!(b.renewals("s0"), 1);
    // Twice in a row: renewed again at once, from the item the refusal showed.
    for (round, counter) in [(1, 6), (2, 8)] {
        let refused = lease("s0", Some("b"), counter);
        let actions = b.renewed("s0", Outcome::Refused(Some(refused.clone())));
        assert!(
            renewal_base(&actions, "s0") == Some(Some(&refused)),
            "round {round}: {actions:?}"
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Revoke { .. })));
    }
    // A third in a row: renewed again after a pause, still from the item.
    let refused = lease("s0", Some("b"), 10);
    let actions = b.renewed("s0", Outcome::Refused(Some(refused.clone())));
    assert!(actions.is_empty(), "{actions:?}");
    b.now += RETRY;
    let actions = b.feed(Input::Tick);
    assert!(
        renewal_base(&actions, "s0") == Some(Some(&refused)),
        "{actions:?}"
    );
    // A handoff asked for meanwhile: the item names another owner, this worker as the one
    // handing off; still this worker's to renew (after a pause: the fourth in a row).
    let asked = in_handoff("s0", "c", "b", 11);
    b.renewed("s0", Outcome::Refused(Some(asked.clone())));
    b.now += RETRY;
    let actions = b.feed(Input::Tick);
    assert!(
        renewal_base(&actions, "s0") == Some(Some(&asked)),
        "{actions:?}"
    );
    // Written at last: trusted from that renewal's send, the next renewal a normal one.
    let sent = b.now;
    let actions = b.feed(Input::Renewed {
        key: "s0".into(),
        sent,
        outcome: written(in_handoff("s0", "c", "b", 12)),
    });
    assert!(
        actions.contains(&Action::Trust {
            key: "s0".into(),
            until: sent + settings().trust,
        }),
        "{actions:?}"
    );
    b.at(Duration::from_secs(9)).feed(Input::Tick);
    assert!(
        b.log
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Renew { key, base, .. } if key == "s0" => Some(base.is_none()),
                _ => None,
            })
            .unwrap_or(false),
        "{:?}",
        b.log
    );
}

/// Refusals that do not name this worker holder with a higher counter still lose the lease:
/// taken by another, released, reset by an operator (no owner), or this worker only asking for
/// it.
#[test]
fn a_renewal_refused_by_anything_but_its_own_write_still_loses_the_lease() {
    let refusals = [
        lease("s0", Some("c"), 9),
        lease("s0", None, 9),
        in_handoff("s0", "b", "c", 9),
        lease("s0", Some("b"), 4),
    ];
    for refused in refusals {
        let mut b = Worker::renewing_s0();
        let actions = b.renewed("s0", Outcome::Refused(Some(refused.clone())));
        assert!(
            actions.contains(&Action::Revoke { key: "s0".into() }),
            "{refused:?}: {actions:?}"
        );
    }
}

#[test]
fn a_refused_renewal_revokes_the_lease_and_renewals_stop() {
    let mut b = Worker::renewing_s0();
    let actions = b.feed(Input::Renewed {
        key: "s0".into(),
        sent: b.now,
        outcome: Outcome::Refused(Some(lease("s0", Some("c"), 9))),
    });
    assert!(
        actions.contains(&Action::Revoke { key: "s0".into() }),
        "{actions:?}"
    );
    for second in 5..20 {
        b.at(Duration::from_secs(second)).feed(Input::Tick);
    }
    assert_eq!(b.renewals("s0"), 1);
    // The processor stops with lease_lost: nothing to release.
    let actions = b.feed(Input::Exited {
        key: "s0".into(),
        how: Exited::LeaseLost,
    });
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Release { .. })),
        "{actions:?}"
    );
}

#[test]
fn renewals_that_never_answer_stop_at_the_trust_deadline() {
    let mut b = Worker::new("b");
    b.scan(&[lease("s0", None, 3)]);
    let sent = b.now;
    b.feed(Input::Taken {
        key: "s0".into(),
        sent,
        outcome: written(lease("s0", Some("b"), 4)),
    });
    // Every renewal fails; retries go on until the trust deadline (9 s after the take was sent),
    // then stop: the processor stops itself there.
    let mut t = Duration::from_millis(100);
    while t < Duration::from_secs(20) {
        let actions = b.at(t).feed(Input::Tick);
        for action in actions {
            if let Action::Renew { key, .. } = action {
                b.feed(Input::Renewed {
                    key,
                    sent: b.now,
                    outcome: Outcome::Failed,
                });
            }
        }
        t += Duration::from_millis(100);
    }
    let last = b
        .log
        .iter()
        .filter(|a| matches!(a, Action::Renew { .. }))
        .count();
    assert!(last > 3, "retried: {last}");
    match b.machine.locals.get("s0") {
        Some(Local::Running(run)) => assert!(run.revoked),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_handoff_timeout_withdraws_the_request_while_the_owner_still_renews() {
    let mut b = Worker::new("b");
    let table = [lease("s0", Some("a"), 5), lease("s1", Some("a"), 7)];
    let actions = b.scan(&table);
    let Some(Action::AskHandoff { lease: asked }) = actions
        .iter()
        .find(|a| matches!(a, Action::AskHandoff { .. }))
        .cloned()
    else {
        panic!("{actions:?}");
    };
    let key = asked.key.clone();
    let mut request = in_handoff(&key, "b", "a", asked.counter);
    b.feed(Input::HandoffAsked {
        key: key.clone(),
        outcome: written(request.clone()),
    });
    // a keeps renewing (as the previous owner) but never releases.
    let mut withdrawn = None;
    let mut t = Duration::from_millis(500);
    let mut others: Vec<Lease> = table.iter().filter(|l| l.key != key).cloned().collect();
    while t < Duration::from_secs(20) && withdrawn.is_none() {
        request.counter += 1;
        for other in &mut others {
            other.counter += 1;
        }
        let others = others.clone();
        let mut scan = vec![request.clone()];
        scan.extend(others);
        let actions = b.at(t).scan(&scan);
        assert!(
            takes(&actions).is_empty(),
            "taken from a live owner: {actions:?}"
        );
        if actions.iter().any(|a| {
            matches!(
                a,
                Action::Release {
                    role: Role::NewOwner,
                    ..
                }
            )
        }) {
            withdrawn = Some(t);
        }
        t += Duration::from_millis(500);
    }
    let at = withdrawn.expect("never withdrawn");
    assert!(
        at > Duration::from_secs(15) && at < Duration::from_secs(16),
        "{at:?}"
    );
}

#[test]
fn shutdown_stops_processors_withdraws_requests_and_finishes_once_all_is_released() {
    let mut b = Worker::new("b");
    let table = [
        lease("s0", None, 1),
        lease("s1", Some("a"), 1),
        lease("s2", Some("a"), 1),
        lease("s3", Some("a"), 1),
    ];
    let actions = b.scan(&table);
    assert_eq!(takes(&actions), ["s0"]);
    let asked: Vec<Lease> = actions
        .iter()
        .filter_map(|a| match a {
            Action::AskHandoff { lease } => Some(lease.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{actions:?}");
    b.feed(Input::Taken {
        key: "s0".into(),
        sent: b.now,
        outcome: written(lease("s0", Some("b"), 2)),
    });
    let awaited = in_handoff(&asked[0].key, "b", "a", 1);
    b.feed(Input::HandoffAsked {
        key: awaited.key.clone(),
        outcome: written(awaited.clone()),
    });
    let actions = b.at(Duration::from_secs(1)).feed(Input::ShutdownAsked);
    assert!(actions.contains(&Action::Stop {
        key: "s0".into(),
        reason: Stop::Shutdown
    }));
    assert!(
        actions.iter().any(|a| matches!(a,
            Action::Release { lease, role: Role::NewOwner } if lease.key == awaited.key)),
        "{actions:?}"
    );
    assert!(!b.machine.is_finished());
    let actions = b.feed(Input::Exited {
        key: "s0".into(),
        how: Exited::Stopped,
    });
    assert!(actions.iter().any(|a| matches!(a,
        Action::Release { lease, role: Role::Owner } if lease.key == "s0")));
    b.feed(Input::Released {
        key: "s0".into(),
        outcome: written(lease("s0", None, 3)),
    });
    assert!(!b.machine.is_finished());
    let actions = b.feed(Input::Released {
        key: awaited.key.clone(),
        outcome: written(lease(&awaited.key, Some("a"), 1)),
    });
    assert!(actions.contains(&Action::Finished), "{actions:?}");
    assert!(b.machine.is_finished());
}

#[test]
fn a_scan_sent_before_a_release_does_not_take_the_lease_back() {
    let mut b = Worker::new("b");
    b.scan(&[lease("s0", None, 1)]);
    b.feed(Input::Taken {
        key: "s0".into(),
        sent: b.now,
        outcome: written(lease("s0", Some("b"), 2)),
    });
    // A scan goes out; meanwhile the processor fails and the lease is released.
    b.at(Duration::from_secs(3));
    if b.machine.scanning.is_some() {
        b.feed(Input::Scanned(Some(vec![lease("s0", Some("b"), 2)])));
    }
    b.machine.next_scan = b.now;
    let asked = b.feed(Input::Tick);
    assert!(asked.contains(&Action::Scan));
    b.feed(Input::Exited {
        key: "s0".into(),
        how: Exited::ReadFailed,
    });
    b.feed(Input::Released {
        key: "s0".into(),
        outcome: written(lease("s0", None, 3)),
    });
    // The scan's answer still shows it owned by b.
    let actions = b.feed(Input::Scanned(Some(vec![lease("s0", Some("b"), 2)])));
    assert!(takes(&actions).is_empty(), "{actions:?}");
    // A scan sent afterwards shows it free: taken again.
    let actions = b.at(Duration::from_secs(5)).scan(&[lease("s0", None, 3)]);
    assert_eq!(takes(&actions), ["s0"]);
}

// --- the fleet-wide scan budget ------------------------------------------------------------

/// Four live owners, one lease each; `me` holds its own.
fn fleet_of(owners: &[&str], me_counter: u64, others_counter: u64) -> Vec<Lease> {
    owners
        .iter()
        .enumerate()
        .map(|(i, owner)| {
            let counter = if *owner == "me" {
                me_counter
            } else {
                others_counter
            };
            lease(&format!("s{i}"), Some(owner), counter)
        })
        .collect()
}

/// The table as a worker sees it after watching every owner renew once: `table` first seen a
/// second before `now`, then every counter moved.
fn seen_renewing(table: &[Lease], now: Instant) -> (Vec<Lease>, Observations) {
    let mut observations = Observations::default();
    observations.record(table, now - Duration::from_secs(1));
    let renewed: Vec<Lease> = table
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.counter += 1;
            l
        })
        .collect();
    observations.record(&renewed, now);
    (renewed, observations)
}

/// The owners in the order they rank for watching.
fn by_rank<'a>(owners: &[&'a str]) -> Vec<&'a str> {
    let mut owners = owners.to_vec();
    owners.sort_by_key(|o| (super::rank(o), *o));
    owners
}

#[test]
fn the_live_owners_that_rank_first_watch() {
    let now = Instant::now() + Duration::from_secs(5);
    let names = ["a", "b", "c", "d", "e"];
    let order = by_rank(&names);
    let (table, observations) = seen_renewing(&fleet_of(&names, 1, 1), now);
    let judge = |me: &str, holding: bool, k: usize, cap: Option<usize>| {
        Watch::judge(&table, &observations, me, holding, now, F, k, cap)
    };
    // (me, holds a lease, watchers, cap) -> (watching, live owners)
    let cases = [
        (order[0], true, 3, None, (true, 5)),
        (order[2], true, 3, None, (true, 5)),
        (order[3], true, 3, None, (false, 5)),
        (order[4], true, 1, None, (false, 5)),
        (order[0], true, 1, None, (true, 5)),
        // A worker holding nothing is not among the owners: it watches only in a fleet with
        // fewer live owners than watchers.
        ("zz", false, 3, None, (false, 5)),
        ("zz", false, 6, None, (true, 5)),
        // Owners at their cap cannot take a dead worker's leases: they do not count, and with
        // fewer than three below it, everyone watches.
        (order[3], true, 3, Some(1), (true, 5)),
        (order[3], true, 3, Some(2), (false, 5)),
    ];
    for (me, holding, k, cap, (watching, live_owners)) in cases {
        assert_eq!(
            judge(me, holding, k, cap),
            Watch {
                watching,
                live_owners
            },
            "{me} holding {holding}, {k} watchers, cap {cap:?} (rank order {order:?})"
        );
    }
    // Holding a lease the table does not show yet counts it.
    assert_eq!(judge("zz", true, 3, None).live_owners, 6);
    // The rank is the same in every process (FNV-1a of the id).
    assert_eq!(super::rank(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(super::rank("a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn owners_of_finished_leases_only_do_not_count() {
    // The first-ranked owner left after its shard ended: it still owns the finished lease, whose
    // counter will not move again. The others do not leave the watching to it.
    let now = Instant::now() + Duration::from_secs(5);
    let names = ["a", "b", "c", "d"];
    let order = by_rank(&names);
    let (mut table, observations) = seen_renewing(&fleet_of(&names, 1, 1), now);
    let Some(first) = table
        .iter_mut()
        .find(|l| l.owner.as_deref() == Some(order[0]))
    else {
        panic!("no lease of {}", order[0]);
    };
    first.checkpoint = Checkpoint::ShardEnd;
    let watch = Watch::judge(&table, &observations, order[1], true, now, F, 1, None);
    assert_eq!(
        watch,
        Watch {
            watching: true,
            live_owners: 3
        },
        "{order:?}"
    );
}

#[test]
fn owners_whose_leases_expired_do_not_count() {
    let start = Instant::now();
    let mut observations = Observations::default();
    let table = fleet_of(&["a", "b", "c", "d"], 1, 1);
    observations.record(&table, start);
    // a, b and c stopped renewing; d did.
    let later = start + F + Duration::from_secs(1);
    let mut now_table = table.clone();
    now_table[3].counter = 9;
    observations.record(&now_table, later);
    let watch = Watch::judge(&now_table, &observations, "d", true, later, F, 3, None);
    assert_eq!(
        watch,
        Watch {
            watching: true,
            live_owners: 1
        },
        "d is the only live owner, so it watches"
    );
}

/// A settled worker that does not watch scans every scan interval x live owners / watchers, up
/// to the slow maximum; one that holds nothing at the slow maximum; a watcher every interval.
#[test]
fn settled_workers_that_do_not_watch_scan_less_often() {
    // Of these ten, "me" ranks first and "j" last.
    let owners = ["a", "b", "c", "me", "e", "f", "g", "h", "i", "j"];
    let order = by_rank(&owners);
    assert_eq!((order[0], order[9]), ("me", "j"), "{order:?}");
    let interval_after_scan = |watcher: bool| {
        let me = if watcher { "me" } else { "j" };
        let mut w = Worker::new(me);
        // Past the eager start.
        let at = Duration::from_secs(5);
        w.at(at);
        let table = fleet_of(&owners, 1, 1);
        // It runs its own lease.
        let Some(mine) = table
            .iter()
            .find(|l| l.owner.as_deref() == Some(me))
            .cloned()
        else {
            panic!("no lease of {me}");
        };
        w.machine.locals.insert(
            mine.key.clone(),
            Local::Running(Run {
                lease: mine.clone(),
                started: w.now,
                trust_until: w.now + Duration::from_secs(9),
                renewing: false,
                renew_at: w.now + Duration::from_secs(4),
                stop: Stop::Run,
                handing_off: false,
                revoked: false,
                own_refusals: 0,
            }),
        );
        // The first answer finds the rescan the sync asked for due; the second is settled and
        // has seen every owner renew.
        let (renewed, _) = seen_renewing(&table, w.now);
        w.scan(&table);
        w.scan(&renewed);
        w.machine.next_scan - w.now
    };
    // 10 live owners, 3 watchers, 2 s: 6.67 s (at most 20 s).
    let relaxed = interval_after_scan(true);
    assert_eq!(
        relaxed,
        Duration::from_secs(2),
        "me ranks first: it watches"
    );
    let relaxed = interval_after_scan(false);
    assert!(
        relaxed > Duration::from_millis(6_600) && relaxed < Duration::from_millis(6_700),
        "{relaxed:?}"
    );

    // A worker that has not seen an owner renew since it started looking (the owner may have
    // died before, and the watchers it counts on may not be watching it) looks again when that
    // owner's lease may expire, though settled; once it has seen it renew, at its own pace.
    let mut new = Worker::new("zz");
    new.at(Duration::from_secs(5));
    let first = fleet_of(&owners, 1, 1);
    new.scan(&first);
    let mut one_silent = fleet_of(&owners, 2, 2);
    one_silent[0].counter = 1;
    new.scan(&one_silent);
    assert!(!new.machine.watching());
    let wait = new.machine.next_scan - new.now;
    assert_eq!(
        wait,
        F + Duration::from_millis(1),
        "its expiry, first seen at this instant"
    );
    let mut renewed = one_silent.clone();
    renewed[0].counter = 2;
    new.scan(&renewed);
    assert_eq!(new.machine.next_scan - new.now, Duration::from_secs(20));

    // A worker holding nothing, settled, with ten live owners: the slow maximum.
    // Ten owners of one lease each and a worker with none: its share is 0 or 1, the others
    // hold no more than 1, so its plan wants nothing.
    let mut idle = Worker::new("zz");
    idle.at(Duration::from_secs(5));
    idle.scan(&fleet_of(&owners, 1, 1));
    idle.scan(&fleet_of(&owners, 2, 2));
    assert!(!idle.machine.watching());
    assert_eq!(idle.machine.next_scan - idle.now, Duration::from_secs(20));

    // Below its share (one owner holds three): it asks, and scans on the interval meanwhile.
    let mut below = Worker::new("zz");
    below.at(Duration::from_secs(5));
    let mut table = fleet_of(&owners, 1, 1);
    table.push(lease("s10", Some("a"), 1));
    table.push(lease("s11", Some("a"), 1));
    below.scan(&table);
    let actions = below.scan(&table);
    assert!(
        below
            .log
            .iter()
            .any(|a| matches!(a, Action::AskHandoff { .. })),
        "{actions:?}"
    );
    assert!(below.machine.next_scan - below.now <= Duration::from_secs(2));

    // A watcher: every scan interval, and again when a lease it saw may expire.
    let mut watcher = Worker::new("me");
    watcher.at(Duration::from_secs(5));
    watcher.scan(&fleet_of(&["me", "a", "b", "c"], 1, 1));
    assert!(watcher.machine.watching());
    assert!(watcher.machine.next_scan - watcher.now <= Duration::from_secs(2));
}

/// `owners` workers holding `leases` leases between them, each seen renewing; `me` holds none.
fn wide_fleet(owners: usize, leases: usize) -> Vec<Lease> {
    (0..leases)
        .map(|i| lease(&format!("s{i:04}"), Some(&format!("w{:02}", i % owners)), 1))
        .collect()
}

/// A worker that does not watch scans no more often than its part of the fleet's scan budget
/// (live owners x leases / 20,000 items a second apart, at most a scan interval), whatever it
/// waits for: 50 workers on 1,000 leases starting together each polled every 0.5 s until
/// settled, 115 scans of the whole table a second in the simulation. A watcher polls as
/// before, as does any worker where the budget allows the poll (10 owners on 1,000 leases).
#[test]
fn workers_that_do_not_watch_share_the_fleets_scan_budget() {
    let ms = Duration::from_millis;
    // (owners, leases, watching) -> (the wait from a scan to the next, the budget's floor)
    let cases = [
        // 2.5 s by the budget: at most a scan interval.
        (50, 1_000, false, (ms(2_000), ms(2_000))),
        (50, 100, false, (HANDOFF_POLL, ms(250))),
        (10, 1_000, false, (HANDOFF_POLL, ms(500))),
        (20, 1_000, false, (ms(1_000), ms(1_000))),
        // Two owners: every worker watches, and polls.
        (2, 1_000, true, (HANDOFF_POLL, Duration::ZERO)),
    ];
    for (owners, leases, watching, (wait, floor)) in cases {
        let cell = format!("{owners} owners of {leases} leases");
        // Early (eager: polling), and below its share (it asks for handoffs, and polls).
        let mut w = Worker::new("zz");
        w.at(Duration::from_secs(1));
        // The answer to the scan sent at the start; the next is sent and answered at once.
        w.scan(&[]);
        w.scan(&wide_fleet(owners, leases));
        let sent = w.now;
        assert!(
            w.log.iter().any(|a| matches!(a, Action::AskHandoff { .. })),
            "{cell}: no handoff asked"
        );
        assert_eq!(w.machine.watching(), watching, "{cell}");
        assert_eq!(w.machine.scan_due() - sent, wait, "{cell}: the next scan");
        // Nothing brings it sooner than the floor: a rescan wanted a moment later (a take
        // failed, a shard ended) waits for it, and is sent at it.
        w.now = sent + ms(1);
        w.machine.want_scan(w.now);
        let scanned = |actions: &[Action]| actions.iter().any(|a| matches!(a, Action::Scan));
        let early = w.feed(Input::Tick);
        assert_eq!(
            scanned(&early),
            floor <= ms(1),
            "{cell}: a rescan 1 ms after"
        );
        if floor > ms(1) {
            assert_eq!(w.machine.next_wake(), Some(sent + floor), "{cell}");
            w.now = sent + floor;
            let due = w.feed(Input::Tick);
            assert!(scanned(&due), "{cell}: no scan at the floor: {due:?}");
        }
    }
}

/// Leases taken together are first renewed spread over the second half of the renewal interval
/// (by key), never later than one interval after the take, and each renewal after is timed
/// from the one before: bursts of renewals (a call under way and a connection each) do not
/// come back every interval.
#[test]
fn leases_taken_together_are_renewed_spread_out() {
    let mut b = Worker::new("b");
    let keys = take_400_at_once(&mut b);
    // Step through 8 s in 50 ms ticks; answer each renewal as sent, 10 ms later in its tick.
    let mut first: std::collections::HashMap<String, Duration> = std::collections::HashMap::new();
    let mut per_tick: Vec<usize> = Vec::new();
    for tick in 1..=160u64 {
        let at = Duration::from_millis(50 * tick);
        let renewed = b.at(at).renewals_due();
        per_tick.push(renewed.len());
        for key in renewed {
            first.entry(key.clone()).or_insert(at);
            b.feed(Input::Renewed {
                key: key.clone(),
                sent: b.now,
                outcome: written(lease(&key, Some("b"), 3)),
            });
        }
    }
    assert_eq!(first.len(), keys.len(), "every lease renewed");
    let earliest = first.values().min().copied().unwrap_or_default();
    let latest = first.values().max().copied().unwrap_or_default();
    assert!(earliest >= Duration::from_secs(2), "{earliest:?}");
    assert!(latest <= Duration::from_secs(4), "{latest:?}");
    // Spread evenly over 2 s (40 ticks): 10 a tick on average; all at once would be 400.
    let most = per_tick.iter().copied().max().unwrap_or(0);
    assert!(most <= 30, "{most} renewals in one 50 ms tick");
    // Each lease renewed again at its phase: two or three renewals in 8 s (a lease whose phase
    // came less than half an interval after the take is first renewed at half an interval,
    // then at its phase), never more than an interval apart.
    for key in &keys {
        let n = b.renewals(key);
        assert!((2..=3).contains(&n), "{key}: {n} renewals in 8 s");
    }
}

/// Renewals bunched by a table that failed for a while (every failed renewal is tried again
/// 250 ms later, so they all succeed in the same moment) are spread again within two renewals,
/// never more than a renewal interval apart.
#[test]
fn renewals_bunched_by_a_table_outage_spread_again() {
    let mut b = Worker::new("b");
    let keys = take_400_at_once(&mut b);
    // The table fails every renewal from 1 s to 4.5 s (within the 9 s trust), then answers.
    let mut per_tick_after: Vec<usize> = Vec::new();
    let mut last: std::collections::HashMap<String, Duration> = std::collections::HashMap::new();
    let mut longest = Duration::ZERO;
    for tick in 1..=400u64 {
        let at = Duration::from_millis(50 * tick);
        let renewed = b.at(at).renewals_due();
        if at > Duration::from_secs(12) {
            per_tick_after.push(renewed.len());
        }
        for key in renewed {
            let outcome = if at >= Duration::from_secs(1) && at < Duration::from_millis(4_500) {
                Outcome::Failed
            } else {
                if let Some(before) = last.insert(key.clone(), at)
                    && at > Duration::from_secs(5)
                {
                    longest = longest.max(at - before);
                }
                written(lease(&key, Some("b"), 3))
            };
            b.feed(Input::Renewed {
                key: key.clone(),
                sent: b.now,
                outcome,
            });
        }
    }
    // Right after the outage every lease was renewed in the same tick; from 12 s on (two
    // intervals later) they are spread over the interval again: 5 a tick on average.
    let most = per_tick_after.iter().copied().max().unwrap_or(0);
    assert!(
        most <= 25,
        "{most} renewals in one 50 ms tick after the outage"
    );
    assert!(
        longest <= Duration::from_millis(4_050),
        "{longest:?} between two successful renewals after the outage"
    );
    assert!(
        keys.iter()
            .all(|k| last.get(k).is_some_and(|t| *t > Duration::from_secs(16))),
        "every lease still renewed at the end"
    );
}

/// Under `max_leases`, a worker that hands a lease over is below its cap again: it scans at
/// once to judge whether it should now watch for expiries (the others count on it as full until
/// they scan), instead of at its next, perhaps slow, scan.
#[test]
fn a_worker_below_its_cap_again_after_a_handoff_scans_at_once() {
    let start = Instant::now();
    let mut capped = settings();
    capped.max_leases = Some(1);
    let mut b = Worker {
        machine: Machine::new("b", capped, start),
        start,
        now: start,
        log: Vec::new(),
    };
    b.feed(Input::Tick);
    b.feed(Input::Synced(true));
    assert_eq!(takes(&b.scan(&[lease("s0", None, 1)])), ["s0"]);
    b.feed(Input::Taken {
        key: "s0".into(),
        sent: b.now,
        outcome: written(lease("s0", Some("b"), 2)),
    });
    // c asks for it; b stops its processor and releases it as the previous owner.
    let asked = in_handoff("s0", "c", "b", 3);
    b.at(Duration::from_secs(5));
    let actions = b.scan(&[asked]);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Stop {
                reason: Stop::Handoff,
                ..
            }
        )),
        "{actions:?}"
    );
    let actions = b.feed(Input::Exited {
        key: "s0".into(),
        how: Exited::Stopped,
    });
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Release {
                role: Role::PreviousOwner,
                ..
            }
        )),
        "{actions:?}"
    );
    b.at(Duration::from_millis(5_100));
    let actions = b.feed(Input::Released {
        key: "s0".into(),
        outcome: written(lease("s0", Some("c"), 4)),
    });
    assert!(actions.contains(&Action::Scan), "{actions:?}");
}

/// How long the last renewal of `key` among `actions` waits for its answer, if one is renewed.
fn renewal_window_of(actions: &[Action], key: &str) -> Option<Duration> {
    actions.iter().rev().find_map(|a| match a {
        Action::Renew { key: k, within, .. } if k == key => Some(*within),
        _ => None,
    })
}

/// A renewal waits for its answer half the trust left (the other half kept for more attempts);
/// never less than the ordinary call timeout, nor more than the longest call.
#[test]
fn a_renewal_waits_for_its_answer_half_the_trust_left() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let (ordinary, longest) = (s(2), s(10));
    for (left, within) in [
        (s(30), s(10)),
        (s(12), s(6)),
        (s(7), ms(3500)),
        (s(5), ms(2500)),
        (s(3), s(2)),
        (s(1), s(2)),
        (Duration::ZERO, s(2)),
    ] {
        assert_eq!(
            renewal_window(left, ordinary, longest),
            within,
            "{left:?} left"
        );
    }
    // The machine's: the first renewal of a lease taken at the start is due 4 s in, 5 s before
    // its trust (9 s) runs out: it waits 2.5 s.
    let mut b = Worker::renewing_s0();
    assert_eq!(renewal_window_of(&b.log, "s0"), Some(ms(2500)));
    // It timed out (6.5 s in): tried again after `RETRY`, with 2.25 s of trust left, for the
    // ordinary 2 s.
    b.at(ms(6500));
    b.feed(Input::Renewed {
        key: "s0".into(),
        sent: b.start + s(4),
        outcome: Outcome::Failed,
    });
    b.now += RETRY;
    let actions = b.feed(Input::Tick);
    assert_eq!(renewal_window_of(&actions, "s0"), Some(s(2)), "{actions:?}");
    // Written: the next renewal is due at most an interval after this one was sent, with 5 s
    // or more of the new trust left, and waits 2.5 s or more.
    let sent = b.now;
    b.renewed("s0", written(lease("s0", Some("b"), 5)));
    let mut waited = None;
    for step in (50..=4_000).step_by(50) {
        b.now = sent + ms(step);
        let actions = b.feed(Input::Tick);
        if let Some(within) = renewal_window_of(&actions, "s0") {
            waited = Some(within);
            break;
        }
    }
    let waited = waited.unwrap_or_else(|| panic!("no renewal within an interval"));
    assert!(
        waited >= ms(2500) && waited <= ms(3500),
        "the next renewal waits {waited:?}"
    );
}
