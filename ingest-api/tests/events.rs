//! The sample API Gateway events in events/ run through the router as Lambda would deliver
//! them, so they never rot.

use readings::auth::Auth;
use std::sync::Arc;

use lambda_http::request::from_str;
use readings::ingest::Ingestor;
use readings::queue::Sender;
use readings::testing::{event, TestDb, TestQueue};
use serde_json::Value;
use tower::ServiceExt;

#[tokio::test]
async fn sample_post_events_are_accepted() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let sender = Sender::new(q.client.clone(), &q.config).await;
    let config = readings::testing::ingest_config();
    let app = ingest_api::router(
        Arc::new(Ingestor::new(config, sender, db.store.clone())),
        &Auth::Off,
    );
    let mut expected = 0;
    for (file, readings) in [
        ("ingest-post-one.json", 1),
        ("ingest-post-batch.json", 3),
        ("ingest-post-ndjson.json", 2),
    ] {
        let request = from_str(&event(file).to_string()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 202, "{file}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["accepted"], readings, "{file}");
        expected += readings;
    }
    assert_eq!(q.drain_readings().await, expected);
}
