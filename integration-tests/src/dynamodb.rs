//! DynamoDB stand-ins for the lease table: Amazon's DynamoDB Local (a Java child process, the
//! reference) and dynoxide (embedded, SQLite-backed, starts in milliseconds), behind one handle,
//! [`DynamoDb`], so a test can run against either.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

use crate::error::HarnessError;
use crate::sdk::{self, ClientOptions};
use crate::tools::{find_executable, free_port, require_file, tools_dir};
use crate::watchdog::WatchedChild;

/// How long DynamoDB Local may take to answer (it usually takes about 8 s).
const LOCAL_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which DynamoDB stand-in to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DynamoBackend {
    /// A DynamoDB Local process of this test's own.
    Local,
    /// The process-wide DynamoDB Local ([`DynamoDbLocal::shared`]): no 8-second start per test;
    /// tests must use unique table names.
    SharedLocal,
    /// dynoxide, embedded in the test process.
    Dynoxide,
}

/// A running DynamoDB stand-in of either kind.
#[derive(Debug)]
pub struct DynamoDb {
    backend: DynamoBackend,
    endpoint: String,
    instance: Instance,
}

#[derive(Debug)]
enum Instance {
    Local(DynamoDbLocal),
    SharedLocal(&'static DynamoDbLocal),
    Dynoxide(Dynoxide),
}

impl DynamoDb {
    /// Starts (or, for [`DynamoBackend::SharedLocal`], reuses) a stand-in.
    pub async fn start(backend: DynamoBackend) -> Result<Self, HarnessError> {
        let (endpoint, instance) = match backend {
            DynamoBackend::Local => {
                let local = DynamoDbLocal::start().await?;
                (local.endpoint().to_owned(), Instance::Local(local))
            }
            DynamoBackend::SharedLocal => {
                let shared = DynamoDbLocal::shared().await?;
                (shared.endpoint().to_owned(), Instance::SharedLocal(shared))
            }
            DynamoBackend::Dynoxide => {
                let dynoxide = Dynoxide::start().await?;
                (dynoxide.endpoint().to_owned(), Instance::Dynoxide(dynoxide))
            }
        };
        Ok(Self {
            backend,
            endpoint,
            instance,
        })
    }

    /// Which stand-in this is.
    pub fn backend(&self) -> DynamoBackend {
        self.backend
    }

    /// The endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The DynamoDB Local process (its log, its pid), unless this is dynoxide.
    pub fn local(&self) -> Option<&DynamoDbLocal> {
        match &self.instance {
            Instance::Local(local) => Some(local),
            Instance::SharedLocal(local) => Some(local),
            Instance::Dynoxide(_) => None,
        }
    }

    /// The embedded dynoxide, if this is one.
    pub fn dynoxide(&self) -> Option<&Dynoxide> {
        match &self.instance {
            Instance::Dynoxide(dynoxide) => Some(dynoxide),
            _ => None,
        }
    }

    /// A DynamoDB client with SDK default retries and timeouts.
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        self.client_with(&ClientOptions::default())
    }

    /// A DynamoDB client with `options`.
    pub fn client_with(&self, options: &ClientOptions) -> aws_sdk_dynamodb::Client {
        sdk::dynamodb_client(&self.endpoint, options)
    }

    /// An `SdkConfig` pointed at this stand-in.
    pub fn sdk_config(&self, options: &ClientOptions) -> SdkConfig {
        sdk::sdk_config(&self.endpoint, options)
    }
}

/// Amazon's DynamoDB Local (`DynamoDBLocal.jar`, in memory) as a child process under the
/// [`crate::watchdog`]; dropping the handle stops it.
#[derive(Debug)]
pub struct DynamoDbLocal {
    endpoint: String,
    process: WatchedChild,
}

static SHARED_LOCAL: OnceCell<DynamoDbLocal> = OnceCell::const_new();

impl DynamoDbLocal {
    /// Starts DynamoDB Local on a free port and waits (up to 60 s) until it answers
    /// `ListTables`. Fails with [`HarnessError::MissingTool`] when `java` or the jar is missing.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the child process.
    pub async fn start() -> Result<Self, HarnessError> {
        let java = find_executable("java", "DynamoDB Local needs a Java 17 runtime")?;
        let dir = tools_dir().join("dynamodb-local");
        require_file("DynamoDB Local", dir.join("DynamoDBLocal.jar"))?;
        require_file("DynamoDB Local", dir.join("DynamoDBLocal_lib"))?;

        let port = free_port()?;
        let mut command = Command::new(java);
        command
            .current_dir(&dir)
            .arg("-Djava.library.path=./DynamoDBLocal_lib")
            .args([
                "-jar",
                "DynamoDBLocal.jar",
                "-inMemory",
                "-disableTelemetry",
            ])
            .args(["-port", &port.to_string()]);
        let process = WatchedChild::spawn(
            "DynamoDB Local",
            &format!("dynamodb-local-{port}"),
            &command,
        )?;
        let endpoint = format!("http://127.0.0.1:{port}");

        let probe = sdk::dynamodb_client(
            &endpoint,
            &ClientOptions::new()
                .retry(RetryConfig::disabled())
                .timeouts(
                    TimeoutConfig::builder()
                        .operation_timeout(Duration::from_secs(2))
                        .build(),
                ),
        );
        let started = Instant::now();
        loop {
            process.check_running()?;
            if probe.list_tables().limit(1).send().await.is_ok() {
                break;
            }
            if started.elapsed() > LOCAL_READY_TIMEOUT {
                return Err(process.not_ready(started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!(%endpoint, elapsed = ?started.elapsed(), "DynamoDB Local ready");
        Ok(Self { endpoint, process })
    }

    /// The process-wide DynamoDB Local, started on first use. It is never dropped: the watchdog
    /// stops it when the test process exits. Tests sharing it must use unique table names.
    ///
    /// # Cancellation
    ///
    /// Dropping the future while it starts the instance stops that child; the next call starts
    /// another.
    pub async fn shared() -> Result<&'static DynamoDbLocal, HarnessError> {
        SHARED_LOCAL.get_or_try_init(Self::start).await
    }

    /// The endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The log file of the Java process.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The Java process's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A DynamoDB client with SDK default retries and timeouts.
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        self.client_with(&ClientOptions::default())
    }

    /// A DynamoDB client with `options`.
    pub fn client_with(&self, options: &ClientOptions) -> aws_sdk_dynamodb::Client {
        sdk::dynamodb_client(&self.endpoint, options)
    }
}

/// dynoxide, an in-memory DynamoDB served from the test process; dropping it stops the server.
#[derive(Debug)]
pub struct Dynoxide {
    endpoint: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Dynoxide {
    /// Starts dynoxide on `127.0.0.1:<ephemeral>` with an empty in-memory database.
    pub async fn start() -> Result<Self, HarnessError> {
        let database =
            dynoxide::Database::memory().map_err(|e| HarnessError::Dynoxide(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| HarnessError::io("binding dynoxide to 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading dynoxide's address", e))?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stop.await;
            };
            if let Err(error) =
                dynoxide::server::serve_with_shutdown(listener, database, stopped).await
            {
                tracing::warn!(%error, "dynoxide stopped with an error");
            }
        });
        let endpoint = format!("http://{addr}");
        tracing::debug!(%endpoint, "dynoxide started");
        Ok(Self {
            endpoint,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// The endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A DynamoDB client with SDK default retries and timeouts.
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        self.client_with(&ClientOptions::default())
    }

    /// A DynamoDB client with `options`.
    pub fn client_with(&self, options: &ClientOptions) -> aws_sdk_dynamodb::Client {
        sdk::dynamodb_client(&self.endpoint, options)
    }
}

impl Drop for Dynoxide {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Stop accepting at once; idle keep-alive connections end with their clients.
        self.task.abort();
    }
}
