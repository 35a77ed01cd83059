//! Polling retrieval: a task per shard that reads ahead with `GetRecords`, bounded in records
//! and bytes, and hands the processor's task deaggregated batches.
//!
//! It resumes from a checkpoint inside an aggregate (at the checkpoint's sequence number, skipping
//! the user records at or before it), renews expired iterators after the last record read, backs
//! off with jitter on throttling and transient errors, looks a shard `GetRecords` does not find
//! up in the shard list (ended if closed or gone), and adapts its pace: at once (after the
//! minimum interval) while there is a backlog, doubling its idle time up to a maximum while the
//! shard is quiet. What each failure means is decided in [`decide`](crate::retrieval::decide),
//! as for fan-out.
//!
//! An idle shard's next poll (its pause grown to the maximum) is put on a grid of
//! [`QUIET_GRID`] shared by every reader in the process: a worker polling many idle shards wakes
//! once for several of them (and takes their answers together) rather than once each, about a
//! quarter less CPU per idle shard at 1,000 shards. A backlog, and a shard that found nothing
//! once between records, are read off the grid.

use std::{sync::Arc, time::Duration, time::SystemTime};

use aws_sdk_kinesis::Client;
use kinesis_aggregation::HashKeyRange;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use crate::{
    checkpoint::Checkpoint,
    error::Error,
    kinesis::{self, Start},
    metrics as m,
    retrieval::{
        Budgets, Fetch, count_read_error,
        decide::{Backoff, Call, Context, Decision, Happened, decide},
        look_at_shard,
    },
    sdk_error::CallFailure,
};

/// Kinesis records asked for by a shard's first read.
const FIRST_READ_RECORDS: i32 = 25;

/// What a reader needs.
#[derive(Clone)]
pub(crate) struct Reader {
    pub(crate) client: Client,
    pub(crate) stream: kinesis_calls::StreamRef,
    pub(crate) shard_id: Arc<str>,
    pub(crate) range: Option<HashKeyRange>,
    pub(crate) start: Checkpoint,
    pub(crate) timestamp: Option<SystemTime>,
    pub(crate) max_records: i32,
    pub(crate) min_interval: Duration,
    pub(crate) max_idle: Duration,
    pub(crate) prefetch_records: usize,
    pub(crate) prefetch_bytes: usize,
    pub(crate) call_timeout: Duration,
    /// Permits for reads under way, shared by the worker's readers: one is held for each
    /// `GetShardIterator` and `GetRecords` call (with the SDK's own attempts), not between them.
    pub(crate) reads: Arc<Semaphore>,
}

/// Starts reading; batches arrive on the returned channel until the shard ends, reading fails,
/// or the receiver is dropped (which stops the reader).
pub(crate) fn spawn(reader: Reader) -> (mpsc::Receiver<Fetch>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4);
    let span = tracing::debug_span!("polling", shard_id = %reader.shard_id);
    let task = tokio::spawn(tracing::Instrument::instrument(read(reader, tx), span));
    (rx, task)
}

/// The delays between failed reads.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

async fn read(reader: Reader, tx: mpsc::Sender<Fetch>) {
    let (budgets, mut unpacker) = Budgets::for_shard(
        (reader.prefetch_records, reader.prefetch_bytes),
        reader.stream.stream_name(),
        &reader.shard_id,
        reader.range,
        &reader.start,
    );
    let mut start = Start::Checkpoint(reader.start.clone());
    let mut iterator: Option<String> = None;
    let mut delays = BACKOFF;
    let mut idle = reader.min_interval;
    // The first read asks for a few records only: a backlog of aggregates would otherwise make
    // it a 10 MB answer, and the processor would wait for all of it to see its first record.
    let mut first_read = true;
    loop {
        // The shard stopped (its receiver dropped): the reader ends here, after the call it had
        // under way, if any. It is not aborted, so that its read permit is not freed while its
        // request is still at Kinesis (see `max_concurrent_reads`).
        if tx.is_closed() {
            return;
        }
        let current = match iterator.take() {
            Some(it) => it,
            None => match Box::pin(async {
                let _permit = permit(&reader).await;
                kinesis::shard_iterator(
                    &reader.client,
                    &reader.stream,
                    &reader.shard_id,
                    &start,
                    reader.timestamp,
                    reader.call_timeout,
                )
                .await
            })
            .await
            {
                Ok(Some(it)) => it,
                // No iterator: nothing more can be read from this shard.
                Ok(None) => {
                    let _ = tx.send(Fetch::End { children: None }).await;
                    return;
                }
                Err(failure) => match decide(
                    Happened::failed(Call::GetShardIterator, &failure),
                    Context::default(),
                ) {
                    Decision::ShardEnd { children } => {
                        // The shard is gone (past retention): its data can no longer be read.
                        warn!(code = %failure.code, "shard not found; treated as ended");
                        let _ = tx.send(Fetch::End { children }).await;
                        return;
                    }
                    Decision::Retry { .. } => {
                        pause(&reader, &mut delays, &failure).await;
                        continue;
                    }
                    // Fail, and the decisions only fan-out meets.
                    _ => {
                        let _ = tx
                            .send(Fetch::Failed(failed(&reader, "GetShardIterator", failure)))
                            .await;
                        return;
                    }
                },
            },
        };
        let limit = if first_read {
            reader.max_records.min(FIRST_READ_RECORDS)
        } else {
            reader.max_records
        };
        let fetched = match Box::pin(async {
            let _permit = permit(&reader).await;
            kinesis::get_records(&reader.client, &current, limit, reader.call_timeout).await
        })
        .await
        {
            Ok(fetched) => fetched,
            Err(failure) => {
                match decide(
                    Happened::failed(Call::GetRecords, &failure),
                    Context::default(),
                ) {
                    Decision::RenewIterator => {
                        count_error(&reader, &failure);
                        debug!("iterator expired; renewing it");
                    }
                    Decision::Retry { .. } => {
                        iterator = Some(current);
                        pause(&reader, &mut delays, &failure).await;
                    }
                    Decision::CheckShard => {
                        count_error(&reader, &failure);
                        let found = Box::pin(look_at_shard(
                            &reader.client,
                            &reader.stream,
                            &reader.shard_id,
                            reader.call_timeout,
                        ))
                        .await;
                        match decide(Happened::ShardLooked(found), Context::default()) {
                            Decision::ShardEnd { children } => {
                                warn!(code = %failure.code, "shard not found by GetRecords and closed or gone; treated as ended");
                                let _ = tx.send(Fetch::End { children }).await;
                                return;
                            }
                            Decision::Fail => {
                                let _ = tx
                                    .send(Fetch::Failed(failed(&reader, "GetRecords", failure)))
                                    .await;
                                return;
                            }
                            // Still listed open, or the listing failed: read again.
                            _ => {
                                iterator = Some(current);
                                wait(&mut delays, &failure).await;
                            }
                        }
                    }
                    // Fail, and the decisions only fan-out meets.
                    _ => {
                        let _ = tx
                            .send(Fetch::Failed(failed(&reader, "GetRecords", failure)))
                            .await;
                        return;
                    }
                }
                continue;
            }
        };
        delays.reset();
        let kinesis_records = fetched.records.len();
        if let Some(last) = fetched.records.last() {
            start = Start::After(last.sequence_number.clone());
        }
        // One batch per answer, as the KCL: the first read is small already, and answers are at
        // most 10 MB.
        let handed = Box::pin(budgets.hand_over(
            &mut unpacker,
            fetched.records.into_iter(),
            usize::MAX,
            fetched.millis_behind_latest,
            &tx,
        ))
        .await;
        if !handed {
            return;
        }
        match fetched.next_iterator {
            None => {
                let _ = tx
                    .send(Fetch::End {
                        children: fetched.child_shards,
                    })
                    .await;
                return;
            }
            Some(next) => iterator = Some(next),
        }
        let behind = fetched.millis_behind_latest.unwrap_or(0) > 0;
        if std::mem::take(&mut first_read) && kinesis_records > 0 {
            // The small first read is not counted against the pace.
            continue;
        }
        idle = next_idle(idle, kinesis_records == 0 && !behind, &reader);
        let pause = jittered(idle, reader.min_interval, rand::random::<f64>());
        let until = tokio::time::Instant::now() + pause;
        let until = if on_the_grid(idle, pause, reader.min_interval, reader.max_idle) {
            on_quiet_grid(until)
        } else {
            until
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = tx.closed() => return,
        }
    }
}

/// The grid a quiet shard's polls are put on (see the module's documentation): a pause is at
/// most this much longer (under 5 % of the default `max_idle`). Measured with one worker on
/// 1,000 idle shards polled every second: 10 ms took 15 % off the CPU per idle shard, 50 ms 28 %,
/// 100 ms no more than 50 ms.
const QUIET_GRID: Duration = Duration::from_millis(50);

/// Where the grid starts: the first time it is used in the process.
static GRID_EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

/// `at` put on the [`QUIET_GRID`] (up to 50 ms later), for a wake-up nothing waits on.
fn on_quiet_grid(at: tokio::time::Instant) -> tokio::time::Instant {
    let epoch = *GRID_EPOCH.get_or_init(tokio::time::Instant::now);
    on_grid(at, epoch, QUIET_GRID)
}

/// `at` rounded up to the next point of the grid of `step` from `epoch`; `at` itself if on it,
/// or if before the epoch (a clock other than the one the epoch came from: a runtime with paused
/// time in an application's tests may have run far ahead, and its instant must not hold back
/// another's reads).
fn on_grid(
    at: tokio::time::Instant,
    epoch: tokio::time::Instant,
    step: Duration,
) -> tokio::time::Instant {
    if at < epoch {
        return at;
    }
    let since = at.duration_since(epoch).as_nanos();
    let step = step.as_nanos().max(1);
    let rounded = since.div_ceil(step).saturating_mul(step);
    epoch + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// A permit for one read (see [`Reader::reads`]); the wait, if there is one, is recorded.
async fn permit(reader: &Reader) -> Option<tokio::sync::SemaphorePermit<'_>> {
    if let Ok(permit) = reader.reads.try_acquire() {
        return Some(permit);
    }
    let waiting = tokio::time::Instant::now();
    // Never closed; were it, reading on without a permit is still correct.
    let permit = reader.reads.acquire().await.ok();
    metrics::histogram!(m::READ_PERMIT_WAIT, "stream" => reader.stream.stream_name().to_owned())
        .record(waiting.elapsed().as_secs_f64());
    permit
}

/// The pause before the next read: doubling while the shard is quiet (nothing read and not
/// behind), up to `max_idle`; the minimum interval otherwise.
fn next_idle(idle: Duration, quiet: bool, reader: &Reader) -> Duration {
    if quiet {
        (idle * 2).min(reader.max_idle).max(reader.min_interval)
    } else {
        reader.min_interval
    }
}

/// Whether a pause grown to `idle` and spread to `pause` ends on the quiet grid: only for a
/// shard quiet for several reads in a row (its pause grown to `max_idle`); one that found
/// nothing once, between records, is read again without the grid's delay, as is a backlog.
fn on_the_grid(
    idle: Duration,
    pause: Duration,
    min_interval: Duration,
    max_idle: Duration,
) -> bool {
    idle >= max_idle && pause > min_interval
}

/// `pause` spread by up to a quarter either way (`random` in `[0, 1)`), never below `floor`: the
/// same pace on average, but readers that started together (a worker taking many leases at once)
/// drift apart instead of calling in bursts, so that few calls are in flight at once and the
/// client's connection pool stays small.
fn jittered(pause: Duration, floor: Duration, random: f64) -> Duration {
    if pause <= floor {
        return pause;
    }
    pause
        .mul_f64(0.75 + 0.5 * random.clamp(0.0, 1.0))
        .max(floor)
}

fn count_error(reader: &Reader, failure: &CallFailure) {
    count_read_error(reader.stream.stream_name(), &reader.shard_id, failure);
}

async fn pause(reader: &Reader, delays: &mut Backoff, failure: &CallFailure) {
    count_error(reader, failure);
    wait(delays, failure).await;
}

async fn wait(delays: &mut Backoff, failure: &CallFailure) {
    let delay = delays.next(rand::random::<f64>());
    debug!(code = %failure.code, ?delay, "read failed; trying again");
    tokio::time::sleep(delay).await;
}

fn failed(reader: &Reader, operation: &'static str, failure: CallFailure) -> Error {
    count_error(reader, &failure);
    Error::kinesis(operation, reader.stream.to_string(), failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_spread_by_a_quarter_either_way_and_never_below_the_floor() {
        let ms = Duration::from_millis;
        // (pause, floor, random, expected)
        let table = [
            (ms(1000), ms(200), 0.0, ms(750)),
            (ms(1000), ms(200), 0.5, ms(1000)),
            (ms(1000), ms(200), 0.999_999, ms(1250)),
            (ms(1000), ms(900), 0.0, ms(900)),
            // At the floor (a backlog): not spread, reading goes on at the minimum interval.
            (ms(200), ms(200), 0.0, ms(200)),
            (ms(200), ms(200), 0.9, ms(200)),
            // Out-of-range randomness is clamped.
            (ms(1000), ms(200), 7.0, ms(1250)),
            (ms(1000), ms(200), -1.0, ms(750)),
        ];
        for (pause, floor, random, expected) in table {
            let got = jittered(pause, floor, random);
            let diff = got.abs_diff(expected);
            assert!(
                diff < Duration::from_micros(1),
                "jittered({pause:?}, {floor:?}, {random}) = {got:?}, expected {expected:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_polls_land_on_the_grid_never_early_and_at_most_a_step_late() {
        let epoch = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let step = ms(50);
        // (offset of `at` from the epoch, expected offset of the wake)
        let table = [
            (ms(0), ms(0)),
            (ms(1), ms(50)),
            (ms(49), ms(50)),
            (ms(50), ms(50)),
            (ms(51), ms(100)),
            (ms(1_234), ms(1_250)),
            (
                Duration::from_nanos(1_000_000_001),
                Duration::from_nanos(1_050_000_000),
            ),
        ];
        for (at, expected) in table {
            assert_eq!(on_grid(epoch + at, epoch, step), epoch + expected, "{at:?}");
        }
        // Before the epoch (another runtime's clock, run ahead): left as it is, not held back.
        tokio::time::advance(Duration::from_secs(3_600)).await;
        let later = tokio::time::Instant::now();
        assert_eq!(on_grid(epoch + ms(1), later, step), epoch + ms(1));
        // Any offset: on the grid, not before `at`, less than a step after it.
        for nanos in (0..5_000_000_000u64).step_by(7_777_777) {
            let at = epoch + Duration::from_nanos(nanos);
            let wake = on_grid(at, epoch, step);
            assert!(wake >= at && wake - at < step, "{nanos}");
            assert_eq!((wake - epoch).as_nanos() % step.as_nanos(), 0, "{nanos}");
        }
        // Two readers' pauses ending within one step wake together.
        let a = on_grid(epoch + ms(1_203), epoch, step);
        let b = on_grid(epoch + ms(1_249), epoch, step);
        assert_eq!(a, b);
    }

    #[test]
    fn only_a_shard_quiet_for_several_reads_waits_for_the_grid() {
        let ms = Duration::from_millis;
        let (floor, max) = (ms(200), ms(1000));
        // (grown pause, spread pause, on the grid)
        let table = [
            // Quiet for several reads: grown to the maximum.
            (ms(1000), ms(750), true),
            (ms(1000), ms(1250), true),
            // Nothing found once or twice between records: still growing.
            (ms(400), ms(450), false),
            (ms(800), ms(900), false),
            // A backlog: at the minimum interval.
            (ms(200), ms(200), false),
        ];
        for (idle, pause, expected) in table {
            assert_eq!(
                on_the_grid(idle, pause, floor, max),
                expected,
                "{idle:?} {pause:?}"
            );
        }
        // `max_idle` at the floor: never spread, never on the grid.
        assert!(!on_the_grid(floor, floor, floor, floor));
    }

    #[test]
    fn spread_pauses_keep_the_pace_on_average() {
        let pause = Duration::from_secs(1);
        let n = 10_000;
        let total: Duration = (0..n)
            .map(|i| {
                jittered(
                    pause,
                    Duration::from_millis(200),
                    (f64::from(i) + 0.5) / f64::from(n),
                )
            })
            .sum();
        let mean = total / n;
        assert!(
            mean.abs_diff(pause) < Duration::from_millis(1),
            "mean {mean:?}"
        );
    }
}
