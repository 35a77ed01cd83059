//! `kinesis produce`: lines from stdin or files, one record each, through `kinesis-producer`.
//!
//! ```text
//!  stdin / FILE ──► Splitter ──► key (--key, --key-field, --tab, random) ──► gate ──► put
//!  (64 KiB reads)   (lines, a line      (a line without one fails)          (waits while
//!                    over the limit                                           --max-outstanding
//!                    measured, not kept)                                      lines are held)
//!                                                            │
//!       summary, FILE:LINE failures ◄── collector ◄──────────┘ receipts, in line order
//! ```
//!
//! `--follow` (module `follow`) shares the key, the gate and the collector's counting.

use std::{
    io::Read,
    num::NonZeroUsize,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use kinesis_producer::{Bytes, ErrorKind, Failure, Ordering, Producer, Receipt, UserRecord};
use tokio::{
    io::AsyncReadExt,
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};

use crate::{
    Common,
    error::CliError,
    progress::{self, Progress},
};

pub(crate) mod key;
pub(crate) mod lines;
pub(crate) mod report;

use key::KeyMode;
use lines::{Content, Line, Splitter};
use report::{Counters, Failures, LineFailure, Totals};

/// Bytes of lines held at most (read and not yet resolved), besides the `--max-outstanding`
/// count. At least the largest record.
pub(crate) const MAX_OUTSTANDING_BYTES: usize = 64 * 1024 * 1024;
/// Input is read this many bytes at a time.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// How long Ctrl-C waits for the records already read.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// Put lines from stdin or files to a stream, one record per line.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The stream to write to: a name or an ARN.
    #[arg(long, value_name = "NAME")]
    pub(crate) stream: String,
    /// Files to read, one record per line (without its newline; a \r before it goes too).
    /// None, or `-`: stdin. With --follow: the files to tail.
    #[arg(value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// The partition key of every record (default: a random key per record).
    #[arg(long, value_name = "KEY", value_parser = parse_key, conflicts_with_all = ["key_field", "tab"])]
    pub(crate) key: Option<String>,
    /// Take each record's partition key from this top-level field of the line, a JSON object;
    /// the record is the whole line. A line that is not JSON, or lacks the field, fails.
    #[arg(long, value_name = "FIELD", conflicts_with = "tab")]
    pub(crate) key_field: Option<String>,
    /// Lines are `key<TAB>payload`; a line without a TAB fails.
    #[arg(long)]
    pub(crate) tab: bool,
    /// Send each line as its own Kinesis record (default: aggregated, as the KPL does).
    #[arg(long)]
    pub(crate) no_aggregation: bool,
    /// Keep the lines of each partition key in order in the stream, across retries and
    /// throttling (one call in flight per shard: slower). By default lines of one key may land
    /// out of order, as with the KPL.
    #[arg(long)]
    pub(crate) ordered: bool,
    /// Most lines read and not yet acknowledged or failed; reading waits beyond it (also at most
    /// 64 MiB of them).
    #[arg(long, value_name = "N", default_value = "10000")]
    pub(crate) max_outstanding: NonZeroUsize,
    /// A record not acknowledged within this time after it is read fails (for example 30s,
    /// 500ms, 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) record_ttl: Duration,
    /// Skip empty lines (default: each is a record with empty data).
    #[arg(long)]
    pub(crate) skip_empty: bool,
    /// Tail the files as they grow, through rotations, until Ctrl-C or SIGTERM; resume from a
    /// checkpoint after a restart.
    #[arg(long)]
    pub(crate) follow: bool,
    /// With --follow: the checkpoint file (default: .kinesis-follow-STREAM.json next to the
    /// first file).
    #[arg(long, value_name = "PATH", requires = "follow")]
    pub(crate) checkpoint: Option<PathBuf>,
    /// With --follow: where to start in a file the checkpoint does not know.
    #[arg(long, value_enum, default_value = "beginning", requires = "follow")]
    pub(crate) start_at: StartAt,
}

/// Where `--follow` starts in a file its checkpoint does not know.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// At its first byte: nothing in it is missed.
    Beginning,
    /// After its last whole line: only what is appended from now on.
    End,
}

impl Args {
    /// Where partition keys come from.
    pub(crate) fn key_mode(&self) -> KeyMode {
        match (&self.key, &self.key_field, self.tab) {
            (Some(key), _, _) => KeyMode::Fixed(key.clone()),
            (_, Some(field), _) => KeyMode::Field(field.clone()),
            (_, _, true) => KeyMode::Tab,
            _ => KeyMode::Random,
        }
    }
}

/// A partition key Kinesis takes: 1 to 256 Unicode characters.
fn parse_key(text: &str) -> Result<String, String> {
    UserRecord::new(text, Bytes::new())
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

/// `250ms`, `30s`, `5m`, `1h`, or plain seconds (`30`); more than zero.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (for example 30s, 500ms, 5m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    if !(seconds > 0.0 && seconds <= 7.0 * 86_400.0) {
        return Err(format!(
            "{text:?} is out of range: more than 0, at most 7 days"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The bound on lines held: a count and bytes. Each line read takes a [`Held`] before it is
/// put, and gives it back once its outcome is counted.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_records: usize,
}

/// A line's place under the [`Gate`]'s bound.
#[derive(Debug)]
pub(crate) struct Held {
    _records: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl Gate {
    pub(crate) fn new(max_records: NonZeroUsize) -> Gate {
        Gate {
            records: Arc::new(Semaphore::new(max_records.get())),
            bytes: Arc::new(Semaphore::new(MAX_OUTSTANDING_BYTES)),
            max_records: max_records.get(),
        }
    }

    /// Waits for room for one line of `bytes` bytes.
    pub(crate) async fn hold(&self, bytes: usize) -> Held {
        // The semaphores are never closed, so acquiring cannot fail; were one closed, the bound
        // would simply not apply.
        let records = loop {
            if let Ok(permit) = self.records.clone().acquire_owned().await {
                break permit;
            }
        };
        let cost = bytes.min(MAX_OUTSTANDING_BYTES) as u32;
        let bytes = if cost == 0 {
            None
        } else {
            self.bytes.clone().acquire_many_owned(cost).await.ok()
        };
        Held {
            _records: records,
            _bytes: bytes,
        }
    }

    /// Lines held now.
    pub(crate) fn held(&self) -> usize {
        self.max_records
            .saturating_sub(self.records.available_permits())
    }
}

/// What became of a line once put (or not).
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Admitted by the producer: the receipt resolves to the delivery or the failure.
    Put(Receipt),
    /// Refused by the producer when put (the record is in the failure, to be put again).
    Refused(Box<Failure>),
    /// Failed before it was put (no key, too long).
    Failed(LineFailure),
    /// Skipped (an empty line with `--skip-empty`).
    Skipped,
}

/// A line's outcome, with what it held.
#[derive(Debug)]
pub(crate) struct Submitted {
    pub(crate) outcome: Outcome,
    /// Payload bytes of the record.
    pub(crate) bytes: u64,
    pub(crate) held: Held,
}

/// What a resolved line came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    Delivered,
    Failed(LineFailure),
    Skipped,
}

/// Turns lines into records and puts them.
#[derive(Debug, Clone)]
pub(crate) struct Submitter {
    pub(crate) producer: Producer,
    pub(crate) key_mode: KeyMode,
    pub(crate) skip_empty: bool,
    pub(crate) gate: Gate,
}

impl Submitter {
    /// The longest line kept: anything longer cannot fit a record whatever its key.
    pub(crate) fn max_line(&self) -> usize {
        self.producer.max_record_size().bytes()
    }

    /// Puts one line (waiting for room under the bound).
    ///
    /// # Cancellation
    ///
    /// Dropped while it waits, nothing is put.
    pub(crate) async fn submit(&self, content: Content) -> Submitted {
        let line = match content {
            Content::TooLong { len } => {
                return self
                    .settled(Outcome::Failed(LineFailure::too_long(len, self.max_line())))
                    .await;
            }
            Content::Text(line) if line.is_empty() && self.skip_empty => {
                return self.settled(Outcome::Skipped).await;
            }
            Content::Text(line) => line,
        };
        let (key, payload) = match self.key_mode.split(line, key::random_key) {
            Ok(split) => split,
            Err(error) => {
                return self
                    .settled(Outcome::Failed(LineFailure::key(&error)))
                    .await;
            }
        };
        let bytes = payload.len() as u64;
        let record = match UserRecord::new(key, payload) {
            Ok(record) => record,
            Err(error) => {
                return self.settled(Outcome::Failed(report::bad_key(&error))).await;
            }
        };
        let held = self.gate.hold(record.size()).await;
        let outcome = match self.producer.put(record).await {
            Ok(receipt) => Outcome::Put(receipt),
            Err(failure) => Outcome::Refused(Box::new(failure)),
        };
        Submitted {
            outcome,
            bytes,
            held,
        }
    }

    async fn settled(&self, outcome: Outcome) -> Submitted {
        Submitted {
            outcome,
            bytes: 0,
            held: self.gate.hold(0).await,
        }
    }
}

/// Waits for a line's outcome and counts it.
pub(crate) async fn resolve(submitted: Submitted, counters: &Counters) -> Resolved {
    let resolved = match submitted.outcome {
        Outcome::Put(receipt) => match receipt.await {
            Ok(_) => Resolved::Delivered,
            Err(failure) => Resolved::Failed(LineFailure::producer(&failure)),
        },
        Outcome::Refused(failure) => Resolved::Failed(LineFailure::producer(&failure)),
        Outcome::Failed(failure) => Resolved::Failed(failure),
        Outcome::Skipped => Resolved::Skipped,
    };
    count(&resolved, submitted.bytes, counters);
    drop(submitted.held);
    resolved
}

/// Counts a resolved line of `bytes` payload bytes.
pub(crate) fn count(resolved: &Resolved, bytes: u64, counters: &Counters) {
    use std::sync::atomic::Ordering::Relaxed;
    match resolved {
        Resolved::Delivered => {
            counters.sent.fetch_add(1, Relaxed);
            counters.sent_bytes.fetch_add(bytes, Relaxed);
        }
        Resolved::Failed(_) => {
            counters.failed.fetch_add(1, Relaxed);
        }
        Resolved::Skipped => {
            counters.skipped.fetch_add(1, Relaxed);
        }
    }
}

/// Starts a producer for the command's stream with its bounds.
pub(crate) async fn start_producer(args: &Args, common: &Common) -> Result<Producer, CliError> {
    let client = common.aws.kinesis().await?;
    Producer::builder(client, args.stream.as_str())
        .aggregation(!args.no_aggregation)
        .ordering(if args.ordered {
            Ordering::PerPartitionKey
        } else {
            Ordering::Throughput
        })
        .max_outstanding_records(args.max_outstanding)
        .max_outstanding_bytes(
            NonZeroUsize::new(MAX_OUTSTANDING_BYTES).unwrap_or(NonZeroUsize::MIN),
        )
        .record_ttl(args.record_ttl)
        .build()
        .await
        .map_err(|error| producer_error(&args.stream, &error))
}

/// A producer that could not start, as an exit code and one line.
fn producer_error(stream: &str, error: &kinesis_producer::Error) -> CliError {
    let mut line = match error {
        kinesis_producer::Error::StreamNotFound { .. } => {
            format!("stream {stream} not found (ResourceNotFoundException)")
        }
        other => format!("starting the producer for stream {stream}: {other}"),
    };
    if let Some(id) = error.request_id() {
        line.push_str(&format!(" (request id {id})"));
    }
    match (error, error.kind()) {
        (kinesis_producer::Error::InvalidConfig { .. }, _) => CliError::Usage(line),
        (_, Some(ErrorKind::NotFound)) => CliError::NotFound(line),
        (_, Some(ErrorKind::AccessDenied)) => CliError::Access(line),
        _ => CliError::Aws(line),
    }
}

/// The progress line: rates since the last reading, lines held, failures.
pub(crate) fn describe(
    counters: Arc<Counters>,
    gate: Gate,
) -> impl Fn(Duration) -> String + Send + 'static {
    let last = Mutex::new((Duration::ZERO, 0u64, 0u64));
    move |elapsed| {
        let sent = counters.get(&counters.sent);
        let sent_bytes = counters.get(&counters.sent_bytes);
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        let (then, sent_then, bytes_then) = *last;
        *last = (elapsed, sent, sent_bytes);
        let window = elapsed.saturating_sub(then);
        format!(
            "{} records ({}), {} records/s, {}/s, {} outstanding, {} failed",
            progress::thousands(sent),
            progress::bytes(sent_bytes),
            progress::thousands(report::rate(sent - sent_then, window)),
            progress::bytes(report::rate(sent_bytes - bytes_then, window)),
            progress::thousands(gate.held() as u64),
            progress::thousands(counters.get(&counters.failed)),
        )
    }
}

/// A stop asked by a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

/// Signals that stop the command.
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals")
    }
}

impl Signals {
    pub(crate) fn listen() -> Result<Signals, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())
                .map_err(|e| CliError::io("listening for Ctrl-C", &e))?,
            terminate: signal(SignalKind::terminate())
                .map_err(|e| CliError::io("listening for SIGTERM", &e))?,
        })
    }

    /// The next stop signal.
    pub(crate) async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Terminate,
        }
    }
}

/// One input: a file, or stdin.
enum Input {
    File(tokio::fs::File),
    /// Chunks read by a thread of its own: a blocking read of stdin must not hold the runtime
    /// (or the process's exit) after Ctrl-C.
    Stdin(mpsc::Receiver<std::io::Result<Vec<u8>>>),
}

impl Input {
    fn stdin() -> Input {
        let (tx, rx) = mpsc::channel(4);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut buf = vec![0; READ_CHUNK];
                let read = match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                if tx.blocking_send(read).is_err() || failed {
                    break;
                }
            }
        });
        Input::Stdin(rx)
    }

    /// The next bytes, or `None` at the end.
    async fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        match self {
            Input::File(file) => {
                buf.resize(READ_CHUNK, 0);
                let n = file.read(buf).await?;
                buf.truncate(n);
                Ok(n > 0)
            }
            Input::Stdin(rx) => match rx.recv().await {
                Some(chunk) => {
                    *buf = chunk?;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }
}

/// A line on its way to the collector.
struct Item {
    input: usize,
    line: u64,
    submitted: Submitted,
}

pub(crate) async fn run(args: Args, common: Common) -> Result<(), CliError> {
    if args.follow {
        return crate::follow::run(args, common).await;
    }
    // The inputs are opened first: a missing file fails before anything is sent.
    let mut names = Vec::new();
    let mut inputs = Vec::new();
    let stdin_named = args.files.iter().filter(|f| f.as_os_str() == "-").count();
    if stdin_named > 1 {
        return Err(CliError::Usage(
            "stdin (-) can be read only once".to_owned(),
        ));
    }
    if args.files.is_empty() {
        names.push("-".to_owned());
        inputs.push(None);
    }
    for path in &args.files {
        let name = path.display().to_string();
        if path.as_os_str() == "-" {
            inputs.push(None);
        } else {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| CliError::io(&format!("opening {name}"), &e))?;
            inputs.push(Some(file));
        }
        names.push(name);
    }
    let mut signals = Signals::listen()?;
    let producer = start_producer(&args, &common).await?;
    let submitter = Submitter {
        producer: producer.clone(),
        key_mode: args.key_mode(),
        skip_empty: args.skip_empty,
        gate: Gate::new(args.max_outstanding),
    };
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let progress = Progress::start(
        common.progress,
        "produce",
        describe(counters.clone(), submitter.gate.clone()),
    );

    let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
    let failures = Arc::new(Mutex::new(Failures::default()));
    let collector = {
        let counters = counters.clone();
        let names = names.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                if let Resolved::Failed(failure) = resolve(item.submitted, &counters).await {
                    failures.lock().unwrap_or_else(PoisonError::into_inner).add(
                        &names[item.input],
                        item.line,
                        &failure,
                    );
                }
            }
        })
    };

    let reading = async {
        for (index, input) in inputs.into_iter().enumerate() {
            let input = match input {
                Some(file) => Input::File(file),
                None => Input::stdin(),
            };
            read_input(input, index, &names[index], &submitter, &tx).await?;
        }
        Ok::<(), CliError>(())
    };
    let mut stop = tokio::select! {
        result = reading => {
            result?;
            None
        }
        stop = signals.next() => Some(stop),
    };
    // Reading is over (the reader's sender went with it): the collector ends with the last line.
    drop(tx);
    let mut collector = collector;
    let mut found = None;
    if stop.is_none() {
        tokio::select! {
            result = &mut collector => found = Some(result),
            signal = signals.next() => stop = Some(signal),
        }
    }
    if stop.is_some() && found.is_none() {
        // Stopped: what was read is flushed, for a grace period; a second signal stops at once.
        let wait = async {
            let _ = producer.flush().await;
            (&mut collector).await
        };
        tokio::select! {
            result = wait => found = Some(result),
            _ = tokio::time::sleep(GRACE) => {}
            _ = signals.next() => {}
        }
    }
    let mut unresolved = 0;
    match found {
        Some(result) => {
            result.map_err(|e| CliError::Io(format!("the receipt collector failed: {e}")))?;
        }
        None => {
            // Counted before the collector goes: its lines give their places back with it.
            unresolved = submitter.gate.held() as u64;
            collector.abort();
        }
    }
    if stop.is_none() {
        producer.shutdown().await;
    }
    progress.finish().await;
    let totals = Totals::read(&counters, unresolved);
    let report = failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .report();
    for line in report {
        eprintln!("{line}");
    }
    println!("{}", report::summary(totals, started.elapsed()));
    if stop.is_some() {
        return Err(CliError::Interrupted);
    }
    if totals.failed > 0 {
        return Err(CliError::RecordsFailed(format!(
            "{} of {} lines failed",
            progress::thousands(totals.failed),
            progress::thousands(totals.failed + totals.sent + totals.skipped)
        )));
    }
    Ok(())
}

/// Reads one input to its end, putting its lines.
async fn read_input(
    mut input: Input,
    index: usize,
    name: &str,
    submitter: &Submitter,
    tx: &mpsc::UnboundedSender<Item>,
) -> Result<(), CliError> {
    let mut splitter = Splitter::new(submitter.max_line(), 0, 1);
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut lines: Vec<Line> = Vec::new();
    loop {
        let more = input
            .next(&mut buf)
            .await
            .map_err(|e| CliError::io(&format!("reading {name}"), &e))?;
        if more {
            splitter.feed(&buf, &mut |line| lines.push(line));
        } else {
            lines.extend(splitter.finish());
        }
        for line in lines.drain(..) {
            let submitted = submitter.submit(line.content).await;
            let item = Item {
                input: index,
                line: line.number,
                submitted,
            };
            if tx.send(item).is_err() {
                return Err(CliError::Io("the receipt collector stopped".to_owned()));
            }
        }
        if !more {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        crate::parse_args("produce", args)
    }

    #[test]
    fn durations() {
        let cases = [
            ("30s", Some(30_000)),
            ("30", Some(30_000)),
            ("500ms", Some(500)),
            ("1.5s", Some(1500)),
            ("5m", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("0s", None),
            ("-1s", None),
            ("s", None),
            ("10 parsecs", None),
            ("8d", None),
            ("", None),
        ];
        for (text, millis) in cases {
            let parsed = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(parsed, millis, "{text:?}");
        }
    }

    #[test]
    fn key_sources_exclude_each_other() {
        assert_eq!(
            parse(&["--stream", "s"]).unwrap().key_mode(),
            KeyMode::Random
        );
        assert_eq!(
            parse(&["--stream", "s", "--key", "k"]).unwrap().key_mode(),
            KeyMode::Fixed("k".into())
        );
        assert_eq!(
            parse(&["--stream", "s", "--key-field", "id"])
                .unwrap()
                .key_mode(),
            KeyMode::Field("id".into())
        );
        assert_eq!(
            parse(&["--stream", "s", "--tab"]).unwrap().key_mode(),
            KeyMode::Tab
        );
        for bad in [
            &["--stream", "s", "--key", "k", "--tab"][..],
            &["--stream", "s", "--key", "k", "--key-field", "f"],
            &["--stream", "s", "--key-field", "f", "--tab"],
            &["--stream", "s", "--key", ""],
            &["--stream", "s", "--max-outstanding", "0"],
            &["--stream", "s", "--checkpoint", "c.json"],
            &["a.txt"],
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
        let long_key = "ü".repeat(257);
        assert!(parse(&["--stream", "s", "--key", &long_key]).is_err());
        let args = parse(&["--stream", "s", "--follow", "a.log", "--start-at", "end"]).unwrap();
        assert!(args.follow && args.start_at == StartAt::End);
        assert_eq!(args.max_outstanding.get(), 10_000);
        assert_eq!(args.record_ttl, Duration::from_secs(30));
    }
}
