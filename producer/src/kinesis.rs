//! The boundary with the Kinesis API: every call the producer makes, from plain data and turned
//! into plain data (the pipeline's core knows no SDK type). SDK retries are off for `PutRecords`
//! (the producer retries per entry); everything else about the client (credentials, endpoint,
//! region, HTTP) is the application's.

use std::time::Duration;

use aws_sdk_kinesis::{
    Client, config::retry::RetryConfig, primitives::Blob, types::PutRecordsRequestEntry,
};
use kinesis_calls::{StreamRef, Which, within};

use crate::{
    pipeline::{CallFailure, Entry, EntryResult},
    receipt::Wrote,
    shard_map::ListedShard,
};

pub(crate) use kinesis_calls::{CallError, LIST_SHARDS_PAGE};

/// The SDK's entries for a call (built in the call's task, off the pipeline's).
pub(crate) fn request_entries(entries: Vec<Entry>) -> Vec<PutRecordsRequestEntry> {
    entries
        .into_iter()
        .filter_map(|entry| {
            PutRecordsRequestEntry::builder()
                .partition_key(entry.partition_key)
                .set_explicit_hash_key(entry.explicit_hash_key.map(|k| k.to_string()))
                .data(Blob::new(Vec::from(entry.data)))
                .build()
                .ok()
        })
        .collect()
}

/// A failed call as the pipeline's core takes it.
impl From<CallError> for CallFailure {
    fn from(error: CallError) -> Self {
        CallFailure {
            wrote: wrote(&error),
            kind: error.kind,
            code: error.code,
            message: error.message,
            request_id: error.request_id,
        }
    }
}

/// What a whole call that failed left in the stream: nothing if the service answered with a 4xx
/// or the call was never sent; perhaps everything if no answer came or the service answered
/// with a 5xx.
fn wrote(error: &CallError) -> Wrote {
    if error.may_have_taken_effect() {
        Wrote::Unknown
    } else {
        Wrote::Nothing
    }
}

/// Calls `PutRecords` with SDK retries off and a deadline. The answer has one result per entry,
/// in order, or the whole call failed.
pub(crate) async fn put_records(
    client: &Client,
    stream: &StreamRef,
    entries: Vec<PutRecordsRequestEntry>,
    timeout: Duration,
) -> Result<Vec<EntryResult>, CallError> {
    let count = entries.len();
    let request = client
        .put_records()
        .set_records(Some(entries))
        .set_stream_name(stream.name().map(str::to_owned))
        .set_stream_arn(stream.arn().map(str::to_owned));
    let send = request
        .customize()
        .config_override(
            aws_sdk_kinesis::config::Builder::default().retry_config(RetryConfig::disabled()),
        )
        .send();
    let output = within(timeout, send).await?;
    let records = output.records;
    if records.len() != count {
        return Err(CallError::new(
            kinesis_calls::RESPONSE_ERROR,
            format!("{} results for {count} entries", records.len()),
            None,
        ));
    }
    Ok(records
        .into_iter()
        .map(
            |entry| match (entry.sequence_number, entry.shard_id, entry.error_code) {
                (Some(sequence_number), Some(shard_id), None) => EntryResult::Written {
                    shard_id,
                    sequence_number,
                },
                (_, _, code) => {
                    let code = code.unwrap_or_else(|| "ResponseError".into());
                    EntryResult::Failed {
                        kind: kinesis_calls::classify(&code, None),
                        code,
                        message: entry
                            .error_message
                            .unwrap_or_else(|| "entry without sequence number or shard".into()),
                    }
                }
            },
        )
        .collect())
}

/// Lists the stream's shards (open ones, where the service honours the filter), every page.
/// Shards listed without a hash-key range are left out.
pub(crate) async fn list_shards(
    client: &Client,
    stream: &StreamRef,
    page_size: i32,
    timeout: Duration,
) -> Result<Vec<ListedShard>, CallError> {
    let listed =
        kinesis_calls::list_shards(client, stream, Which::Open, page_size, timeout).await?;
    Ok(listed
        .into_iter()
        .filter_map(|shard| {
            let (start, end) = shard.hash_key_range?;
            Some(ListedShard {
                id: shard.id,
                start,
                end,
                closed: shard.closed,
            })
        })
        .collect())
}

/// The stream's maximum record size in KiB, if it reports one. Also proves the stream exists.
pub(crate) async fn max_record_size_kib(
    client: &Client,
    stream: &StreamRef,
    timeout: Duration,
) -> Result<Option<i32>, CallError> {
    let request = client
        .describe_stream_summary()
        .set_stream_name(stream.name().map(str::to_owned))
        .set_stream_arn(stream.arn().map(str::to_owned));
    let output = within(timeout, request.send()).await?;
    Ok(output
        .stream_description_summary
        .and_then(|s| s.max_record_size_in_kib))
}
