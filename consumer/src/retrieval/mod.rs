//! What polling and fan-out retrieval share: the batches they hand a shard's task, the read-ahead
//! budget those batches hold until processed, and the unpacking of Kinesis records into the user
//! records a processor sees.

pub(crate) mod decide;

use std::{cmp::Ordering, sync::Arc, time::Duration};

use kinesis_aggregation::{
    Deaggregation, HashKeyCache, HashKeyRange, StreamRecord, deaggregate_batch,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{
    checkpoint::{Checkpoint, SequenceNumber},
    error::Error,
    kinesis,
    lineage::ChildShard,
    metrics as m,
    processor::Record,
    sdk_error::CallFailure,
};

/// What a reader hands the shard's task.
pub(crate) enum Fetch {
    /// Records, with the read-ahead budget they hold until processed.
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

/// The read-ahead of one shard, bounded in records and bytes: a reader waits for budget before
/// handing a batch over, so it reads no faster than the processor consumes.
pub(crate) struct Budgets {
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_records: usize,
    max_bytes: usize,
    held_records: metrics::Gauge,
    held_bytes: metrics::Gauge,
}

/// Read-ahead budget held by a batch until it is processed (dropped).
pub(crate) struct Budget {
    _records: Option<OwnedSemaphorePermit>,
    _bytes: Option<OwnedSemaphorePermit>,
    records: usize,
    bytes: usize,
    held_records: metrics::Gauge,
    held_bytes: metrics::Gauge,
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.held_records.decrement(self.records as f64);
        self.held_bytes.decrement(self.bytes as f64);
    }
}

impl Budgets {
    /// A shard reader's read-ahead (`(records, bytes)`) and unpacker, starting at `start`.
    pub(crate) fn for_shard(
        (max_records, max_bytes): (usize, usize),
        stream: &str,
        shard_id: &str,
        range: Option<HashKeyRange>,
        start: &Checkpoint,
    ) -> (Self, Unpacker) {
        (
            Self::new(max_records, max_bytes, stream, shard_id),
            Unpacker::new(range, start),
        )
    }

    /// Unpacks `records` and hands them to the shard's task in batches of about `max` user
    /// records, each waiting for its read-ahead budget. `false` once the task is gone.
    ///
    /// The records are split by `deaggregate_batch`, which verifies the checksums of up to 32
    /// aggregates at a time, side by side; each is split only when the batch reaches it.
    pub(crate) async fn hand_over(
        &self,
        unpacker: &mut Unpacker,
        records: impl Iterator<Item = StreamRecord>,
        max: usize,
        millis_behind_latest: Option<i64>,
        tx: &mpsc::Sender<Fetch>,
    ) -> bool {
        let mut records = deaggregate_batch(records);
        while let Some(unpacked) = unpacker.next_batch(&mut records, max) {
            if unpacked.records.is_empty() && unpacked.outside_range == 0 {
                continue;
            }
            let batch = Fetch::Batch {
                _budget: self.take(&unpacked.records).await,
                records: unpacked.records,
                outside_range: unpacked.outside_range,
                millis_behind_latest,
            };
            if tx.send(batch).await.is_err() {
                return false;
            }
        }
        true
    }

    fn new(max_records: usize, max_bytes: usize, stream: &str, shard_id: &str) -> Self {
        let labels = [
            ("stream", stream.to_owned()),
            ("shard_id", shard_id.to_owned()),
        ];
        Budgets {
            records: Arc::new(Semaphore::new(max_records)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_records,
            max_bytes,
            held_records: metrics::gauge!(m::PREFETCHED_RECORDS, &labels),
            held_bytes: metrics::gauge!(m::PREFETCHED_BYTES, &labels),
        }
    }

    /// Waits until `records` fit in the read-ahead (a batch larger than the whole budget waits
    /// for all of it, so at most one such batch is held).
    pub(crate) async fn take(&self, records: &[Record]) -> Budget {
        let count = records.len();
        let bytes: usize = records
            .iter()
            .map(|r| r.data.len() + r.partition_key.len())
            .sum();
        let budget = Budget {
            _records: take(&self.records, count, self.max_records).await,
            _bytes: take(&self.bytes, bytes, self.max_bytes).await,
            records: count,
            bytes,
            held_records: self.held_records.clone(),
            held_bytes: self.held_bytes.clone(),
        };
        self.held_records.increment(count as f64);
        self.held_bytes.increment(bytes as f64);
        budget
    }
}

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

/// Turns the Kinesis records of one shard, in order, into the user records to deliver: it
/// deaggregates, skips user records of aggregates whose hash key lies outside the shard's range,
/// and skips records at or before a position already delivered or checkpointed.
pub(crate) struct Unpacker {
    range: Option<HashKeyRange>,
    /// Made at the first aggregated record whose hash key must be computed: an idle shard, or
    /// one whose aggregates carry explicit hash keys, never pays for it (80 KiB).
    hash_keys: Option<HashKeyCache>,
    /// Records at or before this are not delivered (again). Cleared at the first record after
    /// it: records arrive in order, so none after that can be at or before it.
    done_through: Option<(SequenceNumber, u64)>,
    /// The last record handed out.
    last: Option<(Arc<str>, u64)>,
}

/// A batch of unpacked records.
#[derive(Default)]
pub(crate) struct Unpacked {
    pub(crate) records: Vec<Record>,
    pub(crate) outside_range: usize,
    /// Records skipped because they were delivered or checkpointed already.
    pub(crate) replayed: usize,
}

impl Unpacker {
    /// Starts at `start`: with a checkpoint at a sequence number, the user records at or before
    /// it are skipped (this resumes inside an aggregate).
    pub(crate) fn new(range: Option<HashKeyRange>, start: &Checkpoint) -> Self {
        let done_through = match start {
            Checkpoint::At {
                sequence_number,
                sub_sequence_number,
            } => Some((sequence_number.clone(), *sub_sequence_number)),
            _ => None,
        };
        Unpacker {
            range,
            hash_keys: None,
            done_through,
            last: None,
        }
    }

    /// Skips, from now on, anything at or before the last record handed out: for a reader that
    /// starts reading again from a position the service chose (a new subscription).
    pub(crate) fn skip_delivered(&mut self) {
        if let Some((sequence, sub)) = &self.last
            && let Ok(sequence) = SequenceNumber::parse(sequence)
        {
            self.done_through = Some((sequence, *sub));
        }
    }

    /// Unpacks all of `stream_records` into one batch.
    #[cfg(test)]
    pub(crate) fn unpack(&mut self, stream_records: Vec<StreamRecord>) -> Unpacked {
        self.next_batch(&mut deaggregate_batch(stream_records), usize::MAX)
            .unwrap_or_default()
    }

    /// Unpacks deaggregated Kinesis records from `stream_records` until the batch holds at least
    /// `max` user records (an aggregate is not split) or they run out; `None` once they have run
    /// out. A large answer is handed over in batches as it is unpacked, so the first records
    /// reach the processor early and the read-ahead budget is taken a batch at a time.
    pub(crate) fn next_batch(
        &mut self,
        stream_records: &mut impl Iterator<Item = Deaggregation>,
        max: usize,
    ) -> Option<Unpacked> {
        let mut out = Unpacked::default();
        let mut any = false;
        while out.records.len() < max {
            let Some(split) = stream_records.next() else {
                break;
            };
            any = true;
            // Every user record carries the Kinesis record's sequence number; a split record
            // always has at least one (a record passed through whole is one).
            let Some(sequence_number) = split.records.first().map(|r| r.sequence_number.clone())
            else {
                continue;
            };
            // How much of this Kinesis record was delivered already: none, all, or the user
            // records up to a subsequence number.
            let mut done_sub: Option<u64> = None;
            if let Some((done_sequence, sub)) = &self.done_through {
                // A sequence number that is not a number cannot be compared: deliver the record
                // rather than lose it.
                match SequenceNumber::parse(&sequence_number).map(|s| s.cmp(done_sequence)) {
                    Ok(Ordering::Less) => {
                        out.replayed += split.records.len();
                        continue;
                    }
                    Ok(Ordering::Equal) => done_sub = Some(*sub),
                    Ok(Ordering::Greater) | Err(_) => self.done_through = None,
                }
            }
            for record in split.records {
                if done_sub.is_some_and(|sub| record.sub_sequence_number <= sub) {
                    out.replayed += 1;
                    continue;
                }
                let inside = !record.aggregated
                    || self.range.is_none_or(|range| {
                        range.contains(record.explicit_hash_key.unwrap_or_else(|| {
                            self.hash_keys
                                .get_or_insert_with(HashKeyCache::default)
                                .of_partition_key(&record.partition_key)
                        }))
                    });
                if inside {
                    out.records.push(record);
                } else {
                    out.outside_range += 1;
                }
            }
        }
        if !any {
            return None;
        }
        if let Some(last) = out.records.last() {
            self.last = Some((last.sequence_number.clone(), last.sub_sequence_number));
        }
        Some(out)
    }
}

/// Counts a failed read of a shard (`GetRecords`, `GetShardIterator`, `SubscribeToShard`), by
/// error code.
pub(crate) fn count_read_error(stream: &str, shard_id: &str, failure: &CallFailure) {
    metrics::counter!(m::READ_ERRORS, "stream" => stream.to_owned(),
        "shard_id" => shard_id.to_owned(), "error_code" => failure.code.clone())
    .increment(1);
}

/// Looks at `shard_id` in the stream's shard list (after a read found it missing).
pub(crate) async fn look_at_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &kinesis_calls::StreamRef,
    shard_id: &str,
    timeout: Duration,
) -> decide::Shard {
    match kinesis::list_shards(client, stream, timeout).await {
        Ok(shards) => match shards.iter().find(|s| s.id == shard_id) {
            Some(shard) if !shard.closed => decide::Shard::Open,
            _ => decide::Shard::Ended,
        },
        Err(failure) if failure.kind == kinesis_calls::ErrorKind::NotFound => {
            decide::Shard::StreamGone
        }
        Err(_) => decide::Shard::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kinesis_aggregation::{AggregationLimits, Aggregator, UserRecord};

    use super::*;

    fn plain(sequence: &str, data: &str) -> StreamRecord {
        StreamRecord::new(sequence, "pk", Bytes::from(data.to_owned()))
    }

    fn aggregate(sequence: &str, count: usize) -> StreamRecord {
        let mut aggregator = Aggregator::new(AggregationLimits::default());
        for i in 0..count {
            let record = UserRecord::new(format!("key-{i}"), Bytes::from(format!("data-{i}")))
                .expect("valid record");
            assert!(aggregator.try_push(record).is_ok(), "fits");
        }
        let aggregate = aggregator.finish().expect("built");
        StreamRecord::new(sequence, aggregate.partition_key, aggregate.data)
    }

    fn positions(unpacked: &Unpacked) -> Vec<(String, u64)> {
        unpacked
            .records
            .iter()
            .map(|r| (r.sequence_number.to_string(), r.sub_sequence_number))
            .collect()
    }

    #[test]
    fn resumes_inside_an_aggregate_and_skips_what_came_before() {
        let start = Checkpoint::at(SequenceNumber::parse("20").expect("number"), 1);
        let mut unpacker = Unpacker::new(None, &start);
        let unpacked = unpacker.unpack(vec![
            plain("10", "old"),
            aggregate("20", 3),
            plain("30", "new"),
        ]);
        assert_eq!(
            positions(&unpacked),
            vec![("20".to_owned(), 2), ("30".to_owned(), 0)]
        );
        assert_eq!(unpacked.replayed, 3);
    }

    #[test]
    fn skip_delivered_drops_a_replay_after_a_new_start() {
        let mut unpacker = Unpacker::new(None, &Checkpoint::TrimHorizon);
        let first = unpacker.unpack(vec![plain("1", "a"), aggregate("2", 2)]);
        assert_eq!(first.records.len(), 3);
        unpacker.skip_delivered();
        // The service starts again at the last record: it is not delivered twice.
        let again = unpacker.unpack(vec![aggregate("2", 2), plain("3", "b")]);
        assert_eq!(positions(&again), vec![("3".to_owned(), 0)]);
        assert_eq!(again.replayed, 2);
    }

    #[test]
    fn large_answers_are_handed_over_in_batches_without_splitting_an_aggregate() {
        let mut unpacker = Unpacker::new(None, &Checkpoint::TrimHorizon);
        let records = vec![
            aggregate("1", 3),
            plain("2", "a"),
            aggregate("3", 4),
            plain("4", "b"),
        ];
        let mut records = deaggregate_batch(records);
        let sizes: Vec<usize> = std::iter::from_fn(|| unpacker.next_batch(&mut records, 4))
            .map(|b| b.records.len())
            .collect();
        assert_eq!(sizes, vec![4, 4, 1]);
    }

    #[test]
    fn answers_longer_than_the_checksum_window_unpack_whole_and_in_order() {
        // 70 Kinesis records (more than the 32 whose checksums are verified together), every
        // tenth not aggregated, with a checkpoint inside aggregate 41, handed over in small
        // batches.
        let start = Checkpoint::at(SequenceNumber::parse("41").expect("number"), 0);
        let mut unpacker = Unpacker::new(None, &start);
        let records: Vec<StreamRecord> = (1..=70)
            .map(|i| match i % 10 {
                0 => plain(&i.to_string(), "p"),
                _ => aggregate(&i.to_string(), 2),
            })
            .collect();
        let mut split = deaggregate_batch(records);
        let batches: Vec<Unpacked> =
            std::iter::from_fn(|| unpacker.next_batch(&mut split, 5)).collect();
        let delivered: Vec<(String, u64)> = batches.iter().flat_map(positions).collect();
        let replayed: usize = batches.iter().map(|b| b.replayed).sum();
        // Records 1 to 40 (36 aggregates of 2, 4 plain) and the first of 41 came before.
        assert_eq!(replayed, 36 * 2 + 4 + 1);
        let mut want = vec![("41".to_string(), 1)];
        for i in 42..=70 {
            match i % 10 {
                0 => want.push((i.to_string(), 0)),
                _ => want.extend([(i.to_string(), 0), (i.to_string(), 1)]),
            }
        }
        assert_eq!(delivered, want);
        assert!(
            batches.iter().all(|b| b.records.len() <= 6),
            "batches of about 5"
        );
    }

    #[test]
    fn unparsable_sequence_numbers_are_delivered() {
        let start = Checkpoint::at(SequenceNumber::parse("5").expect("number"), 0);
        let mut unpacker = Unpacker::new(None, &start);
        let unpacked = unpacker.unpack(vec![plain("not-a-number", "x")]);
        assert_eq!(unpacked.records.len(), 1);
    }
}
