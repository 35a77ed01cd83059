//! Where the external tools and the harness logs live, and how a missing tool is reported.
//!
//! `scripts/install-tools.sh` installs the tools into `$KINESIS_TOOLS_DIR`, by default
//! `<workspace>/target/tools`.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use crate::error::HarnessError;

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The tools directory: `$KINESIS_TOOLS_DIR`, or `<workspace>/target/tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("KINESIS_TOOLS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("tools"),
    }
}

/// The directory for child-process logs: `<workspace>/target/harness-logs`.
pub fn log_dir() -> PathBuf {
    workspace_root().join("target").join("harness-logs")
}

/// Finds an executable on `PATH`, or reports it as a missing tool with `why` it is needed.
pub fn find_executable(name: &'static str, why: &str) -> Result<PathBuf, HarnessError> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    found.ok_or_else(|| HarnessError::MissingTool {
        tool: name,
        detail: format!("`{name}` was not found on PATH ({why})"),
        tools_dir: tools_dir(),
    })
}

/// Checks that an installed file exists, or reports the tool as missing.
pub(crate) fn require_file(tool: &'static str, path: PathBuf) -> Result<PathBuf, HarnessError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(HarnessError::MissingTool {
            tool,
            detail: format!("{} does not exist", path.display()),
            tools_dir: tools_dir(),
        })
    }
}

/// The machine, for benchmark reports: CPU model, cores, OS and architecture.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{model}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// What `program flag` (e.g. `python3 --version`) prints, for benchmark reports.
pub fn program_version(program: &str, flag: &str) -> String {
    std::process::Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        })
        .unwrap_or_else(|| format!("{program}: unknown version"))
}

/// Picks a free TCP port on 127.0.0.1 by binding port 0 and releasing it.
///
/// Another process may take the port before the child binds it; on this machine that race is
/// rare enough for tests, and a failed start says so in the child's log.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to pick a port", e))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| HarnessError::io("reading the picked port", e))
}

/// Picks `N` distinct free ports (all held while picking, so they differ).
pub fn free_ports<const N: usize>() -> Result<[u16; N], HarnessError> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to pick a port", e))?;
        *port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the picked port", e))?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// `v` rounded to a whole number, with commas between thousands (`1234567.4` -> `1,234,567`),
/// for the benchmarks' figures.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
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
    fn a_missing_executable_names_the_tool_and_the_install_script() {
        let error = find_executable("definitely-not-an-installed-tool", "a test").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("definitely-not-an-installed-tool"),
            "{message}"
        );
        assert!(message.contains("scripts/install-tools.sh"), "{message}");
    }

    #[test]
    fn a_missing_file_names_the_tool_and_the_install_script() {
        let error = require_file(
            "DynamoDB Local",
            PathBuf::from("/nonexistent/DynamoDBLocal.jar"),
        )
        .unwrap_err();
        let message = format!("{error:?}");
        assert!(
            message.starts_with("DynamoDB Local is missing"),
            "{message}"
        );
        assert!(
            message.contains("/nonexistent/DynamoDBLocal.jar"),
            "{message}"
        );
        assert!(message.contains("scripts/install-tools.sh"), "{message}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports::<3>().unwrap();
        assert!(a != b && b != c && a != c);
        assert!(free_port().unwrap() > 0);
    }
}
