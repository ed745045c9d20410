//! ingest-api: `POST /sensor`, a thin HTTP adapter over [`readings::ingest`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use readings::config::{in_lambda, AuthConfig, DbConfig, IngestConfig, QueueConfig};
use readings::http::auth::{Auth, KeyId, Scope};
use readings::http::{not_found, serve, ApiError};
use readings::ingest::{Accepted, IngestError, Ingestor};
use readings::observability::{metrics, telemetry};
use readings::queue::{self, Sender};
use readings::Store;

/// The header a client sets to make retries of one request safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The ingest routes; `POST /sensor` needs a key with the `ingest` scope.
pub fn router(ingestor: Arc<Ingestor>, auth: &Auth) -> Router {
    let routes = Router::new().route("/sensor", post(post_sensor).fallback(method_not_allowed));
    auth.protect(routes, Scope::Ingest)
        .fallback(not_found)
        .with_state(ingestor)
        .layer(readings::http::catch_panic())
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        [(header::ALLOW, "POST")],
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST /sensor to send readings",
        ),
    )
}

async fn post_sensor(
    State(ingestor): State<Arc<Ingestor>>,
    key: Option<Extension<KeyId>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let started = Instant::now();
    let tenant = key.as_ref().map(|Extension(KeyId(id))| id.as_str());
    let result = ingest(&ingestor, tenant, &headers, body).await;
    let ms = telemetry::duration_ms(started.elapsed());
    match &result {
        Ok(a) => {
            tracing::info!(accepted = a.accepted, messages = a.messages,
                batch_id = %a.batch_id, duration_ms = ms, "readings enqueued");
            metrics::readings_accepted(a.accepted, a.messages, &a.batch_id);
        }
        Err(e) => {
            tracing::info!(status = e.status.as_u16(), error = %e.error, duration_ms = ms, "request refused");
            metrics::request_rejected(e.status.as_u16());
        }
    }
    result.map(|a| (StatusCode::ACCEPTED, Json(a)))
}

async fn ingest(
    ingestor: &Ingestor,
    tenant: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::bad_request(format!("header {name} is not valid text")))
            })
            .transpose()
    };
    let content_type = text(header::CONTENT_TYPE.as_str())?;
    let key = text(IDEMPOTENCY_KEY)?;
    let limit = ingestor.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| IngestError::BodyTooLarge { limit })?;
    Ok(ingestor.ingest(content_type, tenant, key, &bytes).await?)
}

/// Builds the function from the environment and serves it (Lambda or local HTTP).
pub async fn run() -> anyhow::Result<()> {
    metrics::init()?;
    let config = IngestConfig::from_env()?;
    let queue_config = QueueConfig::from_env()?;
    let sender = Sender::new(queue::client().await, &queue_config).await?;
    // API keys and Idempotency-Keys live in the database; connections open lazily.
    let store = Store::new(&DbConfig::load().await?)?;
    store.check_at_start().await?;
    let auth = Auth::new(&AuthConfig::from_env()?, store.clone());
    tracing::info!(queue = %queue_config.queue_url, max_message_bytes = sender.max_message_bytes(), "ingest-api starting");
    let addr = config.addr;
    let linger = config.coalesce_linger;
    let mut ingestor = Ingestor::new(config, sender, store);
    if !in_lambda() && !linger.is_zero() {
        ingestor = ingestor.with_coalescing(linger);
    }
    serve(router(Arc::new(ingestor), &auth), addr).await
}
