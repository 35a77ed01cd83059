//! A process's resident memory (RSS), for benchmarks that report what a worker holds in memory:
//! `VmRSS` of `/proc/<pid>/status`, read with [`procfs`].

use crate::error::HarnessError;

/// Resident memory of this process, in bytes.
pub fn of_self() -> Result<u64, HarnessError> {
    read(None)
}

/// Resident memory of process `pid`, in bytes.
pub fn of_pid(pid: u32) -> Result<u64, HarnessError> {
    read(Some(pid))
}

fn read(pid: Option<u32>) -> Result<u64, HarnessError> {
    let what = match pid {
        Some(pid) => format!("reading /proc/{pid}/status"),
        None => "reading /proc/self/status".to_owned(),
    };
    vm_rss(pid).map_err(|e| HarnessError::io(what, e))
}

#[cfg(target_os = "linux")]
fn vm_rss(pid: Option<u32>) -> Result<u64, std::io::Error> {
    use procfs::process::Process;
    let process = match pid {
        None => Process::myself(),
        Some(pid) => Process::new(i32::try_from(pid).map_err(std::io::Error::other)?),
    };
    let status = process
        .and_then(|process| process.status())
        .map_err(std::io::Error::other)?;
    // In kB (KiB): the kernel's unit for every `Vm*` field.
    status
        .vmrss
        .map(|kib| kib * 1024)
        .ok_or_else(|| std::io::Error::other("no VmRSS (a kernel thread or a zombie)"))
}

/// `/proc` exists on Linux only.
#[cfg(not(target_os = "linux"))]
fn vm_rss(_pid: Option<u32>) -> Result<u64, std::io::Error> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "resident memory is read from /proc, which only Linux has",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_has_resident_memory_and_a_missing_one_is_an_error() {
        let own = of_self().unwrap();
        assert!(own > 1024 * 1024, "{own}");
        let by_pid = of_pid(std::process::id()).unwrap();
        assert!(by_pid > 1024 * 1024, "{by_pid}");
        assert!(of_pid(u32::MAX).is_err());
    }
}
