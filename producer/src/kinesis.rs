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
/// it. A CBOR body goes as parts that refer to the entries' large data (no copy of the
/// aggregates), signed with the SHA-256 the producer computes over them. On another protocol the
/// SDK serializes the entries itself.
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
    let mut send = match writer {
        BodyWriter::Sdk => request
            .set_records(Some(request_entries(entries)))
            .customize(),
        BodyWriter::Json => {
            let bytes = body::records_body(&entries, stream);
            request
                .set_records(Some(Vec::new()))
                .customize()
                .mutate_request(move |request| {
                    request
                        .headers_mut()
                        .insert("Content-Length", bytes.len().to_string());
                    *request.body_mut() = SdkBody::from(bytes.clone());
                })
        }
        BodyWriter::Cbor => {
            let body = cbor::records_body_parts(&entries, stream);
            request
                .set_records(Some(Vec::new()))
                .customize()
                .interceptor(cbor::CborRequest { body })
                .interceptor(cbor::CborAnswers)
        }
    };
    send = send.config_override(
        aws_sdk_kinesis::config::Builder::default().retry_config(RetryConfig::disabled()),
    );
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
    use bytes::Bytes;

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

    /// A request as the test connection saw it: method, URI, headers, and its body read to the
    /// end.
    type SeenRequest = (String, String, Vec<(String, String)>, Vec<u8>);

    /// A connection that answers every `PutRecords` call with two written entries, and keeps
    /// the requests.
    #[derive(Clone, Debug, Default)]
    struct Seen {
        requests: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    }

    impl aws_smithy_runtime_api::client::http::HttpConnector for Seen {
        fn call(
            &self,
            request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
        ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
            let seen = self.requests.clone();
            aws_smithy_runtime_api::client::http::HttpConnectorFuture::new(async move {
                let method = request.method().to_owned();
                let uri = request.uri().to_owned();
                let headers = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let mut body = request.into_body();
                let mut bytes = Vec::new();
                while let Some(frame) = std::future::poll_fn(|cx| {
                    http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
                })
                .await
                {
                    let frame = frame.map_err(|e| {
                        aws_smithy_runtime_api::client::result::ConnectorError::other(e, None)
                    })?;
                    if let Ok(data) = frame.into_data() {
                        let data: Bytes = data;
                        bytes.extend_from_slice(&data);
                    }
                }
                seen.lock().unwrap().push((method, uri, headers, bytes));
                let mut answer = aws_smithy_runtime_api::http::Response::new(
                    200.try_into().unwrap(),
                    SdkBody::from(
                        r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shardId-000000000000"},{"SequenceNumber":"2","ShardId":"shardId-000000000000"}]}"#,
                    ),
                );
                answer
                    .headers_mut()
                    .insert("Content-Type", "application/x-amz-json-1.1");
                Ok(answer)
            })
        }
    }

    impl aws_smithy_runtime_api::client::http::HttpClient for Seen {
        fn http_connector(
            &self,
            _settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
            _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
            aws_smithy_runtime_api::client::http::SharedHttpConnector::new(self.clone())
        }
    }

    /// `x-amz-date` (`20231114T221320Z`) as a time.
    fn amz_date(date: &str) -> std::time::SystemTime {
        let n = |r: std::ops::Range<usize>| date[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(4..6), n(6..8));
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + n(9..11) * 3_600 + n(11..13) * 60 + n(13..15);
        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
    }

    /// Each body writer's request is signed as SigV4 signs its bytes: the signature the request
    /// carries is the one computed here over the body as received. A CBOR body sent as parts is
    /// signed with a payload hash the producer computes, so a wrong hash (or parts in another
    /// order than sent) would show here; no stand-in checks signatures. The signature is
    /// computed again with the same `aws-sigv4` crate the SDK uses: this checks the payload hash
    /// and what is signed, not SigV4's canonical form itself.
    #[tokio::test]
    async fn every_body_is_signed_over_the_bytes_sent() {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let entries = vec![
            Entry {
                partition_key: "small".into(),
                explicit_hash_key: None,
                data: Bytes::from(vec![7u8; 100]),
            },
            Entry {
                partition_key: "large".into(),
                explicit_hash_key: Some(kinesis_aggregation::HashKey::from(42u128)),
                data: Bytes::from(vec![9u8; 3 * cbor::REFERENCED_DATA_BYTES]),
            },
        ];
        let credentials =
            aws_sdk_kinesis::config::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        for writer in [BodyWriter::Json, BodyWriter::Sdk, BodyWriter::Cbor] {
            let seen = Seen::default();
            let client = client(|b| {
                b.credentials_provider(credentials.clone())
                    .http_client(seen.clone())
            });
            let stream = StreamRef::Name("signed".into());
            let results = put_records(
                &client,
                &stream,
                entries.clone(),
                writer,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            assert_eq!(results.len(), 2, "{writer:?}");
            let requests = seen.requests.lock().unwrap().clone();
            let [(method, uri, headers, body)] = &requests[..] else {
                panic!("{writer:?}: {} requests", requests.len());
            };
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_else(|| panic!("{writer:?}: no {name}"))
            };
            assert_eq!(
                header("content-length"),
                body.len().to_string(),
                "{writer:?}"
            );
            if writer == BodyWriter::Cbor {
                assert_eq!(header("content-type"), cbor::CONTENT_TYPE);
                assert_eq!(&cbor::records_body(&entries, &stream)[..], &body[..]);
            }
            // The headers the request says it signed (the SDK leaves out its invocation ones).
            let authorization = header("authorization");
            let signed: Vec<&str> = authorization
                .split("SignedHeaders=")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .unwrap_or_else(|| panic!("{writer:?}: {authorization}"))
                .split(';')
                .collect();
            let identity = credentials.clone().into();
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region("eu-west-1")
                .name("kinesis")
                .time(amz_date(header("x-amz-date")))
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let request = SignableRequest::new(
                method,
                uri.as_str(),
                headers
                    .iter()
                    .filter(|(k, _)| signed.iter().any(|s| k.eq_ignore_ascii_case(s)))
                    .map(|(k, v)| (k.as_str(), v.as_str())),
                SignableBody::Bytes(body),
            )
            .unwrap();
            let expected = sign(request, &params).unwrap();
            assert!(
                authorization.ends_with(&format!("Signature={}", expected.signature())),
                "{writer:?}: {authorization} is not signed over the body sent (expected {})",
                expected.signature()
            );
        }
    }
}
