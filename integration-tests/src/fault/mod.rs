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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::StatusCode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) mod engine;
pub mod layer;
mod put_records;
mod shard_end;
mod stream;

use shard_end::ShardEndCounts;
use stream::{StreamEnd, StreamPlan};

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

/// A fault to inject into matching calls.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Fail some entries of a `PutRecords` call (the call itself answers 200). Only applies to
    /// `PutRecords`, whatever the rule's operation.
    PutRecordsEntries(EntryFailures),
    /// Answer the whole call with an error response, without forwarding it.
    Error(ServiceError),
    /// Wait before forwarding the call.
    Latency(Latency),
    /// Close the connection without a response.
    DropConnection(DropPoint),
    /// Forward the call and send the response's status and headers; pass its body through for
    /// this long (from when the response is returned), then fail the body so the connection is
    /// dropped mid-body. A body that ends sooner ends normally.
    CutStream(Duration),
    /// Forward the call and send the response's status and headers; pass its body through for
    /// this long (from when the response is returned), then send nothing more and never end the
    /// body: the connection stays open and silent. The stand-in's body is dropped then, so it
    /// stops producing.
    StallStream(Duration),
    /// Forward the call and rewrite its `SubscribeToShard` event stream into Kinesis's
    /// shard-end form. ferrokinesis names a closed shard's children in every event and ends the
    /// stream after an event without records; Kinesis names them only in a final event whose
    /// `ContinuationSequenceNumber` is null, then closes the stream. So an event with records
    /// loses its `ChildShards`, an event without records but with children gets a null
    /// continuation and ends the body; the children's `ParentShards` in that final event are
    /// taken from a `ListShards` call to the stand-in, as ferrokinesis names only one parent of
    /// a merge child in its adjacent parent's events. Other messages, other events and error
    /// responses pass unchanged. See [`FaultStats::aws_shard_ends`].
    AwsShardEnd,
}

impl Fault {
    /// A fixed latency before forwarding.
    pub fn latency(delay: Duration) -> Self {
        Self::Latency(Latency::Fixed(delay))
    }

    /// A latency drawn uniformly from `min..=max` for each call.
    pub fn latency_between(min: Duration, max: Duration) -> Self {
        Self::Latency(Latency::Uniform { min, max })
    }

    /// Drop the connection before forwarding: the call is never processed.
    pub fn drop_request() -> Self {
        Self::DropConnection(DropPoint::BeforeForward)
    }

    /// Drop the connection after forwarding: the call was processed, its response is lost.
    pub fn drop_response() -> Self {
        Self::DropConnection(DropPoint::AfterForward)
    }

    /// Drop the connection `after` the response started (a subscription cut mid-stream).
    pub fn cut_stream_after(after: Duration) -> Self {
        Self::CutStream(after)
    }

    /// Stop sending the response's body `after` it started, keeping the connection open (a
    /// silent subscription).
    pub fn stall_stream_after(after: Duration) -> Self {
        Self::StallStream(after)
    }

    /// End closed shards' subscriptions as Kinesis does (see [`Fault::AwsShardEnd`]).
    pub fn aws_shard_end() -> Self {
        Self::AwsShardEnd
    }
}

/// Where a dropped connection happens relative to forwarding the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropPoint {
    /// Before forwarding: nothing reached the stand-in.
    BeforeForward,
    /// After the stand-in answered: the call took effect but the client never learns it.
    AfterForward,
}

/// How long an injected latency lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly distributed in `min..=max`, drawn from the seeded RNG.
    Uniform {
        /// Shortest latency.
        min: Duration,
        /// Longest latency.
        max: Duration,
    },
}

impl Latency {
    fn draw(&self, rng: &mut ChaCha8Rng) -> Duration {
        match *self {
            Latency::Fixed(delay) => delay,
            Latency::Uniform { min, max } if max <= min => min,
            Latency::Uniform { min, max } => {
                let low = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
                let high = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.random_range(low..=high))
            }
        }
    }
}

/// The error code of a failed `PutRecords` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryErrorCode {
    /// `ProvisionedThroughputExceededException`: the shard's write limit was hit.
    ProvisionedThroughputExceeded,
    /// `InternalFailure`: a service-side failure for this entry.
    InternalFailure,
}

impl EntryErrorCode {
    /// The `ErrorCode` string Kinesis puts in the entry.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryErrorCode::ProvisionedThroughputExceeded => {
                "ProvisionedThroughputExceededException"
            }
            EntryErrorCode::InternalFailure => "InternalFailure",
        }
    }

    /// The `ErrorMessage` the harness puts in the entry (in Kinesis's wording).
    pub fn message(self) -> &'static str {
        match self {
            EntryErrorCode::ProvisionedThroughputExceeded => {
                "Rate exceeded for shard in stream under account 000000000000 (injected fault)."
            }
            EntryErrorCode::InternalFailure => "Internal service failure (injected fault).",
        }
    }
}

/// Whether failed `PutRecords` entries are really kept out of the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EntryFailureMode {
    /// The failed entries are removed from the request before it is forwarded, and error
    /// entries are spliced back into the response at their positions: what the client is told
    /// failed was really not written, as with Kinesis. The default.
    #[default]
    NotWritten,
    /// The whole call is forwarded and the response rewritten afterwards: the "failed" entries
    /// were in fact written, so a retried entry appears twice in the stream. Tests using this
    /// mode must tolerate duplicates (as consumers of Kinesis must anyway).
    Written,
}

#[derive(Clone, Debug, PartialEq)]
enum EntrySelection {
    Probability(f64),
    Indices(Vec<usize>),
}

/// Which entries of a `PutRecords` call fail, with which error code, and whether they are
/// written anyway (see [`EntryFailureMode`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EntryFailures {
    selection: EntrySelection,
    codes: Vec<EntryErrorCode>,
    mode: EntryFailureMode,
}

impl EntryFailures {
    /// Each entry fails independently with probability `p` (clamped to `0.0..=1.0`).
    /// Defaults: `ProvisionedThroughputExceeded`, [`EntryFailureMode::NotWritten`].
    pub fn probability(p: f64) -> Self {
        Self {
            selection: EntrySelection::Probability(clamp_probability(p)),
            codes: vec![EntryErrorCode::ProvisionedThroughputExceeded],
            mode: EntryFailureMode::default(),
        }
    }

    /// Every entry fails.
    pub fn all() -> Self {
        Self::probability(1.0)
    }

    /// The entries at these positions fail (positions past the end of a call are ignored).
    pub fn indices(indices: impl IntoIterator<Item = usize>) -> Self {
        let mut indices: Vec<usize> = indices.into_iter().collect();
        indices.sort_unstable();
        indices.dedup();
        Self {
            selection: EntrySelection::Indices(indices),
            ..Self::all()
        }
    }

    /// Failed entries get this error code.
    pub fn code(self, code: EntryErrorCode) -> Self {
        self.codes([code])
    }

    /// Each failed entry gets one of these codes, drawn from the seeded RNG (an empty list means
    /// `ProvisionedThroughputExceeded`).
    pub fn codes(mut self, codes: impl IntoIterator<Item = EntryErrorCode>) -> Self {
        self.codes = codes.into_iter().collect();
        if self.codes.is_empty() {
            self.codes
                .push(EntryErrorCode::ProvisionedThroughputExceeded);
        }
        self
    }

    /// Sets whether the failed entries are written anyway.
    pub fn mode(mut self, mode: EntryFailureMode) -> Self {
        self.mode = mode;
        self
    }

    /// Shorthand for `mode(EntryFailureMode::Written)`.
    pub fn written(self) -> Self {
        self.mode(EntryFailureMode::Written)
    }

    fn choose(&self, total: usize, rng: &mut ChaCha8Rng) -> Vec<(usize, EntryErrorCode)> {
        let indices: Vec<usize> = match &self.selection {
            EntrySelection::Probability(p) if *p >= 1.0 => (0..total).collect(),
            EntrySelection::Probability(p) => (0..total).filter(|_| rng.random_bool(*p)).collect(),
            EntrySelection::Indices(indices) => {
                indices.iter().copied().filter(|&i| i < total).collect()
            }
        };
        indices
            .into_iter()
            .map(|index| {
                let code = match self.codes.as_slice() {
                    [] => EntryErrorCode::ProvisionedThroughputExceeded,
                    [only] => *only,
                    many => many[rng.random_range(0..many.len())],
                };
                (index, code)
            })
            .collect()
    }
}

/// A whole-call error response in the awsJson wire format: `{"__type": ..., "message": ...}`
/// with the `x-amzn-ErrorType` header, so the SDK parses it into the modeled (or unmodeled)
/// error of that name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceError {
    status: StatusCode,
    error_type: String,
    message: String,
}

impl ServiceError {
    /// Any error: HTTP `status`, error code `error_type`, and `message`.
    pub fn new(
        status: StatusCode,
        error_type: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// HTTP 500 `InternalFailure` (Kinesis's generic server error; retryable).
    pub fn internal_failure() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "Internal service failure (injected fault).",
        )
    }

    /// HTTP 500 `InternalServerError` (DynamoDB's modeled server error).
    pub fn internal_server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error (injected fault).",
        )
    }

    /// HTTP 503 `ServiceUnavailable`.
    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "Service unavailable (injected fault).",
        )
    }

    /// HTTP 400 `ProvisionedThroughputExceededException` (Kinesis write or read throttling,
    /// DynamoDB throughput).
    pub fn provisioned_throughput_exceeded() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "Rate exceeded (injected fault).",
        )
    }

    /// HTTP 400 `LimitExceededException` (Kinesis control-plane throttling, e.g. ListShards).
    pub fn limit_exceeded() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "LimitExceededException",
            "Rate exceeded for stream (injected fault).",
        )
    }

    /// HTTP 400 `ThrottlingException` (DynamoDB control-plane and on-demand throttling).
    pub fn throttling() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput (injected fault).",
        )
    }

    /// HTTP 400 `ExpiredIteratorException` (a GetRecords shard iterator older than 5 minutes).
    pub fn expired_iterator() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ExpiredIteratorException",
            "Iterator expired (injected fault).",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code (`__type`).
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A fault rule: which calls it matches, how often it fires, and the fault.
///
/// A matching call is a candidate when it is among the rule's [`first`](FaultRule::first) `n`
/// matching calls (if set) and its position is a multiple of [`every`](FaultRule::every); a
/// candidate fires with the rule's [`probability`](FaultRule::probability).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    operation: Option<String>,
    probability: f64,
    first: Option<u64>,
    every: u64,
    fault: Fault,
}

impl FaultRule {
    /// A rule matching every operation, firing on every call.
    pub fn new(fault: Fault) -> Self {
        Self {
            operation: None,
            probability: 1.0,
            first: None,
            every: 1,
            fault,
        }
    }

    /// A rule matching `operation` (e.g. `"PutRecords"`, `"UpdateItem"`), firing on every call.
    pub fn on(operation: impl Into<String>, fault: Fault) -> Self {
        Self::new(fault).operation(operation)
    }

    /// Restricts the rule to one operation.
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    /// Fires with probability `p` (clamped to `0.0..=1.0`; default 1).
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = clamp_probability(p);
        self
    }

    /// Only the first `n` matching calls are candidates ("fail the first n calls").
    pub fn first(mut self, n: u64) -> Self {
        self.first = Some(n);
        self
    }

    /// Only every `n`-th matching call is a candidate: the `n`-th, `2n`-th, ... (0 or 1: all).
    pub fn every(mut self, n: u64) -> Self {
        self.every = n.max(1);
        self
    }

    /// The fault this rule injects.
    pub fn fault(&self) -> &Fault {
        &self.fault
    }

    fn applies_to(&self, operation: &str) -> bool {
        if matches!(self.fault, Fault::PutRecordsEntries(_)) && operation != PUT_RECORDS {
            return false;
        }
        self.operation.as_deref().is_none_or(|op| op == operation)
    }
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// Identifies a rule added to a [`FaultController`], to remove it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u64);

/// The kinds of fault, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `PutRecords` entries failed (one count per call; see [`FaultStats::failed_entries`]).
    EntryFailures,
    /// A whole-call error response.
    Error,
    /// A latency.
    Latency,
    /// A connection dropped before forwarding.
    DropBeforeForward,
    /// A connection dropped after forwarding.
    DropAfterForward,
    /// A response body cut mid-stream.
    CutStream,
    /// A response body stalled mid-stream.
    StallStream,
    /// An event stream rewritten into Kinesis's shard-end form (one count per call).
    AwsShardEnd,
}

/// One injected fault, as recorded in the controller's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injected {
    /// These `PutRecords` entries (position, code) failed.
    EntryFailures {
        /// Failed entries, by position in the request, in increasing order.
        failures: Vec<(usize, EntryErrorCode)>,
        /// Whether they were written anyway.
        mode: EntryFailureMode,
    },
    /// The call was answered with this error.
    Error(ServiceError),
    /// The call was delayed this long.
    Latency(Duration),
    /// The connection was dropped before forwarding.
    DropBeforeForward,
    /// The connection was dropped after forwarding.
    DropAfterForward,
    /// The response body was to be cut this long after the response was returned (it ended
    /// normally if the stand-in's body ended first).
    CutStream(Duration),
    /// The response body was to stall this long after the response was returned (it ended
    /// normally if the stand-in's body ended first).
    StallStream(Duration),
    /// The response's event stream was rewritten into Kinesis's shard-end form (whether the
    /// shard ended during the call is counted in [`FaultStats::aws_shard_ends`]).
    AwsShardEnd,
}

impl Injected {
    /// The kind of this fault.
    pub fn kind(&self) -> FaultKind {
        match self {
            Injected::EntryFailures { .. } => FaultKind::EntryFailures,
            Injected::Error(_) => FaultKind::Error,
            Injected::Latency(_) => FaultKind::Latency,
            Injected::DropBeforeForward => FaultKind::DropBeforeForward,
            Injected::DropAfterForward => FaultKind::DropAfterForward,
            Injected::CutStream(_) => FaultKind::CutStream,
            Injected::StallStream(_) => FaultKind::StallStream,
            Injected::AwsShardEnd => FaultKind::AwsShardEnd,
        }
    }
}

/// An entry of the controller's history: which fault hit which call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The call's number among all calls the controller saw, from 1.
    pub call: u64,
    /// The call's operation.
    pub operation: String,
    /// The fault.
    pub fault: Injected,
}

/// Counts kept by a [`FaultController`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Calls seen, per operation.
    pub calls: BTreeMap<String, u64>,
    /// Faults injected, per kind.
    pub injected: BTreeMap<FaultKind, u64>,
    /// `PutRecords` entries failed, over all calls.
    pub failed_entries: u64,
    /// Final `SubscribeToShard` events rewritten by [`Fault::AwsShardEnd`]: a null continuation
    /// with the children, the stream ended after it. One per shard end the client was shown.
    pub aws_shard_ends: u64,
    /// `SubscribeToShard` events with records whose `ChildShards` [`Fault::AwsShardEnd`]
    /// removed.
    pub children_withheld: u64,
    /// Final events whose children's `ParentShards` [`Fault::AwsShardEnd`] corrected from
    /// `ListShards` (ferrokinesis names only one parent of a merge child in the adjacent
    /// parent's events).
    pub parents_completed: u64,
}

/// The shared, seeded decision-maker of fault injection: holds the rules, decides each call's
/// faults, and counts calls and injections. Share it as `Arc<FaultController>`.
#[derive(Debug)]
pub struct FaultController {
    state: Mutex<State>,
    /// Counted by the response bodies [`Fault::AwsShardEnd`] wraps, after the call's plan.
    shard_ends: Arc<ShardEndCounts>,
}

#[derive(Debug)]
struct State {
    seed: u64,
    rng: ChaCha8Rng,
    next_rule: u64,
    rules: Vec<ActiveRule>,
    calls: u64,
    stats: FaultStats,
    history: Vec<Injection>,
}

#[derive(Debug)]
struct ActiveRule {
    id: RuleId,
    rule: FaultRule,
    matched: u64,
}

/// What the engine does with one call.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) latency: Duration,
    pub(crate) terminal: Option<Terminal>,
    pub(crate) entries: Option<EntryPlan>,
    pub(crate) drop_after: bool,
    pub(crate) stream: Option<StreamPlan>,
    /// Rewrite the event stream into Kinesis's shard-end form, counting into these.
    pub(crate) shard_end: Option<Arc<ShardEndCounts>>,
}

impl Plan {
    /// Sets the stream fault unless one is set already; returns whether it was set.
    fn stream_fault(&mut self, end: StreamEnd, after: Duration) -> bool {
        let first = self.stream.is_none();
        if first {
            self.stream = Some(StreamPlan { end, after });
        }
        first
    }
}

/// A fault that answers the call without forwarding it.
#[derive(Debug)]
pub(crate) enum Terminal {
    Error(ServiceError),
    Drop,
}

/// The `PutRecords` entries to fail in one call.
#[derive(Debug)]
pub(crate) struct EntryPlan {
    pub(crate) total: usize,
    pub(crate) failures: Vec<(usize, EntryErrorCode)>,
    pub(crate) mode: EntryFailureMode,
}

impl FaultController {
    /// A controller without rules whose random choices all come from `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                seed,
                rng: ChaCha8Rng::seed_from_u64(seed),
                next_rule: 0,
                rules: Vec::new(),
                calls: 0,
                stats: FaultStats::default(),
                history: Vec::new(),
            }),
            shard_ends: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The seed given to [`FaultController::new`].
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Adds a rule; it applies from the next call on. Rules are evaluated in the order added.
    pub fn add(&self, rule: FaultRule) -> RuleId {
        let mut state = self.lock();
        state.next_rule += 1;
        let id = RuleId(state.next_rule);
        state.rules.push(ActiveRule {
            id,
            rule,
            matched: 0,
        });
        id
    }

    /// Removes a rule; returns whether it was present.
    pub fn remove(&self, id: RuleId) -> bool {
        let mut state = self.lock();
        let before = state.rules.len();
        state.rules.retain(|active| active.id != id);
        state.rules.len() != before
    }

    /// Removes every rule (counts and history are kept).
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Calls seen for `operation`.
    pub fn calls(&self, operation: &str) -> u64 {
        self.lock().stats.calls.get(operation).copied().unwrap_or(0)
    }

    /// Calls seen, all operations together.
    pub fn total_calls(&self) -> u64 {
        self.lock().calls
    }

    /// Faults of `kind` injected so far.
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.lock().stats.injected.get(&kind).copied().unwrap_or(0)
    }

    /// `PutRecords` entries failed so far.
    pub fn failed_entries(&self) -> u64 {
        self.lock().stats.failed_entries
    }

    /// Final `SubscribeToShard` events rewritten so far (see [`FaultStats::aws_shard_ends`]).
    pub fn aws_shard_ends(&self) -> u64 {
        self.shard_ends.final_events()
    }

    /// A snapshot of every count.
    pub fn stats(&self) -> FaultStats {
        let mut stats = self.lock().stats.clone();
        stats.aws_shard_ends = self.shard_ends.final_events();
        stats.children_withheld = self.shard_ends.children_withheld();
        stats.parents_completed = self.shard_ends.parents_completed();
        stats
    }

    /// Every fault injected so far, in order: compare two runs' histories to check that a seed
    /// reproduces a run.
    pub fn history(&self) -> Vec<Injection> {
        self.lock().history.clone()
    }

    /// Decides the faults of one call of `operation`; `entry_count` is the number of
    /// `PutRecords` entries when known. Counts the call and the faults decided.
    pub(crate) fn plan(&self, operation: &str, entry_count: Option<usize>) -> Plan {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.calls += 1;
        let call = state.calls;
        *state.stats.calls.entry(operation.to_owned()).or_default() += 1;

        let mut fired = Vec::new();
        for active in &mut state.rules {
            if !active.rule.applies_to(operation) {
                continue;
            }
            active.matched += 1;
            let position = active.matched;
            if active.rule.first.is_some_and(|first| position > first)
                || position % active.rule.every != 0
            {
                continue;
            }
            let p = active.rule.probability;
            if p < 1.0 && !state.rng.random_bool(p) {
                continue;
            }
            match &active.rule.fault {
                Fault::Latency(latency) => {
                    fired.push(Injected::Latency(latency.draw(&mut state.rng)))
                }
                Fault::Error(error) => fired.push(Injected::Error(error.clone())),
                Fault::DropConnection(DropPoint::BeforeForward) => {
                    fired.push(Injected::DropBeforeForward)
                }
                Fault::DropConnection(DropPoint::AfterForward) => {
                    fired.push(Injected::DropAfterForward)
                }
                Fault::CutStream(after) => fired.push(Injected::CutStream(*after)),
                Fault::StallStream(after) => fired.push(Injected::StallStream(*after)),
                Fault::AwsShardEnd => fired.push(Injected::AwsShardEnd),
                Fault::PutRecordsEntries(entries) => {
                    if let Some(total) = entry_count {
                        let failures = entries.choose(total, &mut state.rng);
                        if !failures.is_empty() {
                            fired.push(Injected::EntryFailures {
                                failures,
                                mode: entries.mode,
                            });
                        }
                    }
                }
            }
        }

        // The first error or early drop answers the call: later ones, entry failures, a late
        // drop and stream faults do not apply then. A late drop loses the whole response, so a
        // stream fault (nor a shard-end rewrite) does not apply either. Latencies always add up;
        // the first stream fault applies, and the rewrite (inside it) once.
        let answered_early = fired
            .iter()
            .any(|fault| matches!(fault, Injected::Error(_) | Injected::DropBeforeForward));
        let response_lost = answered_early
            || fired
                .iter()
                .any(|fault| matches!(fault, Injected::DropAfterForward));
        let mut plan = Plan::default();
        let mut applied = Vec::new();
        for fault in fired {
            let apply = match &fault {
                Injected::Latency(delay) => {
                    plan.latency += *delay;
                    true
                }
                Injected::Error(error) => {
                    let first = plan.terminal.is_none();
                    if first {
                        plan.terminal = Some(Terminal::Error(error.clone()));
                    }
                    first
                }
                Injected::DropBeforeForward => {
                    let first = plan.terminal.is_none();
                    if first {
                        plan.terminal = Some(Terminal::Drop);
                    }
                    first
                }
                Injected::EntryFailures { failures, mode } => {
                    let first = !answered_early && plan.entries.is_none();
                    if first {
                        plan.entries = Some(EntryPlan {
                            total: entry_count.unwrap_or(0),
                            failures: failures.clone(),
                            mode: *mode,
                        });
                    }
                    first
                }
                Injected::DropAfterForward => {
                    let first = !answered_early && !plan.drop_after;
                    plan.drop_after |= first;
                    first
                }
                Injected::CutStream(after) => {
                    !response_lost && plan.stream_fault(StreamEnd::Cut, *after)
                }
                Injected::StallStream(after) => {
                    !response_lost && plan.stream_fault(StreamEnd::Stall, *after)
                }
                Injected::AwsShardEnd => {
                    let first = !response_lost && plan.shard_end.is_none();
                    if first {
                        plan.shard_end = Some(self.shard_ends.clone());
                    }
                    first
                }
            };
            if apply {
                applied.push(fault);
            }
        }

        for fault in applied {
            *state.stats.injected.entry(fault.kind()).or_default() += 1;
            if let Injected::EntryFailures { failures, .. } = &fault {
                state.stats.failed_entries += failures.len() as u64;
            }
            tracing::debug!(call, operation, fault = ?fault, "injecting fault");
            state.history.push(Injection {
                call,
                operation: operation.to_owned(),
                fault,
            });
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(controller: &FaultController) -> Vec<(u64, FaultKind)> {
        controller
            .history()
            .iter()
            .map(|i| (i.call, i.fault.kind()))
            .collect()
    }

    #[test]
    fn first_and_every_select_calls() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on("GetRecords", Fault::drop_request()).first(2));
        controller.add(FaultRule::on("PutRecord", Fault::drop_response()).every(3));
        for _ in 0..4 {
            controller.plan("GetRecords", None);
        }
        for _ in 0..7 {
            controller.plan("PutRecord", None);
        }
        assert_eq!(
            kinds(&controller),
            vec![
                (1, FaultKind::DropBeforeForward),
                (2, FaultKind::DropBeforeForward),
                (7, FaultKind::DropAfterForward),
                (10, FaultKind::DropAfterForward),
            ]
        );
        assert_eq!(controller.calls("GetRecords"), 4);
        assert_eq!(controller.calls("PutRecord"), 7);
        assert_eq!(controller.total_calls(), 11);
    }

    #[test]
    fn the_first_terminal_fault_wins_and_latencies_add_up() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::new(Fault::latency(Duration::from_millis(10))));
        controller.add(FaultRule::new(Fault::Error(ServiceError::throttling())));
        controller.add(FaultRule::new(Fault::drop_request()));
        controller.add(FaultRule::new(Fault::latency(Duration::from_millis(5))));
        controller.add(FaultRule::new(Fault::PutRecordsEntries(
            EntryFailures::all(),
        )));
        let plan = controller.plan(PUT_RECORDS, Some(3));
        assert_eq!(plan.latency, Duration::from_millis(15));
        assert!(matches!(plan.terminal, Some(Terminal::Error(_))));
        assert!(plan.entries.is_none());
        assert_eq!(controller.injected(FaultKind::Error), 1);
        assert_eq!(controller.injected(FaultKind::DropBeforeForward), 0);
        assert_eq!(controller.injected(FaultKind::Latency), 2);
        assert_eq!(controller.injected(FaultKind::EntryFailures), 0);
    }

    #[test]
    fn stream_faults_compose_with_latency_but_not_with_an_answer_or_a_lost_response() {
        let ms = Duration::from_millis;
        let controller = FaultController::new(1);
        controller.add(FaultRule::on("SubscribeToShard", Fault::latency(ms(10))));
        controller.add(FaultRule::on(
            "SubscribeToShard",
            Fault::stall_stream_after(ms(30)),
        ));
        controller.add(FaultRule::on(
            "SubscribeToShard",
            Fault::cut_stream_after(ms(20)),
        ));
        let answered = controller.add(
            FaultRule::on(
                "SubscribeToShard",
                Fault::Error(ServiceError::internal_failure()),
            )
            .first(1),
        );
        let lost = controller.add(FaultRule::on("SubscribeToShard", Fault::drop_response()));

        // The error answers the call: no stream fault (nor late drop) applies.
        let plan = controller.plan("SubscribeToShard", None);
        assert!(matches!(plan.terminal, Some(Terminal::Error(_))));
        assert!(plan.stream.is_none() && !plan.drop_after);
        controller.remove(answered);

        // The late drop loses the response: no stream fault applies.
        let plan = controller.plan("SubscribeToShard", None);
        assert!(plan.drop_after && plan.stream.is_none());
        controller.remove(lost);

        // The first stream fault applies, after the latency.
        let plan = controller.plan("SubscribeToShard", None);
        assert_eq!(plan.latency, ms(10));
        assert_eq!(
            plan.stream,
            Some(StreamPlan {
                end: StreamEnd::Stall,
                after: ms(30)
            })
        );
        assert_eq!(controller.injected(FaultKind::StallStream), 1);
        assert_eq!(controller.injected(FaultKind::CutStream), 0);
        assert_eq!(controller.injected(FaultKind::Latency), 3);
        assert_eq!(
            kinds(&controller)[4..],
            [(3, FaultKind::Latency), (3, FaultKind::StallStream)]
        );
    }

    #[test]
    fn entry_failures_only_apply_to_put_records_with_a_known_count() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::new(Fault::PutRecordsEntries(
            EntryFailures::indices([0, 2, 9]),
        )));
        assert!(controller.plan("PutRecord", None).entries.is_none());
        assert!(controller.plan(PUT_RECORDS, None).entries.is_none());
        let plan = controller.plan(PUT_RECORDS, Some(3));
        let entries = plan.entries.expect("entries fail");
        assert_eq!(
            entries.failures,
            vec![
                (0, EntryErrorCode::ProvisionedThroughputExceeded),
                (2, EntryErrorCode::ProvisionedThroughputExceeded)
            ]
        );
        assert_eq!(entries.total, 3);
        assert_eq!(controller.failed_entries(), 2);
    }

    #[test]
    fn removed_rules_stop_firing() {
        let controller = FaultController::new(1);
        let id = controller.add(FaultRule::new(Fault::drop_request()));
        assert!(controller.plan("ListShards", None).terminal.is_some());
        assert!(controller.remove(id));
        assert!(!controller.remove(id));
        assert!(controller.plan("ListShards", None).terminal.is_none());
    }

    fn run(seed: u64) -> Vec<Injection> {
        let controller = FaultController::new(seed);
        controller.add(
            FaultRule::on("PutRecords", Fault::Error(ServiceError::internal_failure()))
                .probability(0.2),
        );
        controller.add(
            FaultRule::new(Fault::latency_between(
                Duration::from_millis(1),
                Duration::from_millis(50),
            ))
            .probability(0.5),
        );
        controller.add(FaultRule::new(Fault::PutRecordsEntries(
            EntryFailures::probability(0.3).codes([
                EntryErrorCode::InternalFailure,
                EntryErrorCode::ProvisionedThroughputExceeded,
            ]),
        )));
        for i in 0..200 {
            let op = if i % 3 == 0 {
                "GetRecords"
            } else {
                PUT_RECORDS
            };
            controller.plan(op, Some(10));
        }
        controller.history()
    }

    #[test]
    fn a_seed_reproduces_the_fault_sequence() {
        let a = run(42);
        assert!(a.len() > 50);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
    }

    #[test]
    fn uniform_latency_stays_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let latency = Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        for _ in 0..1000 {
            let d = latency.draw(&mut rng);
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
    }
}
