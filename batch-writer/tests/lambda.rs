//! The real batch-writer binary under a stand-in Lambda Runtime API: SQS events in, batch
//! item failures out.
//!
//! The binary is cargo's, or with `BOOTSTRAP_DIR` set the `bootstrap` that `sam build` made
//! (`readings::testing::function_binary`; scripts/test runs these tests both ways).

use readings::testing::{event, function_binary, FakeLambdaRuntime, TestDb};
use serde_json::json;

#[tokio::test]
async fn binary_reports_batch_item_failures_under_lambda() {
    let db = TestDb::new().await;
    let mut sqs = event("sqs-batch.json");
    let mut poison = sqs["Records"][0].clone();
    poison["messageId"] = json!("poison-1");
    poison["body"] = json!("{\"v\":99}");
    sqs["Records"].as_array_mut().unwrap().push(poison);

    let answers = FakeLambdaRuntime::invoke(
        &function_binary(env!("CARGO_BIN_EXE_batch-writer")),
        &[("DATABASE_URL", &db.config.url)],
        vec![sqs],
    )
    .await;
    let (kind, response) = &answers[0];
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(
        response,
        &json!({"batchItemFailures": [{"itemIdentifier": "poison-1"}]})
    );
    assert_eq!(db.count().await, 6);
}
