//! A process-wide `metrics` recorder for tests that reads values without resetting them (the
//! `metrics-util` debugging recorder's snapshots reset counters and gauges to zero, which breaks
//! gauges moved by increments and tests that read more than once).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// The installed recorder: counters and gauges kept in atomics, histograms ignored.
pub struct Capture {
    registry: Registry<Key, AtomicStorage>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

struct Installed(Arc<Capture>);

impl Recorder for Installed {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Capture {
    /// The process's capture, installed as the global recorder on first use.
    ///
    /// # Panics
    ///
    /// If another global recorder was installed first.
    pub fn global() -> &'static Capture {
        static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();
        CAPTURE.get_or_init(|| {
            let capture = Arc::new(Capture {
                registry: Registry::atomic(),
            });
            metrics::set_global_recorder(Installed(capture.clone()))
                .unwrap_or_else(|_| panic!("another metrics recorder is installed"));
            capture
        })
    }

    /// The sum of counter `name` over the keys whose labels include every one of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.registry
            .get_counter_handles()
            .into_iter()
            .filter(|(key, _)| matches(key, name, labels))
            .map(|(_, value)| value.load(Ordering::SeqCst))
            .sum()
    }

    /// The sum of gauge `name` over the keys whose labels include every one of `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.registry
            .get_gauge_handles()
            .into_iter()
            .filter(|(key, _)| matches(key, name, labels))
            .map(|(_, value)| f64::from_bits(value.load(Ordering::SeqCst)))
            .sum()
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}
