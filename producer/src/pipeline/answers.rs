//! What the core does with a `PutRecords` answer, entry by entry: deliver (and credit the
//! limiter), wait for the shard map to judge a landing, resend an aggregate that landed where a
//! consumer drops it, slow a throttled shard down, retry with backoff until the TTL, or fail the
//! records for good.

use std::{
    cmp::Reverse,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use super::{
    entries::{CallFailure, EntryResult, KRec, Resolution},
    machine::Machine,
};
use crate::{
    error::Error,
    receipt::{AttemptError, Failure, Written, Wrote},
    retry::{self, ErrorClass, Verdict},
};

/// A Kinesis record waiting for its next attempt.
pub(super) struct RetryAt {
    pub(super) at: Instant,
    seq: u64,
    pub(super) krec: KRec,
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

/// An entry written to a shard the map did not know: judged once the map is refreshed.
pub(super) struct Unverified {
    pub(super) krec: KRec,
    pub(super) shard_id: String,
    pub(super) sequence_number: String,
}

impl Machine {
    /// A call's answer: one result per entry, or the whole call failed.
    pub(super) fn on_answer(
        &mut self,
        call: u64,
        started: Instant,
        finished: Instant,
        result: Result<Vec<EntryResult>, CallFailure>,
    ) {
        let Some(krecs) = self.in_flight.remove(&call) else {
            return;
        };
        let duration = finished.saturating_duration_since(started);
        self.metrics.request_time.record(duration.as_secs_f64());
        for krec in &krecs {
            if let Some(shard) = self.shard_mut(&krec.shard) {
                shard.busy = shard.busy.saturating_sub(1);
            }
        }
        // The SDK edge answers with one result per entry; an answer that does not is unreadable.
        let result = result.and_then(|results| {
            if results.len() == krecs.len() {
                Ok(results)
            } else {
                Err(CallFailure::unreadable(results.len(), krecs.len()))
            }
        });
        match result {
            Err(error) => {
                let kind = error.kind;
                self.count_error(&error.code);
                debug!(code = %error.code, request_id = ?error.request_id, entries = krecs.len(), "PutRecords failed");
                for krec in krecs {
                    self.failed(
                        krec,
                        kind,
                        AttemptError {
                            code: error.code.clone(),
                            message: error.message.clone(),
                            wrote: error.wrote,
                        },
                        error.request_id.as_deref(),
                        started,
                        duration,
                        finished,
                    );
                }
            }
            Ok(results) => {
                // Per shard: throttled entries and their bytes, paid back to its limiter.
                let mut throttled: Vec<(Arc<str>, u32, usize)> = Vec::new();
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
                        EntryResult::Failed {
                            kind,
                            code,
                            message,
                        } => {
                            // Entry errors come with the call's 200: their code decides.
                            self.count_error(&code);
                            if ErrorClass::of(kind) == ErrorClass::Throttled {
                                match throttled.iter_mut().find(|(id, ..)| *id == krec.shard) {
                                    Some((_, entries, bytes)) => {
                                        *entries += 1;
                                        *bytes += krec.size;
                                    }
                                    None => throttled.push((krec.shard.clone(), 1, krec.size)),
                                }
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
                if !throttled.is_empty() {
                    self.metrics.calls_throttled.increment(1);
                }
                for (id, entries, bytes) in throttled {
                    if let Some(shard) = self.shard_mut(&id) {
                        shard.limiter.on_throttled(entries, bytes, finished);
                        shard.metrics.rate_factor.set(shard.limiter.factor());
                        let _span = shard.span.enter();
                        debug!(
                            entries,
                            bytes,
                            factor = shard.limiter.factor(),
                            "throttled; paid back"
                        );
                    }
                }
            }
        }
    }

    fn count_error(&self, code: &str) {
        self.metrics.errors.increment(1);
        metrics::counter!(crate::metrics::ERRORS_BY_CODE, "stream" => self.stream.clone(), "error_code" => code.to_owned())
            .increment(1);
    }

    /// An entry was written: decide whether consumers will see its user records.
    fn written(
        &mut self,
        krec: KRec,
        shard_id: String,
        sequence_number: String,
        started: Instant,
        duration: Duration,
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
                self.unverified.push(Unverified {
                    krec,
                    shard_id,
                    sequence_number,
                });
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
        duration: Duration,
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
    pub(super) fn complete(&mut self, mut krec: KRec, shard_id: &str, sequence_number: String) {
        let records = std::mem::take(&mut krec.records);
        let count = records.len();
        // One pass: the bytes (for the metrics and the admission room) and the flush epochs.
        let mut bytes = 0;
        let mut settled = false;
        for pending in &records {
            bytes += pending.record.size();
            settled |= self.flushes.settle(pending.epoch);
        }
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
        // What the records share, held once (one reference count per record, one allocation per
        // Kinesis record).
        let written = Arc::new(Written {
            shard_id: shard_id.to_owned(),
            sequence_number,
            aggregated: krec.aggregated,
            attempts: std::mem::take(&mut krec.attempts),
        });
        self.resolve(Resolution::Delivered {
            records,
            written,
            bytes,
        });
        // After the receipts: a flush returns only once its records' receipts have resolved.
        if settled {
            self.complete_flushes();
        }
    }

    /// The aggregate landed where a KCL-style consumer drops it: send every user record again,
    /// routed by the current map.
    fn resend(
        &mut self,
        mut krec: KRec,
        shard_id: &str,
        started: Instant,
        duration: Duration,
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
    pub(super) fn dissolve(&mut self, mut krec: KRec, now: Instant) {
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
        duration: Duration,
        finished: Instant,
    ) {
        let (code, message) = (error.code.clone(), error.message.clone());
        let (code, message) = (code.as_str(), message.as_str());
        krec.attempted(started, duration, finished, Some(error));
        krec.last_error = Some(code.to_owned());
        match ErrorClass::of(kind) {
            ErrorClass::Fatal => {
                let stream = self.stream.clone();
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
        if krec.backoff.is_none() {
            krec.backoff = Some(retry::backoff(min, max, self.jitter_seed()));
        }
        let delay = krec
            .backoff
            .as_mut()
            .and_then(Iterator::next)
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

    /// Moves the retries that are due back to the front of their shards' queues.
    pub(super) fn requeue_due_retries(&mut self, now: Instant) {
        while self.retries.peek().is_some_and(|Reverse(r)| r.at <= now) {
            if let Some(Reverse(retry)) = self.retries.pop() {
                self.requeue(retry.krec, now);
            }
        }
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

    pub(super) fn fail_expired(&mut self, krec: KRec) {
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
        let mut bytes = 0;
        let mut settled = false;
        let mut failures = Vec::with_capacity(records.len());
        for mut pending in records {
            bytes += pending.record.size();
            settled |= self.flushes.settle(pending.epoch);
            let failure = Failure {
                error: error(),
                record: pending.record.clone(),
                attempts: krec.history(&pending),
            };
            pending.prior.clear();
            failures.push((pending, Box::new(failure)));
        }
        self.resolve(Resolution::Failed { failures, bytes });
        if settled {
            self.complete_flushes();
        }
    }
}

/// Turns the recorded attempt of an entry that landed on a then-unknown shard into a failed one:
/// its records are being sent again.
pub(super) fn mark_wrong_shard(krec: &mut KRec, shard_id: &str) {
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
