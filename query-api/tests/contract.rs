//! The query routes against their contract: schemathesis generates requests from
//! `openapi.yaml` (valid and invalid ones) and checks every answer against it; any 5xx fails.

use readings::config::AuthConfig;
use readings::http::auth::{Auth, Scope};
use readings::testing::TestDb;
use readings::Store;

/// The router under test, built as `query_api::run` builds it, keys checked.
fn app(store: Store) -> axum::Router {
    let auth = Auth::new(&AuthConfig::default(), store.clone());
    query_api::router(store, &auth)
}

#[tokio::test(flavor = "multi_thread")]
async fn query_routes_keep_the_openapi_contract() {
    let db = TestDb::new().await;
    // Readings for every route to return: four locations, two of them names CSV must quote,
    // every 15 minutes over the 50 hours before now, so that /sensor/stats's default range
    // (the last 24 hours) finds some.
    let now = chrono::Utc::now().timestamp_micros();
    let locations = ["attic", "living room", "Küche, 2.OG", "say \"hi\""];
    let rows: Vec<(i64, &str, f64)> = (0..200)
        .map(|i: i64| {
            let time = now - i * 900_000_000 - 123_456;
            (
                time,
                locations[i as usize % locations.len()],
                (i % 50) as f64 - 10.25,
            )
        })
        .collect();
    db.insert(&rows).await;
    let key = db.api_key(&[Scope::Query]).await;
    let base = readings::testing::serve(app(db.store.clone())).await;
    readings::testing::schemathesis(&base, "query", "examples,coverage,fuzzing,stateful", &key)
        .await;
}
