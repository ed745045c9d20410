//! --verify: follows each accepted request until its readings are queryable, then counts
//! this run's rows in `sensor_data`, and reports readings lost, duplicated, and the
//! ingest-to-queryable lag.
//!
//! Cheap by design, so that measuring does not take the database's CPU from the pipeline
//! it measures. The writer records which readings of each batch it has written
//! (`written_batches`, by offset; `ingest_batches` for version-1 messages, by part with its
//! number of readings) in the same transaction as it COPYs them: a request's readings
//! become queryable at the commit that makes the last of them recorded. Each
//! poll therefore asks only about the requests accepted and not yet seen, by the batch ids
//! the ingest API answered with, through that table's primary key: a poll's cost follows
//! the requests in flight, not the readings, and the run's rows are counted once, at the
//! end. (Counting the rows on every poll instead took, at 100,000 readings/s, a third of a
//! core of the database, and more the further the pipeline fell behind.) A 2xx answer
//! without a batch id has no lag; its readings still count at the end.

use std::collections::{BTreeMap, HashMap};
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

/// How often the database is asked: the lag's resolution.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// The accepted requests whose readings no poll has seen in full yet, by batch id. The
/// runner reports each request the ingest API accepted ([`Pending::accepted`]).
#[derive(Debug, Default)]
pub struct Pending {
    waiting: Mutex<HashMap<String, Sent>>,
}

/// When a request was first sent (epoch µs), and how many readings it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    at: i64,
    readings: u32,
}

/// An accepted request whose readings a poll saw in full: sent and seen in epoch µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Landed {
    sent: i64,
    readings: u32,
    seen: i64,
}

impl Pending {
    /// The ingest API accepted `readings` readings as `batch_id`, sent at `sent` (epoch µs).
    pub fn accepted(&self, batch_id: String, sent: i64, readings: u32) {
        self.lock().insert(batch_id, Sent { at: sent, readings });
    }

    fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// What a poll starting at `at` (epoch µs) found recorded: readings written per batch
    /// id. A batch with all its readings written is no longer waited for.
    fn seen(&self, recorded: &[(String, i64)], at: i64, landed: &mut Vec<Landed>) {
        let mut waiting = self.lock();
        for (id, written) in recorded {
            if waiting
                .get(id)
                .is_some_and(|s| *written >= i64::from(s.readings))
            {
                if let Some(sent) = waiting.remove(id) {
                    landed.push(Landed {
                        sent: sent.at,
                        readings: sent.readings,
                        seen: at,
                    });
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sent>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
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
    deadline: watch::Sender<Option<Instant>>,
    pending: Arc<Pending>,
    task: JoinHandle<Result<Polled>>,
}

/// What the polls saw.
struct Polled {
    landed: Vec<Landed>,
    polls: usize,
}

impl Monitor {
    /// Connects to `url` (failing at once when it cannot) and starts polling for the
    /// requests reported to [`Monitor::pending`]; at the end, counts the rows of
    /// `locations` at or after `since`. Polls may fail for up to `patience` in a row.
    pub async fn start(
        url: &str,
        locations: Vec<String>,
        since: DateTime<Utc>,
        patience: Duration,
    ) -> Result<Monitor> {
        let first = connect(url).await?;
        let started_us = since.timestamp_micros();
        let since = since - TimeDelta::seconds(1);
        let (deadline, watch_deadline) = watch::channel(None::<Instant>);
        let pending = Arc::new(Pending::default());
        let task = tokio::spawn(poll(
            first,
            url.to_owned(),
            patience,
            watch_deadline,
            pending.clone(),
        ));
        Ok(Monitor {
            url: url.to_owned(),
            locations,
            since,
            started_us,
            deadline,
            pending,
            task,
        })
    }

    /// Where the runner reports each accepted ingest request.
    pub fn pending(&self) -> Arc<Pending> {
        self.pending.clone()
    }

    /// Once every request has been answered: waits (at most `timeout`) until the polls have
    /// seen every reported request in full, then counts the run's rows, again until the
    /// `expected` accepted readings are there or `timeout` has passed.
    pub async fn finish(self, expected: u64, timeout: Duration) -> Result<Verification> {
        let started = Instant::now();
        let deadline = started + timeout;
        // A closed channel means the task already failed; its result says why.
        let _ = self.deadline.send(Some(deadline));
        let polled = self.task.await.context("the database poller stopped")??;
        let client = connect(&self.url).await?;
        // The wait lasts until the count that found every reading (or the last one) began.
        let (rows, distinct, waited) = loop {
            let began = Instant::now();
            let (rows, distinct) = count_rows(&client, &self.locations, self.since).await?;
            if distinct >= expected || Instant::now() >= deadline {
                break (rows, distinct, began - started);
            }
            let pause = POLL_EVERY.max(began.elapsed() * 4);
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        };
        let lags = lags(&polled.landed);
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
            polls: polled.polls,
            lag_ms: Lag {
                p50: q(0.5),
                p99: q(0.99),
                max: if lags.is_empty() { 0.0 } else { ms(lags.max()) },
            },
            lag_timeline: lag_timeline(&polled.landed, self.started_us),
        })
    }
}

/// This run's rows in `sensor_data`, and how many distinct (location, time) among them.
/// A row repeating the (location, time) of the one before it in the `(location, time DESC)`
/// index's order is a duplicate: one pass over the index, a quarter of the CPU of
/// `count(DISTINCT (location, time))`, which sorts every row.
async fn count_rows(
    client: &Client,
    locations: &[String],
    since: DateTime<Utc>,
) -> Result<(u64, u64)> {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE time = previous)
             FROM (SELECT time,
                          lag(time) OVER (PARTITION BY location ORDER BY time DESC) AS previous
                   FROM sensor_data WHERE location = ANY($1) AND time >= $2) AS run",
            &[&locations, &since],
        )
        .await;
    match row {
        Ok(r) => {
            let (rows, repeats) = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64);
            Ok((rows, rows - repeats))
        }
        Err(e) if missing_table(&e) => Ok((0, 0)),
        Err(e) => Err(e).context("counting this run's rows in sensor_data"),
    }
}

/// Asks every `POLL_EVERY` (or four times as long as the last poll took, when that is
/// longer) which pending requests have all their readings written, until a deadline is set
/// and nothing is pending any more, or the deadline passes.
/// A failed poll is skipped (reconnecting when the connection broke); polls failing for
/// longer than `patience` in a row fail.
async fn poll(
    first: Client,
    url: String,
    patience: Duration,
    mut deadline: watch::Receiver<Option<Instant>>,
    pending: Arc<Pending>,
) -> Result<Polled> {
    let mut client = Some(first);
    let mut landed = Vec::new();
    let mut polls = 0;
    let mut failing_since: Option<Instant> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let began = tokio::time::Instant::now();
        let ids = pending.ids();
        // What the query sees was committed before it started: that is when it saw.
        let mut at = Utc::now();
        let recorded = if ids.is_empty() {
            Ok(Vec::new())
        } else {
            match connected(&mut client, &url).await {
                Ok(c) => {
                    at = Utc::now();
                    written(c, &ids).await
                }
                Err(e) => Err(e),
            }
        };
        next = began + POLL_EVERY.max(began.elapsed() * 4);
        match recorded {
            Ok(recorded) => {
                failing_since = None;
                polls += 1;
                pending.seen(&recorded, at.timestamp_micros(), &mut landed);
            }
            Err(e) => {
                if failing_since.get_or_insert_with(Instant::now).elapsed() > patience {
                    return Err(e);
                }
                if client.as_ref().is_some_and(Client::is_closed) {
                    client = None;
                }
            }
        }
        if let Some(deadline) = *deadline.borrow_and_update() {
            if pending.is_empty() || Instant::now() >= deadline {
                return Ok(Polled { landed, polls });
            }
        }
    }
}

/// The open connection, or a new one when the last broke.
async fn connected<'a>(client: &'a mut Option<Client>, url: &str) -> Result<&'a Client> {
    match client {
        Some(c) => Ok(c),
        None => Ok(client.insert(connect(url).await?)),
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

/// How many readings the writer has recorded as written for each of `ids` that it has
/// written any of (nothing while the table does not exist yet).
async fn written(client: &Client, ids: &[String]) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT batch_id, sum(n)::int8 FROM (
                 SELECT batch_id, (SELECT coalesce(sum(upper(r) - lower(r)), 0)
                                   FROM unnest(written) r) AS n
                 FROM written_batches WHERE batch_id = ANY($1)
                 UNION ALL
                 SELECT batch_id, coalesce(readings, 0) FROM ingest_batches
                 WHERE batch_id = ANY($1)
             ) w GROUP BY batch_id",
            &[&ids],
        )
        .await;
    match rows {
        Ok(rows) => Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect()),
        Err(e) if missing_table(&e) => Ok(Vec::new()),
        Err(e) => Err(e).context("--verify: reading which batches are written"),
    }
}

/// The lag, in µs, of every reading of the requests that landed.
fn lags(landed: &[Landed]) -> Histogram<u64> {
    let mut hist = lag_histogram();
    for l in landed {
        hist.saturating_record_n(lag(l), u64::from(l.readings));
    }
    hist
}

fn lag(l: &Landed) -> u64 {
    (l.seen - l.sent).max(1) as u64
}

/// The lag of the readings sent in each second after `started_us` (epoch µs); seconds in
/// which no reading that landed was sent are left out.
fn lag_timeline(landed: &[Landed], started_us: i64) -> Vec<LagSecond> {
    let mut seconds: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for l in landed {
        let second = ((l.sent - started_us).max(0) / 1_000_000) as u64;
        seconds
            .entry(second)
            .or_insert_with(lag_histogram)
            .saturating_record_n(lag(l), u64::from(l.readings));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(sent: i64, readings: u32, seen: i64) -> Landed {
        Landed {
            sent,
            readings,
            seen,
        }
    }

    #[test]
    fn a_request_lands_when_all_its_readings_are_recorded() {
        let pending = Pending::default();
        pending.accepted("a".into(), 100, 3);
        pending.accepted("b".into(), 200, 1);
        pending.accepted("c".into(), 300, 2);
        let mut seen = Vec::new();
        // "a" has one part of two written; "b" is whole; "z" was never pending.
        pending.seen(
            &[("a".into(), 2), ("b".into(), 1), ("z".into(), 5)],
            1_000,
            &mut seen,
        );
        assert_eq!(seen, [landed(200, 1, 1_000)]);
        let mut ids = pending.ids();
        ids.sort();
        assert_eq!(ids, ["a", "c"]);
        // The rest of "a" and all of "c" at the next poll; nothing is pending any more.
        pending.seen(&[("a".into(), 3), ("c".into(), 2)], 2_000, &mut seen);
        assert_eq!(seen[1..], [landed(100, 3, 2_000), landed(300, 2, 2_000)]);
        assert!(pending.is_empty());
        // Seen again (a later poll racing a new report): not counted twice.
        pending.seen(&[("b".into(), 1)], 3_000, &mut seen);
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn each_reading_of_a_request_has_its_requests_lag() {
        // Two readings sent at 0 seen at 500 ms; three sent at 100 ms seen at 1 s.
        let h = lags(&[landed(0, 2, 500_000), landed(100_000, 3, 1_000_000)]);
        assert_eq!(h.len(), 5);
        let approx = |a: u64, b: u64| a.abs_diff(b) <= b / 500;
        assert!(
            approx(h.value_at_quantile(0.4), 500_000),
            "{}",
            h.value_at_quantile(0.4)
        );
        assert!(approx(h.value_at_quantile(0.5), 900_000));
        assert!(approx(h.max(), 900_000));
    }

    #[test]
    fn the_lag_timeline_groups_readings_by_the_second_they_were_sent() {
        // Run started at 10 s; 2 readings sent at 10.2 s seen at 10.7 s, 1 sent at 11.5 s
        // seen at 12.5 s: lags 500 ms in second 0 and 1,000 ms in second 1.
        let t = lag_timeline(
            &[
                landed(10_200_000, 2, 10_700_000),
                landed(11_500_000, 1, 12_500_000),
            ],
            10_000_000,
        );
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].second, t[0].readings), (0, 2));
        assert!((t[0].p99_ms - 500.0).abs() < 1.0, "{t:?}");
        assert_eq!((t[1].second, t[1].readings), (1, 1));
        assert!((t[1].max_ms - 1000.0).abs() < 2.0, "{t:?}");
    }
}
