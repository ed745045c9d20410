//! The batch-writer binary under Lambda takes its database connection from the Secrets
//! Manager secret `DATABASE_SECRET_ARN` names (moto), read at cold start.

use readings::testing::{event, function_binary, FakeLambdaRuntime, TestDb};
use serde_json::json;

#[tokio::test]
async fn binary_connects_with_the_secret_under_lambda() {
    let db = TestDb::new().await;
    let arn = readings::postgres::secrets::client()
        .await
        .create_secret()
        .name(format!("writer-{}", db.name))
        .secret_string(&db.config.url)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("secret arn");

    let answers = FakeLambdaRuntime::invoke(
        &function_binary(env!("CARGO_BIN_EXE_batch-writer")),
        &[
            ("DATABASE_SECRET_ARN", &arn),
            // The secret wins over a DATABASE_URL that leads nowhere.
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
        ],
        vec![event("sqs-batch.json")],
    )
    .await;
    let (kind, response) = &answers[0];
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(response, &json!({"batchItemFailures": []}));
    assert_eq!(db.count().await, 6);
}
