//! query-api: `GET /sensor`, a thin HTTP adapter over [`readings::query`] and the store.

use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use readings::config::{DbConfig, QueryConfig};
use readings::http::{not_found, serve, ApiError};
use readings::query::{parse_recent, ReadingOut};
use readings::store::{Store, StoreError};

/// The query routes.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/sensor", get(get_sensor).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(store)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "use GET /sensor to read readings",
    )
}

async fn get_sensor(
    State(store): State<Store>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ReadingOut>>, ApiError> {
    let started = Instant::now();
    let q = parse_recent(query.as_deref())
        .map_err(|errors| ApiError::bad_request("invalid query parameters").with_details(errors))?;
    let rows = store.recent(&q).await.map_err(store_error)?;
    tracing::info!(
        rows = rows.len(),
        duration_ms = started.elapsed().as_millis() as u64,
        "query answered"
    );
    Ok(Json(rows.into_iter().map(ReadingOut::from).collect()))
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "query failed");
    match e {
        StoreError::Pool(_) => ApiError::unavailable("the database is unavailable; retry later", 2),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the query failed"),
    }
}

/// Builds the function from the environment and serves it (Lambda or local HTTP).
pub async fn run() -> anyhow::Result<()> {
    let config = QueryConfig::from_env()?;
    let store = Store::new(&DbConfig::from_env()?)?;
    tracing::info!("query-api starting");
    serve(router(store), config.addr).await
}
