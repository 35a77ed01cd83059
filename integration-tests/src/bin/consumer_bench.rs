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
//! `fan-out-drain`, `scale`; default all but `scale`), `--kills N` (the churn scenario's kills,
//! default 10); for `scale`: `--scale-workers 2,10,50`, `--scale-leases 8,100,1000`,
//! `--scale-idle-seconds 60`, `--scale-kcl-rs-workers 2,3,4`, `--scale-kcl-rs-leases 100`.
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
//! 8. **Scale** (only when named, tens of minutes): for each W workers and L leases on L idle
//!    shards, W workers in a few processes (the victim alone in its own; the others in processes
//!    of up to ten, each worker with its own clients and lease-table view): from a cold start of
//!    all W to an even split; the lease table's consumed capacity per lease-hour as DynamoDB
//!    reports it (a proxy asks for `ReturnConsumedCapacity`), next to the KCL's arithmetic; the
//!    RSS and CPU an idle shard adds to its worker (the victim against a worker holding none);
//!    failover after kill -9 of the victim, and after SIGSTOP (then SIGCONT: the fleet settles).
//!    kcl-rs: the lease table's cost at L = 100 for W = 2, 3, 4. A table at the end, with the
//!    verdicts against issue 16's targets.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use kinesis_integration_tests::bench::args::StandInArgs;
use kinesis_integration_tests::bench::args::{
    ConsumerBenchArgs as Args, ConsumerBenchRole, Implementation as Impl, Scenario,
};
use kinesis_integration_tests::bench::scale::{
    self as fleet_scale, CurvePoint, IdleCurve, PerLeaseHour, ScaleRow, even_split, host_sizes,
    kcl_arithmetic, ours_arithmetic,
};
use kinesis_integration_tests::bench::start_stand_in_with;
use kinesis_integration_tests::consumer_worker::{self, WorkerProcess};
use kinesis_integration_tests::cpu_time::CpuTime;
use kinesis_integration_tests::ferrokinesis_process::{FerrokinesisProcess, serve};
use kinesis_integration_tests::fixtures::{create_stream, unique_name, wait_for_stream};
use kinesis_integration_tests::peers::{KCL_RS, kcl_rs_command};
use kinesis_integration_tests::resident_memory;
use kinesis_integration_tests::tools::{machine, thousands};
use kinesis_integration_tests::{CapacityProxy, DynamoDbLocal, FaultController, FaultProxy};
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

    /// A kcl-rs worker polling, with `idle_ms` between reads of an idle shard.
    fn kcl_rs_polling(
        &self,
        to: &Target<'_>,
        id: &str,
        idle_ms: u64,
    ) -> Result<WorkerProcess, BoxError> {
        let mut command = self.worker_command(Impl::KclRs, to, id, true, false)?;
        command.args(["--idle-ms", &idle_ms.to_string()]);
        WorkerProcess::from_command(command, id)
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
        let command = self.worker_command(kind, to, id, quiet, fan_out)?;
        WorkerProcess::from_command(command, id)
    }

    /// The command line of [`Stage::worker_reading`]'s worker.
    fn worker_command(
        &self,
        kind: Impl,
        to: &Target<'_>,
        id: &str,
        quiet: bool,
        fan_out: bool,
    ) -> Result<Command, BoxError> {
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
        Ok(command)
    }
}

/// Figures per scenario line and implementation, and the scale scenario's table.
#[derive(Default)]
struct Results {
    lines: BTreeMap<String, BTreeMap<Impl, String>>,
    scale: Vec<ScaleRow>,
    /// The idle-cost curves: how the worker read, the points and the lines through them.
    curves: Vec<(CurveMode, Vec<CurvePoint>, IdleCurve)>,
}

impl Results {
    fn put(&mut self, line: &str, kind: Impl, figure: String) {
        self.lines
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
    // The scale scenario's streams hold up to --scale-leases shards each (one stream at a time).
    let scale_shards = if args.runs(Scenario::Scale) {
        let most = args.scale_leases.iter().copied().max().unwrap_or(0);
        let curve = args.scale_curve_points().last().copied().unwrap_or(0);
        most.max(args.scale_kcl_rs_leases).max(curve)
    } else {
        0
    };
    let kinesis = start_stand_in_with(&StandInArgs {
        enforce_limits: false,
        shard_limit: StandInArgs::DEFAULT_SHARD_LIMIT + u32::try_from(scale_shards)?,
    })
    .await?;
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
    for (line, figures) in &results.lines {
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
    if !results.scale.is_empty() {
        print_scale_table(&results.scale, args.failover());
    }
    for (mode, points, curve) in &results.curves {
        print_curve(points, curve, *mode);
    }
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
    if args.runs(Scenario::Scale) {
        match kind {
            Impl::Ours => {
                for (workers, leases) in args.scale_cells() {
                    let row = scale_cell(stage, args, workers, leases).await;
                    results.scale.push(row);
                }
                let points = args.scale_curve_points();
                if !points.is_empty() {
                    let mut modes = vec![CurveMode::Polling(None)];
                    if args.scale_curve_fan_out {
                        modes.push(CurveMode::FanOut);
                    }
                    if let Some(ms) = args.scale_curve_max_idle_ms {
                        modes.push(CurveMode::Polling(Some(Duration::from_millis(ms))));
                    }
                    for mode in modes {
                        if let Some((points, curve)) = idle_curve(stage, args, &points, mode).await
                        {
                            results.curves.push((mode, points, curve));
                        }
                    }
                }
            }
            Impl::KclRs => scale_kcl_rs(stage, args, results).await?,
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

// --- 8. scale -------------------------------------------------------------------------------------

/// How often the scale scenario reads the workers' reports (thousands of lines at 1,000 leases).
const SCALE_POLL: Duration = Duration::from_millis(100);

/// How long a cold start (or a rejoin) may take to reach an even split before the scenario goes on
/// without one.
const SCALE_EVEN_PATIENCE: Duration = Duration::from_secs(120);

/// After an even split, before the idle window: the first scans (every 0.5 s) and handoffs end.
const SCALE_SETTLE: Duration = Duration::from_secs(5);

/// How long kcl-rs may take to run every lease (and each newcomer one).
const KCL_RS_PATIENCE: Duration = Duration::from_secs(240);

/// A worker process of the scale scenario and the workers it runs.
struct Member {
    process: WorkerProcess,
    workers: Vec<String>,
}

impl Member {
    /// Leases held by its workers.
    fn leases(&self) -> usize {
        self.process
            .held_by_worker()
            .values()
            .map(|h| h.len())
            .sum()
    }
}

/// One cell's fleet: the victim alone in its process, the other workers in processes of up to ten.
struct ScaleFleet {
    victim: Member,
    hosts: Vec<Member>,
}

impl ScaleFleet {
    fn members(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.victim).chain(&self.hosts)
    }

    /// Leases per worker (zeros included), and how many distinct shards are running.
    fn holdings(&self) -> (Vec<usize>, usize) {
        let mut per_worker = Vec::new();
        let mut shards = std::collections::HashSet::new();
        for member in self.members() {
            let held = member.process.held_by_worker();
            for worker in &member.workers {
                let its = held.get(worker);
                per_worker.push(its.map_or(0, |h| h.len()));
                shards.extend(its.into_iter().flat_map(|h| h.keys().cloned()));
            }
        }
        (per_worker, shards.len())
    }

    fn even(&self, leases: usize) -> bool {
        let (per_worker, distinct) = self.holdings();
        distinct == leases && even_split(leases, &per_worker)
    }

    /// Every lease running on exactly one worker.
    fn held_once(&self, leases: usize) -> bool {
        let (per_worker, distinct) = self.holdings();
        distinct == leases && per_worker.iter().sum::<usize>() == leases
    }

    fn spread(&self) -> String {
        let (per_worker, distinct) = self.holdings();
        format!(
            "{distinct} shards running; {} to {} per worker",
            per_worker.iter().min().unwrap_or(&0),
            per_worker.iter().max().unwrap_or(&0)
        )
    }

    fn victim_holds(&self) -> std::collections::BTreeSet<String> {
        self.victim.process.held().into_keys().collect()
    }

    /// When every shard of `orphans` was first started by another process after `since`: the
    /// seconds from `since` to the last of those starts, or how many were not within `patience`.
    async fn taken_over(
        &self,
        orphans: &std::collections::BTreeSet<String>,
        since: Instant,
        patience: Duration,
    ) -> fleet_scale::Figure {
        if orphans.is_empty() {
            return Err("it held none".to_owned());
        }
        loop {
            let mut starts: HashMap<String, Instant> = HashMap::new();
            for host in &self.hosts {
                for (shard, at) in host.process.first_starts_after(since) {
                    let first = starts.entry(shard).or_insert(at);
                    *first = (*first).min(at);
                }
            }
            let taken: Vec<Instant> = orphans
                .iter()
                .filter_map(|s| starts.get(s).copied())
                .collect();
            if taken.len() == orphans.len() {
                let last = taken.into_iter().max().unwrap_or(since);
                return Ok(last.duration_since(since).as_secs_f64());
            }
            if since.elapsed() > patience {
                return Err(format!(
                    "{} of {} not in {} s",
                    orphans.len() - taken.len(),
                    orphans.len(),
                    patience.as_secs()
                ));
            }
            tokio::time::sleep(SCALE_POLL).await;
        }
    }
}

/// When `done` first held, polled every [`SCALE_POLL`] for at most `patience`.
async fn when(patience: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + patience;
    loop {
        if done() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(SCALE_POLL).await;
    }
}

impl Stage {
    /// Deletes `stream` and the lease `tables`, freeing the stand-ins for what runs next (errors
    /// ignored: the scenario is over either way).
    async fn remove(&self, stream: &str, tables: &[String]) {
        let _ = self
            .client
            .delete_stream()
            .stream_name(stream)
            .enforce_consumer_deletion(true)
            .send()
            .await;
        let direct = self.dynamodb.client();
        for table in tables {
            let _ = direct.delete_table().table_name(table).send().await;
        }
    }

    /// A process of ours running `consumers` workers (`id`, or `id-0` ..), with `extra` worker
    /// arguments.
    fn scale_member(
        &self,
        to: &Target<'_>,
        id: &str,
        consumers: usize,
        extra: &[&str],
    ) -> Result<Member, BoxError> {
        let mut command = self.worker_command(Impl::Ours, to, id, true, false)?;
        command.args(["--consumers", &consumers.to_string()]);
        command.args(extra);
        let workers = if consumers == 1 {
            vec![id.to_owned()]
        } else {
            (0..consumers).map(|i| format!("{id}-{i}")).collect()
        };
        Ok(Member {
            process: WorkerProcess::from_command(command, id)?,
            workers,
        })
    }
}

/// The read units of one full, eventually consistent scan of `table`, as DynamoDB reports them,
/// and its items (read directly, not through the cell's proxy).
async fn full_scan(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(f64, usize), BoxError> {
    let mut units = 0.0;
    let mut items = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .set_exclusive_start_key(start.take())
            .send()
            .await?;
        units += page
            .consumed_capacity()
            .and_then(|c| c.capacity_units())
            .unwrap_or(0.0);
        items += page.items().len();
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok((units, items)),
        }
    }
}

/// Our workers' renewal and scan intervals (the worker's defaults), for our arithmetic.
const OUR_RENEW: Duration = Duration::from_secs(4);
const OUR_SCAN: Duration = Duration::from_secs(2);

/// One cell of the scale scenario: where its fleets run, and the lease tables they made.
struct ScaleCell<'a> {
    stage: &'a Stage,
    proxy: CapacityProxy,
    stream: String,
    /// The workers besides the victim, per process.
    hosts: Vec<usize>,
    workers: usize,
    leases: usize,
    tables: Vec<String>,
    /// Names each start's workers apart.
    generation: usize,
}

impl ScaleCell<'_> {
    fn target<'t>(&'t self, application: &'t str) -> Target<'t> {
        Target {
            dynamodb: self.proxy.endpoint(),
            stream: &self.stream,
            application,
        }
    }

    /// A fleet on a new lease table (returned with it): every worker at once, or the victim
    /// first, limited to its share (`--max-leases`, ceil(L/W)), the others once it holds that:
    /// with fewer leases than workers, the way to be sure the victim holds one (unlimited, it
    /// would take them all, and the others could ask for every one of them).
    async fn start(&mut self, victim_first: bool) -> Result<(ScaleFleet, String), BoxError> {
        self.generation += 1;
        let application = unique_name("scale-app");
        self.tables.push(application.clone());
        let target = self.target(&application);
        let g = self.generation;
        let share = self.leases.div_ceil(self.workers).to_string();
        let limit = ["--max-leases", share.as_str()];
        let victim = self.stage.scale_member(
            &target,
            &format!("g{g}-victim"),
            1,
            if victim_first { &limit } else { &[] },
        )?;
        if victim_first
            && when(SCALE_EVEN_PATIENCE, || victim.leases() > 0)
                .await
                .is_none()
        {
            return Err("the victim, alone, took no lease".into());
        }
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(p, n)| {
                self.stage
                    .scale_member(&target, &format!("g{g}-h{p}"), *n, &[])
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((ScaleFleet { victim, hosts }, application))
    }

    /// `fleet` if its victim holds a lease, else a new fleet started victim first (which holds
    /// one once even).
    async fn with_victim_holding(
        &mut self,
        fleet: ScaleFleet,
        application: String,
    ) -> Result<(ScaleFleet, String), BoxError> {
        if !fleet.victim_holds().is_empty() {
            return Ok((fleet, application));
        }
        println!(
            "  the victim holds no lease ({} leases, {} workers): a new fleet on a new table, the \
             victim started first, holding at most {} (--max-leases)",
            self.leases,
            self.workers,
            self.leases.div_ceil(self.workers)
        );
        drop(fleet);
        let (fleet, application) = self.start(true).await?;
        let started = Instant::now();
        match when(SCALE_EVEN_PATIENCE, || fleet.even(self.leases)).await {
            Some(at) => println!(
                "  even {:.1} s after the others started",
                at.duration_since(started).as_secs_f64()
            ),
            None => println!(
                "  not even within {} s: {}",
                SCALE_EVEN_PATIENCE.as_secs(),
                fleet.spread()
            ),
        }
        Ok((fleet, application))
    }
}

/// One cell of the scale scenario (ours): its row, with whatever was measured before a failure.
async fn scale_cell(stage: &Stage, args: &Args, workers: usize, leases: usize) -> ScaleRow {
    let hosts = host_sizes(workers - 1);
    println!(
        "\n(8) scale: {workers} workers on {leases} idle shards (the victim alone in a process, the \
         other {} in {} process{} of {hosts:?})",
        workers - 1,
        hosts.len(),
        if hosts.len() == 1 { "" } else { "es" },
    );
    let mut row = ScaleRow {
        implementation: "ours",
        workers,
        leases,
        measured: None,
        kcl: None,
        cold_start: None,
        kill: None,
        stop: None,
        rss_per_shard_kib: None,
        cpu_per_shard: None,
        failover: stage.failover,
    };
    let stream = unique_name("bench-scale");
    let proxy = match CapacityProxy::start(stage.dynamodb.endpoint()).await {
        Ok(proxy) => proxy,
        Err(error) => {
            println!("  stopped: {error}");
            return row;
        }
    };
    let mut cell = ScaleCell {
        stage,
        proxy,
        stream,
        hosts,
        workers,
        leases,
        tables: Vec::new(),
        generation: 0,
    };
    if let Err(error) = scale_measure(&mut cell, args, &mut row).await {
        println!("  stopped: {error}");
    }
    // The processes are gone (killed on drop); free the stand-ins for the next cell.
    stage.remove(&cell.stream, &cell.tables).await;
    row
}

/// The CPU used so far by DynamoDB Local, ferrokinesis and this process (the proxy the lease-table
/// calls go through).
fn stand_ins_cpu(stage: &Stage) -> Result<[CpuTime; 3], BoxError> {
    Ok([
        CpuTime::of_pid(stage.dynamodb.pid())?,
        stage.kinesis.cpu_time()?,
        CpuTime::of_self()?,
    ])
}

async fn scale_measure(
    cell: &mut ScaleCell<'_>,
    args: &Args,
    row: &mut ScaleRow,
) -> Result<(), BoxError> {
    let stage = cell.stage;
    let (workers, leases) = (cell.workers, cell.leases);
    let created = Instant::now();
    create_stream(&stage.client, &cell.stream, i32::try_from(leases)?).await?;
    println!(
        "  stream of {leases} shards created in {:.1} s; lease-table calls go through a proxy that \
         asks DynamoDB Local for their consumed capacity",
        created.elapsed().as_secs_f64()
    );

    // Cold start: every worker at once.
    let before = cell.proxy.meter().snapshot();
    let stand_ins_before = stand_ins_cpu(stage)?;
    let started = Instant::now();
    let (mut fleet, application) = cell.start(false).await?;
    // The spread every 5 s on stderr, to see how a slow split got there.
    let mut next_trace = started + Duration::from_secs(5);
    let even = when(SCALE_EVEN_PATIENCE, || {
        if Instant::now() >= next_trace {
            next_trace += Duration::from_secs(5);
            eprintln!(
                "[scale] {workers} workers, {leases} leases, {:.0} s after the cold start: {}",
                started.elapsed().as_secs_f64(),
                fleet.spread()
            );
        }
        fleet.even(leases)
    })
    .await;
    let cold = cell.proxy.meter().snapshot().since(&before);
    // Where the machine's time went meanwhile: with tens of workers on two cores, DynamoDB
    // Local serving their scans of the whole table can be what the split waits for.
    let window = started.elapsed().as_secs_f64();
    let stand_ins_after = stand_ins_cpu(stage)?;
    let workers_cpu: f64 = fleet
        .members()
        .filter_map(|m| CpuTime::of_pid(m.process.pid).ok())
        .map(|cpu| cpu.total().as_secs_f64())
        .sum();
    let share = if leases < workers {
        "at most 1 each".to_owned()
    } else if leases % workers == 0 {
        format!("{} each", leases / workers)
    } else {
        format!("{} or {} each", leases / workers, leases.div_ceil(workers))
    };
    row.cold_start = Some(match even {
        Some(at) => {
            let took = at.duration_since(started).as_secs_f64();
            println!("  cold start to an even split ({share}): {took:.1} s");
            Ok(took)
        }
        None => {
            println!(
                "  no even split ({share}) within {} s of the cold start: {}",
                SCALE_EVEN_PATIENCE.as_secs(),
                fleet.spread()
            );
            Err(format!("none in {} s", SCALE_EVEN_PATIENCE.as_secs()))
        }
    });
    println!(
        "  DynamoDB meanwhile: {:.0} write units reported + {} conditional writes refused (charged, \
         not reported), {:.0} read units; {} PutItem, {} UpdateItem, {} Scan calls",
        cold.write_units(),
        thousands(cold.failed_conditional_writes() as f64),
        cold.read_units(),
        thousands(cold.calls("PutItem") as f64),
        thousands(cold.calls("UpdateItem") as f64),
        thousands(cold.calls("Scan") as f64),
    );
    let core = |i: usize| {
        100.0
            * (stand_ins_after[i] - stand_ins_before[i])
                .total()
                .as_secs_f64()
            / window
    };
    println!(
        "  meanwhile ({window:.1} s), % of a core: DynamoDB Local {:.0}, ferrokinesis {:.0}, this \
         process (the proxy) {:.0}, the workers {:.0} (their start-up included); {:.1} scans \
         served a second",
        core(0),
        core(1),
        core(2),
        100.0 * workers_cpu / window,
        cold.calls("Scan") as f64 / window,
    );

    idle_window(cell, args, &fleet, &application, row).await?;

    // kill -9 of the victim.
    let (next, application) = cell.with_victim_holding(fleet, application).await?;
    fleet = next;
    let orphans = fleet.victim_holds();
    let killed = Instant::now();
    fleet.victim.process.child.start_kill()?;
    let patience = stage.failover + Duration::from_secs(60);
    let kill = fleet.taken_over(&orphans, killed, patience).await;
    match &kill {
        Ok(took) => println!(
            "  kill -9 of the victim ({} leases): all running elsewhere after {took:.1} s",
            orphans.len()
        ),
        Err(why) => println!("  kill -9 of the victim ({} leases): {why}", orphans.len()),
    }
    row.kill = Some(kill);

    // A new victim joins; then SIGSTOP.
    let joined = Instant::now();
    fleet.victim = stage.scale_member(&cell.target(&application), "victim-2", 1, &[])?;
    match when(SCALE_EVEN_PATIENCE, || fleet.even(leases)).await {
        Some(at) => println!(
            "  a new victim joined: even again after {:.1} s",
            at.duration_since(joined).as_secs_f64()
        ),
        None => println!(
            "  a new victim joined: no even split within {} s ({})",
            SCALE_EVEN_PATIENCE.as_secs(),
            fleet.spread()
        ),
    }
    let (mut fleet, _) = cell.with_victim_holding(fleet, application).await?;
    let orphans = fleet.victim_holds();
    let stopped = Instant::now();
    fleet.victim.process.signal("-STOP")?;
    let stop = fleet.taken_over(&orphans, stopped, patience).await;
    match &stop {
        Ok(took) => println!(
            "  SIGSTOP of the victim ({} leases): all running elsewhere after {took:.1} s",
            orphans.len()
        ),
        Err(why) => println!("  SIGSTOP of the victim ({} leases): {why}", orphans.len()),
    }
    row.stop = Some(stop);
    fleet.victim.process.signal("-CONT")?;
    let resumed = Instant::now();
    let once = when(Duration::from_secs(60), || fleet.held_once(leases)).await;
    let alive = fleet.victim.process.child.try_wait()?.is_none();
    // How the victim's stale processors ended once it ran again (the process was stopped: no
    // line of its after `stopped` is from before).
    let lines = fleet.victim.process.lines();
    let mut endings: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, line) in lines.iter().filter(|(at, _)| *at >= stopped) {
        let mut words = line.split(' ');
        if let (Some(kind @ ("LOST" | "STOP" | "END")), Some(shard)) = (words.next(), words.next())
            && orphans.contains(shard)
        {
            *endings.entry(kind).or_default() += 1;
        }
    }
    println!(
        "  SIGCONT: the victim {}; its {} processors ended: {}; {}",
        if alive { "runs on" } else { "has exited" },
        orphans.len(),
        if endings.is_empty() {
            "none".to_owned()
        } else {
            endings
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        match once {
            Some(at) => format!(
                "every lease on exactly one worker {:.1} s after SIGCONT",
                at.duration_since(resumed).as_secs_f64()
            ),
            None => format!(
                "leases not each on one worker within 60 s ({})",
                fleet.spread()
            ),
        }
    );
    fleet.victim.process.child.start_kill()?;
    Ok(())
}

/// The idle window: DynamoDB's figures per lease-hour next to the KCL's arithmetic, and each
/// process's memory and CPU per lease.
async fn idle_window(
    cell: &ScaleCell<'_>,
    args: &Args,
    fleet: &ScaleFleet,
    application: &str,
    row: &mut ScaleRow,
) -> Result<(), BoxError> {
    let stage = cell.stage;
    let (workers, leases) = (cell.workers, cell.leases);
    // A worker process holding no lease, as the baseline of the victim's (one worker too): it
    // never asks for a handoff, so in a settled fleet it takes nothing, and it writes nothing,
    // so the others do not count it. It reads the same table as often, directly (its scans are
    // not the fleet's cost).
    let mut baseline = {
        let target = Target {
            dynamodb: stage.dynamodb.endpoint(),
            stream: &cell.stream,
            application,
        };
        let mut command = stage.worker_command(Impl::Ours, &target, "baseline", true, false)?;
        command.args(["--max-handoffs", "0"]);
        Member {
            process: WorkerProcess::from_command(command, "baseline")?,
            workers: vec!["baseline".to_owned()],
        }
    };
    tokio::time::sleep(SCALE_SETTLE).await;
    let idle = args.scale_idle();
    let cpu_of_members = || -> Result<Vec<CpuTime>, BoxError> {
        Ok(fleet
            .members()
            .chain(std::iter::once(&baseline))
            .map(|m| CpuTime::of_pid(m.process.pid))
            .collect::<Result<_, _>>()?)
    };
    let stand_ins = || stand_ins_cpu(stage);
    let cpu_before = cpu_of_members()?;
    let stand_ins_before = stand_ins()?;
    let before = cell.proxy.meter().snapshot();
    tokio::time::sleep(idle).await;
    let tally = cell.proxy.meter().snapshot().since(&before);
    let cpu_after = cpu_of_members()?;
    let stand_ins_after = stand_ins()?;

    let refused = tally.failed_conditional_writes();
    let measured = PerLeaseHour::measured(
        tally.write_units() + refused as f64,
        tally.read_units(),
        leases,
        idle,
    );
    let (scan_units, items) = full_scan(&stage.dynamodb.client(), application).await?;
    let kcl = kcl_arithmetic(workers, leases, scan_units);
    let expected = ours_arithmetic(workers, leases, scan_units, OUR_RENEW, OUR_SCAN);
    row.measured = Some(measured);
    row.kcl = Some(kcl);
    println!(
        "  idle {} s: per lease-hour {:.0} write + {:.0} read units (DynamoDB's figures{}; {}) = \
         {}/month for {leases} leases; calls: {}",
        idle.as_secs(),
        measured.write,
        measured.read,
        if refused > 0 {
            format!(", and {refused} refused conditional writes computed at 1 unit each")
        } else {
            String::new()
        },
        match tally.unmetered() {
            0 => "every call metered".to_owned(),
            n => format!("{n} calls unmetered"),
        },
        money(measured.monthly(leases)),
        tally
            .0
            .iter()
            .map(|(op, t)| format!("{op} {}", thousands(t.calls as f64)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    println!(
        "  a full scan of the table ({items} items) costs {scan_units} read units (DynamoDB's \
         figure); arithmetic at our defaults (a renewal per lease every 4 s, a scan per worker every \
         2 s): {:.0} write + {:.0} read; the KCL's: {:.0} write + {:.0} read = {}/month",
        expected.write,
        expected.read,
        kcl.write,
        kcl.read,
        money(kcl.monthly(leases)),
    );

    let seconds = idle.as_secs_f64();
    let mut usage = Vec::new();
    let mut fleet_cpu = 0.0;
    for ((member, before), after) in fleet
        .members()
        .chain(std::iter::once(&baseline))
        .zip(&cpu_before)
        .zip(&cpu_after)
    {
        let cpu = (*after - *before).total().as_secs_f64();
        let rss = resident_memory::of_pid(member.process.pid)? as f64;
        let held = member.leases();
        if member.process.id != "baseline" {
            fleet_cpu += cpu;
        }
        let per_lease = |v: f64| per_lease(v, held);
        println!(
            "  {} ({} worker{}): {held} leases; RSS {:.1} MiB ({:.1} before its workers started), \
             {} KiB per lease; CPU {cpu:.2} s, {} us/s per lease; {} sockets open",
            member.process.id,
            member.workers.len(),
            if member.workers.len() == 1 { "" } else { "s" },
            rss / 1_048_576.0,
            member.process.rss_at_start().unwrap_or(0) as f64 / 1_048_576.0,
            per_lease(rss / 1024.0),
            per_lease(cpu * 1e6 / seconds),
            sockets(member.process.pid),
        );
        usage.push((held, rss, cpu));
    }
    baseline.process.child.start_kill()?;
    // What an idle shard adds: the victim (one worker) against the baseline (one worker, none).
    if let (Some(&(held, rss, cpu)), Some(&(zero, base_rss, base_cpu))) =
        (usage.first(), usage.last())
    {
        if held > 0 && zero == 0 {
            let rss_per = (rss - base_rss) / 1024.0 / held as f64;
            let cpu_per = (cpu - base_cpu) * 1e6 / seconds / held as f64;
            println!(
                "  an idle shard adds {rss_per:.1} KiB of RSS and {cpu_per:.0} us of CPU per second \
                 to its worker (the victim's {held} leases against the baseline's none)"
            );
            row.rss_per_shard_kib = Some(rss_per);
            row.cpu_per_shard = Some(cpu_per);
        } else {
            println!(
                "  no figure per idle shard: the victim holds {held} leases, the baseline {zero}"
            );
        }
    }
    let core = |i: usize| {
        100.0
            * (stand_ins_after[i] - stand_ins_before[i])
                .total()
                .as_secs_f64()
            / seconds
    };
    println!(
        "  over the window, % of a core: DynamoDB Local {:.0}, ferrokinesis {:.0}, this process \
         (the proxy) {:.0}, the workers {:.0}{}",
        core(0),
        core(1),
        core(2),
        100.0 * fleet_cpu / seconds,
        if fleet.even(leases) {
            String::new()
        } else {
            format!(" (not evenly split at the end: {})", fleet.spread())
        },
    );
    Ok(())
}

/// What one more idle shard costs a worker, apart from the worker's own costs: one worker alone
/// on `points` idle shards in turn (a fresh process, stream and lease table each), its memory and
/// CPU over an idle window, and a line through the points (the slope per shard, the intercept the
/// worker's own: runtime, clients, its scans of the table). A figure per shard from one process
/// (the cells') divides the worker's own costs among its shards, and with few shards they are
/// most of it. `None` if fewer than two points were measured.
async fn idle_curve(
    stage: &Stage,
    args: &Args,
    points: &[usize],
    mode: CurveMode,
) -> Option<(Vec<CurvePoint>, IdleCurve)> {
    println!(
        "\n(8) scale, idle-cost curve, {mode}: one worker alone on {points:?} idle shards in turn \
         (a fresh process, stream and table each; {} s idle after an even start and {} s to \
         settle)",
        args.scale_idle().as_secs(),
        CURVE_SETTLE.as_secs()
    );
    let mut measured = Vec::new();
    for &leases in points {
        let stream = unique_name("bench-curve");
        let application = unique_name("curve-app");
        match curve_point(stage, args, &stream, &application, leases, mode).await {
            Ok(point) => measured.push(point),
            Err(error) => println!("  {leases} shards: stopped: {error}"),
        }
        stage.remove(&stream, &[application]).await;
    }
    let curve = IdleCurve::fit(&measured)?;
    print_curve(&measured, &curve, mode);
    Some((measured, curve))
}

/// How the idle-cost curve's worker reads.
#[derive(Clone, Copy, Debug)]
enum CurveMode {
    /// Polling, with the consumer's `max_idle` or this one.
    Polling(Option<Duration>),
    /// Enhanced fan-out.
    FanOut,
}

impl std::fmt::Display for CurveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CurveMode::Polling(None) => write!(f, "polling"),
            CurveMode::Polling(Some(idle)) => write!(f, "polling with max_idle {idle:?}"),
            CurveMode::FanOut => write!(f, "enhanced fan-out"),
        }
    }
}

/// After a lone worker holds every lease, before its idle window: its first renewals spread out
/// (within two renewal intervals) and the cold start's garbage is freed.
const CURVE_SETTLE: Duration = Duration::from_secs(15);

async fn curve_point(
    stage: &Stage,
    args: &Args,
    stream: &str,
    application: &str,
    leases: usize,
    mode: CurveMode,
) -> Result<CurvePoint, BoxError> {
    create_stream(&stage.client, stream, i32::try_from(leases)?).await?;
    let target = Target {
        dynamodb: stage.dynamodb.endpoint(),
        stream,
        application,
    };
    let started = Instant::now();
    let idle_ms;
    let extra: Vec<&str> = match mode {
        CurveMode::Polling(None) => Vec::new(),
        CurveMode::Polling(Some(idle)) => {
            idle_ms = idle.as_millis().to_string();
            vec!["--max-idle-ms", &idle_ms]
        }
        CurveMode::FanOut => vec!["--fan-out"],
    };
    let mut member = stage.scale_member(&target, &format!("alone-{leases}"), 1, &extra)?;
    let Some(at) = when(SCALE_EVEN_PATIENCE, || member.leases() == leases).await else {
        member.process.child.start_kill()?;
        return Err(format!(
            "it held {} of {leases} after {} s",
            member.leases(),
            SCALE_EVEN_PATIENCE.as_secs()
        )
        .into());
    };
    let took = at.duration_since(started).as_secs_f64();
    tokio::time::sleep(CURVE_SETTLE).await;
    let pid = member.process.pid;
    let idle = args.scale_idle();
    let before = CpuTime::of_pid(pid)?;
    tokio::time::sleep(idle).await;
    let cpu = (CpuTime::of_pid(pid)? - before).total().as_secs_f64() * 1e6 / idle.as_secs_f64();
    let rss_kib = resident_memory::of_pid(pid)? as f64 / 1024.0;
    let held = member.leases();
    let open = sockets(pid);
    member.process.child.start_kill()?;
    println!(
        "  {leases} shards: all held {took:.1} s after the start; over {} s idle: RSS {:.1} MiB, \
         CPU {cpu:.0} us/s ({:.2} % of a core); {held} leases at the end; {open} sockets open",
        idle.as_secs(),
        rss_kib / 1024.0,
        cpu / 1e4,
    );
    if held != leases {
        return Err(format!("it held {held} of {leases} at the end of the window").into());
    }
    Ok(CurvePoint {
        leases,
        rss_kib,
        cpu,
    })
}

fn print_curve(points: &[CurvePoint], curve: &IdleCurve, mode: CurveMode) {
    println!(
        "  idle-cost curve, {}, through {} points ({}): one more idle shard adds {:.1} KiB of RSS and \
         {:.0} us of CPU per second to its worker; the worker's own: {:.1} MiB and {:.0} us/s; \
         limits {} KiB and {} us/s per shard: {}",
        mode,
        points.len(),
        points
            .iter()
            .map(|p| p.leases.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        curve.rss_per_shard_kib,
        curve.cpu_per_shard,
        curve.rss_base_kib / 1024.0,
        curve.cpu_base,
        fleet_scale::IDLE_SHARD_RSS_LIMIT_KIB,
        fleet_scale::IDLE_SHARD_CPU_LIMIT_MICROS_PER_SECOND,
        curve.verdict(),
    );
}

/// kcl-rs in the scale scenario: its lease-table cost at `--scale-kcl-rs-leases` idle shards for
/// each fleet size of `--scale-kcl-rs-workers`, grown one worker at a time on one application
/// (its workers take a minute or more to start).
async fn scale_kcl_rs(stage: &Stage, args: &Args, results: &mut Results) -> Result<(), BoxError> {
    let leases = args.scale_kcl_rs_leases;
    let mut sizes = args.scale_kcl_rs_workers.clone();
    sizes.sort_unstable();
    sizes.dedup();
    println!(
        "\n(8) scale, kcl-rs: {leases} idle shards; fleets of {sizes:?} workers, grown one at a time \
         on one application, polling with idle_time_between_reads_millis={} (ours: max_idle {} \
         ms); the lease table's cost, and each worker's CPU and RSS per lease",
        args.scale_kcl_rs_idle_ms,
        kinesis_consumer::DEFAULT_MAX_IDLE.as_millis()
    );
    let stream = unique_name("bench-scale-kcl");
    create_stream(&stage.client, &stream, i32::try_from(leases)?).await?;
    let proxy = CapacityProxy::start(stage.dynamodb.endpoint()).await?;
    let application = unique_name("scale-kcl-app");
    let target = Target {
        dynamodb: proxy.endpoint(),
        stream: &stream,
        application: &application,
    };
    let mut fleet: Vec<WorkerProcess> = Vec::new();
    let outcome = async {
        for &size in &sizes {
            let joined = Instant::now();
            let newcomers = fleet.len()..size;
            for i in newcomers.clone() {
                fleet.push(stage.kcl_rs_polling(
                    &target,
                    &format!("kcl-{i}"),
                    args.scale_kcl_rs_idle_ms,
                )?);
            }
            let ready = when(KCL_RS_PATIENCE, || {
                let mut shards = std::collections::HashSet::new();
                for worker in &fleet {
                    shards.extend(worker.held().into_keys());
                }
                shards.len() == leases && newcomers.clone().all(|i| !fleet[i].held().is_empty())
            })
            .await;
            let counts: Vec<usize> = fleet.iter().map(|w| w.held().len()).collect();
            match ready {
                Some(at) => println!(
                    "  {size} workers: every lease running and each newcomer holding one {:.1} s \
                     after they started ({counts:?})",
                    at.duration_since(joined).as_secs_f64()
                ),
                None => println!(
                    "  {size} workers: not every lease running with each newcomer holding one \
                     within {} s ({counts:?}); measuring anyway",
                    KCL_RS_PATIENCE.as_secs()
                ),
            }
            tokio::time::sleep(SCALE_SETTLE).await;
            let before = proxy.meter().snapshot();
            let cpu_before = fleet
                .iter()
                .map(|w| CpuTime::of_pid(w.pid))
                .collect::<Result<Vec<_>, _>>()?;
            tokio::time::sleep(args.scale_idle()).await;
            let tally = proxy.meter().snapshot().since(&before);
            // Each worker's process, as ours are measured in the cells: CPU and RSS per lease
            // it holds (its own costs divided among them).
            let seconds = args.scale_idle().as_secs_f64();
            for (worker, before) in fleet.iter().zip(&cpu_before) {
                let cpu = (CpuTime::of_pid(worker.pid)? - *before)
                    .total()
                    .as_secs_f64();
                let rss = resident_memory::of_pid(worker.pid)? as f64;
                let held = worker.held().len();
                let per_lease = |v: f64| per_lease(v, held);
                println!(
                    "  {} (kcl-rs): {held} leases; RSS {:.1} MiB, {} KiB per lease; CPU {cpu:.2} \
                     s, {} us/s per lease",
                    worker.id,
                    rss / 1_048_576.0,
                    per_lease(rss / 1024.0),
                    per_lease(cpu * 1e6 / seconds),
                );
            }
            let refused = tally.failed_conditional_writes();
            let measured = PerLeaseHour::measured(
                tally.write_units() + refused as f64,
                tally.read_units(),
                leases,
                args.scale_idle(),
            );
            let (scan_units, _) = full_scan(&stage.dynamodb.client(), &application).await?;
            let kcl = kcl_arithmetic(size, leases, scan_units);
            println!(
                "  {size} workers, idle {} s: per lease-hour {:.0} write + {:.0} read units \
                 (DynamoDB's figures, every table of the application{}) = {}/month; the KCL's \
                 arithmetic {:.0} + {:.0} = {}/month; calls: {}",
                args.scale_idle_seconds,
                measured.write,
                measured.read,
                if refused > 0 {
                    format!(", {refused} refused conditional writes at 1 unit each")
                } else {
                    String::new()
                },
                money(measured.monthly(leases)),
                kcl.write,
                kcl.read,
                money(kcl.monthly(leases)),
                tally
                    .0
                    .iter()
                    .map(|(op, t)| format!("{op} {}", thousands(t.calls as f64)))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            results.scale.push(ScaleRow {
                implementation: "kcl-rs",
                workers: size,
                leases,
                measured: Some(measured),
                kcl: Some(kcl),
                cold_start: None,
                kill: None,
                stop: None,
                rss_per_shard_kib: None,
                cpu_per_shard: None,
                failover: Duration::from_secs(10),
            });
        }
        Ok::<(), BoxError>(())
    }
    .await;
    drop(fleet);
    stage.remove(&stream, &[]).await;
    outcome
}

fn print_scale_table(rows: &[ScaleRow], failover: Duration) {
    println!(
        "\nscale (per lease-hour: DynamoDB's consumed capacity over the idle window; $/month: the \
         cell's leases at on-demand list prices, ${} per million write and ${} per million read \
         units, {} h a month):",
        fleet_scale::WRITE_PRICE_PER_MILLION,
        fleet_scale::READ_PRICE_PER_MILLION,
        fleet_scale::HOURS_PER_MONTH
    );
    print!("{}", fleet_scale::table(rows));
    println!("  the KCL's arithmetic: {}", fleet_scale::KCL_FORMULA);
    println!(
        "  targets: cost no more than the KCL's; failovers (kill -9, SIGSTOP) within the failover \
         time + 3 s = {} s; an even split within {} s of a cold start (set at W = 10, L = 1,000); \
         an idle shard adds at most {} KiB of RSS and {} us of CPU per second (0.1 % of a core) to \
         its worker (the victim's process against a worker process holding none)",
        (failover + Duration::from_secs(3)).as_secs(),
        fleet_scale::COLD_START_TARGET.as_secs(),
        fleet_scale::IDLE_SHARD_RSS_LIMIT_KIB,
        fleet_scale::IDLE_SHARD_CPU_LIMIT_MICROS_PER_SECOND,
    );
}

/// `value` divided among `held` leases, or "-" when none is held.
fn per_lease(value: f64, held: usize) -> String {
    if held == 0 {
        "-".to_owned()
    } else {
        format!("{:.0}", value / held as f64)
    }
}

/// Sockets process `pid` holds open (its connections), from `/proc/<pid>/fd`; 0 if unreadable.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| {
        fds.filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    })
}

fn money(dollars: f64) -> String {
    if dollars < 10.0 {
        format!("${dollars:.2}")
    } else {
        format!("${}", thousands(dollars))
    }
}
