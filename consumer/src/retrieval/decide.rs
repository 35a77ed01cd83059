//! What a shard reader does about what happened to it, decided once for polling (`GetShardIterator`,
//! `GetRecords`) and enhanced fan-out (`SubscribeToShard`, its events, the stream consumer): a
//! pure function of plain data, from the call layer's classification of a failure
//! ([`ErrorKind`]), and the backoff between attempts.
//!
//! | what happened | polling | fan-out |
//! | --- | --- | --- |
//! | throttled, transient | call again after the backoff | subscribe again after the backoff |
//! | resource in use | call again after the backoff | the same; every third in a row, look at the consumer first |
//! | not found | iterator: shard end; records: look at the shard | look at the consumer, then at the shard |
//! | `ExpiredIteratorException` (`GetRecords`) | a new iterator, at once | — |
//! | access denied, rejected | fail | fail |
//! | an event | — | continue; shard end without a continuation, or with children and no records |
//! | the service ends the subscription | — | subscribe again (after the backoff if no event came) |
//! | silence | — | subscribe again at once |
//!
//! Looking at the consumer: gone or not active, it is found or registered again and the shard
//! subscribed again; active, or the look failed, the failure's own course goes on. Looking at the
//! shard: closed or no longer listed, it has ended (as the KCL treats `ResourceNotFoundException`
//! on reads); still open, or the listing failed, read again after the backoff; the stream itself
//! not found, reading fails (so that the worker learns of it at once).

use std::time::Duration;

use kinesis_calls::ErrorKind;

use crate::{lineage::ChildShard, sdk_error::CallFailure};

/// The read call that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// Polling: an iterator for the shard.
    GetShardIterator,
    /// Polling: records, with an iterator.
    GetRecords,
    /// Fan-out: the subscription's call, or its event stream.
    SubscribeToShard,
}

/// A subscription's event, as far as deciding goes (its records are handed over before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// Whether it held Kinesis records.
    pub(crate) records: bool,
    /// Its continuation sequence number; empty at the shard's end.
    pub(crate) continuation: String,
    /// The children it named (`None`: none, or an empty list).
    pub(crate) children: Option<Vec<ChildShard>>,
}

/// What a look at the stream consumer (`DescribeStreamConsumer`) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Consumer {
    /// It exists and is `ACTIVE`.
    Active,
    /// It is deleted, or not `ACTIVE`.
    Gone,
    /// The look failed: the consumer counts as present.
    Unknown,
}

/// What a look at the shard (`ListShards`) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shard {
    /// Listed and open.
    Open,
    /// Listed closed, or not listed (past retention).
    Ended,
    /// The listing failed.
    Unknown,
    /// The listing found no such stream: it was deleted.
    StreamGone,
}

/// How finding the stream consumer again (registering it if it is gone) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It is known again (found, or registered and `ACTIVE`).
    Found,
    /// It failed; trying again may help.
    Retryable,
    /// It failed; trying again cannot help.
    Fatal,
}

impl Outcome {
    /// How a registration call ended, from its result.
    pub(crate) fn of<T>(result: &Result<T, crate::error::Error>) -> Outcome {
        match result {
            Ok(_) => Outcome::Found,
            Err(error) if error.is_retryable() => Outcome::Retryable,
            Err(_) => Outcome::Fatal,
        }
    }
}

/// What to do when the stream consumer is active after all (see [`Decision::CheckConsumer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfActive {
    /// Subscribe again after the backoff (`ResourceInUseException`: a previous subscription is
    /// still open).
    Retry,
    /// Look at the shard (`ResourceNotFoundException`: the consumer or the shard is missing).
    CheckShard,
}

/// What happened to a shard reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Happened<'a> {
    /// A subscription's event.
    Event(Event),
    /// The service ended a subscription's event stream (it does every 5 minutes); whether any
    /// event came on it.
    Closed { events: bool },
    /// Nothing came on a subscription for the silence timeout.
    Silent,
    /// A call failed (for a subscription: the call, or its event stream mid-way).
    Failed {
        call: Call,
        kind: ErrorKind,
        code: &'a str,
    },
    /// The stream consumer's ARN could not be had before subscribing (looking it up or
    /// registering it failed, or it was not `ACTIVE` in time); whether trying again may help.
    NoConsumer { retryable: bool },
    /// Finding or registering the stream consumer again ended so.
    ConsumerReplaced(Outcome),
    /// A look at the stream consumer, asked for by [`Decision::CheckConsumer`], found this.
    ConsumerLooked {
        found: Consumer,
        if_active: IfActive,
    },
    /// A look at the shard, asked for by [`Decision::CheckShard`], found this.
    ShardLooked(Shard),
}

impl<'a> Happened<'a> {
    /// `call` failed so.
    pub(crate) fn failed(call: Call, failure: &'a CallFailure) -> Self {
        Happened::Failed {
            call,
            kind: failure.kind,
            code: &failure.code,
        }
    }
}

/// What a reader knows besides what just happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Context {
    /// Consecutive `ResourceInUseException` answers to `SubscribeToShard` since the last event,
    /// the one being decided included.
    pub(crate) in_use: u32,
}

/// Every how many consecutive `ResourceInUseException` answers the stream consumer is looked at:
/// one is usually a previous subscription not yet closed (it closes within seconds), several in a
/// row may be a consumer that is not active.
pub(crate) const IN_USE_CHECK_EVERY: u32 = 3;

/// When to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pause {
    /// At once.
    Now,
    /// After the reader's next backoff delay.
    Backoff,
}

/// Why a subscription is started again: the `reason` label of
/// [`FAN_OUT_RESUBSCRIPTIONS`](crate::metrics::FAN_OUT_RESUBSCRIPTIONS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The service ended the subscription.
    SessionEnd,
    /// Nothing came for the silence timeout.
    Silent,
    /// A transient failure: dropped connection, read timeout, 5xx.
    Connection,
    /// `ResourceInUseException`.
    ResourceInUse,
    /// Throttled.
    Throttled,
    /// The stream consumer was gone or not active; found or registered again.
    ConsumerMissing,
    /// The shard was not found, but is still listed open (or the listing failed).
    NotFound,
}

impl Reason {
    /// The metric's label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::SessionEnd => "session_end",
            Reason::Silent => "silent",
            Reason::Connection => "connection",
            Reason::ResourceInUse => "resource_in_use",
            Reason::Throttled => "throttled",
            Reason::ConsumerMissing => "consumer_missing",
            Reason::NotFound => "not_found",
        }
    }
}

/// What a reader does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Read the subscription's next event; the next subscription starts from `continuation`.
    Continue { continuation: String },
    /// The shard has ended; its children when the service named them.
    ShardEnd { children: Option<Vec<ChildShard>> },
    /// Try again: subscribe again (fan-out) or make the call again (polling). `reason` names a
    /// subscription started again, for the metrics; `None` when none ended (the stream
    /// consumer's ARN could not be had).
    Retry {
        pause: Pause,
        reason: Option<Reason>,
    },
    /// Polling: the iterator expired; get a new one (after the last record read), at once.
    RenewIterator,
    /// Look at the stream consumer: gone or not active, [`Decision::ReplaceConsumer`]; else
    /// `if_active`.
    CheckConsumer { if_active: IfActive },
    /// Find the stream consumer again, registering it if it is gone.
    ReplaceConsumer,
    /// Look at the shard: has it ended?
    CheckShard,
    /// Reading cannot go on: trying again cannot help.
    Fail,
}

/// The one decision of what `happened` means for a shard reader.
pub(crate) fn decide(happened: Happened<'_>, context: Context) -> Decision {
    match happened {
        Happened::Event(event) => on_event(event),
        // A subscription closed before any event (a service or stand-in that closes at once) is
        // not started again in a tight loop.
        Happened::Closed { events } => retry(
            if events { Pause::Now } else { Pause::Backoff },
            Reason::SessionEnd,
        ),
        Happened::Silent => retry(Pause::Now, Reason::Silent),
        Happened::Failed { call, kind, code } => on_failure(call, kind, code, context),
        // No subscription ended: nothing to count.
        Happened::NoConsumer { retryable: true } => Decision::Retry {
            pause: Pause::Backoff,
            reason: None,
        },
        Happened::NoConsumer { retryable: false } => Decision::Fail,
        Happened::ConsumerReplaced(Outcome::Found) => retry(Pause::Now, Reason::ConsumerMissing),
        Happened::ConsumerReplaced(Outcome::Retryable) => {
            retry(Pause::Backoff, Reason::ConsumerMissing)
        }
        Happened::ConsumerReplaced(Outcome::Fatal) => Decision::Fail,
        Happened::ConsumerLooked { found, if_active } => match (found, if_active) {
            (Consumer::Gone, _) => Decision::ReplaceConsumer,
            (Consumer::Active | Consumer::Unknown, IfActive::Retry) => {
                retry(Pause::Backoff, Reason::ResourceInUse)
            }
            (Consumer::Active | Consumer::Unknown, IfActive::CheckShard) => Decision::CheckShard,
        },
        Happened::ShardLooked(Shard::Ended) => Decision::ShardEnd { children: None },
        Happened::ShardLooked(Shard::Open | Shard::Unknown) => {
            retry(Pause::Backoff, Reason::NotFound)
        }
        // Reading ends; the worker's shard sync, which a failed read brings forward, names the
        // missing stream.
        Happened::ShardLooked(Shard::StreamGone) => Decision::Fail,
    }
}

fn retry(pause: Pause, reason: Reason) -> Decision {
    Decision::Retry {
        pause,
        reason: Some(reason),
    }
}

fn on_event(event: Event) -> Decision {
    // The service's shard end: no continuation (children named or not).
    if event.continuation.is_empty() {
        return Decision::ShardEnd {
            children: event.children,
        };
    }
    // A stand-in's variant names the children in every event once the shard is closed: the end
    // is the first such event that has no records left.
    if event.children.is_some() && !event.records {
        return Decision::ShardEnd {
            children: event.children,
        };
    }
    Decision::Continue {
        continuation: event.continuation,
    }
}

fn on_failure(call: Call, kind: ErrorKind, code: &str, context: Context) -> Decision {
    if call == Call::GetRecords && code == "ExpiredIteratorException" {
        return Decision::RenewIterator;
    }
    match (call, kind) {
        (_, ErrorKind::Throttled) => retry(Pause::Backoff, Reason::Throttled),
        (_, ErrorKind::Transient) => retry(Pause::Backoff, Reason::Connection),
        (Call::SubscribeToShard, ErrorKind::InUse)
            if context.in_use.is_multiple_of(IN_USE_CHECK_EVERY) =>
        {
            Decision::CheckConsumer {
                if_active: IfActive::Retry,
            }
        }
        (_, ErrorKind::InUse) => retry(Pause::Backoff, Reason::ResourceInUse),
        // The consumer or the shard: a deleted consumer is registered again, a shard no longer
        // listed, or closed, has ended.
        (Call::SubscribeToShard, ErrorKind::NotFound) => Decision::CheckConsumer {
            if_active: IfActive::CheckShard,
        },
        // The shard is gone (past retention): its data can no longer be read.
        (Call::GetShardIterator, ErrorKind::NotFound) => Decision::ShardEnd { children: None },
        // With an iterator the shard was there: gone from the list (or closed) it has ended, as
        // the KCL's polling treats it (`KinesisDataFetcher` answers a shard end); still listed
        // open, read again after the backoff, as fan-out does; the stream deleted, fail as
        // before.
        (Call::GetRecords, ErrorKind::NotFound) => Decision::CheckShard,
        (_, ErrorKind::AccessDenied | ErrorKind::Rejected) => Decision::Fail,
        // A kind this version does not know: retried if the call layer says it may help.
        (_, kind) if kind.is_retryable() => retry(Pause::Backoff, Reason::Connection),
        (_, _) => Decision::Fail,
    }
}

/// Jittered exponential delays between attempts: the minimum, doubled at each attempt up to the
/// maximum, plus up to as much again at random (the jittered exponential backoff of `backon`,
/// which this replaces, computed from plain values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// Delays handed out since the last reset.
    attempts: u32,
}

impl Backoff {
    /// Delays from `min` (jittered up to twice as much) growing to `max` (likewise).
    pub(crate) const fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempts: 0,
        }
    }

    /// The delay before try `attempt + 1` (`attempt` counts from 1), jittered by `unit` in
    /// `0..1`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self.min.saturating_mul(1u32 << exponent).min(self.max);
        base.saturating_add(base.mul_f64(unit.clamp(0.0, 1.0)))
    }

    /// The next delay, jittered by `unit` in `0..1`.
    pub(crate) fn next(&mut self, unit: f64) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.delay(self.attempts, unit)
    }

    /// Starts again from the minimum (after a success).
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests;
