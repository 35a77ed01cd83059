//! A shard's `SubscribeToShard` subscriptions: one open at a time, started again from the last
//! continuation when the service ends it (every 5 minutes), when it falls silent or fails.

use std::{sync::Arc, time::Duration, time::SystemTime};

use aws_sdk_kinesis::{
    Client,
    types::{StartingPosition, SubscribeToShardEventStream},
};
use kinesis_aggregation::{HashKeyRange, StreamRecord};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Registration;
use crate::{
    checkpoint::Checkpoint,
    error::Error,
    kinesis::{self, Start, within},
    lineage::ChildShard,
    metrics as m,
    retrieval::{Budgets, Fetch, backoff, count_read_error},
    sdk_error::CallFailure,
};

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

/// Why a subscription ended.
enum Ended {
    /// The service closed it (every 5 minutes); whether any event came first.
    Closed {
        events: bool,
    },
    /// Nothing arrived for the silence timeout.
    Silent,
    /// The shard ended.
    ShardEnd(Option<Vec<ChildShard>>),
    /// The receiver was dropped: stop.
    Stop,
    Failed(CallFailure),
}

/// What to do about a failure.
enum Next {
    Retry { reason: &'static str, wait: bool },
    End,
    Fail(Error),
}

struct Counters {
    events: metrics::Counter,
    records: metrics::Counter,
    bytes: metrics::Counter,
    labels: [(&'static str, String); 2],
}

impl Counters {
    fn resubscribed(&self, reason: &'static str) {
        let [stream, shard] = &self.labels;
        metrics::counter!(m::FAN_OUT_RESUBSCRIPTIONS, "stream" => stream.1.clone(),
            "shard_id" => shard.1.clone(), "reason" => reason)
        .increment(1);
    }
}

/// Most user records in the first batch a subscriber hands over.
const FIRST_BATCH: usize = 1_000;

fn delays() -> impl Iterator<Item = Duration> {
    backoff(Duration::from_millis(500), Duration::from_secs(5))
}

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
    let mut position = Start::Checkpoint(sub.start.clone());
    let mut received_records = false;
    // The first event of a backlog can be large (a stand-in sends up to 10,000 aggregates):
    // its first records are handed over before the rest is unpacked. Later events go whole.
    let mut batch_size = FIRST_BATCH;
    let mut delays = delays();
    // Consecutive ResourceInUse answers: after a few, the consumer itself is looked at.
    let mut in_use = 0u32;
    loop {
        let arn = match sub.registration.arn().await {
            Ok(arn) => arn,
            Err(error) if error.is_retryable() => {
                warn!(%error, "the stream consumer is not available; trying again");
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                continue;
            }
            Err(error) => {
                let _ = tx.send(Fetch::Failed(error)).await;
                return;
            }
        };
        let ended = match subscribe(&sub, &arn, &position).await {
            Err(failure) => Ended::Failed(failure),
            Ok(mut events) => {
                // Whatever this subscription replays of what was handed out is dropped.
                unpacker.skip_delivered();
                let mut any_event = false;
                loop {
                    let next = tokio::time::timeout(sub.silence, events.recv()).await;
                    let event = match next {
                        Err(_) => break Ended::Silent,
                        Ok(Ok(None)) => break Ended::Closed { events: any_event },
                        Ok(Err(error)) => {
                            break Ended::Failed(CallFailure::from_event_stream(error));
                        }
                        Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)))) => {
                            event
                        }
                        // An event type this version does not know: nothing to deliver.
                        Ok(Ok(Some(_))) => continue,
                    };
                    any_event = true;
                    delays = self::delays();
                    in_use = 0;
                    counters.events.increment(1);
                    counters.records.increment(event.records.len() as u64);
                    counters.bytes.increment(
                        event
                            .records
                            .iter()
                            .map(|r| r.data.as_ref().len() as u64)
                            .sum(),
                    );
                    let had_records = !event.records.is_empty();
                    received_records |= had_records;
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
                        break Ended::Stop;
                    }
                    batch_size = usize::MAX;
                    let continuation = event.continuation_sequence_number;
                    // The service's shard end: no continuation (children named or not).
                    if continuation.is_empty() {
                        break Ended::ShardEnd(children);
                    }
                    // A stand-in's variant names the children in every event once the shard is
                    // closed: the end is the first such event that has no records left.
                    if children.is_some() && !had_records {
                        break Ended::ShardEnd(children);
                    }
                    position = if received_records {
                        Start::After(continuation)
                    } else {
                        Start::At(continuation)
                    };
                }
            }
        };
        let next = match ended {
            Ended::Stop => return,
            Ended::ShardEnd(children) => {
                debug!(children = children.as_ref().map(Vec::len), "shard ended");
                let _ = tx.send(Fetch::End { children }).await;
                return;
            }
            // A subscription closed before any event (a service or stand-in that closes at once)
            // is not started again in a tight loop.
            Ended::Closed { events } => Next::Retry {
                reason: "session_end",
                wait: !events,
            },
            Ended::Silent => {
                warn!(silence = ?sub.silence, "subscription silent; subscribing again");
                Next::Retry {
                    reason: "silent",
                    wait: false,
                }
            }
            Ended::Failed(failure) => {
                count_read_error(sub.stream.stream_name(), &sub.shard_id, &failure);
                on_failure(&sub, &arn, failure, &mut in_use).await
            }
        };
        match next {
            Next::Retry { reason, wait } => {
                counters.resubscribed(reason);
                if wait {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tokio::time::sleep(delay).await;
                }
            }
            Next::End => {
                let _ = tx.send(Fetch::End { children: None }).await;
                return;
            }
            Next::Fail(error) => {
                let _ = tx.send(Fetch::Failed(error)).await;
                return;
            }
        }
    }
}

type Events = aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
>;

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

/// Decides what a failed subscription (or a failure mid-stream) calls for.
async fn on_failure(sub: &Subscriber, arn: &str, failure: CallFailure, in_use: &mut u32) -> Next {
    match failure.code.as_str() {
        "ResourceInUseException" => {
            // A previous subscription still open (it closes within seconds), or a consumer that
            // is not active: after a few in a row, look at the consumer.
            *in_use += 1;
            if in_use.is_multiple_of(3) && consumer_gone(sub, arn).await {
                return replaced(sub, arn).await;
            }
            Next::Retry {
                reason: "resource_in_use",
                wait: true,
            }
        }
        "ResourceNotFoundException" => {
            // The consumer or the shard. A deleted consumer is registered again; a shard that
            // is no longer listed, or is closed, has ended.
            if consumer_gone(sub, arn).await {
                return replaced(sub, arn).await;
            }
            match kinesis::list_shards(&sub.client, &sub.stream, sub.call_timeout).await {
                Ok(shards) => match shards.iter().find(|s| s.id == *sub.shard_id) {
                    Some(shard) if !shard.closed => Next::Retry {
                        reason: "not_found",
                        wait: true,
                    },
                    _ => {
                        warn!(
                            "shard not found by SubscribeToShard and closed or gone; treated as ended"
                        );
                        Next::End
                    }
                },
                Err(_) => Next::Retry {
                    reason: "not_found",
                    wait: true,
                },
            }
        }
        code if code.contains("Throttl") || code == "LimitExceededException" => Next::Retry {
            reason: "throttled",
            wait: true,
        },
        _ if failure.is_retryable() => {
            debug!(code = %failure.code, "subscription failed; subscribing again");
            Next::Retry {
                reason: "connection",
                wait: true,
            }
        }
        _ => Next::Fail(Error::kinesis(
            "SubscribeToShard",
            sub.stream.to_string(),
            failure,
        )),
    }
}

/// Whether the consumer `arn` is deleted or not active (a failed look counts as present).
async fn consumer_gone(sub: &Subscriber, arn: &str) -> bool {
    matches!(sub.registration.is_active(arn).await, Ok(false))
}

async fn replaced(sub: &Subscriber, arn: &str) -> Next {
    warn!(consumer_arn = %arn, "the stream consumer is gone or not active; finding it again");
    match sub.registration.replace(arn).await {
        Ok(_) => Next::Retry {
            reason: "consumer_missing",
            wait: false,
        },
        Err(error) if error.is_retryable() => Next::Retry {
            reason: "consumer_missing",
            wait: true,
        },
        Err(error) => Next::Fail(error),
    }
}
