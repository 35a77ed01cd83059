//! Deaggregation of AWS Lambda Kinesis events (feature `lambda`).
//!
//! Lambda delivers record data base64-encoded in the event JSON; `aws_lambda_events` decodes it
//! while deserializing the event, so these functions work on raw bytes.
//!
//! `approximate_arrival_timestamp` is taken from `aws_lambda_events`, whose parser (1.2) reads
//! the digits after the decimal point as a count of milliseconds: Lambda's own three-digit
//! fractions (`1545084650.987`) come out right, but a shorter one such as `.5` reads as 5 ms.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AggregationLimits, Aggregator, HashKey, UserRecord};

    /// Base64 without a dependency: Lambda's event JSON carries data this way.
    fn base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn event_record(sequence: &str, partition_key: &str, data: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "eventSource": "aws:kinesis",
            "eventID": format!("shardId-000000000000:{sequence}"),
            "eventName": "aws:kinesis:record",
            "eventVersion": "1.0",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/example",
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": partition_key,
                "sequenceNumber": sequence,
                "data": base64(data),
                "approximateArrivalTimestamp": 1_700_000_000.987
            }
        })
    }

    #[test]
    fn deaggregates_a_lambda_event_with_base64_data() {
        let mut agg = Aggregator::new(AggregationLimits::default());
        agg.try_push(UserRecord::new("a", "first").unwrap())
            .unwrap();
        agg.try_push(
            UserRecord::new("b", vec![0u8, 255, 1])
                .unwrap()
                .with_explicit_hash_key(HashKey::new(9)),
        )
        .unwrap();
        let aggregate = agg.finish().unwrap();
        let event = serde_json::json!({ "Records": [
            event_record("100", &aggregate.partition_key, &aggregate.data),
            event_record("101", "plain", b"not aggregated"),
        ]});
        let event: KinesisEvent = serde_json::from_value(event).unwrap();
        let users = deaggregate_event(event);
        assert_eq!(users.len(), 3);
        assert_eq!(
            (&*users[0].sequence_number, users[0].sub_sequence_number),
            ("100", 0)
        );
        assert_eq!(&users[0].data[..], b"first");
        assert_eq!(&*users[1].partition_key, "b");
        assert_eq!(&users[1].data[..], &[0u8, 255, 1]);
        assert_eq!(users[1].explicit_hash_key, Some(HashKey::new(9)));
        assert_eq!(users[1].sub_sequence_number, 1);
        assert!(users[1].aggregated);
        assert_eq!(&*users[2].sequence_number, "101");
        assert!(!users[2].aggregated);
        assert_eq!(&users[2].data[..], b"not aggregated");
        assert_eq!(
            users[2].approximate_arrival_timestamp,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_987))
        );
    }
}
