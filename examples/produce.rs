//! Produces records to a Kinesis stream with `kinesis-producer`: lines from stdin, or generated
//! records, then prints where they went.
//!
//! ```sh
//! # A self-contained run against an embedded Kinesis stand-in on 127.0.0.1:
//! cargo run --release -p kinesis-examples --example produce -- --local --generate 200000
//! # Lines from stdin ("key<TAB>payload", or just a payload), to a real stream:
//! printf 'user-1\thello\nuser-2\tworld\n' | cargo run -p kinesis-examples --example produce -- --stream my-stream
//! ```
//!
//! Without `--local` the AWS configuration comes from the environment as for any SDK program
//! (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_KINESIS` for a stand-in).

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Parser;
use kinesis_producer::{Error, Failure, Producer, Receipt, UserRecord};
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "produce",
    about = "Put lines from stdin (\"key<TAB>payload\", or just a payload), or generated records, \
             with kinesis-producer, then print where they went",
    args_override_self = true
)]
struct Args {
    /// Stream to write to.
    #[arg(long, value_name = "NAME", default_value = "produce-demo")]
    stream: String,
    /// Start an embedded Kinesis stand-in on 127.0.0.1 and create the stream there.
    #[arg(long)]
    local: bool,
    /// Shards of the stream created with --local.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
    shards: i32,
    /// Put N generated records instead of reading stdin.
    #[arg(long, value_name = "N")]
    generate: Option<u64>,
    /// Payload size of generated records.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    size: usize,
    /// Distinct partition keys of generated records (1 or more).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
}

/// Outcome counts, filled by a task that awaits the receipts as they come.
#[derive(Default)]
struct Tally {
    delivered: u64,
    retried: u64,
    per_shard: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
}

fn failure_kind(failure: &Failure) -> String {
    match &failure.error {
        Error::Expired { .. } => "expired".into(),
        Error::Throttled { .. } => "throttled".into(),
        Error::Rejected { code, .. } => format!("rejected ({code})"),
        other => other.to_string(),
    }
}

#[derive(Default)]
struct Counts {
    put: u64,
    refused: u64,
}

/// Puts one record (waiting while the producer is full) and hands its receipt to the tally.
async fn submit(
    producer: &Producer,
    receipts: &tokio::sync::mpsc::UnboundedSender<Receipt>,
    record: UserRecord,
    counts: &mut Counts,
) {
    match producer.put(record).await {
        Ok(receipt) => {
            counts.put += 1;
            let _ = receipts.send(receipt);
        }
        Err(failure) => {
            counts.refused += 1;
            eprintln!("refused: {failure}");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), kinesis_examples::BoxError> {
    let args = Args::parse();
    let client = if args.local {
        let client = kinesis_examples::local_kinesis().await?;
        kinesis_examples::ensure_stream(&client, &args.stream, args.shards).await?;
        client
    } else {
        aws_sdk_kinesis::Client::new(&aws_config::load_from_env().await)
    };
    let producer = Producer::builder(client, args.stream.as_str())
        .build()
        .await?;

    // Receipts go to a task that tallies them, so that `put` can keep going.
    let (receipts_tx, mut receipts_rx) = tokio::sync::mpsc::unbounded_channel::<Receipt>();
    let tally: JoinHandle<Tally> = tokio::spawn(async move {
        let mut tally = Tally::default();
        while let Some(receipt) = receipts_rx.recv().await {
            match receipt.await {
                Ok(delivery) => {
                    tally.delivered += 1;
                    tally.retried += u64::from(delivery.attempts().len() > 1);
                    *tally
                        .per_shard
                        .entry(delivery.shard_id().to_owned())
                        .or_default() += 1;
                }
                Err(failure) => *tally.failed.entry(failure_kind(&failure)).or_default() += 1,
            }
        }
        tally
    });

    let started = Instant::now();
    let mut counts = Counts::default();
    match args.generate {
        Some(count) => {
            let payload = vec![b'x'; args.size];
            for i in 0..count {
                let record = UserRecord::new(format!("key-{}", i % args.keys), payload.clone())?;
                submit(&producer, &receipts_tx, record, &mut counts).await;
            }
        }
        None => {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            let mut n = 0u64;
            while let Some(line) = lines.next_line().await? {
                let (key, payload) = match line.split_once('\t') {
                    Some((key, payload)) if !key.is_empty() => (key.to_owned(), payload.to_owned()),
                    _ => (format!("line-{n}"), line),
                };
                n += 1;
                match UserRecord::new(key, payload) {
                    Ok(record) => submit(&producer, &receipts_tx, record, &mut counts).await,
                    Err(error) => {
                        counts.refused += 1;
                        eprintln!("line {n}: {error}");
                    }
                }
            }
        }
    }
    let Counts { put, refused } = counts;
    let admitted = started.elapsed();
    drop(receipts_tx);
    producer.shutdown().await;
    let tally = tally.await?;
    let elapsed = started.elapsed();

    println!(
        "put {put} records in {:.2?} (admission), all resolved in {:.2?}: {:.0} records/s",
        admitted,
        elapsed,
        put as f64 / elapsed.as_secs_f64()
    );
    println!(
        "delivered {} ({} needed retries), refused {refused}",
        tally.delivered, tally.retried
    );
    for (shard, count) in &tally.per_shard {
        println!("  {shard}: {count}");
    }
    for (kind, count) in &tally.failed {
        println!("  failed, {kind}: {count}");
    }
    if !tally.failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("produce").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_flags_and_refusals() {
        Args::command().debug_assert();
        let args = parse(&[]).unwrap();
        assert_eq!(
            (
                args.stream.as_str(),
                args.local,
                args.shards,
                args.generate,
                args.size,
                args.keys
            ),
            ("produce-demo", false, 4, None, 100, 1000)
        );
        let args = parse(&["--local", "--generate", "200000", "--size", "0"]).unwrap();
        assert!(args.local);
        assert_eq!((args.generate, args.size), (Some(200_000), 0));
        for (flag, value) in [
            ("--keys", "0"),
            ("--shards", "0"),
            ("--shards", "3000000000"),
            ("--generate", "many"),
            ("--size", "big"),
        ] {
            let error = parse(&[flag, value]).expect_err(flag);
            assert!(error.to_string().contains(flag), "{error}");
        }
    }
}
