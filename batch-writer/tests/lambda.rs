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

/// A batch of one fresh version-2 message, as the event source mapping delivers it.
fn one_message(id: &str) -> serde_json::Value {
    let body =
        readings::model::envelope::pack(id, &readings::testing::sample_readings(id, 3), 262_144)
            .unwrap()
            .remove(0);
    let mut sqs = event("sqs-batch.json");
    let mut record = sqs["Records"][0].clone();
    record["messageId"] = json!(id);
    record["body"] = json!(body);
    sqs["Records"] = json!([record]);
    sqs
}

/// Sessions of `app` that are doing something (or waiting) on the server.
async fn busy_sessions(c: &tokio_postgres::Client, app: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'",
        &[&app],
    )
    .await
    .unwrap()
    .get(0)
}

/// Lambda freezes a sandbox once an invocation has answered: nothing of the writer's may
/// still run then, holding a transaction or waiting on a lock. Maintenance (which here
/// would wait on a lock another session holds) is an invocation of its own, done by the
/// time it answers.
#[tokio::test]
async fn nothing_runs_after_an_invocation_answers_and_maintenance_is_an_invocation_of_its_own() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ingest_batches (batch_id, part, written_at)
         SELECT 'old-' || i, 0, now() - interval '30 days' FROM generate_series(1, 50) i",
    )
    .await
    .unwrap();
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE ingest_batches IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let url = format!("{}?application_name=frozen-writer", db.config.url);
    let binary = function_binary(env!("CARGO_BIN_EXE_batch-writer"));

    let mut runtime = FakeLambdaRuntime::start(vec![one_message("m-1")]).await;
    let mut child = tokio::process::Command::new(&binary)
        .envs(runtime.env())
        .env("DATABASE_URL", &url)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (kind, response) = runtime.next_response().await;
    assert!(kind.starts_with("response:"), "{kind}: {response}");
    assert_eq!(db.count().await, 3);
    // The sandbox is frozen now. Whatever the function left running would stay so.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(busy_sessions(&c, "frozen-writer").await, 0);
    child.kill().await.unwrap();

    // Maintenance runs when invoked for it, and is done when the invocation answers.
    blocker.batch_execute("COMMIT").await.unwrap();
    let answers = FakeLambdaRuntime::invoke(
        &binary,
        &[("DATABASE_URL", &url)],
        vec![json!({"maintenance": true})],
    )
    .await;
    assert_eq!(answers[0].1, json!({"maintenance": "done"}), "{answers:?}");
    let left: i64 = c
        .query_one("SELECT count(*) FROM ingest_batches", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "old batch records pruned");
}

/// CloudFormation's request, as the template's SchemaMigration custom resource sends it.
fn cloudformation(request_type: &str, response_url: &str) -> serde_json::Value {
    json!({
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:test",
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/sensors/1",
        "RequestId": format!("req-{request_type}"),
        "ResourceType": "Custom::SchemaMigration",
        "LogicalResourceId": "SchemaMigration",
        "ResourceProperties": {"ServiceToken": "x", "SchemaVersion": "5"},
    })
}

/// Where CloudFormation's presigned S3 URL would be: collects the answers PUT to it.
async fn answer_collector() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Option<String>, serde_json::Value)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/cfn-response",
        axum::routing::put(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = tx.send((content_type, serde_json::from_str(&body).unwrap()));
                axum::http::StatusCode::OK
            }
        }),
    );
    let base = readings::testing::serve(app).await;
    (format!("{base}/cfn-response"), rx)
}

/// The deploy step: the writer migrates on CloudFormation's Create and Update and answers
/// on the presigned URL; on Delete it keeps the data; when it cannot migrate it answers
/// FAILED with the reason, so the stack rolls back saying why.
#[tokio::test]
async fn the_deploy_step_migrates_and_answers_cloudformation() {
    let db = TestDb::new().await;
    let (url, mut answers) = answer_collector().await;
    let binary = function_binary(env!("CARGO_BIN_EXE_batch-writer"));
    let responses = FakeLambdaRuntime::invoke(
        &binary,
        &[("DATABASE_URL", &db.config.url)],
        vec![
            cloudformation("Create", &url),
            cloudformation("Delete", &url),
        ],
    )
    .await;
    assert_eq!(responses.len(), 2);
    let (content_type, created) = answers.recv().await.unwrap();
    assert_eq!(
        content_type, None,
        "presigned URLs are signed without a Content-Type"
    );
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(created["RequestId"], "req-Create");
    assert_eq!(created["LogicalResourceId"], "SchemaMigration");
    assert_eq!(
        created["Data"]["SchemaVersion"],
        readings::postgres::store::SCHEMA_VERSION
    );
    let c = db.client().await;
    let version: i32 = c
        .query_one("SELECT version FROM pipeline_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, readings::postgres::store::SCHEMA_VERSION);
    let roles: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sensor_pipeline_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 3);
    let (_, deleted) = answers.recv().await.unwrap();
    assert_eq!(deleted["Status"], "SUCCESS");
    assert_eq!(deleted["PhysicalResourceId"], created["PhysicalResourceId"]);
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'sensor_data'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "the data outlives the stack");

    // A database that refuses: FAILED, with the reason.
    let nowhere = "postgres://postgres@127.0.0.1:1/sensors";
    FakeLambdaRuntime::invoke(
        &binary,
        &[("DATABASE_URL", nowhere), ("DB_CONNECT_TIMEOUT_SECS", "1")],
        vec![cloudformation("Update", &url)],
    )
    .await;
    let (_, failed) = answers.recv().await.unwrap();
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    assert!(
        failed["Reason"]
            .as_str()
            .unwrap()
            .contains("migration failed"),
        "{failed}"
    );
}

/// `batch-writer migrate`: the same migration as a command, for a manual deploy step or a
/// local run.
#[tokio::test]
async fn batch_writer_migrate_sets_the_schema_up_and_exits() {
    let db = TestDb::new().await;
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_batch-writer"))
        .arg("migrate")
        .env("DATABASE_URL", &db.config.url)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let version: i32 = db
        .client()
        .await
        .query_one("SELECT version FROM pipeline_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, readings::postgres::store::SCHEMA_VERSION);
}
