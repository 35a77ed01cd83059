//! The worker: one task that scans the lease table, renews what it holds, takes and asks for
//! leases, and runs a task per held shard.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::{
    sync::{Mutex, watch},
    task::JoinSet,
    time::Instant,
};
use tracing::{Instrument, debug, info, warn};

use crate::{
    balance::{self, BalanceLimits, Observations},
    config::{Config, Retrieval},
    error::Error,
    fanout::Registration,
    kinesis,
    lease::Lease,
    lease_table::{BillingMode, LeaseTable},
    lineage::{self, InitialPosition},
    metrics as m,
    processor::ShardProcessor,
    shard::{self, Exit, ShardContext, Stop},
};

/// Builds a [`Consumer`]: the stream, the application (which names the lease table), the AWS
/// clients, and a function that makes a processor for each shard the worker starts.
#[must_use]
pub struct ConsumerBuilder<F> {
    cfg: Config,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    processors: F,
}

impl<F, P> ConsumerBuilder<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    /// The lease table's name (default: the application name, as the KCL's).
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.cfg.table = name.into();
        self
    }

    /// How the lease table is billed if this worker creates it (default on-demand, as the KCL).
    pub fn billing_mode(mut self, billing: BillingMode) -> Self {
        self.cfg.billing = billing;
        self
    }

    /// This worker's name in the lease table (default: the host name and a random suffix).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.cfg.worker_id = id.into();
        self
    }

    /// Where a new application starts (default `LATEST`, the KCL's default in code).
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.cfg.initial_position = position;
        self
    }

    /// The timestamp for [`InitialPosition::AtTimestamp`].
    pub fn initial_timestamp(mut self, at: SystemTime) -> Self {
        self.cfg.initial_timestamp = Some(at);
        self
    }

    /// The failover time (the KCL's `failoverTimeMillis`, default 10 s): a lease whose counter
    /// has not moved this long is expired, and a worker stops processing a lease it could not
    /// renew for a little less than this.
    pub fn failover_time(mut self, failover: Duration) -> Self {
        self.cfg.failover = failover;
        self
    }

    /// How often held leases are renewed (default 4 s; the KCL renews every failover / 3).
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.cfg.renew_interval = interval;
        self
    }

    /// How often the lease table is scanned for leases to take (default 2 s; the KCL's taker
    /// runs every 2 x (failover + 25 ms), 20 s). An expiry is acted on when it falls due, not
    /// at the next scan.
    pub fn scan_interval(mut self, interval: Duration) -> Self {
        self.cfg.scan_interval = interval;
        self
    }

    /// How often the shard list is compared with the leases to repair holes (the KCL's
    /// `shardSyncIntervalMillis`, default 60 s).
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.cfg.shard_sync_interval = interval;
        self
    }

    /// How long a lease this worker asked for may stay with its previous owner before this worker
    /// takes it anyway (default 15 s; the KCL's graceful handoff timeout is 30 s).
    pub fn handoff_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.handoff_timeout = timeout;
        self
    }

    /// Most leases this worker holds (the KCL's `maxLeasesForWorker`; default no limit).
    pub fn max_leases(mut self, max: usize) -> Self {
        self.cfg.max_leases = Some(max);
        self
    }

    /// Most leases asked for in one cycle (default: as many as the fair share needs; the KCL's
    /// `maxLeasesToStealAtOneTime` is 1).
    pub fn max_handoffs_per_cycle(mut self, max: usize) -> Self {
        self.cfg.max_handoffs = Some(max);
        self
    }

    /// Most records per `GetRecords` call (the KCL's `maxRecords`, default 10,000).
    pub fn max_records(mut self, max: i32) -> Self {
        self.cfg.max_records = max;
        self
    }

    /// The longest pause between reads of a quiet shard (default 1 s; the KCL waits 1.5 s
    /// between all reads). A shard with a backlog is read again after 200 ms.
    pub fn max_idle(mut self, idle: Duration) -> Self {
        self.cfg.max_idle = idle;
        self
    }

    /// Records and bytes read ahead per shard, waiting for the processor (default 30,000 records
    /// and 16 MiB).
    pub fn prefetch(mut self, records: usize, bytes: usize) -> Self {
        self.cfg.prefetch_records = records;
        self.cfg.prefetch_bytes = bytes;
        self
    }

    /// How long a graceful shutdown waits for processors to checkpoint before releasing their
    /// leases anyway (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.shutdown_timeout = timeout;
        self
    }

    /// How records are read (default [`Retrieval::Polling`]); [`Retrieval::FanOut`] registers
    /// a stream consumer and subscribes to each shard.
    pub fn retrieval(mut self, retrieval: Retrieval) -> Self {
        self.cfg.retrieval = retrieval;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Consumer<F>, Error> {
        self.cfg.validate()?;
        Ok(Consumer {
            table: LeaseTable::new(self.dynamodb, self.cfg.table.clone()),
            cfg: Arc::new(self.cfg),
            kinesis: self.kinesis,
            processors: Arc::new(self.processors),
        })
    }
}

/// A worker of a consuming application, ready to run.
pub struct Consumer<F> {
    cfg: Arc<Config>,
    kinesis: aws_sdk_kinesis::Client,
    table: LeaseTable,
    processors: Arc<F>,
}

impl Consumer<()> {
    /// Starts building a worker for `stream`; `application` names the lease table (and should be
    /// the same for every worker of the application). `processors` makes the processor of each
    /// shard the worker starts, given its shard id.
    pub fn builder<F, P>(
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        stream: impl Into<String>,
        application: impl Into<String>,
        processors: F,
    ) -> ConsumerBuilder<F>
    where
        F: Fn(&str) -> P + Send + Sync + 'static,
        P: ShardProcessor,
    {
        ConsumerBuilder {
            cfg: Config::new(stream.into(), application.into()),
            kinesis,
            dynamodb,
            processors,
        }
    }
}

impl<F, P> Consumer<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    /// This worker's name in the lease table.
    pub fn worker_id(&self) -> &str {
        &self.cfg.worker_id
    }

    /// Starts the worker on the current tokio runtime. It creates the lease table if needed,
    /// creates the first leases if the table has none, then runs until
    /// [`Running::shutdown`].
    pub fn spawn(self) -> Running {
        let (stop_tx, stop_rx) = watch::channel(false);
        let span = tracing::info_span!(
            "kinesis_consumer",
            stream = %self.cfg.stream,
            lease_owner = %self.cfg.worker_id
        );
        let worker_id = self.cfg.worker_id.clone();
        let task = tokio::spawn(Worker::new(self).run(stop_rx).instrument(span));
        Running {
            stop: stop_tx,
            task: Some(task),
            worker_id,
        }
    }
}

/// A running worker.
///
/// Dropping it asks the worker to shut down gracefully, without waiting.
#[derive(Debug)]
pub struct Running {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    worker_id: String,
}

impl Running {
    /// This worker's name in the lease table.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Shuts down gracefully: stops taking leases, asks every processor to checkpoint
    /// ([`ShardProcessor::shutdown_requested`]), then releases the leases so that other workers
    /// take them at once, without waiting for the failover time.
    ///
    /// # Cancellation
    ///
    /// Dropping the future does not stop the shutdown; it goes on in the background.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Stops the worker at once, as a crash would: no processor is told, no lease is released,
    /// so other workers take its leases only once the failover time has passed. For tests and
    /// demonstrations of failover.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Waits for the worker to end (after a shutdown, or a failure it could not recover from,
    /// such as the lease table not becoming active).
    ///
    /// # Cancellation
    ///
    /// Dropping the future leaves the worker running.
    pub async fn wait(&mut self) -> Result<(), Error> {
        match self.task.as_mut() {
            Some(task) => {
                let result = task.await;
                self.task = None;
                match result {
                    Ok(outcome) => outcome,
                    Err(join) => Err(Error::Stopped {
                        reason: join.to_string(),
                    }),
                }
            }
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// How often the table is scanned while a handoff to this worker is under way.
const HANDOFF_POLL: Duration = Duration::from_millis(500);

/// A shard this worker holds.
struct Held {
    lease: Arc<Mutex<Lease>>,
    trust: watch::Sender<Instant>,
    stop: watch::Sender<Stop>,
}

struct Worker<F> {
    cfg: Arc<Config>,
    kinesis: aws_sdk_kinesis::Client,
    table: LeaseTable,
    processors: Arc<F>,
    me: Arc<str>,
    observations: Observations,
    held: HashMap<String, Held>,
    /// Leases asked for by handoff, and when.
    awaiting: HashMap<String, Instant>,
    shards: JoinSet<(String, Exit)>,
    /// Renewals under way, and the leases they are for.
    renewals: JoinSet<(String, Instant, Result<Lease, Error>)>,
    renewing: HashSet<String>,
    last_scan: Vec<Lease>,
    /// The stream consumer, with enhanced fan-out retrieval.
    fan_out: Option<Arc<Registration>>,
}

impl<F, P> Worker<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    fn new(consumer: Consumer<F>) -> Self {
        let fan_out = consumer.cfg.fan_out().map(|(fan_out, name)| {
            Arc::new(Registration::new(
                consumer.kinesis.clone(),
                consumer.cfg.stream.clone(),
                name.to_owned(),
                fan_out.register_timeout,
                consumer.cfg.call_timeout,
            ))
        });
        Worker {
            fan_out,
            me: Arc::from(consumer.cfg.worker_id.as_str()),
            cfg: consumer.cfg,
            kinesis: consumer.kinesis,
            table: consumer.table,
            processors: consumer.processors,
            observations: Observations::default(),
            held: HashMap::new(),
            awaiting: HashMap::new(),
            shards: JoinSet::new(),
            renewals: JoinSet::new(),
            renewing: HashSet::new(),
            last_scan: Vec::new(),
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        self.table
            .ensure(self.cfg.billing, self.cfg.table_timeout)
            .await?;
        if let Some(registration) = self.fan_out.clone() {
            // Wait until the stream consumer is active before taking any lease (a shutdown
            // asked meanwhile ends the wait).
            tokio::select! {
                found = registration.arn() => { found?; }
                _ = stop.wait_for(|stop| *stop) => {
                    info!("worker stopped before the stream consumer was active");
                    return Ok(());
                }
            }
        }
        info!(table = self.table.name(), "worker started");
        let mut next_scan = Instant::now();
        let mut next_renew = Instant::now() + self.cfg.renew_interval;
        let mut next_sync = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_sync {
                match self.sync_shards().await {
                    Ok(()) => next_sync = now + self.cfg.shard_sync_interval,
                    Err(error) => {
                        warn!(%error, "shard sync failed; trying again soon");
                        next_sync = now + self.cfg.scan_interval;
                    }
                }
            }
            if now >= next_renew {
                self.renew_all();
                next_renew = now + self.cfg.renew_interval;
            }
            if now >= next_scan {
                match self.scan_and_take().await {
                    Ok(()) => {}
                    Err(error) => warn!(%error, "lease scan failed"),
                }
                next_scan = now + self.cfg.scan_interval;
                // While leases asked for are being handed over, look more often: they start as
                // soon as their previous owner releases them.
                if !self.awaiting.is_empty() {
                    next_scan = next_scan.min(now + HANDOFF_POLL);
                }
                // Act on an expiry when it falls due rather than at the next periodic scan.
                if let Some(at) = self.observations.next_expiry(
                    &self.last_scan,
                    &self.me,
                    Instant::now(),
                    self.cfg.failover,
                ) {
                    next_scan = next_scan.min(at + Duration::from_millis(1));
                }
            }
            let wake = next_scan.min(next_renew).min(next_sync);
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return self.shut_down().await;
                    }
                }
                Some(joined) = self.shards.join_next() => {
                    // A shard that ended may let its children start now.
                    if let Ok((key, exit)) = joined
                        && self.on_exit(key, exit).await
                    {
                        next_scan = Instant::now();
                    }
                }
                Some(Ok((key, sent, result))) = self.renewals.join_next() => {
                    self.on_renewed(key, sent, result);
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Creates the first leases (empty table) or repairs holes, and deletes finished leases
    /// whose children have started.
    async fn sync_shards(&mut self) -> Result<(), Error> {
        let shards = kinesis::list_shards(&self.kinesis, &self.cfg.stream, self.cfg.call_timeout)
            .await
            .map_err(|f| Error::Kinesis {
                operation: "ListShards",
                stream: self.cfg.stream.clone(),
                code: f.code,
                retryable: f.retryable,
                source: Some(f.source),
            })?;
        let scan = self.table.scan().await?;
        let by_key: HashMap<&str, &Lease> =
            scan.leases.iter().map(|l| (l.key.as_str(), l)).collect();
        let create = if scan.leases.is_empty() {
            lineage::initial_leases(&shards, self.cfg.initial_position)
        } else {
            lineage::repairs(&shards, &by_key)
        };
        for lease in &create {
            if self.table.create(lease).await? {
                debug!(lease = %lease.key, checkpoint = %lease.checkpoint, "lease created");
            }
        }
        for key in lineage::removable(&by_key) {
            if self.table.delete_finished(&key).await? {
                debug!(lease = %key, "finished lease removed");
            }
        }
        Ok(())
    }

    /// Starts a renewal of every held lease that has none under way. Each retries retryable
    /// failures (throttling, 5xx, timeouts) with a short jittered backoff while the lease is
    /// still trusted; results arrive through [`Worker::on_renewed`].
    fn renew_all(&mut self) {
        for (key, held) in &self.held {
            if !self.renewing.insert(key.clone()) {
                continue;
            }
            let table = self.table.clone();
            let me = self.me.clone();
            let lease = held.lease.clone();
            let key = key.clone();
            let give_up = Instant::now() + self.cfg.renew_interval;
            self.renewals.spawn(async move {
                let mut delays = ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_millis(500))
                    .with_jitter()
                    .without_max_times()
                    .build();
                loop {
                    let mut lease = lease.lock().await;
                    let sent = Instant::now();
                    let result = table.renew(&lease, &me).await;
                    match &result {
                        Ok(renewed) => *lease = renewed.clone(),
                        Err(error) if error.is_retryable() && Instant::now() < give_up => {
                            drop(lease);
                            debug!(lease = %key, %error, "renewal failed; trying again");
                            tokio::time::sleep(delays.next().unwrap_or(Duration::from_millis(500)))
                                .await;
                            continue;
                        }
                        Err(_) => {}
                    }
                    return (key, sent, result);
                }
            });
        }
    }

    /// A renewal's answer: trust the lease longer, learn of a handoff, or stop processing.
    fn on_renewed(&mut self, key: String, sent: Instant, result: Result<Lease, Error>) {
        self.renewing.remove(&key);
        let Some(held) = self.held.get(&key) else {
            return;
        };
        match result {
            Ok(lease) => {
                self.count(m::RENEWALS, "ok");
                let _ = held.trust.send(sent + self.cfg.trust());
                self.observations.note(&lease, Instant::now());
                if lease.checkpoint_owner.as_deref() == Some(&*self.me) {
                    debug!(lease = %key, to = ?lease.owner, "handoff asked for");
                    let _ = held.stop.send(Stop::Handoff);
                }
            }
            Err(Error::LeaseLost { .. }) => {
                self.count(m::RENEWALS, "lost");
                info!(lease = %key, "lease lost");
                // The shard's task stops at once and reports it.
                let _ = held.trust.send(Instant::now());
            }
            Err(error) => {
                self.count(m::RENEWALS, "failed");
                warn!(lease = %key, %error, "renewal failed");
            }
        }
    }

    fn count(&self, name: &'static str, outcome: &'static str) {
        metrics::counter!(name, "stream" => self.cfg.stream.clone(), "worker" => self.me.to_string(),
            "outcome" => outcome)
        .increment(1);
    }

    fn count_held(&self) {
        metrics::gauge!(m::LEASES_HELD, "stream" => self.cfg.stream.clone(), "worker" => self.me.to_string())
            .set(self.held.len() as f64);
    }

    async fn scan_and_take(&mut self) -> Result<(), Error> {
        let scan = self.table.scan().await?;
        let now = Instant::now();
        self.observations.record(&scan.leases, now);
        self.last_scan = scan.leases;
        // A lease this worker holds that names another owner and this worker as
        // `checkpointOwner` was asked for: hand it over now rather than at the next renewal.
        for lease in &self.last_scan {
            if lease.checkpoint_owner.as_deref() == Some(&*self.me)
                && lease.owner.as_deref() != Some(&*self.me)
                && let Some(held) = self.held.get(&lease.key)
                && *held.stop.borrow() == Stop::Run
            {
                debug!(lease = %lease.key, to = ?lease.owner, "handoff asked for");
                let _ = held.stop.send(Stop::Handoff);
            }
        }
        self.follow_handoffs(now).await;

        let mut mine: HashSet<String> = self.held.keys().cloned().collect();
        mine.extend(self.awaiting.keys().cloned());
        let plan = balance::plan(
            &self.last_scan,
            &self.observations,
            &self.me,
            &mine,
            now,
            BalanceLimits {
                failover: self.cfg.failover,
                max_leases: self.cfg.max_leases,
                max_handoffs: self.cfg.max_handoffs,
            },
        );
        for lease in plan.take {
            let sent = Instant::now();
            match self.table.take(&lease, &self.me).await {
                Ok(taken) => {
                    self.count(m::LEASE_TAKES, "taken");
                    info!(lease = %taken.key, from = ?lease.owner, "lease taken");
                    self.start(taken, sent);
                }
                Err(Error::LeaseLost { .. }) => {
                    self.count(m::LEASE_TAKES, "raced");
                    debug!(lease = %lease.key, "another worker took it first");
                }
                Err(error) => warn!(lease = %lease.key, %error, "take failed"),
            }
        }
        for lease in plan.hand_off {
            match self.table.hand_off(&lease, &self.me).await {
                Ok(_) => {
                    self.count(m::HANDOFFS_ASKED, "asked");
                    info!(lease = %lease.key, from = ?lease.owner, "handoff asked for");
                    self.awaiting.insert(lease.key.clone(), Instant::now());
                }
                Err(Error::LeaseLost { .. }) => {}
                Err(error) => warn!(lease = %lease.key, %error, "handoff request failed"),
            }
        }
        Ok(())
    }

    /// Starts leases whose previous owner released them to this worker; takes those it did not
    /// release in time.
    async fn follow_handoffs(&mut self, now: Instant) {
        let by_key: HashMap<String, Lease> = self
            .last_scan
            .iter()
            .map(|l| (l.key.clone(), l.clone()))
            .collect();
        let awaiting: Vec<(String, Instant)> = self.awaiting.drain().collect();
        for (key, asked) in awaiting {
            let Some(lease) = by_key.get(&key) else {
                continue;
            };
            if lease.owner.as_deref() != Some(&*self.me) {
                continue;
            }
            if lease.checkpoint_owner.is_none() {
                info!(lease = %key, "lease handed over");
                self.start(lease.clone(), now);
            } else if now.duration_since(asked) > self.cfg.handoff_timeout {
                let sent = Instant::now();
                match self.table.take(lease, &self.me).await {
                    Ok(taken) => {
                        warn!(lease = %key, "previous owner did not release in time; taken");
                        self.start(taken, sent);
                    }
                    Err(error) => {
                        debug!(lease = %key, %error, "taking after the handoff timeout failed")
                    }
                }
            } else {
                self.awaiting.insert(key, asked);
            }
        }
    }

    fn start(&mut self, lease: Lease, trusted_from: Instant) {
        let key = lease.key.clone();
        let shard_id: Arc<str> = Arc::from(key.as_str());
        self.observations.note(&lease, Instant::now());
        let lease = Arc::new(Mutex::new(lease));
        let (trust_tx, trust_rx) = watch::channel(trusted_from + self.cfg.trust());
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let ctx = ShardContext {
            cfg: self.cfg.clone(),
            kinesis: self.kinesis.clone(),
            table: self.table.clone(),
            worker: self.me.clone(),
            shard_id: shard_id.clone(),
            lease: lease.clone(),
            fan_out: self.fan_out.clone(),
        };
        let processor = (self.processors)(&key);
        let span = tracing::info_span!("shard", shard_id = %key);
        let task_key = key.clone();
        self.shards.spawn(
            async move {
                (
                    task_key,
                    shard::run(ctx, processor, stop_rx, trust_rx).await,
                )
            }
            .instrument(span),
        );
        self.held.insert(
            key,
            Held {
                lease,
                trust: trust_tx,
                stop: stop_tx,
            },
        );
        self.count_held();
    }

    /// A shard's task ended. Returns whether the shard ended (children may start).
    async fn on_exit(&mut self, key: String, exit: Exit) -> bool {
        let Some(held) = self.held.remove(&key) else {
            return false;
        };
        self.count_held();
        match exit {
            Exit::Ended { .. } => true,
            Exit::LeaseLost => {
                self.count(m::LEASES_LOST, "lost");
                false
            }
            Exit::Stopped(_) | Exit::Failed => {
                let lease = held.lease.lock().await.clone();
                match self.table.release(&lease, &self.me).await {
                    Ok(_) => info!(lease = %key, "lease released"),
                    Err(error) => debug!(lease = %key, %error, "release refused"),
                }
                false
            }
        }
    }

    async fn shut_down(mut self) -> Result<(), Error> {
        info!(held = self.held.len(), "shutting down");
        for held in self.held.values() {
            let _ = held.stop.send(Stop::Shutdown);
        }
        let deadline = Instant::now() + self.cfg.shutdown_timeout;
        let mut next_renew = Instant::now() + self.cfg.renew_interval;
        while !self.shards.is_empty() {
            tokio::select! {
                Some(joined) = self.shards.join_next() => {
                    if let Ok((key, exit)) = joined {
                        self.on_exit(key, exit).await;
                    }
                }
                Some(Ok((key, sent, result))) = self.renewals.join_next() => {
                    self.on_renewed(key, sent, result);
                }
                _ = tokio::time::sleep_until(next_renew.min(deadline)) => {
                    if Instant::now() >= deadline {
                        warn!(left = self.shards.len(), "processors did not stop in time");
                        self.shards.abort_all();
                        break;
                    }
                    self.renew_all();
                    next_renew = Instant::now() + self.cfg.renew_interval;
                }
            }
        }
        // Anything still held (its task was aborted) is released too.
        let left: Vec<String> = self.held.keys().cloned().collect();
        for key in left {
            self.on_exit(key, Exit::Failed).await;
        }
        if let (Some(registration), Some((fan_out, _))) = (&self.fan_out, self.cfg.fan_out())
            && fan_out.deregister_on_shutdown
            && let Err(error) = registration.deregister().await
        {
            warn!(%error, "deregistering the stream consumer failed");
        }
        info!("worker stopped");
        Ok(())
    }
}
