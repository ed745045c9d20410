//! P1, writer throughput: the batch-writer's write path (decode + binary COPY + batch-id
//! records, one transaction per SQS event) for 1,000,000 readings, one stream and several
//! concurrent ones (as the local poller's `WRITER_POLLERS` or Lambda's concurrent batches
//! run it), against `psql \copy … (FORMAT binary)` of the same rows into the same table on
//! the same server, and against the tutorial's one INSERT + COMMIT per reading. Every path's
//! row count is checked.
//!
//! On TimescaleDB the hypertable is configured as the writer deploys it
//! (`Store::apply_lifecycle` with the defaults) before anything is measured, and one more
//! path is timed: late readings written into a time range whose chunks are compressed.
//!
//! Run with `scripts/bench write [postgres|timescaledb]`, or set `BENCH_DATABASE_URL` (a
//! database this bench may empty) and `PSQL` (the psql binary) and run
//! `cargo bench -p batch-writer --bench write_path`.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use readings::config::{DbConfig, LifecycleConfig};
use readings::model::envelope::pack;
use readings::postgres::store::{Store, TableKind};
use readings::writer::Writer;
use readings::Reading;

const READINGS: usize = 1_000_000;
const LOCATIONS: usize = 1_000;
/// Messages per SQS event (and so per transaction).
const EVENT_MESSAGES: usize = 10;
const TUTORIAL_ROWS: usize = 20_000;
/// Concurrent writers measured (the local poller runs `WRITER_POLLERS`, default 2).
const CONCURRENCY: [usize; 2] = [2, 4];
/// Each path is timed this many times, alternating; the median is reported.
const ROUNDS: usize = 5;
/// Late data: readings already in the table (then compressed), over 10 days ending 21 days
/// ago, one per location every 10 minutes.
const OLD_DAYS: i64 = 10;
const OLD_END_DAYS_AGO: i64 = 21;
const TRUNCATE: &str = "TRUNCATE sensor_data, ingest_batches, written_batches, sensor_locations";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BENCH_DATABASE_URL")
        .context("BENCH_DATABASE_URL is not set: run scripts/bench write")?;
    let psql = std::env::var("PSQL").unwrap_or_else(|_| "psql".into());
    let server = std::env::var("BENCH_SERVER").unwrap_or_else(|_| "(server not named)".into());
    let store = connect(&url, 2)?;
    let kind = store.ready().await.context("setting up the schema")?;
    // Figures recorded under a TimescaleDB server's name must be of a hypertable.
    anyhow::ensure!(
        kind == TableKind::Hypertable || !server.contains("TimescaleDB"),
        "the server is {server}, but sensor_data is a plain table"
    );
    // As deployed: on TimescaleDB 24 h chunks, compression after 7 days, the hourly
    // continuous aggregate (on a plain table this only records the settings).
    store
        .apply_lifecycle(&LifecycleConfig::default())
        .await
        .context("applying the lifecycle settings")?;
    let client = store.pool().get().await?;

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
    let (messages, events) = sqs_events("bench", &readings)?;

    println!("server: {server}; sensor_data is a {kind:?} table");
    println!(
        "{READINGS} readings, {LOCATIONS} locations, {messages} messages in {} events of {EVENT_MESSAGES}; each path timed {ROUNDS} times, median shown",
        events.len()
    );

    // The same rows as a binary COPY file, for psql's \copy. COPY of a query, not of the
    // table: on a hypertable `COPY sensor_data TO` exports only the (empty) root table.
    client.batch_execute(TRUNCATE).await?;
    write_events(&url, &events, 1).await?;
    expect_rows(&client, READINGS, "batch-writer").await?;
    let file = std::env::temp_dir().join("sensor-bench-copy.bin");
    let _ = std::fs::remove_file(&file);
    client
        .batch_execute(&format!(
            "COPY (SELECT time, location, temperature FROM sensor_data) TO '{}' (FORMAT binary)",
            file.display()
        ))
        .await
        .context("server-side COPY TO (the bench needs a superuser on a local server)")?;

    println!("load average before: {}", load_average());
    let mut writer_secs = Vec::new();
    let mut copy_secs = Vec::new();
    let mut concurrent_secs = vec![Vec::new(); CONCURRENCY.len()];
    for _ in 0..ROUNDS {
        client.batch_execute(TRUNCATE).await?;
        writer_secs.push(write_events(&url, &events, 1).await?);
        expect_rows(&client, READINGS, "batch-writer").await?;

        client.batch_execute(TRUNCATE).await?;
        copy_secs.push(psql_copy(&psql, &url, &file)?);
        expect_rows(&client, READINGS, "psql \\copy").await?;

        for (n, secs) in CONCURRENCY.iter().zip(&mut concurrent_secs) {
            client.batch_execute(TRUNCATE).await?;
            secs.push(write_events(&url, &events, *n).await?);
            expect_rows(&client, READINGS, &format!("{n} concurrent writers")).await?;
        }
    }
    let _ = std::fs::remove_file(&file);

    // The tutorial: one INSERT and COMMIT per reading.
    client.batch_execute(TRUNCATE).await?;
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
    expect_rows(&client, TUTORIAL_ROWS, "tutorial INSERT").await?;
    client.batch_execute(TRUNCATE).await?;

    println!("load average after: {}", load_average());
    let rate = |rows: usize, secs: f64| rows as f64 / secs;
    let writer = median(&writer_secs);
    let copy = median(&copy_secs);
    let copy_rate = rate(READINGS, copy);
    let row = |name: &str, secs: f64, rows: usize| {
        println!(
            "{name:<52} {secs:>8.2} {:>12.0} {:>7.2}",
            rate(rows, secs),
            rate(rows, secs) / copy_rate
        );
    };
    println!(
        "{:<52} {:>8} {:>12} {:>7}",
        "path", "seconds", "readings/s", "× copy"
    );
    row(
        "batch-writer, 1 stream (decode + COPY + batch ids)",
        writer,
        READINGS,
    );
    for (n, secs) in CONCURRENCY.iter().zip(&concurrent_secs) {
        row(
            &format!("batch-writer, {n} concurrent streams"),
            median(secs),
            READINGS,
        );
    }
    row("psql \\copy (FORMAT binary)", copy, READINGS);
    row(
        &format!("tutorial INSERT+COMMIT ({TUTORIAL_ROWS} rows)"),
        tutorial_secs,
        TUTORIAL_ROWS,
    );
    println!(
        "all runs, seconds: writer {writer_secs:.2?}; psql {copy_secs:.2?}; {}",
        CONCURRENCY
            .iter()
            .zip(&concurrent_secs)
            .map(|(n, s)| format!("{n} streams {s:.2?}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let verdict = |ratio: f64, goal: f64| {
        let met = if ratio >= goal { "met" } else { "MISSED" };
        format!("{ratio:.3} (goal ≥ {goal:.2}: {met})")
    };
    println!(
        "writer, 1 stream / psql \\copy = {}",
        verdict(copy / writer, 0.85)
    );
    for (n, secs) in CONCURRENCY.iter().zip(&concurrent_secs) {
        println!(
            "writer, {n} streams / psql \\copy = {}",
            verdict(copy / median(secs), 1.0)
        );
    }

    if kind == TableKind::Hypertable {
        late_into_compressed(&url, &client, writer).await?;
    } else {
        println!(
            "late data into compressed chunks: skipped (a plain table has no chunks to compress)"
        );
    }
    Ok(())
}

/// Late readings into a time range whose chunks are compressed: seeds 10 days of readings
/// ending 21 days ago, compresses their chunks, then times the writer writing 1,000,000
/// more readings into that range, checks they are all there once, and that handing the same
/// events again (a redelivery) adds nothing.
async fn late_into_compressed(
    url: &str,
    client: &tokio_postgres::Client,
    recent_writer_secs: f64,
) -> anyhow::Result<()> {
    client.batch_execute(TRUNCATE).await?;
    // The old range ends at a UTC midnight, so it fills whole 24 h chunks.
    let end = (chrono::Utc::now() - chrono::TimeDelta::days(OLD_END_DAYS_AGO))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp();
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO sensor_data (time, location, temperature)
             SELECT to_timestamp({end}) - k * INTERVAL '10 minutes' - l * INTERVAL '1 millisecond',
                    'sensor-' || lpad(l::text, 4, '0'),
                    20 + (k % 100) / 10.0
             FROM generate_series({OLD_DAYS} * 144, 1, -1) k
             CROSS JOIN generate_series(0, {LOCATIONS} - 1) l;
             ANALYZE sensor_data;"
        ))
        .await
        .context("seeding the old range")?;
    let old: i64 = client
        .query_one("SELECT count(*) FROM sensor_data", &[])
        .await?
        .get(0);
    let compressed: i64 = client
        .query_one(
            "SELECT count(compress_chunk(c, if_not_compressed => TRUE))
             FROM show_chunks('sensor_data', older_than => INTERVAL '7 days') c",
            &[],
        )
        .await
        .context("compressing the old range")?
        .get(0);
    let (chunks, compressed_now) = chunk_counts(client).await?;
    anyhow::ensure!(
        compressed_now == chunks && chunks > 0,
        "{compressed_now} of {chunks} chunks compressed"
    );
    eprintln!(
        "late data: seeded {old} rows in {chunks} chunks, compressed {compressed} of them, in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 1,000,000 late readings in between the old ones: distinct times, temperatures ≥ 100.
    let span = OLD_DAYS * 86_400_000_000;
    let step = span / READINGS as i64;
    let first = end * 1_000_000 - span + 7;
    let late: Vec<Reading> = (0..READINGS)
        .map(|i| Reading {
            time: chrono::DateTime::from_timestamp_micros(first + i as i64 * step)
                .unwrap_or_default(),
            location: format!("sensor-{:04}", i % LOCATIONS),
            temperature: 100.0 + (i % 100) as f64 / 10.0,
        })
        .collect();
    let (_, events) = sqs_events("late", &late)?;
    let secs = write_events(url, &events, 1).await?;
    let (total, late_rows) = late_counts(client).await?;
    anyhow::ensure!(
        total == old + READINGS as i64 && late_rows == READINGS as i64,
        "after the late write: {total} rows, {late_rows} late, expected {} and {READINGS}",
        old + READINGS as i64
    );
    let partial: i64 = client
        .query_one(
            "SELECT count(*) FROM _timescaledb_catalog.chunk c
             JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
             WHERE h.table_name = 'sensor_data' AND c.status & 8 <> 0",
            &[],
        )
        .await
        .context("counting partially compressed chunks")?
        .get(0);
    // A redelivery of every event: the writer must skip all of it.
    let again = write_events(url, &events, 1).await?;
    let (total_again, late_again) = late_counts(client).await?;
    anyhow::ensure!(
        (total_again, late_again) == (total, late_rows),
        "a redelivery changed the table: {total_again} rows, {late_again} late"
    );
    let (chunks, compressed) = chunk_counts(client).await?;
    println!(
        "late data into compressed chunks: {READINGS} readings into {chunks} chunks \
         ({compressed} compressed, {partial} of them now partially) holding {old} rows: \
         {secs:.2} s, {:.0} readings/s ({:.2}× the writer into recent chunks); \
         rows checked: {total} = {old} + {READINGS}; the same events again added nothing ({again:.2} s)",
        READINGS as f64 / secs,
        recent_writer_secs / secs
    );
    client.batch_execute(TRUNCATE).await?;
    Ok(())
}

fn connect(url: &str, pool_size: usize) -> anyhow::Result<Store> {
    Ok(Store::new(&DbConfig {
        url: url.to_owned(),
        pool_size,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(600),
        ..Default::default()
    })?)
}

/// Envelopes of up to 256 KiB (10,000 readings per batch id), 10 messages per SQS event.
fn sqs_events(prefix: &str, readings: &[Reading]) -> anyhow::Result<(usize, Vec<SqsEvent>)> {
    let mut bodies = Vec::new();
    for (n, chunk) in readings.chunks(10_000).enumerate() {
        bodies.extend(pack(&format!("{prefix}-{n}"), chunk, 262_144)?);
    }
    let events = bodies
        .chunks(EVENT_MESSAGES)
        .enumerate()
        .map(|(e, chunk)| {
            let mut event = SqsEvent::default();
            event.records = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    let mut m = SqsMessage::default();
                    m.message_id = Some(format!("{prefix}-m-{e}-{i}"));
                    m.body = Some(body.clone());
                    m
                })
                .collect();
            event
        })
        .collect();
    Ok((bodies.len(), events))
}

/// Hands the events to `streams` concurrent writers over one store (a fresh one, as a
/// process starting: empty location cache), each taking every `streams`-th event, as
/// concurrent pollers share a queue. Returns the seconds from the first event to the last
/// answer.
async fn write_events(url: &str, events: &[SqsEvent], streams: usize) -> anyhow::Result<f64> {
    let store = connect(url, streams + 1)?;
    store.ready().await?;
    let writer = Writer::new(store);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..streams {
        let writer = writer.clone();
        let share: Vec<SqsEvent> = events.iter().skip(s).step_by(streams).cloned().collect();
        tasks.spawn(async move {
            for event in share {
                let r = writer
                    .handle(event, std::time::Instant::now() + Duration::from_secs(600))
                    .await;
                anyhow::ensure!(r.batch_item_failures.is_empty(), "write failed: {r:?}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a writer task panicked")??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `psql \copy … FROM file (FORMAT binary)`; returns its seconds.
fn psql_copy(psql: &str, url: &str, file: &std::path::Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = std::process::Command::new(psql)
        .args([
            url,
            "-X",
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
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

async fn expect_rows(
    client: &tokio_postgres::Client,
    want: usize,
    path: &str,
) -> anyhow::Result<()> {
    let rows: i64 = client
        .query_one("SELECT count(*) FROM sensor_data", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        rows == want as i64,
        "{path}: {rows} rows in sensor_data, expected {want}"
    );
    Ok(())
}

/// (rows, late rows) in the table.
async fn late_counts(client: &tokio_postgres::Client) -> anyhow::Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE temperature >= 100) FROM sensor_data",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// (chunks, compressed chunks) of the hypertable.
async fn chunk_counts(client: &tokio_postgres::Client) -> anyhow::Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE is_compressed)
             FROM timescaledb_information.chunks WHERE hypertable_name = 'sensor_data'",
            &[],
        )
        .await
        .context("counting chunks")?;
    Ok((row.get(0), row.get(1)))
}

/// The machine's load average (1, 5, 15 min), to tell a quiet run from a busy one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(secs: &[f64]) -> f64 {
    let mut s = secs.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}
