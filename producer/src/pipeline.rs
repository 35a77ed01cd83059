//! The producer's task: routes admitted records to per-shard aggregates, rate-limits and packs
//! them into `PutRecords` calls, judges every answer, and resolves every receipt.
//!
//! One task owns all of this state, so there are no locks on the record path. The calls run in
//! their own tasks (request building, signing and I/O spread over the runtime's threads) and
//! report back on a channel.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use aws_sdk_kinesis::{Client, primitives::Blob, types::PutRecordsRequestEntry};
use backon::ExponentialBackoff;
use bytes::Bytes;
use kinesis_aggregation::{
    AGGREGATE_PARTITION_KEY, Aggregator, Finished, HashKey, HashKeyCache, KinesisRecord,
    RecordSlab, UndigestedAggregate, UserRecord, digest_aggregates,
};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use tokio::{
    sync::{Notify, mpsc, oneshot, watch},
    time::Instant,
};
use tracing::{Instrument, debug, warn};

use crate::{
    config::{Config, Ordering, StreamRef},
    error::Error,
    kinesis::{self, CallError, EntryResult},
    limiter::Limiter,
    metrics as m,
    producer::Admission,
    receipt::{
        self, Attempt, AttemptError, Cells, Delivery, Failure, Outcome, Receipt, Written, Wrote,
    },
    retry::{self, ErrorClass, Verdict},
    shard_map::{ShardInfo, ShardMap, refresh_backoff},
};

/// A record on its way from `put` to the pipeline, in the [`Intake`]: only what must cross
/// threads, as few bytes per record as possible.
struct Admitted {
    record: Option<UserRecord>,
    tx: Option<receipt::Sender>,
}

impl Admitted {
    fn new(record: UserRecord, tx: receipt::Sender) -> Self {
        Admitted {
            record: Some(record),
            tx: Some(tx),
        }
    }
}

impl Drop for Admitted {
    /// Whatever tears the pipeline down before it takes the record in, the receipt still
    /// resolves and hands the record back.
    fn drop(&mut self) {
        if let (Some(tx), Some(record)) = (self.tx.take(), self.record.take()) {
            tx.send(Err(Box::new(Failure::new(Error::Cancelled, record))));
        }
    }
}

/// Where `put` leaves admitted records for the pipeline: a vector under the same lock that
/// hands out receipt cells and slab space, so passing a record on costs no atomic operation of its
/// own; the pipeline takes the whole vector at once.
pub(crate) struct Intake {
    stage: Mutex<Stage>,
    /// Signalled when the vector stops being empty.
    notify: Notify,
}

struct Stage {
    cells: Cells,
    slab: RecordSlab,
    records: Vec<Admitted>,
    /// Cleared when the pipeline stops taking records.
    open: bool,
}

impl Intake {
    pub(crate) fn new(slab: RecordSlab) -> Self {
        Intake {
            stage: Mutex::new(Stage {
                cells: Cells::default(),
                slab,
                records: Vec::new(),
                open: true,
            }),
            notify: Notify::new(),
        }
    }

    fn stage(&self) -> MutexGuard<'_, Stage> {
        // Nothing panics while holding the lock; a poisoned stage is still consistent.
        self.stage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves a record for the pipeline and returns its receipt; hands the record back if the
    /// pipeline no longer takes any.
    pub(crate) fn admit(&self, record: UserRecord) -> Result<Receipt, UserRecord> {
        let (receipt, first, original) = {
            let mut stage = self.stage();
            if !stage.open {
                return Err(record);
            }
            let (kept, original) = match stage.slab.copy(&record) {
                Some(copy) => (copy, Some(record)),
                None => (record, None),
            };
            let (tx, receipt) = stage.cells.pair();
            stage.records.push(Admitted::new(kept, tx));
            (receipt, stage.records.len() == 1, original)
        };
        // The application's record, copied into a slab, is freed here on its own thread.
        drop(original);
        if first {
            self.notify.notify_one();
        }
        Ok(receipt)
    }

    /// Takes every record left so far (`into` must be empty; it is swapped in, to reuse its
    /// allocation).
    fn take(&self, into: &mut Vec<Admitted>) {
        std::mem::swap(&mut self.stage().records, into);
    }

    /// Stops taking records; returns those left.
    fn close(&self) -> Vec<Admitted> {
        let mut stage = self.stage();
        stage.open = false;
        std::mem::take(&mut stage.records)
    }
}

/// A user record between admission and its receipt.
pub(crate) struct Pending {
    pub(crate) record: UserRecord,
    /// The record's routing hash.
    hash_key: HashKey,
    tx: Option<receipt::Sender>,
    /// When the pipeline received the record (within microseconds of `put`).
    put_at: Instant,
    /// Attempts made with earlier Kinesis records, when the record was routed again (after a
    /// wrong-shard landing or a map change). Usually empty: the attempts of the Kinesis record
    /// that carries it are shared by all its records.
    prior: Vec<Attempt>,
    epoch: u64,
}

impl Pending {
    fn resolve(&mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            // The application may have dropped the receipt; the record is resolved either way.
            tx.send(outcome);
        }
    }
}

impl Drop for Pending {
    /// Whatever tears the pipeline down (runtime shutdown, a panic), the receipt still resolves
    /// and hands the record back.
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.send(Err(Box::new(Failure {
                error: Error::Cancelled,
                record: self.record.clone(),
                attempts: std::mem::take(&mut self.prior),
            })));
        }
    }
}

/// What the handles send to the task.
pub(crate) enum Command {
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// What the call tasks report back.
enum Event {
    Call {
        id: u64,
        started: Instant,
        finished: Instant,
        result: Result<Vec<EntryResult>, CallError>,
    },
    /// A refresh's answer; the map carries when its call started.
    Map { result: Result<ShardMap, String> },
}

/// One Kinesis record (an aggregate or a plain record) and the user records it carries.
struct KRec {
    partition_key: String,
    explicit_hash_key: Option<HashKey>,
    data: Bytes,
    /// An aggregate whose trailer is not computed yet (then `data` is empty).
    undigested: Option<UndigestedAggregate>,
    size: usize,
    aggregated: bool,
    records: Vec<Pending>,
    /// The predicted shard.
    shard: Arc<str>,
    /// Earliest linger deadline of its records: ship by then.
    deadline: Instant,
    /// Earliest expiry of its records.
    expiry: Instant,
    backoff: Option<ExponentialBackoff>,
    last_error: Option<String>,
    /// The attempts of this Kinesis record, shared by its user records.
    attempts: Vec<Attempt>,
    /// End of the last attempt, or when its oldest record was put.
    last_end: Instant,
}

impl KRec {
    /// The data, encoded again from the user records (after it was moved into a request).
    fn encode(&self) -> Bytes {
        if !self.aggregated {
            return self
                .records
                .first()
                .map(|p| p.record.data().clone())
                .unwrap_or_default();
        }
        // The records fitted one aggregate under the configured limits: they fit these.
        let mut aggregator = Aggregator::new(crate::config::any_aggregate());
        for pending in &self.records {
            let _ = aggregator.try_push_ref(&pending.record);
        }
        aggregator.finish().map(|k| k.data).unwrap_or_default()
    }

    /// Records one attempt.
    fn attempted(
        &mut self,
        started: Instant,
        duration: Duration,
        finished: Instant,
        error: Option<AttemptError>,
    ) {
        self.attempts.push(Attempt {
            delay: started.saturating_duration_since(self.last_end),
            duration,
            error,
        });
        self.last_end = finished;
    }

    /// A record's full history: its attempts with earlier Kinesis records, then this one's.
    fn history(&self, pending: &Pending) -> Vec<Attempt> {
        pending
            .prior
            .iter()
            .chain(&self.attempts)
            .cloned()
            .collect()
    }

    fn hash_keys(&self) -> impl Iterator<Item = HashKey> + '_ {
        self.records.iter().map(|p| p.hash_key)
    }
}

/// A Kinesis record waiting for its next attempt.
struct RetryAt {
    at: Instant,
    seq: u64,
    krec: KRec,
}

impl PartialEq for RetryAt {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for RetryAt {}
impl PartialOrd for RetryAt {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RetryAt {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Metric handles of one shard, registered once.
struct ShardMetrics {
    user_records_put: Counter,
    user_records_data_put: Counter,
    kinesis_records_put: Counter,
    kinesis_records_data_put: Counter,
    rate_factor: Gauge,
}

/// Everything the task keeps per open shard.
struct Shard {
    info: ShardInfo,
    aggregator: Option<Aggregator>,
    aggregated: Vec<Pending>,
    agg_deadline: Option<Instant>,
    agg_expiry: Option<Instant>,
    queue: VecDeque<KRec>,
    limiter: Limiter,
    /// When the limiter allows the queue's head, if it refused it.
    ready_at: Option<Instant>,
    /// Entries in flight.
    busy: usize,
    /// Kinesis records waiting for a retry.
    retrying: usize,
    /// Entries and bytes in the open batch.
    batched: usize,
    batched_bytes: usize,
    metrics: ShardMetrics,
    span: tracing::Span,
}

impl Shard {
    fn new(info: ShardInfo, cfg: &Config, stream: &str, now: Instant) -> Self {
        let (records, bytes) = cfg.shard_rates();
        let labels = [
            ("stream", stream.to_owned()),
            ("shard_id", info.id.to_string()),
        ];
        Shard {
            aggregator: cfg.aggregation.map(Aggregator::new),
            aggregated: Vec::new(),
            agg_deadline: None,
            agg_expiry: None,
            queue: VecDeque::new(),
            limiter: Limiter::new(records, bytes, now),
            ready_at: None,
            busy: 0,
            retrying: 0,
            batched: 0,
            batched_bytes: 0,
            metrics: ShardMetrics {
                user_records_put: counter!(m::USER_RECORDS_PUT, &labels),
                user_records_data_put: counter!(m::USER_RECORDS_DATA_PUT, &labels),
                kinesis_records_put: counter!(m::KINESIS_RECORDS_PUT, &labels),
                kinesis_records_data_put: counter!(m::KINESIS_RECORDS_DATA_PUT, &labels),
                rate_factor: gauge!(m::SHARD_RATE_FACTOR, &labels),
            },
            span: tracing::debug_span!("shard", stream, shard_id = %info.id),
            info,
        }
    }

    /// Whether the shard may add an entry to the open batch now.
    fn may_batch(&self, ordering: Ordering) -> bool {
        match ordering {
            Ordering::Throughput => true,
            Ordering::PerPartitionKey => self.busy == 0 && self.batched == 0 && self.retrying == 0,
        }
    }

    fn is_idle(&self) -> bool {
        self.aggregated.is_empty() && self.queue.is_empty()
    }
}

/// The `PutRecords` call being packed.
#[derive(Default)]
struct Batch {
    krecs: Vec<KRec>,
    bytes: usize,
    deadline: Option<Instant>,
    /// A record did not fit: ship now.
    full: bool,
    /// One shard's share reached the early-flush threshold.
    shard_full: bool,
}

/// Shard-map refresh bookkeeping.
struct Refresh {
    running: bool,
    wanted: bool,
    failures: u32,
    not_before: Instant,
    next_periodic: Instant,
}

/// Stream-wide metric handles.
struct Metrics {
    received: Counter,
    errors: Counter,
    expired: Counter,
    failed: Counter,
    resent: Counter,
    calls: Counter,
    retries_per_record: Histogram,
    buffering_time: Histogram,
    request_time: Histogram,
    user_per_kinesis: Histogram,
    kinesis_per_request: Histogram,
    user_per_request: Histogram,
    pending: Gauge,
    pending_bytes: Gauge,
}

pub(crate) struct Pipeline {
    cfg: Arc<Config>,
    client: Client,
    stream: StreamRef,
    admission: Arc<Admission>,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_open: bool,
    intake: Arc<Intake>,
    /// Whether the intake still takes records.
    taking: bool,
    /// The records taken from the intake, and the vector swapped in next time.
    taken: Vec<Admitted>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    map: ShardMap,
    shards: Vec<Shard>,
    retries: BinaryHeap<Reverse<RetryAt>>,
    retry_seq: u64,
    unverified: Vec<(KRec, String, String)>,
    batch: Batch,
    in_flight: HashMap<u64, Vec<KRec>>,
    next_call: u64,
    round_robin: usize,
    outstanding: usize,
    epochs: VecDeque<usize>,
    epoch_base: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    draining: bool,
    refresh: Refresh,
    /// Whether admission room was returned since the gauges were last set.
    room_returned: bool,
    metrics: Metrics,
    /// Emptied record vectors of delivered Kinesis records, for the next aggregates.
    spare: Vec<Vec<Pending>>,
    /// Hash keys of recent partition keys (MD5 once per key, not once per record).
    hash_keys: HashKeyCache,
}

/// Pause after taking records from the intake, so that puts pile up and are taken in bulk.
const INTAKE_PAUSE: Duration = Duration::from_millis(1);

/// Most emptied record vectors kept for reuse.
const SPARE_RECORD_VECTORS: usize = 64;

impl Pipeline {
    pub(crate) fn new(
        cfg: Arc<Config>,
        client: Client,
        stream: StreamRef,
        admission: Arc<Admission>,
        rx: mpsc::UnboundedReceiver<Command>,
        intake: Arc<Intake>,
        map: ShardMap,
    ) -> Self {
        let now = Instant::now();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let name = stream.to_string();
        let shards = map
            .shards()
            .iter()
            .map(|info| Shard::new(info.clone(), &cfg, &name, now))
            .collect();
        let labels = [("stream", name.clone())];
        let metrics = Metrics {
            received: counter!(m::USER_RECORDS_RECEIVED, &labels),
            errors: counter!(m::ALL_ERRORS, &labels),
            expired: counter!(m::USER_RECORD_EXPIRED, &labels),
            failed: counter!(m::USER_RECORDS_FAILED, &labels),
            resent: counter!(m::USER_RECORDS_RESENT, &labels),
            calls: counter!(m::PUT_RECORDS_CALLS, &labels),
            retries_per_record: histogram!(m::RETRIES_PER_RECORD, &labels),
            buffering_time: histogram!(m::BUFFERING_TIME, &labels),
            request_time: histogram!(m::REQUEST_TIME, &labels),
            user_per_kinesis: histogram!(m::USER_RECORDS_PER_KINESIS_RECORD, &labels),
            kinesis_per_request: histogram!(m::KINESIS_RECORDS_PER_REQUEST, &labels),
            user_per_request: histogram!(m::USER_RECORDS_PER_REQUEST, &labels),
            pending: gauge!(m::USER_RECORDS_PENDING, &labels),
            pending_bytes: gauge!(m::USER_RECORDS_PENDING_BYTES, &labels),
        };
        Pipeline {
            refresh: Refresh {
                running: false,
                wanted: false,
                failures: 0,
                not_before: now,
                next_periodic: now + cfg.shard_map_refresh,
            },
            cfg,
            client,
            stream,
            admission,
            rx,
            rx_open: true,
            intake,
            taking: true,
            taken: Vec::new(),
            events_tx,
            events_rx,
            map,
            shards,
            retries: BinaryHeap::new(),
            retry_seq: 0,
            unverified: Vec::new(),
            batch: Batch::default(),
            in_flight: HashMap::new(),
            next_call: 0,
            round_robin: 0,
            outstanding: 0,
            epochs: VecDeque::from([0]),
            epoch_base: 0,
            flush_waiters: Vec::new(),
            draining: false,
            room_returned: false,
            metrics,
            spare: Vec::new(),
            hash_keys: HashKeyCache::default(),
        }
    }

    /// Runs until every handle is gone (or shutdown was asked) and every record is resolved.
    pub(crate) async fn run(self, done: watch::Sender<bool>) {
        let span = tracing::info_span!("kinesis_producer", stream = %self.stream);
        // Marks the producer stopped however the task ends, so that waiting `put`s and
        // `shutdown`s return.
        // Records still in the intake then resolve as cancelled, with the record.
        struct Stopped(watch::Sender<bool>, Arc<Admission>, Arc<Intake>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                drop(self.2.close());
                self.1.close();
                let _ = self.0.send(true);
            }
        }
        let _stopped = Stopped(done, self.admission.clone(), self.intake.clone());
        self.event_loop().instrument(span).await;
    }

    async fn event_loop(mut self) {
        // After taking records in, the task leaves the intake alone for a moment so that puts
        // pile up and are taken in bulk: one wake-up per batch instead of one per few records.
        // Linger is far longer, so records lose nothing by it.
        let mut intake_at = Instant::now();
        let intake = self.intake.clone();
        loop {
            let now = Instant::now();
            let intake_open = self.taking && now >= intake_at;
            let mut wake = self.next_wake(now);
            if self.taking && !intake_open {
                wake = Some(wake.map_or(intake_at, |w| w.min(intake_at)));
            }
            tokio::select! {
                biased;
                Some(event) = self.events_rx.recv() => {
                    self.on_event(event);
                    while let Ok(event) = self.events_rx.try_recv() {
                        self.on_event(event);
                    }
                }
                command = self.rx.recv(), if self.rx_open => {
                    let now = Instant::now();
                    match command {
                        Some(command) => self.on_command(command, now),
                        // Every handle is gone: nothing more can be put.
                        None => {
                            self.rx_open = false;
                            self.close_intake(now);
                        }
                    }
                }
                () = intake.notify.notified(), if intake_open => {
                    let now = Instant::now();
                    self.take_records(now);
                    intake_at = now + INTAKE_PAUSE;
                }
                () = sleep_until(wake) => {}
            }
            self.pump(Instant::now());
            self.update_pending_gauges();
            if !self.rx_open && !self.taking && self.outstanding == 0 {
                debug!("drained; stopping");
                return;
            }
        }
    }

    /// Takes in every record left in the intake.
    fn take_records(&mut self, now: Instant) {
        let mut taken = std::mem::take(&mut self.taken);
        self.intake.take(&mut taken);
        self.admit(&mut taken, now);
        self.taken = taken;
    }

    /// Stops taking records and takes in those left; the pipeline then drains.
    fn close_intake(&mut self, now: Instant) {
        if self.taking {
            self.taking = false;
            self.draining = true;
            let mut left = self.intake.close();
            self.admit(&mut left, now);
        }
    }

    fn admit(&mut self, records: &mut Vec<Admitted>, now: Instant) {
        self.metrics.received.increment(records.len() as u64);
        for mut admitted in records.drain(..) {
            let (Some(record), tx) = (admitted.record.take(), admitted.tx.take()) else {
                continue;
            };
            let pending = Pending {
                hash_key: self.hash_keys.of_record(&record),
                record,
                tx,
                put_at: now,
                prior: Vec::new(),
                epoch: self.epoch_base + self.epochs.len() as u64 - 1,
            };
            if let Some(count) = self.epochs.back_mut() {
                *count += 1;
            }
            self.outstanding += 1;
            self.route(pending, now);
        }
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Flush(tx) => {
                // The records put before the flush are those in the intake now.
                self.take_records(now);
                let epoch = self.epoch_base + self.epochs.len() as u64 - 1;
                self.flush_waiters.push((epoch, tx));
                self.epochs.push_back(0);
                self.settle_flushes();
            }
            Command::Shutdown => {
                // Refuse new records and commands; what is already in is still delivered.
                self.close_intake(now);
                self.rx.close();
            }
        }
    }

    fn flushing(&self) -> bool {
        self.draining || !self.flush_waiters.is_empty()
    }

    /// Puts a user record into its predicted shard's aggregate (or its queue, unaggregated).
    fn route(&mut self, pending: Pending, now: Instant) {
        let index = self.map.lookup(pending.hash_key);
        let cfg = &self.cfg;
        let deadline = pending.put_at + cfg.linger;
        let expiry = pending.put_at + cfg.record_ttl;
        let shard = &mut self.shards[index];
        let Some(aggregator) = shard.aggregator.as_mut() else {
            let (partition_key, explicit_hash_key, data) = {
                let r = &pending.record;
                (
                    r.partition_key().to_owned(),
                    r.explicit_hash_key(),
                    r.data().clone(),
                )
            };
            let size = pending.record.size();
            let pending_put_at = pending.put_at;
            shard.queue.push_back(KRec {
                partition_key,
                explicit_hash_key,
                data,
                undigested: None,
                size,
                aggregated: false,
                records: vec![pending],
                shard: shard.info.id.clone(),
                deadline,
                expiry,
                backoff: None,
                last_error: None,
                attempts: Vec::new(),
                last_end: pending_put_at,
            });
            return;
        };
        if aggregator.try_push_ref(&pending.record).is_err() {
            Self::finish_aggregate(shard, &mut self.spare, now);
            if let Some(aggregator) = shard.aggregator.as_mut() {
                // An empty aggregator takes any record.
                let _ = aggregator.try_push_ref(&pending.record);
            }
        }
        shard.aggregated.push(pending);
        shard.agg_deadline = Some(shard.agg_deadline.map_or(deadline, |d| d.min(deadline)));
        shard.agg_expiry = Some(shard.agg_expiry.map_or(expiry, |d| d.min(expiry)));
        let full = shard
            .aggregator
            .as_ref()
            .is_some_and(|a| a.len() >= a.limits().max_records());
        if full {
            Self::finish_aggregate(shard, &mut self.spare, now);
        }
    }

    /// Closes the shard's aggregate under construction and queues it.
    fn finish_aggregate(shard: &mut Shard, spare: &mut Vec<Vec<Pending>>, now: Instant) {
        let Some(finished) = shard
            .aggregator
            .as_mut()
            .and_then(Aggregator::finish_undigested)
        else {
            return;
        };
        // An aggregate's MD5 trailer is computed when its call is packed, together with the
        // other aggregates of the call (several at once, in vector registers).
        let (partition_key, explicit_hash_key, data, size, aggregated, undigested) = match finished
        {
            Finished::Ready(record) => {
                let (size, aggregated) = (record.size(), record.is_aggregated());
                let KinesisRecord {
                    partition_key,
                    explicit_hash_key,
                    data,
                    ..
                } = record;
                (
                    partition_key,
                    explicit_hash_key,
                    data,
                    size,
                    aggregated,
                    None,
                )
            }
            Finished::Undigested(aggregate) => (
                AGGREGATE_PARTITION_KEY.to_owned(),
                Some(aggregate.explicit_hash_key()),
                Bytes::new(),
                aggregate.size(),
                true,
                Some(aggregate),
            ),
        };
        let capacity = shard.aggregated.len();
        let spare = spare.pop().unwrap_or_else(|| Vec::with_capacity(capacity));
        let records = std::mem::replace(&mut shard.aggregated, spare);
        let oldest = records.iter().map(|p| p.put_at).min().unwrap_or(now);
        shard.queue.push_back(KRec {
            size,
            aggregated,
            partition_key,
            explicit_hash_key,
            data,
            undigested,
            records,
            shard: shard.info.id.clone(),
            deadline: shard.agg_deadline.take().unwrap_or(now),
            expiry: shard.agg_expiry.take().unwrap_or(now),
            backoff: None,
            last_error: None,
            attempts: Vec::new(),
            last_end: oldest,
        });
    }

    /// Moves everything that is due one step forward, and ships calls.
    fn pump(&mut self, now: Instant) {
        while self.retries.peek().is_some_and(|Reverse(r)| r.at <= now) {
            if let Some(Reverse(retry)) = self.retries.pop() {
                self.requeue(retry.krec, now);
            }
        }
        let flushing = self.flushing();
        for shard in &mut self.shards {
            if !shard.aggregated.is_empty()
                && (flushing || shard.agg_deadline.is_some_and(|d| d <= now))
            {
                Self::finish_aggregate(shard, &mut self.spare, now);
            }
        }
        self.expire_queued(now);
        if !self.refresh.running
            && ((self.refresh.wanted && now >= self.refresh.not_before)
                || now >= self.refresh.next_periodic)
        {
            self.start_refresh(now);
        }
        loop {
            self.fill_batch(now);
            if self.batch.krecs.is_empty() || self.in_flight.len() >= self.cfg.max_in_flight {
                break;
            }
            let due = self.batch.full
                || self.batch.shard_full
                || self.flushing()
                || self.batch.deadline.is_some_and(|d| d <= now);
            if !due {
                break;
            }
            if self.cfg.fill_calls && !self.batch.full {
                // The call goes out now: every shard's aggregate under construction goes with
                // it, before its own deadline (never after). The shards' next aggregates then
                // start together and fall due together, so calls carry one per shard instead of
                // one each.
                let mut took = false;
                for shard in &mut self.shards {
                    if !shard.aggregated.is_empty() && shard.may_batch(self.cfg.ordering) {
                        Self::finish_aggregate(shard, &mut self.spare, now);
                        took = true;
                    }
                }
                if took {
                    self.fill_batch(now);
                }
            }
            self.ship(now);
        }
    }

    /// Fails queued Kinesis records whose earliest TTL passed.
    fn expire_queued(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for shard in &mut self.shards {
            // Retried records go back to the front; the queue is ordered by age closely enough
            // that checking from the front finds the expired ones.
            while shard.queue.front().is_some_and(|k| k.expiry <= now) {
                expired.extend(shard.queue.pop_front());
            }
        }
        for krec in expired {
            self.fail_expired(krec);
        }
    }

    /// Moves Kinesis records from the shard queues into the open batch as the limiters allow,
    /// round robin over the shards.
    fn fill_batch(&mut self, now: Instant) {
        let count = self.shards.len();
        if count == 0 {
            return;
        }
        let ordering = self.cfg.ordering;
        let (max_entries, max_bytes) = (self.cfg.max_entries_per_call, self.cfg.max_bytes_per_call);
        let start = self.round_robin % count;
        self.round_robin = self.round_robin.wrapping_add(1);
        for offset in 0..count {
            if self.batch.full {
                return;
            }
            let shard = &mut self.shards[(start + offset) % count];
            while let Some(head) = shard.queue.front() {
                if !shard.may_batch(ordering) {
                    break;
                }
                if self.batch.krecs.len() >= max_entries || self.batch.bytes + head.size > max_bytes
                {
                    self.batch.full = true;
                    return;
                }
                if let Err(at) = shard.limiter.try_take(head.size, now) {
                    shard.ready_at = Some(at);
                    break;
                }
                shard.ready_at = None;
                let Some(krec) = shard.queue.pop_front() else {
                    break;
                };
                shard.batched += 1;
                shard.batched_bytes += krec.size;
                if shard.batched_bytes >= self.cfg.shard_flush_bytes {
                    self.batch.shard_full = true;
                }
                self.batch.bytes += krec.size;
                self.batch.deadline = Some(
                    self.batch
                        .deadline
                        .map_or(krec.deadline, |d| d.min(krec.deadline)),
                );
                self.batch.krecs.push(krec);
            }
        }
    }

    /// Sends the open batch as one `PutRecords` call.
    fn ship(&mut self, now: Instant) {
        let batch = std::mem::take(&mut self.batch);
        let mut krecs = Vec::with_capacity(batch.krecs.len());
        for krec in batch.krecs {
            if let Some(shard) = self.shard_mut(&krec.shard) {
                shard.batched = shard.batched.saturating_sub(1);
                shard.batched_bytes = shard.batched_bytes.saturating_sub(krec.size);
                shard.busy += 1;
            }
            if krec.expiry <= now {
                if let Some(shard) = self.shard_mut(&krec.shard) {
                    shard.busy = shard.busy.saturating_sub(1);
                }
                self.fail_expired(krec);
            } else {
                krecs.push(krec);
            }
        }
        if krecs.is_empty() {
            return;
        }
        let user_records: usize = krecs.iter().map(|k| k.records.len()).sum();
        self.metrics.calls.increment(1);
        self.metrics.kinesis_per_request.record(krecs.len() as f64);
        self.metrics.user_per_request.record(user_records as f64);
        for krec in &krecs {
            if krec.attempts.is_empty() {
                let waited = now.saturating_duration_since(krec.records[0].put_at);
                self.metrics
                    .buffering_time
                    .record_many(waited.as_secs_f64(), krec.records.len());
            }
        }
        // The trailers of the call's new aggregates, computed together.
        let (positions, undigested): (Vec<usize>, Vec<UndigestedAggregate>) = krecs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, k)| k.undigested.take().map(|a| (i, a)))
            .unzip();
        for (i, record) in positions.into_iter().zip(digest_aggregates(undigested)) {
            krecs[i].data = record.data;
        }
        // The data moves into the request (no copy of an aggregate); a retry encodes it again.
        let parts: Vec<(String, Option<HashKey>, Bytes)> = krecs
            .iter_mut()
            .map(|k| {
                let data = match std::mem::take(&mut k.data) {
                    data if data.is_empty() => k.encode(),
                    data => data,
                };
                (k.partition_key.clone(), k.explicit_hash_key, data)
            })
            .collect();
        let id = self.next_call;
        self.next_call += 1;
        self.in_flight.insert(id, krecs);
        let client = self.client.clone();
        let stream = self.stream.clone();
        let timeout = self.cfg.request_timeout;
        let events = self.events_tx.clone();
        tokio::spawn(
            async move {
                let entries = parts
                    .into_iter()
                    .filter_map(|(partition_key, explicit_hash_key, data)| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(partition_key)
                            .set_explicit_hash_key(explicit_hash_key.map(|k| k.to_string()))
                            .data(Blob::new(Vec::from(data)))
                            .build()
                            .ok()
                    })
                    .collect::<Vec<_>>();
                let started = Instant::now();
                let result = kinesis::put_records(&client, &stream, entries, timeout).await;
                let _ = events.send(Event::Call {
                    id,
                    started,
                    finished: Instant::now(),
                    result,
                });
            }
            .in_current_span(),
        );
    }

    fn shard_mut(&mut self, id: &str) -> Option<&mut Shard> {
        let index = self.map.position(id)?;
        self.shards.get_mut(index)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Call {
                id,
                started,
                finished,
                result,
            } => self.on_call(id, started, finished, result),
            Event::Map { result } => self.on_map(result, Instant::now()),
        }
    }

    fn on_call(
        &mut self,
        id: u64,
        started: Instant,
        finished: Instant,
        result: Result<Vec<EntryResult>, CallError>,
    ) {
        let Some(krecs) = self.in_flight.remove(&id) else {
            return;
        };
        let duration = finished.saturating_duration_since(started);
        self.metrics.request_time.record(duration.as_secs_f64());
        for krec in &krecs {
            if let Some(shard) = self.shard_mut(&krec.shard) {
                shard.busy = shard.busy.saturating_sub(1);
            }
        }
        match result {
            Err(error) => {
                let kind = error.kind;
                self.count_error(&error.code);
                debug!(code = %error.code, request_id = ?error.request_id, entries = krecs.len(), "PutRecords failed");
                let wrote = kinesis::wrote(&error);
                for krec in krecs {
                    self.failed(
                        krec,
                        kind,
                        AttemptError {
                            code: error.code.clone(),
                            message: error.message.clone(),
                            wrote,
                        },
                        error.request_id.as_deref(),
                        started,
                        duration,
                        finished,
                    );
                }
            }
            Ok(results) => {
                let mut throttled: Vec<Arc<str>> = Vec::new();
                for (krec, result) in krecs.into_iter().zip(results) {
                    match result {
                        EntryResult::Written {
                            shard_id,
                            sequence_number,
                        } => self.written(
                            krec,
                            shard_id,
                            sequence_number,
                            started,
                            duration,
                            finished,
                        ),
                        EntryResult::Failed { code, message } => {
                            // Entry errors come with the call's 200: their code decides.
                            let kind = kinesis_calls::classify(&code, None);
                            self.count_error(&code);
                            if ErrorClass::of(kind) == ErrorClass::Throttled
                                && !throttled.contains(&krec.shard)
                            {
                                throttled.push(krec.shard.clone());
                            }
                            // The service answered for this entry: it was not written.
                            let error = AttemptError {
                                code,
                                message,
                                wrote: Wrote::Nothing,
                            };
                            self.failed(krec, kind, error, None, started, duration, finished);
                        }
                    }
                }
                for id in throttled {
                    if let Some(shard) = self.shard_mut(&id) {
                        shard.limiter.on_throttled(finished);
                        shard.metrics.rate_factor.set(shard.limiter.factor());
                        let _span = shard.span.enter();
                        debug!(factor = shard.limiter.factor(), "throttled; rate lowered");
                    }
                }
            }
        }
    }

    fn count_error(&self, code: &str) {
        self.metrics.errors.increment(1);
        counter!(m::ERRORS_BY_CODE, "stream" => self.stream.to_string(), "error_code" => code.to_owned())
            .increment(1);
    }

    /// An entry was written: decide whether consumers will see its user records.
    fn written(
        &mut self,
        krec: KRec,
        shard_id: String,
        sequence_number: String,
        started: Instant,
        duration: std::time::Duration,
        finished: Instant,
    ) {
        let range = self
            .map
            .position(&shard_id)
            .and_then(|i| self.map.get(i))
            .map(|s| s.range);
        let verdict = retry::landed(
            &krec.shard,
            &shard_id,
            range,
            krec.aggregated,
            krec.hash_keys(),
        );
        match verdict {
            Verdict::Delivered => self.deliver(
                krec,
                &shard_id,
                sequence_number,
                started,
                duration,
                finished,
            ),
            Verdict::DeliveredElsewhere => {
                self.want_refresh(Some(started));
                self.deliver(
                    krec,
                    &shard_id,
                    sequence_number,
                    started,
                    duration,
                    finished,
                );
            }
            Verdict::Resend => {
                self.want_refresh(Some(started));
                self.resend(krec, &shard_id, started, duration, finished);
            }
            Verdict::Unverified => {
                self.want_refresh(None);
                let mut krec = krec;
                krec.attempted(started, duration, finished, None);
                self.unverified.push((krec, shard_id, sequence_number));
            }
        }
    }

    /// An entry was written where consumers read all of it: record the attempt, credit the
    /// limiter, resolve its records.
    fn deliver(
        &mut self,
        mut krec: KRec,
        shard_id: &str,
        sequence_number: String,
        started: Instant,
        duration: std::time::Duration,
        finished: Instant,
    ) {
        if let Some(predicted) = self.shard_mut(&krec.shard) {
            predicted.limiter.on_accepted(finished);
            predicted
                .metrics
                .rate_factor
                .set(predicted.limiter.factor());
        }
        krec.attempted(started, duration, finished, None);
        self.complete(krec, shard_id, sequence_number);
    }

    /// Resolves every record of a written entry (its attempts already recorded) and counts it.
    fn complete(&mut self, mut krec: KRec, shard_id: &str, sequence_number: String) {
        let bytes: usize = krec.records.iter().map(|p| p.record.size()).sum();
        let count = krec.records.len();
        if let Some(shard) = self.shard_mut(shard_id) {
            shard.metrics.user_records_put.increment(count as u64);
            shard.metrics.user_records_data_put.increment(bytes as u64);
            shard.metrics.kinesis_records_put.increment(1);
            shard
                .metrics
                .kinesis_records_data_put
                .increment(krec.size as u64);
        }
        self.metrics.user_per_kinesis.record(count as f64);
        let retries = krec.attempts.len().saturating_sub(1);
        self.metrics
            .retries_per_record
            .record_many(retries as f64, count);
        let aggregated = krec.aggregated;
        let mut records = std::mem::take(&mut krec.records);
        // What the records share, held once (one reference count per record, one allocation per
        // Kinesis record).
        let shared = Arc::new(Written {
            shard_id: shard_id.to_owned(),
            sequence_number,
            aggregated,
            attempts: std::mem::take(&mut krec.attempts),
        });
        self.return_room(&records);
        for (index, mut pending) in records.drain(..).enumerate() {
            let written = if pending.prior.is_empty() {
                shared.clone()
            } else {
                // Routed again after earlier attempts with another Kinesis record: its own
                // history, those attempts first.
                let mut attempts = std::mem::take(&mut pending.prior);
                attempts.extend(shared.attempts.iter().cloned());
                Arc::new(Written {
                    shard_id: shared.shard_id.clone(),
                    sequence_number: shared.sequence_number.clone(),
                    aggregated,
                    attempts,
                })
            };
            let sub_sequence_number = if aggregated { index as u64 } else { 0 };
            pending.resolve(Ok(Delivery::new(written, sub_sequence_number)));
            self.settle(&pending);
        }
        // The emptied vector holds the next aggregate's records (they are large: one allocation
        // fewer per aggregate).
        if self.spare.len() < SPARE_RECORD_VECTORS && records.capacity() > 0 {
            self.spare.push(records);
        }
    }

    /// The aggregate landed where a KCL-style consumer drops it: send every user record again,
    /// routed by the current map.
    fn resend(
        &mut self,
        mut krec: KRec,
        shard_id: &str,
        started: Instant,
        duration: std::time::Duration,
        finished: Instant,
    ) {
        warn!(
            predicted = %krec.shard,
            actual = shard_id,
            user_records = krec.records.len(),
            "aggregate landed on a shard whose range does not hold all its records; resending them"
        );
        self.metrics.resent.increment(krec.records.len() as u64);
        krec.attempted(
            started,
            duration,
            finished,
            Some(AttemptError {
                code: "WrongShard".into(),
                message: format!(
                    "written to {shard_id}, whose hash key range does not hold every record of the aggregate"
                ),
                wrote: Wrote::ToAnotherShard,
            }),
        );
        self.dissolve(krec, finished);
    }

    /// Routes a Kinesis record's user records again, each on its own.
    fn dissolve(&mut self, mut krec: KRec, now: Instant) {
        for mut pending in std::mem::take(&mut krec.records) {
            pending.prior.extend(krec.attempts.iter().cloned());
            self.route(pending, now);
        }
    }

    /// An entry or a whole call failed.
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &mut self,
        mut krec: KRec,
        kind: kinesis_calls::ErrorKind,
        error: AttemptError,
        request_id: Option<&str>,
        started: Instant,
        duration: std::time::Duration,
        finished: Instant,
    ) {
        let (code, message) = (error.code.clone(), error.message.clone());
        let (code, message) = (code.as_str(), message.as_str());
        krec.attempted(started, duration, finished, Some(error));
        krec.last_error = Some(code.to_owned());
        match ErrorClass::of(kind) {
            ErrorClass::Fatal => {
                let stream = self.stream.to_string();
                self.fail_all(krec, || Error::Rejected {
                    kind,
                    stream: stream.clone(),
                    code: code.to_owned(),
                    message: message.to_owned(),
                    request_id: request_id.map(str::to_owned),
                });
            }
            ErrorClass::Throttled if self.cfg.fail_if_throttled => {
                let shard_id = krec.shard.clone();
                self.fail_all(krec, || Error::Throttled {
                    shard_id: shard_id.clone(),
                    code: code.to_owned(),
                });
            }
            _ => self.schedule_retry(krec, finished),
        }
    }

    fn schedule_retry(&mut self, mut krec: KRec, now: Instant) {
        let (min, max) = (self.cfg.retry_min_delay, self.cfg.retry_max_delay);
        let delay = krec
            .backoff
            .get_or_insert_with(|| retry::backoff(min, max))
            .next()
            .unwrap_or(max);
        let at = now + delay;
        if at >= krec.expiry {
            self.fail_expired(krec);
            return;
        }
        if let Some(shard) = self.shard_mut(&krec.shard) {
            shard.retrying += 1;
        }
        self.retry_seq += 1;
        self.retries.push(Reverse(RetryAt {
            at,
            seq: self.retry_seq,
            krec,
        }));
    }

    /// A retry is due: back to the front of its shard's queue if the shard is still open, else
    /// its user records are routed again.
    fn requeue(&mut self, krec: KRec, now: Instant) {
        match self.map.position(&krec.shard) {
            Some(index) => {
                let shard = &mut self.shards[index];
                shard.retrying = shard.retrying.saturating_sub(1);
                shard.queue.push_front(krec);
            }
            None => self.dissolve(krec, now),
        }
    }

    fn fail_expired(&mut self, krec: KRec) {
        let ttl = self.cfg.record_ttl;
        let last_error = krec.last_error.clone();
        self.metrics.expired.increment(krec.records.len() as u64);
        self.fail_all(krec, || Error::Expired {
            ttl,
            last_error: last_error.clone(),
        });
    }

    fn fail_all(&mut self, mut krec: KRec, error: impl Fn() -> Error) {
        self.metrics.failed.increment(krec.records.len() as u64);
        let records = std::mem::take(&mut krec.records);
        self.return_room(&records);
        for mut pending in records {
            let failure = Failure {
                error: error(),
                record: pending.record.clone(),
                attempts: krec.history(&pending),
            };
            pending.prior.clear();
            pending.resolve(Err(Box::new(failure)));
            self.settle(&pending);
        }
    }

    /// Returns the admission permits of records about to be resolved: whoever sees a receipt
    /// resolved sees its room back too.
    fn return_room(&mut self, records: &[Pending]) {
        let bytes = records.iter().map(|p| p.record.size()).sum();
        self.admission.release(records.len(), bytes);
        self.room_returned = true;
    }

    /// Bookkeeping for a resolved record: the flush epochs (after its receipt is resolved, so
    /// that a flush returns only once its records' receipts have).
    fn settle(&mut self, pending: &Pending) {
        self.outstanding -= 1;
        let index = (pending.epoch - self.epoch_base) as usize;
        if let Some(count) = self.epochs.get_mut(index) {
            *count -= 1;
            if index == 0 && *count == 0 {
                self.settle_flushes();
            }
        }
    }

    /// Completes the flushes whose records are all resolved.
    fn settle_flushes(&mut self) {
        while self.epochs.len() > 1 && self.epochs.front() == Some(&0) {
            self.epochs.pop_front();
            self.epoch_base += 1;
        }
        let base = self.epoch_base;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .partition(|(epoch, _)| *epoch < base);
        self.flush_waiters = waiting;
        for (_, tx) in done {
            let _ = tx.send(());
        }
    }

    /// Updates the pending gauges once per event after room was returned.
    fn update_pending_gauges(&mut self) {
        if std::mem::take(&mut self.room_returned) {
            let (records, bytes) = self.admission.outstanding();
            self.metrics.pending.set(records as f64);
            self.metrics.pending_bytes.set(bytes as f64);
        }
    }

    /// Asks for a map refresh, unless the map is already newer than the answer that showed it
    /// stale (`seen_at`: when that call started).
    fn want_refresh(&mut self, seen_at: Option<Instant>) {
        if seen_at.is_some_and(|at| self.map.fetched_at > at) {
            return;
        }
        self.refresh.wanted = true;
    }

    fn start_refresh(&mut self, now: Instant) {
        self.refresh.running = true;
        self.refresh.wanted = false;
        let client = self.client.clone();
        let stream = self.stream.clone();
        let timeout = self.cfg.request_timeout;
        let page_size = self.cfg.list_shards_page_size;
        let events = self.events_tx.clone();
        tokio::spawn(
            async move {
                let result = kinesis::list_shards(&client, &stream, page_size, timeout)
                    .await
                    .map_err(|e| format!("ListShards failed: {} {}", e.code, e.message))
                    .and_then(|listed| {
                        ShardMap::from_listing(&listed, now).map_err(|p| p.to_string())
                    });
                let _ = events.send(Event::Map { result });
            }
            .in_current_span(),
        );
    }

    fn on_map(&mut self, result: Result<ShardMap, String>, now: Instant) {
        self.refresh.running = false;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        counter!(m::SHARD_MAP_REFRESHES, "stream" => self.stream.to_string(), "outcome" => outcome)
            .increment(1);
        match result {
            Ok(map) if map.supersedes(&self.map) => {
                self.refresh.failures = 0;
                self.refresh.next_periodic = now + self.cfg.shard_map_refresh;
                self.install(map, now);
            }
            Ok(_) => {
                // An answer older than the map in use: keep the newer one.
            }
            Err(problem) => {
                self.refresh.failures += 1;
                self.refresh.wanted = true;
                self.refresh.not_before = now + refresh_backoff(self.refresh.failures);
                warn!(%problem, failures = self.refresh.failures, "shard map refresh failed");
                // Entries that landed on unknown shards cannot be checked: send them again.
                for (mut krec, shard_id, _) in std::mem::take(&mut self.unverified) {
                    mark_wrong_shard(&mut krec, &shard_id);
                    self.dissolve(krec, now);
                }
            }
        }
    }

    /// Replaces the shard map. Shards that stay keep their state; the records of shards that
    /// closed are routed again.
    fn install(&mut self, map: ShardMap, now: Instant) {
        let changed = map.shards().iter().map(|s| &s.id).ne(self
            .map
            .shards()
            .iter()
            .map(|s| &s.id));
        if !changed {
            self.map.fetched_at = map.fetched_at;
        } else {
            debug!(shards = map.len(), "shard map changed");
            let mut old: HashMap<Arc<str>, Shard> = std::mem::take(&mut self.shards)
                .into_iter()
                .map(|s| (s.info.id.clone(), s))
                .collect();
            let name = self.stream.to_string();
            self.shards = map
                .shards()
                .iter()
                .map(|info| {
                    old.remove(&info.id)
                        .unwrap_or_else(|| Shard::new(info.clone(), &self.cfg, &name, now))
                })
                .collect();
            self.map = map;
            // Records of the shards that closed, oldest first: the queue, then the aggregate.
            self.batch_return();
            for (_, mut shard) in old {
                for krec in std::mem::take(&mut shard.queue) {
                    self.dissolve(krec, now);
                }
                if let Some(aggregator) = shard.aggregator.as_mut() {
                    let _ = aggregator.finish();
                }
                for pending in std::mem::take(&mut shard.aggregated) {
                    self.route(pending, now);
                }
            }
        }
        for (krec, shard_id, sequence_number) in std::mem::take(&mut self.unverified) {
            let range = self
                .map
                .position(&shard_id)
                .and_then(|i| self.map.get(i))
                .map(|s| s.range);
            match range {
                Some(range) if krec.hash_keys().all(|k| range.contains(k)) => {
                    self.complete(krec, &shard_id, sequence_number);
                }
                _ => {
                    self.metrics.resent.increment(krec.records.len() as u64);
                    warn!(actual = %shard_id, "aggregate landed on a shard whose range does not hold all its records; resending them");
                    let mut krec = krec;
                    mark_wrong_shard(&mut krec, &shard_id);
                    self.dissolve(krec, now);
                }
            }
        }
    }

    /// Entries of the open batch whose shard closed go back to be routed again.
    fn batch_return(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        for krec in batch.krecs {
            match self.map.position(&krec.shard) {
                Some(index) => {
                    let shard = &mut self.shards[index];
                    shard.batched = shard.batched.saturating_sub(1);
                    shard.batched_bytes = shard.batched_bytes.saturating_sub(krec.size);
                    shard.queue.push_front(krec);
                }
                None => self.dissolve(krec, Instant::now()),
            }
        }
    }

    /// When the task must next look at its state without an event.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let Some(Reverse(retry)) = self.retries.peek() {
            at(retry.at);
        }
        let flushing = self.flushing();
        for shard in &self.shards {
            if shard.is_idle() {
                continue;
            }
            if let Some(d) = shard.agg_deadline {
                at(if flushing { now } else { d });
            }
            if let Some(head) = shard.queue.front() {
                at(head.expiry);
                // A past readiness is stale (the shard waits for its call in flight, or the
                // batch is full): waking for it would spin.
                if let Some(ready) = shard.ready_at.filter(|ready| *ready > now) {
                    at(ready);
                }
            }
        }
        if let Some(deadline) = self.batch.deadline
            && self.in_flight.len() < self.cfg.max_in_flight
        {
            at(deadline);
        }
        if !self.refresh.running {
            at(self.refresh.next_periodic);
            if self.refresh.wanted {
                at(self.refresh.not_before);
            }
        }
        wake
    }
}

/// Turns the recorded attempt of an entry that landed on a then-unknown shard into a failed one:
/// its records are being sent again.
fn mark_wrong_shard(krec: &mut KRec, shard_id: &str) {
    if let Some(attempt) = krec.attempts.last_mut() {
        attempt.error = Some(AttemptError {
            code: "WrongShard".into(),
            message: format!(
                "written to {shard_id}, which the refreshed shard map could not show to hold every record of the aggregate"
            ),
            wrote: Wrote::ToAnotherShard,
        });
    }
}

/// A delivered record's attempts: the Kinesis record's, shared, unless the record was routed
/// again and has a history of its own.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> UserRecord {
        UserRecord::new(format!("key-{n}"), vec![n; 10]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn the_intake_hands_records_over_in_order_and_refuses_them_once_closed() {
        let intake = Intake::new(RecordSlab::new(1024, 4096));
        let receipts: Vec<_> = (0..3)
            .map(|n| {
                intake
                    .admit(record(n))
                    .unwrap_or_else(|_| panic!("refused"))
            })
            .collect();
        let mut taken = Vec::new();
        intake.take(&mut taken);
        let keys: Vec<_> = taken
            .iter()
            .filter_map(|a| a.record.as_ref().map(|r| r.partition_key().to_owned()))
            .collect();
        assert_eq!(keys, ["key-0", "key-1", "key-2"]);
        let left = intake
            .admit(record(3))
            .unwrap_or_else(|_| panic!("refused"));
        // Closing hands back what was left; a record admitted after is refused with itself.
        let remaining = intake.close();
        assert_eq!(remaining.len(), 1);
        assert_eq!(intake.admit(record(4)).err(), Some(record(4)));
        // Records dropped before the pipeline took them in resolve as cancelled, with the
        // record, whichever way they are dropped.
        drop(taken);
        drop(remaining);
        for (n, receipt) in receipts.into_iter().chain([left]).enumerate() {
            let failure = receipt.await.err().unwrap_or_else(|| panic!("delivered"));
            assert!(matches!(failure.error, Error::Cancelled));
            assert_eq!(failure.record, record(n as u8));
        }
    }

    #[tokio::test]
    async fn a_record_left_in_the_intake_wakes_the_pipeline_once() {
        let intake = Intake::new(RecordSlab::new(1024, 4096));
        let _first = intake.admit(record(0));
        let _second = intake.admit(record(1));
        // One stored notification for the two records; none left after it is taken.
        intake.notify.notified().await;
        let mut taken = Vec::new();
        intake.take(&mut taken);
        assert_eq!(taken.len(), 2);
        let again = tokio::time::timeout(Duration::from_millis(20), intake.notify.notified());
        assert!(again.await.is_err());
    }
}
