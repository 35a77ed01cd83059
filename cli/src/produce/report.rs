//! What `produce` reports: each failed line as `FILE:LINE: CODE: reason`, counts per code, and
//! the summary line. Pure apart from the atomics the progress display reads.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use kinesis_producer::{Error, Failure, InStream, RecordError};

use crate::progress::{bytes, thousands};

use super::key::KeyError;

/// Failed lines listed one by one before only their counts are kept.
pub(crate) const LISTED_FAILURES: usize = 10;

/// Why one line was not delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineFailure {
    /// A short code, counted per code: the service's error code, or one of ours
    /// (`RecordTooLarge`, `NotJson`, `NoTab`, ...).
    pub(crate) code: String,
    /// What happened, in one line.
    pub(crate) message: String,
}

impl LineFailure {
    /// A line whose key could not be found.
    pub(crate) fn key(error: &KeyError) -> LineFailure {
        LineFailure {
            code: error.code().to_owned(),
            message: error.to_string(),
        }
    }

    /// A line too long to be kept: more than `max` bytes, so over the record limit whatever its
    /// key.
    pub(crate) fn too_long(len: u64, max: usize) -> LineFailure {
        LineFailure {
            code: "RecordTooLarge".to_owned(),
            message: format!(
                "the line is {len} bytes; a record (partition key + data) is at most {max} bytes"
            ),
        }
    }

    /// A record the producer refused or could not deliver.
    pub(crate) fn producer(failure: &Failure) -> LineFailure {
        let mut message = failure.error.to_string();
        match failure.attempts.len() {
            0 => {}
            1 => message.push_str(" (1 attempt)"),
            n => message.push_str(&format!(" ({n} attempts)")),
        }
        if failure.in_stream() == InStream::Possibly {
            message.push_str("; it may be in the stream anyway (an answer was lost)");
        }
        LineFailure {
            code: code_of(&failure.error),
            message,
        }
    }
}

/// The code of a producer error: the service's, or a name for the producer's own.
fn code_of(error: &Error) -> String {
    let own = match error {
        Error::InvalidRecord(RecordError::RecordTooLarge { .. }) => "RecordTooLarge",
        Error::InvalidRecord(RecordError::EmptyPartitionKey { .. }) => "EmptyPartitionKey",
        Error::InvalidRecord(RecordError::PartitionKeyTooLong { .. }) => "PartitionKeyTooLong",
        Error::InvalidRecord(_) => "InvalidRecord",
        Error::Expired { .. } => "Expired",
        Error::ShutDown => "ShutDown",
        Error::Cancelled => "Cancelled",
        other => return other.code().unwrap_or("Error").to_owned(),
    };
    own.to_owned()
}

/// A record whose partition key the aggregation crate refused (empty, too long).
pub(crate) fn bad_key(error: &RecordError) -> LineFailure {
    let code = match error {
        RecordError::EmptyPartitionKey { .. } => "EmptyPartitionKey",
        RecordError::PartitionKeyTooLong { .. } => "PartitionKeyTooLong",
        _ => "InvalidRecord",
    };
    LineFailure {
        code: code.to_owned(),
        message: error.to_string(),
    }
}

/// The failures so far: the first [`LISTED_FAILURES`] as lines, and counts per code.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    listed: Vec<String>,
    per_code: BTreeMap<String, u64>,
    total: u64,
}

impl Failures {
    /// Counts a failure of line `line` of `file`; returns its report line while it is among the
    /// first [`LISTED_FAILURES`].
    pub(crate) fn add(&mut self, file: &str, line: u64, failure: &LineFailure) -> Option<String> {
        self.total += 1;
        *self.per_code.entry(failure.code.clone()).or_default() += 1;
        if self.listed.len() >= LISTED_FAILURES {
            return None;
        }
        let text = format!("{file}:{line}: {}: {}", failure.code, failure.message);
        self.listed.push(text.clone());
        Some(text)
    }

    /// Failures counted.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The report for stderr: the listed failures, then one line of counts per code.
    pub(crate) fn report(&self) -> Vec<String> {
        if self.total == 0 {
            return Vec::new();
        }
        let mut lines = self.listed.clone();
        if self.total > self.listed.len() as u64 {
            lines.push(format!(
                "... and {} more failed lines",
                thousands(self.total - self.listed.len() as u64)
            ));
        }
        let counts: Vec<String> = self
            .per_code
            .iter()
            .map(|(code, n)| format!("{} {code}", thousands(*n)))
            .collect();
        lines.push(format!(
            "failed: {} ({})",
            thousands(self.total),
            counts.join(", ")
        ));
        lines
    }
}

/// Counters the progress display and the summary read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records acknowledged by Kinesis.
    pub(crate) sent: AtomicU64,
    /// Their payload bytes (without keys).
    pub(crate) sent_bytes: AtomicU64,
    /// Lines that failed.
    pub(crate) failed: AtomicU64,
    /// Empty lines skipped (`--skip-empty`).
    pub(crate) skipped: AtomicU64,
}

impl Counters {
    pub(crate) fn get(&self, counter: &AtomicU64) -> u64 {
        let _ = self;
        counter.load(Ordering::Relaxed)
    }
}

/// A reading of the counters, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) sent: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) failed: u64,
    pub(crate) skipped: u64,
    /// Lines still unresolved when the command stopped waiting (after Ctrl-C's grace period).
    pub(crate) unresolved: u64,
}

impl Totals {
    /// The counters now, with `unresolved` lines given up on.
    pub(crate) fn read(counters: &Counters, unresolved: u64) -> Totals {
        Totals {
            sent: counters.get(&counters.sent),
            sent_bytes: counters.get(&counters.sent_bytes),
            failed: counters.get(&counters.failed),
            skipped: counters.get(&counters.skipped),
            unresolved,
        }
    }
}

/// `count` per second over `elapsed`, rounded.
pub(crate) fn rate(count: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs).round() as u64
    } else {
        0
    }
}

/// The summary line on stdout, for example
/// `sent 1,000 records (12.3 KiB) in 1.2 s (833 records/s, 10.2 KiB/s), 0 failed`.
pub(crate) fn summary(totals: Totals, elapsed: Duration) -> String {
    let mut line = format!(
        "sent {} records ({}) in {:.1} s ({} records/s, {}/s), {} failed",
        thousands(totals.sent),
        bytes(totals.sent_bytes),
        elapsed.as_secs_f64(),
        thousands(rate(totals.sent, elapsed)),
        bytes(rate(totals.sent_bytes, elapsed)),
        thousands(totals.failed),
    );
    if totals.skipped > 0 {
        line.push_str(&format!(
            ", {} empty lines skipped",
            thousands(totals.skipped)
        ));
    }
    if totals.unresolved > 0 {
        line.push_str(&format!(
            ", {} unresolved when stopped (not known to be delivered)",
            thousands(totals.unresolved)
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_listed_then_counted() {
        let mut failures = Failures::default();
        let too_long = LineFailure::too_long(2_000_000, 1_048_576);
        let no_tab = LineFailure::key(&KeyError::NoTab);
        assert_eq!(
            failures.add("a.txt", 3, &too_long).as_deref(),
            Some(
                "a.txt:3: RecordTooLarge: the line is 2000000 bytes; a record (partition key + \
                 data) is at most 1048576 bytes"
            )
        );
        for line in 4..14 {
            failures.add("-", line, &no_tab);
        }
        assert_eq!(failures.total(), 11);
        let report = failures.report();
        assert_eq!(report.len(), LISTED_FAILURES + 2);
        assert_eq!(
            report[1],
            "-:4: NoTab: no TAB between the key and the payload"
        );
        assert_eq!(report[10], "... and 1 more failed lines");
        assert_eq!(report[11], "failed: 11 (10 NoTab, 1 RecordTooLarge)");
        assert!(Failures::default().report().is_empty());
    }

    #[test]
    fn producer_errors_carry_the_code() {
        let rejected = Error::Rejected {
            kind: kinesis_producer::ErrorKind::Rejected,
            stream: "s".into(),
            code: "ValidationException".into(),
            message: "bad".into(),
            request_id: None,
        };
        assert_eq!(code_of(&rejected), "ValidationException");
        let expired = Error::Expired {
            ttl: Duration::from_secs(30),
            last_error: Some("ProvisionedThroughputExceededException".into()),
        };
        assert_eq!(code_of(&expired), "Expired");
        let too_large = Error::InvalidRecord(RecordError::RecordTooLarge { size: 2, max: 1 });
        assert_eq!(code_of(&too_large), "RecordTooLarge");
        assert_eq!(code_of(&Error::ShutDown), "ShutDown");
        let empty = RecordError::EmptyPartitionKey { max: 256 };
        assert_eq!(bad_key(&empty).code, "EmptyPartitionKey");
    }

    #[test]
    fn summary_reads_well() {
        let totals = Totals {
            sent: 1000,
            sent_bytes: 12 * 1024,
            failed: 2,
            skipped: 0,
            unresolved: 0,
        };
        assert_eq!(
            summary(totals, Duration::from_secs(2)),
            "sent 1,000 records (12.0 KiB) in 2.0 s (500 records/s, 6.0 KiB/s), 2 failed"
        );
        let stopped = Totals {
            skipped: 3,
            unresolved: 7,
            ..totals
        };
        assert_eq!(
            summary(stopped, Duration::from_secs(2)),
            "sent 1,000 records (12.0 KiB) in 2.0 s (500 records/s, 6.0 KiB/s), 2 failed, 3 \
             empty lines skipped, 7 unresolved when stopped (not known to be delivered)"
        );
    }
}
