//! The showcase: produce records with `kinesis-producer`, consume them with a fleet of
//! `kinesis-consumer` workers, crash one worker, split a shard, and check that every record was
//! processed. Run by the `demo` example and by `kinesis demo`.
//!
//! By default everything runs in this process on `127.0.0.1`: a Kinesis stand-in (ferrokinesis)
//! and a DynamoDB stand-in (dynoxide). With `--aws` it uses the AWS configuration of the
//! environment (credentials, region, and `AWS_ENDPOINT_URL` if set) instead, on a stream named
//! with `--stream` (created if absent; it is split only if `--split` is given, since that changes
//! a real stream and its cost) and a lease table named after `--application`.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use clap::builder::TypedValueParser;
use kinesis_consumer::{
    ApplicationName, Batch, Checkpointer, Consumer, InitialPosition, Running, ShardProcessor, Start,
};
use kinesis_producer::{Producer, UserRecord};

use crate::BoxError;

/// The demo's command line (the `demo` example's, and `kinesis demo`'s).
#[derive(Debug, Parser)]
#[command(
    name = "demo",
    about = "Produce, consume with a fleet of workers, crash one, split a shard, check every record",
    args_override_self = true
)]
pub struct Args {
    /// Records to produce, at least (1 or more).
    #[arg(long, value_name = "N", default_value = "100000", value_parser = number_in(1..=u64::MAX))]
    records: u64,
    /// Records put per second (20 or more).
    #[arg(long, value_name = "PER_SECOND", default_value = "10000", value_parser = number_in(20..=u64::MAX))]
    rate: u64,
    /// Shards of the stream (1 to 50).
    #[arg(long, value_name = "N", default_value = "4", value_parser = number_in(1..=50).map(|n| n as i32))]
    shards: i32,
    /// Workers (2 to 16).
    #[arg(long, value_name = "N", default_value = "3", value_parser = number_in(2..=16).map(|n| n as usize))]
    workers: usize,
    /// The workers' failover time, in seconds (2 or more).
    #[arg(long, value_name = "S", default_value = "10", value_parser = number_in(2..=u64::MAX))]
    failover_secs: u64,
    /// Run against AWS (the environment's configuration) instead of embedded stand-ins.
    #[arg(long, requires_all = ["stream", "application"])]
    aws: bool,
    /// With --aws: the stream (created if absent).
    #[arg(long, value_name = "NAME")]
    stream: Option<String>,
    /// With --aws: the application (names the lease table).
    #[arg(long, value_name = "NAME")]
    application: Option<String>,
    /// With --aws: split a shard too (locally it always is).
    #[arg(long)]
    split: bool,
}

impl Args {
    /// Whether the demo runs against AWS (`--aws`) rather than embedded stand-ins.
    pub fn uses_aws(&self) -> bool {
        self.aws
    }

    fn failover(&self) -> Duration {
        Duration::from_secs(self.failover_secs)
    }

    /// Whether the demo splits a shard: always on the stand-ins, on AWS only if asked.
    fn splits(&self) -> bool {
        !self.aws || self.split
    }
}

/// A parser of whole numbers (`100000` or `100_000`) in `range`.
fn number_in(
    range: RangeInclusive<u64>,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let n: u64 = text
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number"))?;
        if range.contains(&n) {
            Ok(n)
        } else if *range.end() == u64::MAX {
            Err(format!("must be at least {}", range.start()))
        } else {
            Err(format!("must be from {} to {}", range.start(), range.end()))
        }
    }
}

/// What the fleet did, shared by every processor.
#[derive(Default)]
struct Ledger {
    /// The shards each record was delivered from, once per delivery.
    processed: HashMap<String, Vec<u16>>,
    /// Per worker: records processed, and the shards it runs now.
    workers: HashMap<String, (u64, Vec<String>)>,
    /// When each shard's processor last started, and by which worker.
    started: HashMap<String, (Instant, String)>,
    /// When each shard was read to its end.
    ended: HashMap<String, Instant>,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Processor {
    worker: String,
    shard: String,
    ledger: Shared,
}

impl ShardProcessor for Processor {
    async fn initialize(&mut self, _start: &Start) -> Result<(), BoxError> {
        let mut ledger = lock(&self.ledger);
        ledger
            .started
            .insert(self.shard.clone(), (Instant::now(), self.worker.clone()));
        ledger
            .workers
            .entry(self.worker.clone())
            .or_default()
            .1
            .push(self.shard.clone());
        Ok(())
    }

    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        {
            let mut ledger = lock(&self.ledger);
            let shard = shard_number(&self.shard);
            for record in &batch.records {
                ledger
                    .processed
                    .entry(String::from_utf8_lossy(&record.data).into_owned())
                    .or_default()
                    .push(shard);
            }
            ledger.workers.entry(self.worker.clone()).or_default().0 += batch.records.len() as u64;
        }
        if let Err(error) = checkpointer.checkpoint().await {
            eprintln!(
                "  {} could not checkpoint {}: {error}",
                self.worker, self.shard
            );
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.forget();
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        lock(&self.ledger)
            .ended
            .insert(self.shard.clone(), Instant::now());
        if let Err(error) = checkpointer.checkpoint_shard_end().await {
            eprintln!(
                "  {} could not checkpoint the end of {}: {error}",
                self.worker, self.shard
            );
        }
        self.forget();
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        let _ = checkpointer.checkpoint().await;
        self.forget();
        Ok(())
    }
}

impl Processor {
    fn forget(&self) {
        let mut ledger = lock(&self.ledger);
        if let Some((_, shards)) = ledger.workers.get_mut(&self.worker) {
            shards.retain(|s| *s != self.shard);
        }
    }
}

/// `shardId-000000000004` -> 4.
fn shard_number(shard: &str) -> u16 {
    shard
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u16::MAX)
}

struct Clients {
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
}

/// Splits the open shard with the widest hash-key range in the middle; returns its id.
async fn split_widest(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<String, BoxError> {
    let listed = client
        .list_shards()
        .stream_name(stream)
        .max_results(1000)
        .send()
        .await?;
    let widest = listed
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_none_or(|r| r.ending_sequence_number().is_none())
        })
        .filter_map(|s| {
            let range = s.hash_key_range()?;
            let start: u128 = range.starting_hash_key().parse().ok()?;
            let end: u128 = range.ending_hash_key().parse().ok()?;
            Some((end - start, start, s.shard_id().to_owned()))
        })
        .max()
        .ok_or("no open shard")?;
    let (width, start, id) = widest;
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&id)
        .new_starting_hash_key((start + width / 2 + 1).to_string())
        .send()
        .await?;
    crate::wait_active(client, stream).await?;
    Ok(id)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn start_worker(
    clients: &Clients,
    args: &Args,
    stream: &str,
    application: &str,
    id: &str,
    ledger: &Shared,
) -> Result<Running, BoxError> {
    let ledger = ledger.clone();
    let worker = id.to_owned();
    Ok(Consumer::builder(
        clients.kinesis.clone(),
        clients.dynamodb.clone(),
        stream.to_owned(),
        ApplicationName::new(application.to_owned())?,
        move |shard: &str| Processor {
            worker: worker.clone(),
            shard: shard.to_owned(),
            ledger: ledger.clone(),
        },
    )
    .worker_id(id)
    .initial_position(InitialPosition::TrimHorizon)
    .failover_time(args.failover())
    .renew_interval(args.failover() * 2 / 5)
    .build()?
    .spawn())
}

fn progress(started: Instant, produced: u64, ledger: &Shared) {
    let ledger = lock(ledger);
    let mut workers: Vec<String> = ledger
        .workers
        .iter()
        .map(|(name, (count, shards))| {
            format!(
                "{name}: {} shards, {} records",
                shards.len(),
                thousands(*count)
            )
        })
        .collect();
    workers.sort();
    println!(
        "  {:>5.1} s  produced {:>9}  processed {:>9}  | {}",
        started.elapsed().as_secs_f64(),
        thousands(produced),
        thousands(ledger.processed.len() as u64),
        workers.join(" | ")
    );
}

/// What the demo found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Records the producer reported delivered.
    pub acknowledged: u64,
    /// Acknowledged records no worker processed (0 on success).
    pub missing: u64,
}

impl Report {
    /// Whether every acknowledged record was processed.
    pub fn ok(&self) -> bool {
        self.missing == 0
    }
}

/// Runs the demo, printing each step on stdout; fails if a step does not happen in time or a
/// call fails. The report says whether every acknowledged record was processed.
///
/// With `--aws`, `aws` is the AWS configuration to use (`None`: the environment's, as
/// `aws_config::load_defaults` finds it); without, it is not used.
///
/// Logs go wherever the caller's `tracing` subscriber sends them; the DynamoDB stand-in logs
/// every refused conditional write (which is how leases work), so a filter such as
/// `warn,dynoxide=error` keeps it quiet.
///
/// # Cancellation
///
/// Dropping the future stops the demo where it is; the workers and the producer's task stop with
/// the runtime.
pub async fn run(args: Args, aws: Option<aws_config::SdkConfig>) -> Result<Report, BoxError> {
    let started = Instant::now();
    let suffix = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let (clients, stream, application) = if args.aws {
        let config = match aws {
            Some(config) => config,
            None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
        };
        (
            Clients {
                kinesis: aws_sdk_kinesis::Client::new(&config),
                dynamodb: aws_sdk_dynamodb::Client::new(&config),
            },
            args.stream.clone().unwrap_or_default(),
            args.application.clone().unwrap_or_default(),
        )
    } else {
        (
            Clients {
                kinesis: crate::local_kinesis().await?,
                dynamodb: crate::local_dynamodb().await?,
            },
            format!("demo-{suffix}"),
            format!("demo-app-{suffix}"),
        )
    };
    println!(
        "kinesis-rs demo: {} records at {}/s into {stream} ({} shards, {}), consumed by {} workers \
         (application {application}, failover {:?})",
        thousands(args.records),
        thousands(args.rate),
        args.shards,
        if args.aws {
            "AWS"
        } else {
            "embedded ferrokinesis and dynoxide on 127.0.0.1"
        },
        args.workers,
        args.failover()
    );
    crate::ensure_stream(&clients.kinesis, &stream, args.shards).await?;

    let ledger: Shared = Arc::default();
    let mut workers: Vec<(String, Running)> = Vec::new();
    for i in 1..=args.workers {
        let id = format!("worker-{i}");
        workers.push((
            id.clone(),
            start_worker(&clients, &args, &stream, &application, &id, &ledger)?,
        ));
    }
    println!("1. {} workers started; producing", args.workers);

    // The producer runs at the given rate until the demo's steps are done and at least
    // `--records` records were put.
    let producer = Producer::builder(clients.kinesis.clone(), stream.as_str())
        .build()
        .await?;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let (steps_done_tx, steps_done) = tokio::sync::watch::channel(false);
    let putter = {
        let producer = producer.clone();
        let (records, rate) = (args.records, args.rate);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let per_tick = (rate / 20).max(1);
            let mut i = 0u64;
            while i < records || !*steps_done.borrow() {
                tick.tick().await;
                for _ in 0..per_tick {
                    let data = format!("d{i}");
                    let record =
                        UserRecord::new(format!("key-{}", i % 1000), Bytes::from(data.clone()))?;
                    let receipt = producer.put(record).await?;
                    let acked = acked_tx.clone();
                    tokio::spawn(async move {
                        let _ = acked.send(receipt.await.is_ok().then_some(data));
                    });
                    i += 1;
                }
            }
            Ok::<u64, BoxError>(i)
        })
    };

    let mut acked: Vec<String> = Vec::new();
    let mut failed = 0u64;
    let mut last_progress = Instant::now();
    // Runs `check` every 20 ms, printing progress every second, until it gives a value.
    macro_rules! until {
        ($within:expr, $what:expr, $check:expr) => {{
            let deadline = Instant::now() + $within;
            loop {
                while let Ok(outcome) = acked_rx.try_recv() {
                    match outcome {
                        Some(data) => acked.push(data),
                        None => failed += 1,
                    }
                }
                if last_progress.elapsed() >= Duration::from_secs(1) {
                    progress(started, acked.len() as u64, &ledger);
                    last_progress = Instant::now();
                }
                if let Some(value) = $check {
                    break Ok(value);
                }
                if Instant::now() > deadline {
                    break Err(format!("timed out waiting for {}", $what));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }};
    }

    // 2. The fleet balances.
    let balanced: Result<(), String> = until!(Duration::from_secs(60), "the fleet to balance", {
        let ledger = lock(&ledger);
        let counts: Vec<usize> = workers
            .iter()
            .map(|(id, _)| ledger.workers.get(id).map_or(0, |(_, s)| s.len()))
            .collect();
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        let total: usize = counts.iter().sum();
        (total == args.shards as usize && max - min <= 1 && min > 0).then_some(())
    });
    balanced?;
    println!("2. balanced: {}", {
        let ledger = lock(&ledger);
        let mut shares: Vec<String> = workers
            .iter()
            .map(|(id, _)| {
                format!(
                    "{id} {}",
                    ledger.workers.get(id).map_or(0, |(_, s)| s.len())
                )
            })
            .collect();
        shares.sort();
        shares.join(", ")
    });

    // 3. A worker crashes; the others resume its shards after the failover time.
    let (victim, running) = workers.remove(0);
    let orphans = lock(&ledger)
        .workers
        .get(&victim)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    running.abort();
    let crashed = Instant::now();
    {
        let mut ledger = lock(&ledger);
        if let Some((count, _)) = ledger.workers.remove(&victim) {
            ledger
                .workers
                .insert(format!("{victim} (crashed)"), (count, Vec::new()));
        }
    }
    println!(
        "3. {victim} crashed (stopped without releasing its leases) holding {}; waiting for the failover",
        orphans.join(", ")
    );
    let failover: Result<Duration, String> = until!(
        args.failover() * 3 + Duration::from_secs(30),
        "the failover",
        {
            let ledger = lock(&ledger);
            let restarted: Vec<Instant> = orphans
                .iter()
                .filter_map(|s| {
                    ledger
                        .started
                        .get(s)
                        .filter(|(t, w)| *t > crashed && *w != victim)
                        .map(|(t, _)| *t)
                })
                .collect();
            (restarted.len() == orphans.len()).then(|| {
                restarted
                    .into_iter()
                    .max()
                    .map_or(Duration::ZERO, |t| t - crashed)
            })
        }
    );
    let failover = failover?;
    println!(
        "   its shards resumed on the other workers {:.1} s after the crash",
        failover.as_secs_f64()
    );

    // 4. A shard is split while records flow; its children start once it has ended.
    let mut child_start = None;
    let mut split_parent = None;
    if args.splits() {
        let parent = split_widest(&clients.kinesis, &stream).await?;
        println!("4. shard {parent} split in two; waiting for its children to start");
        let started_children: Result<Duration, String> =
            until!(Duration::from_secs(60), "the children", {
                let ledger = lock(&ledger);
                ledger.ended.get(&parent).and_then(|ended| {
                    let after: Vec<Instant> = ledger
                        .started
                        .values()
                        .map(|(t, _)| *t)
                        .filter(|t| t >= ended)
                        .collect();
                    (after.len() >= 2)
                        .then(|| after.iter().max().map_or(Duration::ZERO, |t| *t - *ended))
                })
            });
        let took = started_children?;
        println!(
            "   {parent} ended; both children started within {:.2} s",
            took.as_secs_f64()
        );
        child_start = Some(took);
        split_parent = Some(parent);
    }
    let _ = steps_done_tx.send(true);
    let finished: Result<(), String> = until!(
        Duration::from_secs(600),
        "the producer",
        putter.is_finished().then_some(())
    );
    finished?;
    let put = putter.await??;
    producer.shutdown().await;
    let resolved: Result<(), String> = until!(
        Duration::from_secs(30),
        "every receipt",
        (acked.len() as u64 + failed == put).then_some(())
    );
    resolved?;
    println!(
        "5. produced: {} put, {} acknowledged, {} failed; waiting for the fleet to process them",
        thousands(put),
        thousands(acked.len() as u64),
        thousands(failed)
    );

    let deadline = Instant::now() + Duration::from_secs(120) + args.failover() * 3;
    loop {
        let missing = {
            let ledger = lock(&ledger);
            acked
                .iter()
                .filter(|d| !ledger.processed.contains_key(*d))
                .count()
        };
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress(started, acked.len() as u64, &ledger);
            last_progress = Instant::now();
        }
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, running) in workers {
        running.shutdown().await?;
    }

    let ledger = lock(&ledger);
    let missing = acked
        .iter()
        .filter(|d| !ledger.processed.contains_key(*d))
        .count();
    let twice = ledger.processed.values().filter(|s| s.len() > 1).count() as u64;
    let extra: u64 = ledger.processed.values().map(|s| s.len() as u64 - 1).sum();
    println!("\nsummary ({:.1} s)", started.elapsed().as_secs_f64());
    println!(
        "  records acknowledged by the producer   {:>10}",
        thousands(acked.len() as u64)
    );
    println!(
        "  records processed (distinct)           {:>10}",
        thousands(ledger.processed.len() as u64)
    );
    println!(
        "  acknowledged but never processed       {:>10}",
        thousands(missing as u64)
    );
    println!(
        "  processed more than once               {:>10}  ({} extra deliveries)",
        thousands(twice),
        thousands(extra)
    );
    println!(
        "    at least once means: the records after the crashed worker's last checkpoints are \
         processed again by the workers that take its shards, and a producer that finds an \
         aggregate on the wrong side of the split writes its records again"
    );
    println!(
        "  failover after the crash               {:>9.1} s  (failover time {:?}; goal: at most 3 s more)",
        failover.as_secs_f64(),
        args.failover()
    );
    if let (Some(took), Some(parent)) = (child_start, &split_parent) {
        println!(
            "  children of {parent} started {:>10.2} s after it ended",
            took.as_secs_f64()
        );
    }
    let mut per_worker: Vec<(String, u64)> = ledger
        .workers
        .iter()
        .map(|(w, (n, _))| (w.clone(), *n))
        .collect();
    per_worker.sort();
    for (worker, count) in per_worker {
        println!("  processed by {worker:<26}{:>10}", thousands(count));
    }
    let report = Report {
        acknowledged: acked.len() as u64,
        missing: missing as u64,
    };
    if report.ok() {
        println!("\nOK: every acknowledged record was processed");
    } else {
        println!("\nFAILED: {missing} acknowledged records were not processed");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("demo").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_flags() {
        Args::command().debug_assert();
        let args = parse(&[]).unwrap();
        assert_eq!(
            (args.records, args.rate, args.shards, args.workers),
            (100_000, 10_000, 4, 3)
        );
        assert_eq!(args.failover(), Duration::from_secs(10));
        assert!(!args.aws && args.splits());
        let args = parse(&["--records", "1_000", "--shards", "50", "--workers", "16"]).unwrap();
        assert_eq!((args.records, args.shards, args.workers), (1_000, 50, 16));
        let args = parse(&["--aws", "--stream", "s", "--application", "a"]).unwrap();
        assert!(args.aws && !args.splits());
        assert!(
            parse(&["--aws", "--stream", "s", "--application", "a", "--split"])
                .unwrap()
                .splits()
        );
    }

    #[test]
    fn values_once_clamped_are_refused() {
        for (flag, value) in [
            ("--records", "0"),
            ("--rate", "19"),
            ("--shards", "0"),
            ("--shards", "51"),
            ("--workers", "1"),
            ("--workers", "17"),
            ("--failover-secs", "1"),
            ("--records", "ten"),
        ] {
            let error = parse(&[flag, value]).expect_err(flag);
            assert!(error.to_string().contains(flag), "{error}");
        }
        assert!(parse(&["--aws", "--stream", "s"]).is_err());
    }
}
