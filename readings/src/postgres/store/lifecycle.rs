//! Data lifecycle: TimescaleDB's chunk, compression, retention and aggregate policies,
//! plain-table retention, and pruning of batch records and idempotency keys.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::error::{Context, StoreError};
use super::schema::{grant_roles, schema_transaction, TableKind};
use super::Store;
use crate::postgres::settings::LifecycleConfig;

/// What [`Store::maintain`] did: each step's outcome.
#[derive(Debug)]
pub struct Maintenance {
    /// Whether changed lifecycle settings were applied.
    pub lifecycle: Result<bool, StoreError>,
    /// Batch records and idempotency keys pruned.
    pub pruned: Result<u64, StoreError>,
    /// Readings deleted past their retention (plain tables).
    pub expired: Result<u64, StoreError>,
}

/// A deadline for the steps that callers run without one: statement and lock timeouts
/// bound them on the server.
fn unbounded() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

impl Store {
    /// The writer's periodic maintenance, every step finished by `deadline` or cancelled on
    /// the server: applies changed lifecycle settings ([`Store::apply_lifecycle`]), prunes
    /// batch records older than `records` ([`Store::prune`]) and deletes readings past their
    /// retention ([`Store::delete_expired`]).
    pub async fn maintain(
        &self,
        cfg: &LifecycleConfig,
        records: Duration,
        deadline: Instant,
    ) -> Maintenance {
        let lifecycle = match self.ready().await {
            Ok(kind) => {
                self.within(deadline, "applying lifecycle settings", async |c| {
                    apply_lifecycle(c, kind, cfg).await
                })
                .await
            }
            Err(e) => Err(e),
        };
        let pruned = self
            .within(deadline, "pruning batch records", async |c| {
                prune(c, records).await
            })
            .await;
        let expired = self
            .within(deadline, "deleting expired readings", async |c| {
                self.delete_expired_on(c, cfg).await
            })
            .await;
        Maintenance {
            lifecycle,
            pruned,
            expired,
        }
    }

    /// Applies data-lifecycle settings when they differ from the ones recorded: on a
    /// hypertable the chunk interval, compression (segment by location, order by time
    /// desc) and retention policies and the hourly continuous aggregate; on a plain table
    /// only the record, as retention there is the writer's scheduled delete
    /// ([`Store::delete_expired`]). Returns whether anything was applied.
    pub async fn apply_lifecycle(&self, cfg: &LifecycleConfig) -> Result<bool, StoreError> {
        let kind = self.ready().await?;
        self.within(unbounded(), "applying lifecycle settings", async |c| {
            apply_lifecycle(c, kind, cfg).await
        })
        .await
    }

    /// Plain-table retention: deletes readings older than `retention_days`, a few thousand
    /// rows per statement so writes never wait long. A no-op on a hypertable (its retention
    /// policy drops whole chunks) or with retention off. Returns the rows deleted.
    pub async fn delete_expired(&self, cfg: &LifecycleConfig) -> Result<u64, StoreError> {
        self.within(unbounded(), "deleting expired readings", async |c| {
            self.delete_expired_on(c, cfg).await
        })
        .await
    }

    async fn delete_expired_on(
        &self,
        client: &tokio_postgres::Client,
        cfg: &LifecycleConfig,
    ) -> Result<u64, StoreError> {
        if cfg.retention_days == 0 || self.ready().await? == TableKind::Hypertable {
            return Ok(0);
        }
        let cutoff = Utc::now() - chrono::TimeDelta::days(i64::from(cfg.retention_days));
        delete_older_than(client, "sensor_data", "time", cutoff).await
    }

    /// Deletes batch records and idempotency keys older than `older_than`, a few thousand
    /// rows per statement, skipping rows other sessions hold, so writers never wait on it.
    /// Returns how many rows went.
    pub async fn prune(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.ready().await?;
        self.within(unbounded(), "pruning batch records", async |c| {
            prune(c, older_than).await
        })
        .await
    }
}

async fn prune(client: &tokio_postgres::Client, older_than: Duration) -> Result<u64, StoreError> {
    let cutoff =
        Utc::now() - chrono::TimeDelta::from_std(older_than).unwrap_or(chrono::TimeDelta::MAX);
    Ok(
        delete_older_than(client, "ingest_batches", "written_at", cutoff).await?
            + delete_older_than(client, "written_batches", "written_at", cutoff).await?
            + delete_older_than(client, "idempotency_keys", "created_at", cutoff).await?,
    )
}

async fn apply_lifecycle(
    client: &mut deadpool_postgres::Client,
    kind: TableKind,
    cfg: &LifecycleConfig,
) -> Result<bool, StoreError> {
    let tx = schema_transaction(client).await?;
    let fingerprint = cfg.fingerprint();
    let recorded: Option<String> = tx
        .query_opt("SELECT lifecycle FROM pipeline_schema", &[])
        .await
        .ctx("reading lifecycle settings")?
        .and_then(|r| r.get(0));
    if recorded.as_deref() == Some(fingerprint.as_str()) {
        return Ok(false);
    }
    if kind == TableKind::Hypertable {
        let mut sql = format!(
            "SELECT set_chunk_time_interval('sensor_data', INTERVAL '{} hours');",
            cfg.chunk_interval_hours
        );
        sql.push_str("SELECT remove_compression_policy('sensor_data', if_exists => TRUE);");
        if cfg.compress_after_days > 0 {
            sql.push_str(&format!(
                "ALTER TABLE sensor_data SET (timescaledb.compress,
                         timescaledb.compress_segmentby = 'location',
                         timescaledb.compress_orderby = 'time DESC');
                     SELECT add_compression_policy('sensor_data', INTERVAL '{} days');",
                cfg.compress_after_days
            ));
        }
        sql.push_str("SELECT remove_retention_policy('sensor_data', if_exists => TRUE);");
        if cfg.retention_days > 0 {
            sql.push_str(&format!(
                "SELECT add_retention_policy('sensor_data', INTERVAL '{} days');",
                cfg.retention_days
            ));
        }
        if cfg.hourly_aggregate {
            sql.push_str(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS sensor_data_hourly
                     WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                     SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, location,
                            count(*) AS readings, sum(temperature) AS total,
                            min(temperature) AS min_temperature,
                            max(temperature) AS max_temperature
                     FROM sensor_data
                     WHERE location IS NOT NULL AND temperature IS NOT NULL
                     GROUP BY bucket, location
                     WITH NO DATA;
                     SELECT remove_continuous_aggregate_policy('sensor_data_hourly',
                                                                if_exists => TRUE);
                     -- No start offset: each run materializes every hour invalidated since
                     -- the last, however old (late readings, adopted tables, the first run),
                     -- so buckets below the watermark never miss rows.
                     SELECT add_continuous_aggregate_policy('sensor_data_hourly',
                         start_offset => NULL, end_offset => INTERVAL '1 hour',
                         schedule_interval => INTERVAL '30 minutes');",
            );
        } else {
            sql.push_str("DROP MATERIALIZED VIEW IF EXISTS sensor_data_hourly;");
        }
        tx.batch_execute(&sql)
            .await
            .ctx("applying TimescaleDB lifecycle settings")?;
    }
    tx.execute("UPDATE pipeline_schema SET lifecycle = $1", &[&fingerprint])
        .await
        .ctx("recording lifecycle settings")?;
    // The hourly aggregate may be new: the query role may read it.
    grant_roles(&tx).await?;
    tx.commit().await.ctx("committing lifecycle settings")?;
    tracing::info!(settings = %fingerprint, table = ?kind, "lifecycle settings applied");
    Ok(true)
}

/// Rows deleted per statement by [`delete_older_than`].
const DELETE_CHUNK: u64 = 5000;

/// Deletes the rows of `table` whose `column` is before `cutoff`, [`DELETE_CHUNK`] rows per
/// statement, skipping rows other sessions hold, so writers never wait on it. `table` and
/// `column` are this module's constants, never input. Returns how many rows went.
async fn delete_older_than(
    client: &tokio_postgres::Client,
    table: &str,
    column: &str,
    cutoff: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {table} WHERE {column} < $1
             LIMIT {DELETE_CHUNK} FOR UPDATE SKIP LOCKED))"
    );
    let mut total = 0;
    loop {
        let n = client
            .execute(&sql, &[&cutoff])
            .await
            .ctx("deleting expired rows")?;
        total += n;
        if n < DELETE_CHUNK {
            return Ok(total);
        }
    }
}
