//! Per-shard rate limiting that adapts to throttling.
//!
//! Two token buckets per shard, records and bytes, refilled at the configured share of the
//! shard's write limit and charged per Kinesis record (an aggregate costs one record token), as
//! the KPL does. Unlike the KPL, throttling answers feed back (KPL issues #35, #122). The answers
//! are judged in rounds of a second: a round in which more than a third of the shard's entries
//! were throttled lowers its rate multiplicatively (sharply when nearly all were); a round with
//! at most a tenth throttled raises it back additively; in between the rate holds. Sending slightly above the shard's
//! real limit is what fills it (throttled entries are not charged), so a few throttles are the
//! sign of a full shard, not of overload; many are.

use std::time::{Duration, Instant};

/// Lowest share of the configured rate the limiter falls to.
const MIN_FACTOR: f64 = 0.05;
/// A round with at most this share of throttled entries raises the rate: a little throttling means
/// the shard is just full, and sending slightly above its limit keeps it full.
const HEADROOM_THROTTLING: f64 = 0.1;
/// A round with more throttling than tolerated multiplies the rate by this.
const DECREASE: f64 = 0.9;
/// A round in which nearly everything was throttled (the shard's capacity is far below the rate,
/// or the stream is throttling everything) multiplies the rate by this.
const COLLAPSE: f64 = 0.5;
/// The share of throttled entries that makes a round a collapse.
const COLLAPSE_THROTTLING: f64 = 0.75;
/// A round without throttling adds this share of the configured rate back.
const INCREASE: f64 = 0.1;
/// Answers are judged over rounds this long: the write limits are per second, and within a
/// second the throttling comes in bursts (Kinesis, like the stand-ins, counts per second).
const ROUND: Duration = Duration::from_secs(1);
/// A round in which more than this share of the entries were throttled lowers the rate.
const TOLERATED_THROTTLING: f64 = 0.34;
/// A bucket holds at most this much time's worth of tokens.
const BURST: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
}

impl Bucket {
    fn capacity(&self) -> f64 {
        self.rate * BURST.as_secs_f64()
    }
}

/// The limiter of one shard.
#[derive(Clone, Debug)]
pub(crate) struct Limiter {
    records: Bucket,
    bytes: Bucket,
    max_records_rate: f64,
    max_bytes_rate: f64,
    factor: f64,
    updated: Instant,
    round_start: Instant,
    round_accepted: u32,
    round_throttled: u32,
}

impl Limiter {
    /// A limiter at full rate with full buckets.
    pub(crate) fn new(records_per_second: f64, bytes_per_second: f64, now: Instant) -> Self {
        let mut limiter = Limiter {
            records: Bucket {
                tokens: 0.0,
                rate: records_per_second,
            },
            bytes: Bucket {
                tokens: 0.0,
                rate: bytes_per_second,
            },
            max_records_rate: records_per_second,
            max_bytes_rate: bytes_per_second,
            factor: 1.0,
            updated: now,
            round_start: now,
            round_accepted: 0,
            round_throttled: 0,
        };
        limiter.records.tokens = limiter.records.capacity();
        limiter.bytes.tokens = limiter.bytes.capacity();
        limiter
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        for bucket in [&mut self.records, &mut self.bytes] {
            bucket.tokens = (bucket.tokens + bucket.rate * elapsed).min(bucket.capacity());
        }
    }

    /// Takes the tokens for one Kinesis record of `bytes` if the buckets allow it now, else tells
    /// when they will. A record bigger than a full bucket is let through once the bucket is full,
    /// leaving it in debt, so that large records are slowed but never starved.
    pub(crate) fn try_take(&mut self, bytes: usize, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        let need_records = 1.0f64.min(self.records.capacity());
        let need_bytes = (bytes as f64).min(self.bytes.capacity());
        let wait = |bucket: &Bucket, need: f64| {
            if bucket.tokens >= need {
                0.0
            } else {
                (need - bucket.tokens) / bucket.rate
            }
        };
        let wait = wait(&self.records, need_records).max(wait(&self.bytes, need_bytes));
        if wait > 0.0 {
            // Round up to a millisecond so that the caller's timer does not spin.
            return Err(now + Duration::from_secs_f64(wait).max(Duration::from_millis(1)));
        }
        self.records.tokens -= 1.0;
        self.bytes.tokens -= bytes as f64;
        Ok(())
    }

    /// The shard throttled an entry.
    pub(crate) fn on_throttled(&mut self, now: Instant) {
        self.round_throttled += 1;
        self.judge_round(now);
    }

    /// The shard accepted an entry.
    pub(crate) fn on_accepted(&mut self, now: Instant) {
        self.round_accepted += 1;
        self.judge_round(now);
    }

    /// At the end of a round, adapts the rate to how much of it was throttled.
    fn judge_round(&mut self, now: Instant) {
        if now.saturating_duration_since(self.round_start) < ROUND {
            return;
        }
        let (accepted, throttled) = (
            f64::from(self.round_accepted),
            f64::from(self.round_throttled),
        );
        self.round_start = now;
        self.round_accepted = 0;
        self.round_throttled = 0;
        self.refill(now);
        let total = accepted + throttled;
        if throttled > TOLERATED_THROTTLING * total {
            let decrease = if throttled > COLLAPSE_THROTTLING * total {
                COLLAPSE
            } else {
                DECREASE
            };
            self.set_factor((self.factor * decrease).max(MIN_FACTOR));
            // Stop the burst the buckets still hold.
            self.records.tokens = self.records.tokens.min(0.0);
            self.bytes.tokens = self.bytes.tokens.min(0.0);
        } else if throttled <= HEADROOM_THROTTLING * total && self.factor < 1.0 {
            self.set_factor((self.factor + INCREASE).min(1.0));
        }
    }

    fn set_factor(&mut self, factor: f64) {
        self.factor = factor;
        self.records.rate = self.max_records_rate * factor;
        self.bytes.rate = self.max_bytes_rate * factor;
        for bucket in [&mut self.records, &mut self.bytes] {
            bucket.tokens = bucket.tokens.min(bucket.capacity());
        }
    }

    /// Share of the configured rate the shard is currently allowed (1.0 = full).
    pub(crate) fn factor(&self) -> f64 {
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends as fast as the limiter allows for `secs` and returns (records, bytes) sent.
    fn drain(limiter: &mut Limiter, start: Instant, secs: u64, size: usize) -> (u64, u64) {
        let end = start + Duration::from_secs(secs);
        let mut now = start;
        let (mut records, mut bytes) = (0, 0);
        while now < end {
            match limiter.try_take(size, now) {
                Ok(()) => {
                    records += 1;
                    bytes += size as u64;
                }
                Err(at) => now = at,
            }
        }
        (records, bytes)
    }

    #[test]
    fn records_rate_is_respected() {
        let now = Instant::now();
        let mut limiter = Limiter::new(1000.0, 1e12, now);
        let (records, _) = drain(&mut limiter, now, 10, 1);
        // 10 s at 1000/s plus the initial half-second burst.
        assert!((10_000..=10_502).contains(&records), "{records}");
    }

    #[test]
    fn bytes_rate_is_respected() {
        let now = Instant::now();
        let mut limiter = Limiter::new(1e9, 1_048_576.0, now);
        let (_, bytes) = drain(&mut limiter, now, 10, 50_000);
        let max = 10.5 * 1_048_576.0 + 50_000.0;
        assert!(
            bytes as f64 <= max && bytes as f64 >= 9.5 * 1_048_576.0,
            "{bytes}"
        );
    }

    #[test]
    fn a_record_larger_than_the_bucket_goes_through_once_it_is_full() {
        let now = Instant::now();
        let mut limiter = Limiter::new(1000.0, 1000.0, now);
        assert!(
            limiter.try_take(10_000, now).is_ok(),
            "full bucket lets it through"
        );
        let next = limiter.try_take(10, now).unwrap_err();
        assert!(
            next > now + Duration::from_secs(9),
            "the debt is paid back first: {next:?}"
        );
    }

    #[test]
    fn rounds_with_much_throttling_lower_the_rate_and_clean_rounds_restore_it() {
        let start = Instant::now();
        let mut limiter = Limiter::new(1000.0, 1e9, start);
        let round = |i: u32| start + ROUND * i;
        // Within a round nothing changes.
        for _ in 0..10 {
            limiter.on_throttled(start);
        }
        assert_eq!(limiter.factor(), 1.0);
        // Judged at the first answer after the round: 10 of 11 throttled, a collapse.
        limiter.on_accepted(round(1));
        assert!((limiter.factor() - COLLAPSE).abs() < 1e-9);
        // (The answer that closes a round counts in it.) A little throttling, 1 in 11, means
        // the shard is just full: the rate rises.
        for _ in 0..9 {
            limiter.on_accepted(round(1));
        }
        limiter.on_throttled(round(1));
        limiter.on_accepted(round(2));
        assert!(
            (limiter.factor() - (COLLAPSE + INCREASE)).abs() < 1e-9,
            "{}",
            limiter.factor()
        );
        // 1 in 5 holds it.
        for _ in 0..3 {
            limiter.on_accepted(round(2));
        }
        limiter.on_throttled(round(2));
        limiter.on_accepted(round(3));
        assert!(
            (limiter.factor() - (COLLAPSE + INCREASE)).abs() < 1e-9,
            "{}",
            limiter.factor()
        );
        // 2 in 4 lowers it gently.
        limiter.on_throttled(round(3));
        limiter.on_throttled(round(3));
        limiter.on_accepted(round(3));
        limiter.on_accepted(round(4));
        let want = (COLLAPSE + INCREASE) * DECREASE;
        assert!(
            (limiter.factor() - want).abs() < 1e-9,
            "{}",
            limiter.factor()
        );
        // Heavy throttling, round after round, reaches the floor.
        for i in 5..40 {
            limiter.on_throttled(round(i));
            limiter.on_throttled(round(i));
        }
        assert!((limiter.factor() - MIN_FACTOR).abs() < 1e-9);
        // Clean rounds raise it back to full.
        for i in 40..100 {
            limiter.on_accepted(round(i));
        }
        assert_eq!(limiter.factor(), 1.0);
    }

    #[test]
    fn sustained_throttling_slows_sending() {
        let start = Instant::now();
        let mut limiter = Limiter::new(1000.0, 1e9, start);
        let mut now = start;
        let mut sent = 0;
        // Every send is throttled: the rate must fall to the floor, not keep hammering.
        while now < start + Duration::from_secs(20) {
            match limiter.try_take(1, now) {
                Ok(()) => {
                    sent += 1;
                    limiter.on_throttled(now);
                }
                Err(at) => now = at,
            }
        }
        // Without feedback it would be 20,500 (20 s at 1000/s plus the burst); the rate falls to
        // its floor in about 5 s and stays there.
        assert!(sent < 4_000, "{sent} sends in 20 s of throttling");
        assert!((limiter.factor() - MIN_FACTOR).abs() < 1e-9);
    }
}
