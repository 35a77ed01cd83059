//! The KPL aggregated-record format for Amazon Kinesis Data Streams: encode, decode, hash keys
//! and exact size accounting, byte-compatible with the Kinesis Producer Library (KPL) and the
//! Kinesis Client Library (KCL).
//!
//! Many small user records are packed into one Kinesis record, so that the per-record costs and
//! limits of Kinesis (1,000 records/s per shard, 500 entries per `PutRecords`) stop bounding
//! throughput. The format is:
//!
//! ```text
//! +----------------+-------------------------------+------------------+
//! | magic (4 bytes)| protobuf AggregatedRecord     | MD5 (16 bytes)   |
//! | F3 89 9A C2    | key tables + user records     | of the protobuf  |
//! +----------------+-------------------------------+------------------+
//! ```
//!
//! How data flows through the crate:
//!
//! ```text
//!  producer side                                consumer side
//!
//!  UserRecord ──▶ MaxRecordSize::check          StreamRecord (GetRecords / EFO / Lambda)
//!      │                                              │
//!      ▼                                              ▼
//!  Aggregator::try_push ──(does not fit)──▶ back   deaggregate ──(does not verify)──▶ the record,
//!      │   exact size kept in O(1)                    │                               whole, raw
//!      ▼                                              ▼
//!  Aggregator::finish ──▶ KinesisRecord         DeaggregatedRecord (sequence, subsequence)
//!      (1 record: raw; 2+: aggregate,                 │
//!       outer hash key = first record's)              ▼
//!                                               HashKeyRange::split (records this shard owns)
//! ```
//!
//! The crate is pure: no I/O, no async runtime, no AWS SDK unless the `sdk` feature (conversions
//! from and to `aws-sdk-kinesis` types) or the `lambda` feature (Lambda Kinesis events) is on.
//!
//! Many records read together (a `GetRecords` answer) are split by [`deaggregate_batch`], which
//! verifies the MD5 trailers of several aggregates side by side, in vector registers: the same
//! results as [`deaggregate_explained`] on each, at about three times the checksum throughput.
//!
//! The feature `unstable-internals` exposes the producer's performance parts (`RecordSlab`,
//! `HashKeyCache`, aggregates finished without their MD5 trailer and `digest_aggregates`, which
//! computes many trailers side by side, and the lane digest itself, `md5_digests`) for
//! `kinesis-producer`, `kinesis-consumer` and the benchmarks. They are **unstable**: no stability
//! promise, they may change or go in any release.
//!
//! # Example
//!
//! ```
//! use kinesis_aggregation::{
//!     AggregationLimits, Aggregator, HashKey, MaxRecordSize, StreamRecord, UserRecord, deaggregate,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = MaxRecordSize::DEFAULT;
//! let mut aggregator = Aggregator::new(AggregationLimits::default());
//! let records = [
//!     UserRecord::new("sensor-1", "21.5")?,
//!     UserRecord::new("sensor-2", "19.0")?.with_explicit_hash_key(HashKey::parse("42")?),
//!     UserRecord::new("sensor-1", "21.7")?,
//! ];
//! for record in records {
//!     limit.check(&record)?;
//!     // Three small records fit in one aggregate; one that did not would be handed back
//!     // (`PushError::into_record`) to go into the next aggregate.
//!     aggregator.try_push(record)?;
//! }
//! let predicted = aggregator.size();
//! let kinesis_record = aggregator.finish().ok_or("three records were added")?;
//! assert_eq!(kinesis_record.size(), predicted);
//! assert_eq!(kinesis_record.explicit_hash_key, Some(HashKey::from_partition_key("sensor-1")));
//!
//! // ... PutRecords, then GetRecords on the consumer side ...
//! let read = StreamRecord::new(
//!     "49590338271490256608559692538361571095921575989136588898",
//!     kinesis_record.partition_key,
//!     kinesis_record.data,
//! );
//! let users = deaggregate(read);
//! assert_eq!(users.len(), 3);
//! assert_eq!(&*users[1].partition_key, "sensor-2");
//! assert_eq!(users[1].explicit_hash_key, Some(HashKey::new(42)));
//! assert_eq!(users[2].sub_sequence_number, 2);
//! assert_eq!(&users[2].data[..], b"21.7");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregator;
mod deaggregator;
mod digest;
mod error;
mod hash_key;
mod hash_range;
mod proto;
mod record;

#[cfg(test)]
mod proptests;

#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "sdk")]
mod sdk;

pub use aggregator::{
    AGGREGATE_PARTITION_KEY, AggregationLimits, Aggregator, KPL_DEFAULT_AGGREGATE_MAX_BYTES,
    KinesisRecord, PushError, Refusal,
};
#[cfg(feature = "unstable-internals")]
pub use aggregator::{Finished, UndigestedAggregate, digest_aggregates};
/// The byte buffer of records' data (from the `bytes` crate), re-exported for the signatures
/// that use it.
pub use bytes::Bytes;
pub use deaggregator::{
    DeaggregateBatch, DeaggregatedRecord, Deaggregation, PassThrough, StreamRecord, deaggregate,
    deaggregate_batch, deaggregate_explained, has_aggregate_magic,
};
#[cfg(feature = "unstable-internals")]
pub use digest::md5_digests;
pub use error::{Error, HashKeyProblem};
pub use hash_key::HashKey;
#[cfg(feature = "unstable-internals")]
pub use hash_key::HashKeyCache;
pub use hash_range::HashKeyRange;
#[cfg(feature = "unstable-internals")]
pub use record::RecordSlab;
pub use record::{
    DEFAULT_MAX_RECORD_SIZE, LARGEST_MAX_RECORD_SIZE, MAX_PARTITION_KEY_CHARS, MaxRecordSize,
    UserRecord, validate_partition_key,
};

/// The four bytes every aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 trailer.
pub const MD5_LEN: usize = 16;

/// Bytes an aggregate adds around its protobuf: magic plus MD5 trailer.
pub const OVERHEAD: usize = MAGIC.len() + MD5_LEN;

/// The README's code blocks, compiled and run as doc tests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
