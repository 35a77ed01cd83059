//! Table tests: every branch of [`decide`], every [`ErrorKind`] for every read call, and the
//! backoff.

use std::collections::BTreeSet;

use super::*;

const KINDS: [ErrorKind; 6] = [
    ErrorKind::Throttled,
    ErrorKind::Transient,
    ErrorKind::InUse,
    ErrorKind::AccessDenied,
    ErrorKind::NotFound,
    ErrorKind::Rejected,
];

const CALLS: [Call; 3] = [
    Call::GetShardIterator,
    Call::GetRecords,
    Call::SubscribeToShard,
];

fn again(pause: Pause, reason: Reason) -> Decision {
    Decision::Retry {
        pause,
        reason: Some(reason),
    }
}

fn failed(call: Call, kind: ErrorKind, code: &str, in_use: u32) -> Decision {
    decide(Happened::Failed { call, kind, code }, Context { in_use })
}

fn child(id: &str) -> ChildShard {
    ChildShard {
        id: id.to_owned(),
        parents: BTreeSet::from(["shardId-0".to_owned()]),
        hash_key_range: None,
    }
}

/// The variant's name, to check that every one is reached.
fn variant(decision: &Decision) -> &'static str {
    match decision {
        Decision::Continue { .. } => "Continue",
        Decision::ShardEnd { .. } => "ShardEnd",
        Decision::Retry { .. } => "Retry",
        Decision::RenewIterator => "RenewIterator",
        Decision::CheckConsumer { .. } => "CheckConsumer",
        Decision::ReplaceConsumer => "ReplaceConsumer",
        Decision::CheckShard => "CheckShard",
        Decision::Fail => "Fail",
    }
}

/// Every read call with every kind of failure: (call, kind, consecutive in-use answers, what
/// happens). Polling's rows are what it did before the decision was shared; fan-out's, what its
/// subscription loop did (the reason is the resubscription metric's label).
#[allow(clippy::type_complexity)]
fn failure_table() -> Vec<(Call, ErrorKind, u32, Decision)> {
    use Call::*;
    use ErrorKind::*;
    use Pause::Backoff;
    vec![
        // Polling: an iterator.
        (
            GetShardIterator,
            Throttled,
            0,
            again(Backoff, Reason::Throttled),
        ),
        (
            GetShardIterator,
            Transient,
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            GetShardIterator,
            InUse,
            0,
            again(Backoff, Reason::ResourceInUse),
        ),
        (GetShardIterator, AccessDenied, 0, Decision::Fail),
        (
            GetShardIterator,
            NotFound,
            0,
            Decision::ShardEnd { children: None },
        ),
        (GetShardIterator, Rejected, 0, Decision::Fail),
        // Polling: records.
        (GetRecords, Throttled, 0, again(Backoff, Reason::Throttled)),
        (GetRecords, Transient, 0, again(Backoff, Reason::Connection)),
        (GetRecords, InUse, 0, again(Backoff, Reason::ResourceInUse)),
        (GetRecords, AccessDenied, 0, Decision::Fail),
        // Polling failed here before the decision was shared; it now looks at the shard as
        // fan-out does.
        (GetRecords, NotFound, 0, Decision::CheckShard),
        (GetRecords, Rejected, 0, Decision::Fail),
        // Fan-out: the subscription call or its event stream.
        (
            SubscribeToShard,
            Throttled,
            0,
            again(Backoff, Reason::Throttled),
        ),
        (
            SubscribeToShard,
            Transient,
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            SubscribeToShard,
            InUse,
            1,
            again(Backoff, Reason::ResourceInUse),
        ),
        (
            SubscribeToShard,
            InUse,
            2,
            again(Backoff, Reason::ResourceInUse),
        ),
        (
            SubscribeToShard,
            InUse,
            3,
            Decision::CheckConsumer {
                if_active: IfActive::Retry,
            },
        ),
        (
            SubscribeToShard,
            InUse,
            4,
            again(Backoff, Reason::ResourceInUse),
        ),
        (
            SubscribeToShard,
            InUse,
            6,
            Decision::CheckConsumer {
                if_active: IfActive::Retry,
            },
        ),
        (SubscribeToShard, AccessDenied, 0, Decision::Fail),
        (
            SubscribeToShard,
            NotFound,
            0,
            Decision::CheckConsumer {
                if_active: IfActive::CheckShard,
            },
        ),
        (SubscribeToShard, Rejected, 0, Decision::Fail),
    ]
}

#[test]
fn failures_table() {
    for (call, kind, in_use, want) in failure_table() {
        assert_eq!(
            failed(call, kind, "SomeCode", in_use),
            want,
            "{call:?} {kind:?} in use {in_use}"
        );
    }
}

#[test]
fn the_failure_table_covers_every_kind_for_every_call() {
    let table = failure_table();
    for call in CALLS {
        for kind in KINDS {
            assert!(
                table.iter().any(|(c, k, _, _)| *c == call && *k == kind),
                "no row for {call:?} {kind:?}"
            );
        }
    }
}

/// A failure decided from the service's real codes, as the call layer classifies them (status
/// `None`, as from an event stream, or the status the service answers with).
#[test]
fn codes_table() {
    use Call::*;
    use Pause::Backoff;
    let table: &[(Call, &str, Option<u16>, u32, Decision)] = &[
        // An iterator that expired is renewed at once, whatever its kind.
        (
            GetRecords,
            "ExpiredIteratorException",
            Some(400),
            0,
            Decision::RenewIterator,
        ),
        // ... only for `GetRecords`: asking for an iterator cannot meet it.
        (
            GetShardIterator,
            "ExpiredIteratorException",
            Some(400),
            0,
            Decision::Fail,
        ),
        (
            SubscribeToShard,
            "ExpiredIteratorException",
            None,
            0,
            Decision::Fail,
        ),
        (
            GetRecords,
            "ProvisionedThroughputExceededException",
            Some(400),
            0,
            again(Backoff, Reason::Throttled),
        ),
        (
            GetRecords,
            "KMSThrottlingException",
            Some(400),
            0,
            again(Backoff, Reason::Throttled),
        ),
        (
            GetRecords,
            "KMSAccessDeniedException",
            Some(400),
            0,
            Decision::Fail,
        ),
        (
            GetRecords,
            "KMSDisabledException",
            Some(400),
            0,
            Decision::Fail,
        ),
        (
            GetRecords,
            "InternalFailure",
            Some(500),
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            GetRecords,
            "RequestTimeout",
            None,
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            GetRecords,
            "ExpiredTokenException",
            Some(400),
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            GetShardIterator,
            "ResourceNotFoundException",
            Some(400),
            0,
            Decision::ShardEnd { children: None },
        ),
        (
            GetShardIterator,
            "AccessDeniedException",
            Some(400),
            0,
            Decision::Fail,
        ),
        (
            GetShardIterator,
            "InvalidArgumentException",
            Some(400),
            0,
            Decision::Fail,
        ),
        // SubscribeToShard more than once a second per shard and consumer.
        (
            SubscribeToShard,
            "LimitExceededException",
            Some(400),
            0,
            again(Backoff, Reason::Throttled),
        ),
        (
            SubscribeToShard,
            "ResourceInUseException",
            Some(400),
            1,
            again(Backoff, Reason::ResourceInUse),
        ),
        (
            SubscribeToShard,
            "ResourceInUseException",
            Some(400),
            3,
            Decision::CheckConsumer {
                if_active: IfActive::Retry,
            },
        ),
        (
            SubscribeToShard,
            "ResourceNotFoundException",
            None,
            0,
            Decision::CheckConsumer {
                if_active: IfActive::CheckShard,
            },
        ),
        (
            SubscribeToShard,
            "InternalFailure",
            None,
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            SubscribeToShard,
            "ConnectionError",
            None,
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            SubscribeToShard,
            "ResponseError",
            None,
            0,
            again(Backoff, Reason::Connection),
        ),
        (
            SubscribeToShard,
            "AccessDeniedException",
            None,
            0,
            Decision::Fail,
        ),
        (
            SubscribeToShard,
            "ValidationException",
            None,
            0,
            Decision::Fail,
        ),
        (
            SubscribeToShard,
            "ConstructionFailure",
            None,
            0,
            Decision::Fail,
        ),
        (SubscribeToShard, "DispatchFailure", None, 0, Decision::Fail),
        // A code no list names, and no status: transient.
        (
            SubscribeToShard,
            "SomethingNew",
            None,
            0,
            again(Backoff, Reason::Connection),
        ),
    ];
    for (call, code, status, in_use, want) in table {
        let failure = CallFailure::new(*code, "", *status);
        assert_eq!(
            decide(
                Happened::failed(*call, &failure),
                Context { in_use: *in_use }
            ),
            *want,
            "{call:?} {code} {status:?}"
        );
    }
}

#[test]
fn events_table() {
    let event = |records: bool, continuation: &str, children: Option<Vec<ChildShard>>| {
        decide(
            Happened::Event(Event {
                records,
                continuation: continuation.to_owned(),
                children,
            }),
            Context::default(),
        )
    };
    let continue_from = |c: &str| Decision::Continue {
        continuation: c.to_owned(),
    };
    let children = || Some(vec![child("shardId-1"), child("shardId-2")]);
    let table: Vec<(Decision, Decision)> = vec![
        // An event with records, or without (a heartbeat), goes on from its continuation.
        (event(true, "7", None), continue_from("7")),
        (event(false, "7", None), continue_from("7")),
        // No continuation: the shard has ended, children named or not, records or not (they
        // were handed over before).
        (
            event(false, "", None),
            Decision::ShardEnd { children: None },
        ),
        (event(true, "", None), Decision::ShardEnd { children: None }),
        (
            event(false, "", children()),
            Decision::ShardEnd {
                children: children(),
            },
        ),
        (
            event(true, "", children()),
            Decision::ShardEnd {
                children: children(),
            },
        ),
        // Children with a continuation (a stand-in's closed shard): the end once no records
        // are left.
        (
            event(false, "7", children()),
            Decision::ShardEnd {
                children: children(),
            },
        ),
        (event(true, "7", children()), continue_from("7")),
    ];
    for (i, (got, want)) in table.into_iter().enumerate() {
        assert_eq!(got, want, "row {i}");
    }
}

#[test]
fn subscription_ends_table() {
    let table: &[(Happened<'_>, Decision)] = &[
        // The service's 5-minute end: at once after events, after the backoff if none came.
        (
            Happened::Closed { events: true },
            again(Pause::Now, Reason::SessionEnd),
        ),
        (
            Happened::Closed { events: false },
            again(Pause::Backoff, Reason::SessionEnd),
        ),
        (Happened::Silent, again(Pause::Now, Reason::Silent)),
    ];
    for (happened, want) in table {
        assert_eq!(
            decide(happened.clone(), Context::default()),
            *want,
            "{happened:?}"
        );
    }
}

#[test]
fn stream_consumer_table() {
    use Consumer::*;
    let table: &[(Happened<'_>, Decision)] = &[
        (
            Happened::NoConsumer { retryable: true },
            Decision::Retry {
                pause: Pause::Backoff,
                reason: None,
            },
        ),
        (Happened::NoConsumer { retryable: false }, Decision::Fail),
        (
            Happened::ConsumerLooked {
                found: Gone,
                if_active: IfActive::Retry,
            },
            Decision::ReplaceConsumer,
        ),
        (
            Happened::ConsumerLooked {
                found: Gone,
                if_active: IfActive::CheckShard,
            },
            Decision::ReplaceConsumer,
        ),
        (
            Happened::ConsumerLooked {
                found: Active,
                if_active: IfActive::Retry,
            },
            again(Pause::Backoff, Reason::ResourceInUse),
        ),
        (
            Happened::ConsumerLooked {
                found: Unknown,
                if_active: IfActive::Retry,
            },
            again(Pause::Backoff, Reason::ResourceInUse),
        ),
        (
            Happened::ConsumerLooked {
                found: Active,
                if_active: IfActive::CheckShard,
            },
            Decision::CheckShard,
        ),
        (
            Happened::ConsumerLooked {
                found: Unknown,
                if_active: IfActive::CheckShard,
            },
            Decision::CheckShard,
        ),
        (
            Happened::ConsumerReplaced(Outcome::Found),
            again(Pause::Now, Reason::ConsumerMissing),
        ),
        (
            Happened::ConsumerReplaced(Outcome::Retryable),
            again(Pause::Backoff, Reason::ConsumerMissing),
        ),
        (Happened::ConsumerReplaced(Outcome::Fatal), Decision::Fail),
    ];
    for (happened, want) in table {
        assert_eq!(
            decide(happened.clone(), Context::default()),
            *want,
            "{happened:?}"
        );
    }
}

#[test]
fn shard_looks_table() {
    let table: &[(Shard, Decision)] = &[
        (Shard::Ended, Decision::ShardEnd { children: None }),
        (Shard::Open, again(Pause::Backoff, Reason::NotFound)),
        (Shard::Unknown, again(Pause::Backoff, Reason::NotFound)),
        (Shard::StreamGone, Decision::Fail),
    ];
    for (found, want) in table {
        assert_eq!(
            decide(Happened::ShardLooked(*found), Context::default()),
            *want,
            "{found:?}"
        );
    }
}

#[test]
fn registration_outcomes_come_from_the_error() {
    let retryable: Result<(), crate::error::Error> = Err(crate::error::Error::ConsumerNotActive {
        consumer: "c".to_owned(),
        stream: "s".to_owned(),
        waited: Duration::from_secs(1),
        status: "CREATING".to_owned(),
    });
    let fatal: Result<(), crate::error::Error> = Err(crate::error::Error::kinesis(
        "RegisterStreamConsumer",
        "s".to_owned(),
        CallFailure::new("AccessDeniedException", "", Some(400)),
    ));
    assert_eq!(
        Outcome::of(&Ok::<_, crate::error::Error>(())),
        Outcome::Found
    );
    assert_eq!(Outcome::of(&retryable), Outcome::Retryable);
    assert_eq!(Outcome::of(&fatal), Outcome::Fatal);
}

/// Every variant of [`Decision`] is reached by some input (so none is dead), and polling meets
/// only the ones its reader handles.
#[test]
fn every_decision_is_reachable_and_polling_meets_only_its_own() {
    let mut reached = BTreeSet::new();
    for (call, _, _, decision) in failure_table() {
        reached.insert(variant(&decision));
        if call != Call::SubscribeToShard {
            assert!(
                matches!(
                    decision,
                    Decision::Retry { .. }
                        | Decision::ShardEnd { .. }
                        | Decision::CheckShard
                        | Decision::Fail
                ),
                "{call:?}: {decision:?}"
            );
        }
    }
    let more = [
        Happened::Event(Event {
            records: true,
            continuation: "1".to_owned(),
            children: None,
        }),
        Happened::ConsumerLooked {
            found: Consumer::Gone,
            if_active: IfActive::Retry,
        },
        Happened::ConsumerLooked {
            found: Consumer::Active,
            if_active: IfActive::CheckShard,
        },
        Happened::Failed {
            call: Call::GetRecords,
            kind: ErrorKind::Rejected,
            code: "ExpiredIteratorException",
        },
    ];
    for happened in more {
        reached.insert(variant(&decide(happened, Context::default())));
    }
    let all = [
        "Continue",
        "ShardEnd",
        "Retry",
        "RenewIterator",
        "CheckConsumer",
        "ReplaceConsumer",
        "CheckShard",
        "Fail",
    ];
    assert_eq!(reached, BTreeSet::from(all));
}

#[test]
fn reasons_are_the_metric_labels() {
    let table = [
        (Reason::SessionEnd, "session_end"),
        (Reason::Silent, "silent"),
        (Reason::Connection, "connection"),
        (Reason::ResourceInUse, "resource_in_use"),
        (Reason::Throttled, "throttled"),
        (Reason::ConsumerMissing, "consumer_missing"),
        (Reason::NotFound, "not_found"),
    ];
    for (reason, label) in table {
        assert_eq!(reason.as_str(), label);
    }
}

#[test]
fn backoff_table() {
    let ms = Duration::from_millis;
    // (min, max, attempt, unit, delay)
    let table: &[(u64, u64, u32, f64, u64)] = &[
        // Polling: 100 ms to 5 s.
        (100, 5_000, 1, 0.0, 100),
        (100, 5_000, 2, 0.0, 200),
        (100, 5_000, 6, 0.0, 3_200),
        (100, 5_000, 7, 0.0, 5_000),
        (100, 5_000, 1, 0.5, 150),
        (100, 5_000, 7, 0.5, 7_500),
        // Jitter adds at most as much again.
        (100, 5_000, 7, 1.0, 10_000),
        (100, 5_000, 7, 7.0, 10_000),
        (100, 5_000, 7, -1.0, 5_000),
        // Subscriptions: 500 ms to 5 s.
        (500, 5_000, 1, 0.0, 500),
        (500, 5_000, 4, 0.0, 4_000),
        (500, 5_000, 5, 0.0, 5_000),
        // The stream consumer: 100 ms to 2 s.
        (100, 2_000, 5, 0.0, 1_600),
        (100, 2_000, 6, 0.0, 2_000),
        // Attempt 0 counts as the first; huge attempts do not overflow.
        (100, 2_000, 0, 0.0, 100),
        (100, 2_000, u32::MAX, 0.0, 2_000),
    ];
    for (min, max, attempt, unit, want) in table {
        let backoff = Backoff::new(ms(*min), ms(*max));
        assert_eq!(
            backoff.delay(*attempt, *unit),
            ms(*want),
            "{min}..{max} attempt {attempt} unit {unit}"
        );
    }
}

#[test]
fn backoff_counts_its_attempts_until_reset() {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let delays: Vec<_> = (0..6).map(|_| backoff.next(0.0)).collect();
    assert_eq!(
        delays,
        [500, 1_000, 2_000, 4_000, 5_000, 5_000].map(Duration::from_millis)
    );
    backoff.reset();
    assert_eq!(backoff.next(0.0), Duration::from_millis(500));
}
