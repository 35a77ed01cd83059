//! `agg-bench`: the same record sets aggregated and deaggregated by our crate and by the three
//! peers (Python and Node `aws-kinesis-agg`, `aiokpl`) in one run, plus two MD5 bounds: MD5 alone
//! over the same aggregates one at a time (single stream), and in lanes, several side by side
//! (what `digest_aggregates` and `deaggregate_batch` use).
//!
//! Run with `cargo run --release -p kinesis-integration-tests --bin agg-bench`. Each timed phase
//! runs passes over its record set until `--seconds S` (or `AGG_BENCH_SECONDS`; default 1) have
//! elapsed. Peers time themselves inside their own process: records are generated first, then
//! only encoding is timed, then only decoding of the peer's own aggregates; interpreter start-up
//! and JSON I/O are outside the clock. Every implementation generates the same records (see
//! [`kinesis_integration_tests::peers::BenchWorkload`]), which the peers prove with an MD5 of
//! their inputs.

#![forbid(unsafe_code)]

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kinesis_aggregation::{
    AggregationLimits, Aggregator, Finished, KPL_DEFAULT_AGGREGATE_MAX_BYTES, KinesisRecord, MAGIC,
    MD5_LEN, StreamRecord, UndigestedAggregate, UserRecord, deaggregate, deaggregate_batch,
    digest_aggregates, md5_digests,
};
use kinesis_integration_tests::bench::args::AggBenchArgs;
use kinesis_integration_tests::peers::{
    BenchReport, BenchWorkload, Peer, bench_block, bench_record,
};
use kinesis_integration_tests::tools::{machine, program_version as version, thousands};
use md5::{Digest as _, Md5};

type BoxError = Box<dyn Error>;

/// One workload as we run it, and how many of its records the (slower) peers generate.
struct Workload {
    label: &'static str,
    spec: BenchWorkload,
    peer_records: usize,
}

/// Records per second of one timed phase.
#[derive(Clone, Copy)]
struct Rate {
    records: u64,
    seconds: f64,
}

impl Rate {
    fn per_second(self) -> f64 {
        self.records as f64 / self.seconds
    }
}

struct Row {
    name: String,
    encode: Option<Rate>,
    decode: Option<Rate>,
}

fn main() -> Result<(), BoxError> {
    let seconds = AggBenchArgs::parse().seconds;
    let max_size = KPL_DEFAULT_AGGREGATE_MAX_BYTES;
    let workloads = [
        Workload {
            label: "a: 100 B data, 20 B keys",
            spec: BenchWorkload {
                name: "a".into(),
                records: 200_000,
                key_len: 20,
                data_len: 100,
                max_size,
                seconds,
            },
            peer_records: 200_000,
        },
        Workload {
            label: "b: 1 KiB data, 20 B keys",
            spec: BenchWorkload {
                name: "b".into(),
                records: 200_000,
                key_len: 20,
                data_len: 1024,
                max_size,
                seconds,
            },
            peer_records: 50_000,
        },
    ];

    // Fail early, naming any missing peer.
    for peer in Peer::ALL {
        peer.command()?;
    }

    let mut out = String::new();
    out.push_str(&format!(
        "agg-bench: KPL aggregation, records/s (MB/s = aggregate bytes/s, 1 MB = 10^6 B); \
         aggregates up to {max_size} bytes; >= {seconds} s per timed phase\n"
    ));
    out.push_str(&format!("machine: {}\n", machine()));
    out.push_str(&format!(
        "peers: {}, {}, {} ({}, node {})\n\n",
        Peer::Python.name(),
        Peer::Node.name(),
        Peer::Aiokpl.name(),
        version("python3", "--version"),
        version("node", "--version"),
    ));
    out.push_str(
        "| workload | implementation | encode rec/s | encode MB/s | decode rec/s | decode MB/s \
         | ours/peer encode | ours/peer decode |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");

    for workload in &workloads {
        let block = Bytes::from(bench_block());
        let spec = &workload.spec;
        let records: Vec<UserRecord> = (0..spec.records)
            .map(|i| {
                let (pk, range) = bench_record(i, spec.key_len, spec.data_len);
                UserRecord::new(pk, block.slice(range))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("building workload {}: {e}", spec.name))?;
        let limits = AggregationLimits::default()
            .with_max_bytes(max_size)
            .map_err(|e| format!("aggregation limits: {e}"))?;

        eprintln!("[{}] ours ...", spec.name);
        let (encode, aggregates) = our_encode(&records, limits, seconds)?;
        let (batched_encode, batched) = our_encode_batched(&records, limits, seconds)?;
        if batched != aggregates {
            return Err("the producer's path encoded other bytes than finish".into());
        }
        let decode = our_decode(&aggregates, seconds, Decoder::OneAtATime);
        let batched_decode = our_decode(&aggregates, seconds, Decoder::Batch);
        let aggregate_bytes: usize = aggregates.iter().map(|k| k.data.len()).sum();
        let bytes_per_record = aggregate_bytes as f64 / records.len() as f64;
        let md5 = md5_bound(&aggregates, seconds, Digest::Single);
        let md5_lanes = md5_bound(&aggregates, seconds, Digest::Lanes);

        let peer_spec = BenchWorkload {
            records: workload.peer_records,
            ..spec.clone()
        };
        let want_md5 = input_md5(&records[..workload.peer_records]);
        let mut rows = vec![
            Row {
                name: "ours (kinesis-aggregation), one at a time: try_push, finish / deaggregate"
                    .into(),
                encode: Some(encode),
                decode: Some(decode),
            },
            Row {
                name: "ours, MD5 in lanes: the producer's path (try_push_ref, \
                       finish_undigested, digest_aggregates per call) / deaggregate_batch"
                    .into(),
                encode: Some(batched_encode),
                decode: Some(batched_decode),
            },
        ];
        for peer in Peer::ALL {
            eprintln!("[{}] {} ...", spec.name, peer.name());
            let report = peer
                .bench(std::slice::from_ref(&peer_spec))?
                .pop()
                .ok_or_else(|| format!("{}: no report", peer.name()))?;
            check_report(peer, &report, &want_md5)?;
            rows.extend(peer_rows(peer, &report));
        }

        let ours = &rows[0];
        let (ours_enc, ours_dec) = (ours.encode, ours.decode);
        for (i, row) in rows.iter().enumerate() {
            let ratio = |ours: Option<Rate>, peer: Option<Rate>| match (ours, peer) {
                (Some(o), Some(p)) if i > 1 => format!("{:.1}x", o.per_second() / p.per_second()),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                if i == 0 { workload.label } else { "" },
                row.name,
                rate_cell(row.encode),
                mb_cell(row.encode, bytes_per_record),
                rate_cell(row.decode),
                mb_cell(row.decode, bytes_per_record),
                ratio(ours_enc, row.encode),
                ratio(ours_dec, row.decode),
            ));
        }
        for (name, bound) in [
            (
                "MD5 alone over the same aggregates, one at a time (single-stream bound)",
                md5,
            ),
            (
                "MD5 alone over the same aggregates, in lanes (lane bound)",
                md5_lanes,
            ),
        ] {
            out.push_str(&format!(
                "|  | {name} | {} | {} | {} | {} | - | - |\n",
                rate_cell(Some(bound)),
                mb_cell(Some(bound), bytes_per_record),
                rate_cell(Some(bound)),
                mb_cell(Some(bound), bytes_per_record),
            ));
        }
        for (name, row) in [
            ("ours, one at a time", &rows[0]),
            ("ours, MD5 in lanes", &rows[1]),
        ] {
            let share = |rate: Option<Rate>, bound: Rate| match rate {
                Some(r) => format!("{:.0} %", 100.0 * r.per_second() / bound.per_second()),
                None => "-".into(),
            };
            out.push_str(&format!(
                "|  | {name}, as % of the single-stream / lane bound | {} / {} |  | {} / {} \
                 |  |  |  |\n",
                share(row.encode, md5),
                share(row.encode, md5_lanes),
                share(row.decode, md5),
                share(row.decode, md5_lanes),
            ));
        }
        out.push_str(&format!(
            "|  | ({} records, {} aggregates of ~{} records, {:.1} aggregate bytes per record) \
             |  |  |  |  |  |  |\n",
            records.len(),
            aggregates.len(),
            records.len() / aggregates.len().max(1),
            bytes_per_record
        ));
    }
    out.push_str(
        "\nours/peer = our one-at-a-time rate divided by the peer's. Node's aggregator has a fixed 1 MiB limit: \
         its main row drives RecordAggregator through calculateUserRecordSize/addUserRecord/build \
         at the same limit as everyone else. aiokpl's main row is its producer-side Aggregator \
         (size estimate + async reducer + encode_aggregated). Python aws-kinesis-agg decode \
         includes the base64 re-encoding of every payload (its output format); Node decode takes \
         base64 input (its API). Our one-at-a-time encode includes cloning each UserRecord \
         (the input is reused across passes; try_push takes the record) and digests each \
         aggregate as it is finished. Our MD5-in-lanes encode is what kinesis-producer does: \
         try_push_ref (no clone), then the trailers of each PutRecords call's aggregates \
         (up to 500 or 5 MiB) digested together. Our decodes take a clone of each StreamRecord \
         (as a consumer owns what GetRecords returned); deaggregate_batch is given the whole \
         record set as one iterator and verifies up to 32 trailers at a time. The lane bound \
         digests all of a workload's aggregates in one call.\n",
    );
    print!("{out}");
    Ok(())
}

/// Our aggregation, time-bounded passes over `records`; returns the rate and the first pass's
/// aggregates.
fn our_encode(
    records: &[UserRecord],
    limits: AggregationLimits,
    seconds: f64,
) -> Result<(Rate, Vec<KinesisRecord>), BoxError> {
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    let mut total = 0u64;
    let mut first = None;
    loop {
        let mut agg = Aggregator::new(limits);
        let mut out = Vec::new();
        for record in records {
            if let Err(back) = agg.try_push(record.clone()) {
                out.extend(agg.finish());
                agg.try_push(back.into_record())?;
            }
        }
        out.extend(agg.finish());
        total += records.len() as u64;
        if first.is_none() {
            first = Some(out);
        } else {
            black_box(out);
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    let rate = Rate {
        records: total,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((rate, first.unwrap_or_default()))
}

/// The producer's path, time-bounded passes over `records`: `try_push_ref`, aggregates finished
/// without their trailer, and the trailers of each `PutRecords` call's aggregates (up to 500
/// entries or 5 MiB) digested together. Returns the rate and the first pass's records.
fn our_encode_batched(
    records: &[UserRecord],
    limits: AggregationLimits,
    seconds: f64,
) -> Result<(Rate, Vec<KinesisRecord>), BoxError> {
    const CALL_ENTRIES: usize = 500;
    const CALL_BYTES: usize = 5 * 1024 * 1024;
    fn finish(
        agg: &mut Aggregator,
        out: &mut Vec<KinesisRecord>,
        call: &mut Vec<UndigestedAggregate>,
    ) {
        match agg.finish_undigested() {
            Some(Finished::Ready(record)) => out.push(record),
            Some(Finished::Undigested(aggregate)) => {
                let bytes: usize = call.iter().map(UndigestedAggregate::size).sum();
                if call.len() == CALL_ENTRIES || bytes + aggregate.size() > CALL_BYTES {
                    out.extend(digest_aggregates(std::mem::take(call)));
                }
                call.push(aggregate);
            }
            None => {}
        }
    }
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    let mut total = 0u64;
    let mut first = None;
    loop {
        let mut agg = Aggregator::new(limits);
        let mut out = Vec::new();
        let mut call = Vec::new();
        for record in records {
            if agg.try_push_ref(record).is_err() {
                finish(&mut agg, &mut out, &mut call);
                agg.try_push_ref(record)?;
            }
        }
        finish(&mut agg, &mut out, &mut call);
        out.extend(digest_aggregates(call));
        total += records.len() as u64;
        if first.is_none() {
            first = Some(out);
        } else {
            black_box(out);
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    let rate = Rate {
        records: total,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((rate, first.unwrap_or_default()))
}

/// How our decode is called.
#[derive(Clone, Copy)]
enum Decoder {
    /// `deaggregate` on each record.
    OneAtATime,
    /// `deaggregate_batch` over all of them.
    Batch,
}

/// Our deaggregation (checksums verified), time-bounded passes over `aggregates`.
fn our_decode(aggregates: &[KinesisRecord], seconds: f64, decoder: Decoder) -> Rate {
    let inputs: Vec<StreamRecord> = aggregates
        .iter()
        .enumerate()
        .map(|(i, k)| {
            StreamRecord::new(
                format!("{}", 49_000_000_000u64 + i as u64),
                k.partition_key.clone(),
                k.data.clone(),
            )
        })
        .collect();
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    let mut total = 0u64;
    loop {
        match decoder {
            Decoder::OneAtATime => {
                for input in &inputs {
                    let users = deaggregate(input.clone());
                    total += users.len() as u64;
                    black_box(users);
                }
            }
            Decoder::Batch => {
                for split in deaggregate_batch(inputs.iter().cloned()) {
                    total += split.records.len() as u64;
                    black_box(split);
                }
            }
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    Rate {
        records: total,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// How the MD5 bound digests.
#[derive(Clone, Copy)]
enum Digest {
    /// One aggregate at a time (the `md-5` crate).
    Single,
    /// All of them in one call of the lane digest.
    Lanes,
}

/// MD5 alone over the aggregates' protobuf bytes: both encoding and decoding must digest every
/// one of them, so no implementation digesting that way can beat this rate.
fn md5_bound(aggregates: &[KinesisRecord], seconds: f64, digest: Digest) -> Rate {
    let bodies: Vec<&[u8]> = aggregates
        .iter()
        .map(|k| &k.data[MAGIC.len()..k.data.len() - MD5_LEN])
        .collect();
    let records: u64 = aggregates.iter().map(|k| k.user_records as u64).sum();
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    let mut total = 0u64;
    loop {
        match digest {
            Digest::Single => {
                for body in &bodies {
                    black_box(Md5::digest(body));
                }
            }
            Digest::Lanes => {
                black_box(md5_digests(&bodies));
            }
        }
        total += records;
        if start.elapsed() >= budget {
            break;
        }
    }
    Rate {
        records: total,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn input_md5(records: &[UserRecord]) -> String {
    let mut md5 = Md5::new();
    for r in records {
        md5.update(r.partition_key().as_bytes());
        md5.update(r.data());
    }
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn check_report(peer: Peer, report: &BenchReport, want_md5: &str) -> Result<(), BoxError> {
    if report.input_md5 != want_md5 {
        return Err(format!(
            "{} generated different records for workload {} (input MD5 {} != ours {want_md5})",
            peer.name(),
            report.name,
            report.input_md5
        )
        .into());
    }
    if report.encode.records == 0 || report.decode.records == 0 {
        return Err(format!("{}: empty timing for workload {}", peer.name(), report.name).into());
    }
    Ok(())
}

fn peer_rows(peer: Peer, report: &BenchReport) -> Vec<Row> {
    let rate = |t: &kinesis_integration_tests::peers::Timing| Rate {
        records: t.records,
        seconds: t.seconds,
    };
    let mut rows = vec![Row {
        name: match peer {
            Peer::Aiokpl => format!("{} (Aggregator)", peer.name()),
            _ => peer.name().into(),
        },
        encode: Some(rate(&report.encode)),
        decode: Some(rate(&report.decode)),
    }];
    rows.extend(report.variants.iter().map(|v| Row {
        name: format!("{} ({})", peer.name(), v.label),
        encode: Some(rate(&v.encode)),
        decode: None,
    }));
    rows
}

fn rate_cell(rate: Option<Rate>) -> String {
    match rate {
        Some(r) => thousands(r.per_second()),
        None => "-".into(),
    }
}

fn mb_cell(rate: Option<Rate>, bytes_per_record: f64) -> String {
    match rate {
        Some(r) => format!("{:.1}", r.per_second() * bytes_per_record / 1e6),
        None => "-".into(),
    }
}
