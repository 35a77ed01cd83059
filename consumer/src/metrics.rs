//! Metric names, each defined once (the KCL's CloudWatch name in parentheses where there is one).
//! Recorded through the `metrics` facade; the application installs the exporter. Labels:
//! `stream` on all, `shard_id` on per-shard ones, `worker` on lease ones, `error_code` on
//! errors, `outcome` where named.

/// Counter: user records delivered to processors (KCL: `RecordsProcessed`).
pub const RECORDS_PROCESSED: &str = "kinesis_consumer_records_processed";
/// Counter: bytes (data) of user records delivered (KCL: `DataBytesProcessed`).
pub const BYTES_PROCESSED: &str = "kinesis_consumer_bytes_processed";
/// Counter: batches delivered to processors.
pub const BATCHES: &str = "kinesis_consumer_batches";
/// Histogram, seconds: time processors took per batch (KCL: `RecordProcessor.processRecords.Time`).
pub const PROCESS_TIME: &str = "kinesis_consumer_process_time_seconds";
/// Counter: user records of aggregates skipped because their hash key lies outside the shard's
/// range (written there with a stale shard map; the Java KCL drops the whole aggregate).
pub const RECORDS_OUTSIDE_RANGE: &str = "kinesis_consumer_records_outside_range";
/// Gauge, milliseconds: how far behind the tip the last read of a shard was (KCL:
/// `MillisBehindLatest`).
pub const MILLIS_BEHIND_LATEST: &str = "kinesis_consumer_millis_behind_latest";
/// Counter: failed reads (`GetRecords`, `GetShardIterator`), by error code.
pub const READ_ERRORS: &str = "kinesis_consumer_read_errors";
/// Gauge: leases this worker holds (KCL: `CurrentLeases`).
pub const LEASES_HELD: &str = "kinesis_consumer_leases_held";
/// Counter: lease takes, by outcome (`taken`, `raced`: another worker took it first).
pub const LEASE_TAKES: &str = "kinesis_consumer_lease_takes";
/// Counter: graceful handoffs asked for by this worker.
pub const HANDOFFS_ASKED: &str = "kinesis_consumer_handoffs_asked";
/// Counter: leases lost (not renewed in time, or taken by another worker) (KCL: `LostLeases`).
pub const LEASES_LOST: &str = "kinesis_consumer_leases_lost";
/// Counter: lease renewals, by outcome (`ok`, `failed`, `lost`) (KCL: `RenewLease.Success`).
pub const RENEWALS: &str = "kinesis_consumer_renewals";
/// Counter: checkpoints written, by outcome (`ok`, `lost`, `failed`).
pub const CHECKPOINTS: &str = "kinesis_consumer_checkpoints";
/// Counter: shards read to their end and checkpointed.
pub const SHARDS_ENDED: &str = "kinesis_consumer_shards_ended";
/// Counter: times a processor returned from `shard_ended` without checkpointing `SHARD_END`.
pub const SHARD_END_NOT_CHECKPOINTED: &str = "kinesis_consumer_shard_end_not_checkpointed";
