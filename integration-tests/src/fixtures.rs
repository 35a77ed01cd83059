//! Small test fixtures over the SDK: unique names, streams and tables that are ready to use, and
//! reading a whole stream back. They work against every stand-in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Record, ShardIteratorType, StreamStatus};

use crate::fault::layer::BoxError;

/// How long a fixture waits for a stream or table to become active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A name unique to this process and call (`<prefix>-<pid>-<n>-<time>`), valid for streams,
/// tables and consumers, so tests can share a stand-in.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000_000)
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{micros}", std::process::id())
}

/// One `PutRecords` call with these (partition key, data) entries, as the SDK answers it.
pub async fn put_records<K, D>(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: impl IntoIterator<Item = (K, D)>,
) -> Result<PutRecordsOutput, SdkError<PutRecordsError>>
where
    K: Into<String>,
    D: Into<Vec<u8>>,
{
    let entries = entries
        .into_iter()
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(data))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(SdkError::construction_failure)?;
    client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
}

/// Creates a stream with `shards` shards and waits until it is `ACTIVE`.
pub async fn create_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(), BoxError> {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await?;
    wait_for_stream(client, name).await
}

/// Waits until the stream is `ACTIVE` (after creation or resharding).
pub async fn wait_for_stream(client: &aws_sdk_kinesis::Client, name: &str) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(
                format!("stream {name} not ACTIVE after {ACTIVE_TIMEOUT:?}: {status:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every record of every shard (open or closed) from `TRIM_HORIZON`, shard by shard in
/// `ListShards` order. Meant for the small streams of tests.
pub async fn read_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
) -> Result<Vec<Record>, BoxError> {
    let mut records = Vec::new();
    for shard in list_all_shards(client, name).await? {
        records.extend(read_shard(client, name, shard.shard_id()).await?);
    }
    Ok(records)
}

/// Every shard of a stream, open or closed, in `ListShards` order.
async fn list_all_shards(
    client: &aws_sdk_kinesis::Client,
    name: &str,
) -> Result<Vec<aws_sdk_kinesis::types::Shard>, BoxError> {
    // MaxResults above the shard count: ferrokinesis fails NextToken-only paging.
    let listed = client
        .list_shards()
        .stream_name(name)
        .max_results(1000)
        .send()
        .await?;
    Ok(listed.shards.unwrap_or_default())
}

/// Reads one shard from `TRIM_HORIZON` until its end or until it is caught up.
async fn read_shard(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shard_id: &str,
) -> Result<Vec<Record>, BoxError> {
    let mut records = Vec::new();
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(name)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator;
    while let Some(current) = iterator {
        let output = client.get_records().shard_iterator(current).send().await?;
        let empty = output.records().is_empty();
        let caught_up = output.millis_behind_latest().unwrap_or(0) == 0;
        iterator = output.next_shard_iterator;
        records.extend(output.records);
        if empty && caught_up {
            break;
        }
    }
    Ok(records)
}

/// Creates an on-demand table keyed by the string attribute `key` and waits until it is
/// `ACTIVE`.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    key: &str,
) -> Result<(), BoxError> {
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await?;
    let started = Instant::now();
    loop {
        let table = client.describe_table().table_name(name).send().await?;
        let status = table.table().and_then(|t| t.table_status()).cloned();
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(
                format!("table {name} not ACTIVE after {ACTIVE_TIMEOUT:?}: {status:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One shard read back from `TRIM_HORIZON`, deaggregated, with the KCL's resharding rule
/// applied: an aggregate holding a user record outside the shard's hash key range is dropped
/// whole.
#[derive(Debug)]
pub struct ShardRead {
    /// The shard.
    pub shard_id: String,
    /// Its hash key range.
    pub range: kinesis_aggregation::HashKeyRange,
    /// Whether it is closed (has an ending sequence number).
    pub closed: bool,
    /// The user records a KCL consumer delivers, in stream order.
    pub records: Vec<kinesis_aggregation::DeaggregatedRecord>,
    /// The user records of aggregates the KCL rule drops.
    pub dropped: Vec<kinesis_aggregation::DeaggregatedRecord>,
}

/// Reads every shard (open or closed) of a stream as a KCL consumer would see it.
pub async fn read_shards(
    client: &aws_sdk_kinesis::Client,
    name: &str,
) -> Result<Vec<ShardRead>, BoxError> {
    let mut out = Vec::new();
    for shard in list_all_shards(client, name).await? {
        let range = shard
            .hash_key_range()
            .ok_or("shard without hash key range")?;
        let range = kinesis_aggregation::HashKeyRange::parse(
            range.starting_hash_key(),
            range.ending_hash_key(),
        )?;
        let mut read = ShardRead {
            shard_id: shard.shard_id().to_owned(),
            range,
            closed: shard
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_some()),
            records: Vec::new(),
            dropped: Vec::new(),
        };
        for record in read_shard(client, name, shard.shard_id()).await? {
            let users = kinesis_aggregation::deaggregate(record.into());
            if users.iter().all(|user| range.admits(user)) {
                read.records.extend(users);
            } else {
                read.dropped.extend(users);
            }
        }
        out.push(read);
    }
    Ok(out)
}

/// The open shards (no ending sequence number, whatever `ShardFilter` a stand-in honours),
/// sorted by starting hash key: (id, starting hash key, ending hash key).
pub async fn open_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(String, u128, u128)>, BoxError> {
    let listed = client
        .list_shards()
        .stream_name(stream)
        .max_results(1000)
        .send()
        .await?;
    let mut open = Vec::new();
    for shard in listed.shards() {
        if shard
            .sequence_number_range()
            .is_some_and(|r| r.ending_sequence_number().is_some())
        {
            continue;
        }
        let range = shard
            .hash_key_range()
            .ok_or("a shard without a hash-key range")?;
        open.push((
            shard.shard_id().to_owned(),
            range.starting_hash_key().parse()?,
            range.ending_hash_key().parse()?,
        ));
    }
    open.sort_by_key(|s| s.1);
    Ok(open)
}

/// The resharding the resharding and churn tests run while records flow: waits `phase`, splits
/// the first open shard in the middle, waits `phase`, merges the second and third open shards (a
/// child of the split and its neighbour), and waits `phase` again; each change waits for
/// `ACTIVE`.
pub async fn split_then_merge(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    phase: Duration,
) -> Result<(), BoxError> {
    tokio::time::sleep(phase).await;
    let shards = open_shards(client, stream).await?;
    let (first, start, end) = shards.first().cloned().ok_or("no open shard")?;
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&first)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await?;
    wait_for_stream(client, stream).await?;
    tokio::time::sleep(phase).await;
    let shards = open_shards(client, stream).await?;
    if shards.len() < 3 {
        return Err(
            format!("3 open shards or more expected after the split, found {shards:?}").into(),
        );
    }
    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(&shards[1].0)
        .adjacent_shard_to_merge(&shards[2].0)
        .send()
        .await?;
    wait_for_stream(client, stream).await?;
    tokio::time::sleep(phase).await;
    Ok(())
}
