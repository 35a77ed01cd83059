//! ferrokinesis in a child process (the `ferrokinesis-server` bin): it reports its endpoint,
//! serves the SDK, counts the calls it served, stops when told, and dies with a dropped handle.

use std::process::Command;
use std::time::{Duration, Instant};

use kinesis_integration_tests::cpu_time::CpuTime;
use kinesis_integration_tests::ferrokinesis_process::FerrokinesisProcess;
use kinesis_integration_tests::fixtures::{create_stream, put_records, unique_name};

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrokinesis-server"))
}

fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat.contains(") Z "))
}

#[tokio::test]
async fn serves_counts_its_calls_and_stops() {
    let kinesis = FerrokinesisProcess::spawn(server()).await.unwrap();
    assert!(kinesis.endpoint().starts_with("http://127.0.0.1:"));
    let client = kinesis.client();
    let stream = unique_name("process");
    create_stream(&client, &stream, 2).await.unwrap();
    let output = put_records(
        &client,
        &stream,
        [("k", b"v".to_vec()), ("l", b"w".to_vec())],
    )
    .await
    .unwrap();
    assert_eq!(output.failed_record_count(), Some(0));
    // Its CPU is its own, readable from here.
    assert!(kinesis.cpu_time().unwrap() >= CpuTime::default());
    let pid = kinesis.pid();
    let served = kinesis.stop().await.unwrap();
    assert_eq!(served.of("PutRecords"), 1);
    assert_eq!(served.of("CreateStream"), 1);
    assert!(gone(pid));
}

#[tokio::test]
async fn dropping_the_handle_ends_the_process() {
    let mut command = server();
    command.arg("--enforce-limits");
    let kinesis = FerrokinesisProcess::spawn(command).await.unwrap();
    let pid = kinesis.pid();
    drop(kinesis);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone(pid), "pid {pid} outlived its handle");
}
