//! AWS SDK configuration and clients pointed at a local endpoint.
//!
//! Every stand-in accepts any static credentials but wants a signed request, so the clients sign
//! with `AKID`/`SECRET` in `us-east-1` and talk plain `http://`.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

/// The region every harness client uses.
pub const REGION: &str = "us-east-1";

/// The static credentials every harness client signs with.
pub fn credentials() -> Credentials {
    Credentials::new("AKID", "SECRET", None, None, "static")
}

/// Options for a harness SDK client: retry and timeout configuration.
///
/// The default keeps the SDK defaults (standard retries, 3 attempts). Tests of our own retry
/// logic want [`ClientOptions::without_retries`], so every failure reaches our code.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    retry: Option<RetryConfig>,
    timeouts: Option<TimeoutConfig>,
}

impl ClientOptions {
    /// SDK defaults for retries and timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the SDK retry configuration.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Turns SDK retries off (`RetryConfig::disabled()`): one attempt per call.
    pub fn without_retries(self) -> Self {
        self.retry(RetryConfig::disabled())
    }

    /// Sets the SDK timeouts (connect, read, operation, attempt).
    pub fn timeouts(mut self, timeouts: TimeoutConfig) -> Self {
        self.timeouts = Some(timeouts);
        self
    }
}

/// An `SdkConfig` for `endpoint` (e.g. `http://127.0.0.1:4567`) with the harness credentials,
/// region and `BehaviorVersion::latest()`.
pub fn sdk_config(endpoint: &str, options: &ClientOptions) -> SdkConfig {
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(credentials()))
        .endpoint_url(endpoint);
    if let Some(retry) = &options.retry {
        builder = builder.retry_config(retry.clone());
    }
    if let Some(timeouts) = &options.timeouts {
        builder = builder.timeout_config(timeouts.clone());
    }
    builder.build()
}

/// A Kinesis client for `endpoint`.
pub fn kinesis_client(endpoint: &str, options: &ClientOptions) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&sdk_config(endpoint, options))
}

/// A DynamoDB client for `endpoint`.
pub fn dynamodb_client(endpoint: &str, options: &ClientOptions) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(endpoint, options))
}
