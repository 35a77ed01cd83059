//! `kinesis leases`: a consumer application's lease table (the Java KCL's layout, as
//! `kinesis-consumer` keeps it) as a table, and two repairs: `reset` (a checkpoint) and
//! `release` (every lease of a worker). Reads and writes go through the consumer's own
//! `LeaseTable`, so the encoding and the conditional writes are the ones the workers use.
//!
//! Every write is conditional on the lease as just read (its counter, and its owners): a lease
//! that moved in between is not overwritten. What the writes do to running workers is in
//! cli/README.md ("kinesis leases").

use std::time::Duration;

use kinesis_calls::StreamRef;
use kinesis_consumer::{
    Checkpoint, Error as ConsumerError, Lease, LeaseTable, lease_table::ReleaseAs,
};

use crate::{Common, error::CliError, position::Position};

mod resolve;
mod view;

/// How many times `release` reads a lease again after its write was refused (the worker renewed
/// it in between) before giving up on it.
const RELEASE_ATTEMPTS: usize = 5;

/// Show a consumer application's lease table: each shard's owner, counter, checkpoint, parents
/// and state, and why a shard is not being processed.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The application; its lease table has this name.
    #[arg(long, value_name = "NAME")]
    application: String,
    /// Watch the lease counters for this many seconds, to tell owners that renew from owners
    /// that do not ("expired?"); 0 reads once, and a single read cannot tell.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    observe: u64,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Set a shard's checkpoint; the lease is freed (its owner removed) so that a worker
    /// resumes after the new checkpoint.
    Reset {
        /// The shard (lease key).
        #[arg(value_name = "SHARD_ID")]
        shard: String,
        /// The new checkpoint: trim-horizon, latest, SEQUENCE[/SUBSEQUENCE] (processed up to and
        /// including it), or a time (the worker resumes with the first record that arrived at
        /// or after it; needs --stream).
        #[arg(long, value_name = "POSITION", value_parser = Position::parse)]
        to: Position,
        /// The stream, by name or ARN: needed with a time, to find the records around it.
        #[arg(long, value_name = "NAME|ARN")]
        stream: Option<String>,
    },
    /// Release every lease a worker owns, so that the rest of the fleet takes them.
    Release {
        /// The worker id, as in the OWNER column.
        #[arg(long, value_name = "WORKER_ID")]
        worker: String,
    },
}

/// A failure of the lease table, for the user.
fn table_error(table: &str, error: ConsumerError) -> CliError {
    match error {
        ConsumerError::TableNotFound { .. } => {
            CliError::NotFound(format!("no lease table {table}"))
        }
        ConsumerError::AccessDenied { .. } => CliError::Access(error.to_string()),
        other => CliError::Aws(other.to_string()),
    }
}

pub(crate) async fn run(args: Args, common: Common) -> Result<(), CliError> {
    if args.application.is_empty() {
        return Err(CliError::Usage(
            "--application must not be empty".to_owned(),
        ));
    }
    match args.action {
        None => {
            let table = LeaseTable::new(common.aws.dynamodb().await?, &args.application);
            list(&table, Duration::from_secs(args.observe), args.json).await
        }
        Some(Action::Reset { shard, to, stream }) => {
            let stream = match (&to, stream) {
                (Position::At(_), None) => {
                    return Err(CliError::Usage(
                        "--to with a time needs --stream: the lease table does not name its \
                         stream, and the records around the time are read from it"
                            .to_owned(),
                    ));
                }
                (_, stream) => stream.map(StreamRef::from),
            };
            if let Some(problem) = stream.as_ref().and_then(StreamRef::problem) {
                return Err(CliError::Usage(format!("--stream: {problem}")));
            }
            let (kinesis, dynamodb) = common.aws.both().await?;
            let table = LeaseTable::new(dynamodb, &args.application);
            let checkpoint = match (to, &stream) {
                (Position::TrimHorizon, _) => Checkpoint::TrimHorizon,
                (Position::Latest, _) => Checkpoint::Latest,
                (Position::Sequence(sequence, sub), _) => Checkpoint::at(sequence, sub),
                (Position::At(at), Some(stream)) => {
                    resolve::checkpoint_before(&kinesis, stream, &shard, at).await?
                }
                (Position::At(_), None) => {
                    return Err(CliError::Usage(
                        "--to with a time needs --stream".to_owned(),
                    ));
                }
            };
            reset(&table, &shard, &checkpoint, args.json).await
        }
        Some(Action::Release { worker }) => {
            let table = LeaseTable::new(common.aws.dynamodb().await?, &args.application);
            release(&table, &worker, args.json).await
        }
    }
}

/// Reads the table (twice, `observe` apart, when asked) and prints it.
async fn list(table: &LeaseTable, observe: Duration, json: bool) -> Result<(), CliError> {
    let name = table.name().to_owned();
    let first = table.scan().await.map_err(|e| table_error(&name, e))?;
    let (last, before) = if observe.is_zero() {
        (first, None)
    } else {
        tokio::time::sleep(observe).await;
        let last = table.scan().await.map_err(|e| table_error(&name, e))?;
        (last, Some(first))
    };
    if !last.unreadable.is_empty() {
        eprintln!(
            "kinesis: {} item(s) of {name} are not leases this tool can read (not shown): {}",
            last.unreadable.len(),
            last.unreadable
                .iter()
                .take(3)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if !last.multi_stream_keys.is_empty() {
        eprintln!(
            "kinesis: {name} holds {} lease(s) of a Java KCL multi-stream application (not \
             shown), such as {}",
            last.multi_stream_keys.len(),
            last.multi_stream_keys[0]
        );
    }
    let rows = view::rows(
        &last.leases,
        before.as_ref().map(|b| (b.leases.as_slice(), observe)),
    );
    if json {
        println!(
            "{}",
            view::json(&name, (!observe.is_zero()).then_some(observe), &rows)
        );
    } else {
        print!("{}", view::table(&rows, !observe.is_zero()));
    }
    Ok(())
}

/// Writes `checkpoint` on `shard`'s lease, conditional on the lease as read just before.
async fn reset(
    table: &LeaseTable,
    shard: &str,
    checkpoint: &Checkpoint,
    json: bool,
) -> Result<(), CliError> {
    let name = table.name().to_owned();
    let lease = table
        .get(shard)
        .await
        .map_err(|e| table_error(&name, e))?
        .ok_or_else(|| CliError::NotFound(format!("no lease {shard} in lease table {name}")))?;
    if lease.is_finished() {
        return Err(CliError::Usage(format!(
            "{shard} is finished (SHARD_END): its children may be processed already, and \
             reading it again would break the order parents-before-children; not reset"
        )));
    }
    let written = match table.reset_checkpoint(&lease, checkpoint).await {
        Ok(written) => written,
        Err(ConsumerError::LeaseLost { current, .. }) => {
            let now = current.map_or_else(
                || "gone".to_owned(),
                |c| {
                    format!(
                        "counter {}, owner {}",
                        c.counter,
                        c.owner.as_deref().unwrap_or("none")
                    )
                },
            );
            return Err(CliError::Aws(format!(
                "lease {shard} moved while it was being reset (read: counter {}, owner {}; now: \
                 {now}); nothing was written: look at it again and retry",
                lease.counter,
                lease.owner.as_deref().unwrap_or("none"),
            )));
        }
        Err(error) => return Err(table_error(&name, error)),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "reset": shard,
                "before": view::lease_json(&lease),
                "after": view::lease_json(&written),
            })
        );
        return Ok(());
    }
    println!(
        "reset {shard} in {name}: checkpoint {} -> {}, counter {} -> {}{}",
        lease.checkpoint,
        written.checkpoint,
        lease.counter,
        written.counter,
        match (&lease.owner, &lease.checkpoint_owner) {
            (Some(owner), Some(previous)) => {
                format!(", owner {owner} and handing-off owner {previous} removed")
            }
            (Some(owner), None) => format!(", owner {owner} removed"),
            _ => String::new(),
        }
    );
    if let Some(owner) = lease.checkpoint_owner.as_ref().or(lease.owner.as_ref()) {
        println!(
            "{owner}'s processor of {shard} stops at its next renewal or checkpoint (refused: the \
             counter moved) without writing; the next worker to scan takes the lease and resumes \
             after {}",
            written.checkpoint
        );
    } else {
        println!(
            "the next worker to scan takes the lease and resumes after {}",
            written.checkpoint
        );
    }
    Ok(())
}

/// What `release` did to one lease.
fn released_line(before: &Lease, role: ReleaseAs, after: &Lease, worker: &str) -> String {
    let key = &before.key;
    match role {
        ReleaseAs::PreviousOwner => format!(
            "{key}: handoff from {worker} completed (counter {} -> {}): {} takes it and resumes \
             after {}",
            before.counter,
            after.counter,
            after.owner.as_deref().unwrap_or("a worker"),
            after.checkpoint
        ),
        ReleaseAs::NewOwner => format!(
            "{key}: {worker}'s handoff request withdrawn: {} keeps it",
            after.owner.as_deref().unwrap_or("its owner")
        ),
        _ => format!(
            "{key}: released (counter {} -> {}): the next worker to scan takes it and resumes \
             after {}",
            before.counter, after.counter, after.checkpoint
        ),
    }
}

/// How `worker` gives up `lease`, if it has a part in it.
fn role_of(lease: &Lease, worker: &str) -> Option<ReleaseAs> {
    if lease.checkpoint_owner.as_deref() == Some(worker) {
        Some(ReleaseAs::PreviousOwner)
    } else if lease.owner.as_deref() == Some(worker) {
        Some(if lease.in_handoff() {
            ReleaseAs::NewOwner
        } else {
            ReleaseAs::Owner
        })
    } else {
        None
    }
}

/// Releases every lease `worker` owns (or is handing off, or asked for), each conditional on
/// the lease as read; a lease renewed in between is read again and released again.
async fn release(table: &LeaseTable, worker: &str, json: bool) -> Result<(), CliError> {
    let name = table.name().to_owned();
    let scan = table.scan().await.map_err(|e| table_error(&name, e))?;
    let mut mine: Vec<Lease> = scan
        .leases
        .iter()
        .filter(|l| role_of(l, worker).is_some())
        .cloned()
        .collect();
    if mine.is_empty() {
        let mut owners: Vec<&str> = scan
            .leases
            .iter()
            .filter_map(|l| l.owner.as_deref())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        return Err(CliError::NotFound(format!(
            "worker {worker} holds no lease in lease table {name} (owners: {})",
            if owners.is_empty() {
                "none".to_owned()
            } else {
                owners.join(", ")
            }
        )));
    }
    mine.sort_by(|a, b| a.key.cmp(&b.key));
    let mut moved = Vec::new();
    let mut results = Vec::new();
    for lease in mine {
        let mut current = lease;
        let mut attempts = 0;
        // Until the lease is no longer the worker's (released, or taken by another).
        while let Some(role) = role_of(&current, worker) {
            attempts += 1;
            match table.release_as(&current, worker, role).await {
                Ok(after) => {
                    if json {
                        results.push(serde_json::json!({
                            "lease_key": current.key,
                            "before": view::lease_json(&current),
                            "after": view::lease_json(&after),
                        }));
                    } else {
                        println!("{}", released_line(&current, role, &after, worker));
                    }
                    break;
                }
                Err(ConsumerError::LeaseLost { current: now, .. }) => {
                    let now = match now {
                        Some(now) => Some(*now),
                        None => table
                            .get(&current.key)
                            .await
                            .map_err(|e| table_error(&name, e))?,
                    };
                    match now {
                        Some(now) if attempts < RELEASE_ATTEMPTS => current = now,
                        Some(_) => {
                            moved.push(current.key.clone());
                            break;
                        }
                        // Deleted (finished and cleaned up).
                        None => break,
                    }
                }
                Err(error) => return Err(table_error(&name, error)),
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "worker": worker, "released": results, "moved": moved })
        );
    }
    if moved.is_empty() {
        Ok(())
    } else {
        Err(CliError::Aws(format!(
            "{} lease(s) of {worker} kept moving while being released ({}): run the command again",
            moved.len(),
            moved.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[&str]) -> Result<Args, String> {
        crate::parse_args("leases", line).map_err(|e| e.to_string())
    }

    #[test]
    fn the_command_lines() {
        let list = parse(&["--application", "app", "--observe", "10", "--json"]).expect("parses");
        assert_eq!((list.observe, list.json), (10, true));
        assert!(list.action.is_none());
        let reset = parse(&[
            "--application",
            "app",
            "reset",
            "shardId-1",
            "--to",
            "trim-horizon",
        ])
        .expect("parses");
        assert!(matches!(
            reset.action,
            Some(Action::Reset { ref shard, to: Position::TrimHorizon, stream: None }) if shard == "shardId-1"
        ));
        let release = parse(&[
            "--application",
            "app",
            "release",
            "--worker",
            "w-1",
            "--json",
        ])
        .expect("parses");
        assert!(release.json);
        assert!(matches!(release.action, Some(Action::Release { ref worker }) if worker == "w-1"));
        for bad in [
            &["--observe", "1"][..],
            &["--application", "app", "--observe", "-1"],
            &["--application", "app", "--observe", "3601"],
            &["--application", "app", "reset", "s"],
            &["--application", "app", "reset", "s", "--to", "whenever"],
            &["--application", "app", "release"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_worker_gives_up_each_lease_in_its_role() {
        let mut owned = Lease::new("s0", Checkpoint::TrimHorizon);
        owned.owner = Some("w".to_owned());
        assert_eq!(role_of(&owned, "w"), Some(ReleaseAs::Owner));
        assert_eq!(role_of(&owned, "x"), None);
        let mut handing = owned.clone();
        handing.owner = Some("x".to_owned());
        handing.checkpoint_owner = Some("w".to_owned());
        assert_eq!(role_of(&handing, "w"), Some(ReleaseAs::PreviousOwner));
        assert_eq!(role_of(&handing, "x"), Some(ReleaseAs::NewOwner));
        let free = Lease::new("s1", Checkpoint::TrimHorizon);
        assert_eq!(role_of(&free, "w"), None);
    }
}
