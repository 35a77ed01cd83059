//! One `kinesis-consumer` worker meant to run in its own process (the `consumer-worker` bin, or
//! the consumer benchmark re-executed), for the fleet tests and benchmarks (kill -9, SIGSTOP,
//! balancing, graceful shutdown, drain), and [`WorkerProcess`], the handle that starts one and
//! reads its report. With `--consumers N` the process runs N workers instead, each with its own
//! clients, lease-table view and clock (`--worker-id W` names them `W-0` .. `W-{N-1}`), and each
//! line of theirs starts with `@<worker id> `. The worker reports on stdout, one event per line:
//!
//! ```text
//! START <shard> <checkpoint>          the processor was initialized
//! CALL <shard> <unix µs>              a batch is handed to the processor (when the call began);
//!                                     its REC lines follow
//! REC <shard> <seq> <subseq> <data>   a record was processed (data is UTF-8)
//! CKPT <shard> ok|lost|error          a checkpoint after a batch
//! LOST <shard>                        lease lost
//! END <shard>                         shard ended and SHARD_END checkpointed
//! STOP <shard> ok|lost|error|none     shutdown or handoff asked; the checkpoint's outcome (none:
//!                                     nothing delivered to checkpoint)
//! PANIC <shard> <data>                with --panic-on: the processor is about to panic
//! EXIT                                the worker shut down (after SIGTERM or stdin closed)
//! COUNT <records>                     with --quiet, instead of REC and CKPT lines: records
//!                                     processed so far (by every worker of the process),
//!                                     every 20 ms while it changes
//! RSS <bytes>                         first: the process's resident memory once its workers
//!                                     are built, before they start (no lease held)
//! ```
//!
//! Arguments: `--kinesis URL --dynamodb URL --stream S --application A --worker-id W
//! [--failover-ms N] [--scan-ms N] [--renew-ms N] [--quiet] [--fan-out] [--panic-on DATA]
//! [--panic-marker FILE] [--consumers N] [--max-handoffs N] [--max-leases N]`.
//! `--fan-out` reads with enhanced fan-out (the stream consumer is named after the application)
//! instead of polling. `--panic-on DATA` makes a processor panic the first time a record whose
//! data is `DATA` is met (before processing it); with `--panic-marker FILE`, the first time in the
//! whole fleet (the worker that panics creates `FILE`; the others then do not panic).
//! SIGTERM, or stdin reaching its end, shuts the worker down gracefully.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, Error as ConsumerError, FanOut,
    InitialPosition, Retrieval, ShardProcessor, Start,
};
use tokio::io::AsyncReadExt;

use crate::{ClientOptions, dynamodb_client, kinesis_client};

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Printer {
    shard: String,
    /// `@<worker id> ` when the process runs several workers, else empty.
    prefix: Arc<str>,
    /// With --quiet: records are counted here instead of printed.
    quiet: Option<Arc<AtomicU64>>,
    /// With --panic-on: the data that triggers a panic, whether one happened already in this
    /// process, and the fleet-wide marker file.
    panic_on: Option<(String, Arc<std::sync::atomic::AtomicBool>, Option<String>)>,
}

impl ShardProcessor for Printer {
    async fn initialize(&mut self, start: &Start) -> Result<(), BoxError> {
        say(format!(
            "{}START {} {}",
            self.prefix, self.shard, start.checkpoint
        ));
        Ok(())
    }

    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        if let Some(count) = &self.quiet {
            count.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
            let _ = checkpointer.checkpoint().await;
            return Ok(());
        }
        if let Some((data, done, marker)) = &self.panic_on
            && let Some(record) = batch
                .records
                .iter()
                .find(|r| r.data.as_ref() == data.as_bytes())
            && !done.swap(true, Ordering::SeqCst)
            && marker.as_ref().is_none_or(|file| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(file)
                    .is_ok()
            })
        {
            say(format!(
                "{}PANIC {} {}",
                self.prefix,
                self.shard,
                String::from_utf8_lossy(&record.data)
            ));
            panic!("the test asked for a panic at {data}");
        }
        // When the call began (microseconds since the Unix epoch), for tests that freeze the
        // process: a call begun before a freeze may print its records after the process
        // resumes; one begun after must not exist once the lease is lost.
        let began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut lines = format!("{}CALL {} {began}\n", self.prefix, self.shard);
        for r in &batch.records {
            lines.push_str(&format!(
                "{}REC {} {} {} {}\n",
                self.prefix,
                self.shard,
                r.sequence_number,
                r.sub_sequence_number,
                String::from_utf8_lossy(&r.data)
            ));
        }
        {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(lines.as_bytes());
            let _ = out.flush();
        }
        let outcome = match checkpointer.checkpoint().await {
            Ok(()) => "ok",
            Err(ConsumerError::LeaseLost { .. }) => "lost",
            Err(_) => "error",
        };
        say(format!("{}CKPT {} {outcome}", self.prefix, self.shard));
        Ok(())
    }

    async fn lease_lost(&mut self) {
        say(format!("{}LOST {}", self.prefix, self.shard));
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        if checkpointer.checkpoint_shard_end().await.is_ok() {
            say(format!("{}END {}", self.prefix, self.shard));
        }
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        let outcome = match checkpointer.checkpoint().await {
            Ok(()) if checkpointer.last_delivered().is_some() => "ok",
            Ok(()) => "none",
            Err(ConsumerError::LeaseLost { .. }) => "lost",
            Err(_) => "error",
        };
        say(format!("{}STOP {} {outcome}", self.prefix, self.shard));
        Ok(())
    }
}

/// A worker's command line (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, clap::Parser)]
#[command(
    name = "consumer-worker",
    about = "One kinesis-consumer worker, reporting on stdout one event per line",
    args_override_self = true
)]
pub struct WorkerArgs {
    /// The Kinesis endpoint.
    #[arg(long, value_name = "URL")]
    pub kinesis: String,
    /// The DynamoDB endpoint.
    #[arg(long, value_name = "URL")]
    pub dynamodb: String,
    /// The stream.
    #[arg(long)]
    pub stream: String,
    /// The application (names the lease table).
    #[arg(long)]
    pub application: String,
    /// The worker's id.
    #[arg(long)]
    pub worker_id: String,
    /// The failover time, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub failover_ms: u64,
    /// The scan interval, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub scan_ms: u64,
    /// The renewal interval, in milliseconds.
    #[arg(long, default_value_t = 4_000)]
    pub renew_ms: u64,
    /// Count records (`COUNT` lines) instead of printing `REC` and `CKPT` lines.
    #[arg(long)]
    pub quiet: bool,
    /// Read with enhanced fan-out instead of polling.
    #[arg(long)]
    pub fan_out: bool,
    /// Panic the first time a record with this data is met.
    #[arg(long, value_name = "DATA", allow_hyphen_values = true)]
    pub panic_on: Option<String>,
    /// With `--panic-on`: panic only if this file can be created (once in the whole fleet).
    #[arg(long, value_name = "FILE")]
    pub panic_marker: Option<String>,
    /// Workers in this process (at least 1): with more, they are named `<worker-id>-<i>` and
    /// their lines start with `@<their id> `.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumers: u16,
    /// Most leases asked of other workers per cycle (0: never ask; expired and free leases are
    /// still taken). Default: as many as the fair share needs.
    #[arg(long, value_name = "N")]
    pub max_handoffs: Option<usize>,
    /// Most leases a worker holds (at least 1). Default: no limit.
    #[arg(long, value_name = "N")]
    pub max_leases: Option<std::num::NonZeroUsize>,
    /// The longest pause between polls of a quiet shard (`max_idle`), in milliseconds. Default:
    /// the consumer's.
    #[arg(long, value_name = "MS")]
    pub max_idle_ms: Option<u64>,
}

/// Runs the worker (or `--consumers` workers) with these arguments until SIGTERM or the end of
/// stdin.
pub async fn run(args: WorkerArgs) -> Result<(), BoxError> {
    // The workers' own log on stderr (`RUST_LOG`, `warn` by default): a process that already has
    // a subscriber keeps it.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let WorkerArgs {
        kinesis,
        dynamodb,
        stream,
        application,
        worker_id,
        failover_ms: failover,
        scan_ms: scan,
        renew_ms: renew,
        quiet,
        fan_out,
        panic_on,
        panic_marker,
        consumers,
        max_handoffs,
        max_leases,
        max_idle_ms,
    } = args;
    let options = ClientOptions::new();
    let count = Arc::new(AtomicU64::new(0));
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let application = ApplicationName::new(application)?;
    let mut built = Vec::with_capacity(usize::from(consumers));
    for i in 0..consumers {
        let (id, prefix): (String, Arc<str>) = if consumers == 1 {
            (worker_id.clone(), Arc::from(""))
        } else {
            let id = format!("{worker_id}-{i}");
            let prefix = Arc::from(format!("@{id} "));
            (id, prefix)
        };
        let counted = quiet.then(|| count.clone());
        let panic_on = panic_on.clone();
        let panicked = panicked.clone();
        let panic_marker = panic_marker.clone();
        // Each worker its own clients (connection pools), as separate processes would have.
        let consumer = Consumer::builder(
            kinesis_client(&kinesis, &options),
            dynamodb_client(&dynamodb, &options),
            stream.clone(),
            application.clone(),
            move |shard: &str| Printer {
                shard: shard.to_owned(),
                prefix: prefix.clone(),
                quiet: counted.clone(),
                panic_on: panic_on
                    .clone()
                    .map(|data| (data, panicked.clone(), panic_marker.clone())),
            },
        )
        .worker_id(id)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_millis(failover))
        .scan_interval(Duration::from_millis(scan))
        .renew_interval(Duration::from_millis(renew))
        .retrieval(if fan_out {
            Retrieval::FanOut(FanOut::new())
        } else {
            Retrieval::Polling
        });
        let consumer = match max_handoffs {
            Some(max) => consumer.max_handoffs_per_cycle(max),
            None => consumer,
        };
        let consumer = match max_leases {
            Some(max) => consumer.max_leases(max),
            None => consumer,
        };
        let consumer = match max_idle_ms {
            Some(ms) => consumer.max_idle(Duration::from_millis(ms)),
            None => consumer,
        };
        built.push(consumer.build()?);
    }
    say(format!("RSS {}", crate::resident_memory::of_self()?));
    let workers: Vec<_> = built.into_iter().map(|c| c.spawn()).collect();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            read = stdin.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { break },
            _ = tick.tick(), if quiet => {
                let now = count.load(Ordering::Relaxed);
                if now != reported {
                    reported = now;
                    say(format!("COUNT {now}"));
                }
            }
        }
    }
    let mut stopping = tokio::task::JoinSet::new();
    for worker in workers {
        stopping.spawn(worker.shutdown());
    }
    let mut outcome = Ok(());
    while let Some(stopped) = stopping.join_next().await {
        if let Err(error) = stopped? {
            outcome = Err(error);
        }
    }
    outcome?;
    say("EXIT".to_owned());
    Ok(())
}

/// A worker process, its stdout read into a log as it comes.
#[derive(Debug)]
pub struct WorkerProcess {
    /// The worker's id.
    pub id: String,
    /// The child process (killed when dropped).
    pub child: tokio::process::Child,
    /// Its pid.
    pub pid: u32,
    log: Arc<std::sync::Mutex<Vec<(tokio::time::Instant, String)>>>,
    _stdin: Option<tokio::process::ChildStdin>,
}

impl WorkerProcess {
    /// Starts `program` with `args` (a worker's arguments, see the module docs), its stderr
    /// inherited and `RUST_LOG=warn` unless set.
    pub fn spawn(
        program: &std::path::Path,
        args: &[String],
        id: &str,
    ) -> Result<WorkerProcess, BoxError> {
        let mut command = std::process::Command::new(program);
        command.args(args);
        Self::from_command(command, id)
    }

    /// Starts `command` (a worker program with its arguments, ours or a peer's speaking the same
    /// protocol), as [`WorkerProcess::spawn`] does.
    pub fn from_command(
        command: std::process::Command,
        id: &str,
    ) -> Result<WorkerProcess, BoxError> {
        use tokio::io::AsyncBufReadExt;
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command.spawn()?;
        let pid = child.id().ok_or("the worker exited at once")?;
        let stdout = child.stdout.take().ok_or("stdout not piped")?;
        let log: Arc<std::sync::Mutex<Vec<(tokio::time::Instant, String)>>> = Arc::default();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((tokio::time::Instant::now(), line));
            }
        });
        Ok(WorkerProcess {
            id: id.to_owned(),
            _stdin: child.stdin.take(),
            child,
            pid,
            log,
        })
    }

    /// Every line so far, with when it was read.
    pub fn lines(&self) -> Vec<(tokio::time::Instant, String)> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Shards whose processor started and has not stopped, with when it started (of every
    /// worker of the process).
    pub fn held(&self) -> std::collections::HashMap<String, tokio::time::Instant> {
        self.held_by_worker().into_values().flatten().collect()
    }

    /// Per worker of the process (see `--consumers`), the shards whose processor started and has
    /// not stopped, with when it started. A worker that never started one is absent.
    pub fn held_by_worker(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::HashMap<String, tokio::time::Instant>>
    {
        let mut held: std::collections::BTreeMap<String, std::collections::HashMap<_, _>> =
            std::collections::BTreeMap::new();
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (at, line) in log.iter() {
            let (worker, event) = split_worker(line);
            let mut words = event.split(' ');
            match (words.next(), words.next()) {
                (Some("START"), Some(shard)) => {
                    held.entry(worker.unwrap_or(&self.id).to_owned())
                        .or_default()
                        .insert(shard.to_owned(), *at);
                }
                (Some("LOST" | "END" | "STOP"), Some(shard)) => {
                    if let Some(its) = held.get_mut(worker.unwrap_or(&self.id)) {
                        its.remove(shard);
                    }
                }
                _ => {}
            }
        }
        held
    }

    /// For each shard started by a worker of this process after `after`, when it was first
    /// started then.
    pub fn first_starts_after(
        &self,
        after: tokio::time::Instant,
    ) -> std::collections::HashMap<String, tokio::time::Instant> {
        let mut starts = std::collections::HashMap::new();
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (at, line) in log.iter().filter(|(at, _)| *at >= after) {
            let mut words = split_worker(line).1.split(' ');
            if let (Some("START"), Some(shard)) = (words.next(), words.next()) {
                starts.entry(shard.to_owned()).or_insert(*at);
            }
        }
        starts
    }

    /// The resident memory the process reported before its workers started (`RSS` line).
    pub fn rss_at_start(&self) -> Option<u64> {
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter()
            .find_map(|(_, line)| line.strip_prefix("RSS ").and_then(|n| n.parse().ok()))
    }

    /// The last `COUNT` reported (with `--quiet`), and when.
    pub fn count(&self) -> Option<(tokio::time::Instant, u64)> {
        self.lines().into_iter().rev().find_map(|(at, line)| {
            line.strip_prefix("COUNT ")
                .and_then(|n| n.parse().ok())
                .map(|n| (at, n))
        })
    }

    /// When a line satisfying `wanted` was first read.
    pub fn first(&self, wanted: impl Fn(&str) -> bool) -> Option<tokio::time::Instant> {
        self.lines()
            .into_iter()
            .find(|(_, line)| wanted(line))
            .map(|(at, _)| at)
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, ...) with `kill`.
    pub fn signal(&self, signal: &str) -> Result<(), BoxError> {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {signal} {} failed", self.pid).into())
        }
    }
}

/// A line's worker (its `@<worker id> ` prefix, when the process runs several) and its event.
fn split_worker(line: &str) -> (Option<&str>, &str) {
    match line.strip_prefix('@').and_then(|rest| rest.split_once(' ')) {
        Some((worker, event)) => (Some(worker), event),
        None => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_their_worker_when_the_process_runs_several() {
        assert_eq!(
            split_worker("@h0-3 START shardId-000000000001 TRIM_HORIZON"),
            (Some("h0-3"), "START shardId-000000000001 TRIM_HORIZON")
        );
        assert_eq!(
            split_worker("START s TRIM_HORIZON"),
            (None, "START s TRIM_HORIZON")
        );
        assert_eq!(split_worker("RSS 1024"), (None, "RSS 1024"));
    }
}
