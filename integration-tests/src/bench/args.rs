//! The benchmarks' command lines, parsed with clap, and the value parsers they share. A value
//! out of range is refused with an error naming the flag and the range (nothing is clamped).
//!
//! Each benchmark binary also takes the hidden forms it is re-executed with:
//! `--serve-ferrokinesis [--enforce-limits] [--shard-limit N]` (its child stand-in, see
//! [`super::start_stand_in`])
//! and, for `consumer-bench`, `--worker <worker arguments>` (see [`crate::consumer_worker`]).

use std::ops::RangeInclusive;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand, ValueEnum};

use crate::consumer_worker::WorkerArgs;
use crate::embedded_kinesis::FerrokinesisOptions;

/// The stand-in a benchmark re-executes itself as (`--serve-ferrokinesis`).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct StandInArgs {
    /// Throttle writes per shard (1 MiB/s and 1000 records/s) as Kinesis does.
    #[arg(long)]
    pub enforce_limits: bool,
    /// Most open shards over all streams.
    #[arg(long, default_value_t = StandInArgs::DEFAULT_SHARD_LIMIT)]
    pub shard_limit: u32,
}

impl StandInArgs {
    /// The stand-in's default shard limit (ferrokinesis's own).
    pub const DEFAULT_SHARD_LIMIT: u32 = 100;

    /// The options the stand-in is served with.
    pub fn options(&self) -> FerrokinesisOptions {
        FerrokinesisOptions::new()
            .enforce_limits(self.enforce_limits)
            .shard_limit(self.shard_limit)
    }
}

/// `producer-bench`'s command line.
#[derive(Clone, Debug, PartialEq, Parser)]
#[command(
    name = "producer-bench",
    about = "What kinesis-producer costs and how close it gets to the write limit, next to aiokpl",
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
pub struct ProducerBenchArgs {
    /// Records of the CPU-cost run, ours (`1000000`, `1_000_000` or `1e6`).
    #[arg(long, allow_negative_numbers = true, default_value = "1000000", value_parser = count_in(1..=u64::MAX))]
    pub records: u64,
    /// Records of aiokpl's CPU-cost run (0: aiokpl does not run).
    #[arg(long, allow_negative_numbers = true, default_value = "200000", value_parser = count_in(0..=u64::MAX))]
    pub aiokpl_records: u64,
    /// Partition keys.
    #[arg(long, allow_negative_numbers = true, default_value = "64", value_parser = count_in(1..=u64::MAX).try_map(usize::try_from))]
    pub keys: usize,
    /// How long part 2 puts, in seconds.
    #[arg(long, allow_negative_numbers = true, default_value = "30", value_parser = positive_seconds)]
    pub seconds: f64,
    /// Run one part only.
    #[arg(long, value_enum)]
    pub only: Option<ProducerPart>,
    /// How long each run of part 3 puts, in seconds.
    #[arg(long, allow_negative_numbers = true, default_value = "20", value_parser = positive_seconds)]
    pub moderate_seconds: f64,
    /// Print the producer's metrics second by second in part 2.
    #[arg(long)]
    pub per_second: bool,
    /// Keys `pk-0` .. `pk-{N-1}` as they fall, instead of as many on each shard as on the others.
    #[arg(long)]
    pub unbalanced_keys: bool,
    /// Part 2 with this `rate_limit_percent` instead of the producer's default.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_parser = count_in(1..=kinesis_producer::MAX_RATE_LIMIT_PERCENT.into()).map(|n| n as u32)
    )]
    pub rate_limit_percent: Option<u32>,
    /// How the producers of parts 1 to 3 encode `PutRecords` bodies (the library's default:
    /// cbor). To compare the two, alternate runs of separate processes: a run after another in
    /// the same process starts on memory the first freed.
    #[arg(long, value_enum, default_value = "cbor")]
    pub wire_format: BodyFormat,
    /// Shards of part 4's large stream (next to a 4-shard one).
    #[arg(long, allow_negative_numbers = true, default_value = "1000", value_parser = count_in(1..=10_000).map(|n| n as u32))]
    pub many_shards: u32,
    /// Records of each full-rate run of part 4.
    #[arg(long, allow_negative_numbers = true, default_value = "1000000", value_parser = count_in(1..=u64::MAX))]
    pub shards_records: u64,
    /// How long part 4 measures each idle producer, in seconds.
    #[arg(long, allow_negative_numbers = true, default_value = "5", value_parser = positive_seconds)]
    pub idle_seconds: f64,
    /// The re-executed forms (hidden).
    #[command(subcommand)]
    pub role: Option<ProducerBenchRole>,
}

/// `PutRecords` bodies in producer-bench part 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BodyFormat {
    /// JSON (`WireFormat::Json`).
    Json,
    /// CBOR (`WireFormat::Cbor`).
    Cbor,
}

impl BodyFormat {
    /// The producer's setting.
    pub fn wire_format(self) -> kinesis_producer::WireFormat {
        match self {
            BodyFormat::Json => kinesis_producer::WireFormat::Json,
            BodyFormat::Cbor => kinesis_producer::WireFormat::Cbor,
        }
    }
}

/// A part of `producer-bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProducerPart {
    /// (1) CPU cost.
    Cpu,
    /// (2) Throughput under limits.
    Limits,
    /// (3) Moderate rate.
    Moderate,
    /// (4) A stream of many shards next to one of 4.
    Shards,
}

impl ProducerBenchArgs {
    /// Whether `part` runs (every part, unless `--only` names one).
    pub fn runs(&self, part: ProducerPart) -> bool {
        self.only.is_none_or(|only| only == part)
    }
}

/// What `producer-bench` is re-executed as.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum ProducerBenchRole {
    /// Serve ferrokinesis: the benchmark's child stand-in.
    #[command(long_flag = "serve-ferrokinesis", hide = true)]
    ServeFerrokinesis(StandInArgs),
}

/// `consumer-bench`'s command line.
#[derive(Clone, Debug, PartialEq, Parser)]
#[command(
    name = "consumer-bench",
    about = "What kinesis-consumer does in the situations its users care about, next to kcl-rs",
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
pub struct ConsumerBenchArgs {
    /// Aggregated records of the drain's backlog.
    #[arg(long, allow_negative_numbers = true, default_value = "1000000", value_parser = count_in(1..=u64::MAX))]
    pub records: u64,
    /// Plain records of the drain's second backlog (0: none).
    #[arg(long, allow_negative_numbers = true, default_value = "200000", value_parser = count_in(0..=u64::MAX))]
    pub plain_records: u64,
    /// How long the lease-table cost is measured, in seconds (at least 10).
    #[arg(long, allow_negative_numbers = true, default_value = "60", value_parser = count_in(10..=u64::MAX))]
    pub idle_seconds: u64,
    /// Our workers' failover time, in seconds (at least 2; kcl-rs keeps its own 10 s).
    #[arg(long, allow_negative_numbers = true, default_value = "10", value_parser = count_in(2..=u64::MAX))]
    pub failover_secs: u64,
    /// Kills in the churn scenario (at least 1).
    #[arg(long, allow_negative_numbers = true, default_value = "10", value_parser = count_in(1..=u64::MAX))]
    pub kills: u64,
    /// Run one implementation only.
    #[arg(long, value_enum)]
    pub only: Option<Implementation>,
    /// A scenario to run (repeatable; default all but `scale`, which runs only when named).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// The scale scenario's fleet sizes, workers (comma-separated, each at least 2).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,10,50",
        value_parser = count_in(2..=1_000).map(|n| n as usize)
    )]
    pub scale_workers: Vec<usize>,
    /// The scale scenario's lease counts, one idle shard each (comma-separated, each at least 1).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "8,100,1000",
        value_parser = count_in(1..=10_000).map(|n| n as usize)
    )]
    pub scale_leases: Vec<usize>,
    /// The scale scenario's idle-cost curve: one worker alone on each of these numbers of idle
    /// shards (comma-separated; `0` alone skips the curve). A line through the points gives what
    /// one more idle shard costs apart from the worker's own costs.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,250,1000",
        value_parser = count_in(0..=10_000).map(|n| n as usize)
    )]
    pub scale_curve: Vec<usize>,
    /// Runs the idle-cost curve a second time with enhanced fan-out (`SubscribeToShard`).
    #[arg(long)]
    pub scale_curve_fan_out: bool,
    /// Runs the idle-cost curve once more, polling with this `max_idle` (the longest pause
    /// between polls of a quiet shard), in milliseconds.
    #[arg(long, value_name = "MS", value_parser = count_in(1..=86_400_000))]
    pub scale_curve_max_idle_ms: Option<u64>,
    /// How long the scale scenario measures an idle fleet's cost, in seconds (at least 10).
    #[arg(long, allow_negative_numbers = true, default_value = "60", value_parser = count_in(10..=u64::MAX))]
    pub scale_idle_seconds: u64,
    /// The fleet sizes kcl-rs is measured at in the scale scenario (comma-separated, at least 1).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,3,4",
        value_parser = count_in(1..=100).map(|n| n as usize)
    )]
    pub scale_kcl_rs_workers: Vec<usize>,
    /// The leases kcl-rs holds in the scale scenario.
    #[arg(long, allow_negative_numbers = true, default_value = "100", value_parser = count_in(1..=10_000).map(|n| n as usize))]
    pub scale_kcl_rs_leases: usize,
    /// kcl-rs's pause between reads of an idle shard in the scale scenario, in milliseconds
    /// (its `idle_time_between_reads_millis`, 1,500 by its default; 1,000 by ours: our workers'
    /// `max_idle`, so both poll an idle shard as often).
    #[arg(long, value_name = "MS", allow_negative_numbers = true, default_value = "1000", value_parser = count_in(200..=60_000))]
    pub scale_kcl_rs_idle_ms: u64,
    /// The re-executed forms (hidden).
    #[command(subcommand)]
    pub role: Option<ConsumerBenchRole>,
}

impl ConsumerBenchArgs {
    /// The lease-table cost measurement's length.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_seconds)
    }

    /// Our workers' failover time.
    pub fn failover(&self) -> Duration {
        Duration::from_secs(self.failover_secs)
    }

    /// The implementations to run, in order.
    pub fn implementations(&self) -> Vec<Implementation> {
        match self.only {
            Some(only) => vec![only],
            None => vec![Implementation::Ours, Implementation::KclRs],
        }
    }

    /// Whether `scenario` runs: every scenario but [`Scenario::Scale`] (tens of minutes), unless
    /// `--scenario` names some.
    pub fn runs(&self, scenario: Scenario) -> bool {
        if self.scenarios.is_empty() {
            scenario != Scenario::Scale
        } else {
            self.scenarios.contains(&scenario)
        }
    }

    /// The scale scenario's idle window.
    pub fn scale_idle(&self) -> Duration {
        Duration::from_secs(self.scale_idle_seconds)
    }

    /// The idle-cost curve's lease counts, ascending, without repeats or zeros; empty when fewer
    /// than two remain (no line through one point).
    pub fn scale_curve_points(&self) -> Vec<usize> {
        let mut points: Vec<usize> = self
            .scale_curve
            .iter()
            .copied()
            .filter(|&n| n > 0)
            .collect();
        points.sort_unstable();
        points.dedup();
        if points.len() < 2 { Vec::new() } else { points }
    }

    /// The scale scenario's cells, (workers, leases), fleet size first.
    pub fn scale_cells(&self) -> Vec<(usize, usize)> {
        let mut cells = Vec::new();
        for &workers in &self.scale_workers {
            for &leases in &self.scale_leases {
                if !cells.contains(&(workers, leases)) {
                    cells.push((workers, leases));
                }
            }
        }
        cells
    }
}

/// Whose worker runs a `consumer-bench` scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Implementation {
    /// `kinesis-consumer`.
    Ours,
    /// kcl-rs, through `peers/consumer_peer.py`.
    #[value(name = "kcl-rs")]
    KclRs,
}

impl Implementation {
    /// The name printed (and given to `--only`).
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Ours => "ours",
            Implementation::KclRs => "kcl-rs",
        }
    }

    /// How long to wait for something that takes `ours` with our worker: kcl-rs takes tens of
    /// seconds to start and to fail over.
    pub fn patience(self, ours: Duration) -> Duration {
        match self {
            Implementation::Ours => ours,
            Implementation::KclRs => ours.max(Duration::from_secs(180)),
        }
    }
}

/// A `consumer-bench` scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Cold start and drain.
    Drain,
    /// Failover after kill -9.
    Failover,
    /// Failover under churn.
    Churn,
    /// An even split when a worker joins.
    Balance,
    /// Child start after a split.
    Split,
    /// The lease table's cost when idle.
    Cost,
    /// Put-to-processed latency.
    Latency,
    /// Cold start and drain over enhanced fan-out.
    FanOutDrain,
    /// Fleet scale: W workers on L idle shards (cost, cold start, failover, memory and CPU per
    /// shard); runs only when named.
    Scale,
}

/// What `consumer-bench` is re-executed as.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum ConsumerBenchRole {
    /// Serve ferrokinesis: the benchmark's child stand-in.
    #[command(long_flag = "serve-ferrokinesis", hide = true)]
    ServeFerrokinesis(StandInArgs),
    /// One worker of ours (the `consumer-worker` program's arguments follow).
    #[command(long_flag = "worker", hide = true)]
    Worker(Box<WorkerArgs>),
}

/// `agg-bench`'s command line.
#[derive(Clone, Debug, PartialEq, Parser)]
#[command(
    name = "agg-bench",
    about = "KPL aggregation and deaggregation, ours next to three peers, with the MD5 ceiling",
    args_override_self = true
)]
pub struct AggBenchArgs {
    /// Each timed phase runs passes over its record set for at least this many seconds (0: one
    /// pass).
    #[arg(
        long,
        env = "AGG_BENCH_SECONDS",
        allow_negative_numbers = true,
        default_value = "1",
        value_parser = non_negative_seconds
    )]
    pub seconds: f64,
}

/// A count: `1000000`, `1_000_000` or `1e6`.
pub fn count(text: &str) -> Result<u64, String> {
    let clean = text.replace('_', "");
    if let Ok(n) = clean.parse::<u64>() {
        return Ok(n);
    }
    // 2^64, the first float past u64::MAX.
    const PAST_MAX: f64 = 18_446_744_073_709_551_616.0;
    match clean.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < PAST_MAX => Ok(v as u64),
        _ => Err(format!(
            "{text:?} is not a count (a whole number such as 1000000, 1_000_000 or 1e6, at most \
             {})",
            u64::MAX
        )),
    }
}

/// A parser of counts (see [`count`]) in `range`.
pub fn count_in(
    range: RangeInclusive<u64>,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let n = count(text)?;
        if range.contains(&n) {
            Ok(n)
        } else if *range.end() == u64::MAX {
            Err(format!("must be at least {}", range.start()))
        } else {
            Err(format!("must be from {} to {}", range.start(), range.end()))
        }
    }
}

/// Seconds, a finite number above 0 (`30`, `0.5`).
pub fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number of seconds above 0")),
    }
}

/// Seconds, a finite number, 0 or above.
pub fn non_negative_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number of seconds, 0 or above")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn producer(args: &[&str]) -> Result<ProducerBenchArgs, clap::Error> {
        ProducerBenchArgs::try_parse_from(
            std::iter::once("producer-bench").chain(args.iter().copied()),
        )
    }

    fn consumer(args: &[&str]) -> Result<ConsumerBenchArgs, clap::Error> {
        ConsumerBenchArgs::try_parse_from(
            std::iter::once("consumer-bench").chain(args.iter().copied()),
        )
    }

    fn refused<T: std::fmt::Debug>(parsed: Result<T, clap::Error>, flag: &str) -> String {
        let error = parsed.expect_err("refused");
        let text = error.to_string();
        assert!(text.contains(flag), "{text}");
        text
    }

    #[test]
    fn the_commands_are_well_formed() {
        ProducerBenchArgs::command().debug_assert();
        ConsumerBenchArgs::command().debug_assert();
        AggBenchArgs::command().debug_assert();
    }

    #[test]
    fn counts_take_underscores_and_exponents_and_nothing_else() {
        assert_eq!(count("1_000_000"), Ok(1_000_000));
        assert_eq!(count("1e6"), Ok(1_000_000));
        assert_eq!(count("18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "-1", "1.5", "1e30", "NaN", "inf", "ten"] {
            assert!(count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn producer_defaults_are_the_documented_ones() {
        let args = producer(&[]).unwrap();
        assert_eq!(
            args,
            ProducerBenchArgs {
                records: 1_000_000,
                aiokpl_records: 200_000,
                keys: 64,
                seconds: 30.0,
                only: None,
                moderate_seconds: 20.0,
                per_second: false,
                unbalanced_keys: false,
                rate_limit_percent: None,
                wire_format: BodyFormat::Cbor,
                many_shards: 1000,
                shards_records: 1_000_000,
                idle_seconds: 5.0,
                role: None,
            }
        );
        assert!(args.runs(ProducerPart::Cpu) && args.runs(ProducerPart::Shards));
        assert_eq!(
            args.wire_format.wire_format(),
            kinesis_producer::WireFormat::default(),
            "part 1 runs the library's default"
        );
        let json = producer(&["--wire-format", "json"]).unwrap();
        assert_eq!(
            json.wire_format.wire_format(),
            kinesis_producer::WireFormat::Json
        );
        assert!(producer(&["--wire-format", "xml"]).is_err());
    }

    #[test]
    fn producer_flags_parse_and_the_last_one_wins() {
        let args = producer(&[
            "--records",
            "1e5",
            "--keys",
            "16",
            "--only",
            "cpu",
            "--only",
            "limits",
            "--per-second",
            "--rate-limit-percent",
            "120",
            "--seconds",
            "0.5",
        ])
        .unwrap();
        assert_eq!(args.records, 100_000);
        assert_eq!(args.keys, 16);
        assert_eq!(args.seconds, 0.5);
        assert_eq!(args.rate_limit_percent, Some(120));
        assert!(args.per_second);
        assert!(args.runs(ProducerPart::Limits) && !args.runs(ProducerPart::Cpu));
    }

    #[test]
    fn producer_bad_values_are_refused() {
        refused(producer(&["--records", "0"]), "--records");
        refused(producer(&["--keys", "0"]), "--keys");
        refused(producer(&["--seconds", "0"]), "--seconds");
        refused(producer(&["--seconds", "NaN"]), "--seconds");
        refused(
            producer(&["--moderate-seconds", "-1"]),
            "--moderate-seconds",
        );
        refused(
            producer(&["--rate-limit-percent", "0"]),
            "--rate-limit-percent",
        );
        refused(producer(&["--only", "everything"]), "--only");
        refused(producer(&["--records"]), "--records");
        refused(producer(&["--bogus"]), "--bogus");
    }

    #[test]
    fn producer_is_re_executed_as_a_stand_in() {
        let args = producer(&["--serve-ferrokinesis", "--enforce-limits"]).unwrap();
        assert_eq!(
            args.role,
            Some(ProducerBenchRole::ServeFerrokinesis(StandInArgs {
                enforce_limits: true,
                shard_limit: 100
            }))
        );
        let args = producer(&["--serve-ferrokinesis", "--shard-limit", "2000"]).unwrap();
        assert_eq!(
            args.role,
            Some(ProducerBenchRole::ServeFerrokinesis(StandInArgs {
                enforce_limits: false,
                shard_limit: 2000
            }))
        );
    }

    #[test]
    fn consumer_defaults_and_scenarios() {
        let args = consumer(&[]).unwrap();
        assert_eq!(
            (args.records, args.plain_records, args.kills),
            (1_000_000, 200_000, 10)
        );
        assert_eq!(args.idle(), Duration::from_secs(60));
        assert_eq!(args.failover(), Duration::from_secs(10));
        assert_eq!(
            args.implementations(),
            vec![Implementation::Ours, Implementation::KclRs]
        );
        assert!(args.runs(Scenario::FanOutDrain));
        assert!(!args.runs(Scenario::Scale));
        assert_eq!(args.scale_idle(), Duration::from_secs(60));
        assert_eq!(args.scale_cells().len(), 9);
        assert_eq!(args.scale_cells()[0], (2, 8));
        assert_eq!(args.scale_cells()[8], (50, 1000));
        assert_eq!(args.scale_kcl_rs_workers, vec![2, 3, 4]);
        assert_eq!(args.scale_kcl_rs_leases, 100);
        assert_eq!(
            u128::from(args.scale_kcl_rs_idle_ms),
            kinesis_consumer::DEFAULT_MAX_IDLE.as_millis()
        );
        assert_eq!(args.scale_curve_points(), vec![1, 250, 1000]);
        let curve = |list: &str| {
            consumer(&["--scale-curve", list])
                .unwrap()
                .scale_curve_points()
        };
        assert_eq!(curve("1000,1,1000,0"), vec![1, 1000]);
        assert!(curve("0").is_empty(), "skipped");
        assert!(curve("50").is_empty(), "no line through one point");
        assert_eq!(
            consumer(&["--scale-curve-max-idle-ms", "5000"])
                .unwrap()
                .scale_curve_max_idle_ms,
            Some(5000)
        );

        let args = consumer(&[
            "--scenario",
            "scale",
            "--scale-workers",
            "2,10",
            "--scale-leases",
            "8,1e2",
            "--scale-idle-seconds",
            "20",
        ])
        .unwrap();
        assert!(args.runs(Scenario::Scale) && !args.runs(Scenario::Drain));
        assert_eq!(
            args.scale_cells(),
            vec![(2, 8), (2, 100), (10, 8), (10, 100)]
        );
        assert_eq!(args.scale_idle(), Duration::from_secs(20));

        let args = consumer(&[
            "--scenario",
            "drain",
            "--scenario",
            "fan-out-drain",
            "--only",
            "kcl-rs",
            "--plain-records",
            "0",
            "--records",
            "2_000",
        ])
        .unwrap();
        assert!(args.runs(Scenario::Drain) && args.runs(Scenario::FanOutDrain));
        assert!(!args.runs(Scenario::Churn));
        assert_eq!(args.implementations(), vec![Implementation::KclRs]);
        assert_eq!((args.records, args.plain_records), (2_000, 0));
    }

    #[test]
    fn consumer_values_once_clamped_are_refused() {
        refused(consumer(&["--records", "0"]), "--records");
        let text = refused(consumer(&["--idle-seconds", "9"]), "--idle-seconds");
        assert!(text.contains("must be at least 10"), "{text}");
        refused(consumer(&["--failover-secs", "1"]), "--failover-secs");
        refused(consumer(&["--kills", "0"]), "--kills");
        refused(consumer(&["--scenario", "nap"]), "--scenario");
        refused(consumer(&["--only", "java"]), "--only");
        refused(consumer(&["--scale-workers", "1,10"]), "--scale-workers");
        refused(consumer(&["--scale-leases", "0"]), "--scale-leases");
        refused(
            consumer(&["--scale-curve-max-idle-ms", "0"]),
            "--scale-curve-max-idle-ms",
        );
        refused(
            consumer(&["--scale-idle-seconds", "5"]),
            "--scale-idle-seconds",
        );
        assert_eq!(
            consumer(&["--idle-seconds", "10"]).unwrap().idle_seconds,
            10
        );
    }

    #[test]
    fn consumer_is_re_executed_as_a_worker() {
        let args = consumer(&[
            "--worker",
            "--kinesis",
            "http://127.0.0.1:1",
            "--dynamodb",
            "http://127.0.0.1:2",
            "--stream",
            "s",
            "--application",
            "a",
            "--worker-id",
            "w",
            "--failover-ms",
            "3000",
            "--quiet",
        ])
        .unwrap();
        let Some(ConsumerBenchRole::Worker(worker)) = args.role else {
            panic!("not a worker: {args:?}");
        };
        assert_eq!(worker.kinesis, "http://127.0.0.1:1");
        assert_eq!(worker.failover_ms, 3000);
        assert!(worker.quiet && !worker.fan_out);
        refused(consumer(&["--worker", "--stream", "s"]), "--kinesis");
    }

    #[test]
    fn agg_bench_seconds() {
        let parse = |args: &[&str]| {
            AggBenchArgs::try_parse_from(std::iter::once("agg-bench").chain(args.iter().copied()))
        };
        assert_eq!(parse(&["--seconds", "0"]).unwrap().seconds, 0.0);
        assert_eq!(parse(&["--seconds", "2.5"]).unwrap().seconds, 2.5);
        refused(parse(&["--seconds", "-1"]), "--seconds");
        refused(parse(&["--seconds", "NaN"]), "--seconds");
    }
}
