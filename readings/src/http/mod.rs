//! What the two HTTP functions share: the host that serves an axum router either under
//! Lambda or as a local HTTP service, and the JSON error shape.
//!
//! Each host has its module: the Lambda host in [`lambda`], the local one in [`server`]; the
//! JSON errors are in `error` (re-exported here); the API-key layer that guards the routes
//! is in [`auth`].

pub mod auth;
mod error;
pub mod lambda;
pub mod server;

pub use error::{catch_panic, not_found, ApiError, PanicResponse};

use std::net::SocketAddr;

use axum::Router;

use crate::config::{in_lambda, HttpConfig};

/// Serves `router` under Lambda when `AWS_LAMBDA_RUNTIME_API` is set (every API Gateway,
/// ALB and function URL payload shape, named stages stripped from paths: see
/// [`crate::http::lambda::serve`]), else over HTTP on `addr` within the
/// bounds of [`HttpConfig::from_env`] until Ctrl-C or SIGTERM (see [`crate::http::server`]).
pub async fn serve(router: Router, addr: SocketAddr) -> anyhow::Result<()> {
    if in_lambda() {
        crate::http::lambda::serve(router).await
    } else {
        let config = HttpConfig::from_env()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        crate::http::server::serve_with(
            router,
            listener,
            &config,
            crate::observability::telemetry::shutdown_signal(),
        )
        .await
    }
}

/// Serves `router` on an already bound listener, with the default bounds
/// ([`HttpConfig::default`]), until Ctrl-C or SIGTERM.
pub async fn serve_on(router: Router, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    crate::http::server::serve_with(
        router,
        listener,
        &HttpConfig::default(),
        crate::observability::telemetry::shutdown_signal(),
    )
    .await
}
