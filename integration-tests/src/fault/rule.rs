//! The rule vocabulary: the faults a test can ask for ([`Fault`] and its parts), the rules that
//! say which calls they hit ([`FaultRule`]), and the faults as injected ([`Injected`]).

use std::time::Duration;

use http::StatusCode;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::PUT_RECORDS;

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
    /// responses pass unchanged. See
    /// [`FaultStats::aws_shard_ends`](super::FaultStats::aws_shard_ends).
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
    pub(super) fn draw(&self, rng: &mut ChaCha8Rng) -> Duration {
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
    pub(super) mode: EntryFailureMode,
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

    pub(super) fn choose(
        &self,
        total: usize,
        rng: &mut ChaCha8Rng,
    ) -> Vec<(usize, EntryErrorCode)> {
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
    pub(super) probability: f64,
    pub(super) first: Option<u64>,
    pub(super) every: u64,
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

    pub(super) fn applies_to(&self, operation: &str) -> bool {
        if matches!(self.fault, Fault::PutRecordsEntries(_)) && operation != PUT_RECORDS {
            return false;
        }
        self.operation.as_deref().is_none_or(|op| op == operation)
    }
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// The kinds of fault, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `PutRecords` entries failed (one count per call; see
    /// [`FaultStats::failed_entries`](super::FaultStats::failed_entries)).
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
    /// shard ended during the call is counted in
    /// [`FaultStats::aws_shard_ends`](super::FaultStats::aws_shard_ends)).
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

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

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
