//! Which shards `tail` reads, and when: parents first. Pure decisions over the shard listing.
//!
//! A shard is read once every parent it has in the plan has been read to its end (a merge has two
//! parents); a parent outside the plan (gone from retention, or not selected with `--shard`)
//! does not hold it back. Without `--shard`, children that appear after a split or merge join
//! the plan and are read from their start; with `--shard`, only the shards given are read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use kinesis_calls::ListedShard;
use kinesis_consumer::SequenceNumber;

use crate::position::Position;

/// Where a shard's reading starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// The oldest record.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// The first record that arrived at or after a time.
    AtTimestamp(SystemTime),
    /// At a Kinesis record, from one of its user records on.
    AtSequence(SequenceNumber, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started: some parent has not been read to its end.
    Waiting,
    Reading,
    /// Read to its end, or not to be read (closed before a `latest` start).
    Ended,
}

#[derive(Clone, Debug)]
struct Entry {
    parents: BTreeSet<String>,
    start: Start,
    state: State,
}

/// The shards to read and where each stands.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    shards: BTreeMap<String, Entry>,
    /// Whether children found later join the plan (no `--shard`).
    follow: bool,
    /// Where children found later start.
    child_start: Start,
}

impl Plan {
    /// The plan for `listed` (every shard of the stream in retention), reading `selected` (all
    /// if empty) from `from`. Fails naming a selected shard that is not listed.
    pub(crate) fn new(
        listed: &[ListedShard],
        selected: &[String],
        from: &Position,
    ) -> Result<Plan, String> {
        let known: BTreeSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        if let Some(missing) = selected.iter().find(|s| !known.contains(s.as_str())) {
            return Err(missing.clone());
        }
        let start = match from {
            Position::TrimHorizon => Start::TrimHorizon,
            Position::Latest => Start::Latest,
            Position::At(at) => Start::AtTimestamp(*at),
            Position::Sequence(sequence, sub) => Start::AtSequence(sequence.clone(), *sub),
        };
        let follow = selected.is_empty();
        let shards = listed
            .iter()
            .filter(|s| follow || selected.contains(&s.id))
            .map(|s| {
                // From `latest`, a shard closed already has nothing more to give (as the
                // consumer's initial leases: only the open shards).
                let state = if follow && start == Start::Latest && s.closed {
                    State::Ended
                } else {
                    State::Waiting
                };
                let entry = Entry {
                    parents: s.parents.iter().cloned().collect(),
                    start: start.clone(),
                    state,
                };
                (s.id.clone(), entry)
            })
            .collect();
        let child_start = match from {
            // A child's records all come after its parents', so a time keeps its meaning.
            Position::At(at) => Start::AtTimestamp(*at),
            _ => Start::TrimHorizon,
        };
        Ok(Plan {
            shards,
            follow,
            child_start,
        })
    }

    /// The shards that may start now, marked as reading: every parent in the plan has ended.
    pub(crate) fn ready(&mut self) -> Vec<(String, Start)> {
        let ended: BTreeSet<String> = self
            .shards
            .iter()
            .filter(|(_, e)| e.state == State::Ended)
            .map(|(id, _)| id.clone())
            .collect();
        let known: BTreeSet<String> = self.shards.keys().cloned().collect();
        let mut ready = Vec::new();
        for (id, entry) in &mut self.shards {
            let blocked = entry
                .parents
                .iter()
                .any(|p| known.contains(p) && !ended.contains(p));
            if entry.state == State::Waiting && !blocked {
                entry.state = State::Reading;
                ready.push((id.clone(), entry.start.clone()));
            }
        }
        ready
    }

    /// `shard` was read to its end.
    pub(crate) fn ended(&mut self, shard: &str) {
        if let Some(entry) = self.shards.get_mut(shard) {
            entry.state = State::Ended;
        }
    }

    /// Whether the shards must be listed again to find `shard`'s children: the plan follows
    /// children and knows none of `shard`'s.
    pub(crate) fn needs_listing(&self, shard: &str) -> bool {
        self.follow && !self.shards.values().any(|e| e.parents.contains(shard))
    }

    /// Adds the shards of a new listing that the plan does not know, when it follows children.
    pub(crate) fn add_listed(&mut self, listed: &[ListedShard]) {
        if !self.follow {
            return;
        }
        for shard in listed {
            self.shards
                .entry(shard.id.clone())
                .or_insert_with(|| Entry {
                    parents: shard.parents.iter().cloned().collect(),
                    start: self.child_start.clone(),
                    state: State::Waiting,
                });
        }
    }

    /// Whether every shard of the plan has ended (only possible with `--shard`, or once a
    /// stream's every shard is closed).
    pub(crate) fn done(&self) -> bool {
        self.shards.values().all(|e| e.state == State::Ended)
    }

    /// How many shards are being read.
    pub(crate) fn reading(&self) -> usize {
        self.shards
            .values()
            .filter(|e| e.state == State::Reading)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ListedShard {
        ListedShard {
            id: id.to_owned(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            hash_key_range: None,
            closed,
        }
    }

    fn ids(ready: &[(String, Start)]) -> Vec<&str> {
        ready.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// 0 was split into 1 and 2; 1 and 2 were merged into 3.
    fn resharded() -> Vec<ListedShard> {
        vec![
            shard("s0", &[], true),
            shard("s1", &["s0"], true),
            shard("s2", &["s0"], true),
            shard("s3", &["s1", "s2"], false),
        ]
    }

    #[test]
    fn from_the_trim_horizon_parents_come_first_and_a_merge_waits_for_both() {
        let mut plan = Plan::new(&resharded(), &[], &Position::TrimHorizon).expect("plan");
        assert_eq!(ids(&plan.ready()), ["s0"]);
        assert!(plan.ready().is_empty(), "nothing starts twice");
        plan.ended("s0");
        assert_eq!(ids(&plan.ready()), ["s1", "s2"]);
        plan.ended("s1");
        assert!(
            plan.ready().is_empty(),
            "the merge waits for its other parent"
        );
        plan.ended("s2");
        let ready = plan.ready();
        assert_eq!(ready, vec![("s3".to_owned(), Start::TrimHorizon)]);
        assert!(!plan.done());
        assert_eq!(plan.reading(), 1);
    }

    #[test]
    fn from_latest_closed_shards_are_skipped_and_open_ones_start_at_once() {
        let mut plan = Plan::new(&resharded(), &[], &Position::Latest).expect("plan");
        assert_eq!(plan.ready(), vec![("s3".to_owned(), Start::Latest)]);
    }

    #[test]
    fn children_found_later_start_from_their_beginning() {
        let mut plan = Plan::new(&[shard("s0", &[], false)], &[], &Position::Latest).expect("plan");
        assert_eq!(ids(&plan.ready()), ["s0"]);
        plan.ended("s0");
        assert!(plan.needs_listing("s0"));
        plan.add_listed(&[
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], false),
        ]);
        assert!(!plan.needs_listing("s0"));
        assert_eq!(
            plan.ready(),
            vec![
                ("s1".to_owned(), Start::TrimHorizon),
                ("s2".to_owned(), Start::TrimHorizon)
            ]
        );
    }

    #[test]
    fn from_a_time_children_start_at_that_time() {
        let at = SystemTime::UNIX_EPOCH;
        let mut plan = Plan::new(&[shard("s0", &[], false)], &[], &Position::At(at)).expect("plan");
        assert_eq!(
            plan.ready(),
            vec![("s0".to_owned(), Start::AtTimestamp(at))]
        );
        plan.ended("s0");
        plan.add_listed(&[shard("s1", &["s0"], false)]);
        assert_eq!(
            plan.ready(),
            vec![("s1".to_owned(), Start::AtTimestamp(at))]
        );
    }

    #[test]
    fn parents_out_of_retention_do_not_hold_children_back() {
        let mut plan = Plan::new(
            &[shard("s5", &["gone"], false)],
            &[],
            &Position::TrimHorizon,
        )
        .expect("plan");
        assert_eq!(ids(&plan.ready()), ["s5"]);
    }

    #[test]
    fn selected_shards_are_read_alone_and_children_are_not_followed() {
        let selected = ["s1".to_owned()];
        let mut plan = Plan::new(&resharded(), &selected, &Position::Latest).expect("plan");
        // A parent that is not selected does not hold the shard back; a closed shard selected
        // from `latest` is still read (to its end).
        assert_eq!(plan.ready(), vec![("s1".to_owned(), Start::Latest)]);
        plan.ended("s1");
        assert!(!plan.needs_listing("s1"));
        plan.add_listed(&[shard("s9", &["s1"], false)]);
        assert!(plan.ready().is_empty());
        assert!(plan.done());
    }

    #[test]
    fn a_sequence_number_starts_the_one_shard_there() {
        let sequence = SequenceNumber::parse("4959").expect("digits");
        let selected = ["s3".to_owned()];
        let mut plan = Plan::new(
            &resharded(),
            &selected,
            &Position::Sequence(sequence.clone(), 2),
        )
        .expect("plan");
        assert_eq!(
            plan.ready(),
            vec![("s3".to_owned(), Start::AtSequence(sequence, 2))]
        );
    }

    #[test]
    fn an_unknown_selected_shard_is_named() {
        let selected = ["s1".to_owned(), "nope".to_owned()];
        assert_eq!(
            Plan::new(&resharded(), &selected, &Position::Latest).map(|_| ()),
            Err("nope".to_owned())
        );
    }
}
