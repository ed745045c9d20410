//! The JSON error shape every HTTP function answers with (`{"error", "details"}`), what
//! ingest's errors answer, the 404 for unknown routes, and the layer that turns a handler's
//! panic into a JSON 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use crate::ingest::IngestError;
use crate::queue::QueueError;

/// An error answer: `{"error": "...", "details": [...]}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub details: Option<Value>,
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    pub fn bad_request(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    /// A 503 for a dependency that is down; the client may retry after a while.
    pub fn unavailable(error: impl Into<String>, retry_after_secs: u32) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<Value>,
        }
        let body = Body {
            error: self.error,
            details: self.details,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let message = e.to_string();
        match e {
            IngestError::UnsupportedMediaType(_) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
            }
            IngestError::BodyTooLarge { .. } | IngestError::TooManyReadings { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
            }
            IngestError::Malformed { line, column, .. } => ApiError::bad_request(message)
                .with_details([json!({ "line": line, "column": column })]),
            IngestError::Invalid { details, .. } => {
                ApiError::bad_request(message).with_details(details)
            }
            IngestError::Shape(_) | IngestError::BadIdempotencyKey(_) => {
                ApiError::bad_request(message)
            }
            IngestError::KeyReused => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            IngestError::KeyStore(_) => {
                tracing::error!(error = %message, "idempotency check failed");
                ApiError::unavailable("the idempotency record is unavailable; retry later", 5)
            }
            IngestError::Queue(QueueError::Unavailable(_)) => {
                tracing::error!(error = %message, "enqueue failed");
                ApiError::unavailable("the queue is unavailable; retry later (send an Idempotency-Key header to make retries safe)", 5)
            }
            IngestError::Queue(QueueError::Rejected(_) | QueueError::Config(_))
            | IngestError::Envelope(_) => {
                tracing::error!(error = %message, "enqueue failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "readings could not be enqueued",
                )
            }
        }
    }
}

/// The layer every HTTP function puts around its router: a handler that panics answers
/// a JSON 500 (and logs the panic) instead of closing the client's connection unanswered.
pub fn catch_panic() -> tower_http::catch_panic::CatchPanicLayer<PanicResponse> {
    tower_http::catch_panic::CatchPanicLayer::custom(panic_response as PanicResponse)
}

/// What [`catch_panic`] answers a panic with.
pub type PanicResponse = fn(Box<dyn std::any::Any + Send + 'static>) -> Response;

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: the request could not be answered",
    )
    .into_response()
}

/// Answers unknown routes with a JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; see the README for the API",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500() {
        async fn boom() -> &'static str {
            let rows: Vec<u8> = Vec::new();
            if rows.is_empty() {
                panic!("row decoding failed");
            }
            "unreachable"
        }
        let app = Router::new().route("/", get(boom)).layer(catch_panic());
        let request = axum::http::Request::builder()
            .uri("/")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["error"],
            "internal error: the request could not be answered"
        );
    }
}
