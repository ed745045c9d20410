//! What the real batch-writer binary prints under Lambda (a stand-in Runtime API): EMF
//! metrics that match what it wrote, and JSON logs that name the invocation and never a
//! reading.

use readings::model::envelope::pack;
use readings::testing::{
    emf_documents, event, function_binary, sample_readings, FakeLambdaRuntime, TestDb, TestQueue,
};
use serde_json::{json, Value};

/// A location no log line may contain.
const SECRET: &str = "attic-5e9d1c";

fn sqs_event(messages: &[(&str, &str)]) -> Value {
    let template = event("sqs-batch.json")["Records"][0].clone();
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, body)| {
            let mut r = template.clone();
            r["messageId"] = json!(id);
            r["body"] = json!(body);
            r
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn emf_metrics_and_json_logs_under_lambda() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let a = pack("batch-a", &sample_readings(SECRET, 3), 262_144).unwrap();
    let b = pack("batch-b", &sample_readings(SECRET, 2), 262_144).unwrap();
    // Undecodable, and the decoder's complaint would quote the location.
    let poison = format!(
        r#"{{"v":1,"batches":[{{"id":"p","part":0,"readings":[["{SECRET}-x","x",1.0]]}}]}}"#
    );
    let events = vec![
        sqs_event(&[("m-a", &a[0]), ("m-b", &b[0]), ("m-poison", &poison)]),
        // Message a delivered again: nothing new to write.
        sqs_event(&[("m-a-again", &a[0])]),
    ];

    let (answers, output) = FakeLambdaRuntime::invoke_with_output(
        &function_binary(env!("CARGO_BIN_EXE_batch-writer")),
        &[
            ("DATABASE_URL", &db.config.url),
            ("DLQ_URL", &q.dlq_url),
            ("METRICS_NAMESPACE", "SensorPipelineTest"),
            ("RUST_LOG", "info"),
        ],
        events,
    )
    .await;
    let mut request_ids = Vec::new();
    for (kind, response) in &answers {
        assert_eq!(response, &json!({"batchItemFailures": []}), "{kind}");
        request_ids.push(kind.strip_prefix("response:").expect(kind).to_owned());
    }
    assert_eq!(db.count().await, 5);
    assert_eq!(q.drain(&q.dlq_url).await.len(), 1);

    // Metrics: one document per batch, matching what happened.
    let docs = emf_documents(&output);
    assert_eq!(docs.len(), 2, "{output:#?}");
    for d in &docs {
        assert_eq!(d.namespace, "SensorPipelineTest");
        assert_eq!(d.dimension_sets, [["Function"]]);
        assert_eq!(d.document["Function"], "test");
        for (name, (unit, _)) in &d.metrics {
            let expected = if name == "CopyDuration" {
                "Milliseconds"
            } else {
                "Count"
            };
            assert_eq!(unit, expected, "{name}");
        }
        assert!(
            d.value("CopyDuration").is_some_and(|ms| ms >= 0.0),
            "{:?}",
            d.document
        );
    }
    let values = |d: &readings::testing::EmfDocument| {
        ["BatchSize", "RowsWritten", "DuplicatesSkipped", "DlqSends"].map(|m| d.value(m))
    };
    assert_eq!(
        values(&docs[0]),
        [Some(3.0), Some(5.0), Some(0.0), Some(1.0)]
    );
    assert_eq!(
        values(&docs[1]),
        [Some(1.0), Some(0.0), Some(3.0), Some(0.0)]
    );

    // Logs: JSON, the invocation's request id on its lines, never a location.
    let logs: Vec<Value> = output
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &Value| v.get("_aws").is_none())
        .collect();
    for line in &logs {
        for field in ["timestamp", "level", "message"] {
            assert!(line[field].is_string(), "{field} missing: {line}");
        }
    }
    let with = |message: &str| -> Vec<&Value> {
        logs.iter().filter(|l| l["message"] == message).collect()
    };
    let handled = with("batch handled");
    assert_eq!(handled.len(), 2, "{logs:#?}");
    for (line, id) in handled.iter().zip(&request_ids) {
        assert_eq!(&line["requestId"], id, "{line}");
    }
    assert_eq!(handled[0]["messages"], 3);
    assert_eq!(handled[0]["rows"], 5);
    assert_eq!(handled[0]["dlq_sent"], 1);
    assert_eq!(handled[1]["rows_skipped"], 3);
    assert!(handled[1]["duration_ms"].is_f64());
    let dead = with("message dead-lettered");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["requestId"], request_ids[0].as_str());
    assert_eq!(dead[0]["class"], "undecodable");
    for line in &output {
        assert!(
            !line.contains(SECRET),
            "a reading's location was logged: {line}"
        );
    }
}
