//! Forged API keys: what a flood of made-up keys costs the database, and what it does to
//! the latency of requests with a real key. query-api over HTTP on loopback, keys checked
//! as deployed (`AUTH_CACHE_SECS` 30), a pool of 4 connections as a local function has.
//!
//! Three phases, the first two alternating `AUTH_BENCH_ROUNDS` times (default 3) so that
//! what else the machine does weighs on both alike. Each is followed by a wait for
//! PostgreSQL's statistics (an idle backend reports its transaction counts up to 10 s late),
//! then the database's transactions (`xact_commit + xact_rollback` of `pg_stat_database`,
//! read from a connection to another database) over the phase:
//!
//! 1. real keys alone: 2,000 `GET /sensor` with a real key, one every 2 ms, one at a time
//!    (a request held up by the one before counts from its scheduled time);
//! 2. the same during a flood of forged keys at `AUTH_FLOOD_RATE` requests/s (default 2,000),
//!    at most `AUTH_FLOOD_CONCURRENCY` in flight (default 64);
//! 3. the flood alone: exactly 2,000 forged keys at the same rate.
//!
//! Forged keys are made-up ids in the format without a checksum, made-up ids with a
//! correct checksum (anyone can compute it), keys whose checksum does not match, and the
//! real key's id with another secret, a quarter each. Every one must be answered 401.
//!
//! Run with `scripts/bench auth [postgres|timescaledb]`, or point `BENCH_DATABASE_URL` at a
//! database this bench may use and run `cargo bench -p query-api --bench auth_flood`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::Rng;
use readings::config::{AuthConfig, DbConfig};
use readings::http::auth::{create_key, Auth, Scope};
use readings::postgres::store::Store;

/// Real-key requests measured per phase, after the warm-up, one per `REAL_INTERVAL`.
const REQUESTS: usize = 2_000;
const REAL_INTERVAL: Duration = Duration::from_millis(2);
const WARMUP: usize = 100;
/// Forged keys of phase 3.
const FORGED: u64 = 2_000;
/// How long PostgreSQL's statistics may lag: an idle backend reports within 10 s.
const STATS_DELAY: Duration = Duration::from_secs(11);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BENCH_DATABASE_URL")
        .context("BENCH_DATABASE_URL is not set: run scripts/bench auth")?;
    let server = std::env::var("BENCH_SERVER").unwrap_or_else(|_| "(server not named)".into());
    let rate: u64 = env_or("AUTH_FLOOD_RATE", 2_000)?;
    let concurrency: usize = env_or("AUTH_FLOOD_CONCURRENCY", 64)?;
    let rounds: usize = env_or("AUTH_BENCH_ROUNDS", 3)?;
    let store = Store::new(&DbConfig {
        url: url.clone(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        ..Default::default()
    })?;
    store.ready().await.context("setting up the schema")?;
    let client = store.pool().get().await?;
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await?
        .get(0);
    // A few readings, so GET /sensor answers its five.
    client
        .batch_execute(
            "INSERT INTO sensor_data (time, location, temperature)
             SELECT now() - i * INTERVAL '1 second', 'bench-' || (i % 10), 20
             FROM generate_series(1, 1000) i",
        )
        .await
        .context("seeding readings")?;
    drop(client);
    // The keys a deployment has besides the one measured.
    for i in 0..100 {
        create_key(&store, &format!("fleet {i}"), &[Scope::Ingest]).await?;
    }
    let key = create_key(&store, "bench", &[Scope::Query]).await?;
    let auth = Auth::new(&AuthConfig::default(), store.clone());
    let app = query_api::router(store.clone(), &auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(readings::http::serve_on(app, listener));
    let monitor = Monitor::connect(&url, &database).await?;

    println!("server: {server}");
    println!(
        "GET /sensor with a real key: {REQUESTS} requests, one every {} ms, one at a time (after {WARMUP} warm-up); forged keys at {rate}/s, at most {concurrency} in flight; API keys cached {} s",
        REAL_INTERVAL.as_millis(),
        AuthConfig::default().cache_ttl.as_secs()
    );
    println!("load average before: {}", load_average());
    let http = reqwest::Client::new();
    let sensor = format!("{base}/sensor");
    real_requests(&http, &sensor, &key.key, WARMUP).await?;
    tokio::time::sleep(STATS_DELAY).await;

    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>8} {:>14}",
        "phase", "p50 ms", "p99 ms", "max ms", "forged", "transactions"
    );
    // Rounds of the first two phases, alternating, so that what else the machine does
    // weighs on both alike.
    let mut extra = Vec::new();
    for round in 1..=rounds {
        let before = monitor.transactions().await?;
        let alone = real_requests(&http, &sensor, &key.key, REQUESTS).await?;
        tokio::time::sleep(STATS_DELAY).await;
        let alone_xacts = monitor.transactions().await? - before;
        row(
            &format!("1. real keys alone (round {round})"),
            Some(&alone),
            0,
            alone_xacts,
        );

        let before = monitor.transactions().await?;
        let flood = Flood::start(&sensor, &key.id, rate, concurrency, None);
        let during = real_requests(&http, &sensor, &key.key, REQUESTS).await?;
        let sent = flood.stop().await?;
        tokio::time::sleep(STATS_DELAY).await;
        let during_xacts = monitor.transactions().await? - before;
        row(
            &format!("2. real keys during the flood ({round})"),
            Some(&during),
            sent,
            during_xacts,
        );
        extra.push(during_xacts - alone_xacts);
    }

    let before = monitor.transactions().await?;
    let sent = Flood::start(&sensor, &key.id, rate, concurrency, Some(FORGED))
        .finish()
        .await?;
    tokio::time::sleep(STATS_DELAY).await;
    let flood_xacts = monitor.transactions().await? - before;
    row("3. the flood alone", None, sent, flood_xacts);
    println!("load average after: {}", load_average());
    println!(
        "(transactions: the database's over each phase; phase 2 minus phase 1, by round: {extra:?})"
    );
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v}: {e}")),
        Err(_) => Ok(default),
    }
}

fn row(phase: &str, latency: Option<&Histogram<u64>>, forged: u64, transactions: i64) {
    let ms = |h: &Histogram<u64>, q: f64| format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0);
    let (p50, p99, max) = match latency {
        Some(h) => (
            ms(h, 0.5),
            ms(h, 0.99),
            format!("{:.2}", h.max() as f64 / 1000.0),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    println!("{phase:<40} {p50:>9} {p99:>9} {max:>9} {forged:>8} {transactions:>14}");
}

/// `n` requests with the real key, one every [`REAL_INTERVAL`] (or, when one is late, as
/// soon as the one before is answered); their latencies in µs. A request held up by the one
/// before counts from its scheduled time, so a stall shows in every request behind it; the
/// others from when they were sent (the timer wakes up to a millisecond late).
async fn real_requests(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    n: usize,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let started = tokio::time::Instant::now();
    for i in 0..n {
        let due = started + REAL_INTERVAL * i as u32;
        let sent = if tokio::time::Instant::now() > due {
            due
        } else {
            tokio::time::sleep_until(due).await;
            tokio::time::Instant::now()
        };
        let r = http.get(url).bearer_auth(key).send().await?;
        anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await?;
        h.record(sent.elapsed().as_micros() as u64)?;
    }
    Ok(h)
}

/// Forged keys sent on a schedule (an open model: due times from the rate, whether or not
/// earlier requests have been answered), each of which must be answered 401. The sender
/// runs on a thread and runtime of its own, as a client elsewhere would, so that its tasks
/// do not queue in the server's runtime.
struct Flood {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<anyhow::Result<u64>>,
}

impl Flood {
    fn start(url: &str, real_id: &str, rate: u64, concurrency: usize, total: Option<u64>) -> Flood {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (url, real_id) = (url.to_owned(), real_id.to_owned());
        let send = async move {
            let http = reqwest::Client::new();
            let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let refused = Arc::new(AtomicU64::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            let started = tokio::time::Instant::now();
            let mut sent = 0u64;
            while total.is_none_or(|t| sent < t) && !*stopped.borrow() {
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stopped.changed() => break,
                }
                let slot = slots.clone().acquire_owned().await?;
                let (http, url, refused) = (http.clone(), url.clone(), refused.clone());
                let key = forged_key(sent, &real_id);
                tasks.spawn(async move {
                    let _slot = slot;
                    let r = http.get(&url).bearer_auth(&key).send().await?;
                    anyhow::ensure!(r.status().as_u16() == 401, "{key}: {}", r.status());
                    r.bytes().await?;
                    refused.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                });
                sent += 1;
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            Ok(refused.load(Ordering::Relaxed))
        };
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(send)
        });
        Flood { stop, thread }
    }

    /// Stops sending; the forged keys answered 401.
    async fn stop(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(true);
        self.finish().await
    }

    /// Waits for every forged key to be sent and answered.
    async fn finish(self) -> anyhow::Result<u64> {
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the flood's thread panicked"))?
    }
}

fn random_hex(digits: usize) -> String {
    let mut rng = rand::rng();
    (0..digits)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

fn with_checksum(body: &str) -> String {
    format!("{body}_{:08x}", crc32fast::hash(body.as_bytes()))
}

/// The i-th forged key: a quarter each of made-up ids without a checksum, made-up ids with
/// a correct one, wrong checksums, and the real id with another secret.
fn forged_key(i: u64, real_id: &str) -> String {
    let made_up = || format!("spk_{}_{}", random_hex(12), random_hex(64));
    match i % 4 {
        0 => made_up(),
        1 => with_checksum(&made_up()),
        2 => format!("{}_{}", made_up(), random_hex(8)),
        _ => with_checksum(&format!("spk_{real_id}_{}", random_hex(64))),
    }
}

/// Reads the bench database's transaction count from a connection to another database,
/// so that the reads are not counted.
struct Monitor {
    client: tokio_postgres::Client,
    database: String,
}

impl Monitor {
    async fn connect(url: &str, database: &str) -> anyhow::Result<Monitor> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.dbname("postgres");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(Monitor {
            client,
            database: database.to_owned(),
        })
    }

    async fn transactions(&self) -> anyhow::Result<i64> {
        Ok(self
            .client
            .query_one(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
                &[&self.database],
            )
            .await?
            .get(0))
    }
}

/// The machine's load average (1, 5, 15 min), to tell a quiet run from a busy one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
