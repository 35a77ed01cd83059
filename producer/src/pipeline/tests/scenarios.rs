//! Scripted schedules: each behaviour the pipeline promises, on explicit times.

use super::*;
use crate::{Error, Ordering, limiter::PACE};

/// Ticks at each wake the machine asks for until a call goes out; returns when.
fn tick_until_shipped(sim: &mut Sim, limit: Duration) -> Instant {
    loop {
        let wake = sim
            .machine
            .next_wake(sim.now)
            .unwrap_or_else(|| panic!("nothing to wake for"));
        assert!(wake - sim.start <= limit, "nothing shipped by {limit:?}");
        sim.at(wake - sim.start);
        if !Sim::shipped(&sim.tick()).is_empty() {
            return sim.now;
        }
    }
}

/// Answers every call as written where predicted, answers listings with `shards`, and moves
/// the clock to each wake, until every record is resolved.
fn run_until_resolved(sim: &mut Sim, shards: &[(&str, u128, u128)], limit: Duration) {
    while sim.resolved.len() < sim.receipts.len() {
        assert!(sim.elapsed() <= limit, "records still pending at {limit:?}");
        let calls: Vec<u64> = sim.calls.keys().copied().collect();
        for call in calls {
            sim.answer_written(call);
        }
        if sim.listing.is_some() {
            sim.listed(shards);
        }
        if let Some(wake) = sim.machine.next_wake(sim.now)
            && wake > sim.now
        {
            sim.at(wake - sim.start);
        }
        sim.tick();
    }
}

#[test]
fn a_record_ships_at_its_linger_deadline_and_not_before() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    let r = sim.put(LOW);
    assert_eq!(sim.machine.next_wake(sim.now), Some(sim.start + ms(100)));
    assert_eq!(Sim::shipped(&sim.at(ms(99)).tick()), Vec::<u64>::new());
    let did = sim.at(ms(100)).tick();
    let call = sim.only_call();
    assert_eq!(Sim::shipped(&did), [call]);
    assert_eq!(sim.entries_of(call), [vec![r]]);
    assert_eq!(sim.shards_of(call), ["s-0"]);
    sim.at(ms(130)).answer_written(call);
    let delivery = sim.delivery(r);
    assert_eq!(delivery.shard_id(), "s-0");
    assert_eq!(delivery.attempts().len(), 1);
    assert_eq!(
        delivery.attempts()[0].delay,
        ms(100),
        "buffered for the linger"
    );
    assert_eq!(delivery.attempts()[0].duration, ms(30));
    assert_eq!(sim.room.0, 1, "its admission room is back");
}

#[test]
fn a_throttled_entry_is_retried_after_its_backoff_and_not_before() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    let r = sim.put(LOW);
    sim.at(ms(100)).tick();
    let first = sim.only_call();
    sim.at(ms(150)).answer(first, vec![throttled()]);
    assert!(sim.is_pending(r));
    let retry_at = sim.machine.next_wake(sim.now).unwrap_or(sim.now);
    let backoff = retry_at - sim.now;
    // The minimum delay, plus up to as much again of jitter.
    assert!(backoff >= ms(100) && backoff < ms(200), "{backoff:?}");
    let before = retry_at - sim.start - Duration::from_micros(1);
    assert_eq!(Sim::shipped(&sim.at(before).tick()), Vec::<u64>::new());
    let did = sim.at(retry_at - sim.start).tick();
    let second = sim.only_call();
    assert_eq!(Sim::shipped(&did), [second]);
    assert_eq!(sim.entries_of(second), [vec![r]]);
    // The first throttle paces the shard just under its limit (the ceiling is 150 % of it).
    let factor = sim.machine.shards[0].limiter.factor();
    assert!((factor - PACE / 1.5).abs() < 1e-9, "{factor}");
    sim.at(retry_at - sim.start + ms(20)).answer_written(second);
    let attempts = sim.delivery(r).attempts().to_vec();
    assert_eq!(attempts.len(), 2);
    let error = attempts[0]
        .error
        .clone()
        .unwrap_or_else(|| panic!("no error"));
    assert_eq!(error.code, "ProvisionedThroughputExceededException");
    assert_eq!(error.wrote, Wrote::Nothing);
    assert_eq!(attempts[1].delay, backoff);
    assert_eq!(attempts[1].error, None);
}

#[test]
fn a_throttled_round_lowers_the_shard_rate_and_the_limiter_holds_the_retry_back() {
    // 10 records/s per shard (1 % of the limit): the records bucket holds 1.25 records.
    let cfg = config(|c| {
        c.rate_limit_percent = 1;
        c.aggregation = None;
    });
    let mut sim = Sim::new(cfg, TWO);
    let r = sim.at(ms(1000)).put(LOW);
    sim.at(ms(1100)).tick();
    let first = sim.only_call();
    // Answered after the limiter's first one-second round: all of it throttled, a collapse.
    sim.at(ms(1150)).answer(first, vec![throttled()]);
    let factor = sim.machine.shards[0].limiter.factor();
    assert!((factor - 0.5).abs() < 1e-9, "{factor}");
    let retry_at = sim.machine.next_wake(sim.now).unwrap_or(sim.now);
    assert!(
        retry_at < sim.start + ms(1350),
        "the backoff is under 200 ms"
    );
    // The backoff has passed but the bucket has not refilled: it held 0.25 records after the
    // first send at 1100 ms, 0.75 at 1150 ms, and paying the throttled record back left it at
    // -0.25; at 5 records/s it holds a record again 250 ms later, at 1400 ms.
    assert_eq!(
        Sim::shipped(&sim.at(retry_at - sim.start).tick()),
        Vec::<u64>::new()
    );
    let ready = sim.machine.shards[0]
        .ready_at
        .unwrap_or_else(|| panic!("the limiter refused the retry"));
    let expected = sim.start + ms(1400);
    assert!(
        ready >= expected - Duration::from_micros(10) && ready <= expected + ms(1),
        "ready at {:?}",
        ready - sim.start
    );
    let shipped = tick_until_shipped(&mut sim, ms(1500));
    assert!(shipped >= expected - Duration::from_micros(10) && shipped <= expected + ms(2));
    let second = sim.only_call();
    assert_eq!(sim.entries_of(second), [vec![r]]);
    // One clean round holds the rate: it is probed upward only after several.
    sim.at(ms(2200)).answer_written(second);
    let factor = sim.machine.shards[0].limiter.factor();
    assert!((factor - 0.5).abs() < 1e-9, "{factor}");
    assert_eq!(sim.delivery(r).attempts().len(), 2);
}

#[test]
fn with_fail_if_throttled_a_throttled_record_fails_at_once() {
    let mut sim = Sim::new(config(|c| c.fail_if_throttled = true), TWO);
    let r = sim.put(LOW);
    sim.at(ms(100)).tick();
    let call = sim.only_call();
    sim.at(ms(120)).answer(call, vec![throttled()]);
    let failure = sim.failure(r);
    assert!(
        matches!(&failure.error, Error::Throttled { shard_id, code }
            if &**shard_id == "s-0" && code == "ProvisionedThroughputExceededException"),
        "{failure:?}"
    );
    assert_eq!(failure.attempts.len(), 1);
    assert!(!failure.may_have_been_written());
    assert!(sim.machine.retries.is_empty());
}

#[test]
fn a_partial_failure_resolves_the_written_and_reships_only_the_failed() {
    let mut sim = Sim::new(config(|c| c.aggregation = None), TWO);
    let [a, b, c] = [sim.put(LOW), sim.put(LOW + 1), sim.put(LOW + 2)];
    sim.at(ms(100)).tick();
    let call = sim.only_call();
    assert_eq!(sim.entries_of(call), [vec![a], vec![b], vec![c]]);
    let did = sim.at(ms(120)).answer(
        call,
        vec![
            written("s-0", 10),
            failed_entry("InternalFailure"),
            written("s-0", 11),
        ],
    );
    assert_eq!(did, [Did::Resolved(vec![a]), Did::Resolved(vec![c])]);
    assert_eq!(sim.delivery(a).sequence_number(), format!("{:020}", 10));
    assert_eq!(sim.delivery(c).sequence_number(), format!("{:020}", 11));
    assert!(sim.is_pending(b));
    assert_eq!(sim.room.0, 2);
    let shipped = tick_until_shipped(&mut sim, ms(400));
    assert!(shipped >= sim.start + ms(220), "after the backoff");
    let retry = sim.only_call();
    assert_eq!(sim.entries_of(retry), [vec![b]], "only the failed entry");
    sim.at(shipped - sim.start + ms(10)).answer_written(retry);
    let attempts = sim.delivery(b).attempts().to_vec();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0]
            .error
            .as_ref()
            .map(|e| (e.code.as_str(), e.wrote)),
        Some(("InternalFailure", Wrote::Nothing))
    );
    assert_eq!(sim.delivery(a).attempts().len(), 1);
}

#[test]
fn a_call_refused_for_good_fails_its_records_at_once() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    let [a, b] = [sim.put(LOW), sim.put(HIGH)];
    sim.at(ms(100)).tick();
    let call = sim.only_call();
    let mut refusal = call_failure("AccessDeniedException", Some(400));
    refusal.request_id = Some("req-1".into());
    sim.at(ms(110)).fail(call, refusal);
    for id in [a, b] {
        let failure = sim.failure(id);
        assert!(
            matches!(&failure.error, Error::Rejected { kind, code, request_id, .. }
                if *kind == kinesis_calls::ErrorKind::AccessDenied
                    && code == "AccessDeniedException"
                    && request_id.as_deref() == Some("req-1")),
            "{failure:?}"
        );
        assert!(!failure.may_have_been_written(), "a 4xx wrote nothing");
    }
    assert!(sim.machine.retries.is_empty());
}

#[test]
fn records_retried_until_their_ttl_expire_with_the_last_error_and_are_not_shipped_again() {
    let mut sim = Sim::new(config(|c| c.record_ttl = Duration::from_secs(1)), TWO);
    let r = sim.put(LOW);
    sim.at(ms(100)).tick();
    // The first answer is lost: the record may be in the stream.
    let first = sim.only_call();
    sim.at(ms(150))
        .fail(first, call_failure("RequestTimeout", None));
    let mut attempts = 1;
    while sim.is_pending(r) {
        let Some(wake) = sim.machine.next_wake(sim.now) else {
            break;
        };
        sim.at(wake - sim.start);
        let did = sim.tick();
        assert!(!did.contains(&Did::Resolved(vec![r])), "expired waiting");
        if !Sim::shipped(&did).is_empty() {
            attempts += 1;
            assert!(sim.now < sim.start + ms(1000), "shipped past its TTL");
            let call = sim.only_call();
            let did = sim
                .at(sim.elapsed() + ms(10))
                .answer(call, vec![throttled()]);
            if did.contains(&Did::Resolved(vec![r])) {
                // Failed at the answer after which the next retry would come after the TTL
                // (its backoff is at most twice its base), without waiting for it.
                let longest = ms(200) * 2u32.pow(attempts as u32 - 1);
                assert!(sim.now + longest > sim.start + ms(1000), "failed early");
            }
        }
    }
    let failure = sim.failure(r);
    assert!(
        matches!(&failure.error, Error::Expired { ttl, last_error }
            if *ttl == Duration::from_secs(1)
                && last_error.as_deref() == Some("ProvisionedThroughputExceededException")),
        "{failure:?}"
    );
    assert_eq!(failure.attempts.len(), attempts);
    assert!(attempts >= 3, "{attempts}");
    assert!(failure.may_have_been_written(), "the first answer was lost");
    assert!(sim.calls.is_empty() && sim.machine.retries.is_empty());
}

#[test]
fn a_record_held_back_past_its_ttl_fails_as_expired_without_being_shipped() {
    // In ordering mode the second record waits in its shard's queue while the first one's call
    // is in flight; the call is never answered.
    let cfg = config(|c| {
        c.record_ttl = Duration::from_secs(1);
        c.ordering = Ordering::PerPartitionKey;
        c.aggregation = None;
    });
    let mut sim = Sim::new(cfg, TWO);
    let first = sim.put(LOW);
    sim.at(ms(100)).tick();
    let held = sim.at(ms(200)).put(LOW + 1);
    assert_eq!(Sim::shipped(&sim.at(ms(300)).tick()), Vec::<u64>::new());
    // Woken for its expiry.
    assert_eq!(sim.machine.next_wake(sim.now), Some(sim.start + ms(1200)));
    let did = sim.at(ms(1200)).tick();
    assert_eq!(did, [Did::Resolved(vec![held])]);
    let failure = sim.failure(held);
    assert!(
        matches!(
            &failure.error,
            Error::Expired {
                last_error: None,
                ..
            }
        ),
        "{failure:?}"
    );
    assert!(failure.attempts.is_empty());
    assert!(!failure.may_have_been_written());
    assert!(sim.is_pending(first));
}

#[test]
fn an_entry_packed_behind_the_in_flight_limit_expires_unshipped_when_a_call_frees_up() {
    // Existing behaviour: a Kinesis record already moved into the call being packed is checked
    // for expiry when that call goes out (after a call in flight answers), not by the timer.
    let cfg = config(|c| {
        c.record_ttl = Duration::from_secs(1);
        c.max_in_flight = 1;
    });
    let mut sim = Sim::new(cfg, TWO);
    sim.put(LOW);
    sim.at(ms(100)).tick();
    let call = sim.only_call();
    let held = sim.at(ms(200)).put(HIGH);
    assert_eq!(Sim::shipped(&sim.at(ms(300)).tick()), Vec::<u64>::new());
    sim.at(ms(2000)).answer_written(call);
    let did = sim.tick();
    assert_eq!(Sim::shipped(&did), Vec::<u64>::new());
    let failure = sim.failure(held);
    assert!(
        matches!(failure.error, Error::Expired { .. }),
        "{failure:?}"
    );
    assert!(failure.attempts.is_empty());
}

#[test]
fn a_flush_ships_everything_buffered_at_once_and_completes_after_the_receipts() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    let [a, b] = [sim.put(LOW), sim.put(HIGH)];
    sim.at(ms(10));
    assert_eq!(sim.feed(Input::Flush(5)), []);
    let did = sim.tick();
    let call = sim.only_call();
    assert_eq!(Sim::shipped(&did), [call], "before the linger deadline");
    assert_eq!(sim.entries_of(call).len(), 2, "both shards in one call");
    let did = sim.at(ms(20)).answer_written(call);
    assert_eq!(did.len(), 3);
    assert_eq!(
        did.last(),
        Some(&Did::Flushed(5)),
        "after both receipts: {did:?}"
    );
    assert!(!sim.is_pending(a) && !sim.is_pending(b));
    // The flush is over: the next record waits for its linger again.
    sim.at(ms(30)).put(LOW);
    assert_eq!(Sim::shipped(&sim.tick()), Vec::<u64>::new());
    assert_eq!(sim.machine.next_wake(sim.now), Some(sim.start + ms(130)));
}

#[test]
fn a_flush_waits_for_the_records_before_it_only() {
    let mut sim = Sim::new(config(|c| c.aggregation = None), TWO);
    let before = sim.put(LOW);
    sim.feed(Input::Flush(1));
    let after = sim.put(LOW + 1);
    sim.tick();
    let call = sim.only_call();
    assert_eq!(sim.entries_of(call), [vec![before], vec![after]]);
    let did = sim
        .at(ms(5))
        .answer(call, vec![written("s-0", 3), throttled()]);
    assert_eq!(did, [Did::Resolved(vec![before]), Did::Flushed(1)]);
    assert!(sim.is_pending(after));
}

#[test]
fn a_flush_with_nothing_outstanding_completes_at_once() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    assert_eq!(sim.feed(Input::Flush(9)), [Did::Flushed(9)]);
}

#[test]
fn once_closed_everything_held_ships_at_once_and_the_machine_drains() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    let [a, b] = [sim.put(LOW), sim.put(HIGH)];
    sim.at(ms(5)).feed(Input::Closed);
    assert!(!sim.machine.is_drained());
    sim.tick();
    let call = sim.only_call();
    let results = sim
        .shards_of(call)
        .iter()
        .map(|shard| {
            if shard == "s-0" {
                written("s-0", 1)
            } else {
                throttled()
            }
        })
        .collect();
    sim.at(ms(15)).answer(call, results);
    assert!(!sim.is_pending(a) && sim.is_pending(b));
    assert!(!sim.machine.is_drained(), "a retry is pending");
    // The retry is not held for a linger either.
    let shipped = tick_until_shipped(&mut sim, ms(300));
    assert!(shipped < sim.start + ms(215));
    let retry = sim.only_call();
    sim.at(sim.elapsed() + ms(5)).answer_written(retry);
    assert!(sim.machine.is_drained());
    assert_eq!(sim.machine.next_wake(sim.now), Some(sim.start + ms(60_000)));
}

#[test]
fn an_aggregate_written_to_a_shard_that_holds_only_some_of_its_records_is_split_and_resent() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    // Both in s-0's half, on either side of the split to come.
    let [a, b] = [sim.put(LOW), sim.put(LOW_HIGH)];
    sim.at(ms(100)).tick();
    let call = sim.only_call();
    assert_eq!(sim.entries_of(call), [vec![a, b]], "one aggregate");
    // The shard splits; the producer learns it while the call is in flight.
    sim.at(ms(150)).listed(SPLIT);
    // Kinesis routed the aggregate by its first record's key, to s-2, which holds only `a`'s.
    let did = sim.at(ms(200)).answer(call, vec![written("s-2", 40)]);
    assert!(
        !did.iter().any(|d| matches!(d, Did::Resolved(_))),
        "nothing resolved by a write consumers drop: {did:?}"
    );
    // Routed again each by the new map, and sent at once (their linger has passed).
    let did = sim.tick();
    assert!(
        !did.contains(&Did::Listed),
        "the map is newer than the call"
    );
    let resent = sim.only_call();
    let mut entries: Vec<(String, Vec<usize>)> = sim
        .shards_of(resent)
        .into_iter()
        .zip(sim.entries_of(resent))
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [("s-2".to_owned(), vec![a]), ("s-3".to_owned(), vec![b])]
    );
    sim.at(ms(220)).answer_written(resent);
    for (id, shard) in [(a, "s-2"), (b, "s-3")] {
        let delivery = sim.delivery(id);
        assert_eq!(delivery.shard_id(), shard);
        let attempts = delivery.attempts();
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            attempts[0]
                .error
                .as_ref()
                .map(|e| (e.code.as_str(), e.wrote)),
            Some(("WrongShard", Wrote::ToAnotherShard))
        );
        assert_eq!(attempts[1].error, None);
    }
}

#[test]
fn an_aggregate_written_to_a_shard_the_map_does_not_know_is_judged_after_the_refresh() {
    // (keys, delivered where first written?)
    let cases: &[(&[u128], bool)] = &[(&[LOW, LOW + 1], true), (&[LOW, LOW_HIGH], false)];
    for (keys, kept) in cases {
        let mut sim = Sim::new(config(|_| {}), TWO);
        let ids: Vec<usize> = keys.iter().map(|k| sim.put(*k)).collect();
        sim.at(ms(100)).tick();
        let call = sim.only_call();
        assert_eq!(sim.entries_of(call), std::slice::from_ref(&ids));
        // Split meanwhile: written to s-2, unknown to the producer's map.
        let did = sim.at(ms(150)).answer(call, vec![written("s-2", 40)]);
        assert_eq!(did, [], "nothing resolved before the map is known");
        assert_eq!(sim.tick(), [Did::Listed], "the map is refreshed at once");
        let did = sim.at(ms(170)).listed(SPLIT);
        if *kept {
            assert_eq!(did, [Did::Resolved(ids.clone())]);
            for (index, id) in ids.iter().enumerate() {
                let delivery = sim.delivery(*id);
                assert_eq!(delivery.shard_id(), "s-2");
                assert_eq!(delivery.sequence_number(), format!("{:020}", 40));
                assert_eq!(delivery.sub_sequence_number(), index as u64);
                assert_eq!(delivery.attempts().len(), 1);
            }
        } else {
            assert_eq!(did, []);
            sim.tick();
            let resent = sim.only_call();
            assert_eq!(sim.entries_of(resent).len(), 2, "one entry per new shard");
            sim.at(ms(190)).answer_written(resent);
            assert_eq!(sim.delivery(ids[0]).shard_id(), "s-2");
            assert_eq!(sim.delivery(ids[1]).shard_id(), "s-3");
            let first = sim.delivery(ids[1]).attempts()[0].clone();
            assert_eq!(first.error.map(|e| e.wrote), Some(Wrote::ToAnotherShard));
        }
    }
}

#[test]
fn map_changes_with_calls_in_flight_neither_lose_nor_resolve_twice() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    let [r0, r1] = [sim.put(LOW), sim.put(HIGH)];
    sim.at(ms(100)).tick();
    let first = sim.only_call();
    // Two more records in s-0's aggregate under construction.
    let [r2, r3] = [sim.at(ms(110)).put(LOW + 1), sim.put(LOW_HIGH)];
    // s-0 splits while the first call is in flight: its aggregate is routed again.
    assert_eq!(sim.at(ms(150)).listed(SPLIT), []);
    let ids: Vec<String> = sim
        .machine
        .shards
        .iter()
        .map(|s| s.info.id.to_string())
        .collect();
    assert_eq!(ids, ["s-2", "s-3", "s-1"]);
    // s-1 stays, with its entry in flight.
    let busy: Vec<usize> = sim.machine.shards.iter().map(|s| s.busy).collect();
    assert_eq!(busy, [0, 0, 1]);
    // The first call answers for the shard it was packed for: written to s-0 (before the
    // split), and throttled on s-1.
    let mut results = Vec::new();
    for shard in sim.shards_of(first) {
        results.push(if shard == "s-0" {
            written("s-0", 1)
        } else {
            throttled()
        });
    }
    let did = sim.at(ms(160)).answer(first, results);
    assert_eq!(did, [Did::Resolved(vec![r0])]);
    assert_eq!(sim.delivery(r0).shard_id(), "s-0");
    // The re-routed records go out on their new shards.
    sim.at(ms(210)).tick();
    let second = sim.only_call();
    let mut shards = sim.shards_of(second);
    shards.sort();
    assert_eq!(shards, ["s-2", "s-3"]);
    // They merge again while the second call is in flight; one of its entries fails.
    assert_eq!(sim.at(ms(220)).listed(MERGED), []);
    let results = sim
        .shards_of(second)
        .iter()
        .map(|shard| {
            if shard == "s-2" {
                written("s-2", 2)
            } else {
                failed_entry("InternalFailure")
            }
        })
        .collect();
    assert_eq!(
        sim.at(ms(230)).answer(second, results),
        [Did::Resolved(vec![r2])]
    );
    // The retry of s-3's entry finds its shard closed: routed again, to s-4.
    run_until_resolved(&mut sim, MERGED, Duration::from_secs(5));
    assert_eq!(sim.delivery(r1).shard_id(), "s-1");
    assert_eq!(sim.delivery(r1).attempts().len(), 2);
    assert_eq!(sim.delivery(r2).shard_id(), "s-2");
    assert_eq!(sim.delivery(r3).shard_id(), "s-4");
    assert_eq!(sim.delivery(r3).attempts().len(), 2);
    assert_eq!(sim.room.0, 4);
    assert_eq!(sim.machine.flushes.outstanding(), 0);
    assert!(sim.machine.in_flight.is_empty());
}

#[test]
fn ordering_mode_keeps_one_entry_per_shard_in_flight_and_retries_before_newer_records() {
    let cfg = config(|c| {
        c.ordering = Ordering::PerPartitionKey;
        c.aggregation = None;
    });
    let mut sim = Sim::new(cfg, TWO);
    let ids = sim.put_many(&[
        ("k", Some(LOW)),
        ("k", Some(LOW)),
        ("k", Some(LOW)),
        ("m", Some(HIGH)),
    ]);
    let [a, b, c, other] = [ids[0], ids[1], ids[2], ids[3]];
    sim.at(ms(100)).tick();
    let first = sim.only_call();
    let mut entries = sim.entries_of(first);
    entries.sort();
    assert_eq!(entries, [vec![a], vec![other]], "one entry per shard");
    assert_eq!(Sim::shipped(&sim.at(ms(101)).tick()), Vec::<u64>::new());
    let results = sim
        .shards_of(first)
        .iter()
        .map(|shard| {
            if shard == "s-0" {
                throttled()
            } else {
                written("s-1", 1)
            }
        })
        .collect();
    sim.at(ms(120)).answer(first, results);
    // Nothing newer goes out for s-0 while its oldest record waits for its retry.
    let retry_at = sim.machine.next_wake(sim.now).unwrap_or(sim.now);
    assert_eq!(Sim::shipped(&sim.at(ms(121)).tick()), Vec::<u64>::new());
    assert_eq!(
        Sim::shipped(
            &sim.at(retry_at - sim.start - Duration::from_micros(1))
                .tick()
        ),
        Vec::<u64>::new()
    );
    let mut order = Vec::new();
    sim.at(retry_at - sim.start);
    for _ in 0..3 {
        sim.tick();
        let call = sim.only_call();
        let entries = sim.entries_of(call);
        assert_eq!(entries.len(), 1);
        order.push(entries[0][0]);
        assert_eq!(
            Sim::shipped(&sim.tick()),
            Vec::<u64>::new(),
            "one at a time"
        );
        sim.at(sim.elapsed() + ms(10)).answer_written(call);
    }
    assert_eq!(
        order,
        [a, b, c],
        "the retried record first, then in put order"
    );
    let sequence = |sim: &mut Sim, id| sim.delivery(id).sequence_number().to_owned();
    let (sa, sb, sc) = (
        sequence(&mut sim, a),
        sequence(&mut sim, b),
        sequence(&mut sim, c),
    );
    assert!(sa < sb && sb < sc, "{sa} {sb} {sc}");
}

#[test]
fn a_failed_refresh_is_retried_with_backoff_and_sends_unverifiable_entries_again() {
    let mut sim = Sim::new(config(|_| {}), TWO);
    let [a, b] = [sim.put(LOW), sim.put(LOW + 1)];
    sim.at(ms(100)).tick();
    let call = sim.only_call();
    sim.at(ms(150)).answer(call, vec![written("s-2", 7)]);
    assert_eq!(sim.tick(), [Did::Listed]);
    sim.listing = None;
    sim.at(ms(160));
    let did = sim.feed(Input::Listed(Err("ListShards failed".into())));
    assert_eq!(did, []);
    // The entry is sent again (it cannot be checked), and the next refresh waits a second.
    let did = sim.tick();
    assert!(!did.contains(&Did::Listed));
    let resent = sim.only_call();
    assert_eq!(sim.entries_of(resent), [vec![a, b]]);
    assert_eq!(sim.at(ms(1159)).tick(), []);
    assert_eq!(sim.at(ms(1160)).tick(), [Did::Listed]);
}

#[test]
fn a_failed_periodic_refresh_waits_for_its_backoff() {
    let mut sim = Sim::new(
        config(|c| c.shard_map_refresh = Duration::from_secs(1)),
        TWO,
    );
    assert_eq!(sim.at(ms(999)).tick(), []);
    // Due every second; after failures 1 s later, then 1.5 s later; after a success, periodic
    // again.
    for (at, ok) in [(1000, false), (2000, false), (3500, true), (4500, true)] {
        assert_eq!(sim.at(ms(at - 1)).tick(), [], "before {at} ms");
        assert_eq!(sim.at(ms(at)).tick(), [Did::Listed], "at {at} ms");
        if ok {
            sim.listed(TWO);
        } else {
            sim.listing = None;
            sim.feed(Input::Listed(Err("ListShards failed".into())));
        }
        assert_eq!(sim.tick(), [], "not again at once after {at} ms");
    }
}

/// `n` shards of equal ranges tiling the key space, named `s-0` ..
fn even_shards(n: u128) -> Vec<(String, u128, u128)> {
    let width = u128::MAX / n;
    (0..n)
        .map(|i| {
            let end = if i == n - 1 {
                u128::MAX
            } else {
                (i + 1) * width - 1
            };
            (format!("s-{i}"), i * width, end)
        })
        .collect()
}

#[test]
fn the_hash_key_cache_holds_sixteen_keys_per_shard_and_grows_with_the_stream() {
    use crate::pipeline::machine::hash_key_capacity;
    let table = [
        (1, 1024),
        (4, 1024),
        (64, 1024),
        (65, 1040),
        (1000, 16_000),
        (5000, 65_536),
    ];
    for (shards, capacity) in table {
        assert_eq!(hash_key_capacity(shards), capacity, "{shards} shards");
    }
    let owned = even_shards(100);
    let shards: Vec<(&str, u128, u128)> = owned
        .iter()
        .map(|(id, s, e)| (id.as_str(), *s, *e))
        .collect();
    let mut sim = Sim::new(config(|_| {}), &shards);
    assert_eq!(sim.machine.hash_keys.capacity(), 1600);
    let owned = even_shards(300);
    let grown: Vec<(&str, u128, u128)> = owned
        .iter()
        .map(|(id, s, e)| (id.as_str(), *s, *e))
        .collect();
    sim.at(ms(10)).listed(&grown);
    assert_eq!(
        sim.machine.hash_keys.capacity(),
        4800,
        "grown with the stream"
    );
    sim.at(ms(20)).listed(&shards);
    assert_eq!(sim.machine.hash_keys.capacity(), 4800, "never shrunk");
}
