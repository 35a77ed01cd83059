//! From user records to `PutRecords` calls: each record joins its predicted shard's aggregate (or
//! its queue, unaggregated); finished Kinesis records wait in the shard's queue; the shards'
//! limiters and the ordering mode decide which go into the call being packed, round robin over
//! the shards; a call goes out when it is full, a shard's share of it is, a flush asks, or the
//! earliest linger deadline in it passes.

use std::{collections::VecDeque, time::Instant};

use bytes::Bytes;
use kinesis_aggregation::{
    AGGREGATE_PARTITION_KEY, Aggregator, Finished, KinesisRecord, UndigestedAggregate,
    digest_aggregates,
};
use metrics::{Counter, Gauge, counter, gauge};

use super::{
    entries::{Entry, KRec, Pending},
    machine::{Action, Machine},
};
use crate::{
    config::{Config, Ordering, SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND},
    limiter::{Limiter, ShardLimit},
    metrics as m,
    shard_map::ShardInfo,
};

/// Metric handles of one shard, registered once.
pub(super) struct ShardMetrics {
    pub(super) user_records_put: Counter,
    pub(super) user_records_data_put: Counter,
    pub(super) kinesis_records_put: Counter,
    pub(super) kinesis_records_data_put: Counter,
    pub(super) rate_factor: Gauge,
}

/// Everything the core keeps per open shard.
pub(super) struct Shard {
    pub(super) info: ShardInfo,
    pub(super) aggregator: Option<Aggregator>,
    /// The user records of the aggregate under construction.
    pub(super) aggregated: Vec<Pending>,
    pub(super) agg_deadline: Option<Instant>,
    pub(super) agg_expiry: Option<Instant>,
    /// Finished Kinesis records, oldest first (retries go back to the front).
    pub(super) queue: VecDeque<KRec>,
    pub(super) limiter: Limiter,
    /// When the limiter allows the queue's head, if it refused it.
    pub(super) ready_at: Option<Instant>,
    /// Entries in flight.
    pub(super) busy: usize,
    /// Kinesis records waiting for a retry.
    pub(super) retrying: usize,
    /// Entries and bytes in the open batch.
    pub(super) batched: usize,
    pub(super) batched_bytes: usize,
    pub(super) metrics: ShardMetrics,
    pub(super) span: tracing::Span,
}

impl Shard {
    pub(super) fn new(info: ShardInfo, cfg: &Config, stream: &str, now: Instant) -> Self {
        let labels = [
            ("stream", stream.to_owned()),
            ("shard_id", info.id.to_string()),
        ];
        Shard {
            aggregator: cfg.aggregation_for_pacing().map(Aggregator::new),
            aggregated: Vec::new(),
            agg_deadline: None,
            agg_expiry: None,
            queue: VecDeque::new(),
            limiter: Limiter::new(
                ShardLimit {
                    records: SHARD_RECORDS_PER_SECOND,
                    bytes: SHARD_BYTES_PER_SECOND,
                },
                cfg.rate_ceiling(),
                cfg.pacing_unit_bytes(),
                now,
            ),
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

    /// Whether the shard may add an entry to the open batch now. In ordering mode a shard has at
    /// most one entry in flight or in the batch, and none while a retry is pending.
    pub(super) fn may_batch(&self, ordering: Ordering) -> bool {
        match ordering {
            Ordering::Throughput => true,
            Ordering::PerPartitionKey => self.busy == 0 && self.batched == 0 && self.retrying == 0,
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.aggregated.is_empty() && self.queue.is_empty()
    }

    /// Puts a user record into the shard's aggregate (or its queue, unaggregated).
    fn push(
        &mut self,
        pending: Pending,
        cfg: &Config,
        spare: &mut Vec<Vec<Pending>>,
        now: Instant,
    ) {
        let deadline = pending.put_at + cfg.linger;
        let expiry = pending.put_at + cfg.record_ttl;
        let Some(aggregator) = self.aggregator.as_mut() else {
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
            self.queue.push_back(KRec {
                partition_key,
                explicit_hash_key,
                data,
                undigested: None,
                size,
                aggregated: false,
                records: vec![pending],
                shard: self.info.id.clone(),
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
            self.finish_aggregate(spare, now);
            if let Some(aggregator) = self.aggregator.as_mut() {
                // An empty aggregator takes any record.
                let _ = aggregator.try_push_ref(&pending.record);
            }
        }
        self.aggregated.push(pending);
        self.agg_deadline = Some(self.agg_deadline.map_or(deadline, |d| d.min(deadline)));
        self.agg_expiry = Some(self.agg_expiry.map_or(expiry, |d| d.min(expiry)));
        let full = self
            .aggregator
            .as_ref()
            .is_some_and(|a| a.len() >= a.limits().max_records());
        if full {
            self.finish_aggregate(spare, now);
        }
    }

    /// Closes the shard's aggregate under construction and queues it.
    pub(super) fn finish_aggregate(&mut self, spare: &mut Vec<Vec<Pending>>, now: Instant) {
        let Some(finished) = self
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
        let capacity = self.aggregated.len();
        let spare = spare.pop().unwrap_or_else(|| Vec::with_capacity(capacity));
        let records = std::mem::replace(&mut self.aggregated, spare);
        let oldest = records.iter().map(|p| p.put_at).min().unwrap_or(now);
        self.queue.push_back(KRec {
            size,
            aggregated,
            partition_key,
            explicit_hash_key,
            data,
            undigested,
            records,
            shard: self.info.id.clone(),
            deadline: self.agg_deadline.take().unwrap_or(now),
            expiry: self.agg_expiry.take().unwrap_or(now),
            backoff: None,
            last_error: None,
            attempts: Vec::new(),
            last_end: oldest,
        });
    }
}

/// The `PutRecords` call being packed.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) krecs: Vec<KRec>,
    pub(super) bytes: usize,
    pub(super) deadline: Option<Instant>,
    /// A record did not fit: ship now.
    pub(super) full: bool,
    /// One shard's share reached the early-flush threshold.
    pub(super) shard_full: bool,
}

impl Machine {
    /// Puts a user record into its predicted shard's aggregate (or its queue, unaggregated).
    pub(super) fn route(&mut self, pending: Pending, now: Instant) {
        let index = self.map.lookup(pending.hash_key);
        self.shards[index].push(pending, &self.cfg, &mut self.spare, now);
    }

    /// Closes the aggregates whose linger deadline passed (all of them while flushing).
    pub(super) fn finish_due_aggregates(&mut self, now: Instant) {
        let flushing = self.flushing();
        for shard in &mut self.shards {
            if !shard.aggregated.is_empty()
                && (flushing || shard.agg_deadline.is_some_and(|d| d <= now))
            {
                shard.finish_aggregate(&mut self.spare, now);
            }
        }
    }

    /// Packs and ships calls while one is due and fewer than the most calls are in flight.
    pub(super) fn ship_due_calls(&mut self, now: Instant) {
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
                // one each. Not the aggregates of shards with Kinesis records queued (held by
                // their limiters): they would not go with this call, and closing them early
                // would only make aggregates smaller (more entries for the same bytes, and more
                // calls, which close more of them).
                let mut took = false;
                for shard in &mut self.shards {
                    if !shard.aggregated.is_empty()
                        && shard.queue.is_empty()
                        && shard.may_batch(self.cfg.ordering)
                    {
                        shard.finish_aggregate(&mut self.spare, now);
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
    pub(super) fn expire_queued(&mut self, now: Instant) {
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

    /// Turns the open batch into one `PutRecords` call: [`Action::Ship`].
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
        let entries: Vec<Entry> = krecs.iter_mut().map(KRec::entry).collect();
        let call = self.next_call;
        self.next_call += 1;
        self.in_flight.insert(call, krecs);
        self.act(Action::Ship { call, entries });
    }

    /// Entries of the open batch whose shard closed go back to be routed again; the others go
    /// back to the front of their queues.
    pub(super) fn batch_return(&mut self, now: Instant) {
        let batch = std::mem::take(&mut self.batch);
        for krec in batch.krecs {
            match self.map.position(&krec.shard) {
                Some(index) => {
                    let shard = &mut self.shards[index];
                    shard.batched = shard.batched.saturating_sub(1);
                    shard.batched_bytes = shard.batched_bytes.saturating_sub(krec.size);
                    shard.queue.push_front(krec);
                }
                None => self.dissolve(krec, now),
            }
        }
    }

    pub(super) fn shard_mut(&mut self, id: &str) -> Option<&mut Shard> {
        let index = self.map.position(id)?;
        self.shards.get_mut(index)
    }
}
