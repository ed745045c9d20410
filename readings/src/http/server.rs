//! The local host of the HTTP functions (what [`crate::http::serve`] runs when not under
//! Lambda): an axum router served over HTTP/1.1 with bounded resources.
//!
//! - **Slow headers**: hyper closes a connection whose request headers take longer than
//!   `header_timeout` (which also closes idle keep-alive connections after that long).
//! - **Slow bodies**: reading a request's body may take `body_timeout` in all; then the body
//!   fails and the request is answered 408 (JSON, `Connection: close`), whatever the
//!   handler made of the failed read.
//! - **Concurrency**: at most `max_concurrent_requests` requests are handled at once
//!   (tower's `ConcurrencyLimit`); beyond that `LoadShed` answers 503 with `Retry-After`
//!   at once instead of queueing.
//! - **Shutdown**: when the shutdown future completes (SIGTERM or Ctrl-C in the binaries),
//!   the listener is closed, hyper-util's `GracefulShutdown` lets each connection finish
//!   its request in flight and closes idle ones, for at most `shutdown_grace`; connections
//!   still busy then are cut off.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceBuilder;

use crate::config::HttpConfig;
use crate::http::error::ApiError;

/// How long a client refused for load is asked to wait (`Retry-After`, seconds).
pub const OVERLOAD_RETRY_AFTER_SECS: u32 = 1;

/// Serves `router` on `listener` within `config`'s bounds until `shutdown` completes, then
/// drains requests in flight for at most `config.shutdown_grace`.
pub async fn serve_with(
    router: Router,
    listener: TcpListener,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| anyhow::anyhow!("the listener has no local address: {e}"))?;
    tracing::info!(
        %addr,
        header_timeout_secs = config.header_timeout.as_secs_f64(),
        body_timeout_secs = config.body_timeout.as_secs_f64(),
        max_concurrent_requests = config.max_concurrent_requests,
        "listening"
    );
    let service = ServiceBuilder::new()
        .map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(Body::new))
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(config.max_concurrent_requests)
        .layer(axum::middleware::from_fn_with_state(
            config.body_timeout,
            body_deadline,
        ))
        .service(router);

    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            // Shutdown first: once asked, no connection is accepted any more.
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let conn = http1.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let grace = config.shutdown_grace;
    tracing::info!(
        connections = connections.len(),
        grace_secs = grace.as_secs_f64(),
        "no longer accepting connections; finishing requests in flight"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("every connection finished"),
        Err(_) => tracing::warn!(
            connections = connections.len(),
            grace_secs = grace.as_secs_f64(),
            "requests still in flight after the shutdown grace period are cut off"
        ),
    }
    connections.shutdown().await;
    Ok(())
}

/// What the load-shedding layer's refusal becomes: a JSON 503 with `Retry-After`.
async fn overloaded(error: BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::unavailable(
            "too many requests in progress; retry later",
            OVERLOAD_RETRY_AFTER_SECS,
        )
    } else {
        tracing::error!(error = %error, "request failed in the HTTP host");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the request could not be answered",
        )
    }
}

/// Gives the request's body `limit` to arrive in all; when it does not, the answer is 408.
async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            limit,
            deadline: None,
            expired: expired.clone(),
        })
    });
    let response = next.run(req).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    tracing::info!(
        limit_secs = limit.as_secs_f64(),
        "request body too slow; answered 408"
    );
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("the request body did not arrive within {limit:?}"),
    )
    .into_response();
    // The rest of the body may still be on its way: do not read it as the next request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once `limit` has passed since it was first read.
struct DeadlineBody {
    inner: Body,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimedOut(Duration);

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(deadline.as_mut().poll(cx));
        this.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
