//! Stress test of the receipt cells, the most delicate concurrency in the crate: senders,
//! receipts and wakers of records sharing blocks, raced across threads in random orders.
//!
//! Every round hands out the cells of three blocks (the last cell of each kept aside, so that the
//! blocks outlive the race) and gives each record a random fate: its
//! sender resolves it (a delivery or a failure) or is dropped unresolved (only where the receipt
//! is not awaited: in the crate a sender never goes without its record, whose `Drop` resolves
//! the receipt, so an unresolved sender's receipt stays pending); its receipt is awaited
//! (polled with a waker that changes now and then, as a future moved between tasks sees), polled
//! and then dropped, or dropped at once. Two threads play the senders and two the receipts,
//! released together. After every round:
//!
//! - an awaited receipt resolved to its own record's outcome, exactly once;
//! - no wake-up was lost: a receipt whose sender has acted and that is still waiting after
//!   [`LOST_WAKE_UP`] is a failure (the last waker given must be the one woken);
//! - nothing was kept: once every sender and receipt is gone, no cell still holds an outcome
//!   (the deliveries' shared part and the failures' record data are referenced by the test
//!   alone).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use kinesis_aggregation::UserRecord;

use crate::{
    Error,
    receipt::{Cells, Delivery, Failure, Receipt, Sender, Written},
};

/// Rounds run; each races the records of [`CELLS`] cells.
const ROUNDS: usize = 1_500;
/// Cells per round: three blocks. The last cell of each block is an anchor, kept out of the race
/// and alive until the round's checks are done, so that a block cannot free what a cell kept.
const CELLS: usize = 96;
/// Cells per block (as the cells hand them out).
const BLOCK: usize = 32;
/// A receipt still waiting this long after its sender acted lost its wake-up.
const LOST_WAKE_UP: Duration = Duration::from_secs(5);

/// A small deterministic generator (xorshift64*): rounds are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum SenderFate {
    Deliver,
    Fail,
    Abandon,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ReceiptFate {
    Await,
    PollThenDrop,
    Drop,
}

/// A waker that records that it was woken and unparks the waiting thread.
struct Flag {
    woken: AtomicBool,
    thread: thread::Thread,
}

impl Flag {
    fn waker() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(false),
            thread: thread::current(),
        });
        (flag.clone(), Waker::from(flag))
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// What one awaited receipt resolved to.
#[derive(Debug, PartialEq)]
enum Seen {
    Delivered(u64),
    Failed(Bytes),
}

/// Polls `receipt` to completion, changing waker now and then; `Err` names a lost wake-up.
fn await_receipt(
    mut receipt: Receipt,
    acted: &AtomicBool,
    rng: &mut Rng,
) -> Result<Result<Delivery, Failure>, String> {
    let (mut flag, mut waker) = Flag::waker();
    loop {
        if rng.below(3) == 0 {
            (flag, waker) = Flag::waker();
        }
        let mut cx = Context::from_waker(&waker);
        if let Poll::Ready(outcome) = Pin::new(&mut receipt).poll(&mut cx) {
            return Ok(outcome);
        }
        // Now and then the future is polled again, unwoken, from elsewhere (another task, a
        // `select!`): the waker given last is the one that must be woken.
        if rng.below(3) == 0 {
            thread::yield_now();
            (flag, waker) = Flag::waker();
            continue;
        }
        let mut waited_since_act: Option<Instant> = None;
        while !flag.woken.load(Ordering::SeqCst) {
            thread::park_timeout(Duration::from_millis(50));
            if acted.load(Ordering::SeqCst) {
                let since = *waited_since_act.get_or_insert_with(Instant::now);
                if since.elapsed() > LOST_WAKE_UP && !flag.woken.load(Ordering::SeqCst) {
                    return Err(format!(
                        "lost wake-up: the sender acted {LOST_WAKE_UP:?} ago and the last \
                         waker given was never woken"
                    ));
                }
            }
        }
    }
}

fn failure_record(data: &Bytes) -> UserRecord {
    match UserRecord::new("key", data.clone()) {
        Ok(record) => record,
        Err(e) => panic!("a 1 KiB record is valid: {e}"),
    }
}

fn run_round(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let written = Arc::new(Written {
        shard_id: "shardId-000000000000".into(),
        sequence_number: "1".into(),
        aggregated: true,
        attempts: Vec::new(),
    });
    let data = Bytes::from(vec![7u8; 1024]);
    let mut cells = Cells::default();
    let mut senders: Vec<(usize, Sender, SenderFate)> = Vec::new();
    let mut receipts: Vec<(usize, Receipt, ReceiptFate)> = Vec::new();
    let mut fates = Vec::new();
    let mut anchors = Vec::new();
    for i in 0..CELLS {
        let (tx, receipt) = cells.pair();
        if i % BLOCK == BLOCK - 1 {
            anchors.push((tx, receipt));
            fates.push((SenderFate::Abandon, ReceiptFate::Drop));
            continue;
        }
        let receipt_fate = match rng.below(4) {
            0 => ReceiptFate::Drop,
            1 => ReceiptFate::PollThenDrop,
            _ => ReceiptFate::Await,
        };
        let sender_fate = match rng.below(5) {
            // An awaited receipt whose sender went unresolved would wait for ever.
            0 if receipt_fate != ReceiptFate::Await => SenderFate::Abandon,
            0 | 1 => SenderFate::Fail,
            _ => SenderFate::Deliver,
        };
        senders.push((i, tx, sender_fate));
        receipts.push((i, receipt, receipt_fate));
        fates.push((sender_fate, receipt_fate));
    }
    // The cell handout keeps a block alive until the next pair; let it go.
    drop(cells);
    rng.shuffle(&mut senders);
    rng.shuffle(&mut receipts);
    let acted: Vec<AtomicBool> = (0..CELLS).map(|_| AtomicBool::new(false)).collect();
    let start = Barrier::new(4);
    let second_senders = senders.split_off(senders.len() / 2);
    let second_receipts = receipts.split_off(receipts.len() / 2);
    let seen: Vec<Result<Vec<(usize, Seen)>, String>> = thread::scope(|scope| {
        let mut handles = Vec::new();
        for (part, half) in [senders, second_senders].into_iter().enumerate() {
            let (written, data, acted, start) = (&written, &data, &acted, &start);
            let mut rng = Rng(seed.rotate_left(7 + part as u32) | 1);
            handles.push(scope.spawn(move || {
                start.wait();
                for (i, tx, fate) in half {
                    if rng.below(4) == 0 {
                        thread::yield_now();
                    }
                    match fate {
                        SenderFate::Deliver => {
                            tx.send(Ok(Delivery::new(written.clone(), i as u64)));
                        }
                        SenderFate::Fail => {
                            let record = failure_record(data);
                            tx.send(Err(Box::new(Failure::new(Error::Cancelled, record))));
                        }
                        SenderFate::Abandon => drop(tx),
                    }
                    acted[i].store(true, Ordering::SeqCst);
                }
                Ok(Vec::new())
            }));
        }
        for (part, half) in [receipts, second_receipts].into_iter().enumerate() {
            let (acted, start) = (&acted, &start);
            let mut rng = Rng(seed.rotate_left(19 + part as u32) | 1);
            handles.push(scope.spawn(move || {
                start.wait();
                let mut seen = Vec::new();
                for (i, mut receipt, fate) in half {
                    match fate {
                        ReceiptFate::Drop => drop(receipt),
                        ReceiptFate::PollThenDrop => {
                            let (_flag, waker) = Flag::waker();
                            let mut cx = Context::from_waker(&waker);
                            for _ in 0..rng.below(3) + 1 {
                                if Pin::new(&mut receipt).poll(&mut cx).is_ready() {
                                    break;
                                }
                                thread::yield_now();
                            }
                            drop(receipt);
                        }
                        ReceiptFate::Await => {
                            let outcome = await_receipt(receipt, &acted[i], &mut rng)
                                .map_err(|e| format!("record {i}: {e}"))?;
                            seen.push((
                                i,
                                match outcome {
                                    Ok(delivery) => Seen::Delivered(delivery.sub_sequence_number()),
                                    Err(Failure {
                                        error: Error::Cancelled,
                                        record,
                                        ..
                                    }) => Seen::Failed(record.data().clone()),
                                    Err(other) => {
                                        return Err(format!("record {i}: unexpected {other}"));
                                    }
                                },
                            ));
                        }
                    }
                }
                Ok(seen)
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    let mut awaited = 0;
    for part in seen {
        for (i, seen) in part? {
            awaited += 1;
            let expected = match fates[i].0 {
                SenderFate::Deliver => Seen::Delivered(i as u64),
                SenderFate::Fail => Seen::Failed(data.clone()),
                SenderFate::Abandon => {
                    return Err(format!("record {i}: awaited, its sender abandoned"));
                }
            };
            if seen != expected {
                return Err(format!(
                    "record {i}: resolved to {seen:?}, expected {expected:?}"
                ));
            }
        }
    }
    let expected_awaited = fates
        .iter()
        .filter(|(_, r)| *r == ReceiptFate::Await)
        .count();
    // Every raced sender and receipt is gone, the blocks live on through the anchors: no cell
    // may hold an outcome any more.
    if awaited != expected_awaited {
        return Err(format!(
            "{awaited} receipts resolved, {expected_awaited} awaited"
        ));
    }
    if Arc::strong_count(&written) != 1 {
        return Err(format!(
            "{} deliveries still held by cells",
            Arc::strong_count(&written) - 1
        ));
    }
    if !data.is_unique() {
        return Err("a failed record's data is still held by a cell".into());
    }
    drop(anchors);
    Ok(())
}

#[test]
fn receipt_cells_hold_under_racing_senders_receipts_and_wakers() {
    let base = std::env::var("RECEIPT_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let rounds = if base.is_some() { 1 } else { ROUNDS };
    let base = base.unwrap_or(0x5eed_cafe);
    for round in 0..rounds as u64 {
        let seed = base.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if let Err(e) = run_round(seed) {
            panic!("round {round} (RECEIPT_STRESS_SEED={seed}): {e}");
        }
    }
}
