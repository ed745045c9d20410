//! The sample API Gateway events in events/ run through the router as Lambda would deliver
//! them, so they never rot.

use lambda_http::request::from_str;
use readings::auth::Auth;
use readings::testing::{event, TestDb};
use serde_json::Value;
use tower::ServiceExt;

#[tokio::test]
async fn sample_get_events_answer() {
    let db = TestDb::new().await;
    db.insert(&[
        (1_678_882_392_000_000, "bedroom", 66.0),
        (1_678_882_393_000_000, "kitchen", 71.5),
    ])
    .await;
    let app = query_api::router(db.store.clone(), &Auth::Off);
    // As the Lambda host serves it: named stages are stripped from the path.
    let app = app.map_request(readings::http::strip_stage::<lambda_http::Body>);
    for (file, rows) in [
        ("query-get.json", 2),
        ("query-get-params.json", 1),
        ("query-get-named-stage.json", 1),
    ] {
        let request = from_str(&event(file).to_string()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{file}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.as_array().unwrap().len(), rows, "{file}: {body}");
    }
}
