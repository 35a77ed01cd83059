//! Reading with enhanced fan-out: a stream consumer (registered for this run and deregistered at
//! its end, or one given by name), and one `SubscribeToShard` per shard, renewed when the service
//! ends it (every 5 minutes) or when it has been open 5 minutes, from the continuation sequence
//! number, with any replayed record dropped.

use std::time::Duration;

use aws_sdk_kinesis::{
    primitives::DateTime,
    types::{ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream},
};
use kinesis_aggregation::StreamRecord;
use kinesis_calls::{CONSTRUCTION_FAILURE, CallError, StreamRef, within};
use tokio::time::Instant;

use super::{CALL_TIMEOUT, Msg, Reader, Retry, Skip, lineage::Start};
use crate::error::CliError;

/// How long a subscription is kept before it is renewed (the service ends it then anyway).
const SESSION: Duration = Duration::from_secs(300);
/// A subscription that brings no event for this long is renewed (the service sends one every
/// few seconds, records or not).
const SILENCE: Duration = Duration::from_secs(30);
/// How long to wait for a registered consumer to become `ACTIVE`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(120);
/// The prefix of the consumers this command registers.
pub(super) const CONSUMER_PREFIX: &str = "kinesis-cli-tail-";

/// The stream consumer the subscriptions use.
#[derive(Clone, Debug)]
pub(crate) struct Registration {
    /// Its name.
    pub(crate) name: String,
    /// Its ARN.
    pub(crate) arn: String,
    /// Whether this run registered it (and so deregisters it).
    pub(crate) ours: bool,
}

/// The stream's ARN (`SubscribeToShard` and the consumer calls take ARNs only).
pub(super) async fn stream_arn(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
) -> Result<String, CliError> {
    if let Some(arn) = stream.arn() {
        return Ok(arn.to_owned());
    }
    let summary = within(
        CALL_TIMEOUT,
        client
            .describe_stream_summary()
            .set_stream_name(stream.name().map(str::to_owned))
            .send(),
    )
    .await
    .map_err(|e| super::stream_error(stream, "describing", &e))?;
    summary
        .stream_description_summary
        .map(|s| s.stream_arn)
        .ok_or_else(|| CliError::Aws(format!("stream {stream}: the description has no ARN")))
}

/// Registers a consumer named `kinesis-cli-tail-<random>` on the stream; it still has to become
/// `ACTIVE` ([`wait_active`]).
pub(super) async fn register(
    client: &aws_sdk_kinesis::Client,
    stream_arn: &str,
) -> Result<Registration, CliError> {
    let name = format!("{CONSUMER_PREFIX}{:08x}", rand::random::<u32>());
    let output = within(
        CALL_TIMEOUT,
        client
            .register_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(&name)
            .send(),
    )
    .await
    .map_err(|e| CliError::call(&format!("registering stream consumer {name}"), &e))?;
    let arn = output.consumer.map(|c| c.consumer_arn).ok_or_else(|| {
        CliError::Aws(format!("registering {name}: the answer names no consumer"))
    })?;
    Ok(Registration {
        name,
        arn,
        ours: true,
    })
}

/// The existing consumer `name` of the stream.
pub(super) async fn existing(
    client: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    name: &str,
) -> Result<Registration, CliError> {
    let output = within(
        CALL_TIMEOUT,
        client
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send(),
    )
    .await
    .map_err(|e| match e.kind {
        kinesis_calls::ErrorKind::NotFound => {
            CliError::NotFound(format!("stream consumer {name} not found on {stream_arn}"))
        }
        _ => CliError::call(&format!("looking up stream consumer {name}"), &e),
    })?;
    let arn = output
        .consumer_description
        .map(|d| d.consumer_arn)
        .ok_or_else(|| CliError::NotFound(format!("stream consumer {name} not found")))?;
    Ok(Registration {
        name: name.to_owned(),
        arn,
        ours: false,
    })
}

/// Waits until the consumer is `ACTIVE`, for at most two minutes.
pub(super) async fn wait_active(
    client: &aws_sdk_kinesis::Client,
    registration: &Registration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let mut retry = 0u32;
    loop {
        let answer = within(
            CALL_TIMEOUT,
            client
                .describe_stream_consumer()
                .consumer_arn(&registration.arn)
                .send(),
        )
        .await;
        let status = match answer {
            Ok(output) => output.consumer_description.map(|d| d.consumer_status),
            Err(e) if e.is_retryable() => None,
            Err(e) => {
                return Err(CliError::call(
                    &format!("looking up stream consumer {}", registration.name),
                    &e,
                ));
            }
        };
        match status {
            Some(ConsumerStatus::Active) => return Ok(()),
            Some(ConsumerStatus::Deleting) => {
                return Err(CliError::Aws(format!(
                    "stream consumer {} is being deleted",
                    registration.name
                )));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(CliError::Aws(format!(
                "stream consumer {} not ACTIVE after {REGISTER_TIMEOUT:?}",
                registration.name
            )));
        }
        retry += 1;
        tokio::time::sleep(Duration::from_millis(100 * u64::from(retry.min(20)))).await;
    }
}

/// Deregisters the consumer this run registered.
pub(super) async fn deregister(
    client: &aws_sdk_kinesis::Client,
    registration: &Registration,
) -> Result<(), CallError> {
    match within(
        CALL_TIMEOUT,
        client
            .deregister_stream_consumer()
            .consumer_arn(&registration.arn)
            .send(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind == kinesis_calls::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where the next subscription starts.
#[derive(Clone, Debug)]
enum From {
    Start(Start),
    /// A continuation sequence number; `after`: a record was received (so the continuation is
    /// at or after it).
    Continuation {
        sequence: String,
        after: bool,
    },
}

fn starting_position(from: &From) -> Result<StartingPosition, CallError> {
    let builder = StartingPosition::builder();
    let builder = match from {
        From::Start(Start::TrimHorizon) => builder.r#type(ShardIteratorType::TrimHorizon),
        From::Start(Start::Latest) => builder.r#type(ShardIteratorType::Latest),
        From::Start(Start::AtTimestamp(at)) => builder
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(*at)),
        From::Start(Start::AtSequence(sequence, _)) => builder
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(sequence.to_string()),
        From::Continuation { sequence, after } => builder
            .r#type(if *after {
                ShardIteratorType::AfterSequenceNumber
            } else {
                ShardIteratorType::AtSequenceNumber
            })
            .sequence_number(sequence),
    };
    builder
        .build()
        .map_err(|e| CallError::new(CONSTRUCTION_FAILURE, e.to_string(), None))
}

/// How one subscription ended.
enum Session {
    /// Renew it (the service ended it, it is old, or silent).
    Renew,
    /// The shard's end was reached.
    Ended,
    /// It failed; retried with backoff unless retrying cannot help.
    Failed(CallError),
    /// The command is stopping.
    Stopped,
}

/// Reads `reader`'s shard through subscriptions of the consumer `consumer_arn` until its end, a
/// failure that retrying cannot help, or the channel closing.
pub(super) async fn read(reader: Reader, consumer_arn: String) {
    let mut from = From::Start(reader.start.clone());
    let mut skip = Skip::from_start(&reader.start);
    let mut retry = Retry::default();
    let mut received = false;
    super::reach(&reader.start).await;
    loop {
        let session = subscribe(&reader, &consumer_arn, &mut from, &mut skip, &mut received).await;
        match session {
            Session::Renew => {}
            Session::Ended => {
                let _ = reader.tx.send(Msg::Ended(reader.shard.clone())).await;
                return;
            }
            Session::Stopped => return,
            Session::Failed(error) => {
                if !retry.after(&reader, "SubscribeToShard", error).await {
                    return;
                }
                continue;
            }
        }
        retry.succeeded(&reader).await;
    }
}

async fn subscribe(
    reader: &Reader,
    consumer_arn: &str,
    from: &mut From,
    skip: &mut Skip,
    received: &mut bool,
) -> Session {
    let position = match starting_position(from) {
        Ok(position) => position,
        Err(error) => return Session::Failed(error),
    };
    let opened = within(
        CALL_TIMEOUT,
        reader
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(reader.shard.as_ref())
            .starting_position(position)
            .send(),
    )
    .await;
    let mut events = match opened {
        Ok(output) => output.event_stream,
        Err(error) => return Session::Failed(error),
    };
    let renew_at = Instant::now() + SESSION;
    loop {
        let until = renew_at.min(Instant::now() + SILENCE);
        let event = match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) => return Session::Renew,
            Ok(Ok(None)) => return Session::Renew,
            Ok(Err(error)) => return Session::Failed(CallError::from_event_stream(error)),
            Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)))) => event,
            // An event type this version does not know.
            Ok(Ok(Some(_))) => continue,
        };
        if !event.records.is_empty() {
            *received = true;
        }
        // The service's shard end: no continuation. A stand-in instead names the children in
        // every event once the shard is closed: the end is the first such event without records.
        let sequence = event.continuation_sequence_number;
        let ended = sequence.is_empty()
            || (event.child_shards.as_ref().is_some_and(|c| !c.is_empty())
                && event.records.is_empty());
        if !sequence.is_empty() {
            *from = From::Continuation {
                sequence,
                after: *received,
            };
        }
        let records = skip.deaggregate(event.records.into_iter().map(StreamRecord::from));
        let sent = reader
            .tx
            .send(Msg::Records {
                shard: reader.shard.clone(),
                records,
                behind: Some(event.millis_behind_latest),
            })
            .await;
        if sent.is_err() {
            return Session::Stopped;
        }
        if ended {
            return Session::Ended;
        }
    }
}
