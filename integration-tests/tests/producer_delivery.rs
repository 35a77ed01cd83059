//! The producer against ferrokinesis through the real SDK: every receipt points at the record as
//! a consumer reads it back (shard, sequence, subsequence), with and without aggregation; bad
//! input is refused with typed errors without disturbing anything else; metrics are recorded.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use kinesis_integration_tests::Ferrokinesis;
use kinesis_integration_tests::fixtures::{create_stream, unique_name};
use kinesis_producer::{
    Delivery, Error, HashKey, MaxRecordSize, Producer, RecordError, RecordSizeLimit, UserRecord,
    WireFormat,
};

mod support;
use support::{ReadBack, put_all, read_back, records};

fn check_receipts(
    sent: &[UserRecord],
    deliveries: &[Delivery],
    seen: &HashMap<(String, u64), support::Seen>,
) {
    support::check_receipts(sent.iter().zip(deliveries), seen);
    assert!(deliveries.iter().all(|d| !d.attempts().is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_records_are_read_back_exactly_as_their_receipts_say() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-agg");
    create_stream(&client, &stream, 4).await.unwrap();
    let producer = Producer::builder(client.clone(), stream.as_str())
        .linger(Duration::from_millis(20))
        .build()
        .await
        .unwrap();

    let sent = records(5000, 500);
    let deliveries = put_all(&producer, &sent).await;
    producer.shutdown().await;

    let ReadBack {
        seen,
        total,
        dropped,
        ..
    } = read_back(&client, &stream).await;
    assert_eq!(dropped, 0, "no aggregate straddles shards");
    assert_eq!(total, sent.len(), "each record once, no duplicates");
    check_receipts(&sent, &deliveries, &seen);
    let shards: std::collections::HashSet<_> =
        deliveries.iter().map(|d| d.shard_id().to_owned()).collect();
    assert_eq!(shards.len(), 4, "records reach every shard");
    assert!(
        deliveries
            .iter()
            .all(|d| d.aggregated() || d.sub_sequence_number() == 0)
    );
    let aggregated = deliveries.iter().filter(|d| d.aggregated()).count();
    assert!(
        aggregated > 4000,
        "most records travel in aggregates: {aggregated}"
    );
    // Records of one aggregate share its sequence number and are numbered from 0.
    let mut by_sequence: HashMap<&str, Vec<u64>> = HashMap::new();
    for d in &deliveries {
        by_sequence
            .entry(d.sequence_number())
            .or_default()
            .push(d.sub_sequence_number());
    }
    for (sequence, mut subs) in by_sequence {
        subs.sort_unstable();
        let expected: Vec<u64> = (0..subs.len() as u64).collect();
        assert_eq!(subs, expected, "subsequence numbers of {sequence}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaggregated_records_are_read_back_exactly_as_their_receipts_say() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-raw");
    create_stream(&client, &stream, 3).await.unwrap();
    let producer = Producer::builder(client.clone(), stream.as_str())
        .aggregation(false)
        .linger(Duration::from_millis(20))
        .build()
        .await
        .unwrap();

    // Explicit hash keys too: they route the record, whatever its partition key.
    let mut sent = records(2000, 2000);
    for (i, record) in sent.iter_mut().enumerate().step_by(7) {
        *record = record
            .clone()
            .with_explicit_hash_key(HashKey::new(u128::MAX / 2000 * i as u128));
    }
    let deliveries = put_all(&producer, &sent).await;
    producer.shutdown().await;

    let ReadBack { seen, total, .. } = read_back(&client, &stream).await;
    assert_eq!(total, sent.len());
    check_receipts(&sent, &deliveries, &seen);
    assert!(
        deliveries
            .iter()
            .all(|d| !d.aggregated() && d.sub_sequence_number() == 0)
    );
}

/// The producer writes `PutRecords` bodies itself (one pass, not the SDK's serializer), in JSON
/// or CBOR: keys a JSON string must escape, keys of every length and explicit hash keys at both
/// ends of the range reach the service as they were put, and CBOR answers are read. (A stream
/// given by ARN is checked on the body alone: ferrokinesis refuses `ListShards` by `StreamARN`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_json_must_escape_travel_exactly() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-json");
    create_stream(&client, &stream, 3).await.unwrap();
    let keys = [
        "quote\" and \\ backslash / slash".to_owned(),
        "control \u{1} \u{8} \t \n \u{c} \r \u{1f} \u{7f}".to_owned(),
        "ünïcødé ☃ 𝄞 \u{2028}".to_owned(),
        "</script>{\"Records\":[]}".to_owned(),
        // 256 characters (the limit); ferrokinesis counts bytes, so the multi-byte key is shorter.
        "k".repeat(256),
        "é".repeat(128),
        "k".to_owned(),
    ];
    let hash_keys = [Some(0), Some(u128::MAX), Some(u128::MAX / 3 * 2), None];
    let mut sent = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        for (j, hash) in hash_keys.iter().enumerate() {
            let data: Vec<u8> = (0..(i * 31 + j * 7) % 200).map(|b| b as u8).collect();
            let record = UserRecord::new(key.clone(), data).unwrap();
            sent.push(match hash {
                Some(h) => record.with_explicit_hash_key(HashKey::new(*h)),
                None => record,
            });
        }
    }
    for (format, aggregation) in [
        (WireFormat::Json, false),
        (WireFormat::Json, true),
        (WireFormat::Cbor, false),
        (WireFormat::Cbor, true),
    ] {
        let producer = Producer::builder(client.clone(), stream.as_str())
            .aggregation(aggregation)
            .wire_format(format)
            .linger(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        let deliveries = put_all(&producer, &sent).await;
        producer.shutdown().await;
        let ReadBack { seen, .. } = read_back(&client, &stream).await;
        check_receipts(&sent, &deliveries, &seen);
        // The explicit hash key routed each record: both ends of the range land on the first
        // and last shards.
        for (record, delivery) in sent.iter().zip(&deliveries) {
            if record.explicit_hash_key() == Some(HashKey::new(0)) {
                assert!(
                    delivery.shard_id().ends_with('0'),
                    "{}",
                    delivery.shard_id()
                );
            }
            if record.explicit_hash_key() == Some(HashKey::new(u128::MAX)) {
                assert!(
                    delivery.shard_id().ends_with('2'),
                    "{}",
                    delivery.shard_id()
                );
            }
        }
    }
}

/// `awsJson1_1` under another name: to the producer a client of this protocol speaks another
/// protocol, which ferrokinesis still reads. Counts the `PutRecords` requests it serialized with
/// entries in them.
#[derive(Debug)]
struct Renamed(aws_smithy_json::protocol::aws_json_rpc::AwsJsonRpcProtocol);

static SERIALIZED_WITH_ENTRIES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

const RENAMED: aws_smithy_schema::ShapeId<'static> =
    aws_smithy_schema::ShapeId::from_parts("test.protocols#renamed", "test.protocols", "renamed");

mod renamed {
    use super::{RENAMED, Renamed};
    use aws_smithy_runtime_api::http::{Request, Response};
    use aws_smithy_schema::protocol::ClientProtocol;
    use aws_smithy_schema::serde::{SerdeError, SerializableStruct, ShapeDeserializer};
    use aws_smithy_schema::{Schema, ShapeId};
    use aws_smithy_types::config_bag::ConfigBag;
    use aws_smithy_types::endpoint::Endpoint;
    use aws_smithy_types::error::metadata::Builder as ErrorMetadataBuilder;

    impl ClientProtocol for Renamed {
        fn protocol_id(&self) -> &ShapeId<'static> {
            &RENAMED
        }
        fn serialize_request(
            &self,
            input: &dyn SerializableStruct,
            input_schema: &Schema<'_>,
            endpoint: &str,
            cfg: &ConfigBag,
        ) -> Result<Request, SerdeError> {
            let request = self
                .0
                .serialize_request(input, input_schema, endpoint, cfg)?;
            if request
                .body()
                .bytes()
                .is_some_and(|body| body.starts_with(b"{\"Records\":[{"))
            {
                super::SERIALIZED_WITH_ENTRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(request)
        }
        fn deserialize_response<'a>(
            &self,
            response: &'a Response,
            output_schema: &Schema<'_>,
            cfg: &'a ConfigBag,
        ) -> Result<Box<dyn ShapeDeserializer + 'a>, SerdeError> {
            self.0.deserialize_response(response, output_schema, cfg)
        }
        fn parse_error_metadata(
            &self,
            response: &Response,
            cfg: &ConfigBag,
        ) -> Result<ErrorMetadataBuilder, SerdeError> {
            self.0.parse_error_metadata(response, cfg)
        }
        fn deserialize_error_response<'a>(
            &self,
            response: &'a Response,
            cfg: &'a ConfigBag,
        ) -> Result<Box<dyn ShapeDeserializer + 'a>, SerdeError> {
            self.0.deserialize_error_response(response, cfg)
        }
        fn update_endpoint(
            &self,
            request: &mut Request,
            endpoint: &Endpoint,
            cfg: &ConfigBag,
        ) -> Result<(), SerdeError> {
            self.0.update_endpoint(request, endpoint, cfg)
        }
        fn payload_codec(&self) -> Option<&dyn aws_smithy_schema::codec::DynCodec> {
            self.0.payload_codec()
        }
        fn event_stream_media_type(&self) -> Option<&str> {
            self.0.event_stream_media_type()
        }
        fn parse_event_stream_error_metadata(
            &self,
            payload: &[u8],
        ) -> Result<ErrorMetadataBuilder, SerdeError> {
            self.0.parse_event_stream_error_metadata(payload)
        }
    }
}

/// A client set to another protocol than the service's `awsJson1_1` gets the SDK's own
/// serialization of the entries: the producer writes bodies only in the protocol it knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_protocol_gets_the_sdks_serialization() {
    use aws_smithy_json::protocol::aws_json_rpc::AwsJsonRpcProtocol;

    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-renamed");
    create_stream(&client, &stream, 2).await.unwrap();
    let renamed = aws_sdk_kinesis::Client::from_conf(
        client
            .config()
            .to_builder()
            .protocol(Renamed(AwsJsonRpcProtocol::aws_json_1_1()))
            .build(),
    );
    let producer = Producer::builder(renamed, stream.as_str())
        .linger(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let sent = records(500, 50);
    let deliveries = put_all(&producer, &sent).await;
    producer.shutdown().await;
    let ReadBack { seen, total, .. } = read_back(&client, &stream).await;
    assert_eq!(total, sent.len());
    check_receipts(&sent, &deliveries, &seen);
    assert!(
        SERIALIZED_WITH_ENTRIES.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the SDK serialized the entries (the producer wrote no body)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_nothing_else_is_affected() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-bad");
    create_stream(&client, &stream, 2).await.unwrap();

    // Construction-time checks: key and explicit hash key.
    let too_long = "k".repeat(257);
    assert!(matches!(
        UserRecord::new("", "x"),
        Err(RecordError::EmptyPartitionKey { .. })
    ));
    assert!(matches!(
        UserRecord::new(too_long.as_str(), "x"),
        Err(RecordError::PartitionKeyTooLong { .. })
    ));
    // 256 characters of four bytes each is still a valid key.
    assert!(UserRecord::new("😀".repeat(256), "x").is_ok());
    for bad in [
        "340282366920938463463374607431768211456",
        "-1",
        "abc",
        "01",
        "",
    ] {
        assert!(
            matches!(
                HashKey::parse(bad),
                Err(RecordError::InvalidExplicitHashKey { .. })
            ),
            "{bad:?}"
        );
    }

    let producer = Producer::builder(client.clone(), stream.as_str())
        .max_record_size(RecordSizeLimit::Fixed(MaxRecordSize::DEFAULT))
        .build()
        .await
        .unwrap();
    let mut receipts = Vec::new();
    let mut good = Vec::new();
    for i in 0..200 {
        if i % 10 == 3 {
            // One byte over 1 MiB once the key is counted.
            let record = UserRecord::new("big", vec![0u8; 1024 * 1024 - 2]).unwrap();
            let failure = producer.put(record.clone()).await.unwrap_err();
            assert!(
                matches!(
                    failure.error,
                    Error::InvalidRecord(RecordError::RecordTooLarge {
                        size: 1_048_577,
                        max: 1_048_576
                    })
                ),
                "{:?}",
                failure.error
            );
            assert_eq!(failure.record, record, "the record is handed back");
            assert!(!failure.error.is_retryable());
            let failure = producer.try_put(record).unwrap_err();
            assert!(matches!(failure.error, Error::InvalidRecord(_)));
        } else {
            let record = UserRecord::new(format!("k{i}"), format!("v{i}")).unwrap();
            good.push(record.clone());
            receipts.push(producer.put(record).await.unwrap());
        }
    }
    // Exactly the limit is fine.
    let at_limit = UserRecord::new("big", vec![0u8; 1024 * 1024 - 3]).unwrap();
    good.push(at_limit.clone());
    receipts.push(producer.put(at_limit).await.unwrap());
    let mut deliveries = Vec::new();
    for receipt in receipts {
        deliveries.push(receipt.await.unwrap());
    }
    producer.flush().await.unwrap();
    assert_eq!(producer.outstanding().records, 0);
    assert_eq!(producer.outstanding().bytes, 0);
    producer.clone().shutdown().await;
    let failure = producer
        .put(UserRecord::new("late", "x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(failure.error, Error::ShutDown));
    assert_eq!(failure.record.partition_key(), "late");

    let ReadBack { seen, total, .. } = read_back(&client, &stream).await;
    assert_eq!(total, good.len());
    check_receipts(&good, &deliveries, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_refuses_bad_settings_and_missing_streams() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-config");
    create_stream(&client, &stream, 1).await.unwrap();

    let missing = Producer::builder(client.clone(), "no-such-stream")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(missing, Error::StreamNotFound { ref stream, .. } if stream == "no-such-stream"),
        "{missing:?}"
    );

    let cases: Vec<(&str, kinesis_producer::ProducerBuilder)> = vec![
        (
            "max_entries_per_call",
            Producer::builder(client.clone(), stream.as_str()).max_entries_per_call(501),
        ),
        (
            "max_entries_per_call",
            Producer::builder(client.clone(), stream.as_str()).max_entries_per_call(0),
        ),
        (
            "max_bytes_per_call",
            Producer::builder(client.clone(), stream.as_str())
                .max_bytes_per_call(10 * 1024 * 1024 + 1),
        ),
        (
            "rate_limit_percent",
            Producer::builder(client.clone(), stream.as_str()).rate_limit_percent(0),
        ),
        (
            "record_ttl",
            Producer::builder(client.clone(), stream.as_str()).record_ttl(Duration::ZERO),
        ),
        (
            "max_outstanding_bytes",
            Producer::builder(client.clone(), stream.as_str())
                .max_outstanding_bytes(NonZeroUsize::new(1000).unwrap()),
        ),
        (
            "max_bytes_per_call",
            Producer::builder(client.clone(), stream.as_str())
                .max_record_size(RecordSizeLimit::Fixed(MaxRecordSize::LARGEST))
                .max_bytes_per_call(5 * 1024 * 1024),
        ),
        (
            "retry_backoff",
            Producer::builder(client.clone(), stream.as_str())
                .retry_backoff(Duration::from_secs(2), Duration::from_secs(1)),
        ),
        (
            "aggregation_max_bytes",
            Producer::builder(client.clone(), stream.as_str()).aggregation_max_bytes(0),
        ),
        (
            "shard_flush_bytes",
            Producer::builder(client.clone(), stream.as_str()).shard_flush_bytes(0),
        ),
    ];
    for (name, builder) in cases {
        match builder.build().await {
            Err(Error::InvalidConfig { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: expected InvalidConfig, got {other:?}"),
        }
    }

    // The stream's own limit, read with DescribeStreamSummary (1 MiB on this stand-in unless
    // the stream opted into more).
    let producer = Producer::builder(client.clone(), stream.as_str())
        .max_record_size(RecordSizeLimit::FromStream)
        .build()
        .await
        .unwrap();
    assert!(producer.max_record_size().bytes() >= 1024 * 1024);
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_still_delivers_and_resolves_every_receipt() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-drop");
    create_stream(&client, &stream, 2).await.unwrap();
    let producer = Producer::builder(client.clone(), stream.as_str())
        .linger(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let sent = records(300, 50);
    let mut receipts = Vec::new();
    for record in &sent {
        receipts.push(producer.put(record.clone()).await.unwrap());
    }
    drop(producer);
    let mut deliveries = Vec::new();
    for receipt in receipts {
        deliveries.push(
            tokio::time::timeout(Duration::from_secs(20), receipt)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let ReadBack { seen, total, .. } = read_back(&client, &stream).await;
    assert_eq!(total, sent.len());
    check_receipts(&sent, &deliveries, &seen);
}

#[test]
fn metrics_are_recorded_under_the_kpl_names() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The recorder is process-wide and the other tests of this binary run alongside: count only
    // what is labelled with this test's stream.
    let stream = unique_name("producer-metrics");
    runtime.block_on(async {
        let kinesis = Ferrokinesis::start().await.unwrap();
        let client = kinesis.client();
        create_stream(&client, &stream, 2).await.unwrap();
        let producer = Producer::builder(client.clone(), stream.as_str())
            .build()
            .await
            .unwrap();
        let sent = records(1000, 100);
        put_all(&producer, &sent).await;
        producer.shutdown().await;
    });

    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut histograms: HashMap<String, usize> = HashMap::new();
    let mut shard_labels = std::collections::HashSet::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let ours = key
            .key()
            .labels()
            .any(|l| l.key() == "stream" && l.value() == stream);
        if !ours {
            continue;
        }
        let name = key.key().name().to_owned();
        for label in key.key().labels() {
            if label.key() == "shard_id" {
                shard_labels.insert(label.value().to_owned());
            }
        }
        match value {
            DebugValue::Counter(n) => *counters.entry(name).or_default() += n,
            DebugValue::Histogram(values) => *histograms.entry(name).or_default() += values.len(),
            DebugValue::Gauge(_) => {}
        }
    }
    use kinesis_producer::metrics as m;
    assert_eq!(counters.get(m::USER_RECORDS_RECEIVED), Some(&1000));
    assert_eq!(counters.get(m::USER_RECORDS_PUT), Some(&1000));
    assert!(
        counters
            .get(m::KINESIS_RECORDS_PUT)
            .is_some_and(|n| *n >= 2 && *n < 1000),
        "{counters:?}"
    );
    assert!(counters.get(m::PUT_RECORDS_CALLS).is_some_and(|n| *n >= 1));
    assert!(
        counters
            .get(m::USER_RECORDS_DATA_PUT)
            .is_some_and(|n| *n > 1000)
    );
    assert_eq!(
        histograms.get(m::BUFFERING_TIME),
        Some(&1000),
        "one sample per user record"
    );
    assert_eq!(histograms.get(m::RETRIES_PER_RECORD), Some(&1000));
    assert!(histograms.get(m::REQUEST_TIME).is_some_and(|n| *n >= 1));
    assert!(histograms.contains_key(m::USER_RECORDS_PER_KINESIS_RECORD));
    assert_eq!(
        shard_labels.len(),
        2,
        "per-shard counters carry the shard id"
    );
}

/// A CBOR error answer (the stand-in's own: the stream was deleted under the producer) is read
/// as the error it is, not as an unreadable answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cbor_error_answer_is_read_as_its_error() {
    let kinesis = Ferrokinesis::start().await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("producer-cbor-gone");
    create_stream(&client, &stream, 1).await.unwrap();
    let producer = Producer::builder(client.clone(), stream.as_str())
        .wire_format(WireFormat::Cbor)
        .linger(Duration::from_millis(10))
        .record_ttl(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    client
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let failure = producer
        .put(UserRecord::new("k", "v").unwrap())
        .await
        .unwrap()
        .await
        .unwrap_err();
    let codes: Vec<&str> = failure
        .attempts
        .iter()
        .filter_map(|a| a.error.as_ref().map(|e| e.code.as_str()))
        .collect();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == "ResourceNotFoundException"),
        "every attempt failed with the stand-in's error: {codes:?} ({:?})",
        failure.error
    );
}
