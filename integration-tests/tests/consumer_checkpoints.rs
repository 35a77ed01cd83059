//! Checkpoints across workers: a restart resumes inside an aggregate, and a lease table written
//! by the Java KCL is adopted (its checkpoints honoured) while ours is written in its schema.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use kinesis_consumer::{
    ApplicationName, Batch, BillingMode, BoxError, Checkpointer, Consumer, InitialPosition,
    LeaseTable, Position, SequenceNumber, ShardProcessor, Start,
};
use kinesis_integration_tests::fixtures::{create_stream, unique_name};
use kinesis_integration_tests::{DynamoBackend, DynamoDb, Ferrokinesis};
use kinesis_producer::{Producer, UserRecord};

/// (shard, sequence, subsequence, data).
type Delivered = (String, String, u64, String);

/// The records in delivery order, and the starts seen.
#[derive(Clone, Default)]
struct Journal {
    records: Arc<Mutex<Vec<Delivered>>>,
    starts: Arc<Mutex<Vec<Start>>>,
}

/// Checkpoints after the `checkpoint_after`-th record it sees (if set), never at shutdown.
struct Recorder {
    shard: String,
    journal: Journal,
    checkpoint_after: Option<usize>,
    count: usize,
}

impl ShardProcessor for Recorder {
    async fn initialize(&mut self, start: &Start) -> Result<(), BoxError> {
        self.journal.starts.lock().unwrap().push(start.clone());
        Ok(())
    }

    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        for r in &batch.records {
            self.count += 1;
            self.journal.records.lock().unwrap().push((
                self.shard.clone(),
                r.sequence_number.to_string(),
                r.sub_sequence_number,
                String::from_utf8_lossy(&r.data).into_owned(),
            ));
            if self.checkpoint_after == Some(self.count) {
                checkpointer.checkpoint_at(r).await.unwrap();
            }
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        checkpointer.checkpoint_shard_end().await?;
        Ok(())
    }
}

fn consumer(
    kinesis: &Ferrokinesis,
    db: &DynamoDb,
    stream: &str,
    application: &str,
    journal: &Journal,
    checkpoint_after: Option<usize>,
) -> kinesis_consumer::Running {
    let journal = journal.clone();
    Consumer::builder(
        kinesis.client(),
        db.client(),
        stream.to_owned(),
        ApplicationName::new(application.to_owned()).unwrap(),
        move |shard: &str| Recorder {
            shard: shard.to_owned(),
            journal: journal.clone(),
            checkpoint_after,
            count: 0,
        },
    )
    .initial_position(InitialPosition::TrimHorizon)
    // Short enough that the Java worker's lease expires soon; long enough that a renewal
    // answered late on a busy machine does not cost a lease (its shard would start again from
    // its checkpoint, and the exact counts below would see the records twice).
    .failover_time(Duration::from_secs(5))
    .renew_interval(Duration::from_secs(1))
    .scan_interval(Duration::from_millis(500))
    .build()
    .unwrap()
    .spawn()
}

async fn wait_records(journal: &Journal, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while journal.records.lock().unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} records delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_inside_an_aggregate() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let stream = unique_name("resume-inside");
    create_stream(&kinesis.client(), &stream, 1).await.unwrap();
    let producer = Producer::builder(kinesis.client(), stream.as_str())
        .build()
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for i in 0..100 {
        let record = UserRecord::new(format!("k{}", i % 7), Bytes::from(format!("r{i}"))).unwrap();
        receipts.push(producer.put(record).await.unwrap());
    }
    let mut aggregated = 0;
    for receipt in receipts {
        aggregated += usize::from(receipt.await.unwrap().aggregated());
    }
    producer.shutdown().await;
    assert_eq!(aggregated, 100, "the records were aggregated");

    let application = unique_name("resume-app");
    let first = Journal::default();
    let worker = consumer(&kinesis, &db, &stream, &application, &first, Some(40));
    wait_records(&first, 100).await;
    worker.shutdown().await.unwrap();
    let (_, seq, sub, data) = first.records.lock().unwrap()[39].clone();
    assert_eq!(data, "r39");

    let second = Journal::default();
    let worker = consumer(&kinesis, &db, &stream, &application, &second, None);
    wait_records(&second, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.shutdown().await.unwrap();
    let records = second.records.lock().unwrap().clone();
    assert_eq!(
        records.len(),
        60,
        "exactly the records after the checkpoint"
    );
    assert_eq!(records[0].1, seq, "the same aggregate");
    assert_eq!(records[0].2, sub + 1, "the next user record inside it");
    assert_eq!(records[0].3, "r40");
    let start = second.starts.lock().unwrap()[0].clone();
    assert_eq!(start.checkpoint.to_string(), format!("{seq}/{sub}"));
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The attributes of a lease item and their types, as `kcl.md` lists them.
const KCL_SCHEMA: &[(&str, &str)] = &[
    ("leaseKey", "S"),
    ("leaseOwner", "S"),
    ("leaseCounter", "N"),
    ("ownerSwitchesSinceCheckpoint", "N"),
    ("checkpoint", "S"),
    ("checkpointSubSequenceNumber", "N"),
    ("pendingCheckpoint", "S"),
    ("pendingCheckpointSubSequenceNumber", "N"),
    ("pendingCheckpointState", "B"),
    ("parentShardId", "SS"),
    ("childShardIds", "SS"),
    ("startingHashKey", "S"),
    ("endingHashKey", "S"),
    ("checkpointOwner", "S"),
    ("throughputKBps", "N"),
    ("entityType", "S"),
];

fn type_of(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Ss(_) => "SS",
        _ => "other",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_written_by_the_java_kcl_is_adopted_and_ours_follows_its_schema() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("kcl-compat");
    create_stream(&client, &stream, 2).await.unwrap();
    // 30 plain records per shard, and their sequence numbers as a reader sees them.
    let producer = Producer::builder(client.clone(), stream.as_str())
        .aggregation(false)
        .build()
        .await
        .unwrap();
    let mut by_shard: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for i in 0..200 {
        let data = format!("r{i}");
        let delivery = producer
            .put(UserRecord::new(format!("k{i}"), Bytes::from(data.clone())).unwrap())
            .await
            .unwrap()
            .await
            .unwrap();
        by_shard
            .entry(delivery.shard_id().to_owned())
            .or_default()
            .push((delivery.sequence_number().to_owned(), data));
    }
    producer.shutdown().await;
    let mut shards: Vec<String> = by_shard.keys().cloned().collect();
    shards.sort();
    assert_eq!(shards.len(), 2);

    // The table as the Java KCL 3.5 leaves it: one lease checkpointed at its 10th record and held
    // by a Java worker that is gone, one never started and free.
    let application = unique_name("kcl-app");
    let table = LeaseTable::new(db.client(), application.clone());
    table
        .ensure(BillingMode::OnDemand, Duration::from_secs(60))
        .await
        .unwrap();
    let (ten_seq, _) = by_shard[&shards[0]][9].clone();
    let items = [
        vec![
            ("leaseKey", s(&shards[0])),
            ("leaseOwner", s("java-worker-1")),
            ("leaseCounter", n(41)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("checkpoint", s(&ten_seq)),
            ("checkpointSubSequenceNumber", n(0)),
            ("startingHashKey", s("0")),
            (
                "endingHashKey",
                s("170141183460469231731687303715884105727"),
            ),
            ("throughputKBps", n(1.5)),
            ("entityType", s("LEASE")),
        ],
        vec![
            ("leaseKey", s(&shards[1])),
            ("leaseCounter", n(3)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("checkpoint", s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber", n(0)),
            (
                "startingHashKey",
                s("170141183460469231731687303715884105728"),
            ),
            (
                "endingHashKey",
                s("340282366920938463463374607431768211455"),
            ),
            ("entityType", s("LEASE")),
        ],
    ];
    for item in items {
        db.client()
            .put_item()
            .table_name(&application)
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
            .await
            .unwrap();
    }

    let journal = Journal::default();
    let worker = consumer(&kinesis, &db, &stream, &application, &journal, None);
    let want = by_shard[&shards[0]].len() - 10 + by_shard[&shards[1]].len();
    wait_records(&journal, want).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.shutdown().await.unwrap();
    let records = journal.records.lock().unwrap().clone();
    assert_eq!(
        records.len(),
        want,
        "the Java worker's checkpoint was honoured"
    );
    let first_on_0 = records.iter().find(|r| r.0 == shards[0]).unwrap();
    assert_eq!(
        first_on_0.3, by_shard[&shards[0]][10].1,
        "resumed right after the checkpoint"
    );

    // Every item now in the table has only the KCL's attributes, with the KCL's types, and the
    // Java KCL's own attributes survived.
    let scan = db
        .client()
        .scan()
        .table_name(&application)
        .send()
        .await
        .unwrap();
    let schema: HashMap<&str, &str> = KCL_SCHEMA.iter().copied().collect();
    for item in scan.items() {
        for (name, value) in item {
            assert_eq!(
                schema.get(name.as_str()).copied(),
                Some(type_of(value)),
                "{name} in {item:?}"
            );
        }
        for required in [
            "leaseKey",
            "leaseCounter",
            "ownerSwitchesSinceCheckpoint",
            "checkpoint",
            "checkpointSubSequenceNumber",
        ] {
            assert!(
                item.contains_key(required),
                "{required} missing from {item:?}"
            );
        }
    }
    let first = scan
        .items()
        .iter()
        .find(|i| i["leaseKey"] == s(&shards[0]))
        .unwrap();
    assert_eq!(first["throughputKBps"], n(1.5));
    // Taken from the Java worker, then released at our shutdown.
    assert!(first.get("leaseOwner").is_none(), "{first:?}");
    let counter: u64 = first["leaseCounter"].as_n().unwrap().parse().unwrap();
    assert!(counter > 41, "{first:?}");

    // A fresh application's leases, created by us, follow the same schema.
    let fresh = unique_name("fresh-app");
    let journal = Journal::default();
    let worker = consumer(&kinesis, &db, &stream, &fresh, &journal, None);
    wait_records(&journal, 200).await;
    worker.shutdown().await.unwrap();
    let scan = db.client().scan().table_name(&fresh).send().await.unwrap();
    assert_eq!(scan.items().len(), 2);
    for item in scan.items() {
        for (name, value) in item {
            assert_eq!(
                schema.get(name.as_str()).copied(),
                Some(type_of(value)),
                "{name} in {item:?}"
            );
        }
    }
}

/// Tries every kind of checkpoint once, on its first batch, and writes down what happened.
struct Prober {
    outcomes: Arc<Mutex<Vec<String>>>,
    done: bool,
}

impl ShardProcessor for Prober {
    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        if self.done || batch.records.len() < 2 {
            return Ok(());
        }
        self.done = true;
        let first = &batch.records[0];
        let last = &batch.records[batch.records.len() - 1];
        let beyond = Position::new(
            SequenceNumber::parse(&format!("{}0", last.sequence_number)).unwrap(),
            0,
        );
        // A record whose sequence number is not one (never read from Kinesis).
        let mut garbage = last.clone();
        garbage.sequence_number = "12ab".into();
        let mut outcomes = Vec::new();
        let mut note = |what: &str, result: Result<(), kinesis_consumer::Error>| {
            outcomes.push(match result {
                Ok(()) => format!("{what}: ok"),
                Err(kinesis_consumer::Error::InvalidCheckpoint { problem, .. }) => {
                    format!("{what}: refused ({problem})")
                }
                Err(other) => format!("{what}: {other}"),
            });
        };
        note("beyond", checkpointer.checkpoint_at_position(&beyond).await);
        note("garbage", checkpointer.checkpoint_at(&garbage).await);
        note("shard end", checkpointer.checkpoint_shard_end().await);
        note("last", checkpointer.checkpoint_at(last).await);
        note(
            "behind",
            checkpointer
                .checkpoint_at_position(&Position::of(first).unwrap())
                .await,
        );
        note(
            "prepare",
            checkpointer
                .prepare_checkpoint(
                    &Position::of(last).unwrap(),
                    Some(Bytes::from_static(b"app state")),
                )
                .await,
        );
        self.outcomes.lock().unwrap().extend(outcomes);
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        checkpointer.checkpoint_shard_end().await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_refuses_what_was_not_delivered_or_goes_back_and_prepares_for_the_next_owner()
 {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let stream = unique_name("checkpointer");
    create_stream(&kinesis.client(), &stream, 1).await.unwrap();
    let producer = Producer::builder(kinesis.client(), stream.as_str())
        .aggregation(false)
        .build()
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for i in 0..20 {
        let record = UserRecord::new(format!("k{i}"), Bytes::from(format!("r{i}"))).unwrap();
        receipts.push(producer.put(record).await.unwrap());
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    producer.shutdown().await;

    let application = unique_name("checkpointer-app");
    let outcomes: Arc<Mutex<Vec<String>>> = Arc::default();
    let worker = {
        let outcomes = outcomes.clone();
        Consumer::builder(
            kinesis.client(),
            db.client(),
            stream.clone(),
            ApplicationName::new(application.clone()).unwrap(),
            move |_: &str| Prober {
                outcomes: outcomes.clone(),
                done: false,
            },
        )
        .initial_position(InitialPosition::TrimHorizon)
        .build()
        .unwrap()
        .spawn()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while outcomes.lock().unwrap().len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the prober never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await.unwrap();
    assert_eq!(
        *outcomes.lock().unwrap(),
        [
            "beyond: refused (beyond the last record delivered)",
            "garbage: refused (not a sequence number)",
            "shard end: refused (the shard has not been read to its end)",
            "last: ok",
            "behind: refused (behind the current checkpoint)",
            "prepare: ok",
        ]
    );

    // The next owner starts with the checkpoint and the prepared one, with its state.
    let journal = Journal::default();
    let worker = consumer(&kinesis, &db, &stream, &application, &journal, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while journal.starts.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second worker never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await.unwrap();
    let start = journal.starts.lock().unwrap()[0].clone();
    assert_eq!(Some(start.checkpoint.clone()), start.pending_checkpoint);
    assert_eq!(
        start.pending_checkpoint_state.as_deref(),
        Some(&b"app state"[..])
    );
}
