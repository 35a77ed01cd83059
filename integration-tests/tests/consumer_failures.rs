//! The consumer when what surrounds it fails: processors that return errors or panic (in
//! `process`, `initialize` and `shard_ended`) under each failure policy, a dead-letter handler
//! that fails, a callback that runs long; starting against a misspelt stream, refused
//! credentials (injected at the HTTP layer), a KCL multi-stream table, and 5xx for a while; a
//! stream deleted under a running worker; and what `status()` and `health()` show meanwhile.
//! Real SDK clients against ferrokinesis and dynoxide, in this process.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, DeadLetter, Error, ErrorKind,
    FailurePolicy, InitialPosition, ProcessorState, Running, ShardProcessor, Start,
};
use kinesis_integration_tests::fixtures::{create_stream, unique_name};
use kinesis_integration_tests::metrics_capture::Capture;
use kinesis_integration_tests::{
    ClientOptions, DynamoBackend, DynamoDb, Fault, FaultController, FaultProxy, FaultRule,
    Ferrokinesis, ServiceError, dynamodb_client, kinesis_client,
};
use kinesis_producer::{Producer, UserRecord};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

/// How a processor fails when it meets its cue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Error,
    Panic,
}

/// Where and how often processors fail; shared by every processor of a test.
#[derive(Default)]
struct Cues {
    /// `process` fails (before processing anything) on a batch holding this record.
    process_on: Option<(String, How)>,
    process_failures: AtomicU32,
    /// `initialize` fails this many times.
    initialize: Option<How>,
    initialize_failures: AtomicU32,
    /// `shard_ended` fails this many times.
    shard_ended: Option<How>,
    shard_ended_failures: AtomicU32,
    /// `process` sleeps this long on the cue's batch (a slow callback) instead of failing.
    slow: Option<Duration>,
}

/// What processors did.
#[derive(Default)]
struct Journal {
    processed: Mutex<HashMap<String, usize>>,
    events: Mutex<Vec<String>>,
    dead: Mutex<Vec<String>>,
}

impl Journal {
    fn count(&self, data: &str) -> usize {
        self.processed
            .lock()
            .unwrap()
            .get(data)
            .copied()
            .unwrap_or(0)
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

struct Flaky {
    shard: String,
    cues: Arc<Cues>,
    journal: Arc<Journal>,
}

fn fail(how: How, what: &str) -> Result<(), BoxError> {
    match how {
        How::Error => Err(format!("{what} failed on cue").into()),
        How::Panic => panic!("{what} panicked on cue"),
    }
}

/// Takes one of `left` failures, if any remain.
fn take(left: &AtomicU32) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl ShardProcessor for Flaky {
    async fn initialize(&mut self, _start: &Start) -> Result<(), BoxError> {
        self.journal
            .events
            .lock()
            .unwrap()
            .push(format!("START {}", self.shard));
        if let Some(how) = self.cues.initialize
            && take(&self.cues.initialize_failures)
        {
            return fail(how, "initialize");
        }
        Ok(())
    }

    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        if let Some((cue, how)) = &self.cues.process_on
            && batch
                .records
                .iter()
                .any(|r| r.data.as_ref() == cue.as_bytes())
        {
            if let Some(slow) = self.cues.slow {
                tokio::time::sleep(slow).await;
            } else if take(&self.cues.process_failures) {
                return fail(*how, "process");
            }
        }
        {
            let mut processed = self.journal.processed.lock().unwrap();
            for r in &batch.records {
                *processed
                    .entry(String::from_utf8_lossy(&r.data).into_owned())
                    .or_default() += 1;
            }
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.journal
            .events
            .lock()
            .unwrap()
            .push(format!("LOST {}", self.shard));
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        self.journal
            .events
            .lock()
            .unwrap()
            .push(format!("END {}", self.shard));
        if let Some(how) = self.cues.shard_ended
            && take(&self.cues.shard_ended_failures)
        {
            return fail(how, "shard_ended");
        }
        checkpointer.checkpoint_shard_end().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        self.journal
            .events
            .lock()
            .unwrap()
            .push(format!("STOP {}", self.shard));
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// A stream of `shards` shards holding `r0` .. `r<records-1>`, and a worker reading it.
struct Setup {
    kinesis: Ferrokinesis,
    db: DynamoDb,
    stream: String,
    application: String,
    records: Vec<String>,
}

async fn setup(shards: i32, records: usize) -> Setup {
    // The recorder first: metrics recorded before it is installed are lost.
    Capture::global();
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let stream = unique_name("failures");
    create_stream(&kinesis.client(), &stream, shards)
        .await
        .unwrap();
    // One Kinesis record per user record, so that `max_records` caps the batches.
    let producer = Producer::builder(kinesis.client(), stream.as_str())
        .aggregation(false)
        .build()
        .await
        .unwrap();
    let mut receipts = Vec::new();
    let mut sent = Vec::new();
    for i in 0..records {
        let data = format!("r{i}");
        let record = UserRecord::new(format!("k{}", i % 37), Bytes::from(data.clone())).unwrap();
        receipts.push(producer.put(record).await.unwrap());
        sent.push(data);
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    producer.shutdown().await;
    Setup {
        kinesis,
        db,
        stream,
        application: unique_name("failures-app"),
        records: sent,
    }
}

impl Setup {
    fn worker(
        &self,
        cues: &Arc<Cues>,
        journal: &Arc<Journal>,
        policy: FailurePolicy,
    ) -> kinesis_consumer::ConsumerBuilder<impl Fn(&str) -> Flaky + Send + Sync + 'static> {
        let (cues, journal) = (cues.clone(), journal.clone());
        Consumer::builder(
            self.kinesis.client(),
            self.db.client(),
            self.stream.clone(),
            ApplicationName::new(self.application.clone()).unwrap(),
            move |shard: &str| Flaky {
                shard: shard.to_owned(),
                cues: cues.clone(),
                journal: journal.clone(),
            },
        )
        .initial_position(InitialPosition::TrimHorizon)
        .max_idle(Duration::from_millis(200))
        .on_failure(policy)
    }

    /// Waits until every record but `except` was processed.
    async fn all_processed(&self, journal: &Journal, except: &BTreeSet<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let missing: Vec<&String> = self
                .records
                .iter()
                .filter(|r| !except.contains(*r) && journal.count(r) == 0)
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} records never processed, {:?}...; events {:?}",
                missing.len(),
                &missing[..missing.len().min(5)],
                journal.events()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn quick(policy: FailurePolicy) -> FailurePolicy {
    policy.backoff(Duration::from_millis(100), Duration::from_millis(400))
}

/// Waits until `status()` shows a shard failing, and returns its attempts.
async fn failing(running: &Running) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = running.status().await;
        for shard in &status.shards {
            if let ProcessorState::Failing { attempts, .. } = shard.processor {
                assert!(
                    !status.recent_errors.is_empty(),
                    "a failure without a recent error: {status:?}"
                );
                return attempts;
            }
        }
        assert!(Instant::now() < deadline, "never failing: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A processor failing (error, then panic) at a record, under the default policy: the batch is
/// tried again (an error) or the processor made again (a panic), the application sees it in
/// `status()` and the metrics, and every record is processed; the failed attempts processed
/// nothing, so the batch is processed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_failures_are_retried_then_restarted_and_nothing_is_lost() {
    for how in [How::Error, How::Panic] {
        let setup = setup(2, 400).await;
        let cues = Arc::new(Cues {
            process_on: Some(("r150".into(), how)),
            process_failures: AtomicU32::new(3),
            ..Cues::default()
        });
        let journal = Arc::new(Journal::default());
        let running = setup
            .worker(&cues, &journal, quick(FailurePolicy::default()))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        let attempts = failing(&running).await;
        setup.all_processed(&journal, &BTreeSet::new()).await;
        let failures = Capture::global().counter(
            "kinesis_consumer_processor_failures",
            &[("stream", &setup.stream), ("callback", "process")],
        );
        let panics = Capture::global().counter(
            "kinesis_consumer_processor_panics",
            &[("stream", &setup.stream), ("callback", "process")],
        );
        running.shutdown().await.unwrap();
        let starts = journal
            .events()
            .iter()
            .filter(|e| e.starts_with("START "))
            .count();
        println!(
            "{how:?} in process 3 times: status showed attempt {attempts}, {failures} failures and \
             {panics} panics counted, {starts} processors started, every record processed"
        );
        assert_eq!(journal.count("r150"), 1);
        assert_eq!(cues.process_failures.load(Ordering::SeqCst), 0);
        assert!(failures >= 3, "{failures} failures counted");
        match how {
            How::Error => assert_eq!(starts, 2, "errors are retried with the same processor"),
            How::Panic => {
                assert!(panics >= 3);
                assert!(
                    starts >= 5,
                    "a processor that panicked is made again: {starts}"
                );
            }
        }
    }
}

/// No retry, then release (after an error, then after a panic): the lease is released, the shard
/// taken again (by this worker, the only one), and started from its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_under_the_release_policy_releases_the_lease_and_the_shard_runs_again() {
    for how in [How::Error, How::Panic] {
        let setup = setup(1, 300).await;
        let cues = Arc::new(Cues {
            process_on: Some(("r100".into(), how)),
            process_failures: AtomicU32::new(1),
            ..Cues::default()
        });
        let journal = Arc::new(Journal::default());
        let running = setup
            .worker(
                &cues,
                &journal,
                quick(FailurePolicy::no_retry().then_release()),
            )
            .scan_interval(Duration::from_millis(500))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        setup.all_processed(&journal, &BTreeSet::new()).await;
        running.shutdown().await.unwrap();
        let events = journal.events();
        println!("release policy, {how:?}: {events:?}");
        assert_eq!(journal.count("r100"), 1);
        let starts = events.iter().filter(|e| e.starts_with("START ")).count();
        assert_eq!(starts, 2, "released once, started again: {events:?}");
        if how == How::Error {
            // Told why it stopped (shutdown_requested) before the release.
            let stop = events.iter().position(|e| e.starts_with("STOP ")).unwrap();
            assert!(events[stop + 1..].iter().any(|e| e.starts_with("START ")));
        }
    }
}

/// A batch that always fails goes to the dead-letter handler after its retries; the handler fails
/// twice first and is called again; the shard then goes on past the batch: every record is
/// processed or dead-lettered, never both, never neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_keeps_failing_is_dead_lettered_and_the_shard_goes_on() {
    for how in [How::Error, How::Panic] {
        let setup = setup(1, 300).await;
        let cues = Arc::new(Cues {
            process_on: Some(("r120".into(), how)),
            process_failures: AtomicU32::new(u32::MAX),
            ..Cues::default()
        });
        let journal = Arc::new(Journal::default());
        let handler_failures = Arc::new(AtomicU32::new(2));
        let policy = {
            let journal = journal.clone();
            let handler_failures = handler_failures.clone();
            quick(FailurePolicy::retry(NonZeroU32::new(3).unwrap())).then_dead_letter(
                move |letter: DeadLetter| {
                    let journal = journal.clone();
                    let handler_failures = handler_failures.clone();
                    async move {
                        if take(&handler_failures) {
                            return Err::<(), BoxError>("the dead-letter queue is down".into());
                        }
                        let mut dead = journal.dead.lock().unwrap();
                        for r in &letter.records {
                            dead.push(String::from_utf8_lossy(&r.data).into_owned());
                        }
                        Ok(())
                    }
                },
            )
        };
        let running = setup
            .worker(&cues, &journal, policy)
            .max_records(NonZeroUsize::new(40).unwrap())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        let dead: BTreeSet<String> = {
            let deadline = Instant::now() + WAIT;
            loop {
                let dead = journal.dead.lock().unwrap().clone();
                if !dead.is_empty() {
                    break dead.into_iter().collect();
                }
                assert!(Instant::now() < deadline, "nothing dead-lettered");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        setup.all_processed(&journal, &dead).await;
        let dead_lettered = Capture::global().counter(
            "kinesis_consumer_dead_lettered_records",
            &[("stream", &setup.stream)],
        );
        running.shutdown().await.unwrap();
        assert!(dead.contains("r120"));
        for record in &setup.records {
            let processed = journal.count(record);
            let lettered = dead.contains(record);
            assert!(
                (processed > 0) != lettered,
                "{record}: processed {processed} times, dead-lettered {lettered}"
            );
        }
        assert_eq!(handler_failures.load(Ordering::SeqCst), 0);
        assert_eq!(dead_lettered, dead.len() as u64);
        assert!(
            dead.len() <= 40 && journal.count("r299") == 1,
            "the shard went on past the dead-lettered batch"
        );
        println!(
            "{how:?} on every try: a batch of {} records dead-lettered after 3 attempts and 2 \
             handler failures; the other {} records processed",
            dead.len(),
            setup.records.len() - dead.len()
        );
    }
}

/// `initialize` failing (an error twice, then a panic once): tried again, then made again; the
/// shard runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_failures_are_retried_and_the_shard_runs() {
    for (how, times) in [(How::Error, 2), (How::Panic, 1)] {
        let setup = setup(1, 100).await;
        let cues = Arc::new(Cues {
            initialize: Some(how),
            initialize_failures: AtomicU32::new(times),
            ..Cues::default()
        });
        let journal = Arc::new(Journal::default());
        let running = setup
            .worker(&cues, &journal, quick(FailurePolicy::default()))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        setup.all_processed(&journal, &BTreeSet::new()).await;
        running.shutdown().await.unwrap();
        let starts = journal
            .events()
            .iter()
            .filter(|e| e.starts_with("START "))
            .count();
        assert_eq!(
            starts,
            times as usize + 1,
            "{how:?}: {:?}",
            journal.events()
        );
    }
}

/// `shard_ended` failing (an error, then a panic): asked again until it checkpoints `SHARD_END`;
/// the children start after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_ended_failures_are_asked_again_and_the_children_start() {
    for how in [How::Error, How::Panic] {
        let setup = setup(1, 50).await;
        let client = setup.kinesis.client();
        let cues = Arc::new(Cues {
            shard_ended: Some(how),
            shard_ended_failures: AtomicU32::new(1),
            ..Cues::default()
        });
        let journal = Arc::new(Journal::default());
        let running = setup
            .worker(&cues, &journal, quick(FailurePolicy::default()))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        setup.all_processed(&journal, &BTreeSet::new()).await;
        let parent = client
            .list_shards()
            .stream_name(&setup.stream)
            .send()
            .await
            .unwrap()
            .shards()[0]
            .shard_id()
            .to_owned();
        client
            .split_shard()
            .stream_name(&setup.stream)
            .shard_to_split(&parent)
            .new_starting_hash_key((u128::MAX / 4).to_string())
            .send()
            .await
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let children = journal
                .events()
                .iter()
                .filter(|e| e.starts_with("START ") && !e.ends_with(&parent))
                .count();
            if children == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "children never started: {:?}",
                journal.events()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.shutdown().await.unwrap();
        let ends = journal
            .events()
            .iter()
            .filter(|e| **e == format!("END {parent}"))
            .count();
        assert_eq!(ends, 2, "{how:?}: asked again after failing once");
    }
}

/// A processor blocked in `process` shows as processing since then, and is reported as slow; a
/// failing one shows its attempts. `health()` says ready while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_stalled_processor_and_a_slow_callback_is_reported() {
    let setup = setup(1, 100).await;
    let cues = Arc::new(Cues {
        process_on: Some(("r40".into(), How::Error)),
        slow: Some(Duration::from_secs(3)),
        ..Cues::default()
    });
    let journal = Arc::new(Journal::default());
    let running = setup
        .worker(&cues, &journal, FailurePolicy::default())
        .slow_callback_warning(Duration::from_millis(500))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let stalled = loop {
        let status = running.status().await;
        let stalled = status.shards.iter().find_map(|s| match s.processor {
            ProcessorState::Processing { since } => since
                .elapsed()
                .ok()
                .filter(|d| *d >= Duration::from_secs(1))
                .map(|d| (s.shard_id.clone(), d, s.lease_counter, s.checkpoint.clone())),
            _ => None,
        });
        if let Some(stalled) = stalled {
            break stalled;
        }
        assert!(Instant::now() < deadline, "never stalled: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let health = running.health();
    let slow = Capture::global().counter(
        "kinesis_consumer_slow_callbacks",
        &[("stream", &setup.stream), ("callback", "process")],
    );
    setup.all_processed(&journal, &BTreeSet::new()).await;
    running.shutdown().await.unwrap();
    println!("stalled: {stalled:?}; health {health:?}; slow callbacks counted {slow}");
    assert!(health.ready && health.live, "{health:?}");
    assert!(slow >= 1, "the slow callback was not reported");
}

/// Starts that cannot succeed end with an error naming the cause, quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_fails_with_a_typed_error_naming_the_cause() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let stream = unique_name("starts");
    create_stream(&kinesis.client(), &stream, 1).await.unwrap();
    let faults = FaultController::new(5);
    let kinesis_proxy = FaultProxy::start(kinesis.endpoint(), faults.clone())
        .await
        .unwrap();
    let db_proxy = FaultProxy::start(db.endpoint(), faults.clone())
        .await
        .unwrap();
    let no_retries = ClientOptions::new().without_retries();
    let start = |stream: &str, attempts: u32| {
        Consumer::builder(
            kinesis_client(kinesis_proxy.endpoint(), &no_retries),
            dynamodb_client(db_proxy.endpoint(), &no_retries),
            stream.to_owned(),
            ApplicationName::new(unique_name("starts-app")).unwrap(),
            |shard: &str| Flaky {
                shard: shard.to_owned(),
                cues: Arc::default(),
                journal: Arc::default(),
            },
        )
        .start_attempts(NonZeroU32::new(attempts).unwrap())
        .build()
        .unwrap()
        .start()
    };
    let timed = |started: Instant| started.elapsed().as_secs_f64();

    // A misspelt stream.
    let started = Instant::now();
    let error = start("no-such-stream", 20).await.unwrap_err();
    println!("misspelt stream: {error} ({:.2} s)", timed(started));
    assert!(matches!(error, Error::StreamNotFound { .. }), "{error:?}");

    // A malformed stream ARN is a configuration error, before any call.
    let error = Consumer::builder(
        kinesis_client(kinesis_proxy.endpoint(), &no_retries),
        dynamodb_client(db_proxy.endpoint(), &no_retries),
        "arn:aws:kinesis:us-east-1:000000000000:orders",
        ApplicationName::new(unique_name("starts-app")).unwrap(),
        |_: &str| Flaky {
            shard: String::new(),
            cues: Arc::default(),
            journal: Arc::default(),
        },
    )
    .build()
    .err()
    .unwrap();
    println!("malformed ARN: {error}");
    assert!(
        matches!(error, Error::InvalidConfig { name: "stream", .. }),
        "{error:?}"
    );

    // Access denied on ListShards, then on the lease table.
    let denied = |operation: &str| {
        FaultRule::on(
            operation,
            Fault::Error(ServiceError::new(
                http::StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                "User is not authorized to perform this action",
            )),
        )
    };
    let rule = faults.add(denied("ListShards"));
    let started = Instant::now();
    let error = start(&stream, 20).await.unwrap_err();
    println!("ListShards denied: {error} ({:.2} s)", timed(started));
    assert!(
        matches!(
            error,
            Error::AccessDenied {
                service: "Kinesis",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), Some(ErrorKind::AccessDenied));
    assert_eq!(error.code(), Some("AccessDeniedException"));
    assert!(
        error.request_id().is_some_and(|id| !id.is_empty()),
        "the answer's request id is kept: {error:?}"
    );
    assert!(!error.is_retryable());
    faults.remove(rule);
    let rule = faults.add(denied("DescribeTable"));
    let started = Instant::now();
    let error = start(&stream, 20).await.unwrap_err();
    println!("lease table denied: {error} ({:.2} s)", timed(started));
    assert!(
        matches!(
            error,
            Error::AccessDenied {
                service: "DynamoDB",
                ..
            }
        ),
        "{error:?}"
    );
    faults.remove(rule);

    // 5xx on ListShards for the first three calls: tried again, and the start succeeds.
    let rule = faults
        .add(FaultRule::on("ListShards", Fault::Error(ServiceError::internal_failure())).first(3));
    let started = Instant::now();
    let running = start(&stream, 20).await.unwrap();
    println!(
        "ListShards 5xx three times: started after {:.2} s",
        timed(started)
    );
    assert!(running.health().ready, "{:?}", running.health());
    running.shutdown().await.unwrap();
    faults.remove(rule);

    // 5xx for good, with 3 attempts: the start gives up, naming the last error.
    let rule = faults.add(FaultRule::on(
        "ListShards",
        Fault::Error(ServiceError::internal_failure()),
    ));
    let started = Instant::now();
    let error = start(&stream, 3).await.unwrap_err();
    println!("ListShards 5xx for good: {error} ({:.2} s)", timed(started));
    assert!(
        matches!(error, Error::StartFailed { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.kind(),
        Some(ErrorKind::Transient),
        "the last attempt's"
    );
    assert_eq!(error.code(), Some("InternalFailure"));
    assert!(started.elapsed() < Duration::from_secs(10));
    faults.remove(rule);
}

/// A lease table written by a Java KCL multi-stream application: the start is refused, naming
/// some of its keys, and the table's items are left exactly as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kcl_multi_stream_table_is_refused_and_left_untouched() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let stream = unique_name("multi");
    create_stream(&kinesis.client(), &stream, 2).await.unwrap();
    let table = unique_name("multi-app");
    let client = db.client();
    kinesis_consumer::LeaseTable::new(client.clone(), table.clone())
        .ensure(kinesis_consumer::BillingMode::OnDemand, WAIT)
        .await
        .unwrap();
    let s = |v: &str| AttributeValue::S(v.to_owned());
    for shard in 0..3 {
        let key = format!("123456789012:orders:1700000000:shardId-00000000000{shard}");
        client
            .put_item()
            .table_name(&table)
            .item("leaseKey", s(&key))
            .item("leaseOwner", s("java-worker"))
            .item("leaseCounter", AttributeValue::N("17".into()))
            .item(
                "checkpoint",
                s("49590338271490256608559692538361571095921575989136588898"),
            )
            .item("checkpointSubSequenceNumber", AttributeValue::N("0".into()))
            .item("streamName", s("123456789012:orders:1700000000"))
            .item("shardId", s(&format!("shardId-00000000000{shard}")))
            .send()
            .await
            .unwrap();
    }
    let items = |client: aws_sdk_dynamodb::Client, table: String| async move {
        let mut items: Vec<HashMap<String, AttributeValue>> = client
            .scan()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .items()
            .to_vec();
        items.sort_by_key(|i| format!("{:?}", i.get("leaseKey")));
        items
    };
    let before = items(client.clone(), table.clone()).await;
    let started = Instant::now();
    let error = Consumer::builder(
        kinesis.client(),
        client.clone(),
        stream.clone(),
        ApplicationName::new(table.clone()).unwrap(),
        |shard: &str| Flaky {
            shard: shard.to_owned(),
            cues: Arc::default(),
            journal: Arc::default(),
        },
    )
    .build()
    .unwrap()
    .start()
    .await
    .unwrap_err();
    println!("{error} ({:.2} s)", started.elapsed().as_secs_f64());
    match &error {
        Error::MultiStreamTable {
            count, examples, ..
        } => {
            assert_eq!(*count, 3);
            assert!(examples[0].starts_with("123456789012:orders:"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(items(client, table).await, before, "the table was changed");
}

/// A stream deleted under a running worker: `wait()` ends with `StreamNotFound` within the fatal
/// error timeout and the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_a_running_worker_ends_it_with_the_error() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("kinesis_consumer=info")
        .with_test_writer()
        .try_init();
    let setup = setup(2, 50).await;
    let cues = Arc::new(Cues::default());
    let journal = Arc::new(Journal::default());
    let mut running = setup
        .worker(&cues, &journal, FailurePolicy::default())
        .fatal_error_timeout(Duration::from_secs(3))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    setup.all_processed(&journal, &BTreeSet::new()).await;
    setup
        .kinesis
        .client()
        .delete_stream()
        .stream_name(&setup.stream)
        .send()
        .await
        .unwrap();
    let deleted = Instant::now();
    let outcome = tokio::time::timeout(WAIT, running.wait()).await.unwrap();
    let took = deleted.elapsed();
    println!(
        "stream deleted: wait() returned {outcome:?} after {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        matches!(outcome, Err(Error::StreamNotFound { .. })),
        "{outcome:?}"
    );
    assert!(
        took < Duration::from_secs(3) + Duration::from_secs(25),
        "{took:?}"
    );
    assert!(!running.health().live);
}

/// Credentials refused on the lease table under a running worker: its leases are lost by the
/// failover time (renewals refused), and `wait()` ends with `AccessDenied` within the fatal
/// error timeout and the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_refused_under_a_running_worker_end_it_with_the_error() {
    let setup = setup(2, 50).await;
    let faults = FaultController::new(9);
    let db_proxy = FaultProxy::start(setup.db.endpoint(), faults.clone())
        .await
        .unwrap();
    let cues = Arc::new(Cues::default());
    let journal = Arc::new(Journal::default());
    let (c, j) = (cues.clone(), journal.clone());
    let mut running = Consumer::builder(
        setup.kinesis.client(),
        dynamodb_client(db_proxy.endpoint(), &ClientOptions::new().without_retries()),
        setup.stream.clone(),
        ApplicationName::new(setup.application.clone()).unwrap(),
        move |shard: &str| Flaky {
            shard: shard.to_owned(),
            cues: c.clone(),
            journal: j.clone(),
        },
    )
    .initial_position(InitialPosition::TrimHorizon)
    .fatal_error_timeout(Duration::from_secs(3))
    .build()
    .unwrap()
    .start()
    .await
    .unwrap();
    setup.all_processed(&journal, &BTreeSet::new()).await;
    for operation in ["Scan", "UpdateItem", "GetItem", "PutItem", "DeleteItem"] {
        faults.add(FaultRule::on(
            operation,
            Fault::Error(ServiceError::new(
                http::StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                "User is not authorized to perform this action",
            )),
        ));
    }
    let revoked = Instant::now();
    let outcome = tokio::time::timeout(WAIT, running.wait()).await.unwrap();
    let took = revoked.elapsed();
    println!(
        "credentials refused: wait() returned {outcome:?} after {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        matches!(
            outcome,
            Err(Error::AccessDenied {
                service: "DynamoDB",
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(
        took < Duration::from_secs(3) + Duration::from_secs(25),
        "{took:?}"
    );
}
