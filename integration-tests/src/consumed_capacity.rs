//! What DynamoDB itself says a workload consumed: a loopback proxy in front of a DynamoDB
//! stand-in that asks for `ReturnConsumedCapacity: TOTAL` on every call that takes it and sums
//! the `ConsumedCapacity.CapacityUnits` of the answers, per operation, so that a benchmark reports
//! DynamoDB's own figures instead of estimating them from call counts and item sizes.
//!
//! ```text
//!  SDK client ──▶ CapacityProxy (127.0.0.1:0)                       ──▶ DynamoDB Local
//!                  │ request: "ReturnConsumedCapacity":"TOTAL" added
//!                  │   where absent (or NONE) and the operation takes it
//!                  │ answer:  ConsumedCapacity.CapacityUnits summed      ◀──
//!                  ▼          per operation; the body passed on untouched
//!                CapacityMeter ── snapshot ──▶ CapacityTally (reads, writes, failed writes)
//! ```
//!
//! Only the request's JSON body changes (and its `Content-Length`): the stand-ins check that a
//! SigV4 signature is present, not that it matches the body. Answers reach the client byte for
//! byte (the SDK checks DynamoDB's `x-amz-crc32`), so a client that did not ask for the capacity
//! sees a field it ignores.
//!
//! A conditional write whose condition fails is charged by DynamoDB (at least one write unit),
//! but its error answer carries no `ConsumedCapacity`: such failures are counted apart
//! ([`OperationTally::conditional_failures`]) so that a report can add them, labelled as computed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::error::HarnessError;
use crate::fault::engine::operation_name;
use crate::proxy::{Upstream, forward};
use crate::serve::{BoxError, Server};

/// Which kind of capacity an operation consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Read units: `GetItem`, `Query`, `Scan`, `BatchGetItem`, `TransactGetItems`.
    Read,
    /// Write units: `PutItem`, `UpdateItem`, `DeleteItem`, `BatchWriteItem`,
    /// `TransactWriteItems`.
    Write,
    /// PartiQL statements (either kind, DynamoDB does not say which).
    Either,
}

/// The side of `operation` if it takes `ReturnConsumedCapacity` (`CreateTable`, `DescribeTable`
/// and the other control-plane calls do not, and consume nothing).
pub fn side(operation: &str) -> Option<Side> {
    match operation {
        "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems" => Some(Side::Read),
        "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems" => {
            Some(Side::Write)
        }
        "ExecuteStatement" | "BatchExecuteStatement" | "ExecuteTransaction" => Some(Side::Either),
        _ => None,
    }
}

/// `body` (a DynamoDB JSON request) asking for `"ReturnConsumedCapacity":"TOTAL"`, or `None`
/// when it already asks for it (`TOTAL` or `INDEXES`) or is not a JSON object. An explicit
/// `NONE` is replaced: the proxy is there to count.
pub fn ask_for_total(body: &[u8]) -> Option<Vec<u8>> {
    let mut request: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    let asked = request
        .get("ReturnConsumedCapacity")
        .and_then(|v| v.as_str());
    if matches!(asked, Some("TOTAL" | "INDEXES")) {
        return None;
    }
    request.insert(
        "ReturnConsumedCapacity".to_owned(),
        serde_json::Value::String("TOTAL".to_owned()),
    );
    serde_json::to_vec(&request).ok()
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "ConsumedCapacity")]
    consumed: Option<Consumed>,
    #[serde(rename = "__type")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Consumed {
    // Batch and transaction calls answer one entry per table.
    Many(Vec<Capacity>),
    One(Capacity),
}

#[derive(Deserialize)]
struct Capacity {
    #[serde(rename = "CapacityUnits")]
    units: Option<f64>,
}

/// What one answer body says: the capacity units it reports (`None` when it reports none), and
/// the error type for an error answer (`ConditionalCheckFailedException`, without the
/// `com.amazonaws.dynamodb.v20120810#` prefix).
pub fn read_answer(body: &[u8]) -> (Option<f64>, Option<String>) {
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return (None, None);
    };
    let units = answer.consumed.map(|consumed| match consumed {
        Consumed::One(c) => c.units.unwrap_or(0.0),
        Consumed::Many(all) => all.iter().filter_map(|c| c.units).sum(),
    });
    let error = answer
        .error_type
        .map(|t| t.rsplit('#').next().unwrap_or(&t).to_owned());
    (units, error)
}

/// The calls of one operation and what DynamoDB reported for them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OperationTally {
    /// Calls answered (successes and errors).
    pub calls: u64,
    /// Successful answers that reported their consumed capacity.
    pub metered: u64,
    /// The capacity units they reported.
    pub units: f64,
    /// Error answers.
    pub errors: u64,
    /// Of those, `ConditionalCheckFailedException`s: charged by DynamoDB, reported by nobody.
    pub conditional_failures: u64,
}

impl OperationTally {
    fn minus(self, earlier: OperationTally) -> OperationTally {
        OperationTally {
            calls: self.calls.saturating_sub(earlier.calls),
            metered: self.metered.saturating_sub(earlier.metered),
            units: (self.units - earlier.units).max(0.0),
            errors: self.errors.saturating_sub(earlier.errors),
            conditional_failures: self
                .conditional_failures
                .saturating_sub(earlier.conditional_failures),
        }
    }
}

/// Per-operation tallies at one moment (or over an interval, see [`CapacityTally::since`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CapacityTally(pub BTreeMap<String, OperationTally>);

impl CapacityTally {
    /// What happened after `earlier` (a snapshot of the same meter).
    pub fn since(&self, earlier: &CapacityTally) -> CapacityTally {
        CapacityTally(
            self.0
                .iter()
                .map(|(op, now)| {
                    let before = earlier.0.get(op).copied().unwrap_or_default();
                    (op.clone(), now.minus(before))
                })
                .filter(|(_, t)| t.calls > 0)
                .collect(),
        )
    }

    fn sum(&self, wanted: Side, value: impl Fn(&OperationTally) -> f64) -> f64 {
        self.0
            .iter()
            .filter(|(op, _)| side(op) == Some(wanted))
            .map(|(_, t)| value(t))
            .sum()
    }

    /// Read units DynamoDB reported.
    pub fn read_units(&self) -> f64 {
        self.sum(Side::Read, |t| t.units)
    }

    /// Write units DynamoDB reported.
    pub fn write_units(&self) -> f64 {
        self.sum(Side::Write, |t| t.units)
    }

    /// Writes refused by their condition (charged at least one write unit each, not reported).
    pub fn failed_conditional_writes(&self) -> u64 {
        self.sum(Side::Write, |t| t.conditional_failures as f64) as u64
    }

    /// Successful calls of capacity-consuming operations whose answer reported no capacity
    /// (0 when the stand-in honours `ReturnConsumedCapacity`).
    pub fn unmetered(&self) -> u64 {
        self.0
            .iter()
            .filter(|(op, _)| side(op).is_some())
            .map(|(_, t)| (t.calls - t.errors).saturating_sub(t.metered))
            .sum()
    }

    /// Calls of `operation`.
    pub fn calls(&self, operation: &str) -> u64 {
        self.0.get(operation).map_or(0, |t| t.calls)
    }

    /// Units reported for `operation`.
    pub fn units(&self, operation: &str) -> f64 {
        self.0.get(operation).map_or(0.0, |t| t.units)
    }
}

/// The running tallies of a [`CapacityProxy`]; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CapacityMeter(Arc<Mutex<BTreeMap<String, OperationTally>>>);

impl CapacityMeter {
    /// The tallies so far.
    pub fn snapshot(&self) -> CapacityTally {
        CapacityTally(
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    fn record(&self, operation: &str, success: bool, body: &[u8]) {
        let (units, error) = read_answer(body);
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = all.entry(operation.to_owned()).or_default();
        tally.calls += 1;
        if success {
            if let Some(units) = units {
                tally.metered += 1;
                tally.units += units;
            }
        } else {
            tally.errors += 1;
            if error.as_deref() == Some("ConditionalCheckFailedException") {
                tally.conditional_failures += 1;
            }
        }
    }
}

/// A running consumed-capacity proxy; dropping it stops it.
#[derive(Debug)]
pub struct CapacityProxy {
    server: Server,
    endpoint: String,
    meter: CapacityMeter,
}

impl CapacityProxy {
    /// Starts a proxy to `upstream` (an `http://host:port` DynamoDB endpoint) on `127.0.0.1:0`.
    pub async fn start(upstream: &str) -> Result<Self, HarnessError> {
        let target = Upstream::parse(upstream)?;
        let meter = CapacityMeter::default();
        let counting = meter.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            metered(counting.clone(), target.clone(), request.map(Body::new))
        });
        let server = Server::start("consumed-capacity proxy", 0, service).await?;
        let endpoint = server.endpoint();
        Ok(Self {
            server,
            endpoint,
            meter,
        })
    }

    /// The proxy's endpoint, `http://127.0.0.1:<port>`: point SDK clients here.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The proxy's socket address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The tallies.
    pub fn meter(&self) -> &CapacityMeter {
        &self.meter
    }
}

async fn metered(
    meter: CapacityMeter,
    upstream: Upstream,
    request: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let Some(operation) = operation_name(request.headers()) else {
        return forward(upstream, request).await;
    };
    let (mut parts, body) = request.into_parts();
    let mut body = body.collect().await?.to_bytes();
    if side(&operation).is_some()
        && let Some(asking) = ask_for_total(&body)
    {
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(asking.len()));
        body = Bytes::from(asking);
    }
    let response = forward(upstream, Request::from_parts(parts, Body::from(body))).await?;
    if side(&operation).is_none() {
        meter.record(&operation, response.status().is_success(), b"");
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    // A compressed answer is passed on unread (the stand-ins do not compress).
    let readable = !parts.headers.contains_key(CONTENT_ENCODING);
    meter.record(
        &operation,
        parts.status.is_success(),
        if readable { &body } else { b"" },
    );
    Ok(Response::from_parts(parts, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn requests_ask_for_the_total_once() {
        let asked = ask_for_total(br#"{"TableName":"t","Limit":5}"#).unwrap();
        assert_eq!(
            json(&asked),
            serde_json::json!({"TableName": "t", "Limit": 5, "ReturnConsumedCapacity": "TOTAL"})
        );
        assert_eq!(
            ask_for_total(br#"{"TableName":"t","ReturnConsumedCapacity":"TOTAL"}"#),
            None
        );
        assert_eq!(
            ask_for_total(br#"{"TableName":"t","ReturnConsumedCapacity":"INDEXES"}"#),
            None
        );
        let none = ask_for_total(br#"{"TableName":"t","ReturnConsumedCapacity":"NONE"}"#).unwrap();
        assert_eq!(json(&none)["ReturnConsumedCapacity"], "TOTAL");
        assert_eq!(ask_for_total(b"not json"), None);
        assert_eq!(ask_for_total(b"[1]"), None);
    }

    #[test]
    fn only_data_plane_calls_take_it() {
        assert_eq!(side("Scan"), Some(Side::Read));
        assert_eq!(side("UpdateItem"), Some(Side::Write));
        assert_eq!(side("TransactWriteItems"), Some(Side::Write));
        assert_eq!(side("CreateTable"), None);
        assert_eq!(side("DescribeTable"), None);
    }

    #[test]
    fn answers_are_read_whatever_their_shape() {
        assert_eq!(
            read_answer(
                br#"{"Count":2,"Items":[{"leaseKey":{"S":"a"}},{"ConsumedCapacity":{"N":"9"}}],
                    "ConsumedCapacity":{"TableName":"t","CapacityUnits":1.5},"ScannedCount":2}"#
            ),
            (Some(1.5), None)
        );
        assert_eq!(
            read_answer(
                br#"{"ConsumedCapacity":[{"TableName":"a","CapacityUnits":2.0},
                    {"TableName":"b","CapacityUnits":4.0,"Table":{"CapacityUnits":4.0}}]}"#
            ),
            (Some(6.0), None)
        );
        assert_eq!(read_answer(br#"{"Attributes":{}}"#), (None, None));
        assert_eq!(
            read_answer(
                br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"x"}"#
            ),
            (None, Some("ConditionalCheckFailedException".to_owned()))
        );
        assert_eq!(read_answer(b""), (None, None));
    }

    #[test]
    fn tallies_split_reads_writes_and_intervals() {
        let meter = CapacityMeter::default();
        meter.record(
            "Scan",
            true,
            br#"{"ConsumedCapacity":{"CapacityUnits":0.5}}"#,
        );
        let earlier = meter.snapshot();
        meter.record(
            "Scan",
            true,
            br#"{"ConsumedCapacity":{"CapacityUnits":35.0}}"#,
        );
        meter.record(
            "UpdateItem",
            true,
            br#"{"ConsumedCapacity":{"CapacityUnits":1.0}}"#,
        );
        meter.record(
            "UpdateItem",
            false,
            br#"{"__type":"x#ConditionalCheckFailedException"}"#,
        );
        meter.record("GetItem", true, b"{}");
        meter.record("DescribeTable", true, b"");
        let interval = meter.snapshot().since(&earlier);
        assert_eq!(interval.read_units(), 35.0);
        assert_eq!(interval.write_units(), 1.0);
        assert_eq!(interval.failed_conditional_writes(), 1);
        assert_eq!(interval.unmetered(), 1);
        assert_eq!(interval.calls("Scan"), 1);
        assert_eq!(interval.calls("UpdateItem"), 2);
        assert_eq!(interval.calls("DescribeTable"), 1);
        assert_eq!(meter.snapshot().units("Scan"), 35.5);
    }
}
