//! The real query-api binary under a stand-in Lambda Runtime API.
//!
//! The binary is cargo's, or with `BOOTSTRAP_DIR` set the `bootstrap` that `sam build` made
//! (`readings::testing::function_binary`; scripts/test runs these tests both ways).

use readings::http::auth::Scope;
use readings::testing::{event_with_key, function_binary, FakeLambdaRuntime, TestDb};
use serde_json::{json, Value};

#[tokio::test]
async fn binary_answers_api_gateway_events_under_lambda() {
    let db = TestDb::new().await;
    db.insert(&[(1_678_925_592_000_000, "bedroom", 66.0)]).await;
    let key = db.api_key(&[Scope::Query]).await;
    let answers = FakeLambdaRuntime::invoke(
        &function_binary(env!("CARGO_BIN_EXE_query-api")),
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

#[tokio::test]
async fn the_binary_logs_its_table_kind_at_start_and_timescaledb_require_is_enforced() {
    use readings::postgres::store::TableKind;
    use readings::testing::expected_kind;
    use tokio::io::AsyncBufReadExt;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Query]).await;
    let binary = &function_binary(env!("CARGO_BIN_EXE_query-api"));
    let (answers, output) = FakeLambdaRuntime::invoke_with_output(
        binary,
        &[("DATABASE_URL", &db.config.url)],
        vec![event_with_key("query-get.json", &key)],
    )
    .await;
    assert_eq!(answers[0].1["statusCode"], 200, "{:?}", answers[0]);
    let line = output
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("sensor_data is a"))
        })
        .unwrap_or_else(|| panic!("no table kind in the start-up log: {output:#?}"));
    let (table, version) = match expected_kind() {
        TableKind::Hypertable => ("hypertable", "2.28.3"),
        TableKind::Plain => ("plain table", "none"),
    };
    assert_eq!(line["table"], table, "{line}");
    assert_eq!(line["timescaledb"], version, "{line}");

    // TIMESCALEDB=require: serves on a hypertable, refuses to start without one.
    let mut child = tokio::process::Command::new(binary)
        .env("DATABASE_URL", &db.config.url)
        .env("TIMESCALEDB", "require")
        .env("QUERY_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = stdout.next_line().await {
            if line.contains("listening") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the function neither served nor stopped within 30 s");
    let status = if listening {
        child.kill().await.unwrap();
        None
    } else {
        Some(child.wait().await.unwrap())
    };
    let mut errors = Vec::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        errors.push(line);
    }
    match expected_kind() {
        TableKind::Hypertable => assert!(listening, "{errors:?}"),
        TableKind::Plain => {
            assert!(!status.unwrap().success());
            let errors = errors.join("\n");
            assert!(
                errors.contains("TIMESCALEDB=require, but TimescaleDB is"),
                "{errors}"
            );
        }
    }
}

/// What `template.yaml` sets on the function.
const IGNORE_STAGE: (&str, &str) = ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true");

#[tokio::test]
async fn binary_answers_rest_alb_and_function_url_events_under_lambda() {
    use readings::testing::{answer_shape, LambdaAnswer};
    let db = TestDb::new().await;
    db.insert(&[(1_678_882_392_000_000, "bedroom", 66.0)]).await;
    let key = db.api_key(&[Scope::Query]).await;
    let samples = [
        ("query-get-rest.json", "rest"),
        ("query-get-alb.json", "alb"),
        ("query-get-function-url.json", "http"),
    ];
    let answers = FakeLambdaRuntime::invoke(
        &function_binary(env!("CARGO_BIN_EXE_query-api")),
        &[("DATABASE_URL", &db.config.url), IGNORE_STAGE],
        samples.iter().map(|s| event_with_key(s.0, &key)).collect(),
    )
    .await;
    for ((file, shape), (kind, answer)) in samples.iter().zip(&answers) {
        assert!(kind.starts_with("response:"), "{file}: {kind}: {answer}");
        assert_eq!(answer_shape(answer), *shape, "{file}: {answer}");
        let read = LambdaAnswer::read(answer);
        assert_eq!(read.status, 200, "{file}: {answer}");
        assert_eq!(
            read.json(),
            json!([{"time": 1678882392, "location": "bedroom", "temperature": 66.0}]),
            "{file}"
        );
    }
}

#[tokio::test]
async fn binary_answers_the_tutorials_event_under_lambda() {
    use readings::testing::{answer_shape, event, LambdaAnswer};
    let db = TestDb::new().await;
    db.insert(&[(1_678_882_392_000_000, "bedroom", 66.0)]).await;
    let key = db.api_key(&[Scope::Query]).await;
    // Without AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH, as `cargo lambda watch` runs it:
    // lambda_http puts the REST event's stage (`prod`) in front of its path, and the host
    // takes it off again.
    let answers = FakeLambdaRuntime::invoke(
        &function_binary(env!("CARGO_BIN_EXE_query-api")),
        &[("DATABASE_URL", &db.config.url)],
        vec![
            event("tutorial-get.json"),
            event_with_key("tutorial-get.json", &key),
            event_with_key("query-get-rest.json", &key),
        ],
    )
    .await;
    for (kind, answer) in &answers {
        assert!(kind.starts_with("response:"), "{kind}: {answer}");
        assert_eq!(answer_shape(answer), "rest", "{answer}");
    }
    let read = LambdaAnswer::read(&answers[0].1);
    assert_eq!(read.status, 401, "{:?}", answers[0]);
    assert_eq!(read.headers["content-type"], ["application/json"]);
    assert!(read.json()["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("missing API key")));
    for (_, answer) in &answers[1..] {
        let read = LambdaAnswer::read(answer);
        assert_eq!(read.status, 200, "{answer}");
        assert_eq!(
            read.json(),
            json!([{"time": 1678882392, "location": "bedroom", "temperature": 66.0}])
        );
    }
}
