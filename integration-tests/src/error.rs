//! The one error type of the harness.

use std::path::PathBuf;
use std::time::Duration;

/// Why a stand-in or a proxy could not be started.
///
/// `Debug` prints the same text as `Display`, so a test that fails with `expect`/`?` shows the
/// readable message (which tool is missing, the tail of the child's log) rather than a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// An external tool (`java`, `node`, a jar or an npm package) is not installed.
    #[error("{tool} is missing: {detail}. Run scripts/install-tools.sh (tools dir: {})", tools_dir.display())]
    MissingTool {
        /// The tool, e.g. `java` or `DynamoDB Local`.
        tool: &'static str,
        /// What exactly was not found.
        detail: String,
        /// The tools directory that was searched.
        tools_dir: PathBuf,
    },
    /// An I/O operation of the harness failed (bind, spawn, log file).
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A child process did not answer its readiness check in time.
    #[error("{name} was not ready after {waited:?} (log {}); log tail:\n{log_tail}", log.display())]
    NotReady {
        /// The stand-in.
        name: String,
        /// How long the harness waited.
        waited: Duration,
        /// The child's log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// A child process exited while the harness waited for it to become ready.
    #[error("{name} exited during startup ({status}) (log {}); log tail:\n{log_tail}", log.display())]
    Exited {
        /// The stand-in.
        name: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The child's log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// The embedded dynoxide database could not be opened.
    #[error("dynoxide: {0}")]
    Dynoxide(String),
    /// An upstream URL given to the proxy is not an `http://host:port` URL.
    #[error("invalid upstream URL {url:?}: {reason}")]
    InvalidUpstream {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
