//! The real query-api binary under a stand-in Lambda Runtime API.

use readings::envelope::{BatchPart, WireReading};
use readings::testing::{FakeLambdaRuntime, TestDb};
use serde_json::{json, Value};

#[tokio::test]
async fn binary_answers_api_gateway_events_under_lambda() {
    let db = TestDb::new().await;
    let seed = BatchPart {
        id: "seed".into(),
        part: 0,
        readings: vec![WireReading(1_678_925_592_000_000, "bedroom".into(), 66.0)],
    };
    db.store.write(&[&seed]).await.unwrap();
    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/query-get.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut runtime = FakeLambdaRuntime::start(vec![event]).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_query-api"))
        .envs(runtime.env())
        .env("DATABASE_URL", &db.config.url)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (kind, response) = runtime.next_response().await;
    child.kill().await.unwrap();
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!([{"time": 1678925592, "location": "bedroom", "temperature": 66.0}])
    );
}
