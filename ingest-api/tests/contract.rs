//! `POST /sensor` against its contract: schemathesis generates requests from `openapi.yaml`
//! (valid and invalid ones) and checks every answer against it; any 5xx fails.

use std::sync::Arc;

use readings::ingest::Ingestor;
use readings::queue::Sender;
use readings::testing::{ingest_config, TestDb, TestQueue};

/// A key with the `ingest` scope. Placeholder until API keys exist: the router does not check
/// keys yet; create a real one here when it does.
fn valid_key() -> String {
    "placeholder-ingest-key".into()
}

/// The router under test, built as `ingest_api::run` builds it.
fn app(ingestor: Ingestor) -> axum::Router {
    ingest_api::router(Arc::new(ingestor))
}

#[tokio::test(flavor = "multi_thread")]
async fn post_sensor_keeps_the_openapi_contract() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let sender = Sender::new(q.client.clone(), &q.config).await;
    let ingestor = Ingestor::new(ingest_config(), sender, db.store.clone());
    let base = readings::testing::serve(app(ingestor)).await;
    readings::testing::schemathesis(&base, "ingest", "examples,coverage,fuzzing", &valid_key())
        .await;
}
