//! An async producer for Amazon Kinesis Data Streams: what the Kinesis Producer Library (KPL)
//! does, in-process, with receipts per record, bounded memory and no loss across resharding.
//!
//! ```text
//!  put(record) ──► admission ──► route by hash key ──► aggregate per predicted shard
//!  (waits while    (records and    (shard map from      (flushed on size, count or
//!   bounds full)    bytes bounds)   ListShards)          linger deadline)
//!                                                               │
//!                                                               ▼
//!  receipt ◄── judge each entry ◄── PutRecords call ◄── per-shard adaptive limiter
//!  (shard, seq,  (written where a     (≤ 500 entries,     (records/s and bytes/s,
//!   subseq,       consumer reads it?   ≤ max bytes, ≤ N     lowered by throttling,
//!   attempts)     retry? resend?)      in flight)           raised by successes)
//!                      │
//!                      └─► retry with jittered backoff until the TTL, or fail with the record
//! ```
//!
//! - **Two stages.** [`Producer::put`] waits for room under the backpressure bounds and returns
//!   a [`Receipt`]; the receipt resolves to a [`Delivery`] (shard, sequence number, subsequence
//!   number inside the aggregate, every attempt) or a [`Failure`] that hands the record back.
//! - **Aggregation per predicted shard**, so that an aggregate's user records all belong to the
//!   shard it lands on.
//! - **Retries per entry**, classified in one place: throttling and transient errors are retried
//!   with jittered exponential backoff until the record's TTL; errors retrying cannot fix fail at
//!   once.
//! - **Resharding.** An aggregate that lands on a shard whose hash key range does not hold all of
//!   its user records (the map was stale) would be dropped whole by a KCL-style consumer, so all
//!   of its user records are sent again on the right shards and only that second write is
//!   reported. The first write stays in the stream: a consumer that does not filter by range sees
//!   those records twice, and `kinesis-consumer` (which skips only the records outside the
//!   shard's range) sees the in-range ones twice. This, and calls that time out after being
//!   written, are the sources of duplicates.
//! - **Ordering** on request ([`Ordering::PerPartitionKey`]).
//!
//! Metrics are recorded through the [`metrics`](https://docs.rs/metrics) facade under the names
//! in [`metrics`]; spans and events through `tracing`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_producer::{Producer, UserRecord};
//!
//! let config = aws_config::load_from_env().await;
//! let client = aws_sdk_kinesis::Client::new(&config);
//! let producer = Producer::builder(client, "my-stream").build().await?;
//! let mut receipts = Vec::new();
//! for i in 0..1000 {
//!     let record = UserRecord::new(format!("key-{}", i % 10), format!("event {i}"))?;
//!     receipts.push(producer.put(record).await?);
//! }
//! for receipt in receipts {
//!     match receipt.await {
//!         Ok(delivery) => println!("{} {}", delivery.shard_id(), delivery.sequence_number()),
//!         Err(failure) => eprintln!("not delivered: {failure}"),
//!     }
//! }
//! producer.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
// A `Failure` hands the record back by value; it is the rare path, and boxing it would make every
// caller unbox it.
#![allow(clippy::result_large_err)]

mod body;
mod cbor;
mod config;
mod error;
mod kinesis;
mod limiter;
pub mod metrics;
mod pipeline;
mod producer;
mod receipt;
#[cfg(test)]
mod receipt_stress;
mod retry;
mod shard_map;

/// The byte buffer of records' data (from the `bytes` crate), re-exported for the signatures that
/// use it.
pub use bytes::Bytes;
pub use config::{
    MAX_BYTES_PER_CALL, MAX_ENTRIES_PER_CALL, MAX_RATE_LIMIT_PERCENT, Ordering, RecordSizeLimit,
    SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND, StreamRef, WireFormat,
};
pub use error::{Bound, BoxError, Error, ErrorKind};
/// What [`UserRecord`], [`HashKey`] and [`MaxRecordSize`] reject (from `kinesis-aggregation`),
/// carried by [`Error::InvalidRecord`].
pub use kinesis_aggregation::Error as RecordError;
pub use kinesis_aggregation::{HashKey, MaxRecordSize, UserRecord};
pub use producer::{Outstanding, Producer, ProducerBuilder};
pub use receipt::{Attempt, AttemptError, Delivery, Failure, InStream, Receipt, Wrote};

/// The README's code blocks, compiled and run as doc tests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
