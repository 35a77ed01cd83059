//! The producer's one error type.

use std::{sync::Arc, time::Duration};

pub use kinesis_calls::ErrorKind;

/// A boxed error from below the producer (the SDK), kept as a `source` so that SDK upgrades do not
/// change this crate's public types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the producer: rejected input, configuration, the stream, and
/// the final outcome of a record that could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record breaks a Kinesis rule (empty or too long partition key, explicit hash key out of
    /// range, record over the stream's size limit). Detected before anything is buffered.
    #[error("invalid record: {0}")]
    InvalidRecord(#[from] kinesis_aggregation::Error),

    /// A builder setting is out of range, or settings disagree (the linger time and the record
    /// TTL, the aggregate size and the maximum record size...).
    #[error("invalid setting {name} = {value}: {problem}")]
    InvalidConfig {
        /// The setting, as named on the builder.
        name: &'static str,
        /// The rejected value.
        value: String,
        /// What the value must be.
        problem: String,
    },

    /// The stream does not exist (or is not visible with these credentials).
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream name or ARN given to the builder.
        stream: String,
        /// The service's answer.
        #[source]
        source: Option<BoxError>,
    },

    /// A call the producer needs to start (`ListShards`, `DescribeStreamSummary`) failed, or
    /// the shard listing could not be made into a map of the hash-key space.
    #[error("{operation} on stream {stream} failed ({code})")]
    Startup {
        /// The API operation.
        operation: &'static str,
        /// The stream name or ARN.
        stream: String,
        /// What kind of failure the call met; `None` when the listing came but did not tile the
        /// hash-key space.
        kind: Option<ErrorKind>,
        /// The service's error code, a name for the transport failure, or what was wrong with
        /// the listing.
        code: String,
        /// The service's request id, when an answer came.
        request_id: Option<String>,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },

    /// `try_put` found a backpressure bound full; the record is handed back.
    #[error("the producer holds its maximum of {limit} outstanding {bound}")]
    Full {
        /// Which bound: records or bytes.
        bound: Bound,
        /// The configured bound.
        limit: usize,
    },

    /// The producer was shut down before the record was admitted.
    #[error("the producer is shut down")]
    ShutDown,

    /// The record's time to live passed before Kinesis acknowledged it. It may be in the stream
    /// anyway, when an attempt's answer was lost: see
    /// [`Failure::may_have_been_written`](crate::Failure::may_have_been_written).
    #[error("record expired: not acknowledged within its time to live of {ttl:?} (last error: {})", last_error.as_deref().unwrap_or("none"))]
    Expired {
        /// The configured record TTL.
        ttl: Duration,
        /// The error code of the last failed attempt, if there was one.
        last_error: Option<String>,
    },

    /// The shard throttled the record and the producer is set to fail throttled records at once.
    #[error("throttled by shard {shard_id} ({code})")]
    Throttled {
        /// The shard that throttled the write.
        shard_id: Arc<str>,
        /// The service's error code.
        code: String,
    },

    /// Kinesis rejected the record with an error retrying cannot fix (access denied, stream not
    /// found, validation, KMS key problems).
    #[error("rejected by Kinesis on stream {stream}: {code}: {message}")]
    Rejected {
        /// What kind of refusal: access denied, not found, or the request refused as it is.
        kind: ErrorKind,
        /// The stream name or ARN.
        stream: String,
        /// The service's error code.
        code: String,
        /// The service's message.
        message: String,
        /// The request id, when the whole call failed.
        request_id: Option<String>,
    },

    /// The producer's task stopped (its runtime shut down) before the record was delivered.
    #[error("the producer stopped before the record was delivered")]
    Cancelled,
}

/// A backpressure bound of the producer: what [`Error::Full`] found full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bound {
    /// Outstanding user records (`max_outstanding_records`).
    Records,
    /// Outstanding bytes of user records, partition keys + data (`max_outstanding_bytes`).
    Bytes,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bound::Records => "records",
            Bound::Bytes => "bytes",
        })
    }
}

impl Error {
    /// Whether putting the same record (or building the producer) again later may succeed. A
    /// start-up failure is retryable only when its call's failure is (not when access was
    /// denied or the listing was wrong).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Full { .. }
            | Error::Expired { .. }
            | Error::Throttled { .. }
            | Error::Cancelled => true,
            Error::Startup { kind, .. } => kind.is_some_and(ErrorKind::is_retryable),
            _ => false,
        }
    }

    /// What kind of failure a call met, for the errors that come from a call: `Startup`,
    /// `StreamNotFound`, `Rejected`, `Throttled`.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Startup { kind, .. } => *kind,
            Error::StreamNotFound { .. } => Some(ErrorKind::NotFound),
            Error::Rejected { kind, .. } => Some(*kind),
            Error::Throttled { .. } => Some(ErrorKind::Throttled),
            _ => None,
        }
    }

    /// The service's error code, where the error carries one (for `Expired`, the last
    /// attempt's).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Startup { code, .. }
            | Error::Rejected { code, .. }
            | Error::Throttled { code, .. } => Some(code),
            Error::Expired { last_error, .. } => last_error.as_deref(),
            _ => None,
        }
    }

    /// The service's request id, where the error carries one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Startup { request_id, .. } | Error::Rejected { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    pub(crate) fn config(name: &'static str, value: impl ToString, problem: impl ToString) -> Self {
        Error::InvalidConfig {
            name,
            value: value.to_string(),
            problem: problem.to_string(),
        }
    }
}
