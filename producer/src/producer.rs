//! The application's handle: builder, `put`, `try_put`, `flush`, `shutdown`.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering as AtomicOrdering},
    },
    time::Duration,
};

use aws_sdk_kinesis::Client;
use kinesis_aggregation::{MaxRecordSize, RecordSlab, UserRecord};
use tokio::{
    sync::{Semaphore, TryAcquireError, mpsc, oneshot, watch},
    time::Instant,
};

use crate::{
    config::{Config, Ordering, RecordSizeLimit, StreamRef},
    error::{Bound, Error},
    kinesis::{self, CallError},
    pipeline::{Command, Intake, Pipeline},
    receipt::{Failure, Receipt},
    shard_map::ShardMap,
};

/// The backpressure bounds: permits for outstanding records and bytes.
pub(crate) struct Admission {
    records: Semaphore,
    bytes: Semaphore,
    max_records: usize,
    max_bytes: usize,
}

impl Admission {
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Self {
        Admission {
            records: Semaphore::new(max_records),
            bytes: Semaphore::new(max_bytes),
            max_records,
            max_bytes,
        }
    }

    pub(crate) fn release(&self, records: usize, bytes: usize) {
        self.records.add_permits(records);
        self.bytes.add_permits(bytes);
    }

    pub(crate) fn close(&self) {
        self.records.close();
        self.bytes.close();
    }

    /// Records and bytes admitted and not yet resolved.
    pub(crate) fn outstanding(&self) -> (usize, usize) {
        (
            self.max_records
                .saturating_sub(self.records.available_permits()),
            self.max_bytes
                .saturating_sub(self.bytes.available_permits()),
        )
    }
}

/// Records and bytes the producer holds: admitted, not yet resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outstanding {
    /// User records.
    pub records: usize,
    /// Bytes of user records (partition key + data), the measure of the bytes bound.
    pub bytes: usize,
}

struct Shared {
    tx: mpsc::UnboundedSender<Command>,
    admission: Arc<Admission>,
    stream: StreamRef,
    max_record_size: MaxRecordSize,
    closed: AtomicBool,
    stopped: watch::Receiver<bool>,
    /// Where admitted records go.
    intake: Arc<Intake>,
}

/// Small records are copied into slabs of this size (see [`RecordSlab`]): records up to 4 KiB.
const SLAB_BYTES: usize = 64 * 1024;
/// Most bytes of slabs alive at once, at most a quarter of the outstanding bytes bound.
const MAX_SLAB_BYTES: usize = 32 * 1024 * 1024;

/// An async Kinesis producer for one stream. Cheap to clone; all clones feed the same pipeline.
///
/// Dropping every clone without [`shutdown`](Self::shutdown) lets the pipeline deliver what it
/// holds in the background and then stop (as long as the runtime runs); every receipt still
/// resolves.
///
/// ```no_run
/// # async fn example(client: aws_sdk_kinesis::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use kinesis_producer::{Producer, UserRecord};
///
/// let producer = Producer::builder(client, "my-stream").build().await?;
/// let receipt = producer.put(UserRecord::new("user-42", "hello")?).await?;
/// let delivery = receipt.await?;
/// println!("{} {} {}", delivery.shard_id(), delivery.sequence_number(), delivery.sub_sequence_number());
/// producer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("stream", &self.shared.stream)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

impl Producer {
    /// A builder for a producer writing to `stream` (a name, or an ARN starting with `arn:`)
    /// with the application's client.
    pub fn builder(client: Client, stream: impl Into<StreamRef>) -> ProducerBuilder {
        ProducerBuilder {
            client,
            stream: stream.into(),
            config: Config::default(),
            error: None,
        }
    }

    /// Admits a record, waiting while the backpressure bounds are full, and returns its receipt.
    ///
    /// Fails at once, handing the record back, if it is larger than the stream's maximum record
    /// size ([`Error::InvalidRecord`]) or the producer is shut down ([`Error::ShutDown`]).
    /// Partition key and explicit hash key are checked when the [`UserRecord`] is built.
    ///
    /// # Cancellation
    ///
    /// Dropping the future before it completes admits nothing: the record is dropped with it and
    /// no permit is kept. Once it has returned, the record is the pipeline's and the receipt
    /// resolves whether or not it is awaited.
    pub async fn put(&self, record: UserRecord) -> Result<Receipt, Failure> {
        if let Err(failure) = self.check(&record) {
            return Err(failure_with(failure, record));
        }
        let cost = permits_for(&record);
        match self.take_room(cost) {
            Ok(()) => {}
            // No room now: wait for it, in turn with other waiting puts.
            Err(Error::Full { .. }) => {
                let admission = &self.shared.admission;
                let Ok(records) = admission.records.acquire().await else {
                    return Err(Failure::new(Error::ShutDown, record));
                };
                let Ok(bytes) = admission.bytes.acquire_many(cost).await else {
                    return Err(Failure::new(Error::ShutDown, record));
                };
                records.forget();
                bytes.forget();
            }
            Err(error) => return Err(Failure::new(error, record)),
        }
        self.send(record, cost)
    }

    /// Admits a record if the backpressure bounds have room now; otherwise hands it back with
    /// [`Error::Full`].
    pub fn try_put(&self, record: UserRecord) -> Result<Receipt, Failure> {
        if let Err(failure) = self.check(&record) {
            return Err(failure_with(failure, record));
        }
        let cost = permits_for(&record);
        if let Err(error) = self.take_room(cost) {
            return Err(Failure::new(error, record));
        }
        self.send(record, cost)
    }

    /// Takes a record's permits if both bounds have room now: [`Error::Full`] naming the bound
    /// that has none, or [`Error::ShutDown`].
    fn take_room(&self, cost: u32) -> Result<(), Error> {
        let admission = &self.shared.admission;
        let records = match admission.records.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(Error::ShutDown),
            Err(TryAcquireError::NoPermits) => {
                return Err(Error::Full {
                    bound: Bound::Records,
                    limit: admission.max_records,
                });
            }
        };
        let bytes = match admission.bytes.try_acquire_many(cost) {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(Error::ShutDown),
            Err(TryAcquireError::NoPermits) => {
                return Err(Error::Full {
                    bound: Bound::Bytes,
                    limit: admission.max_bytes,
                });
            }
        };
        records.forget();
        bytes.forget();
        Ok(())
    }

    fn check(&self, record: &UserRecord) -> Result<(), Error> {
        if self.shared.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::ShutDown);
        }
        self.shared.max_record_size.check(record)?;
        Ok(())
    }

    fn send(&self, record: UserRecord, cost: u32) -> Result<Receipt, Failure> {
        self.shared.intake.admit(record).map_err(|record| {
            self.shared.admission.release(1, cost as usize);
            Failure::new(Error::ShutDown, record)
        })
    }

    /// Sends everything buffered now, without waiting for the linger time, and waits until every
    /// record admitted before the call is resolved (delivered or failed). Records put meanwhile
    /// are sent too; those admitted before the producer's task takes the flush in (a moment, well
    /// under the linger time) are waited for as well.
    ///
    /// Fails with [`Error::ShutDown`] if the producer stopped.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the waiting only; the records are sent regardless.
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .tx
            .send(Command::Flush(tx))
            .map_err(|_| Error::ShutDown)?;
        rx.await.map_err(|_| Error::ShutDown)
    }

    /// Stops admitting records (for every clone), sends everything held, and returns once every
    /// receipt is resolved and the pipeline has stopped. Records that cannot be delivered within
    /// their TTL resolve as expired.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the waiting only: admission stays closed and the pipeline keeps
    /// draining in the background.
    pub async fn shutdown(self) {
        self.shared.closed.store(true, AtomicOrdering::Release);
        let _ = self.shared.tx.send(Command::Shutdown);
        let mut stopped = self.shared.stopped.clone();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Records and bytes admitted and not yet resolved.
    pub fn outstanding(&self) -> Outstanding {
        let (records, bytes) = self.shared.admission.outstanding();
        Outstanding { records, bytes }
    }

    /// The stream this producer writes to.
    pub fn stream(&self) -> &StreamRef {
        &self.shared.stream
    }

    /// The largest record (partition key + data) the producer accepts.
    pub fn max_record_size(&self) -> MaxRecordSize {
        self.shared.max_record_size
    }
}

fn failure_with(error: Error, record: UserRecord) -> Failure {
    Failure::new(error, record)
}

/// Byte permits a record costs: its size as Kinesis counts it, at least one.
fn permits_for(record: &UserRecord) -> u32 {
    // The size was checked against the maximum record size (at most 10 MiB): it fits in u32.
    u32::try_from(record.size().max(1)).unwrap_or(u32::MAX)
}

/// Builds a [`Producer`]. Every setting has the KPL's default unless noted; a setting out of
/// range makes [`build`](Self::build) fail with [`Error::InvalidConfig`] naming it.
#[derive(Debug)]
#[must_use = "call build() to start the producer"]
pub struct ProducerBuilder {
    client: Client,
    stream: StreamRef,
    config: Config,
    error: Option<Error>,
}

impl ProducerBuilder {
    fn keep(&mut self, result: Result<(), Error>) {
        if let Err(error) = result {
            self.error.get_or_insert(error);
        }
    }

    /// Whether to aggregate user records into Kinesis records (default on, as the KPL's
    /// `AggregationEnabled`). Aggregation multiplies the records a shard takes per second.
    pub fn aggregation(mut self, enabled: bool) -> Self {
        if enabled {
            self.config
                .aggregation
                .get_or_insert_with(crate::config::aggregation_defaults);
        } else {
            self.config.aggregation = None;
        }
        self
    }

    /// Largest aggregate, partition key + data (default 51200 bytes, the KPL's
    /// `AggregationMaxSize`; 1 byte to 10 MiB, and at most the maximum record size). Turns
    /// aggregation on. Below 1 MiB, aggregates are closed at the largest size of which a whole
    /// number fill a shard's 1 MiB per second (49,932 bytes for 51,200: 21 a second), so that
    /// paced shards fill their limit.
    pub fn aggregation_max_bytes(mut self, bytes: usize) -> Self {
        let result = self.config.set_aggregation_max_bytes(bytes);
        self.keep(result);
        self
    }

    /// Most user records per aggregate (default 4294967295, the KPL's `AggregationMaxCount`).
    /// Turns aggregation on.
    pub fn aggregation_max_count(mut self, count: NonZeroUsize) -> Self {
        self.config.set_aggregation_max_count(count);
        self
    }

    /// Most entries per `PutRecords` call (default 500, the KPL's `CollectionMaxCount`; 1 to 500).
    pub fn max_entries_per_call(mut self, entries: usize) -> Self {
        let result = self.config.set_max_entries_per_call(entries);
        self.keep(result);
        self
    }

    /// Most bytes (partition keys + data) per `PutRecords` call (default 5 MiB, the KPL's
    /// `CollectionMaxSize`; up to the API's 10 MiB).
    pub fn max_bytes_per_call(mut self, bytes: usize) -> Self {
        let result = self.config.set_max_bytes_per_call(bytes);
        self.keep(result);
        self
    }

    /// A call is sent early once one shard's share of it reaches this many bytes, so that a busy
    /// shard does not hold the others back (default 256 KiB, as the KPL; 1 byte to 10 MiB, the
    /// `PutRecords` limit).
    pub fn shard_flush_bytes(mut self, bytes: usize) -> Self {
        let result = self.config.set_shard_flush_bytes(bytes);
        self.keep(result);
        self
    }

    /// How `PutRecords` requests are encoded: CBOR by default
    /// ([`WireFormat::Cbor`](crate::WireFormat::Cbor), as the AWS SDK for Java sends them), or
    /// JSON ([`WireFormat::Json`](crate::WireFormat::Json)) for an endpoint on the way that takes
    /// only JSON.
    pub fn wire_format(mut self, format: crate::WireFormat) -> Self {
        self.config.wire_format = format;
        self
    }

    /// Longest a record waits to be aggregated and collected before it is sent (default 100 ms,
    /// the KPL's `RecordMaxBufferedTime`). Zero sends every record as soon as the producer's task
    /// takes it in (with whatever arrived meanwhile). Must be less than the record TTL, else
    /// records would expire waiting.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger = linger;
        self
    }

    /// Whether a call going out takes every shard's aggregate under construction with it (default
    /// on). Each shard's aggregate has its own linger deadline; at moderate rates they fall due
    /// one by one, and each would go out in a call of its own. Taking the others along sends them
    /// earlier than their deadline, never later, and aligns the shards' deadlines, so that calls
    /// carry one aggregate per shard. Off, each aggregate waits for its own deadline (or to be
    /// full). For comparisons (`producer-bench`); there is no reason to turn it off otherwise.
    #[doc(hidden)]
    pub fn fill_calls(mut self, fill: bool) -> Self {
        self.config.fill_calls = fill;
        self
    }

    /// A record not delivered within this time after `put` fails as [`Error::Expired`] and is
    /// handed back (default 30 s, the KPL's `RecordTtl`). A record expires with the Kinesis
    /// record it was packed into, at the earliest TTL among its records (at most the linger time
    /// early).
    pub fn record_ttl(mut self, ttl: Duration) -> Self {
        let result = Config::positive("record_ttl", ttl).map(|ttl| self.config.record_ttl = ttl);
        self.keep(result);
        self
    }

    /// Deadline of each `PutRecords` and `ListShards` call (default 6 s, the KPL's
    /// `RequestTimeout`). A call that times out may still have been written: its records are
    /// retried, which can duplicate them.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        let result = Config::positive("request_timeout", timeout)
            .map(|timeout| self.config.request_timeout = timeout);
        self.keep(result);
        self
    }

    /// Most `PutRecords` calls in flight at once (default 24, the KPL's `MaxConnections`).
    pub fn max_in_flight(mut self, calls: NonZeroUsize) -> Self {
        self.config.max_in_flight = crate::config::non_zero(calls);
        self
    }

    /// Per-shard rate ceiling as a percentage of the shard's write limit of 1000 records/s and
    /// 1 MiB/s (default 150, the KPL's `RateLimit`; 1 to
    /// [`MAX_RATE_LIMIT_PERCENT`](crate::MAX_RATE_LIMIT_PERCENT), which in effect leaves the pacing
    /// to the service). A shard starts at this rate; its first throttle paces it at 99 % of its
    /// limit, heavy throttling lowers it further, and seconds without throttling probe it back up
    /// to this ceiling.
    pub fn rate_limit_percent(mut self, percent: u32) -> Self {
        let result = self.config.set_rate_limit_percent(percent);
        self.keep(result);
        self
    }

    /// Fail a record as soon as its shard throttles it, instead of retrying until its TTL
    /// (default off, the KPL's `FailIfThrottled`).
    pub fn fail_if_throttled(mut self, fail: bool) -> Self {
        self.config.fail_if_throttled = fail;
        self
    }

    /// The largest record accepted (default 1 MiB, the KPL's `MaxUserRecordSize`), or
    /// [`RecordSizeLimit::FromStream`] to read the stream's own limit at build time.
    pub fn max_record_size(mut self, limit: RecordSizeLimit) -> Self {
        self.config.record_size_limit = limit;
        self
    }

    /// Most records admitted and not yet resolved; `put` waits beyond it (default 200,000; the
    /// KPL has no bound, KPL issues #21, #12, #485).
    pub fn max_outstanding_records(mut self, records: NonZeroUsize) -> Self {
        self.config.max_outstanding_records = records.get();
        self
    }

    /// Most bytes (partition keys + data) admitted and not yet resolved; `put` waits beyond it
    /// (default 128 MiB; must be at least the maximum record size).
    pub fn max_outstanding_bytes(mut self, bytes: NonZeroUsize) -> Self {
        self.config.max_outstanding_bytes = bytes.get();
        self
    }

    /// Throughput (default, as the KPL) or per-partition-key ordering; see [`Ordering`].
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.config.ordering = ordering;
        self
    }

    /// How often the shard map is refreshed when nothing forces it (default 60 s). It is also
    /// refreshed at once when a record lands on a shard other than predicted.
    pub fn shard_map_refresh_interval(mut self, interval: Duration) -> Self {
        let result = Config::positive("shard_map_refresh_interval", interval)
            .map(|interval| self.config.shard_map_refresh = interval);
        self.keep(result);
        self
    }

    /// Range of the jittered exponential backoff between a Kinesis record's attempts (default
    /// 100 ms to 5 s). The KPL retries without backoff; this is what keeps throttling from
    /// becoming a retry storm.
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        let result = Config::positive("retry_backoff", min).map(|min| {
            self.config.retry_min_delay = min;
            self.config.retry_max_delay = max;
        });
        self.keep(result);
        self
    }

    /// Shards asked for per `ListShards` page (default 10,000, the service maximum; 1 to
    /// 10,000). Exposed for tests of paging against stand-ins; there is no reason to lower it
    /// otherwise.
    #[doc(hidden)]
    pub fn list_shards_page_size(mut self, shards: usize) -> Self {
        let result = self.config.set_list_shards_page_size(shards);
        self.keep(result);
        self
    }

    /// Checks the settings and the stream, reads the shard map and starts the pipeline on the
    /// current tokio runtime.
    ///
    /// Fails with [`Error::InvalidConfig`], [`Error::StreamNotFound`], or [`Error::Startup`] when
    /// the stream cannot be described or listed.
    ///
    /// # Cancellation
    ///
    /// Dropping the future before it completes leaves nothing behind: the pipeline task is
    /// spawned only at the end, once the shard map is read.
    pub async fn build(self) -> Result<Producer, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let ProducerBuilder {
            client,
            stream,
            mut config,
            ..
        } = self;
        let timeout = config.request_timeout;
        let max_record_size = match config.record_size_limit {
            RecordSizeLimit::Fixed(size) => size,
            RecordSizeLimit::FromStream => {
                let kib = kinesis::max_record_size_kib(&client, &stream, timeout)
                    .await
                    .map_err(|e| startup_error("DescribeStreamSummary", &stream, e))?;
                match kib {
                    Some(kib) => MaxRecordSize::from_kib(usize::try_from(kib).unwrap_or(0))?,
                    None => MaxRecordSize::DEFAULT,
                }
            }
        };
        config.set_max_record_size(max_record_size)?;
        config.validate(max_record_size)?;
        let map = initial_map(&client, &stream, config.list_shards_page_size, timeout).await?;

        let admission = Arc::new(Admission::new(
            config.max_outstanding_records,
            config.max_outstanding_bytes,
        ));
        let slab = RecordSlab::new(
            SLAB_BYTES,
            (config.max_outstanding_bytes / 4).clamp(SLAB_BYTES, MAX_SLAB_BYTES),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let config = Arc::new(config);
        let intake = Arc::new(Intake::new(slab));
        let pipeline = Pipeline::new(
            config,
            client,
            stream.clone(),
            admission.clone(),
            rx,
            intake.clone(),
            map,
        );
        tokio::spawn(pipeline.run(stopped_tx));
        Ok(Producer {
            shared: Arc::new(Shared {
                tx,
                admission,
                intake,
                stream,
                max_record_size,
                closed: AtomicBool::new(false),
                stopped: stopped_rx,
            }),
        })
    }
}

fn startup_error(operation: &'static str, stream: &StreamRef, error: CallError) -> Error {
    if error.code == "ResourceNotFoundException" {
        return Error::StreamNotFound {
            stream: stream.to_string(),
            source: error.source,
        };
    }
    Error::Startup {
        operation,
        stream: stream.to_string(),
        kind: Some(error.kind),
        code: error.code,
        request_id: error.request_id,
        source: error.source,
    }
}

/// The first shard map, retried briefly on throttling and transient errors.
async fn initial_map(
    client: &Client,
    stream: &StreamRef,
    page_size: i32,
    timeout: Duration,
) -> Result<ShardMap, Error> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        match kinesis::list_shards(client, stream, page_size, timeout).await {
            Ok(listed) => {
                return ShardMap::from_listing(&listed, started.into_std()).map_err(|problem| {
                    Error::Startup {
                        operation: "ListShards",
                        stream: stream.to_string(),
                        kind: None,
                        code: problem.to_string(),
                        request_id: None,
                        source: None,
                    }
                });
            }
            Err(error) if error.is_retryable() && attempt < 5 => {
                tracing::debug!(code = %error.code, attempt, "ListShards failed at startup; retrying");
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
            Err(error) => return Err(startup_error("ListShards", stream, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that is never called: a builder with a bad setting fails before any call.
    fn offline_client() -> Client {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .timeout_config(aws_sdk_kinesis::config::timeout::TimeoutConfig::disabled())
            .build();
        Client::from_conf(config)
    }

    /// The error `build` gives, which names the setting.
    async fn invalid(builder: ProducerBuilder) -> (&'static str, String, String) {
        match builder.build().await {
            Err(Error::InvalidConfig {
                name,
                value,
                problem,
            }) => (name, value, problem),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn out_of_range_settings_are_typed_errors_naming_the_setting_and_the_range() {
        let builder = || Producer::builder(offline_client(), "stream");
        let (name, value, problem) = invalid(builder().shard_flush_bytes(0)).await;
        assert_eq!((name, value.as_str()), ("shard_flush_bytes", "0"));
        assert!(problem.contains("1 to 10485760"), "{problem}");
        let (name, _, _) = invalid(builder().shard_flush_bytes(10 * 1024 * 1024 + 1)).await;
        assert_eq!(name, "shard_flush_bytes");
        for shards in [0, 10_001, usize::MAX] {
            let (name, _, problem) = invalid(builder().list_shards_page_size(shards)).await;
            assert_eq!(name, "list_shards_page_size");
            assert!(problem.contains("1 to 10000"), "{problem}");
        }
        // An aggregate larger than the stream takes (1 MiB unless the stream says more).
        let (name, value, problem) =
            invalid(builder().aggregation_max_bytes(2 * 1024 * 1024)).await;
        assert_eq!((name, value.as_str()), ("aggregation_max_bytes", "2097152"));
        assert!(problem.contains("1048576"), "{problem}");
        let (name, _, _) = invalid(builder().aggregation_max_bytes(0)).await;
        assert_eq!(name, "aggregation_max_bytes");
        // Records would expire while they linger.
        let (name, _, problem) = invalid(
            builder()
                .record_ttl(Duration::from_secs(1))
                .linger(Duration::from_secs(1)),
        )
        .await;
        assert_eq!(name, "linger");
        assert!(problem.contains("record_ttl"), "{problem}");
        // The first bad setting is the one reported.
        let (name, _, _) = invalid(builder().shard_flush_bytes(0).max_entries_per_call(0)).await;
        assert_eq!(name, "shard_flush_bytes");
    }

    #[test]
    fn in_range_settings_are_kept_as_given() {
        let mut config = Config::default();
        assert!(config.set_shard_flush_bytes(1).is_ok());
        assert_eq!(config.shard_flush_bytes, 1);
        assert!(config.set_list_shards_page_size(2).is_ok());
        assert_eq!(config.list_shards_page_size, 2);
        config.linger = Duration::ZERO;
        assert!(config.validate(MaxRecordSize::DEFAULT).is_ok());
        // A larger aggregate is fine once the stream takes larger records.
        assert!(config.set_aggregation_max_bytes(2 * 1024 * 1024).is_ok());
        assert!(config.set_max_record_size(MaxRecordSize::DEFAULT).is_err());
        assert!(config.set_max_record_size(MaxRecordSize::LARGEST).is_ok());
        assert_eq!(
            config.aggregation.map(|limits| limits.max_record_size()),
            Some(MaxRecordSize::LARGEST)
        );
    }

    #[test]
    fn a_full_bound_is_named_by_a_type() {
        let error = Error::Full {
            bound: Bound::Bytes,
            limit: 10,
        };
        assert!(matches!(
            error,
            Error::Full {
                bound: Bound::Bytes,
                ..
            }
        ));
        assert_eq!(
            error.to_string(),
            "the producer holds its maximum of 10 outstanding bytes"
        );
    }
}
