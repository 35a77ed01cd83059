//! CPU time of a process (user and system), for benchmarks that must count one process's work
//! and not its neighbours'.
//!
//! Read with [`procfs`] from `/proc/<pid>/stat`, whose `utime` and `stime` counters cover every
//! thread of the process, living or exited, and not its children, in clock ticks
//! (`sysconf(_SC_CLK_TCK)`, 100 per second on Linux: 10 ms resolution). `getrusage` counts the
//! same for the calling process only, and the benchmarks also read other processes by pid (the
//! stand-in child, a worker); it would also need `unsafe`, which the workspace forbids.

use std::ops::Sub;
use std::time::Duration;

use crate::error::HarnessError;

/// User and system CPU time consumed by a process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuTime {
    /// Time spent running the process's own code.
    pub user: Duration,
    /// Time the kernel spent working for the process (system calls, page faults).
    pub system: Duration,
    /// Minor page faults (`minflt`): pages the process touched that the kernel had to map
    /// without reading from disk, typically memory touched for the first time since it was
    /// mapped. Most of a cold start's system time.
    pub minor_faults: u64,
}

impl CpuTime {
    /// CPU time of this process (every thread, living or exited; not its children).
    pub fn of_self() -> Result<Self, HarnessError> {
        Self::read(None)
    }

    /// CPU time of process `pid`.
    pub fn of_pid(pid: u32) -> Result<Self, HarnessError> {
        Self::read(Some(pid))
    }

    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    fn read(pid: Option<u32>) -> Result<Self, HarnessError> {
        let what = match pid {
            Some(pid) => format!("reading /proc/{pid}/stat"),
            None => "reading /proc/self/stat".to_owned(),
        };
        let (user, system, minor_faults) =
            stat_ticks(pid).map_err(|e| HarnessError::io(what, e))?;
        Ok(CpuTime {
            minor_faults,
            ..from_ticks(user, system, clock_ticks_per_second())
        })
    }
}

impl Sub for CpuTime {
    type Output = CpuTime;

    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }
}

/// Clock ticks per second of the `/proc` counters (`sysconf(_SC_CLK_TCK)`, else Linux's fixed
/// 100).
pub fn clock_ticks_per_second() -> u64 {
    #[cfg(target_os = "linux")]
    let ticks = procfs::ticks_per_second();
    #[cfg(not(target_os = "linux"))]
    let ticks = 0;
    if ticks > 0 { ticks } else { 100 }
}

/// `utime` and `stime` of process `pid` (this process when `None`), in clock ticks, and its
/// `minflt`.
#[cfg(target_os = "linux")]
fn stat_ticks(pid: Option<u32>) -> Result<(u64, u64, u64), std::io::Error> {
    use procfs::process::Process;
    let process = match pid {
        None => Process::myself(),
        Some(pid) => Process::new(i32::try_from(pid).map_err(std::io::Error::other)?),
    };
    let stat = process
        .and_then(|process| process.stat())
        .map_err(std::io::Error::other)?;
    Ok((stat.utime, stat.stime, stat.minflt))
}

/// `/proc` exists on Linux only.
#[cfg(not(target_os = "linux"))]
fn stat_ticks(_pid: Option<u32>) -> Result<(u64, u64, u64), std::io::Error> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "CPU time is read from /proc, which only Linux has",
    ))
}

/// Clock-tick counts as durations.
fn from_ticks(user: u64, system: u64, ticks_per_second: u64) -> CpuTime {
    let nanos_per_tick = 1_000_000_000 / ticks_per_second.max(1);
    let to_duration = |t: u64| Duration::from_nanos(t.saturating_mul(nanos_per_tick));
    CpuTime {
        user: to_duration(user),
        system: to_duration(system),
        minor_faults: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_become_durations() {
        let cpu = from_ticks(250, 37, 100);
        assert_eq!(cpu.user, Duration::from_millis(2_500));
        assert_eq!(cpu.system, Duration::from_millis(370));
        assert_eq!(cpu.total(), Duration::from_millis(2_870));
        assert_eq!(
            from_ticks(u64::MAX, 0, 100).user,
            Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        // Work until 100 ms of CPU are counted: on a loaded machine that takes longer than 100 ms
        // of wall time, so the deadline is generous; a reading that does not grow fails it.
        let before = CpuTime::of_self().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let spent = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let spent = CpuTime::of_self().unwrap() - before;
            if spent.total() >= Duration::from_millis(100)
                || started.elapsed() > Duration::from_secs(30)
            {
                break spent;
            }
        };
        assert!(spent.total() >= Duration::from_millis(100), "{spent:?}");
    }

    #[test]
    fn touching_fresh_memory_counts_minor_faults() {
        // 64 MiB is above glibc's largest mmap threshold, so it is mapped fresh and each of its
        // 16,384 pages faults when first written (fewer with transparent huge pages, never none).
        let before = CpuTime::of_self().unwrap();
        let buffer = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = CpuTime::of_self().unwrap();
        drop(buffer);
        assert!((after - before).minor_faults >= 16, "{:?}", after - before);
    }

    #[test]
    fn a_process_is_read_by_pid_and_a_missing_one_is_an_error() {
        let by_pid = CpuTime::of_pid(std::process::id()).unwrap();
        assert!(by_pid <= CpuTime::of_self().unwrap());
        assert!(CpuTime::of_pid(u32::MAX).is_err());
    }
}
