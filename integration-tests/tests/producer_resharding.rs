//! Shards split and merge while the producer writes. Read back with the KCL's rule (an aggregate
//! holding a user record outside its shard's range is dropped whole), every acknowledged record
//! must still be found where its receipt says: aggregates that landed on the wrong side of a
//! split were sent again.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use kinesis_integration_tests::fixtures::{
    create_stream, open_shards, split_then_merge, unique_name, wait_for_stream,
};
use kinesis_integration_tests::{Ferrokinesis, KinesisLocal};
use kinesis_producer::{Delivery, Producer, UserRecord};

mod support;
use support::{ReadBack, check_receipts, read_back};

/// Produces continuously while splitting the first shard and then merging the last two, and
/// checks every acknowledged record against the stream. `pause` paces the putter for slow
/// stand-ins.
async fn reshard_while_producing(
    client: aws_sdk_kinesis::Client,
    stream: String,
    phase: Duration,
    pause: Duration,
) {
    create_stream(&client, &stream, 2).await.unwrap();
    let producer = Producer::builder(client.clone(), stream.as_str())
        .linger(Duration::from_millis(50))
        // Only the landing checks may refresh the map during the test.
        .shard_map_refresh_interval(Duration::from_secs(3600))
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
                let record =
                    UserRecord::new(format!("key-{}", i % 997), format!("record {i}")).unwrap();
                receipts.push((record.clone(), producer.put(record).await.unwrap()));
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
    let receipts = putter.await.unwrap();
    let mut delivered: Vec<(UserRecord, Delivery)> = Vec::new();
    for (record, receipt) in receipts {
        delivered.push((record, receipt.await.unwrap()));
    }
    producer.shutdown().await;

    let ReadBack {
        seen,
        total,
        dropped,
        ..
    } = read_back(&client, &stream).await;
    let resent = delivered
        .iter()
        .filter(|(_, d)| {
            d.attempts()
                .iter()
                .any(|a| a.error.as_ref().is_some_and(|e| e.code == "WrongShard"))
        })
        .count();
    println!(
        "{} acknowledged, {total} read under the KCL rule, {dropped} dropped by it, {resent} resent after landing on the wrong shard",
        delivered.len()
    );
    check_receipts(delivered.iter().map(|(r, d)| (r, d)), &seen);
    let shards: std::collections::HashSet<_> = delivered
        .iter()
        .map(|(_, d)| d.shard_id().to_owned())
        .collect();
    assert!(
        shards.len() >= 4,
        "records landed on the parents and the children: {shards:?}"
    );
    // The hazard was really exercised: some aggregates straddled the split.
    assert!(
        dropped > 0 && resent > 0,
        "no aggregate landed on the wrong side of the split"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_on_ferrokinesis_lose_nothing() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    reshard_while_producing(
        kinesis.client(),
        unique_name("producer-reshard"),
        Duration::from_secs(1),
        Duration::from_millis(2),
    )
    .await;
}

/// kinesis-local honours `ShardFilter` and ends closed shards with `ChildShards`, as Kinesis
/// does; it is slow, so the putter is paced to a few hundred records per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_on_kinesis_local_lose_nothing() {
    let kinesis = KinesisLocal::start().await.unwrap();
    reshard_while_producing(
        kinesis.client(),
        unique_name("producer-reshard"),
        Duration::from_secs(2),
        Duration::from_millis(150),
    )
    .await;
}

/// The shard map is read page by page (kinesis-local pages as Kinesis does, with `NextToken`
/// alone after the first page and `ShardFilter` honoured): with two shards per page, a stream of
/// five shards is mapped whole, and every record lands on the shard the producer predicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_map_is_read_across_list_shards_pages() {
    let kinesis = KinesisLocal::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-paging");
    create_stream(&client, &stream, 5).await.unwrap();
    let producer = Producer::builder(client.clone(), stream.as_str())
        .list_shards_page_size(2)
        .linger(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let sent: Vec<UserRecord> = (0..500)
        .map(|i| UserRecord::new(format!("key-{i}"), format!("record {i}")).unwrap())
        .collect();
    let deliveries = support::put_all(&producer, &sent).await;
    producer.shutdown().await;
    let shards: std::collections::HashSet<_> =
        deliveries.iter().map(|d| d.shard_id().to_owned()).collect();
    assert_eq!(shards.len(), 5, "all five shards were mapped: {shards:?}");
    assert!(
        deliveries.iter().all(|d| d.attempts().len() == 1),
        "every record landed where predicted, first time"
    );
    let ReadBack { seen, .. } = read_back(&client, &stream).await;
    check_receipts(sent.iter().zip(&deliveries), &seen);
}

/// The map is refreshed periodically: after a split made by someone else, records put once the
/// interval has passed go straight to the children, without a wrong-shard landing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_map_is_refreshed_periodically() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-refresh");
    create_stream(&client, &stream, 1).await.unwrap();
    let producer = Producer::builder(client.clone(), stream.as_str())
        .shard_map_refresh_interval(Duration::from_millis(200))
        .linger(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let (parent, start, end) = open_shards(&client, &stream).await.unwrap()[0].clone();
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_for_stream(&client, &stream).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;

    let sent: Vec<UserRecord> = (0..1000)
        .map(|i| UserRecord::new(format!("key-{}", i % 97), format!("record {i}")).unwrap())
        .collect();
    let deliveries = support::put_all(&producer, &sent).await;
    producer.shutdown().await;
    let shards: std::collections::HashSet<_> =
        deliveries.iter().map(|d| d.shard_id().to_owned()).collect();
    assert_eq!(shards.len(), 2, "{shards:?}");
    assert!(
        !shards.contains(&parent),
        "nothing went to the closed parent"
    );
    assert!(
        deliveries.iter().all(|d| d.attempts().len() == 1),
        "the refreshed map predicted every shard"
    );
    let ReadBack { seen, dropped, .. } = read_back(&client, &stream).await;
    assert_eq!(dropped, 0);
    check_receipts(sent.iter().zip(&deliveries), &seen);
}
