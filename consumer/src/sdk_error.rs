//! Failed AWS calls, as the call layer shared with the producer reduces them
//! ([`kinesis_calls::CallError`]: a kind, the service's code and message, the status and the
//! request id).

pub(crate) use kinesis_calls::CallError as CallFailure;
use kinesis_calls::ErrorKind;

/// Whether the caller may not do this (permissions, or credentials the service does not
/// accept): trying again cannot help.
pub(crate) fn is_access_denied(failure: &CallFailure) -> bool {
    failure.kind == ErrorKind::AccessDenied
}
