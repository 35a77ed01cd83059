//! What the command-line tests share: the Kinesis and DynamoDB stand-ins in the test process on
//! 127.0.0.1, the `kinesis` binary run as a process against them, and record helpers.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

/// The stand-ins and clients of them.
pub struct Env {
    pub kinesis_endpoint: String,
    pub dynamodb_endpoint: String,
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

/// What a finished `kinesis` process left.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

static NAMES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A name unique in this process.
pub fn unique(prefix: &str) -> String {
    let n = NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

impl Env {
    pub async fn start() -> Env {
        let kinesis_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dynamodb_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Env::with_listeners(kinesis_listener, dynamodb_listener).await
    }

    pub async fn with_listeners(
        kinesis_listener: tokio::net::TcpListener,
        dynamodb_listener: tokio::net::TcpListener,
    ) -> Env {
        let kinesis_endpoint = kinesis_examples::start_kinesis(kinesis_listener)
            .await
            .unwrap();
        let dynamodb_endpoint = kinesis_examples::start_dynamodb(dynamodb_listener)
            .await
            .unwrap();
        let kinesis = aws_sdk_kinesis::Client::new(
            &kinesis_examples::local_config(kinesis_endpoint.clone()).await,
        );
        let dynamodb = aws_sdk_dynamodb::Client::new(
            &kinesis_examples::local_config(dynamodb_endpoint.clone()).await,
        );
        Env {
            kinesis_endpoint,
            dynamodb_endpoint,
            kinesis,
            dynamodb,
        }
    }

    /// The `kinesis` binary with the stand-ins' environment (and nothing of the user's AWS
    /// configuration).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = bare_command(args);
        command
            .env("AWS_ENDPOINT_URL_KINESIS", &self.kinesis_endpoint)
            .env("AWS_ENDPOINT_URL_DYNAMODB", &self.dynamodb_endpoint)
            .env("AWS_ACCESS_KEY_ID", "AKID")
            .env("AWS_SECRET_ACCESS_KEY", "SECRET")
            .env("AWS_REGION", "us-east-1");
        command
    }

    /// Runs `kinesis args` to its end (at most `patience`).
    pub async fn run(&self, args: &[&str], patience: Duration) -> Ran {
        run(self.command(args), patience).await
    }

    /// A stream with `shards` shards, `ACTIVE`.
    pub async fn stream(&self, prefix: &str, shards: i32) -> String {
        let name = unique(prefix);
        kinesis_examples::ensure_stream(&self.kinesis, &name, shards)
            .await
            .unwrap();
        name
    }

    /// Puts one record; returns its shard and sequence number.
    pub async fn put(&self, stream: &str, key: &str, data: impl Into<Vec<u8>>) -> (String, String) {
        let out = self
            .kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .data(Blob::new(data.into()))
            .send()
            .await
            .unwrap();
        (out.shard_id, out.sequence_number)
    }

    /// Puts one record with an explicit hash key.
    pub async fn put_at(&self, stream: &str, hash_key: &str, data: &str) -> (String, String) {
        let out = self
            .kinesis
            .put_record()
            .stream_name(stream)
            .partition_key("k")
            .explicit_hash_key(hash_key)
            .data(Blob::new(data.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
        (out.shard_id, out.sequence_number)
    }

    /// Puts `data` as one KPL aggregate of user records with key `key`.
    pub async fn put_aggregate(&self, stream: &str, key: &str, data: &[&str]) -> (String, String) {
        use kinesis_aggregation::{AggregationLimits, Aggregator, UserRecord};
        let mut aggregator = Aggregator::new(AggregationLimits::default());
        for d in data {
            aggregator
                .try_push(UserRecord::new(key, d.as_bytes().to_vec()).unwrap())
                .unwrap();
        }
        let record = aggregator.finish().unwrap();
        let out = self
            .kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(record.partition_key)
            .set_explicit_hash_key(record.explicit_hash_key.map(|k| k.to_string()))
            .data(Blob::new(record.data.to_vec()))
            .send()
            .await
            .unwrap();
        (out.shard_id, out.sequence_number)
    }

    /// The stream's shards: id, parents, whether closed.
    pub async fn shards(&self, stream: &str) -> Vec<(String, Vec<String>, bool)> {
        let out = self
            .kinesis
            .list_shards()
            .stream_name(stream)
            .max_results(1000)
            .send()
            .await
            .unwrap();
        out.shards()
            .iter()
            .map(|s| {
                let parents = s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect();
                let closed = s
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_some());
                (s.shard_id().to_owned(), parents, closed)
            })
            .collect()
    }
}

/// The `kinesis` binary with an environment emptied of anything AWS.
pub fn bare_command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinesis"));
    command.args(args).env_clear();
    for keep in ["PATH", "HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(keep) {
            command.env(keep, value);
        }
    }
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end (at most `patience`, then it is killed and the test fails).
pub async fn run(mut command: tokio::process::Command, patience: Duration) -> Ran {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(patience, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kinesis did not finish within {patience:?}"))
        .unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `kinesis` process left running, its stdout lines collected as they come.
pub struct Running {
    pub child: tokio::process::Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn spawn(mut command: tokio::process::Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let errors: Arc<Mutex<String>> = Arc::default();
        let sink = errors.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Running {
            child,
            lines,
            stderr: errors,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` (`-INT`, `-TERM`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (at most `patience`); its code.
    pub async fn wait(&mut self, patience: Duration) -> Option<i32> {
        let status = tokio::time::timeout(patience, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("kinesis did not exit within {patience:?}"))
            .unwrap();
        // The readers may still hold the last lines: let them finish.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status.code()
    }
}

/// Waits until `done` holds, for at most `patience`.
pub async fn until(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// As [`until`], with an async condition.
pub async fn until_async<F, Fut>(what: &str, patience: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the next whole second has begun, plus `margin`; returns that second. The
/// ferrokinesis stand-in keeps arrival times in whole seconds (it truncates), so a time between
/// two batches of records is only meaningful on a second's boundary.
pub async fn next_second(margin: Duration) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap();
    let second = std::time::UNIX_EPOCH + Duration::from_secs(since.as_secs() + 1);
    tokio::time::sleep(second.duration_since(now).unwrap() + margin).await;
    second
}

/// Epoch seconds with milliseconds, as `--from` takes them.
pub fn epoch(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}
