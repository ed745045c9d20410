//! The real batch-writer binary under a stand-in Lambda Runtime API: SQS events in, batch
//! item failures out.

use readings::testing::{FakeLambdaRuntime, TestDb};
use serde_json::{json, Value};

#[tokio::test]
async fn binary_reports_batch_item_failures_under_lambda() {
    let db = TestDb::new().await;
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/sqs-batch.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut poison = event["Records"][0].clone();
    poison["messageId"] = json!("poison-1");
    poison["body"] = json!("{\"v\":99}");
    event["Records"].as_array_mut().unwrap().push(poison);

    let mut runtime = FakeLambdaRuntime::start(vec![event]).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_batch-writer"))
        .envs(runtime.env())
        .env("DATABASE_URL", &db.config.url)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (kind, response) = runtime.next_response().await;
    child.kill().await.unwrap();
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "poison-1"}]})
    );
    assert_eq!(db.count().await, 6);
}
