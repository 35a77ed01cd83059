//! `consumer-worker`: one `kinesis-consumer` worker in its own process; see
//! [`kinesis_integration_tests::consumer_worker`] for its arguments and what it prints.

#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    kinesis_integration_tests::consumer_worker::run(std::env::args().skip(1)).await
}
