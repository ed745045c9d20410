//! ingest-api over HTTP against a real SQS API (moto): what is accepted is on the queue,
//! what is refused says why and leaves the queue empty.

use readings::http::auth::{Auth, Scope};
use std::sync::Arc;

use readings::config::{AuthConfig, DbConfig, IngestConfig, QueueConfig};
use readings::ingest::Ingestor;
use readings::model::envelope::decode;
use readings::queue::Sender;
use readings::testing::{TestDb, TestQueue};
use readings::Limits;
use readings::Store;
use serde_json::{json, Value};

async fn serve(sender: Sender, keys: Store) -> String {
    serve_with(sender, keys, &Auth::Off).await
}

async fn serve_with(sender: Sender, keys: Store, auth: &Auth) -> String {
    let config = IngestConfig {
        addr: ([127, 0, 0, 1], 0).into(),
        max_body_bytes: 64 * 1024,
        max_readings: 500,
        limits: Limits::default(),
        coalesce_linger: std::time::Duration::ZERO,
    };
    let app = ingest_api::router(Arc::new(Ingestor::new(config, sender, keys)), auth);
    let url = format!("{}/sensor", readings::testing::serve(app).await);
    url
}

/// A store whose database nobody listens for: requests without an Idempotency-Key must
/// not need it.
fn no_database() -> Store {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Store::new(&DbConfig {
        url: format!("postgres://postgres@127.0.0.1:{port}/none"),
        pool_size: 1,
        connect_timeout: std::time::Duration::from_secs(1),
        statement_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    })
    .unwrap()
}

async fn setup() -> (TestQueue, String) {
    let q = TestQueue::new().await;
    let sender = Sender::new(q.client.clone(), &q.config)
        .await
        .expect("a sender for the test queue");
    let url = serve(sender, no_database()).await;
    (q, url)
}

async fn post(url: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn tutorial_body_is_accepted_and_enqueued() {
    let (q, url) = setup().await;
    let (status, body) = post(
        &url,
        "application/json",
        r#"{"location":"bedroom","temperature":66}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    let batch_id = body["batch_id"].as_str().unwrap().to_owned();

    let msgs = q.drain(q.url()).await;
    assert_eq!(msgs.len(), 1);
    let env = decode(msgs[0].body().unwrap()).unwrap();
    assert_eq!(env.batches.len(), 1);
    assert_eq!(env.batches[0].id, batch_id);
    let r = &env.batches[0].readings[0];
    assert_eq!((r.1.as_str(), r.2), ("bedroom", 66.0));
    let age = chrono::Utc::now() - r.time().unwrap();
    assert!(age.num_seconds().abs() < 60, "receive time stamped: {age}");
}

#[tokio::test]
async fn arrays_and_ndjson_are_accepted() {
    let (q, url) = setup().await;
    let arr = json!([
        {"location": "a", "temperature": 1.5, "time": "2024-03-15T12:00:00Z"},
        {"location": "b", "temperature": -3, "time": 1710504000},
        {"location": "c", "temperature": 70, "time": 1710504000123i64}
    ]);
    let (status, body) = post(&url, "application/json", arr.to_string()).await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (202, json!(3)),
        "{body}"
    );
    let nd = "{\"location\":\"d\",\"temperature\":2}\n{\"location\":\"e\",\"temperature\":3}\n";
    let (status, body) = post(&url, "application/x-ndjson", nd).await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (202, json!(2)),
        "{body}"
    );

    let mut got: Vec<(String, f64, i64)> = q
        .drain(q.url())
        .await
        .iter()
        .flat_map(|m| decode(m.body().unwrap()).unwrap().batches)
        .flat_map(|b| b.readings)
        .map(|r| (r.1, r.2, r.0))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let times: Vec<i64> = got.iter().take(3).map(|g| g.2).collect();
    assert_eq!(
        times,
        [
            1_710_504_000_000_000,
            1_710_504_000_000_000,
            1_710_504_000_123_000
        ]
    );
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn large_requests_are_packed_by_size_into_several_messages() {
    let q = TestQueue::new().await;
    let config = QueueConfig {
        max_message_bytes: Some(4096),
        ..q.config.clone()
    };
    let url = serve(
        Sender::new(q.client.clone(), &config)
            .await
            .expect("a sender for the test queue"),
        no_database(),
    )
    .await;
    let readings: Vec<Value> = (0..400)
        .map(|i| json!({"location": format!("sensor-{i:04}"), "temperature": i as f64 / 10.0}))
        .collect();
    let (status, body) = post(&url, "application/json", Value::from(readings).to_string()).await;
    assert_eq!(status, 202, "{body}");
    let msgs = q.drain(q.url()).await;
    // Packed to the queue's size less the room kept for a dead letter's attributes.
    let budget = 4096 - readings::queue::ATTRIBUTE_RESERVE;
    assert!(msgs.iter().all(|m| m.body().unwrap().len() <= budget));
    // ~40 bytes a reading: 400 readings need 8-10 messages of 2 KiB, not one per reading.
    assert!((8..=10).contains(&msgs.len()), "{} messages", msgs.len());
    let mut parts: Vec<(u32, u32, usize)> = msgs
        .iter()
        .map(|m| {
            let part = decode(m.body().unwrap()).unwrap().batches.remove(0);
            let offsets = part.offsets().unwrap();
            (offsets.start, offsets.end, part.readings.len())
        })
        .collect();
    parts.sort();
    // Each part starts where the one before ended, and together they hold all 400.
    let mut next = 0;
    for (start, end, n) in &parts {
        assert_eq!((*start, *end as usize - *start as usize), (next, *n));
        next = *end;
    }
    assert_eq!(next, 400);
}

#[tokio::test]
async fn refused_requests_say_why_and_enqueue_nothing() {
    let (q, url) = setup().await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "text/plain",
            r#"{"location":"a","temperature":1}"#.into(),
            415,
            "Content-Type",
        ),
        (
            "application/json",
            "x".repeat(70 * 1024),
            413,
            "larger than",
        ),
        (
            "application/json",
            Value::from(vec![json!({"location":"a","temperature":1}); 501]).to_string(),
            413,
            "at most 500",
        ),
        (
            "application/json",
            "{\"location\":\"a\",\n\"temperature\":}".into(),
            400,
            "line 2, column 15",
        ),
        (
            "application/x-ndjson",
            "{\"location\":\"a\",\"temperature\":1}\n{oops}".into(),
            400,
            "line 2",
        ),
        ("application/json", "[]".into(), 400, "no readings"),
        (
            "application/json",
            "\"hello\"".into(),
            400,
            "found a string",
        ),
        (
            "application/json",
            r#"[{"location":"a","temperature":1},{"location":"b","temperature":1,"humidity":3}]"#
                .into(),
            400,
            "1 of 2 readings are invalid",
        ),
    ];
    for (ct, body, want_status, want_text) in cases {
        let (status, resp) = post(&url, ct, body).await;
        assert_eq!(status, want_status, "{ct}: {resp}");
        let error = resp["error"].as_str().unwrap_or_default();
        assert!(error.contains(want_text), "{ct}: {error}");
    }
    assert_eq!(q.drain(q.url()).await.len(), 0, "nothing may be enqueued");
}

#[tokio::test]
async fn validation_errors_list_index_and_field() {
    let (q, url) = setup().await;
    let body = json!([
        {"location": "ok", "temperature": 20},
        {"location": "", "temperature": 20},
        {"location": "x", "temperature": 5000, "time": "2999-01-01T00:00:00Z"},
        {"location": "x", "temperature": 20, "color": "red"}
    ]);
    let (status, resp) = post(&url, "application/json", body.to_string()).await;
    assert_eq!(status, 400);
    let details: Vec<(u64, &str)> = resp["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["index"].as_u64().unwrap(), d["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        details,
        [
            (1, "location"),
            (2, "temperature"),
            (2, "time"),
            (3, "color")
        ]
    );
    assert!(resp["details"][3]["message"]
        .as_str()
        .unwrap()
        .contains("unknown field"));
    assert_eq!(q.drain(q.url()).await.len(), 0);
}

#[tokio::test]
async fn malformed_json_details_carry_line_and_column() {
    let (_q, url) = setup().await;
    let (status, resp) = post(
        &url,
        "application/json",
        "[\n  {\"location\": \"a\" \"temperature\": 1}\n]",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(resp["details"][0], json!({"line": 2, "column": 20}));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (_q, url) = setup().await;
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // RFC 9110: a 405 names the methods the route takes.
    assert_eq!(r.headers()["allow"], "POST");
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = reqwest::get(url.replace("/sensor", "/nope")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn idempotency_key_fixes_the_batch_id() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let url = serve(
        Sender::new(q.client.clone(), &q.config)
            .await
            .expect("a sender for the test queue"),
        db.store.clone(),
    )
    .await;
    let send = || {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", "sensor-17/2024-03-15T12:00")
            .body(r#"{"location":"a","temperature":1}"#)
            .send()
    };
    let a: Value = send().await.unwrap().json().await.unwrap();
    let b: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(a["batch_id"], b["batch_id"]);
    let ids: Vec<String> = q
        .drain(q.url())
        .await
        .iter()
        .map(|m| decode(m.body().unwrap()).unwrap().batches[0].id.clone())
        .collect();
    assert_eq!(ids, [a["batch_id"].as_str().unwrap(); 2]);
}

#[tokio::test]
async fn an_unreachable_queue_answers_503_with_retry_after() {
    let q = TestQueue::new().await;
    let shared = aws_config_for_dead_endpoint().await;
    let dead = aws_sdk_sqs::Client::new(&shared);
    let config = QueueConfig {
        max_message_bytes: Some(262_144),
        ..q.config.clone()
    };
    let url = serve(
        Sender::new(dead, &config)
            .await
            .expect("a sender for the test queue"),
        no_database(),
    )
    .await;
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"location":"a","temperature":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("unavailable"));
}

async fn aws_config_for_dead_endpoint() -> aws_config::SdkConfig {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    aws_config::from_env()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .load()
        .await
}

#[tokio::test]
async fn concurrent_single_reading_posts_share_messages_when_coalescing() {
    let q = TestQueue::new().await;
    let sender = Sender::new(q.client.clone(), &q.config)
        .await
        .expect("a sender for the test queue");
    let config = IngestConfig {
        addr: ([127, 0, 0, 1], 0).into(),
        max_body_bytes: 64 * 1024,
        max_readings: 500,
        limits: Limits::default(),
        coalesce_linger: std::time::Duration::from_millis(20),
    };
    let ingestor = Ingestor::new(config, sender, no_database())
        .with_coalescing(std::time::Duration::from_millis(20));
    let app = ingest_api::router(Arc::new(ingestor), &Auth::Off);
    let url = format!("{}/sensor", readings::testing::serve(app).await);

    let client = reqwest::Client::new();
    let posts = (0..60).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(format!(r#"{{"location":"room-{i}","temperature":{i}}}"#))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            r.json::<Value>().await.unwrap()["batch_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    let ids: std::collections::HashSet<String> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 60, "each request keeps its own batch id");

    let msgs = q.drain(q.url()).await;
    assert!(msgs.len() <= 10, "60 requests took {} messages", msgs.len());
    let batches: Vec<(String, usize)> = msgs
        .iter()
        .flat_map(|m| decode(m.body().unwrap()).unwrap().batches)
        .map(|b| (b.id, b.readings.len()))
        .collect();
    assert_eq!(batches.len(), 60);
    assert!(batches.iter().all(|(id, n)| ids.contains(id) && *n == 1));
}

#[tokio::test]
async fn a_pool_wait_that_times_out_answers_503_with_retry_after() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    // One connection, waited for at most a second, and keys checked as deployed.
    let store = Store::new(&DbConfig {
        pool_size: 1,
        connect_timeout: std::time::Duration::from_secs(1),
        ..db.config.clone()
    })
    .unwrap();
    let seen = db.api_key(&[Scope::Ingest]).await;
    let unseen = db.api_key(&[Scope::Ingest]).await;
    let auth = Auth::new(&AuthConfig::default(), store.clone());
    let sender = Sender::new(q.client.clone(), &q.config)
        .await
        .expect("a sender for the test queue");
    let url = serve_with(sender, store.clone(), &auth).await;
    let http = reqwest::Client::new();
    let post = |key: &str, idempotency_key: Option<&str>| {
        let mut request = http
            .post(&url)
            .bearer_auth(key)
            .json(&json!({"location": "attic", "temperature": 20}));
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        request.send()
    };
    assert_eq!(post(&seen, Some("warm")).await.unwrap().status(), 202);

    // The only connection busy with a long statement, as under load.
    let holder = store.clone();
    let held = tokio::spawn(async move {
        let client = holder.pool().get().await.unwrap();
        client.batch_execute("SELECT pg_sleep(10)").await.unwrap();
    });
    while store.pool().status().available > 0 {
        tokio::task::yield_now().await;
    }
    // The Idempotency-Key's record, and a key not looked up yet, need the database.
    for (what, key, idempotency_key) in [
        ("an Idempotency-Key", &seen, Some("busy")),
        ("a key not looked up yet", &unseen, None),
    ] {
        let r = post(key, idempotency_key).await.unwrap();
        assert_eq!(r.status(), 503, "{what}");
        assert!(
            r.headers().contains_key("retry-after"),
            "{what}: 503 carries Retry-After"
        );
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{what}: a JSON error: {body}");
    }
    // A request without an Idempotency-Key, with a key looked up before, does not.
    assert_eq!(post(&seen, None).await.unwrap().status(), 202);
    held.abort();
}
