//! Tests of the pipeline's core: the machine driven on a clock of the test's own, its actions
//! performed by a stand-in driver that checks, after every step, that no user record is in two
//! calls at once and none is resolved twice. No tokio, no SDK.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use kinesis_aggregation::{HashKey, UserRecord};

use super::{
    entries::{CallFailure, Entry, EntryResult, KRec, Resolution},
    intake::Admitted,
    machine::{Action, Input, Machine},
};
use crate::{
    config::Config,
    receipt::{Cells, Delivery, Failure, Receipt, Wrote},
    shard_map::{ListedShard, ShardMap},
};

mod interleavings;
mod scenarios;

const HALF: u128 = u128::MAX / 2;
const QUARTER: u128 = HALF / 2;

/// Hash keys inside each half of the key space (and each quarter of the lower half).
const LOW: u128 = 1000;
const LOW_HIGH: u128 = HALF - 1000;
const HIGH: u128 = HALF + 1000;

/// Two shards: `s-0` holds the lower half of the key space, `s-1` the upper.
const TWO: &[(&str, u128, u128)] = &[("s-0", 0, HALF), ("s-1", HALF + 1, u128::MAX)];
/// `s-0` split into `s-2` and `s-3`.
const SPLIT: &[(&str, u128, u128)] = &[
    ("s-2", 0, QUARTER),
    ("s-3", QUARTER + 1, HALF),
    ("s-1", HALF + 1, u128::MAX),
];
/// `s-2` and `s-3` merged into `s-4`.
const MERGED: &[(&str, u128, u128)] = &[("s-4", 0, HALF), ("s-1", HALF + 1, u128::MAX)];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn shard_map(shards: &[(&str, u128, u128)], fetched_at: Instant) -> ShardMap {
    let listing: Vec<ListedShard> = shards
        .iter()
        .map(|(id, start, end)| ListedShard {
            id: (*id).to_owned(),
            start: start.to_string(),
            end: end.to_string(),
            closed: false,
        })
        .collect();
    ShardMap::from_listing(&listing, fetched_at).unwrap_or_else(|p| panic!("{p}"))
}

/// The default settings, changed by `change`.
fn config(change: impl FnOnce(&mut Config)) -> Arc<Config> {
    let mut cfg = Config::default();
    change(&mut cfg);
    Arc::new(cfg)
}

fn throttled() -> EntryResult {
    failed_entry("ProvisionedThroughputExceededException")
}

fn failed_entry(code: &str) -> EntryResult {
    EntryResult::Failed {
        kind: kinesis_calls::classify(code, None),
        code: code.to_owned(),
        message: "refused".to_owned(),
    }
}

fn written(shard: &str, sequence_number: u64) -> EntryResult {
    EntryResult::Written {
        shard_id: shard.to_owned(),
        sequence_number: format!("{sequence_number:020}"),
    }
}

/// A whole call failed with `code`: with an HTTP status under 500 it wrote nothing, else (or
/// without an answer) it may have.
fn call_failure(code: &str, status: Option<u16>) -> CallFailure {
    CallFailure {
        kind: kinesis_calls::classify(code, status),
        code: code.to_owned(),
        message: "the call failed".to_owned(),
        request_id: None,
        wrote: if status.is_some_and(|s| s < 500) {
            Wrote::Nothing
        } else {
            Wrote::Unknown
        },
    }
}

/// A user record's number in a test, carried in its first eight data bytes.
fn id_of(record: &UserRecord) -> usize {
    let mut bytes = [0u8; 8];
    if let Some(head) = record.data().get(..8) {
        bytes.copy_from_slice(head);
    }
    u64::from_le_bytes(bytes) as usize
}

/// What the stand-in driver saw the machine do.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Did {
    Shipped(u64),
    Listed,
    /// These records' receipts were resolved (in the order given).
    Resolved(Vec<usize>),
    Flushed(u64),
}

/// A call in flight, as the stand-in driver keeps it.
struct Call {
    started: Instant,
    entries: Vec<Entry>,
    /// The records of each entry.
    records: Vec<Vec<usize>>,
    /// The shard each entry was predicted for.
    shards: Vec<Arc<str>>,
}

/// One machine on the test's clock, with a stand-in driver.
struct Sim {
    machine: Machine,
    start: Instant,
    now: Instant,
    cells: Cells,
    receipts: Vec<Option<Receipt>>,
    outcomes: Vec<Option<Result<Delivery, Failure>>>,
    /// Every record resolved so far.
    resolved: BTreeSet<usize>,
    /// Calls shipped and not answered.
    calls: BTreeMap<u64, Call>,
    /// When a `ListShards` was asked for and not answered.
    listing: Option<Instant>,
    /// Admission room given back: records, bytes.
    room: (usize, usize),
    /// Every action, in order.
    log: Vec<Did>,
    next_sequence: u64,
}

impl Sim {
    fn new(cfg: Arc<Config>, shards: &[(&str, u128, u128)]) -> Self {
        Self::seeded(cfg, shards, 1)
    }

    fn seeded(cfg: Arc<Config>, shards: &[(&str, u128, u128)], seed: u64) -> Self {
        let start = Instant::now();
        Sim {
            machine: Machine::new(cfg, "stream".into(), shard_map(shards, start), start, seed),
            start,
            now: start,
            cells: Cells::default(),
            receipts: Vec::new(),
            outcomes: Vec::new(),
            resolved: BTreeSet::new(),
            calls: BTreeMap::new(),
            listing: None,
            room: (0, 0),
            log: Vec::new(),
            next_sequence: 1,
        }
    }

    /// Moves the clock to `since_start` (never back).
    fn at(&mut self, since_start: Duration) -> &mut Self {
        let at = self.start + since_start;
        assert!(at >= self.now, "the clock goes forward only");
        self.now = at;
        self
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn record(&self, id: usize, key: &str, hash: Option<u128>) -> UserRecord {
        let mut data = (id as u64).to_le_bytes().to_vec();
        data.extend_from_slice(&[7; 92]);
        let record = UserRecord::new(key, data).unwrap_or_else(|e| panic!("{e}"));
        match hash {
            Some(hash) => record.with_explicit_hash_key(HashKey::new(hash)),
            None => record,
        }
    }

    /// Admits records now, in one take from the intake; returns their numbers.
    fn put_many(&mut self, records: &[(&str, Option<u128>)]) -> Vec<usize> {
        let mut admitted = Vec::new();
        let mut ids = Vec::new();
        for (key, hash) in records {
            let id = self.receipts.len();
            let (tx, receipt) = self.cells.pair();
            admitted.push(Admitted::new(self.record(id, key, *hash), tx));
            self.receipts.push(Some(receipt));
            self.outcomes.push(None);
            ids.push(id);
        }
        self.feed(Input::Admitted(&mut admitted));
        assert!(admitted.is_empty(), "the machine takes every record");
        ids
    }

    /// Admits one record routed by `hash`, its partition key `key-<n>`.
    fn put(&mut self, hash: u128) -> usize {
        let key = format!("key-{}", self.receipts.len());
        self.put_many(&[(&key, Some(hash))])[0]
    }

    /// Feeds an input and performs the actions, checking the invariants.
    fn feed(&mut self, input: Input<'_>) -> Vec<Did> {
        self.machine.handle(input, self.now);
        let mut did = Vec::new();
        while let Some(action) = self.machine.poll_action() {
            did.push(self.perform(action));
        }
        self.check();
        self.log.extend(did.iter().cloned());
        did
    }

    fn tick(&mut self) -> Vec<Did> {
        self.feed(Input::Tick)
    }

    fn perform(&mut self, action: Action) -> Did {
        match action {
            Action::Ship { call, entries } => {
                let krecs = self
                    .machine
                    .in_flight
                    .get(&call)
                    .unwrap_or_else(|| panic!("call {call} shipped but not in flight"));
                assert_eq!(krecs.len(), entries.len());
                let records: Vec<Vec<usize>> = krecs.iter().map(record_ids).collect();
                let shards = krecs.iter().map(|k| k.shard.clone()).collect();
                let already: BTreeSet<usize> = self
                    .calls
                    .values()
                    .flat_map(|c| c.records.iter().flatten().copied())
                    .collect();
                for id in records.iter().flatten() {
                    assert!(!already.contains(id), "record {id} in two calls at once");
                    assert!(
                        !self.resolved.contains(id),
                        "record {id} shipped once resolved"
                    );
                }
                self.calls.insert(
                    call,
                    Call {
                        started: self.now,
                        entries,
                        records,
                        shards,
                    },
                );
                Did::Shipped(call)
            }
            Action::ListShards => {
                assert!(self.listing.is_none(), "one ListShards at a time");
                self.listing = Some(self.now);
                Did::Listed
            }
            Action::Resolve(resolution) => {
                let ids: Vec<usize> = match &resolution {
                    Resolution::Delivered { records, .. } => {
                        records.iter().map(|p| id_of(&p.record)).collect()
                    }
                    Resolution::Failed { failures, .. } => {
                        failures.iter().map(|(p, _)| id_of(&p.record)).collect()
                    }
                };
                let (records, bytes) = resolution.room();
                self.room.0 += records;
                self.room.1 += bytes;
                for id in &ids {
                    assert!(self.resolved.insert(*id), "record {id} resolved twice");
                }
                if let Some(emptied) = resolution.resolve() {
                    self.machine.recycle(emptied);
                }
                Did::Resolved(ids)
            }
            Action::Flushed(token) => Did::Flushed(token),
        }
    }

    /// The invariants that hold after every step.
    fn check(&self) {
        let admitted = self.receipts.len();
        assert_eq!(
            self.machine.flushes.outstanding(),
            admitted - self.resolved.len(),
            "outstanding records"
        );
        let mut seen = BTreeSet::new();
        for krecs in self.machine.in_flight.values() {
            for id in krecs.iter().flat_map(record_ids) {
                assert!(seen.insert(id), "record {id} in two calls at once");
            }
        }
    }

    /// The only call in flight.
    fn only_call(&self) -> u64 {
        assert_eq!(
            self.calls.len(),
            1,
            "calls in flight: {:?}",
            self.calls.keys()
        );
        self.calls.keys().copied().next().unwrap_or_default()
    }

    /// The records of each entry of a call in flight.
    fn entries_of(&self, call: u64) -> Vec<Vec<usize>> {
        self.calls
            .get(&call)
            .map(|c| c.records.clone())
            .unwrap_or_default()
    }

    /// The shard each entry of a call in flight was predicted for.
    fn shards_of(&self, call: u64) -> Vec<String> {
        self.calls
            .get(&call)
            .map(|c| c.shards.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }

    fn call(&mut self, call: u64) -> Call {
        self.calls
            .remove(&call)
            .unwrap_or_else(|| panic!("call {call} is not in flight"))
    }

    /// Answers a call in flight now, entry by entry.
    fn answer(&mut self, call: u64, results: Vec<EntryResult>) -> Vec<Did> {
        let started = self.call(call).started;
        let finished = self.now;
        self.feed(Input::Answered {
            call,
            started,
            finished,
            result: Ok(results),
        })
    }

    /// Answers that the whole call failed.
    fn fail(&mut self, call: u64, failure: CallFailure) -> Vec<Did> {
        let started = self.call(call).started;
        let finished = self.now;
        self.feed(Input::Answered {
            call,
            started,
            finished,
            result: Err(failure),
        })
    }

    /// Every entry written where it was predicted, with increasing sequence numbers.
    fn answer_written(&mut self, call: u64) -> Vec<Did> {
        let results = self
            .shards_of(call)
            .iter()
            .map(|shard| self.written(shard))
            .collect();
        self.answer(call, results)
    }

    /// An entry written to `shard`, at the next sequence number.
    fn written(&mut self, shard: &str) -> EntryResult {
        self.next_sequence += 1;
        written(shard, self.next_sequence)
    }

    /// Answers the pending `ListShards` (or delivers a listing unasked) with `shards`.
    fn listed(&mut self, shards: &[(&str, u128, u128)]) -> Vec<Did> {
        let fetched_at = self.listing.take().unwrap_or(self.now);
        self.feed(Input::Listed(Ok(shard_map(shards, fetched_at))))
    }

    /// The outcome of a record's receipt, once resolved.
    fn outcome(&mut self, id: usize) -> Option<&Result<Delivery, Failure>> {
        if self.outcomes[id].is_none()
            && let Some(receipt) = self.receipts[id].as_mut()
        {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(outcome) = Pin::new(receipt).poll(&mut cx) {
                self.outcomes[id] = Some(outcome);
                self.receipts[id] = None;
            }
        }
        self.outcomes[id].as_ref()
    }

    fn delivery(&mut self, id: usize) -> Delivery {
        match self.outcome(id) {
            Some(Ok(delivery)) => delivery.clone(),
            other => panic!("record {id}: {other:?}"),
        }
    }

    fn failure(&mut self, id: usize) -> &Failure {
        match self.outcome(id) {
            Some(Err(failure)) => failure,
            other => panic!("record {id}: {other:?}"),
        }
    }

    fn is_pending(&mut self, id: usize) -> bool {
        self.outcome(id).is_none()
    }

    /// The calls shipped in these actions.
    fn shipped(did: &[Did]) -> Vec<u64> {
        did.iter()
            .filter_map(|d| match d {
                Did::Shipped(call) => Some(*call),
                _ => None,
            })
            .collect()
    }
}

fn record_ids(krec: &KRec) -> Vec<usize> {
    krec.records.iter().map(|p| id_of(&p.record)).collect()
}
