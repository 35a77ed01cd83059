//! Applies a [`Plan`] to one HTTP call: the part shared by the tower layer and the proxy.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::{
    ConnectionDropped, EntryFailureMode, FaultController, PUT_RECORDS, Plan, ServiceError,
    Terminal, put_records, shard_end,
};
use crate::serve::BoxError;

/// The content type Kinesis answers with when the request does not say.
const DEFAULT_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The content type of CBOR requests and answers.
const CBOR_CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

fn is_cbor(content_type: &HeaderValue) -> bool {
    content_type
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(CBOR_CONTENT_TYPE))
}

/// A CBOR request's JSON form, as the service reads it: byte strings as base64 strings.
fn cbor_to_json(cbor: &[u8]) -> Option<Vec<u8>> {
    fn convert(value: ciborium::Value) -> Option<serde_json::Value> {
        use ciborium::Value as C;
        use serde_json::Value as J;
        Some(match value {
            C::Null => J::Null,
            C::Bool(b) => J::Bool(b),
            C::Integer(n) => J::from(i64::try_from(i128::from(n)).ok()?),
            C::Float(f) => J::from(f),
            C::Text(t) => J::String(t),
            C::Bytes(b) => {
                use base64::{Engine, engine::general_purpose::STANDARD};
                J::String(STANDARD.encode(b))
            }
            C::Array(items) => J::Array(items.into_iter().map(convert).collect::<Option<_>>()?),
            C::Map(pairs) => J::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| Some((k.into_text().ok()?, convert(v)?)))
                    .collect::<Option<_>>()?,
            ),
            C::Tag(_, inner) => convert(*inner)?,
            _ => return None,
        })
    }
    let value: ciborium::Value = ciborium::from_reader(cbor).ok()?;
    serde_json::to_vec(&convert(value)?).ok()
}

/// A JSON answer's CBOR form (answers hold no blobs here: strings stay text).
fn json_to_cbor(json: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let mut cbor = Vec::new();
    ciborium::into_writer(&value, &mut cbor).ok()?;
    Some(cbor)
}

/// A JSON answer given to a CBOR request: re-encoded in CBOR, as the service answers one.
async fn in_cbor(response: Response<Body>) -> Result<Response<Body>, BoxError> {
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    let Some(cbor) = json_to_cbor(&body) else {
        return Ok(Response::from_parts(parts, Body::from(body)));
    };
    parts.headers.remove("x-amz-crc32");
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(CBOR_CONTENT_TYPE));
    set_length(&mut parts.headers, cbor.len());
    Ok(Response::from_parts(parts, Body::from(cbor)))
}

/// The operation of an AWS JSON call: `X-Amz-Target` without the service prefix.
pub(crate) fn operation_name(headers: &HeaderMap) -> Option<String> {
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    let operation = target.split_once('.').map_or(target, |(_, op)| op);
    Some(operation.to_owned())
}

/// Runs one call through the controller's faults; `forward` sends it to the stand-in.
///
/// Returns `Err(ConnectionDropped)` (boxed) to have the front-end close the connection without a
/// response. A stream fault wraps the forwarded response's body (see [`super::stream`]). Calls
/// without `X-Amz-Target` (health checks) are forwarded untouched and uncounted. `forward` is
/// cloned to make one more call when a shard-end rewrite needs the stand-in's `ListShards` (see
/// [`super::shard_end`]); that call bypasses the faults and is not counted.
pub(crate) async fn apply<F, Fut>(
    controller: &FaultController,
    request: Request<Body>,
    forward: F,
) -> Result<Response<Body>, BoxError>
where
    F: FnOnce(Request<Body>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    let Some(operation) = operation_name(request.headers()) else {
        return forward(request).await;
    };
    let _in_flight = controller.enter(&operation);
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));

    if operation != PUT_RECORDS {
        let plan = controller.plan(&operation, None);
        if let Some(answer) = before_forward(&plan, &content_type).await {
            return answer;
        }
        let (request, listing) = match plan.shard_end {
            Some(_) => listing(request, forward.clone()).await?,
            None => (request, None),
        };
        let response = forward(request).await?;
        return after_forward(&plan, response, listing);
    }

    // PutRecords: the body is needed to count (and maybe remove) entries.
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    // A CBOR request is read as its JSON form; it goes to the stand-in as it came unless entry
    // faults change it, and then in JSON, its answer given back in CBOR.
    let cbor = is_cbor(&content_type);
    let json = if cbor {
        let json = cbor_to_json(&body).map(Bytes::from);
        if json.is_none() {
            // Its entries cannot be counted: entry faults would not apply to it.
            tracing::error!("a CBOR PutRecords request the fault layer cannot read");
        }
        json
    } else {
        Some(body.clone())
    };
    let plan = controller.plan(
        &operation,
        json.as_deref().and_then(put_records::entry_count),
    );
    if let Some(answer) = before_forward(&plan, &content_type).await {
        return answer;
    }
    let Some(entries) = &plan.entries else {
        let response = forward(Request::from_parts(parts, Body::from(body))).await?;
        return after_forward(&plan, response, None);
    };
    let body = match (cbor, json) {
        (true, Some(json)) => {
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            set_length(&mut parts.headers, json.len());
            json
        }
        _ => body,
    };

    let response = match entries.mode {
        EntryFailureMode::Written => {
            let response = forward(Request::from_parts(parts, Body::from(body))).await?;
            rewrite_body(response, |b| {
                put_records::overwrite_failures(b, &entries.failures)
            })
            .await?
        }
        EntryFailureMode::NotWritten if entries.failures.len() >= entries.total => json_response(
            StatusCode::OK,
            &content_type,
            put_records::all_failed(&entries.failures),
        ),
        EntryFailureMode::NotWritten => {
            let failed: Vec<usize> = entries.failures.iter().map(|(i, _)| *i).collect();
            match put_records::without_entries(&body, &failed) {
                Some(reduced) => {
                    set_length(&mut parts.headers, reduced.len());
                    let response = forward(Request::from_parts(parts, Body::from(reduced))).await?;
                    rewrite_body(response, |b| {
                        put_records::splice_failures(b, entries.total, &entries.failures)
                    })
                    .await?
                }
                None => forward(Request::from_parts(parts, Body::from(body))).await?,
            }
        }
    };
    let response = if cbor && !is_cbor_response(&response) {
        in_cbor(response).await?
    } else {
        response
    };
    after_forward(&plan, response, None)
}

fn is_cbor_response(response: &Response<Body>) -> bool {
    response.headers().get(CONTENT_TYPE).is_some_and(is_cbor)
}

/// The `ListShards` call a shard-end rewrite makes at the final event, prepared from the
/// `SubscribeToShard` request (whose small body is read and put back). Not sent until polled.
async fn listing<F, Fut>(
    request: Request<Body>,
    forward: F,
) -> Result<(Request<Body>, Option<shard_end::Listing>), BoxError>
where
    F: FnOnce(Request<Body>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let listing = shard_end::list_shards_request(&parts, &body).map(|list| {
        let listing: shard_end::Listing = Box::pin(async move {
            let response = forward(list).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                return Err(format!("ListShards answered {status}").into());
            }
            Ok(serde_json::from_slice(&body)?)
        });
        listing
    });
    Ok((Request::from_parts(parts, Body::from(body)), listing))
}

/// Sleeps the plan's latency, then answers the call if the plan says it never reaches the
/// stand-in.
async fn before_forward(
    plan: &Plan,
    content_type: &HeaderValue,
) -> Option<Result<Response<Body>, BoxError>> {
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    match &plan.terminal {
        None => None,
        Some(Terminal::Drop) => Some(Err(Box::new(ConnectionDropped))),
        Some(Terminal::Error(error)) => Some(Ok(error_response(error, content_type))),
    }
}

/// Drops the connection if the plan loses the response, or wraps the response's body in the
/// plan's shard-end rewrite (an event stream only) and then its stream fault, whose deadline
/// starts now.
fn after_forward(
    plan: &Plan,
    response: Response<Body>,
    listing: Option<shard_end::Listing>,
) -> Result<Response<Body>, BoxError> {
    if plan.drop_after {
        drop(response);
        return Err(Box::new(ConnectionDropped));
    }
    let response = match &plan.shard_end {
        Some(counts) if is_event_stream(&response) => {
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(CONTENT_LENGTH);
            Response::from_parts(parts, shard_end::wrap(body, counts.clone(), listing))
        }
        _ => response,
    };
    match plan.stream {
        Some(stream) => Ok(response.map(|body| stream.wrap(body))),
        None => Ok(response),
    }
}

/// Whether `response` is a successful event stream (`SubscribeToShard`'s answer).
fn is_event_stream(response: &Response<Body>) -> bool {
    response.status().is_success()
        && response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/vnd.amazon.eventstream"))
}

/// Rewrites a successful response's body with `rewrite`; other responses pass unchanged.
async fn rewrite_body(
    response: Response<Body>,
    rewrite: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Result<Response<Body>, BoxError> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    match rewrite(&body) {
        Some(rewritten) => {
            // A checksum of the original body would no longer match.
            parts.headers.remove("x-amz-crc32");
            set_length(&mut parts.headers, rewritten.len());
            Ok(Response::from_parts(parts, Body::from(rewritten)))
        }
        None => {
            tracing::warn!("PutRecords response not rewritten: unexpected body");
            Ok(Response::from_parts(parts, Body::from(body)))
        }
    }
}

fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

fn request_id() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("00000000-0000-4000-8000-{id:012x}")).unwrap_or(
        HeaderValue::from_static("00000000-0000-4000-8000-000000000000"),
    )
}

/// An answer of `body` (JSON), in CBOR when the request's content type is CBOR.
fn json_response(status: StatusCode, content_type: &HeaderValue, body: Vec<u8>) -> Response<Body> {
    let body = if is_cbor(content_type) {
        json_to_cbor(&body).unwrap_or(body)
    } else {
        body
    };
    let mut response = Response::new(Body::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type.clone());
    headers.insert("x-amzn-RequestId", request_id());
    response
}

/// The awsJson error response for `error`.
pub(crate) fn error_response(error: &ServiceError, content_type: &HeaderValue) -> Response<Body> {
    let body = serde_json::json!({ "__type": error.error_type(), "message": error.message() });
    let mut response = json_response(
        error.status(),
        content_type,
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    if let Ok(value) = HeaderValue::from_str(error.error_type()) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_comes_from_the_target_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(operation_name(&headers), None);
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("Kinesis_20131202.PutRecords"),
        );
        assert_eq!(operation_name(&headers).as_deref(), Some("PutRecords"));
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("DynamoDB_20120810.UpdateItem"),
        );
        assert_eq!(operation_name(&headers).as_deref(), Some("UpdateItem"));
    }

    #[test]
    fn cbor_requests_read_as_json_and_json_answers_go_back_in_cbor() {
        let request = ciborium::Value::Map(vec![
            (
                "Records".into(),
                ciborium::Value::Array(vec![ciborium::Value::Map(vec![
                    ("Data".into(), ciborium::Value::Bytes(b"hi".to_vec())),
                    ("PartitionKey".into(), "k".into()),
                ])]),
            ),
            ("StreamName".into(), "s".into()),
        ]);
        let mut cbor = Vec::new();
        ciborium::into_writer(&request, &mut cbor).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&cbor_to_json(&cbor).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Records": [{"Data": "aGk=", "PartitionKey": "k"}], "StreamName": "s"})
        );
        assert_eq!(
            put_records::entry_count(&cbor_to_json(&cbor).unwrap()),
            Some(1)
        );
        assert_eq!(cbor_to_json(b"{}"), None, "JSON is not CBOR");
        let answer =
            br#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"s-0"}]}"#;
        let back: ciborium::Value =
            ciborium::from_reader(&json_to_cbor(answer).unwrap()[..]).unwrap();
        let expected: serde_json::Value = serde_json::from_slice(answer).unwrap();
        let back: serde_json::Value = back.deserialized().unwrap();
        assert_eq!(back, expected);
        assert!(is_cbor(&HeaderValue::from_static(
            "Application/X-Amz-Cbor-1.1; x=y"
        )));
        assert!(!is_cbor(&HeaderValue::from_static(
            "application/x-amz-json-1.1"
        )));
    }

    /// An error answered to a CBOR request is in CBOR, its type in the header too.
    #[tokio::test]
    async fn error_responses_to_cbor_requests_are_in_cbor() {
        let response = error_response(
            &ServiceError::throttling(),
            &HeaderValue::from_static(CBOR_CONTENT_TYPE),
        );
        assert_eq!(response.headers()[CONTENT_TYPE], CBOR_CONTENT_TYPE);
        assert_eq!(
            response.headers()["x-amzn-ErrorType"],
            "ThrottlingException"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: ciborium::Value = ciborium::from_reader(&body[..]).unwrap();
        let value: serde_json::Value = value.deserialized().unwrap();
        assert_eq!(value["__type"], "ThrottlingException");
    }

    #[tokio::test]
    async fn error_responses_carry_type_header_and_body() {
        let response = error_response(
            &ServiceError::throttling(),
            &HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()["x-amzn-ErrorType"],
            "ThrottlingException"
        );
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/x-amz-json-1.0"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["__type"], "ThrottlingException");
    }
}
