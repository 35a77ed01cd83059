//! What the application implements, and what it is given: one [`ShardProcessor`] per shard the
//! worker holds, batches of deaggregated records, and a [`Checkpointer`].

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use kinesis_aggregation::DeaggregatedRecord;
use tokio::sync::Mutex;

use crate::{
    checkpoint::{Checkpoint, Position},
    error::{BoxError, Error},
    lease::Lease,
    lease_table::LeaseTable,
};

/// A user record as delivered: deaggregated, with its sequence number and its position inside
/// the aggregate (`sub_sequence_number`, 0 for a record that was not aggregated).
pub type Record = DeaggregatedRecord;

/// Records fetched from one shard, in order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Batch {
    /// The shard.
    pub shard_id: Arc<str>,
    /// The user records, in stream order. Records of an aggregate whose hash key lies outside
    /// the shard's range (written there with a stale shard map) are left out; see
    /// [`Batch::outside_range`].
    pub records: Vec<Record>,
    /// User records left out because their hash key lies outside the shard's range. The Java
    /// KCL drops the whole aggregate in that case; this consumer drops only these. Their
    /// producer, if it is `kinesis-producer`, wrote the whole aggregate's records again on the
    /// right shards, so the records of such an aggregate that were delivered arrive a second
    /// time, at new sequence numbers.
    pub outside_range: usize,
    /// How far behind the tip of the shard this batch is (`GetRecords`' and
    /// `SubscribeToShard`'s `MillisBehindLatest`), when the service said.
    pub behind_latest: Option<Duration>,
}

/// Where processing of a shard starts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Start {
    /// The shard.
    pub shard_id: Arc<str>,
    /// The lease's checkpoint: records at or before it are not delivered again.
    pub checkpoint: Checkpoint,
    /// A prepared (two-phase) checkpoint left by a previous owner, if any.
    pub pending_checkpoint: Option<Checkpoint>,
    /// The application state saved with the prepared checkpoint.
    pub pending_checkpoint_state: Option<Bytes>,
}

/// The application's code for one shard. The worker makes one per shard it starts (with the
/// function given to the builder) and calls it from one task, one call at a time.
///
/// Delivery is at least once: records after the last checkpoint are delivered again to the next
/// owner after a failover. A graceful handoff or shutdown lets the processor checkpoint first, so
/// that moves made by balancing cause no duplicates.
///
/// Every processor that was initialized is told why it stops, by one kind of call:
/// [`shard_ended`](Self::shard_ended) (repeated until it checkpoints `SHARD_END`),
/// [`lease_lost`](Self::lease_lost), or [`shutdown_requested`](Self::shutdown_requested) (a
/// shutdown, a handoff to another worker, a restart or release after failures, or reading the
/// shard failing for good). If the lease is lost while one of the last two runs, that call is
/// dropped at its next `.await` and nothing more is called. Only a panic in the processor (after
/// which it is dropped and, under the [`FailurePolicy`](crate::FailurePolicy), replaced), or the
/// worker's shutdown timeout (which aborts what still runs), ends it without one of them. No two
/// processors of one shard are trusted at once: a processor whose lease was lost is dropped at its
/// next `.await`, before another worker can take the lease.
///
/// A callback that runs longer than the builder's `slow_callback_warning` (30 s by default) is
/// reported with a warning and the `kinesis_consumer_slow_callbacks` metric, as the KCL's
/// `logWarningForTaskAfterMillis` does.
pub trait ShardProcessor: Send + 'static {
    /// Called once, before the first batch. An error (or a panic) is handled like a failed
    /// batch under the [`FailurePolicy`](crate::FailurePolicy): retried, then the processor is
    /// made again, or the lease released.
    fn initialize(&mut self, start: &Start) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = start;
        async { Ok(()) }
    }

    /// A batch of records. Checkpoint when convenient (every batch, or every few seconds).
    ///
    /// Returning an error (or panicking) fails the batch: the
    /// [`FailurePolicy`](crate::FailurePolicy) decides what follows (by default the same batch is
    /// tried again, then the processor is restarted from the last checkpoint). The batch is
    /// lent, so that it can be tried again; clone the records to keep them.
    ///
    /// If the lease is lost while this runs (the worker could not renew it in time), the future
    /// is dropped at its next `.await` so that processing stops before another worker may take
    /// the shard over; [`lease_lost`](Self::lease_lost) follows.
    fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// The lease was lost (taken by another worker, or not renewed in time). Checkpointing is no
    /// longer possible; records after the last checkpoint will be delivered to the next owner.
    fn lease_lost(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The shard was read to its end. The processor **must** checkpoint with
    /// [`Checkpointer::checkpoint_shard_end`], else the shard's children never start: the worker
    /// logs an error and calls this again (after a backoff) until it does. An error or a panic
    /// is reported and counted the same way.
    fn shard_ended(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// The worker is shutting down, handing the shard to another worker, restarting this
    /// processor after failures, or reading failed for good: checkpoint now to avoid duplicates
    /// at the next owner. An error is logged and counted; the processor stops anyway.
    fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = checkpointer;
        async { Ok(()) }
    }
}

/// Records checkpoints for one shard in the lease table: conditional writes that fail once the
/// lease is lost.
#[derive(Debug)]
pub struct Checkpointer {
    shard_id: Arc<str>,
    table: LeaseTable,
    worker: Arc<str>,
    lease: Arc<Mutex<Lease>>,
    /// The last user record delivered to the processor.
    delivered: Option<Checkpoint>,
    /// Whether the shard has been read to its end (then `SHARD_END` may be checkpointed).
    at_end: bool,
}

impl Checkpointer {
    pub(crate) fn new(
        shard_id: Arc<str>,
        table: LeaseTable,
        worker: Arc<str>,
        lease: Arc<Mutex<Lease>>,
    ) -> Self {
        Checkpointer {
            shard_id,
            table,
            worker,
            lease,
            delivered: None,
            at_end: false,
        }
    }

    pub(crate) fn note_delivered(&mut self, record: &Record) {
        if let Ok(position) = Position::of(record) {
            self.delivered = Some(position.into());
        }
    }

    /// Where delivery stood before a batch: restored when the batch fails, so that a checkpoint
    /// (in `shutdown_requested`, say) never covers a batch that was not processed.
    pub(crate) fn delivered_before(&self) -> Option<Checkpoint> {
        self.delivered.clone()
    }

    pub(crate) fn restore_delivered(&mut self, before: Option<Checkpoint>) {
        self.delivered = before;
    }

    pub(crate) fn reached_end(&mut self) {
        self.at_end = true;
    }

    /// The position of the last user record delivered to the processor: where
    /// [`checkpoint`](Self::checkpoint) would write. `None` before the first batch.
    pub fn last_delivered(&self) -> Option<&Checkpoint> {
        self.delivered.as_ref()
    }

    /// The lease's checkpoint as this worker last wrote or read it.
    pub async fn current(&self) -> Checkpoint {
        self.lease.lock().await.checkpoint.clone()
    }

    /// Checkpoints at the last record delivered. Does nothing if nothing was delivered yet.
    ///
    /// # Cancellation
    ///
    /// If the future is dropped, the write may or may not have happened.
    pub async fn checkpoint(&mut self) -> Result<(), Error> {
        match self.delivered.clone() {
            Some(at) => self.write(at).await,
            None => Ok(()),
        }
    }

    /// Checkpoints at a record delivered earlier (that record included): everything up to it
    /// is processed. It must not be beyond the last record delivered nor behind the current
    /// checkpoint ([`Error::InvalidCheckpoint`] otherwise).
    ///
    /// # Cancellation
    ///
    /// If the future is dropped, the write may or may not have happened.
    pub async fn checkpoint_at(&mut self, record: &Record) -> Result<(), Error> {
        let position = Position::of(record).map_err(|_| Error::InvalidCheckpoint {
            lease_key: self.shard_id.to_string(),
            requested: record.sequence_number.to_string(),
            problem: "not a sequence number",
        })?;
        self.checkpoint_at_position(&position).await
    }

    /// Checkpoints at the position of a record delivered earlier (kept with
    /// [`Position::of`], say, once the batch is gone). It must not be beyond the last record
    /// delivered nor behind the current checkpoint ([`Error::InvalidCheckpoint`] otherwise).
    ///
    /// # Cancellation
    ///
    /// If the future is dropped, the write may or may not have happened.
    pub async fn checkpoint_at_position(&mut self, position: &Position) -> Result<(), Error> {
        let at = self.requested(position)?;
        self.write(at).await
    }

    /// Checkpoints the end of the shard. Only possible once the shard was read to its end (in
    /// [`ShardProcessor::shard_ended`]).
    ///
    /// # Cancellation
    ///
    /// If the future is dropped, the write may or may not have happened.
    pub async fn checkpoint_shard_end(&mut self) -> Result<(), Error> {
        if !self.at_end {
            return Err(Error::InvalidCheckpoint {
                lease_key: self.shard_id.to_string(),
                requested: Checkpoint::ShardEnd.to_string(),
                problem: "the shard has not been read to its end",
            });
        }
        self.write(Checkpoint::ShardEnd).await
    }

    /// Prepares a checkpoint (the first phase of two): records the position of a record
    /// delivered earlier, and `state`, as pending, without moving the checkpoint. A new owner
    /// sees both in [`Start`].
    ///
    /// # Cancellation
    ///
    /// If the future is dropped, the write may or may not have happened.
    pub async fn prepare_checkpoint(
        &mut self,
        position: &Position,
        state: Option<Bytes>,
    ) -> Result<(), Error> {
        let at = self.requested(position)?;
        let mut lease = self.lease.lock().await;
        let updated = self
            .table
            .prepare_checkpoint(&lease, &self.worker, &at, state.as_ref())
            .await?;
        *lease = updated;
        Ok(())
    }

    fn requested(&self, position: &Position) -> Result<Checkpoint, Error> {
        let at = Checkpoint::from(position.clone());
        if self.delivered.as_ref().is_none_or(|d| &at > d) {
            return Err(Error::InvalidCheckpoint {
                lease_key: self.shard_id.to_string(),
                requested: at.to_string(),
                problem: "beyond the last record delivered",
            });
        }
        Ok(at)
    }

    async fn write(&mut self, at: Checkpoint) -> Result<(), Error> {
        let mut lease = self.lease.lock().await;
        if at < lease.checkpoint {
            return Err(Error::InvalidCheckpoint {
                lease_key: self.shard_id.to_string(),
                requested: at.to_string(),
                problem: "behind the current checkpoint",
            });
        }
        let result = self.table.checkpoint(&lease, &self.worker, &at).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::LeaseLost { .. }) => "lost",
            Err(_) => "failed",
        };
        metrics::counter!(crate::metrics::CHECKPOINTS, "shard_id" => self.shard_id.to_string(),
            "outcome" => outcome)
        .increment(1);
        *lease = result?;
        Ok(())
    }
}
