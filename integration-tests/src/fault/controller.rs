//! The [`FaultController`]: the rules a test added, the seeded RNG that decides which of them
//! fire on each call, and the counts and history of what was injected.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::plan::Plan;
use super::rule::{DropPoint, Fault, FaultKind, FaultRule, Injected};
use super::shard_end::ShardEndCounts;

/// Identifies a rule added to a [`FaultController`], to remove it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u64);

/// An entry of the controller's history: which fault hit which call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The call's number among all calls the controller saw, from 1.
    pub call: u64,
    /// The call's operation.
    pub operation: String,
    /// The fault.
    pub fault: Injected,
}

/// Counts kept by a [`FaultController`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Calls seen, per operation.
    pub calls: BTreeMap<String, u64>,
    /// Faults injected, per kind.
    pub injected: BTreeMap<FaultKind, u64>,
    /// `PutRecords` entries failed, over all calls.
    pub failed_entries: u64,
    /// Final `SubscribeToShard` events rewritten by [`Fault::AwsShardEnd`]: a null continuation
    /// with the children, the stream ended after it. One per shard end the client was shown.
    pub aws_shard_ends: u64,
    /// `SubscribeToShard` events with records whose `ChildShards` [`Fault::AwsShardEnd`]
    /// removed.
    pub children_withheld: u64,
    /// Final events whose children's `ParentShards` [`Fault::AwsShardEnd`] corrected from
    /// `ListShards` (ferrokinesis names only one parent of a merge child in the adjacent
    /// parent's events).
    pub parents_completed: u64,
}

/// The shared, seeded decision-maker of fault injection: holds the rules, decides each call's
/// faults, and counts calls and injections. Share it as `Arc<FaultController>`.
#[derive(Debug)]
pub struct FaultController {
    state: Mutex<State>,
    /// Counted by the response bodies [`Fault::AwsShardEnd`] wraps, after the call's plan.
    shard_ends: Arc<ShardEndCounts>,
}

#[derive(Debug)]
struct State {
    seed: u64,
    rng: ChaCha8Rng,
    next_rule: u64,
    rules: Vec<ActiveRule>,
    calls: u64,
    stats: FaultStats,
    history: Vec<Injection>,
    /// Per operation: calls under way now, and the most at once.
    in_flight: BTreeMap<String, (u64, u64)>,
    /// All operations together: calls under way now, and the most at once.
    all_in_flight: (u64, u64),
}

/// A call under way, counted by [`FaultController::most_in_flight`] until dropped.
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    controller: &'a FaultController,
    operation: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.controller.lock();
        if let Some((now, _)) = state.in_flight.get_mut(&self.operation) {
            *now = now.saturating_sub(1);
        }
        state.all_in_flight.0 = state.all_in_flight.0.saturating_sub(1);
    }
}

#[derive(Debug)]
struct ActiveRule {
    id: RuleId,
    rule: FaultRule,
    matched: u64,
}

impl FaultController {
    /// A controller without rules whose random choices all come from `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                seed,
                rng: ChaCha8Rng::seed_from_u64(seed),
                next_rule: 0,
                rules: Vec::new(),
                calls: 0,
                stats: FaultStats::default(),
                history: Vec::new(),
                in_flight: BTreeMap::new(),
                all_in_flight: (0, 0),
            }),
            shard_ends: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The seed given to [`FaultController::new`].
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Adds a rule; it applies from the next call on. Rules are evaluated in the order added.
    pub fn add(&self, rule: FaultRule) -> RuleId {
        let mut state = self.lock();
        state.next_rule += 1;
        let id = RuleId(state.next_rule);
        state.rules.push(ActiveRule {
            id,
            rule,
            matched: 0,
        });
        id
    }

    /// Removes a rule; returns whether it was present.
    pub fn remove(&self, id: RuleId) -> bool {
        let mut state = self.lock();
        let before = state.rules.len();
        state.rules.retain(|active| active.id != id);
        state.rules.len() != before
    }

    /// Removes every rule (counts and history are kept).
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Calls seen for `operation`.
    pub fn calls(&self, operation: &str) -> u64 {
        self.lock().stats.calls.get(operation).copied().unwrap_or(0)
    }

    /// The most calls of `operation` that were under way at once through the proxies sharing
    /// this controller, from their arrival to their answer (a call whose client hung up may be
    /// counted until its forwarding ends).
    pub fn most_in_flight(&self, operation: &str) -> u64 {
        self.lock()
            .in_flight
            .get(operation)
            .map_or(0, |&(_, most)| most)
    }

    /// The most calls under way at once through the proxies sharing this controller, all
    /// operations together.
    pub fn most_in_flight_together(&self) -> u64 {
        self.lock().all_in_flight.1
    }

    /// Starts counting the most calls under way at once afresh, from those under way now.
    pub fn reset_most_in_flight(&self) {
        let mut state = self.lock();
        for (now, most) in state.in_flight.values_mut() {
            *most = *now;
        }
        state.all_in_flight.1 = state.all_in_flight.0;
    }

    /// Counts a call of `operation` under way until the returned guard is dropped.
    pub(crate) fn enter(&self, operation: &str) -> InFlight<'_> {
        let mut state = self.lock();
        let (now, most) = state.in_flight.entry(operation.to_owned()).or_default();
        *now += 1;
        *most = (*most).max(*now);
        let (now, most) = &mut state.all_in_flight;
        *now += 1;
        *most = (*most).max(*now);
        InFlight {
            controller: self,
            operation: operation.to_owned(),
        }
    }

    /// Calls seen, all operations together.
    pub fn total_calls(&self) -> u64 {
        self.lock().calls
    }

    /// Faults of `kind` injected so far.
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.lock().stats.injected.get(&kind).copied().unwrap_or(0)
    }

    /// `PutRecords` entries failed so far.
    pub fn failed_entries(&self) -> u64 {
        self.lock().stats.failed_entries
    }

    /// Final `SubscribeToShard` events rewritten so far (see [`FaultStats::aws_shard_ends`]).
    pub fn aws_shard_ends(&self) -> u64 {
        self.shard_ends.final_events()
    }

    /// A snapshot of every count.
    pub fn stats(&self) -> FaultStats {
        let mut stats = self.lock().stats.clone();
        stats.aws_shard_ends = self.shard_ends.final_events();
        stats.children_withheld = self.shard_ends.children_withheld();
        stats.parents_completed = self.shard_ends.parents_completed();
        stats
    }

    /// Every fault injected so far, in order: compare two runs' histories to check that a seed
    /// reproduces a run.
    pub fn history(&self) -> Vec<Injection> {
        self.lock().history.clone()
    }

    /// Decides the faults of one call of `operation`; `entry_count` is the number of
    /// `PutRecords` entries when known. Counts the call and the faults decided.
    pub(crate) fn plan(&self, operation: &str, entry_count: Option<usize>) -> Plan {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.calls += 1;
        let call = state.calls;
        *state.stats.calls.entry(operation.to_owned()).or_default() += 1;

        let mut fired = Vec::new();
        for active in &mut state.rules {
            if !active.rule.applies_to(operation) {
                continue;
            }
            active.matched += 1;
            let position = active.matched;
            if active.rule.first.is_some_and(|first| position > first)
                || position % active.rule.every != 0
            {
                continue;
            }
            let p = active.rule.probability;
            if p < 1.0 && !state.rng.random_bool(p) {
                continue;
            }
            match active.rule.fault() {
                Fault::Latency(latency) => {
                    fired.push(Injected::Latency(latency.draw(&mut state.rng)))
                }
                Fault::Error(error) => fired.push(Injected::Error(error.clone())),
                Fault::DropConnection(DropPoint::BeforeForward) => {
                    fired.push(Injected::DropBeforeForward)
                }
                Fault::DropConnection(DropPoint::AfterForward) => {
                    fired.push(Injected::DropAfterForward)
                }
                Fault::CutStream(after) => fired.push(Injected::CutStream(*after)),
                Fault::StallStream(after) => fired.push(Injected::StallStream(*after)),
                Fault::AwsShardEnd => fired.push(Injected::AwsShardEnd),
                Fault::PutRecordsEntries(entries) => {
                    if let Some(total) = entry_count {
                        let failures = entries.choose(total, &mut state.rng);
                        if !failures.is_empty() {
                            fired.push(Injected::EntryFailures {
                                failures,
                                mode: entries.mode,
                            });
                        }
                    }
                }
            }
        }

        let (plan, applied) = Plan::resolve(fired, entry_count, &self.shard_ends);

        for fault in applied {
            *state.stats.injected.entry(fault.kind()).or_default() += 1;
            if let Injected::EntryFailures { failures, .. } = &fault {
                state.stats.failed_entries += failures.len() as u64;
            }
            tracing::debug!(call, operation, fault = ?fault, "injecting fault");
            state.history.push(Injection {
                call,
                operation: operation.to_owned(),
                fault,
            });
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fault::stream::{StreamEnd, StreamPlan};
    use crate::fault::{EntryErrorCode, EntryFailures, PUT_RECORDS, ServiceError, Terminal};

    fn kinds(controller: &FaultController) -> Vec<(u64, FaultKind)> {
        controller
            .history()
            .iter()
            .map(|i| (i.call, i.fault.kind()))
            .collect()
    }

    #[test]
    fn first_and_every_select_calls() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on("GetRecords", Fault::drop_request()).first(2));
        controller.add(FaultRule::on("PutRecord", Fault::drop_response()).every(3));
        for _ in 0..4 {
            controller.plan("GetRecords", None);
        }
        for _ in 0..7 {
            controller.plan("PutRecord", None);
        }
        assert_eq!(
            kinds(&controller),
            vec![
                (1, FaultKind::DropBeforeForward),
                (2, FaultKind::DropBeforeForward),
                (7, FaultKind::DropAfterForward),
                (10, FaultKind::DropAfterForward),
            ]
        );
        assert_eq!(controller.calls("GetRecords"), 4);
        assert_eq!(controller.calls("PutRecord"), 7);
        assert_eq!(controller.total_calls(), 11);
    }

    #[test]
    fn the_first_terminal_fault_wins_and_latencies_add_up() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::new(Fault::latency(Duration::from_millis(10))));
        controller.add(FaultRule::new(Fault::Error(ServiceError::throttling())));
        controller.add(FaultRule::new(Fault::drop_request()));
        controller.add(FaultRule::new(Fault::latency(Duration::from_millis(5))));
        controller.add(FaultRule::new(Fault::PutRecordsEntries(
            EntryFailures::all(),
        )));
        let plan = controller.plan(PUT_RECORDS, Some(3));
        assert_eq!(plan.latency, Duration::from_millis(15));
        assert!(matches!(plan.terminal, Some(Terminal::Error(_))));
        assert!(plan.entries.is_none());
        assert_eq!(controller.injected(FaultKind::Error), 1);
        assert_eq!(controller.injected(FaultKind::DropBeforeForward), 0);
        assert_eq!(controller.injected(FaultKind::Latency), 2);
        assert_eq!(controller.injected(FaultKind::EntryFailures), 0);
    }

    #[test]
    fn stream_faults_compose_with_latency_but_not_with_an_answer_or_a_lost_response() {
        let ms = Duration::from_millis;
        let controller = FaultController::new(1);
        controller.add(FaultRule::on("SubscribeToShard", Fault::latency(ms(10))));
        controller.add(FaultRule::on(
            "SubscribeToShard",
            Fault::stall_stream_after(ms(30)),
        ));
        controller.add(FaultRule::on(
            "SubscribeToShard",
            Fault::cut_stream_after(ms(20)),
        ));
        let answered = controller.add(
            FaultRule::on(
                "SubscribeToShard",
                Fault::Error(ServiceError::internal_failure()),
            )
            .first(1),
        );
        let lost = controller.add(FaultRule::on("SubscribeToShard", Fault::drop_response()));

        // The error answers the call: no stream fault (nor late drop) applies.
        let plan = controller.plan("SubscribeToShard", None);
        assert!(matches!(plan.terminal, Some(Terminal::Error(_))));
        assert!(plan.stream.is_none() && !plan.drop_after);
        controller.remove(answered);

        // The late drop loses the response: no stream fault applies.
        let plan = controller.plan("SubscribeToShard", None);
        assert!(plan.drop_after && plan.stream.is_none());
        controller.remove(lost);

        // The first stream fault applies, after the latency.
        let plan = controller.plan("SubscribeToShard", None);
        assert_eq!(plan.latency, ms(10));
        assert_eq!(
            plan.stream,
            Some(StreamPlan {
                end: StreamEnd::Stall,
                after: ms(30)
            })
        );
        assert_eq!(controller.injected(FaultKind::StallStream), 1);
        assert_eq!(controller.injected(FaultKind::CutStream), 0);
        assert_eq!(controller.injected(FaultKind::Latency), 3);
        assert_eq!(
            kinds(&controller)[4..],
            [(3, FaultKind::Latency), (3, FaultKind::StallStream)]
        );
    }

    #[test]
    fn entry_failures_only_apply_to_put_records_with_a_known_count() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::new(Fault::PutRecordsEntries(
            EntryFailures::indices([0, 2, 9]),
        )));
        assert!(controller.plan("PutRecord", None).entries.is_none());
        assert!(controller.plan(PUT_RECORDS, None).entries.is_none());
        let plan = controller.plan(PUT_RECORDS, Some(3));
        let entries = plan.entries.expect("entries fail");
        assert_eq!(
            entries.failures,
            vec![
                (0, EntryErrorCode::ProvisionedThroughputExceeded),
                (2, EntryErrorCode::ProvisionedThroughputExceeded)
            ]
        );
        assert_eq!(entries.total, 3);
        assert_eq!(controller.failed_entries(), 2);
    }

    #[test]
    fn removed_rules_stop_firing() {
        let controller = FaultController::new(1);
        let id = controller.add(FaultRule::new(Fault::drop_request()));
        assert!(controller.plan("ListShards", None).terminal.is_some());
        assert!(controller.remove(id));
        assert!(!controller.remove(id));
        assert!(controller.plan("ListShards", None).terminal.is_none());
    }

    fn run(seed: u64) -> Vec<Injection> {
        let controller = FaultController::new(seed);
        controller.add(
            FaultRule::on("PutRecords", Fault::Error(ServiceError::internal_failure()))
                .probability(0.2),
        );
        controller.add(
            FaultRule::new(Fault::latency_between(
                Duration::from_millis(1),
                Duration::from_millis(50),
            ))
            .probability(0.5),
        );
        controller.add(FaultRule::new(Fault::PutRecordsEntries(
            EntryFailures::probability(0.3).codes([
                EntryErrorCode::InternalFailure,
                EntryErrorCode::ProvisionedThroughputExceeded,
            ]),
        )));
        for i in 0..200 {
            let op = if i % 3 == 0 {
                "GetRecords"
            } else {
                PUT_RECORDS
            };
            controller.plan(op, Some(10));
        }
        controller.history()
    }

    #[test]
    fn a_seed_reproduces_the_fault_sequence() {
        let a = run(42);
        assert!(a.len() > 50);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
    }
}
