//! Runnable examples for the kinesis-rs crates (see the `[[example]]` targets), and the pieces
//! they share: AWS stand-ins embedded in the process, and stream set-up.

use std::time::Duration;

/// The examples' error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An SDK configuration for a stand-in at `endpoint`: static credentials, `us-east-1`.
pub async fn local_config(endpoint: String) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKID", "SECRET", None, None, "static",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Starts a Kinesis stand-in (ferrokinesis) in this process on `127.0.0.1`, for as long as the
/// runtime runs; returns a client for it.
pub async fn local_kinesis() -> Result<aws_sdk_kinesis::Client, BoxError> {
    let (router, _store) = ferrokinesis::create_app(ferrokinesis::store::StoreOptions {
        create_stream_ms: 0,
        update_stream_ms: 0,
        delete_stream_ms: 0,
        shard_limit: 100,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(aws_sdk_kinesis::Client::new(&local_config(endpoint).await))
}

/// Starts a DynamoDB stand-in (dynoxide, in memory) in this process on `127.0.0.1`; returns a
/// client for it.
pub async fn local_dynamodb() -> Result<aws_sdk_dynamodb::Client, BoxError> {
    let database = dynoxide::Database::memory().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(dynoxide::server::serve_on(listener, database));
    Ok(aws_sdk_dynamodb::Client::new(&local_config(endpoint).await))
}

/// Creates the stream with `shards` shards unless it exists, then waits until it is `ACTIVE`.
pub async fn ensure_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(), BoxError> {
    let exists = client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .is_ok();
    if !exists {
        client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await?;
    }
    wait_active(client, name).await
}

/// Waits (up to two minutes) until the stream is `ACTIVE`.
pub async fn wait_active(client: &aws_sdk_kinesis::Client, name: &str) -> Result<(), BoxError> {
    for _ in 0..600 {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        let active = summary
            .stream_description_summary()
            .is_some_and(|s| *s.stream_status() == aws_sdk_kinesis::types::StreamStatus::Active);
        if active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("stream {name} did not become ACTIVE").into())
}
