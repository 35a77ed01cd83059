//! The boundary with the Kinesis API: every call the producer makes, from plain data and turned
//! into plain data (the pipeline's core knows no SDK type). SDK retries are off for `PutRecords`
//! (the producer retries per entry); everything else about the client (credentials, endpoint,
//! region, HTTP) is the application's.

use std::time::Duration;

use aws_sdk_kinesis::{
    Client, config::retry::RetryConfig, primitives::Blob, types::PutRecordsRequestEntry,
};
use aws_smithy_types::body::SdkBody;
use kinesis_calls::{StreamRef, Which, within};

use crate::{
    body, cbor,
    pipeline::{CallFailure, Entry, EntryResult},
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

/// Who writes a `PutRecords` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyWriter {
    /// The SDK serializes the entries (a client of another protocol than `awsJson1_1`).
    Sdk,
    /// [`body::records_body`], JSON.
    Json,
    /// [`cbor::records_body`], CBOR; the answer is read through [`cbor::CborAnswers`].
    Cbor,
}

impl BodyWriter {
    /// The writer for `client` and the wire format chosen.
    pub(crate) fn for_client(client: &Client, format: crate::WireFormat) -> Self {
        match (speaks_json_1_1(client), format) {
            (false, _) => BodyWriter::Sdk,
            (true, crate::WireFormat::Json) => BodyWriter::Json,
            (true, crate::WireFormat::Cbor) => BodyWriter::Cbor,
        }
    }
}

/// Whether the client speaks the `awsJson1_1` protocol, the one [`body::records_body`] writes:
/// the service's own, unless the application chose another (`Config::builder().protocol(..)`).
pub(crate) fn speaks_json_1_1(client: &Client) -> bool {
    client.config().protocol().is_none_or(|protocol| {
        let id = protocol.protocol_id();
        id.namespace() == "aws.protocols" && id.shape_name() == "awsJson1_1"
    })
}

/// The SDK's entries for a call, for a client of another protocol than `awsJson1_1`.
fn request_entries(entries: Vec<Entry>) -> Vec<PutRecordsRequestEntry> {
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

/// Calls `PutRecords` with SDK retries off and a deadline. The answer has one result per entry,
/// in order, or the whole call failed.
///
/// On a client of the `awsJson1_1` protocol (see [`speaks_json_1_1`]) the SDK builds the request
/// from an input without entries (the stream in it still chooses the endpoint), and the body the
/// producer writes (JSON, or CBOR with its content type) takes the place of the one it serialized
/// just before the request is signed; a CBOR answer is read as JSON before the SDK deserializes
/// it. On another protocol the SDK serializes the entries itself.
pub(crate) async fn put_records(
    client: &Client,
    stream: &StreamRef,
    entries: Vec<Entry>,
    writer: BodyWriter,
    timeout: Duration,
) -> Result<Vec<EntryResult>, CallError> {
    let count = entries.len();
    let request = client
        .put_records()
        .set_stream_name(stream.name().map(str::to_owned))
        .set_stream_arn(stream.arn().map(str::to_owned));
    let (request, written) = match writer {
        BodyWriter::Sdk => (request.set_records(Some(request_entries(entries))), None),
        BodyWriter::Json => (
            request.set_records(Some(Vec::new())),
            Some((body::records_body(&entries, stream), None)),
        ),
        BodyWriter::Cbor => (
            request.set_records(Some(Vec::new())),
            Some((
                cbor::records_body(&entries, stream),
                Some(cbor::CONTENT_TYPE),
            )),
        ),
    };
    let mut send = request.customize().config_override(
        aws_sdk_kinesis::config::Builder::default().retry_config(RetryConfig::disabled()),
    );
    if let Some((bytes, content_type)) = written {
        if content_type.is_some() {
            send = send.interceptor(cbor::CborAnswers);
        }
        send = send.mutate_request(move |request| {
            let headers = request.headers_mut();
            headers.insert("Content-Length", bytes.len().to_string());
            if let Some(content_type) = content_type {
                headers.insert("Content-Type", content_type);
            }
            *request.body_mut() = SdkBody::from(bytes.clone());
        });
    }
    let send = send.send();
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::config::{BehaviorVersion, Region};
    use aws_smithy_json::protocol::aws_json_rpc::AwsJsonRpcProtocol;

    fn client(
        configure: impl FnOnce(aws_sdk_kinesis::config::Builder) -> aws_sdk_kinesis::config::Builder,
    ) -> Client {
        let builder = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"));
        Client::from_conf(configure(builder).build())
    }

    #[test]
    fn the_producer_writes_bodies_only_for_clients_of_the_json_1_1_protocol() {
        assert!(
            speaks_json_1_1(&client(|b| b)),
            "the service's own protocol"
        );
        assert!(speaks_json_1_1(&client(
            |b| b.protocol(AwsJsonRpcProtocol::aws_json_1_1())
        )));
        assert!(
            !speaks_json_1_1(&client(|b| b.protocol(AwsJsonRpcProtocol::aws_json_1_0()))),
            "another protocol: the SDK serializes the entries"
        );
    }
}
