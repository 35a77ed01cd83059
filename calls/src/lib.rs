//! The AWS call layer shared by `kinesis-producer` and `kinesis-consumer`.
//!
//! Both crates call AWS through the application's SDK clients. What they decide from a failed
//! call is decided here, once:
//!
//! - [`ErrorKind`] and [`classify`]: one classification of error codes, seeded from the SDK's
//!   own lists of throttling and transient codes
//!   (`aws_runtime::retries::classifiers::THROTTLING_ERRORS` and `TRANSIENT_ERRORS`), plus the codes
//!   the SDK leaves to the caller (access, credentials, KMS, missing resources);
//! - [`CallError`]: a failed call reduced to its kind, the service's error code and message, the
//!   HTTP status and the request id, with the SDK's error kept as the source;
//! - [`StreamRef`]: a stream named by name or by ARN;
//! - [`list_shards`]: the one `ListShards` pager;
//! - [`within`]: a deadline on a call.
//!
//! # Call timeouts and SDK retries
//!
//! The policy both crates follow: every call they make has a deadline of their own ([`within`]),
//! whatever the client's timeout configuration, so that a call that hangs is never waited on for
//! ever. Calls the crates retry themselves, per entry or per lease (`PutRecords`, `GetRecords`,
//! the lease table's conditional writes, `SubscribeToShard`), are made with the SDK's retries as
//! the application's client has them, except `PutRecords`, where the SDK's retries are off
//! (the producer retries each entry with its own backoff and rate limits). Failed calls are
//! classified here and retried by the crates with jittered backoff when their kind
//! [is retryable](ErrorKind::is_retryable).
//!
//! This crate is internal to the two crates above: its API may change in any release.

use std::{fmt, future::Future, time::Duration};

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_kinesis::operation::RequestId;
use aws_smithy_runtime_api::{client::result::SdkError, http::Response};
use aws_smithy_types::{error::metadata::ProvideErrorMetadata, event_stream::RawMessage};

/// A boxed error from below (the SDK).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure a call met, which decides what can be done about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A rate was exceeded (the shard's, the account's, the table's, KMS's): slow down and try
    /// again.
    Throttled,
    /// The service failed (a 5xx), the call timed out, the connection failed or the answer could
    /// not be read, or the credentials expired (the provider refreshes them): try again with
    /// backoff.
    Transient,
    /// The resource is being changed (a stream being updated, a stream consumer being
    /// registered): try again later.
    InUse,
    /// The caller may not do this: permissions, or credentials the service does not accept.
    /// Trying again cannot help.
    AccessDenied,
    /// The stream, shard, table or stream consumer does not exist.
    NotFound,
    /// The service refused the request as it is (validation, arguments, KMS key state, a request
    /// that could not be built or sent). Trying again cannot help.
    Rejected,
}

impl ErrorKind {
    /// Whether the same call may succeed later: throttling, transient failures, a resource in
    /// use.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::InUse
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient",
            ErrorKind::InUse => "resource in use",
            ErrorKind::AccessDenied => "access denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::Rejected => "rejected",
        })
    }
}

/// The code given to a call that ran out of time (ours or the SDK's).
pub const REQUEST_TIMEOUT: &str = "RequestTimeout";
/// The code given to a connection that failed (I/O error, closed before the answer).
pub const CONNECTION_ERROR: &str = "ConnectionError";
/// The code given to an answer that could not be read.
pub const RESPONSE_ERROR: &str = "ResponseError";
/// The code given to a request the SDK refused to send (a user error: a bad endpoint, say).
pub const DISPATCH_FAILURE: &str = "DispatchFailure";
/// The code given to a request that could not be built.
pub const CONSTRUCTION_FAILURE: &str = "ConstructionFailure";
/// The code given to a service error that named no code.
pub const UNKNOWN: &str = "Unknown";

/// Codes the SDK does not list that are throttling too.
const MORE_THROTTLING: &[&str] = &["KMSThrottlingException"];

/// Codes the SDK does not list that are transient: server faults named by code, our own
/// transport codes, expired credentials (the credentials provider refreshes them; the KPL's
/// users lost records by failing on them), and DynamoDB's transaction conflicts.
const MORE_TRANSIENT: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "InternalServerErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    CONNECTION_ERROR,
    RESPONSE_ERROR,
    "ExpiredTokenException",
    "ExpiredToken",
    "RequestExpired",
    "TransactionConflictException",
];

/// Codes that say the caller may not do this.
const ACCESS_DENIED: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "KMSAccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
];

/// Codes that say the service refused the request as it is.
const REJECTED: &[&str] = &[
    "ValidationException",
    "InvalidArgumentException",
    "SerializationException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "ExpiredIteratorException",
    "ConditionalCheckFailedException",
    DISPATCH_FAILURE,
    CONSTRUCTION_FAILURE,
];

/// Classifies an error code (of a whole call, or of one `PutRecords` entry). `status` is the
/// HTTP status when there was an answer; it decides for codes no list names: 429 is
/// throttling, another 4xx a refusal, a 5xx or no status at all transient (nothing says the
/// request was wrong).
pub fn classify(code: &str, status: Option<u16>) -> ErrorKind {
    if THROTTLING_ERRORS.contains(&code) || MORE_THROTTLING.contains(&code) {
        ErrorKind::Throttled
    } else if TRANSIENT_ERRORS.contains(&code) || MORE_TRANSIENT.contains(&code) {
        ErrorKind::Transient
    } else if ACCESS_DENIED.contains(&code) {
        ErrorKind::AccessDenied
    } else if code == "ResourceNotFoundException" {
        ErrorKind::NotFound
    } else if code == "ResourceInUseException" {
        ErrorKind::InUse
    } else if REJECTED.contains(&code) {
        ErrorKind::Rejected
    } else {
        match status {
            Some(429) => ErrorKind::Throttled,
            Some(401 | 403) => ErrorKind::AccessDenied,
            Some(404) => ErrorKind::NotFound,
            Some(400..=499) => ErrorKind::Rejected,
            _ => ErrorKind::Transient,
        }
    }
}

/// A failed call, reduced to what the crates decide on and what an operator needs to look it
/// up: its kind, the service's error code and message, the HTTP status and the request id.
#[derive(Debug)]
pub struct CallError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// The service's error code, or one of this crate's names for a transport failure
    /// ([`REQUEST_TIMEOUT`], [`CONNECTION_ERROR`], [`RESPONSE_ERROR`], [`DISPATCH_FAILURE`],
    /// [`CONSTRUCTION_FAILURE`], [`UNKNOWN`]).
    pub code: String,
    /// The service's message, or a description of the transport failure.
    pub message: String,
    /// The HTTP status of the answer, when one came.
    pub status: Option<u16>,
    /// The service's request id, when an answer came.
    pub request_id: Option<String>,
    /// The SDK's error.
    pub source: Option<BoxError>,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " [request id {id}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl CallError {
    /// A failure with this code, classified by it (and the status).
    pub fn new(code: impl Into<String>, message: impl Into<String>, status: Option<u16>) -> Self {
        let code = code.into();
        CallError {
            kind: classify(&code, status),
            code,
            message: message.into(),
            status,
            request_id: None,
            source: None,
        }
    }

    /// No answer within `after`.
    pub fn timeout(after: Duration) -> Self {
        CallError::new(REQUEST_TIMEOUT, format!("no answer within {after:?}"), None)
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// Whether the request may have been carried out although the call failed: an answer was
    /// lost (a timeout, a connection that failed after the request went out, an answer that
    /// could not be read, a success's included) or the service failed with a 5xx. A 4xx answer,
    /// or a request never sent, carried out nothing.
    pub fn may_have_taken_effect(&self) -> bool {
        match self.status {
            Some(status) => !(400..500).contains(&status),
            None => !matches!(self.code.as_str(), DISPATCH_FAILURE | CONSTRUCTION_FAILURE),
        }
    }

    /// A failed SDK call.
    pub fn from_sdk<E>(err: SdkError<E, Response>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let request_id = err.request_id().map(str::to_owned);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let (code, message) = code_and_message(&err);
        CallError {
            kind: classify(&code, status),
            code,
            message,
            status,
            request_id,
            source: Some(Box::new(err)),
        }
    }

    /// An error read from an event stream (a subscription): a service error event, or the
    /// connection failing mid-stream (transient).
    pub fn from_event_stream<E>(err: SdkError<E, RawMessage>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (code, message) = code_and_message(&err);
        let request_id = match &err {
            SdkError::ServiceError(service) => service.err().meta().request_id().map(str::to_owned),
            _ => None,
        };
        CallError {
            kind: classify(&code, None),
            code,
            message,
            status: None,
            request_id,
            source: Some(Box::new(err)),
        }
    }
}

/// An error's message followed by those of its sources, `: ` between them (the SDK's own
/// messages say only which step failed; the reason is further down).
fn reasons(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let message = source.to_string();
        // Wrappers often repeat their source's message as their own.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        next = source.source();
    }
    text
}

/// `what`, then the reasons an SDK error wraps (its sources'), if any.
fn with_reasons(what: &str, err: &(dyn std::error::Error + 'static)) -> String {
    match err.source() {
        Some(reason) => format!("{what}: {}", reasons(reason)),
        None => what.to_owned(),
    }
}

/// The service's error code and message, or names for a transport failure.
fn code_and_message<E, R>(err: &SdkError<E, R>) -> (String, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(service) => (
            service.err().code().unwrap_or(UNKNOWN).to_owned(),
            service.err().message().unwrap_or_default().to_owned(),
        ),
        SdkError::TimeoutError(_) => (REQUEST_TIMEOUT.to_owned(), "the SDK timed out".to_owned()),
        SdkError::DispatchFailure(failure) => {
            let code = if failure.is_timeout() {
                REQUEST_TIMEOUT
            } else if failure.is_user() {
                DISPATCH_FAILURE
            } else {
                // I/O errors and connections closed before the answer.
                CONNECTION_ERROR
            };
            (code.to_owned(), format!("{failure:?}"))
        }
        SdkError::ResponseError(_) => (
            RESPONSE_ERROR.to_owned(),
            with_reasons("unreadable answer", err),
        ),
        SdkError::ConstructionFailure(_) => (
            CONSTRUCTION_FAILURE.to_owned(),
            with_reasons("the request could not be built", err),
        ),
        _ => (UNKNOWN.to_owned(), format!("{err:?}")),
    }
}

/// Runs a call with a deadline: no answer within `timeout` is a [`REQUEST_TIMEOUT`].
pub async fn within<T, E, F>(timeout: Duration, call: F) -> Result<T, CallError>
where
    F: Future<Output = Result<T, SdkError<E, Response>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(CallError::timeout(timeout)),
        Ok(Err(err)) => Err(CallError::from_sdk(err)),
        Ok(Ok(output)) => Ok(output),
    }
}

mod stream;
pub use stream::StreamRef;

mod shards;
pub use shards::{LIST_SHARDS_PAGE, ListedShard, Which, list_shards};

#[cfg(test)]
mod tests;
