use aws_sdk_kinesis::operation::list_shards::ListShardsError;
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::ConnectorError};
use aws_smithy_types::{body::SdkBody, error::ErrorMetadata};

use super::*;

#[test]
fn classification_table() {
    use ErrorKind::*;
    let table: &[(&str, Option<u16>, ErrorKind)] = &[
        // The SDK's throttling list, and KMS's throttling.
        (
            "ProvisionedThroughputExceededException",
            Some(400),
            Throttled,
        ),
        ("ThrottlingException", Some(400), Throttled),
        ("TooManyRequestsException", Some(429), Throttled),
        ("SlowDown", Some(503), Throttled),
        ("LimitExceededException", Some(400), Throttled),
        ("RequestLimitExceeded", Some(400), Throttled),
        ("TransactionInProgressException", Some(400), Throttled),
        ("KMSThrottlingException", Some(400), Throttled),
        // The SDK's transient list, server faults, our transport codes, expired credentials.
        ("RequestTimeout", None, Transient),
        ("RequestTimeoutException", Some(408), Transient),
        ("InternalFailure", Some(500), Transient),
        ("ServiceUnavailable", Some(503), Transient),
        (CONNECTION_ERROR, None, Transient),
        (RESPONSE_ERROR, None, Transient),
        ("ExpiredTokenException", Some(400), Transient),
        ("TransactionConflictException", Some(400), Transient),
        // Access and credentials.
        ("AccessDeniedException", Some(400), AccessDenied),
        ("KMSAccessDeniedException", Some(400), AccessDenied),
        ("UnrecognizedClientException", Some(400), AccessDenied),
        ("InvalidSignatureException", Some(400), AccessDenied),
        ("MissingAuthenticationToken", Some(403), AccessDenied),
        // Missing and busy resources.
        ("ResourceNotFoundException", Some(400), NotFound),
        ("ResourceInUseException", Some(400), InUse),
        // Refusals.
        ("ValidationException", Some(400), Rejected),
        ("InvalidArgumentException", Some(400), Rejected),
        ("KMSDisabledException", Some(400), Rejected),
        ("KMSOptInRequired", Some(400), Rejected),
        (DISPATCH_FAILURE, None, Rejected),
        (CONSTRUCTION_FAILURE, None, Rejected),
        // Codes no list names: the status decides; without one, nothing says the request was
        // wrong.
        ("SomethingNew", Some(429), Throttled),
        ("SomethingNew", Some(403), AccessDenied),
        ("SomethingNew", Some(404), NotFound),
        ("SomethingNew", Some(400), Rejected),
        ("SomethingNew", Some(500), Transient),
        ("SomethingNew", Some(502), Transient),
        ("SomethingNew", None, Transient),
        (UNKNOWN, None, Transient),
    ];
    for &(code, status, kind) in table {
        assert_eq!(classify(code, status), kind, "{code} {status:?}");
    }
}

#[test]
fn every_sdk_listed_code_is_retryable() {
    for code in THROTTLING_ERRORS.iter().chain(TRANSIENT_ERRORS) {
        for status in [None, Some(400), Some(500)] {
            assert!(classify(code, status).is_retryable(), "{code} {status:?}");
        }
    }
}

#[test]
fn only_throttling_transient_and_in_use_are_retryable() {
    use ErrorKind::*;
    for kind in [Throttled, Transient, InUse] {
        assert!(kind.is_retryable());
    }
    for kind in [AccessDenied, NotFound, Rejected] {
        assert!(!kind.is_retryable());
    }
}

fn response(status: u16, request_id: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse::new(
        status.try_into().expect("a valid status in the test"),
        SdkBody::empty(),
    );
    if let Some(id) = request_id {
        response
            .headers_mut()
            .insert("x-amzn-RequestId", id.to_owned());
    }
    response
}

#[test]
fn a_service_error_keeps_code_message_status_and_request_id() {
    let err = SdkError::service_error(
        ListShardsError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not allowed")
                .build(),
        ),
        response(400, Some("req-1")),
    );
    let call = CallError::from_sdk(err);
    assert_eq!(call.kind, ErrorKind::AccessDenied);
    assert_eq!(call.code, "AccessDeniedException");
    assert_eq!(call.message, "not allowed");
    assert_eq!(call.status, Some(400));
    assert_eq!(call.request_id.as_deref(), Some("req-1"));
    assert!(!call.may_have_taken_effect());
    assert_eq!(
        call.to_string(),
        "AccessDeniedException: not allowed (HTTP 400) [request id req-1]"
    );
    assert!(std::error::Error::source(&call).is_some());
}

#[test]
fn a_service_error_without_a_code_is_decided_by_its_status() {
    let err = SdkError::service_error(
        ListShardsError::generic(ErrorMetadata::builder().build()),
        response(503, None),
    );
    let call = CallError::from_sdk(err);
    assert_eq!(call.code, UNKNOWN);
    assert_eq!(call.kind, ErrorKind::Transient);
    assert!(call.may_have_taken_effect());
}

#[test]
fn transport_failures() {
    let io: SdkError<ListShardsError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::io("reset".into()));
    let call = CallError::from_sdk(io);
    assert_eq!(
        (call.code.as_str(), call.kind),
        (CONNECTION_ERROR, ErrorKind::Transient)
    );
    assert!(call.may_have_taken_effect());

    let timeout: SdkError<ListShardsError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::timeout("slow".into()));
    let call = CallError::from_sdk(timeout);
    assert_eq!(
        (call.code.as_str(), call.kind),
        (REQUEST_TIMEOUT, ErrorKind::Transient)
    );

    let user: SdkError<ListShardsError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::user("bad endpoint".into()));
    let call = CallError::from_sdk(user);
    assert_eq!(
        (call.code.as_str(), call.kind),
        (DISPATCH_FAILURE, ErrorKind::Rejected)
    );
    assert!(!call.may_have_taken_effect());

    let sdk_timeout: SdkError<ListShardsError, HttpResponse> = SdkError::timeout_error("slow");
    assert_eq!(CallError::from_sdk(sdk_timeout).code, REQUEST_TIMEOUT);

    let built: SdkError<ListShardsError, HttpResponse> =
        SdkError::construction_failure("no stream name");
    let call = CallError::from_sdk(built);
    assert_eq!(
        (call.code.as_str(), call.kind),
        (CONSTRUCTION_FAILURE, ErrorKind::Rejected)
    );
    assert_eq!(
        call.message,
        "the request could not be built: no stream name"
    );
    assert!(!call.may_have_taken_effect());
}

/// A success whose answer could not be read (a body the SDK could not deserialize) carried the
/// request out: a caller must not take it as refused. An unreadable 4xx refused it.
#[test]
fn an_unreadable_answer_may_have_taken_effect_unless_it_was_a_refusal() {
    for (status, effect) in [(200, true), (503, true), (400, false)] {
        let err: SdkError<ListShardsError, HttpResponse> =
            SdkError::response_error("could not deserialize", response(status, None));
        let call = CallError::from_sdk(err);
        assert_eq!(call.code, RESPONSE_ERROR);
        assert_eq!(call.status, Some(status));
        assert_eq!(call.may_have_taken_effect(), effect, "HTTP {status}");
    }
}

/// A deserialization failure nested the way the SDK nests it: its own message names the step,
/// the source the reason.
#[derive(Debug)]
struct Nested(&'static str, Option<Box<Nested>>);

impl std::fmt::Display for Nested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Nested {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

/// An unreadable answer's message carries the reasons down its source chain, once each.
#[test]
fn an_unreadable_answer_says_why() {
    let reason = Nested(
        "failed to parse JSON",
        Some(Box::new(Nested(
            "CBOR item at byte 17: truncated",
            Some(Box::new(Nested("CBOR item at byte 17: truncated", None))),
        ))),
    );
    let err: SdkError<ListShardsError, HttpResponse> =
        SdkError::response_error(reason, response(200, None));
    let call = CallError::from_sdk(err);
    assert_eq!(call.code, RESPONSE_ERROR);
    assert_eq!(
        call.message,
        "unreadable answer: failed to parse JSON: CBOR item at byte 17: truncated"
    );
    let plain: SdkError<ListShardsError, HttpResponse> =
        SdkError::response_error("unexpected end", response(200, None));
    assert_eq!(
        CallError::from_sdk(plain).message,
        "unreadable answer: unexpected end"
    );
}

#[tokio::test(start_paused = true)]
async fn within_gives_a_timeout_when_no_answer_comes() {
    let call = std::future::pending::<Result<(), SdkError<ListShardsError, HttpResponse>>>();
    let Err(err) = within(Duration::from_secs(2), call).await else {
        panic!("a call that never answers must time out");
    };
    assert_eq!(
        (err.code.as_str(), err.kind),
        (REQUEST_TIMEOUT, ErrorKind::Transient)
    );
    assert!(err.may_have_taken_effect());
}

#[test]
fn stream_refs() {
    let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";
    assert_eq!(StreamRef::from(arn), StreamRef::Arn(arn.to_owned()));
    assert_eq!(StreamRef::from(arn).stream_name(), "orders");
    assert_eq!(StreamRef::from(arn).arn(), Some(arn));
    assert_eq!(StreamRef::from(arn).name(), None);
    assert_eq!(
        StreamRef::from("orders"),
        StreamRef::Name("orders".to_owned())
    );
    assert_eq!(StreamRef::from("orders").stream_name(), "orders");
    assert_eq!(StreamRef::from("orders").to_string(), "orders");
    assert_eq!(StreamRef::from(arn).to_string(), arn);
}

#[test]
fn stream_ref_problems() {
    for good in [
        "orders",
        "a",
        "Orders_2024.v-1",
        "arn:aws:kinesis:eu-west-1:123456789012:stream/orders",
        "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/x",
    ] {
        assert_eq!(StreamRef::from(good).problem(), None, "{good}");
    }
    for bad in [
        "",
        "has space",
        "slash/name",
        "ünïcode",
        "arn:aws:kinesis:eu-west-1:123456789012:orders",
        "arn:aws:dynamodb:eu-west-1:123456789012:stream/orders",
        "arn:aws:kinesis::123456789012:stream/orders",
        "arn:aws:kinesis:eu-west-1:123456789012:stream/",
        "arn:",
    ] {
        assert!(StreamRef::from(bad).problem().is_some(), "{bad}");
    }
    assert!(StreamRef::from("x".repeat(129)).problem().is_some());
    assert_eq!(StreamRef::from("x".repeat(128)).problem(), None);
}
