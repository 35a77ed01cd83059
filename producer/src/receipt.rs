//! What `put` hands back: a receipt that resolves to the delivery or to the failure.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use kinesis_aggregation::UserRecord;
use tokio::sync::oneshot;

use crate::error::Error;

/// Where and how a record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The shard Kinesis wrote the record to.
    pub shard_id: Arc<str>,
    /// The Kinesis record's sequence number (shared by every user record of an aggregate).
    pub sequence_number: Arc<str>,
    /// Position of the record inside its aggregate (0 for a record sent alone). Consumers that
    /// deaggregate see the same number, so `(sequence_number, sub_sequence_number)` identifies the
    /// record in the stream.
    pub sub_sequence_number: u64,
    /// Whether the record was written inside an aggregate.
    pub aggregated: bool,
    /// Every attempt, the last one being the success. Shared by the user records that travelled
    /// together in one Kinesis record.
    pub attempts: Arc<[Attempt]>,
}

/// One `PutRecords` attempt that carried the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Time from the end of the previous attempt to the start of this one (backoff and rate
    /// limiting), or for the first attempt from the `put` of the oldest record travelling in the
    /// same Kinesis record (buffering and rate limiting).
    pub delay: Duration,
    /// How long the call took.
    pub duration: Duration,
    /// `None` on success, else the error.
    pub error: Option<AttemptError>,
}

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptError {
    /// The service's error code (`ProvisionedThroughputExceededException`, `InternalFailure`,
    /// ...), or one of the producer's own for transport failures: `RequestTimeout`,
    /// `ConnectionError`, `ResponseError`, `WrongShard`.
    pub code: String,
    /// The service's message, or a description.
    pub message: String,
}

/// A record that was not delivered, handed back with the reason and its attempts.
#[derive(Debug)]
pub struct Failure {
    /// Why.
    pub error: Error,
    /// The record, so that nothing is lost: the application may retry, store or drop it. `None`
    /// only if the producer's task was torn down in a way that lost it (not expected; see
    /// [`Receipt`]).
    pub record: Option<UserRecord>,
    /// The attempts made, oldest first (empty if the record was never sent).
    pub attempts: Vec<Attempt>,
}

impl Failure {
    pub(crate) fn new(error: Error, record: UserRecord) -> Self {
        Failure {
            error,
            record: Some(record),
            attempts: Vec::new(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} after {} attempt(s)", self.error, self.attempts.len())
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What travels from the pipeline to a receipt. The failure is boxed so that the common case,
/// a delivery, keeps the channel's slot small.
pub(crate) type Outcome = Result<Delivery, Box<Failure>>;

/// Resolves once the record is delivered or has finally failed.
///
/// Every receipt resolves: the producer resolves it when the record is written, fails, expires,
/// or when the producer's task is torn down (then with [`Error::Cancelled`] and the record).
/// Dropping a receipt does not cancel the record; it is still sent.
#[derive(Debug)]
#[must_use = "a receipt tells whether the record was delivered"]
pub struct Receipt {
    rx: oneshot::Receiver<Outcome>,
}

impl Receipt {
    pub(crate) fn new(rx: oneshot::Receiver<Outcome>) -> Self {
        Receipt { rx }
    }
}

impl Future for Receipt {
    type Output = Result<Delivery, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|received| match received {
                Ok(outcome) => outcome.map_err(|failure| *failure),
                Err(_) => Err(Failure {
                    error: Error::Cancelled,
                    record: None,
                    attempts: Vec::new(),
                }),
            })
    }
}
