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
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::OnceCell;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::postgres::settings::{DbConfig, SchemaMode, TimescaleMode};

pub use error::{ErrorKind, StoreError};
pub use keys::{Claim, StoredKey};
pub use lifecycle::Maintenance;
pub use reads::{recent_sql, BucketStats};
pub use schema::{Schema, TableKind, ROLES, SCHEMA_VERSION};
pub use write::WriteReport;

/// A pool of connections plus the pipeline's SQL. Cheap to clone; create one per process.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    schema: Arc<OnceCell<Schema>>,
    timescale: TimescaleMode,
    /// Whether this store sets the schema up or only checks it.
    schema_mode: SchemaMode,
    /// The TLS connector, for cancelling a statement on the server.
    tls: MakeRustlsConnect,
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
        // Every session: no statement runs longer than the statement timeout, none waits
        // for a lock longer than the lock timeout, and a transaction left open by a client
        // that stopped (a frozen Lambda sandbox, a killed process) ends on the server.
        pg.options(format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            config.statement_timeout.as_millis(),
            config.lock_timeout.as_millis(),
            config.idle_in_transaction_timeout.as_millis()
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
                crate::postgres::rotation::SecretConnect::new(tls.clone(), arn.clone()),
                manager_config,
            ),
            None => Manager::from_config(pg, tls.clone(), manager_config),
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
            schema_mode: config.schema,
            tls,
            known_locations: Arc::default(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `work` on a pooled connection, to finish by `deadline`. When the deadline comes
    /// first, the statement in progress is cancelled on the server (so it stops holding
    /// locks and a connection there), and the connection is closed instead of going back to
    /// the pool, where its next user would wait for what is still running on it.
    pub(crate) async fn within<T>(
        &self,
        deadline: Instant,
        what: &'static str,
        work: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = match tokio::time::timeout_at(deadline.into(), self.pool.get()).await {
            Ok(client) => client?,
            Err(_) => return Err(StoreError::Deadline(what)),
        };
        let cancel = client.cancel_token();
        let outcome = tokio::time::timeout_at(deadline.into(), work(&mut client)).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                // Closing the connection would also end the statement, but only once the
                // server notices: a COPY or a lock wait would go on until then.
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    cancel.cancel_query(self.tls.clone()),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cancelling {what} on the server failed")
                    }
                    Err(_) => tracing::warn!("cancelling {what} on the server timed out"),
                }
                drop(deadpool_postgres::Object::take(client));
                Err(StoreError::Deadline(what))
            }
        }
    }
}
