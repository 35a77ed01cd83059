//! The consumer's settings, with the KCL's name and default next to each where there is one.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime},
};

use kinesis_calls::StreamRef;

use crate::{
    coordination::Settings, error::Error, failure::FailurePolicy, lease_table::BillingMode,
    lineage::InitialPosition,
};

/// Every setting of a consumer; built by [`ConsumerBuilder`](crate::ConsumerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) stream: StreamRef,
    pub(crate) application: ApplicationName,
    pub(crate) table: String,
    pub(crate) billing: BillingMode,
    pub(crate) worker_id: String,
    pub(crate) initial_position: InitialPosition,
    pub(crate) initial_timestamp: Option<SystemTime>,
    pub(crate) failover: Duration,
    pub(crate) renew_interval: Duration,
    pub(crate) scan_interval: Duration,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) handoff_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_leases: Option<usize>,
    pub(crate) max_handoffs: Option<usize>,
    pub(crate) max_records: usize,
    pub(crate) min_fetch_interval: Duration,
    pub(crate) max_idle: Duration,
    pub(crate) max_concurrent_reads: usize,
    pub(crate) prefetch_records: usize,
    pub(crate) prefetch_bytes: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) table_timeout: Duration,
    pub(crate) retrieval: Retrieval,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) slow_callback: Duration,
    pub(crate) start_attempts: u32,
    pub(crate) fatal_after: Duration,
}

/// How a consumer reads its shards. Leases, checkpoints, lineage and the processor API are the
/// same for both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retrieval {
    /// `GetRecords`, shared by every application reading the stream (5 reads/s and 2 MiB/s per
    /// shard in all). The default.
    #[default]
    Polling,
    /// Enhanced fan-out (`SubscribeToShard`): the stream consumer gets its own 2 MiB/s per shard,
    /// pushed as soon as records arrive.
    FanOut(FanOut),
}

/// Enhanced fan-out settings: the stream consumer to register, and how subscriptions are kept
/// alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanOut {
    pub(crate) consumer_name: Option<String>,
    pub(crate) register_timeout: Duration,
    pub(crate) silence_timeout: Duration,
    pub(crate) deregister_on_shutdown: bool,
}

impl Default for FanOut {
    fn default() -> Self {
        FanOut {
            consumer_name: None,
            register_timeout: Duration::from_secs(120),
            silence_timeout: Duration::from_secs(30),
            deregister_on_shutdown: false,
        }
    }
}

impl FanOut {
    /// The defaults: the stream consumer named after the application, 2 minutes to become
    /// `ACTIVE`, a subscription that delivers nothing for 30 s is started again, the consumer
    /// is kept on shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream consumer's name (default: the application name, as the KCL's).
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = Some(name.into());
        self
    }

    /// How long the worker waits, at start, for the stream consumer to be found or registered
    /// and `ACTIVE` (default 120 s). Past it the worker stops with
    /// [`Error::ConsumerNotActive`].
    pub fn register_timeout(mut self, timeout: Duration) -> Self {
        self.register_timeout = timeout;
        self
    }

    /// How long a subscription may deliver nothing, not even an empty event, before it is
    /// started again (default 30 s; the service sends an event at least every few seconds).
    pub fn silence_timeout(mut self, timeout: Duration) -> Self {
        self.silence_timeout = timeout;
        self
    }

    /// Whether a worker deregisters the stream consumer when it shuts down (default no). Only
    /// for an application with one worker: the others would lose their subscriptions.
    pub fn deregister_on_shutdown(mut self, deregister: bool) -> Self {
        self.deregister_on_shutdown = deregister;
        self
    }
}

/// Most records `GetRecords` returns per call (the service limit, and the KCL's `maxRecords`).
pub const MAX_RECORDS_PER_CALL: usize = 10_000;

/// The longest pause between reads of an idle shard, by default
/// ([`ConsumerBuilder::max_idle`](crate::ConsumerBuilder::max_idle)): after each empty answer the
/// pause doubles from 200 ms up to this.
pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(1);

/// Most polling reads (`GetRecords`, `GetShardIterator`) a worker has under way at once, by
/// default ([`ConsumerBuilder::max_concurrent_reads`](crate::ConsumerBuilder::max_concurrent_reads)).
/// An idle shard holds a permit for its poll every second (20 to 50 ms against Kinesis): 64
/// serve well over 1,000 idle shards. A shard with a backlog is read again 200 ms after each
/// answer, and holds a permit for the call: at 200 ms a call, 64 permits serve about 128 such
/// shards, at 1 s (answers of several MB) about 75; past that, reads wait for permits (see the
/// histogram `kinesis_consumer_read_permit_wait_seconds`) and the shards fall behind.
pub const MAX_CONCURRENT_READS: usize = 64;

/// The longest failover time, and the longest of every other duration setting: instants
/// computed from them must stay far from the clock's limits.
const MAX_FAILOVER: Duration = Duration::from_secs(24 * 3600);

/// The shortest pause between two reads of a shard (Kinesis allows 5 `GetRecords` per second per
/// shard, shared by every application reading it).
pub(crate) const MIN_FETCH_INTERVAL: Duration = Duration::from_millis(200);

/// The most characters an application name may have: it names the lease table by default, and
/// DynamoDB table names have at most 255.
const MAX_APPLICATION_NAME: usize = 255;

/// The name of a consuming application, shared by all its workers: it names the lease table
/// (unless [`table_name`](crate::ConsumerBuilder::table_name) says otherwise) and, with enhanced
/// fan-out, the stream consumer (unless [`FanOut::consumer_name`] does), as the KCL's
/// `applicationName`.
///
/// A type of its own, so that the stream and the application given to
/// [`Consumer::builder`](crate::Consumer::builder) cannot be swapped:
///
/// ```compile_fail,E0308
/// # use kinesis_consumer::{ApplicationName, Batch, BoxError, Checkpointer, Consumer, ShardProcessor};
/// # struct Printer;
/// # impl ShardProcessor for Printer {
/// #     async fn process(&mut self, _: &Batch, _: &mut Checkpointer) -> Result<(), BoxError> {
/// #         Ok(())
/// #     }
/// #     async fn shard_ended(&mut self, c: &mut Checkpointer) -> Result<(), BoxError> {
/// #         Ok(c.checkpoint_shard_end().await?)
/// #     }
/// # }
/// # fn example(
/// #     kinesis: aws_sdk_kinesis::Client,
/// #     dynamodb: aws_sdk_dynamodb::Client,
/// # ) -> Result<(), kinesis_consumer::Error> {
/// let application = ApplicationName::new("my-application")?;
/// // The application where the stream goes, and the stream where the application goes:
/// let _ = Consumer::builder(kinesis, dynamodb, application, "my-stream", |_: &str| Printer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApplicationName(String);

impl ApplicationName {
    /// An application name: 1 to 255 characters. Fails with [`Error::InvalidConfig`] naming
    /// `application` otherwise.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let chars = name.chars().count();
        if !(1..=MAX_APPLICATION_NAME).contains(&chars) {
            return Err(Error::InvalidConfig {
                name: "application",
                value: name,
                problem: format!(
                    "must be 1 to {MAX_APPLICATION_NAME} characters (it names the lease table)"
                ),
            });
        }
        Ok(ApplicationName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApplicationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ApplicationName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ApplicationName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

impl TryFrom<&str> for ApplicationName {
    type Error = Error;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl TryFrom<String> for ApplicationName {
    type Error = Error;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

/// What the lease coordination decides with under the worker's default settings (for the
/// simulation's cold starts).
#[cfg(any(test, feature = "unstable-internals"))]
pub(crate) fn default_settings() -> Settings {
    Config::new(
        StreamRef::Name("stream".to_owned()),
        ApplicationName("application".to_owned()),
    )
    .settings()
}

impl Config {
    pub(crate) fn new(stream: StreamRef, application: ApplicationName) -> Self {
        Config {
            stream,
            table: application.as_str().to_owned(),
            application,
            billing: BillingMode::OnDemand,
            worker_id: default_worker_id(),
            initial_position: InitialPosition::Latest,
            initial_timestamp: None,
            failover: Duration::from_secs(10),
            renew_interval: Duration::from_secs(4),
            scan_interval: Duration::from_secs(2),
            shard_sync_interval: Duration::from_secs(60),
            handoff_timeout: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(30),
            max_leases: None,
            max_handoffs: None,
            max_records: MAX_RECORDS_PER_CALL,
            min_fetch_interval: MIN_FETCH_INTERVAL,
            max_idle: DEFAULT_MAX_IDLE,
            max_concurrent_reads: MAX_CONCURRENT_READS,
            prefetch_records: 30_000,
            prefetch_bytes: 16 * 1024 * 1024,
            call_timeout: Duration::from_secs(10),
            table_timeout: Duration::from_secs(120),
            retrieval: Retrieval::Polling,
            failure_policy: FailurePolicy::default(),
            slow_callback: Duration::from_secs(30),
            start_attempts: 20,
            fatal_after: Duration::from_secs(30),
        }
    }

    /// How long after sending its last successful renewal a worker still trusts a lease: the
    /// failover time less a margin, so that processing stops before any other worker may judge
    /// the lease expired.
    pub(crate) fn trust(&self) -> Duration {
        let margin = (self.failover / 10).max(Duration::from_millis(250));
        self.failover.saturating_sub(margin)
    }

    /// How long a lease-table call waits for its answer (renewals may wait longer, see
    /// `coordination::renewal_window`): half a renewal interval, so that a call lost outright
    /// can be made again while its lease is trusted, and at most the call timeout.
    pub(crate) fn table_call_timeout(&self) -> Duration {
        self.call_timeout.min(self.renew_interval / 2)
    }

    /// What the lease coordination decides with.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            failover: self.failover,
            trust: self.trust(),
            renew_interval: self.renew_interval,
            scan_interval: self.scan_interval,
            shard_sync_interval: self.shard_sync_interval,
            handoff_timeout: self.handoff_timeout,
            shutdown_timeout: self.shutdown_timeout,
            max_leases: self.max_leases,
            max_handoffs: self.max_handoffs,
            watchers: crate::coordination::WATCHERS,
            slow_scan: self.failover * 2,
            call_timeout: self.table_call_timeout(),
            longest_call: self.call_timeout,
            scan_budget: crate::coordination::FLEET_SCAN_ITEMS,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |name: &'static str, value: String, problem: &str| {
            Err(Error::InvalidConfig {
                name,
                value,
                problem: problem.to_owned(),
            })
        };
        if let Some(problem) = self.stream.problem() {
            return bad("stream", self.stream.to_string(), problem);
        }
        if self.table.is_empty() || self.table.len() > 255 {
            return bad(
                "table_name",
                self.table.clone(),
                "must be 1 to 255 characters",
            );
        }
        if self.worker_id.is_empty() {
            return bad("worker_id", String::new(), "must not be empty");
        }
        // Every duration within a day: instants a setting away from now must not overflow the
        // clock (a panic), and longer ones are mistakes.
        let mut durations = vec![
            ("renew_interval", self.renew_interval),
            ("scan_interval", self.scan_interval),
            ("shard_sync_interval", self.shard_sync_interval),
            ("handoff_timeout", self.handoff_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("max_idle", self.max_idle),
            ("call_timeout", self.call_timeout),
            ("table_timeout", self.table_timeout),
            ("slow_callback_warning", self.slow_callback),
            ("fatal_error_timeout", self.fatal_after),
            ("on_failure", self.failure_policy.max_backoff),
            ("on_failure", self.failure_policy.within.unwrap_or_default()),
        ];
        if let Retrieval::FanOut(fan_out) = &self.retrieval {
            durations.push(("register_timeout", fan_out.register_timeout));
            durations.push(("silence_timeout", fan_out.silence_timeout));
        }
        if let Some((name, value)) = durations.into_iter().find(|(_, d)| *d > MAX_FAILOVER) {
            return bad(name, format!("{value:?}"), "must be at most 24 h");
        }
        if self.failover < Duration::from_secs(1) || self.failover > MAX_FAILOVER {
            return bad(
                "failover_time",
                format!("{:?}", self.failover),
                "must be at least 1 s and at most 24 h",
            );
        }
        if self.renew_interval.is_zero()
            || self
                .renew_interval
                .checked_mul(2)
                .is_none_or(|twice| twice > self.trust())
        {
            return bad(
                "renew_interval",
                format!("{:?}", self.renew_interval),
                "must leave two renewals within the failover time (at most 45 % of it)",
            );
        }
        if self.slow_callback.is_zero() {
            return bad(
                "slow_callback_warning",
                format!("{:?}", self.slow_callback),
                "must be positive",
            );
        }
        if self.start_attempts == 0 {
            return bad("start_attempts", "0".to_owned(), "must be at least 1");
        }
        if self.failure_policy.min_backoff.is_zero() {
            return bad(
                "on_failure",
                format!("{:?}", self.failure_policy.min_backoff),
                "the backoff must be positive (a failing processor would be called in a busy loop)",
            );
        }
        if self.failure_policy.min_backoff > self.failure_policy.max_backoff {
            return bad(
                "on_failure",
                format!(
                    "backoff {:?} to {:?}",
                    self.failure_policy.min_backoff, self.failure_policy.max_backoff
                ),
                "the minimum backoff must not exceed the maximum",
            );
        }
        if let Some(problem) = self.billing.problem() {
            return bad("billing_mode", format!("{:?}", self.billing), problem);
        }
        if self.scan_interval.is_zero() {
            return bad(
                "scan_interval",
                format!("{:?}", self.scan_interval),
                "must be positive",
            );
        }
        if !(1..=MAX_RECORDS_PER_CALL).contains(&self.max_records) {
            return bad(
                "max_records",
                self.max_records.to_string(),
                "must be 1 to 10,000 (the GetRecords limit)",
            );
        }
        if self.max_concurrent_reads > tokio::sync::Semaphore::MAX_PERMITS {
            return bad(
                "max_concurrent_reads",
                self.max_concurrent_reads.to_string(),
                "must be at most usize::MAX >> 3 (the most permits a semaphore holds)",
            );
        }
        if self.max_idle < self.min_fetch_interval {
            return bad(
                "max_idle",
                format!("{:?}", self.max_idle),
                "must be at least 200 ms (the shortest pause between reads of a shard)",
            );
        }
        for (name, value) in [
            ("shard_sync_interval", self.shard_sync_interval),
            ("handoff_timeout", self.handoff_timeout),
        ] {
            if value.is_zero() {
                return bad(name, format!("{value:?}"), "must be positive");
            }
        }
        if self.initial_position == InitialPosition::AtTimestamp && self.initial_timestamp.is_none()
        {
            return bad(
                "initial_position",
                "AtTimestamp".to_owned(),
                "needs a timestamp (initial_timestamp)",
            );
        }
        if let Retrieval::FanOut(fan_out) = &self.retrieval {
            let name = fan_out
                .consumer_name
                .as_deref()
                .unwrap_or(self.application.as_str());
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
            if name.is_empty() || name.len() > 128 || !name.chars().all(allowed) {
                return bad(
                    "consumer_name",
                    name.to_owned(),
                    "must be 1 to 128 characters of a-z, A-Z, 0-9, '_', '.' and '-' \
                     (the stream consumer's name; it defaults to the application name)",
                );
            }
            if fan_out.silence_timeout < Duration::from_secs(1) {
                return bad(
                    "silence_timeout",
                    format!("{:?}", fan_out.silence_timeout),
                    "must be at least 1 s",
                );
            }
            if fan_out.register_timeout.is_zero() {
                return bad(
                    "register_timeout",
                    format!("{:?}", fan_out.register_timeout),
                    "must be positive",
                );
            }
        }
        Ok(())
    }

    /// Most records per `GetRecords` call, as the SDK takes it (at most 10,000 once validated).
    pub(crate) fn max_records_per_call(&self) -> i32 {
        i32::try_from(self.max_records).unwrap_or(i32::MAX)
    }

    /// The stream consumer's name, with fan-out retrieval.
    pub(crate) fn fan_out(&self) -> Option<(&FanOut, &str)> {
        match &self.retrieval {
            Retrieval::FanOut(fan_out) => Some((
                fan_out,
                fan_out
                    .consumer_name
                    .as_deref()
                    .unwrap_or(self.application.as_str()),
            )),
            Retrieval::Polling => None,
        }
    }
}

/// The host name and a random suffix, so that two workers on one host differ.
fn default_worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "worker".to_owned()
    } else {
        host
    };
    format!("{host}-{:08x}", rand::random::<u32>())
}
