//! What the CLI tests share: a Kinesis stand-in in the test process, the `kinesis` binary as a
//! process pointed at it, and reading a stream back with the SDK.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{process::Stdio, time::Duration};

use aws_sdk_kinesis::types::ShardIteratorType;
use kinesis_aggregation::{StreamRecord, deaggregate};
use tokio::{io::AsyncWriteExt, process::Command};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every wait of the tests ends by this.
pub const TIMEOUT: Duration = Duration::from_secs(40);

/// A Kinesis stand-in on 127.0.0.1 and a client for it.
pub struct StandIn {
    pub endpoint: String,
    pub client: aws_sdk_kinesis::Client,
}

impl StandIn {
    pub async fn start() -> Result<StandIn, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = kinesis_examples::start_kinesis(listener).await?;
        let client =
            aws_sdk_kinesis::Client::new(&kinesis_examples::local_config(endpoint.clone()).await);
        Ok(StandIn { endpoint, client })
    }

    pub async fn stream(&self, name: &str, shards: i32) -> Result<(), BoxError> {
        kinesis_examples::ensure_stream(&self.client, name, shards).await
    }

    /// The `kinesis` binary with the environment that points it at this stand-in.
    pub fn kinesis(&self) -> Command {
        kinesis_at(&self.endpoint)
    }
}

/// The `kinesis` binary pointed at the Kinesis endpoint `endpoint` with static credentials, and
/// nothing from the user's AWS configuration.
pub fn kinesis_at(endpoint: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis"));
    for var in [
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_SESSION_TOKEN",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
        .env("AWS_ENDPOINT_URL_KINESIS", endpoint)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .kill_on_drop(true);
    command
}

/// What a finished run gave.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` with `stdin` as its input, to its end (within [`TIMEOUT`]).
pub async fn run(mut command: Command, stdin: &[u8]) -> Result<Run, BoxError> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    let data = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // A command that fails early closes its stdin: that is its business, not the test's.
        let _ = input.write_all(&data).await;
    });
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| "the kinesis command did not finish in time")??;
    let _ = writer.await;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) to process `pid`.
pub async fn signal(pid: u32, signal: &str) -> Result<(), BoxError> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await?;
    if !status.success() {
        return Err(format!("kill -{signal} {pid} failed").into());
    }
    Ok(())
}

/// One user record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub shard: String,
    pub key: String,
    pub data: Vec<u8>,
    pub aggregated: bool,
}

impl Read {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Every user record of the stream, shard by shard, in each shard's order, deaggregated.
pub async fn read_back(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Read>, BoxError> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .max_results(1000)
        .send()
        .await?;
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        let mut calls = 0;
        while let Some(current) = iterator {
            calls += 1;
            if calls > 10_000 {
                return Err("reading the stream back did not end".into());
            }
            let output = client
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await?;
            let empty = output.records().is_empty();
            let caught_up = output.millis_behind_latest().unwrap_or(0) == 0;
            iterator = output.next_shard_iterator.clone();
            for record in output.records() {
                let stream_record = StreamRecord::new(
                    record.sequence_number(),
                    record.partition_key().unwrap_or_default(),
                    record.data().as_ref().to_vec(),
                );
                for user in deaggregate(stream_record) {
                    out.push(Read {
                        shard: shard.shard_id().to_owned(),
                        key: user.partition_key.to_string(),
                        data: user.data.to_vec(),
                        aggregated: user.aggregated,
                    });
                }
            }
            if empty && caught_up {
                break;
            }
        }
    }
    Ok(out)
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Result<TempDir, BoxError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("kinesis-cli-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The number after `sent ` in a summary line (`sent 1,234 records ...`).
pub fn sent(summary: &str) -> Option<u64> {
    let rest = summary.split("sent ").nth(1)?;
    rest.split_whitespace()
        .next()?
        .replace(',', "")
        .parse()
        .ok()
}
