//! What the command-line tests share: the Kinesis and DynamoDB stand-ins in the test process on
//! 127.0.0.1, the `kinesis` binary run as a process against them (to its end, or left running),
//! bounded waits, temporary directories, and a stream read back with the SDK.
//!
//! Cargo compiles this module into each test binary on its own, and no binary uses all of it:
//! the items that some of them leave unused carry `#[allow(dead_code)]`.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_sdk_kinesis::{primitives::Blob, types::ShardIteratorType};
use kinesis_aggregation::{StreamRecord, deaggregate};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
    time::Instant,
};

/// What a test that returns a `Result` fails with.
#[allow(dead_code)]
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bound of the produce, follow and local tests' runs and waits (the tail and leases tests
/// keep their own, shorter).
#[allow(dead_code)]
pub(crate) const TIMEOUT: Duration = Duration::from_secs(40);

/// The Kinesis and DynamoDB stand-ins and clients of them.
#[allow(dead_code)]
pub(crate) struct Env {
    pub(crate) kinesis_endpoint: String,
    pub(crate) dynamodb_endpoint: String,
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) dynamodb: aws_sdk_dynamodb::Client,
}

#[allow(dead_code)]
impl Env {
    pub(crate) async fn start() -> Env {
        let listener = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a port on 127.0.0.1")
        };
        let kinesis_endpoint = kinesis_examples::start_kinesis(listener().await)
            .await
            .expect("starting the Kinesis stand-in");
        let dynamodb_endpoint = kinesis_examples::start_dynamodb(listener().await)
            .await
            .expect("starting the DynamoDB stand-in");
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

    /// `kinesis args` pointed at the stand-ins (and at nothing of the user's AWS configuration).
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = bare_command(args);
        command
            .env("AWS_ENDPOINT_URL_KINESIS", &self.kinesis_endpoint)
            .env("AWS_ENDPOINT_URL_DYNAMODB", &self.dynamodb_endpoint)
            .env("AWS_ACCESS_KEY_ID", "AKID")
            .env("AWS_SECRET_ACCESS_KEY", "SECRET")
            .env("AWS_REGION", "us-east-1");
        command
    }

    /// Runs `kinesis args` without input to its end (at most `patience`).
    pub(crate) async fn run(&self, args: &[&str], patience: Duration) -> Ran {
        run(self.command(args), b"", patience).await
    }

    /// Makes stream `name` with `shards` shards and waits until it is `ACTIVE`; returns its name.
    pub(crate) async fn stream(&self, name: &str, shards: i32) -> String {
        kinesis_examples::ensure_stream(&self.kinesis, name, shards)
            .await
            .unwrap_or_else(|e| panic!("making stream {name}: {e}"));
        name.to_owned()
    }

    /// Puts one record; returns its shard and sequence number.
    pub(crate) async fn put(
        &self,
        stream: &str,
        key: &str,
        data: impl Into<Vec<u8>>,
    ) -> (String, String) {
        let out = self
            .kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .data(Blob::new(data.into()))
            .send()
            .await
            .expect("PutRecord");
        (out.shard_id, out.sequence_number)
    }

    /// Puts one record with an explicit hash key.
    pub(crate) async fn put_at(
        &self,
        stream: &str,
        hash_key: &str,
        data: &str,
    ) -> (String, String) {
        let out = self
            .kinesis
            .put_record()
            .stream_name(stream)
            .partition_key("k")
            .explicit_hash_key(hash_key)
            .data(Blob::new(data.as_bytes().to_vec()))
            .send()
            .await
            .expect("PutRecord");
        (out.shard_id, out.sequence_number)
    }

    /// Puts `data` as one KPL aggregate of user records with key `key`.
    pub(crate) async fn put_aggregate(
        &self,
        stream: &str,
        key: &str,
        data: &[&str],
    ) -> (String, String) {
        use kinesis_aggregation::{AggregationLimits, Aggregator, UserRecord};
        let mut aggregator = Aggregator::new(AggregationLimits::default());
        for d in data {
            let record = UserRecord::new(key, d.as_bytes().to_vec()).expect("a user record");
            aggregator.try_push(record).expect("room in the aggregate");
        }
        let record = aggregator.finish().expect("an aggregate");
        let out = self
            .kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(record.partition_key)
            .set_explicit_hash_key(record.explicit_hash_key.map(|k| k.to_string()))
            .data(Blob::new(record.data.to_vec()))
            .send()
            .await
            .expect("PutRecord");
        (out.shard_id, out.sequence_number)
    }

    /// The stream's shards: id, parents, whether closed.
    pub(crate) async fn shards(&self, stream: &str) -> Vec<(String, Vec<String>, bool)> {
        let out = self
            .kinesis
            .list_shards()
            .stream_name(stream)
            .max_results(1000)
            .send()
            .await
            .expect("ListShards");
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

/// `kinesis args` with an environment emptied of anything AWS, its stdin empty.
pub(crate) fn bare_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis"));
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

/// What a finished `kinesis` process left.
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

#[allow(dead_code)]
impl Ran {
    pub(crate) fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Runs `command` with `stdin` as its input to its end (at most `patience`, then it is killed
/// and the test fails).
#[allow(dead_code)]
pub(crate) async fn run(mut command: Command, stdin: &[u8], patience: Duration) -> Ran {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("starting kinesis");
    let mut input = child.stdin.take().expect("a piped stdin");
    let data = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // A command that fails early closes its stdin: that is its business, not the test's.
        let _ = input.write_all(&data).await;
    });
    let output = tokio::time::timeout(patience, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kinesis did not finish within {patience:?}"))
        .expect("waiting for kinesis");
    let _ = writer.await;
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `kinesis` process left running, its stdout lines and its stderr collected as they come.
#[allow(dead_code)]
pub(crate) struct Running {
    pub(crate) child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

#[allow(dead_code)]
impl Running {
    pub(crate) fn spawn(mut command: Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting kinesis");
        let stdout = Arc::default();
        let stderr = Arc::default();
        let readers = vec![
            Running::collect(child.stdout.take().expect("a piped stdout"), &stdout),
            Running::collect(child.stderr.take().expect("a piped stderr"), &stderr),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// The lines printed on stdout so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        Running::lock(&self.stdout).clone()
    }

    /// What was printed on stdout so far.
    pub(crate) fn stdout(&self) -> String {
        Running::lock(&self.stdout).join("\n")
    }

    /// What was printed on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        Running::lock(&self.stderr).join("\n")
    }

    /// Sends `signal` (`INT`, `TERM`, `KILL`) with `kill`.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("kinesis has not been waited for");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for the exit (at most `patience`) and for the rest of its output; its code.
    pub(crate) async fn wait(&mut self, patience: Duration) -> Option<i32> {
        let status = tokio::time::timeout(patience, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("kinesis did not exit within {patience:?}"))
            .expect("waiting for kinesis");
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(patience, reader).await;
        }
        status.code()
    }

    /// Reads `pipe` to its end in a task, pushing each line (without its `\n` or `\r\n`) to `sink`.
    fn collect(
        pipe: impl AsyncRead + Unpin + Send + 'static,
        sink: &Arc<Mutex<Vec<String>>>,
    ) -> JoinHandle<()> {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            while pipe.read_until(b'\n', &mut line).await.is_ok_and(|n| n > 0) {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                Running::lock(&sink).push(String::from_utf8_lossy(text).into_owned());
                line.clear();
            }
        })
    }

    fn lock(lines: &Mutex<Vec<String>>) -> MutexGuard<'_, Vec<String>> {
        lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits until `done` holds, for at most `patience`.
#[allow(dead_code)]
pub(crate) async fn until(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
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
#[allow(dead_code)]
pub(crate) async fn until_async<F, Fut>(what: &str, patience: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
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
#[allow(dead_code)]
pub(crate) async fn next_second(margin: Duration) -> SystemTime {
    let now = SystemTime::now();
    let since = now.duration_since(UNIX_EPOCH).expect("a clock after 1970");
    let second = UNIX_EPOCH + Duration::from_secs(since.as_secs() + 1);
    tokio::time::sleep(second.duration_since(now).unwrap_or_default() + margin).await;
    second
}

/// Epoch seconds with milliseconds, as `--from` takes them.
#[allow(dead_code)]
pub(crate) fn epoch(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).expect("a time after 1970");
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}

/// A directory of its own under the system's temporary directory, removed on drop.
#[allow(dead_code)]
pub(crate) struct TempDir(pub(crate) PathBuf);

#[allow(dead_code)]
impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("kinesis-cli-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One user record read back.
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) key: String,
    pub(crate) data: Vec<u8>,
    pub(crate) aggregated: bool,
}

#[allow(dead_code)]
impl Read {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Every user record of the stream, shard by shard, in each shard's order, deaggregated.
#[allow(dead_code)]
pub(crate) async fn read_back(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Read> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .max_results(1000)
        .send()
        .await
        .expect("ListShards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator;
        let mut calls = 0;
        while let Some(current) = iterator {
            calls += 1;
            assert!(calls <= 10_000, "reading {stream} back did not end");
            let output = client
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
                .expect("GetRecords");
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
    out
}

/// The number after `sent ` in a summary line (`sent 1,234 records ...`).
#[allow(dead_code)]
pub(crate) fn sent(summary: &str) -> Option<u64> {
    let rest = summary.split("sent ").nth(1)?;
    rest.split_whitespace()
        .next()?
        .replace(',', "")
        .parse()
        .ok()
}
