//! SDK errors reduced to what the consumer decides on: a code, and whether to try again.

use aws_sdk_dynamodb::{
    config::http::HttpResponse,
    error::{ProvideErrorMetadata, SdkError},
};

use aws_smithy_types::event_stream::RawMessage;

use crate::error::BoxError;

/// A failed AWS call.
#[derive(Debug)]
pub(crate) struct CallFailure {
    pub(crate) code: String,
    pub(crate) retryable: bool,
    pub(crate) source: BoxError,
}

/// The codes that retrying can fix: throttling, server faults, timeouts and dropped connections.
pub(crate) fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "Throttling"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "InternalServerError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "TransactionConflictException"
            | "RequestTimeout"
            | "ConnectionError"
            | "ResponseError"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "RequestExpired"
    )
}

/// The codes that say the caller may not do this (permissions, or credentials the service does
/// not accept): trying again cannot help.
pub(crate) fn is_access_denied(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
            | "IncompleteSignatureException"
            | "KMSAccessDeniedException"
    )
}

impl CallFailure {
    pub(crate) fn timeout(after: std::time::Duration) -> Self {
        CallFailure {
            code: "RequestTimeout".to_owned(),
            retryable: true,
            source: format!("no answer within {after:?}").into(),
        }
    }

    pub(crate) fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = code_of(&err);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let retryable = is_retryable_code(&code) || status.is_some_and(|s| s >= 500);
        CallFailure {
            code,
            retryable,
            source: Box::new(err),
        }
    }

    /// An error read from an event stream (a subscription): a service error event, or the
    /// connection failing mid-stream (always worth trying again).
    pub(crate) fn from_event_stream<E>(err: SdkError<E, RawMessage>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = code_of(&err);
        let retryable = is_retryable_code(&code) || !matches!(err, SdkError::ServiceError(_));
        CallFailure {
            code,
            retryable,
            source: Box::new(err),
        }
    }
}

/// The service's error code, or a name for a transport failure.
fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> String {
    match err {
        SdkError::ServiceError(service) => service.err().code().unwrap_or("Unknown").to_owned(),
        SdkError::TimeoutError(_) => "RequestTimeout".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "RequestTimeout".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_user() => "DispatchFailure".to_owned(),
        SdkError::DispatchFailure(_) => "ConnectionError".to_owned(),
        SdkError::ResponseError(_) => "ResponseError".to_owned(),
        SdkError::ConstructionFailure(_) => "ConstructionFailure".to_owned(),
        _ => "Unknown".to_owned(),
    }
}
