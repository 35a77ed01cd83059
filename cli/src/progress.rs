//! Progress on long work: a live line on the terminal (indicatif) when stdout and stderr are both
//! terminals, otherwise a plain line on stderr every [`PLAIN_EVERY`]; nothing with `--quiet`.
//!
//! A command keeps its own counters and gives a closure that describes them; rates are worked
//! out here from successive readings.

use std::{
    io::IsTerminal,
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::{sync::Notify, task::JoinHandle};

/// How often a plain progress line is printed when the output is not a terminal.
pub(crate) const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// How often the live line is redrawn.
const LIVE_EVERY: Duration = Duration::from_millis(250);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A live line redrawn in place.
    Live,
    /// A line on stderr every [`PLAIN_EVERY`].
    Plain,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Live when stdout and stderr are terminals, plain otherwise, nothing if `quiet`.
    pub(crate) fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// A running progress display; [`Progress::finish`] stops it.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `describe(elapsed)` under `label` as `mode` says, until [`Progress::finish`].
    pub(crate) fn start<F>(mode: Mode, label: &'static str, describe: F) -> Progress
    where
        F: Fn(Duration) -> String + Send + 'static,
    {
        let stop = Arc::new(Notify::new());
        let started = Instant::now();
        let (bar, task) = match mode {
            Mode::Quiet => (None, None),
            Mode::Live => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(label);
                bar.enable_steady_tick(Duration::from_millis(120));
                let shown = bar.clone();
                let stop = stop.clone();
                let task = tokio::spawn(async move {
                    loop {
                        shown.set_message(describe(started.elapsed()));
                        tokio::select! {
                            _ = stop.notified() => break,
                            _ = tokio::time::sleep(LIVE_EVERY) => {}
                        }
                    }
                });
                (Some(bar), Some(task))
            }
            Mode::Plain => {
                let stop = stop.clone();
                let task = tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.notified() => break,
                            _ = tokio::time::sleep(PLAIN_EVERY) => {
                                eprintln!("{label}: {}", describe(started.elapsed()));
                            }
                        }
                    }
                });
                (None, Some(task))
            }
        };
        Progress { bar, stop, task }
    }

    /// Runs `f` (which prints) with the live line out of the way.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Stops the display and clears the live line.
    pub(crate) async fn finish(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A count per second over `elapsed`, for example "1,234/s".
pub(crate) fn per_second(count: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "0/s".to_owned();
    }
    format!("{}/s", thousands((count as f64 / secs).round() as u64))
}

/// A byte count in B, KiB, MiB or GiB.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A number with thousands separators: 1234567 → "1,234,567".
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(per_second(500, Duration::from_millis(500)), "1,000/s");
        assert_eq!(per_second(5, Duration::ZERO), "0/s");
    }
}
