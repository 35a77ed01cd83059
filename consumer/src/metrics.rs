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
/// Counter: failed reads (`GetRecords`, `GetShardIterator`, `SubscribeToShard`), by error code.
pub const READ_ERRORS: &str = "kinesis_consumer_read_errors";
/// Gauge: leases this worker holds (KCL: `CurrentLeases`).
pub const LEASES_HELD: &str = "kinesis_consumer_leases_held";
/// Counter: lease takes, by outcome (`taken`, `raced`: another worker took it first).
pub const LEASE_TAKES: &str = "kinesis_consumer_lease_takes";
/// Counter: graceful handoffs asked for by this worker.
pub const HANDOFFS_ASKED: &str = "kinesis_consumer_handoffs_asked";
/// Counter: leases lost (not renewed in time, or taken by another worker) (KCL: `LostLeases`).
pub const LEASES_LOST: &str = "kinesis_consumer_leases_lost";
/// Counter: processor callbacks that failed (returned an error or panicked), by `callback`
/// (`make`, `initialize`, `process`, `shard_ended`, `shutdown_requested`, `dead_letter`).
pub const PROCESSOR_FAILURES: &str = "kinesis_consumer_processor_failures";
/// Counter: processor callbacks (or processor factories) that panicked, by `callback`. Handled
/// under the failure policy.
pub const PROCESSOR_PANICS: &str = "kinesis_consumer_processor_panics";
/// Counter: failed batches or initializations tried again with the same processor.
pub const PROCESSOR_RETRIES: &str = "kinesis_consumer_processor_retries";
/// Counter: processors made again from the last checkpoint after failures.
pub const PROCESSOR_RESTARTS: &str = "kinesis_consumer_processor_restarts";
/// Counter: user records handed to the dead-letter handler (and then passed by the checkpoint).
pub const DEAD_LETTERED_RECORDS: &str = "kinesis_consumer_dead_lettered_records";
/// Counter: calls of the dead-letter handler that failed (it is called again).
pub const DEAD_LETTER_FAILURES: &str = "kinesis_consumer_dead_letter_failures";
/// Counter: times a processor callback ran longer than the slow-callback warning (once per
/// period it goes on running), by `callback` (KCL: `logWarningForTaskAfterMillis`).
pub const SLOW_CALLBACKS: &str = "kinesis_consumer_slow_callbacks";
/// Counter: lease renewals, by outcome (`ok`, `failed`, `lost`) (KCL: `RenewLease.Success`).
pub const RENEWALS: &str = "kinesis_consumer_renewals";
/// Counter: checkpoints written, by outcome (`ok`, `lost`, `failed`).
pub const CHECKPOINTS: &str = "kinesis_consumer_checkpoints";
/// Counter: shards read to their end and checkpointed.
pub const SHARDS_ENDED: &str = "kinesis_consumer_shards_ended";
/// Counter: times a processor returned from `shard_ended` without checkpointing `SHARD_END`.
pub const SHARD_END_NOT_CHECKPOINTED: &str = "kinesis_consumer_shard_end_not_checkpointed";
/// Gauge: user records read ahead of a shard's processor and not yet processed (bounded by the
/// read-ahead setting; KCL memory blow-ups with slow processors are this number growing).
pub const PREFETCHED_RECORDS: &str = "kinesis_consumer_prefetched_records";
/// Gauge, bytes: data and partition keys of the records read ahead and not yet processed.
pub const PREFETCHED_BYTES: &str = "kinesis_consumer_prefetched_bytes";
/// Histogram, seconds: how long polling reads waited for a permit, recorded only for those that
/// found all `max_concurrent_reads` permits taken (a worker reading more busy shards than the
/// cap serves: raise it).
pub const READ_PERMIT_WAIT: &str = "kinesis_consumer_read_permit_wait_seconds";
/// Counter: enhanced fan-out events received (`SubscribeToShardEvent`).
pub const FAN_OUT_EVENTS: &str = "kinesis_consumer_fan_out_events";
/// Counter: Kinesis records received over enhanced fan-out (an aggregate counts once).
pub const FAN_OUT_RECORDS: &str = "kinesis_consumer_fan_out_records";
/// Counter: bytes of Kinesis record data received over enhanced fan-out.
pub const FAN_OUT_BYTES: &str = "kinesis_consumer_fan_out_bytes";
/// Counter: subscriptions started again, by `reason`: `session_end` (the service ended the
/// subscription, every 5 minutes), `silent` (nothing received for the silence timeout),
/// `connection` (dropped connection, read timeout, 5xx), `resource_in_use` (a previous
/// subscription still open), `throttled`, `consumer_missing` (the stream consumer was deleted or
/// is not active; registered again), `not_found` (the shard was not found but is still listed).
pub const FAN_OUT_RESUBSCRIPTIONS: &str = "kinesis_consumer_fan_out_resubscriptions";
/// Counter: stream consumer registrations made by this worker (`RegisterStreamConsumer`).
pub const FAN_OUT_REGISTRATIONS: &str = "kinesis_consumer_fan_out_registrations";
