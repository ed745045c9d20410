//! The whole pipeline in one process, each function on its local host: HTTP → ingest-api →
//! SQS (moto) → batch-writer poller → PostgreSQL → query-api → HTTP.

use std::time::Duration;

use local_pipeline::{LocalPipeline, Options};
use serde_json::{json, Value};

async fn post(p: &LocalPipeline, content_type: &str, body: String) -> Value {
    let r = reqwest::Client::new()
        .post(&p.ingest)
        .bearer_auth(&p.key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    r.json().await.unwrap()
}

/// Polls `GET /sensor?query` until `done` holds for the answer, for at most 20 s.
async fn wait_for(p: &LocalPipeline, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = p.get_json(query).await;
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting; last answer {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_tutorials_calls_round_trip() {
    let p = LocalPipeline::start().await;
    let before = chrono::Utc::now().timestamp();
    let accepted = post(
        &p,
        "application/json",
        r#"{"location":"bedroom","temperature":66}"#.into(),
    )
    .await;
    assert_eq!(accepted["accepted"], 1);

    let got = wait_for(&p, "", |v| v.as_array().is_some_and(|a| !a.is_empty())).await;
    let rows = got.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["location"], "bedroom");
    assert_eq!(rows[0]["temperature"], json!(66.0));
    let t = rows[0]["time"].as_i64().unwrap();
    assert!((before..=before + 5).contains(&t), "time {t} vs {before}");
}

#[tokio::test]
async fn single_array_and_ndjson_land_with_their_values_and_times() {
    let p = LocalPipeline::start().await;
    post(
        &p,
        "application/json",
        r#"{"location":"one","temperature":1.25,"time":"2024-03-15T10:00:00Z"}"#.into(),
    )
    .await;
    post(
        &p,
        "application/json",
        json!([
            {"location": "arr", "temperature": -2.5, "time": 1710496800},
            {"location": "arr", "temperature": 3, "time": 1710496801500i64}
        ])
        .to_string(),
    )
    .await;
    post(
        &p,
        "application/x-ndjson",
        "{\"location\":\"nd\",\"temperature\":4,\"time\":\"2024-03-15T10:00:02.25+02:00\"}\n{\"location\":\"nd\",\"temperature\":5,\"time\":1710496803}\n".into(),
    )
    .await;

    assert_eq!(p.settle(5, Duration::from_secs(20)).await, 5);
    assert_eq!(
        p.db.rows().await,
        [
            (1_710_489_602_250_000, "nd".into(), 4.0),
            (1_710_496_800_000_000, "arr".into(), -2.5),
            (1_710_496_800_000_000, "one".into(), 1.25),
            (1_710_496_801_500_000, "arr".into(), 3.0),
            (1_710_496_803_000_000, "nd".into(), 5.0),
        ]
    );
    let v = wait_for(&p, "location=arr&limit=10", |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(
        v,
        json!([
            {"time": 1_710_496_801, "location": "arr", "temperature": 3.0},
            {"time": 1_710_496_800, "location": "arr", "temperature": -2.5}
        ])
    );
}

#[tokio::test]
async fn a_large_request_is_written_exactly_once() {
    let p = LocalPipeline::start().await;
    let body: Vec<Value> = (0..5000)
        .map(|i| json!({"location": format!("s{}", i % 50), "temperature": (i % 90) as f64, "time": 1_710_000_000 + i}))
        .collect();
    post(&p, "application/json", Value::from(body).to_string()).await;
    assert_eq!(p.settle(5000, Duration::from_secs(30)).await, 5000);
}

#[tokio::test]
async fn coalesced_single_reading_posts_land_exactly_once() {
    let p = LocalPipeline::with(Options {
        coalesce_linger: Duration::from_millis(10),
        ..Options::default()
    })
    .await;
    let client = reqwest::Client::new();
    let posts = (0..200).map(|i| {
        let (client, url, key) = (client.clone(), p.ingest.clone(), p.key.clone());
        async move {
            let r = client
                .post(&url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"location":"c-{i}","temperature":{}}}"#,
                    i % 40
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
        }
    });
    futures_util::future::join_all(posts).await;
    assert_eq!(p.settle(200, Duration::from_secs(20)).await, 200);
    let rows = p.db.rows().await;
    assert_eq!(rows.len(), 200);
    let distinct: std::collections::HashSet<&String> = rows.iter().map(|r| &r.1).collect();
    assert_eq!(distinct.len(), 200);
}
