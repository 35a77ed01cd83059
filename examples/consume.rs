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

use kinesis_consumer::{
    ApplicationName, Batch, BoxError, Checkpointer, Consumer, InitialPosition, ShardProcessor,
};
use kinesis_examples::{ensure_stream, local_dynamodb, local_kinesis, serve_health};

const USAGE: &str = "usage: consume [--local] [--stream NAME] [--application NAME] \
                     [--health-port N] [--for SECONDS]";

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

struct Args {
    local: bool,
    stream: String,
    application: String,
    port: u16,
    seconds: Option<u64>,
}

fn parse(argv: &[String]) -> Result<Args, BoxError> {
    let mut args = Args {
        local: false,
        stream: "kinesis-rs-consume".to_owned(),
        application: "kinesis-rs-consume".to_owned(),
        port: 8080,
        seconds: None,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--local" {
            args.local = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--stream" => args.stream = value.clone(),
            "--application" => args.application = value.clone(),
            "--health-port" => {
                args.port = value
                    .parse()
                    .map_err(|_| format!("--health-port {value:?} is not a port\n{USAGE}"))?;
            }
            "--for" => {
                args.seconds = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--for {value:?} is not a number\n{USAGE}"))?,
                );
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = parse(&argv)?;
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
