//! The fault engine as tower middleware, for in-process stand-ins (the ferrokinesis router).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use super::{FaultController, engine};

/// A boxed error: the inner service's error, or [`super::ConnectionDropped`] when a fault drops
/// the connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps a service (e.g. an `axum::Router`) in the faults of a [`FaultController`].
#[derive(Clone, Debug)]
pub struct FaultLayer {
    controller: Arc<FaultController>,
}

impl FaultLayer {
    /// A layer applying `controller`'s rules.
    pub fn new(controller: Arc<FaultController>) -> Self {
        Self { controller }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            controller: self.controller.clone(),
        }
    }
}

/// The service built by [`FaultLayer`]. Its error closes the connection when served by hyper,
/// which is how a dropped connection is injected.
#[derive(Clone, Debug)]
pub struct FaultService<S> {
    inner: S,
    controller: Arc<FaultController>,
}

impl<S> Service<Request<Body>> for FaultService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call drives its own clone of the inner service to readiness (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let controller = self.controller.clone();
        Box::pin(async move {
            engine::apply(&controller, request, |request| async move {
                inner.oneshot(request).await.map_err(Into::into)
            })
            .await
        })
    }
}
