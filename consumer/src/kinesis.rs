//! The boundary with the Kinesis API for reading: shard listing, iterators and `GetRecords`,
//! turned into plain data.

use std::{time::Duration, time::SystemTime};

use aws_sdk_kinesis::{Client, primitives::DateTime, types::ShardIteratorType};
use kinesis_aggregation::{HashKeyRange, StreamRecord};
use kinesis_calls::{LIST_SHARDS_PAGE, StreamRef, Which};

use crate::{
    checkpoint::Checkpoint,
    lineage::{ChildShard, ShardDescription},
    sdk_error::CallFailure,
};

/// Every shard of the stream still in retention, closed ones included, every page.
pub(crate) async fn list_shards(
    client: &Client,
    stream: &StreamRef,
    timeout: Duration,
) -> Result<Vec<ShardDescription>, CallFailure> {
    let listed =
        kinesis_calls::list_shards(client, stream, Which::All, LIST_SHARDS_PAGE, timeout).await?;
    Ok(listed
        .into_iter()
        .map(|shard| ShardDescription {
            hash_key_range: shard
                .hash_key_range
                .as_ref()
                .and_then(|(start, end)| HashKeyRange::parse(start, end).ok()),
            parents: shard.parents.into_iter().collect(),
            closed: shard.closed,
            id: shard.id,
        })
        .collect())
}

/// Where to start reading a shard (an iterator, or a subscription).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// From a checkpoint: at its sequence number (records at or before the checkpoint are then
    /// skipped, which resumes inside an aggregate), or the sentinel's position.
    Checkpoint(Checkpoint),
    /// At a sequence number (a subscription's continuation, before any record came).
    At(String),
    /// After a sequence number (the last Kinesis record delivered, or a continuation).
    After(String),
}

impl Start {
    /// The service's starting-point type, with its sequence number or timestamp. `timestamp`
    /// serves `AT_TIMESTAMP`; without one, the oldest record is the safe reading of "from a
    /// time".
    pub(crate) fn to_service(
        &self,
        timestamp: Option<SystemTime>,
    ) -> (ShardIteratorType, Option<&str>, Option<DateTime>) {
        match self {
            Start::At(sequence) => (ShardIteratorType::AtSequenceNumber, Some(sequence), None),
            Start::After(sequence) => {
                (ShardIteratorType::AfterSequenceNumber, Some(sequence), None)
            }
            Start::Checkpoint(Checkpoint::At {
                sequence_number, ..
            }) => (
                ShardIteratorType::AtSequenceNumber,
                Some(sequence_number.as_str()),
                None,
            ),
            Start::Checkpoint(Checkpoint::TrimHorizon | Checkpoint::ShardEnd) => {
                (ShardIteratorType::TrimHorizon, None, None)
            }
            Start::Checkpoint(Checkpoint::Latest) => (ShardIteratorType::Latest, None, None),
            Start::Checkpoint(Checkpoint::AtTimestamp) => match timestamp {
                Some(at) => (
                    ShardIteratorType::AtTimestamp,
                    None,
                    Some(DateTime::from(at)),
                ),
                None => (ShardIteratorType::TrimHorizon, None, None),
            },
        }
    }
}

/// An iterator for `shard_id` from `start`. `timestamp` serves `AT_TIMESTAMP`.
pub(crate) async fn shard_iterator(
    client: &Client,
    stream: &StreamRef,
    shard_id: &str,
    start: &Start,
    timestamp: Option<SystemTime>,
    timeout: Duration,
) -> Result<Option<String>, CallFailure> {
    let (kind, sequence, at) = start.to_service(timestamp);
    let request = client
        .get_shard_iterator()
        .set_stream_name(stream.name().map(str::to_owned))
        .set_stream_arn(stream.arn().map(str::to_owned))
        .shard_id(shard_id)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence.map(str::to_owned))
        .set_timestamp(at);
    Ok(within(timeout, request.send()).await?.shard_iterator)
}

/// One `GetRecords` answer.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) records: Vec<StreamRecord>,
    /// `None` at the end of a closed shard.
    pub(crate) next_iterator: Option<String>,
    pub(crate) millis_behind_latest: Option<i64>,
    /// The children, when the service names them at the shard's end.
    pub(crate) child_shards: Option<Vec<ChildShard>>,
}

/// `GetRecords` with `iterator`.
pub(crate) async fn get_records(
    client: &Client,
    iterator: &str,
    limit: i32,
    timeout: Duration,
) -> Result<Fetched, CallFailure> {
    let output = within(
        timeout,
        client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send(),
    )
    .await?;
    let child_shards = output
        .child_shards
        .map(|children| children.into_iter().map(child_shard).collect());
    Ok(Fetched {
        records: output.records.into_iter().map(StreamRecord::from).collect(),
        next_iterator: output.next_shard_iterator.filter(|i| !i.is_empty()),
        millis_behind_latest: output.millis_behind_latest,
        child_shards: child_shards.filter(|c: &Vec<ChildShard>| !c.is_empty()),
    })
}

/// A child shard as the service names it at the end of its parent.
pub(crate) fn child_shard(child: aws_sdk_kinesis::types::ChildShard) -> ChildShard {
    ChildShard {
        hash_key_range: child
            .hash_key_range
            .as_ref()
            .and_then(|r| HashKeyRange::parse(&r.starting_hash_key, &r.ending_hash_key).ok()),
        parents: child.parent_shards.into_iter().collect(),
        id: child.shard_id,
    }
}

pub(crate) use kinesis_calls::within;
