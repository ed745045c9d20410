//! The real ingest-api binary under a stand-in Lambda Runtime API: the same router answers
//! API Gateway events.

use readings::testing::{FakeLambdaRuntime, TestQueue};
use serde_json::Value;

#[tokio::test]
async fn binary_answers_api_gateway_events_under_lambda() {
    let q = TestQueue::new().await;
    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/ingest-post-one.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut bad = event.clone();
    bad["body"] = Value::String("{\"location\":\"\",\"temperature\":1}".into());
    let mut runtime = FakeLambdaRuntime::start(vec![event, bad]).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest-api"))
        .envs(runtime.env())
        .env("QUEUE_URL", q.url())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (kind, response) = runtime.next_response().await;
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(response["statusCode"], 202, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["accepted"], 1);

    let (_, response) = runtime.next_response().await;
    assert_eq!(response["statusCode"], 400, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["details"][0]["field"], "location");

    child.kill().await.unwrap();
    assert_eq!(q.drain_readings().await, 1);
}
