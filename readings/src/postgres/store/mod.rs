//! The PostgreSQL store: schema setup, the batch write path, and the read queries.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::pin_mut;
use thiserror::Error;
use tokio::sync::OnceCell;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::config::{DbConfig, LifecycleConfig, TimescaleMode};
use crate::model::envelope::{BatchPart, EnvelopeError};
use crate::model::reading::Reading;
use crate::query::{RecentQuery, StatsQuery, MAX_LIMIT};

/// Key of the advisory lock that serialises schema setup across processes.
const SCHEMA_LOCK: i64 = 0x5e45_0001;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("no database connection available: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error while {context}: {}", describe(source))]
    Db {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("database busy: {0}")]
    Busy(&'static str),
    /// `TIMESCALEDB=require`, and the database cannot give a hypertable: why, and what to do.
    #[error("TIMESCALEDB=require, but {0}")]
    TimescaleRequired(String),
}

/// What to do about a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying: the connection, the server's state or a conflict (SQLSTATE classes
    /// 08, 40, 53, 57, 58, XX, timeouts, no code at all).
    Transient,
    /// The data itself is refused (classes 22, 23): retrying the same rows cannot succeed.
    Data,
    /// Refused for a reason an operator must fix (class 42: privileges, missing objects).
    Operator,
}

impl StoreError {
    /// The SQLSTATE of the underlying database error, if there is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Db { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Envelope(_) => ErrorKind::Data,
            _ => match self.sqlstate().map(|s| s.get(..2).unwrap_or(s)) {
                Some("22") | Some("23") => ErrorKind::Data,
                Some("42") => ErrorKind::Operator,
                _ => ErrorKind::Transient,
            },
        }
    }
}

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use of the key.
    New,
    /// The key was used before with the same body: a retry.
    Retry,
    /// The key was used before with another body.
    Conflict,
}

/// The server's message, code and constraint, not just "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {}", db.message(), db.code().code());
            if let Some(c) = db.constraint() {
                s.push_str(&format!(", constraint {c}"));
            }
            s.push(')');
            s
        }
        None => match std::error::Error::source(e) {
            Some(inner) => format!("{e}: {inner}"),
            None => e.to_string(),
        },
    }
}

/// Why the pool has no connection: for a failed connect, the server's or the TLS layer's
/// reason ("password authentication failed ...", "invalid peer certificate: UnknownIssuer").
fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        e => e.to_string(),
    }
}

trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Db { context, source })
    }
}

/// Bumped whenever `ensure_schema` creates something new.
const SCHEMA_VERSION: i32 = 3;

/// What a setup of the current version recorded, if there was one.
struct Recorded {
    /// A failed attempt to make the table a hypertable (it stayed plain, rows kept).
    conversion_error: Option<String>,
}

async fn current_schema(client: &tokio_postgres::Client) -> Result<Option<Recorded>, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pipeline_schema') IS NOT NULL", &[])
        .await
        .ctx("checking the schema version")?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let has_column: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                            WHERE attrelid = 'pipeline_schema'::regclass
                              AND attname = 'conversion_error' AND NOT attisdropped)",
            &[],
        )
        .await
        .ctx("checking the schema version")?
        .get(0);
    if !has_column {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT conversion_error FROM pipeline_schema WHERE version = $1",
            &[&SCHEMA_VERSION],
        )
        .await
        .ctx("checking the schema version")?;
    Ok(row.map(|r| Recorded {
        conversion_error: r.get(0),
    }))
}

/// What the server offers of TimescaleDB, read before anything tries it: on a server that
/// has the extension installed but not preloaded, `CREATE EXTENSION timescaledb` is FATAL
/// and closes the connection.
#[derive(Debug, Clone, Default)]
struct Timescale {
    /// The version `CREATE EXTENSION` would install, when the extension is installed.
    available: Option<String>,
    /// The version created in this database, if it is.
    created: Option<String>,
    /// Whether `shared_preload_libraries` names it.
    preloaded: bool,
}

impl Timescale {
    async fn probe(client: &tokio_postgres::Client) -> Result<Timescale, StoreError> {
        let row = client
            .query_one(
                // The loader's settings exist only where the server loaded it; pg_settings
                // hides shared_preload_libraries from roles without pg_read_all_settings
                // (such as RDS's master user), where the loader's presence decides alone.
                "SELECT (SELECT default_version FROM pg_available_extensions
                         WHERE name = 'timescaledb'),
                        (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                        EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load'),
                        (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries')",
                &[],
            )
            .await
            .ctx("looking for TimescaleDB")?;
        let loader: bool = row.get(2);
        let preload: Option<String> = row.get(3);
        Ok(Timescale {
            available: row.get(0),
            created: row.get(1),
            preloaded: loader
                && preload.is_none_or(|list| {
                    list.split(',')
                        .any(|lib| lib.trim().trim_matches('"') == "timescaledb")
                }),
        })
    }

    /// Why this server cannot give a hypertable, with what to change; `None` when it can.
    fn obstacle(&self) -> Option<String> {
        if self.preloaded {
            return None;
        }
        Some(if self.available.is_none() && self.created.is_none() {
            "TimescaleDB is not installed on this PostgreSQL server: install it (Timescale's \
             package for your PostgreSQL, e.g. timescaledb-2-postgresql-15), add \
             shared_preload_libraries = 'timescaledb' to postgresql.conf and restart the server"
                .to_owned()
        } else {
            "TimescaleDB is installed but not preloaded: add shared_preload_libraries = \
             'timescaledb' to postgresql.conf (timescaledb-tune does it) and restart the server"
                .to_owned()
        })
    }
}

/// Whether `sensor_data` is a hypertable (the extension must be created and loaded).
async fn is_hypertable(client: &impl tokio_postgres::GenericClient) -> Result<bool, StoreError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                            WHERE hypertable_schema = current_schema()
                              AND hypertable_name = 'sensor_data')",
            &[],
        )
        .await
        .ctx("looking for the hypertable")?
        .get(0))
}

/// How `sensor_data` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Hypertable,
    Plain,
}

/// What [`Store::schema`] found and set up: how `sensor_data` is stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub kind: TableKind,
    /// The TimescaleDB version created in the database, when it is.
    pub timescaledb: Option<String>,
    /// Why `sensor_data` is a plain table although `TIMESCALEDB` is not `off`, with what to
    /// change.
    pub plain_because: Option<String>,
    /// Whether `sensor_data` allows NULLs (a table made by other software, such as the
    /// Timescale tutorial's): the queries then skip rows with a NULL time, location or
    /// temperature.
    pub nullable: bool,
}

/// What one [`Store::write`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Rows COPYed into `sensor_data`.
    pub rows: u64,
    /// Batch parts written by this call.
    pub parts_written: usize,
    /// Batch parts skipped because an earlier call had already written them.
    pub parts_skipped: usize,
    /// Readings in the skipped parts, not written again.
    pub rows_skipped: u64,
    /// Time spent in the binary COPY.
    pub copy_time: Duration,
}

/// A row of `api_keys`: an API key as stored, by the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The public part of the key, shown by `keys list`.
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// SHA-256 of the whole key.
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const KEY_SELECT: &str = "SELECT id, name, scopes, key_hash, created_at, revoked_at FROM api_keys";

fn stored_key(row: &tokio_postgres::Row) -> StoredKey {
    StoredKey {
        id: row.get(0),
        name: row.get(1),
        scopes: row.get(2),
        key_hash: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
    }
}

/// A pool of connections plus the pipeline's SQL. Cheap to clone; create one per process.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    schema: Arc<OnceCell<Schema>>,
    timescale: TimescaleMode,
    /// Locations known to be in `sensor_locations`, so writes skip registering them.
    known_locations: Arc<std::sync::Mutex<HashSet<String>>>,
}

/// Bound on [`Store`]'s cache of registered locations; past it the cache starts over.
const MAX_KNOWN_LOCATIONS: usize = 100_000;

impl Store {
    /// Builds the pool, with TLS as the connection's `sslmode` asks (see [`crate::postgres::tls`]).
    /// Connections are opened lazily, on first use; a root certificate file is read here.
    pub fn new(config: &DbConfig) -> Result<Self, StoreError> {
        let connection = config
            .connection()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let tls = connection
            .tls
            .connector()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let mut pg = connection.postgres_config();
        pg.connect_timeout(config.connect_timeout);
        pg.options(format!(
            "-c statement_timeout={}",
            config.statement_timeout.as_millis()
        ));
        if pg.get_application_name().is_none() {
            pg.application_name("sensor-pipeline");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &config.secret_arn {
            // Connections that follow the secret's rotation (see `rotation`).
            Some(arn) => Manager::from_connect(
                pg,
                crate::postgres::rotation::SecretConnect::new(tls, arn.clone()),
                manager_config,
            ),
            None => Manager::from_config(pg, tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store {
            pool,
            schema: Arc::new(OnceCell::new()),
            timescale: config.timescaledb,
            known_locations: Arc::default(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Sets the schema up once per process (see [`Store::ensure_schema`]); a failed attempt
    /// is retried on the next call.
    pub async fn ready(&self) -> Result<TableKind, StoreError> {
        Ok(self.schema().await?.kind)
    }

    /// [`Store::ready`], with what it found: the table kind, the TimescaleDB version and,
    /// for a plain table, why.
    pub async fn schema(&self) -> Result<&Schema, StoreError> {
        self.schema.get_or_try_init(|| self.set_up()).await
    }

    /// Sets the schema up now and logs what it found: a function calls this at start, so
    /// its log says which table kind it uses and a schema that cannot be set up as asked
    /// (`TIMESCALEDB=require` without TimescaleDB) stops it there. No connection at all (the
    /// database down or unreachable, or refusing the credentials) does not: the function
    /// starts and sets the schema up on first use.
    pub async fn check_at_start(&self) -> Result<(), StoreError> {
        match self.schema().await {
            Ok(s) => {
                let kind = match s.kind {
                    TableKind::Hypertable => "hypertable",
                    TableKind::Plain => "plain table",
                };
                tracing::info!(
                    table = kind,
                    timescaledb = s.timescaledb.as_deref().unwrap_or("none"),
                    nullable_columns = s.nullable,
                    "sensor_data is a {kind}"
                );
                if let Some(why) = &s.plain_because {
                    tracing::warn!("sensor_data is a plain table: {why} (TIMESCALEDB=off silences this; TIMESCALEDB=require refuses to start without a hypertable)");
                }
                Ok(())
            }
            Err(e @ StoreError::Pool(_)) => {
                tracing::warn!(error = %e, "the database is unavailable at start; the schema is set up on first use");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates what the pipeline needs, idempotently, and returns the table kind. Safe when
    /// several processes start at once: the whole setup runs in one transaction under an
    /// advisory lock.
    ///
    /// `sensor_data` becomes a hypertable when `TIMESCALEDB` allows it and the server can
    /// give one (TimescaleDB installed and preloaded, or already created in the database);
    /// otherwise it is a plain table. Either way it gets the indexes that make "newest N" and
    /// "newest N of one location" index scans. An existing `sensor_data` (the tutorial's,
    /// with nullable columns, a hypertable or not) is adopted as it is: its rows are kept,
    /// and a plain one is turned into a hypertable with `migrate_data` only when that
    /// succeeds; when it cannot (a row with a NULL time) the table stays plain and the reason
    /// is recorded.
    ///
    /// A marker row in `pipeline_schema` records the version set up; when it is current the
    /// setup takes no locks at all (DDL would briefly block writers on every cold start),
    /// unless a plain table could now become a hypertable.
    pub async fn ensure_schema(&self) -> Result<TableKind, StoreError> {
        Ok(self.set_up().await?.kind)
    }

    async fn set_up(&self) -> Result<Schema, StoreError> {
        let mut client = self.pool.get().await?;
        let ts = Timescale::probe(&client).await?;
        let want = self.timescale != TimescaleMode::Off;
        if self.timescale == TimescaleMode::Require {
            if let Some(why) = ts.obstacle() {
                return Err(StoreError::TimescaleRequired(why));
            }
        }
        if let Some(recorded) = current_schema(&client).await? {
            let hypertable =
                ts.preloaded && ts.created.is_some() && is_hypertable(&**client).await?;
            // A conversion that failed is tried again only when a hypertable is required.
            let settled = hypertable
                || !want
                || ts.obstacle().is_some()
                || (recorded.conversion_error.is_some()
                    && self.timescale != TimescaleMode::Require);
            if settled {
                let plain_because = (!hypertable && want)
                    .then(|| recorded.conversion_error.or_else(|| ts.obstacle()))
                    .flatten();
                return describe_schema(&client, hypertable, &ts, plain_because).await;
            }
        }

        let tx = schema_transaction(&mut client).await?;
        // Turning a large existing table into a hypertable moves every row: no time limit.
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .ctx("schema setup")?;
        let mut ts = ts;
        let mut plain_because = if want { ts.obstacle() } else { None };
        if want && plain_because.is_none() && ts.created.is_none() {
            // Preloaded, so a failure here is an ERROR (e.g. no privilege), not FATAL.
            tx.batch_execute("SAVEPOINT timescale")
                .await
                .ctx("schema setup")?;
            match tx
                .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .await
            {
                Ok(()) => {
                    ts.created = tx
                        .query_one(
                            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
                            &[],
                        )
                        .await
                        .ctx("reading the TimescaleDB version")?
                        .get(0);
                }
                Err(e) => {
                    plain_because = Some(format!(
                        "CREATE EXTENSION timescaledb failed: {} (create it as a superuser: \
                         CREATE EXTENSION timescaledb)",
                        describe(&e)
                    ));
                    tx.batch_execute("ROLLBACK TO SAVEPOINT timescale")
                        .await
                        .ctx("schema setup")?;
                }
            }
        }

        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sensor_data (
                 time        TIMESTAMPTZ      NOT NULL,
                 location    TEXT             NOT NULL,
                 temperature DOUBLE PRECISION NOT NULL
             );
             CREATE TABLE IF NOT EXISTS ingest_batches (
                 batch_id   TEXT        NOT NULL,
                 part       INTEGER     NOT NULL,
                 written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 PRIMARY KEY (batch_id, part)
             );
             CREATE INDEX IF NOT EXISTS ingest_batches_written_at_idx
                 ON ingest_batches (written_at);
             CREATE TABLE IF NOT EXISTS idempotency_keys (
                 batch_id   TEXT        PRIMARY KEY,
                 body_hash  TEXT        NOT NULL,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );
             CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx
                 ON idempotency_keys (created_at);
             CREATE TABLE IF NOT EXISTS sensor_locations (
                 location   TEXT        PRIMARY KEY,
                 first_seen TIMESTAMPTZ NOT NULL DEFAULT now()
             );
             CREATE TABLE IF NOT EXISTS api_keys (
                 id         TEXT        PRIMARY KEY,
                 name       TEXT        NOT NULL,
                 scopes     TEXT[]      NOT NULL,
                 key_hash   BYTEA       NOT NULL,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 revoked_at TIMESTAMPTZ
             );",
        )
        .await
        .ctx("creating tables")?;

        let loaded = ts.preloaded && ts.created.is_some();
        let mut hypertable = loaded && is_hypertable(&*tx).await?;
        let mut conversion_error = None;
        if want && loaded && !hypertable {
            // TimescaleDB 2.13+ API. Existing rows move into chunks; the default (time DESC)
            // index comes with it. It refuses (and the savepoint keeps every row where it
            // was) when a row has no time.
            tx.batch_execute("SAVEPOINT hypertable")
                .await
                .ctx("schema setup")?;
            match tx
                .batch_execute(
                    "SELECT create_hypertable('sensor_data', by_range('time'),
                                              if_not_exists => TRUE, migrate_data => TRUE)",
                )
                .await
            {
                Ok(()) => hypertable = true,
                Err(e) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT hypertable")
                        .await
                        .ctx("schema setup")?;
                    let why = format!(
                        "the existing sensor_data could not become a hypertable: {}; it stays \
                         a plain table with every row kept (fix or delete the rows it names, \
                         then start a function once with TIMESCALEDB=require to try again)",
                        describe(&e)
                    );
                    conversion_error = Some(why.clone());
                    plain_because = Some(why);
                }
            }
        }
        if self.timescale == TimescaleMode::Require && !hypertable {
            return Err(StoreError::TimescaleRequired(plain_because.unwrap_or_else(
                || "sensor_data could not be made a hypertable".to_owned(),
            )));
        }
        tx.batch_execute(
            "CREATE INDEX IF NOT EXISTS sensor_data_time_idx ON sensor_data (time DESC);
             CREATE INDEX IF NOT EXISTS sensor_data_location_time_idx
                 ON sensor_data (location, time DESC);",
        )
        .await
        .ctx("creating indexes")?;
        // Locations of readings written before the registry existed: a loose index scan.
        tx.batch_execute(
            "INSERT INTO sensor_locations (location)
             WITH RECURSIVE l(location) AS (
                 (SELECT location FROM sensor_data WHERE location IS NOT NULL
                  ORDER BY location LIMIT 1)
                 UNION ALL
                 SELECT (SELECT d.location FROM sensor_data d WHERE d.location > l.location
                         ORDER BY d.location LIMIT 1)
                 FROM l WHERE l.location IS NOT NULL
             )
             SELECT location FROM l WHERE location IS NOT NULL
             ON CONFLICT DO NOTHING",
        )
        .await
        .ctx("registering existing locations")?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS pipeline_schema (
                 version    INTEGER     NOT NULL,
                 table_kind TEXT        NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 lifecycle  TEXT
             );
             ALTER TABLE pipeline_schema ADD COLUMN IF NOT EXISTS lifecycle TEXT;
             ALTER TABLE pipeline_schema ADD COLUMN IF NOT EXISTS conversion_error TEXT;
             DELETE FROM pipeline_schema;",
        )
        .await
        .ctx("recording the schema version")?;
        let kind_name = if hypertable { "hypertable" } else { "plain" };
        tx.execute(
            "INSERT INTO pipeline_schema (version, table_kind, conversion_error)
             VALUES ($1, $2, $3)",
            &[&SCHEMA_VERSION, &kind_name, &conversion_error],
        )
        .await
        .ctx("recording the schema version")?;
        tx.commit().await.ctx("committing schema setup")?;
        describe_schema(&client, hypertable, &ts, plain_because).await
    }

    /// Writes batch parts in one transaction: records each `(batch id, part)` and COPYs the
    /// readings of the parts not recorded before. A part already written (a redelivered
    /// message, a retried request) is skipped, so each part's rows land exactly once.
    pub async fn write(&self, parts: &[&BatchPart]) -> Result<WriteReport, StoreError> {
        self.ready().await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.ctx("starting the write")?;

        let ids: Vec<&str> = parts.iter().map(|p| p.id.as_str()).collect();
        let nums: Vec<i32> = parts.iter().map(|p| p.part as i32).collect();
        let new: HashSet<(String, i32)> = tx
            .query(
                "INSERT INTO ingest_batches (batch_id, part)
                 SELECT * FROM unnest($1::text[], $2::int4[])
                 ON CONFLICT DO NOTHING
                 RETURNING batch_id, part",
                &[&ids, &nums],
            )
            .await
            .ctx("recording batch ids")?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();

        let mut report = WriteReport::default();
        let mut seen = HashSet::new();
        let copy_started = Instant::now();
        let sink = tx
            .copy_in("COPY sensor_data (time, location, temperature) FROM STDIN (FORMAT binary)")
            .await
            .ctx("starting COPY")?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::TEXT, Type::FLOAT8]);
        pin_mut!(writer);
        for part in parts {
            let key = (part.id.clone(), part.part as i32);
            if !new.contains(&key) || !seen.insert(key) {
                report.parts_skipped += 1;
                report.rows_skipped += part.readings.len() as u64;
                continue;
            }
            report.parts_written += 1;
            for r in &part.readings {
                let time = r.time()?;
                writer
                    .as_mut()
                    .write(&[&time, &r.1, &r.2])
                    .await
                    .ctx("copying readings")?;
            }
        }
        report.rows = writer.finish().await.ctx("finishing COPY")?;
        report.copy_time = copy_started.elapsed();

        // Register locations this process has not seen written yet (for /sensor/latest).
        let fresh: Vec<&str> = {
            let known = self
                .known_locations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut fresh: Vec<&str> = parts
                .iter()
                .filter(|p| new.contains(&(p.id.clone(), p.part as i32)))
                .flat_map(|p| p.readings.iter().map(|r| r.1.as_str()))
                .filter(|l| !known.contains(*l))
                .collect();
            fresh.sort_unstable();
            fresh.dedup();
            fresh
        };
        if !fresh.is_empty() {
            tx.execute(
                "INSERT INTO sensor_locations (location) SELECT unnest($1::text[])
                 ON CONFLICT DO NOTHING",
                &[&fresh],
            )
            .await
            .ctx("registering locations")?;
        }
        tx.commit().await.ctx("committing the write")?;
        let mut known = self
            .known_locations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if known.len() + fresh.len() > MAX_KNOWN_LOCATIONS {
            known.clear();
        }
        known.extend(fresh.into_iter().map(str::to_owned));
        Ok(report)
    }

    /// Applies data-lifecycle settings when they differ from the ones recorded: on a
    /// hypertable the chunk interval, compression (segment by location, order by time
    /// desc) and retention policies and the hourly continuous aggregate; on a plain table
    /// only the record, as retention there is the writer's scheduled delete
    /// ([`Store::delete_expired`]). Returns whether anything was applied.
    pub async fn apply_lifecycle(&self, cfg: &LifecycleConfig) -> Result<bool, StoreError> {
        let kind = self.ready().await?;
        let mut client = self.pool.get().await?;
        let tx = schema_transaction(&mut client).await?;
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
        tx.commit().await.ctx("committing lifecycle settings")?;
        tracing::info!(settings = %fingerprint, table = ?kind, "lifecycle settings applied");
        Ok(true)
    }

    /// Plain-table retention: deletes readings older than `retention_days`, a few thousand
    /// rows per statement so writes never wait long. A no-op on a hypertable (its retention
    /// policy drops whole chunks) or with retention off. Returns the rows deleted.
    pub async fn delete_expired(&self, cfg: &LifecycleConfig) -> Result<u64, StoreError> {
        if cfg.retention_days == 0 || self.ready().await? == TableKind::Hypertable {
            return Ok(0);
        }
        let client = self.pool.get().await?;
        let cutoff = Utc::now() - chrono::TimeDelta::days(i64::from(cfg.retention_days));
        delete_older_than(&client, "sensor_data", "time", cutoff).await
    }

    /// Claims the batch id of an `Idempotency-Key` for a body (by its hash). A later claim
    /// with the same hash is a retry; with another hash, a conflict.
    pub async fn claim_key(&self, batch_id: &str, body_hash: &str) -> Result<Claim, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "WITH new AS (
                     INSERT INTO idempotency_keys (batch_id, body_hash) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING RETURNING body_hash
                 )
                 SELECT body_hash, TRUE FROM new
                 UNION ALL
                 SELECT body_hash, FALSE FROM idempotency_keys WHERE batch_id = $1
                 LIMIT 1",
            )
            .await
            .ctx("preparing the key claim")?;
        // A claim racing another for the same key can see neither row (the other's insert
        // commits after this statement's snapshot); asking again then sees it.
        let mut row = None;
        for _ in 0..3 {
            row = client
                .query_opt(&stmt, &[&batch_id, &body_hash])
                .await
                .ctx("claiming an idempotency key")?;
            if row.is_some() {
                break;
            }
        }
        let Some(row) = row else {
            return Err(StoreError::Busy("an idempotency key claimed concurrently"));
        };
        let (stored, inserted): (String, bool) = (row.get(0), row.get(1));
        Ok(if inserted {
            Claim::New
        } else if stored == body_hash {
            Claim::Retry
        } else {
            Claim::Conflict
        })
    }

    /// Records a new API key (only its hash).
    pub async fn insert_api_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO api_keys (id, name, scopes, key_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &key.id,
                    &key.name,
                    &key.scopes,
                    &key.key_hash,
                    &key.created_at,
                ],
            )
            .await
            .ctx("recording an API key")?;
        Ok(())
    }

    /// The API key with this id, revoked or not.
    pub async fn api_key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!("{KEY_SELECT} WHERE id = $1"))
            .await
            .ctx("preparing the API key lookup")?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .ctx("looking up an API key")?;
        Ok(row.map(|r| stored_key(&r)))
    }

    /// Every API key, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let rows = client
            .query(&format!("{KEY_SELECT} ORDER BY created_at, id"), &[])
            .await
            .ctx("listing API keys")?;
        Ok(rows.iter().map(stored_key).collect())
    }

    /// Marks an API key revoked. Returns false when there is no key with this id; revoking
    /// twice keeps the first revocation time.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
                &[&id],
            )
            .await
            .ctx("revoking an API key")?;
        Ok(n > 0)
    }

    /// Deletes batch records and idempotency keys older than `older_than`, a few thousand
    /// rows per statement, skipping rows other sessions hold, so writers never wait on it.
    /// Returns how many rows went.
    pub async fn prune(&self, older_than: std::time::Duration) -> Result<u64, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let cutoff =
            Utc::now() - chrono::TimeDelta::from_std(older_than).unwrap_or(chrono::TimeDelta::MAX);
        Ok(
            delete_older_than(&client, "ingest_batches", "written_at", cutoff).await?
                + delete_older_than(&client, "idempotency_keys", "created_at", cutoff).await?,
        )
    }

    /// The newest reading of every location (or of the given ones), by location. Driven by
    /// `sensor_locations` and one `(location, time DESC)` index probe per location, so it
    /// never scans the table.
    ///
    /// On a hypertable each probe through all chunks costs about twice a probe of one
    /// chunk, so the probes first look only at readings from the hour before the newest
    /// reading's hour on (a bound written into the statement, so the planner drops the
    /// older chunks once and the plan stays cached for the hour). A location with a
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
    /// hypertable on every request costs more than running the query.
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
        Ok(rows.into_iter().map(reading_from_row).collect())
    }
}

/// The statement [`Store::recent`] runs for `q`, with `$n` placeholders in the order
/// location, since, until, cursor time, cursor location (those that are set).
pub fn recent_sql(q: &RecentQuery, nullable: bool) -> String {
    recent_statement(q, nullable).0
}

fn recent_statement(q: &RecentQuery, nullable: bool) -> (String, Vec<&(dyn ToSql + Sync)>) {
    let limit = q.limit.clamp(1, MAX_LIMIT);
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

/// The [`Schema`] of a set-up database.
async fn describe_schema(
    client: &tokio_postgres::Client,
    hypertable: bool,
    ts: &Timescale,
    plain_because: Option<String>,
) -> Result<Schema, StoreError> {
    let nullable: bool = client
        .query_one(
            "SELECT coalesce(bool_or(NOT attnotnull), FALSE) FROM pg_attribute
             WHERE attrelid = 'sensor_data'::regclass
               AND attname IN ('time', 'location', 'temperature') AND NOT attisdropped",
            &[],
        )
        .await
        .ctx("reading the columns of sensor_data")?
        .get(0);
    Ok(Schema {
        kind: if hypertable {
            TableKind::Hypertable
        } else {
            TableKind::Plain
        },
        timescaledb: ts.created.clone(),
        plain_because,
        nullable,
    })
}

/// A transaction for schema changes: serialised across processes by the schema advisory
/// lock, with "already exists, skipping" notices (the normal case here) kept quiet.
async fn schema_transaction(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = client.transaction().await.ctx("starting schema setup")?;
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .ctx("starting schema setup")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .ctx("taking the schema lock")?;
    Ok(tx)
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
    let stmt = client.prepare_cached(&sql).await.ctx("preparing latest")?;
    let rows = match locations {
        Some(list) => client.query(&stmt, &[&list]).await,
        None => client.query(&stmt, &[]).await,
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
