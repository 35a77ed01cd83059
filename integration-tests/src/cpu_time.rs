//! CPU time of a process (user and system), read from `/proc/<pid>/stat`, for benchmarks that
//! must count one process's work and not its neighbours'.
//!
//! `getrusage` would need `unsafe` (the workspace forbids it); `/proc/<pid>/stat` carries the same
//! `utime`/`stime` counters (every thread of the process, living or exited; not its children), in
//! clock ticks of `getconf CLK_TCK` (100 per second on Linux: 10 ms resolution).

use std::ops::Sub;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::HarnessError;

/// User and system CPU time consumed by a process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuTime {
    /// Time spent running the process's own code.
    pub user: Duration,
    /// Time the kernel spent working for the process (system calls, page faults).
    pub system: Duration,
}

impl CpuTime {
    /// CPU time of this process (every thread, living or exited; not its children).
    pub fn of_self() -> Result<Self, HarnessError> {
        Self::read(PathBuf::from("/proc/self/stat"))
    }

    /// CPU time of process `pid`.
    pub fn of_pid(pid: u32) -> Result<Self, HarnessError> {
        Self::read(PathBuf::from(format!("/proc/{pid}/stat")))
    }

    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    fn read(path: PathBuf) -> Result<Self, HarnessError> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| HarnessError::io(format!("reading {}", path.display()), e))?;
        parse_stat(&text).ok_or_else(|| {
            HarnessError::io(
                format!("parsing {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
            )
        })
    }
}

impl Sub for CpuTime {
    type Output = CpuTime;

    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Clock ticks per second of the `/proc` counters (`getconf CLK_TCK`, else Linux's fixed 100).
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

/// `utime` and `stime` are fields 14 and 15 of `/proc/<pid>/stat`; the command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<CpuTime> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    let to_duration = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000 / ticks));
    Some(CpuTime {
        user: to_duration(user),
        system: to_duration(system),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let stat = "1234 (tokio (rt) 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0";
        let cpu = parse_stat(stat).unwrap();
        let tick = Duration::from_secs(1) / clock_ticks_per_second() as u32;
        assert_eq!(cpu.user, tick * 250);
        assert_eq!(cpu.system, tick * 37);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = CpuTime::of_self().unwrap();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = CpuTime::of_self().unwrap() - before;
        assert!(spent.total() >= Duration::from_millis(100), "{spent:?}");
    }
}
