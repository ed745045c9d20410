//! What the real ingest-api binary prints under Lambda (a stand-in Runtime API): EMF
//! metrics for accepted and refused requests, and JSON logs that name the invocation and
//! never the body or the API key.

use readings::http::auth::Scope;
use readings::testing::{
    emf_documents, event_with_key, function_binary, FakeLambdaRuntime, TestDb, TestQueue,
};
use serde_json::{json, Value};

/// A location no output line may contain.
const SECRET: &str = "cellar-8b2f4e";

fn post(body: Value, key: &str) -> Value {
    let mut e = event_with_key("ingest-post-one.json", key);
    e["body"] = Value::String(body.to_string());
    e
}

#[tokio::test]
async fn emf_metrics_and_json_logs_under_lambda() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Ingest]).await;
    let query_key = db.api_key(&[Scope::Query]).await;
    let readings: Vec<Value> = (0..3)
        .map(|i| json!({"location": format!("{SECRET}-{i}"), "temperature": 20 + i}))
        .collect();
    let invalid = json!([{"location": SECRET, "temperature": 1}, {"location": SECRET, "temperature": "warm"}]);
    let (answers, output) = FakeLambdaRuntime::invoke_with_output(
        &function_binary(env!("CARGO_BIN_EXE_ingest-api")),
        &[
            ("QUEUE_URL", q.url()),
            ("DATABASE_URL", &db.config.url),
            ("METRICS_NAMESPACE", "SensorPipelineTest"),
            ("RUST_LOG", "info"),
        ],
        vec![
            post(Value::Array(readings), &key),
            post(invalid, &key),
            post(json!({"location": SECRET, "temperature": 1}), &query_key),
        ],
    )
    .await;
    assert_eq!(answers[0].1["statusCode"], 202, "{:?}", answers[0]);
    assert_eq!(answers[1].1["statusCode"], 400, "{:?}", answers[1]);
    assert_eq!(answers[2].1["statusCode"], 403, "{:?}", answers[2]);
    let accepted: Value = serde_json::from_str(answers[0].1["body"].as_str().unwrap()).unwrap();
    let ids: Vec<&str> = answers
        .iter()
        .map(|(kind, _)| kind.strip_prefix("response:").expect(kind))
        .collect();
    assert_eq!(q.drain_readings().await, 3);

    let docs = emf_documents(&output);
    assert_eq!(docs.len(), 3, "{output:#?}");
    for d in &docs {
        assert_eq!(d.namespace, "SensorPipelineTest");
        assert_eq!(d.document["Function"], "test");
        assert!(d.metrics.values().all(|(unit, _)| unit == "Count"));
    }
    assert_eq!(docs[0].dimension_sets, [vec!["Function"]]);
    assert_eq!(docs[0].value("ReadingsAccepted"), Some(3.0));
    assert_eq!(docs[0].value("MessagesEnqueued"), Some(1.0));
    assert_eq!(docs[0].document["batch_id"], accepted["batch_id"]);
    assert_eq!(
        docs[1].dimension_sets,
        [vec!["Function"], vec!["Function", "Status"]]
    );
    assert_eq!(docs[1].value("RequestsRejected"), Some(1.0));
    assert_eq!(docs[1].document["Status"], "400");
    assert_eq!(docs[1].value("ReadingsAccepted"), None);
    assert_eq!(
        docs[2].dimension_sets,
        [vec!["Function"], vec!["Function", "Reason"]]
    );
    assert_eq!(docs[2].value("AuthFailures"), Some(1.0));
    assert_eq!(docs[2].document["Reason"], "scope");

    let logs: Vec<Value> = output
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &Value| v.get("_aws").is_none())
        .collect();
    let line = |message: &str| {
        logs.iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line: {logs:#?}"))
    };
    let enqueued = line("readings enqueued");
    assert_eq!(enqueued["requestId"], ids[0]);
    assert_eq!(enqueued["batch_id"], accepted["batch_id"]);
    assert_eq!(enqueued["accepted"], 3);
    assert!(enqueued["duration_ms"].is_f64());
    let refused = line("request refused");
    assert_eq!(refused["requestId"], ids[1]);
    assert_eq!(refused["status"], 400);
    let refused = line("request refused: API key");
    assert_eq!(refused["requestId"], ids[2]);
    assert_eq!(refused["reason"], "scope");
    assert_eq!(refused["key_id"], &query_key[4..16]);
    for line in &output {
        assert!(!line.contains(SECRET), "the body was logged: {line}");
        for k in [&key, &query_key] {
            assert!(!line.contains(&k[17..]), "a key was logged: {line}");
        }
    }
}

#[tokio::test]
async fn metrics_off_prints_no_emf() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Ingest]).await;
    let (answers, output) = FakeLambdaRuntime::invoke_with_output(
        &function_binary(env!("CARGO_BIN_EXE_ingest-api")),
        &[
            ("QUEUE_URL", q.url()),
            ("DATABASE_URL", &db.config.url),
            ("METRICS", "off"),
            ("RUST_LOG", "info"),
        ],
        vec![event_with_key("ingest-post-one.json", &key)],
    )
    .await;
    assert_eq!(answers[0].1["statusCode"], 202);
    assert!(emf_documents(&output).is_empty(), "{output:#?}");
    assert!(
        output.iter().any(|l| l.contains("readings enqueued")),
        "{output:#?}"
    );
}
