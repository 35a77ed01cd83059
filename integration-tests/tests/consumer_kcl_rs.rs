//! Our workers and kcl-rs (a port of the Java KCL 3 that writes its lease schema, see `peers.md`)
//! take turns on one application: each resumes exactly where the other checkpointed, aggregated
//! records included, and ours still reads the table after kcl-rs added its own kinds of items.
//! Needs kcl-rs (`scripts/install-tools.sh`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use kinesis_integration_tests::consumer_worker::WorkerProcess;
use kinesis_integration_tests::ferrokinesis_process::FerrokinesisProcess;
use kinesis_integration_tests::fixtures::{create_stream, unique_name};
use kinesis_integration_tests::peers::kcl_rs_command;
use kinesis_integration_tests::{DynamoBackend, DynamoDb};
use kinesis_producer::{Producer, UserRecord};
use tokio::time::Instant;

/// Puts `r<from>` .. `r<to - 1>`, aggregated; returns their data.
async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    from: usize,
    to: usize,
) -> BTreeSet<String> {
    let producer = Producer::builder(client.clone(), stream)
        .build()
        .await
        .unwrap();
    let mut receipts = Vec::new();
    let mut sent = BTreeSet::new();
    for i in from..to {
        let data = format!("r{i}");
        let record = UserRecord::new(format!("k{}", i % 13), Bytes::from(data.clone())).unwrap();
        receipts.push(producer.put(record).await.unwrap());
        sent.insert(data);
    }
    for receipt in receipts {
        assert!(receipt.await.unwrap().aggregated());
    }
    producer.shutdown().await;
    sent
}

fn processed(worker: &WorkerProcess) -> Vec<String> {
    worker
        .lines()
        .into_iter()
        .filter_map(|(_, line)| {
            line.strip_prefix("REC ")
                .and_then(|r| r.splitn(4, ' ').nth(3))
                .map(str::to_owned)
        })
        .collect()
}

/// Runs a worker until it has processed `want` (then a little longer, to catch replays), shuts
/// it down gracefully, and returns everything it processed.
async fn take_turn(
    mut command: std::process::Command,
    args: &[String],
    want: &BTreeSet<String>,
    patience: Duration,
) -> Vec<String> {
    command.args(args);
    let worker = WorkerProcess::from_command(command, "turn").unwrap();
    let deadline = Instant::now() + patience;
    loop {
        let seen: BTreeSet<String> = processed(&worker).into_iter().collect();
        if want.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records processed",
            want.intersection(&seen).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.signal("-TERM").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !worker.lines().iter().any(|(_, l)| l == "EXIT") {
        assert!(Instant::now() < deadline, "the worker did not shut down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    processed(&worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_and_kcl_rs_resume_from_each_others_checkpoints() {
    let kcl_rs = kcl_rs_command().unwrap();
    let kinesis = FerrokinesisProcess::spawn(std::process::Command::new(env!(
        "CARGO_BIN_EXE_ferrokinesis-server"
    )))
    .await
    .unwrap();
    let db = DynamoDb::start(DynamoBackend::SharedLocal).await.unwrap();
    let client = kinesis.client();
    let stream = unique_name("kcl-rs-turns");
    create_stream(&client, &stream, 2).await.unwrap();
    let args: Vec<String> = [
        "--kinesis",
        kinesis.endpoint(),
        "--dynamodb",
        db.endpoint(),
        "--stream",
        &stream,
        "--application",
        &unique_name("turns-app"),
        "--worker-id",
        "turn",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let ours = || std::process::Command::new(env!("CARGO_BIN_EXE_consumer-worker"));
    let mut kcl = kcl_rs;
    kcl.arg("--polling");

    // 1. Ours reads the first 300 and checkpoints.
    let first = put(&client, &stream, 0, 300).await;
    let got = take_turn(ours(), &args, &first, Duration::from_secs(60)).await;
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), first);

    // 2. kcl-rs resumes from our checkpoints: only the next 200.
    let second = put(&client, &stream, 300, 500).await;
    let got = take_turn(kcl, &args, &second, Duration::from_secs(240)).await;
    let replayed: Vec<&String> = got.iter().filter(|d| first.contains(*d)).collect();
    assert!(
        replayed.is_empty(),
        "kcl-rs processed again what we had checkpointed: {replayed:?}"
    );

    // 3. Ours resumes from kcl-rs's checkpoints, in a table kcl-rs added its own items to.
    let third = put(&client, &stream, 500, 600).await;
    let got = take_turn(ours(), &args, &third, Duration::from_secs(60)).await;
    let replayed: Vec<&String> = got.iter().filter(|d| !third.contains(*d)).collect();
    assert!(
        replayed.is_empty(),
        "we processed again what kcl-rs had checkpointed: {replayed:?}"
    );
}
