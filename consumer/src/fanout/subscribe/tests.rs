//! The subscription machine, fed plain values at chosen instants; and, under paused tokio time,
//! run against a scripted service to show its waits as they elapse (the 5-minute renewal, the
//! silence timeout, the backoff).

use std::collections::VecDeque;

use kinesis_calls::ErrorKind;

use super::*;

const SILENCE: Duration = Duration::from_secs(30);
const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1";

fn machine() -> Subscription {
    Subscription::new(
        "s".to_owned(),
        Start::Checkpoint(Checkpoint::TrimHorizon),
        SILENCE,
        7,
    )
}

fn failure(code: &str, status: Option<u16>) -> CallFailure {
    CallFailure::new(code, "", status)
}

fn event(records: bool, continuation: &str, children: Option<Vec<ChildShard>>) -> Input {
    Input::Event(Event {
        records,
        continuation: continuation.to_owned(),
        children,
    })
}

fn not_active() -> Error {
    Error::ConsumerNotActive {
        consumer: "c".to_owned(),
        stream: "s".to_owned(),
        waited: Duration::from_secs(1),
        status: "CREATING".to_owned(),
    }
}

fn denied() -> Error {
    Error::kinesis(
        "RegisterStreamConsumer",
        "s".to_owned(),
        failure("AccessDeniedException", Some(400)),
    )
}

/// Makes `m` open a subscription at `at`.
fn open(m: &mut Subscription, at: Instant) {
    assert!(matches!(m.start(), Action::FindConsumer));
    let subscribe = m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), at);
    assert!(
        matches!(&subscribe, Some(Action::Subscribe { arn, .. }) if arn == ARN),
        "{subscribe:?}"
    );
    let read = m.handle(Input::Subscribed(Ok(())), at);
    assert!(
        matches!(read, Some(Action::Read { until }) if until == at + SILENCE),
        "{read:?}"
    );
}

/// From a wait, back to a new subscription at `at`; returns its position.
fn resubscribe(m: &mut Subscription, at: Instant) -> Start {
    let find = m.handle(Input::Tick, at);
    assert!(matches!(find, Some(Action::FindConsumer)), "{find:?}");
    match m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), at) {
        Some(Action::Subscribe { position, .. }) => position,
        other => panic!("not a subscription: {other:?}"),
    }
}

fn wait(action: Option<Action>) -> (Instant, Option<Reason>) {
    match action {
        Some(Action::Wait {
            until,
            resubscribed,
        }) => (until, resubscribed),
        other => panic!("not a wait: {other:?}"),
    }
}

fn within(at: Instant, until: Instant, low_ms: u64, high_ms: u64) -> bool {
    let waited = until - at;
    waited >= Duration::from_millis(low_ms) && waited <= Duration::from_millis(high_ms)
}

#[test]
fn a_subscription_is_started_again_from_the_last_continuation() {
    let t0 = Instant::now();
    let mut m = machine();
    open(&mut m, t0);
    // Before any record: at the continuation (nothing is skipped whatever it points at).
    let read = m.handle(event(false, "5", None), t0);
    assert!(matches!(read, Some(Action::Read { .. })), "{read:?}");
    let (until, reason) = wait(m.handle(Input::StreamEnded, t0));
    assert_eq!((until, reason), (t0, Some(Reason::SessionEnd)));
    assert_eq!(resubscribe(&mut m, t0), Start::At("5".to_owned()));
    // After a record: after the continuation, and so on even once events come without.
    m.handle(Input::Subscribed(Ok(())), t0);
    m.handle(event(true, "9", None), t0);
    m.handle(Input::StreamEnded, t0);
    assert_eq!(resubscribe(&mut m, t0), Start::After("9".to_owned()));
    m.handle(Input::Subscribed(Ok(())), t0);
    m.handle(event(false, "12", None), t0);
    m.handle(Input::StreamEnded, t0);
    assert_eq!(resubscribe(&mut m, t0), Start::After("12".to_owned()));
}

#[test]
fn the_first_subscription_starts_at_the_checkpoint() {
    let mut m = machine();
    m.start();
    match m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), Instant::now()) {
        Some(Action::Subscribe { arn, position }) => {
            assert_eq!(arn, ARN);
            assert_eq!(position, Start::Checkpoint(Checkpoint::TrimHorizon));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn silence_is_counted_from_the_last_event_and_starts_a_subscription_again_at_once() {
    let t0 = Instant::now();
    let mut m = machine();
    open(&mut m, t0);
    let t1 = t0 + Duration::from_secs(20);
    let read = m.handle(event(true, "1", None), t1);
    assert!(matches!(read, Some(Action::Read { until }) if until == t1 + SILENCE));
    // An event of an unknown type is not silence either.
    let t2 = t1 + Duration::from_secs(20);
    let read = m.handle(Input::UnknownEvent, t2);
    assert!(matches!(read, Some(Action::Read { until }) if until == t2 + SILENCE));
    // A tick before the deadline reads on.
    let read = m.handle(Input::Tick, t2 + Duration::from_secs(1));
    assert!(matches!(read, Some(Action::Read { until }) if until == t2 + SILENCE));
    let silent = t2 + SILENCE;
    assert_eq!(
        wait(m.handle(Input::Tick, silent)),
        (silent, Some(Reason::Silent))
    );
}

#[test]
fn a_subscription_ended_before_any_event_is_started_again_after_the_backoff() {
    let t0 = Instant::now();
    let mut m = machine();
    open(&mut m, t0);
    // An unknown event is not an event that counts.
    m.handle(Input::UnknownEvent, t0);
    let (until, reason) = wait(m.handle(Input::StreamEnded, t0));
    assert_eq!(reason, Some(Reason::SessionEnd));
    assert!(within(t0, until, 500, 1_000), "{:?}", until - t0);
}

#[test]
fn shard_ends_table() {
    let child = ChildShard {
        id: "shardId-2".to_owned(),
        parents: ["shardId-1".to_owned()].into(),
        hash_key_range: None,
    };
    let table: Vec<(Input, Option<Vec<ChildShard>>)> = vec![
        (event(true, "", None), None),
        (
            event(false, "", Some(vec![child.clone()])),
            Some(vec![child.clone()]),
        ),
        (
            event(false, "8", Some(vec![child.clone()])),
            Some(vec![child]),
        ),
    ];
    for (input, want) in table {
        let t0 = Instant::now();
        let mut m = machine();
        open(&mut m, t0);
        let described = format!("{input:?}");
        match m.handle(input, t0) {
            Some(Action::End { children }) => assert_eq!(children, want, "{described}"),
            other => panic!("{described}: {other:?}"),
        }
        assert!(m.handle(Input::Tick, t0).is_none(), "done after the end");
    }
}

/// What a failed subscription leads to, for every kind: on the call or mid-stream.
#[test]
fn failures_table() {
    enum Want {
        Wait(Reason),
        CheckConsumer,
        Fail,
    }
    let table: &[(&str, Option<u16>, ErrorKind, Want)] = &[
        (
            "LimitExceededException",
            Some(400),
            ErrorKind::Throttled,
            Want::Wait(Reason::Throttled),
        ),
        (
            "InternalFailure",
            None,
            ErrorKind::Transient,
            Want::Wait(Reason::Connection),
        ),
        (
            "ConnectionError",
            None,
            ErrorKind::Transient,
            Want::Wait(Reason::Connection),
        ),
        (
            "ResourceInUseException",
            Some(400),
            ErrorKind::InUse,
            Want::Wait(Reason::ResourceInUse),
        ),
        (
            "ResourceNotFoundException",
            Some(400),
            ErrorKind::NotFound,
            Want::CheckConsumer,
        ),
        (
            "AccessDeniedException",
            Some(400),
            ErrorKind::AccessDenied,
            Want::Fail,
        ),
        (
            "ValidationException",
            Some(400),
            ErrorKind::Rejected,
            Want::Fail,
        ),
    ];
    for mid_stream in [false, true] {
        for (code, status, kind, want) in table {
            let t0 = Instant::now();
            let mut m = machine();
            m.start();
            m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), t0);
            let failed = failure(code, *status);
            assert_eq!(failed.kind, *kind, "{code}");
            let input = if mid_stream {
                m.handle(Input::Subscribed(Ok(())), t0);
                Input::StreamFailed(failed)
            } else {
                Input::Subscribed(Err(failed))
            };
            let got = m.handle(input, t0);
            match (want, got) {
                (
                    Want::Wait(reason),
                    Some(Action::Wait {
                        until,
                        resubscribed,
                    }),
                ) => {
                    assert_eq!(resubscribed, Some(*reason), "{code}");
                    assert!(within(t0, until, 500, 1_000), "{code}: {:?}", until - t0);
                }
                (Want::CheckConsumer, Some(Action::CheckConsumer { arn })) => {
                    assert_eq!(arn, ARN)
                }
                (
                    Want::Fail,
                    Some(Action::Fail(Error::Kinesis {
                        operation, code: c, ..
                    })),
                ) => {
                    assert_eq!((operation, c.as_str()), ("SubscribeToShard", *code));
                }
                (_, got) => panic!("{code} (mid-stream {mid_stream}): {got:?}"),
            }
        }
    }
}

#[test]
fn every_third_resource_in_use_in_a_row_looks_at_the_consumer_and_an_event_starts_the_count_again()
{
    let t0 = Instant::now();
    let mut m = machine();
    m.start();
    let in_use = || Input::Subscribed(Err(failure("ResourceInUseException", Some(400))));
    // Subscribes through the consumer, meets ResourceInUse: whether the consumer is looked at.
    let looks = |m: &mut Subscription, times: usize| {
        let mut looked = Vec::new();
        for _ in 0..times {
            m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), t0);
            match m.handle(in_use(), t0) {
                Some(Action::CheckConsumer { .. }) => {
                    looked.push(true);
                    // Active: the previous subscription is still open; wait for it.
                    let (_, reason) = wait(m.handle(Input::ConsumerLooked(Consumer::Active), t0));
                    assert_eq!(reason, Some(Reason::ResourceInUse));
                }
                Some(Action::Wait { .. }) => looked.push(false),
                other => panic!("{other:?}"),
            }
            m.handle(Input::Tick, t0 + Duration::from_secs(60));
        }
        looked
    };
    assert_eq!(
        looks(&mut m, 7),
        [false, false, true, false, false, true, false]
    );
    // An event: the count starts again (without, the next would be the ninth).
    m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), t0);
    m.handle(Input::Subscribed(Ok(())), t0);
    m.handle(event(true, "1", None), t0);
    let (_, reason) = wait(m.handle(
        Input::StreamFailed(failure("ResourceInUseException", None)),
        t0,
    ));
    assert_eq!(reason, Some(Reason::ResourceInUse));
    m.handle(Input::Tick, t0 + Duration::from_secs(60));
    assert_eq!(looks(&mut m, 3), [false, true, false]);
}

/// `ResourceNotFoundException`: the consumer first, then the shard.
#[test]
fn not_found_looks_at_the_consumer_then_at_the_shard() {
    enum Want {
        Replace,
        End,
        Wait(Reason),
        Fail,
    }
    let table: &[(Consumer, Option<Shard>, Want)] = &[
        (Consumer::Gone, None, Want::Replace),
        (Consumer::Active, Some(Shard::Ended), Want::End),
        (Consumer::Unknown, Some(Shard::Ended), Want::End),
        (
            Consumer::Active,
            Some(Shard::Open),
            Want::Wait(Reason::NotFound),
        ),
        (
            Consumer::Active,
            Some(Shard::Unknown),
            Want::Wait(Reason::NotFound),
        ),
        (Consumer::Unknown, Some(Shard::StreamGone), Want::Fail),
    ];
    for (consumer, shard, want) in table {
        let t0 = Instant::now();
        let mut m = machine();
        open(&mut m, t0);
        let check = m.handle(
            Input::StreamFailed(failure("ResourceNotFoundException", None)),
            t0,
        );
        assert!(
            matches!(check, Some(Action::CheckConsumer { .. })),
            "{check:?}"
        );
        let mut got = m.handle(Input::ConsumerLooked(*consumer), t0);
        if let Some(shard) = shard {
            assert!(matches!(got, Some(Action::CheckShard)), "{got:?}");
            got = m.handle(Input::ShardLooked(*shard), t0);
        }
        match (want, got) {
            (Want::Replace, Some(Action::ReplaceConsumer { arn })) => assert_eq!(arn, ARN),
            (Want::End, Some(Action::End { children: None })) => {}
            (Want::Fail, Some(Action::Fail(Error::StreamNotFound { stream }))) => {
                assert_eq!(stream, "s")
            }
            (
                Want::Wait(reason),
                Some(Action::Wait {
                    until,
                    resubscribed,
                }),
            ) => {
                assert_eq!(resubscribed, Some(*reason));
                assert!(within(t0, until, 500, 1_000));
            }
            (_, got) => panic!("{consumer:?} {shard:?}: {got:?}"),
        }
    }
}

#[test]
fn a_consumer_found_gone_is_replaced() {
    let cases: Vec<(Result<String, Error>, &str)> = vec![
        (Ok("arn:new".to_owned()), "at once"),
        (Err(not_active()), "after the backoff"),
        (Err(denied()), "fail"),
    ];
    for (replaced, want) in cases {
        let t0 = Instant::now();
        let mut m = machine();
        open(&mut m, t0);
        m.handle(
            Input::StreamFailed(failure("ResourceNotFoundException", None)),
            t0,
        );
        let replace = m.handle(Input::ConsumerLooked(Consumer::Gone), t0);
        assert!(matches!(replace, Some(Action::ReplaceConsumer { .. })));
        let got = m.handle(Input::ConsumerReplaced(replaced), t0);
        match (want, got) {
            (
                "at once",
                Some(Action::Wait {
                    until,
                    resubscribed: Some(Reason::ConsumerMissing),
                }),
            ) => assert_eq!(until, t0),
            (
                "after the backoff",
                Some(Action::Wait {
                    until,
                    resubscribed: Some(Reason::ConsumerMissing),
                }),
            ) => assert!(within(t0, until, 500, 1_000)),
            ("fail", Some(Action::Fail(Error::Kinesis { operation, .. }))) => {
                assert_eq!(operation, "RegisterStreamConsumer")
            }
            (want, got) => panic!("{want}: {got:?}"),
        }
    }
}

#[test]
fn a_consumer_not_available_is_waited_for_unless_trying_again_cannot_help() {
    let t0 = Instant::now();
    let mut m = machine();
    m.start();
    let (until, reason) = wait(m.handle(Input::ConsumerArn(Err(not_active())), t0));
    // Not a resubscription: nothing is counted.
    assert_eq!(reason, None);
    assert!(within(t0, until, 500, 1_000));
    assert!(matches!(
        m.handle(Input::Tick, until),
        Some(Action::FindConsumer)
    ));
    let failed = m.handle(Input::ConsumerArn(Err(denied())), until);
    assert!(
        matches!(failed, Some(Action::Fail(Error::Kinesis { .. }))),
        "{failed:?}"
    );
    assert!(m.handle(Input::Tick, until).is_none());
}

#[test]
fn the_backoff_grows_while_subscriptions_fail_and_starts_again_after_an_event() {
    let t0 = Instant::now();
    let mut m = machine();
    m.start();
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..6 {
        m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), now);
        let (until, _) = wait(m.handle(
            Input::Subscribed(Err(failure("InternalFailure", Some(500)))),
            now,
        ));
        waits.push(until - now);
        now = until;
        m.handle(Input::Tick, now);
    }
    // 500 ms doubling to 5 s, each jittered up to as much again.
    for (wait, base) in waits.iter().zip([500, 1_000, 2_000, 4_000, 5_000, 5_000]) {
        let base = Duration::from_millis(base);
        assert!(*wait >= base && *wait <= base * 2, "{waits:?}");
    }
    m.handle(Input::ConsumerArn(Ok(ARN.to_owned())), now);
    m.handle(Input::Subscribed(Ok(())), now);
    m.handle(event(false, "3", None), now);
    let (until, _) = wait(m.handle(Input::StreamFailed(failure("InternalFailure", None)), now));
    assert!(within(now, until, 500, 1_000), "{:?}", until - now);
}

#[test]
fn an_early_tick_keeps_waiting_and_an_unexpected_answer_is_ignored() {
    let t0 = Instant::now();
    let mut m = machine();
    open(&mut m, t0);
    let (until, _) = wait(m.handle(Input::StreamFailed(failure("InternalFailure", None)), t0));
    assert_eq!(
        wait(m.handle(Input::Tick, t0)),
        (until, None),
        "not due yet: no second count"
    );
    assert_eq!(
        wait(m.handle(event(true, "1", None), t0)),
        (until, None),
        "an event while waiting changes nothing"
    );
    assert!(matches!(
        m.handle(Input::Tick, until),
        Some(Action::FindConsumer)
    ));
}

/// What one subscription gets: the call's answer (or the failure's code), then its events as
/// (delay before, what).
type Scripted = (Result<(), &'static str>, Vec<(Duration, Input)>);

/// A scripted Kinesis for the machine under paused time: what each subscription sends, and
/// when; every other answer succeeds.
struct Service {
    subscriptions: VecDeque<Scripted>,
}

/// Runs the machine against `service` under paused time, as the subscription's task does, until
/// it is done or `horizon` passes; returns when each subscription was made, and the waits'
/// reasons.
async fn run(mut service: Service, horizon: Duration) -> (Vec<Duration>, Vec<Option<Reason>>) {
    let started = Instant::now();
    let mut m = machine();
    let mut subscribed = Vec::new();
    let mut reasons = Vec::new();
    let mut events: VecDeque<(Duration, Input)> = VecDeque::new();
    let mut action = m.start();
    while started.elapsed() < horizon {
        let input = match action {
            Action::FindConsumer => Input::ConsumerArn(Ok(ARN.to_owned())),
            Action::Subscribe { .. } => {
                subscribed.push(started.elapsed());
                match service.subscriptions.pop_front() {
                    Some((Ok(()), script)) => {
                        events = script.into();
                        Input::Subscribed(Ok(()))
                    }
                    Some((Err(code), _)) => Input::Subscribed(Err(failure(code, None))),
                    // Past the script: a subscription that stays silent.
                    None => {
                        events.clear();
                        events.push_back((Duration::from_secs(3_600), Input::StreamEnded));
                        Input::Subscribed(Ok(()))
                    }
                }
            }
            Action::Read { until } => match events.front().map(|(delay, _)| *delay) {
                Some(delay) if Instant::now() + delay <= until => {
                    tokio::time::sleep(delay).await;
                    events
                        .pop_front()
                        .map_or(Input::StreamEnded, |(_, input)| input)
                }
                // Nothing before the deadline.
                Some(delay) => {
                    let waited = until - Instant::now();
                    tokio::time::sleep_until(until).await;
                    if let Some((left, _)) = events.front_mut() {
                        *left = delay - waited;
                    }
                    Input::Tick
                }
                None => Input::StreamEnded,
            },
            Action::Wait {
                until,
                resubscribed,
            } => {
                reasons.push(resubscribed);
                tokio::time::sleep_until(until).await;
                Input::Tick
            }
            Action::CheckConsumer { .. } => Input::ConsumerLooked(Consumer::Active),
            Action::ReplaceConsumer { .. } => Input::ConsumerReplaced(Ok(ARN.to_owned())),
            Action::CheckShard => Input::ShardLooked(Shard::Open),
            Action::End { .. } | Action::Fail(_) => break,
        };
        match m.handle(input, Instant::now()) {
            Some(next) => action = next,
            None => break,
        }
    }
    (subscribed, reasons)
}

/// Five minutes of events, one every 20 s, then the service's end.
fn five_minutes_of_events() -> Scripted {
    let mut script: Vec<(Duration, Input)> = (1..=15)
        .map(|i| {
            (
                Duration::from_secs(20),
                event(i % 2 == 0, &i.to_string(), None),
            )
        })
        .collect();
    script.push((Duration::ZERO, Input::StreamEnded));
    (Ok(()), script)
}

#[tokio::test(start_paused = true)]
async fn the_service_s_5_minute_end_is_followed_by_a_new_subscription_at_once() {
    let service = Service {
        subscriptions: [
            five_minutes_of_events(),
            five_minutes_of_events(),
            five_minutes_of_events(),
        ]
        .into(),
    };
    let (subscribed, reasons) = run(service, Duration::from_secs(15 * 60 + 1)).await;
    let secs: Vec<u64> = subscribed.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [0, 300, 600, 900]);
    assert_eq!(reasons, [Some(Reason::SessionEnd); 3]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_subscription_is_started_again_after_the_silence_timeout() {
    let service = Service {
        subscriptions: [(
            Ok(()),
            vec![
                (Duration::from_secs(10), event(true, "1", None)),
                // Nothing for longer than the silence timeout.
                (Duration::from_secs(45), event(true, "2", None)),
            ],
        )]
        .into(),
    };
    let (subscribed, reasons) = run(service, Duration::from_secs(95)).await;
    // Silent 30 s after the event at 10 s; then the unscripted subscription stays silent too.
    let secs: Vec<u64> = subscribed.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [0, 40, 70]);
    assert_eq!(reasons, [Some(Reason::Silent); 2]);
}

#[tokio::test(start_paused = true)]
async fn failing_subscriptions_back_off_and_an_event_resets_the_backoff() {
    let failing = || (Err("InternalFailure"), Vec::new());
    let service = Service {
        subscriptions: [
            failing(),
            failing(),
            failing(),
            failing(),
            (
                Ok(()),
                vec![
                    (Duration::from_secs(1), event(true, "1", None)),
                    (
                        Duration::ZERO,
                        Input::StreamFailed(failure("InternalFailure", None)),
                    ),
                ],
            ),
        ]
        .into(),
    };
    let (subscribed, reasons) = run(service, Duration::from_secs(60)).await;
    let gaps: Vec<Duration> = subscribed.windows(2).map(|w| w[1] - w[0]).collect();
    // Four failures: about 0.5, 1, 2 and 4 s (up to twice as much with jitter); then a
    // subscription with an event, a second, and a failure: the backoff starts at 0.5 s again.
    let bases = [500, 1_000, 2_000, 4_000];
    for (gap, base) in gaps.iter().zip(bases) {
        let base = Duration::from_millis(base);
        assert!(*gap >= base && *gap <= base * 2, "{gaps:?}");
    }
    let last = gaps[4] - Duration::from_secs(1);
    assert!(
        last >= Duration::from_millis(500) && last <= Duration::from_secs(1),
        "{gaps:?}"
    );
    assert_eq!(reasons[..5], [Some(Reason::Connection); 5]);
}
