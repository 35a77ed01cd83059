//! The worker: the builder, the handle of a running worker, and the task that performs what the
//! lease coordination (`coordination`) decides — scans, conditional writes, a task per held
//! shard — and feeds the answers back to it.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    num::{NonZeroU32, NonZeroUsize},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{Mutex, Semaphore, watch},
    task::JoinSet,
    time::Instant,
};
use tracing::{Instrument, debug, error, info, warn};

use crate::{
    config::{ApplicationName, Config, Retrieval},
    coordination::{Action, Exited, Input, Machine, Outcome, Role, Stop},
    error::Error,
    failure::FailurePolicy,
    fanout::Registration,
    kinesis,
    lease::Lease,
    lease_table::{BillingMode, LeaseTable, Scan},
    lineage::{self, InitialPosition},
    metrics as m,
    processor::ShardProcessor,
    sdk_error::{CallFailure, is_access_denied},
    shard::{self, ShardContext},
    status::{Board, Health, Probe, Status},
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
    pub fn max_leases(mut self, max: NonZeroUsize) -> Self {
        self.cfg.max_leases = Some(max.get());
        self
    }

    /// Most leases asked for in one cycle (default: as many as the fair share needs; the KCL's
    /// `maxLeasesToStealAtOneTime` is 1). Zero never asks another worker for a lease: expired
    /// and free leases are still taken.
    pub fn max_handoffs_per_cycle(mut self, max: usize) -> Self {
        self.cfg.max_handoffs = Some(max);
        self
    }

    /// Most records per `GetRecords` call (the KCL's `maxRecords`, default and most 10,000,
    /// [`MAX_RECORDS_PER_CALL`](crate::MAX_RECORDS_PER_CALL); more makes
    /// [`build`](Self::build) fail with [`Error::InvalidConfig`]).
    pub fn max_records(mut self, max: NonZeroUsize) -> Self {
        self.cfg.max_records = max.get();
        self
    }

    /// The longest pause between reads of a quiet shard (default 1 s; the KCL waits 1.5 s
    /// between all reads; at least 200 ms). A shard with a backlog is read again after 200 ms.
    /// A quiet shard's pause is spread by up to a quarter either way; once it has grown to
    /// `max_idle` (nothing read several times in a row) it then ends on a 50 ms grid shared by
    /// the process's shards (up to 50 ms later), so that idle shards are polled together: a
    /// quarter less CPU per idle shard.
    pub fn max_idle(mut self, idle: Duration) -> Self {
        self.cfg.max_idle = idle;
        self
    }

    /// Most `GetRecords` and `GetShardIterator` calls this worker has under way at once, over
    /// all its shards (default [`MAX_CONCURRENT_READS`](crate::MAX_CONCURRENT_READS), 64; polling
    /// only). The SDK's client opens a connection per call under way and keeps it, so this also
    /// bounds the worker's connections to Kinesis: without it, a worker that takes 500 leases at
    /// once opens about 500, and keeps them while its shards are polled. A call waits for a
    /// permit, first come first served: 64 serve over 1,000 idle shards, but only about 75 to
    /// 130 shards read without pause (each holds a permit for every call, 200 ms to 1 s); raise
    /// it for a worker with more busy shards (waits are recorded in the histogram
    /// `kinesis_consumer_read_permit_wait_seconds`). A shard that stops with a call under way
    /// (shutdown, handoff, a lost lease) keeps its permit until that call ends (within the call
    /// timeout; its reader then stops, the answer dropped): the bound holds for the requests at
    /// Kinesis too.
    pub fn max_concurrent_reads(mut self, max: NonZeroUsize) -> Self {
        self.cfg.max_concurrent_reads = max.get();
        self
    }

    /// User records read ahead per shard, waiting for the processor (default 30,000).
    pub fn prefetch_records(mut self, records: NonZeroUsize) -> Self {
        self.cfg.prefetch_records = records.get();
        self
    }

    /// Bytes of records read ahead per shard, waiting for the processor (default 16 MiB).
    pub fn prefetch_bytes(mut self, bytes: NonZeroUsize) -> Self {
        self.cfg.prefetch_bytes = bytes.get();
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

    /// What happens to a batch whose processing failed (the processor returned an error or
    /// panicked): see [`FailurePolicy`]. The default tries the batch 10 times with backoff, then
    /// restarts the processor from the last checkpoint, again and again: nothing is lost or
    /// skipped, and the failures are logged, counted and shown by [`Running::status`].
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.cfg.failure_policy = policy;
        self
    }

    /// A processor callback that runs longer than this is reported (a warning and the
    /// `kinesis_consumer_slow_callbacks` metric, again each period it goes on); the KCL's
    /// `logWarningForTaskAfterMillis`. Default 30 s.
    pub fn slow_callback_warning(mut self, after: Duration) -> Self {
        self.cfg.slow_callback = after;
        self
    }

    /// How many times [`Consumer::start`] tries when it fails with an error that trying again
    /// could fix (throttling, 5xx, timeouts), a second apart (default 20, as the KCL's
    /// `maxInitializationAttempts`).
    pub fn start_attempts(mut self, attempts: NonZeroU32) -> Self {
        self.cfg.start_attempts = attempts.get();
        self
    }

    /// How long a running worker goes on while its stream is missing, or its lease table, or
    /// while its credentials are refused, before it shuts down and [`Running::wait`] returns the
    /// error (default 30 s). Leases it can no longer renew are lost sooner, by the failover time.
    pub fn fatal_error_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.fatal_after = timeout;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Consumer<F>, Error> {
        self.cfg.validate()?;
        Ok(Consumer {
            // A call is given up early enough that a renewal can be tried again while the lease
            // is still trusted.
            table: LeaseTable::new(self.dynamodb, self.cfg.table.clone())
                .with_call_timeout(self.cfg.table_call_timeout()),
            cfg: Arc::new(self.cfg),
            kinesis: self.kinesis,
            processors: Arc::new(self.processors),
        })
    }
}

impl<F> fmt::Debug for ConsumerBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// A worker of a consuming application, ready to run.
pub struct Consumer<F> {
    cfg: Arc<Config>,
    kinesis: aws_sdk_kinesis::Client,
    table: LeaseTable,
    processors: Arc<F>,
}

impl<F> fmt::Debug for Consumer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.cfg.stream)
            .field("application", &self.cfg.application)
            .field("worker_id", &self.cfg.worker_id)
            .finish_non_exhaustive()
    }
}

impl Consumer<()> {
    /// Starts building a worker for `stream` (a name, or an ARN: a string that starts with
    /// `arn:`) of `application`, which names the lease table (the same for every worker of the
    /// application; a type of its own, so that the two cannot be swapped). `processors` makes the
    /// processor of each shard the worker starts, given its shard id.
    pub fn builder<F, P>(
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        stream: impl Into<kinesis_calls::StreamRef>,
        application: ApplicationName,
        processors: F,
    ) -> ConsumerBuilder<F>
    where
        F: Fn(&str) -> P + Send + Sync + 'static,
        P: ShardProcessor,
    {
        ConsumerBuilder {
            cfg: Config::new(stream.into(), application),
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

    /// Starts the worker and returns once it runs: the lease table exists and is active (it is
    /// created if needed), it holds no leases of a KCL multi-stream application, the stream
    /// exists, the credentials may read both, and, with enhanced fan-out, the stream consumer is
    /// active. Errors that trying again could fix (throttling, 5xx, timeouts) are tried again a
    /// second apart, up to `start_attempts` (20) times; others fail at once, each with an error
    /// naming its cause ([`Error::StreamNotFound`], [`Error::AccessDenied`],
    /// [`Error::MultiStreamTable`], [`Error::TableNotActive`], [`Error::ConsumerNotActive`],
    /// [`Error::StartFailed`]).
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the start; no lease has been taken yet (a lease table whose
    /// creation was asked goes on being created).
    pub async fn start(self) -> Result<Running, Error> {
        let mut worker = Worker::new(self);
        worker.prepare().await?;
        Ok(worker.launch(true))
    }

    /// Starts the worker in the background on the current tokio runtime and returns at once; a
    /// start that fails (see [`Consumer::start`], which reports it directly) ends
    /// [`Running::wait`] with the error.
    pub fn spawn(self) -> Running {
        Worker::new(self).launch(false)
    }
}

/// A running worker.
///
/// Dropping it asks the worker to shut down gracefully, without waiting.
#[derive(Debug)]
pub struct Running {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    probe: Probe,
}

impl Running {
    /// This worker's name in the lease table.
    pub fn worker_id(&self) -> &str {
        &self.probe.worker_id
    }

    /// A handle on the worker's status and health that can be cloned and moved (into an HTTP
    /// handler serving Kubernetes probes, say); the `consume` example serves one.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// A snapshot of the worker: the shards it holds (each with its lease counter, checkpoint,
    /// last batch, lag and what its processor is doing, `Failing` with its attempts included),
    /// its last successful renewal and scan, and its recent errors.
    ///
    /// # Cancellation
    ///
    /// Dropping the future changes nothing.
    pub async fn status(&self) -> Status {
        self.probe.status().await
    }

    /// Whether the worker is live and ready, for a Kubernetes liveness and readiness probe (see
    /// [`Health`]).
    pub fn health(&self) -> Health {
        self.probe.health()
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

    /// Waits for the worker to end: after a shutdown (`Ok`), or an error it cannot recover from,
    /// which it returns: a start that failed (with [`Consumer::spawn`]), or, while it ran, its
    /// stream or lease table deleted or its credentials refused for longer than the fatal error
    /// timeout (30 s by default; [`Error::StreamNotFound`], [`Error::TableNotFound`],
    /// [`Error::AccessDenied`]), after which it shut down as gracefully as it could. So `wait`
    /// returns within that timeout plus the shutdown timeout of such a condition.
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

/// Most takes and handoff requests a worker has under way at once. A worker that starts beside a
/// table of 1,000 free leases asks for its share in one cycle: unbounded, each write is a call
/// under way and a connection the client then keeps. Renewals are not bounded (a renewal waiting
/// for a permit could outlast the lease's trust); they are spread instead (see
/// `coordination::next_renewal`). Releases are not bounded either: they end handoffs and
/// shutdowns, and must not wait behind takes.
const MOVES_AT_ONCE: usize = 32;

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
    calls: JoinSet<Answer>,
    fallbacks: HashMap<tokio::task::Id, Input>,
    /// The stream consumer, with enhanced fan-out retrieval.
    fan_out: Option<Arc<Registration>>,
    /// Permits for the polling reads under way, shared by the worker's shards.
    reads: Arc<Semaphore>,
    /// Permits for the takes and handoff requests under way.
    moves: Arc<Semaphore>,
    /// Set once the worker shuts down (see `begin_shutdown`): takes still waiting for a permit
    /// are not sent.
    stopping: Arc<AtomicBool>,
    /// Takes waiting for a permit, and whether a later scan shows them bound to be refused.
    waiting_takes: Arc<WaitingTakes>,
    labels: [(&'static str, String); 2],
    /// What the worker and its shards report.
    board: Board,
    /// Errors retrying cannot fix (stream or table missing, access denied), by what they are
    /// about, and since when they have gone on.
    fatal: HashMap<About, (Instant, Error)>,
}

/// What a call's failure is about, for the fatal errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum About {
    /// The lease table (scans).
    Table,
    /// The stream (shard syncs).
    Stream,
}

/// A call's answer: the machine's input, and what the worker learns of its table and stream.
struct Answer {
    input: Input,
    learned: Option<(About, Result<(), Error>)>,
}

impl From<Input> for Answer {
    fn from(input: Input) -> Self {
        Answer {
            input,
            learned: None,
        }
    }
}

/// Whether an error means the worker cannot go on, however often it tries.
fn is_fatal(error: &Error) -> bool {
    matches!(
        error,
        Error::StreamNotFound { .. }
            | Error::TableNotFound { .. }
            | Error::AccessDenied { .. }
            | Error::MultiStreamTable { .. }
    )
}

/// A Kinesis call's failure as the consumer's error: a missing stream and refused credentials by
/// name.
fn kinesis_error(operation: &'static str, stream: &str, failure: CallFailure) -> Error {
    if failure.code == "ResourceNotFoundException" {
        return Error::StreamNotFound {
            stream: stream.to_owned(),
        };
    }
    if is_access_denied(&failure) {
        return Error::AccessDenied {
            service: "Kinesis",
            operation,
            resource: stream.to_owned(),
            code: failure.code,
            request_id: failure.request_id,
            source: failure.source,
        };
    }
    Error::kinesis(operation, stream.to_owned(), failure)
}

/// Refuses a table that holds a KCL multi-stream application's leases.
fn one_stream_table(table: &str, scan: &Scan) -> Result<(), Error> {
    if scan.multi_stream_keys.is_empty() {
        return Ok(());
    }
    Err(Error::MultiStreamTable {
        table: table.to_owned(),
        count: scan.multi_stream_keys.len(),
        examples: scan.multi_stream_keys.iter().take(3).cloned().collect(),
    })
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
            reads: Arc::new(Semaphore::new(consumer.cfg.max_concurrent_reads)),
            moves: Arc::new(Semaphore::new(MOVES_AT_ONCE)),
            stopping: Arc::new(AtomicBool::new(false)),
            waiting_takes: Arc::new(WaitingTakes::default()),
            labels: [
                ("stream", consumer.cfg.stream.stream_name().to_owned()),
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
            board: Board::default(),
            fatal: HashMap::new(),
        }
    }

    /// Everything the worker must find before it takes a lease, tried again a second apart while
    /// it fails with errors that trying again could fix.
    async fn prepare(&mut self) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.prepare_once().await {
                Ok(()) => {
                    {
                        let mut board = self.board.lock();
                        board.started = true;
                        // The start scanned the table.
                        board.last_scan = Some(SystemTime::now());
                        board.last_scan_attempt = board.last_scan;
                    }
                    info!(table = self.table.name(), "worker started");
                    return Ok(());
                }
                // These have waited their own timeout already.
                Err(error @ (Error::TableNotActive { .. } | Error::ConsumerNotActive { .. })) => {
                    return Err(error);
                }
                Err(error) if error.is_retryable() && attempt < self.cfg.start_attempts => {
                    warn!(%error, attempt, "starting failed; trying again in 1 s");
                    self.board.error(format!("start: {error}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) if error.is_retryable() => {
                    return Err(Error::StartFailed {
                        attempts: attempt,
                        source: Box::new(error),
                    });
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn prepare_once(&mut self) -> Result<(), Error> {
        self.table
            .ensure(self.cfg.billing, self.cfg.table_timeout)
            .await?;
        one_stream_table(self.table.name(), &self.table.scan().await?)?;
        kinesis::list_shards(&self.kinesis, &self.cfg.stream, self.cfg.call_timeout)
            .await
            .map_err(|f| kinesis_error("ListShards", self.cfg.stream.as_str(), f))?;
        if let Some(registration) = self.fan_out.clone() {
            // The stream consumer must be active before any lease is taken.
            registration.arn().await?;
        }
        Ok(())
    }

    /// Runs the worker in its own task (preparing it first unless `prepared`).
    fn launch(mut self, prepared: bool) -> Running {
        let (stop_tx, stop_rx) = watch::channel(false);
        let span = tracing::info_span!(
            "kinesis_consumer",
            stream = %self.cfg.stream,
            lease_owner = %self.cfg.worker_id
        );
        let worker_id = self.cfg.worker_id.clone();
        let settings = self.cfg.settings();
        let longest_scan = settings.slow_scan.max(settings.scan_interval);
        let failover = settings.failover;
        let board = self.board.clone();
        let finished = self.board.clone();
        let task = tokio::spawn(
            async move {
                let mut stop = stop_rx;
                let outcome = async {
                    if !prepared {
                        tokio::select! {
                            prepared = self.prepare() => prepared?,
                            _ = stop.wait_for(|stop| *stop) => {
                                info!("worker stopped before it started");
                                return Ok(());
                            }
                        }
                    }
                    self.run(stop).await
                }
                .await;
                finished.lock().finished = true;
                outcome
            }
            .instrument(span),
        );
        Running {
            stop: stop_tx,
            task: Some(task),
            probe: Probe {
                board,
                worker_id,
                scan_interval: settings.scan_interval,
                longest_scan,
                failover,
            },
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut machine = Machine::new(self.me.to_string(), self.cfg.settings(), Instant::now());
        let mut input = Input::Tick;
        let mut exit_error: Option<Error> = None;
        loop {
            self.count(&input);
            self.note(&input);
            if let Input::Scanned(Some(leases)) = &input {
                self.waiting_takes.supersede(leases);
            }
            for action in machine.handle(input, Instant::now()) {
                self.perform(action);
            }
            metrics::gauge!(m::LEASES_HELD, &self.labels).set(machine.running() as f64);
            self.board.lock().relaxed = machine.relaxed();
            if machine.is_finished() {
                break;
            }
            // An error retrying cannot fix, gone on for the fatal error timeout: shut down.
            if !self.stopping.load(Ordering::Relaxed)
                && let Some(about) = self
                    .fatal
                    .iter()
                    .filter(|(_, (since, _))| since.elapsed() >= self.cfg.fatal_after)
                    .map(|(about, _)| *about)
                    .next()
                && let Some((since, error)) = self.fatal.remove(&about)
            {
                error!(%error, for_ = ?since.elapsed(), "the worker cannot go on; shutting down");
                exit_error = Some(error);
                self.begin_shutdown();
                for action in machine.handle(Input::ShutdownAsked, Instant::now()) {
                    self.perform(action);
                }
                if machine.is_finished() {
                    break;
                }
            }
            let wake = machine
                .next_wake()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            input = tokio::select! {
                // A shard task's end first: the machine must not renew a lease whose processor
                // has already stopped because a timer came due at the same moment.
                biased;
                Some(joined) = self.shards.join_next_with_id() => self.exited(joined),
                changed = stop.changed(), if !self.stopping.load(Ordering::Relaxed) => {
                    if changed.is_err() || *stop.borrow() {
                        self.begin_shutdown();
                        Input::ShutdownAsked
                    } else {
                        Input::Tick
                    }
                }
                Some(answered) = self.calls.join_next_with_id() => match answered {
                    Ok((id, answer)) => {
                        self.fallbacks.remove(&id);
                        self.learn(answer.learned);
                        answer.input
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
        match exit_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// What a call's answer says of the table or the stream.
    fn learn(&mut self, learned: Option<(About, Result<(), Error>)>) {
        match learned {
            None => {}
            Some((about, Ok(()))) => {
                self.fatal.remove(&about);
            }
            Some((about, Err(error))) => {
                self.board.error(error.to_string());
                if is_fatal(&error) {
                    self.fatal
                        .entry(about)
                        .or_insert_with(|| (Instant::now(), error));
                }
            }
        }
    }

    /// What the board shows of what happened.
    fn note(&self, input: &Input) {
        let now = SystemTime::now();
        match input {
            Input::Scanned(found) => {
                let mut board = self.board.lock();
                board.last_scan_attempt = Some(now);
                if found.is_some() {
                    board.last_scan = Some(now);
                }
            }
            Input::Renewed {
                outcome: Outcome::Written(_),
                ..
            } => self.board.lock().last_renewal = Some(now),
            Input::Exited { key, how } => {
                self.board.remove(key);
                if let Exited::Panicked(message) = how {
                    self.board
                        .error(format!("{key}: the shard's task panicked: {message}"));
                }
            }
            _ => {}
        }
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
                let message = shard::panic_message(failed.into_panic().as_ref());
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
    fn call<A: Into<Answer>>(
        &mut self,
        fallback: Input,
        call: impl Future<Output = A> + Send + 'static,
    ) {
        let id = self.calls.spawn(async move { call.await.into() }).id();
        self.fallbacks.insert(id, fallback);
    }

    fn perform(&mut self, action: Action) {
        let me = self.me.clone();
        let table = self.table.clone();
        match action {
            Action::Scan => self.call(Input::Scanned(None), async move {
                match table.scan().await {
                    Ok(scan) => Answer {
                        input: Input::Scanned(Some(scan.leases)),
                        learned: Some((About::Table, Ok(()))),
                    },
                    Err(error) => {
                        warn!(%error, "lease scan failed");
                        Answer {
                            input: Input::Scanned(None),
                            learned: Some((About::Table, Err(error))),
                        }
                    }
                }
            }),
            Action::SyncShards => {
                let kinesis = self.kinesis.clone();
                let cfg = self.cfg.clone();
                self.call(Input::Synced(false), async move {
                    match sync_shards(&kinesis, &table, &cfg).await {
                        Ok(()) => Answer {
                            input: Input::Synced(true),
                            learned: Some((About::Stream, Ok(()))),
                        },
                        Err(error) => {
                            warn!(%error, "shard sync failed; trying again soon");
                            Answer {
                                input: Input::Synced(false),
                                learned: Some((About::Stream, Err(error))),
                            }
                        }
                    }
                });
            }
            Action::Renew { key, base, within } => {
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
                    // The item a refusal showed, if newer than the copy: this worker's own
                    // write landed after its answer was lost.
                    if let Some(base) = base
                        && base.counter > lease.counter
                    {
                        *lease = base;
                    }
                    let sent = Instant::now();
                    let result = table.with_call_timeout(within).renew(&lease, &me).await;
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
                let moves = self.moves.clone();
                let stopping = self.stopping.clone();
                let waiting = self.waiting_takes.clone();
                waiting.wait(&lease);
                self.call(fallback, async move {
                    // Never closed; were it, writing without a permit is still correct.
                    let _permit = moves.acquire().await.ok();
                    // Timed once the permit is held: the trust counts from the write.
                    let sent = Instant::now();
                    let superseded = waiting.send(&key);
                    if stopping.load(Ordering::Relaxed) || superseded {
                        // Shutting down (the lease would only be released again), or a scan
                        // since the take was planned shows the lease written since (the
                        // conditional write would be refused): not sent, and answered as a take
                        // someone else won (the machine forgets the lease).
                        return Input::Taken {
                            key,
                            sent,
                            outcome: Outcome::Refused(None),
                        };
                    }
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
                let moves = self.moves.clone();
                self.call(fallback, async move {
                    let _permit = moves.acquire().await.ok();
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
            board: self.board.shard(&key, lease.clone()),
            shard_id,
            lease,
            fan_out: self.fan_out.clone(),
            reads: self.reads.clone(),
        };
        // The application's processors are made inside the shard's task (a panic there is
        // handled as a processor's, under the failure policy), again after failures.
        let span = tracing::info_span!("shard", shard_id = %key);
        let id = self
            .shards
            .spawn(shard::run(ctx, self.processors.clone(), stop_rx, trust_rx).instrument(span))
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

    /// The worker shuts down: its status says so, and takes still waiting for a permit are not
    /// sent.
    fn begin_shutdown(&self) {
        self.board.lock().stopping = true;
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Metrics of what happened.
    fn count(&self, input: &Input) {
        let counter = |name: &'static str, outcome: &'static str| {
            metrics::counter!(name, "stream" => self.cfg.stream.stream_name().to_owned(),
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

/// Takes waiting for a permit (at most [`MOVES_AT_ONCE`] are under way), by lease key: the
/// counter each was planned on, and whether a scan since showed a higher one. A take is a write
/// conditional on that counter, and counters only grow, so such a take would be refused: it is
/// not sent. (A lower counter, from a scan older than the plan's, says nothing.) When many
/// workers start at once, each first plans to take every free lease, as it sees no other owner
/// yet; without this, the takes queued behind the first ones went out after later scans showed
/// those leases taken, each a refused write.
#[derive(Default)]
struct WaitingTakes(std::sync::Mutex<HashMap<String, WaitingTake>>);

struct WaitingTake {
    counter: u64,
    superseded: bool,
}

impl WaitingTakes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WaitingTake>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A take of `lease`, as last seen, waits for a permit.
    fn wait(&self, lease: &Lease) {
        self.lock().insert(
            lease.key.clone(),
            WaitingTake {
                counter: lease.counter,
                superseded: false,
            },
        );
    }

    /// A scan's leases: a waiting take whose lease now has a higher counter is marked.
    fn supersede(&self, leases: &[Lease]) {
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        for lease in leases {
            if let Some(take) = waiting.get_mut(&lease.key)
                && lease.counter > take.counter
            {
                take.superseded = true;
            }
        }
    }

    /// The take of `key` has its permit: whether a scan since it was planned showed its lease
    /// written (then it is not sent).
    fn send(&self, key: &str) -> bool {
        self.lock().remove(key).is_some_and(|take| take.superseded)
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
        .map_err(|f| kinesis_error("ListShards", cfg.stream.as_str(), f))?;
    let scan = table.scan().await?;
    // Never write beside a KCL multi-stream application's leases.
    one_stream_table(table.name(), &scan)?;
    let by_key: HashMap<&str, &Lease> = scan.leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let create = if scan.leases.is_empty()
        || lineage::first_leases_in_progress(&scan.leases, cfg.initial_position)
    {
        // The first leases, or the rest of them while other workers create them too.
        lineage::initial_leases(&shards, cfg.initial_position)
            .into_iter()
            .filter(|l| !by_key.contains_key(l.key.as_str()))
            .collect()
    } else {
        lineage::repairs(&shards, &by_key)
    };
    let mut plan = lineage::Creation::new(create, crate::coordination::rank(&cfg.worker_id));
    let mut refusals = 0usize;
    while let Some(lease) = plan.next() {
        if table.create(lease).await? {
            debug!(lease = %lease.key, checkpoint = %lease.checkpoint, "lease created");
            plan.created();
        } else {
            // Another worker is creating leases too: go on with what is still missing.
            refusals += 1;
            plan.refused();
            let now = table.scan().await?;
            let keys: std::collections::HashSet<&str> =
                now.leases.iter().map(|l| l.key.as_str()).collect();
            plan.rescanned(|key| keys.contains(key));
        }
    }
    if refusals > 0 {
        debug!(refusals, "leases created beside other workers");
    }
    for key in lineage::removable(&by_key) {
        if table.delete_finished(&key).await? {
            debug!(lease = %key, "finished lease removed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::{Batch, BoxError, Checkpointer};

    #[test]
    fn a_waiting_take_is_not_sent_once_a_scan_shows_its_lease_written() {
        let lease = |key: &str, counter: u64, owner: Option<&str>| {
            let mut lease = Lease::new(key, crate::Checkpoint::TrimHorizon);
            lease.counter = counter;
            lease.owner = owner.map(str::to_owned);
            lease
        };
        let waiting = WaitingTakes::default();
        waiting.wait(&lease("a", 5, None));
        waiting.wait(&lease("b", 5, None));
        waiting.wait(&lease("c", 5, Some("old")));
        waiting.supersede(&[
            // Taken by another worker since: the take's condition can never hold.
            lease("a", 6, Some("other")),
            // As planned: the take may succeed.
            lease("b", 5, None),
            // An older read than the plan's (a lower counter) says nothing.
            lease("c", 4, Some("older")),
        ]);
        assert!(waiting.send("a"), "a is written since: not sent");
        assert!(!waiting.send("b"));
        assert!(!waiting.send("c"));
        assert!(
            !waiting.send("a"),
            "answered once; a key not waiting is sent"
        );
        // A take planned again after a scan is judged by the scans after it only.
        waiting.wait(&lease("a", 6, Some("other")));
        waiting.supersede(&[lease("a", 6, Some("other"))]);
        assert!(!waiting.send("a"));
    }

    struct Idle;

    impl ShardProcessor for Idle {
        async fn process(&mut self, _: &Batch, _: &mut Checkpointer) -> Result<(), BoxError> {
            Ok(())
        }

        async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
            Ok(checkpointer.checkpoint_shard_end().await?)
        }
    }

    /// A builder whose clients are never called: `build` only checks the settings.
    fn builder() -> ConsumerBuilder<impl Fn(&str) -> Idle + Send + Sync + 'static> {
        let region = aws_sdk_kinesis::config::Region::new("us-east-1");
        let kinesis = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(region.clone())
            .build();
        let dynamodb = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(region)
            .build();
        let application = ApplicationName::new("app").unwrap_or_else(|e| panic!("{e}"));
        Consumer::builder(
            aws_sdk_kinesis::Client::from_conf(kinesis),
            aws_sdk_dynamodb::Client::from_conf(dynamodb),
            "stream",
            application,
            |_: &str| Idle,
        )
    }

    fn refused<F>(builder: ConsumerBuilder<F>) -> (&'static str, String, String)
    where
        F: Fn(&str) -> Idle + Send + Sync + 'static,
    {
        match builder.build() {
            Err(Error::InvalidConfig {
                name,
                value,
                problem,
            }) => (name, value, problem),
            Err(other) => panic!("expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("expected InvalidConfig, got a consumer"),
        }
    }

    fn non_zero(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
    }

    #[test]
    fn out_of_range_settings_are_typed_errors_naming_the_setting() {
        let (name, value, problem) = refused(builder().max_records(non_zero(10_001)));
        assert_eq!((name, value.as_str()), ("max_records", "10001"));
        assert!(problem.contains("10,000"), "{problem}");
        assert!(builder().max_records(non_zero(10_000)).build().is_ok());

        // The two bounds swapped: caught, not silently reordered.
        let swapped =
            FailurePolicy::default().backoff(Duration::from_secs(2), Duration::from_millis(100));
        let (name, value, problem) = refused(builder().on_failure(swapped));
        assert_eq!(name, "on_failure");
        assert!(value.contains("2s") && value.contains("100ms"), "{value}");
        assert!(problem.contains("minimum"), "{problem}");

        // Below the shortest pause between reads: refused, not raised to it behind the caller.
        let (name, _, _) = refused(builder().max_idle(Duration::from_millis(50)));
        assert_eq!(name, "max_idle");
        assert!(
            builder()
                .max_idle(Duration::from_millis(200))
                .build()
                .is_ok()
        );

        // Durations that would overflow the clock: refused, not a panic.
        let (name, _, _) = refused(builder().failover_time(Duration::MAX));
        assert_eq!(name, "failover_time");
        let (name, _, _) = refused(builder().renew_interval(Duration::MAX));
        assert_eq!(name, "renew_interval");
        for (name, builder) in [
            ("scan_interval", builder().scan_interval(Duration::MAX)),
            (
                "shutdown_timeout",
                builder().shutdown_timeout(Duration::MAX),
            ),
            ("max_idle", builder().max_idle(Duration::MAX)),
            ("handoff_timeout", builder().handoff_timeout(Duration::MAX)),
            (
                "fatal_error_timeout",
                builder().fatal_error_timeout(Duration::MAX),
            ),
        ] {
            assert_eq!(refused(builder).0, name);
        }
        assert!(
            builder()
                .failover_time(Duration::from_secs(24 * 3600))
                .build()
                .is_ok()
        );

        // More permits than the semaphore can hold: refused, not a panic when the worker starts.
        let (name, value, _) = refused(builder().max_concurrent_reads(NonZeroUsize::MAX));
        assert_eq!(
            (name, value),
            ("max_concurrent_reads", usize::MAX.to_string())
        );
        assert!(builder().max_concurrent_reads(non_zero(1)).build().is_ok());

        let (name, _, _) = refused(builder().shard_sync_interval(Duration::ZERO));
        assert_eq!(name, "shard_sync_interval");
        let (name, _, _) = refused(builder().handoff_timeout(Duration::ZERO));
        assert_eq!(name, "handoff_timeout");

        // Capacities DynamoDB cannot take: refused before any call, not capped.
        for (read, write) in [(0, 5), (5, 0), (u64::MAX, 5), (5, 1 << 63)] {
            let billing = BillingMode::Provisioned { read, write };
            let (name, value, problem) = refused(builder().billing_mode(billing));
            assert_eq!(name, "billing_mode");
            assert!(value.contains(&read.to_string()), "{value}");
            assert!(problem.contains("capacity units"), "{problem}");
        }
        let largest = (1u64 << 63) - 1;
        let billing = BillingMode::Provisioned {
            read: 1,
            write: largest,
        };
        assert!(builder().billing_mode(billing).build().is_ok());
    }

    #[test]
    fn typed_settings_are_kept_as_given() {
        let consumer = builder()
            .max_leases(non_zero(3))
            .max_records(non_zero(40))
            .prefetch_records(non_zero(100))
            .prefetch_bytes(non_zero(1 << 20))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(consumer.cfg.max_leases, Some(3));
        assert_eq!(consumer.cfg.max_records_per_call(), 40);
        assert_eq!(
            (consumer.cfg.prefetch_records, consumer.cfg.prefetch_bytes),
            (100, 1 << 20)
        );
        assert_eq!(consumer.cfg.application.as_str(), "app");
        assert_eq!(consumer.cfg.table, "app");
        assert!(format!("{consumer:?}").contains("app"));
    }

    #[test]
    fn an_application_name_is_one_to_255_characters() {
        for bad in [String::new(), "a".repeat(256)] {
            match ApplicationName::new(bad) {
                Err(Error::InvalidConfig { name, .. }) => assert_eq!(name, "application"),
                other => panic!("expected InvalidConfig, got {other:?}"),
            }
        }
        let name: Result<ApplicationName, _> = "é".repeat(255).parse();
        assert!(name.is_ok());
        assert_eq!(
            ApplicationName::try_from("orders")
                .map(|n| n.to_string())
                .ok(),
            Some("orders".to_owned())
        );
    }
}
