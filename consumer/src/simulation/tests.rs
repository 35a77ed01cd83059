//! The simulation as a test: many seeded schedules within a time budget.

use std::time::{Duration, Instant};

use super::run;

/// Schedules run per test run at most, and the wall-clock budget.
const SCHEDULES: u64 = 5_000;
const BUDGET: Duration = Duration::from_secs(90);
/// Fewer than this many schedules within the budget fails the test: the proof would be too thin.
const AT_LEAST: u64 = 1_000;

#[test]
fn the_lease_contract_holds_in_thousands_of_schedules() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        match run(seed, true) {
            Ok(report) => println!("seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let first: u64 = std::env::var("SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let mut ran = 0u64;
    let (mut faulty, mut gentle, mut capped, mut events, mut simulated) =
        (0u64, 0u64, 0u64, 0u64, Duration::ZERO);
    let (mut kills, mut pauses, mut long_pauses, mut panics, mut splits, mut merges) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut longest_gap = Duration::ZERO;
    let mut longest_unwatched_gap = Duration::ZERO;
    let mut own_writes_resolved = 0u64;
    let mut trust_ran_out = 0u64;
    let mut duplicates = 0u64;
    let schedules: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SCHEDULES);
    for seed in first..first + schedules {
        if started.elapsed() > BUDGET {
            break;
        }
        match run(seed, false) {
            Ok(report) => {
                ran += 1;
                faulty += u64::from(report.faulty);
                gentle += u64::from(report.gentle);
                capped += u64::from(report.max_leases.is_some());
                events += report.events;
                simulated += report.simulated;
                kills += u64::from(report.kills);
                pauses += u64::from(report.pauses);
                long_pauses += u64::from(report.long_pauses);
                panics += u64::from(report.panics);
                splits += u64::from(report.splits);
                merges += u64::from(report.merges);
                longest_gap = longest_gap.max(report.longest_gap);
                longest_unwatched_gap = longest_unwatched_gap.max(report.longest_unwatched_gap);
                own_writes_resolved += report.own_writes_resolved;
                trust_ran_out += report.trust_ran_out;
                duplicates += report.duplicates;
            }
            Err(_) => {
                // Run it again with the trace on: the schedule is the same.
                let failure = match run(seed, true) {
                    Err(failure) => failure.to_string(),
                    Ok(_) => {
                        format!("seed {seed} failed, then passed when replayed: not deterministic")
                    }
                };
                panic!("{failure}");
            }
        }
    }
    println!(
        "simulation: {ran} schedules ({faulty} with table faults, {gentle} gentle, {capped} with max_leases) in {:.1} s: {events} events, \
         {:.0} simulated hours; {kills} kills, {pauses} pauses ({long_pauses} past the failover \
         time), {panics} panics, {splits} splits, {merges} merges; {own_writes_resolved} writes \
         refused only by the worker's own earlier write, made again; {trust_ran_out} leases \
         whose trust ran out on a worker running throughout (renewals not answered in time); \
         {duplicates} records \
         processed more than once; longest time a workable shard \
         went unserved after a disruption (schedules without table faults): {:.2} s with a \
         watcher throughout, {:.2} s without",
        started.elapsed().as_secs_f64(),
        simulated.as_secs_f64() / 3600.0,
        longest_gap.as_secs_f64(),
        longest_unwatched_gap.as_secs_f64()
    );
    assert!(
        ran >= AT_LEAST,
        "only {ran} schedules ran within {BUDGET:?}"
    );
}

/// A fleet started cold on idle shards, at the scale benchmark's sizes: the time to an even
/// split in simulated time, which is the algorithm's alone (table calls take 1 to 15 ms and never
/// queue, every worker has a core of its own), with every invariant checked on the way and
/// nothing moving for 30 s after. Each cell must be even within [`EVEN_WITHIN`], in every seed.
#[test]
fn a_cold_fleet_splits_evenly_within_five_scan_intervals() {
    use super::cold_start;
    /// Five scan intervals of the default settings.
    const EVEN_WITHIN: Duration = Duration::from_secs(10);
    // (workers, shards, seeds)
    let cells: &[(usize, usize, u64)] = &[
        (2, 8, 8),
        (10, 100, 4),
        (10, 1000, 2),
        (50, 100, 2),
        (50, 1000, 2),
    ];
    for &(workers, shards, seeds) in cells {
        let started = Instant::now();
        for seed in 0..seeds {
            let cold = match cold_start(seed, workers, shards, Duration::from_secs(120)) {
                Ok(cold) => cold,
                Err(failure) => panic!("{workers} workers on {shards} shards: {failure}"),
            };
            let Some(even) = cold.even_after else {
                panic!("{workers} workers on {shards} shards, seed {seed}: never even");
            };
            println!(
                "{workers} workers on {shards} shards, seed {seed}: even after {:.2} s (simulated), \
                 {} takes and handoff requests written, {} scans; {} events",
                even.as_secs_f64(),
                cold.moves,
                cold.scans,
                cold.report.events
            );
            assert!(
                even <= EVEN_WITHIN,
                "{workers} workers on {shards} shards, seed {seed}: even only after {even:?}"
            );
        }
        println!(
            "{workers} workers on {shards} shards: {seeds} seeds in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}
