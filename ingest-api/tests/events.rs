//! The sample events in events/ run through the function as Lambda would deliver them
//! (`lambda_answer`: the steps of the Lambda host without the Runtime API), so they never
//! rot; and one request gets one answer whichever event source delivers it.

use std::sync::Arc;

use readings::config::AuthConfig;
use readings::http::auth::{Auth, Scope};
use readings::ingest::Ingestor;
use readings::queue::Sender;
use readings::testing::{
    answer_shape, event, event_with_key, lambda_answer, set_header, with_base64_body, LambdaAnswer,
    TestDb, TestQueue,
};
use serde_json::{json, Value};

/// Every ingest sample: file, the shape its answer takes (see `answer_shape`), readings.
const SAMPLES: [(&str, &str, u64); 7] = [
    ("ingest-post-one.json", "http", 1),
    ("ingest-post-batch.json", "http", 3),
    ("ingest-post-ndjson.json", "http", 2),
    ("ingest-post-rest.json", "rest", 1),
    ("ingest-post-alb.json", "alb", 1),
    ("ingest-post-function-url.json", "http", 1),
    ("tutorial-post.json", "rest", 1),
];

/// The tutorial's one reading, in every payload shape (the tutorial's own event last).
const ONE_READING: [&str; 5] = [
    "ingest-post-one.json",
    "ingest-post-function-url.json",
    "ingest-post-rest.json",
    "ingest-post-alb.json",
    "tutorial-post.json",
];

async fn app(q: &TestQueue, db: &TestDb) -> axum::Router {
    let sender = Sender::new(q.client.clone(), &q.config)
        .await
        .expect("a sender for the test queue");
    let ingestor = Ingestor::new(readings::testing::ingest_config(), sender, db.store.clone());
    let auth = Auth::new(&AuthConfig::default(), db.store.clone());
    ingest_api::router(Arc::new(ingestor), &auth)
}

#[test]
fn every_ingest_sample_event_is_tested() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.starts_with("ingest-") || f == "tutorial-post.json")
        .collect();
    files.sort();
    let mut tested: Vec<String> = SAMPLES.iter().map(|s| s.0.to_owned()).collect();
    tested.sort();
    assert_eq!(files, tested);
}

#[tokio::test]
async fn sample_post_events_are_accepted() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Ingest]).await;
    let app = app(&q, &db).await;
    let mut expected = 0;
    for (file, shape, readings) in SAMPLES {
        let answer = lambda_answer(app.clone(), &event_with_key(file, &key)).await;
        assert_eq!(answer_shape(&answer), shape, "{file}: {answer}");
        let read = LambdaAnswer::read(&answer);
        assert_eq!(read.status, 202, "{file}: {answer}");
        assert_eq!(read.json()["accepted"], readings, "{file}");
        expected += readings as usize;
    }
    assert_eq!(q.drain_readings().await, expected);
}

#[tokio::test]
async fn the_tutorials_post_event_as_it_is_gets_the_json_401() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let answer = lambda_answer(app(&q, &db).await, &event("tutorial-post.json")).await;
    // A REST event is answered in the REST shape: headers in `multiValueHeaders`.
    assert_eq!(answer_shape(&answer), "rest", "{answer}");
    let read = LambdaAnswer::read(&answer);
    assert_eq!(read.status, 401, "{answer}");
    assert_eq!(read.headers["content-type"], ["application/json"]);
    assert_eq!(
        read.headers["www-authenticate"],
        ["Bearer realm=\"sensor-pipeline\""]
    );
    assert_eq!(
        read.json(),
        json!({"error": "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"})
    );
    assert_eq!(q.drain_readings().await, 0);
}

/// An answer with what differs between two accepted requests (the batch id) blanked out.
fn comparable(mut answer: LambdaAnswer) -> LambdaAnswer {
    if answer.status == 202 {
        let mut body = answer.json();
        assert!(body["batch_id"].is_string(), "{body}");
        body["batch_id"] = Value::Null;
        answer.body = body.to_string().into_bytes();
    }
    answer
}

#[tokio::test]
async fn one_request_gets_one_answer_in_every_payload_shape() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let key = db.api_key(&[Scope::Ingest]).await;
    let app = app(&q, &db).await;
    let bearer = format!("Bearer {key}");
    let mut accepted = 0;
    for (key, status) in [(None, 401), (Some(bearer.as_str()), 202)] {
        for base64 in [false, true] {
            let mut answers = Vec::new();
            for file in ONE_READING {
                let mut e = event(file);
                set_header(&mut e, "authorization", key);
                if base64 {
                    e = with_base64_body(e);
                }
                let answer = lambda_answer(app.clone(), &e).await;
                let what = format!("{file}, key {}, base64 {base64}", key.is_some());
                let read = LambdaAnswer::read(&answer);
                assert_eq!(read.status, status, "{what}: {answer}");
                if status == 202 {
                    assert_eq!(read.json()["accepted"], 1, "{what}");
                    accepted += 1;
                }
                answers.push((what, comparable(read)));
            }
            let (first, expected) = &answers[0];
            for (what, answer) in &answers[1..] {
                assert_eq!(answer, expected, "{what} differs from {first}");
            }
        }
    }
    assert_eq!(q.drain_readings().await, accepted);
}
