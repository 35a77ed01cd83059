//! `consumer-bench`: what `kinesis-consumer` does in the situations its users care about, next to
//! `kcl-rs` (a Rust port of the Java KCL 3, see `peers.md`) in the same scenarios on the same
//! stand-ins, with figures printed (it asserts nothing about timing).
//!
//! Run with `cargo run --release -p kinesis-integration-tests --bin consumer-bench` (after
//! `bash scripts/install-tools.sh`, for DynamoDB Local and kcl-rs). Flags: `--records N`
//! (aggregated backlog for the drain, default 1,000,000), `--plain-records N` (default 200,000),
//! `--idle-seconds S` (the lease-table cost measurement, default 60), `--failover-secs S`
//! (ours, default 10; kcl-rs keeps its own 10 s), `--only ours|kcl-rs`, `--scenario NAME`
//! (repeatable: `drain`, `failover`, `churn`, `balance`, `split`, `cost`, `latency`,
//! `fan-out-drain`; default all), `--kills N` (the churn scenario's kills, default 10).
//!
//! ```text
//!  this process ──spawns──▶ workers: ours (this binary re-executed with --worker) or kcl-rs
//!   (producer, timer,        (peers/consumer_peer.py); polling, or enhanced fan-out in scenarios
//!                            6 and 7; same line protocol, CPU from /proc
//!    counting proxy)             │ GetRecords...            │ lease table calls
//!                                ▼                          ▼
//!                        ferrokinesis (child process)   counting proxy ─▶ DynamoDB Local (java)
//! ```
//!
//! Scenarios, each on its own stream and application:
//! 1. **Cold start and drain**: a backlog of 100-byte records (aggregated by `kinesis-producer`,
//!    then plain) in 4 shards; one worker from nothing to the first record, and to the last;
//!    records/s and the worker's CPU per million records.
//! 2. **Failover**: 8 shards, 2 workers, records flowing; kill -9 of one; time until the other
//!    runs all its shards. Then **under churn** (`churn`): 8 shards, 3 workers, records flowing;
//!    every 15 s the oldest worker is killed (kill -9) and a new one started at once, 10 times
//!    (`--kills N`); for each kill, the time until every shard it ran runs on another worker;
//!    min, median and max.
//! 3. **Balance**: 8 shards held by one worker; a second joins; time until 4 and 4.
//! 4. **Child start**: a split while a worker reads; time from the parent's end to the children's
//!    start.
//! 5. **Lease table cost**: 2 idle workers on 8 shards; DynamoDB calls counted at the proxy, per
//!    lease-hour.
//! 6. **Latency**: 4 shards, one worker, a record put every 20 ms for 20 s; the time from the
//!    put's acknowledgement to the record's processing (p50, p99), with polling and with
//!    enhanced fan-out.
//! 7. **Drain over fan-out**: scenario 1's backlogs read with enhanced fan-out (kcl-rs in its
//!    `FANOUT` mode, its default).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use kinesis_integration_tests::bench::args::{
    ConsumerBenchArgs as Args, ConsumerBenchRole, Implementation as Impl, Scenario,
};
use kinesis_integration_tests::bench::start_stand_in;
use kinesis_integration_tests::consumer_worker::{self, WorkerProcess};
use kinesis_integration_tests::cpu_time::CpuTime;
use kinesis_integration_tests::ferrokinesis_process::{FerrokinesisProcess, serve};
use kinesis_integration_tests::fixtures::{create_stream, unique_name, wait_for_stream};
use kinesis_integration_tests::peers::{KCL_RS, kcl_rs_command};
use kinesis_integration_tests::tools::{machine, thousands};
use kinesis_integration_tests::{DynamoDbLocal, FaultController, FaultProxy};
use kinesis_producer::{Producer, UserRecord};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const WORKER_FLAG: &str = "--worker";

fn main() -> Result<(), BoxError> {
    let mut args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.role.take() {
        Some(ConsumerBenchRole::ServeFerrokinesis(stand_in)) => {
            Ok(runtime.block_on(serve(stand_in.options(), true))?)
        }
        Some(ConsumerBenchRole::Worker(worker)) => runtime.block_on(consumer_worker::run(*worker)),
        None => runtime.block_on(run(args)),
    }
}

/// The stand-ins every scenario uses.
struct Stage {
    kinesis: FerrokinesisProcess,
    dynamodb: DynamoDbLocal,
    client: aws_sdk_kinesis::Client,
    exe: PathBuf,
    failover: Duration,
}

/// Where one worker of a scenario points.
struct Target<'a> {
    dynamodb: &'a str,
    stream: &'a str,
    application: &'a str,
}

impl Stage {
    fn worker(
        &self,
        kind: Impl,
        to: &Target<'_>,
        id: &str,
        quiet: bool,
    ) -> Result<WorkerProcess, BoxError> {
        self.worker_reading(kind, to, id, quiet, false)
    }

    /// A worker reading with polling, or with enhanced fan-out when `fan_out`.
    fn worker_reading(
        &self,
        kind: Impl,
        to: &Target<'_>,
        id: &str,
        quiet: bool,
        fan_out: bool,
    ) -> Result<WorkerProcess, BoxError> {
        let mut command = match kind {
            Impl::Ours => {
                let mut command = Command::new(&self.exe);
                command.arg(WORKER_FLAG);
                if fan_out {
                    command.arg("--fan-out");
                }
                command
            }
            Impl::KclRs => {
                let mut command = kcl_rs_command()?;
                if !fan_out {
                    command.arg("--polling");
                }
                command
            }
        };
        command
            .args(["--kinesis", self.kinesis.endpoint()])
            .args(["--dynamodb", to.dynamodb])
            .args(["--stream", to.stream])
            .args(["--application", to.application])
            .args(["--worker-id", id])
            .args(["--failover-ms", &self.failover.as_millis().to_string()]);
        if quiet {
            command.arg("--quiet");
        }
        WorkerProcess::from_command(command, id)
    }
}

/// Figures per scenario line and implementation.
#[derive(Default)]
struct Results(BTreeMap<String, BTreeMap<Impl, String>>);

impl Results {
    fn put(&mut self, line: &str, kind: Impl, figure: String) {
        self.0
            .entry(line.to_owned())
            .or_default()
            .insert(kind, figure);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    println!(
        "consumer-bench: kinesis-consumer {} and {} (polling; enhanced fan-out in scenarios 6 and 7)",
        env!("CARGO_PKG_VERSION"),
        KCL_RS
    );
    println!("machine: {}", machine());
    if args.implementations().contains(&Impl::KclRs) {
        kcl_rs_command()?;
    }
    let exe = std::env::current_exe()?;
    let kinesis = start_stand_in(false).await?;
    let dynamodb = DynamoDbLocal::start().await?;
    let stage = Stage {
        client: kinesis.client(),
        kinesis,
        dynamodb,
        exe,
        failover: args.failover(),
    };
    println!(
        "stand-ins: ferrokinesis in a child process ({}), DynamoDB Local ({}); workers are child \
         processes; our failover time {:?}",
        stage.kinesis.endpoint(),
        stage.dynamodb.endpoint(),
        args.failover()
    );
    let mut results = Results::default();
    for kind in args.implementations() {
        println!("\n===== {} =====", kind.name());
        let outcome = scenarios(&stage, &args, kind, &mut results).await;
        if let Err(error) = outcome {
            println!("  {} stopped: {error}", kind.name());
        }
    }
    println!("\nsummary (goals are to read against, not assertions):");
    println!("  {:<58} {:>24} {:>24}", "", "ours", "kcl-rs");
    for (line, figures) in &results.0 {
        let cell = |kind| figures.get(&kind).map_or("-", String::as_str).to_owned();
        println!(
            "  {line:<58} {:>24} {:>24}",
            cell(Impl::Ours),
            cell(Impl::KclRs)
        );
    }
    println!(
        "  goals: cold start <= 2 s; failover <= {} s; children within 2 s; drain >= 2x kcl-rs; \
         lease table no costlier than the KCL's",
        (args.failover() + Duration::from_secs(3)).as_secs()
    );
    Ok(())
}

async fn scenarios(
    stage: &Stage,
    args: &Args,
    kind: Impl,
    results: &mut Results,
) -> Result<(), BoxError> {
    if args.runs(Scenario::Drain) {
        drain(stage, kind, true, args.records, false, results).await?;
        if args.plain_records > 0 {
            drain(stage, kind, false, args.plain_records, false, results).await?;
        }
    }
    if args.runs(Scenario::Failover) {
        failover(stage, kind, results).await?;
    }
    if args.runs(Scenario::Churn) {
        churn(stage, args.kills, kind, results).await?;
    }
    if args.runs(Scenario::Balance) {
        balance(stage, kind, results).await?;
    }
    if args.runs(Scenario::Split) {
        child_start(stage, kind, results).await?;
    }
    if args.runs(Scenario::Cost) {
        lease_cost(stage, args, kind, results).await?;
    }
    if args.runs(Scenario::Latency) {
        latency(stage, kind, false, results).await?;
        latency(stage, kind, true, results).await?;
    }
    if args.runs(Scenario::FanOutDrain) {
        drain(stage, kind, true, args.records, true, results).await?;
        if args.plain_records > 0 {
            drain(stage, kind, false, args.plain_records, true, results).await?;
        }
    }
    Ok(())
}

async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    count: u64,
    aggregated: bool,
) -> Result<(), BoxError> {
    let producer = Producer::builder(client.clone(), stream)
        .aggregation(aggregated)
        .rate_limit_percent(kinesis_producer::MAX_RATE_LIMIT_PERCENT)
        .build()
        .await?;
    let block = vec![b'x'; 100];
    let mut receipts = Vec::with_capacity(10_000);
    for i in 0..count {
        let mut data = block.clone();
        data[..8].copy_from_slice(&i.to_be_bytes());
        let record = UserRecord::new(format!("key-{}", i % 4096), Bytes::from(data))?;
        receipts.push(producer.put(record).await?);
        if receipts.len() == 10_000 {
            for receipt in receipts.drain(..) {
                receipt.await?;
            }
        }
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.shutdown().await;
    Ok(())
}

async fn until<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("not within {within:?}: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Puts a trickle of records (`per_second`) until the returned sender is dropped.
fn trickle(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    per_second: u64,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let client = client.clone();
    let stream = stream.to_owned();
    tokio::spawn(async move {
        let Ok(producer) = Producer::builder(client, stream.as_str()).build().await else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut i = 0u64;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {
                    for _ in 0..(per_second / 10).max(1) {
                        if let Ok(record) = UserRecord::new(format!("k{}", i % 512), format!("t{i}")) {
                            let _ = producer.put(record).await;
                        }
                        i += 1;
                    }
                }
            }
        }
        producer.shutdown().await;
    });
    stop
}

// --- 1. cold start and drain ----------------------------------------------------------------------

async fn drain(
    stage: &Stage,
    kind: Impl,
    aggregated: bool,
    records: u64,
    fan_out: bool,
    results: &mut Results,
) -> Result<(), BoxError> {
    let what = match (aggregated, fan_out) {
        (true, false) => "aggregated",
        (false, false) => "plain",
        (true, true) => "aggregated, fan-out",
        (false, true) => "plain, fan-out",
    };
    println!(
        "\n({}) cold start and drain: {} {what} 100-byte records in 4 shards",
        if fan_out { 7 } else { 1 },
        thousands(records as f64)
    );
    let stream = unique_name("bench-drain");
    create_stream(&stage.client, &stream, 4).await?;
    put(&stage.client, &stream, records, aggregated).await?;
    let target = Target {
        dynamodb: stage.dynamodb.endpoint(),
        stream: &stream,
        application: &unique_name("drain-app"),
    };
    let spawned = Instant::now();
    let worker = stage.worker_reading(kind, &target, "drainer", true, fan_out)?;
    let first = until(
        "the first record",
        kind.patience(Duration::from_secs(120)),
        || worker.count().map(|(at, _)| at),
    )
    .await;
    let first = match first {
        Ok(first) => first,
        Err(problem) => {
            println!("  {problem}");
            results.put(&format!("cold start ({what}), s"), kind, "none".to_owned());
            return Ok(());
        }
    };
    let last = until("the last record", Duration::from_secs(900), || {
        worker
            .count()
            .filter(|(_, n)| *n >= records)
            .map(|(at, _)| at)
    })
    .await;
    let cold = first.duration_since(spawned).as_secs_f64();
    println!(
        "  cold start (process start to first record, lease table creation included): {cold:.2} s"
    );
    results.put(
        &format!("cold start ({what}), s"),
        kind,
        format!("{cold:.2}"),
    );
    match last {
        Ok(last) => {
            let cpu = CpuTime::of_pid(worker.pid)?;
            // Counts are reported every 20 ms: a drain shorter than that is bounded, not measured.
            let span = last.duration_since(first).as_secs_f64().max(0.02);
            let rate = records as f64 / span;
            let bound = if span <= 0.02 { "at least " } else { "" };
            let per_million = cpu.total().as_secs_f64() * 1e6 / records as f64;
            // From the worker's start to the last record: what an operator waits for. The span
            // from the first record to the last alone flatters a reader that fetched the whole
            // backlog during a long start (kcl-rs buffers whole batches of aggregates).
            let whole = last.duration_since(spawned).as_secs_f64();
            let end_to_end = records as f64 / whole;
            println!(
                "  backlog drained {whole:.2} s after the worker started: {} records/s end to end",
                thousands(end_to_end)
            );
            results.put(
                &format!("drain ({what}), start to last record, records/s"),
                kind,
                thousands(end_to_end),
            );
            println!(
                "  drain: {bound}{} records/s ({span:.2} s from first to last); worker CPU {:.2} s \
                 (user {:.2}, sys {:.2}) = {per_million:.2} CPU-s per million records, start-up \
                 included",
                thousands(rate),
                cpu.total().as_secs_f64(),
                cpu.user.as_secs_f64(),
                cpu.system.as_secs_f64(),
            );
            results.put(
                &format!("drain ({what}), first to last record, records/s"),
                kind,
                format!(
                    "{}{}",
                    if bound.is_empty() { "" } else { ">= " },
                    thousands(rate)
                ),
            );
            results.put(
                &format!("worker CPU ({what}), CPU-s per million"),
                kind,
                format!("{per_million:.2}"),
            );
        }
        Err(problem) => {
            let done = worker.count().map_or(0, |(_, n)| n);
            println!(
                "  {problem} ({} of {} processed)",
                thousands(done as f64),
                thousands(records as f64)
            );
            results.put(
                &format!("drain ({what}), records/s"),
                kind,
                "did not finish".to_owned(),
            );
        }
    }
    Ok(())
}

// --- 2. failover ----------------------------------------------------------------------------------

async fn failover(stage: &Stage, kind: Impl, results: &mut Results) -> Result<(), BoxError> {
    println!("\n(2) failover: 8 shards, 2 workers, 200 records/s; kill -9 of one");
    let stream = unique_name("bench-failover");
    create_stream(&stage.client, &stream, 8).await?;
    let _trickle = trickle(&stage.client, &stream, 200);
    let target = Target {
        dynamodb: stage.dynamodb.endpoint(),
        stream: &stream,
        application: &unique_name("failover-app"),
    };
    let mut a = stage.worker(kind, &target, "worker-a", false)?;
    let b = stage.worker(kind, &target, "worker-b", false)?;
    let split = until("4 and 4", kind.patience(Duration::from_secs(120)), || {
        (a.held().len() == 4 && b.held().len() == 4).then_some(())
    })
    .await;
    if let Err(problem) = split {
        println!("  {problem} (a {}, b {})", a.held().len(), b.held().len());
        results.put(
            "failover after kill -9 (8 shards), s",
            kind,
            "not measured".to_owned(),
        );
        return Ok(());
    }
    let orphans: Vec<String> = a.held().into_keys().collect();
    a.child.start_kill()?;
    let killed = Instant::now();
    let resumed = until(
        "the survivor to run every orphan",
        kind.patience(stage.failover * 4),
        || {
            let held = b.held();
            let times: Vec<Instant> = orphans
                .iter()
                .filter_map(|s| held.get(s).copied())
                .filter(|t| *t > killed)
                .collect();
            (times.len() == orphans.len()).then(|| {
                (
                    times.iter().min().copied().unwrap_or(killed),
                    times.iter().max().copied().unwrap_or(killed),
                )
            })
        },
    )
    .await;
    match resumed {
        Ok((first, all)) => {
            let (first, all) = (
                first.duration_since(killed).as_secs_f64(),
                all.duration_since(killed).as_secs_f64(),
            );
            println!(
                "  {} shards: the first resumed after {first:.2} s, all after {all:.2} s",
                orphans.len()
            );
            results.put(
                "failover after kill -9 (8 shards), s",
                kind,
                format!("{all:.2}"),
            );
        }
        Err(problem) => {
            println!("  {problem}");
            results.put(
                "failover after kill -9 (8 shards), s",
                kind,
                "not within 180 s".to_owned(),
            );
        }
    }
    Ok(())
}

// --- 2b. failover under churn -----------------------------------------------------------------------

/// How often the churn scenario kills a worker.
const CHURN_PERIOD: Duration = Duration::from_secs(15);

async fn churn(
    stage: &Stage,
    kills: u64,
    kind: Impl,
    results: &mut Results,
) -> Result<(), BoxError> {
    const LINE: &str = "failover under churn (3 workers, 8 shards), min / median / max, s";
    println!(
        "\n(2b) failover under churn: 8 shards, 3 workers, 200 records/s; every {} s kill -9 of the \
         oldest worker and a new one at once, {kills} times",
        CHURN_PERIOD.as_secs()
    );
    let stream = unique_name("bench-churn");
    create_stream(&stage.client, &stream, 8).await?;
    let _trickle = trickle(&stage.client, &stream, 200);
    let application = unique_name("churn-app");
    let target = Target {
        dynamodb: stage.dynamodb.endpoint(),
        stream: &stream,
        application: &application,
    };
    let mut workers: Vec<(WorkerProcess, Option<Instant>)> = Vec::new();
    for i in 1..=3 {
        workers.push((stage.worker(kind, &target, &format!("w{i}"), false)?, None));
    }
    let running = |workers: &[(WorkerProcess, Option<Instant>)]| -> usize {
        workers
            .iter()
            .filter(|(_, killed)| killed.is_none())
            .map(|(w, _)| w.held().len())
            .sum()
    };
    if let Err(problem) = until(
        "all 8 shards running",
        kind.patience(Duration::from_secs(120)),
        || (running(&workers) == 8).then_some(()),
    )
    .await
    {
        println!("  {problem}");
        results.put(LINE, kind, "not measured".to_owned());
        return Ok(());
    }
    // Each kill: when, and the shards the victim ran.
    let mut victims: Vec<(Instant, Vec<String>)> = Vec::new();
    for next in 4..4 + kills {
        tokio::time::sleep(CHURN_PERIOD).await;
        let Some(oldest) = workers.iter_mut().find(|(_, killed)| killed.is_none()) else {
            break;
        };
        let orphans: Vec<String> = oldest.0.held().into_keys().collect();
        oldest.0.child.start_kill()?;
        let at = Instant::now();
        oldest.1 = Some(at);
        victims.push((at, orphans));
        workers.push((
            stage.worker(kind, &target, &format!("w{next}"), false)?,
            None,
        ));
    }
    // Time for the last kill's shards to move.
    let _ = until(
        "the last kill's shards to run elsewhere",
        kind.patience(CHURN_PERIOD * 2),
        || (running(&workers) == 8).then_some(()),
    )
    .await;
    // For each kill: the first start of each of its shards on another worker after the kill.
    let starts: Vec<(Instant, String)> = workers
        .iter()
        .flat_map(|(w, _)| w.lines())
        .filter_map(|(at, line)| {
            line.strip_prefix("START ")
                .and_then(|rest| rest.split(' ').next())
                .map(|shard| (at, shard.to_owned()))
        })
        .collect();
    let mut measured: Vec<f64> = Vec::new();
    let mut unmeasured = 0;
    for (killed, orphans) in &victims {
        let taken: Option<Vec<Instant>> = orphans
            .iter()
            .map(|shard| {
                starts
                    .iter()
                    .filter(|(at, s)| s == shard && at > killed)
                    .map(|(at, _)| *at)
                    .min()
            })
            .collect();
        match taken.and_then(|t| t.into_iter().max()) {
            Some(last) => measured.push(last.duration_since(*killed).as_secs_f64()),
            None if orphans.is_empty() => {}
            None => unmeasured += 1,
        }
    }
    measured.sort_by(f64::total_cmp);
    let figure = if measured.is_empty() {
        "not measured".to_owned()
    } else {
        format!(
            "{:.1} / {:.1} / {:.1}",
            measured[0],
            measured[measured.len() / 2],
            measured[measured.len() - 1]
        )
    };
    println!(
        "  {} kills: every orphaned shard running elsewhere after {} s (min / median / max over {} \
         kills{}); each: {:?}",
        victims.len(),
        figure,
        measured.len(),
        if unmeasured > 0 {
            format!("; {unmeasured} kills whose shards were not all running elsewhere by the end")
        } else {
            String::new()
        },
        measured
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
    );
    let figure = if unmeasured > 0 {
        format!("{figure} ({unmeasured} of {} not)", victims.len())
    } else {
        figure
    };
    results.put(LINE, kind, figure);
    Ok(())
}

// --- 3. balance -----------------------------------------------------------------------------------

async fn balance(stage: &Stage, kind: Impl, results: &mut Results) -> Result<(), BoxError> {
    println!("\n(3) balance: 8 shards held by one worker; a second joins");
    let stream = unique_name("bench-balance");
    create_stream(&stage.client, &stream, 8).await?;
    let _trickle = trickle(&stage.client, &stream, 200);
    let target = Target {
        dynamodb: stage.dynamodb.endpoint(),
        stream: &stream,
        application: &unique_name("balance-app"),
    };
    let a = stage.worker(kind, &target, "worker-a", false)?;
    if let Err(problem) = until(
        "8 shards on the first worker",
        kind.patience(Duration::from_secs(120)),
        || (a.held().len() == 8).then_some(()),
    )
    .await
    {
        println!("  {problem}");
        results.put(
            "even split after a worker joins (8 shards), s",
            kind,
            "not measured".to_owned(),
        );
        return Ok(());
    }
    let joined = Instant::now();
    let b = stage.worker(kind, &target, "worker-b", false)?;
    let even = until("4 and 4", kind.patience(Duration::from_secs(120)), || {
        (a.held().len() == 4 && b.held().len() == 4).then_some(())
    })
    .await;
    match even {
        Ok(()) => {
            let took = joined.elapsed().as_secs_f64();
            println!(
                "  even (4 and 4) {took:.2} s after the second worker was started (its start-up included)"
            );
            results.put(
                "even split after a worker joins (8 shards), s",
                kind,
                format!("{took:.2}"),
            );
        }
        Err(problem) => {
            println!("  {problem} (a {}, b {})", a.held().len(), b.held().len());
            results.put(
                "even split after a worker joins (8 shards), s",
                kind,
                "not within 180 s".to_owned(),
            );
        }
    }
    Ok(())
}

// --- 4. child start -------------------------------------------------------------------------------

async fn child_start(stage: &Stage, kind: Impl, results: &mut Results) -> Result<(), BoxError> {
    println!("\n(4) child start: a split while one worker reads 2 shards");
    let stream = unique_name("bench-split");
    create_stream(&stage.client, &stream, 2).await?;
    let _trickle = trickle(&stage.client, &stream, 200);
    let target = Target {
        dynamodb: stage.dynamodb.endpoint(),
        stream: &stream,
        application: &unique_name("split-app"),
    };
    let worker = stage.worker(kind, &target, "worker", false)?;
    if let Err(problem) = until("2 shards", kind.patience(Duration::from_secs(120)), || {
        (worker.held().len() == 2).then_some(())
    })
    .await
    {
        println!("  {problem}");
        results.put(
            "children start after the parent ends, s",
            kind,
            "not measured".to_owned(),
        );
        return Ok(());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listed = stage
        .client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await?;
    let parent = listed.shards().first().ok_or("no shard")?;
    let range = parent.hash_key_range().ok_or("no range")?;
    let start: u128 = range.starting_hash_key().parse()?;
    let end: u128 = range.ending_hash_key().parse()?;
    let parent_id = parent.shard_id().to_owned();
    stage
        .client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent_id)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await?;
    wait_for_stream(&stage.client, &stream).await?;
    let started_children = async {
        let ended = until("the parent's end", Duration::from_secs(60), || {
            worker.first(|l| l == format!("END {parent_id}"))
        })
        .await?;
        let last = until("both children", Duration::from_secs(60), || {
            let starts: Vec<Instant> = worker
                .lines()
                .into_iter()
                .filter(|(at, l)| *at >= ended && l.starts_with("START "))
                .map(|(at, _)| at)
                .collect();
            (starts.len() >= 2).then(|| starts.iter().max().copied().unwrap_or(ended))
        })
        .await?;
        Ok::<f64, String>(last.duration_since(ended).as_secs_f64())
    };
    match started_children.await {
        Ok(took) => {
            println!("  {parent_id} ended; both children started {took:.3} s later");
            results.put(
                "children start after the parent ends, s",
                kind,
                format!("{took:.3}"),
            );
        }
        Err(problem) => {
            println!("  {problem} (on ferrokinesis, which ends a shard without ChildShards)");
            results.put(
                "children start after the parent ends, s",
                kind,
                "never".to_owned(),
            );
        }
    }
    Ok(())
}

// --- 5. lease table cost --------------------------------------------------------------------------

async fn lease_cost(
    stage: &Stage,
    args: &Args,
    kind: Impl,
    results: &mut Results,
) -> Result<(), BoxError> {
    println!(
        "\n(5) lease table cost: 2 idle workers on 8 shards for {:?}",
        args.idle()
    );
    let stream = unique_name("bench-idle");
    create_stream(&stage.client, &stream, 8).await?;
    let counter = FaultController::new(1);
    let proxy = FaultProxy::start(stage.dynamodb.endpoint(), counter.clone()).await?;
    let application = unique_name("idle-app");
    let target = Target {
        dynamodb: proxy.endpoint(),
        stream: &stream,
        application: &application,
    };
    let a = stage.worker(kind, &target, "worker-a", false)?;
    let b = stage.worker(kind, &target, "worker-b", false)?;
    if let Err(problem) = until("4 and 4", kind.patience(Duration::from_secs(120)), || {
        (a.held().len() == 4 && b.held().len() == 4).then_some(())
    })
    .await
    {
        // Measure anyway: the cost of an idle fleet does not depend on how the leases fell.
        println!(
            "  {problem} (a {}, b {}); measuring anyway",
            a.held().len(),
            b.held().len()
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = counter.stats().calls;
    tokio::time::sleep(args.idle()).await;
    let after = counter.stats().calls;
    let calls: BTreeMap<String, u64> = after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let lease_hours = 8.0 * args.idle().as_secs_f64() / 3600.0;
    let count = |ops: &[&str]| {
        ops.iter()
            .map(|op| calls.get(*op).copied().unwrap_or(0))
            .sum::<u64>() as f64
    };
    // Items are well under 1 KB: one write unit per write. Reads: a scan of a table under 4 KB
    // costs 0.5 read units (eventually consistent), as do queries and gets.
    let writes = count(&["UpdateItem", "PutItem", "DeleteItem"]) / lease_hours;
    let table = stage
        .dynamodb
        .client()
        .scan()
        .table_name(&application)
        .send()
        .await?;
    let bytes: usize = table
        .items()
        .iter()
        .map(|item| {
            item.iter()
                .map(|(k, v)| k.len() + format!("{v:?}").len() / 2)
                .sum::<usize>()
        })
        .sum();
    let per_scan = 0.5 * (bytes as f64 / 4096.0).ceil().max(1.0);
    let reads = (count(&["Scan"]) * per_scan + count(&["Query", "GetItem"]) * 0.5) / lease_hours;
    // On-demand prices: a read unit costs a fifth of a write unit.
    let equivalent = writes + reads / 5.0;
    println!(
        "  per lease-hour: {writes:.0} write units, {reads:.0} read units ({equivalent:.0} write-unit \
         equivalents); calls in {:?}: {calls:?}",
        args.idle()
    );
    results.put(
        "lease table, idle: write units per lease-hour",
        kind,
        format!("{writes:.0}"),
    );
    results.put(
        "lease table, idle: read units per lease-hour",
        kind,
        format!("{reads:.0}"),
    );
    results.put(
        "lease table, idle: write-unit equivalents/lease-h",
        kind,
        format!("{equivalent:.0}"),
    );
    drop((a, b, proxy));
    Ok(())
}

// --- 6. latency ------------------------------------------------------------------------------------

/// When each record (by its data) was first reported processed.
fn processed_at(worker: &WorkerProcess) -> HashMap<String, Instant> {
    let mut seen = HashMap::new();
    for (at, line) in worker.lines() {
        if let Some(rest) = line.strip_prefix("REC ")
            && let Some(data) = rest.splitn(4, ' ').nth(3)
        {
            seen.entry(data.to_owned()).or_insert(at);
        }
    }
    seen
}

async fn latency(
    stage: &Stage,
    kind: Impl,
    fan_out: bool,
    results: &mut Results,
) -> Result<(), BoxError> {
    const RECORDS: usize = 1_000;
    let mode = if fan_out { "fan-out" } else { "polling" };
    let line = format!("latency put to processed ({mode}), p50 / p99 ms");
    println!(
        "\n(6) latency, {mode}: 4 shards, one worker, a record every 20 ms ({RECORDS}); from the \
         put's acknowledgement to the record's processing"
    );
    let stream = unique_name("bench-latency");
    create_stream(&stage.client, &stream, 4).await?;
    let target = Target {
        dynamodb: stage.dynamodb.endpoint(),
        stream: &stream,
        application: &unique_name("latency-app"),
    };
    let worker = stage.worker_reading(kind, &target, "latency", false, fan_out)?;
    if let Err(problem) = until(
        "4 shards started",
        kind.patience(Duration::from_secs(120)),
        || (worker.held().len() == 4).then_some(()),
    )
    .await
    {
        println!("  {problem}");
        results.put(&line, kind, "not measured".to_owned());
        return Ok(());
    }
    // Subscriptions (or the first reads) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let producer = Producer::builder(stage.client.clone(), stream.as_str())
        .linger(Duration::from_millis(1))
        .build()
        .await?;
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let mut waiting = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..RECORDS {
        tick.tick().await;
        let data = format!("lat-{i}");
        let receipt = producer
            .put(UserRecord::new(format!("k{i}"), Bytes::from(data.clone()))?)
            .await?;
        let acked = acked.clone();
        waiting.spawn(async move {
            if receipt.await.is_ok() {
                let now = Instant::now();
                acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(data, now);
            }
        });
    }
    waiting.join_all().await;
    producer.shutdown().await;
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|e| e.into_inner()));
    let processed = until("every record processed", Duration::from_secs(120), || {
        let seen = processed_at(&worker);
        acked.keys().all(|d| seen.contains_key(d)).then_some(seen)
    })
    .await;
    let processed = match processed {
        Ok(processed) => processed,
        Err(problem) => {
            println!("  {problem}");
            results.put(&line, kind, "did not finish".to_owned());
            return Ok(());
        }
    };
    let mut latencies: Vec<f64> = acked
        .iter()
        .filter_map(|(data, at)| {
            processed
                .get(data)
                .map(|p| p.saturating_duration_since(*at))
        })
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    println!(
        "  {} records: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
        latencies.len()
    );
    results.put(&line, kind, format!("{p50:.0} / {p99:.0}"));
    Ok(())
}
