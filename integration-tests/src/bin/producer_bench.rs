//! `producer-bench`: what `kinesis-producer` costs and how close it gets to the write limit, with
//! `aiokpl` (a pure-Python port of the KPL) side by side, in one run. It prints figures; it
//! asserts nothing about timing.
//!
//! Run with `cargo run --release -p kinesis-integration-tests --bin producer-bench` (after
//! `bash scripts/install-tools.sh`, which installs aiokpl). Flags: `--records N` (default
//! 1,000,000), `--aiokpl-records N` (default 200,000), `--keys N` (default 64), `--seconds S`
//! (default 30), `--only cpu|limits|moderate|shards`, `--per-second` (print the producer's
//! metrics second by second in part 2), `--unbalanced-keys` (`pk-0` .. `pk-{N-1}` as they fall),
//! `--rate-limit-percent P` (part 2 with this `rate_limit_percent` instead of the default),
//! `--moderate-seconds S` (each run of part 3, default 20), `--many-shards N` (part 4's large
//! stream, default 1,000), `--shards-records N` (each full-rate run of part 4, default
//! 1,000,000), `--idle-seconds S` (each idle measurement of part 4, default 5).
//!
//! Part (3), **moderate rate**: 2,500 records/s (25 every 10 ms) for `--moderate-seconds` on
//! streams of 4 and 16 shards (1,024 partition keys), each twice in the same run: with calls
//! filled across shards (the default) and without (`fill_calls(false)`, each aggregate waiting
//! for its own deadline). It prints entries per `PutRecords` call, calls per second (counted by
//! a proxy in front of the stand-in), the process's CPU per million records, and the time from
//! `put` returning to the receipt resolving (p50, p99), next to the linger time.
//!
//! Part (4), **many shards**: a stream of 4 shards, then one of `--many-shards` (the stand-in's
//! shard limit raised to fit), each with 16 balanced partition keys per shard (part 1's density)
//! and its own producer (limits off). For each it prints the start-up (`build` until it returns,
//! the shard map loaded, and the `ListShards` calls made, counted by an SDK interceptor), the RSS
//! `build` added and the RSS after `--idle-seconds` idle, the CPU used meanwhile, then for
//! `--shards-records` records at full rate with every receipt awaited: CPU-s per million, the mean
//! and peak RSS (sampled every 20 ms) and the rate. Both streams run in this one process, the
//! large one second (both producers are built and measured idle before either puts): its
//! full-rate RSS figures include what the allocator kept from the first.
//!
//! ```text
//!  (1) CPU cost                                   (2) throughput under limits
//!  this process ──PutRecords──▶ ferrokinesis       this process ──PutRecords──▶ ferrokinesis
//!  (ours; CPU from /proc/self/stat)  (child,      (ours, default settings,       (child,
//!  python3 producer_peer.py ──────▶  limits off)   puts for --seconds)            limits on)
//!  (aiokpl; CPU from getrusage)                    read back: every receipt in the stream?
//! ```
//!
//! The stand-in runs in a child process (this binary re-executed with `--serve-ferrokinesis`, the
//! same code as the `ferrokinesis-server` bin), so its CPU is not counted in ours. Records are
//! 100 bytes (their index in the first 8 bytes, see [`produce_record_data`]), generated inline by
//! the loop that puts them, in both implementations; generation alone is measured separately and
//! printed, never subtracted silently. They cycle through 64 partition keys chosen among `pk-0`,
//! `pk-1`, ... so that each shard gets 16 ([`balanced_keys`]): `pk-0` .. `pk-63` themselves put 25
//! of 64 keys on one shard, which caps any producer at about 64 % of the stream's write limit
//! (`--unbalanced-keys` shows it).

#![forbid(unsafe_code)]

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use clap::Parser;
use kinesis_aggregation::{HashKey, HashKeyRange};
use kinesis_integration_tests::bench::args::{
    ProducerBenchArgs as Args, ProducerBenchRole, ProducerPart, StandInArgs,
};
use kinesis_integration_tests::bench::read_back::{StreamCheck, check_stream, read_back_receipts};
use kinesis_integration_tests::bench::receipts::{THROTTLED, Tally, spawn_receipt_consumer};
use kinesis_integration_tests::bench::sampler::{Sample, Sampler, install_recorder};
use kinesis_integration_tests::bench::{start_stand_in, start_stand_in_with};
use kinesis_integration_tests::cpu_time::CpuTime;
use kinesis_integration_tests::ferrokinesis_process::{FerrokinesisProcess, serve};
use kinesis_integration_tests::fixtures::{create_stream, open_shards, unique_name};
use kinesis_integration_tests::peers::{
    Peer, ProduceReport, ProduceRequest, balanced_keys, bench_block, produce_keys,
    produce_record_data,
};
use kinesis_integration_tests::resident_memory;
use kinesis_integration_tests::sdk::REGION;
use kinesis_integration_tests::tools::{machine, program_version, thousands};
use kinesis_producer::{Producer, SHARD_BYTES_PER_SECOND, UserRecord, WireFormat};

type BoxError = Box<dyn Error + Send + Sync>;

const SHARDS: i32 = 4;
const DATA_LEN: usize = 100;
/// Receipts travel to the task awaiting them in chunks of this many.
const CHUNK: usize = 10_000;

/// Part 1's goal in CPU-s per million records (the intrinsic part, aggregate MD5, SigV4, JSON and one copy, is about 0.45).
const TARGET_CPU_PER_MILLION: f64 = 0.6;
const TARGET_RATIO: f64 = 20.0;
const TARGET_SHARE: f64 = 0.92;
/// Part 2: most entries throttled, as a share of the entries sent.
const TARGET_THROTTLED: f64 = 0.05;

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(ProducerBenchRole::ServeFerrokinesis(stand_in)) = &args.role {
        return Ok(runtime.block_on(serve(stand_in.options(), true))?);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    // Fail early, naming the install script, if aiokpl is missing.
    if args.runs(ProducerPart::Cpu) && args.aiokpl_records > 0 {
        Peer::Aiokpl.script_command("producer_peer.py")?;
    }
    println!(
        "producer-bench: kinesis-producer {} against the ferrokinesis 0.7 stand-in in a child \
         process; {DATA_LEN}-byte records over {} partition keys ({}); streams of {SHARDS} \
         shards",
        env!("CARGO_PKG_VERSION"),
        args.keys,
        if args.unbalanced_keys {
            format!("pk-0 .. pk-{}", args.keys - 1)
        } else {
            "as many on each shard as on the others".to_owned()
        }
    );
    println!("machine: {}", machine());
    println!(
        "peer: {} ({})",
        Peer::Aiokpl.name(),
        program_version("python3", "--version")
    );
    let block = bench_block();
    let mut summary = Vec::new();
    if args.runs(ProducerPart::Cpu) {
        cpu_cost(&args, &block, &mut summary).await?;
    }
    if args.runs(ProducerPart::Limits) {
        under_limits(&args, &block, &mut summary).await?;
    }
    if args.runs(ProducerPart::Moderate) {
        moderate_rate(&args, &block, &mut summary).await?;
    }
    if args.runs(ProducerPart::Shards) {
        many_shards(&args, &block, &mut summary).await?;
    }
    println!("\nsummary (targets are goals to read against, not assertions):");
    for line in summary {
        println!("  {line}");
    }
    Ok(())
}

// --- (1) CPU cost ---------------------------------------------------------------------------------

async fn cpu_cost(args: &Args, block: &[u8], summary: &mut Vec<String>) -> Result<(), BoxError> {
    println!("\n(1) CPU cost: stand-in limits off, every receipt awaited");
    let server = start_stand_in(false).await?;
    println!(
        "  stand-in: ferrokinesis, pid {}, {}",
        server.pid(),
        server.endpoint()
    );
    let client = server.client();
    let stream = unique_name("bench-cpu-ours");
    create_stream(&client, &stream, SHARDS).await?;
    let keys = &choose_keys(args, &client, &stream).await?;

    let generation = generate_only(args.records, keys, block);
    let ours = ours_cpu_run(
        &server,
        stream,
        keys,
        block,
        args.records,
        false,
        args.wire_format.wire_format(),
    )
    .await?;
    println!(
        "  ours: kinesis-producer with rate_limit_percent(MAX_RATE_LIMIT_PERCENT) (its limiter \
         out of the way: the stand-in enforces no limits), every other setting default (linger 100 ms, aggregates up to \
         51,200 bytes, 200,000 outstanding records); {:?} bodies (--wire-format); no metrics recorder installed",
        args.wire_format.wire_format()
    );
    print_ours_cpu(&ours, &generation);

    // The same on a producer in its steady state: the first run's one-time costs left out.
    let stream = unique_name("bench-cpu-warm");
    create_stream(&client, &stream, SHARDS).await?;
    let warm = ours_cpu_run(
        &server,
        stream,
        keys,
        block,
        args.records,
        true,
        args.wire_format.wire_format(),
    )
    .await?;
    println!("  ours, warm (the same producer settings, measured after as many records):");
    print_ours_cpu(&warm, &generation);

    // Ours again at aiokpl's record count, so the ratio compares runs of the same length
    // (start-up amortized over the same number of records).
    let same_n = if args.aiokpl_records > 0 && args.aiokpl_records != args.records {
        let stream = unique_name("bench-cpu-ours");
        create_stream(&client, &stream, SHARDS).await?;
        let run = ours_cpu_run(
            &server,
            stream,
            keys,
            block,
            args.aiokpl_records,
            false,
            args.wire_format.wire_format(),
        )
        .await?;
        let gen_same = generate_only(args.aiokpl_records, keys, block);
        println!(
            "  ours again with {} records (aiokpl's count):",
            thousands(run.n as f64)
        );
        print_ours_cpu(&run, &gen_same);
        Some((run, gen_same))
    } else {
        None
    };

    summary.push(ours.summary());
    summary.push(warm.summary());

    if args.aiokpl_records > 0 {
        let peer = aiokpl_cpu_run(&server, args, keys).await?;
        let peer_per_million = peer.produce.cpu() * 1e6 / peer.records as f64;
        let peer_gen_per_million = peer.generate.cpu() * 1e6 / peer.records as f64;
        let (ours_same, gen_same) = match &same_n {
            Some((run, generation)) => (run, generation),
            None => (&ours, &generation),
        };
        let ratio_same = peer_per_million / ours_same.per_million();
        let ratio_main = peer_per_million / ours.per_million();
        let ratio_net = (peer_per_million - peer_gen_per_million)
            / (ours_same.per_million() - gen_same.per_million());
        println!("  ratio aiokpl CPU / ours, per million records:");
        println!(
            "    {ratio_same:>8.1}x  both with {} records (same start-up amortization)   target >= {TARGET_RATIO}x: {}",
            thousands(peer.records as f64),
            verdict(ratio_same >= TARGET_RATIO),
        );
        if peer.records != ours.n {
            println!(
                "    {ratio_main:>8.1}x  ours with {} records, aiokpl with {} (its per-million figure scaled up {:.0}x)",
                thousands(ours.n as f64),
                thousands(peer.records as f64),
                1e6 / peer.records as f64
            );
        }
        println!(
            "    {ratio_net:>8.1}x  both with {} records, each side's input generation subtracted (measured separately, above)",
            thousands(peer.records as f64),
        );
        summary.push(format!(
            "aiokpl / ours CPU: {ratio_same:.1}x at {} records each{}   target >= {TARGET_RATIO}x: {}",
            thousands(peer.records as f64),
            if peer.records == ours.n {
                String::new()
            } else {
                format!(" ({ratio_main:.1}x against ours at {})", thousands(ours.n as f64))
            },
            verdict(ratio_same >= TARGET_RATIO)
        ));
    }

    let served = server.stop().await?;
    println!(
        "  the stand-in served {} PutRecords and {} ListShards calls in this part",
        thousands(served.of("PutRecords") as f64),
        thousands(served.of("ListShards") as f64)
    );
    Ok(())
}

struct Generation {
    n: u64,
    cpu: CpuTime,
    wall: Duration,
}

impl Generation {
    fn per_million(&self) -> f64 {
        self.cpu.total().as_secs_f64() * 1e6 / self.n as f64
    }
}

/// The inputs of the put loop alone (key clone and 100-byte data), without the producer: passes
/// over the `n` records until at least a third of a CPU-second is spent, as the CPU clock ticks
/// in hundredths of a second.
fn generate_only(n: u64, keys: &[String], block: &[u8]) -> Generation {
    let cpu0 = CpuTime::of_self().unwrap_or_default();
    let started = Instant::now();
    let mut passes = 0;
    loop {
        for i in 0..n {
            let key = keys[(i % keys.len() as u64) as usize].clone();
            let data = produce_record_data(i, DATA_LEN, block);
            std::hint::black_box((key, data));
        }
        passes += 1;
        let spent = CpuTime::of_self().unwrap_or_default() - cpu0;
        if spent.total() >= Duration::from_millis(333) || passes >= 1000 {
            return Generation {
                n: n * passes,
                cpu: spent,
                wall: started.elapsed(),
            };
        }
    }
}

struct OursCpuRun {
    /// Records measured.
    n: u64,
    /// Records put (a warm run puts as many again first), each delivered and read back.
    put: u64,
    /// Measured after as many records on the same producer.
    warm: bool,
    /// How its `PutRecords` bodies were encoded.
    format: WireFormat,
    cpu: CpuTime,
    wall: Duration,
    server_cpu: Duration,
    tally: Tally,
    stream: StreamCheck,
}

impl OursCpuRun {
    fn per_million(&self) -> f64 {
        self.cpu.total().as_secs_f64() * 1e6 / self.n as f64
    }

    /// Every record put was delivered and read back.
    fn complete(&self) -> bool {
        self.tally.delivered == self.put && self.stream.distinct == self.put
    }

    /// The summary's line.
    fn summary(&self) -> String {
        format!(
            "ours{}{}: {:.3} CPU-s per million records ({} records{}{})   target <= {TARGET_CPU_PER_MILLION}: {}",
            match self.format {
                WireFormat::Json => ", JSON bodies",
                _ => ", CBOR bodies",
            },
            if self.warm { ", warm" } else { "" },
            self.per_million(),
            thousands(self.n as f64),
            if self.warm { " after as many" } else { "" },
            if self.complete() {
                ", all delivered and read back"
            } else {
                ", NOT all delivered: not comparable"
            },
            verdict(self.per_million() <= TARGET_CPU_PER_MILLION)
        )
    }
}

/// Puts `n` records (keys in turn, `DATA_LEN` bytes of `block` each) as fast as `producer` takes
/// them, its receipts awaited by a task in chunks, then shuts it down: what the receipts said,
/// with the puts refused at once.
async fn put_all(
    producer: Producer,
    keys: &[String],
    n: u64,
    block: &[u8],
) -> Result<Tally, BoxError> {
    put_range(producer, keys, 0..n, block, true).await
}

/// Puts the records of indices `range` (see [`put_all`]); shuts the producer down after the last
/// put if `shutdown`, and returns once every receipt has resolved.
async fn put_range(
    producer: Producer,
    keys: &[String],
    range: std::ops::Range<u64>,
    block: &[u8],
    shutdown: bool,
) -> Result<Tally, BoxError> {
    let (receipts, consumer) = spawn_receipt_consumer(false);
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut refused = 0u64;
    for i in range {
        let key = keys[(i % keys.len() as u64) as usize].clone();
        let record = UserRecord::new(key, produce_record_data(i, DATA_LEN, block))?;
        match producer.put(record).await {
            Ok(receipt) => chunk.push((i, receipt, None)),
            Err(_) => refused += 1,
        }
        if chunk.len() == CHUNK {
            receipts.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))?;
        }
    }
    receipts.send(chunk)?;
    drop(receipts);
    if shutdown {
        producer.shutdown().await;
    }
    let mut tally = consumer.await?;
    tally.refused = refused;
    Ok(tally)
}

/// Ours on `n` records: the CPU from building the producer to its shutdown with every receipt
/// awaited; or, `warm`, on a producer that has already put `n` records (every receipt resolved,
/// not measured): the next `n` cost a producer in its steady state, without the first run's
/// one-time costs (building it, and page faults on memory touched for the first time up to its
/// peak, the records held up to the outstanding bound).
async fn ours_cpu_run(
    server: &FerrokinesisProcess,
    stream: String,
    keys: &[String],
    block: &[u8],
    n: u64,
    warm: bool,
    format: WireFormat,
) -> Result<OursCpuRun, BoxError> {
    let client = server.client();
    let earlier = if warm { n } else { 0 };
    if warm {
        eprintln!("[cpu] ours, warm: {n} records, then {n} more measured ...");
    } else {
        eprintln!("[cpu] ours: {n} records ...");
    }
    let mut from = (server.cpu_time()?, CpuTime::of_self()?, Instant::now());
    let producer = Producer::builder(client.clone(), stream.as_str())
        .rate_limit_percent(kinesis_producer::MAX_RATE_LIMIT_PERCENT)
        .wire_format(format)
        .build()
        .await?;
    let warm_up = if warm {
        let tally = put_range(producer.clone(), keys, 0..earlier, block, false).await?;
        from = (server.cpu_time()?, CpuTime::of_self()?, Instant::now());
        Some(tally)
    } else {
        None
    };
    let (server_cpu0, cpu0, started) = from;
    let mut tally = put_range(producer, keys, earlier..earlier + n, block, true).await?;
    let wall = started.elapsed();
    let cpu = CpuTime::of_self()? - cpu0;
    let server_cpu = (server.cpu_time()? - server_cpu0).total();
    if let Some(warm_up) = &warm_up {
        tally.add_counts(warm_up);
    }

    let stream = check_stream(&client, &stream, earlier + n, DATA_LEN).await?;
    Ok(OursCpuRun {
        n,
        put: earlier + n,
        warm,
        format,
        cpu,
        wall,
        server_cpu,
        tally,
        stream,
    })
}

fn print_ours_cpu(run: &OursCpuRun, generation: &Generation) {
    println!(
        "    {} records: CPU {:.3} s (user {:.3}, sys {:.3}; {} minor page faults) = {:.3} CPU-s per million   target <= {TARGET_CPU_PER_MILLION}: {}",
        thousands(run.n as f64),
        run.cpu.total().as_secs_f64(),
        run.cpu.user.as_secs_f64(),
        run.cpu.system.as_secs_f64(),
        thousands(run.cpu.minor_faults as f64),
        run.per_million(),
        verdict(run.per_million() <= TARGET_CPU_PER_MILLION)
    );
    if run.warm {
        println!(
            "      this process only, from the first put after {} records on the same producer \
             (every receipt resolved, not measured) to shutdown with every receipt awaited; \
             includes generating the records inline",
            thousands((run.put - run.n) as f64)
        );
    } else {
        println!(
            "      this process only, from building the producer to shutdown with every receipt \
             awaited; includes generating the records inline"
        );
    }
    println!(
        "    generating the inputs alone (key + 100-byte buffer; included above, not \
         subtracted): {:.3} CPU-s per million ({:.3} s wall for {} in separate passes, where \
         each buffer is freed at once: a lower bound of what the same allocations cost while \
         records are held)",
        generation.per_million(),
        generation.wall.as_secs_f64(),
        thousands(generation.n as f64)
    );
    println!(
        "    wall {:.2} s, {} records/s; the stand-in used {:.2} CPU-s meanwhile (its own \
         process, not counted)",
        run.wall.as_secs_f64(),
        thousands(run.n as f64 / run.wall.as_secs_f64()),
        run.server_cpu.as_secs_f64()
    );
    println!(
        "    receipts: {} delivered, {} failed{}, {} refused by put; {} attempts ({} throttled)",
        thousands(run.tally.delivered as f64),
        thousands(run.tally.failed_total() as f64),
        run.tally.failures_text(),
        run.tally.refused,
        thousands(run.tally.attempts as f64),
        run.tally.throttled_attempts
    );
    println!("    stream read back: {}", run.stream.describe());
    if !run.complete() {
        println!(
            "    WARNING: not every record was delivered: the CPU figure above is not comparable"
        );
    }
}

async fn aiokpl_cpu_run(
    server: &FerrokinesisProcess,
    args: &Args,
    keys: &[String],
) -> Result<ProduceReport, BoxError> {
    let client = server.client();
    let stream = unique_name("bench-cpu-aiokpl");
    create_stream(&client, &stream, SHARDS).await?;
    let n = args.aiokpl_records;
    eprintln!("[cpu] aiokpl: {n} records (about 150-200 µs of CPU each here) ...");
    let request = ProduceRequest {
        endpoint: server.endpoint().to_owned(),
        region: REGION.to_owned(),
        stream: stream.clone(),
        records: n,
        data_len: DATA_LEN,
        keys: keys.to_vec(),
        // The stand-in enforces no limits: lift aiokpl's limiter out of the way (its defaults
        // are the shard limits, 1000 records/s and 1 MiB/s).
        rate_limit_records_per_shard: 1e9,
        rate_limit_bytes_per_shard: 1e12,
        timeout_seconds: 600.0 + n as f64 / 1000.0,
    };
    let server_cpu0 = server.cpu_time()?;
    let report = tokio::task::spawn_blocking(move || Peer::Aiokpl.produce(&request)).await??;
    let server_cpu = (server.cpu_time()? - server_cpu0).total();
    let stream = check_stream(&client, &stream, n, DATA_LEN).await?;

    let per_million = report.produce.cpu() * 1e6 / report.records as f64;
    println!(
        "  aiokpl 0.2.0 ({}): rate limits raised to 1e9 records/s and 1e12 bytes/s per shard, \
         every other setting default (linger 100 ms, aggregates up to 51,200 bytes, 100,000 \
         outstanding records); settings as it reports them: {}",
        report.python, report.config
    );
    println!(
        "    {} records: CPU {:.2} s (user {:.2}, sys {:.2}) = {:.2} CPU-s per million{}",
        thousands(report.records as f64),
        report.produce.cpu(),
        report.produce.cpu_user,
        report.produce.cpu_system,
        per_million,
        if report.records == 1_000_000 {
            String::new()
        } else {
            format!(
                " (measured on {} records and scaled up: aiokpl is slow)",
                thousands(report.records as f64)
            )
        }
    );
    println!(
        "      its own process (resource.getrusage), from building the producer to its close \
         with every outcome awaited; includes generating the records inline; interpreter \
         start-up and imports excluded"
    );
    println!(
        "    generating the inputs alone (a separate pass; included above, not subtracted): \
         {:.3} CPU-s per million",
        report.generate.cpu() * 1e6 / report.records as f64
    );
    println!(
        "    wall {:.2} s, {} records/s; the stand-in used {:.2} CPU-s meanwhile (not counted)",
        report.produce.wall,
        thousands(report.records as f64 / report.produce.wall),
        server_cpu.as_secs_f64()
    );
    let failures: Vec<String> = report
        .failures
        .iter()
        .map(|(code, n)| format!("{code}: {n}"))
        .collect();
    println!(
        "    outcomes: {} succeeded, {} failed{}, {} unresolved; {} attempts",
        thousands(report.succeeded as f64),
        thousands(report.failed as f64),
        if failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", failures.join(", "))
        },
        report.unresolved,
        thousands(report.attempts as f64)
    );
    println!("    stream read back: {}", stream.describe());
    if report.succeeded != n || stream.distinct != n {
        return Err(format!(
            "aiokpl did not deliver every record ({} succeeded, {} distinct records in the \
             stream, of {n}): its CPU figure would not be comparable",
            report.succeeded, stream.distinct
        )
        .into());
    }
    Ok(report)
}

// --- (2) throughput under limits ------------------------------------------------------------------

async fn under_limits(
    args: &Args,
    block: &[u8],
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    println!(
        "\n(2) Throughput under limits: stand-in enforcing 1 MiB/s and 1000 records/s per shard \
         (fixed 1 s windows, data bytes), {SHARDS} shards: write limit {:.0} bytes/s",
        SHARDS as f64 * SHARD_BYTES_PER_SECOND
    );
    let server = start_stand_in(true).await?;
    let client = server.client();
    println!(
        "  stand-in: ferrokinesis, pid {}, {}",
        server.pid(),
        server.endpoint()
    );
    let stream = unique_name("bench-limits");
    create_stream(&client, &stream, SHARDS).await?;
    let keys = &choose_keys(args, &client, &stream).await?;
    let snapshotter = install_recorder()?;
    let _ = snapshotter.snapshot(); // nothing before this run
    eprintln!("[limits] ours: putting for {} s ...", args.seconds);

    let feed_for = Duration::from_secs_f64(args.seconds);
    let server_cpu0 = server.cpu_time()?;
    let cpu0 = CpuTime::of_self()?;
    let started = Instant::now();
    let sampler = Sampler::start(snapshotter, started);
    let mut builder = Producer::builder(client.clone(), stream.as_str())
        .wire_format(args.wire_format.wire_format());
    if let Some(percent) = args.rate_limit_percent {
        builder = builder.rate_limit_percent(percent);
    }
    let producer = builder.build().await?;
    let (receipts, consumer) = spawn_receipt_consumer(true);
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut refused = 0u64;
    let mut max_outstanding = (0usize, 0usize);
    let mut i = 0u64;
    while started.elapsed() < feed_for {
        let key = keys[(i % keys.len() as u64) as usize].clone();
        let record = UserRecord::new(key, produce_record_data(i, DATA_LEN, block))?;
        match producer.put(record).await {
            Ok(receipt) => chunk.push((i, receipt, Some(Instant::now()))),
            Err(_) => refused += 1,
        }
        i += 1;
        if chunk.len() == CHUNK {
            receipts.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))?;
            let now = producer.outstanding();
            max_outstanding.0 = max_outstanding.0.max(now.records);
            max_outstanding.1 = max_outstanding.1.max(now.bytes);
        }
    }
    let fed = i;
    let feed_wall = started.elapsed();
    receipts.send(chunk)?;
    drop(receipts);
    producer.shutdown().await;
    let mut tally = consumer.await?;
    tally.refused = refused;
    let last_ack = tally.finished.unwrap_or_else(Instant::now);
    let total_wall = last_ack.duration_since(started);
    let cpu = CpuTime::of_self()? - cpu0;
    let server_cpu = (server.cpu_time()? - server_cpu0).total();
    let (metrics, samples) = sampler.finish().await?;

    eprintln!("[limits] reading the stream back ...");
    let limit = SHARDS as f64 * SHARD_BYTES_PER_SECOND;
    let read = read_back_receipts(&client, &stream, &tally.acked, fed, DATA_LEN, limit).await?;
    let served = server.stop().await?;

    let payload = tally.delivered as f64 * DATA_LEN as f64;
    let share = payload / total_wall.as_secs_f64() / limit;
    match args.rate_limit_percent {
        None => println!(
            "  ours: kinesis-producer with default settings (rate_limit_percent 150, linger \
             100 ms, 200,000 outstanding records, 128 MiB outstanding bytes)"
        ),
        Some(percent) => println!(
            "  ours: kinesis-producer with rate_limit_percent({percent}), every other setting \
             default (linger 100 ms, 200,000 outstanding records, 128 MiB outstanding bytes)"
        ),
    }
    println!(
        "    put for {:.1} s ({} records admitted, {} refused; outstanding at most {} records, \
         {} bytes), then shutdown: last receipt at {:.1} s",
        feed_wall.as_secs_f64(),
        thousands(fed as f64),
        tally.refused,
        thousands(max_outstanding.0 as f64),
        thousands(max_outstanding.1 as f64),
        total_wall.as_secs_f64()
    );
    println!(
        "    user payload delivered: {} bytes/s = {:.1} % of the write limit (first put to last \
         receipt, {} records x {DATA_LEN} bytes)   target >= {:.0} %: {}",
        thousands(payload / total_wall.as_secs_f64()),
        share * 100.0,
        thousands(tally.delivered as f64),
        TARGET_SHARE * 100.0,
        verdict(share >= TARGET_SHARE)
    );
    if let Some(steady) = &read.steady {
        println!(
            "    steady state, from the stream's arrival timestamps: {:.1} % of the limit on \
             average over {} whole seconds (lowest {:.1} %, highest {:.1} %; first and last \
             second left out)",
            steady.mean * 100.0,
            steady.seconds,
            steady.min * 100.0,
            steady.max * 100.0
        );
        let series: Vec<String> = steady
            .series
            .iter()
            .map(|share| format!("{:.0}", share * 100.0))
            .collect();
        println!(
            "    user payload per arrival second, % of the limit: {}",
            series.join(" ")
        );
    }
    let kinesis_bytes = metrics.counter(kinesis_producer::metrics::KINESIS_RECORDS_DATA_PUT);
    let kinesis_records = metrics.counter(kinesis_producer::metrics::KINESIS_RECORDS_PUT);
    println!(
        "    Kinesis records written (aggregates, partition key + data): {} bytes/s = {:.1} % of \
         the limit; {} records, {:.1} user records each, {:.1} bytes per user record",
        thousands(kinesis_bytes as f64 / total_wall.as_secs_f64()),
        kinesis_bytes as f64 / total_wall.as_secs_f64() / limit * 100.0,
        thousands(kinesis_records as f64),
        tally.delivered as f64 / kinesis_records.max(1) as f64,
        kinesis_bytes as f64 / tally.delivered.max(1) as f64
    );
    if kinesis_bytes > 0 {
        println!(
            "    so at most {:.1} % of the limit can be user payload with these aggregates (the \
             rest is framing: magic, protobuf, MD5, key table)",
            payload / kinesis_bytes as f64 * 100.0
        );
    }
    let calls = metrics.counter(kinesis_producer::metrics::PUT_RECORDS_CALLS);
    println!(
        "    PutRecords calls: {} ({:.1}/s) by the producer's count, {} served by the stand-in",
        thousands(calls as f64),
        calls as f64 / total_wall.as_secs_f64(),
        thousands(served.of("PutRecords") as f64)
    );
    let throttled_entries = metrics.errors(THROTTLED);
    let other_errors: Vec<String> = metrics
        .errors_by_code
        .iter()
        .filter(|(code, _)| code.as_str() != THROTTLED)
        .map(|(code, n)| format!("{code}: {n}"))
        .collect();
    let entries_sent = kinesis_records + metrics.total_errors();
    let calls_throttled = metrics.counter(kinesis_producer::metrics::PUT_RECORDS_CALLS_THROTTLED);
    let throttled_share = throttled_entries as f64 / entries_sent.max(1) as f64;
    println!(
        "    throttled: {:.1} % of the entries sent ({} of {}), {:.1} % of the PutRecords calls \
         ({} of {} had a throttled entry)   target <= {:.0} % of entries: {}",
        throttled_share * 100.0,
        thousands(throttled_entries as f64),
        thousands(entries_sent as f64),
        calls_throttled as f64 / calls.max(1) as f64 * 100.0,
        thousands(calls_throttled as f64),
        thousands(calls as f64),
        TARGET_THROTTLED * 100.0,
        verdict(throttled_share <= TARGET_THROTTLED)
    );
    println!(
        "    throttled entries (ProvisionedThroughputExceeded): {} of {} entries sent; {} user \
         records were throttled at least once ({} throttled attempts); other errors: {}",
        thousands(throttled_entries as f64),
        thousands(entries_sent as f64),
        thousands(tally.records_throttled as f64),
        thousands(tally.throttled_attempts as f64),
        if other_errors.is_empty() {
            "none".to_owned()
        } else {
            other_errors.join(", ")
        }
    );
    let (p50, p99) = (tally.latency_quantile(0.50), tally.latency_quantile(0.99));
    let seconds = |d: Option<Duration>| {
        d.map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
    };
    println!(
        "    put to receipt (from put returning to the receipt resolving, every delivery): p50 \
         {} s, p99 {} s (fed faster than the limit: the wait is the backlog that \
         max_outstanding_records allows)",
        seconds(p50),
        seconds(p99)
    );
    println!(
        "    records acknowledged: {}; failed: {}{}",
        thousands(tally.delivered as f64),
        thousands(tally.failed_total() as f64),
        tally.failures_text()
    );
    println!(
        "    records lost (acknowledged, not in the stream at their sequence and subsequence \
         number): {} (must be 0); acknowledged but holding another record there: {}",
        read.lost, read.mismatched
    );
    println!("    stream read back: {}", read.check.describe());
    if args.per_second {
        print_samples(&samples);
    }
    println!(
        "    CPU of this process over the run: {:.2} s = {:.2} CPU-s per million delivered \
         (DebuggingRecorder installed); the stand-in's: {:.2} s",
        cpu.total().as_secs_f64(),
        cpu.total().as_secs_f64() * 1e6 / tally.delivered.max(1) as f64,
        server_cpu.as_secs_f64()
    );

    summary.push(format!(
        "ours under limits: {:.1} % of the write limit as user payload ({:.1} s)   target >= {:.0} %: {}",
        share * 100.0,
        total_wall.as_secs_f64(),
        TARGET_SHARE * 100.0,
        verdict(share >= TARGET_SHARE)
    ));
    summary.push(format!(
        "throttled under limits: {:.1} % of entries, {:.1} % of calls ({:.1} calls/s); put to \
         receipt p50 {} s, p99 {} s   target <= {:.0} % of entries: {}",
        throttled_share * 100.0,
        calls_throttled as f64 / calls.max(1) as f64 * 100.0,
        calls as f64 / total_wall.as_secs_f64(),
        seconds(p50),
        seconds(p99),
        TARGET_THROTTLED * 100.0,
        verdict(throttled_share <= TARGET_THROTTLED)
    ));
    summary.push(format!(
        "records lost under limits: {} of {} acknowledged (must be 0): {}",
        read.lost,
        thousands(tally.delivered as f64),
        verdict(read.lost == 0 && read.mismatched == 0)
    ));
    Ok(())
}

fn print_samples(samples: &[Sample]) {
    use kinesis_producer::metrics as m;
    let limit = SHARDS as f64 * SHARD_BYTES_PER_SECOND;
    println!(
        "    per second, from the producer's metrics (payload acknowledged as % of the limit; \
         entries throttled / sent; calls; each shard's rate factor as last reported that second; records \
         outstanding):"
    );
    for sample in samples {
        let t = &sample.totals;
        let written = t.counter(m::KINESIS_RECORDS_PUT);
        let throttled = t.errors(THROTTLED);
        let factors: Vec<String> = sample
            .rate_factors
            .values()
            .map(|f| format!("{f:.2}"))
            .collect();
        println!(
            "      {:>5.1} s  {:>5.1} %  {:>3} / {:>3}  {:>3} calls  factors [{}]  {}",
            sample.at.as_secs_f64(),
            t.counter(m::USER_RECORDS_PUT) as f64 * DATA_LEN as f64 / limit * 100.0,
            throttled,
            written + t.total_errors(),
            t.counter(m::PUT_RECORDS_CALLS),
            if factors.is_empty() {
                "-".to_owned()
            } else {
                factors.join(" ")
            },
            sample.pending.map_or_else(|| "-".to_owned(), thousands),
        );
    }
}

// --- helpers -----------------------------------------------------------------------------------------

/// The run's partition keys, and how they spread over the stream's shards (printed).
async fn choose_keys(
    args: &Args,
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<String>, BoxError> {
    // A new stream: every shard is open.
    let mut ranges = Vec::new();
    for (_, start, end) in open_shards(client, stream).await? {
        ranges.push(HashKeyRange::new(HashKey::new(start), HashKey::new(end))?);
    }
    let keys = if args.unbalanced_keys {
        produce_keys(args.keys)
    } else {
        balanced_keys(args.keys, &ranges)
    };
    let mut per_shard = vec![0usize; ranges.len()];
    for key in &keys {
        let hash = HashKey::from_partition_key(key);
        if let Some(shard) = ranges.iter().position(|r| r.contains(hash)) {
            per_shard[shard] += 1;
        }
    }
    let hottest = per_shard.iter().copied().max().unwrap_or(0) as f64 / keys.len() as f64;
    let spread: Vec<String> = per_shard.iter().map(usize::to_string).collect();
    println!(
        "  partition keys: {} ({} .. {}), per shard: {}; the busiest shard takes {:.1} % of the \
         records, so no producer can write more than {:.0} % of the stream's write limit",
        keys.len(),
        keys.first().map_or("", String::as_str),
        keys.last().map_or("", String::as_str),
        spread.join(" "),
        hottest * 100.0,
        (1.0 / (hottest * ranges.len() as f64)).min(1.0) * 100.0
    );
    Ok(keys)
}

// --- (3) moderate rate ----------------------------------------------------------------------------

/// Records per second in part 3.
const MODERATE_RATE: u64 = 2_500;

/// One run of part 3.
struct ModerateRun {
    records: u64,
    calls: u64,
    entries: usize,
    wall: Duration,
    cpu: Duration,
    p50: Duration,
    p99: Duration,
    failed: u64,
}

async fn moderate_rate(
    args: &Args,
    block: &[u8],
    summary: &mut Vec<String>,
) -> Result<(), BoxError> {
    let linger = Duration::from_millis(100);
    println!(
        "\n(3) Moderate rate: {MODERATE_RATE} records/s for {} s, limits off; each stream run \
         without and with calls filled across shards (linger {} ms)",
        args.moderate_seconds,
        linger.as_millis()
    );
    let server = start_stand_in(false).await?;
    let faults = kinesis_integration_tests::FaultController::new(3);
    let proxy =
        kinesis_integration_tests::FaultProxy::start(server.endpoint(), faults.clone()).await?;
    let client = kinesis_integration_tests::kinesis_client(
        proxy.endpoint(),
        &kinesis_integration_tests::ClientOptions::new(),
    );
    let keys: Vec<String> = (0..1024).map(|i| format!("k{i}")).collect();
    println!(
        "  {:>6} {:>7} {:>14} {:>8} {:>16} {:>10} {:>10}",
        "shards", "filled", "entries/call", "calls/s", "CPU s/million", "p50 ms", "p99 ms"
    );
    for shards in [4, 16] {
        let mut pair = Vec::new();
        for fill in [false, true] {
            let stream = unique_name("bench-moderate");
            create_stream(&server.client(), &stream, shards).await?;
            let producer = Producer::builder(client.clone(), stream.as_str())
                .linger(linger)
                .fill_calls(fill)
                .wire_format(args.wire_format.wire_format())
                .build()
                .await?;
            let calls0 = faults.calls("PutRecords");
            let run = moderate_run(&producer, &keys, block, args.moderate_seconds).await?;
            let calls = faults.calls("PutRecords") - calls0;
            producer.shutdown().await;
            let run = ModerateRun { calls, ..run };
            println!(
                "  {:>6} {:>7} {:>14.2} {:>8.1} {:>16.3} {:>10.1} {:>10.1}{}",
                shards,
                if fill { "yes" } else { "no" },
                run.entries as f64 / run.calls.max(1) as f64,
                run.calls as f64 / run.wall.as_secs_f64(),
                run.cpu.as_secs_f64() / run.records as f64 * 1e6,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
                if run.failed > 0 {
                    format!(" ({} failed)", run.failed)
                } else {
                    String::new()
                }
            );
            pair.push(run);
        }
        if let [before, after] = &pair[..] {
            let per_call = |r: &ModerateRun| r.entries as f64 / r.calls.max(1) as f64;
            let cpu = |r: &ModerateRun| r.cpu.as_secs_f64() / r.records as f64 * 1e6;
            summary.push(format!(
                "moderate rate, {shards} shards: {:.2} entries per call filled against {:.2} not \
                 (target at least 4 on 4 shards: {}), CPU {:.3} against {:.3} s per million, p99 \
                 {:.0} against {:.0} ms (linger {} ms)",
                per_call(after),
                per_call(before),
                if shards == 4 {
                    verdict(per_call(after) >= 4.0)
                } else {
                    "-"
                },
                cpu(after),
                cpu(before),
                after.p99.as_secs_f64() * 1e3,
                before.p99.as_secs_f64() * 1e3,
                linger.as_millis()
            ));
        }
    }
    Ok(())
}

/// Puts `MODERATE_RATE` records a second for `seconds`; every receipt is awaited by its own task,
/// which notes when it resolved.
async fn moderate_run(
    producer: &Producer,
    keys: &[String],
    block: &[u8],
    seconds: f64,
) -> Result<ModerateRun, BoxError> {
    let per_tick = MODERATE_RATE / 100;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut waiting = tokio::task::JoinSet::new();
    let cpu0 = CpuTime::of_self()?;
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        tick.tick().await;
        for _ in 0..per_tick {
            let key = keys[(i % keys.len() as u64) as usize].clone();
            let record = UserRecord::new(key, produce_record_data(i, DATA_LEN, block))?;
            let receipt = producer.put(record).await?;
            let put_at = Instant::now();
            waiting.spawn(async move { (receipt.await, put_at.elapsed()) });
            i += 1;
        }
    }
    let mut latencies = Vec::with_capacity(i as usize);
    let mut entries = std::collections::HashSet::new();
    let mut failed = 0u64;
    while let Some(done) = waiting.join_next().await {
        let (outcome, latency) = done?;
        match outcome {
            Ok(delivery) => {
                entries.insert((
                    delivery.shard_id().to_owned(),
                    delivery.sequence_number().to_owned(),
                ));
                latencies.push(latency);
            }
            Err(_) => failed += 1,
        }
    }
    let wall = started.elapsed();
    let cpu = CpuTime::of_self()? - cpu0;
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(ModerateRun {
        records: i,
        calls: 0,
        entries: entries.len(),
        wall,
        cpu: cpu.total(),
        p50: at(0.50),
        p99: at(0.99),
        failed,
    })
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

// --- (4) many shards ------------------------------------------------------------------------------

/// Partition keys per shard in part 4: as many as part 1 puts on each of its 4 shards.
const KEYS_PER_SHARD: usize = 16;

/// Counts the `ListShards` calls a client makes (an SDK interceptor: no proxy, whose CPU would
/// count as ours).
#[derive(Clone, Debug, Default)]
struct ListShardsCalls(Arc<AtomicU64>);

impl ListShardsCalls {
    fn get(&self) -> u64 {
        self.0.load(AtomicOrdering::Relaxed)
    }
}

impl aws_sdk_kinesis::config::Intercept for ListShardsCalls {
    fn name(&self) -> &'static str {
        "ListShardsCalls"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_kinesis::config::interceptors::BeforeSerializationInterceptorContextRef<
            '_,
        >,
        _cfg: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        if context
            .input()
            .downcast_ref::<aws_sdk_kinesis::operation::list_shards::ListShardsInput>()
            .is_some()
        {
            self.0.fetch_add(1, AtomicOrdering::Relaxed);
        }
        Ok(())
    }
}

/// One stream of part 4.
struct ShardsRun {
    shards: u32,
    keys: usize,
    /// From `build` to its return (the shard map loaded, ready to accept records).
    startup: Duration,
    list_shards: u64,
    rss_before: u64,
    rss_started: u64,
    rss_idle: u64,
    idle_cpu: Duration,
    idle_wall: Duration,
    records: u64,
    cpu: Duration,
    wall: Duration,
    rss_mean: u64,
    rss_peak: u64,
    tally: Tally,
}

impl ShardsRun {
    fn per_million(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.records as f64
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn mib_delta(after: u64, before: u64) -> f64 {
    (after as f64 - before as f64) / (1024.0 * 1024.0)
}

async fn many_shards(args: &Args, block: &[u8], summary: &mut Vec<String>) -> Result<(), BoxError> {
    let many = args.many_shards;
    println!(
        "\n(4) Many shards: a stream of {SHARDS} shards, then one of {many}, limits off; \
         {KEYS_PER_SHARD} partition keys per shard (as part 1), {} records at full rate each, \
         every receipt awaited; RSS of this process (the stand-in runs apart)",
        thousands(args.shards_records as f64)
    );
    if args.runs(ProducerPart::Cpu) || args.runs(ProducerPart::Limits) {
        println!(
            "  the RSS figures include what the parts before left in the allocator (part 1 reads back \
             every record it put): --only shards measures them alone"
        );
    }
    let server = start_stand_in_with(&StandInArgs {
        enforce_limits: false,
        shard_limit: many + SHARDS as u32 + 8,
    })
    .await?;
    println!(
        "  stand-in: ferrokinesis, pid {}, {}",
        server.pid(),
        server.endpoint()
    );
    // Both producers are built (and measured idle) before either puts anything, so that each
    // start-up's RSS is measured on a heap no full-rate run has grown yet.
    let mut started = Vec::new();
    for shards in [SHARDS as u32, many] {
        started.push(start_shards_run(args, &server, shards).await?);
    }
    let mut runs = Vec::new();
    for start in started {
        runs.push(full_rate(args, block, start).await?);
    }
    println!(
        "  {:>6} {:>7} {:>11} {:>11} {:>13} {:>12} {:>11} {:>14} {:>11} {:>11} {:>10}",
        "shards",
        "keys",
        "start ms",
        "ListShards",
        "start MiB",
        "idle MiB",
        "idle CPU %",
        "CPU s/million",
        "mean MiB",
        "peak MiB",
        "records/s"
    );
    for run in &runs {
        println!(
            "  {:>6} {:>7} {:>11.1} {:>11} {:>13.2} {:>12.1} {:>11.3} {:>14.3} {:>11.1} {:>11.1} {:>10}{}",
            run.shards,
            run.keys,
            run.startup.as_secs_f64() * 1e3,
            run.list_shards,
            mib_delta(run.rss_started, run.rss_before),
            mib(run.rss_idle),
            run.idle_cpu.as_secs_f64() / run.idle_wall.as_secs_f64() * 100.0,
            run.per_million(),
            mib(run.rss_mean),
            mib(run.rss_peak),
            thousands(run.records as f64 / run.wall.as_secs_f64()),
            if run.tally.delivered == run.records {
                String::new()
            } else {
                format!(
                    "  NOT all delivered: {} of {} ({} failed{})",
                    thousands(run.tally.delivered as f64),
                    thousands(run.records as f64),
                    run.tally.failed_total(),
                    run.tally.failures_text()
                )
            }
        );
    }
    println!(
        "    start ms: build() until it returns (the shard map loaded); start MiB: RSS added by \
         build(); idle MiB and CPU: the process after {} s idle with the producer built (both \
         producers are built, one after the other, before either puts anything); mean and peak \
         MiB: RSS sampled every 20 ms while putting (the process, after the runs before it: the \
         allocator keeps what they freed)",
        args.idle_seconds
    );
    if let [few, lots] = &runs[..] {
        summary.push(format!(
            "{} shards against {}: start-up {:.1} ms against {:.1} ({} and {} ListShards calls), \
             CPU {:.3} against {:.3} s per million, peak RSS {:.0} against {:.0} MiB",
            lots.shards,
            few.shards,
            lots.startup.as_secs_f64() * 1e3,
            few.startup.as_secs_f64() * 1e3,
            lots.list_shards,
            few.list_shards,
            lots.per_million(),
            few.per_million(),
            mib(lots.rss_peak),
            mib(few.rss_peak),
        ));
    }
    server.stop().await?;
    Ok(())
}

/// A producer of part 4, built and measured idle, with its keys.
struct StartedRun {
    producer: Producer,
    keys: Vec<String>,
    run: ShardsRun,
}

/// Creates a stream of `shards` shards, builds its producer (start-up, `ListShards` calls, RSS)
/// and leaves it idle for `--idle-seconds` (CPU, RSS).
async fn start_shards_run(
    args: &Args,
    server: &FerrokinesisProcess,
    shards: u32,
) -> Result<StartedRun, BoxError> {
    let stream = unique_name("bench-shards");
    eprintln!("[shards] creating a stream of {shards} shards ...");
    create_stream(&server.client(), &stream, shards as i32).await?;
    let mut ranges = Vec::new();
    for (_, start, end) in open_shards(&server.client(), &stream).await? {
        ranges.push(HashKeyRange::new(HashKey::new(start), HashKey::new(end))?);
    }
    let keys = balanced_keys(KEYS_PER_SHARD * shards as usize, &ranges);
    let calls = ListShardsCalls::default();
    let config = aws_sdk_kinesis::config::Builder::from(&kinesis_integration_tests::sdk_config(
        server.endpoint(),
        &kinesis_integration_tests::ClientOptions::new(),
    ))
    .interceptor(calls.clone())
    .build();
    let client = aws_sdk_kinesis::Client::from_conf(config);

    let rss_before = resident_memory::of_self()?;
    let started = Instant::now();
    let producer = Producer::builder(client, stream.as_str())
        .rate_limit_percent(kinesis_producer::MAX_RATE_LIMIT_PERCENT)
        .build()
        .await?;
    let startup = started.elapsed();
    let list_shards = calls.get();
    let rss_started = resident_memory::of_self()?;

    eprintln!(
        "[shards] {shards} shards: idle for {} s ...",
        args.idle_seconds
    );
    let idle_cpu0 = CpuTime::of_self()?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
    let idle_wall = idle_started.elapsed();
    let idle_cpu = (CpuTime::of_self()? - idle_cpu0).total();
    let rss_idle = resident_memory::of_self()?;

    Ok(StartedRun {
        producer,
        run: ShardsRun {
            shards,
            keys: keys.len(),
            startup,
            list_shards,
            rss_before,
            rss_started,
            rss_idle,
            idle_cpu,
            idle_wall,
            records: args.shards_records,
            cpu: Duration::ZERO,
            wall: Duration::ZERO,
            rss_mean: 0,
            rss_peak: 0,
            tally: Tally::default(),
        },
        keys,
    })
}

/// Puts `--shards-records` records through a started producer at full rate, every receipt
/// awaited, sampling RSS; then shuts it down.
async fn full_rate(args: &Args, block: &[u8], start: StartedRun) -> Result<ShardsRun, BoxError> {
    let StartedRun {
        producer,
        keys,
        run,
    } = start;
    let shards = run.shards;
    eprintln!(
        "[shards] {shards} shards: {} records ...",
        args.shards_records
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut sum, mut count, mut peak) = (0u64, 0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.load(AtomicOrdering::Relaxed) {
                tick.tick().await;
                if let Ok(rss) = resident_memory::of_self() {
                    sum += rss;
                    count += 1;
                    peak = peak.max(rss);
                }
            }
            (sum / count.max(1), peak)
        })
    };
    let cpu0 = CpuTime::of_self()?;
    let started = Instant::now();
    let tally = put_all(producer, &keys, args.shards_records, block).await?;
    let wall = started.elapsed();
    let cpu = (CpuTime::of_self()? - cpu0).total();
    stop.store(true, AtomicOrdering::Relaxed);
    let (rss_mean, rss_peak) = sampler.await?;
    Ok(ShardsRun {
        cpu,
        wall,
        rss_mean,
        rss_peak,
        tally,
        ..run
    })
}
