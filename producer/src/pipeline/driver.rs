//! The producer's task: the thin async driver of the [`Machine`]. It takes records from the
//! intake and commands from the handles, reads the clock, sleeps until the machine's next wake,
//! performs the machine's actions (spawning `PutRecords` and `ListShards` calls, resolving
//! receipts, completing flushes) and feeds their results back.
//!
//! The machine's state is owned by this one task, so there are no locks on the record path. The
//! calls run in their own tasks (request building, signing and I/O spread over the runtime's
//! threads) and report back on a channel.

use std::{
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_kinesis::Client;
use metrics::{Gauge, gauge};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug};

use super::{
    entries::{CallFailure, Entry, EntryResult},
    flush::FlushToken,
    intake::{Admitted, Intake},
    machine::{Action, Input, Machine},
};
use crate::{
    config::{Config, StreamRef},
    kinesis, metrics as m,
    producer::Admission,
    shard_map::ShardMap,
};

/// What the handles send to the task.
pub(crate) enum Command {
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// What the call tasks report back.
enum Event {
    Answered {
        call: u64,
        started: Instant,
        finished: Instant,
        result: Result<Vec<EntryResult>, CallFailure>,
    },
    /// A refresh's answer; the map carries when its call started.
    Listed(Result<ShardMap, String>),
}

/// The time now, on tokio's clock (which tests can pause and advance).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Pause after taking records from the intake, so that puts pile up and are taken in bulk.
const INTAKE_PAUSE: Duration = Duration::from_millis(1);

/// The producer's task.
pub(crate) struct Pipeline {
    machine: Machine,
    cfg: Arc<Config>,
    client: Client,
    /// Who writes the `PutRecords` bodies: the producer (JSON or CBOR) on a client of
    /// `awsJson1_1`, else the SDK.
    body_writer: kinesis::BodyWriter,
    stream: StreamRef,
    admission: Arc<Admission>,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_open: bool,
    intake: Arc<Intake>,
    /// Whether the intake still takes records.
    taking: bool,
    /// The records taken from the intake, and the vector swapped in next time.
    taken: Vec<Admitted>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Flushes waiting for the machine's [`Action::Flushed`].
    flush_waiters: Vec<(FlushToken, oneshot::Sender<()>)>,
    next_flush: FlushToken,
    /// Whether admission room was returned since the gauges were last set.
    room_returned: bool,
    pending: Gauge,
    pending_bytes: Gauge,
}

impl Pipeline {
    pub(crate) fn new(
        cfg: Arc<Config>,
        client: Client,
        stream: StreamRef,
        admission: Arc<Admission>,
        rx: mpsc::UnboundedReceiver<Command>,
        intake: Arc<Intake>,
        map: ShardMap,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let name = stream.to_string();
        let labels = [("stream", name.clone())];
        // Each producer jitters its retries differently.
        let seed = RandomState::new().hash_one(name.as_str());
        let body_writer = kinesis::BodyWriter::for_client(&client, cfg.wire_format);
        Pipeline {
            machine: Machine::new(cfg.clone(), name, map, now(), seed),
            pending: gauge!(m::USER_RECORDS_PENDING, &labels),
            pending_bytes: gauge!(m::USER_RECORDS_PENDING_BYTES, &labels),
            cfg,
            body_writer,
            client,
            stream,
            admission,
            rx,
            rx_open: true,
            intake,
            taking: true,
            taken: Vec::new(),
            events_tx,
            events_rx,
            flush_waiters: Vec::new(),
            next_flush: 0,
            room_returned: false,
        }
    }

    /// Runs until every handle is gone (or shutdown was asked) and every record is resolved.
    pub(crate) async fn run(self, done: watch::Sender<bool>) {
        let span = tracing::info_span!("kinesis_producer", stream = %self.stream);
        // Marks the producer stopped however the task ends, so that waiting `put`s and
        // `shutdown`s return.
        // Records still in the intake then resolve as cancelled, with the record.
        struct Stopped(watch::Sender<bool>, Arc<Admission>, Arc<Intake>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                drop(self.2.close());
                self.1.close();
                let _ = self.0.send(true);
            }
        }
        let _stopped = Stopped(done, self.admission.clone(), self.intake.clone());
        self.event_loop().instrument(span).await;
    }

    async fn event_loop(mut self) {
        // After taking records in, the task leaves the intake alone for a moment so that puts
        // pile up and are taken in bulk: one wake-up per batch instead of one per few records.
        // Linger is far longer, so records lose nothing by it.
        let mut intake_at = now();
        let intake = self.intake.clone();
        loop {
            let now_ = now();
            let intake_open = self.taking && now_ >= intake_at;
            let mut wake = self.machine.next_wake(now_);
            if self.taking && !intake_open {
                wake = Some(wake.map_or(intake_at, |w| w.min(intake_at)));
            }
            tokio::select! {
                biased;
                Some(event) = self.events_rx.recv() => {
                    self.on_event(event);
                    while let Ok(event) = self.events_rx.try_recv() {
                        self.on_event(event);
                    }
                }
                command = self.rx.recv(), if self.rx_open => {
                    let now = now();
                    match command {
                        Some(command) => self.on_command(command, now),
                        // Every handle is gone: nothing more can be put.
                        None => {
                            self.rx_open = false;
                            self.close_intake(now);
                        }
                    }
                }
                () = intake.notify.notified(), if intake_open => {
                    let now = now();
                    self.take_records(now);
                    intake_at = now + INTAKE_PAUSE;
                }
                () = sleep_until(wake) => {}
            }
            self.feed(Input::Tick, now());
            self.update_pending_gauges();
            if !self.rx_open && self.machine.is_drained() {
                debug!("drained; stopping");
                return;
            }
        }
    }

    /// Feeds the machine one input and performs the actions it leads to, in order.
    fn feed(&mut self, input: Input<'_>, now: Instant) {
        self.machine.handle(input, now);
        while let Some(action) = self.machine.poll_action() {
            self.perform(action, now);
        }
    }

    fn perform(&mut self, action: Action, now: Instant) {
        match action {
            Action::Ship { call, entries } => self.put_records(call, entries),
            Action::ListShards => self.list_shards(now),
            Action::Resolve(resolution) => {
                // The room first: whoever sees a receipt resolved sees its room back too.
                let (records, bytes) = resolution.room();
                self.admission.release(records, bytes);
                self.room_returned = true;
                if let Some(emptied) = resolution.resolve() {
                    self.machine.recycle(emptied);
                }
            }
            Action::Flushed(token) => {
                if let Some(index) = self.flush_waiters.iter().position(|(t, _)| *t == token) {
                    let (_, tx) = self.flush_waiters.remove(index);
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Takes in every record left in the intake.
    fn take_records(&mut self, now: Instant) {
        let mut taken = std::mem::take(&mut self.taken);
        self.intake.take(&mut taken);
        self.feed(Input::Admitted(&mut taken), now);
        self.taken = taken;
    }

    /// Stops taking records and takes in those left; the pipeline then drains.
    fn close_intake(&mut self, now: Instant) {
        if self.taking {
            self.taking = false;
            let mut left = self.intake.close();
            self.feed(Input::Admitted(&mut left), now);
            self.feed(Input::Closed, now);
        }
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Flush(tx) => {
                // The records put before the flush are those in the intake now.
                self.take_records(now);
                let token = self.next_flush;
                self.next_flush += 1;
                self.flush_waiters.push((token, tx));
                self.feed(Input::Flush(token), now);
            }
            Command::Shutdown => {
                // Refuse new records and commands; what is already in is still delivered.
                self.close_intake(now);
                self.rx.close();
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Answered {
                call,
                started,
                finished,
                result,
            } => self.feed(
                Input::Answered {
                    call,
                    started,
                    finished,
                    result,
                },
                now(),
            ),
            Event::Listed(result) => self.feed(Input::Listed(result), now()),
        }
    }

    /// Sends one `PutRecords` call in a task of its own.
    fn put_records(&self, call: u64, entries: Vec<Entry>) {
        let client = self.client.clone();
        let body_writer = self.body_writer;
        let stream = self.stream.clone();
        let timeout = self.cfg.request_timeout;
        let events = self.events_tx.clone();
        tokio::spawn(
            async move {
                let started = now();
                let result = kinesis::put_records(&client, &stream, entries, body_writer, timeout)
                    .await
                    .map_err(CallFailure::from);
                let _ = events.send(Event::Answered {
                    call,
                    started,
                    finished: now(),
                    result,
                });
            }
            .in_current_span(),
        );
    }

    /// Lists the shards in a task of its own; the map is stamped with `now`, when the call
    /// starts.
    fn list_shards(&self, now: Instant) {
        let client = self.client.clone();
        let stream = self.stream.clone();
        let timeout = self.cfg.request_timeout;
        let page_size = self.cfg.list_shards_page_size;
        let events = self.events_tx.clone();
        tokio::spawn(
            async move {
                let result = kinesis::list_shards(&client, &stream, page_size, timeout)
                    .await
                    .map_err(|e| format!("ListShards failed: {} {}", e.code, e.message))
                    .and_then(|listed| {
                        ShardMap::from_listing(&listed, now).map_err(|p| p.to_string())
                    });
                let _ = events.send(Event::Listed(result));
            }
            .in_current_span(),
        );
    }

    /// Updates the pending gauges once per event after room was returned.
    fn update_pending_gauges(&mut self) {
        if std::mem::take(&mut self.room_returned) {
            let (records, bytes) = self.admission.outstanding();
            self.pending.set(records as f64);
            self.pending_bytes.set(bytes as f64);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The driver on tokio's paused clock, with a real SDK client that cannot send anything (no
/// credentials): every call fails at once, before any I/O. The SDK reports that as a dispatch
/// failure, which the shared classification takes for a connection error (retryable, perhaps
/// written), so records are retried until their TTL. No network, no mock of the SDK.
#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::config::{BehaviorVersion, Region};
    use kinesis_aggregation::{RecordSlab, UserRecord};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use tokio::time::{Instant as TokioInstant, timeout};

    use super::*;
    use crate::{
        Delivery, Error, Failure, receipt::Receipt, receipt::Wrote, shard_map::ListedShard,
    };

    const TTL: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn client() -> Client {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    struct Running {
        intake: Arc<Intake>,
        tx: mpsc::UnboundedSender<Command>,
        stopped: watch::Receiver<bool>,
    }

    impl Running {
        fn put(&self, n: u8) -> Receipt {
            let record =
                UserRecord::new(format!("key-{n}"), vec![n; 10]).unwrap_or_else(|e| panic!("{e}"));
            self.intake
                .admit(record)
                .unwrap_or_else(|_| panic!("refused"))
        }
    }

    fn start(change: impl FnOnce(&mut Config)) -> Running {
        let mut cfg = Config {
            record_ttl: TTL,
            ..Config::default()
        };
        change(&mut cfg);
        let listing = [ListedShard {
            id: "s-0".into(),
            start: "0".into(),
            end: u128::MAX.to_string(),
            closed: false,
        }];
        let map = ShardMap::from_listing(&listing, now()).unwrap_or_else(|p| panic!("{p}"));
        let intake = Arc::new(Intake::new(RecordSlab::new(1024, 4096)));
        let (tx, rx) = mpsc::unbounded_channel();
        let (done, stopped) = watch::channel(false);
        let pipeline = Pipeline::new(
            Arc::new(cfg),
            client(),
            StreamRef::from("stream"),
            Arc::new(Admission::new(1000, 1 << 20)),
            rx,
            intake.clone(),
            map,
        );
        tokio::spawn(pipeline.run(done));
        Running {
            intake,
            tx,
            stopped,
        }
    }

    /// A record whose every call failed unsent: expired within its TTL, with the record, each
    /// attempt's answer unknown. Returns its first attempt's delay (from its put).
    fn expired_unsent(outcome: Result<Delivery, Failure>) -> Duration {
        let failure = outcome.err().unwrap_or_else(|| panic!("delivered"));
        assert!(
            matches!(&failure.error, Error::Expired { ttl, last_error }
                if *ttl == TTL && last_error.as_deref() == Some("ConnectionError")),
            "{failure:?}"
        );
        assert!(failure.attempts.len() >= 2, "retried: {failure:?}");
        assert!(
            failure
                .attempts
                .iter()
                .all(|a| a.error.as_ref().is_some_and(|e| e.wrote == Wrote::Unknown))
        );
        // Retried after the backoff (at least its 100 ms minimum), all within the TTL.
        let started: Duration = failure.attempts.iter().map(|a| a.delay).sum();
        assert!(started < TTL, "{failure:?}");
        assert!(failure.attempts[1..].iter().all(|a| a.delay >= ms(100)));
        failure.attempts[0].delay
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_is_sent_at_its_linger_deadline_on_tokio_s_clock() {
        let running = start(|_| {});
        let t0 = TokioInstant::now();
        let mut receipt = running.put(1);
        tokio::time::sleep(ms(99)).await;
        assert!(
            timeout(Duration::ZERO, &mut receipt).await.is_err(),
            "resolved before the linger"
        );
        let first = expired_unsent(receipt.await);
        assert_eq!(first, ms(100), "first sent at the linger deadline");
        assert!(
            t0.elapsed() < TTL,
            "failed once the next retry would pass the TTL"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_sends_at_once_and_returns_after_the_receipts() {
        let running = start(|_| {});
        let mut receipt = running.put(1);
        let (tx, rx) = oneshot::channel();
        let _ = running.tx.send(Command::Flush(tx));
        assert!(rx.await.is_ok(), "the flush completed");
        let outcome = timeout(Duration::ZERO, &mut receipt)
            .await
            .unwrap_or_else(|_| panic!("the flush returned before the receipt resolved"));
        assert_eq!(
            expired_unsent(outcome),
            Duration::ZERO,
            "sent without the linger"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_sends_what_is_held_then_stops_and_refuses_records() {
        let mut running = start(|_| {});
        let receipts: Vec<Receipt> = (0..3).map(|n| running.put(n)).collect();
        let _ = running.tx.send(Command::Shutdown);
        assert!(running.stopped.wait_for(|stopped| *stopped).await.is_ok());
        for receipt in receipts {
            let outcome = timeout(Duration::ZERO, receipt)
                .await
                .unwrap_or_else(|_| panic!("stopped with a receipt unresolved"));
            assert_eq!(expired_unsent(outcome), Duration::ZERO);
        }
        let record = UserRecord::new("late", "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            running.intake.admit(record).is_err(),
            "the intake is closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_handle_is_gone_the_task_drains_and_stops() {
        let Running {
            intake,
            tx,
            mut stopped,
        } = start(|_| {});
        let record = UserRecord::new("key", "x").unwrap_or_else(|e| panic!("{e}"));
        let receipt = intake.admit(record).unwrap_or_else(|_| panic!("refused"));
        drop(tx);
        assert!(stopped.wait_for(|stopped| *stopped).await.is_ok());
        expired_unsent(receipt.await);
    }

    /// Refreshes counted since the last snapshot.
    fn refreshes(snapshotter: &Snapshotter, outcome: &str) -> u64 {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| {
                key.key().name() == crate::metrics::SHARD_MAP_REFRESHES
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "outcome" && l.value() == outcome)
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_refresh_is_tried_again_with_backoff_on_tokio_s_clock() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // The test's runtime has one thread: the task records here too.
        let _guard = metrics::set_default_local_recorder(&recorder);
        let _running = start(|c| c.shard_map_refresh = Duration::from_secs(1));
        let t0 = TokioInstant::now();
        // Periodic at 1 s; after a failure again 1 s later, then 1.5 s later. (A snapshot
        // drains the counters: they are added up.)
        let (mut failed, mut ok) = (0, 0);
        let expected = [
            (900, 0),
            (1100, 1),
            (1900, 1),
            (2100, 2),
            (3400, 2),
            (3600, 3),
        ];
        for (at, count) in expected {
            tokio::time::sleep_until(t0 + ms(at)).await;
            failed += refreshes(&snapshotter, "error");
            ok += refreshes(&snapshotter, "ok");
            assert_eq!(failed, count, "at {at} ms");
        }
        assert_eq!(ok, 0);
    }
}
