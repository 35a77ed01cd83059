//! Flushes: which records each flush waits for, counted by epoch.
//!
//! Every admitted record belongs to the epoch open when it was admitted. A flush closes the open
//! epoch and completes once that epoch and every earlier one have no unresolved record left;
//! records admitted after it (in a later epoch) do not hold it.

use std::collections::VecDeque;

/// A flush, as the driver names it.
pub(super) type FlushToken = u64;

/// The records outstanding per epoch, and the flushes waiting for them.
pub(super) struct Flushes {
    /// Records admitted and not yet resolved.
    outstanding: usize,
    /// Unresolved records per epoch, oldest first; the last is the open epoch.
    epochs: VecDeque<usize>,
    /// The epoch at the front of `epochs`.
    base: u64,
    /// Flushes waiting, each with the last epoch it waits for, in the order asked.
    waiters: Vec<(u64, FlushToken)>,
}

impl Flushes {
    pub(super) fn new() -> Self {
        Flushes {
            outstanding: 0,
            epochs: VecDeque::from([0]),
            base: 0,
            waiters: Vec::new(),
        }
    }

    /// Records admitted and not yet resolved.
    pub(super) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Whether a flush is waiting.
    pub(super) fn waiting(&self) -> bool {
        !self.waiters.is_empty()
    }

    fn open_epoch(&self) -> u64 {
        self.base + self.epochs.len() as u64 - 1
    }

    /// Counts a record admitted now; returns its epoch.
    pub(super) fn admit(&mut self) -> u64 {
        if let Some(count) = self.epochs.back_mut() {
            *count += 1;
        }
        self.outstanding += 1;
        self.open_epoch()
    }

    /// Counts a record of `epoch` resolved. True when the oldest epoch has emptied: flushes may
    /// be complete (see [`complete`](Self::complete)).
    pub(super) fn settle(&mut self, epoch: u64) -> bool {
        debug_assert!(self.outstanding > 0, "a record settled twice");
        self.outstanding = self.outstanding.saturating_sub(1);
        let Some(index) = epoch.checked_sub(self.base) else {
            return false;
        };
        match self.epochs.get_mut(index as usize) {
            Some(count) => {
                *count = count.saturating_sub(1);
                index == 0 && *count == 0
            }
            None => false,
        }
    }

    /// A flush asked now: it waits for every record admitted so far. Call
    /// [`complete`](Self::complete) next (it may be complete at once).
    pub(super) fn ask(&mut self, token: FlushToken) {
        self.waiters.push((self.open_epoch(), token));
        self.epochs.push_back(0);
    }

    /// Hands over the flushes whose records are all resolved, in the order asked.
    pub(super) fn complete(&mut self, mut done: impl FnMut(FlushToken)) {
        while self.epochs.len() > 1 && self.epochs.front() == Some(&0) {
            self.epochs.pop_front();
            self.base += 1;
        }
        let base = self.base;
        self.waiters.retain(|&(epoch, token)| {
            if epoch < base {
                done(token);
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(flushes: &mut Flushes) -> Vec<FlushToken> {
        let mut done = Vec::new();
        flushes.complete(|token| done.push(token));
        done
    }

    #[test]
    fn a_flush_with_nothing_outstanding_completes_at_once() {
        let mut flushes = Flushes::new();
        flushes.ask(7);
        assert_eq!(completed(&mut flushes), [7]);
        assert!(!flushes.waiting());
    }

    #[test]
    fn a_flush_waits_for_earlier_records_only_and_flushes_complete_in_order() {
        let mut flushes = Flushes::new();
        let a = flushes.admit();
        flushes.ask(1);
        let b = flushes.admit();
        flushes.ask(2);
        let c = flushes.admit();
        assert_eq!(completed(&mut flushes), Vec::<FlushToken>::new());
        // The record after both flushes holds neither.
        assert!(!flushes.settle(c));
        assert_eq!(completed(&mut flushes), Vec::<FlushToken>::new());
        // The second flush's own record resolves first: it still waits for the first's.
        assert!(!flushes.settle(b));
        assert_eq!(completed(&mut flushes), Vec::<FlushToken>::new());
        assert!(flushes.settle(a));
        assert_eq!(completed(&mut flushes), [1, 2]);
        assert_eq!(flushes.outstanding(), 0);
    }
}
