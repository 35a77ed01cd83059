//! One held shard: its processor, fed by a polling or fan-out reader, stopped when the lease is
//! lost, handed off or shut down, taken through the shard end (children, `SHARD_END`), and made
//! again when it fails, as the [`FailurePolicy`] says.
//!
//! Every call into the application goes through [`call`]: bounded by the lease's trust deadline,
//! with panics caught and callbacks that run long reported.

use std::{
    collections::BTreeSet,
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::Poll,
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{Mutex, watch},
    time::Instant,
};
use tracing::{error, info, warn};

use crate::{
    checkpoint::Checkpoint,
    config::Config,
    coordination::{Exited, Stop},
    failure::{DeadLetter, FailureCause, FailurePolicy, Then},
    fanout::{self, Registration, Subscriber},
    kinesis,
    lease::Lease,
    lease_table::LeaseTable,
    lineage::{ChildShard, ShardDescription, child_leases, child_may_be_created},
    metrics as m,
    polling::{self, Reader},
    processor::{Batch, Checkpointer, ShardProcessor, Start},
    retrieval::Fetch,
    status::{ProcessorState, ShardBoard},
};

/// What a shard's task needs.
pub(crate) struct ShardContext {
    pub(crate) cfg: Arc<Config>,
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) table: LeaseTable,
    pub(crate) worker: Arc<str>,
    pub(crate) shard_id: Arc<str>,
    pub(crate) lease: Arc<Mutex<Lease>>,
    /// The stream consumer, with enhanced fan-out retrieval.
    pub(crate) fan_out: Option<Arc<Registration>>,
    /// Permits for polling reads, shared by the worker's shards.
    pub(crate) reads: Arc<tokio::sync::Semaphore>,
    /// Where the task reports what its processor does.
    pub(crate) board: ShardBoard,
}

/// How long to wait before asking a processor that did not checkpoint `SHARD_END` again.
const SHARD_END_RETRY: Duration = Duration::from_secs(2);

/// What follows a failure, by the policy: a pure decision over how many times the current work
/// (a batch, or the processor's initialization) has failed, for how long, and whether the last
/// failure was a panic (a processor that panicked is not called again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Try the same work again with the same processor, after this delay.
    Retry(Duration),
    /// Make the processor again from the last checkpoint, after this delay.
    Restart(Duration),
    /// Release the lease.
    Release,
    /// Hand the batch to the dead-letter handler.
    DeadLetter,
}

/// `attempts` counts the failures of the current work so far (1 after the first); `unit` in `0..1`
/// jitters the delay.
pub(crate) fn decide(
    policy: &FailurePolicy,
    attempts: u32,
    failing_for: Duration,
    panicked: bool,
    has_batch: bool,
    unit: f64,
) -> Decision {
    let delay = policy.delay(attempts, unit);
    let spent =
        attempts >= policy.attempts.get() || policy.within.is_some_and(|w| failing_for >= w);
    if !spent {
        return if panicked {
            Decision::Restart(delay)
        } else {
            Decision::Retry(delay)
        };
    }
    match policy.then {
        Then::Restart => Decision::Restart(delay),
        Then::Release => Decision::Release,
        Then::DeadLetter(_) if has_batch => Decision::DeadLetter,
        Then::DeadLetter(_) => Decision::Restart(delay),
    }
}

/// The failures in a row of one piece of work (the batch that starts at `work`, or the
/// initialization), across restarts of the processor.
#[derive(Debug, Default)]
struct Streak {
    work: Option<Checkpoint>,
    attempts: u32,
    since: Option<(Instant, SystemTime)>,
}

impl Streak {
    /// Counts a failure of `work`; returns the attempts so far and for how long it has failed.
    fn fail(&mut self, work: Option<Checkpoint>) -> (u32, Duration, SystemTime) {
        if self.work != work || self.since.is_none() {
            *self = Streak {
                work,
                attempts: 0,
                since: Some((Instant::now(), SystemTime::now())),
            };
        }
        self.attempts += 1;
        let (began, wall) = self.since.unwrap_or((Instant::now(), SystemTime::now()));
        (self.attempts, began.elapsed(), wall)
    }

    fn succeeded(&mut self) {
        *self = Streak::default();
    }
}

/// What a processor's life ended with.
enum Next {
    /// Make the processor again (the backoff was waited).
    Restart,
    /// The task ends.
    Exit(Exited),
}

/// Metrics of one shard.
struct Meters {
    processed: metrics::Counter,
    processed_bytes: metrics::Counter,
    batches: metrics::Counter,
    outside: metrics::Counter,
    behind: metrics::Gauge,
    process_time: metrics::Histogram,
}

/// The shard's task: the context, what the worker asks, and the failures so far.
struct Task<F> {
    ctx: ShardContext,
    make: Arc<F>,
    stop: watch::Receiver<Stop>,
    trust: watch::Receiver<Instant>,
    streak: Streak,
    meters: Meters,
}

/// Runs processors made by `make` on the shard until it ends, the lease is lost, or the worker
/// asks the task to stop. Every processor that was initialized is told why it stops:
/// `shard_ended` (the shard's end), `lease_lost`, or `shutdown_requested` (a shutdown, a handoff,
/// a restart or release after failures, or reading failing for good), unless it panics or the task
/// is aborted (the shutdown timeout).
///
/// `trust` carries the instant until which the lease may be trusted (moved on by each renewal);
/// past it, processing stops at once, before another worker may take the lease.
pub(crate) async fn run<F, P>(
    ctx: ShardContext,
    make: Arc<F>,
    stop: watch::Receiver<Stop>,
    trust: watch::Receiver<Instant>,
) -> Exited
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    let labels = [
        ("stream", ctx.cfg.stream.stream_name().to_owned()),
        ("shard_id", ctx.shard_id.to_string()),
    ];
    let meters = Meters {
        processed: metrics::counter!(m::RECORDS_PROCESSED, &labels),
        processed_bytes: metrics::counter!(m::BYTES_PROCESSED, &labels),
        batches: metrics::counter!(m::BATCHES, &labels),
        outside: metrics::counter!(m::RECORDS_OUTSIDE_RANGE, &labels),
        behind: metrics::gauge!(m::MILLIS_BEHIND_LATEST, &labels),
        process_time: metrics::histogram!(m::PROCESS_TIME, &labels),
    };
    let mut task = Task {
        ctx,
        make,
        stop,
        trust,
        streak: Streak::default(),
        meters,
    };
    loop {
        match Box::pin(task.processor_life()).await {
            Next::Restart => continue,
            Next::Exit(exited) => {
                task.ctx.board.set(ProcessorState::Stopping);
                return exited;
            }
        }
    }
}

/// How a pause ended.
enum Paused {
    Done,
    /// The worker asked the task to stop meanwhile.
    Stop,
    /// Trust ran out meanwhile.
    Lost,
}

impl<F, P> Task<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    fn policy(&self) -> &FailurePolicy {
        &self.ctx.cfg.failure_policy
    }

    /// One processor, from its making to its end.
    async fn processor_life(&mut self) -> Next {
        let lease = self.ctx.lease.lock().await.clone();
        if lease.is_finished() {
            // Finished by a previous owner that stopped before reporting it: nothing to read.
            return Next::Exit(Exited::ShardEnded);
        }
        self.ctx.board.set(ProcessorState::Initializing);
        let start = Start {
            shard_id: self.ctx.shard_id.clone(),
            checkpoint: lease.checkpoint.clone(),
            pending_checkpoint: lease.pending_checkpoint.clone(),
            pending_checkpoint_state: lease.pending_checkpoint_state.clone(),
        };
        let made = {
            let make = self.make.clone();
            let shard_id = self.ctx.shard_id.clone();
            std::panic::catch_unwind(AssertUnwindSafe(move || make(&shard_id)))
        };
        let mut checkpointer = Checkpointer::new(
            self.ctx.shard_id.clone(),
            self.ctx.table.clone(),
            self.ctx.worker.clone(),
            self.ctx.lease.clone(),
        );
        let mut processor = match made {
            Ok(processor) => processor,
            Err(payload) => {
                let cause = FailureCause::Panic(panic_message(payload.as_ref()));
                return match Box::pin(self.failure(None, &mut checkpointer, None, "make", cause))
                    .await
                {
                    AfterFailure::Done(next) => next,
                    AfterFailure::Again | AfterFailure::DeadLetter => Next::Restart,
                };
            }
        };
        // The initialization, tried again as the policy says.
        loop {
            let cause = match self.call("initialize", processor.initialize(&start)).await {
                Call::Done(Ok(())) => break,
                Call::NotStarted | Call::Interrupted => {
                    processor.lease_lost().await;
                    return Next::Exit(Exited::LeaseLost);
                }
                Call::Done(Err(error)) => FailureCause::Error(error.to_string()),
                Call::Panicked(message) => FailureCause::Panic(message),
            };
            match Box::pin(self.failure(
                Some(&mut processor),
                &mut checkpointer,
                None,
                "initialize",
                cause,
            ))
            .await
            {
                AfterFailure::Again => continue,
                AfterFailure::Done(next) => return next,
                AfterFailure::DeadLetter => return Next::Restart,
            }
        }
        self.ctx.board.set(ProcessorState::Idle);
        let (mut fetches, reading) = self.read_from(&lease);
        let _stop_reading = reading.map(AbortOnDrop);
        loop {
            let deadline = *self.trust.borrow_and_update();
            tokio::select! {
                biased;
                changed = self.stop.changed() => {
                    // The worker keeps the sender while the task runs; a closed channel is taken
                    // as a shutdown.
                    if changed.is_ok() && *self.stop.borrow_and_update() == Stop::Run {
                        continue;
                    }
                    return Next::Exit(Box::pin(self.stop_gracefully(&mut processor, &mut checkpointer, Exited::Stopped)).await);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if *self.trust.borrow() <= Instant::now() {
                        warn!(shard_id = %self.ctx.shard_id, "lease not renewed in time, or lost; processing stops");
                        processor.lease_lost().await;
                        return Next::Exit(Exited::LeaseLost);
                    }
                }
                _ = self.trust.changed() => {}
                fetch = fetches.recv() => match fetch {
                    Some(Fetch::Batch { records, outside_range, millis_behind_latest, _budget }) => {
                        let batch = Batch {
                            shard_id: self.ctx.shard_id.clone(),
                            records,
                            outside_range,
                            // A negative value (never sent by Kinesis) reads as unknown.
                            behind_latest: millis_behind_latest
                                .and_then(|ms| u64::try_from(ms).ok())
                                .map(Duration::from_millis),
                        };
                        if let Some(next) = Box::pin(self.batch(&mut processor, &mut checkpointer, batch)).await {
                            return next;
                        }
                    }
                    Some(Fetch::End { children }) => {
                        return Box::pin(self.shard_end(&mut processor, &mut checkpointer, children)).await;
                    }
                    Some(Fetch::Failed(failure)) => {
                        error!(shard_id = %self.ctx.shard_id, error = %failure, "reading the shard failed; the lease is released");
                        self.ctx.board.error(format!("reading failed: {failure}"));
                        return Next::Exit(Box::pin(self.stop_gracefully(&mut processor, &mut checkpointer, Exited::ReadFailed)).await);
                    }
                    None => {
                        error!(shard_id = %self.ctx.shard_id, "the shard's reader ended; the lease is released");
                        return Next::Exit(Box::pin(self.stop_gracefully(&mut processor, &mut checkpointer, Exited::ReadFailed)).await);
                    }
                },
            }
        }
    }

    fn read_from(
        &self,
        lease: &Lease,
    ) -> (
        tokio::sync::mpsc::Receiver<Fetch>,
        Option<tokio::task::JoinHandle<()>>,
    ) {
        let ctx = &self.ctx;
        match (&ctx.fan_out, ctx.cfg.fan_out()) {
            (Some(registration), Some((fan_out, _))) => {
                let (fetches, task) = fanout::spawn(Subscriber {
                    client: ctx.kinesis.clone(),
                    registration: registration.clone(),
                    stream: ctx.cfg.stream.clone(),
                    shard_id: ctx.shard_id.clone(),
                    range: lease.hash_key_range,
                    start: lease.checkpoint.clone(),
                    timestamp: ctx.cfg.initial_timestamp,
                    prefetch_records: ctx.cfg.prefetch_records,
                    prefetch_bytes: ctx.cfg.prefetch_bytes,
                    call_timeout: ctx.cfg.call_timeout,
                    silence: fan_out.silence_timeout,
                });
                // Aborted when the shard stops.
                (fetches, Some(task))
            }
            _ => {
                // Not aborted: the reader ends by itself once the receiver is dropped, after the
                // call it has under way, so that its read permit outlives its request.
                let (fetches, _detached) = polling::spawn(Reader {
                    client: ctx.kinesis.clone(),
                    stream: ctx.cfg.stream.clone(),
                    shard_id: ctx.shard_id.clone(),
                    range: lease.hash_key_range,
                    start: lease.checkpoint.clone(),
                    timestamp: ctx.cfg.initial_timestamp,
                    max_records: ctx.cfg.max_records_per_call(),
                    min_interval: ctx.cfg.min_fetch_interval,
                    max_idle: ctx.cfg.max_idle,
                    prefetch_records: ctx.cfg.prefetch_records,
                    prefetch_bytes: ctx.cfg.prefetch_bytes,
                    call_timeout: ctx.cfg.call_timeout,
                    reads: ctx.reads.clone(),
                });
                (fetches, None)
            }
        }
    }

    /// Calls into the application: while the lease is trusted, panics caught, reported when slow.
    async fn call<T>(&mut self, what: &'static str, future: impl Future<Output = T>) -> Call<T> {
        // On the heap: the application's future (with its SDK calls) is large, and nested in
        // the guards below it would be copied through several stack frames at each poll.
        let future = Box::pin(future);
        let watched = watch_slow(
            catch_panic(future),
            self.ctx.cfg.slow_callback,
            what,
            &self.ctx.shard_id,
            self.ctx.cfg.stream.stream_name(),
        );
        match guarded(&mut self.trust, watched).await {
            Guarded::Done(Ok(out)) => Call::Done(out),
            Guarded::Done(Err(message)) => Call::Panicked(message),
            Guarded::NotStarted => Call::NotStarted,
            Guarded::Interrupted => Call::Interrupted,
        }
    }

    /// Waits `delay`, unless the worker asks the task to stop or trust runs out first.
    async fn pause(&mut self, delay: Duration) -> Paused {
        let stop = &mut self.stop;
        let asked = async {
            loop {
                if stop.changed().await.is_err() || *stop.borrow_and_update() != Stop::Run {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            () = asked => Paused::Stop,
            waited = guarded(&mut self.trust, tokio::time::sleep(delay)) => match waited {
                Guarded::Done(()) => Paused::Done,
                Guarded::NotStarted | Guarded::Interrupted => Paused::Lost,
            },
        }
    }

    /// A failure of `what` (the batch starting at `work`, or the making or initialization of the
    /// processor when `work` is `None`): reported, then handled as the policy decides.
    async fn failure(
        &mut self,
        processor: Option<&mut P>,
        checkpointer: &mut Checkpointer,
        work: Option<Checkpoint>,
        what: &'static str,
        cause: FailureCause,
    ) -> AfterFailure {
        let has_batch = work.is_some();
        let (attempts, failing_for, since) = self.streak.fail(work);
        let panicked = matches!(cause, FailureCause::Panic(_));
        let labels = [
            ("stream", self.ctx.cfg.stream.stream_name().to_owned()),
            ("shard_id", self.ctx.shard_id.to_string()),
            ("callback", what.to_owned()),
        ];
        metrics::counter!(m::PROCESSOR_FAILURES, &labels).increment(1);
        if panicked {
            metrics::counter!(m::PROCESSOR_PANICS, &labels).increment(1);
        }
        self.ctx.board.set(ProcessorState::Failing {
            attempts,
            since,
            last: cause.clone(),
        });
        self.ctx
            .board
            .error(format!("{what} {cause} (attempt {attempts})"));
        let decision = decide(
            self.policy(),
            attempts,
            failing_for,
            panicked,
            has_batch,
            rand::random::<f64>(),
        );
        match decision {
            Decision::Retry(delay) => {
                warn!(shard_id = %self.ctx.shard_id, callback = what, attempts, %cause,
                    "the processor failed; trying again in {delay:?}");
                metrics::counter!(m::PROCESSOR_RETRIES, &labels).increment(1);
                match self.pause(delay).await {
                    Paused::Done => AfterFailure::Again,
                    Paused::Stop => match processor {
                        Some(processor) => AfterFailure::Done(Next::Exit(
                            self.stop_gracefully(processor, checkpointer, Exited::Stopped)
                                .await,
                        )),
                        None => AfterFailure::Done(Next::Exit(Exited::Stopped)),
                    },
                    Paused::Lost => {
                        if let Some(processor) = processor {
                            processor.lease_lost().await;
                        }
                        AfterFailure::Done(Next::Exit(Exited::LeaseLost))
                    }
                }
            }
            Decision::Restart(delay) => {
                error!(shard_id = %self.ctx.shard_id, callback = what, attempts, %cause,
                    "the processor failed; it is made again from the last checkpoint in {delay:?}");
                metrics::counter!(m::PROCESSOR_RESTARTS, &labels).increment(1);
                // A processor that panicked is not called again; another is told why it stops.
                if let Some(processor) = processor.filter(|_| !panicked)
                    && self
                        .stop_gracefully(processor, checkpointer, Exited::Stopped)
                        .await
                        == Exited::LeaseLost
                {
                    return AfterFailure::Done(Next::Exit(Exited::LeaseLost));
                }
                match self.pause(delay).await {
                    Paused::Done => AfterFailure::Done(Next::Restart),
                    Paused::Stop => AfterFailure::Done(Next::Exit(Exited::Stopped)),
                    Paused::Lost => AfterFailure::Done(Next::Exit(Exited::LeaseLost)),
                }
            }
            Decision::Release => {
                error!(shard_id = %self.ctx.shard_id, callback = what, attempts, %cause,
                    "the processor failed; the lease is released for another worker to try");
                if let Some(processor) = processor.filter(|_| !panicked)
                    && self
                        .stop_gracefully(processor, checkpointer, Exited::ProcessorFailed)
                        .await
                        == Exited::LeaseLost
                {
                    return AfterFailure::Done(Next::Exit(Exited::LeaseLost));
                }
                AfterFailure::Done(Next::Exit(Exited::ProcessorFailed))
            }
            Decision::DeadLetter => AfterFailure::DeadLetter,
        }
    }

    /// One batch through the processor, under the failure policy. `None`: go on reading.
    async fn batch(
        &mut self,
        processor: &mut P,
        checkpointer: &mut Checkpointer,
        batch: Batch,
    ) -> Option<Next> {
        let meters = &self.meters;
        meters.batches.increment(1);
        meters.processed.increment(batch.records.len() as u64);
        meters
            .processed_bytes
            .increment(batch.records.iter().map(|r| r.data.len() as u64).sum());
        meters.outside.increment(batch.outside_range as u64);
        if let Some(behind) = batch.behind_latest {
            meters.behind.set(behind.as_millis() as f64);
        }
        if batch.outside_range > 0 {
            warn!(shard_id = %self.ctx.shard_id, outside_range = batch.outside_range,
                "user records outside the shard's hash-key range skipped");
        }
        let behind = batch.behind_latest;
        let before = checkpointer.delivered_before();
        let first = batch.records.first().and_then(position);
        loop {
            if let Some(last) = batch.records.last() {
                checkpointer.note_delivered(last);
            }
            self.ctx.board.batch(behind);
            let started = Instant::now();
            let outcome = self
                .call("process", processor.process(&batch, checkpointer))
                .await;
            self.meters
                .process_time
                .record(started.elapsed().as_secs_f64());
            let cause = match outcome {
                Call::Done(Ok(())) => {
                    self.streak.succeeded();
                    self.ctx.board.set(ProcessorState::Idle);
                    return None;
                }
                Call::NotStarted | Call::Interrupted => {
                    processor.lease_lost().await;
                    return Some(Next::Exit(Exited::LeaseLost));
                }
                Call::Done(Err(error)) => FailureCause::Error(error.to_string()),
                Call::Panicked(message) => FailureCause::Panic(message),
            };
            // The failed batch is not delivered: no checkpoint may cover it.
            checkpointer.restore_delivered(before.clone());
            let panicked = matches!(cause, FailureCause::Panic(_));
            let attempts = self.streak.attempts + 1;
            match self
                .failure(
                    Some(&mut *processor),
                    checkpointer,
                    first.clone(),
                    "process",
                    cause.clone(),
                )
                .await
            {
                AfterFailure::Again => continue,
                AfterFailure::Done(next) => return Some(next),
                AfterFailure::DeadLetter => {
                    let letter = DeadLetter {
                        shard_id: self.ctx.shard_id.clone(),
                        records: batch.records.clone(),
                        error: cause,
                        attempts: attempts.max(self.streak.attempts),
                    };
                    if let Some(next) = self
                        .dead_letter(processor, checkpointer, &batch, letter)
                        .await
                    {
                        return Some(next);
                    }
                    self.streak.succeeded();
                    self.ctx.board.set(ProcessorState::Idle);
                    // A processor that panicked is not called again: a new one goes on from the
                    // checkpoint past the batch.
                    return panicked.then_some(Next::Restart);
                }
            }
        }
    }

    /// Hands the batch to the dead-letter handler until it succeeds, then checkpoints past it.
    /// `None`: done, go on.
    async fn dead_letter(
        &mut self,
        processor: &mut P,
        checkpointer: &mut Checkpointer,
        batch: &Batch,
        letter: DeadLetter,
    ) -> Option<Next> {
        let Then::DeadLetter(handler) = self.policy().then.clone() else {
            return None;
        };
        let labels = [
            ("stream", self.ctx.cfg.stream.stream_name().to_owned()),
            ("shard_id", self.ctx.shard_id.to_string()),
        ];
        let mut failures = 0u32;
        loop {
            let outcome = self.call("dead_letter", (handler.0)(letter.clone())).await;
            let problem = match outcome {
                Call::Done(Ok(())) => break,
                Call::NotStarted | Call::Interrupted => {
                    processor.lease_lost().await;
                    return Some(Next::Exit(Exited::LeaseLost));
                }
                Call::Done(Err(error)) => error.to_string(),
                Call::Panicked(message) => format!("panicked: {message}"),
            };
            failures += 1;
            metrics::counter!(m::DEAD_LETTER_FAILURES, &labels).increment(1);
            let delay = self.policy().delay(failures, rand::random::<f64>());
            error!(shard_id = %self.ctx.shard_id, failures, problem = %problem,
                "the dead-letter handler failed; trying again in {delay:?}");
            self.ctx
                .board
                .error(format!("dead-letter handler failed: {problem}"));
            match self.pause(delay).await {
                Paused::Done => {}
                Paused::Stop => {
                    return Some(Next::Exit(
                        self.stop_gracefully(processor, checkpointer, Exited::Stopped)
                            .await,
                    ));
                }
                Paused::Lost => {
                    processor.lease_lost().await;
                    return Some(Next::Exit(Exited::LeaseLost));
                }
            }
        }
        metrics::counter!(m::DEAD_LETTERED_RECORDS, &labels).increment(batch.records.len() as u64);
        warn!(shard_id = %self.ctx.shard_id, records = batch.records.len(),
            "a failed batch was handed to the dead-letter handler; going on past it");
        if let Some(last) = batch.records.last() {
            checkpointer.note_delivered(last);
        }
        if let Err(error) = checkpointer.checkpoint().await {
            warn!(shard_id = %self.ctx.shard_id, %error, "checkpointing past a dead-lettered batch failed");
        }
        None
    }

    /// Lets the processor checkpoint (`shutdown_requested`) while the lease is trusted, then
    /// ends as `then`. If trust runs out first, the callback is dropped at its next `.await` and
    /// the task ends as `LeaseLost`, without a second callback: the processor was already told
    /// why it stops. An error or a panic in the callback is reported; the processor stops anyway.
    async fn stop_gracefully(
        &mut self,
        processor: &mut P,
        checkpointer: &mut Checkpointer,
        then: Exited,
    ) -> Exited {
        self.ctx.board.set(ProcessorState::Stopping);
        let problem = match self
            .call(
                "shutdown_requested",
                processor.shutdown_requested(checkpointer),
            )
            .await
        {
            Call::Done(Ok(())) => None,
            Call::Done(Err(error)) => Some(error.to_string()),
            Call::Panicked(message) => Some(format!("panicked: {message}")),
            Call::Interrupted => return Exited::LeaseLost,
            Call::NotStarted => {
                processor.lease_lost().await;
                return Exited::LeaseLost;
            }
        };
        if let Some(problem) = problem {
            warn!(shard_id = %self.ctx.shard_id, problem = %problem, "shutdown_requested failed");
            metrics::counter!(m::PROCESSOR_FAILURES, "stream" => self.ctx.cfg.stream.stream_name().to_owned(),
                "shard_id" => self.ctx.shard_id.to_string(), "callback" => "shutdown_requested")
            .increment(1);
        }
        then
    }

    /// The end of the shard: create the children's leases, record them on this lease, and have
    /// the processor checkpoint `SHARD_END` (asking again, with backoff, until it does).
    async fn shard_end(
        &mut self,
        processor: &mut P,
        checkpointer: &mut Checkpointer,
        children: Option<Vec<ChildShard>>,
    ) -> Next {
        checkpointer.reached_end();
        self.ctx.board.set(ProcessorState::Stopping);
        let ids = match self.create_children(children).await {
            Ok(ids) => ids,
            Err(Paused::Stop) => {
                return Next::Exit(
                    self.stop_gracefully(processor, checkpointer, Exited::Stopped)
                        .await,
                );
            }
            Err(Paused::Lost | Paused::Done) => {
                processor.lease_lost().await;
                return Next::Exit(Exited::LeaseLost);
            }
        };
        // From here on the processor has been told why it stops (`shard_ended`, asked again
        // until it checkpoints): if trust runs out, the task ends without another callback.
        let mut told = false;
        let mut failures = 0u32;
        loop {
            let problem = match self
                .call("shard_ended", processor.shard_ended(checkpointer))
                .await
            {
                Call::Done(result) => {
                    told = true;
                    if self.ctx.lease.lock().await.checkpoint == Checkpoint::ShardEnd {
                        info!(shard_id = %self.ctx.shard_id, children = ?ids, "shard ended");
                        metrics::counter!(m::SHARDS_ENDED, "stream" => self.ctx.cfg.stream.stream_name().to_owned())
                            .increment(1);
                        return Next::Exit(Exited::ShardEnded);
                    }
                    match result {
                        Ok(()) => {
                            metrics::counter!(m::SHARD_END_NOT_CHECKPOINTED, "stream" => self.ctx.cfg.stream.stream_name().to_owned(),
                                "shard_id" => self.ctx.shard_id.to_string())
                            .increment(1);
                            "it did not checkpoint at the end of the shard \
                             (Checkpointer::checkpoint_shard_end); its children cannot start \
                             until it does"
                                .to_owned()
                        }
                        Err(error) => format!("it returned an error: {error}"),
                    }
                }
                Call::Panicked(message) => {
                    // Not called again: a new processor is made, reads to the end again (there
                    // is nothing left to read) and is asked in turn.
                    error!(shard_id = %self.ctx.shard_id, panic = %message,
                        "the processor panicked in shard_ended; it is made again");
                    metrics::counter!(m::PROCESSOR_PANICS, "stream" => self.ctx.cfg.stream.stream_name().to_owned(),
                        "shard_id" => self.ctx.shard_id.to_string(), "callback" => "shard_ended")
                    .increment(1);
                    self.ctx
                        .board
                        .error(format!("shard_ended panicked: {message}"));
                    return match self.pause(SHARD_END_RETRY).await {
                        Paused::Done => Next::Restart,
                        Paused::Stop => Next::Exit(Exited::Stopped),
                        Paused::Lost => Next::Exit(Exited::LeaseLost),
                    };
                }
                Call::NotStarted if !told => {
                    processor.lease_lost().await;
                    return Next::Exit(Exited::LeaseLost);
                }
                Call::NotStarted | Call::Interrupted => return Next::Exit(Exited::LeaseLost),
            };
            failures += 1;
            metrics::counter!(m::PROCESSOR_FAILURES, "stream" => self.ctx.cfg.stream.stream_name().to_owned(),
                "shard_id" => self.ctx.shard_id.to_string(), "callback" => "shard_ended")
            .increment(1);
            let delay = self
                .policy()
                .delay(failures, rand::random::<f64>())
                .max(SHARD_END_RETRY);
            error!(shard_id = %self.ctx.shard_id, failures, problem = %problem,
                "shard_ended failed; asking again in {delay:?}");
            self.ctx.board.error(format!("shard_ended: {problem}"));
            // A stop asked meanwhile ends the task without another callback (the processor was
            // told `shard_ended`); the lease is released and its next owner ends the shard.
            match self.pause(delay).await {
                Paused::Done => {}
                Paused::Stop => return Next::Exit(Exited::Stopped),
                Paused::Lost => return Next::Exit(Exited::LeaseLost),
            }
        }
    }
}

/// How a failure handled by the policy ended.
enum AfterFailure {
    /// Try the same work again with the same processor (the backoff was waited).
    Again,
    /// Hand the batch to the dead-letter handler.
    DeadLetter,
    /// The processor's life ends so.
    Done(Next),
}

/// How a call into the application ended.
#[derive(Debug, PartialEq, Eq)]
enum Call<T> {
    /// It returned.
    Done(T),
    /// It panicked (the message).
    Panicked(String),
    /// Trust had run out before it could start.
    NotStarted,
    /// Trust ran out while it ran.
    Interrupted,
}

/// The position of a record, as a checkpoint.
fn position(record: &crate::processor::Record) -> Option<Checkpoint> {
    crate::checkpoint::SequenceNumber::parse(&record.sequence_number)
        .ok()
        .map(|sequence| Checkpoint::at(sequence, record.sub_sequence_number))
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}

/// Runs `future`, turning a panic while it is polled into `Err(message)`.
async fn catch_panic<T>(future: impl Future<Output = T>) -> Result<T, String> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    })
    .await
}

/// Runs `future`, reporting (a warning and a metric) each `slow` it goes on running.
async fn watch_slow<T>(
    future: impl Future<Output = T>,
    slow: Duration,
    what: &'static str,
    shard_id: &str,
    stream: &str,
) -> T {
    let mut future = std::pin::pin!(future);
    let started = Instant::now();
    let mut next = started + slow;
    loop {
        tokio::select! {
            biased;
            out = &mut future => return out,
            _ = tokio::time::sleep_until(next) => {
                warn!(shard_id, callback = what, running_for = ?started.elapsed(),
                    "a processor callback is running long");
                metrics::counter!(m::SLOW_CALLBACKS, "stream" => stream.to_owned(),
                    "shard_id" => shard_id.to_owned(), "callback" => what)
                .increment(1);
                next += slow;
            }
        }
    }
}

impl<F, P> Task<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    /// Creates the children's leases (each once its other parents have leases) and records them on
    /// this lease. `Err`: trust ran out, or the worker asked the task to stop, first (the processor
    /// has not been told anything yet).
    async fn create_children(
        &mut self,
        children: Option<Vec<ChildShard>>,
    ) -> Result<BTreeSet<String>, Paused> {
        // The shard list, when it could be read: the children's parents are checked against it.
        let mut listing: Option<Vec<ShardDescription>> = None;
        let children = match children {
            Some(mut children) => {
                // The service named the children. Their parents are checked against the shard list
                // once: a merged child must wait for both parents, and an incomplete list in an
                // answer (a stand-in sends only the parent it is reading) would start it early. If
                // the list cannot be read now, the answer is used as it is.
                if let Ok(shards) = kinesis::list_shards(
                    &self.ctx.kinesis,
                    &self.ctx.cfg.stream,
                    self.ctx.cfg.call_timeout,
                )
                .await
                {
                    for child in &mut children {
                        if let Some(listed) = shards.iter().find(|s| s.id == child.id)
                            && !listed.parents.is_subset(&child.parents)
                        {
                            warn!(shard_id = %self.ctx.shard_id, child = %child.id,
                            named = ?child.parents, listed = ?listed.parents,
                            "the shard's end named fewer parents of a child than the shard list; using both");
                            child.parents.extend(listed.parents.iter().cloned());
                        }
                    }
                    listing = Some(shards);
                }
                children
            }
            None => loop {
                // GetRecords named no children (a stand-in's variant, or a shard past retention):
                // look them up.
                match kinesis::list_shards(
                    &self.ctx.kinesis,
                    &self.ctx.cfg.stream,
                    self.ctx.cfg.call_timeout,
                )
                .await
                {
                    Ok(shards) => {
                        let children = shards
                            .iter()
                            .filter(|s| s.parents.contains(self.ctx.shard_id.as_ref()))
                            .map(|s| ChildShard {
                                id: s.id.clone(),
                                parents: s.parents.clone(),
                                hash_key_range: s.hash_key_range,
                            })
                            .collect();
                        listing = Some(shards);
                        break children;
                    }
                    Err(failure) => {
                        warn!(shard_id = %self.ctx.shard_id, code = %failure.code, "listing the children failed");
                        match self.pause(SHARD_END_RETRY).await {
                            Paused::Done => {}
                            halted => return Err(halted),
                        }
                    }
                }
            },
        };
        // Which of the children's other parents have leases (read consistently): a child whose other
        // parent has none yet is created when that parent ends, or by a shard sync.
        let mut leased: BTreeSet<String> = BTreeSet::new();
        let others: BTreeSet<&String> = children
            .iter()
            .flat_map(|c| c.parents.iter())
            .filter(|p| p.as_str() != self.ctx.shard_id.as_ref())
            .collect();
        for parent in others {
            let Some(found) = guarded(&mut self.trust, self.ctx.table.get(parent))
                .await
                .done()
            else {
                return Err(Paused::Lost);
            };
            match found {
                Ok(Some(_)) => {
                    leased.insert(parent.clone());
                }
                Ok(None) => {}
                // Counted as without a lease: the child is then left to its other parent or a sync.
                Err(error) => {
                    warn!(shard_id = %self.ctx.shard_id, parent = %parent, %error, "reading a parent's lease failed")
                }
            }
        }
        let listed = |id: &str| {
            listing
                .as_ref()
                .is_none_or(|shards| shards.iter().any(|s| s.id == id))
        };
        let ready: Vec<ChildShard> = children
        .iter()
        .filter(|child| {
            let ok = child_may_be_created(child, &self.ctx.shard_id, |p| leased.contains(p), listed);
            if !ok {
                info!(shard_id = %self.ctx.shard_id, child = %child.id, parents = ?child.parents,
                    "a child's other parent has no lease yet; the child's lease is created when that parent ends");
            }
            ok
        })
        .cloned()
        .collect();
        for child in child_leases(&ready) {
            loop {
                let Some(created) = guarded(&mut self.trust, self.ctx.table.create(&child))
                    .await
                    .done()
                else {
                    return Err(Paused::Lost);
                };
                match created {
                    Ok(_) => break,
                    Err(error) => {
                        warn!(shard_id = %self.ctx.shard_id, child = %child.key, %error, "creating a child lease failed");
                        match self.pause(SHARD_END_RETRY).await {
                            Paused::Done => {}
                            halted => return Err(halted),
                        }
                    }
                }
            }
        }
        let ids: BTreeSet<String> = children.iter().map(|c| c.id.clone()).collect();
        let recorded = guarded(&mut self.trust, async {
            let mut lease = self.ctx.lease.lock().await;
            match self
                .ctx
                .table
                .set_children(&lease, &self.ctx.worker, &ids)
                .await
            {
                Ok(updated) => *lease = updated,
                Err(error) => {
                    warn!(shard_id = %self.ctx.shard_id, %error, "recording the children failed");
                }
            }
        })
        .await;
        if recorded.done().is_none() {
            return Err(Paused::Lost);
        }
        Ok(ids)
    }
}

/// What became of a call made while the lease is trusted.
#[derive(Debug, PartialEq, Eq)]
enum Guarded<T> {
    /// It ran to its end.
    Done(T),
    /// Trust had run out before it could start: it was never polled.
    NotStarted,
    /// Trust ran out while it ran: it was dropped at its next `.await`.
    Interrupted,
}

impl<T> Guarded<T> {
    fn done(self) -> Option<T> {
        match self {
            Guarded::Done(out) => Some(out),
            Guarded::NotStarted | Guarded::Interrupted => None,
        }
    }
}

/// Runs `future` while the lease is trusted (the worker moves the deadline with each renewal,
/// and to now when the lease is lost); past the deadline it is dropped. The deadline is looked at
/// before every poll of `future`, so a process frozen past it (a pause, a stalled VM) does not
/// run the call on when it resumes, even if what it awaited is ready.
async fn guarded<T>(
    trust: &mut watch::Receiver<Instant>,
    future: impl Future<Output = T>,
) -> Guarded<T> {
    tokio::pin!(future);
    let mut polled = false;
    loop {
        let deadline = *trust.borrow_and_update();
        if deadline <= Instant::now() {
            return if polled {
                Guarded::Interrupted
            } else {
                Guarded::NotStarted
            };
        }
        let within = std::future::poll_fn(|cx| {
            if Instant::now() >= deadline {
                return std::task::Poll::Ready(None);
            }
            polled = true;
            future.as_mut().poll(cx).map(Some)
        });
        tokio::select! {
            biased;
            out = within => {
                if let Some(out) = out {
                    return Guarded::Done(out);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
            changed = trust.changed() => {
                if changed.is_err() {
                    // The worker is gone.
                    return Guarded::Interrupted;
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process frozen past the deadline: when it resumes, what the call awaited is ready and so
    /// is the deadline's timer. The call must not run on.
    #[tokio::test(start_paused = true)]
    async fn a_call_ready_only_after_the_deadline_is_not_run_on() {
        let start = Instant::now();
        let (trust_tx, mut trust) = watch::channel(start + Duration::from_secs(1));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let ran_on = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran_on.clone();
        let call = async move {
            let _ = ready_rx.await;
            // The batch's side effects would happen here.
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let guarded_call = tokio::spawn(async move { guarded(&mut trust, call).await });
        tokio::task::yield_now().await;
        // Frozen: time jumps past the deadline while the awaited thing became ready.
        let _ = ready_tx.send(());
        tokio::time::advance(Duration::from_secs(2)).await;
        let outcome = guarded_call.await.ok();
        assert_eq!(outcome, Some(Guarded::Interrupted));
        assert!(!ran_on.load(std::sync::atomic::Ordering::SeqCst));
        drop(trust_tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_the_deadline_runs_and_one_past_it_never_starts() {
        let start = Instant::now();
        let (_trust_tx, mut trust) = watch::channel(start + Duration::from_secs(1));
        let done = guarded(&mut trust, tokio::time::sleep(Duration::from_millis(500))).await;
        assert_eq!(done, Guarded::Done(()));
        tokio::time::advance(Duration::from_secs(1)).await;
        let late = guarded(&mut trust, async { 7 }).await;
        assert_eq!(late, Guarded::NotStarted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_moves_the_deadline_of_a_call_under_way() {
        let start = Instant::now();
        let (trust_tx, mut trust) = watch::channel(start + Duration::from_secs(1));
        let call = tokio::spawn(async move {
            guarded(&mut trust, tokio::time::sleep(Duration::from_secs(3))).await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = trust_tx.send(start + Duration::from_secs(5));
        assert_eq!(call.await.ok(), Some(Guarded::Done(())));
        let interrupted = {
            let (_tx, mut trust) = watch::channel(Instant::now() + Duration::from_secs(1));
            guarded(&mut trust, tokio::time::sleep(Duration::from_secs(3))).await
        };
        assert_eq!(interrupted, Guarded::Interrupted);
    }
}
