//! Metric names, each defined once, after the KPL's (its CloudWatch name in parentheses). Recorded
//! through the `metrics` facade; the application installs the exporter. Labels: `stream` on all,
//! `shard_id` on per-shard counters, `error_code` on errors.

/// Counter: user records accepted by `put` (KPL: `UserRecordsReceived`).
pub const USER_RECORDS_RECEIVED: &str = "kinesis_producer_user_records_received";
/// Counter: user records delivered (KPL: `UserRecordsPut`).
pub const USER_RECORDS_PUT: &str = "kinesis_producer_user_records_put";
/// Counter: bytes (partition key + data) of user records delivered (KPL: `UserRecordsDataPut`).
pub const USER_RECORDS_DATA_PUT: &str = "kinesis_producer_user_records_data_put_bytes";
/// Counter: Kinesis records (aggregates or plain records) written (KPL: `KinesisRecordsPut`).
pub const KINESIS_RECORDS_PUT: &str = "kinesis_producer_kinesis_records_put";
/// Counter: bytes of Kinesis records written (KPL: `KinesisRecordsDataPut`).
pub const KINESIS_RECORDS_DATA_PUT: &str = "kinesis_producer_kinesis_records_data_put_bytes";
/// Counter: failed entries and calls, by error code (KPL: `ErrorsByCode`).
pub const ERRORS_BY_CODE: &str = "kinesis_producer_errors_by_code";
/// Counter: all failed entries and calls (KPL: `AllErrors`).
pub const ALL_ERRORS: &str = "kinesis_producer_all_errors";
/// Counter: user records that expired (KPL: `UserRecordExpired`).
pub const USER_RECORD_EXPIRED: &str = "kinesis_producer_user_record_expired";
/// Counter: user records that finally failed for any reason.
pub const USER_RECORDS_FAILED: &str = "kinesis_producer_user_records_failed";
/// Counter: user records sent again because their aggregate landed on a shard whose range does
/// not hold them (resharding).
pub const USER_RECORDS_RESENT: &str = "kinesis_producer_user_records_resent";
/// Histogram: retries a delivered user record needed (KPL: `RetriesPerRecord`).
pub const RETRIES_PER_RECORD: &str = "kinesis_producer_retries_per_record";
/// Histogram, seconds: from `put` to the first attempt (KPL: `BufferingTime`).
pub const BUFFERING_TIME: &str = "kinesis_producer_buffering_time_seconds";
/// Histogram, seconds: duration of `PutRecords` calls (KPL: `RequestTime`).
pub const REQUEST_TIME: &str = "kinesis_producer_request_time_seconds";
/// Histogram: user records per Kinesis record (KPL: `UserRecordsPerKinesisRecord`).
pub const USER_RECORDS_PER_KINESIS_RECORD: &str =
    "kinesis_producer_user_records_per_kinesis_record";
/// Histogram: Kinesis records per `PutRecords` call (KPL: `KinesisRecordsPerPutRecordsRequest`).
pub const KINESIS_RECORDS_PER_REQUEST: &str =
    "kinesis_producer_kinesis_records_per_put_records_request";
/// Histogram: user records per `PutRecords` call (KPL: `UserRecordsPerPutRecordsRequest`).
pub const USER_RECORDS_PER_REQUEST: &str = "kinesis_producer_user_records_per_put_records_request";
/// Gauge: user records admitted and not yet resolved (KPL: `UserRecordsPending`).
pub const USER_RECORDS_PENDING: &str = "kinesis_producer_user_records_pending";
/// Gauge: bytes of user records admitted and not yet resolved (the backpressure bound applies).
pub const USER_RECORDS_PENDING_BYTES: &str = "kinesis_producer_user_records_pending_bytes";
/// Gauge: a shard's current rate as a share of the configured limit (1.0 = full).
pub const SHARD_RATE_FACTOR: &str = "kinesis_producer_shard_rate_factor";
/// Counter: `PutRecords` calls made.
pub const PUT_RECORDS_CALLS: &str = "kinesis_producer_put_records_calls";
/// Counter: `PutRecords` calls answered with at least one throttled entry (the throttled entries
/// themselves are counted in [`ERRORS_BY_CODE`]).
pub const PUT_RECORDS_CALLS_THROTTLED: &str = "kinesis_producer_put_records_calls_throttled";
/// Counter: shard map refreshes, labelled `outcome` (`ok` / `error`).
pub const SHARD_MAP_REFRESHES: &str = "kinesis_producer_shard_map_refreshes";
