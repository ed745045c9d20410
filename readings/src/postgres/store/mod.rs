//! The PostgreSQL store: [`Store`], a pool of connections plus the pipeline's SQL, with its
//! methods in one file per concern.
//!
//! `schema` (tables, indexes, the table kind), `write` (the batch write path), `reads`
//! (recent, latest, stats), `keys` (API keys and idempotency keys), `lifecycle` (TimescaleDB
//! policies, retention, pruning); `error` classes and describes the errors. Each is an `impl
//! Store` block with the types and SQL helpers it needs; the public types are re-exported
//! here, so callers name them as `store::X`.

mod error;
mod keys;
mod lifecycle;
mod reads;
mod schema;
mod write;

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::OnceCell;

use crate::postgres::settings::{DbConfig, TimescaleMode};

pub use error::{ErrorKind, StoreError};
pub use keys::{Claim, StoredKey};
pub use reads::{recent_sql, BucketStats};
pub use schema::{Schema, TableKind};
pub use write::WriteReport;

/// A pool of connections plus the pipeline's SQL. Cheap to clone; create one per process.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    schema: Arc<OnceCell<Schema>>,
    timescale: TimescaleMode,
    /// Locations known to be in `sensor_locations`, so writes skip registering them.
    known_locations: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Store {
    /// Builds the pool, with TLS as the connection's `sslmode` asks (see
    /// [`crate::postgres::tls`]). Connections are opened lazily, on first use; a root
    /// certificate file is read here.
    pub fn new(config: &DbConfig) -> Result<Self, StoreError> {
        let connection = config
            .connection()
            .map_err(|e| StoreError::Config(format!("DATABASE_URL is invalid: {e}")))?;
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
}
