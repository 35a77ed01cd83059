//! Deaggregation of AWS Lambda Kinesis events, and the partial batch failure response that
//! answers them (feature `lambda`).
//!
//! ```text
//!  KinesisEvent ──▶ deaggregate_event ──▶ user records ──▶ the application
//!       │                                                       │ failed ones
//!       ▼                                                       ▼
//!  BatchFailures::new ─────────────────────────────────▶ BatchFailures::fail
//!                                                               │
//!                                                               ▼
//!                  KinesisEventResponse ◀── into_response (the failure earliest in the batch)
//! ```
//!
//! Lambda delivers record data base64-encoded in the event JSON; `aws_lambda_events` decodes it
//! while deserializing the event, so these functions work on raw bytes.
//!
//! `approximate_arrival_timestamp` is taken from `aws_lambda_events`, whose parser (1.2) reads
//! the digits after the decimal point as a count of milliseconds: Lambda's own three-digit
//! fractions (`1545084650.987`) come out right, but a shorter one such as `.5` reads as 5 ms.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::KinesisEventResponse;
use bytes::Bytes;

use crate::{
    Error,
    deaggregator::{DeaggregatedRecord, StreamRecord, deaggregate_batch},
};

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
/// Every Kinesis record yields at least one user record: an aggregate that does not verify
/// (wrong MD5, bad protobuf...) comes back whole, as one record with `aggregated` false and the
/// aggregate's bytes as its data (see [`deaggregate`](crate::deaggregate)).
///
/// To report failed user records, use [`BatchFailures`]: Lambda retries from the Kinesis record
/// of the earliest failure, so the user records before it in the same aggregate are delivered
/// again.
pub fn deaggregate_event(event: KinesisEvent) -> Vec<DeaggregatedRecord> {
    // The event's aggregates are verified several at a time (`deaggregate_batch`).
    deaggregate_batch(event.records.into_iter().map(StreamRecord::from))
        .flat_map(|split| split.records)
        .collect()
}

/// The partial batch failure response of one Lambda Kinesis event, from the user records that
/// failed: the first failure (in batch order) wins.
///
/// Lambda honours the response only when the event source mapping has `ReportBatchItemFailures`
/// in its `FunctionResponseTypes`; without it, any failure of the invocation retries the whole
/// batch. With it, Lambda checkpoints just before the *earliest* reported record, in batch
/// order, whatever order failures were reported in, and delivers that record and everything
/// after it again. So the response names one record, the earliest failure, and that implies:
///
/// - every user record of the failed Kinesis record comes again, including the ones that
///   succeeded before the failure inside the same aggregate (Lambda knows only Kinesis records,
///   not the user records packed in them);
/// - every Kinesis record after it in the batch comes again, failed or not.
///
/// Processing must therefore be idempotent. A failure that retrying cannot fix (a record that
/// does not parse) is retried until the mapping's `MaximumRetryAttempts` or
/// `MaximumRecordAgeInSeconds` runs out (by default never: the shard stays blocked for as long
/// as the record is in the stream), so set those with an on-failure destination, or skip such
/// records instead of failing them.
///
/// A failed record whose sequence number is empty (an event without `sequenceNumber`) is
/// reported with an empty identifier, which Lambda takes as a failure of the whole batch.
///
/// ```
/// use aws_lambda_events::event::kinesis::KinesisEvent;
/// use aws_lambda_events::event::streams::KinesisEventResponse;
/// use kinesis_aggregation::lambda::{BatchFailures, deaggregate_event};
///
/// fn handle(event: KinesisEvent) -> Result<KinesisEventResponse, kinesis_aggregation::Error> {
///     let records = deaggregate_event(event);
///     let mut failures = BatchFailures::for_records(&records);
///     for record in &records {
///         if std::str::from_utf8(&record.data).is_err() {
///             failures.fail(record)?;
///         }
///     }
///     Ok(failures.into_response())
/// }
/// # let response = handle(KinesisEvent::default())?;
/// # assert!(response.batch_item_failures.is_empty());
/// # Ok::<(), kinesis_aggregation::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchFailures {
    /// Each Kinesis record's sequence number and its position in the batch (its first place, if
    /// an event were to hold one twice).
    positions: HashMap<Box<str>, usize>,
    /// The failure earliest in the batch so far: its position and sequence number.
    first: Option<(usize, Box<str>)>,
}

impl BatchFailures {
    /// For the Kinesis records of `event`, with no failure yet. Build it before the event is
    /// consumed by [`deaggregate_event`].
    pub fn new(event: &KinesisEvent) -> Self {
        Self::of_sequence_numbers(
            event
                .records
                .iter()
                .map(|record| record.kinesis.sequence_number.as_str()),
        )
    }

    /// For the Kinesis records the user records came in (all of an event's, when `records` is
    /// what [`deaggregate_event`] returned), with no failure yet.
    pub fn for_records(records: &[DeaggregatedRecord]) -> Self {
        Self::of_sequence_numbers(records.iter().map(|record| &*record.sequence_number))
    }

    fn of_sequence_numbers<'a>(sequence_numbers: impl Iterator<Item = &'a str>) -> Self {
        let mut positions = HashMap::new();
        for (position, sequence_number) in sequence_numbers.enumerate() {
            if !positions.contains_key(sequence_number) {
                positions.insert(Box::from(sequence_number), position);
            }
        }
        BatchFailures {
            positions,
            first: None,
        }
    }

    /// Reports a user record as failed: its Kinesis record (for a user record of an aggregate,
    /// the aggregate's) is reported, unless a failure earlier in the batch already is. Failing a
    /// record twice changes nothing.
    ///
    /// Fails with [`Error::RecordNotInEvent`] if the record did not come in this event; nothing
    /// is reported then.
    pub fn fail(&mut self, record: &DeaggregatedRecord) -> Result<(), Error> {
        self.fail_sequence_number(&record.sequence_number)
    }

    /// Reports the Kinesis record with this sequence number as failed, unless a failure earlier
    /// in the batch already is.
    ///
    /// Fails with [`Error::RecordNotInEvent`] if no record of the event has it; nothing is
    /// reported then.
    pub fn fail_sequence_number(&mut self, sequence_number: &str) -> Result<(), Error> {
        let Some((key, &position)) = self.positions.get_key_value(sequence_number) else {
            return Err(Error::RecordNotInEvent {
                sequence_number: sequence_number.to_owned(),
            });
        };
        if self
            .first
            .as_ref()
            .is_none_or(|(earliest, _)| position < *earliest)
        {
            self.first = Some((position, key.clone()));
        }
        Ok(())
    }

    /// Whether no record has failed: the whole batch succeeded.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The sequence number the response will carry: the failure earliest in the batch.
    pub fn first_failure(&self) -> Option<&str> {
        self.first
            .as_ref()
            .map(|(_, sequence_number)| &**sequence_number)
    }

    /// The response to return from the handler: no item when nothing failed (Lambda
    /// checkpoints the whole batch), else one item naming the failure earliest in the batch.
    pub fn into_response(self) -> KinesisEventResponse {
        let mut response = KinesisEventResponse::default();
        if let Some((_, sequence_number)) = self.first {
            response.add_failure(String::from(sequence_number));
        }
        response
    }
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

    pub(super) fn event_record(
        sequence: &str,
        partition_key: &str,
        data: &[u8],
    ) -> serde_json::Value {
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

#[cfg(test)]
mod batch_failure_tests {
    use super::*;
    use crate::{AggregationLimits, Aggregator, UserRecord};

    /// One Kinesis record of a test event.
    enum Spec {
        /// An aggregate of these user payloads.
        Aggregate(&'static [&'static str]),
        /// An aggregate of these user payloads whose MD5 trailer is broken: it is passed
        /// through whole, as one record.
        Corrupt(&'static [&'static str]),
        /// A record that is not an aggregate.
        Plain(&'static str),
    }

    /// A failure reported to `BatchFailures`.
    #[derive(Clone, Copy, Debug)]
    enum Report {
        /// The user record at this index of what `deaggregate_event` returned.
        User(usize),
        /// A sequence number of the event.
        Sequence(&'static str),
        /// A sequence number the event does not hold: refused.
        Unknown(&'static str),
    }

    fn aggregate(payloads: &[&str]) -> Vec<u8> {
        let mut agg = Aggregator::new(AggregationLimits::default());
        for (i, payload) in payloads.iter().enumerate() {
            agg.try_push(UserRecord::new(format!("key-{i}"), payload.to_string()).unwrap())
                .unwrap();
        }
        agg.finish().unwrap().data.to_vec()
    }

    fn event(records: &[(&str, Spec)]) -> KinesisEvent {
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|(sequence, spec)| {
                let data = match spec {
                    Spec::Aggregate(payloads) => aggregate(payloads),
                    Spec::Corrupt(payloads) => {
                        let mut data = aggregate(payloads);
                        let last = data.len() - 1;
                        data[last] ^= 0xFF;
                        data
                    }
                    Spec::Plain(payload) => payload.as_bytes().to_vec(),
                };
                tests::event_record(sequence, "key", &data)
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    struct Case {
        name: &'static str,
        records: Vec<(&'static str, Spec)>,
        reports: &'static [Report],
        /// The sequence number the response names.
        expected: Option<&'static str>,
    }

    fn cases() -> Vec<Case> {
        use Report::*;
        use Spec::*;
        vec![
            Case {
                name: "aggregated: the last user record fails, its aggregate is named",
                records: vec![("100", Aggregate(&["a", "b", "c"]))],
                reports: &[User(2)],
                expected: Some("100"),
            },
            Case {
                name: "aggregated: two aggregates, failures reported last first",
                records: vec![
                    ("100", Aggregate(&["a", "b"])),
                    ("101", Aggregate(&["c", "d"])),
                ],
                reports: &[User(3), User(1)],
                expected: Some("100"),
            },
            Case {
                name: "aggregated: the earlier failure reported first stays",
                records: vec![
                    ("100", Aggregate(&["a", "b"])),
                    ("101", Aggregate(&["c", "d"])),
                ],
                reports: &[User(1), User(2), User(3)],
                expected: Some("100"),
            },
            Case {
                name: "plain: failures out of order",
                records: vec![
                    ("100", Plain("a")),
                    ("101", Plain("b")),
                    ("102", Plain("c")),
                ],
                reports: &[User(2), User(1)],
                expected: Some("101"),
            },
            Case {
                name: "plain: only the last fails",
                records: vec![
                    ("100", Plain("a")),
                    ("101", Plain("b")),
                    ("102", Plain("c")),
                ],
                reports: &[User(2)],
                expected: Some("102"),
            },
            Case {
                name: "mixed: the plain record before the aggregate is reported last",
                records: vec![
                    ("100", Plain("a")),
                    ("101", Aggregate(&["b", "c"])),
                    ("102", Plain("d")),
                ],
                reports: &[User(2), User(3), User(0)],
                expected: Some("100"),
            },
            Case {
                name: "mixed: by sequence number, later then earlier",
                records: vec![
                    ("100", Plain("a")),
                    ("101", Aggregate(&["b", "c"])),
                    ("102", Plain("d")),
                ],
                reports: &[Sequence("102"), Sequence("101")],
                expected: Some("101"),
            },
            Case {
                name: "mixed: a corrupt aggregate is one record, and can fail",
                records: vec![("100", Corrupt(&["a", "b"])), ("101", Plain("c"))],
                reports: &[User(1), User(0)],
                expected: Some("100"),
            },
            Case {
                name: "batch order decides, not the order of the sequence numbers as text",
                records: vec![("9", Plain("a")), ("10", Plain("b"))],
                reports: &[Sequence("10"), Sequence("9")],
                expected: Some("9"),
            },
            Case {
                name: "a record failed twice is named once",
                records: vec![("100", Plain("a")), ("101", Aggregate(&["b", "c"]))],
                reports: &[User(1), User(1), User(2), Sequence("101")],
                expected: Some("101"),
            },
            Case {
                name: "an unknown sequence number is refused and changes nothing",
                records: vec![("100", Plain("a")), ("101", Plain("b"))],
                reports: &[Unknown("99"), Unknown(""), User(1), Unknown("100 ")],
                expected: Some("101"),
            },
            Case {
                name: "nothing fails",
                records: vec![("100", Aggregate(&["a", "b"])), ("101", Plain("c"))],
                reports: &[],
                expected: None,
            },
            Case {
                name: "empty event: nothing to fail",
                records: vec![],
                reports: &[Unknown("100")],
                expected: None,
            },
        ]
    }

    #[test]
    fn the_response_names_the_failure_earliest_in_the_batch() {
        for case in cases() {
            let name = case.name;
            let event = event(&case.records);
            let from_event = BatchFailures::new(&event);
            let users = deaggregate_event(event);
            let mut failures = BatchFailures::for_records(&users);
            let mut by_event = from_event;
            for &report in case.reports {
                let (outcome, again) = match report {
                    Report::User(i) => (failures.fail(&users[i]), by_event.fail(&users[i])),
                    Report::Sequence(s) | Report::Unknown(s) => (
                        failures.fail_sequence_number(s),
                        by_event.fail_sequence_number(s),
                    ),
                };
                let expected = match report {
                    Report::Unknown(s) => Err(Error::RecordNotInEvent {
                        sequence_number: s.to_owned(),
                    }),
                    _ => Ok(()),
                };
                assert_eq!(outcome, expected, "{name}: {report:?}");
                assert_eq!(again, expected, "{name}: {report:?} (built from the event)");
            }
            assert_eq!(failures.first_failure(), case.expected, "{name}");
            assert_eq!(failures.is_empty(), case.expected.is_none(), "{name}");
            assert_eq!(
                by_event.first_failure(),
                case.expected,
                "{name} (from the event)"
            );

            let wire = serde_json::to_value(failures.into_response()).unwrap();
            let items: Vec<serde_json::Value> = case
                .expected
                .iter()
                .map(|s| serde_json::json!({ "itemIdentifier": s }))
                .collect();
            assert_eq!(
                wire,
                serde_json::json!({ "batchItemFailures": items }),
                "{name}"
            );
        }
    }

    #[test]
    fn an_unknown_sequence_number_is_named_in_the_error() {
        let mut failures = BatchFailures::new(&KinesisEvent::default());
        let error = failures.fail_sequence_number("4959").unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "sequence number \"4959\" is not one of the event's Kinesis records; a partial batch \
             response may name only records of the batch it answers"
        );
        assert!(failures.is_empty());
        assert!(failures.into_response().batch_item_failures.is_empty());
    }

    #[test]
    fn a_corrupt_aggregate_comes_whole_as_one_record() {
        let users = deaggregate_event(event(&[
            ("100", Spec::Corrupt(&["a", "b"])),
            ("101", Spec::Plain("c")),
        ]));
        assert_eq!(users.len(), 2);
        assert_eq!(
            (&*users[0].sequence_number, users[0].aggregated),
            ("100", false)
        );
        assert!(crate::has_aggregate_magic(&users[0].data));
        assert_eq!(&*users[1].sequence_number, "101");
    }

    #[test]
    fn a_record_of_another_event_is_refused() {
        let users = deaggregate_event(event(&[("200", Spec::Aggregate(&["x", "y"]))]));
        let mut failures = BatchFailures::new(&event(&[("100", Spec::Plain("a"))]));
        assert_eq!(
            failures.fail(&users[1]),
            Err(Error::RecordNotInEvent {
                sequence_number: "200".to_owned()
            })
        );
        assert_eq!(failures.first_failure(), None);
    }
}
