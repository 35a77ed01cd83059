//! Finding the stream consumer: the machine fed plain values at chosen instants, and run under
//! paused tokio time against a scripted service to show the wait for `ACTIVE` and the register
//! timeout as they elapse.

use std::collections::VecDeque;

use kinesis_calls::StreamRef;

use super::*;

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/s";
const CONSUMER_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1";
const TIMEOUT: Duration = Duration::from_secs(60);

fn by_name(now: Instant) -> Registering {
    Registering::new(
        "c".to_owned(),
        &StreamRef::Name("s".to_owned()),
        TIMEOUT,
        now,
        7,
    )
}

fn failure(code: &str) -> CallFailure {
    CallFailure::new(code, "", Some(400))
}

fn waited(action: &Action, now: Instant) -> Duration {
    match action {
        Action::Wait { until } => *until - now,
        other => panic!("not a wait: {other:?}"),
    }
}

fn active() -> Input {
    Input::ConsumerDescribed(Ok(Found::Active(CONSUMER_ARN.to_owned())))
}

#[test]
fn a_stream_named_by_name_is_described_once_then_its_consumer_looked_at() {
    let t0 = Instant::now();
    let mut m = by_name(t0);
    assert!(matches!(m.start(), Action::DescribeStream));
    let look = m.handle(Input::StreamDescribed(Ok(STREAM_ARN.to_owned())), t0);
    assert!(
        matches!(&look, Action::DescribeConsumer { stream_arn } if stream_arn == STREAM_ARN),
        "{look:?}"
    );
    let wait = m.handle(Input::ConsumerDescribed(Ok(Found::Creating)), t0);
    // The stream's ARN is not asked for again.
    let look = m.handle(Input::Tick, t0 + waited(&wait, t0));
    assert!(matches!(look, Action::DescribeConsumer { .. }), "{look:?}");
    let done = m.handle(active(), t0);
    assert!(
        matches!(&done, Action::Active(arn) if arn == CONSUMER_ARN),
        "{done:?}"
    );
}

#[test]
fn a_stream_named_by_arn_registers_its_absent_consumer_with_that_arn() {
    let t0 = Instant::now();
    let mut m = Registering::new(
        "c".to_owned(),
        &StreamRef::Arn(STREAM_ARN.to_owned()),
        TIMEOUT,
        t0,
        7,
    );
    let look = m.start();
    assert!(
        matches!(&look, Action::DescribeConsumer { stream_arn } if stream_arn == STREAM_ARN),
        "{look:?}"
    );
    let register = m.handle(Input::ConsumerDescribed(Ok(Found::Absent)), t0);
    assert!(
        matches!(&register, Action::Register { stream_arn } if stream_arn == STREAM_ARN),
        "{register:?}"
    );
}

/// Every answer of every call, as the step after a look at the consumer: (the answer, what
/// follows, the status the timeout's error would name).
#[test]
fn answers_table() {
    enum Want {
        Register,
        Wait,
        Active,
        Fail(&'static str, &'static str),
    }
    let table: Vec<(&str, Vec<Input>, Want, &str)> = vec![
        ("active", vec![active()], Want::Active, ""),
        (
            "creating",
            vec![Input::ConsumerDescribed(Ok(Found::Creating))],
            Want::Wait,
            "CREATING",
        ),
        (
            "deleting",
            vec![Input::ConsumerDescribed(Ok(Found::Deleting))],
            Want::Wait,
            "DELETING",
        ),
        (
            "absent",
            vec![Input::ConsumerDescribed(Ok(Found::Absent))],
            Want::Register,
            "absent",
        ),
        (
            "not found",
            vec![Input::ConsumerDescribed(Err(failure(
                "ResourceNotFoundException",
            )))],
            Want::Register,
            "absent",
        ),
        (
            "look throttled",
            vec![Input::ConsumerDescribed(Err(failure(
                "LimitExceededException",
            )))],
            Want::Wait,
            "LimitExceededException",
        ),
        (
            "look failed",
            vec![Input::ConsumerDescribed(Err(CallFailure::new(
                "InternalFailure",
                "",
                Some(500),
            )))],
            Want::Wait,
            "InternalFailure",
        ),
        (
            "look denied",
            vec![Input::ConsumerDescribed(Err(failure(
                "AccessDeniedException",
            )))],
            Want::Fail("DescribeStreamConsumer", "AccessDeniedException"),
            "",
        ),
        (
            "look refused",
            vec![Input::ConsumerDescribed(Err(failure(
                "ValidationException",
            )))],
            Want::Fail("DescribeStreamConsumer", "ValidationException"),
            "",
        ),
        (
            "registered",
            vec![
                Input::ConsumerDescribed(Ok(Found::Absent)),
                Input::Registered(Ok(())),
            ],
            Want::Wait,
            "absent",
        ),
        (
            "registered meanwhile, or still deleting",
            vec![
                Input::ConsumerDescribed(Ok(Found::Absent)),
                Input::Registered(Err(failure("ResourceInUseException"))),
            ],
            Want::Wait,
            "absent",
        ),
        (
            "too many registrations",
            vec![
                Input::ConsumerDescribed(Ok(Found::Absent)),
                Input::Registered(Err(failure("LimitExceededException"))),
            ],
            Want::Wait,
            "LimitExceededException",
        ),
        (
            "registration denied",
            vec![
                Input::ConsumerDescribed(Ok(Found::Absent)),
                Input::Registered(Err(failure("AccessDeniedException"))),
            ],
            Want::Fail("RegisterStreamConsumer", "AccessDeniedException"),
            "",
        ),
        (
            "registration refused",
            vec![
                Input::ConsumerDescribed(Ok(Found::Absent)),
                Input::Registered(Err(failure("InvalidArgumentException"))),
            ],
            Want::Fail("RegisterStreamConsumer", "InvalidArgumentException"),
            "",
        ),
    ];
    for (name, inputs, want, status) in table {
        let t0 = Instant::now();
        let mut m = by_name(t0);
        m.start();
        let mut got = m.handle(Input::StreamDescribed(Ok(STREAM_ARN.to_owned())), t0);
        for input in inputs {
            got = m.handle(input, t0);
        }
        match (want, &got) {
            (Want::Register, Action::Register { stream_arn }) => {
                assert_eq!(stream_arn, STREAM_ARN, "{name}")
            }
            (Want::Wait, Action::Wait { until }) => {
                // The first delay: 100 ms, jittered up to twice as much.
                let delay = *until - t0;
                assert!(
                    delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200),
                    "{name}: {delay:?}"
                );
            }
            (Want::Active, Action::Active(arn)) => assert_eq!(arn, CONSUMER_ARN, "{name}"),
            (
                Want::Fail(operation, code),
                Action::Fail(Error::Kinesis {
                    operation: o,
                    code: c,
                    ..
                }),
            ) => assert_eq!((*o, c.as_str()), (operation, code), "{name}"),
            (_, got) => panic!("{name}: {got:?}"),
        }
        if !status.is_empty() {
            assert_eq!(m.status, status, "{name}");
        }
    }
}

#[test]
fn the_stream_description_is_asked_for_again_until_it_comes_unless_trying_cannot_help() {
    let t0 = Instant::now();
    let mut m = by_name(t0);
    m.start();
    let wait = m.handle(
        Input::StreamDescribed(Err(failure("LimitExceededException"))),
        t0,
    );
    let again = m.handle(Input::Tick, t0 + waited(&wait, t0));
    assert!(matches!(again, Action::DescribeStream), "{again:?}");
    let failed = m.handle(
        Input::StreamDescribed(Err(failure("ResourceNotFoundException"))),
        t0,
    );
    assert!(
        matches!(
            &failed,
            Action::Fail(Error::Kinesis { operation: "DescribeStreamSummary", code, .. })
                if code == "ResourceNotFoundException"
        ),
        "{failed:?}"
    );
}

#[test]
fn looks_back_off_to_two_seconds_and_the_last_wait_ends_at_the_deadline() {
    let t0 = Instant::now();
    let mut m = by_name(t0);
    m.start();
    let mut action = m.handle(Input::StreamDescribed(Ok(STREAM_ARN.to_owned())), t0);
    let mut now = t0;
    let mut delays = Vec::new();
    loop {
        match action {
            Action::DescribeConsumer { .. } => {
                action = m.handle(Input::ConsumerDescribed(Ok(Found::Creating)), now);
            }
            Action::Wait { until } => {
                delays.push(until - now);
                now = until;
                action = m.handle(Input::Tick, now);
            }
            Action::Fail(Error::ConsumerNotActive { waited, status, .. }) => {
                assert_eq!(waited, TIMEOUT);
                assert_eq!(status, "CREATING");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // 100 ms doubling to 2 s, each jittered up to as much again; the last cut at the deadline.
    let bases = [100, 200, 400, 800, 1_600, 2_000, 2_000];
    for (delay, base) in delays.iter().zip(bases) {
        let base = Duration::from_millis(base);
        assert!(*delay >= base && *delay <= base * 2, "{delays:?}");
    }
    assert!(
        delays.iter().all(|d| *d <= Duration::from_secs(4)),
        "{delays:?}"
    );
    assert_eq!(delays.iter().sum::<Duration>(), TIMEOUT);
    // Done: any further input is answered with the timeout's error.
    assert!(matches!(
        m.handle(Input::Tick, now),
        Action::Fail(Error::ConsumerNotActive { .. })
    ));
}

#[test]
fn an_early_tick_keeps_waiting_and_an_unexpected_answer_looks_again() {
    let t0 = Instant::now();
    let mut m = by_name(t0);
    m.start();
    m.handle(Input::StreamDescribed(Ok(STREAM_ARN.to_owned())), t0);
    let wait = m.handle(Input::ConsumerDescribed(Ok(Found::Creating)), t0);
    let until = t0 + waited(&wait, t0);
    let again = m.handle(Input::Tick, t0);
    assert!(
        matches!(again, Action::Wait { until: u } if u == until),
        "{again:?}"
    );
    let look = m.handle(Input::Registered(Ok(())), t0);
    assert!(matches!(look, Action::DescribeConsumer { .. }), "{look:?}");
}

/// Runs the machine under paused time as `Registration::ensure` does, against `statuses`: what
/// each look at the consumer finds (`Absent` past the end: a consumer nobody registers).
async fn run(mut statuses: VecDeque<Found>, timeout: Duration) -> (Result<String, Error>, u32) {
    let mut m = Registering::new(
        "c".to_owned(),
        &StreamRef::Arn(STREAM_ARN.to_owned()),
        timeout,
        Instant::now(),
        7,
    );
    let mut registrations = 0;
    let mut action = m.start();
    loop {
        let input = match action {
            Action::DescribeStream => Input::StreamDescribed(Ok(STREAM_ARN.to_owned())),
            Action::DescribeConsumer { .. } => {
                Input::ConsumerDescribed(Ok(statuses.pop_front().unwrap_or(Found::Absent)))
            }
            Action::Register { .. } => {
                registrations += 1;
                // Already registered by the first attempt: the service says so.
                if registrations == 1 {
                    Input::Registered(Ok(()))
                } else {
                    Input::Registered(Err(failure("ResourceInUseException")))
                }
            }
            Action::Wait { until } => {
                tokio::time::sleep_until(until).await;
                Input::Tick
            }
            Action::Active(arn) => return (Ok(arn), registrations),
            Action::Fail(error) => return (Err(error), registrations),
        };
        action = m.handle(input, Instant::now());
    }
}

#[tokio::test(start_paused = true)]
async fn a_registered_consumer_is_waited_for_until_active() {
    let started = Instant::now();
    // Absent; registered; creating for a while (about 20 s of looks), then active.
    let mut statuses = VecDeque::from([Found::Absent]);
    statuses.extend(std::iter::repeat_n(Found::Creating, 12));
    statuses.push_back(Found::Active(CONSUMER_ARN.to_owned()));
    let (found, registrations) = run(statuses, TIMEOUT).await;
    assert_eq!(found.ok().as_deref(), Some(CONSUMER_ARN));
    assert_eq!(registrations, 1);
    // Thirteen waits: 0.1 + 0.2 + ... + 1.6 s, then 2 s each (each up to twice as much).
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3_100 + 8 * 2_000)
            && took <= Duration::from_millis(2 * (3_100 + 8 * 2_000)),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_consumer_never_active_gives_up_at_the_register_timeout_naming_its_status() {
    let started = Instant::now();
    let (found, _) = run(
        std::iter::repeat_n(Found::Creating, 1_000).collect(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    match found {
        Err(Error::ConsumerNotActive { waited, status, .. }) => {
            assert_eq!(waited, Duration::from_secs(30));
            assert_eq!(status, "CREATING");
        }
        other => panic!("{other:?}"),
    }
}
