//! P1, writer throughput: the batch-writer's write path (decode + binary COPY + batch-id
//! records, one transaction per SQS event) for 1,000,000 readings, against `psql \copy …
//! (FORMAT BINARY)` of the same rows into the same table on the same server, and against
//! the tutorial's one INSERT + COMMIT per reading.
//!
//! Run with `scripts/bench write`, or set `BENCH_DATABASE_URL` (a database this bench may
//! empty) and `PSQL` (the psql binary) and run `cargo bench -p batch-writer --bench write_path`.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use readings::config::DbConfig;
use readings::envelope::pack;
use readings::store::Store;
use readings::writer::Writer;
use readings::Reading;

const READINGS: usize = 1_000_000;
const LOCATIONS: usize = 1_000;
/// Messages per SQS event (and so per transaction).
const EVENT_MESSAGES: usize = 10;
const TUTORIAL_ROWS: usize = 20_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BENCH_DATABASE_URL")
        .context("BENCH_DATABASE_URL is not set: run scripts/bench write")?;
    let psql = std::env::var("PSQL").unwrap_or_else(|_| "psql".into());
    let store = Store::new(&DbConfig {
        url: url.clone(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(600),
        ..Default::default()
    })?;
    store.ready().await?;
    let client = store.pool().get().await?;
    let truncate = "TRUNCATE sensor_data, ingest_batches, sensor_locations";

    // The messages SQS would hold: envelopes packed to 256 KiB, 10 per event.
    let base = chrono::Utc::now().timestamp_micros() - READINGS as i64 * 1_000;
    let readings: Vec<Reading> = (0..READINGS)
        .map(|i| Reading {
            time: chrono::DateTime::from_timestamp_micros(base + i as i64 * 1_000)
                .unwrap_or_default(),
            location: format!("sensor-{:04}", i % LOCATIONS),
            temperature: 20.0 + (i % 100) as f64 / 10.0,
        })
        .collect();
    let mut bodies = Vec::new();
    for (n, chunk) in readings.chunks(10_000).enumerate() {
        bodies.extend(pack(&format!("bench-{n}"), chunk, 262_144)?);
    }
    let events: Vec<SqsEvent> = bodies
        .chunks(EVENT_MESSAGES)
        .enumerate()
        .map(|(e, chunk)| {
            let mut event = SqsEvent::default();
            event.records = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    let mut m = SqsMessage::default();
                    m.message_id = Some(format!("m-{e}-{i}"));
                    m.body = Some(body.clone());
                    m
                })
                .collect();
            event
        })
        .collect();

    client.batch_execute(truncate).await?;
    let writer = Writer::new(store.clone());
    let started = Instant::now();
    for event in events {
        let r = writer
            .handle(event, std::time::Instant::now() + Duration::from_secs(600))
            .await;
        anyhow::ensure!(r.batch_item_failures.is_empty(), "write failed: {r:?}");
    }
    let writer_secs = started.elapsed().as_secs_f64();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM sensor_data", &[])
        .await?
        .get(0);
    anyhow::ensure!(rows == READINGS as i64, "{rows} rows written");

    // The same rows as a binary COPY file, loaded by psql's \copy into the emptied table.
    let file = std::env::temp_dir().join("sensor-bench-copy.bin");
    let _ = std::fs::remove_file(&file);
    client
        .batch_execute(&format!(
            "COPY sensor_data TO '{}' (FORMAT binary)",
            file.display()
        ))
        .await
        .context("server-side COPY TO (the bench needs a superuser on a local server)")?;
    client.batch_execute(truncate).await?;
    let started = Instant::now();
    let out = std::process::Command::new(&psql)
        .args([
            &url,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!(
                "\\copy sensor_data (time, location, temperature) FROM '{}' (FORMAT binary)",
                file.display()
            ),
        ])
        .output()
        .with_context(|| format!("running {psql}"))?;
    let copy_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);

    // The tutorial: one INSERT and COMMIT per reading.
    client.batch_execute(truncate).await?;
    let insert = client
        .prepare("INSERT INTO sensor_data (time, location, temperature) VALUES ($1, $2, $3)")
        .await?;
    let started = Instant::now();
    for r in &readings[..TUTORIAL_ROWS] {
        client
            .execute(&insert, &[&r.time, &r.location, &r.temperature])
            .await?;
    }
    let tutorial_secs = started.elapsed().as_secs_f64();
    client.batch_execute(truncate).await?;

    let rate = |rows: usize, secs: f64| rows as f64 / secs;
    let writer_rate = rate(READINGS, writer_secs);
    let copy_rate = rate(READINGS, copy_secs);
    println!(
        "{READINGS} readings, {LOCATIONS} locations, {} messages in events of {EVENT_MESSAGES}",
        bodies.len()
    );
    println!("{:<44} {:>10} {:>14}", "path", "seconds", "readings/s");
    println!(
        "{:<44} {:>10.2} {:>14.0}",
        "batch-writer (decode + COPY + batch ids)", writer_secs, writer_rate
    );
    println!(
        "{:<44} {:>10.2} {:>14.0}",
        "psql \\copy (FORMAT binary)", copy_secs, copy_rate
    );
    println!(
        "{:<44} {:>10.2} {:>14.0}",
        format!("tutorial INSERT+COMMIT ({TUTORIAL_ROWS} rows)"),
        tutorial_secs,
        rate(TUTORIAL_ROWS, tutorial_secs)
    );
    println!("writer / raw COPY = {:.2}", writer_rate / copy_rate);
    Ok(())
}
