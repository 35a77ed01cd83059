//! What travels through the pipeline: the user records between admission and their receipts
//! ([`Pending`]), the Kinesis records that carry them ([`KRec`]: an aggregate or a plain record,
//! one `PutRecords` entry each), what goes out to a call and comes back from it ([`Entry`],
//! [`EntryResult`], [`CallFailure`]: plain data, the SDK's types stay at the edge), and the
//! receipts the core has decided to resolve ([`Resolution`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use backon::ExponentialBackoff;
use bytes::Bytes;
use kinesis_aggregation::{Aggregator, HashKey, UndigestedAggregate, UserRecord};
use kinesis_calls::ErrorKind;

use crate::{
    error::Error,
    receipt::{self, Attempt, AttemptError, Delivery, Failure, Outcome, Written, Wrote},
};

/// A user record between admission and its receipt.
pub(super) struct Pending {
    pub(super) record: UserRecord,
    /// The record's routing hash.
    pub(super) hash_key: HashKey,
    pub(super) tx: Option<receipt::Sender>,
    /// When the pipeline received the record (within microseconds of `put`).
    pub(super) put_at: Instant,
    /// Attempts made with earlier Kinesis records, when the record was routed again (after a
    /// wrong-shard landing or a map change). Usually empty: the attempts of the Kinesis record
    /// that carries it are shared by all its records.
    pub(super) prior: Prior,
    /// The flush epoch the record was admitted in.
    pub(super) epoch: u64,
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
                attempts: self.prior.take(),
            })));
        }
    }
}

/// A record's attempts with earlier Kinesis records ([`Pending::prior`]): almost always none, so
/// boxed and allocated only when there are some. Every record carries one, and records are moved
/// into their shard's aggregate one by one: 8 bytes each instead of a vector's 24.
// The vector is boxed on purpose: a thin pointer (8 bytes) where the vector itself, or a boxed
// slice (a fat pointer), would take 24 or 16 in every record.
#[allow(clippy::box_collection)]
#[derive(Default)]
pub(super) struct Prior(Option<Box<Vec<Attempt>>>);

impl Prior {
    pub(super) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|attempts| attempts.is_empty())
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, Attempt> {
        self.0.as_deref().map_or(&[][..], Vec::as_slice).iter()
    }

    pub(super) fn extend(&mut self, attempts: impl IntoIterator<Item = Attempt>) {
        self.0.get_or_insert_default().extend(attempts);
    }

    pub(super) fn clear(&mut self) {
        self.0 = None;
    }

    /// The attempts, leaving none.
    pub(super) fn take(&mut self) -> Vec<Attempt> {
        self.0.take().map(|attempts| *attempts).unwrap_or_default()
    }
}

/// One Kinesis record (an aggregate or a plain record) and the user records it carries.
pub(super) struct KRec {
    pub(super) partition_key: String,
    pub(super) explicit_hash_key: Option<HashKey>,
    pub(super) data: Bytes,
    /// An aggregate whose trailer is not computed yet (then `data` is empty).
    pub(super) undigested: Option<UndigestedAggregate>,
    pub(super) size: usize,
    pub(super) aggregated: bool,
    pub(super) records: Vec<Pending>,
    /// The predicted shard.
    pub(super) shard: Arc<str>,
    /// Earliest linger deadline of its records: ship by then.
    pub(super) deadline: Instant,
    /// Earliest expiry of its records.
    pub(super) expiry: Instant,
    pub(super) backoff: Option<ExponentialBackoff>,
    pub(super) last_error: Option<String>,
    /// The attempts of this Kinesis record, shared by its user records.
    pub(super) attempts: Vec<Attempt>,
    /// End of the last attempt, or when its oldest record was put.
    pub(super) last_end: Instant,
}

impl KRec {
    /// The entry of a `PutRecords` call. The data moves into it (no copy of an aggregate); a
    /// retry encodes it again.
    pub(super) fn entry(&mut self) -> Entry {
        let data = match std::mem::take(&mut self.data) {
            data if data.is_empty() => self.encode(),
            data => data,
        };
        Entry {
            partition_key: self.partition_key.clone(),
            explicit_hash_key: self.explicit_hash_key,
            data,
        }
    }

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
    pub(super) fn attempted(
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
    pub(super) fn history(&self, pending: &Pending) -> Vec<Attempt> {
        pending
            .prior
            .iter()
            .chain(&self.attempts)
            .cloned()
            .collect()
    }

    pub(super) fn hash_keys(&self) -> impl Iterator<Item = HashKey> + '_ {
        self.records.iter().map(|p| p.hash_key)
    }
}

/// One entry of a `PutRecords` call, as the core packs it (the SDK's entry is built from it at
/// the edge, in the call's task).
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<HashKey>,
    pub(crate) data: Bytes,
}

/// One entry of a `PutRecords` answer.
#[derive(Clone, Debug)]
pub(crate) enum EntryResult {
    Written {
        shard_id: String,
        sequence_number: String,
    },
    /// Refused, classified by its code (entry errors come with the call's 200).
    Failed {
        kind: ErrorKind,
        code: String,
        message: String,
    },
}

/// A whole `PutRecords` call that failed, classified at the edge.
#[derive(Clone, Debug)]
pub(crate) struct CallFailure {
    pub(crate) kind: ErrorKind,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) request_id: Option<String>,
    /// What the call may have left in the stream.
    pub(crate) wrote: Wrote,
}

impl CallFailure {
    /// An answer whose results do not match the entries sent, as the edge reports one: no
    /// readable answer, so the call may have been written.
    pub(super) fn unreadable(results: usize, entries: usize) -> Self {
        let code = kinesis_calls::RESPONSE_ERROR;
        CallFailure {
            kind: kinesis_calls::classify(code, None),
            code: code.to_owned(),
            message: format!("{results} results for {entries} entries"),
            request_id: None,
            wrote: Wrote::Unknown,
        }
    }
}

/// Receipts the core decided to resolve. The driver returns their admission room first (whoever
/// sees a receipt resolved sees its room back too), then resolves them.
pub(super) enum Resolution {
    /// The user records of one written Kinesis record: each gets a delivery sharing `written`,
    /// its subsequence number its position in the aggregate.
    Delivered {
        records: Vec<Pending>,
        written: Arc<Written>,
        /// Bytes of the user records.
        bytes: usize,
    },
    /// User records that finally failed, each with its failure.
    Failed {
        failures: Vec<(Pending, Box<Failure>)>,
        /// Bytes of the user records.
        bytes: usize,
    },
}

impl Resolution {
    /// The admission room (records, bytes) the resolved records give back.
    pub(super) fn room(&self) -> (usize, usize) {
        match self {
            Resolution::Delivered { records, bytes, .. } => (records.len(), *bytes),
            Resolution::Failed { failures, bytes } => (failures.len(), *bytes),
        }
    }

    /// Resolves every receipt. Returns the emptied record vector of a delivery, for reuse.
    pub(super) fn resolve(self) -> Option<Vec<Pending>> {
        match self {
            Resolution::Delivered {
                mut records,
                written,
                ..
            } => {
                let aggregated = written.aggregated;
                // Resolved in place and dropped together after: a record is 152 bytes (on x86-64), and
                // moving each out of the vector (as `drain` does) was a `memmove` call apiece.
                for (index, pending) in records.iter_mut().enumerate() {
                    let written = if pending.prior.is_empty() {
                        written.clone()
                    } else {
                        // Routed again after earlier attempts with another Kinesis record: its
                        // own history, those attempts first.
                        let mut attempts = pending.prior.take();
                        attempts.extend(written.attempts.iter().cloned());
                        Arc::new(Written {
                            shard_id: written.shard_id.clone(),
                            sequence_number: written.sequence_number.clone(),
                            aggregated,
                            attempts,
                        })
                    };
                    let sub_sequence_number = if aggregated { index as u64 } else { 0 };
                    pending.resolve(Ok(Delivery::new(written, sub_sequence_number)));
                }
                records.clear();
                Some(records)
            }
            Resolution::Failed { failures, .. } => {
                for (mut pending, failure) in failures {
                    pending.resolve(Err(failure));
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_attempts_cost_a_pointer_until_there_are_some() {
        assert_eq!(std::mem::size_of::<Prior>(), std::mem::size_of::<usize>());
        let attempt = Attempt {
            delay: Duration::from_millis(1),
            duration: Duration::from_millis(2),
            error: None,
        };
        let mut prior = Prior::default();
        assert!(prior.is_empty());
        assert_eq!(prior.iter().count(), 0);
        prior.extend([attempt.clone(), attempt.clone()]);
        assert!(!prior.is_empty());
        assert_eq!(prior.iter().count(), 2);
        assert_eq!(prior.take(), [attempt.clone(), attempt.clone()]);
        assert!(prior.is_empty());
        prior.extend([attempt]);
        prior.clear();
        assert!(prior.is_empty() && prior.take().is_empty());
    }
}
