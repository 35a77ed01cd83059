//! A loopback HTTP proxy applying a [`FaultController`]'s faults in front of any stand-in.
//!
//! The proxy listens on `127.0.0.1:0` and forwards each call to the upstream endpoint with a
//! hyper client, keeping every header (the `Host` the client signed and the SigV4
//! `Authorization` included: the stand-ins check that a signature is present, not its value) and
//! streaming both bodies, so long-lived `SubscribeToShard` event streams pass through.

use std::sync::Arc;

use axum::body::Body;
use http::header::{CONNECTION, HeaderName};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::HarnessError;
use crate::fault::{FaultController, engine};
use crate::serve::{BoxError, Server};

/// Hop-by-hop headers, which a proxy must not forward (RFC 9110, section 7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A running fault proxy; dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    server: Server,
    endpoint: String,
    upstream: String,
    controller: Arc<FaultController>,
}

/// Where a proxy forwards: an `http://host:port` endpoint and a hyper client to it.
#[derive(Clone)]
pub(crate) struct Upstream {
    scheme: Scheme,
    authority: http::uri::Authority,
    client: Client<HttpConnector, Body>,
}

impl Upstream {
    /// `upstream`, which must be an `http://host:port` URL.
    pub(crate) fn parse(upstream: &str) -> Result<Self, HarnessError> {
        let invalid = |reason: &str| HarnessError::InvalidUpstream {
            url: upstream.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = upstream.parse().map_err(|_| invalid("not a URI"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(invalid("only http:// is supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        Ok(Self {
            scheme: Scheme::HTTP,
            authority,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (an `http://host:port` URL) applying `controller`'s faults.
    pub async fn start(
        upstream: &str,
        controller: Arc<FaultController>,
    ) -> Result<Self, HarnessError> {
        let target = Upstream::parse(upstream)?;

        let service_controller = controller.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let controller = service_controller.clone();
            let target = target.clone();
            async move {
                engine::apply(&controller, request.map(Body::new), |request| {
                    forward(target, request)
                })
                .await
            }
        });
        let server = Server::start("fault proxy", 0, service).await?;
        let endpoint = server.endpoint();
        tracing::debug!(%endpoint, upstream, "fault proxy started");
        Ok(Self {
            server,
            endpoint,
            upstream: upstream.to_owned(),
            controller,
        })
    }

    /// The proxy's endpoint, `http://127.0.0.1:<port>`: point SDK clients here.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The proxy's socket address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The upstream endpoint the proxy forwards to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The controller deciding the proxy's faults.
    pub fn faults(&self) -> &Arc<FaultController> {
        &self.controller
    }
}

/// Sends `request` to `upstream` (hop-by-hop headers removed both ways); an upstream that cannot be
/// reached is answered with 502.
pub(crate) async fn forward(
    upstream: Upstream,
    mut request: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or(PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path)
        .build()?;
    // HTTP/2 from the client is forwarded as HTTP/1.1; the client adds `Host` when absent.
    *request.version_mut() = Version::HTTP_11;
    strip_hop_by_hop(request.headers_mut());

    match upstream.client.request(request).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            strip_hop_by_hop(response.headers_mut());
            Ok(response)
        }
        Err(error) => {
            tracing::warn!(%error, "fault proxy: upstream request failed");
            let mut response =
                Response::new(Body::from(format!("upstream request failed: {error}")));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(CONNECTION);
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}
