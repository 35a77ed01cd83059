//! The worker's lease coordination as a pure state machine: `(state, input, now) -> actions`.
//!
//! The worker's task (in `worker`) only performs the [`Action`]s this machine returns (scans,
//! conditional writes, starting and stopping shard tasks) and feeds their results back as
//! [`Input`]s; every decision is made here, from plain data, so that the deterministic simulation
//! (`simulation`) can run many workers' machines against an in-memory lease table under seeded
//! schedules of kills, pauses, lost answers and resharding, and check the lease contract after
//! every step.
//!
//! Each lease this worker has anything to do with is in exactly one [`Local`] state:
//!
//! ```text
//!             plan: free, expired, or the table says mine          plan: a live worker's lease
//!                          │                                                    │
//!                          ▼                                                    ▼
//!                   ┌── Taking ──┐ refused / failed: forget            Asking ── refused / failed: forget
//!                   │     │      │                                              │ written
//!      written, but │     │ written                                             ▼
//!      shutting down│     ▼                handed over, or the previous   ┌─ Awaiting ─┐ taken by another:
//!                   │  Running ◄──────────── owner's lease expired:   ◄───┘     │      └─ forget
//!                   │   │  ▲ renew, trust   Taking                              │ handoff timeout, shutting
//!                   │   │  └──┘                                                 │ down, or asked for by a
//!                   │   │ processor exited                                      │ third worker
//!                   ▼   ▼ (stopped, failed, panicked, aborted)                  ▼
//!                 Releasing ◄────────────────────────────────────────────── (withdraw / release)
//!                   │ written, or not ours any more: forget
//! ```
//!
//! A lease is started only from `Taking`, once its take is written, and `Running` ends only when
//! its shard task reports its exit; so a shard cannot be started twice, and a processor cannot be
//! dropped without its task ending. Renewals are sent only for `Running` leases whose processor
//! still runs and is trusted.
//!
//! **Trust.** A lease is trusted until the failover time, less a margin, after the last
//! successful write of this worker that raised its counter was *sent* (a take or a renewal).
//! Another worker judges the lease expired only once the counter it observes has not moved for
//! the failover time by its own clock, counted from when it first saw that value, which is after
//! the write. So the holder's processor has stopped (its task stops itself at the trust deadline,
//! at its next `.await`) before anyone can take the lease, with clocks that may drift apart by up
//! to the margin over a failover time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::{
    balance::{self, BalanceLimits, Mine, Observations},
    lease::Lease,
};

#[cfg(test)]
mod tests;

/// How often the table is scanned while a handoff to or from this worker is under way or
/// expected.
pub(crate) const HANDOFF_POLL: Duration = Duration::from_millis(500);
/// How soon a failed renewal or release is tried again.
pub(crate) const RETRY: Duration = Duration::from_millis(250);
/// How many renewals refused in a row by this worker's own earlier writes are made again at
/// once; after them, the next waits [`RETRY`].
const OWN_REFUSALS_AT_ONCE: u32 = 2;
/// How many times a release is tried before the lease is left to expire.
pub(crate) const RELEASE_ATTEMPTS: u32 = 3;
/// How long after the shutdown timeout the worker still waits for its releases.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a lease this worker let go of is not taken again on the word of a scan sent before.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// How many lease items a second the workers of a fleet that do not watch scan between them,
/// whatever they wait for (handoffs, their start, expiries, rescans): each such worker's scans
/// are at least `live owners x leases / FLEET_SCAN_ITEMS` apart, but never more than a scan
/// interval (in a fleet larger than that, its unsettled workers scan every scan interval, and
/// its settled ones seldom, see [`Machine::relaxed`]). Without it every worker
/// of a fleet starting together scanned every [`HANDOFF_POLL`] until its share settled: 50 workers
/// on 1,000 leases asked for about 115 scans of 1,000 items a second (the simulation's cold
/// start), some 4,300 read units a second, more than one DynamoDB partition serves (3,000), and
/// about eight times what a DynamoDB Local on two cores served. At this budget, 20,000 items (about 730 read units a second of
/// 300-byte leases), the floor is [`HANDOFF_POLL`] up to 10 workers on 1,000 leases (or 100 on
/// 100), and a scan interval (the most it is ever, 2 s by default) for 50 on 1,000. The
/// watchers (see [`Machine::watching`]) are not held to it: failover rests on them.
pub(crate) const FLEET_SCAN_ITEMS: u64 = 20_000;

/// The timings and limits the machine decides with.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// A lease whose counter has not moved this long is expired.
    pub(crate) failover: Duration,
    /// How long after sending a successful renewal or take this worker trusts a lease.
    pub(crate) trust: Duration,
    pub(crate) renew_interval: Duration,
    pub(crate) scan_interval: Duration,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) handoff_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_leases: Option<usize>,
    pub(crate) max_handoffs: Option<usize>,
    /// How many workers of a fleet watch for expiries (see [`Machine::watching`]).
    pub(crate) watchers: usize,
    /// The longest a settled worker that does not watch goes between scans.
    pub(crate) slow_scan: Duration,
    /// How long a lease-table call waits for its answer: half a renewal interval (at most
    /// `longest_call`), so that a call lost outright can be made again while its lease is
    /// trusted.
    pub(crate) call_timeout: Duration,
    /// The longest any call waits for its answer (the consumer's `call_timeout`).
    pub(crate) longest_call: Duration,
    /// How many lease items a second the workers that do not watch scan between them
    /// ([`FLEET_SCAN_ITEMS`]; the simulation tries smaller budgets).
    pub(crate) scan_budget: u64,
}

/// How long a renewal waits for its answer, with `left` of its lease's trust left: half of it,
/// the other half kept for more attempts if this one is lost outright; never less than the
/// ordinary call timeout (`ordinary`), nor more than `longest`. Under the default timings a
/// renewal is due with 5 to 7 s of trust left and waits 2.5 to 3.5 s: a table answering in 2 to
/// 2.5 s keeps its leases, where cut at the ordinary 2 s every renewal would fail, each attempt
/// adding to the table's load, until the trust ran out. Waiting all the trust left but one
/// ordinary timeout did worse in the simulation (fewer attempts in brownouts, where answers are
/// lost outright).
pub(crate) fn renewal_window(left: Duration, ordinary: Duration, longest: Duration) -> Duration {
    (left / 2).min(longest).max(ordinary)
}

/// How many workers of a fleet watch for expiries by default.
pub(crate) const WATCHERS: usize = 3;

/// How often a worker that watches syncs the shards, in shard sync intervals; others sync this
/// many times less often (leases for children are created at the shard end: the periodic sync
/// only repairs holes and removes finished leases).
const SLOW_SYNC: u32 = 5;

/// Who watches for expiries, as one worker sees the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watch {
    /// Whether this worker watches.
    pub(crate) watching: bool,
    /// Workers holding leases that are not expired (this worker included if it holds any).
    pub(crate) live_owners: usize,
}

impl Watch {
    /// Judges from the table as last scanned. The `k` live owners that rank first watch, among
    /// those with room for more leases under `max_leases` (a watcher at its cap could not take
    /// a dead worker's leases); every worker watches while fewer than `k` such owners are live
    /// (a fleet that small, an idle fleet, or one whose owners died). Owners rank by a hash of
    /// their ids, the same in every process, so that ids that sort together (one host group, one
    /// deployment's pods) are not all watchers and do not all leave together. A dead owner's
    /// leases expire by this worker's observation, so it stops counting once they have not
    /// moved for the failover time.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn judge(
        table: &[Lease],
        observations: &Observations,
        me: &str,
        holding: bool,
        now: Instant,
        failover: Duration,
        k: usize,
        max_leases: Option<usize>,
    ) -> Watch {
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        // A finished lease (at SHARD_END) is renewed no more: it says nothing of its owner's
        // life, and counting it kept a worker that had left ranked first, so nobody watched.
        for lease in table.iter().filter(|l| !l.is_finished()) {
            if let Some(owner) = lease.owner.as_deref()
                && !observations.is_expired(lease, now, failover)
            {
                *held.entry(owner).or_default() += 1;
            }
        }
        if holding {
            held.entry(me).or_insert(1);
        }
        let live_owners = held.len();
        let cap = max_leases.unwrap_or(usize::MAX);
        let mut eligible: Vec<&str> = held
            .iter()
            .filter(|(_, n)| **n < cap)
            .map(|(owner, _)| *owner)
            .collect();
        eligible.sort_by_key(|owner| (rank(owner), *owner));
        let watching = eligible.len() < k || eligible.iter().take(k).any(|o| *o == me);
        Watch {
            watching,
            live_owners,
        }
    }
}

/// A worker's rank among the owners that may watch: FNV-1a of its id, which every process
/// computes alike.
pub(crate) fn rank(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// When to renew a lease next, after a take or renewal sent at `sent`: at the lease's own phase
/// of the renewal interval (by its key, counted from `epoch`), between half an interval and a
/// whole one after `sent`. Leases taken together (a cold start, a takeover of a dead worker's
/// leases), or renewed together after the table failed for a while, would otherwise be renewed
/// together every interval ever after, each burst a call under way per lease and a connection
/// each in the client's pool. Locked to their phases they are spread over the interval: a
/// renewal off its phase is sent early (never late), spread still, and lands on it within two
/// renewals, after which one renewal an interval is sent, as before. Earlier than needed is safe: it only renews
/// sooner.
pub(crate) fn next_renewal(
    key: &str,
    sent: Instant,
    epoch: Instant,
    interval: Duration,
) -> Instant {
    let period = interval.as_nanos().max(2);
    // FNV-1a's high bits hardly move with the last characters of keys that differ only there
    // (shardId-000000000001, -002, ...): mixed first (MurmurHash3's finalizer).
    let mut hash = rank(key);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    let phase = u128::from(hash).checked_mul(period).map_or(0, |p| p >> 64);
    let at = sent.saturating_duration_since(epoch).as_nanos();
    // How far past its phase point the lease was sent.
    let past = (at % period + period - phase) % period;
    // Close enough: wait for the phase point. Otherwise it comes less than half an interval
    // after `sent`: go halfway to the one after (a renewal is never more than an interval
    // after the last, nor less than half of one), and land on the phase from there.
    let wait = if past <= period / 2 {
        period - past
    } else {
        period + period / 2 - past
    };
    sent + Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// What the worker asks of a running shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep processing.
    Run,
    /// The worker shuts down: let the processor checkpoint, then stop.
    Shutdown,
    /// Another worker asked for the lease: let the processor checkpoint, then stop (the worker
    /// then completes the handoff).
    Handoff,
}

/// How a shard's task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exited {
    /// Read to its end and checkpointed at `SHARD_END`.
    ShardEnded,
    /// The processor stopped because the lease was lost (not renewed in time, or taken).
    LeaseLost,
    /// Stopped as asked (shutdown or handoff), after `shutdown_requested`.
    Stopped,
    /// Reading failed for good (after `shutdown_requested`).
    ReadFailed,
    /// The processor kept failing and the failure policy releases the lease (after
    /// `shutdown_requested`, unless it panicked).
    ProcessorFailed,
    /// The processor panicked (the message).
    Panicked(String),
    /// The task was aborted (shutdown timeout).
    Aborted,
}

/// The answer to a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written; the item as it now is.
    Written(Lease),
    /// Refused by its condition; the item as the table held it, when it said.
    Refused(Option<Lease>),
    /// No answer, or an error: the write may or may not have happened.
    Failed,
}

/// In which role a lease is released (the lease table's [`ReleaseAs`](crate::lease_table::ReleaseAs)).
pub(crate) use crate::lease_table::ReleaseAs as Role;

/// What happened, as fed to [`Machine::handle`].
#[derive(Clone, Debug)]
pub(crate) enum Input {
    /// Nothing but time passing.
    Tick,
    /// A scan's answer (`None`: it failed), arriving now.
    Scanned(Option<Vec<Lease>>),
    /// A shard sync ended (whether it succeeded).
    Synced(bool),
    /// A renewal's answer; `sent` is when the write was sent.
    Renewed {
        key: String,
        sent: Instant,
        outcome: Outcome,
    },
    /// A take's answer; `sent` is when the write was sent.
    Taken {
        key: String,
        sent: Instant,
        outcome: Outcome,
    },
    /// A handoff request's answer.
    HandoffAsked { key: String, outcome: Outcome },
    /// A release's answer.
    Released { key: String, outcome: Outcome },
    /// A shard's task ended.
    Exited { key: String, how: Exited },
    /// The application asked the worker to shut down.
    ShutdownAsked,
}

/// What the worker's task must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Scan the lease table; answer with [`Input::Scanned`].
    Scan,
    /// Compare the shard list with the leases (create missing ones, delete finished ones);
    /// answer with [`Input::Synced`].
    SyncShards,
    /// Renew a running lease (with the shard's own copy, whose counter its checkpoints raise,
    /// or with `base` if its counter is higher: the item a refusal showed), waiting at most
    /// `within` for the answer (see [`renewal_window`]); answer with [`Input::Renewed`].
    Renew {
        key: String,
        base: Option<Lease>,
        within: Duration,
    },
    /// Take a lease as observed; answer with [`Input::Taken`].
    Take { lease: Lease },
    /// Ask the owner of a lease to hand it over; answer with [`Input::HandoffAsked`].
    AskHandoff { lease: Lease },
    /// Release a lease (with the shard's own copy if it ran, else this one); answer with
    /// [`Input::Released`].
    Release { lease: Lease, role: Role },
    /// Start a processor for a lease just taken, trusted until `trust_until`.
    Start { lease: Lease, trust_until: Instant },
    /// A running lease is trusted longer.
    Trust { key: String, until: Instant },
    /// A running lease was lost: its processor stops at once (`lease_lost`).
    Revoke { key: String },
    /// Ask a running processor to checkpoint and stop.
    Stop { key: String, reason: Stop },
    /// This worker has nothing more to do with the lease: what the task kept for it (the shard's
    /// lease copy) can go.
    Forget { key: String },
    /// The shutdown timeout passed: abort the processors still running.
    AbortProcessors,
    /// The worker has shut down.
    Finished,
}

/// A running lease.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    /// The lease as last written by this worker's take or renewal.
    lease: Lease,
    /// When the take that started this run was sent: answers to writes sent before belong to an
    /// earlier run of the same lease.
    started: Instant,
    trust_until: Instant,
    renewing: bool,
    /// When to renew next: half a renewal interval to a whole one after the last successful take
    /// or renewal was sent, at the lease's phase (see [`next_renewal`]), or soon after a failed
    /// renewal.
    renew_at: Instant,
    /// What the processor was asked (`Stop::Run` while it runs on).
    stop: Stop,
    /// Another worker asked for the lease: it is released as the previous owner.
    handing_off: bool,
    /// The lease was lost or its trust ran out; the processor is stopping by itself.
    revoked: bool,
    /// Renewals refused in a row (no other answer between) only because of this worker's own
    /// earlier writes.
    /// While any, the next renewal is made from `lease` (the item the last refusal showed) if
    /// the shard's copy is older.
    own_refusals: u32,
}

/// What to do with a lease once its take is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterTake {
    Start,
    /// The worker began shutting down meanwhile.
    Release,
}

/// The one local state of a lease this worker has anything to do with.
#[derive(Clone, Debug)]
pub(crate) enum Local {
    /// A take is being written.
    Taking { then: AfterTake },
    /// A handoff request is being written.
    Asking,
    /// Asked for; waiting for the previous owner to release (since when; the item as the request
    /// wrote it, or as last scanned).
    Awaiting { since: Instant, lease: Lease },
    /// A processor runs.
    Running(Run),
    /// Being released (after its processor stopped, or without one).
    Releasing {
        lease: Lease,
        role: Role,
        attempts: u32,
        retry_at: Option<Instant>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Working,
    ShuttingDown { deadline: Instant, aborted: bool },
    Finished,
}

/// One worker's lease coordination.
#[derive(Debug)]
pub(crate) struct Machine {
    me: String,
    settings: Settings,
    mode: Mode,
    locals: BTreeMap<String, Local>,
    /// Leases let go of, and when (a scan sent before says nothing new about them).
    forgotten: BTreeMap<String, Instant>,
    observations: Observations,
    /// The table as last scanned.
    table: Vec<Lease>,
    scanning: Option<Instant>,
    /// A scan is wanted as soon as the one under way ends.
    rescan: bool,
    next_scan: Instant,
    /// No scan before this instant: the fleet's scan budget (see [`FLEET_SCAN_ITEMS`]).
    scan_floor: Instant,
    syncing: bool,
    next_sync: Instant,
    /// The last plan found this worker above its fair share.
    above_share: bool,
    /// The last plan wanted no take, handoff or adoption.
    settled: bool,
    /// Whether this worker watches for expiries, as of the last scan.
    watch: Watch,
    /// The last scan found this worker settled and not watching: it scans seldom.
    relaxed: bool,
    /// Until this instant (two scan intervals after the start) the worker scans every
    /// [`HANDOFF_POLL`]: workers started together each see the others only once they write, so
    /// the first plans are made blind and the handoffs that even them out follow within a poll
    /// or two instead of a scan interval or two.
    eager_until: Instant,
    /// The instant the renewals' phases are counted from (the machine's start).
    epoch: Instant,
}

impl Machine {
    /// A worker named `me`, starting at `now` with a shard sync and then a scan.
    pub(crate) fn new(me: impl Into<String>, settings: Settings, now: Instant) -> Self {
        let eager_until = now + settings.scan_interval * 2;
        Machine {
            me: me.into(),
            settings,
            mode: Mode::Working,
            locals: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            observations: Observations::default(),
            table: Vec::new(),
            scanning: None,
            rescan: false,
            next_scan: now,
            scan_floor: now,
            syncing: false,
            next_sync: now,
            above_share: false,
            settled: false,
            watch: Watch {
                watching: true,
                live_owners: 0,
            },
            relaxed: false,
            eager_until,
            epoch: now,
        }
    }

    /// How many leases have a running processor.
    pub(crate) fn running(&self) -> usize {
        self.locals
            .values()
            .filter(|l| matches!(l, Local::Running(_)))
            .count()
    }

    /// Whether this worker watches for expiries, as of its last scan. The watchers (the
    /// [`Settings::watchers`] live owners whose ids sort first, or every worker of a smaller
    /// fleet) scan every scan interval and again when a lease they saw may expire, so a dead
    /// worker's leases are taken within the failover time and a scan interval. The others,
    /// once their plan wants nothing, scan less often (`scan_interval` x live owners /
    /// watchers, up to [`Settings::slow_scan`]; the slowest when they hold nothing): the
    /// fleet's scans stay about twice the watchers' whatever its size. (For the tests and the
    /// simulation: the machine itself reads `watch`.)
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn watching(&self) -> bool {
        self.watch.watching
    }

    /// Whether the last scan found this worker settled and not watching, so that it scans
    /// seldom (up to [`Settings::slow_scan`] apart).
    pub(crate) fn relaxed(&self) -> bool {
        self.relaxed
    }

    /// Whether the worker has shut down.
    pub(crate) fn is_finished(&self) -> bool {
        self.mode == Mode::Finished
    }

    /// When [`Machine::handle`] should next be called with [`Input::Tick`] if nothing else
    /// happens.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        match self.mode {
            Mode::Finished => return None,
            Mode::ShuttingDown { deadline, aborted } => {
                at(if aborted {
                    deadline + SHUTDOWN_GRACE
                } else {
                    deadline
                });
            }
            Mode::Working => {
                if !self.syncing {
                    at(self.next_sync);
                }
            }
        }
        if self.scanning.is_none() && self.wants_scans() {
            at(self.scan_due());
        }
        for local in self.locals.values() {
            match local {
                Local::Running(run) if !run.revoked => {
                    if !run.renewing {
                        at(run.renew_at);
                    }
                    at(run.trust_until);
                }
                Local::Releasing {
                    retry_at: Some(t), ..
                } => at(*t),
                _ => {}
            }
        }
        wake
    }

    /// When the next scan is due: when wanted, within the fleet's scan budget.
    fn scan_due(&self) -> Instant {
        self.next_scan.max(self.scan_floor)
    }

    fn wants_scans(&self) -> bool {
        match self.mode {
            Mode::Working => true,
            Mode::ShuttingDown { .. } => self
                .locals
                .values()
                .any(|l| matches!(l, Local::Awaiting { .. })),
            Mode::Finished => false,
        }
    }

    /// Takes in what happened at `now` and returns what to do.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.mode == Mode::Finished {
            return out;
        }
        match input {
            Input::Tick => {}
            Input::Scanned(Some(leases)) => self.on_scan(leases, now, &mut out),
            Input::Scanned(None) => {
                let sent = self.scanning.take().unwrap_or(now);
                self.rescan = false;
                self.next_scan = now + self.settings.scan_interval.min(Duration::from_secs(1));
                // A scan that timed out may still have been served: it counts in the budget.
                self.scan_floor = sent + self.budget_spacing();
            }
            Input::Synced(ok) => {
                self.syncing = false;
                if ok {
                    if self.watch.watching {
                        self.next_sync = now + self.settings.shard_sync_interval;
                        // New leases may have been created: look at once.
                        self.want_scan(now);
                    } else {
                        self.next_sync = now + self.settings.shard_sync_interval * SLOW_SYNC;
                    }
                } else {
                    self.next_sync = now + self.settings.scan_interval;
                }
            }
            Input::Renewed { key, sent, outcome } => {
                self.on_renewed(key, sent, outcome, now, &mut out)
            }
            Input::Taken { key, sent, outcome } => self.on_taken(key, sent, outcome, now, &mut out),
            Input::HandoffAsked { key, outcome } => self.on_asked(key, outcome, now, &mut out),
            Input::Released { key, outcome } => self.on_released(key, outcome, now, &mut out),
            Input::Exited { key, how } => self.on_exited(key, how, now, &mut out),
            Input::ShutdownAsked => self.on_shutdown(now, &mut out),
        }
        self.on_time(now, &mut out);
        out
    }

    fn want_scan(&mut self, now: Instant) {
        if self.scanning.is_some() {
            self.rescan = true;
        } else {
            self.next_scan = self.next_scan.min(now);
        }
    }

    /// This worker has nothing more to do with `key` (for now).
    fn forget(&mut self, key: &str, now: Instant, out: &mut Vec<Action>) {
        self.locals.remove(key);
        self.forgotten.insert(key.to_owned(), now);
        out.push(Action::Forget {
            key: key.to_owned(),
        });
    }

    /// Timers: renewals, trust running out, retries, scans, shard syncs, the shutdown deadline.
    fn on_time(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Mode::ShuttingDown { deadline, aborted } = self.mode {
            if !aborted && now >= deadline {
                let running = self.running();
                if running > 0 {
                    warn!(
                        running,
                        "processors did not stop within the shutdown timeout; aborting them"
                    );
                    out.push(Action::AbortProcessors);
                }
                self.mode = Mode::ShuttingDown {
                    deadline,
                    aborted: true,
                };
            }
            if self.locals.is_empty() || (aborted && now >= deadline + SHUTDOWN_GRACE) {
                if !self.locals.is_empty() {
                    warn!(
                        left = self.locals.len(),
                        "shutting down with leases not released"
                    );
                }
                self.mode = Mode::Finished;
                out.push(Action::Finished);
                return;
            }
        }
        for (key, local) in &mut self.locals {
            match local {
                Local::Running(run) if !run.revoked => {
                    if now >= run.trust_until {
                        // The shard's task stops by itself at this instant; no more renewals.
                        run.revoked = true;
                        warn!(lease = %key, "lease not renewed in time; its processor stops");
                        continue;
                    }
                    if !run.renewing && now >= run.renew_at {
                        run.renewing = true;
                        out.push(Action::Renew {
                            key: key.clone(),
                            base: (run.own_refusals > 0).then(|| run.lease.clone()),
                            within: renewal_window(
                                run.trust_until.saturating_duration_since(now),
                                self.settings.call_timeout,
                                self.settings.longest_call,
                            ),
                        });
                    }
                }
                Local::Releasing {
                    lease,
                    role,
                    retry_at,
                    ..
                } if retry_at.is_some_and(|t| now >= t) => {
                    *retry_at = None;
                    out.push(Action::Release {
                        lease: lease.clone(),
                        role: *role,
                    });
                }
                _ => {}
            }
        }
        self.forgotten
            .retain(|_, at| now.duration_since(*at) < FORGET_AFTER);
        if self.mode == Mode::Working && !self.syncing && now >= self.next_sync {
            self.syncing = true;
            out.push(Action::SyncShards);
        }
        if self.scanning.is_none() && self.wants_scans() && now >= self.scan_due() {
            self.scanning = Some(now);
            self.rescan = false;
            out.push(Action::Scan);
        }
    }

    fn on_scan(&mut self, leases: Vec<Lease>, now: Instant, out: &mut Vec<Action>) {
        let sent = self.scanning.take().unwrap_or(now);
        self.observations.record(&leases, now);
        self.table = leases;
        let me = self.me.clone();
        let failover = self.settings.failover;
        let shutting_down = self.mode != Mode::Working;
        let table = std::mem::take(&mut self.table);
        for lease in &table {
            let asked_of_me = lease.checkpoint_owner.as_deref() == Some(me.as_str())
                && lease.owner.as_deref() != Some(me.as_str());
            match self.locals.get_mut(&lease.key) {
                Some(Local::Running(run)) => {
                    // A scan older than this worker's last write of the lease says nothing.
                    if asked_of_me && lease.counter >= run.lease.counter {
                        ask_to_hand_over(&lease.key, run, lease, out);
                    }
                }
                Some(Local::Awaiting { since, lease: copy }) if sent >= *since => {
                    let since = *since;
                    *copy = lease.clone();
                    let owner_is_me = lease.owner.as_deref() == Some(me.as_str());
                    if owner_is_me && !lease.in_handoff() {
                        if shutting_down {
                            info!(lease = %lease.key, "lease handed over while shutting down; released");
                            self.release(lease.clone(), Role::Owner, out);
                        } else {
                            info!(lease = %lease.key, from = ?lease.checkpoint_owner, "lease handed over");
                            self.take(lease.clone(), out);
                        }
                    } else if owner_is_me {
                        let expired = self.observations.is_expired(lease, now, failover);
                        let overdue = now.duration_since(since) > self.settings.handoff_timeout;
                        if shutting_down {
                            self.release(lease.clone(), Role::NewOwner, out);
                        } else if expired {
                            // The previous owner stopped renewing: its trust has run out.
                            warn!(lease = %lease.key, from = ?lease.checkpoint_owner,
                                "the previous owner did not release the lease and its lease expired; taking it");
                            self.take(lease.clone(), out);
                        } else if overdue {
                            // It still renews, so it still trusts the lease: taking it now would
                            // run two processors at once. Withdraw; balancing may ask again.
                            warn!(lease = %lease.key, from = ?lease.checkpoint_owner,
                                "the previous owner did not release the lease within the handoff timeout; request withdrawn");
                            self.release(lease.clone(), Role::NewOwner, out);
                        }
                    } else if asked_of_me {
                        // Asked for by a third worker before this one started it: let it go.
                        info!(lease = %lease.key, to = ?lease.owner, "lease asked for while awaiting it; released");
                        self.release(lease.clone(), Role::PreviousOwner, out);
                    } else {
                        debug!(lease = %lease.key, owner = ?lease.owner, "awaited lease went to another worker");
                        self.forget(&lease.key, now, out);
                    }
                }
                Some(_) => {}
                None => {
                    let recently_let_go =
                        self.forgotten.get(&lease.key).is_some_and(|at| sent <= *at);
                    if asked_of_me && !recently_let_go {
                        // A handoff is asked of this worker for a lease it does not run (it
                        // restarted, or forgot a lease it was only awaiting): complete it.
                        info!(lease = %lease.key, to = ?lease.owner, "handoff asked of a lease not running here; released");
                        self.release(lease.clone(), Role::PreviousOwner, out);
                    }
                }
            }
        }
        // Awaited leases no longer in the table.
        let gone: Vec<String> = self
            .locals
            .iter()
            .filter(|(key, local)| {
                matches!(local, Local::Awaiting { since, .. } if sent >= *since)
                    && !table.iter().any(|l| &l.key == *key)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            self.forget(&key, now, out);
        }
        self.table = table;
        if self.mode == Mode::Working {
            self.plan(sent, now, out);
        }
        let holding = self.locals.values().any(|l| matches!(l, Local::Running(_)));
        let was_watching = self.watch.watching;
        self.watch = Watch::judge(
            &self.table,
            &self.observations,
            &self.me,
            holding,
            now,
            failover,
            self.settings.watchers,
            self.settings.max_leases,
        );
        if self.watch.watching && !was_watching {
            // A worker that starts watching syncs on the watchers' schedule.
            self.next_sync = self.next_sync.min(now + self.settings.shard_sync_interval);
        }
        // While a handoff to this worker is under way, or while it holds more than its share
        // (others will ask it for leases), look often: handoffs complete within a poll or two.
        let awaiting = self
            .locals
            .values()
            .any(|l| matches!(l, Local::Awaiting { .. }));
        let moving = self.locals.values().any(|l| {
            matches!(
                l,
                Local::Taking { .. } | Local::Asking | Local::Releasing { .. }
            )
        });
        let eager = self.mode == Mode::Working && now < self.eager_until;
        let above = self.above_share && self.mode == Mode::Working;
        let relaxed = self.mode == Mode::Working
            && !self.watch.watching
            && self.settled
            && !(awaiting || moving || eager || above);
        self.relaxed = relaxed;
        self.next_scan = now
            + if relaxed {
                self.relaxed_interval(holding)
            } else {
                self.settings.scan_interval
            };
        if awaiting || eager || above {
            self.next_scan = self.next_scan.min(now + HANDOFF_POLL);
        }
        // Watchers look again when a lease they saw may expire; the others learn of expiries
        // from their own slower scans (or from a watcher's take), except for leases they have
        // never seen renewed: their owner may have died before this worker started looking, so
        // that the watchers it counts on are not watching them (one look at their expiry, once,
        // while this worker is new to them).
        let unconfirmed = || {
            self.table
                .iter()
                .filter(|l| !l.is_finished() && !self.observations.has_moved(l))
        };
        let expiry = if relaxed {
            self.observations
                .next_expiry(unconfirmed(), &self.me, now, failover)
        } else {
            self.observations
                .next_expiry(&self.table, &self.me, now, failover)
        };
        if let Some(at) = expiry {
            self.next_scan = self.next_scan.min(at + Duration::from_millis(1));
        }
        // A free lease nobody took within the patience is taken whatever the fair share says
        // (by the plan); watchers look again when that falls due, so that a lease released by a
        // worker that left is not left to the slower scans of the workers below their share.
        if self.watch.watching
            && self.mode == Mode::Working
            && let Some(at) = self
                .table
                .iter()
                .filter(|l| l.owner.is_none())
                .filter_map(|l| self.observations.expires_at(l, self.settings.scan_interval))
                .filter(|at| *at >= now)
                .min()
        {
            self.next_scan = self.next_scan.min(at + Duration::from_millis(1));
        }
        if std::mem::take(&mut self.rescan) {
            self.next_scan = now;
        }
        self.scan_floor = sent + self.budget_spacing();
    }

    /// How far apart this worker's scans are at least, sharing the fleet's scan budget
    /// ([`Settings::scan_budget`]) with the other workers that do not watch, as of its last
    /// scan: nothing for a watcher, and never more than a scan interval, so that a worker
    /// awaiting a handoff still sees the lease released within a scan interval (a healthy fleet
    /// moves a lease within a couple of scans), however large the fleet: the budget only spaces
    /// out the polls and rescans that came sooner.
    fn budget_spacing(&self) -> Duration {
        if self.watch.watching {
            return Duration::ZERO;
        }
        let items = (self.watch.live_owners.max(1) as u64).saturating_mul(self.table.len() as u64);
        let spacing = Duration::from_micros(
            items.saturating_mul(1_000_000) / self.settings.scan_budget.max(1),
        );
        spacing.min(self.settings.scan_interval)
    }

    /// How long a settled worker that does not watch waits between scans: the scan interval
    /// times the live owners per watcher, at most [`Settings::slow_scan`], which is also the wait
    /// of a worker that holds nothing.
    fn relaxed_interval(&self, holding: bool) -> Duration {
        let slow = self.settings.slow_scan.max(self.settings.scan_interval);
        if !holding {
            return slow;
        }
        let watchers = self.settings.watchers.max(1) as u32;
        let owners = u32::try_from(self.watch.live_owners).unwrap_or(u32::MAX);
        (self.settings.scan_interval.saturating_mul(owners) / watchers)
            .clamp(self.settings.scan_interval, slow)
    }

    fn plan(&mut self, sent: Instant, now: Instant, out: &mut Vec<Action>) {
        let mut held = BTreeSet::new();
        let mut letting_go = BTreeSet::new();
        for (key, local) in &self.locals {
            let mine = match local {
                Local::Taking { .. } | Local::Asking | Local::Awaiting { .. } => true,
                Local::Running(run) => !run.handing_off && !run.revoked,
                Local::Releasing { .. } => false,
            };
            if mine {
                held.insert(key.clone());
            } else {
                letting_go.insert(key.clone());
            }
        }
        for (key, at) in &self.forgotten {
            if sent <= *at {
                letting_go.insert(key.clone());
            }
        }
        let plan = balance::plan(
            &self.table,
            &self.observations,
            &self.me,
            Mine {
                held: &held,
                letting_go: &letting_go,
            },
            now,
            BalanceLimits {
                failover: self.settings.failover,
                max_leases: self.settings.max_leases,
                max_handoffs: self.settings.max_handoffs,
                free_patience: self.settings.scan_interval,
            },
        );
        self.above_share = plan.above_share;
        self.settled = plan.take.is_empty() && plan.adopt.is_empty() && plan.hand_off.is_empty();
        for lease in plan.take {
            debug!(lease = %lease.key, owner = ?lease.owner, "taking");
            self.take(lease, out);
        }
        for lease in plan.adopt {
            debug!(lease = %lease.key, from = ?lease.checkpoint_owner, "a handoff to this worker is under way");
            self.locals
                .insert(lease.key.clone(), Local::Awaiting { since: now, lease });
        }
        for lease in plan.hand_off {
            debug!(lease = %lease.key, from = ?lease.owner, "asking for a handoff");
            self.locals.insert(lease.key.clone(), Local::Asking);
            out.push(Action::AskHandoff { lease });
        }
    }

    fn take(&mut self, lease: Lease, out: &mut Vec<Action>) {
        self.locals.insert(
            lease.key.clone(),
            Local::Taking {
                then: AfterTake::Start,
            },
        );
        out.push(Action::Take { lease });
    }

    fn release(&mut self, lease: Lease, role: Role, out: &mut Vec<Action>) {
        self.locals.insert(
            lease.key.clone(),
            Local::Releasing {
                lease: lease.clone(),
                role,
                attempts: 1,
                retry_at: None,
            },
        );
        out.push(Action::Release { lease, role });
    }

    fn on_renewed(
        &mut self,
        key: String,
        sent: Instant,
        outcome: Outcome,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let me = self.me.clone();
        let trust = self.settings.trust;
        match self.locals.get_mut(&key) {
            // An answer to a renewal of an earlier run of this lease (sent before this run's
            // take): it says nothing about this run.
            Some(Local::Running(run)) if sent < run.started => {}
            Some(Local::Running(run)) => {
                run.renewing = false;
                if run.revoked {
                    return;
                }
                match outcome {
                    Outcome::Written(lease) => {
                        self.observations.note(&lease, now);
                        run.own_refusals = 0;
                        run.renew_at =
                            next_renewal(&key, sent, self.epoch, self.settings.renew_interval);
                        let until = sent + trust;
                        if until > run.trust_until {
                            run.trust_until = until;
                            out.push(Action::Trust {
                                key: key.clone(),
                                until,
                            });
                        }
                        let asked = lease.checkpoint_owner.as_deref() == Some(me.as_str())
                            && lease.owner.as_deref() != Some(me.as_str());
                        run.lease = lease.clone();
                        if asked {
                            ask_to_hand_over(&key, run, &lease, out);
                        }
                    }
                    Outcome::Refused(Some(current))
                        if current.raised_by_own_write(&run.lease, &me) =>
                    {
                        // Refused only because an earlier write of this worker raised the
                        // counter after its answer was lost (a renewal or checkpoint that timed
                        // out, a request the SDK sent again after its connection dropped):
                        // nobody else took the lease while it is trusted (see
                        // `Lease::raised_by_own_write`). Renewed again from the item, at once
                        // the first times in a row, then after a pause (answers lost again and
                        // again); the trust still counts from the last renewal known to be
                        // written, and bounds how long this goes on.
                        debug!(lease = %key, counter = current.counter,
                            "renewal refused by this worker's own earlier write; renewing again");
                        run.own_refusals += 1;
                        run.lease = current;
                        run.renew_at = if run.own_refusals <= OWN_REFUSALS_AT_ONCE {
                            now
                        } else {
                            now + RETRY
                        };
                    }
                    Outcome::Refused(current) => {
                        info!(lease = %key, owner = ?current.as_ref().and_then(|l| l.owner.clone()),
                            "lease lost: renewal refused");
                        run.revoked = true;
                        out.push(Action::Revoke { key });
                    }
                    Outcome::Failed => {
                        // Tried again soon, while trusted (past the deadline nothing is sent).
                        run.own_refusals = 0;
                        run.renew_at = now + RETRY;
                    }
                }
            }
            Some(Local::Releasing { lease, role, .. }) => {
                // A renewal that was under way when the processor stopped.
                if let Outcome::Written(renewed) = outcome {
                    if renewed.checkpoint_owner.as_deref() == Some(me.as_str()) {
                        *role = Role::PreviousOwner;
                    }
                    *lease = renewed;
                }
            }
            _ => {}
        }
    }

    fn on_taken(
        &mut self,
        key: String,
        sent: Instant,
        outcome: Outcome,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(Local::Taking { then }) = self.locals.get(&key) else {
            warn!(lease = %key, "a take's answer for a lease not being taken; ignored");
            return;
        };
        let then = *then;
        match outcome {
            Outcome::Written(lease) => {
                self.observations.note(&lease, now);
                let trust_until = sent + self.settings.trust;
                if then == AfterTake::Release || trust_until <= now {
                    if then == AfterTake::Start {
                        warn!(lease = %key, "the take was answered too late to trust the lease; released");
                    }
                    self.release(lease, Role::Owner, out);
                    return;
                }
                info!(lease = %key, "lease taken");
                let renew_at = next_renewal(&key, sent, self.epoch, self.settings.renew_interval);
                self.locals.insert(
                    key,
                    Local::Running(Run {
                        lease: lease.clone(),
                        started: sent,
                        trust_until,
                        renewing: false,
                        renew_at,
                        stop: Stop::Run,
                        handing_off: false,
                        revoked: false,
                        own_refusals: 0,
                    }),
                );
                out.push(Action::Start { lease, trust_until });
            }
            Outcome::Refused(_) => {
                debug!(lease = %key, "another worker took it first");
                self.forget(&key, now, out);
            }
            Outcome::Failed => {
                debug!(lease = %key, "take failed");
                self.forget(&key, now, out);
                // It may have been written: look again soon.
                self.want_scan(now);
            }
        }
    }

    fn on_asked(&mut self, key: String, outcome: Outcome, now: Instant, out: &mut Vec<Action>) {
        if !matches!(self.locals.get(&key), Some(Local::Asking)) {
            return;
        }
        match outcome {
            Outcome::Written(lease) if self.mode != Mode::Working => {
                self.release(lease, Role::NewOwner, out);
            }
            Outcome::Written(lease) => {
                info!(lease = %key, "handoff asked for");
                self.locals
                    .insert(key, Local::Awaiting { since: now, lease });
                self.next_scan = self.next_scan.min(now + HANDOFF_POLL);
            }
            Outcome::Refused(_) | Outcome::Failed => {
                self.locals.remove(&key);
            }
        }
    }

    fn on_released(&mut self, key: String, outcome: Outcome, now: Instant, out: &mut Vec<Action>) {
        let me = self.me.clone();
        let Some(Local::Releasing {
            lease,
            role,
            attempts,
            retry_at,
        }) = self.locals.get_mut(&key)
        else {
            return;
        };
        match outcome {
            Outcome::Written(_) => {
                debug!(lease = %key, "lease released");
                self.forget(&key, now, out);
                // Below `max_leases` again, it may now be the owner that should watch: the
                // others stop counting on it as full only when they scan (seed 43323: the
                // top-ranked owner handed a lease over while at its cap and did not scan, or
                // watch, for 13 s).
                if self.mode == Mode::Working && self.settings.max_leases.is_some() {
                    self.want_scan(now);
                }
            }
            Outcome::Refused(Some(current)) if *attempts < RELEASE_ATTEMPTS => {
                // Released with an out-of-date copy (a write whose answer was lost): try again
                // with the item as it is, if it is still this worker's to release.
                let owner = current.owner.as_deref() == Some(me.as_str());
                let again = if current.checkpoint_owner.as_deref() == Some(me.as_str()) {
                    Some(Role::PreviousOwner)
                } else if owner && !current.in_handoff() {
                    Some(Role::Owner)
                } else if owner {
                    Some(Role::NewOwner)
                } else {
                    None
                };
                match again {
                    Some(again) => {
                        *attempts += 1;
                        *role = again;
                        *lease = current.clone();
                        out.push(Action::Release {
                            lease: current,
                            role: again,
                        });
                    }
                    None => self.forget(&key, now, out),
                }
            }
            Outcome::Refused(_) => self.forget(&key, now, out),
            Outcome::Failed if *attempts < RELEASE_ATTEMPTS => {
                *attempts += 1;
                *retry_at = Some(now + RETRY);
            }
            Outcome::Failed => {
                warn!(lease = %key, "releasing failed; the lease is left to expire");
                self.forget(&key, now, out);
            }
        }
    }

    fn on_exited(&mut self, key: String, how: Exited, now: Instant, out: &mut Vec<Action>) {
        let Some(Local::Running(run)) = self.locals.get(&key) else {
            error!(lease = %key, ?how, "a shard task ended that was not running here");
            return;
        };
        let run = run.clone();
        let role = if run.handing_off {
            Role::PreviousOwner
        } else {
            Role::Owner
        };
        match how {
            Exited::ShardEnded => {
                info!(lease = %key, "shard ended");
                // Its children may start now.
                self.want_scan(now);
                if run.handing_off && !run.revoked {
                    self.release(run.lease, Role::PreviousOwner, out);
                } else {
                    self.forget(&key, now, out);
                }
            }
            Exited::LeaseLost => {
                self.forget(&key, now, out);
            }
            Exited::ReadFailed if !run.revoked => {
                // Reading failing for good may mean the stream changed (or is gone): look at the
                // shard list now rather than at the next periodic sync.
                if self.mode == Mode::Working && !self.syncing {
                    self.next_sync = now;
                }
                self.release(run.lease, role, out);
            }
            Exited::Stopped
            | Exited::ReadFailed
            | Exited::ProcessorFailed
            | Exited::Panicked(_)
            | Exited::Aborted => {
                if let Exited::Panicked(message) = &how {
                    error!(lease = %key, panic = %message, "the shard's processor panicked; its lease is released");
                }
                if run.revoked {
                    self.forget(&key, now, out);
                } else {
                    self.release(run.lease, role, out);
                }
            }
        }
    }

    fn on_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.mode != Mode::Working {
            return;
        }
        info!(running = self.running(), "shutting down");
        self.mode = Mode::ShuttingDown {
            deadline: now + self.settings.shutdown_timeout,
            aborted: false,
        };
        for (key, local) in &mut self.locals {
            match local {
                Local::Running(run) if run.stop == Stop::Run && !run.revoked => {
                    run.stop = Stop::Shutdown;
                    out.push(Action::Stop {
                        key: key.clone(),
                        reason: Stop::Shutdown,
                    });
                }
                Local::Taking { then } => *then = AfterTake::Release,
                _ => {}
            }
        }
        // Handoffs asked for and not completed are withdrawn: the previous owner is owner again
        // (rather than leaving the lease to a worker that is gone once it is released).
        let awaited: Vec<Lease> = self
            .locals
            .values()
            .filter_map(|l| match l {
                Local::Awaiting { lease, .. } => Some(lease.clone()),
                _ => None,
            })
            .collect();
        for lease in awaited {
            if lease.in_handoff() {
                self.release(lease, Role::NewOwner, out);
            } else {
                // Handed over already: released as its owner.
                self.release(lease, Role::Owner, out);
            }
        }
    }
}

/// Another worker asked for a running lease: let the processor checkpoint and stop.
fn ask_to_hand_over(key: &str, run: &mut Run, lease: &Lease, out: &mut Vec<Action>) {
    if run.handing_off || run.revoked {
        return;
    }
    run.handing_off = true;
    if run.stop == Stop::Run {
        info!(lease = %key, to = ?lease.owner, "handoff asked of this worker");
        run.stop = Stop::Handoff;
        out.push(Action::Stop {
            key: key.to_owned(),
            reason: Stop::Handoff,
        });
    }
}
