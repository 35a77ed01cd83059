//! A consumer worker with Kubernetes probes: it reads a stream with `kinesis-consumer`, counts the
//! records, and serves `/livez`, `/readyz` and `/status` on a port (see
//! `kinesis_examples::serve_health`), until Ctrl-C or SIGTERM, when it shuts down gracefully.
//!
//! ```text
//! # Against an embedded Kinesis and DynamoDB stand-in on 127.0.0.1 (a 2-shard stream with a few
//! # records is made there), for 20 s:
//! cargo run -p kinesis-examples --example consume -- --local --for 20
//! # Against AWS (the usual environment: credentials, region, AWS_ENDPOINT_URL):
//! cargo run -p kinesis-examples --example consume -- --stream NAME --application NAME
//! # Meanwhile:
//! curl -i localhost:8080/readyz; curl localhost:8080/status
//! ```
//!
//! Flags: `--stream NAME`, `--application NAME` (names the lease table), `--health-port N`
//! (default 8080), `--for SECONDS` (stop after this long), `--local`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, InitialPosition, ShardProcessor,
};
use kinesis_examples::{ensure_stream, local_dynamodb, local_kinesis, serve_health};

struct Counter {
    records: Arc<AtomicU64>,
}

impl ShardProcessor for Counter {
    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        self.records
            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        // A failed checkpoint fails the batch: the failure policy tries it again.
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        checkpointer.checkpoint_shard_end().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "consume",
    about = "A consumer worker counting records, with /livez, /readyz and /status probes",
    args_override_self = true
)]
struct Args {
    /// Run against embedded Kinesis and DynamoDB stand-ins on 127.0.0.1 (a 2-shard stream with a
    /// few records is made there).
    #[arg(long)]
    local: bool,
    /// The stream.
    #[arg(long, value_name = "NAME", default_value = "kinesis-rs-consume")]
    stream: String,
    /// The application (names the lease table).
    #[arg(long, value_name = "NAME", default_value = "kinesis-rs-consume")]
    application: String,
    /// The probes' port on 127.0.0.1.
    #[arg(long = "health-port", value_name = "N", default_value_t = 8080)]
    port: u16,
    /// Stop after this many seconds.
    #[arg(long = "for", value_name = "SECONDS")]
    seconds: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let (kinesis, dynamodb) = if args.local {
        let kinesis = local_kinesis().await?;
        ensure_stream(&kinesis, &args.stream, 2).await?;
        for i in 0..100 {
            kinesis
                .put_record()
                .stream_name(&args.stream)
                .partition_key(format!("k{i}"))
                .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                    "record {i}"
                )))
                .send()
                .await?;
        }
        (kinesis, local_dynamodb().await?)
    } else {
        let config = aws_config::load_from_env().await;
        (
            aws_sdk_kinesis::Client::new(&config),
            aws_sdk_dynamodb::Client::new(&config),
        )
    };
    let records = Arc::new(AtomicU64::new(0));
    let counted = records.clone();
    // `start` returns once the worker runs, or an error naming what is wrong (a missing stream,
    // refused credentials, ...).
    let running = Consumer::builder(
        kinesis,
        dynamodb,
        args.stream.clone(),
        ApplicationName::new(args.application.clone())?,
        move |_: &str| Counter {
            records: counted.clone(),
        },
    )
    .initial_position(InitialPosition::TrimHorizon)
    .build()?
    .start()
    .await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!(
        "worker {} reads {}; probes on http://{}/livez, /readyz, /status",
        running.worker_id(),
        args.stream,
        listener.local_addr()?
    );
    tokio::spawn(serve_health(listener, running.probe()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let limit = tokio::time::sleep(Duration::from_secs(args.seconds.unwrap_or(u64::MAX / 4)));
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tokio::pin!(limit);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            () = &mut limit => break,
            _ = tick.tick() => {
                let health = running.health();
                println!(
                    "{} records; live {}, ready {}{}",
                    records.load(Ordering::Relaxed),
                    health.live,
                    health.ready,
                    if health.problems.is_empty() { String::new() } else { format!(": {:?}", health.problems) }
                );
            }
        }
    }
    running.shutdown().await?;
    println!(
        "shut down after {} records",
        records.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("consume").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_flags_and_refusals() {
        Args::command().debug_assert();
        let args = parse(&[]).unwrap();
        assert_eq!(
            (
                args.local,
                args.stream.as_str(),
                args.application.as_str(),
                args.port,
                args.seconds
            ),
            (
                false,
                "kinesis-rs-consume",
                "kinesis-rs-consume",
                8080,
                None
            )
        );
        let args = parse(&["--local", "--for", "20", "--health-port", "9000"]).unwrap();
        assert_eq!(
            (args.local, args.seconds, args.port),
            (true, Some(20), 9000)
        );
        for (flag, value) in [("--health-port", "65536"), ("--for", "soon")] {
            let error = parse(&[flag, value]).expect_err(flag);
            assert!(error.to_string().contains(flag), "{error}");
        }
    }
}
