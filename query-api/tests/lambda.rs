//! The real query-api binary under a stand-in Lambda Runtime API.

use readings::auth::Scope;
use readings::testing::{event_with_key, FakeLambdaRuntime, TestDb};
use serde_json::{json, Value};

#[tokio::test]
async fn binary_answers_api_gateway_events_under_lambda() {
    let db = TestDb::new().await;
    db.insert(&[(1_678_925_592_000_000, "bedroom", 66.0)]).await;
    let key = db.api_key(&[Scope::Query]).await;
    let answers = FakeLambdaRuntime::invoke(
        env!("CARGO_BIN_EXE_query-api"),
        &[("DATABASE_URL", &db.config.url)],
        vec![
            event_with_key("query-get.json", &key),
            event_with_key("query-get-named-stage.json", &key),
        ],
    )
    .await;
    let (kind, response) = &answers[1];
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(
        response["statusCode"], 200,
        "a named stage is stripped: {response}"
    );
    let (kind, response) = &answers[0];
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!([{"time": 1678925592, "location": "bedroom", "temperature": 66.0}])
    );
}
