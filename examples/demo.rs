//! The showcase: produce records with `kinesis-producer`, consume them with a fleet of
//! `kinesis-consumer` workers, crash one worker, split a shard, and check that every record was
//! processed (the code is `kinesis_examples::demo`, which `kinesis demo` runs too).
//!
//! ```sh
//! cargo run --release -p kinesis-examples --example demo
//! ```
//!
//! By default everything runs in this process on `127.0.0.1`: a Kinesis stand-in (ferrokinesis)
//! and a DynamoDB stand-in (dynoxide). With `--aws` it uses the AWS configuration of the
//! environment (credentials, region, and `AWS_ENDPOINT_URL` if set) instead, on a stream named
//! with `--stream` (created if absent; it is split only if `--split` is given, since that changes
//! a real stream and its cost) and a lease table named after `--application`.

use clap::Parser;
use kinesis_examples::{BoxError, demo};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = demo::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The DynamoDB stand-in logs every refused conditional write, which is how leases
                // work: keep it quiet.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,dynoxide=error")),
        )
        .init();
    if !demo::run(args, None).await?.ok() {
        std::process::exit(1);
    }
    Ok(())
}
