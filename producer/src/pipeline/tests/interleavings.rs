//! Random interleavings of puts, time, answers (written, throttled, failed entries, lost or
//! refused calls), resharding and flushes, against a stream stand-in that writes each entry to
//! the shard its key falls in at that moment. After every step: no record in two calls at once,
//! none resolved twice, the outstanding count right (the stand-in driver checks these); in
//! ordering mode at most one entry per shard in flight. At the end, once closed and answered:
//! every record resolved exactly once, never as cancelled, every flush completed after its
//! records, every aggregated delivery on a shard whose range holds the record, and in ordering
//! mode each key's deliveries in put order.

use proptest::prelude::*;

use super::*;
use crate::{Ordering, error::Error};

/// What the test does next.
#[derive(Clone, Debug)]
enum Op {
    /// Puts records: each `(key, region)` picks one of a few partition keys and where its
    /// explicit hash key falls (a quarter of the key space).
    Put(Vec<(u8, u8)>),
    /// Moves the clock on this many milliseconds and ticks.
    Advance(u16),
    /// Answers a call in flight entry by entry: 0 and 1 written, 2 throttled, 3 an internal
    /// failure, 4 refused for good (cycled over the entries).
    Answer {
        pick: u8,
        outcomes: Vec<u8>,
    },
    /// A call's answer is lost (a timeout).
    Lose {
        pick: u8,
    },
    /// The stream is resharded: two shards, then the lower one split, then its children merged
    /// (not in ordering mode, which promises order only while the stream is not resharded).
    Reshard,
    /// Answers the pending `ListShards`, with the stream's shards or an error.
    List {
        ok: bool,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let put = prop::collection::vec((0u8..4, 0u8..4), 1..6).prop_map(Op::Put);
    let answer = (any::<u8>(), prop::collection::vec(0u8..5, 1..4))
        .prop_map(|(pick, outcomes)| Op::Answer { pick, outcomes });
    prop_oneof![
        4 => put,
        4 => (0u16..400).prop_map(Op::Advance),
        4 => answer,
        1 => any::<u8>().prop_map(|pick| Op::Lose { pick }),
        1 => Just(Op::Reshard),
        2 => any::<bool>().prop_map(|ok| Op::List { ok }),
        1 => Just(Op::Flush),
    ]
}

/// The stream's shard maps, in the order it goes through them.
const STAGES: [&[(&str, u128, u128)]; 3] = [TWO, SPLIT, MERGED];

fn range_of(shard: &str) -> (u128, u128) {
    STAGES
        .iter()
        .flat_map(|stage| stage.iter())
        .find(|(id, ..)| *id == shard)
        .map(|(_, start, end)| (*start, *end))
        .unwrap_or_else(|| panic!("unknown shard {shard}"))
}

/// The stream stand-in around the simulated machine.
struct Stream {
    sim: Sim,
    stage: usize,
    /// Each record's partition key and hash key.
    records: Vec<(String, u128)>,
    /// Flushes asked: the records each waits for.
    flushes: BTreeMap<u64, Vec<usize>>,
    flushed: BTreeSet<u64>,
    ordering: bool,
}

impl Stream {
    fn shards(&self) -> &'static [(&'static str, u128, u128)] {
        STAGES[self.stage]
    }

    /// The shard the stream writes an entry to now.
    fn shard_for(&self, entry: &Entry) -> &'static str {
        let key = HashKey::of_record(entry.explicit_hash_key, &entry.partition_key).get();
        self.shards()
            .iter()
            .find(|(_, start, end)| (*start..=*end).contains(&key))
            .map(|(id, ..)| *id)
            .unwrap_or_else(|| panic!("the map does not tile"))
    }

    fn pick(&self, pick: u8) -> Option<u64> {
        let calls: Vec<u64> = self.sim.calls.keys().copied().collect();
        (!calls.is_empty()).then(|| calls[pick as usize % calls.len()])
    }

    fn apply(&mut self, op: Op) {
        let did = match op {
            Op::Put(records) => {
                let puts: Vec<(String, u128)> = records
                    .into_iter()
                    .map(|(key, region)| {
                        let start = u128::from(region) * (u128::MAX / 4);
                        (format!("key-{key}"), start + u128::from(key) * 1000 + 7)
                    })
                    .collect();
                let refs: Vec<(&str, Option<u128>)> =
                    puts.iter().map(|(k, h)| (k.as_str(), Some(*h))).collect();
                self.sim.put_many(&refs);
                self.records.extend(puts);
                Vec::new()
            }
            Op::Advance(millis) => {
                let to = self.sim.elapsed() + ms(u64::from(millis));
                self.sim.at(to).tick()
            }
            Op::Answer { pick, outcomes } => {
                let Some(call) = self.pick(pick) else { return };
                let entries = self.sim.calls[&call].entries.clone();
                let results = entries
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| match outcomes[i % outcomes.len()] {
                        0 | 1 => {
                            let shard = self.shard_for(entry);
                            self.sim.written(shard)
                        }
                        2 => throttled(),
                        3 => failed_entry("InternalFailure"),
                        _ => failed_entry("ValidationException"),
                    })
                    .collect();
                self.sim.answer(call, results)
            }
            Op::Lose { pick } => {
                let Some(call) = self.pick(pick) else { return };
                self.sim.fail(call, call_failure("RequestTimeout", None))
            }
            Op::Reshard => {
                if !self.ordering {
                    self.stage = (self.stage + 1).min(STAGES.len() - 1);
                }
                Vec::new()
            }
            Op::List { ok } => {
                if self.sim.listing.is_none() {
                    return;
                }
                if ok {
                    let shards = self.shards();
                    self.sim.listed(shards)
                } else {
                    self.sim.listing = None;
                    self.sim
                        .feed(Input::Listed(Err("ListShards failed".to_owned())))
                }
            }
            Op::Flush => {
                let token = self.flushes.len() as u64;
                let waits: Vec<usize> = (0..self.records.len())
                    .filter(|id| !self.sim.resolved.contains(id))
                    .collect();
                self.flushes.insert(token, waits);
                self.sim.feed(Input::Flush(token))
            }
        };
        self.after(&did);
    }

    /// Checks a step's actions and the state after it.
    fn after(&mut self, did: &[Did]) {
        for d in did {
            if let Did::Flushed(token) = d {
                assert!(self.flushed.insert(*token), "flush {token} completed twice");
                for id in &self.flushes[token] {
                    assert!(
                        self.sim.resolved.contains(id),
                        "flush {token} completed before record {id} was resolved"
                    );
                }
            }
        }
        if self.ordering {
            let mut per_shard: BTreeMap<&str, usize> = BTreeMap::new();
            for krec in self.sim.machine.in_flight.values().flatten() {
                *per_shard.entry(&*krec.shard).or_default() += 1;
            }
            assert!(
                per_shard.values().all(|n| *n <= 1),
                "two entries for one shard in flight: {per_shard:?}"
            );
        }
    }

    /// Closes the machine and answers everything until it drains.
    fn drain(&mut self) {
        let did = self.sim.feed(Input::Closed);
        self.after(&did);
        for _ in 0..10_000 {
            if self.sim.machine.is_drained() {
                break;
            }
            for _ in 0..self.sim.calls.len() {
                self.apply(Op::Answer {
                    pick: 0,
                    outcomes: vec![0],
                });
            }
            self.apply(Op::List { ok: true });
            if let Some(wake) = self.sim.machine.next_wake(self.sim.now)
                && wake > self.sim.now
            {
                self.sim.at(wake - self.sim.start);
            }
            let did = self.sim.tick();
            self.after(&did);
        }
        assert!(self.sim.machine.is_drained(), "the machine did not drain");
    }

    /// What must hold once everything is resolved.
    fn check_outcomes(&mut self) {
        let count = self.records.len();
        assert_eq!(self.sim.resolved.len(), count);
        assert_eq!(self.sim.room.0, count, "every record's room returned");
        for token in self.flushes.keys() {
            assert!(
                self.flushed.contains(token),
                "flush {token} never completed"
            );
        }
        // Deliveries per routing key (the explicit hash key here), in put order.
        let mut delivered: BTreeMap<u128, Vec<(usize, u64, u64)>> = BTreeMap::new();
        for id in 0..count {
            let hash = self.records[id].1;
            match self.sim.outcome(id) {
                Some(Ok(delivery)) => {
                    if delivery.aggregated() {
                        let (start, end) = range_of(delivery.shard_id());
                        assert!(
                            (start..=end).contains(&hash),
                            "record {id} acknowledged in an aggregate on {}, which does not hold it",
                            delivery.shard_id()
                        );
                    }
                    let sequence: u64 = delivery.sequence_number().parse().unwrap_or(0);
                    delivered.entry(hash).or_default().push((
                        id,
                        sequence,
                        delivery.sub_sequence_number(),
                    ));
                }
                Some(Err(failure)) => {
                    assert!(
                        matches!(
                            failure.error,
                            Error::Expired { .. } | Error::Rejected { .. }
                        ),
                        "record {id}: {failure:?}"
                    );
                }
                None => panic!("record {id} never resolved"),
            }
        }
        if self.ordering {
            for (key, writes) in delivered {
                let positions: Vec<(u64, u64)> = writes.iter().map(|w| (w.1, w.2)).collect();
                let mut sorted = positions.clone();
                sorted.sort();
                assert_eq!(positions, sorted, "hash key {key} out of order: {writes:?}");
            }
        }
    }
}

fn run(ops: Vec<Op>, ordering: bool, aggregation: bool, fill_calls: bool, seed: u64) {
    let cfg = config(|c| {
        c.record_ttl = Duration::from_secs(3);
        // Refreshed often, so that maps change while calls are in flight.
        c.shard_map_refresh = Duration::from_secs(1);
        c.max_in_flight = 3;
        c.max_entries_per_call = 4;
        c.fill_calls = fill_calls;
        c.aggregation = aggregation.then(|| {
            let limits = kinesis_aggregation::AggregationLimits::default();
            let limits = limits.with_max_bytes(51_200).unwrap_or(limits);
            limits.with_max_records(
                std::num::NonZeroUsize::new(3).unwrap_or(std::num::NonZeroUsize::MIN),
            )
        });
        if ordering {
            c.ordering = Ordering::PerPartitionKey;
        }
    });
    let mut stream = Stream {
        sim: Sim::seeded(cfg, TWO, seed),
        stage: 0,
        records: Vec::new(),
        flushes: BTreeMap::new(),
        flushed: BTreeSet::new(),
        ordering,
    };
    for op in ops {
        stream.apply(op);
    }
    stream.drain();
    stream.check_outcomes();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_record_resolves_once_through_any_interleaving(
        ops in prop::collection::vec(op(), 1..80),
        aggregation in any::<bool>(),
        fill_calls in any::<bool>(),
        seed in any::<u64>(),
    ) {
        run(ops, false, aggregation, fill_calls, seed);
    }

    #[test]
    fn ordering_mode_keeps_each_key_in_order_through_any_interleaving(
        ops in prop::collection::vec(op(), 1..80),
        aggregation in any::<bool>(),
        seed in any::<u64>(),
    ) {
        run(ops, true, aggregation, true, seed);
    }
}
