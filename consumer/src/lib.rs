//! A consumer for Amazon Kinesis Data Streams: what the Kinesis Client Library (KCL) does, with
//! the KCL's lease table (so an application can move between the two and keep its checkpoints),
//! faster failover, balancing that moves several leases at once without duplicates, and
//! resharding handled parents first.
//!
//! **State of the crate:** the lease table (schema, conditional writes), checkpoints, the lineage
//! rules and the balancing decisions are here and tested; the worker that runs them, polling
//! retrieval and the processor API are being built on top.
//!
//! ```text
//!                 ┌──────────── lease table (DynamoDB, the KCL's schema) ────────────┐
//!                 │ leaseKey  leaseOwner  leaseCounter  checkpoint  parentShardId ... │
//!                 └──▲──────────────▲───────────────▲──────────────────▲──────────────┘
//!          scan every│     renew    │ take / hand   │ checkpoint        │ child leases at
//!          2 s       │     every 4 s│ off / release │ (fenced by the    │ shard end
//!                    │              │               │  counter)         │
//!  ┌─────────────────┴──────────────┴───────────────┴──────────────────┴─────────────┐
//!  │ worker: observations ──► balance (take expired and free leases, steal with a      │
//!  │ (counter first seen       graceful handoff) ──► lineage (a child starts once      │
//!  │  at, by my clock)         every parent lease is at SHARD_END)                     │
//!  └──────────────────────────────────────┬──────────────────────────────────────────┘
//!                                         │ one task per held shard
//!                      GetRecords ──► deaggregate, keep the shard's hash range ──► processor
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

#![forbid(unsafe_code)]

pub mod balance;
pub mod checkpoint;
mod config;
mod error;
mod kinesis;
pub mod lease;
pub mod lease_table;
pub mod lineage;
pub mod metrics;
mod polling;
mod processor;
mod sdk_error;
mod shard;
mod worker;

pub use checkpoint::{Checkpoint, CheckpointError, SequenceNumber};
pub use config::MAX_RECORDS_PER_CALL;
pub use error::{BoxError, Error};
pub use lease::{ItemError, Lease};
pub use lease_table::{BillingMode, LeaseTable, Scan};
pub use lineage::InitialPosition;
pub use processor::{Batch, Checkpointer, Record, ShardProcessor, Start};
pub use worker::{Consumer, ConsumerBuilder, Running};
