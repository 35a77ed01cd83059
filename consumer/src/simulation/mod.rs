//! Deterministic simulation of a fleet of workers: the proof that the lease coordination holds
//! under the schedules production brings.
//!
//! Several workers run the real lease coordination state machine (`coordination::Machine`)
//! against an in-memory lease table with DynamoDB's conditional-write semantics
//! ([`TableModel`]), under a simulated
//! clock (each worker's clock has its own offset and drifts by up to 1 %), driven by a seeded
//! scheduler. Around each machine sits a driver that performs its actions as `worker.rs` does
//! (the shard's own lease copy shared by renewals and checkpoints, in order, as the real mutex
//! does), and shard tasks that behave as `shard.rs` does (trust deadlines, graceful stops,
//! checkpoints, the shard's end with its children). The scheduler injects: kill -9 (with or
//! without a replacement, under the same id or a new one), pauses shorter and longer than the
//! failover time, workers joining, graceful shutdowns, processor panics, splits and merges, and,
//! in some schedules, failed, slow and lost writes (applied, answer lost) and brownouts of the
//! table. A quarter of the schedules cap each worker's leases (`max_leases` 1 to 4), often below
//! what the shards need.
//!
//! After every step it checks:
//! - **one trusted processor per shard**: at any instant at most one processor of a shard is
//!   trusted (its worker's clock is before its trust deadline); a processor whose trust ran out
//!   may still exist (its worker is paused, or it has not reached its next `.await`), but does
//!   no work: no batch is processed and no checkpoint is sent after its deadline;
//! - **told why it stops**: every processor that started ends with exactly one kind of callback
//!   (`shard_ended`, `lease_lost`, `shutdown_requested`), unless its worker died, its task was
//!   aborted by the shutdown timeout, or it panicked;
//! - **no start of a shard already running** on that worker, and **no renewal of a lease without
//!   a running processor**;
//! - **takeover in time** (schedules without faults in the table): no workable shard goes without
//!   a trusted processor for longer than the failover time + the scan interval + 1 s after the
//!   last disruption (kill, pause, resume, shutdown, panic), as long as some worker ran, unpaused
//!   and not shutting down, throughout; under `max_leases`, while the running workers have room
//!   for fewer leases than the workable shards, some rightly wait, and the bound counts from when
//!   room came back;
//! - **checkpoints only move forward** in the table; **no record skipped**: a processor starts
//!   only from a checkpoint below which every record was processed; **no duplicates after a
//!   graceful handoff**: a processor that follows one stopped with a written checkpoint starts
//!   exactly there;
//! - **parents first**: a child starts only once every parent's lease is at `SHARD_END`;
//! - at the end, after a quiet period: every workable shard runs (under `max_leases` without
//!   room for all, all but the excess, and every worker is at its cap), the split is even
//!   (max - min <= 1) and nothing moved in the last 30 s (no handoff ping-pong).
//!
//! A failing seed is run again with its trace on, and the trace is printed; `SIM_SEED=n` replays
//! one seed.
//!
//! [`cold_start`] runs the same world without faults: W workers with the default settings
//! started together on L idle shards, and measures the simulated time to an even split (every
//! workable shard served, the workers' counts within one), every invariant checked on the way and
//! nothing moving for 30 s after. It is the balancing algorithm's own time, without a stand-in
//! that queues the calls of tens of workers on two cores.

mod table;
mod world;

pub use table::{Refused, TableModel};
pub use world::{ColdStart, Failure, Report, cold_start, run};

#[cfg(test)]
mod tests;
