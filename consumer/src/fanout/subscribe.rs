//! A shard's `SubscribeToShard` subscriptions, one open at a time: a pure state machine,
//! [`Subscription`] (`(phase, input, now) -> action`), that takes what happened to
//! [`decide`], and the task that performs its actions.
//!
//! ```text
//!            ┌──────────────────────────── Waiting (until) ◄──────────────── Retry (now, or backoff)
//!            ▼                                                                  ▲
//!   FindingConsumer ── ARN ──► Subscribing ── subscribed ──► Open ── event ──► Continue (Open again)
//!                                  │                          │ ended by the service, silent, failed
//!                                  └──── failed ──────────────┴──► decide ──► ShardEnd / Fail: done
//!                                                                   │
//!       CheckingConsumer ◄── CheckConsumer ◄────────────────────────┤
//!           │ gone: ReplacingConsumer; active: if_active            │
//!       CheckingShard ◄── CheckShard ◄──────────────────────────────┘
//! ```

use std::{sync::Arc, time::Duration, time::SystemTime};

use aws_sdk_kinesis::{
    Client,
    types::{StartingPosition, SubscribeToShardEventStream},
};
use kinesis_aggregation::{HashKeyRange, StreamRecord};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, warn};

use super::Registration;
use crate::{
    checkpoint::Checkpoint,
    error::Error,
    kinesis::{self, Start, within},
    lineage::ChildShard,
    metrics as m,
    retrieval::{
        Budgets, Fetch, count_read_error,
        decide::{
            Backoff, Call, Consumer, Context, Decision, Event, Happened, IfActive, Outcome, Pause,
            Reason, Shard, decide,
        },
        look_at_shard,
    },
    sdk_error::CallFailure,
};

#[cfg(test)]
mod tests;

/// The delays between subscriptions that failed (or between attempts to have the stream
/// consumer).
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));

/// Where a shard's subscription is: exactly one of these at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// The stream consumer's ARN is being had (found, or registered and waited for).
    FindingConsumer,
    /// `SubscribeToShard` was sent, through the consumer `arn`.
    Subscribing { arn: String },
    /// Events arrive; whether any came yet; silent once `silent_at` passes with nothing.
    Open {
        arn: String,
        events: bool,
        silent_at: Instant,
    },
    /// The consumer is looked at after a failure; `if_active` says what comes next if it is
    /// there.
    CheckingConsumer { arn: String, if_active: IfActive },
    /// The consumer is found again, or registered anew.
    ReplacingConsumer { arn: String },
    /// The shard is looked at in the shard list.
    CheckingShard,
    /// Waiting to start again (with the consumer's ARN first).
    Waiting { until: Instant },
    /// The shard ended or reading failed: nothing more to do.
    Done,
}

/// What happened, as fed to [`Subscription::handle`]: the answer to the last [`Action`].
#[derive(Debug)]
pub(crate) enum Input {
    /// Time passed: a wait ended, or nothing came by the silence timeout.
    Tick,
    /// The stream consumer's ARN, or why it could not be had.
    ConsumerArn(Result<String, Error>),
    /// `SubscribeToShard` answered: the subscription is open, or it failed.
    Subscribed(Result<(), CallFailure>),
    /// An event came (its records already handed over).
    Event(Event),
    /// An event of a type this version does not know came.
    UnknownEvent,
    /// The service ended the event stream.
    StreamEnded,
    /// The event stream failed.
    StreamFailed(CallFailure),
    /// What a look at the consumer found.
    ConsumerLooked(Consumer),
    /// The consumer's ARN after finding it again, or why it could not be had.
    ConsumerReplaced(Result<String, Error>),
    /// What a look at the shard found.
    ShardLooked(Shard),
}

/// What the subscription's task must do; each but the last two is answered with an [`Input`].
#[derive(Debug)]
pub(crate) enum Action {
    /// Have the stream consumer's ARN; answer with [`Input::ConsumerArn`].
    FindConsumer,
    /// Subscribe through the consumer `arn` from `position`; answer with [`Input::Subscribed`].
    Subscribe { arn: String, position: Start },
    /// Read the next event of the open subscription; answer with what came, or with
    /// [`Input::Tick`] if nothing did by `until`.
    Read { until: Instant },
    /// Look at the consumer `arn`; answer with [`Input::ConsumerLooked`].
    CheckConsumer { arn: String },
    /// Find the consumer again, `arn` being stale; answer with [`Input::ConsumerReplaced`].
    ReplaceConsumer { arn: String },
    /// Look at the shard; answer with [`Input::ShardLooked`].
    CheckShard,
    /// Wait until `until`, then answer with [`Input::Tick`]. `resubscribed`: a subscription is
    /// started again, for this reason (the metric).
    Wait {
        until: Instant,
        resubscribed: Option<Reason>,
    },
    /// The shard has ended; its children when the service named them.
    End { children: Option<Vec<ChildShard>> },
    /// Reading cannot go on.
    Fail(Error),
}

/// One shard's subscriptions.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The stream, to name it in errors.
    stream: String,
    silence: Duration,
    /// Where the next subscription starts.
    position: Start,
    /// Whether a Kinesis record came (before one, a continuation is started *at*).
    received_records: bool,
    /// Consecutive `ResourceInUseException` answers since the last event.
    in_use: u32,
    backoff: Backoff,
    rng: StdRng,
    phase: Phase,
}

impl Subscription {
    /// A shard's subscriptions, from `position`, started again after `silence` without events;
    /// `seed` seeds the backoff's jitter.
    pub(crate) fn new(stream: String, position: Start, silence: Duration, seed: u64) -> Self {
        Subscription {
            stream,
            silence,
            position,
            received_records: false,
            in_use: 0,
            backoff: BACKOFF,
            rng: StdRng::seed_from_u64(seed),
            phase: Phase::FindingConsumer,
        }
    }

    /// The first action.
    pub(crate) fn start(&self) -> Action {
        Action::FindConsumer
    }

    /// Takes in the answer to the last action, at `now`, and returns the next action; `None`
    /// once the machine is done (after [`Action::End`] or [`Action::Fail`]).
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Option<Action> {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let action = match (phase, input) {
            (Phase::Done, _) => return None,
            (Phase::FindingConsumer, Input::ConsumerArn(Ok(arn))) => self.subscribe(arn),
            (Phase::FindingConsumer, Input::ConsumerArn(Err(error))) => {
                let retryable = error.is_retryable();
                if retryable {
                    warn!(%error, "the stream consumer is not available; trying again");
                }
                let decision = decide(Happened::NoConsumer { retryable }, self.context());
                self.follow(decision, None, now, |_| error)
            }
            (Phase::Subscribing { arn }, Input::Subscribed(Ok(()))) => self.open(arn, false, now),
            (Phase::Subscribing { arn }, Input::Subscribed(Err(failure)))
            | (Phase::Open { arn, .. }, Input::StreamFailed(failure)) => {
                self.failed(arn, failure, now)
            }
            (Phase::Open { arn, .. }, Input::Event(event)) => {
                self.in_use = 0;
                self.backoff.reset();
                self.received_records |= event.records;
                let decision = decide(Happened::Event(event), self.context());
                if let Decision::ShardEnd { children } = &decision {
                    debug!(children = children.as_ref().map(Vec::len), "shard ended");
                }
                self.follow(decision, Some(arn), now, unexplained)
            }
            // Not a sign of life the backoff counts, but not silence either.
            (Phase::Open { arn, events, .. }, Input::UnknownEvent) => self.open(arn, events, now),
            (Phase::Open { arn, events, .. }, Input::StreamEnded) => {
                let decision = decide(Happened::Closed { events }, self.context());
                self.follow(decision, Some(arn), now, unexplained)
            }
            (
                Phase::Open {
                    arn,
                    events,
                    silent_at,
                },
                Input::Tick,
            ) => {
                if now < silent_at {
                    self.phase = Phase::Open {
                        arn,
                        events,
                        silent_at,
                    };
                    Action::Read { until: silent_at }
                } else {
                    warn!(silence = ?self.silence, "subscription silent; subscribing again");
                    let decision = decide(Happened::Silent, self.context());
                    self.follow(decision, Some(arn), now, unexplained)
                }
            }
            (Phase::CheckingConsumer { arn, if_active }, Input::ConsumerLooked(found)) => {
                let decision = decide(
                    Happened::ConsumerLooked { found, if_active },
                    self.context(),
                );
                if decision == Decision::ReplaceConsumer {
                    warn!(consumer_arn = %arn, "the stream consumer is gone or not active; finding it again");
                }
                self.follow(decision, Some(arn), now, unexplained)
            }
            (Phase::ReplacingConsumer { arn }, Input::ConsumerReplaced(result)) => {
                let decision = decide(
                    Happened::ConsumerReplaced(Outcome::of(&result)),
                    self.context(),
                );
                let error = result.err();
                self.follow(decision, Some(arn), now, |stream| {
                    error.unwrap_or_else(|| unexplained(stream))
                })
            }
            (Phase::CheckingShard, Input::ShardLooked(found)) => {
                let decision = decide(Happened::ShardLooked(found), self.context());
                if matches!(decision, Decision::ShardEnd { .. }) {
                    warn!(
                        "shard not found by SubscribeToShard and closed or gone; treated as ended"
                    );
                }
                self.follow(decision, None, now, |stream| Error::StreamNotFound {
                    stream: stream.to_owned(),
                })
            }
            (Phase::Waiting { until }, Input::Tick) => {
                if now < until {
                    self.phase = Phase::Waiting { until };
                    Action::Wait {
                        until,
                        resubscribed: None,
                    }
                } else {
                    self.phase = Phase::FindingConsumer;
                    Action::FindConsumer
                }
            }
            // An answer to an action not asked for (the task feeds only the answers asked for):
            // the phase goes on.
            (phase, input) => {
                debug!(?phase, ?input, "unexpected input; ignored");
                self.phase = phase;
                self.repeat()?
            }
        };
        Some(action)
    }

    fn context(&self) -> Context {
        Context {
            in_use: self.in_use,
        }
    }

    fn subscribe(&mut self, arn: String) -> Action {
        self.phase = Phase::Subscribing { arn: arn.clone() };
        Action::Subscribe {
            arn,
            position: self.position.clone(),
        }
    }

    fn open(&mut self, arn: String, events: bool, now: Instant) -> Action {
        let silent_at = now + self.silence;
        self.phase = Phase::Open {
            arn,
            events,
            silent_at,
        };
        Action::Read { until: silent_at }
    }

    /// `SubscribeToShard`, or its event stream, failed.
    fn failed(&mut self, arn: String, failure: CallFailure, now: Instant) -> Action {
        if failure.kind == kinesis_calls::ErrorKind::InUse {
            self.in_use = self.in_use.saturating_add(1);
        }
        let decision = decide(
            Happened::failed(Call::SubscribeToShard, &failure),
            self.context(),
        );
        if let Decision::Retry { .. } = decision {
            debug!(code = %failure.code, "subscription failed; subscribing again");
        }
        self.follow(decision, Some(arn), now, |stream| {
            Error::kinesis("SubscribeToShard", stream.to_owned(), failure)
        })
    }

    /// Carries out `decision`, made with the consumer `arn` (when one was in use); `error`
    /// makes the error if it is [`Decision::Fail`].
    fn follow(
        &mut self,
        decision: Decision,
        arn: Option<String>,
        now: Instant,
        error: impl FnOnce(&str) -> Error,
    ) -> Action {
        match (decision, arn) {
            (Decision::Continue { continuation }, Some(arn)) => {
                self.position = if self.received_records {
                    Start::After(continuation)
                } else {
                    Start::At(continuation)
                };
                self.open(arn, true, now)
            }
            (Decision::ShardEnd { children }, _) => {
                self.phase = Phase::Done;
                Action::End { children }
            }
            (Decision::Retry { pause, reason }, _) => {
                let until = match pause {
                    Pause::Now => now,
                    Pause::Backoff => now + self.backoff.next(self.rng.random::<f64>()),
                };
                self.phase = Phase::Waiting { until };
                Action::Wait {
                    until,
                    resubscribed: reason,
                }
            }
            (Decision::CheckConsumer { if_active }, Some(arn)) => {
                self.phase = Phase::CheckingConsumer {
                    arn: arn.clone(),
                    if_active,
                };
                Action::CheckConsumer { arn }
            }
            (Decision::ReplaceConsumer, Some(arn)) => {
                self.phase = Phase::ReplacingConsumer { arn: arn.clone() };
                Action::ReplaceConsumer { arn }
            }
            (Decision::CheckShard, _) => {
                self.phase = Phase::CheckingShard;
                Action::CheckShard
            }
            (Decision::Fail, _) => {
                self.phase = Phase::Done;
                Action::Fail(error(&self.stream))
            }
            // Polling's decision, or one that needs a consumer when none was in use: neither
            // comes from what a subscription meets (the decision's table tests show it). Start
            // again after the backoff rather than stop reading.
            (decision @ (Decision::RenewIterator | Decision::Continue { .. }), _)
            | (decision @ (Decision::CheckConsumer { .. } | Decision::ReplaceConsumer), None) => {
                debug!(
                    ?decision,
                    "not a subscription's decision; subscribing again"
                );
                self.follow(
                    Decision::Retry {
                        pause: Pause::Backoff,
                        reason: None,
                    },
                    None,
                    now,
                    error,
                )
            }
        }
    }

    /// The action of the current phase, asked again.
    fn repeat(&mut self) -> Option<Action> {
        Some(match &self.phase {
            Phase::Done => return None,
            Phase::FindingConsumer => Action::FindConsumer,
            Phase::Subscribing { arn } => Action::Subscribe {
                arn: arn.clone(),
                position: self.position.clone(),
            },
            Phase::Open { silent_at, .. } => Action::Read { until: *silent_at },
            Phase::CheckingConsumer { arn, .. } => Action::CheckConsumer { arn: arn.clone() },
            Phase::ReplacingConsumer { arn } => Action::ReplaceConsumer { arn: arn.clone() },
            Phase::CheckingShard => Action::CheckShard,
            Phase::Waiting { until } => Action::Wait {
                until: *until,
                resubscribed: None,
            },
        })
    }
}

/// The error for a decision to fail that came without one: never, as the decision's table tests
/// show (events, ends, silence and looks never fail), but a typo there must not panic here.
fn unexplained(stream: &str) -> Error {
    Error::Stopped {
        reason: format!("reading stream {stream} failed without an error"),
    }
}

/// What a subscriber needs.
pub(crate) struct Subscriber {
    pub(crate) client: Client,
    pub(crate) registration: Arc<Registration>,
    pub(crate) stream: kinesis_calls::StreamRef,
    pub(crate) shard_id: Arc<str>,
    pub(crate) range: Option<HashKeyRange>,
    pub(crate) start: Checkpoint,
    pub(crate) timestamp: Option<SystemTime>,
    pub(crate) prefetch_records: usize,
    pub(crate) prefetch_bytes: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) silence: Duration,
}

/// Starts subscribing; batches arrive on the returned channel until the shard ends, reading
/// fails, or the receiver is dropped. Aborting the task closes the subscription.
pub(crate) fn spawn(
    subscriber: Subscriber,
) -> (mpsc::Receiver<Fetch>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(2);
    let span = tracing::debug_span!("fan_out", shard_id = %subscriber.shard_id);
    let task = tokio::spawn(tracing::Instrument::instrument(read(subscriber, tx), span));
    (rx, task)
}

struct Counters {
    events: metrics::Counter,
    records: metrics::Counter,
    bytes: metrics::Counter,
    labels: [(&'static str, String); 2],
}

impl Counters {
    fn resubscribed(&self, reason: Reason) {
        let [stream, shard] = &self.labels;
        metrics::counter!(m::FAN_OUT_RESUBSCRIPTIONS, "stream" => stream.1.clone(),
            "shard_id" => shard.1.clone(), "reason" => reason.as_str())
        .increment(1);
    }
}

/// Most user records in the first batch a subscriber hands over.
const FIRST_BATCH: usize = 1_000;

type Events = aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
>;

/// The subscription's task: performs the machine's actions and feeds it their answers.
async fn read(sub: Subscriber, tx: mpsc::Sender<Fetch>) {
    let (budgets, mut unpacker) = Budgets::for_shard(
        (sub.prefetch_records, sub.prefetch_bytes),
        sub.stream.stream_name(),
        &sub.shard_id,
        sub.range,
        &sub.start,
    );
    let labels = [
        ("stream", sub.stream.stream_name().to_owned()),
        ("shard_id", sub.shard_id.to_string()),
    ];
    let counters = Counters {
        events: metrics::counter!(m::FAN_OUT_EVENTS, &labels),
        records: metrics::counter!(m::FAN_OUT_RECORDS, &labels),
        bytes: metrics::counter!(m::FAN_OUT_BYTES, &labels),
        labels,
    };
    let mut machine = Subscription::new(
        sub.stream.to_string(),
        Start::Checkpoint(sub.start.clone()),
        sub.silence,
        rand::random(),
    );
    // The first event of a backlog can be large (a stand-in sends up to 10,000 aggregates):
    // its first records are handed over before the rest is unpacked. Later events go whole.
    let mut batch_size = FIRST_BATCH;
    // The open subscription's events; dropped (which closes it) by any action but reading.
    let mut events: Option<Events> = None;
    let mut action = machine.start();
    loop {
        if !matches!(action, Action::Read { .. }) {
            events = None;
        }
        let input = match action {
            Action::FindConsumer => Input::ConsumerArn(sub.registration.arn().await),
            Action::Subscribe { arn, position } => {
                match subscribe(&sub, &arn, &position).await {
                    Ok(opened) => {
                        // Whatever this subscription replays of what was handed out is dropped.
                        unpacker.skip_delivered();
                        events = Some(opened);
                        Input::Subscribed(Ok(()))
                    }
                    Err(failure) => {
                        count_read_error(sub.stream.stream_name(), &sub.shard_id, &failure);
                        Input::Subscribed(Err(failure))
                    }
                }
            }
            Action::Read { until } => {
                let Some(open) = events.as_mut() else {
                    // Cannot happen (reading follows a subscription opened): as if the service
                    // had ended it.
                    action = match machine.handle(Input::StreamEnded, Instant::now()) {
                        Some(next) => next,
                        None => return,
                    };
                    continue;
                };
                match tokio::time::timeout_at(until, open.recv()).await {
                    Err(_) => Input::Tick,
                    Ok(Ok(None)) => Input::StreamEnded,
                    Ok(Err(error)) => {
                        let failure = CallFailure::from_event_stream(error);
                        count_read_error(sub.stream.stream_name(), &sub.shard_id, &failure);
                        Input::StreamFailed(failure)
                    }
                    Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)))) => {
                        counters.events.increment(1);
                        counters.records.increment(event.records.len() as u64);
                        counters.bytes.increment(
                            event
                                .records
                                .iter()
                                .map(|r| r.data.as_ref().len() as u64)
                                .sum(),
                        );
                        let records = !event.records.is_empty();
                        let children = event
                            .child_shards
                            .filter(|c| !c.is_empty())
                            .map(|c| c.into_iter().map(kinesis::child_shard).collect::<Vec<_>>());
                        let handed = budgets
                            .hand_over(
                                &mut unpacker,
                                event.records.into_iter().map(StreamRecord::from),
                                batch_size,
                                Some(event.millis_behind_latest),
                                &tx,
                            )
                            .await;
                        if !handed {
                            // The shard's task is gone: stop.
                            return;
                        }
                        batch_size = usize::MAX;
                        Input::Event(Event {
                            records,
                            continuation: event.continuation_sequence_number,
                            children,
                        })
                    }
                    // An event type this version does not know: nothing to deliver.
                    Ok(Ok(Some(_))) => Input::UnknownEvent,
                }
            }
            Action::CheckConsumer { arn } => {
                Input::ConsumerLooked(match sub.registration.is_active(&arn).await {
                    Ok(true) => Consumer::Active,
                    Ok(false) => Consumer::Gone,
                    Err(_) => Consumer::Unknown,
                })
            }
            Action::ReplaceConsumer { arn } => {
                Input::ConsumerReplaced(sub.registration.replace(&arn).await)
            }
            Action::CheckShard => Input::ShardLooked(
                look_at_shard(&sub.client, &sub.stream, &sub.shard_id, sub.call_timeout).await,
            ),
            Action::Wait {
                until,
                resubscribed,
            } => {
                if let Some(reason) = resubscribed {
                    counters.resubscribed(reason);
                }
                if until > Instant::now() {
                    tokio::time::sleep_until(until).await;
                }
                Input::Tick
            }
            Action::End { children } => {
                let _ = tx.send(Fetch::End { children }).await;
                return;
            }
            Action::Fail(error) => {
                let _ = tx.send(Fetch::Failed(error)).await;
                return;
            }
        };
        match machine.handle(input, Instant::now()) {
            Some(next) => action = next,
            None => return,
        }
    }
}

async fn subscribe(sub: &Subscriber, arn: &str, position: &Start) -> Result<Events, CallFailure> {
    let (kind, sequence, at) = position.to_service(sub.timestamp);
    let starting = StartingPosition::builder()
        .r#type(kind)
        .set_sequence_number(sequence.map(str::to_owned))
        .set_timestamp(at)
        .build()
        .map_err(|error| {
            let mut failure =
                CallFailure::new(kinesis_calls::CONSTRUCTION_FAILURE, error.to_string(), None);
            failure.source = Some(Box::new(error));
            failure
        })?;
    debug!(?position, "subscribing");
    let output = within(
        sub.call_timeout,
        sub.client
            .subscribe_to_shard()
            .consumer_arn(arn)
            .shard_id(sub.shard_id.as_ref())
            .starting_position(starting)
            .send(),
    )
    .await?;
    Ok(output.event_stream)
}
