//! The consumer's one error type.

use std::time::Duration;

use crate::lease::Lease;

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
        /// The service's error code, or a description of the transport failure.
        code: String,
        /// Whether trying again may succeed.
        retryable: bool,
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
        /// The service's error code, or a description of the transport failure.
        code: String,
        /// Whether trying again may succeed (throttling, 5xx, timeouts, connection errors).
        retryable: bool,
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
            Error::LeaseTable { retryable, .. } | Error::Kinesis { retryable, .. } => *retryable,
            Error::TableNotActive { .. } | Error::ConsumerNotActive { .. } => true,
            Error::InvalidConfig { .. }
            | Error::Stopped { .. }
            | Error::LeaseLost { .. }
            | Error::InvalidCheckpoint { .. } => false,
        }
    }
}
