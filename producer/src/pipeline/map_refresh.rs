//! Keeping the shard map current: when to list the shards (periodically, after a landing that
//! shows the map stale, with backoff after failures), and what a new map changes (shards that
//! stay keep their state, the records of shards that closed are routed again, entries written to
//! then-unknown shards are judged).

use std::{collections::HashMap, sync::Arc, time::Duration, time::Instant};

use tracing::{debug, warn};

use super::{
    answers::{Unverified, mark_wrong_shard},
    batching::Shard,
    machine::{Action, Machine},
};
use crate::{
    metrics as m,
    shard_map::{ShardMap, refresh_backoff},
};

/// When the shard map is listed next.
pub(super) struct Refresh {
    /// A `ListShards` is under way.
    pub(super) running: bool,
    /// A refresh was asked for (a landing showed the map stale, or the last refresh failed).
    pub(super) wanted: bool,
    /// Refreshes failed in a row.
    failures: u32,
    /// No asked-for refresh before this (backoff after failures).
    pub(super) not_before: Instant,
    pub(super) next_periodic: Instant,
}

impl Refresh {
    pub(super) fn new(now: Instant, interval: Duration) -> Self {
        Refresh {
            running: false,
            wanted: false,
            failures: 0,
            not_before: now,
            next_periodic: now + interval,
        }
    }

    /// Whether to list the shards now.
    fn due(&self, now: Instant) -> bool {
        !self.running && ((self.wanted && now >= self.not_before) || now >= self.next_periodic)
    }

    /// When a refresh falls due, if none is under way.
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.running {
            return None;
        }
        if self.wanted {
            Some(self.next_periodic.min(self.not_before))
        } else {
            Some(self.next_periodic)
        }
    }
}

impl Machine {
    /// Asks for a map refresh, unless the map is already newer than the answer that showed it
    /// stale (`seen_at`: when that call started).
    pub(super) fn want_refresh(&mut self, seen_at: Option<Instant>) {
        if seen_at.is_some_and(|at| self.map.fetched_at > at) {
            return;
        }
        self.refresh.wanted = true;
    }

    /// Lists the shards if a refresh is due: [`Action::ListShards`].
    pub(super) fn start_refresh_if_due(&mut self, now: Instant) {
        if self.refresh.due(now) {
            self.refresh.running = true;
            self.refresh.wanted = false;
            self.act(Action::ListShards);
        }
    }

    /// A `ListShards` answer, made into a map, or why not.
    pub(super) fn on_listed(&mut self, result: Result<ShardMap, String>, now: Instant) {
        self.refresh.running = false;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(m::SHARD_MAP_REFRESHES, "stream" => self.stream.clone(), "outcome" => outcome)
            .increment(1);
        match result {
            Ok(map) if map.supersedes(&self.map) => {
                self.refresh.failures = 0;
                self.refresh.next_periodic = now + self.cfg.shard_map_refresh;
                self.install(map, now);
            }
            Ok(_) => {
                // An answer older than the map in use: keep the newer one.
            }
            Err(problem) => {
                self.refresh.failures += 1;
                self.refresh.wanted = true;
                self.refresh.not_before = now + refresh_backoff(self.refresh.failures);
                // A failed periodic refresh waits for the backoff too (its periodic time has
                // passed: without this it would be tried again at once, at the rate answers
                // come back).
                self.refresh.next_periodic =
                    self.refresh.next_periodic.max(self.refresh.not_before);
                warn!(%problem, failures = self.refresh.failures, "shard map refresh failed");
                // Entries that landed on unknown shards cannot be checked: send them again.
                for Unverified {
                    mut krec, shard_id, ..
                } in std::mem::take(&mut self.unverified)
                {
                    mark_wrong_shard(&mut krec, &shard_id);
                    self.dissolve(krec, now);
                }
            }
        }
    }

    /// Replaces the shard map. Shards that stay keep their state; the records of shards that
    /// closed are routed again.
    fn install(&mut self, map: ShardMap, now: Instant) {
        let changed = map.shards().iter().map(|s| &s.id).ne(self
            .map
            .shards()
            .iter()
            .map(|s| &s.id));
        if !changed {
            self.map.fetched_at = map.fetched_at;
        } else {
            debug!(shards = map.len(), "shard map changed");
            let mut old: HashMap<Arc<str>, Shard> = std::mem::take(&mut self.shards)
                .into_iter()
                .map(|s| (s.info.id.clone(), s))
                .collect();
            self.shards = map
                .shards()
                .iter()
                .map(|info| {
                    old.remove(&info.id)
                        .unwrap_or_else(|| Shard::new(info.clone(), &self.cfg, &self.stream, now))
                })
                .collect();
            self.map = map;
            // A stream that grew spreads more keys: remember more of them.
            let capacity = super::machine::hash_key_capacity(self.map.len());
            if capacity > self.hash_keys.capacity() {
                self.hash_keys.set_capacity(capacity);
            }
            // Records of the shards that closed, oldest first: the queue, then the aggregate.
            self.batch_return(now);
            for (_, mut shard) in old {
                for krec in std::mem::take(&mut shard.queue) {
                    self.dissolve(krec, now);
                }
                if let Some(aggregator) = shard.aggregator.as_mut() {
                    let _ = aggregator.finish();
                }
                for pending in std::mem::take(&mut shard.aggregated) {
                    self.route(pending, now);
                }
            }
        }
        for Unverified {
            krec,
            shard_id,
            sequence_number,
        } in std::mem::take(&mut self.unverified)
        {
            let range = self
                .map
                .position(&shard_id)
                .and_then(|i| self.map.get(i))
                .map(|s| s.range);
            match range {
                Some(range) if krec.hash_keys().all(|k| range.contains(k)) => {
                    self.complete(krec, &shard_id, sequence_number);
                }
                _ => {
                    self.metrics.resent.increment(krec.records.len() as u64);
                    warn!(actual = %shard_id, "aggregate landed on a shard whose range does not hold all its records; resending them");
                    let mut krec = krec;
                    mark_wrong_shard(&mut krec, &shard_id);
                    self.dissolve(krec, now);
                }
            }
        }
    }
}
