//! The stream consumer: found with `DescribeStreamConsumer`, registered if absent, and waited on
//! until `ACTIVE`; looked at again when a subscription says it is gone.

use std::time::Duration;

use aws_sdk_kinesis::{Client, types::ConsumerStatus};
use tokio::{sync::Mutex, time::Instant};
use tracing::{debug, info};

use crate::{
    error::Error, kinesis::within, metrics as m, retrieval::backoff, sdk_error::CallFailure,
};

/// The stream consumer of one worker: found or registered once, shared by its shards, and
/// looked up again when a subscription says it is gone.
pub(crate) struct Registration {
    client: Client,
    stream: kinesis_calls::StreamRef,
    name: String,
    timeout: Duration,
    call_timeout: Duration,
    arn: Mutex<Option<String>>,
}

/// What `DescribeStreamConsumer` said about a consumer.
enum Found {
    Active(String),
    Creating,
    Deleting,
    Absent,
}

impl Registration {
    pub(crate) fn new(
        client: Client,
        stream: kinesis_calls::StreamRef,
        name: String,
        timeout: Duration,
        call_timeout: Duration,
    ) -> Self {
        Registration {
            client,
            stream,
            name,
            timeout,
            call_timeout,
            arn: Mutex::new(None),
        }
    }

    /// The consumer's ARN, registering the consumer and waiting until it is `ACTIVE` the first
    /// time.
    pub(crate) async fn arn(&self) -> Result<String, Error> {
        let mut arn = self.arn.lock().await;
        if let Some(known) = &*arn {
            return Ok(known.clone());
        }
        let fresh = self.ensure().await?;
        *arn = Some(fresh.clone());
        Ok(fresh)
    }

    /// `stale` was found deleted or not active: find the consumer again, registering it anew if
    /// it is gone. Shards that find the same stale ARN wait for one lookup.
    pub(crate) async fn replace(&self, stale: &str) -> Result<String, Error> {
        let mut arn = self.arn.lock().await;
        if let Some(known) = &*arn
            && known != stale
        {
            return Ok(known.clone());
        }
        *arn = None;
        let fresh = self.ensure().await?;
        *arn = Some(fresh.clone());
        Ok(fresh)
    }

    /// Whether the consumer `arn` still exists and is `ACTIVE` (`Ok(true)`), or not.
    pub(crate) async fn is_active(&self, arn: &str) -> Result<bool, CallFailure> {
        let answer = within(
            self.call_timeout,
            self.client
                .describe_stream_consumer()
                .consumer_arn(arn)
                .send(),
        )
        .await;
        match answer {
            Ok(output) => Ok(output
                .consumer_description
                .is_some_and(|d| d.consumer_status == ConsumerStatus::Active)),
            Err(failure) if failure.code == "ResourceNotFoundException" => Ok(false),
            Err(failure) => Err(failure),
        }
    }

    /// Deregisters the consumer (on shutdown, when asked).
    pub(crate) async fn deregister(&self) -> Result<(), Error> {
        let Some(arn) = self.arn.lock().await.take() else {
            return Ok(());
        };
        match within(
            self.call_timeout,
            self.client
                .deregister_stream_consumer()
                .consumer_arn(&arn)
                .send(),
        )
        .await
        {
            Ok(_) => {
                info!(consumer = %self.name, "stream consumer deregistered");
                Ok(())
            }
            Err(failure) if failure.code == "ResourceNotFoundException" => Ok(()),
            Err(failure) => Err(self.failed("DeregisterStreamConsumer", failure)),
        }
    }

    fn failed(&self, operation: &'static str, failure: CallFailure) -> Error {
        Error::kinesis(operation, self.stream.to_string(), failure)
    }

    /// Finds the consumer, registers it if absent, and waits until it is `ACTIVE`.
    async fn ensure(&self) -> Result<String, Error> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut delays = backoff(Duration::from_millis(100), Duration::from_secs(2));
        let mut status: String;
        // Known from the start when the stream is named by ARN; else looked up once.
        let mut stream_arn: Option<String> = self.stream.arn().map(str::to_owned);
        loop {
            match self.step(&mut stream_arn).await {
                Ok(Found::Active(arn)) => {
                    info!(consumer = %self.name, %arn, "stream consumer active");
                    return Ok(arn);
                }
                Ok(Found::Creating) => status = "CREATING".to_owned(),
                Ok(Found::Deleting) => status = "DELETING".to_owned(),
                Ok(Found::Absent) => {
                    status = "absent".to_owned();
                    // Registering an absent consumer; the next look sees it creating.
                    if let Some(arn) = &stream_arn {
                        self.register(arn, &mut status).await?;
                    }
                }
                Err((operation, failure)) if failure.is_retryable() => {
                    debug!(operation, code = %failure.code, "stream consumer lookup failed; trying again");
                    status = failure.code;
                }
                Err((operation, failure)) => return Err(self.failed(operation, failure)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ConsumerNotActive {
                    consumer: self.name.clone(),
                    stream: self.stream.to_string(),
                    waited: now.duration_since(started),
                    status,
                });
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(2));
            tokio::time::sleep(delay.min(deadline - now)).await;
        }
    }

    /// One look at the consumer (and, the first time, at the stream's ARN).
    async fn step(
        &self,
        stream_arn: &mut Option<String>,
    ) -> Result<Found, (&'static str, CallFailure)> {
        let arn = match stream_arn.as_deref() {
            Some(arn) => arn.to_owned(),
            None => {
                let summary = within(
                    self.call_timeout,
                    self.client
                        .describe_stream_summary()
                        .set_stream_name(self.stream.name().map(str::to_owned))
                        .send(),
                )
                .await
                .map_err(|f| ("DescribeStreamSummary", f))?;
                let arn = summary
                    .stream_description_summary
                    .map(|s| s.stream_arn)
                    .unwrap_or_default();
                *stream_arn = Some(arn.clone());
                arn
            }
        };
        let answer = within(
            self.call_timeout,
            self.client
                .describe_stream_consumer()
                .stream_arn(&arn)
                .consumer_name(&self.name)
                .send(),
        )
        .await;
        match answer {
            Ok(output) => Ok(match output.consumer_description {
                Some(d) if d.consumer_status == ConsumerStatus::Active => {
                    Found::Active(d.consumer_arn)
                }
                Some(d) if d.consumer_status == ConsumerStatus::Deleting => Found::Deleting,
                Some(_) => Found::Creating,
                None => Found::Absent,
            }),
            Err(failure) if failure.code == "ResourceNotFoundException" => Ok(Found::Absent),
            Err(failure) => Err(("DescribeStreamConsumer", failure)),
        }
    }

    async fn register(&self, stream_arn: &str, status: &mut String) -> Result<(), Error> {
        let answer = within(
            self.call_timeout,
            self.client
                .register_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(&self.name)
                .send(),
        )
        .await;
        match answer {
            Ok(_) => {
                metrics::counter!(m::FAN_OUT_REGISTRATIONS, "stream" => self.stream.stream_name().to_owned())
                    .increment(1);
                info!(consumer = %self.name, "stream consumer registered");
                Ok(())
            }
            // Registered meanwhile by another worker, or still being deleted: look again.
            Err(failure) if failure.code == "ResourceInUseException" => Ok(()),
            // Too many consumers or registrations at once: wait and look again.
            Err(failure) if failure.is_retryable() => {
                debug!(code = %failure.code, "registering the stream consumer failed; trying again");
                *status = failure.code;
                Ok(())
            }
            Err(failure) => Err(self.failed("RegisterStreamConsumer", failure)),
        }
    }
}
