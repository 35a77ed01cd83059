//! Enhanced fan-out retrieval through the real SDK: every record of a multi-shard stream, across
//! subscription renewals (ferrokinesis with short sessions) and on kinesis-local; records put
//! while subscribed arrive without polling; a slow processor keeps the read-ahead within its
//! bounds; faults (`ResourceInUse`, connections dropped mid-stream, silent subscriptions) lose
//! and repeat nothing; the stream consumer is registered, found again after being deleted, and
//! deregistered on request.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, Error, FanOut, InitialPosition,
    Retrieval, Running, ShardProcessor, metrics as m,
};
use kinesis_integration_tests::fixtures::{create_stream, unique_name};
use kinesis_integration_tests::metrics_capture::Capture;
use kinesis_integration_tests::{
    ClientOptions, DynamoBackend, DynamoDb, Fault, FaultKind, FaultRule, Ferrokinesis,
    FerrokinesisOptions, KinesisLocal, ServiceError,
};
use kinesis_producer::{Producer, UserRecord};
use tokio::time::Instant;

/// Every delivery: data -> (shard, sequence, subsequence, deliveries, first processed at).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Delivery>>>);

#[derive(Clone, Debug)]
struct Delivery {
    position: (String, String, u64),
    count: usize,
    at: Instant,
}

impl Seen {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn snapshot(&self) -> HashMap<String, Delivery> {
        self.0.lock().unwrap().clone()
    }

    /// Checks that exactly `sent` was delivered, each record once.
    fn assert_exactly(&self, sent: &[String]) {
        let seen = self.snapshot();
        let missing: Vec<&String> = sent.iter().filter(|d| !seen.contains_key(*d)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} records never delivered, e.g. {:?}",
            missing.len(),
            sent.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        assert_eq!(
            seen.len(),
            sent.len(),
            "records delivered that were not sent"
        );
        let positions: std::collections::HashSet<&(String, String, u64)> =
            seen.values().map(|d| &d.position).collect();
        assert_eq!(
            positions.len(),
            seen.len(),
            "two records at one (shard, sequence, subsequence)"
        );
        let twice: Vec<(&String, &Delivery)> = seen.iter().filter(|(_, d)| d.count > 1).collect();
        assert!(
            twice.is_empty(),
            "{} records delivered more than once, e.g. {:?}",
            twice.len(),
            twice.iter().take(3).collect::<Vec<_>>()
        );
    }
}

struct Recorder {
    shard: String,
    seen: Seen,
    /// Time taken per batch (a slow processor).
    delay: Duration,
}

impl ShardProcessor for Recorder {
    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        {
            let now = Instant::now();
            let mut seen = self.seen.0.lock().unwrap();
            for r in &batch.records {
                let data = String::from_utf8_lossy(&r.data).into_owned();
                seen.entry(data)
                    .or_insert_with(|| Delivery {
                        position: (
                            self.shard.clone(),
                            r.sequence_number.to_string(),
                            r.sub_sequence_number,
                        ),
                        count: 0,
                        at: now,
                    })
                    .count += 1;
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        checkpointer.checkpoint_shard_end().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

struct Setup<'a> {
    kinesis: aws_sdk_kinesis::Client,
    db: &'a DynamoDb,
    stream: &'a str,
    application: &'a str,
    fan_out: FanOut,
    position: InitialPosition,
    delay: Duration,
    prefetch: Option<(usize, usize)>,
    /// Read with polling instead (for tests of both modes).
    polling: bool,
    timestamp: Option<std::time::SystemTime>,
}

impl<'a> Setup<'a> {
    fn new(
        kinesis: aws_sdk_kinesis::Client,
        db: &'a DynamoDb,
        stream: &'a str,
        application: &'a str,
    ) -> Self {
        Setup {
            kinesis,
            db,
            stream,
            application,
            fan_out: FanOut::new(),
            position: InitialPosition::TrimHorizon,
            delay: Duration::ZERO,
            prefetch: None,
            polling: false,
            timestamp: None,
        }
    }

    fn spawn(&self, seen: &Seen) -> Running {
        let seen = seen.clone();
        let delay = self.delay;
        let mut builder = Consumer::builder(
            self.kinesis.clone(),
            self.db.client(),
            self.stream,
            ApplicationName::new(self.application).unwrap(),
            move |shard: &str| Recorder {
                shard: shard.to_owned(),
                seen: seen.clone(),
                delay,
            },
        )
        .initial_position(self.position)
        // Polling settings that would make any polling visible: fan-out must not use them.
        .max_idle(Duration::from_secs(30))
        .retrieval(if self.polling {
            Retrieval::Polling
        } else {
            Retrieval::FanOut(self.fan_out.clone())
        });
        if let Some(at) = self.timestamp {
            builder = builder.initial_timestamp(at);
        }
        if let Some((records, bytes)) = self.prefetch {
            builder = builder
                .prefetch_records(NonZeroUsize::new(records).unwrap())
                .prefetch_bytes(NonZeroUsize::new(bytes).unwrap());
        }
        builder.build().unwrap().spawn()
    }
}

async fn produce(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    aggregated: bool,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let producer = Producer::builder(client.clone(), stream)
        .aggregation(aggregated)
        .linger(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let mut sent = Vec::new();
    let mut receipts = Vec::new();
    for i in 0..count {
        let data = format!("{prefix}-{i}");
        let record = UserRecord::new(format!("key-{}", i % 97), Bytes::from(data.clone())).unwrap();
        receipts.push(producer.put(record).await.unwrap());
        sent.push(data);
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    producer.shutdown().await;
    sent
}

async fn wait_for(seen: &Seen, want: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while seen.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} records consumed in {within:?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The process-wide metrics recorder (installed once; each test reads its own stream's labels).
fn snapshotter() -> &'static Capture {
    Capture::global()
}

/// The metric `name` (a counter or a gauge) for `stream`, over labels matching `label` when
/// given.
fn metric(name: &str, stream: &str, label: Option<(&str, &str)>) -> f64 {
    let mut labels = vec![("stream", stream)];
    labels.extend(label);
    snapshotter().counter(name, &labels) as f64 + snapshotter().gauge(name, &labels)
}

fn resubscriptions(stream: &str, reason: &str) -> f64 {
    metric(m::FAN_OUT_RESUBSCRIPTIONS, stream, Some(("reason", reason)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_over_fan_out_across_renewals_then_a_restart_resumes() {
    snapshotter();
    // One-second subscriptions of at most 300 records per event: many renewals and events.
    let kinesis = Ferrokinesis::start_with(
        FerrokinesisOptions::new()
            .subscribe_to_shard_session(Duration::from_secs(1))
            .subscribe_to_shard_event_record_limit(300),
    )
    .await
    .unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("fan-out-all");
    create_stream(&client, &stream, 4).await.unwrap();
    let mut sent = produce(&client, &stream, true, "agg", 3000).await;
    sent.extend(produce(&client, &stream, false, "plain", 1000).await);

    let application = unique_name("fan-out-app");
    let setup = Setup::new(client.clone(), &db, &stream, &application);
    let seen = Seen::default();
    let worker = setup.spawn(&seen);
    wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
    // More while subscribed, aggregated and not.
    sent.extend(produce(&client, &stream, true, "live-agg", 1000).await);
    sent.extend(produce(&client, &stream, false, "live-plain", 300).await);
    wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
    // Past a few more renewals, to see that nothing is delivered again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.shutdown().await.unwrap();
    seen.assert_exactly(&sent);

    let subscriptions = kinesis.faults().calls("SubscribeToShard");
    let renewed = resubscriptions(&stream, "session_end");
    println!(
        "{} records over fan-out; {subscriptions} subscriptions, {renewed} renewed at the session's end, {} events",
        sent.len(),
        metric(m::FAN_OUT_EVENTS, &stream, None)
    );
    assert!(subscriptions >= 16, "{subscriptions} subscriptions");
    assert!(renewed >= 12.0, "{renewed} renewals");
    assert_eq!(
        kinesis.faults().calls("GetRecords"),
        0,
        "fan-out never polls"
    );
    assert_eq!(
        metric(m::FAN_OUT_REGISTRATIONS, &stream, None),
        1.0,
        "registered once"
    );

    // The same application again: it resumes after the checkpoints.
    let more = produce(&client, &stream, true, "after-restart", 200).await;
    let again = Seen::default();
    let worker = setup.spawn(&again);
    wait_for(&again, more.len(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.shutdown().await.unwrap();
    again.assert_exactly(&more);
    assert_eq!(
        metric(m::FAN_OUT_REGISTRATIONS, &stream, None),
        1.0,
        "the existing consumer is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_over_fan_out_on_kinesis_local() {
    let kinesis = KinesisLocal::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("fan-out-local");
    create_stream(&client, &stream, 2).await.unwrap();
    let mut sent = produce(&client, &stream, true, "agg", 600).await;
    sent.extend(produce(&client, &stream, false, "plain", 200).await);
    let application = unique_name("fan-out-app");
    let seen = Seen::default();
    let worker = Setup::new(client.clone(), &db, &stream, &application).spawn(&seen);
    wait_for(&seen, sent.len(), Duration::from_secs(90)).await;
    sent.extend(produce(&client, &stream, false, "live", 100).await);
    wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.shutdown().await.unwrap();
    seen.assert_exactly(&sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_put_while_subscribed_arrive_without_polling() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("fan-out-live");
    create_stream(&client, &stream, 2).await.unwrap();
    let application = unique_name("fan-out-app");
    let mut setup = Setup::new(client.clone(), &db, &stream, &application);
    setup.position = InitialPosition::Latest;
    let seen = Seen::default();
    let worker = setup.spawn(&seen);
    let deadline = Instant::now() + Duration::from_secs(30);
    while kinesis.faults().calls("SubscribeToShard") < 2 {
        assert!(Instant::now() < deadline, "no subscriptions");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let producer = Producer::builder(client.clone(), stream.as_str())
        .linger(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let mut acked = HashMap::new();
    for i in 0..40 {
        let data = format!("live-{i}");
        let record = UserRecord::new(format!("key-{i}"), Bytes::from(data.clone())).unwrap();
        producer.put(record).await.unwrap().await.unwrap();
        acked.insert(data, Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producer.shutdown().await;
    wait_for(&seen, acked.len(), Duration::from_secs(30)).await;
    worker.shutdown().await.unwrap();
    let sent: Vec<String> = acked.keys().cloned().collect();
    seen.assert_exactly(&sent);
    let delivered = seen.snapshot();
    let mut latencies: Vec<Duration> = acked
        .iter()
        .map(|(data, at)| delivered[data].at.saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!(
        "put acknowledged to processed over fan-out: p50 {:.0} ms, max {:.0} ms (the stand-in pushes every 200 ms)",
        p50.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    assert_eq!(
        kinesis.faults().calls("GetRecords"),
        0,
        "fan-out never polls"
    );
    // The polling idle time is set to 30 s in this test: only pushed records arrive this soon.
    assert!(max < Duration::from_secs(5), "a record took {max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_processor_keeps_the_read_ahead_within_its_bounds() {
    snapshotter();
    let kinesis = Ferrokinesis::start_with(
        FerrokinesisOptions::new().subscribe_to_shard_event_record_limit(200),
    )
    .await
    .unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("fan-out-slow");
    create_stream(&client, &stream, 1).await.unwrap();
    let application = unique_name("fan-out-app");
    let mut setup = Setup::new(client.clone(), &db, &stream, &application);
    // At most 500 records/s (200-record events, 400 ms each), against a stand-in that pushes
    // up to 1,000 records/s and a producer faster still.
    setup.delay = Duration::from_millis(400);
    setup.prefetch = Some((500, 64 * 1024));
    let seen = Seen::default();
    let worker = setup.spawn(&seen);

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let (mut records, mut bytes) = (0f64, 0f64);
            while sampling.load(Ordering::Relaxed) {
                records = records.max(metric(m::PREFETCHED_RECORDS, &stream, None));
                bytes = bytes.max(metric(m::PREFETCHED_BYTES, &stream, None));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (records, bytes)
        })
    };
    let started = Instant::now();
    let sent = produce(&client, &stream, false, "slow", 6_000).await;
    let produced_in = started.elapsed();
    let behind_when_produced = sent.len() - seen.len();
    wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
    sampling.store(false, Ordering::Relaxed);
    let (max_records, max_bytes) = sampler.await.unwrap();
    worker.shutdown().await.unwrap();
    seen.assert_exactly(&sent);
    println!(
        "slow processor: {} records produced in {:.1} s, {behind_when_produced} not yet processed then; \
         read-ahead peaked at {max_records} records and {max_bytes} bytes (bounds 500 and 65,536)",
        sent.len(),
        produced_in.as_secs_f64()
    );
    assert!(
        behind_when_produced > 2_000,
        "the processor kept up ({behind_when_produced} behind): the test proves nothing"
    );
    assert!(
        max_records > 200.0,
        "the read-ahead never held more than one event ({max_records}): the bound was not reached"
    );
    assert!(max_records <= 500.0, "{max_records} records read ahead");
    assert!(max_bytes <= 65_536.0, "{max_bytes} bytes read ahead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_subscriptions_lose_and_repeat_nothing() {
    snapshotter();
    let kinesis = Ferrokinesis::start_with(
        FerrokinesisOptions::new().subscribe_to_shard_session(Duration::from_secs(3)),
    )
    .await
    .unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("fan-out-faults");
    create_stream(&client, &stream, 2).await.unwrap();
    let faults = kinesis.faults().clone();
    let application = unique_name("fan-out-app");
    // SDK retries off for the consumer: every fault reaches its own handling.
    let consumer_client = kinesis.client_with(&ClientOptions::new().without_retries());
    let mut setup = Setup::new(consumer_client, &db, &stream, &application);
    setup.fan_out = FanOut::new().silence_timeout(Duration::from_secs(1));
    let seen = Seen::default();
    let worker = setup.spawn(&seen);
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (client, stream, producing) = (client.clone(), stream.clone(), producing.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut round = 0;
            while producing.load(Ordering::Relaxed) {
                sent.extend(
                    produce(
                        &client,
                        &stream,
                        round % 2 == 0,
                        &format!("round{round}"),
                        100,
                    )
                    .await,
                );
                round += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            sent
        })
    };
    // One fault at a time, each until it fired: a previous subscription still open, connections
    // cut mid-stream, subscriptions that go silent.
    let phase = async |rule: FaultRule, kind: FaultKind, times: u64| {
        faults.add(rule);
        let deadline = Instant::now() + Duration::from_secs(60);
        while faults.injected(kind) < times {
            assert!(
                Instant::now() < deadline,
                "{kind:?} fired {} times",
                faults.injected(kind)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    phase(
        FaultRule::on(
            "SubscribeToShard",
            Fault::Error(ServiceError::new(
                StatusCode::BAD_REQUEST,
                "ResourceInUseException",
                "Another active subscription exists for this consumer (injected fault).",
            )),
        )
        .first(4),
        FaultKind::Error,
        4,
    )
    .await;
    // SubscribeToShard called too often (once per second per shard and consumer is the limit).
    phase(
        FaultRule::on(
            "SubscribeToShard",
            Fault::Error(ServiceError::limit_exceeded()),
        )
        .first(2),
        FaultKind::Error,
        6,
    )
    .await;
    phase(
        FaultRule::on(
            "SubscribeToShard",
            Fault::cut_stream_after(Duration::from_millis(700)),
        )
        .first(4),
        FaultKind::CutStream,
        4,
    )
    .await;
    phase(
        FaultRule::on(
            "SubscribeToShard",
            Fault::stall_stream_after(Duration::from_millis(400)),
        )
        .first(3),
        FaultKind::StallStream,
        3,
    )
    .await;
    // A few more seconds of calm, then every record.
    tokio::time::sleep(Duration::from_secs(3)).await;
    producing.store(false, Ordering::Relaxed);
    let sent = producer.await.unwrap();
    wait_for(&seen, sent.len(), Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.shutdown().await.unwrap();
    seen.assert_exactly(&sent);

    let in_use = resubscriptions(&stream, "resource_in_use");
    let dropped = resubscriptions(&stream, "connection");
    let silent = resubscriptions(&stream, "silent");
    let throttled = resubscriptions(&stream, "throttled");
    println!(
        "{} records, each once, through {} ResourceInUse, {} LimitExceeded, {} cut connections ({} restarts), {} stalled subscriptions ({} restarts)",
        sent.len(),
        in_use,
        throttled,
        faults.injected(FaultKind::CutStream),
        dropped,
        faults.injected(FaultKind::StallStream),
        silent
    );
    assert_eq!(in_use, 4.0);
    assert_eq!(throttled, 2.0);
    // A cut that came after the session's end counts as a session end.
    assert!(dropped >= 3.0, "{dropped} restarts after cut connections");
    assert!(silent >= 2.0, "{silent} restarts after silences");
}

async fn consumers(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, String)> {
    let arn = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    client
        .list_stream_consumers()
        .stream_arn(arn)
        .send()
        .await
        .unwrap()
        .consumers
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.consumer_name, c.consumer_arn))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_consumer_is_registered_again_and_deregistered_on_request() {
    snapshotter();
    let kinesis = Ferrokinesis::start_with(
        FerrokinesisOptions::new().subscribe_to_shard_session(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("fan-out-register");
    create_stream(&client, &stream, 2).await.unwrap();
    let application = unique_name("fan-out-app");
    let mut setup = Setup::new(client.clone(), &db, &stream, &application);
    setup.fan_out = FanOut::new()
        .consumer_name("efo-consumer")
        .deregister_on_shutdown(true);
    let seen = Seen::default();
    let worker = setup.spawn(&seen);
    let mut sent = produce(&client, &stream, true, "before", 300).await;
    wait_for(&seen, sent.len(), Duration::from_secs(30)).await;
    let registered = consumers(&client, &stream).await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0].0, "efo-consumer");

    // Deleted under the running worker: its subscriptions fail, it registers it again.
    client
        .deregister_stream_consumer()
        .consumer_arn(&registered[0].1)
        .send()
        .await
        .unwrap();
    // The subscriptions open go on to their end (2 s here); the next ones find the consumer
    // gone and register it again.
    sent.extend(produce(&client, &stream, false, "during", 300).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = consumers(&client, &stream).await;
        if now.len() == 1 && now[0].1 != registered[0].1 {
            break;
        }
        assert!(Instant::now() < deadline, "not registered again: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent.extend(produce(&client, &stream, false, "after", 300).await);
    wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
    assert_eq!(metric(m::FAN_OUT_REGISTRATIONS, &stream, None), 2.0);
    assert!(resubscriptions(&stream, "consumer_missing") >= 1.0);

    worker.shutdown().await.unwrap();
    seen.assert_exactly(&sent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !consumers(&client, &stream).await.is_empty() {
        assert!(Instant::now() < deadline, "not deregistered on shutdown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_becomes_active_stops_the_worker_with_a_typed_error() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("fan-out-never");
    create_stream(&client, &stream, 1).await.unwrap();
    // The consumer is never found, and every registration says one is being created.
    kinesis.faults().add(FaultRule::on(
        "DescribeStreamConsumer",
        Fault::Error(ServiceError::new(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            "Consumer not found (injected fault).",
        )),
    ));
    kinesis.faults().add(FaultRule::on(
        "RegisterStreamConsumer",
        Fault::Error(ServiceError::new(
            StatusCode::BAD_REQUEST,
            "ResourceInUseException",
            "Consumer is being created (injected fault).",
        )),
    ));
    let application = unique_name("fan-out-app");
    let mut setup = Setup::new(client.clone(), &db, &stream, &application);
    setup.fan_out = FanOut::new().register_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let mut worker = setup.spawn(&Seen::default());
    let outcome = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .unwrap();
    match outcome {
        Err(Error::ConsumerNotActive {
            consumer, status, ..
        }) => {
            assert_eq!(consumer, application);
            assert_eq!(status, "absent");
        }
        other => panic!("expected ConsumerNotActive, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(kinesis.faults().calls("RegisterStreamConsumer") >= 2);
}

/// Records from before `at` and after it, with gaps of 1.5 s on both sides (arrival times are
/// kept to the millisecond).
async fn around_a_time(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> (Vec<String>, std::time::SystemTime, Vec<String>) {
    let before = produce(client, stream, true, "before", 200).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut after = produce(client, stream, true, "after", 200).await;
    after.extend(produce(client, stream, false, "after-plain", 100).await);
    (before, at, after)
}

/// Records put around a time on a new stream of 2 shards; a worker starting `AT_TIMESTAMP` at
/// that time delivers only the later ones, each once.
async fn starts_at_the_time(client: aws_sdk_kinesis::Client, polling: bool) {
    let stream = &unique_name("at-timestamp");
    create_stream(&client, stream, 2).await.unwrap();
    let (before, at, after) = around_a_time(&client, stream).await;
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let application = unique_name("at-timestamp-app");
    let mut setup = Setup::new(client, &db, stream, &application);
    setup.position = InitialPosition::AtTimestamp;
    setup.timestamp = Some(at);
    setup.polling = polling;
    let seen = Seen::default();
    let worker = setup.spawn(&seen);
    wait_for(&seen, after.len(), Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.shutdown().await.unwrap();
    let delivered = seen.snapshot();
    let early = before.iter().filter(|d| delivered.contains_key(*d)).count();
    assert_eq!(
        early, 0,
        "{early} records from before the timestamp delivered"
    );
    seen.assert_exactly(&after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_starts_at_the_time_with_polling() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    starts_at_the_time(kinesis.client(), true).await;
}

/// On kinesis-local: ferrokinesis's SubscribeToShard starts an `AT_TIMESTAMP` subscription at
/// the shard's first record (its `GetShardIterator` does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_starts_at_the_time_over_fan_out() {
    let kinesis = KinesisLocal::start().await.unwrap();
    starts_at_the_time(kinesis.client(), false).await;
}
