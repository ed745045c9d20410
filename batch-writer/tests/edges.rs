//! The edges of the exactly-once promise, against real PostgreSQL and SQS (moto): a retried
//! request packed at another message size, parts that name other readings than their
//! batch's, a poison message as large as ingest packs them, messages older than the batch
//! records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::Message;
use batch_writer::poller::Poller;
use chrono::{TimeDelta, Utc};
use readings::config::QueueConfig;
use readings::http::auth::Auth;
use readings::ingest::Ingestor;
use readings::model::envelope::{Packer, WireReading};
use readings::queue::deadletter::{ATTR_CLASS, ATTR_ENQUEUED_AT, ATTR_REASON, ATTR_REPLAY_FORCED};
use readings::queue::{Sender, ATTRIBUTE_RESERVE};
use readings::testing::{
    ingest_config, poller_config, sample_readings, serve, sqs_message, TestDb, TestQueue,
};
use readings::writer::Writer;
use readings::Reading;
use serde_json::{json, Value};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn event(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = messages;
    e
}

fn attribute<'a>(m: &'a Message, name: &str) -> &'a str {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .unwrap_or_else(|| panic!("no {name} attribute: {:?}", m.message_attributes()))
}

fn poller(q: &TestQueue, writer: Writer) -> Poller {
    Poller::new(
        q.client.clone(),
        q.url().to_owned(),
        poller_config(),
        writer,
    )
}

/// A client retries a request with the same `Idempotency-Key` through another ingest
/// instance, whose queue setting packs it at another message size (SQS queues take 1 KiB
/// to 1 MiB): both tries are on the queue, cut differently. Each reading is stored once.
#[tokio::test]
async fn the_same_idempotent_request_packed_at_two_sizes_stores_each_reading_once() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let instance = |max: usize| {
        let (q, db) = (&q, &db);
        async move {
            let config = QueueConfig {
                max_message_bytes: Some(max),
                ..q.config.clone()
            };
            let sender = Sender::new(q.client.clone(), &config).await.unwrap();
            let ingestor = Ingestor::new(ingest_config(), sender, db.store.clone());
            let app = ingest_api::router(Arc::new(ingestor), &Auth::Off);
            format!("{}/sensor", serve(app).await)
        }
    };
    let (small, large) = (instance(8192).await, instance(20_000).await);
    let readings: Vec<Value> = (0..600)
        .map(|i| {
            json!({"location": format!("station-{}", i % 37), "temperature": i as f64 / 8.0,
                   "time": 1_710_000_000 + i})
        })
        .collect();
    let body = Value::from(readings).to_string();
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for url in [&small, &large] {
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", "sensor-17/2024-03-15T12:00")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        ids.push(r.json::<Value>().await.unwrap()["batch_id"].clone());
    }
    assert_eq!(ids[0], ids[1], "one batch id for both tries");

    let writer = Writer::new(db.store.clone()).with_dead_letter_queue(q.dlq_sender());
    tokio::spawn(poller(&q, writer).run(std::future::pending()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.count().await < 600 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both tries written (the queue empty), each reading once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = db.client().await;
    let (rows, distinct): (i64, i64) = c
        .query_one(
            "SELECT count(*), count(DISTINCT (time, location)) FROM sensor_data",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((rows, distinct), (600, 600));
    let written: String = c
        .query_one("SELECT written::text FROM written_batches", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, "{[0,600)}");
    assert!(q.drain(&q.dlq_url).await.is_empty());
    assert_eq!(q.drain_readings().await, 0);
}

/// A part whose batch size differs from the one recorded for its batch id names other
/// readings: it goes to the DLQ with a reason that says so, and nothing of it is written.
#[tokio::test]
async fn a_part_that_names_other_readings_is_dead_lettered_with_its_reason() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let writer = Writer::new(db.store.clone()).with_dead_letter_queue(q.dlq_sender());
    let envelope = |of: u32, rows: &[(i64, &str)]| {
        let readings: Vec<String> = rows
            .iter()
            .map(|(t, l)| serde_json::to_string(&WireReading(*t, (*l).into(), 1.0)).unwrap())
            .collect();
        format!(
            r#"{{"v":2,"at":{},"batches":[{{"id":"shared-id","first":0,"of":{of},"readings":[{}]}}]}}"#,
            Utc::now().timestamp_millis(),
            readings.join(",")
        )
    };
    let first = envelope(
        2,
        &[(1_710_000_000_000_000, "a"), (1_710_000_001_000_000, "a")],
    );
    let other = envelope(3, &[(1_710_000_002_000_000, "b")]);
    let fine = readings::model::envelope::pack("fine", &sample_readings("ok", 3), 262_144)
        .unwrap()
        .remove(0);
    let r = writer
        .handle(event(vec![sqs_message("m1", &first)]), soon())
        .await;
    assert!(r.batch_item_failures.is_empty());
    let r = writer
        .handle(
            event(vec![sqs_message("m2", &other), sqs_message("m3", &fine)]),
            soon(),
        )
        .await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(db.count().await, 5, "the first message and the fine one");
    let dead = q.drain(&q.dlq_url).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(other.as_str()));
    assert_eq!(attribute(&dead[0], ATTR_CLASS), "batch_mismatch");
    let reason = attribute(&dead[0], ATTR_REASON);
    assert!(
        reason.contains("shared-id") && reason.contains("3") && reason.contains("2"),
        "{reason}"
    );
}

/// A poison message as large as ingest packs messages reaches the DLQ with its reason
/// attributes: ingest leaves room for them in every message.
#[tokio::test]
async fn a_full_size_poison_message_reaches_the_dlq_with_its_reason() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    // The size ingest packs to on the test queue (its MaximumMessageSize, asked).
    let sender = Sender::new(q.client.clone(), &q.config).await.unwrap();
    let size = sender.packing_bytes();
    assert_eq!(size, q.dlq_max_bytes - ATTRIBUTE_RESERVE);
    // Readings that fill a message of exactly that size; the last has a location longer
    // than any reading may have, so the message can never be written.
    let long = "x".repeat(100);
    let reading = |i: usize, location: &str| Reading {
        time: chrono::DateTime::from_timestamp(1_710_000_000 + i as i64, 0).unwrap(),
        location: location.to_owned(),
        temperature: 1.5,
    };
    let per_reading =
        readings::model::envelope::pack("poison", &[reading(0, &long)], size).unwrap()[0].len();
    let mut readings: Vec<Reading> = (0..size / (per_reading - 60) + 10)
        .map(|i| reading(i, &long))
        .collect();
    let body = loop {
        let mut packer = Packer::new(size, Utc::now());
        packer.add("poison", &readings).unwrap();
        let bodies = packer.finish();
        if bodies.len() == 1 {
            break bodies.into_iter().next().unwrap();
        }
        readings.pop();
    };
    let missing = size - body.len();
    let last = readings.len() - 1;
    readings[last] = reading(last, &"y".repeat(long.len() + missing));
    let mut packer = Packer::new(size, Utc::now());
    packer.add("poison", &readings).unwrap();
    let body = packer.finish().remove(0);
    assert_eq!(body.len(), size, "a message as large as ingest makes them");

    let writer = Writer::new(db.store.clone()).with_dead_letter_queue(q.dlq_sender());
    let r = writer
        .handle(event(vec![sqs_message("full", &body)]), soon())
        .await;
    assert!(
        r.batch_item_failures.is_empty(),
        "the DLQ took the letter: {r:?}"
    );
    let dead = q.drain(&q.dlq_url).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(body.as_str()));
    assert_eq!(attribute(&dead[0], ATTR_CLASS), "invalid_reading");
    assert!(attribute(&dead[0], ATTR_REASON).contains("characters long"));
    assert_eq!(db.count().await, 0);
}

fn with_attributes(mut m: SqsMessage, attributes: &[(&str, &str)]) -> SqsMessage {
    m.message_attributes = attributes
        .iter()
        .map(|(k, v)| {
            let mut a = SqsMessageAttribute::default();
            a.data_type = Some("String".into());
            a.string_value = Some((*v).to_owned());
            ((*k).to_owned(), a)
        })
        .collect::<HashMap<_, _>>();
    m
}

/// A message enqueued longer ago than the writer keeps its batch records (less a day) may
/// hold readings that were written and whose records are gone: it goes to the DLQ as
/// `expired`, unless a forced replay marks it. A version-1 message is judged by the
/// enqueue time a replay carries.
#[tokio::test]
async fn a_message_older_than_the_batch_records_is_dead_lettered_unless_forced() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let writer = Writer::new(db.store.clone())
        .with_dead_letter_queue(q.dlq_sender())
        .with_retention(Duration::from_secs(21 * 86_400));
    let old = Utc::now() - TimeDelta::days(20) - TimeDelta::hours(1);
    let young = Utc::now() - TimeDelta::days(19);
    let body_at = |at: chrono::DateTime<Utc>, id: &str| {
        let mut packer = Packer::new(262_144, at);
        packer.add(id, &sample_readings(id, 2)).unwrap();
        packer.finish().remove(0)
    };
    let v1 = r#"{"v":1,"batches":[{"id":"v1-old","part":0,"readings":[[1710000000000000,"cellar",5.0]]}]}"#;
    let old_v1_time = old.to_rfc3339();
    let r = writer
        .handle(
            event(vec![
                sqs_message("old", &body_at(old, "old")),
                sqs_message("young", &body_at(young, "young")),
                with_attributes(
                    sqs_message("forced", &body_at(old, "forced")),
                    &[(ATTR_REPLAY_FORCED, "true")],
                ),
                with_attributes(
                    sqs_message("old-v1", v1),
                    &[(ATTR_ENQUEUED_AT, &old_v1_time)],
                ),
            ]),
            soon(),
        )
        .await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let mut locations: Vec<String> = db.rows().await.into_iter().map(|(_, l, _)| l).collect();
    locations.sort();
    assert_eq!(locations, ["forced-0", "forced-1", "young-0", "young-1"]);
    let mut dead: Vec<(String, String, String)> = q
        .drain(&q.dlq_url)
        .await
        .iter()
        .map(|m| {
            (
                attribute(m, ATTR_CLASS).to_owned(),
                attribute(m, ATTR_ENQUEUED_AT).to_owned(),
                attribute(m, ATTR_REASON).to_owned(),
            )
        })
        .collect();
    dead.sort();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (class, enqueued, reason) in &dead {
        assert_eq!(class, "expired");
        let at = chrono::DateTime::parse_from_rfc3339(enqueued).unwrap();
        assert!((at.timestamp() - old.timestamp()).abs() <= 1, "{enqueued}");
        assert!(reason.contains("--force"), "{reason}");
    }
}
