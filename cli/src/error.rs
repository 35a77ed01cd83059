//! What can go wrong, as one line for the user and a documented exit code (cli/README.md, "Exit
//! codes").

use std::fmt;

use kinesis_calls::{CallError, ErrorKind};

/// Every record was written, every command did what it was asked.
pub(crate) const EXIT_OK: u8 = 0;
/// `produce`: some records could not be written (each is reported on stderr).
pub(crate) const EXIT_RECORDS_FAILED: u8 = 1;
/// Bad arguments or configuration (clap's own usage errors exit with 2 too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// The stream, shard, lease table or lease does not exist.
pub(crate) const EXIT_NOT_FOUND: u8 = 3;
/// No credentials, or the service refused them or the action.
pub(crate) const EXIT_ACCESS: u8 = 4;
/// Any other failure of an AWS call (throttled for too long, a service error, a lease that moved
/// under a `leases` command).
pub(crate) const EXIT_AWS: u8 = 5;
/// A local file, the terminal or a local port failed.
pub(crate) const EXIT_IO: u8 = 6;
/// Stopped by Ctrl-C (SIGINT) before the work was done.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// A failure of a command, reported as `kinesis: <message>` on stderr.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Arguments or configuration that cannot work.
    Usage(String),
    /// Something that does not exist.
    NotFound(String),
    /// Credentials missing or refused, or an action not allowed.
    Access(String),
    /// Another failure of an AWS call.
    Aws(String),
    /// A local I/O failure.
    Io(String),
    /// Records failed; what failed was already reported.
    RecordsFailed(String),
    /// Ctrl-C before the work was done.
    Interrupted,
}

impl CliError {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::Access(_) => EXIT_ACCESS,
            CliError::Aws(_) => EXIT_AWS,
            CliError::Io(_) => EXIT_IO,
            CliError::RecordsFailed(_) => EXIT_RECORDS_FAILED,
            CliError::Interrupted => EXIT_INTERRUPTED,
        }
    }

    /// A failed AWS call while doing `what` (for example "listing the shards of stream s").
    pub(crate) fn call(what: &str, err: &CallError) -> CliError {
        let line = format!("{what}: {err}");
        match err.kind {
            ErrorKind::NotFound => CliError::NotFound(line),
            ErrorKind::AccessDenied => CliError::Access(line),
            _ => CliError::Aws(line),
        }
    }

    /// A failed local operation while doing `what` (for example "reading notes.txt").
    pub(crate) fn io(what: &str, err: &std::io::Error) -> CliError {
        CliError::Io(format!("{what}: {err}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m)
            | CliError::NotFound(m)
            | CliError::Access(m)
            | CliError::Aws(m)
            | CliError::Io(m)
            | CliError::RecordsFailed(m) => f.write_str(m),
            CliError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_map_to_exit_codes_by_kind() {
        let cases = [
            ("ResourceNotFoundException", Some(400), EXIT_NOT_FOUND),
            ("AccessDeniedException", Some(400), EXIT_ACCESS),
            ("UnrecognizedClientException", Some(400), EXIT_ACCESS),
            (
                "ProvisionedThroughputExceededException",
                Some(400),
                EXIT_AWS,
            ),
            ("InternalFailure", Some(500), EXIT_AWS),
            ("ValidationException", Some(400), EXIT_AWS),
        ];
        for (code, status, exit) in cases {
            let err = CliError::call("doing x", &CallError::new(code, "m", status));
            assert_eq!(err.exit_code(), exit, "{code}");
            assert!(err.to_string().starts_with("doing x: "), "{err}");
        }
    }

    #[test]
    fn exit_codes_are_distinct() {
        let all = [
            EXIT_OK,
            EXIT_RECORDS_FAILED,
            EXIT_USAGE,
            EXIT_NOT_FOUND,
            EXIT_ACCESS,
            EXIT_AWS,
            EXIT_IO,
            EXIT_INTERRUPTED,
        ];
        let set: std::collections::BTreeSet<u8> = all.iter().copied().collect();
        assert_eq!(set.len(), all.len());
    }
}
