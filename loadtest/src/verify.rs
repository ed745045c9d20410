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
use readings::postgres::connection::ConnectionSettings;
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
    /// The lag of the readings sent in each second of the run.
    pub lag_timeline: Vec<LagSecond>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The ingest-to-queryable lag of the readings sent in one second of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagSecond {
    /// Seconds since the run started.
    pub second: u64,
    /// Readings sent in this second that a poll saw.
    pub readings: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The poller, started before the first request.
pub struct Monitor {
    url: String,
    locations: Vec<String>,
    since: DateTime<Utc>,
    /// The run's start, in epoch µs: second 0 of the lag timeline.
    started_us: i64,
    target: watch::Sender<Option<(u64, Instant)>>,
    task: JoinHandle<Result<Vec<(i64, u64)>>>,
}

impl Monitor {
    /// Connects to `url` (failing at once when it cannot) and starts polling for
    /// `locations` at or after `since`; polls may fail for up to `patience` in a row.
    pub async fn start(
        url: &str,
        locations: Vec<String>,
        since: DateTime<Utc>,
        patience: Duration,
    ) -> Result<Monitor> {
        let first = connect(url).await?;
        let started_us = since.timestamp_micros();
        let since = since - TimeDelta::seconds(1);
        let (target, watch_target) = watch::channel(None::<(u64, Instant)>);
        let task = tokio::spawn(poll(
            first,
            url.to_owned(),
            locations.clone(),
            since,
            patience,
            watch_target,
        ));
        Ok(Monitor {
            url: url.to_owned(),
            locations,
            since,
            started_us,
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
            lag_timeline: lag_timeline(sends, &polls, self.started_us),
        })
    }
}

/// Counts every `POLL_EVERY` until a target is set and reached, or its deadline passes.
/// A failed poll is skipped (reconnecting when the connection broke); polls failing for
/// longer than `patience` in a row fail.
async fn poll(
    first: Client,
    url: String,
    locations: Vec<String>,
    since: DateTime<Utc>,
    patience: Duration,
    mut target: watch::Receiver<Option<(u64, Instant)>>,
) -> Result<Vec<(i64, u64)>> {
    let mut client = Some(first);
    let mut polls = Vec::new();
    let mut failing_since: Option<Instant> = None;
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
                failing_since = None;
                polls.push((at.timestamp_micros(), n));
                Some(n)
            }
            Err(e) => {
                if failing_since.get_or_insert_with(Instant::now).elapsed() > patience {
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
    let mut hist = lag_histogram();
    each_lag(sends, polls, |_, lag| hist.saturating_record(lag));
    hist
}

/// The lag of the readings sent in each second after `started_us` (epoch µs), as [`lags`]
/// counts it; seconds in which no seen reading was sent are left out.
pub fn lag_timeline(sends: &[(i64, u32)], polls: &[(i64, u64)], started_us: i64) -> Vec<LagSecond> {
    let mut seconds: std::collections::BTreeMap<u64, Histogram<u64>> = Default::default();
    each_lag(sends, polls, |sent, lag| {
        let second = ((sent - started_us).max(0) / 1_000_000) as u64;
        seconds
            .entry(second)
            .or_insert_with(lag_histogram)
            .saturating_record(lag);
    });
    seconds
        .into_iter()
        .map(|(second, h)| LagSecond {
            second,
            readings: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        })
        .collect()
}

fn lag_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Calls `f(send time, lag)` (µs) for every accepted reading a poll saw, in send order.
fn each_lag(sends: &[(i64, u32)], polls: &[(i64, u64)], mut f: impl FnMut(i64, u64)) {
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
            f(sent, (seen - sent).max(1) as u64);
        }
    }
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
    fn the_lag_timeline_groups_readings_by_the_second_they_were_sent() {
        // Run started at 10 s; sends at 10.2 s (2 readings) and 11.5 s (1); polls saw 2 at
        // 10.7 s and 3 at 12.5 s: lags 500 ms, 500 ms in second 0 and 1,000 ms in second 1.
        let sends = [(10_200_000, 2), (11_500_000, 1)];
        let polls = [(10_700_000, 2), (12_500_000, 3)];
        let t = lag_timeline(&sends, &polls, 10_000_000);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].second, t[0].readings), (0, 2));
        assert!((t[0].p99_ms - 500.0).abs() < 1.0, "{t:?}");
        assert_eq!((t[1].second, t[1].readings), (1, 1));
        assert!((t[1].max_ms - 1000.0).abs() < 2.0, "{t:?}");
    }

    #[test]
    fn readings_never_seen_have_no_lag() {
        let h = lags(&[(0, 5)], &[(1_000, 2)]);
        assert_eq!(h.len(), 2);
    }
}
