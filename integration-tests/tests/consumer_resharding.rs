//! Split and merge while two workers consume: every acknowledged record is processed, and no
//! child shard's record before every parent ended. On ferrokinesis (shard end seen as a missing
//! next iterator, children found through ListShards) and on kinesis-local (shard end with
//! `ChildShards`, as Kinesis does); and over enhanced fan-out on ferrokinesis, both in its own
//! form (shard end seen as `ChildShards` in an event without records) and rewritten into
//! Kinesis's (a final event with a null continuation and the children, then the stream closed).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, FanOut, InitialPosition, Retrieval,
    ShardProcessor, Start,
};
use kinesis_integration_tests::fixtures::{create_stream, split_then_merge, unique_name};
use kinesis_integration_tests::{
    DynamoBackend, DynamoDb, Fault, FaultKind, FaultRule, Ferrokinesis, FerrokinesisOptions,
    KinesisLocal,
};
use kinesis_producer::{Producer, UserRecord};
use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Start(String),
    Record(String, String),
    /// Every record of the shard was processed (logged before checkpointing `SHARD_END`).
    End(String),
}

#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Journal {
    fn push(&self, event: Event) {
        self.0.lock().unwrap().push((Instant::now(), event));
    }

    fn events(&self) -> Vec<(Instant, Event)> {
        self.0.lock().unwrap().clone()
    }
}

struct Recorder {
    shard: String,
    journal: Journal,
}

impl ShardProcessor for Recorder {
    async fn initialize(&mut self, _start: &Start) -> Result<(), BoxError> {
        self.journal.push(Event::Start(self.shard.clone()));
        Ok(())
    }

    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        for r in &batch.records {
            self.journal.push(Event::Record(
                self.shard.clone(),
                String::from_utf8_lossy(&r.data).into_owned(),
            ));
        }
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        self.journal.push(Event::End(self.shard.clone()));
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

async fn reshard_while_consuming(
    client: aws_sdk_kinesis::Client,
    phase: Duration,
    pause: Duration,
    retrieval: Retrieval,
) {
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let stream = unique_name("consumer-reshard");
    create_stream(&client, &stream, 2).await.unwrap();
    let application = unique_name("reshard-app");
    let journal = Journal::default();
    let workers: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|id| {
            let journal = journal.clone();
            Consumer::builder(
                client.clone(),
                db.client(),
                stream.clone(),
                ApplicationName::new(application.clone()).unwrap(),
                move |shard: &str| Recorder {
                    shard: shard.to_owned(),
                    journal: journal.clone(),
                },
            )
            .worker_id(*id)
            .initial_position(InitialPosition::TrimHorizon)
            .retrieval(retrieval.clone())
            .build()
            .unwrap()
            .spawn()
        })
        .collect();

    let producer = Producer::builder(client.clone(), stream.as_str())
        .linger(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let putter = {
        let producer = producer.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            let mut i = 0usize;
            while !stop.load(AtomicOrdering::Relaxed) {
                let data = format!("record {i}");
                let record =
                    UserRecord::new(format!("key-{}", i % 997), Bytes::from(data.clone())).unwrap();
                receipts.push((data, producer.put(record).await.unwrap()));
                i += 1;
                if i.is_multiple_of(50) {
                    tokio::time::sleep(pause).await;
                }
            }
            receipts
        })
    };

    split_then_merge(&client, &stream, phase).await.unwrap();
    stop.store(true, AtomicOrdering::Relaxed);
    let mut acked = Vec::new();
    for (data, receipt) in putter.await.unwrap() {
        receipt.await.unwrap();
        acked.push(data);
    }
    producer.shutdown().await;

    // Every acknowledged record processed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashSet<String> = journal
            .events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Record(_, data) => Some(data),
                _ => None,
            })
            .collect();
        let missing = acked.iter().filter(|d| !seen.contains(*d)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} records never processed",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }

    // No child record before every parent ended; and how soon children started.
    let events = journal.events();
    let parents = kinesis_integration_tests::fleet::parents(&client, &stream)
        .await
        .unwrap();
    let index = |wanted: &dyn Fn(&Event) -> bool| events.iter().position(|(_, e)| wanted(e));
    let mut slowest = Duration::ZERO;
    let mut children = 0;
    for (child, its_parents) in &parents {
        let Some(first_record) = index(&|e| matches!(e, Event::Record(s, _) if s == child)) else {
            continue;
        };
        for parent in its_parents {
            let Some(ended) = index(&|e| matches!(e, Event::End(s) if s == parent)) else {
                panic!("{child} processed but its parent {parent} never ended");
            };
            assert!(
                ended < first_record,
                "a record of {child} was processed before {parent} ended"
            );
        }
        if !its_parents.is_empty() {
            children += 1;
            let last_end = its_parents
                .iter()
                .filter_map(|p| index(&|e| matches!(e, Event::End(s) if s == p)))
                .map(|i| events[i].0)
                .max()
                .unwrap();
            let started = index(&|e| matches!(e, Event::Start(s) if s == child))
                .map(|i| events[i].0)
                .unwrap();
            slowest = slowest.max(started.saturating_duration_since(last_end));
        }
    }
    assert!(
        children >= 3,
        "the split and merge children were processed: {parents:?}"
    );
    println!(
        "{} records processed across the split and merge; children started at most {:.2} s after their last parent ended",
        acked.len(),
        slowest.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_during_consumption_on_ferrokinesis() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    reshard_while_consuming(
        kinesis.client(),
        Duration::from_secs(2),
        Duration::from_millis(5),
        Retrieval::Polling,
    )
    .await;
}

/// ferrokinesis with 2 s subscriptions: they are renewed several times across a split and merge.
async fn short_subscriptions() -> Ferrokinesis {
    Ferrokinesis::start_with(
        FerrokinesisOptions::new().subscribe_to_shard_session(Duration::from_secs(2)),
    )
    .await
    .unwrap()
}

async fn reshard_while_consuming_over_fan_out(kinesis: &Ferrokinesis) {
    reshard_while_consuming(
        kinesis.client(),
        Duration::from_secs(2),
        Duration::from_millis(5),
        Retrieval::FanOut(FanOut::new()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_during_fan_out_consumption_on_ferrokinesis() {
    let kinesis = short_subscriptions().await;
    reshard_while_consuming_over_fan_out(&kinesis).await;
    assert_eq!(
        kinesis.faults().calls("GetRecords"),
        0,
        "fan-out never polls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_during_consumption_on_kinesis_local() {
    let kinesis = KinesisLocal::start().await.unwrap();
    reshard_while_consuming(
        kinesis.client(),
        Duration::from_secs(3),
        Duration::from_millis(200),
        Retrieval::Polling,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_during_fan_out_consumption_with_aws_shard_end() {
    let kinesis = short_subscriptions().await;
    // Every subscription ends a closed shard as Kinesis does: children only in a final event
    // whose continuation is null (naming both parents of a merge child, which ferrokinesis
    // does not when the adjacent parent ends).
    kinesis
        .faults()
        .add(FaultRule::on("SubscribeToShard", Fault::aws_shard_end()));
    reshard_while_consuming_over_fan_out(&kinesis).await;
    let faults = kinesis.faults();
    let stats = faults.stats();
    println!(
        "{} subscriptions rewritten; {} final events with a null continuation ({} with a merge child's parents completed from ListShards); {} events with records had their children removed",
        faults.injected(FaultKind::AwsShardEnd),
        stats.aws_shard_ends,
        stats.parents_completed,
        stats.children_withheld
    );
    assert!(faults.injected(FaultKind::AwsShardEnd) > 0);
    // The split parent and the two merge parents, each ended by a null continuation (every
    // event naming children had one, so no shard could end another way).
    assert!(
        stats.aws_shard_ends >= 3,
        "{} shard ends through a null continuation",
        stats.aws_shard_ends
    );
    assert_eq!(faults.calls("GetRecords"), 0, "fan-out never polls");
}
