//! query-api: `GET /sensor`, `/sensor/latest` and `/sensor/stats`, thin HTTP adapters over
//! [`readings::query`] and the store.

use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use readings::config::{AuthConfig, DbConfig, QueryConfig};
use readings::http::auth::{Auth, Scope};
use readings::http::{not_found, serve, ApiError};
use readings::postgres::store::{BucketStats, ErrorKind, Store, StoreError};
use readings::query::{
    parse_latest, parse_recent, parse_stats, Cursor, Format, ParamError, ReadingOut, StatsQuery,
};
use serde::Serialize;

/// The header that carries the cursor of the next page of `GET /sensor`.
pub const NEXT_CURSOR: &str = "next-cursor";

/// The query routes; each needs a key with the `query` scope.
pub fn router(store: Store, auth: &Auth) -> Router {
    let routes = Router::new()
        .route("/sensor", get(get_sensor).fallback(method_not_allowed))
        .route(
            "/sensor/latest",
            get(get_latest).fallback(method_not_allowed),
        )
        .route("/sensor/stats", get(get_stats).fallback(method_not_allowed));
    auth.protect(routes, Scope::Query)
        .fallback(not_found)
        .with_state(store)
        .layer(readings::http::catch_panic())
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        [(header::ALLOW, "GET, HEAD")],
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "the query routes answer GET only",
        ),
    )
}

fn bad_params(errors: Vec<ParamError>) -> ApiError {
    ApiError::bad_request("invalid query parameters").with_details(errors)
}

async fn get_sensor(
    State(store): State<Store>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = parse_recent(query.as_deref()).map_err(bad_params)?;
    let rows = store.recent(&params.query).await.map_err(store_error)?;
    // A full page may have more behind it: say where the next one starts.
    let next = (rows.len() as i64 == params.query.limit)
        .then(|| rows.last())
        .flatten()
        .map(|last| {
            Cursor {
                time: last.time,
                location: last.location.clone(),
            }
            .encode()
        });
    log("/sensor", rows.len(), started);
    let out: Vec<ReadingOut> = rows.into_iter().map(ReadingOut::from).collect();
    let mut response = respond(
        params.format,
        &out,
        &READING_FIELDS,
        READINGS_ATTACHMENT,
        readings_csv,
    );
    if let Some(cursor) = next.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(NEXT_CURSOR, cursor);
    }
    Ok(response)
}

async fn get_latest(
    State(store): State<Store>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = parse_latest(query.as_deref()).map_err(bad_params)?;
    let rows = store
        .latest(params.locations.as_deref())
        .await
        .map_err(store_error)?;
    log("/sensor/latest", rows.len(), started);
    let out: Vec<ReadingOut> = rows.into_iter().map(ReadingOut::from).collect();
    Ok(respond(
        params.format,
        &out,
        &READING_FIELDS,
        LATEST_ATTACHMENT,
        readings_csv,
    ))
}

/// One bucket of `/sensor/stats`: `bucket` is the bucket's start in epoch seconds.
#[derive(Debug, Serialize)]
struct BucketOut {
    bucket: i64,
    count: i64,
    avg: f64,
    min: f64,
    max: f64,
}

impl From<BucketStats> for BucketOut {
    fn from(b: BucketStats) -> Self {
        BucketOut {
            bucket: b.bucket.timestamp(),
            count: b.count,
            avg: b.avg,
            min: b.min,
            max: b.max,
        }
    }
}

async fn get_stats(
    State(store): State<Store>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = parse_stats(query.as_deref(), chrono::Utc::now()).map_err(bad_params)?;
    let rows = store
        .stats(&StatsQuery {
            bucket_secs: p.bucket.seconds(),
            since: p.since,
            until: p.until,
            location: p.location,
        })
        .await
        .map_err(store_error)?;
    log("/sensor/stats", rows.len(), started);
    let out: Vec<BucketOut> = rows.into_iter().map(BucketOut::from).collect();
    Ok(respond(
        p.format,
        &out,
        &BUCKET_FIELDS,
        STATS_ATTACHMENT,
        |w, b: &BucketOut| {
            w.write_record([
                b.bucket.to_string(),
                b.count.to_string(),
                b.avg.to_string(),
                b.min.to_string(),
                b.max.to_string(),
            ])
        },
    ))
}

const READING_FIELDS: [&str; 3] = ["time", "location", "temperature"];
const BUCKET_FIELDS: [&str; 5] = ["bucket", "count", "avg", "min", "max"];

/// `Content-Disposition` of each route's CSV: a download, with a name that says what it is.
const READINGS_ATTACHMENT: &str = r#"attachment; filename="sensor-readings.csv""#;
const LATEST_ATTACHMENT: &str = r#"attachment; filename="sensor-latest.csv""#;
const STATS_ATTACHMENT: &str = r#"attachment; filename="sensor-stats.csv""#;

fn readings_csv(w: &mut csv::Writer<Vec<u8>>, r: &ReadingOut) -> csv::Result<()> {
    w.write_record([
        r.time.to_string(),
        text_cell(&r.location),
        r.temperature.to_string(),
    ])
}

/// A text cell that a spreadsheet will not run: one that begins with `=`, `+`, `-`, `@`,
/// a tab or a carriage return gets a leading `'`, as OWASP's CSV-injection guidance says,
/// so Excel, LibreOffice and Google Sheets show it as text instead of evaluating a formula.
/// Only for text: numbers are written as they are (a negative temperature stays a number).
fn text_cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// JSON, or CSV with a header row named after the JSON fields, sent with the
/// `Content-Disposition` given (one of the `*_ATTACHMENT` constants).
fn respond<T: Serialize>(
    format: Format,
    rows: &[T],
    header: &[&str],
    disposition: &'static str,
    record: impl Fn(&mut csv::Writer<Vec<u8>>, &T) -> csv::Result<()>,
) -> Response {
    match format {
        Format::Json => Json(rows).into_response(),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let written = w
                .write_record(header)
                .and_then(|_| rows.iter().try_for_each(|r| record(&mut w, r)));
            match written
                .map_err(|e| e.to_string())
                .and_then(|_| w.into_inner().map_err(|e| e.to_string()))
            {
                Ok(bytes) => {
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/csv; charset=utf-8"),
                    );
                    headers.insert(
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static(disposition),
                    );
                    (headers, bytes).into_response()
                }
                Err(e) => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("CSV encoding failed: {e}"),
                )
                .into_response(),
            }
        }
    }
}

fn log(route: &'static str, rows: usize, started: Instant) {
    tracing::info!(
        route,
        rows,
        duration_ms = started.elapsed().as_millis() as u64,
        "query answered"
    );
}

/// What a failed query answers: 503 with `Retry-After` for what passes (no connection free,
/// the database restarting or unreachable, a schema not migrated yet: [`ErrorKind::Transient`]),
/// 500 for the rest.
fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "query failed");
    match (&e, e.kind()) {
        (StoreError::SchemaBehind(_), _) => {
            ApiError::unavailable("the database schema is not migrated yet; retry later", 5)
        }
        (_, ErrorKind::Transient) => {
            ApiError::unavailable("the database is unavailable; retry later", 2)
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the query failed"),
    }
}

/// Builds the function from the environment and serves it (Lambda or local HTTP).
pub async fn run() -> anyhow::Result<()> {
    readings::observability::metrics::init()?;
    let config = QueryConfig::from_env()?;
    let store = Store::new(&DbConfig::load().await?)?;
    store.check_at_start().await?;
    let auth = Auth::new(&AuthConfig::from_env()?, store.clone());
    tracing::info!("query-api starting");
    serve(router(store, &auth), config.addr).await
}
