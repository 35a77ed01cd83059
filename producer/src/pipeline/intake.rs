//! Where `put` leaves admitted records for the pipeline's task: the edge between the
//! application's threads and the task (a lock and a `Notify`; not part of the pure core).

use std::sync::{Mutex, MutexGuard, PoisonError};

use kinesis_aggregation::{RecordSlab, UserRecord};
use tokio::sync::Notify;

use crate::{
    error::Error,
    receipt::{self, Cells, Failure, Receipt},
};

/// A record on its way from `put` to the pipeline, in the [`Intake`]: only what must cross
/// threads, as few bytes per record as possible.
pub(super) struct Admitted {
    record: Option<UserRecord>,
    tx: Option<receipt::Sender>,
}

impl Admitted {
    pub(super) fn new(record: UserRecord, tx: receipt::Sender) -> Self {
        Admitted {
            record: Some(record),
            tx: Some(tx),
        }
    }

    /// Takes the record and its receipt's sender out, for the pipeline to resolve.
    pub(super) fn take(&mut self) -> (Option<UserRecord>, Option<receipt::Sender>) {
        (self.record.take(), self.tx.take())
    }
}

impl Drop for Admitted {
    /// Whatever tears the pipeline down before it takes the record in, the receipt still
    /// resolves and hands the record back.
    fn drop(&mut self) {
        if let (Some(tx), Some(record)) = (self.tx.take(), self.record.take()) {
            tx.send(Err(Box::new(Failure::new(Error::Cancelled, record))));
        }
    }
}

/// Where `put` leaves admitted records for the pipeline: a vector under the same lock that
/// hands out receipt cells and slab space, so passing a record on costs no atomic operation of its
/// own; the pipeline takes the whole vector at once.
pub(crate) struct Intake {
    stage: Mutex<Stage>,
    /// Signalled when the vector stops being empty.
    pub(super) notify: Notify,
}

struct Stage {
    cells: Cells,
    slab: RecordSlab,
    records: Vec<Admitted>,
    /// Cleared when the pipeline stops taking records.
    open: bool,
}

impl Intake {
    pub(crate) fn new(slab: RecordSlab) -> Self {
        Intake {
            stage: Mutex::new(Stage {
                cells: Cells::default(),
                slab,
                records: Vec::new(),
                open: true,
            }),
            notify: Notify::new(),
        }
    }

    fn stage(&self) -> MutexGuard<'_, Stage> {
        // Nothing panics while holding the lock; a poisoned stage is still consistent.
        self.stage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves a record for the pipeline and returns its receipt; hands the record back if the
    /// pipeline no longer takes any.
    pub(crate) fn admit(&self, record: UserRecord) -> Result<Receipt, UserRecord> {
        let (receipt, first, original) = {
            let mut stage = self.stage();
            if !stage.open {
                return Err(record);
            }
            let (kept, original) = match stage.slab.copy(&record) {
                Some(copy) => (copy, Some(record)),
                None => (record, None),
            };
            let (tx, receipt) = stage.cells.pair();
            stage.records.push(Admitted::new(kept, tx));
            (receipt, stage.records.len() == 1, original)
        };
        // The application's record, copied into a slab, is freed here on its own thread.
        drop(original);
        if first {
            self.notify.notify_one();
        }
        Ok(receipt)
    }

    /// Takes every record left so far (`into` must be empty; it is swapped in, to reuse its
    /// allocation).
    pub(super) fn take(&self, into: &mut Vec<Admitted>) {
        std::mem::swap(&mut self.stage().records, into);
    }

    /// Stops taking records; returns those left.
    pub(super) fn close(&self) -> Vec<Admitted> {
        let mut stage = self.stage();
        stage.open = false;
        std::mem::take(&mut stage.records)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(n: u8) -> UserRecord {
        UserRecord::new(format!("key-{n}"), vec![n; 10]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn the_intake_hands_records_over_in_order_and_refuses_them_once_closed() {
        let intake = Intake::new(RecordSlab::new(1024, 4096));
        let receipts: Vec<_> = (0..3)
            .map(|n| {
                intake
                    .admit(record(n))
                    .unwrap_or_else(|_| panic!("refused"))
            })
            .collect();
        let mut taken = Vec::new();
        intake.take(&mut taken);
        let keys: Vec<_> = taken
            .iter()
            .filter_map(|a| a.record.as_ref().map(|r| r.partition_key().to_owned()))
            .collect();
        assert_eq!(keys, ["key-0", "key-1", "key-2"]);
        let left = intake
            .admit(record(3))
            .unwrap_or_else(|_| panic!("refused"));
        // Closing hands back what was left; a record admitted after is refused with itself.
        let remaining = intake.close();
        assert_eq!(remaining.len(), 1);
        assert_eq!(intake.admit(record(4)).err(), Some(record(4)));
        // Records dropped before the pipeline took them in resolve as cancelled, with the
        // record, whichever way they are dropped.
        drop(taken);
        drop(remaining);
        for (n, receipt) in receipts.into_iter().chain([left]).enumerate() {
            let failure = receipt.await.err().unwrap_or_else(|| panic!("delivered"));
            assert!(matches!(failure.error, Error::Cancelled));
            assert_eq!(failure.record, record(n as u8));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_left_in_the_intake_wakes_the_pipeline_once() {
        let intake = Intake::new(RecordSlab::new(1024, 4096));
        let _first = intake.admit(record(0));
        let _second = intake.admit(record(1));
        // One stored notification for the two records; none left after it is taken.
        intake.notify.notified().await;
        let mut taken = Vec::new();
        intake.take(&mut taken);
        assert_eq!(taken.len(), 2);
        let again = tokio::time::timeout(Duration::from_millis(20), intake.notify.notified());
        assert!(again.await.is_err());
    }
}
