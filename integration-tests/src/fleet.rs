//! A fleet of consumer workers in their own processes (`consumer-worker`), for the fleet tests
//! and the consumer benchmark: the stand-ins (a ferrokinesis process and DynamoDB Local), a
//! producer putting numbered records, and the workers' reports read back as processor lives, with
//! the checks of the lease contract over them:
//!
//! - no worker starts a shard it already runs;
//! - every start is followed by `LOST`, `STOP`, `END` or `PANIC`, or by its worker's death;
//! - how long each shard went without a processor (from a processor's end, or a worker's death,
//!   or its parents' ends, to the next start);
//! - every record processed twice is explained: the first delivery was not checkpointed (records
//!   after a killed worker's last checkpoint), or the two deliveries have different sequence
//!   numbers (the producer wrote the record again, after a split).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kinesis_producer::{Producer, UserRecord};
use tokio::time::Instant;

use crate::consumer_worker::WorkerProcess;
use crate::ferrokinesis_process::FerrokinesisProcess;
use crate::fixtures::{create_stream, unique_name};
use crate::{DynamoBackend, DynamoDb};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The timings the workers run with.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// The failover time.
    pub failover: Duration,
    /// The renewal interval.
    pub renew: Duration,
    /// The scan interval.
    pub scan: Duration,
}

impl Timings {
    /// The consumer's defaults: 10 s, 4 s, 2 s.
    pub const DEFAULT: Timings = Timings {
        failover: Duration::from_secs(10),
        renew: Duration::from_secs(4),
        scan: Duration::from_secs(2),
    };
}

/// A stream on a ferrokinesis process, a lease table on DynamoDB Local, and the programs to run.
#[derive(Debug)]
pub struct Fleet {
    _kinesis: FerrokinesisProcess,
    /// The Kinesis stand-in's endpoint.
    pub kinesis_endpoint: String,
    /// The DynamoDB stand-in's endpoint.
    pub dynamodb_endpoint: String,
    /// A client of the Kinesis stand-in.
    pub client: aws_sdk_kinesis::Client,
    /// The stream.
    pub stream: String,
    /// The application (names the lease table).
    pub application: String,
    /// Whether workers read with enhanced fan-out.
    pub fan_out: bool,
    /// The workers' timings.
    pub timings: Timings,
    worker: PathBuf,
}

impl Fleet {
    /// Starts a ferrokinesis process (`ferrokinesis` is the `ferrokinesis-server` program) and
    /// the shared DynamoDB Local, and creates a stream of `shards` shards. Workers are `worker`
    /// (the `consumer-worker` program).
    pub async fn start(
        worker: &Path,
        ferrokinesis: &Path,
        shards: i32,
        fan_out: bool,
        timings: Timings,
    ) -> Result<Fleet, BoxError> {
        let kinesis = FerrokinesisProcess::spawn(std::process::Command::new(ferrokinesis)).await?;
        let db = DynamoDb::start(DynamoBackend::SharedLocal).await?;
        let client = kinesis.client();
        let stream = unique_name("fleet");
        create_stream(&client, &stream, shards).await?;
        Ok(Fleet {
            kinesis_endpoint: kinesis.endpoint().to_owned(),
            _kinesis: kinesis,
            dynamodb_endpoint: db.endpoint().to_owned(),
            client,
            stream,
            application: unique_name("fleet-app"),
            fan_out,
            timings,
            worker: worker.to_owned(),
        })
    }

    /// Starts a worker named `id`, with `extra` arguments.
    pub fn spawn(&self, id: &str, extra: &[&str]) -> Result<WorkerProcess, BoxError> {
        let mut args: Vec<String> = [
            "--kinesis",
            &self.kinesis_endpoint,
            "--dynamodb",
            &self.dynamodb_endpoint,
            "--stream",
            &self.stream,
            "--application",
            &self.application,
            "--worker-id",
            id,
            "--failover-ms",
            &self.timings.failover.as_millis().to_string(),
            "--renew-ms",
            &self.timings.renew.as_millis().to_string(),
            "--scan-ms",
            &self.timings.scan.as_millis().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self.fan_out {
            args.push("--fan-out".to_owned());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        WorkerProcess::spawn(&self.worker, &args, id)
    }

    /// Puts records `r<i>` at about `per_second` until [`Load::finish`].
    pub fn produce(&self, per_second: u64) -> Load {
        Load::start(self.client.clone(), self.stream.clone(), per_second)
    }
}

/// A producer putting `r0`, `r1`, ... at a steady rate.
#[derive(Debug)]
pub struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<Vec<String>, String>>,
}

impl Load {
    fn start(client: aws_sdk_kinesis::Client, stream: String, per_second: u64) -> Load {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let producer = Producer::builder(client, stream.as_str())
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let mut receipts = Vec::new();
            let mut i = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {
                        for _ in 0..per_second.div_ceil(20) {
                            let data = format!("r{i}");
                            let record = UserRecord::new(format!("k{}", i % 101), Bytes::from(data.clone()))
                                .map_err(|e| e.to_string())?;
                            receipts.push((data, producer.put(record).await.map_err(|e| e.to_string())?));
                            i += 1;
                        }
                    }
                }
            }
            producer.flush().await.map_err(|e| e.to_string())?;
            let mut acked = Vec::new();
            for (data, receipt) in receipts {
                if receipt.await.is_ok() {
                    acked.push(data);
                }
            }
            producer.shutdown().await;
            Ok(acked)
        });
        Load { stop, task }
    }

    /// Stops putting; returns the records acknowledged.
    pub async fn finish(self) -> Result<Vec<String>, BoxError> {
        let _ = self.stop.send(true);
        Ok(self.task.await??)
    }
}

/// Waits until `done` holds, for at most `patience`.
pub async fn until(
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {patience:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every record processed by any of the workers, with how many times.
pub fn processed(workers: &[&WorkerProcess]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for worker in workers {
        for (_, line) in worker.lines() {
            if let Some(data) = line
                .strip_prefix("REC ")
                .and_then(|rest| rest.splitn(4, ' ').nth(3))
            {
                *seen.entry(data.to_owned()).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// Waits until every record of `acked` was processed by one of `workers`.
pub async fn all_processed(
    acked: &[String],
    workers: &[&WorkerProcess],
    patience: Duration,
) -> Result<HashMap<String, usize>, String> {
    until(
        "every acknowledged record to be processed",
        patience,
        || {
            let seen = processed(workers);
            acked.iter().all(|d| seen.contains_key(d))
        },
    )
    .await
    .map_err(|e| {
        let seen = processed(workers);
        let missing: Vec<&String> = acked
            .iter()
            .filter(|d| !seen.contains_key(*d))
            .take(10)
            .collect();
        format!("{e}: missing {missing:?}")
    })?;
    Ok(processed(workers))
}

/// Records processed more than once, in all.
pub fn duplicates(seen: &HashMap<String, usize>) -> usize {
    seen.values().map(|n| n - 1).sum()
}

/// How a processor's life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `LOST`.
    Lost,
    /// `STOP`, with whether its final checkpoint was written.
    Stopped {
        /// Whether the checkpoint in `shutdown_requested` was written.
        checkpointed: bool,
    },
    /// `END`: the shard's end, checkpointed.
    Ended,
    /// `PANIC`: the processor panicked.
    Panicked,
    /// Its worker was killed.
    Died,
}

/// One delivery of a record to a processor.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Sequence number and subsequence number.
    pub position: (String, u64),
    /// The record's data.
    pub data: String,
    /// Whether a checkpoint at or after it was written by the same processor.
    pub checkpointed: bool,
}

/// One processor: from `START` to its end.
#[derive(Clone, Debug)]
pub struct Life {
    /// The worker's id.
    pub worker: String,
    /// Which process of the fleet (an index into the list given to [`lives`]).
    pub process: usize,
    /// The shard.
    pub shard: String,
    /// When it started.
    pub started: Instant,
    /// When and how it ended (`None`: still running).
    pub ended: Option<(Instant, Ending)>,
    /// What it processed, in order.
    pub deliveries: Vec<Delivery>,
}

/// A worker process of the fleet as [`lives`] reads it: its log, and when it was killed if it was.
#[derive(Debug)]
pub struct Member<'a> {
    /// The process.
    pub process: &'a WorkerProcess,
    /// When it was killed (kill -9), if it was.
    pub killed: Option<Instant>,
}

/// The workers' logs as processor lives, and the problems found reading them: a start of a shard
/// the same process already runs, or an end without a start.
pub fn lives(members: &[Member<'_>]) -> (Vec<Life>, Vec<String>) {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for (index, member) in members.iter().enumerate() {
        let worker = member.process.id.clone();
        let mut running: BTreeMap<String, Life> = BTreeMap::new();
        for (at, line) in member.process.lines() {
            let mut words = line.splitn(5, ' ');
            let (Some(kind), Some(shard)) = (words.next(), words.next()) else {
                continue;
            };
            let shard = shard.to_owned();
            let mut end = |ending: Ending, running: &mut BTreeMap<String, Life>| match running
                .remove(&shard)
            {
                Some(mut life) => {
                    life.ended = Some((at, ending));
                    all.push(life);
                }
                None => problems.push(format!("{worker}: {line} without a START")),
            };
            match kind {
                "START" => {
                    if running.contains_key(&shard) {
                        problems.push(format!(
                            "{worker} started {shard} again while its processor of it ran"
                        ));
                    }
                    running.insert(
                        shard.clone(),
                        Life {
                            worker: worker.clone(),
                            process: index,
                            shard,
                            started: at,
                            ended: None,
                            deliveries: Vec::new(),
                        },
                    );
                }
                "REC" => {
                    let (Some(seq), Some(sub), Some(data)) =
                        (words.next(), words.next(), words.next())
                    else {
                        continue;
                    };
                    if let Some(life) = running.get_mut(&shard) {
                        life.deliveries.push(Delivery {
                            position: (seq.to_owned(), sub.parse().unwrap_or(0)),
                            data: data.to_owned(),
                            checkpointed: false,
                        });
                    }
                }
                "CKPT" => {
                    if words.next() == Some("ok")
                        && let Some(life) = running.get_mut(&shard)
                    {
                        life.deliveries
                            .iter_mut()
                            .for_each(|d| d.checkpointed = true);
                    }
                }
                "LOST" => end(Ending::Lost, &mut running),
                "END" => end(Ending::Ended, &mut running),
                "PANIC" => end(Ending::Panicked, &mut running),
                "STOP" => {
                    let checkpointed = words.next() == Some("ok");
                    if checkpointed && let Some(life) = running.get_mut(&shard) {
                        life.deliveries
                            .iter_mut()
                            .for_each(|d| d.checkpointed = true);
                    }
                    end(Ending::Stopped { checkpointed }, &mut running);
                }
                _ => {}
            }
        }
        for (_, mut life) in running {
            if let Some(killed) = member.killed {
                life.ended = Some((killed, Ending::Died));
            }
            all.push(life);
        }
    }
    all.sort_by_key(|l| l.started);
    (all, problems)
}

/// Lives still running (no end, and their worker was not killed).
pub fn unended(lives: &[Life]) -> Vec<&Life> {
    lives.iter().filter(|l| l.ended.is_none()).collect()
}

/// For each shard, the longest time without a processor: from a processor's end (or its worker's
/// death) to the next start, and from when the shard could start (`ready`: its parents' ends, or
/// the fleet's start) to its first. Shards that ended count only until their end. Gaps still open
/// at `now` count up to `now`.
pub fn unread(
    lives: &[Life],
    ready: &BTreeMap<String, Instant>,
    now: Instant,
) -> BTreeMap<String, Duration> {
    let mut by_shard: BTreeMap<&str, Vec<&Life>> = BTreeMap::new();
    for life in lives {
        by_shard.entry(life.shard.as_str()).or_default().push(life);
    }
    let mut out = BTreeMap::new();
    for (shard, mut its) in by_shard {
        its.sort_by_key(|l| l.started);
        let mut longest = Duration::ZERO;
        // Covered until: the latest end among processors started so far (None: one still runs).
        let mut covered: Option<Instant> = ready.get(shard).copied();
        let mut running = 0usize;
        let mut events: Vec<(Instant, bool)> = Vec::new();
        for life in &its {
            events.push((life.started, true));
            if let Some((at, _)) = life.ended {
                events.push((at, false));
            }
        }
        events.sort_by_key(|(at, start)| (*at, !*start));
        let mut finished = false;
        for (at, start) in events {
            if start {
                if running == 0
                    && let Some(since) = covered
                {
                    longest = longest.max(at.saturating_duration_since(since));
                }
                running += 1;
            } else {
                running = running.saturating_sub(1);
                if running == 0 {
                    covered = Some(at);
                }
            }
        }
        if its
            .iter()
            .any(|l| matches!(l.ended, Some((_, Ending::Ended))))
        {
            finished = true;
        }
        if running == 0
            && !finished
            && let Some(since) = covered
        {
            longest = longest.max(now.saturating_duration_since(since));
        }
        out.insert(shard.to_owned(), longest);
    }
    out
}

/// Records processed more than once that the contract does not explain: the earlier delivery was
/// checkpointed by its processor, and the later one is at the same position.
pub fn unexplained_duplicates(lives: &[Life]) -> Vec<String> {
    let mut first: HashMap<&str, (&Delivery, &Life)> = HashMap::new();
    let mut problems = Vec::new();
    let mut order: Vec<(Instant, &Delivery, &Life)> = Vec::new();
    for life in lives {
        for delivery in &life.deliveries {
            order.push((life.started, delivery, life));
        }
    }
    // Lives are in start order; deliveries within a life in processing order.
    for (_, delivery, life) in order {
        match first.get(delivery.data.as_str()) {
            None => {
                first.insert(&delivery.data, (delivery, life));
            }
            Some((earlier, by)) => {
                if earlier.position == delivery.position && earlier.checkpointed {
                    problems.push(format!(
                        "{} at {:?} was checkpointed by {}'s processor of {}, then delivered again to {}'s",
                        delivery.data, delivery.position, by.worker, by.shard, life.worker
                    ));
                }
            }
        }
    }
    problems
}

/// The shards' parents, from `ListShards`.
pub async fn parents(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<BTreeMap<String, BTreeSet<String>>, BoxError> {
    let listed = client
        .list_shards()
        .stream_name(stream)
        .max_results(1000)
        .send()
        .await?;
    Ok(listed
        .shards()
        .iter()
        .map(|s| {
            let parents: BTreeSet<String> = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .map(str::to_owned)
                .collect();
            (s.shard_id().to_owned(), parents)
        })
        .collect())
}

/// When each shard could start: the fleet's start for shards without parents, the last of its
/// parents' `END`s for the others.
pub fn readiness(
    lives: &[Life],
    parents: &BTreeMap<String, BTreeSet<String>>,
    fleet_start: Instant,
) -> BTreeMap<String, Instant> {
    let ended: BTreeMap<&str, Instant> = lives
        .iter()
        .filter_map(|l| match l.ended {
            Some((at, Ending::Ended)) => Some((l.shard.as_str(), at)),
            _ => None,
        })
        .collect();
    parents
        .iter()
        .filter_map(|(shard, its)| {
            if its.is_empty() {
                return Some((shard.clone(), fleet_start));
            }
            let ends: Option<Vec<Instant>> =
                its.iter().map(|p| ended.get(p.as_str()).copied()).collect();
            ends.and_then(|e| e.into_iter().max())
                .map(|at| (shard.clone(), at))
        })
        .collect()
}
