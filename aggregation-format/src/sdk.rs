//! Conversions to and from `aws-sdk-kinesis` types (feature `sdk`).

use std::time::SystemTime;

use aws_sdk_kinesis::{
    error::BuildError,
    primitives::Blob,
    types::{PutRecordsRequestEntry, Record},
};
use bytes::Bytes;

use crate::{aggregator::KinesisRecord, deaggregator::StreamRecord};

/// A record from `GetRecords` or `SubscribeToShard`, ready for [`deaggregate`](crate::deaggregate).
/// The data buffer is moved, not copied.
impl From<Record> for StreamRecord {
    fn from(record: Record) -> Self {
        StreamRecord {
            sequence_number: record.sequence_number,
            partition_key: record.partition_key.unwrap_or_default(),
            explicit_hash_key: None,
            data: Bytes::from(record.data.into_inner()),
            approximate_arrival_timestamp: record
                .approximate_arrival_timestamp
                .and_then(|t| SystemTime::try_from(t).ok()),
        }
    }
}

/// One `PutRecords` entry. Fails only if the SDK's builder changes its required fields.
impl TryFrom<KinesisRecord> for PutRecordsRequestEntry {
    type Error = BuildError;

    fn try_from(record: KinesisRecord) -> Result<Self, Self::Error> {
        PutRecordsRequestEntry::builder()
            .data(Blob::new(Vec::from(record.data)))
            .partition_key(record.partition_key)
            .set_explicit_hash_key(record.explicit_hash_key.map(|k| k.to_string()))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AggregationLimits, Aggregator, UserRecord, deaggregate};
    use aws_sdk_kinesis::primitives::DateTime;

    #[test]
    fn sdk_record_round_trip() {
        let mut agg = Aggregator::new(AggregationLimits::default());
        agg.try_push(UserRecord::new("a", "one").unwrap()).unwrap();
        agg.try_push(UserRecord::new("b", "two").unwrap()).unwrap();
        let kinesis = agg.finish().unwrap();
        let entry = PutRecordsRequestEntry::try_from(kinesis.clone()).unwrap();
        assert_eq!(entry.partition_key(), Some("a"));
        assert_eq!(
            entry.explicit_hash_key(),
            kinesis.explicit_hash_key.map(|k| k.to_string()).as_deref()
        );

        let read = Record::builder()
            .sequence_number("4960")
            .set_partition_key(entry.partition_key().map(str::to_owned))
            .data(entry.data().clone())
            .approximate_arrival_timestamp(DateTime::from_secs(1_700_000_000))
            .build()
            .unwrap();
        let users = deaggregate(read.into());
        assert_eq!(users.len(), 2);
        assert_eq!(&*users[1].partition_key, "b");
        assert_eq!(&users[1].data[..], b"two");
        assert_eq!(&*users[1].sequence_number, "4960");
        assert_eq!(
            users[0].approximate_arrival_timestamp,
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
        );
    }
}
