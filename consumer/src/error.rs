//! The consumer's one error type.

use std::time::Duration;

use kinesis_calls::ErrorKind;

use crate::{lease::Lease, sdk_error::CallFailure};

/// A boxed error from below the consumer (the SDK), kept as a `source` so that SDK upgrades do not
/// change this crate's public types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range.
    #[error("invalid setting {name} = {value}: {problem}")]
    InvalidConfig {
        /// The setting, as named on the builder.
        name: &'static str,
        /// The rejected value.
        value: String,
        /// What the value must be.
        problem: String,
    },

    /// A conditional write to the lease table found the lease changed: another worker took it, it
    /// is being handed over, or this worker's view of its counter is out of date. Whatever the
    /// write was (renewal, checkpoint, release), it did not happen.
    #[error(
        "lease {lease_key}: {operation} refused, the lease changed (another worker may hold it)"
    )]
    LeaseLost {
        /// The lease (shard id).
        lease_key: String,
        /// The write that was refused.
        operation: &'static str,
        /// The item as the table held it when the write was refused, when the table said.
        current: Option<Box<Lease>>,
    },

    /// A checkpoint the application asked for is not allowed.
    #[error("lease {lease_key}: cannot checkpoint at {requested}: {problem}")]
    InvalidCheckpoint {
        /// The lease (shard id).
        lease_key: String,
        /// The position asked for.
        requested: String,
        /// Why not (beyond the last record delivered, behind the current checkpoint, ...).
        problem: &'static str,
    },

    /// A Kinesis call failed.
    #[error("{operation} on stream {stream} failed ({code})")]
    Kinesis {
        /// The Kinesis operation.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// The service's error code, or a name for the transport failure.
        code: String,
        /// What kind of failure: throttled, transient, not found, ...
        kind: ErrorKind,
        /// The service's request id, when an answer came.
        request_id: Option<String>,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },

    /// A lease table call failed.
    #[error("{operation} on lease table {table} failed ({code})")]
    LeaseTable {
        /// The DynamoDB operation.
        operation: &'static str,
        /// The table.
        table: String,
        /// The service's error code, or a name for the transport failure.
        code: String,
        /// What kind of failure: throttled, transient, not found, ...
        kind: ErrorKind,
        /// The service's request id, when an answer came.
        request_id: Option<String>,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The worker's task ended abnormally (it panicked or its runtime shut down).
    #[error("the worker stopped: {reason}")]
    Stopped {
        /// What ended it.
        reason: String,
    },

    /// The enhanced fan-out stream consumer could not be found or registered and `ACTIVE` in
    /// time.
    #[error(
        "stream consumer {consumer} of stream {stream} not active after {waited:?} (status {status})"
    )]
    ConsumerNotActive {
        /// The stream consumer's name.
        consumer: String,
        /// The stream.
        stream: String,
        /// How long we waited.
        waited: Duration,
        /// The last status seen (`CREATING`, `DELETING`, `absent`, or the last error's code).
        status: String,
    },

    /// The stream does not exist (`ListShards` answered `ResourceNotFoundException`).
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },

    /// The lease table does not exist any more (it was deleted under a running worker).
    #[error("lease table {table} not found ({operation})")]
    TableNotFound {
        /// The table.
        table: String,
        /// The call that found it missing.
        operation: &'static str,
    },

    /// The credentials in use may not do this.
    #[error(
        "access denied: {operation} on {service} {resource} ({code}); check the IAM policy of the credentials the SDK client uses"
    )]
    AccessDenied {
        /// `Kinesis` or `DynamoDB`.
        service: &'static str,
        /// The call.
        operation: &'static str,
        /// The stream or table.
        resource: String,
        /// The service's error code.
        code: String,
        /// The service's request id, when an answer came.
        request_id: Option<String>,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The lease table holds leases of a Java KCL multi-stream application
    /// (`account:stream:creationEpoch:shardId` keys) and this consumer reads one stream: using
    /// it would create fresh leases at the initial position beside that application's, and its
    /// checkpoints would be ignored. Nothing was written. Use another table name
    /// (`table_name`), or the application that owns this table.
    #[error(
        "lease table {table} holds {count} leases of a KCL multi-stream application (for example {examples:?}); this consumer reads one stream and leaves it alone"
    )]
    MultiStreamTable {
        /// The table.
        table: String,
        /// How many such leases.
        count: usize,
        /// A few of their keys.
        examples: Vec<String>,
    },

    /// The worker could not start: the start was tried this many times, failing each time with
    /// an error that trying again could fix, the last of them `source`.
    #[error("the worker could not start after {attempts} attempts: {source}")]
    StartFailed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Box<Error>,
    },

    /// The lease table did not become `ACTIVE` in time.
    #[error("lease table {table} not active after {waited:?} (status {status})")]
    TableNotActive {
        /// The table.
        table: String,
        /// How long we waited.
        waited: Duration,
        /// The last status seen.
        status: String,
    },
}

impl Error {
    /// Whether the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::LeaseTable { kind, .. } | Error::Kinesis { kind, .. } => kind.is_retryable(),
            Error::TableNotActive { .. } | Error::ConsumerNotActive { .. } => true,
            Error::StreamNotFound { .. }
            | Error::TableNotFound { .. }
            | Error::AccessDenied { .. }
            | Error::MultiStreamTable { .. }
            | Error::StartFailed { .. } => false,
            Error::InvalidConfig { .. }
            | Error::Stopped { .. }
            | Error::LeaseLost { .. }
            | Error::InvalidCheckpoint { .. } => false,
        }
    }

    /// What kind of failure a call met, for the errors that come from a call.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::LeaseTable { kind, .. } | Error::Kinesis { kind, .. } => Some(*kind),
            Error::StreamNotFound { .. } | Error::TableNotFound { .. } => Some(ErrorKind::NotFound),
            Error::AccessDenied { .. } => Some(ErrorKind::AccessDenied),
            Error::StartFailed { source, .. } => source.kind(),
            _ => None,
        }
    }

    /// The service's error code (or the call layer's name for a transport failure), where the
    /// error carries one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::LeaseTable { code, .. }
            | Error::Kinesis { code, .. }
            | Error::AccessDenied { code, .. } => Some(code),
            Error::StartFailed { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The service's request id, where the error carries one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::LeaseTable { request_id, .. }
            | Error::Kinesis { request_id, .. }
            | Error::AccessDenied { request_id, .. } => request_id.as_deref(),
            Error::StartFailed { source, .. } => source.request_id(),
            _ => None,
        }
    }

    /// A Kinesis call's failure.
    pub(crate) fn kinesis(operation: &'static str, stream: String, failure: CallFailure) -> Self {
        Error::Kinesis {
            operation,
            stream,
            code: failure.code,
            kind: failure.kind,
            request_id: failure.request_id,
            source: failure.source,
        }
    }

    /// A lease table call's failure.
    pub(crate) fn lease_table(
        operation: &'static str,
        table: String,
        failure: CallFailure,
    ) -> Self {
        Error::LeaseTable {
            operation,
            table,
            code: failure.code,
            kind: failure.kind,
            request_id: failure.request_id,
            source: failure.source,
        }
    }
}
