//! The producer's metrics second by second, from a `metrics-util` debugging recorder installed
//! for the run ([`install_recorder`]): a [`Sampler`] snapshots it every second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use crate::fault::layer::BoxError;

/// Installs a debugging recorder as the process's metrics recorder; returns what reads it.
pub fn install_recorder() -> Result<Snapshotter, BoxError> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    Ok(snapshotter)
}

/// Counter totals over every label set, and `ERRORS_BY_CODE` per error code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricTotals {
    /// Counter totals by metric name.
    pub counters: BTreeMap<String, u64>,
    /// [`kinesis_producer::metrics::ERRORS_BY_CODE`] by error code.
    pub errors_by_code: BTreeMap<String, u64>,
}

impl MetricTotals {
    /// The total of counter `name` (0 if never counted).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Entries failed with error `code`.
    pub fn errors(&self, code: &str) -> u64 {
        self.errors_by_code.get(code).copied().unwrap_or(0)
    }

    /// Entries failed, every code together.
    pub fn total_errors(&self) -> u64 {
        self.errors_by_code.values().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &MetricTotals) {
        for (name, n) in &other.counters {
            *self.counters.entry(name.clone()).or_default() += n;
        }
        for (code, n) in &other.errors_by_code {
            *self.errors_by_code.entry(code.clone()).or_default() += n;
        }
    }
}

/// One second of the producer's metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When it was taken, from the run's start.
    pub at: Duration,
    /// The counts of that second.
    pub totals: MetricTotals,
    /// The last rate factor each shard reported in the second (shard id order).
    pub rate_factors: BTreeMap<String, f64>,
    /// Records admitted and not resolved, as last reported in the second.
    pub pending: Option<f64>,
}

/// Takes a snapshot of the debugging recorder every second. A snapshot resets its counters, so
/// the samples are per-second deltas; the totals returned by [`Sampler::finish`] are their sum.
#[derive(Debug)]
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(MetricTotals, Vec<Sample>)>,
}

impl Sampler {
    /// Starts sampling, the first sample one second after `started`.
    pub fn start(snapshotter: Snapshotter, started: Instant) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut totals = MetricTotals::default();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(started) + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stopped => true,
                };
                let sample = take_sample(&snapshotter, started.elapsed());
                totals.add(&sample.totals);
                samples.push(sample);
                if last {
                    return (totals, samples);
                }
            }
        });
        Self { stop, task }
    }

    /// Takes a last sample and returns the totals and every sample.
    pub async fn finish(self) -> Result<(MetricTotals, Vec<Sample>), BoxError> {
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

fn take_sample(snapshotter: &Snapshotter, at: Duration) -> Sample {
    use kinesis_producer::metrics as m;
    let mut sample = Sample {
        at,
        totals: MetricTotals::default(),
        rate_factors: BTreeMap::new(),
        pending: None,
    };
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name();
        let label = |wanted: &str| {
            key.key()
                .labels()
                .find(|l| l.key() == wanted)
                .map_or_else(|| "unknown".to_owned(), |l| l.value().to_owned())
        };
        match value {
            DebugValue::Counter(n) => {
                if name == m::ERRORS_BY_CODE {
                    *sample
                        .totals
                        .errors_by_code
                        .entry(label("error_code"))
                        .or_default() += n;
                }
                *sample.totals.counters.entry(name.to_owned()).or_default() += n;
            }
            // A snapshot resets gauges to 0: 0 means "not reported in this second".
            DebugValue::Gauge(v) if v.0 != 0.0 => {
                if name == m::SHARD_RATE_FACTOR {
                    sample.rate_factors.insert(label("shard_id"), v.0);
                } else if name == m::USER_RECORDS_PENDING {
                    sample.pending = Some(v.0);
                }
            }
            _ => {}
        }
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_by_name_and_code() {
        let second = |calls: u64, throttled: u64| MetricTotals {
            counters: BTreeMap::from([("calls".to_owned(), calls)]),
            errors_by_code: BTreeMap::from([("Throttled".to_owned(), throttled)]),
        };
        let mut totals = MetricTotals::default();
        totals.add(&second(3, 1));
        totals.add(&second(4, 0));
        assert_eq!(totals.counter("calls"), 7);
        assert_eq!(totals.counter("other"), 0);
        assert_eq!(totals.errors("Throttled"), 1);
        assert_eq!(totals.total_errors(), 1);
    }
}
