//! `consumer-worker`: one `kinesis-consumer` worker in its own process, for the fleet tests (kill
//! -9, SIGSTOP, balancing, graceful shutdown). It reports on stdout, one event per line:
//!
//! ```text
//! START <shard> <checkpoint>          the processor was initialized
//! REC <shard> <seq> <subseq> <data>   a record was processed (data is UTF-8)
//! CKPT <shard> ok|lost|error          a checkpoint after a batch
//! LOST <shard>                        lease lost
//! END <shard>                         shard ended and SHARD_END checkpointed
//! STOP <shard>                        shutdown or handoff asked; checkpointed
//! EXIT                                the worker shut down (after SIGTERM or stdin closed)
//! ```
//!
//! Usage: `consumer-worker --kinesis URL --dynamodb URL --stream S --application A --worker-id W
//! [--failover-ms N] [--scan-ms N] [--renew-ms N]`. SIGTERM, or stdin reaching its end, shuts the
//! worker down gracefully.

#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use kinesis_consumer::{
    Batch, Checkpointer, Consumer, Error as ConsumerError, InitialPosition, ShardProcessor, Start,
};
use kinesis_integration_tests::{ClientOptions, dynamodb_client, kinesis_client};
use tokio::io::AsyncReadExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Printer {
    shard: String,
}

impl ShardProcessor for Printer {
    async fn initialize(&mut self, start: &Start) {
        say(format!("START {} {}", self.shard, start.checkpoint));
    }

    async fn process(&mut self, batch: Batch, checkpointer: &mut Checkpointer) {
        let mut lines = String::new();
        for r in &batch.records {
            lines.push_str(&format!(
                "REC {} {} {} {}\n",
                self.shard,
                r.sequence_number,
                r.sub_sequence_number,
                String::from_utf8_lossy(&r.data)
            ));
        }
        {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(lines.as_bytes());
            let _ = out.flush();
        }
        let outcome = match checkpointer.checkpoint().await {
            Ok(()) => "ok",
            Err(ConsumerError::LeaseLost { .. }) => "lost",
            Err(_) => "error",
        };
        say(format!("CKPT {} {outcome}", self.shard));
    }

    async fn lease_lost(&mut self) {
        say(format!("LOST {}", self.shard));
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        if checkpointer.checkpoint_shard_end().await.is_ok() {
            say(format!("END {}", self.shard));
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
        say(format!("STOP {}", self.shard));
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (mut kinesis, mut dynamodb, mut stream, mut application, mut worker) =
        (None, None, None, None, None);
    let (mut failover, mut scan, mut renew) = (10_000u64, 2_000u64, 4_000u64);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--kinesis" => kinesis = Some(value),
            "--dynamodb" => dynamodb = Some(value),
            "--stream" => stream = Some(value),
            "--application" => application = Some(value),
            "--worker-id" => worker = Some(value),
            "--failover-ms" => failover = value.parse()?,
            "--scan-ms" => scan = value.parse()?,
            "--renew-ms" => renew = value.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("--{name} is required"));
    let options = ClientOptions::new();
    let kinesis = kinesis_client(&need(kinesis, "kinesis")?, &options);
    let dynamodb = dynamodb_client(&need(dynamodb, "dynamodb")?, &options);
    let running = Consumer::builder(
        kinesis,
        dynamodb,
        need(stream, "stream")?,
        need(application, "application")?,
        |shard: &str| Printer {
            shard: shard.to_owned(),
        },
    )
    .worker_id(need(worker, "worker-id")?)
    .initial_position(InitialPosition::TrimHorizon)
    .failover_time(Duration::from_millis(failover))
    .scan_interval(Duration::from_millis(scan))
    .renew_interval(Duration::from_millis(renew))
    .build()?
    .spawn();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            _ = term.recv() => break,
            read = stdin.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { break },
        }
    }
    running.shutdown().await?;
    say("EXIT".to_owned());
    Ok(())
}
