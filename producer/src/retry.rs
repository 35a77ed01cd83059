//! What to do with each `PutRecords` answer: the one error classifier, the verdict per entry, and
//! the backoff between attempts.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use kinesis_aggregation::{HashKey, HashKeyRange};

/// How an error code is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The shard or the account is over a rate: slow down, then retry.
    Throttled,
    /// 5xx, timeouts, connection errors, expired credentials: retry with backoff.
    Transient,
    /// Validation, access, missing stream, KMS key problems: retrying cannot help.
    Fatal,
}

impl ErrorClass {
    /// The producer's three ways of handling a kind of failure, from the one classification both
    /// crates share ([`kinesis_calls::classify`]).
    pub(crate) fn of(kind: kinesis_calls::ErrorKind) -> ErrorClass {
        use kinesis_calls::ErrorKind;
        match kind {
            ErrorKind::Throttled => ErrorClass::Throttled,
            // A stream being updated (`ResourceInUseException`) takes writes again soon.
            ErrorKind::Transient | ErrorKind::InUse => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        }
    }
}

/// What to do with one entry of a `PutRecords` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Written where consumers will read every user record in it.
    Delivered,
    /// Written to a shard other than predicted but in range, or unaggregated: delivered, and the
    /// shard map is stale.
    DeliveredElsewhere,
    /// Written to a shard whose range does not hold every user record in the aggregate: a
    /// KCL-style consumer drops the whole aggregate, so every user record must be sent again.
    Resend,
    /// Written to a shard the map does not know yet: decide after the map is refreshed.
    Unverified,
}

/// The verdict for an entry that Kinesis wrote to `actual`, when the producer predicted
/// `predicted`. `actual_range` is the actual shard's range if the map knows it.
pub(crate) fn landed(
    predicted: &str,
    actual: &str,
    actual_range: Option<HashKeyRange>,
    aggregated: bool,
    mut user_hash_keys: impl Iterator<Item = HashKey>,
) -> Verdict {
    if actual == predicted {
        return Verdict::Delivered;
    }
    // Consumers filter only aggregated records by range (KCL behaviour); a plain record is read
    // wherever it lands.
    if !aggregated {
        return Verdict::DeliveredElsewhere;
    }
    match actual_range {
        None => Verdict::Unverified,
        Some(range) if user_hash_keys.all(|key| range.contains(key)) => Verdict::DeliveredElsewhere,
        Some(_) => Verdict::Resend,
    }
}

/// The jittered exponential backoff of one Kinesis record's retries, its jitter drawn from
/// `seed` (so that a test can replay it).
pub(crate) fn backoff(min: Duration, max: Duration, seed: u64) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .with_jitter_seed(seed)
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use ErrorClass::*;
        let table: &[(&str, Option<u16>, ErrorClass)] = &[
            (
                "ProvisionedThroughputExceededException",
                Some(400),
                Throttled,
            ),
            ("ProvisionedThroughputExceededException", None, Throttled),
            ("KMSThrottlingException", None, Throttled),
            ("LimitExceededException", Some(400), Throttled),
            ("ThrottlingException", Some(400), Throttled),
            ("InternalFailure", None, Transient),
            ("InternalFailure", Some(500), Transient),
            ("ServiceUnavailable", Some(503), Transient),
            ("RequestTimeout", None, Transient),
            ("ConnectionError", None, Transient),
            ("ExpiredTokenException", Some(400), Transient),
            ("ResourceNotFoundException", Some(400), Fatal),
            ("AccessDeniedException", Some(400), Fatal),
            ("ValidationException", Some(400), Fatal),
            ("InvalidArgumentException", Some(400), Fatal),
            ("KMSDisabledException", None, Fatal),
            ("KMSAccessDeniedException", None, Fatal),
            ("KMSNotFoundException", None, Fatal),
            ("KMSInvalidStateException", None, Fatal),
            ("KMSOptInRequired", None, Fatal),
            ("SomethingNew", Some(503), Transient),
            ("SomethingNew", Some(429), Throttled),
            ("SomethingNew", Some(403), Fatal),
            ("SomethingNew", None, Transient),
            ("TooManyRequestsException", Some(429), Throttled),
            ("SlowDown", Some(503), Throttled),
            ("ResourceInUseException", Some(400), Transient),
            // A request the SDK refused to send (a user error): trying again cannot help.
            ("DispatchFailure", None, Fatal),
        ];
        for (code, status, want) in table {
            assert_eq!(
                ErrorClass::of(kinesis_calls::classify(code, *status)),
                *want,
                "{code} {status:?}"
            );
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn landing_table() {
        let half = u128::MAX / 2;
        let low = HashKeyRange::new(HashKey::MIN, HashKey::new(half)).unwrap();
        let inside = [HashKey::new(1), HashKey::new(half)];
        let straddling = [HashKey::new(1), HashKey::new(half + 1)];
        let cases: &[(&str, Option<HashKeyRange>, bool, &[HashKey], Verdict)] = &[
            ("s-1", None, true, &straddling, Verdict::Delivered),
            ("s-2", Some(low), true, &inside, Verdict::DeliveredElsewhere),
            ("s-2", Some(low), true, &straddling, Verdict::Resend),
            ("s-2", None, true, &inside, Verdict::Unverified),
            (
                "s-2",
                None,
                false,
                &straddling[1..],
                Verdict::DeliveredElsewhere,
            ),
            (
                "s-2",
                Some(low),
                false,
                &straddling[1..],
                Verdict::DeliveredElsewhere,
            ),
        ];
        for (actual, range, aggregated, keys, want) in cases {
            let got = landed("s-1", actual, *range, *aggregated, keys.iter().copied());
            assert_eq!(got, *want, "{actual} {range:?} {aggregated}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let delays: Vec<_> = backoff(Duration::from_millis(100), Duration::from_secs(5), 7)
            .take(12)
            .collect();
        let again: Vec<_> = backoff(Duration::from_millis(100), Duration::from_secs(5), 7)
            .take(12)
            .collect();
        assert_eq!(delays, again, "the same seed, the same delays");
        assert_eq!(delays.len(), 12, "never runs out");
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        assert!(delays[8] >= Duration::from_secs(5), "{delays:?}");
    }
}
