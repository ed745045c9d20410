//! The real ingest-api binary under a stand-in Lambda Runtime API: the same router answers
//! API Gateway events.

use readings::auth::Scope;
use readings::testing::{event_with_key, FakeLambdaRuntime, TestDb, TestQueue};
use serde_json::Value;

#[tokio::test]
async fn binary_answers_api_gateway_events_under_lambda() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Ingest]).await;
    let good = event_with_key("ingest-post-one.json", &key);
    let mut bad = good.clone();
    bad["body"] = Value::String("{\"location\":\"\",\"temperature\":1}".into());
    let answers = FakeLambdaRuntime::invoke(
        env!("CARGO_BIN_EXE_ingest-api"),
        &[("QUEUE_URL", q.url()), ("DATABASE_URL", &db.config.url)],
        vec![good, bad],
    )
    .await;

    let (kind, response) = &answers[0];
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(response["statusCode"], 202, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["accepted"], 1);

    let (_, response) = &answers[1];
    assert_eq!(response["statusCode"], 400, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["details"][0]["field"], "location");

    assert_eq!(q.drain_readings().await, 1);
}
