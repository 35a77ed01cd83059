//! Local AWS harness for the kinesis-rs integration tests: Kinesis and DynamoDB stand-ins started
//! by the tests themselves on `127.0.0.1`, SDK clients pointed at them, and deterministic fault
//! injection at the HTTP layer, so the real `aws-sdk-kinesis` / `aws-sdk-dynamodb` error parsing
//! and retry classification run against throttling, 5xx, slow answers and dropped connections.
//!
//! How a request flows (faults are decided by one seeded [`FaultController`] per front-end):
//!
//! ```text
//!  test code
//!     │  aws_sdk_kinesis::Client / aws_sdk_dynamodb::Client   (sdk: signed, static credentials)
//!     ▼
//!  ┌──────────────────────────────┐        ┌───────────────────────────────────────────┐
//!  │ Ferrokinesis (in-process)    │        │ FaultProxy (127.0.0.1:0, hyper client)    │
//!  │  accept loop ─▶ FaultLayer   │        │  accept loop ─▶ fault engine ─▶ forward   │
//!  │   ─▶ ferrokinesis Router     │        └───────────────┬───────────────────────────┘
//!  └──────────────────────────────┘                        ▼
//!          ▲                              Dynoxide (in-process) │ DynamoDbLocal (java child)
//!          │ rules, counts, history       KinesisLocal (node child) │ Ferrokinesis
//!  Arc<FaultController> ── seeded ChaCha RNG: the same seed and calls give the same faults
//! ```
//!
//! Child processes (DynamoDB Local, kinesis-local) run under a [`watchdog`] that stops them when
//! their handle is dropped and also when the test process dies without running destructors.
//!
//! For benchmarks that must count the client process's CPU alone, [`ferrokinesis_process`] runs
//! ferrokinesis in a child process of its own (the `ferrokinesis-server` bin), and [`cpu_time`]
//! reads a process's user and system CPU time ([`resident_memory`]: its RSS).
//! [`consumed_capacity`] is a proxy in front of a DynamoDB stand-in that asks DynamoDB for the
//! capacity each call consumed and sums it.
//! What the benchmark binaries share (that child stand-in, the receipt tally, the metrics
//! sampler, the stream read back, their arguments) is in [`bench`](mod@bench).
//!
//! # Example
//!
//! ```no_run
//! use kinesis_integration_tests::{ClientOptions, Fault, FaultRule, Ferrokinesis, ServiceError};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let kinesis = Ferrokinesis::start().await?;
//! kinesis.faults().add(
//!     FaultRule::on("PutRecords", Fault::Error(ServiceError::internal_failure())).first(1),
//! );
//! let client = kinesis.client_with(&ClientOptions::new().without_retries());
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod bench;
pub mod consumed_capacity;
pub mod consumer_worker;
pub mod cpu_time;
pub mod dynamodb;
pub mod embedded_kinesis;
pub mod error;
pub mod fault;
pub mod ferrokinesis_process;
pub mod fixtures;
pub mod fleet;
pub mod kinesis_local;
pub mod metrics_capture;
pub mod peers;
pub mod proxy;
pub mod resident_memory;
pub mod sdk;
mod serve;
pub mod tools;
pub mod watchdog;

pub use consumed_capacity::CapacityProxy;
pub use dynamodb::{DynamoBackend, DynamoDb, DynamoDbLocal, Dynoxide};
pub use embedded_kinesis::{Ferrokinesis, FerrokinesisOptions};
pub use error::HarnessError;
pub use fault::layer::{FaultLayer, FaultService};
pub use fault::{
    ConnectionDropped, DropPoint, EntryErrorCode, EntryFailureMode, EntryFailures, Fault,
    FaultController, FaultKind, FaultRule, FaultStats, Injected, Injection, Latency, RuleId,
    ServiceError,
};
pub use kinesis_local::KinesisLocal;
pub use proxy::FaultProxy;
pub use sdk::{ClientOptions, dynamodb_client, kinesis_client, sdk_config};
