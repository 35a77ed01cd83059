//! Which user records of an aggregate belong to a shard.

use crate::{deaggregator::DeaggregatedRecord, error::Error, hash_key::HashKey};

/// A shard's hash-key range, both ends included (`StartingHashKey`..=`EndingHashKey`).
///
/// After a split or merge, a producer with a stale shard map can put an aggregate on a shard that
/// owns only some of its user records. The Java KCL then drops the whole aggregate; a consumer
/// using [`HashKeyRange::split`] instead delivers the user records the shard owns and can tell
/// which ones it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    start: HashKey,
    end: HashKey,
}

impl HashKeyRange {
    /// The whole hash-key space.
    pub const ALL: HashKeyRange = HashKeyRange {
        start: HashKey::MIN,
        end: HashKey::MAX,
    };

    /// The range `start..=end`; fails when `start > end`.
    pub fn new(start: HashKey, end: HashKey) -> Result<Self, Error> {
        if start > end {
            return Err(Error::OutOfRange {
                name: "starting hash key",
                value: start.get(),
                min: 0,
                max: end.get(),
            });
        }
        Ok(HashKeyRange { start, end })
    }

    /// Parses the decimal `StartingHashKey` and `EndingHashKey` of a shard description.
    pub fn parse(start: &str, end: &str) -> Result<Self, Error> {
        Self::new(HashKey::parse(start)?, HashKey::parse(end)?)
    }

    /// The first hash key of the range.
    pub fn start(&self) -> HashKey {
        self.start
    }

    /// The last hash key of the range (included).
    pub fn end(&self) -> HashKey {
        self.end
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key && key <= self.end
    }

    /// Whether a consumer of this shard should deliver `record`.
    ///
    /// User records of an aggregate are judged by their hash key. A record that was not
    /// aggregated always belongs: Kinesis put it on this shard itself, and its explicit hash key,
    /// which is not returned on reads, may differ from its partition key's hash.
    pub fn admits(&self, record: &DeaggregatedRecord) -> bool {
        !record.aggregated || self.contains(record.hash_key())
    }

    /// Splits records into those this shard should deliver and those it should not, keeping
    /// order in both.
    pub fn split(
        &self,
        records: Vec<DeaggregatedRecord>,
    ) -> (Vec<DeaggregatedRecord>, Vec<DeaggregatedRecord>) {
        records.into_iter().partition(|r| self.admits(r))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn user(partition_key: &str, explicit: Option<u128>, aggregated: bool) -> DeaggregatedRecord {
        DeaggregatedRecord {
            sequence_number: Arc::from("1"),
            sub_sequence_number: 0,
            partition_key: Arc::from(partition_key),
            explicit_hash_key: explicit.map(HashKey::new),
            data: Bytes::new(),
            aggregated,
            approximate_arrival_timestamp: None,
        }
    }

    #[test]
    fn both_ends_are_included() {
        let range = HashKeyRange::new(HashKey::new(10), HashKey::new(20)).unwrap();
        assert!(!range.contains(HashKey::new(9)));
        assert!(range.contains(HashKey::new(10)));
        assert!(range.contains(HashKey::new(20)));
        assert!(!range.contains(HashKey::new(21)));
        assert!(HashKeyRange::ALL.contains(HashKey::MAX));
        assert!(HashKeyRange::new(HashKey::new(2), HashKey::new(1)).is_err());
        assert_eq!(
            HashKeyRange::parse("0", "170141183460469231731687303715884105727").unwrap(),
            HashKeyRange::new(HashKey::MIN, HashKey::new(u128::MAX / 2)).unwrap()
        );
        assert!(HashKeyRange::parse("-1", "5").is_err());
    }

    #[test]
    fn split_keeps_owned_aggregated_records_and_every_raw_record() {
        // MD5("a") starts with 0x0c, MD5("b") with 0x92: lower and upper half.
        let lower = HashKeyRange::new(HashKey::MIN, HashKey::new(u128::MAX / 2)).unwrap();
        let records = vec![
            user("a", None, true),
            user("b", None, true),
            user("b", Some(5), true),
            user("a", Some(u128::MAX), true),
            // Not aggregated: Kinesis itself placed it here, whatever its key hashes to.
            user("b", None, false),
        ];
        let (inside, outside) = lower.split(records.clone());
        assert_eq!(
            inside,
            vec![records[0].clone(), records[2].clone(), records[4].clone()]
        );
        assert_eq!(outside, vec![records[1].clone(), records[3].clone()]);
    }
}
