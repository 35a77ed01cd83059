//! kinesis-local answers through the real SDK (including the `ShardFilter` that ferrokinesis
//! ignores), works behind the fault proxy, and is stopped with its handle. Needs Node and the
//! npm package (`scripts/install-tools.sh`): without them these tests fail, naming what is missing.

// Test code: a failed unwrap is a failed test. clippy.toml allows it in `#[test]` functions,
// which does not reach the helpers of an integration-test crate.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType};
use kinesis_integration_tests::fixtures::{
    create_stream, put_records, read_stream, unique_name, wait_for_stream,
};
use kinesis_integration_tests::{
    ClientOptions, EntryErrorCode, EntryFailures, Fault, FaultController, FaultKind, FaultProxy,
    FaultRule, KinesisLocal, kinesis_client,
};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn kinesis_local_lists_shards_with_a_shard_filter_and_stops_on_drop() {
    let kinesis = KinesisLocal::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("split");
    create_stream(&client, &stream, 1).await.unwrap();

    client
        .put_record()
        .stream_name(&stream)
        .partition_key("before-split")
        .data(Blob::new(b"one".to_vec()))
        .send()
        .await
        .unwrap();
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_for_stream(&client, &stream).await.unwrap();

    let all = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(all.shards().len(), 3);
    let open = client
        .list_shards()
        .stream_name(&stream)
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut open: Vec<&str> = open.shards().iter().map(|s| s.shard_id()).collect();
    open.sort();
    assert_eq!(open, ["shardId-000000000001", "shardId-000000000002"]);

    let records = read_stream(&client, &stream).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data().as_ref(), b"one");

    let pid = kinesis.pid();
    assert!(alive(pid));
    drop(kinesis);
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "kinesis-local (pid {pid}) survived its handle");
}

#[tokio::test]
async fn proxy_in_front_of_kinesis_local_fails_entries_without_writing_them() {
    let kinesis = KinesisLocal::start().await.unwrap();
    let faults = FaultController::new(3);
    let proxy = FaultProxy::start(kinesis.endpoint(), faults.clone())
        .await
        .unwrap();
    let client = kinesis_client(proxy.endpoint(), &ClientOptions::new().without_retries());
    let stream = unique_name("proxied");
    create_stream(&client, &stream, 1).await.unwrap();

    faults.add(FaultRule::new(Fault::PutRecordsEntries(
        EntryFailures::indices([0, 2]).code(EntryErrorCode::InternalFailure),
    )));
    let keys = ["a", "b", "c", "d"];
    let output = put_records(&client, &stream, keys.map(|key| (key, key.as_bytes())))
        .await
        .unwrap();
    assert_eq!(output.failed_record_count(), Some(2));
    let codes: Vec<Option<&str>> = output.records().iter().map(|e| e.error_code()).collect();
    assert_eq!(
        codes,
        [Some("InternalFailure"), None, Some("InternalFailure"), None]
    );
    assert_eq!(faults.injected(FaultKind::EntryFailures), 1);

    faults.clear();
    let mut keys: Vec<String> = read_stream(&client, &stream)
        .await
        .unwrap()
        .iter()
        .map(|r| r.partition_key().unwrap_or_default().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["b", "d"]);
}
