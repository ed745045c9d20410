//! Exactly once through faults: duplicates, a writer killed mid-COPY, PostgreSQL going
//! away, poison messages, retried requests. Real PostgreSQL and SQS (moto); each test
//! counts rows exactly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::Message;
use batch_writer::poller::Poller;
use readings::config::{AuthConfig, PollerConfig};
use readings::http::auth::{create_key, Auth, Scope};
use readings::ingest::Ingestor;
use readings::model::envelope::pack;
use readings::queue::deadletter::{ATTR_CLASS, ATTR_ORIGINAL_ID, ATTR_REASON};
use readings::queue::Sender;
use readings::testing::{sample_readings, sqs_message, PrivateCluster, TestDb, TestQueue};
use readings::writer::Writer;
use readings::Store;
use serde_json::{json, Value};

fn body(batch: &str, tag: &str, n: usize) -> String {
    pack(batch, &sample_readings(tag, n), 262_144)
        .unwrap()
        .remove(0)
}

fn event(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = messages;
    e
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn writer(store: Store, q: &TestQueue) -> Writer {
    Writer::new(store).with_dead_letter_queue(q.dlq_sender())
}

fn poller(q: &TestQueue, writer: Writer, visibility: Duration) -> Poller {
    Poller::new(
        q.client.clone(),
        q.url().to_owned(),
        PollerConfig {
            batch_size: 50,
            batch_window: Duration::from_millis(300),
            wait: Duration::from_secs(1),
            visibility_timeout: visibility,
            pollers: 2,
            maintenance_every: Duration::from_secs(3600),
        },
        writer,
    )
}

async fn send(q: &TestQueue, body: &str) {
    q.client
        .send_message()
        .queue_url(q.url())
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// Polls `count` until it reaches `want` or `within` passes; returns the last count.
async fn wait_rows(db_count: impl AsyncFn() -> i64, want: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let n = db_count().await;
        if n >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn attr<'a>(m: &'a Message, name: &str) -> &'a str {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .unwrap_or("")
}

async fn dead_letters(q: &TestQueue) -> Vec<Message> {
    let out = q
        .client
        .receive_message()
        .queue_url(&q.dlq_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    out.messages.unwrap_or_default()
}

#[tokio::test]
async fn duplicates_are_written_once() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let w = writer(db.store.clone(), &q);
    // The same SQS message delivered twice.
    let b1 = body("batch-1", "a", 5);
    let first = w.handle(event(vec![sqs_message("m1", &b1)]), soon()).await;
    let again = w.handle(event(vec![sqs_message("m1", &b1)]), soon()).await;
    assert!(first.batch_item_failures.is_empty() && again.batch_item_failures.is_empty());
    assert_eq!(db.count().await, 5);
    // The same batch in two different messages, in one event and across events.
    let b2 = body("batch-2", "b", 7);
    w.handle(
        event(vec![sqs_message("m2", &b2), sqs_message("m3", &b2)]),
        soon(),
    )
    .await;
    w.handle(event(vec![sqs_message("m4", &b2)]), soon()).await;
    assert_eq!(db.count().await, 12);
}

#[tokio::test]
async fn a_writer_killed_mid_copy_leaves_nothing_and_the_redelivery_writes_once() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    db.store.ensure_schema().await.unwrap();
    send(&q, &body("killed", "k", 500)).await;

    // Hold the table so the writer's COPY blocks inside its transaction.
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE sensor_data IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let spawn_writer = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_batch-writer"))
            .env("DATABASE_URL", &db.config.url)
            .env("QUEUE_URL", q.url())
            .env("DLQ_URL", &q.dlq_url)
            .env("WRITER_VISIBILITY_TIMEOUT_SECS", "4")
            .env("WRITER_WAIT_SECS", "1")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = spawn_writer();
    let watcher = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let copying: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE query LIKE 'COPY sensor_data%' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if copying > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never reached its COPY"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap(); // SIGKILL
    locker.batch_execute("ROLLBACK").await.unwrap();
    // The dead client's transaction is rolled back: neither rows nor its batch record.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.count().await, 0);

    let _child = spawn_writer();
    let n = wait_rows(|| db.count(), 500, Duration::from_secs(30)).await;
    assert_eq!(n, 500);
    // Past another visibility timeout nothing more arrives.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(db.count().await, 500);
    assert!(dead_letters(&q).await.is_empty());
}

#[tokio::test]
async fn postgres_down_for_30_seconds_loses_and_doubles_nothing() {
    let cluster = PrivateCluster::start();
    let q = TestQueue::new().await;
    let store = Store::new(&cluster.db_config()).unwrap();
    let sender = Sender::new(q.client.clone(), &q.config)
        .await
        .expect("a sender for the test queue");
    let config = readings::testing::ingest_config();
    // Keys checked, their lookups cached for only a second: through the outage the key the
    // database vouched for before it went down keeps working.
    let key = create_key(&store, "fleet", &[Scope::Ingest])
        .await
        .unwrap()
        .key;
    let unseen = create_key(&store, "spare", &[Scope::Ingest])
        .await
        .unwrap()
        .key;
    let auth = Auth::new(
        &AuthConfig {
            cache_ttl: Duration::from_secs(1),
            ..AuthConfig::default()
        },
        store.clone(),
    );
    let app = ingest_api::router(
        Arc::new(Ingestor::new(config, sender, store.clone())),
        &auth,
    );
    let url = format!("{}/sensor", readings::testing::serve(app).await);
    let p = poller(&q, writer(store.clone(), &q), Duration::from_secs(60));
    tokio::spawn(p.run(std::future::pending()));

    // A sensor fleet that keeps sending, 10 readings every 200 ms.
    let accepted = Arc::new(AtomicUsize::new(0));
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fleet = {
        let (accepted, sending, url, key) =
            (accepted.clone(), sending.clone(), url.clone(), key.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            while sending.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (0..10)
                    .map(|i| json!({"location": format!("s{n}-{i}"), "temperature": 20.0}))
                    .collect();
                n += 1;
                if let Ok(r) = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&batch)
                    .send()
                    .await
                {
                    if r.status().as_u16() == 202 {
                        accepted.fetch_add(10, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.stop();
    let during = accepted.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        accepted.load(Ordering::Relaxed) > during + 500,
        "ingest kept accepting while the database was down"
    );
    // A key the functions never looked up cannot be vouched for: retry later, not 401.
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&unseen)
        .json(&json!({"location": "spare", "temperature": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    cluster.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    sending.store(false, Ordering::Relaxed);
    fleet.await.unwrap();

    let want = accepted.load(Ordering::Relaxed) as i64;
    let url = cluster.db_config().url;
    let count = || async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query_one("SELECT count(*) FROM sensor_data", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let n = wait_rows(count, want, Duration::from_secs(60)).await;
    assert_eq!(n, want, "every accepted reading, once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count().await, want);
    let distinct: i64 = store
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(DISTINCT location) FROM sensor_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, want, "no reading twice");
    assert!(dead_letters(&q).await.is_empty(), "nothing in the DLQ");
}

#[tokio::test]
async fn poison_messages_go_to_the_dlq_with_reasons_and_the_rest_is_written() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    db.store.ensure_schema().await.unwrap();
    db.client()
        .await
        .batch_execute("ALTER TABLE sensor_data ADD CONSTRAINT no_freezer CHECK (location NOT LIKE 'freezer%')")
        .await
        .unwrap();
    for i in 0..8 {
        send(&q, &body(&format!("good-{i}"), &format!("g{i}"), 3)).await;
    }
    send(&q, "this is not an envelope").await;
    send(&q, &body("bad-data", "freezer", 3)).await;

    let p = poller(&q, writer(db.store.clone(), &q), Duration::from_secs(30));
    let mut received = 0;
    while received < 10 {
        received += p.round().await.unwrap().received;
    }
    assert_eq!(db.count().await, 24, "the 8 good messages are written");

    let dead = dead_letters(&q).await;
    let mut classes: Vec<&str> = dead.iter().map(|m| attr(m, ATTR_CLASS)).collect();
    classes.sort();
    assert_eq!(classes, ["data_error", "undecodable"]);
    for m in &dead {
        assert!(!attr(m, ATTR_ORIGINAL_ID).is_empty());
        let reason = attr(m, ATTR_REASON);
        match attr(m, ATTR_CLASS) {
            "data_error" => assert!(reason.contains("no_freezer"), "{reason}"),
            _ => assert!(reason.contains("not a readings envelope"), "{reason}"),
        }
    }
    assert!(q.drain(q.url()).await.is_empty(), "the main queue is empty");
}

#[tokio::test]
async fn a_retried_post_with_the_same_key_writes_once_and_another_body_is_422() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let sender = Sender::new(q.client.clone(), &q.config)
        .await
        .expect("a sender for the test queue");
    let config = readings::testing::ingest_config();
    let app = ingest_api::router(
        Arc::new(Ingestor::new(config, sender, db.store.clone())),
        &Auth::Off,
    );
    let url = format!("{}/sensor", readings::testing::serve(app).await);
    tokio::spawn(
        poller(&q, writer(db.store.clone(), &q), Duration::from_secs(30))
            .run(std::future::pending()),
    );

    let post = |body: &'static str| {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", "gateway-4/2024-03-15T12:00")
            .body(body)
            .send()
    };
    let body = r#"[{"location":"a","temperature":1,"time":1710500000},{"location":"b","temperature":2,"time":1710500000}]"#;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = post(body).await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        ids.push(r.json::<Value>().await.unwrap()["batch_id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let r = post(r#"{"location":"c","temperature":3}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));

    assert_eq!(
        wait_rows(|| db.count(), 2, Duration::from_secs(20)).await,
        2
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(db.count().await, 2);
    assert!(dead_letters(&q).await.is_empty());
}
