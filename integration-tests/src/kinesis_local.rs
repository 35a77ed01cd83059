//! kinesis-local (npm `kinesis-local`, kinesis-mock compiled to JavaScript) as a child process:
//! the faithful Kinesis stand-in (ShardFilter, NextToken paging, GetRecords at shard end), but
//! slow (under 1000 records/s). Keep its streams to a few thousand records.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::HarnessError;
use crate::sdk::{self, ClientOptions};
use crate::tools::{find_executable, free_ports, require_file, tools_dir};
use crate::watchdog::WatchedChild;

/// How long kinesis-local may take to answer its health check.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Time between `SIGTERM` and `SIGKILL`. kinesis-local's graceful shutdown waits for every
/// keep-alive connection to close, and the SDK clients of a test keep theirs open, so `SIGTERM`
/// alone would always take the whole grace. It keeps no state worth a clean exit.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// A running kinesis-local under the [`crate::watchdog`]; dropping the handle stops it
/// (`SIGTERM`, then `SIGKILL` after 1 s: see `STOP_GRACE` in the source).
#[derive(Debug)]
pub struct KinesisLocal {
    endpoint: String,
    tls_port: u16,
    process: WatchedChild,
}

impl KinesisLocal {
    /// Starts kinesis-local on free ports (plain and TLS), with stream transitions of 10 ms, and
    /// waits until `GET /healthcheck` answers. Fails with [`HarnessError::MissingTool`] when
    /// `node` or the package is missing.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the child process.
    pub async fn start() -> Result<Self, HarnessError> {
        let node = find_executable("node", "kinesis-local runs on Node.js")?;
        let dir = tools_dir()
            .join("node")
            .join("node_modules")
            .join("kinesis-local");
        require_file("kinesis-local", dir.join("main.js"))?;

        let [port, tls_port] = free_ports::<2>()?;
        let mut command = Command::new(node);
        // It reads server.json from the working directory: start it from its package folder.
        command
            .current_dir(&dir)
            .arg("main.js")
            .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
            .env("KINESIS_MOCK_TLS_PORT", tls_port.to_string())
            .env("LOG_LEVEL", "WARN")
            .env("CREATE_STREAM_DURATION", "10ms")
            .env("DELETE_STREAM_DURATION", "10ms")
            .env("SPLIT_SHARD_DURATION", "10ms")
            .env("MERGE_SHARDS_DURATION", "10ms")
            .env("UPDATE_SHARD_COUNT_DURATION", "10ms")
            .env("REGISTER_STREAM_CONSUMER_DURATION", "10ms")
            .env("DEREGISTER_STREAM_CONSUMER_DURATION", "10ms")
            .env("START_STREAM_ENCRYPTION_DURATION", "10ms")
            .env("STOP_STREAM_ENCRYPTION_DURATION", "10ms")
            .env("UPDATE_STREAM_MODE_DURATION", "10ms");
        let process = WatchedChild::spawn_with_grace(
            "kinesis-local",
            &format!("kinesis-local-{port}"),
            &command,
            STOP_GRACE,
        )?;
        let endpoint = format!("http://127.0.0.1:{port}");

        // No idle connection left behind: it would hold kinesis-local's graceful shutdown.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http::<Empty<Bytes>>();
        let health: http::Uri = format!("{endpoint}/healthcheck").parse().map_err(|e| {
            HarnessError::io("building the health-check URL", std::io::Error::other(e))
        })?;
        let started = Instant::now();
        loop {
            process.check_running()?;
            let probe = tokio::time::timeout(Duration::from_secs(1), client.get(health.clone()));
            if let Ok(Ok(response)) = probe.await
                && response.status().is_success()
            {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(process.not_ready(started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(%endpoint, elapsed = ?started.elapsed(), "kinesis-local ready");
        Ok(Self {
            endpoint,
            tls_port,
            process,
        })
    }

    /// The plain-HTTP endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The TLS port (self-signed certificate; the harness clients use plain HTTP).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The log file of the Node process.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The Node process's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A Kinesis client with SDK default retries and timeouts.
    pub fn client(&self) -> aws_sdk_kinesis::Client {
        self.client_with(&ClientOptions::default())
    }

    /// A Kinesis client with `options`.
    pub fn client_with(&self, options: &ClientOptions) -> aws_sdk_kinesis::Client {
        sdk::kinesis_client(&self.endpoint, options)
    }

    /// An `SdkConfig` pointed at this stand-in.
    pub fn sdk_config(&self, options: &ClientOptions) -> SdkConfig {
        sdk::sdk_config(&self.endpoint, options)
    }
}
