//! Runnable examples for the kinesis-rs crates (see the `[[example]]` targets), and the pieces
//! they share: AWS stand-ins embedded in the process, and stream set-up.

use std::time::Duration;

pub mod demo;

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

/// Serves a Kinesis stand-in (ferrokinesis) on `listener`, for as long as the runtime runs;
/// returns its endpoint URL. Requests up to 16 MiB are read (a `PutRecords` call is at most 10
/// MiB of data, base64-encoded in JSON).
pub async fn start_kinesis(listener: tokio::net::TcpListener) -> Result<String, BoxError> {
    let (router, _store) = ferrokinesis::create_app(ferrokinesis::store::StoreOptions {
        create_stream_ms: 0,
        update_stream_ms: 0,
        delete_stream_ms: 0,
        shard_limit: 100,
        ..Default::default()
    });
    let router = router.layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024));
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(endpoint)
}

/// Serves a DynamoDB stand-in (dynoxide, in memory) on `listener`, for as long as the runtime
/// runs; returns its endpoint URL.
pub async fn start_dynamodb(listener: tokio::net::TcpListener) -> Result<String, BoxError> {
    let database = dynoxide::Database::memory().map_err(|e| e.to_string())?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(dynoxide::server::serve_on(listener, database));
    Ok(endpoint)
}

/// Starts a Kinesis stand-in (ferrokinesis) in this process on `127.0.0.1`, for as long as the
/// runtime runs; returns a client for it.
pub async fn local_kinesis() -> Result<aws_sdk_kinesis::Client, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = start_kinesis(listener).await?;
    Ok(aws_sdk_kinesis::Client::new(&local_config(endpoint).await))
}

/// Starts a DynamoDB stand-in (dynoxide, in memory) in this process on `127.0.0.1`; returns a
/// client for it.
pub async fn local_dynamodb() -> Result<aws_sdk_dynamodb::Client, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = start_dynamodb(listener).await?;
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

/// Serves a consumer's health on `listener` until the runtime stops, for Kubernetes probes:
/// `GET /livez` and `GET /readyz` answer `200 ok` or `503` with the problems, one per line, from
/// [`kinesis_consumer::Health`]; `GET /status` answers the worker's [`kinesis_consumer::Status`]
/// as text. A plain HTTP/1.1 responder over tokio (no web framework); each connection answers
/// one request.
///
/// A Kubernetes deployment points its probes at it:
///
/// ```yaml
/// livenessProbe:  { httpGet: { path: /livez,  port: 8080 }, periodSeconds: 10, failureThreshold: 3 }
/// readinessProbe: { httpGet: { path: /readyz, port: 8080 }, periodSeconds: 5 }
/// ```
pub async fn serve_health(listener: tokio::net::TcpListener, probe: kinesis_consumer::Probe) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let probe = probe.clone();
        tokio::spawn(async move {
            // A failed connection concerns only its client.
            let _ = answer(stream, probe).await;
        });
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    probe: kinesis_consumer::Probe,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut request_line = String::new();
    let mut reader = BufReader::new(&mut stream);
    reader.read_line(&mut request_line).await?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let (status, body) = health_response(&probe, &path).await;
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The status line and body for a probe request to `path`.
pub async fn health_response(
    probe: &kinesis_consumer::Probe,
    path: &str,
) -> (&'static str, String) {
    let health = probe.health();
    let verdict = |ok: bool| {
        if ok {
            ("200 OK", "ok\n".to_owned())
        } else {
            (
                "503 Service Unavailable",
                health.problems.iter().map(|p| format!("{p}\n")).collect(),
            )
        }
    };
    match path {
        "/livez" => verdict(health.live),
        "/readyz" => verdict(health.ready),
        "/status" => {
            let status = probe.status().await;
            let mut body = format!(
                "worker {} started {} stopping {} leases {}\n",
                status.worker_id, status.started, status.stopping, status.leases_held
            );
            for shard in &status.shards {
                body.push_str(&format!(
                    "{} counter {} checkpoint {} behind {:?} processor {:?}\n",
                    shard.shard_id,
                    shard.lease_counter,
                    shard.checkpoint,
                    shard.behind_latest,
                    shard.processor
                ));
            }
            for error in &status.recent_errors {
                body.push_str(&format!("error: {}\n", error.what));
            }
            ("200 OK", body)
        }
        _ => (
            "404 Not Found",
            "try /livez, /readyz or /status\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_consumer::{ApplicationName, Batch, Checkpointer, Consumer, ShardProcessor};

    struct Quiet;

    impl ShardProcessor for Quiet {
        async fn process(&mut self, _: &Batch, c: &mut Checkpointer) -> Result<(), BoxError> {
            c.checkpoint().await?;
            Ok(())
        }

        async fn shard_ended(&mut self, c: &mut Checkpointer) -> Result<(), BoxError> {
            c.checkpoint_shard_end().await?;
            Ok(())
        }
    }

    async fn get(address: std::net::SocketAddr, path: &str) -> Result<String, BoxError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }

    /// The probes over HTTP: ready and live while the worker runs, not live once it stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_probes_answer_over_http() -> Result<(), BoxError> {
        let kinesis = local_kinesis().await?;
        let dynamodb = local_dynamodb().await?;
        ensure_stream(&kinesis, "probes", 2).await?;
        let running = Consumer::builder(
            kinesis,
            dynamodb,
            "probes",
            ApplicationName::new("probes-app")?,
            |_: &str| Quiet,
        )
        .build()?
        .start()
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(serve_health(listener, running.probe()));
        let probe = running.probe();
        for path in ["/readyz", "/livez"] {
            let response = get(address, path).await?;
            assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        }
        // The status lists the shards once the worker took them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while probe.status().await.leases_held < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker never took its shards"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = get(address, "/status").await?;
        assert!(status.contains("shardId-000000000001 counter"), "{status}");
        running.shutdown().await?;
        let response = get(address, "/livez").await?;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(response.contains("the worker has stopped"), "{response}");
        Ok(())
    }
}

/// The workspace README's code blocks, compiled as doc tests so that they cannot drift (the
/// crates' READMEs are compiled by their own crates).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct WorkspaceReadmeDoctests;
