//! One held shard: its processor, fed by a polling or fan-out reader, stopped when the lease is lost, handed
//! off or shut down, and taken through the shard end (children, `SHARD_END`).

use std::{collections::BTreeSet, future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, watch},
    time::Instant,
};
use tracing::{error, info, warn};

use crate::{
    checkpoint::Checkpoint,
    config::Config,
    coordination::{Exited, Stop},
    fanout::{self, Registration, Subscriber},
    kinesis,
    lease::Lease,
    lease_table::LeaseTable,
    lineage::{ChildShard, ShardDescription, child_leases, child_may_be_created},
    metrics as m,
    polling::{self, Reader},
    processor::{Batch, Checkpointer, ShardProcessor, Start},
    retrieval::Fetch,
};

/// What a shard's task needs.
pub(crate) struct ShardContext {
    pub(crate) cfg: Arc<Config>,
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) table: LeaseTable,
    pub(crate) worker: Arc<str>,
    pub(crate) shard_id: Arc<str>,
    pub(crate) lease: Arc<Mutex<Lease>>,
    /// The stream consumer, with enhanced fan-out retrieval.
    pub(crate) fan_out: Option<Arc<Registration>>,
}

/// How long to wait before asking a processor that did not checkpoint `SHARD_END` again.
const SHARD_END_RETRY: Duration = Duration::from_secs(2);

/// Runs `processor` on the shard until it ends, the lease is lost, or the worker asks it to stop.
/// Every processor that was initialized is told why it stops: `shard_ended` (the shard's end),
/// `lease_lost`, or `shutdown_requested` (a shutdown, a handoff, or reading failing for good),
/// unless the task is aborted (the shutdown timeout) or the processor panics.
///
/// `trust` carries the instant until which the lease may be trusted (moved on by each renewal);
/// past it, processing stops at once, before another worker may take the lease.
pub(crate) async fn run<P: ShardProcessor>(
    ctx: ShardContext,
    mut processor: P,
    mut stop: watch::Receiver<Stop>,
    mut trust: watch::Receiver<Instant>,
) -> Exited {
    let lease = ctx.lease.lock().await.clone();
    let start = Start {
        shard_id: ctx.shard_id.clone(),
        checkpoint: lease.checkpoint.clone(),
        pending_checkpoint: lease.pending_checkpoint.clone(),
        pending_checkpoint_state: lease.pending_checkpoint_state.clone(),
    };
    if lease.is_finished() {
        // Finished by a previous owner that stopped before reporting it: nothing to read.
        return Exited::ShardEnded;
    }
    if guarded(&mut trust, processor.initialize(&start))
        .await
        .done()
        .is_none()
    {
        processor.lease_lost().await;
        return Exited::LeaseLost;
    }
    let (mut fetches, reading) = match (&ctx.fan_out, ctx.cfg.fan_out()) {
        (Some(registration), Some((fan_out, _))) => fanout::spawn(Subscriber {
            client: ctx.kinesis.clone(),
            registration: registration.clone(),
            stream: ctx.cfg.stream.clone(),
            shard_id: ctx.shard_id.clone(),
            range: lease.hash_key_range,
            start: lease.checkpoint.clone(),
            timestamp: ctx.cfg.initial_timestamp,
            prefetch_records: ctx.cfg.prefetch_records,
            prefetch_bytes: ctx.cfg.prefetch_bytes,
            call_timeout: ctx.cfg.call_timeout,
            silence: fan_out.silence_timeout,
        }),
        _ => polling::spawn(Reader {
            client: ctx.kinesis.clone(),
            stream: ctx.cfg.stream.clone(),
            shard_id: ctx.shard_id.clone(),
            range: lease.hash_key_range,
            start: lease.checkpoint.clone(),
            timestamp: ctx.cfg.initial_timestamp,
            max_records: ctx.cfg.max_records,
            min_interval: ctx.cfg.min_fetch_interval,
            max_idle: ctx.cfg.max_idle,
            prefetch_records: ctx.cfg.prefetch_records,
            prefetch_bytes: ctx.cfg.prefetch_bytes,
            call_timeout: ctx.cfg.call_timeout,
        }),
    };
    let _stop_reading = AbortOnDrop(reading);
    let labels = [
        ("stream", ctx.cfg.stream.clone()),
        ("shard_id", ctx.shard_id.to_string()),
    ];
    let processed = metrics::counter!(m::RECORDS_PROCESSED, &labels);
    let processed_bytes = metrics::counter!(m::BYTES_PROCESSED, &labels);
    let batches = metrics::counter!(m::BATCHES, &labels);
    let outside = metrics::counter!(m::RECORDS_OUTSIDE_RANGE, &labels);
    let behind = metrics::gauge!(m::MILLIS_BEHIND_LATEST, &labels);
    let process_time = metrics::histogram!(m::PROCESS_TIME, &labels);
    let mut checkpointer = Checkpointer::new(
        ctx.shard_id.clone(),
        ctx.table.clone(),
        ctx.worker.clone(),
        ctx.lease.clone(),
    );
    loop {
        let deadline = *trust.borrow_and_update();
        tokio::select! {
            biased;
            changed = stop.changed() => {
                // The worker keeps the sender while the task runs; a closed channel is taken
                // as a shutdown.
                if changed.is_ok() && *stop.borrow_and_update() == Stop::Run {
                    continue;
                }
                return stop_gracefully(&mut processor, &mut checkpointer, &mut trust, Exited::Stopped).await;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if *trust.borrow() <= Instant::now() {
                    warn!(shard_id = %ctx.shard_id, "lease not renewed in time, or lost; processing stops");
                    processor.lease_lost().await;
                    return Exited::LeaseLost;
                }
            }
            _ = trust.changed() => {}
            fetch = fetches.recv() => match fetch {
                Some(Fetch::Batch { records, outside_range, millis_behind_latest, _budget }) => {
                    if let Some(last) = records.last() {
                        checkpointer.note_delivered(last);
                    }
                    batches.increment(1);
                    processed.increment(records.len() as u64);
                    processed_bytes.increment(records.iter().map(|r| r.data.len() as u64).sum());
                    outside.increment(outside_range as u64);
                    if let Some(ms) = millis_behind_latest {
                        behind.set(ms as f64);
                    }
                    if outside_range > 0 {
                        warn!(shard_id = %ctx.shard_id, outside_range,
                            "user records outside the shard's hash-key range skipped");
                    }
                    let batch = Batch {
                        shard_id: ctx.shard_id.clone(),
                        records,
                        outside_range,
                        millis_behind_latest,
                    };
                    let started = Instant::now();
                    let done = guarded(&mut trust, processor.process(batch, &mut checkpointer)).await;
                    process_time.record(started.elapsed().as_secs_f64());
                    if done.done().is_none() {
                        processor.lease_lost().await;
                        return Exited::LeaseLost;
                    }
                }
                Some(Fetch::End { children }) => {
                    return shard_end(&ctx, &mut processor, &mut checkpointer, &mut trust, children).await;
                }
                Some(Fetch::Failed(failure)) => {
                    error!(shard_id = %ctx.shard_id, error = %failure, "reading the shard failed; the lease is released");
                    return stop_gracefully(&mut processor, &mut checkpointer, &mut trust, Exited::ReadFailed).await;
                }
                None => {
                    error!(shard_id = %ctx.shard_id, "the shard's reader ended; the lease is released");
                    return stop_gracefully(&mut processor, &mut checkpointer, &mut trust, Exited::ReadFailed).await;
                }
            },
        }
    }
}

/// Lets the processor checkpoint (`shutdown_requested`) while the lease is trusted, then ends as
/// `then`. If trust runs out first, the callback is dropped at its next `.await` and the task
/// ends as `LeaseLost`, without a second callback: the processor was already told why it stops.
async fn stop_gracefully<P: ShardProcessor>(
    processor: &mut P,
    checkpointer: &mut Checkpointer,
    trust: &mut watch::Receiver<Instant>,
    then: Exited,
) -> Exited {
    match guarded(trust, processor.shutdown_requested(checkpointer)).await {
        Guarded::Done(()) => then,
        Guarded::Interrupted => Exited::LeaseLost,
        Guarded::NotStarted => {
            processor.lease_lost().await;
            Exited::LeaseLost
        }
    }
}

/// The end of the shard: create the children's leases, record them on this lease, and have the
/// processor checkpoint `SHARD_END` (asking again until it does).
async fn shard_end<P: ShardProcessor>(
    ctx: &ShardContext,
    processor: &mut P,
    checkpointer: &mut Checkpointer,
    trust: &mut watch::Receiver<Instant>,
    children: Option<Vec<ChildShard>>,
) -> Exited {
    checkpointer.reached_end();
    // The shard list, when it could be read: the children's parents are checked against it.
    let mut listing: Option<Vec<ShardDescription>> = None;
    let children = match children {
        Some(mut children) => {
            // The service named the children. Their parents are checked against the shard list
            // once: a merged child must wait for both parents, and an incomplete list in an
            // answer (a stand-in sends only the parent it is reading) would start it early. If
            // the list cannot be read now, the answer is used as it is.
            if let Ok(shards) =
                kinesis::list_shards(&ctx.kinesis, &ctx.cfg.stream, ctx.cfg.call_timeout).await
            {
                for child in &mut children {
                    if let Some(listed) = shards.iter().find(|s| s.id == child.id)
                        && !listed.parents.is_subset(&child.parents)
                    {
                        warn!(shard_id = %ctx.shard_id, child = %child.id,
                            named = ?child.parents, listed = ?listed.parents,
                            "the shard's end named fewer parents of a child than the shard list; using both");
                        child.parents.extend(listed.parents.iter().cloned());
                    }
                }
                listing = Some(shards);
            }
            children
        }
        None => loop {
            // GetRecords named no children (a stand-in's variant, or a shard past retention):
            // look them up.
            match kinesis::list_shards(&ctx.kinesis, &ctx.cfg.stream, ctx.cfg.call_timeout).await {
                Ok(shards) => {
                    let children = shards
                        .iter()
                        .filter(|s| s.parents.contains(ctx.shard_id.as_ref()))
                        .map(|s| ChildShard {
                            id: s.id.clone(),
                            parents: s.parents.clone(),
                            hash_key_range: s.hash_key_range,
                        })
                        .collect();
                    listing = Some(shards);
                    break children;
                }
                Err(failure) => {
                    warn!(shard_id = %ctx.shard_id, code = %failure.code, "listing the children failed");
                    if wait(trust, SHARD_END_RETRY).await.is_err() {
                        processor.lease_lost().await;
                        return Exited::LeaseLost;
                    }
                }
            }
        },
    };
    // Which of the children's other parents have leases (read consistently): a child whose other
    // parent has none yet is created when that parent ends, or by a shard sync.
    let mut leased: BTreeSet<String> = BTreeSet::new();
    let others: BTreeSet<&String> = children
        .iter()
        .flat_map(|c| c.parents.iter())
        .filter(|p| p.as_str() != ctx.shard_id.as_ref())
        .collect();
    for parent in others {
        let Some(found) = guarded(trust, ctx.table.get(parent)).await.done() else {
            processor.lease_lost().await;
            return Exited::LeaseLost;
        };
        match found {
            Ok(Some(_)) => {
                leased.insert(parent.clone());
            }
            Ok(None) => {}
            // Counted as without a lease: the child is then left to its other parent or a sync.
            Err(error) => {
                warn!(shard_id = %ctx.shard_id, parent = %parent, %error, "reading a parent's lease failed")
            }
        }
    }
    let listed = |id: &str| {
        listing
            .as_ref()
            .is_none_or(|shards| shards.iter().any(|s| s.id == id))
    };
    let ready: Vec<ChildShard> = children
        .iter()
        .filter(|child| {
            let ok = child_may_be_created(child, &ctx.shard_id, |p| leased.contains(p), listed);
            if !ok {
                info!(shard_id = %ctx.shard_id, child = %child.id, parents = ?child.parents,
                    "a child's other parent has no lease yet; the child's lease is created when that parent ends");
            }
            ok
        })
        .cloned()
        .collect();
    for child in child_leases(&ready) {
        loop {
            let Some(created) = guarded(trust, ctx.table.create(&child)).await.done() else {
                processor.lease_lost().await;
                return Exited::LeaseLost;
            };
            match created {
                Ok(_) => break,
                Err(error) => {
                    warn!(shard_id = %ctx.shard_id, child = %child.key, %error, "creating a child lease failed");
                    if wait(trust, SHARD_END_RETRY).await.is_err() {
                        processor.lease_lost().await;
                        return Exited::LeaseLost;
                    }
                }
            }
        }
    }
    let ids: BTreeSet<String> = children.iter().map(|c| c.id.clone()).collect();
    let recorded = guarded(trust, async {
        let mut lease = ctx.lease.lock().await;
        match ctx.table.set_children(&lease, &ctx.worker, &ids).await {
            Ok(updated) => *lease = updated,
            Err(error) => {
                warn!(shard_id = %ctx.shard_id, %error, "recording the children failed");
            }
        }
    })
    .await;
    if recorded.done().is_none() {
        processor.lease_lost().await;
        return Exited::LeaseLost;
    }
    // From here on the processor has been told why it stops (`shard_ended`, asked again until it
    // checkpoints): if trust runs out, the task ends without another callback.
    let mut told = false;
    loop {
        match guarded(trust, processor.shard_ended(checkpointer)).await {
            Guarded::Done(()) => told = true,
            Guarded::NotStarted if !told => {
                processor.lease_lost().await;
                return Exited::LeaseLost;
            }
            Guarded::NotStarted | Guarded::Interrupted => return Exited::LeaseLost,
        }
        if ctx.lease.lock().await.checkpoint == Checkpoint::ShardEnd {
            info!(shard_id = %ctx.shard_id, children = ?ids, "shard ended");
            metrics::counter!(m::SHARDS_ENDED, "stream" => ctx.cfg.stream.clone()).increment(1);
            return Exited::ShardEnded;
        }
        metrics::counter!(m::SHARD_END_NOT_CHECKPOINTED, "stream" => ctx.cfg.stream.clone(),
            "shard_id" => ctx.shard_id.to_string())
        .increment(1);
        error!(
            shard_id = %ctx.shard_id,
            "the processor did not checkpoint at the end of the shard (Checkpointer::checkpoint_shard_end); \
             its children cannot start until it does; asking again"
        );
        if wait(trust, SHARD_END_RETRY).await.is_err() {
            return Exited::LeaseLost;
        }
    }
}

/// What became of a call made while the lease is trusted.
#[derive(Debug, PartialEq, Eq)]
enum Guarded<T> {
    /// It ran to its end.
    Done(T),
    /// Trust had run out before it could start: it was never polled.
    NotStarted,
    /// Trust ran out while it ran: it was dropped at its next `.await`.
    Interrupted,
}

impl<T> Guarded<T> {
    fn done(self) -> Option<T> {
        match self {
            Guarded::Done(out) => Some(out),
            Guarded::NotStarted | Guarded::Interrupted => None,
        }
    }
}

/// Runs `future` while the lease is trusted (the worker moves the deadline with each renewal,
/// and to now when the lease is lost); past the deadline it is dropped. The deadline is looked at
/// before every poll of `future`, so a process frozen past it (a pause, a stalled VM) does not
/// run the call on when it resumes, even if what it awaited is ready.
async fn guarded<T>(
    trust: &mut watch::Receiver<Instant>,
    future: impl Future<Output = T>,
) -> Guarded<T> {
    tokio::pin!(future);
    let mut polled = false;
    loop {
        let deadline = *trust.borrow_and_update();
        if deadline <= Instant::now() {
            return if polled {
                Guarded::Interrupted
            } else {
                Guarded::NotStarted
            };
        }
        let within = std::future::poll_fn(|cx| {
            if Instant::now() >= deadline {
                return std::task::Poll::Ready(None);
            }
            polled = true;
            future.as_mut().poll(cx).map(Some)
        });
        tokio::select! {
            biased;
            out = within => {
                if let Some(out) = out {
                    return Guarded::Done(out);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
            changed = trust.changed() => {
                if changed.is_err() {
                    // The worker is gone.
                    return Guarded::Interrupted;
                }
            }
        }
    }
}

/// Sleeps `pause` unless the lease stops being trusted (`Err`). Shard-end work is finished before
/// a stop request is looked at.
async fn wait(trust: &mut watch::Receiver<Instant>, pause: Duration) -> Result<(), ()> {
    guarded(trust, tokio::time::sleep(pause))
        .await
        .done()
        .ok_or(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process frozen past the deadline: when it resumes, what the call awaited is ready and so
    /// is the deadline's timer. The call must not run on.
    #[tokio::test(start_paused = true)]
    async fn a_call_ready_only_after_the_deadline_is_not_run_on() {
        let start = Instant::now();
        let (trust_tx, mut trust) = watch::channel(start + Duration::from_secs(1));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let ran_on = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran_on.clone();
        let call = async move {
            let _ = ready_rx.await;
            // The batch's side effects would happen here.
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let guarded_call = tokio::spawn(async move { guarded(&mut trust, call).await });
        tokio::task::yield_now().await;
        // Frozen: time jumps past the deadline while the awaited thing became ready.
        let _ = ready_tx.send(());
        tokio::time::advance(Duration::from_secs(2)).await;
        let outcome = guarded_call.await.ok();
        assert_eq!(outcome, Some(Guarded::Interrupted));
        assert!(!ran_on.load(std::sync::atomic::Ordering::SeqCst));
        drop(trust_tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_the_deadline_runs_and_one_past_it_never_starts() {
        let start = Instant::now();
        let (_trust_tx, mut trust) = watch::channel(start + Duration::from_secs(1));
        let done = guarded(&mut trust, tokio::time::sleep(Duration::from_millis(500))).await;
        assert_eq!(done, Guarded::Done(()));
        tokio::time::advance(Duration::from_secs(1)).await;
        let late = guarded(&mut trust, async { 7 }).await;
        assert_eq!(late, Guarded::NotStarted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_moves_the_deadline_of_a_call_under_way() {
        let start = Instant::now();
        let (trust_tx, mut trust) = watch::channel(start + Duration::from_secs(1));
        let call = tokio::spawn(async move {
            guarded(&mut trust, tokio::time::sleep(Duration::from_secs(3))).await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = trust_tx.send(start + Duration::from_secs(5));
        assert_eq!(call.await.ok(), Some(Guarded::Done(())));
        let interrupted = {
            let (_tx, mut trust) = watch::channel(Instant::now() + Duration::from_secs(1));
            guarded(&mut trust, tokio::time::sleep(Duration::from_secs(3))).await
        };
        assert_eq!(interrupted, Guarded::Interrupted);
    }
}
