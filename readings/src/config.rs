//! Configuration from environment variables, with defaults that suit a local run.
//!
//! Every variable is listed in the README's configuration table; keep the two in step.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use chrono::TimeDelta;
use thiserror::Error;

use crate::model::reading::Limits;
use crate::postgres::secrets::SecretError;
pub use crate::postgres::settings::{DbConfig, LifecycleConfig, SchemaMode, TimescaleMode};
use crate::postgres::tls::RootCert;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Reads `name`, parsing it, or returns `default` when unset or empty.
pub fn env_or<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                value: v,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ConfigError::Missing(name)),
    }
}

fn positive<T: PartialOrd + Default + std::fmt::Display>(
    name: &'static str,
    v: T,
) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            name,
            value: v.to_string(),
            reason: "must be greater than zero".into(),
        })
    }
}

/// Whether this process runs inside AWS Lambda.
pub fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

impl DbConfig {
    /// Everything from the environment except the secret: `DATABASE_URL` is the connection.
    /// For tests and tools; the functions use [`DbConfig::load`].
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = DbConfig::default();
        let ssl_mode = match env_or("DB_SSLMODE", String::new())? {
            m if m.is_empty() => None,
            m => Some(m.parse().map_err(|reason| ConfigError::Invalid {
                name: "DB_SSLMODE",
                value: m,
                reason,
            })?),
        };
        let ssl_root_cert = env_or("DB_SSL_ROOT_CERT", String::new())
            .map(|r| (!r.is_empty()).then(|| RootCert::from_setting(&r)))?;
        Ok(DbConfig {
            url: env_or("DATABASE_URL", d.url)?,
            pool_size: positive("DB_POOL_SIZE", env_or("DB_POOL_SIZE", d.pool_size)?)?,
            connect_timeout: Duration::from_secs(positive(
                "DB_CONNECT_TIMEOUT_SECS",
                env_or("DB_CONNECT_TIMEOUT_SECS", 5u64)?,
            )?),
            statement_timeout: Duration::from_secs(positive(
                "DB_STATEMENT_TIMEOUT_SECS",
                env_or("DB_STATEMENT_TIMEOUT_SECS", 30u64)?,
            )?),
            lock_timeout: Duration::from_secs(positive(
                "DB_LOCK_TIMEOUT_SECS",
                env_or("DB_LOCK_TIMEOUT_SECS", d.lock_timeout.as_secs())?,
            )?),
            idle_in_transaction_timeout: Duration::from_secs(positive(
                "DB_IDLE_IN_TRANSACTION_TIMEOUT_SECS",
                env_or(
                    "DB_IDLE_IN_TRANSACTION_TIMEOUT_SECS",
                    d.idle_in_transaction_timeout.as_secs(),
                )?,
            )?),
            secret: None,
            secret_arn: None,
            ssl_mode,
            ssl_root_cert,
            timescaledb: env_or("TIMESCALEDB", d.timescaledb)?,
            schema: env_or("DB_SCHEMA", d.schema)?,
        })
    }

    /// The connection migrations use: `MIGRATION_DATABASE_SECRET_ARN` or
    /// `MIGRATION_DATABASE_URL` when one is set (a role that owns the tables, for a writer
    /// whose own role only writes rows), else the function's own ([`DbConfig::load`]).
    /// Always [`SchemaMode::Migrate`].
    pub async fn load_migration() -> Result<Self, ConfigError> {
        let mut config = match (
            env_or("MIGRATION_DATABASE_SECRET_ARN", String::new())?,
            env_or("MIGRATION_DATABASE_URL", String::new())?,
        ) {
            (arn, _) if !arn.is_empty() => Self::from_secret(&arn).await?,
            (_, url) if !url.is_empty() => DbConfig {
                url,
                ..Self::from_env()?
            },
            _ => Self::load().await?,
        };
        config.schema = SchemaMode::Migrate;
        Ok(config)
    }

    /// Whether a separate migration connection is configured.
    pub fn migration_configured() -> bool {
        ["MIGRATION_DATABASE_SECRET_ARN", "MIGRATION_DATABASE_URL"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()))
    }

    /// What the functions call once at cold start: [`DbConfig::from_env`], and when
    /// `DATABASE_SECRET_ARN` is set, the connection from that secret
    /// ([`DbConfig::from_secret`]).
    pub async fn load() -> Result<Self, ConfigError> {
        match env_or("DATABASE_SECRET_ARN", String::new())? {
            arn if arn.is_empty() => Self::from_env(),
            arn => Self::from_secret(&arn).await,
        }
    }

    /// [`DbConfig::from_env`] with the connection read from Secrets Manager secret `arn`.
    pub async fn from_secret(arn: &str) -> Result<Self, ConfigError> {
        let mut config = Self::from_env()?;
        let client = crate::postgres::secrets::client().await;
        config.secret = Some(crate::postgres::secrets::fetch(&client, arn).await?);
        config.secret_arn = Some(arn.to_owned());
        tracing::info!(
            secret = arn,
            "database connection read from Secrets Manager"
        );
        Ok(config)
    }
}

/// API-key checks of the two HTTP functions.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH`: `api-keys` (the default) or `off`. `off` lets every request through; it is
    /// refused under Lambda and logs a warning locally.
    pub enabled: bool,
    /// `AUTH_CACHE_SECS`: how long a key lookup is reused (0: never), and so the longest a
    /// revoked key keeps working in a running function.
    pub cache_ttl: Duration,
    /// `AUTH_STALE_IF_ERROR_SECS`: while the database cannot be asked, how long a key it
    /// vouched for keeps working (so ingest keeps accepting through a database outage).
    pub stale_if_error: Duration,
}

impl Default for AuthConfig {
    /// Keys checked, lookups cached for 30 s.
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            cache_ttl: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(3600),
        }
    }
}

impl AuthConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mode = env_or("AUTH", "api-keys".to_owned())?;
        let enabled = match mode.to_ascii_lowercase().as_str() {
            "api-keys" | "on" => true,
            "off" if in_lambda() => {
                return Err(ConfigError::Invalid {
                    name: "AUTH",
                    value: mode,
                    reason: "turning API keys off is for local runs only, not under Lambda".into(),
                })
            }
            "off" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "AUTH",
                    value: mode,
                    reason: "expected `api-keys` or `off`".into(),
                })
            }
        };
        let d = AuthConfig::default();
        Ok(AuthConfig {
            enabled,
            cache_ttl: Duration::from_secs(env_or("AUTH_CACHE_SECS", d.cache_ttl.as_secs())?),
            stale_if_error: Duration::from_secs(env_or(
                "AUTH_STALE_IF_ERROR_SECS",
                d.stale_if_error.as_secs(),
            )?),
        })
    }
}

/// The SQS queue readings travel through. The endpoint comes from the AWS SDK's own
/// settings (`AWS_ENDPOINT_URL_SQS` or `AWS_ENDPOINT_URL`), the region from `AWS_REGION`.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `QUEUE_URL`.
    pub queue_url: String,
    /// `SQS_MAX_MESSAGE_BYTES`: overrides the queue's own `MaximumMessageSize` attribute.
    pub max_message_bytes: Option<usize>,
}

impl QueueConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(QueueConfig {
            queue_url: required("QUEUE_URL")?,
            max_message_bytes: max_message_bytes_from_env()?,
        })
    }
}

/// `SQS_MAX_MESSAGE_BYTES`: the queues' `MaximumMessageSize` as deployed, so that no
/// function has to ask a queue for it (`None` when unset: the queue is asked).
pub fn max_message_bytes_from_env() -> Result<Option<usize>, ConfigError> {
    let max = env_or("SQS_MAX_MESSAGE_BYTES", 0usize)?;
    Ok((max > 0).then_some(max))
}

impl QueueConfig {}

/// ingest-api settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `INGEST_ADDR`: where the local service listens.
    pub addr: SocketAddr,
    /// `INGEST_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `INGEST_MAX_READINGS`: readings per request.
    pub max_readings: usize,
    pub limits: Limits,
    /// `INGEST_COALESCE_LINGER_MS`: in the local host, how long a request may wait to share
    /// SQS messages with concurrent ones; 0 turns coalescing off. Not used under Lambda.
    pub coalesce_linger: Duration,
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(IngestConfig {
            addr: env_or("INGEST_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?,
            max_body_bytes: positive(
                "INGEST_MAX_BODY_BYTES",
                env_or("INGEST_MAX_BODY_BYTES", 1_048_576usize)?,
            )?,
            max_readings: positive(
                "INGEST_MAX_READINGS",
                env_or("INGEST_MAX_READINGS", 10_000usize)?,
            )?,
            limits: limits_from_env()?,
            coalesce_linger: Duration::from_millis(env_or("INGEST_COALESCE_LINGER_MS", 5u64)?),
        })
    }
}

/// `TEMPERATURE_MIN`, `TEMPERATURE_MAX`, `MAX_FUTURE_SKEW_SECS`.
pub fn limits_from_env() -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let limits = Limits {
        temperature_min: env_or("TEMPERATURE_MIN", d.temperature_min)?,
        temperature_max: env_or("TEMPERATURE_MAX", d.temperature_max)?,
        max_future_skew: future_skew(env_or(
            "MAX_FUTURE_SKEW_SECS",
            d.max_future_skew.num_seconds(),
        )?)?,
    };
    if limits.temperature_min.is_nan()
        || limits.temperature_max.is_nan()
        || limits.temperature_min >= limits.temperature_max
    {
        return Err(ConfigError::Invalid {
            name: "TEMPERATURE_MIN",
            value: limits.temperature_min.to_string(),
            reason: format!("must be below TEMPERATURE_MAX ({})", limits.temperature_max),
        });
    }
    Ok(limits)
}

/// `MAX_FUTURE_SKEW_SECS` as a duration; chrono's durations end at about 292 million years.
fn future_skew(secs: i64) -> Result<TimeDelta, ConfigError> {
    TimeDelta::try_seconds(secs).ok_or_else(|| ConfigError::Invalid {
        name: "MAX_FUTURE_SKEW_SECS",
        value: secs.to_string(),
        reason: "is out of range".into(),
    })
}

/// query-api settings.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// `QUERY_ADDR`: where the local service listens.
    pub addr: SocketAddr,
}

impl QueryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(QueryConfig {
            addr: env_or("QUERY_ADDR", SocketAddr::from(([127, 0, 0, 1], 3001)))?,
        })
    }
}

/// The local HTTP host of ingest-api and query-api ([`crate::http::serve`] when not under
/// Lambda, where API Gateway bounds requests instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `HTTP_HEADER_TIMEOUT_SECS`: how long a client may take to send a request's headers
    /// (also how long an idle keep-alive connection is kept); then the connection is closed.
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECS`: how long reading a request's body may take in all; then the
    /// request is answered 408 and the connection closed.
    pub body_timeout: Duration,
    /// `HTTP_MAX_CONCURRENT_REQUESTS`: requests handled at once; more are answered 503 with
    /// `Retry-After` at once.
    pub max_concurrent_requests: usize,
    /// `HTTP_SHUTDOWN_GRACE_SECS`: after SIGTERM or Ctrl-C, how long requests in flight may
    /// take to finish (no new connections are accepted); those still running are cut off.
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl HttpConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = HttpConfig::default();
        let secs = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(positive(
                name,
                env_or(name, default.as_secs())?,
            )?))
        };
        Ok(HttpConfig {
            header_timeout: secs("HTTP_HEADER_TIMEOUT_SECS", d.header_timeout)?,
            body_timeout: secs("HTTP_BODY_TIMEOUT_SECS", d.body_timeout)?,
            max_concurrent_requests: positive(
                "HTTP_MAX_CONCURRENT_REQUESTS",
                env_or("HTTP_MAX_CONCURRENT_REQUESTS", d.max_concurrent_requests)?,
            )?,
            shutdown_grace: Duration::from_secs(env_or(
                "HTTP_SHUTDOWN_GRACE_SECS",
                d.shutdown_grace.as_secs(),
            )?),
        })
    }
}

/// The batch-writer's local polling host: what Lambda's event source mapping does in AWS.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// `WRITER_BATCH_SIZE`: most messages handed to one handler call (Lambda allows
    /// 10,000). The default, 10, is one ReceiveMessage call: with the long-running ingest
    /// host's coalesced messages that is up to some 10,000 readings, one COPY of about
    /// 100 ms, so readings wait little for the batch in front of them.
    pub batch_size: usize,
    /// `WRITER_BATCH_WINDOW_MS`: how long to keep gathering messages for a batch
    /// (default 50).
    pub batch_window: Duration,
    /// `WRITER_WAIT_SECS`: SQS long-poll wait (0..=20).
    pub wait: Duration,
    /// `WRITER_VISIBILITY_TIMEOUT_SECS`: visibility timeout asked for received messages;
    /// also the deadline of one handler call.
    pub visibility_timeout: Duration,
    /// `WRITER_POLLERS`: concurrent receive-handle-delete loops.
    pub pollers: usize,
    /// `WRITER_MAINTENANCE_SECS`: how often the writer's maintenance runs (the first time
    /// at start); what the EventBridge schedule does under Lambda.
    pub maintenance_every: Duration,
}

impl PollerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let wait = env_or("WRITER_WAIT_SECS", 20u64)?;
        if wait > 20 {
            return Err(ConfigError::Invalid {
                name: "WRITER_WAIT_SECS",
                value: wait.to_string(),
                reason: "SQS long polling waits at most 20 seconds".into(),
            });
        }
        Ok(PollerConfig {
            batch_size: positive("WRITER_BATCH_SIZE", env_or("WRITER_BATCH_SIZE", 10usize)?)?,
            batch_window: Duration::from_millis(env_or("WRITER_BATCH_WINDOW_MS", 50u64)?),
            wait: Duration::from_secs(wait),
            visibility_timeout: Duration::from_secs(positive(
                "WRITER_VISIBILITY_TIMEOUT_SECS",
                env_or("WRITER_VISIBILITY_TIMEOUT_SECS", 60u64)?,
            )?),
            pollers: positive("WRITER_POLLERS", env_or("WRITER_POLLERS", 2usize)?)?,
            maintenance_every: Duration::from_secs(positive(
                "WRITER_MAINTENANCE_SECS",
                env_or("WRITER_MAINTENANCE_SECS", 3600u64)?,
            )?),
        })
    }
}

/// batch-writer settings shared by both hosts.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// `DLQ_URL`: where messages that can never be written go, with their reason. Without
    /// it they are reported as failed and SQS's redrive policy moves them eventually.
    pub dlq_url: Option<String>,
    /// `BATCH_RECORD_RETENTION_DAYS`: how long batch ids (and idempotency keys) are kept.
    /// Must outlive any message: SQS keeps messages at most 14 days.
    pub batch_record_retention: Duration,
}

impl WriterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let days = positive(
            "BATCH_RECORD_RETENTION_DAYS",
            env_or("BATCH_RECORD_RETENTION_DAYS", 21u64)?,
        )?;
        if days <= 14 {
            return Err(ConfigError::Invalid {
                name: "BATCH_RECORD_RETENTION_DAYS",
                value: days.to_string(),
                reason: "must be more than 14 days, SQS's longest message retention".into(),
            });
        }
        Ok(WriterConfig {
            dlq_url: env_or("DLQ_URL", String::new()).map(|u| (!u.is_empty()).then_some(u))?,
            batch_record_retention: Duration::from_secs(days * 86_400),
        })
    }
}

impl LifecycleConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = LifecycleConfig::default();
        Ok(LifecycleConfig {
            chunk_interval_hours: positive(
                "CHUNK_INTERVAL_HOURS",
                env_or("CHUNK_INTERVAL_HOURS", d.chunk_interval_hours)?,
            )?,
            compress_after_days: env_or("COMPRESS_AFTER_DAYS", d.compress_after_days)?,
            retention_days: env_or("RETENTION_DAYS", d.retention_days)?,
            hourly_aggregate: env_or("HOURLY_AGGREGATE", d.hourly_aggregate)?,
        })
    }
}
