//! New database connections that survive a rotated secret.
//!
//! Secrets Manager rotation changes the password (or, with the alternating-users strategy,
//! the user) while functions are warm. Connections already open stay logged in; new ones
//! would be refused until the next cold start. [`SecretConnect`] is the pool's connector when
//! the connection came from a secret: when the server refuses the credentials (SQLSTATE
//! class 28), it reads the secret again, at most once per [`REFRESH_INTERVAL`], and retries
//! with the user and password it holds now. Host, port and database come from the cold start.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::{ConfigConnectImpl, Connect};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, Error};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The least time between two reads of the secret.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Credentials taken from a newer version of the secret.
#[derive(Clone)]
struct Credentials {
    user: Option<String>,
    password: Option<Vec<u8>>,
}

pub struct SecretConnect {
    /// deadpool's own connector, given the credentials to use.
    inner: ConfigConnectImpl<MakeRustlsConnect>,
    arn: String,
    newer: Mutex<Option<Credentials>>,
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

impl SecretConnect {
    pub fn new(tls: MakeRustlsConnect, arn: String) -> Self {
        SecretConnect {
            inner: ConfigConnectImpl { tls },
            arn,
            newer: Mutex::new(None),
            last_read: tokio::sync::Mutex::new(None),
        }
    }

    fn config(&self, base: &Config) -> Config {
        let mut config = base.clone();
        if let Some(c) = self.newer.lock().ok().and_then(|n| n.clone()) {
            if let Some(user) = &c.user {
                config.user(user);
            }
            if let Some(password) = &c.password {
                config.password(password);
            }
        }
        config
    }

    /// Reads the secret again unless it was read within [`REFRESH_INTERVAL`]. Returns
    /// whether there are credentials from a newer read to try.
    async fn refresh(&self) -> bool {
        let mut last = self.last_read.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            // Read moments ago (by a connection racing this one): try what it found.
            return self.newer.lock().is_ok_and(|n| n.is_some());
        }
        *last = Some(Instant::now());
        let client = crate::postgres::secrets::client().await;
        match crate::postgres::secrets::fetch(&client, &self.arn).await {
            Ok(settings) => {
                let pg = settings.postgres_config();
                let fresh = Credentials {
                    user: pg.get_user().map(str::to_owned),
                    password: pg.get_password().map(<[u8]>::to_vec),
                };
                if let Ok(mut newer) = self.newer.lock() {
                    *newer = Some(fresh);
                }
                tracing::info!(secret = %self.arn, "database credentials refused; read the secret again");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "database credentials refused, and the secret could not be read again");
                false
            }
        }
    }
}

/// The server refused the login itself (invalid password, no such role, ...).
fn refused_credentials(e: &Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("28"))
}

impl Connect for SecretConnect {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let base = pg_config.clone();
        Box::pin(async move {
            match self.inner.connect(&self.config(&base)).await {
                Err(e) if refused_credentials(&e) && self.refresh().await => {
                    self.inner.connect(&self.config(&base)).await
                }
                other => other,
            }
        })
    }
}
