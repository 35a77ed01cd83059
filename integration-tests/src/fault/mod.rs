//! Deterministic fault injection at the HTTP layer.
//!
//! A [`FaultController`] holds [`FaultRule`]s, added and removed while a test runs, and decides
//! for each call which faults apply. Two front-ends apply its decisions: [`layer::FaultLayer`]
//! (tower middleware around the embedded ferrokinesis router) and [`crate::proxy::FaultProxy`]
//! (a loopback HTTP proxy in front of any stand-in). Both go through the same engine, so a rule
//! behaves the same way in front of every stand-in.
//!
//! Every random choice (whether a rule fires, which `PutRecords` entries fail, how long a
//! latency lasts) comes from one ChaCha RNG seeded by the test: the same seed and the same
//! sequence of calls give the same faults. Calls made concurrently reach the controller in an
//! order the test does not control, so reproducible tests issue their calls one at a time.
//!
//! Operations are named as in the `X-Amz-Target` header without the service prefix:
//! `Kinesis_20131202.PutRecords` is `"PutRecords"`, `DynamoDB_20120810.UpdateItem` is
//! `"UpdateItem"`.
//!
//! ```text
//!  request ──▶ operation from X-Amz-Target ──▶ FaultController::plan (rules + seeded RNG)
//!                                                  │
//!     latency ◀────────────────────────────────────┤ (sum of fired latency rules)
//!     error response / dropped connection ◀────────┤ (first fired, nothing forwarded)
//!     PutRecords entries removed ─▶ forward ─▶ error entries spliced back into the response
//!     forward ─▶ response lost (dropped connection after the call was processed)
//!     forward ─▶ status and headers sent, body frames passed for a while, then
//!                stream cut (connection dropped mid-body) or stalled (open and silent)
//!     forward ─▶ event-stream messages rewritten into Kinesis's shard-end form
//! ```
//!
//! The stream faults model a `SubscribeToShard` event stream (an HTTP response that lasts
//! minutes) failing after it started; see [`Fault::CutStream`] and [`Fault::StallStream`].
//! [`Fault::AwsShardEnd`] is not a failure but a translation: it makes a stand-in end a closed
//! shard's subscription the way Kinesis does.
//!
//! The parts: `rule` holds the vocabulary (faults, rules, the faults as injected),
//! `controller` the seeded controller that decides which rules fire on each call, and
//! `plan` how the fired faults combine into what a front-end does with the call.

pub(crate) mod engine;
pub mod layer;

mod controller;
mod plan;
mod put_records;
mod rule;
mod shard_end;
mod stream;

pub use controller::{FaultController, FaultStats, Injection, RuleId};
pub(crate) use plan::{Plan, Terminal};
pub use rule::{
    DropPoint, EntryErrorCode, EntryFailureMode, EntryFailures, Fault, FaultKind, FaultRule,
    Injected, Latency, ServiceError,
};

/// The operation whose entries [`Fault::PutRecordsEntries`] fails.
pub(crate) const PUT_RECORDS: &str = "PutRecords";

/// The error a front-end returns to close a connection without a response.
///
/// hyper closes an HTTP/1.1 connection (and resets an HTTP/2 stream) when the service fails, so
/// the SDK sees the connection end before any response: a dispatch failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for ConnectionDropped {}
