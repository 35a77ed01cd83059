//! Fleets of workers in separate processes (`consumer-worker`) on a ferrokinesis process and
//! DynamoDB Local, while records are produced: kill -9, SIGSTOP, balancing with a joining worker,
//! and graceful shutdown. Every acknowledged record must be processed. Failover, balancing and the
//! graceful handoff are run with polling and with enhanced fan-out retrieval.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kinesis_integration_tests::consumer_worker::WorkerProcess;
use kinesis_integration_tests::fleet::{self, Fleet, Timings, duplicates};
use tokio::time::Instant;

const FAILOVER: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(90);

/// The fleet tests measure time: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A worker of the fleet, in its own process.
type Worker = WorkerProcess;

fn spawn(env: &Fleet, id: &str) -> Worker {
    env.spawn(id, &[]).unwrap()
}

async fn env(shards: i32, fan_out: bool) -> Fleet {
    Fleet::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_consumer-worker")),
        std::path::Path::new(env!("CARGO_BIN_EXE_ferrokinesis-server")),
        shards,
        fan_out,
        Timings::DEFAULT,
    )
    .await
    .unwrap()
}

fn produce(env: &Fleet, per_second: u64) -> fleet::Load {
    env.produce(per_second)
}

async fn until(what: &str, done: impl FnMut() -> bool) {
    fleet::until(what, WAIT, done).await.unwrap();
}

async fn all_processed(acked: &[String], workers: &[&Worker]) -> HashMap<String, usize> {
    fleet::all_processed(acked, workers, WAIT).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_survivor_resumes_within_failover_plus_3_s() {
    kill_9(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_kill_9_survivor_resumes_within_failover_plus_3_s() {
    kill_9(true).await;
}

async fn kill_9(fan_out: bool) {
    let _serial = SERIAL.lock().await;
    let env = env(8, fan_out).await;
    let load = produce(&env, 400);
    let mut a = spawn(&env, "worker-a");
    let b = spawn(&env, "worker-b");
    until("an even split (4 and 4)", || {
        a.held().len() == 4 && b.held().len() == 4
    })
    .await;

    let lost: HashSet<String> = a.held().into_keys().collect();
    a.child.start_kill().unwrap();
    let killed = Instant::now();
    until("b to resume a's shards", || {
        let held = b.held();
        lost.iter().all(|s| held.contains_key(s))
    })
    .await;
    let held = b.held();
    let resumed = lost.iter().map(|s| held[s]).max().unwrap();
    let took = resumed.duration_since(killed);
    println!(
        "{}kill -9 of {}: {} shards resumed by {} after {:.2} s (failover time {:?})",
        if fan_out { "fan-out: " } else { "" },
        a.id,
        lost.len(),
        b.id,
        took.as_secs_f64(),
        FAILOVER
    );
    assert!(
        took <= FAILOVER + Duration::from_secs(3),
        "resumed after {took:?}"
    );

    let acked = load.finish().await.unwrap();
    let seen = all_processed(&acked, &[&a, &b]).await;
    println!(
        "{} records acknowledged, all processed; {} processed again after the failover (records after a's last checkpoint)",
        acked.len(),
        duplicates(&seen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_cannot_checkpoint_and_stops_after_resuming() {
    let _serial = SERIAL.lock().await;
    let env = env(4, false).await;
    let load = produce(&env, 200);
    let a = spawn(&env, "worker-a");
    let b = spawn(&env, "worker-b");
    until("an even split (2 and 2)", || {
        a.held().len() == 2 && b.held().len() == 2
    })
    .await;

    let frozen: HashSet<String> = a.held().into_keys().collect();
    a.signal("-STOP").unwrap();
    until("b to take a's shards", || {
        let held = b.held();
        frozen.iter().all(|s| held.contains_key(s))
    })
    .await;
    let before = a.lines().len();
    // Frozen until now: no call into its processors can begin between the freeze and this
    // instant, so any call begun before it began before the freeze, while `a` held the lease.
    let resumed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    a.signal("-CONT").unwrap();
    until("a to report its leases lost", || {
        let after: Vec<String> = a.lines().into_iter().skip(before).map(|(_, l)| l).collect();
        frozen.iter().all(|s| after.contains(&format!("LOST {s}")))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<String> = a.lines().into_iter().skip(before).map(|(_, l)| l).collect();
    for shard in &frozen {
        // Until a later start of the same shard (balancing may hand it back to `a` through a
        // graceful handoff, which is a new lease), `a` neither processes nor checkpoints it.
        let until_restart: Vec<&String> = after
            .iter()
            .take_while(|l| !l.starts_with(&format!("START {shard} ")))
            .collect();
        assert!(
            !until_restart
                .iter()
                .any(|l| **l == format!("CKPT {shard} ok")),
            "a checkpointed {shard} after losing it: {until_restart:?}"
        );
        // A batch handed over just before the freeze may print its records after it (the
        // process was stopped in the callback); none may be handed over after `a` resumed.
        let begun_after: Vec<&&String> = until_restart
            .iter()
            .filter(|l| {
                l.strip_prefix(&format!("CALL {shard} "))
                    .and_then(|began| began.parse::<u128>().ok())
                    .is_some_and(|began| began >= resumed_at)
            })
            .collect();
        assert!(
            begun_after.is_empty(),
            "a was handed records of {shard} after it resumed, having lost it: {until_restart:?}"
        );
    }
    let acked = load.finish().await.unwrap();
    all_processed(&acked, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_balance_twelve_shards_and_a_fourth_takes_its_share_without_duplicates() {
    let _serial = SERIAL.lock().await;
    let env = env(12, false).await;
    let load = produce(&env, 400);
    let first: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| spawn(&env, id))
        .collect();
    until("4 shards each", || {
        first.iter().all(|w| w.held().len() == 4)
    })
    .await;
    let joined_at = Instant::now();
    let fourth = spawn(&env, "w4");
    let all: Vec<&Worker> = first.iter().chain([&fourth]).collect();
    until("3 shards each", || all.iter().all(|w| w.held().len() == 3)).await;
    println!(
        "a fourth worker had its share after {:.2} s",
        joined_at.elapsed().as_secs_f64()
    );
    let acked = load.finish().await.unwrap();
    let seen = all_processed(&acked, &all).await;
    assert_eq!(duplicates(&seen), 0, "handoffs caused duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_leases_over_without_failover_wait_or_duplicates() {
    graceful_shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_graceful_shutdown_and_join_hand_leases_over_without_duplicates() {
    graceful_shutdown(true).await;
}

async fn graceful_shutdown(fan_out: bool) {
    let _serial = SERIAL.lock().await;
    let env = env(4, fan_out).await;
    let load = produce(&env, 200);
    let a = spawn(&env, "worker-a");
    let b = spawn(&env, "worker-b");
    until("an even split (2 and 2)", || {
        a.held().len() == 2 && b.held().len() == 2
    })
    .await;
    let leaving: HashSet<String> = a.held().into_keys().collect();
    let asked = Instant::now();
    a.signal("-TERM").unwrap();
    until("b to take a's shards", || {
        let held = b.held();
        leaving.iter().all(|s| held.contains_key(s))
    })
    .await;
    let took = asked.elapsed();
    println!(
        "{}graceful shutdown: {} shards moved in {:.2} s",
        if fan_out { "fan-out: " } else { "" },
        leaving.len(),
        took.as_secs_f64()
    );
    assert!(
        took < FAILOVER,
        "took {took:?}: the failover time was waited out"
    );
    until("a to exit", || a.lines().iter().any(|(_, l)| l == "EXIT")).await;
    let acked = load.finish().await.unwrap();
    let seen = all_processed(&acked, &[&a, &b]).await;
    assert_eq!(duplicates(&seen), 0, "the shutdown caused duplicates");
}
