//! `kinesis produce --follow`: tails files as the Kinesis Agent does, through rotations, with a
//! checkpoint that lets a restart resume without losing a line.
//!
//! ```text
//!  per path:  tail::Follower ──► Submitter (gate, put) ──► collector ──► ledger ──┐
//!             (reads, stats,      waits while               (awaits        (offset  │
//!              rotation::change)  --max-outstanding          receipts in    below    │
//!                                 lines are held             line order)    which    │
//!                                                                           all is   │
//!                                                                           resolved)│
//!  checkpoint writer (every 200 ms, when it moved; temp file + rename) ◄────────────┘
//! ```
//!
//! Decisions are pure and tested in their modules: `rotation` (what a stat of the path means,
//! when a rotated file is finished), `ledger` (the safe offset of each file), `checkpoint`
//! (which file a checkpoint entry is after a restart).

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use kinesis_producer::Producer;

use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    Common,
    error::CliError,
    produce::{
        self, Args, GRACE, Gate, Held, Outcome, Resolved, Signals, Stop, Submitted, Submitter,
        report::{self, Counters, Failures, LineFailure, Totals},
    },
    progress::{Progress, thousands},
};

pub(crate) mod checkpoint;
pub(crate) mod identity;
pub(crate) mod ledger;
pub(crate) mod retry;
pub(crate) mod rotation;
pub(crate) mod tail;

use checkpoint::Checkpoint;
use ledger::Ledger;
use retry::Next;
use tail::{Event, Follower};

/// How often the checkpoint is written, when it moved.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Prints warnings on stderr, out of the way of the live progress line.
#[derive(Clone, Debug)]
pub(crate) struct Say(Arc<Progress>);

impl Say {
    pub(crate) fn warn(&self, text: String) {
        self.0.suspend(|| eprintln!("kinesis: {text}"));
    }
}

/// The checkpoint as the collectors keep it, and a count of its changes.
#[derive(Debug)]
struct Book {
    checkpoint: Checkpoint,
    changes: u64,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(shared: &Shared<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) async fn run(args: Args, common: Common) -> Result<(), CliError> {
    if args.files.is_empty() {
        return Err(CliError::Usage(
            "--follow needs the files to tail (stdin cannot be followed)".to_owned(),
        ));
    }
    let mut paths: Vec<(PathBuf, String)> = Vec::new();
    for file in &args.files {
        if file.as_os_str() == "-" {
            return Err(CliError::Usage(
                "--follow cannot follow stdin (-)".to_owned(),
            ));
        }
        let path = std::path::absolute(file)
            .map_err(|e| CliError::io(&format!("resolving {}", file.display()), &e))?;
        let Some(text) = path.to_str().map(str::to_owned) else {
            return Err(CliError::Usage(format!(
                "{} is not UTF-8: the checkpoint cannot name it",
                path.display()
            )));
        };
        let dir = path.parent().unwrap_or(std::path::Path::new("/"));
        if !dir.is_dir() {
            return Err(CliError::Io(format!(
                "the directory of {} does not exist",
                file.display()
            )));
        }
        if !paths.iter().any(|(p, _)| *p == path) {
            paths.push((path, text));
        }
    }
    let checkpoint_path = match &args.checkpoint {
        Some(path) => std::path::absolute(path)
            .map_err(|e| CliError::io(&format!("resolving {}", path.display()), &e))?,
        None => checkpoint::default_path(&paths[0].0, &args.stream),
    };
    let saved = checkpoint::load(&checkpoint_path, &args.stream)?;
    let mut signals = Signals::listen()?;
    let producer = produce::start_producer(&args, &common).await?;
    let submitter = Submitter {
        producer: producer.clone(),
        key_mode: args.key_mode(),
        skip_empty: args.skip_empty,
        gate: Gate::new(args.max_outstanding),
    };
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let progress = Arc::new(Progress::start(
        common.progress,
        "follow",
        produce::describe(counters.clone(), submitter.gate.clone()),
    ));
    let say = Say(progress.clone());
    let book = Arc::new(Mutex::new(Book {
        checkpoint: saved.clone(),
        changes: 0,
    }));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let settle = Settle {
        producer: producer.clone(),
        again: Arc::new(AtomicU64::new(0)),
        say: say.clone(),
    };

    let mut followers = JoinSet::new();
    let mut collectors = JoinSet::new();
    for (path, text) in paths {
        let (tx, rx) = mpsc::unbounded_channel();
        let entries = saved.files.get(&text).cloned().unwrap_or_default();
        let follower = Follower::new(
            path,
            checkpoint_path.clone(),
            submitter.clone(),
            tx,
            say.clone(),
            args.start_at,
        );
        followers.spawn(follower.run(entries));
        collectors.spawn(collect(
            text,
            rx,
            settle.clone(),
            book.clone(),
            counters.clone(),
            failures.clone(),
            say.clone(),
        ));
    }
    let writer = tokio::spawn(write_checkpoints(
        checkpoint_path.clone(),
        book.clone(),
        say.clone(),
    ));

    // Until a signal, or a follower's I/O error.
    let (stop, fatal) = tokio::select! {
        stop = signals.next() => (Some(stop), None),
        Some(joined) = followers.join_next() => {
            let error = match joined {
                Ok(Err(error)) => error,
                Ok(Ok(())) => CliError::Io("a follower stopped".to_owned()),
                Err(e) => CliError::Io(format!("a follower failed: {e}")),
            };
            (None, Some(error))
        }
    };
    // Reading stops; what was read is flushed and its receipts awaited for the grace period.
    followers.abort_all();
    while followers.join_next().await.is_some() {}
    let drained = tokio::select! {
        _ = async {
            let _ = producer.flush().await;
            while collectors.join_next().await.is_some() {}
        } => true,
        _ = tokio::time::sleep(GRACE) => false,
        _ = signals.next() => false,
    };
    let unresolved = if drained {
        0
    } else {
        submitter.gate.held() as u64
    };
    if !drained {
        collectors.abort_all();
        while collectors.join_next().await.is_some() {}
    }
    writer.abort();
    let _ = writer.await;
    let last = lock(&book).checkpoint.clone();
    let saved_last = tokio::task::block_in_place(|| checkpoint::save(&checkpoint_path, &last));
    if drained {
        producer.shutdown().await;
    }
    let again = settle.again.load(Ordering::Relaxed);
    drop((say, settle));
    if let Ok(progress) = Arc::try_unwrap(progress) {
        progress.finish().await;
    }
    let totals = Totals::read(&counters, unresolved);
    for line in lock(&failures).report() {
        eprintln!("{line}");
    }
    if again > 0 {
        eprintln!(
            "{} records were put again after failing (throttled past the record TTL, or a \
             service error), none skipped for it",
            thousands(again)
        );
    }
    println!("{}", report::summary(totals, started.elapsed()));
    saved_last.map_err(|e| {
        CliError::io(
            &format!("writing the checkpoint {}", checkpoint_path.display()),
            &e,
        )
    })?;
    eprintln!("checkpoint: {}", checkpoint_path.display());
    match (fatal, stop) {
        (Some(error), _) => Err(error),
        (None, Some(Stop::Interrupt)) => Err(CliError::Interrupted),
        _ if totals.failed > 0 => Err(CliError::RecordsFailed(format!(
            "{} lines failed and were skipped",
            thousands(totals.failed)
        ))),
        _ => Ok(()),
    }
}

/// Settles lines: awaits their receipts and puts again what failed for the stream's sake
/// ([`retry::after`]), counting those puts.
#[derive(Clone, Debug)]
struct Settle {
    producer: Producer,
    /// Records put again after failing.
    again: Arc<AtomicU64>,
    say: Say,
}

impl Settle {
    /// What the line came to: delivered, skipped as empty, or failed for its own fault; `None`
    /// if the producer is stopping, in which case the line stays unresolved.
    async fn settle(&self, mut outcome: Outcome) -> Option<Resolved> {
        let mut retries = 0u32;
        loop {
            let failure = match outcome {
                Outcome::Put(receipt) => match receipt.await {
                    Ok(_) => return Some(Resolved::Delivered),
                    Err(failure) => failure,
                },
                Outcome::Refused(failure) => *failure,
                Outcome::Failed(failure) => return Some(Resolved::Failed(failure)),
                Outcome::Skipped => return Some(Resolved::Skipped),
            };
            match retry::after(&failure.error, retries) {
                Next::Skip => return Some(Resolved::Failed(LineFailure::producer(&failure))),
                Next::Stop => return None,
                Next::Retry { wait } => {
                    tokio::time::sleep(wait).await;
                    retries = retries.saturating_add(1);
                    let again = self.again.fetch_add(1, Ordering::Relaxed) + 1;
                    if again.is_power_of_two() {
                        self.say.warn(format!(
                            "{} records were put again after failing so far (the latest: {}); \
                             the checkpoint waits for them",
                            thousands(again),
                            failure.error
                        ));
                    }
                    outcome = match self.producer.put(failure.record).await {
                        Ok(receipt) => Outcome::Put(receipt),
                        Err(failure) => Outcome::Refused(Box::new(failure)),
                    };
                }
            }
        }
    }
}

/// A task that is aborted when its handle is dropped (a collector stopped at the end of the
/// grace period takes its lines' tasks with it).
#[derive(Debug)]
struct Owned<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An event waiting for the lines before it.
#[derive(Debug)]
enum Pending {
    /// A line being settled in its own task, with what it held.
    Line {
        key: ledger::Key,
        number: u64,
        end: u64,
        bytes: u64,
        task: Owned<(Option<Resolved>, Held)>,
    },
    Other(Event),
}

/// Settles one path's lines concurrently (each in its own task, so that many failed lines
/// are put again at once) and applies them and the path's other events to its part of the
/// checkpoint in order.
async fn collect(
    path: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
    settle: Settle,
    book: Shared<Book>,
    counters: Arc<Counters>,
    failures: Shared<Failures>,
    say: Say,
) {
    let mut ledger = Ledger::default();
    let mut names = std::collections::HashMap::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    // Once a line cannot be settled (the producer stops), nothing after it is applied.
    let mut stopped = false;
    loop {
        // Apply what is ready at the head.
        while let Some(Pending::Other(_)) = pending.front() {
            if let Some(Pending::Other(event)) = pending.pop_front() {
                apply(&mut ledger, &mut names, event);
                publish(&book, &path, &ledger);
            }
        }
        let head = match pending.front_mut() {
            Some(Pending::Line { task, .. }) => Some(&mut task.0),
            _ => None,
        };
        tokio::select! {
            event = rx.recv(), if open => match event {
                Some(Event::Line { key, number, end, submitted }) if !stopped => {
                    let Submitted { outcome, bytes, held } = submitted;
                    let settle = settle.clone();
                    let task = tokio::spawn(async move { (settle.settle(outcome).await, held) });
                    pending.push_back(Pending::Line { key, number, end, bytes, task: Owned(task) });
                }
                Some(_) if stopped => {}
                Some(event) => pending.push_back(Pending::Other(event)),
                None => open = false,
            },
            joined = async { head?.await.ok() }, if head.is_some() => {
                let Some(Pending::Line { key, number, end, bytes, .. }) = pending.pop_front() else {
                    continue;
                };
                let Some((Some(resolved), held)) = joined else {
                    // Stopping: this line and every later one stay unresolved.
                    stopped = true;
                    pending.clear();
                    continue;
                };
                produce::count(&resolved, bytes, &counters);
                drop(held);
                if let Resolved::Failed(failure) = resolved {
                    let name = names.get(&key).map_or(path.as_str(), String::as_str);
                    let mut failures = lock(&failures);
                    let listed = failures.add(name, number, &failure);
                    let total = failures.total();
                    drop(failures);
                    if let Some(line) = listed {
                        say.warn(format!("{line} (skipped)"));
                    } else if total.is_power_of_two() {
                        say.warn(format!(
                            "{} lines failed and were skipped so far",
                            thousands(total)
                        ));
                    }
                }
                ledger.resolved(key, end, number);
                publish(&book, &path, &ledger);
            },
            else => break,
        }
    }
}

/// Applies an event other than a line to the ledger.
fn apply(
    ledger: &mut Ledger,
    names: &mut std::collections::HashMap<ledger::Key, String>,
    event: Event,
) {
    match event {
        Event::Started { key, entry, name } => {
            ledger.started(key, entry);
            names.insert(key, name);
        }
        Event::Fingerprint { key, fingerprint } => ledger.fingerprint(key, fingerprint),
        Event::Finished { key } => {
            ledger.finished(key);
            names.remove(&key);
        }
        Event::Line { .. } => {}
    }
}

/// Makes the path's part of the checkpoint what the ledger says.
fn publish(book: &Shared<Book>, path: &str, ledger: &Ledger) {
    let mut book = lock(book);
    book.checkpoint
        .files
        .insert(path.to_owned(), ledger.entries());
    book.changes += 1;
}

/// Writes the checkpoint every [`CHECKPOINT_EVERY`] when it changed.
async fn write_checkpoints(path: PathBuf, book: Shared<Book>, say: Say) {
    let mut written = 0;
    let mut failing = false;
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (checkpoint, changes) = {
            let book = lock(&book);
            if book.changes == written {
                continue;
            }
            (book.checkpoint.clone(), book.changes)
        };
        match tokio::task::block_in_place(|| checkpoint::save(&path, &checkpoint)) {
            Ok(()) => {
                written = changes;
                if failing {
                    say.warn(format!(
                        "the checkpoint {} is written again",
                        path.display()
                    ));
                    failing = false;
                }
            }
            Err(e) if !failing => {
                say.warn(format!(
                    "cannot write the checkpoint {} ({e}); retrying (a restart now would send \
                     again what was sent since the last one written)",
                    path.display()
                ));
                failing = true;
            }
            Err(_) => {}
        }
    }
}
