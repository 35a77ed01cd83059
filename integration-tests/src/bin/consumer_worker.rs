//! `consumer-worker`: one `kinesis-consumer` worker in its own process; see
//! [`kinesis_integration_tests::consumer_worker`] for its arguments and what it prints.

#![forbid(unsafe_code)]

use clap::Parser;
use kinesis_integration_tests::consumer_worker::{self, WorkerArgs};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    consumer_worker::run(WorkerArgs::parse()).await
}
