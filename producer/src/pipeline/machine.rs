//! The pipeline's core: a pure state machine, `(state, input, now) -> actions`.
//!
//! The driver feeds it [`Input`]s (records admitted, a flush asked, the intake closed, a call's
//! answer, a new shard map, time passing) with the time they happen, and performs the
//! [`Action`]s it returns (ship these entries, list the shards, resolve these receipts, a flush
//! is complete). It reads no clock, spawns nothing and knows no SDK type, so that tests drive it
//! through any schedule of answers on a clock of their own.
//!
//! Each Kinesis record is in exactly one place: a shard's aggregate under construction (as user
//! records), a shard's queue, the call being packed, a call in flight, the retry heap, or the
//! entries written to shards the map does not know yet. Each user record is resolved exactly
//! once, by an [`Action::Resolve`].

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use kinesis_aggregation::HashKeyCache;
use metrics::{Counter, Histogram, counter, histogram};

use super::{
    answers::{RetryAt, Unverified},
    batching::{Batch, Shard},
    entries::{CallFailure, Entry, EntryResult, KRec, Pending, Prior, Resolution},
    flush::{FlushToken, Flushes},
    intake::Admitted,
    map_refresh::Refresh,
};
use crate::{config::Config, metrics as m, shard_map::ShardMap};

/// What happened, as fed to [`Machine::handle`]. Only [`Input::Tick`] moves records forward and
/// ships calls; the driver feeds it after every other input it receives.
pub(crate) enum Input<'a> {
    /// Records taken from the intake (the vector is left empty, for reuse).
    Admitted(&'a mut Vec<Admitted>),
    /// The application asked for a flush (after the records put before it were admitted):
    /// answered with [`Action::Flushed`] once every record admitted so far is resolved.
    Flush(FlushToken),
    /// No record will be admitted any more (shutdown, or every handle gone): ship what is held
    /// without waiting for the linger, until every record is resolved.
    Closed,
    /// A `PutRecords` call's answer: one result per entry, in order, or the whole call failed.
    Answered {
        call: u64,
        started: Instant,
        finished: Instant,
        result: Result<Vec<EntryResult>, CallFailure>,
    },
    /// A `ListShards` answer made into a map (which carries when its call started), or why it
    /// could not be.
    Listed(Result<ShardMap, String>),
    /// Time passed: move whatever is due forward and ship the calls that are due.
    Tick,
}

/// What the driver must do, in the order returned.
pub(crate) enum Action {
    /// Send these entries as one `PutRecords` call; answer with [`Input::Answered`].
    Ship { call: u64, entries: Vec<Entry> },
    /// List the stream's shards; answer with [`Input::Listed`], the map stamped with the time
    /// the call started.
    ListShards,
    /// Return these records' admission room, then resolve their receipts.
    Resolve(Resolution),
    /// Every record admitted before this flush is resolved.
    Flushed(FlushToken),
}

/// Stream-wide metric handles.
pub(super) struct Metrics {
    pub(super) received: Counter,
    pub(super) errors: Counter,
    pub(super) expired: Counter,
    pub(super) failed: Counter,
    pub(super) resent: Counter,
    pub(super) calls: Counter,
    pub(super) calls_throttled: Counter,
    pub(super) retries_per_record: Histogram,
    pub(super) buffering_time: Histogram,
    pub(super) request_time: Histogram,
    pub(super) user_per_kinesis: Histogram,
    pub(super) kinesis_per_request: Histogram,
    pub(super) user_per_request: Histogram,
}

/// Most emptied record vectors kept for reuse.
const SPARE_RECORD_VECTORS: usize = 64;

/// Partition keys whose hash keys the pipeline remembers for a stream of `shards` shards: 16 per
/// shard (a working set of keys spread over the stream), from 1,024 to 65,536 (at most about
/// 10 MiB, held only as keys are seen).
pub(super) fn hash_key_capacity(shards: usize) -> usize {
    shards.saturating_mul(16).clamp(1024, 65_536)
}

/// The pipeline's state and every decision about it.
pub(crate) struct Machine {
    pub(super) cfg: Arc<Config>,
    /// The stream's name or ARN, for errors and metric labels.
    pub(super) stream: String,
    pub(super) map: ShardMap,
    /// One per shard of the map, in the same order.
    pub(super) shards: Vec<Shard>,
    pub(super) retries: BinaryHeap<Reverse<RetryAt>>,
    pub(super) retry_seq: u64,
    /// Entries written to shards the map does not know: judged after the next refresh.
    pub(super) unverified: Vec<Unverified>,
    /// The call being packed.
    pub(super) batch: Batch,
    /// Calls in flight and their entries, in order.
    pub(super) in_flight: HashMap<u64, Vec<KRec>>,
    pub(super) next_call: u64,
    pub(super) round_robin: usize,
    pub(super) flushes: Flushes,
    /// Records may still be admitted.
    pub(super) taking: bool,
    pub(super) refresh: Refresh,
    pub(super) metrics: Metrics,
    /// Emptied record vectors of delivered Kinesis records, for the next aggregates.
    pub(super) spare: Vec<Vec<Pending>>,
    /// Hash keys of recent partition keys (MD5 once per key, not once per record), up to
    /// [`hash_key_capacity`] of the map's shards.
    pub(super) hash_keys: HashKeyCache,
    /// State of the generator of retry backoffs' jitter seeds.
    jitter: u64,
    /// Actions decided and not yet taken by the driver.
    actions: VecDeque<Action>,
}

impl Machine {
    /// A machine for `stream` with its first shard map. `seed` seeds the jitter of the retry
    /// backoffs (the driver picks it at random; tests fix it).
    pub(crate) fn new(
        cfg: Arc<Config>,
        stream: String,
        map: ShardMap,
        now: Instant,
        seed: u64,
    ) -> Self {
        let shards = map
            .shards()
            .iter()
            .map(|info| Shard::new(info.clone(), &cfg, &stream, now))
            .collect();
        let labels = [("stream", stream.clone())];
        let metrics = Metrics {
            received: counter!(m::USER_RECORDS_RECEIVED, &labels),
            errors: counter!(m::ALL_ERRORS, &labels),
            expired: counter!(m::USER_RECORD_EXPIRED, &labels),
            failed: counter!(m::USER_RECORDS_FAILED, &labels),
            resent: counter!(m::USER_RECORDS_RESENT, &labels),
            calls: counter!(m::PUT_RECORDS_CALLS, &labels),
            calls_throttled: counter!(m::PUT_RECORDS_CALLS_THROTTLED, &labels),
            retries_per_record: histogram!(m::RETRIES_PER_RECORD, &labels),
            buffering_time: histogram!(m::BUFFERING_TIME, &labels),
            request_time: histogram!(m::REQUEST_TIME, &labels),
            user_per_kinesis: histogram!(m::USER_RECORDS_PER_KINESIS_RECORD, &labels),
            kinesis_per_request: histogram!(m::KINESIS_RECORDS_PER_REQUEST, &labels),
            user_per_request: histogram!(m::USER_RECORDS_PER_REQUEST, &labels),
        };
        Machine {
            hash_keys: HashKeyCache::new(hash_key_capacity(map.len())),
            refresh: Refresh::new(now, cfg.shard_map_refresh),
            cfg,
            stream,
            map,
            shards,
            retries: BinaryHeap::new(),
            retry_seq: 0,
            unverified: Vec::new(),
            batch: Batch::default(),
            in_flight: HashMap::new(),
            next_call: 0,
            round_robin: 0,
            flushes: Flushes::new(),
            taking: true,
            metrics,
            spare: Vec::new(),
            jitter: seed,
            actions: VecDeque::new(),
        }
    }

    /// Takes in what happened at `now`; the actions it leads to are then taken with
    /// [`poll_action`](Self::poll_action).
    pub(crate) fn handle(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::Admitted(records) => self.admit(records, now),
            Input::Flush(token) => {
                self.flushes.ask(token);
                self.complete_flushes();
            }
            Input::Closed => self.taking = false,
            Input::Answered {
                call,
                started,
                finished,
                result,
            } => self.on_answer(call, started, finished, result),
            Input::Listed(result) => self.on_listed(result, now),
            Input::Tick => self.pump(now),
        }
    }

    /// The next action to take, oldest first.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the intake is closed and every record is resolved: the pipeline may stop.
    pub(crate) fn is_drained(&self) -> bool {
        !self.taking && self.flushes.outstanding() == 0
    }

    /// Takes back the emptied record vector of a delivery (from [`Resolution::resolve`]), to
    /// hold the next aggregate's records (they are large: one allocation fewer per aggregate).
    pub(crate) fn recycle(&mut self, records: Vec<Pending>) {
        if self.spare.len() < SPARE_RECORD_VECTORS && records.capacity() > 0 {
            self.spare.push(records);
        }
    }

    fn admit(&mut self, records: &mut Vec<Admitted>, now: Instant) {
        self.metrics.received.increment(records.len() as u64);
        for mut admitted in records.drain(..) {
            let (Some(record), tx) = admitted.take() else {
                continue;
            };
            let pending = Pending {
                hash_key: self.hash_keys.of_record(&record),
                record,
                tx,
                put_at: now,
                prior: Prior::default(),
                epoch: self.flushes.admit(),
            };
            self.route(pending, now);
        }
    }

    /// Whether everything held goes out without waiting for its linger deadline: a flush is
    /// waiting, or the intake is closed.
    pub(super) fn flushing(&self) -> bool {
        !self.taking || self.flushes.waiting()
    }

    /// Moves everything that is due one step forward, and ships calls.
    fn pump(&mut self, now: Instant) {
        self.requeue_due_retries(now);
        self.finish_due_aggregates(now);
        self.expire_queued(now);
        self.start_refresh_if_due(now);
        self.ship_due_calls(now);
    }

    /// Decides an action: the driver takes it after those decided before.
    pub(super) fn act(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    /// Resolves records: [`Action::Resolve`].
    pub(super) fn resolve(&mut self, resolution: Resolution) {
        self.act(Action::Resolve(resolution));
    }

    /// Completes the flushes whose records are all resolved: [`Action::Flushed`].
    pub(super) fn complete_flushes(&mut self) {
        let actions = &mut self.actions;
        self.flushes
            .complete(|token| actions.push_back(Action::Flushed(token)));
    }

    /// A seed for the jitter of one Kinesis record's retry backoff (SplitMix64).
    pub(super) fn jitter_seed(&mut self) -> u64 {
        self.jitter = self.jitter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.jitter;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// When the machine must next look at its state without an input (feed it
    /// [`Input::Tick`] then).
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
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
        if let Some(refresh) = self.refresh.next_due() {
            at(refresh);
        }
        wake
    }
}
