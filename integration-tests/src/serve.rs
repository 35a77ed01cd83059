//! The accept loop shared by the embedded Kinesis server and the fault proxy.
//!
//! We serve connections ourselves (hyper-util's auto builder: HTTP/1.1 and h2c) instead of
//! `axum::serve`, so that a service error closes the connection without a response: that is how
//! the fault engine drops a connection.

use std::net::{Ipv4Addr, SocketAddr};

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::HarnessError;

/// Boxed error used across the HTTP front-ends.
pub(crate) use crate::fault::layer::BoxError;

/// A server task on `127.0.0.1:<port>`; dropping it stops accepting and aborts every connection
/// it is serving.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `127.0.0.1:<port>` (`0` for any free port) and serves `service` on every accepted
    /// connection, on the current runtime.
    pub(crate) async fn start<S>(
        name: &'static str,
        port: u16,
        service: S,
    ) -> Result<Self, HarnessError>
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        Self::start_on(&tokio::runtime::Handle::current(), name, port, service)
    }

    /// As [`Server::start`], on the runtime `runtime` (which must outlive the server).
    pub(crate) fn start_on<S>(
        runtime: &tokio::runtime::Handle,
        name: &'static str,
        port: u16,
        service: S,
    ) -> Result<Self, HarnessError>
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        // Bound as `TcpListener::bind` does (address reuse, a backlog of 1,024), registered
        // with the reactor of the runtime that serves it.
        let listener = {
            let _entered = runtime.enter();
            let bind = || -> std::io::Result<TcpListener> {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
                socket.listen(1024)
            };
            bind()
                .map_err(|e| HarnessError::io(format!("binding {name} to 127.0.0.1:{port}"), e))?
        };
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io(format!("reading the address of {name}"), e))?;
        let task = runtime.spawn(accept_loop(name, listener, service));
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping the loop's JoinSet aborts the connection tasks too.
        self.task.abort();
    }
}

async fn accept_loop<S>(name: &'static str, listener: TcpListener, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let service = service.clone();
                    connections.spawn(async move {
                        let builder = AutoBuilder::new(TokioExecutor::new());
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        if let Err(error) = connection.await {
                            tracing::debug!(name, %peer, %error, "connection closed with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(name, %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
