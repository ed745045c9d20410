//! Small fixtures: ingest settings for tests, a router served on a loopback port, and
//! sample readings.

use std::time::Duration;

/// Ingest settings for tests: 1 MiB bodies, 10,000 readings, default limits, no coalescing.
pub fn ingest_config() -> crate::config::IngestConfig {
    crate::config::IngestConfig {
        addr: ([127, 0, 0, 1], 0).into(),
        max_body_bytes: 1 << 20,
        max_readings: 10_000,
        limits: crate::model::reading::Limits::default(),
        coalesce_linger: Duration::ZERO,
    }
}

/// A local writer host's settings for tests: batches of up to ten messages gathered for
/// 50 ms, 1 s long polls, a 30 s visibility timeout, one poller, maintenance hourly.
pub fn poller_config() -> crate::config::PollerConfig {
    crate::config::PollerConfig {
        batch_size: 10,
        batch_window: Duration::from_millis(50),
        wait: Duration::from_secs(1),
        visibility_timeout: Duration::from_secs(30),
        pollers: 1,
        maintenance_every: Duration::from_secs(3600),
    }
}

/// Serves `app` on a free loopback port in the background; returns `http://host:port`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(crate::http::serve_on(app, listener));
    base
}

/// `n` readings a millisecond apart from 2024-03-09T16:00:00Z, locations `{tag}-{i}`,
/// temperatures 0, 1, 2, …
pub fn sample_readings(tag: &str, n: usize) -> Vec<crate::Reading> {
    (0..n)
        .map(|i| crate::Reading {
            time: chrono::DateTime::from_timestamp_micros(1_710_000_000_000_000 + i as i64 * 1_000)
                .expect("in range"),
            location: format!("{tag}-{i}"),
            temperature: i as f64,
        })
        .collect()
}
