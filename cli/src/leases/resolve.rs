//! `reset --to TIME`: the checkpoint that makes a worker resume with the first record that
//! arrived at or after a time. The lease table cannot hold a time (the KCL's `AT_TIMESTAMP`
//! sentinel means the worker's own configured time), and a checkpoint means "processed up to
//! and including": so the checkpoint is the last user record that arrived before the time,
//! found by reading the shard from a little before it, wider and wider, and `TRIM_HORIZON` when
//! no record in retention is older.

use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::{primitives::DateTime, types::ShardIteratorType};
use kinesis_aggregation::{StreamRecord, deaggregate};
use kinesis_calls::{StreamRef, within};
use kinesis_consumer::{Checkpoint, SequenceNumber};

use crate::error::CliError;

/// How far before the time reading starts, tried in turn; then the trim horizon.
const WINDOWS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(60),
    Duration::from_secs(3600),
    Duration::from_secs(86_400),
];
/// The most `GetRecords` calls spent in all.
const MAX_CALLS: usize = 500;
/// The longest wait for one call's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two calls on the shard (the service allows 5 per second).
const GAP: Duration = Duration::from_millis(200);

/// What one pass over the records found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    /// The last user record seen that arrived before the time.
    pub(crate) last_before: Option<(String, u64)>,
    /// Whether a record at or after the time was met (reading can stop).
    pub(crate) reached: bool,
}

impl Pass {
    /// Takes in the next records of the shard, in order.
    pub(crate) fn see(&mut self, records: Vec<StreamRecord>, at: SystemTime) {
        for record in records {
            if self.reached {
                return;
            }
            match record.approximate_arrival_timestamp {
                Some(arrival) if arrival >= at => self.reached = true,
                _ => {
                    let sequence = record.sequence_number.clone();
                    let last_sub = deaggregate(record)
                        .last()
                        .map_or(0, |r| r.sub_sequence_number);
                    self.last_before = Some((sequence, last_sub));
                }
            }
        }
    }
}

/// The checkpoint before the first record of `shard` that arrived at or after `at`.
pub(crate) async fn checkpoint_before(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    shard: &str,
    at: SystemTime,
) -> Result<Checkpoint, CliError> {
    let mut calls = 0;
    // The service refuses a time in the future: the records before such a time are those up to
    // now.
    let now = SystemTime::now();
    let starts = WINDOWS
        .iter()
        .filter_map(|w| at.checked_sub(*w))
        .map(|from| Some(from.min(now)))
        .chain([None]);
    for from in starts {
        let pass = read_until(client, stream, shard, from, at, &mut calls).await?;
        if let Some((sequence, sub)) = pass.last_before {
            let sequence = SequenceNumber::parse(&sequence)
                .map_err(|e| CliError::Aws(format!("{shard}: a record's sequence number: {e}")))?;
            return Ok(Checkpoint::at(sequence, sub));
        }
        if from.is_none() {
            break;
        }
    }
    Ok(Checkpoint::TrimHorizon)
}

/// Reads from `from` (a time, or the trim horizon) until a record at or after `at`, the tip, or
/// the shard's end.
async fn read_until(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    shard: &str,
    from: Option<SystemTime>,
    at: SystemTime,
    calls: &mut usize,
) -> Result<Pass, CliError> {
    let failed = |what: &str, e: &kinesis_calls::CallError| {
        CliError::call(
            &format!("finding the records of {shard} before the time: {what}"),
            e,
        )
    };
    let request = client
        .get_shard_iterator()
        .set_stream_name(stream.name().map(str::to_owned))
        .set_stream_arn(stream.arn().map(str::to_owned))
        .shard_id(shard);
    let request = match from {
        Some(from) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(from)),
        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let mut iterator = within(CALL_TIMEOUT, request.send())
        .await
        .map_err(|e| failed("GetShardIterator", &e))?
        .shard_iterator;
    let mut pass = Pass::default();
    while let Some(current) = iterator.filter(|i| !i.is_empty()) {
        if *calls >= MAX_CALLS {
            return Err(CliError::Aws(format!(
                "{shard}: no record at or after the time within {MAX_CALLS} GetRecords calls; \
                 give a sequence number instead"
            )));
        }
        *calls += 1;
        let output = within(
            CALL_TIMEOUT,
            client.get_records().shard_iterator(current).send(),
        )
        .await
        .map_err(|e| failed("GetRecords", &e))?;
        let empty = output.records.is_empty();
        pass.see(
            output.records.into_iter().map(StreamRecord::from).collect(),
            at,
        );
        let caught_up = output.millis_behind_latest.is_none_or(|m| m == 0);
        if pass.reached || (empty && caught_up) {
            break;
        }
        iterator = output.next_shard_iterator;
        tokio::time::sleep(GAP).await;
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use kinesis_aggregation::{AggregationLimits, Aggregator, UserRecord};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn plain(seq: &str, arrival: u64) -> StreamRecord {
        StreamRecord::new(seq, "k", b"x".to_vec()).with_approximate_arrival_timestamp(at(arrival))
    }

    fn aggregated(seq: &str, arrival: u64, n: usize) -> StreamRecord {
        let mut aggregator = Aggregator::new(AggregationLimits::default());
        for i in 0..n {
            aggregator
                .try_push(UserRecord::new("k", format!("{i}")).expect("record"))
                .expect("fits");
        }
        let record = aggregator.finish().expect("records");
        StreamRecord::new(seq, record.partition_key, record.data)
            .with_approximate_arrival_timestamp(at(arrival))
    }

    #[test]
    fn the_last_user_record_before_the_time_is_kept() {
        let mut pass = Pass::default();
        pass.see(vec![plain("1", 10), aggregated("2", 11, 3)], at(20));
        assert_eq!(
            pass,
            Pass {
                last_before: Some(("2".to_owned(), 2)),
                reached: false
            }
        );
        pass.see(vec![plain("3", 19), plain("4", 20), plain("5", 5)], at(20));
        // Reading stops at the first record at the time; nothing after it counts.
        assert_eq!(
            pass,
            Pass {
                last_before: Some(("3".to_owned(), 0)),
                reached: true
            }
        );
    }

    #[test]
    fn nothing_before_the_time_leaves_no_record() {
        let mut pass = Pass::default();
        pass.see(vec![plain("7", 30)], at(20));
        assert_eq!(
            pass,
            Pass {
                last_before: None,
                reached: true
            }
        );
    }
}
