//! P4, footprint: release binary sizes, process start → ready, and the writer's peak
//! resident memory while it handles one SQS event of 10,000 messages (Lambda's largest
//! batch) under the Lambda runtime API.
//!
//! Run with `scripts/bench footprint` (builds the release binaries first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use readings::model::envelope::pack;
use readings::testing::FakeLambdaRuntime;
use readings::Reading;
use serde_json::{json, Value};

const MESSAGES: usize = 10_000;
const READINGS_PER_MESSAGE: usize = 10;
const STARTS: usize = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BENCH_DATABASE_URL")
        .context("BENCH_DATABASE_URL is not set: run scripts/bench footprint")?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .context("locating target/release")?;
    let bin = |name: &str| bin_dir.join(name);

    println!("{:<14} {:>12}", "binary", "size (MiB)");
    for name in ["ingest-api", "batch-writer", "query-api"] {
        let len = std::fs::metadata(bin(name))
            .with_context(|| {
                format!(
                    "{}: build with cargo build --release --bins",
                    bin(name).display()
                )
            })?
            .len();
        println!("{name:<14} {:>12.1}", len as f64 / (1024.0 * 1024.0));
    }

    println!(
        "\nstart → ready (median of {STARTS}), local host: until the port accepts connections"
    );
    for (name, addr_var) in [("ingest-api", "INGEST_ADDR"), ("query-api", "QUERY_ADDR")] {
        let mut times = Vec::new();
        for _ in 0..STARTS {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let started = Instant::now();
            let mut child = tokio::process::Command::new(bin(name))
                .env(addr_var, format!("127.0.0.1:{port}"))
                .env("QUEUE_URL", "http://127.0.0.1:9/000000000000/none")
                .env("SQS_MAX_MESSAGE_BYTES", "262144")
                .env("DATABASE_URL", &url)
                .env("RUST_LOG", "warn")
                // As under Lambda: the region is given, nothing is looked up.
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench")
                .kill_on_drop(true)
                .spawn()?;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(10),
                    "{name} never listened"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            times.push(started.elapsed());
            child.kill().await?;
        }
        times.sort();
        println!(
            "{name:<14} {:>9.1} ms",
            times[STARTS / 2].as_secs_f64() * 1e3
        );
    }

    // Lambda: a cold start that answers a one-message event.
    let one = event(1, 1);
    let mut times = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let answers = FakeLambdaRuntime::invoke(
            bin("batch-writer").to_str().context("path")?,
            // No EMF lines on the terminal; emitting them is not what this measures.
            &[
                ("DATABASE_URL", &url),
                ("RUST_LOG", "error"),
                ("METRICS", "off"),
            ],
            vec![one.clone()],
        )
        .await;
        anyhow::ensure!(
            answers[0].1["batchItemFailures"] == json!([]),
            "{:?}",
            answers[0]
        );
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{:<14} {:>9.1} ms  (Lambda host: start, schema check, answer a 1-message event)",
        "batch-writer",
        times[STARTS / 2].as_secs_f64() * 1e3
    );

    // Peak memory for Lambda's largest batch.
    let big = event(MESSAGES, READINGS_PER_MESSAGE);
    let event_bytes = big.to_string().len();
    let mut runtime = FakeLambdaRuntime::start(vec![big]).await;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin("batch-writer"))
        .envs(runtime.env())
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "error")
        // Metrics on, as under Lambda; their lines are not shown.
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let (_, answer) = runtime.next_response().await;
    let elapsed = started.elapsed();
    anyhow::ensure!(answer["batchItemFailures"] == json!([]), "{answer}");
    let pid = child.id().context("writer pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("VmHWM")?
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse::<u64>()?;
    child.kill().await?;
    println!(
        "\nbatch-writer peak RSS handling one event of {MESSAGES} messages ({} readings, {:.1} MiB of JSON): {:.1} MiB; answered in {:.2} s",
        MESSAGES * READINGS_PER_MESSAGE,
        event_bytes as f64 / (1024.0 * 1024.0),
        hwm as f64 / 1024.0,
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// An SQS event of `messages` envelopes of `per` readings each, with fresh batch ids.
fn event(messages: usize, per: usize) -> Value {
    let run = chrono::Utc::now().timestamp_micros();
    let records: Vec<Value> = (0..messages)
        .map(|m| {
            let readings: Vec<Reading> = (0..per)
                .map(|i| Reading {
                    time: chrono::DateTime::from_timestamp_micros(run - (m * per + i) as i64)
                        .unwrap_or_default(),
                    location: format!("sensor-{:04}", (m * per + i) % 1000),
                    temperature: 21.5,
                })
                .collect();
            let body = pack(&format!("fp-{run}-{m}"), &readings, 262_144)
                .ok()
                .and_then(|mut b| b.pop())
                .unwrap_or_default();
            json!({
                "messageId": format!("m-{m}"),
                "receiptHandle": format!("r-{m}"),
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sensor-readings",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}
