//! Per-shard rate limiting that adapts to throttling.
//!
//! Two token buckets per shard, records and bytes, refilled at the configured share of the
//! shard's write limit and charged per Kinesis record (an aggregate costs one record token), as
//! the KPL does. Unlike the KPL, throttling answers feed back: each throttled round lowers the
//! shard's rate multiplicatively and each accepted entry raises it back additively (AIMD), so a
//! throttling shard is not hammered by retries (KPL issues #35, #122).

use std::time::Duration;

use tokio::time::Instant;

/// Lowest share of the configured rate the limiter falls to.
const MIN_FACTOR: f64 = 0.05;
/// A throttled round multiplies the rate by this.
const DECREASE: f64 = 0.85;
/// Each accepted entry adds this share of the configured rate back.
const INCREASE: f64 = 0.02;
/// Throttled entries within this time of the last decrease count as the same round.
const ROUND: Duration = Duration::from_millis(250);
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
    last_decrease: Option<Instant>,
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
            last_decrease: None,
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

    /// The shard throttled an entry: lower the rate (once per round) and empty the buckets.
    pub(crate) fn on_throttled(&mut self, now: Instant) {
        self.refill(now);
        if self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < ROUND)
        {
            return;
        }
        self.last_decrease = Some(now);
        self.set_factor((self.factor * DECREASE).max(MIN_FACTOR));
        self.records.tokens = self.records.tokens.min(0.0);
        self.bytes.tokens = self.bytes.tokens.min(0.0);
    }

    /// The shard accepted an entry: raise the rate back toward the configured one.
    pub(crate) fn on_accepted(&mut self, now: Instant) {
        if self.factor < 1.0 {
            self.refill(now);
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
    fn throttling_lowers_the_rate_once_per_round_and_successes_restore_it() {
        let now = Instant::now();
        let mut limiter = Limiter::new(1000.0, 1e9, now);
        limiter.on_throttled(now);
        limiter.on_throttled(now + Duration::from_millis(10));
        assert!(
            (limiter.factor() - DECREASE).abs() < 1e-9,
            "one round, one decrease"
        );
        limiter.on_throttled(now + ROUND);
        assert!((limiter.factor() - DECREASE * DECREASE).abs() < 1e-9);
        for _ in 0..100 {
            limiter.on_throttled(now + ROUND * 100);
            limiter.on_throttled(now + ROUND * 200);
        }
        for i in 0..1000 {
            limiter.on_throttled(now + ROUND * (300 + i));
        }
        assert!((limiter.factor() - MIN_FACTOR).abs() < 1e-9, "floor");
        for _ in 0..1000 {
            limiter.on_accepted(now + ROUND * 2000);
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
        // Without feedback it would be 20,500 (20 s at 1000/s plus the burst).
        assert!(sent < 2_500, "{sent} sends in 20 s of throttling");
        assert!((limiter.factor() - MIN_FACTOR).abs() < 1e-9);
    }
}
