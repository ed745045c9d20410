//! The `dlq` binary against a real SQS API (moto) and, for replay, the real writer and
//! PostgreSQL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Output, Stdio};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use batch_writer::poller::Poller;
use chrono::{DateTime, Utc};
use readings::queue::deadletter::{self, DeadLetter, Failure, FailureClass};
use readings::testing::{TestDb, TestQueue};
use readings::writer::Writer;
use readings::Reading;
use serde_json::Value;

/// Runs `dlq` with the test's queues in QUEUE_URL / DLQ_URL and no terminal.
async fn dlq(q: &TestQueue, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dlq"))
        .args(args)
        .env("QUEUE_URL", q.url())
        .env("DLQ_URL", &q.dlq_url)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run dlq");
    eprintln!(
        "dlq {}: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `dlq`, expects success, returns stdout.
async fn dlq_ok(q: &TestQueue, args: &[&str]) -> String {
    let out = dlq(q, args).await;
    assert!(out.status.success(), "dlq {args:?} failed");
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

async fn dlq_json(q: &TestQueue, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stdout = dlq_ok(q, &all).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A real envelope: `n` readings of one batch, one message.
fn envelope(batch_id: &str, n: usize) -> String {
    let readings: Vec<Reading> = (0..n)
        .map(|i| Reading {
            time: DateTime::from_timestamp(1_710_504_000 + i as i64 * 60, 0).expect("time"),
            location: format!("room-{}", i % 3),
            temperature: 20.0 + i as f64,
        })
        .collect();
    let mut bodies = readings::model::envelope::pack(batch_id, &readings, 262_144).expect("pack");
    assert_eq!(bodies.len(), 1);
    bodies.remove(0)
}

fn letter(class: FailureClass, reason: &str, body: &str, failed_at: DateTime<Utc>) -> DeadLetter {
    DeadLetter {
        message_id: format!("orig-{}", body.len()),
        body: body.to_owned(),
        receive_count: Some("1".into()),
        failure: Failure {
            class,
            reason: reason.to_owned(),
            sqlstate: (class == FailureClass::Operator).then(|| "42501".to_owned()),
        },
        failed_at,
        enqueued_at: None,
    }
}

async fn put(q: &TestQueue, letters: &[DeadLetter]) {
    let unsent = deadletter::send(&q.dlq_sender(), letters).await;
    assert!(unsent.is_empty(), "DLQ refused {unsent:?}");
}

/// (visible, in flight) on `url`.
async fn depth(client: &Client, url: &str) -> (u64, u64) {
    let attrs = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    let get = |n: QueueAttributeName| attrs.get(&n).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Receives and deletes every visible message on `url`, with its message attributes.
async fn take_all(client: &Client, url: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let msgs = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if msgs.is_empty() {
            return all;
        }
        for m in &msgs {
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().expect("receipt"))
                .send()
                .await
                .expect("delete");
        }
        all.extend(msgs);
    }
}

/// Message ids now visible on `url`, received with visibility 0 so they stay visible.
async fn visible_ids(client: &Client, url: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for _ in 0..10 {
        let msgs = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        ids.extend(msgs.iter().filter_map(|m| m.message_id.clone()));
    }
    ids
}

fn bodies(messages: &[Message]) -> Vec<String> {
    let mut b: Vec<String> = messages
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect();
    b.sort();
    b
}

const DENIED: &str = "permission denied for table sensor_data";

/// Two operator letters, one invalid reading, one undecodable body.
async fn mixed_letters(q: &TestQueue) -> Vec<DeadLetter> {
    let t = DateTime::from_timestamp(1_710_504_000, 0).expect("time");
    let letters = vec![
        letter(FailureClass::Operator, DENIED, &envelope("op-1", 3), t),
        letter(FailureClass::Operator, DENIED, &envelope("op-2", 5), t),
        letter(
            FailureClass::InvalidReading,
            "reading 0: temperature 5000 is above 1000",
            &envelope("bad-1", 2),
            t,
        ),
        letter(
            FailureClass::Undecodable,
            "message body is not a readings envelope: expected value at line 1 column 1",
            "this is not json",
            t,
        ),
    ];
    put(q, &letters).await;
    letters
}

#[tokio::test]
async fn peek_shows_reasons_without_consuming() {
    let q = TestQueue::new().await;
    mixed_letters(&q).await;
    let before = visible_ids(&q.client, &q.dlq_url).await;
    assert_eq!(before.len(), 4);

    let text = dlq_ok(&q, &["peek"]).await;
    assert!(text.contains(DENIED), "{text}");
    assert!(text.contains("temperature 5000 is above 1000"), "{text}");
    assert!(text.contains("invalid_reading"), "{text}");
    assert!(text.contains("this is not json"), "{text}");
    assert!(text.contains("op-2[0..5 of 5]"), "{text}");
    assert!(text.contains("4 shown"), "{text}");

    let json = dlq_json(&q, &["peek", "--reason", "operator"]).await;
    let list = json.as_array().expect("array");
    assert_eq!(list.len(), 2);
    for m in list {
        assert_eq!(m["class"], "operator");
        assert_eq!(m["reason"], DENIED);
        assert_eq!(m["attributes"]["sqlstate"], "42501");
        assert_eq!(m["summary"]["parts"].as_array().map(Vec::len), Some(1));
    }
    let readings: Vec<u64> = list
        .iter()
        .filter_map(|m| m["summary"]["readings"].as_u64())
        .collect();
    assert_eq!(readings.iter().sum::<u64>(), 8);

    // A case-insensitive piece of the reason works too; -n limits.
    let json = dlq_json(&q, &["peek", "--reason", "ABOVE 1000"]).await;
    assert_eq!(json.as_array().map(Vec::len), Some(1));
    let json = dlq_json(&q, &["peek", "-n", "1"]).await;
    assert_eq!(json.as_array().map(Vec::len), Some(1));

    // Nothing consumed, and everything visible again at once.
    assert_eq!(depth(&q.client, &q.dlq_url).await, (4, 0));
    assert_eq!(visible_ids(&q.client, &q.dlq_url).await, before);
}

#[tokio::test]
async fn stats_counts_by_class_and_reason() {
    let q = TestQueue::new().await;
    mixed_letters(&q).await;
    // One message the queue's redrive policy moves (maxReceiveCount 5).
    q.client
        .send_message()
        .queue_url(q.url())
        .message_body(envelope("redriven", 1))
        .send()
        .await
        .expect("send");
    for _ in 0..6 {
        q.client
            .receive_message()
            .queue_url(q.url())
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
    }
    assert_eq!(depth(&q.client, &q.dlq_url).await.0, 5, "redrive happened");

    let stats = dlq_json(&q, &["stats"]).await;
    let d = &stats["dead_letter_queue"];
    assert_eq!(d["visible"], 5);
    assert_eq!(d["scanned"], 5);
    assert_eq!(
        d["by_class"],
        serde_json::json!({"operator": 2, "invalid_reading": 1, "undecodable": 1, "redrive": 1})
    );
    let reasons = d["by_reason"].as_array().expect("by_reason");
    assert_eq!(reasons.len(), 4);
    assert_eq!(reasons[0]["class"], "operator");
    assert_eq!(reasons[0]["reason"], DENIED);
    assert_eq!(reasons[0]["count"], 2);
    let redrive = reasons
        .iter()
        .find(|r| r["class"] == "redrive")
        .expect("redrive reason");
    assert!(redrive["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("moved by the queue's redrive policy after ")));
    assert!(d["oldest_age_seconds"].as_i64().is_some_and(|a| a >= 0));
    assert_eq!(stats["main_queue"]["visible"], 0);
    assert!(stats["main_queue"]["oldest_age_seconds"].is_null());

    // The text form names the same things, and nothing was consumed.
    let text = dlq_ok(&q, &["stats"]).await;
    assert!(text.contains("5 dead letters scanned"), "{text}");
    assert!(text.contains(DENIED), "{text}");
    assert_eq!(depth(&q.client, &q.dlq_url).await, (5, 0));
}

#[tokio::test]
async fn replay_moves_only_what_the_filter_selects() {
    let q = TestQueue::new().await;
    let letters = mixed_letters(&q).await;
    let operator_bodies = {
        let mut b: Vec<String> = letters[..2].iter().map(|l| l.body.clone()).collect();
        b.sort();
        b
    };

    // Dry run: lists, moves nothing.
    let dry = dlq_json(&q, &["replay", "--reason", "operator", "--dry-run"]).await;
    assert_eq!(dry["would_move"], 2);
    assert_eq!(dry["skipped"], 2);
    assert_eq!(depth(&q.client, q.url()).await, (0, 0));
    assert_eq!(depth(&q.client, &q.dlq_url).await, (4, 0));

    // --since after every failure selects nothing.
    let none = dlq_json(&q, &["replay", "--since", "2030-01-01T00:00:00Z"]).await;
    assert_eq!(none["moved"], 0);
    assert_eq!(none["skipped"], 4);

    // --max 1 moves one, then the rest of the operator letters follow.
    let one = dlq_json(&q, &["replay", "--reason", "operator", "--max", "1"]).await;
    assert_eq!(one["moved"], 1);
    assert_eq!(depth(&q.client, q.url()).await.0, 1);
    assert_eq!(depth(&q.client, &q.dlq_url).await, (3, 0));
    let text = dlq_ok(&q, &["replay", "--reason", "operator", "--rate", "50"]).await;
    assert!(text.contains("moved 1, skipped 2 by filter"), "{text}");

    let moved = take_all(&q.client, q.url()).await;
    assert_eq!(bodies(&moved), operator_bodies);
    for m in &moved {
        assert!(
            m.message_attributes().is_none_or(HashMap::is_empty),
            "replayed message carries attributes: {:?}",
            m.message_attributes()
        );
    }
    let left = take_all(&q.client, &q.dlq_url).await;
    let classes: HashSet<String> = left
        .iter()
        .filter_map(|m| {
            m.message_attributes()?
                .get("failure_class")?
                .string_value
                .clone()
        })
        .collect();
    assert_eq!(
        classes,
        HashSet::from(["invalid_reading".to_owned(), "undecodable".to_owned()])
    );
}

/// (body, attributes) of every line of an export file, sorted; checks the other fields.
fn exported_content(file: &std::path::Path) -> Vec<(String, BTreeMap<String, String>)> {
    let text = std::fs::read_to_string(file).expect("export file");
    let mut content: Vec<(String, BTreeMap<String, String>)> = text
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("json line");
            assert!(v["message_id"].is_string(), "{line}");
            assert!(v["sent_timestamp"].is_string(), "{line}");
            let attrs = serde_json::from_value(v["attributes"].clone()).expect("attributes");
            (v["body"].as_str().expect("body").to_owned(), attrs)
        })
        .collect();
    content.sort();
    content
}

fn readings_in(body: &str) -> usize {
    readings::model::envelope::decode(body)
        .expect("envelope")
        .batches
        .iter()
        .map(|b| b.readings.len())
        .sum()
}

/// Runs the writer's poller on the main queue until it is empty.
async fn write_main_queue(q: &TestQueue, db: &TestDb) {
    drain_with(q, Writer::new(db.store.clone())).await
}

/// Runs a poller with `writer` on the main queue until it is empty; no message may be
/// reported failed (dead-lettered ones count as handled).
async fn drain_with(q: &TestQueue, writer: Writer) {
    let poller = Poller::new(
        q.client.clone(),
        q.url().to_owned(),
        readings::testing::poller_config(),
        writer,
    );
    for _ in 0..50 {
        let round = poller.round().await.expect("poller round");
        assert_eq!(round.failed, 0, "the writer failed a replayed message");
        if round.received == 0 && depth(&q.client, q.url()).await == (0, 0) {
            return;
        }
    }
    panic!("the main queue did not empty");
}

#[tokio::test]
async fn export_purge_import_round_trips_and_replay_writes_each_reading_once() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;

    // One batch already written before it was dead-lettered.
    let written = envelope("already-written", 4);
    q.client
        .send_message()
        .queue_url(q.url())
        .message_body(&written)
        .send()
        .await
        .expect("send");
    write_main_queue(&q, &db).await;
    assert_eq!(db.count().await, 4);

    let t = Utc::now();
    let letters: Vec<DeadLetter> = [("already-written", 4), ("new-1", 7), ("new-2", 1)]
        .iter()
        .map(|(id, n)| {
            let body = if *id == "already-written" {
                written.clone()
            } else {
                envelope(id, *n)
            };
            letter(FailureClass::Operator, DENIED, &body, t)
        })
        .chain([letter(
            FailureClass::DataError,
            "value too long for type character varying(128)",
            &envelope("data-1", 2),
            t,
        )])
        .collect();
    put(&q, &letters).await;
    // And one the redrive policy moved: no attributes.

    let redriven = envelope("redriven", 3);
    q.client
        .send_message()
        .queue_url(&q.dlq_url)
        .message_body(&redriven)
        .send()
        .await
        .expect("send");
    let mut original: Vec<(String, BTreeMap<String, String>)> = letters
        .iter()
        .map(|l| (l.body.clone(), l.outgoing(262_144).attributes))
        .chain([(redriven, BTreeMap::new())])
        .collect();
    original.sort();

    let dir = std::env::temp_dir();
    let name = q.dlq_url.rsplit('/').next().unwrap_or("dlq").to_owned();
    let first = dir.join(format!("{name}-first.jsonl"));
    let second = dir.join(format!("{name}-second.jsonl"));
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();

    let exported = dlq_json(&q, &["export", &path(&first)]).await;
    assert_eq!(exported["exported"], 5);
    assert_eq!(exported_content(&first), original);
    assert_eq!(
        depth(&q.client, &q.dlq_url).await,
        (5, 0),
        "export consumed nothing"
    );

    let purged = dlq_json(&q, &["purge", "--yes"]).await;
    assert_eq!(purged["method"], "purge_queue");
    assert_eq!(depth(&q.client, &q.dlq_url).await, (0, 0));

    let imported = dlq_json(&q, &["import", &path(&first)]).await;
    assert_eq!(imported["imported"], 5);
    assert_eq!(depth(&q.client, &q.dlq_url).await, (5, 0));
    dlq_json(&q, &["export", &path(&second)]).await;
    assert_eq!(
        exported_content(&second),
        original,
        "import restored the DLQ"
    );
    let stats = dlq_json(&q, &["stats"]).await;
    assert_eq!(
        stats["dead_letter_queue"]["by_class"],
        serde_json::json!({"operator": 3, "data_error": 1, "redrive": 1})
    );
    for f in [&first, &second] {
        let _ = std::fs::remove_file(f);
    }

    // Replay everything, write it, count each reading once.
    let replay = dlq_json(&q, &["replay"]).await;
    assert_eq!(replay["moved"], 5);
    assert_eq!(depth(&q.client, &q.dlq_url).await, (0, 0));
    write_main_queue(&q, &db).await;
    let expected: usize = original.iter().map(|(body, _)| readings_in(body)).sum();
    assert_eq!(expected, 4 + 7 + 1 + 2 + 3);
    assert_eq!(db.count().await, expected as i64);
}

#[tokio::test]
async fn native_replay_on_moto_fails_clearly() {
    let q = TestQueue::new().await;
    mixed_letters(&q).await;
    let out = dlq(&q, &["replay", "--native"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SQS").expect("endpoint");
    assert!(err.contains("StartMessageMoveTask"), "{err}");
    assert!(err.contains(&endpoint), "{err}");
    assert!(err.contains("without --native"), "{err}");
    assert_eq!(depth(&q.client, &q.dlq_url).await, (4, 0));

    // Filters do not combine with --native.
    let out = dlq(&q, &["replay", "--native", "--reason", "operator"]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn purge_without_yes_and_without_a_terminal_refuses() {
    let q = TestQueue::new().await;
    mixed_letters(&q).await;
    let out = dlq(&q, &["purge"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(depth(&q.client, &q.dlq_url).await, (4, 0));
}

#[tokio::test]
async fn the_dlq_is_found_from_the_redrive_policy_and_bad_import_lines_are_named() {
    let q = TestQueue::new().await;
    mixed_letters(&q).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dlq"))
        .args(["--json", "stats"])
        .env("QUEUE_URL", q.url())
        .env_remove("DLQ_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run dlq");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(stats["dead_letter_queue"]["url"], q.dlq_url.as_str());
    assert_eq!(stats["dead_letter_queue"]["scanned"], 4);

    let file = std::env::temp_dir().join(format!(
        "{}-bad.jsonl",
        q.dlq_url.rsplit('/').next().unwrap_or("dlq")
    ));
    let good = serde_json::json!({"message_id": "a", "body": "x", "attributes": {}}).to_string();
    std::fs::write(&file, format!("{good}\nnot json\n")).expect("write");
    let out = dlq(&q, &["import", file.to_str().expect("utf-8 path")]).await;
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(
        depth(&q.client, &q.dlq_url).await,
        (4, 0),
        "nothing imported from a bad file"
    );
}

#[tokio::test]
async fn an_operator_failure_is_dead_lettered_then_replayed_once_fixed() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let writer = || Writer::new(db.store.clone()).with_dead_letter_queue(q.dlq_sender());
    let send = |body: String| {
        let client = q.client.clone();
        let url = q.url().to_owned();
        async move {
            client
                .send_message()
                .queue_url(url)
                .message_body(body)
                .send()
                .await
                .expect("send");
        }
    };
    send(envelope("before", 3)).await;
    drain_with(&q, writer()).await;
    assert_eq!(db.count().await, 3);

    // An operator's mistake: the table is gone.
    let admin = db.client().await;
    admin
        .batch_execute("ALTER TABLE sensor_data RENAME TO sensor_data_away")
        .await
        .expect("rename");
    send(envelope("during-1", 5)).await;
    send(envelope("during-2", 2)).await;
    drain_with(&q, writer()).await;

    let stats = dlq_json(&q, &["stats"]).await;
    assert_eq!(
        stats["dead_letter_queue"]["by_class"],
        serde_json::json!({"operator": 2}),
        "{stats}"
    );
    let peek = dlq_json(&q, &["peek", "--reason", "sensor_data"]).await;
    assert_eq!(peek.as_array().map(Vec::len), Some(2), "{peek}");
    assert!(peek[0]["attributes"]["sqlstate"]
        .as_str()
        .is_some_and(|s| s.starts_with("42")));

    // Fixed: replay, and every reading lands once.
    admin
        .batch_execute("ALTER TABLE sensor_data_away RENAME TO sensor_data")
        .await
        .expect("rename back");
    let replay = dlq_json(&q, &["replay", "--reason", "operator"]).await;
    assert_eq!(replay["moved"], 2);
    drain_with(&q, writer()).await;
    assert_eq!(db.count().await, 3 + 5 + 2);
    assert_eq!(depth(&q.client, &q.dlq_url).await, (0, 0));
}

/// A version-2 envelope packed at `at`.
fn envelope_at(batch_id: &str, n: usize, at: DateTime<Utc>) -> String {
    let readings: Vec<Reading> = (0..n)
        .map(|i| Reading {
            time: DateTime::from_timestamp(1_710_504_000 + i as i64 * 60, 0).expect("time"),
            location: format!("aged-{i}"),
            temperature: 20.0,
        })
        .collect();
    let mut packer = readings::model::envelope::Packer::new(262_144, at);
    packer.add(batch_id, &readings).expect("pack");
    packer.finish().remove(0)
}

/// Dead letters enqueued longer ago than the writer keeps its batch records (less a day)
/// may hold readings already written whose records are gone: `replay` refuses them, saying
/// what `--force` risks, and with `--force` sends them marked so that the writer writes
/// them. A version-1 body carries its enqueue time through the DLQ, export and import as
/// an attribute, and `import` refuses old letters as `replay` does.
#[tokio::test]
async fn replay_and_import_refuse_letters_older_than_the_batch_records() {
    let q = TestQueue::new().await;
    let db = TestDb::new().await;
    let old = Utc::now() - chrono::TimeDelta::days(20) - chrono::TimeDelta::hours(2);
    let recent = Utc::now() - chrono::TimeDelta::days(2);
    let v1 = r#"{"v":1,"batches":[{"id":"v1-aged","part":0,"readings":[[1710504000000000,"aged-v1",5.0]]}]}"#;
    let mut aged_v1 = letter(FailureClass::Operator, DENIED, v1, Utc::now());
    aged_v1.enqueued_at = Some(old);
    put(
        &q,
        &[
            letter(
                FailureClass::Operator,
                DENIED,
                &envelope_at("aged", 2, old),
                Utc::now(),
            ),
            letter(
                FailureClass::Operator,
                DENIED,
                &envelope_at("fresh", 3, recent),
                Utc::now(),
            ),
            aged_v1,
        ],
    )
    .await;

    // Refused, nothing moved, and the message says why and what --force risks.
    let out = dlq(&q, &["replay"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 of the 3 dead letters") && err.contains("--force") && err.contains("twice"),
        "{err}"
    );
    assert_eq!(depth(&q.client, &q.dlq_url).await.0, 3);
    assert_eq!(depth(&q.client, q.url()).await.0, 0);

    // Exported and imported, the version-1 letter keeps its enqueue time; importing old
    // letters is refused as replaying them is, unless forced.
    let file = std::env::temp_dir().join(format!(
        "{}-aged.jsonl",
        q.dlq_url.rsplit('/').next().unwrap_or("dlq")
    ));
    let path = file.to_string_lossy().into_owned();
    dlq_json(&q, &["export", &path]).await;
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let v1_line = lines
        .iter()
        .find(|l| l["body"].as_str() == Some(v1))
        .expect("the version-1 letter exported");
    let exported = DateTime::parse_from_rfc3339(v1_line["enqueued_at"].as_str().unwrap()).unwrap();
    assert_eq!(exported.timestamp(), old.timestamp());
    take_all(&q.client, &q.dlq_url).await;
    let out = dlq(&q, &["import", &path]).await;
    assert!(!out.status.success());
    assert_eq!(depth(&q.client, &q.dlq_url).await.0, 0);
    dlq_json(&q, &["import", &path, "--force"]).await;
    let restored = take_all(&q.client, &q.dlq_url).await;
    let v1_again = restored
        .iter()
        .find(|m| m.body() == Some(v1))
        .expect("the version-1 letter imported");
    let attribute = v1_again
        .message_attributes()
        .and_then(|a| a.get("enqueued_at"))
        .and_then(|v| v.string_value())
        .expect("its enqueue time");
    assert_eq!(
        DateTime::parse_from_rfc3339(attribute).unwrap().timestamp(),
        old.timestamp()
    );
    dlq_json(&q, &["import", &path, "--force"]).await;

    // Forced: every letter moves, the old ones marked; the writer writes them all.
    let moved = dlq_json(&q, &["replay", "--force"]).await;
    assert_eq!(moved["moved"], 3);
    drain_with(
        &q,
        Writer::new(db.store.clone()).with_dead_letter_queue(q.dlq_sender()),
    )
    .await;
    assert_eq!(db.count().await, 2 + 3 + 1);
    assert_eq!(depth(&q.client, &q.dlq_url).await, (0, 0));
}
