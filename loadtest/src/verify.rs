//! --verify: counts this run's rows in `sensor_data` while the run goes and after it, then
//! reports readings lost, duplicated, and the ingest-to-queryable lag.
//!
//! Cheap by design, so that measuring does not take the database's CPU from the pipeline
//! it measures: each poll counts only the run's rows that may still change. Rows are
//! grouped in [`BUCKET_US`] buckets of their time (a reading's time is when it was sent);
//! a bucket is settled once every request with readings in it has been answered and the
//! table holds at least the readings accepted for it, and from then on its count is taken
//! as final, so a poll reads only the buckets from the oldest unsettled one on (the
//! `(location, time DESC)` index answers it). Without that, each poll would count every
//! row of the run again: at 100,000 readings/s, a full core of the database by the end of
//! a 30 s run. The lag of the k-th accepted reading in send order is the time of the first
//! poll that counted k rows or more, minus its send time. Rows landing in a settled bucket
//! later (only ones never acknowledged can) are not seen by the polls, which can only make
//! lags longer; the count at the end covers every row.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
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

/// The width of a bucket of reading times, µs.
pub const BUCKET_US: i64 = 100_000;

/// A bucket is settled only once its end is this far behind a poll's start: a request's
/// readings are taken (timestamped) a few microseconds before the request is counted in
/// flight, so a younger bucket may still get readings the poll does not know of.
const SETTLE_AFTER_US: i64 = 250_000;

/// Requests in flight and readings accepted, per bucket of reading time: what a poll needs
/// to know which buckets can no longer change. The runner reports each ingest request
/// when it is sent ([`Expected::sending`]) and when it is answered ([`Expected::answered`]).
#[derive(Debug, Default)]
pub struct Expected {
    buckets: Mutex<BTreeMap<i64, Bucket>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    in_flight: u32,
    accepted: u64,
}

/// The buckets one request's readings fall in, with how many readings in each.
pub type Spread = Vec<(i64, u32)>;

impl Expected {
    /// Counts a request with readings at `micros` (epoch µs) as in flight.
    pub fn sending(&self, micros: impl IntoIterator<Item = i64>) -> Spread {
        let mut spread: Spread = Vec::new();
        for t in micros {
            let b = t.div_euclid(BUCKET_US);
            match spread.iter_mut().find(|(x, _)| *x == b) {
                Some((_, n)) => *n += 1,
                None => spread.push((b, 1)),
            }
        }
        let mut buckets = self.lock();
        for (b, _) in &spread {
            buckets.entry(*b).or_default().in_flight += 1;
        }
        spread
    }

    /// The request of `spread` was answered; its readings count as expected in the table
    /// when it was `accepted`.
    pub fn answered(&self, spread: &Spread, accepted: bool) {
        let mut buckets = self.lock();
        for (b, n) in spread {
            let bucket = buckets.entry(*b).or_default();
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
            if accepted {
                bucket.accepted += u64::from(*n);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which rows a poll still counts: those from bucket `from` on; `settled` rows before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frontier {
    from: i64,
    settled: u64,
}

impl Frontier {
    fn new(since: DateTime<Utc>) -> Frontier {
        Frontier {
            from: since.timestamp_micros().div_euclid(BUCKET_US),
            settled: 0,
        }
    }

    /// The run's rows at this poll, from `counted` (rows per bucket from `self.from` on);
    /// then moves past every bucket, oldest first, that `expected` says cannot change any
    /// more and whose end is [`SETTLE_AFTER_US`] before `at` (the poll's start, epoch µs).
    fn advance(&mut self, counted: &BTreeMap<i64, u64>, expected: &Expected, at: i64) -> u64 {
        let total = self.settled + counted.values().sum::<u64>();
        let buckets = expected.lock();
        while (self.from + 1) * BUCKET_US + SETTLE_AFTER_US <= at {
            let bucket = buckets.get(&self.from).copied().unwrap_or_default();
            let rows = counted.get(&self.from).copied().unwrap_or(0);
            if bucket.in_flight > 0 || rows < bucket.accepted {
                break;
            }
            self.settled += rows;
            self.from += 1;
        }
        total
    }
}

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
    expected: Arc<Expected>,
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
        let expected = Arc::new(Expected::default());
        let task = tokio::spawn(poll(
            first,
            url.to_owned(),
            locations.clone(),
            since,
            patience,
            watch_target,
            expected.clone(),
        ));
        Ok(Monitor {
            url: url.to_owned(),
            locations,
            since,
            started_us,
            target,
            expected,
            task,
        })
    }

    /// Where the runner reports each ingest request as it is sent and answered, so that
    /// polls count only what can still change.
    pub fn expected(&self) -> Arc<Expected> {
        self.expected.clone()
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

/// Counts every `POLL_EVERY` (or four times as long as the last count took, when that is
/// longer) until a target is set and reached, or its deadline passes.
/// A failed poll is skipped (reconnecting when the connection broke); polls failing for
/// longer than `patience` in a row fail.
async fn poll(
    first: Client,
    url: String,
    locations: Vec<String>,
    since: DateTime<Utc>,
    patience: Duration,
    mut target: watch::Receiver<Option<(u64, Instant)>>,
    expected: Arc<Expected>,
) -> Result<Vec<(i64, u64)>> {
    let mut client = Some(first);
    let mut frontier = Frontier::new(since);
    let mut polls = Vec::new();
    let mut failing_since: Option<Instant> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let began = tokio::time::Instant::now();
        // The count's snapshot is taken when the statement starts: that is when it saw.
        let mut at = Utc::now();
        let counted = match &client {
            Some(c) => count(c, &locations, frontier.from, at.timestamp_micros()).await,
            None => match connect(&url).await {
                Ok(c) => {
                    at = Utc::now();
                    count(
                        client.insert(c),
                        &locations,
                        frontier.from,
                        at.timestamp_micros(),
                    )
                    .await
                }
                Err(e) => Err(e),
            },
        };
        // A slow count (the pipeline far behind, so many rows still to count) spaces out
        // the next ones: counting takes at most a quarter of one of the database's cores
        // from the pipeline it measures.
        next = began + POLL_EVERY.max(began.elapsed() * 4);
        let seen = match counted {
            Ok(buckets) => {
                failing_since = None;
                let n = frontier.advance(&buckets, &expected, at.timestamp_micros());
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
    // Counting in parallel workers would take the second core from the pipeline.
    client
        .batch_execute("SET max_parallel_workers_per_gather = 0")
        .await
        .context("--verify: setting up the session")?;
    Ok(client)
}

fn missing_table(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_TABLE)
}

/// This run's rows so far from bucket `from` on, per bucket (none while the table does
/// not exist yet), for a poll starting at `at` (epoch µs). Only buckets old enough to
/// settle are told apart; the last entry holds every younger row.
async fn count(
    client: &Client,
    locations: &[String],
    from: i64,
    at: i64,
) -> Result<BTreeMap<i64, u64>> {
    let time = |bucket: i64| {
        DateTime::from_timestamp_micros(bucket * BUCKET_US)
            .context("--verify: a bucket out of the time range")
    };
    // Starts of the buckets after `from`, up to the first too young to settle: row i of
    // the answer (width_bucket's index) is bucket from + i.
    let last = ((at - SETTLE_AFTER_US).div_euclid(BUCKET_US)).max(from);
    let bounds = ((from + 1)..=last).map(time).collect::<Result<Vec<_>>>()?;
    let rows = client
        .query(
            "SELECT width_bucket(time, $3::timestamptz[])::int8, count(*)
             FROM sensor_data WHERE location = ANY($1) AND time >= $2
             GROUP BY 1",
            &[&locations, &time(from)?, &bounds],
        )
        .await;
    match rows {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| (from + r.get::<_, i64>(0), r.get::<_, i64>(1) as u64))
            .collect()),
        Err(e) if missing_table(&e) => Ok(BTreeMap::new()),
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
    fn polls_count_only_buckets_that_can_still_change() {
        let expected = Expected::default();
        // Bucket 10: one request of 2 readings, answered 202; bucket 11: one of 3, still in
        // flight; a request spread over buckets 12 and 13, refused.
        let a = expected.sending([10 * BUCKET_US, 10 * BUCKET_US + 5]);
        let b = expected.sending([11 * BUCKET_US; 3]);
        let c = expected.sending([13 * BUCKET_US - 1, 13 * BUCKET_US]);
        assert_eq!(c, vec![(12, 1), (13, 1)]);
        expected.answered(&a, true);
        expected.answered(&c, false);
        let mut f = Frontier {
            from: 10,
            settled: 0,
        };
        let late = 20 * BUCKET_US + SETTLE_AFTER_US;
        // Bucket 10 not all in the table yet: nothing settles.
        let counted = BTreeMap::from([(10, 1), (11, 3)]);
        assert_eq!(f.advance(&counted, &expected, late), 4);
        assert_eq!((f.from, f.settled), (10, 0));
        // Bucket 10 complete: it settles; 11 has a request in flight and stops the frontier.
        let counted = BTreeMap::from([(10, 2), (11, 3)]);
        assert_eq!(f.advance(&counted, &expected, late), 5);
        assert_eq!((f.from, f.settled), (11, 2));
        // Answered: 11 settles, 12 and 13 (nothing accepted) too, and the empty buckets
        // after them, up to the ones too young to be sure of.
        expected.answered(&b, true);
        let counted = BTreeMap::from([(11, 3)]);
        assert_eq!(f.advance(&counted, &expected, late), 5);
        assert_eq!((f.from, f.settled), (20, 5));
        // The next poll counts from bucket 20 on and still sees all five.
        assert_eq!(f.advance(&BTreeMap::new(), &expected, late), 5);
    }

    #[test]
    fn a_bucket_younger_than_the_settling_margin_stays_counted() {
        let expected = Expected::default();
        let mut f = Frontier {
            from: 10,
            settled: 0,
        };
        let counted = BTreeMap::from([(10, 7)]);
        // Bucket 10 ends at 11 * BUCKET_US: not yet SETTLE_AFTER_US behind the poll.
        let at = 11 * BUCKET_US + SETTLE_AFTER_US - 1;
        assert_eq!(f.advance(&counted, &expected, at), 7);
        assert_eq!(f.from, 10);
        assert_eq!(f.advance(&counted, &expected, at + 1), 7);
        assert_eq!((f.from, f.settled), (11, 7));
    }

    #[test]
    fn readings_never_seen_have_no_lag() {
        let h = lags(&[(0, 5)], &[(1_000, 2)]);
        assert_eq!(h.len(), 2);
    }
}
