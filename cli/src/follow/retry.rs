//! What `--follow` does with a line the producer could not deliver. A tailer runs unattended
//! for days, so a line is given up on only when the line itself is at fault; when the stream or
//! the service is (throttling for longer than the record TTL, a stream being deleted and made
//! again, credentials or a KMS key being fixed), the line is put again, for as long as it takes,
//! and the checkpoint stays below it. Reading waits meanwhile (the lines held are bounded), so
//! memory stays bounded and the files keep the rest. The Kinesis Agent also retries without a
//! limit.

use std::time::Duration;

use kinesis_producer::{Error, ErrorKind};

/// The first wait before a line that failed for a reason other than throttling is put again.
pub(crate) const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between two puts of one line.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

/// What to do after a line's record failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The line is at fault (too large, a bad key, refused as invalid): report it, skip it.
    Skip,
    /// Put it again after `wait`; the checkpoint does not pass it meanwhile.
    Retry { wait: Duration },
    /// The producer is being shut down: leave the line unresolved, so the checkpoint stays
    /// below it and a restart sends it.
    Stop,
}

/// The codes of a request refused as malformed: the line's own fault, never the stream's.
const INVALID: [&str; 2] = ["ValidationException", "InvalidArgumentException"];

/// What to do after a record failed with `error`, having been put again `retries` times.
pub(crate) fn after(error: &Error, retries: u32) -> Next {
    let backoff = || Next::Retry {
        wait: FIRST_WAIT
            .saturating_mul(1u32 << retries.min(5))
            .min(MAX_WAIT),
    };
    match error {
        Error::InvalidRecord(_) | Error::InvalidConfig { .. } => Next::Skip,
        Error::Rejected { code, .. } if INVALID.contains(&code.as_str()) => Next::Skip,
        Error::ShutDown | Error::Cancelled => Next::Stop,
        // The producer has already waited (a TTL's worth, or its own pacing): at once.
        Error::Expired { .. } | Error::Throttled { .. } => Next::Retry {
            wait: Duration::ZERO,
        },
        error if error.kind() == Some(ErrorKind::Throttled) => Next::Retry {
            wait: Duration::ZERO,
        },
        // Not found, access denied, a KMS key disabled, a start-up failure: what an operator
        // fixes. Slowly, until then.
        _ => backoff(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_producer::RecordError;

    fn rejected(kind: ErrorKind, code: &str) -> Error {
        Error::Rejected {
            kind,
            stream: "s".into(),
            code: code.into(),
            message: "m".into(),
            request_id: None,
        }
    }

    #[test]
    fn the_line_s_faults_are_skipped_the_stream_s_are_retried() {
        let now = Next::Retry {
            wait: Duration::ZERO,
        };
        let second = Next::Retry {
            wait: Duration::from_secs(1),
        };
        let table: Vec<(Error, Next)> = vec![
            (
                Error::InvalidRecord(RecordError::RecordTooLarge { size: 2, max: 1 }),
                Next::Skip,
            ),
            (
                rejected(ErrorKind::Rejected, "ValidationException"),
                Next::Skip,
            ),
            (
                rejected(ErrorKind::Rejected, "InvalidArgumentException"),
                Next::Skip,
            ),
            (
                Error::Expired {
                    ttl: Duration::from_secs(30),
                    last_error: Some("ProvisionedThroughputExceededException".into()),
                },
                now,
            ),
            (
                rejected(ErrorKind::Throttled, "KMSThrottlingException"),
                now,
            ),
            (
                rejected(ErrorKind::Rejected, "KMSDisabledException"),
                second,
            ),
            (
                rejected(ErrorKind::AccessDenied, "AccessDeniedException"),
                second,
            ),
            (
                rejected(ErrorKind::NotFound, "ResourceNotFoundException"),
                second,
            ),
            (rejected(ErrorKind::Transient, "InternalFailure"), second),
            (Error::ShutDown, Next::Stop),
            (Error::Cancelled, Next::Stop),
        ];
        for (error, next) in table {
            assert_eq!(after(&error, 0), next, "{error:?}");
        }
    }

    #[test]
    fn the_wait_doubles_up_to_thirty_seconds() {
        let error = rejected(ErrorKind::AccessDenied, "AccessDeniedException");
        let waits: Vec<u64> = (0..8)
            .map(|retries| match after(&error, retries) {
                Next::Retry { wait } => wait.as_secs(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            after(&error, u32::MAX),
            Next::Retry { wait: MAX_WAIT },
            "no overflow"
        );
    }
}
