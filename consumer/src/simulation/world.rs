//! The simulated world: a stream that splits and merges, a lease table, a network that may fail,
//! slow down or lose answers, workers (the real machine, and a driver as `worker.rs`), shard
//! tasks (as `shard.rs`), the seeded scheduler of faults, and the invariants.

// Events, answers and pending writes carry whole leases: boxing them would only add allocations
// to a loop that runs millions of times per test.
#![allow(clippy::large_enum_variant)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::time::Instant;

use super::table::TableModel;
use crate::{
    checkpoint::{Checkpoint, SequenceNumber},
    coordination::{Action, Exited, Input, Machine, Outcome, Role, SHUTDOWN_GRACE, Settings, Stop},
    lease::Lease,
    lease_table::{AfterRefusal, HOLDER_WRITE_ATTEMPTS, HolderWrite, after_refusal},
    lineage::{self, ChildShard, InitialPosition, ShardDescription},
};

/// Simulated real time, in microseconds.
type T = u64;

const MS: T = 1_000;
const SEC: T = 1_000_000;

fn micros(d: Duration) -> T {
    d.as_micros() as T
}

fn secs(t: T) -> f64 {
    t as f64 / SEC as f64
}

/// What one schedule did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The schedule's seed.
    pub seed: u64,
    /// Whether the table's calls failed, slowed down and lost answers in this schedule.
    pub faulty: bool,
    /// Whether the schedule only added and removed workers gracefully and resharded.
    pub gentle: bool,
    /// The schedule's `max_leases` per worker, if it set one.
    pub max_leases: Option<usize>,
    /// Events the scheduler ran.
    pub events: u64,
    /// Simulated time.
    pub simulated: Duration,
    /// Faults and changes injected: kills, pauses (longer than the failover time), joins,
    /// graceful shutdowns, panics, splits, merges.
    pub kills: u32,
    /// Pauses of a worker.
    pub pauses: u32,
    /// Pauses longer than the failover time.
    pub long_pauses: u32,
    /// Workers started after the beginning.
    pub joins: u32,
    /// Graceful shutdowns.
    pub shutdowns: u32,
    /// Processor panics.
    pub panics: u32,
    /// Splits.
    pub splits: u32,
    /// Merges.
    pub merges: u32,
    /// Processors started.
    pub processors: u32,
    /// Records processed more than once (after kills, pauses, lost leases and panics).
    pub duplicates: u64,
    /// The longest time a workable shard had no trusted processor, after the last disruption,
    /// while a worker watched for expiries throughout.
    pub longest_gap: Duration,
    /// The same while no worker watched throughout (every watcher died or froze).
    pub longest_unwatched_gap: Duration,
    /// Table scans sent.
    pub scans: u64,
    /// Holder writes refused only by the worker's own earlier write (whose answer was lost):
    /// a task's checkpoint or children made again or answered from the item, or a renewal of
    /// a lease's current run heard by its machine, which must renew again, not give it up.
    pub own_writes_resolved: u64,
    /// Leases whose trust ran out on a worker that ran throughout it (neither revoked nor
    /// paused): no renewal was answered in time.
    pub trust_ran_out: u64,
}

/// A fleet's cold start, as [`cold_start`] measured it.
#[derive(Clone, Debug, Default)]
pub struct ColdStart {
    /// From the start to the first check (every 250 ms) at which every workable shard ran, with
    /// a trusted processor, and the running workers' counts differed by at most one.
    pub even_after: Option<Duration>,
    /// Takes and handoff requests written up to then.
    pub moves: usize,
    /// Table scans sent up to then.
    pub scans: u64,
    /// The whole run (which goes on for 30 s after the split is even, and then makes the final
    /// checks: nothing moved meanwhile, nothing skipped).
    pub report: Report,
}

/// An invariant that did not hold.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The schedule's seed (`SIM_SEED=seed` replays it).
    pub seed: u64,
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// When, in simulated time.
    pub at: Duration,
    /// The schedule's events up to the failure (when run with the trace on).
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {}: invariant '{}' broken at {:.3} s: {}",
            self.seed,
            self.invariant,
            self.at.as_secs_f64(),
            self.detail
        )?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(f, "(replay with SIM_SEED={})", self.seed)
    }
}

/// Runs the schedule of `seed`; with `trace`, the failure carries every event.
pub fn run(seed: u64, trace: bool) -> Result<Report, Failure> {
    let mut world = World::new(seed, trace);
    world.run()
}

/// Starts `workers` workers together on a stream of `shards` shards, with the worker's default
/// settings, a table without faults and nothing else happening, and measures how long the fleet
/// takes to an even split (see [`ColdStart`]); gives up after `limit` of simulated time. Every
/// invariant is checked on the way, as in [`run`]; after the split is even the world runs on for
/// 30 s and must stay still (no take, no handoff).
pub fn cold_start(
    seed: u64,
    workers: usize,
    shards: usize,
    limit: Duration,
) -> Result<ColdStart, Failure> {
    let mut world = World::cold(seed, workers, shards, limit);
    let report = world.run()?;
    let cold = world.cold.unwrap_or_default();
    Ok(ColdStart {
        even_after: cold.even_at.map(Duration::from_micros),
        moves: cold.moves,
        scans: cold.scans,
        report,
    })
}

/// What a cold start's run watches for.
#[derive(Clone, Copy, Debug, Default)]
struct Cold {
    even_at: Option<T>,
    moves: usize,
    scans: u64,
}

/// A worker's clock: its own offset and drift from real time.
#[derive(Clone, Copy, Debug)]
struct Clock {
    offset: T,
    /// Parts per million faster (positive) or slower than real time.
    drift_ppm: i64,
}

impl Clock {
    fn local_micros(&self, t: T) -> T {
        let drift = (t as i128 * self.drift_ppm as i128 / 1_000_000) as i64;
        (self.offset as i64 + t as i64 + drift).max(0) as T
    }

    /// The first real time at which the clock reads at least `local` (µs since the base).
    fn real_micros(&self, local: T) -> T {
        let since = local.saturating_sub(self.offset) as i128;
        let t = (since * 1_000_000) / (1_000_000 + self.drift_ppm as i128);
        let mut t = t.max(0) as T;
        while self.local_micros(t) < local {
            t += 1;
        }
        t
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Alive,
    Paused { until: T },
    Dead,
    Finished,
}

/// The shard's own lease copy (`Arc<Mutex<Lease>>` in `worker.rs`): renewals, releases and the
/// shard's checkpoints use and update it, one at a time, in order.
#[derive(Debug)]
struct Copy {
    lease: Lease,
    busy: Option<u64>,
    queue: VecDeque<Pending>,
}

#[derive(Clone, Debug)]
enum Pending {
    /// With the item a refusal showed, if any (used when newer than the copy), and how long to
    /// wait for the answer.
    Renew(Option<Lease>, T),
    Release {
        lease: Lease,
        role: Role,
    },
    Checkpoint {
        task: u64,
        at: Checkpoint,
    },
    SetChildren {
        task: u64,
        children: BTreeSet<String>,
    },
}

#[derive(Debug)]
struct Worker {
    id: String,
    inc: u32,
    clock: Clock,
    machine: Machine,
    life: Life,
    shutting_down: bool,
    /// Since when it has run without a pause (start or last resume).
    running_since: T,
    /// Since when its machine has watched for expiries without a break (`None`: it does not).
    watching_since: Option<T>,
    /// The last check at which it held `max_leases` unfinished leases (0: never).
    full_at: T,
    wake_generation: u64,
    deferred: Vec<Ev>,
    /// Lease key -> copy id.
    copies: BTreeMap<String, u64>,
    /// Lease key -> live task id.
    tasks: BTreeMap<String, u64>,
    steps_at: (T, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    LeaseLost,
    ShutdownRequested,
    ShardEnded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Exited,
    Died,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Started on a lease already at `SHARD_END`: the task ends at its first step, with no
    /// processor (as `shard.rs` does).
    Finished,
    Reading,
    Batch,
    Shutdown,
    Child(usize),
    ChildRetry(usize),
    SetChildren,
    EndCheckpoint,
    EndRetry,
}

#[derive(Debug)]
struct Task {
    inc: u32,
    key: String,
    copy: u64,
    proc: usize,
    trust_until: Instant,
    stop: Stop,
    phase: Phase,
    /// When the phase moves on by itself (the next batch, or a retry); `T::MAX` while a write is
    /// awaited. Moving the trust deadline does not move it.
    wake: T,
    delivered: u64,
    children: Vec<Lease>,
    generation: u64,
    panic: bool,
    alive: bool,
    /// The machine revoked the lease (its trust was moved to the instant of the revocation).
    revoked: bool,
    /// The request of this task holding the copy, if any.
    writing: Option<u64>,
}

/// A processor's life, for the invariants.
#[derive(Debug)]
struct Proc {
    shard: String,
    start_cp: Checkpoint,
    delivered: u64,
    checkpointed: u64,
    told: Option<Told>,
    how: Option<Exited>,
    end: Option<(T, End)>,
}

#[derive(Clone, Debug)]
enum Op {
    Scan,
    Sync,
    Renew(Lease),
    Take(Lease),
    HandOff(Lease),
    Release(Lease, Role),
    Checkpoint(Lease, Checkpoint),
    SetChildren(Lease, BTreeSet<String>),
    Create(Lease),
}

#[derive(Clone, Debug)]
enum Answer {
    Leases(Vec<Lease>),
    Synced,
    Write(Outcome),
    Created,
    Failed,
}

/// A holder write's refusal, resolved (see `World::after_own_write`).
enum Resolved {
    /// Made again.
    Again(Op),
    /// Answered without a write.
    Answer(Answer),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Machine,
    Task(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Answered,
    /// Fails before reaching the table.
    FailsBefore,
    /// Applied, but the answer is lost (the call times out).
    AnswerLost,
}

/// One attempt of a request: when its first attempt was sent, which attempt it is, and how long
/// the worker waits for its answer.
struct Attempt {
    sent: Instant,
    number: u32,
    timeout: T,
}

#[derive(Clone, Debug)]
struct Req {
    inc: u32,
    origin: Origin,
    op: Op,
    sent: Instant,
    fate: Fate,
    answer: Option<Answer>,
    /// The copy this request holds.
    copy: Option<u64>,
    /// The task that sent it ended: its answer goes nowhere.
    orphan: bool,
    /// Attempts of this write so far, this one included (a holder write is made again when it
    /// was refused only by the worker's own earlier write, as `LeaseTable` does).
    attempts: u32,
    /// The worker was answered (timed out) before the table applied the request: the table
    /// still applies it, and nobody hears of it.
    delivered: bool,
}

#[derive(Clone, Debug)]
enum Ev {
    Wake {
        inc: u32,
        generation: u64,
    },
    Apply {
        req: u64,
    },
    Answer {
        req: u64,
    },
    /// The worker stops waiting for the answer.
    TimedOut {
        req: u64,
    },
    TaskStep {
        task: u64,
        generation: u64,
    },
    Input {
        inc: u32,
        input: Input,
    },
    Resume {
        inc: u32,
    },
    Chaos,
    Check,
}

impl Ev {
    /// The worker whose process handles this event (deferred while it is paused).
    fn target(&self, world: &World) -> Option<u32> {
        match self {
            Ev::Wake { inc, .. } | Ev::Input { inc, .. } => Some(*inc),
            Ev::Answer { req } | Ev::TimedOut { req } => world.reqs.get(req).map(|r| r.inc),
            Ev::TaskStep { task, .. } => world.tasks.get(task).map(|t| t.inc),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct SimShard {
    id: String,
    parents: BTreeSet<String>,
    opened: T,
    interval: T,
    /// The last record, once closed.
    last: Option<u64>,
}

impl SimShard {
    fn available(&self, t: T) -> u64 {
        let n = t.saturating_sub(self.opened) / self.interval;
        self.last.map_or(n, |last| n.min(last))
    }
}

/// How the table's calls behave in a schedule.
#[derive(Clone, Copy, Debug)]
struct Network {
    faulty: bool,
    fail_before: f64,
    answer_lost: f64,
    slow: f64,
    /// Brownouts: windows where most calls fail.
    brownouts: [(T, T); 2],
    /// A window where every call is slow, answered in about the ordinary call timeout (0.6 to
    /// 1.8 times it): a table saturated by its load.
    sluggish: (T, T),
}

struct World {
    seed: u64,
    rng: StdRng,
    base: Instant,
    t: T,
    seq: u64,
    queue: BTreeMap<(T, u64), Ev>,
    trace: Option<Vec<String>>,
    settings: Settings,
    net: Network,
    call_timeout: T,
    batch_interval: T,
    chaos_until: T,
    /// Only joins, graceful shutdowns, splits and merges.
    gentle: bool,
    end: T,
    table: TableModel,
    shards: Vec<SimShard>,
    processed: BTreeMap<String, Vec<u32>>,
    workers: BTreeMap<u32, Worker>,
    next_inc: u32,
    next_worker_name: u32,
    copies: BTreeMap<u64, Copy>,
    next_copy: u64,
    tasks: BTreeMap<u64, Task>,
    next_task: u64,
    reqs: BTreeMap<u64, Req>,
    next_req: u64,
    procs: Vec<Proc>,
    /// Latest proc per shard.
    last_proc: BTreeMap<String, usize>,
    last_disruption: T,
    /// The last time the running workers had less room under `max_leases` than the workable
    /// shards need: some shards then rightly go unserved, and the takeover bounds count from
    /// when the room came back.
    short_of_room: T,
    /// Since when a workable shard has had no trusted processor, and its lease's counter then.
    unserved_since: BTreeMap<String, (T, u64)>,
    /// Since when no running worker has watched for expiries.
    unwatched_since: Option<T>,
    /// The last time a worker that watched began to shut down: the others go on counting on it
    /// to watch until its leases are released, or expire if its processors outlast their trust.
    watcher_left: Option<T>,
    /// Takes and handoff requests written, and when.
    moves: Vec<T>,
    report: Report,
    /// While a worker's machine hears of a renewal of its current run refused only because of
    /// the worker's own earlier write: the worker and the lease, which it must not revoke.
    own_refusal: Option<(u32, String)>,
    failure: Option<Failure>,
    /// Set in a cold start's run (see [`cold_start`]).
    cold: Option<Cold>,
}

/// How a world is set up, apart from its shards and workers.
struct Setup {
    settings: Settings,
    net: Network,
    batch_interval: T,
    chaos_until: T,
    gentle: bool,
    end: T,
}

/// The longest a schedule's chaos phase lasts, and the quiet period after it.
const QUIET_EXTRA: T = 60 * SEC;
/// How often the world checks the takeover bound.
const CHECK_EVERY: T = 250 * MS;
/// How long the end of the quiet period must be without moves.
const STILL: T = 30 * SEC;
/// Slack for call latencies and clock drift in the takeover bound.
const TAKEOVER_MARGIN: T = SEC;
/// Records per batch.
const BATCH: u64 = 50;

impl World {
    fn new(seed: u64, trace: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let failover_secs = *[10u64, 10, 10, 6, 3]
            .get(rng.random_range(0..5))
            .unwrap_or(&10);
        let failover = Duration::from_secs(failover_secs);
        let margin = (failover / 10).max(Duration::from_millis(250));
        let settings = Settings {
            failover,
            trust: failover - margin,
            renew_interval: failover * 2 / 5,
            scan_interval: failover / 5,
            shard_sync_interval: Duration::from_secs(60),
            handoff_timeout: failover * 3 / 2,
            shutdown_timeout: failover * 3,
            // Some fleets cap each worker's leases, at times below what the shards need.
            max_leases: rng.random_bool(0.25).then(|| rng.random_range(1..=4)),
            max_handoffs: if rng.random_bool(0.2) { Some(1) } else { None },
            // Fewer watchers than the default too, so that fleets of a few workers have
            // workers that do not watch.
            watchers: rng.random_range(1..=3),
            slow_scan: failover * 2,
            call_timeout: failover / 5,
            longest_call: Duration::from_secs(10),
            // The fleet's scan budget is far above what these fleets scan (at most 8 workers
            // on a few dozen leases) unless set low: in 40 % of the schedules, 10 to 200 lease
            // items a second, so that the workers that do not watch scan up to a scan interval
            // apart whatever asks them to scan sooner. Drawn from a stream of its own, so that every
            // other choice of a seed's schedule is as before.
            scan_budget: {
                let mut own = StdRng::seed_from_u64(seed ^ 0x5ca1_ab1e_b0d9_e700);
                if own.random_bool(0.4) {
                    own.random_range(10..=200)
                } else {
                    crate::coordination::FLEET_SCAN_ITEMS
                }
            },
        };
        let faulty = rng.random_bool(0.35);
        let gentle = !faulty && rng.random_bool(0.3);
        let chaos_until = rng.random_range(40..=150) * SEC;
        let mut brownouts = [(0, 0); 2];
        let mut sluggish = (0, 0);
        if faulty {
            for window in &mut brownouts {
                if rng.random_bool(0.5) {
                    let start = rng.random_range(0..chaos_until);
                    *window = (start, start + rng.random_range(2 * SEC..12 * SEC));
                }
            }
            if rng.random_bool(0.5) {
                let start = rng.random_range(0..chaos_until);
                sluggish = (start, start + rng.random_range(5 * SEC..30 * SEC));
            }
        }
        let net = Network {
            faulty,
            fail_before: if faulty { 0.02 } else { 0.0 },
            answer_lost: if faulty { 0.02 } else { 0.0 },
            slow: if faulty { 0.03 } else { 0.0 },
            brownouts,
            sluggish,
        };
        let end = chaos_until
            + QUIET_EXTRA
            + micros(settings.failover) * 3
            + micros(settings.handoff_timeout);
        let batch_interval = rng.random_range(200..=1000) * MS;
        let mut world = World::empty(
            seed,
            trace,
            rng,
            Setup {
                settings,
                net,
                batch_interval,
                chaos_until,
                gentle,
                end,
            },
        );
        let settings = format!("{:?}", world.settings);
        world.note(|| format!("SETTINGS {settings}"));
        let shards = world.rng.random_range(1..=12);
        for _ in 0..shards {
            world.open_shard(BTreeSet::new());
        }
        let workers = world.rng.random_range(1..=8);
        for _ in 0..workers {
            world.start_worker(None);
        }
        let first = world.rng.random_range(SEC..5 * SEC);
        world.push(first, Ev::Chaos);
        world.push(CHECK_EVERY, Ev::Check);
        world
    }

    /// A cold start (see [`cold_start`]): the worker's default settings, no faults, no chaos.
    fn cold(seed: u64, workers: usize, shards: usize, limit: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let batch_interval = rng.random_range(200..=1000) * MS;
        let mut world = World::empty(
            seed,
            false,
            rng,
            Setup {
                settings: crate::config::default_settings(),
                net: Network {
                    faulty: false,
                    fail_before: 0.0,
                    answer_lost: 0.0,
                    slow: 0.0,
                    brownouts: [(0, 0); 2],
                    sluggish: (0, 0),
                },
                batch_interval,
                chaos_until: 0,
                gentle: false,
                end: micros(limit),
            },
        );
        world.cold = Some(Cold::default());
        for _ in 0..shards {
            world.open_shard(BTreeSet::new());
        }
        for _ in 0..workers {
            world.start_worker(None);
        }
        world.push(CHECK_EVERY, Ev::Check);
        world
    }

    /// A world with no shard and no worker yet.
    fn empty(seed: u64, trace: bool, rng: StdRng, setup: Setup) -> Self {
        let Setup {
            settings,
            net,
            batch_interval,
            chaos_until,
            gentle,
            end,
        } = setup;
        let call_timeout = micros(settings.call_timeout);
        let max_leases = settings.max_leases;
        World {
            seed,
            base: Instant::now(),
            t: 0,
            seq: 0,
            queue: BTreeMap::new(),
            trace: trace.then(Vec::new),
            settings,
            net,
            call_timeout,
            batch_interval,
            chaos_until,
            gentle,
            end,
            table: TableModel::new(),
            shards: Vec::new(),
            processed: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_inc: 1,
            next_worker_name: 1,
            copies: BTreeMap::new(),
            next_copy: 1,
            tasks: BTreeMap::new(),
            next_task: 1,
            reqs: BTreeMap::new(),
            next_req: 1,
            procs: Vec::new(),
            last_proc: BTreeMap::new(),
            last_disruption: 0,
            short_of_room: 0,
            unserved_since: BTreeMap::new(),
            unwatched_since: None,
            watcher_left: None,
            moves: Vec::new(),
            report: Report {
                seed,
                faulty: net.faulty,
                gentle,
                max_leases,
                ..Report::default()
            },
            own_refusal: None,
            failure: None,
            cold: None,
            rng,
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let line = line();
            trace.push(format!("{:>9.3} {line}", secs(self.t)));
        }
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        if self.failure.is_none() {
            self.note(|| format!("INVARIANT BROKEN: {invariant}: {detail}"));
            self.failure = Some(Failure {
                seed: self.seed,
                invariant,
                detail,
                at: Duration::from_micros(self.t),
                trace: Vec::new(),
            });
        }
    }

    fn push(&mut self, at: T, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.t), self.seq), ev);
    }

    fn local(&self, inc: u32) -> Instant {
        let clock = self.workers.get(&inc).map_or(
            Clock {
                offset: 0,
                drift_ppm: 0,
            },
            |w| w.clock,
        );
        self.base + Duration::from_micros(clock.local_micros(self.t))
    }

    fn real(&self, inc: u32, at: Instant) -> T {
        let Some(worker) = self.workers.get(&inc) else {
            return self.t;
        };
        // Rounded up: a wake-up between two microseconds is due at the later one (rounded down,
        // the machine would be woken before its instant, again and again).
        let since = at.saturating_duration_since(self.base);
        let local = micros(since) + u64::from(!since.subsec_nanos().is_multiple_of(1_000));
        worker.clock.real_micros(local).max(self.t)
    }

    fn run(&mut self) -> Result<Report, Failure> {
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at > self.end {
                break;
            }
            self.t = at;
            self.report.events += 1;
            if let Some(inc) = ev.target(self) {
                match self.workers.get_mut(&inc).map(|w| w.life) {
                    Some(Life::Paused { .. }) => {
                        if let Some(worker) = self.workers.get_mut(&inc) {
                            worker.deferred.push(ev);
                        }
                        continue;
                    }
                    Some(Life::Dead | Life::Finished) | None => {
                        // The process is gone; a request it sent may still be applied (Apply
                        // has no target), but nobody hears the answer.
                        if let Ev::Answer { req } = ev {
                            self.reqs.remove(&req);
                        }
                        continue;
                    }
                    Some(Life::Alive) => {}
                }
            }
            self.step(ev);
            if self.failure.is_some() {
                break;
            }
        }
        if self.failure.is_none() {
            self.t = self.end;
            self.final_checks();
        }
        self.report.simulated = Duration::from_micros(self.t);
        match self.failure.take() {
            None => Ok(std::mem::take(&mut self.report)),
            Some(mut failure) => {
                failure.trace = self.trace.take().unwrap_or_default();
                Err(failure)
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { inc, generation } => {
                if self
                    .workers
                    .get(&inc)
                    .is_some_and(|w| w.wake_generation == generation)
                {
                    self.drive(inc, Input::Tick);
                }
            }
            Ev::Input { inc, input } => self.drive(inc, input),
            Ev::Apply { req } => self.apply(req),
            Ev::Answer { req } => self.answer(req),
            Ev::TimedOut { req } => self.timed_out(req),
            Ev::TaskStep { task, generation } => {
                if self
                    .tasks
                    .get(&task)
                    .is_some_and(|t| t.generation == generation && t.alive)
                {
                    self.task_step(task);
                }
            }
            Ev::Resume { inc } => self.resume(inc),
            Ev::Chaos => self.chaos(),
            Ev::Check => {
                self.note_full_workers();
                self.check_takeover();
                self.check_watching();
                self.watch_cold_start();
                self.push(self.t + CHECK_EVERY, Ev::Check);
            }
        }
    }

    // --- the stream --------------------------------------------------------------------------

    fn open_shard(&mut self, parents: BTreeSet<String>) -> String {
        let id = format!("shardId-{:012}", self.shards.len());
        let interval = self.rng.random_range(100..=1000) * MS;
        self.shards.push(SimShard {
            id: id.clone(),
            parents,
            opened: self.t,
            interval,
            last: None,
        });
        self.processed.insert(id.clone(), Vec::new());
        id
    }

    fn shard(&self, id: &str) -> Option<&SimShard> {
        self.shards.iter().find(|s| s.id == id)
    }

    fn listing(&self) -> Vec<ShardDescription> {
        self.shards
            .iter()
            .map(|s| ShardDescription {
                id: s.id.clone(),
                parents: s.parents.clone(),
                hash_key_range: None,
                closed: s.last.is_some(),
            })
            .collect()
    }

    fn children_of(&self, id: &str) -> Vec<ChildShard> {
        self.shards
            .iter()
            .filter(|s| s.parents.contains(id))
            .map(|s| ChildShard {
                id: s.id.clone(),
                parents: s.parents.clone(),
                hash_key_range: None,
            })
            .collect()
    }

    // --- workers -----------------------------------------------------------------------------

    fn start_worker(&mut self, id: Option<String>) -> u32 {
        let id = id.unwrap_or_else(|| {
            let name = format!("w{}", self.next_worker_name);
            self.next_worker_name += 1;
            name
        });
        let inc = self.next_inc;
        self.next_inc += 1;
        let clock = Clock {
            offset: self.rng.random_range(0..1_000 * SEC),
            drift_ppm: self.rng.random_range(-10_000..=10_000),
        };
        let local = self.base + Duration::from_micros(clock.local_micros(self.t));
        let machine = Machine::new(id.clone(), self.settings.clone(), local);
        self.note(|| format!("{id}#{inc} starts"));
        self.workers.insert(
            inc,
            Worker {
                id,
                inc,
                clock,
                machine,
                life: Life::Alive,
                shutting_down: false,
                running_since: self.t,
                watching_since: Some(self.t),
                full_at: 0,
                wake_generation: 0,
                deferred: Vec::new(),
                copies: BTreeMap::new(),
                tasks: BTreeMap::new(),
                steps_at: (0, 0),
            },
        );
        self.drive(inc, Input::Tick);
        inc
    }

    fn name(&self, inc: u32) -> String {
        self.workers
            .get(&inc)
            .map_or_else(|| format!("?#{inc}"), |w| format!("{}#{inc}", w.id))
    }

    /// Feeds `input` to the worker's machine and performs what it returns.
    fn drive(&mut self, inc: u32, input: Input) {
        let now = self.local(inc);
        let t = self.t;
        let Some(worker) = self.workers.get_mut(&inc) else {
            return;
        };
        if worker.life != Life::Alive {
            return;
        }
        if worker.steps_at.0 == t {
            worker.steps_at.1 += 1;
            if worker.steps_at.1 > 10_000 {
                let name = worker.id.clone();
                self.fail(
                    "no busy loop",
                    format!("{name} stepped 10,000 times at one instant"),
                );
                return;
            }
        } else {
            worker.steps_at = (t, 1);
        }
        if self.trace.is_some() && !matches!(input, Input::Tick) {
            let name = self.name(inc);
            let text = describe_input(&input);
            self.note(|| format!("{name} <- {text}"));
        }
        let Some(worker) = self.workers.get_mut(&inc) else {
            return;
        };
        let actions = worker.machine.handle(input, now);
        let finished = worker.machine.is_finished();
        let was_watching = worker.watching_since.is_some();
        worker.watching_since = if worker.machine.watching() {
            worker.watching_since.or(Some(t))
        } else {
            None
        };
        let watching = worker.watching_since.is_some();
        if watching != was_watching {
            let name = self.name(inc);
            self.note(|| {
                format!(
                    "{name} {}",
                    if watching {
                        "WATCHES"
                    } else {
                        "STOPS WATCHING"
                    }
                )
            });
        }
        for action in actions {
            self.perform(inc, action);
        }
        if finished {
            self.finish(inc);
            return;
        }
        self.schedule_wake(inc);
    }

    fn schedule_wake(&mut self, inc: u32) {
        let Some(worker) = self.workers.get_mut(&inc) else {
            return;
        };
        let Some(wake) = worker.machine.next_wake() else {
            return;
        };
        worker.wake_generation += 1;
        let generation = worker.wake_generation;
        let at = self.real(inc, wake);
        self.push(at, Ev::Wake { inc, generation });
    }

    fn perform(&mut self, inc: u32, action: Action) {
        if self.trace.is_some() {
            let name = self.name(inc);
            let text = describe_action(&action);
            self.note(|| format!("{name} -> {text}"));
        }
        match action {
            Action::Scan => self.send(inc, Origin::Machine, Op::Scan, None),
            Action::SyncShards => self.send(inc, Origin::Machine, Op::Sync, None),
            Action::Renew { key, base, within } => {
                let running = self
                    .workers
                    .get(&inc)
                    .and_then(|w| w.tasks.get(&key))
                    .is_some_and(|task| self.tasks.get(task).is_some_and(|t| t.alive));
                if !running {
                    let name = self.name(inc);
                    self.fail(
                        "no renewal without a running processor",
                        format!("{name} renews {key}, which runs no processor there"),
                    );
                    return;
                }
                match self.workers.get(&inc).and_then(|w| w.copies.get(&key)) {
                    Some(copy) => {
                        let copy = *copy;
                        self.enqueue(inc, copy, Pending::Renew(base, micros(within)));
                    }
                    None => {
                        let name = self.name(inc);
                        self.fail(
                            "no renewal without a running processor",
                            format!("{name} has no copy of {key}"),
                        );
                    }
                }
            }
            Action::Take { lease } => self.send(inc, Origin::Machine, Op::Take(lease), None),
            Action::AskHandoff { lease } => {
                self.send(inc, Origin::Machine, Op::HandOff(lease), None);
            }
            Action::Release { lease, role } => {
                let copy = match role {
                    Role::NewOwner => None,
                    Role::Owner | Role::PreviousOwner => self
                        .workers
                        .get(&inc)
                        .and_then(|w| w.copies.get(&lease.key)),
                };
                match copy {
                    Some(copy) => {
                        let copy = *copy;
                        self.enqueue(inc, copy, Pending::Release { lease, role });
                    }
                    None => self.send(inc, Origin::Machine, Op::Release(lease, role), None),
                }
            }
            Action::Start { lease, trust_until } => self.start_task(inc, lease, trust_until),
            Action::Trust { key, until } => {
                if let Some(task) = self.task_of(inc, &key) {
                    if let Some(t) = self.tasks.get_mut(&task) {
                        t.trust_until = until;
                        t.generation += 1;
                    }
                    self.check_one_trusted(&key);
                    self.schedule_task(task, None);
                }
            }
            Action::Revoke { key } => {
                if self.own_refusal.as_ref() == Some(&(inc, key.clone())) {
                    let name = self.name(inc);
                    self.fail(
                        "a lease is not lost to its own write",
                        format!("{name} gave up {key}: its renewal was refused by its own write"),
                    );
                }
                let now = self.local(inc);
                if let Some(task) = self.task_of(inc, &key) {
                    if let Some(t) = self.tasks.get_mut(&task) {
                        t.trust_until = now;
                        t.revoked = true;
                    }
                    self.schedule_task(task, Some(self.t));
                }
            }
            Action::Stop { key, reason } => {
                if let Some(task) = self.task_of(inc, &key) {
                    if let Some(t) = self.tasks.get_mut(&task) {
                        t.stop = reason;
                    }
                    self.schedule_task(task, Some(self.t));
                }
            }
            Action::Forget { key } => {
                if let Some(worker) = self.workers.get_mut(&inc) {
                    worker.copies.remove(&key);
                }
            }
            Action::AbortProcessors => {
                let live: Vec<u64> = self
                    .workers
                    .get(&inc)
                    .map(|w| w.tasks.values().copied().collect())
                    .unwrap_or_default();
                for task in live {
                    self.exit_task(task, Exited::Aborted);
                }
            }
            Action::Finished => {}
        }
    }

    fn finish(&mut self, inc: u32) {
        let name = self.name(inc);
        self.note(|| format!("{name} finished"));
        let live = self.workers.get(&inc).map_or(0, |w| w.tasks.len());
        if live > 0 {
            self.fail(
                "told why it stops",
                format!("{name} finished with {live} processors running"),
            );
        }
        if let Some(worker) = self.workers.get_mut(&inc) {
            worker.life = Life::Finished;
        }
    }

    fn task_of(&self, inc: u32, key: &str) -> Option<u64> {
        self.workers
            .get(&inc)
            .and_then(|w| w.tasks.get(key))
            .copied()
    }

    // --- calls ---------------------------------------------------------------------------------

    fn latency(&mut self) -> T {
        let base = self.rng.random_range(MS..15 * MS);
        let (from, to) = self.net.sluggish;
        if self.t >= from && self.t < to {
            // One way of the call: 0.3 to 0.9 times the call timeout.
            return base
                + self
                    .rng
                    .random_range(self.call_timeout * 3 / 10..self.call_timeout * 9 / 10);
        }
        if self.net.faulty && self.t < self.chaos_until && self.rng.random_bool(self.net.slow) {
            base + self.rng.random_range(300 * MS..2_500 * MS)
        } else {
            base
        }
    }

    fn send(&mut self, inc: u32, origin: Origin, op: Op, copy: Option<u64>) {
        let timeout = self.call_timeout;
        self.send_within(inc, origin, op, copy, timeout);
    }

    /// As `send`, waiting at most `timeout` for the answer.
    fn send_within(&mut self, inc: u32, origin: Origin, op: Op, copy: Option<u64>, timeout: T) {
        let sent = self.local(inc);
        let attempt = Attempt {
            sent,
            number: 1,
            timeout,
        };
        self.send_attempt(inc, origin, op, copy, attempt);
    }

    /// Sends a request: a first attempt (`send`), or a holder write made again (`answer`),
    /// which keeps the first attempt's `sent` as `LeaseTable`'s callers do.
    fn send_attempt(
        &mut self,
        inc: u32,
        origin: Origin,
        op: Op,
        copy: Option<u64>,
        attempt: Attempt,
    ) -> u64 {
        let Attempt {
            sent,
            number: attempts,
            timeout,
        } = attempt;
        let id = self.next_req;
        self.next_req += 1;
        let browned = self
            .net
            .brownouts
            .iter()
            .any(|(from, to)| self.t >= *from && self.t < *to);
        // Faults happen only before the quiet period, in which the fleet must settle.
        let faulty = self.net.faulty && self.t < self.chaos_until;
        let fate = if browned && self.rng.random_bool(0.7) {
            if self.rng.random_bool(0.5) {
                Fate::FailsBefore
            } else {
                Fate::AnswerLost
            }
        } else if faulty && self.rng.random_bool(self.net.fail_before) {
            Fate::FailsBefore
        } else if faulty && self.rng.random_bool(self.net.answer_lost) {
            Fate::AnswerLost
        } else {
            Fate::Answered
        };
        if matches!(op, Op::Scan) {
            self.report.scans += 1;
        }
        let there = self.latency();
        self.reqs.insert(
            id,
            Req {
                inc,
                origin,
                op,
                sent,
                fate,
                answer: None,
                copy,
                orphan: false,
                attempts,
                delivered: false,
            },
        );
        match fate {
            Fate::FailsBefore => {
                let back = self.latency();
                if let Some(req) = self.reqs.get_mut(&id) {
                    req.answer = Some(Answer::Failed);
                }
                self.push(self.t + there + back, Ev::Answer { req: id });
                self.push(self.t + timeout, Ev::TimedOut { req: id });
            }
            Fate::AnswerLost => {
                // Applied, and never answered: the call times out.
                self.push(self.t + there, Ev::Apply { req: id });
                self.push(self.t + timeout, Ev::TimedOut { req: id });
            }
            Fate::Answered => {
                // A call slower than the timeout fails at the timeout; it may still apply.
                self.push(self.t + there, Ev::Apply { req: id });
                self.push(self.t + timeout, Ev::TimedOut { req: id });
            }
        }
        id
    }

    fn enqueue(&mut self, inc: u32, copy: u64, pending: Pending) {
        if let Some(c) = self.copies.get_mut(&copy) {
            c.queue.push_back(pending);
        }
        self.grant(inc, copy);
    }

    /// Sends the next write waiting for the copy, if it is free.
    fn grant(&mut self, inc: u32, copy: u64) {
        let Some(c) = self.copies.get_mut(&copy) else {
            return;
        };
        if c.busy.is_some() {
            return;
        }
        let Some(pending) = c.queue.pop_front() else {
            return;
        };
        let own = c.lease.clone();
        let mut timeout = self.call_timeout;
        let (origin, op) = match pending {
            Pending::Renew(Some(base), within) if base.counter > own.counter => {
                if let Some(c) = self.copies.get_mut(&copy) {
                    c.lease = base.clone();
                }
                timeout = within;
                (Origin::Machine, Op::Renew(base))
            }
            Pending::Renew(_, within) => {
                timeout = within;
                (Origin::Machine, Op::Renew(own))
            }
            Pending::Release { lease, role } => {
                let base = if own.counter >= lease.counter {
                    own
                } else {
                    lease
                };
                (Origin::Machine, Op::Release(base, role))
            }
            Pending::Checkpoint { task, at } => (Origin::Task(task), Op::Checkpoint(own, at)),
            Pending::SetChildren { task, children } => {
                (Origin::Task(task), Op::SetChildren(own, children))
            }
        };
        if let Origin::Task(task) = origin
            && !self.tasks.get(&task).is_some_and(|t| t.alive)
        {
            // Its task ended while it waited: the write never happens.
            self.grant(inc, copy);
            return;
        }
        let id = self.next_req;
        if let Some(c) = self.copies.get_mut(&copy) {
            c.busy = Some(id);
        }
        if let Origin::Task(task) = origin
            && let Some(t) = self.tasks.get_mut(&task)
        {
            t.writing = Some(id);
        }
        self.send_within(inc, origin, op, Some(copy), timeout);
    }

    fn apply(&mut self, id: u64) {
        let Some(req) = self.reqs.get(&id) else {
            return;
        };
        let delivered = req.delivered;
        let me = self
            .workers
            .get(&req.inc)
            .map(|w| w.id.clone())
            .unwrap_or_default();
        let op = req.op.clone();
        let fate = req.fate;
        let answer = match op {
            Op::Scan => Answer::Leases(self.table.scan()),
            Op::Sync => {
                let listing = self.listing();
                let leases = self.table.scan();
                let by_key = leases.iter().map(|l| (l.key.as_str(), l)).collect();
                let create = if leases.is_empty() {
                    lineage::initial_leases(&listing, InitialPosition::TrimHorizon)
                } else {
                    lineage::repairs(&listing, &by_key)
                };
                let remove = lineage::removable(&by_key);
                for lease in &create {
                    self.table.create(lease);
                }
                for key in remove {
                    self.table.delete_finished(&key);
                }
                Answer::Synced
            }
            Op::Renew(lease) => write(self.table.renew(&lease, &me)),
            Op::Take(lease) => {
                let answer = write(self.table.take(&lease, &me));
                if matches!(answer, Answer::Write(Outcome::Written(_))) {
                    self.moves.push(self.t);
                }
                answer
            }
            Op::HandOff(lease) => {
                let answer = write(self.table.hand_off(&lease, &me));
                if matches!(answer, Answer::Write(Outcome::Written(_))) {
                    self.moves.push(self.t);
                }
                answer
            }
            Op::Release(lease, role) => write(self.table.release_as(&lease, &me, role)),
            Op::Checkpoint(lease, at) => {
                let before = self.table.get(&lease.key).map(|l| l.checkpoint.clone());
                let answer = write(self.table.checkpoint(&lease, &me, &at));
                if let (Some(before), Answer::Write(Outcome::Written(_))) = (before, &answer)
                    && at < before
                {
                    self.fail(
                        "checkpoints only move forward",
                        format!("{} moved from {before} back to {at}", lease.key),
                    );
                }
                answer
            }
            Op::SetChildren(lease, children) => {
                write(self.table.set_children(&lease, &me, &children))
            }
            Op::Create(lease) => {
                self.table.create(&lease);
                Answer::Created
            }
        };
        if self.trace.is_some() {
            let text = format!("{answer:?}");
            self.note(|| format!("table applies request {id}: {}", short(&text)));
        }
        if delivered {
            // The worker stopped waiting for it: applied, and heard of by nobody.
            self.reqs.remove(&id);
            return;
        }
        match fate {
            Fate::AnswerLost => {
                if let Some(req) = self.reqs.get_mut(&id) {
                    req.answer = Some(Answer::Failed);
                }
            }
            _ => {
                let back = self.latency();
                if let Some(req) = self.reqs.get_mut(&id) {
                    req.answer = Some(answer);
                }
                self.push(self.t + back, Ev::Answer { req: id });
            }
        }
    }

    /// What `LeaseTable` makes of a holder write refused only because the worker's own earlier
    /// write landed after its answer was lost (`after_refusal`): `None` when the refusal stands.
    fn after_own_write(&mut self, req: &Req, answer: &Answer) -> Option<Resolved> {
        let Answer::Write(Outcome::Refused(Some(current))) = answer else {
            return None;
        };
        let me = self.workers.get(&req.inc)?.id.clone();
        let (write, base) = match &req.op {
            Op::Checkpoint(base, at) => (HolderWrite::Checkpoint(at), base),
            Op::SetChildren(base, children) => (HolderWrite::SetChildren(children), base),
            _ => return None,
        };
        let resolved = match after_refusal(write, base, current, &me) {
            AfterRefusal::Lost => None,
            AfterRefusal::Again if req.attempts < HOLDER_WRITE_ATTEMPTS => {
                self.report.own_writes_resolved += 1;
                let mut op = req.op.clone();
                if let Op::Checkpoint(base, _) | Op::SetChildren(base, _) = &mut op {
                    *base = current.clone();
                }
                Some(Resolved::Again(op))
            }
            AfterRefusal::Again => None,
            AfterRefusal::Done => {
                self.report.own_writes_resolved += 1;
                Some(Resolved::Answer(Answer::Write(Outcome::Written(
                    current.clone(),
                ))))
            }
            AfterRefusal::Behind => {
                let detail = format!(
                    "{} checkpointed behind its own earlier checkpoint ({})",
                    base.key, current.checkpoint
                );
                self.fail("checkpoints only move forward", detail);
                None
            }
        };
        if resolved.is_none() && current.raised_by_own_write(base, &me) {
            let detail = format!(
                "{me}'s write to {} was refused by its own earlier write {} times",
                base.key, req.attempts
            );
            self.fail("a lease is not lost to its own write", detail);
        }
        resolved
    }

    /// Whether `input` answers a renewal of the lease's current run on its worker (sent from
    /// the run's copy) with a refusal caused only by the worker's own earlier write.
    fn own_renewal_refusal(&mut self, req: &Req, input: &Input) -> Option<(u32, String)> {
        let (Op::Renew(base), Input::Renewed { key, outcome, .. }) = (&req.op, input) else {
            return None;
        };
        let Outcome::Refused(Some(current)) = outcome else {
            return None;
        };
        let worker = self.workers.get(&req.inc)?;
        let current_run = req.copy.is_some() && worker.copies.get(key) == req.copy.as_ref();
        if !current_run || !current.raised_by_own_write(base, &worker.id) {
            return None;
        }
        self.report.own_writes_resolved += 1;
        Some((req.inc, key.clone()))
    }

    /// The worker stops waiting for request `id`: it fails as timed out. One the table has not
    /// applied yet stays on its way there.
    fn timed_out(&mut self, id: u64) {
        if self.reqs.get(&id).is_none_or(|req| req.delivered) {
            return;
        }
        self.note(|| format!("request {id} times out"));
        let Some(req) = self.reqs.get_mut(&id) else {
            return;
        };
        if req.answer.is_some() {
            req.answer = Some(Answer::Failed);
            self.answer(id);
        } else {
            req.delivered = true;
            let mut failed = req.clone();
            failed.answer = Some(Answer::Failed);
            self.deliver(id, failed);
        }
    }

    fn answer(&mut self, id: u64) {
        let Some(req) = self.reqs.remove(&id) else {
            return;
        };
        self.deliver(id, req);
    }

    /// Hands the answer to request `id` to its worker.
    fn deliver(&mut self, id: u64, req: Req) {
        let mut answer = req.answer.clone().unwrap_or(Answer::Failed);
        if !req.orphan {
            match self.after_own_write(&req, &answer) {
                Some(Resolved::Again(op)) => {
                    // Made again from the refused item, holding the copy still.
                    let again = self.send_attempt(
                        req.inc,
                        req.origin,
                        op,
                        req.copy,
                        Attempt {
                            sent: req.sent,
                            number: req.attempts + 1,
                            timeout: self.call_timeout,
                        },
                    );
                    if let Some(c) = req.copy.and_then(|copy| self.copies.get_mut(&copy))
                        && c.busy == Some(id)
                    {
                        c.busy = Some(again);
                    }
                    if let Origin::Task(task) = req.origin
                        && let Some(t) = self.tasks.get_mut(&task)
                        && t.writing == Some(id)
                    {
                        t.writing = Some(again);
                    }
                    return;
                }
                Some(Resolved::Answer(resolved)) => answer = resolved,
                None => {}
            }
        }
        // The copy's holder updates it with what the table wrote, then lets the next one in.
        if let Some(copy) = req.copy {
            if let Some(c) = self.copies.get_mut(&copy)
                && c.busy == Some(id)
            {
                if !req.orphan
                    && let Answer::Write(Outcome::Written(lease)) = &answer
                {
                    c.lease = lease.clone();
                }
                c.busy = None;
            }
            self.grant(req.inc, copy);
        }
        if req.orphan {
            return;
        }
        match req.origin {
            Origin::Machine => {
                let input = match (&req.op, answer) {
                    (Op::Scan, Answer::Leases(leases)) => Input::Scanned(Some(leases)),
                    (Op::Scan, _) => Input::Scanned(None),
                    (Op::Sync, Answer::Synced) => Input::Synced(true),
                    (Op::Sync, _) => Input::Synced(false),
                    (Op::Renew(lease), answer) => Input::Renewed {
                        key: lease.key.clone(),
                        sent: req.sent,
                        outcome: outcome(answer),
                    },
                    (Op::Take(lease), answer) => Input::Taken {
                        key: lease.key.clone(),
                        sent: req.sent,
                        outcome: outcome(answer),
                    },
                    (Op::HandOff(lease), answer) => Input::HandoffAsked {
                        key: lease.key.clone(),
                        outcome: outcome(answer),
                    },
                    (Op::Release(lease, _), answer) => Input::Released {
                        key: lease.key.clone(),
                        outcome: outcome(answer),
                    },
                    _ => return,
                };
                self.own_refusal = self.own_renewal_refusal(&req, &input);
                self.drive(req.inc, input);
                self.own_refusal = None;
            }
            Origin::Task(task) => self.task_answer(task, answer),
        }
    }

    // --- shard tasks ---------------------------------------------------------------------------

    fn start_task(&mut self, inc: u32, lease: Lease, trust_until: Instant) {
        let key = lease.key.clone();
        let name = self.name(inc);
        if let Some(task) = self.task_of(inc, &key)
            && self.tasks.get(&task).is_some_and(|t| t.alive)
        {
            self.fail(
                "no start of a shard already running",
                format!("{name} starts {key} while its processor runs there"),
            );
            return;
        }
        let copy = self.next_copy;
        self.next_copy += 1;
        self.copies.insert(
            copy,
            Copy {
                lease: lease.clone(),
                busy: None,
                queue: VecDeque::new(),
            },
        );
        let id = self.next_task;
        self.next_task += 1;
        if let Some(worker) = self.workers.get_mut(&inc) {
            worker.copies.insert(key.clone(), copy);
            worker.tasks.insert(key.clone(), id);
        }
        let mut task = Task {
            inc,
            key: key.clone(),
            copy,
            proc: usize::MAX,
            trust_until,
            stop: Stop::Run,
            phase: Phase::Reading,
            wake: self.t + self.batch_interval,
            delivered: 0,
            children: Vec::new(),
            generation: 0,
            panic: false,
            alive: true,
            revoked: false,
            writing: None,
        };
        if lease.is_finished() {
            // Finished by a previous owner: nothing to read, no processor. The task ends at its
            // first step.
            task.phase = Phase::Finished;
            self.tasks.insert(id, task);
            self.schedule_task(id, Some(self.t));
            return;
        }
        // The processor is initialized: the invariants of a start.
        let start_cp = lease.checkpoint.clone();
        let from = record_of(&start_cp);
        task.delivered = from;
        let proc = self.procs.len();
        task.proc = proc;
        self.procs.push(Proc {
            shard: key.clone(),
            start_cp: start_cp.clone(),
            delivered: from,
            checkpointed: from,
            told: None,
            how: None,
            end: None,
        });
        self.report.processors += 1;
        self.tasks.insert(id, task);
        for parent in &lease.parent_shard_ids {
            if let Some(p) = self.table.get(parent)
                && !p.is_finished()
            {
                self.fail(
                    "parents first",
                    format!(
                        "{name} starts {key} while its parent {parent} is at {}",
                        p.checkpoint
                    ),
                );
            }
        }
        let skipped = self
            .processed
            .get(&key)
            .map(|counts| {
                (1..=from)
                    .filter(|r| counts.get(*r as usize).is_none_or(|n| *n == 0))
                    .count()
            })
            .unwrap_or(0);
        if skipped > 0 {
            self.fail(
                "no record skipped",
                format!("{name} starts {key} at {start_cp}, but {skipped} records at or before it were never processed"),
            );
        }
        if let Some(prev) = self.last_proc.get(&key).copied()
            && let Some(p) = self.procs.get(prev)
            && p.how == Some(Exited::Stopped)
            && p.told == Some(Told::ShutdownRequested)
            && p.checkpointed == p.delivered
            && from != p.delivered
        {
            let detail = format!(
                "{name} starts {key} at {start_cp}, but the previous processor stopped gracefully with record {} checkpointed",
                p.delivered
            );
            self.fail("no duplicates after a graceful handoff", detail);
        }
        self.last_proc.insert(key.clone(), proc);
        self.check_one_trusted(&key);
        self.note(|| format!("{name} STARTS {key} at {start_cp}"));
        self.schedule_task(id, None);
    }

    /// At most one processor of `key` is trusted now.
    fn check_one_trusted(&mut self, key: &str) {
        let trusted: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.alive && t.key == key && t.proc != usize::MAX)
            .filter(|t| t.trust_until > self.local(t.inc))
            .map(|t| self.name(t.inc))
            .collect();
        if trusted.len() > 1 {
            self.fail(
                "one trusted processor per shard",
                format!("{key} is run by {trusted:?} at once, each trusting its lease"),
            );
        }
    }

    /// Schedules the task's next step: at `at`, or at the next batch, or at its trust deadline.
    fn schedule_task(&mut self, id: u64, at: Option<T>) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let trust = self.real(task.inc, task.trust_until);
        let at = at.unwrap_or(task.wake.min(trust));
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.generation += 1;
        let generation = task.generation;
        self.push(
            at,
            Ev::TaskStep {
                task: id,
                generation,
            },
        );
    }

    /// Moves the task to `phase` and schedules its next step.
    fn enter(&mut self, id: u64, phase: Phase) {
        let wake = match phase {
            Phase::Reading => self.t + self.batch_interval,
            Phase::EndRetry | Phase::ChildRetry(_) => self.t + 2 * SEC,
            _ => T::MAX,
        };
        if let Some(task) = self.tasks.get_mut(&id) {
            task.phase = phase;
            task.wake = wake;
        }
        self.schedule_task(id, None);
    }

    fn tell(&mut self, task: u64, told: Told) {
        let Some(proc) = self.tasks.get(&task).map(|t| t.proc) else {
            return;
        };
        let Some(p) = self.procs.get_mut(proc) else {
            return;
        };
        match p.told {
            Some(before) if before != told => {
                let detail = format!("{} was told {before:?}, then {told:?}", p.shard);
                self.fail("told why it stops", detail);
            }
            _ => p.told = Some(told),
        }
    }

    fn told(&self, task: u64) -> Option<Told> {
        self.tasks
            .get(&task)
            .and_then(|t| self.procs.get(t.proc))
            .and_then(|p| p.told)
    }

    fn task_step(&mut self, id: u64) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let now = self.local(task.inc);
        let phase = task.phase.clone();
        if phase == Phase::Finished {
            self.exit_task(id, Exited::ShardEnded);
            return;
        }
        if now >= task.trust_until {
            // Its trust ran out on a worker that ran throughout it: its renewals were not
            // answered in time (the table's faults).
            let unrenewed = !task.revoked
                && self.workers.get(&task.inc).is_some_and(|w| {
                    matches!(w.life, Life::Alive)
                        && w.running_since + micros(self.settings.trust) <= self.t
                });
            if unrenewed {
                self.report.trust_ran_out += 1;
            }
            // The task's guarded calls are dropped at the deadline.
            match phase {
                Phase::Shutdown | Phase::EndCheckpoint | Phase::EndRetry => {}
                _ => {
                    if self.told(id).is_none() {
                        self.tell(id, Told::LeaseLost);
                    }
                }
            }
            self.exit_task(id, Exited::LeaseLost);
            return;
        }
        match phase {
            Phase::Reading => self.read(id),
            Phase::EndRetry => self.end_checkpoint(id),
            Phase::ChildRetry(index) => self.create_child(id, index),
            // A write is under way: its answer moves the task on.
            _ => {}
        }
    }

    fn read(&mut self, id: u64) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let (stop, panic, key, delivered, inc) = (
            task.stop,
            task.panic,
            task.key.clone(),
            task.delivered,
            task.inc,
        );
        if stop != Stop::Run {
            self.tell(id, Told::ShutdownRequested);
            let from = self
                .procs
                .get(self.tasks.get(&id).map_or(usize::MAX, |t| t.proc))
                .map_or(0, |p| record_of(&p.start_cp));
            if delivered > from {
                self.checkpoint(id, Phase::Shutdown, at_record(delivered));
            } else {
                self.exit_task(id, Exited::Stopped);
            }
            return;
        }
        if panic {
            self.exit_task(id, Exited::Panicked("injected".to_owned()));
            return;
        }
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let available = shard.available(self.t);
        let last = shard.last;
        if delivered < available {
            self.check_one_trusted(&key);
            let upto = available.min(delivered + BATCH);
            let counts = self.processed.entry(key.clone()).or_default();
            if counts.len() <= upto as usize {
                counts.resize(upto as usize + 1, 0);
            }
            for r in delivered + 1..=upto {
                if counts[r as usize] > 0 {
                    self.report.duplicates += 1;
                }
                counts[r as usize] += 1;
            }
            if let Some(task) = self.tasks.get_mut(&id) {
                task.delivered = upto;
                if let Some(p) = self.procs.get_mut(task.proc) {
                    p.delivered = upto;
                }
            }
            self.checkpoint(id, Phase::Batch, at_record(upto));
            return;
        }
        if last.is_some_and(|last| delivered >= last) {
            // As `shard.rs`: a child is created only once its other parents have leases (read
            // now, consistently) or are no longer listed.
            let ready: Vec<ChildShard> = self
                .children_of(&key)
                .into_iter()
                .filter(|child| {
                    lineage::child_may_be_created(
                        child,
                        &key,
                        |p| self.table.get(p).is_some(),
                        |p| self.shard(p).is_some(),
                    )
                })
                .collect();
            let children = lineage::child_leases(&ready);
            let name = self.name(inc);
            self.note(|| format!("{name} reaches the end of {key}"));
            if let Some(task) = self.tasks.get_mut(&id) {
                task.children = children;
            }
            self.create_child(id, 0);
            return;
        }
        self.enter(id, Phase::Reading);
    }

    fn checkpoint(&mut self, id: u64, phase: Phase, at: Checkpoint) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let (inc, copy) = (task.inc, task.copy);
        self.enter(id, phase);
        self.enqueue(inc, copy, Pending::Checkpoint { task: id, at });
    }

    fn create_child(&mut self, id: u64, index: usize) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let (inc, copy) = (task.inc, task.copy);
        match task.children.get(index).cloned() {
            Some(child) => {
                self.enter(id, Phase::Child(index));
                self.send(inc, Origin::Task(id), Op::Create(child), None);
            }
            None => {
                let children: BTreeSet<String> =
                    task.children.iter().map(|c| c.key.clone()).collect();
                self.enter(id, Phase::SetChildren);
                self.enqueue(inc, copy, Pending::SetChildren { task: id, children });
            }
        }
    }

    fn end_checkpoint(&mut self, id: u64) {
        self.tell(id, Told::ShardEnded);
        self.checkpoint(id, Phase::EndCheckpoint, Checkpoint::ShardEnd);
    }

    fn task_answer(&mut self, id: u64, answer: Answer) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if !task.alive {
            return;
        }
        task.writing = None;
        let phase = task.phase.clone();
        if self.trace.is_some() {
            let (inc, key) = (task.inc, task.key.clone());
            let name = self.name(inc);
            let text = format!("{phase:?} answered {}", short(&format!("{answer:?}")));
            self.note(|| format!("{name} task {key}: {text}"));
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let written = matches!(answer, Answer::Write(Outcome::Written(_)));
        let (proc, delivered) = (task.proc, task.delivered);
        if written
            && matches!(phase, Phase::Batch | Phase::Shutdown | Phase::EndCheckpoint)
            && let Some(p) = self.procs.get_mut(proc)
        {
            p.checkpointed = delivered;
        }
        match phase {
            Phase::Batch => self.enter(id, Phase::Reading),
            Phase::Shutdown => self.exit_task(id, Exited::Stopped),
            Phase::Child(index) => {
                if matches!(answer, Answer::Created) {
                    self.create_child(id, index + 1);
                } else {
                    // Tried again after a pause.
                    self.enter(id, Phase::ChildRetry(index));
                }
            }
            Phase::SetChildren => self.end_checkpoint(id),
            Phase::EndCheckpoint => {
                if written {
                    self.exit_task(id, Exited::ShardEnded);
                } else {
                    self.enter(id, Phase::EndRetry);
                }
            }
            Phase::Finished | Phase::Reading | Phase::EndRetry | Phase::ChildRetry(_) => {}
        }
    }

    /// A shard task ends as `how`: its worker's machine hears of it at once.
    fn exit_task(&mut self, id: u64, how: Exited) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if !task.alive {
            return;
        }
        task.alive = false;
        let (inc, key, copy, proc, writing) = (
            task.inc,
            task.key.clone(),
            task.copy,
            task.proc,
            task.writing.take(),
        );
        // A write it was waiting for is dropped with it: the copy is free at once.
        if let Some(req) = writing {
            if let Some(r) = self.reqs.get_mut(&req) {
                r.orphan = true;
            }
            if let Some(c) = self.copies.get_mut(&copy)
                && c.busy == Some(req)
            {
                c.busy = None;
            }
        }
        if let Some(worker) = self.workers.get_mut(&inc)
            && worker.tasks.get(&key) == Some(&id)
        {
            worker.tasks.remove(&key);
        }
        self.grant(inc, copy);
        let name = self.name(inc);
        if let Some(p) = self.procs.get_mut(proc) {
            p.how = Some(how.clone());
            p.end = Some((self.t, End::Exited));
            let told = p.told;
            let ok = match &how {
                Exited::ShardEnded => told == Some(Told::ShardEnded),
                Exited::Stopped | Exited::ReadFailed | Exited::ProcessorFailed => {
                    told == Some(Told::ShutdownRequested)
                }
                Exited::LeaseLost => told.is_some(),
                Exited::Panicked(_) | Exited::Aborted => true,
            };
            if !ok {
                let detail = format!(
                    "{name}'s processor of {key} ended as {how:?} after being told {told:?}"
                );
                self.fail("told why it stops", detail);
            }
        }
        let text = format!("{how:?}");
        self.note(|| format!("{name} task {key} ends: {text}"));
        self.tasks.remove(&id);
        self.push(
            self.t,
            Ev::Input {
                inc,
                input: Input::Exited { key, how },
            },
        );
    }

    // --- chaos ---------------------------------------------------------------------------------

    fn live(&self) -> Vec<u32> {
        self.workers
            .values()
            .filter(|w| w.life == Life::Alive && !w.shutting_down)
            .map(|w| w.inc)
            .collect()
    }

    fn chaos(&mut self) {
        if self.t >= self.chaos_until {
            // The quiet period: at least one worker, and nothing else happens.
            let running = self
                .workers
                .values()
                .filter(|w| matches!(w.life, Life::Alive | Life::Paused { .. }) && !w.shutting_down)
                .count();
            if running == 0 {
                self.start_worker(None);
                self.report.joins += 1;
            }
            return;
        }
        let live = self.live();
        let pick = |rng: &mut StdRng, from: &[u32]| -> Option<u32> {
            (!from.is_empty()).then(|| from[rng.random_range(0..from.len())])
        };
        // Gentle schedules only add and remove workers gracefully and reshard: the fleet stays
        // healthy, and every move must be quick.
        let roll = if self.gentle {
            *[40, 50, 58, 63, 99]
                .get(self.rng.random_range(0..5))
                .unwrap_or(&99)
        } else {
            self.rng.random_range(0..100)
        };
        let population = self
            .workers
            .values()
            .filter(|w| matches!(w.life, Life::Alive | Life::Paused { .. }))
            .count();
        match roll {
            0..20 => {
                if let Some(inc) = pick(&mut self.rng, &live) {
                    let id = self.workers.get(&inc).map(|w| w.id.clone());
                    self.kill(inc);
                    if self.rng.random_bool(0.7) {
                        let same = self.rng.random_bool(0.5).then_some(id).flatten();
                        self.start_worker(same);
                        self.report.joins += 1;
                    }
                }
            }
            20..35 => {
                if let Some(inc) = pick(&mut self.rng, &live) {
                    let failover = micros(self.settings.failover);
                    let long = self.rng.random_bool(0.5);
                    let length = if long {
                        self.rng.random_range(failover + SEC..failover * 5 / 2)
                    } else {
                        self.rng.random_range(100 * MS..failover / 2)
                    };
                    self.pause(inc, length, long);
                }
            }
            35..45 if population < 8 => {
                self.start_worker(None);
                self.report.joins += 1;
            }
            45..55 => {
                if let Some(inc) = pick(&mut self.rng, &live) {
                    self.shut_down(inc);
                    // A replacement (a rolling deploy) has its own id: worker ids are unique
                    // among running workers (a worker restarted under its old id takes its own
                    // leases back at once, which is only safe once the old process is gone).
                    if self.rng.random_bool(0.5) {
                        self.start_worker(None);
                        self.report.joins += 1;
                    }
                }
            }
            55..61 => self.split(),
            61..66 => self.merge(),
            66..74 => self.arm_panic(),
            _ => {}
        }
        let next = self.t + self.rng.random_range(SEC..6 * SEC);
        self.push(next, Ev::Chaos);
    }

    fn kill(&mut self, inc: u32) {
        let name = self.name(inc);
        self.note(|| format!("KILL {name}"));
        self.report.kills += 1;
        self.last_disruption = self.t;
        let Some(worker) = self.workers.get_mut(&inc) else {
            return;
        };
        worker.life = Life::Dead;
        worker.deferred.clear();
        let tasks: Vec<u64> = worker.tasks.values().copied().collect();
        worker.tasks.clear();
        for id in tasks {
            if let Some(task) = self.tasks.remove(&id)
                && let Some(p) = self.procs.get_mut(task.proc)
            {
                p.end = Some((self.t, End::Died));
            }
        }
    }

    fn pause(&mut self, inc: u32, length: T, long: bool) {
        let name = self.name(inc);
        self.note(|| format!("PAUSE {name} for {:.3} s", secs(length)));
        self.report.pauses += 1;
        if long {
            self.report.long_pauses += 1;
        }
        self.last_disruption = self.t;
        let until = self.t + length;
        if let Some(worker) = self.workers.get_mut(&inc) {
            worker.life = Life::Paused { until };
        }
        self.push(until, Ev::Resume { inc });
    }

    fn resume(&mut self, inc: u32) {
        let Some(worker) = self.workers.get_mut(&inc) else {
            return;
        };
        if !matches!(worker.life, Life::Paused { .. }) {
            return;
        }
        worker.life = Life::Alive;
        worker.running_since = self.t;
        worker.watching_since = worker.machine.watching().then_some(self.t);
        let deferred = std::mem::take(&mut worker.deferred);
        self.last_disruption = self.t;
        let name = self.name(inc);
        self.note(|| format!("RESUME {name}"));
        for ev in deferred {
            self.push(self.t, ev);
        }
        self.drive(inc, Input::Tick);
        // Its tasks look at their deadlines at once.
        let tasks: Vec<u64> = self
            .workers
            .get(&inc)
            .map(|w| w.tasks.values().copied().collect())
            .unwrap_or_default();
        for task in tasks {
            self.schedule_task(task, Some(self.t));
        }
    }

    fn shut_down(&mut self, inc: u32) {
        let name = self.name(inc);
        self.note(|| format!("SHUTDOWN {name}"));
        self.report.shutdowns += 1;
        if let Some(worker) = self.workers.get_mut(&inc) {
            worker.shutting_down = true;
            if worker.life == Life::Alive && worker.machine.watching() {
                self.watcher_left = Some(self.t);
            }
        }
        self.drive(inc, Input::ShutdownAsked);
    }

    fn open_shards(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|i| self.shards[*i].last.is_none())
            .collect()
    }

    fn close(&mut self, index: usize) {
        let available = self.shards[index].available(self.t);
        self.shards[index].last = Some(available);
    }

    fn split(&mut self) {
        let open = self.open_shards();
        if open.is_empty() || self.shards.len() > 40 {
            return;
        }
        let index = open[self.rng.random_range(0..open.len())];
        self.close(index);
        let parent = self.shards[index].id.clone();
        let a = self.open_shard(BTreeSet::from([parent.clone()]));
        let b = self.open_shard(BTreeSet::from([parent.clone()]));
        self.report.splits += 1;
        self.note(|| format!("SPLIT {parent} into {a} and {b}"));
    }

    fn merge(&mut self) {
        let open = self.open_shards();
        if open.len() < 2 || self.shards.len() > 40 {
            return;
        }
        let i = self.rng.random_range(0..open.len());
        let j = (i + 1 + self.rng.random_range(0..open.len() - 1)) % open.len();
        let (a, b) = (open[i], open[j]);
        self.close(a);
        self.close(b);
        let parents = BTreeSet::from([self.shards[a].id.clone(), self.shards[b].id.clone()]);
        let text = format!("{parents:?}");
        let child = self.open_shard(parents);
        self.report.merges += 1;
        self.note(|| format!("MERGE {text} into {child}"));
    }

    fn arm_panic(&mut self) {
        let running: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.alive && t.proc != usize::MAX)
            .filter(|(_, t)| {
                self.workers
                    .get(&t.inc)
                    .is_some_and(|w| w.life == Life::Alive)
            })
            .map(|(id, _)| *id)
            .collect();
        if running.is_empty() {
            return;
        }
        let id = running[self.rng.random_range(0..running.len())];
        if let Some(task) = self.tasks.get_mut(&id) {
            task.panic = true;
            let key = task.key.clone();
            let inc = task.inc;
            self.report.panics += 1;
            self.last_disruption = self.t;
            let name = self.name(inc);
            self.note(|| format!("PANIC armed in {name}'s processor of {key}"));
        }
    }

    // --- invariants over time ------------------------------------------------------------------

    /// Keys of the workable leases (not finished, every parent with a lease finished).
    fn workable(&self) -> Vec<String> {
        let leases = self.table.scan();
        let by_key = leases.iter().map(|l| (l.key.as_str(), l)).collect();
        leases
            .iter()
            .filter(|l| {
                !l.is_finished() && lineage::readiness(l, &by_key) == lineage::Readiness::Ready
            })
            .map(|l| l.key.clone())
            .collect()
    }

    /// Which worker serves `key` now: an alive, unpaused worker whose processor trusts its lease.
    fn served_by(&self, key: &str) -> Option<u32> {
        self.tasks
            .values()
            .find(|t| t.key == key && self.serves(t))
            .map(|t| t.inc)
    }

    /// Whether `task` serves its shard now: alive, with a processor, on an alive, unpaused
    /// worker, and trusted.
    fn serves(&self, task: &Task) -> bool {
        task.alive
            && task.proc != usize::MAX
            && self
                .workers
                .get(&task.inc)
                .is_some_and(|w| w.life == Life::Alive)
            && task.trust_until > self.local(task.inc)
    }

    /// Of the `workable` leases: how many each running worker (alive, not shutting down) serves,
    /// zeros included, and those nobody serves. One pass over the tasks.
    fn serving(&self, workable: &[String]) -> (BTreeMap<u32, usize>, Vec<String>) {
        let mut serving: BTreeMap<&str, u32> = BTreeMap::new();
        for task in self.tasks.values().filter(|t| self.serves(t)) {
            // The first, as `served_by` finds it.
            serving.entry(task.key.as_str()).or_insert(task.inc);
        }
        let mut counts: BTreeMap<u32, usize> = self
            .workers
            .values()
            .filter(|w| w.life == Life::Alive && !w.shutting_down)
            .map(|w| (w.inc, 0))
            .collect();
        let mut unserved = Vec::new();
        for key in workable {
            match serving.get(key.as_str()) {
                Some(inc) => *counts.entry(*inc).or_insert(0) += 1,
                None => unserved.push(key.clone()),
            }
        }
        (counts, unserved)
    }

    fn check_takeover(&mut self) {
        if self.net.faulty {
            return;
        }
        let workable = self.workable();
        let bound = micros(self.settings.failover + self.settings.scan_interval) + TAKEOVER_MARGIN;
        self.unserved_since.retain(|k, _| workable.contains(k));
        if workable.len() > self.room() {
            self.short_of_room = self.t;
            return;
        }
        // Room came back (a worker joined, a shard ended): from then on as after a disruption.
        let calm_since = self.last_disruption.max(self.short_of_room);
        for key in workable {
            if self.served_by(&key).is_some() {
                self.unserved_since.remove(&key);
                continue;
            }
            // A write that leaves an unserved lease to a worker that is gone or paused (a release
            // to a worker that died or froze after asking for it, a take by a worker that then
            // died) starts its failover time again. Writes that leave it to a running worker or
            // to nobody do not.
            let lease = self.table.get(&key);
            let counter = lease.map_or(0, |l| l.counter);
            let to_the_gone = lease.and_then(|l| l.owner.as_deref()).is_some_and(|owner| {
                !self
                    .workers
                    .values()
                    .any(|w| w.id == owner && w.life == Life::Alive)
            });
            let entry = self
                .unserved_since
                .entry(key.clone())
                .or_insert((self.t, counter));
            if entry.1 != counter {
                entry.1 = counter;
                if to_the_gone {
                    entry.0 = self.t;
                }
            }
            let from = entry.0;
            // A healthy fleet (nothing disruptive within a failover time before the shard
            // stopped being served) moves leases by handoff, starts children and takes free
            // leases within a couple of scans, never by waiting for an expiry.
            let healthy = calm_since + micros(self.settings.failover) + bound < from
                && self.stable_watcher(from);
            let quick = 2 * micros(self.settings.scan_interval) + TAKEOVER_MARGIN;
            if healthy && self.t - from > quick {
                let detail = format!(
                    "{key} has had no trusted processor for {:.3} s (since {:.3} s) in a healthy fleet (last disruption or shortage of room at {:.3} s; bound {:.3} s)",
                    secs(self.t - from),
                    secs(from),
                    secs(calm_since),
                    secs(quick)
                );
                self.fail("no stall in a healthy fleet", detail);
                return;
            }
            let start = from.max(calm_since);
            if !self.stable_observer(start) {
                continue;
            }
            let gap = self.t - start;
            // A watcher that has watched throughout takes within the bound; without one (every
            // watcher died or froze), workers that did not watch find the expiry at their own
            // slower scans, two of them at most, and then watch.
            let bound = if self.stable_watcher(start) {
                self.report.longest_gap = self.report.longest_gap.max(Duration::from_micros(gap));
                bound
            } else {
                self.report.longest_unwatched_gap = self
                    .report
                    .longest_unwatched_gap
                    .max(Duration::from_micros(gap));
                micros(self.settings.failover + self.settings.slow_scan * 2) + TAKEOVER_MARGIN
            };
            if gap > bound {
                let detail = format!(
                    "{key} has had no trusted processor for {:.3} s (since {:.3} s; last disruption or shortage of room at {:.3} s; bound {:.3} s)",
                    secs(self.t - from),
                    secs(from),
                    secs(calm_since),
                    secs(bound)
                );
                self.fail("takeover in time", detail);
                return;
            }
        }
    }

    /// Ground truth for the takeover bound's two regimes: in a fleet left alone long enough for
    /// every worker to have seen the dead workers' leases expire and to have scanned since, some
    /// running worker watches for expiries (the ones the watchers' ranking picks, or all of them
    /// when fewer owners than the watchers' count have room). Joins and lease moves may leave a
    /// short gap, while the old watcher has seen the new owner and the new owner has not yet
    /// scanned; it may last one slow scan.
    fn check_watching(&mut self) {
        // As for the takeover bound: a worker learns who watches from its scans, and a faulty
        // table may fail them for longer than the allowance (seed 8089: a lone worker's scans
        // all failed from 2 s after it started, while it waited to see the dead owner's lease
        // expire).
        if self.net.faulty {
            return;
        }
        let watched = self
            .workers
            .values()
            .any(|w| w.life == Life::Alive && !w.shutting_down && w.machine.watching());
        let running = self
            .workers
            .values()
            .any(|w| w.life == Life::Alive && !w.shutting_down);
        if watched || !running {
            self.unwatched_since = None;
            return;
        }
        let since = *self.unwatched_since.get_or_insert(self.t);
        let settle = micros(self.settings.failover + self.settings.slow_scan * 2) + TAKEOVER_MARGIN;
        // A watcher shutting down holds its leases until its processors stop (within the
        // shutdown timeout and its grace), or until they expire: the others count on it to
        // watch until then.
        let left = self.watcher_left.map_or(0, |t| {
            t + micros(self.settings.shutdown_timeout + SHUTDOWN_GRACE + self.settings.failover)
                + TAKEOVER_MARGIN
        });
        // The gap counts from when the fleet should have settled, if it began before.
        let from = since.max(self.last_disruption + settle).max(left);
        let allowed =
            micros(self.settings.slow_scan + self.settings.scan_interval) + TAKEOVER_MARGIN;
        if self.t > from && self.t - from > allowed {
            let detail = format!(
                "no running worker has watched for expiries since {:.3} s (last disruption at {:.3} s; counted from {:.3} s; allowed {:.3} s)",
                secs(since),
                secs(self.last_disruption),
                secs(from),
                secs(allowed)
            );
            self.fail("someone watches", detail);
        }
    }

    /// In a cold start's run: notes the first check at which the split is even, and lets the
    /// world run on for [`STILL`], in which nothing may move (the final checks).
    fn watch_cold_start(&mut self) {
        let Some(cold) = self.cold else {
            return;
        };
        if cold.even_at.is_some() || !self.evenly_served() {
            return;
        }
        self.cold = Some(Cold {
            even_at: Some(self.t),
            moves: self.moves.len(),
            scans: self.report.scans,
        });
        self.end = self.t + STILL;
        self.note(|| "EVEN".to_owned());
    }

    /// Whether every workable shard has a trusted processor, and the running workers' counts
    /// differ by at most one.
    fn evenly_served(&self) -> bool {
        let workable = self.workable();
        if workable.is_empty() {
            // No lease yet (the first shard sync has not landed): nothing to call even.
            return false;
        }
        let (counts, unserved) = self.serving(&workable);
        if !unserved.is_empty() {
            return false;
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        max - min <= 1
    }

    /// How many leases the running workers (alive, unpaused, not shutting down) may hold under
    /// `max_leases`.
    fn room(&self) -> usize {
        self.settings.max_leases.map_or(usize::MAX, |cap| {
            cap * self
                .workers
                .values()
                .filter(|w| w.life == Life::Alive && !w.shutting_down)
                .count()
        })
    }

    /// Whether some worker has run, unpaused and not shutting down, and watched for expiries,
    /// since `from` or before.
    /// Under `max_leases` only a watcher that had room throughout counts: one at its cap cannot
    /// take what it sees expire, and the workers with room may be spares (holding nothing) that
    /// scan at their own slower pace.
    fn stable_watcher(&self, from: T) -> bool {
        self.workers.values().any(|w| {
            w.life == Life::Alive
                && !w.shutting_down
                && w.running_since <= from
                && w.watching_since.is_some_and(|since| since <= from)
                && w.full_at < from
                && self.has_room(&w.id)
        })
    }

    /// Notes which workers are at `max_leases` now.
    fn note_full_workers(&mut self) {
        if self.settings.max_leases.is_none() {
            return;
        }
        let full: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.life == Life::Alive && !self.has_room(&w.id))
            .map(|(inc, _)| *inc)
            .collect();
        for inc in full {
            if let Some(w) = self.workers.get_mut(&inc) {
                w.full_at = self.t;
            }
        }
    }

    /// Whether the worker holds fewer unfinished leases than `max_leases`.
    fn has_room(&self, id: &str) -> bool {
        self.settings.max_leases.is_none_or(|cap| {
            self.table
                .scan()
                .iter()
                .filter(|l| l.owner.as_deref() == Some(id) && !l.is_finished())
                .count()
                < cap
        })
    }

    /// Whether some worker has run, unpaused and not shutting down, since `from` or before.
    fn stable_observer(&self, from: T) -> bool {
        self.workers
            .values()
            .any(|w| w.life == Life::Alive && !w.shutting_down && w.running_since <= from)
    }

    fn final_checks(&mut self) {
        // Every workable shard runs, evenly spread, and nothing moved at the end.
        let workable = self.workable();
        // Under `max_leases` with too few workers, the shards beyond their room wait, and every
        // worker must then be at its cap.
        let may_wait = workable.len().saturating_sub(self.room());
        let (counts, unserved) = self.serving(&workable);
        if unserved.len() > may_wait {
            self.fail(
                "every shard runs at the end",
                format!(
                    "{unserved:?} have no trusted processor after the quiet period (room for all but {may_wait})"
                ),
            );
            return;
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        if let Some(cap) = self.settings.max_leases
            && may_wait > 0
            && min < cap
        {
            self.fail(
                "workers at their cap while shards wait",
                format!(
                    "{} shards wait for room, but a worker holds only {min} of its {cap}",
                    unserved.len()
                ),
            );
            return;
        }
        if max - min > 1 {
            let spread: Vec<String> = counts
                .iter()
                .map(|(inc, n)| format!("{}: {n}", self.name(*inc)))
                .collect();
            self.fail(
                "even split",
                format!("{} leases spread as {spread:?}", workable.len()),
            );
            return;
        }
        let late = self
            .moves
            .iter()
            .filter(|at| **at + STILL > self.end)
            .count();
        if late > 0 {
            self.fail(
                "no handoff ping-pong",
                format!(
                    "{late} takes or handoffs in the last {} s of the quiet period",
                    STILL / SEC
                ),
            );
            return;
        }
        // Nothing skipped: every record up to each checkpoint was processed.
        for lease in self.table.scan() {
            let upto = match &lease.checkpoint {
                Checkpoint::ShardEnd => self.shard(&lease.key).and_then(|s| s.last).unwrap_or(0),
                other => record_of(other),
            };
            let counts = self.processed.get(&lease.key);
            let missing = (1..=upto)
                .filter(|r| {
                    counts
                        .and_then(|c| c.get(*r as usize))
                        .is_none_or(|n| *n == 0)
                })
                .count();
            if missing > 0 {
                self.fail(
                    "no record skipped",
                    format!("{} is checkpointed at {}, but {missing} records before it were never processed", lease.key, lease.checkpoint),
                );
                return;
            }
        }
    }
}

fn write(result: Result<Lease, Option<Box<Lease>>>) -> Answer {
    Answer::Write(match result {
        Ok(lease) => Outcome::Written(lease),
        Err(current) => Outcome::Refused(current.map(|l| *l)),
    })
}

fn outcome(answer: Answer) -> Outcome {
    match answer {
        Answer::Write(outcome) => outcome,
        _ => Outcome::Failed,
    }
}

/// The record number a checkpoint stands at (records are numbered from 1; a sentinel is 0).
fn record_of(checkpoint: &Checkpoint) -> u64 {
    checkpoint
        .sequence_number()
        .and_then(|s| s.as_str().parse().ok())
        .unwrap_or(0)
}

fn at_record(record: u64) -> Checkpoint {
    match SequenceNumber::parse(&record.to_string()) {
        Ok(sequence) => Checkpoint::at(sequence, 0),
        Err(_) => Checkpoint::TrimHorizon,
    }
}

fn short(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(300) {
        out.push(c);
    }
    if text.len() > 300 {
        let _ = write!(out, "...");
    }
    out
}

fn describe_lease(lease: &Lease) -> String {
    format!(
        "{}(owner {:?}, counter {}, handoff {:?}, {})",
        lease.key, lease.owner, lease.counter, lease.checkpoint_owner, lease.checkpoint
    )
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Written(lease) => format!("written {}", describe_lease(lease)),
        Outcome::Refused(Some(lease)) => format!("refused, now {}", describe_lease(lease)),
        Outcome::Refused(None) => "refused (absent)".to_owned(),
        Outcome::Failed => "failed".to_owned(),
    }
}

fn describe_input(input: &Input) -> String {
    match input {
        Input::Tick => "tick".to_owned(),
        Input::Scanned(Some(leases)) => format!(
            "scan: {}",
            leases
                .iter()
                .map(describe_lease)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Input::Scanned(None) => "scan failed".to_owned(),
        Input::Synced(ok) => format!("synced {ok}"),
        Input::Renewed { key, outcome, .. } => {
            format!("renewal of {key} {}", describe_outcome(outcome))
        }
        Input::Taken { key, outcome, .. } => format!("take of {key} {}", describe_outcome(outcome)),
        Input::HandoffAsked { key, outcome } => {
            format!("handoff request of {key} {}", describe_outcome(outcome))
        }
        Input::Released { key, outcome } => {
            format!("release of {key} {}", describe_outcome(outcome))
        }
        Input::Exited { key, how } => format!("task {key} exited {how:?}"),
        Input::ShutdownAsked => "shutdown asked".to_owned(),
    }
}

fn describe_action(action: &Action) -> String {
    match action {
        Action::Take { lease } => format!("take {}", describe_lease(lease)),
        Action::AskHandoff { lease } => format!("ask handoff {}", describe_lease(lease)),
        Action::Release { lease, role } => format!("release {} as {role:?}", describe_lease(lease)),
        Action::Start { lease, .. } => format!("start {}", describe_lease(lease)),
        other => format!("{other:?}"),
    }
}
