//! The real ingest-api binary under a stand-in Lambda Runtime API: the same router answers
//! API Gateway events.
//!
//! The binary is cargo's, or with `BOOTSTRAP_DIR` set the `bootstrap` that `sam build` made
//! (`readings::testing::function_binary`; scripts/test runs these tests both ways).

use readings::http::auth::Scope;
use readings::testing::{event_with_key, function_binary, FakeLambdaRuntime, TestDb, TestQueue};
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
        &function_binary(env!("CARGO_BIN_EXE_ingest-api")),
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

/// What `template.yaml` sets on the function.
const IGNORE_STAGE: (&str, &str) = ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true");

#[tokio::test]
async fn binary_answers_rest_alb_and_function_url_events_under_lambda() {
    use readings::testing::{answer_shape, LambdaAnswer};
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Ingest]).await;
    let samples = [
        ("ingest-post-rest.json", "rest"),
        ("ingest-post-alb.json", "alb"),
        ("ingest-post-function-url.json", "http"),
    ];
    let answers = FakeLambdaRuntime::invoke(
        &function_binary(env!("CARGO_BIN_EXE_ingest-api")),
        &[
            ("QUEUE_URL", q.url()),
            ("DATABASE_URL", &db.config.url),
            IGNORE_STAGE,
        ],
        samples.iter().map(|s| event_with_key(s.0, &key)).collect(),
    )
    .await;
    for ((file, shape), (kind, answer)) in samples.iter().zip(&answers) {
        assert!(kind.starts_with("response:"), "{file}: {kind}: {answer}");
        assert_eq!(answer_shape(answer), *shape, "{file}: {answer}");
        let read = LambdaAnswer::read(answer);
        assert_eq!(read.status, 202, "{file}: {answer}");
        assert_eq!(read.json()["accepted"], 1, "{file}");
    }
    assert_eq!(q.drain_readings().await, samples.len());
}

#[tokio::test]
async fn binary_answers_the_tutorials_event_under_lambda() {
    use readings::testing::{answer_shape, event, LambdaAnswer};
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Ingest]).await;
    // Without AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH, as `cargo lambda watch` runs it:
    // lambda_http puts the REST event's stage (`prod`) in front of its path, and the host
    // takes it off again.
    let answers = FakeLambdaRuntime::invoke(
        &function_binary(env!("CARGO_BIN_EXE_ingest-api")),
        &[("QUEUE_URL", q.url()), ("DATABASE_URL", &db.config.url)],
        vec![
            event("tutorial-post.json"),
            event_with_key("tutorial-post.json", &key),
            event_with_key("ingest-post-rest.json", &key),
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
        assert_eq!(read.status, 202, "{answer}");
        assert_eq!(read.json()["accepted"], 1);
    }
    assert_eq!(q.drain_readings().await, 2);
}
