//! What happens when the application's processor fails: the [`FailurePolicy`] set on the
//! builder, the dead-letter handler it may call, and what a failure carries.
//!
//! A batch *fails* when [`ShardProcessor::process`](crate::ShardProcessor::process) returns an
//! error or panics. The policy first retries the same batch with the same processor, after a
//! jittered backoff, a bounded number of times or for a bounded time; a panic is not retried on
//! the instance that panicked (its state may be broken): the shard's processor is restarted
//! instead. Once the retries are spent, the policy's last step applies:
//!
//! - [`Then::Restart`] (the default): the processor is told `shutdown_requested` (it may
//!   checkpoint what it processed before the failed batch, never the batch itself), a new one is
//!   made and initialized from the last checkpoint, and reading starts again from there; the
//!   failed batch comes again. Restarts back off like retries. Nothing is lost and nothing is
//!   skipped; while the batch keeps failing the shard does not move on, and every failure is
//!   logged (warning, then error at each restart), counted, and shown by
//!   [`Running::status`](crate::Running::status) as `Failing`.
//! - [`Then::Release`]: the processor is told `shutdown_requested` and the lease released, so that
//!   another worker (or this one, later) tries from the last checkpoint.
//! - [`Then::DeadLetter`]: the batch is handed to the application's handler; once the handler
//!   succeeds, the shard checkpoints past the batch and goes on. A handler that fails is called
//!   again with backoff until it succeeds (the batch is never skipped unhandled).
//!
//! The default retries 10 times (100 ms to 30 s backoff), then restarts, and goes on doing so:
//! it neither loses records nor stalls silently, which is the only safe default for a library
//! that cannot know whether the application may skip data.

use std::{fmt, future::Future, num::NonZeroU32, pin::Pin, sync::Arc, time::Duration};

use crate::{error::BoxError, processor::Record};

/// A boxed future returned by a dead-letter handler.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

type Handler = Arc<dyn Fn(DeadLetter) -> HandlerFuture + Send + Sync>;

/// What to do with a batch whose processing failed, set with
/// [`ConsumerBuilder::on_failure`](crate::ConsumerBuilder::on_failure).
#[derive(Clone)]
pub struct FailurePolicy {
    pub(crate) attempts: NonZeroU32,
    pub(crate) within: Option<Duration>,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) then: Then,
}

/// The last step of a [`FailurePolicy`], once its retries are spent.
#[derive(Clone)]
#[non_exhaustive]
pub enum Then {
    /// Restart the shard's processor from the last checkpoint (a new processor, reading again
    /// from there).
    Restart,
    /// Release the lease, so that another worker tries from the last checkpoint.
    Release,
    /// Hand the batch to this handler, then go on past it.
    DeadLetter(DeadLetterHandler),
}

/// The application's dead-letter handler (see [`FailurePolicy::then_dead_letter`]).
#[derive(Clone)]
pub struct DeadLetterHandler(pub(crate) Handler);

impl fmt::Debug for DeadLetterHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeadLetterHandler")
    }
}

impl fmt::Debug for Then {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Then::Restart => f.write_str("Restart"),
            Then::Release => f.write_str("Release"),
            Then::DeadLetter(_) => f.write_str("DeadLetter"),
        }
    }
}

impl fmt::Debug for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailurePolicy")
            .field("attempts", &self.attempts)
            .field("within", &self.within)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("then", &self.then)
            .finish()
    }
}

/// Attempts of the default policy.
const DEFAULT_ATTEMPTS: NonZeroU32 = match NonZeroU32::new(10) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

impl Default for FailurePolicy {
    /// 10 attempts with a jittered backoff from 100 ms to 30 s, then a restart from the last
    /// checkpoint, again and again.
    fn default() -> Self {
        FailurePolicy {
            attempts: DEFAULT_ATTEMPTS,
            within: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            then: Then::Restart,
        }
    }
}

impl FailurePolicy {
    /// Try a failed batch at most `attempts` times in all (the first included), then take the
    /// last step (by default, restart the processor).
    pub fn retry(attempts: NonZeroU32) -> Self {
        FailurePolicy {
            attempts,
            ..Self::default()
        }
    }

    /// No retry: take the last step at the first failure.
    pub fn no_retry() -> Self {
        Self::retry(NonZeroU32::MIN)
    }

    /// Also stop retrying once the batch has been failing for this long.
    #[must_use]
    pub fn within(mut self, limit: Duration) -> Self {
        self.within = Some(limit);
        self
    }

    /// The backoff between attempts: exponential from `min` to `max`, each delay jittered
    /// (default 100 ms to 30 s). Restarts back off the same way. A zero `min`, or a `min` above
    /// `max` (the two swapped), makes the builder's `build` fail with
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming `on_failure`.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    /// Once the retries are spent, restart the shard's processor from the last checkpoint (the
    /// default).
    #[must_use]
    pub fn then_restart(mut self) -> Self {
        self.then = Then::Restart;
        self
    }

    /// Once the retries are spent, release the lease so that another worker tries.
    #[must_use]
    pub fn then_release(mut self) -> Self {
        self.then = Then::Release;
        self
    }

    /// Once the retries are spent, hand the batch to `handler` and go on: the shard checkpoints
    /// past the batch only once the handler has returned `Ok`. A handler that fails is called
    /// again, with backoff, until it succeeds (or the lease is lost or the worker shuts down;
    /// then the batch comes again to whoever takes the shard).
    ///
    /// ```
    /// use kinesis_consumer::{DeadLetter, FailurePolicy};
    /// # use std::num::NonZeroU32;
    /// let policy = FailurePolicy::retry(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN))
    ///     .then_dead_letter(|letter: DeadLetter| async move {
    ///         eprintln!("{} records of {} set aside: {}", letter.records.len(), letter.shard_id, letter.error);
    ///         Ok(())
    ///     });
    /// ```
    #[must_use]
    pub fn then_dead_letter<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(DeadLetter) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.then = Then::DeadLetter(DeadLetterHandler(Arc::new(move |letter| {
            Box::pin(handler(letter))
        })));
        self
    }

    /// The last step.
    pub fn then(&self) -> &Then {
        &self.then
    }

    /// The delay before attempt `attempt + 1` (attempt counts from 1), jittered by `unit` in
    /// `0..1`: exponential from the minimum, capped, then between half and all of it.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self
            .min_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// Why a callback failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureCause {
    /// It returned this error (its text; the error itself is in the log).
    Error(String),
    /// It panicked with this message.
    Panic(String),
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Error(text) => write!(f, "returned an error: {text}"),
            FailureCause::Panic(text) => write!(f, "panicked: {text}"),
        }
    }
}

/// A batch handed to the dead-letter handler.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The shard.
    pub shard_id: Arc<str>,
    /// The batch's user records, in order.
    pub records: Vec<Record>,
    /// The last failure.
    pub error: FailureCause,
    /// How many times the batch was tried.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_the_bounds_and_are_jittered() {
        let policy =
            FailurePolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(2));
        let at = |attempt, unit| policy.delay(attempt, unit);
        assert_eq!(at(1, 1.0), Duration::from_millis(100));
        assert_eq!(at(2, 1.0), Duration::from_millis(200));
        assert_eq!(at(5, 1.0), Duration::from_millis(1600));
        assert_eq!(at(6, 1.0), Duration::from_secs(2));
        assert_eq!(at(40, 1.0), Duration::from_secs(2));
        assert_eq!(at(1, 0.0), Duration::from_millis(50));
        assert_eq!(at(40, 0.5), Duration::from_millis(1500));
    }
}
