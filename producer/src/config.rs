//! The producer's settings, with the KPL's defaults.

use std::{num::NonZeroUsize, time::Duration};

use kinesis_aggregation::{AggregationLimits, LARGEST_MAX_RECORD_SIZE, MaxRecordSize};

use crate::error::Error;

/// Most entries a `PutRecords` call may carry (service limit).
pub const MAX_ENTRIES_PER_CALL: usize = 500;
/// Most bytes (partition keys + data) a `PutRecords` call may carry (service limit).
pub const MAX_BYTES_PER_CALL: usize = 10 * 1024 * 1024;
/// The highest `rate_limit_percent`: 10,000 times the shard limits, which leaves the pacing to the
/// service (for stand-ins, or streams whose limits are not Kinesis's).
pub const MAX_RATE_LIMIT_PERCENT: u32 = 1_000_000;
/// A shard's write limit in records per second (service limit).
pub const SHARD_RECORDS_PER_SECOND: f64 = 1000.0;
/// A shard's write limit in bytes per second (service limit).
pub const SHARD_BYTES_PER_SECOND: f64 = 1024.0 * 1024.0;

/// The stream a producer writes to: by name or by ARN (for cross-account access). The same type
/// names the stream of a `kinesis-consumer` worker.
pub use kinesis_calls::StreamRef;

/// How the producer orders writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ordering {
    /// Maximum throughput: several calls may be in flight per shard and retried records may land
    /// after later ones (as with the KPL).
    #[default]
    Throughput,
    /// Records with the same partition key (or explicit hash key) land in the order they were
    /// put, across retries and throttling: at most one `PutRecords` call is in flight per shard,
    /// it carries at most one entry for that shard, and a failed entry is retried before anything
    /// newer for its shard. Per-shard throughput is then one entry (one aggregate, up to
    /// the aggregate size) per round trip, so keep aggregation on with this mode.
    ///
    /// While the stream is being resharded, a record resent because it landed on a shard whose
    /// range does not contain it can still land after newer records of its key.
    PerPartitionKey,
}

/// How `PutRecords` requests are encoded, on a client of the service's own protocol
/// (`awsJson1_1`; a client set to another protocol gets the SDK's serialization either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireFormat {
    /// JSON (`application/x-amz-json-1.1`), each entry's data in base64: what the SDK sends.
    Json,
    /// CBOR (`application/x-amz-cbor-1.1`), each entry's data as bytes: a body about a quarter
    /// smaller for the same entries, so less to hash (SigV4) and nothing to base64-encode. Kinesis
    /// takes it (the AWS SDK for Java sends it by default) and answers in CBOR, which the producer
    /// reads as the JSON the SDK deserializes. An endpoint between the client and Kinesis (a
    /// proxy, a stand-in) must take CBOR too.
    #[default]
    Cbor,
}

/// Where the producer gets the largest record it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordSizeLimit {
    /// A fixed limit (1 MiB by default, as Kinesis and the KPL's `MaxUserRecordSize`).
    Fixed(MaxRecordSize),
    /// Read the stream's `MaxRecordSizeInKiB` with `DescribeStreamSummary` when the producer is
    /// built (1 MiB when the stream does not report one).
    FromStream,
}

/// Every setting, validated. Built by [`ProducerBuilder`](crate::ProducerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) aggregation: Option<AggregationLimits>,
    pub(crate) wire_format: WireFormat,
    pub(crate) max_entries_per_call: usize,
    pub(crate) max_bytes_per_call: usize,
    pub(crate) shard_flush_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) record_ttl: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) rate_limit_percent: u32,
    pub(crate) fail_if_throttled: bool,
    pub(crate) record_size_limit: RecordSizeLimit,
    pub(crate) max_outstanding_records: usize,
    pub(crate) max_outstanding_bytes: usize,
    pub(crate) ordering: Ordering,
    pub(crate) shard_map_refresh: Duration,
    pub(crate) retry_min_delay: Duration,
    pub(crate) retry_max_delay: Duration,
    pub(crate) list_shards_page_size: i32,
    /// A call going out takes every shard's aggregate under construction with it.
    pub(crate) fill_calls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            aggregation: Some(aggregation_defaults()),
            wire_format: WireFormat::Cbor,
            max_entries_per_call: MAX_ENTRIES_PER_CALL,
            max_bytes_per_call: 5 * 1024 * 1024,
            shard_flush_bytes: 256 * 1024,
            linger: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            request_timeout: Duration::from_secs(6),
            max_in_flight: 24,
            rate_limit_percent: 150,
            fail_if_throttled: false,
            record_size_limit: RecordSizeLimit::Fixed(MaxRecordSize::DEFAULT),
            max_outstanding_records: 200_000,
            max_outstanding_bytes: 128 * 1024 * 1024,
            ordering: Ordering::Throughput,
            shard_map_refresh: Duration::from_secs(60),
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(5),
            list_shards_page_size: crate::kinesis::LIST_SHARDS_PAGE,
            fill_calls: true,
        }
    }
}

/// The KPL's aggregation defaults, with room for records and aggregates up to 10 MiB: the stream's
/// own maximum record size is set when the producer is built and known.
pub(crate) fn aggregation_defaults() -> AggregationLimits {
    AggregationLimits::default()
        .with_max_record_size(MaxRecordSize::LARGEST)
        .unwrap_or_default()
}

/// Limits that hold any aggregate the producer may have built: for encoding one again.
pub(crate) fn any_aggregate() -> AggregationLimits {
    aggregation_defaults()
        .with_max_bytes(LARGEST_MAX_RECORD_SIZE)
        .unwrap_or_default()
        .with_max_records(NonZeroUsize::MAX)
}

/// Setters shared by the builder; each checks its range.
impl Config {
    pub(crate) fn set_aggregation_max_bytes(&mut self, bytes: usize) -> Result<(), Error> {
        let limits = self.aggregation.unwrap_or_else(aggregation_defaults);
        let limits = limits.with_max_bytes(bytes).map_err(|_| {
            Error::config(
                "aggregation_max_bytes",
                bytes,
                format!(
                    "must be 1 to {LARGEST_MAX_RECORD_SIZE} (and at most the maximum record size)"
                ),
            )
        })?;
        self.aggregation = Some(limits);
        Ok(())
    }

    pub(crate) fn set_aggregation_max_count(&mut self, count: NonZeroUsize) {
        let limits = self.aggregation.unwrap_or_else(aggregation_defaults);
        self.aggregation = Some(limits.with_max_records(count));
    }

    /// Gives the aggregation limits the stream's maximum record size: an aggregate may not be
    /// larger than a record the stream takes.
    pub(crate) fn set_max_record_size(&mut self, size: MaxRecordSize) -> Result<(), Error> {
        if let Some(limits) = self.aggregation {
            let limits = limits.with_max_record_size(size).map_err(|_| {
                Error::config(
                    "aggregation_max_bytes",
                    limits.max_bytes(),
                    format!(
                        "must be at most the maximum record size ({} bytes)",
                        size.bytes()
                    ),
                )
            })?;
            self.aggregation = Some(limits);
        }
        Ok(())
    }

    pub(crate) fn set_max_entries_per_call(&mut self, entries: usize) -> Result<(), Error> {
        if !(1..=MAX_ENTRIES_PER_CALL).contains(&entries) {
            return Err(Error::config(
                "max_entries_per_call",
                entries,
                format!("must be 1 to {MAX_ENTRIES_PER_CALL} (PutRecords limit)"),
            ));
        }
        self.max_entries_per_call = entries;
        Ok(())
    }

    pub(crate) fn set_max_bytes_per_call(&mut self, bytes: usize) -> Result<(), Error> {
        if !(1..=MAX_BYTES_PER_CALL).contains(&bytes) {
            return Err(Error::config(
                "max_bytes_per_call",
                bytes,
                format!("must be 1 to {MAX_BYTES_PER_CALL} (PutRecords limit)"),
            ));
        }
        self.max_bytes_per_call = bytes;
        Ok(())
    }

    pub(crate) fn set_shard_flush_bytes(&mut self, bytes: usize) -> Result<(), Error> {
        if !(1..=MAX_BYTES_PER_CALL).contains(&bytes) {
            return Err(Error::config(
                "shard_flush_bytes",
                bytes,
                format!("must be 1 to {MAX_BYTES_PER_CALL} (PutRecords limit)"),
            ));
        }
        self.shard_flush_bytes = bytes;
        Ok(())
    }

    pub(crate) fn set_list_shards_page_size(&mut self, shards: usize) -> Result<(), Error> {
        let max = crate::kinesis::LIST_SHARDS_PAGE;
        match i32::try_from(shards) {
            Ok(page) if (1..=max).contains(&page) => {
                self.list_shards_page_size = page;
                Ok(())
            }
            _ => Err(Error::config(
                "list_shards_page_size",
                shards,
                format!("must be 1 to {max} (ListShards limit)"),
            )),
        }
    }

    pub(crate) fn set_rate_limit_percent(&mut self, percent: u32) -> Result<(), Error> {
        if !(1..=MAX_RATE_LIMIT_PERCENT).contains(&percent) {
            return Err(Error::config(
                "rate_limit_percent",
                percent,
                format!("must be 1 to {MAX_RATE_LIMIT_PERCENT}"),
            ));
        }
        self.rate_limit_percent = percent;
        Ok(())
    }

    pub(crate) fn positive(name: &'static str, value: Duration) -> Result<Duration, Error> {
        if value.is_zero() {
            return Err(Error::config(
                name,
                format!("{value:?}"),
                "must be more than zero",
            ));
        }
        Ok(value)
    }

    /// Checks what single setters cannot: the bounds must admit the largest record.
    pub(crate) fn validate(&self, max_record_size: MaxRecordSize) -> Result<(), Error> {
        if self.max_outstanding_bytes < max_record_size.bytes() {
            return Err(Error::config(
                "max_outstanding_bytes",
                self.max_outstanding_bytes,
                format!(
                    "must be at least the maximum record size ({} bytes)",
                    max_record_size.bytes()
                ),
            ));
        }
        if self.max_bytes_per_call < max_record_size.bytes() {
            return Err(Error::config(
                "max_bytes_per_call",
                self.max_bytes_per_call,
                format!(
                    "must be at least the maximum record size ({} bytes)",
                    max_record_size.bytes()
                ),
            ));
        }
        if self.linger >= self.record_ttl {
            return Err(Error::config(
                "linger",
                format!("{:?}", self.linger),
                format!(
                    "must be less than record_ttl ({:?}): records would expire waiting",
                    self.record_ttl
                ),
            ));
        }
        if self.retry_min_delay > self.retry_max_delay {
            return Err(Error::config(
                "retry_backoff",
                format!("{:?}..{:?}", self.retry_min_delay, self.retry_max_delay),
                "the minimum delay must not exceed the maximum",
            ));
        }
        Ok(())
    }

    /// The highest share of a shard's write limit the producer sends at
    /// (`rate_limit_percent` / 100).
    pub(crate) fn rate_ceiling(&self) -> f64 {
        f64::from(self.rate_limit_percent) / 100.0
    }

    /// The aggregation limits the shards aggregate with: the configured ones, with the largest
    /// aggregate made a whole fraction of a shard's bytes per second (see [`fill_fraction`]).
    pub(crate) fn aggregation_for_pacing(&self) -> Option<AggregationLimits> {
        self.aggregation.map(|limits| {
            let bytes = fill_fraction(limits.max_bytes(), SHARD_BYTES_PER_SECOND as usize);
            limits.with_max_bytes(bytes).unwrap_or(limits)
        })
    }

    /// The most bytes a shard's limiter lets through at once (besides a few milliseconds'
    /// worth): one full aggregate, or without aggregation a twentieth of the shard's limit.
    pub(crate) fn pacing_unit_bytes(&self) -> f64 {
        let bytes = match self.aggregation_for_pacing() {
            Some(limits) => limits.max_bytes(),
            None => fill_fraction(
                PACING_UNIT_WITHOUT_AGGREGATION,
                SHARD_BYTES_PER_SECOND as usize,
            ),
        };
        bytes as f64
    }
}

/// Without aggregation, the bytes a shard's limiter lets through at once (about a twentieth of
/// the shard's limit).
const PACING_UNIT_WITHOUT_AGGREGATION: usize = 51_200;

/// The largest size at most `max` of which a whole number fill `per_second` exactly (or as
/// nearly as whole bytes allow): `per_second / ceil(per_second / max)`. A shard counts its
/// writes over one-second windows, so with 51,200-byte aggregates only 20 fit the 1 MiB limit
/// (97.7 % of it) and the 21st is throttled; at 49,932 bytes, 21 fit (99.99 %).
pub(crate) fn fill_fraction(max: usize, per_second: usize) -> usize {
    if max == 0 || max >= per_second {
        return max;
    }
    per_second / per_second.div_ceil(max)
}

pub(crate) fn non_zero(value: NonZeroUsize) -> usize {
    value.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_are_sized_so_that_a_whole_number_fill_a_second() {
        let mib = 1_048_576;
        // (configured largest aggregate, size used, how many fill a second)
        let table = [
            (51_200, 49_932, 21),
            (mib, mib, 1),
            (2 * mib, 2 * mib, 0),
            (mib / 2, mib / 2, 2),
            (mib / 2 + 1, mib / 2, 2),
            (400_000, 349_525, 3),
            (52_428, 49_932, 21),
            (52_429, 52_428, 20),
            (1, 1, mib),
            (0, 0, 0),
        ];
        for (max, size, fill) in table {
            assert_eq!(fill_fraction(max, mib), size, "{max}");
            assert!(size <= max.max(1));
            if size > 0 && size <= mib {
                assert_eq!(mib / size, fill, "{max}");
                // One more would pass the limit.
                assert!((mib / size + 1) * size > mib);
            }
        }
    }

    #[test]
    fn the_default_aggregates_are_paced_at_21_a_second() {
        let cfg = Config::default();
        let limits = cfg
            .aggregation_for_pacing()
            .unwrap_or_else(|| panic!("aggregation is on by default"));
        assert_eq!(limits.max_bytes(), 49_932);
        assert_eq!(cfg.pacing_unit_bytes(), 49_932.0);
        let off = Config {
            aggregation: None,
            ..Config::default()
        };
        assert_eq!(off.pacing_unit_bytes(), 49_932.0);
        assert_eq!(cfg.rate_ceiling(), 1.5);
    }
}
