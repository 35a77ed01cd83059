//! `consumer-bench`: what `kinesis-consumer` does in the situations its users care about, with
//! figures printed (it asserts nothing about timing).
//!
//! Run with `cargo run --release -p kinesis-integration-tests --bin consumer-bench` (after
//! `bash scripts/install-tools.sh`, for DynamoDB Local). Flags: `--records N` (backlog for the
//! drain, default 1,000,000 aggregated records), `--plain-records N` (default 200,000),
//! `--idle-seconds S` (the lease-table cost measurement, default 60), `--failover-secs S`
//! (default 10).
//!
//! ```text
//!  this process ──spawns──▶ workers (this binary re-executed with --worker: one
//!   (producer, timer,        kinesis-consumer worker each; CPU read from /proc)
//!    proxy counting              │ GetRecords...            │ lease table calls
//!    DynamoDB calls)             ▼                          ▼
//!                        ferrokinesis (child process)   counting proxy ─▶ DynamoDB Local (java)
//! ```
//!
//! Scenarios, each on its own stream and application:
//! 1. **Cold start and drain**: a backlog of 100-byte records (aggregated by `kinesis-producer`,
//!    then plain) in 4 shards; one worker from nothing (table creation included) to the first
//!    record, and to the last; records/s and the worker's CPU per million records.
//! 2. **Failover**: 8 shards, 2 workers, records flowing; kill -9 one; time until the other runs
//!    all its shards.
//! 3. **Balance**: 8 shards held by one worker; a second joins; time until 4 and 4.
//! 4. **Child start**: a split while a worker reads; time from the parent's end to the children's
//!    start.
//! 5. **Lease table cost**: 2 idle workers on 8 shards; calls counted at the proxy, per
//!    lease-hour, against the KCL's.
//!
//! `kcl-rs` (the peer in `peers.md`) is not run yet; its figures from `peers.md` are quoted for
//! reference.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use kinesis_integration_tests::consumer_worker::{self, WorkerProcess};
use kinesis_integration_tests::cpu_time::CpuTime;
use kinesis_integration_tests::ferrokinesis_process::{FerrokinesisProcess, serve};
use kinesis_integration_tests::fixtures::{create_stream, unique_name, wait_for_stream};
use kinesis_integration_tests::tools::{machine, thousands};
use kinesis_integration_tests::{DynamoDbLocal, FaultController, FaultProxy, FerrokinesisOptions};
use kinesis_producer::{Producer, UserRecord};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SERVE_FLAG: &str = "--serve-ferrokinesis";
const WORKER_FLAG: &str = "--worker";
const USAGE: &str = "usage: consumer-bench [--records N] [--plain-records N] [--idle-seconds S] \
                     [--failover-secs S]";

struct Args {
    records: u64,
    plain_records: u64,
    idle: Duration,
    failover: Duration,
}

fn main() -> Result<(), BoxError> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match argv.first().map(String::as_str) {
        Some(SERVE_FLAG) => {
            return Ok(runtime.block_on(serve(FerrokinesisOptions::new(), true))?);
        }
        Some(WORKER_FLAG) => {
            return runtime.block_on(consumer_worker::run(argv.into_iter().skip(1)));
        }
        _ => {}
    }
    let args = parse_args(&argv)?;
    runtime.block_on(run(args))
}

fn parse_args(argv: &[String]) -> Result<Args, BoxError> {
    let mut args = Args {
        records: 1_000_000,
        plain_records: 200_000,
        idle: Duration::from_secs(60),
        failover: Duration::from_secs(10),
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number: u64 = value
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{flag} {value:?} is not a number\n{USAGE}"))?;
        match flag.as_str() {
            "--records" => args.records = number.max(1),
            "--plain-records" => args.plain_records = number,
            "--idle-seconds" => args.idle = Duration::from_secs(number.max(10)),
            "--failover-secs" => args.failover = Duration::from_secs(number.max(2)),
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

/// The stand-ins every scenario uses.
struct Stage {
    kinesis: FerrokinesisProcess,
    dynamodb: DynamoDbLocal,
    client: aws_sdk_kinesis::Client,
    exe: PathBuf,
}

impl Stage {
    fn worker(
        &self,
        dynamodb_endpoint: &str,
        stream: &str,
        application: &str,
        id: &str,
        extra: &[&str],
        failover: Duration,
    ) -> Result<WorkerProcess, BoxError> {
        let mut args: Vec<String> = vec![WORKER_FLAG.to_owned()];
        for (flag, value) in [
            ("--kinesis", self.kinesis.endpoint()),
            ("--dynamodb", dynamodb_endpoint),
            ("--stream", stream),
            ("--application", application),
            ("--worker-id", id),
        ] {
            args.push(flag.to_owned());
            args.push(value.to_owned());
        }
        args.push("--failover-ms".to_owned());
        args.push(failover.as_millis().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        WorkerProcess::spawn(&self.exe, &args, id)
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    println!(
        "consumer-bench: kinesis-consumer {} (polling)",
        env!("CARGO_PKG_VERSION")
    );
    println!("machine: {}", machine());
    let exe = std::env::current_exe()?;
    let mut command = Command::new(&exe);
    command.arg(SERVE_FLAG);
    let kinesis = FerrokinesisProcess::spawn(command).await?;
    let dynamodb = DynamoDbLocal::start().await?;
    let stage = Stage {
        client: kinesis.client(),
        kinesis,
        dynamodb,
        exe,
    };
    println!(
        "stand-ins: ferrokinesis in a child process ({}), DynamoDB Local ({}); workers are child \
         processes (this binary with {WORKER_FLAG}), failover time {:?}",
        stage.kinesis.endpoint(),
        stage.dynamodb.endpoint(),
        args.failover
    );
    let mut summary = Vec::new();
    drain(&stage, &args, true, args.records, &mut summary).await?;
    if args.plain_records > 0 {
        drain(&stage, &args, false, args.plain_records, &mut summary).await?;
    }
    failover(&stage, &args, &mut summary).await?;
    balance(&stage, &args, &mut summary).await?;
    child_start(&stage, &args, &mut summary).await?;
    lease_cost(&stage, &args, &mut summary).await?;
    println!("\nsummary (goals are to read against, not assertions):");
    for line in summary {
        println!("  {line}");
    }
    println!(
        "  kcl-rs 0.1.4 (peers.md, measured earlier on ferrokinesis, not in this run): cold start \
         24-41 s; drain about 150-160k records/s; failover after kill -9 of 1 of 2 workers: 37 s \
         (polling); children about 17 s after the parent ended (kinesis-local)"
    );
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
) -> Result<T, BoxError> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {within:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// --- 1. cold start and drain ----------------------------------------------------------------------

async fn drain(
    stage: &Stage,
    args: &Args,
    aggregated: bool,
    records: u64,
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    let kind = if aggregated { "aggregated" } else { "plain" };
    println!(
        "\n(1) cold start and drain: {} {kind} 100-byte records in 4 shards",
        thousands(records as f64)
    );
    let stream = unique_name("bench-drain");
    create_stream(&stage.client, &stream, 4).await?;
    put(&stage.client, &stream, records, aggregated).await?;
    let spawned = Instant::now();
    let worker = stage.worker(
        stage.dynamodb.endpoint(),
        &stream,
        &unique_name("drain-app"),
        "drainer",
        &["--quiet"],
        args.failover,
    )?;
    let first = until("the first record", Duration::from_secs(120), || {
        worker.count().map(|(at, _)| at)
    })
    .await?;
    let last = until("the last record", Duration::from_secs(900), || {
        worker
            .count()
            .filter(|(_, n)| *n >= records)
            .map(|(at, _)| at)
    })
    .await?;
    let cpu = CpuTime::of_pid(worker.pid)?;
    let cold = first.duration_since(spawned);
    let rate = records as f64 / last.duration_since(first).as_secs_f64().max(0.001);
    let cpu_per_million = cpu.total().as_secs_f64() * 1e6 / records as f64;
    println!(
        "  cold start (process start, lease table created, shards listed, leases taken, first \
         GetRecords): {:.2} s",
        cold.as_secs_f64()
    );
    println!(
        "  drain: {} records/s ({:.2} s from first to last); worker CPU {:.2} s (user {:.2}, sys \
         {:.2}) = {:.2} CPU-s per million records, cold start included",
        thousands(rate),
        last.duration_since(first).as_secs_f64(),
        cpu.total().as_secs_f64(),
        cpu.user.as_secs_f64(),
        cpu.system.as_secs_f64(),
        cpu_per_million
    );
    summary.push(format!(
        "{kind}: cold start {:.2} s (goal <= 2 s); drain {} records/s, {:.2} CPU-s per million",
        cold.as_secs_f64(),
        thousands(rate),
        cpu_per_million
    ));
    drop(worker);
    Ok(())
}

// --- 2. failover ----------------------------------------------------------------------------------

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

async fn failover(stage: &Stage, args: &Args, summary: &mut Vec<String>) -> Result<(), BoxError> {
    println!("\n(2) failover: 8 shards, 2 workers, 200 records/s; kill -9 of one");
    let stream = unique_name("bench-failover");
    create_stream(&stage.client, &stream, 8).await?;
    let _trickle = trickle(&stage.client, &stream, 200);
    let app = unique_name("failover-app");
    let mut a = stage.worker(
        stage.dynamodb.endpoint(),
        &stream,
        &app,
        "worker-a",
        &[],
        args.failover,
    )?;
    let b = stage.worker(
        stage.dynamodb.endpoint(),
        &stream,
        &app,
        "worker-b",
        &[],
        args.failover,
    )?;
    until("4 and 4", Duration::from_secs(120), || {
        (a.held().len() == 4 && b.held().len() == 4).then_some(())
    })
    .await?;
    let orphans: Vec<String> = a.held().into_keys().collect();
    a.child.start_kill()?;
    let killed = Instant::now();
    let (first, all) = until(
        "the survivor to run every orphan",
        args.failover * 4,
        || {
            let held = b.held();
            let times: Vec<Instant> = orphans
                .iter()
                .filter_map(|s| held.get(s).copied())
                .filter(|t| *t > killed)
                .collect();
            (times.len() == orphans.len())
                .then(|| (times.iter().min().copied(), times.iter().max().copied()))
        },
    )
    .await?;
    let first = first.map_or(0.0, |t| t.duration_since(killed).as_secs_f64());
    let all = all.map_or(0.0, |t| t.duration_since(killed).as_secs_f64());
    println!(
        "  {} shards: the first resumed after {first:.2} s, all after {all:.2} s",
        orphans.len()
    );
    summary.push(format!(
        "failover (kill -9, 1 of 2 workers, 8 shards): all shards resumed after {all:.2} s (goal <= {} s)",
        (args.failover + Duration::from_secs(3)).as_secs()
    ));
    Ok(())
}

// --- 3. balance -----------------------------------------------------------------------------------

async fn balance(stage: &Stage, args: &Args, summary: &mut Vec<String>) -> Result<(), BoxError> {
    println!("\n(3) balance: 8 shards held by one worker; a second joins");
    let stream = unique_name("bench-balance");
    create_stream(&stage.client, &stream, 8).await?;
    let _trickle = trickle(&stage.client, &stream, 200);
    let app = unique_name("balance-app");
    let a = stage.worker(
        stage.dynamodb.endpoint(),
        &stream,
        &app,
        "worker-a",
        &[],
        args.failover,
    )?;
    until(
        "8 shards on the first worker",
        Duration::from_secs(120),
        || (a.held().len() == 8).then_some(()),
    )
    .await?;
    let joined = Instant::now();
    let b = stage.worker(
        stage.dynamodb.endpoint(),
        &stream,
        &app,
        "worker-b",
        &[],
        args.failover,
    )?;
    until("4 and 4", Duration::from_secs(120), || {
        (a.held().len() == 4 && b.held().len() == 4).then_some(())
    })
    .await?;
    let took = joined.elapsed().as_secs_f64();
    println!(
        "  even (4 and 4) {took:.2} s after the second worker was started (process start included)"
    );
    summary.push(format!(
        "balance when a worker joins (8 shards): even after {took:.2} s"
    ));
    Ok(())
}

// --- 4. child start -------------------------------------------------------------------------------

async fn child_start(
    stage: &Stage,
    args: &Args,
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    println!("\n(4) child start: a split while one worker reads 2 shards");
    let stream = unique_name("bench-split");
    create_stream(&stage.client, &stream, 2).await?;
    let _trickle = trickle(&stage.client, &stream, 200);
    let worker = stage.worker(
        stage.dynamodb.endpoint(),
        &stream,
        &unique_name("split-app"),
        "worker",
        &[],
        args.failover,
    )?;
    until("2 shards", Duration::from_secs(120), || {
        (worker.held().len() == 2).then_some(())
    })
    .await?;
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
    let ended = until("the parent's end", Duration::from_secs(60), || {
        worker.first(|l| l == format!("END {parent_id}"))
    })
    .await?;
    let children = until("both children", Duration::from_secs(60), || {
        let starts: Vec<Instant> = worker
            .lines()
            .into_iter()
            .filter(|(at, l)| *at >= ended && l.starts_with("START "))
            .map(|(at, _)| at)
            .collect();
        (starts.len() >= 2).then(|| starts.iter().max().copied())
    })
    .await?;
    let took = children.map_or(0.0, |t| t.duration_since(ended).as_secs_f64());
    println!("  {parent_id} ended; both children started {took:.3} s later");
    summary.push(format!(
        "child start after a split: {took:.3} s after the parent ended (goal <= 2 s)"
    ));
    Ok(())
}

// --- 5. lease table cost --------------------------------------------------------------------------

async fn lease_cost(stage: &Stage, args: &Args, summary: &mut Vec<String>) -> Result<(), BoxError> {
    println!(
        "\n(5) lease table cost: 2 idle workers on 8 shards for {:?}",
        args.idle
    );
    let stream = unique_name("bench-idle");
    create_stream(&stage.client, &stream, 8).await?;
    let counter = FaultController::new(1);
    let proxy = FaultProxy::start(stage.dynamodb.endpoint(), counter.clone()).await?;
    let app = unique_name("idle-app");
    let a = stage.worker(
        proxy.endpoint(),
        &stream,
        &app,
        "worker-a",
        &[],
        args.failover,
    )?;
    let b = stage.worker(
        proxy.endpoint(),
        &stream,
        &app,
        "worker-b",
        &[],
        args.failover,
    )?;
    until("4 and 4", Duration::from_secs(120), || {
        (a.held().len() == 4 && b.held().len() == 4).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = counter.stats().calls;
    tokio::time::sleep(args.idle).await;
    let after = counter.stats().calls;
    let calls =
        |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    let lease_hours = 8.0 * args.idle.as_secs_f64() / 3600.0;
    let worker_hours = 2.0 * args.idle.as_secs_f64() / 3600.0;
    let writes = calls("UpdateItem") as f64 / lease_hours;
    let scans = calls("Scan") as f64 / worker_hours;
    // One scan of a table under 4 KB reads 0.5 read units (eventually consistent).
    let table = stage
        .dynamodb
        .client()
        .scan()
        .table_name(&app)
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
    let units_per_scan = 0.5 * (bytes as f64 / 4096.0).ceil().max(1.0);
    let reads = calls("Scan") as f64 * units_per_scan / lease_hours;
    println!(
        "  per lease-hour: {:.0} UpdateItem (write units; the KCL renews every 3.3 s: 1,088), \
         {:.0} read units from {:.0} scans per worker-hour of about {} bytes ({} units each); \
         other calls: {:?}",
        writes,
        reads,
        scans,
        bytes,
        units_per_scan,
        after
            .iter()
            .filter(|(op, _)| !["UpdateItem", "Scan"].contains(&op.as_str()))
            .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>()
    );
    // On-demand prices: a read unit costs a fifth of a write unit.
    let ours = writes + reads / 5.0;
    let kcl = 3600.0 / 3.308 + (3600.0 / 20.05) * 2.0 * units_per_scan / 8.0 / 5.0;
    println!(
        "  in write-unit equivalents per lease-hour: ours {ours:.0}, the KCL's {kcl:.0} (renewals every \
         3.308 s, a scan per worker every 20.05 s) -> ours / KCL = {:.2}",
        ours / kcl
    );
    summary.push(format!(
        "lease table, idle: {writes:.0} writes + {reads:.0} read units per lease-hour = {ours:.0} \
         write-unit equivalents (the KCL's: {kcl:.0}; goal: no more)"
    ));
    drop((a, b, proxy));
    Ok(())
}
