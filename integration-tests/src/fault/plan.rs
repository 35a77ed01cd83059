//! What the engine does with one call ([`Plan`]), and how the faults fired for that call combine
//! into it ([`Plan::resolve`]): a pure function of the fired faults, tested without a network.

use std::sync::Arc;
use std::time::Duration;

use super::rule::{EntryErrorCode, EntryFailureMode, Injected, ServiceError};
use super::shard_end::ShardEndCounts;
use super::stream::{StreamEnd, StreamPlan};

/// What the engine does with one call.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) latency: Duration,
    pub(crate) terminal: Option<Terminal>,
    pub(crate) entries: Option<EntryPlan>,
    pub(crate) drop_after: bool,
    pub(crate) stream: Option<StreamPlan>,
    /// Rewrite the event stream into Kinesis's shard-end form, counting into these.
    pub(crate) shard_end: Option<Arc<ShardEndCounts>>,
}

impl Plan {
    /// Sets the stream fault unless one is set already; returns whether it was set.
    fn stream_fault(&mut self, end: StreamEnd, after: Duration) -> bool {
        let first = self.stream.is_none();
        if first {
            self.stream = Some(StreamPlan { end, after });
        }
        first
    }

    /// Combines the faults fired for one call, in rule order, into the call's plan; returns it
    /// with the faults that apply (the others are dropped uncounted). `entry_count` is the
    /// number of `PutRecords` entries when known; a shard-end rewrite counts into `shard_ends`.
    ///
    /// The first error or early drop answers the call: later ones, entry failures, a late drop
    /// and stream faults do not apply then. A late drop loses the whole response, so a stream
    /// fault (nor a shard-end rewrite) does not apply either. Latencies always add up; the first
    /// stream fault applies, and the rewrite (inside it) once.
    pub(super) fn resolve(
        fired: Vec<Injected>,
        entry_count: Option<usize>,
        shard_ends: &Arc<ShardEndCounts>,
    ) -> (Plan, Vec<Injected>) {
        let answered_early = fired
            .iter()
            .any(|fault| matches!(fault, Injected::Error(_) | Injected::DropBeforeForward));
        let response_lost = answered_early
            || fired
                .iter()
                .any(|fault| matches!(fault, Injected::DropAfterForward));
        let mut plan = Plan::default();
        let mut applied = Vec::new();
        for fault in fired {
            let apply = match &fault {
                Injected::Latency(delay) => {
                    plan.latency += *delay;
                    true
                }
                Injected::Error(error) => {
                    let first = plan.terminal.is_none();
                    if first {
                        plan.terminal = Some(Terminal::Error(error.clone()));
                    }
                    first
                }
                Injected::DropBeforeForward => {
                    let first = plan.terminal.is_none();
                    if first {
                        plan.terminal = Some(Terminal::Drop);
                    }
                    first
                }
                Injected::EntryFailures { failures, mode } => {
                    let first = !answered_early && plan.entries.is_none();
                    if first {
                        plan.entries = Some(EntryPlan {
                            total: entry_count.unwrap_or(0),
                            failures: failures.clone(),
                            mode: *mode,
                        });
                    }
                    first
                }
                Injected::DropAfterForward => {
                    let first = !answered_early && !plan.drop_after;
                    plan.drop_after |= first;
                    first
                }
                Injected::CutStream(after) => {
                    !response_lost && plan.stream_fault(StreamEnd::Cut, *after)
                }
                Injected::StallStream(after) => {
                    !response_lost && plan.stream_fault(StreamEnd::Stall, *after)
                }
                Injected::AwsShardEnd => {
                    let first = !response_lost && plan.shard_end.is_none();
                    if first {
                        plan.shard_end = Some(shard_ends.clone());
                    }
                    first
                }
            };
            if apply {
                applied.push(fault);
            }
        }
        (plan, applied)
    }
}

/// A fault that answers the call without forwarding it.
#[derive(Debug)]
pub(crate) enum Terminal {
    Error(ServiceError),
    Drop,
}

/// The `PutRecords` entries to fail in one call.
#[derive(Debug)]
pub(crate) struct EntryPlan {
    pub(crate) total: usize,
    pub(crate) failures: Vec<(usize, EntryErrorCode)>,
    pub(crate) mode: EntryFailureMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(fired: Vec<Injected>) -> (Plan, Vec<Injected>) {
        Plan::resolve(fired, Some(4), &Arc::default())
    }

    #[test]
    fn an_early_answer_excludes_entries_late_drops_and_stream_faults() {
        let entries = Injected::EntryFailures {
            failures: vec![(1, EntryErrorCode::InternalFailure)],
            mode: EntryFailureMode::NotWritten,
        };
        let (plan, applied) = resolve(vec![
            Injected::Latency(Duration::from_millis(3)),
            entries.clone(),
            Injected::DropBeforeForward,
            Injected::Error(ServiceError::throttling()),
            Injected::DropAfterForward,
            Injected::CutStream(Duration::from_millis(5)),
            Injected::AwsShardEnd,
            Injected::Latency(Duration::from_millis(4)),
        ]);
        assert_eq!(plan.latency, Duration::from_millis(7));
        assert!(matches!(plan.terminal, Some(Terminal::Drop)));
        assert!(plan.entries.is_none() && !plan.drop_after);
        assert!(plan.stream.is_none() && plan.shard_end.is_none());
        assert_eq!(
            applied,
            vec![
                Injected::Latency(Duration::from_millis(3)),
                Injected::DropBeforeForward,
                Injected::Latency(Duration::from_millis(4)),
            ]
        );
    }

    #[test]
    fn without_an_answer_the_first_of_each_kind_applies() {
        let ms = Duration::from_millis;
        let entries = |at| Injected::EntryFailures {
            failures: vec![(at, EntryErrorCode::ProvisionedThroughputExceeded)],
            mode: EntryFailureMode::Written,
        };
        let (plan, applied) = resolve(vec![
            entries(0),
            entries(2),
            Injected::StallStream(ms(10)),
            Injected::CutStream(ms(20)),
            Injected::AwsShardEnd,
            Injected::AwsShardEnd,
        ]);
        let chosen = plan.entries.as_ref().map(|e| (e.total, e.failures.clone()));
        assert_eq!(
            chosen,
            Some((4, vec![(0, EntryErrorCode::ProvisionedThroughputExceeded)]))
        );
        assert_eq!(
            plan.stream,
            Some(StreamPlan {
                end: StreamEnd::Stall,
                after: ms(10)
            })
        );
        assert!(plan.shard_end.is_some() && plan.terminal.is_none());
        assert_eq!(
            applied,
            vec![
                entries(0),
                Injected::StallStream(ms(10)),
                Injected::AwsShardEnd
            ]
        );
    }

    #[test]
    fn a_late_drop_loses_the_stream_faults() {
        let (plan, applied) = resolve(vec![
            Injected::CutStream(Duration::from_millis(1)),
            Injected::DropAfterForward,
            Injected::AwsShardEnd,
        ]);
        assert!(plan.drop_after && plan.stream.is_none() && plan.shard_end.is_none());
        assert_eq!(applied, vec![Injected::DropAfterForward]);
    }
}
