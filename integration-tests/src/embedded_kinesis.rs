//! ferrokinesis, the Kinesis stand-in embedded in the test process, behind the fault layer.
//!
//! Fast (tens of thousands of records per second) and started in microseconds. Where it
//! deviates from AWS (ListShards ignores `ShardFilter`, `NextToken` paging, closed-shard ends,
//! reads never throttled) see `reference/local-aws.md`; [`crate::KinesisLocal`] is the faithful one.
//! One deviation is corrected here: ferrokinesis could store concurrent puts to a shard out of
//! order, so that a reader following the shard skipped records; puts are made one at a time.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use axum::body::Body;
use http::Request;
use hyper::body::Incoming;
use tower::{Layer, ServiceExt};

use crate::error::HarnessError;
use crate::fault::FaultController;
use crate::fault::engine::operation_name;
use crate::fault::layer::FaultLayer;

use crate::sdk::{self, ClientOptions};
use crate::serve::Server;

/// Largest request body the embedded stand-in accepts: room for a 10 MiB `PutRecords` call in
/// base64 JSON.
const STAND_IN_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Options for [`Ferrokinesis::start_with`]. Stream transitions are instantaneous
/// (create/update/delete take 0 ms) and up to 100 shards may be open.
#[derive(Clone, Debug)]
pub struct FerrokinesisOptions {
    enforce_limits: bool,
    subscribe_to_shard_session: Duration,
    subscribe_to_shard_event_record_limit: usize,
    iterator_ttl: Duration,
    shard_limit: u32,
    faults: Option<Arc<FaultController>>,
    fault_seed: u64,
    port: u16,
}

impl Default for FerrokinesisOptions {
    fn default() -> Self {
        Self {
            enforce_limits: false,
            subscribe_to_shard_session: Duration::from_secs(300),
            subscribe_to_shard_event_record_limit: 10_000,
            iterator_ttl: Duration::from_secs(300),
            shard_limit: 100,
            faults: None,
            fault_seed: 0,
            port: 0,
        }
    }
}

impl FerrokinesisOptions {
    /// The defaults (see each setter).
    pub fn new() -> Self {
        Self::default()
    }

    /// Throttle writes per shard as Kinesis does (1 MiB/s and 1000 records/s), answering
    /// `ProvisionedThroughputExceededException` entries. Default: off.
    pub fn enforce_limits(mut self, enforce: bool) -> Self {
        self.enforce_limits = enforce;
        self
    }

    /// How long a `SubscribeToShard` session lasts before the server ends it. Default: 5 minutes
    /// (as Kinesis). Millisecond precision.
    pub fn subscribe_to_shard_session(mut self, session: Duration) -> Self {
        self.subscribe_to_shard_session = session;
        self
    }

    /// Most records in one `SubscribeToShard` event. Default: 10,000.
    pub fn subscribe_to_shard_event_record_limit(mut self, limit: usize) -> Self {
        self.subscribe_to_shard_event_record_limit = limit;
        self
    }

    /// Age after which a shard iterator is expired. Default: 5 minutes (as Kinesis). Second
    /// precision, at least one second.
    pub fn iterator_ttl(mut self, ttl: Duration) -> Self {
        self.iterator_ttl = ttl;
        self
    }

    /// Most open shards over all streams. Default: 100.
    pub fn shard_limit(mut self, limit: u32) -> Self {
        self.shard_limit = limit;
        self
    }

    /// Use this fault controller (e.g. shared with a proxy). Default: a new controller seeded
    /// with [`FerrokinesisOptions::fault_seed`].
    pub fn faults(mut self, controller: Arc<FaultController>) -> Self {
        self.faults = Some(controller);
        self
    }

    /// The seed of the controller created when none is given. Default: 0.
    pub fn fault_seed(mut self, seed: u64) -> Self {
        self.fault_seed = seed;
        self
    }

    /// The port to listen on, on `127.0.0.1`. Default: 0, any free port (tests want this; a
    /// fixed port is for a stand-in started by hand, see the `ferrokinesis-server` bin).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn store_options(&self) -> ferrokinesis::store::StoreOptions {
        ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            shard_limit: self.shard_limit,
            iterator_ttl_seconds: self.iterator_ttl.as_secs().max(1),
            subscribe_to_shard_event_record_limit: self.subscribe_to_shard_event_record_limit,
            subscribe_to_shard_session_ms: u64::try_from(
                self.subscribe_to_shard_session.as_millis(),
            )
            .unwrap_or(u64::MAX),
            enforce_limits: self.enforce_limits,
            ..Default::default()
        }
    }
}

/// A running embedded ferrokinesis on `127.0.0.1` (an ephemeral port unless
/// [`FerrokinesisOptions::port`] says otherwise); dropping it stops the server.
pub struct Ferrokinesis {
    server: Server,
    endpoint: String,
    controller: Arc<FaultController>,
    store: ferrokinesis::store::Store,
    /// The stand-in's own runtime (see [`Ferrokinesis::start_with`]); shut down in the
    /// background on drop, which an async test may do.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Ferrokinesis {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Worker threads of the embedded stand-in's runtime.
const STAND_IN_THREADS: usize = 8;

impl std::fmt::Debug for Ferrokinesis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ferrokinesis")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Ferrokinesis {
    /// Starts ferrokinesis with the default options (no faults until rules are added).
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(FerrokinesisOptions::default()).await
    }

    /// Starts ferrokinesis with `options`, serving its router behind a [`FaultLayer`].
    ///
    /// It runs on a runtime of its own, not the test's. ferrokinesis 0.7.0 takes its stream map's
    /// lock for writing, blocking the thread, on every `PutRecords`, while reads hold that lock
    /// for reading across an `.await`. On the test's runtime (two threads) two `PutRecords`
    /// blocked there left no thread to finish the reads: the whole test hung for good
    /// (`consumer_fanout::a_slow_processor_keeps_the_read_ahead_within_its_bounds`, seen once,
    /// both threads in `ensure_shard_map`). On its own runtime of 8 threads, a
    /// blocked call no longer stops the code under test, and the reads have threads to finish on.
    pub async fn start_with(options: FerrokinesisOptions) -> Result<Self, HarnessError> {
        let controller = options
            .faults
            .clone()
            .unwrap_or_else(|| FaultController::new(options.fault_seed));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(STAND_IN_THREADS)
            .thread_name("ferrokinesis")
            .enable_all()
            .build()
            .map_err(|e| HarnessError::io("starting ferrokinesis's runtime", e))?;
        // Whatever the store spawns runs there too.
        let (router, store) = {
            let _entered = runtime.enter();
            ferrokinesis::create_app(options.store_options())
        };
        // Kinesis takes PutRecords calls of up to 10 MiB of records, about 14 MB of JSON; axum's
        // default body limit (2 MB) would refuse calls of more than about 1.5 MiB of records.
        let router = router.layer(axum::extract::DefaultBodyLimit::max(
            STAND_IN_MAX_BODY_BYTES,
        ));
        // ferrokinesis numbers a put's records, then stores them, with nothing between: two puts
        // on one shard at once can be stored out of order, and a read in between sees the later
        // record without the earlier one, which a reader continuing after the later one then
        // never sees. Kinesis never shows a record before the ones numbered ahead of it, so puts
        // are made one at a time here (the fault layer's latencies stay outside the lock).
        let puts = Arc::new(tokio::sync::Mutex::new(()));
        let router = router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let puts = puts.clone();
                async move {
                    let put = operation_name(request.headers())
                        .is_some_and(|operation| matches!(&*operation, "PutRecord" | "PutRecords"));
                    let _one_at_a_time = if put { Some(puts.lock().await) } else { None };
                    next.run(request).await
                }
            },
        ));
        let service = FaultLayer::new(controller.clone()).layer(router);
        let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
            service.clone().oneshot(request.map(Body::new))
        });
        let server = Server::start_on(
            runtime.handle(),
            "ferrokinesis",
            options.port,
            hyper_service,
        )?;
        let endpoint = server.endpoint();
        tracing::debug!(%endpoint, "ferrokinesis started");
        Ok(Self {
            server,
            endpoint,
            controller,
            store,
            runtime: Some(runtime),
        })
    }

    /// The endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The socket address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The fault controller of this server's fault layer.
    pub fn faults(&self) -> &Arc<FaultController> {
        &self.controller
    }

    /// ferrokinesis's store, for inspecting state without going through the API.
    pub fn store(&self) -> &ferrokinesis::store::Store {
        &self.store
    }

    /// A Kinesis client with SDK default retries and timeouts.
    pub fn client(&self) -> aws_sdk_kinesis::Client {
        self.client_with(&ClientOptions::default())
    }

    /// A Kinesis client with `options`.
    pub fn client_with(&self, options: &ClientOptions) -> aws_sdk_kinesis::Client {
        sdk::kinesis_client(&self.endpoint, options)
    }

    /// An `SdkConfig` pointed at this server.
    pub fn sdk_config(&self, options: &ClientOptions) -> SdkConfig {
        sdk::sdk_config(&self.endpoint, options)
    }
}
