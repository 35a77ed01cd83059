//! Reading a shard with `GetShardIterator` and `GetRecords`: paced under the service's 5 calls
//! per second per shard, idle for a second when caught up, throttles and transient failures
//! retried with backoff, expired iterators obtained again after the last record read.

use std::time::Duration;

use aws_sdk_kinesis::{primitives::DateTime, types::ShardIteratorType};
use kinesis_aggregation::StreamRecord;
use kinesis_calls::{CallError, within};
use tokio::time::Instant;

use super::{CALL_TIMEOUT, Msg, Reader, Retry, Skip, lineage::Start};

/// Records asked for per call (the service's maximum).
const RECORDS_PER_CALL: i32 = 10_000;
/// The shortest time between two calls' starts: the service allows 5 per second per shard,
/// shared by every reader of the shard.
pub(super) const MIN_GAP: Duration = Duration::from_millis(200);
/// The time between calls when caught up and the last call brought records.
const CAUGHT_UP_GAP: Duration = Duration::from_millis(500);
/// The time between calls when caught up and the last call brought nothing (the KCL's idle
/// time between reads is of this order).
pub(super) const IDLE_GAP: Duration = Duration::from_secs(1);

/// How long to wait before the next `GetRecords`, given what the last one brought, how far
/// behind the tip it said the shard is, and how long it took.
pub(super) fn pace(records: usize, millis_behind: Option<i64>, took: Duration) -> Duration {
    let gap = if millis_behind.is_some_and(|m| m > 0) || records >= RECORDS_PER_CALL as usize {
        MIN_GAP
    } else if records > 0 {
        CAUGHT_UP_GAP
    } else {
        IDLE_GAP
    };
    gap.saturating_sub(took)
}

/// Where the next iterator is obtained from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum From {
    Start(Start),
    After(String),
}

/// Reads `reader`'s shard until its end, a failure that retrying cannot help, or the channel
/// closing (the command stops).
pub(super) async fn read(reader: Reader) {
    let mut from = From::Start(reader.start.clone());
    let mut skip = Skip::from_start(&reader.start);
    let mut retry = Retry::default();
    let mut iterator: Option<String> = None;
    super::reach(&reader.start).await;
    loop {
        let current = match iterator.take() {
            Some(current) => current,
            None => match shard_iterator(&reader, &from).await {
                Ok(Some(current)) => current,
                // No iterator: nothing to read in this shard any more.
                Ok(None) => {
                    let _ = reader.tx.send(Msg::Ended(reader.shard.clone())).await;
                    return;
                }
                Err(error) => {
                    if !retry.after(&reader, "GetShardIterator", error).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let started = Instant::now();
        let answer = within(
            CALL_TIMEOUT,
            reader
                .client
                .get_records()
                .shard_iterator(&current)
                .limit(RECORDS_PER_CALL)
                .send(),
        )
        .await;
        let output = match answer {
            Ok(output) => output,
            // Unused for 5 minutes (the output was slow to take records): read again after the
            // last record read.
            Err(error) if error.code == "ExpiredIteratorException" => continue,
            Err(error) => {
                iterator = Some(current);
                if !retry.after(&reader, "GetRecords", error).await {
                    return;
                }
                continue;
            }
        };
        retry.succeeded(&reader).await;
        let took = started.elapsed();
        let behind = output.millis_behind_latest;
        let next = output.next_shard_iterator.filter(|i| !i.is_empty());
        let count = output.records.len();
        if let Some(last) = output.records.last() {
            from = From::After(last.sequence_number.clone());
        }
        let records = skip.deaggregate(output.records.into_iter().map(StreamRecord::from));
        let sent = reader
            .tx
            .send(Msg::Records {
                shard: reader.shard.clone(),
                records,
                behind,
            })
            .await;
        if sent.is_err() {
            return;
        }
        match next {
            Some(next) => iterator = Some(next),
            // The end of a closed shard.
            None => {
                let _ = reader.tx.send(Msg::Ended(reader.shard.clone())).await;
                return;
            }
        }
        tokio::time::sleep(pace(count, behind, took)).await;
    }
}

async fn shard_iterator(reader: &Reader, from: &From) -> Result<Option<String>, CallError> {
    let (kind, sequence, at) = match from {
        From::Start(Start::TrimHorizon) => (ShardIteratorType::TrimHorizon, None, None),
        From::Start(Start::Latest) => (ShardIteratorType::Latest, None, None),
        From::Start(Start::AtTimestamp(at)) => (
            ShardIteratorType::AtTimestamp,
            None,
            Some(DateTime::from(*at)),
        ),
        From::Start(Start::AtSequence(sequence, _)) => (
            ShardIteratorType::AtSequenceNumber,
            Some(sequence.to_string()),
            None,
        ),
        From::After(sequence) => (
            ShardIteratorType::AfterSequenceNumber,
            Some(sequence.clone()),
            None,
        ),
    };
    let request = reader
        .client
        .get_shard_iterator()
        .set_stream_name(reader.stream.name().map(str::to_owned))
        .set_stream_arn(reader.stream.arn().map(str::to_owned))
        .shard_id(reader.shard.as_ref())
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence)
        .set_timestamp(at);
    Ok(within(CALL_TIMEOUT, request.send())
        .await?
        .shard_iterator
        .filter(|i| !i.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_keeps_under_five_calls_a_second_and_idles_when_caught_up() {
        let fast = Duration::from_millis(20);
        // Behind the tip: as fast as the service allows, counting the call's own time.
        assert_eq!(pace(10, Some(5_000), fast), MIN_GAP - fast);
        assert_eq!(pace(0, Some(1), Duration::ZERO), MIN_GAP);
        // A full page means more is waiting, whatever the lag says.
        assert_eq!(pace(10_000, Some(0), Duration::ZERO), MIN_GAP);
        // Caught up.
        assert_eq!(pace(3, Some(0), Duration::ZERO), CAUGHT_UP_GAP);
        assert_eq!(pace(0, Some(0), Duration::ZERO), IDLE_GAP);
        assert_eq!(pace(0, None, Duration::ZERO), IDLE_GAP);
        // A slow call already used the gap.
        assert_eq!(pace(0, Some(0), Duration::from_secs(3)), Duration::ZERO);
        for (records, behind) in [(0, None), (1, Some(0)), (10_000, Some(9)), (0, Some(7))] {
            assert!(pace(records, behind, Duration::ZERO) >= MIN_GAP);
        }
    }
}
