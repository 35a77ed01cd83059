//! A benchmark's stream read back as a KCL consumer sees it ([`crate::fixtures::read_shards`]):
//! is every record put there once ([`StreamCheck`]), is every acknowledged record at the
//! sequence and subsequence number its receipt gave, and how much user payload arrived in each
//! second ([`ReadBack`]). The counting is pure ([`tally_indices`], [`ReadBack::of`]); the reads
//! are in [`check_stream`] and [`read_back_receipts`].
//!
//! Records are told apart by the index in their first 8 bytes
//! ([`crate::peers::produce_record_index`]); a record of another length is not ours.

use std::collections::{BTreeMap, HashMap};
use std::time::UNIX_EPOCH;

use kinesis_aggregation::DeaggregatedRecord;

use crate::fault::layer::BoxError;
use crate::fixtures::{ShardRead, read_shards};
use crate::peers::produce_record_index;
use crate::tools::thousands;

/// The stream read back against the indices `0..n` put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCheck {
    /// Records put (indices `0..n`).
    pub n: u64,
    /// User records read, ours or not.
    pub user_records: u64,
    /// Indices present at least once.
    pub distinct: u64,
    /// Appearances of an index after its first.
    pub duplicates: u64,
    /// User records that are not ours (no index below `n`, or another length).
    pub foreign: u64,
    /// User records in aggregates a KCL consumer drops (the shard range rule).
    pub dropped: u64,
}

impl StreamCheck {
    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "{} user records, {} of the {} put present ({} missing), {} duplicates, {} not ours, \
             {} in aggregates a KCL consumer drops (shard range rule)",
            thousands(self.user_records as f64),
            thousands(self.distinct as f64),
            thousands(self.n as f64),
            thousands((self.n - self.distinct) as f64),
            self.duplicates,
            self.foreign,
            self.dropped
        )
    }
}

/// Counts, per record index below `n`, how often it appears among `records` (ours are
/// `data_len` bytes long).
pub fn tally_indices<'a>(
    n: u64,
    data_len: usize,
    records: impl Iterator<Item = &'a DeaggregatedRecord>,
    dropped: u64,
) -> StreamCheck {
    let mut seen = vec![0u8; n as usize];
    let mut check = StreamCheck {
        n,
        dropped,
        ..StreamCheck::default()
    };
    for record in records {
        check.user_records += 1;
        match produce_record_index(&record.data).filter(|i| *i < n && record.data.len() == data_len)
        {
            Some(i) => {
                let count = &mut seen[i as usize];
                if *count == 0 {
                    check.distinct += 1;
                } else {
                    check.duplicates += 1;
                }
                *count = count.saturating_add(1);
            }
            None => check.foreign += 1,
        }
    }
    check
}

/// Reads `stream` back and checks it against the `n` records of `data_len` bytes put.
pub async fn check_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    n: u64,
    data_len: usize,
) -> Result<StreamCheck, BoxError> {
    let shards = read_shards(client, stream).await?;
    let dropped = shards.iter().map(|s| s.dropped.len() as u64).sum();
    Ok(tally_indices(
        n,
        data_len,
        shards.iter().flat_map(|s| s.records.iter()),
        dropped,
    ))
}

/// User payload per arrival second, as a share of the stream's write limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Steady {
    /// Whole seconds counted (the first and last are partial and left out).
    pub seconds: usize,
    /// Mean share over the whole seconds.
    pub mean: f64,
    /// Lowest share of a whole second.
    pub min: f64,
    /// Highest share of a whole second.
    pub max: f64,
    /// Every second's share, the partial first and last included.
    pub series: Vec<f64>,
}

/// The stream read back against the receipts.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadBack {
    /// Every record put, present once?
    pub check: StreamCheck,
    /// Acknowledged records not in the stream at their (sequence, subsequence).
    pub lost: u64,
    /// Acknowledged records whose (sequence, subsequence) holds another record.
    pub mismatched: u64,
    /// Payload per second, when the stream spans at least three arrival seconds.
    pub steady: Option<Steady>,
}

impl ReadBack {
    /// Checks `shards` against the `n` records of `data_len` bytes put and the `acked` receipts
    /// ((sequence, subsequence, index), see [`super::receipts::Tally::acked`]), and measures the
    /// payload per second against `write_limit` (bytes per second).
    pub fn of(
        shards: &[ShardRead],
        acked: &[(String, u64, u64)],
        n: u64,
        data_len: usize,
        write_limit: f64,
    ) -> ReadBack {
        let dropped = shards.iter().map(|s| s.dropped.len() as u64).sum();
        let records = || shards.iter().flat_map(|s| s.records.iter());
        let check = tally_indices(n, data_len, records(), dropped);

        let mut at: HashMap<(&str, u64), Option<u64>> = HashMap::with_capacity(records().count());
        let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
        for record in records() {
            at.insert(
                (&*record.sequence_number, record.sub_sequence_number),
                produce_record_index(&record.data),
            );
            if let Some(arrival) = record.approximate_arrival_timestamp {
                let second = arrival
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                *per_second.entry(second).or_default() += record.data.len() as u64;
            }
        }
        let (mut lost, mut mismatched) = (0, 0);
        for (sequence, sub, index) in acked {
            match at.get(&(&**sequence, *sub)) {
                None => lost += 1,
                Some(found) if *found != Some(*index) => mismatched += 1,
                Some(_) => {}
            }
        }
        ReadBack {
            check,
            lost,
            mismatched,
            steady: steady(&per_second, write_limit),
        }
    }
}

/// The share of `limit` each second's bytes are; whole seconds only for the figures, as the
/// first and last are partial.
fn steady(per_second: &BTreeMap<u64, u64>, limit: f64) -> Option<Steady> {
    let inner: Vec<f64> = per_second
        .values()
        .skip(1)
        .take(per_second.len().saturating_sub(2))
        .map(|bytes| *bytes as f64 / limit)
        .collect();
    (!inner.is_empty()).then(|| Steady {
        seconds: inner.len(),
        mean: inner.iter().sum::<f64>() / inner.len() as f64,
        min: inner.iter().copied().fold(f64::INFINITY, f64::min),
        max: inner.iter().copied().fold(0.0, f64::max),
        series: per_second
            .values()
            .map(|bytes| *bytes as f64 / limit)
            .collect(),
    })
}

/// Reads `stream` back: is every acknowledged record at its (sequence, subsequence), and how
/// much user payload arrived in each second (see [`ReadBack::of`]).
pub async fn read_back_receipts(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    acked: &[(String, u64, u64)],
    n: u64,
    data_len: usize,
    write_limit: f64,
) -> Result<ReadBack, BoxError> {
    let shards = read_shards(client, stream).await?;
    Ok(ReadBack::of(&shards, acked, n, data_len, write_limit))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use kinesis_aggregation::{
        AggregationLimits, Aggregator, HashKey, HashKeyRange, StreamRecord, UserRecord, deaggregate,
    };

    use super::*;
    use crate::peers::produce_record_data;

    const LEN: usize = 16;

    /// The record at (`sequence`, `sub`) as the read-back meets it: read through the
    /// deaggregator, alone when `sub` is 0, else the last of an aggregate of `sub + 1` records.
    fn record(index: u64, sequence: &str, sub: u64, second: u64) -> DeaggregatedRecord {
        let data = Bytes::from(produce_record_data(index, LEN, &[7u8; 64]));
        let stored = if sub == 0 {
            data
        } else {
            let mut aggregator = Aggregator::new(AggregationLimits::default());
            for _ in 0..sub {
                let filler = UserRecord::new("k", Bytes::from_static(b"filler"));
                let pushed = filler.map(|r| aggregator.try_push(r).is_ok());
                assert!(matches!(pushed, Ok(true)), "a filler record aggregates");
            }
            let last = UserRecord::new("k", data).map(|r| aggregator.try_push(r).is_ok());
            assert!(matches!(last, Ok(true)), "the record aggregates");
            let aggregate = aggregator
                .finish()
                .unwrap_or_else(|| panic!("an aggregate"));
            aggregate.data
        };
        let read = StreamRecord::new(sequence, "k", stored).with_approximate_arrival_timestamp(
            SystemTime::UNIX_EPOCH + Duration::from_secs(second),
        );
        let mut records = deaggregate(read);
        assert_eq!(records.len() as u64, sub + 1, "deaggregated");
        let record = records.pop().unwrap_or_else(|| panic!("a record"));
        assert_eq!(
            (record.sub_sequence_number, record.aggregated),
            (sub, sub > 0)
        );
        record
    }

    fn shard(records: Vec<DeaggregatedRecord>, dropped: usize) -> ShardRead {
        ShardRead {
            shard_id: "shardId-000000000000".into(),
            range: HashKeyRange::new(HashKey::new(0), HashKey::new(u128::MAX)).unwrap(),
            closed: false,
            dropped: records.iter().take(dropped).cloned().collect(),
            records,
        }
    }

    #[test]
    fn indices_are_counted_once_and_strangers_apart() {
        let mut short = record(1, "s1", 0, 0);
        short.data = Bytes::from_static(b"\x01\0\0\0\0\0\0\0");
        let records = [
            record(0, "s0", 0, 0),
            record(2, "s0", 1, 0),
            record(2, "s2", 0, 0),
            record(9, "s9", 0, 0),
            short,
        ];
        let check = tally_indices(3, LEN, records.iter(), 4);
        assert_eq!(
            check,
            StreamCheck {
                n: 3,
                user_records: 5,
                distinct: 2,
                duplicates: 1,
                foreign: 2,
                dropped: 4,
            }
        );
        assert!(
            check
                .describe()
                .contains("2 of the 3 put present (1 missing)")
        );
    }

    #[test]
    fn receipts_are_looked_up_at_their_sequence_and_subsequence() {
        let shards = [shard(
            vec![
                record(0, "a", 0, 100),
                record(1, "a", 1, 101),
                record(2, "b", 0, 101),
                record(3, "c", 0, 102),
                record(4, "c", 1, 103),
            ],
            0,
        )];
        let acked = [
            ("a".to_owned(), 0, 0),
            ("a".to_owned(), 1, 1),
            ("b".to_owned(), 0, 3),
            ("z".to_owned(), 0, 4),
        ];
        let read = ReadBack::of(&shards, &acked, 5, LEN, 32.0);
        assert_eq!((read.lost, read.mismatched), (1, 1));
        assert_eq!(read.check.distinct, 5);
        let steady = read.steady.expect("four arrival seconds");
        assert_eq!(steady.seconds, 2);
        assert_eq!(steady.series, vec![0.5, 1.0, 0.5, 0.5]);
        assert_eq!((steady.min, steady.max, steady.mean), (0.5, 1.0, 0.75));
    }

    #[test]
    fn two_arrival_seconds_have_no_steady_state() {
        let shards = [shard(vec![record(0, "a", 0, 1), record(1, "b", 0, 2)], 1)];
        let read = ReadBack::of(&shards, &[], 2, LEN, 1.0);
        assert!(read.steady.is_none());
        assert_eq!(read.check.dropped, 1);
    }
}
