//! --verify: counts this run's rows in `sensor_data` while the run goes and after it, then
//! reports readings lost, duplicated, and the ingest-to-queryable lag.
//!
//! Cheap by design: each poll is one `count(*)` over the run's locations (the
//! `(location, time DESC)` index answers it). The lag of the k-th accepted reading in send
//! order is the time of the first poll that counted k rows or more, minus its send time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use readings::connection::ConnectionSettings;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::stats::ms;

/// How often the database is counted: the lag's resolution.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// What --verify found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Readings the ingest API accepted (2xx).
    pub expected: u64,
    /// This run's rows in `sensor_data`.
    pub rows: u64,
    /// Accepted readings not in the table.
    pub lost: u64,
    /// Rows beyond the first of each (location, time).
    pub duplicated: u64,
    /// Distinct readings stored beyond those accepted: their request failed (timeout, 5xx)
    /// after they were enqueued.
    pub unacknowledged: u64,
    /// Every accepted reading arrived before --verify-timeout.
    pub complete: bool,
    /// How long the check waited after the last request.
    pub waited_ms: f64,
    pub polls: usize,
    pub lag_ms: Lag,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The poller, started before the first request.
pub struct Monitor {
    url: String,
    locations: Vec<String>,
    since: DateTime<Utc>,
    target: watch::Sender<Option<(u64, Instant)>>,
    task: JoinHandle<Result<Vec<(i64, u64)>>>,
}

/// Consecutive failed polls (about 5 s) after which the check gives up.
const MAX_FAILED_POLLS: u32 = 20;

impl Monitor {
    /// Connects to `url` (failing at once when it cannot) and starts polling for
    /// `locations` at or after `since`.
    pub async fn start(url: &str, locations: Vec<String>, since: DateTime<Utc>) -> Result<Monitor> {
        let first = connect(url).await?;
        let since = since - TimeDelta::seconds(1);
        let (target, watch_target) = watch::channel(None::<(u64, Instant)>);
        let task = tokio::spawn(poll(
            first,
            url.to_owned(),
            locations.clone(),
            since,
            watch_target,
        ));
        Ok(Monitor {
            url: url.to_owned(),
            locations,
            since,
            target,
            task,
        })
    }

    /// Waits (at most `timeout`) for the `expected` accepted readings, then counts.
    /// `sends` holds (send time in epoch µs, readings) of each accepted request.
    pub async fn finish(
        self,
        expected: u64,
        sends: &[(i64, u32)],
        timeout: Duration,
    ) -> Result<Verification> {
        let started = Instant::now();
        // A closed channel means the task already failed; its result says why.
        let _ = self.target.send(Some((expected, started + timeout)));
        let polls = self.task.await.context("the database poller stopped")??;
        let waited = started.elapsed();
        let client = connect(&self.url).await?;
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT (location, time)) FROM sensor_data
                 WHERE location = ANY($1) AND time >= $2",
                &[&self.locations, &self.since],
            )
            .await;
        let (rows, distinct) = match row {
            Ok(r) => (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64),
            Err(e) if missing_table(&e) => (0, 0),
            Err(e) => return Err(e).context("counting this run's rows in sensor_data"),
        };
        let lags = lags(sends, &polls);
        let q = |q| {
            if lags.is_empty() {
                0.0
            } else {
                ms(lags.value_at_quantile(q))
            }
        };
        Ok(Verification {
            expected,
            rows,
            lost: expected.saturating_sub(distinct),
            duplicated: rows - distinct,
            unacknowledged: distinct.saturating_sub(expected),
            complete: distinct >= expected,
            waited_ms: waited.as_secs_f64() * 1000.0,
            polls: polls.len(),
            lag_ms: Lag {
                p50: q(0.5),
                p99: q(0.99),
                max: if lags.is_empty() { 0.0 } else { ms(lags.max()) },
            },
        })
    }
}

/// Counts every `POLL_EVERY` until a target is set and reached, or its deadline passes.
/// A failed poll is skipped (reconnecting when the connection broke); many in a row fail.
async fn poll(
    first: Client,
    url: String,
    locations: Vec<String>,
    since: DateTime<Utc>,
    mut target: watch::Receiver<Option<(u64, Instant)>>,
) -> Result<Vec<(i64, u64)>> {
    let mut client = Some(first);
    let mut polls = Vec::new();
    let mut failed = 0;
    let mut tick = tokio::time::interval(POLL_EVERY);
    // A slow count delays the next one instead of bunching them up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The count's snapshot is taken when the statement starts: that is when it saw.
        let mut at = Utc::now();
        let counted = match &client {
            Some(c) => count(c, &locations, since).await,
            None => match connect(&url).await {
                Ok(c) => {
                    at = Utc::now();
                    count(client.insert(c), &locations, since).await
                }
                Err(e) => Err(e),
            },
        };
        let seen = match counted {
            Ok(n) => {
                failed = 0;
                polls.push((at.timestamp_micros(), n));
                Some(n)
            }
            Err(e) => {
                failed += 1;
                if failed >= MAX_FAILED_POLLS {
                    return Err(e);
                }
                if client.as_ref().is_some_and(Client::is_closed) {
                    client = None;
                }
                None
            }
        };
        if let Some((expected, deadline)) = *target.borrow_and_update() {
            if seen.is_some_and(|n| n >= expected) || Instant::now() >= deadline {
                return Ok(polls);
            }
        }
    }
}

/// Connects as the functions do: libpq's `sslmode` and `sslrootcert` in `url` are honoured
/// (TLS with rustls), so `--verify` works against a managed database that requires TLS.
async fn connect(url: &str) -> Result<Client> {
    let settings = ConnectionSettings::parse(url).context("--verify: the connection string")?;
    let tls = settings
        .tls
        .connector()
        .context("--verify: the TLS settings")?;
    let (client, connection) = settings
        .postgres_config()
        .connect(tls)
        .await
        .context("--verify: connecting to the database")?;
    tokio::spawn(connection);
    Ok(client)
}

fn missing_table(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_TABLE)
}

/// This run's rows so far (0 while the table does not exist yet).
async fn count(client: &Client, locations: &[String], since: DateTime<Utc>) -> Result<u64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM sensor_data WHERE location = ANY($1) AND time >= $2",
            &[&locations, &since],
        )
        .await;
    match row {
        Ok(r) => Ok(r.get::<_, i64>(0) as u64),
        Err(e) if missing_table(&e) => Ok(0),
        Err(e) => Err(e).context("--verify: counting this run's rows in sensor_data"),
    }
}

/// The lag, in µs, of every accepted reading that a poll saw: the k-th reading in send
/// order counts as queryable at the first poll `(epoch µs, count)` with count ≥ k.
pub fn lags(sends: &[(i64, u32)], polls: &[(i64, u64)]) -> Histogram<u64> {
    let mut hist = Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .expect("constant histogram bounds are valid");
    let mut sends = sends.to_vec();
    sends.sort_unstable();
    let mut k = 0u64;
    let mut p = 0;
    'sends: for (sent, n) in sends {
        for _ in 0..n {
            k += 1;
            while p < polls.len() && polls[p].1 < k {
                p += 1;
            }
            let Some((seen, _)) = polls.get(p) else {
                break 'sends;
            };
            hist.saturating_record((seen - sent).max(1) as u64);
        }
    }
    hist
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_first_poll_at_or_above_each_count_minus_send_time() {
        // Two requests of 2 readings, sent at 0 and 100 ms; polls every 250 ms.
        let sends = [(100_000, 2), (0, 2)];
        let polls = [(250_000, 0), (500_000, 1), (750_000, 3), (1_000_000, 4)];
        let h = lags(&sends, &polls);
        // Reading 1 at 500 ms, 2 and 3 at 750 ms, 4 at 1000 ms.
        assert_eq!(h.len(), 4);
        let mut v: Vec<u64> = h
            .iter_recorded()
            .flat_map(|x| std::iter::repeat_n(x.value_iterated_to(), x.count_at_value() as usize))
            .collect();
        v.sort();
        let approx = |a: u64, b: u64| a.abs_diff(b) <= b / 500;
        assert!(
            approx(v[0], 500_000)
                && approx(v[1], 650_000)
                && approx(v[2], 750_000)
                && approx(v[3], 900_000),
            "{v:?}"
        );
    }

    #[test]
    fn readings_never_seen_have_no_lag() {
        let h = lags(&[(0, 5)], &[(1_000, 2)]);
        assert_eq!(h.len(), 2);
    }
}
