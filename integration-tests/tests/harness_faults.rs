//! Every fault kind, configured on a controller, is observed by the real SDK: through the tower
//! layer of the embedded ferrokinesis and through the loopback proxy (in front of ferrokinesis
//! for Kinesis, of dynoxide for DynamoDB). SDK retries are off so each fault reaches the test.

// Test code: a failed unwrap is a failed test. clippy.toml allows it in `#[test]` functions,
// which does not reach the helpers of an integration-test crate.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use kinesis_integration_tests::fixtures::{create_stream, put_records, read_stream, unique_name};
use kinesis_integration_tests::{
    ClientOptions, EntryErrorCode, EntryFailures, Fault, FaultController, FaultKind, FaultProxy,
    FaultRule, Ferrokinesis, FerrokinesisOptions, Injected, ServiceError, kinesis_client,
};

/// Which front-end applies the faults.
#[derive(Clone, Copy, Debug)]
enum Front {
    Layer,
    Proxy,
}

/// ferrokinesis with faults applied by `front`, a client without SDK retries through the
/// faults, and a fault-free client for checking what was written.
struct Harness {
    faults: Arc<FaultController>,
    client: aws_sdk_kinesis::Client,
    direct: aws_sdk_kinesis::Client,
    stream: String,
    _proxy: Option<FaultProxy>,
    _kinesis: Ferrokinesis,
}

impl Harness {
    async fn start(front: Front, seed: u64) -> Self {
        let kinesis = Ferrokinesis::start_with(FerrokinesisOptions::new().fault_seed(seed))
            .await
            .unwrap();
        let no_retries = ClientOptions::new().without_retries();
        let (faults, endpoint, proxy, direct) = match front {
            Front::Layer => {
                // Reads must bypass the rules: a second server would not share the data, so the
                // checking client goes through the same layer and the tests clear the rules first.
                (
                    kinesis.faults().clone(),
                    kinesis.endpoint().to_owned(),
                    None,
                    kinesis.client(),
                )
            }
            Front::Proxy => {
                let faults = FaultController::new(seed);
                let proxy = FaultProxy::start(kinesis.endpoint(), faults.clone())
                    .await
                    .unwrap();
                (
                    faults,
                    proxy.endpoint().to_owned(),
                    Some(proxy),
                    kinesis.client(),
                )
            }
        };
        let stream = unique_name("faults");
        create_stream(&direct, &stream, 2).await.unwrap();
        Self {
            faults,
            client: kinesis_client(&endpoint, &no_retries),
            direct,
            stream,
            _proxy: proxy,
            _kinesis: kinesis,
        }
    }

    async fn put_records(
        &self,
        keys: &[&str],
    ) -> Result<
        aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
        SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError>,
    > {
        put_records(
            &self.client,
            &self.stream,
            keys.iter().map(|key| (*key, key.as_bytes())),
        )
        .await
    }

    async fn put_record(
        &self,
        key: &str,
    ) -> Result<(), SdkError<aws_sdk_kinesis::operation::put_record::PutRecordError>> {
        self.client
            .put_record()
            .stream_name(&self.stream)
            .partition_key(key)
            .data(Blob::new(key.as_bytes().to_vec()))
            .send()
            .await
            .map(|_| ())
    }

    /// The partition keys written to the stream, sorted (rules are cleared first).
    async fn written_keys(&self) -> Vec<String> {
        self.faults.clear();
        let mut keys: Vec<String> = read_stream(&self.direct, &self.stream)
            .await
            .unwrap()
            .iter()
            .map(|r| r.partition_key().unwrap_or_default().to_owned())
            .collect();
        keys.sort();
        keys
    }

    async fn shard_iterator(&self) -> String {
        let shards = self
            .direct
            .list_shards()
            .stream_name(&self.stream)
            .max_results(100)
            .send()
            .await
            .unwrap();
        self.direct
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shards.shards()[0].shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap()
    }
}

const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];

fn entry_codes(
    output: &aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
) -> Vec<Option<String>> {
    output
        .records()
        .iter()
        .map(|entry| entry.error_code().map(str::to_owned))
        .collect()
}

async fn put_records_entry_failures_are_not_written(front: Front) {
    let h = Harness::start(front, 1).await;
    h.faults.add(FaultRule::new(Fault::PutRecordsEntries(
        EntryFailures::indices([1, 4]).codes([EntryErrorCode::ProvisionedThroughputExceeded]),
    )));
    h.faults.add(FaultRule::new(Fault::PutRecordsEntries(
        EntryFailures::indices([2]).code(EntryErrorCode::InternalFailure),
    )));
    let output = h.put_records(&KEYS).await.unwrap();
    assert_eq!(output.failed_record_count(), Some(2));
    let throttled = Some("ProvisionedThroughputExceededException".to_owned());
    assert_eq!(
        entry_codes(&output),
        vec![None, throttled.clone(), None, None, throttled, None]
    );
    for (i, entry) in output.records().iter().enumerate() {
        if entry.error_code().is_some() {
            assert!(entry.sequence_number().is_none() && entry.shard_id().is_none());
            assert!(entry.error_message().is_some());
        } else {
            assert!(
                entry.sequence_number().is_some(),
                "entry {i} has no sequence number"
            );
        }
    }
    // Only the first entry-failure rule applies to a call.
    assert_eq!(h.faults.injected(FaultKind::EntryFailures), 1);
    assert_eq!(h.faults.failed_entries(), 2);
    assert_eq!(h.written_keys().await, ["k0", "k2", "k3", "k5"]);
}

async fn put_records_entry_failures_in_written_mode_are_written(front: Front) {
    let h = Harness::start(front, 1).await;
    h.faults.add(FaultRule::on(
        "PutRecords",
        Fault::PutRecordsEntries(
            EntryFailures::indices([0, 5])
                .code(EntryErrorCode::InternalFailure)
                .written(),
        ),
    ));
    let output = h.put_records(&KEYS).await.unwrap();
    assert_eq!(output.failed_record_count(), Some(2));
    let codes = entry_codes(&output);
    assert_eq!(codes[0].as_deref(), Some("InternalFailure"));
    assert_eq!(codes[5].as_deref(), Some("InternalFailure"));
    assert!(codes[1..5].iter().all(Option::is_none));
    // Written anyway: a retry of k0 and k5 would duplicate them.
    assert_eq!(h.written_keys().await, KEYS);
}

async fn put_records_with_every_entry_failed_writes_nothing(front: Front) {
    let h = Harness::start(front, 1).await;
    h.faults
        .add(FaultRule::new(Fault::PutRecordsEntries(EntryFailures::all())).first(1));
    let output = h.put_records(&KEYS[..3]).await.unwrap();
    assert_eq!(output.failed_record_count(), Some(3));
    assert!(output.records().iter().all(|e| e.error_code().is_some()));
    // The rule fired once; the next call goes through.
    let output = h.put_records(&KEYS[3..]).await.unwrap();
    assert_eq!(output.failed_record_count(), Some(0));
    assert_eq!(h.written_keys().await, ["k3", "k4", "k5"]);
}

async fn whole_call_errors_reach_the_sdk(front: Front) {
    let h = Harness::start(front, 1).await;
    let cases = [
        (ServiceError::internal_failure(), 500, "InternalFailure"),
        (
            ServiceError::service_unavailable(),
            503,
            "ServiceUnavailable",
        ),
        (
            ServiceError::provisioned_throughput_exceeded(),
            400,
            "ProvisionedThroughputExceededException",
        ),
    ];
    for (error, status, code) in cases {
        let rule = h
            .faults
            .add(FaultRule::on("PutRecords", Fault::Error(error)));
        let failure = h.put_records(&KEYS).await.unwrap_err();
        let SdkError::ServiceError(service) = &failure else {
            panic!("expected a service error, got {failure:?}");
        };
        assert_eq!(service.raw().status().as_u16(), status);
        assert_eq!(service.err().code(), Some(code));
        if status == 400 {
            assert!(service.err().is_provisioned_throughput_exceeded_exception());
        }
        h.faults.remove(rule);
    }
    assert_eq!(h.faults.injected(FaultKind::Error), 3);
    assert_eq!(h.faults.calls("PutRecords"), 3);

    h.faults.add(FaultRule::on(
        "ListShards",
        Fault::Error(ServiceError::limit_exceeded()),
    ));
    let failure = h
        .client
        .list_shards()
        .stream_name(&h.stream)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(failure.is_limit_exceeded_exception(), "{failure:?}");
    // Nothing was written by the failed calls.
    assert!(h.written_keys().await.is_empty());
}

async fn latency_delays_the_call(front: Front) {
    let h = Harness::start(front, 1).await;
    let rule = h.faults.add(FaultRule::on(
        "DescribeStreamSummary",
        Fault::latency(Duration::from_millis(300)),
    ));
    let started = Instant::now();
    h.client
        .describe_stream_summary()
        .stream_name(&h.stream)
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    h.faults.remove(rule);

    h.faults.add(FaultRule::on(
        "PutRecord",
        Fault::latency_between(Duration::from_millis(100), Duration::from_millis(200)),
    ));
    let started = Instant::now();
    h.put_record("late").await.unwrap();
    let elapsed = started.elapsed();
    let Some(Injected::Latency(injected)) = h.faults.history().last().map(|i| i.fault.clone())
    else {
        panic!("no latency recorded");
    };
    assert!(injected >= Duration::from_millis(100) && injected <= Duration::from_millis(200));
    assert!(elapsed >= injected, "{elapsed:?} < {injected:?}");
    assert_eq!(h.faults.injected(FaultKind::Latency), 2);
    assert_eq!(h.written_keys().await, ["late"]);
}

async fn dropped_connections_are_dispatch_failures(front: Front) {
    let h = Harness::start(front, 1).await;
    let rule = h
        .faults
        .add(FaultRule::on("PutRecord", Fault::drop_request()));
    let failure = h.put_record("never").await.unwrap_err();
    assert!(
        matches!(failure, SdkError::DispatchFailure(_)),
        "{failure:?}"
    );
    h.faults.remove(rule);

    h.faults
        .add(FaultRule::on("PutRecord", Fault::drop_response()).first(1));
    let failure = h.put_record("lost-answer").await.unwrap_err();
    assert!(
        matches!(failure, SdkError::DispatchFailure(_)),
        "{failure:?}"
    );
    // The client keeps working after the dropped connections.
    h.put_record("after").await.unwrap();

    assert_eq!(h.faults.injected(FaultKind::DropBeforeForward), 1);
    assert_eq!(h.faults.injected(FaultKind::DropAfterForward), 1);
    // Dropped before forwarding: not written. Dropped after: written, answer lost.
    assert_eq!(h.written_keys().await, ["after", "lost-answer"]);
}

async fn get_records_throttling_and_expired_iterators(front: Front) {
    let h = Harness::start(front, 1).await;
    h.put_record("r").await.unwrap();
    let iterator = h.shard_iterator().await;
    let get = || h.client.get_records().shard_iterator(&iterator).send();

    h.faults.add(
        FaultRule::on(
            "GetRecords",
            Fault::Error(ServiceError::provisioned_throughput_exceeded()),
        )
        .first(1),
    );
    let failure = get().await.unwrap_err().into_service_error();
    assert!(
        failure.is_provisioned_throughput_exceeded_exception(),
        "{failure:?}"
    );
    h.faults.clear();

    h.faults
        .add(FaultRule::on("GetRecords", Fault::Error(ServiceError::expired_iterator())).first(1));
    let failure = get().await.unwrap_err().into_service_error();
    assert!(failure.is_expired_iterator_exception(), "{failure:?}");
    assert_eq!(failure.code(), Some("ExpiredIteratorException"));

    // The rules were used up: the same iterator reads again.
    let output = get().await.unwrap();
    assert_eq!(h.faults.calls("GetRecords"), 3);
    assert_eq!(h.faults.injected(FaultKind::Error), 2);
    assert!(output.records().len() <= 1);
}

async fn every_and_probability_select_calls(front: Front) {
    let h = Harness::start(front, 7).await;
    h.faults
        .add(FaultRule::on("PutRecord", Fault::Error(ServiceError::internal_failure())).every(3));
    let mut failed = Vec::new();
    for i in 0..9 {
        if h.put_record(&format!("e{i}")).await.is_err() {
            failed.push(i);
        }
    }
    assert_eq!(failed, [2, 5, 8]);
    h.faults.clear();

    h.faults
        .add(FaultRule::on("PutRecord", Fault::drop_request()).probability(0.5));
    let mut dropped = 0;
    for i in 0..40 {
        if h.put_record(&format!("p{i}")).await.is_err() {
            dropped += 1;
        }
    }
    assert_eq!(dropped, h.faults.injected(FaultKind::DropBeforeForward));
    assert!(
        (8..=32).contains(&dropped),
        "{dropped} of 40 dropped with p = 0.5"
    );
    assert_eq!(h.faults.calls("PutRecord"), 49);
}

/// What the SDK saw for each call of a seeded run.
async fn observed_run(
    front: Front,
    seed: u64,
) -> (Vec<String>, Vec<kinesis_integration_tests::Injection>) {
    let h = Harness::start(front, seed).await;
    h.faults.add(
        FaultRule::on(
            "PutRecords",
            Fault::Error(ServiceError::service_unavailable()),
        )
        .probability(0.2),
    );
    h.faults.add(FaultRule::new(Fault::PutRecordsEntries(
        EntryFailures::probability(0.3).codes([
            EntryErrorCode::InternalFailure,
            EntryErrorCode::ProvisionedThroughputExceeded,
        ]),
    )));
    let mut observed = Vec::new();
    for _ in 0..15 {
        let seen = match h.put_records(&KEYS).await {
            Err(error) => format!("error {:?}", error.into_service_error().code()),
            Ok(output) => format!("{:?}", entry_codes(&output)),
        };
        observed.push(seen);
    }
    (observed, h.faults.history())
}

async fn a_seed_reproduces_the_faults_seen_by_the_sdk(front: Front) {
    let (first, first_history) = observed_run(front, 11).await;
    let (again, again_history) = observed_run(front, 11).await;
    assert_eq!(first, again);
    // The same faults on the same calls, in order. The calls' global numbers are left out: they
    // count the set-up's status polls too, whose number depends on timing.
    let faults = |history: &[kinesis_integration_tests::Injection]| {
        history
            .iter()
            .map(|i| (i.operation.clone(), format!("{:?}", i.fault)))
            .collect::<Vec<_>>()
    };
    assert_eq!(faults(&first_history), faults(&again_history));
    assert!(first.iter().any(|seen| seen.starts_with("error")));
    assert!(first.iter().any(|seen| seen.contains("InternalFailure")));
    let (other, _) = observed_run(front, 12).await;
    assert_ne!(first, other);
}

macro_rules! through_both_fronts {
    ($($test:ident),* $(,)?) => {
        mod layer {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Front::Layer).await
                }
            )*
        }
        mod proxy {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Front::Proxy).await
                }
            )*
        }
    };
}

through_both_fronts!(
    put_records_entry_failures_are_not_written,
    put_records_entry_failures_in_written_mode_are_written,
    put_records_with_every_entry_failed_writes_nothing,
    whole_call_errors_reach_the_sdk,
    latency_delays_the_call,
    dropped_connections_are_dispatch_failures,
    get_records_throttling_and_expired_iterators,
    every_and_probability_select_calls,
    a_seed_reproduces_the_faults_seen_by_the_sdk,
);

/// The proxy streams `SubscribeToShard` event streams (and counts the call).
#[tokio::test]
async fn proxy_streams_subscribe_to_shard() {
    use aws_sdk_kinesis::types::{ConsumerStatus, StartingPosition, SubscribeToShardEventStream};

    let h = Harness::start(Front::Proxy, 1).await;
    h.put_record("streamed").await.unwrap();
    let summary = h
        .direct
        .describe_stream_summary()
        .stream_name(&h.stream)
        .send()
        .await
        .unwrap();
    let stream_arn = summary
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_owned();
    let consumer = h
        .client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name("harness")
        .send()
        .await
        .unwrap();
    let consumer_arn = consumer.consumer().unwrap().consumer_arn().to_owned();
    for _ in 0..100 {
        let described = h
            .client
            .describe_stream_consumer()
            .consumer_arn(&consumer_arn)
            .send()
            .await
            .unwrap();
        if described.consumer_description().unwrap().consumer_status() == &ConsumerStatus::Active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let shards = h
        .direct
        .list_shards()
        .stream_name(&h.stream)
        .max_results(100)
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    for shard in shards.shards() {
        let mut output = h
            .client
            .subscribe_to_shard()
            .consumer_arn(&consumer_arn)
            .shard_id(shard.shard_id())
            .starting_position(
                StartingPosition::builder()
                    .r#type(ShardIteratorType::TrimHorizon)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        // The first event carries whatever the shard holds.
        let event = tokio::time::timeout(Duration::from_secs(5), output.event_stream.recv())
            .await
            .expect("no event within 5 s")
            .unwrap();
        if let Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) = event {
            seen.extend(event.records().iter().map(|r| r.data().as_ref().to_vec()));
        }
    }
    assert_eq!(seen, [b"streamed".to_vec()]);
    assert_eq!(h.faults.calls("SubscribeToShard"), 2);
}

mod dynamodb {
    //! DynamoDB faults through the proxy in front of dynoxide.

    use std::time::{Duration, Instant};

    use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_dynamodb::types::AttributeValue;
    use kinesis_integration_tests::fixtures::{create_table, unique_name};
    use kinesis_integration_tests::{
        ClientOptions, Dynoxide, Fault, FaultController, FaultKind, FaultProxy, FaultRule,
        ServiceError, dynamodb_client,
    };

    struct Harness {
        faults: std::sync::Arc<FaultController>,
        client: aws_sdk_dynamodb::Client,
        direct: aws_sdk_dynamodb::Client,
        table: String,
        _proxy: FaultProxy,
        _dynoxide: Dynoxide,
    }

    impl Harness {
        async fn start() -> Self {
            let dynoxide = Dynoxide::start().await.unwrap();
            let faults = FaultController::new(5);
            let proxy = FaultProxy::start(dynoxide.endpoint(), faults.clone())
                .await
                .unwrap();
            let direct = dynoxide.client();
            let table = unique_name("leases");
            create_table(&direct, &table, "leaseKey").await.unwrap();
            Self {
                faults,
                client: dynamodb_client(proxy.endpoint(), &ClientOptions::new().without_retries()),
                direct,
                table,
                _proxy: proxy,
                _dynoxide: dynoxide,
            }
        }

        fn put(
            &self,
            key: &str,
        ) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("leaseKey", AttributeValue::S(key.to_owned()))
        }

        async fn exists(&self, key: &str) -> bool {
            self.direct
                .get_item()
                .table_name(&self.table)
                .key("leaseKey", AttributeValue::S(key.to_owned()))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item()
                .is_some()
        }
    }

    #[tokio::test]
    async fn throttling_and_server_errors_reach_the_sdk() {
        let h = Harness::start().await;

        let rule = h.faults.add(FaultRule::on(
            "PutItem",
            Fault::Error(ServiceError::throttling()),
        ));
        let SdkError::ServiceError(failure) = h.put("a").send().await.unwrap_err() else {
            panic!("expected a service error");
        };
        assert_eq!(failure.raw().status().as_u16(), 400);
        assert_eq!(failure.err().code(), Some("ThrottlingException"));
        h.faults.remove(rule);

        h.faults.add(
            FaultRule::on(
                "UpdateItem",
                Fault::Error(ServiceError::provisioned_throughput_exceeded()),
            )
            .first(1),
        );
        let failure = h
            .client
            .update_item()
            .table_name(&h.table)
            .key("leaseKey", AttributeValue::S("b".to_owned()))
            .update_expression("ADD leaseCounter :one")
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            failure.is_provisioned_throughput_exceeded_exception(),
            "{failure:?}"
        );

        h.faults.add(
            FaultRule::on(
                "GetItem",
                Fault::Error(ServiceError::internal_server_error()),
            )
            .first(1),
        );
        let failure = h
            .client
            .get_item()
            .table_name(&h.table)
            .key("leaseKey", AttributeValue::S("a".to_owned()))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(failure.is_internal_server_error(), "{failure:?}");

        assert_eq!(h.faults.injected(FaultKind::Error), 3);
        assert!(!h.exists("a").await && !h.exists("b").await);
    }

    #[tokio::test]
    async fn latency_and_dropped_connections_reach_the_sdk() {
        let h = Harness::start().await;

        let rule = h.faults.add(FaultRule::on(
            "PutItem",
            Fault::latency(Duration::from_millis(250)),
        ));
        let started = Instant::now();
        h.put("slow").send().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        h.faults.remove(rule);

        let rule = h
            .faults
            .add(FaultRule::on("PutItem", Fault::drop_request()));
        let failure = h.put("never").send().await.unwrap_err();
        assert!(
            matches!(failure, SdkError::DispatchFailure(_)),
            "{failure:?}"
        );
        h.faults.remove(rule);

        h.faults
            .add(FaultRule::on("PutItem", Fault::drop_response()).first(1));
        let failure = h.put("unacknowledged").send().await.unwrap_err();
        assert!(
            matches!(failure, SdkError::DispatchFailure(_)),
            "{failure:?}"
        );

        // A conditional put of the item whose answer was lost now fails: it was written.
        let failure = h
            .put("unacknowledged")
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            failure.is_conditional_check_failed_exception(),
            "{failure:?}"
        );

        assert!(h.exists("slow").await);
        assert!(!h.exists("never").await);
        assert_eq!(h.faults.calls("PutItem"), 4);
        assert_eq!(h.faults.injected(FaultKind::Latency), 1);
        assert_eq!(h.faults.injected(FaultKind::DropBeforeForward), 1);
        assert_eq!(h.faults.injected(FaultKind::DropAfterForward), 1);
    }
}
