//! Faults on the lease table (throttling, 5xx, latency, through a proxy in front of DynamoDB
//! Local) and on Kinesis (throttled reads, expired iterators, through a proxy in front of
//! ferrokinesis), with SDK retries off so that the consumer's own handling is what is tested:
//! every record is processed and no lease is lost.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, InitialPosition, Running,
    ShardProcessor,
};
use kinesis_integration_tests::fixtures::{create_stream, unique_name};
use kinesis_integration_tests::{
    ClientOptions, DynamoBackend, DynamoDb, Fault, FaultController, FaultKind, FaultProxy,
    FaultRule, Ferrokinesis, ServiceError, dynamodb_client, kinesis_client,
};
use kinesis_producer::{Producer, UserRecord};

#[derive(Clone, Default)]
struct Tally {
    seen: Arc<Mutex<HashMap<String, usize>>>,
    lost: Arc<Mutex<usize>>,
    /// Processors started, by shard (counted by the processor factories that call `started`).
    starts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Tally {
    /// Counts a processor started for `shard`, and returns it.
    fn started(&self, shard: &str) -> Counter {
        *self
            .starts
            .lock()
            .unwrap()
            .entry(shard.to_owned())
            .or_default() += 1;
        Counter(self.clone())
    }

    /// Each of `shards` shards had its processor started once.
    fn assert_each_started_once(&self, shards: usize) {
        let starts = self.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), shards, "every shard started: {starts:?}");
        assert!(
            starts.values().all(|&n| n == 1),
            "a shard's processor was started again: {starts:?}"
        );
    }

    /// Waits until every record of `sent` (by its data) has been processed, failing the test
    /// after `within` with how many were not (`context` added to the message).
    async fn until_all_seen(&self, sent: &[String], within: Duration, context: &str) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let missing = {
                let seen = self.seen.lock().unwrap();
                sent.iter().filter(|d| !seen.contains_key(*d)).count()
            };
            if missing == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{missing} records never processed{context}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Counter(Tally);

impl ShardProcessor for Counter {
    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        {
            let mut seen = self.0.seen.lock().unwrap();
            for r in &batch.records {
                *seen
                    .entry(String::from_utf8_lossy(&r.data).into_owned())
                    .or_default() += 1;
            }
        }
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }

    async fn lease_lost(&mut self) {
        *self.0.lost.lock().unwrap() += 1;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        checkpointer.checkpoint_shard_end().await?;
        Ok(())
    }
}

/// Waits until `worker` holds `leases` leases, failing the test after `within` with how many it
/// holds.
async fn until_held(worker: &Running, leases: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let held = worker.status().await.leases_held;
        if held >= leases {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{held} of {leases} leases taken in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ferrokinesis with a stream of `shards` shards, and a lease-table stand-in behind a fault
/// proxy: the set-up of the tests that slow or fail lease-table calls.
struct TableFaults {
    kinesis: Ferrokinesis,
    db: DynamoDb,
    faults: Arc<FaultController>,
    proxy: FaultProxy,
    stream: String,
}

impl TableFaults {
    async fn start(backend: DynamoBackend, seed: u64, stream: &str, shards: usize) -> Self {
        let kinesis = Ferrokinesis::start().await.unwrap();
        let db = DynamoDb::start(backend).await.unwrap();
        let faults = FaultController::new(seed);
        let proxy = FaultProxy::start(db.endpoint(), faults.clone())
            .await
            .unwrap();
        let stream = unique_name(stream);
        create_stream(&kinesis.client(), &stream, shards as i32)
            .await
            .unwrap();
        TableFaults {
            kinesis,
            db,
            faults,
            proxy,
            stream,
        }
    }
}

/// Writes `rounds` rounds of `per_round` records (`r{round}-{i}`, keys `k{i}`) to `stream`,
/// 500 ms apart, directly (no faults), and waits for every receipt. The records' data, in order.
async fn produce_in_rounds(
    kinesis: &Ferrokinesis,
    stream: &str,
    rounds: usize,
    per_round: usize,
) -> Vec<String> {
    let producer = Producer::builder(kinesis.client(), stream)
        .build()
        .await
        .unwrap();
    let mut sent = Vec::new();
    let mut receipts = Vec::new();
    for round in 0..rounds {
        for i in 0..per_round {
            let data = format!("r{round}-{i}");
            let record = UserRecord::new(format!("k{i}"), Bytes::from(data.clone())).unwrap();
            receipts.push(producer.put(record).await.unwrap());
            sent.push(data);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    producer.shutdown().await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_and_read_faults_cause_retries_not_losses() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let faults = FaultController::new(11);
    let kinesis_proxy = FaultProxy::start(kinesis.endpoint(), faults.clone())
        .await
        .unwrap();
    let dynamodb_proxy = FaultProxy::start(db.endpoint(), faults.clone())
        .await
        .unwrap();
    let no_retries = ClientOptions::new().without_retries();
    let stream = unique_name("consumer-faults");
    create_stream(&kinesis.client(), &stream, 4).await.unwrap();

    // The lease table is created and seeded before the faults start.
    let tally = Tally::default();
    let worker = {
        let tally = tally.clone();
        Consumer::builder(
            kinesis_client(kinesis_proxy.endpoint(), &no_retries),
            dynamodb_client(dynamodb_proxy.endpoint(), &no_retries),
            stream.clone(),
            ApplicationName::new(unique_name("faults-app")).unwrap(),
            move |_: &str| Counter(tally.clone()),
        )
        .initial_position(InitialPosition::TrimHorizon)
        .max_idle(Duration::from_millis(300))
        .build()
        .unwrap()
        .spawn()
    };
    for rule in [
        FaultRule::on(
            "UpdateItem",
            Fault::Error(ServiceError::provisioned_throughput_exceeded()),
        )
        .probability(0.2),
        FaultRule::on(
            "UpdateItem",
            Fault::Error(ServiceError::internal_server_error()),
        )
        .probability(0.1),
        FaultRule::on("Scan", Fault::Error(ServiceError::internal_server_error())).probability(0.2),
        FaultRule::on(
            "Scan",
            Fault::latency_between(Duration::ZERO, Duration::from_millis(300)),
        )
        .probability(0.5),
        FaultRule::on(
            "UpdateItem",
            Fault::latency_between(Duration::ZERO, Duration::from_millis(200)),
        )
        .probability(0.3),
        FaultRule::on(
            "GetRecords",
            Fault::Error(ServiceError::provisioned_throughput_exceeded()),
        )
        .probability(0.2),
        FaultRule::on("GetRecords", Fault::Error(ServiceError::expired_iterator()))
            .probability(0.1),
        FaultRule::on("GetShardIterator", Fault::Error(ServiceError::throttling()))
            .probability(0.2),
    ] {
        faults.add(rule);
    }

    // Produce for a while (directly, without faults) while the worker reads through them.
    let sent = produce_in_rounds(&kinesis, &stream, 20, 100).await;

    tally
        .until_all_seen(&sent, Duration::from_secs(90), "")
        .await;
    let stats = faults.stats();
    println!(
        "faults injected: {} errors, {} latencies over {:?} calls",
        faults.injected(FaultKind::Error),
        faults.injected(FaultKind::Latency),
        stats.calls
    );
    assert!(faults.injected(FaultKind::Error) > 20, "the faults fired");
    assert_eq!(*tally.lost.lock().unwrap(), 0, "a lease was lost");
    faults.clear();
    worker.shutdown().await.unwrap();
}

/// Lease-table writes that take effect but whose answers are lost: the proxy drops the
/// connection after DynamoDB answered a third of the `UpdateItem` calls (renewals, checkpoints,
/// takes). The SDK (default retries, as users run it) sends the call again, which the table
/// refuses: the counter it is fenced on was raised by the first. Such a refusal names the worker
/// as holder still, with a higher counter, and is not a lost lease: the renewal or checkpoint is
/// made again from the refused item. Every record is processed, no processor hears
/// `lease_lost`, and each shard's processor is started once.
///
/// The failover time is 30 s (renewals every 4 s as by default): a renewal whose answers are
/// lost again and again (each round a lost answer, the SDK's backoff, a refusal) loses its lease
/// when its trust runs out, rightly; at a third of the answers lost, 9 s of trust were seen to
/// run out in about one run in five. The refusals this test is about are met within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_of_lease_writes_cost_no_lease() {
    let TableFaults {
        kinesis,
        db: _db,
        faults,
        proxy,
        stream,
    } = TableFaults::start(DynamoBackend::SharedLocal, 17, "lost-answers", 4).await;

    let tally = Tally::default();
    let worker = {
        let tally = tally.clone();
        Consumer::builder(
            kinesis.client(),
            dynamodb_client(proxy.endpoint(), &ClientOptions::new()),
            stream.clone(),
            ApplicationName::new(unique_name("lost-answers-app")).unwrap(),
            move |shard: &str| tally.started(shard),
        )
        .initial_position(InitialPosition::TrimHorizon)
        .max_idle(Duration::from_millis(300))
        .failover_time(Duration::from_secs(30))
        .renew_interval(Duration::from_secs(4))
        .build()
        .unwrap()
        .spawn()
    };
    faults.add(FaultRule::on("UpdateItem", Fault::drop_response()).probability(0.33));

    // 12 s: three renewals of each lease, and a checkpoint after each batch.
    let sent = produce_in_rounds(&kinesis, &stream, 24, 50).await;

    tally
        .until_all_seen(&sent, Duration::from_secs(60), "")
        .await;
    let dropped = faults.injected(FaultKind::DropAfterForward);
    let writes = faults.calls("UpdateItem");
    println!("{dropped} of {writes} UpdateItem answers dropped after the table applied them");
    assert!(dropped >= 20, "only {dropped} answers were dropped");
    assert_eq!(*tally.lost.lock().unwrap(), 0, "a lease was lost");
    tally.assert_each_started_once(4);
    faults.clear();
    worker.shutdown().await.unwrap();
}

/// One run of [`reads_under_way_stay_within_max_concurrent_reads`]: a worker (with `cap`, or
/// the default) on `stream` through a proxy adding 150 ms to every read, until every record in
/// `sent` is processed. Returns the most `GetRecords` calls under way at once, and the most
/// Kinesis calls of any kind.
async fn read_with_slow_answers(
    kinesis: &Ferrokinesis,
    db: &DynamoDb,
    stream: &str,
    sent: &[String],
    cap: Option<usize>,
) -> (u64, u64) {
    let faults = FaultController::new(3);
    let proxy = FaultProxy::start(kinesis.endpoint(), faults.clone())
        .await
        .unwrap();
    for operation in ["GetRecords", "GetShardIterator"] {
        faults.add(FaultRule::on(
            operation,
            Fault::latency(Duration::from_millis(150)),
        ));
    }
    let tally = Tally::default();
    let worker = {
        let tally = tally.clone();
        let mut builder = Consumer::builder(
            kinesis_client(proxy.endpoint(), &ClientOptions::new()),
            db.client(),
            stream.to_owned(),
            ApplicationName::new(unique_name("reads-app")).unwrap(),
            move |_: &str| Counter(tally.clone()),
        )
        .initial_position(InitialPosition::TrimHorizon)
        .max_idle(Duration::from_millis(200));
        if let Some(cap) = cap {
            builder = builder.max_concurrent_reads(std::num::NonZeroUsize::new(cap).unwrap());
        }
        builder.build().unwrap().spawn()
    };
    tally
        .until_all_seen(sent, Duration::from_secs(60), &format!(" (cap {cap:?})"))
        .await;
    worker.shutdown().await.unwrap();
    assert_eq!(*tally.lost.lock().unwrap(), 0, "a lease was lost");
    (
        faults.most_in_flight("GetRecords"),
        faults.most_in_flight_together(),
    )
}

/// `max_concurrent_reads` bounds the reads a worker has under way over all its shards (and so
/// its connections to Kinesis), and every shard is still read; without it, a worker reads its
/// 12 shards at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_under_way_stay_within_max_concurrent_reads() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    let stream = unique_name("reads-cap");
    create_stream(&kinesis.client(), &stream, 12).await.unwrap();
    let producer = Producer::builder(kinesis.client(), stream.as_str())
        .build()
        .await
        .unwrap();
    let mut sent = Vec::new();
    let mut receipts = Vec::new();
    for i in 0..600 {
        let data = format!("r{i}");
        let record = UserRecord::new(format!("k{i}"), Bytes::from(data.clone())).unwrap();
        receipts.push(producer.put(record).await.unwrap());
        sent.push(data);
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    producer.shutdown().await;

    // Besides the reads, a worker calls ListShards (its shard syncs and the lineage), at most
    // one at a time here: the bound on all Kinesis calls is the cap + 1.
    let (records, together) = read_with_slow_answers(&kinesis, &db, &stream, &sent, Some(3)).await;
    println!("cap 3: at most {records} GetRecords, {together} Kinesis calls under way");
    assert!(records <= 3 && together <= 4, "{records}, {together}");
    assert_eq!(records, 3, "the cap was reached: the test would see more");

    let (records, together) = read_with_slow_answers(&kinesis, &db, &stream, &sent, None).await;
    println!("default cap: at most {records} GetRecords, {together} Kinesis calls under way");
    assert!(
        records > 3,
        "12 shards read without a low cap overlap more than 3 calls"
    );
}

/// A worker starting beside 64 free leases, with every lease-table write answered after 100 ms:
/// its takes are at most 32 under way at once, and the renewals that follow are spread over
/// the renewal interval instead of coming in bursts of one call per lease taken together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_are_bounded_and_renewals_spread_out() {
    const SHARDS: usize = 64;
    let TableFaults {
        kinesis,
        db: _db,
        faults,
        proxy,
        stream,
    } = TableFaults::start(DynamoBackend::Dynoxide, 5, "writes-cap", SHARDS).await;
    let worker = Consumer::builder(
        kinesis.client(),
        dynamodb_client(proxy.endpoint(), &ClientOptions::new()),
        stream.clone(),
        ApplicationName::new(unique_name("writes-app")).unwrap(),
        |_: &str| Counter(Tally::default()),
    )
    .build()
    .unwrap()
    .spawn();
    // Takes, renewals (and releases) are UpdateItem calls; the leases are created with PutItem.
    faults.add(FaultRule::on(
        "UpdateItem",
        Fault::latency(Duration::from_millis(100)),
    ));
    until_held(&worker, SHARDS, Duration::from_secs(60)).await;
    let takes = faults.most_in_flight("UpdateItem");
    println!("taking {SHARDS} leases: at most {takes} writes under way");
    // The takes (32 at most), and any first renewals already due.
    assert!(
        takes <= 32 + 8,
        "{takes} lease-table writes under way while taking"
    );

    // Two and a half renewal intervals: every lease renewed twice or more.
    faults.reset_most_in_flight();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let renewals = faults.most_in_flight("UpdateItem");
    println!("renewing {SHARDS} leases every 4 s: at most {renewals} writes under way");
    // 16 renewals a second of 100 ms each: about 2 under way on average; a stall of the busy
    // test process (the table stand-in shares its threads) lets those due meanwhile go
    // together, about 11 for 0.7 s. Leases taken in two waves of 32 and renewed together would
    // put 32 under way at once.
    assert!(renewals <= 20, "{renewals} renewals under way at once");
    assert_eq!(worker.status().await.leases_held, SHARDS, "no lease lost");
    faults.clear();
    worker.shutdown().await.unwrap();
}

/// Two workers start at once on 100 free leases, one of them with every lease-table write
/// answered after 1 s. Each first plans to take every lease (it sees no other owner yet); the
/// fast one takes them all at once, and the slow one's scans show it. The slow one's takes still
/// waiting for a permit are then not sent (each would be a write refused by its condition): it
/// sends its first 32 and few more, not 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_a_later_scan_shows_refused_are_not_sent() {
    const SHARDS: usize = 100;
    let TableFaults {
        kinesis,
        db,
        faults,
        proxy,
        stream,
    } = TableFaults::start(DynamoBackend::Dynoxide, 11, "takes-superseded", SHARDS).await;
    let application = unique_name("superseded-app");
    faults.add(FaultRule::on(
        "UpdateItem",
        Fault::latency(Duration::from_secs(1)),
    ));
    let worker = |id: &str, dynamodb: &str| {
        Consumer::builder(
            kinesis.client(),
            dynamodb_client(dynamodb, &ClientOptions::new()),
            stream.clone(),
            ApplicationName::new(application.clone()).unwrap(),
            |_: &str| Counter(Tally::default()),
        )
        .worker_id(id)
        // No renewal, handoff or expiry within the test: its writes are takes.
        .failover_time(Duration::from_secs(120))
        .renew_interval(Duration::from_secs(30))
        .max_handoffs_per_cycle(0)
        .build()
        .unwrap()
        .spawn()
    };
    let slow = worker("slow", proxy.endpoint());
    let fast = worker("fast", db.endpoint());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let takes = faults.calls("UpdateItem");
    let (slow_held, fast_held) = (
        slow.status().await.leases_held,
        fast.status().await.leases_held,
    );
    println!("slow sent {takes} takes; slow holds {slow_held}, fast {fast_held}");
    assert_eq!(slow_held + fast_held, SHARDS, "every lease held");
    // Without the check, the slow worker sends all 100 (in batches of 32, a second each).
    assert!(
        takes <= 50,
        "{takes} takes sent by the slow worker (holding {slow_held})"
    );
    faults.clear();
    slow.shutdown().await.unwrap();
    fast.shutdown().await.unwrap();
}

/// A worker asked to shut down while most of its takes still wait for a permit (100 free
/// leases, every lease-table write answered after 300 ms): the waiting takes are not sent, the
/// worker stops promptly, and it leaves no lease owned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_still_waiting_at_shutdown_are_not_sent() {
    const SHARDS: usize = 100;
    let TableFaults {
        kinesis,
        db,
        faults,
        proxy,
        stream,
    } = TableFaults::start(DynamoBackend::Dynoxide, 7, "takes-at-shutdown", SHARDS).await;
    let application = unique_name("takes-app");
    let worker = Consumer::builder(
        kinesis.client(),
        dynamodb_client(proxy.endpoint(), &ClientOptions::new()),
        stream.clone(),
        ApplicationName::new(application.clone()).unwrap(),
        |_: &str| Counter(Tally::default()),
    )
    .worker_id("w")
    .build()
    .unwrap()
    .spawn();
    faults.add(FaultRule::on(
        "UpdateItem",
        Fault::latency(Duration::from_millis(300)),
    ));
    // The first takes answered: the rest (up to 32 under way, the others waiting) are asked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while worker.status().await.leases_held == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no lease taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = worker.status().await.leases_held;
    let before = faults.calls("UpdateItem");
    let asked = tokio::time::Instant::now();
    worker.shutdown().await.unwrap();
    let took = asked.elapsed();
    let writes = faults.calls("UpdateItem") - before;
    println!(
        "shut down holding {held} of {SHARDS} leases: {writes} UpdateItem calls after, in {took:?}"
    );
    // After the shutdown: a release per lease held or taken by a write already under way (32 at
    // most), and renewals then due. Sending the waiting takes would add two writes each (the
    // take and its release): over 100 more.
    assert!(
        writes <= (held + 32 + 32 + 10) as u64,
        "{writes} writes after the shutdown was asked, holding {held}"
    );
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    faults.clear();
    let owned = db
        .client()
        .scan()
        .table_name(&application)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .filter(|item| {
            item.get("leaseOwner")
                .and_then(|owner| owner.as_s().ok())
                .is_some_and(|owner| owner == "w")
        })
        .count();
    assert_eq!(owned, 0, "leases left owned by the worker that shut down");
}

/// A lease table answering every write in 2.3 s, past the ordinary call timeout (half the
/// renewal interval: 2 s) on a saturated table: a renewal waits for its answer half the trust
/// left (2.5 s or more under the default timings), so the worker keeps its leases. Cut at 2 s,
/// every renewal timed out and every lease was lost when its trust ran out, 9 s in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_answering_renewals_in_2_3_s_keeps_the_leases() {
    let TableFaults {
        kinesis,
        db: _db,
        faults,
        proxy,
        stream,
    } = TableFaults::start(DynamoBackend::Dynoxide, 23, "slow-table", 4).await;
    let tally = Tally::default();
    let worker = {
        let tally = tally.clone();
        Consumer::builder(
            kinesis.client(),
            dynamodb_client(proxy.endpoint(), &ClientOptions::new()),
            stream.clone(),
            ApplicationName::new(unique_name("slow-table-app")).unwrap(),
            move |shard: &str| tally.started(shard),
        )
        .build()
        .unwrap()
        .spawn()
    };
    until_held(&worker, 4, Duration::from_secs(60)).await;
    // Renewals (and any other write) answered in 2.3 s; no records, so no checkpoints.
    faults.add(FaultRule::on(
        "UpdateItem",
        Fault::latency(Duration::from_millis(2300)),
    ));
    tokio::time::sleep(Duration::from_secs(16)).await;
    let renewals = faults.calls("UpdateItem");
    let held = worker.status().await.leases_held;
    let lost = *tally.lost.lock().unwrap();
    println!(
        "16 s of renewals answered in 2.3 s: {renewals} renewals, {held} leases held, {lost} lost"
    );
    assert!(renewals >= 12, "only {renewals} renewals");
    assert_eq!(lost, 0, "a lease was lost");
    assert_eq!(held, 4, "leases held");
    tally.assert_each_started_once(4);
    faults.clear();
    worker.shutdown().await.unwrap();
}
