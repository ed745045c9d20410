//! Schema setup: the tables and indexes, and the table kind (whether `sensor_data` is a
//! hypertable), from what the server offers of TimescaleDB.

use super::error::{describe, Context, StoreError};
use super::Store;
use crate::postgres::settings::{SchemaMode, TimescaleMode};

/// Key of the advisory lock that serialises schema setup across processes.
const SCHEMA_LOCK: i64 = 0x5e45_0001;

/// Bumped whenever `ensure_schema` creates something new. The template's `SchemaMigration`
/// custom resource carries it too (`scripts/lint-template` checks they agree), so a deploy
/// of a new version migrates before the functions that only check the schema are updated.
pub const SCHEMA_VERSION: i32 = 5;

/// What the last setup recorded.
struct Recorded {
    /// The schema version it set up.
    version: i32,
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
            "SELECT version, conversion_error FROM pipeline_schema ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await
        .ctx("checking the schema version")?;
    Ok(row.map(|r| Recorded {
        version: r.get(0),
        conversion_error: r.get(1),
    }))
}

/// The roles the functions run as, when each has a login of its own (a member of one of
/// these). Schema setup creates them (`NOLOGIN`, when its role may create roles) and grants
/// each what its function does, and no more:
///
/// | role | may |
/// |---|---|
/// | `sensor_pipeline_ingest` | read `api_keys`; read and add `idempotency_keys` |
/// | `sensor_pipeline_query` | read `sensor_data`, `sensor_locations`, `sensor_data_hourly`, `api_keys` |
/// | `sensor_pipeline_writer` | add rows to `sensor_data` and `sensor_locations`; read, add and update the batch records |
///
/// Each may read `pipeline_schema`. None may change the schema, delete rows or read
/// another's tables beyond this; migrations and maintenance (pruning, retention) run as the
/// tables' owner.
pub const ROLES: [(&str, &str); 3] = [
    (
        "sensor_pipeline_ingest",
        "GRANT SELECT ON api_keys, pipeline_schema TO {role};
         GRANT SELECT, INSERT ON idempotency_keys TO {role};",
    ),
    (
        "sensor_pipeline_query",
        "GRANT SELECT ON sensor_data, sensor_locations, api_keys, pipeline_schema TO {role};",
    ),
    (
        "sensor_pipeline_writer",
        "GRANT INSERT ON sensor_data TO {role};
         GRANT SELECT, INSERT ON sensor_locations, ingest_batches TO {role};
         GRANT SELECT, INSERT, UPDATE ON written_batches TO {role};
         GRANT SELECT ON pipeline_schema TO {role};",
    ),
];

/// Creates the functions' [`ROLES`] where they are missing and grants each its rights (and
/// the query role the hourly aggregate, when it exists). A role that cannot be created (the
/// setup's role lacks CREATEROLE) or a grant that cannot be made (it does not own the
/// tables) is logged with what to run instead, and does not stop the setup.
pub(super) async fn grant_roles(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    for (role, grants) in ROLES {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .ctx("looking for the functions' roles")?
            .is_some();
        let mut sql = String::new();
        if !exists {
            sql.push_str(&format!("CREATE ROLE {role} NOLOGIN;"));
        }
        sql.push_str(&grants.replace("{role}", role));
        if role == "sensor_pipeline_query" {
            let hourly: bool = tx
                .query_one("SELECT to_regclass('sensor_data_hourly') IS NOT NULL", &[])
                .await
                .ctx("looking for the hourly aggregate")?
                .get(0);
            if hourly {
                sql.push_str(&format!("GRANT SELECT ON sensor_data_hourly TO {role};"));
            }
        }
        tx.batch_execute("SAVEPOINT roles")
            .await
            .ctx("granting the functions' roles")?;
        match tx.batch_execute(&sql).await {
            Ok(()) => {}
            // Another process created the role meanwhile: grant to it.
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT)
                    || e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                tx.batch_execute("ROLLBACK TO SAVEPOINT roles")
                    .await
                    .ctx("granting the functions' roles")?;
                tx.batch_execute(&grants.replace("{role}", role))
                    .await
                    .ctx("granting the functions' roles")?;
            }
            Err(e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT roles")
                    .await
                    .ctx("granting the functions' roles")?;
                tracing::warn!(role, error = %describe(&e),
                    "could not create or grant the role {role}; as the tables' owner run: {}",
                    sql.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    Ok(())
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

impl Store {
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
            Err(e @ StoreError::SchemaBehind(_)) => {
                tracing::warn!(error = %e, "requests that need the database are refused until the schema is migrated");
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
        let recorded = current_schema(&client).await?;
        if self.schema_mode == SchemaMode::Check {
            return match recorded {
                Some(r) if r.version >= SCHEMA_VERSION => {
                    let hypertable =
                        ts.preloaded && ts.created.is_some() && is_hypertable(&**client).await?;
                    let plain_because = (!hypertable && want)
                        .then(|| r.conversion_error.or_else(|| ts.obstacle()))
                        .flatten();
                    describe_schema(&client, hypertable, &ts, plain_because).await
                }
                found => Err(StoreError::SchemaBehind(format!(
                    "{}, and this build needs version {SCHEMA_VERSION}; with DB_SCHEMA=check it \
                     does not set the schema up itself: run the migration (the writer's deploy \
                     step, or `batch-writer migrate` with the tables' owner)",
                    match found {
                        Some(r) => format!("it is at version {}", r.version),
                        None => "it is not set up".to_owned(),
                    }
                ))),
            };
        }
        // A later version than this build's (a newer writer migrated it) is left as it is.
        if let Some(recorded) = recorded.filter(|r| r.version >= SCHEMA_VERSION) {
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
                 readings   INTEGER,
                 PRIMARY KEY (batch_id, part)
             );
             -- Version 4: how many readings each part wrote (NULL for parts written before).
             ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS readings INTEGER;
             CREATE INDEX IF NOT EXISTS ingest_batches_written_at_idx
                 ON ingest_batches (written_at);
             -- Version 5: the offsets written of each batch (envelope version 2 names its
             -- readings by offset); `readings` is the batch's size.
             CREATE TABLE IF NOT EXISTS written_batches (
                 batch_id   TEXT           PRIMARY KEY,
                 readings   INTEGER        NOT NULL,
                 written    int4multirange NOT NULL,
                 written_at TIMESTAMPTZ    NOT NULL DEFAULT now()
             );
             CREATE INDEX IF NOT EXISTS written_batches_written_at_idx
                 ON written_batches (written_at);
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
        grant_roles(&tx).await?;
        tx.commit().await.ctx("committing schema setup")?;
        describe_schema(&client, hypertable, &ts, plain_because).await
    }
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
pub(super) async fn schema_transaction(
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
