//! The stream consumer: found with `DescribeStreamConsumer`, registered if absent, and waited on
//! until `ACTIVE`; looked at again when a subscription says it is gone.

use std::time::Duration;

use aws_sdk_kinesis::{Client, types::ConsumerStatus};
use kinesis_calls::ErrorKind;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{sync::Mutex, time::Instant};
use tracing::{debug, info};

use crate::{
    error::Error, kinesis::within, metrics as m, retrieval::decide::Backoff, sdk_error::CallFailure,
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

    /// Finds the consumer, registers it if absent, and waits until it is `ACTIVE`: performs the
    /// actions of a [`Registering`] machine.
    async fn ensure(&self) -> Result<String, Error> {
        let mut machine = Registering::new(
            self.name.clone(),
            &self.stream,
            self.timeout,
            Instant::now(),
            rand::random(),
        );
        let mut action = machine.start();
        loop {
            let input = match action {
                Action::DescribeStream => Input::StreamDescribed(self.describe_stream().await),
                Action::DescribeConsumer { stream_arn } => {
                    Input::ConsumerDescribed(self.describe_consumer(&stream_arn).await)
                }
                Action::Register { stream_arn } => {
                    let answer = self.register(&stream_arn).await;
                    if answer.is_ok() {
                        metrics::counter!(m::FAN_OUT_REGISTRATIONS, "stream" => self.stream.stream_name().to_owned())
                            .increment(1);
                        info!(consumer = %self.name, "stream consumer registered");
                    }
                    Input::Registered(answer)
                }
                Action::Wait { until } => {
                    tokio::time::sleep_until(until).await;
                    Input::Tick
                }
                Action::Active(arn) => {
                    info!(consumer = %self.name, %arn, "stream consumer active");
                    return Ok(arn);
                }
                Action::Fail(error) => return Err(error),
            };
            action = machine.handle(input, Instant::now());
        }
    }

    /// The stream's ARN (`DescribeStreamSummary`), for a stream named by name.
    async fn describe_stream(&self) -> Result<String, CallFailure> {
        let summary = within(
            self.call_timeout,
            self.client
                .describe_stream_summary()
                .set_stream_name(self.stream.name().map(str::to_owned))
                .send(),
        )
        .await?;
        Ok(summary
            .stream_description_summary
            .map(|s| s.stream_arn)
            .unwrap_or_default())
    }

    /// What `DescribeStreamConsumer` says about the consumer of this name.
    async fn describe_consumer(&self, stream_arn: &str) -> Result<Found, CallFailure> {
        let output = within(
            self.call_timeout,
            self.client
                .describe_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(&self.name)
                .send(),
        )
        .await?;
        Ok(match output.consumer_description {
            Some(d) if d.consumer_status == ConsumerStatus::Active => Found::Active(d.consumer_arn),
            Some(d) if d.consumer_status == ConsumerStatus::Deleting => Found::Deleting,
            Some(_) => Found::Creating,
            None => Found::Absent,
        })
    }

    async fn register(&self, stream_arn: &str) -> Result<(), CallFailure> {
        within(
            self.call_timeout,
            self.client
                .register_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(&self.name)
                .send(),
        )
        .await
        .map(|_| ())
    }
}

/// The delays between looks at the consumer while it is not `ACTIVE`.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// What `DescribeStreamConsumer` said about the consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// `ACTIVE`, with its ARN.
    Active(String),
    /// `CREATING` (or a status this version does not know).
    Creating,
    /// `DELETING`.
    Deleting,
    /// No such consumer.
    Absent,
}

/// Where finding the consumer is: exactly one of these at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// `DescribeStreamSummary` was sent (for the stream's ARN).
    DescribingStream,
    /// `DescribeStreamConsumer` was sent.
    DescribingConsumer,
    /// `RegisterStreamConsumer` was sent.
    Registering,
    /// Waiting until `until` to look again.
    Waiting { until: Instant },
    /// Found `ACTIVE`, or failed.
    Done,
}

/// What happened, as fed to [`Registering::handle`]: the answer to the last [`Action`].
#[derive(Debug)]
pub(crate) enum Input {
    /// Time passed: a wait ended.
    Tick,
    /// `DescribeStreamSummary`'s answer: the stream's ARN.
    StreamDescribed(Result<String, CallFailure>),
    /// `DescribeStreamConsumer`'s answer.
    ConsumerDescribed(Result<Found, CallFailure>),
    /// `RegisterStreamConsumer`'s answer.
    Registered(Result<(), CallFailure>),
}

/// What the task finding the consumer must do; each but the last two is answered with an
/// [`Input`].
#[derive(Debug)]
pub(crate) enum Action {
    /// Ask for the stream's ARN; answer with [`Input::StreamDescribed`].
    DescribeStream,
    /// Look at the consumer; answer with [`Input::ConsumerDescribed`].
    DescribeConsumer { stream_arn: String },
    /// Register the consumer; answer with [`Input::Registered`].
    Register { stream_arn: String },
    /// Wait until `until`, then answer with [`Input::Tick`].
    Wait { until: Instant },
    /// The consumer is `ACTIVE`, with this ARN.
    Active(String),
    /// It could not be had: trying again cannot help, or the register timeout passed.
    Fail(Error),
}

/// Finding the stream consumer, registering it if absent, and waiting until it is `ACTIVE`, by
/// the register timeout: a pure state machine, `(step, input, now) -> action`.
#[derive(Debug)]
pub(crate) struct Registering {
    consumer: String,
    /// The stream, to name it in errors.
    stream: String,
    /// Known from the start when the stream is named by ARN; else asked for once.
    stream_arn: Option<String>,
    started: Instant,
    deadline: Instant,
    /// The last status seen, for the error when the timeout passes.
    status: String,
    backoff: Backoff,
    rng: StdRng,
    step: Step,
}

impl Registering {
    /// Finding `consumer` of `stream`, started at `now`, given up `timeout` later; `seed` seeds
    /// the backoff's jitter.
    pub(crate) fn new(
        consumer: String,
        stream: &kinesis_calls::StreamRef,
        timeout: Duration,
        now: Instant,
        seed: u64,
    ) -> Self {
        Registering {
            consumer,
            stream: stream.to_string(),
            stream_arn: stream.arn().map(str::to_owned),
            started: now,
            deadline: now + timeout,
            status: "unknown".to_owned(),
            backoff: BACKOFF,
            rng: StdRng::seed_from_u64(seed),
            step: Step::Done,
        }
    }

    /// The first action: look at the consumer (with the stream's ARN first, if not known).
    pub(crate) fn start(&mut self) -> Action {
        self.look()
    }

    /// Takes in the answer to the last action, at `now`, and returns the next action. Once done
    /// (after [`Action::Active`] or [`Action::Fail`]), every input is answered with the timeout's
    /// error.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Action {
        let step = std::mem::replace(&mut self.step, Step::Done);
        match (step, input) {
            (Step::DescribingStream, Input::StreamDescribed(Ok(arn))) => {
                self.stream_arn = Some(arn);
                self.look()
            }
            (Step::DescribingStream, Input::StreamDescribed(Err(failure))) => {
                self.on_failure("DescribeStreamSummary", failure, now)
            }
            (Step::DescribingConsumer, Input::ConsumerDescribed(answer)) => match answer {
                Ok(Found::Active(arn)) => Action::Active(arn),
                Ok(Found::Creating) => self.again("CREATING", now),
                Ok(Found::Deleting) => self.again("DELETING", now),
                // Absent: register it; the next look sees it creating.
                Ok(Found::Absent) => self.register(),
                Err(failure) if failure.kind == ErrorKind::NotFound => self.register(),
                Err(failure) => self.on_failure("DescribeStreamConsumer", failure, now),
            },
            (Step::Registering, Input::Registered(answer)) => match answer {
                Ok(()) => self.wait(now),
                // Registered meanwhile by another worker, or still being deleted: look again.
                Err(failure) if failure.kind == ErrorKind::InUse => self.wait(now),
                // Too many consumers or registrations at once: wait and look again.
                Err(failure) => self.on_failure("RegisterStreamConsumer", failure, now),
            },
            (Step::Waiting { until }, Input::Tick) => {
                if now < until {
                    self.step = Step::Waiting { until };
                    Action::Wait { until }
                } else {
                    self.look()
                }
            }
            (Step::Done, _) => self.not_active(now),
            // An answer to an action not asked for: look again.
            (step, input) => {
                debug!(?step, ?input, "unexpected input; looking again");
                self.look()
            }
        }
    }

    fn look(&mut self) -> Action {
        match &self.stream_arn {
            Some(arn) => {
                self.step = Step::DescribingConsumer;
                Action::DescribeConsumer {
                    stream_arn: arn.clone(),
                }
            }
            None => {
                self.step = Step::DescribingStream;
                Action::DescribeStream
            }
        }
    }

    fn register(&mut self) -> Action {
        self.status = "absent".to_owned();
        match &self.stream_arn {
            Some(arn) => {
                self.step = Step::Registering;
                Action::Register {
                    stream_arn: arn.clone(),
                }
            }
            // Cannot happen: the consumer was looked at with the stream's ARN.
            None => self.look(),
        }
    }

    fn on_failure(
        &mut self,
        operation: &'static str,
        failure: CallFailure,
        now: Instant,
    ) -> Action {
        if failure.is_retryable() {
            debug!(operation, code = %failure.code, "stream consumer call failed; trying again");
            self.again(&failure.code, now)
        } else {
            Action::Fail(Error::kinesis(operation, self.stream.clone(), failure))
        }
    }

    /// Not `ACTIVE` yet (`status`): look again after the backoff.
    fn again(&mut self, status: &str, now: Instant) -> Action {
        status.clone_into(&mut self.status);
        self.wait(now)
    }

    /// Waits before the next look, by the deadline at the latest; past it, gives up.
    fn wait(&mut self, now: Instant) -> Action {
        if now >= self.deadline {
            return self.not_active(now);
        }
        let delay = self.backoff.next(self.rng.random::<f64>());
        let until = now + delay.min(self.deadline - now);
        self.step = Step::Waiting { until };
        Action::Wait { until }
    }

    fn not_active(&mut self, now: Instant) -> Action {
        self.step = Step::Done;
        Action::Fail(Error::ConsumerNotActive {
            consumer: self.consumer.clone(),
            stream: self.stream.clone(),
            waited: now.duration_since(self.started),
            status: self.status.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
