//! The database settings as values: where and how to connect ([`DbConfig`]), whether to
//! use TimescaleDB ([`TimescaleMode`]) and how data lives over time ([`LifecycleConfig`]).
//! Reading them from the environment is [`crate::config`]'s work, which re-exports them.

use std::str::FromStr;
use std::time::Duration;

use crate::postgres::connection::{ConnectionSettings, ConnectionStringError};
use crate::postgres::tls::{RootCert, SslMode};

/// PostgreSQL connection settings.
///
/// The connection comes from `DATABASE_URL`, or, when `DATABASE_SECRET_ARN` is set, from
/// that Secrets Manager secret ([`DbConfig::load`] reads it). `DB_SSLMODE` and
/// `DB_SSL_ROOT_CERT` override the TLS settings of either (see [`crate::postgres::tls`]).
#[derive(Clone)]
pub struct DbConfig {
    /// `DATABASE_URL`: a libpq-style URL or key=value string, with libpq's `sslmode`
    /// (`disable`, `prefer` (default), `require`, `verify-ca`, `verify-full`) and
    /// `sslrootcert` (a PEM file of CA certificates, or `system`). Not used when `secret` is set.
    pub url: String,
    /// `DB_POOL_SIZE`: connections per process.
    pub pool_size: usize,
    /// `DB_CONNECT_TIMEOUT_SECS`.
    pub connect_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_SECS`: server-side limit on any one statement.
    pub statement_timeout: Duration,
    /// `DB_LOCK_TIMEOUT_SECS`: the longest any statement waits for a lock.
    pub lock_timeout: Duration,
    /// `DB_IDLE_IN_TRANSACTION_TIMEOUT_SECS`: the server ends a session whose transaction
    /// stays idle this long (its client stopped mid-transaction), releasing its locks.
    pub idle_in_transaction_timeout: Duration,
    /// The connection read from the secret `DATABASE_SECRET_ARN` names; replaces `url`.
    pub secret: Option<ConnectionSettings>,
    /// That secret's ARN: when the database refuses its credentials (rotated), the store
    /// reads the secret again.
    pub secret_arn: Option<String>,
    /// `DB_SSLMODE`: the least TLS to use; the connection's own `sslmode` wins when stricter.
    pub ssl_mode: Option<SslMode>,
    /// `DB_SSL_ROOT_CERT`: overrides the connection's `sslrootcert`.
    pub ssl_root_cert: Option<RootCert>,
    /// `TIMESCALEDB`: whether `sensor_data` is to be a hypertable.
    pub timescaledb: TimescaleMode,
    /// `DB_SCHEMA`: whether this process sets the schema up or only checks it.
    pub schema: SchemaMode,
}

/// `DB_SCHEMA`: what a process does about the schema when it first uses the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchemaMode {
    /// Creates and upgrades the tables, indexes and the functions' roles (under the schema
    /// lock, and only when the recorded version is older than this build's): the writer
    /// and the tools. Needs a role that owns the tables.
    #[default]
    Migrate,
    /// Never changes the schema: checks that it is set up at this build's version or a
    /// later one, and answers [`crate::postgres::store::StoreError::SchemaBehind`] until it
    /// is. For ingest and query, whose roles may only read and write rows.
    Check,
}

impl FromStr for SchemaMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "migrate" => Ok(SchemaMode::Migrate),
            "check" => Ok(SchemaMode::Check),
            _ => Err("expected migrate or check".into()),
        }
    }
}

/// `TIMESCALEDB`: what the store does about TimescaleDB when it sets the schema up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimescaleMode {
    /// A hypertable when the extension is installed and preloaded (or already created),
    /// else a plain table, with one warning that says why.
    #[default]
    Auto,
    /// A hypertable or nothing: schema setup fails with what to change.
    Require,
    /// Never creates the extension or a hypertable.
    Off,
}

impl FromStr for TimescaleMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(TimescaleMode::Auto),
            "require" | "required" => Ok(TimescaleMode::Require),
            "off" => Ok(TimescaleMode::Off),
            _ => Err("expected auto, require or off".into()),
        }
    }
}

/// The defaults, without looking at the environment.
impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            url: DEFAULT_DATABASE_URL.to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
            secret: None,
            secret_arn: None,
            ssl_mode: None,
            ssl_root_cert: None,
            timescaledb: TimescaleMode::Auto,
            schema: SchemaMode::Migrate,
        }
    }
}

/// The URL and the secret carry passwords: neither is shown.
impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_arn", &self.secret_arn)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("timescaledb", &self.timescaledb)
            .field("schema", &self.schema)
            .finish()
    }
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/sensors";

impl DbConfig {
    /// Where and how to connect: the secret's settings or `url`'s, with `DB_SSL_ROOT_CERT`
    /// applied over them and `DB_SSLMODE` as the least they may ask for.
    pub fn connection(&self) -> Result<ConnectionSettings, ConnectionStringError> {
        let mut c = match &self.secret {
            Some(c) => c.clone(),
            None => ConnectionSettings::parse(&self.url)?,
        };
        if let Some(root) = &self.ssl_root_cert {
            c.tls.root_cert = Some(root.clone());
        }
        // A floor, never a downgrade: a secret that asks for verify-full keeps it whatever
        // the deployment's default says.
        if let Some(mode) = self.ssl_mode {
            c.tls.mode = Some(c.tls.mode().max(mode));
        }
        Ok(c)
    }
}

/// How long data lives and how it is stored over time. Applied by the batch-writer's
/// schema setup; a change is applied on its next cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// `CHUNK_INTERVAL_HOURS` (TimescaleDB): the time span of one chunk.
    pub chunk_interval_hours: u32,
    /// `COMPRESS_AFTER_DAYS` (TimescaleDB): compress chunks older than this; 0 turns it off.
    pub compress_after_days: u32,
    /// `RETENTION_DAYS`: drop readings older than this; 0 keeps everything.
    pub retention_days: u32,
    /// `HOURLY_AGGREGATE` (TimescaleDB): keep the `sensor_data_hourly` continuous aggregate.
    pub hourly_aggregate: bool,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            chunk_interval_hours: 24,
            compress_after_days: 7,
            retention_days: 0,
            hourly_aggregate: true,
        }
    }
}

impl LifecycleConfig {
    /// A stable text form, recorded with the schema to notice changes. `policies=2` names
    /// the form of the policies themselves, so a new form is applied to existing databases.
    pub fn fingerprint(&self) -> String {
        format!(
            "chunk={}h compress={}d retention={}d hourly={} policies=2",
            self.chunk_interval_hours,
            self.compress_after_days,
            self.retention_days,
            self.hourly_aggregate
        )
    }
}
