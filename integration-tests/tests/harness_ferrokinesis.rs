//! The embedded ferrokinesis answers through the real SDK, honours its options, and stops on drop.

// Test code: a failed unwrap is a failed test. clippy.toml allows it in `#[test]` functions,
// which does not reach the helpers of an integration-test crate.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use kinesis_integration_tests::fixtures::{
    create_stream, open_shards, put_records, read_stream, unique_name,
};
use kinesis_integration_tests::{ClientOptions, Ferrokinesis, FerrokinesisOptions};

#[tokio::test]
async fn ferrokinesis_creates_a_stream_and_round_trips_a_record() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    assert!(kinesis.endpoint().starts_with("http://127.0.0.1:"));
    let client = kinesis.client();
    let stream = unique_name("roundtrip");
    create_stream(&client, &stream, 2).await.unwrap();

    let put = client
        .put_record()
        .stream_name(&stream)
        .partition_key("key-1")
        .data(Blob::new(b"hello".to_vec()))
        .send()
        .await
        .unwrap();

    let iterator = client
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(put.shard_id())
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = client
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    assert_eq!(records.records().len(), 1);
    assert_eq!(records.records()[0].data().as_ref(), b"hello");
    assert_eq!(
        records.records()[0].sequence_number(),
        put.sequence_number()
    );
    // Every call went through the fault layer and was counted.
    assert_eq!(kinesis.faults().calls("PutRecord"), 1);
    assert_eq!(kinesis.faults().calls("GetRecords"), 1);
}

#[tokio::test]
async fn enforce_limits_throttles_writes_per_shard() {
    let kinesis = Ferrokinesis::start_with(FerrokinesisOptions::new().enforce_limits(true))
        .await
        .unwrap();
    let client = kinesis.client_with(&ClientOptions::new().without_retries());
    let stream = unique_name("limits");
    create_stream(&client, &stream, 1).await.unwrap();

    // 1500 records in well under a second: over the 1000 records/s of one shard.
    let mut failed = 0;
    for call in 0..3 {
        let entries = (0..500).map(|i| (format!("{call}-{i}"), vec![7u8; 10]));
        let output = put_records(&client, &stream, entries).await.unwrap();
        failed += output.failed_record_count().unwrap_or(0);
        for entry in output.records().iter().filter(|e| e.error_code().is_some()) {
            assert_eq!(
                entry.error_code(),
                Some("ProvisionedThroughputExceededException")
            );
        }
    }
    assert!(failed > 0, "no entry was throttled");
}

#[tokio::test]
async fn stream_options_pass_through() {
    let kinesis = Ferrokinesis::start_with(
        FerrokinesisOptions::new()
            .shard_limit(3)
            .subscribe_to_shard_session(Duration::from_secs(2))
            .iterator_ttl(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let client = kinesis.client_with(&ClientOptions::new().without_retries());
    let error = client
        .create_stream()
        .stream_name(unique_name("too-big"))
        .shard_count(4)
        .send()
        .await
        .unwrap_err();
    let error = error.into_service_error();
    assert!(error.is_limit_exceeded_exception(), "{error:?}");
    create_stream(&client, &unique_name("fits"), 3)
        .await
        .unwrap();
}

#[tokio::test]
async fn ferrokinesis_stops_on_drop() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client_with(&ClientOptions::new().without_retries());
    let stream = unique_name("drop");
    create_stream(&client, &stream, 1).await.unwrap();
    assert!(read_stream(&client, &stream).await.unwrap().is_empty());
    drop(kinesis);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = client.list_streams().send().await.unwrap_err();
    assert!(
        matches!(error, aws_sdk_kinesis::error::SdkError::DispatchFailure(_)),
        "{error:?}"
    );
}

/// A reader following a shard while puts land on it concurrently sees every record: a record is
/// never readable before one numbered ahead of it (as in Kinesis). ferrokinesis itself numbers a
/// put's records, then stores them, with nothing between; puts at once could be stored out of
/// order and a reader continuing after the later record never saw the earlier one. The embedded
/// server makes puts one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_following_concurrent_puts_misses_no_record() {
    const WRITERS: usize = 8;
    const CALLS: usize = 60;
    const PER_CALL: usize = 10;
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("follow");
    create_stream(&client, &stream, 1).await.unwrap();
    let shard = open_shards(&client, &stream).await.unwrap()[0].0.clone();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                for c in 0..CALLS {
                    let entries = (0..PER_CALL).map(|i| (format!("k{w}"), format!("{w}-{c}-{i}")));
                    let answer = put_records(&client, &stream, entries).await.unwrap();
                    assert_eq!(answer.failed_record_count(), Some(0));
                }
            })
        })
        .collect();

    let mut seen = std::collections::HashSet::new();
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let total = WRITERS * CALLS * PER_CALL;
    let mut writers_done = false;
    let mut empty_after_done = 0;
    while empty_after_done < 3 {
        let answer = client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .unwrap();
        for record in answer.records() {
            seen.insert(record.data().as_ref().to_vec());
        }
        if writers_done && answer.records().is_empty() {
            empty_after_done += 1;
        }
        if !writers_done && writers.iter().all(|w| w.is_finished()) {
            writers_done = true;
        }
        iterator = answer.next_shard_iterator.unwrap();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(seen.len(), total, "records missed by the reader");
}
