//! P3, query latency at scale: p50/p99 of the query routes over HTTP against a table of
//! 10,000,000 readings from 1,000 locations, one every 5 minutes per location over 35 days.
//!
//! On TimescaleDB the table is the hypertable as the writer configures it
//! (`Store::apply_lifecycle` with the defaults: 24 h chunks, compression after 7 days, the
//! hourly continuous aggregate); before measuring, the compression policy's job runs (so
//! every chunk older than 7 days is compressed) and the aggregate is refreshed. 50 of the
//! locations stopped reporting 11 days before the newest reading, so their newest readings
//! sit in compressed chunks. Then the routes are measured a second time with every chunk
//! compressed, and the chunks the policy had left alone are decompressed again.
//!
//! Run with `scripts/bench query [postgres|timescaledb]` (starts a private server and seeds
//! it once), or point `BENCH_DATABASE_URL` at a database this bench may fill and run
//! `cargo bench -p query-api --bench query_latency`.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use readings::config::{AuthConfig, DbConfig, LifecycleConfig};
use readings::http::auth::{create_key, Auth, Scope};
use readings::postgres::store::{Store, TableKind};

const LOCATIONS: i64 = 1_000;
/// Seconds between two readings of one location.
const STEP_SECS: i64 = 300;
/// Readings per location that still reports: 35.3 days of them.
const READINGS_ACTIVE: i64 = 10_160;
/// Locations `sensor-N` with `N % STOPPED_EVERY == STOPPED_EVERY - 1` (50 of them) stopped
/// reporting; they have this many readings, the newest 3,200 steps (11.1 days) before the
/// others' newest.
const STOPPED_EVERY: i64 = 20;
const READINGS_STOPPED: i64 = 6_960;
const ROWS: i64 = (LOCATIONS - LOCATIONS / STOPPED_EVERY) * READINGS_ACTIVE
    + LOCATIONS / STOPPED_EVERY * READINGS_STOPPED;
/// What the seed looks like; a database seeded another way is seeded again.
const SEED_LAYOUT: &str =
    "v2: 1000 locations x 10160 readings every 300 s, 50 stopped 3200 steps early";
/// A seed older than this no longer ends "now" (and more of it would be compressed): reseed.
const SEED_MAX_AGE_HOURS: i32 = 24;

const REQUESTS: usize = 2_000;
const WARMUP: usize = 100;
/// Requests stop at this much time per route (a route far off its goal would take long).
const ROUTE_BUDGET: Duration = Duration::from_secs(60);

/// The request path for the i-th request of a route.
type PathFn = Box<dyn Fn(usize) -> String>;

struct Route {
    name: &'static str,
    path: PathFn,
    /// Goal for p99, in ms.
    goal_ms: f64,
    /// Rows the answer must hold.
    expect_rows: std::ops::RangeInclusive<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BENCH_DATABASE_URL")
        .context("BENCH_DATABASE_URL is not set: run scripts/bench query")?;
    let server = std::env::var("BENCH_SERVER").unwrap_or_else(|_| "(server not named)".into());
    let store = connect(&url)?;
    let kind = store.ready().await.context("setting up the schema")?;
    // Figures recorded under a TimescaleDB server's name must be of a hypertable.
    anyhow::ensure!(
        kind == TableKind::Hypertable || !server.contains("TimescaleDB"),
        "the server is {server}, but sensor_data is a plain table"
    );
    store
        .apply_lifecycle(&LifecycleConfig::default())
        .await
        .context("applying the lifecycle settings")?;
    let anchor = seed(&store, &url, kind).await?;
    // A fresh store: `seed` may have set the schema up again behind the first one's back.
    let store = connect(&url)?;
    let kind = store.ready().await?;
    let client = store.pool().get().await?;
    if kind == TableKind::Hypertable {
        // What the policies would have done by now: compress chunks older than 7 days,
        // materialise the hourly aggregate.
        let job: i32 = client
            .query_one(
                "SELECT job_id FROM timescaledb_information.jobs
                 WHERE proc_name = 'policy_compression' AND hypertable_name = 'sensor_data'",
                &[],
            )
            .await
            .context("finding the compression policy's job (are the lifecycle settings applied?)")?
            .get(0);
        let started = Instant::now();
        client
            .batch_execute(&format!("CALL run_job({job})"))
            .await
            .context("running the compression policy")?;
        client
            .batch_execute("CALL refresh_continuous_aggregate('sensor_data_hourly', NULL, NULL)")
            .await
            .context("refreshing sensor_data_hourly")?;
        client.batch_execute("ANALYZE sensor_data").await?;
        eprintln!(
            "compression job {job} and aggregate refresh: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    // Keys checked, as deployed: each request presents one (its lookup cached, as in a
    // running function).
    let key = create_key(&store, "bench", &[Scope::Query]).await?.key;
    let auth = Auth::new(&AuthConfig::default(), store.clone());
    let app = query_api::router(store.clone(), &auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(readings::http::serve_on(app, listener));
    let http = reqwest::Client::new();

    let age = chrono::Utc::now().timestamp() - anchor;
    println!("server: {server}");
    println!(
        "table: {kind:?}, {ROWS} rows, {LOCATIONS} locations ({} stopped reporting {:.1} days before the newest reading), one reading per {STEP_SECS} s over {:.1} days; seeded {:.1} h ago",
        LOCATIONS / STOPPED_EVERY,
        ((READINGS_ACTIVE - READINGS_STOPPED) * STEP_SECS) as f64 / 86_400.0,
        ((READINGS_ACTIVE - 1) * STEP_SECS) as f64 / 86_400.0,
        age as f64 / 3600.0
    );
    println!(
        "{REQUESTS} sequential requests per route over HTTP (after {WARMUP} warm-up requests; at most {} s per route), API key checked",
        ROUTE_BUDGET.as_secs()
    );

    let routes = routes(anchor);
    if kind == TableKind::Hypertable {
        println!("\n-- as deployed: chunks older than 7 days compressed by the policy");
        println!("{}", chunk_summary(&client).await?);
        measure(&http, &base, &key, &routes).await?;

        // Every chunk compressed, then back to what the policy left.
        let fresh: Vec<String> = client
            .query(
                "SELECT format('%I.%I', chunk_schema, chunk_name)
                 FROM timescaledb_information.chunks
                 WHERE hypertable_name = 'sensor_data' AND NOT is_compressed",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let started = Instant::now();
        for chunk in &fresh {
            client
                .execute("SELECT compress_chunk($1::text::regclass)", &[chunk])
                .await
                .with_context(|| format!("compressing {chunk}"))?;
        }
        client.batch_execute("ANALYZE sensor_data").await?;
        eprintln!(
            "compressed the {} other chunks in {:.1} s",
            fresh.len(),
            started.elapsed().as_secs_f64()
        );
        println!("\n-- every chunk compressed");
        println!("{}", chunk_summary(&client).await?);
        let result = measure(&http, &base, &key, &routes).await;
        let started = Instant::now();
        for chunk in &fresh {
            client
                .execute("SELECT decompress_chunk($1::text::regclass)", &[chunk])
                .await
                .with_context(|| format!("decompressing {chunk}"))?;
        }
        client.batch_execute("ANALYZE sensor_data").await?;
        eprintln!(
            "decompressed them again in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        result?;
    } else {
        println!("\n-- plain table (no chunks, no compression)");
        measure(&http, &base, &key, &routes).await?;
    }
    Ok(())
}

fn connect(url: &str) -> anyhow::Result<Store> {
    Ok(Store::new(&DbConfig {
        url: url.to_owned(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(1800),
        ..Default::default()
    })?)
}

/// The routes, with time ranges that end at the seed's newest reading (`anchor`, epoch
/// seconds), so a seed reused hours later is asked the same questions.
fn routes(anchor: i64) -> Vec<Route> {
    let until = anchor + 1;
    // A location that still reports, and one that stopped, for the i-th request.
    let reporting = |i: usize| {
        let n = i as i64 % LOCATIONS;
        if n % STOPPED_EVERY == STOPPED_EVERY - 1 {
            n - 1
        } else {
            n
        }
    };
    let stopped =
        |i: usize| (i as i64 % (LOCATIONS / STOPPED_EVERY)) * STOPPED_EVERY + STOPPED_EVERY - 1;
    vec![
        Route {
            name: "GET /sensor (newest 5)",
            path: Box::new(|_| "/sensor".into()),
            goal_ms: 5.0,
            expect_rows: 5..=5,
        },
        Route {
            name: "GET /sensor?location=… (newest 5 of one location)",
            path: Box::new(move |i| format!("/sensor?location=sensor-{}", reporting(i))),
            goal_ms: 5.0,
            expect_rows: 5..=5,
        },
        Route {
            name: "GET /sensor?location=… (one that stopped 11 days ago)",
            path: Box::new(move |i| format!("/sensor?location=sensor-{}", stopped(i))),
            goal_ms: 5.0,
            expect_rows: 5..=5,
        },
        Route {
            name: "GET /sensor/latest (all 1,000 locations)",
            path: Box::new(|_| "/sensor/latest".into()),
            goal_ms: 20.0,
            expect_rows: LOCATIONS as usize..=LOCATIONS as usize,
        },
        Route {
            name: "GET /sensor/stats?bucket=1h, 24 h, one location",
            path: Box::new(move |i| {
                format!(
                    "/sensor/stats?bucket=1h&since={}&until={until}&location=sensor-{}",
                    until - 86_400,
                    reporting(i)
                )
            }),
            goal_ms: 20.0,
            // 24 h in hourly buckets: 24, or 25 when the range is not on the hour.
            expect_rows: 24..=25,
        },
        Route {
            name: "GET /sensor/stats?bucket=1h, 30 days, one location",
            path: Box::new(move |i| {
                format!(
                    "/sensor/stats?bucket=1h&since={}&until={until}&location=sensor-{}",
                    until - 30 * 86_400,
                    reporting(i)
                )
            }),
            goal_ms: 20.0,
            expect_rows: 720..=721,
        },
    ]
}

/// The machine's load average (1, 5, 15 min), to tell a quiet run from a busy one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Measures each route and prints a table row for it.
async fn measure(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    routes: &[Route],
) -> anyhow::Result<()> {
    println!("load average before: {}", load_average());
    println!(
        "{:<55} {:>6} {:>9} {:>9} {:>9}  goal (p99)",
        "route", "n", "p50 ms", "p99 ms", "max ms"
    );
    for route in routes {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let started = Instant::now();
        for i in 0..(REQUESTS + WARMUP) {
            let url = format!("{base}{}", (route.path)(i));
            let sent = Instant::now();
            let r = http.get(&url).bearer_auth(key).send().await?;
            anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
            let body = r.bytes().await?;
            let elapsed = sent.elapsed();
            if i < WARMUP {
                // The answers must be whole answers, not empty or short ones.
                let rows: Vec<serde_json::Value> = serde_json::from_slice(&body)
                    .with_context(|| format!("{url}: not a JSON array"))?;
                anyhow::ensure!(
                    route.expect_rows.contains(&rows.len()),
                    "{url}: {} rows, expected {:?}",
                    rows.len(),
                    route.expect_rows
                );
            } else {
                h.record(elapsed.as_micros() as u64)?;
                if started.elapsed() > ROUTE_BUDGET {
                    break;
                }
            }
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let goal = route.goal_ms;
        let verdict = if ms(0.99) <= goal { "met" } else { "MISSED" };
        println!(
            "{:<55} {:>6} {:>9.2} {:>9.2} {:>9.2}  ≤ {goal} ms: {verdict}",
            route.name,
            h.len(),
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
    }
    println!("load average after: {}", load_average());
    Ok(())
}

/// "chunks: 36 of 24 h, 28 compressed (…)", for the hypertable.
async fn chunk_summary(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE is_compressed),
                    min(range_start) FILTER (WHERE NOT is_compressed),
                    (SELECT (extract(epoch FROM d.time_interval) / 3600)::int8
                     FROM timescaledb_information.dimensions d
                     WHERE d.hypertable_name = 'sensor_data' AND d.column_name = 'time')
             FROM timescaledb_information.chunks WHERE hypertable_name = 'sensor_data'",
            &[],
        )
        .await
        .context("counting chunks")?;
    let (chunks, compressed): (i64, i64) = (row.get(0), row.get(1));
    let oldest_plain: Option<chrono::DateTime<chrono::Utc>> = row.get(2);
    let hours: Option<i64> = row.get(3);
    Ok(format!(
        "chunks: {chunks} of {} h, {compressed} compressed{}",
        hours.map_or("?".into(), |h| h.to_string()),
        oldest_plain.map_or(String::new(), |t| format!(
            "; the uncompressed ones start at {} and later",
            t.format("%Y-%m-%d %H:%M UTC")
        ))
    ))
}

/// Seeds the readings once per database (again when the seed is of another layout or too
/// old). Returns the newest reading's time, epoch seconds.
async fn seed(store: &Store, url: &str, kind: TableKind) -> anyhow::Result<i64> {
    let client = store.pool().get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_seed (
                 layout TEXT NOT NULL, rows BIGINT NOT NULL, anchor TIMESTAMPTZ NOT NULL)",
        )
        .await?;
    let have = client
        .query_opt(
            "SELECT extract(epoch FROM anchor)::int8,
                    anchor > now() - make_interval(hours => $3::int4)
             FROM bench_seed WHERE layout = $1 AND rows = $2",
            &[&SEED_LAYOUT, &ROWS, &SEED_MAX_AGE_HOURS],
        )
        .await?;
    match have {
        Some(row) if row.get::<_, bool>(1) => return Ok(row.get(0)),
        Some(_) => eprintln!("the seed is over {SEED_MAX_AGE_HOURS} h old: seeding again"),
        None => {}
    }
    eprintln!("seeding {ROWS} rows ({kind:?}; once, takes minutes)…");
    let started = Instant::now();
    // Start from an empty schema, set up as the functions set it up, so the hypertable gets
    // its 24 h chunks and the aggregate starts empty.
    client
        .batch_execute(
            "DROP MATERIALIZED VIEW IF EXISTS sensor_data_hourly CASCADE;
             DROP TABLE IF EXISTS sensor_data, sensor_locations CASCADE;
             DELETE FROM pipeline_schema;
             DELETE FROM bench_seed;",
        )
        .await
        .context("dropping the old seed")?;
    drop(client);
    let store = connect(url)?;
    store.ready().await?;
    store
        .apply_lifecycle(&LifecycleConfig::default())
        .await
        .context("applying the lifecycle settings")?;
    let client = store.pool().get().await?;
    let anchor: i64 = client
        .query_one(
            "SELECT extract(epoch FROM date_trunc('second', now()))::int8",
            &[],
        )
        .await?
        .get(0);
    let stopped_lag = READINGS_ACTIVE - READINGS_STOPPED;
    // Oldest first, as the readings would have arrived; the millisecond offsets keep
    // locations' readings apart in time.
    client
        .batch_execute(&format!(
            "INSERT INTO sensor_data (time, location, temperature)
             SELECT to_timestamp({anchor}) - k * INTERVAL '{STEP_SECS} seconds'
                        - l * INTERVAL '1 millisecond',
                    'sensor-' || l,
                    20 + 5 * sin((k + l) / 50.0) + (l % 7) * 0.1
             FROM generate_series({READINGS_ACTIVE} - 1, 0, -1) k
             CROSS JOIN generate_series(0, {LOCATIONS} - 1) l
             WHERE l % {STOPPED_EVERY} <> {STOPPED_EVERY} - 1 OR k >= {stopped_lag};
             INSERT INTO sensor_locations (location)
             SELECT 'sensor-' || l FROM generate_series(0, {LOCATIONS} - 1) l
             ON CONFLICT DO NOTHING;"
        ))
        .await
        .context("inserting the readings")?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM sensor_data", &[])
        .await?
        .get(0);
    anyhow::ensure!(rows == ROWS, "seeded {rows} rows, expected {ROWS}");
    // VACUUM cannot run in the implicit transaction of a multi-statement batch.
    client.batch_execute("VACUUM ANALYZE sensor_data").await?;
    client.batch_execute("ANALYZE sensor_locations").await?;
    client
        .execute(
            "INSERT INTO bench_seed (layout, rows, anchor) VALUES ($1, $2, to_timestamp($3::int8))",
            &[&SEED_LAYOUT, &ROWS, &anchor],
        )
        .await?;
    eprintln!("seeded in {:.0} s", started.elapsed().as_secs_f64());
    Ok(anchor)
}
