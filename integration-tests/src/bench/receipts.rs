//! The receipts of a benchmark's puts: awaited by a task of their own, so the put loop never
//! waits on them, and tallied ([`Tally`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kinesis_producer::{Error as ProducerError, Failure, Receipt};
use tokio::sync::mpsc;

/// The error code of a throttled `PutRecords` entry.
pub const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// Receipts with the index of their record and, when timed, when `put` returned it, sent to the
/// tallying task in chunks.
pub type ReceiptChunk = Vec<(u64, Receipt, Option<Instant>)>;

/// What the receipts said.
#[derive(Debug, Default)]
pub struct Tally {
    /// Records delivered.
    pub delivered: u64,
    /// Records that finally failed, per kind (see [`failure_kind`]).
    pub failures: BTreeMap<String, u64>,
    /// Records `put` refused (set by the caller, which saw the refusals).
    pub refused: u64,
    /// `PutRecords` attempts over every record, delivered or failed.
    pub attempts: u64,
    /// Attempts answered with a throttling error.
    pub throttled_attempts: u64,
    /// Delivered records throttled at least once.
    pub records_throttled: u64,
    /// (sequence number, subsequence number, record index) of every delivery, when kept.
    pub acked: Vec<(String, u64, u64)>,
    /// When the last receipt resolved.
    pub finished: Option<Instant>,
    /// From `put` returning to the receipt resolving, for each timed delivery (as the tallying
    /// task sees it resolve: it awaits the receipts in put order).
    pub latencies: Vec<Duration>,
}

impl Tally {
    /// Adds what `earlier` counted (records put before, on the same producer) to this tally's
    /// counts; its deliveries' positions and latencies are not kept.
    pub fn add_counts(&mut self, earlier: &Tally) {
        self.delivered += earlier.delivered;
        for (kind, n) in &earlier.failures {
            *self.failures.entry(kind.clone()).or_default() += n;
        }
        self.refused += earlier.refused;
        self.attempts += earlier.attempts;
        self.throttled_attempts += earlier.throttled_attempts;
        self.records_throttled += earlier.records_throttled;
    }

    /// The `q` quantile (0 to 1) of the timed deliveries' latencies, if any were timed.
    pub fn latency_quantile(&mut self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1);
        Some(self.latencies[index])
    }

    /// Records that finally failed, every kind together.
    pub fn failed_total(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The failures by kind, as ` (kind: n, ...)`, or nothing when none failed.
    pub fn failures_text(&self) -> String {
        if self.failures.is_empty() {
            return String::new();
        }
        let kinds: Vec<String> = self
            .failures
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        format!(" ({})", kinds.join(", "))
    }
}

/// A task awaiting receipts as they come, so the put loop never waits on them; with `keep`, it
/// keeps where each delivered record went ([`Tally::acked`]). The tally is returned once the
/// sender is dropped and every receipt sent has resolved.
pub fn spawn_receipt_consumer(
    keep: bool,
) -> (
    mpsc::UnboundedSender<ReceiptChunk>,
    tokio::task::JoinHandle<Tally>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ReceiptChunk>();
    let task = tokio::spawn(async move {
        let mut tally = Tally::default();
        while let Some(chunk) = rx.recv().await {
            for (index, receipt, put_at) in chunk {
                match receipt.await {
                    Ok(delivery) => {
                        if let Some(put_at) = put_at {
                            tally.latencies.push(put_at.elapsed());
                        }
                        tally.delivered += 1;
                        tally.attempts += delivery.attempts().len() as u64;
                        let throttled = delivery
                            .attempts()
                            .iter()
                            .filter(|a| a.error.as_ref().is_some_and(|e| e.code == THROTTLED))
                            .count() as u64;
                        tally.throttled_attempts += throttled;
                        tally.records_throttled += u64::from(throttled > 0);
                        if keep {
                            tally.acked.push((
                                delivery.sequence_number().to_owned(),
                                delivery.sub_sequence_number(),
                                index,
                            ));
                        }
                    }
                    Err(failure) => {
                        tally.attempts += failure.attempts.len() as u64;
                        *tally.failures.entry(failure_kind(&failure)).or_default() += 1;
                    }
                }
            }
        }
        tally.finished = Some(Instant::now());
        tally
    });
    (tx, task)
}

/// The kind of a failure, as the tally counts it.
pub fn failure_kind(failure: &Failure) -> String {
    match &failure.error {
        ProducerError::Expired { last_error, .. } => format!(
            "Expired (last error {})",
            last_error.as_deref().unwrap_or("none")
        ),
        ProducerError::Throttled { .. } => "Throttled".into(),
        ProducerError::Rejected { code, .. } => format!("Rejected ({code})"),
        ProducerError::Cancelled => "Cancelled".into(),
        ProducerError::ShutDown => "ShutDown".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_listed_by_kind() {
        let mut tally = Tally::default();
        assert_eq!(tally.failures_text(), "");
        tally.failures.insert("Throttled".into(), 2);
        tally.failures.insert("Cancelled".into(), 1);
        assert_eq!(tally.failed_total(), 3);
        assert_eq!(tally.failures_text(), " (Cancelled: 1, Throttled: 2)");
    }

    #[test]
    fn latency_quantiles_come_from_the_sorted_latencies() {
        let mut tally = Tally::default();
        assert_eq!(tally.latency_quantile(0.5), None);
        tally.latencies = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(tally.latency_quantile(0.5), Some(Duration::from_millis(51)));
        assert_eq!(
            tally.latency_quantile(0.99),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            tally.latency_quantile(1.0),
            Some(Duration::from_millis(100))
        );
    }
}
