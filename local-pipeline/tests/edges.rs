//! The edges of the pipeline that span functions: idempotency keys belong to a tenant (the
//! API key that sent them), and every valid location travels through every queue, both
//! SQS stand-ins included, unchanged.

use std::time::Duration;

use local_pipeline::{LocalPipeline, Options};
use readings::http::auth::Scope;
use readings::testing::SqsStandIn;
use serde_json::{json, Value};

async fn post(p: &LocalPipeline, key: &str, idempotency: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(&p.ingest)
        .bearer_auth(key)
        .header("idempotency-key", idempotency)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Two customers follow the README's example and send the same `Idempotency-Key`: each
/// request is its own (another tenant's use of the key neither skips their readings nor
/// shows in an answer), while each tenant's own retries stay idempotent.
#[tokio::test]
async fn idempotency_keys_belong_to_a_tenant() {
    let p = LocalPipeline::start().await;
    let other = p.db.api_key(&[Scope::Ingest]).await;
    let third = p.db.api_key(&[Scope::Ingest]).await;
    let key = "sensor-17/2024-03-15T12:00";
    // Readings timed by the server: the tenants' rows differ in time.
    let body = json!({"location": "sensor-17", "temperature": 21.5});

    let (status, first) = post(&p, &p.key, key, &body).await;
    assert_eq!(status, 202, "{first}");
    let (status, second) = post(&p, &other, key, &body).await;
    assert_eq!(status, 202, "{second}");
    assert_ne!(first["batch_id"], second["batch_id"]);
    // Another body under the same key, from a third tenant: accepted, nothing said of the
    // others.
    let another = json!([{"location": "sensor-17", "temperature": 22.0},
                         {"location": "sensor-18", "temperature": 19.0}]);
    let (status, third_answer) = post(&p, &third, key, &another).await;
    assert_eq!(status, 202, "{third_answer}");
    // Within a tenant the key still means one request: a retry is the same batch, another
    // body is refused.
    let (status, retry) = post(&p, &p.key, key, &body).await;
    assert_eq!((status, &retry["batch_id"]), (202, &first["batch_id"]));
    let (status, reused) = post(&p, &other, key, &another).await;
    assert_eq!(status, 422, "{reused}");

    assert_eq!(
        p.settle(4, Duration::from_secs(20)).await,
        4,
        "each tenant's readings, once"
    );
}

/// Locations beyond the Basic Multilingual Plane (emoji, CJK extensions), and the
/// noncharacters U+FFFE and U+FFFF, are valid locations: they travel through moto and
/// fauxqs (which refuses characters outside the BMP in a message) and come back from the
/// table and the API byte for byte. A dead letter whose reason quotes such characters
/// reaches the DLQ too.
#[tokio::test]
async fn every_valid_location_travels_every_queue_unchanged() {
    let locations = [
        "wohnzimmer-ü-🌡",
        "冷蔵庫 𠀋𡈽",
        "🛰️ orbit/7",
        "\u{10FFFF}edge",
        "non\u{FFFE}char\u{FFFF}",
        "plain ascii",
    ];
    for sqs in [SqsStandIn::Moto, SqsStandIn::Fauxqs] {
        let p = LocalPipeline::with(Options {
            sqs,
            ..Options::default()
        })
        .await;
        let body: Vec<Value> = locations
            .iter()
            .enumerate()
            .map(
                |(i, l)| json!({"location": l, "temperature": i as f64, "time": 1_710_000_000 + i}),
            )
            .collect();
        let (status, answer) = post(&p, &p.key, "chars", &Value::from(body)).await;
        assert_eq!(status, 202, "{sqs:?}: {answer}");
        assert_eq!(
            p.settle(locations.len() as i64, Duration::from_secs(20))
                .await,
            locations.len() as i64
        );

        let mut stored: Vec<String> = p.db.rows().await.into_iter().map(|(_, l, _)| l).collect();
        let mut want: Vec<String> = locations.iter().map(|l| (*l).to_owned()).collect();
        stored.sort();
        want.sort();
        assert_eq!(stored, want, "{sqs:?}: the table");
        let answered = p.get_json("limit=100").await;
        let mut answered: Vec<String> = answered
            .as_array()
            .expect("an array")
            .iter()
            .map(|r| r["location"].as_str().unwrap().to_owned())
            .collect();
        answered.sort();
        assert_eq!(answered, want, "{sqs:?}: GET /sensor");

        // A message that can never be written, whose reason names a batch id beyond the
        // BMP: it reaches the DLQ with its reason.
        let poison = r#"{"v":2,"at":1710000000000,"batches":[{"id":"\ud83c\udf21-batch","first":0,"of":1,"readings":[[1710000000000000,"bad\u0001",1.0]]}]}"#;
        p.queue
            .client
            .send_message()
            .queue_url(p.queue.url())
            .message_body(poison)
            .send()
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let dead = loop {
            let dead = p.queue.drain(&p.queue.dlq_url).await;
            if !dead.is_empty() || tokio::time::Instant::now() > deadline {
                break dead;
            }
        };
        assert_eq!(dead.len(), 1, "{sqs:?}: the poison message in the DLQ");
        assert_eq!(dead[0].body(), Some(poison));
    }
}
