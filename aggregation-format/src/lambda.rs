//! Deaggregation of AWS Lambda Kinesis events (feature `lambda`).
//!
//! Lambda delivers record data base64-encoded in the event JSON; `aws_lambda_events` decodes it
//! while deserializing the event, so these functions work on raw bytes.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use bytes::Bytes;

use crate::deaggregator::{DeaggregatedRecord, StreamRecord, deaggregate};

impl From<KinesisEventRecord> for StreamRecord {
    fn from(record: KinesisEventRecord) -> Self {
        let kinesis = record.kinesis;
        let millis = kinesis.approximate_arrival_timestamp.0.timestamp_millis();
        let approximate_arrival_timestamp = u64::try_from(millis)
            .ok()
            .and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)));
        StreamRecord {
            sequence_number: kinesis.sequence_number,
            partition_key: kinesis.partition_key,
            explicit_hash_key: None,
            data: Bytes::from(kinesis.data.0),
            approximate_arrival_timestamp,
        }
    }
}

/// All user records of a Lambda Kinesis event, in order.
///
/// To report a partial batch failure, return the `sequence_number` of the first failed user
/// record: Lambda retries from that Kinesis record, so the user records before it in the same
/// aggregate are delivered again.
pub fn deaggregate_event(event: KinesisEvent) -> Vec<DeaggregatedRecord> {
    event
        .records
        .into_iter()
        .flat_map(|record| deaggregate(record.into()))
        .collect()
}
