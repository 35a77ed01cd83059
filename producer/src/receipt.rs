//! What `put` hands back: a receipt that resolves to the delivery or to the failure.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
    time::Duration,
};

use kinesis_aggregation::UserRecord;

use crate::error::Error;

/// Where and how a record was written.
///
/// The user records that travelled in one Kinesis record share everything but their subsequence
/// number, held once for all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    written: Arc<Written>,
    sub_sequence_number: u64,
}

/// What the user records of one Kinesis record share.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) shard_id: String,
    pub(crate) sequence_number: String,
    pub(crate) aggregated: bool,
    pub(crate) attempts: Vec<Attempt>,
}

impl Delivery {
    pub(crate) fn new(written: Arc<Written>, sub_sequence_number: u64) -> Self {
        Delivery {
            written,
            sub_sequence_number,
        }
    }

    /// The shard Kinesis wrote the record to.
    pub fn shard_id(&self) -> &str {
        &self.written.shard_id
    }

    /// The Kinesis record's sequence number (shared by every user record of an aggregate).
    pub fn sequence_number(&self) -> &str {
        &self.written.sequence_number
    }

    /// Position of the record inside its aggregate (0 for a record sent alone). Consumers that
    /// deaggregate see the same number, so `(sequence_number, sub_sequence_number)` identifies
    /// the record in the stream.
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// Whether the record was written inside an aggregate.
    pub fn aggregated(&self) -> bool {
        self.written.aggregated
    }

    /// Every attempt, the last one being the success.
    pub fn attempts(&self) -> &[Attempt] {
        &self.written.attempts
    }
}

/// One `PutRecords` attempt that carried the record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub struct AttemptError {
    /// The service's error code (`ProvisionedThroughputExceededException`, `InternalFailure`,
    /// ...), or one of the producer's own for transport failures: `RequestTimeout`,
    /// `ConnectionError`, `ResponseError`, `WrongShard`.
    pub code: String,
    /// The service's message, or a description.
    pub message: String,
    /// What the attempt left in the stream.
    pub wrote: Wrote,
}

/// What a failed attempt left in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wrote {
    /// Nothing: the service answered that this record's entry, or the whole call, was refused
    /// (throttled, failed entries, validation, access, a whole call refused with a 4xx), or the
    /// call could not be sent.
    Nothing,
    /// Perhaps the record: no answer came (the call timed out, the connection was lost after the
    /// request went out, the answer could not be read), or the whole call failed with a 5xx,
    /// which the service may have processed.
    Unknown,
    /// The record: it was written, to a shard whose hash-key range does not hold every record of
    /// its aggregate (the shard map was stale), and sent again. A consumer that applies the
    /// range rule to whole aggregates (the Java KCL) drops that copy; one that does not, or one
    /// that skips only the records outside the range (`kinesis-consumer`), delivers some or all
    /// of them.
    ToAnotherShard,
}

/// Whether a record that failed may be in the stream anyway (see
/// [`Failure::may_have_been_written`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InStream {
    /// Certainly not: every attempt was refused by the service before anything was written, or
    /// none was made.
    No,
    /// Possibly: some attempt ended without an answer, or with a 5xx for the whole call, or
    /// wrote the record to a shard that does not hold it; or the producer was torn down with a
    /// call under way.
    Possibly,
}

/// A record that was not delivered, handed back with the reason and its attempts.
#[derive(Debug)]
#[non_exhaustive]
pub struct Failure {
    /// Why.
    pub error: Error,
    /// The record, so that nothing is lost: the application may retry, store or drop it.
    pub record: UserRecord,
    /// The attempts made, oldest first (empty if the record was never sent).
    pub attempts: Vec<Attempt>,
}

impl Failure {
    /// Whether the record may be in the stream anyway, derived from its attempts:
    /// [`InStream::No`] if every attempt was refused (or none was made), [`InStream::Possibly`]
    /// if an attempt's answer was lost (a timeout, a dropped connection, an unreadable answer), a
    /// whole call failed with a 5xx, the record was written to a shard that does not hold it, or
    /// the producer was torn down ([`Error::Cancelled`]) with a call perhaps under way.
    ///
    /// What to do with it: a record `No` may be put again without a duplicate. A record
    /// `Possibly` put again may be in the stream twice (consumers see it twice); an
    /// application that must not duplicate it should record it as "maybe delivered" rather than
    /// resend it, or resend it with an idempotency key its consumers check. Treating a
    /// `Possibly` record as lost raises false alarms: often it was written.
    pub fn in_stream(&self) -> InStream {
        let unknown = self
            .attempts
            .iter()
            .any(|a| a.error.as_ref().is_some_and(|e| e.wrote != Wrote::Nothing));
        if unknown || matches!(self.error, Error::Cancelled) && !self.attempts.is_empty() {
            InStream::Possibly
        } else {
            InStream::No
        }
    }

    /// Whether the record may have been written despite the failure
    /// ([`Failure::in_stream`] is [`InStream::Possibly`]).
    pub fn may_have_been_written(&self) -> bool {
        self.in_stream() == InStream::Possibly
    }

    pub(crate) fn new(error: Error, record: UserRecord) -> Self {
        Failure {
            error,
            record,
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

/// Receipt cells handed out per allocation: one block serves this many records, instead of one
/// channel allocated per record (allocated by the application's thread, freed by another: the
/// costliest pattern for most allocators).
const CELLS_PER_BLOCK: usize = 32;

/// Where one record's outcome waits for its receipt.
#[derive(Default)]
enum Cell {
    /// Not resolved yet; the waker of the task awaiting the receipt, if any.
    #[default]
    Waiting,
    Watched(Waker),
    /// Resolved; the receipt has not taken it yet.
    Ready(Outcome),
    /// The receipt took the outcome, or was dropped (an outcome arriving then is dropped at
    /// once, so a forgotten receipt keeps nothing alive).
    Closed,
}

/// A block of cells, shared by the receipts and senders of up to [`CELLS_PER_BLOCK`] records.
struct Block {
    cells: [Mutex<Cell>; CELLS_PER_BLOCK],
}

impl Block {
    fn cell(&self, index: usize) -> MutexGuard<'_, Cell> {
        // Nothing panics while holding a cell's lock; a poisoned cell is still consistent.
        self.cells[index % CELLS_PER_BLOCK]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands out receipt cells, allocating a block every [`CELLS_PER_BLOCK`] records.
#[derive(Default)]
pub(crate) struct Cells {
    current: Option<(Arc<Block>, usize)>,
}

impl Cells {
    /// A sender for the pipeline and the receipt it resolves.
    pub(crate) fn pair(&mut self) -> (Sender, Receipt) {
        let (block, index) = match self.current.take() {
            Some((block, index)) if index < CELLS_PER_BLOCK => (block, index),
            _ => (
                Arc::new(Block {
                    cells: std::array::from_fn(|_| Mutex::new(Cell::Waiting)),
                }),
                0,
            ),
        };
        let pair = (
            Sender {
                block: block.clone(),
                index: index as u32,
            },
            Receipt {
                block: block.clone(),
                index,
                taken: false,
            },
        );
        self.current = Some((block, index + 1));
        pair
    }
}

/// The pipeline's end of a receipt. It is always kept next to its record (in the pipeline's
/// `Admitted` and `Pending`), whose own `Drop` resolves the receipt with [`Error::Cancelled`] and
/// the record if nothing else did: a failure always hands the record back.
pub(crate) struct Sender {
    block: Arc<Block>,
    index: u32,
}

impl Sender {
    /// Resolves the receipt.
    pub(crate) fn send(self, outcome: Outcome) {
        self.settle(Cell::Ready(outcome));
    }

    /// Puts `resolved` in the cell unless the receipt is gone, and wakes the receipt's task.
    fn settle(&self, resolved: Cell) {
        let waker = {
            let mut cell = self.block.cell(self.index as usize);
            match std::mem::take(&mut *cell) {
                Cell::Closed => {
                    *cell = Cell::Closed;
                    None
                }
                Cell::Watched(waker) => {
                    *cell = resolved;
                    Some(waker)
                }
                _ => {
                    *cell = resolved;
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Resolves once the record is delivered or has finally failed.
///
/// Every receipt resolves: the producer resolves it when the record is written, fails, expires,
/// or when the producer's task is torn down (then with [`Error::Cancelled`]); a [`Failure`]
/// always hands the record back. Dropping a receipt does not cancel the record; it is still sent.
#[must_use = "a receipt tells whether the record was delivered"]
pub struct Receipt {
    block: Arc<Block>,
    index: usize,
    /// The outcome was taken (the cell is closed): neither polling again nor dropping needs
    /// the cell's lock.
    taken: bool,
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.block.cell(self.index) {
            Cell::Waiting | Cell::Watched(_) => "waiting",
            Cell::Ready(Ok(_)) => "delivered",
            Cell::Ready(Err(_)) => "failed",
            Cell::Closed => "taken",
        };
        f.debug_struct("Receipt").field("state", &state).finish()
    }
}

impl Future for Receipt {
    type Output = Result<Delivery, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.taken {
            // Polled again after it resolved: a completed future has nothing more to give.
            return Poll::Pending;
        }
        let mut cell = self.block.cell(self.index);
        match std::mem::take(&mut *cell) {
            Cell::Ready(outcome) => {
                *cell = Cell::Closed;
                drop(cell);
                self.taken = true;
                Poll::Ready(outcome.map_err(|failure| *failure))
            }
            Cell::Watched(waker) if waker.will_wake(cx.waker()) => {
                *cell = Cell::Watched(waker);
                Poll::Pending
            }
            Cell::Waiting | Cell::Watched(_) => {
                *cell = Cell::Watched(cx.waker().clone());
                Poll::Pending
            }
            // Polled again after it resolved: a completed future has nothing more to give.
            Cell::Closed => {
                *cell = Cell::Closed;
                Poll::Pending
            }
        }
    }
}

impl Drop for Receipt {
    /// An outcome nobody will read is dropped now, and one arriving later at once: a dropped
    /// receipt keeps no record alive.
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let outcome = std::mem::replace(&mut *self.block.cell(self.index), Cell::Closed);
        drop(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        delivery_at(0)
    }

    fn delivery_at(sub_sequence_number: u64) -> Delivery {
        let written = Written {
            shard_id: "shardId-000000000000".into(),
            sequence_number: "1".into(),
            aggregated: false,
            attempts: Vec::new(),
        };
        Delivery::new(Arc::new(written), sub_sequence_number)
    }

    #[tokio::test]
    async fn every_cell_of_several_blocks_resolves_its_own_receipt() {
        let mut cells = Cells::default();
        let pairs: Vec<_> = (0..CELLS_PER_BLOCK * 3 + 5).map(|_| cells.pair()).collect();
        let mut receipts = Vec::new();
        for (n, (tx, receipt)) in pairs.into_iter().enumerate() {
            tx.send(Ok(delivery_at(n as u64)));
            receipts.push(receipt);
        }
        for (n, receipt) in receipts.into_iter().enumerate() {
            assert_eq!(
                receipt.await.map(|d| d.sub_sequence_number()).ok(),
                Some(n as u64)
            );
        }
    }

    #[tokio::test]
    async fn a_waiting_receipt_is_woken_by_its_sender_only() {
        let mut cells = Cells::default();
        let (first_tx, first) = cells.pair();
        let (second_tx, second) = cells.pair();
        let waiting = tokio::spawn(second);
        tokio::task::yield_now().await;
        first_tx.send(Ok(delivery()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        second_tx.send(Ok(delivery()));
        assert!(waiting.await.is_ok_and(|outcome| outcome.is_ok()));
        assert!(first.await.is_ok());
    }

    #[tokio::test]
    async fn a_failure_hands_the_record_back() {
        let mut cells = Cells::default();
        let (tx, receipt) = cells.pair();
        let waiting = tokio::spawn(receipt);
        tokio::task::yield_now().await;
        let record = UserRecord::new("key", "data").unwrap_or_else(|e| panic!("{e}"));
        tx.send(Err(Box::new(Failure::new(
            Error::Cancelled,
            record.clone(),
        ))));
        let failure = waiting.await.ok().and_then(Result::err);
        let Some(Failure {
            error: Error::Cancelled,
            record: back,
            ..
        }) = failure
        else {
            panic!("expected a cancelled failure, got {failure:?}");
        };
        // The record itself, not an `Option` of it.
        assert_eq!(back.partition_key(), "key");
        assert_eq!(back, record);
    }

    #[test]
    fn an_outcome_for_a_dropped_receipt_is_not_kept() {
        let mut cells = Cells::default();
        let (tx, receipt) = cells.pair();
        let (_keep_block_alive, _other) = cells.pair();
        let record = UserRecord::new("key", vec![7u8; 1024]).unwrap_or_else(|e| panic!("{e}"));
        let data = record.data().clone();
        assert!(!data.is_unique());
        drop(receipt);
        tx.send(Err(Box::new(Failure::new(Error::Cancelled, record))));
        // Only the test's clone of the data is left: the cell did not keep the record.
        assert!(data.is_unique());
    }
}
