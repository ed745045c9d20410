//! Query latency at scale: p50/p99 of the query routes over HTTP against a table of
//! 10,000,000 readings from 1,000 locations.
//!
//! Run with `scripts/bench query` (starts a private PostgreSQL and seeds it once), or point
//! `BENCH_DATABASE_URL` at a database of your own (e.g. one with TimescaleDB) and run
//! `cargo bench -p query-api --bench query_latency`.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use readings::auth::{create_key, Auth, Scope};
use readings::config::{AuthConfig, DbConfig};
use readings::store::Store;

const ROWS: i64 = 10_000_000;
const LOCATIONS: i64 = 1_000;
const REQUESTS: usize = 2_000;

/// The request path for the i-th request of a route.
type PathFn = Box<dyn Fn(usize) -> String>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BENCH_DATABASE_URL")
        .context("BENCH_DATABASE_URL is not set: run scripts/bench query")?;
    let store = Store::new(&DbConfig {
        url: url.clone(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(600),
        ..Default::default()
    })?;
    let kind = store.ready().await?;
    seed(&store).await?;

    // Keys checked, as deployed: each request presents one (its lookup cached, as in a
    // running function).
    let key = create_key(&store, "bench", &[Scope::Query]).await?.key;
    let auth = Auth::new(&AuthConfig::default(), store.clone());
    let app = query_api::router(store, &auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(readings::http::serve_on(app, listener));
    let client = reqwest::Client::new();

    println!("table: {kind:?}, {ROWS} rows, {LOCATIONS} locations; {REQUESTS} sequential requests per route over HTTP (after 100 warm-up requests)");
    println!(
        "{:<58} {:>9} {:>9} {:>9}",
        "route", "p50 ms", "p99 ms", "max ms"
    );
    let until = chrono::Utc::now().timestamp();
    let routes: Vec<(&str, PathFn)> = vec![
        ("GET /sensor (newest 5)", Box::new(|_| "/sensor".into())),
        (
            "GET /sensor?location=… (newest 5 of one location)",
            Box::new(|i| format!("/sensor?location=sensor-{}", i as i64 % LOCATIONS)),
        ),
        (
            "GET /sensor/latest (all 1,000 locations)",
            Box::new(|_| "/sensor/latest".into()),
        ),
        (
            "GET /sensor/stats?bucket=1h, 24 h, one location",
            Box::new(move |i| {
                format!(
                    "/sensor/stats?bucket=1h&since={}&until={until}&location=sensor-{}",
                    until - 86_400,
                    i as i64 % LOCATIONS
                )
            }),
        ),
    ];
    for (name, path) in routes {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..(REQUESTS + 100) {
            let url = format!("{base}{}", path(i));
            let started = Instant::now();
            let r = client.get(&url).bearer_auth(&key).send().await?;
            anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
            r.bytes().await?;
            if i >= 100 {
                h.record(started.elapsed().as_micros() as u64)?;
            }
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<58} {:>9.2} {:>9.2} {:>9.2}",
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

/// Seeds 10,000,000 readings (one a minute per location, the newest now) once per database.
async fn seed(store: &Store) -> anyhow::Result<()> {
    let client = store.pool().get().await?;
    let have: i64 = client
        .query_one("SELECT count(*) FROM sensor_data", &[])
        .await?
        .get(0);
    if have == ROWS {
        return Ok(());
    }
    eprintln!("seeding {ROWS} rows (once; takes a few minutes)…");
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "TRUNCATE sensor_data, sensor_locations;
             INSERT INTO sensor_data (time, location, temperature)
             SELECT now() - (i / {LOCATIONS}) * INTERVAL '1 minute' - (i % {LOCATIONS}) * INTERVAL '1 millisecond',
                    'sensor-' || (i % {LOCATIONS}),
                    20 + 5 * sin(i / 5000.0) + (i % 7) * 0.1
             FROM generate_series(0, {ROWS} - 1) i;
             INSERT INTO sensor_locations (location)
             SELECT 'sensor-' || i FROM generate_series(0, {LOCATIONS} - 1) i;"
        ))
        .await?;
    // VACUUM cannot run in the implicit transaction of a multi-statement batch.
    client.batch_execute("VACUUM ANALYZE sensor_data").await?;
    client.batch_execute("ANALYZE sensor_locations").await?;
    eprintln!("seeded in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
