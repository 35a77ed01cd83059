//! One worker consumes every record of a multi-shard stream over polling, aggregated and not,
//! through the real SDK against ferrokinesis and dynoxide; a second run of the same application
//! resumes from the checkpoints and reads nothing again.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, InitialPosition, ShardProcessor,
    StreamRef,
};
use kinesis_integration_tests::fixtures::{create_stream, unique_name};
use kinesis_integration_tests::{DynamoBackend, DynamoDb, Ferrokinesis, KinesisLocal};
use kinesis_producer::{Producer, UserRecord};

/// What every processor of a test saw: (shard, sequence, subsequence) -> (key, data), with a
/// count of deliveries to spot duplicates.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<Position, Delivered>>>);

/// (shard, sequence number, subsequence number).
type Position = (String, String, u64);
/// (partition key, data, deliveries).
type Delivered = (String, Bytes, usize);

impl Seen {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Recorder {
    shard: String,
    seen: Seen,
}

impl ShardProcessor for Recorder {
    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        {
            let mut seen = self.seen.0.lock().unwrap();
            for r in &batch.records {
                let entry = seen
                    .entry((
                        self.shard.clone(),
                        r.sequence_number.to_string(),
                        r.sub_sequence_number,
                    ))
                    .or_insert_with(|| (r.partition_key.to_string(), r.data.clone(), 0));
                entry.2 += 1;
            }
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

async fn produce(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    aggregated: bool,
    count: usize,
) -> Vec<(String, Bytes)> {
    let producer = Producer::builder(client.clone(), stream)
        .aggregation(aggregated)
        .build()
        .await
        .unwrap();
    let mut sent = Vec::new();
    let mut receipts = Vec::new();
    for i in 0..count {
        let key = format!("key-{}", i % 97);
        let data = Bytes::from(format!("record {i} aggregated={aggregated}"));
        receipts.push(
            producer
                .put(UserRecord::new(key.clone(), data.clone()).unwrap())
                .await
                .unwrap(),
        );
        sent.push((key, data));
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    producer.shutdown().await;
    sent
}

async fn wait_for(seen: &Seen, want: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while seen.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {want} records consumed in {within:?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_consumes_every_record_aggregated_and_not() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("consume-all");
    create_stream(&client, &stream, 4).await.unwrap();
    let mut sent = produce(&client, &stream, true, 3000).await;
    sent.extend(produce(&client, &stream, false, 1000).await);

    let application = unique_name("app");
    let seen = Seen::default();
    let worker = {
        let seen = seen.clone();
        Consumer::builder(
            kinesis.client(),
            db.client(),
            stream.clone(),
            ApplicationName::new(application.clone()).unwrap(),
            move |shard: &str| Recorder {
                shard: shard.to_owned(),
                seen: seen.clone(),
            },
        )
        .initial_position(InitialPosition::TrimHorizon)
        .build()
        .unwrap()
        .spawn()
    };
    wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
    worker.shutdown().await.unwrap();

    let seen_map = seen.0.lock().unwrap().clone();
    let mut got: Vec<(String, Bytes)> = seen_map
        .values()
        .map(|(k, d, _)| (k.clone(), d.clone()))
        .collect();
    let mut want = sent.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every record, once per (sequence, subsequence)");
    assert!(
        seen_map.values().all(|(_, _, n)| *n == 1),
        "a record was delivered twice"
    );

    // The same application again: it resumes from the same checkpoints, so only new records
    // arrive. (Not by the stream's ARN: ferrokinesis refuses `StreamARN` on ListShards and
    // GetShardIterator.)
    let more = produce(&client, &stream, true, 200).await;
    let again = Seen::default();
    let worker = {
        let again = again.clone();
        Consumer::builder(
            kinesis.client(),
            db.client(),
            stream.clone(),
            ApplicationName::new(application).unwrap(),
            move |shard: &str| Recorder {
                shard: shard.to_owned(),
                seen: again.clone(),
            },
        )
        .build()
        .unwrap()
        .spawn()
    };
    wait_for(&again, more.len(), Duration::from_secs(60)).await;
    // Give it time to (wrongly) deliver old records again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.shutdown().await.unwrap();
    let mut got: Vec<(String, Bytes)> = again
        .0
        .lock()
        .unwrap()
        .values()
        .map(|(k, d, _)| (k.clone(), d.clone()))
        .collect();
    let mut want = more;
    got.sort();
    want.sort();
    assert_eq!(got, want, "the second run resumes after the checkpoints");
}

#[test]
fn metrics_are_recorded_under_their_names() {
    use kinesis_consumer::metrics as m;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The recorder is process-wide: only this test's stream counts.
    let stream = unique_name("consume-metrics");
    runtime.block_on(async {
        let kinesis = Ferrokinesis::start().await.unwrap();
        let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
        let client = kinesis.client();
        create_stream(&client, &stream, 2).await.unwrap();
        let sent = produce(&client, &stream, true, 500).await;
        let seen = Seen::default();
        let worker = {
            let seen = seen.clone();
            Consumer::builder(
                client.clone(),
                db.client(),
                stream.clone(),
                ApplicationName::new(unique_name("app")).unwrap(),
                move |shard: &str| Recorder {
                    shard: shard.to_owned(),
                    seen: seen.clone(),
                },
            )
            .initial_position(InitialPosition::TrimHorizon)
            .build()
            .unwrap()
            .spawn()
        };
        wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
        worker.shutdown().await.unwrap();
    });
    let mut counters: HashMap<(String, String), u64> = HashMap::new();
    let mut gauges: HashMap<String, f64> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        if !labels.iter().any(|(k, v)| k == "stream" && *v == stream) {
            continue;
        }
        let outcome = labels
            .iter()
            .find(|(k, _)| k == "outcome")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let name = key.key().name().to_owned();
        match value {
            DebugValue::Counter(n) => *counters.entry((name, outcome)).or_default() += n,
            DebugValue::Gauge(g) => {
                gauges.insert(name, g.into_inner());
            }
            DebugValue::Histogram(_) => {}
        }
    }
    let counter = |name: &str, outcome: &str| {
        counters
            .get(&(name.to_owned(), outcome.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(counter(m::RECORDS_PROCESSED, ""), 500, "{counters:?}");
    assert!(counter(m::BATCHES, "") >= 2, "{counters:?}");
    assert_eq!(counter(m::LEASE_TAKES, "taken"), 2, "{counters:?}");
    assert_eq!(
        gauges.get(m::LEASES_HELD),
        Some(&0.0),
        "released at shutdown: {gauges:?}"
    );
}

/// A worker given the stream's ARN instead of its name reads every record (every call names
/// the stream by `StreamARN`). On kinesis-local: ferrokinesis refuses `StreamARN` on
/// ListShards and GetShardIterator, AWS and kinesis-local accept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_named_by_its_arn_is_read_on_kinesis_local() {
    let kinesis = KinesisLocal::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("by-arn");
    create_stream(&client, &stream, 2).await.unwrap();
    let arn = client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    let mut sent = produce(&client, &stream, true, 300).await;
    sent.extend(produce(&client, &stream, false, 100).await);

    let seen = Seen::default();
    let worker = {
        let seen = seen.clone();
        Consumer::builder(
            kinesis.client(),
            db.client(),
            StreamRef::from(arn.clone()),
            ApplicationName::new(unique_name("app")).unwrap(),
            move |shard: &str| Recorder {
                shard: shard.to_owned(),
                seen: seen.clone(),
            },
        )
        .initial_position(InitialPosition::TrimHorizon)
        .build()
        .unwrap()
        .spawn()
    };
    wait_for(&seen, sent.len(), Duration::from_secs(60)).await;
    worker.shutdown().await.unwrap();

    let mut got: Vec<(String, Bytes)> = seen
        .0
        .lock()
        .unwrap()
        .values()
        .map(|(k, d, _)| (k.clone(), d.clone()))
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every record, by the stream's ARN {arn}");
}
