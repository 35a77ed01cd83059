//! What a running worker can tell about itself: [`Status`], a snapshot a service can expose, and
//! [`Health`], a readiness and liveness answer that fits a Kubernetes probe.
//!
//! The worker's task and its shard tasks write what they do on a shared board as they go (a
//! short lock per batch, per renewal and per scan); [`Running::status`](crate::Running::status)
//! copies it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use tokio::sync::Mutex as AsyncMutex;

use crate::{checkpoint::Checkpoint, failure::FailureCause, lease::Lease};

/// How many recent errors a worker keeps for [`Status::recent_errors`].
const RECENT_ERRORS: usize = 16;

/// What a shard's processor is doing.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ProcessorState {
    /// Being made and initialized.
    Initializing,
    /// Processing a batch, since then.
    Processing {
        /// When the call began.
        since: SystemTime,
    },
    /// Waiting for records.
    Idle,
    /// Failing: the current batch (or the initialization) failed this many times in a row.
    Failing {
        /// Attempts so far.
        attempts: u32,
        /// When the first of them failed.
        since: SystemTime,
        /// The last failure.
        last: FailureCause,
    },
    /// Stopping (shutdown, handoff, shard end, lease lost).
    Stopping,
}

/// One shard this worker holds.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The shard.
    pub shard_id: String,
    /// The lease's counter, as this worker last wrote it.
    pub lease_counter: u64,
    /// The lease's checkpoint, as this worker last wrote or read it.
    pub checkpoint: Checkpoint,
    /// When the last batch was handed to the processor.
    pub last_batch: Option<SystemTime>,
    /// How far behind the tip the last batch was (`MillisBehindLatest`).
    pub behind_latest: Option<Duration>,
    /// What the processor is doing.
    pub processor: ProcessorState,
}

/// A recent error of the worker (a failed call, a processor failure).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecentError {
    /// When.
    pub at: SystemTime,
    /// What, in a line.
    pub what: String,
}

/// A snapshot of a running worker.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// The worker's id.
    pub worker_id: String,
    /// Whether it has started (lease table and stream found, first scan done).
    pub started: bool,
    /// Whether it is shutting down, or has stopped.
    pub stopping: bool,
    /// Leases it holds (a processor runs for each).
    pub leases_held: usize,
    /// When a lease renewal last succeeded.
    pub last_renewal: Option<SystemTime>,
    /// When a scan of the lease table last succeeded.
    pub last_scan: Option<SystemTime>,
    /// The last errors, oldest first (at most 16).
    pub recent_errors: Vec<RecentError>,
    /// The shards it holds, by shard id.
    pub shards: Vec<ShardStatus>,
}

/// Whether a worker is ready and alive, for a readiness and a liveness probe.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Alive: the worker's task runs and has tried to scan the lease table (successfully or
    /// not) within three failover times (plus its longest wait between scans, twice the
    /// failover time, when it is settled and does not watch for expiries). A liveness probe
    /// should fail only on this: restarting the process is the remedy.
    pub live: bool,
    /// Ready: started, not shutting down, and the last successful scan is within three scan
    /// intervals and a failover time (the longest wait between scans and a failover time, when
    /// settled and not watching).
    pub ready: bool,
    /// Why not, or what is wrong with some shards (a processor failing for a minute or more).
    pub problems: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct ShardEntry {
    pub(crate) copy: Arc<AsyncMutex<Lease>>,
    pub(crate) last_batch: Option<SystemTime>,
    pub(crate) behind: Option<Duration>,
    pub(crate) state: ProcessorState,
}

#[derive(Debug, Default)]
pub(crate) struct BoardState {
    pub(crate) started: bool,
    pub(crate) stopping: bool,
    pub(crate) finished: bool,
    pub(crate) last_renewal: Option<SystemTime>,
    pub(crate) last_scan: Option<SystemTime>,
    pub(crate) last_scan_attempt: Option<SystemTime>,
    /// The worker settled without watching for expiries: it scans seldom (see
    /// `Machine::watching`), so its scans are judged against its longest wait.
    pub(crate) relaxed: bool,
    pub(crate) recent_errors: VecDeque<RecentError>,
    pub(crate) shards: BTreeMap<String, ShardEntry>,
}

/// The board the worker and its shard tasks write on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Board(Arc<Mutex<BoardState>>);

impl Board {
    pub(crate) fn lock(&self) -> MutexGuard<'_, BoardState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn error(&self, what: String) {
        let mut board = self.lock();
        if board.recent_errors.len() == RECENT_ERRORS {
            board.recent_errors.pop_front();
        }
        board.recent_errors.push_back(RecentError {
            at: SystemTime::now(),
            what,
        });
    }

    /// A shard's handle on the board.
    pub(crate) fn shard(&self, shard_id: &str, copy: Arc<AsyncMutex<Lease>>) -> ShardBoard {
        self.lock().shards.insert(
            shard_id.to_owned(),
            ShardEntry {
                copy,
                last_batch: None,
                behind: None,
                state: ProcessorState::Initializing,
            },
        );
        ShardBoard {
            board: self.clone(),
            shard_id: shard_id.to_owned(),
        }
    }

    pub(crate) fn remove(&self, shard_id: &str) {
        self.lock().shards.remove(shard_id);
    }

    pub(crate) async fn status(&self, worker_id: &str) -> Status {
        let (mut status, copies) = {
            let board = self.lock();
            let copies: Vec<(String, Arc<AsyncMutex<Lease>>, ShardEntry)> = board
                .shards
                .iter()
                .map(|(id, e)| {
                    (
                        id.clone(),
                        e.copy.clone(),
                        ShardEntry {
                            copy: e.copy.clone(),
                            last_batch: e.last_batch,
                            behind: e.behind,
                            state: e.state.clone(),
                        },
                    )
                })
                .collect();
            (
                Status {
                    worker_id: worker_id.to_owned(),
                    started: board.started,
                    stopping: board.stopping || board.finished,
                    leases_held: board.shards.len(),
                    last_renewal: board.last_renewal,
                    last_scan: board.last_scan,
                    recent_errors: board.recent_errors.iter().cloned().collect(),
                    shards: Vec::new(),
                },
                copies,
            )
        };
        for (shard_id, copy, entry) in copies {
            let lease = copy.lock().await.clone();
            status.shards.push(ShardStatus {
                shard_id,
                lease_counter: lease.counter,
                checkpoint: lease.checkpoint,
                last_batch: entry.last_batch,
                behind_latest: entry.behind,
                processor: entry.state,
            });
        }
        status
    }

    /// `longest_scan`: the longest a worker goes between two scans when all is well (a settled
    /// worker that does not watch for expiries scans that seldom); a worker that watches is
    /// judged against its `scan_interval`.
    pub(crate) fn health(
        &self,
        scan_interval: Duration,
        longest_scan: Duration,
        failover: Duration,
    ) -> Health {
        let board = self.lock();
        let (live_after, fresh_after) = if board.relaxed {
            (longest_scan + failover * 3, longest_scan + failover)
        } else {
            (failover * 3, scan_interval * 3 + failover)
        };
        let now = SystemTime::now();
        let within = |at: Option<SystemTime>, limit: Duration| {
            at.and_then(|at| now.duration_since(at).ok())
                .is_some_and(|age| age <= limit)
        };
        let mut problems = Vec::new();
        let live =
            !board.finished && (!board.started || within(board.last_scan_attempt, live_after));
        if board.finished {
            problems.push("the worker has stopped".to_owned());
        } else if !live {
            problems.push(
                "the worker has not tried to scan its lease table for three failover times (past \
                 its longest wait between scans, if it does not watch for expiries)"
                    .to_owned(),
            );
        }
        let fresh = within(board.last_scan, fresh_after);
        if !board.started {
            problems.push("starting".to_owned());
        } else if !fresh {
            problems.push("no successful scan of the lease table lately".to_owned());
        }
        if board.stopping {
            problems.push("shutting down".to_owned());
        }
        for (shard, entry) in &board.shards {
            if let ProcessorState::Failing {
                attempts,
                since,
                last,
            } = &entry.state
                && now
                    .duration_since(*since)
                    .is_ok_and(|d| d >= Duration::from_secs(60))
            {
                problems.push(format!("{shard}: failing ({attempts} attempts): {last}"));
            }
        }
        Health {
            live,
            ready: board.started && fresh && !board.stopping && !board.finished,
            problems,
        }
    }
}

/// A handle on a running worker's status and health that can be cloned and moved (into an HTTP
/// handler serving probes, say) while the application keeps the [`Running`](crate::Running) to
/// shut the worker down. From [`Running::probe`](crate::Running::probe).
#[derive(Clone, Debug)]
pub struct Probe {
    pub(crate) board: Board,
    pub(crate) worker_id: String,
    pub(crate) scan_interval: Duration,
    pub(crate) longest_scan: Duration,
    pub(crate) failover: Duration,
}

impl Probe {
    /// The worker's [`Status`].
    ///
    /// # Cancellation
    ///
    /// Dropping the future changes nothing.
    pub async fn status(&self) -> Status {
        self.board.status(&self.worker_id).await
    }

    /// The worker's [`Health`].
    pub fn health(&self) -> Health {
        self.board
            .health(self.scan_interval, self.longest_scan, self.failover)
    }
}

/// A shard task's handle on the board.
#[derive(Debug)]
pub(crate) struct ShardBoard {
    board: Board,
    shard_id: String,
}

impl ShardBoard {
    pub(crate) fn set(&self, state: ProcessorState) {
        if let Some(entry) = self.board.lock().shards.get_mut(&self.shard_id) {
            entry.state = state;
        }
    }

    pub(crate) fn batch(&self, behind: Option<Duration>) {
        if let Some(entry) = self.board.lock().shards.get_mut(&self.shard_id) {
            entry.last_batch = Some(SystemTime::now());
            entry.behind = behind;
            entry.state = ProcessorState::Processing {
                since: SystemTime::now(),
            };
        }
    }

    pub(crate) fn error(&self, what: String) {
        self.board.error(format!("{}: {what}", self.shard_id));
    }
}
