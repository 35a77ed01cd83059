//! A consumer for Amazon Kinesis Data Streams: what the Kinesis Client Library (KCL) does, with
//! the KCL's lease table (so an application can move between the two and keep its checkpoints),
//! faster failover, balancing that moves several leases at once without duplicates, and
//! resharding handled parents first.
//!
//! Retrieval is polling (`GetRecords`) or enhanced fan-out (`SubscribeToShard`, see
//! [`Retrieval`]), behind the same processor, lease, checkpoint and lineage code.
//!
//! ```text
//!                 ┌──────────── lease table (DynamoDB, the KCL's schema) ────────────┐
//!                 │ leaseKey  leaseOwner  leaseCounter  checkpoint  parentShardId ... │
//!                 └──▲──────────────▲───────────────▲──────────────────▲──────────────┘
//!          scan every│     renew    │ take / hand   │ checkpoint        │ child leases at
//!          2 s       │     every 4 s│ off / release │ (fenced by the    │ shard end
//!                    │              │               │  counter)         │
//!  ┌─────────────────┴──────────────┴───────────────┴──────────────────┴─────────────┐
//!  │ worker: coordination (a pure state machine, one local state per lease: taking,    │
//!  │ asking, awaiting, running, releasing) ◄── observations (counter first seen, by my │
//!  │ clock), balance (take expired leases at once, free ones up to the fair share,     │
//!  │ ask for the rest by graceful handoff), lineage (a child starts once every parent  │
//!  │ lease is at SHARD_END); the worker's task only performs what it decides           │
//!  └──────────────────────────────────────┬──────────────────────────────────────────┘
//!                                         │ one task per held shard
//!      GetRecords or SubscribeToShard ──► deaggregate, keep the shard's hash range ──► processor
//! ```
//!
//! ## Leases without synchronized clocks
//!
//! Every worker is independent; there is no leader to elect or to lose. A lease's
//! `leaseCounter` is raised by every renewal, take and checkpoint, and every write is
//! conditional on the counter the writer last saw. Another worker judges a lease expired when
//! the counter it observes has not changed for the failover time **by its own clock**, counted
//! from when it first saw that value, so clocks need not agree. The holder stops processing
//! before that can happen: it trusts a lease only until the failover time (less a margin) after
//! it *sent* its last successful renewal, which is no later than any observer's first sight of
//! the new counter.
//!
//! One processor runs a shard at a time, every started processor is told why it stops, and a
//! dead worker's shards run elsewhere within the failover time plus a scan interval: the README's
//! "How the leases work" says how, and a deterministic simulation in the test suite checks it
//! over thousands of seeded schedules of kills, pauses, joins, shutdowns, panics and resharding.

//! ## Use
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_consumer::{ApplicationName, Batch, BoxError, Checkpointer, Consumer, ShardProcessor};
//!
//! struct Printer;
//!
//! impl ShardProcessor for Printer {
//!     async fn process(&mut self, batch: &Batch, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
//!         for record in &batch.records {
//!             println!("{} {} bytes", record.partition_key, record.data.len());
//!         }
//!         // An error fails the batch: by default it is tried again, then the processor is
//!         // restarted from the last checkpoint (see `FailurePolicy`).
//!         checkpointer.checkpoint().await?;
//!         Ok(())
//!     }
//!
//!     async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
//!         checkpointer.checkpoint_shard_end().await?;
//!         Ok(())
//!     }
//! }
//!
//! let config = aws_config::load_from_env().await;
//! let worker = Consumer::builder(
//!     aws_sdk_kinesis::Client::new(&config),
//!     aws_sdk_dynamodb::Client::new(&config),
//!     "my-stream",
//!     ApplicationName::new("my-application")?, // names the lease table
//!     |_shard_id: &str| Printer,
//! )
//! .build()?
//! .start() // returns once the worker runs, or an error naming what is wrong
//! .await?;
//! // ... when the process is asked to stop:
//! worker.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Metrics are recorded through the [`metrics`](https://docs.rs/metrics) facade under the names
//! in [`metrics`]; spans (with `stream`, `lease_owner` and `shard_id`) and events through
//! `tracing`.
//!
//! ## Features
//!
//! `unstable-internals` makes the lease, lease-table, balance and lineage modules public (and the
//! simulation's lease table model), for the tests outside this crate. They are **unstable**: no
//! stability promise, they may change or go in any release.

#![forbid(unsafe_code)]

/// Declares a module public with the `unstable-internals` feature and private without it (its
/// items then reachable only through the crate root's re-exports).
macro_rules! internal_module {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[cfg(feature = "unstable-internals")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "unstable-internals"))]
        #[allow(unreachable_pub, dead_code)]
        mod $name;
    };
}

internal_module!(balance);
pub mod checkpoint;
mod config;
mod coordination;
mod error;
mod failure;
mod fanout;
mod kinesis;
internal_module!(lease);
internal_module!(lease_table);
internal_module!(lineage);
pub mod metrics;
mod polling;
mod processor;
mod retrieval;
mod sdk_error;
mod shard;
#[cfg(any(test, feature = "unstable-internals"))]
#[doc(hidden)]
pub mod simulation;
mod status;
mod worker;

/// The byte buffer of records' data (from the `bytes` crate), re-exported for the signatures that
/// use it.
pub use bytes::Bytes;
pub use checkpoint::{Checkpoint, CheckpointError, Position, SequenceNumber};
pub use config::{
    ApplicationName, DEFAULT_MAX_IDLE, FanOut, MAX_CONCURRENT_READS, MAX_RECORDS_PER_CALL,
    Retrieval,
};
pub use error::{BoxError, Error};
pub use failure::{
    DeadLetter, DeadLetterHandler, FailureCause, FailurePolicy, HandlerFuture, Then,
};
/// The hash key a record was routed by (from `kinesis-aggregation`), in [`Record`].
pub use kinesis_aggregation::HashKey;
pub use kinesis_calls::{ErrorKind, StreamRef};
#[cfg(feature = "unstable-internals")]
pub use lease::ItemError;
pub use lease::Lease;
pub use lease_table::BillingMode;
#[cfg(feature = "unstable-internals")]
pub use lease_table::{LeaseTable, Scan};
pub use lineage::InitialPosition;
pub use processor::{Batch, Checkpointer, Record, ShardProcessor, Start};
pub use status::{Health, Probe, ProcessorState, RecentError, ShardStatus, Status};
pub use worker::{Consumer, ConsumerBuilder, Running};

/// The README's code blocks, compiled and run as doc tests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
