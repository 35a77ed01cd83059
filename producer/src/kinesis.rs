//! The boundary with the Kinesis API: every call the producer makes, from plain data and turned
//! into plain data (the pipeline's core knows no SDK type). SDK retries are off for `PutRecords`
//! (the producer retries per entry); everything else about the client (credentials, endpoint,
//! region, HTTP) is the application's.

use std::time::Duration;

use aws_sdk_kinesis::{Client, config::retry::RetryConfig};
use aws_smithy_types::body::SdkBody;
use kinesis_calls::{StreamRef, Which, within};

use crate::{
    body::RecordsBody,
    pipeline::{CallFailure, EntryResult},
    receipt::Wrote,
    shard_map::ListedShard,
};

pub(crate) use kinesis_calls::{CallError, LIST_SHARDS_PAGE};

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
///
/// The SDK builds the request from an input without entries (the stream in it still chooses the
/// endpoint), and `body`, written by [`records_body`](crate::body::records_body), takes the place
/// of the body it serialized just before the request is signed.
pub(crate) async fn put_records(
    client: &Client,
    stream: &StreamRef,
    body: RecordsBody,
    timeout: Duration,
) -> Result<Vec<EntryResult>, CallError> {
    let count = body.entries;
    let json = body.json;
    let request = client
        .put_records()
        .set_records(Some(Vec::new()))
        .set_stream_name(stream.name().map(str::to_owned))
        .set_stream_arn(stream.arn().map(str::to_owned));
    let send = request
        .customize()
        .config_override(
            aws_sdk_kinesis::config::Builder::default().retry_config(RetryConfig::disabled()),
        )
        .mutate_request(move |request| {
            request
                .headers_mut()
                .insert("Content-Length", json.len().to_string());
            *request.body_mut() = SdkBody::from(json.clone());
        })
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
