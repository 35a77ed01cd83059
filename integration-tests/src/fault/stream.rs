//! Faults on a forwarded response's body: the event stream of `SubscribeToShard` lasts minutes,
//! so a connection can fail long after the response's status and headers went out.
//!
//! ```text
//!  stand-in body ──frames──▶ StreamFault ──frames──▶ client     (until the deadline)
//!                                 │ deadline (tokio Sleep, from when the response is returned)
//!                                 ├─ Cut:   Err(ConnectionDropped): hyper aborts the connection
//!                                 └─ Stall: inner body dropped, Pending forever: a silent stream
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use super::ConnectionDropped;
use crate::serve::BoxError;

/// What happens to a response body once its deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The body fails: the connection is dropped mid-body.
    Cut,
    /// The body never yields another frame nor ends: the connection stays open, silent.
    Stall,
}

/// A stream fault decided for one call: how `end` happens `after` the response is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamPlan {
    pub(crate) end: StreamEnd,
    pub(crate) after: Duration,
}

impl StreamPlan {
    /// Wraps `body` so that it passes frames through until the deadline, then ends as planned.
    /// The deadline starts now, so call this when the response is returned.
    pub(crate) fn wrap(self, body: Body) -> Body {
        Body::new(StreamFault {
            phase: Phase::Passing(body),
            deadline: Box::pin(tokio::time::sleep(self.after)),
            end: self.end,
        })
    }
}

enum Phase {
    /// Before the deadline: the inner body's frames pass through.
    Passing(Body),
    /// The inner body ended (or failed) before the deadline, or the cut error was yielded.
    Finished,
    /// Stalled: nothing more, ever.
    Stalled,
}

/// A response body that ends as its [`StreamEnd`] says once its deadline passes.
struct StreamFault {
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    end: StreamEnd,
}

impl HttpBody for StreamFault {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // The deadline is checked first, so frames the inner body has ready at the deadline are
        // not delivered: the fault happens on time even if the stand-in runs ahead.
        if matches!(this.phase, Phase::Passing(_)) && this.deadline.as_mut().poll(cx).is_ready() {
            match this.end {
                StreamEnd::Cut => {
                    tracing::debug!("injected fault: response stream cut");
                    this.phase = Phase::Finished;
                    return Poll::Ready(Some(Err(Box::new(ConnectionDropped))));
                }
                StreamEnd::Stall => {
                    // Dropping the inner body stops the stand-in producing the stream.
                    tracing::debug!("injected fault: response stream stalled");
                    this.phase = Phase::Stalled;
                }
            }
        }
        match &mut this.phase {
            Phase::Passing(inner) => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(error))) => {
                    this.phase = Phase::Finished;
                    Poll::Ready(Some(Err(Box::new(error))))
                }
                Poll::Ready(None) => {
                    this.phase = Phase::Finished;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            Phase::Finished => Poll::Ready(None),
            // Never woken: the body stays pending until the client or the server goes away.
            Phase::Stalled => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.phase {
            Phase::Passing(inner) => inner.is_end_stream(),
            Phase::Finished => true,
            Phase::Stalled => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.phase {
            Phase::Passing(inner) => inner.size_hint(),
            Phase::Finished | Phase::Stalled => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{Request, Response};
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::time::{Instant, Interval, timeout};

    use super::*;
    use crate::fault::engine;
    use crate::fault::{Fault, FaultController, FaultKind, FaultRule, Injected};
    use crate::serve::Server;

    const SUBSCRIBE: &str = "SubscribeToShard";
    const TICK: Duration = Duration::from_millis(10);

    /// A slow streaming body: one small chunk every [`TICK`] (the first at once), `chunks` in all.
    /// It holds a clone of an `Arc`, to tell when it is dropped.
    struct Ticks {
        interval: Interval,
        left: usize,
        _alive: Arc<()>,
    }

    impl HttpBody for Ticks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            match self.interval.poll_tick(cx) {
                Poll::Ready(_) => {
                    self.left -= 1;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"event")))))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }

    fn ticks(chunks: usize, alive: Arc<()>) -> Body {
        Body::new(Ticks {
            interval: tokio::time::interval(TICK),
            left: chunks,
            _alive: alive,
        })
    }

    fn subscribe_request() -> Request<Body> {
        Request::builder()
            .uri("/")
            .header("x-amz-target", "Kinesis_20131202.SubscribeToShard")
            .body(Body::empty())
            .expect("valid request")
    }

    /// Runs a `SubscribeToShard` call through the engine, the stand-in answering with
    /// `chunks` ticks.
    async fn subscribe(controller: &FaultController, chunks: usize) -> Response<Body> {
        subscribe_alive(controller, chunks, Arc::new(())).await
    }

    /// [`subscribe`], the stand-in's body holding a clone of `alive`.
    async fn subscribe_alive(
        controller: &FaultController,
        chunks: usize,
        alive: Arc<()>,
    ) -> Response<Body> {
        engine::apply(controller, subscribe_request(), move |_| async move {
            Ok(Response::new(ticks(chunks, alive)))
        })
        .await
        .expect("the response goes out")
    }

    /// Reads frames until the body ends, fails, or stays silent for `silence`: the count of
    /// data frames and how it stopped.
    async fn read(body: &mut Body, silence: Duration) -> (usize, Result<bool, BoxError>) {
        let mut frames = 0;
        loop {
            match timeout(silence, body.frame()).await {
                Ok(Some(Ok(_))) => frames += 1,
                Ok(Some(Err(error))) => return (frames, Err(error.into())),
                Ok(None) => return (frames, Ok(true)),
                Err(_) => return (frames, Ok(false)),
            }
        }
    }

    fn caused_by_a_dropped_connection(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(error) = current {
            if error.is::<ConnectionDropped>() {
                return true;
            }
            current = error.source();
        }
        false
    }

    #[tokio::test]
    async fn a_cut_stream_passes_frames_then_fails() {
        let controller = FaultController::new(1);
        controller.add(
            FaultRule::on(
                SUBSCRIBE,
                Fault::cut_stream_after(Duration::from_millis(50)),
            )
            .first(1),
        );

        let started = Instant::now();
        let response = subscribe(&controller, 100).await;
        assert!(response.status().is_success());
        let (frames, end) = read(&mut response.into_body(), Duration::from_secs(5)).await;
        let error = end.expect_err("the body fails");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!((1..100).contains(&frames), "{frames} frames before the cut");
        assert!(
            caused_by_a_dropped_connection(&*error),
            "unexpected error: {error}"
        );

        // Only the first call is cut.
        let response = subscribe(&controller, 3).await;
        let (frames, end) = read(&mut response.into_body(), Duration::from_secs(5)).await;
        assert_eq!((frames, end.ok()), (3, Some(true)));

        assert_eq!(controller.injected(FaultKind::CutStream), 1);
        assert_eq!(controller.injected(FaultKind::StallStream), 0);
        assert_eq!(controller.calls(SUBSCRIBE), 2);
        let history = controller.history();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].call, 1);
        assert_eq!(history[0].operation, SUBSCRIBE);
        assert_eq!(
            history[0].fault,
            Injected::CutStream(Duration::from_millis(50))
        );
    }

    #[tokio::test]
    async fn a_stalled_stream_passes_frames_then_stays_silent() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on(
            SUBSCRIBE,
            Fault::stall_stream_after(Duration::from_millis(50)),
        ));

        let alive = Arc::new(());
        let response = subscribe_alive(&controller, 100, alive.clone()).await;
        let mut body = response.into_body();
        let (frames, end) = read(&mut body, Duration::from_millis(300)).await;
        assert_eq!(end.ok(), Some(false), "the body stays open and silent");
        assert!(
            (1..100).contains(&frames),
            "{frames} frames before the stall"
        );
        assert!(!body.is_end_stream());
        assert!(
            timeout(Duration::from_millis(300), body.frame())
                .await
                .is_err()
        );
        assert_eq!(
            Arc::strong_count(&alive),
            1,
            "the stand-in's body is dropped"
        );

        assert_eq!(controller.injected(FaultKind::StallStream), 1);
        assert_eq!(controller.injected(FaultKind::CutStream), 0);
    }

    #[tokio::test]
    async fn a_stream_ending_before_the_deadline_ends_normally() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on(
            SUBSCRIBE,
            Fault::cut_stream_after(Duration::from_secs(5)),
        ));
        let response = subscribe(&controller, 3).await;
        let (frames, end) = read(&mut response.into_body(), Duration::from_secs(1)).await;
        assert_eq!((frames, end.ok()), (3, Some(true)));
        // The fault was decided (and counted) even though the stream ended first.
        assert_eq!(controller.injected(FaultKind::CutStream), 1);
    }

    /// A loopback server answering every call with a slow stream, through `controller`'s faults.
    async fn serve(controller: Arc<FaultController>) -> Server {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let controller = controller.clone();
            async move {
                engine::apply(&controller, request.map(Body::new), |_| async move {
                    Ok(Response::new(ticks(100, Arc::new(()))))
                })
                .await
            }
        });
        Server::start("stream fault test", 0, service)
            .await
            .expect("the test server starts")
    }

    #[tokio::test]
    async fn over_http_a_cut_stream_aborts_the_connection_mid_body() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on(
            SUBSCRIBE,
            Fault::cut_stream_after(Duration::from_millis(50)),
        ));
        let server = serve(controller.clone()).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
        let mut request = subscribe_request();
        *request.uri_mut() = format!("{}/", server.endpoint())
            .parse()
            .expect("valid URI");

        let response = client.request(request).await.expect("the headers arrive");
        assert!(response.status().is_success());
        let mut body = Body::new(response.into_body());
        let (frames, end) = read(&mut body, Duration::from_secs(5)).await;
        assert!((1..100).contains(&frames), "{frames} frames before the cut");
        // hyper closes the connection before the last chunk: the client reads an early EOF.
        assert!(end.is_err(), "the client sees the connection end mid-body");
        assert_eq!(controller.injected(FaultKind::CutStream), 1);
    }

    #[tokio::test]
    async fn over_http_a_stalled_stream_keeps_the_connection_silent() {
        let controller = FaultController::new(1);
        controller.add(FaultRule::on(
            SUBSCRIBE,
            Fault::stall_stream_after(Duration::from_millis(50)),
        ));
        let server = serve(controller.clone()).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
        let mut request = subscribe_request();
        *request.uri_mut() = format!("{}/", server.endpoint())
            .parse()
            .expect("valid URI");

        let response = client.request(request).await.expect("the headers arrive");
        let mut body = Body::new(response.into_body());
        let (frames, end) = read(&mut body, Duration::from_millis(300)).await;
        assert!(
            (1..100).contains(&frames),
            "{frames} frames before the stall"
        );
        assert_eq!(
            end.ok(),
            Some(false),
            "the connection stays open and silent"
        );
    }
}
