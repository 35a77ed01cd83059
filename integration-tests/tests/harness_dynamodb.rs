//! Both DynamoDB stand-ins answer the lease-table operations through the real SDK, and DynamoDB
//! Local's process is stopped with its handle. Needs Java and DynamoDB Local
//! (`scripts/install-tools.sh`): without them these tests fail, naming what is missing.

// Test code: a failed unwrap is a failed test. clippy.toml allows it in `#[test]` functions,
// which does not reach the helpers of an integration-test crate.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use kinesis_integration_tests::fixtures::{create_table, unique_name};
use kinesis_integration_tests::{CapacityProxy, DynamoBackend, DynamoDb, DynamoDbLocal};

/// Creates a table, then conditional puts and updates as the lease table does them.
async fn exercise(db: &DynamoDb) {
    let client = db.client();
    let table = unique_name("leases");
    create_table(&client, &table, "leaseKey").await.unwrap();
    let key = || AttributeValue::S("shardId-000000000000".to_owned());

    client
        .put_item()
        .table_name(&table)
        .item("leaseKey", key())
        .item("leaseCounter", AttributeValue::N("0".to_owned()))
        .condition_expression("attribute_not_exists(leaseKey)")
        .send()
        .await
        .unwrap();
    let again = client
        .put_item()
        .table_name(&table)
        .item("leaseKey", key())
        .condition_expression("attribute_not_exists(leaseKey)")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(again.is_conditional_check_failed_exception(), "{again:?}");

    let updated = client
        .update_item()
        .table_name(&table)
        .key("leaseKey", key())
        .update_expression("ADD leaseCounter :one SET leaseOwner = :me")
        .condition_expression("leaseCounter = :expected")
        .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
        .expression_attribute_values(":me", AttributeValue::S("worker-1".to_owned()))
        .expression_attribute_values(":expected", AttributeValue::N("0".to_owned()))
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .unwrap();
    let attributes = updated.attributes().unwrap();
    assert_eq!(
        attributes["leaseCounter"],
        AttributeValue::N("1".to_owned())
    );
    assert_eq!(
        attributes["leaseOwner"],
        AttributeValue::S("worker-1".to_owned())
    );

    let stale = client
        .update_item()
        .table_name(&table)
        .key("leaseKey", key())
        .update_expression("SET leaseOwner = :other")
        .condition_expression("leaseCounter = :expected")
        .expression_attribute_values(":other", AttributeValue::S("worker-2".to_owned()))
        .expression_attribute_values(":expected", AttributeValue::N("0".to_owned()))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(stale.is_conditional_check_failed_exception(), "{stale:?}");
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn dynoxide_answers() {
    let db = DynamoDb::start(DynamoBackend::Dynoxide).await.unwrap();
    assert_eq!(db.backend(), DynamoBackend::Dynoxide);
    assert!(db.endpoint().starts_with("http://127.0.0.1:"));
    assert!(db.local().is_none());
    exercise(&db).await;
}

/// One test for both DynamoDB Local flavours, started side by side to pay the ~8 s Java start
/// once in wall time.
#[tokio::test]
async fn dynamodb_local_answers_shared_and_per_test_and_stops_on_drop() {
    let (own, shared) = tokio::join!(
        DynamoDb::start(DynamoBackend::Local),
        DynamoDb::start(DynamoBackend::SharedLocal)
    );
    let (own, shared) = (own.unwrap(), shared.unwrap());
    assert!(own.endpoint().starts_with("http://127.0.0.1:"));
    assert_ne!(own.endpoint(), shared.endpoint());
    exercise(&own).await;
    exercise(&shared).await;

    // The shared instance is started once per process.
    let again = DynamoDbLocal::shared().await.unwrap();
    assert_eq!(again.endpoint(), shared.endpoint());
    drop(shared);
    let still = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    exercise(&still).await;

    let local = own.local().unwrap();
    let pid = local.pid();
    assert!(local.log_path().exists());
    assert!(alive(pid));
    drop(own);
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(pid),
        "DynamoDB Local (pid {pid}) survived its handle"
    );
}

/// DynamoDB Local reports consumed capacity when asked, and the consumed-capacity proxy asks on
/// the client's behalf and sums what it reports: the SDK's calls through it still succeed (the
/// rewritten body keeps a valid signature for the stand-in, the answer its CRC).
#[tokio::test]
async fn dynamodb_local_reports_consumed_capacity_through_the_proxy() {
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let proxy = CapacityProxy::start(db.endpoint()).await.unwrap();
    let client = kinesis_integration_tests::dynamodb_client(
        proxy.endpoint(),
        &kinesis_integration_tests::ClientOptions::new(),
    );
    let table = unique_name("capacity");
    create_table(&client, &table, "leaseKey").await.unwrap();
    let key = |i: usize| AttributeValue::S(format!("shardId-{i:012}"));
    let before = proxy.meter().snapshot();
    // Three items of about 300 bytes: one write unit each, 0.5 read unit for a scan of them all
    // (under 4 KB, eventually consistent).
    for i in 0..3 {
        client
            .put_item()
            .table_name(&table)
            .item("leaseKey", key(i))
            .item("leaseOwner", AttributeValue::S("x".repeat(250)))
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
            .await
            .unwrap();
    }
    let refused = client
        .put_item()
        .table_name(&table)
        .item("leaseKey", key(0))
        .condition_expression("attribute_not_exists(leaseKey)")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(refused.is_conditional_check_failed_exception());
    let scanned = client.scan().table_name(&table).send().await.unwrap();
    assert_eq!(scanned.count(), 3);
    // The client did not ask: the answer carries the capacity anyway, which the SDK accepts.
    assert!(scanned.consumed_capacity().is_some());
    client
        .get_item()
        .table_name(&table)
        .key("leaseKey", key(1))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    client
        .update_item()
        .table_name(&table)
        .key("leaseKey", key(1))
        .update_expression("SET leaseCounter = :one")
        .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
        .send()
        .await
        .unwrap();

    let tally = proxy.meter().snapshot().since(&before);
    assert_eq!(tally.unmetered(), 0, "{tally:?}");
    assert_eq!(tally.write_units(), 4.0, "{tally:?}");
    assert_eq!(tally.failed_conditional_writes(), 1, "{tally:?}");
    assert_eq!(tally.units("Scan"), 0.5, "{tally:?}");
    assert_eq!(tally.units("GetItem"), 1.0, "{tally:?}");
    assert_eq!(tally.read_units(), 1.5, "{tally:?}");
    assert_eq!(tally.calls("PutItem"), 4, "{tally:?}");
}
