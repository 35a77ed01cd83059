//! `kinesis leases` as a process against the stand-ins and a live fleet of `kinesis-consumer`
//! workers (in the test process, on the same stand-ins): the listing, `release`, `reset`, and a
//! reset racing with a renewal. Also the lease table's `reset_checkpoint`, which `reset` uses.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, until};
use kinesis_consumer::{
    ApplicationName, Batch, BillingMode, BoxError, Checkpoint, Checkpointer, Consumer,
    Error as ConsumerError, InitialPosition, Lease, LeaseTable, Running, SequenceNumber,
    ShardProcessor, Start,
};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);

/// What the workers' processors did, one line per event:
/// `START worker shard checkpoint`, `REC worker shard seq sub data`, `CKPT worker shard ok|lost`,
/// `LOST worker shard`, `END worker shard`, `STOP worker shard`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(Instant, String)>>>);

impl Log {
    fn say(&self, line: String) {
        self.0.lock().unwrap().push((Instant::now(), line));
    }

    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Lines from index `from` on.
    fn since(&self, from: usize) -> Vec<String> {
        self.lines().into_iter().skip(from).collect()
    }

    fn has(&self, from: usize, wanted: impl Fn(&str) -> bool) -> bool {
        self.since(from).iter().any(|l| wanted(l))
    }
}

struct Recorder {
    worker: String,
    shard: String,
    log: Log,
}

impl ShardProcessor for Recorder {
    async fn initialize(&mut self, start: &Start) -> Result<(), BoxError> {
        self.log.say(format!(
            "START {} {} {}",
            self.worker, self.shard, start.checkpoint
        ));
        Ok(())
    }

    async fn process(
        &mut self,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        for r in &batch.records {
            self.log.say(format!(
                "REC {} {} {} {} {}",
                self.worker,
                self.shard,
                r.sequence_number,
                r.sub_sequence_number,
                String::from_utf8_lossy(&r.data)
            ));
        }
        let outcome = if checkpointer.checkpoint().await.is_ok() {
            "ok"
        } else {
            "lost"
        };
        self.log
            .say(format!("CKPT {} {} {outcome}", self.worker, self.shard));
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.log.say(format!("LOST {} {}", self.worker, self.shard));
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), BoxError> {
        checkpointer.checkpoint_shard_end().await?;
        self.log.say(format!("END {} {}", self.worker, self.shard));
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), BoxError> {
        let _ = checkpointer.checkpoint().await;
        self.log.say(format!("STOP {} {}", self.worker, self.shard));
        Ok(())
    }
}

/// A worker in this process, with short timings (failover `failover`, renewals every second,
/// scans every half second).
async fn worker(
    env: &Env,
    stream: &str,
    app: &str,
    id: &str,
    failover: Duration,
    log: &Log,
) -> Running {
    let log = log.clone();
    let worker = id.to_owned();
    Consumer::builder(
        env.kinesis.clone(),
        env.dynamodb.clone(),
        stream,
        ApplicationName::new(app).unwrap(),
        move |shard: &str| Recorder {
            worker: worker.clone(),
            shard: shard.to_owned(),
            log: log.clone(),
        },
    )
    .worker_id(id)
    .initial_position(InitialPosition::TrimHorizon)
    .failover_time(failover)
    .renew_interval(Duration::from_secs(1))
    .scan_interval(Duration::from_millis(500))
    .build()
    .unwrap()
    .start()
    .await
    .unwrap()
}

/// The shards each worker runs now, from the log.
fn held(log: &Log) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    for line in log.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["START", worker, shard, ..] => {
                held.insert((*shard).to_owned(), (*worker).to_owned());
            }
            ["LOST" | "END" | "STOP", worker, shard]
                if held.get(*shard).map(String::as_str) == Some(*worker) =>
            {
                held.remove(*shard);
            }
            _ => {}
        }
    }
    held
}

fn rec_count(log: &Log, from: usize, data: &str) -> usize {
    log.since(from)
        .iter()
        .filter(|l| l.starts_with("REC ") && l.ends_with(&format!(" {data}")))
        .count()
}

async fn table(env: &Env, app: &str) -> LeaseTable {
    let table = LeaseTable::new(env.dynamodb.clone(), app);
    table.ensure(BillingMode::OnDemand, PATIENCE).await.unwrap();
    table
}

async fn leases(env: &Env, app: &str) -> BTreeMap<String, Lease> {
    LeaseTable::new(env.dynamodb.clone(), app)
        .scan()
        .await
        .unwrap()
        .leases
        .into_iter()
        .map(|l| (l.key.clone(), l))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_shows_a_live_fleet_s_owners_and_checkpoints() {
    let env = Env::start().await;
    let stream = env.stream("list", 2).await;
    let app = "list-app".to_owned();
    let log = Log::default();
    let a = worker(&env, &stream, &app, "w-a", Duration::from_secs(6), &log).await;
    let b = worker(&env, &stream, &app, "w-b", Duration::from_secs(6), &log).await;
    for i in 0..6 {
        env.put(&stream, &format!("key{i}"), format!("r{i}")).await;
    }
    until(
        "both workers to hold a shard and every record to be checkpointed",
        PATIENCE,
        || {
            let held = held(&log);
            held.len() == 2
                && held
                    .values()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
                    == 2
                && (0..6).all(|i| rec_count(&log, 0, &format!("r{i}")) > 0)
                && log
                    .lines()
                    .iter()
                    .filter(|l| l.starts_with("CKPT") && l.ends_with(" ok"))
                    .count()
                    >= 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ran = env.run(&["leases", "--application", &app], PATIENCE).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    println!("{}", ran.stdout);
    let lines = ran.lines();
    assert!(
        lines[0].starts_with("LEASE") && lines[0].contains("CHECKPOINT"),
        "{}",
        ran.stdout
    );
    let in_table = leases(&env, &app).await;
    for (key, lease) in &in_table {
        let row = lines
            .iter()
            .find(|l| l.starts_with(key.as_str()))
            .unwrap_or_else(|| panic!("no row for {key}: {}", ran.stdout));
        let owner = lease.owner.as_deref().unwrap();
        assert!(row.contains(&format!(" {owner} ")), "{row}");
        assert!(row.contains(" processing "), "{row}");
        // Every record was processed and checkpointed: the checkpoint is the shard's last record.
        let last = log
            .lines()
            .into_iter()
            .rev()
            .find_map(|l| {
                let words: Vec<&str> = l.split(' ').collect();
                (words[0] == "REC" && words[2] == key).then(|| format!("{}/{}", words[3], words[4]))
            })
            .unwrap();
        assert_eq!(lease.checkpoint.to_string(), last);
        assert!(row.contains(&format!(" {last} ")), "{row}");
    }
    assert!(
        ran.stdout
            .contains("2 leases: 2 processing; owners: w-a (1), w-b (1)"),
        "{}",
        ran.stdout
    );

    let observed = env
        .run(
            &["leases", "--application", &app, "--observe", "3", "--json"],
            PATIENCE,
        )
        .await;
    assert_eq!(observed.code, Some(0), "{}", observed.stderr);
    let value: serde_json::Value = serde_json::from_str(&observed.stdout).unwrap();
    assert_eq!(value["table"], app);
    assert_eq!(value["observed_seconds"], 3.0);
    let rows = value["leases"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["state"], "processing", "{row}");
        assert!(row["renewals"].as_u64().unwrap() >= 1, "renewing: {row}");
        assert!(row["why"].is_null());
        let key = row["lease_key"].as_str().unwrap();
        let checkpoint = &in_table[key].checkpoint;
        if let Checkpoint::At {
            sequence_number, ..
        } = checkpoint
        {
            // Checkpoints only move forward.
            let shown = SequenceNumber::parse(row["checkpoint"].as_str().unwrap()).unwrap();
            assert!(&shown >= sequence_number, "{row}");
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_says_why_shards_are_not_processed() {
    let env = Env::start().await;
    let app = "why-app".to_owned();
    let table = table(&env, &app).await;
    let seq =
        SequenceNumber::parse("49590338271490256608559692538361571095921575989136588818").unwrap();
    let mut finished = Lease::new("shardId-000000000000", Checkpoint::ShardEnd);
    finished.counter = 9;
    let mut stuck = Lease::new("shardId-000000000001", Checkpoint::at(seq.clone(), 4));
    stuck.owner = Some("ghost".to_owned());
    stuck.counter = 3;
    let blocked = Lease::new("shardId-000000000002", Checkpoint::TrimHorizon)
        .with_parents(["shardId-000000000000", "shardId-000000000001"]);
    let free = Lease::new("shardId-000000000003", Checkpoint::Latest);
    let mut handoff = Lease::new("shardId-000000000004", Checkpoint::TrimHorizon);
    handoff.owner = Some("w-new".to_owned());
    handoff.checkpoint_owner = Some("w-old".to_owned());
    for lease in [&finished, &stuck, &blocked, &free, &handoff] {
        assert!(table.create(lease).await.unwrap());
    }
    let ran = env
        .run(
            &["leases", "--application", &app, "--observe", "1"],
            PATIENCE,
        )
        .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    println!("{}", ran.stdout);
    let row = |key: &str| -> String {
        ran.lines()
            .into_iter()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key}: {}", ran.stdout))
            .to_owned()
    };
    assert!(row("shardId-000000000000").contains("finished (SHARD_END)"));
    let stuck_row = row("shardId-000000000001");
    assert!(stuck_row.contains(&format!("{seq}/4")), "{stuck_row}");
    assert!(
        stuck_row.contains("expired?") && stuck_row.contains("owner ghost did not renew in 1.0 s"),
        "{stuck_row}"
    );
    assert!(row("shardId-000000000002").contains("parents not finished: shardId-000000000001"));
    assert!(row("shardId-000000000002").contains("shardId-000000000000,shardId-000000000001"));
    assert!(row("shardId-000000000003").contains("no owner"));
    assert!(
        row("shardId-000000000004").contains(
            "handoff pending: w-old is to checkpoint and release it, then w-new takes it"
        )
    );

    // One read cannot tell a dead owner.
    let once = env.run(&["leases", "--application", &app], PATIENCE).await;
    assert!(!once.stdout.contains("expired?"), "{}", once.stdout);
    assert!(!once.stdout.contains("RENEWED"), "{}", once.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_hands_a_worker_s_leases_to_the_fleet() {
    let env = Env::start().await;
    let stream = env.stream("release", 2).await;
    let app = "release-app".to_owned();
    // A worker gone without releasing ("ghost"): with a failover time of a minute, the fleet
    // would wait that long for its leases.
    let table = table(&env, &app).await;
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let mut lease = Lease::new(shard, Checkpoint::TrimHorizon);
        lease.owner = Some("ghost".to_owned());
        lease.counter = 5;
        assert!(table.create(&lease).await.unwrap());
    }
    for i in 0..4 {
        env.put(&stream, &format!("key{i}"), format!("r{i}")).await;
    }
    let log = Log::default();
    let b = worker(&env, &stream, &app, "w-b", Duration::from_secs(60), &log).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        held(&log).is_empty(),
        "the ghost's leases are not expired: {:?}",
        log.lines()
    );
    let released_at = Instant::now();
    let ran = env
        .run(
            &[
                "leases",
                "--application",
                &app,
                "release",
                "--worker",
                "ghost",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    println!("{}", ran.stdout);
    assert_eq!(ran.lines().len(), 2, "{}", ran.stdout);
    // A lease the ghost owns is released; one that w-b asked for meanwhile (a graceful handoff,
    // the ghost as `checkpointOwner`) has its handoff completed.
    assert!(
        ran.lines()
            .iter()
            .all(|l| l.contains(": released (counter 5 -> 6)")
                || l.contains(": handoff from ghost completed (counter 5 -> 6): w-b takes it")),
        "{}",
        ran.stdout
    );
    until("w-b to take the ghost's leases", PATIENCE, || {
        held(&log).len() == 2
    })
    .await;
    println!(
        "w-b started both {:.2} s after the release",
        released_at.elapsed().as_secs_f64()
    );
    assert!(released_at.elapsed() < Duration::from_secs(10));
    until("every record processed", PATIENCE, || {
        (0..4).all(|i| rec_count(&log, 0, &format!("r{i}")) > 0)
    })
    .await;

    // A live worker: its processors stop at their next renewal (the lease is lost) and the
    // shards start again from their checkpoints; it still competes for them.
    let a = worker(&env, &stream, &app, "w-a", Duration::from_secs(60), &log).await;
    until("an even split", PATIENCE, || {
        let held = held(&log);
        held.values().filter(|w| *w == "w-a").count() == 1 && held.len() == 2
    })
    .await;
    let (shard, _) = held(&log).into_iter().find(|(_, w)| w == "w-a").unwrap();
    let checkpoint = leases(&env, &app).await[&shard].checkpoint.clone();
    let from = log.len();
    let ran = env
        .run(
            &[
                "leases",
                "--application",
                &app,
                "release",
                "--worker",
                "w-a",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.starts_with(&format!("{shard}: released")),
        "{}",
        ran.stdout
    );
    until("w-a's processor to lose the lease", PATIENCE, || {
        log.has(from, |l| l == format!("LOST w-a {shard}"))
    })
    .await;
    until(
        "the shard to start again from its checkpoint",
        PATIENCE,
        || {
            log.has(from, |l| {
                l.starts_with("START ") && l.ends_with(&format!(" {shard} {checkpoint}"))
            })
        },
    )
    .await;

    let nobody = env
        .run(
            &[
                "leases",
                "--application",
                &app,
                "release",
                "--worker",
                "w-zzz",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(nobody.code, Some(3), "{}", nobody.stderr);
    assert!(
        nobody.stderr.contains("worker w-zzz holds no lease"),
        "{}",
        nobody.stderr
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_moves_a_checkpoint_and_the_worker_resumes_from_it() {
    let env = Env::start().await;
    let stream = env.stream("reset", 1).await;
    let app = "reset-app".to_owned();
    let shard = "shardId-000000000000";
    let mut sequences = Vec::new();
    for i in 0..5 {
        sequences.push(env.put(&stream, "k", format!("r{i}")).await.1);
    }
    let between = common::next_second(Duration::from_millis(50)).await;
    for i in 5..8 {
        sequences.push(env.put(&stream, "k", format!("r{i}")).await.1);
    }
    let log = Log::default();
    let a = worker(&env, &stream, &app, "w-a", Duration::from_secs(6), &log).await;
    until("r7 processed", PATIENCE, || rec_count(&log, 0, "r7") == 1).await;

    let resets = [
        (
            vec!["--to".to_owned(), sequences[4].clone()],
            format!("{}/0", sequences[4]),
            "r5",
        ),
        (
            vec![
                "--to".to_owned(),
                common::epoch(between),
                "--stream".to_owned(),
                stream.clone(),
            ],
            format!("{}/0", sequences[4]),
            "r5",
        ),
        (
            vec!["--to".to_owned(), "trim-horizon".to_owned()],
            "TRIM_HORIZON".to_owned(),
            "r0",
        ),
    ];
    for (to, checkpoint, first) in resets {
        let from = log.len();
        let mut args = vec!["leases", "--application", &app, "reset", shard];
        args.extend(to.iter().map(String::as_str));
        let ran = env.run(&args, PATIENCE).await;
        assert_eq!(ran.code, Some(0), "{args:?}: {}", ran.stderr);
        println!("{}", ran.stdout);
        assert!(
            ran.stdout.contains(&format!("-> {checkpoint}, counter ")),
            "{}",
            ran.stdout
        );
        assert!(ran.stdout.contains("owner w-a removed"), "{}", ran.stdout);
        until("w-a's processor to lose the lease", PATIENCE, || {
            log.has(from, |l| l == format!("LOST w-a {shard}"))
        })
        .await;
        until("a start from the new checkpoint", PATIENCE, || {
            log.has(from, |l| l == format!("START w-a {shard} {checkpoint}"))
        })
        .await;
        until("r7 processed again", PATIENCE, || {
            rec_count(&log, from, "r7") == 1
        })
        .await;
        let after: Vec<String> = log.since(from);
        let started = after
            .iter()
            .position(|l| l == &format!("START w-a {shard} {checkpoint}"))
            .unwrap();
        let first_rec = after[started..]
            .iter()
            .find(|l| l.starts_with("REC "))
            .unwrap();
        assert!(
            first_rec.ends_with(&format!(" {first}")),
            "resumed with {first_rec}, not {first}"
        );
    }

    let missing = env
        .run(
            &[
                "leases",
                "--application",
                &app,
                "reset",
                "shardId-000000000009",
                "--to",
                "latest",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(missing.code, Some(3), "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("no lease shardId-000000000009 in lease table"),
        "{}",
        missing.stderr
    );
    let no_stream = env
        .run(
            &[
                "leases",
                "--application",
                &app,
                "reset",
                shard,
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            PATIENCE,
        )
        .await;
    assert_eq!(no_stream.code, Some(2), "{}", no_stream.stderr);
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_exits_3() {
    let env = Env::start().await;
    for args in [
        vec!["leases", "--application", "nope"],
        vec![
            "leases",
            "--application",
            "nope",
            "release",
            "--worker",
            "w",
        ],
        vec![
            "leases",
            "--application",
            "nope",
            "reset",
            "shardId-000000000000",
            "--to",
            "latest",
        ],
    ] {
        let ran = env.run(&args, PATIENCE).await;
        assert_eq!(ran.code, Some(3), "{args:?}: {}", ran.stderr);
        assert_eq!(
            ran.stderr.trim_end(),
            "kinesis: no lease table nope",
            "{args:?}"
        );
    }
}

/// A proxy in front of the DynamoDB stand-in that, after passing on the answer to a `GetItem`,
/// raises the counter of `lease_key` before the answer reaches the client: a renewal between the
/// command's read and its write.
async fn racing_proxy(
    upstream: String,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    lease_key: String,
) -> String {
    use axum::body::{Body, Bytes};
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let client = client.clone();
        let upstream = upstream.clone();
        let dynamodb = dynamodb.clone();
        let table = table.clone();
        let lease_key = lease_key.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let get_item = parts
                .headers
                .get("x-amz-target")
                .and_then(|t| t.to_str().ok())
                .is_some_and(|t| t.ends_with(".GetItem"));
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut forward = axum::http::Request::builder()
                .method(parts.method.clone())
                .uri(format!("{upstream}{path}"));
            for (name, value) in &parts.headers {
                forward = forward.header(name, value);
            }
            let answer = client
                .request(forward.body(Full::new(body)).unwrap())
                .await
                .unwrap();
            let (parts, body) = answer.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            if get_item {
                dynamodb
                    .update_item()
                    .table_name(&table)
                    .key(
                        "leaseKey",
                        aws_sdk_dynamodb::types::AttributeValue::S(lease_key.clone()),
                    )
                    .update_expression("SET leaseCounter = leaseCounter + :one")
                    .expression_attribute_values(
                        ":one",
                        aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            axum::response::Response::from_parts(parts, Body::from(body))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_racing_with_a_renewal_exits_5_and_writes_nothing() {
    let env = Env::start().await;
    let app = "race-app".to_owned();
    let table = table(&env, &app).await;
    let shard = "shardId-000000000000";
    let seq = SequenceNumber::parse("4959").unwrap();
    let mut lease = Lease::new(shard, Checkpoint::at(seq, 1));
    lease.owner = Some("w-a".to_owned());
    lease.counter = 41;
    assert!(table.create(&lease).await.unwrap());
    let proxy = racing_proxy(
        env.dynamodb_endpoint.clone(),
        env.dynamodb.clone(),
        app.clone(),
        shard.to_owned(),
    )
    .await;
    let mut command = env.command(&[
        "leases",
        "--application",
        &app,
        "reset",
        shard,
        "--to",
        "trim-horizon",
    ]);
    command.env("AWS_ENDPOINT_URL_DYNAMODB", &proxy);
    let ran = common::run(command, b"", PATIENCE).await;
    assert_eq!(ran.code, Some(5), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "lease {shard} moved while it was being reset (read: counter 41, owner w-a; now: counter 42, owner w-a)"
        )),
        "{}",
        ran.stderr
    );
    let now = table.get(shard).await.unwrap().unwrap();
    assert_eq!(now.checkpoint, lease.checkpoint, "nothing written");
    assert_eq!(now.owner.as_deref(), Some("w-a"));
    assert_eq!(now.counter, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_checkpoint_is_fenced_by_the_counter_and_both_owners() {
    let env = Env::start().await;
    let app = "fence-app".to_owned();
    let table = table(&env, &app).await;
    let seq = |s: &str| SequenceNumber::parse(s).unwrap();
    let mut lease = Lease::new("s", Checkpoint::at(seq("100"), 2)).with_parents(["p"]);
    lease.owner = Some("new".to_owned());
    lease.checkpoint_owner = Some("old".to_owned());
    lease.counter = 7;
    lease.owner_switches_since_checkpoint = 3;
    lease.pending_checkpoint = Some(Checkpoint::at(seq("150"), 0));
    assert!(table.create(&lease).await.unwrap());
    let target = Checkpoint::at(seq("90"), 0);
    let refused = |result: Result<Lease, ConsumerError>| {
        assert!(
            matches!(result, Err(ConsumerError::LeaseLost { .. })),
            "{result:?}"
        );
    };
    let mut stale = lease.clone();
    stale.counter = 6;
    refused(table.reset_checkpoint(&stale, &target).await);
    let mut other_owner = lease.clone();
    other_owner.owner = Some("else".to_owned());
    refused(table.reset_checkpoint(&other_owner, &target).await);
    let mut no_handoff = lease.clone();
    no_handoff.checkpoint_owner = None;
    refused(table.reset_checkpoint(&no_handoff, &target).await);
    let written = table.reset_checkpoint(&lease, &target).await.unwrap();
    assert_eq!(written.checkpoint, target);
    assert_eq!(written.counter, 8);
    assert_eq!(written.owner, None);
    assert_eq!(written.checkpoint_owner, None);
    assert_eq!(written.pending_checkpoint, None);
    assert_eq!(written.owner_switches_since_checkpoint, 0);
    assert_eq!(
        written.parent_shard_ids, lease.parent_shard_ids,
        "other attributes kept"
    );
    assert_eq!(table.get("s").await.unwrap(), Some(written.clone()));
    // A free lease: fenced by its counter and the absence of an owner.
    let mut taken = written.clone();
    taken.owner = Some("someone".to_owned());
    refused(
        table
            .reset_checkpoint(&taken, &Checkpoint::TrimHorizon)
            .await,
    );
    let again = table
        .reset_checkpoint(&written, &Checkpoint::TrimHorizon)
        .await
        .unwrap();
    assert_eq!(
        (again.checkpoint, again.counter),
        (Checkpoint::TrimHorizon, 9)
    );
}
