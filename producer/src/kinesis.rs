//! The boundary with the Kinesis API: every call the producer makes, turned into plain data.
//! SDK retries are off for `PutRecords` (the producer retries per entry); everything else about
//! the client (credentials, endpoint, region, HTTP) is the application's.

use std::time::Duration;

use aws_sdk_kinesis::{
    Client,
    config::{http::HttpResponse, retry::RetryConfig},
    error::{ProvideErrorMetadata, SdkError},
    operation::RequestId,
    types::{PutRecordsRequestEntry, ShardFilter, ShardFilterType},
};

use crate::{
    config::StreamRef,
    error::BoxError,
    receipt::Wrote,
    retry::{ErrorClass, classify},
    shard_map::ListedShard,
};

/// `ListShards` page size: the service maximum, so that stand-ins that cannot page with a bare
/// `NextToken` still answer in one page.
pub(crate) const LIST_SHARDS_PAGE: i32 = 10_000;

/// A failed call, reduced to what the producer decides on.
#[derive(Debug)]
pub(crate) struct CallError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) status: Option<u16>,
    pub(crate) request_id: Option<String>,
    pub(crate) source: Option<BoxError>,
}

impl CallError {
    pub(crate) fn class(&self) -> ErrorClass {
        classify(&self.code, self.status)
    }

    /// What a whole call that failed so left in the stream: nothing if the service answered
    /// with a 4xx or the call was never sent; perhaps everything if no answer came or the
    /// service answered with a 5xx.
    pub(crate) fn wrote(&self) -> Wrote {
        match self.status {
            Some(status) if status >= 500 => Wrote::Unknown,
            Some(_) => Wrote::Nothing,
            None => match self.code.as_str() {
                // Built or dispatched wrongly: nothing went out.
                "DispatchFailure" | "ConstructionFailure" => Wrote::Nothing,
                _ => Wrote::Unknown,
            },
        }
    }

    fn timeout(after: Duration) -> Self {
        CallError {
            code: "RequestTimeout".into(),
            message: format!("no answer within {after:?}"),
            status: None,
            request_id: None,
            source: None,
        }
    }

    fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        SdkError<E, HttpResponse>: RequestId,
    {
        let request_id = err.request_id().map(str::to_owned);
        let (code, message, status) = match &err {
            SdkError::ServiceError(service) => (
                service.err().code().unwrap_or("Unknown").to_owned(),
                service.err().message().unwrap_or_default().to_owned(),
                None,
            ),
            SdkError::TimeoutError(_) => {
                ("RequestTimeout".into(), "the SDK timed out".into(), None)
            }
            SdkError::DispatchFailure(failure) => {
                let code = if failure.is_timeout() {
                    "RequestTimeout"
                } else if failure.is_user() {
                    "DispatchFailure"
                } else {
                    // I/O errors and connections closed before the answer.
                    "ConnectionError"
                };
                (code.to_owned(), format!("{:?}", failure), None)
            }
            SdkError::ResponseError(_) => {
                ("ResponseError".into(), "unreadable response".into(), None)
            }
            SdkError::ConstructionFailure(_) => (
                "ConstructionFailure".into(),
                "the request could not be built".into(),
                None,
            ),
            _ => ("Unknown".into(), err.to_string(), None),
        };
        let status = status.or_else(|| err.raw_response().map(|r| r.status().as_u16()));
        CallError {
            code,
            message,
            status,
            request_id,
            source: Some(Box::new(err)),
        }
    }
}

/// One entry of a `PutRecords` answer.
#[derive(Debug)]
pub(crate) enum EntryResult {
    Written {
        shard_id: String,
        sequence_number: String,
    },
    Failed {
        code: String,
        message: String,
    },
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
    let request = client.put_records().set_records(Some(entries));
    let request = match stream {
        StreamRef::Name(name) => request.stream_name(name),
        StreamRef::Arn(arn) => request.stream_arn(arn),
    };
    let send = request
        .customize()
        .config_override(
            aws_sdk_kinesis::config::Builder::default().retry_config(RetryConfig::disabled()),
        )
        .send();
    let output = match tokio::time::timeout(timeout, send).await {
        Err(_) => return Err(CallError::timeout(timeout)),
        Ok(Err(err)) => return Err(CallError::from_sdk(err)),
        Ok(Ok(output)) => output,
    };
    let records = output.records;
    if records.len() != count {
        return Err(CallError {
            code: "ResponseError".into(),
            message: format!("{} results for {count} entries", records.len()),
            status: None,
            request_id: None,
            source: None,
        });
    }
    Ok(records
        .into_iter()
        .map(
            |entry| match (entry.sequence_number, entry.shard_id, entry.error_code) {
                (Some(sequence_number), Some(shard_id), None) => EntryResult::Written {
                    shard_id,
                    sequence_number,
                },
                (_, _, code) => EntryResult::Failed {
                    code: code.unwrap_or_else(|| "ResponseError".into()),
                    message: entry
                        .error_message
                        .unwrap_or_else(|| "entry without sequence number or shard".into()),
                },
            },
        )
        .collect())
}

/// Lists the stream's shards (open ones, where the service honours the filter), every page.
pub(crate) async fn list_shards(
    client: &Client,
    stream: &StreamRef,
    page_size: i32,
    timeout: Duration,
) -> Result<Vec<ListedShard>, CallError> {
    let mut listed = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let request = client.list_shards().max_results(page_size);
        // A page after the first carries the token alone: the service rejects a stream name
        // next to it.
        let request = match next_token.take() {
            Some(token) => request.next_token(token),
            None => {
                let filter = ShardFilter::builder()
                    .r#type(ShardFilterType::AtLatest)
                    .build()
                    .map_err(|e| CallError {
                        code: "ConstructionFailure".into(),
                        message: e.to_string(),
                        status: None,
                        request_id: None,
                        source: Some(Box::new(e)),
                    })?;
                let request = request.shard_filter(filter);
                match stream {
                    StreamRef::Name(name) => request.stream_name(name),
                    StreamRef::Arn(arn) => request.stream_arn(arn),
                }
            }
        };
        let output = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => return Err(CallError::timeout(timeout)),
            Ok(Err(err)) => return Err(CallError::from_sdk(err)),
            Ok(Ok(output)) => output,
        };
        for shard in output.shards.unwrap_or_default() {
            let Some(range) = shard.hash_key_range else {
                continue;
            };
            listed.push(ListedShard {
                closed: shard
                    .sequence_number_range
                    .is_some_and(|r| r.ending_sequence_number.is_some()),
                id: shard.shard_id,
                start: range.starting_hash_key,
                end: range.ending_hash_key,
            });
        }
        match output.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => return Ok(listed),
        }
    }
}

/// The stream's maximum record size in KiB, if it reports one. Also proves the stream exists.
pub(crate) async fn max_record_size_kib(
    client: &Client,
    stream: &StreamRef,
    timeout: Duration,
) -> Result<Option<i32>, CallError> {
    let request = client.describe_stream_summary();
    let request = match stream {
        StreamRef::Name(name) => request.stream_name(name),
        StreamRef::Arn(arn) => request.stream_arn(arn),
    };
    match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => Err(CallError::timeout(timeout)),
        Ok(Err(err)) => Err(CallError::from_sdk(err)),
        Ok(Ok(output)) => Ok(output
            .stream_description_summary
            .and_then(|s| s.max_record_size_in_kib)),
    }
}
