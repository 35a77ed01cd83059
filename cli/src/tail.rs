//! `kinesis tail`: prints a stream's records as they come, from every shard (or the shards
//! given), without a lease table.
//!
//! ```text
//!  ListShards ──► lineage::Plan (parents first) ──► one reader task per shard being read
//!                        ▲                            polling: GetShardIterator + GetRecords
//!                        │ shard ended: list again,   fan-out: SubscribeToShard
//!                        │ start the children             │ deaggregate, skip what was printed
//!                        │                                ▼
//!                        └───────────────────────── bounded channel ──► format ──► stdout
//!                                                    (a slow stdout holds the readers back)
//! ```
//!
//! A parent's records are all printed before its children's: a child's reader starts only once
//! the printer has taken the parent's end off the channel, after the parent's last records.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    num::NonZeroU64,
    sync::{Arc, Mutex},
    time::Duration,
};

use kinesis_aggregation::{DeaggregatedRecord, StreamRecord, deaggregate};
use kinesis_calls::{CallError, ErrorKind, LIST_SHARDS_PAGE, ListedShard, StreamRef, Which};
use kinesis_consumer::SequenceNumber;
use tokio::{io::AsyncWriteExt, sync::mpsc, task::JoinSet};

use crate::{
    Common,
    error::CliError,
    position::{POSITION_FORMS, Position},
    progress::{self, Mode, Progress},
};

mod fanout;
mod format;
mod lineage;
mod polling;

use format::Format;
use lineage::{Plan, Start};

/// The longest wait for one call's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages from the readers waiting for the printer: with at most one more answer held by each
/// reader, this bounds what is in memory when stdout is slower than the stream.
const CHANNEL: usize = 8;
/// How long a failing call is retried without a word on stderr (the progress line shows it
/// before).
const QUIET_FAILURES: u32 = 3;

/// Print a stream's records as they arrive, from every shard, following splits and merges
/// (parents before children). No lease table is used and nothing is checkpointed.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The stream, by name or ARN.
    #[arg(long, value_name = "NAME|ARN")]
    stream: String,
    /// Where to start: trim-horizon, latest (new records only, as `tail -f`), a time (RFC 3339
    /// or epoch seconds), or SEQUENCE[/SUBSEQUENCE] with exactly one --shard.
    #[arg(long, default_value = "latest", value_name = "POSITION", value_parser = Position::parse)]
    from: Position,
    /// Read only this shard (repeatable); its children are then not followed.
    #[arg(long = "shard", value_name = "SHARD_ID")]
    shards: Vec<String>,
    /// How records are printed.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop after this many user records (exit 0); without it, run until Ctrl-C (exit 130).
    #[arg(long, value_name = "N")]
    limit: Option<NonZeroU64>,
    /// Read with enhanced fan-out: register a stream consumer for this run (deregistered when
    /// it ends) and subscribe to each shard.
    #[arg(long)]
    fan_out: bool,
    /// With --fan-out: use this existing stream consumer (kept at the end) instead of
    /// registering one.
    #[arg(long, value_name = "NAME", requires = "fan_out")]
    consumer: Option<String>,
}

/// What a reader tells the printer.
#[derive(Debug)]
enum Msg {
    /// User records read (possibly none), and how far behind the tip the shard is.
    Records {
        shard: Arc<str>,
        records: Vec<DeaggregatedRecord>,
        behind: Option<i64>,
    },
    /// The shard was read to its end.
    Ended(Arc<str>),
    /// A call is failing and being retried (`Some`), or works again (`None`).
    Problem(Arc<str>, Option<String>),
    /// Reading failed for good.
    Failed(CliError),
}

/// What a reader task is given.
#[derive(Clone, Debug)]
struct Reader {
    client: aws_sdk_kinesis::Client,
    stream: StreamRef,
    shard: Arc<str>,
    start: Start,
    tx: mpsc::Sender<Msg>,
}

/// Deaggregates records, dropping user records before a `--from SEQUENCE/SUBSEQUENCE` start and
/// any at or before the last one handed on (a renewed subscription replaying).
#[derive(Debug, Default)]
struct Skip {
    before: Option<(SequenceNumber, u64)>,
    last: Option<(SequenceNumber, u64)>,
}

impl Skip {
    fn from_start(start: &Start) -> Skip {
        Skip {
            before: match start {
                Start::AtSequence(sequence, sub) => Some((sequence.clone(), *sub)),
                _ => None,
            },
            last: None,
        }
    }

    fn deaggregate(
        &mut self,
        records: impl Iterator<Item = StreamRecord>,
    ) -> Vec<DeaggregatedRecord> {
        let mut out = Vec::new();
        for record in records.flat_map(deaggregate) {
            let Ok(sequence) = SequenceNumber::parse(&record.sequence_number) else {
                // Not a number (never from Kinesis): nothing to compare, passed on.
                out.push(record);
                continue;
            };
            let position = (sequence, record.sub_sequence_number);
            if self
                .before
                .as_ref()
                .is_some_and(|before| &position < before)
            {
                continue;
            }
            self.before = None;
            if self.last.as_ref().is_some_and(|last| &position <= last) {
                continue;
            }
            self.last = Some(position);
            out.push(record);
        }
        out
    }
}

/// Waits until a start time has passed: the service refuses an `AT_TIMESTAMP` position in the
/// future.
async fn reach(start: &Start) {
    if let Start::AtTimestamp(at) = start
        && let Ok(ahead) = at.duration_since(std::time::SystemTime::now())
    {
        tokio::time::sleep(ahead + Duration::from_millis(50)).await;
    }
}

/// The delay before retry number `failures` (1, 2, ...): 200 ms doubling to 10 s, of which a
/// random part (`jitter`, 0 to 1) is taken off, up to half.
fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(10));
    base.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// Consecutive failures of a reader's calls.
#[derive(Debug, Default)]
struct Retry {
    failures: u32,
}

impl Retry {
    /// After `error` of `operation`: waits and returns true if retrying may help (and says so
    /// to the printer), else hands the printer the failure and returns false.
    async fn after(&mut self, reader: &Reader, operation: &str, error: CallError) -> bool {
        if !error.is_retryable() {
            let what = format!("reading {} of stream {}", reader.shard, reader.stream);
            let failure = match error.kind {
                ErrorKind::NotFound => CliError::NotFound(format!(
                    "{what}: the stream, the shard or the stream consumer no longer exists: \
                     {operation}: {error}"
                )),
                _ => CliError::call(&format!("{what}: {operation}"), &error),
            };
            let _ = reader.tx.send(Msg::Failed(failure)).await;
            return false;
        }
        self.failures += 1;
        let problem = format!(
            "{operation} failed {} time(s), retrying: {error}",
            self.failures
        );
        if self.failures > QUIET_FAILURES {
            tracing::warn!(shard = %reader.shard, "{problem}");
        }
        if reader
            .tx
            .send(Msg::Problem(reader.shard.clone(), Some(problem)))
            .await
            .is_err()
        {
            return false;
        }
        tokio::time::sleep(backoff(self.failures, rand::random())).await;
        true
    }

    /// A call succeeded.
    async fn succeeded(&mut self, reader: &Reader) {
        if self.failures > 0 {
            self.failures = 0;
            let _ = reader
                .tx
                .send(Msg::Problem(reader.shard.clone(), None))
                .await;
        }
    }
}

/// A failed call about the stream itself: a missing stream is said so.
fn stream_error(stream: &StreamRef, doing: &str, error: &CallError) -> CliError {
    match error.kind {
        ErrorKind::NotFound => CliError::NotFound(format!("stream {stream} not found ({error})")),
        _ => CliError::call(&format!("{doing} stream {stream}"), error),
    }
}

/// Lists the stream's shards, retrying throttles and transient failures a few times.
async fn list(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
) -> Result<Vec<ListedShard>, CliError> {
    let mut failures = 0;
    loop {
        match kinesis_calls::list_shards(client, stream, Which::All, LIST_SHARDS_PAGE, CALL_TIMEOUT)
            .await
        {
            Ok(listed) => return Ok(listed),
            Err(error) if error.is_retryable() && failures < 5 => {
                failures += 1;
                tokio::time::sleep(backoff(failures, rand::random())).await;
            }
            Err(error) => return Err(stream_error(stream, "listing the shards of", &error)),
        }
    }
}

/// What the progress line shows.
#[derive(Debug, Default)]
struct Stats {
    records: u64,
    reading: usize,
    behind: BTreeMap<Arc<str>, i64>,
    problems: BTreeMap<Arc<str>, String>,
}

fn describe(stats: &Mutex<Stats>, previous: &Mutex<(Duration, u64)>, elapsed: Duration) -> String {
    let stats = stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut previous = previous
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rate = progress::per_second(
        stats.records.saturating_sub(previous.1),
        elapsed.saturating_sub(previous.0),
    );
    *previous = (elapsed, stats.records);
    let mut line = format!(
        "{} records, {rate}, {} shard(s) read",
        progress::thousands(stats.records),
        stats.reading
    );
    if let Some((shard, millis)) = stats.behind.iter().max_by_key(|(_, m)| **m) {
        line.push_str(&format!(", behind latest: {}", lag(*millis)));
        if stats.behind.len() > 1 {
            line.push_str(&format!(" at most ({shard})"));
        }
    }
    if let Some((shard, problem)) = stats.problems.iter().next() {
        line.push_str(&format!("; {shard}: {problem}"));
    }
    line
}

/// Milliseconds behind the tip, readably.
fn lag(millis: i64) -> String {
    if millis < 1000 {
        format!("{millis} ms")
    } else if millis < 120_000 {
        format!("{:.1} s", millis as f64 / 1000.0)
    } else {
        format!("{} min", millis / 60_000)
    }
}

/// Where records go: the terminal (written around the live progress line) or a pipe or file
/// (written asynchronously, so that Ctrl-C is heard while a reader of the pipe is slow).
enum Output {
    Terminal,
    Pipe(tokio::io::BufWriter<tokio::io::Stdout>),
}

impl Output {
    async fn write(&mut self, progress: &Progress, text: &str) -> std::io::Result<()> {
        match self {
            Output::Terminal => progress.suspend(|| {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            }),
            Output::Pipe(out) => {
                out.write_all(text.as_bytes()).await?;
                out.flush().await
            }
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, as a channel that turns true.
fn stop_signal() -> Result<tokio::sync::watch::Receiver<bool>, CliError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::io("listening for SIGTERM", &e))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Resolves when the stop signal has come.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which happens only after it sent.
    let _ = stop.wait_for(|s| *s).await;
}

/// Checks the arguments that clap cannot.
fn check(args: &Args) -> Result<StreamRef, CliError> {
    let stream = StreamRef::from(args.stream.clone());
    if let Some(problem) = stream.problem() {
        return Err(CliError::Usage(format!("--stream {stream}: {problem}")));
    }
    if matches!(args.from, Position::Sequence(..)) && args.shards.len() != 1 {
        return Err(CliError::Usage(format!(
            "--from with a sequence number needs exactly one --shard (a sequence number belongs \
             to one shard); --from also takes {POSITION_FORMS}"
        )));
    }
    if let Some(name) = &args.consumer
        && (name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
    {
        return Err(CliError::Usage(format!(
            "--consumer {name:?}: a consumer name has 1 to 128 characters from a-z A-Z 0-9 _ . -"
        )));
    }
    Ok(stream)
}

/// The progress mode for `tail`: the live line needs only stderr to be a terminal (records on
/// a terminal stdout are printed around it).
fn mode(common: Mode) -> Mode {
    match common {
        Mode::Quiet => Mode::Quiet,
        _ if std::io::stderr().is_terminal() => Mode::Live,
        _ => Mode::Plain,
    }
}

pub(crate) async fn run(args: Args, common: Common) -> Result<(), CliError> {
    let stream = check(&args)?;
    let client = common.aws.kinesis().await?;
    let mut stop = stop_signal()?;
    let listed = tokio::select! {
        listed = list(&client, &stream) => listed?,
        () = stopped(&mut stop) => return Err(CliError::Interrupted),
    };
    let plan = Plan::new(&listed, &args.shards, &args.from).map_err(|shard| {
        CliError::NotFound(format!("shard {shard} not found in stream {stream}"))
    })?;
    let registration = if args.fan_out {
        let arn = fanout::stream_arn(&client, &stream).await?;
        let registration = match &args.consumer {
            Some(name) => fanout::existing(&client, &arn, name).await?,
            None => fanout::register(&client, &arn).await?,
        };
        if registration.ours && common.progress != Mode::Quiet {
            eprintln!(
                "# registered stream consumer {} (deregistered on exit)",
                registration.name
            );
        }
        let active = tokio::select! {
            active = fanout::wait_active(&client, &registration) => active,
            () = stopped(&mut stop) => Err(CliError::Interrupted),
        };
        match active {
            Ok(()) => Some(registration),
            Err(error) => {
                finish_fan_out(&client, Some(&registration)).await;
                return Err(error);
            }
        }
    } else {
        None
    };
    let result = print(
        &args,
        &common,
        &client,
        &stream,
        plan,
        registration.as_ref(),
        stop,
    )
    .await;
    finish_fan_out(&client, registration.as_ref()).await;
    result
}

/// Deregisters the consumer this run registered; a failure is said on stderr (the command's
/// outcome stays what it was).
async fn finish_fan_out(
    client: &aws_sdk_kinesis::Client,
    registration: Option<&fanout::Registration>,
) {
    let Some(registration) = registration.filter(|r| r.ours) else {
        return;
    };
    if let Err(error) = fanout::deregister(client, registration).await {
        eprintln!(
            "kinesis: could not deregister stream consumer {} ({error}); deregister it with \
             `aws kinesis deregister-stream-consumer --consumer-arn {}`",
            registration.name, registration.arn
        );
    }
}

/// Reads and prints until the limit, the end of every shard, a failure, a closed stdout or a
/// stop signal.
async fn print(
    args: &Args,
    common: &Common,
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    mut plan: Plan,
    registration: Option<&fanout::Registration>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CliError> {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let previous = Mutex::new((Duration::ZERO, 0));
    let shown = stats.clone();
    let progress = Progress::start(mode(common.progress), "tail", move |elapsed| {
        describe(&shown, &previous, elapsed)
    });
    let mut output = if std::io::stdout().is_terminal() {
        Output::Terminal
    } else {
        Output::Pipe(tokio::io::BufWriter::new(tokio::io::stdout()))
    };
    let (tx, mut rx) = mpsc::channel(CHANNEL);
    let mut readers = JoinSet::new();
    let start = |readers: &mut JoinSet<()>, plan: &mut Plan| {
        for (shard, start) in plan.ready() {
            let reader = Reader {
                client: client.clone(),
                stream: stream.clone(),
                shard: shard.into(),
                start,
                tx: tx.clone(),
            };
            match registration {
                Some(r) => readers.spawn(fanout::read(reader, r.arn.clone())),
                None => readers.spawn(polling::read(reader)),
            };
        }
    };
    start(&mut readers, &mut plan);
    let mut printed = 0u64;
    let mut text = String::new();
    let outcome = loop {
        stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reading = plan.reading();
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            () = stopped(&mut stop) => break Err(CliError::Interrupted),
        };
        // The printer holds a sender: the channel never closes under it.
        let Some(msg) = msg else {
            break Ok(());
        };
        match msg {
            Msg::Records {
                shard,
                mut records,
                behind,
            } => {
                if let Some(limit) = args.limit {
                    let left = limit.get().saturating_sub(printed);
                    records.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                }
                text.clear();
                for record in &records {
                    format::line(args.format, &shard, record, &mut text);
                }
                let written = if text.is_empty() {
                    // Only the lag was reported.
                    Ok(())
                } else {
                    tokio::select! {
                        written = output.write(&progress, &text) => written,
                        () = stopped(&mut stop) => break Err(CliError::Interrupted),
                    }
                };
                match written {
                    Ok(()) => {}
                    // The reader of the pipe is gone (`| head`): nothing more is wanted.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break Ok(()),
                    Err(e) => break Err(CliError::io("writing to stdout", &e)),
                }
                printed += records.len() as u64;
                {
                    let mut stats = stats
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    stats.records = printed;
                    if let Some(millis) = behind {
                        stats.behind.insert(shard, millis);
                    }
                }
                if args.limit.is_some_and(|limit| printed >= limit.get()) {
                    break Ok(());
                }
            }
            Msg::Ended(shard) => {
                plan.ended(&shard);
                stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .behind
                    .remove(&shard);
                if plan.needs_listing(&shard) {
                    let listed = tokio::select! {
                        listed = list(client, stream) => listed,
                        () = stopped(&mut stop) => break Err(CliError::Interrupted),
                    };
                    match listed {
                        Ok(listed) => plan.add_listed(&listed),
                        Err(error) => break Err(error),
                    }
                }
                start(&mut readers, &mut plan);
                if plan.done() {
                    if common.progress != Mode::Quiet {
                        progress.suspend(|| {
                            eprintln!("# every shard read to its end");
                        });
                    }
                    break Ok(());
                }
            }
            Msg::Problem(shard, problem) => {
                let mut stats = stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match problem {
                    Some(problem) => stats.problems.insert(shard, problem),
                    None => stats.problems.remove(&shard),
                };
            }
            Msg::Failed(error) => break Err(error),
        }
    };
    readers.abort_all();
    progress.finish().await;
    if let Output::Pipe(out) = &mut output {
        // What was written is flushed already; a closed pipe here changes nothing.
        let _ = out.flush().await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[&str]) -> Result<Args, String> {
        crate::parse_args("tail", line).map_err(|e| e.to_string())
    }

    const SEQ: &str = "49590338271490256608559692538361571095921575989136588818";

    #[test]
    fn defaults_follow_the_stream_from_latest_as_text() {
        let args = parse(&["--stream", "s"]).expect("parses");
        assert_eq!(args.from, Position::Latest);
        assert_eq!(args.format, Format::Text);
        assert!(args.limit.is_none() && !args.fan_out && args.shards.is_empty());
        assert!(check(&args).is_ok());
    }

    #[test]
    fn a_sequence_number_needs_exactly_one_shard() {
        let args = parse(&["--stream", "s", "--from", SEQ]).expect("parses");
        assert_eq!(check(&args).map(|_| ()).map_err(|e| e.exit_code()), Err(2));
        let two = parse(&[
            "--stream", "s", "--from", SEQ, "--shard", "a", "--shard", "b",
        ])
        .expect("parses");
        assert_eq!(check(&two).map(|_| ()).map_err(|e| e.exit_code()), Err(2));
        let one = parse(&[
            "--stream",
            "s",
            "--from",
            &format!("{SEQ}/2"),
            "--shard",
            "a",
        ])
        .expect("parses");
        assert!(check(&one).is_ok());
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--stream", "s", "--from", "yesterday"]).is_err());
        assert!(parse(&["--stream", "s", "--limit", "0"]).is_err());
        assert!(parse(&["--stream", "s", "--format", "xml"]).is_err());
        assert!(
            parse(&["--stream", "s", "--consumer", "c"]).is_err(),
            "needs --fan-out"
        );
        assert!(parse(&["--from", "latest"]).is_err(), "needs --stream");
        let bad_name = parse(&["--stream", "no spaces"]).expect("parses");
        assert_eq!(
            check(&bad_name).map(|_| ()).map_err(|e| e.exit_code()),
            Err(2)
        );
        let arn = parse(&[
            "--stream",
            "arn:aws:kinesis:us-east-1:123456789012:stream/s",
        ])
        .expect("parses");
        assert!(check(&arn).is_ok());
    }

    fn stream_record(sequence: &str, data: &str) -> StreamRecord {
        StreamRecord::new(sequence, "k", data.as_bytes().to_vec())
    }

    fn aggregate(sequence: &str, n: usize) -> StreamRecord {
        use kinesis_aggregation::{AggregationLimits, Aggregator, UserRecord};
        let mut aggregator = Aggregator::new(AggregationLimits::default());
        for i in 0..n {
            aggregator
                .try_push(UserRecord::new("k", format!("u{i}")).expect("record"))
                .expect("fits");
        }
        let record = aggregator.finish().expect("records");
        StreamRecord::new(sequence, record.partition_key, record.data)
    }

    fn positions(records: &[DeaggregatedRecord]) -> Vec<(String, u64)> {
        records
            .iter()
            .map(|r| (r.sequence_number.to_string(), r.sub_sequence_number))
            .collect()
    }

    #[test]
    fn a_start_inside_an_aggregate_skips_the_user_records_before_it() {
        let start = Start::AtSequence(SequenceNumber::parse("100").expect("digits"), 2);
        let mut skip = Skip::from_start(&start);
        let out = skip.deaggregate([aggregate("100", 4), stream_record("101", "x")].into_iter());
        assert_eq!(
            positions(&out),
            [("100".into(), 2), ("100".into(), 3), ("101".into(), 0)]
        );
    }

    #[test]
    fn replayed_records_are_dropped() {
        let mut skip = Skip::from_start(&Start::TrimHorizon);
        let first = skip.deaggregate([stream_record("5", "a"), aggregate("7", 2)].into_iter());
        assert_eq!(positions(&first).len(), 3);
        // A renewed subscription starting at an earlier position.
        let again = skip.deaggregate(
            [
                stream_record("5", "a"),
                aggregate("7", 2),
                stream_record("9", "b"),
            ]
            .into_iter(),
        );
        assert_eq!(positions(&again), [("9".into(), 0)]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_with_jitter_taking_at_most_half() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(2, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(6, 0.0), Duration::from_millis(6_400));
        assert_eq!(backoff(7, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(100, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(3, 0.5), Duration::from_millis(600));
    }

    #[test]
    fn the_progress_line_shows_records_rate_and_the_largest_lag() {
        let stats = Mutex::new(Stats {
            records: 1500,
            reading: 2,
            behind: [("s0".into(), 0), ("s1".into(), 2500)]
                .into_iter()
                .collect(),
            problems: [(
                "s1".into(),
                "GetRecords failed 1 time(s), retrying: x".to_owned(),
            )]
            .into_iter()
            .collect(),
        });
        let previous = Mutex::new((Duration::from_secs(1), 500));
        assert_eq!(
            describe(&stats, &previous, Duration::from_secs(2)),
            "1,500 records, 1,000/s, 2 shard(s) read, behind latest: 2.5 s at most (s1); \
             s1: GetRecords failed 1 time(s), retrying: x"
        );
        assert_eq!(lag(999), "999 ms");
        assert_eq!(lag(180_000), "3 min");
    }
}
