//! The worker: the builder, the handle of a running worker, and the task that performs what the
//! lease coordination (`coordination`) decides — scans, conditional writes, a task per held
//! shard — and feeds the answers back to it.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{Mutex, watch},
    task::JoinSet,
    time::Instant,
};
use tracing::{Instrument, debug, error, info, warn};

use crate::{
    config::{Config, Retrieval},
    coordination::{Action, Exited, Input, Machine, Outcome, Role, Stop},
    error::Error,
    fanout::Registration,
    kinesis,
    lease::Lease,
    lease_table::{BillingMode, LeaseTable},
    lineage::{self, InitialPosition},
    metrics as m,
    processor::ShardProcessor,
    shard::{self, ShardContext},
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
    /// withdraws the request (default 15 s; the KCL's graceful handoff timeout is 30 s). The
    /// previous owner keeps the lease, since it still renews it and so still trusts it: taking it
    /// anyway, as the KCL does, would run two processors at once. A previous owner that stops
    /// renewing loses the lease by expiry, as any other.
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
            // A call is given up early enough that a renewal can be tried again while the lease
            // is still trusted.
            table: LeaseTable::new(self.dynamodb, self.cfg.table.clone())
                .with_call_timeout(self.cfg.call_timeout.min(self.cfg.renew_interval / 2)),
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

/// A shard task this worker runs.
struct Task {
    key: String,
    trust: watch::Sender<Instant>,
    stop: watch::Sender<Stop>,
}

/// The worker's task: performs what the lease coordination ([`Machine`]) decides and feeds the
/// answers back. It decides nothing itself.
struct Worker<F> {
    cfg: Arc<Config>,
    kinesis: aws_sdk_kinesis::Client,
    table: LeaseTable,
    processors: Arc<F>,
    me: Arc<str>,
    /// The shard tasks, and which lease each runs.
    shards: JoinSet<Exited>,
    tasks: HashMap<tokio::task::Id, Task>,
    /// Each started lease's own copy, shared by its checkpoints and the worker's renewals (whose
    /// writes raise its counter); kept after its task ends, for the release.
    copies: HashMap<String, Arc<Mutex<Lease>>>,
    /// Calls under way, each answering with an input; if one panics, its fallback input.
    calls: JoinSet<Input>,
    fallbacks: HashMap<tokio::task::Id, Input>,
    /// The stream consumer, with enhanced fan-out retrieval.
    fan_out: Option<Arc<Registration>>,
    labels: [(&'static str, String); 2],
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
            labels: [
                ("stream", consumer.cfg.stream.clone()),
                ("worker", consumer.cfg.worker_id.clone()),
            ],
            me: Arc::from(consumer.cfg.worker_id.as_str()),
            cfg: consumer.cfg,
            kinesis: consumer.kinesis,
            table: consumer.table,
            processors: consumer.processors,
            shards: JoinSet::new(),
            tasks: HashMap::new(),
            copies: HashMap::new(),
            calls: JoinSet::new(),
            fallbacks: HashMap::new(),
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
        let mut machine = Machine::new(self.me.to_string(), self.cfg.settings(), Instant::now());
        let mut input = Input::Tick;
        let mut shutdown_asked = false;
        loop {
            self.count(&input);
            for action in machine.handle(input, Instant::now()) {
                self.perform(action);
            }
            metrics::gauge!(m::LEASES_HELD, &self.labels).set(machine.running() as f64);
            if machine.is_finished() {
                break;
            }
            let wake = machine
                .next_wake()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            input = tokio::select! {
                // A shard task's end first: the machine must not renew a lease whose processor
                // has already stopped because a timer came due at the same moment.
                biased;
                Some(joined) = self.shards.join_next_with_id() => self.exited(joined),
                changed = stop.changed(), if !shutdown_asked => {
                    if changed.is_err() || *stop.borrow() {
                        shutdown_asked = true;
                        Input::ShutdownAsked
                    } else {
                        Input::Tick
                    }
                }
                Some(answered) = self.calls.join_next_with_id() => match answered {
                    Ok((id, input)) => {
                        self.fallbacks.remove(&id);
                        input
                    }
                    Err(failed) => {
                        error!(error = %failed, "a lease table call failed unexpectedly");
                        self.fallbacks.remove(&failed.id()).unwrap_or(Input::Tick)
                    }
                },
                _ = tokio::time::sleep_until(wake) => Input::Tick,
            };
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

    /// A shard task ended: how, as the machine needs to know it.
    fn exited(
        &mut self,
        joined: Result<(tokio::task::Id, Exited), tokio::task::JoinError>,
    ) -> Input {
        let (id, how) = match joined {
            Ok((id, how)) => (id, how),
            Err(failed) if failed.is_panic() => {
                let id = failed.id();
                let payload = failed.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".to_owned());
                (id, Exited::Panicked(message))
            }
            Err(failed) => (failed.id(), Exited::Aborted),
        };
        let Some(task) = self.tasks.remove(&id) else {
            error!(?how, "an unknown shard task ended");
            return Input::Tick;
        };
        Input::Exited { key: task.key, how }
    }

    /// Spawns a call that answers with an input (`fallback` if it panics).
    fn call(&mut self, fallback: Input, call: impl Future<Output = Input> + Send + 'static) {
        let id = self.calls.spawn(call).id();
        self.fallbacks.insert(id, fallback);
    }

    fn perform(&mut self, action: Action) {
        let me = self.me.clone();
        let table = self.table.clone();
        match action {
            Action::Scan => self.call(Input::Scanned(None), async move {
                match table.scan().await {
                    Ok(scan) => Input::Scanned(Some(scan.leases)),
                    Err(error) => {
                        warn!(%error, "lease scan failed");
                        Input::Scanned(None)
                    }
                }
            }),
            Action::SyncShards => {
                let kinesis = self.kinesis.clone();
                let cfg = self.cfg.clone();
                self.call(Input::Synced(false), async move {
                    match sync_shards(&kinesis, &table, &cfg).await {
                        Ok(()) => Input::Synced(true),
                        Err(error) => {
                            warn!(%error, "shard sync failed; trying again soon");
                            Input::Synced(false)
                        }
                    }
                });
            }
            Action::Renew { key } => {
                let Some(copy) = self.copies.get(&key).cloned() else {
                    error!(lease = %key, "no copy of a running lease to renew");
                    return;
                };
                let fallback = Input::Renewed {
                    key: key.clone(),
                    sent: Instant::now(),
                    outcome: Outcome::Failed,
                };
                self.call(fallback, async move {
                    let mut lease = copy.lock().await;
                    let sent = Instant::now();
                    let result = table.renew(&lease, &me).await;
                    if let Ok(renewed) = &result {
                        *lease = renewed.clone();
                    }
                    Input::Renewed {
                        key,
                        sent,
                        outcome: outcome(result, "renewal"),
                    }
                });
            }
            Action::Take { lease } => {
                let key = lease.key.clone();
                let fallback = Input::Taken {
                    key: key.clone(),
                    sent: Instant::now(),
                    outcome: Outcome::Failed,
                };
                self.call(fallback, async move {
                    let sent = Instant::now();
                    let result = table.take(&lease, &me).await;
                    Input::Taken {
                        key,
                        sent,
                        outcome: outcome(result, "take"),
                    }
                });
            }
            Action::AskHandoff { lease } => {
                let key = lease.key.clone();
                let fallback = Input::HandoffAsked {
                    key: key.clone(),
                    outcome: Outcome::Failed,
                };
                self.call(fallback, async move {
                    let result = table.hand_off(&lease, &me).await;
                    Input::HandoffAsked {
                        key,
                        outcome: outcome(result, "handoff request"),
                    }
                });
            }
            Action::Release { lease, role } => {
                let key = lease.key.clone();
                // Withdrawing a handoff request concerns a lease this worker does not run: its
                // copy, if any, is of an earlier run.
                let copy = match role {
                    Role::NewOwner => None,
                    Role::Owner | Role::PreviousOwner => self.copies.get(&key).cloned(),
                };
                let fallback = Input::Released {
                    key: key.clone(),
                    outcome: Outcome::Failed,
                };
                self.call(fallback, async move {
                    // The shard's own copy, if it ran, unless the machine knows a newer item
                    // (a release tried again with the item a refusal showed).
                    let mut own = match &copy {
                        Some(copy) => Some(copy.lock().await),
                        None => None,
                    };
                    let base = match own.as_deref() {
                        Some(own) if own.counter >= lease.counter => own.clone(),
                        _ => lease,
                    };
                    let result = table.release_as(&base, &me, role).await;
                    if let (Some(own), Ok(released)) = (own.as_deref_mut(), &result) {
                        *own = released.clone();
                    }
                    Input::Released {
                        key,
                        outcome: outcome(result, "release"),
                    }
                });
            }
            Action::Start { lease, trust_until } => self.start(lease, trust_until),
            Action::Trust { key, until } => {
                if let Some(task) = self.task(&key) {
                    let _ = task.trust.send(until);
                }
            }
            Action::Revoke { key } => {
                if let Some(task) = self.task(&key) {
                    let _ = task.trust.send(Instant::now());
                }
            }
            Action::Stop { key, reason } => {
                if let Some(task) = self.task(&key) {
                    let _ = task.stop.send(reason);
                }
            }
            Action::Forget { key } => {
                self.copies.remove(&key);
            }
            Action::AbortProcessors => self.shards.abort_all(),
            Action::Finished => {}
        }
    }

    fn task(&self, key: &str) -> Option<&Task> {
        self.tasks.values().find(|t| t.key == key)
    }

    fn start(&mut self, lease: Lease, trust_until: Instant) {
        let key = lease.key.clone();
        if self.task(&key).is_some() {
            // The machine starts a lease only from a take; a task still running for it would be a
            // defect there. Never run two processors for one shard.
            error!(lease = %key, "a processor already runs for this lease; not started again");
            return;
        }
        let shard_id: Arc<str> = Arc::from(key.as_str());
        let lease = Arc::new(Mutex::new(lease));
        self.copies.insert(key.clone(), lease.clone());
        let (trust_tx, trust_rx) = watch::channel(trust_until);
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let ctx = ShardContext {
            cfg: self.cfg.clone(),
            kinesis: self.kinesis.clone(),
            table: self.table.clone(),
            worker: self.me.clone(),
            shard_id,
            lease,
            fan_out: self.fan_out.clone(),
        };
        // The application's processor is made inside the shard's task: a panic there is that
        // task's, handled as a processor's panic, not the worker's.
        let processors = self.processors.clone();
        let span = tracing::info_span!("shard", shard_id = %key);
        let made_for = key.clone();
        let id = self
            .shards
            .spawn(
                async move {
                    let processor = processors(&made_for);
                    shard::run(ctx, processor, stop_rx, trust_rx).await
                }
                .instrument(span),
            )
            .id();
        self.tasks.insert(
            id,
            Task {
                key,
                trust: trust_tx,
                stop: stop_tx,
            },
        );
    }

    /// Metrics of what happened.
    fn count(&self, input: &Input) {
        let counter = |name: &'static str, outcome: &'static str| {
            metrics::counter!(name, "stream" => self.cfg.stream.clone(),
                "worker" => self.me.to_string(), "outcome" => outcome)
            .increment(1);
        };
        match input {
            Input::Renewed { outcome: o, .. } => {
                counter(m::RENEWALS, outcome_label(o, "ok", "lost"))
            }
            Input::Taken { outcome: o, .. } => {
                counter(m::LEASE_TAKES, outcome_label(o, "taken", "raced"))
            }
            Input::HandoffAsked {
                outcome: Outcome::Written(_),
                ..
            } => counter(m::HANDOFFS_ASKED, "asked"),
            Input::Exited {
                how: Exited::LeaseLost,
                ..
            } => counter(m::LEASES_LOST, "lost"),
            Input::Exited {
                how: Exited::Panicked(_),
                ..
            } => counter(m::PROCESSOR_PANICS, "panicked"),
            _ => {}
        }
    }
}

fn outcome_label(outcome: &Outcome, written: &'static str, refused: &'static str) -> &'static str {
    match outcome {
        Outcome::Written(_) => written,
        Outcome::Refused(_) => refused,
        Outcome::Failed => "failed",
    }
}

/// A conditional write's result as the machine takes it.
fn outcome(result: Result<Lease, Error>, what: &str) -> Outcome {
    match result {
        Ok(lease) => Outcome::Written(lease),
        Err(Error::LeaseLost { current, .. }) => Outcome::Refused(current.map(|l| *l)),
        Err(error) => {
            debug!(%error, "{what} failed");
            Outcome::Failed
        }
    }
}

/// Creates the first leases (empty table) or repairs holes, and deletes finished leases whose
/// children have started.
async fn sync_shards(
    kinesis: &aws_sdk_kinesis::Client,
    table: &LeaseTable,
    cfg: &Config,
) -> Result<(), Error> {
    let shards = kinesis::list_shards(kinesis, &cfg.stream, cfg.call_timeout)
        .await
        .map_err(|f| Error::Kinesis {
            operation: "ListShards",
            stream: cfg.stream.clone(),
            code: f.code,
            retryable: f.retryable,
            source: Some(f.source),
        })?;
    let scan = table.scan().await?;
    let by_key: HashMap<&str, &Lease> = scan.leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let create = if scan.leases.is_empty() {
        lineage::initial_leases(&shards, cfg.initial_position)
    } else {
        lineage::repairs(&shards, &by_key)
    };
    for lease in &create {
        if table.create(lease).await? {
            debug!(lease = %lease.key, checkpoint = %lease.checkpoint, "lease created");
        }
    }
    for key in lineage::removable(&by_key) {
        if table.delete_finished(&key).await? {
            debug!(lease = %key, "finished lease removed");
        }
    }
    Ok(())
}
