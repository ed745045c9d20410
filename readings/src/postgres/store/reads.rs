//! The reads: the newest readings (`recent`), the newest reading per location (`latest`) and
//! per-bucket aggregates (`stats`).

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};

use super::error::{Context, StoreError};
use super::schema::{Schema, TableKind};
use super::Store;
use crate::model::reading::Reading;
use crate::query::{RecentQuery, StatsQuery, MAX_LIMIT};

impl Store {
    /// The newest reading of every location (or of the given ones), by location. Driven by
    /// `sensor_locations` and one `(location, time DESC)` index probe per location, so it
    /// never scans the table.
    ///
    /// On a hypertable each probe through all chunks costs about twice a probe of one
    /// chunk, so the probes first look only at readings from the hour before the newest
    /// reading's hour on (a bound written into the statement, so the planner leaves the
    /// older chunks out of the plan; the text changes every hour, so it runs as the unnamed
    /// statement instead of one prepared per hour on each connection). A location with a
    /// reading in that window has its newest reading there; only the others (sensors that
    /// stopped reporting) are probed again through every chunk.
    pub async fn latest(&self, locations: Option<&[String]>) -> Result<Vec<Reading>, StoreError> {
        let schema = self.schema().await?;
        let skip = null_filter(schema);
        let client = self.pool.get().await?;
        let window = match schema.kind {
            TableKind::Plain => None,
            TableKind::Hypertable => {
                // Prepared once per connection: planning it over every chunk on each
                // request would cost more than running it.
                let newest = client
                    .prepare_cached(&format!(
                        "SELECT time FROM sensor_data WHERE TRUE{skip} ORDER BY time DESC LIMIT 1"
                    ))
                    .await
                    .ctx("preparing the newest reading's time")?;
                client
                    .query_opt(&newest, &[])
                    .await
                    .ctx("reading the newest reading's time")?
                    .map(|row| row.get::<_, DateTime<Utc>>(0))
                    .map(|newest| {
                        let hour = newest.timestamp().div_euclid(3600) * 3600;
                        DateTime::from_timestamp(hour - 3600, 0).unwrap_or(newest)
                    })
            }
        };
        let Some(window) = window else {
            let found = probe_latest(&client, locations, None, &skip).await?;
            return Ok(found.into_iter().filter_map(|(_, r)| r).collect());
        };
        let mut found = probe_latest(&client, locations, Some(window), &skip).await?;
        let stale: Vec<String> = found
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(l, _)| l.clone())
            .collect();
        if !stale.is_empty() {
            let mut older: std::collections::HashMap<String, Reading> =
                probe_latest(&client, Some(&stale), None, &skip)
                    .await?
                    .into_iter()
                    .filter_map(|(l, r)| Some((l, r?)))
                    .collect();
            for (location, reading) in &mut found {
                if reading.is_none() {
                    *reading = older.remove(location);
                }
            }
        }
        Ok(found.into_iter().filter_map(|(_, r)| r).collect())
    }

    /// Per-bucket count/avg/min/max over `[since, until)`, for one location or all. Buckets
    /// are aligned as TimescaleDB's `time_bucket` aligns them (origin 2000-01-03 UTC), with
    /// `time_bucket` on a hypertable and `date_bin` on plain PostgreSQL; hourly and daily
    /// buckets come from the `sensor_data_hourly` continuous aggregate when it exists.
    pub async fn stats(&self, q: &StatsQuery) -> Result<Vec<BucketStats>, StoreError> {
        let schema = self.schema().await?;
        let (kind, skip) = (schema.kind, null_filter(schema));
        let client = self.pool.get().await?;
        let use_cagg = kind == TableKind::Hypertable
            && q.bucket_secs >= 3600
            && has_hourly_aggregate(&client).await?;
        let bucket_expr = |col: &str| match kind {
            TableKind::Hypertable => format!("time_bucket($1::interval, {col})"),
            TableKind::Plain => {
                format!("date_bin($1::interval, {col}, TIMESTAMPTZ '2000-01-03 00:00:00+00')")
            }
        };
        let location_clause = if q.location.is_some() {
            "AND location = $4"
        } else {
            "AND ($4::text IS NULL)"
        };
        let sql = if use_cagg {
            format!(
                "SELECT {b} AS bucket, sum(readings)::int8, sum(total) / sum(readings),
                        min(min_temperature), max(max_temperature)
                 FROM sensor_data_hourly
                 WHERE bucket >= $2 AND bucket < $3 {location_clause}
                 GROUP BY 1 ORDER BY 1",
                b = bucket_expr("bucket")
            )
        } else {
            format!(
                "SELECT {b} AS bucket, count(*), avg(temperature), min(temperature), max(temperature)
                 FROM sensor_data
                 WHERE time >= $2 AND time < $3 {location_clause}{skip}
                 GROUP BY 1 ORDER BY 1",
                b = bucket_expr("time")
            )
        };
        let interval = format!("{} seconds", q.bucket_secs);
        let (since, until) = whole_buckets(q);
        let stmt = client
            .prepare_typed_cached(
                &sql,
                &[Type::TEXT, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::TEXT],
            )
            .await
            .ctx("preparing stats")?;
        let rows = client
            .query(&stmt, &[&interval, &since, &until, &q.location])
            .await
            .ctx("computing stats")?;
        Ok(rows
            .into_iter()
            .map(|r| BucketStats {
                bucket: r.get(0),
                count: r.get(1),
                avg: r.get(2),
                min: r.get(3),
                max: r.get(4),
            })
            .collect())
    }

    /// The newest readings, newest first, in `(time, location)` descending order.
    ///
    /// The rows come from the `(time DESC)` index in time order and an incremental sort
    /// puts equal times in location order, so only the first `limit` rows (and their ties)
    /// are read; for one location the `(location, time DESC)` index gives the order itself.
    /// The subquery's `OFFSET 0` keeps the planner from sorting a hypertable's newest chunk
    /// whole (or decompressing it) for the second key. The limit is written into the statement, not bound: with a
    /// bound `LIMIT` PostgreSQL never caches a generic plan, and planning every chunk of a
    /// hypertable on every request costs more than running the query. So that a
    /// connection keeps a few prepared statements, not one per limit asked for, the limit
    /// written is the asked one rounded up to one of [`LIMIT_STEPS`]; the rows past the
    /// asked limit are dropped here.
    pub async fn recent(&self, q: &RecentQuery) -> Result<Vec<Reading>, StoreError> {
        let nullable = self.schema().await?.nullable;
        let (sql, params) = recent_statement(q, nullable);
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .ctx("preparing the recent-readings query")?;
        let rows = client
            .query(&stmt, &params)
            .await
            .ctx("reading recent readings")?;
        let wanted = usize::try_from(asked_limit(q)).unwrap_or(usize::MAX);
        Ok(rows
            .into_iter()
            .take(wanted)
            .map(reading_from_row)
            .collect())
    }
}

/// The limits [`Store::recent`] writes into its statements: an asked limit is rounded up
/// to the first of these that is not smaller (powers of two, then [`MAX_LIMIT`]), so a
/// connection prepares at most this many statements per set of filters, and reads at most
/// twice the rows asked for.
pub const LIMIT_STEPS: [i64; 8] = [8, 16, 32, 64, 128, 256, 512, MAX_LIMIT];

/// The limit `q` asks for, within 1..=[`MAX_LIMIT`].
fn asked_limit(q: &RecentQuery) -> i64 {
    q.limit.clamp(1, MAX_LIMIT)
}

/// The limit written into the statement for `q`: its own rounded up to a [`LIMIT_STEPS`].
fn statement_limit(q: &RecentQuery) -> i64 {
    let asked = asked_limit(q);
    LIMIT_STEPS
        .into_iter()
        .find(|&step| step >= asked)
        .unwrap_or(MAX_LIMIT)
}

/// The statement [`Store::recent`] runs for `q`, with `$n` placeholders in the order
/// location, since, until, cursor time, cursor location (those that are set), and `q`'s
/// limit rounded up to one of [`LIMIT_STEPS`].
pub fn recent_sql(q: &RecentQuery, nullable: bool) -> String {
    recent_statement(q, nullable).0
}

fn recent_statement(q: &RecentQuery, nullable: bool) -> (String, Vec<&(dyn ToSql + Sync)>) {
    let limit = statement_limit(q);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut clauses = Vec::new();
    if nullable {
        clauses.push(NOT_NULL.to_owned());
    }
    if let Some(l) = &q.location {
        params.push(l);
        clauses.push(format!("location = ${}", params.len()));
    }
    if let Some(s) = &q.since {
        params.push(s);
        clauses.push(format!("time >= ${}", params.len()));
    }
    if let Some(u) = &q.until {
        params.push(u);
        clauses.push(format!("time < ${}", params.len()));
    }
    if let Some(c) = &q.after {
        params.push(&c.time);
        params.push(&c.location);
        let n = params.len();
        // The first clause lets the time index bound the scan; the second is exact.
        clauses.push(format!("time <= ${}", n - 1));
        clauses.push(format!("(time, location) < (${}, ${n})", n - 1));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = if q.location.is_some() {
        // One location: (time, location) order is time order.
        format!(
            "SELECT time, location, temperature FROM sensor_data{filter}
             ORDER BY time DESC LIMIT {limit}"
        )
    } else {
        format!(
            "SELECT time, location, temperature FROM (
                 SELECT time, location, temperature FROM sensor_data{filter}
                 ORDER BY time DESC OFFSET 0) newest
             ORDER BY time DESC, location DESC LIMIT {limit}"
        )
    };
    (sql, params)
}

/// The rows the queries answer from a table that allows NULLs: complete ones.
const NOT_NULL: &str = "time IS NOT NULL AND location IS NOT NULL AND temperature IS NOT NULL";

/// `" AND <NOT_NULL>"` for a table that allows NULLs, else nothing.
fn null_filter(schema: &Schema) -> String {
    if schema.nullable {
        format!(" AND {NOT_NULL}")
    } else {
        String::new()
    }
}

/// Every location of `sensor_locations` (or of `locations`) in order, with its newest
/// reading at or after `since` (any time when `None`), if it has one.
async fn probe_latest(
    client: &deadpool_postgres::Client,
    locations: Option<&[String]>,
    since: Option<DateTime<Utc>>,
    skip: &str,
) -> Result<Vec<(String, Option<Reading>)>, StoreError> {
    // A literal, not a parameter: only a bound known when planning lets TimescaleDB leave
    // the older chunks out of the plan instead of checking them on each of the probes.
    let window = since
        .map(|t| {
            format!(
                " AND d.time >= '{}'",
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )
        })
        .unwrap_or_default();
    let source = match locations {
        Some(_) => "(SELECT DISTINCT unnest($1::text[]) AS location)",
        None => "sensor_locations",
    };
    let sql = format!(
        "SELECT r.time, l.location, r.temperature FROM {source} l
         LEFT JOIN LATERAL (
             SELECT time, temperature FROM sensor_data d
             WHERE d.location = l.location{window}{skip} ORDER BY time DESC LIMIT 1) r ON TRUE
         ORDER BY l.location"
    );
    let rows = if since.is_some() {
        // The window's literal changes every hour: as the unnamed statement (parsed,
        // planned and run in one round trip, then dropped), so that a connection does not
        // keep a prepared statement per hour it has served.
        match locations {
            Some(list) => client.query_typed(&sql, &[(&list, Type::TEXT_ARRAY)]).await,
            None => client.query_typed(&sql, &[]).await,
        }
    } else {
        let stmt = client.prepare_cached(&sql).await.ctx("preparing latest")?;
        match locations {
            Some(list) => client.query(&stmt, &[&list]).await,
            None => client.query(&stmt, &[]).await,
        }
    }
    .ctx("reading the latest readings")?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let location: String = row.get(1);
            let reading = row.get::<_, Option<DateTime<Utc>>>(0).map(|time| Reading {
                time,
                location: location.clone(),
                temperature: row.get(2),
            });
            (location, reading)
        })
        .collect())
}

fn reading_from_row(row: tokio_postgres::Row) -> Reading {
    Reading {
        time: row.get(0),
        location: row.get(1),
        temperature: row.get(2),
    }
}

async fn has_hourly_aggregate(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    Ok(client
        .query_one("SELECT to_regclass('sensor_data_hourly') IS NOT NULL", &[])
        .await
        .ctx("looking for the hourly aggregate")?
        .get(0))
}

/// `[since, until)` widened to whole buckets: the aggregate holds whole hours, so both
/// paths answer every bucket the range touches, in full. Buckets start on multiples of
/// their width since the epoch, as `time_bucket`'s (origin 2000-01-03 UTC, a whole number
/// of days after the epoch) do.
fn whole_buckets(q: &StatsQuery) -> (DateTime<Utc>, DateTime<Utc>) {
    let width = q.bucket_secs.max(1);
    let start = q.since.timestamp().div_euclid(width) * width;
    let end_secs = q.until.timestamp() + i64::from(q.until.timestamp_subsec_nanos() > 0);
    let end = end_secs.div_euclid(width) * width
        + if end_secs.rem_euclid(width) > 0 {
            width
        } else {
            0
        };
    (
        DateTime::from_timestamp(start, 0).unwrap_or(q.since),
        DateTime::from_timestamp(end, 0).unwrap_or(q.until),
    )
}

/// One bucket's aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketStats {
    pub bucket: DateTime<Utc>,
    pub count: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}
