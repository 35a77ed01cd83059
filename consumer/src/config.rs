//! The consumer's settings, with the KCL's name and default next to each where there is one.

use std::time::{Duration, SystemTime};

use crate::{error::Error, lease_table::BillingMode, lineage::InitialPosition};

/// Every setting of a consumer; built by [`ConsumerBuilder`](crate::ConsumerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) stream: String,
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
    pub(crate) max_records: i32,
    pub(crate) min_fetch_interval: Duration,
    pub(crate) max_idle: Duration,
    pub(crate) prefetch_records: usize,
    pub(crate) prefetch_bytes: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) table_timeout: Duration,
}

/// Most records `GetRecords` returns per call (the service limit, and the KCL's `maxRecords`).
pub const MAX_RECORDS_PER_CALL: i32 = 10_000;

impl Config {
    pub(crate) fn new(stream: String, application: String) -> Self {
        Config {
            stream,
            table: application,
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
            min_fetch_interval: Duration::from_millis(200),
            max_idle: Duration::from_secs(1),
            prefetch_records: 30_000,
            prefetch_bytes: 16 * 1024 * 1024,
            call_timeout: Duration::from_secs(10),
            table_timeout: Duration::from_secs(120),
        }
    }

    /// How long after sending its last successful renewal a worker still trusts a lease: the
    /// failover time less a margin, so that processing stops before any other worker may judge
    /// the lease expired.
    pub(crate) fn trust(&self) -> Duration {
        let margin = (self.failover / 10).max(Duration::from_millis(250));
        self.failover.saturating_sub(margin)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |name: &'static str, value: String, problem: &str| {
            Err(Error::InvalidConfig {
                name,
                value,
                problem: problem.to_owned(),
            })
        };
        if self.stream.is_empty() {
            return bad("stream", String::new(), "must not be empty");
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
        if self.failover < Duration::from_secs(1) {
            return bad(
                "failover_time",
                format!("{:?}", self.failover),
                "must be at least 1 s",
            );
        }
        if self.renew_interval.is_zero() || self.renew_interval * 2 > self.trust() {
            return bad(
                "renew_interval",
                format!("{:?}", self.renew_interval),
                "must leave two renewals within the failover time (at most 45 % of it)",
            );
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
        if self.prefetch_records == 0 || self.prefetch_bytes == 0 {
            return bad(
                "prefetch",
                format!(
                    "{} records, {} bytes",
                    self.prefetch_records, self.prefetch_bytes
                ),
                "must both be positive",
            );
        }
        if self.initial_position == InitialPosition::AtTimestamp && self.initial_timestamp.is_none()
        {
            return bad(
                "initial_position",
                "AtTimestamp".to_owned(),
                "needs a timestamp (initial_timestamp)",
            );
        }
        Ok(())
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
