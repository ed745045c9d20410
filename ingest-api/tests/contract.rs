//! `POST /sensor` against its contract: schemathesis generates requests from `openapi.yaml`
//! (valid and invalid ones) and checks every answer against it; any 5xx fails.

use std::sync::Arc;

use readings::config::AuthConfig;
use readings::http::auth::{Auth, Scope};
use readings::ingest::Ingestor;
use readings::queue::Sender;
use readings::testing::{ingest_config, TestDb, TestQueue};

/// The router under test, built as `ingest_api::run` builds it, keys checked.
fn app(ingestor: Ingestor, db: &TestDb) -> axum::Router {
    let auth = Auth::new(&AuthConfig::default(), db.store.clone());
    ingest_api::router(Arc::new(ingestor), &auth)
}

#[tokio::test(flavor = "multi_thread")]
async fn post_sensor_keeps_the_openapi_contract() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let sender = Sender::new(q.client.clone(), &q.config)
        .await
        .expect("a sender for the test queue");
    let ingestor = Ingestor::new(ingest_config(), sender, db.store.clone());
    let key = db.api_key(&[Scope::Ingest]).await;
    let base = readings::testing::serve(app(ingestor, &db)).await;
    readings::testing::schemathesis(&base, "ingest", "examples,coverage,fuzzing", &key).await;
}
