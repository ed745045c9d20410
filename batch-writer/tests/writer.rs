//! The writer's handler and its local SQS host, against real PostgreSQL and SQS (moto).

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use batch_writer::poller::Poller;
use readings::config::PollerConfig;
use readings::model::envelope::pack;
use readings::testing::{sample_readings, sqs_message, TestDb, TestQueue};
use readings::writer::Writer;

#[tokio::test]
async fn one_undecodable_message_fails_alone() {
    let db = TestDb::new().await;
    let writer = Writer::new(db.store.clone());
    let mut event = SqsEvent::default();
    for i in 0..4 {
        let body = pack(&format!("batch-{i}"), &sample_readings("r", 3), 262_144).unwrap();
        event.records.push(sqs_message(&format!("m{i}"), &body[0]));
    }
    event
        .records
        .insert(2, sqs_message("poison", "{\"not\": \"an envelope\"}"));

    let response = writer.handle(event, soon()).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["poison"]);
    assert_eq!(db.count().await, 12);
}

#[tokio::test]
async fn a_database_down_past_the_deadline_reports_every_message() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = readings::Store::new(&readings::config::DbConfig {
        url: format!("postgres://postgres@127.0.0.1:{port}/none"),
        pool_size: 2,
        connect_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::new(store);
    let mut event = SqsEvent::default();
    for i in 0..3 {
        let body = pack(&format!("b{i}"), &sample_readings("r", 2), 262_144).unwrap();
        event.records.push(sqs_message(&format!("m{i}"), &body[0]));
    }
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(3);
    let response = writer.handle(event, deadline).await;
    let mut failed: Vec<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    failed.sort();
    assert_eq!(failed, ["m0", "m1", "m2"]);
    // It retried until the deadline drew near, and answered before it.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        std::time::Instant::now() < deadline,
        "{:?}",
        started.elapsed()
    );
}

fn poller_config() -> PollerConfig {
    PollerConfig {
        batch_size: 50,
        batch_window: Duration::from_millis(300),
        wait: Duration::from_secs(1),
        visibility_timeout: Duration::from_secs(2),
        pollers: 1,
        maintenance_every: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn poller_deletes_what_was_written_and_leaves_failures_for_redelivery() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    for i in 0..5 {
        let body = pack(
            &format!("p{i}"),
            &sample_readings(&format!("p{i}"), 10),
            262_144,
        )
        .unwrap();
        q.client
            .send_message()
            .queue_url(q.url())
            .message_body(&body[0])
            .send()
            .await
            .unwrap();
    }
    q.client
        .send_message()
        .queue_url(q.url())
        .message_body("garbage")
        .send()
        .await
        .unwrap();

    let poller = Poller::new(
        q.client.clone(),
        q.url().to_owned(),
        poller_config(),
        Writer::new(db.store.clone()),
    );
    let round = poller.round().await.unwrap();
    assert_eq!(
        (round.received, round.failed, round.deleted),
        (6, 1, 5),
        "{round:?}"
    );
    assert!(round.handle > Duration::ZERO && round.delete > Duration::ZERO);
    assert_eq!(db.count().await, 50);

    // Only the undecodable message comes back once its visibility timeout is over.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let left = q.drain(q.url()).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body(), Some("garbage"));
}

#[tokio::test]
async fn a_message_delivered_twice_is_written_once() {
    let db = TestDb::new().await;
    let q = TestQueue::new().await;
    let body = pack("twice", &sample_readings("t", 7), 262_144)
        .unwrap()
        .remove(0);
    for _ in 0..2 {
        q.client
            .send_message()
            .queue_url(q.url())
            .message_body(&body)
            .send()
            .await
            .unwrap();
    }
    let poller = Poller::new(
        q.client.clone(),
        q.url().to_owned(),
        poller_config(),
        Writer::new(db.store.clone()),
    );
    let mut received = 0;
    while received < 2 {
        received += poller.round().await.unwrap().received;
    }
    assert_eq!(db.count().await, 7);
}

fn soon() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(20)
}

#[tokio::test]
async fn a_write_stuck_in_the_database_ends_at_the_deadline() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE sensor_data IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let writer = Writer::new(db.store.clone());
    let body = pack("stuck", &sample_readings("s", 3), 262_144).unwrap();
    let mut event = SqsEvent::default();
    event.records.push(sqs_message("m-stuck", &body[0]));
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(2);
    let response = writer.handle(event, deadline).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered {:?} after the start",
        started.elapsed()
    );
    assert_eq!(response.batch_item_failures.len(), 1);
    locker.batch_execute("ROLLBACK").await.unwrap();
    // The abandoned write left nothing behind, and the pool still works.
    let mut event = SqsEvent::default();
    event.records.push(sqs_message("m-stuck", &body[0]));
    assert!(writer
        .handle(event, soon())
        .await
        .batch_item_failures
        .is_empty());
    assert_eq!(db.count().await, 3);
}
