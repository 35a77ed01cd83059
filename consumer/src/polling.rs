//! Polling retrieval: a task per shard that reads ahead with `GetRecords`, bounded in records
//! and bytes, and hands the processor's task deaggregated batches.
//!
//! It resumes from a checkpoint inside an aggregate (at the checkpoint's sequence number, skipping
//! the user records at or before it), renews expired iterators after the last record read, backs
//! off with jitter on throttling and transient errors, and adapts its pace: at once (after the
//! minimum interval) while there is a backlog, doubling its idle time up to a maximum while the
//! shard is quiet.

use std::{sync::Arc, time::Duration, time::SystemTime};

use aws_sdk_kinesis::Client;
use backon::{BackoffBuilder, ExponentialBuilder};
use kinesis_aggregation::{HashKeyCache, HashKeyRange, deaggregate};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, warn};

use crate::{
    checkpoint::{Checkpoint, SequenceNumber},
    error::Error,
    kinesis::{self, Start},
    lineage::ChildShard,
    processor::Record,
    sdk_error::CallFailure,
};

/// Kinesis records asked for by a shard's first read.
const FIRST_READ_RECORDS: i32 = 25;

/// What the reader hands the shard's task.
pub(crate) enum Fetch {
    /// Records, with the prefetch budget they hold until processed.
    Batch {
        records: Vec<Record>,
        outside_range: usize,
        millis_behind_latest: Option<i64>,
        _budget: Budget,
    },
    /// The shard was read to its end; the children when the service named them.
    End { children: Option<Vec<ChildShard>> },
    /// Reading cannot go on (an error retrying cannot fix).
    Failed(Error),
}

/// Prefetch budget held by a batch until it is processed.
pub(crate) struct Budget {
    _records: Option<OwnedSemaphorePermit>,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// What a reader needs.
#[derive(Clone)]
pub(crate) struct Reader {
    pub(crate) client: Client,
    pub(crate) stream: String,
    pub(crate) shard_id: Arc<str>,
    pub(crate) range: Option<HashKeyRange>,
    pub(crate) start: Checkpoint,
    pub(crate) timestamp: Option<SystemTime>,
    pub(crate) max_records: i32,
    pub(crate) min_interval: Duration,
    pub(crate) max_idle: Duration,
    pub(crate) prefetch_records: usize,
    pub(crate) prefetch_bytes: usize,
    pub(crate) call_timeout: Duration,
}

/// Starts reading; batches arrive on the returned channel until the shard ends, reading fails,
/// or the receiver is dropped (which stops the reader).
pub(crate) fn spawn(reader: Reader) -> (mpsc::Receiver<Fetch>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4);
    let span = tracing::debug_span!("polling", shard_id = %reader.shard_id);
    let task = tokio::spawn(tracing::Instrument::instrument(read(reader, tx), span));
    (rx, task)
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn read(reader: Reader, tx: mpsc::Sender<Fetch>) {
    let records_budget = Arc::new(Semaphore::new(reader.prefetch_records));
    let bytes_budget = Arc::new(Semaphore::new(reader.prefetch_bytes));
    let mut hash_keys = HashKeyCache::default();
    // User records at or before this are not delivered again.
    let skip_through = match &reader.start {
        at @ Checkpoint::At { .. } => Some(at.clone()),
        _ => None,
    };
    let mut start = Start::Checkpoint(reader.start.clone());
    let mut iterator: Option<String> = None;
    let mut delays = backoff();
    let mut idle = reader.min_interval;
    // The first read asks for a few records only: a backlog of aggregates would otherwise make
    // it a 10 MB answer, and the processor would wait for all of it to see its first record.
    let mut first_read = true;
    loop {
        let current = match iterator.take() {
            Some(it) => it,
            None => match kinesis::shard_iterator(
                &reader.client,
                &reader.stream,
                &reader.shard_id,
                &start,
                reader.timestamp,
                reader.call_timeout,
            )
            .await
            {
                Ok(Some(it)) => it,
                // No iterator: nothing more can be read from this shard.
                Ok(None) => {
                    let _ = tx.send(Fetch::End { children: None }).await;
                    return;
                }
                Err(failure) if failure.code == "ResourceNotFoundException" => {
                    // The shard is gone (past retention): its data can no longer be read.
                    warn!(code = %failure.code, "shard not found; treated as ended");
                    let _ = tx.send(Fetch::End { children: None }).await;
                    return;
                }
                Err(failure) if failure.retryable => {
                    pause(&reader, &mut delays, &failure).await;
                    continue;
                }
                Err(failure) => {
                    let _ = tx
                        .send(Fetch::Failed(failed(&reader, "GetShardIterator", failure)))
                        .await;
                    return;
                }
            },
        };
        let limit = if first_read {
            reader.max_records.min(FIRST_READ_RECORDS)
        } else {
            reader.max_records
        };
        let fetched = match kinesis::get_records(
            &reader.client,
            &current,
            limit,
            reader.call_timeout,
        )
        .await
        {
            Ok(fetched) => fetched,
            Err(failure) if failure.code == "ExpiredIteratorException" => {
                count_error(&reader, &failure);
                debug!("iterator expired; renewing it");
                continue;
            }
            Err(failure) if failure.retryable => {
                iterator = Some(current);
                pause(&reader, &mut delays, &failure).await;
                continue;
            }
            Err(failure) => {
                let _ = tx
                    .send(Fetch::Failed(failed(&reader, "GetRecords", failure)))
                    .await;
                return;
            }
        };
        delays = backoff();
        let kinesis_records = fetched.records.len();
        if let Some(last) = fetched.records.last() {
            start = Start::After(last.sequence_number.clone());
        }
        let mut records = Vec::new();
        let mut outside_range = 0;
        for stream_record in fetched.records {
            for record in deaggregate(stream_record) {
                if skip_through.as_ref().is_some_and(|cp| !after(&record, cp)) {
                    continue;
                }
                let inside =
                    !record.aggregated
                        || reader.range.is_none_or(|range| {
                            range.contains(record.explicit_hash_key.unwrap_or_else(|| {
                                hash_keys.of_partition_key(&record.partition_key)
                            }))
                        });
                if inside {
                    records.push(record);
                } else {
                    outside_range += 1;
                }
            }
        }
        if !records.is_empty() || outside_range > 0 {
            let bytes: usize = records
                .iter()
                .map(|r| r.data.len() + r.partition_key.len())
                .sum();
            let budget = Budget {
                _records: take(&records_budget, records.len(), reader.prefetch_records).await,
                _bytes: take(&bytes_budget, bytes, reader.prefetch_bytes).await,
            };
            let batch = Fetch::Batch {
                records,
                outside_range,
                millis_behind_latest: fetched.millis_behind_latest,
                _budget: budget,
            };
            if tx.send(batch).await.is_err() {
                return;
            }
        }
        match fetched.next_iterator {
            None => {
                let _ = tx
                    .send(Fetch::End {
                        children: fetched.child_shards,
                    })
                    .await;
                return;
            }
            Some(next) => iterator = Some(next),
        }
        let behind = fetched.millis_behind_latest.unwrap_or(0) > 0;
        if std::mem::take(&mut first_read) && kinesis_records > 0 {
            // The small first read is not counted against the pace.
            continue;
        }
        idle = if kinesis_records == 0 && !behind {
            (idle * 2).min(reader.max_idle).max(reader.min_interval)
        } else {
            reader.min_interval
        };
        tokio::time::sleep(idle).await;
    }
}

/// Whether `record` comes after checkpoint `cp` (so it was not processed yet).
fn after(record: &Record, cp: &Checkpoint) -> bool {
    match SequenceNumber::parse(&record.sequence_number) {
        Ok(sequence) => &Checkpoint::at(sequence, record.sub_sequence_number) > cp,
        // Not a number: cannot be compared; deliver it rather than lose it.
        Err(_) => true,
    }
}

/// Waits for `amount` of a budget of `total` (a batch larger than the whole budget waits for
/// all of it).
async fn take(
    budget: &Arc<Semaphore>,
    amount: usize,
    total: usize,
) -> Option<OwnedSemaphorePermit> {
    let amount = u32::try_from(amount.min(total)).unwrap_or(u32::MAX);
    if amount == 0 {
        return None;
    }
    budget.clone().acquire_many_owned(amount).await.ok()
}

fn count_error(reader: &Reader, failure: &CallFailure) {
    metrics::counter!(crate::metrics::READ_ERRORS, "stream" => reader.stream.clone(),
        "shard_id" => reader.shard_id.to_string(), "error_code" => failure.code.clone())
    .increment(1);
}

async fn pause(
    reader: &Reader,
    delays: &mut impl Iterator<Item = Duration>,
    failure: &CallFailure,
) {
    count_error(reader, failure);
    let delay = delays.next().unwrap_or(Duration::from_secs(5));
    debug!(code = %failure.code, ?delay, "read failed; trying again");
    tokio::time::sleep(delay).await;
}

fn failed(reader: &Reader, operation: &'static str, failure: CallFailure) -> Error {
    count_error(reader, &failure);
    Error::Kinesis {
        operation,
        stream: reader.stream.clone(),
        code: failure.code,
        retryable: failure.retryable,
        source: Some(failure.source),
    }
}
